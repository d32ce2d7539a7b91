"""zhang2020: the 0-900 score at admission vs inflammatory markers, and change with treatment.

Tables: subgroups by admission score (0-100, 101-200, > 200) compared on labs (Kruskal-Wallis, then
pairwise Mann-Whitney with Bonferroni correction; ANOVA with LSD for variables declared normal; when a subgroup
has too few values and two are left, Mann-Whitney U, or Student's t for a normal lab, across those two) and on
categorical variables (chi-square, Fisher when an expected count is < 5); Spearman correlation of the
score with each lab; left vs right lung and score by level 1-5; before vs after treatment (Wilcoxon
signed-rank, paired t-test); glucocorticoid vs none on the change (Mann-Whitney); partial correlation
of the change in score with the change in each lab. Figure: admission score vs each lab.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from scoring.stats import compare, schema
from scoring.stats.cohort import Cohort
from scoring.zones import ZHANG_LEVELS

log = logging.getLogger(__name__)

SUBGROUPS = ("0-100", "101-200", ">200")
LABS = ("wbc", "lymphocyte_count", "neutrophil_count", "crp", "esr", "pct", "d_dimer", "ldh", "ferritin", "il6",
        "il10")
CATEGORICAL = ("sex", "severity", "glucocorticoid", "outcome")


def _value_word(column: str, value: object) -> str:
    """A covariate's value as the clinical table spells it: glucocorticoid 1/0 as yes/no, numbers without '.0'."""
    if column == "glucocorticoid" and value in (0, 1):
        return "yes" if value == 1 else "no"
    return f"{value:g}" if isinstance(value, (int, float, np.integer, np.floating)) else str(value)


def subgroup(score: pd.Series) -> pd.Series:
    """0-100, 101-200, > 200 (the study's subgroups of the 0-900 score)."""
    return pd.cut(score, [-np.inf, 100, 200, np.inf], labels=list(SUBGROUPS)).astype(object)


def admission_scans(cohort: Cohort, score: str) -> pd.DataFrame:
    """The first scored scan of each patient with its matched labs and clinical columns."""
    scans = cohort.scans.sort_values(["patient_id", "study_date"], kind="stable")  # same day: schema.SCAN_ORDER
    first = scans.dropna(subset=[score]).drop_duplicates("patient_id")
    # a patient whose first scan has no score (zones it cannot see) is kept with the first scan that has one
    later = set(first["patient_id"]) - set(scans.drop_duplicates("patient_id").dropna(subset=[score])["patient_id"])
    if later:
        note = (f"zhang2020: {len(later)} patient(s) whose first scan has no {score} (zones the scan cannot see or without lung) "
                f"are taken at their first scored scan")
        if note not in cohort.notes:
            cohort.notes.append(note)
        log.warning(note)
    first = first.merge(cohort.clinical.drop(columns=[c for c in ("onset_date", "admission_date")
                                                      if c in cohort.clinical]), on="patient_id", how="left")
    first["subgroup"] = subgroup(first[score])
    return first.reset_index(drop=True)


def subgroup_labs(adm: pd.DataFrame, labs: list[str], normal: set[str], min_n: int
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Omnibus test per lab across subgroups, then pairwise comparisons (scikit-posthocs)."""
    import scikit_posthocs as sp

    omni, pair = [], []
    for lab in labs:
        groups = {g: adm.loc[adm["subgroup"] == g, lab] for g in SUBGROUPS}
        test = "anova" if lab in normal else "kruskal"
        row = {"variable": lab} | compare.compare_groups(groups, test=test, min_n=min_n)
        big = {g: v for g, v in groups.items() if v.notna().sum() >= min_n}
        if len(big) < len(groups) and len(big) >= 2:
            # as the pairwise tests below: across the subgroups with enough values, the others named (a small
            # '>200' group in a mild cohort left the labs without any test); n and median [IQR] stay for all three
            small = [g for g in groups if g not in big]
            # two subgroups left: the two-sample test of the pairwise table (Mann-Whitney U; for a normal lab the
            # Student t-test, which is LSD's pooled-SD t on two groups), not Kruskal-Wallis / ANOVA on two groups,
            # whose (asymptotic) p differed from the pairwise p of the same comparison (a numerical audit)
            kept_test = test if len(big) > 2 else ("ttest" if lab in normal else "mannwhitney")
            kept = compare.compare_groups(big, test=kept_test, min_n=min_n)
            row.update({k: kept[k] for k in ("test", "statistic", "p_value", "effect_size", "effect_size_name")})
            row["note"] = "; ".join(x for x in (
                f"across {', '.join(big)} only: fewer than {min_n} values in {', '.join(small)}", kept["note"]) if x)
        omni.append(row)
        d = adm[["subgroup", lab]].dropna()
        sizes = d["subgroup"].value_counts()
        d = d[d["subgroup"].isin([g for g in SUBGROUPS if sizes.get(g, 0) >= min_n])]
        present = [g for g in SUBGROUPS if g in set(d["subgroup"])]
        if len(present) < 2:
            pair.append({"variable": lab, "note": f"pairwise tests not run: fewer than two subgroups with >= {min_n} values"})
            continue
        values = {g: d.loc[d["subgroup"] == g, lab].to_numpy(dtype=float) for g in present}
        pairs = [(a, b) for i, a in enumerate(present) for b in present[i + 1:]]
        # a pair whose values are all one number has nothing to test (Mann-Whitney gave p = 1, the LSD t = 0 / 0);
        # LSD's pooled SD is that of all subgroups: zero when no subgroup varies (t = x / 0)
        untestable = {(a, b): "not tested: all values identical" for a, b in pairs
                      if np.ptp(np.concatenate([values[a], values[b]])) == 0}
        if lab in normal:
            test, corr = "LSD (pooled-SD t-tests after ANOVA)", "none (LSD)"
            if all(np.ptp(v) == 0 for v in values.values()):
                untestable = {pr: untestable.get(pr, "not tested: no variance within the subgroups (pooled SD 0)")
                              for pr in pairs}
        else:
            # the factor is the number of pairs among the subgroups tested: 1 when a subgroup has too few values, and
            # then p_adjusted equals p_value (a numerical audit: the column said "Bonferroni" alone)
            test, corr = "Mann-Whitney U (two-sided)", f"Bonferroni (x{len(pairs)}: {len(pairs)} pair{'s' * (len(pairs) > 1)})"
        if len(untestable) < len(pairs):
            if lab in normal:
                p = p_adj = sp.posthoc_ttest(d, val_col=lab, group_col="subgroup", pool_sd=True, p_adjust=None)
            else:
                p = sp.posthoc_mannwhitney(d, val_col=lab, group_col="subgroup", p_adjust=None)
                p_adj = sp.posthoc_mannwhitney(d, val_col=lab, group_col="subgroup", p_adjust="bonferroni")
        for a, b in pairs:
            why = untestable.get((a, b), "")
            pair.append({"variable": lab, "group_a": a, "group_b": b, "n_a": int(sizes[a]), "n_b": int(sizes[b]),
                         "test": test, "p_value": np.nan if why else float(p.loc[a, b]),
                         "p_adjusted": np.nan if why else float(p_adj.loc[a, b]),
                         "correction": corr, "omnibus_p": row["p_value"], "note": why})
    return pd.DataFrame(omni), pd.DataFrame(pair)


def categories(values: pd.Series) -> tuple[pd.Series, str]:
    """A text column's values as categories: surrounding spaces and runs of spaces do not count, nor does case
    ('yes', 'Yes', 'YES ' are one category, shown in its most common spelling, of a tie the first in the table);
    an empty cell is missing (NaN), not a category. Returns the values and a note naming the spellings merged
    ('' when none were). Values that are not text (numbers, NaN) are kept as they are."""
    text = values.map(lambda v: " ".join(v.split()) if isinstance(v, str) else v)
    text = text.map(lambda v: np.nan if isinstance(v, str) and v == "" else v)
    is_text = text.map(lambda v: isinstance(v, str))
    if not is_text.any():
        return text, ""
    key = text[is_text].map(str.casefold)
    label, merged = {}, []
    for k, spell in text[is_text].groupby(key, sort=False):
        counts = spell.value_counts(sort=False)
        label[k] = next(x for x in dict.fromkeys(spell) if counts[x] == counts.max())
        raw = list(dict.fromkeys(values[spell.index]))
        if len(raw) > 1:
            merged.append(", ".join(repr(x) for x in raw) + f" counted as {label[k]!r}")
    out = text.copy()
    out[is_text] = key.map(label)
    note = ("categories compared ignoring case and extra spaces: " + "; ".join(merged)) if merged else ""
    return out, note


def subgroup_categorical(adm: pd.DataFrame, variables: list[str]) -> pd.DataFrame:
    """Chi-square (or Fisher) of each categorical clinical variable across the subgroups. Categories are compared
    ignoring case and extra spaces (:func:`categories`); a patient without a value (an empty cell) is left out of n
    and counted in ``note``."""
    rows = []
    for var in variables:
        values, merged = categories(adm[var]) if var in adm.columns else (None, "")
        if values is None or values.notna().sum() == 0:
            rows.append({"variable": var, "note": "not in the data"})
            continue
        d = pd.DataFrame({"subgroup": adm["subgroup"], var: values}).dropna()
        missing = int((adm["subgroup"].notna() & values.isna()).sum())
        if var == "glucocorticoid":
            d[var] = d[var].map({1.0: "yes", 0.0: "no"})
        tab = pd.crosstab(d[var], d["subgroup"]).reindex(columns=list(SUBGROUPS), fill_value=0)
        counts = "; ".join(f"{lv}: " + "/".join(str(int(x)) for x in tab.loc[lv]) for lv in tab.index)
        row = {"variable": var, "n": int(tab.to_numpy().sum()),
               "counts (" + "/".join(SUBGROUPS) + ")": counts} | compare.categorical(tab)
        left = f"{missing} patient(s) without a {var} value (empty cell) left out" if missing else ""
        row["note"] = "; ".join(x for x in (row.get("note", ""), merged, left) if x)
        rows.append(row)
    return pd.DataFrame(rows)


def correlations(adm: pd.DataFrame, score: str, labs: list[str], min_n: int) -> pd.DataFrame:
    """Spearman rho of the admission score with each lab."""
    return pd.DataFrame([{"score": score, "lab": lab} | compare.correlate(adm[score], adm[lab], "spearman", min_n)
                         for lab in labs])


def _complete_sum(values: pd.Series) -> float:
    """The sum of unit scores, NaN when any of them is missing (a unit the scan could not see is not a 0)."""
    values = pd.to_numeric(values, errors="coerce")
    return float(values.sum()) if values.notna().all() else np.nan


def lungs_and_levels(cohort: Cohort, adm: pd.DataFrame, min_n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Left vs right lung (t-test as in the study, and paired Wilcoxon) and the score by level 1-5."""
    if cohort.zones is None:
        note = pd.DataFrame({"note": ["not run: no zones.csv next to scans.csv (nor with scores given as a DataFrame)"]})
        return note, note
    z = cohort.zones[(cohort.zones["system"] == "zhang900") & cohort.zones["scan_id"].isin(set(adm["scan_id"]))]
    if z.empty:
        note = pd.DataFrame({"note": ["not run: no zhang900 rows in zones.csv for the admission scans"]})
        return note, note
    # a lung or level with a unit the scan could not see (missing, NaN) has no total: not 0
    side = z.groupby(["scan_id", "lung"])["unit_score"].agg(_complete_sum).unstack()
    rows = [{"comparison": "right vs left lung"}
            | compare.compare_groups({"right": side.get("right"), "left": side.get("left")}, "ttest", min_n)]
    pr = compare.paired(side.get("left"), side.get("right"), min_n)[0]
    rows.append({"comparison": "right vs left lung (paired, same scan)", "n_right": pr["n_pairs"],
                 "n_left": pr["n_pairs"], "median_iqr_right": pr["median_iqr_after"],
                 "median_iqr_left": pr["median_iqr_before"], "test": pr["test"], "statistic": pr["statistic"],
                 "p_value": pr["p_value"], "note": pr["note"],
                 **{f"{k}_{side_}": pr[f"{k}_{when}"] for side_, when in (("right", "after"), ("left", "before"))
                    for k in ("median", "q1", "q3")}})
    level = z.groupby(["scan_id", "unit"])["unit_score"].agg(_complete_sum).unstack()
    # every level has its columns (n 0 when zones.csv has none of it); levels of another name come after them
    lv = {u: level[u] if u in level.columns else pd.Series(dtype=float)
          for u in [*ZHANG_LEVELS, *sorted(set(level.columns) - set(ZHANG_LEVELS))]}
    levels = pd.DataFrame([{"comparison": "score by level (both lungs), L1 suprasternal notch .. L5 diaphragm"}
                           | compare.compare_groups(lv, "kruskal", min_n)])
    return pd.DataFrame(rows), levels


#: A before/after pair further than this from the follow-up day (``followup_days``) is named in a note.
FOLLOWUP_TOLERANCE_DAYS = 7


#: the change's rounding (to 12 significant digits), shared with the paired tests (compare.paired)
_round_sig = compare.round_sig


def before_after(cohort: Cohort, score: str, labs: list[str], followup_days: int, min_gap_days: int,
                 clinical_columns: list[str] | None = None) -> pd.DataFrame:
    """One row per patient: the scan before treatment and the follow-up scan, with labs and the change.

    Before: the last scored scan on or before ``treatment_date`` (the first scored scan when there is none or no
    treatment date). After: among scored scans at least ``min_gap_days`` later, the one nearest to
    before + ``followup_days``. Scans without a score (zones the scan cannot see) are not picked: an unscored end
    dropped the patient from the score's paired tests although a scored scan qualified. Of two scans on one day
    the earlier (``schema.SCAN_ORDER``: by series_time) is taken, as for the admission scan.
    """
    s = cohort.scans.sort_values(["patient_id", "study_date"], kind="stable").dropna(subset=[score])
    tdate = cohort.clinical.set_index("patient_id").get("treatment_date")
    rows = []
    cols = [score, *labs]
    for pid, g in s.groupby("patient_id"):
        before = g.iloc[0]
        if tdate is not None and pd.notna(tdate.get(pid)):
            on_or_before = g[g["study_date"] <= tdate[pid]]
            if len(on_or_before):  # the last day on or before treatment; of two scans that day, the earlier one
                before = on_or_before[on_or_before["study_date"] == on_or_before["study_date"].iloc[-1]].iloc[0]
        later = g[(g["study_date"] - before["study_date"]).dt.days >= min_gap_days]
        if later.empty:
            continue
        gap = ((later["study_date"] - before["study_date"]).dt.days - followup_days).abs()
        after = later.loc[gap.idxmin()]
        row = {"patient_id": pid, "days_between": int((after["study_date"] - before["study_date"]).days)}
        for c in cols:  # a lab the data lacks keeps its columns, empty
            row[f"{c}_before"], row[f"{c}_after"] = before.get(c, np.nan), after.get(c, np.nan)
            # to 12 significant digits: float subtraction made one change -0.9909999999999997 and another
            # -0.9910000000000001, so ranks broke a tie the patients CSV does not show (a numerical audit)
            row[f"{c}_change"] = _round_sig(row[f"{c}_after"] - row[f"{c}_before"])
        rows.append(row)
    # every column even without a pair, so that each test says "not tested: fewer than N complete pairs"
    out = pd.DataFrame(rows, columns=["patient_id", "days_between",
                                      *[f"{c}_{k}" for c in cols for k in ("before", "after", "change")]])
    wanted = clinical_columns if clinical_columns is not None else ["glucocorticoid", "age"]
    # every covariate asked for has its column, empty when the clinical table lacks it (a site without
    # glucocorticoid data writes the same columns as one with it)
    wanted = [c for c in dict.fromkeys(wanted) if c != "patient_id"]
    clin = cohort.clinical[["patient_id"]].assign(
        **{c: schema.numeric_column(cohort.clinical, c, "zhang2020 partial-correlation covariate")
           if c in cohort.clinical.columns else np.nan for c in wanted})
    return out.merge(clin, on="patient_id", how="left")


def no_labs_reason(cohort: Cohort, requested: list[str]) -> str:
    """'not run: ...' for a lab table without any lab to test: no lab values at all, or none of those asked for."""
    if not cohort.analytes:
        return "not run: no lab values (no lab table given, or none of its values belongs to a clinical patient)"
    return (f"not run: none of the labs {', '.join(requested) or '(none)'} is in the lab table "
            f"(labs there: {', '.join(cohort.analytes)})")


def run(cohort: Cohort, score: str = "zhang900_total", labs: list[str] | None = None,
        normal_labs: list[str] | None = None, categorical: list[str] | None = None, followup_days: int = 14,
        min_gap_days: int = 5, partial_covariates: list[str] | None = None, partial_method: str = "spearman",
        min_n: int = compare.MIN_N) -> tuple[dict[str, pd.DataFrame], dict[str, object]]:
    """All zhang2020 tables; returns (tables, figure makers keyed by file name)."""
    requested_labs = list(labs if labs is not None else LABS)
    labs = [lab for lab in requested_labs if lab in cohort.scans.columns]
    tables: dict[str, pd.DataFrame] = {}
    adm = admission_scans(cohort, score)
    counts = adm["subgroup"].value_counts().reindex(list(SUBGROUPS), fill_value=0).rename("n").reset_index()
    counts.columns = ["subgroup", "n"]
    counts["definition"] = f"{score} on each patient's first scan"
    tables["zhang2020_subgroups"] = counts
    tables["zhang2020_subgroup_labs"], tables["zhang2020_pairwise"] = subgroup_labs(
        adm, labs, set(normal_labs or []), min_n)
    tables["zhang2020_subgroup_categorical"] = subgroup_categorical(adm, list(categorical or CATEGORICAL))
    tables["zhang2020_correlations"] = correlations(adm, score, labs, min_n)
    tables["zhang2020_lung_side"], tables["zhang2020_levels"] = lungs_and_levels(cohort, adm, min_n)
    requested = list(partial_covariates if partial_covariates is not None else ["glucocorticoid", "age"])
    absent = [c for c in requested if c not in cohort.clinical.columns]
    # the columns of every lab asked for, whether the data has it or not (the tests below: the labs it has)
    ba = before_after(cohort, score, list(dict.fromkeys(requested_labs)), followup_days, min_gap_days,
                      ["glucocorticoid", *requested])
    tables["zhang2020_before_after_patients"] = ba
    far = ba[(ba["days_between"] - followup_days).abs() > FOLLOWUP_TOLERANCE_DAYS]
    if len(far):  # a longitudinal cohort's scan months later is the nearest one: pooled with the 14-day pairs
        note = (f"zhang2020 before/after: {len(far)} of {len(ba)} pair(s) are more than {FOLLOWUP_TOLERANCE_DAYS} "
                f"days from the {followup_days}-day follow-up (days_between {int(far['days_between'].min())}-"
                f"{int(far['days_between'].max())}; zhang2020_before_after_patients.csv names them): the nearest "
                "scan was taken; set --followup-days, or leave those scans out, if they are not the follow-up meant")
        if note not in cohort.notes:
            cohort.notes.append(note)
        log.warning(note)
    rows = []
    for var in [score, *labs]:
        if f"{var}_before" not in ba:
            continue
        for r in compare.paired(ba[f"{var}_before"], ba[f"{var}_after"], min_n):
            rows.append({"variable": var} | r)
    tables["zhang2020_before_after"] = pd.DataFrame(rows)
    gc_rows, pc_rows = [], []
    covars = [c for c in requested if c in cohort.clinical.columns and c != "patient_id"]
    absent_note = f"covariate(s) not in the clinical table, left out: {', '.join(absent)}" if absent else ""
    for var in [score, *labs]:
        ch = f"{var}_change"
        if ch not in ba:
            continue
        if "glucocorticoid" in cohort.clinical.columns:
            groups = {"glucocorticoid": ba.loc[ba["glucocorticoid"] == 1, ch],
                      "no_glucocorticoid": ba.loc[ba["glucocorticoid"] == 0, ch]}
            gc_rows.append({"variable": f"change in {var} (after - before)"}
                           | compare.compare_groups(groups, "mannwhitney", min_n))
        if var == score:
            continue
        d = ba[[f"{score}_change", ch, *covars]].dropna()
        # a covariate with one value on these rows (every patient got glucocorticoids) cannot be adjusted for: it is
        # left out of the model, on the same rows, and the note says so (the row was NaN without a word)
        constant = {c: d[c].iloc[0] for c in covars if len(d) and d[c].nunique() < 2}
        used = [c for c in covars if c not in constant]
        left_note = "; ".join(f"{c} constant (all {_value_word(c, v)}): left out" for c, v in constant.items())
        names = {f"{score}_change": f"change in {score}", ch: f"change in {var}"}
        row = {"x": names[f"{score}_change"], "y": names[ch], "covariates": ", ".join(used) or "none",
               "n": len(d), "test": f"partial correlation ({partial_method})", "coefficient": np.nan,
               "ci95_low": np.nan, "ci95_high": np.nan, "p_value": np.nan}
        flat = [names[c] for c in names if len(d) and d[c].nunique() < 2]
        if len(d) < max(min_n, len(used) + 5):
            why = "not tested: too few complete pairs"
        elif flat:
            why = f"not tested: {' and '.join(flat)} {'is' if len(flat) == 1 else 'are'} constant"
        else:
            pc = compare.partial_correlation(d, f"{score}_change", ch, covars, partial_method,
                                             drop_constant_covariates=True)
            why = pc["note"]
            row.update(coefficient=pc["r"], ci95_low=pc["ci_low"], ci95_high=pc["ci_high"], p_value=pc["p_value"])
        row["note"] = "; ".join(x for x in (why, left_note, absent_note) if x)
        pc_rows.append(row)
    tables["zhang2020_glucocorticoid_change"] = pd.DataFrame(gc_rows) if gc_rows else pd.DataFrame(
        {"note": ["not run: no 'glucocorticoid' column in the clinical table"]})
    tables["zhang2020_partial_correlation"] = pd.DataFrame(pc_rows)
    if not labs:  # the lab tables came out without a column: one line that says why
        why = no_labs_reason(cohort, requested_labs)
        for name in ("zhang2020_subgroup_labs", "zhang2020_pairwise", "zhang2020_correlations",
                     "zhang2020_partial_correlation"):
            if tables[name].empty:
                tables[name] = pd.DataFrame({"note": [why]})
    corr = tables["zhang2020_correlations"]
    figures = {"zhang2020_score_vs_labs.png": lambda p: figure_score_vs_labs(adm, score, labs, corr, p, cohort.units)}
    return tables, figures


def figure_score_vs_labs(adm: pd.DataFrame, score: str, labs: list[str], corr: pd.DataFrame, path: str,
                         units: dict[str, str] | None = None) -> None:
    """Scatter of the admission score against each lab, Spearman rho and p in each panel title; each axis names
    its unit (``units``: each lab's unit)."""
    from scoring.stats.report import FIGURE_DPI, FIGURE_WIDTH, axis_label, new_figure

    labs = [lab for lab in labs if adm[lab].notna().any()] or ["(no labs)"]
    ncol = min(3, len(labs))
    nrow = int(np.ceil(len(labs) / ncol))
    fig = new_figure(figsize=(FIGURE_WIDTH, 2.4 * nrow + 0.4))
    axes = fig.subplots(nrow, ncol, squeeze=False)
    c = corr.set_index("lab") if "lab" in corr else pd.DataFrame()
    for i, (ax, lab) in enumerate(zip(axes.ravel(), labs, strict=False)):
        if lab in adm:
            ax.scatter(adm[lab], adm[score], s=12, alpha=0.7, color="#0072B2")
            r = c.loc[lab] if lab in c.index else None
            if r is not None and np.isfinite(r["coefficient"]):
                ax.set_title(f"{lab}\nrho={r['coefficient']:.2f}, p={r['p_value']:.2g}, n={r['n']}", fontsize=7)
            ax.set_xlabel(axis_label(lab, units), fontsize=7)
            if i % ncol == 0:  # the same score on every row
                ax.set_ylabel(axis_label(score), fontsize=7)
            ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(labs):]:
        ax.axis("off")
    fig.suptitle("zhang2020: admission score vs laboratory values (Spearman)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
