"""Reading and checking the readers' reference table (schema: docs/reference_schema.md).

One row per (scan, system, unit, reader) with a ``value``. The scan is named by ``scan_id`` (alias
``scan``), by ``series_uid``, or by ``patient_id`` plus ``study_date``; a row may use any of them
(first found in that order wins). Every problem is reported with its line in the CSV file (line 1
is the header) under a searchable code:

``REFERENCE_NOT_FOUND``, ``REFERENCE_SCHEMA`` (an empty file, not UTF-8 text, not a readable CSV, missing
columns, no rows), ``REFERENCE_BAD_SYSTEM``,
``REFERENCE_BAD_UNIT``, ``REFERENCE_BAD_READER``, ``REFERENCE_BAD_VALUE`` (not a number/category),
``REFERENCE_OUT_OF_RANGE``, ``REFERENCE_NO_MATCH`` (names no scan of the pipeline output),
``REFERENCE_AMBIGUOUS`` (patient + date match several series, or a series_uid several scored stacks),
``REFERENCE_ID_CONFLICT`` (a row's identifiers name different scans),
``REFERENCE_DUPLICATE``, ``REFERENCE_TOTAL_MISMATCH`` (a reader's total is not the sum of that reader's units).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import CTScoreError
from scoring.csv_input import read_csv_table
from scoring.validation.predictions import normalise_date
from scoring.validation.systems import SYSTEMS, TOTAL, canonical_system, mosmed_to_ordinal

log = logging.getLogger(__name__)

REQUIRED = ("system", "unit", "reader", "value")
ID_COLUMNS = ("scan_id", "series_uid", "patient_id", "study_date")
#: Rater names the comparison uses itself.
RESERVED_READERS = frozenset({"ctscore", "consensus", "scan_id", "system", "unit"})
MAX_LISTED = 5


@dataclass
class Problems:
    """Problems found in the reference, raised together as one :class:`CTScoreError`."""

    path: Path
    items: list[tuple[str, int, str]] = field(default_factory=list)

    def add(self, code: str, line: int, message: str) -> None:
        self.items.append((code, line, message))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        code = self.items[0][0]
        shown = [f"line {line}: {msg}" for _, line, msg in self.items[:MAX_LISTED]]
        more = len(self.items) - len(shown)
        tail = f"; and {more} more problem(s)" if more else ""
        raise CTScoreError(code, "reference: " + "; ".join(shown) + tail, self.path)


def _column_name(cell: str) -> str:
    return cell.strip().lower()


def _name_unused_columns(df: pd.DataFrame) -> list[str]:
    """Log the filled columns the comparison does not read: a warning for those holding numbers (a second
    reader's scores in a column of its own would be lost), a note for the rest (comments, the lab's own ids).
    Returns the warning, for data_summary (empty when no such column holds numbers)."""
    scores, other = [], []
    for n in df.columns:
        if n in (*REQUIRED, *ID_COLUMNS):
            continue
        filled = [v for v in df[n] if v]
        if not filled:
            continue
        label = repr(n)
        numeric = sum(re.fullmatch(r"[+-]?\d+([.,]\d+)?|CT-?\d", v, re.IGNORECASE) is not None for v in filled)
        (scores if numeric > len(filled) / 2 else other).append(label)
    notes = []
    if scores:
        notes.append(f"reference: column(s) {', '.join(scores)} hold numbers but are not read: one row per scan, "
                     "system, unit and reader is read (a second reader's scores are rows of their own, not a column; "
                     "docs/reference_schema.md)")
        log.warning(notes[-1])
    if other:
        log.info("reference: column(s) %s not used", ", ".join(other))
    return notes


def read_reference(path: str | Path) -> pd.DataFrame:
    """The reference CSV as text, with normalised column names and a ``line`` column (the file line each row
    starts on). Read by :func:`scoring.csv_input.read_csv_table`: another separator than the comma, a column named
    twice (a second reader's ``reader,value`` pair), a row longer than the header (an unquoted decimal comma) are
    refused naming the line."""
    path = Path(path)
    if not path.is_file():
        raise CTScoreError("REFERENCE_NOT_FOUND", "reference CSV not found", path)
    df = read_csv_table(path, "REFERENCE_SCHEMA", "reference", normalise=_column_name, strip_cells=True,
                        skip_initial_space=True,
                        twice_hint="the reference is long form, one row per scan, system, unit and reader (several "
                        "readers: several rows, see docs/reference_schema.md)")
    if "scan" in df.columns and "scan_id" not in df.columns:
        df = df.rename(columns={"scan": "scan_id"})
    names = list(df.columns)
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise CTScoreError("REFERENCE_SCHEMA", f"reference lacks column(s) {missing}; needs {list(REQUIRED)} "
                           f"plus scan_id, series_uid or patient_id + study_date (header: {names})", path)
    if not any(c in names for c in ("scan_id", "series_uid")) and not {"patient_id", "study_date"} <= set(names):
        raise CTScoreError("REFERENCE_SCHEMA", "reference names no scan: give a scan_id (or scan), series_uid, "
                           "or patient_id + study_date column", path)
    skipped = df.attrs["skipped_lines"]
    if skipped:
        log.info("reference: %d empty row(s) skipped (lines %s)", len(skipped), ", ".join(map(str, skipped[:MAX_LISTED])))
    if df.empty:
        raise CTScoreError("REFERENCE_SCHEMA", "reference has no rows" + (" (only empty ones)" if skipped else ""),
                           path)
    notes = _name_unused_columns(df)
    for c in ID_COLUMNS:
        if c not in df.columns:
            df[c] = ""
    df.insert(0, "line", [int(i) + 2 for i in df.index])
    df = df.reset_index(drop=True)
    df.attrs["notes"] = notes  # load_reference carries them into data_summary
    return df


def _describe(row: Mapping[str, Any]) -> str:
    ident = row["scan_id"] or row["series_uid"] or f"{row['patient_id']}/{row['study_date']}"
    value = row["value_text"] if "value_text" in row else row["value"]  # as written, after check_values too
    return f"{ident} {row['system']} {row['unit']} {row['reader']}={value!r}"


class _Described:
    """A row's :func:`_describe`, made only when a message shows it (a million valid rows need none)."""

    __slots__ = ("row",)

    def __init__(self, row: Mapping[str, Any]) -> None:
        self.row = row

    def __format__(self, spec: str) -> str:
        return format(_describe(self.row), spec)

    def __str__(self) -> str:
        return _describe(self.row)


def _rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as dicts (``iterrows`` builds a Series per row: 60 s for a million-row reader sheet)."""
    return df.to_dict("records")


def _number(text: str) -> float:
    """A reader's value as a number: decimal notation only (``float`` alone also takes ``1_2`` as 12)."""
    if "_" in text:
        raise ValueError(text)
    return float(text)


def reader_key(name: str) -> str:
    """A reader's name as compared for spellings of one reader: without case, spaces, dots, underscores and hyphens
    ('Dr. Smith' = 'dr smith', 'reader 1' = 'Reader_1' = 'reader1')."""
    return re.sub(r"[\s._-]+", "", name).casefold()


def _check_reader_spellings(df: pd.DataFrame, problems: Problems) -> None:
    """Reader names of one :func:`reader_key` ('Smith', 'smith'; 'reader 1', 'reader1'; 'Dr. Smith', 'Dr Smith') are
    one reader written two ways: read as two, each had half the scans and their comparison none."""
    first: dict[str, tuple[str, int]] = {}
    reported: set[str] = set()
    for name, line in zip(df["reader"], df["line"]):
        key = reader_key(name)
        if not key:
            continue
        seen = first.setdefault(key, (name, int(line)))
        if seen[0] != name and key not in reported:
            reported.add(key)
            problems.add("REFERENCE_BAD_READER", int(line), f"reader {name!r} is written {seen[0]!r} on line "
                         f"{seen[1]}: spell each reader one way (case, spaces, dots, hyphens and underscores do not "
                         "tell two readers apart)")


def check_values(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """System, unit, reader and value of every row; returns rows with canonical system and float value."""
    problems = Problems(path)
    systems, units, values = [], [], []
    for row in _rows(df):
        line, desc = int(row["line"]), _Described(row)
        system = canonical_system(row["system"])
        unit = row["unit"].strip().lower()
        unit = TOTAL if unit in ("all", "whole", "total") else unit
        value = math.nan
        systems.append(system)
        units.append(unit)
        values.append(value)
        if system is None:
            problems.add("REFERENCE_BAD_SYSTEM", line, f"{desc}: unknown system {row['system']!r} "
                         f"(known: {', '.join(SYSTEMS)})")
            continue
        spec = SYSTEMS[system]
        if not unit and not spec.units:  # mosmed: the total is all there is
            unit = units[-1] = TOTAL
        if not unit:  # a zone-level file with one zone name missing: read as total, it was compared with the total
            problems.add("REFERENCE_BAD_UNIT", line, f"{desc}: empty unit (write total for the whole-scan score)")
            continue
        unit = {u.lower(): u for u in spec.units}.get(unit, unit)  # right_l3 -> right_L3
        units[-1] = unit
        if unit != TOTAL and unit not in spec.units:
            allowed = ", ".join(spec.units) if spec.units else "none"
            problems.add("REFERENCE_BAD_UNIT", line, f"{desc}: unit {row['unit']!r} is not a {system} unit "
                         f"(total or {allowed})")
            continue
        reader = row["reader"]
        if not reader or reader.lower() in RESERVED_READERS:
            problems.add("REFERENCE_BAD_READER", line, f"{desc}: reader must be a name other than "
                         f"{sorted(RESERVED_READERS)}")
            continue
        try:
            value = mosmed_to_ordinal(row["value"]) if system == "mosmed" else _number(row["value"])
        except ValueError:
            expect = "CT-0..CT-4" if system == "mosmed" else "a number"
            hint = (" (write decimals with a point)" if system != "mosmed"
                    and re.fullmatch(r"[+-]?\d+,\d+", row["value"]) else "")
            problems.add("REFERENCE_BAD_VALUE", line, f"{desc}: value {row['value']!r} is not {expect}{hint}")
            continue
        if math.isnan(value):
            problems.add("REFERENCE_BAD_VALUE", line, f"{desc}: empty value (leave the row out instead)")
            continue
        why = spec.check_value(unit, value)
        if why:
            problems.add("REFERENCE_OUT_OF_RANGE", line, f"{desc}: {why}")
            continue
        values[-1] = value
    _check_reader_spellings(df, problems)
    problems.raise_if_any()
    out = df.copy()
    out["value_text"] = df["value"]
    out["system"], out["unit"], out["value"] = systems, units, values
    return out


def _failed_without(scans: pd.DataFrame, columns: tuple[str, ...]) -> int:
    """How many scans the pipeline failed on lack one of ``columns`` in scans.csv."""
    failed = scans["status"].fillna("ok").str.lower() != "ok"
    empty = pd.Series(False, index=scans.index)
    for c in columns:
        empty |= scans[c].isna() | (scans[c].astype(str).str.strip() == "")
    return int((failed & empty).sum())


def _check_id_columns(df: pd.DataFrame, scans: pd.DataFrame) -> None:
    """PRED_SCHEMA when reference rows name their scan by a column scans.csv lacks (``series_uid``, ``patient_id``,
    ``study_date``: :func:`~scoring.validation.predictions.load_scans` fills them in empty), instead of calling
    every such row unmatched. A column no row names its scan by is not needed."""
    absent = set(scans.attrs.get("absent_columns", ()))
    if not absent:
        return
    by_uid = (df["scan_id"] == "") & (df["series_uid"] != "")
    by_date = (df["scan_id"] == "") & (df["series_uid"] == "") & (df["patient_id"] != "") & (df["study_date"] != "")
    for rows, columns in ((by_uid, ["series_uid"]), (by_date, ["patient_id", "study_date"])):
        missing = [c for c in columns if c in absent]
        if missing and rows.any():
            lines = [str(x) for x in df.loc[rows, "line"]]
            shown = ", ".join(lines[:MAX_LISTED]) + (f" and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED
                                                     else "")
            raise CTScoreError("PRED_SCHEMA", f"scans.csv lacks column(s) {missing}, by which the reference names "
                               f"its scans (line(s) {shown}); give the scans.csv ctscore wrote, or name the scans by "
                               "scan_id", scans.attrs.get("source"))


def _id_conflict(row: Mapping[str, Any], known: tuple[object, object, object] | None, uids: set[str],
                 patients: set[str]) -> str:
    """What of the scan found by the row's first identifier contradicts the row's other identifiers ('' if none).
    Only identifiers of another scan in scans.csv count (a shifted column); a lab's own patient numbers beside a
    scan_id are not ctscore's pseudonyms and are left alone."""
    if known is None:
        return ""
    uid, patient, date = (str(x) if isinstance(x, str) else "" for x in known)
    if row["scan_id"] and row["series_uid"] in uids and row["series_uid"] != uid:
        return f"series_uid is {uid!r}, not {row['series_uid']!r}"
    if (row["scan_id"] or row["series_uid"]) and row["patient_id"] in patients and row["study_date"] and patient \
            and date:
        given = (row["patient_id"], normalise_date(row["study_date"]) or "")
        if not re.fullmatch(r"\d{8}", given[1]):  # a date format not known (07.03.2020) is no evidence either way
            return ""
        if given != (patient, normalise_date(date) or ""):
            return f"patient_id + study_date are {patient!r} + {date!r}, not {given[0]!r} + {given[1]!r}"
    return ""


#: The date formats a reference's ``study_date`` may take (:func:`~scoring.validation.predictions.normalise_date`),
#: as a message lists them.
DATE_FORMATS = "YYYYMMDD or YYYY-MM-DD, nor YYYY/MM/DD or YYYY.MM.DD"


def _lines_text(lines: list[int]) -> str:
    """``"line 4"``, ``"lines 2, 3, 4 and 17 more"``."""
    shown = ", ".join(map(str, lines[:3])) + (f" and {len(lines) - 3} more" if len(lines) > 3 else "")
    return f"line{'s' if len(lines) > 1 else ''} {shown}"


def _unmatched_sentence(unmatched: dict[str, list[int]]) -> str:
    """The rows left out by ``on_unmatched="warn"`` (identifier as written, with its hint -> file lines), named: how
    many, and up to three identifiers with their lines."""
    n_rows = sum(len(v) for v in unmatched.values())
    shown = "; ".join(f"{how} ({_lines_text(lines)})" for how, lines in list(unmatched.items())[:3])
    more = f"; and {len(unmatched) - 3} more" if len(unmatched) > 3 else ""
    return (f"{n_rows} reference row(s) naming {len(unmatched)} scan(s) that match no scan of the pipeline output were "
            f"left out (--on-unmatched warn): {shown}{more}")


def resolve_scans(df: pd.DataFrame, scans: pd.DataFrame, path: Path, on_unmatched: str = "error",
                  left_out: list[int] | None = None, notes: list[str] | None = None) -> pd.DataFrame:
    """Give every reference row the pipeline's ``scan_id``.

    ``on_unmatched``: ``error`` (default) raises ``REFERENCE_NO_MATCH`` for rows naming no scan;
    ``warn`` logs them and leaves them out (their file lines are appended to ``left_out``, and a sentence naming
    examples with their lines to ``notes``).
    """
    if on_unmatched not in ("error", "warn"):
        raise CTScoreError("BAD_OPTION", f"on_unmatched must be 'error' or 'warn', not {on_unmatched!r}")
    _check_id_columns(df, scans)
    by_id = set(scans["scan_id"].dropna())
    by_uid: dict[str, list[str]] = {}
    by_pd: dict[tuple[str, str], list[str]] = {}
    for s in scans.itertuples(index=False):
        if isinstance(s.series_uid, str) and s.series_uid:
            by_uid.setdefault(s.series_uid, []).append(s.scan_id)
        if isinstance(s.patient_id, str) and isinstance(s.study_date, str):
            by_pd.setdefault((s.patient_id, s.study_date), []).append(s.scan_id)
    status = dict(zip(scans["scan_id"], scans["status"].fillna("ok").str.lower()))
    idents = {s.scan_id: (s.series_uid, s.patient_id, s.study_date) for s in scans.itertuples(index=False)}
    pseudonymous = scans["patient_id"].dropna().astype(str).str.startswith("pt-")
    patients = {p for p, _ in by_pd}
    # a number of scans.csv's patient_id without its leading zeros -> that id (a spreadsheet turned 0000001 into 1)
    zeros = {p.lstrip("0") or "0": p for p in patients if p.isdigit() and p.startswith("0")}
    uids = set(by_uid)
    n_failed_bare = _failed_without(scans, ("patient_id", "study_date"))
    date_hint = (f" ({n_failed_bare} failed scan(s) in scans.csv lack patient_id or study_date: name a failed scan "
               "by series_uid or scan_id)" if n_failed_bare else "")
    problems = Problems(path)
    resolved: list[str | None] = []
    unmatched: dict[str, list[int]] = {}
    for row in _rows(df):
        line, desc = int(row["line"]), _Described(row)
        sid: str | None = None
        hint = ""
        if row["scan_id"]:
            sid = row["scan_id"] if row["scan_id"] in by_id else None
            how = f"scan_id {row['scan_id']!r}"
        elif row["series_uid"] or (row["patient_id"] and row["study_date"]):
            if row["series_uid"]:
                # several stacks of one series are scored apart (--all-series): one scan_id each
                found = by_uid.get(row["series_uid"], [])
                how, what, name_by = f"series_uid {row['series_uid']!r}", "scans", "scan_id"
            else:
                key = (row["patient_id"], normalise_date(row["study_date"]) or "")
                found = by_pd.get(key, [])
                how, what, name_by = f"patient_id {key[0]!r} + study_date {key[1]!r}", "series", "series_uid or scan_id"
                hint = date_hint
            ok = [f for f in found if status.get(f) == "ok"]
            if len(ok) > 1 or (not ok and len(found) > 1):
                problems.add("REFERENCE_AMBIGUOUS", line, f"{desc}: {how} matches {len(found)} {what} "
                             f"({', '.join(found)}); name the scan by {name_by}")
                resolved.append(None)
                continue
            sid = (ok or found or [None])[0]
        else:
            problems.add("REFERENCE_NO_MATCH", line, f"{desc}: row names no scan (scan_id, series_uid or "
                         "patient_id + study_date all empty)")
            resolved.append(None)
            continue
        conflict = _id_conflict(row, idents.get(sid), uids, patients) if sid is not None else ""
        if conflict:
            problems.add("REFERENCE_ID_CONFLICT", line, f"{desc}: {how} is scan {sid}, whose {conflict}; the row's "
                         "identifiers name different scans (a shifted column?)")
            resolved.append(None)
            continue
        if sid is None and row["study_date"] and not row["scan_id"] and not row["series_uid"] \
                and not re.fullmatch(r"\d{8}", normalise_date(row["study_date"]) or ""):
            hint += f" (study_date {row['study_date']!r} is not {DATE_FORMATS})"
        elif sid is None and row["patient_id"] and not row["scan_id"] and not row["series_uid"] \
                and len(pseudonymous) and pseudonymous.all() and not row["patient_id"].startswith("pt-"):
            hint += (" (scans.csv holds pseudonymous patient_ids, pt-...: use those, or name scans by series_uid; "
                     "docs/reference_schema.md)")
        elif sid is None and row["patient_id"] and not row["scan_id"] and not row["series_uid"] \
                and row["patient_id"] not in patients and row["patient_id"].lstrip("0") in zeros:
            hint += (f" (scans.csv has patient_id {zeros[row['patient_id'].lstrip('0')]!r}: did a spreadsheet drop its "
                     "leading zeros? format the column as text)")
        if sid is None:
            if on_unmatched == "error":
                problems.add("REFERENCE_NO_MATCH", line, f"{desc}: {how} matches no scan in the pipeline output{hint}")
            else:
                unmatched.setdefault(f"{how}{hint}", []).append(line)
                if left_out is not None:
                    left_out.append(line)
        resolved.append(sid)
    problems.raise_if_any()
    if unmatched:  # one warning, a few examples (not a line per row: 500 lines for a sheet of another cohort)
        log.warning("reference rows that match no scan are left out (on_unmatched=warn), e.g. %s",
                    "; ".join(f"line {lines[0]}: {how}" for how, lines in list(unmatched.items())[:6]))
        if notes is not None:  # for data_summary: every scan named (up to three) with its lines
            notes.append(_unmatched_sentence(unmatched))
    out = df.copy()
    out["scan_id"] = resolved
    out = out[out["scan_id"].notna()]
    failed = out["scan_id"].map(status) != "ok"
    if failed.any():
        ids = sorted(set(out.loc[failed, "scan_id"]))
        log.warning("%d reference row(s) name %d scan(s) the pipeline failed on (%s%s); they have no ctscore value "
                    "(failures.csv says why)", int(failed.sum()), len(ids), ", ".join(ids[:5]),
                    f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    return out


def check_duplicates(df: pd.DataFrame, path: Path) -> None:
    """Raise ``REFERENCE_DUPLICATE`` when a reader scored the same (scan, system, unit) twice."""
    key = ["scan_id", "system", "unit", "reader"]
    dup = df[df.duplicated(key, keep=False)]
    if dup.empty:
        return
    problems = Problems(path)
    for _, g in dup.groupby(key, sort=False):
        lines = [int(x) for x in g["line"]]
        r = g.iloc[0]
        problems.add("REFERENCE_DUPLICATE", lines[0], f"{r['scan_id']} {r['system']} {r['unit']} reader "
                     f"{r['reader']!r} is given {len(lines)} times (lines {', '.join(map(str, lines))})")
    problems.raise_if_any()


def _sums_units(system: str) -> bool:
    """Whether a reader's ``system`` total is the sum of its unit scores: the whole-number zone systems (six_zone,
    zhang900, lobar, lobar25; not percent_involvement, whose units overlap, nor mosmed, which has none)."""
    spec = SYSTEMS[system]
    return spec.integer and bool(spec.units)


def check_totals(df: pd.DataFrame, path: Path, notes: list[str] | None = None) -> None:
    """A reader's total against the same reader's units of the scan, for the systems of :func:`_sums_units`.

    A total that differs from the sum of the reader's scores of every unit of the scan is refused
    (``REFERENCE_TOTAL_MISMATCH``): the system defines the total as that sum, so one of the two is mistyped, and the
    total and unit comparisons would disagree without a word. Units without a total from that reader are not summed
    into one (the reader may have left it out on purpose; ctscore does not write readers' scores): a sentence for
    ``notes`` says so, naming readers and an example."""
    rows = df[df["system"].map(_sums_units)]
    if rows.empty:
        return
    key = ["scan_id", "system", "reader"]
    is_total = rows["unit"] == TOTAL
    units = rows[~is_total].groupby(key, sort=False).agg(n=("unit", "size"), summed=("value", "sum"),
                                                         lines=("line", lambda x: sorted(int(v) for v in x)))
    totals = rows[is_total].set_index(key)[["value", "line"]]  # one per key: check_duplicates ran
    both = units.join(totals, how="left")
    complete = both["n"].to_numpy() == [len(SYSTEMS[c].units) for c in both.index.get_level_values("system")]
    bad = both[complete & both["value"].notna() & (both["value"] != both["summed"])]
    problems = Problems(path)
    for (scan, system, reader), r in bad.iterrows():
        problems.add("REFERENCE_TOTAL_MISMATCH", int(r["line"]),
                     f"{scan} {system} reader {reader!r}: total {r['value']:g} is not {r['summed']:g}, the sum of the "
                     f"reader's {int(r['n'])} unit scores of the scan ({_lines_text(r['lines'])}); correct the total "
                     "or the unit scores (a total is the sum of its units)")
    problems.raise_if_any()
    without = both[both["value"].isna()]
    for (system, reader), g in without.groupby(level=["system", "reader"], sort=False):
        scan = g.index.get_level_values("scan_id")[0]
        sentence = (f"{system}: reader {reader!r} scored units of {len(g)} scan(s) without a total (e.g. {scan}, "
                    f"{_lines_text(g['lines'].iloc[0])}): a total is not computed from the units, so that reader is "
                    f"not in the {system} total comparisons of those scans; add total rows to compare totals")
        log.warning(sentence)
        if notes is not None:
            notes.append(sentence)


def load_reference(path: str | Path, scans: pd.DataFrame, on_unmatched: str = "error",
                   left_out: list[int] | None = None, notes: list[str] | None = None,
                   systems: Sequence[str] | None = None) -> pd.DataFrame:
    """Read, check and resolve the reference: scan_id, system, unit, reader, value, line.

    ``left_out``: when given, the file lines of rows left out by ``on_unmatched="warn"`` are
    appended. ``notes``: when given, sentences for data_summary are appended (rows left out, with examples; a
    column of numbers not read; units without a total). Raises ``REFERENCE_NO_MATCH`` when no row is left.
    """
    path = Path(path)
    df = read_reference(path)
    found: list[str] = list(df.attrs.get("notes", []))
    df = check_values(df, path)
    lines: list[int] = []
    df = resolve_scans(df, scans, path, on_unmatched=on_unmatched, left_out=lines, notes=found)
    if left_out is not None:
        left_out.extend(lines)
    if df.empty:
        why = found[-1] if lines else f"{len(lines)} row(s) left out"
        raise CTScoreError("REFERENCE_NO_MATCH", f"no reference row matches a scan of the pipeline output, nothing "
                           f"to compare: {why}", path)
    if lines:
        log.warning("%d reference row(s) left out: they match no scan of the pipeline output", len(lines))
    check_duplicates(df, path)
    # only the systems compared (--systems): a typo in a system left out must not stop the validation
    check_totals(df[df["system"].isin(systems)] if systems else df, path, found)
    if notes is not None:
        notes.extend(found)
    log.info("reference: %d rows, %d reader(s), %d scan(s)", len(df), df["reader"].nunique(), df["scan_id"].nunique())
    return df[["scan_id", "system", "unit", "reader", "value", "line"]].reset_index(drop=True)
