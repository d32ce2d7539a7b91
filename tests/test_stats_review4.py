"""Statistics module, fourth review: ties, constants and degenerate fits that gave a number without a reason.

Each test failed before its fix: liao2021's peak timing took the earliest of tied peak days (``idxmax``), zhang2020's
partial correlation was NaN with an empty note when a covariate or the variable was constant, the pairwise subgroup
tests gave p = 1 (Mann-Whitney) or NaN with a RuntimeWarning (LSD) for constant values, liao2021's ROC reported an
infinite Youden cut-off when AUC < 0.5, a quasi-separated logistic fit printed OR 1e13 with a Wald p of 0.9998,
the summary's li2020 heading said "six-zone, 0-24" whatever the score, li2020's score bands ran past the scale's
maximum with whole-number labels, and tables without any lab or fitted model came out with no column and no reason.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scoring.stats import compare, li2020, liao2021, report, schema, zhang2020
from scoring.stats.api import run_stats
from scoring.stats.codebook import STATS_COLUMNS
from scoring.stats.cohort import build_cohort
from scoring.stats.simulate import write_cohort

REPO = Path(__file__).resolve().parents[1]
DAY0 = pd.Timestamp("2020-01-01")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, Path]:
    return write_cohort(tmp_path_factory.mktemp("small4"), seed=3, n_survivors=20, n_nonsurvivors=6)


def _clinical(ids: list[str], **cols: list[str]) -> pd.DataFrame:
    return schema.validate_clinical(pd.DataFrame({"patient_id": ids, "onset_date": ["2020-01-01"] * len(ids)} | cols))


def _cohort(series: dict[str, tuple[list[tuple[int, float]], list[tuple[int, float]]]]):
    """One patient per key: (day, six-zone score) scans and (day, il6) lab values."""
    scans, labs = [], []
    for pid, (sc, lb) in series.items():
        for d, v in sc:
            scans.append({"scan_id": f"{pid}{d}", "patient_id": pid, "study_date": DAY0 + pd.Timedelta(days=d),
                          "six_zone_total": v, "zhang900_total": 10 * v})
        for d, v in lb:
            labs.append({"patient_id": pid, "date": DAY0 + pd.Timedelta(days=d), "analyte": "il6", "value": v})
    return build_cohort(pd.DataFrame(scans), None, _clinical(list(series)), pd.DataFrame(labs))


# ---- 1. liao2021 peak timing: a tied peak is placed at the mean of its days ------------------------------

def test_tied_score_peak_is_the_mean_of_its_days_not_the_earliest():
    il6 = [(3, 5.0), (10, 50.0), (17, 5.0), (24, 4.0)]
    cohort = _cohort({
        "A": ([(3, 2.0), (10, 9.0), (17, 9.0), (24, 4.0)], il6),  # score peak tied on days 10 and 17
        "B": ([(3, 9.0), (10, 4.0), (17, 9.0), (24, 9.0)], il6),  # tied on days 3, 17 and 24
        "C": ([(3, 2.0), (10, 4.0), (17, 9.0), (24, 4.0)], il6),  # one peak, day 17
    })
    per, summary = liao2021.peak_timing(cohort, "six_zone_total", ["il6"])
    per = per.set_index("patient_id")
    assert per.loc["A", "score_peak_day"] == 13.5  # was 10: the earliest of the tie, lag 0
    assert per.loc["B", "score_peak_day"] == pytest.approx((3 + 17 + 24) / 3)  # was 3
    assert per.loc["C", "score_peak_day"] == 17
    assert list(per["lag_days"]) == pytest.approx([3.5, 44 / 3 - 10, 7])
    assert list(per["score_peak_tied_days"]) == [2, 3, 1] and list(per["lab_peak_tied_days"]) == [1, 1, 1]
    row = summary.iloc[0]
    assert row["n_tied_score_peak"] == 2 and row["n_tied_lab_peak"] == 0
    assert row["n_lab_first"] == 3 and row["n_same_day"] == 0  # was 1 lab first, 1 same day, 1 score first
    assert "mean of those days" in row["note"]


def test_tied_lab_peak_follows_the_same_rule_and_the_rule_favours_neither_side():
    # a score peak on day 10 and an IL-6 maximum on days 3 and 17: the midpoint is day 10, lag 0 (the earliest
    # day made it 'score first', the latest 'lab first')
    cohort = _cohort({"A": ([(3, 2.0), (10, 9.0), (17, 4.0)], [(3, 50.0), (10, 5.0), (17, 50.0)])})
    per, summary = liao2021.peak_timing(cohort, "six_zone_total", ["il6"], min_n=1)
    assert per.iloc[0]["lab_peak_day"] == 10 and per.iloc[0]["lag_days"] == 0
    assert summary.iloc[0]["n_tied_lab_peak"] == 1 and summary.iloc[0]["n_same_day"] == 1


def test_peak_rule_is_documented():
    doc = (REPO / "docs" / "clinical_schema.md").read_text()
    assert "tied peak" in doc and "n_tied_score_peak" in doc and "mean of those days" in doc
    assert "n_tied_score_peak" in report.TABLE_NOTES["liao2021_peak_timing"]


# ---- 2. zhang2020 partial correlation: constant covariate left out, constant variable named -------------

def _pc_data() -> pd.DataFrame:
    return pd.DataFrame({"x": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "y": [2, 1, 4, 3, 6, 5, 8, 9, 7, 10],
                         "age": [30, 45, 50, 41, 62, 58, 70, 66, 49, 75], "gc": [1] * 10})


def test_partial_correlation_leaves_a_constant_covariate_out_when_asked():
    d = _pc_data()
    plain = compare.partial_correlation(d, "x", "y", ["gc", "age"])
    assert np.isnan(plain["r"]) and plain["note"] == "not tested: covariate gc is constant"
    dropped = compare.partial_correlation(d, "x", "y", ["gc", "age"], drop_constant_covariates=True)
    want = compare.partial_correlation(d, "x", "y", ["age"])
    for k in ("n", "r", "ci_low", "ci_high", "p_value"):
        assert dropped[k] == pytest.approx(want[k])  # the dof are those of one covariate
    assert dropped["left_out"] == {"gc": 1} and dropped["covariates"] == ["age"] and dropped["note"] == ""
    flat = compare.partial_correlation(d.assign(y=3), "x", "y", ["age"])
    assert np.isnan(flat["r"]) and flat["note"] == "not tested: y is constant"


def test_zhang2020_partial_correlation_with_every_patient_on_glucocorticoids(small, tmp_path):
    clin = pd.read_csv(small["clinical"], dtype=str, keep_default_na=False)
    clin["glucocorticoid"] = "yes"
    clin.to_csv(tmp_path / "clinical.csv", index=False)
    t = run_stats(small["scores"], tmp_path / "clinical.csv", small["labs"], study="zhang2020")
    pc = t["zhang2020_partial_correlation"]
    assert len(pc) and pc["note"].str.contains("glucocorticoid constant (all yes): left out", regex=False).all()
    assert (pc["covariates"] == "age").all()
    assert pc["coefficient"].notna().all()  # was NaN in every row, note empty
    ba = t["zhang2020_before_after_patients"]
    row = pc.set_index("y").loc["change in crp"]
    want = compare.partial_correlation(ba, "zhang900_total_change", "crp_change", ["age"])
    assert row["coefficient"] == pytest.approx(want["r"]) and row["p_value"] == pytest.approx(want["p_value"])


def test_zhang2020_partial_correlation_of_a_constant_change_says_so(small, tmp_path):
    labs = pd.read_csv(small["labs"], dtype=str, keep_default_na=False)
    labs.loc[labs["analyte"] == "crp", "value"] = "5"
    labs.to_csv(tmp_path / "labs.csv", index=False)
    t = run_stats(small["scores"], small["clinical"], tmp_path / "labs.csv", study="zhang2020")
    row = t["zhang2020_partial_correlation"].set_index("y").loc["change in crp"]
    assert np.isnan(row["coefficient"]) and row["note"] == "not tested: change in crp is constant"


# ---- 3. zhang2020 pairwise: constant values are not tested, no p = 1, no RuntimeWarning -------------------

def _adm(values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"subgroup": g, "lab": v} for g, vs in values.items() for v in vs])


@pytest.mark.parametrize("normal", [set(), {"lab"}])
def test_pairwise_of_identical_values_is_not_tested(normal):
    adm = _adm({"0-100": [5.0] * 4, "101-200": [5.0] * 4, ">200": [5.0] * 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # LSD divided by a pooled SD of 0 (RuntimeWarning)
        omni, pair = zhang2020.subgroup_labs(adm, ["lab"], normal, 3)
    assert omni.iloc[0]["note"] == "not tested: all values identical"
    assert len(pair) == 3 and pair["p_value"].isna().all() and pair["p_adjusted"].isna().all()  # was p = 1.0
    assert (pair["note"] == "not tested: all values identical").all()


def test_pairwise_tests_the_pairs_that_vary_and_names_the_others():
    adm = _adm({"0-100": [5.0] * 4, "101-200": [5.0] * 4, ">200": [6.0, 7.0, 9.0, 8.0]})
    import scikit_posthocs as sp

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, pair = zhang2020.subgroup_labs(adm, ["lab"], set(), 3)
    pair = pair.set_index(["group_a", "group_b"])
    assert pair.loc[("0-100", "101-200"), "note"] == "not tested: all values identical"
    assert np.isnan(pair.loc[("0-100", "101-200"), "p_value"])
    want = sp.posthoc_mannwhitney(adm, val_col="lab", group_col="subgroup", p_adjust=None)
    assert pair.loc[("0-100", ">200"), "p_value"] == pytest.approx(want.loc["0-100", ">200"])
    assert pair.loc[("0-100", ">200"), "note"] == ""
    # LSD with no variance inside any subgroup: the pooled SD is 0, t = x / 0
    adm2 = _adm({"0-100": [5.0] * 4, "101-200": [6.0] * 4, ">200": [7.0] * 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, lsd = zhang2020.subgroup_labs(adm2, ["lab"], {"lab"}, 3)
    assert lsd["p_value"].isna().all() and lsd["note"].str.startswith("not tested: no variance within").all()


# ---- 4. liao2021 ROC: no infinite cut-off; its direction said ---------------------------------------------

def test_roc_below_half_gives_the_reverse_rule_not_an_infinite_cut_off(tmp_path):
    y = pd.Series([1] * 6 + [0] * 6, dtype=float)
    x = pd.Series([1, 2, 3, 4, 9, 5, 6, 7, 8, 10, 11, 12], dtype=float)  # persistent: lower IL-6
    row = liao2021.roc_table(y, x, "admission il6").iloc[0]
    assert row["auc"] < 0.5
    assert np.isfinite(row["youden_cutoff"])  # was inf (sklearn's first threshold)
    assert row["cutoff_rule"] == "admission il6 <= cut-off counts as persistent"
    assert "AUC < 0.5" in row["note"] and "lower admission il6" in row["note"]
    cut = row["youden_cutoff"]
    assert row["sensitivity"] == pytest.approx((x[y == 1] <= cut).mean())
    assert row["specificity"] == pytest.approx((x[y == 0] > cut).mean())
    page = report.write_html({"liao2021_roc": liao2021.roc_table(y, x, "admission il6")}, [], tmp_path, "t",
                             {}).read_text()
    assert ">inf<" not in page and "&lt;= cut-off counts as persistent" in page


def test_roc_at_chance_gives_no_cut_off_and_above_half_is_unchanged():
    from sklearn.metrics import roc_curve

    y = pd.Series([1, 1, 1, 0, 0, 0], dtype=float)
    flat = liao2021.roc_table(y, pd.Series([4.0] * 6), "il6").iloc[0]
    assert flat["auc"] == 0.5 and np.isnan(flat["youden_cutoff"]) and flat["note"].startswith("no cut-off")
    x = pd.Series([9, 3, 8, 4, 2, 5], dtype=float)
    row = liao2021.roc_table(y, x, "il6").iloc[0]
    fpr, tpr, thr = roc_curve(y, x)
    k = int(np.argmax(tpr - fpr))
    assert row["youden_cutoff"] == thr[k] and row["sensitivity"] == tpr[k] and row["note"] == ""
    assert row["cutoff_rule"] == "il6 >= cut-off counts as persistent"


# ---- 5. logistic regression: quasi-separation is not fitted --------------------------------------------

def _quasi() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(10), (rng.random(30) < 0.3).astype(float)]
    return pd.DataFrame({"y": y, "x": np.r_[np.ones(10), np.zeros(30)], "age": rng.normal(50, 10, 40)})


def test_quasi_separation_leaves_or_ci_and_p_blank():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tab, res, note = compare.logistic(_quasi(), "y", ["x", "age"])
    assert tab[["odds_ratio", "ci_low", "ci_high", "p_value"]].isna().all().all()  # was OR 1e13, p 0.9998
    assert res is None and note.startswith("not fitted: quasi-separation (the fit did not converge")
    assert (tab["note"] == note).all() and (tab["n"] == 40).all()
    assert not caught  # no "overflow encountered in exp" from exp(30)


def test_absurd_estimate_of_a_converged_fit_is_not_fitted_and_a_sane_one_is_unchanged(monkeypatch):
    import statsmodels.api as sm

    d = _quasi().assign(x=lambda t: t["age"] + 10 * t["y"])
    tab, res, _ = compare.logistic(d, "y", ["age"])
    ref = sm.Logit(d["y"], sm.add_constant(d[["age"]])).fit(disp=0)
    assert res is not None and tab.iloc[0]["odds_ratio"] == pytest.approx(np.exp(ref.params["age"]))
    assert tab.iloc[0]["p_value"] == pytest.approx(ref.pvalues["age"]) and tab.iloc[0]["note"] == "Wald test"
    monkeypatch.setattr(compare, "LOGIT_MAX_COEF_PER_SD", 1e-3)  # any estimate now counts as absurd
    tab, res, note = compare.logistic(d, "y", ["age"])
    assert res is None and "log odds ratio or its SE > 0.001 per SD of age" in note
    assert tab["p_value"].isna().all()


# ---- 6. report text: headings from the score used, bands within the scale, 'not run' rows ----------------

def test_summary_headings_name_the_score_used(small, tmp_path):
    out = tmp_path / "stats"
    run_stats(small["scores"], small["clinical"], small["labs"], study="li2020", out_dir=out,
              li2020={"score": "percent_opacity"})
    page = (out / "summary.html").read_text()
    assert "by period since onset (percent opacity, 0-100 %)</h2>" in page
    assert "six-zone" not in page  # was "(six-zone, 0-24)"
    assert report.study_titles() == report.STUDY_TITLES  # the default run reads as before
    assert "(lobar, 0-20)" in report.study_titles({"li2020": {"score": "lobar20_total"}})["li2020"]


def test_score_bands_stay_within_the_scale_and_fit_continuous_values():
    labels = {s: [b.label for b in li2020.score_bands(s)] for s in ("percent_opacity", "zhang900_total",
                                                                    "lobar20_total", "six_zone_total")}
    assert labels["percent_opacity"] == ["0-<20", "20-<40", "40-<60", "60-<80", "80-100"]  # was 0-20 .. 84-104
    assert labels["zhang900_total"][-1] == "720-900"  # was 724-904
    assert labels["lobar20_total"][-1] == "16-20"  # was 20-24
    assert labels["six_zone_total"] == ["0-4", "5-9", "10-14", "15-19", "20-24"]  # the study's
    assert [b.mid for b in li2020.score_bands("six_zone_total")] == [2, 7, 12, 17, 22]
    # a period's mean of 20.5 % is in 20-<40 (it fell into a band labelled 0-20)
    per = pd.DataFrame({"patient_id": list("ABCD"), "period": ["0-5"] * 4, "outcome": ["survivor"] * 4,
                        "percent_opacity": [20.5, 3.0, 45.0, 100.0], "days_since_onset": [2.0, 3.0, 4.0, 5.0]})
    _, pm = li2020.mortality_logistic(per, "percent_opacity")
    p05 = pm[pm["period_days"] == "0-5"].set_index("score_band")
    assert p05.loc["20-<40", "n_observed"] == 1 and p05.loc["0-<20", "n_observed"] == 1
    assert p05.loc["80-100", "n_observed"] == 1
    assert p05.loc["20-<40", "band_rule"] == "20 <= percent_opacity < 40"
    # a score of unknown range: bands up to its largest value, rounded up, never beyond
    unknown = li2020.score_bands("my_score", pd.Series([0.4, 36.2]))
    assert unknown[-1].label == "29.6-37" and unknown[2].label == "14.8-<22.2"


def test_tables_without_labs_or_a_fitted_model_say_not_run(small, tmp_path):
    t = run_stats(small["scores"], small["clinical"], None, study="zhang2020")
    for name in ("zhang2020_subgroup_labs", "zhang2020_pairwise", "zhang2020_partial_correlation"):
        # one row that says why, under the table's full header (the columns of a run with labs: they stack)
        assert list(t[name].columns) == list(STATS_COLUMNS[name]) and len(t[name]) == 1
        assert t[name]["note"].iloc[0].startswith("not run: no lab values")
    clin = pd.read_csv(small["clinical"], dtype=str, keep_default_na=False)
    clin["outcome"] = "survivor"
    clin.to_csv(tmp_path / "clinical.csv", index=False)
    t = run_stats(small["scores"], tmp_path / "clinical.csv", small["labs"], study="li2020",
                  li2020={"labs": ["ldh"]})
    tests = t["li2020_mixed_model_tests"]
    assert list(tests["variable"]) == ["six_zone_total", "ldh"]
    assert tests["note"].str.startswith("not run: model not fitted (too few patients").all()
