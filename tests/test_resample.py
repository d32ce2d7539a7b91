"""``pipeline.resample.labels_to_grid`` resamples only around the labels: same result as a full resample."""

from __future__ import annotations

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

from pipeline.resample import labels_to_grid  # noqa: E402


def full_resample(labels, reference):
    """The straightforward version: the whole label map resampled (nearest neighbour) over the whole reference grid."""
    return sitk.GetArrayFromImage(sitk.Resample(sitk.Cast(labels, sitk.sitkUInt8), reference, sitk.Transform(),
                                                sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))


@pytest.mark.parametrize("spacing", [(1.5, 1.5, 1.5), (0.9, 1.3, 2.7)])
def test_same_as_full_resample(spacing):
    rng = np.random.default_rng(0)
    ref = sitk.Image(60, 50, 40, sitk.sitkInt16)
    ref.SetSpacing((0.7, 0.7, 2.0))
    ref.SetOrigin((-20.0, -15.0, 100.0))
    c, s = np.cos(0.2), np.sin(0.2)
    ref.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))  # oblique in-plane
    size = [int(round(n * a / b)) for n, a, b in zip(ref.GetSize(), ref.GetSpacing(), spacing)]
    lab = np.zeros(size[::-1], np.uint8)
    lab[5:20, 4:15, 3:12] = 1
    lab[8:14, 6:12, 14:22] = 2
    lab[(rng.random(lab.shape) < 0.002)] = 3  # scattered single voxels
    lab[0, 0, 0] = lab[-1, -1, -1] = 1       # labels touching the edges
    img = sitk.GetImageFromArray(lab)
    img.SetSpacing(spacing)
    img.SetOrigin(ref.GetOrigin())
    img.SetDirection(ref.GetDirection())
    got = sitk.GetArrayFromImage(labels_to_grid(img, ref))
    np.testing.assert_array_equal(got, full_resample(img, ref))
    assert got.any()


def test_empty_and_outside_labels_give_zeros():
    ref = sitk.Image(20, 20, 10, sitk.sitkInt16)
    lab = sitk.Image(10, 10, 5, sitk.sitkUInt8)
    assert not sitk.GetArrayFromImage(labels_to_grid(lab, ref)).any()
    lab[2, 2, 2] = 1
    lab.SetOrigin((500.0, 500.0, 500.0))  # far outside the reference
    out = labels_to_grid(lab, ref)
    assert out.GetSize() == ref.GetSize() and not sitk.GetArrayFromImage(out).any()
