"""Does the anatomy agree with the header's orientation? A QC flag, never a change of the scores.

A prone scan written with a supine header (the pixels rotated 180 degrees in plane, or flipped front to back, while
PatientPosition stays HFS with the usual ImageOrientationPatient) reaches the pipeline in a wrong LPS frame: the
lungs' sides are swapped, the liver and spleen domes and the back muscles are taken as lesion (about 650 mL on a
normal scan, an anatomy audit), and no other check sees it. Whatever the patient's position on the table, a series
whose header is right has, in LPS (``[z, y, x]``, y growing to the patient's posterior), the vertebral column
posterior to the lungs: the spine cannot lie in front of them.

Measured on the working grid (:func:`measure`, recorded in result.json as ``orientation_check``), flagged by
:func:`flags_for`:

- ``ORIENTATION_SUSPECT:spine_anterior``: the bone (above :data:`BONE_HU`, inside the body) of a midline band
  (:data:`MIDLINE_HALF_WIDTH_MM` either side of the body's median x), over the lungs' z range, lies (median y)
  more than :data:`SPINE_ANTERIOR_MM` anterior to the lungs' centre (mean y of the aerated lung mask). The sternum
  is bone of that band too, but the vertebral bodies and arches outweigh it several times.

``python scripts/orientation_margins.py SERIES...`` prints the measure of each series as recorded and with its pixels
flipped front to back and rotated 180 degrees under the same header (the figures of :data:`SPINE_ANTERIOR_MM`).

A few numpy reductions on the working grid with the body mask the pipeline already made: 10-40 ms a series
(ricord_covid_419639, 512 x 512 x 248: 17 ms, against 6.6 s for the classical segmentation).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: HU above which a voxel inside the body is counted as bone: cortical bone (the vertebrae's shell and arches reach
#: well above it), not cancellous bone (150-400 HU), so that contrast-filled blood (CT angiography, arterial phase:
#: 250-500 HU in the heart and great vessels, anterior in the midline band) is not taken for spine: at 200 HU,
#: normal001's mediastinum set to 350 HU moved the measure from +36 to -18 mm (flagged); at 600 HU it is unmoved.
BONE_HU = 600.0
#: Half width (mm) of the midline band searched for the spine, either side of the body's median x
#: (a vertebral body is about 40 mm wide; the spinous processes lie in the midline).
MIDLINE_HALF_WIDTH_MM = 20.0
#: Least bone (mL) in the band for a measure (a scan of the lung apices only, a phantom without bone: none).
MIN_BONE_ML = 2.0
#: The lungs' centre is that of their aerated voxels (below this HU): tissue a segmenter took as lung in a
#: wrongly oriented scan (the liver and spleen domes, the back muscles: 1100 to 1600 mL with the network on the
#: naive prone copies of normal001) would otherwise pull the centre towards the spine.
AERATED_HU = -500.0
#: Least aerated lung (mL) for a measure.
MIN_LUNG_ML = 50.0
#: The spine lying more than this many mm anterior to the lungs' centre is flagged (0: anterior at all). Series
#: with right headers (``spine_offset_mm``, classical lung masks): the six real chests of ../shared/data/chest +42
#: to +89 (bone 12-100 mL), the audit's copies of normal001 correctly labelled prone, decubitus and feet first +51,
#: shrunk to a child's size +31 (4.5 mL of bone); the naive prone copies (supine header) -51, with the network's
#: lung masks -32 and -42. The measure changes sign with the front-back axis.
SPINE_ANTERIOR_MM = 0.0


def measure(hu: np.ndarray, lungs: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float]
            ) -> dict[str, Any]:
    """The orientation measures of an LPS ``[z, y, x]`` series on one grid (``spacing`` (z, y, x) mm):
    ``spine_offset_mm``, the median y of the midline bone minus the lungs' mean y (positive: the spine lies
    posterior to the lungs, as it must), and ``spine_bone_ml``, the bone it was measured on; NaN (and 0) where there
    is too little lung or bone to say."""
    sz, sy, sx = (float(s) for s in spacing)
    voxel_ml = sz * sy * sx / 1000.0
    out: dict[str, Any] = {"spine_offset_mm": math.nan, "spine_bone_ml": 0.0}
    lung = (lungs > 0) & (hu < AERATED_HU)
    per_slice = np.count_nonzero(lung, axis=(1, 2))
    if per_slice.sum() * voxel_ml < MIN_LUNG_ML:
        return out
    zs = np.flatnonzero(per_slice)
    z0, z1 = int(zs[0]), int(zs[-1]) + 1
    lung_z = lung[z0:z1]
    ys = np.count_nonzero(lung_z, axis=(0, 2))
    lung_y = float(np.dot(np.arange(ys.size), ys) / ys.sum())
    body_x = np.count_nonzero(body[z0:z1], axis=(0, 1))
    if not body_x.any():
        return out
    x_mid = float(np.searchsorted(np.cumsum(body_x), body_x.sum() / 2.0))  # the body's median x: its midline
    half = MIDLINE_HALF_WIDTH_MM / sx
    xa, xb = max(0, int(math.floor(x_mid - half))), min(lung.shape[2], int(math.ceil(x_mid + half)) + 1)
    bone = (hu[z0:z1, :, xa:xb] > BONE_HU) & body[z0:z1, :, xa:xb]
    by = np.count_nonzero(bone, axis=(0, 2))
    n = int(by.sum())
    out["spine_bone_ml"] = round(n * voxel_ml, 1)
    if n * voxel_ml < MIN_BONE_ML:
        return out
    spine_y = float(np.searchsorted(np.cumsum(by), n / 2.0))
    out["spine_offset_mm"] = round((spine_y - lung_y) * sy, 1)
    return out


def flags_for(m: dict[str, Any]) -> list[str]:
    """The QC flags (module docstring) of the measures of :func:`measure`."""
    off = m.get("spine_offset_mm", math.nan)
    if math.isfinite(off) and off < -SPINE_ANTERIOR_MM:
        return ["ORIENTATION_SUSPECT:spine_anterior"]
    return []
