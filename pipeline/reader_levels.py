"""Landmark levels set by a reader: ``ctscore run --landmarks CSV`` (``landmarks.reader_levels``).

A radiologist reviewing ``levels.png`` who finds a level misplaced (a carina on a tracheal bronchus, a dome on the
liver) writes the level's patient z into a table and runs the same command again: the series whose row changed are
scored again (their input fingerprint holds their levels), the others are kept. The table is comma-separated, one
row per series::

    scan_id,carina,dome_right,note
    scan-3f2a9c0d1e4b,-182.5,,carina on the tracheal bronchus
    scan-77e01b2c9a5d,,-301,

A row names its series by ``scan_id`` (as ``scans.csv`` and ``report.html`` show it) or ``series_uid``
(SeriesInstanceUID); the level columns are those of :data:`scoring.landmarks.READER_LEVELS`, each a patient z in mm
(the z that ``levels.png``, ``qc.png`` and ``result.json`` give: ImagePositionPatient's z, + cranial), an empty cell
leaving that level to ctscore. Columns ``reader``, ``note`` and ``comment`` are for the researcher's records and
not read. Anything else (an unknown column: a misspelt level, an apex; a z that is not a number; a series named
twice) refuses the run before anything is scored, naming the file, the line and the column.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import CTScoreError

log = logging.getLogger(__name__)

#: The error code of a table that cannot be used (the run is refused before anything is scored).
CODE = "READER_LEVELS_INVALID"
ID_COLUMNS = ("scan_id", "series_uid")
#: Columns kept for the researcher's records, not read.
FREE_TEXT_COLUMNS = ("reader", "note", "comment")


@dataclass
class ReaderLevels:
    """A reader's level table: levels (name -> z mm) and the file line of each row, by scan id and by series UID."""

    path: str
    by_scan: dict[str, tuple[dict[str, float], int]] = field(default_factory=dict)
    by_uid: dict[str, tuple[dict[str, float], int]] = field(default_factory=dict)
    #: rows that give both ids: (line, scan_id, series_uid), checked against the run (:func:`check_against_run`)
    both: list[tuple[int, str, str]] = field(default_factory=list)

    def levels_for(self, scan_id: str, series_uid: str) -> tuple[dict[str, float], str]:
        """(the levels of this series, where they come from: ``<file name> line <n>``); ({}, "") when the table has
        no row for it. A row by scan id is used over one by series UID (the stack of ``--all-series`` over its
        series; :func:`check_against_run` warns when both name one series)."""
        a = self.by_scan.get(scan_id) if scan_id else None
        b = self.by_uid.get(series_uid) if series_uid else None
        hit = a or b
        if not hit:
            return {}, ""
        return dict(hit[0]), f"{Path(self.path).name} line {hit[1]}"

    def rows(self) -> int:
        return len(self.by_scan) + len(self.by_uid)


def _z(cell: str, path: Path, line: int, column: str) -> float | None:
    text = cell.strip()
    if not text:
        return None
    try:
        z = float(text)
    except ValueError:
        z = math.nan
    if not math.isfinite(z):
        raise CTScoreError(CODE, f"line {line}, column {column!r} of the reader's level table: {text!r} is not a "
                           "patient z in mm (a number such as -182.5, a point for decimals)", path)
    return z


def read_reader_levels(path: str | Path) -> ReaderLevels:
    """The reader's level table at ``path`` (see the module docstring). Raises CTScoreError READER_LEVELS_INVALID
    naming the file, and the line and column, for anything that cannot be used."""
    from scoring.csv_input import read_csv_table
    from scoring.landmarks import LEVEL_ORDER, READER_LEVELS

    path = Path(path)
    try:
        df = read_csv_table(path, CODE, "reader's level table", normalise=lambda h: h.strip().lower(),
                            strip_cells=True)
    except OSError as exc:
        raise CTScoreError(CODE, f"the reader's level table cannot be read ({exc.strerror or exc})", path) from None
    cols = list(df.columns)
    ids = [c for c in cols if c in ID_COLUMNS]
    if not ids:
        raise CTScoreError(CODE, f"the reader's level table has no scan_id or series_uid column (columns: "
                           f"{', '.join(cols) or 'none'}): name each series by the scan_id of scans.csv or its "
                           "SeriesInstanceUID", path)
    unknown = [c for c in cols if c not in ID_COLUMNS + FREE_TEXT_COLUMNS + READER_LEVELS]
    if unknown:
        hint = (" (apices and bases are the ends of the lung mask, not set by a reader)"
                if any(c.startswith(("apex", "base")) for c in unknown) else "")
        raise CTScoreError(CODE, f"unknown column(s) {', '.join(repr(c) for c in unknown)} in the reader's level "
                           f"table{hint}: the levels a reader can set are {', '.join(READER_LEVELS)} (patient z, mm); "
                           f"other columns may be {', '.join(FREE_TEXT_COLUMNS)}", path)
    level_cols = [c for c in cols if c in READER_LEVELS]
    if not level_cols:
        raise CTScoreError(CODE, f"the reader's level table has no level column (one or more of "
                           f"{', '.join(READER_LEVELS)})", path)
    out = ReaderLevels(str(path))
    for label, row in df.iterrows():
        line = int(label) + 2
        levels = {c: z for c in level_cols if (z := _z(str(row[c]), path, line, c)) is not None}
        named = {c: str(row[c]).strip() for c in ids if str(row[c]).strip()}
        if not named:
            raise CTScoreError(CODE, f"line {line} of the reader's level table names no series (scan_id and "
                               "series_uid empty)", path)
        if not levels:
            continue  # a row kept for the records, every level left to ctscore
        for upper, lower in LEVEL_ORDER:
            if upper in levels and lower in levels and not levels[upper] > levels[lower]:
                raise CTScoreError(CODE, f"line {line} of the reader's level table: {upper} ({levels[upper]:g} mm) "
                                   f"is not above {lower} ({levels[lower]:g} mm); z grows towards the head", path)
        if len(named) == 2:
            out.both.append((line, named["scan_id"], named["series_uid"]))
        for column, key in named.items():
            table = out.by_scan if column == "scan_id" else out.by_uid
            if key in table:
                raise CTScoreError(CODE, f"{column} {key} is on lines {table[key][1]} and {line} of the reader's "
                                   "level table: keep one row per series", path)
            table[key] = (levels, line)
    return out


@functools.lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int, size: int) -> ReaderLevels:
    return read_reader_levels(path)


def reader_levels_table(cfg: Mapping[str, Any]) -> ReaderLevels | None:
    """The table of ``landmarks.reader_levels`` (read once per process and file version), or None when not set."""
    path = (cfg.get("landmarks") or {}).get("reader_levels")
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CTScoreError(CODE, f"the reader's level table cannot be read ({exc.strerror or exc})", path) from None
    return _cached(str(path), st.st_mtime_ns, st.st_size)


def levels_for(cfg: Mapping[str, Any], scan_id: str, series_uid: str) -> tuple[dict[str, float], str]:
    """The reader's levels of one series under ``cfg`` ({} and "" when none): see :meth:`ReaderLevels.levels_for`."""
    table = reader_levels_table(cfg)
    return ({}, "") if table is None else table.levels_for(scan_id, series_uid)


def levels_fingerprint(fingerprint: str, levels: Mapping[str, float]) -> str:
    """A series' input fingerprint with its reader's levels in it: a level set, changed or removed scores the series
    again on resume; a series without levels keeps its fingerprint as it was."""
    if not levels:
        return fingerprint
    canon = json.dumps({k: round(float(v), 4) for k, v in sorted(levels.items())}, separators=(",", ":"))
    return hashlib.sha256(f"{fingerprint}\0reader_levels\0{canon}".encode()).hexdigest()


def unmatched_rows(table: ReaderLevels, tasks: Iterable[Any]) -> list[str]:
    """The ids of the table's rows that name no series of this run (``scan_id`` or ``series_uid`` of ``tasks``)."""
    tasks = list(tasks)
    scans = {t.scan_id for t in tasks}
    uids = {t.series_uid for t in tasks}
    return [k for k in table.by_scan if k not in scans] + [k for k in table.by_uid if k not in uids]


def check_against_run(table: ReaderLevels, tasks: Iterable[Any]) -> list[str]:
    """The table against the series of a run (``tasks``: scan_id, series_uid). Raises CTScoreError
    READER_LEVELS_INVALID for a row whose scan_id is another series than its series_uid (a row copied from the
    wrong line of scans.csv gave one patient's levels to two). Returns the warnings: series named both by a scan_id
    row and by another series_uid row (the scan_id row is used), and rows naming no series of the run."""
    tasks = list(tasks)
    uid_of = {t.scan_id: t.series_uid for t in tasks}
    for line, scan_id, uid in table.both:
        if scan_id in uid_of and uid_of[scan_id] != uid:
            raise CTScoreError(CODE, f"line {line} of the reader's level table: scan_id {scan_id} is series "
                               f"{uid_of[scan_id]}, not series_uid {uid}: which series is meant? give one id, or the "
                               "two of one series (scans.csv's row)", table.path)
    out = []
    twice = [(t.scan_id, table.by_scan[t.scan_id][1], table.by_uid[t.series_uid][1]) for t in tasks
             if t.scan_id in table.by_scan and t.series_uid in table.by_uid
             and table.by_scan[t.scan_id][1] != table.by_uid[t.series_uid][1]]
    if twice:
        out.append(f"{len(twice)} series have levels on two rows of the reader's level table {table.path}, by scan_id "
                   "and by series_uid: the scan_id row is used (" + "; ".join(
                       f"{sid}: line {a} over line {b}" for sid, a, b in twice[:3]) + (", ..." if len(twice) > 3
                                                                                       else "") + ")")
    left = unmatched_rows(table, tasks)
    if left:
        out.append(f"{len(left)} of the {table.rows()} rows of the reader's level table {table.path} name no series "
                   f"of this run (e.g. {', '.join(left[:3])}): their levels are not used (a scan_id of another run or "
                   "pseudonym salt, or a mistyped SeriesInstanceUID?)")
    return out
