"""Failure handling, audit of 2026-12-07 (review 49).

F1: a series that failed inside a folder whose name is not valid UTF-8 (a Latin-1 byte, which Python decodes with a
surrogate escape) stopped ``ctscore run`` at its tables with a raw UnicodeEncodeError (exit 1, no failures.csv,
report.html or run.json, ``.status/tables.pending`` left), and every rerun and ``ctscore aggregate`` the same way.
F2: a slice cut inside its header (600 bytes: before its SeriesInstanceUID; 100 bytes: inside its preamble) at the top
or bottom of a series was dropped without a word: the series scored from 49 of its 50 slices, no flag.
F3: a middle slice cut to 100 bytes, or replaced by junk after its preamble, left a SLICE_GAP naming only the
neighbouring slices.
F4: a ``.scan-<id>.old`` folder that could not be removed stopped the next ``--overwrite`` run, all its scans, with
OUTPUT_UNWRITABLE.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from pipeline.phantom import make_phantom, write_dicom_series

FAST = ["--segmenter", "classical", "--set", "resample.spacing_mm=[4,4,4]"]


def _phantom(folder: Path, seed: int = 100) -> list[Path]:
    """A 50-slice phantom series (file names: 16 hex digits, some starting with a letter) in ``folder``; its files
    from the bottom slice to the top one."""
    write_dicom_series(make_phantom(shape=(50, 80, 80), spacing=(6.0, 4.4, 4.4), seed=seed), folder, compress=False)
    files = [p for p in folder.iterdir() if p.is_file()]
    return sorted(files, key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))


def _cfg(**outputs):
    from pipeline.config import load_config

    return load_config(overrides=["resample.spacing_mm=[4,4,4]"],
                       extra={"segmentation": {"method": "classical"},
                              "outputs": {"write_qc_png": False, "write_masks": False, **outputs}})


# ------------------------------------------------------------------------------------------------------------- F1


def test_a_failed_series_in_a_folder_named_not_utf8_is_a_failure_row(tmp_path):
    from pipeline.cli import main
    from pipeline.errors import EXIT_SOME_FAILED

    if sys.getfilesystemencoding().lower() not in ("utf-8", "utf8"):
        pytest.skip("the file system encoding is not UTF-8")
    src = tmp_path / "in"
    _phantom(src / "ok" / "series", seed=101)
    files = _phantom(src / "pat0" / "series", seed=100)
    os.truncate(files[20], os.path.getsize(files[20]) // 2)  # cut inside its pixel data: the series fails
    try:
        os.rename(src / "pat0", os.fsencode(src) + b"/pat\xe9")  # "paté" in Latin-1
    except OSError:
        pytest.skip("the file system refuses a name that is not UTF-8")
    out = tmp_path / "out"
    assert main(["run", str(src), "-o", str(out), *FAST]) == EXIT_SOME_FAILED
    fail = pd.read_csv(out / "failures.csv")
    assert len(fail) == 1 and "/in/pat\\xe9/series" in fail["path"][0]
    scans = pd.read_csv(out / "scans.csv")
    assert sorted(scans["status"]) == ["failed", "ok"]
    assert pd.read_parquet(out / "failures.parquet")["path"][0] == fail["path"][0]
    assert not (out / ".status" / "tables.pending").exists()
    for name in ("landmarks.csv", "report.html", "run.json", "data_dictionary.csv"):
        assert (out / name).is_file(), name
    run = (out / "run.json").read_text(encoding="utf-8")
    json.loads(run)
    assert "\\udc" not in run  # no lone surrogate for a strict JSON reader
    (out / "report.html").read_bytes().decode("utf-8")  # strict UTF-8
    # a rerun (resume) and ctscore aggregate write the tables again, the same way
    assert main(["run", str(src), "-o", str(out), *FAST]) == EXIT_SOME_FAILED
    assert main(["aggregate", str(out)]) == EXIT_SOME_FAILED
    assert pd.read_csv(out / "failures.csv")["path"][0] == fail["path"][0]
    assert not (out / ".status" / "tables.pending").exists()


def test_atomic_write_table_escapes_text_not_utf8(tmp_path):
    from pipeline.outputs import FAILURE_COLUMNS, atomic_write_table, printable_text, write_csv_tables

    odd = os.fsdecode(b"/data/pat\xe9/series")
    df = atomic_write_table(tmp_path / "failures.csv", [{"scan_id": "scan-1", "code": "CORRUPT_FILE",
                                                         "message": f"cannot read {odd}/1", "path": odd,
                                                         "extra": odd}], FAILURE_COLUMNS)
    assert df["path"][0] == "/data/pat\\xe9/series" and df["extra"][0] == "/data/pat\\xe9/series"
    assert pd.read_csv(tmp_path / "failures.csv")["message"][0] == "cannot read /data/pat\\xe9/series/1"
    # valid text, numbers and missing values are left as they are
    assert printable_text("Müller ≥ 3") == "Müller ≥ 3" and printable_text(3.5) == 3.5 and printable_text(None) is None
    assert printable_text("\ud800x") == "\\ud800x"  # a lone surrogate that is no escaped byte
    (path,) = write_csv_tables({"t": pd.DataFrame({"a": pd.Series([odd], dtype=object), "b": [1]})},
                               tmp_path / "stats")
    assert pd.read_csv(path)["a"][0] == "/data/pat\\xe9/series"


def test_inventory_and_tables_escape_alike():
    from pipeline.inventory import _printable
    from pipeline.outputs import printable_text

    for raw in (b"M\xfcller_0001.dcm", b"plain.dcm", b"\xe9t\xe9.txt"):
        assert _printable(os.fsdecode(raw)) == printable_text(os.fsdecode(raw))


# ------------------------------------------------------------------------------------------------------------- F2


def _beside_flags(vol) -> list[str]:
    return [f for f in vol.flags if f.startswith("UNREADABLE_FILES_BESIDE")]


@pytest.mark.parametrize("end,size,why", [("top", 600, "truncated, 600 bytes, no series UID"),
                                          ("bottom", 100, "truncated or damaged, 100 bytes, no DICM preamble")])
def test_an_end_slice_cut_inside_its_header_is_flagged(tmp_path, caplog, end, size, why):
    """Through the whole run: the inventory hands the loader the other 49 slices; scans.csv carries the flag."""
    from pipeline.batch import BatchOptions
    from pipeline.run import run_pipeline

    files = _phantom(tmp_path / "in" / "series")
    cut = files[-1] if end == "top" else files[0]
    os.truncate(cut, size)
    (tmp_path / "in" / "series" / "notes.txt").write_text("this is not dicom\n" * 50)  # named like none: left alone
    with caplog.at_level(logging.WARNING, logger="pipeline.loading"):
        summary = run_pipeline(tmp_path / "in", tmp_path / "out", _cfg(), batch=BatchOptions(progress=False))
    assert summary["n_ok"] == 1
    row = pd.read_csv(tmp_path / "out" / "scans.csv").iloc[0]
    assert row["n_slices"] == 49
    assert "UNREADABLE_FILES_BESIDE:1" in row["qc_flags"].split(";")
    said = [r.getMessage() for r in caplog.records if "beside the series" in r.getMessage()]
    assert len(said) == 1 and f"{cut.name} ({why})" in said[0] and "notes.txt" not in said[0]


@pytest.mark.parametrize("size", [132, 160, 1000])
def test_other_cuts_before_the_pixel_data_are_flagged(tmp_path, size):
    from pipeline.loading import load_series

    files = _phantom(tmp_path / "s")
    os.truncate(files[-1], size)
    assert _beside_flags(load_series(files[:-1])) == ["UNREADABLE_FILES_BESIDE:1"]


def test_only_the_cut_slice_is_flagged_not_the_files_beside_that_are_no_slice(tmp_path, caplog):
    """Named like the slices (16 hex digits, or no DICOM extension) but plainly no slice of the series: a text,
    JSON, JPEG or PNG file, a DICOMDIR, a valid non-image object of another series, a truncated copy of a slice the
    series has. Beside them, the top slice cut to 600 bytes is the one file counted and named."""
    from pydicom.fileset import FileSet

    from pipeline.loading import load_series

    files = _phantom(tmp_path / "s")
    folder = files[0].parent
    (folder / "notes.txt").write_text("this is not dicom\n" * 50)
    (folder / "README").write_text("read me")
    (folder / "info.json").write_text('{"series": 1}')
    (folder / "thumb.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 300)
    (folder / "b3aa.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 300)
    ds = pydicom.dcmread(files[0])
    del ds.PixelData
    ds.SOPClassUID, ds.SeriesInstanceUID = "1.2.840.10008.5.1.4.1.1.88.11", "1.2.3.4"  # a basic text SR
    ds.save_as(folder / "9a9a9a9a9a9a9a9a")
    shutil.copy(files[3], folder / "0copy")
    os.truncate(folder / "0copy", 3000)  # a damaged copy of a slice the series has (same SOPInstanceUID)
    fs = FileSet()
    fs.add(pydicom.dcmread(files[1]))
    fs.write(str(tmp_path / "dd"))
    shutil.copy(tmp_path / "dd" / "DICOMDIR", folder / "DICOMDIR")
    os.truncate(files[-1], 600)
    with caplog.at_level(logging.WARNING, logger="pipeline.loading"):
        assert _beside_flags(load_series(files[:-1])) == ["UNREADABLE_FILES_BESIDE:1"]
    (said,) = [r.getMessage() for r in caplog.records if "beside the series" in r.getMessage()]
    assert said.endswith(f": {files[-1].name} (truncated, 600 bytes, no series UID)")


# ------------------------------------------------------------------------------------------------------------- F3


@pytest.mark.parametrize("damage", ["cut100", "junk"])
def test_a_slice_gap_names_a_middle_slice_without_preamble(tmp_path, damage):
    from pipeline.errors import SeriesError
    from pipeline.loading import load_series

    files = _phantom(tmp_path / "s")
    victim = files[20]
    if damage == "cut100":
        os.truncate(victim, 100)
    else:  # replaced by junk after a preamble of zeros
        victim.write_bytes(b"\0" * 128 + b"JUNK" * 500)
    (victim.parent / "notes.txt").write_text("this is not dicom\n" * 50)
    with pytest.raises(SeriesError) as e:
        load_series([f for f in files if f != victim])
    assert e.value.code == "SLICE_GAP"
    assert "may be the missing slices: " + victim.name + " (truncated or damaged" in e.value.message
    assert "notes.txt" not in e.value.message


# ------------------------------------------------------------------------------------------------------------- F4


def _stuck_old(monkeypatch, target: str, rename_too: bool = False):
    """Have ``.<target>.old`` behave as a folder without write permission (tests run as root, where chmod does not
    stop a removal): it cannot be emptied, and (``rename_too``) not renamed either."""
    import pipeline.outputs as outputs

    real_rmtree, real_rename = shutil.rmtree, os.rename

    def rmtree(path, *a, **k):
        if Path(path).name == f".{target}.old":
            return None
        return real_rmtree(path, *a, **k)

    def rename(src, dst, *a, **k):
        if rename_too and Path(src).name == f".{target}.old":
            raise PermissionError(13, "Permission denied", str(src))
        return real_rename(src, dst, *a, **k)

    monkeypatch.setattr(outputs.shutil, "rmtree", rmtree)
    monkeypatch.setattr(outputs.os, "rename", rename)


def _three_scans(tmp_path) -> tuple[Path, Path, str]:
    from pipeline.batch import BatchOptions
    from pipeline.run import run_pipeline

    src, out = tmp_path / "in", tmp_path / "out"
    for k in range(3):
        _phantom(src / f"p{k}" / "series", seed=200 + k)
    assert run_pipeline(src, out, _cfg(), batch=BatchOptions(progress=False))["n_ok"] == 3
    target = sorted(p.name for p in out.glob("scan-*"))[1]
    return src, out, target


def test_an_earlier_copy_that_cannot_be_removed_is_set_aside(tmp_path, monkeypatch, caplog):
    from pipeline.batch import BatchOptions
    from pipeline.run import run_pipeline

    src, out, target = _three_scans(tmp_path)
    _stuck_old(monkeypatch, target)
    over = BatchOptions(progress=False, overwrite=True)
    assert run_pipeline(src, out, _cfg(), batch=over)["n_ok"] == 3
    assert (out / f".{target}.old" / "result.json").is_file()  # left by the commit, with a warning (as before)
    with caplog.at_level(logging.WARNING):
        summary = run_pipeline(src, out, _cfg(), batch=over)  # stopped the whole run with OUTPUT_UNWRITABLE
    assert summary["n_ok"] == 3 and summary["n_failed"] == 0
    aside = list(out.glob(f".{target}.old.*"))
    assert len(aside) == 1 and (aside[0] / "result.json").is_file()  # set aside, never deleted
    assert any(aside[0].name in r.getMessage() and "remove it by hand" in r.getMessage() for r in caplog.records)
    assert (out / target / "result.json").is_file()
    # the folder set aside is no input of a later inventory (an OUT inside the input)
    from pipeline.inventory import _SCAN_FOLDER

    assert _SCAN_FOLDER.fullmatch(aside[0].name)


def test_an_earlier_copy_that_cannot_be_moved_fails_its_scan_only(tmp_path, monkeypatch):
    from pipeline.batch import BatchOptions
    from pipeline.run import run_pipeline

    src, out, target = _three_scans(tmp_path)
    _stuck_old(monkeypatch, target, rename_too=True)
    over = BatchOptions(progress=False, overwrite=True)
    assert run_pipeline(src, out, _cfg(), batch=over)["n_ok"] == 3
    before = (out / target / "result.json").read_bytes()
    summary = run_pipeline(src, out, _cfg(), batch=over)
    assert summary["n_ok"] == 2 and summary["n_failed"] == 1
    fail = pd.read_csv(out / "failures.csv")
    assert fail["scan_id"].tolist() == [target] and fail["code"].tolist() == ["OUTPUT_UNWRITABLE"]
    assert f".{target}.old" in fail["message"][0] and "remove it" in fail["message"][0]
    # nothing lost: the results in place and the earlier copy are both kept
    assert (out / target / "result.json").read_bytes() == before
    assert (out / f".{target}.old" / "result.json").is_file()
    assert not (out / ".status" / "tables.pending").exists()
