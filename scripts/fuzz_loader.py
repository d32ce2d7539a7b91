"""Longer fuzz run of the DICOM loader (the CI test runs ~1200 cases).

    python scripts/fuzz_loader.py --cases 20000

Runs tests/test_dicom_fuzz.py with more hypothesis examples and random (not derandomized) seeds;
any exception other than CTScoreError, or a case slower than the deadline, fails with the input.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=20000, help="hypothesis examples per fuzz test (default 20000)")
    args = p.parse_args()
    if args.cases < 1:
        p.error(f"--cases must be at least 1, got {args.cases}")
    env = dict(os.environ, CTSCORE_FUZZ_CASES=str(args.cases), CTSCORE_FUZZ_RANDOM="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
           "tests/test_dicom_fuzz.py", "-k", "fuzz_header_values or fuzz_bytes"]
    return subprocess.call(cmd, cwd=REPO, env=env)


if __name__ == "__main__":
    sys.exit(main())
