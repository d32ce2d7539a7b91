#!/usr/bin/env python
"""How the segmenters read severe disease: a severity ladder of synthetic lesions inserted, cumulatively, into one
clean chest (peripheral ground glass first, then mixed lesions, then dense dependent consolidation, up to about
72 % of the lung), each level scored three ways: from the inserted masks themselves (truth, as ``ctscore run --masks``
scores a reader's masks), with the network (the default segmenter) and with the classical segmenter.

    python scripts/severity_ladder.py ../shared/data/chest/normal001 OUT
    python scripts/severity_ladder.py ../shared/data/chest/normal001 OUT --levels L0 L4 L8 --segmenters classical
    python scripts/severity_ladder.py sample_dicoms OUT --bin 1 --segmenters classical

The background is loaded as ctscore loads it (LPS), averaged over ``--bin`` x ``--bin`` pixels in plane (default 2:
normal001's 0.63 mm pixels become 1.27 mm, 512 -> 256, which makes the ladder about four times cheaper) and stored
as whole HU, as a DICOM series would hold it (L0). The truth lungs are the classical segmenter's lung mask of L0 (the
network's teacher); lesions are painted into them with ``segmentation.synth`` (the training's own generator,
``_insert_one``), one at a time, until each level's share of the lung is reached (``STAGES``; seed ``--seed``,
2024). Levels are cumulative: L5 holds L4's lesions and more. Every level is scored in this process
(``pipeline.run.analyse_volume``, what ``ctscore run`` does for a series); the truth run gives the inserted lungs and
lesions as the user's masks (``user_masks``, the ``--masks DIR`` route: flagged ``MASKS_FROM_USER``).

Written to OUT (never into the background's folder): ``levels/<level>/ct.nii.gz`` (the level's CT, HU) with its
truth ``lungs.nii.gz`` and ``lesions.nii.gz``, ``ladder.json`` (each insertion, and each level's truth volumes),
``table.csv`` (one row a level and method). Printed: the table (% opacity, six-zone, 0-900, lesion, consolidation
and lung mL, the truth consolidation the segmenter's lung mask leaves out, the QC flags) and each segmenter's error
against the truth.

normal001, both segmenters, seeds 2024, 7, 11 and 2025 (2026-12-08, 2-4 min each on 2 cores; the figures of
segmentation/weights/MODEL_CARD.md "Severe disease"): the network's % opacity runs 8-37 % low from L4 (21-24 % of the
lung), its 0-900 7-50 % low at L6-L8 (46-74 %; about 50 % on seed 2024, its worst), its six-zone reads 14-18 against
the truth's 17-20; the classical segmenter leaves 81-96 % of the truth's consolidation out of its lung mask at L6-L8
(0-900 36-91 % low, 13-48 % of the lung lost), the network 27-48 %. No DENSE_LUNG below L7, and at L7-L8 on some
seeds only.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: level -> (% of the lung the inserted lesions reach, what is inserted to reach it): peripheral ground glass, then
#: mixed lesions and crazy paving, then consolidation in the dependent (posterior, basal) lung. ``dependent_or_any``:
#: consolidation dependent, the rest peripheral. The recipe of an audit of 2026-12-08.
STAGES: list[tuple[str, float, dict]] = [
    ("L1", 2, dict(kinds={"ggo": 1.0}, r=(10, 20), place="peripheral")),
    ("L2", 5, dict(kinds={"ggo": 0.8, "crazy_paving": 0.2}, r=(15, 25), place="peripheral")),
    ("L3", 10, dict(kinds={"ggo": 0.7, "crazy_paving": 0.3}, r=(20, 35), place="peripheral")),
    ("L4", 20, dict(kinds={"ggo": 0.5, "mixed": 0.3, "crazy_paving": 0.2}, r=(25, 40), place="peripheral")),
    ("L5", 30, dict(kinds={"mixed": 0.4, "consolidation": 0.3, "ggo": 0.3}, r=(30, 45), place="dependent")),
    ("L6", 45, dict(kinds={"consolidation": 0.6, "mixed": 0.4}, r=(35, 50), place="dependent")),
    ("L7", 60, dict(kinds={"consolidation": 0.6, "ggo": 0.4}, r=(40, 55), place="dependent_or_any")),
    ("L8", 72, dict(kinds={"ggo": 0.5, "consolidation": 0.5}, r=(45, 60), place="dependent_or_any")),
]
LEVELS = ["L0"] + [name for name, _, _ in STAGES]
#: insertions allowed for one level: a lung too small or oddly shaped to reach the target stops there (said)
MAX_INSERTIONS = 400
SEGMENTERS = {"network": "monai", "monai": "monai", "classical": "classical"}
MEASURES = ("percent_opacity", "six_zone_total", "zhang900_total", "lesion_volume_ml", "consolidation_volume_ml",
            "lung_ml")


def binned(image, factor: int):
    """(HU as a DICOM series would store the background averaged over ``factor`` x ``factor`` pixels in plane: whole
    HU, -1024 to 3071, as a SimpleITK image; the unrounded average, z y x float32). The rows and columns that do not
    fill a block are dropped."""
    import SimpleITK as sitk

    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    nz, ny, nx = hu.shape
    ny, nx = ny // factor * factor, nx // factor * factor
    mean = hu[:, :ny, :nx].reshape(nz, ny // factor, factor, nx // factor, factor).mean((2, 4))
    out = stored(mean, image, factor)
    return out, mean


def stored(hu: np.ndarray, ref, factor: int):
    """``hu`` (z y x, on ``ref``'s grid binned by ``factor`` in plane) as whole HU in a SimpleITK image."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray((np.clip(np.round(hu), -1024, 3071)).astype(np.float32))
    sp = ref.GetSpacing()
    img.SetSpacing((sp[0] * factor, sp[1] * factor, sp[2]))
    img.SetDirection(ref.GetDirection())
    img.SetOrigin(ref.TransformContinuousIndexToPhysicalPoint(((factor - 1) / 2.0, (factor - 1) / 2.0, 0.0)))
    return img


def build_ladder(hu: np.ndarray, lungs: np.ndarray, spacing, levels=None, seed: int = 2024, log=None):
    """The ladder on one clean chest: ``hu`` (z y x, LPS; painted on a copy) and its lung labels (1 right, 2 left),
    ``spacing`` (z y x, mm). Yields ``(level, hu, lesions, consolidation, info)`` for L0 and each of ``levels``
    (default all) in order, building every level below the highest asked (levels are cumulative). ``info``: the
    truth's lung, lesion and consolidation mL and % of lung; ``log`` (a list) gets one dict an insertion."""
    from segmentation.synth import DEFAULTS, _insert_one, centre_weights

    want = set(LEVELS if levels is None else levels)
    last = max(LEVELS.index(v) for v in want)
    sp = np.asarray(spacing, dtype=float)
    vox_ml = float(np.prod(sp)) / 1000.0
    p = dict(DEFAULTS)
    rng = np.random.default_rng(seed)
    lung = (lungs > 0).astype(np.float32)
    inside = lungs > 0
    nlung = int(inside.sum())
    if not nlung:
        raise ValueError("the background's lung mask is empty: no ladder")
    out = hu.copy()
    a_any = np.zeros(hu.shape, np.float32)
    a_cons = np.zeros(hu.shape, np.float32)

    def level(name):
        les = (a_any > 0.5) & inside
        cons = (a_cons > 0.5) & inside
        info = dict(level=name, lung_ml=round(nlung * vox_ml, 1), lesion_ml=round(float(les.sum()) * vox_ml, 1),
                    consolidation_ml=round(float(cons.sum()) * vox_ml, 1),
                    percent=round(100.0 * float(les.sum()) / nlung, 2))
        return name, out, les, cons, info

    if "L0" in want:
        yield level("L0")
    if last == 0:
        return
    stride = np.maximum(1, np.round(4.0 / sp)).astype(int)
    lc, w, dist = centre_weights(lungs, sp, stride, p)
    # the posterior pleura: coarse lung voxels on the lung's edge, weighted by how posterior and basal they are
    border = (lc > 0) & (dist <= dist[lc > 0].min() + 1e-6)
    zz, yy, _ = np.nonzero(lc > 0)
    ypos = (np.arange(lc.shape[1]) - yy.min()) / max(1, yy.max() - yy.min())
    zpos = (np.arange(lc.shape[0]) - zz.min()) / max(1, zz.max() - zz.min())
    wdep = border * (np.clip(ypos, 0, 1)[None, :, None] ** 6) * (1.5 - np.clip(zpos, 0, 1))[:, None, None]
    k = 0
    for name, target, st in STAGES[:last]:
        n = 0
        while 100.0 * float(((a_any > 0.5) & inside).sum()) / nlung < target and n < MAX_INSERTIONS:
            k, n = k + 1, n + 1
            side = 1 + (k % 2)
            kinds = st["kinds"]
            probs = np.array(list(kinds.values())) / sum(kinds.values())
            kind = list(kinds)[int(rng.choice(len(kinds), p=probs))]
            place = st["place"]
            if place == "dependent_or_any":
                place = "dependent" if kind == "consolidation" else "peripheral"
            ww = (wdep if place == "dependent" and kind in ("consolidation", "mixed") else w) * (lc == side)
            if not ww.any():  # one lung only (or none of its coarse voxels on the edge): the other side
                ww = (wdep if place == "dependent" and kind in ("consolidation", "mixed") else w) * (lc > 0)
            idx = np.flatnonzero(ww)
            c = np.unravel_index(idx[rng.choice(idx.size, p=ww.ravel()[idx] / ww.ravel()[idx].sum())], lc.shape)
            centre = np.minimum(np.asarray(c) * stride + stride // 2, np.asarray(hu.shape) - 1)
            radius = float(rng.uniform(*st["r"]))
            _insert_one(out, hu, lung, sp, centre, radius, kind, rng, p, a_any, a_cons)
            if log is not None:
                log.append(dict(level=name, k=k, kind=kind, side=side, radius_mm=round(radius, 2),
                                centre_zyx=[int(v) for v in centre],
                                percent=round(100.0 * float(((a_any > 0.5) & inside).sum()) / nlung, 2)))
        if name in want:
            yield level(name)


def flags_of(res: dict, slice_mm: float | None) -> list[str]:
    """The QC flags of an ``analyse_volume`` result as scans.csv's qc_flags gives them (the loader's aside)."""
    from pipeline.hu_checks import flags_for as hu_flags
    from scoring.landmarks import estimated_flags, reader_flags, uncertain_flags

    lm = res["landmarks"]
    return list(dict.fromkeys(res["flags"] + estimated_flags(lm) + uncertain_flags(lm) + reader_flags(lm)
                              + hu_flags(res["hu_check"], None, slice_mm)))


def measured(res: dict, slice_mm: float | None, truth_cons: np.ndarray | None) -> dict:
    """One table row's measures of an ``analyse_volume`` result; ``cons_out_ml``: of the truth's consolidation
    (``truth_cons``, on the same grid), the mL outside this result's lung mask."""
    row = res["row"]
    voxel_ml = float(np.prod(res["spacing_zyx"])) / 1000.0
    out = {m: row.get(m) for m in MEASURES if m != "lung_ml"}
    out["lung_ml"] = round(float(row["lung_volume_ml_right"]) + float(row["lung_volume_ml_left"]), 1)
    out["cons_out_ml"] = (round(float(np.count_nonzero(truth_cons & (res["lungs"] == 0))) * voxel_ml, 1)
                          if truth_cons is not None else None)
    out["flags"] = ";".join(f for f in flags_of(res, slice_mm) if not f.startswith("MASKS_FROM_USER")) or "-"
    return out


def relative(value, truth) -> float:
    """(value - truth) / truth in %, NaN where the truth is 0 or either is missing."""
    try:
        v, t = float(value), float(truth)
    except (TypeError, ValueError):
        return math.nan
    return 100.0 * (v - t) / t if t and math.isfinite(v) and math.isfinite(t) else math.nan


def print_tables(rows: list[dict], methods: list[str]) -> None:
    """The table (a row a level and method) and each segmenter's error against the truth."""
    def num(v, fmt):
        width = int("".join(ch for ch in fmt.split(".")[0] if ch.isdigit()) or 0)
        try:
            return format(float(v), fmt) if math.isfinite(float(v)) else "-".rjust(width)
        except (TypeError, ValueError):
            return "-".rjust(width)

    print(f"{'level':<6} {'method':<10} {'% opac':>7} {'6-zone':>6} {'0-900':>6} {'lesion mL':>10} "
          f"{'consol mL':>10} {'lung mL':>8} {'cons out mL':>12}  flags")
    for r in rows:
        print(f"{r['level']:<6} {r['method']:<10} {num(r['percent_opacity'], '7.1f')} "
              f"{num(r['six_zone_total'], '6.0f')} {num(r['zhang900_total'], '6.0f')} "
              f"{num(r['lesion_volume_ml'], '10.1f')} {num(r['consolidation_volume_ml'], '10.1f')} "
              f"{num(r['lung_ml'], '8.1f')} {num(r['cons_out_ml'], '12.1f')}  {r['flags']}")
    truth = {r["level"]: r for r in rows if r["method"] == "truth"}
    print(f"\nerror against the truth (% of the truth; six-zone: points)\n{'level':<6} {'method':<10} "
          f"{'% opac':>7} {'6-zone':>6} {'0-900':>6} {'lesion':>7} {'consol':>7} {'lung':>6}")
    for r in rows:
        t = truth.get(r["level"])
        if r["method"] == "truth" or t is None:
            continue
        try:
            dz = float(r["six_zone_total"]) - float(t["six_zone_total"])
        except (TypeError, ValueError):
            dz = math.nan
        errs = [relative(r[m], t[m]) for m in ("percent_opacity", "zhang900_total", "lesion_volume_ml",
                                               "consolidation_volume_ml", "lung_ml")]
        print(f"{r['level']:<6} {r['method']:<10} {num(errs[0], '+7.0f')} {num(dz, '+6.0f')} "
              f"{num(errs[1], '+6.0f')} {num(errs[2], '+7.0f')} {num(errs[3], '+7.0f')} {num(errs[4], '+6.0f')}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("series", type=Path, help="a DICOM series folder (or a folder holding one): the clean chest "
                    "(read only)")
    ap.add_argument("out", type=Path, help="output folder (the levels' CT and truth masks, ladder.json, table.csv)")
    ap.add_argument("--seed", type=int, default=2024, help="the insertions' seed (default 2024, the audit's)")
    ap.add_argument("--levels", nargs="+", default=None, choices=LEVELS,
                    help="only these levels (default all; L0 is always scored: it gives the truth lungs)")
    ap.add_argument("--segmenters", nargs="+", default=["network", "classical"], choices=sorted(SEGMENTERS),
                    help="the segmenters measured (default network classical; monai is the network)")
    ap.add_argument("--bin", type=int, default=2, help="average the background over N x N pixels in plane "
                    "(default 2, the audit's; 1 keeps it as it is)")
    args = ap.parse_args(argv)

    import SimpleITK as sitk

    from pipeline.config import resolve_config
    from pipeline.errors import CTScoreError
    from pipeline.outputs import atomic_write_bytes, atomic_write_json
    from pipeline.run import analyse_volume
    from segmentation.factory import build_segmenter
    from segmentation.training import load_series_lps

    src, out = args.series.resolve(), args.out.resolve()
    if out == src or src in out.parents:
        ap.error(f"the output folder {args.out} lies in the background's folder: the background is read only")
    if args.bin < 1:
        ap.error("--bin must be 1 or more")
    methods = list(dict.fromkeys(SEGMENTERS[s] for s in args.segmenters))
    names = {"monai": "network", "classical": "classical"}
    levels = sorted(set(args.levels or LEVELS) | {"L0"}, key=LEVELS.index)
    t0 = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - t0:5.0f} s] {text}", file=sys.stderr, flush=True)

    try:
        cfgs = {m: resolve_config({"segmentation": {"method": m}}) for m in ("classical", *methods)}
        segmenters = {m: build_segmenter(cfgs[m]) for m in cfgs}
        image, mean = binned(load_series_lps(args.series), args.bin)
    except (CTScoreError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spacing = tuple(image.GetSpacing()[::-1])
    slice_mm = float(spacing[0])
    say(f"background {args.series}: {image.GetSize()} voxels of {image.GetSpacing()} mm; classical lungs of L0")
    teacher = analyse_volume(image, cfgs["classical"], segmenters["classical"])
    lungs = teacher["lungs"].astype(np.uint8)
    out.mkdir(parents=True, exist_ok=True)
    insertions: list[dict] = []
    infos, rows = [], []
    for name, hu, les, _cons, info in build_ladder(mean, lungs, spacing, levels, args.seed, insertions):
        infos.append(info)
        folder = out / "levels" / name
        folder.mkdir(parents=True, exist_ok=True)
        img = image if name == "L0" else stored(hu, image, 1)
        ct = sitk.Cast(img, sitk.sitkInt16)
        sitk.WriteImage(ct, str(folder / "ct.nii.gz"))
        for fname, arr in (("lungs.nii.gz", lungs), ("lesions.nii.gz", les.astype(np.uint8))):
            mask = sitk.GetImageFromArray(arr)
            mask.CopyInformation(img)
            sitk.WriteImage(mask, str(folder / fname))
        say(f"{name}: truth {info['percent']:.1f} % of the lung ({info['lesion_ml']:.0f} mL lesion, "
            f"{info['consolidation_ml']:.0f} mL consolidation); scoring")
        truth = analyse_volume(img, cfgs["classical"], None, user_masks={"lungs": folder / "lungs.nii.gz",
                                                                          "lesions": folder / "lesions.nii.gz"})
        truth_cons = truth["classes"] == 3  # the truth's consolidation, by the HU classes, as scored
        rows.append(dict(level=name, method="truth", **measured(truth, slice_mm, truth_cons)))
        for m in methods:
            res = teacher if (m == "classical" and name == "L0") else analyse_volume(img, cfgs[m], segmenters[m])
            rows.append(dict(level=name, method=names[m], **measured(res, slice_mm, truth_cons)))
            del res
        del truth
    atomic_write_json(out / "ladder.json", {
        "background": str(args.series), "bin": args.bin, "seed": args.seed, "levels": infos,
        "stages": [dict(level=n, target_percent=t, **s) for n, t, s in STAGES], "insertions": insertions})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "table.csv", text.getvalue().encode())
    for info in infos:
        stage = next((t for n, t, _ in STAGES if n == info["level"]), 0)
        if info["percent"] < stage:
            say(f"{info['level']} stops at {info['percent']:.1f} % of the lung (target {stage} %: "
                f"{MAX_INSERTIONS} insertions)")
    say(f"done; outputs in {args.out}")
    print_tables(rows, methods)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
