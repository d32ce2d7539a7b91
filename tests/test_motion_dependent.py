"""MOTION_SUSPECT and DEPENDENT_DENSITY (a motion audit, 2026-12-06): breathing between slices (a doubled diaphragm
gave a normal scan about 200 mL of false ground glass) and a front-to-back density gradient (a 200 HU gradient gave
a normal scan six-zone 4 with the network, its mean lung HU still below DENSE_LUNG's -700) were scored with no flag."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from pipeline.flags import SCORING_FLAGS
from pipeline.hu_checks import (
    DEPENDENT_GRADIENT_HU,
    MOTION_RATIO,
    dependent_gradient_hu,
    flags_for,
    slice_jump_ratio,
)
from tests.conftest import require

SP = (2.0, 1.0, 1.0)


def _chest(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(HU, lung labels) of 60 slices: two lungs (-850 HU) with vessels and texture that change smoothly along z."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = 60, 120, 160
    z, y, x = np.mgrid[:nz, :ny, :nx].astype(np.float32)
    lungs = np.zeros((nz, ny, nx), np.uint8)
    for label, cx in ((1, 45), (2, 115)):
        lungs[((x - cx) / 32) ** 2 + ((y - 60) / 45) ** 2 < 1] = label
    texture = ndi.gaussian_filter(rng.standard_normal((nz, ny, nx)).astype(np.float32), (2.0, 2.0, 2.0)) * 150
    hu = np.where(lungs > 0, -850 + texture, 40 + texture / 5).astype(np.float32)
    for _ in range(40):  # vessels running head to feet, drifting a little
        y0, x0 = rng.uniform(20, 100), rng.uniform(15, 145)
        dy, dx = rng.uniform(-0.3, 0.3, 2)
        r2 = (y - (y0 + dy * z)) ** 2 + (x - (x0 + dx * z)) ** 2
        hu[(r2 < 4) & (lungs > 0)] = 30.0
    return hu, lungs


def test_breathing_steps_and_frozen_slices_are_measured_not_smooth_anatomy():
    hu, lungs = _chest()
    clean = slice_jump_ratio(hu, lungs, SP)
    assert clean < MOTION_RATIO
    stepped = hu.copy()
    stepped[30:] = hu[25:55]
    assert slice_jump_ratio(stepped, lungs, SP) > MOTION_RATIO  # a step of 10 mm between slices 29 and 30
    # one lung (a pneumonectomy, a lung the mask misses) or one label for both: the lungs there are measured
    assert slice_jump_ratio(stepped, np.where(lungs == 2, 0, lungs), SP) > MOTION_RATIO
    assert slice_jump_ratio(stepped, (lungs > 0).astype(np.uint8), SP) > MOTION_RATIO
    assert slice_jump_ratio(hu, np.where(lungs == 2, 0, lungs), SP) < MOTION_RATIO
    frozen = hu.copy()
    frozen[21:23] = hu[20]
    assert slice_jump_ratio(frozen, lungs, SP) == 1000.0
    assert flags_for({"slice_jump_ratio": 1000.0}) == ["MOTION_SUSPECT:1000.0"]


def test_a_lesion_that_starts_between_two_slices_is_no_motion():
    """The sample's synthetic lesions start with flat tops (a 562 -> 1718 pixel jump between two slices): one part
    of the lungs changes, not the whole slice."""
    hu, lungs = _chest()
    lesions = np.zeros(hu.shape, bool)
    lesions[30:45, 40:80, 30:60] = lungs[30:45, 40:80, 30:60] == 1
    hu = np.where(lesions, 0.0, hu).astype(np.float32)
    assert slice_jump_ratio(hu, lungs, SP, lesions) < MOTION_RATIO
    assert slice_jump_ratio(hu, lungs, SP) < MOTION_RATIO  # one part of four: not the whole slice either


def test_a_dependent_gradient_is_measured_and_patchy_disease_moves_it_less():
    hu, lungs = _chest()
    flat = dependent_gradient_hu(hu, lungs, SP)
    assert abs(flat) < 30
    y = np.arange(hu.shape[1], dtype=np.float32)[None, :, None]
    t = np.clip((y - 15) / 90, 0, 1) ** 2  # 0 at the lungs' front, 1 at their back
    dependent = np.where(lungs > 0, hu + 200 * t, hu).astype(np.float32)
    assert dependent_gradient_hu(dependent, lungs, SP) > DEPENDENT_GRADIENT_HU
    patchy = hu.copy()
    patchy[10:20][(lungs[10:20] > 0) & (y[0] > 60)] += 250  # posterior disease in a sixth of the slices
    assert dependent_gradient_hu(patchy, lungs, SP) < DEPENDENT_GRADIENT_HU
    assert flags_for({"dependent_gradient_hu": 113.4}) == ["DEPENDENT_DENSITY:113"]
    assert flags_for({"dependent_gradient_hu": 58.0, "slice_jump_ratio": 1.9}) == []


def test_the_flags_are_documented():
    assert "MOTION_SUSPECT" in SCORING_FLAGS and "DEPENDENT_DENSITY" in SCORING_FLAGS
    assert flags_for({"slice_jump_ratio": float("nan"), "dependent_gradient_hu": float("nan")}) == []


def test_the_sample_carries_neither(sample_classical, classical_memo):
    from pipeline.run import analyse_volume

    img, cfg, seg = sample_classical
    res = analyse_volume(img, cfg, seg)
    assert res["hu_check"]["slice_jump_ratio"] < MOTION_RATIO
    assert res["hu_check"]["dependent_gradient_hu"] < DEPENDENT_GRADIENT_HU


def test_real_chests(shared_data, classical_memo):
    """normal001 as scanned, with a stepped slab in its bases and with a dependent gradient; ge_mister_ct, whose
    three acquisitions meet with the lungs stepped."""
    from pipeline.config import load_config
    from pipeline.run import analyse_volume
    from segmentation.factory import build_segmenter
    from segmentation.training import load_series_lps

    cfg = load_config(extra={"segmentation": {"method": "classical"}})
    seg = build_segmenter(cfg)
    img = load_series_lps(require(shared_data / "chest" / "normal001"))
    res = analyse_volume(img, cfg, seg)
    hu, lungs, sp, les = res["hu"], res["lungs"], res["spacing_zyx"], res["classes"] > 0
    assert res["hu_check"]["slice_jump_ratio"] < 2.0 and res["hu_check"]["dependent_gradient_hu"] < 0
    zs = np.flatnonzero((lungs > 0).any(axis=(1, 2)))
    k0, k1 = zs[0], zs[0] + int(60 / sp[0])
    stepped = hu.copy()
    stepped[k0:k1] = hu[k0 - int(round(5 / sp[0])):k1 - int(round(5 / sp[0]))]  # the bases shown 5 mm higher
    assert slice_jump_ratio(stepped, lungs, sp, les) > MOTION_RATIO
    y = np.arange(hu.shape[1], dtype=np.float32)[:, None]
    graded = hu.astype(np.float32).copy()
    for k in range(zs[0], zs[-1] + 1):
        for side in (1, 2):
            m = lungs[k] == side
            if m.any():
                rows = np.flatnonzero(m.any(axis=1))
                t = np.clip((y - rows[0]) / max(rows[-1] - rows[0], 1), 0, 1) ** 2
                graded[k] = np.where(m, graded[k] + 200 * t * np.clip((-300 - hu[k]) / 300, 0, 1), graded[k])
    assert dependent_gradient_hu(graded, lungs, sp) > DEPENDENT_GRADIENT_HU
    ge = analyse_volume(load_series_lps(require(shared_data / "chest" / "ge_mister_ct")), cfg, seg)
    assert ge["hu_check"]["slice_jump_ratio"] > MOTION_RATIO
    assert ge["hu_check"]["dependent_gradient_hu"] < DEPENDENT_GRADIENT_HU


def test_a_few_stray_voxels_of_the_missing_lung_do_not_hide_a_step():
    """A review: a one-lung mask with 9 voxels labelled as the other lung gave NaN (no flag) where they lay."""
    hu, lungs = _chest()
    stepped = hu.copy()
    stepped[30:] = hu[25:55]
    one = np.where(lungs == 2, 0, lungs).astype(np.uint8)
    for k in (10, 25, 40):
        stray = one.copy()
        stray[k, 60:63, 110:113] = 2
        assert slice_jump_ratio(stepped, stray, SP) > MOTION_RATIO
