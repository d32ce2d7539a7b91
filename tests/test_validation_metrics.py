"""Agreement statistics against answers known by hand or from the literature."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.validation import metrics

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges.
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])


def test_perfect_agreement_gives_kappa_1_and_icc_1():
    x = [0, 1, 2, 3, 4, 2, 1, 0]
    row = metrics.agreement(x, x, ordinal=True, labels=range(5))
    assert row["kappa_qw"] == pytest.approx(1.0)
    assert row["icc2_1"] == pytest.approx(1.0) and row["icc3_1"] == pytest.approx(1.0)
    assert (row["icc2_1_ci_low"], row["icc2_1_ci_high"]) == (1.0, 1.0)
    assert row["mae"] == 0 and row["ba_bias"] == 0 and row["exact_agreement"] == 1
    assert row["spearman_rho"] == pytest.approx(1.0)
    assert row["note"] == ""


def test_constant_offset_is_bland_altman_bias():
    a = np.array([3.0, 7.0, 12.0, 20.0, 41.0, 55.0])
    row = metrics.agreement(a + 2.5, a, ordinal=False)
    assert row["ba_bias"] == pytest.approx(2.5)
    assert row["ba_sd"] == pytest.approx(0.0)
    assert row["ba_loa_low"] == pytest.approx(2.5) and row["ba_loa_high"] == pytest.approx(2.5)
    assert row["mae"] == pytest.approx(2.5)
    # consistency is perfect, absolute agreement is not
    assert row["icc3_1"] == pytest.approx(1.0)
    assert row["icc2_1"] < 1.0
    assert row["spearman_rho"] == pytest.approx(1.0)


def test_bland_altman_limits_by_hand():
    # differences 1, -1, 1, -1: bias 0, SD = sqrt(4/3)
    ba = metrics.bland_altman([2, 1, 4, 3], [1, 2, 3, 4])
    sd = np.sqrt(4 / 3)
    assert ba["ba_bias"] == pytest.approx(0.0)
    assert ba["ba_sd"] == pytest.approx(sd)
    assert ba["ba_loa_low"] == pytest.approx(-1.96 * sd) and ba["ba_loa_high"] == pytest.approx(1.96 * sd)


def test_shrout_fleiss_1979_textbook_values():
    r = metrics.icc_matrix(SHROUT_FLEISS)
    assert r["icc2_1"] == pytest.approx(0.29, abs=0.005)
    assert r["icc3_1"] == pytest.approx(0.71, abs=0.005)
    assert r["icc2_1_ci_low"] < 0.29 < r["icc2_1_ci_high"]
    assert r["icc3_1_ci_low"] < 0.71 < r["icc3_1_ci_high"]


def test_quadratic_kappa_by_hand():
    # Two raters, categories 0-2, 4 targets: a = 0,1,2,2 ; b = 0,2,2,1.
    # Quadratic weights w_ij = (i-j)^2 / (k-1)^2 with k = 3.
    # observed: (0,0) w0, (1,2) w=1/4, (2,2) w0, (2,1) w=1/4 -> mean observed weight = 0.5/4 = 0.125
    # marginals a: [1,1,2]/4, b: [1,1,2]/4; expected mean weight = sum_ij pa_i pb_j w_ij
    pa = pb = np.array([1, 1, 2]) / 4
    w = np.array([[(i - j) ** 2 / 4 for j in range(3)] for i in range(3)])
    expected = float(pa @ w @ pb)
    by_hand = 1 - 0.125 / expected
    assert metrics.weighted_kappa([0, 1, 2, 2], [0, 2, 2, 1], labels=[0, 1, 2]) == pytest.approx(by_hand)
    assert expected == pytest.approx(11 / 32) and by_hand == pytest.approx(7 / 11)


def test_kappa_uses_the_full_scale():
    # unused categories leave the quadratic weights unchanged for sklearn, but the labels must be accepted
    k = metrics.weighted_kappa([0, 1, 2, 3], [0, 1, 2, 4], labels=range(5))
    assert 0.9 < k < 1.0


def test_median_halves_round_up_to_a_category():
    assert list(metrics.to_category(np.array([0.5, 1.5, 2.0, 2.49]))) == [1, 2, 2, 2]


def test_too_few_targets_are_explained():
    row = metrics.agreement([1, 2], [1, 3], ordinal=True, labels=range(5))
    assert np.isnan(row["kappa_qw"]) and np.isnan(row["icc2_1"])
    assert "fewer than 3" in row["note"]
    assert row["mae"] == pytest.approx(0.5)


def test_constant_ratings_leave_icc_undefined():
    row = metrics.agreement([2, 2, 2, 2], [2, 2, 2, 2], ordinal=True, labels=range(5))
    assert np.isnan(row["icc2_1"]) and "ICC undefined" in row["note"]
    assert row["exact_agreement"] == 1.0


def test_confusion_matrix_rows_are_first_rater():
    cm = metrics.confusion([0, 1, 1, 4], [0, 1, 2, 4], labels=range(5))
    assert cm.shape == (5, 5)
    assert cm.loc[1, 2] == 1 and cm.loc[1, 1] == 1 and cm.loc[4, 4] == 1 and cm.to_numpy().sum() == 4


# --- published worked examples and the numerical audit's findings (2026-12-07) ------------------------------------

def test_shrout_fleiss_1979_confidence_intervals_exactly():
    """McGraw & Wong (1996) intervals on Shrout & Fleiss' 6 x 4 table (pingouin gives 0.02-0.76 and 0.34-0.95)."""
    r = metrics.icc_matrix(SHROUT_FLEISS)
    assert r["icc2_1"] == pytest.approx(0.2898, abs=1e-4)
    assert (r["icc2_1_ci_low"], r["icc2_1_ci_high"]) == pytest.approx((0.0188, 0.7611), abs=1e-4)
    assert r["icc3_1"] == pytest.approx(0.7148, abs=1e-4)
    assert (r["icc3_1_ci_low"], r["icc3_1_ci_high"]) == pytest.approx((0.3425, 0.9459), abs=1e-4)


def test_bland_altman_1986_peak_flow_data():
    """Wright vs mini Wright peak flow meters (Bland & Altman, Lancet 1986): mean difference -2.1, SD 38.8."""
    wright = [494, 395, 516, 434, 476, 557, 413, 442, 650, 433, 417, 656, 267, 478, 178, 423, 427]
    mini = [512, 430, 520, 428, 500, 600, 364, 380, 658, 445, 432, 626, 260, 477, 259, 350, 451]
    ba = metrics.bland_altman(wright, mini)
    assert ba["ba_bias"] == pytest.approx(-2.118, abs=1e-3) and ba["ba_sd"] == pytest.approx(38.77, abs=1e-2)
    assert ba["ba_loa_low"] == pytest.approx(-2.118 - 1.96 * 38.77, abs=0.05)


def test_weighted_kappa_agrees_with_statsmodels():
    from statsmodels.stats.inter_rater import cohens_kappa

    rng = np.random.default_rng(3)
    for _ in range(40):
        k = int(rng.integers(2, 7))
        a = rng.integers(0, k, 25)
        b = np.clip(a + rng.integers(-1, 2, 25), 0, k - 1)
        table = np.zeros((k, k))
        np.add.at(table, (a, b), 1)
        want = cohens_kappa(table, wt="quadratic").kappa
        assert metrics.weighted_kappa(a, b, range(k)) == pytest.approx(want, abs=1e-12)


def test_weighted_kappa_refuses_a_category_outside_the_scale():
    # sklearn dropped the fifth target (category 5 on a 0-4 scale): kappa 1.0 instead of 0.06
    with pytest.raises(ValueError, match=r"categories \[5\] are not among the labels 0..4"):
        metrics.weighted_kappa([0, 1, 2, 3, 5], [0, 1, 2, 3, 0], range(5))


def test_icc_notes_name_missing_ratings():
    m = np.array([[1, 2], [2, 3.5], [3, np.nan], [4, 4]])
    assert metrics.icc_notes(m, metrics.icc_matrix(m)) == [
        "ICC not computed: missing or non-finite ratings (leave out the targets a rater did not score)"]


def test_a_constant_rater_and_targets_of_one_mean_are_explained():
    row = metrics.agreement([0, 0, 0, 0, 0], [0, 1, 2, 1, 0], ordinal=True, labels=range(5))
    assert row["kappa_qw"] == 0.0 and "kappa 0 by construction: rater_a gives every target the same category" in row[
        "note"]
    # every target's mean rating 3: the CIs collapse onto the estimates, which is no precision
    row = metrics.agreement([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], ordinal=True, labels=range(6))
    assert row["icc3_1_ci_low"] == row["icc3_1_ci_high"] == pytest.approx(-1.0)
    assert "ICC CIs of zero width" in row["note"]
    assert "zero width" not in metrics.agreement([1, 2, 3, 4, 5], [2, 2, 4, 4, 5], ordinal=True,
                                                 labels=range(6))["note"]


def test_two_constant_raters_get_notes_that_fit_the_numbers():
    row = metrics.agreement([0, 0, 0, 0], [1, 1, 1, 1], ordinal=True, labels=range(5))
    assert "kappa 0 by construction: each rater gives every target the same category" in row["note"]
    assert "zero width" not in row["note"] and np.isnan(row["icc2_1_ci_low"])
