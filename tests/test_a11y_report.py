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
from pipeline.qc import LESION_ALPHA, LESION_CLASSES, WINDOW_HU
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


@pytest.mark.parametrize("vision", ["normal", "deuteranopia", "protanopia", "tritanopia", "greyscale"])
def test_lesion_classes_stay_apart(vision):
    """The three classes as drawn (blended over lung, over ground glass, over soft tissue) differ by about 18 CIEDE2000
    or more in every pair (the old green/yellow/red: 6.8 for faint GGO vs consolidation under deuteranopia, 4.7
    for faint GGO vs GGO in greyscale)."""
    under_hu = {1: -700.0, 2: -450.0, 3: -100.0}  # what each class lies on, in the lung window
    low, high = WINDOW_HU
    lab = {}
    for value, (colour, _) in LESION_CLASSES.items():
        rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
        grey = (under_hu[value] - low) / (high - low)
        blended = LESION_ALPHA * rgb + (1 - LESION_ALPHA) * grey
        lab[value] = rgb2lab(_seen(blended, vision).reshape(1, 1, 3)).reshape(3)
    for a, b in ((1, 2), (2, 3), (1, 3)):
        assert deltaE_ciede2000(lab[a], lab[b]) >= 17.5, (vision, LESION_CLASSES[a][1], LESION_CLASSES[b][1])


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
