"""``ctscore review-sheet OUT``: the sheet a researcher fills in while reviewing a run's QC pictures, one row per scan,
which ``ctscore stats`` / ``validate`` / ``methods --exclude`` then read (:mod:`scoring.exclusions`).

Each row shows what the reviewer needs beside the pictures (the scan's pseudonymous patient id and date, its status,
scores, % opacity and QC flags, and the paths of its ``qc.png`` and ``levels.png`` relative to the run folder) and
leaves four columns to fill: ``exclude`` (yes / no; empty while not reviewed), ``reason`` (for yes), ``reviewer`` and
``note`` (for the researcher's records, never copied into an output). Scans with QC flags come first, then the rest,
each group in ``scans.csv``'s order; failed scans last (they are not analysed whatever the sheet says).

The sheet is written once, in UTF-8 with a byte-order mark (so that Excel opens it as UTF-8): an existing sheet is
never replaced (it may hold a reviewer's decisions) unless ``overwrite`` is given, and a file that is not a review
sheet never. The run folder is only read, except for the default ``OUT/review.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.errors import CTScoreError
from scoring.exclusions import DECISION, FREE_TEXT_COLUMNS, REASON

#: The default file name, in the run folder.
SHEET_NAME = "review.csv"
#: The columns shown to the reviewer (scans.csv's, then the pictures' paths): not read back by ``--exclude``.
SHOWN_COLUMNS = ("patient_id", "study_date", "status", "six_zone_total", "zhang900_total", "percent_opacity",
                 "qc_flags", "qc_png", "levels_png")
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
    sheet = pd.DataFrame({c: scans[c] if c in scans.columns else "" for c in ("scan_id", *SHOWN_COLUMNS[:-2])})
    sheet["status"] = sheet["status"].str.strip()
    for picture in ("qc", "levels"):  # where the picture is, if the scan has it (a failed scan has none)
        sheet[f"{picture}_png"] = [f"{sid}/{picture}.png" if sid and (out / sid / f"{picture}.png").is_file() else ""
                                   for sid in sheet["scan_id"]]
    for c in DECISION_COLUMNS:
        sheet[c] = ""
    group = [0 if status == "ok" and flags.strip() else 1 if status == "ok" else 2
             for status, flags in zip(sheet["status"], sheet["qc_flags"])]
    sheet = sheet.assign(_group=group).sort_values("_group", kind="stable").drop(columns="_group")
    return sheet.reset_index(drop=True)[list(COLUMNS)]


def write_review_sheet(out_dir: str | Path, output: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write :func:`review_sheet` to ``output`` (default ``OUT/review.csv``), all or nothing; returns the path.

    Raises as :func:`review_sheet`, and CTScoreError ``OUTPUT_EXISTS`` when ``output`` exists and ``overwrite`` is
    not given (the file may hold a reviewer's decisions), ``OUTPUT_UNWRITABLE`` when it cannot be written."""
    from pipeline.outputs import atomic_write_bytes

    if not isinstance(overwrite, bool):
        raise CTScoreError("BAD_OPTION", f"overwrite must be True or False, not {overwrite!r}")
    sheet = review_sheet(out_dir)
    path = Path(output) if output is not None else Path(out_dir) / SHEET_NAME
    if path.is_dir():
        raise CTScoreError("OUTPUT_UNWRITABLE", f"is a folder: give the file to write (e.g. {SHEET_NAME})", path)
    if path.exists():
        if not _is_sheet(path):
            raise CTScoreError("OUTPUT_EXISTS", "a file that is not a review sheet is there (its first line lacks "
                               f"scan_id and {DECISION}): it is not replaced, even with --overwrite; give another "
                               "file with -o", path)
        if not overwrite:
            raise CTScoreError("OUTPUT_EXISTS", "a review sheet is already there and may hold a reviewer's "
                               "decisions: it is not replaced (give another file with -o, or --overwrite to replace "
                               "it)", path)
    try:  # with a BOM: Excel then opens the file as UTF-8 (a reason or note with accents stays as written)
        atomic_write_bytes(path, sheet.to_csv(index=False).encode("utf-8-sig"))
    except OSError as exc:
        raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot write the review sheet ({exc.strerror or exc}); give "
                           "a file elsewhere with -o", path) from exc
    return path


def _is_sheet(path: Path) -> bool:
    """Whether the existing file's first line names scan_id and the decision column (a review sheet, as written or
    re-saved by a spreadsheet): only such a file may be replaced with ``overwrite``."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(65536).decode("utf-8-sig", errors="replace")
    except OSError:
        return False
    cells = {c.strip().strip('"').strip() for c in first.strip().split(",")}
    return {"scan_id", DECISION} <= cells
