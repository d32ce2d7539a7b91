"""Peripheral and central lung (scoring.periphery, zones.csv system ``peripheral_central``): the chest cavity's hull,
each voxel's depth from its edge, the outer third of each lung in each slice, on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.morphology import convex_hull_image

from scoring.periphery import PERIPHERAL_FRACTION, cavity_depth, convex_hull_2d, peripheral_in_slice
from scoring.quantify import score_scan
from tests.test_zones import LEVELS, Z, cfg, lms

VML = 0.001


def chest(gap: bool = True):
    """Both lungs in slices 1..18 of a 20 x 30 slice: the right lung in columns 0-9 (the image is LPS: low columns
    are the patient's right), the left in 20-29, the mediastinum between them (columns 10-19) unless ``gap`` is
    False. Background -850 HU in the lungs, -1000 outside."""
    lungs = np.zeros((len(Z), 20, 30), np.uint8)
    lungs[1:19, :, :10] = 1
    lungs[1:19, :, 20:] = 2
    hu = np.where(lungs > 0, -850.0, -1000.0)
    return hu, lungs, np.zeros(lungs.shape, np.uint8)


def test_hull_is_scikit_images_hull():
    """convex_hull_2d fills the same pixels as skimage's convex_hull_image (pixel centres), on random blobs, two lungs
    apart, a ring, and degenerate masks."""
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(40):
        m = np.zeros((40, 50), bool)
        for _ in range(rng.integers(1, 4)):
            r, c = rng.integers(0, 40), rng.integers(0, 50)
            m[max(r - rng.integers(0, 8), 0):r + rng.integers(1, 8), max(c - rng.integers(0, 8), 0):c + rng.integers(1, 8)] = True
        masks.append(m)
    _, lungs, _ = chest()
    masks.append(lungs[5] > 0)
    yy, xx = np.mgrid[:41, :41]
    masks.append(np.abs(np.hypot(yy - 20, xx - 20) - 15) < 2)  # a ring around a dome
    for m in masks:
        np.testing.assert_array_equal(convex_hull_2d(m), convex_hull_image(m, offset_coordinates=False))
    for m in (np.zeros((5, 5), bool), np.eye(6, dtype=bool), np.pad(np.ones((1, 4), bool), 2)):  # none, lines
        np.testing.assert_array_equal(convex_hull_2d(m), m)
    with pytest.raises(ValueError, match="2-D"):
        convex_hull_2d(np.zeros((2, 2, 2), bool))


def test_depth_from_the_cavity_edge_and_the_outer_third():
    """The hull of the two lungs spans the mediastinum: a voxel's depth is its distance from the hull's edge (the
    costal side), so a lung's medial side is deep (central), and the outer third follows each lung's deepest voxel."""
    _, lungs, _ = chest()
    sl = lungs[5]
    depth = cavity_depth(sl)
    r, c = np.mgrid[:20, :30]
    np.testing.assert_allclose(depth, np.minimum.reduce([r + 1, 20 - r, c + 1, 30 - c]))  # the hull is the rectangle
    right = sl == 1
    outer = peripheral_in_slice(depth, right)
    # deepest right-lung voxel: column 9, rows 9-10, depth 10; outer third: depth <= 10/3, rows 0-2, 17-19, columns 0-2
    expect = ((r <= 2) | (r >= 17) | (c <= 2))[right]
    np.testing.assert_array_equal(outer, expect)
    assert outer.sum() == 102 and PERIPHERAL_FRACTION == pytest.approx(1 / 3)
    # the pixel spacing counts: columns of 2 mm put the lateral wall farther, so only column 0 is outer there
    depth2 = cavity_depth(sl, (1.0, 2.0))
    assert peripheral_in_slice(depth2, right).sum() == 6 * 10 + 14 * 1
    # one lung alone in a slice: the hull is its own, and its medial side is outer too
    alone = np.where(sl == 1, 1, 0)
    outer_alone = peripheral_in_slice(cavity_depth(alone), alone == 1)
    assert outer_alone[(c[right] == 9) & (r[right] == 10)].all()
    assert peripheral_in_slice(depth, np.zeros_like(right)).size == 0 and not cavity_depth(np.zeros((3, 3))).any()


def test_peripheral_central_rows_hand_computed():
    """zones.csv's peripheral_central rows: a lateral (subpleural) lesion is peripheral, one along the mediastinum
    central; measured like a zone, not scored; the two units are the lung."""
    hu, lungs, classes = chest()
    classes[12, 5:15, 0], hu[12, 5:15, 0] = 2, -400.0  # right lung, against the ribs: peripheral
    classes[13, 5:15, 9], hu[13, 5:15, 9] = 3, 0.0  # right lung, against the mediastinum: central
    classes[14, 0, 25], hu[14, 0, 25] = 2, -400.0  # left lung, against the front wall: peripheral
    row, zones, _ = score_scan(hu, lungs, classes, Z, VML, lms(**LEVELS), cfg(), pixel_mm=(0.7, 0.7))
    pc = {(z["lung"], z["unit"]): z for z in zones if z["system"] == "peripheral_central"}
    assert set(pc) == {(lung, unit) for lung in ("right", "left") for unit in ("peripheral", "central")}
    assert all(z["status"] == "ok" and math.isnan(z["unit_score"]) and math.isnan(z["extent_score"])
               and math.isnan(z["density_grade"]) and z["near_edge"] == "" for z in pc.values())
    for lung in ("right", "left"):  # 102 and 98 voxels of each lung slice, 18 slices
        assert pc[(lung, "peripheral")]["lung_ml"] == round(18 * 102 * VML, 2)
        assert pc[(lung, "central")]["lung_ml"] == round(18 * 98 * VML, 2)
        for col in ("lung_ml", "lesion_ml"):
            name = "lung_volume_ml" if col == "lung_ml" else "lesion_volume_ml"
            assert pc[(lung, "peripheral")][col] + pc[(lung, "central")][col] == pytest.approx(
                row[f"{name}_{lung}"], abs=0.011)
    assert pc[("right", "peripheral")]["lesion_ml"] == 0.01 and pc[("right", "peripheral")]["ggo_ml"] == 0.01
    assert pc[("right", "central")]["lesion_ml"] == 0.01 and pc[("right", "central")]["consolidation_ml"] == 0.01
    assert pc[("right", "central")]["percent_high_opacity"] == round(100 * 10 / 1764, 3)
    assert pc[("left", "peripheral")]["lesion_ml"] == 0.0 and pc[("left", "central")]["lesion_ml"] == 0.0  # 1 voxel
    assert pc[("right", "peripheral")]["involvement_pct"] == round(100 * 10 / 1836, 3)
    assert pc[("right", "peripheral")]["mean_lung_hu"] == round((1826 * -850 + 10 * -400) / 1836, 1)
    assert pc[("right", "central")]["mean_lung_hu"] == round((1754 * -850 + 10 * 0) / 1764, 1)
    # the left lung's one lesion voxel counts where it lies (peripheral), below the rounding of lesion_ml
    assert pc[("left", "peripheral")]["ggo_ml"] == 0.0 and pc[("left", "peripheral")]["mean_lung_hu"] == round(
        (1835 * -850 - 400) / 1836, 1)


def test_peripheral_central_rows_of_a_lung_not_found_and_a_thin_lung():
    """A lung not found has both rows missing and is no lung of the cavity (the other lung's medial side is then
    outer); a lung with no voxel in its outer third (one voxel per slice) has a missing peripheral row, lung_ml 0."""
    hu, lungs, classes = chest()
    lungs_r = lungs.copy()
    lungs_r[lungs_r == 2] = 0
    _, zones, flags = score_scan(hu, lungs_r, classes, Z, VML, lms(**LEVELS), cfg())
    pc = {(z["lung"], z["unit"]): z for z in zones if z["system"] == "peripheral_central"}
    assert "LUNG_NOT_FOUND:left" in flags
    assert all(pc[("left", u)]["status"] == "missing" and math.isnan(pc[("left", u)]["involvement_pct"])
               for u in ("peripheral", "central"))
    # the right lung is its own cavity (20 x 10, deepest voxel 5 deep): its outer third is its ring of depth 1, the
    # medial side included: 56 voxels a slice
    assert pc[("right", "peripheral")]["lung_ml"] == round(18 * 56 * VML, 2)
    # a lung found but thin: one voxel per slice, at its own deepest point, is central
    few = lungs.copy()
    few[lungs == 2] = 0
    few[1:19, 10, 25] = 2
    pcs = {(z["lung"], z["unit"]): z for z in _rows(hu, few, classes, absent=set())}
    assert pcs[("left", "peripheral")]["status"] == "missing" and pcs[("left", "peripheral")]["lung_ml"] == 0.0
    assert pcs[("left", "central")]["status"] == "ok" and pcs[("left", "central")]["lung_ml"] == 0.02


def _rows(hu, lungs, classes, absent):
    from scoring.quantify import _peripheral_central_rows

    return _peripheral_central_rows(hu, lungs, classes, VML, -200.0, absent, (1.0, 1.0))
