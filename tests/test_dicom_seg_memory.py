"""DICOM-SEG writing without copies of the masks (an audit of ``--dicom-seg`` on a 496x512x512 CT: build_seg added
about 17 bytes a voxel, three Volume copies of the masks, a boolean stack, its uint8 cast, a bytes copy only to hash
it, and highdicom's 64-bit sum of the segments; an out-of-memory kill for a 1024x1024 series on a 16 GB laptop), and
the SEG the same as before: pixels, frames and UIDs."""

from __future__ import annotations

import gc
import hashlib
import tracemalloc

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pipeline import dicom_seg
from pipeline.dicom_seg import build_seg
from pipeline.loading import load_series
from tests.conftest import SAMPLE
from tests.dicom_factory import write_series

# written by the code before the change (pipeline/dicom_seg.py with three Volume copies and the boolean stack):
# (SOPInstanceUID, sha256 of PixelData, NumberOfFrames, SegmentsOverlap, the last frame's ImagePositionPatient,
# frames with a DerivationImageSequence) of _sample_case(resampled); the UID of the sample of phantom version 2 (its
# source UIDs changed with the drawing)
_UID, _PIXELS = "2.25.354467953653945592941897339001555844", \
    "77a0cbe0facdfd58b5a777dc36064bff42cd3ea9fcf895765f12ab549464f970"
BEFORE = {
    False: (_UID, _PIXELS, 14, "YES", ["-174.9000", "-174.9000", "-186.2500"], 14),
    True: (_UID, _PIXELS, 14, "YES", ["-174.9", "-174.9", "-184.5"], 14),
}


def _sample_case(resampled: bool):
    """Six slices of the sample series, both lungs and all lesion classes, lesions inside a lung (overlapping
    segments); ``resampled``: the masks on a grid of other slice spacing (frames where the masks lie, a Volume)."""
    files = sorted((str(f) for f in SAMPLE.iterdir() if f.suffix != ".json"),
                   key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))[:6]
    ref = sitk.ReadImage(files)
    if resampled:
        ref.SetSpacing((*ref.GetSpacing()[:2], ref.GetSpacing()[2] * 1.7))
    shape = sitk.GetArrayViewFromImage(ref).shape
    lungs, lesions = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    lungs[1:5, 30:120, 20:75], lungs[0:4, 30:130, 85:150] = 1, 2
    lesions[1:4, 50:100, 30:140] = np.random.default_rng(1).integers(0, 4, size=(3, 50, 110), dtype=np.uint8)
    images = []
    for a in (lungs, lesions):
        images.append(sitk.GetImageFromArray(a))
        images[-1].CopyInformation(ref)
    return files, *images


@pytest.mark.parametrize("resampled", [False, True])
def test_seg_is_the_one_written_before(resampled):
    files, lungs, lesions = _sample_case(resampled)
    seg = build_seg(files, lungs, lesions, "m")
    assert type(seg) is hd.seg.Segmentation
    frames = seg.PerFrameFunctionalGroupsSequence
    assert (seg.SOPInstanceUID, hashlib.sha256(seg.PixelData).hexdigest(), int(seg.NumberOfFrames),
            seg.SegmentsOverlap, [str(v) for v in frames[-1].PlanePositionSequence[0].ImagePositionPatient],
            sum("DerivationImageSequence" in f for f in frames)) == BEFORE[resampled]
    # the series UID follows the digest of the boolean stack of the segments, as it did
    lung, les = sitk.GetArrayFromImage(lungs), sitk.GetArrayFromImage(lesions)
    stack = np.stack([lung == 1, lung == 2, (les == 1) | (les == 2), les == 3], axis=-1)
    content = hashlib.sha256(stack.tobytes()).hexdigest()
    assert seg.SeriesInstanceUID == dicom_seg._uid("seg-series", pydicom.dcmread(files[0]).SeriesInstanceUID, "m",
                                                   content)


@pytest.mark.parametrize("overlap", [True, False])
def test_overlap_checked_by_slice_as_highdicom_does(monkeypatch, overlap):
    """The slice-wise check gives the SEG that highdicom's own check gives (SegmentsOverlap included)."""
    files, lungs, lesions = _sample_case(False)
    if not overlap:  # no lesion inside a lung: no two segments overlap
        lesions = sitk.Mask(lesions, sitk.Equal(lungs, 0))
    ours = build_seg(files, lungs, lesions, "m")
    monkeypatch.setattr(dicom_seg, "_segmentation_class", lambda: hd.seg.Segmentation)
    theirs = build_seg(files, lungs, lesions, "m")
    assert ours.SegmentsOverlap == theirs.SegmentsOverlap == ("YES" if overlap else "NO")
    assert ours.PixelData == theirs.PixelData
    assert ours.PerFrameFunctionalGroupsSequence == theirs.PerFrameFunctionalGroupsSequence
    assert ours.SOPInstanceUID == theirs.SOPInstanceUID


def test_seg_peak_memory_is_the_segments_stack(tmp_path):
    """Peak of build_seg about the 4 bytes a voxel of its segments stack (one byte a segment, as highdicom takes
    them): it was about 20 (the audit's +2.8 GiB at 130 M voxels)."""
    vol = load_series([str(f) for f in write_series(tmp_path / "ct", 48, size=256, dz=1.0)])
    shape = sitk.GetArrayViewFromImage(vol.image).shape
    lungs, lesions = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    lungs[4:-4, 50:200, 30:125], lungs[4:-4, 50:200, 135:230] = 1, 2
    lesions[10:30, 75:150, 50:100], lesions[15:25, 75:150, 150:200], lesions[12:18, 100:125, 50:75] = 2, 3, 1
    images = []
    for a in (lungs, lesions):
        images.append(sitk.GetImageFromArray(a))
        images[-1].CopyInformation(vol.image)
    del lungs, lesions
    build_seg(vol.files[:2], *(sitk.Extract(i, (*i.GetSize()[:2], 2), (0, 0, 0)) for i in images), "m")  # warm-up
    gc.collect()
    tracemalloc.start()
    try:
        seg = build_seg(vol.files, *images, "m")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    voxels = int(np.prod(shape))
    assert seg.SegmentsOverlap == "YES" and int(seg.NumberOfFrames) > 100
    assert peak / voxels < 8, f"build_seg peaked at {peak / voxels:.1f} bytes a voxel"
