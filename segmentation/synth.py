"""Pneumonia lesion synthesis: realistic COVID-19-like opacities inserted into clean chest CT.

No voxel-labelled COVID-19 CT is available to this project, so lesion labels come from synthesis
("label-free segmentation", Yao et al., IEEE TMI 2021): opacities are painted into real normal scans
whose lung masks come from the classical teacher, and the painted region is the label.

What is modelled (all numbers are defaults of :data:`DEFAULTS`, overridable per call):

- kinds: ground glass (GGO, about -700 to -400 HU), consolidation (about -100 to +50 HU), mixed
  (consolidation core inside a ground-glass halo) and crazy paving (GGO with reticular septal lines);
- sizes from small nodular ground glass (radius 3-10 mm) to patchy (10-30 mm) and lobar (30-70 mm);
- placement: peripheral/subpleural and posterior-basal predominance, bilateral and multifocal;
  large consolidations are centred on the pleura so that they reach it;
- texture: correlated noise inside the lesion; soft partial-volume edges; ground glass is added to the
  parenchyma (vessels stay visible through it), consolidation replaces it (air bronchograms kept
  with a probability);
- opt-in fixes, off by default (the shipped model was trained without them): tube-like air bronchograms,
  a minimum ground-glass contrast, labels covering the visibly raised edge, crazy paving drawn as septa
  around secondary lobules (see :data:`DEFAULTS`);
- lesions never leave the lung mask, so the lung label (the teacher's mask of the clean scan) stays
  the right answer: consolidated lung is still lung.

Everything works on the grid it is given (any spacing); the heavy parts run in small boxes around
each lesion. Arrays are ``[z, y, x]`` LPS (z towards the head, y towards posterior).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

log = logging.getLogger(__name__)

KINDS = ("ggo", "consolidation", "mixed", "crazy_paving")

DEFAULTS: dict[str, Any] = {
    "p_empty": 0.15,  # probability of a scan with no lesion at all (teaches "clean lung is clean")
    "max_lesions": 10,
    "mean_lesions": 4.0,
    "p_bilateral": 0.7,
    "kind_probs": {"ggo": 0.4, "consolidation": 0.2, "mixed": 0.25, "crazy_paving": 0.15},
    "size_probs": {"small": 0.35, "medium": 0.45, "large": 0.2},
    "radius_mm": {"small": [3.0, 10.0], "medium": [10.0, 30.0], "large": [30.0, 60.0]},  # a cfg may give some only
    "ggo_hu": [-700.0, -400.0],
    "consolidation_hu": [-100.0, 50.0],
    "texture_std_hu": [10.0, 40.0],
    "texture_sigma_mm": 1.5,
    "edge_mm": [1.0, 3.0],  # width of the soft partial-volume edge
    "shape_noise": [0.2, 0.6],  # amplitude of the low-frequency deformation of the ellipsoid
    "peripheral_scale_mm": 15.0,  # centres favour voxels within this distance of the pleura
    "p_uniform_centre": 0.2,  # share of centres drawn without the peripheral weighting
    "posterior_bias": 1.5,
    "basal_bias": 1.5,
    "medial_bias": 0.0,  # extra weight towards the midline (mediastinal pleura, paratracheal apex); 0 = off
    "p_pleural_consolidation": 0.7,  # large consolidations centred on the pleura
    "p_air_bronchogram": 0.5,
    "vessel_gain": 0.3,  # share of the GGO attenuation added to voxels already dense (vessels)
    "crazy_line_hu": [80.0, 200.0],
    "label_threshold": 0.5,  # alpha above which a voxel is labelled lesion
    # Opt-in fixes, all off by default: the shipped weights were trained without them, and with these defaults
    # every synthetic case is byte-identical to theirs (tests/test_synth_v2.py). Numbers, not words, so that
    # training configs carrying them pass segmentation.training.check_train_config as it is.
    "air_bronchogram_below_median_hu": 0.0,  # > 0: air bronchograms only in tube-like air this far below the
    # scan's lung median (and below -920 HU), set to -1000..-950 HU; 0: any voxel < -920 HU (emphysema too)
    "ggo_min_contrast_hu": 0.0,  # > 0: ground glass at least this far above the local lung median
    "label_min_change_hu": 0.0,  # > 0: also label the (soft-edge) voxels the lesions raised by this many HU
    "crazy_paving_lobule_mm": [0.0, 0.0],  # > 0: septal lines on the walls of lobules this far apart
    "crazy_paving_septum_mm": 1.5,  # thickness of those septal lines
}


@dataclass
class LesionSpec:
    """One inserted lesion (for tests, evaluation and debugging)."""

    kind: str
    centre: tuple[int, int, int]
    radius_mm: float
    side: int  # 1 right, 2 left
    hu: float
    pleural: bool
    voxels: int = 0


@dataclass
class SynthResult:
    """A scan with inserted lesions and the masks of what was inserted."""

    hu: np.ndarray  # float32 HU with lesions
    lesions: np.ndarray  # bool, any opacity (the label)
    consolidation: np.ndarray  # bool, the consolidation part only
    pleural_consolidation: np.ndarray  # bool, consolidation of lesions that touch the pleura
    specs: list[LesionSpec] = field(default_factory=list)


def _params(cfg: dict[str, Any] | None) -> dict[str, Any]:
    p = dict(DEFAULTS)
    if cfg:
        p.update(cfg)
        # radius_mm is looked up by the size drawn, so a config that gives only some sizes (``radius_mm:
        # {large: [30, 40]}``, which check_train_config accepts) keeps the default ranges of the others instead
        # of failing with KeyError mid-training; kind_probs and size_probs are distributions and stay as given
        if isinstance(cfg.get("radius_mm"), dict):
            p["radius_mm"] = {**DEFAULTS["radius_mm"], **cfg["radius_mm"]}
    return p


def _choice(rng: np.random.Generator, probs: dict[str, float]) -> str:
    keys = list(probs)
    w = np.asarray([probs[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=w / w.sum()))]


def smooth_noise(shape: tuple[int, ...], sigma_vox: np.ndarray | float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise normalised to zero mean and unit standard deviation."""
    sig = np.broadcast_to(np.asarray(sigma_vox, float), (len(shape),))
    f = max(1, int(sig.min() / 2.0))  # smooth fields are drawn on a coarser grid, then interpolated
    if f > 1:
        small = tuple(int(np.ceil(s / f)) + 1 for s in shape)
        n = ndi.gaussian_filter(rng.standard_normal(small).astype(np.float32), sig / f, mode="reflect")
        n = ndi.zoom(n, [s / c for s, c in zip(shape, small, strict=True)], order=1, grid_mode=True,
                     mode="nearest")[tuple(slice(0, s) for s in shape)]
    else:
        n = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sig, mode="reflect")
    s = float(n.std())
    return (n - float(n.mean())) / (s if s > 0 else 1.0)


def centre_weights(lungs: np.ndarray, spacing: np.ndarray, stride: np.ndarray, p: dict[str, Any]) -> tuple:
    """Sampling weights for lesion centres on a coarse grid: peripheral, posterior and basal first.

    Returns (coarse lung labels, weights) with the weights zero outside the lungs.
    """
    lc = lungs[:: stride[0], :: stride[1], :: stride[2]]
    inside = lc > 0
    dist = ndi.distance_transform_edt(inside, sampling=spacing * stride)
    if not inside.any():  # a lung no coarse grid voxel falls on (a few voxels): no centre, no lesion
        return lc, np.zeros(lc.shape), dist
    w = np.exp(-dist / float(p["peripheral_scale_mm"]))
    zz, yy, _ = np.nonzero(inside)
    z0, z1 = zz.min(), zz.max() + 1e-6
    y0, y1 = yy.min(), yy.max() + 1e-6
    zn = (np.arange(lc.shape[0]) - z0) / (z1 - z0)  # 0 at the base (index 0 is inferior), 1 at apex
    yn = (np.arange(lc.shape[1]) - y0) / (y1 - y0)  # 0 anterior, 1 posterior
    w = w * (1.0 + p["basal_bias"] * np.clip(1.0 - zn, 0, 1))[:, None, None]
    w = w * (1.0 + p["posterior_bias"] * np.clip(yn, 0, 1))[None, :, None]
    if p.get("medial_bias", 0.0):
        _, _, xx = np.nonzero(inside)
        x0, x1 = xx.min(), xx.max() + 1e-6
        # 1 on the midline of the lungs' left-right extent, 0 at their lateral edges
        xm = 1.0 - np.abs(np.arange(lc.shape[2]) - (x0 + x1) / 2.0) / ((x1 - x0) / 2.0)
        w = w * (1.0 + p["medial_bias"] * np.clip(xm, 0, 1))[None, None, :]
    w = w * inside
    return lc, w, dist


def _pick_centre(rng: np.random.Generator, lc: np.ndarray, w: np.ndarray, side: int, uniform: bool,
                 near_pleura: bool, dist: np.ndarray) -> tuple[int, int, int] | None:
    cand = lc == side
    if near_pleura:
        cand = cand & (dist <= dist[cand].min() + 1e-6 if cand.any() else cand)
    idx = np.flatnonzero(cand)
    if idx.size == 0:
        return None
    if uniform:
        k = idx[rng.integers(idx.size)]
    else:
        ww = w.ravel()[idx].astype(np.float64)
        if ww.sum() <= 0:
            k = idx[rng.integers(idx.size)]
        else:
            k = idx[rng.choice(idx.size, p=ww / ww.sum())]
    return tuple(int(v) for v in np.unravel_index(k, lc.shape))


def septal_lines(shape: tuple[int, ...], spacing: np.ndarray, where: np.ndarray, cell_mm: float,
                 septum_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Interlobular septa for crazy paving: 1 on the walls of a Voronoi tessellation of seeds about
    ``cell_mm`` apart (a jittered grid), ``septum_mm`` thick (a septum thinner than the voxel is fainter:
    partial volume), 0 inside the lobules; computed where ``where``."""
    from scipy.spatial import cKDTree

    n = np.ceil(np.asarray(shape) * spacing / cell_mm).astype(int) + 2
    grid = np.stack(np.meshgrid(*[np.arange(-1, k - 1) for k in n], indexing="ij"), -1).reshape(-1, 3)
    seeds = (grid + 0.5 + rng.uniform(-0.25, 0.25, grid.shape)) * cell_mm  # 0.5-1.5 cell_mm apart
    lines = np.zeros(shape, np.float32)
    idx = np.nonzero(where)
    if idx[0].size == 0:
        return lines
    d, _ = cKDTree(seeds).query(np.stack(idx, 1) * spacing, k=2)
    wall = (d[:, 1] - d[:, 0]) / 2.0  # about the distance to the wall between the two nearest lobules (mm)
    v, h = float(spacing.mean()), septum_mm / 2.0  # share of the voxel the septum covers (partial volume)
    lines[idx] = np.clip(np.minimum(wall + v / 2, h) - np.maximum(wall - v / 2, -h), 0.0, None) / v
    return lines


def _tubular(air: np.ndarray, spacing: np.ndarray, min_elongation: float = 2.5) -> np.ndarray:
    """The parts of ``air`` in elongated connected components (airways), not round or scattered ones
    (emphysema): largest over second principal axis of each component's voxels at least ``min_elongation``."""
    lab, n = ndi.label(air, structure=np.ones((3, 3, 3)))
    keep = np.zeros(n + 1, bool)
    floor = float(spacing.min()) ** 2 / 12.0  # variance across a one-voxel-wide line
    for i, sl in enumerate(ndi.find_objects(lab), 1):
        pts = (np.argwhere(lab[sl] == i) + [s.start for s in sl]) * spacing
        if len(pts) >= 3:
            ev = np.linalg.eigvalsh(np.cov(pts.T))
            keep[i] = ev[2] >= min_elongation**2 * max(ev[1], floor)
    return keep[lab]


def _insert_one(out: np.ndarray, orig: np.ndarray, lung: np.ndarray, spacing: np.ndarray, centre: np.ndarray,
                radius: float, kind: str, rng: np.random.Generator, p: dict[str, Any],
                alpha_any: np.ndarray, alpha_cons: np.ndarray,
                lung_median: float = -850.0) -> tuple[float, tuple[slice, ...]] | None:
    """Paint one lesion into ``out`` (in place); update the soft label maps. Returns (HU level, box)."""
    radii = radius * rng.uniform(0.6, 1.4, 3)
    radii[0] *= rng.uniform(0.8, 1.6)  # lesions are often elongated cranio-caudally
    ext = 1.6 * radii.max() + 3.0 * float(max(p["edge_mm"]))
    half = np.ceil(ext / spacing).astype(int)
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, np.asarray(out.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    lung_b = lung[box]
    if not lung_b.any():
        return None
    shape = lung_b.shape
    grids = np.meshgrid(*[(np.arange(lo[i], hi[i]) - centre[i]) * spacing[i] for i in range(3)], indexing="ij")
    coords = np.stack([g.ravel() for g in grids], 1).astype(np.float32)
    rot = Rotation.random(random_state=int(rng.integers(2**31))).as_matrix().astype(np.float32)
    local = coords @ rot.T
    d = np.sqrt(((local / radii.astype(np.float32)) ** 2).sum(1)).reshape(shape).astype(np.float32)
    # Low-frequency deformation of the ellipsoid (irregular, lobulated borders).
    amp = rng.uniform(*p["shape_noise"])
    sig = np.maximum(radii.mean() / 2.5 / spacing, 0.5)
    f = 1.0 - d + amp * 0.5 * smooth_noise(shape, sig, rng)
    edge = rng.uniform(*p["edge_mm"]) / radii.mean()
    alpha = np.clip(0.5 + f / (2.0 * edge), 0.0, 1.0)
    alpha = alpha * alpha * (3 - 2 * alpha)  # smoothstep: soft partial-volume edge
    alpha = alpha * lung_b
    if not (alpha > p["label_threshold"]).any():
        return None

    o = orig[box]
    cur = out[box]
    local = float(np.median(o[lung_b > 0])) if p["ggo_min_contrast_hu"] > 0 else 0.0
    tex = smooth_noise(shape, np.maximum(p["texture_sigma_mm"] / spacing, 0.3), rng)
    tstd = rng.uniform(*p["texture_std_hu"])
    level = 0.0
    cons_alpha = np.zeros(shape, np.float32)
    if kind in ("ggo", "mixed", "crazy_paving"):
        level = rng.uniform(*p["ggo_hu"])
        if p["ggo_min_contrast_hu"] > 0:  # visible on dense lung too
            level = max(level, local + p["ggo_min_contrast_hu"])
        target = level + tstd * tex
        par = np.minimum(o, -750.0)
        gain = np.maximum(target - par, 0.0)
        gain = np.where(o > -600.0, gain * p["vessel_gain"], gain)  # vessels stay visible through GGO
        ggo = o + gain
        if kind == "crazy_paving":
            if max(p["crazy_paving_lobule_mm"]) > 0:  # a network of septa around secondary lobules
                lines = septal_lines(shape, spacing, alpha > 0, rng.uniform(*p["crazy_paving_lobule_mm"]),
                                     float(p["crazy_paving_septum_mm"]), rng)
            else:
                band = smooth_noise(shape, np.maximum(1.2 / spacing, 0.3), rng) - smooth_noise(
                    shape, np.maximum(3.0 / spacing, 0.5), rng)
                lines = np.clip(1.0 - np.abs(band) / 0.25, 0, 1)
            ggo = ggo + rng.uniform(*p["crazy_line_hu"]) * lines
        cur = np.maximum(cur, (1 - alpha) * cur + alpha * ggo)
        if kind == "mixed":
            core = rng.uniform(0.25, 0.6)  # consolidation where the shape function is high
            cons_alpha = np.clip(0.5 + (f - core) / (2.0 * edge), 0.0, 1.0) * lung_b
    if kind == "consolidation":
        cons_alpha = alpha
    if cons_alpha.any():
        clevel = rng.uniform(*p["consolidation_hu"])
        level = clevel if kind == "consolidation" else level
        ctarget = clevel + tstd * tex
        new = (1 - cons_alpha) * cur + cons_alpha * ctarget
        if rng.random() < p["p_air_bronchogram"]:
            below = p["air_bronchogram_below_median_hu"]
            air = ndi.gaussian_filter(o, 0.7) < (min(-920.0, lung_median - below) if below > 0 else -920.0)
            if below > 0:  # air only in airways (tubes), as air: not in emphysematous lung
                air = _tubular(air & (cons_alpha > 0.5), spacing)
                new = np.where(air, np.clip(o, -1000.0, -950.0), new)
            else:
                new = np.where(air & (cons_alpha > 0.5), np.minimum(o + 100.0, new), new)
        cur = new
    out[box] = cur
    np.maximum(alpha_any[box], alpha, out=alpha_any[box])
    np.maximum(alpha_cons[box], cons_alpha, out=alpha_cons[box])
    return level, box


def synthesize(hu: np.ndarray, lungs: np.ndarray, spacing: tuple[float, float, float],
               rng: np.random.Generator | int | None = None, cfg: dict[str, Any] | None = None,
               n_lesions: int | None = None) -> SynthResult:
    """Insert pneumonia-like lesions into a clean scan.

    Args:
        hu: HU volume ``[z, y, x]`` (LPS), clean (no pneumonia).
        lungs: lung labels of the same grid (1 right, 2 left), e.g. the classical teacher's.
        spacing: voxel size (z, y, x) in mm.
        rng: random generator or seed.
        cfg: overrides of :data:`DEFAULTS`.
        n_lesions: force the number of lesions (None: random, possibly zero).

    Returns:
        :class:`SynthResult` with the new HU volume and the lesion, consolidation and
        pleural-consolidation masks (all inside ``lungs``).
    """
    p = _params(cfg)
    if max(p["crazy_paving_lobule_mm"]) > 0 and min(p["crazy_paving_lobule_mm"]) < 2.0:
        raise ValueError("crazy_paving_lobule_mm must be [0, 0] (off) or at least 2 mm, got "
                         f"{p['crazy_paving_lobule_mm']}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    sp = np.asarray(spacing, float)
    orig = np.asarray(hu, np.float32)
    out = orig.copy()
    lung = (lungs > 0).astype(np.float32)
    alpha_any = np.zeros(orig.shape, np.float32)
    alpha_cons = np.zeros(orig.shape, np.float32)
    empty = np.zeros(orig.shape, bool)
    pleural_cons = np.zeros(orig.shape, bool)
    if not lung.any():
        return SynthResult(out, empty, empty.copy(), pleural_cons)
    if n_lesions is None:
        n_lesions = 0 if rng.random() < p["p_empty"] else int(
            np.clip(rng.poisson(p["mean_lesions"] - 1) + 1, 1, p["max_lesions"]))
    lung_median = float(np.median(orig[lung > 0])) if p["air_bronchogram_below_median_hu"] > 0 else -850.0
    stride = np.maximum(1, np.round(4.0 / sp)).astype(int)
    lc, w, dist = centre_weights(lungs, sp, stride, p)
    sides = [s for s in (1, 2) if (lc == s).any()]
    if not sides:
        return SynthResult(out, empty, empty.copy(), pleural_cons)
    bilateral = len(sides) == 2 and rng.random() < p["p_bilateral"]
    main_side = sides[int(rng.integers(len(sides)))]
    specs: list[LesionSpec] = []
    for i in range(n_lesions):
        side = sides[i % 2] if bilateral else main_side
        kind = _choice(rng, p["kind_probs"])
        size = _choice(rng, p["size_probs"])
        if kind == "consolidation" and size == "small":
            size = "medium"
        radius = float(rng.uniform(*p["radius_mm"][size]))
        pleural = kind in ("consolidation", "mixed") and size != "small" and rng.random() < p[
            "p_pleural_consolidation"]
        c = _pick_centre(rng, lc, w, side, rng.random() < p["p_uniform_centre"], pleural, dist)
        if c is None:
            continue
        centre = np.minimum(np.asarray(c) * stride + stride // 2, np.asarray(orig.shape) - 1)
        before = alpha_cons.copy() if pleural else None
        res = _insert_one(out, orig, lung, sp, centre, radius, kind, rng, p, alpha_any, alpha_cons,
                          lung_median)
        if res is None:
            continue
        level, box = res
        n_vox = int((alpha_any[box] > p["label_threshold"]).sum())
        specs.append(LesionSpec(kind, tuple(int(v) for v in centre), radius, side, float(level), pleural, n_vox))
        if pleural and before is not None:
            pleural_cons[box] |= (alpha_cons[box] > p["label_threshold"]) & ~(before[box] > p["label_threshold"])
    lesions = (alpha_any > p["label_threshold"]) & (lung > 0)
    if p["label_min_change_hu"] > 0:  # also the soft edges the lesions visibly raised
        lesions |= (out - orig >= p["label_min_change_hu"]) & (lung > 0)
    cons = (alpha_cons > p["label_threshold"]) & (lung > 0)
    pleural_cons &= cons
    # A pleural consolidation must actually reach the pleura (touch the lung border).
    if pleural_cons.any():
        border = (lung > 0) & ~ndi.binary_erosion(lung > 0, iterations=1)
        lab, n = ndi.label(pleural_cons)
        touching = np.unique(lab[border & (lab > 0)])
        pleural_cons = np.isin(lab, touching[touching > 0])
    log.debug("inserted %d lesions (%s)", len(specs), ", ".join(s.kind for s in specs))
    return SynthResult(out, lesions, cons, pleural_cons, specs)
