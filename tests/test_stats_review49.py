"""Statistics audit 49: paired Wilcoxon on the changes as written, one test for one two-subgroup comparison,
li2020's lab models on the lab samples themselves, the mixed model's test named, liao2021's small severity level."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scoring.stats import codebook, compare, li2020, liao2021
from scoring.stats.cohort import load_cohort
from scoring.stats.simulate import write_cohort
from scoring.stats.zhang2020 import subgroup_labs

# ---- S1: the Wilcoxon signed-rank test ranks the changes as written ----------------------------------------------

BEFORE = np.array([0.2, 0.1, 0.6, 0.3, 1.2, 0.9, 2.3, 0.5])
AFTER = np.array([0.3, 0.2, 0.7, 0.4, 1.0, 1.1, 2.0, 0.8])


def test_wilcoxon_ranks_the_changes_as_written_not_their_float_noise():
    """after - before in floats gives 0.09999999999999998, 0.1, 0.10000000000000003 for four changes of 0.1 as
    written: ranked apart, they gave W 12, p 0.4375; tied, as the decimal changes are, W 13, p 0.5703."""
    exact = np.array([float(Decimal(str(a)) - Decimal(str(b))) for a, b in zip(AFTER, BEFORE, strict=True)])
    wil, tt = compare.paired(BEFORE, AFTER)
    ref = stats.wilcoxon(exact)
    assert wil["test"].startswith("Wilcoxon")
    assert wil["statistic"] == ref.statistic == 13.0
    assert wil["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert wil["p_value"] == pytest.approx(73 / 128)
    # the paired t-test is on the values as they are, as before
    assert tt["p_value"] == pytest.approx(stats.ttest_rel(AFTER, BEFORE).pvalue, rel=1e-12)
    assert tt["statistic"] == pytest.approx(stats.ttest_rel(AFTER, BEFORE).statistic, rel=1e-12)
    assert wil["mean_change"] == pytest.approx(np.mean(exact))


def test_same_change_as_written_in_every_pair_is_not_a_t_test_of_float_noise():
    """Every pair changed by 0.1 as written (0.3 - 0.2, 0.2 - 0.1, ...): the t-test had t ~ 1e15, p ~ 0, from the
    float noise of the differences."""
    before, after = [0.2, 0.1, 0.6, 0.3, 0.9], [0.3, 0.2, 0.7, 0.4, 1.0]
    wil, tt = compare.paired(before, after)
    assert np.isnan(tt["p_value"]) and tt["note"].startswith("not tested: every pair changed by the same amount")
    assert wil["p_value"] == pytest.approx(stats.wilcoxon([0.1] * 5).pvalue)


# ---- S2: one test for one comparison of two subgroups ------------------------------------------------------------


def _adm() -> pd.DataFrame:
    rng = np.random.default_rng(49)
    sub = ["0-100"] * 7 + ["101-200"] * 1 + [">200"] * 4
    crp = np.r_[rng.normal(10, 4, 7), [30.0], rng.normal(16, 4, 4)]
    return pd.DataFrame({"patient_id": [f"p{i}" for i in range(len(sub))], "subgroup": sub, "crp": crp,
                         "ldh": crp * 7 + rng.normal(0, 15, len(sub))})


def test_two_subgroups_left_the_summary_runs_the_pairwise_test():
    """Subgroups of 7, 1 and 4: the summary ran Kruskal-Wallis (asymptotic) across 0-100 and >200 while the pairwise
    table ran Mann-Whitney U (exact) on the same two: two p values for one comparison."""
    adm = _adm()
    omni, pair = subgroup_labs(adm, ["crp", "ldh"], normal={"ldh"}, min_n=3)
    omni, pair = omni.set_index("variable"), pair.set_index("variable")
    lo, hi = (adm.loc[adm.subgroup == g, "crp"] for g in ("0-100", ">200"))
    crp = omni.loc["crp"]
    assert crp["test"] == "Mann-Whitney U (two-sided)" == pair.loc["crp", "test"]
    assert crp["p_value"] == pytest.approx(pair.loc["crp", "p_value"], rel=1e-12)
    assert crp["p_value"] == pytest.approx(stats.mannwhitneyu(lo, hi, alternative="two-sided").pvalue, rel=1e-12)
    assert crp["note"] == "across 0-100, >200 only: fewer than 3 values in 101-200"
    assert crp["n_101-200"] == 1 and crp["median_iqr_101-200"]  # the small subgroup still described
    assert crp["effect_size_name"].startswith("rank-biserial r")
    # a lab declared normal: Student's t, which is LSD's pooled-SD t on two subgroups
    lo, hi = (adm.loc[adm.subgroup == g, "ldh"] for g in ("0-100", ">200"))
    ldh = omni.loc["ldh"]
    assert ldh["test"] == "Student t-test (two-sided)"
    assert pair.loc["ldh", "test"].startswith("LSD")
    assert ldh["p_value"] == pytest.approx(pair.loc["ldh", "p_value"], rel=1e-9)
    assert ldh["p_value"] == pytest.approx(stats.ttest_ind(lo, hi).pvalue, rel=1e-12)
    assert pair.loc["crp", "omnibus_p"] == pytest.approx(crp["p_value"])


def test_three_subgroups_large_enough_keep_kruskal_wallis():
    adm = _adm()
    adm.loc[adm.subgroup == "101-200", "subgroup"] = "0-100"
    adm.loc[[0, 1, 2], "subgroup"] = "101-200"
    omni, _ = subgroup_labs(adm, ["crp"], normal=set(), min_n=3)
    assert omni.iloc[0]["test"] == "Kruskal-Wallis H" and omni.iloc[0]["note"] == ""


# ---- S3, S4: li2020's lab models on the lab samples, the test of each term named ---------------------------------


@pytest.fixture(scope="module")
def extra_samples(tmp_path_factory) -> dict[str, object]:
    """A small simulated cohort plus an LDH sample 3 days after each LDH sample (no scan is near most of them), and a
    second scan on the day of a patient's first scan: one sample matched to two scans."""
    paths = write_cohort(tmp_path_factory.mktemp("c49"), seed=3, n_survivors=12, n_nonsurvivors=8)
    labs = pd.read_csv(paths["labs"])
    ldh = labs[labs.analyte == "ldh"].copy()
    later = ldh.assign(date=(pd.to_datetime(ldh["date"]) + pd.Timedelta(days=3)).dt.strftime("%Y-%m-%d"),
                       value=ldh["value"] * 1.1)
    scans = pd.read_csv(paths["scans"], dtype={"study_date": str, "series_uid": str})
    clin = pd.read_csv(paths["clinical"])
    first = scans[scans.patient_id == clin.loc[0, "scores_patient_id"]].iloc[[0]].copy()
    twin = first.assign(scan_id=first["scan_id"] + "_x", series_uid=first["series_uid"] + ".49")
    scans = pd.concat([scans, twin], ignore_index=True)
    labs = pd.concat([labs, later], ignore_index=True).drop_duplicates(["patient_id", "date", "analyte"])
    scans.to_csv(paths["scans"], index=False)
    labs.to_csv(paths["labs"], index=False)
    cohort = load_cohort(paths["scores"], paths["clinical"], paths["labs"], window_days=1)
    fe, wald = li2020.mixed_models(cohort, "six_zone_total", ["ldh", "crp"], 3)
    return {"paths": paths, "labs": labs, "clinical": clin, "fe": fe, "wald": wald, "cohort": cohort}


def _lab_samples(labs: pd.DataFrame, clin: pd.DataFrame, analyte: str) -> pd.DataFrame:
    """Independently: the analyte's samples (patient x day, same-day values averaged) of patients with an outcome,
    on or after onset, with their period since onset."""
    d = labs[labs.analyte == analyte].assign(date=lambda x: pd.to_datetime(x["date"]))
    d = d.groupby(["patient_id", "date"], as_index=False)["value"].mean()
    c = clin[["patient_id", "onset_date", "outcome"]].assign(onset_date=lambda x: pd.to_datetime(x["onset_date"]))
    d = d.merge(c[c.outcome.notna()], on="patient_id")
    days = (d["date"] - d["onset_date"]).dt.days
    d = d[days >= 0].assign(days=days[days >= 0])
    d["period"] = pd.cut(d["days"], [-1, 5, 10, 15, 20, np.inf], labels=["0-5", "6-10", "11-15", "16-20", ">20"])
    return d


def test_lab_model_uses_each_lab_sample_once(extra_samples):
    labs, clin, fe = extra_samples["labs"], extra_samples["clinical"], extra_samples["fe"]
    for lab in ("ldh", "crp"):
        ref = _lab_samples(labs, clin, lab)
        rows = fe[fe.variable == lab]
        assert (rows["n_obs"] == len(ref)).all(), (lab, rows["n_obs"].iloc[0], len(ref))
        assert (rows["n_patients"] == ref["patient_id"].nunique()).all()
        assert len(rows) > 1 and not rows["note"].iloc[0].startswith("not fitted")
        assert "each lab sample once" in rows["note"].iloc[0]
    # the estimates are those of the model fitted on the samples themselves
    import statsmodels.formula.api as smf

    ref = _lab_samples(labs, clin, "ldh").assign(non_survivor=lambda x: (x["outcome"] == "non-survivor") * 1.0)
    ref["period"] = ref["period"].astype(str)
    res = smf.mixedlm("value ~ non_survivor * C(period, Treatment('0-5'))", ref, groups=ref["patient_id"]).fit(reml=True)
    got = fe[(fe.variable == "ldh") & (fe.term == "non_survivor")].iloc[0]
    assert got["coef"] == pytest.approx(res.fe_params["non_survivor"], rel=1e-6)
    assert got["p_value"] == pytest.approx(res.pvalues["non_survivor"], rel=1e-5)


def test_score_model_still_uses_every_scan(extra_samples):
    cohort, fe = extra_samples["cohort"], extra_samples["fe"]
    s = cohort.scans.dropna(subset=["period", "six_zone_total"])
    s = s[s.patient_id.isin(cohort.clinical.loc[cohort.clinical.outcome.notna(), "patient_id"])]
    rows = fe[fe.variable == "six_zone_total"]
    assert (rows["n_obs"] == len(s)).all()
    assert "each lab sample once" not in rows["note"].iloc[0]


def test_lab_models_keep_to_the_patients_of_the_score_model(tmp_path):
    # every scan of 4 patients gone (failed, or excluded at QC review): their labs entered the lab models through the
    # clinical table (ldh 16 -> 20 patients, a review), though the score's model and 0.18.0 left them out
    paths = write_cohort(tmp_path, seed=3, n_survivors=12, n_nonsurvivors=8)
    scans = pd.read_csv(paths["scans"], dtype={"study_date": str, "series_uid": str})
    gone = sorted(scans["patient_id"].unique())[:4]
    scans[~scans.patient_id.isin(gone)].to_csv(paths["scans"], index=False)
    cohort = load_cohort(paths["scores"], paths["clinical"], paths["labs"], window_days=1)
    fe, _ = li2020.mixed_models(cohort, "six_zone_total", ["ldh", "crp"], 3)
    n_score = fe.loc[fe.variable == "six_zone_total", "n_patients"].iloc[0]
    for lab in ("ldh", "crp"):
        assert fe.loc[fe.variable == lab, "n_patients"].iloc[0] == n_score == 16


def test_mixed_model_names_its_test(extra_samples):
    fe, wald = extra_samples["fe"], extra_samples["wald"]
    fitted = fe[fe["term"] != ""]
    assert set(fitted["test"]) == {"Wald z (normal approximation), REML"}
    z = fitted["coef"] / fitted["se"]
    assert np.allclose(fitted["p_value"], 2 * stats.norm.sf(np.abs(z)), rtol=1e-9)
    assert set(wald["test"].str.startswith("Wald chi-square")) == {True}
    tables = {"li2020_mixed_model": codebook.conform("li2020_mixed_model", fe)}
    cb = codebook.codebook(tables)
    assert "test" in list(tables["li2020_mixed_model"].columns)
    assert "not described" not in set(cb["description"])
    assert "Wald z" in cb.loc[cb.column == "test", "description"].iloc[0]
    assert "samples" in cb.loc[cb.column == "n_obs", "description"].iloc[0]


# ---- S5: liao2021's weekly severity test leaves out a level with too few values -----------------------------------


def test_severity_week_with_a_small_level_tests_the_other_two():
    rng = np.random.default_rng(5)
    sev = ["mild"] * 6 + ["moderate"] * 5 + ["severe"] * 2
    pids = [f"p{i}" for i in range(len(sev))]
    weekly = pd.DataFrame({"patient_id": pids, "week": 1, "score": np.r_[rng.normal(3, 1, 6), rng.normal(8, 2, 5),
                                                                          [15.0, 16.0]]})
    # week 2: all three levels with enough values (Kruskal-Wallis, as before)
    week2 = pd.DataFrame({"patient_id": pids + ["q1"], "week": 2, "score": rng.normal(5, 2, len(pids) + 1)})
    groups = pd.DataFrame({"patient_id": pids + ["q1"], "severity": sev + ["severe"]})
    _, tests = liao2021.trajectories(pd.concat([weekly, week2]), groups, ["score"], "severity", 3)
    w1 = tests[tests.week == 1].iloc[0]
    mild, mod = weekly.score[:6], weekly.score[6:11]
    assert w1["test"] == "Mann-Whitney U (two-sided)"
    assert w1["p_value"] == pytest.approx(stats.mannwhitneyu(mild, mod, alternative="two-sided").pvalue, rel=1e-12)
    assert w1["note"] == "across mild, moderate only: fewer than 3 values in severe"
    assert w1["n_severe"] == 2 and w1["median_iqr_severe"]
    w2 = tests[tests.week == 2].iloc[0]
    assert w2["test"] == "Kruskal-Wallis H" and w2["note"] == "" and np.isfinite(w2["p_value"])
    w3 = tests[tests.week == 3].iloc[0]  # no values at all: not tested, as before
    assert np.isnan(w3["p_value"]) and w3["note"].startswith("not tested")
