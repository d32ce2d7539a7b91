"""Numbers checked against independent implementations (a numerical audit, 2026-12-06): Spearman's p exact for
small n (R's cor.test), li2020's Kendall with a patient-level p, change scores without float noise."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from scoring.stats import compare


def test_spearman_p_is_exact_for_a_few_pairs():
    from scoring.validation import metrics

    # t approximation: p = 0 for three pairs in perfect agreement, 0.037 for rho 0.9 on five pairs
    assert metrics.spearman([1, 2, 3], [1, 2, 3]) == (pytest.approx(1.0), pytest.approx(1 / 3))
    row = compare.correlate([1, 2, 3, 4, 5], [1, 2, 3, 5, 4])
    assert row["coefficient"] == pytest.approx(0.9) and row["p_value"] == pytest.approx(1 / 12) and not row["note"]
    # against scipy's own exact permutation test (no ties: the two-sided definitions agree)
    rng = np.random.default_rng(3)
    for n in (4, 6, 8):
        x = rng.normal(size=n)
        y = x + rng.normal(size=n)
        ref = stats.permutation_test((x,), lambda a, y=y: stats.spearmanr(a, y).statistic,
                                     permutation_type="pairings", n_resamples=np.inf).pvalue
        assert compare.spearman_test(x, y)[1] == pytest.approx(ref)


def test_spearman_p_beyond_the_exact_range_is_the_t_approximation_and_says_so():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    row = compare.correlate(x, y)
    assert row["p_value"] == pytest.approx(stats.spearmanr(x, y).pvalue)
    assert "t approximation" in row["note"]


def _serial_cohort(seed: int, patients: int = 20, scans: int = 8):
    """Score and lab unrelated between patients, each with its own level (serial scans are alike)."""
    from scoring.stats.cohort import Cohort

    rng = np.random.default_rng(seed)
    pid = np.repeat([f"p{i}" for i in range(patients)], scans)
    score = np.repeat(rng.normal(10, 3, patients), scans) + rng.normal(0, 0.5, patients * scans)
    lab = np.repeat(rng.normal(5, 2, patients), scans) + rng.normal(0, 0.3, patients * scans)
    scans_df = pd.DataFrame({"patient_id": pid, "six_zone_total": score, "crp": lab})
    cohort = Cohort.__new__(Cohort)
    cohort.scans, cohort.window_days = scans_df, 1
    return cohort


def test_li2020_kendall_gives_a_patient_level_p_and_says_the_pooled_one_is_too_small():
    from scoring.stats.li2020 import kendall

    pooled, per_patient = [], []
    for seed in range(60):
        row = kendall(_serial_cohort(seed), "six_zone_total", ["crp"], 3).iloc[0]
        pooled.append(row["p_value"] < 0.05)
        per_patient.append(row["p_patient_means"] < 0.05)
    assert np.mean(pooled) > 0.25  # the pooled p treats serial scans as independent
    assert np.mean(per_patient) <= 0.12  # about the nominal 5 %
    assert "treats a patient's scans as independent" in row["note"]
    means = _serial_cohort(59).scans.groupby("patient_id")[["six_zone_total", "crp"]].mean()
    assert row["tau_patient_means"] == pytest.approx(stats.kendalltau(means["six_zone_total"], means["crp"]).statistic)


def test_change_scores_carry_no_float_noise():
    from scoring.stats.zhang2020 import _round_sig

    assert _round_sig(0.3 - 1.291) == _round_sig(1.2 - 2.191) == -0.991
    assert math.isnan(_round_sig(float("nan"))) and _round_sig(None) is None and _round_sig(0.0) == 0.0


def test_icc2_1_ci_of_raters_that_differ_by_a_constant_is_r_s():
    """It was left empty ("CI undefined"); R's irr::icc(model = "twoway", type = "agreement") gives [0.0038, 0.9831],
    the limit of the formula as the residual variation goes to 0."""
    from scoring.validation.metrics import icc_matrix, icc_notes

    m = np.array([[1, 2], [2, 3], [3, 4], [4, 5.0]])
    out = icc_matrix(m)
    assert out["icc2_1"] == pytest.approx(10 / 13)
    assert (out["icc2_1_ci_low"], out["icc2_1_ci_high"]) == (pytest.approx(0.0038425, abs=1e-6),
                                                             pytest.approx(0.9830923, abs=1e-6))
    nudged = icc_matrix(m + np.array([[0, 0], [0, 0], [0, 0], [0, 1e-6]]))  # the limit, approached
    assert nudged["icc2_1_ci_low"] == pytest.approx(out["icc2_1_ci_low"], abs=1e-5)
    assert icc_notes(m, out) == []


def test_fisher_2x2_reports_r_s_conditional_odds_ratio():
    """R's ?fisher.test TeaTasting table: p 0.4857, odds ratio 6.408 (the conditional MLE; scipy's ad/bc is 9)."""
    row = compare.categorical(pd.DataFrame([[3, 1], [1, 3]]))
    assert row["test"] == "Fisher exact"
    assert row["p_value"] == pytest.approx(0.4857, abs=1e-4)
    assert row["statistic"] == pytest.approx(6.408, abs=1e-3)
    assert "conditional maximum-likelihood odds ratio" in row["note"]
