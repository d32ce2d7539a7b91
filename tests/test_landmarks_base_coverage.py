"""Apex/base landmarks and the scan's lung coverage decide "cut off by the scan" by one rule on one mask.

The base landmark used to follow aerated tissue (HU < -400) up to 15 mm below the lung mask, so gas under the lung
(a stomach bubble) that reached the bottom slice made result.json / levels.png say "base cut off by the scan" while
scans.csv said base_covered=True, no PARTIAL_LUNG_COVERAGE, and the lower zones were scored (3 of 6 real scans).
Now "cut off" is decided by :func:`scoring.landmarks.lung_ends` on the segmenter's lung mask for both, and
:func:`scoring.quantify.score_scan` settles the apex/base landmarks on its own (original-grid) mask; the base's z still
follows recess tips that end inside the scan, and is the mask's own, with low confidence, where gas runs on below.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import load_config
from scoring.landmarks import Landmark, detect_landmarks, lung_ends, uncertain_flags
from scoring.quantify import edge_cut, score_scan
from segmentation.base import LEFT_LUNG, RIGHT_LUNG

SP = (1.5, 1.5, 1.5)
VOXEL_ML = float(np.prod(SP)) / 1000.0
NZ = 120
Z = np.arange(NZ) * 1.5 - 100.0


def chest(left_floor: int = 20, right_floor: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Airway (trachea 60..119, bronchi 40..59), lungs up to slice 109, HU -850 in the lungs and 40 elsewhere."""
    airway = np.zeros((NZ, 60, 60), bool)
    airway[60:, 28:33, 28:33] = True
    airway[40:60, 28:33, 18:23] = True
    airway[40:60, 28:33, 38:43] = True
    lungs = np.zeros(airway.shape, np.uint8)
    lungs[right_floor:110, 10:50, 2:25] = RIGHT_LUNG
    lungs[left_floor:110, 10:50, 36:58] = LEFT_LUNG
    hu = np.where(lungs > 0, -850.0, 40.0)
    hu[airway] = -1000.0
    return airway, lungs, hu


def stomach_bubble_chest() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The left lung's floor 9 mm above the scan's bottom slice, a gas bubble under it down to that slice."""
    airway, lungs, hu = chest(left_floor=6)
    hu[0:6, 20:40, 40:55] = -1000.0  # stomach gas touching the left lung's floor, reaching slice 0
    return airway, lungs, hu


def test_gas_under_the_lung_does_not_cut_the_base_off():
    airway, lungs, hu = stomach_bubble_chest()
    assert edge_cut(lungs == LEFT_LUNG, Z, VOXEL_ML) == (False, False)  # the coverage: not cut
    lm = detect_landmarks(lungs, airway, Z, SP, hu=hu)
    assert lm["base_left"].method == "detected", lm["base_left"].note
    assert lm["base_left"].z_mm == pytest.approx(Z[6])  # the lung mask's lowest slice, not the bubble's
    assert lm["base_left"].confidence == "low" and "may lie below the scan" in lm["base_left"].note
    assert uncertain_flags(lm) == ["LANDMARK_UNCERTAIN:base_left"]  # the reviewer is told (0.10.0)


def test_a_lung_the_mask_ends_above_the_bottom_slice_is_flagged_uncertain():
    """The network leaves the last slices of a lung cut by the scan's bottom out of its mask (itkelastix00,
    lung_pet_ct_dx_A0002). The aerated lung runs on to the bottom slice: the coverage follows the mask (covered), but
    the base is reported with low confidence and ``LANDMARK_UNCERTAIN:base_<side>`` (the lung may run out of the
    scan); a base that ends inside the scan, or one the mask itself cuts off, raises no such flag."""
    airway, lungs, hu = chest(left_floor=0, right_floor=0)  # both lungs run out of the bottom slice
    full = detect_landmarks(lungs, airway, Z, SP, hu=hu)
    assert full["base_left"].z_mm is None and full["base_right"].z_mm is None  # cut off: missing, no flag
    assert uncertain_flags(full) == []
    net = lungs.copy()
    net[:4][net[:4] == LEFT_LUNG] = 0  # the mask ends 6 mm above the bottom slice; the HU still show the lung
    lm = detect_landmarks(net, airway, Z, SP, hu=hu)
    assert edge_cut(net == LEFT_LUNG, Z, VOXEL_ML) == (False, False)
    assert lm["base_left"].z_mm == pytest.approx(Z[4]) and lm["base_left"].confidence == "low"
    assert uncertain_flags(lm) == ["LANDMARK_UNCERTAIN:base_left"]
    one = net.copy()  # the right lung ending 15 mm above the bottom slice, nothing aerated below it
    hu_one = hu.copy()
    hu_one[:10][one[:10] == RIGHT_LUNG] = 40.0
    one[:10][one[:10] == RIGHT_LUNG] = 0
    lm = detect_landmarks(one, airway, Z, SP, hu=hu_one)
    row, _, flags = score_scan(hu_one, one, np.zeros(one.shape, np.uint8), Z, VOXEL_ML, lm, load_config())
    assert row["base_covered"] and "PARTIAL_LUNG_COVERAGE" not in flags
    assert row["scan_below_lungs_mm"] == 0.0  # not the 6 mm the left mask leaves: its base may lie below the scan
    lm["base_left"].note = "bottom slice with >= 5 mm2 lung"  # were the left base sure, the mask's 6 mm would count
    row, _, _ = score_scan(hu_one, one, np.zeros(one.shape, np.uint8), Z, VOXEL_ML, lm, load_config())
    assert row["scan_below_lungs_mm"] == 6.0
    tip = lungs.copy()
    tip[:8][tip[:8] == LEFT_LUNG] = 0
    tip[4:8, 20:22, 40:42] = LEFT_LUNG  # the mask ends in a 4-voxel tip...
    hu_tip = hu.copy()
    hu_tip[4:8, 19:23, 39:43] = 40.0  # ...lying in dense tissue, the aerated lung beside it running on to slice 0
    hu_tip[4:8, 20:22, 40:42] = 40.0
    assert uncertain_flags(detect_landmarks(tip, airway, Z, SP, hu=hu_tip)) == ["LANDMARK_UNCERTAIN:base_left"]
    speck = net.copy()
    speck[0:4, 20, 40] = LEFT_LUNG  # and a speck of the mask (2.25 mm2 a slice) down to the bottom slice
    lm = detect_landmarks(speck, airway, Z, SP, hu=hu)
    assert edge_cut(speck == LEFT_LUNG, Z, VOXEL_ML) == (False, False)
    assert uncertain_flags(lm) == ["LANDMARK_UNCERTAIN:base_left"]  # followed from the slice that holds the lung
    airway, lungs, hu = chest()  # both bases inside the scan, nothing aerated below them
    assert uncertain_flags(detect_landmarks(lungs, airway, Z, SP, hu=hu)) == []


def test_the_base_follows_aerated_recess_tips_that_end_inside_the_scan():
    """Aerated tissue below the mask that stops short of the bottom slice (the costophrenic recess tips the mask
    leaves out) still places the base, as calibrated on reference.csv; coverage is the mask's."""
    airway, lungs, hu = chest()
    hu[4:10, 15:45, 5:20] = -700.0  # aerated, under the right lung's floor (slice 10), not reaching slice 0
    lm = detect_landmarks(lungs, airway, Z, SP, hu=hu)
    assert lm["base_right"].method == "detected" and lm["base_right"].confidence == "high"
    assert lm["base_right"].z_mm == pytest.approx(Z[4])
    assert lm["base_left"].z_mm == pytest.approx(lung_ends(lungs == LEFT_LUNG, Z, VOXEL_ML)[1])
    for side, name in ((RIGHT_LUNG, "right"), (LEFT_LUNG, "left")):
        assert lm[f"apex_{name}"].z_mm == lung_ends(lungs == side, Z, VOXEL_ML)[0]


@pytest.mark.parametrize("case", ["bubble", "cut_right", "cut_both", "cut_left_apex"])
def test_landmarks_coverage_and_zones_agree(case):
    """result.json's apex/base, scans.csv's apex_covered/base_covered, PARTIAL_LUNG_COVERAGE and the zones' missing
    status say the same thing, scan by scan."""
    airway, lungs, hu = stomach_bubble_chest() if case == "bubble" else chest()
    if case in ("cut_right", "cut_both"):
        lungs[0:10, 10:50, 2:25] = RIGHT_LUNG  # the right lung runs out of the bottom slice
        hu[lungs > 0] = -850.0
    if case == "cut_both":
        lungs[0:20, 10:50, 36:58] = LEFT_LUNG
        hu[lungs > 0] = -850.0
    if case == "cut_left_apex":
        lungs[110:, 10:50, 36:58] = LEFT_LUNG
        hu[lungs > 0] = -850.0
    lm = detect_landmarks(lungs, airway, Z, SP, hu=hu)
    row, zones, flags = score_scan(hu, lungs, np.zeros(lungs.shape, np.uint8), Z, VOXEL_ML, lm, load_config())
    missing = {name: [lm[f"{end}_{name}"].method == "missing" for end in ("apex", "base")]
               for name in ("right", "left")}
    assert row["apex_covered"] == (not any(m[0] for m in missing.values()))
    assert row["base_covered"] == (not any(m[1] for m in missing.values()))
    assert ("PARTIAL_LUNG_COVERAGE" in flags) == (not (row["apex_covered"] and row["base_covered"]))
    for name, (apex_missing, base_missing) in missing.items():
        six = {r["unit"]: r["status"] for r in zones if r["system"] == "six_zone" and r["lung"] == name}
        assert (six["lower"] == "missing") == base_missing, (name, lm[f"base_{name}"])
        assert (six["upper"] == "missing") == apex_missing, (name, lm[f"apex_{name}"])
        for end, gone in (("apex", apex_missing), ("base", base_missing)):
            if gone:
                assert lm[f"{end}_{name}"].note == f"{end} cut off by the scan"
    expected = {"bubble": (True, True), "cut_right": (True, False), "cut_both": (True, False),
                "cut_left_apex": (False, True)}[case]
    assert (row["apex_covered"], row["base_covered"]) == expected
    # how far the scan reaches beyond the lungs (slice centres; 0 at a cut-off end, and where the base may lie below
    # the scan: the bubble): lungs up to slice 109 of 120, the right floor at slice 10
    above = {"bubble": 15.0, "cut_right": 15.0, "cut_both": 15.0, "cut_left_apex": 0.0}[case]
    below = {"bubble": 0.0, "cut_right": 0.0, "cut_both": 0.0, "cut_left_apex": 15.0}[case]
    assert (row["scan_above_lungs_mm"], row["scan_below_lungs_mm"]) == (above, below)


def test_score_scan_settles_levels_found_on_another_grid():
    """The levels come from the working grid, the coverage from the original one: where the two disagree (an edge
    slice interpolated differently), score_scan's decision on its own mask is what the landmarks report."""
    _, lungs, hu = chest(left_floor=6)
    lm = {"apex_right": Landmark("apex_right", float(Z[109]), "detected", "high", "top slice with >= 5 mm2 lung"),
          "base_right": Landmark("base_right", float(Z[10]), "detected", "high", "bottom slice with >= 5 mm2 lung"),
          "apex_left": Landmark("apex_left", float(Z[109]), "detected", "high", "top slice with >= 5 mm2 lung"),
          "base_left": Landmark("base_left", None, "missing", "low", "base cut off by the scan")}
    lungs[0:10, 10:50, 2:25] = RIGHT_LUNG  # on this grid the right lung reaches the bottom slice
    row, _, flags = score_scan(hu, lungs, np.zeros(lungs.shape, np.uint8), Z, VOXEL_ML, lm, load_config())
    assert row["base_covered"] is False and "PARTIAL_LUNG_COVERAGE" in flags
    assert lm["base_right"].method == "missing" and lm["base_right"].z_mm is None
    assert lm["base_right"].note == "base cut off by the scan"
    assert lm["base_left"].method == "detected" and lm["base_left"].z_mm == pytest.approx(Z[6])
    assert lm["apex_right"].z_mm == pytest.approx(Z[109]) and lm["apex_left"].method == "detected"


def test_one_rule_in_either_slice_order():
    """edge_cut is lung_ends' cut-off test; a stack whose z falls with the index has its ends swapped."""
    _, lungs, _ = chest()
    lungs[0:10, 10:50, 2:25] = RIGHT_LUNG
    right = lungs == RIGHT_LUNG
    assert lung_ends(right, Z, VOXEL_ML) == (pytest.approx(Z[109]), pytest.approx(Z[0]), False, True)
    assert edge_cut(right, Z, VOXEL_ML) == (False, True)
    assert lung_ends(right[::-1], Z[::-1], VOXEL_ML)[2:] == (False, True)
    assert edge_cut(right[::-1], Z[::-1], VOXEL_ML) == (False, True)


def test_levels_estimated_by_design_raise_no_flag():
    """Every scan carried LANDMARK_ESTIMATED for the bronchus intermedius, the aortic arch and the three IPV levels
    (estimated on every scan by design), so 'scans with QC flags' selected every scan and buried the estimates that
    are a detector's fallback. Those are flagged; the by-design ones keep method 'estimated' in result.json only."""
    from scoring.landmarks import ESTIMATED_BY_DESIGN, estimated_flags

    airway, lungs, hu = chest()
    lm = detect_landmarks(lungs, airway, Z, SP, hu=hu)
    assert {k for k, v in lm.items() if v.method == "estimated"} >= ESTIMATED_BY_DESIGN
    assert estimated_flags({k: lm[k] for k in ESTIMATED_BY_DESIGN}) == []
    fallback = {k: lm[k] for k in ESTIMATED_BY_DESIGN}
    fallback["carina"] = Landmark("carina", 10.0, "estimated", "low", "from lung extent")
    assert estimated_flags(fallback) == ["LANDMARK_ESTIMATED:carina"]
