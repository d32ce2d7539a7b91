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


def _edge(outside: np.ndarray, sampling: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The edge of the field of view on one slice: its innermost ring of pixels (inside, with a 4-neighbour
    outside or beyond the image border) and the length (mm) of edge each stands for: the pixel's width along
    the edge (``sx`` on a row edge, ``sy`` on a column edge, the diagonal where it has both)."""
    sy, sx = sampling
    framed = np.pad(outside, 1, constant_values=True)
    out_y = (framed[:-2, 1:-1] | framed[2:, 1:-1]) & ~outside
    out_x = (framed[1:-1, :-2] | framed[1:-1, 2:]) & ~outside
    length = np.where(out_y & out_x, np.hypot(sy, sx), np.where(out_y, sx, np.where(out_x, sy, 0.0)))
    return out_y | out_x, length


def lung_fov_contact(lungs: np.ndarray, spacing_zyx: Sequence[float], padding: np.ndarray | None = None,
                     tolerance_mm: float = EDGE_TOLERANCE_MM) -> dict[str, float]:
    """How far the lung mask runs along the field of view's edge.

    On every slice, the contact is the length of the edge (its innermost ring of pixels) that lung within
    ``tolerance_mm`` of it faces: every such lung pixel marks its nearest edge pixel, so that a lung touching the
    edge over 4 mm counts 4 mm, not 4 mm plus the tolerance at either end. Returns ``cut_slices`` (slices with a
    contact >= MIN_CONTACT_MM), ``lung_slices``, ``cut_share`` (their ratio) and ``max_contact_mm`` (the longest
    contact on one slice). ``padding``, when given, must be on the lung mask's grid (same shape, same orientation)."""
    lung = np.asarray(lungs) > 0
    if padding is not None and np.shape(padding) != lung.shape:
        raise ValueError(f"padding mask of shape {np.shape(padding)} is not on the lung mask's grid {lung.shape}")
    has_lung = lung.any(axis=(1, 2))
    lung_slices = int(has_lung.sum())
    sy, sx = float(spacing_zyx[1]), float(spacing_zyx[2])
    px = max(sy, sx)
    no_padding = np.zeros(lung.shape[1:], bool)
    cache: dict[bytes, tuple] = {}  # slices usually share one padding pattern
    contact_mm = np.zeros(lung.shape[0])
    for k in np.flatnonzero(has_lung):
        outside = no_padding if padding is None else np.asarray(padding[k], bool)
        key = np.packbits(outside).tobytes()
        edge = cache.get(key)
        if edge is None:
            ring, length = _edge(outside, (sy, sx))
            dist = _distance_to_outside(outside, (sy, sx))
            # the nearest ring pixel of every pixel
            nearest = ndimage.distance_transform_edt(~ring, sampling=(sy, sx), return_distances=False,
                                                     return_indices=True) if ring.any() else None
            edge = (ring, length, dist, nearest)
            if len(cache) < 16:
                cache[key] = edge
        ring, length, dist, nearest = edge
        near = lung[k] & (dist <= tolerance_mm + px)  # lung close to the edge
        if nearest is None or not near.any():
            continue
        touched = np.zeros_like(ring)
        touched[nearest[0][near], nearest[1][near]] = True
        # a lung stopping short of a stepped (circular) edge may miss a ring pixel between two it marks: fill it
        touched |= ring & (ndimage.convolve(touched.astype(np.uint8), np.ones((3, 3), np.uint8), mode="constant") >= 2)
        contact_mm[k] = float(length[touched].sum())
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
