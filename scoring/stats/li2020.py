"""li2020: serial CT in survivors vs non-survivors, by period since symptom onset.

Tables: scores per period compared between outcomes (Mann-Whitney U), a linear mixed model
(score or lab ~ outcome x period, random intercept per patient; the score on every scan, a lab on every
sample), logistic regression of death on score and days since onset with a predicted-mortality table (the
study's Table 3), Kendall tau of serial scores with labs. Figure: mean score (SD) vs mean days since onset per
period, by outcome.
"""

from __future__ import annotations

import logging
import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd

from scoring.stats import binning, compare, report
from scoring.stats.cohort import Cohort

log = logging.getLogger(__name__)

OUTCOMES = ("survivor", "non-survivor")
KENDALL_LABS = ("nlr", "neutrophil_pct", "lymphocyte_pct", "lymphocyte_count", "d_dimer", "ldh", "esr")
SCORE_BANDS = ((0, 4), (5, 9), (10, 14), (15, 19), (20, 24))  # the study's bands of the six-zone score (0-24)
SCALE_MAX = {"six_zone_total": 24, "zhang900_total": 900, "lobar20_total": 20, "lobar25_total": 25,
             "percent_opacity": 100, "percent_high_opacity": 100, "percent_well_aerated": 100}


class Band(NamedTuple):
    """A score band of the predicted-mortality table: ``lo <= score < hi`` (the last band: ``score >= lo``).

    ``label`` is what the table shows, ``mid`` the score at which the mortality is predicted."""

    lo: float
    hi: float
    label: str
    mid: float


def _bound(v: float) -> str:
    return f"{v:.6g}"


def score_bands(score: str, values: pd.Series | None = None) -> tuple[Band, ...]:
    """Five bands over the score's scale.

    six-zone total: the study's bands 0-4, 5-9, 10-14, 15-19, 20-24 of whole scores; band ``a-b`` holds
    ``a <= score < b + 1`` (a period's mean of 4.5 is in 0-4) and the prediction is at its middle whole score
    (2, 7, ...). Any other score (continuous, such as percent_opacity, or a period's mean): five equal bands over
    0 to the scale's maximum (:data:`SCALE_MAX`; for a score of unknown range the largest value, rounded up),
    labelled ``0-<20``, ``20-<40``, ..., ``80-100`` (half-open, the last closed at the maximum, no label beyond
    it); the prediction is at the band's midpoint."""
    if score == "six_zone_total":
        return tuple(Band(lo, hi + 1, f"{lo}-{hi}", (lo + hi) / 2) for lo, hi in SCORE_BANDS)
    top = SCALE_MAX.get(score)
    if top is None:
        v = pd.to_numeric(values, errors="coerce") if values is not None else pd.Series(dtype=float)
        top = float(np.ceil(v.max())) if v.notna().any() and v.max() > 0 else 1.0
    edges = [float(top) * i / 5 for i in range(6)]  # i * top / 5: 22.2, not linspace's 22.200000000000003
    return tuple(Band(float(lo), float(hi), f"{_bound(lo)}-{_bound(hi)}" if i == 4 else f"{_bound(lo)}-<{_bound(hi)}",
                      float((lo + hi) / 2)) for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)))


def _as_bands(bands: tuple) -> tuple[Band, ...]:
    """Bands given as (lo, hi) pairs of whole scores (``lo-hi`` holds ``lo <= score < hi + 1``) or as :class:`Band`."""
    return tuple(b if isinstance(b, Band) else Band(b[0], b[1] + 1, f"{b[0]}-{b[1]}", (b[0] + b[1]) / 2)
                 for b in bands)


def _serial(cohort: Cohort, score: str, labs: list[str], within: str) -> pd.DataFrame:
    s = cohort.scans.dropna(subset=["period"])
    s = s[s["patient_id"].isin(cohort.clinical.loc[cohort.clinical.get("outcome").notna(), "patient_id"])] \
        if "outcome" in cohort.clinical.columns else s.iloc[0:0]
    # a scan without a score (failed, or zones it cannot see) lends nothing to its period: not its day to the mean
    # of days, and with last/first the score, its day and its labs all come from the one scan picked
    s = s.dropna(subset=[score])
    if "outcome" not in cohort.clinical.columns:  # api.run_cohort refuses this; a direct call gets the table's note
        return pd.DataFrame(columns=["patient_id", "period", score, "days_since_onset", *labs, "outcome"])
    per = binning.one_per_bin(s, "period", [score, "days_since_onset", *labs], how=within, date_col="study_date",
                              whole_rows=True)
    per = per.merge(cohort.clinical[["patient_id", "outcome"]], on="patient_id")
    per["period"] = pd.Categorical(per["period"], categories=binning.PERIOD_LABELS, ordered=True)
    return per


def period_comparison(per: pd.DataFrame, score: str, min_n: int) -> pd.DataFrame:
    """Per period: score and days from onset to CT, survivors vs non-survivors (Mann-Whitney U)."""
    rows = []
    for period in binning.PERIOD_LABELS:
        d = per[per["period"] == period]
        for var in (score, "days_since_onset"):
            groups = {o: d.loc[d["outcome"] == o, var] for o in OUTCOMES}
            row = {"period_days": period, "variable": var}
            numbers = {}  # the numbers of mean_sd_<outcome>, after the other columns
            for o, v in groups.items():
                desc = compare.describe(v)
                row[f"mean_sd_{o}"] = "" if desc["n"] == 0 else f"{compare._num(desc['mean'])} ({compare._num(desc['sd'])})"
                numbers |= {f"mean_{o}": desc["mean"], f"sd_{o}": desc["sd"]}
            row.update(compare.compare_groups(groups, test="mannwhitney", min_n=min_n))
            rows.append(row | numbers)
    return pd.DataFrame(rows)


#: The ``test`` of the mixed model's fixed effects: statsmodels MixedLM's p of each term.
MIXED_TERM_TEST = "Wald z (normal approximation), REML"
#: What a lab's mixed model is fitted on (the ``note`` of its rows).
LAB_SAMPLES_NOTE = ("each lab sample once (one per patient and day, same-day values averaged), its period from its own "
                    "date, of the patients of the score's model")


def mixed_models(cohort: Cohort, score: str, labs: list[str], min_n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Linear mixed model per variable: value ~ non_survivor * period, random intercept per patient.

    The score's model uses every scan (repeated measures), not one per period, its period from the scan's date. A
    lab's model uses the cohort's lab samples themselves (``cohort.labs``: one per patient and day), each once, its
    period from the sample's own date: not the labs matched to scans, which left out the samples no scan was near
    and counted twice one matched to two scans (a numerical audit). Patients with an outcome only. Returns (fixed
    effects, joint Wald tests).
    """
    import statsmodels.formula.api as smf

    if "outcome" not in cohort.clinical.columns:
        return pd.DataFrame(), pd.DataFrame()
    outcome = cohort.clinical[["patient_id", "outcome"]]
    base = cohort.scans.dropna(subset=["period"]).merge(outcome, on="patient_id")
    base = base[base["outcome"].notna()]
    samples = cohort.labs if "period" in cohort.labs.columns else pd.DataFrame(columns=["patient_id", "period"])
    # the patients of the score's model only: a patient without a scored scan (failed, not yet scored, every scan
    # excluded at QC review) entered the lab models through the clinical table's labs (a review)
    scored = base.dropna(subset=[score]) if score in base.columns else base.iloc[:0]
    samples = samples[samples["patient_id"].isin(set(scored["patient_id"]))]
    samples = samples.dropna(subset=["period"]).merge(outcome, on="patient_id")
    samples = samples[samples["outcome"].notna()]
    fixed, tests = [], []
    for var in [score, *labs]:
        src = base if var == score else samples
        if var not in src.columns:  # a lab without any sample dated on or after onset
            src = src.assign(**{var: np.nan})
        d = src[["patient_id", "outcome", "period", var]].dropna()
        basis = "" if var == score else LAB_SAMPLES_NOTE
        d = d.assign(non_survivor=(d["outcome"] == "non-survivor").astype(float),
                     period=d["period"].astype(str), value=d[var].astype(float))
        levels = [p for p in binning.PERIOD_LABELS if p in set(d["period"])]
        info = {"variable": var, "n_obs": len(d), "n_patients": d["patient_id"].nunique()}
        cells = d.groupby(["period", "non_survivor"]).size()
        empty_cells = [f"{p}/{'non-survivor' if g else 'survivor'}" for p in levels for g in (0.0, 1.0)
                       if cells.get((p, g), 0) == 0]
        if d["patient_id"].nunique() < 2 * min_n or d["non_survivor"].nunique() < 2 or len(levels) < 2:
            fixed.append(info | {"term": "", "note": "not fitted: too few patients, outcomes or periods"})
            continue
        if d["value"].nunique() < 2:  # the model "fits" a constant with p ~ 1e-45 for every term
            fixed.append(info | {"term": "", "note": "not fitted: all values identical"})
            continue
        if empty_cells:
            fixed.append(info | {"term": "", "note": f"not fitted: no observations in {', '.join(empty_cells)}"})
            continue
        formula = f"value ~ non_survivor * C(period, Treatment('{levels[0]}'))"
        try:
            with warnings.catch_warnings(record=True) as caught:  # reported in the table instead
                warnings.simplefilter("always")
                res = smf.mixedlm(formula, d, groups=d["patient_id"]).fit(reml=True)
        except (np.linalg.LinAlgError, ValueError) as exc:
            fixed.append(info | {"term": "", "note": f"not fitted: {exc}"})
            continue
        names = [n for n in res.fe_params.index]
        ci = res.conf_int().loc[names]
        note = "" if res.converged else "did not converge"
        messages = [note, *(str(w.message).splitlines()[0] for w in caught), basis]
        note = "; ".join(m for m in dict.fromkeys(messages) if m)
        for n_ in names:
            label = n_.replace(f"C(period, Treatment('{levels[0]}'))[T.", "period[")
            fixed.append(info | {"term": label, "coef": res.fe_params[n_], "se": res.bse_fe[n_],
                                 "ci_low": ci.loc[n_, 0], "ci_high": ci.loc[n_, 1], "p_value": res.pvalues[n_],
                                 "random_intercept_var": float(res.cov_re.iloc[0, 0]),
                                 "reference": f"survivor, period {levels[0]} days", "note": note,
                                 "test": MIXED_TERM_TEST})
        groups = {"outcome (non-survivor vs survivor, at reference period)": ["non_survivor"],
                  "period": [n_ for n_ in names if n_.startswith("C(period")],
                  "outcome x period interaction": [n_ for n_ in names if ":" in n_]}
        for label, terms in groups.items():
            if not terms:
                continue
            R = np.zeros((len(terms), len(res.params)))
            for k, t in enumerate(terms):
                R[k, list(res.params.index).index(t)] = 1.0
            w = res.wald_test(R, scalar=True)
            tests.append(info | {"effect": label, "test": f"Wald chi-square (df={len(terms)})",
                                 "statistic": float(w.statistic), "p_value": float(w.pvalue), "note": note})
    return pd.DataFrame(fixed), pd.DataFrame(tests)


def _tests_of_unfitted(fixed: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """The joint Wald tests plus, for each variable whose model was not fitted, a row that says why (a table without
    a column when no model was fitted)."""
    if fixed.empty:
        return tests if not tests.empty else pd.DataFrame({"note": ["not run: no mixed model (no variable to model)"]})
    tested = set(tests["variable"]) if "variable" in tests else set()
    rows = []
    for _, r in fixed[~fixed["variable"].isin(tested)].drop_duplicates("variable").iterrows():
        why = str(r.get("note", "") or "")
        why = why.removeprefix("not fitted: ")
        rows.append({"variable": r["variable"], "n_obs": r["n_obs"], "n_patients": r["n_patients"],
                     "note": f"not run: model not fitted ({why})" if why else "not run: model not fitted"})
    if not rows:
        return tests
    return pd.concat([tests, pd.DataFrame(rows)], ignore_index=True) if not tests.empty else pd.DataFrame(rows)


def mortality_logistic(per: pd.DataFrame, score: str, bands: tuple | None = None
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Death ~ score + days since onset on one row per patient and period (cluster-robust SE).

    Returns (odds ratio table with AUC, predicted mortality by score band x period with observed counts).
    A band holds ``lo <= score < hi`` (the last band everything from ``lo`` up; ``band_rule`` says it): a period's
    mean of two scans (4.5) falls in a band, not between two. Default bands: :func:`score_bands`; (lo, hi) pairs
    of whole scores are bands ``lo <= score < hi + 1``.
    """
    bands = _as_bands(bands or score_bands(score, per[score] if score in per else None))
    from sklearn.metrics import roc_auc_score

    d = per.assign(death=(per["outcome"] == "non-survivor").astype(float)).dropna(subset=[score, "days_since_onset"])
    tab, res, note = compare.logistic(d, "death", [score, "days_since_onset"], cluster="patient_id")
    tab["test"] = "binary logistic regression (one row per patient x period)"
    tab.insert(tab.columns.get_loc("term") + 1, "per", [report.per_unit(t) for t in tab["term"]])
    pred_rows = []
    if res is not None:
        tab["auc"] = roc_auc_score(d["death"], res.predict())
    for period in binning.PERIOD_LABELS:
        dp = d[d["period"] == period]
        day = float(dp["days_since_onset"].mean()) if len(dp) else np.nan
        for i, band in enumerate(bands):
            last = i == len(bands) - 1
            cell = dp[(dp[score] >= band.lo) & ((dp[score] < band.hi) | last)]
            p = np.nan
            if res is not None and np.isfinite(day):
                x = pd.DataFrame({"const": [1.0], score: [band.mid], "days_since_onset": [day]})
                p = float(res.predict(x)[0])
            rule = f"{score} >= {_bound(band.lo)}" if last else f"{_bound(band.lo)} <= {score} < {_bound(band.hi)}"
            pred_rows.append({"period_days": period, "score_band": band.label, "band_rule": rule,
                              "predicted_at_score": band.mid, "mean_days_since_onset": day,
                              "predicted_mortality": p, "n_observed": len(cell),
                              "deaths_observed": int(cell["death"].sum()),
                              "note": note or "prediction at band midpoint (predicted_at_score) and the period's mean day"})
    return tab, pd.DataFrame(pred_rows)


def kendall(cohort: Cohort, score: str, labs: list[str], min_n: int) -> pd.DataFrame:
    """Kendall tau-b between serial scores and labs matched to the same scan (all scans pooled, as li2020 did), and
    the same on each patient's means (one pair per patient: ``tau_patient_means``, ``p_patient_means``).

    The pooled p treats a patient's serial scans as independent: with 8 scans each of 20 patients, score and lab
    unrelated, it fell below 0.05 in 43 % of simulated cohorts (a numerical audit, 2026-12-06); the patient means
    count each patient once."""
    rows = []
    for lab in labs:
        if lab not in cohort.scans.columns:
            rows.append({"score": score, "lab": lab, "n": 0, "test": "Kendall tau-b", "note": "no such lab in the data"})
            continue
        r = compare.correlate(cohort.scans[score], cohort.scans[lab], method="kendall", min_n=min_n)
        d = cohort.scans[["patient_id", score, lab]].copy()
        d[score] = pd.to_numeric(d[score], errors="coerce")
        d[lab] = pd.to_numeric(d[lab], errors="coerce")
        d = d.dropna(subset=[score, lab])
        r["n_patients"] = d["patient_id"].nunique()
        means = d.groupby("patient_id")[[score, lab]].mean()
        per_patient = compare.correlate(means[score], means[lab], method="kendall", min_n=min_n)
        r["tau_patient_means"], r["p_patient_means"] = per_patient["coefficient"], per_patient["p_value"]
        r["note"] = r["note"] or (f"serial scans pooled, as li2020 did: p treats a patient's scans as independent (too "
                                  f"small when patients have several; p_patient_means counts each patient once); labs "
                                  f"within {cohort.window_days} day(s) of the scan")
        rows.append({"score": score, "lab": lab} | r)
    return pd.DataFrame(rows)


def figure_score_by_period(per: pd.DataFrame, score: str, path: str) -> None:
    """Mean score (SD error bars) vs mean days since onset per period, one line per outcome; the outcomes differ in
    colour (Okabe-Ito), marker and line style, so that they stay apart in greyscale."""
    from scoring.stats.report import FIGURE_DPI, FIGURE_WIDTH, GROUP_STYLES, axis_label, new_figure

    fig = new_figure(figsize=(FIGURE_WIDTH, 4))
    ax = fig.subplots()
    for outcome, style in zip(OUTCOMES, GROUP_STYLES, strict=True):
        g = per[per["outcome"] == outcome].groupby("period", observed=True)
        m = g.agg(day=("days_since_onset", "mean"), mean=(score, "mean"), sd=(score, "std"), n=(score, "size"))
        ax.errorbar(m["day"], m["mean"], yerr=m["sd"], capsize=3, markersize=5, **style,
                    label=f"{outcome} (n={per.loc[per['outcome'] == outcome, 'patient_id'].nunique()})")
    ax.set_xlabel("days since symptom onset (period mean)")
    ax.set_ylabel(f"{axis_label(score)}\nmean (SD)")
    ax.set_title("li2020: CT score by period since onset")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)


def run(cohort: Cohort, score: str = "six_zone_total", within_bin: str = "mean", labs: list[str] | None = None,
        min_n: int = compare.MIN_N) -> tuple[dict[str, pd.DataFrame], dict[str, object]]:
    """All li2020 tables; returns (tables, figure makers keyed by file name)."""
    labs = [lab for lab in (labs if labs is not None else KENDALL_LABS)]
    present = [lab for lab in labs if lab in cohort.scans.columns]
    per = _serial(cohort, score, present, within_bin)
    tables: dict[str, pd.DataFrame] = {}
    if per.empty:
        tables["li2020_period_comparison"] = pd.DataFrame(
            {"note": ["not run: no scored scan on or after symptom onset of a patient with an outcome "
                      "(needs 'outcome' and 'onset_date' in the clinical table)"]})
        return tables, {}
    tables["li2020_period_comparison"] = period_comparison(per, score, min_n)
    fe, wald = mixed_models(cohort, score, present, min_n)
    tables["li2020_mixed_model"] = fe
    tables["li2020_mixed_model_tests"] = _tests_of_unfitted(fe, wald)
    tables["li2020_mortality_logistic"], tables["li2020_predicted_mortality"] = mortality_logistic(per, score)
    tables["li2020_kendall"] = kendall(cohort, score, labs, min_n)
    figures = {"li2020_score_by_period.png": lambda p: figure_score_by_period(per, score, p)}
    return tables, figures
