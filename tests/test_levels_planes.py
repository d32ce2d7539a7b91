"""levels.png cuts each lung through its dome and the sagittal view through the trachea.

A coronal plane through the lungs' centre passes behind the domes: on the real chests the diaphragm in it lay
16-22 mm below a correct right dome, and a reviewer would have "corrected" the level. The sagittal view went
through the lungs' midline, not the trachea, since run.py gave levels_png no airway."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline import qc_levels
from pipeline.qc_levels import coronal_rows, floor_maps, floor_z, lateral_floor_top, levels_png
from pipeline.run import trachea_column

PEAK = 30  # the domes' slice index
DOME_ROWS = {1: 25, 2: 35}  # the right dome lies 10 rows in front of the left, both in front of the centre (40)


def _domed_chest() -> dict:
    """Two lungs whose floor is a ridge across x, highest (slice PEAK) at the lung's DOME_ROWS row and falling to
    slice 10 in front of and behind it; the lungs reach slice 70. Slices 2.5 mm apart, pixels 2 mm."""
    nz, ny, nx = 80, 80, 100
    lungs = np.zeros((nz, ny, nx), np.uint8)
    zz = np.arange(nz)[:, None]
    for label, (x0, x1) in ((1, (10, 45)), (2, (55, 90))):
        ys = np.arange(10, 71)
        floor = np.round(10 + (PEAK - 10) * np.exp(-(((ys - DOME_ROWS[label]) / 8.0) ** 2))).astype(int)
        for y, f in zip(ys, floor):
            lungs[:, y, x0:x1] = np.where((zz >= f) & (zz <= 70), label, 0)
    hu = np.full(lungs.shape, 40, np.int16)
    hu[lungs > 0] = -850
    z = -200.0 + 2.5 * np.arange(nz)
    dome = float(z[PEAK]) - 1.25  # as scoring.landmarks reports a dome: half a slice below its floor voxel
    lms = {"dome_right": {"z_mm": dome, "method": "detected"}, "dome_left": {"z_mm": dome, "method": "detected"},
           "carina": {"z_mm": float(z[60]), "method": "detected"}}
    return {"hu": hu, "lungs": lungs, "z_mm": z, "spacing_zyx": (2.5, 2.0, 2.0), "landmarks": lms}


def test_each_lung_is_cut_through_its_own_dome() -> None:
    c = _domed_chest()
    rows = coronal_rows(c["lungs"], c["z_mm"], c["landmarks"], 2.5)
    assert rows[1][1] == rows[2][1] == "dome"
    assert abs(rows[1][0] - DOME_ROWS[1]) <= 1 and abs(rows[2][0] - DOME_ROWS[2]) <= 1
    # without dome levels: the lungs' centre (the median row of their voxels), as before
    rows = coronal_rows(c["lungs"], c["z_mm"], {}, 2.5)
    assert rows[1] == rows[2] == (int(np.median(np.nonzero(c["lungs"])[1])), "centre")


def test_a_dome_no_row_reaches_is_shown_where_the_floor_comes_closest() -> None:
    """A dome set 50 mm below every floor (on the liver): the row whose diaphragm comes nearest, the lowest one;
    the line then floats under the lung, for the reviewer to see."""
    c = _domed_chest()
    low = {"dome_right": {"z_mm": float(c["z_mm"][0]) - 50.0, "method": "reader"}}
    row, how = coronal_rows(c["lungs"], c["z_mm"], low, 2.5)[1]
    top = lateral_floor_top(floor_maps(c["lungs"], c["z_mm"])[1], "low")
    assert how == "dome" and top[row] == np.nanmin(top[16:65])


@pytest.mark.parametrize("order", ["ascending", "descending", "shuffled"])
def test_floor_z_in_any_slice_order(order: str) -> None:
    c = _domed_chest()
    lung, z = c["lungs"] == 1, c["z_mm"]
    expected = floor_z(lung, z)
    idx = {"ascending": np.arange(len(z)), "descending": np.arange(len(z))[::-1],
           "shuffled": np.random.default_rng(0).permutation(len(z))}[order]
    np.testing.assert_array_equal(floor_z(lung[idx], z[idx]), expected)
    maps = floor_maps(c["lungs"][idx], z[idx])  # both lungs in one pass, each where its own columns are
    np.testing.assert_array_equal(maps[1], expected)
    np.testing.assert_array_equal(maps[2], floor_z(c["lungs"] == 2, z))
    assert np.isnan(expected[0, 0]) and expected[DOME_ROWS[1], 20] == z[PEAK]


def _figure(monkeypatch: pytest.MonkeyPatch, c: dict, **kwargs):
    from matplotlib.figure import Figure

    kept: list = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (kept.append(self), save(self, *a, **k))[1])
    levels_png(c["hu"], c["lungs"], c["z_mm"], c["spacing_zyx"], c["landmarks"], title="t", **kwargs)
    return kept[0]


def test_the_coronal_view_shows_both_domes_at_their_level(monkeypatch: pytest.MonkeyPatch) -> None:
    c = _domed_chest()
    fig = _figure(monkeypatch, c)
    cor = np.asarray(fig.axes[0].images[0].get_array())
    lung_rows = np.nonzero((cor < -500).any(axis=1))[0]
    assert lung_rows.min() == PEAK  # each half's lung floor is its dome (the centre plane: slice 11)
    for half in (cor[:, : cor.shape[1] // 2], cor[:, cor.shape[1] // 2:]):
        assert np.nonzero((half < -500).any(axis=1))[0].min() == PEAK
    assert "through each dome (L half 20 mm behind R)" in fig.axes[0].get_title()  # rows 25 and 35, 2 mm pixels
    names = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert {"cor R", "cor L", "sag"} <= names
    assert "sagittal (A | P) through the lungs' midline" in fig.axes[1].get_title()


def test_the_sagittal_view_goes_through_the_column_given(monkeypatch: pytest.MonkeyPatch) -> None:
    c = _domed_chest()
    c["hu"][:, 30:50, 60:64] = -1000  # an air column off the lungs' midline (column 50)
    fig = _figure(monkeypatch, c, sagittal_x=62)
    assert (np.asarray(fig.axes[1].images[0].get_array()) == -1000).sum() == 80 * 20  # every slice's 20 rows of it
    assert "through the trachea" in fig.axes[1].get_title()
    # a column outside the image is ignored (the midline then)
    fig = _figure(monkeypatch, c, sagittal_x=500)
    assert "through the lungs' midline" in fig.axes[1].get_title()
    assert not (np.asarray(fig.axes[1].images[0].get_array()) == -1000).any()


def _image(arr: np.ndarray, spacing: tuple[float, float, float], origin: tuple[float, float, float]) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def test_trachea_column_is_carried_to_the_original_grid() -> None:
    """The airway on a 2 mm working grid, the picture on a 0.5 mm original grid with another origin: the trachea
    (upper half of the airway) at x = 40 mm is column 100 of the original. A main bronchus spreading to one side
    in the lower half does not pull the column."""
    airway = np.zeros((40, 50, 50), np.uint8)  # [z, y, x], 2 mm
    airway[20:40, 24:27, 19:22] = 1  # trachea: x indices 19-21, centre 20 -> x = 40 mm
    airway[10:20, 24:27, 20:45] = 1  # a long bronchus to the patient's left, below
    work = _image(airway, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    orig = _image(np.zeros((160, 200, 200), np.int16), (0.5, 0.5, 0.5), (-10.0, 0.0, 0.0))
    assert trachea_column(airway, work, orig) == 100
    assert trachea_column(None, work, orig) is None
    assert trachea_column(np.zeros_like(airway), work, orig) is None


def test_trachea_column_follows_the_trachea_between_carina_and_notch() -> None:
    """The trachea runs at x = 40 mm from the carina (z 20 mm) to the notch (z 60 mm) and bends 16 mm to one side in
    the neck above, which is most of the airway's upper half: the column is the chest's (ricord_covid_419639's
    trachea left the plane at the notch)."""
    airway = np.zeros((60, 50, 50), np.uint8)  # [z, y, x], 2 mm: z index k at 2k mm
    airway[6:31, 24:27, 19:22] = 1  # carina to notch: x 40 mm
    airway[31:60, 24:27, 27:30] = 1  # the neck: x 56 mm
    airway[6, 24:27, 10:40] = 1  # the main bronchi at the carina
    work = _image(airway, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    orig = _image(np.zeros((240, 200, 200), np.int16), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0))
    assert trachea_column(airway, work, orig, (13.0, 61.0)) == 80  # x 40 mm
    assert trachea_column(airway, work, orig, (13.0, None)) == 80  # no notch: 60 mm above the carina
    assert trachea_column(airway, work, orig) == 112  # no levels: the upper half, the neck's x 56 mm


def test_the_plane_words() -> None:
    assert qc_levels._coronal_words({1: (20, "dome"), 2: (30, "dome")}) == "through each dome"
    assert qc_levels._coronal_words({1: (20, "dome"), 2: (20, "dome")}) == "through the domes"
    assert qc_levels._coronal_words({1: (20, "centre"), 2: (20, "centre")}) == "through the lungs' centre"
    assert qc_levels._coronal_words({1: (20, "dome"), 2: (30, "centre")}) == "R through its dome, L through its centre"


def test_a_level_detected_with_low_confidence_is_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A base detected with low confidence (its lung may run on below the scan) read like any other detected level;
    it is marked D? and the legend says what that means."""
    c = _domed_chest()
    c["landmarks"]["base_right"] = {"z_mm": float(c["z_mm"][12]), "method": "detected", "confidence": "low"}
    c["landmarks"]["base_left"] = {"z_mm": float(c["z_mm"][11]), "method": "detected", "confidence": "high"}
    fig = _figure(monkeypatch, c)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(t.startswith("base R") and t.endswith(" D?") for t in texts)
    assert any(t.startswith("base L") and t.endswith(" D") for t in texts)
    assert "D? with low confidence" in fig._suptitle.get_text()
    del c["landmarks"]["base_right"]
    assert "D? with low confidence" not in _figure(monkeypatch, c)._suptitle.get_text()


def test_an_uncertain_dome_shows_its_second_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """LANDMARK_UNCERTAIN: the dome keeps its level (D?) and its second reading, where the aerated lung ends over a
    lens of dense tissue, is drawn dotted beside it in both views, for the reviewer to choose; the legend says so."""
    c = _domed_chest()
    z_dome = float(c["landmarks"]["dome_right"]["z_mm"])
    c["landmarks"]["dome_right"] = {**c["landmarks"]["dome_right"], "confidence": "low", "second_z_mm": z_dome + 12}
    fig = _figure(monkeypatch, c)
    for ax in fig.axes[:2]:
        texts = [t.get_text() for t in ax.texts]
        assert f"dome R 2nd {round(z_dome + 12):.0f}" in texts
        assert any(line.get_linestyle() == ":" and line.get_ydata()[0] == pytest.approx(z_dome + 12)
                   for line in ax.lines)
    assert "dotted = an uncertain dome's second reading" in fig._suptitle.get_text()
    del c["landmarks"]["dome_right"]["second_z_mm"]
    fig = _figure(monkeypatch, c)
    assert not any("2nd" in t.get_text() for ax in fig.axes for t in ax.texts)
    assert "second reading" not in fig._suptitle.get_text()


def test_a_level_beyond_the_scan_is_listed_not_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """A level far outside the scan stretched the axis to reach it; with ticks every 10 mm, one at 10^9 mm ran out of
    memory. It is listed in the legend and the views keep the scan's z range."""
    c = _domed_chest()
    c["landmarks"]["apex_left"] = {"z_mm": 1e9, "method": "estimated"}
    c["landmarks"]["base_left"] = {"z_mm": float(c["z_mm"][0]) - 7.0, "method": "detected", "confidence": "high"}
    fig = _figure(monkeypatch, c, note="slices tilted 15.0 degrees from axial")
    legend = fig._suptitle.get_text()
    assert "outside the scan: apex L 1000000000 E, base L -207 D" in legend
    assert "slices tilted 15.0 degrees" in legend
    lo, hi = float(c["z_mm"][0]) - 1.25, float(c["z_mm"][-1]) + 1.25
    for ax in fig.axes:
        assert ax.get_ylim() == pytest.approx((lo, hi))
        assert not any(t.get_text().startswith(("apex L", "base L")) for t in ax.texts)


def test_the_tilt_note_names_the_angle() -> None:
    from pipeline.run import _tilt_note

    assert _tilt_note(["SOLID_LESION:3", "ZONED_AXIALLY:15.0"]).startswith("slices tilted 15.0 degrees from axial")
    assert _tilt_note(["SOLID_LESION:3"]) == ""


def test_a_lung_two_rows_deep_still_gets_a_row() -> None:
    """The 10th and 90th percentiles of rows 3 and 10 (3.7, 9.3) leave no row between them: the picture must not fail
    (it would have failed the scan)."""
    lungs = np.zeros((10, 20, 20), np.uint8)
    lungs[2:8, 3, 2:8] = 1
    lungs[2:8, 10, 2:8] = 1
    z = np.arange(10) * 2.0
    rows = coronal_rows(lungs, z, {"dome_right": {"z_mm": 3.0, "method": "detected"}}, 2.0)
    assert rows[1][1] == "dome" and rows[1][0] in (3, 10)
    assert levels_png(np.where(lungs > 0, -850, 40).astype(np.int16), lungs, z, (2.0, 1.0, 1.0),
                      {"dome_right": {"z_mm": 3.0, "method": "detected"}}).startswith(b"\x89PNG")
