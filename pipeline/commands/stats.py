"""``ctscore stats``: replay the source studies' statistics on a cohort (scoring.stats.api.run_stats)."""

from __future__ import annotations

import argparse
import logging

from pipeline.errors import EXIT_OK

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``stats`` parser."""
    p = subparsers.add_parser(
        "stats", help="liao2021 / zhang2020 / li2020 analyses on your cohort (tables, figures, HTML)",
        description="Run the analyses of the source studies on the pipeline's scores plus a clinical table "
                    "(and optionally long-form labs). Schema: docs/clinical_schema.md.")
    p.add_argument("--scores", required=True, metavar="OUT",
                   help="the pipeline's output folder (scans.csv, zones.csv) or a scans.csv file")
    p.add_argument("--clinical", required=True, metavar="CLINICAL.csv", help="one row per patient")
    p.add_argument("--labs", metavar="LABS.csv", help="long form: patient_id, date, analyte, value[, unit]")
    p.add_argument("--study", default="all", choices=["liao2021", "zhang2020", "li2020", "all"])
    p.add_argument("-o", "--output", required=True, metavar="STATS/", help="folder for CSV tables, PNGs, summary.html")
    p.add_argument("--window-days", type=int, default=1,
                   help="match a lab to a scan when at most this many days apart (default 1)")
    p.add_argument("--id-column", default=None,
                   help="clinical column with the id the scores carry (default: scores_patient_id if present, "
                        "else patient_id); ids with leading zeros or 16+ digits are matched as text, every digit")
    p.add_argument("--persistent-threshold", type=float, default=5,
                   help="liao2021: six-zone total at week 8 counted as persistent (default 5)")
    p.add_argument("--followup-days", type=int, default=14,
                   help="zhang2020: after-treatment scan nearest this many days after the before scan (default 14)")
    p.add_argument("--normal-labs", default="",
                   help="zhang2020: comma-separated labs compared with ANOVA + LSD instead of Kruskal-Wallis")
    p.add_argument("--exclude", metavar="REVIEW.csv", default=None,
                   help="scans excluded at QC review: scan_id (or series_uid) and reason per row; left out of every "
                        "analysis and counted by reason in data_summary (docs/clinical_schema.md)")
    p.add_argument("--min-n", type=int, default=3, help="fewest values per group for a test to run (default 3)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Call :func:`scoring.stats.api.run_stats` with the command-line settings."""
    from scoring.stats.api import run_stats

    normal = [s.strip() for s in args.normal_labs.split(",") if s.strip()]
    opts = {"liao2021": {"threshold": args.persistent_threshold},
            "zhang2020": {"followup_days": args.followup_days, "normal_labs": normal}, "li2020": {}}
    studies = ["liao2021", "zhang2020", "li2020"] if args.study == "all" else [args.study]
    tables = run_stats(args.scores, args.clinical, args.labs, study=args.study, out_dir=args.output,
                       window_days=args.window_days, id_column=args.id_column, min_n=args.min_n,
                       exclude=args.exclude,
                       **{s: opts[s] for s in studies if opts[s]})
    log.info("%d tables written to %s (summary.html)", len(tables), args.output)
    return EXIT_OK
