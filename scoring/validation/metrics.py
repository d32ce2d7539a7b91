"""Agreement between two raters on the same targets (pure functions on arrays).

The statistics come from maintained libraries: quadratic-weighted Cohen's kappa from
``sklearn.metrics.cohen_kappa_score``, ICC(2,1) and ICC(3,1) with their 95 % CI from
``pingouin.intraclass_corr`` (Shrout & Fleiss 1979; pingouin calls them ICC(A,1) and ICC(C,1)),
Spearman's rho from ``scipy.stats.spearmanr``. Bland-Altman bias and 95 % limits of agreement
(bias +- 1.96 SD of the differences, Bland & Altman 1986) and MAE are computed here.

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
    values seen.
    """
    from sklearn.metrics import cohen_kappa_score

    x, y = _arrays(a, b)
    if len(x) == 0:
        return NAN
    xi, yi = to_category(x), to_category(y)
    lab = list(labels) if labels is not None else sorted(set(xi) | set(yi))
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # undefined kappa (no variation) is reported as NaN, this call only
        k = float(cohen_kappa_score(xi, yi, labels=lab, weights="quadratic"))
    return k if math.isfinite(k) else NAN


def icc(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """ICC(2,1) and ICC(3,1) with 95 % CI for two raters; see :func:`icc_matrix`."""
    x, y = _arrays(a, b)
    return icc_matrix(np.column_stack([x, y]))


def icc_matrix(ratings: np.ndarray | Sequence[Sequence[float]]) -> dict[str, float]:
    """ICC(2,1) (two-way random, absolute agreement) and ICC(3,1) (two-way mixed, consistency), 95 % CI.

    ``ratings``: targets x raters, no missing values. Keys: icc2_1, icc2_1_ci_low, icc2_1_ci_high,
    icc3_1, icc3_1_ci_low, icc3_1_ci_high. All NaN for fewer than 3 targets or no variation at all.
    pingouin rounds the CI to 2 decimals; when agreement is perfect (ICC exactly 1) its CI is
    undefined and reported as [1, 1].
    """
    import pingouin as pg

    keys = ("icc2_1", "icc2_1_ci_low", "icc2_1_ci_high", "icc3_1", "icc3_1_ci_low", "icc3_1_ci_high")
    out = dict.fromkeys(keys, NAN)
    m = np.asarray(ratings, dtype=float)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError("ratings must be a targets x raters matrix with at least 2 raters")
    n, k = m.shape
    if n < 3 or np.ptp(m) == 0 or not np.isfinite(m).all():
        return out
    data = pd.DataFrame({"target": np.repeat(np.arange(n), k), "rater": np.tile(np.arange(k), n),
                         "rating": m.ravel()})
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # pingouin's own deprecation and 0/0 warnings, this call only
        res = pg.intraclass_corr(data=data, targets="target", raters="rater", ratings="rating")
    res = res.set_index("Type")
    ci_col = "CI95%" if "CI95%" in res.columns else "CI95"
    for name, types in (("icc2_1", ("ICC2", "ICC(A,1)")), ("icc3_1", ("ICC3", "ICC(C,1)"))):
        typ = next(t for t in types if t in res.index)
        value = float(res.loc[typ, "ICC"])
        lo, hi = (float(v) for v in res.loc[typ, ci_col])
        if value >= 1 - 1e-12:
            value, lo, hi = 1.0, 1.0, 1.0
        out[name], out[f"{name}_ci_low"], out[f"{name}_ci_high"] = value, lo, hi
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Spearman's rho and its p value; NaN for fewer than 3 pairs or a constant rater."""
    from scipy.stats import spearmanr

    x, y = _arrays(a, b)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return NAN, NAN
    r = spearmanr(x, y)
    return float(r.statistic), float(r.pvalue)


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
    row["exact_agreement"] = float(np.mean(np.isclose(x, y))) if n else NAN
    row.update(bland_altman(x, y))
    notes = []
    if n < min_n:
        row.update(dict.fromkeys(("kappa_qw", "icc2_1", "icc2_1_ci_low", "icc2_1_ci_high", "icc3_1",
                                  "icc3_1_ci_low", "icc3_1_ci_high", "spearman_rho", "spearman_p"), NAN))
        notes.append(f"kappa/ICC/rho not computed: {n} target(s), fewer than {min_n}")
    else:
        row["kappa_qw"] = weighted_kappa(x, y, labels) if ordinal else NAN
        if not ordinal:
            notes.append("kappa: not an ordinal score")
        elif math.isnan(float(row["kappa_qw"])):
            notes.append("kappa undefined (no variation)")
        row.update(icc(x, y))
        if math.isnan(float(row["icc2_1"])):
            notes.append("ICC undefined (no variation between targets)")
        row["spearman_rho"], row["spearman_p"] = spearman(x, y)
    row["note"] = "; ".join(notes)
    return row
