"""Scans excluded at QC review: ``--exclude REVIEW.csv`` of ``ctscore stats``, ``ctscore validate`` and
``ctscore methods``.

A researcher reviewing ``qc.png`` and ``levels.png`` before analysis decides that some scans cannot be used (a
segmentation that missed a lung, heavy motion, the wrong phase). Those decisions go into one table, kept beside the
run and given unchanged to every analysis, so that the statistics, the agreement with the readers and the Methods
text all leave out the same scans and report how many were left out and why (the flow of a STROBE / CONSORT
diagram)::

    scan_id,reason,reviewer,note
    scan-3f2a9c0d1e4b,segmentation failure,AB,left lung missed below the hilum
    scan-77e01b2c9a5d,motion,AB,

A row names its scan by ``scan_id`` (as ``scans.csv``, ``report.html`` and the ``<scan_id>/`` folders spell it)
or ``series_uid`` (SeriesInstanceUID), or both (they must then name the same scan). ``reason`` is required on
every row: the reports count the exclusions by reason, as written (spaces trimmed; case counts, so write each
reason one way). ``reviewer``, ``note`` and ``comment`` are for the researcher's records and are not read; other
columns are ignored with a warning. None of these free-text columns is copied into any output.

Read strictly (``EXCLUSIONS_INVALID``, naming the file, the line and the column), because a scan meant to be
excluded that stays in would silently change the results: a row naming no scan of the run (a typo, another run's
ids: a different pseudonym salt gives different scan ids), a scan named twice, a row whose two ids name different
scans, an empty reason. A scan that failed in the run (or that ``stats`` leaves out for another reason) may be
listed: it is counted as excluded at review only if the analysis would otherwise have used it.

**A review sheet** (``ctscore review-sheet OUT``, :mod:`pipeline.review_sheet`) is the same table with a row for
every scan of the run and a decision column, ``exclude``: ``yes`` (also ``y``, ``x``, ``1``, ``true``) excludes the
scan, for its ``reason``; ``no`` (``n``, ``0``, ``false``, ``keep``) keeps it, reviewed; empty means not reviewed
yet. The reports then also say how many of the analysed scans were reviewed, and a sheet that excludes nothing is a
valid outcome ("all 40 scans reviewed, none excluded"). A reason written beside an empty or ``no`` decision is
refused (which was meant?), as is any other value. The sheet's other columns (scores, flags, image paths) are
there for the reviewer. Its ``scoring_fingerprint`` (:func:`scoring_fingerprint`: a hash of what the scan's row of
scans.csv says of its scoring: status, segmenter, model, configuration, version, volumes, scores, QC flags) is
compared with the run's, on the rows with a decision: a scan scored again after the sheet was made (other settings,
other masks, ``--overwrite``) was reviewed on pictures that are no longer its own, and the sheet is refused (naming
the shown status or score that changed, if one did). A matching fingerprint covers the shown status and scores, which
a spreadsheet may re-format (13.3 for 13.27, a decimal comma): they are compared only on a decided row without its
fingerprint (a column deleted), which a warning names as unchecked. An undecided row naming a scan that is no longer
in the run is skipped with a warning; a decided one is refused, naming its lines. A review sheet exported with
semicolons (its own header, every column, separated by ';': :func:`read_table`) is read, its decimal commas as points;
an Excel workbook is named as such. A DataFrame whose decision or reason is missing (NaN) where a decision-looking row
needs it (pandas' defaults read 'N/A' and 'NA' as NaN) is refused, saying how to read the sheet. A list
without an ``exclude`` column whose other column holds yes / no values and leaves the rows marked no without a
reason (a renamed decision column: read as a list, every row would be excluded) is refused too.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.errors import CTScoreError

log = logging.getLogger(__name__)

#: The error code of an exclusion list that cannot be used (the analysis is refused before anything is written).
CODE = "EXCLUSIONS_INVALID"
ID_COLUMNS = ("scan_id", "series_uid")
#: Columns kept for the researcher's records, not read and not copied into outputs.
FREE_TEXT_COLUMNS = ("reviewer", "note", "comment")
REASON = "reason"
#: The decision column of a review sheet (module docstring), and the values it takes (case-insensitive).
DECISION = "exclude"
EXCLUDE_VALUES = ("yes", "y", "x", "1", "true", "exclude", "excluded")
KEEP_VALUES = ("no", "n", "0", "false", "keep", "kept", "include")
#: The columns of a review sheet compared with the run's scans.csv (a sheet made before the scan was scored again).
COMPARED_COLUMNS = ("status", "six_zone_total", "zhang900_total", "percent_opacity")
#: The review sheet's column holding :func:`scoring_fingerprint`, and the scans.csv columns it hashes.
FINGERPRINT = "scoring_fingerprint"
FINGERPRINT_COLUMNS = ("status", "segmenter", "model_id", "scores_config_sha256", "ctscore_version",
                       "lung_volume_ml_right", "lung_volume_ml_left", "lesion_volume_ml", "faint_ggo_volume_ml",
                       "ggo_volume_ml", "consolidation_volume_ml", "percent_opacity", "six_zone_total",
                       "zhang900_total", "mosmed_category", "lobar20_total", "qc_flags")


@dataclass
class Exclusions:
    """An exclusion list read against a run's scans: the reason of each excluded scan (by scan_id), the list's
    file (or ``"a DataFrame"``) and its SHA-256 (of the file's bytes; of the table's CSV text for a DataFrame)."""

    source: str
    sha256: str
    reasons: dict[str, str] = field(default_factory=dict)
    #: a review sheet's scans with a decision (excluded or kept); None for a list of exclusions alone
    reviewed: frozenset[str] | None = None
    #: the rows naming a scan (a review sheet: decided or not)
    n_rows: int = 0

    @property
    def scan_ids(self) -> set[str]:
        return set(self.reasons)

    @property
    def is_sheet(self) -> bool:
        return self.reviewed is not None

    def counts(self, scan_ids: set[str] | None = None) -> Counter:
        """Excluded scans per reason (of ``scan_ids`` only, when given), most frequent first."""
        return Counter(r for s, r in self.reasons.items() if scan_ids is None or s in scan_ids)

    def setting(self) -> str:
        """The list as the reports name it: its file name (not its folder, which may name a patient or a site),
        its hash and its size."""
        if self.is_sheet:
            return (f"{Path(self.source).name} (sha256 {self.sha256[:12]}, review sheet: {len(self.reviewed)} of "
                    f"{self.n_rows} rows decided, {len(self.reasons)} marked yes)")
        return f"{Path(self.source).name} (sha256 {self.sha256[:12]}, {len(self.reasons)} scan(s))"

    def reviewed_text(self, used: set[str]) -> str:
        """'all 40' or '38 of 40': how many of the ``used`` scans the review sheet decided on (a sheet only)."""
        n = len(used & (self.reviewed or frozenset()))
        return f"all {n}" if n == len(used) and n > 1 else f"{n} of {len(used)}"

    def check_leaves_some(self, used: set[str], path: str | Path | None = None) -> None:
        """EXCLUSIONS_INVALID when the list excludes every one of the ``used`` scans (nothing left to analyse), as
        ``stats`` refuses it: for ``methods``, which would otherwise write "198 were excluded" of 198. ``path``: the
        file to name (None for a DataFrame)."""
        if used and used <= self.scan_ids:
            raise CTScoreError(CODE, f"the exclusion list leaves no scored scan to analyse (it excludes all "
                               f"{len(used)})", path)

    def undecided(self, used: set[str], what: str) -> int:
        """How many of the ``used`` scans (``what``: what they are) have no decision on the review sheet, with a
        warning when some have (they are analysed as if kept)."""
        n = len(used - (self.reviewed or frozenset())) if self.is_sheet else 0
        if n:
            log.warning("review sheet %s: %d of the %d %s have no decision in its %r column (not reviewed yet?); "
                        "they are analysed", Path(self.source).name, n, len(used), what, DECISION)
        return n


def by_reason(counts: Counter) -> str:
    """'motion: 2; segmentation failure: 1' (most frequent first, then alphabetical)."""
    return "; ".join(f"{r}: {n}" for r, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def check_source(source: object) -> None:
    """BAD_OPTION, before anything is read, when ``source`` is neither a path nor a pandas DataFrame (the same
    message from run_stats, run_validation and methods_text)."""
    if not isinstance(source, (str, os.PathLike, pd.DataFrame)):
        raise CTScoreError("BAD_OPTION", f"exclude must be a path to the exclusion list (CSV), a DataFrame of it, or "
                           f"None, not {type(source).__name__}")


def _read(source: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str, str]:
    """The table as text with row label + 2 = file line, its name for messages, its SHA-256."""
    if isinstance(source, pd.DataFrame):
        table = source.copy()
        table.columns = [str(c).strip() for c in table.columns]
        table = table.reset_index(drop=True)
        _refuse_missing_as_undecided(table)
        table = table.astype(object).where(table.notna(), "").astype(str)
        digest = hashlib.sha256(table.to_csv(index=False).encode("utf-8")).hexdigest()
        blank = table.apply(lambda col: col.str.strip() == "").all(axis=1)  # a spreadsheet's ",,," rows, as the
        return table[~blank], "a DataFrame", digest                      # file reader drops them
    path = Path(source)
    if not path.is_file():
        raise CTScoreError("INPUT_NOT_FOUND", "exclusion list (--exclude) not found"
                           + (": it is a folder, give the CSV file" if path.is_dir() else ""), path)
    table = read_table(path, "exclusion list")
    return table, str(path), hashlib.sha256(path.read_bytes()).hexdigest()


#: the review sheet's numeric columns, whose decimal comma a semicolon export writes
NUMERIC_SHOWN = ("six_zone_total", "zhang900_total", "percent_opacity")
_DECIMAL_COMMA = re.compile(r"-?\d*,\d+")


def read_table(path: str | Path, what: str) -> pd.DataFrame:
    """A list or review sheet as :func:`scoring.csv_input.read_csv_table` reads it (problems: ``EXCLUSIONS_INVALID``),
    and also a review sheet exported with semicolons (:func:`semicolon_sheet`), its decimal commas read as points
    (``attrs["separator"]`` is then ``";"``). An Excel workbook is named as such."""
    from scoring.csv_input import read_csv_table

    path = Path(path)
    with open(path, "rb") as fh:
        if fh.read(4) == b"PK\x03\x04":  # a zip: .xlsx / .ods, whatever its name
            raise CTScoreError(CODE, f"the {what} is an Excel workbook (or another spreadsheet's own file), not CSV "
                               "text: save it as CSV UTF-8 (Excel: File > Save As > CSV UTF-8)", path)
    if not semicolon_sheet(path):
        table = read_csv_table(path, CODE, what)
        table.attrs["separator"] = ","
        return table
    return _read_semicolon_sheet(path, what)


def semicolon_sheet(path: str | Path) -> bool:
    """Whether the file's header row is a review sheet's own header (every column ``ctscore review-sheet`` writes,
    maybe more of the reviewer's) separated by semicolons and without a comma: a spreadsheet's export in a locale
    whose list separator is ';' (European Excel writes ';' in every CSV format). Unambiguous, so it is read; any
    other semicolon-separated table stays refused."""
    from pipeline.review_sheet import COLUMNS

    try:
        text = Path(path).read_bytes()[:65536].decode("utf-8-sig", errors="replace")
    except OSError:
        return False
    head = next((line for line in text.splitlines() if line.strip()), "")
    if "," in head or ";" not in head:
        return False
    return set(COLUMNS) <= {c.strip().strip('"').strip() for c in head.split(";")}


def _read_semicolon_sheet(path: Path, what: str) -> pd.DataFrame:
    """:func:`read_table` for a semicolon-separated review sheet: as read_csv_table reads a comma-separated one (row
    label + 2 = file line; blank rows dropped; short rows padded; a row longer than the header refused unless the
    extra cells are empty), decimal commas of :data:`NUMERIC_SHOWN` as points."""
    import csv
    import io

    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CTScoreError(CODE, f"the {what} is not UTF-8 text; save it as CSV UTF-8", path) from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";", strict=True)
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for row in reader:
            rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise CTScoreError(CODE, f"the {what} is not a readable CSV file (line {start}): {exc}", path) from None
    rows = [(n, r) for n, r in rows if "".join(r).strip()]  # blank lines and ";;;;" rows
    names = [c.strip() for c in rows[0][1]]
    twice = sorted({n for n in names if n and names.count(n) > 1})
    if twice:
        raise CTScoreError(CODE, f"column {twice[0]!r} appears twice in the header of the {what}", path)
    width = len(names)
    records, labels = [], []
    for n, cells in rows[1:]:
        if len(cells) > width:
            if any(c.strip() for c in cells[width:]):
                raise CTScoreError(CODE, f"line {n} of the {what} has {len(cells)} fields, the header {width}: a "
                                   "semicolon inside a value? quote the cell", path)
            cells = cells[:width]
        records.append(cells + [""] * (width - len(cells)))
        labels.append(n - 2)
    table = pd.DataFrame(records, columns=range(width), index=pd.Index(labels, dtype="int64"), dtype=object)
    keep = [i for i, name in enumerate(names) if name or (table[i].str.strip() != "").any()]
    table = table[keep]
    table.columns = [names[i] or f"unnamed_{i + 1}" for i in keep]
    for c in NUMERIC_SHOWN:
        if c in table.columns:
            table[c] = [v.replace(",", ".") if _DECIMAL_COMMA.fullmatch(v.strip()) else v for v in table[c]]
    log.info("review sheet %s: read as exported with semicolons (decimal commas as points)", path.name)
    table.attrs.update(source=str(path), separator=";")
    return table


def _refuse_missing_as_undecided(table: pd.DataFrame) -> None:
    """A DataFrame's missing (NaN) cell where a decision or a reason was written: ``pd.read_csv`` reads 'NA', 'N/A',
    'null', 'nan' as NaN (and an empty cell too), so a decided-looking row would silently become undecided (or an
    exclusion lose its reason). Refused, naming the row, with the way to read the sheet as the file route reads it.
    A row with nothing but its NaN decision stays undecided (an empty cell and 'NA' cannot be told apart)."""
    def text(col: str) -> pd.Series:
        return table[col].astype(object).where(table[col].notna(), "").astype(str).str.strip() \
            if col in table.columns else pd.Series("", index=table.index)

    hint = ("pandas reads 'NA', 'N/A', 'null' and empty cells alike as NaN: read the sheet with "
            "pd.read_csv(path, dtype=str, keep_default_na=False), or give its path")
    if DECISION in table.columns:
        missing = table[DECISION].isna()
        said = (text(REASON) != "") | (text("reviewer") != "")
        bad = table.index[missing & said]
        if len(bad):
            k = int(bad[0])
            raise CTScoreError(CODE, f"line {k + 2} (row {k}), column {DECISION!r}: missing (NaN) beside reason "
                               f"{text(REASON)[k]!r} / reviewer {text('reviewer')[k]!r}: was a decision written "
                               f"there? {hint}")
        if missing.any() and table[DECISION].notna().any():
            log.warning("review sheet (a DataFrame): %d row(s) with a missing (NaN) %r are read as not reviewed; if "
                        "a decision was written there ('N/A', 'NA', 'null'), %s", int(missing.sum()), DECISION, hint)
    if REASON in table.columns:
        missing = table[REASON].isna()
        yes = table[DECISION].map(_decision).isin(EXCLUDE_VALUES) if DECISION in table.columns else \
            pd.Series(True, index=table.index)
        named = (text("scan_id") != "") | (text("series_uid") != "")
        bad = table.index[missing & yes & named]
        if len(bad):
            k = int(bad[0])
            raise CTScoreError(CODE, f"line {k + 2} (row {k}), column {REASON!r}: missing (NaN) on an exclusion: "
                               f"was a reason written there? {hint}")


def _where(line: int, column: str, value: str) -> str:
    return f"line {line}, column '{column}': value {value!r}"


def read_exclusions(source: str | Path | pd.DataFrame, scans: pd.DataFrame) -> Exclusions:
    """Read an exclusion list and check it against ``scans`` (a run's ``scans.csv``, every row whatever its status:
    columns ``scan_id`` and, for rows naming a series, ``series_uid``). Returns the reason of each scan it excludes.

    ``source``: a CSV path or a DataFrame of the same table (its "line N" in a message is row label N - 2).
    Problems raise ``EXCLUSIONS_INVALID`` naming the file and the line (module docstring)."""
    check_source(source)
    table, name, digest = _read(source)
    path = None if isinstance(source, pd.DataFrame) else source

    def bad(message: str) -> CTScoreError:
        return CTScoreError(CODE, message, path)

    cols = list(table.columns)
    ids = [c for c in ID_COLUMNS if c in cols]
    if not ids or REASON not in cols:
        lacking = ([f"an id column ({' or '.join(ID_COLUMNS)})"] if not ids else []) + \
                  ([f"'{REASON}'"] if REASON not in cols else [])
        near = [f"{c!r} looks like {hit!r}" for c in cols
                for hit in difflib.get_close_matches(c.lower(), [*ID_COLUMNS, REASON], n=1, cutoff=0.75)
                if c != hit]
        raise bad(f"the exclusion list lacks {' and '.join(lacking)}" + (f" ({'; '.join(near)})" if near else "")
                  + f"; its columns: {', '.join(map(repr, cols)) or 'none'}. Expected: scan_id (or series_uid), "
                  "reason, and optionally reviewer, note, comment")
    sheet = DECISION in cols
    for c in cols if not sheet else ():  # a review sheet whose decision column was renamed: read as a list, every
        values = table[c].map(_decision)  # row would be excluded, those marked no too
        said = set(values) - {""}
        keep = values.isin(KEEP_VALUES)
        reasonless = REASON in cols and keep.any() and (table.loc[keep, REASON].str.strip() == "").all()
        if c.strip().lower() == DECISION or (c not in (*ID_COLUMNS, REASON) and said <= {*EXCLUDE_VALUES, *KEEP_VALUES}
                                             and reasonless):
            raise bad(f"column {c!r} holds a review sheet's decisions (yes / no; the rows marked no have no reason): "
                      f"name it {DECISION!r}, so that those rows are kept (read as a list of exclusions, every row "
                      "would be excluded)")
    # the columns a sheet shows the reviewer: not read, not warned about
    from pipeline.review_sheet import SHOWN_COLUMNS

    read = (*ID_COLUMNS, REASON, DECISION) if sheet else (*ID_COLUMNS, REASON)
    other = [c for c in cols if c not in (*read, *FREE_TEXT_COLUMNS, *(SHOWN_COLUMNS if sheet else ()))]
    if other:
        log.warning("exclusion list %s: column(s) %s not read (only %s are; reviewer, note and comment are kept for "
                    "your records); none is copied into the outputs", name, ", ".join(map(repr, other)),
                    ", ".join(read))
    run_ids = scans["scan_id"].astype(str).str.strip()
    by_uid: dict[str, list[str]] = {}  # a series scored as several stacks (--all-series) has several scan ids
    if "series_uid" in scans.columns:
        uids = scans["series_uid"].fillna("").astype(str).str.strip()
        for uid, sid in zip(uids, run_ids):
            if uid and sid not in by_uid.setdefault(uid, []):
                by_uid[uid].append(sid)
    known = set(run_ids)
    lower = {k.lower(): k for k in known}
    compared = [c for c in COMPARED_COLUMNS if sheet and c in cols and c in scans.columns]
    shown = {sid: dict(zip(compared, vals)) for sid, *vals in
             zip(run_ids, *(scans[c] for c in compared))} if compared else {}
    prints = dict(zip(run_ids, fingerprints(scans))) if sheet else {}
    unchecked: list[int] = []
    absent: list[tuple[int, str]] = []
    reasons: dict[str, str] = {}
    reviewed: set[str] = set()
    line_of: dict[str, int] = {}
    for label, row in table.iterrows():
        line = int(label) + 2
        sid = str(row.get("scan_id", "")).strip()
        uid = str(row.get("series_uid", "")).strip()
        reason = " ".join(str(row[REASON]).split())
        decision = _decision(row.get(DECISION, "")) if sheet else "yes"
        if sheet and decision not in ("", *EXCLUDE_VALUES, *KEEP_VALUES):
            raise bad(_where(line, DECISION, str(row[DECISION])) + " is no decision: write yes to exclude the scan, "
                      "no to keep it, or leave it empty while the scan is not reviewed")
        if sheet and decision not in EXCLUDE_VALUES and reason:
            raise bad(_where(line, REASON, reason) + f" beside {DECISION!r} "
                      + (f"{str(row[DECISION]).strip()!r}" if decision else "left empty")
                      + ": is the scan excluded? Write yes in 'exclude' to exclude it, or clear the reason")
        if sheet and not sid and not uid and not decision:
            continue  # an unfinished row of the sheet
        if not sid and not uid:
            raise bad(f"line {line}: no scan named (scan_id{' or series_uid' if 'series_uid' in cols else ''} is "
                      "empty)")
        if sheet and not decision and ((sid and sid not in known) or (uid and uid not in by_uid)):
            absent.append((line, sid or uid))  # nothing decided on a scan no longer in the run: skipped
            continue
        if sid and sid not in known:
            close = [lower[sid.lower()]] if sid.lower() in lower else \
                difflib.get_close_matches(sid, sorted(known), n=1, cutoff=0.8)
            raise bad(_where(line, "scan_id", sid) + " is no scan of this run's scans.csv"
                      + (f" (did you mean {close[0]!r}?)" if close else
                         " (scan ids are salted: another run, or another pseudonym salt, gives other ids)")
                      + (_absent_decided(table, known) if sheet else ""))
        if uid:
            if uid not in by_uid:
                raise bad(_where(line, "series_uid", uid) + " is the SeriesInstanceUID of no scan of this run's "
                          "scans.csv")
            stacks = by_uid[uid]
            if sid and sid not in stacks:
                raise bad(f"line {line}: scan_id {sid!r} and series_uid {uid!r} name two different scans (the UID "
                          f"is scan {stacks[0]!r}): which one is excluded?")
            if not sid and len(stacks) > 1:
                raise bad(_where(line, "series_uid", uid) + f" names a series scored as {len(stacks)} stacks "
                          f"({', '.join(stacks)}: --all-series): name each stack to exclude by its scan_id")
            sid = sid or stacks[0]
        if sid in line_of:
            raise bad(f"line {line}: scan {sid!r} is " + ("excluded twice" if not sheet else "on two rows")
                      + f" (also line {line_of[sid]}); one row per scan")
        line_of[sid] = line
        if not decision:
            continue  # on the sheet, not reviewed yet
        if sheet:
            was = _cell(row.get(FINGERPRINT, ""))
            if was != prints.get(sid):  # a matching fingerprint covers the shown columns (which a spreadsheet
                _check_scored_as_shown(row, line, sid, shown.get(sid, {}), bad)  # re-formats: 13.3, 13,27)
            if was and was != prints.get(sid):
                raise bad(f"line {line}, column '{FINGERPRINT}': scan {sid!r} was scored again after the sheet was "
                          f"made (fingerprint {was!r}, now {prints.get(sid)!r}: its segmenter, model, settings, "
                          "version, volumes, scores or flags changed), and its decision was taken on other pictures. "
                          "Review it again: ctscore review-sheet OUT --update (-o this sheet) clears its decision "
                          "and keeps the others")
            if not was:
                unchecked.append(line)
        reviewed.add(sid)
        if decision in KEEP_VALUES:
            continue
        if not reason:
            raise bad(_where(line, REASON, str(row[REASON])) + " is empty: give every exclusion its reason (the "
                      "reports count the exclusions by reason)")
        reasons[sid] = reason
    if absent:
        log.warning("review sheet %s: %d undecided row(s) name scans not in this run (%s%s; no longer in this run?): "
                    "skipped; ctscore review-sheet OUT --update drops them", name, len(absent),
                    ", ".join(f"line {n}: {s}" for n, s in absent[:5]), ", ..." if len(absent) > 5 else "")
    if unchecked:
        log.warning("review sheet %s: %d decided row(s) (line %s%s) have no %s: whether their scan was scored again "
                    "since the decision (other pictures) cannot be checked", name, len(unchecked),
                    ", ".join(map(str, unchecked[:5])), ", ..." if len(unchecked) > 5 else "", FINGERPRINT)
    spellings: dict[str, set[str]] = {}
    for r in reasons.values():
        spellings.setdefault(r.casefold(), set()).add(r)
    twice = [" / ".join(sorted(v)) for v in spellings.values() if len(v) > 1]
    if twice:
        log.warning("exclusion list %s: reasons spelled several ways are counted apart: %s (write each reason one "
                    "way)", name, "; ".join(twice))
    if sheet and not reviewed:
        raise bad(f"the review sheet holds no decision: write yes (exclude) or no (keep) in its {DECISION!r} column "
                  "for each scan reviewed, or leave --exclude out")
    if not reasons and not sheet:
        raise bad("the exclusion list names no scan (only a header, or empty rows): give it one row per excluded "
                  "scan, or leave --exclude out")
    return Exclusions(source=name, sha256=digest, reasons=reasons,
                      reviewed=frozenset(reviewed) if sheet else None, n_rows=len(line_of))


def _absent_decided(table: pd.DataFrame, known: set[str]) -> str:
    """The lines of a review sheet's decided rows naming a scan not in the run, for the message refusing them."""
    lines = [int(label) + 2 for label, row in table.iterrows()
             if (sid := str(row.get("scan_id", "")).strip()) and sid not in known
             and _decision(row.get(DECISION, ""))]
    return (f". A scan no longer in this run? Its decision is refused, not dropped: delete line(s) "
            f"{', '.join(map(str, lines[:10]))}{', ...' if len(lines) > 10 else ''} of the sheet (or run "
            "ctscore review-sheet OUT --update, which names them)") if lines else ""


def _canonical(value: object) -> str:
    """A cell as the fingerprint reads it, alike from text (scans.csv) and typed tables: numbers to 6 significant
    digits (12.08, "12.08" and "12.080000000001" alike; 6, 6.0 and "6" alike), empty and NaN as ""."""
    text = _cell(value)
    try:
        number = float(text)
    except ValueError:
        return text
    return "" if math.isnan(number) else format(number, ".6g")


def scoring_fingerprint(row: Mapping[str, object]) -> str:
    """``fp-`` and 12 hex digits of the SHA-256 of a scan's :data:`FINGERPRINT_COLUMNS` (a missing column as
    empty): the same for a scan scored the same way, another for a scan scored again with other settings, masks,
    model or version (its pictures are then other ones). The prefix keeps a spreadsheet or pandas from reading it as
    a number (0.5 % of bare hashes are all digits, or digits around an "e")."""
    text = "|".join(f"{c}={_canonical(row.get(c, ''))}" for c in FINGERPRINT_COLUMNS)
    return "fp-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def fingerprints(scans: pd.DataFrame) -> list[str]:
    """:func:`scoring_fingerprint` of each row of ``scans``."""
    cols = [c for c in FINGERPRINT_COLUMNS if c in scans.columns]
    return [scoring_fingerprint(dict(zip(cols, vals))) for vals in zip(*(scans[c] for c in cols))] if cols else \
        [scoring_fingerprint({})] * len(scans)


def _decision(value: object) -> str:
    """A decision cell as compared with EXCLUDE_VALUES / KEEP_VALUES: trimmed, lower case; 1.0 and 0.0 (how pandas
    reads a 0/1 column with empty cells) as 1 and 0."""
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip().lower()
    return text.split(".")[0] if text in ("1.0", "0.0", "1.00", "0.00") else text


def _cell(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()


def scored_otherwise(row: pd.Series, run: dict) -> tuple[str, str, str] | None:
    """The first of the run's values (``run``: column -> value of scans.csv) that a review sheet's row shows
    otherwise, as (column, the sheet's, the run's); None when the row shows the scan as the run scored it (a cell
    the reviewer cleared shows nothing to compare; numbers within 0.005, as a spreadsheet may re-save them, a decimal
    comma as a point). Compared only on rows without a :data:`FINGERPRINT` (which covers these columns, and is not
    changed by a spreadsheet's re-formatting: 13.27 shown as 13.3)."""
    for col, now in run.items():
        was, now = _cell(row.get(col, "")), _cell(now)
        if was == now or not was:
            continue
        if _DECIMAL_COMMA.fullmatch(was):  # 13,27: a spreadsheet's decimal comma
            was = was.replace(",", ".")
        try:
            if abs(float(was) - float(now)) <= 0.0051:  # 12.08 re-saved by a spreadsheet as 12.080000000000001
                continue
        except ValueError:
            pass
        return col, was, now
    return None


def _check_scored_as_shown(row: pd.Series, line: int, sid: str, run: dict, bad) -> None:
    """EXCLUSIONS_INVALID when a decided row's status or scores (as the sheet shows them) are no longer the run's:
    the scan was scored again after the sheet was made, and its decision was taken on other pictures."""
    other = scored_otherwise(row, run)
    if other is not None:
        col, was, now = other
        raise bad(f"line {line}, column '{col}': the sheet shows {was!r}, the run's scans.csv {now!r} for scan "
                  f"{sid!r}: it was scored again after the sheet was made, and its decision was taken on other "
                  "pictures. Review it again: ctscore review-sheet OUT --update (-o this sheet) clears its decision "
                  "and keeps the others")


def summary_rows(exclusions: Exclusions, used: set[str], used_label: str, listed_elsewhere: str
                 ) -> list[tuple[str, str]]:
    """The rows a ``data_summary`` gives an exclusion list: the list, the scans the analysis would have used
    without it (``used``: their scan ids; ``used_label``: what they are), those of them it excluded, by reason, and
    the listed scans that were not in the analysis anyway (``listed_elsewhere``: why, e.g. "failed in the run")."""
    hit = exclusions.scan_ids & used
    rows = [("exclusion list (--exclude)", exclusions.setting()),
            (used_label, str(len(used))),
            ("scans excluded at QC review", f"{len(hit)}" + (f" ({by_reason(exclusions.counts(hit))})" if hit else ""))]
    rest = len(exclusions.reasons) - len(hit)
    if rest:
        rows.append(("listed for exclusion but not in the analysis anyway", f"{rest} ({listed_elsewhere})"))
    if exclusions.is_sheet:
        missing = exclusions.undecided(used, used_label)
        rows.insert(2, ("of these, reviewed (review sheet)", exclusions.reviewed_text(used)
                        + (f" ({missing} without a decision: analysed)" if missing else "")))
    return rows
