"""Accessibility of the run report and QC pictures (an audit by a colour-blind researcher and a web-accessibility
reviewer): lesion colours that stay apart under colour blindness and in greyscale print, keyboard sorting, table
semantics, visible score ranges and abbreviations, flag values with their unit, swatches visible in print."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from skimage.color import deltaE_ciede2000, rgb2lab

from pipeline.flags import unit_of
from pipeline.report import render_run_report

# Machado, Oliveira & Fernandes 2009, severity 1.0, on linear RGB
MACHADO = {
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}


def _linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0, 1)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def _seen(rgb: np.ndarray, vision: str) -> np.ndarray:
    lin = _linear(rgb)
    if vision == "greyscale":
        return _srgb(np.full(3, lin @ np.array([0.2126, 0.7152, 0.0722])))
    return _srgb(MACHADO[vision] @ lin) if vision in MACHADO else rgb


#: Blocks of the rendered test strip: (name, HU, lesion class); each 40 x 40 pixels, the label 32 x 32 inside.
STRIP = [("lung", -850.0, 0), ("faint GGO", -650.0, 1), ("GGO", -450.0, 2), ("consolidation", 10.0, 3),
         ("GGO label on aerated lung", -850.0, 2), ("faint GGO label on aerated lung", -850.0, 1),
         ("unlabelled effusion", 5.0, 0), ("consolidation at -100 HU", -100.0, 3)]


def draw_panel(hu: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The RGB (0-1) of :func:`pipeline.qc._panel` drawing ``hu`` with these lesion classes (no lung outline), 2 pixels
    per voxel, hatched as the QC montage hatches: the montage's own drawing."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    from pipeline import qc

    with qc.hatch_style():
        fig = Figure(figsize=(hu.shape[1] / 50, hu.shape[0] / 50), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        qc._panel(ax, hu, np.zeros_like(classes), classes, 1.0)
        ax.set_axis_off()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return np.asarray(Image.open(buf).convert("RGB"), dtype=float) / 255


@pytest.fixture(scope="module")
def strip_pixels() -> dict[str, np.ndarray]:
    """Each block's central pixels (RGB 0-1) as :func:`pipeline.qc._panel` draws it: the QC montage's own drawing."""
    hu = np.zeros((40, 40 * len(STRIP)))
    classes = np.zeros(hu.shape, np.uint8)
    for i, (_, h, c) in enumerate(STRIP):
        hu[:, 40 * i:40 * i + 40] = h
        classes[4:36, 40 * i + 4:40 * i + 36] = c
    img = draw_panel(hu, classes)
    scale = img.shape[1] / hu.shape[1]
    return {name: img[int(10 * scale):int(30 * scale), int((40 * i + 10) * scale):int((40 * i + 30) * scale)]
            for i, (name, _, _) in enumerate(STRIP)}


VISIONS = ["normal", "deuteranopia", "protanopia", "tritanopia", "greyscale"]


@pytest.mark.parametrize("vision", VISIONS)
def test_lesion_classes_stay_apart_from_lung_and_each_other(strip_pixels, vision):
    """As drawn over what each class lies on, every class differs from aerated lung, and the fills from each other,
    by 15 CIEDE2000 or more (mean colour of the block). The old dark wine fill over consolidation was 5.2 from lung under
    deuteranopia and 2.0 in greyscale: consolidation looked like aerated lung."""
    lab = {n: rgb2lab(_seen(px.reshape(-1, 3).mean(0), vision).reshape(1, 1, 3)).reshape(3)
           for n, px in strip_pixels.items()}
    for a, b in (("faint GGO", "lung"), ("GGO", "lung"), ("consolidation", "lung"), ("consolidation at -100 HU", "lung"),
                 ("faint GGO", "GGO"), ("consolidation", "unlabelled effusion")):
        assert deltaE_ciede2000(lab[a], lab[b]) >= 15, (vision, a, b)


@pytest.mark.parametrize("vision", VISIONS)
def test_the_ct_shows_under_the_fills(strip_pixels, vision):
    """A false positive (a GGO label on aerated lung) looks different from real ground glass under the same label: the
    fill is half transparent (at 0.7: 5.6 CIEDE2000 for GGO, 3.7 for faint GGO)."""
    lab = {n: rgb2lab(_seen(px.reshape(-1, 3).mean(0), vision).reshape(1, 1, 3)).reshape(3)
           for n, px in strip_pixels.items()}
    assert deltaE_ciede2000(lab["GGO"], lab["GGO label on aerated lung"]) >= 9, vision
    assert deltaE_ciede2000(lab["faint GGO"], lab["faint GGO label on aerated lung"]) >= 6, vision


def test_consolidation_is_hatched_and_the_fills_are_even(strip_pixels):
    """Consolidation is told from GGO by its hatching (a texture, whatever the colour vision), not by a fill colour:
    its block has stripes (a wide spread of greyscale lightness), the fills have none."""
    def spread(name: str) -> float:
        grey = _linear(strip_pixels[name]) @ np.array([0.2126, 0.7152, 0.0722])
        return float(np.percentile(grey, 90) - np.percentile(grey, 10))

    assert spread("consolidation") > 0.3 and spread("consolidation at -100 HU") > 0.3
    assert spread("GGO") < 0.02 and spread("faint GGO") < 0.02


def test_flag_units():
    assert unit_of("DENSE_LUNG:-620") == "HU" and unit_of("METAL:0.8") == "mL" and unit_of("THICK_SLICES:8") == "mm"
    assert unit_of("CONTRAST") == "" and unit_of("LUNG_NOT_FOUND:right") == ""
    assert unit_of("PARTIAL_LUNG_COVERAGE") == ""


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    row = {"scan_id": "scan-0123456789ab", "patient_id": "pt-0123456789", "status": "ok", "six_zone_total": "6",
           "zhang900_total": "117", "percent_opacity": "10.8", "percent_high_opacity": "3.1",
           "mosmed_category": "CT-1", "lung_volume_ml_right": "2500", "lung_volume_ml_left": "2200",
           "lesion_volume_ml": "500", "qc_flags": "DENSE_LUNG:-620;CONTRAST"}
    with (tmp_path / "scans.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(row))
        w.writeheader()
        w.writerow(row)
    config = {"hu_classes": {"faint_ggo": [-760, -560], "ggo": [-560, -310], "consolidation": [-310, 100],
                             "high_opacity_min_hu": -210}}
    (tmp_path / "run.json").write_text(json.dumps({"ctscore_version": "0.2.0", "config": config, "n_series": 1,
                                                   "finished_at": "2026-12-05T06:24:43+0000"}))
    return tmp_path


def test_report_headers_are_keyboard_sortable_column_headers(run_dir):
    html = render_run_report(run_dir)
    head = html.split("<thead>")[1].split("</thead>")[0]
    assert head.count("<th ") == head.count('scope="col"') >= 14
    assert head.count('<button type="button" class="sort">') == head.count("data-col=")
    assert "<th scope=\"col\" title=\"QC montage (click for full size)\">QC montage</th>" in head  # not empty
    # the sort arrows only once the script runs (without JavaScript nothing suggests sorting)
    assert 'classList.add("js-sort")' in html and "table.sortable th[data-col]::after" not in html


def test_report_shows_ranges_units_and_the_run_s_hu_bands(run_dir):
    html = render_run_report(run_dir)
    assert "six-zone (0-24)</button>" in html and "zhang900 (0-900)</button>" in html
    key = html.split("<summary>Key</summary>")[1].split("</details>")[0]
    for text in ("CT-0 no lesion of 1 mL or more", "CT-1 under 25 %", "CT-4 75 % or more",
                 "faint ground-glass opacity below -560 HU",
                 "ground-glass opacity -560 to -310 HU", "lesion voxels of -310 HU and above", "above -210 HU",
                 "slab of +-5 mm (at least half the slice step) around each level (slab mode)",
                 "densest class holding at least 20 % of the unit&#x27;s lesion (else the predominant class)",
                 "with at least 1 mL and 0.25 % of lesion"):
        assert text in key, text
    assert 'DENSE_LUNG:-620<span class="unit"> HU</span>' in html
    assert ">CONTRAST</span>" in html


def test_report_prints_legible(run_dir):
    html = render_run_report(run_dir)
    assert "@media print" in html and "print-color-adjust: exact" in html
    assert "#888" not in html and "#aaa" not in html  # grey text under 4.5:1 on white / the header grey


def test_report_says_when_the_run_finished(run_dir):
    """An ethics board reads when the results were made (run.json has it; the page did not show it)."""
    assert "<dt>finished</dt><dd><code>2026-12-05T06:24:43+0000</code></dd>" in render_run_report(run_dir)


@pytest.mark.parametrize("config", ["x", {"hu_classes": {"ggo": [-500]}}, {"hu_classes": {"ggo": "-550,-300"}},
                                    {"hu_classes": "x"}, None])
def test_key_survives_a_malformed_or_missing_config(run_dir, config):
    """A run.json without a configuration, or with a malformed one, gave a traceback or '- to 5 HU' (a review)."""
    data = json.loads((run_dir / "run.json").read_text())
    data["config"] = config
    (run_dir / "run.json").write_text(json.dumps(data))
    key = render_run_report(run_dir).split("<summary>Key</summary>")[1].split("</details>")[0]
    assert "ground-glass opacity -550 to -300 HU" in key  # the default band
    assert "<dt>settings</dt><dd>the defaults of this ctscore version" in key


@pytest.mark.parametrize("vision", ["normal", "deuteranopia", "protanopia", "tritanopia", "greyscale"])
def test_the_soft_tissue_outlines_stay_apart_from_the_lung_outline_and_fluid(vision):
    """qc.png's soft-tissue column outlines the consolidation over tissue of water density (mid grey in W 400 / L 40):
    the outline must show on it, and apart from the cyan lung outline where colour is seen at all."""
    from matplotlib.colors import to_rgb

    from pipeline.qc import LUNG_COLOUR, SOFT_CONSOLIDATION_COLOUR, SOFT_TISSUE_WINDOW_HU

    low, high = SOFT_TISSUE_WINDOW_HU
    fluid = np.full(3, (10.0 - low) / (high - low))  # 10 HU, as the grey colour map draws it
    lab = {k: rgb2lab(_seen(np.asarray(c, float), vision).reshape(1, 1, 3))[0, 0]
           for k, c in {"outline": to_rgb(SOFT_CONSOLIDATION_COLOUR), "lung": to_rgb(LUNG_COLOUR),
                        "fluid": fluid}.items()}
    assert deltaE_ciede2000(lab["outline"], lab["fluid"]) >= 15, vision
    if vision != "greyscale":
        assert deltaE_ciede2000(lab["outline"], lab["lung"]) >= 40, vision
