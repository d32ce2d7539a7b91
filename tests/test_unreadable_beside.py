"""UNREADABLE_FILES_BESIDE: files beside a series that cannot be read (no permission, or empty: still being copied)
may be its first or last slices, which no gap shows. A 124-slice series whose top slice had no read permission was
scored ok from 123 slices with no flag on the scan (an audit, 2026-12-07: the file was named only in the run's log and
inventory.csv)."""

from __future__ import annotations

import builtins

import pytest

import pipeline.loading as loading
from pipeline.dicom_codes import CODES
from pipeline.loading import load_series
from tests.dicom_factory import write_series


def test_an_empty_or_unreadable_file_beside_the_series_is_flagged_with_its_count(tmp_path, monkeypatch, caplog):
    files = write_series(tmp_path / "s", 12)
    assert not [f for f in load_series(files).flags if f.startswith("UNREADABLE_FILES_BESIDE")]
    (tmp_path / "s" / "s9999.dcm").write_bytes(b"")  # still being copied
    (tmp_path / "s" / ".DS_Store").write_bytes(b"")  # hidden: left alone
    locked = tmp_path / "s" / "s9998.dcm"
    locked.write_bytes(files[0].read_bytes())
    real_open = builtins.open

    def no_permission(path, *a, **k):  # (tests run as root, where chmod does not stop a read)
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(loading, "open", no_permission, raising=False)
    vol = load_series(files)
    assert "UNREADABLE_FILES_BESIDE:2" in vol.flags and vol.image.GetSize()[2] == 12
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "s9999.dcm (empty)" in said and "s9998.dcm (Permission denied)" in said and ".DS_Store" not in said
    assert CODES["UNREADABLE_FILES_BESIDE"].action == "W"


def test_files_of_other_folders_are_not_looked_at(tmp_path):
    files = write_series(tmp_path / "a", 8)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.dcm").write_bytes(b"")
    (tmp_path / "a" / "sub").mkdir()  # a folder beside the slices is no file
    assert not [f for f in load_series(files).flags if f.startswith("UNREADABLE_FILES_BESIDE")]


@pytest.mark.parametrize("n", [1, 7])
def test_the_log_names_at_most_five(tmp_path, n, caplog):
    files = write_series(tmp_path / "s", 6)
    for k in range(n):
        (tmp_path / "s" / f"z{k}.dcm").write_bytes(b"")
    assert f"UNREADABLE_FILES_BESIDE:{n}" in load_series(files).flags
    said = " ".join(r.getMessage() for r in caplog.records if "beside the series" in r.getMessage())
    assert said.count("(empty)") == min(n, 5) and ((", ..." in said) == (n > 5))
