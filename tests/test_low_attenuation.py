"""%LAA-950 and the LOW_ATTENUATION flag (an audit of emphysema and fibrosis cohorts): emphysema stays in the lung
mask, but pneumonia around air cysts is under-segmented, and no output said a lung was emphysematous."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.hu_checks import LAA_HU, LOW_ATTENUATION_PCT, flags_for, low_attenuation_pct


def test_low_attenuation_pct_is_the_share_of_the_lung_below_minus_950():
    hu = np.full((4, 10, 10), -870.0)
    lungs = np.zeros(hu.shape, np.uint8)
    lungs[:, :, :5], lungs[:, :, 5:] = 1, 2
    hu[:, :2, :] = -990.0  # 20 % of each lung: emphysema
    hu[:, 2, :] = LAA_HU  # exactly -950 is not below it
    assert low_attenuation_pct(hu, lungs) == 20.0
    assert math.isnan(low_attenuation_pct(hu, np.zeros(hu.shape, np.uint8)))
    # only the lung counts: air outside it (the trachea, the room) does not
    hu2 = hu.copy()
    lungs2 = lungs.copy()
    lungs2[:, :2, :] = 0
    assert low_attenuation_pct(hu2, lungs2) == 0.0


@pytest.mark.parametrize("pct, flagged", [(LOW_ATTENUATION_PCT - 0.01, False), (LOW_ATTENUATION_PCT, True),
                                          (19.66, True), (math.nan, False)])
def test_flag(pct, flagged):
    flags = flags_for({"laa950_pct": pct})
    assert any(f.startswith("LOW_ATTENUATION:") for f in flags) == flagged
    if flagged:
        assert f"LOW_ATTENUATION:{pct:.0f}" in flags


def test_a_scored_emphysematous_chest_is_flagged_and_keeps_its_lung(sample_classical, classical_memo):
    """analyse_volume on the sample with a quarter of its lung voxels at -980 HU (classical segmenter): laa950_pct
    recorded on the CT's own grid, the flag raised, the lung volume not reduced."""
    import SimpleITK as sitk

    from pipeline.run import analyse_volume

    img, cfg, seg = sample_classical
    base = analyse_volume(img, cfg, seg)
    hu = sitk.GetArrayFromImage(img).astype(np.float32)
    rng = np.random.default_rng(0)
    emph = (base["lungs"] > 0) & (base["classes"] == 0) & (rng.random(hu.shape) < 0.25)
    im2 = sitk.GetImageFromArray(np.where(emph, -980.0, hu).astype(np.float32))
    im2.CopyInformation(img)
    res = analyse_volume(im2, cfg, seg)
    assert base["hu_check"]["laa950_pct"] < 1.0
    assert res["hu_check"]["laa950_pct"] >= 15.0
    assert not any(f.startswith("LOW_ATTENUATION:") for f in flags_for(base["hu_check"]))
    assert any(f.startswith("LOW_ATTENUATION:") for f in flags_for(res["hu_check"]))
    lung_ml = lambda r: r["row"]["lung_volume_ml_right"] + r["row"]["lung_volume_ml_left"]  # noqa: E731
    assert lung_ml(res) >= 0.98 * lung_ml(base)
