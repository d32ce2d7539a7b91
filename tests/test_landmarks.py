"""Landmark detection: synthetic airway/lungs with known answers, and real-data accuracy (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.landmarks import CALIBRATION, detect_carina, detect_dome, detect_landmarks
from segmentation.base import LEFT_LUNG, RIGHT_LUNG

SP = (1.5, 1.5, 1.5)


def synthetic(nz: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Airway: trachea in slices 60..119, two bronchi 40..59; lungs in slices 10..110 (floor at 10)."""
    z = np.arange(nz) * 1.5 - 100.0
    airway = np.zeros((nz, 60, 60), bool)
    airway[60:, 28:33, 28:33] = True
    airway[40:60, 28:33, 18:23] = True
    airway[40:60, 28:33, 38:43] = True
    lungs = np.zeros(airway.shape, np.uint8)
    lungs[10:110, 10:50, 2:25] = RIGHT_LUNG
    lungs[20:110, 10:50, 36:58] = LEFT_LUNG
    return airway, lungs, z


def test_carina_is_last_one_lumen_slice():
    airway, _, z = synthetic()
    c = detect_carina(airway, z, SP)
    assert c.method == "detected" and c.z_mm == pytest.approx(z[60])


def test_carina_ignores_splits_above_a_long_trachea():
    airway, _, z = synthetic()
    airway[115:, 28:33, 45:50] = True  # a second lumen at the top (pharynx-like)
    assert detect_carina(airway, z, SP).z_mm == pytest.approx(z[60])


def test_no_airway_gives_estimates_from_lung_extent():
    _, lungs, z = synthetic()
    lm = detect_landmarks(lungs, None, z, SP)
    assert lm["carina"].method == "estimated"
    apex, base = z[109], z[10]
    f = CALIBRATION["carina_fraction_apex_to_base"]
    assert lm["carina"].z_mm == pytest.approx(apex - f * (apex - base))
    for name in ("suprasternal_notch", "aortic_arch", "bronchus_intermedius", "ipv"):
        assert lm[name].method == "estimated"


def test_levels_and_methods_from_masks():
    airway, lungs, z = synthetic()
    lm = detect_landmarks(lungs, airway, z, SP)
    zc = z[60]
    assert lm["aortic_arch"].z_mm == pytest.approx(zc + CALIBRATION["aortic_arch_from_carina_mm"])
    assert lm["apex_right"].z_mm == pytest.approx(z[109]) and lm["base_left"].z_mm == pytest.approx(z[20])
    # flat floors: the domes are half a slice below the lowest lung slice
    assert lm["dome_right"].z_mm == pytest.approx(z[10] - 0.75)
    assert lm["dome_left"].z_mm == pytest.approx(z[20] - 0.75)
    assert lm["ipv"].z_mm < zc and lm["ipv"].method == "estimated"


def test_lung_cut_by_the_scan_is_missing():
    airway, lungs, z = synthetic()
    lungs[:12] = 0
    lungs[:5, 10:50, 2:25] = RIGHT_LUNG  # right lung runs out of the bottom
    lungs[5:12, 10:50, 2:25] = RIGHT_LUNG
    lm = detect_landmarks(lungs, airway, z, SP)
    assert lm["base_right"].method == "missing" and lm["base_right"].z_mm is None


def test_stray_voxels_in_the_edge_slice_do_not_cut_the_lung_off():
    airway, lungs, z = synthetic()
    lungs[0:3, 20, 5] = LEFT_LUNG  # a stray voxel column (< 5 mm2 per slice) down to the first slice
    lm = detect_landmarks(lungs, airway, z, SP)
    assert lm["base_left"].method == "detected" and lm["base_left"].z_mm == pytest.approx(z[20])


def test_left_dome_ignores_columns_over_the_heart():
    _, lungs, z = synthetic()
    lung = lungs == LEFT_LUNG
    lung[:60, 10:30, 36:45] = False  # lung lies on a "heart" (medial-anterior) up to slice 60
    excl = np.zeros(lung.shape[1:], bool)
    excl[10:30, 36:45] = True
    assert detect_dome(lung, "dome_left", z, exclude=excl).z_mm == pytest.approx(z[20] - 0.75)


def test_domes_are_read_where_the_aerated_lung_ends():
    """A mask that takes in dense tissue under the aerated lung (the network's mask took 10-16 mm of the liver's
    dome) does not move the dome below the diaphragm: in a column holding aerated lung the floor is its lowest
    aerated voxel. A column of airless lung keeps its mask's floor, and without HU the whole mask counts."""
    from scoring.landmarks import DOME_AERATED_HU, diaphragm_lung

    airway, lungs, z = synthetic()
    hu = np.where(lungs > 0, -850.0, 40.0)
    liver = np.zeros(lungs.shape, bool)
    liver[2:10, 10:50, 2:25] = True  # 12 mm of soft tissue under the whole right floor, taken as right lung
    lungs[liver] = RIGHT_LUNG
    lm = detect_landmarks(lungs, airway, z, SP, hu=hu)
    assert lm["dome_right"].z_mm == pytest.approx(z[10] - 0.75)  # where the aerated lung ends
    assert lm["base_right"].z_mm == pytest.approx(z[2])  # the base stays the mask's lowest slice
    assert detect_landmarks(lungs, airway, z, SP)["dome_right"].z_mm == pytest.approx(z[2] - 0.75)  # no HU
    # a column of airless lung (consolidation on the diaphragm) keeps all its lung, down to the mask's floor; an
    # aerated column only its aerated voxels
    hu[:, 15:25, 5:15] = 30.0
    m = diaphragm_lung(lungs == RIGHT_LUNG, hu)
    assert m[2:110, 20, 10].all()
    assert not m[2:10, 40, 10].any() and m[10:110, 40, 10].all()
    assert not (m & (hu >= DOME_AERATED_HU))[:, 30:].any()


def test_scan_stopping_above_the_diaphragm_has_no_dome():
    """Cut above the diaphragm, the lung runs out of the bottom slice over most of its floor; what is left
    (a floor under the upper lobe, here over a "heart") is not a dome: both domes, and the inferior pulmonary
    vein estimated from them, are missing instead of placed high up."""
    airway, lungs, z = synthetic()
    lungs[:70, 10:22, 2:25] = 0  # right lung lies on something (anterior) up to slice 70
    cut = slice(40, None)  # the scan starts at slice 40: above both lung floors (10 and 20)
    lm = detect_landmarks(lungs[cut], airway[cut], z[cut], SP)
    assert lm["dome_right"].method == "missing" and lm["dome_left"].method == "missing"
    assert "below the scan" in lm["dome_right"].note
    assert lm["ipv"].z_mm is None
    full = detect_landmarks(lungs, airway, z, SP)  # the whole scan: domes found at the floors
    assert full["dome_right"].z_mm == pytest.approx(z[10] - 0.75) and full["dome_left"].method == "detected"


def test_recess_tips_are_not_followed_past_the_first_slice():
    """A lung reaching slice 0: the downward search for aerated recess tips stops there and does not wrap
    round to the top slice (air above the shoulders was taken as lung, and the apex reported cut off)."""
    from scoring.landmarks import aerated_lung

    _, lungs, _ = synthetic()
    lungs[:10, 10:50, 2:25] = RIGHT_LUNG  # right lung down to slice 0
    hu = np.where(lungs > 0, -850.0, 40.0)
    hu[-1] = -1000.0  # air all over the top slice
    m = aerated_lung(lungs, hu, RIGHT_LUNG, spacing=SP)
    assert not m[-1].any() and m[0].any()


@pytest.mark.slow
def test_normal001_carina_within_3mm(shared_data):
    from tests.conftest import require

    scan = require(shared_data / "chest" / "normal001")
    from scripts.landmark_accuracy import evaluate, read_reference

    ref = read_reference(require(shared_data / "landmarks" / "reference.csv"))
    res = evaluate({"normal001": ref["normal001"]}, scan.parent, cache=None)
    assert abs(res["carina"]["errors"][0]) <= 3.0
