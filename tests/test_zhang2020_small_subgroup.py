"""zhang2020: a subgroup with too few patients no longer leaves every lab without its omnibus test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scoring.stats.zhang2020 import subgroup_labs


def _adm(n_high: int) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    sub = ["0-100"] * 12 + ["101-200"] * 10 + [">200"] * n_high
    crp = np.r_[rng.normal(10, 3, 12), rng.normal(25, 5, 10), rng.normal(40, 5, n_high)]
    return pd.DataFrame({"patient_id": [f"p{i}" for i in range(len(sub))], "subgroup": sub, "crp": crp,
                         "ldh": crp * 5 + rng.normal(0, 10, len(sub))})


def test_omnibus_runs_over_the_subgroups_with_enough_values():
    adm = _adm(2)
    omni, pair = subgroup_labs(adm, ["crp", "ldh"], normal={"ldh"}, min_n=3)
    row = omni.set_index("variable").loc["crp"]
    lo, mid = adm.loc[adm.subgroup == "0-100", "crp"], adm.loc[adm.subgroup == "101-200", "crp"]
    assert row["test"] == "Mann-Whitney U (two-sided)"  # two subgroups left: the pairwise test, one p for both tables
    assert row["p_value"] == pytest.approx(stats.mannwhitneyu(lo, mid, alternative="two-sided").pvalue)
    assert row["n_>200"] == 2 and row["median_iqr_>200"]  # the small group is still described
    assert row["note"] == "across 0-100, 101-200 only: fewer than 3 values in >200"
    anova = omni.set_index("variable").loc["ldh"]
    ldh = [adm.loc[adm.subgroup == g, "ldh"] for g in ("0-100", "101-200")]
    assert (anova["test"] == "Student t-test (two-sided)"
            and anova["p_value"] == pytest.approx(stats.ttest_ind(*ldh).pvalue))
    # the pairwise tests after it carry its p value
    crp_pairs = pair[pair.variable == "crp"]
    assert len(crp_pairs) == 1 and crp_pairs["omnibus_p"].iloc[0] == pytest.approx(row["p_value"])


def test_all_subgroups_large_enough_and_only_one_left_are_as_before():
    omni, _ = subgroup_labs(_adm(6), ["crp"], normal=set(), min_n=3)
    row = omni.iloc[0]
    assert row["note"] == "" and np.isfinite(row["p_value"])
    adm = _adm(2)
    adm = adm[adm.subgroup != "101-200"]
    omni, pair = subgroup_labs(pd.concat([adm, adm.iloc[:0]]), ["crp"], normal=set(), min_n=20)
    row = omni.iloc[0]
    assert np.isnan(row["p_value"]) and row["note"].startswith("not tested: fewer than 20 values in")


def test_the_bonferroni_factor_is_the_number_of_pairs_tested():
    """With '>200' too small one pair is tested: its adjusted p is its p, and the correction column says x1 (it said
    "Bonferroni" alone, read as x3; a numerical audit)."""
    _, pair = subgroup_labs(_adm(2), ["crp"], normal=set(), min_n=3)
    row = pair.iloc[0]
    assert row["correction"] == "Bonferroni (x1: 1 pair)" and row["p_adjusted"] == pytest.approx(row["p_value"])
    _, pair = subgroup_labs(_adm(6), ["crp"], normal=set(), min_n=3)
    assert set(pair["correction"]) == {"Bonferroni (x3: 3 pairs)"}
    assert np.allclose(pair["p_adjusted"], np.minimum(1, 3 * pair["p_value"]))
