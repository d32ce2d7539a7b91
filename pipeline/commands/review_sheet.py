"""``ctscore review-sheet OUT``: the QC review sheet of a run, one row per scan, for ``--exclude``
(pipeline.review_sheet.write_review_sheet)."""

from __future__ import annotations

import argparse

from pipeline.errors import EXIT_OK, CTScoreError


def register(sub) -> None:
    from pipeline.commands.run import add_log_args

    p = sub.add_parser("review-sheet", help="write the sheet for reviewing a run's QC pictures (one row per scan), "
                                            "to give to stats / validate / methods --exclude",
                       description="Write a CSV with one row per scan of the run (flagged scans first, failed scans "
                                   "last): its patient id and date, status, scores, % opacity, QC flags and the "
                                   "paths of its qc.png and levels.png, and empty columns exclude (yes / no), "
                                   "reason, reviewer and note to fill in while reviewing the pictures. Give the "
                                   "filled sheet to `ctscore stats --exclude`, `validate --exclude` and "
                                   "`methods --exclude`: the scans marked yes are left out, and the reports say "
                                   "how many scans were reviewed. An existing sheet is never replaced unless "
                                   "--overwrite is given; --update adds the scans the run scored since and keeps "
                                   "the decisions. OUT is only read, except for the default OUT/review.csv.")
    p.add_argument("out", help="output folder of `ctscore run` (or of `ctscore aggregate`)")
    p.add_argument("-o", "--output", metavar="FILE", default=None,
                   help="file to write (default OUT/review.csv); - prints the sheet on stdout")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing sheet (its decisions are lost)")
    p.add_argument("--update", action="store_true",
                   help="bring an existing sheet up to date with the run, keeping its decisions: the run's new scans "
                        "are added, and a scan scored again since its decision has it cleared (its note says what "
                        "it was); undecided rows of scans no longer in the run are dropped; says what it did")
    add_log_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pipeline.review_sheet import review_sheet, write_review_sheet_counted

    if args.output == "-":
        if args.overwrite or args.update:
            raise CTScoreError("BAD_OPTION", "-o - prints a new sheet: --overwrite and --update need a file")
        print(review_sheet(args.out).to_csv(index=False), end="")
        return EXIT_OK
    path, counts = write_review_sheet_counted(args.out, args.output, overwrite=args.overwrite, update=args.update)
    if counts is not None:  # printed as the line below is, -q or not (-q quietens the log)
        dropped = counts["dropped"]
        print(f"Review sheet {path} updated: {counts['kept']} row(s) kept with their decisions, {counts['added']} "
              f"scan(s) added, {counts['cleared']} decision(s) cleared (scored again since: review them again), "
              f"{len(dropped)} row(s) dropped (undecided, scans no longer in the run"
              + (f": {', '.join(dropped[:5])}{', ...' if len(dropped) > 5 else ''}" if dropped else "") + ")")
        return EXIT_OK
    print(f"Review sheet written to {path}: fill in 'exclude' (yes / no) and 'reason' while reviewing each scan's "
          f"qc.png and levels.png, then give it to ctscore stats / validate / methods --exclude")
    return EXIT_OK
