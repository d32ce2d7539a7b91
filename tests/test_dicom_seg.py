"""DICOM-SEG output: reads back, references the source instances, and is not mirrored."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tests.conftest import SAMPLE


def _seg_centroids_lps(seg: pydicom.Dataset) -> dict[int, np.ndarray]:
    """Per-segment centroid in patient LPS mm, from the SEG's own per-frame geometry."""
    import highdicom as hd

    seg = hd.seg.Segmentation.from_dataset(seg)
    shared = seg.SharedFunctionalGroupsSequence[0]
    iop = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    dy, dx = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    row_dir, col_dir = iop[:3], iop[3:]
    pixels = seg.pixel_array  # (frames, rows, cols)
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, int] = {}
    for i, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        ipp = np.array(frame.PlanePositionSequence[0].ImagePositionPatient, float)
        r, c = np.nonzero(pixels[i])
        if r.size == 0:
            continue
        pts = ipp + np.outer(c * dx, row_dir) + np.outer(r * dy, col_dir)
        sums[number] = sums.get(number, 0) + pts.sum(axis=0)
        counts[number] = counts.get(number, 0) + r.size
    return {k: sums[k] / counts[k] for k in sums}


def _nifti_centroid_lps(path, value: int) -> np.ndarray:
    img = nib.load(str(path))
    idx = np.argwhere(np.asarray(img.dataobj) == value)
    ras = nib.affines.apply_affine(img.affine, idx).mean(axis=0)
    return ras * np.array([-1.0, -1.0, 1.0])  # RAS -> LPS


def test_phantom_seg_reads_back_and_is_not_mirrored(sample_run):
    scan_dir = next(p for p in sample_run.iterdir() if p.name.startswith("scan-"))
    seg = pydicom.dcmread(scan_dir / "seg.dcm")
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels[:2] == ["Right lung", "Left lung"]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "3341006"
    algo = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "ctscore"
    # references the source SOP instances of the input series
    source_uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
                   for f in SAMPLE.iterdir() if f.suffix != ".json"}
    refs = {r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert refs and refs <= source_uids
    # centroids from the SEG's own geometry agree with the NIfTI masks within one voxel
    centroids = _seg_centroids_lps(seg)
    result = json.loads((scan_dir / "result.json").read_text())
    voxel = max(result["grid"]["spacing_xyz"])
    for number, value in ((1, 1), (2, 2)):
        nii = _nifti_centroid_lps(scan_dir / "lungs.nii.gz", value)
        assert np.linalg.norm(centroids[number] - nii) <= voxel, (number, centroids[number], nii)
    # right lung is on the patient's right: smaller LPS x than the left lung
    assert centroids[1][0] < centroids[2][0]
    # every frame lies in a source slice's plane and references that slice (viewers overlay frame on slice)
    src = pydicom.dcmread(next(f for f in sorted(SAMPLE.iterdir()) if f.suffix != ".json"), stop_before_pixels=True)
    iop = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    assert [float(v) for v in iop] == pytest.approx([float(v) for v in src.ImageOrientationPatient])
    assert (seg.Rows, seg.Columns) == (src.Rows, src.Columns)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        (deriv,) = frame.DerivationImageSequence
        assert deriv.SourceImageSequence[0].ReferencedSOPInstanceUID in source_uids
    # coded as DICOM CID 7150 / 6102 name them
    ggo = seg.SegmentSequence[2]
    assert (ggo.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator,
            ggo.SegmentedPropertyTypeCodeSequence[0].CodeValue) == ("DCM", "112120")
    assert ggo.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning == "Morphologically Abnormal Structure"
    assert seg.SegmentSequence[0].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"


def sample_box_masks():
    """(files, lungs, lesions) of the sample's first six slices: a box of right lung, no lesion (SimpleITK images)."""
    import SimpleITK as sitk

    files = sorted((str(f) for f in SAMPLE.iterdir() if f.suffix != ".json"),
                   key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))[:6]
    img = sitk.ReadImage(files)
    lungs = sitk.Image(img.GetSize(), sitk.sitkUInt8)
    lungs.CopyInformation(img)
    lungs[40:60, 50:90, 1:5] = 1
    return files, lungs, sitk.Image(lungs) * 0


def test_seg_uids_follow_the_content():
    """The same masks of a series give the same SEG UIDs (a rerun replaces its SEG); other masks give new ones."""
    from pipeline.dicom_seg import build_seg

    files, lungs, lesions = sample_box_masks()
    a, b = build_seg(files, lungs, lesions * 0, "m"), build_seg(files, lungs, lesions * 0, "m")
    lesions[45:50, 60:70, 2:4] = 2
    c = build_seg(files, lungs, lesions, "m")
    assert a.SOPInstanceUID == b.SOPInstanceUID and a.SeriesInstanceUID == b.SeriesInstanceUID
    assert c.SOPInstanceUID != a.SOPInstanceUID and c.SeriesInstanceUID != a.SeriesInstanceUID


def test_seg_of_real_scan(shared_data, tmp_path):
    import SimpleITK as sitk

    from pipeline.dicom_seg import build_seg
    from pipeline.discovery import discover, select_series
    from pipeline.loading import load_series

    cand = select_series(discover(shared_data / "chest" / "normal001"))[0]
    vol = load_series(cand.files)
    arr = np.zeros(sitk.GetArrayViewFromImage(vol.image).shape, np.uint8)
    arr[60:90, 200:300, 100:200] = 1  # a box at known voxels: right half of the image = patient left
    arr[60:90, 200:300, 320:420] = 2
    lungs = sitk.GetImageFromArray(arr)
    lungs.CopyInformation(vol.image)
    les = sitk.GetImageFromArray(np.zeros_like(arr))
    les.CopyInformation(vol.image)
    seg = build_seg(vol.files, lungs, les, "test")
    p = tmp_path / "seg.dcm"
    seg.save_as(p)
    back = pydicom.dcmread(p)
    c = _seg_centroids_lps(back)
    expect1 = np.array(vol.image.TransformContinuousIndexToPhysicalPoint((149.5, 249.5, 74.5)))
    assert np.linalg.norm(c[1] - expect1) < 1.0
    assert c[1][0] < c[2][0]
