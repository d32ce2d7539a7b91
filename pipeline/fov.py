"""Lungs cut by the reconstructed field of view (FOV).

A reconstruction whose field of view is smaller than the chest (a large patient, a targeted reconstruction, a
scan FOV that cuts the arms and the chest wall) shows only part of a lung: its volume, its lesion volume and every
score computed from them are of the visible part. The loader marks the pixels outside the field of view as
padding (``CTVolume.padding_mask``); a lung mask that runs along that edge, or along the image border, is cut.
Such scans get the QC flag ``LUNG_CUT_BY_FOV:<percent of the lung-bearing slices>``: review them, or leave them
out of volume-based analyses.

The check looks at the lung mask because the lung is what the scores measure: a body cut by the FOV away from
the lungs (the arms, the table) does not change them. The segmenters may leave out the cut part near the edge
(the network sees air beyond it), so the check allows a few millimetres between the mask and the edge.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: A slice counts as cut when the lung mask lies along the FOV edge for at least this length.
MIN_CONTACT_MM = 10.0
#: How far from the FOV edge (in-plane) the lung mask may stop and still count as reaching it.
EDGE_TOLERANCE_MM = 3.0
#: A scan is flagged when this share of its lung-bearing slices is cut (one slice may be a corner of the apex).
MIN_CUT_SHARE = 0.02


def _distance_to_outside(outside: np.ndarray, sampling: tuple[float, float]) -> np.ndarray:
    """In-plane distance (mm) of every pixel of one slice to the nearest pixel outside the field of view (the
    padding, or beyond the image border); 0 on the padding."""
    framed = np.pad(outside, 1, constant_values=True)  # the image border is an edge too
    return ndimage.distance_transform_edt(~framed, sampling=sampling)[1:-1, 1:-1]


def lung_fov_contact(lungs: np.ndarray, spacing_zyx: Sequence[float], padding: np.ndarray | None = None,
                     tolerance_mm: float = EDGE_TOLERANCE_MM) -> dict[str, float]:
    """How far the lung mask runs along the field of view's edge.

    On every slice, the contact is the length of the edge (its innermost ring of pixels) that has lung within
    ``tolerance_mm``. Returns ``cut_slices`` (slices with a contact >= MIN_CONTACT_MM), ``lung_slices``,
    ``cut_share`` (their ratio) and ``max_contact_mm`` (the longest contact on one slice)."""
    lung = np.asarray(lungs) > 0
    has_lung = lung.any(axis=(1, 2))
    lung_slices = int(has_lung.sum())
    sy, sx = float(spacing_zyx[1]), float(spacing_zyx[2])
    px = max(sy, sx)
    reach = (2 * int(np.ceil(tolerance_mm / sy)) + 1, 2 * int(np.ceil(tolerance_mm / sx)) + 1)
    no_padding = np.zeros(lung.shape[1:], bool)
    cache: dict[bytes, np.ndarray] = {}  # slices usually share one padding pattern
    contact_mm = np.zeros(lung.shape[0])
    for k in np.flatnonzero(has_lung):
        outside = no_padding if padding is None else np.asarray(padding[k], bool)
        key = np.packbits(outside).tobytes()
        dist = cache.get(key)
        if dist is None:
            dist = _distance_to_outside(outside, (sy, sx))
            if len(cache) < 16:
                cache[key] = dist
        near = lung[k] & (dist <= tolerance_mm + px)  # lung close to the edge
        if not near.any():
            continue
        ring = (dist > 0) & (dist <= px + 1e-3)  # the first pixels inside the field of view
        contact_mm[k] = (ring & ndimage.maximum_filter(near, size=reach)).sum() * 0.5 * (sy + sx)
    cut = contact_mm >= MIN_CONTACT_MM
    return {"cut_slices": int(cut.sum()), "lung_slices": lung_slices,
            "cut_share": float(cut.sum()) / lung_slices if lung_slices else 0.0,
            "max_contact_mm": float(contact_mm.max()) if contact_mm.size else 0.0}


def fov_flags(lungs: np.ndarray, spacing_zyx: Sequence[float], padding: np.ndarray | None = None) -> list[str]:
    """``["LUNG_CUT_BY_FOV:<percent>"]`` when the lungs are cut by the field of view on enough slices, else []."""
    contact = lung_fov_contact(lungs, spacing_zyx, padding)
    if contact["cut_slices"] and contact["cut_share"] >= MIN_CUT_SHARE:
        return [f"LUNG_CUT_BY_FOV:{100.0 * contact['cut_share']:.0f}"]
    return []
