"""Validation of well-aerated lung: a reader's visual estimate (Colombi et al., Radiology 2020: %S-WAL) against
ctscore's percent_well_aerated, whole lung and per lung, read from scans.csv (0.11.0 and later)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import CTScoreError
from scoring.validation.api import run_validation
from scoring.validation.predictions import load_predictions, needed_columns
from scoring.validation.systems import canonical_system


def _run(tmp_path, n=6, with_columns=True):
    rng = np.random.default_rng(0)
    wal = rng.uniform(40, 90, (n, 2))
    scans = pd.DataFrame({"scan_id": [f"scan-{i}" for i in range(n)], "patient_id": [f"pt-{i}" for i in range(n)],
                          "study_date": "20200301", "series_uid": [f"1.2.{i}" for i in range(n)], "status": "ok",
                          "six_zone_total": 4})
    if with_columns:
        scans["percent_well_aerated"] = wal.mean(axis=1).round(3)
        scans["percent_well_aerated_right"], scans["percent_well_aerated_left"] = wal[:, 0], wal[:, 1]
    out = tmp_path / "run"
    out.mkdir()
    scans.to_csv(out / "scans.csv", index=False)
    rows = []
    for i in range(n):
        for unit, v in (("total", wal[i].mean()), ("right", wal[i, 0]), ("left", wal[i, 1])):
            for reader, d in (("R1", 0.0), ("R2", rng.normal(0, 4))):
                rows.append({"scan_id": f"scan-{i}", "system": "S-WAL" if unit == "total" else "wal", "unit": unit,
                             "reader": reader, "value": round(float(np.clip(v + d, 0, 100)), 1)})
    pd.DataFrame(rows).to_csv(tmp_path / "readers.csv", index=False)
    return out, tmp_path / "readers.csv", scans


def test_readers_visual_well_aerated_lung_is_compared_with_ctscore_s(tmp_path):
    out, ref, scans = _run(tmp_path)
    tables = run_validation(out, ref, draw=False)
    agree = tables["agreement"]
    rows = agree[(agree["system"] == "well_aerated")]
    assert set(rows["unit"]) >= {"total", "right", "left"}
    # ctscore against R1, who wrote ctscore's own values to 0.1: near-perfect agreement, read from the right columns
    mine = rows[(rows["rater_a"] == "ctscore") | (rows["rater_b"] == "ctscore")]
    r1 = mine[(mine["rater_a"] == "R1") | (mine["rater_b"] == "R1")].set_index("unit")
    for unit in ("total", "right", "left"):
        assert r1.loc[unit, "n"] == 6 and r1.loc[unit, "mae"] < 0.06
        assert np.isnan(r1.loc[unit, "kappa_qw"])  # a percentage, not an ordinal score
    preds = load_predictions(out).set_index(["scan_id", "system", "unit"])["value"]
    assert preds[("scan-2", "well_aerated", "left")] == pytest.approx(scans.loc[2, "percent_well_aerated_left"])
    assert preds[("scan-2", "well_aerated", "total")] == pytest.approx(scans.loc[2, "percent_well_aerated"])


def test_results_without_the_columns_are_refused_naming_them(tmp_path):
    out, ref, _ = _run(tmp_path, with_columns=False)
    with pytest.raises(CTScoreError) as e:
        run_validation(out, ref, draw=False)
    assert e.value.code == "PRED_SCHEMA" and "percent_well_aerated" in e.value.message
    assert "well_aerated" in e.value.message.split("needed for the reference's")[1]


def test_spellings_and_needed_columns():
    for name in ("well_aerated", "WAL", "percent_well_aerated", "S-WAL", "s_wal", "swal", "Well-aerated"):
        assert canonical_system(name) == "well_aerated", name
    targets = pd.DataFrame({"system": ["well_aerated"] * 3, "unit": ["total", "right", "left"]})
    assert needed_columns(targets) == (["percent_well_aerated", "percent_well_aerated_right",
                                        "percent_well_aerated_left"], [])


def test_a_value_ctscore_never_writes_is_refused_naming_file_column_and_scan(tmp_path):
    """An edited scans.csv (a six-zone total of 25, which no scan can have) ended in a raw ValueError from kappa (a
    review); a column the reference does not need is read as missing with a warning."""
    out, ref, scans = _run(tmp_path)
    scans.loc[3, "six_zone_total"] = 25
    scans.to_csv(out / "scans.csv", index=False)
    rows = pd.read_csv(ref)
    six = rows[rows["unit"] == "total"].assign(system="six_zone", value=4)
    pd.concat([rows, six]).to_csv(ref, index=False)
    with pytest.raises(CTScoreError) as e:
        run_validation(out, ref, draw=False)
    assert e.value.code == "PRED_SCHEMA" and e.value.path == str(out / "scans.csv")
    assert "six_zone_total of scan scan-3 (six_zone total) is 25: outside six_zone total range 0-24" in e.value.message
    # the reference without six-zone rows: that column is not needed, the value is left out with a warning
    pd.concat([rows]).to_csv(ref, index=False)
    tables = run_validation(out, ref, draw=False)
    assert set(tables["agreement"]["system"]) == {"well_aerated"}
    preds = load_predictions(out, needed=["percent_well_aerated"])
    assert np.isnan(preds.set_index(["scan_id", "system", "unit"]).loc[("scan-3", "six_zone", "total"), "value"])


def test_an_out_of_range_unit_of_a_system_the_reference_does_not_score_is_only_warned(tmp_path, caplog):
    """zones.csv's unit_score serves six_zone, zhang900 and lobar25: a zhang900 unit of 11 (no extent x density^2)
    does not stop a comparison of six-zone units."""
    out, _, scans = _run(tmp_path, n=4)
    zones = [{"scan_id": sid, "system": system, "lung": "right", "unit": unit, "involvement_pct": 10.0,
              "unit_score": score}
             for sid in scans["scan_id"] for system, unit, score in (("six_zone", "upper", 1), ("zhang900", "L1", 11))]
    pd.DataFrame(zones).to_csv(out / "zones.csv", index=False)
    ref = tmp_path / "six.csv"
    pd.DataFrame([{"scan_id": sid, "system": "six_zone", "unit": "right_upper", "reader": r, "value": 1}
                  for sid in scans["scan_id"] for r in ("R1", "R2")]).to_csv(ref, index=False)
    tables = run_validation(out, ref, draw=False)
    assert set(tables["agreement"]["system"]) == {"six_zone"}
    assert any("unit_score of scan scan-0 (zhang900 right_L1) is 11" in r.getMessage() for r in caplog.records)
    zref = tmp_path / "zhang.csv"
    pd.DataFrame([{"scan_id": sid, "system": "zhang900", "unit": "right_L1", "reader": r, "value": 10}
                  for sid in scans["scan_id"] for r in ("R1", "R2")]).to_csv(zref, index=False)
    with pytest.raises(CTScoreError, match="not a possible extent x density"):
        run_validation(out, zref, draw=False)
