"""Scoring review 4 (an audit against SCORING.md): a slice on the carina whose z differs from the level in the last
bit, and the MosMed category of a small lesion that scores in its zone."""

from __future__ import annotations

import numpy as np

from pipeline.config import load_config
from scoring.quantify import score_scan
from scoring.zones import six_zone_intervals, zhang_intervals
from tests.test_zones import LEVELS, Z, lms, phantom


def test_a_slice_on_the_carina_is_middle_when_the_grids_differ_in_the_last_bit():
    """The carina is a working-grid slice z and the zones are read on the CT's own slices: the same plane was
    -66.60000000000001 on one and -66.6 on the other, and the slice on the carina went to the upper zone
    (docs/scoring.md: a slice exactly on either level is middle)."""
    zones = six_zone_intervals(-66.60000000000001, -150.0)
    z = np.array([-66.6, -66.5999, -66.6001, -150.0 + 1e-12, -150.0001])
    assert zones["middle"].mask(z).tolist() == [True, False, True, True, False]
    assert zones["upper"].mask(z).tolist() == [False, True, False, False, False]
    assert zones["lower"].mask(z).tolist() == [False, False, False, False, True]


def test_intervals_still_share_no_slice():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.uniform(-300, 300, 2000), [-66.6, -66.6 + 1e-9, -66.6 - 1e-9, 10.0, 10.0 + 5e-7]])
    for zones in (six_zone_intervals(-66.6, 10.0 - 200), six_zone_intervals(10.0, -66.6)):
        hits = sum(iv.mask(z).astype(int) for iv in zones.values())
        assert (hits == 1).all()
    levels = [150.0, 100.0, 50.0, 0.0, -50.0]
    zone_mode = zhang_intervals(levels, mode="zone")
    hits = sum(iv.mask(np.concatenate([z, [125.0, 75.0, 25.0, -25.0]])).astype(int) for iv in zone_mode.values())
    assert (hits == 1).all()


def test_mosmed_counts_a_lesion_its_zone_scores():
    """12 mL of ground glass in a zone: six-zone 1, but 0.2 % of both lungs, under the zones' 0.25 % noise floor,
    so the scan was CT-0 "none" while its six-zone total was 1. CT-1 is any lesion of at least 1 mL."""
    hu, lungs, classes = phantom()
    classes[2, 0, :5] = 2  # 5 voxels of 1 mL in the right lower zone (500 mL): 1 %; of 3600 mL of lung: 0.139 %
    cfg = load_config()
    row, _, _ = score_scan(hu, lungs, classes, Z, 1.0, lms(**LEVELS), cfg)
    assert row["six_zone_total"] == 1 and row["percent_opacity"] < cfg["scoring"]["min_involvement_pct"]
    assert row["mosmed_category"] == "CT-1"


def test_mosmed_none_below_the_volume_minimum():
    hu, lungs, classes = phantom()
    classes[2, 0, :5] = 2
    row, _, _ = score_scan(hu, lungs, classes, Z, 0.1, lms(**LEVELS), load_config())  # 0.5 mL of lesion
    assert row["six_zone_total"] == 0 and row["mosmed_category"] == "CT-0"
