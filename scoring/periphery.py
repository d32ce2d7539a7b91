"""Peripheral and central lung: the geometry of zones.csv's ``peripheral_central`` rows.

Readers call an opacity peripheral (subpleural) when it lies mainly in "the peripheral one-third of the lung", next
to the pleura of the chest wall and the diaphragm; COVID-19's typical pattern is peripheral, a central (perihilar,
peribronchovascular) one suggests other causes. ctscore measures it on each axial slice, as it is read:

* the **chest cavity** of a slice is the convex hull of both lungs' voxels in it: its edge runs along the costal
  pleura, in front of the heart and behind the spine, so the mediastinum, the hila and the heart lie inside it;
* a lung voxel's **distance from the pleura** is the smaller of its in-plane distance (mm) from the nearest voxel
  outside that hull (lung along the ribs, the front and the paravertebral gutters is near; lung at the hilum and along
  the heart is far) and its height above the diaphragm below it (up its column from the lung's floor, where that
  floor lies over the dome: :func:`slice_depths`);
* a voxel is **peripheral** when that distance is at most :data:`PERIPHERAL_FRACTION` of its lung's greatest in-plane
  depth in the slice (the outer third of the way from the chest wall to the lung's most central voxel), and never less
  than :data:`MIN_RIND_MM` (lung within 10 mm of the pleura is subpleural however thin the lung there: apices, the
  lung around a dome). The rest is **central**: the inner part of each slice's lung, at the hilum at hilar levels.

What follows from the definition (docs/scoring.md, "Peripheral and central lung"):
* the mediastinal surface of a lung is central, not subpleural, as a reader reads "peripheral"; so is anything a
  segmenter takes into the lung mask along the mediastinum (a great vessel, the heart: dense "central lesion");
* "a third" is of the depth, not of the volume: the peripheral unit holds more than half of a lung (55-65 % on the
  six real chests);
* in a slice that holds one lung only (an apex above the other, a base below it) the hull is that lung's, so its
  medial side counts as outer;
* a lung cut by the field of view has its cut edge taken for the chest wall (``LUNG_CUT_BY_FOV``);
* distances to the chest wall are in-plane (no distance to the apex above), and to the diaphragm vertical only.
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


def slice_depths(lungs: np.ndarray, sides: dict[int, float | None], z_mm: np.ndarray,
                 pixel_mm: tuple[float, float] = (1.0, 1.0), box: tuple[slice, slice] | None = None,
                 margin_mm: float | None = None):
    """Slice by slice, inferior first: each lung voxel's distance (mm) from the costal or the diaphragmatic pleura,
    and each lung's greatest in-plane depth in the slice, what zones.csv's peripheral_central rows divide it by.

    ``sides``: lung label -> its dome level (patient z, mm; None when not found). Labels of ``lungs`` not in ``sides``
    are no lung. ``z_mm``: each slice's patient z; ``box``: the in-plane box to work in (all of a slice by default).

    A voxel's distance is the smaller of
    * its in-plane depth from the chest cavity's edge (:func:`cavity_depth` of all ``sides``' lungs in the slice), and
    * its height above the diaphragm: counted up its column through the lung's lowest run of voxels, whose floor (one
      slice step high, as a boundary voxel is one pixel deep in plane) lies at most ``margin_mm``
      (:data:`DOME_MARGIN_MM`) above the lung's dome level and not in the volume's lowest slice (there the scan ends,
      not the lung). Voxels above a gap in their column, over a floor higher up (on the hilum's vessels or the heart)
      or of a lung without a dome level have no height.

    Yields ``(k, {label: (distance, greatest)})`` for every slice k holding a lung of ``sides``: ``distance`` a
    float32 array in the order of ``lungs[k][box][lungs[k][box] == label]``, ``greatest`` the largest in-plane depth
    of that lung in the slice (mm). Two boolean and one float32 in-plane arrays per lung are all it keeps."""
    margin = DOME_MARGIN_MM if margin_mm is None else margin_mm
    z = np.asarray(z_mm, float)
    if z.shape != (lungs.shape[0],):
        raise ValueError(f"z_mm has {z.size} values, the volume {lungs.shape[0]} slices")
    box = box or (slice(None), slice(None))
    order = np.argsort(z, kind="stable")  # inferior first
    step = float(np.median(np.diff(z[order]))) if z.size > 1 else 1.0
    shape = lungs[0][box].shape
    labels = list(sides)
    state = {lab: {"started": np.zeros(shape, bool), "in_run": np.zeros(shape, bool),
                   "floor_ok": np.zeros(shape, bool), "height": np.full(shape, np.inf, np.float32)} for lab in labels}
    prev_z = None
    for i, k in enumerate(order):
        sl = lungs[k][box]
        lab_k = np.where(np.isin(sl, labels), sl, 0)
        costal = cavity_depth(lab_k, pixel_mm) if lab_k.any() else None
        rise = np.float32(step if prev_z is None else abs(z[k] - prev_z))
        out = {}
        for lab in labels:
            st = state[lab]
            m = lab_k == lab
            new_floor = m & ~st["started"]
            dome = sides[lab]
            floor_here = dome is not None and i > 0 and z[k] <= dome + margin
            st["floor_ok"] = np.where(new_floor, floor_here, st["floor_ok"])
            st["height"] = np.where(new_floor, np.float32(step),
                                    np.where(st["in_run"] & m, st["height"] + rise, np.float32(np.inf)))
            st["in_run"] = m & (st["in_run"] | new_floor)
            st["started"] |= m
            if costal is None or not m.any():
                continue
            d = costal[m]
            up = np.where(st["floor_ok"], st["height"], np.float32(np.inf))[m]
            out[lab] = (np.minimum(d, up).astype(np.float32), float(d.max()))
        prev_z = z[k]
        if out:
            yield int(k), out


def cut_off_mm(greatest: float) -> float:
    """The distance (mm) within which a lung voxel of a slice is peripheral: a third of the lung's greatest in-plane
    depth in that slice (:data:`PERIPHERAL_FRACTION`), at least :data:`MIN_RIND_MM`."""
    return max(PERIPHERAL_FRACTION * greatest, MIN_RIND_MM) + TIE_MM


#: Lung within this distance (mm) of the costal or diaphragmatic pleura is peripheral in every slice, however thin the
#: lung there (the apices, a ring of lung around a dome): subpleural in the radiological sense.
MIN_RIND_MM = 10.0
#: A lung's floor counts as the diaphragm (:func:`slice_depths`) up to this far (mm) above its dome level.
DOME_MARGIN_MM = 10.0
#: Distances within this much (mm) of the cut-off count as inside it (floating-point ties at exactly a third).
TIE_MM = 1e-6
