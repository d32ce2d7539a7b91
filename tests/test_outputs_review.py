"""Outputs review: DICOM-SEG export of series whose headers lack attributes the SEG must carry, the process umask
left alone by concurrent writers, and merged results (ctscore aggregate) that hold one series twice or come from
several ctscore versions."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from pipeline.batch import BatchOptions
from pipeline.config import load_config
from pipeline.run import run_pipeline
from tests.scripts_loader import load_script


def _cfg(*overrides: str, seg: bool = False) -> dict:
    return load_config(overrides=["resample.spacing_mm=[3,3,3]", *overrides],
                       extra={"segmentation": {"method": "classical"},
                              "outputs": {"write_qc_png": False, "write_masks": False, "write_dicom_seg": seg}})


@pytest.fixture(scope="module")
def chest(tmp_path_factory) -> Path:
    """One small generated chest series (64 x 64 x 40, 5 mm): it has no FrameOfReferenceUID, like some exports."""
    root = tmp_path_factory.mktemp("chest")
    load_script("benchmark_batch").write_chest_series(root / "s00", 0)
    return root


def test_seg_of_series_without_frame_of_reference_or_slice_thickness(chest, tmp_path):
    """--dicom-seg on a series whose files lack FrameOfReferenceUID (type 1) and SliceThickness (type 2), which the
    loader scores: the scan failed as INTERNAL_ERROR (AttributeError in highdicom) and its scores were lost. The SEG
    is now written, with a made-up frame of reference, and references every source instance."""
    import highdicom as hd

    src = tmp_path / "in"
    src.mkdir()
    for f in sorted((chest / "s00").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        assert "FrameOfReferenceUID" not in ds
        del ds.SliceThickness
        ds.save_as(src / f.name, enforce_file_format=True)
    out = tmp_path / "out"
    summary = run_pipeline(src, out, _cfg(seg=True), batch=BatchOptions(progress=False))
    assert summary["n_ok"] == 1, (out / "failures.csv").read_text()
    (scan_dir,) = [p for p in out.iterdir() if p.name.startswith("scan-")]
    seg = hd.seg.segread(scan_dir / "seg.dcm")
    assert seg.FrameOfReferenceUID.startswith("2.25.")
    sops = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in sorted(src.glob("*.dcm"))]
    refs = {str(r.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert refs == set(sops)



def test_concurrent_umask_reads_leave_the_umask_alone(monkeypatch):
    """Scans in the threads of one worker (--threads-per-worker 2) read the umask at every file written: swapped to
    0 and back without a lock, two threads at once left it at 0 for good, and every later output (masks, tables)
    world-writable. Here both threads are held right after setting it to 0, which is where the race bites."""
    import os
    import threading

    from pipeline.outputs import current_umask

    real_umask = os.umask
    barrier = threading.Barrier(2)

    def umask_then_wait(mask: int) -> int:
        previous = real_umask(mask)
        if mask == 0:
            try:
                barrier.wait(timeout=0.5)
            except threading.BrokenBarrierError:  # the other thread never got there (a lock): no race
                pass
        return previous

    old = real_umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", umask_then_wait)
        seen: list[int] = []
        threads = [threading.Thread(target=lambda: seen.append(current_umask())) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        monkeypatch.undo()
        assert seen == [0o027, 0o027]
        assert real_umask(0o027) == 0o027
    finally:
        real_umask(old)


def test_aggregate_warns_of_a_series_merged_twice_and_of_mixed_versions(chest, tmp_path, capsys):
    """Results merged into one folder (copied from two machines, or a rerun with the site's own salt) held the same
    series under two scan ids and two patient pseudonyms, and came from two ctscore versions: `ctscore aggregate`
    wrote both rows (a statistic then counts one patient twice) and named one version in run.json, without a word."""
    import json

    from pipeline.cli import main

    out = tmp_path / "out"
    run_pipeline(chest, out, _cfg(), batch=BatchOptions(progress=False))
    run_pipeline(chest, out, _cfg("outputs.pseudonym_salt=site-secret"), batch=BatchOptions(progress=False))
    first = sorted(out.glob("scan-*/result.json"))[0]
    result = json.loads(first.read_text())
    result["ctscore_version"] = "0.0.9"
    first.write_text(json.dumps(result))
    capsys.readouterr()
    assert main(["aggregate", str(out), "-q"]) == 0
    text = capsys.readouterr().err  # the log, as the command shows it
    assert "1 series appear under more than one scan id" in text
    assert "several ctscore versions (0.0.9: 1 scans" in text
    assert json.loads((out / "run.json").read_text())["ctscore_versions"]["0.0.9"] == 1  # not only the aggregator's


def test_aggregate_python_twin_warns_as_the_command(chest, tmp_path, caplog):
    """``pipeline.batch.aggregate`` (the command's Python twin) gives the same warnings as ``ctscore aggregate``."""
    import logging

    from pipeline.batch import aggregate

    out = tmp_path / "out"
    run_pipeline(chest, out, _cfg(), batch=BatchOptions(progress=False))
    run_pipeline(chest, out, _cfg("outputs.pseudonym_salt=site-secret"), batch=BatchOptions(progress=False))
    with caplog.at_level(logging.WARNING, logger="pipeline.batch"):
        aggregate(out)
    assert "1 series appear under more than one scan id" in caplog.text


def test_a_dicom_seg_that_cannot_be_made_keeps_the_scores(chest, tmp_path, monkeypatch):
    """Any error while making the DICOM-SEG (an optional export) failed the whole scan as INTERNAL_ERROR and lost its
    scores; now the scan is scored, without seg.dcm, flagged DICOM_SEG_FAILED."""
    import pandas as pd

    from pipeline import dicom_seg

    def broken(*args, **kwargs):
        raise ValueError("highdicom refuses these images")

    monkeypatch.setattr(dicom_seg, "build_seg", broken)
    out = tmp_path / "out"
    summary = run_pipeline(chest, out, _cfg(seg=True), batch=BatchOptions(progress=False))
    assert summary["n_ok"] == 1
    scans = pd.read_csv(out / "scans.csv")
    assert "DICOM_SEG_FAILED" in scans.loc[0, "qc_flags"] and scans.loc[0, "six_zone_total"] >= 0
    assert not list(out.glob("scan-*/seg.dcm"))


@pytest.mark.parametrize("broken", ["qc_png", "levels_png"])
def test_a_qc_picture_that_cannot_be_drawn_keeps_the_scores(chest, tmp_path, monkeypatch, broken):
    """An error while drawing a QC picture failed the whole scan as INTERNAL_ERROR and lost its scores (a lung a few
    rows deep made levels.png fail); now the scan is scored without that picture, flagged QC_PICTURE_FAILED."""
    import pandas as pd

    from pipeline import qc, qc_levels

    def fails(*args, **kwargs):
        raise ValueError("cannot draw this")

    monkeypatch.setattr(qc if broken == "qc_png" else qc_levels, broken, fails)  # run.py imports them when it draws
    out = tmp_path / "out"
    cfg = load_config(overrides=["resample.spacing_mm=[3,3,3]"],
                      extra={"segmentation": {"method": "classical"}, "outputs": {"write_masks": False}})
    summary = run_pipeline(chest, out, cfg, batch=BatchOptions(progress=False))
    assert summary["n_ok"] == 1
    scans = pd.read_csv(out / "scans.csv")
    picture = "qc.png" if broken == "qc_png" else "levels.png"
    assert f"QC_PICTURE_FAILED:{picture}" in scans.loc[0, "qc_flags"].split(";")
    assert scans.loc[0, "six_zone_total"] >= 0
    folder = next(out.glob("scan-*"))
    assert not (folder / picture).exists()
    kept = {"qc.png", "thumb.png"} if broken == "levels_png" else {"levels.png"}
    assert all((folder / name).is_file() for name in kept)


def test_each_result_keeps_its_configuration(chest, tmp_path):
    """result.json kept only the configuration's hash, and run.json is rewritten by the next run into the same folder:
    the settings an older scan was made with could not be recovered. Each result now holds its own (the site salt
    redacted), and aggregate falls back to it when no run.json names that configuration."""
    import json

    from pipeline.batch import aggregate

    out = tmp_path / "out"
    run_pipeline(chest, out, _cfg("outputs.pseudonym_salt=site-secret", "scoring.min_involvement_ml=0.3"),
                 batch=BatchOptions(progress=False))
    (result,) = [json.loads(p.read_text()) for p in out.glob("scan-*/result.json")]
    assert result["config"]["scoring"]["min_involvement_ml"] == 0.3
    assert result["config"]["outputs"]["pseudonym_salt"].startswith("<redacted")
    (out / "run.json").unlink()
    aggregate(out)
    assert json.loads((out / "run.json").read_text())["config"]["scoring"]["min_involvement_ml"] == 0.3
