"""Empty lobar totals say why (SCORING.md: lobe-based scores "stay empty, with the reason"): scans.csv
``lobar_note``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.errors import EXIT_OK
from scoring.quantify import score_scan
from tests.test_scoring_review3 import lobe_map
from tests.test_user_lobes import SAMPLE, _scan_dir, lobes_folder
from tests.test_zones import LEVELS, Z, cfg, lms, phantom

# the unchanged sample is segmented once per test process (tests/conftest.py: classical_memo)
pytestmark = pytest.mark.usefixtures("classical_memo")


def _row(out):
    return next(csv.DictReader((out / "scans.csv").open()))


def test_a_run_without_lobe_maps_says_why_its_lobar_totals_are_empty(sample_run):
    row = _row(sample_run)
    assert row["lobar20_total"] == "" and row["lobar25_total"] == ""
    assert row["lobar_note"] == "no lobe map: the segmenter makes none (give your own with --lobes DIR)"
    scan = _scan_dir(sample_run)
    assert json.loads((scan / "result.json").read_text())["scores"]["lobar_note"] == row["lobar_note"]


def test_lobar_note_follows_the_lobe_map_and_the_config(sample_run, tmp_path):
    lobes = lobes_folder(sample_run, tmp_path)
    common = ["-q", "--segmenter", "classical", "--set", "outputs.write_qc_png=false"]
    runs = {"scored": ["--lobes", str(lobes)],
            "off": ["--lobes", str(lobes), "--set", "scoring.lobar.enabled=false"],
            "no_file": ["--lobes", str(tmp_path / "empty")]}
    (tmp_path / "empty").mkdir()
    notes = {}
    for name, extra in runs.items():
        out = tmp_path / name
        assert main(["run", str(SAMPLE), "-o", str(out), *common, *extra]) == EXIT_OK
        notes[name] = _row(out)
    assert notes["scored"]["lobar_note"] == "" and notes["scored"]["lobar20_total"] != ""
    assert notes["off"]["lobar_note"] == "lobar scoring off (scoring.lobar.enabled: false)"
    assert notes["no_file"]["lobar_note"] == "no lobe map for this series in scoring.lobar.lobes_dir (LOBES_NOT_FOUND)"
    assert "LOBES_NOT_FOUND" in notes["no_file"]["qc_flags"]


def test_a_missing_lobe_and_a_refused_map_are_named():
    hu, lungs, classes = phantom()
    row, _, flags = score_scan(hu, lungs, classes, Z, 0.01, lms(**LEVELS), cfg(), lobes=lobe_map(lungs.shape))
    assert row["lobar_note"] == "" and row["lobar20_total"] == 0
    partial = lobe_map(lungs.shape)
    partial[partial == 2] = 0  # no right middle lobe
    row, _, flags = score_scan(hu, lungs, classes, Z, 0.01, lms(**LEVELS), cfg(), lobes=partial)
    assert np.isnan(row["lobar20_total"]) and "LOBES_MISSING" in row["lobar_note"]
    swapped = lobe_map(lungs.shape)
    swapped[:, :, :10], swapped[:, :, 10:] = lobe_map(lungs.shape)[:, :, 10:], lobe_map(lungs.shape)[:, :, :10]
    row, _, flags = score_scan(hu, lungs, classes, Z, 0.01, lms(**LEVELS), cfg(), lobes=swapped)
    assert np.isnan(row["lobar20_total"]) and row["lobar_note"] == "lobe map not used (LOBES_SIDES_SWAPPED)"
    row, _, _ = score_scan(hu, lungs, classes, Z, 0.01, lms(**LEVELS), cfg())
    assert row["lobar_note"] == "no lobe map"
