#!/usr/bin/env python
"""Per scored series of an output folder: lung weight and aeration (scans.csv) and where the lesion lies, front to
back and peripheral or central (zones.csv's anteroposterior and peripheral_central rows). The figures of
docs/scoring.md's "Aeration compartments", "Front and back of each lung" and "Peripheral and central lung" bullets.

    ctscore run ../shared/data/chest -o OUT [--segmenter classical]
    python scripts/lung_figures.py OUT

Series are named by their folder under the input (inventory.csv), else by scan_id. Per series: lung volume, lung
tissue (g), gas (mL), non-aerated and poorly aerated volume and share of the tissue; per lung: the posterior half's
share of the lung and of the lesion (empty without lesion), and how much denser the posterior half reads (HU); the
same for the peripheral third against the central lung.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd


def series_names(out: Path, scans: pd.DataFrame) -> dict[str, str]:
    """scan_id -> the series' folder under the input's common root (inventory.csv), else the scan_id."""
    names = {sid: sid for sid in scans["scan_id"]}
    inv_path = out / "inventory.csv"
    if not inv_path.is_file():
        return names
    inv = pd.read_csv(inv_path, dtype=str)
    paths = inv.dropna(subset=["series_uid", "path"])
    if paths.empty:
        return names
    root = os.path.commonpath([str(Path(p).parent) for p in paths["path"]])
    first = {}
    for uid, p in zip(paths["series_uid"], paths["path"]):
        rel = Path(os.path.relpath(str(Path(p).parent), root)).parts
        first.setdefault(uid, rel[0] if rel and rel[0] != "." else Path(root).name)
    for sid, uid in zip(scans["scan_id"], scans["series_uid"]):
        names[sid] = first.get(uid, sid)
    return names


def lung_figures(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per series, per series and lung) figures of an output folder's scans.csv and zones.csv."""
    scans = pd.read_csv(out / "scans.csv", dtype={"scan_id": str, "series_uid": str})
    scans = scans[scans["status"] == "ok"]
    names = series_names(out, scans)
    lung = scans["lung_volume_ml_right"] + scans["lung_volume_ml_left"]
    tissue = scans["lung_tissue_g"]
    per_scan = pd.DataFrame({
        "series": scans["scan_id"].map(names), "lung_ml": lung.round(1), "tissue_g": tissue.round(1),
        "gas_ml": scans["lung_gas_ml"].round(1), "non_aerated_ml": scans["non_aerated_volume_ml"].round(1),
        "non_aerated_pct_of_tissue": (100 * scans["non_aerated_tissue_g"] / tissue).round(1),
        "poorly_aerated_pct_of_tissue": (100 * scans["poorly_aerated_tissue_g"] / tissue).round(1)})
    zones = pd.read_csv(out / "zones.csv", dtype={"scan_id": str})
    back = _split(zones, "anteroposterior", "posterior", "anterior")
    outer = _split(zones, "peripheral_central", "peripheral", "central")
    rows = []
    for key in sorted(set(back) | set(outer)):
        sid, side = key
        b, o = back.get(key, {}), outer.get(key, {})
        rows.append({"series": names.get(sid, sid), "lung": side,
                     "posterior_pct_of_lung": b.get("pct_of_lung", float("nan")),
                     "lesion_ml": b.get("lesion_ml", o.get("lesion_ml", float("nan"))),
                     "posterior_pct_of_lesion": b.get("pct_of_lesion", float("nan")),
                     "posterior_minus_anterior_hu": b.get("minus_hu", float("nan")),
                     "peripheral_pct_of_lung": o.get("pct_of_lung", float("nan")),
                     "peripheral_pct_of_lesion": o.get("pct_of_lesion", float("nan")),
                     "peripheral_minus_central_hu": o.get("minus_hu", float("nan"))})
    return per_scan.sort_values("series"), pd.DataFrame(rows).sort_values(["series", "lung"]) if rows else \
        pd.DataFrame(rows)


def _split(zones: pd.DataFrame, system: str, unit: str, rest: str) -> dict[tuple[str, str], dict[str, float]]:
    """Per (scan_id, lung) of a two-unit system of zones.csv (anteroposterior, peripheral_central): ``unit``'s share
    of the lung and of the lesion (%; empty without lesion), the lesion (mL) and how much denser ``unit`` reads than
    ``rest`` (HU). Lungs with a missing unit are left out."""
    part = zones[(zones["system"] == system) & (zones["status"] == "ok")]
    if part.empty:
        return {}
    wide = part.pivot_table(index=["scan_id", "lung"], columns="unit", values=["lung_ml", "lesion_ml", "mean_lung_hu"])
    out = {}
    for key, r in wide.iterrows():
        if any(pd.isna(r.get((c, u))) for c in ("lung_ml", "lesion_ml", "mean_lung_hu") for u in (unit, rest)):
            continue
        lesion = r[("lesion_ml", unit)] + r[("lesion_ml", rest)]
        out[key] = {"pct_of_lung": round(100 * r[("lung_ml", unit)] / (r[("lung_ml", unit)] + r[("lung_ml", rest)]), 1),
                    "lesion_ml": round(lesion, 1),
                    "pct_of_lesion": round(100 * r[("lesion_ml", unit)] / lesion, 1) if lesion else float("nan"),
                    "minus_hu": round(r[("mean_lung_hu", unit)] - r[("mean_lung_hu", rest)], 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="a ctscore output folder (scans.csv, zones.csv)")
    args = ap.parse_args(argv)
    for name in ("scans.csv", "zones.csv"):
        if not (args.out / name).is_file():
            ap.error(f"{args.out / name} does not exist: give a folder written by ctscore run")
    per_scan, per_lung = lung_figures(args.out)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(per_scan.to_string(index=False))
        print()
        print(per_lung.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
