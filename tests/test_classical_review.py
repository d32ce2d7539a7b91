"""Review of the classical segmenter: one lung only (pneumonectomy), stomach gas beside a single lung,
degenerate volumes. Synthetic volumes in LPS ``[z, y, x]`` (x towards the patient's left), built with the
grid of tests/test_classical.py."""

from __future__ import annotations

import numpy as np
import pytest

from segmentation.base import LEFT_LUNG, RIGHT_LUNG
from segmentation.classical import ClassicalSegmenter, segment_airway
from tests.test_classical import SHAPE, SPACING, _grid, make_chest


def _one_lung_chest(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic chest after a left pneumonectomy: the left hemithorax is soft tissue, and the right lung
    is a front and a back part joined by a narrower middle (deep erosion cuts it into two parts)."""
    rng = np.random.default_rng(seed)
    z, y, x = _grid()
    hu = np.full(SHAPE, -1000.0, np.float32)
    hu[(y / 85.0) ** 2 + (x / 120.0) ** 2 <= 1.0] = 40.0
    front = ((x + 50) / 38.0) ** 2 + ((y + 30) / 32.0) ** 2 + ((z - 72) / 62.0) ** 2 <= 1.0
    back = ((x + 50) / 38.0) ** 2 + ((y - 30) / 32.0) ** 2 + ((z - 72) / 62.0) ** 2 <= 1.0
    waist = ((x + 50) / 12.0) ** 2 + ((z - 72) / 40.0) ** 2 <= 1.0
    right = front | back | (waist & (np.abs(y) < 20))
    hu[right] = -860.0
    hu += rng.normal(0.0, 15.0, SHAPE).astype(np.float32)
    return hu, right


def test_one_lung_is_not_split_into_a_right_and_a_left_lung():
    """A single lung that erosion cuts into a front and a back part was labelled half right, half left
    (cap001 with its left lung filled in: 1190 mL right + 1695 mL left, instead of 2924 mL right)."""
    hu, right = _one_lung_chest()
    seg = ClassicalSegmenter().segment(hu, SPACING)
    assert not np.any(seg.lungs == LEFT_LUNG)
    found = seg.lungs == RIGHT_LUNG
    assert 2 * (found & right).sum() / (found.sum() + right.sum()) > 0.9


def test_stomach_gas_beside_one_lung_is_not_the_other_lung():
    """With one lung only, gas under the other hemidiaphragm (a separate air component lower than the lung)
    was taken for the missing lung (ricord_covid_419639 with its right lung filled in: 301 mL of stomach gas
    labelled the right lung)."""
    hu, right = _one_lung_chest()
    z, y, x = _grid()
    gas = ((x - 50) / 40.0) ** 2 + (y / 45.0) ** 2 + ((z - 12.0) / 28.0) ** 2 <= 1.0
    hu[gas] = np.random.default_rng(1).normal(-1000.0, 15.0, int(gas.sum())).astype(np.float32)
    assert gas.sum() > 0.2 * right.sum()
    seg = ClassicalSegmenter().segment(hu, SPACING)
    assert not np.any(seg.lungs[gas] > 0)
    assert not np.any(seg.lungs == LEFT_LUNG)


def test_two_lungs_still_two_lungs():
    """The side-by-side test leaves the normal chest alone: two lungs, right at low x."""
    hu, truth = make_chest()
    seg = ClassicalSegmenter().segment(hu, SPACING)
    for side in (RIGHT_LUNG, LEFT_LUNG):
        t, s = truth["lungs"] == side, seg.lungs == side
        assert 2 * (t & s).sum() / (t.sum() + s.sum()) > 0.9


@pytest.mark.parametrize("n_slices", [1, 2])
def test_a_volume_of_one_or_two_slices_does_not_crash(n_slices):
    """The trachea search went on below the body's lowest slice (negative indices: an IndexError for one
    slice; two slices are a guard)."""
    hu = np.full((n_slices, 64, 64), 40.0, np.float32)
    hu[:, 20:44, 8:28] = -850.0
    hu[:, 20:44, 36:56] = -850.0
    seg = ClassicalSegmenter().segment(hu, (1.5, 1.5, 1.5))
    assert seg.lungs.shape == hu.shape
    assert segment_airway(hu, (1.5, 1.5, 1.5)).shape == hu.shape
