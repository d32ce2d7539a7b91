"""Time since symptom onset, week and period bins, one value per patient and bin, scan-lab matching."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from pipeline.errors import CTScoreError
from scoring.stats import schema

log = logging.getLogger(__name__)

#: li2020 periods since symptom onset (days, inclusive bounds); the last is open-ended.
PERIODS: tuple[tuple[str, int, float], ...] = (
    ("0-5", 0, 5), ("6-10", 6, 10), ("11-15", 11, 15), ("16-20", 16, 20), (">20", 21, np.inf),
)
PERIOD_LABELS = [p[0] for p in PERIODS]
N_WEEKS = 8


def week_since_onset(days: pd.Series) -> pd.Series:
    """Week 1 = days 0-6 after onset, ..., week 8 = days 49-55; other days give NaN."""
    w = np.floor(days.astype(float) / 7.0) + 1
    return w.where((days >= 0) & (w <= N_WEEKS))


def period_since_onset(days: pd.Series) -> pd.Series:
    """li2020 period label (0-5, 6-10, 11-15, 16-20, >20 days); negative or missing days give NaN."""
    out = pd.Series(pd.NA, index=days.index, dtype=object)
    for label, lo, hi in PERIODS:
        out[(days >= lo) & (days <= hi)] = label
    return pd.Categorical(out, categories=PERIOD_LABELS, ordered=True)


def add_time(df: pd.DataFrame, clinical: pd.DataFrame, date_col: str, id_col: str = "patient_id") -> pd.DataFrame:
    """Add ``days_since_onset``, ``days_since_admission``, ``week`` and ``period`` to rows with a date."""
    cols = [c for c in ("onset_date", "admission_date") if c in clinical.columns]
    out = df.merge(clinical[[id_col, *cols]].rename(columns={id_col: "_pid"}),
                   left_on="patient_id", right_on="_pid", how="left").drop(columns="_pid")
    if "onset_date" in out.columns:
        out["days_since_onset"] = (out[date_col] - out["onset_date"]).dt.days.astype(float)
    else:
        out["days_since_onset"] = np.nan
    if "admission_date" in out.columns:
        out["days_since_admission"] = (out[date_col] - out["admission_date"]).dt.days.astype(float)
    else:
        out["days_since_admission"] = np.nan
    out["week"] = week_since_onset(out["days_since_onset"])
    out["period"] = period_since_onset(out["days_since_onset"])
    return out.drop(columns=cols)


def one_per_bin(df: pd.DataFrame, bin_col: str, value_cols: list[str], how: str = "last",
                date_col: str = "date", whole_rows: bool = False) -> pd.DataFrame:
    """Reduce to one row per patient and bin: the ``last``/``first`` dated value, or ``mean``/``max``.

    ``whole_rows``: only the rows whose ``value_cols[0]`` is not empty count (a scan without a score lends nothing,
    not its day to a mean of days); with ``last``/``first`` every column comes from the one last (first) such row
    (one scan: its score, its day, its date). Without it each column takes its own last non-empty value (labs: each
    analyte its own last measurement)."""
    d = df.dropna(subset=[bin_col]).sort_values(["patient_id", date_col], kind="stable")
    if whole_rows:
        d = d.dropna(subset=[value_cols[0]])
    if whole_rows and how in ("last", "first"):
        g = d.groupby(["patient_id", bin_col], observed=True)
        picked = g.tail(1) if how == "last" else g.head(1)
        return picked[["patient_id", bin_col, *value_cols, date_col]].reset_index(drop=True)
    g = d.groupby(["patient_id", bin_col], observed=True)
    if how == "last":
        out = g[[*value_cols, date_col]].last()
    elif how == "first":
        out = g[[*value_cols, date_col]].first()
    elif how in ("mean", "max", "median"):
        out = g[value_cols].agg(how)
        out[date_col] = g[date_col].last()
    else:
        raise ValueError(f"within-bin rule must be last, first, mean, median or max, not {how!r}")
    return out.reset_index()


def labs_wide(labs: pd.DataFrame) -> pd.DataFrame:
    """Long labs -> one row per patient and date, one column per analyte (same-day values averaged; they are in one
    unit: BAD_LAB_DATA when a ``unit`` column gives an analyte two).

    Adds ``nlr`` (neutrophil / lymphocyte count) where both are present on the same day.
    """
    if labs.empty:
        return pd.DataFrame(columns=["patient_id", "date"])
    if "unit" in labs.columns:  # validate_labs leaves one unit per analyte; a frame built otherwise is checked here
        key = labs["unit"].map(schema._unit_key)
        units = key[key != ""].groupby(labs.loc[key != "", "analyte"]).nunique()
        if (units > 1).any():
            a = units[units > 1].index[0]
            raise CTScoreError("BAD_LAB_DATA", f"analyte {a!r} has values in more than one unit "
                               f"({sorted(set(labs.loc[(labs['analyte'] == a) & (key != ''), 'unit']))}): values of "
                               "different units are never averaged (schema.validate_labs keeps the expected one)")
    w = labs.pivot_table(index=["patient_id", "date"], columns="analyte", values="value", aggfunc="mean")
    w.columns.name = None
    w = w.reset_index()
    if {"neutrophil_count", "lymphocyte_count"} <= set(w.columns):
        lym = w["lymphocyte_count"].where(w["lymphocyte_count"] > 0)
        w["nlr"] = w["neutrophil_count"] / lym
    return w


def match_labs(events: pd.DataFrame, labs_w: pd.DataFrame, window_days: int = 1,
               date_col: str = "study_date", key: str = "scan_id") -> pd.DataFrame:
    """For each event row (a scan), the value of each analyte nearest in date within ``window_days``.

    Ties go to the earlier lab. Each analyte is matched on its own, so a scan can take CRP from the
    same day and IL-6 from the day before. Returns ``key`` + one column per analyte.
    """
    analytes = [c for c in labs_w.columns if c not in ("patient_id", "date")]
    base = events[[key, "patient_id", date_col]]
    if not analytes:
        return base[[key]].copy()
    m = base.merge(labs_w, on="patient_id", how="inner")
    m["_gap"] = (m["date"] - m[date_col]).dt.days
    m = m[m["_gap"].abs() <= window_days]
    m["_abs"] = m["_gap"].abs()
    out = base[[key]].copy()
    for a in analytes:
        sub = m.dropna(subset=[a]).sort_values([key, "_abs", "_gap"])
        best = sub.drop_duplicates(key)[[key, a]]
        out = out.merge(best, on=key, how="left")
    return out
