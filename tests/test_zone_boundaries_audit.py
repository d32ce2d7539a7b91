"""A landmark and zone-boundary audit (2026-12-06): units without lung, the zhang900 slab's ends, the carina note of a
scan starting close above the carina, and the documents' figures for the notch and the slice-centre rule."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

from pipeline.config import load_config
from scoring.landmarks import Landmark, _clavicular_heads, detect_carina
from scoring.quantify import ZONE_MIN_SHARE_PCT, score_scan
from scoring.zones import zhang_intervals
from tests.conftest import REPO

Z = np.arange(20, dtype=float) * 10.0  # 20 slices, z = 0..190 mm, index grows cranially
LEVELS = dict(suprasternal_notch=170.0, aortic_arch=140.0, carina=110.0, bronchus_intermedius=80.0,
              ipv=60.0, dome_right=30.0, dome_left=30.0)


def lms(**z: float | None) -> dict[str, Landmark]:
    return {k: Landmark(k, v, "detected", "high") for k, v in z.items()}


def cfg():
    c = load_config()
    c["scoring"]["min_involvement_ml"] = 0.0
    c["scoring"]["min_involvement_pct"] = 0.0
    return c


def phantom(right_slices: tuple[int, int] = (1, 19)):
    """Left lung in slices 1..18, right lung in ``right_slices`` (10 x 10 voxels each); no lesion."""
    lungs = np.zeros((len(Z), 10, 20), np.uint8)
    lungs[right_slices[0]:right_slices[1], :, :10] = 1
    lungs[1:19, :, 10:] = 2
    classes = np.zeros(lungs.shape, np.uint8)
    hu = np.full(lungs.shape, -850.0)
    return hu, lungs, classes


def rows(zones, system, lung="right"):
    return {r["unit"]: r for r in zones if r["system"] == system and r["lung"] == lung}


# ------------------------------------------------------------------ 1. a unit holding no lung is missing, not 0


def test_zones_the_lung_does_not_reach_are_missing_not_a_healthy_zero():
    """The right lung ends at z = 50 mm, below the IPV (60) and the carina (110): its upper and middle zones and the
    L1-L4 slabs hold no lung. They scored 0 with status ok and no flag (0 of 0 mL is no involvement)."""
    hu, lungs, classes = phantom(right_slices=(1, 6))
    row, zones, flags = score_scan(hu, lungs, classes, Z, 1.0, lms(**LEVELS), cfg())
    six, zh = rows(zones, "six_zone"), rows(zones, "zhang900")
    for unit in ("upper", "middle"):
        assert six[unit]["status"] == "missing" and six[unit]["lung_ml"] == 0.0
        assert math.isnan(six[unit]["unit_score"]) and math.isnan(six[unit]["involvement_pct"])
        assert f"ZONE_WITHOUT_LUNG:right_{unit}" in flags
    assert six["lower"]["status"] == "ok" and six["lower"]["lung_ml"] == 500.0
    # L1 wholly above the lung's top (the notch above an apex: normal anatomy) scores 0, as a reader of that level
    # scores it, flagged SLAB_ABOVE_APEX; L2-L4 without lung are missing like the zones
    assert zh["L1"]["status"] == "ok" and zh["L1"]["unit_score"] == 0 and zh["L1"]["lung_ml"] == 0.0
    assert "SLAB_ABOVE_APEX:right_L1" in flags and "ZONE_WITHOUT_LUNG:right_L1" not in flags
    for unit in ("L2", "L3", "L4"):
        assert zh[unit]["status"] == "missing" and zh[unit]["lung_ml"] == 0.0
        assert f"ZONE_WITHOUT_LUNG:right_{unit}" in flags
    assert zh["L5"]["status"] == "ok"
    assert not any(f.startswith(("ZONE_WITHOUT_LUNG:left", "SLAB_ABOVE_APEX:left")) for f in flags)
    assert "ZONES_MISSING" in flags
    assert math.isnan(row["six_zone_total"]) and math.isnan(row["zhang900_total"])


def test_a_lung_ending_above_the_lower_slabs_leaves_them_missing_not_zero():
    """The reviewer's case: a right lung from 100 mm up (its base lost: a collapsed lower lobe, an effusion left out of
    the mask) with the dome placed below it: L4 and L5 held no lung and scored a healthy 0 while the six-zone total was
    missing. Only L1 above the apex scores 0."""
    hu, lungs, classes = phantom(right_slices=(10, 19))
    row, zones, flags = score_scan(hu, lungs, classes, Z, 1.0, lms(**LEVELS), cfg())
    zh = rows(zones, "zhang900")
    assert zh["L5"]["status"] == "missing" and "ZONE_WITHOUT_LUNG:right_L5" in flags
    assert math.isnan(row["zhang900_total"])
    assert not any(f.startswith("SLAB_ABOVE_APEX") for f in flags)


def test_zone_mode_units_without_lung_are_missing():
    hu, lungs, classes = phantom(right_slices=(1, 6))
    config = cfg()
    config["scoring"]["zhang900"]["mode"] = "zone"
    row, zones, flags = score_scan(hu, lungs, classes, Z, 1.0, lms(**LEVELS), config)
    zh = rows(zones, "zhang900")
    assert zh["L1"]["status"] == "missing" and "ZONE_WITHOUT_LUNG:right_L1" in flags
    assert not any(f.startswith("SLAB_ABOVE_APEX") for f in flags) and math.isnan(row["zhang900_total"])
    # the lung is not cut off: the missing zones are not the scan's coverage
    assert row["apex_covered"] is True and "PARTIAL_LUNG_COVERAGE" not in flags


def test_an_ipv_below_the_bases_leaves_the_lower_zones_missing():
    hu, lungs, classes = phantom()
    row, zones, flags = score_scan(hu, lungs, classes, Z, 1.0, lms(**dict(LEVELS, ipv=5.0)), cfg())
    for side in ("right", "left"):
        low = rows(zones, "six_zone", side)["lower"]
        assert low["status"] == "missing" and low["lung_ml"] == 0.0
        assert f"ZONE_WITHOUT_LUNG:{side}_lower" in flags
    assert math.isnan(row["six_zone_total"]) and "ZONES_MISSING" in flags
    assert row["zhang900_total"] == 0  # the slabs all hold lung


def test_a_zone_holding_little_of_its_lung_is_scored_and_flagged():
    """The right lung reaches 3 voxels above the carina: a 3 mL upper zone with 1 mL of lesion read 33 %, grade 2,
    as if it were a zone's worth of lung, with no flag."""
    hu, lungs, classes = phantom(right_slices=(1, 12))  # up to slice 11, z = 110 = the carina (middle zone)
    lungs[12, 0, :3] = 1
    classes[12, 0, 0] = 2
    hu[12, 0, 0] = -500.0
    row, zones, flags = score_scan(hu, lungs, classes, Z, 1.0, lms(**LEVELS), cfg())
    up = rows(zones, "six_zone")["upper"]
    assert up["status"] == "ok" and up["lung_ml"] == 3.0 and up["unit_score"] == 2
    assert 100 * 3.0 / row["lung_volume_ml_right"] < ZONE_MIN_SHARE_PCT
    assert "ZONE_SMALL:right_upper" in flags and row["six_zone_total"] == 2
    assert [f for f in flags if f.startswith("ZONE_SMALL")] == ["ZONE_SMALL:right_upper"]
    # the L1 and L2 slabs (170, 140 mm) lie above the right lung: L1 scores 0 (above the apex), L2 is missing
    assert {f for f in flags if f.startswith(("ZONE_WITHOUT_LUNG", "SLAB_ABOVE_APEX"))} == {
        "SLAB_ABOVE_APEX:right_L1", "ZONE_WITHOUT_LUNG:right_L2"}


def test_zones_of_a_whole_lung_are_not_flagged():
    hu, lungs, classes = phantom()
    row, _, flags = score_scan(hu, lungs, classes, Z, 1.0, lms(**LEVELS), cfg())
    assert not [f for f in flags if f.startswith("ZONE")] and row["six_zone_total"] == 0


# ------------------------------------------------------------------ 2. a slab holds the same slices wherever its level


@pytest.mark.parametrize("step, n", [(5.0, 2), (2.5, 4), (1.25, 8), (1.0, 10)])
def test_slab_holds_the_same_number_of_slices_with_its_level_on_a_slice_centre_or_off_it(step, n):
    """5 mm slices, L3 +- 5 mm: 3 slices with the level exactly on a slice centre, 2 just off it."""
    z = np.arange(int(200 / step), dtype=float) * step
    for level in (100.0, 100.0 + 1e-3, 100.0 - 1e-3, 100.0 + step / 4, 100.0 + step / 2, 100.0 - step / 2):
        iv = zhang_intervals([None, None, level, None, None], "slab", 5.0)["L3"]
        assert int(iv.mask(z).sum()) == n, level


def test_slab_widened_to_the_slice_step_holds_exactly_one_slice():
    """12 mm slices: the slab is widened to +-6 mm (at least one slice step thick, scoring.quantify._zone_scores);
    with the level midway between two slices both lay on its edges and it took both."""
    z = np.arange(20, dtype=float) * 12.0
    for level in (114.0, 114.0 + 1e-3, 120.0, 110.0):
        iv = zhang_intervals([None, None, level, None, None], "slab", 6.0)["L3"]
        assert int(iv.mask(z).sum()) == 1, level


def test_slab_volume_does_not_depend_on_where_the_level_falls_on_the_grid():
    z5 = np.arange(40, dtype=float) * 5.0
    lungs = np.zeros((len(z5), 10, 20), np.uint8)
    lungs[1:39, :, :10], lungs[1:39, :, 10:] = 1, 2
    classes, hu = np.zeros(lungs.shape, np.uint8), np.full(lungs.shape, -850.0)
    base = dict(LEVELS, ipv=60.0, dome_right=30.0, dome_left=30.0)
    l3 = []
    for carina in (110.0, 110.0 + 1e-3, 111.25, 112.5):
        _, zones, _ = score_scan(hu, lungs, classes, z5, 1.0, lms(**dict(base, carina=carina)), cfg())
        l3.append(rows(zones, "zhang900")["L3"]["lung_ml"])
    assert l3 == [200.0] * 4  # two 5 mm slices of 100 voxels


# ------------------------------------------------------------------ 3. the carina note of a short trachea


def _airway(nz: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """Trachea in slices 60..119, two main bronchi 40..59 (1.5 mm slices)."""
    z = np.arange(nz) * 1.5 - 100.0
    airway = np.zeros((nz, 60, 60), bool)
    airway[60:, 28:33, 28:33] = True
    airway[40:60, 28:33, 18:23] = True
    airway[40:60, 28:33, 38:43] = True
    return airway, z


def test_a_scan_starting_close_above_the_carina_says_its_trachea_is_too_short():
    """10 slices (15 mm) of trachea above the division, under the 20 mm minimum: the note said "airway never
    divides"."""
    airway, z = _airway()
    sp = (1.5, 1.5, 1.5)
    c = detect_carina(airway[:70], z[:70], sp)
    assert c.method == "missing" and c.z_mm is None
    assert "never divides" not in c.note
    assert "shorter than the minimum" in c.note and "15.0 mm" in c.note and "20 mm" in c.note
    assert "scan's top slice" in c.note and f"z = {z[60]:.1f} mm" in c.note
    # detection itself is unchanged: with 20 mm of trachea the carina is found
    assert detect_carina(airway[:74], z[:74], sp).z_mm == pytest.approx(z[60])
    # an airway that does not divide keeps its note
    assert detect_carina(airway[60:], z[60:], sp).note == "airway never divides"


# ------------------------------------------------------------------ 4. documents


def test_scoring_doc_gives_the_clavicular_heads_offset_the_code_uses():
    offset = inspect.signature(_clavicular_heads).parameters["max_offset_mm"].default
    doc = (REPO / "docs" / "scoring.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| suprasternal_notch"))
    assert f"the gap's centre within {offset:g} mm" in row


def test_scoring_doc_does_not_call_slice_centre_zoning_exact():
    doc = " ".join((REPO / "docs" / "scoring.md").read_text().split())
    assert "exact for axial slices" not in doc
    assert "half a slice" in doc and "ricord_covid_419639" in doc


def test_the_phantoms_truth_follows_both_rules():
    """pipeline.phantom.score_truth, the sample's independent ground truth: a unit without lung is missing (None) but
    L1 above the apex (0), a slab half-open; it agrees with the scorer unit by unit."""
    from pipeline import phantom as P

    hu, lungs, classes = phantom(right_slices=(1, 6))
    truth = P.score_truth(lungs, classes, Z, dict(LEVELS), 1.0)
    assert truth["six_zone"]["right_upper"] is None and truth["six_zone"]["right_lower"] == 0
    assert truth["zhang900"]["right_L1"] == 0 and truth["zhang900"]["right_L2"] is None
    assert truth["zhang900_total"] is None
    _, zones, _ = score_scan(hu, lungs, classes, Z, 1.0, lms(**LEVELS), load_config())
    for r in zones:
        if r["system"] in ("six_zone", "zhang900"):
            score = truth[r["system"]][f"{r['lung']}_{r['unit']}"]
            assert (score is None) == (r["status"] == "missing"), r["unit"]
            assert score is None or score == r["unit_score"]
    z5 = np.arange(40, dtype=float) * 5.0
    lungs5 = np.zeros((len(z5), 10, 20), np.uint8)
    lungs5[1:39, :, :10], lungs5[1:39, :, 10:] = 1, 2
    detail = P.score_truth(lungs5, np.zeros_like(lungs5), z5, dict(LEVELS, carina=110.0), 1.0)["detail"]
    assert detail["zhang900/right_L3"]["lung_ml"] == 200.0  # 105 and 110, not 115


def test_the_mosmed_category_follows_the_percentage_as_written():
    """62,499 lesion voxels in 250,000 lung voxels: 24.9996 % was written 25.0 beside CT-1 (a review)."""
    lungs = np.zeros((10, 250, 100), np.uint8)
    lungs[:, :, :50] = 1
    lungs[:, :, 50:] = 2
    classes = np.zeros(lungs.shape, np.uint8)
    classes.reshape(-1)[np.flatnonzero(lungs.reshape(-1))[:62_499]] = 2
    hu = np.where(classes > 0, -500.0, -850.0)
    z = np.arange(10, dtype=float)
    row, _, _ = score_scan(hu, lungs, classes, z, 0.001, {}, cfg())
    assert row["percent_opacity"] == 25.0 and row["mosmed_category"] == "CT-2"


def test_scans_count_the_units_at_a_rules_edge():
    """zones.csv's near_edge named the units whose score a fraction of a voxel can change; scans.csv now counts them per
    total (a reader working from scans.csv alone could not tell a firm total from a fragile one)."""
    hu, lungs, classes = phantom()
    classes[15, 0, :2] = 2  # 2 mL of ground glass in the 700 mL right upper zone: 0.29 %, at the 0.25 % minimum
    hu[15, 0, :2] = -500.0
    row, zones, _ = score_scan(hu, lungs, classes, Z, 1.0, lms(**LEVELS), load_config())
    near = {(r["system"], r["lung"], r["unit"]) for r in zones if r["near_edge"]}
    assert ("six_zone", "right", "upper") in near
    assert row["six_zone_near_edge"] == sum(1 for s, _, _ in near if s == "six_zone") >= 1
    assert row["zhang900_near_edge"] == sum(1 for s, _, _ in near if s == "zhang900")
    _, _, classes_none = phantom()
    row, _, _ = score_scan(hu, lungs, classes_none, Z, 1.0, lms(**dict(LEVELS, ipv=None)), load_config())
    assert math.isnan(row["six_zone_total"]) and math.isnan(row["six_zone_near_edge"])
