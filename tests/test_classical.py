"""The classical segmenter on a small synthetic chest (fast) and on real chest CT (skips without data).

The synthetic chest is built here, in LPS ``[z, y, x]`` (x towards the patient's left, y posterior,
z cranial): a body, two lungs with noise, a trachea dividing into two main bronchi, a liver dome
pushing into the right lung base, thin vessels, a dense lesion touching the left chest wall and a
ground-glass blob in the right lung.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from segmentation.base import LEFT_LUNG, RIGHT_LUNG
from segmentation.classical import ClassicalSegmenter, fill_enclosed, fill_holes_planar
from tests.conftest import require

SPACING = (2.5, 2.0, 2.0)  # z, y, x mm
SHAPE = (64, 96, 128)


def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Physical coordinates (mm) of the voxel centres, origin at the array centre in y and x."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) * s for n, s in zip(SHAPE, SPACING)), indexing="ij")
    return z, y - SHAPE[1] * SPACING[1] / 2, x - SHAPE[2] * SPACING[2] / 2


def _segment_line(z, y, x, p0, p1, radius) -> np.ndarray:
    """Voxels within ``radius`` mm of the segment p0-p1 (points as (z, y, x) mm)."""
    p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
    d = p1 - p0
    t = ((z - p0[0]) * d[0] + (y - p0[1]) * d[1] + (x - p0[2]) * d[2]) / float(d @ d)
    t = np.clip(t, 0, 1)
    dist2 = (z - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (x - p0[2] - t * d[2]) ** 2
    return dist2 <= radius**2


def make_chest(seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A synthetic chest CT in HU and the masks of its parts."""
    rng = np.random.default_rng(seed)
    z, y, x = _grid()
    hu = np.full(SHAPE, -1000.0, np.float32)
    body = (y / 85.0) ** 2 + (x / 120.0) ** 2 <= 1.0
    hu[body] = 40.0
    zc = 72.0
    right = ((x + 52) / 38.0) ** 2 + (y / 62.0) ** 2 + ((z - zc) / 62.0) ** 2 <= 1.0
    left = ((x - 52) / 38.0) ** 2 + (y / 62.0) ** 2 + ((z - zc) / 62.0) ** 2 <= 1.0
    # The liver dome pushes up into the right lung base (an axial hole that opens downwards).
    liver = ((x + 52) ** 2 + y**2 + (z - 0.0) ** 2) <= 42.0**2
    right &= ~liver
    lungs = np.zeros(SHAPE, np.uint8)
    lungs[right] = RIGHT_LUNG
    lungs[left] = LEFT_LUNG
    hu[lungs > 0] = -860.0
    # Vessels: thin tubes inside the lungs.
    vessels = np.zeros(SHAPE, bool)
    for cx in (-60.0, -40.0, 40.0, 62.0):
        for cy in (-25.0, 20.0):
            vessels |= _segment_line(z, y, x, (40.0, cy, cx), (110.0, cy + 8.0, cx + 4.0), 1.6)
    vessels &= lungs > 0
    hu[vessels] = 40.0
    # A dense lesion touching the left lateral chest wall (consolidation at the pleura).
    dense = (((x - 90.0) ** 2 + (y - 10.0) ** 2 + (z - 80.0) ** 2) <= 16.0**2) & (lungs == LEFT_LUNG)
    hu[dense] = 20.0
    # A ground-glass blob in the right lung, away from the pleura and the hilum.
    ggo = (((x + 60.0) ** 2 + (y + 20.0) ** 2 + (z - 95.0) ** 2) <= 11.0**2) & (lungs == RIGHT_LUNG)
    hu[ggo] = -600.0
    # Trachea from the top down to the carina, then the two main bronchi into the lungs.
    carina = (108.0, -5.0, 0.0)
    trachea = _segment_line(z, y, x, (SHAPE[0] * SPACING[0], -15.0, 0.0), carina, 8.0)
    bronchi = _segment_line(z, y, x, carina, (92.0, 0.0, -30.0), 5.5) | _segment_line(
        z, y, x, carina, (92.0, 0.0, 30.0), 5.5)
    airway = trachea | bronchi
    trachea_core = _segment_line(z, y, x, (SHAPE[0] * SPACING[0], -15.0, 0.0), carina, 5.0)
    hu[airway] = -1000.0
    hu += rng.normal(0.0, 15.0, SHAPE).astype(np.float32)
    truth = {"lungs": lungs, "dense": dense, "ggo": ggo, "vessels": vessels & ~dense & ~ggo, "airway": airway,
             "liver": liver & body, "trachea_core": trachea_core}
    return hu, truth


@pytest.fixture(scope="module")
def chest():
    hu, truth = make_chest()
    seg = ClassicalSegmenter().segment(hu, SPACING)
    return hu, truth, seg


def test_two_lungs_labelled_right_at_low_x(chest):
    _, truth, seg = chest
    for side in (RIGHT_LUNG, LEFT_LUNG):
        t, s = truth["lungs"] == side, seg.lungs == side
        dice = 2 * (t & s).sum() / (t.sum() + s.sum())
        assert dice > 0.9, (side, dice)
    xs_r = np.nonzero(seg.lungs == RIGHT_LUNG)[2].mean()
    xs_l = np.nonzero(seg.lungs == LEFT_LUNG)[2].mean()
    assert xs_r < xs_l


def test_dense_lesion_at_pleura_is_lung_and_lesion(chest):
    _, truth, seg = chest
    d = truth["dense"]
    assert d.sum() > 100
    assert (seg.lungs[d] == LEFT_LUNG).mean() > 0.7  # the sliver between chord and chest wall may stay out
    assert seg.lesions[d].mean() > 0.6


def test_liver_dome_hole_is_not_filled(chest):
    _, truth, seg = chest
    liver = truth["liver"]
    assert (seg.lungs[liver] > 0).mean() < 0.02


def test_airway_segmented_and_disjoint_from_lungs(chest):
    _, truth, seg = chest
    assert seg.airway is not None
    assert not np.any(seg.airway & (seg.lungs > 0))
    # the trachea is found down to the carina and into the main bronchi
    core = truth["trachea_core"]
    assert seg.airway[core].mean() > 0.8
    assert (seg.lungs[truth["airway"]] > 0).mean() < 0.05
    zs = np.nonzero(seg.airway.any(axis=(1, 2)))[0]
    assert zs.min() * SPACING[0] < 105.0  # past the carina (108 mm)


def test_airway_alone_equals_the_segmenters_airway(chest):
    """``segment_airway`` (used by the MONAI segmenter and bundles) is the classical airway, unchanged."""
    from segmentation.classical import segment_airway

    hu, _, seg = chest
    assert np.array_equal(segment_airway(hu, SPACING), seg.airway)
    assert not segment_airway(np.full((8, 16, 16), -1000.0, np.float32), SPACING).any()  # no body


def test_vessels_are_not_lesions(chest):
    _, truth, seg = chest
    v = truth["vessels"]
    assert v.sum() > 200
    assert seg.lesions[v].mean() < 0.1
    # and they are lung
    assert (seg.lungs[v] > 0).mean() > 0.95


def test_ground_glass_blob_detected(chest):
    _, truth, seg = chest
    g = truth["ggo"]
    assert seg.lesions[g].mean() > 0.5
    # little opacity elsewhere: lesion volume close to the planted lesions
    planted = (truth["ggo"] | truth["dense"]).sum()
    assert seg.lesions.sum() < 2.0 * planted


def test_fill_holes_planar_matches_scipy():
    from scipy import ndimage as ndi

    rng = np.random.default_rng(1)
    m = ndi.gaussian_filter(rng.random((20, 30, 25)), 1.5) > 0.5
    for axis in range(3):
        ref = np.stack([ndi.binary_fill_holes(np.take(m, k, axis=axis)) for k in range(m.shape[axis])], axis=axis)
        assert np.array_equal(ref, fill_holes_planar(m, axis))
    # a cup open downwards (z) is filled axially only, so fill_enclosed leaves it alone
    cup = np.zeros((20, 30, 30), bool)
    zz, yy, xx = np.ogrid[:20, :30, :30]
    r2 = (yy - 15) ** 2 + (xx - 15) ** 2
    cup[5:15] = (r2 <= 100) & (r2 >= 36)
    cup[15] = r2 <= 100
    assert not fill_enclosed(cup)[10, 15, 15]


# ---------------------------------------------------------------------------------------------
# Real chest CT (../shared/data/chest); skipped when absent.


def _load_working(path) -> tuple[np.ndarray, tuple[float, float, float]]:
    import SimpleITK as sitk

    from pipeline.discovery import discover, select_series
    from pipeline.loading import load_series
    from pipeline.resample import resample_to_spacing, to_lps

    cand = select_series(discover(path))[0]
    vol = load_series(cand.files)
    work = resample_to_spacing(to_lps(vol.image), (1.5, 1.5, 1.5))
    return sitk.GetArrayFromImage(work).astype(np.float32), tuple(work.GetSpacing()[::-1])


def test_real_normal001(shared_data):
    hu, spacing = _load_working(require(shared_data / "chest" / "normal001"))
    t = time.perf_counter()
    seg = ClassicalSegmenter().segment(hu, spacing)
    elapsed = time.perf_counter() - t
    voxel_ml = float(np.prod(spacing)) / 1000
    right, left = (seg.lungs == RIGHT_LUNG).sum() * voxel_ml, (seg.lungs == LEFT_LUNG).sum() * voxel_ml
    assert 1000 <= right <= 4500 and 1000 <= left <= 4500, (right, left)
    opacity = 100 * seg.lesions.sum() * voxel_ml / (right + left)
    assert opacity < 3.0, opacity
    assert seg.airway.sum() * voxel_ml > 5
    assert not np.any(seg.airway & (seg.lungs > 0))
    assert elapsed < 60, elapsed  # generous: the machine is shared


def test_real_cap001_has_opacity(shared_data, classical_memo):
    hu, spacing = _load_working(require(shared_data / "chest" / "cap001"))
    seg = ClassicalSegmenter().segment(hu, spacing)
    voxel_ml = float(np.prod(spacing)) / 1000
    lung_ml = (seg.lungs > 0).sum() * voxel_ml
    opacity = 100 * seg.lesions.sum() * voxel_ml / lung_ml
    assert opacity > 1.0, opacity
    # both lungs, and no bowel gas in them: no large pure-air blob in the lower fifth of the lungs
    assert (seg.lungs == RIGHT_LUNG).any() and (seg.lungs == LEFT_LUNG).any()
    assert not np.any(seg.airway & (seg.lungs > 0))
