"""seg.dcm after an audit of its round trip (2026-12-07): a frame references only a source slice that starts where
it does (a tilted stack's sheared frames referenced the slice in their plane, up to 60 mm away, where OHIF drew
them), and a reader's edit makes another object (the same voxels resubmitted through --masks had the same UIDs)."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pipeline.dicom_seg import LINK_TOLERANCE_MM, build_seg
from pipeline.loading import load_series
from tests.dicom_factory import write_series
from tests.test_dicom_seg import sample_box_masks


def _masks(image: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    arr = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    arr[:, 8:24, 4:14] = 1
    arr[:, 8:24, 18:28] = 2
    lungs = sitk.GetImageFromArray(arr)
    lungs.CopyInformation(image)
    lesions = sitk.GetImageFromArray((arr == 1).astype(np.uint8) * 3)
    lesions.CopyInformation(image)
    return lungs, lesions


def _references(seg: pydicom.Dataset, files) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame position, referenced slice's position) of every source reference of the SEG."""
    at = {}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        at[str(ds.SOPInstanceUID)] = np.asarray(ds.ImagePositionPatient, float)
    out = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        ipp = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        for derivation in item.get("DerivationImageSequence", []):
            for source in derivation.SourceImageSequence:
                out.append((ipp, at[str(source.ReferencedSOPInstanceUID)]))
    return out


@pytest.mark.parametrize("tilt_deg", [12.0, 0.0])
def test_a_frame_references_only_a_slice_it_starts_on(tmp_path, tilt_deg):
    angle = np.radians(tilt_deg)
    iop = (1.0, 0.0, 0.0, 0.0, np.cos(angle), -np.sin(angle))
    files = write_series(tmp_path, 16, iop=iop,
                         per_slice=lambda k, p: p.update(ipp=(-16.0, -16.0, -100.0 + 2 * k)))
    vol = load_series(files)
    assert ("GANTRY_TILT_CORRECTED" in vol.flags) == (tilt_deg > 0)
    lungs, lesions = _masks(vol.image)
    seg = build_seg(vol.files, lungs, lesions, "m")
    refs = _references(seg, vol.files)
    for ipp, source in refs:  # before: 12 degrees referenced slices 6 mm from the frame
        assert float(np.abs(ipp - source).max()) <= LINK_TOLERANCE_MM
    if tilt_deg == 0:  # an untilted series keeps a reference in every frame
        assert len(refs) == len(seg.PerFrameFunctionalGroupsSequence) > 0


def test_a_readers_edit_makes_another_object():
    files, lungs, lesions = sample_box_masks()
    auto, edited = build_seg(files, lungs, lesions, "m"), build_seg(files, lungs, lesions, "m", edited=("lungs",))
    assert auto.SOPInstanceUID != edited.SOPInstanceUID and auto.SeriesInstanceUID != edited.SeriesInstanceUID
    again = build_seg(files, lungs, lesions, "m", edited=("lungs",))
    assert again.SOPInstanceUID == edited.SOPInstanceUID  # the same edit, the same object
