"""qc.png outlines a suspected pneumothorax (PNEUMOTHORAX_SUSPECT): dotted white where a lung-window view crosses
it, with a legend entry that gives the z of its largest slice; the legend's one row stays inside the picture and
clear of the window note."""

from __future__ import annotations

import io

import numpy as np
import pytest

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
