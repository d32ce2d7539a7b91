#!/usr/bin/env python
"""Time each stage of the pipeline (read, resample, segment, back to original grid, score, write) and
the peak memory, on the embedded sample or on any series folder.

    python scripts/benchmark.py                       # sample_dicoms/, 3 runs
    python scripts/benchmark.py ../shared/data/chest/normal001 --runs 3 --segmenter classical
    python scripts/benchmark.py --generated 600 --runs 3  # a generated 512x512x600 chest, 0.6 mm

Prints the median of each stage over the runs. The segmenter is built once before the runs, as in a batch,
and timed on its own ("segmenter build"); the first run still pays first-call warm-up, so use 3 runs or more.
Peak RSS is that of this process (ru_maxrss). "write" is the masks and pictures; writing result.json and committing
the series folder count in "total" only.
"""

from __future__ import annotations

import argparse
import statistics as stats_lib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def peak_rss_mib() -> float | None:
    """This process's peak resident memory in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS); None on Windows
    (no ``resource`` module)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("series", nargs="?", default=None, help="folder with one CT series (default: sample_dicoms/)")
    ap.add_argument("--runs", type=positive_int, default=3)
    ap.add_argument("--segmenter", default=None, help="classical | monai | bundle path (default: config)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--generated", type=positive_int, metavar="NZ",
                    help="instead of SERIES: a generated chest of NZ slices of 512 x 512 at 0.6 mm (the generator of "
                         "scripts/benchmark_batch.py, run in its own process so its memory is not counted)")
    args = ap.parse_args(argv)
    if args.generated and args.series is not None:
        ap.error("give SERIES or --generated, not both")
    if args.series is None:
        args.series = str(REPO / "sample_dicoms")
    if args.generated:
        try:
            tmp_dir = tempfile.TemporaryDirectory()
        except OSError as exc:  # no writable temporary folder: one line, not a traceback
            print(f"error: no temporary folder for the generated chest: {exc}", file=sys.stderr)
            return 1
        with tmp_dir as tmp:
            code = ("import sys; sys.path.insert(0, sys.argv[1]); from tests.scripts_loader import load_script; "
                    "load_script('benchmark_batch').write_chest_series(sys.argv[2], 0, "
                    "shape=(int(sys.argv[3]), 512, 512), spacing_mm=0.6)")
            # a failed generation (a full disk: 0.5 MB a slice; out of memory at a large NZ) is one line naming the
            # cause, not the child's traceback followed by this process's CalledProcessError traceback
            try:
                gen = subprocess.run([sys.executable, "-c", code, str(REPO), tmp, str(args.generated)],
                                     capture_output=True, text=True, check=False)
            except OSError as exc:
                print(f"error: cannot start the generator: {exc}", file=sys.stderr)
                return 1
            if gen.returncode != 0:
                lines = [ln.strip() for ln in (gen.stderr or "").splitlines() if ln.strip()]
                why = lines[-1] if lines else (f"killed by signal {-gen.returncode} (out of memory?)"
                                               if gen.returncode < 0 else f"exit status {gen.returncode}")
                print(f"error: generating the {args.generated}-slice chest failed: {why}", file=sys.stderr)
                return 1
            given = list(argv if argv is not None else sys.argv[1:])
            rest = [a for i, a in enumerate(given) if not (a == "--generated" or a.startswith("--generated=")
                                                           or (i > 0 and given[i - 1] == "--generated"))]
            return main([tmp, *rest])

    from pipeline.config import load_config
    from pipeline.discovery import discover, select_series
    from pipeline.errors import CTScoreError
    from pipeline.outputs import scan_id_for
    from pipeline.run import process_series
    from segmentation.factory import get_segmenter

    extra: dict = {}
    if args.segmenter:
        extra.setdefault("segmentation", {})["method"] = args.segmenter
    if args.device:
        extra.setdefault("segmentation", {})["device"] = args.device
    try:
        cfg = load_config(overrides=args.overrides, extra=extra)
        chosen = select_series(discover(args.series), cfg=cfg)
    except CTScoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not chosen:
        print(f"no eligible series under {args.series}", file=sys.stderr)
        return 2
    cand = chosen[0]
    from tests.scripts_loader import load_script

    machine = load_script("benchmark_batch").machine_line()  # the load average before the benchmark's own work
    t = time.perf_counter()
    try:  # a model folder that does not load, --device cuda without CUDA: one line, not a traceback
        segmenter = get_segmenter(cfg)
    except CTScoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    build_s = time.perf_counter() - t
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            t = time.perf_counter()
            try:  # an output folder that cannot be written (a full temporary disk): one line, not a traceback
                st = process_series([str(f) for f in cand.files], cfg, Path(tmp) / f"run{i}",
                                    scan_id_for(cand.series_uid, "bench"), cand.header, segmenter)
            except CTScoreError as exc:
                print(f"run {i} failed: {exc}", file=sys.stderr)
                return 1
            total = time.perf_counter() - t
            if st["status"] != "ok":
                print(f"run {i} failed: {st.get('code')}: {st.get('message')}", file=sys.stderr)
                return 1
            rows.append({**st["timings"], "total_s": total})
    peak_mb = peak_rss_mib()
    print(f"series: {args.series} ({len(cand.files)} files), segmenter: {segmenter.name}, runs: {args.runs}")
    print(machine)
    print(f"segmenter build (once): {build_s:.2f} s")
    print(f"{'stage':<22}{'median s':>10}{'min s':>10}{'max s':>10}")
    for key in rows[0]:
        vals = [r[key] for r in rows]
        print(f"{key:<22}{stats_lib.median(vals):>10.2f}{min(vals):>10.2f}{max(vals):>10.2f}")
    print(f"peak RSS: {peak_mb:.0f} MiB" if peak_mb is not None else "peak RSS: not measured on this system")
    return 0


if __name__ == "__main__":
    sys.exit(main())
