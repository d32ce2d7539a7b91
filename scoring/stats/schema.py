"""Read and validate the inputs of the statistics module: scores, clinical table, laboratory table.

Every refusal is a :class:`pipeline.errors.CTScoreError` whose message names the column, the line of
the file (header = line 1) and the offending value, so a researcher can fix the spreadsheet.
"""

from __future__ import annotations

import difflib
import functools
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import CTScoreError
from scoring import exclusions
from scoring.csv_input import read_csv_table

log = logging.getLogger(__name__)

OUTCOMES = ("survivor", "non-survivor")
SEVERITIES = ("mild", "moderate", "severe")
SEXES = ("M", "F")
_TRUE = {"1", "1.0", "yes", "y", "true", "t"}  # 1.0 / 0.0: a flag column with a gap, as pandas' to_csv writes it
_FALSE = {"0", "0.0", "no", "n", "false", "f"}

#: Canonical analyte names and the unit each is expected in (documentation + a logged warning when a
#: row carries another unit; values are never converted silently).
ANALYTES: dict[str, str] = {
    "lymphocyte_count": "10^9/L",
    "neutrophil_count": "10^9/L",
    "wbc": "10^9/L",
    "lymphocyte_pct": "%",
    "neutrophil_pct": "%",
    "crp": "mg/L",
    "esr": "mm/h",
    "pct": "ng/mL",
    "d_dimer": "mg/L FEU",
    "ldh": "U/L",
    "ferritin": "ng/mL",
    "il6": "pg/mL",
    "il10": "pg/mL",
}
#: How figures name an analyte, where its canonical name does not do (:func:`analyte_label`).
ANALYTE_LABELS = {"lymphocyte_count": "lymphocyte count", "neutrophil_count": "neutrophil count",
                  "lymphocyte_pct": "lymphocytes", "neutrophil_pct": "neutrophils", "pct": "procalcitonin",
                  "d_dimer": "D-dimer"}


def analyte_label(name: str) -> str:
    """An analyte as a figure names it: ``il6`` as IL-6, ``crp`` in capitals, ``d_dimer`` as D-dimer."""
    if name in ANALYTE_LABELS:
        return ANALYTE_LABELS[name]
    m = re.fullmatch(r"il(\d+)", name)
    if m:
        return f"IL-{m.group(1)}"
    return name.upper() if name.isalpha() and len(name) <= 3 else name.replace("_", " ")


def analyte_units(labs: pd.DataFrame | None) -> dict[str, str]:
    """The unit of each analyte of a checked lab table (:func:`validate_labs`): the expected one of
    :data:`ANALYTES` (values in another unit were left out, values without one are taken to be in it), else the unit
    most of its values carry ('' when none says)."""
    if labs is None or labs.empty or "analyte" not in labs.columns:
        return {}
    given = labs["unit"].astype(str).str.strip() if "unit" in labs.columns else pd.Series("", index=labs.index)
    units = {}
    for a in dict.fromkeys(labs["analyte"]):
        if a in ANALYTES:
            units[a] = ANALYTES[a]
            continue
        u = given[(labs["analyte"] == a) & ~given.map(_unit_key).eq("")]
        units[a] = str(u.value_counts().index[0]) if len(u) else ""
    return units


#: Spellings accepted for the canonical names (compared after lower-casing and removing spaces,
#: hyphens and underscores).
ALIASES: dict[str, str] = {
    "lymphocytes": "lymphocyte_count", "lym": "lymphocyte_count", "lymph": "lymphocyte_count",
    "lymphocytecount": "lymphocyte_count", "neutrophils": "neutrophil_count", "neu": "neutrophil_count",
    "neutrophilcount": "neutrophil_count", "whitebloodcells": "wbc", "leukocytes": "wbc",
    "lymphocytepct": "lymphocyte_pct", "lymphocytepercent": "lymphocyte_pct", "lym%": "lymphocyte_pct",
    "neutrophilpct": "neutrophil_pct", "neutrophilpercent": "neutrophil_pct", "neu%": "neutrophil_pct",
    "creactiveprotein": "crp", "procalcitonin": "pct", "ddimer": "d_dimer",
    "lactatedehydrogenase": "ldh", "interleukin6": "il6", "il6": "il6", "interleukin10": "il10",
    "il10": "il10",
    # blood-count analyser and LIS spellings (a trailing '#' marks the count, '%' the percentage: see
    # canonical_analyte)
    "lymphocyte": "lymphocyte_count", "lymphs": "lymphocyte_count", "alc": "lymphocyte_count",
    "absolutelymphocytecount": "lymphocyte_count", "lymphocytesabsolute": "lymphocyte_count",
    "lymphocyteabsolute": "lymphocyte_count", "neutrophil": "neutrophil_count",
    "anc": "neutrophil_count", "absoluteneutrophilcount": "neutrophil_count",  # not a bare 'NEUT' (count or %?)
    "neutrophilsabsolute": "neutrophil_count", "neutrophilabsolute": "neutrophil_count",
    "wbccount": "wbc", "whitebloodcellcount": "wbc", "whitecellcount": "wbc", "leukocytecount": "wbc",
    "leucocytes": "wbc", "leucocytecount": "wbc", "erythrocytesedimentationrate": "esr", "sedrate": "esr",
    "serumferritin": "ferritin", "pct": "pct", "crp": "crp",
}
#: Endings of a lab name that say it is the percentage (``Lymphocytes %``, ``NEUT%``, ``Lymphocytes (percent)``) or
#: the count (``LYMPH#``) of a blood-count analyte with a percentage twin.
_PCT_ENDINGS = ("%", "percentage", "percent", "pct")
_COUNT_ENDINGS = ("#", "count")
#: Stems that name a blood-count analyte only with an ending ('NEUT#', 'NEUT%'): a bare 'NEUT' may be either.
_COUNT_STEMS = {"neut": "neutrophil_count"}

CLINICAL_REQUIRED = ("patient_id",)
CLINICAL_OPTIONAL = ("scores_patient_id", "onset_date", "admission_date", "outcome", "severity", "age",
                     "sex", "glucocorticoid", "treatment_date")
LABS_REQUIRED = ("patient_id", "date", "analyte", "value")
LABS_OPTIONAL = ("unit",)
#: What a schema column is used for, said when a column of the table looks like a misspelling of it.
COLUMN_USE = {
    "scores_patient_id": "matching scans to patients (the pseudonymous id of scans.csv)",
    "onset_date": "weeks (liao2021) and periods (li2020) since onset",
    "admission_date": "admission labs (liao2021)",
    "outcome": "li2020, which requires it",
    "severity": "liao2021 trajectories, zhang2020",
    "age": "liao2021 logistic, zhang2020 partial correlation",
    "sex": "zhang2020 categorical",
    "glucocorticoid": "zhang2020 glucocorticoid vs none",
    "treatment_date": "zhang2020 before/after treatment",
    "unit": "the unit check of each lab value",
}
SCANS_REQUIRED = ("scan_id", "patient_id", "study_date", "six_zone_total", "zhang900_total")
#: The order of a cohort's scans: two scans of one patient on one day are earlier / later by ``series_time``
#: (HH:MM:SS, written by ctscore run since 0.2.0) when each scan of the day has one, else by scan_id
#: (:func:`order_scans`), never by the row order of scans.csv (sorted by scan_id, a salted hash: which scan counted
#: changed with the salt or a merge).
SCAN_ORDER = ["patient_id", "study_date", "series_time", "scan_id"]
#: Numeric columns of the pipeline's scans.csv: a value in them that is not a number is refused (file, line);
#: other columns are numbers when every value is one, else text.
SCANS_NUMERIC = ("six_zone_total", "zhang900_total", "lobar20_total", "lobar25_total", "lung_volume_ml_right",
                 "lung_volume_ml_left", "lesion_volume_ml", "lesion_volume_ml_right", "lesion_volume_ml_left",
                 "ggo_volume_ml", "faint_ggo_volume_ml", "consolidation_volume_ml", "percent_opacity",
                 "percent_high_opacity", "mean_lung_hu", "mean_lung_hu_right", "mean_lung_hu_left", "n_slices",
                 "slice_thickness_mm", "scan_above_lungs_mm", "scan_below_lungs_mm", "well_aerated_volume_ml",
                 "percent_well_aerated", "percent_low_attenuation", "lung_tissue_g", "lung_gas_ml",
                 *(f"{c}_{unit}" for c in ("hyperinflated", "normally_aerated", "poorly_aerated", "non_aerated")
                   for unit in ("volume_ml", "tissue_g")),
                 *(f"{m}_{side}" for m in ("ggo_volume_ml", "consolidation_volume_ml", "faint_ggo_volume_ml",
                                           "percent_opacity", "percent_high_opacity", "percent_well_aerated")
                   for side in ("right", "left")))
ZONES_REQUIRED = ("scan_id", "system", "lung", "unit", "unit_score")


def _bad(code: str, path: Path | None, column: str, line: int | None, value: object, why: str) -> CTScoreError:
    where = f"column '{column}'" + (f", line {line}" if line is not None else "")
    return CTScoreError(code, f"{where}: value {value!r} {why}", path)


#: Cells that spreadsheets, R and SPSS write for a missing value: refused in a typed column (a number, a date, a
#: category), with the hint to leave the cell empty (pd.read_csv turns some of them into NaN; ctscore reads text).
MISSING_MARKERS = frozenset({"na", "n/a", "n.a.", "nan", "none", "null", "nil", ".", "-", "--", "?", "missing",
                             "unknown", "#n/a"})


def _missing_hint(value: object) -> str:
    """``"; a missing value is an empty cell: leave the cell empty"`` for a missing-value marker ('NA', '-', ...)."""
    if str(value).strip().lower() in MISSING_MARKERS:
        return f" ({str(value).strip()!r} marks a missing value: leave the cell empty instead)"
    return ""


#: What each input is, for the message when its file is missing (INPUT_NOT_FOUND: exit code 4, as for `run`).
_INPUT_NAMES = {"BAD_CLINICAL_DATA": "clinical table (--clinical)", "BAD_LAB_DATA": "lab table (--labs)",
                "BAD_SCORES": "scores (--scores: a ctscore output folder or its scans.csv)"}


def _read_csv(path: str | Path, code: str) -> pd.DataFrame:
    """The table as text, row label + 2 = file line (:func:`scoring.csv_input.read_csv_table`: a trailing comma on
    every row, an unquoted decimal comma, a column named twice, another separator or encoding are refused or
    harmless, never shifted or dropped silently)."""
    path = Path(path)
    if not path.is_file():
        raise CTScoreError("INPUT_NOT_FOUND", f"{_INPUT_NAMES.get(code, 'input')} not found", path)
    what = _INPUT_NAMES.get(code, "input").split(" (")[0]
    return read_csv_table(path, code, what)


def _line_index(df: pd.DataFrame) -> pd.DataFrame:
    """Keep the row labels of :func:`_read_csv` (label + 2 = file line); other frames are renumbered 0..n-1."""
    idx = df.index
    if not (pd.api.types.is_integer_dtype(idx) and idx.is_unique and (len(idx) == 0 or idx.min() >= 0)):
        df = df.reset_index(drop=True)
    return df


def numeric_column(clinical: pd.DataFrame, column: str, use: str) -> pd.Series:
    """A clinical column used as a number (a covariate): its float values, or BAD_CLINICAL_DATA naming the line
    and value of the first entry that is not a number (it would otherwise drop the patient silently)."""
    col = clinical[column]
    if pd.api.types.is_numeric_dtype(col):
        return col.astype(float)
    text = col.astype(str).str.strip()
    num = pd.to_numeric(text.replace("", np.nan), errors="coerce")
    bad = num.isna() & (text != "") & col.notna()
    if bad.any():
        i = bad.idxmax()
        source = clinical.attrs.get("source")
        raise _bad("BAD_CLINICAL_DATA", Path(source) if source else None, column, int(i) + 2, col[i],
                   f"is not a number ({use} needs numbers; leave the cell empty when missing)")
    return num.astype(float)


def close_column(name: str, columns: object) -> str | None:
    """The column of ``columns`` that ``name`` looks like a misspelling of (difflib, case-insensitive), or None."""
    lower = {str(c).lower(): str(c) for c in columns}
    match = difflib.get_close_matches(str(name).lower(), list(lower), n=1, cutoff=0.8)
    return lower[match[0]] if match else None


def misspelling_hint(wanted: str, columns: object) -> str:
    """``" ('outcom' looks like a misspelling of 'outcome')"`` when a column of the table is close to ``wanted``."""
    near = close_column(wanted, [c for c in columns if c != wanted])
    return f" ({near!r} looks like a misspelling of {wanted!r})" if near else ""


def unknown_column_notes(df: pd.DataFrame, schema_columns: tuple[str, ...], table: str) -> list[str]:
    """A note (also logged) for each column that is not in the schema but closely matches a schema column the table
    lacks: ``onset_dat`` is kept as an extra column and ``onset_date`` counts as absent, which the user should know.
    Extra columns that match nothing are kept without a word (users carry their own columns)."""
    notes = []
    absent = [c for c in schema_columns if c not in df.columns]
    for c in df.columns:
        if c in schema_columns:
            continue
        near = close_column(c, absent)
        if near is None:
            continue
        use = COLUMN_USE.get(near)
        notes.append(f"{table}: column {c!r} is not a schema column; did you mean {near!r}? It is kept as an extra "
                     f"column and {near!r} counts as absent" + (f" (used for {use})" if use else ""))
        log.warning(notes[-1])
    return notes


def _require(df: pd.DataFrame, cols: tuple[str, ...], code: str, path: Path | None) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        hints = "".join(misspelling_hint(c, df.columns) for c in missing)
        raise CTScoreError(code, f"missing required column(s) {missing}{hints}; found {list(df.columns)}", path)


def _parse_dates(s: pd.Series, column: str, code: str, path: Path | None) -> pd.Series:
    """Parse YYYY-MM-DD or YYYYMMDD strings, also followed by a time of day (``2020-02-05 10:30``, ``...T10:30:00``,
    as laboratory systems export the sampling time: the analyses count days, so the time is checked and dropped);
    empty cells become NaT; anything else is refused."""
    texts = pd.Series([str(v).strip() for v in s], index=s.index, dtype=object)
    parsed = {v: _parse_date(v) for v in pd.unique(texts)}  # each distinct text once: 645k lab rows hold few days
    bad = {v for v, p in parsed.items() if v != "" and pd.isna(p)}
    if bad:
        i = texts.index[texts.isin(bad)][0]  # the first bad line of the file
        m = _DATE_TIME.fullmatch(texts[i])
        far = bool(m) and not 1678 <= int(m.group(1)[:4]) <= 2261
        raise _bad(code, path, column, int(i) + 2, s[i], "is a date outside the years 1678-2261 (a placeholder such "
                   "as 9999-12-31? leave the cell empty)" if far else "is not a date (use YYYY-MM-DD or YYYYMMDD, a "
                   "time of day after it is allowed)" + _missing_hint(s[i]))
    return pd.Series([parsed[v] for v in texts], index=s.index, dtype="datetime64[ns]")


def _parse_date(v: str) -> pd.Timestamp:
    """One stripped cell of :func:`_parse_dates`: its day, NaT for '' and for what is no date."""
    m = _DATE_TIME.fullmatch(v) if v else None
    if not m:
        return pd.NaT
    day, clock = m.group(1), m.group(2)
    parsed = pd.to_datetime(day, format="%Y%m%d" if len(day) == 8 else "%Y-%m-%d", errors="coerce")
    if not pd.isna(parsed) and not pd.Timestamp.min <= parsed <= pd.Timestamp.max:
        return pd.NaT  # 3020-01-30, 9999-12-31: no nanosecond timestamp holds them (they became 1750 and 1816)
    if clock is not None and not pd.isna(parsed):
        hour, minute, second = (float(x) for x in (clock.split(":") + ["0"])[:3])
        if not (hour < 24 and minute < 60 and second < 61):
            return pd.NaT
    return parsed


def _parse_times(s: pd.Series, code: str, path: Path | None) -> pd.Series:
    """``series_time`` as HH:MM:SS (a spreadsheet's re-save writes 8:05:00 for 08:05:00, which sorted as text after
    14:10:00); '' where empty; a value that is no time of day is refused naming its line."""
    out = []
    for i, raw in s.items():
        v = str(raw).strip()
        if v in ("", "nan", "NaT", "<NA>"):
            out.append("")
            continue
        m = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d*)?)?|(\d{2})(\d{2})(\d{2})?(?:\.\d*)?", v)
        parts = [int(g) if g else 0 for g in ((m.group(1), m.group(2), m.group(3)) if m and m.group(1) else
                                               (m.group(4), m.group(5), m.group(6)) if m else ())]
        if not m or not (parts[0] < 24 and parts[1] < 60 and parts[2] < 61):
            raise _bad(code, path, "series_time", int(i) + 2, raw, "is not a time of day (HH:MM:SS)")
        out.append(f"{parts[0]:02d}:{parts[1]:02d}:{min(parts[2], 59):02d}")
    return pd.Series(out, index=s.index, dtype=object)


def order_scans(scans: pd.DataFrame) -> pd.DataFrame:
    """The scans in :data:`SCAN_ORDER`: a patient's scans by date; two on one day by ``series_time`` when each of
    that day's scans has one, else (an old table, or times blanked by an anonymiser) by scan_id, never by the row
    order of the table."""
    if scans.empty or not {"patient_id", "study_date"} <= set(scans.columns):
        return scans
    keys = [c for c in SCAN_ORDER if c in scans.columns]
    if "series_time" not in scans.columns:
        return scans.sort_values(keys, kind="stable")
    scans = scans.assign(series_time=_parse_times(scans["series_time"].fillna("").astype(str), "BAD_SCORES",
                                                  None))  # as validate_scans writes them (a frame given as is)
    timed = scans["series_time"] != ""
    whole_day = timed.groupby([scans["patient_id"], scans["study_date"]], dropna=False).transform("all")
    return (scans.assign(_time=scans["series_time"].where(whole_day, ""))
            .sort_values([c if c != "series_time" else "_time" for c in keys], kind="stable").drop(columns="_time"))


#: A date (YYYY-MM-DD or YYYYMMDD) and an optional time of day (HH:MM or HH:MM:SS[.fff], after a space or a 'T').
_DATE_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}|\d{8})(?:[T ](\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(?:Z|[+-]\d{2}:?\d{2})?)?")


def _parse_numbers(s: pd.Series, column: str, code: str, path: Path | None,
                   lo: float | None = None, hi: float | None = None) -> pd.Series:
    out = pd.to_numeric(s.str.strip().replace("", np.nan), errors="coerce")
    bad = out.isna() & (s.str.strip() != "")
    if bad.any():
        i = bad.idxmax()
        raise _bad(code, path, column, int(i) + 2, s[i], "is not a number" + _missing_hint(s[i]))
    infinite = np.isinf(out)
    if infinite.any():  # "inf" parses as a number but no analysis can use it
        i = infinite.idxmax()
        raise _bad(code, path, column, int(i) + 2, s[i], "is not a finite number")
    if lo is not None and (out < lo).any():
        i = (out < lo).idxmax()
        raise _bad(code, path, column, int(i) + 2, s[i], f"is below {lo}")
    if hi is not None and (out > hi).any():
        i = (out > hi).idxmax()
        raise _bad(code, path, column, int(i) + 2, s[i], f"is above {hi}")
    return out.astype(float)


def _parse_choice(s: pd.Series, column: str, allowed: tuple[str, ...], code: str, path: Path | None,
                  aliases: dict[str, str] | None = None) -> pd.Series:
    lookup = {a.lower(): a for a in allowed} | {k.lower(): v for k, v in (aliases or {}).items()}
    out = []
    for i, raw in s.items():
        v = str(raw).strip()
        if v == "":
            out.append(None)
            continue
        if v.lower() not in lookup:
            raise _bad(code, path, column, int(i) + 2, raw, f"is not one of {', '.join(allowed)}" + _missing_hint(raw))
        out.append(lookup[v.lower()])
    return pd.Series(out, index=s.index, dtype=object)


def _parse_flag(s: pd.Series, column: str, code: str, path: Path | None) -> pd.Series:
    out = []
    for i, raw in s.items():
        v = str(raw).strip().lower()
        if v == "":
            out.append(np.nan)
        elif v in _TRUE:
            out.append(1.0)
        elif v in _FALSE:
            out.append(0.0)
        else:
            raise _bad(code, path, column, int(i) + 2, raw, "is not a yes/no flag (use 1/0, yes/no, true/false)"
                       + _missing_hint(raw))
    return pd.Series(out, index=s.index, dtype=float)


#: The first whole number a float64 cannot hold exactly: 2**53 + 1 reads as 2**53 (16 digits and more).
EXACT_FLOAT_LIMIT = 2**53


def _looks_like_ids(text: pd.Series, num: pd.Series) -> bool:
    """Whether an all-number column of text is ids rather than a quantity: a value with leading zeros ('007'), or one
    of 2**53 and more (an 18-digit hospital number), whose digits a float would lose (110101199001010017 and
    ...016 are one float64: the scans of one patient would get another's clinical row). Such a column stays text."""
    stripped = text.str.strip()
    return bool(stripped.str.match(r"[+-]?0\d").any() or (num.abs() >= EXACT_FLOAT_LIMIT).any())


def validate_clinical(df: pd.DataFrame, path: str | Path | None = None) -> pd.DataFrame:
    """Check and type a clinical table (one row per patient). Returns a new, typed DataFrame.

    Unknown extra columns are kept: numeric ones can be used as covariates; one whose numbers are ids (leading zeros,
    or 16+ digits a float would round: :func:`_looks_like_ids`) stays text, so that ``--id-column`` matches every
    digit.
    """
    code = "BAD_CLINICAL_DATA"
    p = Path(path) if path is not None else None
    df = _line_index(df.copy())
    for c in df.columns:
        df[c] = df[c].astype(str) if df[c].dtype == object else df[c].astype(str).replace("nan", "")
    _require(df, CLINICAL_REQUIRED, code, p)
    ids = df["patient_id"].str.strip()
    if (ids == "").any():
        i = int((ids == "").idxmax())
        raise _bad(code, p, "patient_id", i + 2, df["patient_id"][i], "is empty")
    dup = ids.duplicated()
    if dup.any():
        i = int(dup.idxmax())
        raise _bad(code, p, "patient_id", i + 2, ids[i], "appears more than once (one row per patient)")
    df["patient_id"] = ids
    if "scores_patient_id" in df.columns:
        df["scores_patient_id"] = df["scores_patient_id"].str.strip()
        sid = df["scores_patient_id"]
        dup = sid.duplicated() & (sid != "")
        if dup.any():
            i = int(dup.idxmax())
            first = int(sid.index[(sid == sid[i]).to_numpy()][0]) + 2
            raise _bad(code, p, "scores_patient_id", i + 2, sid[i], f"appears more than once (also line {first})"
                       + _missing_hint(sid[i]))
    for c in ("onset_date", "admission_date", "treatment_date"):
        if c in df.columns:
            df[c] = _parse_dates(df[c], c, code, p)
    if "onset_date" not in df.columns and "admission_date" not in df.columns:
        hints = misspelling_hint("onset_date", df.columns) + misspelling_hint("admission_date", df.columns)
        raise CTScoreError(code, "needs 'onset_date' and/or 'admission_date' (weeks and periods count from onset)"
                           f"{hints}; found {list(df.columns)}", p)
    if "onset_date" in df.columns and "admission_date" in df.columns:
        late = df["onset_date"] > df["admission_date"]
        if late.any():
            i = int(late.idxmax())
            raise _bad(code, p, "onset_date", i + 2, str(df["onset_date"][i].date()), "is after admission_date")
    if "outcome" in df.columns:
        df["outcome"] = _parse_choice(df["outcome"], "outcome", OUTCOMES, code, p,
                                      {"survived": "survivor", "alive": "survivor", "died": "non-survivor",
                                       "dead": "non-survivor", "deceased": "non-survivor",
                                       "nonsurvivor": "non-survivor", "non_survivor": "non-survivor"})
    if "severity" in df.columns:
        df["severity"] = _parse_choice(df["severity"], "severity", SEVERITIES, code, p,
                                       {"critical": "severe", "common": "moderate"})
    if "sex" in df.columns:
        df["sex"] = _parse_choice(df["sex"], "sex", SEXES, code, p,
                                  {"male": "M", "female": "F", "m": "M", "f": "F"})
    if "age" in df.columns:
        df["age"] = _parse_numbers(df["age"], "age", code, p, lo=0, hi=120)
    if "glucocorticoid" in df.columns:
        df["glucocorticoid"] = _parse_flag(df["glucocorticoid"], "glucocorticoid", code, p)
    for c in df.columns:
        if c in CLINICAL_REQUIRED or c in CLINICAL_OPTIONAL:
            continue
        num = pd.to_numeric(df[c].replace("", np.nan), errors="coerce")
        if num.notna().sum() == (df[c] != "").sum() and num.notna().any() and not _looks_like_ids(df[c], num):
            df[c] = num.astype(float)
    if p is not None:
        df.attrs["source"] = str(p)
    df.attrs["notes"] = unknown_column_notes(df, CLINICAL_REQUIRED + CLINICAL_OPTIONAL, "clinical table")
    return df


def _known_analyte(key: str) -> str | None:
    """The canonical analyte a name key (lower case, no spaces, hyphens, underscores or brackets) stands for."""
    if key in ALIASES:
        return ALIASES[key]
    for canon in ANALYTES:
        if key == canon.replace("_", ""):
            return canon
    for ending in _PCT_ENDINGS:  # 'Lymphocytes %', 'NEUT%': the percentage twin of the count
        if key.endswith(ending) and len(key) > len(ending):
            base = _COUNT_STEMS.get(key[:-len(ending)]) or _known_analyte(key[:-len(ending)])
            if base in _PCT_TWIN:
                return _PCT_TWIN[base]
            if base in _PCT_TWIN.values():
                return base
    for ending in _COUNT_ENDINGS:  # 'LYMPH#': the count
        if key.endswith(ending) and len(key) > len(ending):
            base = _COUNT_STEMS.get(key[:-len(ending)]) or _known_analyte(key[:-len(ending)])
            if base in _PCT_TWIN:
                return base
    return None


def canonical_analyte(name: str) -> str:
    """Map a lab name to its canonical form (``'IL-6'`` -> ``'il6'``, ``'Lymphocytes (%)'`` -> ``'lymphocyte_pct'``,
    ``'LYMPH#'`` -> ``'lymphocyte_count'``); unknown names are snake-cased."""
    known = _known_analyte(re.sub(r"[\s\-_()\[\]]", "", name.strip().lower()))
    if known is not None:
        return known
    return re.sub(r"[^0-9a-z%#]+", "_", name.strip().lower()).strip("_")


#: Unit cells that say "no unit given", as an empty cell does (the value is taken to be in the expected unit).
_NO_UNIT = frozenset({"", "na", "n/a", "-", "nan", "none", "null"})
#: Other spellings of a unit (as :func:`_unit_key` writes them: case-folded, without spaces or brackets) -> the key
#: of the unit they equal. Each pair is the same quantity with the same numbers (1 ug/L = 1 ng/mL, 10^3/uL =
#: 10^9/L), so no value is converted.
_SAME_UNIT = {"10^3/ul": "10^9/l", "10^3/mm^3": "10^9/l", "10^3/mm3": "10^9/l", "k/ul": "10^9/l", "/nl": "10^9/l",
              "percent": "%", "ug/ml": "mg/l", "mm/hr": "mm/h", "mm/hour": "mm/h", "ug/l": "ng/ml",
              "ug/mlfeu": "mg/lfeu", "mgfeu/l": "mg/lfeu", "ugfeu/ml": "mg/lfeu", "iu/l": "u/l", "ng/l": "pg/ml"}
#: A count analyte and its percentage twin: a count row whose unit is '%' holds the percentage (a blood count export
#: names both 'Neutrophils'), and is taken as the twin.
_PCT_TWIN = {a: a[:-len("_count")] + "_pct" for a in ANALYTES
             if a.endswith("_count") and a[:-len("_count")] + "_pct" in ANALYTES}
_SUPERSCRIPT = str.maketrans("\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079", "0123456789")


@functools.lru_cache(maxsize=4096)
def _unit_key(unit: object) -> str:
    """A unit as compared: case, spaces, brackets, the micro sign and the spellings of 10^9 ('x10^9/L', '10*9/l',
    '10E9/L', superscripts) do not count, nor do the equal units of :data:`_SAME_UNIT`; '' for no unit. 'G/L' (giga
    per litre, upper-case G) is 10^9/L."""
    import unicodedata

    s = re.sub(r"[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+", lambda m: "^" + m.group().translate(_SUPERSCRIPT),
               str(unit).strip())
    s = unicodedata.normalize("NFKC", s)
    if re.fullmatch(r"G\s*/\s*[Ll]", s):  # 'G/l' too (French exports); lower-case 'g/L' is grams
        return "10^9/l"
    s = re.sub(r"[\s()\[\]]", "", s).lower().replace("\u03bc", "u").replace("\u00d7", "x")
    s = re.sub(r"^[x*]?10(?:\*\*|\*|\^|e)(\d+)", r"10^\1", s)
    if s in _NO_UNIT:
        return ""
    return _SAME_UNIT.get(s, s)


def _check_units(df: pd.DataFrame, names: pd.Series, path: Path | None) -> tuple[pd.DataFrame, list[str]]:
    """Units of a lab table whose ``analyte`` is canonical (``names``: as the file spells them), so that no analyte
    mixes units: a count in '%' becomes its percentage twin (:data:`_PCT_TWIN`); a value in another unit than the
    expected one (:data:`ANALYTES`; for other analytes the unit most of their values carry) is left out. Returns the
    kept rows and a note for each change (they reach data_summary.csv); values are never converted."""
    notes: list[str] = []
    where = f" of {path.name}" if path is not None else ""
    key = df["unit"].map(_unit_key)
    twin = df["analyte"].map(_PCT_TWIN)
    routed = twin.notna() & (key == "%")
    if routed.any():
        for (name, canon), g in df[routed].groupby([names[routed], df.loc[routed, "analyte"]], sort=False):
            notes.append(f"lab table: {len(g)} value(s) of {name!r} in '%' (e.g. line {int(g.index[0]) + 2}{where}) "
                         f"are taken as {_PCT_TWIN[canon]}: a percentage is not a count ({canon} is in "
                         f"{ANALYTES[canon]}); they are not averaged with the counts")
            log.warning(notes[-1])
        df = df.copy()
        df.loc[routed, "analyte"] = twin[routed]
    expected = {a: (_unit_key(u), u) for a, u in ANALYTES.items()}
    given = key != ""
    for a in df.loc[given & ~df["analyte"].isin(list(ANALYTES)), "analyte"].unique():  # no expected unit: the most
        k = key[given & (df["analyte"] == a)]  # common one (of a tie, the first in the file)
        counts = k.value_counts()
        top = next(u for u in dict.fromkeys(k) if counts[u] == counts.max())
        expected[a] = (top, df.loc[k.index[k == top][0], "unit"].strip())
    want = df["analyte"].map(lambda a: expected.get(a, ("", ""))[0])
    bad = given & (want != "") & (key != want)
    for a in df.loc[bad, "analyte"].unique():
        rows = df[bad & (df["analyte"] == a)]
        units = rows["unit"].str.strip().value_counts()
        spelled = ", ".join(f"{u!r}" + (f" ({n})" if len(units) > 1 else "") for u, n in units.head(3).items()) \
            + (", ..." if len(units) > 3 else "")
        exp_unit = expected[a][1]
        whose = "" if a in ANALYTES else f", the unit of most {a} values"
        notes.append(f"lab table: {len(rows)} value(s) of {a} in unit(s) {spelled} (e.g. line {int(rows.index[0]) + 2}"
                     f"{where}) were left out: expected {exp_unit!r}{whose}; values are never converted and one "
                     f"analyte is never averaged across units (convert them to {exp_unit} and write that unit, or "
                     "correct the unit, to use them)")
        log.warning(notes[-1])
    return df[~bad], notes


def _unknown_analyte_notes(canon: pd.Series, names: pd.Series) -> list[str]:
    """One note naming the lab names that are none of :data:`ANALYTES` (a spelling ctscore does not know, or another
    lab): they are kept under their own name and used only where a study's ``labs`` option names them."""
    unknown = ~canon.isin(list(ANALYTES))
    if not unknown.any():
        return []
    parts = []
    for a, g in names[unknown].groupby(canon[unknown], sort=False):
        spelled = ", ".join(repr(n) for n in dict.fromkeys(g))
        near = close_column(a, list(ANALYTES))
        parts.append(f"{a} (from {spelled}; {len(g)} value(s)" + (f"; is it {near}?" if near else "") + ")")
    note = (f"lab table: {len(parts)} lab name(s) are none of those the studies use ({', '.join(ANALYTES)}) and are "
            f"kept under their own name, used only where a study's labs option names them: {'; '.join(parts)}")
    log.info(note)
    return [note]


def validate_labs(df: pd.DataFrame, path: str | Path | None = None, known_patients: set[str] | None = None) -> pd.DataFrame:
    """Check and type a long-form laboratory table (patient_id, date, analyte, value[, unit])."""
    code = "BAD_LAB_DATA"
    p = Path(path) if path is not None else None
    df = _line_index(df.copy()).astype(str)
    _require(df, LABS_REQUIRED, code, p)
    notes = unknown_column_notes(df, LABS_REQUIRED + LABS_OPTIONAL, "lab table")
    df["patient_id"] = df["patient_id"].str.strip()
    empty = df["patient_id"] == ""
    if empty.any():
        i = int(empty.idxmax())
        raise _bad(code, p, "patient_id", i + 2, "", "is empty")
    df["date"] = _parse_dates(df["date"], "date", code, p)
    if df["date"].isna().any():
        i = int(df["date"].isna().idxmax())
        raise _bad(code, p, "date", i + 2, "", "is empty (every lab value needs its date)")
    if (df["analyte"].str.strip() == "").any():
        i = int((df["analyte"].str.strip() == "").idxmax())
        raise _bad(code, p, "analyte", i + 2, "", "is empty")
    names = df["analyte"].str.strip()
    df["analyte"] = df["analyte"].map(canonical_analyte)
    notes += _unknown_analyte_notes(df["analyte"], names)
    df["value"] = _parse_numbers(df["value"], "value", code, p)
    if "unit" not in df.columns:
        df["unit"] = ""
    df = df.dropna(subset=["value"])
    df, unit_notes = _check_units(df, names, p)  # no analyte mixes units (a % is not a count)
    notes += unit_notes
    if known_patients is not None:
        unknown = ~df["patient_id"].isin(known_patients)
        if unknown.any():
            log.warning("labs: %d row(s) for %d patient(s) not in the clinical table are ignored",
                        int(unknown.sum()), df.loc[unknown, "patient_id"].nunique())
            df = df[~unknown]
    df = df.reset_index(drop=True)
    df.attrs["notes"] = notes  # build_cohort carries them into data_summary
    if p is not None:
        df.attrs["source"] = str(p)
    return df


def read_clinical(path: str | Path) -> pd.DataFrame:
    """Read and validate ``clinical.csv``."""
    return validate_clinical(_read_csv(path, "BAD_CLINICAL_DATA"), path)


def read_labs(path: str | Path, known_patients: set[str] | None = None) -> pd.DataFrame:
    """Read and validate ``labs.csv`` (long form)."""
    return validate_labs(_read_csv(path, "BAD_LAB_DATA"), path, known_patients)


def read_scores(scores: str | Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Read the pipeline's ``scans.csv`` (and ``zones.csv`` when present) from a folder or a CSV path.

    Failed scans (``status != 'ok'``) are dropped with a log line. Returns (scans, zones or None).
    """
    code = "BAD_SCORES"
    scores = Path(scores)
    scans_path = scores / "scans.csv" if scores.is_dir() else scores
    zones_path = scans_path.parent / "zones.csv"
    scans = validate_scans(_read_csv(scans_path, code), scans_path)
    zones = validate_zones(_read_csv(zones_path, code), scans, zones_path) if zones_path.is_file() else None
    return scans, zones


#: The columns of scans.csv kept for every row (failed ones too) for an exclusion list
#: (None where scans.csv lacks the column) (scoring.exclusions).
RUN_ROW_COLUMNS = ("scan_id", "series_uid", *dict.fromkeys((*exclusions.COMPARED_COLUMNS,
                                                             *exclusions.FINGERPRINT_COLUMNS)))


def validate_scans(scans: pd.DataFrame, path: str | Path | None = None) -> pd.DataFrame:
    """Check and type a table of scores as ``scans.csv`` holds them (text cells: :func:`as_text` turns a frame of
    numbers and dates into such a table). Failed scans (``status != 'ok'``) are dropped with a log line."""
    code = "BAD_SCORES"
    scans_path = Path(path) if path is not None else None
    scans = _line_index(scans.copy())
    _require(scans, SCANS_REQUIRED, code, scans_path)
    scans["patient_id"] = scans["patient_id"].str.strip()
    # every row, failed ones too: what an exclusion list is checked against (scoring.exclusions)
    # (plain tuples: pandas compares and deep-copies attrs)
    # (with the columns a review sheet shows, compared with it: scoring.exclusions.COMPARED_COLUMNS)
    run_rows = list(zip(*(scans[c].astype(str).str.strip() if c in scans.columns else [None] * len(scans)
                          for c in RUN_ROW_COLUMNS)))
    if "status" in scans.columns:
        failed = scans["status"].str.strip().str.lower() != "ok"
        if failed.any():
            log.info("scores: %d failed scan(s) left out", int(failed.sum()))
        scans = scans[~failed]
    scans["scan_id"] = scans["scan_id"].str.strip()
    dup = scans["scan_id"].duplicated()
    if dup.any():  # the same scan twice (e.g. two runs' scans.csv pasted together) would count it twice
        i = dup.idxmax()
        first = int(scans.index[(scans["scan_id"] == scans["scan_id"][i]).to_numpy()][0]) + 2
        raise _bad(code, scans_path, "scan_id", int(i) + 2, scans["scan_id"][i],
                   f"appears more than once (also line {first}); one row per scan")
    scans["study_date"] = _parse_dates(scans["study_date"], "study_date", code, scans_path)
    notes = []
    undated = scans["study_date"].isna()
    if undated.all() and len(scans):
        i = int(undated.idxmax())
        raise _bad(code, scans_path, "study_date", i + 2, "", "is empty in every scored row (every analysis needs "
                   "the scan's date)")
    if undated.any():  # no StudyDate in the header, or one that is no date (loader code STUDY_DATE_UNREADABLE)
        lines = ", ".join(str(int(i) + 2) for i in scans.index[undated][:5])
        notes.append(f"{int(undated.sum())} scored scan(s) without a study_date left out (line(s) {lines}"
                     f"{', ...' if undated.sum() > 5 else ''} of scans.csv: no StudyDate in their header, or one "
                     "that is no date, STUDY_DATE_UNREADABLE); to use one, write its date (YYYYMMDD) into its empty "
                     "study_date")
        log.warning(notes[-1])
        scans = scans[~undated]
    if "series_time" not in scans.columns:  # scans.csv of ctscore < 0.2.0, or a table made by hand
        scans["series_time"] = ""
    scans["series_time"] = _parse_times(scans["series_time"].fillna("").astype(str), code, scans_path)
    numeric = [c for c in scans.columns if c not in ("scan_id", "patient_id", "study_date", "series_time",
                                                     "series_uid", "status", "mosmed_category", "ctscore_version",
                                                     "model_id", "scores_config_sha256")]
    for c in numeric:
        num = pd.to_numeric(scans[c], errors="coerce")  # "" is NaN (a replace() first warned on pandas 2.2)
        if c in SCANS_NUMERIC or num.notna().sum() == (scans[c] != "").sum():
            bad = num.isna() & (scans[c] != "")
            if bad.any():
                i = int(bad.idxmax())
                raise _bad(code, scans_path, c, i + 2, scans[c][i], "is not a number")
            scans[c] = num.astype(float)
    for c, hi in (("six_zone_total", 24), ("zhang900_total", 900)):
        out = (scans[c] < 0) | (scans[c] > hi)
        if out.any():
            i = int(out.idxmax())
            raise _bad(code, scans_path, c, i + 2, scans[c][i], f"is outside 0-{hi}")
    scans = scans.reset_index(drop=True)
    scans.attrs["notes"] = notes  # build_cohort carries them into data_summary
    scans.attrs["run_rows"] = run_rows
    return scans


def validate_zones(zones: pd.DataFrame, scans: pd.DataFrame, path: str | Path | None = None) -> pd.DataFrame:
    """Check and type ``zones.csv`` (text cells), keeping the rows of the scans in ``scans`` (checked ones)."""
    code = "BAD_SCORES"
    zones_path = Path(path) if path is not None else None
    zones = _line_index(zones.copy())
    _require(zones, ZONES_REQUIRED, code, zones_path)
    for c in ("involvement_pct", "extent_score", "density_grade", "unit_score"):
        if c in zones.columns:
            zones[c] = pd.to_numeric(zones[c].replace("", np.nan), errors="coerce")
    zones["scan_id"] = zones["scan_id"].str.strip()
    zones = zones[zones["scan_id"].isin(set(scans["scan_id"]))]
    dup = zones.duplicated(["scan_id", "system", "lung", "unit"])
    if dup.any():
        i = dup.idxmax()
        raise _bad(code, zones_path, "scan_id", int(i) + 2, zones["scan_id"][i],
                   f"has the {zones['system'][i]} unit {zones['lung'][i]} {zones['unit'][i]} more than once")
    return zones.reset_index(drop=True)


def rounded_float(v: object) -> bool:
    """Whether ``v`` is a float of 2**53 or more: a whole number whose last digits float64 may have lost (pandas
    reads an all-number column with an empty cell as float64: 110101199001010017 becomes 110101199001010016)."""
    return isinstance(v, (float, np.floating)) and bool(np.isfinite(v)) and abs(float(v)) >= EXACT_FLOAT_LIMIT


def rounded_float_error(code: str, column: object, line: int | None, value: object,
                        path: Path | None = None) -> CTScoreError:
    """The refusal of a float of :func:`rounded_float` where text (an id) is read: its digits cannot be trusted."""
    return _bad(code, path, str(column), line, value, "is a number of 16 or more digits held as a float, which keeps "
                "only 15-16 digits (an id column with an empty cell read by pd.read_csv): its last digits may be "
                "another patient's; read the table with dtype=str (pd.read_csv(path, dtype=str, "
                "keep_default_na=False)) so that ids keep every digit")


def _cell_text(v: object) -> str:
    """One cell as a CSV file would hold it: empty for a missing value, a date without its midnight, 7 for 7.0 (a
    float of :func:`rounded_float` is refused by :func:`as_text` before it gets here)."""
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return ""  # pd.NA: a nullable column (scans.parquet, read with dtype_backend="numpy_nullable")
    if isinstance(v, pd.Timestamp):
        return v.strftime("%Y-%m-%d") if v == v.normalize() else str(v)
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if hasattr(v, "isoformat") and not isinstance(v, str):  # datetime.date
        return v.isoformat()
    return str(v)


def as_text(df: pd.DataFrame, code: str = "BAD_CLINICAL_DATA") -> pd.DataFrame:
    """A DataFrame (``pd.read_csv``'s numbers, NaN and dates, or a frame built in Python) as text cells, the form
    the ``validate_*`` functions check, so that a frame is held to the same rules as the file it stands for
    (also: two columns whose names differ only by surrounding spaces are refused with ``code``, as in a file)."""
    out = df.copy()
    names = [str(c).strip() for c in out.columns]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        what = _INPUT_NAMES.get(code, "input").split(" (")[0]
        raise CTScoreError(code, f"column {twice[0]!r} appears twice in the {what} given as a DataFrame (names "
                           f"{[str(c) for c in df.columns if str(c).strip() == twice[0]]}: only one would be read); "
                           "give each column one name")
    out.columns = names
    for c in out.columns:
        cells = out[c].tolist()
        big = next((k for k, v in enumerate(cells) if rounded_float(v)), None)
        if big is not None:  # the frame's own row label N is line N + 2, as in pd.read_csv's numbering
            label = out.index[big]
            line = int(label) + 2 if isinstance(label, (int, np.integer)) else None
            raise rounded_float_error(code, c, line, cells[big])
        out[c] = [_cell_text(v) for v in cells]
    return out
