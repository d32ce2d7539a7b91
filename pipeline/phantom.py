"""Procedural chest CT phantom with known anatomy, lesions, landmarks and scores.

The phantom is built analytically in patient coordinates (DICOM LPS, millimetres): ``x`` grows to
the patient's LEFT, ``y`` grows POSTERIOR, ``z`` grows toward the HEAD. Arrays are indexed
``[z, y, x]`` with the z index growing head-ward, so ``hu[k]`` is the axial slice at
``z_mm[k]``. Everything is deterministic for a given ``seed`` and set of arguments.

Anatomy (HU): air outside the body, a body ellipse with subcutaneous fat and a muscle chest wall,
ribs, clavicles, sternum and manubrium, the thoracic spine, right and left lungs (about -850 HU) with
rounded apices and diaphragm domes (right dome higher), mediastinal fat, heart and left atrium,
ascending aorta, aortic arch and descending aorta, superior vena cava and supra-aortic vessels,
trachea dividing at the carina into the main bronchi (right steeper and shorter, with the bronchus
intermedius below the right upper lobe take-off), inferior pulmonary veins entering the left
atrium at a defined level, branching pulmonary vessels, liver, stomach (with a gas bubble) and
spleen under the domes, and lesions of known class: 1 faint ground glass, 2 ground glass,
3 consolidation.

The ground truth (landmark levels, volumes, six-zone and zhang900 scores) is computed here from the
truth label maps by small functions that do not use the rest of the project.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

RIGHT, LEFT = 1, 2
FAINT_GGO, GGO, CONSOLIDATION = 1, 2, 3
CLASS_KEYS = {FAINT_GGO: "faint_ggo", GGO: "ggo", CONSOLIDATION: "consolidation"}
SIDE_NAMES = {RIGHT: "right", LEFT: "left"}
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DEFAULT_STUDY_DATE = "20200315"
IMPLEMENTATION_VERSION_NAME = "CTSCORE_PHANTOM"  # in every file write_dicom_series writes (its file meta)

DEFAULT_SHAPE = (124, 160, 160)
DEFAULT_SPACING = (2.5, 2.2, 2.2)  # (dz, dy, dx) mm
DEFAULT_Z_CENTER_MM = -35.0  # patient z of the volume centre; the carina is at z = 0

#: Landmark levels (patient z, mm). Offsets from the carina follow typical adult anatomy; the
#: inferior pulmonary vein lies 0.72 of the way from the carina to the right dome apex.
LANDMARKS_MM = {
    "suprasternal_notch": 67.0,
    "aortic_arch": 27.0,
    "carina": 0.0,
    "bronchus_intermedius": -22.0,
    "ipv_right": -79.2,
    "ipv_left": -79.2,
    "dome_right": -110.0,
    "dome_left": -125.0,
    "apex_cap_right": 95.0,
    "apex_cap_left": 93.0,
}

# HU of the tissues.
HU = {
    "air": -1000.0, "fat": -100.0, "med_fat": -90.0, "muscle": 40.0, "soft": 40.0, "blood": 42.0,
    "liver": 60.0, "spleen": 50.0, "stomach": 25.0, "bone_cortex": 700.0, "bone_marrow": 250.0,
    "vertebra": 400.0, "disc": 90.0, "csf": 12.0, "lung": -850.0,
    "faint_ggo": -655.0, "ggo": -440.0, "consolidation": -5.0,
}


@dataclass(frozen=True)
class LesionSpec:
    """One lesion: a rough, column-like ellipsoid clipped to one lung.

    ``center_mm`` is (x, y, z) in patient LPS mm, ``radii_mm`` the semi-axes (rx, ry, rz);
    ``z_power`` > 2 flattens the top and bottom so the cross-section stays nearly constant over
    the lesion's height (slab scores do not depend much on the exact level).
    """

    name: str
    side: int  # RIGHT or LEFT
    cls: int  # FAINT_GGO, GGO or CONSOLIDATION
    center_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    z_power: float = 6.0
    roughness: float = 0.12

    def __post_init__(self) -> None:
        if isinstance(self.side, bool) or self.side not in SIDE_NAMES:
            raise ValueError(f"lesion {self.name!r}: side must be RIGHT (1) or LEFT (2), got {self.side!r}")
        if isinstance(self.cls, bool) or self.cls not in CLASS_KEYS:
            raise ValueError(f"lesion {self.name!r}: cls must be FAINT_GGO (1), GGO (2) or CONSOLIDATION (3), "
                             f"got {self.cls!r}")
        if len(self.center_mm) != 3 or not all(math.isfinite(v) for v in self.center_mm):
            raise ValueError(f"lesion {self.name!r}: center_mm must be three finite numbers (x, y, z), "
                             f"got {self.center_mm!r}")
        if len(self.radii_mm) != 3 or not all(math.isfinite(v) and v > 0 for v in self.radii_mm):
            raise ValueError(f"lesion {self.name!r}: radii_mm must be three finite numbers > 0 (rx, ry, rz), "
                             f"got {self.radii_mm!r}")


def default_lesions() -> list[LesionSpec]:
    """The sample's lesions: zones and slab levels chosen far from every score threshold.

    Every lesion stays >= 15 mm from the six-zone planes (carina, inferior pulmonary vein) and
    covers its zhang900 slab (+-5 mm) with >= 7 mm to spare, or stays >= 7 mm away from it:

    * right upper zone: consolidation surrounded by aerated lung through the aortic-arch level (L2);
    * left upper zone: faint ground glass at the apex through the suprasternal-notch level (L1) and
      ground glass through L2;
    * right middle zone: ground glass with a vessel running through it (between L4 and the IPV);
    * left middle zone: consolidation touching the posterolateral pleura (between L4 and the IPV);
    * right lower zone: posterobasal consolidation against the posterior chest wall at the right dome
      level (L5), in the thick part of the lower lobe with aerated lung in front of, beside and
      below it (the costophrenic recess stays aerated);
    * left lower zone, carina (L3), bronchus intermedius (L4) and left dome (L5) levels: none.
    """
    return [
        LesionSpec("rul_consolidation", RIGHT, CONSOLIDATION, (-84.0, -5.0, 31.0), (26.0, 28.0, 14.0)),
        LesionSpec("lul_faint_ggo", LEFT, FAINT_GGO, (66.0, 10.0, 68.0), (28.0, 33.0, 16.0)),
        LesionSpec("lul_ggo", LEFT, GGO, (80.0, 0.0, 31.0), (52.0, 56.0, 14.0)),
        LesionSpec("rml_ggo_vessel", RIGHT, GGO, (-95.0, 0.0, -47.0), (40.0, 45.0, 14.0)),
        LesionSpec("lml_consolidation", LEFT, CONSOLIDATION, (108.0, 45.0, -47.0), (42.0, 42.0, 14.0)),
        LesionSpec("rll_consolidation", RIGHT, CONSOLIDATION, (-75.0, 67.0, -110.0), (43.0, 31.0, 13.0)),
    ]


def heavy_lesions() -> list[LesionSpec]:
    """A heavy bilateral load (severe pneumonia): large ground glass and consolidation everywhere."""
    out = []
    for side, sx in ((RIGHT, -1.0), (LEFT, 1.0)):
        out += [
            LesionSpec(f"{SIDE_NAMES[side]}_upper_ggo", side, GGO, (sx * 70, 10.0, 50.0), (60.0, 70.0, 45.0)),
            LesionSpec(f"{SIDE_NAMES[side]}_mid_faint", side, FAINT_GGO, (sx * 95, -20.0, -40.0), (40.0, 60.0, 35.0)),
            LesionSpec(f"{SIDE_NAMES[side]}_lower_cons", side, CONSOLIDATION, (sx * 90, 55.0, -110.0),
                       (55.0, 45.0, 50.0)),
        ]
    return out


@dataclass
class Phantom:
    """A generated phantom: HU volume, truth label maps, landmark levels and geometry.

    Arrays are ``[z, y, x]`` in LPS (x to patient left, y posterior, z head-ward).
    ``origin`` is the patient (x, y, z) of voxel [0, 0, 0]; ``spacing`` is (dz, dy, dx) in mm.
    """

    hu: np.ndarray  # float32, integer-valued HU
    lungs: np.ndarray  # uint8: 0 none, 1 right lung, 2 left lung
    lesions: np.ndarray  # uint8: 0 none, 1 faint GGO, 2 GGO, 3 consolidation
    airway: np.ndarray  # bool: lumen of trachea, main bronchi and bronchus intermedius
    vessels: np.ndarray  # bool: pulmonary vessel voxels (vessel fraction >= 0.5) inside the lungs
    landmarks_z_mm: dict[str, float]
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    seed: int
    lesion_specs: list[LesionSpec] = field(default_factory=list)
    orientation: str = "axial"
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Z, Y, X)."""
        return tuple(int(s) for s in self.hu.shape)  # type: ignore[return-value]

    @property
    def z_mm(self) -> np.ndarray:
        """Patient z (mm) of each slice."""
        return self.origin[2] + np.arange(self.hu.shape[0]) * self.spacing[0]

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in mL."""
        return float(np.prod(self.spacing)) / 1000.0


# --------------------------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """Broadcastable patient coordinates of the voxel centres."""

    x: np.ndarray  # (1, 1, X)
    y: np.ndarray  # (1, Y, 1)
    z: np.ndarray  # (Z, 1, 1)
    spacing: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.z.shape[0], self.y.shape[1], self.x.shape[2])


def _make_grid(shape: Sequence[int], spacing: Sequence[float], z_center: float) -> _Grid:
    nz, ny, nx = (int(s) for s in shape)
    dz, dy, dx = (float(s) for s in spacing)
    x = ((np.arange(nx) - (nx - 1) / 2.0) * dx).reshape(1, 1, nx)
    y = ((np.arange(ny) - (ny - 1) / 2.0) * dy).reshape(1, ny, 1)
    z = (z_center + (np.arange(nz) - (nz - 1) / 2.0) * dz).reshape(nz, 1, 1)
    return _Grid(x.astype(np.float32), y.astype(np.float32), z.astype(np.float64), (dz, dy, dx))


def _box(grid: _Grid, lo: Sequence[float], hi: Sequence[float]) -> tuple[slice, slice, slice] | None:
    """Index box of the voxels whose centres lie in the patient box [lo, hi] (x, y, z order)."""
    out = []
    for axis_vals, a, b in ((grid.z.ravel(), lo[2], hi[2]), (grid.y.ravel(), lo[1], hi[1]),
                            (grid.x.ravel(), lo[0], hi[0])):
        idx = np.nonzero((axis_vals >= a) & (axis_vals <= b))[0]
        if idx.size == 0:
            return None
        out.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(out)  # type: ignore[return-value]


def _segment_distance(grid: _Grid, box: tuple[slice, slice, slice], p0: np.ndarray, p1: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) from voxel centres in ``box`` to segment p0-p1, and the projection parameter t."""
    x = grid.x[:, :, box[2]]
    y = grid.y[:, box[1], :]
    z = grid.z[box[0]].astype(np.float32)
    d = p1 - p0
    dd = float(d @ d) or 1e-9
    t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / dd
    tc = np.clip(t, 0.0, 1.0)
    dist = np.sqrt((x - p0[0] - tc * d[0]) ** 2 + (y - p0[1] - tc * d[1]) ** 2 + (z - p0[2] - tc * d[2]) ** 2)
    return dist, t


def _tube(grid: _Grid, p0: Sequence[float], p1: Sequence[float], r0: float, r1: float | None = None,
          soft: bool = False, capped: bool = True) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Voxels of a (tapered) tube between p0 and p1: (box, mask or fraction in that box).

    ``soft`` returns a partial-volume fraction in [0, 1] instead of a boolean mask; ``capped``
    gives rounded ends (otherwise flat ends perpendicular to the axis).
    """
    r1 = r0 if r1 is None else r1
    a, b = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
    rmax = max(r0, r1) + 2.0
    box = _box(grid, np.minimum(a, b) - rmax, np.maximum(a, b) + rmax)
    if box is None:
        return None
    dist, t = _segment_distance(grid, box, a, b)
    r = r0 + (r1 - r0) * np.clip(t, 0.0, 1.0)
    if soft:
        vox = min(grid.spacing)
        frac = np.clip((r - dist) / vox + 0.5, 0.0, 1.0)
        if not capped:
            frac = np.where((t >= 0) & (t <= 1), frac, 0.0)
        return box, frac.astype(np.float32)
    m = dist <= r
    if not capped:
        m &= (t >= 0) & (t <= 1)
    return box, m


def _paint(vol: np.ndarray, item: tuple[tuple[slice, slice, slice], np.ndarray] | None, value: float,
           where: np.ndarray | None = None) -> None:
    """Set ``vol`` to ``value`` on a boxed mask (optionally only where ``where`` is true)."""
    if item is None:
        return
    box, m = item
    if where is not None:
        m = m & where[box]
    vol[box][m] = value


def _or(mask: np.ndarray, item: tuple[tuple[slice, slice, slice], np.ndarray] | None) -> None:
    """OR a boxed mask into ``mask``."""
    if item is not None:
        box, m = item
        mask[box] |= m


def _diaphragm_z(grid: _Grid, lm: dict[str, float]) -> np.ndarray:
    """Patient z (mm) of the diaphragm's upper surface over (y, x): two domes, right higher.

    Each dome is a paraboloid convex upward with its apex at the landmark level, dropping faster
    posteriorly so the lungs wrap around the domes into the posterior costophrenic recesses.
    """
    x, y = grid.x[0], grid.y[0]
    post = np.maximum(y, 0.0)
    right = lm["dome_right"] - ((x + 60.0) ** 2 + y**2) / 180.0 - 0.30 * post
    left = lm["dome_left"] - ((x - 65.0) ** 2 + (y - 5.0) ** 2) / 180.0 - 0.30 * post
    # the costophrenic recesses bottom out (flat floor) 50 mm below the right and 45 mm below the left dome
    right = np.maximum(right, lm["dome_right"] - 50.0)
    left = np.maximum(left, lm["dome_left"] - 45.0)
    return np.maximum(right, left).astype(np.float32)  # (Y, X)


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma_vox: Sequence[float]) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation."""
    n = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="reflect")
    sd = float(n.std()) or 1.0
    return n / sd


# --------------------------------------------------------------------------------------------
# Phantom generation
# --------------------------------------------------------------------------------------------


def _vessel_tree(rng: np.random.Generator, root: np.ndarray, direction: np.ndarray, length: float,
                 radius: float, depth: int, max_depth: int) -> list[tuple[np.ndarray, np.ndarray, float, float]]:
    """Segments (p0, p1, r0, r1) of a random binary branching tree, thinner toward the periphery."""
    direction = direction / np.linalg.norm(direction)
    end = root + direction * length
    r_end = max(1.0, radius * 0.78)
    segs = [(root, end, radius, r_end)]
    if depth >= max_depth:
        return segs
    for _ in range(2):
        perturb = rng.normal(0.0, 0.55, 3)
        perturb -= perturb.dot(direction) * direction
        child = direction + perturb
        segs += _vessel_tree(rng, end, child, length * rng.uniform(0.7, 0.9), max(1.0, radius * 0.72),
                             depth + 1, max_depth)
    return segs


def _resolve_lesions(lesions: str | Sequence[LesionSpec] | None) -> list[LesionSpec]:
    if lesions is None or lesions == "none":
        return []
    if lesions == "default":
        return default_lesions()
    if lesions == "heavy":
        return heavy_lesions()
    if isinstance(lesions, str):
        raise ValueError(f"unknown lesion load {lesions!r}: use 'default', 'heavy', 'none' or a list")
    return list(lesions)


def _check_grid(shape: Sequence[int], spacing: Sequence[float]) -> None:
    """Refuse a grid the phantom cannot be built on, naming the argument (not an IndexError deep inside)."""
    if len(shape) != 3 or not all(int(s) == s and s >= 1 for s in shape):
        raise ValueError(f"shape must be three whole numbers >= 1 (Z, Y, X), got {tuple(shape)!r}")
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three finite numbers > 0 (dz, dy, dx) in mm, got {tuple(spacing)!r}")


def make_phantom(shape: Sequence[int] = DEFAULT_SHAPE, spacing: Sequence[float] = DEFAULT_SPACING,
                 seed: int = 0, lesions: str | Sequence[LesionSpec] | None = "default",
                 orientation: str = "axial", noise_sd: float = 18.0,
                 z_center_mm: float = DEFAULT_Z_CENTER_MM) -> Phantom:
    """Build the procedural chest phantom on a grid of ``shape`` (Z, Y, X) and ``spacing`` (dz, dy, dx).

    ``lesions``: "default" (the sample's lesions), "heavy", None / "none", or a list of
    :class:`LesionSpec`. ``orientation`` is only recorded (it is how :func:`write_dicom_series`
    writes the slices by default: "axial" head-first, "feet_first", or "reversed" slice order).
    The grid is centred on ``z_center_mm`` in z and on the body in x and y; the carina is at z = 0.
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"unknown orientation {orientation!r}: one of {sorted(ORIENTATIONS)}")
    _check_grid(shape, spacing)
    grid = _make_grid(shape, spacing, z_center_mm)
    nz, ny, nx = grid.shape
    rng = np.random.default_rng(seed)
    lm = dict(LANDMARKS_MM)
    x, y, z = grid.x, grid.y, grid.z.astype(np.float32)
    full = (nz, ny, nx)

    # --- body, chest wall, cavity, diaphragm ---------------------------------------------------
    e_body = (x / 155.0) ** 2 + ((y - 5.0) / 120.0) ** 2  # (1, Y, X)
    e_muscle = (x / 143.0) ** 2 + ((y - 5.0) / 108.0) ** 2
    e_cav = (x / 125.0) ** 2 + ((y - 5.0) / 85.0) ** 2
    hu = np.full(full, HU["air"], np.float32)
    hu[:] = np.where(e_body <= 1.0, HU["fat"], HU["air"])
    hu[:] = np.where(e_muscle <= 1.0, HU["muscle"], hu)
    cav2d = e_cav < 1.0
    dz_surf = _diaphragm_z(grid, lm)[None]  # (1, Y, X)
    thorax = cav2d & (z > dz_surf + 4.0)  # above the diaphragm muscle
    abdomen = cav2d & (z < dz_surf)
    hu[cav2d & (z >= dz_surf)] = HU["muscle"]  # diaphragm band, overwritten above by thorax
    hu[thorax] = HU["med_fat"]
    neck = thorax & (z > lm["apex_cap_right"] + 8.0)
    hu[neck] = HU["muscle"]

    # abdomen: soft tissue, liver (right), stomach with gas (left anterior), spleen (left posterior)
    hu[abdomen] = HU["soft"]
    depth_below = dz_surf - z  # mm below the diaphragm surface
    liver = abdomen & (x < 30.0) & (depth_below > 0)
    hu[liver] = HU["liver"]
    e_st = ((x - 55.0) / 40.0) ** 2 + ((y + 25.0) / 35.0) ** 2
    stomach = abdomen & (e_st < 1.0) & (x >= 30.0)
    hu[stomach] = HU["stomach"]
    gas = stomach & (depth_below > 10.0) & (depth_below < 26.0) & (e_st < 0.45)
    hu[gas] = HU["air"]
    spleen = abdomen & (((x - 95.0) / 25.0) ** 2 + ((y - 55.0) / 30.0) ** 2 < 1.0)
    hu[spleen] = HU["spleen"]

    # --- mediastinum ---------------------------------------------------------------------------
    med = np.zeros(full, bool)  # soft-tissue structures that are not lung
    med |= (np.abs(x) < 22.0) & (y < 62.0) & thorax  # midline strip (fat + structures)
    heart = (((x - 25.0) / 52.0) ** 2 + ((y + 20.0) / 46.0) ** 2 + ((z + 88.0) / 48.0) ** 2) < 1.0
    la = ((x - 8.0) ** 2 + (y - 28.0) ** 2 + (z + 70.0) ** 2) < 22.0**2
    # below its equator the heart sits on the diaphragm as a real one does (an ellipsoid's rounded tip had lung
    # wrapped under it, which the network took for a lesion: a sample audit, 2026-12-06)
    heart |= (z < -88.0) & ((((x - 25.0) / 52.0) ** 2 + ((y + 20.0) / 46.0) ** 2) < 1.0)
    heart = (heart | la) & thorax
    soft_items = []
    # aorta: ascending (anterior right), arch (anterior-right to posterior-left), descending
    a_xy, d_xy = np.array([-12.0, -15.0]), np.array([20.0, 48.0])
    mid = (a_xy + d_xy) / 2.0
    half = float(np.linalg.norm(d_xy - a_xy) / 2.0)
    zc = lm["aortic_arch"] - half
    ts = np.linspace(0.0, math.pi, 13)
    arch_pts = [np.array([*(mid + math.cos(t) * (a_xy - mid)), zc + half * math.sin(t)]) for t in ts]
    aorta_r = [14.0 - 3.0 * t / math.pi for t in ts]
    for i in range(len(ts) - 1):
        soft_items.append(_tube(grid, arch_pts[i], arch_pts[i + 1], aorta_r[i], aorta_r[i + 1]))
    soft_items.append(_tube(grid, (a_xy[0], a_xy[1], -45.0), arch_pts[0], 14.0))
    soft_items.append(_tube(grid, arch_pts[-1], (d_xy[0], d_xy[1], -400.0), 11.0))
    # supra-aortic vessels and superior vena cava
    for t_idx, top, r in ((3, (-16.0, -5.0, 200.0), 6.0), (6, (5.0, 2.0, 200.0), 4.5), (8, (16.0, 18.0, 200.0), 5.0)):
        soft_items.append(_tube(grid, arch_pts[t_idx], top, r))
    soft_items.append(_tube(grid, (-32.0, -8.0, -35.0), (-30.0, -5.0, 200.0), 9.0))
    soft_items.append(_tube(grid, (4.0, 40.0, 200.0), (6.0, 40.0, -140.0), 7.0))  # esophagus
    for sx in (-1.0, 1.0):  # hila
        soft_items.append(_tube(grid, (sx * 22.0, 15.0, -8.0), (sx * 36.0, 18.0, -16.0), 11.0))
    # inferior pulmonary veins: horizontal, from the lower lobes into the left atrium (in-lung part below)
    ipv_r = ((-75.0, 55.0, lm["ipv_right"]), (-2.0, 30.0, lm["ipv_right"]))
    ipv_l = ((85.0, 55.0, lm["ipv_left"]), (18.0, 30.0, lm["ipv_left"]))
    for p0, p1 in (ipv_r, ipv_l):
        # the mediastinal segment (medial half) is soft tissue; the lateral half is an intrapulmonary vessel
        q = (np.asarray(p0) + np.asarray(p1)) / 2.0
        soft_items.append(_tube(grid, q, p1, 6.5))
    for it in soft_items:
        _or(med, it)
    med &= thorax
    hu[med] = HU["med_fat"]
    for it in soft_items:
        _paint(hu, it, HU["blood"], thorax)
    hu[heart] = HU["blood"]
    med |= heart
    # pericardial fat rim look: leave mediastinal fat between structures as is.

    # spine (vertebral body, canal, posterior elements) and discs
    r_vb = np.sqrt(x**2 + (y - 75.0) ** 2)
    vb = (r_vb < 17.0) & (e_body <= 1.0)
    disc_z = (np.mod(z - 3.0, 28.0) < 5.0)
    spine = np.broadcast_to(vb, full) & ~np.broadcast_to(disc_z, full)
    hu[np.broadcast_to(vb, full)] = HU["disc"]
    hu[spine] = HU["vertebra"]
    hu[spine & np.broadcast_to(r_vb > 14.5, full)] = HU["bone_cortex"]
    canal = np.broadcast_to(x**2 + (y - 100.0) ** 2 < 8.0**2, full)
    post_el = np.broadcast_to(((np.abs(x) < 5.0) & (y > 108.0) & (y < 122.0))
                              | ((np.abs(np.abs(x) - 13.0) < 5.0) & (np.abs(y - 97.0) < 5.0)), full) \
        & ~np.broadcast_to(disc_z, full)
    hu[post_el] = HU["bone_cortex"]
    hu[canal] = HU["csf"]
    med |= np.broadcast_to(r_vb < 21.0, full)

    # ribs: tilted elliptical bands in the chest wall, anterior ends lower; cartilage gap anteriorly
    rho = np.sqrt(e_cav)
    band = (rho > 1.035) & (rho < 1.11) & (y > -55.0)
    for k in range(12):
        z_post = lm["apex_cap_right"] + 2.0 - 23.0 * k
        zr = z_post + 0.30 * (y - 85.0)
        rib = band & (np.abs(z - zr) < 4.5)
        hu[rib] = HU["bone_marrow"]
        hu[rib & ((rho < 1.05) | (rho > 1.095) | (np.abs(z - zr) > 3.0))] = HU["bone_cortex"]
    # sternum body and manubrium (top of the manubrium = suprasternal notch)
    st_y = (y > -100.0) & (y < -86.0)
    sternum = st_y & (np.abs(x) < 14.0) & (z < lm["suprasternal_notch"] - 35.0) & (z > lm["dome_right"] + 15.0)
    manubrium = st_y & (np.abs(x) < 24.0) & (z <= lm["suprasternal_notch"]) & (z >= lm["suprasternal_notch"] - 35.0)
    hu[sternum | manubrium] = HU["bone_marrow"]
    hu[(sternum | manubrium) & ~((y > -97.0) & (y < -89.0))] = HU["bone_cortex"]
    for sx in (-1.0, 1.0):  # clavicles, articulating with the manubrium just above the notch
        _paint(hu, _tube(grid, (sx * 26.0, -92.0, lm["suprasternal_notch"] + 2.0),
                         (sx * 125.0, -55.0, lm["suprasternal_notch"] + 22.0), 6.5), HU["bone_cortex"])

    # --- lungs ---------------------------------------------------------------------------------
    lungs = np.zeros(full, np.uint8)
    lung_base = thorax & ~med
    for side, sx, cap in ((RIGHT, -1.0, lm["apex_cap_right"]), (LEFT, 1.0, lm["apex_cap_left"])):
        ax, ay, ra = sx * 58.0, 30.0, 48.0
        below_apex = z < cap - ((x - ax) ** 2 + (y - ay) ** 2) / (2.0 * ra)
        lungs[lung_base & (sx * x > 0) & below_apex] = side
    # parenchyma HU with a mild anterior-posterior gradient (dependent lung denser)
    lung_any = lungs > 0
    hu[lung_any] = np.broadcast_to(HU["lung"] + 0.12 * (y - 5.0), full)[lung_any]

    # --- airways -------------------------------------------------------------------------------
    airway = np.zeros(full, bool)
    airway_wall = np.zeros(full, bool)
    above = z >= lm["carina"]
    below = z < lm["carina"]
    c = lm["carina"]
    trachea = ((0.0, 6.0, 260.0), (0.0, 15.0, c))
    r_main = ((-8.5, 15.0, c), (-15.0, 16.0, c - 14.0))
    l_main = ((8.5, 15.0, c), (40.0, 22.0, c - 30.0))
    bi = ((-15.0, 16.0, c - 14.0), (-26.0, 24.0, c - 50.0))
    rul = ((-15.0, 16.0, c - 14.0), (-44.0, 18.0, c - 8.0))
    lul = ((40.0, 22.0, c - 30.0), (56.0, 8.0, c - 16.0))
    lll = ((40.0, 22.0, c - 30.0), (52.0, 36.0, c - 66.0))
    rll = ((-26.0, 24.0, c - 50.0), (-46.0, 40.0, c - 82.0))
    for (p0, p1), r, gate, truth in ((trachea, 8.0, above, True), (r_main, 6.5, below, True),
                                     (l_main, 6.0, below, True), (bi, 5.5, below, True),
                                     (rul, 4.5, below, False), (lul, 4.5, below, False),
                                     (lll, 4.2, below, False), (rll, 4.0, below, False)):
        # rounded ends: the main bronchi open widely into the trachea, as at a real carina (flat ends joined it
        # through 2-3 pixels, and one pixel cropped lost the split: the carina was estimated 23 mm high)
        wall = _tube(grid, p0, p1, r + 2.0, capped=True)
        lumen = _tube(grid, p0, p1, r, capped=True)
        if wall is not None:
            box, m = wall
            m = m & gate[box[0]]
            airway_wall[box] |= m
        if lumen is not None and truth:
            box, m = lumen
            airway[box] |= m & gate[box[0]]
        if lumen is not None and not truth:
            box, m = lumen
            # lobar bronchi: air lumen inside the lung; part of the lung label
            hu[box][m & gate[box[0]]] = HU["air"]
            airway_wall[box] &= ~(m & gate[box[0]])
    airway_wall &= ~airway
    # the main airway and its wall are not lung
    lungs[airway | airway_wall] = 0
    hu[airway_wall & (hu < -500)] = HU["soft"]
    hu[airway_wall & ~lung_any] = HU["soft"]
    # lobar bronchial walls inside the lung: soft tissue rim
    hu[airway] = HU["air"]

    # --- lesions (before vessels, so vessels run through them) --------------------------------
    lesion_specs = _resolve_lesions(lesions)
    lesion_lab = np.zeros(full, np.uint8)
    for spec in lesion_specs:
        cx, cy, czz = spec.center_mm
        rx, ry, rz = spec.radii_mm
        box = _box(grid, (cx - rx * 1.3, cy - ry * 1.3, czz - rz * 1.3), (cx + rx * 1.3, cy + ry * 1.3, czz + rz * 1.3))
        if box is None:
            continue
        bx, by, bz = grid.x[:, :, box[2]], grid.y[:, box[1], :], z[box[0]]
        f = (((bx - cx) / rx) ** 2 + ((by - cy) / ry) ** 2) + np.abs((bz - czz) / rz) ** spec.z_power
        bshape = f.shape
        sig = [4.0 / s for s in grid.spacing]
        f = f - spec.roughness * _smooth_noise(rng, bshape, sig)
        m = (f <= 1.0) & (lungs[box] == spec.side)
        sub = lesion_lab[box]
        sub[m & (sub < spec.cls)] = spec.cls
    for cls in (FAINT_GGO, GGO, CONSOLIDATION):
        m = lesion_lab == cls
        if not m.any():
            continue
        amp = {FAINT_GGO: 28.0, GGO: 45.0, CONSOLIDATION: 12.0}[cls]
        zz, yy, xx = np.nonzero(m)
        box = (slice(zz.min(), zz.max() + 1), slice(yy.min(), yy.max() + 1), slice(xx.min(), xx.max() + 1))
        tex = _smooth_noise(rng, m[box].shape, [2.5 / s for s in grid.spacing])
        sub = hu[box]
        sub[m[box]] = HU[CLASS_KEYS[cls]] + amp * np.clip(tex[m[box]], -2.0, 2.0)

    # --- pulmonary vessels ---------------------------------------------------------------------
    vfrac = np.zeros(full, np.float32)
    segs: list[tuple[np.ndarray, np.ndarray, float, float]] = []
    for sx, root in ((-1.0, np.array([-36.0, 18.0, -16.0])), (1.0, np.array([38.0, 20.0, -18.0]))):
        for d in ((0.35, -0.1, 0.9), (0.8, -0.5, -0.1), (0.55, 0.25, -0.8), (0.5, 0.6, 0.45)):
            direction = np.array([sx * d[0], d[1], d[2]])
            segs += _vessel_tree(rng, root, direction, 32.0, 4.0, 0, 4)
    # the lateral halves of the inferior pulmonary veins, and a vessel through the right mid ground glass
    segs.append((np.asarray(ipv_r[0]), (np.asarray(ipv_r[0]) + np.asarray(ipv_r[1])) / 2.0, 4.0, 6.5))
    segs.append((np.asarray(ipv_l[0]), (np.asarray(ipv_l[0]) + np.asarray(ipv_l[1])) / 2.0, 4.0, 6.5))
    segs.append((np.array([-45.0, 12.0, -38.0]), np.array([-125.0, -8.0, -58.0]), 3.0, 1.5))
    vessel_zone = thorax & ~np.broadcast_to(e_cav > 0.97, full)
    for p0, p1, r0, r1 in segs:
        item = _tube(grid, p0, p1, r0, r1, soft=True)
        if item is None:
            continue
        box, fr = item
        fr = np.where(vessel_zone[box] & ~airway[box] & ~airway_wall[box], fr, 0.0)
        np.maximum(vfrac[box], fr, out=vfrac[box])
    inside = vfrac > 0
    hu[inside] = hu[inside] * (1.0 - vfrac[inside]) + HU["blood"] * vfrac[inside]
    vessels = (vfrac >= 0.5) & (lungs > 0)
    lesion_lab[vessels] = 0  # a vessel crossing a lesion is vessel, not lesion

    # --- noise, rounding -----------------------------------------------------------------------
    hu += rng.normal(0.0, noise_sd, full).astype(np.float32)
    hu = np.clip(np.rint(hu), -1024, 3071).astype(np.float32)

    lm_out = {k: float(v) for k, v in lm.items() if not k.startswith("apex_cap")}
    lm_out["ipv"] = float(0.5 * (lm["ipv_right"] + lm["ipv_left"]))
    zs = grid.z.ravel()
    for side, name in SIDE_NAMES.items():
        ks = np.nonzero((lungs == side).any(axis=(1, 2)))[0]
        lm_out[f"apex_{name}"] = float(zs[ks.max()]) if ks.size else float("nan")
        lm_out[f"base_{name}"] = float(zs[ks.min()]) if ks.size else float("nan")
    origin = (float(grid.x.ravel()[0]), float(grid.y.ravel()[0]), float(zs[0]))
    params = {"shape": [nz, ny, nx], "spacing": [float(s) for s in grid.spacing], "seed": int(seed),
              "noise_sd": float(noise_sd), "z_center_mm": float(z_center_mm), "orientation": orientation,
              "lesions": [asdict(s) for s in lesion_specs]}
    return Phantom(hu=hu, lungs=lungs, lesions=lesion_lab, airway=airway, vessels=vessels,
                   landmarks_z_mm=lm_out, origin=origin, spacing=tuple(float(s) for s in grid.spacing),
                   seed=int(seed), lesion_specs=lesion_specs, orientation=orientation, params=params)


# --------------------------------------------------------------------------------------------
# Ground truth: volumes and scores from the truth label maps (independent of scoring/)
# --------------------------------------------------------------------------------------------

SIX_ZONES = ("upper", "middle", "lower")
ZHANG_LEVELS = ("L1", "L2", "L3", "L4", "L5")
SLAB_HALF_MM = 5.0
DENSITY_SHARE = 0.2
#: configs/default.yaml ``scoring.min_involvement_ml`` / ``_pct``: below either a unit is not involved (SCORING.md)
MIN_INVOLVEMENT_ML, MIN_INVOLVEMENT_PCT = 1.0, 0.25
#: less lung than this (mm2) in the scan's first/last slice is stray voxels, not a cut-off lung (docs/scoring.md)
MIN_LUNG_AREA_MM2 = 5.0


def _pct(part: float, whole: float) -> float:
    """100 x part / whole rounded to 1e-9 % (docs/scoring.md: a share exactly on a grade boundary keeps its grade
    whatever the voxel size); 0 when ``whole`` is 0."""
    return round(100.0 * part / whole, 9) if whole > 0 else 0.0


def is_involved(lesion_ml: float, pct: float) -> bool:
    """A unit counts as involved only with >= 1 mL and >= 0.25 % of lesion (the scorer's documented defaults)."""
    return round(lesion_ml, 9) >= MIN_INVOLVEMENT_ML and pct >= MIN_INVOLVEMENT_PCT and pct > 0  # as the scorer


def six_zone_score(pct: float) -> int:
    """Six-zone involvement score: 0 = 0 %, 1 < 25 %, 2 < 50 %, 3 < 75 %, 4 >= 75 %."""
    if pct <= 0:
        return 0
    return 1 if pct < 25 else 2 if pct < 50 else 3 if pct < 75 else 4


def zhang_extent(pct: float) -> int:
    """zhang900 extent: nearest 10 % step (halves up), at least 1 when involved, at most 10."""
    if pct <= 0:
        return 0
    return int(min(10, max(1, math.floor(pct / 10.0 + 0.5))))


def density_grade(class_ml: dict[int, float], share: float = DENSITY_SHARE) -> int:
    """Densest lesion class holding at least ``share`` of the unit's lesion volume (else the largest)."""
    total = sum(v for v in class_ml.values() if v > 0)
    if total <= 0:
        return 0
    for cls in (CONSOLIDATION, GGO, FAINT_GGO):
        if round(class_ml.get(cls, 0.0) / total, 9) >= share:
            return cls
    return max(class_ml, key=lambda c: (class_ml[c], c))


def mosmed_category(pct: float) -> str:
    """MosMedData category from whole-lung involvement."""
    if pct <= 0:
        return "CT-0"
    return "CT-1" if pct < 25 else "CT-2" if pct < 50 else "CT-3" if pct < 75 else "CT-4"


Interval = tuple[float, float, bool, bool]  # (low, high, low closed, high closed) of patient z


def six_zone_intervals(carina: float, ipv: float) -> dict[str, Interval]:
    """z intervals of the six-zone zones: upper z > carina, middle ipv <= z <= carina (SCORING.md "from the carina
    down to the IPV": a slice exactly on either level is middle), lower z < ipv ("below the IPV")."""
    return {"upper": (carina, math.inf, False, True), "middle": (ipv, carina, True, True),
            "lower": (-math.inf, ipv, False, False)}


def slab_half_mm(z_mm: np.ndarray) -> float:
    """zhang900 slab half thickness: 5 mm, widened to half the slice step on thicker slices (docs/scoring.md: a
    half-open slab level - h <= z < level + h always holds a slice, the one nearest its level)."""
    step = float(np.median(np.abs(np.diff(z_mm)))) if len(z_mm) > 1 else 0.0
    return max(SLAB_HALF_MM, 0.5 * step)


def _in_interval(z_mm: np.ndarray, iv: Interval) -> np.ndarray:
    low, high, low_closed, high_closed = iv
    return ((z_mm >= low) if low_closed else (z_mm > low)) & ((z_mm <= high) if high_closed else (z_mm < high))


def _seen(iv: Interval, z_mm: np.ndarray, cut_top: bool, cut_bottom: bool, slab: bool) -> bool:
    """Whether the scan sees all of a unit (SCORING.md: what it cannot see is missing, not 0): a slab lies within
    the scanned range (first/last slice centre -+ half a step); a zone does not reach past a cut-off end."""
    zmin, zmax = float(np.min(z_mm)), float(np.max(z_mm))
    if slab:
        half = 0.5 * float(np.median(np.abs(np.diff(z_mm)))) if len(z_mm) > 1 else 0.0
        return iv[0] >= zmin - half - 1e-6 and iv[1] <= zmax + half + 1e-6
    return not (cut_top and iv[1] > zmax) and not (cut_bottom and iv[0] < zmin)


def lung_cut(lungs: np.ndarray, side: int, pixel_mm2: float) -> tuple[bool, bool]:
    """(top, bottom) cut off: the scan's last (first) slice holds >= 5 mm2 of that lung."""
    return (bool((lungs[-1] == side).sum() * pixel_mm2 >= MIN_LUNG_AREA_MM2),
            bool((lungs[0] == side).sum() * pixel_mm2 >= MIN_LUNG_AREA_MM2))


def zhang_levels(landmarks: dict[str, float], side: str) -> dict[str, float]:
    """The five zhang900 level z values of one lung."""
    return {"L1": landmarks["suprasternal_notch"], "L2": landmarks["aortic_arch"], "L3": landmarks["carina"],
            "L4": landmarks["bronchus_intermedius"], "L5": landmarks[f"dome_{side}"]}


def unit_measures(lungs: np.ndarray, lesions: np.ndarray, z_mm: np.ndarray, side: int,
                  interval: Interval, voxel_ml: float) -> dict[str, Any]:
    """Lung and lesion volumes (mL) of one lung within the slices whose z lies in the interval."""
    ks = _in_interval(np.asarray(z_mm), interval)
    lung = lungs[ks] == side
    les = lesions[ks][lung]
    counts = np.bincount(les.ravel(), minlength=4)
    class_ml = {c: float(counts[c]) * voxel_ml for c in (FAINT_GGO, GGO, CONSOLIDATION)}
    lung_ml = float(lung.sum()) * voxel_ml
    lesion_ml = sum(class_ml.values())
    pct = _pct(lesion_ml, lung_ml)
    return {"lung_ml": lung_ml, "lesion_ml": lesion_ml, "class_ml": class_ml, "pct": pct}


def score_truth(lungs: np.ndarray, lesions: np.ndarray, z_mm: np.ndarray, landmarks: dict[str, float],
                voxel_ml: float, shift_mm: float = 0.0) -> dict[str, Any]:
    """Six-zone and zhang900 (slab mode) scores of truth masks; ``shift_mm`` moves every plane.

    A unit the scan cannot see (a zone reaching past a cut-off end of the lung, a slab not wholly inside the
    scanned range) or that holds no lung (0 of 0 mL has no involvement) is missing: score None, and its system's total
    None (SCORING.md: missing, not 0); but an L1 slab wholly above the lung's apex scores 0 (normal anatomy)."""
    six, zh, detail = {}, {}, {}
    z_mm = np.asarray(z_mm, float)
    carina, ipv = landmarks["carina"] + shift_mm, landmarks["ipv"] + shift_mm
    half = slab_half_mm(z_mm)
    step = float(np.median(np.abs(np.diff(z_mm)))) if len(z_mm) > 1 else 0.0
    pixel_mm2 = voxel_ml * 1000.0 / step if step > 0 else math.inf
    for side, name in SIDE_NAMES.items():
        cut_top, cut_bottom = lung_cut(lungs, side, pixel_mm2)
        for zone, iv in six_zone_intervals(carina, ipv).items():
            m = unit_measures(lungs, lesions, z_mm, side, iv, voxel_ml)
            s = six_zone_score(m["pct"]) if is_involved(m["lesion_ml"], m["pct"]) else 0
            if not _seen(iv, z_mm, cut_top, cut_bottom, slab=False) or m["lung_ml"] <= 0:
                s = None
            six[f"{name}_{zone}"] = s
            detail[f"six_zone/{name}_{zone}"] = _detail("six_zone", name, zone, iv, m, s, None, s)
        for level, zl in zhang_levels(landmarks, name).items():
            iv = (zl + shift_mm - half, zl + shift_mm + half, True, False)  # half-open: the same slice count
            # wherever the level falls on the slice grid (docs/scoring.md)
            m = unit_measures(lungs, lesions, z_mm, side, iv, voxel_ml)
            ext = zhang_extent(m["pct"]) if is_involved(m["lesion_ml"], m["pct"]) else 0
            den = density_grade(m["class_ml"]) if ext else 0
            score = ext * den**2
            # a slab without lung is missing, but L1 wholly above the lung's apex (normal anatomy), which scores 0
            ks = np.flatnonzero((lungs == side).any(axis=(1, 2)))
            above_apex = level == "L1" and (ks.size == 0 or float(z_mm[ks].max()) < iv[0])
            if not _seen(iv, z_mm, cut_top, cut_bottom, slab=True) or (m["lung_ml"] <= 0 and not above_apex):
                ext = den = score = None
            zh[f"{name}_{level}"] = score
            detail[f"zhang900/{name}_{level}"] = _detail("zhang900", name, level, iv, m, ext, den, score)

    def total(scores: dict[str, int | None]) -> int | None:
        return None if None in scores.values() else int(sum(scores.values()))

    return {"six_zone": six, "zhang900": zh, "detail": detail,
            "six_zone_total": total(six), "zhang900_total": total(zh)}


def _detail(system: str, lung: str, unit: str, iv: Interval, m: dict[str, Any], extent: int | None,
            density: int | None, score: int | None) -> dict[str, Any]:
    def num(v: float) -> float | None:
        return None if math.isinf(v) else round(float(v), 3)

    return {"system": system, "lung": lung, "unit": unit, "z_low_mm": num(iv[0]), "z_high_mm": num(iv[1]),
            "lung_ml": round(m["lung_ml"], 3), "lesion_ml": round(m["lesion_ml"], 3),
            "class_ml": {CLASS_KEYS[c]: round(v, 3) for c, v in m["class_ml"].items()},
            "involvement_pct": round(m["pct"], 3), "extent": extent, "density_grade": density,
            "unit_score": score}


def volumes_ml(ph: Phantom) -> dict[str, float]:
    """Truth volumes (mL) at the phantom's voxel size."""
    v = ph.voxel_ml
    les = ph.lesions[ph.lungs > 0]
    out = {"lung_right": float((ph.lungs == RIGHT).sum()) * v, "lung_left": float((ph.lungs == LEFT).sum()) * v}
    out["lung_total"] = out["lung_right"] + out["lung_left"]
    for cls, key in CLASS_KEYS.items():
        out[key] = float((les == cls).sum()) * v
    out["lesion_total"] = out["faint_ggo"] + out["ggo"] + out["consolidation"]
    return {k: round(val, 3) for k, val in out.items()}


def lesion_boundary_margins(ph: Phantom) -> dict[str, float]:
    """Smallest distance (mm) from each lesion's slices to a six-zone plane (carina, IPV)."""
    zs = ph.z_mm
    planes = (ph.landmarks_z_mm["carina"], ph.landmarks_z_mm["ipv"])
    lab, n = ndi.label(ph.lesions > 0)
    out = {}
    for i in range(1, n + 1):
        kk = np.nonzero((lab == i).any(axis=(1, 2)))[0]
        top, bottom = zs[kk.max()] + ph.spacing[0] / 2, zs[kk.min()] - ph.spacing[0] / 2
        d = min(0.0 if bottom <= p <= top else min(abs(p - top), abs(p - bottom)) for p in planes)
        out[f"lesion_{i}"] = round(float(d), 3)
    return out


def ground_truth(ph: Phantom, series_uid: str | None = None) -> dict[str, Any]:
    """The ground-truth document written next to the sample series (ground_truth.json)."""
    sc = score_truth(ph.lungs, ph.lesions, ph.z_mm, ph.landmarks_z_mm, ph.voxel_ml)
    vols = volumes_ml(ph)
    lesion_ml = float(((ph.lungs > 0) & (ph.lesions > 0)).sum()) * ph.voxel_ml
    po = _pct(lesion_ml, float((ph.lungs > 0).sum()) * ph.voxel_ml)
    # well-aerated lung: the truth lungs' voxels in ctscore's default hu_classes.well_aerated, [-950, -700) HU
    from scoring.quantify import WELL_AERATED_HU

    lung_hu = ph.hu[ph.lungs > 0]
    low, high = WELL_AERATED_HU
    wal = _pct(float(np.count_nonzero((lung_hu >= low) & (lung_hu < high))), float(lung_hu.size))
    # lung tissue, gas and non-aerated lung of the truth lungs, at ctscore's default hu_classes.aeration_edges
    from scoring.quantify import aeration_measures

    aer = aeration_measures(lung_hu, ph.voxel_ml)
    robust = {}
    for shift in (-2.5, 2.5):
        alt = score_truth(ph.lungs, ph.lesions, ph.z_mm, ph.landmarks_z_mm, ph.voxel_ml, shift)
        robust[f"{shift:+.1f}"] = {"six_zone_total": alt["six_zone_total"], "zhang900_total": alt["zhang900_total"]}
    return {
        "description": "Procedural chest CT phantom (pipeline/phantom.py). Scores from the truth label maps: "
                       "six-zone upper z > carina, middle IPV <= z <= carina, lower z < IPV; zhang900 slab mode "
                       "(level - h <= z < level + h, h = 5 mm or half the slice step if more), density = densest "
                       "class with >= 20 % of the unit's lesion volume; a unit is involved with >= 1 mL and "
                       ">= 0.25 %; a unit the scan cannot see, or holding no lung, is null (missing), and so is its "
                       "system's total (an L1 slab wholly above the lung's apex scores 0).",
        "scores": {"six_zone_total": sc["six_zone_total"], "zhang900_total": sc["zhang900_total"],
                   "six_zone": sc["six_zone"], "zhang900": sc["zhang900"],
                   "percent_opacity": round(po, 3),
                   "mosmed_category": mosmed_category(po if is_involved(lesion_ml, po) else 0.0),
                   "percent_well_aerated": round(wal, 3),
                   **{k: aer[k] for k in ("lung_tissue_g", "lung_gas_ml", "non_aerated_volume_ml")}},
        "volumes_ml": vols,
        # a lung the scan does not reach has no apex or base: null, not NaN (which is not JSON)
        "landmarks_z_mm": {k: round(v, 3) if math.isfinite(v) else None for k, v in sorted(ph.landmarks_z_mm.items())},
        "zones": sc["detail"],
        "robustness": {"totals_with_all_planes_shifted_mm": robust,
                       "lesion_distance_to_zone_planes_mm": lesion_boundary_margins(ph)},
        "series_uid": series_uid,
        "generator": {**ph.params, "module": "pipeline.phantom", "axis_order": "zyx",
                      "origin_xyz_mm": [round(v, 4) for v in ph.origin],
                      "labels": {"lungs": {"1": "right", "2": "left"},
                                 "lesions": {"1": "faint_ggo", "2": "ggo", "3": "consolidation"}}},
    }


# --------------------------------------------------------------------------------------------
# DICOM writing
# --------------------------------------------------------------------------------------------

ORIENTATIONS = {
    "axial": "head-first supine, rows along +x, instance numbers from feet to head",
    "reversed": "head-first supine, instance numbers from head to feet",
    "feet_first": "feet-first supine (FFS), rows along -x (image mirrored), instance numbers head to feet",
}


def _uid(*parts: Any) -> str:
    """A deterministic UID under the 2.25 root (a 128-bit integer from a SHA-256 of the parts)."""
    digest = hashlib.sha256("\x1f".join(["ctscore-phantom", *[str(p) for p in parts]]).encode()).hexdigest()
    return f"2.25.{int(digest[:32], 16)}"


def _ds(value: float) -> str:
    """A DS string that reads back as ``value``: the short "%g" form ("2.2", "2.5") when it is exact, otherwise
    the most precise form that fits DS's 16 characters ("0.68359375", not "0.683594")."""
    from pydicom.valuerep import format_number_as_ds

    text = f"{value:g}"
    return text if float(text) == value else format_number_as_ds(float(value))


#: The drawing's version: part of every UID, so a changed drawing never writes other pixels under the same UIDs
#: (2: rounded main bronchi, the heart down to the diaphragm; ctscore 0.6.0).
PHANTOM_VERSION = 2


def _param_key(ph: Phantom, extra: dict[str, Any]) -> str:
    blob = json.dumps({**ph.params, **extra, "phantom_version": PHANTOM_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_dicom_series(ph: Phantom, out_dir: str | Path, *, orientation: str | None = None,
                       compress: bool = True, rescale: str = "fixed", series_number: int = 1,
                       study_date: str = DEFAULT_STUDY_DATE) -> dict[str, Any]:
    """Write the phantom as one CT Image Storage file per slice; returns UIDs and file names.

    ``orientation``: see :data:`ORIENTATIONS` (default: the phantom's). ``compress``: RLE Lossless
    (pydicom's own encoder, so the bytes do not depend on optional codecs) instead of explicit VR
    little endian. ``rescale``: "fixed" (slope 1, intercept -1024 on every slice) or "per_slice"
    (slope and intercept vary from slice to slice; HU are still exact). File names are hex digests,
    unrelated to slice order. Everything is deterministic (UIDs from the seed and parameters; a
    ``study_date`` other than the default makes another study, so a follow-up written from the same
    phantom never shares a UID with the baseline). Each file is written all or nothing.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless

    from pipeline.outputs import atomic_write_bytes

    orientation = orientation or ph.orientation
    if orientation not in ORIENTATIONS:
        raise ValueError(f"unknown orientation {orientation!r}")
    if rescale not in ("fixed", "per_slice"):
        raise ValueError(f"unknown rescale mode {rescale!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {"orientation": orientation, "rescale": rescale, "series_number": series_number}
    study_parts: list[Any] = [ph.seed]
    if study_date != DEFAULT_STUDY_DATE:  # the default adds nothing, so the committed sample keeps its UIDs
        extra["study_date"] = study_date
        study_parts.append(study_date)
    key = _param_key(ph, extra)
    study_uid = _uid("study", *study_parts)
    series_uid = _uid("series", key)
    frame_uid = _uid("frame", key)
    nz, ny, nx = ph.hu.shape
    dz, dy, dx = ph.spacing
    x0, y0, z0 = ph.origin
    order = list(range(nz)) if orientation == "axial" else list(range(nz - 1, -1, -1))
    mirror = orientation == "feet_first"
    files = []
    for inst, k in enumerate(order, start=1):
        slope, intercept = 1.0, -1024.0
        if rescale == "per_slice":
            slope, intercept = ((1.0, -1024.0), (0.5, -1000.0), (1.0, 0.0), (0.5, -2048.0), (1.0, -1100.0))[k % 5]
        img = ph.hu[k, :, ::-1] if mirror else ph.hu[k]
        stored = np.rint((img.astype(np.float64) - intercept) / slope).astype(np.int16)
        sop_uid = _uid("sop", key, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "120000"
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = "ctscore synthetic phantom"
        ds.InstitutionName = "none (synthetic)"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "SYNTHETIC CHEST CT PHANTOM"
        ds.SeriesDescription = f"ctscore phantom seed {ph.seed} ({orientation})"
        ds.PatientName = "PHANTOM^CTSCORE"
        ds.PatientID = "PHANTOM001"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = _ds(dz)
        ds.KVP = "120"
        ds.ConvolutionKernel = "STANDARD"
        ds.PatientPosition = "FFS" if orientation == "feet_first" else "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = inst
        xpos = x0 + (nx - 1) * dx if mirror else x0
        zpos = z0 + k * dz
        ds.ImagePositionPatient = [f"{xpos:.4f}", f"{y0:.4f}", f"{zpos:.4f}"]
        ds.ImageOrientationPatient = ["-1", "0", "0", "0", "1", "0"] if mirror else ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{zpos:.4f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.PixelSpacing = [_ds(dy), _ds(dx)]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = "-600"
        ds.WindowWidth = "1500"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleType = "HU"
        if compress:
            ds.compress(RLELossless, stored, encoding_plugin="pydicom", generate_instance_uid=False)
        else:
            ds.PixelData = stored.tobytes()
        name = hashlib.sha256(sop_uid.encode()).hexdigest()[:16]
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        atomic_write_bytes(out / name, buf.getvalue())  # never a truncated file in the series folder
        files.append(name)
    return {"series_uid": series_uid, "study_uid": study_uid, "files": sorted(files), "n": nz,
            "transfer_syntax": str(RLELossless if compress else ExplicitVRLittleEndian)}
