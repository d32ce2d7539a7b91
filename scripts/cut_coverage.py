"""What a segmenter does with a scan that ends inside the lungs: coverage, the cut level and the lung lost there.

Usage::

    python scripts/cut_coverage.py [--data-root DIR] [--cache DIR] [--scans a,b]
                                   [--segmenter classical|monai|PATH] [--inside MM,MM,...] [--beyond MM,MM,...]

Each scan (a folder under ``DATA_ROOT``, default ``../shared/data/chest`` or ``$CTSCORE_TEST_DATA/chest``; by default the four real chests whose
lungs the scan covers whole) is loaded and segmented on the working grid as ``scripts/landmark_accuracy.py`` does
(``--cache`` keeps those arrays). It is then cut from below so that its bottom slice lies ``MM`` mm above the higher
of the two lung bases (every lung then runs out of the scan), and from above ``MM`` mm below the lower apex; each cut
volume is segmented again, as the pipeline would see such a scan, and for each lung the script prints:

- ``cut``: whether the coverage rule (:func:`scoring.landmarks.lung_ends`) sees the lung run out of the cut scan
  (``apex_covered`` / ``base_covered``, ``PARTIAL_LUNG_COVERAGE``). Every row should say yes; ``no`` is a lung the
  segmenter ends above the scan's edge, so the scan is taken as covering it.
- ``level``: the apex / base landmark on the cut scan: ``missing`` (cut off by the scan), ``uncertain`` (detected,
  but aerated tissue under the lung mask runs on to the bottom slice: ``LANDMARK_UNCERTAIN:base_<side>``) or
  ``detected`` (a wrong, confident level).
- ``edge mm2``: the lung in the cut scan's edge slice, against the whole scan's mask at that slice.
- ``dV mL``: the cut scan's lung volume minus the whole scan's mask within the same slices (lung the segmenter loses
  or adds because the scan ends there).

The summary line counts the lungs whose cut was missed, and among them those left unflagged.

``--beyond MM,MM,...`` asks the other question: the scan cut ``MM`` mm *outside* the lungs (below the lower base,
above the higher apex of the hand-checked ``--reference`` levels, so that every segmenter is cut at the same slices),
so that it still holds them whole, as scans of the same chest acquired with less abdomen or
neck would. Each cut volume is segmented again and compared with the whole scan segmented by the same segmenter:
``dR``, ``dL`` (lung volumes) and ``dLesion``, mL. A segmenter that reads each voxel from its neighbourhood gives 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: real chests of ../shared/data/chest whose scans hold both lungs whole (the reference's apices and bases)
FULL_COVERAGE = ("normal001", "cap001", "ge_mister_ct", "ricord_covid_419639")
SIDES = ((1, "right"), (2, "left"))


def cut_rows(arrays: dict[str, np.ndarray], segment, inside_mm: list[float]) -> list[dict]:
    """One row per (end, depth, lung) for one scan's working-grid ``arrays`` (hu, lungs, airway, z_mm, spacing;
    z growing cranially), each cut scan segmented again by ``segment(hu, spacing) -> lungs``."""
    from scoring.landmarks import BASE_UNCERTAIN_NOTE, detect_landmarks, lung_ends

    hu, whole, z = arrays["hu"], arrays["lungs"], np.asarray(arrays["z_mm"], float)
    sp = tuple(float(s) for s in arrays["spacing"])
    voxel_ml = float(np.prod(sp)) / 1000.0
    ks = [np.nonzero((whole == side).any(axis=(1, 2)))[0] for side, _ in SIDES]
    if any(k.size == 0 for k in ks):
        raise ValueError("a lung is missing from the whole scan's mask")
    k_base, k_apex = max(int(k.min()) for k in ks), min(int(k.max()) for k in ks)
    rows = []
    for end in ("bottom", "top"):
        for mm in inside_mm:
            n = int(round(mm / sp[0]))
            sl = slice(k_base + n, None) if end == "bottom" else slice(0, k_apex - n + 1)
            if sl.indices(len(z))[1] - sl.indices(len(z))[0] < 8:
                continue
            lungs = np.asarray(segment(hu[sl], sp))
            lm = detect_landmarks(lungs, None, z[sl], sp, hu=hu[sl])
            edge = 0 if end == "bottom" else -1
            for side, name in SIDES:
                _, _, cut_top, cut_bottom = lung_ends(lungs == side, z[sl], voxel_ml)
                level = lm[f"{'base' if end == 'bottom' else 'apex'}_{name}"]
                state = ("missing" if level.z_mm is None else
                         "uncertain" if BASE_UNCERTAIN_NOTE in (level.note or "") else "detected")
                rows.append({
                    "end": end, "inside_mm": mm, "lung": name,
                    "cut": bool(cut_bottom if end == "bottom" else cut_top), "level": state,
                    "edge_mm2": float((lungs[edge] == side).sum() * sp[1] * sp[2]),
                    "edge_whole_mm2": float((whole[sl][edge] == side).sum() * sp[1] * sp[2]),
                    "dv_ml": float(((lungs == side).sum() - (whole[sl] == side).sum()) * voxel_ml)})
    return rows


def beyond_rows(arrays: dict[str, np.ndarray], segment, beyond_mm: list[float],
                lung_ends_mm: tuple[float, float] | None = None) -> list[dict]:
    """One row per (end, margin) for one scan's working-grid ``arrays``: the scan cut ``margin`` mm outside its lungs
    and segmented again by ``segment(hu, spacing) -> (lungs, lesions)``, against the whole scan segmented by the same
    function. The lungs' ends are ``lung_ends_mm`` (lowest base, highest apex: the reference levels, so that two
    segmenters are cut at the same slices), else the lowest and highest slice of the whole scan's lung mask."""
    hu, z = arrays["hu"], np.asarray(arrays["z_mm"], float)
    sp = tuple(float(s) for s in arrays["spacing"])
    voxel_ml = float(np.prod(sp)) / 1000.0
    lungs, lesions = segment(hu, sp)
    if lung_ends_mm is not None:
        k_low, k_high = (int(np.argmin(np.abs(z - v))) for v in lung_ends_mm)
    else:
        ks = np.nonzero(np.asarray(lungs).reshape(len(z), -1).any(axis=1))[0]
        if ks.size == 0:
            raise ValueError("no lung in the whole scan's mask")
        k_low, k_high = int(ks.min()), int(ks.max())

    def volumes(lu: np.ndarray, le: np.ndarray) -> tuple[float, float, float]:
        return ((lu == 1).sum() * voxel_ml, (lu == 2).sum() * voxel_ml, np.count_nonzero(le) * voxel_ml)

    whole = volumes(np.asarray(lungs), np.asarray(lesions))
    rows = []
    for end in ("bottom", "top"):
        have = k_low if end == "bottom" else len(z) - 1 - k_high
        for mm in beyond_mm:
            n = int(round(mm / sp[0]))
            if n >= have:  # the scan holds no more than that beyond its lungs: nothing to cut
                continue
            sl = slice(k_low - n, None) if end == "bottom" else slice(0, k_high + n + 1)
            cut = volumes(*(np.asarray(a) for a in segment(hu[sl], sp)))
            rows.append({"end": end, "beyond_mm": mm, "scan_beyond_mm": have * sp[0],
                         "d_right_ml": cut[0] - whole[0], "d_left_ml": cut[1] - whole[1],
                         "d_lesion_ml": cut[2] - whole[2], "lesion_ml": whole[2]})
    return rows


def reference_ends(reference: dict[str, dict[str, float | None]], scan: str) -> tuple[float, float] | None:
    """(lowest base, highest apex) of ``scan`` in the reference levels, or None when one of the four is not given."""
    levels = [reference.get(scan, {}).get(f"{k}_{side}") for k in ("base", "apex") for side in ("right", "left")]
    if any(v is None for v in levels):
        return None
    return min(levels[:2]), max(levels[2:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = Path(os.environ.get("CTSCORE_TEST_DATA") or REPO.parent / "shared" / "data")  # as the tests find it
    p.add_argument("--data-root", type=Path, default=data / "chest")
    p.add_argument("--cache", type=Path, default=None, help="folder for cached working-grid arrays")
    p.add_argument("--scans", default=",".join(FULL_COVERAGE),
                   help="comma-separated scan folders, each covering both lungs whole")
    p.add_argument("--segmenter", default="monai", help="classical, monai (the pipeline's default) or a model folder")
    p.add_argument("--inside", default="6,15,30", metavar="MM,MM,...",
                   help="how far inside the lungs each cut lies, mm (default 6,15,30)")
    p.add_argument("--beyond", default="", metavar="MM,MM,...",
                   help="instead: cut each scan this far outside its lungs (e.g. 40,20,8) and compare the volumes")
    p.add_argument("--reference", type=Path, default=data / "landmarks" / "reference.csv",
                   help="hand-checked levels (apex_*_z, base_*_z): --beyond measures from them, so that every "
                        "segmenter is cut at the same slices (each mask's own ends where the file or a level is "
                        "missing)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        inside = [float(v) for v in args.inside.split(",") if v.strip()]
    except ValueError:
        p.error(f"--inside: comma-separated depths in mm, not {args.inside!r}")
    if not inside or not all(v > 0 for v in inside):
        p.error("--inside: depths in mm, each above 0")
    try:
        beyond = [float(v) for v in args.beyond.split(",") if v.strip()]
    except ValueError:
        p.error(f"--beyond: comma-separated margins in mm, not {args.beyond!r}")
    if not all(v >= 0 for v in beyond):
        p.error("--beyond: margins in mm, each 0 or more")
    scans = [s for s in args.scans.split(",") if s]
    missing = [s for s in scans if not (args.data_root / s).is_dir()]
    if missing:
        p.error(f"--data-root {args.data_root}: no folder for {', '.join(missing)}")

    from pipeline.config import load_config

    sys.path.insert(0, str(REPO / "scripts"))
    from landmark_accuracy import read_reference, working_arrays

    if args.segmenter == "classical":
        from segmentation.classical import ClassicalSegmenter

        model = ClassicalSegmenter(load_config())
    else:
        from segmentation.factory import build_segmenter

        model = build_segmenter(load_config(extra={"segmentation": {"method": args.segmenter}}))

    print(f"segmenter: {getattr(model, 'model_id', args.segmenter)}")
    if beyond:
        reference = read_reference(args.reference) if args.reference.is_file() else {}
        print(f"lungs' ends: {'the reference levels of ' + str(args.reference) if reference else 'each mask'}")
        print(f"{'scan':22s} {'end':6s} {'cut at':>7s} {'of':>4s} {'dR mL':>7s} {'dL mL':>7s} {'dLesion mL':>11s}")
        changes = []
        for scan in scans:
            arrays = working_arrays(args.data_root / scan, args.cache, args.segmenter)
            rows = beyond_rows(arrays, lambda h, s: (lambda o: (o.lungs, o.lesions))(model.segment(h, s)), beyond,
                               reference_ends(reference, scan))
            for r in rows:
                print(f"{scan:22s} {r['end']:6s} {r['beyond_mm']:5g}mm {r['scan_beyond_mm']:4.0f} "
                      f"{r['d_right_ml']:+7.1f} {r['d_left_ml']:+7.1f} {r['d_lesion_ml']:+7.2f} of {r['lesion_ml']:.1f}",
                      flush=True)
                changes += [abs(r["d_right_ml"]), abs(r["d_left_ml"])]
            if not rows:
                print(f"{scan:22s} holds no more than {max(beyond):g} mm beyond its lungs: nothing cut")
        if changes:
            print(f"lung volume change with the scan's extent: median {np.median(changes):.1f} mL, "
                  f"largest {max(changes):.1f} mL a lung")
        return 0
    print(f"{'scan':22s} {'end':6s} {'mm':>4s} {'lung':5s} {'cut':3s} {'level':9s} {'edge mm2':>15s} {'dV mL':>7s}")
    all_rows = []
    for scan in scans:
        arrays = working_arrays(args.data_root / scan, args.cache, args.segmenter)
        rows = cut_rows(arrays, lambda h, s: model.segment(h, s).lungs, inside)
        for r in rows:
            print(f"{scan:22s} {r['end']:6s} {r['inside_mm']:4g} {r['lung']:5s} {'yes' if r['cut'] else 'NO':3s} "
                  f"{r['level']:9s} {r['edge_mm2']:6.0f} of {r['edge_whole_mm2']:5.0f} {r['dv_ml']:+7.1f}", flush=True)
        all_rows += rows
    missed = [r for r in all_rows if not r["cut"]]
    silent = [r for r in missed if r["level"] == "detected"]
    dv = np.array([r["dv_ml"] for r in all_rows])
    print(f"{len(all_rows)} lungs on cut scans: {len(missed)} cut missed ({len(silent)} of them unflagged); "
          f"lung volume vs the whole scan's mask: median {np.median(dv):+.1f} mL, range {dv.min():+.1f} to "
          f"{dv.max():+.1f} mL")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
