#!/usr/bin/env python
"""Airless tissue beside the lung apices in a run's lung masks: what the network segmenter's apex step
(``segmentation.monai_segmenter.trim_apex_soft_tissue``, since ctscore 0.14.0) takes out, or would take out.

    ctscore run INPUT -o OUT                                  (any segmenter, any ctscore version)
    python scripts/apex_soft_tissue.py OUT INPUT [--top-mm 20] [--far-mm 5]

The step, per axial slice in the top ``--top-mm`` of each lung: the lung-mask voxels above -300 HU (airless) that lie
more than ``--far-mm`` in plane from that lung's voxels below -500 HU (aerated) in the same slice, unless they belong
to thick airless tissue reaching 25 mm below the lung's top (consolidation filling the apex). Prints, per scan and
lung, the lung and lesion volume (mL) it takes out of OUT's masks: on an older run, or the classical segmenter's, what
the step would change; on a run that had it (the network, 0.14.0 on) what the grids' difference leaves (the step runs
on the 1.5 mm working grid, this on the CT's own: the six chests 0-0.23 mL a lung, no lesion).
Reads OUT's scans.csv and each scan's lungs.nii.gz and lesions.nii.gz (the CT's own grid), and the CT of the same
series under INPUT (matched by SeriesInstanceUID). On the network's masks of the six chests of ../shared/data without
the step (ctscore 0.13.0, 2026-12-07): itkelastix00 left 18.9 mL (5.8 mL of lesion) and right 3.0 mL, ge_mister_ct
left 1.8 mL (0.05), ricord_covid_419639 right 0.02 mL (the 4.2 mL far from air beside its trachea belong to thick
tissue going on 42 mm down, and stay), the other three nothing (18 s on 2 cores).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

SIDES = {1: "right", 2: "left"}


def apex_soft_tissue(lungs: np.ndarray, lesions: np.ndarray, hu: np.ndarray, z_mm: np.ndarray,
                     pixel_mm: tuple[float, float], top_mm: float = 20.0, far_mm: float = 5.0
                     ) -> dict[str, tuple[float, float]]:
    """Per lung (labels 1 right, 2 left of ``lungs``, ``[z, y, x]``): (lung mL, lesion mL) of the voxels the step
    takes out. ``z_mm``: each slice's height (the head up; either order of slices); ``pixel_mm``: (row, column)
    spacing. The arrays are not changed."""
    from segmentation.monai_segmenter import trim_apex_soft_tissue

    z_mm = np.asarray(z_mm, float)
    order = np.argsort(z_mm, kind="stable")  # the step wants the head at the high slice indices
    step = float(np.median(np.abs(np.diff(z_mm)))) if z_mm.size > 1 else 1.0
    spacing = (step, float(pixel_mm[0]), float(pixel_mm[1]))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    before = np.asarray(lungs)[order]
    after = before.copy()
    trim_apex_soft_tissue(after, np.asarray(hu, np.float32)[order], spacing, top_mm=top_mm, far_mm=far_mm)
    gone = before != after
    les = np.asarray(lesions)[order] > 0
    out = {}
    for label, side in SIDES.items():
        if (before == label).any():
            g = gone & (before == label)
            out[side] = (round(int(np.count_nonzero(g)) * voxel_ml, 2), round(int(np.count_nonzero(g & les)) * voxel_ml, 2))
    return out


def _scan(folder: Path, files: list, top_mm: float, far_mm: float) -> dict[str, tuple[float, float]]:
    import SimpleITK as sitk

    from pipeline.loading import load_series

    lungs_img = sitk.ReadImage(str(folder / "lungs.nii.gz"))
    ct = sitk.Resample(load_series(files).image, lungs_img, sitk.Transform(), sitk.sitkLinear, -1024.0)
    z = np.array([lungs_img.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(lungs_img.GetSize()[2])])
    sx, sy = lungs_img.GetSpacing()[:2]
    return apex_soft_tissue(sitk.GetArrayFromImage(lungs_img),
                            sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "lesions.nii.gz"))),
                            sitk.GetArrayFromImage(ct).astype(np.float32), z, (sy, sx), top_mm, far_mm)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="a ctscore output folder (scans.csv, SCAN/lungs.nii.gz, lesions.nii.gz)")
    ap.add_argument("input", type=Path, help="the INPUT folder that run scored")
    ap.add_argument("--top-mm", type=float, default=20.0)
    ap.add_argument("--far-mm", type=float, default=5.0)
    a = ap.parse_args(argv)
    if not (a.out / "scans.csv").is_file():
        print(f"apex_soft_tissue: {a.out} holds no scans.csv (give a ctscore output folder)", file=sys.stderr)
        return 2
    if not a.input.is_dir():
        print(f"apex_soft_tissue: no such input folder: {a.input}", file=sys.stderr)
        return 2
    from pipeline.discovery import discover, select_series

    files = {c.series_uid: c.files for c in select_series(discover(a.input))}
    with (a.out / "scans.csv").open(newline="", encoding="utf-8") as fh:
        scans = [r for r in csv.DictReader(fh) if r.get("status") == "ok"]
    print(f"{'scan_id':<20} {'lung':<6} {'lung_ml':>8} {'lesion_ml':>9}   (top {a.top_mm:g} mm, beyond {a.far_mm:g} mm)")
    missing = 0
    for r in scans:
        if r["series_uid"] not in files or not (a.out / r["scan_id"] / "lungs.nii.gz").is_file():
            print(f"{r['scan_id']:<20} -      series or masks not found", file=sys.stderr)
            missing += 1
            continue
        for side, (lung_ml, lesion_ml) in _scan(a.out / r["scan_id"], files[r["series_uid"]], a.top_mm, a.far_mm).items():
            print(f"{r['scan_id']:<20} {side:<6} {lung_ml:>8.2f} {lesion_ml:>9.2f}")
    return 1 if missing == len(scans) else 0


if __name__ == "__main__":
    sys.exit(main())
