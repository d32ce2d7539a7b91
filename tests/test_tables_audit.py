"""Audit of the written tables against the masks (a helper's review): numbers that did not follow from the masks
as docs/scoring.md and SCORING.md define them."""

from __future__ import annotations

import math

import numpy as np

from pipeline.config import load_config
from scoring import systems
from scoring.quantify import score_scan
from scoring.zones import ZInterval, six_zone_intervals
from tests.test_zones import LEVELS, Z, cfg, lms, phantom


def units(zones, system, lung="right"):
    return {r["unit"]: r for r in zones if r["system"] == system and r["lung"] == lung}


def test_exactly_the_minimum_lesion_volume_counts_as_involved_whatever_its_classes():
    """1000 lesion voxels of 1 mm3 (860 faint GGO, 66 GGO, 74 consolidation) are 1 mL = min_involvement_ml, 8.9 %
    of the zone: zones.csv said lesion_ml 1.0 and scored 0 (the per-class volumes summed to 0.9999999999999999)."""
    assert systems.is_involved(0.86 + 0.066 + 0.074, 10.0, 1.0, 0.25)
    lungs = np.zeros((20, 40, 80), np.uint8)
    lungs[1:19, :, :40] = 1
    lungs[1:19, :, 40:] = 2
    classes = np.zeros(lungs.shape, np.uint8)
    flat = np.zeros(1000, np.uint8)
    flat[:860], flat[860:926], flat[926:] = 1, 2, 3
    classes[15, :25, :40] = flat.reshape(25, 40)  # z = 150 mm: right upper zone
    hu = np.select([classes == 1, classes == 2, classes == 3], [-650.0, -400.0, 0.0], -850.0)
    row, zones, _ = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), load_config())
    upper = units(zones, "six_zone")["upper"]
    assert upper["lesion_ml"] == 1.0 and upper["involvement_pct"] > 0.25
    assert upper["unit_score"] == 1 and row["six_zone_total"] == 1


def test_upper_zone_is_scored_when_only_the_ipv_is_missing():
    """A scan that stops above the diaphragm has no dome, hence no IPV: the upper zones (z > carina, fully seen)
    were reported missing with the middle and lower ones, while zhang900 scored its levels above the carina."""
    assert six_zone_intervals(110.0, None) == {"upper": ZInterval(110.0, math.inf), "middle": None, "lower": None}
    assert six_zone_intervals(None, None) == dict.fromkeys(("upper", "middle", "lower"))
    hu, lungs, classes = phantom({15: 10}, cut_bottom=True)  # lesion at z = 150 mm, above the carina (110)
    levels = {k: v for k, v in LEVELS.items() if k not in ("ipv", "dome_right", "dome_left")}
    row, zones, flags = score_scan(hu, lungs, classes, Z, 0.001, lms(**levels), cfg())
    right, left = units(zones, "six_zone"), units(zones, "six_zone", "left")
    assert right["upper"]["status"] == "ok" and right["upper"]["unit_score"] == 1
    assert right["upper"]["lesion_ml"] == 0.1 and left["upper"]["unit_score"] == 0
    for r in (right, left):
        assert r["middle"]["status"] == r["lower"]["status"] == "missing"
        assert math.isnan(r["middle"]["unit_score"]) and math.isnan(r["lower"]["unit_score"])
    assert math.isnan(row["six_zone_total"]) and "ZONES_MISSING" in flags


def test_phantom_truth_counts_exactly_the_minimum_lesion_volume_as_the_scorer_does():
    """The phantom's independent truth had the scorer's floating-point flaw (0.9999999999999999 mL < 1 mL)."""
    from pipeline.phantom import MIN_INVOLVEMENT_ML, is_involved

    ml = sum([860 * 0.001, 66 * 0.001, 74 * 0.001])
    assert ml < MIN_INVOLVEMENT_ML == 1.0
    assert is_involved(ml, 8.9)
