"""The score rules of SCORING.md as pure functions (no arrays, no I/O).

Each function maps a measured quantity (percent involvement, class shares) to a score, exactly as
the source studies define it, with the choices the studies leave open made explicit here and in
``configs/default.yaml``:

* six-zone (liao2021, li2020): 0 = 0 %; 1 = > 0 and < 25 %; 2 = 25 to < 50 %; 3 = 50 to < 75 %;
  4 = >= 75 %. Total 0-24.
* zhang900 (zhang2020): extent 0-10 in 10 % steps, rounded to the nearest step, and at least 1 when
  the unit is involved; density 0 normal, 1 faint ground glass, 2 ground glass, 3 consolidation;
  unit score = extent x density^2 (0-90); total over 10 units (0-900).
* MosMedData category from whole-lung involvement: CT-0 none, CT-1 < 25 %, CT-2 25 to < 50 %,
  CT-3 50 to < 75 %, CT-4 >= 75 %.
* lobar: each lobe 0-4 (the six-zone bands; total 0-20, the total severity score of Chung et al., Radiology 2020)
  or 0-5 (0 none, 1 < 5 %, 2 5-25 %, 3 over 25 to under 50 %, 4 50-75 %, 5 > 75 %; total 0-25, Pan et al., Radiology 2020).

"Involved" means the unit's lesion volume reached the configured minimum (see :func:`is_involved`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# Lesion class codes (also the values of lesions.nii.gz) and their zhang2020 density grades.
FAINT_GGO, GGO, CONSOLIDATION = 1, 2, 3
CLASS_NAMES = {FAINT_GGO: "faint_ggo", GGO: "ggo", CONSOLIDATION: "consolidation"}


def is_involved(lesion_ml: float, involvement_pct: float, min_ml: float, min_pct: float) -> bool:
    """A unit counts as involved only when its lesion volume and percentage reach both minima. The volume is
    rounded to 1e-9 mL, like the percentages: voxel counts x the voxel volume (summed over the classes) have
    floating-point error, and 1000 voxels of 1 mm3 came out 0.9999999999999999 mL, under a 1 mL minimum."""
    return round(lesion_ml, 9) >= min_ml and involvement_pct >= min_pct and involvement_pct > 0


def _check_pct(involvement_pct: float) -> None:
    """A percentage that is not a number (NaN: a missing unit; inf) has no grade: it failed every '<' test below and
    got the top one (six-zone 4, lobar 5, CT-4). SCORING.md: a unit the scan cannot see is missing, never scored."""
    if not math.isfinite(involvement_pct):
        raise ValueError(f"involvement percentage {involvement_pct} is not a finite number (a missing unit has no "
                         "score)")


def six_zone_score(involvement_pct: float, involved: bool = True) -> int:
    """Six-zone involvement score 0-4 of one zone."""
    _check_pct(involvement_pct)
    if not involved or involvement_pct <= 0:
        return 0
    if involvement_pct < 25:
        return 1
    if involvement_pct < 50:
        return 2
    if involvement_pct < 75:
        return 3
    return 4


def zhang_extent(involvement_pct: float, involved: bool = True) -> int:
    """zhang2020 extent 0-10: nearest 10 % step (halves round up), at least 1 when involved."""
    _check_pct(involvement_pct)
    if not involved or involvement_pct <= 0:
        return 0
    return int(min(10, max(1, math.floor(involvement_pct / 10.0 + 0.5))))


def density_grade(class_volumes: Mapping[int, float], rule: str = "densest", share: float = 0.2) -> int:
    """zhang2020 density grade 0-3 of a unit from its lesion volume per class.

    ``predominant``: the class with the largest volume (ties go to the denser class).
    ``densest``: the densest class holding at least ``share`` of the unit's lesion volume
    (falls back to the predominant class when none reaches the share).
    """
    total = sum(v for v in class_volumes.values() if v > 0)
    if total <= 0:
        return 0
    classes = sorted((c for c, v in class_volumes.items() if v > 0), reverse=True)  # densest first
    predominant = max(classes, key=lambda c: (class_volumes[c], c))
    if rule == "predominant":
        return int(predominant)
    if rule == "densest":
        for c in classes:
            # rounded like quantify.percent: volumes are voxel counts x the voxel volume, and the sum's
            # floating-point error must not move a share exactly on density_share (1 of 5 voxels is 20 %)
            if round(class_volumes[c] / total, 9) >= share:
                return int(c)
        return int(predominant)
    raise ValueError(f"unknown density rule {rule!r}")


def zhang_unit_score(extent: int, density: int) -> int:
    """Unit score = extent x density^2 (0-90)."""
    if not 0 <= extent <= 10 or not 0 <= density <= 3:
        raise ValueError(f"extent {extent} or density {density} out of range")
    return int(extent * density**2)


def mosmed_category(involvement_pct: float) -> str:
    """MosMedData CT-0..CT-4 from whole-lung percent involvement."""
    _check_pct(involvement_pct)
    if involvement_pct <= 0:
        return "CT-0"
    if involvement_pct < 25:
        return "CT-1"
    if involvement_pct < 50:
        return "CT-2"
    if involvement_pct < 75:
        return "CT-3"
    return "CT-4"


#: How near a rule's edge a unit's measure must be to be marked ``near_edge`` in zones.csv: within these, a shift of
#: the patient by a fraction of a voxel changed units' scores (a stability audit, 2026-12-06: ricord_covid_419639 and
#: cap001 repositioned; lesion 1.25 -> 0.96 mL, involvement 15.92 -> 14.98 %, 0.270 -> 0.231 %, a consolidation share
#: 0.199 -> 0.245 each flipped a unit, by up to 9 points of 0-900).
EDGE_ML = 0.5
EDGE_PCT = 1.0
EDGE_MIN_PCT = 0.1
EDGE_SHARE = 0.05

#: The involvement percentages where a system's unit score steps (zhang900: the extent's rounding; 5 % is no step,
#: an involved unit scores at least 1).
BAND_EDGES = {"six_zone": (25.0, 50.0, 75.0), "lobar": (5.0, 25.0, 50.0, 75.0),
              "zhang900": tuple(float(e) for e in range(15, 100, 10))}


def near_edges(system: str, lesion_ml: float, involvement_pct: float, class_ml: Mapping[int, float] | None,
               min_ml: float, min_pct: float, density_rule: str = "densest", share: float = 0.2) -> list[str]:
    """The rule edges a unit's measures lie near (zones.csv ``near_edge``), where a small change of the segmentation
    (the patient shifted by a fraction of a voxel, another noise) can change its score; the landmarks that place the
    units can move too, which this does not cover. ``minimum``: an involved unit with its lesion within
    :data:`EDGE_ML` of ``min_ml`` or its involvement within :data:`EDGE_MIN_PCT` points of ``min_pct`` (either
    falling below uninvolves it), or a unit not involved that is within both of reaching them. ``band``: the
    involvement within :data:`EDGE_PCT` points of a step of :data:`BAND_EDGES`. ``density_share`` (zhang900): with
    the densest rule, the share of the lesion of the graded class, or of a denser class, within :data:`EDGE_SHARE` of
    ``share``; with the predominant rule, the two largest classes' shares within :data:`EDGE_SHARE` of each other.
    Empty for a unit without lesion or a missing one."""
    if not (math.isfinite(lesion_ml) and math.isfinite(involvement_pct)) or lesion_ml <= 0:
        return []
    edges = []
    involved = is_involved(lesion_ml, involvement_pct, min_ml, min_pct)
    if involved:
        near_min = lesion_ml - min_ml <= EDGE_ML or involvement_pct - min_pct <= EDGE_MIN_PCT
    else:
        near_min = min_ml - lesion_ml <= EDGE_ML and min_pct - involvement_pct <= EDGE_MIN_PCT
    if near_min:
        edges.append("minimum")
    if not (involved or near_min):
        return edges
    if any(abs(involvement_pct - e) <= EDGE_PCT for e in BAND_EDGES.get(system, ())):
        edges.append("band")
    if system == "zhang900" and class_ml and _density_near_edge(class_ml, density_rule, share):
        edges.append("density_share")
    return edges


def _density_near_edge(class_ml: Mapping[int, float], rule: str, share: float) -> bool:
    """Whether a small change of the class volumes can change :func:`density_grade`."""
    total = sum(float(v) for v in class_ml.values() if v > 0)
    if total <= 0:
        return False
    shares = {c: float(class_ml.get(c, 0.0)) / total for c in (FAINT_GGO, GGO, CONSOLIDATION)}
    if rule == "predominant":
        top = sorted(shares.values(), reverse=True)
        return top[0] - top[1] <= EDGE_SHARE
    grade = density_grade(class_ml, rule, share)
    return any(abs(shares[c] - share) <= EDGE_SHARE for c in shares if c >= grade and shares[c] > 0)


def lobar_score_5(involvement_pct: float, involved: bool = True) -> int:
    """Lobe score 0-5: 0 none, 1 < 5 %, 2 5-25 %, 3 over 25 to under 50 %, 4 50-75 %, 5 > 75 %."""
    _check_pct(involvement_pct)
    if not involved or involvement_pct <= 0:
        return 0
    if involvement_pct < 5:
        return 1
    if involvement_pct <= 25:
        return 2
    if involvement_pct < 50:
        return 3
    if involvement_pct <= 75:
        return 4
    return 5
