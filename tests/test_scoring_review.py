"""Scoring-core review: boundary slices, slab thickness, density share and lesions outside the lung."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scoring import systems
from scoring.quantify import score_scan
from scoring.zones import six_zone_intervals, zhang_intervals
from tests.test_zones import LEVELS, Z, cfg, lms, phantom


def units(zones, system, lung="right"):
    return {r["unit"]: r for r in zones if r["system"] == system and r["lung"] == lung}


def test_slice_exactly_on_the_ipv_is_middle_zone():
    """SCORING.md: middle = from the carina down to the IPV, lower = below the IPV (it went to lower)."""
    iv = six_zone_intervals(110.0, 60.0)
    z = np.array([59.9, 60.0, 60.1, 110.0, 110.1])
    assert iv["lower"].mask(z).tolist() == [True, False, False, False, False]
    assert iv["middle"].mask(z).tolist() == [False, True, True, True, False]
    assert iv["upper"].mask(z).tolist() == [False, False, False, False, True]
    hu, lungs, classes = phantom({6: 10})  # slice 6 is at z = 60 = IPV
    _, zones, _ = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg())
    r = units(zones, "six_zone")
    assert r["middle"]["lesion_ml"] == 0.1 and r["lower"]["lesion_ml"] == 0.0
    assert r["lower"]["lung_ml"] + r["middle"]["lung_ml"] + r["upper"]["lung_ml"] == 1.8
    # an IPV at or above the carina gives no zones (they would overlap), not double-counted lung
    assert six_zone_intervals(60.0, 60.0) == dict.fromkeys(("upper", "middle", "lower"))


def test_slab_is_half_open_about_its_level():
    """level - 5 <= z < level + 5: a slab of 10 mm holds two 5 mm slices wherever the level falls (closed at both
    ends it held three with the level on a slice centre; half-open the other way, low < z <= high, it held only the
    upper edge: tests/test_zone_boundaries_audit.py)."""
    iv = zhang_intervals([170.0, 140.0, 110.0, 80.0, 30.0], "slab", 5.0)["L3"]
    assert iv.mask(np.array([104.9, 105.0, 110.0, 114.9, 115.0])).tolist() == [False, True, True, True, False]


def test_slab_thinner_than_the_slice_step_is_not_scored_zero():
    """12 mm slices, carina 114 mm: the +-5 mm slab held no slice and L3 scored 0 (status ok) over a lesion."""
    z12 = np.arange(20, dtype=float) * 12.0
    hu, lungs, classes = phantom({9: 10})  # slice 9 at z = 108, the nearest to the carina
    _, zones, _ = score_scan(hu, lungs, classes, z12, 0.001, lms(**dict(LEVELS, carina=114.0)), cfg())
    l3 = units(zones, "zhang900")["L3"]
    assert l3["lung_ml"] > 0 and l3["lesion_ml"] > 0 and l3["unit_score"] > 0


def test_density_share_exactly_on_the_boundary_whatever_the_voxel_size():
    """1 of 5 lesion voxels consolidated is 20 % = density_share: densest grade 3 (float error gave 1)."""
    for sp in ((0.742, 0.742, 2.0), (0.7, 0.7, 1.25), (0.6, 0.6, 0.625), (1.5, 1.5, 1.5)):
        v = sp[0] * sp[1] * sp[2] / 1000.0
        for n in (1, 5, 13):
            assert systems.density_grade({1: 4 * n * v, 2: 0.0, 3: n * v}, "densest", 0.2) == 3


def test_lesion_voxels_outside_the_lung_count_nowhere():
    """Lesion voxels outside the lung mask entered lesion_volume_ml, PO, PHO and MosMed but no lung or zone."""
    hu, lungs, classes = phantom()
    classes[0] = 3  # slice 0 holds no lung
    hu[0] = 0.0
    row, zones, _ = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg())
    assert row["lesion_volume_ml"] == 0.0 and row["consolidation_volume_ml"] == 0.0
    assert row["percent_opacity"] == 0.0 and row["percent_high_opacity"] == 0.0
    assert row["mosmed_category"] == "CT-0"
    assert row["lesion_volume_ml"] == row["lesion_volume_ml_right"] + row["lesion_volume_ml_left"]
    assert not math.isnan(row["six_zone_total"]) and row["six_zone_total"] == 0


def test_lobe_lung_is_the_lung_mask_inside_the_lobe():
    """A lobe map whose border takes in more than the lung mask (TotalSegmentator's lobes include hilum and pleura
    the lung mask leaves out): the lobe's lung volume, the denominator of its involvement, was the lobe map's own,
    so the same lesion scored lower in a lobe than in the zones. Now it is the lung mask inside the lobe."""
    hu, lungs, classes = phantom()
    lobes = np.zeros(lungs.shape, np.uint8)
    for code, (a, b) in {1: (0, 2), 2: (2, 5), 3: (5, 10), 4: (10, 15), 5: (15, 20)}.items():
        lobes[:, :, a:b] = code  # every slice: the lung mask holds slices 1..18 only
    lobes[0], lobes[-1] = 0, 0  # not cut off at the scan's edges
    lungs[1:19, 5:, 0:2] = 0  # the right upper lobe's lung mask: half of its lobe-map rows
    classes[1:19, :5, 0:2] = 2  # all of that lung is lesion
    row, zones, _ = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg(), lobes=lobes)
    ru = {r["unit"]: r for r in zones if r["system"] == "lobar"}["right_upper"]
    assert ru["lung_ml"] == pytest.approx(18 * 5 * 2 * 0.001)
    assert ru["involvement_pct"] == 100.0 and ru["extent_score"] == 4


def test_unit_measures_on_a_slab_equal_the_whole_volume_rule():
    """unit_measures reads a zone's consecutive slices as views (no full-volume mask per unit: a 512x512x600 series
    scored in 3.9 s instead of 11.3 s, 0.2 GB less at its peak); same volumes as the full-volume selection."""
    from scoring.quantify import unit_measures

    rng = np.random.default_rng(1)
    lung = rng.random((30, 8, 9)) < 0.6
    classes = rng.integers(0, 4, lung.shape).astype(np.uint8)
    for sel in (np.arange(30) >= 12, (np.arange(30) >= 5) & (np.arange(30) < 9), np.zeros(30, bool),
                np.isin(np.arange(30), [3, 4, 20])):
        m = unit_measures(sel, lung, classes, 0.25)
        full = lung & sel[:, None, None]
        assert m["lung_ml"] == full.sum() * 0.25
        assert m["class_ml"] == {c: float((classes[full] == c).sum()) * 0.25 for c in (1, 2, 3)}
