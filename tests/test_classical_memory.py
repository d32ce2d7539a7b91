"""The classical segmenter's memory work must not change its masks.

Its peak memory was cut (about 11x the float32 volume at its peak, now about 3x on the real series) by freeing
temporaries early, filtering in place, counting and looking up label maps chunk by chunk and computing distance
maps slab by slab from scipy's feature transform. These tests pin the result voxel for voxel: the sha256 of the
lung, lesion and airway masks of three small synthetic chests, computed with the code as it was before that work
(two separate lungs; two lungs joined by an anterior bridge, split by erosion and grown back; one lung cut by
erosion into a front and a back part), and check each memory-saving helper against the plain numpy/scipy
form it replaces. A change that moves a single voxel fails here.
"""

from __future__ import annotations

import hashlib
import tracemalloc

import numpy as np
import pytest
from scipy import ndimage as ndi

from segmentation.base import LEFT_LUNG, RIGHT_LUNG
from segmentation.classical import (
    ClassicalSegmenter,
    _per_x,
    _x_mean,
    _x_spread,
    coarse_distance,
    coarse_within,
    edt,
    label_share,
    mediastinum,
)
from tests.test_classical import SPACING, _grid, make_chest
from tests.test_classical_review import _one_lung_chest


def _joined_chest() -> np.ndarray:
    """The synthetic chest (noise seed 3) with the lungs joined by an air bridge in front of the mediastinum."""
    hu, _ = make_chest(seed=3)
    z, y, x = _grid()
    bridge = (np.abs(x) < 24.0) & (np.abs(y + 35.0) < 10.0) & (np.abs(z - 75.0) < 25.0)
    hu[bridge] = -860.0 + np.random.default_rng(4).normal(0.0, 15.0, int(bridge.sum())).astype(np.float32)
    return hu


# sha256 of seg.lungs (uint8), seg.lesions and seg.airway (bool), C order, from the code before the memory work.
EXPECTED = {
    "chest": ("a39e3eae9afcd18e1a5bcc7b53b55c76d28c1997200ee6803e423896186eba20",
              "c1e941e1254d6e2bd5754b72c13fbfcd977e326fc7a330e9530b624936878753",
              "06d0bfe6ab037b5cc81192374fd8c15c672fed6cc1b289d4a7447ed4dc2c286d"),
    "joined": ("203e63963a94de68e2de08c64679ff6364a03278e02e15bd8e5339f05f35b96e",
               "777bfaa19a0813b128a7af2946461f52322cabc844702a94c52abd57f33f4b77",
               "bce97b688d298cea1c3cfcefcad6ff4db5389dde16ab761b6e6a783e061d0f92"),
    "one_lung": ("8f566bdba4b64eb5a82d92fef7b3281c486279a8111af679a9cf22838f825021",
                 "3e8d0031b0c8feded20c864126a3b8aafbe264a27e67b075ecde326d728b4689",
                 "599c1bb5ffd4b87229a81958f33f1060821cd01cd7aa7ccafa0d862f4522f3f6"),
}
INPUTS = {"chest": lambda: make_chest()[0], "joined": _joined_chest, "one_lung": lambda: _one_lung_chest()[0]}


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_masks_are_unchanged_voxel_for_voxel(name):
    seg = ClassicalSegmenter().segment(INPUTS[name](), SPACING)
    assert seg.lungs.dtype == np.uint8 and seg.lesions.dtype == bool and seg.airway.dtype == bool
    assert (_sha(seg.lungs), _sha(seg.lesions), _sha(seg.airway)) == EXPECTED[name]


def test_joined_lungs_are_split_into_two():
    """The joined chest goes through the erosion split (not the side-by-side shortcut) and still gives two lungs."""
    seg = ClassicalSegmenter().segment(_joined_chest(), SPACING)
    assert (seg.lungs == RIGHT_LUNG).sum() > 50000 and (seg.lungs == LEFT_LUNG).sum() > 50000


def test_peak_memory_on_the_synthetic_chest():
    """11.4x the float32 volume before the memory work, 4.3x after (on this small volume fixed costs weigh more)."""
    hu = make_chest()[0]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        ClassicalSegmenter().segment(hu, SPACING)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 6.0 * hu.nbytes, peak / hu.nbytes


def _blobs(shape, seed=0, level=0.5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 2.0) > level


@pytest.mark.parametrize("shape, sampling", [((30, 40, 50), (2.5, 0.7, 0.7)), ((4, 90, 70), (1e4, 3.0, 3.0)),
                                             ((40, 20, 33), (0.3, 1e4, 1.1)), ((3, 3, 3), (1.0, 1.0, 1.0))])
def test_edt_equals_scipy(shape, sampling):
    m = _blobs(shape)
    ref = ndi.distance_transform_edt(m, sampling=sampling)
    assert np.array_equal(edt(m, sampling), ref)
    assert np.array_equal(edt(m, sampling, lambda d: d <= 3.3, bool), ref <= 3.3)
    assert np.array_equal(edt(np.ones(shape, bool), sampling), ndi.distance_transform_edt(np.ones(shape, bool),
                                                                                         sampling=sampling))


def test_coarse_within_equals_thresholded_coarse_distance():
    m = _blobs((31, 40, 45), seed=2, level=0.54)
    assert 0 < m.sum() < 0.2 * m.size
    for r in (2.0, 5.0, 20.0):
        assert np.array_equal(coarse_within(m, (1.5, 1.5, 1.5), r), coarse_distance(m, (1.5, 1.5, 1.5)) < r)
    empty = np.zeros((5, 6, 7), bool)
    assert np.array_equal(coarse_within(empty, (1.5, 1.5, 1.5), 20.0), coarse_distance(empty, (1.5, 1.5, 1.5)) < 20)


def test_label_share_equals_ndi_mean():
    labels, n = ndi.label(_blobs((30, 40, 50), seed=3))
    where = _blobs((30, 40, 50), seed=4)
    assert np.array_equal(label_share(labels, n, where), ndi.mean(where, labels, index=np.arange(1, n + 1)))


def test_mediastinum_equals_its_plain_form():
    rng = np.random.default_rng(5)
    lungs = rng.integers(0, 3, (6, 7, 40)).astype(np.uint8)
    lungs[:, :, 15:25] = 0
    lungs[0] = 0
    lungs[1, :, :20] = 0  # rows with a left lung only
    x = np.arange(lungs.shape[2])
    right_max = np.where(lungs == RIGHT_LUNG, x, -1).max(axis=2)
    left_min = np.where(lungs == LEFT_LUNG, x, lungs.shape[2]).min(axis=2)
    both = (right_max >= 0) & (left_min < lungs.shape[2])
    ref = both[..., None] & (x > right_max[..., None]) & (x < left_min[..., None])
    assert np.array_equal(mediastinum(lungs), ref)


def test_x_statistics_equal_those_of_np_nonzero():
    m = _blobs((20, 30, 41), seed=6)
    xs = np.nonzero(m)[2]
    per_x = _per_x(m)
    assert _x_mean(per_x) == xs.mean()
    assert _x_spread(per_x) == np.subtract(*np.percentile(xs, [95, 5]))
