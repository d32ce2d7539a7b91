#!/usr/bin/env python
"""Acceptance metrics of the MONAI segmenter (issue 4) on the held-out clean background.

    python scripts/evaluate_segmenter.py                          # normal001, 6 synthetic cases
    python scripts/evaluate_segmenter.py --series ../shared/data/chest/normal001 --cases 10 \\
        --weights segmentation/weights --json eval.json --real cap001 ricord_covid_419639

``--series`` one of the training backgrounds (``itkelastix00``, ``ge_mister_ct``, ``lung_pet_ct_dx_A0002``) gives
the same figures on an anatomy the model was trained on: how well it fits its own data, against the held-out
scan's figures (how well it carries to a new anatomy).

On the pipeline's working grid (1.5 mm):

- lung Dice per side vs the classical teacher on the clean held-out scan (target >= 0.95);
- false-positive lesion volume on the clean scan as % of lung volume (target <= 1 %);
- lesion Dice on synthetic insertions (segmentation.synth, seeds 1000+i) into the same scan
  (target >= 0.80; pooled over all cases, and the median per case), ``--cases`` with the default
  lesion mix plus ``--pleural-cases`` with forced pleura-touching consolidation;
- coverage of pleura-touching synthetic consolidation by the predicted lung mask (target >= 95 %),
  pooled (with a 95 % bootstrap interval over cases, ``pleural_coverage_ci95``), and per lesion with its
  place (side, apical/middle/basal, anterior/posterior, medial/lateral thirds of that lung), in
  ``pleural_lesions`` of the JSON; ``--cases 0 --pleural-cases 12`` gives the coverage on more lesions;
  ``pleural_miss_location``: that consolidation split by what lies beyond it (the nearest voxel outside the
  teacher's lungs: ``medial`` between the two lungs, i.e. mediastinum, heart, spine; ``lateral``, the chest wall;
  ``below``, the diaphragm), with the coverage of each part and its share of the missed volume;
- the scores the masks give (``score_agreement``): per synthetic case the six-zone (0-24) and
  Zhang (0-900) totals and % opacity from the model's masks and from the reference masks (teacher lung of
  the clean scan, inserted lesions), with the same zones (landmarks of the clean scan), and per set
  their mean difference (model - reference), mean absolute difference and both means, over the ``n`` cases
  where both totals could be computed: what the misses cost in the figures a study reports; and where the
  missed lesion volume is (``lesion_missed_outside_lung_frac``: left out of the lung mask;
  ``lesion_missed_inside_lung_frac``: in the lung mask, not called lesion);
- with ``--lung-thresholds T [T ...]`` (one more network pass per case): how sure the model is where it
  misses (``miss_probabilities``: quantiles of the lung and lesion probabilities over the pleura-touching
  consolidation left out of the lung mask) and what a lower lung threshold would buy and cost
  (``lung_threshold_sweep``: per T the pleural coverage of the lung mask plus every voxel with lung
  probability >= T, and the lung that rule has outside the teacher's mask and the airway on the clean scan,
  in mL, without the pipeline's clean-up);
- lesion-wise detection (``lesion_detection``): each connected inserted lesion counts as detected when the model
  marks at least 10 % of it; sensitivity by size (< 1, 1-10, 10-100, >= 100 mL) and by density (median above
  -300 HU: consolidation, else ground glass), and the predicted lesion pieces that touch no inserted lesion
  (false-positive pieces per case); with ``--lesion-probabilities`` (one more network pass per case) the 90th
  percentile of the lesion probability over each inserted lesion (``p90``; ``missed_p90_median`` over the missed
  ones): whether a lower threshold would find them;
- with ``--real``: lesion % of lung volume on real scans (no reference masks: for the QC pictures), and the
  lung the model adds beyond the classical teacher's mask there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
log = logging.getLogger("evaluate_segmenter")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def thirds(v: float, lo: float, hi: float, names: tuple[str, str, str]) -> str:
    """The name of the third of ``[lo, hi]`` that ``v`` falls in."""
    f = (v - lo) / max(hi - lo, 1e-6)
    return names[0] if f < 1 / 3 else names[1] if f < 2 / 3 else names[2]


def pleural_lesions(pc: np.ndarray, pred_lungs: np.ndarray, ref: np.ndarray, voxel_ml: float) -> list[dict]:
    """Each connected piece of pleura-touching consolidation ``pc``: volume, coverage by the predicted lung
    mask and where it sits in the reference lung of its side (``ref``: 1 right, 2 left; arrays [z, y, x] LPS,
    z towards the head, y towards the back, x towards the patient's left), by thirds of that lung's extent:
    apical / middle / basal, anterior / middle / posterior, medial / middle / lateral.
    """
    from scipy import ndimage as ndi

    lab, n = ndi.label(pc)
    out = []
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        comp = lab[sl] == i
        idx = np.argwhere(comp) + np.array([s.start for s in sl])
        zc, yc, xc = idx.mean(0)
        side = int(np.bincount(ref[tuple(idx.T)], minlength=3)[1:].argmax()) + 1
        lz, ly, lx = np.nonzero(ref == side)
        # x grows towards the patient's left: the right lung's medial third is its high-x third
        lat = ("lateral", "middle", "medial") if side == 1 else ("medial", "middle", "lateral")
        out.append({"ml": float(comp.sum() * voxel_ml),
                    "coverage": float((pred_lungs[sl][comp] > 0).mean()),
                    "side": "right" if side == 1 else "left",
                    "level": thirds(zc, lz.min(), lz.max(), ("basal", "middle", "apical")),
                    "ap": thirds(yc, ly.min(), ly.max(), ("anterior", "middle", "posterior")),
                    "ml_axis": thirds(xc, lx.min(), lx.max(), lat)})
    return out


#: lesion size bins of the detection table (mL, lower bounds): nodular ground glass to lobar consolidation
SIZE_BINS = ((0.0, "< 1 mL"), (1.0, "1-10 mL"), (10.0, "10-100 mL"), (100.0, ">= 100 mL"))


def lesion_detection(ref_lesions: np.ndarray, pred_lesions: np.ndarray, hu: np.ndarray, voxel_ml: float,
                     min_overlap: float = 0.1, p_lesion: np.ndarray | None = None) -> tuple[list[dict], list[float]]:
    """Lesion-wise detection: each connected reference lesion (26-connected) with its volume, its median HU
    (``dense``: median above -300 HU, consolidation; else ground glass), the share of it the prediction marks and
    whether that reaches ``min_overlap`` (detected), and with ``p_lesion`` (the model's lesion probability) its
    90th percentile over the lesion (``p90``: how near a missed lesion came); and the volumes (mL) of the
    predicted lesion pieces that touch no reference lesion (false-positive pieces)."""
    from scipy import ndimage as ndi

    full = np.ones((3, 3, 3), bool)
    lab, _ = ndi.label(ref_lesions, structure=full)
    rows = []
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        comp = lab[sl] == i
        share = float(pred_lesions[sl][comp].mean())
        rows.append({"ml": float(comp.sum() * voxel_ml), "dense": bool(np.median(hu[sl][comp]) > -300.0),
                     "marked": share, "detected": share >= min_overlap})
        if p_lesion is not None:
            rows[-1]["p90"] = float(np.quantile(p_lesion[sl][comp].astype(np.float32), 0.9))
    plab, _ = ndi.label(pred_lesions, structure=full)
    fp = [float((plab[sl] == i).sum() * voxel_ml) for i, sl in enumerate(ndi.find_objects(plab), start=1)
          if not ref_lesions[sl][plab[sl] == i].any()]
    return rows, fp


def detection_summary(rows: list[dict], fp_ml: list[float], n_cases: int) -> dict:
    """Sensitivity of :func:`lesion_detection` rows by size bin and by density, and the false-positive pieces
    per case (count and mL)."""
    def cell(sel: list[dict]) -> dict:
        n = len(sel)
        det = sum(r["detected"] for r in sel)
        return {"n": n, "detected": det, "sensitivity": det / n if n else None}

    by_size = []
    for k, (lo, name) in enumerate(SIZE_BINS):
        hi = SIZE_BINS[k + 1][0] if k + 1 < len(SIZE_BINS) else np.inf
        by_size.append({"size": name, **cell([r for r in rows if lo <= r["ml"] < hi])})
    return {"by_size": by_size,
            "by_density": [{"density": "ground glass", **cell([r for r in rows if not r["dense"]])},
                           {"density": "consolidation", **cell([r for r in rows if r["dense"]])}],
            "all": cell(rows),
            "missed_p90_median": (float(np.median([r["p90"] for r in rows if not r["detected"]]))
                                  if any("p90" in r and not r["detected"] for r in rows) else None),
            "fp_pieces_per_case": len(fp_ml) / n_cases if n_cases else None,
            "fp_pieces_ml_median": float(np.median(fp_ml)) if fp_ml else None}


def pooled_coverage_interval(rows: list[dict], n_boot: int = 2000, seed: int = 0,
                             level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of the pooled pleural coverage, resampling whole cases.

    ``rows``: per-case dicts with ``pleural_consolidation_ml`` and ``pleural_coverage`` (None or 0 mL: no
    pleural consolidation in that case, left out). The pooled figure is dominated by a few large lesions, so a
    handful of cases gives a wide interval; cases, not lesions, are resampled because lesions of one case share
    an anatomy and a draw. None with fewer than two cases.
    """
    pairs = [(r["pleural_consolidation_ml"], r["pleural_coverage"]) for r in rows
             if r.get("pleural_coverage") is not None and r["pleural_consolidation_ml"] > 0]
    if len(pairs) < 2:
        return None
    ml, cov = np.array(pairs, float).T
    idx = np.random.default_rng(seed).integers(0, len(ml), size=(n_boot, len(ml)))
    boot = (ml[idx] * cov[idx]).sum(1) / ml[idx].sum(1)
    a = (1.0 - level) / 2.0
    return [float(np.quantile(boot, a)), float(np.quantile(boot, 1.0 - a))]


SCORE_KEYS = ("six_zone_total", "zhang900_total", "percent_opacity")


QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def miss_probabilities(p_lung: np.ndarray, p_lesion: np.ndarray) -> dict | None:
    """Quantiles (:data:`QUANTILES`) of the lung and lesion probabilities of the missed voxels (1-D arrays):
    near 0 the model is sure they are neither, and no threshold or probability gate recovers them."""
    if p_lung.size == 0:
        return None
    return {"voxels": int(p_lung.size), "quantiles": list(QUANTILES),
            "lung": [round(float(v), 4) for v in np.quantile(p_lung.astype(np.float32), QUANTILES)],
            "lesion": [round(float(v), 4) for v in np.quantile(p_lesion.astype(np.float32), QUANTILES)]}


NEIGHBOURS = ("medial", "lateral", "below")


def neighbour_map(ref: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Per voxel of the reference lungs, what the nearest voxel outside them is: 1 ``medial`` (between the two
    lungs' centroids on its slice: mediastinum, heart, spine), 2 ``lateral`` (chest wall), 3 ``below`` (a lower
    slice: the diaphragm and what lies under it); 0 outside the lungs. Axis 0 runs foot to head (LPS)."""
    from scipy import ndimage as ndi

    inside = ref > 0
    _, idx = ndi.distance_transform_edt(inside, sampling=spacing, return_indices=True)
    z, _, x = np.nonzero(inside)
    nz, nx = idx[0][inside], idx[2][inside]
    del idx
    cx = np.full((2, ref.shape[0]), np.nan)
    for k, side in enumerate((1, 2)):
        zz, _, xx = np.nonzero(ref == side)
        if zz.size:
            n = np.bincount(zz, minlength=ref.shape[0])
            with np.errstate(invalid="ignore", divide="ignore"):
                cx[k] = np.bincount(zz, weights=xx, minlength=ref.shape[0]) / n
    lo, hi = np.nanmin(cx[:, z], axis=0), np.nanmax(cx[:, z], axis=0)  # one lung on a slice: no medial band
    cat = np.where(nz < z, 3, np.where((nx > lo) & (nx < hi), 1, 2)).astype(np.uint8)
    out = np.zeros(ref.shape, np.uint8)
    out[inside] = cat
    return out


def miss_location(pc: np.ndarray, covered: np.ndarray, neighbours: np.ndarray, voxel_ml: float) -> dict:
    """Pleura-touching consolidation by what lies beyond it (:func:`neighbour_map`): per neighbour its volume,
    the volume the lung mask misses, the coverage and the share of all the missed volume."""
    miss = pc & ~covered
    n_miss = int(miss.sum())
    out = {}
    for k, name in enumerate(NEIGHBOURS, start=1):
        here = neighbours == k
        n, m = int((pc & here).sum()), int((miss & here).sum())
        out[name] = {"ml": n * voxel_ml, "missed_ml": m * voxel_ml,
                     "coverage": 1.0 - m / n if n else None, "share_of_misses": m / n_miss if n_miss else None}
    return out


def add_miss_locations(rows: list[dict]) -> dict:
    """Sum of :func:`miss_location` over cases (volumes added, coverage and shares recomputed)."""
    out = {}
    total_missed = sum(r[name]["missed_ml"] for r in rows for name in NEIGHBOURS)
    for name in NEIGHBOURS:
        ml = sum(r[name]["ml"] for r in rows)
        missed = sum(r[name]["missed_ml"] for r in rows)
        out[name] = {"ml": ml, "missed_ml": missed, "coverage": 1.0 - missed / ml if ml else None,
                     "share_of_misses": missed / total_missed if total_missed else None}
    return out


def lung_threshold_sweep(pc_covered: np.ndarray, pc_p_lung: np.ndarray, clean_in_mask: np.ndarray,
                         clean_p_lung: np.ndarray, thresholds: list[float], voxel_ml: float) -> list[dict]:
    """Per threshold T: the pooled pleural coverage of (lung mask OR lung probability >= T) and the lung volume
    that rule adds outside the teacher's mask on the clean scan.

    ``pc_covered`` / ``pc_p_lung``: over every pleura-touching consolidation voxel of the cases, whether the
    lung mask covers it and its lung probability; ``clean_in_mask`` / ``clean_p_lung``: over the clean scan's
    voxels outside the teacher's lung and the airway. No other clean-up after the threshold (the pipeline's
    would drop small disconnected pieces), so the false lung is an upper bound and the coverage the most a lower
    threshold can give."""
    out = []
    for t in thresholds:
        cov = pc_covered | (pc_p_lung >= t)
        out.append({"lung_threshold": float(t),
                    "pleural_coverage": float(cov.mean()) if cov.size else None,
                    "lung_ml_outside_teacher": float((clean_in_mask | (clean_p_lung >= t)).sum() * voxel_ml)})
    return out


def case_scores(hu: np.ndarray, sp: tuple[float, float, float], lungs: np.ndarray, lesions: np.ndarray,
                landmarks: dict, cfg: dict) -> dict[str, float]:
    """The totals of :data:`SCORE_KEYS` of one scan on the working grid, as the pipeline scores it."""
    from scoring.hu_classes import classify_lesions
    from scoring.quantify import score_scan

    classes = classify_lesions(hu, lesions & (lungs > 0), cfg["hu_classes"])
    z_mm = np.arange(hu.shape[0]) * float(sp[0])  # index grows cranially (LPS)
    row, _, _ = score_scan(hu, lungs, classes, z_mm, float(np.prod(sp)) / 1000.0, landmarks, cfg)
    return {k: float(row[k]) for k in SCORE_KEYS}


def score_agreement(rows: list[dict]) -> dict[str, dict]:
    """Per set of cases (``default``, ``pleural``, ``all``) and score: the mean of model - reference, the mean
    absolute difference and the model's and the reference's means, from the ``scores`` of each row
    ({"model": {...}, "reference": {...}}). ``n`` per set counts its cases, ``n`` per score the cases every figure
    of that score is computed on: those where both the model's and the reference's value could be computed (a
    missing landmark gives NaN), so that the means are of the same cases as the differences."""
    out: dict[str, dict] = {}
    for name in ("default", "pleural", "all"):
        sel = [r["scores"] for r in rows if "scores" in r and (name == "all" or r["set"] == name)]
        if not sel:
            continue
        out[name] = {"n": len(sel)}
        for k in SCORE_KEYS:  # a score that cannot be computed (NaN) on either side leaves its case out
            ref = np.array([s["reference"][k] for s in sel], float)
            model = np.array([s["model"][k] for s in sel], float)
            paired = np.isfinite(ref) & np.isfinite(model)
            ref, model = ref[paired], model[paired]
            d = model - ref
            out[name][k] = {"n": int(paired.sum()),
                            "mean_difference": float(d.mean()) if d.size else None,
                            "mean_absolute_difference": float(np.abs(d).mean()) if d.size else None,
                            "model_mean": float(model.mean()) if model.size else None,
                            "reference_mean": float(ref.mean()) if ref.size else None}
    return out


def working_grid(folder: Path, spacing_xyz: list[float]) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The series under ``folder`` on the pipeline's working grid: HU [z, y, x] and spacing (z, y, x)."""
    import SimpleITK as sitk

    from pipeline.resample import resample_to_spacing
    from segmentation.training import load_series_lps

    img = resample_to_spacing(load_series_lps(folder), spacing_xyz, default=-1024.0)
    return sitk.GetArrayFromImage(img).astype(np.float32), tuple(float(v) for v in reversed(img.GetSpacing()))


def evaluate(series: Path, weights: Path | None, cases: int, device: str, spacing_xyz: list[float],
             real: list[Path], baseline: bool = False, pleural_cases: int = 2, flip_tta: bool = True,
             scale_tta: float = 0.15, lesion_threshold: float | None = None,
             lung_thresholds: list[float] | None = None, lesion_probabilities: bool = False,
             body_margin_mm: float | None = None, trim_apex_soft_tissue: bool = True) -> dict:
    """Compute the acceptance metrics; returns a JSON-able dict."""
    from segmentation.classical import ClassicalSegmenter
    from segmentation.monai_segmenter import MonaiSegmenter
    from segmentation.synth import synthesize

    opts = {"flip_tta": flip_tta, "scale_tta": scale_tta, "trim_apex_soft_tissue": trim_apex_soft_tissue}
    if lesion_threshold is not None:  # else the weights' own (model.yaml)
        opts["lesion_threshold"] = lesion_threshold
    if body_margin_mm is not None:  # else the segmenter's default (BODY_MARGIN_MM)
        opts["body_margin_mm"] = body_margin_mm
    model = MonaiSegmenter(weights, device=device, cfg={"segmentation": {"monai": opts}})
    teacher = ClassicalSegmenter()
    hu, sp = working_grid(series, spacing_xyz)
    voxel_ml = float(np.prod(sp)) / 1000.0
    t = time.perf_counter()
    teacher_clean = teacher.segment(hu, sp)
    ref = teacher_clean.lungs
    log.info("teacher %.1f s", time.perf_counter() - t)
    neighbours = neighbour_map(ref, sp)  # what lies beyond each lung voxel, for the pleural misses
    from pipeline.config import default_config
    from scoring.landmarks import detect_landmarks

    cfg = default_config()
    # one set of zones for every case, from the clean scan: the score differences are the masks' alone
    landmarks = detect_landmarks(ref, teacher_clean.airway, np.arange(hu.shape[0]) * float(sp[0]), sp, hu=hu,
                                 cfg=cfg.get("landmarks"))
    t = time.perf_counter()
    clean = model.segment(hu, sp)
    seg_s = time.perf_counter() - t
    res: dict = {"series": series.name, "model_id": model.model_id, "body_margin_mm": model.body_margin_mm,
                 "trim_apex_soft_tissue": model.trim_apex_soft_tissue,
                 "flip_tta": flip_tta, "scale_tta": scale_tta,
                 "lesion_threshold": model.lesion_threshold,
                 "working_spacing_zyx": sp,
                 "segment_s_clean": seg_s,
                 "lung_dice_right": dice(clean.lungs == 1, ref == 1), "lung_dice_left": dice(clean.lungs == 2, ref == 2),
                 "lung_ml_model": float((clean.lungs > 0).sum() * voxel_ml),
                 "lung_ml_teacher": float((ref > 0).sum() * voxel_ml),
                 # lung the model adds beyond the teacher (mediastinal fat, heart border, liver dome ...)
                 "lung_ml_outside_teacher": float(((clean.lungs > 0) & (ref == 0)).sum() * voxel_ml),
                 "fp_lesion_ml": float(clean.lesions.sum() * voxel_ml),
                 "fp_lesion_pct_of_lung": 100.0 * float(clean.lesions.sum()) / max(1, int((clean.lungs > 0).sum()))}
    if baseline:  # the teacher's own lesions on the clean scan are its false positives
        res["classical_fp_lesion_pct_of_lung"] = 100.0 * float(teacher_clean.lesions.sum()) / max(1, int((ref > 0).sum()))
    log.info("clean: %s", {k: res[k] for k in ("lung_dice_right", "lung_dice_left", "fp_lesion_pct_of_lung")})
    if lung_thresholds:  # outside the teacher's lung on the clean scan: in the mask now, and the lung probability
        outside = (ref == 0) & ~clean.airway  # the pipeline always takes the airway out of the lungs
        clean_in_mask, clean_p_lung = clean.lungs[outside] > 0, model.probabilities(hu, sp)["lung"][outside]
        miss_cov, miss_pl, miss_pe = [], [], []
    inter = tot = 0
    cov_in = cov_tot = 0
    per_case = []
    base_inter = base_tot = base_cov = 0
    pleural_cfg = {"p_empty": 0.0, "kind_probs": {"consolidation": 0.6, "mixed": 0.4},
                   "size_probs": {"medium": 0.5, "large": 0.5}, "p_pleural_consolidation": 1.0}
    for i in range(cases + pleural_cases):
        # the first `cases` draws use the default lesion mix; the rest force pleura-touching consolidation
        syn = synthesize(hu, ref, sp, 1000 + i, {"p_empty": 0.0} if i < cases else pleural_cfg)
        pred = model.segment(syn.hu, sp)
        d = dice(pred.lesions, syn.lesions)
        inter += int((pred.lesions & syn.lesions).sum())
        tot += int(pred.lesions.sum() + syn.lesions.sum())
        pc = syn.pleural_consolidation
        cov_in += int((pc & (pred.lungs > 0)).sum())
        cov_tot += int(pc.sum())
        row = {"seed": 1000 + i, "set": "default" if i < cases else "pleural", "lesion_dice": d, "lesion_ml": float(syn.lesions.sum() * voxel_ml),
               "kinds": [s.kind for s in syn.specs],
               "lung_dice_right": dice(pred.lungs == 1, ref == 1), "lung_dice_left": dice(pred.lungs == 2, ref == 2),
               # inserted lesion the model misses: left out of its lung mask, or inside it but not called lesion
               "lesion_missed_outside_lung_ml": float((syn.lesions & (pred.lungs == 0)).sum() * voxel_ml),
               "lesion_missed_inside_lung_ml": float((syn.lesions & (pred.lungs > 0) & ~pred.lesions).sum() * voxel_ml),
               "pleural_consolidation_ml": float(pc.sum() * voxel_ml),
               "pleural_coverage": float((pc & (pred.lungs > 0)).sum() / pc.sum()) if pc.any() else None,
               "pleural_lesions": pleural_lesions(pc, pred.lungs, ref, voxel_ml),
               "pleural_miss_location": miss_location(pc, pred.lungs > 0, neighbours, voxel_ml),
               "detection": dict(zip(("lesions", "fp_pieces_ml"), lesion_detection(
                   syn.lesions, pred.lesions, syn.hu, voxel_ml,
                   p_lesion=model.probabilities(syn.hu, sp)["lesion"] if lesion_probabilities else None))),
               "scores": {"model": case_scores(syn.hu, sp, pred.lungs, pred.lesions, landmarks, cfg),
                          "reference": case_scores(syn.hu, sp, ref, syn.lesions, landmarks, cfg)}}
        if lung_thresholds and pc.any():
            prob = model.probabilities(syn.hu, sp)
            miss_cov.append(pred.lungs[pc] > 0)
            miss_pl.append(prob["lung"][pc])
            miss_pe.append(prob["lesion"][pc])
        if baseline:
            b = teacher.segment(syn.hu, sp)
            row["classical_lesion_dice"] = dice(b.lesions, syn.lesions)
            row["classical_pleural_coverage"] = float((pc & (b.lungs > 0)).sum() / pc.sum()) if pc.any() else None
            base_inter += int((b.lesions & syn.lesions).sum())
            base_tot += int(b.lesions.sum() + syn.lesions.sum())
            base_cov += int((pc & (b.lungs > 0)).sum())
        log.info("case %d: %s", i, {k: v for k, v in row.items()
                                    if k not in ("kinds", "pleural_lesions", "scores", "detection",
                                                 "pleural_miss_location")})
        per_case.append(row)
    res["synthetic_cases"] = per_case
    res["lesion_dice_pooled"] = 2.0 * inter / tot if tot else None  # no synthetic lesion: nothing measured
    res["lesion_dice_median"] = float(np.median([r["lesion_dice"] for r in per_case])) if per_case else None
    res["pleural_consolidation_coverage"] = cov_in / cov_tot if cov_tot else None
    res["pleural_coverage_ci95"] = pooled_coverage_interval(per_case)
    # the pieces that weigh (>= 5 mL), largest first: where the lung mask gives consolidation away
    res["pleural_lesions"] = sorted(({"seed": r["seed"], **p} for r in per_case for p in r["pleural_lesions"]
                                     if p["ml"] >= 5.0), key=lambda p: -p["ml"])
    # where the misses are: against the mediastinum, the chest wall or the diaphragm
    res["pleural_miss_location"] = add_miss_locations([r["pleural_miss_location"] for r in per_case])
    res["score_agreement"] = score_agreement(per_case)
    res["lesion_detection"] = detection_summary([d for r in per_case for d in r["detection"]["lesions"]],
                                                [f for r in per_case for f in r["detection"]["fp_pieces_ml"]],
                                                len(per_case))
    if lung_thresholds:
        covered = np.concatenate(miss_cov) if miss_cov else np.zeros(0, bool)
        p_lung = np.concatenate(miss_pl) if miss_pl else np.zeros(0, np.float16)
        p_les = np.concatenate(miss_pe) if miss_pe else np.zeros(0, np.float16)
        res["miss_probabilities"] = miss_probabilities(p_lung[~covered], p_les[~covered])
        res["lung_threshold_sweep"] = lung_threshold_sweep(covered, p_lung, clean_in_mask, clean_p_lung,
                                                           lung_thresholds, voxel_ml)
    les_ml = sum(r["lesion_ml"] for r in per_case)
    if les_ml > 0:  # where the missed lesion volume is, as fractions of all inserted lesion volume
        res["lesion_missed_outside_lung_frac"] = sum(r["lesion_missed_outside_lung_ml"] for r in per_case) / les_ml
        res["lesion_missed_inside_lung_frac"] = sum(r["lesion_missed_inside_lung_ml"] for r in per_case) / les_ml
    if baseline and base_tot:
        res["classical_lesion_dice_pooled"] = 2.0 * base_inter / base_tot
        res["classical_pleural_consolidation_coverage"] = base_cov / cov_tot if cov_tot else None
    res["real"] = {}
    for folder in real:
        rhu, rsp = working_grid(folder, spacing_xyz)
        s = model.segment(rhu, rsp)
        lung = int((s.lungs > 0).sum())
        # the teacher misses dense disease, so on a diseased scan part of this is right; between two models it
        # shows lung taken from the mediastinum, the liver dome or the chest wall (see the QC pictures)
        outside = int(((s.lungs > 0) & (teacher.segment(rhu, rsp).lungs == 0)).sum())
        res["real"][folder.name] = {"lung_ml": lung * float(np.prod(rsp)) / 1000,
                                    "lung_ml_outside_teacher": outside * float(np.prod(rsp)) / 1000,
                                    "lesion_pct_of_lung": 100.0 * float(s.lesions.sum()) / max(1, lung)}
        log.info("real %s: %s", folder.name, res["real"][folder.name])
    res["targets"] = {"lung_dice_per_side": ">= 0.95", "lesion_dice": ">= 0.80",
                      "pleural_consolidation_coverage": ">= 0.95", "fp_lesion_pct_of_lung": "<= 1.0"}
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = Path(os.environ.get("CTSCORE_TEST_DATA") or REPO.parent / "shared" / "data") / "chest"  # as the tests
    ap.add_argument("--series", default=str(data / "normal001"), help="held-out clean background (DICOM folder)")
    ap.add_argument("--weights", default=None, help="weights folder (default: the shipped weights)")
    ap.add_argument("--cases", type=int, default=6, help="number of synthetic insertions")
    ap.add_argument("--pleural-cases", type=int, default=2,
                    help="extra insertions of pleura-touching consolidation (for the coverage metric)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--spacing", type=float, nargs=3, default=[1.5, 1.5, 1.5], help="working grid x y z (mm)")
    ap.add_argument("--real", nargs="*", default=[], help="names under ../shared/data/chest or folders")
    ap.add_argument("--baseline", action="store_true", help="also score the classical segmenter")
    ap.add_argument("--no-flip-tta", action="store_true",
                    help="one network pass (no averaging with the left-right mirror image)")
    ap.add_argument("--scale-tta", type=float, default=0.15,
                    help="zoom of the scale test-time augmentation (0: one zoom; default as configs/default.yaml)")
    ap.add_argument("--lesion-threshold", type=float, default=None,
                    help="lesion probability threshold (default: the weights' model.yaml, as the pipeline)")
    ap.add_argument("--lung-thresholds", type=float, nargs="+", default=None, metavar="T",
                    help="also report the probabilities where the lung mask misses pleural consolidation and, per "
                         "T, coverage and false lung of a lung threshold T (one more network pass per case)")
    ap.add_argument("--lesion-probabilities", action="store_true",
                    help="also report, per inserted lesion, the 90th percentile of the model's lesion probability "
                         "over it (one more network pass per case)")
    ap.add_argument("--body-margin-mm", type=float, default=None,
                    help="air around the body in the network's box (default: the segmenter's, 5 mm; the model "
                         "card's 'Inference box' table)")
    ap.add_argument("--no-apex-soft-tissue", action="store_true",
                    help="keep the airless tissue beside an aerated apex in the lung mask (the segmenter's "
                         "segmentation.monai.trim_apex_soft_tissue: false; the trim of airless slices above the apex "
                         "still runs, with its 0.14.0 exception)")
    ap.add_argument("--json", default=None, help="write the metrics here")
    args = ap.parse_args(argv)
    if args.cases < 0 or args.pleural_cases < 0:
        ap.error("--cases and --pleural-cases must be 0 or more")
    if not all(v > 0 for v in args.spacing):
        ap.error(f"--spacing must be three positive sizes in mm, got {args.spacing}")
    # every input is checked now, not when the evaluation reaches it (a misspelt --real name failed after the
    # synthetic cases, minutes to hours in, with a traceback and nothing written)
    if not Path(args.series).is_dir():
        ap.error(f"--series {args.series}: no such folder")
    real = [Path(r) if Path(r).exists() else data / r for r in args.real]
    missing = [r for r, path in zip(args.real, real) if not path.is_dir()]
    if missing:
        ap.error(f"--real: no such folder, as given or under {data}: {', '.join(missing)}")
    if args.json and (Path(args.json).is_dir() or not Path(args.json).resolve().parent.is_dir()):
        ap.error(f"--json {args.json}: give a file in an existing folder")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from pipeline.errors import CTScoreError

    try:
        res = evaluate(Path(args.series), Path(args.weights) if args.weights else None, args.cases, args.device,
                       args.spacing, real, args.baseline, args.pleural_cases, flip_tta=not args.no_flip_tta,
                       scale_tta=args.scale_tta, lesion_threshold=args.lesion_threshold,
                       lung_thresholds=args.lung_thresholds, lesion_probabilities=args.lesion_probabilities,
                       body_margin_mm=args.body_margin_mm,
                       trim_apex_soft_tissue=not args.no_apex_soft_tissue)
    except CTScoreError as exc:  # weights that do not load, --device cuda without CUDA, an unreadable series
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in res.items() if k not in ("synthetic_cases",)}
    print(json.dumps(summary, indent=1))
    if args.json:
        from pipeline.outputs import atomic_write_json

        atomic_write_json(Path(args.json), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
