"""Agreement between two raters on the same targets (pure functions on arrays).

Quadratic-weighted Cohen's kappa comes from ``sklearn.metrics.cohen_kappa_score`` and Spearman's
rho from ``scipy.stats.spearmanr`` (its p exact up to 9 pairs: ``scoring.stats.compare.spearman_test``). ICC(2,1) and ICC(3,1) (McGraw & Wong 1996 call them ICC(A,1)
and ICC(C,1)) and their 95 % CI are computed here from the two-way ANOVA mean squares with the
Shrout & Fleiss (1979) / McGraw & Wong (1996) formulas, the ones ``pingouin.intraclass_corr`` uses,
but unrounded (pingouin rounds the CI to 2 decimals, which shifts it at high ICC). Bland-Altman bias
and 95 % limits of agreement (bias +- 1.96 SD of the differences, Bland & Altman 1986) and MAE are
computed here too.

Differences are always ``a - b`` (first rater minus second).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

NAN = math.nan


def _arrays(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("a and b must be 1-D and of equal length")
    return x, y


def to_category(x: np.ndarray) -> np.ndarray:
    """Whole-number categories; halves (a median of two readers) round up."""
    return np.floor(np.asarray(x, dtype=float) + 0.5).astype(int)


def weighted_kappa(a: Sequence[float], b: Sequence[float], labels: Sequence[int] | None = None) -> float:
    """Quadratic-weighted Cohen's kappa (sklearn); NaN when undefined (both raters constant and equal).

    ``labels``: the full category range (e.g. 0..4), so weights reflect the scale, not only the
    values seen; without it, every whole number from the lowest to the highest value seen (the
    quadratic weights are by position in ``labels``: a category left out would shrink the distances).
    """
    from sklearn.metrics import cohen_kappa_score

    x, y = _arrays(a, b)
    if len(x) == 0:
        return NAN
    xi, yi = to_category(x), to_category(y)
    lab = list(labels) if labels is not None else list(range(min(xi.min(), yi.min()), max(xi.max(), yi.max()) + 1))
    outside = sorted((set(xi.tolist()) | set(yi.tolist())) - set(lab))
    if outside:  # sklearn drops such targets: a kappa over fewer targets, or NaN (a numerical audit)
        raise ValueError(f"categories {outside} are not among the labels {lab[0]}..{lab[-1]}: every rating must be one "
                         "of the scale's categories")
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # undefined kappa (no variation) is reported as NaN, this call only
        k = float(cohen_kappa_score(xi, yi, labels=lab, weights="quadratic"))
    return k if math.isfinite(k) else NAN


def icc(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """ICC(2,1) and ICC(3,1) with 95 % CI for two raters; see :func:`icc_matrix`."""
    x, y = _arrays(a, b)
    return icc_matrix(np.column_stack([x, y]))


ICC_KEYS = ("icc2_1", "icc2_1_ci_low", "icc2_1_ci_high", "icc3_1", "icc3_1_ci_low", "icc3_1_ci_high")


def mean_squares(m: np.ndarray) -> tuple[float, float, float]:
    """Two-way ANOVA (targets x raters, one rating per cell): MS targets, MS raters, MS residual.

    The residual sum of squares is summed from the residuals themselves, so it is never negative;
    a residual mean square that is rounding noise next to the others is set to exactly 0.
    """
    n, k = m.shape
    grand = m.mean()
    rows, cols = m.mean(axis=1), m.mean(axis=0)
    msr = k * float(((rows - grand) ** 2).sum()) / (n - 1)
    msc = n * float(((cols - grand) ** 2).sum()) / (k - 1)
    resid = m - rows[:, None] - cols[None, :] + grand
    mse = float((resid ** 2).sum()) / ((n - 1) * (k - 1))
    if mse <= 1e-12 * max(msr, msc):
        mse = 0.0
    return msr, msc, mse


def icc_matrix(ratings: np.ndarray | Sequence[Sequence[float]], alpha: float = 0.05) -> dict[str, float]:
    """ICC(2,1) (two-way random, absolute agreement) and ICC(3,1) (two-way mixed, consistency), 95 % CI.

    ``ratings``: targets x raters, no missing values. Keys: icc2_1, icc2_1_ci_low, icc2_1_ci_high,
    icc3_1, icc3_1_ci_low, icc3_1_ci_high. Estimates and CIs come unrounded from the ANOVA mean
    squares: Shrout & Fleiss (1979) / McGraw & Wong (1996) ICC(A,1) and ICC(C,1), the formulas of
    ``pingouin.intraclass_corr`` before it rounds the CI. All NaN for fewer than 3 targets or no
    variation at all; an ICC of exactly 1 reports the CI [1, 1]; with no residual variation (ratings that
    differ only by a constant) ICC(2,1)'s CI takes Satterthwaite's degrees of freedom at their limit, k - 1
    (R's ``irr::icc`` gives the same interval); a CI the formulas still leave undefined is NaN.
    :func:`icc_notes` says why a value is missing.
    """
    from scipy.stats import f as fdist

    out = dict.fromkeys(ICC_KEYS, NAN)
    m = np.asarray(ratings, dtype=float)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError("ratings must be a targets x raters matrix with at least 2 raters")
    n, k = m.shape
    if n < 3 or not np.isfinite(m).all() or np.ptp(m) == 0:
        return out
    msr, msc, mse = mean_squares(m)
    df1, df2 = n - 1, (n - 1) * (k - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # ICC(C,1) = ICC(3,1); exact F-based CI
        den3 = msr + (k - 1) * mse
        icc3 = (msr - mse) / den3 if den3 > 0 else NAN
        ci3 = (NAN, NAN)
        if mse > 0:
            f3 = msr / mse
            f3l = f3 / fdist.ppf(1 - alpha / 2, df1, df2)
            f3u = f3 * fdist.ppf(1 - alpha / 2, df2, df1)
            ci3 = ((f3l - 1) / (f3l + k - 1), (f3u - 1) / (f3u + k - 1))
        # ICC(A,1) = ICC(2,1); CI with Satterthwaite's approximate degrees of freedom
        icc2 = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
        ci2 = (NAN, NAN)
        v = NAN
        if mse > 0:
            fj = msc / mse
            a_ = n * (1 + (k - 1) * icc2) - k * icc2
            v = df2 * (k * icc2 * fj + a_) ** 2 / (df1 * k ** 2 * icc2 ** 2 * fj ** 2 + a_ ** 2)
        elif msc > 0 and icc2 > 0:
            # raters that differ by a constant (MSE 0): v's limit as MSE -> 0 is df2 / df1 = k - 1 (R's irr::icc gives
            # the same interval; it was left empty: a numerical audit)
            v = df2 / df1
        if np.isfinite(v) and v > 0:
            f2u = fdist.ppf(1 - alpha / 2, df1, v)
            f2l = fdist.ppf(1 - alpha / 2, v, df1)
            c = k * msc + (k * n - k - n) * mse
            ci2 = (n * (msr - f2u * mse) / (f2u * c + n * msr), n * (f2l * msr - mse) / (c + n * f2l * msr))
    for name, value, (lo, hi) in (("icc2_1", icc2, ci2), ("icc3_1", icc3, ci3)):
        if value >= 1 - 1e-12:  # perfect agreement: the F statistic is infinite
            value, lo, hi = 1.0, 1.0, 1.0
        out[name], out[f"{name}_ci_low"], out[f"{name}_ci_high"] = (float(v) for v in (value, lo, hi))
    return out


def icc_notes(ratings: np.ndarray | Sequence[Sequence[float]], result: dict[str, float]) -> list[str]:
    """Why ICC values or CIs in ``result`` (from :func:`icc_matrix` on ``ratings``) are NaN."""
    m = np.asarray(ratings, dtype=float)
    if m.shape[0] < 3:
        return [f"ICC not computed: {m.shape[0]} target(s), it needs at least 3"]
    if not np.isfinite(m).all():  # np.ptp is NaN then: the reason below was "the same value" (a numerical audit)
        return ["ICC not computed: missing or non-finite ratings (leave out the targets a rater did not score)"]
    if np.ptp(m) == 0:
        return ["ICC undefined: every rating is the same value"]
    notes = []
    for name, label in (("icc2_1", "ICC(2,1)"), ("icc3_1", "ICC(3,1)")):
        if math.isnan(result[name]):
            notes.append(f"{label} undefined: each rater gives every target the same value")
        elif math.isnan(result[f"{name}_ci_low"]):
            notes.append(f"{label} CI undefined: no residual variation (ratings differ only by a constant)")
    collapsed = any(math.isfinite(result[f"{n}_ci_low"]) and result[f"{n}_ci_low"] == result[f"{n}_ci_high"]
                    and result[n] < 1 for n in ("icc2_1", "icc3_1"))
    if collapsed and mean_squares(m)[0] <= 1e-12 * max(1.0, float(np.abs(m).max()) ** 2):
        # every target has the same mean rating: the F pivot is 0 and both CIs collapse onto their estimates
        notes.append("ICC CIs of zero width: every target has the same mean rating (no variation between targets), "
                     "not a precise estimate")
    return notes


def spearman(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Spearman's rho and its p value (exact up to 9 pairs, else the t approximation:
    :func:`scoring.stats.compare.spearman_test`); NaN for fewer than 3 pairs or a constant rater."""
    from scoring.stats.compare import spearman_test

    x, y = _arrays(a, b)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return NAN, NAN
    rho, p, _ = spearman_test(x, y)
    return rho, p


def bland_altman(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Bias (mean of a - b), SD of the differences, and 95 % limits of agreement (bias +- 1.96 SD)."""
    x, y = _arrays(a, b)
    d = x - y
    if len(d) == 0:
        return {"ba_bias": NAN, "ba_sd": NAN, "ba_loa_low": NAN, "ba_loa_high": NAN}
    bias = float(d.mean())
    sd = float(d.std(ddof=1)) if len(d) > 1 else NAN
    return {"ba_bias": bias, "ba_sd": sd, "ba_loa_low": bias - 1.96 * sd, "ba_loa_high": bias + 1.96 * sd}


def mae(a: Sequence[float], b: Sequence[float]) -> float:
    """Mean absolute difference."""
    x, y = _arrays(a, b)
    return float(np.abs(x - y).mean()) if len(x) else NAN


#: Largest difference :func:`exact_agreement` still calls identical: floating-point noise only, far below the
#: 0.001 the pipeline rounds percentages to.
EXACT_TOLERANCE = 1e-9


def exact_agreement(a: Sequence[float], b: Sequence[float]) -> float:
    """Share of targets the two raters give identical values; NaN without targets.

    Identical up to :data:`EXACT_TOLERANCE` (absolute) only. ``np.isclose``'s default relative tolerance (1e-5
    of the second value) never merged two different whole-number scores (at most 0.009 on a 0-900 total), but on
    percent_involvement it called 99.999 and 100 (pipeline percentages have 3 decimals) the same value, and 100
    and 99.999 not (the figure depended on which rater came first). A
    consensus that is a half (the median of two readers) equals no whole-number score here; kappa and the
    confusion matrices round it up (:func:`to_category`), so with an even number of readers
    ``exact_agreement`` with the consensus can be below the confusion matrix's diagonal share.
    """
    x, y = _arrays(a, b)
    return float(np.mean(np.abs(x - y) <= EXACT_TOLERANCE)) if len(x) else NAN


def confusion(a: Sequence[float], b: Sequence[float], labels: Sequence[int]) -> pd.DataFrame:
    """Counts with rows = a's category and columns = b's category, over the full ``labels`` range."""
    from sklearn.metrics import confusion_matrix

    x, y = _arrays(a, b)
    lab = list(labels)
    m = confusion_matrix(to_category(x), to_category(y), labels=lab)
    return pd.DataFrame(m, index=pd.Index(lab, name="a"), columns=pd.Index(lab, name="b"))


def agreement(a: Sequence[float], b: Sequence[float], *, ordinal: bool, labels: Sequence[int] | None = None,
              min_n: int = 3) -> dict[str, float | int | str]:
    """Every agreement statistic for one pair of raters; ``note`` says what was not computed and why."""
    x, y = _arrays(a, b)
    n = len(x)
    row: dict[str, float | int | str] = {"n": n, "mean_a": float(x.mean()) if n else NAN,
                                         "mean_b": float(y.mean()) if n else NAN}
    row["mae"] = mae(x, y)
    row["exact_agreement"] = exact_agreement(x, y)
    row.update(bland_altman(x, y))
    notes = []
    if n == 0:
        notes.append("no target scored by both raters")
    elif n == 1:
        notes.append("Bland-Altman limits not computed: 1 target, they need at least 2")
    if n < min_n:
        row.update(dict.fromkeys(("kappa_qw", *ICC_KEYS, "spearman_rho", "spearman_p"), NAN))
        if n:
            notes.append(f"kappa/ICC/rho not computed: {n} target(s), fewer than {min_n}")
        row["note"] = "; ".join(notes)
        return row
    row["kappa_qw"] = weighted_kappa(x, y, labels) if ordinal else NAN
    if not ordinal:
        notes.append("kappa: not an ordinal score")
    elif math.isnan(float(row["kappa_qw"])):
        notes.append("kappa undefined: both raters give every target the same category")
    else:
        one = [r for r, v in (("rater_a", x), ("rater_b", y)) if np.ptp(to_category(v)) == 0]
        if one:  # observed = expected disagreement by construction (ctscore scoring every zone 0)
            who = "each rater gives" if len(one) == 2 else f"{one[0]} gives"
            notes.append(f"kappa 0 by construction: {who} every target the same category")
    m = np.column_stack([x, y])
    row.update(icc_matrix(m))
    notes += icc_notes(m, row)  # type: ignore[arg-type]
    row["spearman_rho"], row["spearman_p"] = spearman(x, y)
    if n < 3:
        notes.append(f"rho not computed: {n} targets, it needs at least 3")
    else:
        constant = [r for r, v in (("rater_a", x), ("rater_b", y)) if np.ptp(v) == 0]
        if constant:
            who = "both raters give" if len(constant) == 2 else f"{constant[0]} gives"
            notes.append(f"rho undefined: {who} every target the same value")
    row["note"] = "; ".join(notes)
    return row
