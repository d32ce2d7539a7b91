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


#: output names that would hold CSV text under a spreadsheet workbook's name
WORKBOOK_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".ods")


def write_review_sheet(out_dir: str | Path, output: str | Path | None = None, overwrite: bool = False,
                       update: bool = False) -> Path:
    """Write :func:`review_sheet` to ``output`` (default ``OUT/review.csv``), all or nothing; returns the path.

    ``update``: bring an existing sheet up to date with the run, keeping its decisions: a row per scan of the run
    now (new scans added, in the sheet's order), the shown columns as the run has them, and the decision columns
    (and any column the reviewer added) of each scan still scored as the sheet shows it; a scan scored again since
    (another :data:`~scoring.exclusions.FINGERPRINT`; on a row without one, other status or scores:
    :func:`scoring.exclusions.scored_otherwise`) has its decision cleared, its note saying what it was (a warning
    says how many). Rows of scans no longer in the run are dropped (a warning names them) when they hold nothing of
    the reviewer's (no decision, reason, reviewer, note or added column); one that does is refused (``OUTPUT_EXISTS``,
    naming its line: delete it). A row without a scan_id and without a decision (a note) is kept at the end as it
    is; one with a decision is refused. A sheet exported with semicolons (:func:`scoring.exclusions.read_table`) is
    written back with semicolons and decimal commas. Problems reading the sheet raise ``EXCLUSIONS_INVALID``, as
    ``--exclude`` does.

    Raises as :func:`review_sheet`, and CTScoreError ``OUTPUT_EXISTS`` when ``output`` exists and neither
    ``overwrite`` nor ``update`` is given (the file may hold a reviewer's decisions) or is not a review sheet,
    ``OUTPUT_UNWRITABLE`` when it cannot be written, ``BAD_OPTION`` for both ``overwrite`` and ``update``, for
    ``output`` ``"-"`` (the command's stdout: use :func:`review_sheet` for the table) and for a workbook's name
    (.xlsx: the file would hold CSV text)."""
    return write_review_sheet_counted(out_dir, output, overwrite=overwrite, update=update)[0]


def write_review_sheet_counted(out_dir: str | Path, output: str | Path | None = None, overwrite: bool = False,
                               update: bool = False) -> tuple[Path, dict[str, object] | None]:
    """:func:`write_review_sheet`, and for ``update`` what it did (keys kept, added, cleared, dropped: the scan ids
    dropped, nameless, unchecked), for the command to print; None without ``update`` or when no sheet was there."""
    from pipeline.outputs import atomic_write_bytes

    for name, value in (("overwrite", overwrite), ("update", update)):
        if not isinstance(value, bool):
            raise CTScoreError("BAD_OPTION", f"{name} must be True or False, not {value!r}")
    if overwrite and update:
        raise CTScoreError("BAD_OPTION", "give overwrite (a new sheet, the decisions lost) or update (the decisions "
                           "kept), not both")
    if output is not None and str(output) == "-":
        raise CTScoreError("BAD_OPTION", "output '-' is the command line's stdout (ctscore review-sheet OUT -o -): in "
                           "Python, review_sheet(out_dir) gives the table; give write_review_sheet a file name")
    if output is not None and Path(output).suffix.lower() in WORKBOOK_SUFFIXES:
        raise CTScoreError("BAD_OPTION", f"the review sheet is CSV text, not a spreadsheet workbook: give a .csv "
                           f"name, not {Path(output).name!r} (Excel opens the .csv; save it back as CSV UTF-8)")
    sheet = review_sheet(out_dir)
    path = Path(output) if output is not None else Path(out_dir) / SHEET_NAME
    counts = None
    separator = ","
    if path.is_dir():
        raise CTScoreError("OUTPUT_UNWRITABLE", f"is a folder: give the file to write (e.g. {SHEET_NAME})", path)
    if path.exists():
        with open(path, "rb") as fh:
            workbook = fh.read(4) == b"PK\x03\x04"
        if workbook:
            raise CTScoreError("OUTPUT_EXISTS", "an Excel workbook (or another spreadsheet's own file) is there, not "
                               "CSV text: it is not replaced; save it as CSV UTF-8 (to --update it), or give another "
                               "file with -o", path)
        if not _is_sheet(path):
            raise CTScoreError("OUTPUT_EXISTS", "a file that is not a review sheet is there (its first line lacks "
                               f"scan_id and {DECISION}): it is not replaced, even with --overwrite or --update; "
                               "give another file with -o", path)
        if update:
            sheet, counts = _updated(sheet, path)
            separator = str(counts.pop("separator"))
        elif not overwrite:
            raise CTScoreError("OUTPUT_EXISTS", "a review sheet is already there and may hold a reviewer's "
                               "decisions: it is not replaced (--update adds the run's new scans and keeps its "
                               "decisions; -o writes another file; --overwrite replaces it)", path)
    try:  # with a BOM: Excel then opens the file as UTF-8 (a reason or note with accents stays as written)
        if separator == ";":  # written back as the spreadsheet exported it: semicolons, decimal commas
            from scoring.exclusions import NUMERIC_SHOWN

            for c in NUMERIC_SHOWN:
                sheet[c] = sheet[c].str.replace(".", ",", regex=False)
        atomic_write_bytes(path, sheet.to_csv(index=False, sep=separator).encode("utf-8-sig"))
    except OSError as exc:
        raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot write the review sheet ({exc.strerror or exc}); give "
                           "a file elsewhere with -o", path) from exc
    return path, counts


def _updated(sheet: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, dict[str, object]]:
    """The run's sheet ``sheet`` with the decisions of the sheet at ``path`` (write_review_sheet's ``update``), and
    what was done (write_review_sheet_counted)."""
    from scoring.exclusions import CODE, read_table, scored_otherwise

    old = read_table(path, "review sheet")  # rows empty in every column are dropped
    separator = old.attrs.get("separator", ",")
    if "scan_id" not in old.columns:
        raise CTScoreError(CODE, "the review sheet has no scan_id column", path)
    kept = [c for c in old.columns if c not in ("scan_id", *SHOWN_COLUMNS)]  # decisions, and the reviewer's own
    nameless = old["scan_id"].str.strip() == ""
    decided = old[DECISION].str.strip() != "" if DECISION in old.columns else pd.Series(False, index=old.index)
    if (nameless & decided).any():
        line = int(old.index[nameless & decided][0]) + 2
        raise CTScoreError(CODE, f"line {line}: a row without a scan_id (its decision and notes would be lost): "
                           "write its scan_id back, or delete the row", path)
    notes_only = old[nameless]  # no decision: kept at the end as they are, as --exclude skips them
    old = old[~nameless]
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
    absent = old[old["scan_id"].isin(gone)]
    held = absent[[c for c in kept]].apply(lambda col: col.str.strip() != "").any(axis=1) if kept else \
        pd.Series(False, index=absent.index)
    if held.any():
        rows = absent[held]
        lines = ", ".join(f"line {int(k) + 2} ({sid})" for k, sid in zip(rows.index[:5], rows["scan_id"][:5]))
        raise CTScoreError("OUTPUT_EXISTS", f"the review sheet names {len(rows)} scan(s) that are not in this run "
                           f"with a decision or notes: {lines}{', ...' if len(rows) > 5 else ''}. No longer in "
                           "this run? Delete those lines and --update again (or is this another run's sheet, or "
                           "another pseudonym salt?); it is not updated", path)
    dropped = list(absent["scan_id"])
    if dropped:
        log.warning("review sheet %s: %d undecided row(s) of scans no longer in this run dropped: %s", path.name,
                    len(dropped), ", ".join(f"line {int(k) + 2} ({sid})" for k, sid in zip(absent.index,
                                                                                           absent["scan_id"])))
        old = old[~old["scan_id"].isin(gone)]
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
        # a matching fingerprint covers the shown columns (a spreadsheet re-formats those: 13.3, 13,27); else
        # they name what changed, or are all that can be compared
        other = scored_otherwise(row, {c: now.at[sid, c] for c in COMPARED_COLUMNS}) \
            if decided and was_print != now.at[sid, FINGERPRINT] else None
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
    columns = list(COLUMNS) + [c for c in kept if c not in COLUMNS]
    if len(notes_only):
        merged = pd.concat([merged, notes_only.reindex(columns=columns, fill_value="")], ignore_index=True)
        log.warning("review sheet %s: %d row(s) without a scan_id and without a decision (line %s) kept at the end "
                    "as they are", path.name, len(notes_only), ", ".join(str(int(k) + 2) for k in notes_only.index))
    counts = {"kept": len(old), "added": len(order) - len(old), "cleared": cleared, "dropped": dropped,
              "nameless": len(notes_only), "unchecked": unchecked, "separator": separator}
    log.info("review sheet %s: %d scan(s) kept with their rows, %d added, %d dropped (no longer in the run)",
             path.name, len(old), len(order) - len(old), len(dropped))
    if cleared:
        log.warning("review sheet %s: %d decision(s) cleared: their scans were scored again since (other "
                    "pictures); each note says what the decision was: review them again", path.name, cleared)
    if unchecked:
        log.warning("review sheet %s: %d decided row(s) have no %s: whether their scan was scored again since the "
                    "decision cannot be checked; their decisions are kept, unchecked", path.name, unchecked,
                    FINGERPRINT)
    return merged[columns], counts


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
