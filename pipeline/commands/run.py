"""``ctscore run INPUT -o OUT``: score every selected series under INPUT."""

from __future__ import annotations

import argparse
import sys

from pipeline.errors import EXIT_NOTHING_ELIGIBLE, EXIT_OK, EXIT_SOME_FAILED, NoEligibleSeries


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
    p = sub.add_parser("run", help="segment and score the CT series under INPUT",
                       description="Find chest CT series under INPUT, segment lungs and lesions, and write "
                                   "scores, masks and QC pictures to OUT.")
    p.add_argument("input", help="folder (any depth) or file with DICOM data")
    p.add_argument("-o", "--out", required=True, help="output folder")
    add_config_args(p)
    p.add_argument("--segmenter", help="classical | monai | path to a MONAI bundle (segmentation.method)")
    p.add_argument("-d", "--device", help="cpu | cuda | cuda:N | auto (segmentation.device)")
    p.add_argument("--series-uid", help="score only this SeriesInstanceUID")
    p.add_argument("--all-series", action="store_true", help="score every eligible series, not one per study")
    p.add_argument("--dicom-seg", action="store_true", help="also write a DICOM-SEG per series (outputs.write_dicom_seg)")
    add_log_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pipeline.config import load_config
    from pipeline.run import run_pipeline

    extra: dict = {}
    if args.segmenter:
        extra.setdefault("segmentation", {})["method"] = args.segmenter
    if args.device:
        extra.setdefault("segmentation", {})["device"] = args.device
    if args.dicom_seg:
        extra.setdefault("outputs", {})["write_dicom_seg"] = True
    cfg = load_config(args.config, args.overrides, extra)
    try:
        summary = run_pipeline(args.input, args.out, cfg, series_uid=args.series_uid, all_series=args.all_series)
    except NoEligibleSeries as exc:
        print(f"ctscore: {exc}", file=sys.stderr)
        return EXIT_NOTHING_ELIGIBLE
    print_summary(summary)
    return EXIT_SOME_FAILED if summary["n_failed"] else EXIT_OK


def print_summary(summary: dict) -> None:
    df = summary["scans"]
    cols = [c for c in ("scan_id", "status", "lung_volume_ml_right", "lung_volume_ml_left", "lesion_volume_ml",
                        "percent_opacity", "six_zone_total", "zhang900_total", "mosmed_category") if c in df]
    with __import__("pandas").option_context("display.width", 200, "display.max_columns", 20):
        print(df[cols].to_string(index=False))
    print(f"\n{summary['n_ok']} of {summary['n_series']} series scored, {summary['n_failed']} failed; "
          f"outputs in {summary['out_dir']}")
