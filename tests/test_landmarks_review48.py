"""Landmarks audit of 2026-12-07 (review 48): the domes do not move when the scan's top is cut (basal columns with a
floor in mm, not a share of the lung the scan shows), and a scan cut above the domes keeps an IPV from the carina
alone, so the middle zone it shows whole is scored. Synthetic checks first; the real chests skip when
../shared/data (or CTSCORE_TEST_DATA) is absent."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.landmarks import (
    CALIBRATION,
    DOME_BASAL_MM,
    IPV_CARINA_ONLY_NOTE,
    Landmark,
    apply_reader_levels,
    basal_columns,
    detect_dome,
    detect_landmarks,
    estimated_flags,
)
from scoring.quantify import _interval_seen
from scoring.zones import six_zone_intervals
from segmentation.base import LEFT_LUNG
from tests.test_landmarks import SP, synthetic


# ------------------------------------------------------------------------------------------ 1: basal columns
def _tall_lung(nz: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """One lung 300 mm high (1.5 mm slices): a dome (floor 40 slices up at the centre, the recesses below it) and a
    strip of columns along its medial edge (a fifth of the central ones) whose floor is 45 slices (67 mm) up, the
    lung over the heart."""
    z = np.arange(nz) * 1.5
    yy, xx = np.mgrid[0:40, 0:40]
    floor = np.clip(40 - np.hypot(yy - 20, xx - 20).astype(int), 2, None)
    floor[:, 30:40] = 45
    lung = np.arange(nz)[:, None, None] >= floor[None]
    return lung, z


def test_the_basal_columns_do_not_shrink_with_a_cut_top():
    """30 % of the lung's height as the scan shows it narrowed the basal hull when the top was cut (normal001 cut 25
    mm above the carina: the right dome 12 mm lower). A floor of DOME_BASAL_MM keeps the hull of the whole lung."""
    lung, _ = _tall_lung()
    whole = basal_columns(lung, SP[0])
    for top in (160, 120, 90, 70):  # the scan's top at 240, 180, 135, 105 mm above the lowest slice
        assert np.array_equal(basal_columns(lung[:top], SP[0]), whole), top
    # the heart's columns (floor 67 mm up) are within the floor's slab
    assert whole[20, 35] and DOME_BASAL_MM > 45 * SP[0]


def test_the_dome_does_not_move_with_a_cut_top():
    lung, z = _tall_lung()
    full = detect_dome(lung, "dome_right", z)
    assert full.method == "detected"
    for top in (160, 120, 90, 70):
        cut = detect_dome(lung[:top], "dome_right", z[:top])
        assert cut.z_mm == pytest.approx(full.z_mm), (top, cut.z_mm, full.z_mm)


def test_a_taller_lung_keeps_its_share():
    """A lung taller than DOME_BASAL_MM / 0.3 (250 mm) keeps 30 % of its height (the full-scan domes of the tall
    reference chests do not move), and never less than the floor under a cut."""
    lung, _ = _tall_lung(nz=300)  # 450 mm: 30 % is 89 slices
    ks = np.nonzero(lung.any(axis=(1, 2)))[0]
    n = int(0.3 * (ks.max() - ks.min()))
    from skimage.morphology import convex_hull_image

    assert np.array_equal(basal_columns(lung, SP[0]), convex_hull_image(lung[ks.min(): ks.min() + n + 1].any(axis=0)))


# --------------------------------------------------------------------------------- 2: IPV from the carina alone
def _cut_above_the_domes(start: int) -> dict[str, Landmark]:
    """synthetic(): carina at z[60] = -10 mm; both lungs' floors at slice 10 (-85 mm); the scan starts at slice
    ``start``, above both floors."""
    airway, lungs, z = synthetic()
    lungs[10:20, 10:50, 36:58] = LEFT_LUNG
    return detect_landmarks(lungs[start:], airway[start:], z[start:], SP)


def test_a_scan_cut_above_the_domes_keeps_an_ipv_from_the_carina():
    """normal001 cut at -200.5 mm: both domes missing, so the IPV was missing ("needs the carina and a dome") and so
    were both middle zones, which the scan showed whole (carina -120.5, IPV about -178). Now the carina offset alone,
    low confidence, flagged LANDMARK_ESTIMATED:ipv; the usual estimate keeps no flag."""
    lm = _cut_above_the_domes(15)  # the scan starts at -77.5 mm; carina - 56.7 mm = -66.7 mm is inside it
    assert lm["dome_right"].z_mm is None and lm["dome_left"].z_mm is None
    assert "the dome may lie below the scan" in lm["dome_right"].note
    for name in ("ipv_right", "ipv_left", "ipv"):
        ipv = lm[name]
        assert ipv.method == "estimated" and ipv.confidence == "low" and IPV_CARINA_ONLY_NOTE in ipv.note
        assert ipv.z_mm == pytest.approx(lm["carina"].z_mm + CALIBRATION[f"{name}_from_carina_mm"])
    flags = estimated_flags(lm)
    assert "LANDMARK_ESTIMATED:ipv" in flags
    assert not any(f.startswith(("LANDMARK_ESTIMATED:ipv_right", "LANDMARK_ESTIMATED:ipv_left")) for f in flags)
    # the middle zone lies in the scan: seen although the lungs are cut off at the bottom
    z = synthetic()[2][15:]
    iv = six_zone_intervals(lm["carina"].z_mm, lm["ipv"].z_mm)
    assert iv["middle"] is not None and _interval_seen(iv["middle"], z, False, True, slab=False)
    assert not _interval_seen(iv["lower"], z, False, True, slab=False)
    # a whole scan: the usual estimate, no flag
    airway, lungs, z_all = synthetic()
    whole = detect_landmarks(lungs, airway, z_all, SP)
    assert IPV_CARINA_ONLY_NOTE not in whole["ipv"].note and "LANDMARK_ESTIMATED:ipv" not in estimated_flags(whole)


def test_an_ipv_from_the_carina_below_the_scan_is_missing():
    lm = _cut_above_the_domes(25)  # the scan starts at -62.5 mm, above carina - 56.7 mm
    assert lm["ipv"].z_mm is None and "below the scan" in lm["ipv"].note
    assert "LANDMARK_ESTIMATED:ipv" not in estimated_flags(lm)


def test_a_readers_carina_on_a_scan_without_domes_places_the_ipv():
    lm = _cut_above_the_domes(15)
    problems = apply_reader_levels(lm, {"carina": -5.0}, "t.csv")
    assert problems == []
    assert lm["ipv"].z_mm == pytest.approx(-5.0 + CALIBRATION["ipv_from_carina_mm"])
    assert IPV_CARINA_ONLY_NOTE in lm["ipv"].note


def test_a_readers_carina_places_no_ipv_below_the_scan():
    """As detection does (z_bottom): a reader's carina whose IPV from the carina alone lies below the scan leaves the
    IPV missing, not a level outside the scan in landmarks.csv and levels.png."""
    lm = _cut_above_the_domes(25)  # the scan runs from -62.5 to 78.5 mm
    assert apply_reader_levels(lm, {"carina": -10.0}, "t.csv", z_bottom=-62.5) == []
    assert lm["ipv"].z_mm is None and "below the scan" in lm["ipv"].note
    assert "LANDMARK_ESTIMATED:ipv" not in estimated_flags(lm)


# ------------------------------------------------------------------------------------------------ real chests
@pytest.fixture(scope="module")
def normal001(shared_data) -> dict:
    from tests.conftest import require, segment_memo
    from tests.scripts_loader import load_script

    with segment_memo():
        return load_script("landmark_accuracy").working_arrays(require(shared_data / "chest" / "normal001"), None)


def _levels(a: dict, keep: np.ndarray) -> dict[str, Landmark]:
    return detect_landmarks(a["lungs"][keep], a["airway"][keep], a["z_mm"][keep],
                            tuple(float(s) for s in a["spacing"]), hu=a["hu"][keep])


@pytest.mark.slow
def test_normal001_right_dome_under_top_cuts(normal001):
    """Cut 60, 40 and 25 mm above the carina, normal001's right dome (classical masks) went 1.5, 7.5 and 13.5 mm
    lower; now within one slice of the whole scan's (its lung is 258 mm high: 30 % of it is just over the floor)."""
    a = normal001
    z = a["z_mm"]
    full = _levels(a, np.ones(len(z), bool))
    zc = full["carina"].z_mm
    for cut in (60.0, 40.0, 25.0):
        lm = _levels(a, z <= zc + cut)
        assert lm["carina"].z_mm == pytest.approx(zc)
        assert abs(lm["dome_right"].z_mm - full["dome_right"].z_mm) <= a["spacing"][0] + 1e-6, (cut, lm["dome_right"])
        assert lm["dome_left"].z_mm == pytest.approx(full["dome_left"].z_mm)


@pytest.mark.slow
def test_normal001_cut_above_the_domes_keeps_the_ipv(normal001):
    """Cut 10 mm above the whole scan's right dome (both domes then below the scan): the IPV from the carina alone,
    carina - 56.7 mm, inside the scan (the reference IPV is -177.8 mm)."""
    a = normal001
    z = a["z_mm"]
    full = _levels(a, np.ones(len(z), bool))
    keep = z >= full["dome_right"].z_mm + 10.0
    lm = _levels(a, keep)
    assert lm["dome_right"].z_mm is None and lm["dome_left"].z_mm is None
    ipv = lm["ipv"]
    assert ipv.z_mm == pytest.approx(full["carina"].z_mm + CALIBRATION["ipv_from_carina_mm"])
    assert ipv.z_mm >= z[keep].min() and abs(ipv.z_mm - (-177.8)) <= 8.0
    assert "LANDMARK_ESTIMATED:ipv" in estimated_flags(lm)
