"""Slice-stack geometry: pure functions on positions and orientations (no I/O).

Used twice with the same rules: by the inventory on header values only (to predict what loading will
do) and by the loader on the decoded slices. Every tolerance has a name here; escape hatches are
arguments (``allow_gaps``), never silent.

Conventions: ``row`` and ``col`` are the first and second triplets of ImageOrientationPatient (the
directions of increasing column index and increasing row index), ``normal = row x col``; a slice's
position along the stack is ``ImagePositionPatient . normal`` (mm).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

#: Two orientations are the same when no direction cosine differs by more than this.
ORIENTATION_TOLERANCE = 1e-3
#: Orientations closer than this are put in the same stack by the inventory (the loader is stricter).
ORIENTATION_GROUPING_TOLERANCE = 1e-2
#: Two slices are at the same position when their positions along the normal differ by less (mm).
SAME_POSITION_TOLERANCE_MM = 1e-2
#: A stack direction more than this (degrees) off the slice normal is a gantry tilt (sheared grid).
TILT_TOLERANCE_DEG = 0.5
#: Slice positions farther than this (mm) from the line through the stack are inconsistent.
COLLINEARITY_TOLERANCE_MM = 0.5
#: Direction cosines further than this from the patient axes make an oblique orientation.
OBLIQUE_TOLERANCE = 1e-3
#: A step is judged against the local slice spacing: the median of the steps up to this many places
#: on either side of it, itself included (so a series whose spacing changes, e.g. 4.2 then 7.4 mm, is
#: resampled, while one or a few missing slices stand out).
GAP_WINDOW_STEPS = 3
#: A step within this fraction of the smallest step in its window of a whole multiple (2 or more) of it is
#: missing slices too (an absolute tolerance on the ratio: relative to the multiple, any ratio of 10 or more would
#: lie within 5 % of a whole number), though the window's median is itself such a step (every other slice missing over a few
#: places: 2.5, 5, 5, 5, 5, 2.5 mm): :func:`multiple_gaps`. A spacing that changes by another ratio (a GE head
#: series, 4.22 then 7.38 mm: 1.75) is resampled, not refused.
GAP_MULTIPLE_TOLERANCE = 0.05
#: Positions written to 0.1 mm (ImagePositionPatient "-200.6") are off their place by up to this much (mm): a stack
#: whose steps and positions lie within twice this of the even grid from its first to its last slice (extent / (n - 1))
#: is uniform (0.625 mm slices written to 0.1 mm: steps of 0.6 and 0.7 mm, 12 % off their median).
POSITION_ROUNDING_MM = 0.05
#: Gantry tilt (degrees) from which an uncorrected tilt (up to :data:`TILT_TOLERANCE_DEG`) is flagged
#: TILT_UNCORRECTED: 0.49 degrees shift the last slice of a 300 mm stack 2.6 mm in-plane.
TILT_NOTE_DEG = 0.1
#: Relative difference of PixelSpacing between slices that is still "the same" (loader and inventory).
PIXEL_SPACING_TOLERANCE = 1e-3


@dataclass
class StackGeometry:
    """What the positions of a stack say, before any pixels are read."""

    normal: np.ndarray
    order: np.ndarray  # indices that sort the input slices along the normal
    positions: np.ndarray  # sorted positions along the normal (mm)
    duplicate_groups: list[list[int]] = field(default_factory=list)  # sorted indices sharing a position
    unique_positions: np.ndarray = field(default_factory=lambda: np.zeros(0))
    spacing: float = 0.0  # median step between unique positions along the normal (mm)
    uniform: bool = True
    gap_steps: list[float] = field(default_factory=list)  # steps judged to be missing slices
    gap_after: list[int] = field(default_factory=list)  # index in ``unique_positions`` where each gap starts
    tilt_deg: float = 0.0  # angle between the stack direction and the slice normal
    oblique: bool = False
    problems: list[str] = field(default_factory=list)  # refusal codes predicted (E rows)
    fixes: list[str] = field(default_factory=list)  # QC codes predicted (F / W rows)
    messages: dict[str, str] = field(default_factory=dict)  # code -> sentence

    @property
    def z_extent(self) -> float:
        """Distance between the first and last slice along the normal (mm)."""
        return float(self.positions[-1] - self.positions[0]) if self.positions.size else 0.0


def normal_of(iop: np.ndarray) -> np.ndarray:
    """Unit slice normal of an ImageOrientationPatient (6 values)."""
    n = np.cross(iop[:3], iop[3:])
    norm = float(np.linalg.norm(n))
    return n / norm if norm > 0 else n


def valid_orientation(iop: np.ndarray, tol: float = 1e-2) -> bool:
    """True when the two direction cosines are finite, of unit length and orthogonal."""
    if iop.shape != (6,) or not np.all(np.isfinite(iop)):
        return False
    r, c = iop[:3], iop[3:]
    return (abs(np.linalg.norm(r) - 1) < tol and abs(np.linalg.norm(c) - 1) < tol and abs(float(r @ c)) < tol)


def axial_angle_deg(iop: np.ndarray) -> float:
    """Angle (degrees) between the slice normal and the patient z axis (0 = axial)."""
    n = normal_of(iop)
    return float(np.degrees(np.arccos(min(1.0, abs(float(n[2]))))))


def is_oblique(iop: np.ndarray) -> bool:
    """True when a direction cosine is not along a patient axis."""
    a = np.abs(iop)
    return bool(np.any((a > OBLIQUE_TOLERANCE) & (a < 1 - OBLIQUE_TOLERANCE)))


def same_orientation(a: np.ndarray, b: np.ndarray, tol: float = ORIENTATION_TOLERANCE) -> bool:
    """True when two ImageOrientationPatient values agree within ``tol``."""
    return bool(np.max(np.abs(a - b)) <= tol)


def analyse_stack(
    iop: np.ndarray,
    positions_xyz: np.ndarray,
    thickness: float | None = None,
    *,
    allow_gaps: bool = False,
    max_gap_ratio: float = 1.5,
    spacing_tolerance: float = 0.1,
) -> StackGeometry:
    """Sort a stack along its normal and judge duplicates, spacing, gaps and gantry tilt.

    ``positions_xyz`` holds one ImagePositionPatient per slice (n x 3). Problems (refusals) and
    fixes (QC codes) are listed; nothing is raised, so the inventory can report them.
    """
    normal = normal_of(iop)
    pos = np.asarray(positions_xyz, float).reshape(-1, 3)
    along = pos @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    pos = pos[order]
    geo = StackGeometry(normal=normal, order=order, positions=along)
    geo.oblique = is_oblique(iop)

    # Duplicate positions: groups of sorted indices within SAME_POSITION_TOLERANCE_MM.
    groups: list[list[int]] = [[0]] if along.size else []
    for k in range(1, along.size):
        if along[k] - along[groups[-1][0]] < SAME_POSITION_TOLERANCE_MM:
            groups[-1].append(k)
        else:
            groups.append([k])
    geo.duplicate_groups = [g for g in groups if len(g) > 1]
    firsts = [g[0] for g in groups]
    geo.unique_positions = along[firsts]
    if len(firsts) < 2:
        if along.size > 1:
            geo.problems.append("NOT_A_VOLUME")
            geo.messages["NOT_A_VOLUME"] = f"all {along.size} slices lie at one position ({along[0]:.2f} mm)"
        geo.spacing = float(thickness or 0.0)
        return geo

    upos = pos[firsts]
    # Positions must lie on one line (the stack direction).
    direction = upos[-1] - upos[0]
    length = float(np.linalg.norm(direction))
    direction = direction / length
    rel = upos - upos[0]
    off_line = rel - np.outer(rel @ direction, direction)
    worst = float(np.max(np.linalg.norm(off_line, axis=1)))
    if worst > COLLINEARITY_TOLERANCE_MM:
        geo.problems.append("INCONSISTENT_GEOMETRY")
        geo.messages["INCONSISTENT_GEOMETRY"] = (
            f"slice positions are not on one line (up to {worst:.2f} mm off, "
            f"tolerance {COLLINEARITY_TOLERANCE_MM} mm)")
    geo.tilt_deg = float(np.degrees(np.arccos(min(1.0, abs(float(direction @ normal))))))
    if geo.tilt_deg > TILT_TOLERANCE_DEG:
        geo.fixes.append("GANTRY_TILT_CORRECTED")

    steps = np.diff(geo.unique_positions)
    spacing = float(np.median(steps))
    geo.spacing = spacing
    # Gaps are measured against the slice spacing, never the thickness: slices 5 mm thick every 2.5 mm
    # with two missing leave a 7.5 mm step, which max(spacing, thickness) would have let through.
    local = local_spacing(steps)
    gaps = steps > max_gap_ratio * local
    multiple, smallest = multiple_gaps(steps, thickness)
    local = np.where(multiple & ~gaps, smallest, local)  # the spacing such a step is judged against
    gaps |= multiple
    if np.any(gaps):
        geo.gap_steps = [float(s) for s in steps[gaps]]
        geo.gap_after = [int(k) for k in np.flatnonzero(gaps)]
        if allow_gaps:
            geo.fixes.append("SLICE_GAP_ALLOWED")
        else:
            geo.problems.append("SLICE_GAP")
            spacings = sorted({round(float(v), 2) for v in local[gaps]})
            thick = f"; slice thickness {thickness:g} mm" if thickness else ""
            geo.messages["SLICE_GAP"] = (
                f"{int(gaps.sum())} step(s) of {', '.join(f'{s:.2f}' for s in geo.gap_steps)} mm where the "
                f"slice spacing is {', '.join(f'{v:.2f}' for v in spacings)} mm{thick}: slices are missing "
                f"(limit {max_gap_ratio:g} x the spacing; set loading.allow_gaps: true to interpolate)")
    # each step near the median, and the slices near the grid they are stacked on unresampled (first position +
    # k x median step): steps alternately 2.0 and 2.19 mm pass the first test, yet a run of 2.19 mm steps after a
    # run of 2.0 mm ones puts the last slices millimetres away from their grid places
    drift = np.abs(geo.unique_positions - (geo.unique_positions[0] + spacing * np.arange(len(geo.unique_positions))))
    if np.max(np.abs(steps - spacing)) > spacing_tolerance * spacing or float(drift.max()) > spacing_tolerance * spacing:
        # positions rounded when written (to 0.1 mm): uniform when every step and every position lies within the
        # rounding of the even grid from the first to the last slice; that grid's step is the spacing
        even = float(geo.unique_positions[-1] - geo.unique_positions[0]) / (len(geo.unique_positions) - 1)
        off = np.abs(geo.unique_positions - (geo.unique_positions[0] + even * np.arange(len(geo.unique_positions))))
        limit = 2 * POSITION_ROUNDING_MM + 1e-6
        if (not geo.gap_steps and even > 4 * POSITION_ROUNDING_MM and float(np.max(np.abs(steps - even))) <= limit
                and float(off.max()) <= limit):
            geo.spacing = even
        else:
            geo.uniform = False
            if "SLICE_GAP" not in geo.problems:
                geo.fixes.append("NON_UNIFORM_SPACING_RESAMPLED")
    if geo.oblique and "GANTRY_TILT_CORRECTED" not in geo.fixes:
        geo.fixes.append("OBLIQUE_ORIENTATION")
    return geo


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


class SamePositionIndex:
    """Objects by position, to find those within :data:`SAME_POSITION_TOLERANCE_MM` of a position without
    comparing it with every earlier one (one SOPInstanceUID written into every file of a series: the files
    sharing it were compared pairwise). Positions are bucketed by ``floor(ipp / tolerance)``; a position within
    the tolerance lies in the same or a neighbouring bucket."""

    def __init__(self, tolerance: float = SAME_POSITION_TOLERANCE_MM) -> None:
        self.tolerance = tolerance
        self._buckets: dict[tuple[int, ...], list[tuple[int, np.ndarray, object]]] = {}
        self._count = 0

    def _key(self, pos: np.ndarray) -> tuple[int, ...]:
        return tuple(int(v) for v in np.floor(np.asarray(pos, float) / self.tolerance))

    def near(self, pos: np.ndarray) -> list:
        """The objects added at positions within the tolerance of ``pos``, in the order they were added."""
        if not np.all(np.isfinite(pos)):
            return []  # within no tolerance of anything (as the distance says)
        key = self._key(pos)
        found = []
        for dk in itertools.product((-1, 0, 1), repeat=len(key)):
            for order, ref, obj in self._buckets.get(tuple(k + d for k, d in zip(key, dk)), ()):
                if _distance(ref, pos) <= self.tolerance:
                    found.append((order, obj))
        return [obj for _, obj in sorted(found, key=lambda t: t[0])]

    def add(self, pos: np.ndarray, obj: object) -> None:
        pos = np.asarray(pos, float)
        key = self._key(pos) if np.all(np.isfinite(pos)) else ("not finite",)
        self._buckets.setdefault(key, []).append((self._count, pos, obj))
        self._count += 1


def local_spacing(steps: np.ndarray, window: int = GAP_WINDOW_STEPS) -> np.ndarray:
    """For each step between neighbouring slice positions, the median of the steps within ``window``
    places of it (itself included): the slice spacing that step is judged against."""
    steps = np.asarray(steps, float)
    return np.array([float(np.median(steps[max(0, k - window):k + window + 1])) for k in range(steps.size)])


def multiple_gaps(steps: np.ndarray, thickness: float | None = None,
                  window: int = GAP_WINDOW_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """Steps that are a whole multiple (2 or more, the ratio within :data:`GAP_MULTIPLE_TOLERANCE` of a whole number) of the smallest step
    within ``window`` places of them (a step seen twice there), where the slices are no thicker than that smallest step (thicker, overlapping
    slices are another reconstruction's spacing, not missing ones), and that smallest step; interleaved missing
    slices make the window's median a doubled step, which :func:`local_spacing` alone lets through."""
    steps = np.asarray(steps, float)
    smallest = np.zeros(steps.size)
    seen = np.zeros(steps.size, int)  # how many steps of the window are that smallest step
    for k in range(steps.size):
        near = steps[max(0, k - window):k + window + 1]
        smallest[k] = float(np.min(near))
        seen[k] = int(np.count_nonzero(near <= smallest[k] * (1 + GAP_MULTIPLE_TOLERANCE)))
    if steps.size == 0:
        return np.zeros(0, bool), smallest
    ratio = steps / np.where(smallest > 0, smallest, np.inf)
    whole = np.round(ratio)
    # the smallest step must be a spacing (two steps of it in the window), not one short step: 0, 4, 6 mm is no
    # evidence of a 2 mm spacing
    out = (whole >= 2) & (np.abs(ratio - whole) <= GAP_MULTIPLE_TOLERANCE) & (seen >= 2)
    t = float(thickness) if thickness and np.isfinite(thickness) and thickness > 0 else 0.0
    return out & (t <= smallest * (1 + GAP_MULTIPLE_TOLERANCE)), smallest


def in_plane_offsets(positions_xyz: np.ndarray, iop: np.ndarray) -> np.ndarray:
    """Offsets (mm, along row then column direction) of each slice origin from the first slice's,
    after removing the component along the normal: zero for an orthogonal stack."""
    row, col = iop[:3], iop[3:]
    normal = normal_of(iop)
    rel = np.asarray(positions_xyz, float) - np.asarray(positions_xyz, float)[0]
    rel = rel - np.outer(rel @ normal, normal)
    return np.column_stack([rel @ row, rel @ col])


def shear_to_orthogonal(
    volume: np.ndarray, pad: np.ndarray, offsets_mm: np.ndarray, pixel_spacing_xy: tuple[float, float],
    fill: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Shift each slice in its plane so that all slice origins sit on the normal through slice 0.

    ``volume`` is [z, y, x]; ``offsets_mm`` is (n, 2) as from :func:`in_plane_offsets` (x = row
    direction, y = column direction). Linear interpolation within each slice, nothing mixed across
    slices. Pixels shifted in from outside the field of view get ``fill`` and are marked in the
    returned padding mask.
    """
    from scipy import ndimage

    out = np.empty_like(volume)
    out_pad = np.empty_like(pad)
    sx, sy = pixel_spacing_xy
    for k in range(volume.shape[0]):
        # Voxel (i, j) of the orthogonal slice k lies at origin0 + i*sx*row + j*sy*col + s*normal; in the
        # acquired slice k it is at index (i - dx, j - dy) where (dx, dy) is the slice's offset in pixels.
        dx, dy = offsets_mm[k, 0] / sx, offsets_mm[k, 1] / sy
        # ndimage.shift: output[p] = input[p - shift], so shift by (+dy, +dx) in [y, x] order.
        out[k] = ndimage.shift(volume[k], (dy, dx), order=1, mode="constant", cval=fill)
        moved = ndimage.shift(pad[k].astype(np.float32), (dy, dx), order=1, mode="constant", cval=1.0)
        out_pad[k] = moved > 0.5
    return out, out_pad


def resample_along_normal(
    volume: np.ndarray, pad: np.ndarray, positions: np.ndarray, spacing: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation of slices at sorted ``positions`` onto a uniform grid of about ``spacing`` mm.

    Returns the new volume, its padding mask (a voxel is padding when its nearer source slice is)
    and the new positions, from ``positions[0]`` to ``positions[-1]``: the step is ``spacing`` adjusted to
    the nearest one that divides the extent (a whole number of steps of ``spacing`` would drop up to one
    step of the last slices, e.g. the last slice of 0, 2, ..., 8, 11, 14, 17, 19, ..., 25 mm).
    """
    extent = float(positions[-1] - positions[0])
    n = max(1, int(round(extent / spacing))) + 1 if extent > 0 else 1
    new_pos = positions[0] + (extent / (n - 1) if n > 1 else spacing) * np.arange(n)
    new_pos[-1] = positions[-1]
    idx = np.clip(np.searchsorted(positions, new_pos, side="right") - 1, 0, len(positions) - 2)
    lo, hi = positions[idx], positions[idx + 1]
    w = np.clip((new_pos - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0, 1.0).astype(np.float32)
    out = np.empty((n,) + volume.shape[1:], np.float32)
    out_pad = np.empty((n,) + pad.shape[1:], pad.dtype)
    for k in range(n):
        a, b = volume[idx[k]], volume[idx[k] + 1]
        out[k] = a * (1 - w[k]) + b * w[k]
        out_pad[k] = pad[idx[k]] if w[k] < 0.5 else pad[idx[k] + 1]
    return out, out_pad, new_pos
