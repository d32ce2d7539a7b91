"""Second review of the classical segmenter: a small lung beside a large one, a lung cut by the scan's first slice
on a fine grid, and the memory of the airway region growing (the network's carina). Synthetic volumes in LPS
``[z, y, x]`` (x towards the patient's left, z cranial): the chest phantom of pipeline/phantom.py and the grid of
tests/test_classical.py."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from pipeline.phantom import make_phantom
from segmentation.base import LEFT_LUNG, RIGHT_LUNG
from segmentation.classical import (
    ClassicalSegmenter,
    crop_box,
    label_sizes,
    lookup,
    segment_airway,
)
from tests.conftest import require


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(lesions=None)


def test_a_small_lung_beside_a_large_one_is_still_a_lung(phantom):
    """The left lung under a large effusion (soft tissue below 35 mm above the carina; 391 mL of aerated lung
    against 2400 mL on the right, 14 %) was dropped whole: two separate lungs side by side had to hold at least
    15 % of the air each, so the left lung went missing (LUNG_NOT_FOUND:left, its scores NaN)."""
    hu, truth = phantom.hu.copy(), phantom.lungs.copy()
    effusion = (phantom.lungs == LEFT_LUNG) & (phantom.z_mm[:, None, None] < 35.0)
    hu[effusion] = 15.0
    truth[effusion] = 0
    assert 0.1 < (truth == LEFT_LUNG).sum() / (truth > 0).sum() < 0.15
    seg = ClassicalSegmenter().segment(hu, phantom.spacing)
    for side in (RIGHT_LUNG, LEFT_LUNG):
        assert _dice(seg.lungs == side, truth == side) > 0.95, side


def _chest_cut_at_the_top(spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Two lungs running out of the scan's top slice (apices above the scan), on ``spacing``."""
    shape = (int(60 / spacing[0]), 96, 128)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) * s for n, s in zip(shape, spacing)), indexing="ij")
    y, x = y - 96.0, x - 128.0
    hu = np.full(shape, -1000.0, np.float32)
    hu[(y / 85.0) ** 2 + (x / 120.0) ** 2 <= 1.0] = 40.0
    lung = ((((x + 52) / 38.0) ** 2 + (y / 62.0) ** 2 <= 1.0) | (((x - 52) / 38.0) ** 2 + (y / 62.0) ** 2 <= 1.0))
    lung &= z > 5.0
    hu[lung] = -860.0
    hu += np.random.default_rng(0).normal(0.0, 15.0, shape).astype(np.float32)
    return hu, lung


def test_a_lung_cut_by_the_top_slice_keeps_that_slice_on_a_fine_grid():
    """On slices under 0.625 mm the lung's closing (a 5 mm ball, padded by 8 voxels only) eroded a lung that runs
    out of the scan's top slice: its top two slices were lost, so the lung no longer reached the first slice and
    the cut-off apex (PARTIAL_LUNG_COVERAGE) went unnoticed."""
    hu, lung = _chest_cut_at_the_top((0.5, 2.0, 2.0))
    seg = ClassicalSegmenter().segment(hu, (0.5, 2.0, 2.0))
    for k in (-1, -2):
        assert (seg.lungs[k] > 0).sum() > 0.9 * lung[k].sum(), k


def test_crop_box_label_sizes_and_lookup_equal_their_plain_numpy_forms():
    """The low-memory helpers give exactly what np.nonzero, np.bincount and fancy indexing give."""
    rng = np.random.default_rng(4)
    mask = np.zeros((37, 41, 29), bool)
    mask[5:30, 2:40, 7:19] = rng.random((25, 38, 12)) > 0.6
    idx = np.nonzero(mask)
    for margin in (0, 2, 9):
        expect = tuple(slice(max(0, int(i.min()) - margin), min(n, int(i.max()) + margin + 1))
                       for i, n in zip(idx, mask.shape))
        assert crop_box(mask, margin) == expect
    from scipy import ndimage as ndi

    labels, count = ndi.label(mask)
    assert np.array_equal(label_sizes(labels, count), np.bincount(labels.ravel(), minlength=count + 1))
    table = rng.random(count + 1) > 0.5
    assert np.array_equal(lookup(table, labels), table[labels])


def test_segment_airway_peak_memory(phantom):
    """segment_airway (the airway of the network and bundle segmenters) held int64 copies of full-volume index and
    label arrays (np.nonzero in crop_box, np.bincount and fancy indexing on int32 labels) and smoothed the whole
    body box to search the upper third for the trachea: 3.5x the float32 volume at its peak here (4.7x on
    normal001); now about 2.2x, with the same airway."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        airway = segment_airway(phantom.hu, phantom.spacing)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert airway.sum() * phantom.voxel_ml > 5
    assert peak < 2.6 * phantom.hu.nbytes, peak / phantom.hu.nbytes


def test_real_airway_memory_and_result(shared_data):
    """On normal001 (working grid) the airway is still found, at under 2.6x the float32 volume (4.7x before)."""
    from tests.test_classical import _load_working

    hu, spacing = _load_working(require(shared_data / "chest" / "normal001"))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        airway = segment_airway(hu, spacing)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert airway.sum() * float(np.prod(spacing)) / 1000.0 > 5
    assert peak < 2.6 * hu.nbytes, peak / hu.nbytes
