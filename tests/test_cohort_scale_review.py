"""A consortium's cohort (2 000 to 50 000 scans), an audit of the table-level commands: a line per scan on the
console and in report.html (38 MB), a warning per unmatched reader row, Bland-Altman dots covering the plot and
confusion counts running together, and per-row work where one pass does (lab dates, reader rows, peak timing).
Speed is measured by the audit's scripts, not here: these tests hold the behaviour the faster code must keep."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import CTScoreError


def test_lab_dates_are_parsed_once_per_text_and_refused_at_their_line():
    from scoring.stats.schema import _parse_dates

    s = pd.Series(["2020-02-05", "20200205", "2020-02-05 10:30", "", "2020-02-06T08:00:00"] * 3)
    out = _parse_dates(s, "date", "BAD_LAB_DATA", None)
    assert out.dtype == "datetime64[ns]" and out.isna().sum() == 3
    assert (out.dropna().dt.strftime("%Y-%m-%d") == ["2020-02-05"] * 3 + ["2020-02-06"] + ["2020-02-05"] * 3
            + ["2020-02-06"] + ["2020-02-05"] * 3 + ["2020-02-06"]).all()
    bad = pd.Series(["2020-02-05", "2020-02-05 25:00", "2020-13-01", "2020-02-05 25:00"])
    with pytest.raises(CTScoreError) as e:
        _parse_dates(bad, "date", "BAD_LAB_DATA", None)
    assert "line 3" in e.value.message and "'2020-02-05 25:00'" in e.value.message  # the first bad line
    assert _parse_dates(pd.Series([], dtype=object), "date", "BAD_LAB_DATA", None).empty


def test_the_console_summary_of_a_cohort_is_short(capsys):
    from pipeline.commands.run import CONSOLE_ROWS, print_summary

    n = 130
    scans = pd.DataFrame({"scan_id": [f"scan-{i:04d}" for i in range(n)],
                          "status": ["failed" if i % 10 == 3 else "ok" for i in range(n)],
                          "six_zone_total": np.arange(n) % 25})
    print_summary({"scans": scans, "n_series": n, "n_ok": 117, "n_failed": 13, "out_dir": "OUT"})
    out = capsys.readouterr().out
    listed = [line for line in out.splitlines() if line.strip().startswith("scan-")]
    assert len(listed) == CONSOLE_ROWS
    assert sum("failed" in line for line in listed) == 13  # every failure shown (fewer than half the rows)
    assert f"... and {n - CONSOLE_ROWS} more series: OUT/scans.csv has every row" in out
    print_summary({"scans": scans.head(5), "n_series": 5, "n_ok": 5, "n_failed": 0, "out_dir": "OUT"})
    assert "more series" not in capsys.readouterr().out


def test_report_of_a_cohort_lists_failed_and_flagged_series_first(tmp_path, monkeypatch):
    import pipeline.report as report

    monkeypatch.setattr(report, "REPORT_MAX_ROWS", 4)
    rows = [{"scan_id": f"scan-{i}", "status": "ok", "qc_flags": "METAL:0.5" if i == 5 else ""} for i in range(8)]
    rows[6]["status"] = "failed"
    pd.DataFrame(rows).to_csv(tmp_path / "scans.csv", index=False)
    pd.DataFrame([{"scan_id": f"scan-f{i}", "code": "X", "message": "m", "path": ""} for i in range(2)]).to_csv(
        tmp_path / "failures.csv", index=False)
    html = report.render_run_report(tmp_path)
    table = html.split('id="series"', 1)[1].split("</table>", 1)[0]
    listed = [r for r in [f"scan-{i}" for i in range(8)] + ["scan-f0", "scan-f1"] if f">{r}<" in table]
    assert listed == ["scan-5", "scan-6", "scan-f0", "scan-f1"]  # the failed and the flagged ones first
    assert "lists 4 of the 10 series" in html
    assert report._more(6, "failures.csv") == "\n<p class=\"summary\">... and 2 more: failures.csv lists them all.</p>"
    assert report._more(4, "failures.csv") == ""


def test_bland_altman_dots_and_confusion_counts_stay_readable():
    from scoring.validation.figures import _count_text, marker_areas

    assert list(marker_areas(np.array([1, 2, 24]))) == [18, 30, 294]  # a small cohort: as before
    big = marker_areas(np.array([1, 100, 60_000]))
    assert big[0] == 18 and big[-1] == 294 and 18 < big[1] < 40
    assert [_count_text(v) for v in (7, 999, 1234, 56_789, 123_456)] == ["7", "999", "1.2k", "56.8k", "123k"]


def test_unmatched_reader_rows_are_one_warning(tmp_path, caplog):
    from scoring.validation.schema import load_reference
    from tests.test_validation_schema import SCANS, _ref, _row

    p = _ref(tmp_path, [_row()] + [_row(scan_id=f"scan-z{i}") for i in range(40)])
    with caplog.at_level(logging.WARNING, logger="scoring.validation.schema"):
        ref = load_reference(p, SCANS, on_unmatched="warn")
    assert list(ref["scan_id"]) == ["scan-a"]
    said = [r.getMessage() for r in caplog.records if "match no scan" in r.getMessage()]
    assert len(said) == 2, said  # the examples, and the count (load_reference)
    assert "e.g. line 3: scan_id 'scan-z0'" in said[0] and "scan-z39" not in said[0]
    assert said[1].startswith("40 reference row(s) left out")


@pytest.mark.parametrize("value", ["3020-01-30", "9999-12-31"])
def test_a_date_no_timestamp_holds_is_refused_not_wrapped(value):
    """The review: 9999-12-31 (an 'open end' of hospital exports) became 1816-03-29 without a word."""
    from scoring.stats.schema import _parse_dates

    with pytest.raises(CTScoreError) as e:
        _parse_dates(pd.Series(["2020-02-05", value]), "treatment_date", "BAD_CLINICAL_DATA", None)
    assert "line 3" in e.value.message and "outside the years 1678-2261" in e.value.message
