"""``ctscore run INPUT -o OUT``: score every selected series under INPUT."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pipeline.errors import EXIT_OK, EXIT_SOME_FAILED, ConfigError


def add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], metavar="YAML",
                   help="configuration file(s) overriding configs/default.yaml (only the keys you change)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override one setting, e.g. --set resample.spacing_mm=[2,2,2]")


def add_log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument("--log-file", help="also write the log to this file")


def register(sub) -> None:
    from pipeline.config import default_config
    from segmentation.factory import segmenter_help

    p = sub.add_parser("run", help="segment and score the CT series under INPUT",
                       description="Find chest CT series under INPUT, segment lungs and lesions, and write "
                                   "scores, masks and QC pictures to OUT.")
    p.add_argument("input", help="folder (any depth) or file with DICOM data")
    p.add_argument("-o", "--out", required=True, help="output folder")
    add_config_args(p)
    p.add_argument("--segmenter", help=f"{segmenter_help(default_config()['segmentation']['method'])} | path to a "
                                       "model folder (segmentation.method)")
    p.add_argument("--model", metavar="PATH",
                   help="a model folder: a MONAI bundle with a label-mapping YAML, or weights written by "
                        "'ctscore train' (same as --segmenter PATH)")
    p.add_argument("--lobes", metavar="DIR",
                   help="your lobe label maps, <SeriesInstanceUID>.nii.gz per series (TotalSegmentator labels "
                        "unless scoring.lobar.lobe_labels=ctscore or lungmask), or TotalSegmentator's folder of one mask per "
                        "lobe as <SeriesInstanceUID>/: lobar scores (scoring.lobar.lobes_dir)")
    p.add_argument("--masks", metavar="DIR",
                   help="your edited masks, used instead of the segmenter's: DIR/<scan_id or SeriesInstanceUID>/"
                        "lungs.nii.gz and/or lesions.nii.gz on the CT's grid, as ctscore writes them "
                        "(segmentation.masks_dir); those series are scored again on resume")
    p.add_argument("--landmarks", metavar="CSV",
                   help="a reader's landmark levels, used instead of ctscore's: one row per series (scan_id or "
                        "series_uid) with any of suprasternal_notch, aortic_arch, carina, bronchus_intermedius, ipv, "
                        "dome_right, dome_left as patient z in mm (landmarks.reader_levels); its series are scored "
                        "again on resume")
    p.add_argument("-d", "--device", help="cpu | cuda | cuda:N | auto (segmentation.device)")
    p.add_argument("--series-uid", metavar="UID",
                   help="score only this SeriesInstanceUID (or stack id of `ctscore scan`): chosen over the other "
                        "stacks of its study, but the hard filters of selection: still apply (a head CT stays "
                        "BODY_PART_EXCLUDED; lift one with e.g. --set 'selection.exclude_body_parts=\"\"', quoted so that the "
                        "shell keeps the empty text)")
    p.add_argument("--all-series", action="store_true", help="score every eligible series, not one per study")
    p.add_argument("--dicom-seg", action="store_true",
                   help="also write a DICOM-SEG per series (outputs.write_dicom_seg), for your PACS: it carries the "
                        "patient and study attributes of the source images (not pseudonymous); one that cannot be "
                        "made is flagged DICOM_SEG_FAILED, the scores kept")
    add_batch_args(p)
    add_log_args(p)
    p.set_defaults(func=main)


def add_batch_args(p: argparse.ArgumentParser) -> None:
    """Executor, sharding, resume and timeout options (see docs/cluster.md)."""
    g = p.add_argument_group("batch", "how the series are run (resume is on by default)")
    g.add_argument("--executor", choices=["serial", "local", "slurm"],
                   help="serial (this process), local (dask LocalCluster) or slurm (dask-jobqueue); "
                        "default: local when --workers > 1, else serial")
    g.add_argument("--workers", type=int, default=1, metavar="N",
                   help="local: worker processes (at most one per GPU for GPU models); slurm: N > 1 jobs kept "
                        "running, else the profile's scale: section (jobs: N, or adaptive) (default 1)")
    g.add_argument("--threads-per-worker", type=int, default=None, metavar="N",
                   help="local executor: threads per worker process (dask, ITK, BLAS) (default 1); not used by "
                        "serial (one process) nor by slurm, whose workers run cores / processes threads of the "
                        "profile's slurm: section")
    g.add_argument("--slurm-profile", metavar="YAML", help="SLURM profile (see scripts/slurm/profile.example.yaml)")
    g.add_argument("--shard-index", type=int, metavar="K", help="run only shard K of --num-shards (job arrays)")
    g.add_argument("--num-shards", type=int, metavar="N", help="number of shards; merge with `ctscore aggregate OUT`")
    g.add_argument("--overwrite", action="store_true", help="score every series again, even finished ones")
    g.add_argument("--retry-failed", action="store_true", help="score failed series again (finished ones are kept)")
    g.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="per-scan time limit; a scan past it is recorded as TIMEOUT (default 3600, 0: none)")


def main(args: argparse.Namespace) -> int:
    from pipeline.batch import BatchOptions
    from pipeline.config import load_config
    from pipeline.run import run_pipeline

    extra: dict = {}
    if args.segmenter and args.model:
        raise ConfigError("give --segmenter or --model, not both")
    if args.segmenter or args.model:
        extra.setdefault("segmentation", {})["method"] = args.model or args.segmenter
    if args.device:
        extra.setdefault("segmentation", {})["device"] = args.device
    if args.lobes:
        extra.setdefault("scoring", {}).setdefault("lobar", {})["lobes_dir"] = str(Path(args.lobes).resolve())
    if args.masks:
        extra.setdefault("segmentation", {})["masks_dir"] = str(Path(args.masks).resolve())
    if args.landmarks:
        extra.setdefault("landmarks", {})["reader_levels"] = str(Path(args.landmarks).resolve())
    if args.dicom_seg:
        extra.setdefault("outputs", {})["write_dicom_seg"] = True
    cfg = load_config(args.config, args.overrides, extra)
    threads = 1 if args.threads_per_worker is None else args.threads_per_worker
    slurm = args.executor == "slurm"
    batch = BatchOptions(executor=args.executor, workers=args.workers, threads_per_worker=1 if slurm else threads,
                         slurm_profile=args.slurm_profile, shard_index=args.shard_index, num_shards=args.num_shards,
                         overwrite=args.overwrite, retry_failed=args.retry_failed, timeout_s=args.timeout or None,
                         progress=None if not args.quiet else False)
    batch.validate()
    if slurm and args.threads_per_worker is not None:  # given, and ignored: said once, here
        from pipeline.batch import warn_threads_ignored

        warn_threads_ignored(args.threads_per_worker, args.slurm_profile)
    if batch.resolved_executor() != "serial" and not args.verbose:
        import distributed  # noqa: F401 - its import sets its own log levels; quieten them afterwards

        logging.getLogger("distributed").setLevel(logging.WARNING)  # scheduler/nanny lines drown the scans
    # NO_ELIGIBLE_SERIES: "ctscore: error: ..." and exit 2 from the CLI's handler, as every other error is printed
    summary = run_pipeline(args.input, args.out, cfg, series_uid=args.series_uid, all_series=args.all_series,
                           batch=batch)
    print_summary(summary)
    return EXIT_SOME_FAILED if summary["n_failed"] else EXIT_OK


def print_summary(summary: dict) -> None:
    df = summary["scans"]
    cols = [c for c in ("scan_id", "status", "lung_volume_ml_right", "lung_volume_ml_left", "lesion_volume_ml",
                        "percent_opacity", "six_zone_total", "zhang900_total", "mosmed_category") if c in df]
    import pandas as pd

    more = 0
    if len(df) > CONSOLE_ROWS:  # a cohort: not 50 000 lines in a SLURM log; the failed ones first, then the rest
        failed = df["status"].astype(str) != "ok" if "status" in df else pd.Series(False, index=df.index)
        keep = df[failed].head(CONSOLE_ROWS // 2).index
        keep = keep.append(df[~failed].head(CONSOLE_ROWS - len(keep)).index)
        more, df = len(df) - len(keep), df.loc[sorted(keep)]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        shown = df[cols].astype(object)  # a missing value reads "-", as in report.html (not NaN, nor <NA>)
        print(shown.where(shown.notna(), MISSING).to_string(index=False))
    if more:
        print(f"... and {more} more series: {summary['out_dir']}/scans.csv has every row")
    print(f"\n{summary_line(summary)}; outputs in {summary['out_dir']}")
    if summary["n_failed"]:
        print(f"see {summary['out_dir']}/failures.csv for the reasons")
    if summary.get("unreadable"):
        print(f"note: {summary['unreadable']}")


#: Most rows of the console summary (failed series first, up to half of them): scans.csv has every row.
CONSOLE_ROWS = 40
#: How the console summary shows a missing value (a total of zones the scan cannot see, the scores of a failed series)
MISSING = "-"


def summary_line(summary: dict) -> str:
    """"7 of 8 series scored, 1 failed", and on a resume which of them an earlier run finished (``n_skipped``) and
    how many failures it left that ``--retry-failed`` would try again (``n_failed_kept``, when the summary has it)."""
    n, n_failed = summary["n_series"], summary["n_failed"]
    line = f"{summary['n_ok']} of {n} series scored, {n_failed} failed"
    done = int(summary.get("n_skipped") or 0)
    if not done:
        return line
    kept = summary.get("n_failed_kept")
    earlier = (f"all {n} " if n > 1 else "") if done == n else f"{done} of the {n} "
    note = f"{earlier}finished in an earlier run" + ("" if done == n else f", {n - done} scored or tried now")
    if kept:
        which = ("the failed one" if n_failed == 1 else f"the {kept} failed ones") if kept == n_failed else \
            f"the {'one' if kept == 1 else kept} that failed in the earlier run"
        note += f"; --retry-failed scores {which} again"
    return f"{line} ({note})"
