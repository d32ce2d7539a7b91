"""Third review of the QC pictures (qc.png, levels.png) and the run report (report.html).

Small synthetic arrays and fake run folders only; no real CT needed.
"""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import matplotlib.axes
import numpy as np
import pytest

import pipeline.qc as qc
import pipeline.qc_levels as qc_levels
from pipeline.report import write_run_report
from tests.test_report import _write_csv, fake_run  # noqa: F401 - fake_run is a fixture

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _chest(nz: int = 30, ny: int = 48, nx: int = 64, dz: float = 8.0) -> dict:
    """Two ellipsoid lungs in a body filling the grid; slices ``dz`` mm apart, z increasing with the index."""
    zz, yy, xx = np.ogrid[:nz, :ny, :nx]
    lungs = np.zeros((nz, ny, nx), np.uint8)
    for label, xc in ((1, nx * 0.3), (2, nx * 0.7)):
        lungs[((xx - xc) / (nx * 0.17)) ** 2 + ((yy - ny / 2) / (ny * 0.35)) ** 2
              + ((zz - (nz - 1) / 2) / (nz * 0.45)) ** 2 < 1] = label
    hu = np.full(lungs.shape, 40, np.int16)
    hu[lungs > 0] = -850
    return {"hu": hu, "lungs": lungs, "classes": np.zeros_like(lungs), "z_mm": 100.0 + dz * np.arange(nz),
            "spacing_zyx": (dz, 0.7, 0.7)}


def _keep_figure(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures levels_png saves (on their own canvas, no pyplot), kept to look at what was drawn."""
    from matplotlib.figure import Figure

    kept: list = []
    save = Figure.savefig

    def keep(self, *args, **kwargs):
        kept.append(self)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return kept


# ---------------------------------------------------------------------------------------------- qc.png


def test_zone_plane_is_drawn_at_its_z_not_at_the_nearest_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    """8 mm slices (lung_pet_ct_dx_A0002): the carina 3 mm above a slice was drawn through that slice's centre,
    up to half a slice (4 mm) off its z, and through a slice of the other zone. The plane must lie at its own z,
    between the rows of the slices it separates."""
    case = _chest()
    z = case["z_mm"]
    carina, ipv = float(z[18]) + 3.0, float(z[9]) + 6.0
    drawn: list[float] = []
    original = matplotlib.axes.Axes.axhline

    def spy(self, y=0, *args, **kwargs):
        drawn.append(float(y))
        return original(self, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", spy)
    qc.qc_png(**case, levels={"carina": carina, "ipv": ipv})
    # the coronal's rows run from the top slice down, one slice (8 mm) each
    assert len(drawn) == 2
    r_carina, r_ipv = sorted(drawn)
    assert r_ipv - r_carina == pytest.approx((carina - ipv) / 8.0)
    assert r_carina % 1 == pytest.approx(1 - 3.0 / 8.0)  # 3 mm above slice 18: 5/8 of a row below slice 19's row
    assert r_ipv % 1 == pytest.approx(1 - 6.0 / 8.0)


def test_one_slice_series_gives_a_picture_not_a_crash() -> None:
    """A one-slice series (selection.min_slices lowered): the coronal view is one row, and drawing the lung
    outline on it raised TypeError ("Input z must be at least a (2, 2) shaped array"), which failed the scan."""
    case = _chest(nz=1)
    case["lungs"][0, 10:38, 8:28] = 1
    case["lungs"][0, 10:38, 36:56] = 2
    png = qc.qc_png(**case, levels={})
    assert png.startswith(PNG_MAGIC)


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def large() -> dict:
    """A chest where a third of the voxels are lung (a 600-slice scan has 40 million lung voxels)."""
    return _chest(nz=120, ny=256, nx=256, dz=2.0)


def test_montage_memory_stays_near_the_mask_size(large: dict) -> None:
    """The coronal plane was placed at np.nonzero(lungs)[1].mean(): three int64 indices per lung voxel, 24 bytes a
    voxel, about 1 GB more at the peak for a 600-slice scan, on top of the pipeline's own arrays."""
    qc.qc_png(**large, levels={})  # imports and font cache outside the measurement
    peak = _peak_bytes(lambda: qc.qc_png(**large, levels={}))
    assert peak < 5 * large["lungs"].nbytes, (peak, large["lungs"].nbytes)


def test_levels_memory_stays_near_the_mask_size(large: dict) -> None:
    """The same in levels.png: np.nonzero over the lungs (and the airway) for a median and a midpoint."""
    airway = np.zeros_like(large["lungs"])
    airway[60:, 120:136, 124:132] = 1
    args = (large["hu"], large["lungs"], large["z_mm"], large["spacing_zyx"], {})
    qc_levels.levels_png(*args, airway=airway)
    peak = _peak_bytes(lambda: qc_levels.levels_png(*args, airway=airway))
    assert peak < 5 * large["lungs"].nbytes, (peak, large["lungs"].nbytes)


def test_levels_centre_is_the_median_and_midpoint_as_before() -> None:
    """The counts-based centre gives the same planes as the voxel lists did."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        counts = rng.integers(0, 4, size=int(rng.integers(1, 9)))
        if counts.sum():
            assert qc_levels._median_index(counts) == int(np.median(np.repeat(np.arange(counts.size), counts)))


# ------------------------------------------------------------------------------------------- levels.png


def _levels_figure(monkeypatch: pytest.MonkeyPatch, hu_value: int = 40):
    case = _chest(nz=60, dz=4.0)
    case["hu"][:] = np.where(case["lungs"] > 0, -850, hu_value)
    z = case["z_mm"]
    lms = {"carina": {"z_mm": float(z[35]), "method": "detected"},
           "rul_takeoff": {"z_mm": float(z[35]) - 3.0, "method": "detected"},  # 3 mm apart, as on ricord_covid_419639
           "bronchus_intermedius": {"z_mm": float(z[30]), "method": "estimated"},
           "aortic_arch": {"z_mm": float(z[44]), "method": "estimated"},
           "apex_right": {"z_mm": float(z[55]), "method": "detected"},
           "apex_left": {"z_mm": float(z[55]) + 4.0, "method": "detected"},
           "base_left": {"z_mm": float(z[3]), "method": "detected"}}
    kept = _keep_figure(monkeypatch)
    png = qc_levels.levels_png(case["hu"], case["lungs"], z, case["spacing_zyx"], lms, title="x")
    assert png.startswith(PNG_MAGIC) and len(kept) == 1
    return kept[0]


def test_level_labels_do_not_hide_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """The carina and the RUL take-off 3 mm apart (ricord_covid_419639): the RUL label was drawn over the carina's,
    the six-zone boundary, and the two apex labels overlapped on the sagittal view. No two labels may overlap."""
    fig = _levels_figure(monkeypatch)
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.texts]
        assert len(boxes) >= 7
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), (a, b)


def _luminance(rgb) -> float:
    c = np.asarray(rgb[:3], float)
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(c @ [0.2126, 0.7152, 0.0722])


def test_level_labels_are_readable_on_bright_tissue(monkeypatch: pytest.MonkeyPatch) -> None:
    """The labels sat on a half-transparent box: over bone or soft tissue (white in the lung window) it was mid
    grey, the colour of the BI, arch and base labels (contrast about 1:1, unreadable). The box must give the
    label colours a contrast of at least 3:1 over white."""
    from matplotlib.colors import to_rgba

    fig = _levels_figure(monkeypatch, hu_value=400)
    fig.canvas.draw()
    for ax in fig.axes:
        for t in ax.texts:
            patch = t.get_bbox_patch()
            if patch is None:  # the names of the planes, under the views: white on the black figure
                renderer = fig.canvas.get_renderer()
                assert t.get_color() == "white"
                assert t.get_window_extent(renderer).y1 <= ax.get_window_extent(renderer).y0
                continue
            r, g, b, a = patch.get_facecolor()
            box = np.array([r, g, b]) * a + (1 - a)  # the box over a white background
            fg = to_rgba(t.get_color())
            lo, hi = sorted((_luminance(box), _luminance(fg)))
            assert (hi + 0.05) / (lo + 0.05) >= 3.0, (t.get_text(), box)


# ----------------------------------------------------------------------------------------- report.html


def test_failure_code_badge_says_why(fake_run: Path) -> None:  # noqa: F811
    """A failed series' badge (NO_LUNG_FOUND, TIMEOUT, WORKER_DIED: codes pipeline.flags does not explain) had no
    tooltip, unlike every QC flag: it must carry the failure's reason, escaped and without the input path."""
    failed = {"scan_id": "scan-cccccccccccc", "series_uid": "1.2.3", "code": "NO_LUNG_FOUND",
              "message": "no lung found in this series (0 mL of lung) <x> & \"q\" in /data/DOE^JOHN/s1",
              "path": "/data/DOE^JOHN/s1"}
    _write_csv(fake_run / "failures.csv", [failed], list(failed))
    html = write_run_report(fake_run).read_text(encoding="utf-8")
    # the code's fixed meaning, not the message (it can name patient-named files: an audit, 2026-12-07)
    badge = re.search(r'<span class="flag" title="failed: ([^"]*)">NO_LUNG_FOUND</span>', html)
    assert badge and "no lung found in the series" in badge.group(1) and "failures.csv" in badge.group(1)
    assert "DOE^JOHN" not in html and "&lt;x&gt;" not in html
