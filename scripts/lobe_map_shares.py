#!/usr/bin/env python
"""How much of each lung a lobe map leaves in no lobe of its side, for maps made in ways a user's maps differ from the
scored lung mask: the figures behind ``scoring.quantify.LOBES_MAX_UNCOVERED_PCT`` (QC flag ``LOBES_PARTIAL``: more
than 5 % of a lung in no lobe refuses the map; less is given the nearest lobe, ``complete_lobe_map``).

    ctscore run sample_dicoms -o A --segmenter classical
    ctscore run sample_dicoms -o B                               (the MONAI network)
    python scripts/lobe_map_shares.py A/scan-*/lungs.nii.gz B/scan-*/lungs.nii.gz

The first mask is the one scored; lobes are cut from a mask by height (right lung in thirds, left in halves). The
maps: made on the scored mask itself, on the second mask (another segmenter's border), at half the resolution
(nearest neighbour down and up), and shifted by a voxel, 5 mm sideways, 10 and 25 mm in z. On the sample
(2026-12-07): 0 %; 4.5 % right / 2.4 % left; 4.9 / 5.3 %; 1.5-3.5 % a voxel; 6.3-6.9 % at 5 mm; 5.9-6.3 % at 10 mm;
14.4-15.3 % at 25 mm.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from segmentation.base import LEFT_LUNG, RIGHT_LUNG  # noqa: E402

SIDE_LOBES = ((RIGHT_LUNG, (1, 2, 3)), (LEFT_LUNG, (4, 5)))


def lobes_by_height(mask: np.ndarray) -> np.ndarray:
    """A lobe map (ctscore codes) cut from a lung mask ``[z, y, x]`` (z towards the head) by height."""
    out = np.zeros(mask.shape, np.uint8)
    for side, codes in SIDE_LOBES:
        ks = np.nonzero((mask == side).any(axis=(1, 2)))[0]
        if not ks.size:
            continue
        cuts = np.linspace(ks.min(), ks.max() + 1, len(codes) + 1).astype(int)
        for code, a, b in zip(codes[::-1], cuts[:-1], cuts[1:]):  # lowest slices: the lower lobe
            out[a:b][mask[a:b] == side] = code
    return out


def uncovered_pct(lungs: np.ndarray, lobes: np.ndarray) -> tuple[float, float]:
    """(right, left): % of each lung of ``lungs`` in no lobe of its side in ``lobes``."""
    out = []
    for side, codes in SIDE_LOBES:
        m = lungs == side
        n = np.count_nonzero(m)
        out.append(100.0 * np.count_nonzero(m & ~np.isin(lobes, codes)) / n if n else float("nan"))
    return out[0], out[1]


def maps(scored: np.ndarray, other: np.ndarray, spacing_xyz: tuple[float, float, float]) -> dict[str, np.ndarray]:
    base = lobes_by_height(scored)
    small = ndi.zoom(base, 0.5, order=0)
    half = ndi.zoom(small, np.array(base.shape) / np.array(small.shape), order=0)[
        :base.shape[0], :base.shape[1], :base.shape[2]]

    def shifted(dz: int = 0, dy: int = 0, dx: int = 0) -> np.ndarray:
        return ndi.shift(base, (dz, dy, dx), order=0)

    return {"on the scored mask": base, "on the other mask": lobes_by_height(other), "half resolution": half,
            "shifted 1 voxel x": shifted(dx=1), "shifted 1 voxel y": shifted(dy=1), "shifted 1 voxel z": shifted(dz=1),
            "shifted 5 mm x": shifted(dx=round(5 / spacing_xyz[0])),
            "shifted 10 mm z": shifted(dz=round(10 / spacing_xyz[2])),
            "shifted 25 mm z": shifted(dz=round(25 / spacing_xyz[2]))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scored", type=Path, help="the scored lung mask (lungs.nii.gz of a run)")
    ap.add_argument("other", type=Path, help="another lung mask of the same CT (another segmenter's lungs.nii.gz)")
    args = ap.parse_args(argv)
    img = sitk.ReadImage(str(args.scored))
    scored = sitk.GetArrayFromImage(img)
    other = sitk.GetArrayFromImage(sitk.ReadImage(str(args.other)))
    if other.shape != scored.shape:
        ap.error(f"the masks differ in shape: {scored.shape} and {other.shape} (not the same CT grid)")
    print(f"{'lobe map':24s} {'right %':>8s} {'left %':>8s}")
    for name, lobes in maps(scored, other, img.GetSpacing()).items():
        right, left = uncovered_pct(scored, lobes)
        print(f"{name:24s} {right:8.1f} {left:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
