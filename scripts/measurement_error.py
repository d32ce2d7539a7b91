#!/usr/bin/env python
"""Measurement error of ctscore's outputs under changes that leave the patient as it was: the same CT cropped by
slices or pixels outside the lungs (the working grid moves by a fraction of a voxel), shifted by a fraction of a
voxel, rotated 2 degrees about the head-feet axis, or given new noise. Prints, per output (the scan's scores and
volumes, and the shares of its lesion in the lungs' peripheral and posterior units of zones.csv), the baseline, the
range, the median and largest absolute change, how often it changed, and the repeatability coefficient (2.77 x the
within-scan standard deviation over all runs, baseline included), for power calculations and minimal detectable
changes. Figures of README "Measurement error".

    python scripts/measurement_error.py ../shared/data/chest/ricord_covid_419639
    python scripts/measurement_error.py ../shared/data/chest/cap001 --segmenter monai --quick

Each run scores the volume as ``ctscore run`` does (``pipeline.run.analyse_volume``): about 15-20 s per run with the
classical segmenter on a 2-core machine, 13 runs (``--quick``: 6).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LEVELS = ("carina", "ipv", "suprasternal_notch", "dome_right", "dome_left")
OUTPUTS = ("six_zone_total", "zhang900_total", "mosmed_category", "percent_opacity", "lesion_volume_ml",
           "consolidation_volume_ml", "lung_volume_ml", "percent_well_aerated", "lung_tissue_g",
           "non_aerated_volume_ml", "peripheral_lesion_pct", "posterior_lesion_pct")
#: the shares of a scan's lesion (both lungs) in one unit of a two-unit zones.csv system: output -> (system, unit)
LESION_SHARES = {"peripheral_lesion_pct": ("peripheral_central", "peripheral"),
                 "posterior_lesion_pct": ("anteroposterior", "posterior")}


def perturbations(quick: bool) -> list[tuple[str, dict]]:
    full = [("crop 1 top slice", {"crop": (0, 0, 0, 0, 0, 1)}), ("crop 2 top slices", {"crop": (0, 0, 0, 0, 0, 2)}),
            ("crop 1 bottom slice", {"crop": (0, 0, 1, 0, 0, 0)}), ("crop 1 pixel in plane", {"crop": (1, 1, 0, 0, 0, 0)}),
            ("crop 2 pixels in plane", {"crop": (2, 2, 0, 0, 0, 0)}), ("shift z 0.3 mm", {"shift": (0, 0, 0.3)}),
            ("shift z 0.7 mm", {"shift": (0, 0, 0.7)}), ("shift x 0.7 mm", {"shift": (0.7, 0, 0)}),
            ("shift y 0.7 mm", {"shift": (0, 0.7, 0)}), ("rotate +2 deg", {"rotate": 2.0}), ("rotate -2 deg", {"rotate": -2.0}),
            ("noise SD 10 HU, seed 0", {"noise": (10.0, 0)}), ("noise SD 10 HU, seed 1", {"noise": (10.0, 1)})]
    if quick:
        keep = {"crop 1 top slice", "crop 2 top slices", "crop 1 pixel in plane", "shift z 0.7 mm", "rotate +2 deg",
                "noise SD 10 HU, seed 0"}
        return [p for p in full if p[0] in keep]
    return full


def perturbed(image, padding, how: dict):
    """(image, padding) changed as ``how`` says; padding pixels keep their value."""
    import numpy as np
    import SimpleITK as sitk

    if "crop" in how:
        lo, hi = how["crop"][:3], how["crop"][3:]
        return (sitk.Crop(image, lo, hi), None if padding is None else sitk.Crop(padding, lo, hi))
    if "noise" in how:
        sd, seed = how["noise"]
        hu = sitk.GetArrayFromImage(image).astype(np.float32)
        noisy = hu + sd * np.random.default_rng(seed).standard_normal(hu.shape).astype(np.float32)
        if padding is not None:
            noisy = np.where(sitk.GetArrayFromImage(padding) > 0, hu, noisy)
        out = sitk.GetImageFromArray(noisy.astype(np.float32))
        out.CopyInformation(image)
        return out, padding
    if "shift" in how:
        tx = sitk.TranslationTransform(3, tuple(-v for v in how["shift"]))
    else:
        size = np.array(image.GetSize())
        tx = sitk.Euler3DTransform()
        tx.SetCenter(image.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2.0).tolist()))
        tx.SetRotation(0, 0, math.radians(how["rotate"]))
    out = sitk.Clamp(sitk.Resample(image, image, tx, sitk.sitkBSpline, -1024.0, sitk.sitkFloat32), sitk.sitkFloat32,
                     -1024.0, 3071.0)
    pad = None if padding is None else sitk.Resample(padding, padding, tx, sitk.sitkNearestNeighbor, 1)
    return out, pad


def measures(res: dict) -> dict:
    row = res["row"]
    out = {k: row.get(k) for k in OUTPUTS if k != "lung_volume_ml" and k not in LESION_SHARES}
    out["lung_volume_ml"] = round(float(row["lung_volume_ml_right"]) + float(row["lung_volume_ml_left"]), 2)
    for name, (system, unit) in LESION_SHARES.items():  # % of the lesion of both lungs; empty without lesion
        rows = [z for z in res["zones"] if z["system"] == system and z["status"] == "ok"]
        total = sum(z["lesion_ml"] for z in rows)
        part = sum(z["lesion_ml"] for z in rows if z["unit"] == unit)
        out[name] = round(100.0 * part / total, 2) if total > 0 else None
    for name in LEVELS:  # the levels that place the units: they move with the scan too
        lm = res["landmarks"].get(name)
        out[f"{name}_z_mm"] = None if lm is None or lm.z_mm is None else round(float(lm.z_mm), 1)
    return out


def summary(name: str, values: list) -> str:
    base = values[0]
    if name == "mosmed_category":
        changed = sum(v != base for v in values[1:])
        return f"{name:24s} {str(base):>9s} {'/'.join(sorted({str(v) for v in values})):>19s} {'':>9s} {'':>9s} " \
               f"{changed:>3d}/{len(values) - 1:<3d}"
    nums = [float(v) if v is not None and v == v else math.nan for v in values]
    if any(math.isnan(v) for v in nums):
        return f"{name:24s} {'(missing in some runs)':>40s}"
    diffs = [abs(v - nums[0]) for v in nums[1:]]
    changed = sum(d > 1e-9 for d in diffs)
    rc = 2.77 * statistics.stdev(nums)  # (the within-scan SD: n - 1)
    return (f"{name:24s} {nums[0]:9.4g} {min(nums):9.4g}-{max(nums):<9.4g} {statistics.median(diffs):9.3g} "
            f"{max(diffs):9.3g} {changed:>3d}/{len(diffs):<3d} {rc:9.3g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("series", type=Path, help="a DICOM series folder")
    parser.add_argument("--segmenter", default="classical", help="classical (default) or monai")
    parser.add_argument("--quick", action="store_true", help="6 perturbations instead of 13")
    args = parser.parse_args(argv)

    from pipeline.config import load_config
    from pipeline.discovery import discover, select_series
    from pipeline.loading import load_series
    from pipeline.resample import to_lps
    from pipeline.run import analyse_volume
    from segmentation.factory import build_segmenter

    cfg = load_config(extra={"segmentation": {"method": args.segmenter, "device": "cpu"}})
    segmenter = build_segmenter(cfg)
    cand = select_series(discover(args.series, cfg), cfg)[0]
    vol = load_series(cand.files, cfg)
    image = to_lps(vol.image)
    padding = None if vol.padding_mask is None else to_lps(vol.padding_mask)
    runs = [("as scanned", measures(analyse_volume(image, cfg, segmenter, padding=padding)))]
    for label, how in perturbations(args.quick):
        img, pad = perturbed(image, padding, how)
        runs.append((label, measures(analyse_volume(img, cfg, segmenter, padding=pad))))
        print(f"  {label}: " + ", ".join(f"{k} {v}" for k, v in runs[-1][1].items()), file=sys.stderr, flush=True)
    print(f"{args.series.name} ({args.segmenter}, {len(runs) - 1} perturbed runs)")
    print(f"{'output':24s} {'baseline':>9s} {'range':>19s} {'median|d|':>9s} {'max|d|':>9s} changed {'RC':>7s}")
    for name in OUTPUTS:
        print(summary(name, [r[1][name] for r in runs]))
    print("landmark levels (z mm) per run:")
    for label, m in runs:
        print(f"  {label:24s} " + "  ".join(f"{n} {m[f'{n}_z_mm']}" for n in LEVELS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
