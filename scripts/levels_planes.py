"""Where levels.png cuts its views, checked on real series: the figures of its coronal and sagittal planes.

Usage::

    python scripts/levels_planes.py [SERIES_DIR ...] [--segmenter classical|monai|PATH]

Default: every folder under ``../shared/data/chest`` (or ``$CTSCORE_TEST_DATA/chest``). For each series, analysed
as ``ctscore run`` does (``pipeline.run.analyse_volume``), it prints per dome the height of the diaphragm beside the
heart (:func:`pipeline.qc_levels.lateral_floor_top`) in the row the coronal view is cut at
(:func:`pipeline.qc_levels.coronal_rows`) and in the lungs' centre row (the view before 0.8.0), minus the dome level;
and for the sagittal view (:func:`pipeline.run.trachea_column`) in how many slices between the carina and the notch
its column holds tracheal air (below -900 HU, outside the lungs, within the lungs' front-to-back extent).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file: the packages of this checkout
    sys.path.insert(0, str(REPO))


def plane_figures(res: dict) -> dict:
    """The figures of one analysed series (``analyse_volume``'s result)."""
    from pipeline.qc_levels import SIDES, _median_index, coronal_rows, floor_maps, lateral_floor_top

    lungs, z, lms = res["lungs"], res["z_mm"], res["landmarks"]
    rows = coronal_rows(lungs, z, lms, res["spacing_zyx"][0])
    centre = _median_index(np.count_nonzero(lungs > 0, axis=(0, 2)))
    floors = floor_maps(lungs, z)
    out: dict = {}
    for label, name, tag in SIDES:
        dome = lms[name].z_mm
        if dome is None or label not in rows:
            out[f"dome {tag}"] = None
            continue
        top = lateral_floor_top(floors[label], "low" if label == 1 else "high")
        out[f"dome {tag}"] = (float(dome), float(top[rows[label][0]] - dome), float(top[centre] - dome))
    x, carina, notch = res.get("trachea_x"), lms["carina"].z_mm, lms["suprasternal_notch"].z_mm
    if x is None or carina is None or notch is None:
        out["trachea"] = None
    else:
        ks = np.nonzero((z > carina + 3.0) & (z < notch))[0]
        ys = np.nonzero((lungs > 0).any(axis=(0, 2)))[0]
        band = slice(int(ys[0]), int(ys[-1]) + 1)
        air = (res["hu"][ks, band, x] < -900) & (lungs[ks, band, x] == 0)
        out["trachea"] = (int(np.count_nonzero(air.any(axis=1))), len(ks))
    return out


def main(argv: list[str] | None = None) -> int:
    data = Path(os.environ.get("CTSCORE_TEST_DATA") or REPO.parent / "shared" / "data")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("series", nargs="*", type=Path, help="series folders (default: every folder of DATA/chest)")
    p.add_argument("--segmenter", default=None, help="classical | monai | a model folder (default: the configured one)")
    args = p.parse_args(argv)
    if args.series:
        folders = list(args.series)
    elif (data / "chest").is_dir():
        folders = sorted(d for d in (data / "chest").iterdir() if d.is_dir())
    else:
        folders = []
    if not folders:
        p.error(f"no series folders given and none under {data / 'chest'}")
    from pipeline.config import load_config
    from pipeline.discovery import discover, select_series
    from pipeline.loading import load_series
    from pipeline.run import analyse_volume
    from segmentation.factory import build_segmenter

    cfg = load_config(extra={"segmentation": {"method": args.segmenter}} if args.segmenter else None)
    seg = build_segmenter(cfg)
    print(f"segmenter: {seg.name} ({seg.model_id})")
    print("dome: its level; diaphragm beside the heart minus the level, in the view's row / in the centre row (mm)")
    for folder in folders:
        chosen = select_series(discover(folder))
        if not chosen:
            print(f"{folder.name}: no eligible series")
            continue
        fig = plane_figures(analyse_volume(load_series(chosen[0].files).image, cfg, seg))
        parts = []
        for key in ("dome R", "dome L"):
            v = fig[key]
            parts.append(f"{key} " + ("-" if v is None else f"{v[0]:.1f}: {v[1]:+.1f} / {v[2]:+.1f}"))
        t = fig["trachea"]
        parts.append("trachea " + ("-" if t is None else f"{t[0]}/{t[1]} slices"))
        print(f"{folder.name}: " + "; ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
