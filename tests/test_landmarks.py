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


def domed() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`synthetic` with a right dome: the right lung's floor at slice 40 over the central columns (y 20-39,
    x 8-18), at 10 elsewhere; HU -850 in the lungs, 40 outside."""
    airway, lungs, z = synthetic()
    lungs[10:40, 20:40, 8:19] = 0
    return airway, lungs, z, np.where(lungs > 0, -850.0, 40.0)


def test_a_lens_of_dense_tissue_under_the_dome_makes_the_dome_uncertain():
    """The network's mask bulged 10-16 mm into the liver's dome under the aerated lung (ricord_covid_419639,
    normal001): read from the whole mask, the right dome lay up to 15.8 mm too low. Consolidation the mask rightly
    keeps looks the same, so the dome is still read from the mask; a second reading over the lens (a patch of columns
    with 3-25 mm of dense tissue under the aerated lung, inside the lung's edge) more than 5 mm higher makes it
    uncertain: low confidence, both readings in its note, LANDMARK_UNCERTAIN. The mask itself is not changed."""
    from scoring.landmarks import apply_reader_levels, uncertain_flags

    airway, lungs, z, hu = domed()
    lm = detect_landmarks(lungs, airway, z, SP, hu=hu)
    assert lm["dome_right"].z_mm == pytest.approx(z[40] - 0.75) and uncertain_flags(lm) == []
    lungs[32:40, 20:40, 8:19] = RIGHT_LUNG  # 12 mm of the liver's dome taken in as lung, HU 40
    lm = detect_landmarks(lungs, airway, z, SP, hu=hu)
    assert lm["dome_right"].z_mm == pytest.approx(z[32] - 0.75)  # the mask's floor, as before
    assert lm["dome_right"].confidence == "low" and lm["dome_left"].confidence != "low"
    assert "12 mm higher" in lm["dome_right"].note and "6 mL of dense tissue" in lm["dome_right"].note
    assert lm["dome_right"].to_dict()["second_z_mm"] == pytest.approx(z[40] - 0.75)  # drawn dotted in levels.png
    assert "second_z_mm" not in lm["dome_left"].to_dict()
    assert uncertain_flags(lm) == ["LANDMARK_UNCERTAIN:dome_right"]
    apply_reader_levels(lm, {"dome_right": float(z[40] - 0.75)}, "review sheet")  # a reader settles it: no flag
    assert uncertain_flags(lm) == [] and lm["dome_right"].ctscore_confidence == "low"
    lm = detect_landmarks(lungs, airway, z, SP, hu=hu)
    assert lm["base_right"].z_mm == pytest.approx(z[10])
    assert (lungs == RIGHT_LUNG)[32:40, 20:40, 8:19].all()
    assert uncertain_flags(detect_landmarks(lungs, airway, z, SP)) == []  # no HU, no second reading
    lungs[37:40, 20:40, 8:19] = RIGHT_LUNG
    lungs[32:37, 20:40, 8:19] = 0  # 4.5 mm: within DOME_UNCERTAIN_MM, not flagged
    assert uncertain_flags(detect_landmarks(lungs, airway, z, SP, hu=hu)) == []
    lungs[20:40, 20:40, 8:19] = RIGHT_LUNG  # 30 mm of dense lung under the aerated: not a lens, not flagged
    assert uncertain_flags(detect_landmarks(lungs, airway, z, SP, hu=hu)) == []


def test_a_basal_consolidation_is_not_a_lens():
    """An airless band over the whole base (a basal consolidation the mask keeps as lung) reaches the lung's edge:
    not a lens, so the second reading equals the first and the dome is not flagged. A column without aerated lung
    keeps its lung too."""
    from scoring.landmarks import diaphragm_lung, uncertain_flags

    airway, lungs, z, hu = domed()
    right = lungs == RIGHT_LUNG
    floor = np.argmax(right, axis=0)
    k = np.arange(lungs.shape[0])[:, None, None]
    band = right & (k < floor[None] + 10)  # 15 mm of airless lung above every column's floor
    hu[band] = 30.0
    lm = detect_landmarks(lungs, airway, z, SP, hu=hu)
    assert lm["dome_right"].z_mm == pytest.approx(z[40] - 0.75) and uncertain_flags(lm) == []
    assert np.array_equal(diaphragm_lung(right, hu, SP), right)
    hu[:, 30, 15] = 30.0  # one column airless from top to floor: it keeps all its lung
    assert diaphragm_lung(right, hu, SP)[:, 30, 15].sum() == right[:, 30, 15].sum()


def test_the_partial_volume_interface_is_left_out_of_the_floor():
    """Up to 3 mm of dense lung under the aerated lung is the lung-diaphragm interface: the floor is the aerated
    lung's, lens or not (the classical masks' domes moved by at most one slice on the real chests)."""
    from scoring.landmarks import DOME_AERATED_HU, diaphragm_lung

    _, lungs, _, hu = domed()
    right = lungs == RIGHT_LUNG
    floor = np.argmax(right, axis=0)
    k = np.arange(lungs.shape[0])[:, None, None]
    hu[right & (k == floor[None])] = -200.0  # one partial-volume voxel (1.5 mm) at every column's floor
    m = diaphragm_lung(right, hu, SP)
    assert not (m & (hu >= DOME_AERATED_HU)).any()
    assert (m.sum(axis=0) == right.sum(axis=0) - right.any(axis=0)).all()


def test_arrays_of_the_wrong_shape_are_clear_errors():
    """A 2-D mask, or HU / airway of another shape than the lung mask, gave a raw numpy error (or, in the domes'
    second reading, a silently wrong mask): each is refused with what was expected."""
    airway, lungs, z = synthetic()
    hu = np.where(lungs > 0, -850.0, 40.0)
    with pytest.raises(ValueError, match="3-D"):
        detect_landmarks(lungs[0], None, z[:1], SP)
    with pytest.raises(ValueError, match="hu has shape"):
        detect_landmarks(lungs, airway, z, SP, hu=hu[:, :-1])
    with pytest.raises(ValueError, match="airway has shape"):
        detect_landmarks(lungs, airway[:-1], z, SP, hu=hu)


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
def test_normal001_carina_within_3mm(shared_data, classical_memo):
    from tests.conftest import require

    scan = require(shared_data / "chest" / "normal001")
    from scripts.landmark_accuracy import evaluate, read_reference

    ref = read_reference(require(shared_data / "landmarks" / "reference.csv"))
    res = evaluate({"normal001": ref["normal001"]}, scan.parent, cache=None)
    assert abs(res["carina"]["errors"][0]) <= 3.0
