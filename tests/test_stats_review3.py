"""Statistics module, third review: patient and scan selection against STATISTICS.md and docs/clinical_schema.md.

Each test failed before its fix: zhang2020's before-treatment scan was the later of two scans on the treatment day
(the documented rule for same-day scans is "zhang2020 the earlier", as its admission scan does), a before/after
pair could land on a scan without a score and so drop the patient from the score's paired tests although a scored
scan qualified, and liao2021's week-8 day with ``within_bin`` mean/median/max counted the days of week-8 scans
without a score.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.errors import CTScoreError
from scoring.stats import compare, liao2021, schema, zhang2020
from scoring.stats.cohort import build_cohort


def _scans(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    d = pd.DataFrame(rows, columns=["scan_id", "patient_id", "study_date", "zhang900_total"])
    d["study_date"] = pd.to_datetime(d["study_date"])
    d["six_zone_total"] = d["zhang900_total"] / 10
    return d


def _clinical(n: int = 1, **cols: list[str]) -> pd.DataFrame:
    base = {"patient_id": [chr(ord("A") + i) for i in range(n)], "onset_date": ["2020-01-01"] * n}
    return schema.validate_clinical(pd.DataFrame(base | cols))


# ---- zhang2020 before / after treatment ------------------------------------------------------------

def test_before_treatment_takes_the_earlier_of_two_scans_on_the_treatment_day():
    """docs/clinical_schema.md: two scored scans of one patient on one day -> zhang2020 takes the earlier (by
    series_time, then scan_id), as its admission scan does. The before-treatment scan took the later one (iloc[-1])."""
    scans = _scans([("s1", "A", "2020-01-03", 10), ("s2", "A", "2020-01-05", 20), ("s3", "A", "2020-01-05", 30),
                    ("s4", "A", "2020-01-19", 40)])
    c = build_cohort(scans, None, _clinical(treatment_date=["2020-01-05"]), None)
    ba = zhang2020.before_after(c, "zhang900_total", [], followup_days=14, min_gap_days=5).set_index("patient_id")
    assert ba.loc["A", "zhang900_total_before"] == 20  # s2, the earlier row of the treatment day (was 30, s3)
    assert ba.loc["A", "zhang900_total_change"] == 20
    # the same two rows in the other order: the same scan (the order of scans.csv, sorted by a salted hash, decided
    # which scan counted: a walk-through's reversed table changed 9 output tables)
    c2 = build_cohort(scans.iloc[[0, 2, 1, 3]].reset_index(drop=True), None, _clinical(treatment_date=["2020-01-05"]),
                      None)
    ba2 = zhang2020.before_after(c2, "zhang900_total", [], 14, 5).set_index("patient_id")
    assert ba2.loc["A", "zhang900_total_before"] == 20
    # with series times the earlier of the day is the one made first, whatever the rows' order and scan_ids
    timed = scans.assign(series_time=["09:00:00", "14:10:00", "08:05:00", "09:00:00"])
    for order in ([0, 1, 2, 3], [3, 2, 1, 0]):
        c3 = build_cohort(timed.iloc[order].reset_index(drop=True), None, _clinical(treatment_date=["2020-01-05"]),
                          None)
        ba3 = zhang2020.before_after(c3, "zhang900_total", [], 14, 5).set_index("patient_id")
        assert ba3.loc["A", "zhang900_total_before"] == 30  # s3, made at 08:05


def test_before_after_pairs_are_scored_scans():
    """A follow-up scan without a score (zones the scan cannot see) nearest to day 14 took the patient out of the
    score's paired tests although a scored scan 13 days later qualified; likewise an unscored scan on the treatment
    day replaced the scored one the day before."""
    nan = np.nan
    rows = []
    for pid, base in (("A", 100), ("B", 200), ("C", 300)):
        rows += [(f"{pid}1", pid, "2020-01-04", base), (f"{pid}2", pid, "2020-01-05", nan),  # treatment day: no score
                 (f"{pid}3", pid, "2020-01-17", base - 50), (f"{pid}4", pid, "2020-01-18", nan)]
    clin = _clinical(3, treatment_date=["2020-01-05"] * 3, glucocorticoid=["1", "0", "1"])
    c = build_cohort(_scans(rows), None, clin, None)
    ba = zhang2020.before_after(c, "zhang900_total", [], 14, 5).set_index("patient_id")
    assert list(ba["zhang900_total_change"]) == [-50.0, -50.0, -50.0]
    assert list(ba["days_between"]) == [13, 13, 13]
    t = zhang2020.run(c)[0]["zhang2020_before_after"]
    row = t[(t["variable"] == "zhang900_total") & t["test"].str.startswith("paired t")].iloc[0]
    assert row["n_pairs"] == 3  # was 0: every patient's pair had an unscored end


def test_before_after_tests_match_scipy_on_the_chosen_pairs():
    """The paired tests are those of scipy on (after, before) of the chosen scans."""
    rng = np.random.default_rng(4)
    rows, tdates = [], []
    for i in range(8):
        pid = chr(ord("A") + i)
        rows += [(f"{pid}0", pid, "2020-01-03", float(rng.integers(50, 300))),
                 (f"{pid}1", pid, "2020-01-16", float(rng.integers(0, 250))),
                 (f"{pid}2", pid, "2020-01-19", float(rng.integers(0, 250)))]
        tdates.append("2020-01-03")
    c = build_cohort(_scans(rows), None, _clinical(8, treatment_date=tdates), None)
    ba = zhang2020.before_after(c, "zhang900_total", [], 14, 5)
    sc = _scans(rows).set_index("scan_id")["zhang900_total"]
    before = np.array([sc[f"{chr(ord('A') + i)}0"] for i in range(8)])
    after = np.array([sc[f"{chr(ord('A') + i)}1"] for i in range(8)])  # day 16 is 1 day from 3 + 14, day 19 two
    assert np.array_equal(ba["zhang900_total_after"].to_numpy(), after)
    rows_ = compare.paired(ba["zhang900_total_before"], ba["zhang900_total_after"])
    assert np.isclose(rows_[0]["p_value"], stats.wilcoxon(after, before).pvalue)
    assert np.isclose(rows_[1]["p_value"], stats.ttest_rel(after, before).pvalue)


# ---- liao2021 week 8 -------------------------------------------------------------------------------

def test_week8_day_with_mean_counts_only_the_scored_scans():
    """liao2021 with within_bin mean: the week-8 day is that of the scans whose scores were averaged; a week-8 scan
    without a score lent its day (mean of days 49 and 55 = 52 for a score from day 49 alone)."""
    scans = _scans([("s1", "A", "2020-01-10", 50), ("s2", "A", "2020-02-19", 60), ("s3", "A", "2020-02-25", np.nan)])
    c = build_cohort(scans, None, _clinical(), None)
    for within in ("mean", "median", "max"):
        g = liao2021.lesion_groups(c, "six_zone_total", 5, within).set_index("patient_id")
        assert g.loc["A", "week8_score"] == 6.0 and g.loc["A", "group"] == "persistent"
        assert g.loc["A", "week8_day"] == 49.0, within


def test_a_follow_up_months_later_is_named_in_a_note():
    """A longitudinal cohort: the 'after' scan of one patient was 73 days later, pooled with the 14-day pairs in
    zhang2020_before_after.csv without a note (only days_between in the per-patient table showed it)."""
    rows = [("A1", "A", "2020-01-04", 100), ("A2", "A", "2020-01-18", 60),
            ("B1", "B", "2020-01-04", 200), ("B2", "B", "2020-03-17", 150)]
    clin = _clinical(2, treatment_date=["2020-01-05"] * 2, glucocorticoid=["1", "0"])
    c = build_cohort(_scans(rows), None, clin, None)
    zhang2020.run(c)
    [note] = [n for n in c.notes if "before/after" in n]
    assert note.startswith("zhang2020 before/after: 1 of 2 pair(s) are more than 7 days from the 14-day follow-up "
                           "(days_between 73-73;")


def test_series_times_as_a_spreadsheet_writes_them_and_a_day_with_one_missing():
    """'8:05:00' (a spreadsheet's re-save of 08:05:00) sorted as text after '14:10:00', and a scan without a time
    sorted before every timed scan of its day although the docs said scan_id decides then."""
    rows = [("s1", "A", "2020-01-05", 100), ("s2", "A", "2020-01-05", 300), ("s9", "A", "2020-01-25", 40)]
    timed = _scans(rows).assign(series_time=["14:10:00", "8:05:00", "09:00:00"])
    c = build_cohort(timed, None, _clinical(), None)
    assert list(c.scans["scan_id"]) == ["s2", "s1", "s9"] and c.scans["series_time"].iloc[0] == "08:05:00"
    assert zhang2020.admission_scans(c, "zhang900_total")["zhang900_total"].tolist() == [300]
    one_missing = _scans(rows).assign(series_time=["", "08:05:00", ""])  # s1 has no time: the day by scan_id
    c2 = build_cohort(one_missing, None, _clinical(), None)
    assert list(c2.scans["scan_id"]) == ["s1", "s2", "s9"]
    with pytest.raises(CTScoreError, match="'series_time', line 3: value 'noon' is not a time of day"):
        build_cohort(_scans(rows).assign(series_time=["", "noon", ""]), None, _clinical(), None)
