"""Peripheral and central lung (scoring.periphery, zones.csv system ``peripheral_central``): the chest cavity's hull,
each voxel's depth from its edge, the outer third of each lung in each slice, on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.morphology import convex_hull_image

from scoring.periphery import (
    MIN_RIND_MM,
    PERIPHERAL_FRACTION,
    cavity_depth,
    convex_hull_2d,
    cut_off_mm,
    slice_depths,
)
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


def _outer(lungs, sides, z=Z, pixel=(5.0, 5.0)):
    """Peripheral voxels of each slice as one boolean volume (the rows' rule: distance <= cut_off_mm)."""
    out = np.zeros(lungs.shape, bool)
    for k, per_side in slice_depths(lungs, sides, z, pixel):
        for lab, (d, greatest) in per_side.items():
            m = lungs[k] == lab
            out[k][m] = d <= cut_off_mm(greatest)
    return out


def test_depth_from_the_cavity_edge_and_the_outer_third():
    """The hull of the two lungs spans the mediastinum: a voxel's depth is its distance from the hull's edge (the
    costal side), so a lung's medial side is deep (central); the cut-off is a third of the lung's deepest voxel in the
    slice, at least 10 mm."""
    _, lungs, _ = chest()
    sl = lungs[5]
    r, c = np.mgrid[:20, :30]
    depth = cavity_depth(sl)
    np.testing.assert_allclose(depth, np.minimum.reduce([r + 1, 20 - r, c + 1, 30 - c]))  # the hull is the rectangle
    right = sl == 1
    # 5 mm pixels: the deepest right-lung voxel (column 9, rows 9-10) is 50 mm deep, the cut-off 50/3 mm: depths of
    # 5, 10 and 15 mm (rows 0-2, 17-19, columns 0-2) are peripheral, the medial side (column 9) central
    outer = _outer(lungs, {1: None, 2: None})
    np.testing.assert_array_equal(outer[5][right], ((r <= 2) | (r >= 17) | (c <= 2))[right])
    assert outer[5][right].sum() == 102 and PERIPHERAL_FRACTION == pytest.approx(1 / 3)
    assert cut_off_mm(50.0) == pytest.approx(50 / 3) and cut_off_mm(12.0) == pytest.approx(MIN_RIND_MM)
    # the pixel spacing counts: columns of 10 mm put the lateral wall farther (deepest voxel still 50 mm, rows)
    outer2 = _outer(lungs, {1: None, 2: None}, pixel=(5.0, 10.0))
    assert outer2[5][right].sum() == 6 * 10 + 14 * 1
    # thin lung is peripheral whatever its share: 1 mm pixels, the deepest voxel 10 mm, the cut-off 10 mm
    assert _outer(lungs, {1: None, 2: None}, pixel=(1.0, 1.0))[5][right].all()
    # one lung alone in a slice: the hull is its own, and its medial side is outer too
    alone = np.where(lungs == 1, 1, 0).astype(np.uint8)
    assert _outer(alone, {1: None})[5][10, 9]
    assert not cavity_depth(np.zeros((3, 3))).any()
    with pytest.raises(ValueError, match="z_mm"):
        next(slice_depths(lungs, {1: None}, Z[:5]))


def test_the_diaphragm_is_pleura():
    """Lung resting on the diaphragm is peripheral: its height above the lung's floor, where that floor lies at most
    10 mm above the dome level, counts as a distance to the pleura; a floor higher up (on the heart or the hilum's
    vessels), a floor in the volume's lowest slice or a lung without a dome level does not."""
    _, lungs, _ = chest()
    right = lungs == 1
    # the floor is slice 1 (z 10 mm), 10 mm slices: slice 1 is 10 mm high (peripheral), slice 2 20 mm (over 50/3)
    dome = _outer(lungs, {1: 30.0, 2: 30.0})
    assert dome[1][right[1]].all() and dome[2][right[2]].sum() == 102
    assert _outer(lungs, {1: None, 2: None})[1][right[1]].sum() == 102  # no dome level: no floor
    assert _outer(lungs, {1: -5.0, 2: -5.0})[1][right[1]].sum() == 102  # the floor 15 mm above the dome: no
    assert _outer(lungs, {1: 0.0, 2: 0.0})[1][right[1]].all()  # 10 mm above it: the margin holds it
    # a "heart" under the medial right lung: those columns' floor is at slice 9 (z 90 mm), far above the dome
    heart = lungs.copy()
    heart[1:9, 5:15, 6:10] = 0
    o = _outer(heart, {1: 30.0, 2: 30.0})
    assert not o[9, 5:15, 6:10][heart[9, 5:15, 6:10] == 1].any()  # deep in plane, no diaphragm under them
    assert o[1][heart[1] == 1].all()  # the rest of slice 1 still lies on the diaphragm
    # a lung reaching the volume's lowest slice: that floor is the scan's end, not the diaphragm
    low = np.roll(lungs, -1, axis=0)  # lung in slices 0-17
    assert _outer(low, {1: 30.0, 2: 30.0})[0][low[0] == 1].sum() == 102
    # a ring of lung 10 mm thick around a dome (1 mm pixels): all of it peripheral
    yy, xx = np.mgrid[:61, :61]
    ring = np.zeros((3, 61, 61), np.uint8)
    ring[1][(np.hypot(yy - 30, xx - 30) <= 29) & (np.hypot(yy - 30, xx - 30) > 19)] = 1
    assert _outer(ring, {1: 0.0}, z=np.array([0.0, 1.0, 2.0]), pixel=(1.0, 1.0))[1][ring[1] == 1].all()


def test_peripheral_central_rows_hand_computed():
    """zones.csv's peripheral_central rows: a lateral (subpleural) lesion is peripheral, one along the mediastinum
    central; the lung on the diaphragm (slice 1, over the domes at 30 mm) peripheral; measured like a zone, not
    scored; the two units are the lung."""
    hu, lungs, classes = chest()
    classes[12, 5:15, 0], hu[12, 5:15, 0] = 2, -400.0  # right lung, against the ribs: peripheral
    classes[13, 5:15, 9], hu[13, 5:15, 9] = 3, 0.0  # right lung, against the mediastinum: central
    classes[14, 0, 25], hu[14, 0, 25] = 2, -400.0  # left lung, against the front wall: peripheral
    row, zones, _ = score_scan(hu, lungs, classes, Z, VML, lms(**LEVELS), cfg(), pixel_mm=(5.0, 5.0))
    pc = {(z["lung"], z["unit"]): z for z in zones if z["system"] == "peripheral_central"}
    assert set(pc) == {(lung, unit) for lung in ("right", "left") for unit in ("peripheral", "central")}
    assert all(z["status"] == "ok" and math.isnan(z["unit_score"]) and math.isnan(z["extent_score"])
               and math.isnan(z["density_grade"]) and z["near_edge"] == "" for z in pc.values())
    n_out, n_in = 17 * 102 + 200, 17 * 98  # slice 1 lies on the diaphragm: all 200 voxels peripheral
    for lung in ("right", "left"):
        assert pc[(lung, "peripheral")]["lung_ml"] == round(n_out * VML, 2)
        assert pc[(lung, "central")]["lung_ml"] == round(n_in * VML, 2)
        for col in ("lung_ml", "lesion_ml"):
            name = "lung_volume_ml" if col == "lung_ml" else "lesion_volume_ml"
            assert pc[(lung, "peripheral")][col] + pc[(lung, "central")][col] == pytest.approx(
                row[f"{name}_{lung}"], abs=0.011)
    assert pc[("right", "peripheral")]["lesion_ml"] == 0.01 and pc[("right", "peripheral")]["ggo_ml"] == 0.01
    assert pc[("right", "central")]["lesion_ml"] == 0.01 and pc[("right", "central")]["consolidation_ml"] == 0.01
    assert pc[("right", "central")]["percent_high_opacity"] == round(100 * 10 / n_in, 3)
    assert pc[("right", "peripheral")]["involvement_pct"] == round(100 * 10 / n_out, 3)
    assert pc[("right", "peripheral")]["mean_lung_hu"] == round(((n_out - 10) * -850 + 10 * -400) / n_out, 1)
    assert pc[("right", "central")]["mean_lung_hu"] == round(((n_in - 10) * -850 + 10 * 0) / n_in, 1)
    # the left lung's one lesion voxel counts where it lies (peripheral), below the rounding of lesion_ml
    assert pc[("left", "central")]["lesion_ml"] == 0.0 and pc[("left", "peripheral")]["mean_lung_hu"] == round(
        ((n_out - 1) * -850 - 400) / n_out, 1)
    # without pixel_mm: square pixels of the voxel volume and the slice step (0.001 mL, 10 mm: 0.32 mm), the cut-off
    # 10 mm: this small chest is all peripheral, its central rows missing with lung_ml 0
    _, zones_sq, _ = score_scan(hu, lungs, classes, Z, VML, lms(**LEVELS), cfg())
    sq = {(z["lung"], z["unit"]): z for z in zones_sq if z["system"] == "peripheral_central"}
    assert sq[("right", "central")]["status"] == "missing" and sq[("right", "central")]["lung_ml"] == 0.0
    assert sq[("right", "peripheral")]["lung_ml"] == round(3600 * VML, 2)


def test_peripheral_central_rows_of_a_lung_not_found():
    """A lung not found has both rows missing and is no lung of the cavity: the other lung is then its own cavity
    (its medial side outer)."""
    hu, lungs, classes = chest()
    lungs_r = lungs.copy()
    lungs_r[lungs_r == 2] = 0
    lungs_r[5, 0, 29] = 2  # a speck of the left lung, too small to be found: no lung of the cavity either
    _, zones, flags = score_scan(hu, lungs_r, classes, Z, VML, lms(**LEVELS), cfg(), pixel_mm=(5.0, 5.0))
    pc = {(z["lung"], z["unit"]): z for z in zones if z["system"] == "peripheral_central"}
    assert "LUNG_NOT_FOUND:left" in flags
    assert all(pc[("left", u)]["status"] == "missing" and math.isnan(pc[("left", u)]["involvement_pct"])
               for u in ("peripheral", "central"))
    # the right lung alone (20 x 10 voxels of 5 mm, deepest voxel 25 mm, cut-off 10 mm): its two outer rings, 104
    # voxels a slice, and all of slice 1 on the diaphragm
    assert pc[("right", "peripheral")]["lung_ml"] == round((17 * 104 + 200) * VML, 2)
