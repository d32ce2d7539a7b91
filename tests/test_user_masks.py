"""Edited masks (``ctscore run --masks DIR``, ``segmentation.masks_dir``): a radiologist corrects ctscore's
lungs.nii.gz / lesions.nii.gz in a viewer and the series is scored from them; unedited masks give the same scores; a
mask of another grid or with foreign values fails the series by name; resume scores a series again when its masks
change."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from pipeline.errors import SeriesError
from tests.conftest import SAMPLE

# the unchanged sample is segmented once per test process (tests/conftest.py: classical_memo)
pytestmark = pytest.mark.usefixtures("classical_memo")


def _cfg(masks_dir):
    from pipeline.config import load_config

    return load_config(extra={"segmentation": {"method": "classical", "masks_dir": str(masks_dir)},
                              "outputs": {"write_dicom_seg": True}})


def test_edited_masks_are_scored_and_unedited_ones_score_the_same(sample_run, tmp_path):
    from pipeline.run import run_pipeline

    out = tmp_path / "out"
    shutil.copytree(sample_run, out)
    scan_id = pd.read_csv(out / "scans.csv")["scan_id"][0]
    edited = tmp_path / "edited" / scan_id
    edited.mkdir(parents=True)
    for name in ("lungs.nii.gz", "lesions.nii.gz"):
        shutil.copy(out / scan_id / name, edited / name)
    before = pd.read_csv(sample_run / "scans.csv").iloc[0]

    # unedited: the same scores, without running the segmenter (the airway is grown for the carina)
    summary = run_pipeline(SAMPLE, out, _cfg(tmp_path / "edited"))
    assert summary["n_run"] == 1
    row = summary["scans"].iloc[0]
    for column in ("lung_volume_ml_right", "lung_volume_ml_left", "lesion_volume_ml", "faint_ggo_volume_ml",
                   "consolidation_volume_ml", "six_zone_total", "zhang900_total"):
        assert row[column] == before[column], column
    result = json.loads((out / scan_id / "result.json").read_text())
    assert "MASKS_FROM_USER:lungs+lesions" in result["qc_flags"]
    assert result["user_masks"] == {"lungs": "lungs.nii.gz", "lesions": "lesions.nii.gz"}
    assert result["landmarks"]["carina"]["method"] == "detected"
    import pydicom

    seg = pydicom.dcmread(out / scan_id / "seg.dcm")  # a reader's masks are no longer the algorithm's alone
    assert {str(x.SegmentAlgorithmType) for x in seg.SegmentSequence} == {"SEMIAUTOMATIC"}
    assert run_pipeline(SAMPLE, out, _cfg(tmp_path / "edited"))["n_run"] == 0  # unchanged: kept

    # the reader takes every lesion out of the right lung: that lung's lesion volume is 0, the left lung's as before
    lungs = sitk.ReadImage(str(edited / "lungs.nii.gz"))
    lesions = sitk.ReadImage(str(edited / "lesions.nii.gz"))
    arr = sitk.GetArrayFromImage(lesions)
    arr[sitk.GetArrayFromImage(lungs) == 1] = 0
    arr[:3, :10, :10] = 1  # painted outside the lungs, in a corner of the field of view: not counted, said
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(lesions)
    sitk.WriteImage(img, str(edited / "lesions.nii.gz"))
    again = run_pipeline(SAMPLE, out, _cfg(tmp_path / "edited"))
    assert again["n_run"] == 1  # the edited file is an input of the series
    assert any("mL of the edited lesions mask lie outside the lungs" in w for w in again["warnings"])
    voxel_ml = float(np.prod(lesions.GetSpacing())) / 1000.0
    assert json.loads((out / scan_id / "result.json").read_text())["hu_check"]["user_lesion_outside_lung_ml"] == \
        round(300 * voxel_ml, 2)
    zones = pd.read_csv(out / "zones.csv")
    right = zones[(zones["system"] == "six_zone") & (zones["lung"] == "right")]
    assert (right["lesion_ml"] == 0).all() and (right["unit_score"] == 0).all()
    left_before = pd.read_csv(sample_run / "zones.csv")
    left_before = left_before[(left_before["system"] == "six_zone") & (left_before["lung"] == "left")]
    left = zones[(zones["system"] == "six_zone") & (zones["lung"] == "left")]
    assert left["lesion_ml"].tolist() == left_before["lesion_ml"].tolist()
    # the masks written are the edited ones
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(out / scan_id / "lesions.nii.gz")))
    assert not written[sitk.GetArrayFromImage(lungs) == 1].any()
    # the same run without --masks scores the segmenter's masks again
    from pipeline.config import load_config

    plain = load_config(extra={"segmentation": {"method": "classical"}, "outputs": {"write_dicom_seg": True}})
    back = run_pipeline(SAMPLE, out, plain)
    assert back["scans"].iloc[0]["lesion_volume_ml"] == before["lesion_volume_ml"]
    assert any("scored again WITHOUT the edited masks" in w for w in back["warnings"])


def test_masks_folder_by_series_uid_and_only_one_mask(tmp_path, sample_truth):
    from pipeline.run import find_user_masks

    cfg = _cfg(tmp_path)
    (tmp_path / "1.2.3").mkdir()
    (tmp_path / "1.2.3" / "lesions.nii.gz").write_bytes(b"")
    assert find_user_masks(cfg, "scan-aaaa", "1.2.3") == {"lesions": tmp_path / "1.2.3" / "lesions.nii.gz"}
    (tmp_path / "scan-aaaa").mkdir()
    (tmp_path / "scan-aaaa" / "lungs.nrrd").write_bytes(b"")
    assert find_user_masks(cfg, "scan-aaaa", "1.2.3") == {"lungs": tmp_path / "scan-aaaa" / "lungs.nrrd"}
    assert find_user_masks(cfg, "scan-bbbb", "") == {}
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "lungs.nii.gz").write_bytes(b"")
    assert find_user_masks(cfg, "scan-bbbb", f"../{outside.name}") == {}  # a crafted UID names no folder outside


@pytest.mark.parametrize("problem", ["values", "grid", "unreadable", "swapped", "one_label", "vector"])
def test_a_mask_that_cannot_be_used_fails_the_series_by_name(sample_classical, tmp_path, problem):
    from pipeline.resample import to_lps
    from pipeline.run import analyse_volume

    image, cfg, seg = sample_classical
    ref = to_lps(image)
    path = tmp_path / "lungs.nii.gz"
    if problem == "unreadable":
        path.write_bytes(b"not an image")
        match = "lungs mask .* cannot be read"
    elif problem in ("swapped", "one_label", "vector"):
        arr = np.zeros(ref.GetSize()[::-1], np.uint8)
        nx = arr.shape[2]
        arr[10:60, 60:180, nx // 8:nx // 2 - 10] = 2 if problem == "swapped" else 1  # the image's left: the patient's right
        arr[10:60, 60:180, nx // 2 + 10:7 * nx // 8] = 1 if problem != "vector" else 2
        if problem == "vector":  # a segmentation of two layers, as a Slicer .seg.nrrd with overlapping segments
            img = sitk.Compose(sitk.GetImageFromArray(arr), sitk.GetImageFromArray(arr))
            match = "cannot be read: a 3-D image of 2 values per voxel"
        else:
            img = sitk.GetImageFromArray(arr)
            match = ("labels swapped, or the mask mirrored" if problem == "swapped" else
                     "labels both lungs 1: label the patient's right lung 1 and the left 2")
        img.CopyInformation(ref)
        sitk.WriteImage(img, str(path))
    else:
        arr = np.zeros(ref.GetSize()[::-1], np.uint8)
        arr[10:20, 40:60, 40:60] = 7 if problem == "values" else 1
        img = sitk.GetImageFromArray(arr)
        img.CopyInformation(ref)
        if problem == "grid":  # a mask resampled to 2 mm voxels
            img = sitk.Resample(img, [int(n / 2) for n in ref.GetSize()], sitk.Transform(), sitk.sitkNearestNeighbor,
                                ref.GetOrigin(), [2 * s for s in ref.GetSpacing()], ref.GetDirection())
        sitk.WriteImage(img, str(path))
        match = ("holds the values 7; a lungs mask holds 0, 1 \\(right lung\\), 2 \\(left lung\\)" if problem == "values"
                 else "is not on this series. grid .*a mask of another series, resampled, or cropped")
    with pytest.raises(SeriesError, match=match) as err:
        analyse_volume(image, cfg, seg, user_masks={"lungs": path})
    assert err.value.code == "MASKS_INVALID" and str(path) in str(err.value)
    if problem == "grid":  # the CT as reference geometry is the wrong grid where ctscore resampled it (an audit)
        assert "lungs.nii.gz as reference geometry" in str(err.value)


def test_masks_that_would_not_be_read_are_warned_about_and_out_is_refused(tmp_path, sample_truth):
    from types import SimpleNamespace

    from pipeline.errors import CTScoreError
    from pipeline.run import masks_dir_warnings, run_pipeline

    tasks = [SimpleNamespace(scan_id="scan-aaaa", series_uid="1.2.3")]
    (tmp_path / "scan-aaab").mkdir()  # a mistyped scan_id
    (tmp_path / "scan-aaaa").mkdir()
    (tmp_path / "scan-aaaa" / "lungs.seg.nrrd").write_bytes(b"")
    (tmp_path / "scan-aaaa" / "Lesions.nii.gz").write_bytes(b"")
    (tmp_path / "scan-aaaa" / "qc.png").write_bytes(b"")
    (tmp_path / "1.2.3").mkdir()
    said = masks_dir_warnings(tmp_path, tasks)
    assert "1 folder(s) name no series of this run (scan-aaab)" in said[0]
    assert "2 image file(s) are not read (scan-aaaa/Lesions.nii.gz, scan-aaaa/lungs.seg.nrrd)" in said[1]
    assert "a folder under their scan_id and one under their SeriesInstanceUID (scan-aaaa)" in said[2]
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(CTScoreError, match="--masks is the output folder") as err:
        run_pipeline(SAMPLE, out, {"segmentation": {"method": "classical", "masks_dir": str(out)}})
    assert err.value.code == "OUTPUT_IS_INPUT" and not list(out.iterdir())


def test_the_masks_folder_is_no_setting_of_the_configuration(tmp_path, caplog):
    from pipeline.config import ConfigError, config_hash, load_config, warn_unused_settings

    plain = load_config()
    given = load_config(extra={"segmentation": {"masks_dir": str(tmp_path)}})
    assert given["segmentation"]["masks_dir"] == str(tmp_path.resolve())
    assert config_hash(given) == config_hash(plain)
    warn_unused_settings(given)  # the network reads it too: no "classical-only setting" warning
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    with pytest.raises(ConfigError, match="segmentation.masks_dir: no such folder"):
        load_config(extra={"segmentation": {"masks_dir": str(tmp_path / "nope")}})
