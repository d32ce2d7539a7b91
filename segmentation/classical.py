"""Classical lung, airway and lesion segmentation (thresholds, connected components, morphology).

The baseline segmenter and the teacher of the learned model. Steps, on the working grid, inside the
body's bounding box:

1. body: everything denser than ``body_threshold_hu``, largest component, holes filled per slice;
2. airway: region growing from a trachea seed found in the upper slices, in a box around the seed
   on a lightly smoothed image, the threshold raised in 10 HU steps until the region jumps in
   volume (a leak into the lung);
3. lungs: air-like voxels minus the airway. The lungs are told apart (and from stomach or colon gas
   that touches them through a thin diaphragm) on clearly aerated voxels after an opening, split
   into right and left (by erosion when they touch; two parts are two lungs only when side by side,
   else the largest is one lung), grown back a few mm; partly aerated pieces that touch a lung come
   back unless they are gas (mostly below -950 HU) or bronchial wall. Each
   lung is then closed and hole-filled (``fill_enclosed``: axial holes that are also coronal or
   sagittal holes, so the liver dome is not taken), and a large 2D rolling ball (closed in at least
   two of the axial, coronal and sagittal planes, not in the mediastinum, not bone) takes
   consolidation against the pleura back in;
4. lesions: (a) ground glass from the parenchymal density (normalised convolution over lung that is
   not vessel, vessel halo, airway wall or pleural rim) above the lesion band and above a healthy
   baseline per height (gravity gradient); (b) reticulation/patchy opacity where most non-vessel
   voxels around are denser than that baseline (not at the hilum); (c) thick dense blobs (depth
   measured against the chest wall too) that are not small, tubular or hilar. Then an opening and
   a minimum component size.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from segmentation.base import LEFT_LUNG, RIGHT_LUNG, Segmentation

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "lung_threshold_hu": -320,
    "body_threshold_hu": -500,
    "min_lung_volume_ml": 100,
    "airway_seed_threshold_hu": -980,
    "airway_max_threshold_hu": -850,
    "lung_core_threshold_hu": -600,
    "lung_grow_mm": 3.0,
    "addback_max_air_fraction": 0.2,
    "pleural_closing_radius_mm": 35.0,
    "pleural_fill_max_hu": 150,
    "texture_threshold_hu": -550,
    "texture_delta_hu": 150,
    "texture_fraction": 0.45,
    "texture_sigma_mm": 3.0,
    "baseline_max_hu": -800,
    "ggo_delta_hu": 100,
    "vessel_threshold_hu": -550,
    "dense_threshold_hu": -300,
    "small_vessel_radius_mm": 2.5,
    "vessel_max_radius_mm": 4.0,
    "lesion_min_component_ml": 0.05,
    "consolidation_min_ml": 2.0,
    "hilum_margin_mm": 20.0,
    "vessel_halo_mm": 3.0,
    "consolidation_min_radius_mm": 6.0,
    "lesion_min_hu": -750,
    "lesion_max_hu": 100,
}


def ball(radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """An ellipsoidal structuring element of the given physical radius on an anisotropic grid."""
    r = [max(0, int(np.floor(radius_mm / s))) for s in spacing]
    zz, yy, xx = np.ogrid[-r[0] : r[0] + 1, -r[1] : r[1] + 1, -r[2] : r[2] + 1]
    d = (zz * spacing[0]) ** 2 + (yy * spacing[1]) ** 2 + (xx * spacing[2]) ** 2
    return d <= radius_mm**2 + 1e-6


def disk(radius_mm: float, spacing_yx: tuple[float, float]) -> np.ndarray:
    """A 2D disk (as a 1-slice 3D element) of the given physical radius."""
    return ball(radius_mm, (1e9, *spacing_yx))


# Voxels per chunk when a full-volume label map is counted or looked up: numpy turns int32 labels into an int64
# copy for np.bincount and for fancy indexing, twice the size of a float32 volume at once otherwise.
_CHUNK = 1 << 20


def label_sizes(labels: np.ndarray, count: int, where: np.ndarray | None = None) -> np.ndarray:
    """Voxels per label (``np.bincount(labels.ravel(), minlength=count + 1)``, counted chunk by chunk).

    With ``where`` (a boolean array of the same shape): only the voxels where it is true are counted, so
    ``label_sizes(labels, n, mask)[1:] / label_sizes(labels, n)[1:]`` is ``ndi.mean(mask, labels, 1..n)`` exactly
    (which would hold a float64 copy of ``mask`` and an int64 copy of ``labels`` at once)."""
    flat = labels.reshape(-1)
    if where is not None and where.shape != labels.shape:
        raise ValueError(f"where {where.shape} and labels {labels.shape} differ in shape")
    sel = None if where is None else where.reshape(-1)
    sizes = np.zeros(count + 1, np.intp)
    for i in range(0, flat.size, _CHUNK):
        chunk = flat[i : i + _CHUNK]
        if sel is not None:
            chunk = chunk[sel[i : i + _CHUNK]]
        sizes += np.bincount(chunk, minlength=count + 1)
    return sizes


def label_share(labels: np.ndarray, count: int, where: np.ndarray) -> np.ndarray:
    """The share of each label's voxels (1..count) where ``where`` is true: the same float64 values as
    ``ndi.mean(where, labels, index=np.arange(1, count + 1))`` (integer sums, so the division is the same)."""
    total = label_sizes(labels, count)[1:].astype(np.float64)
    return label_sizes(labels, count, where)[1:] / total


def lookup(table: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``table[labels]`` computed slab by slab along the first axis (no full-volume int64 index copy)."""
    out = np.empty(labels.shape, table.dtype)
    step = max(1, _CHUNK // max(1, labels[0].size)) if labels.ndim else 1
    for i in range(0, labels.shape[0], step):
        out[i : i + step] = table[labels[i : i + step]]
    return out


def edt(mask: np.ndarray, sampling, then=None, dtype=np.float64) -> np.ndarray:
    """``then(ndi.distance_transform_edt(mask, sampling=sampling))`` (``then`` elementwise, its result of ``dtype``;
    none: the distances), the same values with a fraction of the memory.

    scipy turns its int32 feature transform (12 bytes a voxel) into distances through full-volume int32
    offsets and their float64 copy (about 50 bytes a voxel at once); here the offsets, distances and ``then``
    are computed from the feature transform slab by slab, by the same operations in the same order."""
    ft = ndi.distance_transform_edt(mask, sampling=sampling, return_distances=False, return_indices=True)
    samp = np.asarray(sampling, dtype=np.float64).reshape(-1)
    if samp.size == 1:
        samp = np.repeat(samp, mask.ndim)
    out = np.empty(mask.shape, dtype)
    if mask.size == 0:
        return out
    step = max(1, (_CHUNK >> 4) // max(1, mask[0].size))  # (float64 temporaries of a few MiB)
    for z0 in range(0, mask.shape[0], step):
        sub = ft[:, z0 : z0 + step]
        dt = np.empty(sub.shape, np.float64)
        for a in range(mask.ndim):
            pos = np.arange(sub.shape[a + 1], dtype=np.int32) + (z0 if a == 0 else 0)
            dt[a] = sub[a] - pos.reshape((-1,) + (1,) * (mask.ndim - 1 - a))  # int32 offsets, as scipy's
            dt[a] *= samp[a]
        np.multiply(dt, dt, dt)
        d = np.sqrt(np.add.reduce(dt, axis=0))
        del dt
        out[z0 : z0 + step] = d if then is None else then(d)
    return out


def largest_components(mask: np.ndarray, n: int = 1, min_size: int = 0) -> tuple[np.ndarray, list[int]]:
    """Label ``mask`` and return the labels plus the ids of the ``n`` largest components."""
    labels, count = ndi.label(mask)
    if count == 0:
        return labels, []
    sizes = label_sizes(labels, count)
    sizes[0] = 0
    order = [int(i) for i in np.argsort(sizes)[::-1][:n] if sizes[i] > min_size]
    return labels, order


def crop_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """The bounding box of ``mask`` grown by ``margin`` voxels (clipped to the array).

    From the mask's projections on each axis (``np.nonzero`` of the whole mask would hold three int64 indices
    per voxel of it)."""
    out = []
    for axis, n in enumerate(mask.shape):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        out.append(slice(max(0, int(idx[0]) - margin), min(n, int(idx[-1]) + margin + 1)))
    return tuple(out)


def fill_holes_planar(mask: np.ndarray, axis: int = 0) -> np.ndarray:
    """Fill the holes of ``mask`` in every plane normal to ``axis`` (one labelling for all planes).

    Same result as :func:`scipy.ndimage.binary_fill_holes` per plane (4-connected background):
    background components of a plane that do not reach the plane's border are holes.
    """
    st = np.zeros((3, 3, 3), bool)
    centre = [1, 1, 1]
    st[tuple(centre)] = True
    for a in range(3):
        if a != axis:
            for d in (0, 2):
                idx = list(centre)
                idx[a] = d
                st[tuple(idx)] = True
    lab, n = ndi.label(~mask, structure=st)
    if n == 0:
        return mask.copy()
    border = np.zeros(n + 1, bool)
    for a in range(3):
        if a == axis:
            continue
        for end in (0, mask.shape[a] - 1):
            border[np.unique(np.take(lab, end, axis=a))] = True
    border[0] = True
    return mask | ~lookup(border, lab)


def fill_holes_slicewise(mask: np.ndarray) -> np.ndarray:
    """Fill holes in every axial slice (vessels and lesions enclosed by lung in that slice)."""
    return fill_holes_planar(mask, 0)


def fill_enclosed(mask: np.ndarray) -> np.ndarray:
    """Fill what the lung encloses: holes in axial slices that are also holes in coronal or sagittal slices.

    Vessels and lesions surrounded by lung are enclosed in several directions; the liver or spleen
    dome, which shows as a hole in axial slices only, opens downwards in coronal and sagittal slices
    and is therefore not taken into the lung.
    """
    axial = fill_holes_planar(mask, 0)
    coronal = fill_holes_planar(mask, 1)
    sagittal = fill_holes_planar(mask, 2)
    return mask | (axial & (coronal | sagittal))


def dilate(mask: np.ndarray, radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """Binary dilation by a ball of ``radius_mm`` (scipy's morphology: faster here than its EDT)."""
    return ndi.binary_dilation(mask, ball(radius_mm, spacing))


def erode(mask: np.ndarray, radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """Binary erosion by a ball of ``radius_mm`` (outside the array counts as background)."""
    return ndi.binary_erosion(mask, ball(radius_mm, spacing))


def coarse_distance(mask: np.ndarray, spacing: tuple[float, float, float], factor: int = 2) -> np.ndarray:
    """Approximate distance (mm) to the nearest ``mask`` voxel, computed on a ``factor`` x coarser grid."""
    small = mask[::factor, ::factor, ::factor]
    if not small.any():
        return np.full(mask.shape, np.inf, np.float32)
    d = ndi.distance_transform_edt(~small, sampling=[s * factor for s in spacing]).astype(np.float32)
    d = d.repeat(factor, 0).repeat(factor, 1).repeat(factor, 2)
    return d[: mask.shape[0], : mask.shape[1], : mask.shape[2]]


def coarse_within(mask: np.ndarray, spacing: tuple[float, float, float], radius_mm: float,
                  factor: int = 2) -> np.ndarray:
    """``coarse_distance(mask, spacing, factor) < radius_mm``, thresholded on the coarse grid before it is
    repeated (the same voxels; a boolean instead of a float32 volume and its repeated copies)."""
    small = mask[::factor, ::factor, ::factor]
    if not small.any():
        return np.zeros(mask.shape, bool)
    # float32 distances against the same scalar, as coarse_distance's result was compared
    near = edt(~small, [s * factor for s in spacing], lambda d: d.astype(np.float32) < radius_mm, bool)
    near = near.repeat(factor, 0).repeat(factor, 1).repeat(factor, 2)
    return near[: mask.shape[0], : mask.shape[1], : mask.shape[2]]


def opening(mask: np.ndarray, radius_mm: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """Binary opening by a ball of ``radius_mm``: what remains of structures thicker than the ball."""
    return ndi.binary_opening(mask, ball(radius_mm, spacing))


def mediastinum(lungs: np.ndarray) -> np.ndarray:
    """Voxels between the right and left lung in each (z, y) row where both lungs are present."""
    nx = lungs.shape[2]
    x = np.arange(nx, dtype=np.int32)
    # The right lung's last and the left lung's first x per row from argmax on boolean masks (memory: no
    # full-volume int32 map of x per side, 4 bytes a voxel, for a max or min along x).
    side = lungs == RIGHT_LUNG
    right_any = side.any(axis=2)
    right_max = np.where(right_any, nx - 1 - np.argmax(side[..., ::-1], axis=2), -1)
    side = lungs == LEFT_LUNG
    left_any = side.any(axis=2)
    left_min = np.where(left_any, np.argmax(side, axis=2), nx)
    del side
    both = right_any & left_any
    return both[..., None] & (x > right_max[..., None]) & (x < left_min[..., None])


def body_mask(hu: np.ndarray, threshold: float) -> np.ndarray:
    """The patient's body (largest dense component, holes filled per slice, table excluded)."""
    labels, ids = largest_components(hu > threshold, 1)
    if not ids:
        return np.zeros(hu.shape, bool)
    body = labels == ids[0]
    del labels  # (memory: the label map is not needed while the holes are filled)
    return fill_holes_slicewise(body)


def trachea_search_slices(body: np.ndarray) -> range:
    """The slices searched for the trachea: downwards from the top of the body over the upper third of its
    extent (at least 3 slices, never below the body)."""
    zs = np.flatnonzero(body.any(axis=(1, 2)))
    if zs.size == 0:
        return range(0)
    top, bottom = int(zs[-1]), int(zs[0])
    return range(top, max(bottom - 1, top - max(3, (top - bottom) // 3)), -1)


def find_trachea_seed(air: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float]) -> tuple | None:
    """A voxel inside the trachea: a round air blob near the body's midline in an upper slice."""
    pix_area = spacing[1] * spacing[2]
    for z in trachea_search_slices(body):
        ys, xs = np.nonzero(body[z])
        if ys.size == 0:
            continue
        cx = xs.mean()
        width = xs.max() - xs.min() + 1
        lab, n = ndi.label(air[z] & body[z])
        best = None
        for i in range(1, n + 1):
            yy, xx = np.nonzero(lab == i)
            area = yy.size * pix_area
            if not 30 <= area <= 700:
                continue
            dist = abs(xx.mean() - cx) / width
            if dist < 0.12 and (best is None or dist < best[0]):
                best = (dist, (z, int(np.median(yy)), int(np.median(xx))), yy, xx)
        if best is not None:
            seed = best[1]
            if air[seed]:
                return seed
            return (z, int(best[2][0]), int(best[3][0]))
    return None


def grow_airway(
    hu: np.ndarray, body: np.ndarray, seed: tuple, spacing: tuple[float, float, float], lo: float, hi: float,
    max_ml: float = 250.0, max_step_ml: float = 60.0,
) -> np.ndarray:
    """Region-grow the airway from ``seed``, raising the threshold from ``lo`` to ``hi`` until it leaks.

    Works in a box around the seed (the trachea and main bronchi lie within it) on a slightly
    smoothed image, so that noisy tracheal air (-930 HU on some scanners) stays connected. The
    growth stops before the threshold at which the region jumps in volume (a leak into the lung).
    """
    shape = hu.shape
    half = (int(220 / spacing[0]), int(120 / spacing[1]), int(100 / spacing[2]))
    box = (slice(max(0, seed[0] - half[0]), min(shape[0], seed[0] + int(20 / spacing[0]) + 1)),
           slice(max(0, seed[1] - half[1]), min(shape[1], seed[1] + half[1] + 1)),
           slice(max(0, seed[2] - half[2]), min(shape[2], seed[2] + half[2] + 1)))
    local_seed = tuple(int(s - b.start) for s, b in zip(seed, box))
    sub = ndi.gaussian_filter(hu[box], 0.8)
    inside = body[box]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    best = np.zeros(sub.shape, bool)
    prev_ml = None
    for thr in np.arange(lo, hi + 1, 10.0):
        cand = (sub < thr) & inside
        if not cand[local_seed]:
            continue
        lab, _ = ndi.label(cand)
        region = lab == lab[local_seed]
        ml = region.sum() * voxel_ml
        if ml > max_ml or (prev_ml is not None and ml - prev_ml > max_step_ml):
            break  # leaked into the lung parenchyma
        best, prev_ml = region, ml
    out = np.zeros(shape, bool)
    out[box] = best
    return out


#: An airway grown to under this many mL is taken as stopped by something in the trachea and is grown again with
#: thin bright walls opened away (:func:`open_thin_walls`); the larger of the two is kept. An endotracheal tube's
#: wall (an ICU audit's simulated tube in ricord_covid_419639) left 0.5 mL of a 36.6 mL airway, the carina was
#: estimated 25 mm high and the classical segmenter took the air around the tube as lung. The six real chests of
#: ../shared/data grow 5.4 (8 mm slices) to 39.8 mL without it, so their airways are grown as before.
AIRWAY_RETRY_ML = 5.0
#: The airway grown again is kept only when at least this share of its voxels that the opening left as they were
#: is below -900 HU: air (ricord_covid_419639's trachea around a tube 0.97), not lung (a review: normal001 cut below
#: the carina has no trachea, and its opened lung, median -869 HU, grew 6.1 mL that hid AIRWAY_NOT_FOUND).
AIRWAY_RETRY_AIR_SHARE = 0.8


def open_thin_walls(hu: np.ndarray, spacing: tuple[float, float, float], width_mm: float = 3.0) -> np.ndarray:
    """``hu`` with bright in-plane structures thinner than about ``width_mm`` that have air on both sides (an
    endotracheal tube's wall, 1-2 mm of plastic between its lumen and the trachea's air) replaced by that air: a
    grey-level opening per slice. Thick tissue (the tracheal wall backed by the mediastinum) is kept."""
    size = max(3, int(width_mm / min(spacing[1], spacing[2])) | 1)
    return ndi.grey_opening(hu, size=(1, size, size))


def _airway(hu: np.ndarray, air: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float],
            p: dict[str, Any]) -> np.ndarray:
    """The airway from a trachea seed found on ``air`` (smoothed image below -900 HU; only the slices of
    :func:`trachea_search_slices` are read); grown again without thin walls when it stops under
    :data:`AIRWAY_RETRY_ML`."""
    lo, hi = p["airway_seed_threshold_hu"], p["airway_max_threshold_hu"]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    seed = find_trachea_seed(air, body, spacing)
    airway = np.zeros(hu.shape, bool) if seed is None else grow_airway(hu, body, seed, spacing, lo, hi)
    found_ml = np.count_nonzero(airway) * voxel_ml
    if found_ml >= AIRWAY_RETRY_ML:
        return airway
    opened = open_thin_walls(hu, spacing)
    seed_open = find_trachea_seed(ndi.gaussian_filter(opened, 0.7) < -900, body, spacing)
    if seed_open is not None:
        retry = grow_airway(opened, body, seed_open, spacing, lo, hi)
        retry_ml = np.count_nonzero(retry) * voxel_ml
        # what the opening did not change must be air: a scan starting below the carina has no trachea, and the
        # opened lung (median -869 HU on normal001) would pass for one (a review: 6.1 mL, AIRWAY_NOT_FOUND lost)
        kept = hu[retry & (np.abs(opened - hu) < 50.0)]
        air_share = float(np.mean(kept < -900.0)) if kept.size else 0.0
        if air_share < AIRWAY_RETRY_AIR_SHARE:
            log.info("airway grown to %.1f mL only; the %.1f mL grown with thin walls opened away is no air (%.0f %% "
                     "below -900 HU): not taken", found_ml, retry_ml, 100 * air_share)
            retry_ml = 0.0
        if retry_ml > found_ml:
            log.info("airway grown to %.1f mL only; %.1f mL with thin walls in the trachea (a tube?) opened away",
                     found_ml, retry_ml)
            airway, found_ml = retry, retry_ml
    if not found_ml:
        log.warning("no trachea found: airway not segmented")
    return airway


def segment_airway(hu: np.ndarray, spacing: tuple[float, float, float],
                   params: dict[str, Any] | None = None) -> np.ndarray:
    """Trachea and main bronchi by the classical region growing alone (no lungs, no lesions).

    For segmenters that do not label the airway (the MONAI network): the landmark detector finds the
    carina on it. Same parameters and result as the airway of :class:`ClassicalSegmenter`.
    """
    p = {**DEFAULTS, **(params or {})}
    hu = np.asarray(hu, np.float32)
    out = np.zeros(hu.shape, bool)
    body_full = body_mask(hu, p["body_threshold_hu"])
    if not body_full.any():
        return out
    box = crop_box(body_full, margin=2)
    hu_b, body_b = hu[box], body_full[box]
    # The smoothed image is needed only where the trachea is searched for: smooth those slices (and 4 below,
    # beyond the 3-voxel reach of the filter, so the searched slices are as if the whole box had been smoothed).
    z0 = max(0, min(trachea_search_slices(body_b)) - 4)
    air = np.zeros(hu_b.shape, bool)
    air[z0:] = ndi.gaussian_filter(hu_b[z0:], sigma=0.7) < -900
    out[box] = _airway(hu_b, air, body_b, spacing, p)
    return out


def side_by_side(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two parts lie as a right and a left lung do: apart across x (their x centres further apart than
    half their mean width, 5th to 95th percentile) and both reaching up to the apices (their tops less than
    half the taller one's height apart). One lung cut into a front and a back or an upper and a lower part,
    or a lung and stomach or colon gas under the other hemidiaphragm, are not two lungs."""
    # (memory: the parts' x coordinates, sorted, from their counts per x instead of np.nonzero's three int64
    # indices per voxel; the same percentiles and, the sums being exact integers, the same means)
    za, xa = _z_extent(a), _per_x(a)
    zb, xb = _z_extent(b), _per_x(b)
    width = (_x_spread(xa) + _x_spread(xb)) / 2.0
    height = max(za[1] - za[0], zb[1] - zb[0]) + 1
    return abs(_x_mean(xa) - _x_mean(xb)) > 0.5 * width and abs(za[1] - zb[1]) < 0.5 * height


def _z_extent(mask: np.ndarray) -> tuple[int, int]:
    """The lowest and highest z of a non-empty 3D ``mask``."""
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    return int(zs[0]), int(zs[-1])


def _per_x(mask: np.ndarray) -> np.ndarray:
    """Voxels of a 3D ``mask`` per x."""
    return np.count_nonzero(mask, axis=(0, 1))


def _x_mean(per_x: np.ndarray) -> np.float64:
    """``np.nonzero(mask)[2].mean()`` from the counts per x: the sum is an exact integer either way."""
    return np.float64(np.dot(np.arange(per_x.size, dtype=np.intp), per_x)) / np.float64(per_x.sum())


def _x_spread(per_x: np.ndarray) -> np.float64:
    """``np.subtract(*np.percentile(np.nonzero(mask)[2], [95, 5]))`` from the counts per x (the same sorted
    coordinates)."""
    xs = np.repeat(np.arange(per_x.size, dtype=np.intp), per_x)
    return np.subtract(*np.percentile(xs, [95, 5], overwrite_input=True))


def split_lungs(lungs: np.ndarray, spacing: tuple[float, float, float], min_voxels: int) -> np.ndarray:
    """Label the lungs 1 (right, low x) and 2 (left), separating them by erosion when they touch.

    Two parts are taken for two lungs only when they lie side by side (:func:`side_by_side`) and the smaller
    holds at least 5 % of the air (15 % of what is left after erosion when they touch); otherwise the largest
    part is one lung (a pneumonectomy, a collapsed lung), its side from its place in the body's bounding box."""
    out = np.zeros(lungs.shape, np.uint8)
    if not lungs.any():
        return out
    box = crop_box(lungs, margin=1)
    sub = lungs[box]
    labels, ids = largest_components(sub, 2, min_voxels)
    # Two separate parts side by side: two lungs, even when one holds little air (a lung mostly collapsed or
    # under an effusion: 390 of 2790 mL of aerated lung was dropped whole at the 15 % the erosion below asks).
    if (len(ids) == 2 and min((labels == i).sum() for i in ids) > 0.05 * sub.sum()
            and side_by_side(labels == ids[0], labels == ids[1])):
        comps = ids
    else:
        # One connected blob: erode (deeper and deeper, via one distance map) until it falls apart
        # into two large parts, then grow these back (nearest part wins).
        del labels
        step = 1.5 * max(spacing[1:])
        levels = range(1, 13)
        # (memory: the depth is kept as the number of levels it exceeds, ``depth > k * step`` being ``level >= k``,
        # one byte a voxel instead of float64)
        level = edt(np.pad(sub, 1), spacing, lambda d: _levels_exceeded(d, [k * step for k in levels]),
                    np.uint8)[1:-1, 1:-1, 1:-1]
        comps = []
        for k in levels:
            eroded = level >= k  # depth > k * step
            labels, ids = largest_components(eroded, 2, min_voxels // 10)
            if len(ids) == 2 and min((labels == i).sum() for i in ids) > 0.15 * eroded.sum():
                if side_by_side(labels == ids[0], labels == ids[1]):
                    comps = ids
                    break
                # two parts, but the front and back (or top and bottom) of one lung: erode deeper
        del level, eroded
        if comps:
            # (memory: uint8 markers, so the grown labels are uint8 too; the feature transform is freed once
            # used; a lookup table instead of np.isin on the int32 component map)
            markers = np.zeros(sub.shape, np.uint8)
            for k, i in enumerate(comps, 1):
                markers[labels == i] = k
            del labels
            dist_idx = ndi.distance_transform_edt(markers == 0, sampling=spacing, return_distances=False,
                                                  return_indices=True)
            grown = markers[tuple(dist_idx)]
            del dist_idx
            # Only the components that hold a marker (not bowel gas or other stray air).
            comp, n_comp = ndi.label(sub)
            held = np.unique(comp[markers > 0])
            del markers
            kept = np.zeros(n_comp + 1, bool)
            kept[held[held > 0]] = True
            grown[~lookup(kept, comp)] = 0
            del comp
            labels, comps = grown, [1, 2]
        else:
            labels, ids = largest_components(sub, 1, min_voxels)
            comps = ids
    centroids = sorted((_x_mean(_per_x(labels == i)), i) for i in comps)
    region = out[box]
    if len(centroids) == 2:
        region[labels == centroids[0][1]] = RIGHT_LUNG
        region[labels == centroids[1][1]] = LEFT_LUNG
    elif len(centroids) == 1:
        # A single lung: decide its side from where it lies relative to the image centre.
        side = RIGHT_LUNG if centroids[0][0] + box[2].start < lungs.shape[2] / 2 else LEFT_LUNG
        region[labels == centroids[0][1]] = side
    return out


def _levels_exceeded(d: np.ndarray, thresholds: list[float]) -> np.ndarray:
    """How many of the increasing ``thresholds`` each value of ``d`` exceeds (``d > t``), as uint8."""
    out = np.zeros(d.shape, np.uint8)
    for t in thresholds:
        out += d > t
    return out


def planar_closing(mask: np.ndarray, radius_mm: float, spacing: tuple[float, float, float], axis: int) -> np.ndarray:
    """2D closing of every plane normal to ``axis`` with a disk of ``radius_mm`` (EDT-based, any radius)."""
    samp = list(spacing)
    samp[axis] = 1e4  # planes do not see each other
    pad = [(0, 0) if a == axis else (int(np.ceil(radius_mm / spacing[a])) + 2,) * 2 for a in range(3)]
    m = np.pad(mask, pad)
    dilated = edt(~m, samp, lambda d: d <= radius_mm, bool)
    closed = edt(dilated, samp, lambda d: d > radius_mm, bool)
    return closed[tuple(slice(p[0], p[0] + n) for p, n in zip(pad, mask.shape))]


def pleural_fill(
    lungs: np.ndarray, smooth: np.ndarray, allowed: np.ndarray, spacing: tuple[float, float, float],
    radius_mm: float, max_hu: float,
) -> np.ndarray:
    """Take dense lung (consolidation, atelectasis) that bites into the lung from the pleura back into it.

    A large 2D "rolling ball" (closing) of each lung; a voxel is taken when it is closed in at
    least two of the axial, coronal and sagittal planes (the liver and spleen domes, open
    downwards, are closed in axial slices only; consolidation wider than the ball along the chest
    wall but lower than it is closed in coronal and sagittal slices), done on a 2x coarser grid. Added voxels must be ``allowed`` (inside the body, not mediastinum or airway), not bone
    (below ``max_hu``) and not the other lung.
    """
    out = lungs.copy()
    f = 2
    for side in (RIGHT_LUNG, LEFT_LUNG):
        m = lungs == side
        if not m.any():
            continue
        box = crop_box(m, margin=int(np.ceil(radius_mm / min(spacing))) + 2)
        mc = m[box].copy()
        del m  # (memory: only its box is used)
        small = mc[::f, ::f, ::f]
        sp = tuple(s * f for s in spacing)
        ax, co, sa = (planar_closing(small, radius_mm, sp, a) for a in range(3))
        closed = (ax & (co | sa)) | (co & sa)  # closed in at least two of the three planes
        up = closed.repeat(f, 0).repeat(f, 1).repeat(f, 2)[: mc.shape[0], : mc.shape[1], : mc.shape[2]]
        added = up & ~mc & allowed[box] & (smooth[box] < max_hu) & (lungs[box] == 0)
        added = ndi.binary_opening(added, ball(1.0 * max(spacing), spacing))  # no thin slivers of wall
        region = out[box]
        region[added] = side
    return out


def parenchyma_baseline(smooth: np.ndarray, valid: np.ndarray, z_block: int = 30, q: float = 30.0) -> np.ndarray:
    """Typical HU of healthy-looking parenchyma per (z, y): the ``q``-th percentile per coronal row and
    z block, so the gravity gradient (dependent lung is denser) is not taken for ground glass.
    Returns a ``[z, y]`` map."""
    nz, ny, _ = smooth.shape
    vals = smooth[valid]
    glob = float(np.percentile(vals, q)) if vals.size else -850.0
    centres, profiles = [], []
    for z0 in range(0, nz, z_block):
        sl = slice(z0, min(nz, z0 + z_block))
        v, s = valid[sl], smooth[sl]
        counts = v.sum(axis=(0, 2))
        prof = np.full(ny, np.nan)
        for y in np.nonzero(counts > 200)[0]:
            prof[y] = np.percentile(s[:, y][v[:, y]], q)
        ok = ~np.isnan(prof)
        if ok.sum() < 3:
            continue
        prof = np.interp(np.arange(ny), np.nonzero(ok)[0], prof[ok])
        profiles.append(ndi.gaussian_filter1d(prof, 4.0))
        centres.append(z0 + (sl.stop - z0) / 2.0)
    if not profiles:
        return np.full((nz, ny), glob, np.float32)
    prof_arr = np.array(profiles)
    out = np.empty((nz, ny), np.float32)
    for y in range(ny):
        out[:, y] = np.interp(np.arange(nz), centres, prof_arr[:, y])
    return out


class ClassicalSegmenter:
    """Threshold/morphology segmenter implementing :class:`segmentation.base.Segmenter`."""

    name = "classical"

    def __init__(self, cfg: dict[str, Any] | None = None):
        params = dict(DEFAULTS)
        if cfg:
            seg = cfg.get("segmentation", cfg)
            params.update({k: v for k, v in seg.items() if k in DEFAULTS})
            bands = cfg.get("hu_classes")
            if bands:
                params["lesion_min_hu"] = bands["faint_ggo"][0]
                params["lesion_max_hu"] = bands["consolidation"][1]
        self.params = params

    @property
    def model_id(self) -> str:
        blob = json.dumps({"name": self.name, **self.params}, sort_keys=True).encode()
        return "classical-" + hashlib.sha256(blob).hexdigest()[:16]

    def segment(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> Segmentation:
        """Segment one HU volume ``[z, y, x]`` (LPS) with voxel size ``spacing`` (z, y, x) in mm."""
        p = self.params
        spacing = tuple(float(s) for s in spacing)
        voxel_ml = float(np.prod(spacing)) / 1000.0
        hu = np.asarray(hu, np.float32)
        shape = hu.shape

        # Everything happens in the body's bounding box. (Memory: the full-size outputs are made at the end, and
        # only the box of the body mask is kept.)
        body = body_mask(hu, p["body_threshold_hu"])
        if not body.any():
            log.warning("no body found: nothing segmented")
            return Segmentation(lungs=np.zeros(shape, np.uint8), lesions=np.zeros(shape, bool),
                                airway=np.zeros(shape, bool))
        box = crop_box(body, margin=2)
        hu = hu[box]
        body = body[box].copy()
        smooth = ndi.gaussian_filter(hu, sigma=0.7)

        airway = _airway(hu, smooth < -900, body, spacing, p)
        airway_zone = ndi.binary_dilation(airway, ball(2.0, spacing)) & (smooth < -400) | airway
        # (memory: only the airway's own bounding box is kept until the output is made)
        abox = crop_box(airway) if airway.any() else None
        airway = airway[abox].copy() if abox else None

        # (the air mask is passed without a name here, so that _lungs can free it once used)
        lungs = self._lungs(smooth, body, (smooth < p["lung_threshold_hu"]) & body, airway_zone, spacing, voxel_ml)
        del body

        lesions = lbox = None
        if lungs.any():
            lbox = crop_box(lungs > 0, margin=int(np.ceil(8.0 / min(spacing))))
            # The lesion stage gets its own copy of the smoothed lung box and uses it as scratch memory; the
            # smoothed body box is freed first.
            smooth_lbox, zone_lbox = smooth[lbox].copy(), airway_zone[lbox].copy()
            del smooth, airway_zone
            lesions = self._lesions(hu[lbox], smooth_lbox, lungs[lbox], zone_lbox, spacing, voxel_ml)
            del smooth_lbox, zone_lbox
            lesions &= lungs[lbox] > 0
        lungs_out = np.zeros(shape, np.uint8)
        lungs_out[box] = lungs
        del lungs
        lesions_out = np.zeros(shape, bool)
        if lesions is not None:
            lesions_out[box][lbox] = lesions
        del lesions
        airway_out = np.zeros(shape, bool)
        if abox:
            airway_out[box][abox] = airway
        return Segmentation(lungs=lungs_out, lesions=lesions_out, airway=airway_out)

    def _lungs(self, smooth: np.ndarray, body: np.ndarray, air: np.ndarray, airway_zone: np.ndarray,
               spacing: tuple[float, float, float], voxel_ml: float) -> np.ndarray:
        """Right (1) and left (2) lung labels, including the dense lung they enclose."""
        p = self.params
        min_vox = int(p["min_lung_volume_ml"] / voxel_ml)
        lungs_raw = air & ~airway_zone
        del air  # (memory: the caller keeps no reference to it)
        lungs_raw = ndi.binary_opening(lungs_raw, ball(1.0 * max(spacing), spacing)) | (lungs_raw & (smooth < -600))
        # The lungs are told apart, and from bowel gas that touches them through a thin diaphragm, on
        # clearly aerated voxels; then they grow back into the air-like voxels next to them.
        # An opening cuts the thin bridges (partial-volume diaphragm) to stomach and colon gas.
        core = lungs_raw & (smooth < p["lung_core_threshold_hu"])
        core = opening(core, p["lung_grow_mm"], spacing)
        labels = split_lungs(core, spacing, min_vox)
        del core
        steps = max(1, int(np.ceil(p["lung_grow_mm"] / min(spacing))))
        conn = ndi.generate_binary_structure(3, 3)
        for side in (RIGHT_LUNG, LEFT_LUNG):
            m = labels == side
            if m.any():
                grown = ndi.binary_dilation(m, conn, iterations=steps, mask=lungs_raw & (labels == 0))
                labels[grown & (labels == 0)] = side
                del grown
        del m
        # Partly aerated lung cut off by the opening (diseased lower lobes) comes back when it touches
        # a lung and is not gas (bowel gas is homogeneous air: many voxels below -950 HU).
        # (not near the segmented airway: the partial-volume shell of the bronchi is not lung).
        near_airway = ndi.binary_dilation(airway_zone, conn, iterations=3)
        # (memory: labelled in the bounding box of the pieces, the same components in the same order)
        rest = lungs_raw & (labels == 0) & ~near_airway
        del near_airway, lungs_raw
        rbox = crop_box(rest) if rest.any() else (slice(0, 0),) * 3
        rest, n_rest = ndi.label(rest[rbox])
        if n_rest:
            # (memory: label_share and lookup instead of ndi.mean and np.isin, which copy the int32 labels to
            # int64 or shift them, and the mask to float64; same values)
            pure = np.ones(n_rest + 1)
            pure[1:] = label_share(rest, n_rest, smooth[rbox] < -950)
            for side in (RIGHT_LUNG, LEFT_LUNG):
                touch = np.unique(rest[ndi.binary_dilation(labels == side, conn)[rbox] & (rest > 0)])
                touch = touch[pure[touch] < p["addback_max_air_fraction"]]
                taken = np.zeros(n_rest + 1, bool)
                taken[touch] = True
                region = labels[rbox]
                region[lookup(taken, rest) & (region == 0)] = side
                del region  # (a view: it would keep labels alive)
        del rest

        lungs = np.zeros(smooth.shape, np.uint8)
        for side in (RIGHT_LUNG, LEFT_LUNG):
            m = labels == side
            if not m.any():
                continue
            # Keep the main component only (stray air such as the oesophagus is not lung).
            # (memory: labelled in the side's bounding box, the same components in the same order)
            mbox = crop_box(m)
            lab, ids = largest_components(m[mbox], 1)
            m = np.zeros_like(m)
            m[mbox] = lab == ids[0]
            del lab
            box = crop_box(m, margin=8)
            # Padded by at least the ball's radius, so a lung cut by the first or last slice is not eroded
            # there (the dilation would be cut at the pad's edge: on slices under 0.625 mm it lost 2 slices).
            pad = max(8, max(int(np.floor(5.0 / s)) for s in spacing) + 1)
            inner = (slice(pad, -pad),) * 3
            closed = erode(dilate(np.pad(m[box], pad), 5.0, spacing), 5.0, spacing)[inner]
            filled = np.zeros_like(m)
            filled[box] = closed & fill_enclosed(closed)
            filled &= body
            lungs[filled & (lungs == 0)] = side
            del m, closed, filled
        del labels
        lungs[airway_zone] = 0
        if p["pleural_closing_radius_mm"] > 0 and lungs.any():
            allowed = body & ~airway_zone & ~mediastinum(lungs)
            lungs = pleural_fill(lungs, smooth, allowed, spacing, p["pleural_closing_radius_mm"],
                                 p["pleural_fill_max_hu"])
        return lungs

    def _lesions(self, hu: np.ndarray, smooth: np.ndarray, lungs: np.ndarray, airway_zone: np.ndarray,
                 spacing: tuple[float, float, float], voxel_ml: float) -> np.ndarray:
        """Pneumonia opacity inside the lungs: ground glass, reticulation and consolidation.

        (Memory: temporaries are freed as soon as they are used, the float32 filters work in place, label maps
        are counted and looked up chunk by chunk; at most two float32 volumes of the box are alive at once.)"""
        p = self.params
        scratch = smooth  # (overwritten once smooth is no longer read: the caller passes a copy it does not keep)
        lung = lungs > 0
        rim = lung & ~erode(lung, 2.0 * max(spacing[1:]), spacing)
        # Dense tissue outside the lung (chest wall, diaphragm) counts as dense for the thickness
        # tests, so that consolidation against the pleura is judged by its full depth; the pleural
        # rim is left out when forming components so the rim does not join them all together.
        bright_ext = smooth > p["dense_threshold_hu"]  # (bright lung, or dense and not lung)
        bright = bright_ext & lung
        thick = opening(bright_ext, p["vessel_max_radius_mm"], spacing) & bright
        # Thick dense regions are consolidation, unless small or at the hilum (large vessels).
        near_hilum = coarse_within(mediastinum(lungs), spacing, p["hilum_margin_mm"])
        lab, n = ndi.label(thick & ~rim)
        if n:
            counts = label_sizes(lab, n)
            sizes = counts * voxel_ml
            # Vessels are tubes: their thickest point is thin. Consolidation is a thick blob.
            # The thick core must lie away from the hilum (large hilar vessels are thick too), and a
            # component mostly at the hilum is vessels; consolidation that merely reaches the
            # mediastinum or the paravertebral gutter (dependent lung) is kept whole.
            core = erode(bright_ext, p["consolidation_min_radius_mm"], spacing) & lung & ~near_hilum
            has_core = np.zeros(n + 1, bool)
            has_core[np.unique(lab[core])] = True
            del core
            hilar_share = np.zeros(n + 1)
            hilar_share[1:] = label_sizes(lab, n, near_hilum)[1:] / counts[1:].astype(np.float64)
            vessel_like = (sizes < p["consolidation_min_ml"]) | ~has_core | (hilar_share > 0.5)
            taken = ~vessel_like
            taken[0] = False  # (lab > 0) & ~vessel_like[lab]
            consolidation = lookup(taken, lab)
            del lab
            consolidation |= thick & rim & dilate(consolidation, 2.0 * max(spacing[1:]), spacing)
            thick_vessels = thick & ~consolidation
        else:
            del lab
            thick_vessels = consolidation = np.zeros_like(thick)
        del thick, bright_ext
        # Small vessels (not bright at this resolution) are thin structures above the vessel threshold.
        elevated = (smooth > p["vessel_threshold_hu"]) & lung
        tubes = elevated & ~opening(elevated, p["small_vessel_radius_mm"], spacing)
        del elevated
        vessels = ((bright | tubes) & ~consolidation) | thick_vessels
        del tubes
        airway_halo = dilate(airway_zone, 3.0, spacing)
        halo = dilate(vessels, p["vessel_halo_mm"], spacing) & ~consolidation
        del vessels
        halo |= airway_halo
        # Healthy-looking parenchyma per height (gravity gradient: dependent lung is denser).
        big_vessels = ndi.binary_dilation(thick_vessels | ndi.binary_opening(bright, ball(2.0, spacing)),
                                          ball(1.5, spacing)) & ~consolidation
        del thick_vessels
        valid = lung & ~big_vessels & ~airway_halo & ~rim & (smooth < -500)
        if valid.sum() > 1000:
            base = np.minimum(parenchyma_baseline(smooth, valid), p["baseline_max_hu"])[:, :, None]
        else:
            base = np.full((1, 1, 1), p["baseline_max_hu"], np.float32)
        del valid
        # 2) (first, the last use of smooth) Reticulation and patchy opacity: regions where most non-vessel
        # lung voxels are denser than the baseline by texture_delta_hu (or than texture_threshold_hu). Not at
        # the hilum, where vessels crowd.
        elev = (smooth > base + p["texture_delta_hu"]) | (smooth > p["texture_threshold_hu"])
        elev &= ~ndi.binary_dilation(bright & ~consolidation, ball(1.5, spacing))  # vessel cores and walls
        del bright, smooth
        # 1) Ground glass: parenchymal density, a local mean over lung voxels that are not vessels,
        # vessel/airway walls or the pleural rim (normalised convolution), so partial-volume halos
        # do not look like ground glass; above the lesion band and above the local baseline.
        sigma = [2.0 / s for s in spacing]
        weight = scratch
        np.copyto(weight, lung & ~halo & ~rim)  # (lung & ~halo & ~rim).astype(np.float32)
        den = ndi.gaussian_filter(weight, sigma)
        num = ndi.gaussian_filter(np.multiply(hu, weight, out=weight), sigma, output=weight)  # hu * weight
        density = _normalised(num, den, 0.05, -1000.0)  # (in num's memory; den is consumed)
        del num, den, weight
        ggo_min = np.maximum(p["lesion_min_hu"], base + p["ggo_delta_hu"])
        cand = lung & ~halo & (density >= ggo_min) & (density < p["lesion_max_hu"])
        del density, halo
        # The share is measured without the pleural rim (partial volume with the chest wall and the
        # diaphragm would fill thin costophrenic recesses), but rim voxels may still be flagged.
        texture_zone = lung & ~big_vessels & ~airway_halo
        del big_vessels, airway_halo
        w = texture_zone & ~rim
        sig = [p["texture_sigma_mm"] / s for s in spacing]
        elev &= w  # elev * w as float32 is (elev & w) as float32: 0.0 or 1.0
        frac_num = scratch
        np.copyto(frac_num, elev)  # elev.astype(np.float32)
        del elev
        ndi.gaussian_filter(frac_num, sig, output=frac_num)  # (in place, as scipy does for every axis after the first)
        frac_den = w.astype(np.float32)
        del w
        ndi.gaussian_filter(frac_den, sig, output=frac_den)
        frac = _normalised(frac_num, frac_den, 0.1, 0.0)
        del frac_num, frac_den
        cand |= texture_zone & (frac > p["texture_fraction"]) & ~near_hilum
        del frac, texture_zone
        cand |= consolidation
        cand = ndi.binary_opening(cand, ball(1.0 * max(spacing), spacing))
        labels, n = ndi.label(cand)
        if n:
            sizes = label_sizes(labels, n)
            keep = sizes * voxel_ml >= p["lesion_min_component_ml"]
            keep[0] = False
            cand = lookup(keep, labels)
        return cand


def _normalised(num: np.ndarray, den: np.ndarray, min_den: float, fill: float) -> np.ndarray:
    """``np.where(den > min_den, num / np.maximum(den, 1e-6), fill)`` for float32 ``num`` and ``den``, computed in
    ``num``'s memory (``den`` is overwritten): the same float32 operations, without three more volumes."""
    ok = den > min_den
    np.maximum(den, 1e-6, out=den)
    np.divide(num, den, out=num)
    num[~ok] = fill
    return num
