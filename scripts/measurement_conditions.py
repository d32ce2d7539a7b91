#!/usr/bin/env python
"""The measures behind the measurement-condition QC flags on real series: ``noise_hu`` (NOISY), ``mediastinum_hu``
(CONTRAST_SUSPECTED), ``laa950_pct`` (LOW_ATTENUATION), ``metal_ml`` (METAL), ``airway_ml`` (AIRWAY_NOT_FOUND),
``slice_jump_ratio`` (MOTION_SUSPECT), ``dependent_gradient_hu`` (DEPENDENT_DENSITY) and ``pneumothorax_ml_right`` /
``_left`` with ``airway_air_hu``, the trachea's air that sets their cut (PNEUMOTHORAX_SUSPECT), as
``ctscore run`` records them in result.json's ``hu_check``, with the flags they give; ``--noise SD`` first adds CT-like
noise of that standard deviation (HU; Gaussian, smoothed in-plane with sigma 1 pixel, rescaled to SD, pixels outside
the field of view left as they are), as the figures in pipeline/hu_checks.py's comments were measured.

    python scripts/measurement_conditions.py ../shared/data/chest/*
    python scripts/measurement_conditions.py ../shared/data/chest/normal001 --noise 0 40 80
    python scripts/measurement_conditions.py sample_dicoms

Each source is scored as ``ctscore run`` does (``pipeline.run.analyse_volume``) with the classical segmenter (the
measures need the lung and body masks only; the network gives the same within a few HU). A DICOM folder is scored
through the loader's selection (every eligible stack); an image file (NIfTI, NRRD) is read as it is.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MEASURES = ("noise_hu", "mediastinum_hu", "laa950_pct", "metal_ml", "airway_ml", "slice_jump_ratio",
            "dependent_gradient_hu", "pneumothorax_ml_right", "pneumothorax_ml_left", "airway_air_hu")


def volumes(source: Path, cfg: dict):
    """(name, SimpleITK image, padding mask or None) of each eligible stack of a DICOM folder, or of one image file."""
    import SimpleITK as sitk

    from pipeline.discovery import discover, select_series
    from pipeline.loading import load_series

    if source.is_file():
        yield source.name, sitk.ReadImage(str(source), sitk.sitkFloat32), None
        return
    for cand in select_series(discover(source, cfg), cfg, all_eligible=True):
        vol = load_series(cand.files, cfg)
        yield f"{source.name}/{cand.stack_id[-8:]}", vol.image, vol.padding_mask


def with_noise(image, padding, sd: float, seed: int = 0):
    """``image`` with CT-like noise of standard deviation ``sd`` HU added (unchanged for 0)."""
    import numpy as np
    import SimpleITK as sitk
    from scipy import ndimage as ndi

    if sd <= 0:
        return image
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    n = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal(hu.shape).astype(np.float32), (0, 1.0, 1.0))
    noisy = hu + n * (sd / float(n.std()))
    if padding is not None:
        noisy = np.where(sitk.GetArrayFromImage(padding) > 0, hu, noisy)
    out = sitk.GetImageFromArray(noisy.astype(np.float32))
    out.CopyInformation(image)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="+", type=Path, help="DICOM series folders or image files")
    ap.add_argument("--noise", nargs="+", type=float, default=[0.0], metavar="SD",
                    help="CT-like noise to add first (HU standard deviation; default 0: as recorded)")
    args = ap.parse_args(argv)

    from pipeline.config import resolve_config
    from pipeline.hu_checks import flags_for
    from pipeline.run import AIRWAY_MIN_ML, analyse_volume
    from segmentation.factory import build_segmenter

    cfg = resolve_config({"segmentation": {"method": "classical"}})
    segmenter = build_segmenter(cfg)
    print(f"{'series':<34} {'noise+':>6} " + " ".join(f"{m:>14}" for m in MEASURES) + "  flags")
    for source in args.sources:
        for name, image, padding in volumes(source, cfg):
            for sd in args.noise:
                res = analyse_volume(with_noise(image, padding, sd), cfg, segmenter, padding=padding)
                m = res["hu_check"]
                flags = flags_for(m) + ([f"AIRWAY_NOT_FOUND:{m['airway_ml']:.1f}"]
                                        if m["airway_ml"] < AIRWAY_MIN_ML else [])
                values = " ".join(f"{m[k]:>14.2f}" if math.isfinite(m[k]) else f"{'nan':>14}" for k in MEASURES)
                print(f"{name:<34} {sd:>6g} {values}  {';'.join(flags) or '-'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
