"""``ctscore methods OUT``: a Markdown "Methods" paragraph for a paper, from the run's own records
(pipeline.methods.methods_text / write_methods)."""

from __future__ import annotations

import argparse

from pipeline.errors import EXIT_OK, CTScoreError


def register(sub) -> None:
    from pipeline.commands.run import add_log_args

    p = sub.add_parser("methods", help="write a Methods paragraph for a paper (Markdown) from a run's records",
                       description="Write a Markdown 'Methods' text a researcher can paste into a paper and edit: the "
                                   "ctscore and package versions, segmenter, model and device, the counts of scans, "
                                   "failures, patients, slice thicknesses, manufacturers and kernels, the resampling, "
                                   "HU bands, landmarks and score systems (with their citations) as configured for "
                                   "this run, the QC flags counted, and the configuration hash. Everything is read "
                                   "from OUT (scans.csv, failures.csv, run.json, each scan's result.json), never from "
                                   "the current defaults; settings that differ between scans are named; "
                                   "what they do not record is said to be unknown. OUT is only read, except for "
                                   "the default OUT/METHODS.md and the record of what was written "
                                   "(OUT/.status/methods_written.txt). A file already there is replaced only when "
                                   "ctscore wrote it and it was not edited since (else OUTPUT_EXISTS), or with "
                                   "--overwrite.")
    p.add_argument("out", help="output folder of `ctscore run` (or of `ctscore aggregate`)")
    p.add_argument("-o", "--output", metavar="FILE", default=None,
                   help="file to write (default OUT/METHODS.md); - prints the text on stdout")
    p.add_argument("--exclude", metavar="REVIEW.csv", default=None,
                   help="the scans excluded at QC review (the list given to `ctscore stats` / `validate`): the text "
                        "says how many were excluded and why")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the file even when it was edited since ctscore wrote it, or ctscore did not write "
                        "it (the edits are lost)")
    add_log_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from pipeline.methods import methods_text, write_methods

    if args.output == "-":
        if args.overwrite:
            raise CTScoreError("BAD_OPTION", "-o - prints the text: --overwrite needs a file")
        print(methods_text(args.out, exclude=args.exclude), end="")
        return EXIT_OK
    path = write_methods(args.out, args.output, exclude=args.exclude, overwrite=args.overwrite)
    print(f"Methods text written to {path}: check and edit it before use")
    return EXIT_OK
