#!/usr/bin/env python
"""Does the network give the same masks on this GPU as on the CPU, and how fast is it there?

    python scripts/device_check.py ../shared/data/chest/normal001 --devices cpu cuda --runs 3
    python scripts/device_check.py ../shared/data/chest/cap001 --save-npz cap001.npz   # no network run
    python scripts/device_check.py --npz cap001.npz normal001.npz --devices cpu cuda

Each input is a series folder (loaded and resampled to the working grid exactly as ``ctscore run`` does) or,
with ``--npz``, such a working-grid volume saved by ``--save-npz`` (arrays ``hu``, int16, and ``spacing``): the
GPU machine then needs neither the DICOM stack nor the loader's libraries. For each device the MONAI segmenter
(the configured weights, test-time views and threshold; fp16 autocast on CUDA, float32 on CPU) is built once
and ``segment`` is timed over ``--runs`` runs (median; the first run pays the warm-up, so use 3 or more). Printed:
per input and device the lung and lesion volumes and the median, minimum and maximum time; the peak GPU memory;
the agreement of each device's masks with the first device's (Dice of right lung, left lung and lesion, and the
lesion volume difference); and whether repeated runs on one device gave identical masks. ``--json`` writes the
same figures.

Exit status: 0 when the masks of every device agree with the first device's within ``--min-dice`` (default
0.99 for each lung and 0.95 for the lesion, whose thin edges move most under fp16), 1 otherwise, 2 for bad
input.
"""

from __future__ import annotations

import argparse
import io
import statistics as stats_lib
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def load_working_grid(series: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The series' HU volume on the pipeline's working grid (as ``analyse_volume`` gives it to the segmenter)."""
    import SimpleITK as sitk

    from pipeline.config import load_config
    from pipeline.discovery import discover, select_series
    from pipeline.loading import load_series
    from pipeline.resample import resample_to_spacing, to_lps

    cfg = load_config()
    chosen = select_series(discover(series), cfg=cfg)
    if not chosen:
        raise SystemExit(f"error: no eligible series under {series}")
    vol = load_series([str(f) for f in chosen[0].files], cfg)
    work = resample_to_spacing(to_lps(vol.image), cfg["resample"]["spacing_mm"])
    return sitk.GetArrayFromImage(work), tuple(float(s) for s in work.GetSpacing()[::-1])


def load_npz(path: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A working-grid volume written by ``--save-npz`` (no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            hu, spacing = z["hu"], tuple(float(s) for s in z["spacing"])
    except (OSError, KeyError, ValueError) as exc:
        raise SystemExit(f"error: {path}: not a volume written by --save-npz ({exc})") from exc
    if hu.ndim != 3 or len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise SystemExit(f"error: {path}: expected a 3-D 'hu' array and three positive spacings")
    return hu, spacing


def save_npz(path: str, hu: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """Written atomically (``pipeline.outputs.atomic_write_bytes``)."""
    from pipeline.outputs import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, hu=np.clip(hu, -32768, 32767).astype(np.int16), spacing=np.asarray(spacing, float))
    atomic_write_bytes(Path(path), buf.getvalue())


def run_device(device: str, inputs: list[tuple[str, np.ndarray, tuple]], runs: int) -> dict:
    """Build the segmenter on ``device`` once, then segment each input ``runs`` times."""
    import torch

    from pipeline.config import load_config
    from segmentation.monai_segmenter import MonaiSegmenter

    cfg = load_config()
    t = time.perf_counter()
    seg = MonaiSegmenter(device=device, cfg=cfg)
    out: dict = {"build_s": time.perf_counter() - t, "device": str(seg.device), "model": seg.model_id,
                 "inputs": {}}
    cuda = seg.device.type == "cuda"
    if cuda:
        out["gpu"] = torch.cuda.get_device_name(seg.device)
    for name, hu, spacing in inputs:
        if cuda:
            torch.cuda.reset_peak_memory_stats(seg.device)
        times, masks = [], []
        for _ in range(runs):
            if cuda:
                torch.cuda.synchronize(seg.device)
            t = time.perf_counter()
            s = seg.segment(hu, spacing)
            if cuda:
                torch.cuda.synchronize(seg.device)
            times.append(time.perf_counter() - t)
            masks.append((s.lungs.copy(), s.lesions.copy()))
        voxel_ml = float(np.prod(spacing)) / 1000.0
        lungs, lesions = masks[0]
        rec = {
            "shape": list(hu.shape), "spacing_mm": list(spacing),
            "median_s": stats_lib.median(times), "min_s": min(times), "max_s": max(times), "runs": runs,
            "right_ml": float((lungs == 1).sum()) * voxel_ml, "left_ml": float((lungs == 2).sum()) * voxel_ml,
            "lesion_ml": float((lesions > 0).sum()) * voxel_ml,
            "repeat_identical": all(np.array_equal(m[0], lungs) and np.array_equal(m[1], lesions)
                                    for m in masks[1:]),
        }
        if cuda:
            rec["peak_gpu_mb"] = torch.cuda.max_memory_allocated(seg.device) / 2**20
        rec["_masks"] = (lungs, lesions > 0)
        out["inputs"][name] = rec
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="series folders, or .npz files with --npz")
    ap.add_argument("--npz", action="store_true", help="the inputs are volumes written by --save-npz")
    ap.add_argument("--save-npz", metavar="FILE", help="write the (one) input's working-grid volume and stop")
    ap.add_argument("--devices", nargs="+", default=["cpu", "cuda"], help="the first one is the reference")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--min-dice", type=float, nargs=2, default=[0.99, 0.95], metavar=("LUNG", "LESION"))
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    if len(set(args.devices)) != len(args.devices):
        ap.error("name each device once")
    from pipeline.errors import CTScoreError

    if args.save_npz:
        if len(args.inputs) != 1 or args.npz:
            ap.error("--save-npz takes one series folder")
        try:
            hu, spacing = load_working_grid(args.inputs[0])
        except CTScoreError as exc:
            print(f"error: {args.inputs[0]}: {exc}", file=sys.stderr)
            return 2
        save_npz(args.save_npz, hu, spacing)
        print(f"{args.save_npz}: {hu.shape} at {spacing} mm")
        return 0
    from segmentation.monai_segmenter import resolve_device

    for device in args.devices:  # before any input is loaded or run: cuda on a machine without it fails now
        try:
            resolve_device(device)
        except CTScoreError as exc:
            print(f"error: device {device}: {exc}", file=sys.stderr)
            return 2
    inputs = []
    for path in args.inputs:
        if not Path(path).exists():
            print(f"error: {path}: no such file or folder", file=sys.stderr)
            return 2
        try:
            hu, spacing = load_npz(path) if args.npz else load_working_grid(path)
        except CTScoreError as exc:  # an unreadable series: one line naming it, not a traceback
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
        inputs.append((Path(path).name.removesuffix(".npz"), hu, spacing))

    results = {}
    for device in args.devices:
        try:
            results[device] = run_device(device, inputs, args.runs)
        except CTScoreError as exc:
            print(f"error: device {device}: {exc}", file=sys.stderr)
            return 2
    ref = args.devices[0]
    ok = True
    for device, res in results.items():
        print(f"device {device} -> {res['device']} {res.get('gpu', '')}, model {res['model']}, "
              f"built in {res['build_s']:.1f} s")
        for name, rec in res["inputs"].items():
            line = (f"  {name} {tuple(rec['shape'])}: median {rec['median_s']:.2f} s (min {rec['min_s']:.2f}, "
                    f"max {rec['max_s']:.2f}, {rec['runs']} runs); right {rec['right_ml']:.0f} mL, left "
                    f"{rec['left_ml']:.0f} mL, lesion {rec['lesion_ml']:.1f} mL; repeats identical: "
                    f"{rec['repeat_identical']}")
            if "peak_gpu_mb" in rec:
                line += f"; peak GPU memory {rec['peak_gpu_mb']:.0f} MiB"
            print(line)
            if device != ref:
                lungs_r, les_r = results[ref]["inputs"][name]["_masks"]
                lungs, les = rec["_masks"]
                agree = {"right_dice": dice(lungs == 1, lungs_r == 1), "left_dice": dice(lungs == 2, lungs_r == 2),
                         "lesion_dice": dice(les, les_r),
                         "lesion_ml_diff": rec["lesion_ml"] - results[ref]["inputs"][name]["lesion_ml"]}
                rec[f"agreement_with_{ref}"] = agree
                good = (min(agree["right_dice"], agree["left_dice"]) >= args.min_dice[0]
                        and agree["lesion_dice"] >= args.min_dice[1])
                ok &= good
                print(f"    vs {ref}: Dice right {agree['right_dice']:.4f}, left {agree['left_dice']:.4f}, lesion "
                      f"{agree['lesion_dice']:.4f}; lesion {agree['lesion_ml_diff']:+.1f} mL"
                      f"{'' if good else '  BELOW --min-dice'}")
    for res in results.values():
        for rec in res["inputs"].values():
            rec.pop("_masks")
    if args.json:
        from pipeline.outputs import atomic_write_json

        atomic_write_json(Path(args.json), results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
