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


@pytest.mark.parametrize("header_value", ["6.5", "-2.5"])
def test_seg_spacing_is_the_slice_step(tmp_path, header_value):
    files = write_series(tmp_path / "ct", 8, dz=2.5)
    for f in files:
        edit_file(f, SpacingBetweenSlices=header_value)
    vol = load_series([str(f) for f in files])
    arr = np.zeros(sitk.GetArrayViewFromImage(vol.image).shape, np.uint8)
    arr[2:6, 8:14, 6:12], arr[2:6, 8:14, 20:26] = 1, 2
    lungs = sitk.GetImageFromArray(arr)
    lungs.CopyInformation(vol.image)
    lesions = sitk.GetImageFromArray(np.zeros_like(arr))
    lesions.CopyInformation(vol.image)
    seg = build_seg(vol.files, lungs, lesions, "test")
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == pytest.approx(2.5)
    back = hd.seg.Segmentation.from_dataset(seg, copy=True).get_volume(combine_segments=False)
    assert back.spacing[0] == pytest.approx(2.5)  # empty frames are left out: the 4 slices with masks
    assert int(back.array[..., 0].sum()) == int((arr == 1).sum())


def test_a_one_word_patient_name_is_not_printed(tmp_path, recwarn, capsys):
    """highdicom warns about a PatientName of one component and quotes it ('The string "MIDRC-RICORD-1A-419639-001012"
    is unlikely to represent ...'): with --dicom-seg the patient's name reached the console and cluster job logs."""
    files = write_series(tmp_path / "ct", 6, dz=2.5)
    for f in files:
        edit_file(f, PatientName="SECRETNAME")
    vol = load_series([str(f) for f in files])
    arr = np.zeros(sitk.GetArrayViewFromImage(vol.image).shape, np.uint8)
    arr[1:5, 8:14, 6:12] = 1
    lungs = sitk.GetImageFromArray(arr)
    lungs.CopyInformation(vol.image)
    lesions = sitk.GetImageFromArray(np.zeros_like(arr))
    lesions.CopyInformation(vol.image)
    seg = build_seg(vol.files, lungs, lesions, "test")
    assert str(seg.PatientName) == "SECRETNAME"  # the SEG's patient module is the source's, as documented
    assert not [w for w in recwarn if "SECRETNAME" in str(w.message)]
    out = capsys.readouterr()
    assert "SECRETNAME" not in out.out + out.err
