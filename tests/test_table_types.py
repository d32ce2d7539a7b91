"""Whole-number columns of the run tables (scores, grades, slice counts) read as whole numbers."""

from __future__ import annotations

import csv

import pandas as pd

from pipeline.outputs import SCAN_COLUMNS, ZONE_COLUMNS, atomic_write_table, table_dtypes


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_scores_are_written_without_a_decimal_point_next_to_a_failed_scan(tmp_path):
    rows = [{"scan_id": "scan-a", "status": "ok", "six_zone_total": 7, "zhang900_total": 72.0, "n_slices": 124,
             "percent_opacity": 11.899, "lung_volume_ml_right": 2329.59},
            {"scan_id": "scan-b", "status": "failed"}]
    df = atomic_write_table(tmp_path / "scans.csv", rows, SCAN_COLUMNS)
    ok, failed = _rows(tmp_path / "scans.csv")
    assert (ok["six_zone_total"], ok["zhang900_total"], ok["n_slices"]) == ("7", "72", "124")
    assert ok["percent_opacity"] == "11.899" and ok["lung_volume_ml_right"] == "2329.59"
    assert failed["six_zone_total"] == "" and failed["lobar20_total"] == ""
    back = pd.read_parquet(tmp_path / "scans.parquet")
    assert str(back["six_zone_total"].dtype) == "Int64" and back["six_zone_total"].isna().tolist() == [False, True]
    assert str(back["percent_opacity"].dtype) == "float64"
    assert str(df["zhang900_total"].dtype) == "Int64"


def test_zone_scores_are_whole_numbers_and_an_empty_table_keeps_the_types(tmp_path):
    rows = [{"scan_id": "scan-a", "system": "zhang900", "lung": "right", "unit": "upper", "status": "ok",
             "lung_ml": 800.5, "lesion_ml": 59.05, "involvement_pct": 7.45, "extent_score": 1.0,
             "density_grade": 2.0, "unit_score": 4.0},
            {"scan_id": "scan-a", "system": "six_zone", "lung": "right", "unit": "upper", "status": "ok",
             "lung_ml": 800.5, "lesion_ml": 59.05, "involvement_pct": 7.45, "extent_score": 1, "density_grade": None,
             "unit_score": 1}]
    atomic_write_table(tmp_path / "zones.csv", rows, ZONE_COLUMNS)
    z, s = _rows(tmp_path / "zones.csv")
    assert (z["extent_score"], z["density_grade"], z["unit_score"]) == ("1", "2", "4")
    assert (s["density_grade"], s["unit_score"]) == ("", "1")
    empty = atomic_write_table(tmp_path / "empty.csv", [], ZONE_COLUMNS)
    assert dict(empty.dtypes.astype(str)) == table_dtypes(ZONE_COLUMNS)
    assert dict(pd.read_parquet(tmp_path / "empty.parquet").dtypes.astype(str)) == table_dtypes(ZONE_COLUMNS)


def test_a_fractional_value_in_a_whole_number_column_is_kept_not_truncated(tmp_path):
    # an extra system or a hand-merged table may carry half points: keep them as written, never cut them
    rows = [{"scan_id": "scan-a", "status": "ok", "six_zone_total": 7.5, "percent_opacity": 1.25}]
    df = atomic_write_table(tmp_path / "scans.csv", rows, SCAN_COLUMNS)
    (row,) = _rows(tmp_path / "scans.csv")
    assert row["six_zone_total"] == "7.5" and df["six_zone_total"].tolist() == [7.5]
    assert str(df["percent_opacity"].dtype) == "float64"


def test_console_summary_shows_a_missing_total_as_a_dash(capsys):
    """The summary ``ctscore run`` prints shows a missing total as "-" (as report.html does), not pandas' <NA> or a
    NaN a first-time user reads as an error."""
    import pandas as pd

    from pipeline.commands.run import print_summary

    df = pd.DataFrame({"scan_id": ["scan-a", "scan-b"], "status": ["ok", "ok"], "percent_opacity": [3.7, 0.0],
                       "six_zone_total": pd.array([4, None], dtype="Int64")})
    print_summary({"scans": df, "n_ok": 2, "n_series": 2, "n_failed": 0, "out_dir": "OUT"})
    out = capsys.readouterr().out
    assert "<NA>" not in out and out.splitlines()[2].split() == ["scan-b", "ok", "0.0", "-"]
    assert out.splitlines()[1].split() == ["scan-a", "ok", "3.7", "4"]
