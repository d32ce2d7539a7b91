"""DICOM-SEG for PACS and viewers (an imaging-informatics audit): frames of a series with a slice gap reference the
source slices they lie on (highdicom links all frames or none: such a SEG referenced none), every segment has a
recommended display colour, and the classical baseline is not called artificial intelligence."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.config import load_config
from pipeline.dicom_seg import SEGMENTS, build_seg
from pipeline.loading import load_series
from tests.dicom_factory import write_series


def _masks(vol):
    arr = np.zeros(sitk.GetArrayViewFromImage(vol.image).shape, np.uint8)
    arr[:, 8:14, 6:12], arr[:, 8:14, 20:26] = 1, 2
    les = np.zeros_like(arr)
    les[:, 9:11, 7:9] = 2
    images = []
    for a in (arr, les):
        images.append(sitk.GetImageFromArray(a))
        images[-1].CopyInformation(vol.image)
    return images


def _referenced(seg) -> list[str | None]:
    """The source SOP Instance UID each frame references (None: none)."""
    out = []
    for item in seg.PerFrameFunctionalGroupsSequence:
        der = item.get("DerivationImageSequence")
        out.append(str(der[0].SourceImageSequence[0].ReferencedSOPInstanceUID) if der else None)
    return out


def test_frames_of_a_series_with_a_gap_reference_their_slices(tmp_path):
    # 10 slices 2.5 mm apart with one missing (a gap of 5 mm): the loader fills one slice in (allow_gaps)
    z = [-100.0 + 2.5 * k for k in range(11) if k != 6]
    files = write_series(tmp_path / "ct", len(z), positions=z)
    vol = load_series([str(f) for f in files], load_config(overrides=["loading.allow_gaps=true"]))
    assert sitk.GetArrayViewFromImage(vol.image).shape[0] == 11
    seg = build_seg(vol.files, *_masks(vol), "test")
    refs = _referenced(seg)
    z_of = {str(s.SOPInstanceUID): float(s.ImagePositionPatient[2]) for s in map(_read, vol.files)}
    frame_z = [float(i.PlanePositionSequence[0].ImagePositionPatient[2]) for i in seg.PerFrameFunctionalGroupsSequence]
    unlinked = [fz for fz, r in zip(frame_z, refs) if r is None]
    assert unlinked and all(fz == pytest.approx(-85.0) for fz in unlinked)  # only the filled-in slice
    for fz, r in zip(frame_z, refs):
        if r is not None:
            assert z_of[r] == pytest.approx(fz, abs=1e-4)
    back = hd.seg.Segmentation.from_dataset(seg, copy=True)
    assert back.get_volume(combine_segments=False).array[..., 0].sum() > 0  # still reads back as a volume


def _read(path):
    import pydicom

    return pydicom.dcmread(path, stop_before_pixels=True)


def test_a_regular_series_still_references_every_frame(tmp_path):
    files = write_series(tmp_path / "ct", 8, dz=2.5)
    vol = load_series([str(f) for f in files])
    seg = build_seg(vol.files, *_masks(vol), "classical-0123456789abcdef")
    assert None not in _referenced(seg)


@pytest.mark.parametrize("model_id, family", [("classical-0123456789abcdef", "Image Processing"),
                                               ("0123456789abcdef", "Artificial Intelligence")])
def test_display_colours_and_algorithm_family(tmp_path, model_id, family):
    files = write_series(tmp_path / "ct", 8, dz=2.5)
    vol = load_series([str(f) for f in files])
    seg = build_seg(vol.files, *_masks(vol), model_id)
    colours = [tuple(item.RecommendedDisplayCIELabValue) for item in seg.SegmentSequence]
    assert len(colours) == len(SEGMENTS) == len(set(colours))
    for value, (*_, colour) in zip(colours, SEGMENTS):  # the intended sRGB colour, back from the DICOM CIELab value
        rgb = tuple(int(colour[j:j + 2], 16) for j in (1, 3, 5))
        assert hd.color.CIELabColor.from_dicom_value(value).to_rgb() == rgb
    for item in seg.SegmentSequence:
        assert item.SegmentationAlgorithmIdentificationSequence[0].AlgorithmFamilyCodeSequence[0].CodeMeaning == family


def test_the_same_masks_give_the_same_header(tmp_path):
    """The SOP Instance UID follows the content, but highdicom drew a new DimensionOrganizationUID each time: two
    runs wrote one UID with two headers (a reproducibility audit)."""
    files = write_series(tmp_path / "ct", 8, dz=2.5)
    vol = load_series([str(f) for f in files])
    a, b = (build_seg(vol.files, *_masks(vol), "m") for _ in range(2))
    assert a.SOPInstanceUID == b.SOPInstanceUID
    uids = {item.DimensionOrganizationUID for seg in (a, b)
            for item in [*seg.DimensionOrganizationSequence, *seg.DimensionIndexSequence]}
    assert len(uids) == 1
