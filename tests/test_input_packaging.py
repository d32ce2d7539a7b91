"""How series arrive packaged (an input-packaging audit, 2026-12-08):

1. a deleted copy of a series in ``.Trashes`` or ``$RECYCLE.BIN`` was walked and chosen over the visible series of its
   study (its kernel ranked higher): hidden and system folders below INPUT are not read (HIDDEN_FOLDER, one row each);
2. archives (zip, tar, tar.gz, 7z, RAR, ISO) and gzipped slices were NOT_DICOM "no DICM preamble", and a zip beside
   an extracted series was ignored in silence: ARCHIVE, named in the no-stack sentence, and a warning when series
   are found beside them;
3. slices left gzipped at a series' ends shortened the scan with no flag: they count in UNREADABLE_FILES_BESIDE;
4. an earlier ctscore output folder given as INPUT said "no files": its run.json's DICOM input is named;
5. a DICOMDIR without its image folders: how many images it lists, none under INPUT;
6. INPUT one file, or a text list of paths: said so.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import tarfile
from pathlib import Path

import pydicom
import pytest
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from pipeline.config import load_config
from pipeline.dicom_codes import CODES
from pipeline.inventory import build_inventory, input_hints, no_stack_sentence, read_file
from pipeline.loading import load_series
from pipeline.run import no_eligible_message
from tests.dicom_factory import write_series


def _codes(inv) -> dict[str, str]:
    """file name -> file_code of the per-file table."""
    return {Path(p).name: c for p, c in zip(inv.files["path"], inv.files["file_code"].fillna(""))}


def _gzip(path: Path) -> Path:
    out = path.with_name(path.name + ".gz")
    out.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return out


# --- 1. hidden and system folders --------------------------------------------------------------------------------

def test_a_deleted_copy_in_the_trash_is_not_chosen_over_the_visible_series(tmp_path):
    study, frame = generate_uid(), generate_uid()
    visible = generate_uid()
    write_series(tmp_path / "study" / "SE1", 12, kernel="STANDARD", study_uid=study, frame_uid=frame,
                 series_uid=visible)
    write_series(tmp_path / ".Trashes" / "501" / "SE9", 12, kernel="LUNG", study_uid=study, frame_uid=frame)
    write_series(tmp_path / "$RECYCLE.BIN" / "S-1-5-21" / "SE8", 12, kernel="LUNG", study_uid=study, frame_uid=frame)
    (tmp_path / "__MACOSX").mkdir()
    inv = build_inventory(tmp_path, load_config())
    assert [c.series_uid for c in inv.chosen] == [visible] and len(inv.candidates) == 1
    rows = inv.files[inv.files["file_code"] == "HIDDEN_FOLDER"]
    got = {Path(p).name: d for p, d in zip(rows["path"], rows["file_detail"])}
    assert set(got) == {".Trashes", "$RECYCLE.BIN", "__MACOSX"}
    assert "its 12 files were not read" in got[".Trashes"] and "trash" in got[".Trashes"]
    assert "holds no files" in got["__MACOSX"]
    assert set(rows["file_status"]) == {"skipped"} and CODES["HIDDEN_FOLDER"].action == "S"


def test_a_hidden_input_folder_and_hidden_folders_above_it_are_read(tmp_path):
    root = tmp_path / ".snapshot" / "daily" / ".export"
    write_series(root / "SE1", 12)
    inv = build_inventory(root, load_config())
    assert len(inv.chosen) == 1 and "HIDDEN_FOLDER" not in set(inv.files["file_code"])


def test_the_count_of_a_hidden_folder_stops_at_its_limit(tmp_path, monkeypatch):
    import pipeline.inventory as inventory

    monkeypatch.setattr(inventory, "HIDDEN_COUNT_LIMIT", 5)
    for k in range(7):
        (tmp_path / ".Trash-1000" / "files").mkdir(parents=True, exist_ok=True)
        (tmp_path / ".Trash-1000" / "files" / f"x{k}").write_bytes(b"x")
    assert "its 5+ files" in read_file(tmp_path / ".Trash-1000").detail


def test_only_hidden_folders_say_so_when_nothing_is_found(tmp_path):
    write_series(tmp_path / ".Trashes" / "SE1", 12)
    inv = build_inventory(tmp_path, load_config())
    said = no_stack_sentence(inv.files, tmp_path)
    assert "no files and 1 hidden or system folder not read" in said and ".Trashes" in said, said


# --- 2. archives and compressed files ----------------------------------------------------------------------------

def _archives(tmp_path: Path) -> Path:
    src = tmp_path / "src" / "study"
    write_series(src, 12, size=16)
    root = tmp_path / "in"
    root.mkdir()
    shutil.make_archive(str(root / "study"), "zip", src.parent)
    with tarfile.open(root / "study.tar", "w") as t:
        t.add(src, arcname="study")
    with tarfile.open(root / "study.tar.gz", "w:gz") as t:
        t.add(src, arcname="study")
    (root / "study.7z").write_bytes(b"7z\xbc\xaf'\x1c\x00\x04" + bytes(400))
    (root / "study.rar").write_bytes(b"Rar!\x1a\x07\x01\x00" + bytes(400))
    (root / "STUDY.ISO").write_bytes(b"\x00" * 0x8001 + b"CD001\x01" + bytes(400))
    one = sorted(src.iterdir())[0]
    (root / "IM0001.dcm.gz").write_bytes(gzip.compress(one.read_bytes()))
    report = root / "report.docx"
    shutil.make_archive(str(report.with_suffix("")), "zip", src.parent)
    report.with_suffix(".zip").rename(report)
    return root


def test_archives_are_named_by_kind_not_no_dicm_preamble(tmp_path):
    root = _archives(tmp_path)
    inv = build_inventory(root, load_config())
    details = {Path(p).name: (c, d) for p, c, d in zip(inv.files["path"], inv.files["file_code"],
                                                         inv.files["file_detail"])}
    assert details["study.zip"] == ("ARCHIVE", "ZIP archive: not opened (ctscore reads folders of DICOM files): "
                                               "unpack it and give the folder")
    assert details["study.tar"][1].startswith("tar archive: not opened")
    assert details["study.tar.gz"][1].startswith("gzip-compressed tar archive: not opened")
    assert details["study.7z"][1].startswith("7z archive") and details["study.rar"][1].startswith("RAR archive")
    assert details["STUDY.ISO"][1].startswith("ISO disc image")
    assert details["IM0001.dcm.gz"] == ("ARCHIVE", "gzip-compressed DICOM file: not read (ctscore reads uncompressed "
                                                   "files): gunzip it")
    assert details["report.docx"][0] == "NOT_DICOM"  # a zip-based document, not an archive of series
    said = no_stack_sentence(inv.files, root)
    assert "6 archives (STUDY.ISO, study.7z, ...) not opened" in said and "unpack them and give the folder" in said
    assert "1 compressed file (IM0001.dcm.gz) not read: gunzip it first" in said, said


def test_the_run_message_names_the_archive(tmp_path):
    root = tmp_path / "in"
    src = tmp_path / "src" / "study"
    write_series(src, 12, size=16)
    root.mkdir()
    shutil.make_archive(str(root / "study"), "zip", src.parent)
    inv = build_inventory(root, load_config())
    said = no_eligible_message(inv, None, load_config(), tmp_path / "out" / "inventory.csv", root)
    assert "(no DICOM image stack in it: 1 file, an archive or compressed file)" in said
    assert "1 archive (study.zip) not opened: ctscore reads folders of DICOM files; unpack it" in said, said


def test_a_zip_beside_a_series_is_warned_about(tmp_path, caplog):
    study = generate_uid()
    write_series(tmp_path / "in" / "SE1_STANDARD", 12, kernel="STANDARD", study_uid=study)
    write_series(tmp_path / "src" / "SE2_LUNG", 12, kernel="LUNG", study_uid=study)
    shutil.make_archive(str(tmp_path / "in" / "SE2_LUNG"), "zip", tmp_path / "src")
    with caplog.at_level(logging.WARNING):
        inv = build_inventory(tmp_path / "in", load_config())
    assert len(inv.chosen) == 1
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert ("1 archive not opened (SE2_LUNG.zip): series inside it were not considered; unpack it and run again"
            in said), said


# --- 3. slices left compressed at a series' ends -----------------------------------------------------------------

def test_gzipped_end_slices_are_unreadable_files_beside(tmp_path, caplog):
    files = write_series(tmp_path / "s", 24, shuffle=False)  # s0000.dcm (bottom) ... s0023.dcm (top)
    for f in files[-8:]:
        _gzip(f)
    vol = load_series(files[:-8])
    assert "UNREADABLE_FILES_BESIDE:8" in vol.flags, vol.flags
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "s0016.dcm.gz (gzip-compressed DICOM file)" in said


def test_a_gzipped_slice_inside_the_series_is_named_in_the_gap(tmp_path):
    files = write_series(tmp_path / "s", 12, shuffle=False)
    _gzip(files[5])
    from tests.dicom_factory import refused

    err = refused(files[:5] + files[6:])
    assert err.code == "SLICE_GAP" and "s0005.dcm.gz (gzip-compressed DICOM file)" in err.message, err.message


# --- 4. an earlier output folder as INPUT ------------------------------------------------------------------------

def test_an_output_folder_given_as_input_names_its_dicom_input(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"ctscore_version": "1", "config_sha256": "x", "input": "/data/ct"}))
    (out / "scans.csv").write_text("scan_id\n")
    inv = build_inventory(out, load_config())
    said = no_stack_sentence(inv.files, out)
    assert "no files (INPUT is a ctscore output folder; its DICOM input was /data/ct)" in said, said


def test_an_unfinished_output_folder_without_a_readable_run_json_does_not_crash(tmp_path):
    out = tmp_path / "out"
    (out / ".status").mkdir(parents=True)
    (out / "inventory.parquet").write_bytes(b"PAR1")
    (out / "run.json").write_text("{not json")
    inv = build_inventory(out, load_config())
    said = no_stack_sentence(inv.files, out)
    assert "INPUT is a ctscore output folder (its run.json does not name the DICOM input)" in said, said


# --- 5. a DICOMDIR without its images ----------------------------------------------------------------------------

def test_a_dicomdir_alone_says_how_many_images_it_lists(tmp_path):
    files = write_series(tmp_path / "src", 12, size=16)
    fs = FileSet()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.StudyTime, ds.StudyID, ds.SeriesNumber = "120000", "1", 1  # what a DICOMDIR's records need
        fs.add(ds)
    fs.write(tmp_path / "disc")
    (tmp_path / "copy").mkdir()
    shutil.copy(tmp_path / "disc" / "DICOMDIR", tmp_path / "copy" / "DICOMDIR")
    inv = build_inventory(tmp_path / "copy", load_config())
    said = no_stack_sentence(inv.files, tmp_path / "copy")
    assert "the DICOMDIR lists 12 images, none found under INPUT: copy the whole disc" in said, said
    assert input_hints(build_inventory(tmp_path / "disc", load_config()).files, tmp_path / "disc") == []


def test_a_garbled_dicomdir_says_nothing_more(tmp_path):
    (tmp_path / "DICOMDIR").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 50)
    inv = build_inventory(tmp_path, load_config())
    assert "DICOMDIR lists" not in no_stack_sentence(inv.files, tmp_path)


# --- 6. one file, or a list of files -----------------------------------------------------------------------------

def test_one_file_as_input_asks_for_its_folder(tmp_path):
    files = write_series(tmp_path / "s", 12)
    inv = build_inventory(files[0], load_config())
    assert not inv.chosen
    said = no_eligible_message(inv, None, load_config(), tmp_path / "inventory.csv", files[0])
    assert "INPUT is one file: give the folder of its series" in said, said


def test_a_list_of_files_is_named(tmp_path):
    files = write_series(tmp_path / "s", 12)
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(str(f) for f in files) + "\n")
    inv = build_inventory(listing, load_config())
    said = no_stack_sentence(inv.files, listing)
    assert "INPUT (files.txt) is a list of files, which ctscore does not read: put the files in one folder" in said
    (tmp_path / "notes.txt").write_text("a note\nnot paths\n")
    other = no_stack_sentence(build_inventory(tmp_path / "notes.txt", load_config()).files, tmp_path / "notes.txt")
    assert "list of files" not in other and "INPUT is one file" in other


def test_scan_names_the_shared_folders_once_and_cuts_long_folders_in_the_middle():
    """`ctscore scan` cut a stack's folder to its last 37 characters: two patients of a TCIA download read alike."""
    from pipeline.commands.scan import common_folder, short_folder

    a = "manifest-1600000000000/COVID-19-NY-SBU/A000001/03-14-2020-CT CHEST/2.000000-ROUTINE CHEST NON-CON-67890"
    b = a.replace("A000001", "A000002")
    common = common_folder([a, b])
    assert common == "manifest-1600000000000/COVID-19-NY-SBU"
    sa, sb = short_folder(a[len(common) + 1:]), short_folder(b[len(common) + 1:])
    assert len(sa) == 60 and "..." in sa and sa.startswith("A000001/") and sb.startswith("A000002/")
    assert sa.endswith("NON-CON-67890")
    assert short_folder("chest/ge") == "chest/ge" and common_folder(["chest/ge"]) == ""
    assert common_folder(["p1/s1", "p1"]) == "" and common_folder(["p1/s1", "p1/s2"]) == "p1"


# --- a review of the above (2026-12-08) --------------------------------------------------------------------------

@pytest.mark.parametrize("trash", ["#recycle", "@Recycle", "RECYCLER", "Recycled", "#snapshot", "~snapshot", "@eaDir"])
def test_nas_and_old_windows_trash_folders_are_not_read(tmp_path, trash):
    """Synology (#recycle, #snapshot, @eaDir), QNAP (@Recycle), older Windows (RECYCLER, Recycled): a deleted lung-kernel
    copy there was still chosen over the visible series."""
    study, frame, visible = generate_uid(), generate_uid(), generate_uid()
    write_series(tmp_path / "study" / "SE1", 12, kernel="STANDARD", study_uid=study, frame_uid=frame,
                 series_uid=visible)
    write_series(tmp_path / trash / "SE9", 12, kernel="LUNG", study_uid=study, frame_uid=frame)
    inv = build_inventory(tmp_path, load_config())
    assert [c.series_uid for c in inv.chosen] == [visible]
    assert list(inv.files.loc[inv.files["file_code"] == "HIDDEN_FOLDER", "path"].map(lambda p: Path(p).name)) == [trash]


def test_a_trash_holding_files_is_warned_about_when_series_are_found(tmp_path, caplog):
    write_series(tmp_path / "study" / "SE1", 12)
    write_series(tmp_path / ".Trashes" / "SE9", 12)
    (tmp_path / ".empty").mkdir()
    (tmp_path / ".one").mkdir()
    (tmp_path / ".one" / "x").write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        inv = build_inventory(tmp_path, load_config())
    assert len(inv.chosen) == 1
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert ("2 hidden or system folders not read (.Trashes: 12 files, .one: 1 file): series inside them were not "
            "considered (a trash or a snapshot); move them out and run again to have them scored" in said), said
    assert read_file(tmp_path / ".one").detail.endswith("its 1 file was not read; move it out of the folder to have "
                                                        "it considered")


@pytest.mark.parametrize("beside", ["20240105_export.zip", "1.2.840.99.tar.gz", "IMAGES.zip", "1.3.12_CT_chest.nii.gz"])
def test_an_archive_beside_a_whole_series_is_no_missing_slice(tmp_path, beside):
    """Stripping '.zip' made an export's zip look like an extensionless slice: a whole scan was flagged
    UNREADABLE_FILES_BESIDE ('may be its missing first or last slices')."""
    files = write_series(tmp_path / "s", 12, shuffle=False)
    for f in files:  # UID-like names without extension, as many exports write them
        f.rename(f.with_name(f"1.2.840.{f.stem[1:]}"))
    files = sorted((tmp_path / "s").iterdir())
    src = tmp_path / "src"
    write_series(src / "x", 4, size=16)
    if beside.endswith(".zip"):
        shutil.make_archive(str(tmp_path / "s" / beside[:-4]), "zip", src)
    elif beside.endswith(".tar.gz"):
        with tarfile.open(tmp_path / "s" / beside, "w:gz") as t:
            t.add(src, arcname="x")
    else:
        (tmp_path / "s" / beside).write_bytes(gzip.compress(b"\x5c\x01\x00\x00" + bytes(400)))
    vol = load_series(files)
    assert not any(f.startswith("UNREADABLE_FILES_BESIDE") for f in vol.flags), vol.flags


def test_bzip2_files_are_told_by_their_names_when_the_first_block_is_not_read(tmp_path):
    """bzip2 inflates nothing before a whole block (up to 900 kB): a real study.tar.bz2 was 'a bzip2-compressed file'
    and a slice.dcm.bz2 not 'DICOM'. Incompressible pixels make the streams longer than the 4 kB read."""
    import bz2

    import numpy as np

    rng = np.random.default_rng(0)
    files = write_series(tmp_path / "src", 3, size=256, hu=rng.integers(-1000, 1000, (256, 256)).astype(np.int16))
    root = tmp_path / "in"
    root.mkdir()
    with tarfile.open(root / "study.tar.bz2", "w:bz2") as t:
        t.add(tmp_path / "src", arcname="src")
    (root / "IM1.dcm.bz2").write_bytes(bz2.compress(files[0].read_bytes()))
    assert (root / "IM1.dcm.bz2").stat().st_size > 4096
    assert read_file(root / "study.tar.bz2").detail.startswith("bzip2-compressed tar archive: not opened")
    assert read_file(root / "IM1.dcm.bz2").detail.startswith("bzip2-compressed DICOM file: not read")


def test_scan_counts_hidden_folders_apart_from_files(tmp_path, capsys):
    from pipeline.cli import main

    write_series(tmp_path / "study" / "SE1", 12)
    write_series(tmp_path / ".Trashes" / "SE9", 12)
    main(["scan", str(tmp_path)])
    out = capsys.readouterr().out
    assert "12 files: 12 in selected stacks, 0 in stacks not selected, 0 skipped as files" in out, out
    assert "; 1 hidden or system folder not read (HIDDEN_FOLDER)" in out
