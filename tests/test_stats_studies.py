"""Statistics module on the full-size simulated cohort: planted effects found, null variables not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scoring.stats.api import run_stats
from scoring.stats.simulate import write_cohort

ALPHA = 0.05


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> dict[str, Path]:
    return write_cohort(tmp_path_factory.mktemp("cohort"), seed=0)


@pytest.fixture(scope="module")
def tables(sim) -> dict[str, pd.DataFrame]:
    return run_stats(sim["scores"], sim["clinical"], sim["labs"], study="all",
                     zhang2020={"labs": ["crp", "il6", "lymphocyte_count", "ldh", "potassium"]},
                     li2020={"labs": ["nlr", "lymphocyte_count", "ldh", "d_dimer", "potassium"]})


# ---- li2020 ---------------------------------------------------------------------------------------

def test_li2020_cohort_design(sim):
    clinical = pd.read_csv(sim["clinical"])
    assert len(clinical) == 93 and (clinical["outcome"] == "non-survivor").sum() == 25


def test_li2020_non_survivors_higher_in_every_period(tables):
    t = tables["li2020_period_comparison"]
    score = t[t["variable"] == "six_zone_total"]
    assert list(score["period_days"]) == ["0-5", "6-10", "11-15", "16-20", ">20"]
    assert (score["p_value"] < ALPHA).all()
    assert (score["effect_size"] < 0).all()  # rank-biserial r: survivor > non-survivor would be positive
    assert (score[["n_survivor", "n_non-survivor"]] > 0).all().all()


def test_li2020_period_p_value_recomputed_independently(sim, tables):
    """Rebuild the 11-15 day comparison from the raw CSV files with pandas + scipy only."""
    scans = pd.read_csv(sim["scans"], dtype={"study_date": str})
    scans = scans[scans["status"] == "ok"]
    clin = pd.read_csv(sim["clinical"])
    d = scans.merge(clin, left_on="patient_id", right_on="scores_patient_id", suffixes=("_hash", ""))
    d["day"] = (pd.to_datetime(d["study_date"], format="%Y%m%d") - pd.to_datetime(d["onset_date"])).dt.days
    d = d[(d["day"] >= 11) & (d["day"] <= 15)]
    per_patient = d.groupby(["patient_id", "outcome"])["six_zone_total"].mean().reset_index()
    s = per_patient.loc[per_patient["outcome"] == "survivor", "six_zone_total"]
    ns = per_patient.loc[per_patient["outcome"] == "non-survivor", "six_zone_total"]
    ref = stats.mannwhitneyu(s, ns, alternative="two-sided")
    t = tables["li2020_period_comparison"]
    row = t[(t["period_days"] == "11-15") & (t["variable"] == "six_zone_total")].iloc[0]
    assert row["n_survivor"] == len(s) and row["n_non-survivor"] == len(ns)
    assert row["statistic"] == pytest.approx(ref.statistic) and row["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)


def test_li2020_mixed_model_and_logistic(tables):
    w = tables["li2020_mixed_model_tests"]
    inter = w[(w["variable"] == "six_zone_total") & (w["effect"] == "outcome x period interaction")].iloc[0]
    assert inter["p_value"] < 1e-6
    fe = tables["li2020_mixed_model"]
    ns = fe[(fe["variable"] == "six_zone_total") & (fe["term"] == "non_survivor")].iloc[0]
    assert ns["coef"] > 0 and ns["p_value"] < ALPHA and ns["n_patients"] == 93
    lg = tables["li2020_mortality_logistic"].set_index("term")
    assert lg.loc["six_zone_total", "odds_ratio"] > 1 and lg.loc["six_zone_total", "ci_low"] > 1
    assert lg.loc["six_zone_total", "p_value"] < ALPHA
    assert 0.5 < lg.loc["six_zone_total", "auc"] <= 1
    pm = tables["li2020_predicted_mortality"]
    p = pm[pm["period_days"] == "11-15"].set_index("score_band")["predicted_mortality"]
    assert p.is_monotonic_increasing and len(pm) == 25


def test_li2020_kendall(tables):
    k = tables["li2020_kendall"].set_index("lab")
    assert k.loc["lymphocyte_count", "coefficient"] < 0 and k.loc["lymphocyte_count", "p_value"] < 1e-3
    assert k.loc["ldh", "coefficient"] > 0 and k.loc["ldh", "p_value"] < 1e-3
    assert k.loc["potassium", "p_value"] > ALPHA  # no planted effect


# ---- liao2021 -------------------------------------------------------------------------------------

def test_liao2021_groups_and_unclassified(tables):
    g = tables["liao2021_lesion_groups"]
    assert len(g) == 93  # nobody dropped silently
    un = g[g["group"] == "unclassified"]
    assert len(un) >= 25 and (un["reason"] != "").all()
    assert (g.loc[g["group"] == "persistent", "week8_score"] >= 5).all()
    assert (g.loc[g["group"] == "recovery", "week8_score"] < 5).all()
    assert tables["liao2021_group_counts"]["n"].sum() == 93


def test_liao2021_il6_predicts_persistent_lesions(tables):
    lg = tables["liao2021_logistic"].set_index("term")
    assert lg.loc["il6", "odds_ratio"] > 1 and lg.loc["il6", "p_value"] < ALPHA
    assert lg.loc["age", "p_value"] > ALPHA  # age has no planted effect
    roc = tables["liao2021_roc"].iloc[0]
    assert roc["auc"] > 0.7 and roc["ci_low"] > 0.5 and roc["ci_low"] <= roc["auc"] <= roc["ci_high"]
    w = tables["liao2021_weekly_tests"]
    w8 = w[(w["grouping"] == "group") & (w["variable"] == "six_zone_total") & (w["week"] == 8)].iloc[0]
    assert w8["p_value"] < ALPHA and w8["effect_size"] > 0  # persistent > recovery


def test_liao2021_il6_peak_precedes_ct_peak(tables):
    t = tables["liao2021_peak_timing"].set_index("lab").loc["il6"]
    assert t["n_lab_first"] > t["n_score_first"] and t["sign_test_p"] < ALPHA


def test_liao2021_trajectories_have_median_iqr_per_week(tables):
    tr = tables["liao2021_trajectories"]
    sub = tr[(tr["grouping"] == "group") & (tr["variable"] == "six_zone_total")]
    assert sorted(sub["week"].unique()) == list(range(1, 9))
    assert (sub["q1"] <= sub["median"]).all() and (sub["median"] <= sub["q3"]).all()


# ---- zhang2020 ------------------------------------------------------------------------------------

def test_zhang2020_correlations(tables):
    c = tables["zhang2020_correlations"].set_index("lab")
    assert c.loc["crp", "coefficient"] > 0 and c.loc["crp", "p_value"] < 1e-3
    assert c.loc["il6", "coefficient"] > 0 and c.loc["il6", "p_value"] < ALPHA
    assert c.loc["lymphocyte_count", "coefficient"] < 0 and c.loc["lymphocyte_count", "p_value"] < 1e-3
    assert c.loc["potassium", "p_value"] > ALPHA


def test_zhang2020_subgroups_and_posthoc(tables):
    assert tables["zhang2020_subgroups"]["n"].sum() == 93
    kw = tables["zhang2020_subgroup_labs"].set_index("variable")
    assert kw.loc["crp", "test"] == "Kruskal-Wallis H" and kw.loc["crp", "p_value"] < 1e-3
    assert kw.loc["potassium", "p_value"] > ALPHA
    pw = tables["zhang2020_pairwise"].dropna(subset=["p_value"])
    assert (pw["p_adjusted"] >= pw["p_value"] - 1e-12).all()
    assert np.allclose(pw["p_adjusted"], np.minimum(1, 3 * pw["p_value"]))  # three pairs, Bonferroni
    cat = tables["zhang2020_subgroup_categorical"].set_index("variable")
    assert cat.loc["sex", "p_value"] > ALPHA  # no planted effect


def test_zhang2020_glucocorticoid_and_partial_correlation(tables):
    gc = tables["zhang2020_glucocorticoid_change"].set_index("variable")
    row = gc.loc["change in zhang900_total (after - before)"]
    assert row["p_value"] < ALPHA and row["effect_size"] < 0  # glucocorticoid group: larger decrease
    assert gc.loc["change in potassium (after - before)", "p_value"] > ALPHA
    pc = tables["zhang2020_partial_correlation"].set_index("y")
    assert pc.loc["change in crp", "coefficient"] > 0 and pc.loc["change in crp", "p_value"] < 1e-3
    assert pc.loc["change in potassium", "p_value"] > ALPHA
    ba = tables["zhang2020_before_after"]
    assert set(ba["test"]) == {"Wilcoxon signed-rank (two-sided)", "paired t-test (two-sided)"}


def test_zhang2020_lungs_and_levels(tables):
    lv = tables["zhang2020_levels"].iloc[0]
    assert lv["test"] == "Kruskal-Wallis H" and lv["p_value"] < ALPHA  # planted: more lesion towards the base
    side = tables["zhang2020_lung_side"]
    assert {"Student t-test (two-sided)", "Wilcoxon signed-rank (two-sided)"} <= set(side["test"])


def test_zhang2020_a_missing_unit_leaves_its_lung_and_level_out_not_zero(sim, tmp_path):
    """A zhang900 unit the scan could not see (empty unit_score) makes that scan's lung and level totals
    missing; it used to count as 0 in the right/left and per-level comparisons."""
    scores = tmp_path / "scores"
    scores.mkdir()
    scans = pd.read_csv(sim["scores"] / "scans.csv", dtype=str, keep_default_na=False)
    scans.to_csv(scores / "scans.csv", index=False)
    zones = pd.read_csv(sim["scores"] / "zones.csv", dtype=str, keep_default_na=False)
    base = run_stats(sim["scores"], sim["clinical"], study="zhang2020")["zhang2020_lung_side"]
    n_right = int(base.iloc[0]["n_right"])
    first = scans.sort_values(["patient_id", "study_date"]).groupby("patient_id").head(1)["scan_id"]
    hit = zones.index[zones["scan_id"].isin(first) & (zones["system"] == "zhang900") & (zones["lung"] == "right")
                      & (zones["unit"] == "L1")][0]
    zones.loc[hit, ["unit_score", "extent_score", "density_grade", "involvement_pct"]] = ""
    zones.to_csv(scores / "zones.csv", index=False)
    side = run_stats(scores, sim["clinical"], study="zhang2020")["zhang2020_lung_side"]
    assert int(side.iloc[0]["n_right"]) == n_right - 1 and int(side.iloc[0]["n_left"]) == n_right
