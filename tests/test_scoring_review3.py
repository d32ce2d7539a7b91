"""Scoring-core review 3: lobes of a lung not found, lobe maps beyond the lung mask at the scan's edges, zone-mode
units next to a missing level."""

from __future__ import annotations

import math

import numpy as np

from scoring.quantify import score_scan
from scoring.zones import ZInterval, zhang_intervals
from tests.test_zones import LEVELS, Z, cfg, lms, phantom, rows

LOBE_COLUMNS = {1: (0, 2), 2: (2, 5), 3: (5, 10), 4: (10, 15), 5: (15, 20)}


def lobe_map(shape, k0: int = 1, k1: int = 19) -> np.ndarray:
    lobes = np.zeros(shape, np.uint8)
    for code, (a, b) in LOBE_COLUMNS.items():
        lobes[k0:k1, :, a:b] = code
    return lobes


def lobar(zones):
    return {r["unit"]: r for r in zones if r["system"] == "lobar"}


def test_lobes_of_a_lung_not_found_are_missing():
    """docs/scoring.md: a lung the segmentation did not find has every unit missing and the totals NaN. Its lobes
    were scored on the few stray voxels left of it (10 voxels of left lung, all lesion: left lobes 4/5 each and lobar
    totals 8/10, as if the left lung were badly diseased)."""
    hu, lungs, classes = phantom()
    lungs[:, :, 10:] = 0
    lungs[5, 0, 10:] = 2  # 10 stray voxels of left lung (0.01 mL; the right lung is 0.18 mL)
    classes[5, 0, 10:] = 2
    row, zones, flags = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg(), lobes=lobe_map(lungs.shape))
    assert "LUNG_NOT_FOUND:left" in flags
    lob = lobar(zones)
    for unit in ("left_upper", "left_lower"):
        assert lob[unit]["status"] == "missing" and math.isnan(lob[unit]["unit_score"])
        assert math.isnan(lob[unit]["extent_score"])
    for unit in ("right_upper", "right_middle", "right_lower"):
        assert lob[unit]["status"] == "ok" and lob[unit]["unit_score"] == 0
    assert math.isnan(row["lobar20_total"]) and math.isnan(row["lobar25_total"]) and "LOBES_MISSING" in flags


def test_lobe_map_reaching_an_edge_slice_the_lung_does_not_reach_is_not_cut_off():
    """A lobe map larger than the lung mask (TotalSegmentator's lobes take in pleura and hilum) reaching the scan's
    first and last slices, where the lung mask holds no lung (apex and base covered): every lobe was missing and the
    lobar totals NaN, though the lobe's lung (the lung mask inside it, the denominator) is all in the scan."""
    hu, lungs, classes = phantom({12: 5})  # lungs in slices 1..18: covered at both ends
    lobes = lobe_map(lungs.shape, 0, 20)  # the lobe map in every slice, 20-50 mm2 per lobe in slices 0 and 19
    row, zones, flags = score_scan(hu, lungs, classes, Z, 0.01, lms(**LEVELS), cfg(), lobes=lobes)
    assert row["apex_covered"] is True and row["base_covered"] is True
    lob = lobar(zones)
    assert all(r["status"] == "ok" for r in lob.values()), flags
    assert "LOBES_MISSING" not in flags
    # slice 12: 5 of 10 rows of the right lung are lesion, 1 of the lung's 18 slices: 2.8 % of each right lobe
    assert lob["right_upper"]["involvement_pct"] == round(100 * 10 / 360, 3)
    assert row["lobar20_total"] == 3 and row["lobar25_total"] == 3  # right lobes 1 and 1 each (< 5 %), left 0
    # a lobe whose lung does run out of the scan is still missing
    hu, lungs, classes = phantom(cut_top=True)
    row, zones, flags = score_scan(hu, lungs, classes, Z, 0.01, lms(**LEVELS), cfg(), lobes=lobes)
    assert lobar(zones)["right_upper"]["status"] == "missing" and math.isnan(row["lobar20_total"])


def test_zone_mode_unit_next_to_a_missing_level_is_missing():
    """zone mode: units are bounded by the midpoints between consecutive levels; L1 reaches up to the apex and L5
    down to the base. Without the dome (L5), L4 reached down to the base, status ok: it took in L5's volume and
    lesions (lung 0.9 mL instead of 0.3 mL here, a lesion at the base scored 4 x 2^2 = 16 in L4)."""
    ivs = zhang_intervals([170.0, 140.0, 110.0, 80.0, None], "zone")
    assert ivs["L4"] is None and ivs["L5"] is None
    assert ivs["L3"] == ZInterval(95.0, 125.0) and ivs["L1"] == ZInterval(155.0, math.inf)
    ivs = zhang_intervals([170.0, None, 110.0, 80.0, 30.0], "zone")
    assert ivs["L1"] is None and ivs["L2"] is None and ivs["L3"] is None
    assert ivs["L4"] == ZInterval(55.0, 95.0) and ivs["L5"] == ZInterval(-math.inf, 55.0)
    # all five levels: unchanged
    ivs = zhang_intervals([170.0, 140.0, 110.0, 80.0, 30.0], "zone")
    assert ivs["L4"] == ZInterval(55.0, 95.0) and ivs["L5"] == ZInterval(-math.inf, 55.0)

    hu, lungs, classes = phantom({2: 10})  # a lesion at the base (z = 20 mm, below the dome level)
    levels = dict(LEVELS, dome_right=None, dome_left=None)
    row, zones, flags = score_scan(hu, lungs, classes, Z, 0.001, lms(**levels), cfg(mode="zone"))
    zh = rows(zones, "zhang900")
    assert zh["L4"]["status"] == "missing" and math.isnan(zh["L4"]["unit_score"])
    assert zh["L3"]["status"] == "ok" and zh["L3"]["lung_ml"] == 0.3
    assert math.isnan(row["zhang900_total"]) and "ZONES_MISSING" in flags


def test_the_percentages_of_a_lung_not_found_are_empty_not_those_of_its_stray_voxels():
    """Its zones and lobes were missing, but percent_opacity_left / percent_high_opacity_left / mean_lung_hu_left
    were those of the 10 stray voxels (all lesion: 100 % opacity, a left lung 'fully involved'). Its volumes stay
    (what the mask holds)."""
    hu, lungs, classes = phantom()
    lungs[:, :, 10:] = 0
    lungs[5, 0, 10:] = 2
    classes[5, 0, 10:] = 3
    hu[5, 0, 10:] = 20.0
    row, _, flags = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg())
    assert "LUNG_NOT_FOUND:left" in flags
    for c in ("percent_opacity_left", "percent_high_opacity_left", "mean_lung_hu_left"):
        assert math.isnan(row[c]), (c, row[c])
    assert row["lung_volume_ml_left"] == row["lesion_volume_ml_left"] == 0.01
    assert math.isfinite(row["percent_opacity_right"]) and math.isfinite(row["mean_lung_hu_right"])
