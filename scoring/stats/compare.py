"""Thin wrappers around scipy / statsmodels that return one tidy table row each.

Each wrapper reports n per group, the test used and the exact p value; when a test cannot be run
(too few observations, no variation) it returns the row with ``p_value`` NaN and the reason in
``note`` instead of raising, so a table always shows what was and was not tested.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

log = logging.getLogger(__name__)

MIN_N = 3


def _clean(x: Sequence[float] | pd.Series) -> np.ndarray:
    a = np.asarray(pd.to_numeric(pd.Series(x), errors="coerce"), dtype=float)
    return a[np.isfinite(a)]


def describe(x: Sequence[float] | pd.Series) -> dict[str, float]:
    """n, median, quartiles, mean and SD of the finite values."""
    a = _clean(x)
    if a.size == 0:
        return {"n": 0, "median": np.nan, "q1": np.nan, "q3": np.nan, "mean": np.nan, "sd": np.nan}
    return {"n": int(a.size), "median": float(np.median(a)), "q1": float(np.percentile(a, 25)),
            "q3": float(np.percentile(a, 75)), "mean": float(a.mean()),
            "sd": float(a.std(ddof=1)) if a.size > 1 else np.nan}


def _num(v: float) -> str:
    """3 significant digits, whole numbers from 1000 on (ferritin 1234, not 1.23e+03)."""
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def fmt_median_iqr(x: Sequence[float] | pd.Series) -> str:
    """'median [Q1, Q3]' for the summary tables."""
    d = describe(x)
    return "" if d["n"] == 0 else f"{_num(d['median'])} [{_num(d['q1'])}, {_num(d['q3'])}]"


def quartile_columns(x: Sequence[float] | pd.Series, suffix: str) -> dict[str, float]:
    """The numeric companions of a ``median_iqr_<suffix>`` text cell: ``median_<suffix>``, ``q1_<suffix>``,
    ``q3_<suffix>`` at full precision (NaN when there is no value)."""
    d = describe(x)
    return {f"{k}_{suffix}": d[k] for k in ("median", "q1", "q3")}


def compare_groups(groups: Mapping[str, Sequence[float] | pd.Series], test: str = "auto",
                   min_n: int = MIN_N) -> dict[str, object]:
    """Compare a continuous variable between groups.

    ``test``: ``auto`` (Mann-Whitney U for two groups, Kruskal-Wallis for more), ``mannwhitney``,
    ``kruskal``, ``ttest`` (Student), ``anova`` (one-way). Returns n and median [IQR] per group, test,
    statistic, exact p and an effect size (rank-biserial r for Mann-Whitney, eta^2_H for
    Kruskal-Wallis, Cohen's d for the t-test, eta^2 for ANOVA), then (after ``note``) the numbers behind each
    group's median [IQR] text: ``median_<group>``, ``q1_<group>``, ``q3_<group>``.
    """
    row = _compare_groups(groups, test, min_n)
    for k, v in groups.items():
        row.update(quartile_columns(v, str(k)))
    return row


def _compare_groups(groups: Mapping[str, Sequence[float] | pd.Series], test: str, min_n: int) -> dict[str, object]:
    data = {str(k): _clean(v) for k, v in groups.items()}
    row: dict[str, object] = {}
    for k, a in data.items():
        row[f"n_{k}"] = int(a.size)
        row[f"median_iqr_{k}"] = fmt_median_iqr(a)
    if test == "auto":
        test = "mannwhitney" if len(data) == 2 else "kruskal"
    names = {"mannwhitney": "Mann-Whitney U (two-sided)", "kruskal": "Kruskal-Wallis H",
             "ttest": "Student t-test (two-sided)", "anova": "one-way ANOVA"}
    if test not in names:
        raise ValueError(f"unknown test {test!r}")
    if test in ("mannwhitney", "ttest") and len(data) != 2:  # not the first two of three, silently
        raise ValueError(f"{names[test]} needs exactly two groups, not {len(data)}")
    row.update(test=names[test], statistic=np.nan, p_value=np.nan, effect_size=np.nan, effect_size_name="",
               note="")
    small = [k for k, a in data.items() if a.size < min_n]
    if small:
        row["note"] = f"not tested: fewer than {min_n} values in {', '.join(small)}"
        return row
    arrays = list(data.values())
    allv = np.concatenate(arrays)
    if np.ptp(allv) == 0:
        row["note"] = "not tested: all values identical"
        return row
    if test in ("ttest", "anova") and all(np.ptp(a) == 0 for a in arrays):  # F or t = x / 0: p = 0 from scipy
        row["note"] = "not tested: no variance within the groups"
        return row
    if test == "mannwhitney":
        res = stats.mannwhitneyu(arrays[0], arrays[1], alternative="two-sided")
        n1, n2 = arrays[0].size, arrays[1].size
        row.update(statistic=float(res.statistic), p_value=float(res.pvalue),
                   effect_size=float(2 * res.statistic / (n1 * n2) - 1),
                   effect_size_name=f"rank-biserial r ({list(data)[0]} > {list(data)[1]} positive)")
    elif test == "kruskal":
        res = stats.kruskal(*arrays)
        n, k = allv.size, len(arrays)
        row.update(statistic=float(res.statistic), p_value=float(res.pvalue),
                   effect_size=float(max(res.statistic - k + 1, 0) / (n - k)) if n > k else np.nan,
                   effect_size_name="eta^2_H (H - k + 1)/(n - k)")
    elif test == "ttest":
        res = stats.ttest_ind(arrays[0], arrays[1])
        n1, n2 = arrays[0].size, arrays[1].size
        sp = np.sqrt(((n1 - 1) * arrays[0].var(ddof=1) + (n2 - 1) * arrays[1].var(ddof=1)) / (n1 + n2 - 2))
        row.update(statistic=float(res.statistic), p_value=float(res.pvalue),
                   effect_size=float((arrays[0].mean() - arrays[1].mean()) / sp) if sp > 0 else np.nan,
                   effect_size_name="Cohen's d")
    else:
        res = stats.f_oneway(*arrays)
        ss_b = sum(a.size * (a.mean() - allv.mean()) ** 2 for a in arrays)
        ss_t = ((allv - allv.mean()) ** 2).sum()
        row.update(statistic=float(res.statistic), p_value=float(res.pvalue),
                   effect_size=float(ss_b / ss_t), effect_size_name="eta^2")
    return row


#: Significant digits a difference of two values is rounded to (:func:`round_sig`) before it is ranked or compared.
CHANGE_DIGITS = 12


def round_sig(value: Any, digits: int = CHANGE_DIGITS) -> Any:
    """``value`` to ``digits`` significant digits (NaN, None and non-numbers as they are). Float subtraction makes
    changes equal as written differ in their last bits (0.3 - 0.2 = 0.09999999999999998, 0.2 - 0.1 =
    0.1): rounded, they are equal again, as the tables write them."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return value
    return v if not np.isfinite(v) or v == 0 else float(f"{v:.{digits}g}")


def round_sig_array(values: np.ndarray, digits: int = CHANGE_DIGITS) -> np.ndarray:
    """:func:`round_sig` of each element of a float array."""
    return np.array([round_sig(v, digits) for v in np.asarray(values, dtype=float).ravel()], dtype=float).reshape(
        np.shape(values))


def paired(before: Sequence[float] | pd.Series, after: Sequence[float] | pd.Series,
           min_n: int = MIN_N) -> list[dict[str, object]]:
    """Wilcoxon signed-rank and paired t-test rows for complete pairs (after - before); after ``note`` the numbers
    behind the median [IQR] texts (``median_before``, ``q1_before``, ``q3_before``, the same ``_after``).

    The Wilcoxon test ranks the changes rounded to :data:`CHANGE_DIGITS` significant digits (:func:`round_sig`, as
    zhang2020_before_after_patients.csv writes them): on the raw float differences, changes equal as written (0.3 -
    0.2 and 0.2 - 0.1) got different ranks, their tie broken by float noise (a numerical audit: W 12, p 0.4375 on 8
    pairs where the changes as written give W 13, p 0.570). The paired t-test is on the values as they are; the
    rounded changes decide whether every pair changed by the same amount."""
    b = np.asarray(pd.to_numeric(pd.Series(before), errors="coerce"), dtype=float)
    a = np.asarray(pd.to_numeric(pd.Series(after), errors="coerce"), dtype=float)
    ok = np.isfinite(b) & np.isfinite(a)
    b, a = b[ok], a[ok]
    d = a - b
    dr = round_sig_array(d)  # the changes as written: what the signed ranks and the "same change" check see
    base = {"n_pairs": int(ok.sum()), "median_iqr_before": fmt_median_iqr(b), "median_iqr_after": fmt_median_iqr(a),
            "mean_change": float(d.mean()) if d.size else np.nan,
            "sd_change": float(d.std(ddof=1)) if d.size > 1 else np.nan}
    numbers = quartile_columns(b, "before") | quartile_columns(a, "after")  # after note: the text's numbers
    rows = []
    for name in ("Wilcoxon signed-rank (two-sided)", "paired t-test (two-sided)"):
        row = dict(base, test=name, statistic=np.nan, p_value=np.nan, note="", **numbers)
        if d.size < min_n:
            row["note"] = f"not tested: fewer than {min_n} complete pairs"
        elif np.all(dr == 0):
            row["note"] = "not tested: no change in any pair"
        elif name.startswith("Wilcoxon") and np.count_nonzero(dr) < min_n:  # zero changes drop out of the ranks
            row["note"] = f"not tested: fewer than {min_n} pairs that changed (pairs without change drop out)"
        elif name.startswith("paired t") and np.ptp(dr) == 0:  # t = mean / 0: scipy gives t = inf, p = 0
            # on the rounded changes: 0.3 - 0.2 and 0.2 - 0.1 are one change, and their float noise gave t = 1e15
            row["note"] = "not tested: every pair changed by the same amount (no variance of the change)"
        else:
            res = stats.wilcoxon(dr) if name.startswith("Wilcoxon") else stats.ttest_rel(a, b)
            row.update(statistic=float(res.statistic), p_value=float(res.pvalue))
        rows.append(row)
    return rows


#: Up to this many pairs Spearman's p is exact: every pairing of the ranks enumerated (9! = 362880), as R's
#: ``cor.test(method = "spearman")`` does (AS 89); above it, scipy's t approximation. The approximation gave p = 0
#: for three pairs in perfect agreement (exact: 1/3) and 0.037 for rho 0.9 on five pairs (exact: 0.083), and
#: ``--min-n`` is 3 (a numerical audit, 2026-12-06).
SPEARMAN_EXACT_MAX_N = 9


def spearman_test(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, str]:
    """Spearman's rho, its two-sided p and how p was found ("exact" or "t approximation"), for finite,
    non-constant ``x`` and ``y`` of equal length >= 2. The exact p is the share of the pairings of ``y``'s ranks
    with ``x``'s (ties keep their mid-ranks) whose |rho| reaches the observed |rho|."""
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    res = stats.spearmanr(xs, ys)
    rho = float(res.statistic)
    n = xs.size
    if n > SPEARMAN_EXACT_MAX_N:
        return rho, float(res.pvalue), "t approximation"
    from itertools import permutations

    rx, ry = stats.rankdata(xs), stats.rankdata(ys)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    perms = np.fromiter((i for p in permutations(range(n)) for i in p), dtype=np.int8).reshape(-1, n)
    r_all = (ry[perms] @ rx) / np.sqrt((rx @ rx) * (ry @ ry))  # every pairing's rho (the sum of squares stays)
    p = float(np.mean(np.abs(r_all) >= abs(rho) - 1e-9))
    return rho, p, "exact"


def correlate(x: Sequence[float] | pd.Series, y: Sequence[float] | pd.Series, method: str = "spearman",
              min_n: int = MIN_N) -> dict[str, object]:
    """Spearman rho, Kendall tau-b or Pearson r on complete pairs, with n and exact p."""
    xs = np.asarray(pd.to_numeric(pd.Series(x), errors="coerce"), dtype=float)
    ys = np.asarray(pd.to_numeric(pd.Series(y), errors="coerce"), dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    names = {"spearman": ("Spearman rank correlation", "rho"), "kendall": ("Kendall tau-b", "tau"),
             "pearson": ("Pearson correlation", "r")}
    test, coef_name = names[method]
    row: dict[str, object] = {"n": int(xs.size), "test": test, "coefficient_name": coef_name,
                              "coefficient": np.nan, "p_value": np.nan, "note": ""}
    if xs.size < min_n:
        row["note"] = f"not tested: fewer than {min_n} complete pairs"
    elif np.ptp(xs) == 0 or np.ptp(ys) == 0:
        row["note"] = "not tested: a variable is constant"
    else:
        if method == "spearman":
            rho, p, how = spearman_test(xs, ys)
            row.update(coefficient=rho, p_value=p)
            if how != "exact":
                row["note"] = f"p by the t approximation (exact up to {SPEARMAN_EXACT_MAX_N} pairs)"
        else:
            fn = {"kendall": stats.kendalltau, "pearson": stats.pearsonr}[method]
            res = fn(xs, ys)
            row.update(coefficient=float(res.statistic), p_value=float(res.pvalue))
    return row


def partial_correlation(data: pd.DataFrame, x: str, y: str, covariates: Sequence[str] = (),
                        method: str = "spearman", confidence: float = 0.95,
                        drop_constant_covariates: bool = False) -> dict[str, object]:
    """Partial correlation of ``x`` and ``y`` given ``covariates`` on the complete rows of ``data``.

    The textbook computation (pingouin's ``partial_corr``; R's ``ppcor::pcor.test`` gives the same r and p): the
    partial correlation matrix from the inverse of the covariance matrix of the variables (of their ranks for
    ``spearman``); two-sided p from t = r sqrt((n - 2 - k) / (1 - r^2)) with n - 2 - k degrees of freedom (k
    covariates); confidence interval by Fisher's z with standard error 1 / sqrt(n - k - 3). Returns n, r,
    ci_low, ci_high, p_value (NaN when a variable is constant or n - k - 3 < 1), ``note`` (why r is NaN),
    ``covariates`` (those in the model) and ``left_out`` ({covariate: its one value}).

    A covariate constant on the complete rows cannot be adjusted for (r is NaN, the note names it), unless
    ``drop_constant_covariates``: then it is left out of the model on the same rows (adjusting for a constant is
    adjusting for nothing) and listed in ``left_out``."""
    if method not in ("spearman", "pearson"):
        raise ValueError(f"partial correlation method must be spearman or pearson, not {method!r}")
    covariates = list(covariates)
    cols = [x, y, *covariates]
    d = data[cols].apply(pd.to_numeric, errors="coerce").dropna()
    out: dict[str, object] = {"n": len(d), "r": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan,
                              "note": "", "covariates": covariates, "left_out": {}}
    constant_vars = [c for c in (x, y) if d[c].nunique() < 2]
    constant_cov = [c for c in covariates if d[c].nunique() < 2]
    if len(d) and constant_cov and drop_constant_covariates:
        out["left_out"] = {c: d[c].iloc[0] for c in constant_cov}
        covariates = [c for c in covariates if c not in constant_cov]
        out["covariates"] = covariates
        d = d[[x, y, *covariates]]
        constant_cov = []
    n, k = len(d), len(covariates)
    if n - k - 3 < 1:
        out["note"] = f"not tested: {n} complete rows for {k} covariate(s) (needs n - k - 3 >= 1)"
        return out
    if constant_vars:
        out["note"] = f"not tested: {' and '.join(constant_vars)} is constant"
        return out
    if constant_cov:
        out["note"] = f"not tested: covariate {', '.join(constant_cov)} is constant"
        return out
    v = d.rank().cov() if method == "spearman" else ((d - d.mean()) / d.std()).cov()
    vi = np.linalg.pinv(v.to_numpy(), hermitian=True)
    scale = np.sqrt(1.0 / np.diag(vi))
    r = float(np.clip(-vi[0, 1] * scale[0] * scale[1], -1.0, 1.0))
    dof = n - k - 2
    if np.isclose(r * r, 1.0):
        p = 0.0
    else:
        p = float(2 * stats.t.sf(abs(r * np.sqrt(dof / (1 - r * r))), dof))
    crit = float(stats.norm.ppf(0.5 + confidence / 2))
    z, se = np.arctanh(r), 1.0 / np.sqrt(n - k - 3)
    out.update(r=r, ci_low=float(np.tanh(z - crit * se)), ci_high=float(np.tanh(z + crit * se)), p_value=p)
    return out


#: Largest number of tables with the observed margins that :func:`fisher_exact_rxc` enumerates exactly.
FISHER_MAX_TABLES = 500_000
#: Monte Carlo fallback beyond that: seeded, so a rerun gives the same p value.
FISHER_MC_RESAMPLES = 99_999
FISHER_MC_SEED = 0


def _tables_with_margins(rows: np.ndarray, cols: np.ndarray, limit: int) -> np.ndarray | None:
    """Every table of non-negative integers with these row and column sums (one column at a time), as an
    array (tables, R, C); None when there are more than ``limit``."""
    partial: list[tuple[tuple[int, ...], tuple[int, ...]]] = [((), tuple(int(r) for r in rows))]
    n_rows = len(rows)

    def splits(total: int, caps: tuple[int, ...]):
        if len(caps) == 1:
            if total <= caps[0]:
                yield (total,)
            return
        rest = sum(caps[1:])
        for x in range(max(0, total - rest), min(caps[0], total) + 1):
            for tail in splits(total - x, caps[1:]):
                yield (x, *tail)

    for c in cols[:-1]:
        nxt = []
        for cells, remaining in partial:
            for col in splits(int(c), remaining):
                nxt.append(((*cells, *col), tuple(r - x for r, x in zip(remaining, col, strict=True))))
                if len(nxt) > limit:
                    return None
        partial = nxt
    # the last column is what the rows have left
    flat = np.array([(*cells, *remaining) for cells, remaining in partial], dtype=np.int64)
    return flat.reshape(len(flat), len(cols), n_rows).transpose(0, 2, 1)


def fisher_exact_rxc(table: np.ndarray | pd.DataFrame, max_tables: int = FISHER_MAX_TABLES
                     ) -> tuple[float, float, str]:
    """Fisher's exact test for an R x C table (Freeman-Halton): (probability of the observed table, p, method).

    p sums the hypergeometric probabilities (``scipy.stats.random_table(...).pmf``) of every table with the
    observed margins that is no more probable than the observed one (R's ``fisher.test``, relative tolerance
    1e-7). 2 x 2 tables go to ``scipy.stats.fisher_exact`` (same p); their statistic is the conditional
    maximum-likelihood odds ratio (R's). When the
    margins allow more than ``max_tables`` tables, p is a seeded Monte Carlo estimate (scipy's default for
    R x C tables is an unseeded one: the p value changed from run to run).
    """
    t = np.asarray(table, dtype=np.int64)
    if t.shape == (2, 2):
        # the statistic is the conditional maximum-likelihood odds ratio, as R's fisher.test reports it (scipy's
        # fisher_exact gives the sample ad/bc: 9.0 against R's 6.408 on R's TeaTasting table; a numerical audit)
        res = stats.fisher_exact(t)
        odds = stats.contingency.odds_ratio(t, kind="conditional").statistic
        return float(odds), float(res.pvalue), "Fisher exact"
    rows, cols = t.sum(axis=1), t.sum(axis=0)
    dist = stats.random_table(rows, cols)
    p_obs = float(dist.pmf(t))
    tables = _tables_with_margins(rows, cols, max_tables)
    if tables is None:
        method = stats.MonteCarloMethod(n_resamples=FISHER_MC_RESAMPLES, rng=np.random.default_rng(FISHER_MC_SEED))
        res = stats.fisher_exact(t, method=method)
        return (float(res.statistic), float(res.pvalue),
                f"Fisher-Freeman-Halton (Monte Carlo p, {FISHER_MC_RESAMPLES} tables, seed {FISHER_MC_SEED})")
    pmf = dist.pmf(tables)
    p = float(min(1.0, pmf[pmf <= p_obs * (1 + 1e-7)].sum()))
    return p_obs, p, "Fisher-Freeman-Halton exact"


def categorical(table: pd.DataFrame) -> dict[str, object]:
    """Chi-square test of independence; Fisher's exact test (Freeman-Halton beyond 2 x 2) when any expected
    count is below 5."""
    t = table.loc[table.sum(axis=1) > 0, table.sum(axis=0) > 0]
    row: dict[str, object] = {"test": "", "statistic": np.nan, "p_value": np.nan, "note": ""}
    if t.shape[0] < 2 or t.shape[1] < 2:
        row["note"] = "not tested: fewer than two observed categories or groups"
        return row
    chi = stats.chi2_contingency(t.to_numpy())
    if (chi.expected_freq < 5).any():
        statistic, p, method = fisher_exact_rxc(t.to_numpy())
        what = ("statistic = conditional maximum-likelihood odds ratio (as R's fisher.test)" if t.shape == (2, 2)
                else "statistic = probability of the observed table")
        row.update(test=method, statistic=statistic, p_value=p, note=f"expected count < 5 in some cell; {what}")
        return row
    # scipy (as R's chisq.test) applies Yates' continuity correction to a 2 x 2 table: the name says so
    yates = " with Yates' continuity correction" if chi.dof == 1 else ""
    row.update(test=f"chi-square{yates} (df={chi.dof})", statistic=float(chi.statistic), p_value=float(chi.pvalue))
    return row


#: A fitted log odds ratio per standard deviation of its predictor (or its standard error) beyond this is taken as a
#: diverging estimate (quasi-separation): an odds ratio above e^10 = 22 026 per SD. Real effects stay far below.
LOGIT_MAX_COEF_PER_SD = 10.0


def _quasi_separation(res: object, d: pd.DataFrame, predictors: list[str]) -> str:
    """Why a logistic fit is a quasi-separated one ('' when it is not): the fit did not converge, or an estimate or
    its standard error is not finite or absurdly large (:data:`LOGIT_MAX_COEF_PER_SD`, per SD of the predictor)."""
    reasons = []
    if not res.mle_retvals.get("converged", True):
        reasons.append("the fit did not converge")
    params, bse = res.params[predictors], res.bse[predictors]
    bad = [p for p in predictors if not (np.isfinite(params[p]) and np.isfinite(bse[p]))]
    if bad:
        reasons.append(f"estimate or SE not finite for {', '.join(bad)}")
    sd = d[predictors].std(ddof=1)
    huge = [p for p in predictors if p not in bad
            and max(abs(params[p]), bse[p]) * sd[p] > LOGIT_MAX_COEF_PER_SD]
    if huge:
        reasons.append(f"log odds ratio or its SE > {LOGIT_MAX_COEF_PER_SD:g} per SD of {', '.join(huge)}")
    return "; ".join(reasons)


def logistic(df: pd.DataFrame, outcome: str, predictors: list[str], cluster: str | None = None,
             min_events: int = 2) -> tuple[pd.DataFrame, object | None, str]:
    """Binary logistic regression (statsmodels Logit) on complete cases.

    Returns (table of odds ratios with 95 % CI and Wald p per predictor, fitted result or None, note).
    With ``cluster`` the standard errors are cluster-robust (repeated rows per patient). A fit that did not
    converge, or whose estimate or SE is not finite or absurd (quasi-separation, :func:`_quasi_separation`), is
    reported as not fitted: OR, CI and p blank, the reason in ``note`` (its Wald p would be meaningless).
    """
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationError, PerfectSeparationWarning

    cols = [outcome, *predictors] + ([cluster] if cluster else [])
    cols = list(dict.fromkeys(cols))
    d = df[cols].copy()
    for c in [outcome, *predictors]:
        d[c] = pd.to_numeric(d[c], errors="coerce")
    d = d.dropna()
    n, events = len(d), int(d[outcome].sum()) if len(d) else 0
    empty = pd.DataFrame({"term": predictors, "odds_ratio": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                          "coef": np.nan, "se": np.nan, "p_value": np.nan})
    empty["n"], empty["events"] = n, events
    note = ""
    if events < min_events or n - events < min_events:
        note = f"not fitted: {events} event(s) and {n - events} non-event(s) among {n} complete cases"
    elif n <= len(predictors) + 1:
        note = f"not fitted: {n} complete cases for {len(predictors)} predictors"
    else:
        constant = [p for p in predictors if d[p].nunique() < 2]
        if constant:
            note = f"not fitted: constant predictor(s) {constant}"
    if note:
        empty["note"] = note
        return empty, None, note
    X = sm.add_constant(d[predictors], has_constant="add")
    kw = {"cov_type": "cluster", "cov_kwds": {"groups": pd.factorize(d[cluster])[0]}} if cluster else {}
    try:
        with warnings.catch_warnings(record=True) as caught:  # reported in the table instead
            warnings.simplefilter("always")
            res = sm.Logit(d[outcome].astype(float), X).fit(disp=0, maxiter=200, **kw)
    except (PerfectSeparationError, np.linalg.LinAlgError) as exc:
        empty["note"] = f"not fitted: {exc}"
        return empty, None, str(exc)
    if any(issubclass(w.category, PerfectSeparationWarning) for w in caught):
        note = "not fitted: perfect separation (a predictor splits the outcome exactly)"
        empty["note"] = note
        return empty, None, note
    quasi = _quasi_separation(res, d, predictors)
    if quasi:
        # a Wald p (and CI) of a diverging estimate is meaningless (Hauck-Donner): OR 1e13, CI [0, inf], p 0.9998
        note = (f"not fitted: quasi-separation ({quasi}): a predictor almost splits the outcome; no OR, CI or p "
                "(the Wald test of a diverging estimate means nothing)")
        empty["note"] = note
        return empty, None, note
    ci = res.conf_int()
    tab = pd.DataFrame({"term": predictors, "odds_ratio": np.exp(res.params[predictors]).to_numpy(),
                        "ci_low": np.exp(ci.loc[predictors, 0]).to_numpy(),
                        "ci_high": np.exp(ci.loc[predictors, 1]).to_numpy(),
                        "coef": res.params[predictors].to_numpy(), "se": res.bse[predictors].to_numpy(),
                        "p_value": res.pvalues[predictors].to_numpy()})
    tab["n"], tab["events"] = n, events
    tab["note"] = note + ("; " if note else "") + ("cluster-robust SE by patient" if cluster else "Wald test")
    return tab, res, note
