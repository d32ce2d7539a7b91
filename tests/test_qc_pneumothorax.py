"""qc.png outlines a suspected pneumothorax (PNEUMOTHORAX_SUSPECT): dotted white where a lung-window view crosses
it, with a legend entry that gives the z of its largest slice; the legend's one row stays inside the picture and
clear of the window note."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pipeline import qc
from pipeline.qc import PNEUMOTHORAX_COLOUR, pneumothorax_z_mm, qc_png
from tests.test_qc import two_lung_volume


def _rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert("RGB")).astype(int)


@pytest.fixture(scope="module")
def volume() -> dict:
    v = two_lung_volume()
    lungs = v["lungs"]
    # a lateral sheet of air along the right lung (x < 14: its outer third), the whole height of the lung
    ptx = (lungs == 1) & (np.arange(lungs.shape[2])[None, None, :] < 14)
    v["hu"] = np.where(ptx, -1000.0, v["hu"])
    v["ptx"] = ptx
    return v


def _draw(v: dict, ptx=None) -> bytes:
    return qc_png(v["hu"], v["lungs"], v["classes"], v["z_mm"], v["spacing_zyx"], v["levels"], title="scan-x",
                  flags=["PNEUMOTHORAX_SUSPECT:25"], pneumothorax=ptx)


def _white(rgb: np.ndarray) -> np.ndarray:
    white = np.array([int(PNEUMOTHORAX_COLOUR[i:i + 2], 16) for i in (1, 3, 5)])
    return (np.abs(rgb - white) <= 30).all(axis=-1)


def test_the_suspected_pneumothorax_is_outlined_in_the_views_that_cross_it(volume):
    without, with_ = _rgb(_draw(volume)), _rgb(_draw(volume, volume["ptx"]))
    assert without.shape == with_.shape
    new_white = _white(with_) & ~_white(without)
    new_white[-50:] = False  # the legend's row: its sixth entry moves and shrinks the others
    # the views: the coronal view (left 40 %) and the 2 x 2 lung-window grid (40-80 %); the soft-tissue column
    # (right fifth) is not outlined, nor is anything above the panels
    w = with_.shape[1]
    assert new_white[:, : int(0.4 * w)].sum() > 50, "no dotted outline in the coronal view"
    assert new_white[:, int(0.4 * w): int(0.8 * w)].sum() > 100, "no dotted outline in the axial slices"
    assert new_white[: int(0.8 * with_.shape[0]), int(0.8 * w):].sum() == 0, "outlined in the soft-tissue column"


def test_no_pneumothorax_draws_the_picture_as_before(volume):
    base = _draw(volume)
    assert _draw(volume, np.zeros_like(volume["ptx"])) == base  # an empty mask: no outline, no legend entry
    assert _draw(volume, None) == base


def test_a_mask_of_another_shape_is_refused(volume):
    with pytest.raises(ValueError, match="pneumothorax"):
        _draw(volume, volume["ptx"][:-1])


def test_the_legend_gives_the_largest_slice_and_fits_in_one_row(volume):
    ptx = np.zeros_like(volume["ptx"])
    ptx[30] = volume["ptx"][20]
    ptx[31, :2, :2] = True
    assert pneumothorax_z_mm(ptx, volume["z_mm"]) == volume["z_mm"][30]
    rgb = _rgb(_draw(volume, volume["ptx"]))
    assert not (rgb[-45:, -3:] > 60).any(), "the legend runs past the picture's right edge"


@pytest.mark.parametrize("extra", [0, 1])
def test_the_legend_shrinks_to_fit_right_of_the_window_note(extra):
    """The montage's own layout (five entries, six with a suspected pneumothorax): the sixth entry, with the longest
    z it can give, is set smaller, never over the note nor past the edge; five entries keep 12 pt."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    from pipeline.qc import MONTAGE_DPI, MONTAGE_SIZE_IN, legend_right_of

    fig = Figure(figsize=MONTAGE_SIZE_IN, dpi=MONTAGE_DPI)
    FigureCanvasAgg(fig)
    note = fig.text(0.005, 0.01, "lung window W 1500 / L -600\nright column: soft tissue W 400 / L 40", fontsize=9)
    names = ["faint GGO", "GGO", "consolidation", "lung", "consolidation, soft tissue"]
    names += ["pneumothorax? largest z=-1109 mm"] * extra
    legend = legend_right_of(fig, note, [Patch()] * len(names), names)
    r = fig.canvas.get_renderer()
    box, note_box = legend.get_window_extent(r), note.get_window_extent(r)
    assert box.x0 > note_box.x1 and box.x1 <= fig.bbox.width
    if extra == 0:
        assert legend.get_texts()[0].get_fontsize() == 12
    if extra == 1:
        assert legend.get_texts()[0].get_fontsize() < 12


def test_a_run_outlines_what_the_flag_measured(tmp_path, monkeypatch):
    """The wiring, end to end on a small generated chest: the mask behind PNEUMOTHORAX_SUSPECT (made on the working
    grid) reaches qc_png on the CT's own grid; a scan without one draws no outline."""
    import pandas as pd

    from pipeline import hu_checks, qc
    from pipeline.batch import BatchOptions
    from pipeline.config import load_config
    from pipeline.run import run_pipeline
    from tests.scripts_loader import load_script

    load_script("benchmark_batch").write_chest_series(tmp_path / "in" / "s00", 0)
    real_measure, real_png = hu_checks.pneumothorax, qc.qc_png
    drawn = []

    def with_air(hu, lungs, spacing_zyx, airway=None):  # the right lung's lateral third taken as a pneumothorax
        m, _ = real_measure(hu, lungs, spacing_zyx, airway)
        xs = np.flatnonzero((lungs == 1).any(axis=(0, 1)))
        mask = (lungs == 1) & (np.arange(lungs.shape[2]) < xs[0] + (xs[-1] - xs[0]) // 3)
        m["pneumothorax_ml_right"] = round(float(mask.sum()) * float(np.prod(spacing_zyx)) / 1000.0, 1)
        return m, mask

    def keep(*args, **kwargs):
        assert kwargs.get("pneumothorax") is None or kwargs["pneumothorax"].shape == args[0].shape  # the CT's grid
        drawn.append(kwargs.get("pneumothorax"))
        return real_png(*args, **kwargs)

    monkeypatch.setattr(qc, "qc_png", keep)
    cfg = load_config(overrides=["resample.spacing_mm=[3,3,3]"],
                      extra={"segmentation": {"method": "classical"}, "outputs": {"write_masks": False}})
    run_pipeline(tmp_path / "in", tmp_path / "out0", cfg, batch=BatchOptions(progress=False))
    monkeypatch.setattr(hu_checks, "pneumothorax", with_air)
    run_pipeline(tmp_path / "in", tmp_path / "out1", cfg, batch=BatchOptions(progress=False))
    assert drawn[0] is None
    ptx = drawn[1]
    assert ptx is not None and ptx.dtype == bool and ptx.any()
    scans = pd.read_csv(tmp_path / "out1" / "scans.csv")
    assert any(f.startswith("PNEUMOTHORAX_SUSPECT:") for f in scans.loc[0, "qc_flags"].split(";"))
    folder = next((tmp_path / "out1").glob("scan-*"))
    assert (folder / "qc.png").stat().st_size > 0

    # without qc.png the mask on the CT's grid is not made (150 MiB as bool for a 512 x 512 x 600 CT); the flag stays
    from pipeline.run import analyse_volume
    from segmentation.factory import build_segmenter
    from segmentation.training import load_series_lps

    img = load_series_lps(tmp_path / "in" / "s00")
    for write in (True, False):
        c = load_config(overrides=["resample.spacing_mm=[3,3,3]"],
                        extra={"segmentation": {"method": "classical"}, "outputs": {"write_qc_png": write}})
        res = analyse_volume(img, c, build_segmenter(c))
        assert res["hu_check"]["pneumothorax_ml_right"] > 0
        assert (res["pneumothorax"] is not None) == write


@pytest.fixture()
def spy(monkeypatch):
    """The legend's names and, per dotted contour drawn, its colour, style and number of rings (a review's tests)."""
    from matplotlib.axes import Axes

    got = {"names": None, "ptx": []}
    real_legend, real_contour = qc.legend_right_of, Axes.contour

    def legend(fig, note, handles, names):
        got["names"] = list(names)
        return real_legend(fig, note, handles, names)

    def contour(self, *a, **k):
        cs = real_contour(self, *a, **k)
        if k.get("linestyles") is not None:
            got["ptx"].append((k["colors"], k["linestyles"], len(cs.allsegs[0])))
        return cs

    monkeypatch.setattr(qc, "legend_right_of", legend)
    monkeypatch.setattr(Axes, "contour", contour)
    return got


def test_the_legend_names_the_slice_with_the_most_air_not_the_first(spy):
    v = two_lung_volume(z0=-200.5)
    lat = (v["lungs"] == 1) & (np.arange(64)[None, None, :] < 14)
    ptx = np.zeros_like(lat)
    ptx[30] = lat[20]  # the largest slice
    ptx[10, 20:22, 10:12] = True  # smaller ones, below and above it
    ptx[35, 20:22, 10:12] = True
    qc_png(v["hu"], v["lungs"], v["classes"], v["z_mm"], v["spacing_zyx"], v["levels"], pneumothorax=ptx)
    assert spy["names"][-1] == "pneumothorax? largest z=-50.5 mm" == f"pneumothorax? largest z={v['z_mm'][30]:.1f} mm"


def test_scattered_working_grid_voxels_draw_no_rings_and_the_outline_is_dotted_white(spy):
    """On a CT of 0.63 mm pixels a 1.5 mm working-grid voxel is a 3 x 3 pixel blob: blobs scattered over the lung (as
    at the air's top and bottom slices) add no rings of their own to a sheet's outline."""
    v = two_lung_volume()
    sp = (5.0, 0.63, 0.63)
    lat = (v["lungs"] == 1) & (np.arange(64)[None, None, :] < 14)
    qc_png(v["hu"], v["lungs"], v["classes"], v["z_mm"], sp, v["levels"], pneumothorax=lat)
    clean = sum(n for _, _, n in spy["ptx"])
    spy["ptx"].clear()
    rng = np.random.default_rng(0)
    blobs = np.zeros_like(lat)
    for k in range(lat.shape[0]):
        for _ in range(6):
            y, x = rng.integers(8, 40), rng.integers(16, 60)
            blobs[k, y:y + 3, x:x + 3] = True
    qc_png(v["hu"], v["lungs"], v["classes"], v["z_mm"], sp, v["levels"], pneumothorax=lat | (blobs & (v["lungs"] > 0)))
    noisy = sum(n for _, _, n in spy["ptx"])
    assert clean >= 5 and noisy <= clean + 2, (clean, noisy)
    assert {(c, s) for c, s, _ in spy["ptx"]} == {("#ffffff", ":")}
    assert qc.PNEUMOTHORAX_COLOUR.lower() != qc.LUNG_COLOUR.lower()


def test_an_anterior_pneumothorax_shows_on_the_coronal_view(volume):
    """The coronal view cuts the lungs' centre, which an anterior sheet (the usual place on a supine scan) never
    reaches: it is outlined there as seen from the front."""
    v = volume
    front = (v["lungs"] > 0) & (np.arange(48)[None, :, None] < 14)  # y is anterior -> posterior: the front rows
    assert not front[:, 24, :].any()  # not in the centre plane
    without, with_ = _rgb(_draw(v)), _rgb(_draw(v, front))
    new_white = _white(with_) & ~_white(without)
    new_white[-50:] = False  # the legend's row: its sixth entry moves and shrinks the others
    assert new_white[:, : int(0.4 * with_.shape[1])].sum() > 50, "no outline on the coronal view"


@pytest.mark.parametrize("seed", [0, 1])
def test_the_legend_text_z_is_that_of_the_panels_titles(seed):
    z = np.array([-0.4, 10.25, -184.5])[seed:]
    m = np.zeros((len(z), 4, 4), bool)
    m[0] = True
    assert f"{pneumothorax_z_mm(m, z) + 0:.1f}" == ("-0.4" if seed == 0 else "10.2")
