"""The QC montage and its thumbnail, on small synthetic volumes."""

from __future__ import annotations

import io

import numpy as np
import pytest

from pipeline.qc import MONTAGE_DPI, MONTAGE_SIZE_IN, pick_axial_slices, qc_png, qc_thumbnail

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _size(png: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return img.size


@pytest.fixture(scope="module")
def volume() -> dict:
    return two_lung_volume()


def two_lung_volume(z_step: float = 5.0, z0: float = -200.0) -> dict:
    """Two ellipsoid lungs, a GGO with a consolidated core in the right lung, a faint GGO in the left; 40 slices
    ``z_step`` mm apart from ``z0``."""
    nz, ny, nx = 40, 48, 64
    zz, yy, xx = np.mgrid[:nz, :ny, :nx]
    lungs = np.zeros((nz, ny, nx), np.uint8)
    for label, xc in ((1, 20), (2, 44)):
        lungs[((xx - xc) / 12.0) ** 2 + ((yy - 24) / 16.0) ** 2 + ((zz - 20) / 17.0) ** 2 < 1] = label
    hu = np.where(lungs > 0, -850.0, 40.0)
    classes = np.zeros_like(lungs)
    d2 = (xx - 20) ** 2 + (yy - 30) ** 2 + (zz - 12) ** 2
    classes[(lungs > 0) & (d2 < 25)] = 2
    classes[(lungs > 0) & (d2 < 4)] = 3
    classes[(lungs > 0) & ((xx - 44) ** 2 + (yy - 20) ** 2 + (zz - 28) ** 2 < 9)] = 1
    z_mm = z0 + z_step * np.arange(nz)  # LPS: z increases to the head
    return {"hu": hu, "lungs": lungs, "classes": classes, "z_mm": z_mm, "spacing_zyx": (z_step, 1.5, 1.5),
            "levels": {"carina": z_mm[26], "ipv": z_mm[14], "aortic_arch": z_mm[32], "dome_right": None}}


def test_montage_png_has_the_fixed_size(volume: dict) -> None:
    png = qc_png(title="scan-x  six-zone 5", **volume)
    assert png.startswith(PNG_MAGIC)
    assert _size(png) == (round(MONTAGE_SIZE_IN[0] * MONTAGE_DPI), round(MONTAGE_SIZE_IN[1] * MONTAGE_DPI))


def test_montage_without_lungs_or_landmarks(volume: dict) -> None:
    empty = np.zeros_like(volume["lungs"])
    png = qc_png(volume["hu"], empty, empty, volume["z_mm"], volume["spacing_zyx"], {})
    assert _size(png) == (round(MONTAGE_SIZE_IN[0] * MONTAGE_DPI), round(MONTAGE_SIZE_IN[1] * MONTAGE_DPI))


def test_axial_picks_follow_the_zones(volume: dict) -> None:
    picks = pick_axial_slices(volume["lungs"], volume["classes"], volume["z_mm"], volume["levels"])
    assert [p.label for p in picks] == ["upper zone", "middle zone", "lower zone", "most lesion"]
    z = {p.label: volume["z_mm"][p.k] for p in picks}
    carina, ipv = volume["levels"]["carina"], volume["levels"]["ipv"]
    assert z["upper zone"] > carina > z["middle zone"] > ipv > z["lower zone"]
    most = int(np.argmax((volume["classes"] > 0).sum(axis=(1, 2))))
    assert picks[-1].k == most


def test_without_zone_planes_the_lungs_are_split_in_thirds(volume: dict) -> None:
    picks = pick_axial_slices(volume["lungs"], volume["classes"], volume["z_mm"], {"carina": None})
    assert [p.label for p in picks[:3]] == ["upper third", "middle third", "lower third"]
    assert picks[0].k > picks[1].k > picks[2].k  # z increases with the index here


def test_arrays_that_disagree_are_refused(volume: dict) -> None:
    with pytest.raises(ValueError, match="disagree"):
        qc_png(volume["hu"][:-1], volume["lungs"], volume["classes"], volume["z_mm"], volume["spacing_zyx"], {})


def test_thumbnail_is_320_wide_with_the_aspect_kept(volume: dict) -> None:
    png = qc_png(**volume)
    thumb = qc_thumbnail(png)
    assert thumb.startswith(PNG_MAGIC)
    w, h = _size(png)
    assert _size(thumb) == (320, round(h * 320 / w))
    assert len(thumb) < len(png)


def test_estimated_zone_planes_are_drawn_differently(volume: dict) -> None:
    """An estimated IPV (the usual case) is dashed and labelled "(est.)", so the picture does not pass it off as
    found in the image; naming a level that is not a zone plane changes nothing."""
    import matplotlib.axes

    drawn: list[tuple[str, object]] = []
    original = matplotlib.axes.Axes.axhline

    def spy(self, y=0, *args, **kwargs):
        drawn.append((kwargs.get("linestyle", "-"), y))
        return original(self, y, *args, **kwargs)

    matplotlib.axes.Axes.axhline = spy
    try:
        plain = qc_png(**volume)
        styles_plain = [s for s, _ in drawn]
        drawn.clear()
        dashed = qc_png(**volume, estimated={"ipv"})
        styles_est = [s for s, _ in drawn]
        drawn.clear()
        same = qc_png(**volume, estimated={"aortic_arch"})
    finally:
        matplotlib.axes.Axes.axhline = original
    assert styles_plain == ["-", "-"] and sorted(styles_est) == ["-", "--"]
    assert dashed != plain and same == plain


def test_the_soft_tissue_column_shows_the_densest_slice_and_the_base(volume: dict, monkeypatch) -> None:
    """The right-hand column: the slice with the most consolidation (C; else the most lesion or the lungs' middle,
    S) and the lung base (E), in W 400 / L 40, where fluid is mid grey, not near white as in the lung window."""
    import matplotlib.axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pipeline.qc import SOFT_TISSUE_WINDOW_HU, _soft_panel, soft_tissue_slices

    lungs, classes, z = volume["lungs"], volume["classes"], volume["z_mm"]
    dense, base = soft_tissue_slices(lungs, classes, z)
    assert (dense.tag, dense.label, dense.k) == ("C", "most consolidation",
                                                int(np.argmax((classes == 3).sum(axis=(1, 2)))))
    ks = np.nonzero(lungs.any(axis=(1, 2)))[0]
    assert (base.tag, base.k) == ("E", int(ks[np.argmin(np.abs(z[ks] - (z[ks].min() + 0.15 * np.ptp(z[ks]))))]))
    # a speck of consolidation (0.4 mL here) says nothing: the most lesion instead
    voxel_ml = float(np.prod(volume["spacing_zyx"])) / 1000.0
    assert 0 < (classes == 3).sum() * voxel_ml < 1.0
    assert soft_tissue_slices(lungs, classes, z, voxel_ml)[0].label == "most lesion"
    # the base cut off: the lowest lung slice, said so
    cut = soft_tissue_slices(lungs[5:], classes[5:], z[5:], voxel_ml)[1]
    assert (cut.label, cut.k) == ("lowest lung (base cut off)", 0)
    no_consolidation = np.where(classes == 3, 2, classes)
    assert soft_tissue_slices(lungs, no_consolidation, z)[0].label == "most lesion"
    assert soft_tissue_slices(lungs, np.zeros_like(classes), z)[0].label == "lung centre"
    titles: list[str] = []
    set_title = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, label, *a, **k: titles.append(str(label)) or set_title(self, label, *a, **k))
    qc_png(**volume)
    assert titles[-2:] == ["S  most lesion", "E  lung base (effusion site)"]
    # fluid of 10 HU: mid grey in the soft-tissue window
    fig = Figure(figsize=(1, 1), dpi=50)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    _soft_panel(ax, np.full((20, 20), 10.0), np.zeros((20, 20)), np.zeros((20, 20), np.uint8), 1.0)
    fig.canvas.draw()
    grey = np.asarray(fig.canvas.buffer_rgba())[25, 25, 0] / 255.0
    low, high = SOFT_TISSUE_WINDOW_HU
    assert abs(grey - (10.0 - low) / (high - low)) < 0.03
