"""``ctscore aggregate OUT``: rebuild the run tables from the per-scan results under OUT.

Use it after the shards of a job array (``ctscore run --shard-index K --num-shards N``) have written
into the same OUT, or after results were copied together from several machines.
"""

from __future__ import annotations

import argparse

from pipeline.errors import EXIT_OK, EXIT_SOME_FAILED


def register(sub) -> None:
    from pipeline.commands.run import add_log_args

    p = sub.add_parser("aggregate", help="rebuild scans.csv, zones.csv, failures.csv, landmarks.csv and report.html from per-scan "
                                         "results",
                       description="Merge every per-scan result (OUT/<scan_id>/result.json) and failure record "
                                   "(OUT/.status/<scan_id>.json) under OUT into OUT/scans.csv, zones.csv, "
                                   "failures.csv, landmarks.csv, run.json and report.html; warns when they were made with several "
                                   "configurations, models, devices or ctscore versions, or hold one series under several scan ids. Refuses "
                                   "(exit 1) to merge shards with some of their K-of-N missing or of different "
                                   "--num-shards or input, unless --allow-missing-shards, and series that a run or "
                                   "shard left without an outcome (stopped while or before scoring them), unless "
                                   "--allow-unfinished.")
    p.add_argument("out", help="output folder of one or more `ctscore run` (e.g. all shards of a job array)")
    p.add_argument("--allow-missing-shards", action="store_true",
                   help="merge the shards under OUT/shards/ even when some of the K-of-N are missing (not run, or "
                        "not ended) or come from arrays of different --num-shards or input (refused otherwise: "
                        "SHARDS_MISSING, SHARDS_MIXED, SHARDS_INPUT_CHANGED); run.json lists the missing ones")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="write the tables even when series of a run into OUT have no outcome: a run or shard was "
                        "stopped while scoring them or before it came to them (refused otherwise: SCANS_UNFINISHED; "
                        "run the same command again to resume instead); run.json lists them under unfinished_scans")
    add_log_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pipeline.batch import aggregate
    from pipeline.commands.run import print_summary

    summary = aggregate(args.out, allow_missing_shards=args.allow_missing_shards,
                        allow_unfinished=args.allow_unfinished)
    print_summary(summary)
    return EXIT_SOME_FAILED if summary["n_failed"] else EXIT_OK
