"""Reference schema: the three ways of naming a scan, and a named error for each bad row."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import CTScoreError
from scoring.validation.predictions import load_predictions
from scoring.validation.schema import load_reference

SCANS = pd.DataFrame({
    "scan_id": ["scan-a", "scan-b", "scan-c", "scan-d"],
    "patient_id": ["P1", "P1", "P2", "P2"],
    "study_date": ["20200201", "20200210", "20200301", "20200301"],
    "series_uid": ["1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.4"],
    "status": ["ok", "ok", "ok", "failed"],
})


def _ref(tmp_path: Path, rows: list[dict], name: str = "readers.csv") -> Path:
    p = tmp_path / name
    pd.DataFrame(rows).fillna("").to_csv(p, index=False)
    return p


def _row(**kw) -> dict:
    base = {"scan_id": "scan-a", "series_uid": "", "patient_id": "", "study_date": "", "system": "six_zone",
            "unit": "total", "reader": "R1", "value": "5"}
    base.update(kw)
    return base


def test_three_ways_to_name_a_scan(tmp_path):
    rows = [_row(),
            _row(scan_id="", series_uid="1.2.3.2"),
            _row(scan_id="", patient_id="P2", study_date="2020-03-01"),  # one ok series that day; ISO date
            _row(scan_id="", series_uid="1.2.3.1", reader="R2", unit="right_upper", value="2")]
    ref = load_reference(_ref(tmp_path, rows), SCANS)
    assert list(ref["scan_id"]) == ["scan-a", "scan-b", "scan-c", "scan-a"]
    assert ref["value"].tolist() == [5.0, 5.0, 5.0, 2.0]


def test_scan_column_alias_and_mosmed_categories(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("scan,system,unit,reader,value\nscan-a,mosmed,total,R1,CT-2\nscan-b,MosMed,Total,R1,3\n")
    ref = load_reference(p, SCANS)
    assert ref["value"].tolist() == [2.0, 3.0] and set(ref["system"]) == {"mosmed"}


@pytest.mark.parametrize("row, code, words", [
    (_row(scan_id="scan-zzz"), "REFERENCE_NO_MATCH", "scan_id 'scan-zzz' matches no scan"),
    (_row(scan_id="", series_uid="9.9.9"), "REFERENCE_NO_MATCH", "series_uid '9.9.9'"),
    (_row(scan_id="", patient_id="P9", study_date="20200101"), "REFERENCE_NO_MATCH", "patient_id 'P9'"),
    (_row(value="25"), "REFERENCE_OUT_OF_RANGE", "outside six_zone total range 0-24"),
    (_row(unit="left_lower", value="5"), "REFERENCE_OUT_OF_RANGE", "outside six_zone unit range 0-4"),
    (_row(unit="left_lower", value="2.5"), "REFERENCE_OUT_OF_RANGE", "whole numbers"),
    (_row(system="zhang900", unit="left_L2", value="11"), "REFERENCE_OUT_OF_RANGE", "extent x density^2"),
    (_row(system="zhang900", value="901"), "REFERENCE_OUT_OF_RANGE", "0-900"),
    (_row(system="percent_involvement", value="101"), "REFERENCE_OUT_OF_RANGE", "0-100"),
    (_row(system="mosmed", value="CT-5"), "REFERENCE_OUT_OF_RANGE", "0-4"),
    (_row(system="mosmed", value="severe"), "REFERENCE_BAD_VALUE", "not CT-0..CT-4"),
    (_row(value="abc"), "REFERENCE_BAD_VALUE", "not a number"),
    (_row(system="brixia"), "REFERENCE_BAD_SYSTEM", "unknown system 'brixia'"),
    (_row(unit="right_L3"), "REFERENCE_BAD_UNIT", "not a six_zone unit"),
    (_row(reader="ctscore"), "REFERENCE_BAD_READER", "reader must be a name"),
])
def test_bad_rows_are_named(tmp_path, row, code, words):
    p = _ref(tmp_path, [_row(reader="R0"), row])
    with pytest.raises(CTScoreError) as e:
        load_reference(p, SCANS)
    assert e.value.code == code
    assert "line 3" in e.value.message and words in e.value.message
    assert e.value.path == str(p)


def test_duplicate_rows_name_both_lines(tmp_path):
    # the same scan named two ways still counts as a duplicate
    p = _ref(tmp_path, [_row(), _row(unit="right_upper", value="1"), _row(scan_id="", series_uid="1.2.3.1", value="6")])
    with pytest.raises(CTScoreError) as e:
        load_reference(p, SCANS)
    assert e.value.code == "REFERENCE_DUPLICATE"
    assert "lines 2, 4" in e.value.message and "'R1'" in e.value.message


def test_patient_and_date_matching_two_series_is_ambiguous(tmp_path):
    scans = SCANS.assign(status="ok")
    p = _ref(tmp_path, [_row(scan_id="", patient_id="P2", study_date="20200301")])
    with pytest.raises(CTScoreError) as e:
        load_reference(p, scans)
    assert e.value.code == "REFERENCE_AMBIGUOUS" and "scan-c" in e.value.message


def test_unmatched_rows_can_be_left_out_with_a_warning(tmp_path, caplog):
    p = _ref(tmp_path, [_row(), _row(scan_id="scan-zzz")])
    ref = load_reference(p, SCANS, on_unmatched="warn")
    assert list(ref["scan_id"]) == ["scan-a"]
    assert "match no scan" in caplog.text and "scan_id 'scan-zzz'" in caplog.text


def test_many_problems_are_counted(tmp_path):
    p = _ref(tmp_path, [_row(value=str(v), reader=f"R{v}") for v in range(30, 40)])
    with pytest.raises(CTScoreError) as e:
        load_reference(p, SCANS)
    assert "and 5 more problem(s)" in e.value.message


def test_missing_columns_and_missing_file(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("scan_id,system,unit,value\nscan-a,six_zone,total,3\n")
    with pytest.raises(CTScoreError, match="REFERENCE_SCHEMA"):
        load_reference(p, SCANS)
    p.write_text("system,unit,reader,value\nsix_zone,total,R1,3\n")
    with pytest.raises(CTScoreError, match="names no scan"):
        load_reference(p, SCANS)
    with pytest.raises(CTScoreError, match="REFERENCE_NOT_FOUND"):
        load_reference(tmp_path / "nope.csv", SCANS)


def test_predictions_long_form(tmp_path):
    SCANS.assign(six_zone_total=[3, 4, 5, 0], zhang900_total=[10, 20, 30, 0], percent_opacity=[1.5, 2, 3, 0],
                 mosmed_category=["CT-1", "CT-1", "CT-2", ""], lung_volume_ml_right=[2000] * 4,
                 lung_volume_ml_left=[1800] * 4, lesion_volume_ml_right=[100, 0, 0, 0],
                 lesion_volume_ml_left=[0] * 4).to_csv(tmp_path / "scans.csv", index=False)
    pd.DataFrame([
        {"scan_id": "scan-a", "system": "six_zone", "lung": "right", "unit": "upper", "involvement_pct": 12.0,
         "extent_score": 1, "density_grade": None, "unit_score": 1},
        {"scan_id": "scan-a", "system": "zhang900", "lung": "left", "unit": "L3", "involvement_pct": None,
         "extent_score": None, "density_grade": None, "unit_score": None},  # zone not seen
        {"scan_id": "scan-a", "system": "lobar", "lung": "right", "unit": "right_middle", "involvement_pct": 30.0,
         "extent_score": 2, "density_grade": None, "unit_score": 3},
        {"scan_id": "scan-d", "system": "six_zone", "lung": "right", "unit": "upper", "involvement_pct": 0,
         "extent_score": 0, "density_grade": None, "unit_score": 0},  # failed scan: ignored
    ]).to_csv(tmp_path / "zones.csv", index=False)
    pred = load_predictions(tmp_path).set_index(["scan_id", "system", "unit"])["value"]
    assert pred["scan-a", "six_zone", "right_upper"] == 1
    assert pred["scan-a", "percent_involvement", "right_upper"] == 12.0
    assert pd.isna(pred["scan-a", "zhang900", "left_L3"])
    assert pred["scan-a", "lobar", "right_middle"] == 2 and pred["scan-a", "lobar25", "right_middle"] == 3
    assert pred["scan-a", "percent_involvement", "lobe:right_middle"] == 30.0
    assert pred["scan-c", "mosmed", "total"] == 2
    assert pred["scan-a", "percent_involvement", "right"] == pytest.approx(5.0)
    assert "scan-d" not in pred.index.get_level_values(0)


def test_header_case_and_stray_spaces_are_forgiven(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("Scan_ID , System,unit,reader,value\nscan-a  ,six_zone ,Total , R1 , 4 \nscan-a,zhang900,RIGHT_l2,R1,27\n")
    ref = load_reference(p, SCANS)
    assert ref[["scan_id", "system", "unit", "reader"]].values.tolist() == [
        ["scan-a", "six_zone", "total", "R1"], ["scan-a", "zhang900", "right_L2", "R1"]]
    assert ref["value"].tolist() == [4.0, 27.0]
