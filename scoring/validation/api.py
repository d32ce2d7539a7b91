"""Python API of the validation: :func:`run_validation` (what ``ctscore validate`` calls)."""

from __future__ import annotations

import logging
import numbers
import os
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import CTScoreError
from pipeline.outputs import check_analysis_output, check_output_dir, check_tables_current, settings_note
from scoring.exclusions import CODE, check_source, read_exclusions, summary_rows
from scoring.validation import compare, figures, report
from scoring.validation.predictions import (
    check_columns,
    load_predictions,
    load_scans,
    needed_columns,
    zone_targets_without_zones,
)
from scoring.validation.schema import load_reference
from scoring.validation.systems import SYSTEMS, canonical_system

log = logging.getLogger(__name__)

#: Defaults of the options; ``ctscore validate`` uses the same ones.
DEFAULTS: dict[str, Any] = {"systems": None, "min_n": 3, "on_unmatched": "error", "draw": True,
                            "max_confusion_categories": compare.MAX_CONFUSION_CATEGORIES}


def _whole_number(name: str, value: Any, lowest: int) -> int:
    """``value`` as an int of at least ``lowest`` (a whole number or its decimal text), else BAD_OPTION."""
    number = None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = int(value)
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdecimal():
        number = int(value.strip())
    if number is None or number < lowest:
        raise CTScoreError("BAD_OPTION", f"{name} must be a whole number of at least {lowest}, not {value!r}")
    return number


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Every option checked (BAD_OPTION) and filled in with its default, before anything is read or written."""
    bad = set(options) - set(DEFAULTS)
    if bad:
        raise CTScoreError("BAD_OPTION", f"unknown option(s) {sorted(bad)}; known: {sorted(DEFAULTS)}")
    opts = {**DEFAULTS, **options}
    opts["min_n"] = _whole_number("min_n", opts["min_n"], 2)
    opts["max_confusion_categories"] = _whole_number("max_confusion_categories", opts["max_confusion_categories"], 2)
    if opts["on_unmatched"] not in ("error", "warn"):
        raise CTScoreError("BAD_OPTION", f"on_unmatched must be 'error' or 'warn', not {opts['on_unmatched']!r}")
    if not isinstance(opts["draw"], bool):
        raise CTScoreError("BAD_OPTION", f"draw must be True or False, not {opts['draw']!r}")
    systems = opts["systems"]
    if isinstance(systems, str):
        systems = [s.strip() for s in systems.split(",") if s.strip()]
    wanted = []
    for s in systems or []:
        c = canonical_system(str(s))
        if c is None:
            raise CTScoreError("BAD_OPTION", f"unknown system {s!r}; known: {', '.join(SYSTEMS)}")
        wanted.append(c)
    opts["systems"] = wanted or None
    return opts


def validate_frames(reference: pd.DataFrame, predictions: pd.DataFrame, *, min_n: int = 3,
                    max_confusion_categories: int = compare.MAX_CONFUSION_CATEGORIES,
                    unit_targets_without_zones: int = 0) -> dict[str, pd.DataFrame]:
    """The validation tables from a checked reference and ctscore's long-form predictions
    (``unit_targets_without_zones``: see :func:`scoring.validation.compare.ratings_table`)."""
    wide, readers = compare.ratings_table(reference, predictions, unit_targets_without_zones)
    agree = compare.agreement_table(wide, readers, min_n=min_n)
    return {
        "ratings": wide,
        "agreement": agree,
        "side_by_side": compare.side_by_side(wide, readers, min_n=min_n) if not wide.empty else pd.DataFrame(),
        "confusion_matrices": compare.confusion_table(wide, readers, max_categories=max_confusion_categories),
    }


def _check_path(value: Any, argument: str, what: str) -> None:
    """BAD_OPTION when an input of :func:`run_validation` is not a path (a DataFrame failed with a raw TypeError):
    run_validation reads files; the frame-level function is :func:`validate_frames`."""
    if isinstance(value, (str, os.PathLike)):
        return
    kind = "a pandas DataFrame" if isinstance(value, pd.DataFrame) else type(value).__name__
    raise CTScoreError("BAD_OPTION", f"run_validation: {argument} must be a path to {what}, not {kind}; run_validation "
                       "reads and checks files (write a frame with df.to_csv(path, index=False)); for frames use "
                       "scoring.validation.api.validate_frames(reference, predictions), which takes a checked "
                       "reference and ctscore's long-form predictions")


def run_validation(pred_dir: str | Path, reference_csv: str | Path, out_dir: str | Path | None = None, *,
                   exclude: str | Path | pd.DataFrame | None = None, **options: Any) -> dict[str, pd.DataFrame]:
    """Compare ctscore's scores with the readers' reference; returns the tables by name.

    ``pred_dir``: a ``ctscore run`` output folder (``scans.csv``, ``zones.csv``) or a ``scans.csv``.
    ``reference_csv``: long-form reader scores (docs/reference_schema.md).
    ``out_dir``: when given, CSV tables, Bland-Altman and confusion-matrix PNGs and ``summary.html``
    (pictures a previous run left there are removed first).

    Options (checked before anything is read; BAD_OPTION): ``systems`` (list of system names, or
    comma-separated text, to keep; default all in the reference), ``min_n`` (fewest targets for
    kappa/ICC/rho, default 3), ``on_unmatched`` (``error`` default, or ``warn`` to leave out
    reference rows naming no scan; they are counted in ``data_summary``, and a note names up to three of their
    scans with file lines), ``draw`` (PNGs, default
    True), ``max_confusion_categories`` (largest scale given a confusion matrix, in the CSV and the
    pictures; default 25).

    ``exclude`` (``--exclude``): the scans excluded at QC review, a CSV path or a DataFrame of it (scan_id or
    series_uid, reason; :mod:`scoring.exclusions`): their reference rows and scores are left out of every
    comparison, and ``data_summary`` counts them by reason; a row naming no scan of the run refuses the run
    (EXCLUSIONS_INVALID).

    Tables: ``data_summary``, ``ratings`` (one row per scan x system x unit, one column per rater),
    ``agreement`` (per system x unit x rater pair), ``side_by_side`` (readers vs ctscore, on the
    targets ctscore and every reader scored), ``confusion_matrices`` (long counts).
    """
    opts = check_options(options)
    _check_path(pred_dir, "pred_dir", "a ctscore run output folder or its scans.csv")
    check_tables_current(pred_dir)  # TABLES_STALE: a run began scoring into that folder and did not finish
    _check_path(reference_csv, "reference_csv", "the reference CSV (docs/reference_schema.md)")
    min_n, on_unmatched, systems = opts["min_n"], opts["on_unmatched"], opts["systems"]
    if exclude is not None:
        check_source(exclude)  # BAD_OPTION before anything is read
    scans = load_scans(pred_dir)
    run_scans = scans
    excluded = read_exclusions(exclude, scans) if exclude is not None else None
    if out_dir is not None:
        check_output_dir(out_dir)  # OUTPUT_UNWRITABLE now, not after the analysis; nothing made yet
        check_analysis_output(out_dir, "validate", [pred_dir])
    left_out: list[int] = []
    notes: list[str] = []  # rows left out (with examples), a column of numbers not read, units without a total
    reference = load_reference(reference_csv, scans, on_unmatched=on_unmatched, left_out=left_out, notes=notes,
                               systems=systems)
    if systems:
        reference = reference[reference["system"].isin(systems)]
        if reference.empty:
            raise CTScoreError("REFERENCE_NO_MATCH", f"the reference has no rows for system(s) {systems}",
                               reference_csv)
        notes = [n for n in notes if not any(n.startswith(f"{s}: ") for s in SYSTEMS if s not in systems)]
    exclusion_rows: list[tuple[str, Any]] = []
    if excluded is not None:  # rows naming an excluded scan matched it above: left out here, and counted (a failed
        # scan the readers scored counts too: it is in their agreement with each other)
        exclusion_rows = summary_rows(excluded, set(reference["scan_id"]), "scans in the reference before exclusion",
                                      "in no reference row")
        gone = reference["scan_id"].isin(excluded.scan_ids)
        exclusion_rows.append(("reference rows left out (scan excluded at QC review)", int(gone.sum())))
        reference = reference[~gone].reset_index(drop=True)
        if reference.empty:
            raise CTScoreError(CODE, "every reference row names a scan excluded at QC review: nothing is left to "
                               "compare", None if isinstance(exclude, pd.DataFrame) else exclude)
        scans = scans[~scans["scan_id"].isin(excluded.scan_ids)].reset_index(drop=True)
        log.info("exclusion list: %s", "; ".join(f"{k} {v}" for k, v in exclusion_rows[1:]))
    check_columns(pred_dir, scans, reference)  # PRED_SCHEMA: a column the reference's systems need
    predictions = load_predictions(pred_dir, scans, needed=[c for cols in needed_columns(reference) for c in cols],
                                   systems=set(reference["system"]))
    if out_dir is not None:  # every input read and checked: a failed run leaves no folder behind
        from pipeline.outputs import prepare_output_dir

        prepare_output_dir(out_dir)
    tables = validate_frames(reference, predictions, min_n=min_n,
                             max_confusion_categories=opts["max_confusion_categories"],
                             unit_targets_without_zones=zone_targets_without_zones(pred_dir, reference))
    readers = sorted(reference["reader"].unique())
    wide = tables["ratings"]
    unreferenced = ~scans["scan_id"].isin(set(reference["scan_id"]))
    if left_out and unreferenced.any():  # a left-out row may mean one of them (a mistyped scan_id)
        shown = ", ".join(repr(x) for x in scans.loc[unreferenced, "scan_id"].astype(str)[:3])
        notes.append(f"{int(unreferenced.sum())} pipeline scan(s) have no reference row (e.g. {shown}): check "
                     "whether the reference rows left out mean one of them")
    summary = [
        ("pipeline scans (ok / all)",
         f"{int((run_scans['status'].fillna('ok').str.lower() == 'ok').sum())} / {len(run_scans)}"),
        *exclusion_rows,
        ("reference rows", len(reference)),
        ("reference rows left out (no matching scan)", len(left_out)),
        ("readers", ", ".join(readers)),
        ("scans in the reference", reference["scan_id"].nunique()),
        ("pipeline scans without a reference row", int(unreferenced.sum())),
        ("systems", ", ".join(s for s in SYSTEMS if s in set(reference["system"]))),
        ("targets (scan x system x unit)", len(wide)),
        ("targets without a ctscore value", int(wide["ctscore"].isna().sum())),
        ("consensus", "median of the readers who scored the target (at least 2); halves round up for kappa "
                      "and confusion matrices" if len(readers) >= 2 else
                      f"not formed ({len(readers)} reader{'s' if len(readers) != 1 else ''})"),
    ]
    compared = scans[scans["scan_id"].isin(set(reference["scan_id"]))
                     & (scans["status"].fillna("ok").astype(str).str.lower() == "ok")]
    if "patient_id" in compared.columns:
        ids = compared["patient_id"].fillna("").astype(str).str.strip()
        n_patients = ids[ids != ""].nunique()
        at = [k for k, _ in summary].index("scans in the reference") + 1
        summary.insert(at, ("patients of those scans", n_patients))
        repeated = ids[ids != ""].value_counts()
        repeated = repeated[repeated > 1]
        if len(repeated):
            summary.append(("note", f"{len(repeated)} patient(s) have more than one scan in the comparison "
                                    f"({int(repeated.sum())} scans): kappa, ICC and Bland-Altman count every scan as "
                                    "independent, so their confidence intervals are too narrow for repeated scans of "
                                    "one patient; for a strict estimate keep one scan per patient in the reference"))
            log.warning(summary[-1][1])
    summary += [("note", n) for n in notes]
    mixed = settings_note(compared, "the ctscore scores compared")
    if mixed:
        summary.append(("note", mixed))
        log.warning(mixed)
    tables = {"data_summary": pd.DataFrame(summary, columns=["item", "value"]).astype({"value": str}), **tables}
    if out_dir is not None:
        out = Path(out_dir)
        report.write_tables(tables, out)
        figures.remove_stale(out)
        pngs = figures.write_figures(wide, readers, out, opts["max_confusion_categories"]) if opts["draw"] else []
        settings = {"pred": str(pred_dir), "reference": str(reference_csv), "min_n": min_n,
                    "on_unmatched": on_unmatched, "systems": ", ".join(systems) if systems else "all",
                    "max_confusion_categories": opts["max_confusion_categories"]}
        if excluded is not None:
            settings["exclusion list"] = excluded.setting()
        report.write_html(tables, pngs, out, settings)
        log.info("wrote %d tables and %d pictures to %s", len(tables), len(pngs), out)
    return tables
