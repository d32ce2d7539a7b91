"""Landmark levels (patient z, mm) for the zone planes.

First version: the carina is detected from the airway tree (the lowest slice where the airway is
still one lumen); the diaphragm domes and lung apices/bases from the lung mask; the other levels
are estimated from the carina and domes with offsets calibrated on
../shared/data/landmarks/reference.csv (mean over the development scans), and reported as estimates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from segmentation.base import LEFT_LUNG, RIGHT_LUNG

# Offsets from the carina (mm, + is cranial), means over the reference scans.
OFFSET_FROM_CARINA_MM = {"suprasternal_notch": 67.0, "aortic_arch": 27.0, "bronchus_intermedius": -22.0}
# The inferior pulmonary vein lies at this fraction of the way from the carina to the right dome.
IPV_FRACTION_CARINA_TO_DOME = 0.72
MIN_LUNG_AREA_MM2 = 5.0


@dataclass
class Landmark:
    """One level: z in patient coordinates (mm), how it was found and how sure we are."""

    name: str
    z_mm: float | None
    method: str  # "detected" | "estimated" | "missing"
    confidence: str  # "high" | "medium" | "low"
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def detect_carina(airway: np.ndarray, z_mm: np.ndarray, spacing: tuple[float, float, float]) -> Landmark:
    """The lowest slice where the airway is one lumen, scanning down from the trachea."""
    if airway is None or not airway.any():
        return Landmark("carina", None, "missing", "low", "no airway segmented")
    pix = spacing[1] * spacing[2]
    zs = np.nonzero(airway.any(axis=(1, 2)))[0]
    last_single = None
    for k in range(zs.max(), zs.min() - 1, -1):  # z index grows cranially: walk downwards
        lab, n = ndi.label(airway[k])
        if n == 0:
            continue
        areas = np.bincount(lab.ravel())[1:] * pix
        big = int((areas >= 10.0).sum())
        if big >= 2:
            if last_single is None:
                return Landmark("carina", None, "missing", "low", "airway already divided in its top slice")
            z = 0.5 * (z_mm[last_single] + z_mm[k])
            return Landmark("carina", float(z), "detected", "high", "airway splits into two lumina")
        last_single = k
    return Landmark("carina", None, "missing", "low", "airway never divides")


def lung_extent(lungs: np.ndarray, side: int, z_mm: np.ndarray, spacing) -> tuple[float | None, float | None, bool, bool]:
    """Apex and base z of one lung, and whether it is cut off at the top / bottom of the scan."""
    area = (lungs == side).sum(axis=(1, 2)) * spacing[1] * spacing[2]
    ks = np.nonzero(area >= MIN_LUNG_AREA_MM2)[0]
    if ks.size == 0:
        return None, None, False, False
    top, bottom = ks.max(), ks.min()
    cut_top = top == lungs.shape[0] - 1
    cut_bottom = bottom == 0
    return float(z_mm[top]), float(z_mm[bottom]), bool(cut_top), bool(cut_bottom)


def detect_dome(lungs: np.ndarray, side: int, z_mm: np.ndarray) -> Landmark:
    """Diaphragm dome apex: the highest point of the lung's floor over the central columns."""
    m = lungs == side
    if not m.any():
        return Landmark(f"dome_{'right' if side == RIGHT_LUNG else 'left'}", None, "missing", "low", "no lung")
    name = f"dome_{'right' if side == RIGHT_LUNG else 'left'}"
    has = m.any(axis=0)
    lowest = np.argmax(m, axis=0)  # first (most caudal) lung slice per (y, x) column
    ys, xs = np.nonzero(has)
    # Central columns of the lung footprint (avoid the costophrenic recesses and the hilum edges).
    y0, y1 = np.percentile(ys, [20, 80])
    x0, x1 = np.percentile(xs, [20, 80])
    sel = (ys >= y0) & (ys <= y1) & (xs >= x0) & (xs <= x1)
    floor = lowest[ys[sel], xs[sel]]
    if floor.size == 0 or floor.min() == 0 and np.all(floor == 0):
        return Landmark(name, None, "missing", "low", "lung floor not in the scan")
    k = int(np.percentile(floor, 95))
    if k == 0:
        return Landmark(name, None, "missing", "low", "lung floor not in the scan")
    z = 0.5 * (z_mm[k] + z_mm[k - 1])
    return Landmark(name, float(z), "detected", "medium", "highest lung floor over the central columns")


def detect_landmarks(lungs: np.ndarray, airway: np.ndarray | None, z_mm: np.ndarray,
                     spacing: tuple[float, float, float]) -> dict[str, Landmark]:
    """All levels needed by the zone systems, on an LPS-oriented grid (z index grows cranially)."""
    out: dict[str, Landmark] = {}
    carina = detect_carina(airway, z_mm, spacing)
    out["carina"] = carina
    for side, name in ((RIGHT_LUNG, "right"), (LEFT_LUNG, "left")):
        apex, base, cut_top, cut_bottom = lung_extent(lungs, side, z_mm, spacing)
        out[f"apex_{name}"] = Landmark(f"apex_{name}", None if cut_top else apex,
                                       "missing" if cut_top or apex is None else "detected",
                                       "high", "apex cut off by the scan" if cut_top else "")
        out[f"base_{name}"] = Landmark(f"base_{name}", None if cut_bottom else base,
                                       "missing" if cut_bottom or base is None else "detected",
                                       "high", "base cut off by the scan" if cut_bottom else "")
        out[f"dome_{name}"] = detect_dome(lungs, side, z_mm)
    if carina.z_mm is None:
        # Fall back on lung extent: carina about 29 % of the way from apex to base.
        apex = max((lm.z_mm for k, lm in out.items() if k.startswith("apex") and lm.z_mm is not None), default=None)
        base = min((lm.z_mm for k, lm in out.items() if k.startswith("base") and lm.z_mm is not None), default=None)
        if apex is not None and base is not None:
            out["carina"] = carina = Landmark("carina", apex - 0.29 * (apex - base), "estimated", "low",
                                              "from lung extent (airway split not found)")
    for name, off in OFFSET_FROM_CARINA_MM.items():
        z = None if carina.z_mm is None else carina.z_mm + off
        out[name] = Landmark(name, z, "estimated" if z is not None else "missing", "low",
                             f"carina {off:+.0f} mm (reference mean)")
    dome = out["dome_right"].z_mm if out["dome_right"].z_mm is not None else out["dome_left"].z_mm
    if carina.z_mm is not None and dome is not None:
        z = carina.z_mm - IPV_FRACTION_CARINA_TO_DOME * (carina.z_mm - dome)
        out["ipv"] = Landmark("ipv", float(z), "estimated", "low",
                              f"{IPV_FRACTION_CARINA_TO_DOME:.2f} of the way from carina to right dome")
    else:
        out["ipv"] = Landmark("ipv", None, "missing", "low", "needs carina and a dome")
    return out
