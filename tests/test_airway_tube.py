"""An endotracheal tube in the trachea (an ICU audit): its plastic wall, 1-2 mm at about +100 HU between the tube's
lumen and the trachea's air, stopped the airway growth (0.5 of 36.6 mL on ricord_covid_419639), so the carina was
estimated 25 mm high and the classical segmenter took the air around the tube as lung. The airway is now grown again
with thin walls opened away when it stops under ``AIRWAY_RETRY_ML``."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.landmarks import detect_carina
from segmentation.classical import AIRWAY_RETRY_ML, open_thin_walls, segment_airway
from tests.conftest import require

SP = (1.5, 1.5, 1.5)
CARINA_MM = 70.0


def _chest(tube: bool) -> np.ndarray:
    """A body with two lungs, a trachea of 9 mm radius down to the carina at 70 mm and two main bronchi; with
    ``tube``, a tube (outer radius 5.5 mm, lumen 4 mm, +100 HU) in the trachea down to 40 mm above the carina."""
    nz, ny, nx = 110, 160, 200
    z, y, x = (a * SP[0] for a in np.mgrid[:nz, :ny, :nx].astype(np.float32))
    cy, cx = 0.45 * ny * SP[1], 0.5 * nx * SP[2]
    hu = np.full((nz, ny, nx), -1000.0, np.float32)
    body = ((y - 0.5 * ny * SP[1]) / (0.45 * ny * SP[1])) ** 2 + ((x - cx) / (0.47 * nx * SP[2])) ** 2 < 1
    hu[body] = 40.0
    for side in (-1, 1):
        lung = ((x - (cx + side * 60)) / 45) ** 2 + ((y - cy - 10) / 55) ** 2 + ((z - 60) / 70) ** 2 < 1
        hu[lung & body] = -850.0
        out = np.clip((CARINA_MM - z) / 40.0, 0, 1)  # a main bronchus: down and out over 40 mm
        hu[(z < CARINA_MM) & (z > CARINA_MM - 40) & ((y - cy) ** 2 + (x - (cx + side * 30 * out)) ** 2 < 36)] = -1000
    r2 = (y - cy) ** 2 + (x - cx) ** 2
    hu[(z >= CARINA_MM) & (r2 < 81)] = -1000.0
    if tube:
        hu[(z >= CARINA_MM + 40) & (r2 < 5.5 ** 2) & (r2 >= 4.0 ** 2)] = 100.0
    return hu + np.random.default_rng(0).normal(0, 15, hu.shape).astype(np.float32)


def _ml(mask: np.ndarray, spacing=SP) -> float:
    return float(np.count_nonzero(mask)) * float(np.prod(spacing)) / 1000.0


def test_the_airway_is_found_around_a_tube_and_the_carina_detected():
    z_mm = np.arange(110) * SP[0]
    without = segment_airway(_chest(False), SP)
    with_tube = segment_airway(_chest(True), SP)
    assert _ml(without) > AIRWAY_RETRY_ML  # grown as before, without a second try
    assert _ml(with_tube) == pytest.approx(_ml(without), rel=0.15)  # before the fix: no seed, 0 mL
    carina = detect_carina(with_tube, z_mm, SP)
    assert carina.method == "detected"
    assert carina.z_mm == pytest.approx(detect_carina(without, z_mm, SP).z_mm, abs=5.0)


def test_opening_thin_walls_keeps_thick_tissue():
    hu = _chest(True)
    opened = open_thin_walls(hu, SP)
    k = 105  # a slice through the tube: its wall becomes air, the body's soft tissue stays
    ring = hu[k] != _chest(False)[k]
    body_core = np.zeros(hu.shape[1:], bool)
    body_core[10:20, 90:110] = True  # soft tissue in front of the trachea, far thicker than the wall
    assert np.median(opened[k][ring]) < -900 and np.median(opened[k][body_core]) > 0


def test_a_tube_in_a_real_trachea(shared_data):
    """The audit's tube in the trachea of ricord_covid_419639, on the working grid: 0.5 mL before the fix."""
    import SimpleITK as sitk

    from pipeline.config import load_config
    from pipeline.resample import resample_to_spacing
    from segmentation.training import load_series_lps

    series = require(shared_data / "chest" / "ricord_covid_419639")
    img = resample_to_spacing(load_series_lps(series), load_config()["resample"]["spacing_mm"])
    hu = sitk.GetArrayFromImage(img).astype(np.float32)
    sp = tuple(float(s) for s in img.GetSpacing()[::-1])
    z_mm = img.GetOrigin()[2] + np.arange(hu.shape[0]) * sp[0]
    before = segment_airway(hu, sp)
    carina = detect_carina(before, z_mm, sp)
    assert carina.method == "detected"
    yy, xx = np.mgrid[: hu.shape[1], : hu.shape[2]]
    tube = hu.copy()
    for k in np.flatnonzero(z_mm >= carina.z_mm + 40):  # the tip 40 mm above the carina
        ys, xs = np.nonzero(before[k])
        if ys.size:
            r2 = ((yy - ys.mean()) * sp[1]) ** 2 + ((xx - xs.mean()) * sp[2]) ** 2
            tube[k][(r2 < 5.5 ** 2) & (r2 >= 4.0 ** 2)] = 100.0
    after = segment_airway(tube, sp)
    assert _ml(after, sp) > 0.9 * _ml(before, sp)
    moved = detect_carina(after, z_mm, sp)
    assert moved.method == "detected" and moved.z_mm == pytest.approx(carina.z_mm, abs=5.0)


def test_a_scan_without_a_trachea_gets_no_airway_from_the_second_try(shared_data):
    """A review: normal001 cut 30 mm below its carina has no trachea; the second try took 6.1 mL of opened lung
    (12 % of it below -900 HU) for one, and AIRWAY_NOT_FOUND was lost."""
    import SimpleITK as sitk

    from pipeline.config import load_config
    from pipeline.resample import resample_to_spacing
    from segmentation.training import load_series_lps

    full = load_series_lps(require(shared_data / "chest" / "normal001"))
    spacing = load_config()["resample"]["spacing_mm"]
    work = resample_to_spacing(full, spacing)
    hu = sitk.GetArrayFromImage(work).astype(np.float32)
    sp = tuple(float(s) for s in work.GetSpacing()[::-1])
    z_mm = work.GetOrigin()[2] + np.arange(hu.shape[0]) * sp[0]
    carina = detect_carina(segment_airway(hu, sp), z_mm, sp)
    assert carina.method == "detected"
    keep = [k for k in range(full.GetSize()[2]) if full.TransformIndexToPhysicalPoint((0, 0, k))[2] <= carina.z_mm - 30]
    cut = resample_to_spacing(full[:, :, min(keep):max(keep) + 1], spacing)
    airway = segment_airway(sitk.GetArrayFromImage(cut).astype(np.float32), sp)
    assert _ml(airway, sp) < 2.0
