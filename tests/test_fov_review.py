"""Review of pipeline/fov.py: the contact length is the edge the lung faces, on any pixel spacing, and a padding
mask off the lung mask's grid is refused."""

from __future__ import annotations

import numpy as np
import pytest


def _lung_on_left_border(contact_mm: float, sy: float, sx: float, nz: int = 10) -> np.ndarray:
    """A lung block lying against the image's left border over ``contact_mm`` (rows of ``sy`` mm)."""
    rows = int(round(contact_mm / sy))
    lungs = np.zeros((nz, int(80 / sy), int(60 / sx)), np.uint8)
    lungs[:, int(20 / sy):int(20 / sy) + rows, 0:int(15 / sx)] = 1
    return lungs


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 0.7), (0.5, 1.0), (1.0, 0.5)])
def test_contact_length_is_the_edge_the_lung_faces(spacing):
    """A lung against the edge over 4 mm is not a 10 mm contact: the tolerance must not lengthen the contact at
    either end (it counted 4 + 2 x 3 = 10 mm), and anisotropic pixels must not count twice (4 mm counted 15)."""
    from pipeline.fov import fov_flags, lung_fov_contact

    sy, sx = spacing
    for mm in (4.0, 8.0):
        lungs = _lung_on_left_border(mm, sy, sx)
        assert lung_fov_contact(lungs, (2.0, sy, sx))["max_contact_mm"] == pytest.approx(mm, abs=sy)
        assert fov_flags(lungs, (2.0, sy, sx)) == []
        top = np.ascontiguousarray(np.swapaxes(_lung_on_left_border(mm, sx, sy), 1, 2))  # against the top border
        assert lung_fov_contact(top, (2.0, sy, sx))["max_contact_mm"] == pytest.approx(mm, abs=sx)
    assert fov_flags(_lung_on_left_border(12.0, sy, sx), (2.0, sy, sx)) == ["LUNG_CUT_BY_FOV:100"]


def test_contact_along_a_circular_fov_edge_is_its_arc():
    """A lung running along a circular field of view over a known arc, reaching it or stopping 2 mm short."""
    from pipeline.fov import lung_fov_contact

    n, radius = 200, 80.0
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - (n - 1) / 2, xx - (n - 1) / 2)
    theta = np.arctan2(yy - (n - 1) / 2, xx - (n - 1) / 2)
    pad = (r > radius)[None]
    for short in (0.0, 2.0):
        for deg in (20, 45):
            lung = ((np.abs(theta - 0.3) < np.radians(deg) / 2) & (r <= radius - short) & (r > radius - 30))[None]
            arc = radius * np.radians(deg)
            assert lung_fov_contact(lung, (1.0, 1.0, 1.0), pad)["max_contact_mm"] == pytest.approx(arc, rel=0.12)


def test_a_padding_mask_off_the_lung_grid_is_refused():
    """A padding mask of another shape (not resampled with the image) gave a numpy broadcasting error, or, with
    more slices than the lungs, a silently misaligned check."""
    from pipeline.fov import fov_flags

    lungs = np.zeros((5, 40, 40), np.uint8)
    lungs[:, 10:30, 5:15] = 1
    with pytest.raises(ValueError, match="grid"):
        fov_flags(lungs, (1.0, 1.0, 1.0), np.zeros((5, 50, 50), bool))
    with pytest.raises(ValueError, match="grid"):
        fov_flags(lungs, (1.0, 1.0, 1.0), np.zeros((7, 40, 40), bool))


def test_whole_scan_percentages_are_empty_when_a_lung_is_not_found():
    """With one lung not found, percent opacity, PHO, MosMed and mean lung HU were the found lung's, reported as
    the whole scan's (a right lung missing read PO 0 %, CT-0); and with both lungs empty neither side counted as not
    found (the threshold became 0) and the totals were 0, as if healthy."""
    import math

    from tests.test_fov import _score, two_lungs

    lungs = two_lungs()
    lungs[lungs == 1] = 0
    row, _, flags = _score(lungs)
    assert "LUNG_NOT_FOUND:right" in flags
    assert math.isnan(row["percent_opacity"]) and math.isnan(row["percent_high_opacity"])
    assert row["mosmed_category"] == "" and math.isnan(row["mean_lung_hu"])
    assert row["lung_volume_ml_left"] > 0 and not math.isnan(row["mean_lung_hu_left"])  # the found lung's own
    row, _, flags = _score(np.zeros_like(lungs))
    assert {"LUNG_NOT_FOUND:right", "LUNG_NOT_FOUND:left"} <= set(flags)
    assert math.isnan(row["six_zone_total"]) and math.isnan(row["zhang900_total"])
