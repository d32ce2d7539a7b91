"""What a field of view that cuts a lung does to the masks, the scores and the QC flags.

Loads one series, scores it as it is and with everything outside a circular field of view replaced by padding
(air, marked in the padding mask, as the loader leaves a real reconstruction's outside), and prints lung and
lesion volumes, the six-zone total and the flags of both. The circle's radius is a fraction of half the image
width and its centre is shifted towards the patient's left by a fraction of the width, so that it cuts the right
lung (``--radius 0.75 --shift 0.12``, the default, cuts normal001's right lung on most slices).

    python scripts/fov_truncation.py ../shared/data/chest/normal001 [--segmenter monai|classical] [--radius R]
        [--shift S] [--fill-hu HU]

``--fill-hu 0`` fills the outside with water instead of air (what the segmenters would see if the padding were
shown to them as tissue): an experiment, not what the pipeline does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("series", help="folder of one DICOM series")
    ap.add_argument("--segmenter", default="monai", choices=["monai", "classical"])
    ap.add_argument("--radius", type=float, default=0.75, help="FOV radius, fraction of half the image width")
    ap.add_argument("--shift", type=float, default=0.12, help="FOV centre shift to the patient's left, "
                    "fraction of the image width")
    ap.add_argument("--fill-hu", type=float, default=-1000.0, help="HU written outside the field of view "
                    "(default -1000, as the loader writes padding)")
    args = ap.parse_args(argv)
    if not args.radius > 0:
        ap.error(f"--radius must be > 0 (a fraction of half the image width), got {args.radius}")

    import SimpleITK as sitk

    from pipeline.config import load_config
    from pipeline.discovery import discover, select_series
    from pipeline.errors import CTScoreError
    from pipeline.loading import load_series
    from pipeline.resample import to_lps
    from pipeline.run import analyse_volume
    from segmentation.factory import build_segmenter

    cfg = load_config(extra={"segmentation": {"method": args.segmenter}})
    try:  # the series the pipeline would pick (not every file: a folder may hold other series or non-DICOM files)
        chosen = select_series(discover(args.series), cfg=cfg)
        if not chosen:
            print(f"error: no eligible series under {args.series}", file=sys.stderr)
            return 2
        vol = load_series([str(f) for f in chosen[0].files], cfg)
    except CTScoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    image = to_lps(vol.image)  # array x grows towards the patient's left
    hu = sitk.GetArrayFromImage(image)
    nz, ny, nx = hu.shape
    yy, xx = np.mgrid[:ny, :nx]
    outside = np.hypot(yy - (ny - 1) / 2, xx - (nx - 1) / 2 - args.shift * nx) > args.radius * nx / 2
    loader_pad = None if vol.padding_mask is None else to_lps(vol.padding_mask)
    pad = np.broadcast_to(outside, hu.shape)
    if loader_pad is not None:  # the reconstruction's own outside stays padding
        pad = pad | (sitk.GetArrayFromImage(loader_pad) > 0)
    cut = sitk.GetImageFromArray(np.where(pad, args.fill_hu, hu).astype(np.float32))
    cut.CopyInformation(image)
    padding = sitk.GetImageFromArray(pad.astype(np.uint8))
    padding.CopyInformation(image)

    segmenter = build_segmenter(cfg)
    print(f"{args.series}: {args.segmenter}, field of view radius {args.radius} x half width, centre shifted "
          f"{args.shift} x width to the left; {100 * outside.mean():.0f} % of each slice outside, filled with "
          f"{args.fill_hu:g} HU")
    for name, img, pad_img in (("whole", image, loader_pad), ("cut", cut, padding)):  # as the pipeline does
        res = analyse_volume(img, cfg, segmenter, padding=pad_img)
        row = res["row"]
        print(f"  {name:5s} lung right / left {row['lung_volume_ml_right']:7.0f} / {row['lung_volume_ml_left']:7.0f} "
              f"mL, lesion {row['lesion_volume_ml']:6.1f} mL, six-zone {row['six_zone_total']}, "
              f"flags {[f for f in res['flags'] if not f.startswith('LANDMARK_ESTIMATED')]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
