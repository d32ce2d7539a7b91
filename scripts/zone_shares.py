#!/usr/bin/env python
"""How much of each lung its smallest six-zone zone and its zhang900 L1 slab hold, per scored scan: the figures behind
``scoring.quantify.ZONE_MIN_SHARE_PCT`` (QC flag ``ZONE_SMALL``: a zone under 5 % of its lung) and behind giving the
slabs no such limit (L1, at the suprasternal notch, normally holds a few per cent of a lung, or none: ``SLAB_ABOVE_APEX``).

    ctscore run SERIES -o OUT [--segmenter classical]      (one or more output folders)
    python scripts/zone_shares.py OUT [OUT ...]

Reads each folder's zones.csv and scans.csv. On the six chests of ../shared/data (classical segmenter, 2026-12-06) the
smallest zone held 20.6 % of its lung (ge_mister_ct's right lower zone); L1 held 0-4 % (itkelastix00's right: 0).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def zone_shares(out: Path) -> list[dict[str, object]]:
    """Per scan and lung of an output folder (zones.csv, and scans.csv's lung volumes): the smallest scored six-zone
    zone (name, % of the lung; None when no zone is scored) and the L1 slab's % of the lung (None when missing)."""
    with (out / "scans.csv").open(newline="", encoding="utf-8") as fh:
        lung_ml = {(r["scan_id"], side): float(r[f"lung_volume_ml_{side}"] or 0)
                   for r in csv.DictReader(fh) if r.get("status") == "ok" for side in ("right", "left")}
    per: dict[tuple[str, str], dict[str, float]] = {}
    with (out / "zones.csv").open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if r["status"] == "ok" and r["lung_ml"] not in ("", "nan"):
                per.setdefault((r["scan_id"], r["lung"]), {})[f"{r['system']}/{r['unit']}"] = float(r["lung_ml"])
    rows = []
    for key, units in sorted(per.items()):
        total = lung_ml.get(key, 0.0)
        if total <= 0:
            continue
        six = {k.split("/")[1]: v for k, v in units.items() if k.startswith("six_zone/")}
        smallest = min(six, key=six.get) if six else None
        rows.append({"scan_id": key[0], "lung": key[1], "smallest_zone": smallest or "-",
                     "smallest_pct": None if smallest is None else 100.0 * six[smallest] / total,
                     "l1_pct": None if "zhang900/L1" not in units else 100.0 * units["zhang900/L1"] / total})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, nargs="+", help="ctscore run output folders (their zones.csv)")
    args = ap.parse_args(argv)
    rows = []
    for out in args.out:
        if not ((out / "zones.csv").is_file() and (out / "scans.csv").is_file()):
            print(f"error: {out} has no zones.csv and scans.csv (a ctscore run output folder?)", file=sys.stderr)
            return 2
        rows += zone_shares(out)
    if not rows:
        print("no scored lung in these folders", file=sys.stderr)
        return 2
    print(f"{'scan':20s} {'lung':6s} {'smallest zone':14s} {'% of lung':>9s} {'L1 % of lung':>13s}")
    for r in rows:
        zone = "-" if r["smallest_pct"] is None else f"{r['smallest_pct']:.1f}"
        l1 = "missing" if r["l1_pct"] is None else f"{r['l1_pct']:.1f}"
        print(f"{r['scan_id']:20s} {r['lung']:6s} {r['smallest_zone']:14s} {zone:>9s} {l1:>13s}")
    scored = [r for r in rows if r["smallest_pct"] is not None]
    if scored:
        low = min(scored, key=lambda r: r["smallest_pct"])
        print(f"smallest zone: {low['smallest_pct']:.1f} % ({low['scan_id']} {low['lung']} {low['smallest_zone']}); "
              f"ZONE_SMALL below 5 %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
