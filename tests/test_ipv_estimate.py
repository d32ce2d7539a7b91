"""The estimated inferior pulmonary vein level stays above the domes (the middle/lower zone boundary)."""

from __future__ import annotations

import pytest

from scoring.landmarks import CALIBRATION, estimate_ipv


@pytest.mark.parametrize("name", ["ipv_right", "ipv_left", "ipv"])
def test_usual_chest_keeps_the_calibrated_mean(name):
    # normal001 of the reference: carina -120.5, mean dome -201.5 (81 mm): the calibrated mean, as before
    f, off = CALIBRATION[f"{name}_fraction"], CALIBRATION[f"{name}_from_carina_mm"]
    lm = estimate_ipv(name, -120.5, -201.5)
    assert lm.z_mm == pytest.approx(0.5 * (-120.5 - f * 81.0) + 0.5 * (-120.5 + off))
    assert lm.method == "estimated" and lm.note.startswith("mean of")
    assert estimate_ipv("ipv", -120.5, -201.5).z_mm == pytest.approx(-174.8, abs=0.1)  # reference -177.8


@pytest.mark.parametrize("gap", [5.0, 20.0, 35.0, 39.0])
@pytest.mark.parametrize("name", ["ipv_right", "ipv_left", "ipv"])
def test_short_chest_puts_the_level_between_carina_and_domes(name, gap):
    # the fixed offset alone (55-60 mm) reaches past domes this close to the carina: the mean fell at or below them
    lm = estimate_ipv(name, 0.0, -gap)
    assert -gap < lm.z_mm < 0.0
    assert lm.z_mm == pytest.approx(-CALIBRATION[f"{name}_fraction"] * gap)
    assert "at or below the domes" in lm.note


def test_the_switch_happens_only_where_the_mean_reaches_the_domes():
    f, off = CALIBRATION["ipv_fraction"], CALIBRATION["ipv_from_carina_mm"]
    edge = -off / (2 - f)  # carina-dome gap at which the mean equals the dome level
    assert estimate_ipv("ipv", 0.0, -(edge + 0.5)).note.startswith("mean of")
    assert "at or below the domes" in estimate_ipv("ipv", 0.0, -(edge - 0.5)).note
