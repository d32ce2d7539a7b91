"""Peripheral and central lung, slice by slice: the geometry of zones.csv's ``peripheral_central`` rows.

Readers call an opacity peripheral (subpleural) when it lies mainly in "the peripheral one-third of the lung", from
the hilum out to the costal pleura; COVID-19's typical pattern is peripheral, a perihilar (central) one suggests
other causes. ctscore measures that third on each axial slice, as it is read:

* the **chest cavity** of a slice is the convex hull of both lungs' voxels in it: its edge runs along the costal
  pleura, in front of the heart and behind the spine, so the mediastinum, the hila and the heart lie inside it;
* a lung voxel's **depth** is its in-plane distance (mm) from the nearest voxel outside that hull, so lung along the
  ribs, the front and the paravertebral gutters is shallow and lung at the hilum and along the heart is deep;
* a voxel is **peripheral** when its depth is at most :data:`PERIPHERAL_FRACTION` of the deepest voxel of its own
  lung in that slice (its most central lung, at the hilum or the heart): the outer third of the way from the costal
  pleura to the hilum, whatever the lung's size. The rest is **central**.

What follows from the definition (docs/scoring.md, "Peripheral and central lung"): the mediastinal surface of a lung
is central, not subpleural, as a reader reads "peripheral"; in a slice that holds one lung only (an apex above the
other, a base below it) the hull is that lung's, so its medial side counts as outer; in a slice through the
diaphragm's dome the lung around the dome is cut into its outer third (against the ribs) and the rest (towards the
dome). Depths are measured per slice, not in 3-D: no distance to the apex or the dome's surface above or below.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

#: A lung voxel is peripheral when its depth from the chest cavity's edge is at most this share of the deepest voxel
#: of its lung in that slice: "the peripheral one-third of the lung".
PERIPHERAL_FRACTION = 1.0 / 3.0
#: Tolerance (pixels) of the half-plane tests that fill the hull: hull edges run through pixel centres.
_EPS = 1e-9


def convex_hull_2d(mask: np.ndarray) -> np.ndarray:
    """The convex hull of a 2-D boolean mask's pixel centres, filled, as a boolean mask of the same shape (the mask's
    own pixels always included). The same pixels as ``skimage.morphology.convex_hull_image(mask,
    offset_coordinates=False)`` (tested), 15-20 times faster on lung slices: the hull is taken of each row's first
    and last pixel only and filled row by row from its half-planes, not rasterised as a polygon. A mask whose pixels
    lie on one line (no hull) is returned as it is."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"convex_hull_2d takes a 2-D mask, not {mask.ndim}-D")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return mask.copy()
    sub = mask[rows]
    first = np.argmax(sub, axis=1)
    last = mask.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)
    pts = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)]).astype(float)
    try:
        eq = ConvexHull(pts).equations  # n_row * row + n_col * col + offset <= 0 inside
    except (QhullError, ValueError):  # fewer than three points off one line
        return mask.copy()
    r = np.arange(mask.shape[0], dtype=float)[:, None]
    n_col = eq[:, 1][None, :]
    rhs = -(eq[:, 2][None, :] + eq[:, 0][None, :] * r)  # n_col * col <= rhs, per row and facet
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = rhs / n_col
    hi = np.where(n_col > _EPS, bound, np.inf).min(axis=1)
    lo = np.where(n_col < -_EPS, bound, -np.inf).max(axis=1)
    row_ok = np.where(np.abs(n_col) <= _EPS, rhs >= -_EPS, True).all(axis=1)  # facets along a row bound the rows
    col = np.arange(mask.shape[1])[None, :]
    return ((col >= lo[:, None] - _EPS) & (col <= hi[:, None] + _EPS) & row_ok[:, None]) | mask


def cavity_depth(lungs_slice: np.ndarray, pixel_mm: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """In-plane depth (mm) of every voxel of one axial slice's lung labels (any value > 0 is lung) from the edge of the
    chest cavity, the convex hull of all lung voxels in the slice: the distance to the nearest voxel outside the hull
    (the slice's border counts as outside). 0 outside the hull. ``pixel_mm``: (row, column) spacing."""
    lung = np.asarray(lungs_slice) > 0
    depth = np.zeros(lung.shape, np.float64)
    if not lung.any():
        return depth
    ys, xs = np.flatnonzero(lung.any(axis=1)), np.flatnonzero(lung.any(axis=0))
    box = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
    hull = np.pad(convex_hull_2d(lung[box]), 1)
    depth[box] = ndi.distance_transform_edt(hull, sampling=pixel_mm)[1:-1, 1:-1]
    return depth


def peripheral_in_slice(depth: np.ndarray, lung: np.ndarray, fraction: float = PERIPHERAL_FRACTION) -> np.ndarray:
    """Which of one lung's voxels in a slice are peripheral, as a 1-D boolean array in the order of ``depth[lung]``:
    depth at most ``fraction`` of that lung's deepest voxel in the slice."""
    d = depth[lung]
    if d.size == 0:
        return np.zeros(0, bool)
    return d <= d.max() * fraction
