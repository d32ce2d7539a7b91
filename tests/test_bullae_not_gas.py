"""An air space inside the lower lung whose rim reads above -600 HU (a bulla with a wall, or inside consolidation or
dense ground glass: a cavity, a pneumatocele, COVID on emphysema) is lung, not bowel gas. Before the fix
``segmentation.monai_segmenter.remove_bowel_gas`` split the aerated lung at -600 HU and took such a low air piece,
with up to 8 mm of its rim, out of the lung (flag BOWEL_GAS_REMOVED): on normal001 an 87 mL right basal bulla in a
consolidation rim cost the right lung 99 mL. Gastric gas under the dome must still go."""

from __future__ import annotations

import numpy as np
import pytest

SP = (1.5, 1.5, 1.5)
GASTRIC = np.s_[12:16, 15:45, 55:77]


def basal_chest(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """HU and lung labels [z, y, x] (z upwards, 1.5 mm voxels): right (1) and left (2) lungs of -850 HU from z 10 and
    z 20 up; under the left one a gastric bubble (z 12-15) and its diaphragm (z 16-19), both in the left mask."""
    rng = np.random.default_rng(seed)
    hu = np.full((90, 60, 90), 40.0, np.float32)
    lungs = np.zeros(hu.shape, np.uint8)
    hu[10:86, 10:50, 8:40] = -850.0
    lungs[10:86, 10:50, 8:40] = 1
    hu[20:86, 10:50, 50:82] = -850.0
    lungs[20:86, 10:50, 50:82] = 2
    hu[GASTRIC] = -1000.0
    lungs[12:20, 15:45, 55:77] = 2
    return hu, lungs, rng


def add_noise(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return hu + rng.normal(0, 15, hu.shape).astype(np.float32)


def test_bulla_in_a_consolidation_rim_on_the_floor_stays():
    """A 6 mL right bulla resting on the lung's floor (no lung under it) in a 4.5 mm consolidation rim: lung lies
    beside it in its slices, so it stays; the gastric bubble under the left dome still goes."""
    from segmentation.monai_segmenter import remove_bowel_gas

    hu, lungs, rng = basal_chest()
    hu[10:23, 18:40, 13:35] = -50.0    # the rim ...
    hu[10:20, 21:37, 16:32] = -1000.0  # ... around the air, on the floor (z 10)
    hu = add_noise(hu, rng)
    out, removed = remove_bowel_gas(lungs, hu, SP)
    np.testing.assert_array_equal(out == 1, lungs == 1)  # every voxel of the right lung kept
    assert set(removed) == {2} and not out[GASTRIC].any()
    np.testing.assert_array_equal(out[20:], lungs[20:])


def test_bulla_in_a_ground_glass_halo_with_lung_below_stays():
    """A 6 mL left basal bulla in a 6 mm -450 HU halo with lung below it: kept; the gastric bubble still goes."""
    from segmentation.monai_segmenter import remove_bowel_gas

    hu, lungs, rng = basal_chest()
    hu[22:40, 18:42, 56:78] = -450.0   # the halo ...
    hu[26:36, 22:38, 60:74] = -1000.0  # ... around the air, two slices of lung under it
    hu = add_noise(hu, rng)
    out, removed = remove_bowel_gas(lungs, hu, SP)
    assert set(removed) == {2} and removed[2] == pytest.approx(6 * 30 * 22 * 1.5 ** 3 / 1000, rel=0.01)
    np.testing.assert_array_equal(out[20:], lungs[20:])  # the bulla, its halo and all lung above the dome kept


def test_the_new_tests_are_what_keeps_them():
    """With the column and ring tests off (the rule before), both bullae leave the lung."""
    from segmentation.monai_segmenter import remove_bowel_gas

    hu, lungs, rng = basal_chest()
    hu[10:23, 18:40, 13:35] = -50.0
    hu[10:20, 21:37, 16:32] = -1000.0
    hu[22:40, 18:42, 56:78] = -450.0
    hu[26:36, 22:38, 60:74] = -1000.0
    hu = add_noise(hu, rng)
    removed = remove_bowel_gas(lungs, hu, SP, under_share=0.0, beside_share=1.0)[1]
    assert set(removed) == {1, 2} and removed[2] > 6 * 30 * 22 * 1.5 ** 3 / 1000 + 5.0


@pytest.mark.slow
@pytest.mark.realdata
def test_real_bulla_stays_and_real_gastric_gas_goes(shared_data, monai_memo):
    """normal001 with the audit's 87 mL right basal bulla in a 4.5 mm consolidation rim painted into the network's
    lung mask: nothing removed (before: 99 mL, BOWEL_GAS_REMOVED:right). cap001: its gastric gas (65 mL) still
    leaves the left lung mask."""
    from scipy import ndimage as ndi

    from pipeline.config import load_config
    from segmentation.factory import build_segmenter
    from segmentation.monai_segmenter import remove_bowel_gas
    from tests.conftest import require
    from tests.test_classical import _load_working

    seg = build_segmenter(load_config([], ["segmentation.method=monai", "segmentation.device=cpu",
                                           "segmentation.monai.remove_bowel_gas=false"]))
    hu, sp = _load_working(require(shared_data / "chest" / "normal001"))
    assert np.allclose(sp, SP)
    lungs = seg.segment(hu, sp).lungs
    z, y, x = np.nonzero(lungs == 1)
    zb = z.min() + 40
    on = z == zb
    k = np.argmax(y[on] - 0.5 * x[on])
    c = np.array([zb, y[on][k] - 14, x[on][k] + 10])
    d = np.sqrt((((np.indices(hu.shape).reshape(3, -1).T - c) * 1.5) ** 2).sum(1)).reshape(hu.shape)
    bulla = (d <= 30.0) & (lungs == 1)
    assert 70 < bulla.sum() * 1.5 ** 3 / 1000 < 100
    rim = (ndi.distance_transform_edt(~bulla, sampling=SP) <= 4.5) & ~bulla & (lungs > 0)
    hu = hu.copy()
    hu[bulla] = -961.0 + np.random.default_rng(0).normal(0, 17.5, int(bulla.sum()))
    hu[rim] = -50.0
    out, removed = remove_bowel_gas(lungs, hu, SP)
    assert removed == {} and np.array_equal(out, lungs)

    hu, sp = _load_working(require(shared_data / "chest" / "cap001"))
    res = build_segmenter(load_config([], ["segmentation.method=monai", "segmentation.device=cpu"])).segment(hu, sp)
    assert "BOWEL_GAS_REMOVED:left" in res.flags
