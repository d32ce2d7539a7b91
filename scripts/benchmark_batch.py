#!/usr/bin/env python
"""Batch throughput (series per minute) for 1 and 2 dask workers on generated series.

    python scripts/benchmark_batch.py                          # 12 series, 1x1 and 2x1, classical
    python scripts/benchmark_batch.py --series 16 --repeats 3 --configs 1x1 2x1 1x2
    python scripts/benchmark_batch.py --segmenter monai --device cuda --configs 1x1   # on a GPU

Each configuration ``WxT`` (W local workers of T threads) scores the same generated series into a
fresh output folder (``--overwrite`` semantics: nothing is skipped) with ``ctscore``'s local executor;
the time includes starting the cluster and loading the model once per worker. Figures are medians
over ``--repeats`` (default 3); the configurations take turns within each repeat, so that a change in the machine's
load falls on all of them alike; the speed-up is relative to the first configuration.

The series are small synthetic chests (two lungs, a trachea, one ground-glass lesion) written as CT
DICOM; ``write_chest_series`` is also used by tests/test_batch.py.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def machine_line() -> str:
    """The cores, the load average before the benchmark and torch's thread count: with torch's default of one thread
    per core, any other load made one stage swing 2.75-10.7 s on 2 cores (1 thread: 4.4-5.4 s; a performance audit),
    so a figure means little without them. ``OMP_NUM_THREADS=1`` steadies a busy machine."""
    import os

    load = "/".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "not measured"
    try:
        import torch

        threads = str(torch.get_num_threads())
    except ImportError:
        threads = "no torch"
    return f"machine: {os.cpu_count()} cores, load average {load} (1/5/15 min), torch threads {threads}"


def chest_volume(shape: tuple[int, int, int] = (40, 64, 64), spacing_mm: float = 5.0, seed: int = 0,
                 lesion: bool = True) -> np.ndarray:
    """HU volume [z, y, x] of a simple chest: body, two lung ellipsoids, a trachea, optional lesion.

    Sparse grids and noise drawn slice by slice (the same values): dense float64 grids made the generator of
    ``benchmark.py --generated 600`` peak at 7.3 GB, more than the run it benchmarks (a performance audit)."""
    nz, ny, nx = shape
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(np.arange(nz) * spacing_mm, (np.arange(ny) - ny / 2 + 0.5) * spacing_mm,
                          (np.arange(nx) - nx / 2 + 0.5) * spacing_mm, indexing="ij", sparse=True)
    half_w, half_h = 0.47 * nx * spacing_mm, 0.33 * ny * spacing_mm
    hu = np.full(shape, -1000.0, np.float32)
    body = np.broadcast_to((x / half_w) ** 2 + (y / half_h) ** 2 <= 1, shape)
    hu[body] = 40.0
    zc = nz * spacing_mm / 2
    for side in (-1, 1):
        lung = (((x - side * 0.43 * half_w) / (0.33 * half_w)) ** 2 + (y / (0.67 * half_h)) ** 2
                + ((z - zc + 10) / (0.42 * nz * spacing_mm)) ** 2) <= 1
        hu[lung] = -860.0
    trachea = (x ** 2 + (y + 10) ** 2 <= 81) & (z > zc + 30) & body
    hu[trachea] = -1000.0
    if lesion:
        r = 15 + 10 * (seed % 3)
        les = (x + 0.43 * half_w) ** 2 + (y - 20) ** 2 + (z - zc) ** 2 <= r ** 2
        hu[les & (hu < -800)] = -500.0
    for k in range(nz):  # the stream of one (nz, ny, nx) draw, a slice at a time
        hu[k] += rng.normal(0, 15, shape[1:]).astype(np.float32)
    return hu


def write_chest_series(out_dir: str | Path, index: int, shape: tuple[int, int, int] = (40, 64, 64),
                       spacing_mm: float = 5.0) -> str:
    """Write generated chest ``index`` as one CT series (one file per slice); return its SeriesInstanceUID."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hu = chest_volume(shape, spacing_mm, seed=index)
    study = generate_uid(entropy_srcs=[f"ctscore-bench-study-{index}"])
    series = generate_uid(entropy_srcs=[f"ctscore-bench-series-{index}"])
    nz, ny, nx = shape
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[f"ctscore-bench-{index}-{k}"])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(out / f"{k:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.ImageType = "CT", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientID, ds.StudyDate = f"BENCH{index:04d}", "20200301"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-(nx / 2 - 0.5) * spacing_mm, -(ny / 2 - 0.5) * spacing_mm, k * spacing_mm]
        ds.PixelSpacing, ds.SliceThickness = [spacing_mm, spacing_mm], spacing_mm
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (np.round(hu[k]) + 1024).astype(np.int16).tobytes()
        ds.save_as(out / f"{k:04d}.dcm", enforce_file_format=True)
    return str(series)


def time_config(input_dir: Path, workers: int, threads: int, cfg: dict, n: int) -> float:
    """Seconds to score every series under ``input_dir`` with ``workers`` x ``threads`` (fresh output)."""
    from pipeline.batch import BatchOptions
    from pipeline.run import run_pipeline

    with tempfile.TemporaryDirectory() as out:
        opts = BatchOptions(executor="local", workers=workers, threads_per_worker=threads, progress=False)
        t = time.perf_counter()
        summary = run_pipeline(input_dir, out, cfg, all_series=True, batch=opts)
        seconds = time.perf_counter() - t
        if summary["n_ok"] != n:  # name the first failure before the output folder goes
            import csv

            with open(Path(out) / "failures.csv", newline="") as fh:
                first = next(csv.DictReader(fh), {})
            raise RuntimeError(f"{workers}x{threads}: {summary['n_failed']} of {n} series failed (first: "
                               f"{first.get('code', '?')}: {first.get('message', '')})")
    return seconds


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def workers_threads(text: str) -> tuple[int, int]:
    """argparse type: ``WxT`` (workers x threads per worker, both >= 1) as ``(W, T)``."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"expected WORKERSxTHREADS such as 2x1, got {text!r}")
    return int(parts[0]), int(parts[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=positive_int, default=12, help="number of generated series (default 12)")
    ap.add_argument("--shape", type=positive_int, nargs=3, default=[40, 64, 64], metavar=("Z", "Y", "X"))
    ap.add_argument("--configs", nargs="+", type=workers_threads, default=[(1, 1), (2, 1)],
                    help="WORKERSxTHREADS (default 1x1 2x1)")
    ap.add_argument("--repeats", type=positive_int, default=3,
                    help="runs of each configuration, taking turns (default 3): figures are their medians")
    ap.add_argument("--segmenter", default="classical")
    ap.add_argument("--device", default=None)
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                    help="config override, e.g. resample.spacing_mm=[2,2,2]")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    from pipeline.config import load_config
    from pipeline.errors import CTScoreError
    from pipeline.outputs import atomic_write_json

    extra: dict = {"segmentation": {"method": args.segmenter}, "outputs": {"write_qc_png": False}}
    if args.device:
        extra["segmentation"]["device"] = args.device
    try:
        cfg = load_config(overrides=args.overrides, extra=extra)
    except CTScoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    figures = []
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.series):
            write_chest_series(Path(tmp) / f"s{i:03d}", i, tuple(args.shape))
        times: list[list[float]] = [[] for _ in args.configs]
        try:  # --device cuda without CUDA, a model that does not load, a series that fails: one line
            for _ in range(args.repeats):  # the configurations take turns: drift in the load falls on all alike
                for (w, t), runs in zip(args.configs, times):
                    runs.append(time_config(Path(tmp), w, t, cfg, args.series))
        except CTScoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for (w, t), runs in zip(args.configs, times):
            conf = f"{w}x{t}"
            med = statistics.median(runs)
            figures.append({"config": conf, "workers": w, "threads": t, "seconds": [round(r, 2) for r in runs],
                            "median_s": round(med, 2), "series_per_min": round(60 * args.series / med, 2)})
            print(f"{conf:>6}: {figures[-1]['series_per_min']:7.2f} series/min  (median {med:.1f} s over "
                  f"{args.repeats} run(s): {figures[-1]['seconds']})", flush=True)
    base = figures[0]["series_per_min"]
    for f in figures:
        f["speedup"] = round(f["series_per_min"] / base, 2)
    print("speed-up vs " + figures[0]["config"] + ": " + ", ".join(f"{f['config']} {f['speedup']}x" for f in figures))
    if args.json:
        atomic_write_json(Path(args.json), {"host": platform.node(), "series": args.series, "shape": args.shape,
                                            "segmenter": args.segmenter, "device": args.device, "overrides": args.overrides,
                                            "repeats": args.repeats, "figures": figures})
    return 0


if __name__ == "__main__":
    sys.exit(main())
