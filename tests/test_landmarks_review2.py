"""Second landmark review: defects found on unusual but legal inputs, each with a test that failed before the fix."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.landmarks import detect_carina, detect_landmarks
from segmentation.base import LEFT_LUNG, RIGHT_LUNG
from tests.test_landmarks import SP, synthetic


@pytest.fixture(scope="module")
def phantom():
    """The chest phantom without lesions (truth: carina 0, notch 67, right dome -110, left dome -125 mm)."""
    from pipeline.phantom import make_phantom

    ph = make_phantom(lesions=None, seed=0)
    return ph.hu, ph.lungs, ph.airway, ph.z_mm, tuple(float(s) for s in ph.spacing), ph.landmarks_z_mm


def _raise_floor(hu, lungs, z, sp, side, mm, below=-85.0):
    """That lung's diaphragm (columns whose floor is below ``below`` mm) raised by ``mm``: an eventration."""
    hu, lungs = hu.copy(), lungs.copy()
    m = lungs == side
    floor = np.argmax(m, axis=0)
    diaphragm = m.any(axis=0) & (z[floor] < below)
    k = np.arange(lungs.shape[0])[:, None, None]
    cut = m & (k < (floor + int(round(mm / sp[0])))[None]) & diaphragm[None]
    hu[cut], lungs[cut] = 60.0, 0
    return hu, lungs


def test_left_dome_without_a_right_lung(phantom):
    """A right lung collapsed, not segmented or removed: the left lung's heart columns were read 0-20 mm above the
    right dome, so without a right dome nothing was excluded and the left dome came out at the top of the heart
    (-47.5 mm, 78 mm too high), with the IPV 40 mm too high; normal001 with its right lung removed from the mask:
    49 mm too high (now as on the whole mask). The heart border is now read above the left lung's own median floor."""
    hu, lungs, air, z, sp, truth = phantom
    hu, lungs = hu.copy(), lungs.copy()
    hu[lungs == RIGHT_LUNG], lungs[lungs == RIGHT_LUNG] = 40.0, 0
    lm = detect_landmarks(lungs, air, z, sp, hu=hu)
    assert lm["dome_left"].method == "detected"
    assert abs(lm["dome_left"].z_mm - truth["dome_left"]) <= 6.0, lm["dome_left"]
    assert lm["dome_right"].method == "estimated"  # from the left one
    assert lm["ipv"].z_mm < -55.0, lm["ipv"]


def test_left_dome_with_a_right_dome_much_higher(phantom):
    """Right eventration (right dome 70 mm up): the slab read for the left heart border lay above the heart, and the
    left dome was again the heart's top (-47.5 mm instead of -125)."""
    hu, lungs, air, z, sp, truth = phantom
    hu, lungs = _raise_floor(hu, lungs, z, sp, RIGHT_LUNG, 70.0)
    lm = detect_landmarks(lungs, air, z, sp, hu=hu)
    assert abs(lm["dome_right"].z_mm - (truth["dome_right"] + 70.0)) <= 6.0, lm["dome_right"]
    assert abs(lm["dome_left"].z_mm - truth["dome_left"]) <= 6.0, lm["dome_left"]


def test_left_dome_higher_than_the_right(phantom):
    """Left hemidiaphragm 50 mm up (above the right one): the slab 0-20 mm above the right dome lay below the left
    dome, where the left lung is only its recess rim; the dome's own columns were excluded as heart (-100 mm
    instead of -75)."""
    hu, lungs, air, z, sp, truth = phantom
    hu, lungs = _raise_floor(hu, lungs, z, sp, LEFT_LUNG, 50.0)
    lm = detect_landmarks(lungs, air, z, sp, hu=hu)
    assert abs(lm["dome_left"].z_mm - (truth["dome_left"] + 50.0)) <= 6.0, lm["dome_left"]
    assert abs(lm["dome_right"].z_mm - truth["dome_right"]) <= 6.0, lm["dome_right"]


def test_notch_above_the_scan_is_not_estimated_inside_it(phantom):
    """A tall patient (phantom scaled 1.3: notch at 87 mm) scanned from 80 mm down: the manubrium reaches the top
    slice, and the notch was estimated at carina + 64 mm, 16 mm inside the scan, where the L1 slab was then scored.
    The notch is above the scan: missing."""
    hu, lungs, air, z, sp, truth = phantom
    s = 1.3
    z, sp = z * s, tuple(v * s for v in sp)
    full = detect_landmarks(lungs, air, z, sp, hu=hu)
    assert abs(full["suprasternal_notch"].z_mm - truth["suprasternal_notch"] * s) <= 3.0
    k = int(np.searchsorted(z, 80.0))
    lm = detect_landmarks(lungs[:k], air[:k], z[:k], sp, hu=hu[:k])
    assert lm["carina"].method == "detected"
    notch = lm["suprasternal_notch"]
    assert notch.z_mm is None or notch.z_mm > z[k - 1], notch
    assert notch.method == "missing" and "top of the scan" in notch.note


@pytest.mark.parametrize("lost", [(62, 65), (70, 76)])
def test_carina_found_across_a_short_airway_gap(lost):
    """The lumen lost for a few slices above the carina (secretions, a tube's cuff, a threshold losing it for a
    slice or two): the trachea's length was counted anew below the gap, the division below it was rejected as too
    close to the top, and the carina was missing (estimated from lung extent, 21 mm off on the phantom)."""
    airway, _, z = synthetic()
    airway[lost[0]:lost[1]] = False
    c = detect_carina(airway, z, SP)
    assert c.method == "detected" and c.z_mm == pytest.approx(z[60])


def test_long_airway_gap_still_restarts_the_trachea():
    """A lumen lost over more than 10 mm is not bridged: what lies below must again be 20 mm of one lumen."""
    airway, _, z = synthetic()
    airway[61:75] = False  # 21 mm lost just above the division: 1 slice of trachea left
    assert detect_carina(airway, z, SP).method == "missing"
