#!/usr/bin/env python
"""The figures behind the QC flag PNEUMOTHORAX_SUSPECT (``pipeline.hu_checks.pneumothorax_mask``): synthetic
pneumothoraces and emphysema put into one real chest's lung mask, and what the flag measures of each.

    python scripts/pneumothorax_cases.py ../shared/data/chest/normal001
    python scripts/pneumothorax_cases.py ../shared/data/chest/normal001 --cases lateral15 panlobular985
    python scripts/pneumothorax_cases.py sample_dicoms --segmenter classical
    python scripts/pneumothorax_cases.py ../shared/data/chest/normal001 --cases lateral15 anterior12 --qc OUT

The series is segmented once, clean (``pipeline.run.analyse_volume``, the default segmenter unless
``--segmenter``); each case then changes the CT's HU inside that lung mask on the CT's own grid (air: -1000 HU with
noise of SD 15 HU), and both are resampled to the working grid, where the flag is measured as the pipeline measures
it, with the cut of air at -1000 HU (-970; ``--air-hu`` sets the trachea's air instead). The lungs are not segmented
again: the network keeps 91-99 % of such air in the lung (tests/test_pneumothorax_flag.py runs one case through it).

For each case: the air put in, the part of it that the flag found (pneumothoraces), or what the flag measured where
there is none (emphysema, bullae: "elsewhere"). With ``--qc DIR`` each case (the squeezed ones aside) is also scored
through the pipeline, segmented again (``analyse_volume`` on the CT with the case), and a second table gives the flag
the pipeline raised, the lesion and consolidation it found and the scores, with the clean scan first; its qc.png
(the suspected air outlined dotted) goes to ``DIR/<case>.png``. normal001 with the network (2026-12-07): the clean
scan has no lesion; lateral15, anterior12 and anteromedial15 are flagged (464, 317, 154 mL), and the network calls
2.5, 4.8 and 0.4 mL at the right heart border consolidation (six-zone 1, 1, 0; zhang900 9, 9, 0);
left_anteromedial12, which the flag misses in the clean lung mask, is flagged 36 mL in the mask made again.
The first table on normal001 (2026-12-07, 2 cores, 2.5 min): lateral 15 mm 95 %, anterior 12 mm 86 %,
anteromedial 15 mm 91 %, left anteromedial 12 mm 0 %, subpulmonic 56 %, collapse 98 % (squeezed to a short chest
97 %), loculated 49 mL 0 % and 89 mL 95 %, noise SD 40 / 80 93 / 69 %; every emphysema and bullae case 0 mL.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

AIR_HU = -1000.0


def _air(hu: np.ndarray, where: np.ndarray, rng: np.random.Generator, value: float = AIR_HU) -> np.ndarray:
    out = hu.copy()
    out[where] = value + rng.normal(0, 15, int(where.sum()))
    return out


def _noise(hu: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    """CT-like noise (smoothed in plane, sigma 1 pixel), clipped at -1024 HU as stored."""
    from scipy import ndimage as ndi

    n = ndi.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), (0, 1.0, 1.0))
    return np.maximum(hu + n * (sd / float(n.std())), -1024.0)


def _band(lungs, side, thick_mm, spacing, front_share=1.0, z_from=0.2, z_to=0.85, lateral=None):
    """A lung's voxels within ``thick_mm`` of its edge, in its front ``front_share`` (front to back, per slice),
    between ``z_from`` and ``z_to`` of its height from its base (LPS: index 0 is the base); ``lateral`` True / False
    keeps its lateral / medial half only."""
    from scipy import ndimage as ndi

    m = lungs == side
    depth = ndi.distance_transform_edt(m, sampling=spacing)
    zs = np.flatnonzero(m.any(axis=(1, 2)))
    out = np.zeros_like(m)
    y = np.arange(m.shape[1])[:, None]
    for k in range(zs[0] + int(z_from * len(zs)), zs[0] + int(z_to * len(zs))):
        rows = np.flatnonzero(m[k].any(axis=1))
        if rows.size:
            out[k] = m[k] & (depth[k] < thick_mm) & (y <= rows[0] + front_share * (rows[-1] - rows[0]))
    if lateral is not None:
        xs = np.flatnonzero(m.any(axis=(0, 1)))
        x = np.arange(m.shape[2])[None, None, :]
        half = (x < xs.mean()) if side == 1 else (x > xs.mean())  # LPS: x grows to the patient's left
        out &= half if lateral else ~half
    return out


def _ball(shape, spacing, centre_mm, radius_mm):
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(((g * s) - c) ** 2 for g, s, c in zip(grids, spacing, centre_mm))
    return d2 < radius_mm ** 2


def _edge_point(m, k, weights):
    """A point (mm) on the edge of mask ``m`` in slice ``k``, the one maximising ``weights . (y, x)``."""
    ys, xs = np.nonzero(m[k])
    j = int(np.argmax(weights[0] * ys + weights[1] * xs))
    return k, ys[j], xs[j]


def build_cases(hu, lungs, spacing, names=None, seed=0):
    """name -> (hu with the case, truth mask of the air put in or None, squeeze factor in z or 1.0)."""
    from scipy import ndimage as ndi
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    right, lung = lungs == 1, lungs > 0
    depth = ndi.distance_transform_edt(lung, sampling=spacing)
    zs = np.flatnonzero(lung.any(axis=(1, 2)))
    sp = np.asarray(spacing)
    cases = {}

    def want(name):
        return names is None or name in names

    lateral15 = _band(lungs, 1, 15.0, spacing, lateral=True)
    if want("lateral15"):
        cases["lateral15"] = (_air(hu, lateral15, rng), lateral15, 1.0)
    for sd in (40, 80):
        if want(f"lateral15_noise{sd}"):
            cases[f"lateral15_noise{sd}"] = (_noise(_air(hu, lateral15, rng), sd, rng), lateral15, 1.0)
    for name, args in (("anterior12", (1, 12.0, spacing, 0.45)), ("anteromedial15", (1, 15.0, spacing, 0.5, 0.05, 0.6,
                                                                                    False)),
                       ("left_anteromedial12", (2, 12.0, spacing, 0.5, 0.05, 0.6, False))):
        if want(name):
            air = _band(lungs, *args)
            cases[name] = (_air(hu, air, rng), air, 1.0)
    if want("subpulmonic15"):
        z = np.arange(lungs.shape[0])[:, None, None]
        base = np.where(right.any(axis=0), np.argmax(right, axis=0), 10 ** 6)[None]
        air = right & (z < base + 15.0 / spacing[0])
        cases["subpulmonic15"] = (_air(hu, air, rng), air, 1.0)
    if any(want(n) for n in ("collapse85", "collapse85_z0.75", "collapse85_z0.6")):
        xs = np.flatnonzero(right.any(axis=(0, 1)))
        air = right & (np.arange(right.shape[2])[None, None, :] < xs[0] + 0.85 * (xs[-1] - xs[0]))
        h = _air(hu, air, rng)
        rest = right & ~air
        h[rest] = np.minimum(h[rest] + 400.0, 60.0)
        for name, squeeze in (("collapse85", 1.0), ("collapse85_z0.75", 0.75), ("collapse85_z0.6", 0.6)):
            if want(name):
                cases[name] = (h, air, squeeze)
    k = zs[0] + int(0.45 * len(zs))
    for radius, deep in ((30.0, 25.0), (40.0, 20.0)):
        name = f"loculated{int(radius)}"
        if want(name):
            centre = np.asarray(_edge_point(right, k, (0.7, -0.7))) * sp  # back and lateral
            air = right & _ball(lungs.shape, spacing, centre, radius) & (depth < deep)
            cases[name] = (_air(hu, air, rng), air, 1.0)
    for level in (-975.0, -985.0):
        name = f"panlobular{int(-level)}"
        if want(name):
            low = lung & (hu < -750) & (np.arange(lungs.shape[0])[:, None, None] < zs[0] + 0.5 * len(zs))
            cases[name] = (_air(hu, low, rng, level), None, 1.0)
    for deep, cell, wall_mm, wall_hu in ((12.0, 10.0, 1.0, -600.0), (15.0, 12.0, 2.0, -800.0), (15.0, 15.0, 1.0,
                                                                                             -800.0)):
        name = f"paraseptal{int(deep)}_{int(cell)}"
        if want(name):
            band = lung & (depth < deep)
            idx = np.argwhere(band)
            pts = idx * sp
            seeds = pts[rng.choice(len(pts), int(band.sum() * float(np.prod(spacing)) / cell ** 3), replace=False)]
            dist, _ = cKDTree(seeds).query(pts, k=2)
            walls = (dist[:, 1] - dist[:, 0]) < wall_mm
            values = AIR_HU + 10 + rng.normal(0, 15, len(pts))
            values[walls] = wall_hu + rng.normal(0, 15, int(walls.sum()))
            h = hu.copy()
            h[tuple(idx.T)] = values
            cases[name] = (h, None, 1.0)
    if want("giant_bulla"):
        kk = zs[0] + int(0.75 * len(zs))
        centre = np.asarray(_edge_point(right, kk, (0.0, -1.0))) * sp + np.array([0.0, 0.0, 40.0])
        bulla = right & _ball(lungs.shape, spacing, centre, 45.0)
        wall = right & _ball(lungs.shape, spacing, centre, 46.5) & ~bulla
        h = hu.copy()
        h[wall] = -600.0
        cases["giant_bulla"] = (_air(h, bulla, rng), None, 1.0)
    if want("bullae_chain"):
        inside, walls = np.zeros_like(right), np.zeros_like(right)
        for kk in np.linspace(zs[0] + 0.25 * len(zs), zs[0] + 0.8 * len(zs), 9).astype(int):
            r = rng.uniform(11.0, 14.0)
            centre = np.asarray(_edge_point(right, kk, (0.0, -1.0))) * sp + np.array([0.0, 0.0, r - 3.0])
            ball = _ball(lungs.shape, spacing, centre, r)
            inside |= right & ball
            walls |= right & _ball(lungs.shape, spacing, centre, r + 1.0) & ~ball
        h = _air(hu, inside, rng)
        h[walls] = -600.0  # each bulla's wall, also where it meets the next one
        cases["bullae_chain"] = (h, None, 1.0)
    return cases


def to_working_grid(hu, labels, spacing, working_mm):
    """(HU, labels) resampled onto the working grid as the pipeline does (linear / nearest-label)."""
    import SimpleITK as sitk

    from pipeline.resample import labels_to_grid, resample_to_spacing

    img = sitk.GetImageFromArray(hu.astype(np.float32))
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    work = resample_to_spacing(img, working_mm)
    lab = sitk.GetImageFromArray(labels.astype(np.uint8))
    lab.CopyInformation(img)
    return sitk.GetArrayFromImage(work), sitk.GetArrayFromImage(labels_to_grid(lab, work)), \
        tuple(work.GetSpacing()[::-1])


def measure(hu, lungs, truth, spacing, working_mm, squeeze=1.0, air_hu=None):
    """(mL of the truth inside the lung mask on the working grid, mL the flag found of it, mL it found elsewhere)."""
    from scipy import ndimage as ndi

    from pipeline.hu_checks import pneumothorax_mask

    hu_w, lungs_w, sp_w = to_working_grid(hu, lungs, spacing, working_mm)
    truth_w = to_working_grid(np.zeros(hu.shape, np.float32), truth, spacing, working_mm)[1] > 0 \
        if truth is not None else np.zeros(lungs_w.shape, bool)
    if squeeze != 1.0:  # the same chest, shorter: a lung well under 200 mm high
        hu_w = ndi.zoom(hu_w, (squeeze, 1, 1), order=1)
        lungs_w, truth_w = (ndi.zoom(a.astype(np.uint8), (squeeze, 1, 1), order=0) for a in (lungs_w, truth_w))
        truth_w = truth_w > 0
    found = pneumothorax_mask(hu_w, lungs_w, sp_w, air_hu=air_hu)
    voxel_ml = float(np.prod(sp_w)) / 1000.0
    in_mask = truth_w & (lungs_w > 0)
    return (float(in_mask.sum()) * voxel_ml, float((found & in_mask).sum()) * voxel_ml,
            float((found & ~in_mask).sum()) * voxel_ml)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("series", type=Path, help="a DICOM series folder (or a folder holding one): the clean chest")
    ap.add_argument("--segmenter", default=None, help="classical or monai (default: the configuration's)")
    ap.add_argument("--cases", nargs="+", default=None, help="only these cases (names as printed)")
    ap.add_argument("--air-hu", type=float, default=None,
                    help="the trachea's air (HU) that sets the cut (default: none, the cut of air at -1000)")
    ap.add_argument("--qc", type=Path, default=None, metavar="DIR",
                    help="also score each case through the pipeline and write its qc.png to DIR/<case>.png")
    args = ap.parse_args(argv)

    import SimpleITK as sitk

    from pipeline.config import resolve_config
    from pipeline.run import analyse_volume
    from segmentation.factory import build_segmenter
    from segmentation.training import load_series_lps

    cfg = resolve_config({"segmentation": {"method": args.segmenter}} if args.segmenter else None)
    image = load_series_lps(args.series)
    segmenter = build_segmenter(cfg)
    clean = analyse_volume(image, cfg, segmenter)
    lungs = clean["lungs"]
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    spacing = tuple(image.GetSpacing()[::-1])
    working = list(cfg["resample"]["spacing_mm"])
    print(f"{'case':<22} {'air in mask mL':>15} {'found mL':>9} {'found %':>8} {'elsewhere mL':>13}")
    scored = [("clean", clean)]
    for name, (h, truth, squeeze) in build_cases(hu, lungs, spacing, args.cases).items():
        truth_ml, found_ml, other_ml = measure(h, lungs, truth, spacing, working, squeeze, args.air_hu)
        share = f"{100.0 * found_ml / truth_ml:7.0f}%" if truth_ml else f"{'-':>8}"
        print(f"{name:<22} {truth_ml:>15.0f} {found_ml:>9.0f} {share} {other_ml:>13.0f}", flush=True)
        if args.qc is not None and squeeze == 1.0:
            edited = sitk.GetImageFromArray(h.astype(np.float32))
            edited.CopyInformation(image)
            scored.append((name, analyse_volume(edited, cfg, segmenter)))
    if args.qc is not None:
        print_scored(scored, spacing, args.qc)
    return 0


def print_scored(scored: list, spacing: tuple[float, float, float], out: Path) -> None:
    """The second table of ``--qc`` (one row per ``(name, analyse_volume result)``), and each result's qc.png."""
    from pipeline.hu_checks import flags_for
    from pipeline.outputs import atomic_write_bytes
    from pipeline.qc import qc_png

    out.mkdir(parents=True, exist_ok=True)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    print(f"\n{'case (scored again)':<22} {'flag':>26} {'lesion mL':>10} {'consol. mL':>11} {'six-zone':>9} "
          f"{'zhang900':>9}")
    for name, res in scored:
        flag = next((f for f in flags_for(res["hu_check"]) if f.startswith("PNEUMOTHORAX_SUSPECT")), "-")
        classes = res["classes"]
        print(f"{name:<22} {flag:>26} {np.count_nonzero(classes) * voxel_ml:>10.1f} "
              f"{np.count_nonzero(classes == 3) * voxel_ml:>11.1f} {res['row']['six_zone_total']:>9} "
              f"{res['row']['zhang900_total']:>9}", flush=True)
        levels = {n: lm.z_mm for n, lm in res["landmarks"].items()}
        atomic_write_bytes(out / f"{name}.png", qc_png(res["hu"], res["lungs"], classes, res["z_mm"],
                                                       res["spacing_zyx"], levels, title=name,
                                                       flags=flags_for(res["hu_check"]),
                                                       pneumothorax=res.get("pneumothorax")))


if __name__ == "__main__":
    raise SystemExit(main())
