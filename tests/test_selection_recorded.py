"""What ``--all-series`` and ``--series-uid`` asked is recorded where METHODS.md reads it: ``--all-series`` ran with
``selection.one_per_study`` still true in run.json, and the Methods text said "the best-ranked one of each study was
scored" of a run that scored two series of one study; a series named with ``--series-uid`` was described as
selected automatically (an audit of the README's commands, 2026-12-07)."""

from __future__ import annotations

import json

import pydicom
import pytest

from pipeline.config import load_config
from pipeline.methods import methods_text
from pipeline.run import run_pipeline
from tests.scripts_loader import load_script


@pytest.fixture(scope="module")
def one_study_two_series(tmp_path_factory):
    """Two generated chests (40 x 64 x 64) as two series of one study; their SeriesInstanceUIDs."""
    root = tmp_path_factory.mktemp("two_series")
    bench = load_script("benchmark_batch")
    uids = [bench.write_chest_series(root / f"s{i}", i) for i in range(2)]
    study = pydicom.dcmread(next((root / "s0").glob("*.dcm"))).StudyInstanceUID
    for f in (root / "s1").glob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID = study
        ds.save_as(f)
    return root, uids


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides=["resample.spacing_mm=[3,3,3]"],
                       extra={"segmentation": {"method": "classical"},
                              "outputs": {"write_qc_png": False, "write_masks": False}})


def _run_json(out):
    return json.loads((out / "run.json").read_text())


def test_all_series_is_recorded_as_the_setting_it_is(one_study_two_series, cfg, tmp_path):
    root, uids = one_study_two_series
    one = run_pipeline(root, tmp_path / "one", cfg)
    assert one["n_series"] == 1 and _run_json(tmp_path / "one")["config"]["selection"]["one_per_study"] is True
    assert "the best-ranked one of each study was scored" in methods_text(tmp_path / "one")
    both = run_pipeline(root, tmp_path / "both", cfg, all_series=True)
    assert both["n_series"] == 2
    assert _run_json(tmp_path / "both")["config"]["selection"]["one_per_study"] is False
    assert "every eligible stack was scored" in methods_text(tmp_path / "both")
    assert cfg["selection"]["one_per_study"] is True  # the caller's configuration is left as it was
    again = run_pipeline(root, tmp_path / "one", cfg, all_series=True)  # as README says: scored again, and the other
    assert again["n_skipped"] == 0 and again["n_series"] == 2


def test_a_series_named_by_the_user_is_said_to_be(one_study_two_series, cfg, tmp_path):
    root, uids = one_study_two_series
    summary = run_pipeline(root, tmp_path / "named", cfg, series_uid=uids[1])
    assert summary["n_series"] == 1
    assert _run_json(tmp_path / "named")["series_uid_requested"] == uids[1]
    text = methods_text(tmp_path / "named")
    assert "named by the user" in text and "selected automatically:" not in text


def test_scan_predicts_too_large_from_the_headers_as_run_refuses_it(tmp_path):
    """`ctscore scan` said a stack over loading.max_memory_mb would load (exit 0), and `run` refused it unread
    (TOO_LARGE, exit 8)."""
    from pipeline.cli import main
    from pipeline.inventory import build_inventory
    from tests.conftest import SAMPLE

    inv = build_inventory(SAMPLE, load_config(overrides=["loading.max_memory_mb=10"]))
    assert [c.problems for c in inv.chosen] == [["TOO_LARGE"]]
    assert "max_memory_mb=10" in inv.chosen[0].messages["TOO_LARGE"]
    assert main(["scan", str(SAMPLE), "-o", str(tmp_path / "inv.csv"), "--set", "loading.max_memory_mb=10"]) == 8
    assert main(["scan", str(SAMPLE), "-o", str(tmp_path / "inv2.csv")]) == 0


def test_aggregate_keeps_the_series_the_user_named(one_study_two_series, cfg, tmp_path):
    """`ctscore aggregate OUT` (what TABLES_STALE tells users to run) rebuilt run.json without
    series_uid_requested, and the Methods text then said the series was selected automatically."""
    from pipeline.batch import aggregate

    root, uids = one_study_two_series
    run_pipeline(root, tmp_path / "named", cfg, series_uid=uids[0])
    aggregate(tmp_path / "named")
    assert _run_json(tmp_path / "named")["series_uid_requested"] == uids[0]
    assert "named by the user" in methods_text(tmp_path / "named")
