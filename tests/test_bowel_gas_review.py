"""The bowel-gas step of the MONAI segmenter (``segmentation.monai_segmenter.remove_bowel_gas``) on the shape of
ricord_covid_419639: gastric gas under a thin left hemidiaphragm that reads -600 to -500 HU where it is seen
obliquely (joining gas and lung below -500 HU), on a scanner whose air reads about -945 HU (trachea -945, the gas
in the lung mask -943: above the -950 HU limit set for air at -1000). Before the fix the step kept all of it
(about 30 mL of stomach gas in the left lung mask, no BOWEL_GAS_REMOVED flag)."""

from __future__ import annotations

import numpy as np
import pytest

SP = (1.5, 1.5, 1.5)
BUBBLE = np.s_[8:18, 13:43, 51:73]


def thin_dome(seed: int = 0, air: float = -945.0, bubble: float | None = None, trachea: bool = True,
              noise: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    """HU and lung labels [z, y, x] (z upwards, 1.5 mm voxels): a body at 40 HU in air reading ``air``; right (1)
    and left (2) lungs of -800 HU (basal lung of ricord_covid_419639); under the left one a gas bubble (``air``
    unless ``bubble``) and a 3 mm diaphragm (z 18-19), both in the left lung mask; at the lateral edge the
    diaphragm reads -550 HU (partial volume), joining gas and lung below -500 HU; a trachea of air."""
    rng = np.random.default_rng(seed)
    hu = np.full((64, 56, 84), air, np.float32)
    hu[:, 3:53, 3:81] = 40.0
    lungs = np.zeros(hu.shape, np.uint8)
    hu[20:58, 10:46, 8:36] = -800.0
    lungs[20:58, 10:46, 8:36] = 1
    hu[20:58, 10:46, 48:76] = -800.0
    lungs[20:58, 10:46, 48:76] = 2
    hu[BUBBLE] = air if bubble is None else bubble
    lungs[8:20, 13:43, 51:73] = 2
    hu[18:20, 13:43, 70:73] = -550.0
    if trachea:
        hu[30:64, 24:32, 38:46] = air
    hu += rng.normal(0, noise, hu.shape).astype(np.float32)
    return hu, lungs


def test_gastric_gas_under_a_thin_dome_is_taken_out_where_air_reads_high():
    """The failing case of ricord_covid_419639: the gas and the half of the diaphragm nearer to it leave the left
    lung mask; every lung voxel above and the right lung stay; the input is not changed."""
    from segmentation.monai_segmenter import remove_bowel_gas

    hu, lungs = thin_dome()
    assert np.median(hu[BUBBLE]) > -950.0  # the absolute limit alone does not call it gas
    before = lungs.copy()
    out, removed = remove_bowel_gas(lungs, hu, SP)  # as MonaiSegmenter.segment calls it
    np.testing.assert_array_equal(lungs, before)
    assert not out[8:19, 13:43, 51:73].any()  # the gas and the lower diaphragm slice
    np.testing.assert_array_equal(out[19:], before[19:])  # the upper diaphragm slice and all lung above kept
    assert set(removed) == {2} and removed[2] == pytest.approx(11 * 30 * 22 * 1.5 ** 3 / 1000, rel=0.01)


def test_both_changes_are_needed():
    """Cut at -500 HU the gas is one piece with the lung (the oblique diaphragm); without the air level its
    median (-945) is above -950: either alone keeps it, as the rule before did."""
    from segmentation.monai_segmenter import remove_bowel_gas

    hu, lungs = thin_dome()
    assert remove_bowel_gas(lungs, hu, SP, aerated_hu=-500.0)[1] == {}
    assert remove_bowel_gas(lungs, hu, SP, max_air_shift=0.0)[1] == {}
    assert set(remove_bowel_gas(lungs, hu, SP, air_hu=-945.0)[1]) == {2}


def test_lung_like_pieces_under_the_dome_stay():
    """What the looser limit must not take: a -945 HU piece where air reads -1000 (emphysematous, not gas);
    lung density (-850 HU) under the dome where air reads -945; a piece 60 HU above a trachea that reads far
    too high (-800: the shift is at most 50 HU); the gas where no trachea is found (no air level: -950 applies)."""
    from segmentation.monai_segmenter import remove_bowel_gas

    hu, lungs = thin_dome(air=-1000.0, bubble=-945.0)
    assert remove_bowel_gas(lungs, hu, SP)[1] == {}
    hu, lungs = thin_dome(bubble=-850.0)
    out, removed = remove_bowel_gas(lungs, hu, SP)
    assert removed == {} and np.array_equal(out, lungs)
    hu, lungs = thin_dome(bubble=-880.0)
    assert remove_bowel_gas(lungs, hu, SP, air_hu=-800.0)[1] == {}
    hu, lungs = thin_dome(trachea=False)
    assert remove_bowel_gas(lungs, hu, SP)[1] == {}


def test_gas_high_in_the_lung_stays():
    """Air-density gas walled off high in the lung (a bulla) is not under the dome: kept at any air level."""
    from segmentation.monai_segmenter import remove_bowel_gas

    hu, lungs = thin_dome()
    hu[8:20] = 40.0
    lungs[8:20] = 0
    hu[44:52, 18:34, 54:70] = 40.0
    hu[45:51, 19:33, 55:69] = -945.0
    assert remove_bowel_gas(lungs, hu, SP)[1] == {}


def test_the_air_level_is_measured_only_when_it_matters(monkeypatch):
    """The trachea (0.3-0.5 s on a real scan) is looked for only when a low piece's median lies within
    ``max_air_shift`` above ``gas_hu``: not for gas at -1000 HU nor for lung density."""
    from segmentation import monai_segmenter as ms

    def boom(hu, spacing):
        raise AssertionError("air_level called")

    monkeypatch.setattr(ms, "air_level", boom)
    hu, lungs = thin_dome(air=-1000.0)
    assert set(ms.remove_bowel_gas(lungs, hu, SP)[1]) == {2}
    hu, lungs = thin_dome(bubble=-850.0)
    assert ms.remove_bowel_gas(lungs, hu, SP)[1] == {}
