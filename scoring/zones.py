"""Zone and level slabs along patient z, per lung, for the six-zone and zhang900 systems.

A zone is an interval of patient z (mm) in one lung; the masks follow from the per-slice z of the
grid. Six-zone zones are volumes (upper above the carina, middle from the carina to the inferior
pulmonary vein, lower below it). zhang900 units are, by default, thin slabs centred on each level
(``slab`` mode, as the radiologists read one axial level per landmark), or volumes bounded by the
midpoints between consecutive levels (``zone`` mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SIX_ZONE_UNITS = ("upper", "middle", "lower")
ZHANG_LEVELS = ("L1", "L2", "L3", "L4", "L5")
ZHANG_LANDMARKS = ("suprasternal_notch", "aortic_arch", "carina", "bronchus_intermedius", "dome")

INF = float("inf")

#: a slice z within this distance (mm) of a level lies on it: a level read on the working grid and the same plane
#: on the original grid can differ in their last bit (-66.60000000000001 vs -66.6), which put a slice exactly on
#: the carina in the upper zone
LEVEL_TOLERANCE_MM = 1e-6


@dataclass(frozen=True)
class ZInterval:
    """Interval of patient z (mm): by default half-open, low < z <= high; ``low_closed`` / ``high_closed`` say
    whether a z exactly on ``low`` / ``high`` belongs to it (a slice exactly on a level: within
    :data:`LEVEL_TOLERANCE_MM` of it, so neighbouring intervals still share no slice). Equality compares the
    bounds only."""

    low: float
    high: float
    low_closed: bool = field(default=False, compare=False)
    high_closed: bool = field(default=True, compare=False)

    def mask(self, z_mm: np.ndarray) -> np.ndarray:
        t = LEVEL_TOLERANCE_MM  # inf +- t stays inf
        lo = (z_mm >= self.low - t) if self.low_closed else (z_mm > self.low + t)
        hi = (z_mm <= self.high + t) if self.high_closed else (z_mm < self.high - t)
        return lo & hi


def six_zone_intervals(carina_z: float | None, ipv_z: float | None) -> dict[str, ZInterval | None]:
    """Upper (above the carina: z > carina), middle (from the carina down to the IPV, both levels included:
    IPV <= z <= carina) and lower (below the IPV: z < IPV) zones, as SCORING.md words them. Missing when a level
    they need is missing (without the IPV, e.g. a scan that stops above the diaphragm, the upper zone is still
    defined) or the IPV is not below the carina (the zones would overlap)."""
    if carina_z is not None and ipv_z is None:
        return {"upper": ZInterval(carina_z, INF), "middle": None, "lower": None}
    if carina_z is None or ipv_z is None or not ipv_z < carina_z:
        return dict.fromkeys(SIX_ZONE_UNITS)
    return {
        "upper": ZInterval(carina_z, INF),
        "middle": ZInterval(ipv_z, carina_z, low_closed=True),
        "lower": ZInterval(-INF, ipv_z, high_closed=False),
    }


def zhang_intervals(levels_z: list[float | None], mode: str = "slab",
                    half_thickness_mm: float = 5.0) -> dict[str, ZInterval | None]:
    """The five zhang900 units of one lung from its five level z values (cranial to caudal).

    ``slab``: level - half_thickness_mm <= z < level + half_thickness_mm, half-open, so that a slab holds the same
    number of slices wherever the level falls on the slice grid (2 x half_thickness_mm / slice step of them when that
    is a whole number, else the whole number just below or above it). Closed at both ends it took one slice more
    whenever the level lay exactly on a slice centre and 2 x half_thickness_mm was a multiple of the step (5 mm
    slices, +-5 mm: 3 slices instead of 2; 2.5 mm slices: 5 instead of 4, +24 % of slab volume on a real scan); a
    level read on the 1.5 mm working grid often does lie on a centre of the original grid. A slab at least one
    slice step thick (:func:`scoring.quantify._zone_scores` widens it) therefore always holds a slice.
    ``zone``: half-open volumes low < z <= high between the midpoints of consecutive levels; L1 reaches up to the
    apex and L5 down to the base. A unit next to a missing level is missing too: its boundary there is unknown (L4
    without the dome reached down to the base, taking in L5's volume)."""
    out: dict[str, ZInterval | None] = {}
    if mode == "slab":
        for name, z in zip(ZHANG_LEVELS, levels_z):
            out[name] = None if z is None else ZInterval(z - half_thickness_mm, z + half_thickness_mm,
                                                         low_closed=True, high_closed=False)
        return out
    if mode != "zone":
        raise ValueError(f"unknown zhang900 mode {mode!r}")
    for i, (name, z) in enumerate(zip(ZHANG_LEVELS, levels_z)):
        if z is None:
            out[name] = None
            continue
        above = levels_z[i - 1] if i > 0 else None
        below = levels_z[i + 1] if i + 1 < len(levels_z) else None
        if (i > 0 and above is None) or (i + 1 < len(levels_z) and below is None):
            out[name] = None
            continue
        high = INF if above is None else 0.5 * (z + above)
        low = -INF if below is None else 0.5 * (z + below)
        out[name] = ZInterval(low, high)
    return out
