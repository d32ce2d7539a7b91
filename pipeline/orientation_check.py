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

Not checked (``spine_offset_mm`` NaN) where the spine may lie outside the field of view: the band's body reaching the
back of the field (the image's last row, or the loader's padding) on :data:`BACK_CUT_SHARE` of the lungs' slices. A
small field of view (the audit's phantom reconstructed 180 x 198 mm, 30 mm off centre) cut the back and both sides
of the body: the band, centred on the cut body, missed the spine, and its bone (4.9 mL, ribs and sternum, against
67.1 mL at the full field) lay 91 mm in front of the lungs: ``spine_anterior`` on a supine scan with a right header.

``python scripts/orientation_margins.py SERIES...`` prints the measure of each series as recorded and with its pixels
flipped front to back and rotated 180 degrees under the same header (the figures of :data:`SPINE_ANTERIOR_MM`).

A few numpy reductions on the working grid with the body mask the pipeline already made: 10-40 ms a series
(ricord_covid_419639, 512 x 512 x 248: 17 ms, against 6.6 s for the classical segmentation).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: HU above which a voxel inside the body is counted as bone: cortical bone (the vertebrae's shell and arches reach
#: well above it), not cancellous bone (150-400 HU), so that contrast-filled blood (CT angiography, arterial phase:
#: 250-500 HU in the heart and great vessels, anterior in the midline band) is not taken for spine: at 200 HU,
#: normal001's mediastinum set to 350 HU moved the measure from +36 to -18 mm (flagged); at 600 HU it is unmoved.
BONE_HU = 600.0
#: Half width (mm) of the midline band searched for the spine, either side of the body's median x
#: (a vertebral body is about 40 mm wide; the spinous processes lie in the midline).
MIDLINE_HALF_WIDTH_MM = 20.0
#: Least bone (mL) in the band for a measure (a scan of the lung apices only, a phantom without bone: none). Bone
#: volume alone cannot tell a spine outside the field: the small-field phantom's band held 4.9 mL, normal001 shrunk
#: to a child's size 4.5 mL (its spine, +31 mm, right); the six real chests 11-100 mL.
MIN_BONE_ML = 2.0
#: The band's body within this many mm of the back of the field of view (the image's last row, or padding behind it)
#: reaches the back edge on that slice.
BACK_EDGE_MM = 3.0
#: Share of the lungs' slices on which the band's body reaches the back edge from which the spine may lie outside
#: the field and is not measured. The table, taken into the body where a cushion joins them, reaches it too: the six
#: real chests 0 to 0.41 (lung_pet_ct_dx_A0002 0.41, ricord_covid_419639 0.18, the other four 0); the small-field
#: phantom 1.0.
BACK_CUT_SHARE = 0.75
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


def measure(hu: np.ndarray, lungs: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float],
            padding: np.ndarray | None = None) -> dict[str, Any]:
    """The orientation measures of an LPS ``[z, y, x]`` series on one grid (``spacing`` (z, y, x) mm):
    ``spine_offset_mm``, the median y of the midline bone minus the lungs' mean y (positive: the spine lies
    posterior to the lungs, as it must), and ``spine_bone_ml``, the bone it was measured on; NaN (and 0) where there
    is too little lung or bone to say, NaN too where the spine may lie outside the field of view (module docstring;
    ``padding``, the loader's mask of the pixels outside the field on this grid, when given)."""
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
    band = body[z0:z1, :, xa:xb]
    if back_cut_share(band, None if padding is None else padding[z0:z1, :, xa:xb], sy) >= BACK_CUT_SHARE:
        log.info("the body reaches the back of the field of view: the spine may lie outside it, orientation not "
                 "checked")
        out["spine_bone_ml"] = round(float(np.count_nonzero((hu[z0:z1, :, xa:xb] > BONE_HU) & band)) * voxel_ml, 1)
        return out
    bone = (hu[z0:z1, :, xa:xb] > BONE_HU) & band
    by = np.count_nonzero(bone, axis=(0, 2))
    n = int(by.sum())
    out["spine_bone_ml"] = round(n * voxel_ml, 1)
    if n * voxel_ml < MIN_BONE_ML:
        return out
    spine_y = float(np.searchsorted(np.cumsum(by), n / 2.0))
    out["spine_offset_mm"] = round((spine_y - lung_y) * sy, 1)
    return out


def back_cut_share(band: np.ndarray, padding: np.ndarray | None, sy: float) -> float:
    """The share of the slices of ``band`` (a body mask ``[z, y, x]``) holding body on which it reaches within
    :data:`BACK_EDGE_MM` of the back of the field of view: the image's last row, or ``padding`` (same shape) behind it."""
    n = max(1, int(round(BACK_EDGE_MM / sy)))
    outside = np.ones((band.shape[0], band.shape[1] + n, band.shape[2]), bool)  # the rows beyond the image: outside
    outside[:, :band.shape[1]] = False if padding is None else padding
    near = np.zeros(band.shape, bool)
    for step in range(1, n + 1):
        near |= outside[:, step:step + band.shape[1]]
    slices = band.any(axis=(1, 2))
    if not slices.any():
        return 0.0
    return float(np.count_nonzero((band & near).any(axis=(1, 2)))) / float(np.count_nonzero(slices))


def flags_for(m: dict[str, Any]) -> list[str]:
    """The QC flags (module docstring) of the measures of :func:`measure`."""
    off = m.get("spine_offset_mm", math.nan)
    if math.isfinite(off) and off < -SPINE_ANTERIOR_MM:
        return ["ORIENTATION_SUSPECT:spine_anterior"]
    return []
