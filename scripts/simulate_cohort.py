#!/usr/bin/env python
"""Write a simulated cohort with known effects (scores as the pipeline writes them, clinical, labs).

    python scripts/simulate_cohort.py -o sim/ [--seed 0] [--survivors 68] [--non-survivors 25]

Then: ctscore stats --scores sim/scores --clinical sim/clinical.csv --labs sim/labs.csv -o sim/stats
The planted effects are listed in scoring/stats/simulate.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from scoring.stats.simulate import write_cohort
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scoring.stats.simulate import write_cohort


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", required=True, help="folder to write into")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--survivors", type=int, default=68)
    p.add_argument("--non-survivors", type=int, default=25)
    a = p.parse_args(argv)
    if a.survivors < 1 or a.non_survivors < 0 or a.survivors + a.non_survivors < 2:
        p.error("need --survivors >= 1, --non-survivors >= 0 and at least 2 patients in all")
    if Path(a.output).exists() and not Path(a.output).is_dir():
        p.error(f"-o {a.output} is a file, not a folder")
    paths = write_cohort(a.output, seed=a.seed, n_survivors=a.survivors, n_nonsurvivors=a.non_survivors)
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
