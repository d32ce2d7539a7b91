"""``ctscore share OUT DEST``: copy what can leave the institution of a run's output folder into a new folder
(pipeline.share.share_outputs)."""

from __future__ import annotations

import argparse

from pipeline.errors import EXIT_OK


def register(sub) -> None:
    from pipeline.commands.run import add_log_args

    p = sub.add_parser("share", help="copy the shareable part of an output folder (scores, masks, QC pictures) into "
                                     "a new folder",
                       description="Copy into DEST (new, or an empty folder) only what can be shared outside the "
                                   "institution: scans.csv, zones.csv (and Parquet twins), data_dictionary.csv, "
                                   "failures.csv with scan_id and code only, each series' masks, QC pictures and "
                                   "result.json, run.json with the input redacted, a report.html made again from "
                                   "them, and the manifest SHARED.txt (sha256 of every file copied, what was left "
                                   "out and why). Left out: inventory.csv, .status/, seg.dcm, logs, series folders "
                                   "not in the run's tables (an earlier run of another input) and anything not "
                                   "recognised. Refuses a run whose pseudonyms were made with the built-in salt "
                                   "(BUILTIN_SALT) or without pseudonyms (NOT_PSEUDONYMOUS). OUT is only read.")
    p.add_argument("out", help="output folder of `ctscore run` (or of `ctscore aggregate`)")
    p.add_argument("dest", help="the folder to make (must not exist, or be empty)")
    p.add_argument("--include-dicom-seg", action="store_true",
                   help="also copy each series' seg.dcm (--dicom-seg): it carries every patient and study attribute "
                        "of its source images (name, ID, birth date, ...): de-identify it before it leaves")
    p.add_argument("--allow-builtin-salt", action="store_true",
                   help="share pseudonyms made with the built-in salt (refused otherwise, BUILTIN_SALT: anyone can "
                        "recompute them from PatientIDs, and a numeric PatientID is recovered by trying every number)")
    p.add_argument("--allow-identifiers", action="store_true",
                   help="share a run made with outputs.pseudonymize false, whose patient_id is the PatientID itself "
                        "(refused otherwise, NOT_PSEUDONYMOUS)")
    add_log_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pipeline.share import share_outputs

    summary = share_outputs(args.out, args.dest, include_dicom_seg=args.include_dicom_seg,
                            allow_builtin_salt=args.allow_builtin_salt, allow_identifiers=args.allow_identifiers)
    print_summary(summary)
    return EXIT_OK


def print_summary(summary: dict) -> None:
    """What was copied and what was left out, on the console (the names of files not of ctscore's making too: the
    manifest in DEST only counts them)."""
    from pipeline.share import MANIFEST_NAME

    size = sum(c["bytes"] for c in summary["copied"])
    print(f"{len(summary['copied'])} files ({size / 1e6:.1f} MB) written to {summary['dest']}; "
          f"the manifest {MANIFEST_NAME} lists them with their sha256")
    if summary["left_out"]:
        print(f"left out ({len(summary['left_out'])}):")
        for x in summary["left_out"]:
            print(f"  {x['path']}: {x['reason']}")
    if summary["not_recognised"]:
        print(f"not recognised, left out: {len(summary['not_recognised'])} (named above; check that nothing you "
              "meant to share is among them)")
