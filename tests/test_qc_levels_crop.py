"""levels.png shows the chest, not the field of view: the views are cropped to the body and the lungs."""

from __future__ import annotations

import io

import numpy as np

from pipeline.qc_levels import VIEW_MARGIN_MM, levels_png, view_span


def _chest(pad: int = 0):
    """An elliptical body (40 HU) with two lungs (-850 HU) in air, 2 mm pixels; ``pad`` pixels of air each side."""
    nz, ny, nx = 40, 100, 140
    z, y, x = np.mgrid[0:nz, 0:ny, 0:nx]
    hu = np.full((nz, ny, nx), -1000.0, np.float32)
    hu[((y - 50) / 40.0) ** 2 + ((x - 70) / 60.0) ** 2 <= 1] = 40.0
    lungs = np.zeros((nz, ny, nx), np.uint8)
    for label, xc in ((1, 45), (2, 95)):
        inside = ((y - 50) / 28.0) ** 2 + ((x - xc) / 20.0) ** 2 + ((z - 20) / 17.0) ** 2 <= 1
        lungs[inside] = label
    hu[lungs > 0] = -850.0
    if pad:
        hu = np.pad(hu, ((0, 0), (pad, pad), (pad, pad)), constant_values=-1000.0)
        lungs = np.pad(lungs, ((0, 0), (pad, pad), (pad, pad)))
    return hu, lungs, np.arange(nz) * 2.5, (2.5, 2.0, 2.0)


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("L")).astype(int)


def test_a_wide_field_of_view_gives_the_same_picture():
    lms = {"carina": {"z_mm": 50.0, "method": "detected"}, "dome_right": {"z_mm": 20.0, "method": "estimated"}}
    small = _pixels(levels_png(*_chest(), lms, title="t"))
    wide = _pixels(levels_png(*_chest(pad=80), lms, title="t"))  # 140 -> 300 pixels: 280 -> 600 mm across
    assert small.shape == wide.shape
    # the same chest at the same size (uncropped, the wide one drew it at less than half the width)
    assert np.mean(np.abs(small - wide) > 40) < 0.002


def test_view_span_keeps_body_lungs_and_the_margin():
    img = np.full((5, 50), -1000.0)
    img[:, 20:30] = 0.0
    lung_cols = np.zeros(50, bool)
    m = int(np.ceil(VIEW_MARGIN_MM / 2.0))
    assert view_span(img, lung_cols, 2.0) == (20 - m, 30 + m)
    lung_cols[8] = True  # a lung voxel outside this slice's body still shows
    assert view_span(img, lung_cols, 2.0) == (8 - m, 30 + m)
    assert view_span(np.full((5, 50), -1000.0), np.zeros(50, bool), 2.0) == (0, 50)  # nothing: every column
    assert view_span(img, np.zeros(50, bool), 0.5) == (0, 50)  # the margin stops at the edges
