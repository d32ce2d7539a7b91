"""Peak memory and time of the classical segmenter on one series folder.

The series is read as the pipeline reads it (first selected series, LPS, resampled to the working grid) once;
then ``ClassicalSegmenter().segment`` runs once under tracemalloc (numpy allocations are traced) for the peak,
and ``--runs`` times without it for the median time. Prints one line, plus the sha256 of the masks with
``--hashes`` (to check that a change leaves them identical).

    python scripts/benchmark_classical.py ../shared/data/chest/normal001 --runs 3 --hashes
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def load_working(folder: Path, spacing_mm: float) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The HU volume ``[z, y, x]`` and its spacing on the working grid, as pipeline.run.analyse_volume has them."""
    import SimpleITK as sitk

    from pipeline.discovery import discover, select_series
    from pipeline.loading import load_series
    from pipeline.resample import resample_to_spacing, to_lps

    candidates = select_series(discover(folder))
    if not candidates:
        raise ValueError(f"no CT series found in {folder}")
    work = resample_to_spacing(to_lps(load_series(candidates[0].files).image), (spacing_mm,) * 3)
    return sitk.GetArrayFromImage(work), tuple(work.GetSpacing()[::-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a folder holding one CT series (DICOM)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs without tracemalloc (default 3; 0: none)")
    ap.add_argument("--spacing", type=float, default=1.5, help="working grid spacing in mm (default 1.5)")
    ap.add_argument("--hashes", action="store_true", help="also print the sha256 of the lung/lesion/airway masks")
    args = ap.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    if args.runs < 0:
        print("error: --runs must be 0 or more", file=sys.stderr)
        return 2
    try:
        hu, spacing = load_working(args.folder, args.spacing)
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        print(f"error: cannot read {args.folder}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1

    from segmentation.classical import ClassicalSegmenter

    seg = ClassicalSegmenter()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        res = seg.segment(hu, spacing)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        seg.segment(hu, spacing)
        times.append(time.perf_counter() - t)
    median = f"{float(np.median(times)):.2f} s" if times else "-"
    print(f"{args.folder.name}: volume {hu.shape} {hu.nbytes / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB "
          f"({peak / hu.nbytes:.2f}x), median time {median} over {args.runs} runs")
    if args.hashes:
        for name in ("lungs", "lesions", "airway"):
            arr = getattr(res, name)
            print(f"  {name}: {hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
