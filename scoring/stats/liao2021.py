"""liao2021: eight weeks after symptom onset; persistent vs recovery lesions and IL-6.

Persistent lesions: six-zone total >= 5 on the week-8 scan (days 49-55 after onset); recovery: < 5.
Patients without a week-8 scan stay in the tables as ``unclassified`` with the reason.
Tables: lesion group per patient and counts; weekly trajectories (median, IQR) of the score and labs
by lesion group and by severity with between-group tests per week; logistic regression of persistent
lesions on admission values (odds ratios, 95 % CI); ROC AUC of admission IL-6; timing of the lab peak
relative to the CT-score peak per patient.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import stats

from scoring.stats import binning, compare, report, schema
from scoring.stats.cohort import Cohort

log = logging.getLogger(__name__)

TRAJECTORY_LABS = ("il6", "crp", "lymphocyte_count", "neutrophil_count", "d_dimer", "ldh", "il10")
COVARIATES = ("il6", "age", "lymphocyte_count")


def lesion_groups(cohort: Cohort, score: str, threshold: float, within: str) -> pd.DataFrame:
    """One row per clinical patient: week-8 score, group (persistent/recovery/unclassified), reason."""
    s = cohort.scans[cohort.scans["week"] == binning.N_WEEKS]
    # the week-8 value of each patient and the day of the very scan it comes from (a later scan of the week
    # without a score does not lend its day to an earlier one's score)
    w8 = binning.one_per_bin(s, "week", [score, "days_since_onset"], how=within, date_col="study_date",
                             whole_rows=True).set_index("patient_id")
    w8_unscored = s.sort_values("study_date", kind="stable").groupby("patient_id")["days_since_onset"].last()
    has_scan = set(cohort.scans["patient_id"])
    ex = cohort.excluded_scans
    w8_excluded = set() if ex is None else set(ex.loc[ex["week"] == binning.N_WEEKS, "patient_id"])
    rows = []
    for _, p in cohort.clinical.iterrows():
        pid = p["patient_id"]
        row = {"patient_id": pid, "week8_score": np.nan, "week8_day": np.nan, "group": "unclassified", "reason": ""}
        if pid in w8.index and pd.notna(w8.loc[pid, score]):
            v = float(w8.loc[pid, score])
            row.update(week8_score=v, week8_day=float(w8.loc[pid, "days_since_onset"]),
                       group="persistent" if v >= threshold else "recovery")
        elif pid in w8_unscored.index:  # week-8 scans, none with a score (zones the scan cannot see or without lung): not recovery
            row.update(week8_day=float(w8_unscored[pid]), reason="week-8 score missing (zones the scan cannot see or without lung)")
        elif pid in cohort.excluded_patients:
            row["reason"] = "every scan excluded at QC review"
        elif pid in w8_excluded:  # its week-8 scan(s) excluded: not a patient without follow-up imaging
            row["reason"] = "week-8 scan excluded at QC review"
        elif pid not in has_scan:
            row["reason"] = "no scored scan"
        elif "onset_date" not in cohort.clinical.columns or pd.isna(p.get("onset_date")):
            row["reason"] = "no onset date"
        elif p.get("outcome") == "non-survivor":
            row["reason"] = "no week-8 scan (non-survivor)"
        else:
            row["reason"] = "no week-8 scan (days 49-55 after onset)"
        rows.append(row)
    return pd.DataFrame(rows)


def _weekly(cohort: Cohort, score: str, labs: list[str], within: str) -> pd.DataFrame:
    """One value per patient and week for the score (from scans) and each lab (from the lab table)."""
    sc = binning.one_per_bin(cohort.scans, "week", [score], how=within, date_col="study_date",
                             whole_rows=True).drop(columns="study_date")
    out = sc
    if labs and "week" in cohort.labs.columns:
        lb = binning.one_per_bin(cohort.labs, "week", labs, how=within, date_col="date").drop(columns="date")
        out = sc.merge(lb, on=["patient_id", "week"], how="outer")
    return out


def trajectories(weekly: pd.DataFrame, groups: pd.DataFrame, variables: list[str], grouping: str,
                 min_n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Median/IQR per week and group, and the between-group test per week.

    Every level of the grouping (persistent, recovery; mild, moderate, severe: :data:`GROUP_LEVELS`) has its rows
    and its columns, n 0 and empty cells for a level no patient of the cohort has, so that two sites' tables stack.
    The test is run across the levels the cohort has (Mann-Whitney U for two, Kruskal-Wallis for three), and of those
    across the levels with at least ``min_n`` values that week when two or more have (as zhang2020's subgroups):
    ``test`` names it and ``note`` names the levels left out."""
    d = weekly.merge(groups[["patient_id", grouping]], on="patient_id").dropna(subset=[grouping])
    if grouping == "group":
        d = d[d["group"] != "unclassified"]
    levels = list(GROUP_LEVELS[grouping])
    present = [lv for lv in levels if lv in set(d[grouping])]
    absent = [lv for lv in levels if lv not in present]
    desc, tests = [], []
    for var in variables:
        for week in range(1, binning.N_WEEKS + 1):
            dw = d[d["week"] == week]
            vals = {lv: dw.loc[dw[grouping] == lv, var] for lv in levels}
            for lv, v in vals.items():
                desc.append({"grouping": grouping, "variable": var, "week": week, "group": lv}
                            | {k: x for k, x in compare.describe(v).items() if k in ("n", "median", "q1", "q3")})
            head = {"grouping": grouping, "variable": var, "week": week}
            if len(present) >= 2:
                row = compare.compare_groups({lv: vals[lv] for lv in present}, test="auto", min_n=min_n)
                big = [lv for lv in present if vals[lv].notna().sum() >= min_n]
                if 2 <= len(big) < len(present):
                    # as zhang2020's subgroups: across the levels with enough values that week (Mann-Whitney U for
                    # two), the others named; a week with 2 severe patients went untested for mild vs moderate
                    small = [lv for lv in present if lv not in big]
                    kept = compare.compare_groups({lv: vals[lv] for lv in big}, test="auto", min_n=min_n)
                    row.update({k: kept[k] for k in ("test", "statistic", "p_value", "effect_size",
                                                     "effect_size_name")})
                    row["note"] = "; ".join(x for x in (
                        f"across {', '.join(big)} only: fewer than {min_n} values in {', '.join(small)}",
                        kept["note"]) if x)
            else:
                row = compare.compare_groups(vals, test="kruskal" if len(levels) > 2 else "mannwhitney",
                                             min_n=min_n)
                row.update(test="", statistic=np.nan, p_value=np.nan, effect_size=np.nan, effect_size_name="",
                           note=f"not tested: fewer than two {grouping} levels in the cohort")
            if absent:  # the level's columns stay, with n 0 and empty cells
                row.update({f"n_{lv}": 0 for lv in absent} | {f"median_iqr_{lv}": "" for lv in absent})
                if len(present) >= 2:
                    row["note"] = "; ".join(x for x in (
                        f"no {', '.join(absent)} patient in the cohort: tested across {', '.join(present)} only",
                        row["note"]) if x)
            tests.append(head | _group_order(row, levels))
    return pd.DataFrame(desc), pd.DataFrame(tests)


#: The levels of each grouping of the weekly tables (clinical ``severity``: :data:`scoring.stats.schema.SEVERITIES`).
GROUP_LEVELS = {"group": ("persistent", "recovery"), "severity": schema.SEVERITIES}


def _group_order(row: dict[str, object], levels: list[str]) -> dict[str, object]:
    """A compare_groups row with every level's columns in the order of ``levels`` (n and median [IQR] first, the
    test's columns, then median, q1, q3), whichever levels were tested."""
    first = [c for lv in levels for c in (f"n_{lv}", f"median_iqr_{lv}")]
    last = [f"{k}_{lv}" for lv in levels for k in ("median", "q1", "q3")]
    out = {c: row.get(c, np.nan) for c in first}
    out |= {c: v for c, v in row.items() if c not in first and c not in last}
    return out | {c: row.get(c, np.nan) for c in last}


def admission_values(cohort: Cohort, analytes: list[str], window_days: int) -> pd.DataFrame:
    """First value of each analyte within ``window_days`` of admission (or, for a patient without an admission
    date, the first value at all; docs/clinical_schema.md)."""
    lb = cohort.labs
    if lb.empty:
        return pd.DataFrame({"patient_id": cohort.clinical["patient_id"]})
    lb = lb[lb["days_since_admission"].isna() | (lb["days_since_admission"].abs() <= window_days)]
    lb = lb.sort_values(["patient_id", "date"])
    cols = [a for a in analytes if a in lb.columns]
    first = lb.groupby("patient_id")[cols].first().reset_index() if cols else lb[["patient_id"]].drop_duplicates()
    return cohort.clinical[["patient_id"]].merge(first, on="patient_id", how="left")


def roc_table(y: pd.Series, x: pd.Series, label: str, n_boot: int = 1000, seed: int = 0, unit: str = ""
              ) -> pd.DataFrame:
    """ROC AUC (sklearn) with a stratified percentile-bootstrap 95 % CI and the Youden cut-off (in ``unit``, the
    predictor's unit, given in ``cutoff_unit``).

    The cut-off is for ``label >= cut-off`` counting as positive (persistent lesions), as the AUC is. When the AUC is
    below 0.5 lower values go with the outcome: the cut-off is then the Youden one of the reverse rule,
    ``label <= cut-off`` (its sensitivity and specificity are those of that rule), and ``cutoff_rule`` and the note
    say so. No cut-off (never sklearn's infinite first threshold) when no threshold beats chance (AUC 0.5)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    ok = y.notna() & x.notna()
    y, x = y[ok].astype(int).to_numpy(), x[ok].astype(float).to_numpy()
    row: dict[str, object] = {"predictor": label, "n_persistent": int(y.sum()), "n_recovery": int((1 - y).sum()),
                              "auc": np.nan, "ci_low": np.nan, "ci_high": np.nan, "youden_cutoff": np.nan,
                              "cutoff_unit": unit, "cutoff_rule": "", "sensitivity": np.nan, "specificity": np.nan,
                              "method": f"roc_auc_score; stratified bootstrap percentile CI ({n_boot} resamples, "
                                        f"seed {seed}: the same tables on every run)", "note": ""}
    if y.sum() < 2 or (1 - y).sum() < 2:
        row["note"] = "not computed: fewer than 2 patients in a group"
        return pd.DataFrame([row])
    auc = roc_auc_score(y, x)
    rng = np.random.default_rng(seed)
    xp, xn = x[y == 1], x[y == 0]
    bp = xp[rng.integers(0, xp.size, (n_boot, xp.size))]
    bn = xn[rng.integers(0, xn.size, (n_boot, xn.size))]
    # AUC = U / (n1 n2); scipy computes U for all resamples at once
    boots = stats.mannwhitneyu(bp, bn, axis=1, method="asymptotic").statistic / (xp.size * xn.size)
    row.update(auc=float(auc), ci_low=float(np.percentile(boots, 2.5)), ci_high=float(np.percentile(boots, 97.5)))
    lower = auc < 0.5  # lower values go with the outcome: the >= rule's best cut-off is sklearn's +inf
    fpr, tpr, thr = roc_curve(y, -x if lower else x)
    j = tpr - fpr
    k = int(np.argmax(j))
    if j[k] <= 0 or not np.isfinite(thr[k]):
        row["note"] = "no cut-off: no threshold separates the groups better than chance (Youden J <= 0)"
        return pd.DataFrame([row])
    cut = float(-thr[k] if lower else thr[k])
    row.update(youden_cutoff=cut, sensitivity=float(tpr[k]), specificity=float(1 - fpr[k]),
               cutoff_rule=f"{label} {'<=' if lower else '>='} cut-off counts as persistent")
    if lower:
        row["note"] = (f"AUC < 0.5: lower {label} goes with persistent lesions; the Youden cut-off is for the "
                       f"reverse rule {label} <= cut-off (AUC of that rule {1 - auc:.3g})")
    return pd.DataFrame([row])


def peak_day(days: pd.Series, values: pd.Series) -> tuple[float, int]:
    """(day of the peak, number of distinct days at the peak value). A maximum reached on several days (six-zone
    scores are whole numbers: ties are common) is a tied peak: its day is the mean of those distinct days (the
    midpoint of two), so that the rule favours neither the earliest nor the latest of them."""
    top = values.max()
    tied = np.unique(days[values == top].to_numpy(dtype=float))
    return float(tied.mean()), int(tied.size)


#: The peak-day rule, as the table note and docs/clinical_schema.md state it.
PEAK_RULE = ("a maximum reached on several days (a tied peak) is placed at the mean of those days "
             "(the midpoint of two)")


def peak_timing(cohort: Cohort, score: str, labs: list[str], min_points: int = 3, min_n: int = compare.MIN_N
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per patient: day of the lab peak vs day of the CT-score peak (weeks 1-8); summary per lab.

    lag = score-peak day - lab-peak day (positive: the lab peaks first). A tied peak (the maximum on several days)
    is placed at the mean of its days (:func:`peak_day`); the summary counts the patients with a tied score peak
    and with a tied lab peak. Summary: counts, median lag, Wilcoxon signed-rank test of lag = 0 and a sign
    (binomial) test of 'lab first' vs 'score first'.
    """
    sc = cohort.scans.dropna(subset=["week", score])
    per_patient, summary = [], []
    for lab in labs:
        if lab not in cohort.labs.columns:
            summary.append({"lab": lab, "n_patients": 0, "note": "no such lab in the data"})
            continue
        lb = cohort.labs.dropna(subset=["week", lab])
        lags, tied_score, tied_lab = [], 0, 0
        by_patient = dict(tuple(lb.groupby("patient_id")))  # one pass (a mask per patient was quadratic)
        for pid, s in sc.groupby("patient_id"):
            lp = by_patient.get(pid, lb.iloc[:0])
            if len(s) < min_points or len(lp) < min_points:
                continue
            d_score, k_score = peak_day(s["days_since_onset"], s[score])
            d_lab, k_lab = peak_day(lp["days_since_onset"], lp[lab])
            tied_score += k_score > 1
            tied_lab += k_lab > 1
            lags.append(d_score - d_lab)
            per_patient.append({"patient_id": pid, "lab": lab, "lab_peak_day": d_lab, "score_peak_day": d_score,
                                "lag_days": d_score - d_lab, "lab_peak_precedes": d_score > d_lab,
                                "score_peak_tied_days": k_score, "lab_peak_tied_days": k_lab})
        lg = np.asarray(lags)
        row = {"lab": lab, "n_patients": int(lg.size), "n_lab_first": int((lg > 0).sum()),
               "n_same_day": int((lg == 0).sum()), "n_score_first": int((lg < 0).sum()),
               "n_tied_score_peak": tied_score, "n_tied_lab_peak": tied_lab,
               "median_iqr_lag_days": compare.fmt_median_iqr(lg),
               "wilcoxon_p": np.nan, "sign_test_p": np.nan,
               "test": "Wilcoxon signed-rank (lag = 0); exact binomial sign test (lab first vs score first)",
               "note": f"patients with >= {min_points} scans and >= {min_points} values in weeks 1-8; {PEAK_RULE}"}
        row |= compare.quartile_columns(lg, "lag_days")  # the numbers of median_iqr_lag_days
        if int((lg != 0).sum()) >= min_n:  # ties (lag 0) drop out of both tests
            row["wilcoxon_p"] = float(stats.wilcoxon(lg[lg != 0]).pvalue)
            row["sign_test_p"] = float(stats.binomtest(int((lg > 0).sum()), int((lg != 0).sum())).pvalue)
        else:
            row["note"] = f"not tested: fewer than {min_n} patients with a non-zero lag; {PEAK_RULE}"
        summary.append(row)
    cols = ["patient_id", "lab", "lab_peak_day", "score_peak_day", "lag_days", "lab_peak_precedes",
            "score_peak_tied_days", "lab_peak_tied_days"]
    return pd.DataFrame(per_patient, columns=cols), pd.DataFrame(summary)


def figure_trajectories(desc: pd.DataFrame, variables: list[str], path: str,
                        units: dict[str, str] | None = None) -> None:
    """Median (IQR band) per week by lesion group, one panel per variable (``units``: each lab's unit, for the axis
    labels); the groups differ in colour (Okabe-Ito), marker and line style."""
    from scoring.stats.report import FIGURE_DPI, FIGURE_WIDTH, GROUP_STYLES, axis_label, new_figure

    d = desc[desc["grouping"] == "group"]
    ncol = min(2, len(variables))
    nrow = int(np.ceil(len(variables) / ncol))
    fig = new_figure(figsize=(FIGURE_WIDTH, 3.0 * nrow + 0.4))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax, var in zip(axes.ravel(), variables, strict=False):
        for grp, style in zip(("persistent", "recovery"), GROUP_STYLES, strict=True):
            g = d[(d["variable"] == var) & (d["group"] == grp) & (d["n"] > 0)]
            ax.plot(g["week"], g["median"], label=grp, markersize=5, **style)
            ax.fill_between(g["week"], g["q1"], g["q3"], color=style["color"], alpha=0.15, linewidth=0)
        ax.set_xlabel("week since symptom onset", fontsize=8)
        ax.set_ylabel(f"{axis_label(var, units)}\nmedian (IQR band)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="best")
    for ax in axes.ravel()[len(variables):]:
        ax.axis("off")
    fig.suptitle("liao2021: trajectories by lesion group at week 8", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)


def run(cohort: Cohort, score: str = "six_zone_total", threshold: float = 5, within_bin: str = "last",
        labs: list[str] | None = None, covariates: list[str] | None = None, timing_labs: list[str] | None = None,
        admission_window_days: int = 2, min_n: int = compare.MIN_N) -> tuple[dict[str, pd.DataFrame], dict[str, object]]:
    """All liao2021 tables; returns (tables, figure makers keyed by file name)."""
    labs = [lab for lab in (labs if labs is not None else TRAJECTORY_LABS) if lab in cohort.labs.columns]
    # a covariate is a clinical column as spelled there, else a lab: its name in any accepted spelling ("IL-6")
    covariates = [c if c in cohort.clinical.columns or schema.canonical_analyte(c) not in schema.ANALYTES
                  else schema.canonical_analyte(c) for c in (covariates if covariates is not None else COVARIATES)]
    covariates = list(dict.fromkeys(covariates))
    tables: dict[str, pd.DataFrame] = {}
    groups = lesion_groups(cohort, score, threshold, within_bin)
    tables["liao2021_lesion_groups"] = groups
    counts = groups.groupby(["group", "reason"], dropna=False).size().rename("n").reset_index()
    counts["definition"] = f"{score} >= {threshold} on the week-8 scan = persistent; < {threshold} = recovery"
    tables["liao2021_group_counts"] = counts
    weekly = _weekly(cohort, score, labs, within_bin)
    groups_sev = groups.merge(cohort.clinical[["patient_id", *(["severity"] if "severity" in cohort.clinical else [])]],
                              on="patient_id")
    descs, tests = [], []
    for grouping in ["group", *(["severity"] if "severity" in groups_sev.columns else [])]:
        dsc, tst = trajectories(weekly, groups_sev, [score, *labs], grouping, min_n)
        descs.append(dsc)
        tests.append(tst)
    tables["liao2021_trajectories"] = pd.concat(descs, ignore_index=True)
    tables["liao2021_weekly_tests"] = pd.concat(tests, ignore_index=True)
    adm = admission_values(cohort, list(dict.fromkeys([c for c in covariates if c not in cohort.clinical] + ["il6"])),
                           admission_window_days)
    extra = [c for c in covariates if c in cohort.clinical.columns and c != "patient_id"]
    clin = cohort.clinical[["patient_id"]].assign(
        **{c: schema.numeric_column(cohort.clinical, c, "liao2021 covariate") for c in extra})
    model = groups.merge(adm, on="patient_id").merge(clin, on="patient_id")
    model = model[model["group"] != "unclassified"].assign(persistent=lambda x: (x["group"] == "persistent").astype(float))
    usable = [c for c in covariates if c in model.columns]
    missing = [c for c in covariates if c not in model.columns]
    tab, _res, _note = compare.logistic(model, "persistent", usable) if usable else (pd.DataFrame(), None, "")
    if missing:
        tab = pd.concat([tab, pd.DataFrame({"term": missing, "note": "not in the data"})], ignore_index=True)
    tab["test"] = "multivariable logistic regression, persistent vs recovery, admission values"
    if "term" in tab:  # what each odds ratio is per (per 1 pg/mL of il6)
        tab.insert(tab.columns.get_loc("term") + 1, "per", [report.per_unit(t, cohort.units) for t in tab["term"]])
    tables["liao2021_logistic"] = tab
    tables["liao2021_roc"] = roc_table(model["persistent"], model["il6"], "admission il6",
                                       unit=cohort.units.get("il6", "")) if "il6" in model \
        else pd.DataFrame({"predictor": ["admission il6"], "note": ["no il6 values in the data"]})
    timing_labs = [lab for lab in (timing_labs if timing_labs is not None else ["il6"])]
    tables["liao2021_peak_timing_patients"], tables["liao2021_peak_timing"] = peak_timing(cohort, score, timing_labs,
                                                                                        min_n=min_n)
    fig_vars = [score] + (["il6"] if "il6" in labs else [])
    desc = tables["liao2021_trajectories"]
    figures = {"liao2021_trajectories.png": lambda p: figure_trajectories(desc, fig_vars, p, cohort.units)}
    return tables, figures
