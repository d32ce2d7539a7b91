"""The codebook of the ``ctscore stats`` and ``ctscore validate`` tables (``codebook.csv`` beside them), and the fixed
column sets of the statistics tables.

``codebook.csv`` has one row per (table, column) of the tables written, in their column order:

- ``table``: the table (its file name without ``.csv``);
- ``column``: the column's name, as in the header;
- ``type``: text | integer | number | boolean (``boolean`` cells are ``True``/``False``; validate's
  ``within_readers_*`` verdicts are text ``yes``/``no``/empty, as ``allowed`` says);
- ``unit``: the unit where one unit holds for the whole column (days, score points, a lab's unit); empty where it
  is that of each row's ``variable`` (the description says so) or where the column has none;
- ``allowed``: the values a category column holds, where they are fixed;
- ``description``: what the column is.

Columns generated from a fixed category (``n_<group>``, ``median_iqr_<group>``, ``<lab>_before``, a reader's name)
are described from their pattern. The column sets are fixed (:data:`STATS_COLUMNS`): every table has every column of
its categories (severity levels, lesion groups, outcomes, subgroups, levels, the labs asked for), n 0 and empty cells
where a category has no patient, so that two sites' tables stack; :func:`conform` gives a table those columns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import pandas as pd

#: the columns of codebook.csv
CODEBOOK_COLUMNS = ["table", "column", "type", "unit", "allowed", "description"]

#: (type, unit, allowed, description) of one column
Spec = tuple[str, str, str, str]

_ROW_UNIT = ("in the unit of the row's variable (score points for a score; for a lab the unit of labs.csv, "
             "data_summary.csv lists the labs)")


def _s(kind: str, description: str, unit: str = "", allowed: str = "") -> Spec:
    return kind, unit, allowed, description


#: Columns that mean the same in every statistics table (a table's own entry wins).
COMMON: dict[str, Spec] = {
    "test": _s("text", "the test run for this row, named in full; it can differ between rows (and between sites: "
                       "e.g. Mann-Whitney U across the two levels a cohort has, Kruskal-Wallis across three); empty "
                       "when nothing was tested"),
    "statistic": _s("number", "the test statistic (U, H, t, F, chi-square, W, ...: the one the test column names); "
                              "empty when not tested"),
    "p_value": _s("number", "p value of the test (two-sided unless the test says otherwise), not rounded; empty when "
                            "not tested (note says why)"),
    "effect_size": _s("number", "effect size (the one effect_size_name names); empty when not tested"),
    "effect_size_name": _s("text", "which effect size effect_size holds (rank-biserial r, eta^2_H, Cohen's d, "
                                   "eta^2)"),
    "note": _s("text", "why a test or model was not run, and anything that qualifies the row; empty when there is "
                       "nothing to say"),
    "variable": _s("text", "the variable of the row: the score (a numeric column of scans.csv) or a lab "
                           "(canonical name)"),
    "patient_id": _s("text", "the patient's id in the clinical table"),
}


def _group_columns(levels: Iterable[str], what: str) -> dict[str, Spec]:
    """n_<level> and median_iqr_<level> of each level, in the order compare_groups writes them."""
    out: dict[str, Spec] = {}
    for lv in levels:
        out[f"n_{lv}"] = _s("integer", f"number of values (patients) in {what} {lv!r} (0 when the cohort has none)")
        out[f"median_iqr_{lv}"] = _s("text", f"median [first quartile, third quartile] of {what} {lv!r}, as text "
                                             "(3 significant digits); the numbers: median_, q1_, q3_" + lv)
    return out


def _quartile_columns(levels: Iterable[str], what: str, unit: str = "") -> dict[str, Spec]:
    """median_<level>, q1_<level>, q3_<level>: the numbers behind median_iqr_<level>."""
    out: dict[str, Spec] = {}
    where = "" if unit else f" ({_ROW_UNIT})"
    for lv in levels:
        for k, word in (("median", "median"), ("q1", "first quartile (25th percentile)"),
                        ("q3", "third quartile (75th percentile)")):
            out[f"{k}_{lv}"] = _s("number", f"{word} of {what} {lv!r}, full precision{where}; empty when n is 0",
                                  unit)
    return out


_TESTED = {c: COMMON[c] for c in ("test", "statistic", "p_value", "effect_size", "effect_size_name", "note")}


def _compared(first: dict[str, Spec], levels: tuple[str, ...], what: str, unit: str = "") -> dict[str, Spec]:
    """A compare_groups table: its leading columns, the groups' n and median [IQR], the test, then the numbers."""
    return first | _group_columns(levels, what) | _TESTED | _quartile_columns(levels, what, unit)


LESION_GROUPS = ("persistent", "recovery")
SEVERITIES = ("mild", "moderate", "severe")
SUBGROUPS = ("0-100", "101-200", ">200")
OUTCOMES = ("survivor", "non-survivor")
LEVELS = ("L1", "L2", "L3", "L4", "L5")
_CI = {"ci_low": _s("number", "lower bound of the 95 % confidence interval"),
       "ci_high": _s("number", "upper bound of the 95 % confidence interval")}
_LOGIT = {"term": _s("text", "the predictor"),
          "per": _s("text", "what the odds ratio is per (per 1 pg/mL, per 1 score point, per 1 year)"),
          "odds_ratio": _s("number", "odds ratio per the unit in column per (exp(coef))"),
          **_CI, "coef": _s("number", "log odds ratio (logistic regression coefficient)"),
          "se": _s("number", "standard error of coef"), "p_value": _s("number", "Wald p value of the predictor"),
          "n": _s("integer", "complete cases in the model"), "events": _s("integer", "events among them"),
          "note": COMMON["note"], "test": _s("text", "the model fitted")}

_MIXED_N_OBS = ("observations in the model: for the score its scans, for a lab its samples (one per patient and day, "
                "same-day values averaged), each once, whether or not a scan was near")

#: The columns of every statistics table, in order, with their codebook entry. A table of a run has exactly these
#: columns (:func:`conform`), except ``zhang2020_before_after_patients``, whose columns follow the score and the labs
#: and covariates asked for (:data:`PATTERNS`).
STATS_COLUMNS: dict[str, dict[str, Spec]] = {
    "data_summary": {"item": _s("text", "what is counted or noted ('note' rows: a note of the run)"),
                     "value": _s("text", "its count or text")},
    "liao2021_lesion_groups": {
        "patient_id": COMMON["patient_id"],
        "week8_score": _s("number", "the score of the week-8 scan (days 49-55 after onset)", "score points"),
        "week8_day": _s("number", "day since symptom onset of that scan", "days"),
        "group": _s("text", "lesion group at week 8", allowed="persistent, recovery, unclassified"),
        "reason": _s("text", "why an unclassified patient is unclassified")},
    "liao2021_group_counts": {
        "group": _s("text", "lesion group", allowed="persistent, recovery, unclassified"),
        "reason": _s("text", "reason (unclassified patients)"), "n": _s("integer", "number of patients"),
        "definition": _s("text", "the rule that made the groups")},
    "liao2021_trajectories": {
        "grouping": _s("text", "what the groups are", allowed="group, severity"),
        "variable": COMMON["variable"], "week": _s("integer", "week since symptom onset (1-8)", "weeks"),
        "group": _s("text", "the level of the grouping", allowed="persistent, recovery; mild, moderate, severe"),
        "n": _s("integer", "number of patients with a value (0 for a level the cohort lacks)"),
        "median": _s("number", f"median, {_ROW_UNIT}"), "q1": _s("number", f"first quartile, {_ROW_UNIT}"),
        "q3": _s("number", f"third quartile, {_ROW_UNIT}")},
    "liao2021_weekly_tests": (
        {"grouping": _s("text", "what the groups are (lesion group at week 8, or clinical severity)",
                        allowed="group, severity"),
         "variable": COMMON["variable"], "week": _s("integer", "week since symptom onset (1-8)", "weeks")}
        | _group_columns(LESION_GROUPS, "lesion group") | _TESTED | _group_columns(SEVERITIES, "severity")
        | _quartile_columns((*LESION_GROUPS, *SEVERITIES), "group")),
    "liao2021_logistic": _LOGIT,
    "liao2021_roc": {
        "predictor": _s("text", "the predictor of persistent lesions"),
        "n_persistent": _s("integer", "patients with persistent lesions"),
        "n_recovery": _s("integer", "patients who recovered"),
        "auc": _s("number", "ROC area under the curve (0-1)"), **_CI,
        "youden_cutoff": _s("number", "Youden cut-off, in cutoff_unit"),
        "cutoff_unit": _s("text", "the unit of youden_cutoff (the lab's unit in labs.csv)"),
        "cutoff_rule": _s("text", "which side of the cut-off counts as persistent"),
        "sensitivity": _s("number", "sensitivity at the cut-off (fraction, 0-1)"),
        "specificity": _s("number", "specificity at the cut-off (fraction, 0-1)"),
        "method": _s("text", "how AUC and CI were computed"), "note": COMMON["note"]},
    "liao2021_peak_timing_patients": {
        "patient_id": COMMON["patient_id"], "lab": _s("text", "the lab"),
        "lab_peak_day": _s("number", "day since onset of the lab's peak (a tied peak: the mean of its days)", "days"),
        "score_peak_day": _s("number", "day since onset of the score's peak (a tied peak: the mean of its days)",
                             "days"),
        "lag_days": _s("number", "score_peak_day - lab_peak_day (positive: the lab peaks first)", "days"),
        "lab_peak_precedes": _s("boolean", "the lab peaks before the score (written True/False)",
                                allowed="True, False"),
        "score_peak_tied_days": _s("integer", "number of distinct days at the score's maximum"),
        "lab_peak_tied_days": _s("integer", "number of distinct days at the lab's maximum")},
    "liao2021_peak_timing": {
        "lab": _s("text", "the lab"), "n_patients": _s("integer", "patients with enough scans and lab values"),
        "n_lab_first": _s("integer", "patients whose lab peaked first"),
        "n_same_day": _s("integer", "patients whose peaks fell on the same day"),
        "n_score_first": _s("integer", "patients whose score peaked first"),
        "n_tied_score_peak": _s("integer", "patients with a tied score peak"),
        "n_tied_lab_peak": _s("integer", "patients with a tied lab peak"),
        "median_iqr_lag_days": _s("text", "median [Q1, Q3] of lag_days as text; the numbers: median_lag_days, "
                                          "q1_lag_days, q3_lag_days", "days"),
        "wilcoxon_p": _s("number", "p of the Wilcoxon signed-rank test of lag = 0"),
        "sign_test_p": _s("number", "p of the exact binomial sign test (lab first vs score first)"),
        "test": COMMON["test"], "note": COMMON["note"],
        "median_lag_days": _s("number", "median lag (score peak day - lab peak day)", "days"),
        "q1_lag_days": _s("number", "first quartile of the lag", "days"),
        "q3_lag_days": _s("number", "third quartile of the lag", "days")},
    "zhang2020_subgroups": {"subgroup": _s("text", "admission-score subgroup", allowed=", ".join(SUBGROUPS)),
                            "n": _s("integer", "number of patients"),
                            "definition": _s("text", "the score that made the subgroups")},
    "zhang2020_subgroup_labs": _compared({"variable": _s("text", "the lab")}, SUBGROUPS, "subgroup"),
    "zhang2020_pairwise": {
        "variable": _s("text", "the lab"),
        "group_a": _s("text", "first subgroup of the pair", allowed=", ".join(SUBGROUPS)),
        "group_b": _s("text", "second subgroup of the pair", allowed=", ".join(SUBGROUPS)),
        "n_a": _s("integer", "patients with a value in group_a"), "n_b": _s("integer", "patients in group_b"),
        "test": COMMON["test"], "p_value": _s("number", "unadjusted p of the pair"),
        "p_adjusted": _s("number", "p adjusted for multiple pairs (correction)"),
        "correction": _s("text", "the multiple-comparison correction and, for Bonferroni, its factor (the pairs of subgroups with enough values)"),
        "omnibus_p": _s("number", "p of the omnibus test across subgroups (zhang2020_subgroup_labs)"),
        "note": COMMON["note"]},
    "zhang2020_subgroup_categorical": {
        "variable": _s("text", "the clinical category column"), "n": _s("integer", "patients with a value"),
        "counts (0-100/101-200/>200)": _s("text", "per category, its counts in the three subgroups "
                                                  "(category: a/b/c; ...)"),
        "test": COMMON["test"], "statistic": _s("number", "chi-square, or the Fisher statistic note names"),
        "p_value": COMMON["p_value"], "note": COMMON["note"]},
    "zhang2020_correlations": {
        "score": _s("text", "the score column"), "lab": _s("text", "the lab"),
        "n": _s("integer", "complete pairs"), "test": COMMON["test"],
        "coefficient_name": _s("text", "which coefficient (rho)"),
        "coefficient": _s("number", "correlation coefficient (-1 to 1)"),
        "p_value": COMMON["p_value"], "note": COMMON["note"]},
    "zhang2020_lung_side": _compared({"comparison": _s("text", "what is compared")}, ("right", "left"), "lung",
                                     "score points"),
    "zhang2020_levels": _compared({"comparison": _s("text", "what is compared")}, LEVELS, "axial level",
                                  "score points"),
    "zhang2020_before_after": {
        "variable": COMMON["variable"], "n_pairs": _s("integer", "complete before/after pairs"),
        "median_iqr_before": _s("text", "median [Q1, Q3] before, as text; the numbers: median_before, q1_before, "
                                        "q3_before"),
        "median_iqr_after": _s("text", "median [Q1, Q3] after, as text; the numbers: median_after, q1_after, "
                                       "q3_after"),
        "mean_change": _s("number", f"mean change (after - before), {_ROW_UNIT}"),
        "sd_change": _s("number", "standard deviation of the change"),
        "test": COMMON["test"], "statistic": COMMON["statistic"], "p_value": COMMON["p_value"],
        "note": COMMON["note"], **_quartile_columns(("before", "after"), "the values")},
    "zhang2020_glucocorticoid_change": _compared({"variable": _s("text", "the change compared")},
                                                 ("glucocorticoid", "no_glucocorticoid"), "treatment group"),
    "zhang2020_partial_correlation": {
        "x": _s("text", "first variable"), "y": _s("text", "second variable"),
        "covariates": _s("text", "covariates adjusted for (comma-separated; 'none')"),
        "n": _s("integer", "complete rows"), "test": COMMON["test"],
        "coefficient": _s("number", "partial correlation coefficient (-1 to 1)"),
        "ci95_low": _s("number", "lower bound of its 95 % confidence interval (Fisher z)"),
        "ci95_high": _s("number", "upper bound of its 95 % confidence interval (Fisher z)"),
        "p_value": COMMON["p_value"], "note": COMMON["note"]},
    "li2020_period_comparison": (
        {"period_days": _s("text", "period since symptom onset, in days", "days",
                           "0-5, 6-10, 11-15, 16-20, >20"), "variable": COMMON["variable"]}
        | {f"mean_sd_{o}": _s("text", f"mean (SD) of the {o}s as text (3 and 2 significant digits); the numbers: "
                                      f"mean_{o}, sd_{o}") for o in OUTCOMES}
        | _compared({}, OUTCOMES, "outcome")
        | {f"{k}_{o}": _s("number", f"{word} of the {o}s, full precision ({_ROW_UNIT})")
           for o in OUTCOMES for k, word in (("mean", "mean"), ("sd", "standard deviation"))}),
    "li2020_mixed_model": {
        "variable": COMMON["variable"], "n_obs": _s("integer", _MIXED_N_OBS),
        "n_patients": _s("integer", "patients in the model"), "term": _s("text", "the fixed effect"),
        "coef": _s("number", f"its estimate, {_ROW_UNIT}"), "se": _s("number", "its standard error"), **_CI,
        "p_value": _s("number", "p of the term's Wald z test (two-sided, normal approximation; the test column), not "
                                "rounded; empty when the model was not fitted (note says why)"),
        "random_intercept_var": _s("number", "variance of the random intercept"),
        "reference": _s("text", "the reference level of the model"), "note": COMMON["note"],
        "test": _s("text", "the test of p_value: 'Wald z (normal approximation), REML' (statsmodels MixedLM fitted "
                           "by REML, the estimate over its standard error against the normal distribution); empty "
                           "when the model was not fitted")},
    "li2020_mixed_model_tests": {
        "variable": COMMON["variable"], "n_obs": _s("integer", _MIXED_N_OBS),
        "n_patients": _s("integer", "patients in the model"), "effect": _s("text", "the effect tested jointly"),
        "test": COMMON["test"], "statistic": _s("number", "Wald chi-square"), "p_value": COMMON["p_value"],
        "note": COMMON["note"]},
    "li2020_mortality_logistic": _LOGIT | {"auc": _s("number", "ROC AUC of the model's predictions (0-1)")},
    "li2020_predicted_mortality": {
        "period_days": _s("text", "period since symptom onset, in days", "days", "0-5, 6-10, 11-15, 16-20, >20"),
        "score_band": _s("text", "the score band"), "band_rule": _s("text", "which values the band holds"),
        "predicted_at_score": _s("number", "the score at which mortality is predicted", "score points"),
        "mean_days_since_onset": _s("number", "the period's mean day since onset", "days"),
        "predicted_mortality": _s("number", "predicted probability of death (0-1)"),
        "n_observed": _s("integer", "patient-periods observed in the band"),
        "deaths_observed": _s("integer", "deaths among them"), "note": COMMON["note"]},
    "li2020_kendall": {
        "score": _s("text", "the score column"), "lab": _s("text", "the lab"), "n": _s("integer", "complete pairs"),
        "test": COMMON["test"], "coefficient_name": _s("text", "which coefficient (tau)"),
        "coefficient": _s("number", "Kendall tau-b (-1 to 1)"), "p_value": COMMON["p_value"],
        "note": COMMON["note"], "n_patients": _s("integer", "patients in those pairs"),
        "tau_patient_means": _s("number", "Kendall tau-b on each patient's mean score and mean lab (one pair per "
                                "patient; -1 to 1)"),
        "p_patient_means": _s("number", "its two-sided p: each patient counted once (the pooled p_value treats a "
                              "patient's serial scans as independent, too small)")},
}

#: Columns generated from a run's score, labs and covariates: (table, regex, spec maker of the match and the units).
PATTERNS: dict[str, list[tuple[str, object]]] = {
    "zhang2020_before_after_patients": [
        (r"patient_id", lambda m, u: COMMON["patient_id"]),
        (r"days_between", lambda m, u: _s("integer", "days between the before and the after scan", "days")),
        (r"(.+)_(before|after|change)", lambda m, u: _s(
            "number", {"before": f"{m[1]} at the scan before treatment",
                       "after": f"{m[1]} at the follow-up scan",
                       "change": f"change in {m[1]} (after - before)"}[m[2]]
            + ("; empty when the lab is not in the data" if m[1] not in u else ""), u.get(m[1], ""))),
        (r"glucocorticoid", lambda m, u: _s("integer", "glucocorticoid given (1) or not (0); empty when the clinical "
                                                     "table has no glucocorticoid column", allowed="0, 1")),
        (r"(.+)", lambda m, u: _s("number", f"clinical covariate {m[1]} (partial correlation); empty when the "
                                            "clinical table lacks it", u.get(m[1], ""))),
    ],
}


def _score_units() -> dict[str, str]:
    from scoring.stats.report import SCORE_UNITS

    return {k: ("%" if v[0] == "percentage points" else v[0]) for k, v in SCORE_UNITS.items()} | {"age": "years"}


def describe_column(table: str, column: str, specs: Mapping[str, Mapping[str, Spec]] | None = None,
                    units: Mapping[str, str] | None = None) -> Spec | None:
    """The codebook entry of ``table``'s ``column``; None when the codebook does not know it."""
    specs = STATS_COLUMNS if specs is None else specs
    if column in specs.get(table, {}):
        return specs[table][column]
    u = {**_score_units(), **(units or {})}
    for pattern, make in PATTERNS.get(table, []):
        m = re.fullmatch(pattern, column)
        if m:
            return make(m, u)  # type: ignore[operator]
    return None


def codebook(tables: Mapping[str, pd.DataFrame], specs: Mapping[str, Mapping[str, Spec]] | None = None,
             units: Mapping[str, str] | None = None,
             describe: object = None) -> pd.DataFrame:
    """One row per (table, column) of ``tables``, in their column order (:data:`CODEBOOK_COLUMNS`). A column the
    codebook does not know gets an empty type and the description 'not described' (a test keeps that from
    happening). ``describe``: a function (table, column) -> Spec or None tried first."""
    rows = []
    for name, df in tables.items():
        for col in df.columns:
            spec = describe(name, col) if describe is not None else None  # type: ignore[operator]
            spec = spec or describe_column(name, str(col), specs, units)
            kind, unit, allowed, text = spec or ("", "", "", "not described")
            rows.append({"table": name, "column": col, "type": kind, "unit": unit, "allowed": allowed,
                         "description": text})
    return pd.DataFrame(rows, columns=CODEBOOK_COLUMNS)


def conform(name: str, df: pd.DataFrame, specs: Mapping[str, Mapping[str, Spec]] | None = None) -> pd.DataFrame:
    """``df`` with every column of its table (:data:`STATS_COLUMNS`) in their order, a column it lacks added empty
    (a table that was not run, a category without patients); a column the codebook does not know is kept, last."""
    specs = STATS_COLUMNS if specs is None else specs
    if name not in specs:
        return df
    cols = list(specs[name])
    if list(df.columns) == cols:
        return df
    extra = [c for c in df.columns if c not in specs[name]]
    return df.reindex(columns=cols + extra)
