"""Statistics module, review: defects found by a biostatistician's read of the three studies' analyses.

Each test failed before its fix: an R x C Fisher test that was an unseeded Monte Carlo estimate, degenerate
t-tests and mixed models that reported p ~ 0, zhang2020 partial-correlation covariates silently ignored,
non-numeric covariates silently dropped, duplicated scan rows counted twice, error lines shifted by blank
lines, option values that crashed or gave silent NaNs, labs named as in labs.csv silently dropped, and
patients with one scan giving empty before/after tables with no reason.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.cli import main
from pipeline.errors import CTScoreError
from scoring.stats import compare, li2020, schema
from scoring.stats.api import run_stats
from scoring.stats.cohort import build_cohort
from tests.test_stats_edge_cli import small  # noqa: F401 - fixture
from tests.test_stats_units import _clinical


def _fisher_brute_force(table: np.ndarray) -> float:
    """Freeman-Halton p by listing every 2 x C table with the observed margins (independent of the module)."""
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    dist = stats.random_table(rows, cols)
    p_obs, p = dist.pmf(table), 0.0
    for first in itertools.product(*(range(c + 1) for c in cols)):
        if sum(first) != rows[0]:
            continue
        t = np.array([first, cols - np.array(first)])
        if dist.pmf(t) <= p_obs * (1 + 1e-7):
            p += dist.pmf(t)
    return p


def test_fisher_rxc_is_exact_and_the_same_on_every_run():
    tab = pd.DataFrame([[3, 1, 0], [1, 3, 4]], index=["F", "M"], columns=["0-100", "101-200", ">200"])
    rows = [compare.categorical(tab) for _ in range(3)]
    assert rows[0]["p_value"] == pytest.approx(_fisher_brute_force(tab.to_numpy()), rel=1e-12)  # 0.2 exactly
    assert rows[0]["p_value"] == pytest.approx(0.2, rel=1e-9)
    assert len({r["p_value"] for r in rows}) == 1 and "Fisher" in rows[0]["test"]
    two = compare.categorical(pd.DataFrame([[8, 2], [1, 5]]))
    assert two["p_value"] == pytest.approx(stats.fisher_exact([[8, 2], [1, 5]]).pvalue) and two["test"] == "Fisher exact"
    # a very unbalanced table: scipy's Monte Carlo said 1e-4 (its floor), the exact p is ~3e-12
    p = compare.categorical(pd.DataFrame([[1, 6, 18], [55, 6, 7]]))["p_value"]
    assert p == pytest.approx(_fisher_brute_force(np.array([[1, 6, 18], [55, 6, 7]])), rel=1e-9) and p < 1e-10


def test_degenerate_t_tests_are_not_tested_instead_of_p_zero():
    rows = compare.paired([1, 2, 3, 4], [2, 3, 4, 5])  # every pair +1: t = 1 / 0
    t_row = next(r for r in rows if r["test"].startswith("paired t"))
    assert np.isnan(t_row["p_value"]) and "no variance" in t_row["note"]
    assert np.isfinite(next(r for r in rows if r["test"].startswith("Wilcoxon"))["p_value"])
    for test in ("ttest", "anova"):
        row = compare.compare_groups({"a": [1, 1, 1], "b": [2, 2, 2]}, test=test)
        assert np.isnan(row["p_value"]) and "no variance" in row["note"]
    assert "eta^2_H" in compare.compare_groups({"a": [1, 2, 3], "b": [4, 5, 6], "c": [7, 8, 9]})["effect_size_name"]


def test_mixed_model_of_a_constant_is_not_fitted():
    clin = schema.validate_clinical(_clinical(patient_id=[f"P{i}" for i in range(8)],
                                              onset_date=["2020-01-01"] * 8,
                                              outcome=["survivor"] * 4 + ["died"] * 4))
    scans = pd.DataFrame([{"scan_id": f"P{i}-{d}", "patient_id": f"P{i}", "study_date": pd.Timestamp("2020-01-01")
                           + pd.Timedelta(days=d), "six_zone_total": 6.0, "zhang900_total": 50.0}
                          for i in range(8) for d in (2, 8, 13)])
    fe, wald = li2020.mixed_models(build_cohort(scans, None, clin, None), "six_zone_total", [], min_n=3)
    assert fe["p_value"].isna().all() if "p_value" in fe else True
    assert fe["note"].iloc[0] == "not fitted: all values identical" and wald.empty


@pytest.fixture
def clinical_with_bmi(small, tmp_path):  # noqa: F811
    clin = pd.read_csv(small["clinical"], dtype=str, keep_default_na=False)
    clin["bmi"] = [f"{x:.1f}" for x in np.random.default_rng(1).normal(25, 3, len(clin))]
    path = tmp_path / "clinical.csv"
    clin.to_csv(path, index=False)
    return path, clin


def test_zhang2020_partial_covariates_from_the_clinical_table_are_used(small, clinical_with_bmi):  # noqa: F811
    path, _ = clinical_with_bmi
    t = run_stats(small["scores"], path, small["labs"], study="zhang2020",
                  zhang2020={"partial_covariates": ["bmi", "no_such_column"]})
    pc = t["zhang2020_partial_correlation"].set_index("y")
    assert (pc["covariates"] == "bmi").all()  # was "none": an unadjusted correlation labelled partial
    assert pc["note"].str.contains("no_such_column").all()
    ba = t["zhang2020_before_after_patients"]
    want = compare.partial_correlation(ba, "zhang900_total_change", "crp_change", ["bmi"])
    assert pc.loc["change in crp", "coefficient"] == pytest.approx(want["r"])
    assert pc.loc["change in crp", "n"] == want["n"]


def test_non_numeric_covariate_is_refused_with_file_line_and_value(small, clinical_with_bmi, tmp_path):  # noqa: F811
    path, clin = clinical_with_bmi
    clin.loc[3, "bmi"] = "27,5"
    clin.to_csv(path, index=False)
    for kw in ({"study": "liao2021", "liao2021": {"covariates": ["il6", "bmi"]}},
               {"study": "zhang2020", "zhang2020": {"partial_covariates": ["bmi"]}}):
        with pytest.raises(CTScoreError) as e:
            run_stats(small["scores"], path, small["labs"], **kw)
        msg = str(e.value)
        assert e.value.code == "BAD_CLINICAL_DATA" and "'bmi'" in msg and "line 5" in msg and "27,5" in msg
        assert "clinical.csv" in msg


def test_duplicated_scan_rows_are_refused(small, tmp_path):  # noqa: F811
    scans = pd.read_csv(small["scans"], dtype=str, keep_default_na=False)
    first_ok = int(np.flatnonzero(scans["status"] == "ok")[0])
    pd.concat([scans, scans.iloc[[first_ok]]]).to_csv(tmp_path / "scans.csv", index=False)
    with pytest.raises(CTScoreError) as e:
        run_stats(tmp_path / "scans.csv", small["clinical"], small["labs"], study="li2020")
    msg = str(e.value)
    assert e.value.code == "BAD_SCORES" and f"line {len(scans) + 2}:" in msg and f"also line {first_ok + 2})" in msg


def test_blank_lines_do_not_shift_the_line_in_errors(small, tmp_path):  # noqa: F811
    lines = Path(small["clinical"]).read_text().splitlines()
    header = lines[0].split(",")
    bad = lines[4].split(",")
    bad[header.index("outcome")] = "alive-ish"
    text = "\n".join([*lines[:2], "", *lines[2:4], ",".join(bad), *lines[5:]]) + "\n"
    (tmp_path / "clinical.csv").write_text(text)
    with pytest.raises(CTScoreError) as e:
        schema.read_clinical(tmp_path / "clinical.csv")
    assert "line 6:" in str(e.value) and text.splitlines()[5].count("alive-ish") == 1


@pytest.mark.parametrize("kw", [{"li2020": {"min_n": 0}}, {"liao2021": {"min_n": 1}},
                                {"liao2021": {"within_bin": "lastest"}}, {"liao2021": {"threshold": "5"}},
                                {"zhang2020": {"partial_method": "kendall"}}, {"window_days": "1"},
                                {"liao2021": {"covariates": "il6"}}, {"li2020": {"score": "no_such_score"}}])
def test_bad_option_values_stop_with_bad_option(small, tmp_path, kw):  # noqa: F811
    out = tmp_path / "o"
    with pytest.raises(CTScoreError) as e:
        run_stats(small["scores"], small["clinical"], small["labs"], study="li2020", out_dir=out, **kw)
    assert e.value.code == "BAD_OPTION"
    if "score" not in kw.get("li2020", {}):
        assert not out.exists()


def test_cli_min_n_zero_is_refused(small, tmp_path, capsys):  # noqa: F811
    rc = main(["stats", "--scores", str(small["scores"]), "--clinical", str(small["clinical"]), "--labs",
               str(small["labs"]), "--study", "li2020", "--min-n", "0", "-o", str(tmp_path / "o")])
    assert rc == 1 and "BAD_OPTION" in capsys.readouterr().err


def test_lab_options_accept_the_spellings_of_labs_csv(small):  # noqa: F811
    t = run_stats(small["scores"], small["clinical"], small["labs"], study="zhang2020",
                  zhang2020={"labs": ["IL-6", "C-reactive protein"], "normal_labs": ["IL-6"]})
    assert list(t["zhang2020_correlations"]["lab"]) == ["il6", "crp"]
    assert t["zhang2020_subgroup_labs"].set_index("variable").loc["il6", "test"] == "one-way ANOVA"


def test_patients_with_one_scan_give_reasons_in_before_after_tables(small, tmp_path):  # noqa: F811
    scans = pd.read_csv(small["scans"], dtype=str, keep_default_na=False)
    scans.drop_duplicates("patient_id").to_csv(tmp_path / "scans.csv", index=False)
    t = run_stats(tmp_path / "scans.csv", small["clinical"], small["labs"], study="zhang2020")
    ba = t["zhang2020_before_after"]
    assert not ba.empty and (ba["n_pairs"] == 0).all() and ba["note"].str.startswith("not tested").all()
    gc = t["zhang2020_glucocorticoid_change"]
    assert "variable" in gc and gc["note"].str.startswith("not tested").all()  # was "no 'glucocorticoid' column"
    assert t["zhang2020_partial_correlation"]["note"].str.startswith("not tested").all()


def test_same_day_scans_are_reported(small, tmp_path):  # noqa: F811
    scans = pd.read_csv(small["scans"], dtype=str, keep_default_na=False)
    ok = scans[scans["status"] == "ok"]
    extra = ok.iloc[[0, 1]].assign(scan_id=lambda d: d["scan_id"] + "-bis")
    pd.concat([ok, extra]).to_csv(tmp_path / "scans.csv", index=False)
    t = run_stats(tmp_path / "scans.csv", small["clinical"], small["labs"], study="li2020")
    assert "more than one scored scan" in " ".join(t["data_summary"]["value"])


def test_peak_timing_needs_min_n_non_zero_lags():
    from scoring.stats import liao2021

    ids = ["A", "B", "C"]
    clin = schema.validate_clinical(_clinical(patient_id=ids, onset_date=["2020-01-01"] * 3,
                                              outcome=["survivor"] * 3))
    day = pd.Timestamp("2020-01-01")
    scans, labs = [], []
    for pid, lab_peak in zip(ids, (10, 10, 3), strict=True):  # C's IL-6 peaks a week before its score
        for d, score in ((3, 2.0), (10, 9.0), (17, 4.0)):
            scans.append({"scan_id": f"{pid}{d}", "patient_id": pid, "study_date": day + pd.Timedelta(days=d),
                          "six_zone_total": score, "zhang900_total": 10 * score})
            labs.append({"patient_id": pid, "date": day + pd.Timedelta(days=d), "analyte": "il6",
                         "value": 50.0 if d == lab_peak else 5.0})
    cohort = build_cohort(pd.DataFrame(scans), None, clin, pd.DataFrame(labs))
    _, summary = liao2021.peak_timing(cohort, "six_zone_total", ["il6"], min_n=3)
    row = summary.iloc[0]
    assert row["n_patients"] == 3 and row["n_lab_first"] == 1 and row["n_same_day"] == 2
    assert np.isnan(row["wilcoxon_p"]) and np.isnan(row["sign_test_p"])  # was p = 1 from a single lag
    assert row["note"].startswith("not tested")


def test_a_word_in_a_numeric_score_column_is_refused(small, tmp_path):  # noqa: F811
    """A pipeline column that must be a number (percent_opacity, volumes, ...) holding text was kept as text and
    the analyses using it went wrong later; it is refused with the line, as the totals are."""
    scans = pd.read_csv(small["scans"], dtype=str, keep_default_na=False)
    assert "percent_opacity" in scans.columns
    i = int(np.flatnonzero(scans["status"] == "ok")[1])
    scans.loc[i, "percent_opacity"] = "12,5"
    scans.to_csv(tmp_path / "scans.csv", index=False)
    with pytest.raises(CTScoreError, match=rf"column 'percent_opacity', line {i + 2}: value '12,5' is not a number"):
        run_stats(tmp_path / "scans.csv", small["clinical"], small["labs"], study="li2020")


def test_an_infinite_lab_value_is_refused(small, tmp_path):  # noqa: F811
    labs = pd.read_csv(small["labs"], dtype=str, keep_default_na=False)
    labs.loc[3, "value"] = "inf"
    labs.to_csv(tmp_path / "labs.csv", index=False)
    with pytest.raises(CTScoreError, match="column 'value', line 5: value 'inf' is not a finite number"):
        run_stats(small["scores"], small["clinical"], tmp_path / "labs.csv", study="li2020")


def test_week8_value_and_day_come_from_one_scan(small, tmp_path):  # noqa: F811
    """liao2021 week 8: a later week-8 scan without a score no longer lends its day to an earlier scan's score
    (pandas' last() took each column's own last value), and a patient whose week-8 scans all lack a score is
    unclassified with that reason, not "recovery"."""
    scans = pd.read_csv(small["scans"], dtype=str, keep_default_na=False)
    clin = pd.read_csv(small["clinical"])
    onset = clin.set_index("scores_patient_id")["onset_date"]
    day = (pd.to_datetime(scans["study_date"], format="%Y%m%d")
           - pd.to_datetime(scans["patient_id"].map(onset))).dt.days
    in_w8 = (day >= 49) & (day <= 55) & (scans["status"] == "ok")
    alone = scans.loc[in_w8, "patient_id"].value_counts().eq(1)  # patients with one week-8 scan
    w8 = scans[in_w8 & (day <= 53) & scans["patient_id"].map(alone).fillna(False).astype(bool)]
    a, b = w8.index[0], w8.index[1]
    later = scans.loc[[a]].copy()
    later["scan_id"] = later["scan_id"] + "-later"
    later["study_date"] = (pd.to_datetime(later["study_date"], format="%Y%m%d") + pd.Timedelta(days=1)).dt.strftime(
        "%Y%m%d")
    later["six_zone_total"] = ""
    scans.loc[b, "six_zone_total"] = ""
    pd.concat([scans, later]).to_csv(tmp_path / "scans.csv", index=False)
    g = run_stats(tmp_path / "scans.csv", small["clinical"], study="liao2021")["liao2021_lesion_groups"]
    pid = dict(zip(clin["scores_patient_id"], clin["patient_id"], strict=True))
    ra = g.set_index("patient_id").loc[pid[scans.loc[a, "patient_id"]]]
    rb = g.set_index("patient_id").loc[pid[scans.loc[b, "patient_id"]]]
    assert ra["week8_score"] == float(scans.loc[a, "six_zone_total"]) and ra["week8_day"] == day[a]
    assert rb["group"] == "unclassified" and "week-8 score missing" in rb["reason"] and rb["week8_day"] == day[b]


@pytest.mark.parametrize("within", ["last", "first", "mean"])
def test_li2020_period_score_and_day_come_from_the_scored_scans(within):
    """li2020 per period: a scan without a score no longer lends its day to the period (pandas' last()/first()
    took each column's own last value, and the mean of days counted unscored scans)."""
    from types import SimpleNamespace

    d = pd.to_datetime
    scans = pd.DataFrame({
        "patient_id": ["p1", "p1", "p1", "p2"],
        "study_date": d(["2020-02-07", "2020-02-09", "2020-02-05", "2020-02-08"]),
        "days_since_onset": [6.0, 8.0, 4.0, 7.0],
        "period": ["6-10", "6-10", "0-5", "6-10"],
        "six_zone_total": [10.0, np.nan, np.nan, 3.0],  # p1's later 6-10 scan and its 0-5 scan have no score
    })
    cohort = SimpleNamespace(scans=scans, clinical=pd.DataFrame({"patient_id": ["p1", "p2"],
                                                                 "outcome": ["survivor", "non-survivor"]}))
    per = li2020._serial(cohort, "six_zone_total", [], within).set_index(["patient_id", "period"])
    assert per.loc[("p1", "6-10"), "six_zone_total"] == 10.0
    assert per.loc[("p1", "6-10"), "days_since_onset"] == 6.0  # the scored scan's day, not 8 (or their mean 7)
    assert ("p1", "0-5") not in per.index  # a period with no scored scan is not a row with an empty score


def test_liao2021_covariate_lab_names_in_any_accepted_spelling(small):  # noqa: F811
    """A lab covariate spelled as in labs.csv or the paper ("IL-6", "Lymphocyte count") is the lab: it was looked
    up under that spelling, found nowhere and reported "not in the data"."""
    plain = run_stats(small["scores"], small["clinical"], small["labs"], study="liao2021",
                      liao2021={"covariates": ["il6", "age"]})["liao2021_logistic"]
    spelled = run_stats(small["scores"], small["clinical"], small["labs"], study="liao2021",
                        liao2021={"covariates": ["IL-6", "age", "il6"]})["liao2021_logistic"]
    assert "not in the data" not in " ".join(spelled.get("note", pd.Series(dtype=str)).fillna("").astype(str))
    pd.testing.assert_frame_equal(plain, spelled)


def test_fisher_rxc_monte_carlo_branch_is_seeded_and_close_to_exact():
    """The Monte Carlo branch (margins allowing more than max_tables tables) was never run by a test: it needs
    scipy 1.15 (MonteCarloMethod(rng=...), fisher_exact(method=...)), while pyproject said scipy>=1.10."""
    from scoring.stats.compare import fisher_exact_rxc

    t = np.array([[3, 1, 0], [1, 2, 4], [0, 3, 2]])
    _, exact, how = fisher_exact_rxc(t)
    _, mc, how_mc = fisher_exact_rxc(t, max_tables=2)
    assert how == "Fisher-Freeman-Halton exact" and how_mc.startswith("Fisher-Freeman-Halton (Monte Carlo p")
    assert mc == fisher_exact_rxc(t, max_tables=2)[1] and abs(mc - exact) < 0.01
