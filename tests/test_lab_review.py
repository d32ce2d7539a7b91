"""A radiologist's test of ctscore on a messy data share: what the commands said, and what they should say.

1. ``run --series-uid`` on a series a hard filter refuses named neither the series nor the filter;
2. a copy of one slice in another folder took the slice (and the stack's folder) away from its series' folder;
3. ``scan`` of NIfTI/NRRD files printed an empty pandas table;
4. ``run`` of a missing input loaded the model first;
5. the resume summary counted failed series as "already done", without --retry-failed;
6. segmenter warnings did not name their scan;
7. the console summary printed NaN for a missing total.
"""

from __future__ import annotations

import gzip
import logging
import os

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from pipeline.cli import main
from pipeline.errors import (
    EXIT_INPUT_UNREADABLE,
    EXIT_NOTHING_ELIGIBLE,
    EXIT_SOME_FAILED,
    CTScoreError,
    SeriesError,
)
from tests.conftest import REPO, require
from tests.dicom_factory import write_series

FAST = {"segmentation": {"method": "classical"}, "outputs": {"write_qc_png": False, "write_masks": False}}
FAST_ARGS = ["--segmenter", "classical", "--set", "outputs.write_qc_png=false", "--set", "outputs.write_masks=false"]


# ------------------------------------------------------------------------ 1: --series-uid and the hard filters

def test_run_series_uid_refused_by_a_hard_filter_names_it_the_filter_and_the_remedy(tmp_path, capsys):
    """A head CT requested with --series-uid: the run said only "no eligible CT series found"; now the series, the
    code, what it means, the value refused and the setting that lifts it."""
    from pipeline.errors import NoEligibleSeries
    from pipeline.run import run_pipeline

    uid = generate_uid()
    write_series(tmp_path / "in", n_slices=12, series_uid=uid, body_part="HEAD")
    with pytest.raises(NoEligibleSeries) as exc:
        run_pipeline(tmp_path / "in", tmp_path / "out", FAST, series_uid=uid)
    msg = exc.value.message
    assert uid in msg and "BODY_PART_EXCLUDED" in msg and "BodyPartExamined HEAD" in msg, msg
    assert "edit selection.exclude_body_parts" in msg and "selection.exclude_body_parts=\"BRAIN," in msg, msg
    assert "does not lift the hard filters" in msg and str(tmp_path / "out" / "inventory.csv") in msg

    code = main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "out2"), "-q", "--series-uid", uid, *FAST_ARGS])
    assert code == EXIT_NOTHING_ELIGIBLE
    err = capsys.readouterr().err
    assert f"--series-uid {uid}: its stack is refused by a hard filter" in err and "BODY_PART_EXCLUDED" in err


def test_run_series_uid_not_found_says_so(tmp_path):
    from pipeline.errors import NoEligibleSeries
    from pipeline.run import run_pipeline

    write_series(tmp_path / "in", n_slices=12)
    with pytest.raises(NoEligibleSeries) as exc:
        run_pipeline(tmp_path / "in", tmp_path / "out", FAST, series_uid="1.2.3.4.5")
    msg = exc.value.message
    assert "--series-uid 1.2.3.4.5: no series or stack with this SeriesInstanceUID or stack id" in msg, msg
    assert "it holds 1 stack(s)" in msg


def test_series_uid_help_and_readme_say_the_hard_filters_still_apply(capsys):
    for command in ("run", "scan"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "hard filters of selection: still apply" in text, command
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "`--series-uid` forces a series" not in readme
    assert "but the hard filters still apply" in readme


def test_scan_series_uid_refused_prints_why(tmp_path, capsys):
    uid = generate_uid()
    write_series(tmp_path / "in", n_slices=5, series_uid=uid)
    assert main(["scan", str(tmp_path / "in"), "--series-uid", uid]) == EXIT_NOTHING_ELIGIBLE
    out = capsys.readouterr().out
    assert "TOO_FEW_SLICES" in out and "5 slices, selection.min_slices 10" in out
    assert "--set selection.min_slices=5" in out


# ------------------------------------------------------------------------ 2: duplicates across folders

def _as_implicit(path):
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def _copy_as_explicit(src, dest):
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(dest, enforce_file_format=True)


def test_duplicate_in_another_folder_leaves_the_slice_with_its_series(tmp_path):
    """A series in implicit VR and an explicit-VR copy of one of its slices in a folder of test files: the copy was
    kept (explicit VR preferred), so the stack's folder became "." and its fingerprint hung on the other folder."""
    from pipeline.commands.scan import stack_folders
    from pipeline.inventory import build_inventory

    root = tmp_path / "share"
    files = write_series(root / "chest" / "ge", n_slices=12)
    for f in files:
        _as_implicit(f)
    _copy_as_explicit(files[3], root / "edge" / "syntaxes" / "CTImage_explicit.dcm")
    inv = build_inventory(root)
    (chosen,) = inv.chosen
    assert all(p.parent == root / "chest" / "ge" for p in chosen.files), chosen.files
    assert stack_folders(inv.files, root) == {chosen.stack_id: "chest/ge"}
    row = inv.files.set_index("path").loc[str(root / "edge" / "syntaxes" / "CTImage_explicit.dcm")]
    assert row["file_status"] == "skipped" and row["file_code"] == "DUPLICATE_SOP_INSTANCE"
    assert row["file_detail"] == f"same SOPInstanceUID as {files[3]}"


def test_duplicate_preferences_still_apply_within_a_folder_and_to_damaged_copies(tmp_path):
    """Two copies in the series' own folder: the explicit VR one, as before. A truncated copy in the series' folder
    loses to a complete one elsewhere (a complete copy first, then the folder)."""
    from pipeline.inventory import build_inventory

    root = tmp_path / "share"
    files = write_series(root / "a", n_slices=12)
    for f in files:
        _as_implicit(f)
    _copy_as_explicit(files[0], root / "a" / "zz_explicit.dcm")
    inv = build_inventory(root)
    dup = inv.files[inv.files["file_code"] == "DUPLICATE_SOP_INSTANCE"]
    assert dup["path"].tolist() == [str(files[0])]

    root2 = tmp_path / "share2"
    files2 = write_series(root2 / "a", n_slices=12)
    _copy_as_explicit(files2[5], root2 / "b" / "copy.dcm")
    data = files2[5].read_bytes()
    files2[5].write_bytes(data[:-200])  # truncated in its own folder
    inv2 = build_inventory(root2)
    dup2 = inv2.files[inv2.files["file_code"] == "DUPLICATE_SOP_INSTANCE"]
    assert dup2["path"].tolist() == [str(files2[5])]


def test_real_ge_chest_keeps_its_own_folder(shared_data):
    """The share's GE chest series shares one SOPInstanceUID with dicom_edge/transfer_syntaxes/: its stack took that
    folder's explicit-VR copy and its folder read "."."""
    from pipeline.commands.scan import stack_folders
    from pipeline.inventory import build_inventory

    require(shared_data / "chest" / "ge_mister_ct")
    require(shared_data / "dicom_edge" / "transfer_syntaxes")
    inv = build_inventory(shared_data)
    folders = stack_folders(inv.files, shared_data)
    ge = [c for c in inv.chosen if any("ge_mister_ct" in str(p) for p in c.files)]
    assert ge and all(folders[c.stack_id] == "chest/ge_mister_ct" for c in ge)


# ------------------------------------------------------------------------ 3: only non-DICOM files

def _volumes(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "example_ct.nii.gz").write_bytes(gzip.compress(b"\x5c\x01\x00\x00" + bytes(344)))
    (folder / "ct-64.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n\n"
                                        + bytes(16))


def test_scan_of_nifti_and_nrrd_says_so_in_one_sentence(tmp_path, capsys):
    _volumes(tmp_path / "vol")
    assert main(["scan", str(tmp_path / "vol")]) == EXIT_NOTHING_ELIGIBLE
    out = capsys.readouterr().out
    assert "Empty DataFrame" not in out and "Columns:" not in out, out
    assert "no DICOM image stack found: 2 files, none DICOM (NIfTI/NRRD/MHA files (ct-64.nrrd, example_ct.nii.gz) " \
           "are not read: ctscore reads DICOM series" in out, out
    assert main(["scan", str(tmp_path / "vol" / "example_ct.nii.gz")]) == EXIT_NOTHING_ELIGIBLE
    out = capsys.readouterr().out
    assert "no DICOM image stack found: 1 file, none DICOM (NIfTI/NRRD/MHA files (example_ct.nii.gz)" in out, out


def test_run_of_nifti_says_they_are_not_read(tmp_path, capsys):
    _volumes(tmp_path / "vol")
    assert main(["run", str(tmp_path / "vol"), "-o", str(tmp_path / "out"), "-q", *FAST_ARGS]) == EXIT_NOTHING_ELIGIBLE
    err = capsys.readouterr().err
    assert "ctscore: error: NO_ELIGIBLE_SERIES: no eligible CT series" in err, err
    assert "no DICOM image stack in it: 2 files, none DICOM" in err and "are not read: ctscore reads DICOM" in err
    # a DICOM series beside the volumes, refused: the hint is still there
    write_series(tmp_path / "mixed" / "dcm", n_slices=5)
    _volumes(tmp_path / "mixed" / "nii")
    assert main(["run", str(tmp_path / "mixed"), "-o", str(tmp_path / "out2"), "-q", *FAST_ARGS]) == \
        EXIT_NOTHING_ELIGIBLE
    assert "2 of the 7 files are NIfTI/NRRD/MHA (ct-64.nrrd, example_ct.nii.gz), not read" in capsys.readouterr().err


def test_scan_of_real_nifti(shared_data, capsys):
    path = require(shared_data / "totalsegmentator_example" / "example_ct.nii.gz")
    assert main(["scan", str(path)]) == EXIT_NOTHING_ELIGIBLE
    out = capsys.readouterr().out
    assert "Empty DataFrame" not in out and "NIfTI/NRRD/MHA files (example_ct.nii.gz) are not read" in out


# ------------------------------------------------------------------------ 4: the input before the model

def test_missing_input_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    import pipeline.batch
    from pipeline.run import run_pipeline

    calls = []
    monkeypatch.setattr(pipeline.batch, "preflight", lambda *a, **k: calls.append(a))
    with pytest.raises(CTScoreError) as exc:
        run_pipeline(tmp_path / "missing", tmp_path / "out")  # the default (MONAI) segmenter
    assert exc.value.code == "INPUT_NOT_FOUND" and not calls and not (tmp_path / "out").exists()
    # the configuration and the batch options are still checked first
    with pytest.raises(CTScoreError) as exc:
        run_pipeline(tmp_path / "missing", tmp_path / "out", {"no_such_section": {}})
    assert exc.value.code == "BAD_CONFIG"
    with pytest.raises(CTScoreError) as exc:
        run_pipeline(tmp_path / "missing", tmp_path / "out", batch={"workers": -1})
    assert exc.value.code == "BAD_CONFIG"
    assert not calls
    if os.geteuid() != 0:  # a folder that cannot be listed
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0)
        try:
            with pytest.raises(CTScoreError) as exc:
                run_pipeline(locked, tmp_path / "out")
            assert exc.value.code == "INPUT_NOT_FOUND" and not calls
        finally:
            locked.chmod(0o700)


def test_cli_missing_input_logs_no_model(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) == EXIT_INPUT_UNREADABLE
    err = capsys.readouterr().err
    assert "INPUT_NOT_FOUND" in err and "segmentation" not in err and "model" not in err.lower(), err


# ------------------------------------------------------------------------ 5: the resume summary

def test_summary_line_of_a_resume_is_exact():
    from pipeline.commands.run import summary_line

    s = {"n_series": 8, "n_ok": 7, "n_failed": 1, "n_skipped": 8, "n_run": 0, "n_failed_kept": 1}
    assert summary_line(s) == ("7 of 8 series scored, 1 failed (all 8 finished in an earlier run; --retry-failed "
                               "scores the failed one again)")
    s.update(n_skipped=5, n_run=3, n_failed=3, n_ok=5, n_failed_kept=1)
    assert summary_line(s) == ("5 of 8 series scored, 3 failed (5 of the 8 finished in an earlier run, 3 scored or "
                               "tried now; --retry-failed scores the one that failed in the earlier run again)")
    s.update(n_skipped=0, n_run=8, n_failed_kept=0)
    assert summary_line(s) == "5 of 8 series scored, 3 failed"
    s.update(n_skipped=8, n_run=0, n_ok=8, n_failed=0)
    assert summary_line(s) == "8 of 8 series scored, 0 failed (all 8 finished in an earlier run)"


def test_resume_of_a_failed_series_says_retry_failed(tmp_path, capsys):
    from pipeline.run import run_pipeline

    write_series(tmp_path / "in", n_slices=16)  # no lung: NO_LUNG_FOUND
    out = tmp_path / "out"
    batch = {"progress": False, "timeout_s": 0}
    first = run_pipeline(tmp_path / "in", out, FAST, batch=batch)
    assert (first["n_failed"], first["n_skipped"], first["n_failed_kept"]) == (1, 0, 0)
    again = run_pipeline(tmp_path / "in", out, FAST, batch=batch)
    assert (again["n_failed"], again["n_skipped"], again["n_failed_kept"]) == (1, 1, 1)
    retried = run_pipeline(tmp_path / "in", out, FAST, batch={**batch, "retry_failed": True})
    assert (retried["n_failed"], retried["n_skipped"], retried["n_failed_kept"]) == (1, 0, 0)
    capsys.readouterr()
    assert main(["run", str(tmp_path / "in"), "-o", str(out), "-q", *FAST_ARGS]) == EXIT_SOME_FAILED
    printed = capsys.readouterr().out
    assert "0 of 1 series scored, 1 failed (finished in an earlier run; --retry-failed scores the failed one again)" \
        in printed, printed
    assert "already done" not in printed


# ------------------------------------------------------------------------ 6: which scan a warning is about

class ChattySegmenter:
    """Logs as the segmenters and the scoring do, then gives up."""

    name = "chatty"
    model_id = "chatty"

    def segment(self, hu, spacing):
        logging.getLogger("segmentation.classical").warning("no trachea found: airway not segmented")
        logging.getLogger("scoring.landmarks").warning("carina estimated")
        logging.getLogger("pipeline.loading").warning("a loader line")
        raise SeriesError("NO_LUNG_FOUND", "stop here")


def _process_and_collect(folder: str, scan_id: str) -> list[tuple[str, str]]:
    """process_series with :class:`ChattySegmenter`; the (logger, message) pairs it logged (in a fresh process too)."""
    from pathlib import Path

    from pipeline.config import load_config
    from pipeline.run import process_series

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    try:
        files = sorted(str(p) for p in Path(folder).glob("*.dcm"))
        status = process_series(files, load_config(extra=FAST), Path(folder).parent / "out", scan_id,
                                segmenter=ChattySegmenter())
        assert status["code"] == "NO_LUNG_FOUND"
        logging.getLogger("segmentation.classical").warning("after the scan")
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
    return [(r.name, r.getMessage()) for r in records]


def test_segmenter_and_scoring_warnings_name_their_scan(tmp_path):
    write_series(tmp_path / "in", n_slices=12)
    got = _process_and_collect(str(tmp_path / "in"), "scan-0123456789ab")
    assert ("segmentation.classical", "scan-0123456789ab: no trachea found: airway not segmented") in got, got
    assert ("scoring.landmarks", "scan-0123456789ab: carina estimated") in got
    assert ("pipeline.loading", "a loader line") in got  # other loggers as they were
    assert ("segmentation.classical", "after the scan") in got  # outside a scan: no prefix


def test_warnings_name_their_scan_in_a_fresh_worker_process(tmp_path):
    """process_series runs in a dask worker process: no CLI logging set up there; the prefix comes with the module."""
    import multiprocessing

    write_series(tmp_path / "in", n_slices=12)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        got = pool.apply(_process_and_collect, (str(tmp_path / "in"), "scan-00000000beef"))
    assert ("segmentation.classical", "scan-00000000beef: no trachea found: airway not segmented") in got, got


def test_cli_log_line_format_is_unchanged_but_names_the_scan(tmp_path, capsys):
    from pipeline.cli import setup_logging
    from pipeline.run import process_series

    write_series(tmp_path / "in", n_slices=12)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    setup_logging()
    try:
        from pipeline.config import load_config

        process_series(sorted(str(p) for p in (tmp_path / "in").glob("*.dcm")), load_config(extra=FAST),
                       tmp_path / "out", "scan-0123456789ab", segmenter=ChattySegmenter())
        err = capsys.readouterr().err
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert " WARNING segmentation.classical: scan-0123456789ab: no trachea found: airway not segmented" in err, err


# ------------------------------------------------------------------------ 7: a missing total in the summary

def test_console_summary_prints_a_missing_value_as_a_dash(capsys, tmp_path):
    from pipeline.commands.run import print_summary

    df = pd.DataFrame({"scan_id": ["scan-a", "scan-b", "scan-c"], "status": ["ok", "ok", "failed"],
                       "percent_opacity": [3.7, 0.0, np.nan],
                       "six_zone_total": pd.array([4, None, None], dtype="Int64"),
                       "zhang900_total": [12.0, np.nan, np.nan]})
    print_summary({"scans": df, "n_ok": 2, "n_series": 3, "n_failed": 1, "out_dir": "OUT"})
    lines = capsys.readouterr().out.splitlines()
    assert "NaN" not in "\n".join(lines) and "<NA>" not in "\n".join(lines)
    assert lines[1].split() == ["scan-a", "ok", "3.7", "4", "12.0"]
    assert lines[2].split() == ["scan-b", "ok", "0.0", "-", "-"]
    assert lines[3].split() == ["scan-c", "failed", "-", "-", "-"]
    df.to_csv(tmp_path / "scans.csv", index=False)  # the tables keep their empty cells
    assert ",," in (tmp_path / "scans.csv").read_text()


def test_resume_log_line_says_how_many_kept_series_failed(tmp_path, capfd):
    """The driver's log line counted a failed series among those "already done", without --retry-failed."""
    from pipeline.cli import main
    from tests.dicom_factory import write_series

    write_series(tmp_path / "in" / "bad", 3)  # too few slices for a lung: fails NO_LUNG_FOUND when forced
    args = ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--segmenter", "classical",
            "--set", "selection.min_slices=3", "--set", "outputs.write_qc_png=false"]
    assert main(args) == 8
    capfd.readouterr()
    assert main(args) == 8
    err = capfd.readouterr().err
    assert ("1 series: 0 to score, 1 finished in an earlier run (resume), 1 of them failed "
            "(--retry-failed scores them again)") in err
