"""Statistics module, second review: simulation, cohort assembly, comparisons.

Each test failed before its fix: the simulated cohort gave same-day and out-of-order scans (the demo then reported
"two series of one study"), an id column read as numbers (``--id-column mrn``) matched no scan, a repeated value in
it sent both patients' scans to the first one, ids that lost their leading zeros in a spreadsheet ('007' -> 7) were
left out, clinical patients without scans and labs of unknown patients were not counted in ``data_summary``, a
2 x 2 chi-square did not say that it was Yates-corrected, a t-test of three groups silently compared the first
two, and a Wilcoxon test ran on fewer than ``min_n`` pairs that changed. The last tests check numbers against
independent computations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.errors import CTScoreError
from scoring.stats import compare, schema, simulate
from scoring.stats.cohort import build_cohort, load_cohort


def _scans(ids: list[object]) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame({"scan_id": [f"s{i}" for i in range(n)], "patient_id": ids,
                         "study_date": pd.to_datetime("2020-02-01") + pd.to_timedelta(np.arange(n) * 7, unit="D"),
                         "six_zone_total": np.arange(n, dtype=float), "zhang900_total": np.arange(n, dtype=float)})


def _clin(**cols: list[str]) -> pd.DataFrame:
    n = len(next(iter(cols.values())))
    return schema.validate_clinical(pd.DataFrame({**cols, "onset_date": ["2020-01-25"] * n}))


# ---- simulated cohort ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_simulated_scans_are_serial_without_same_day_repeats(seed):
    c = simulate.make_cohort(seed=seed)
    s = c["scans"][c["scans"]["status"] == "ok"]
    assert not s.duplicated(["patient_id", "study_date"]).any()
    for _, g in s.groupby("patient_id"):  # scan 00, 01, ... in date order (the week-8 scan is the last)
        assert pd.to_datetime(g.sort_values("scan_id")["study_date"]).is_monotonic_increasing


# ---- cohort assembly -------------------------------------------------------------------------------

def test_an_id_column_read_as_numbers_matches_the_scans():
    clin = _clin(patient_id=["A", "B", "C"], mrn=["1007", "12", " 13"])
    assert pd.api.types.is_numeric_dtype(clin["mrn"])  # typed as numbers by validate_clinical
    co = build_cohort(_scans(["1007", "12", "13"]), None, clin, None, id_column="mrn")
    assert co.scans.set_index("scan_id")["patient_id"].to_dict() == {"s0": "A", "s1": "B", "s2": "C"}
    assert not co.notes


def test_a_repeated_value_in_the_id_column_is_refused():
    clin = _clin(patient_id=["A", "B", "C"], mrn=["x7", "x7", "x9"])
    with pytest.raises(CTScoreError, match="'x7' appears more than once") as e:
        build_cohort(_scans(["x7", "x7", "x9"]), None, clin, None, id_column="mrn")
    assert e.value.code == "BAD_CLINICAL_DATA"


def test_ids_that_lost_their_leading_zeros_match_when_unambiguous_and_are_noted():
    clin = _clin(patient_id=["7", "12", "99"])
    co = build_cohort(_scans(["007", "007", "12"]), None, clin, None)
    assert co.scans.set_index("scan_id")["patient_id"].to_dict() == {"s0": "7", "s1": "7", "s2": "12"}
    assert any("leading zeros" in n and "'007' = '7'" in n for n in co.notes)
    # integer ids (a DataFrame handed to the Python API) match their text
    co = build_cohort(_scans([7, 12]), None, clin, None)
    assert len(co.scans) == 2
    # '7' and '007' both among the scans: two spellings, maybe two patients: no guess, '007' is left out and named
    co = build_cohort(_scans(["007", "7", "12"]), None, clin, None)
    assert set(co.scans["scan_id"]) == {"s1", "s2"}
    assert any("left out" in n and "'007'" in n for n in co.notes)


def test_patients_without_scans_and_labs_of_unknown_patients_are_counted(tmp_path):
    clin = pd.DataFrame({"patient_id": ["A", "B", "C"], "onset_date": ["2020-01-25"] * 3})
    clin.to_csv(tmp_path / "clinical.csv", index=False)
    scans = _scans(["A", "B"])
    scans.assign(study_date=scans["study_date"].dt.strftime("%Y%m%d"), status="ok").to_csv(
        tmp_path / "scans.csv", index=False)
    pd.DataFrame({"patient_id": ["A", "Z", "Z"], "date": ["2020-02-01"] * 3, "analyte": ["crp", "crp", "il6"],
                  "value": [5, 6, 7]}).to_csv(tmp_path / "labs.csv", index=False)
    co = load_cohort(tmp_path / "scans.csv", tmp_path / "clinical.csv", tmp_path / "labs.csv")
    notes = co.data_summary().query("item == 'note'")["value"].tolist()
    assert any(n.startswith("1 patient(s) of the clinical table have no scored scan") and "'C'" in n for n in notes)
    assert any(n.startswith("2 lab value(s) of 1 patient(s) not in the clinical table") for n in notes)
    assert set(co.labs["patient_id"]) == {"A"}


# ---- comparisons -----------------------------------------------------------------------------------

def test_two_by_two_chi_square_says_yates_and_matches_the_hand_computation():
    tab = pd.DataFrame([[20, 10], [8, 22]], index=["M", "F"], columns=["0-100", "101-200"])
    row = compare.categorical(tab)
    assert "Yates" in row["test"] and "df=1" in row["test"]
    a, b, c, d = 20, 10, 8, 22
    n = a + b + c + d
    chi2 = n * (abs(a * d - b * c) - n / 2) ** 2 / ((a + b) * (c + d) * (a + c) * (b + d))  # Yates
    assert row["statistic"] == pytest.approx(chi2)
    assert row["p_value"] == pytest.approx(stats.chi2.sf(chi2, 1))
    row3 = compare.categorical(pd.DataFrame([[20, 10, 12], [8, 22, 15]]))
    assert row3["test"] == "chi-square (df=2)"  # no correction beyond 2 x 2


def test_a_two_group_test_of_three_groups_is_refused():
    groups = {"a": [1, 2, 3, 4], "b": [5, 6, 7, 8], "c": [9, 10, 11, 12]}
    for test in ("ttest", "mannwhitney"):
        with pytest.raises(ValueError, match="exactly two groups"):
            compare.compare_groups(groups, test)


def test_wilcoxon_needs_min_n_pairs_that_changed():
    rows = compare.paired([1, 2, 3, 4, 5], [1, 2, 3, 5, 7])  # changes 0, 0, 0, 1, 2
    wil, tt = rows
    assert np.isnan(wil["p_value"]) and "pairs that changed" in wil["note"]
    assert np.isfinite(tt["p_value"])  # the paired t-test uses every pair
    rows = compare.paired([1, 2, 3, 4, 5, 6], [1, 3, 5, 6, 9, 7])  # four changed: tested, zeros dropped
    assert rows[0]["p_value"] == pytest.approx(stats.wilcoxon([0, 1, 2, 2, 4, 1]).pvalue)


def test_mann_whitney_and_kruskal_against_hand_computations():
    x = np.array([3.1, 4.5, 2.2, 8.0, 5.5, 6.1, 4.4])
    y = np.array([1.0, 2.5, 3.3, 2.1, 0.4, 3.9])
    z = np.array([7.7, 9.1, 6.6, 8.8, 10.2])
    row = compare.compare_groups({"x": x, "y": y})
    ranks = stats.rankdata(np.r_[x, y])
    u = ranks[: x.size].sum() - x.size * (x.size + 1) / 2  # U of the first group
    assert row["statistic"] == pytest.approx(u)
    assert row["effect_size"] == pytest.approx(2 * u / (x.size * y.size) - 1)
    assert row["p_value"] == pytest.approx(stats.mannwhitneyu(x, y, method="exact").pvalue)  # no ties, small n
    row = compare.compare_groups({"x": x, "y": y, "z": z})
    allv = np.r_[x, y, z]
    r, n = stats.rankdata(allv), allv.size
    sizes = np.cumsum([0, x.size, y.size, z.size])
    h = 12 / (n * (n + 1)) * sum(r[a:b].sum() ** 2 / (b - a) for a, b in zip(sizes[:-1], sizes[1:])) - 3 * (n + 1)
    assert row["statistic"] == pytest.approx(h)
    assert row["p_value"] == pytest.approx(stats.chi2.sf(h, 2))
    assert row["effect_size"] == pytest.approx((h - 3 + 1) / (n - 3))
    row = compare.compare_groups({"x": x, "y": y}, "ttest")
    sp = np.sqrt(((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / (x.size + y.size - 2))
    t = (x.mean() - y.mean()) / (sp * np.sqrt(1 / x.size + 1 / y.size))
    assert row["statistic"] == pytest.approx(t)
    assert row["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), x.size + y.size - 2))
    assert row["effect_size"] == pytest.approx((x.mean() - y.mean()) / sp)


def test_median_iqr_of_large_values_is_written_out_not_in_exponent_form():
    assert compare.fmt_median_iqr([1200, 1500, 1800, 2400.4]) == "1650 [1425, 1950]"
    assert compare.fmt_median_iqr([0.0123, 0.5, 7.25]) == "0.5 [0.256, 3.88]"


def test_summary_html_writes_counts_from_1000_in_full(tmp_path):
    from scoring.stats import report

    # n columns are floats when a row of the table has none (concatenated groupings): n 1234 was shown 1.23e+03
    tab = pd.DataFrame({"grouping": ["group", "severity"], "n_persistent": [1234.0, np.nan], "p_value": [3.2e-5, 0.5]})
    page = report.write_html({"liao2021_weekly_tests": tab}, [], tmp_path, "t", {}).read_text()
    assert "<td>1234</td>" in page and "1.23e+03" not in page and "3.20e-05" in page
    assert report._fmt(2.5e12) == "2.5e+12" and report._fmt(0.0421) == "0.0421"
