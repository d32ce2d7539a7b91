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
        (tmp_path / "s" / f"s9{k:03d}.dcm").write_bytes(b"")
    assert f"UNREADABLE_FILES_BESIDE:{n}" in load_series(files).flags
    said = " ".join(r.getMessage() for r in caplog.records if "beside the series" in r.getMessage())
    assert said.count("(empty)") == min(n, 5) and ((", ..." in said) == (n > 5))


@pytest.mark.parametrize("name,flagged", [("TRANSFER_COMPLETE", False), ("done.txt", False), ("s0099.dcm", True),
                                          ("x0099.dcm", False), ("s0099", False)])
def test_only_files_named_like_the_series_own_count(tmp_path, name, flagged):
    """A transfer tool's empty "done" marker beside a complete series flagged it (a review): only files named like
    the series' own slices (the same DICOM extension, their leading letters) count."""
    files = write_series(tmp_path / "s", 6)  # s0000.dcm ... s0005.dcm
    (tmp_path / "s" / name).write_bytes(b"")
    got = [f for f in load_series(files).flags if f.startswith("UNREADABLE_FILES_BESIDE")]
    assert bool(got) == flagged, got


def test_uid_named_slices_count_uid_named_neighbours_only(tmp_path):
    files = write_series(tmp_path / "s", 6)
    renamed = []
    for k, f in enumerate(files):
        renamed.append(f.rename(f.with_name(f"1.2.826.0.1.3680043.{k}")))
    (tmp_path / "s" / "1.2.826.0.1.3680043.99").write_bytes(b"")
    (tmp_path / "s" / "README").write_bytes(b"")
    assert "UNREADABLE_FILES_BESIDE:1" in load_series(renamed).flags
