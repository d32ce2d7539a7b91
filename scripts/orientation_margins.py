#!/usr/bin/env python
"""The measure behind ORIENTATION_SUSPECT (pipeline/orientation_check.py) on real series, as recorded and as a prone
scan with a supine header would give it: prints ``spine_offset_mm`` (the cortical spine's median y minus the aerated
lungs' mean y; positive: the spine behind the lungs, as a right header must give) for each series, and for the same
pixels flipped front to back and rotated 180 degrees in plane under the same header (both must be flagged).

    python scripts/orientation_margins.py ../shared/data/chest/normal001 ../shared/data/chest/cap001
    python scripts/orientation_margins.py sample_dicoms --no-flips

Lungs from the classical segmenter on the working grid, less lung outside the body, as ``ctscore run`` does
(``pipeline.run.analyse_volume``). A DICOM folder is scored through the loader's selection (every eligible stack);
an image file (NIfTI, NRRD) is read as it is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def volumes(source: Path, cfg: dict):
    """(name, SimpleITK image) of each eligible stack of a DICOM folder, or of one image file."""
    import SimpleITK as sitk

    from pipeline.discovery import discover, select_series
    from pipeline.loading import load_series

    if source.is_file():
        yield source.name, sitk.ReadImage(str(source), sitk.sitkFloat32)
        return
    for cand in select_series(discover(source, cfg), cfg, all_eligible=True):
        yield f"{source.name}/{cand.stack_id[-8:]}", load_series(cand.files, cfg).image


def measures(image, cfg: dict, segmenter, flips: bool) -> list[tuple[str, dict]]:
    """The orientation measures of ``image`` as recorded, and (``flips``) of its pixels flipped front to back and
    rotated 180 degrees in plane under the same header."""
    import numpy as np
    import SimpleITK as sitk

    from pipeline.orientation_check import measure
    from pipeline.resample import resample_to_spacing, to_lps
    from segmentation.base import lung_outside_body
    from segmentation.classical import body_mask

    work = resample_to_spacing(to_lps(image), cfg["resample"]["spacing_mm"])
    hu0 = sitk.GetArrayFromImage(work)
    spacing = tuple(float(s) for s in work.GetSpacing()[::-1])
    views = {"as recorded": hu0}
    if flips:
        views["flipped front to back"] = hu0[:, ::-1, :]
        views["rotated 180 degrees"] = hu0[:, ::-1, ::-1]
    out = []
    for view, hu in views.items():
        hu = np.ascontiguousarray(hu)
        lungs = segmenter.segment(hu, spacing).lungs
        body = body_mask(hu, -500.0)
        lungs = np.where(lung_outside_body(hu, lungs, body=body), 0, lungs)
        out.append((view, measure(hu, lungs, body, spacing)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="+", type=Path, help="DICOM series folders or image files")
    ap.add_argument("--no-flips", action="store_true", help="only the series as recorded")
    args = ap.parse_args(argv)

    from pipeline.config import resolve_config
    from pipeline.orientation_check import flags_for
    from segmentation.factory import build_segmenter

    cfg = resolve_config({"segmentation": {"method": "classical"}})
    segmenter = build_segmenter(cfg)
    print(f"{'series':<34} {'view':<24} {'spine_offset_mm':>15} {'bone_ml':>8}  flag")
    for source in args.sources:
        for name, image in volumes(source, cfg):
            for view, m in measures(image, cfg, segmenter, not args.no_flips):
                flag = ";".join(flags_for(m)) or "-"
                print(f"{name:<34} {view:<24} {m['spine_offset_mm']:>15.1f} {m['spine_bone_ml']:>8.1f}  {flag}",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
