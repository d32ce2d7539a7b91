#!/usr/bin/env python
"""Did the fine-tune get better? Dice of one or more MONAI models against your own labelled held-out cases.

    python scripts/evaluate_on_labels.py heldout.yaml                                  # the shipped model
    python scripts/evaluate_on_labels.py heldout.yaml --model segmentation/weights --model my_weights \\
        --json eval.json

``heldout.yaml`` is a background list in the format ``ctscore train --backgrounds-file`` reads (the same reader,
:func:`segmentation.training.read_backgrounds_file`: DICOM folders with ``lungs.nii.gz`` / ``lesions.nii.gz`` beside
them, or image files (NIfTI, NRRD, ...) with ``lungs:`` and the values meaning ``right:`` / ``left:``, ``lesions:``
with ``lesion_values:``), read with the same code as training (:func:`segmentation.training.prepare_case`: the same
label conventions and checks, lesion voxels just outside a lung mask join that lung). List cases you did NOT train on.
Every case needs its lung labels; a case without a lesion mask gets no lesion figures (give an empty lesion mask
for a clean scan).

Each CT and its labels are brought onto the pipeline's working grid (``--spacing``, default that of
configs/default.yaml, 1.5 mm) and each model (``--model DIR``, repeatable; default the shipped
``segmentation/weights``) segments it with :class:`segmentation.monai_segmenter.MonaiSegmenter` (its test-time
augmentation and bowel-gas clean-up included), on the case as training prepares it (cropped to the body, HU clipped),
not on the whole field of view, and without the pipeline's later step that removes lung outside the body: figures
close to, not identical with, those of ``ctscore run``. Printed per model, one row per case and the median over the
cases: lung Dice right and left, lesion Dice, lesion volume model minus reference (mL) and the six-zone score (0-24)
model minus reference (zones from the reference lungs and the airway the first model's segmenter finds, the same for every
model: list the model you compare against first; ``--no-scores``
skips it); then, for each further model, its paired difference from the first one per case and the median of those.
CPU is enough (``--device cpu``, the default): a few seconds to a minute per case and model.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
log = logging.getLogger("evaluate_on_labels")

METRICS = ("lung_dice_right", "lung_dice_left", "lesion_dice", "lesion_ml_difference", "six_zone_difference")
HEADERS = ("lung R", "lung L", "lesion", "lesion dmL", "6-zone d")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def case_metrics(ref_lungs: np.ndarray, ref_lesions: np.ndarray | None, lungs: np.ndarray, lesions: np.ndarray,
                 voxel_ml: float) -> dict[str, float]:
    """Lung Dice per side (1 right, 2 left), lesion Dice and lesion volume model - reference (mL); NaN for the lesion
    figures of a case without a lesion mask."""
    out = {"lung_dice_right": dice(lungs == 1, ref_lungs == 1), "lung_dice_left": dice(lungs == 2, ref_lungs == 2),
           "lesion_ml": float(lesions.sum()) * voxel_ml}
    if ref_lesions is None:
        out.update(lesion_dice=math.nan, lesion_ml_difference=math.nan, reference_lesion_ml=math.nan)
    else:
        ref = ref_lesions > 0
        out.update(lesion_dice=dice(lesions > 0, ref), reference_lesion_ml=float(ref.sum()) * voxel_ml,
                   lesion_ml_difference=(float((lesions > 0).sum()) - float(ref.sum())) * voxel_ml)
    return out


def six_zone(hu: np.ndarray, sp: tuple[float, float, float], lungs: np.ndarray, lesions: np.ndarray,
             landmarks: dict, cfg: dict) -> float:
    """The six-zone total (0-24) of one scan on the working grid, as the pipeline scores it (NaN when a zone
    boundary could not be placed)."""
    from scoring.hu_classes import classify_lesions
    from scoring.quantify import score_scan

    classes = classify_lesions(hu, (lesions > 0) & (lungs > 0), cfg["hu_classes"])
    z_mm = np.arange(hu.shape[0]) * float(sp[0])  # index grows cranially (LPS)
    row, _, _ = score_scan(hu, lungs, classes, z_mm, float(np.prod(sp)) / 1000.0, landmarks, cfg)
    return float(row["six_zone_total"])


def median(values: list[float]) -> float:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    return float(np.median(v)) if v.size else math.nan


def read_cases(list_file: Path) -> list:
    """The backgrounds of ``list_file`` (the ``--backgrounds-file`` format); ValueError for a case without lung
    labels (nothing to measure against)."""
    from segmentation.training import read_backgrounds_file

    cases = read_backgrounds_file(list_file)
    unlabelled = [b.name for b in cases if b.lungs is None]
    if unlabelled:
        raise ValueError(f"{list_file}: case(s) {unlabelled} have no lung labels (lungs: in the list, or "
                         "lungs.nii.gz beside the DICOM files): there is nothing to measure them against")
    return cases


def evaluate(list_file: Path, models: list[str | None], device: str = "cpu",
             spacing_xyz: list[float] | None = None, scores: bool = True) -> dict[str, Any]:
    """Every model on every labelled case of ``list_file``: a JSON-able dict with ``models`` (path, model id, per
    case metrics, medians) and ``paired`` (each further model minus the first, per case and median)."""
    from pipeline.config import default_config
    from segmentation.monai_segmenter import MonaiSegmenter
    from segmentation.training import prepare_case

    cfg = default_config()
    spacing_xyz = [float(v) for v in (spacing_xyz or cfg["resample"]["spacing_mm"])]
    cases = read_cases(list_file)
    segs = [MonaiSegmenter(m, device=device) for m in models]  # every model loads before the first case
    res: dict[str, Any] = {"list": str(list_file), "spacing_xyz_mm": spacing_xyz,
                           "models": [{"model": str(m or "segmentation/weights (shipped)"), "model_id": s.model_id,
                                       "cases": []} for m, s in zip(models, segs)]}
    for bg in cases:
        # the labels read as training reads them: values mapped to 1 right / 2 left, checked against the CT, lesion
        # voxels just outside the lung mask joined to it (consolidated lung is lung), on the working grid
        case = prepare_case(bg, list(reversed(spacing_xyz)))
        hu = case["image"].astype(np.float32)
        sp = tuple(float(v) for v in case["spacing"])
        ref_lungs, ref_les = case["lungs"], case.get("lesions")
        voxel_ml = float(np.prod(sp)) / 1000.0
        landmarks = ref_score = None
        for k, seg in enumerate(segs):
            pred = seg.segment(hu, sp)
            row = {"case": bg.name, **case_metrics(ref_lungs, ref_les, pred.lungs, pred.lesions, voxel_ml),
                   "six_zone_difference": math.nan}
            if scores and ref_les is not None:
                try:
                    if landmarks is None:  # one set of zones per case: the differences are the masks' alone
                        from scoring.landmarks import detect_landmarks

                        landmarks = detect_landmarks(ref_lungs, pred.airway, np.arange(hu.shape[0]) * sp[0], sp,
                                                     hu=hu, cfg=cfg.get("landmarks"))
                        ref_score = six_zone(hu, sp, ref_lungs, ref_les, landmarks, cfg)
                    row["six_zone"] = six_zone(hu, sp, pred.lungs, pred.lesions, landmarks, cfg)
                    row["six_zone_reference"] = ref_score
                    row["six_zone_difference"] = row["six_zone"] - ref_score
                except Exception as exc:  # noqa: BLE001 - a scan too small or odd for the landmarks: no score
                    log.warning("%s: no six-zone score (%s: %s)", bg.name, type(exc).__name__, exc)
            res["models"][k]["cases"].append(row)
            log.info("%s %s: %s", res["models"][k]["model_id"], bg.name,
                     {m: round(row[m], 3) for m in METRICS if np.isfinite(row[m])})
    for m in res["models"]:
        m["median"] = {k: median([r[k] for r in m["cases"]]) for k in METRICS}
    first = res["models"][0]
    res["paired"] = []
    for m in res["models"][1:]:
        rows = [{"case": a["case"], **{k: b[k] - a[k] for k in METRICS}} for a, b in zip(first["cases"], m["cases"])]
        res["paired"].append({"model": m["model"], "minus": first["model"], "cases": rows,
                              "median": {k: median([r[k] for r in rows]) for k in METRICS}})
    return res


def _fmt(v: float, signed: bool = False) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def table(title: str, rows: list[dict], med: dict, signed: bool = False) -> str:
    """A plain-text table: one line per case, then the median."""
    width = max([len("median")] + [len(str(r["case"])) for r in rows])
    lines = [title, f"{'case':<{width}}  " + "  ".join(f"{h:>10}" for h in HEADERS)]
    for r in rows:
        lines.append(f"{r['case']:<{width}}  " + "  ".join(
            f"{_fmt(r[k], signed or k.endswith('difference')):>10}" for k in METRICS))
    lines.append(f"{'median':<{width}}  " + "  ".join(
        f"{_fmt(med[k], signed or k.endswith('difference')):>10}" for k in METRICS))
    return "\n".join(lines)


def report(res: dict) -> str:
    out = []
    for m in res["models"]:
        out.append(table(f"model {m['model']} ({m['model_id']})", m["cases"], m["median"]))
    for p in res["paired"]:
        out.append(table(f"paired difference: {p['model']} minus {p['minus']} (positive Dice = better; volume and "
                         f"score differences: closer to 0 is better)", p["cases"], p["median"], signed=True))
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("list", help="YAML list of labelled held-out cases (the ctscore train --backgrounds-file format)")
    ap.add_argument("--model", action="append", default=None, metavar="DIR",
                    help="a model folder (as ctscore run --model takes); repeat to compare (default: the shipped "
                         "segmentation/weights); the paired differences are against the first")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default %(default)s)")
    ap.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                    help="working grid in mm (default: configs/default.yaml resample.spacing_mm, as ctscore run)")
    ap.add_argument("--no-scores", action="store_true", help="skip the six-zone score difference")
    ap.add_argument("--json", default=None, help="also write every figure here")
    args = ap.parse_args(argv)
    if args.spacing is not None and not all(v > 0 for v in args.spacing):
        ap.error(f"--spacing must be three positive sizes in mm, got {args.spacing}")
    if not Path(args.list).is_file():
        ap.error(f"{args.list}: no such file")
    if args.json and (Path(args.json).is_dir() or not Path(args.json).resolve().parent.is_dir()):
        ap.error(f"--json {args.json}: give a file in an existing folder")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from pipeline.errors import CTScoreError

    try:
        res = evaluate(Path(args.list), args.model or [None], args.device, args.spacing, not args.no_scores)
    except (CTScoreError, ValueError) as exc:  # a model that does not load, a bad list or label file
        print(f"evaluate_on_labels: error: {exc}", file=sys.stderr)
        return 2
    print(report(res))
    if args.json:
        from pipeline.outputs import atomic_write_json

        atomic_write_json(Path(args.json), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
