"""Classical lung, airway and lesion segmentation (thresholds, connected components, morphology).

The baseline segmenter and the teacher of the learned model. Steps, on the working grid:

1. body: everything denser than ``body_threshold_hu``, largest component, holes filled per slice;
2. airway: region growing from a trachea seed found in the upper slices, the threshold raised
   step by step while the region does not leak into the lungs;
3. lungs: air-like voxels inside the body minus the airway, components above a minimum volume,
   split into right and left (by erosion until two lungs separate when they touch), then closed and
   hole-filled so that vessels and dense lesions inside the lung stay lung;
4. lesions: lung voxels in the opacity HU range, minus thin bright structures (vessels, removed by
   a morphological opening) and the airway walls, minus specks.
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
    "airway_seed_threshold_hu": -950,
    "airway_max_threshold_hu": -900,
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


def largest_components(mask: np.ndarray, n: int = 1, min_size: int = 0) -> tuple[np.ndarray, list[int]]:
    """Label ``mask`` and return the labels plus the ids of the ``n`` largest components."""
    labels, count = ndi.label(mask)
    if count == 0:
        return labels, []
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    order = [int(i) for i in np.argsort(sizes)[::-1][:n] if sizes[i] > min_size]
    return labels, order


def crop_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """The bounding box of ``mask`` grown by ``margin`` voxels (clipped to the array)."""
    idx = np.nonzero(mask)
    return tuple(slice(max(0, int(i.min()) - margin), min(n, int(i.max()) + margin + 1))
                 for i, n in zip(idx, mask.shape))


def fill_holes_slicewise(mask: np.ndarray) -> np.ndarray:
    """Fill holes in every axial slice (vessels and lesions enclosed by lung in that slice)."""
    out = np.empty_like(mask)
    for k in range(mask.shape[0]):
        out[k] = ndi.binary_fill_holes(mask[k])
    return out


def fill_enclosed(mask: np.ndarray) -> np.ndarray:
    """Fill what the lung encloses: holes in axial slices that are also holes in coronal or sagittal slices.

    Vessels and lesions surrounded by lung are enclosed in several directions; the liver or spleen
    dome, which shows as a hole in axial slices only, opens downwards in coronal and sagittal slices
    and is therefore not taken into the lung.
    """
    axial = fill_holes_slicewise(mask)
    coronal = np.stack([ndi.binary_fill_holes(mask[:, j, :]) for j in range(mask.shape[1])], axis=1)
    sagittal = np.stack([ndi.binary_fill_holes(mask[:, :, i]) for i in range(mask.shape[2])], axis=2)
    return mask | (axial & (coronal | sagittal))


def mediastinum(lungs: np.ndarray) -> np.ndarray:
    """Voxels between the right and left lung in each (z, y) row where both lungs are present."""
    x = np.arange(lungs.shape[2])
    right_max = np.where(lungs == RIGHT_LUNG, x, -1).max(axis=2)
    left_min = np.where(lungs == LEFT_LUNG, x, lungs.shape[2]).min(axis=2)
    both = (right_max >= 0) & (left_min < lungs.shape[2])
    return both[..., None] & (x > right_max[..., None]) & (x < left_min[..., None])


def body_mask(hu: np.ndarray, threshold: float) -> np.ndarray:
    """The patient's body (largest dense component, holes filled per slice, table excluded)."""
    dense = hu > threshold
    labels, ids = largest_components(dense, 1)
    if not ids:
        return np.zeros_like(dense)
    return fill_holes_slicewise(labels == ids[0])


def find_trachea_seed(air: np.ndarray, body: np.ndarray, spacing: tuple[float, float, float]) -> tuple | None:
    """A voxel inside the trachea: a round air blob near the body's midline in an upper slice."""
    pix_area = spacing[1] * spacing[2]
    zs = np.nonzero(body.any(axis=(1, 2)))[0]
    if zs.size == 0:
        return None
    # Search downwards from the top of the body, over the upper third of the body's extent.
    top, bottom = zs.max(), zs.min()
    for z in range(top, top - max(3, (top - bottom) // 3), -1):
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
    hu: np.ndarray, body: np.ndarray, seed: tuple, spacing: tuple[float, float, float], lo: float, hi: float
) -> np.ndarray:
    """Region-grow the airway from ``seed``, raising the threshold from ``lo`` to ``hi`` until it leaks."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    best = np.zeros(hu.shape, bool)
    prev_ml = None
    for thr in np.arange(lo, hi + 1, 10.0):
        lab, _ = ndi.label((hu < thr) & body)
        if lab[seed] == 0:
            continue
        region = lab == lab[seed]
        ml = region.sum() * voxel_ml
        if ml > 400 or (prev_ml is not None and ml > 2.0 * prev_ml + 20):
            break  # leaked into the lung parenchyma
        best, prev_ml = region, ml
    return best


def split_lungs(lungs: np.ndarray, spacing: tuple[float, float, float], min_voxels: int) -> np.ndarray:
    """Label the lungs 1 (right, low x) and 2 (left), separating them by erosion when they touch."""
    labels, ids = largest_components(lungs, 2, min_voxels)
    out = np.zeros(lungs.shape, np.uint8)
    if len(ids) == 2 and min((labels == i).sum() for i in ids) > 0.15 * lungs.sum():
        comps = ids
    else:
        # One connected blob: erode until it falls apart into two large parts, then grow back.
        eroded = lungs.copy()
        comps = []
        for _ in range(12):
            eroded = ndi.binary_erosion(eroded, ball(1.5 * max(spacing[1:]), spacing))
            labels, ids = largest_components(eroded, 2, min_voxels // 10)
            if len(ids) == 2 and min((labels == i).sum() for i in ids) > 0.15 * eroded.sum():
                comps = ids
                break
        if comps:
            markers = np.zeros(lungs.shape, np.int32)
            for k, i in enumerate(comps, 1):
                markers[labels == i] = k
            # Grow the markers back into the original mask (nearest marker wins).
            dist_idx = ndi.distance_transform_edt(markers == 0, sampling=spacing, return_distances=False,
                                                  return_indices=True)
            grown = markers[tuple(dist_idx)]
            grown[~lungs] = 0
            labels, comps = grown, [1, 2]
        else:
            labels, ids = largest_components(lungs, 1, min_voxels)
            comps = ids
    centroids = [(np.nonzero(labels == i)[2].mean(), i) for i in comps]
    centroids.sort()
    if len(centroids) == 2:
        out[labels == centroids[0][1]] = RIGHT_LUNG
        out[labels == centroids[1][1]] = LEFT_LUNG
    elif len(centroids) == 1:
        # A single lung: decide its side from where it lies relative to the image centre.
        side = RIGHT_LUNG if centroids[0][0] < lungs.shape[2] / 2 else LEFT_LUNG
        out[labels == centroids[0][1]] = side
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
        p = self.params
        spacing = tuple(float(s) for s in spacing)
        voxel_ml = float(np.prod(spacing)) / 1000.0
        hu = np.asarray(hu, np.float32)
        smooth = ndi.gaussian_filter(hu, sigma=0.7)

        body = body_mask(smooth, p["body_threshold_hu"])
        air = (smooth < p["lung_threshold_hu"]) & body

        seed = find_trachea_seed(smooth < -900, body, spacing)
        if seed is not None:
            airway = grow_airway(smooth, body, seed, spacing, p["airway_seed_threshold_hu"],
                                 p["airway_max_threshold_hu"])
        else:
            log.warning("no trachea found: airway not segmented")
            airway = np.zeros(hu.shape, bool)
        airway_zone = ndi.binary_dilation(airway, ball(2.0, spacing)) & (smooth < -400) | airway

        min_vox = int(p["min_lung_volume_ml"] / voxel_ml)
        lungs_raw = air & ~airway_zone
        lungs_raw = ndi.binary_opening(lungs_raw, ball(1.0 * max(spacing), spacing)) | (lungs_raw & (smooth < -600))
        labels = split_lungs(lungs_raw, spacing, min_vox)

        lungs = np.zeros(hu.shape, np.uint8)
        for side in (RIGHT_LUNG, LEFT_LUNG):
            m = labels == side
            if not m.any():
                continue
            # Keep the main component only (stray air such as the oesophagus is not lung).
            lab, ids = largest_components(m, 1)
            m = lab == ids[0]
            box = crop_box(m, margin=8)
            closed = ndi.binary_closing(np.pad(m[box], 8), ball(5.0, spacing))[8:-8, 8:-8, 8:-8]
            filled = np.zeros_like(m)
            filled[box] = closed & fill_enclosed(closed)
            filled &= body
            lungs[filled & (lungs == 0)] = side
        lungs[airway_zone] = 0

        lesions = self._lesions(hu, smooth, lungs, airway_zone, spacing, voxel_ml)
        return Segmentation(lungs=lungs, lesions=lesions, airway=airway)

    def _lesions(self, hu, smooth, lungs, airway_zone, spacing, voxel_ml) -> np.ndarray:
        p = self.params
        lung = lungs > 0
        rim = lung & ~ndi.binary_erosion(lung, ball(2.0 * max(spacing[1:]), spacing))
        bright = (smooth > p["dense_threshold_hu"]) & lung
        thick = ndi.binary_opening(bright, ball(p["vessel_max_radius_mm"], spacing))
        # Thick dense regions are consolidation, unless small or at the hilum (large vessels).
        near_hilum = ndi.distance_transform_edt(~mediastinum(lungs), sampling=spacing) < p["hilum_margin_mm"]
        lab, n = ndi.label(thick)
        if n:
            sizes = np.bincount(lab.ravel(), minlength=n + 1) * voxel_ml
            # Vessels are tubes: their thickest point is thin. Consolidation is a thick blob.
            depth = ndi.distance_transform_edt(bright, sampling=spacing)
            thickest = np.zeros(n + 1)
            thickest[1:] = ndi.maximum(depth, lab, index=np.arange(1, n + 1))
            vessel_like = (sizes < p["consolidation_min_ml"]) | (thickest < p["consolidation_min_radius_mm"])
            vessel_like[np.unique(lab[near_hilum & thick])] = True
            vessel_like[0] = False
            thick_vessels = vessel_like[lab]
            consolidation = thick & ~thick_vessels
        else:
            thick_vessels = consolidation = np.zeros_like(thick)
        # Small vessels (not bright at this resolution) are thin structures above the vessel threshold.
        elevated = (smooth > p["vessel_threshold_hu"]) & lung
        tubes = elevated & ~ndi.binary_opening(elevated, ball(p["small_vessel_radius_mm"], spacing))
        vessels = ((bright | tubes) & ~consolidation) | thick_vessels
        halo = ndi.binary_dilation(vessels, ball(p["vessel_halo_mm"], spacing)) & ~consolidation
        halo |= ndi.binary_dilation(airway_zone, ball(3.0, spacing))
        # Parenchymal density: a local mean over lung voxels that are not vessels, vessel/airway
        # walls or the pleural rim (normalised convolution), so partial-volume halos do not look
        # like ground glass.
        weight = (lung & ~halo & ~rim).astype(np.float32)
        sigma = [2.0 / s for s in spacing]
        num = ndi.gaussian_filter(hu * weight, sigma)
        den = ndi.gaussian_filter(weight, sigma)
        density = np.where(den > 0.05, num / np.maximum(den, 1e-6), -1000.0)
        cand = lung & ~halo & (density >= p["lesion_min_hu"]) & (density < p["lesion_max_hu"])
        cand |= consolidation
        cand = ndi.binary_opening(cand, ball(1.0 * max(spacing), spacing))
        labels, n = ndi.label(cand)
        if n:
            sizes = np.bincount(labels.ravel())
            keep = sizes * voxel_ml >= p["lesion_min_component_ml"]
            keep[0] = False
            cand = keep[labels]
        return cand
