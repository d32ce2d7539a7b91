"""Review of the DICOM-SEG export, the run report and the inventory (third pass).

Small generated series (32 x 32, 10-40 slices) built with tests/dicom_factory.py; the real-data checks skip
when ../shared/data is absent."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from tests.conftest import require
from tests.dicom_factory import read, strip_preamble, write_series


def _seg_of(files):
    """The DICOM-SEG (read back from bytes) of a box on each side of the loaded series, and the volume."""
    from pipeline.dicom_seg import build_seg
    from pipeline.loading import load_series

    vol = load_series(files)
    arr = np.zeros(sitk.GetArrayViewFromImage(vol.image).shape, np.uint8)
    z, y, x = arr.shape
    arr[z // 4:3 * z // 4, y // 3:2 * y // 3, x // 8:x // 2] = 1
    arr[z // 4:3 * z // 4, y // 3:2 * y // 3, x // 2:7 * x // 8] = 2
    lungs = sitk.GetImageFromArray(arr)
    lungs.CopyInformation(vol.image)
    lesions = sitk.GetImageFromArray((arr == 1).astype(np.uint8) * 3)
    lesions.CopyInformation(vol.image)
    seg = build_seg(vol.files, lungs, lesions, "test")
    buf = io.BytesIO()
    seg.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue())), vol


def _frame_references(seg: pydicom.Dataset) -> list[tuple[str | None, np.ndarray]]:
    """Per SEG frame: the SOPInstanceUID of the source slice it references (None: none) and its position."""
    out = []
    for frame in seg.PerFrameFunctionalGroupsSequence:
        deriv = frame.get("DerivationImageSequence") or []
        src = (deriv[0].get("SourceImageSequence") or []) if deriv else []
        ipp = np.array([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient])
        out.append((str(src[0].ReferencedSOPInstanceUID) if src else None, ipp))
    return out


def _assert_frames_on_their_slices(seg: pydicom.Dataset, files) -> None:
    """Every frame references a source slice and lies exactly at that slice's position."""
    sources = {}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        uid = ds.get("SOPInstanceUID") or ds.file_meta.MediaStorageSOPInstanceUID
        sources[str(uid)] = np.array([float(v) for v in ds.ImagePositionPatient])
    refs = _frame_references(seg)
    assert refs
    for uid, ipp in refs:
        assert uid in sources, "a SEG frame references no source slice"
        assert np.allclose(ipp, sources[uid], atol=1e-3), (ipp, sources[uid])


# --- DICOM-SEG ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep_meta", [True, False])
def test_seg_of_files_without_preamble(tmp_path, keep_meta):
    """Files without the 128-byte preamble (or without any File Meta Information) are read by the inventory and
    the loader and scored; --dicom-seg read them with a plain dcmread, which refuses them (InvalidDicomError), so
    every such series got DICOM_SEG_FAILED and no seg.dcm."""
    files = write_series(tmp_path, 10, shuffle=False)
    strip_preamble(files, keep_meta)
    seg, _ = _seg_of(files)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    _assert_frames_on_their_slices(seg, files)


def test_seg_of_export_with_uids_only_in_the_file_meta(tmp_path):
    """Some anonymised exports (totalsegmentator_example/example_ct_dicom) keep SOPClassUID and SOPInstanceUID only
    in the File Meta Information (MediaStorage...) and blank them, with the Study and Series UIDs, in the dataset.
    The loader scores such a series; the SEG raised KeyError '' (no SOP class) and, with every SOPInstanceUID empty,
    would have made up the same Study, Series and Frame of Reference UIDs for every such series."""
    files = write_series(tmp_path, 10, shuffle=False)
    metas = []
    for f in files:
        ds = read(f)
        metas.append(str(ds.file_meta.MediaStorageSOPInstanceUID))
        for kw in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            setattr(ds, kw, "")
        ds.save_as(f)
    seg, _ = _seg_of(files)
    refs = {uid for uid, _ in _frame_references(seg)}
    assert refs and refs <= set(metas)
    assert {r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
            for r in s.ReferencedInstanceSequence} == set(metas)
    _assert_frames_on_their_slices(seg, files)
    # the UIDs made up for the blank ones follow the instances: another such series gets others
    other = write_series(tmp_path / "other", 10, shuffle=False)
    for f in other:
        ds = read(f)
        for kw in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            setattr(ds, kw, "")
        ds.save_as(f)
    seg2, _ = _seg_of(other)
    assert seg2.StudyInstanceUID != seg.StudyInstanceUID
    assert seg2.ReferencedSeriesSequence[0].SeriesInstanceUID != seg.ReferencedSeriesSequence[0].SeriesInstanceUID


def test_seg_frames_reference_their_slices_when_positions_are_rounded(tmp_path):
    """ImagePositionPatient rounded to 3 decimals (as the COPDGene ct-64 export: 3.98734 mm slices written as
    -360.256, -356.269, ...): the loader stacks the slices as they are on a grid of the median step (3.987 mm), which
    drifts from the written positions by 0.03 mm over 80 slices. highdicom matches frames to source slices only
    within 0.001 mm, all or none, so not one SEG frame referenced its slice (no DerivationImageSequence source):
    viewers that overlay SEG frames on the referenced CT slices showed nothing."""
    zs = [round(-360.256 + k * 3.98734, 3) for k in range(40)]
    files = write_series(tmp_path, positions=zs, thickness=3.98734)
    seg, vol = _seg_of(files)
    assert not vol.flags  # the loader did not resample: frame k is slice k
    _assert_frames_on_their_slices(seg, files)


def test_seg_of_resampled_series_is_not_snapped_to_the_slices(tmp_path):
    """A series the loader resampled (a 3 mm step among 2 mm ones) keeps the frames where the masks lie (they are
    not slices of the source), as before."""
    zs = [0, 2, 4, 6, 8, 11, 14, 17, 20, 22]
    files = write_series(tmp_path, positions=zs)
    seg, vol = _seg_of(files)
    assert "NON_UNIFORM_SPACING_RESAMPLED" in vol.flags
    z = sorted({round(float(ipp[2]), 3) for _, ipp in _frame_references(seg)})
    assert np.allclose(np.diff(z), 2.0)


def test_seg_of_real_series_with_rounded_positions(shared_data):
    """cip_copdgene/ct-64Dicom: every SEG frame references its slice."""
    from pipeline.inventory import build_inventory

    (stack,) = build_inventory(require(shared_data / "cip_copdgene" / "ct-64Dicom")).chosen
    seg, _ = _seg_of(stack.files)
    _assert_frames_on_their_slices(seg, stack.files)


def test_seg_of_real_export_with_uids_only_in_the_file_meta(shared_data):
    """totalsegmentator_example/example_ct_dicom: blank SOP, Study and Series UIDs in the dataset."""
    from pipeline.inventory import build_inventory

    (stack,) = build_inventory(require(shared_data / "totalsegmentator_example" / "example_ct_dicom")).chosen
    seg, _ = _seg_of(stack.files)
    _assert_frames_on_their_slices(seg, stack.files)
