"""Landmark accuracy against a reference CSV: error table per landmark (median / max |error|, mm).

Usage::

    python scripts/landmark_accuracy.py [--reference CSV] [--data-root DIR] [--cache DIR] [--scans a,b]
                                        [--segmenter classical|monai|PATH] [--airless-band MM]
                                        [--second-reading]

For every scan in the reference (columns ``scan,landmark,z_mm,...``; ``<name>_z`` rows), the series
under ``DATA_ROOT/<scan>`` is loaded, resampled to the working grid and segmented (the classical
segmenter unless ``--segmenter`` names another: the levels depend on the lung mask, and the pipeline's default
is the network), and :func:`scoring.landmarks.detect_landmarks` is run. ``--cache`` keeps the working-grid
arrays (HU, lungs, airway) as ``<scan>_<working spacing>.npz`` (e.g. ``normal001_1.5x1.5x1.5.npz``) so that
later runs only re-run the detector.
Estimated levels count like detected ones; a level the detector leaves missing where the reference
has a value is counted in ``missing``, and a level it reports as detected where the reference has a row
with an empty z (not in the scan, e.g. a base cut off) in ``spurious``; either fails the target (an
estimate where the reader could not identify the structure is not counted). A landmark with nothing to
compare (no error, none missing, none spurious: e.g. ``--scans`` naming only a scan whose base is cut off) is
``n/a``, not a failed target. Exit status 0 even when the targets are not met.

``--airless-band MM`` tests the domes against a basal consolidation that the mask keeps as lung: in every column of
each lung the lung voxels within MM mm above the column's floor get 30 HU (the masks are not changed). The domes are
read from the mask's floor and should not move; a reading from the aerated lung alone put them 10-49 mm too high
with 15-50 mm bands (why ``scoring.landmarks.diaphragm_lung`` is only a second reading).

``--second-reading`` scores every dome's second reading (past a lens of dense tissue under the aerated lung), which
the pipeline only reports for an uncertain dome (``LANDMARK_UNCERTAIN``), instead of the dome itself.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

log = logging.getLogger("landmark_accuracy")

#: reference landmark name -> detector landmark name (when they differ)
NAME_MAP = {"right_ipv": "ipv_right", "left_ipv": "ipv_left"}
#: acceptance targets (median |error| mm) of issue 5; every error must also stay <= MAX_ERROR_MM
TARGET_MEDIAN_MM = {"carina": 3.0}
DEFAULT_TARGET_MM = 8.0
MAX_ERROR_MM = 15.0


def read_reference(path: Path) -> dict[str, dict[str, float | None]]:
    """{scan: {landmark: z_mm}} from the reference CSV; None where the z is empty (not in the scan)."""
    ref: dict[str, dict[str, float | None]] = defaultdict(dict)
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["landmark"].endswith("_z"):
                name = row["landmark"][:-2]
                ref[row["scan"]][NAME_MAP.get(name, name)] = float(row["z_mm"]) if row["z_mm"].strip() else None
    return dict(ref)


def working_arrays(scan_dir: Path, cache: Path | None, segmenter: str = "classical") -> dict[str, np.ndarray]:
    """HU, lungs, airway, z_mm and spacing of a scan on the working grid, segmented by ``segmenter``
    (segmentation.method: classical, monai or a model folder) (cached when asked: the file name holds the working
    spacing and, for another segmenter than the classical one, its model id, so a cache made on another grid or
    with other masks is not reused)."""
    from pipeline.config import load_config

    cfg = load_config(extra={"segmentation": {"method": segmenter}})
    key = "x".join(f"{s:g}" for s in cfg["resample"]["spacing_mm"])
    seg_model = None
    if segmenter != "classical":
        from segmentation.factory import build_segmenter

        seg_model = build_segmenter(cfg)
        key += "_" + "".join(c if c.isalnum() or c in "-." else "_" for c in seg_model.model_id)
    cached = None if cache is None else cache / f"{scan_dir.name}_{key}.npz"
    if cached is not None and cached.is_file():
        return dict(np.load(cached))
    import SimpleITK as sitk

    from pipeline.discovery import discover, select_series
    from pipeline.loading import load_series
    from pipeline.resample import resample_to_spacing, to_lps
    from pipeline.run import slice_z_mm
    from segmentation.classical import ClassicalSegmenter

    try:
        chosen = select_series(discover(scan_dir), cfg=cfg)
    except TypeError:  # older signature
        chosen = select_series(discover(scan_dir))
    if not chosen:
        raise FileNotFoundError(f"no eligible series under {scan_dir}")
    try:
        vol = load_series(chosen[0].files, cfg)
    except TypeError:
        vol = load_series(chosen[0].files)
    work = resample_to_spacing(to_lps(vol.image), cfg["resample"]["spacing_mm"])
    hu = sitk.GetArrayFromImage(work)
    spacing = tuple(work.GetSpacing()[::-1])
    seg = (seg_model or ClassicalSegmenter(cfg)).segment(hu, spacing)
    arrays = {"hu": hu.astype(np.int16), "lungs": seg.lungs.astype(np.uint8),
              "airway": (seg.airway if seg.airway is not None else np.zeros(hu.shape, bool)),
              "z_mm": slice_z_mm(work), "spacing": np.asarray(spacing)}
    if cached is not None:
        import io

        from pipeline.outputs import atomic_write_bytes

        cache.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(cached, buf.getvalue())  # a run killed while writing leaves no partial cache
    return arrays


def airless_band(hu: np.ndarray, lungs: np.ndarray, band_mm: float, spacing_z: float) -> np.ndarray:
    """``hu`` with the lung voxels within ``band_mm`` above each column's floor (per lung label) set to 30 HU: a
    basal consolidation the mask keeps as lung (slices in cranially growing order)."""
    out = hu.copy()
    k = np.arange(lungs.shape[0])[:, None, None]
    for label in (1, 2):
        m = lungs == label
        floor = np.argmax(m, axis=0)
        out[m & (k < floor[None] + band_mm / spacing_z)] = 30
    return out


def evaluate(reference: dict[str, dict[str, float | None]], data_root: Path, cache: Path | None,
             scans: list[str] | None = None, verbose: bool = False, segmenter: str = "classical",
             band_mm: float = 0.0, second_reading: bool = False) -> dict[str, dict]:
    """Per landmark: signed errors (detector - reference), n missing, n spurious and methods used (``band_mm``:
    :func:`airless_band` first; ``second_reading``: each dome's second reading in place of the dome)."""
    import scoring.landmarks as landmarks
    from scoring.landmarks import detect_landmarks

    res: dict[str, dict] = defaultdict(lambda: {"errors": [], "missing": 0, "spurious": 0,
                                                "methods": defaultdict(int)})
    for scan, levels in reference.items():
        if scans and scan not in scans:
            continue
        scan_dir = data_root / scan
        if not scan_dir.is_dir():
            log.warning("skipping %s: %s not found", scan, scan_dir)
            continue
        a = working_arrays(scan_dir, cache, segmenter)
        hu = a["hu"] if not band_mm else airless_band(a["hu"], a["lungs"], band_mm, float(a["spacing"][0]))
        threshold = landmarks.DOME_UNCERTAIN_MM
        if second_reading:  # every dome then carries its second reading
            landmarks.DOME_UNCERTAIN_MM = float("-inf")
        try:
            lms = detect_landmarks(a["lungs"], a["airway"], a["z_mm"], tuple(float(s) for s in a["spacing"]), hu=hu)
        finally:
            landmarks.DOME_UNCERTAIN_MM = threshold
        if second_reading:
            for name in ("dome_right", "dome_left"):
                if lms[name].second_z_mm is not None:
                    lms[name].z_mm = lms[name].second_z_mm
        for name, z_ref in levels.items():
            if name not in lms:
                continue  # a level the detector does not report (e.g. aortic_arch_top)
            lm = lms[name]
            r = res[name]
            r["methods"][lm.method] += 1
            if z_ref is None:
                r["spurious"] += lm.method == "detected"  # detected where the reference sees none
            elif lm.z_mm is None:
                r["missing"] += 1
            else:
                r["errors"].append(lm.z_mm - z_ref)
            if verbose:
                err = "" if lm.z_mm is None or z_ref is None else f"{lm.z_mm - z_ref:+7.1f}"
                print(f"{scan:22s} {name:22s} ref {'-' if z_ref is None else f'{z_ref:.1f}':>8s} got {lm.z_mm!s:>8.8s} err {err:>7s} {lm.method}")
    return dict(res)


def cut_bases(ref: dict[str, dict[str, float | None]], data_root: Path, cache: Path | None, fractions: list[float],
              scans: list[str] | None = None, bad_mm: float = 15.0) -> list[dict]:
    """Domes and IPV on each scan cut from below (its lowest ``fraction`` of slices removed) against the same
    levels found on the whole scan: a level more than ``bad_mm`` off is wrong (a level missing is not)."""
    from scoring.landmarks import detect_landmarks

    rows = []
    for scan in ref:
        if scans and scan not in scans or not (data_root / scan).is_dir():
            continue
        a = working_arrays(data_root / scan, cache)
        sp = tuple(float(s) for s in a["spacing"])
        full = detect_landmarks(a["lungs"], a["airway"], a["z_mm"], sp, hu=a["hu"])
        for f in fractions:
            c = int(f * len(a["z_mm"]))
            cut = detect_landmarks(a["lungs"][c:], a["airway"][c:], a["z_mm"][c:], sp, hu=a["hu"][c:])
            for name in ("dome_right", "dome_left", "ipv"):
                got, whole = cut[name], full[name].z_mm
                err = None if got.z_mm is None or whole is None else got.z_mm - whole
                rows.append({"scan": scan, "cut": f, "level": name, "method": got.method, "error_mm": err,
                             "wrong": err is not None and abs(err) > bad_mm})
    return rows


def format_table(res: dict[str, dict]) -> str:
    """The error table as fixed-width text (markdown-compatible)."""
    lines = ["| landmark | n | median abs err (mm) | max abs err (mm) | missing | spurious | methods | target met |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in res.items():
        e = np.abs(np.asarray(r["errors"], float))
        med = float(np.median(e)) if e.size else float("nan")
        mx = float(e.max()) if e.size else float("nan")
        target = TARGET_MEDIAN_MM.get(name, DEFAULT_TARGET_MM)
        spurious = r.get("spurious", 0)
        met = e.size > 0 and med <= target and mx <= MAX_ERROR_MM and r["missing"] == 0 and spurious == 0
        nothing = e.size == 0 and r["missing"] == 0 and spurious == 0  # no level to compare: not a failure
        methods = ", ".join(f"{k} {v}" for k, v in sorted(r["methods"].items()))
        lines.append(f"| {name} | {e.size} | {med:.1f} | {mx:.1f} | {r['missing']} | {spurious} | {methods} | "
                     f"{'n/a' if nothing else 'yes' if met else 'NO'} (<= {target:g} / {MAX_ERROR_MM:g}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parents[1]
    data = Path(os.environ.get("CTSCORE_TEST_DATA") or here.parent / "shared" / "data")  # as the tests find it
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference", type=Path, default=data / "landmarks" / "reference.csv")
    p.add_argument("--data-root", type=Path, default=data / "chest")
    p.add_argument("--cache", type=Path, default=None, help="folder for cached working-grid arrays")
    p.add_argument("--scans", default="", help="comma-separated subset of scans")
    p.add_argument("-v", "--verbose", action="store_true", help="print every comparison")
    p.add_argument("--segmenter", default="classical",
                   help="whose lung masks the levels are found on: classical (the default here), monai (the "
                        "pipeline's default) or a model folder")
    p.add_argument("--airless-band", type=float, default=0.0, metavar="MM",
                   help="give the lung voxels within MM mm above each column's floor 30 HU first (a basal "
                        "consolidation the mask keeps)")
    p.add_argument("--second-reading", action="store_true",
                   help="score each dome's second reading (past a lens of dense tissue under the aerated lung) "
                        "instead of the dome")
    p.add_argument("--cut-bases", default="", metavar="FRACTIONS",
                   help="instead of the reference table: cut each scan from below by these fractions of its slices "
                        "(e.g. 0.1,0.2,0.3,0.4) and count domes / IPV more than 15 mm from the whole scan's")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if not args.reference.is_file():
        p.error(f"reference CSV not found: {args.reference}")
    ref = read_reference(args.reference)
    scans = [s for s in args.scans.split(",") if s]
    unknown = sorted(set(scans) - set(ref))
    if unknown:
        p.error(f"--scans not in the reference: {', '.join(unknown)} (it has {', '.join(sorted(ref))})")
    if args.cut_bases:
        try:
            fractions = [float(x) for x in args.cut_bases.split(",") if x]
        except ValueError:
            p.error(f"--cut-bases: comma-separated fractions, not {args.cut_bases!r}")
        if not fractions or not all(0.0 <= f < 1.0 for f in fractions):
            p.error("--cut-bases: fractions from 0 up to (not including) 1")
    wanted = scans or sorted(ref)
    if not any((args.data_root / s).is_dir() for s in wanted):  # else an empty table, exit 0, as if all was well
        p.error(f"--data-root {args.data_root}: none of the scans ({', '.join(wanted)}) is a folder there")
    if args.cut_bases:
        rows = cut_bases(ref, args.data_root, args.cache, fractions, scans)
        for r in rows:
            if args.verbose or r["wrong"]:
                e = "" if r["error_mm"] is None else f"{r['error_mm']:+.1f}"
                print(f"{r['scan']:22s} cut {r['cut']:.2f} {r['level']:11s} {r['method']:9s} {e:>7s}"
                      f"{'  WRONG' if r['wrong'] else ''}")
        found = [r for r in rows if r["error_mm"] is not None]
        print(f"{len(rows)} levels on cut scans: {len(found)} found, {len(rows) - len(found)} missing, "
              f"{sum(r['wrong'] for r in rows)} more than 15 mm from the whole scan's")
        return 0
    if args.airless_band < 0:
        p.error("--airless-band: a height in mm, 0 or more")
    res = evaluate(ref, args.data_root, args.cache, scans, args.verbose, args.segmenter, args.airless_band,
                   args.second_reading)
    print(format_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
