"""Review of discovery and selection: which files are seen, how they form stacks, which stack is scored."""

from __future__ import annotations

import os

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pipeline.commands.scan import exit_code
from pipeline.inventory import build_inventory, iter_files
from pipeline.loading import load_series
from tests.dicom_factory import phantom_slice, write_enhanced, write_series


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 500])


# --- a stack with a truncated file is predicted to fail: a clean stack of the study goes first ---------

def test_truncated_stack_ranks_after_a_clean_stack_of_the_study(tmp_path):
    study = generate_uid()
    thin = write_series(tmp_path / "thin", 20, dz=1.0, thickness=1.0, study_uid=study, kernel="B70f")
    thick = write_series(tmp_path / "thick", 12, dz=2.0, thickness=2.0, study_uid=study, kernel="B30f")
    _truncate(thin[5])
    inv = build_inventory(tmp_path)
    (chosen,) = inv.chosen
    assert set(chosen.files) == set(thick)  # the thin stack cannot be loaded: loading would refuse it
    load_series(chosen.files)
    row = inv.stacks.set_index("n_slices").loc[20]
    assert "CORRUPT_FILE" in row["predicted_problems"] and thin[5].name in row["notes"]
    assert "preferred by loadable" in row["reason"]


def test_scan_exit_code_says_the_selected_stack_with_a_truncated_file_will_fail(tmp_path):
    files = write_series(tmp_path, 12)
    _truncate(files[3])
    inv = build_inventory(tmp_path)
    assert "CORRUPT_FILE" in inv.chosen[0].problems
    assert exit_code(inv) == 8


# --- the walk: linked folders, link loops, links to nothing, folders that cannot be listed ------------

def test_linked_folders_are_followed_and_a_link_loop_ends(tmp_path):
    files = write_series(tmp_path / "store" / "s1", 12)
    root = tmp_path / "cohort"
    root.mkdir()
    os.symlink(tmp_path / "store" / "s1", root / "patient1")  # a cohort folder made of links
    os.symlink(root, root / "patient1_again")  # a loop back to the top
    seen = list(iter_files(root))
    assert len(seen) == 12 and {p.name for p in seen} == {f.name for f in files}
    (chosen,) = build_inventory(root).chosen
    assert len(chosen.files) == 12


def test_link_to_nothing_is_named_in_the_inventory(tmp_path):
    write_series(tmp_path, 12)
    os.symlink(tmp_path / "gone.dcm", tmp_path / "zz_dangling.dcm")
    inv = build_inventory(tmp_path)
    row = inv.files.set_index("path").loc[str(tmp_path / "zz_dangling.dcm")]
    assert row["file_status"] == "skipped" and row["file_code"] == "UNREADABLE_FILE"
    assert len(inv.chosen) == 1 and len(inv.chosen[0].files) == 12


def test_folder_that_cannot_be_listed_is_named_and_the_walk_goes_on(tmp_path, monkeypatch):
    write_series(tmp_path / "a", 12)
    write_series(tmp_path / "b_locked", 12)
    write_series(tmp_path / "c", 12)
    locked = str(tmp_path / "b_locked")
    real_scandir, real_listdir = os.scandir, os.listdir

    def deny(fn):
        def wrapped(path=".", *a, **k):
            if os.fspath(path) == locked:
                raise PermissionError(13, "Permission denied", locked)
            return fn(path, *a, **k)
        return wrapped

    monkeypatch.setattr(os, "scandir", deny(real_scandir))  # root bypasses chmod: simulate the refusal
    monkeypatch.setattr(os, "listdir", deny(real_listdir))
    inv = build_inventory(tmp_path)
    row = inv.files.set_index("path").loc[locked]
    assert row["file_code"] == "UNREADABLE_FILE" and "Permission denied" in row["file_detail"]
    assert len(inv.chosen) == 2  # the folders beside it are still read


# --- two reconstructions of one series, of different slice thickness -----------------------------------

@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_overlapping_reconstructions_of_another_thickness_are_separate_stacks(tmp_path, offset):
    """A 1 mm and a 5 mm reconstruction under one SeriesInstanceUID (same kernel, same acquisition): mixed,
    the 5 mm slices were either refused as duplicate positions or silently interleaved and resampled."""
    suid, study, frame = generate_uid(), generate_uid(), generate_uid()
    thin = write_series(tmp_path, 40, dz=1.0, z0=-100.0, thickness=1.0, series_uid=suid, study_uid=study,
                        frame_uid=frame, prefix="a")
    write_series(tmp_path, 8, dz=5.0, z0=-100.0 + offset, thickness=5.0, series_uid=suid, study_uid=study,
                 frame_uid=frame, prefix="b", hu=phantom_slice(32) + 5)
    inv = build_inventory(tmp_path)
    assert sorted(inv.stacks["n_slices"]) == [8, 40]
    (chosen,) = inv.chosen
    assert set(chosen.files) == set(thin) and not chosen.problems
    vol = load_series(chosen.files)
    assert vol.image.GetSize()[2] == 40 and vol.flags == []


def test_a_thickness_change_along_z_stays_one_stack(tmp_path):
    """Thin slices at the lung bases and thicker ones above (tiling z, not overlapping) are one scan."""
    suid, study, frame = generate_uid(), generate_uid(), generate_uid()
    write_series(tmp_path, 10, dz=2.5, z0=-100.0, thickness=2.5, series_uid=suid, study_uid=study,
                 frame_uid=frame, prefix="a")
    write_series(tmp_path, 10, dz=5.0, z0=-75.0, thickness=5.0, series_uid=suid, study_uid=study,
                 frame_uid=frame, prefix="b")
    inv = build_inventory(tmp_path)
    assert list(inv.stacks["n_slices"]) == [20]


def test_one_slice_with_an_odd_thickness_value_is_not_split_off(tmp_path):
    files = write_series(tmp_path, 12, thickness=2.0,
                         per_slice=lambda k, p: p.update(thickness=2.5) if k == 6 else None)
    (chosen,) = build_inventory(tmp_path).chosen
    assert len(chosen.files) == len(files)


# --- enhanced CT: the kernel lives in the functional groups -----------------------------------------------

def _set_enhanced_kernel(path, kernel):
    ds = pydicom.dcmread(path)
    del ds.ConvolutionKernel
    recon = Dataset()
    recon.ConvolutionKernel = kernel
    ds.SharedFunctionalGroupsSequence[0].CTReconstructionSequence = [recon]
    ds.save_as(path)


def test_enhanced_ct_kernel_is_read_from_the_functional_groups(tmp_path):
    soft = write_enhanced(tmp_path / "a_soft.dcm", 14)  # more frames: would win on "slices"
    lung = write_enhanced(tmp_path / "b_lung.dcm", 12)
    _set_enhanced_kernel(soft, "B30f")
    _set_enhanced_kernel(lung, "B70f")
    study = generate_uid()
    for p in (soft, lung):
        ds = pydicom.dcmread(p)
        ds.StudyInstanceUID = study
        ds.save_as(p)
    inv = build_inventory(tmp_path)
    assert sorted(inv.stacks["kernel"]) == ["B30f", "B70f"]
    (chosen,) = inv.chosen
    assert chosen.files == [lung]


# --- a file name that is not UTF-8 (Latin-1 names from a CD) ---------------------------------------------

def test_file_name_not_utf8_does_not_stop_the_inventory(tmp_path):
    files = write_series(tmp_path, 12)
    odd = os.fsencode(tmp_path) + b"/M\xfcller_0001.dcm"  # 'Müller' in Latin-1
    os.rename(files[0], odd)
    (tmp_path / "notes.txt").write_bytes(b"not dicom")
    os.rename(tmp_path / "notes.txt", os.fsencode(tmp_path) + b"/\xe9t\xe9.txt")
    inv = build_inventory(tmp_path)
    assert len(inv.chosen) == 1 and len(inv.chosen[0].files) == 12
    csv = inv.files.to_csv(index=False)
    assert "M\\xfcller_0001.dcm" in csv and "\\xe9t\\xe9.txt" in csv
    inv.stacks.to_csv(index=False).encode("utf-8")


def test_a_dicomdir_given_as_input_reads_the_folder_it_indexes(tmp_path):
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    write_series(tmp_path / "cd" / "DICOM" / "ST1", 12)  # a CD layout: DICOMDIR at the root, images below
    index = Dataset()
    index.file_meta = FileMetaDataset()
    index.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    index.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    index.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    index.FileSetID = "CD"
    index.DirectoryRecordSequence = []
    index.save_as(tmp_path / "cd" / "DICOMDIR", enforce_file_format=True)
    inv = build_inventory(tmp_path / "cd" / "DICOMDIR")
    assert len(inv.chosen) == 1 and len(inv.chosen[0].files) == 12
    assert list(inv.files["file_code"]).count("DICOMDIR") == 1


def test_ctscore_run_scores_a_series_with_a_file_name_not_utf8(tmp_path):
    """Past the inventory, `ctscore run` stopped at the input fingerprint (UnicodeEncodeError) on such a name."""
    import pandas as pd

    from pipeline.batch import BatchOptions
    from pipeline.config import load_config
    from pipeline.run import run_pipeline
    from tests.scripts_loader import load_script

    src = tmp_path / "in"
    load_script("benchmark_batch").write_chest_series(src / "s00", 0)
    files = sorted((src / "s00").glob("*.dcm"))
    os.rename(files[0], os.fsencode(files[0].parent) + b"/M\xfcller_0001.dcm")
    cfg = load_config(overrides=["resample.spacing_mm=[3,3,3]"],
                      extra={"segmentation": {"method": "classical"},
                             "outputs": {"write_qc_png": False, "write_masks": False}})
    summary = run_pipeline(src, tmp_path / "out", cfg, batch=BatchOptions(progress=False))
    assert summary["n_ok"] == 1, (tmp_path / "out" / "failures.csv").read_text()
    assert pd.read_csv(tmp_path / "out" / "scans.csv")["status"].tolist() == ["ok"]


def test_the_chest_series_of_a_study_is_preferred_to_a_thinner_abdomen_series(tmp_path):
    """A chest-abdomen study with a 1 mm ABDOMEN series (lung bases only) and a 2 mm CHEST series: the abdomen one
    was chosen for being thinner. Now the chest (or unnamed) body part ranks first, and the reason says so."""
    study = generate_uid()
    chest = write_series(tmp_path / "chest", 12, dz=2.0, thickness=2.0, study_uid=study)
    write_series(tmp_path / "abd", 30, dz=1.0, thickness=1.0, study_uid=study,
                 per_slice=lambda k, p: p.update(body_part="ABDOMEN"))
    inv = build_inventory(tmp_path)
    (chosen,) = inv.chosen
    assert set(chosen.files) == set(chest)
    assert "preferred by chest" in inv.stacks.set_index("n_slices").loc[30]["reason"]
    # a stack that names no body part is not pushed back (many exports leave BodyPartExamined empty)
    unnamed = write_series(tmp_path / "unnamed", 20, dz=1.0, thickness=1.0, study_uid=study,
                           per_slice=lambda k, p: p.update(body_part=""))
    assert set(build_inventory(tmp_path).chosen[0].files) == set(unnamed)


def test_the_non_contrast_series_of_a_study_is_preferred_to_a_thinner_contrast_one(tmp_path):
    """A study with a 2 mm non-contrast and a 1 mm contrast-enhanced chest series: the contrast one was chosen for
    being thinner; the studies' scores and the HU bands are of non-contrast CT."""
    study = generate_uid()
    plain = write_series(tmp_path / "plain", 12, dz=2.0, thickness=2.0, study_uid=study)
    write_series(tmp_path / "cm", 24, dz=1.0, thickness=1.0, study_uid=study,
                 per_slice=lambda k, p: p.update(contrast="IOHEXOL"))
    inv = build_inventory(tmp_path)
    assert set(inv.chosen[0].files) == set(plain)
    assert "preferred by noncontrast" in inv.stacks.set_index("n_slices").loc[24]["reason"]
