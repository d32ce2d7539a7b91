"""``ctscore review-sheet OUT``: the sheet a researcher fills in while reviewing a run's QC pictures, one row per scan,
which ``ctscore stats`` / ``validate`` / ``methods --exclude`` then read (:mod:`scoring.exclusions`).

Each row shows what the reviewer needs beside the pictures (the scan's pseudonymous patient id and date, its status,
scores, % opacity and QC flags, and the paths of its ``qc.png`` and ``levels.png`` relative to the run folder) and
leaves four columns to fill: ``exclude`` (yes / no; empty while not reviewed), ``reason`` (for yes), ``reviewer`` and
``note`` (for the researcher's records, never copied into an output). Scans with QC flags come first, then the rest,
each group in ``scans.csv``'s order; failed scans last (they are not analysed whatever the sheet says).

The sheet is written once, in UTF-8 with a byte-order mark (so that Excel opens it as UTF-8): an existing sheet is
never replaced (it may hold a reviewer's decisions) unless ``overwrite`` is given, and a file that is not a review
sheet never. ``update`` brings an existing sheet up to date after the run scored more scans (or scored some again),
keeping its decisions. The run folder is only read, except for the default ``OUT/review.csv``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from pipeline.errors import CTScoreError
from scoring.exclusions import (
    COMPARED_COLUMNS,
    DECISION,
    FINGERPRINT,
    FREE_TEXT_COLUMNS,
    REASON,
    fingerprints,
)

log = logging.getLogger(__name__)

#: The default file name, in the run folder.
SHEET_NAME = "review.csv"
#: The columns shown to the reviewer (scans.csv's, then the pictures' paths, then the fingerprint of the scan's
#: scoring that ``--exclude`` compares with the run's: scoring.exclusions.scoring_fingerprint).
SHOWN_COLUMNS = ("patient_id", "study_date", "status", "six_zone_total", "zhang900_total", "percent_opacity",
                 "qc_flags", "qc_png", "levels_png", FINGERPRINT)
#: The columns the reviewer fills in.
DECISION_COLUMNS = (DECISION, REASON, FREE_TEXT_COLUMNS[0], FREE_TEXT_COLUMNS[1])
COLUMNS = ("scan_id", *SHOWN_COLUMNS, *DECISION_COLUMNS)


def review_sheet(out_dir: str | Path) -> pd.DataFrame:
    """The review sheet of the run in ``out_dir`` (columns :data:`COLUMNS`, all text), without writing it.

    Raises CTScoreError ``INPUT_NOT_FOUND`` (no such folder) and ``NOTHING_TO_DESCRIBE`` (no readable ``scans.csv``
    of a run in it), as ``ctscore methods`` does."""
    from pipeline.methods import _read_scans

    out = Path(out_dir)
    scans = _read_scans(out)  # every column as text, "" for empty
    sheet = pd.DataFrame({c: scans[c] if c in scans.columns else "" for c in ("scan_id", *SHOWN_COLUMNS[:-3])})
    sheet["status"] = sheet["status"].str.strip()
    for picture in ("qc", "levels"):  # where the picture is, if the scan has it (a failed scan has none)
        sheet[f"{picture}_png"] = [f"{sid}/{picture}.png" if sid and (out / sid / f"{picture}.png").is_file() else ""
                                   for sid in sheet["scan_id"]]
    sheet[FINGERPRINT] = fingerprints(scans)
    for c in DECISION_COLUMNS:
        sheet[c] = ""
    group = [0 if status == "ok" and flags.strip() else 1 if status == "ok" else 2
             for status, flags in zip(sheet["status"], sheet["qc_flags"])]
    sheet = sheet.assign(_group=group).sort_values("_group", kind="stable").drop(columns="_group")
    return sheet.reset_index(drop=True)[list(COLUMNS)]


def write_review_sheet(out_dir: str | Path, output: str | Path | None = None, overwrite: bool = False,
                       update: bool = False) -> Path:
    """Write :func:`review_sheet` to ``output`` (default ``OUT/review.csv``), all or nothing; returns the path.

    ``update``: bring an existing sheet up to date with the run, keeping its decisions: a row per scan of the run
    now (new scans added, in the sheet's order), the shown columns as the run has them, and the decision columns
    (and any column the reviewer added) of each scan still scored as the sheet shows it; a scan scored again since
    (other status or scores: :func:`scoring.exclusions.scored_otherwise`) has its decision cleared, its note saying
    what it was. Refused (``OUTPUT_EXISTS``) when the sheet names scans that are not in the run.

    Raises as :func:`review_sheet`, and CTScoreError ``OUTPUT_EXISTS`` when ``output`` exists and neither
    ``overwrite`` nor ``update`` is given (the file may hold a reviewer's decisions) or is not a review sheet,
    ``OUTPUT_UNWRITABLE`` when it cannot be written, ``BAD_OPTION`` for both ``overwrite`` and ``update``."""
    from pipeline.outputs import atomic_write_bytes

    for name, value in (("overwrite", overwrite), ("update", update)):
        if not isinstance(value, bool):
            raise CTScoreError("BAD_OPTION", f"{name} must be True or False, not {value!r}")
    if overwrite and update:
        raise CTScoreError("BAD_OPTION", "give overwrite (a new sheet, the decisions lost) or update (the decisions "
                           "kept), not both")
    sheet = review_sheet(out_dir)
    path = Path(output) if output is not None else Path(out_dir) / SHEET_NAME
    if path.is_dir():
        raise CTScoreError("OUTPUT_UNWRITABLE", f"is a folder: give the file to write (e.g. {SHEET_NAME})", path)
    if path.exists():
        if not _is_sheet(path):
            raise CTScoreError("OUTPUT_EXISTS", "a file that is not a review sheet is there (its first line lacks "
                               f"scan_id and {DECISION}): it is not replaced, even with --overwrite or --update; "
                               "give another file with -o", path)
        if update:
            sheet = _updated(sheet, path)
        elif not overwrite:
            raise CTScoreError("OUTPUT_EXISTS", "a review sheet is already there and may hold a reviewer's "
                               "decisions: it is not replaced (--update adds the run's new scans and keeps its "
                               "decisions; -o writes another file; --overwrite replaces it)", path)
    try:  # with a BOM: Excel then opens the file as UTF-8 (a reason or note with accents stays as written)
        atomic_write_bytes(path, sheet.to_csv(index=False).encode("utf-8-sig"))
    except OSError as exc:
        raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot write the review sheet ({exc.strerror or exc}); give "
                           "a file elsewhere with -o", path) from exc
    return path


def _updated(sheet: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The run's sheet ``sheet`` with the decisions of the sheet at ``path`` (write_review_sheet's ``update``)."""
    from scoring.csv_input import read_csv_table
    from scoring.exclusions import CODE, scored_otherwise

    old = read_csv_table(path, CODE, "review sheet")  # rows empty in every column are dropped
    if "scan_id" not in old.columns:
        raise CTScoreError(CODE, "the review sheet has no scan_id column", path)
    nameless = old.index[old["scan_id"].str.strip() == ""]
    if len(nameless):
        raise CTScoreError(CODE, f"line {int(nameless[0]) + 2}: a row without a scan_id (its decision and notes "
                           "would be lost): write its scan_id back, or delete the row", path)
    old = old.assign(scan_id=old["scan_id"].str.strip())
    twice = old["scan_id"][old["scan_id"].duplicated()]
    if len(twice):
        raise CTScoreError(CODE, f"scan {twice.iloc[0]!r} is on two rows of the review sheet: one row per scan", path)
    gone = sorted(set(old["scan_id"]) - set(sheet["scan_id"]))
    lower = {sid.lower(): sid for sid in sheet["scan_id"]}
    retyped = [(sid, lower[sid.lower()]) for sid in gone if sid.lower() in lower]
    if retyped:
        raise CTScoreError(CODE, f"scan_id {retyped[0][0]!r} of the review sheet is {retyped[0][1]!r} in the run "
                           "(its case was changed): write it back as the run spells it", path)
    if gone:
        raise CTScoreError("OUTPUT_EXISTS", f"the review sheet names {len(gone)} scan(s) that are not in this run "
                           f"({', '.join(gone[:3])}{', ...' if len(gone) > 3 else ''}: another run, or another "
                           "pseudonym salt?): it is not updated; give another file with -o", path)
    kept = [c for c in old.columns if c not in ("scan_id", *SHOWN_COLUMNS)]  # decisions, and the reviewer's own
    for c in kept:
        if c not in sheet.columns:
            sheet[c] = ""
    now = sheet.set_index("scan_id")
    cleared, unchecked = 0, 0
    for _, row in old.iterrows():
        sid = row["scan_id"]
        values = {c: row[c] for c in kept}
        decided = bool(str(row.get(DECISION, "")).strip())
        was_print = str(row.get(FINGERPRINT, "")).strip()
        other = scored_otherwise(row, {c: now.at[sid, c] for c in COMPARED_COLUMNS}) if decided else None
        if other is None and decided and was_print and was_print != now.at[sid, FINGERPRINT]:
            other = (FINGERPRINT, was_print, now.at[sid, FINGERPRINT])  # volumes, flags, model...: not shown
        if other is not None:  # decided on pictures that are no longer the scan's
            col, was, is_now = other
            was_decided = ", ".join(f"{c} {row[c].strip()!r}" for c in (DECISION, REASON, "reviewer") if c in row
                                    and row[c].strip())
            values.update({DECISION: "", REASON: "", "reviewer": "",
                           "note": (f"scored again since the earlier decision ({was_decided}; {col} was {was}, now "
                                    f"{is_now}): review again. " + str(row.get("note", ""))).strip()})
            cleared += 1
        elif decided and not was_print:  # nothing to check it against: it stays unchecked, and --exclude says so
            now.at[sid, FINGERPRINT] = ""
            unchecked += 1
        for c, v in values.items():
            now.at[sid, c] = v
    # the sheet's order first (the reviewer may have sorted it), then the new scans in the run sheet's order
    had = set(old["scan_id"])
    order = list(old["scan_id"]) + [s for s in sheet["scan_id"] if s not in had]
    merged = now.loc[order].reset_index()
    log.info("review sheet %s: %d scan(s) kept with their rows, %d added, %d decision(s) cleared (scored again)",
             path.name, len(old), len(order) - len(old), cleared)
    if unchecked:
        log.warning("review sheet %s: %d decided row(s) have no %s: whether their scan was scored again since the "
                    "decision cannot be checked; their decisions are kept, unchecked", path.name, unchecked,
                    FINGERPRINT)
    return merged[list(COLUMNS) + [c for c in kept if c not in COLUMNS]]


def _is_sheet(path: Path) -> bool:
    """Whether the existing file's first line names scan_id and the decision column (a review sheet, as written or
    re-saved by a spreadsheet): only such a file may be replaced with ``overwrite``."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(65536).decode("utf-8-sig", errors="replace")
    except OSError:
        return False
    cells = {c.strip().strip('"').strip() for c in re.split(r"[,;\t]", first.strip())}
    return {"scan_id", DECISION} <= cells
