#!/usr/bin/env python
"""How much of a scored lesion mask is aerated lung: the lesion voxels below the faint ground glass band
(``hu_classes.faint_ggo``'s lower bound, -750 HU by default), which ``scoring.hu_classes.classify_lesions`` counts as
faint ground glass (README, "Scoring": the mask's edge in partial volume with aerated lung).

    ctscore run SERIES -o OUT
    python scripts/lesion_edge_hu.py SERIES OUT

For each scan folder of OUT (its ``lesions.nii.gz``, on the CT's own grid) the CT of SERIES is read again and the
script prints the lesion volume, the volume below the band and its share of the lesion and of the faint ground
glass (ricord_covid_419639, network: 2.5 % of the lesion, 13 % of the faint ground glass).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def edge_measures(hu: np.ndarray, classes: np.ndarray, low_hu: float, voxel_ml: float) -> dict[str, float]:
    """Lesion mL, mL of lesion below ``low_hu``, and that volume's share (%) of the lesion and of the faint class."""
    lesion = classes > 0
    below = int(np.count_nonzero(lesion & (hu < low_hu)))
    n_lesion, n_faint = int(np.count_nonzero(lesion)), int(np.count_nonzero(classes == 1))
    return {"lesion_ml": n_lesion * voxel_ml, "below_ml": below * voxel_ml,
            "pct_of_lesion": 100.0 * below / n_lesion if n_lesion else float("nan"),
            "pct_of_faint_ggo": 100.0 * below / n_faint if n_faint else float("nan")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("series", type=Path, help="the DICOM series folder that was scored")
    ap.add_argument("out", type=Path, help="the ctscore run output folder")
    args = ap.parse_args(argv)

    import SimpleITK as sitk

    from pipeline.config import load_config
    from segmentation.training import load_series_lps

    low = float(load_config()["hu_classes"]["faint_ggo"][0])
    try:
        image = load_series_lps(args.series)
    except Exception as exc:  # a folder without a CT series: one line
        print(f"error: {args.series}: {exc}", file=sys.stderr)
        return 2
    hu = sitk.GetArrayFromImage(image)
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    masks = sorted(args.out.glob("scan-*/lesions.nii.gz"))
    if not masks:
        print(f"error: no scan-*/lesions.nii.gz under {args.out}", file=sys.stderr)
        return 2
    print(f"{'scan':20s} {'lesion mL':>10s} {f'< {low:g} HU mL':>14s} {'% of lesion':>12s} {'% of faint GGO':>15s}")
    for path in masks:
        classes = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        if classes.shape != hu.shape:
            print(f"{path.parent.name:20s} not this series' grid ({classes.shape} vs {hu.shape})")
            continue
        m = edge_measures(hu, classes, low, voxel_ml)
        print(f"{path.parent.name:20s} {m['lesion_ml']:10.1f} {m['below_ml']:14.1f} {m['pct_of_lesion']:12.1f} "
              f"{m['pct_of_faint_ggo']:15.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
