"""DICOM-SEG: SpacingBetweenSlices is the masks' slice step, not a source header's value (an independent audit of
the outputs on real data: ge_mister_ct's SEG said 6.5 mm for 2.5 mm slices, copied from its headers by highdicom,
and highdicom could not read it back as a volume; itkelastix00's said -2.0)."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.dicom_seg import build_seg
from pipeline.loading import load_series
from tests.dicom_factory import edit_file, write_series


def _seg_of(tmp_path, n_slices: int, **header):
    """The DICOM-SEG of a generated series whose files carry ``header``: lungs in two boxes of slices 1-5, no lesion.
    Returns (seg, the lung label array)."""
    files = write_series(tmp_path / "ct", n_slices, dz=2.5)
    for f in files:
        edit_file(f, **header)
    vol = load_series([str(f) for f in files])
    arr = np.zeros(sitk.GetArrayViewFromImage(vol.image).shape, np.uint8)
    arr[2:6, 8:14, 6:12], arr[2:6, 8:14, 20:26] = 1, 2
    images = []
    for a in (arr, np.zeros_like(arr)):
        images.append(sitk.GetImageFromArray(a))
        images[-1].CopyInformation(vol.image)
    return build_seg(vol.files, *images, "test"), arr


@pytest.mark.parametrize("header_value", ["6.5", "-2.5"])
def test_seg_spacing_is_the_slice_step(tmp_path, header_value):
    seg, arr = _seg_of(tmp_path, 8, SpacingBetweenSlices=header_value)
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == pytest.approx(2.5)
    back = hd.seg.Segmentation.from_dataset(seg, copy=True).get_volume(combine_segments=False)
    assert back.spacing[0] == pytest.approx(2.5)  # empty frames are left out: the 4 slices with masks
    assert int(back.array[..., 0].sum()) == int((arr == 1).sum())


def test_a_one_word_patient_name_is_not_printed(tmp_path, recwarn, capsys):
    """highdicom warns about a PatientName of one component and quotes it ('The string "MIDRC-RICORD-1A-419639-001012"
    is unlikely to represent ...'): with --dicom-seg the patient's name reached the console and cluster job logs."""
    seg, _ = _seg_of(tmp_path, 6, PatientName="SECRETNAME")
    assert str(seg.PatientName) == "SECRETNAME"  # the SEG's patient module is the source's, as documented
    assert not [w for w in recwarn if "SECRETNAME" in str(w.message)]
    out = capsys.readouterr()
    assert "SECRETNAME" not in out.out + out.err
