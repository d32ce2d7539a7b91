"""``ctscore validate``: agreement of ctscore's scores with radiologists' (scoring.validation.api.run_validation)."""

from __future__ import annotations

import argparse
import logging

from pipeline.errors import EXIT_OK

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``validate`` parser."""
    p = subparsers.add_parser(
        "validate", help="compare ctscore's scores with readers' scores (kappa, ICC, Bland-Altman, HTML)",
        description="Agreement of ctscore with each reader and with the readers' consensus, next to the "
                    "readers' agreement with each other. Reference schema: docs/reference_schema.md.")
    p.add_argument("--pred", required=True, metavar="OUT",
                   help="the pipeline's output folder (scans.csv, zones.csv) or a scans.csv file")
    p.add_argument("--reference", required=True, metavar="READERS.csv",
                   help="long form: scan_id | series_uid | patient_id+study_date, system, unit, reader, value")
    p.add_argument("-o", "--output", required=True, metavar="VAL/", help="folder for CSV tables, PNGs, summary.html")
    p.add_argument("--systems", default="",
                   help="comma-separated systems to compare (six_zone, zhang900, percent_involvement, mosmed, "
                        "lobar, lobar25); default: all in the reference")
    p.add_argument("--min-n", type=int, default=3, help="fewest targets for kappa, ICC and rho (default 3)")
    p.add_argument("--on-unmatched", choices=["error", "warn"], default="error",
                   help="reference rows naming no scan: stop with REFERENCE_NO_MATCH (default) or leave them out "
                        "(counted, and named with their lines, in data_summary.csv)")
    p.add_argument("--max-confusion-categories", type=int, default=25, metavar="N",
                   help="largest scale (categories) given a confusion matrix, in confusion_matrices.csv and the "
                        "pictures (default 25)")
    p.add_argument("--exclude", metavar="REVIEW.csv", default=None,
                   help="scans excluded at QC review: scan_id (or series_uid) and reason per row; their reference rows "
                        "are left out and counted by reason in data_summary (docs/reference_schema.md)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG pictures")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Call :func:`scoring.validation.api.run_validation` with the command-line settings."""
    from scoring.validation.api import run_validation

    systems = [s.strip() for s in args.systems.split(",") if s.strip()] or None
    tables = run_validation(args.pred, args.reference, args.output, systems=systems, min_n=args.min_n,
                            on_unmatched=args.on_unmatched, draw=not args.no_figures,
                            max_confusion_categories=args.max_confusion_categories, exclude=args.exclude)
    side = tables["side_by_side"]
    if not side.empty and "within_readers_mae" in side:
        n_yes = int((side["within_readers_mae"] == "yes").sum())
        n_all = int((side["within_readers_mae"] != "").sum())
        if n_all:
            log.info("ctscore within inter-reader MAE for %d of %d system/unit rows", n_yes, n_all)
    log.info("validation written to %s (summary.html)", args.output)
    return EXIT_OK
