"""Zone and level slabs along patient z, per lung, for the six-zone and zhang900 systems.

A zone is an interval of patient z (mm) in one lung; the masks follow from the per-slice z of the
grid. Six-zone zones are volumes (upper above the carina, middle from the carina to the inferior
pulmonary vein, lower below it). zhang900 units are, by default, thin slabs centred on each level
(``slab`` mode, as the radiologists read one axial level per landmark), or volumes bounded by the
midpoints between consecutive levels (``zone`` mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIX_ZONE_UNITS = ("upper", "middle", "lower")
ZHANG_LEVELS = ("L1", "L2", "L3", "L4", "L5")
ZHANG_LANDMARKS = ("suprasternal_notch", "aortic_arch", "carina", "bronchus_intermedius", "dome")

INF = float("inf")


@dataclass(frozen=True)
class ZInterval:
    """Half-open interval of patient z: low < z <= high (mm)."""

    low: float
    high: float

    def mask(self, z_mm: np.ndarray) -> np.ndarray:
        return (z_mm > self.low) & (z_mm <= self.high)


def six_zone_intervals(carina_z: float | None, ipv_z: float | None) -> dict[str, ZInterval | None]:
    """Upper (above carina), middle (carina to IPV) and lower (below IPV) zones."""
    if carina_z is None or ipv_z is None:
        return dict.fromkeys(SIX_ZONE_UNITS)
    return {
        "upper": ZInterval(carina_z, INF),
        "middle": ZInterval(ipv_z, carina_z),
        "lower": ZInterval(-INF, ipv_z),
    }


def zhang_intervals(levels_z: list[float | None], mode: str = "slab",
                    half_thickness_mm: float = 5.0) -> dict[str, ZInterval | None]:
    """The five zhang900 units of one lung from its five level z values (cranial to caudal)."""
    out: dict[str, ZInterval | None] = {}
    if mode == "slab":
        for name, z in zip(ZHANG_LEVELS, levels_z):
            out[name] = None if z is None else ZInterval(z - half_thickness_mm, z + half_thickness_mm)
        return out
    if mode != "zone":
        raise ValueError(f"unknown zhang900 mode {mode!r}")
    for i, (name, z) in enumerate(zip(ZHANG_LEVELS, levels_z)):
        if z is None:
            out[name] = None
            continue
        above = next((levels_z[j] for j in range(i - 1, -1, -1) if levels_z[j] is not None), None)
        below = next((levels_z[j] for j in range(i + 1, len(levels_z)) if levels_z[j] is not None), None)
        high = INF if above is None else 0.5 * (z + above)
        low = -INF if below is None else 0.5 * (z + below)
        out[name] = ZInterval(low, high)
    return out
