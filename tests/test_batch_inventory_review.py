"""Review of the batch engine and the inventory: a full disk under a dask run stops it as the serial run does,
per-scan records that cannot be written, salted ids of series without a SeriesInstanceUID and of studies, and
ctscore's own output folder inside the input folder.

Series are small generated chests (40 x 64 x 64 on a 3 mm grid, about half a second each); misbehaving scans are
injected with the test-only ``$CTSCORE_TEST_HOOKS`` (:func:`pipeline.batch._test_hook`)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

import pipeline.batch as batch_mod
from pipeline import cli
from pipeline.batch import STARTED, BatchOptions, Task, write_record, write_started
from pipeline.config import load_config
from pipeline.errors import EXIT_USAGE, CTScoreError
from pipeline.outputs import scan_id_for
from pipeline.run import run_pipeline
from tests.scripts_loader import load_script

FAST = ["resample.spacing_mm=[3,3,3]", "outputs.write_qc_png=false", "outputs.write_masks=false"]
_CLI = ["--all-series", "-q", "--segmenter", "classical"] + [a for s in FAST for a in ("--set", s)]


@pytest.fixture(scope="module")
def cfg() -> dict:
    return load_config(overrides=FAST, extra={"segmentation": {"method": "classical"}})


@pytest.fixture(scope="module")
def series(tmp_path_factory, cfg) -> tuple[Path, list[str]]:
    """Three generated series; returns their folder and their scan ids in run order (sorted)."""
    root = tmp_path_factory.mktemp("bi_in")
    bench = load_script("benchmark_batch")
    uids = [bench.write_chest_series(root / f"s{i:02d}", i) for i in range(3)]
    return root, sorted(scan_id_for(u, cfg["outputs"]["pseudonym_salt"]) for u in uids)


def _records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / ".status").glob("*.json")}


# --- a full disk under every executor --------------------------------------------------------------------------


def test_a_full_disk_stops_a_dask_run_as_it_stops_a_serial_one(tmp_path, series, monkeypatch, capsys):
    """OUTPUT_UNWRITABLE raised on a dask worker was recorded as a failed INTERNAL_ERROR scan (kept failed on
    resume) and the run went on; now the run stops with the serial run's exit code and message, the scan keeps no
    record, no other scan starts, the one under way finishes, and a rerun scores the rest."""
    pytest.importorskip("distributed")
    root, (a, b, c) = series
    # a is under way on the other worker (3 s) when b finds the disk full; c waits for a worker
    monkeypatch.setenv("CTSCORE_TEST_HOOKS", json.dumps({"unwritable": [b], "sleep": {a: 3}}))
    errors = {}
    for executor in ("serial", "local"):
        out = tmp_path / executor
        code = cli.main(["run", str(root), "-o", str(out), "--executor", executor, "--workers", "2", *_CLI])
        err = capsys.readouterr().err
        assert code == EXIT_USAGE, err
        errors[executor] = [line for line in err.splitlines() if line.startswith("ctscore: error:")]
        records = _records(out)
        assert b not in records  # no outcome: scored on resume
        assert all(r["status"] == "ok" for r in records.values()), records  # nothing failed, no STARTED left
        assert records[a]["status"] == "ok" and (out / a / "result.json").is_file()
        assert not list(out.glob(".scan-*.partial"))
    assert errors["local"] == errors["serial"] and f"OUTPUT_UNWRITABLE: cannot write the results of {b}" in \
        errors["serial"][0]
    assert c not in _records(tmp_path / "serial")
    monkeypatch.delenv("CTSCORE_TEST_HOOKS")  # space freed: the same command scores what is left
    summary = run_pipeline(root, tmp_path / "local", load_config(overrides=FAST, extra={
        "segmentation": {"method": "classical"}}), all_series=True, batch=BatchOptions(progress=False))
    assert (summary["n_ok"], summary["n_failed"]) == (3, 0) and summary["n_run"] >= 1


def test_records_that_cannot_be_written_are_output_unwritable(tmp_path):
    """write_started / write_record raised a bare OSError (a traceback, or an INTERNAL_ERROR on a dask worker)."""
    (tmp_path / ".status").write_text("not a folder")  # any OSError of the output folder
    task = Task("scan-0123456789ab", "1.2.3", [], fingerprint="fp")
    for call in (lambda: write_started(tmp_path, task, 1, "c", "m"),
                 lambda: write_record(tmp_path, task, {"status": "ok"}, "c", "m")):
        with pytest.raises(CTScoreError) as info:
            call()
        assert info.value.code == "OUTPUT_UNWRITABLE" and info.value.path == str(tmp_path)


def test_an_outcome_record_on_a_full_disk_leaves_no_started_record(tmp_path, series, cfg, monkeypatch):
    """The scan ran but its outcome record did not fit: the run stops with OUTPUT_UNWRITABLE and the ``started``
    record goes (it counted as a crash of the scan on the next serial run); the rerun keeps the result."""
    root, _ = series
    real = batch_mod.atomic_write_json

    def full(path, data):
        if "finished_at" in data:  # an outcome record
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(batch_mod, "atomic_write_json", full)
    out = tmp_path / "out"
    with pytest.raises(CTScoreError) as info:
        run_pipeline(root / "s00", out, cfg, batch=BatchOptions(progress=False))
    assert info.value.code == "OUTPUT_UNWRITABLE" and "No space left" in info.value.message
    assert not any(r["status"] == STARTED for r in _records(out).values())
    monkeypatch.undo()
    summary = run_pipeline(root / "s00", out, cfg, batch=BatchOptions(progress=False))
    assert (summary["n_ok"], summary["n_failed"], summary["n_skipped"]) == (1, 0, 1)  # the committed result kept


# --- salted ids in the inventory -------------------------------------------------------------------------------


def _uidless_series(folder: Path) -> None:
    import pydicom

    from tests.dicom_factory import write_series

    for f in write_series(folder, 8, study_uid="1.2.826.0.1.3680043.2.1125.77"):
        ds = pydicom.dcmread(f)
        del ds.SeriesInstanceUID
        ds.save_as(f)


def test_series_without_uid_and_study_keys_are_salted_and_stable(tmp_path, monkeypatch):
    """NO_SERIES_UID:<sha256 of the folder path> could be checked against guessed patient-named folders, and it
    changed with the spelling of the input (relative or absolute: another scan id, no resume); study_key was an
    unsalted hash of the StudyInstanceUID."""
    import hashlib

    from pipeline.discovery import discover
    from pipeline.inventory import build_inventory

    folder = tmp_path / "DOE_JOHN_12345" / "CT"
    _uidless_series(folder)
    monkeypatch.chdir(tmp_path)

    def ids(root, salt):
        cfg = load_config(overrides=[f"outputs.pseudonym_salt={salt}"])
        (c,) = build_inventory(root, cfg).candidates
        (d,) = discover(root, cfg)
        assert (c.series_uid, c.study_key) == (d.series_uid, d.study_key)
        return c.series_uid, c.study_key

    uid, study = ids(tmp_path / "DOE_JOHN_12345", "site-secret")
    assert uid.startswith("NO_SERIES_UID:")
    for guess in (str(folder), "DOE_JOHN_12345/CT", str(folder.resolve())):  # unsalted guesses do not match
        assert hashlib.sha256(guess.encode()).hexdigest()[:10] not in uid
    assert study != hashlib.sha256(b"1.2.826.0.1.3680043.2.1125.77").hexdigest()[:10]
    assert ids("DOE_JOHN_12345", "site-secret") == (uid, study)  # relative input: the same ids
    other = ids(tmp_path / "DOE_JOHN_12345", "other-secret")
    assert other[0] != uid and other[1] != study


# --- an output folder inside the input -------------------------------------------------------------------------


def test_an_output_folder_inside_the_input_is_left_out_of_the_inventory(tmp_path, series, cfg):
    """A second run into OUT inside INPUT listed ctscore's own files (tables, run.json, result.json, masks, the
    records) in inventory.csv as skipped files; a user's own file in OUT, and the series, are still listed."""
    import shutil

    import pandas as pd

    src, _ = series
    root = tmp_path / "in"
    shutil.copytree(src / "s00", root / "s00")
    for out in (root / "ctscore_out",):  # a subfolder of the input (the input itself is refused: OUTPUT_IS_INPUT)
        cfg_masks = load_config(overrides=FAST[:2], extra={"segmentation": {"method": "classical"}})
        for _ in range(2):
            summary = run_pipeline(root, out, cfg_masks, batch=BatchOptions(progress=False))
        assert summary["n_ok"] == 1
        (out / "notes.txt").write_text("my own notes")
        (out / ".scans.csv.abc123.tmp").write_text("an atomic write under way")
        (out / ".status" / "x.json").write_text("{}")
        run_pipeline(root, out, cfg_masks, batch=BatchOptions(progress=False))
        inv = pd.read_csv(out / "inventory.csv")
        skipped = [Path(p).relative_to(root).as_posix() for p in inv.loc[inv.file_status == "skipped", "path"]]
        notes = (out / "notes.txt").relative_to(root).as_posix()
        assert skipped == [notes], skipped
        assert (inv.file_status == "used").sum() == len(list((root / "s00").iterdir()))
        (out / "notes.txt").unlink()


def test_a_folder_with_a_foreign_run_json_is_read_as_usual(tmp_path):
    from pipeline.inventory import iter_files

    (tmp_path / "run.json").write_text('{"tool": "another program"}')
    (tmp_path / "scans.csv").write_text("a,b\n")
    (tmp_path / "scan-0123456789ab").mkdir()
    (tmp_path / "scan-0123456789ab" / "x.dcm").write_bytes(b"")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in iter_files(tmp_path)) == [
        "run.json", "scan-0123456789ab/x.dcm", "scans.csv"]


def test_ctscore_errors_survive_pickling_with_their_code_and_path():
    """A CTScoreError raised on a dask worker could not be rebuilt by pickle (its subclasses' own arguments)."""
    import pickle

    from pipeline.errors import ConfigError, CTScoreError, NoEligibleSeries

    for err in (CTScoreError("OUTPUT_UNWRITABLE", "disk full", "/out"), ConfigError("bad key", "cfg.yaml"),
                NoEligibleSeries("nothing", None)):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and (back.code, back.message, back.path) == (err.code, err.message, err.path)
        assert str(back) == str(err)
