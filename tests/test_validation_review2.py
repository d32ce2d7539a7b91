"""Validation, second review (agreement statistics and matching): each test failed before its fix."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import CTScoreError
from scoring.validation import metrics
from scoring.validation.api import run_validation, validate_frames
from scoring.validation.schema import load_reference
from tests.test_validation_end_to_end import write_cohort

SCANS = pd.DataFrame({
    "scan_id": ["scan-a1", "scan-a2", "scan-b", "scan-c1", "scan-c2"],
    "patient_id": ["P1", "P1", "P2", "P3", "P3"],
    "study_date": ["20200201", "20200201", "20200301", "20200401", "20200401"],
    # --all-series scored two stacks of series 1.2.3.1 (and of 1.2.3.3, where one stack failed)
    "series_uid": ["1.2.3.1", "1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.3"],
    "status": ["ok", "ok", "ok", "ok", "failed"],
})


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "readers.csv"
    p.write_text(text)
    return p


# --- 1. a series_uid naming several scored stacks went silently to the first ------------------------

def test_series_uid_of_several_scored_stacks_is_ambiguous(tmp_path):
    ref = _write(tmp_path, "series_uid,system,unit,reader,value\n1.2.3.2,six_zone,total,R1,4\n"
                           "1.2.3.1,six_zone,total,R1,5\n")
    with pytest.raises(CTScoreError) as e:
        load_reference(ref, SCANS)
    assert e.value.code == "REFERENCE_AMBIGUOUS"
    assert "line 3" in e.value.message and "scan-a1, scan-a2" in e.value.message and "scan_id" in e.value.message
    # one scored stack and one failed: the scored one, as for patient_id + study_date
    ref = _write(tmp_path, "series_uid,system,unit,reader,value\n1.2.3.3,six_zone,total,R1,5\n")
    assert list(load_reference(ref, SCANS)["scan_id"]) == ["scan-c1"]


# --- 2. pipeline scans the reference does not name were not reported -------------------------------

def test_data_summary_counts_pipeline_scans_without_reference(tmp_path):
    pred, _, rows, _ = write_cohort(tmp_path, 5, 3, "1.2.826.0.77")
    first_three = sorted({r["series_uid"] for r in rows})[:3]
    pd.DataFrame([r for r in rows if r["series_uid"] in first_three]).to_csv(tmp_path / "some.csv", index=False)
    summary = dict(run_validation(pred, tmp_path / "some.csv", draw=False)["data_summary"].values.tolist())
    assert summary["scans in the reference"] == "3"
    assert summary["pipeline scans without a reference row"] == "2"


# --- 3. empty rows and blank lines ----------------------------------------------------------------

def test_empty_spreadsheet_rows_are_skipped(tmp_path):
    ref = _write(tmp_path, "scan_id,system,unit,reader,value\nscan-b,six_zone,total,R1,5\n,,,,\n , , , ,\n")
    df = load_reference(ref, SCANS)
    assert len(df) == 1 and df["value"].tolist() == [5.0]
    with pytest.raises(CTScoreError) as e:
        load_reference(_write(tmp_path, "scan_id,system,unit,reader,value\n,,,,\n"), SCANS)
    assert e.value.code == "REFERENCE_SCHEMA" and "no rows" in e.value.message


def test_blank_line_keeps_file_line_numbers(tmp_path):
    ref = _write(tmp_path, "scan_id,system,unit,reader,value\nscan-b,six_zone,total,R1,5\n\n"
                           "scan-b,six_zone,total,R2,25\n")
    with pytest.raises(CTScoreError) as e:
        load_reference(ref, SCANS)
    assert e.value.code == "REFERENCE_OUT_OF_RANGE" and e.value.message.startswith("reference: line 4:")
    ok = _write(tmp_path, "scan_id,system,unit,reader,value\n\nscan-b,six_zone,total,R1,5\n")
    assert load_reference(ok, SCANS)["line"].tolist() == [3]


# --- 4. pooled units: CIs and p values that ignore clustering are flagged ---------------------------

def test_pooled_units_note_says_ci_treats_units_as_independent():
    rng = np.random.default_rng(0)
    ref, pred = [], []
    for s in range(4):
        for u in ("right_upper", "right_middle", "right_lower", "left_upper", "left_middle", "left_lower"):
            v = int(rng.integers(0, 5))
            for reader, d in (("alice", 0), ("bob", int(rng.integers(-1, 2)))):
                ref.append({"scan_id": f"s{s}", "system": "six_zone", "unit": u, "reader": reader,
                            "value": float(np.clip(v + d, 0, 4))})
            pred.append({"scan_id": f"s{s}", "system": "six_zone", "unit": u, "value": float(v)})
    agree = validate_frames(pd.DataFrame(ref), pd.DataFrame(pred))["agreement"].set_index(["unit", "rater_a", "rater_b"])
    pooled = agree.loc[("all_units", "alice", "bob")]
    assert (pooled["n"], pooled["n_scans"]) == (24, 4)
    assert "24 targets from 4 scan(s) as if independent" in pooled["note"]
    assert "as if independent" not in agree.loc[("right_upper", "alice", "bob"), "note"]


# --- 5. kappa without labels: a category nobody used shrank the quadratic weights -----------------

def test_kappa_without_labels_keeps_value_distances():
    a, b = [0, 1, 4, 4, 0, 1], [0, 1, 4, 1, 1, 0]  # nobody scored 2 or 3
    assert metrics.weighted_kappa(a, b) == pytest.approx(metrics.weighted_kappa(a, b, labels=range(5)))
    row = metrics.agreement(a, b, ordinal=True)
    assert row["kappa_qw"] == pytest.approx(metrics.weighted_kappa(a, b, labels=range(5)))


@pytest.fixture(autouse=True)
def _quiet(caplog):
    caplog.set_level(logging.ERROR)
