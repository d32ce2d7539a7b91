"""Image checks of the Hounsfield units a series was scored on, each a QC flag: the scores rest on fixed HU bands
(ground glass -700 to -300 HU, consolidation above), so a scale that is off, lungs that are dense without disease,
metal streaks and contrast change them without any other sign.

Measured on the working grid (the network's input) and recorded in result.json (``hu_check``), flagged only
beyond the limits below. The loader refuses what is plainly no HU (``NOT_HU``: air not near -1000 HU at the
low end of the values); these checks catch what passes it: a RescaleSlope that is wrong (air stays near -1000, soft
tissue moves to 1000 HU), an offset of 100-200 HU (a scanner out of calibration), an expiratory scan.

- ``HU_CALIBRATION:<air>/<tissue>``: the median HU of the air around the patient (outside the body's outline and
  the lungs, not the padding outside the field of view, -1200 to -500 HU) is outside :data:`AIR_RANGE`, or that of
  the body's soft tissue and bone (outside the lungs, -200 HU up to metal) outside :data:`TISSUE_RANGE`.
- ``DENSE_LUNG:<HU>``: the mean HU of the lung outside the lesion mask is above :data:`DENSE_LUNG_HU` (an
  expiratory scan, poor inspiration, dependent atelectasis, diffuse disease the network did not mark): normal lung
  itself then reaches the ground-glass band.
- ``METAL:<mL>``: this many mL at :data:`METAL_HU` or more (wires, clips, a pacemaker, electrodes; cortical bone
  stays below): their streaks can be taken as ground glass.
- ``CONTRAST``: the header names a contrast agent (ContrastBolusAgent): enhanced vessels inside a lesion raise its
  density grade; the HU bands and the network are of non-contrast CT.
- ``THICK_SLICES:<mm>``: slices thicker than :data:`THICK_SLICE_MM`: partial volume of vessels and of the lung's
  edges with the chest wall looks like ground glass.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

#: Median HU of the air around the patient that is taken as calibrated (air is -1000 HU; the six real series of
#: ../shared/data read -997 to -947: a tight field of view leaves mostly air beside the skin, partial volume).
AIR_RANGE = (-1080.0, -920.0)
#: Median HU of the body's soft tissue and bone outside the lungs (fat -100, muscle and blood 40, bone 400 and up):
#: the six real chests -83 to 41 HU (../shared/data).
TISSUE_RANGE = (-150.0, 100.0)
#: Mean HU of the lung outside the lesion mask above which the lung is flagged as dense (inspiratory normal lung:
#: -900 to -750 HU; the ground-glass band starts at -700).
DENSE_LUNG_HU = -700.0
#: HU at and above which a voxel is metal (12-bit scanners saturate at 3071; cortical bone stays below 2000).
METAL_HU = 2500.0
#: Metal volume flagged (mL): a few voxels of a beam-hardened bone edge are not metal.
METAL_MIN_ML = 0.1
#: Slice thickness above which a series is flagged (mm).
THICK_SLICE_MM = 5.0
#: Header values of ContrastBolusAgent that say "no contrast" (English, and the German, Spanish, Italian and French
#: words sites write: "nativ", "sin contraste", "senza contrasto", "sans injection").
NO_CONTRAST = {"", "none", "no", "nil", "n/a", "na", "0", "-", "without", "no contrast", "non contrast",
               "non-contrast", "noncontrast", "nc", "nativ", "native", "plain", "unenhanced", "non enhanced",
               "non-enhanced", "nonenhanced"}
#: Words that start a value saying "no contrast" ("NO CONTRAST AGENT", "NONE USED", "ohne KM", "sin contraste").
_NEGATION = re.compile(r"(no|none|nil|without|n/a|ohne|kein\w*|sin|senza|sans|nativ|native|plain|unenhanced|"
                       r"non[- ]?(contrast|enhanced))\b")
#: Names of contrast agents (generic and brand): a value naming one is contrast even after a negation
#: ("No oral, IV Omnipaque").
_AGENTS = re.compile(r"io(hexol|pamidol|promide|dixanol|meprol|versol|bitridol|xaglate|pentol|xilan)|omnipaque|"
                     r"isovue|ultravist|visipaque|iomeron|imeron|optiray|xenetix|hexabrix|accupaque|solutrast|"
                     r"scanlux|barium|gastrografin|telebrix", re.IGNORECASE)


def has_contrast(agent: str | None) -> bool:
    """Whether a ContrastBolusAgent value names an agent ("none", "no", "n/a", "NO CONTRAST AGENT", "NONE USED",
    "nativ" and the like do not; "NON-IONIC CONTRAST" and "No oral, IV Omnipaque" do)."""
    text = " ".join((agent or "").strip().lower().split())
    if _AGENTS.search(text):
        return True
    return text not in NO_CONTRAST and not _NEGATION.match(text)


def measure(hu: np.ndarray, lungs: np.ndarray, lesions: np.ndarray, voxel_ml: float,
            body: np.ndarray | None = None, padding: np.ndarray | None = None) -> dict[str, Any]:
    """The HU measures of one series on one grid: ``air_hu`` (median of the air around the patient), ``tissue_hu``
    (median of the body's soft tissue and bone outside the lungs, -200 HU and up), ``healthy_lung_hu`` (mean of the
    lung outside the lesions), ``metal_ml``; NaN where there is nothing to measure. ``body``: the body mask above -500 HU
    (:func:`segmentation.classical.body_mask`), made here when not given. ``padding``: the loader's mask of the
    pixels outside the field of view, on the same grid: set to exactly -1000 HU, they are no measure of the air.
    The lungs are never "air around the patient" (a field of view that cuts the chest wall leaves the body's
    outline open, and its lungs outside the filled body)."""
    from segmentation.classical import body_mask

    body = body_mask(hu, -500.0) if body is None else body
    outside = ~body & (lungs == 0) & (hu >= -1200) & (hu <= -500)
    if padding is not None:
        outside &= ~padding
    inside = body & (lungs == 0) & (hu >= -200) & (hu < METAL_HU)
    healthy = (lungs > 0) & ~lesions
    return {
        "air_hu": _round(np.median(hu[outside])) if outside.sum() >= 1000 else math.nan,
        "tissue_hu": _round(np.median(hu[inside])) if inside.sum() >= 1000 else math.nan,
        "healthy_lung_hu": _round(hu[healthy].mean()) if healthy.sum() >= 1000 else math.nan,
        "metal_ml": round(float(np.count_nonzero(hu >= METAL_HU)) * voxel_ml, 2),
    }


def _round(v: Any) -> float:
    return round(float(v), 1)


def flags_for(m: dict[str, Any], contrast_agent: str | None = None, slice_thickness_mm: float | None = None
              ) -> list[str]:
    """The QC flags (module docstring) of the measures of :func:`measure` and two header values."""
    flags = []
    air, tissue = m.get("air_hu", math.nan), m.get("tissue_hu", math.nan)
    off_air = math.isfinite(air) and not AIR_RANGE[0] <= air <= AIR_RANGE[1]
    off_tissue = math.isfinite(tissue) and not TISSUE_RANGE[0] <= tissue <= TISSUE_RANGE[1]
    if off_air or off_tissue:
        flags.append(f"HU_CALIBRATION:{_text(air)}/{_text(tissue)}")
    lung = m.get("healthy_lung_hu", math.nan)
    if math.isfinite(lung) and lung > DENSE_LUNG_HU:
        flags.append(f"DENSE_LUNG:{lung:.0f}")
    if m.get("metal_ml", 0.0) >= METAL_MIN_ML:
        flags.append(f"METAL:{m['metal_ml']:.1f}")
    if has_contrast(contrast_agent):  # (oral contrast too: still an agent the header names)
        flags.append("CONTRAST")
    t = slice_thickness_mm
    if t is not None and math.isfinite(float(t)) and float(t) > THICK_SLICE_MM:
        flags.append(f"THICK_SLICES:{float(t):g}")
    return flags


def _text(v: float) -> str:
    return f"{v:.0f}" if math.isfinite(v) else "nan"
