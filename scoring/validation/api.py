"""Python API of the validation: :func:`run_validation` (what ``ctscore validate`` calls)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import CTScoreError
from scoring.validation import compare, figures, report
from scoring.validation.predictions import load_predictions, load_scans
from scoring.validation.schema import load_reference
from scoring.validation.systems import SYSTEMS, canonical_system

log = logging.getLogger(__name__)

_OPTIONS = {"systems", "min_n", "on_unmatched", "draw", "max_confusion_categories"}


def validate_frames(reference: pd.DataFrame, predictions: pd.DataFrame, *, min_n: int = 3) -> dict[str, pd.DataFrame]:
    """The validation tables from a checked reference and ctscore's long-form predictions."""
    wide, readers = compare.ratings_table(reference, predictions)
    agree = compare.agreement_table(wide, readers, min_n=min_n)
    return {
        "ratings": wide,
        "agreement": agree,
        "side_by_side": compare.side_by_side(agree, min_n=min_n) if not agree.empty else pd.DataFrame(),
        "confusion_matrices": compare.confusion_table(wide, readers),
    }


def run_validation(pred_dir: str | Path, reference_csv: str | Path, out_dir: str | Path | None = None,
                   **options: Any) -> dict[str, pd.DataFrame]:
    """Compare ctscore's scores with the readers' reference; returns the tables by name.

    ``pred_dir``: a ``ctscore run`` output folder (``scans.csv``, ``zones.csv``) or a ``scans.csv``.
    ``reference_csv``: long-form reader scores (docs/reference_schema.md).
    ``out_dir``: when given, CSV tables, Bland-Altman and confusion-matrix PNGs and ``summary.html``.

    Options: ``systems`` (list of system names to keep; default all in the reference), ``min_n``
    (fewest targets for kappa/ICC/rho, default 3), ``on_unmatched`` (``error`` default, or ``warn``
    to leave out reference rows naming no scan), ``draw`` (PNGs, default True),
    ``max_confusion_categories`` (default 25).

    Tables: ``data_summary``, ``ratings`` (one row per scan x system x unit, one column per rater),
    ``agreement`` (per system x unit x rater pair), ``side_by_side`` (readers vs ctscore),
    ``confusion_matrices`` (long counts).
    """
    bad = set(options) - _OPTIONS
    if bad:
        raise CTScoreError("BAD_OPTION", f"unknown option(s) {sorted(bad)}; known: {sorted(_OPTIONS)}")
    min_n = int(options.get("min_n", 3))
    if min_n < 2:
        raise CTScoreError("BAD_OPTION", f"min_n must be at least 2, not {min_n}")
    on_unmatched = options.get("on_unmatched", "error")
    systems = options.get("systems")
    if isinstance(systems, str):
        systems = [s.strip() for s in systems.split(",") if s.strip()]
    scans = load_scans(pred_dir)
    reference = load_reference(reference_csv, scans, on_unmatched=on_unmatched)
    if systems:
        wanted = []
        for s in systems:
            c = canonical_system(str(s))
            if c is None:
                raise CTScoreError("BAD_OPTION", f"unknown system {s!r}; known: {', '.join(SYSTEMS)}")
            wanted.append(c)
        reference = reference[reference["system"].isin(wanted)]
        if reference.empty:
            raise CTScoreError("REFERENCE_NO_MATCH", f"the reference has no rows for system(s) {wanted}",
                               reference_csv)
    predictions = load_predictions(pred_dir, scans)
    tables = validate_frames(reference, predictions, min_n=min_n)
    readers = sorted(reference["reader"].unique())
    wide = tables["ratings"]
    summary = [
        ("pipeline scans (ok / all)", f"{int((scans['status'].fillna('ok').str.lower() == 'ok').sum())} / {len(scans)}"),
        ("reference rows", len(reference)),
        ("readers", ", ".join(readers)),
        ("scans in the reference", reference["scan_id"].nunique()),
        ("systems", ", ".join(s for s in SYSTEMS if s in set(reference["system"]))),
        ("targets (scan x system x unit)", len(wide)),
        ("targets without a ctscore value", int(wide["ctscore"].isna().sum())),
        ("consensus", "median of the readers who scored the target (at least 2); halves round up for kappa "
                      "and confusion matrices" if len(readers) >= 2 else "not formed (one reader)"),
    ]
    tables = {"data_summary": pd.DataFrame(summary, columns=["item", "value"]).astype({"value": str}), **tables}
    if out_dir is not None:
        out = Path(out_dir)
        report.write_tables(tables, out)
        pngs = figures.write_figures(wide, readers, out, int(options.get("max_confusion_categories", 25))) \
            if options.get("draw", True) else []
        settings = {"pred": str(pred_dir), "reference": str(reference_csv), "min_n": min_n,
                    "on_unmatched": on_unmatched, "systems": ", ".join(systems) if systems else "all"}
        report.write_html(tables, pngs, out, settings)
        log.info("wrote %d tables and %d pictures to %s", len(tables), len(pngs), out)
    return tables
