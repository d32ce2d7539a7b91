"""levels.png's planes on real chests (skips when ../shared/data is absent): the coronal view shows each dome at its
level, and the sagittal view goes through the trachea's air."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require, segment_memo, shared_data_dir

CASES = ["normal001", "itkelastix00", "ricord_covid_419639"]
CENTRE_BEHIND_THE_DOME = {"normal001", "itkelastix00"}


@pytest.fixture(scope="module")
def analysed() -> dict:
    data = shared_data_dir()
    if data is None:
        pytest.skip("real CT data not found: set CTSCORE_TEST_DATA or place it at ../shared/data")
    from pipeline.config import load_config
    from pipeline.discovery import discover, select_series
    from pipeline.loading import load_series
    from pipeline.run import analyse_volume
    from segmentation.factory import build_segmenter

    cfg = load_config(extra={"segmentation": {"method": "classical"}})
    seg = build_segmenter(cfg)
    out = {}
    for name in CASES:
        cand = select_series(discover(require(data / "chest" / name)))[0]
        with segment_memo():  # these chests are segmented unchanged in other files too (tests/conftest.py)
            out[name] = analyse_volume(load_series(cand.files).image, cfg, seg)
    return out


@pytest.mark.parametrize("name", CASES)
def test_the_coronal_view_meets_each_dome(analysed, name) -> None:
    """Through the lungs' centre, the diaphragm beside the heart lay 16-22 mm below the right dome (an audit of
    2026-12-06, with the network's masks): through the rows chosen, each dome meets it to within 5 mm."""
    from pipeline.qc_levels import _median_index, coronal_rows, floor_maps, lateral_floor_top

    res = analysed[name]
    lungs, z = res["lungs"], res["z_mm"]
    rows = coronal_rows(lungs, z, res["landmarks"], res["spacing_zyx"][0])
    centre = _median_index(np.count_nonzero(lungs > 0, axis=(0, 2)))
    floors = floor_maps(lungs, z)
    for label, dome, side in ((1, "dome_right", "low"), (2, "dome_left", "high")):
        lm = res["landmarks"][dome]
        assert lm.method == "detected"
        top = lateral_floor_top(floors[label], side)
        row, how = rows[label]
        assert how == "dome"
        assert abs(top[row] - lm.z_mm) <= 5.0 + res["spacing_zyx"][0], (name, dome, top[row], lm.z_mm)
        if label == 1 and name in CENTRE_BEHIND_THE_DOME:  # there the centre plane passes behind the right dome
            assert top[centre] < lm.z_mm - 10.0, (name, top[centre], lm.z_mm)


@pytest.mark.parametrize("name", CASES)
def test_the_sagittal_view_cuts_the_trachea(analysed, name) -> None:
    """The column run.py hands levels.png holds tracheal air (below -900 HU, outside the lungs, within the lungs'
    front-to-back extent: not the air between the back and the table) in at least 90 % of the slices from the carina
    to the notch (3 of 35 on ricord_covid_419639 when the column came from the airway's upper half)."""
    res = analysed[name]
    x = res["trachea_x"]
    assert x is not None
    z = res["z_mm"]
    carina, notch = res["landmarks"]["carina"].z_mm, res["landmarks"]["suprasternal_notch"].z_mm
    ks = np.nonzero((z > carina + 3.0) & (z < notch))[0]
    assert len(ks) >= 10
    ys = np.nonzero((res["lungs"] > 0).any(axis=(0, 2)))[0]
    band = slice(int(ys[0]), int(ys[-1]) + 1)
    air = (res["hu"][ks, band, x] < -900) & (res["lungs"][ks, band, x] == 0)
    assert np.count_nonzero(air.any(axis=1)) >= 0.9 * len(ks), (name, x, np.count_nonzero(air.any(axis=1)), len(ks))
