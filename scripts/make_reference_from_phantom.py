#!/usr/bin/env python
"""Write an example reference CSV (docs/reference_schema.md) from the phantom's ground truth.

reader1 = the ground truth; reader2 (and more with --readers) = seeded simulated readers.

    python scripts/make_reference_from_phantom.py -o examples/phantom_readers.csv
    ctscore run sample_dicoms -o OUT
    ctscore validate --pred OUT --reference examples/phantom_readers.csv -o VAL
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runs from a checkout without `pip install -e`, as the other scripts


def _number(low: float, high: float | None = None, kind: type = float):
    """argparse type: a finite ``kind`` number in ``[low, high]``."""
    def parse(text: str):
        value = kind(text)
        if not (math.isfinite(value) and value >= low and (high is None or value <= high)):
            upper = "" if high is None else f" and <= {high:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number >= {low:g}{upper}, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names it in "invalid ... value"
    return parse


def main(argv: list[str] | None = None) -> int:
    from pipeline.errors import CTScoreError
    from pipeline.outputs import atomic_write_bytes
    from scoring.validation.phantom import make_reference

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--truth", default=str(REPO / "sample_dicoms" / "ground_truth.json"),
                   help="ground_truth.json (default: sample_dicoms/ground_truth.json)")
    p.add_argument("-o", "--output", required=True, help="reference CSV to write")
    p.add_argument("--readers", type=_number(0, kind=int), default=1, help="simulated readers besides reader1 (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flip-prob", type=_number(0.0, 1.0), default=0.3, help="chance a unit score moves one step (default 0.3)")
    p.add_argument("--percent-sd", type=_number(0.0), default=0.15,
                   help="relative SD of the simulated percent involvement (default 0.15)")
    p.add_argument("--scan-id", default=None, help="name the scan by this scan_id when the truth file has no series_uid")
    args = p.parse_args(argv)
    if Path(args.output).is_dir():
        p.error(f"-o {args.output} is a folder; give the CSV file to write")
    truth_path = Path(args.truth)
    if not truth_path.is_file():
        print(f"error: {truth_path} not found (run scripts/make_sample_dicoms.py first)", file=sys.stderr)
        return 1
    try:
        truth = json.loads(truth_path.read_text())
    except (ValueError, OSError) as exc:
        print(f"error: {truth_path} is not a readable ground-truth JSON file: {exc}", file=sys.stderr)
        return 1
    try:
        ref = make_reference(truth, n_simulated=args.readers, seed=args.seed,
                             flip_prob=args.flip_prob, percent_sd=args.percent_sd, scan_id=args.scan_id)
    except CTScoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.output)
    atomic_write_bytes(out, ref.to_csv(index=False).encode())  # `ctscore validate` reads it
    print(f"wrote {len(ref)} rows ({ref['reader'].nunique()} readers) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
