"""The scoring systems a reference can hold: their units, value ranges and how ctscore reports them.

One table of :class:`SystemSpec` is the single source of truth for the reference schema checks
(``schema.py``), for which pipeline column feeds each (system, unit) (``predictions.py``) and for
which statistics apply (ordinal systems get kappa and confusion matrices). See docs/reference_schema.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SIDES = ("right", "left")
SIX_ZONE_UNITS = tuple(f"{s}_{z}" for s in SIDES for z in ("upper", "middle", "lower"))
ZHANG_UNITS = tuple(f"{s}_L{i}" for s in SIDES for i in range(1, 6))
LOBE_UNITS = ("right_upper", "right_middle", "right_lower", "left_upper", "left_lower")
TOTAL = "total"
#: The pooled "unit" under which all non-total units of a system are compared together.
ALL_UNITS = "all_units"

MOSMED_CATEGORIES = ("CT-0", "CT-1", "CT-2", "CT-3", "CT-4")

#: Every value extent x density^2 can take (extent 0-10, density 0-3).
ZHANG_UNIT_VALUES = frozenset(e * d * d for e in range(11) for d in range(4))


@dataclass(frozen=True)
class SystemSpec:
    """One scoring system: allowed units and the value range of a unit and of the total."""

    name: str
    units: tuple[str, ...]
    unit_range: tuple[float, float] | None
    total_range: tuple[float, float]
    integer: bool
    description: str

    @property
    def ordinal(self) -> bool:
        """Whole-number scores: quadratic-weighted kappa and confusion matrices apply."""
        return self.integer

    def value_range(self, unit: str) -> tuple[float, float]:
        """(low, high) allowed for ``unit``."""
        if unit == TOTAL:
            return self.total_range
        if self.unit_range is None:
            raise KeyError(unit)
        return self.unit_range

    def check_value(self, unit: str, value: float) -> str | None:
        """Why ``value`` is not allowed for ``unit`` (None when it is)."""
        if not math.isfinite(value):
            return "not a finite number"
        lo, hi = self.value_range(unit)
        if not lo <= value <= hi:
            return f"outside {self.name} {'total' if unit == TOTAL else 'unit'} range {lo:g}-{hi:g}"
        if self.integer and value != round(value):
            return f"{self.name} scores are whole numbers"
        if self.name == "zhang900" and unit != TOTAL and int(value) not in ZHANG_UNIT_VALUES:
            return "not a possible extent x density^2 value (extent 0-10, density 0-3)"
        return None


SYSTEMS: dict[str, SystemSpec] = {
    "six_zone": SystemSpec("six_zone", SIX_ZONE_UNITS, (0, 4), (0, 24), True,
                           "six zones scored 0-4, total 0-24 (liao2021, li2020)"),
    "zhang900": SystemSpec("zhang900", ZHANG_UNITS, (0, 90), (0, 900), True,
                           "ten units scored extent x density^2 0-90, total 0-900 (zhang2020)"),
    "percent_involvement": SystemSpec(
        "percent_involvement", ("right", "left", *SIX_ZONE_UNITS, *ZHANG_UNITS,
                                *(f"lobe:{lobe}" for lobe in LOBE_UNITS)),
        (0, 100), (0, 100), False, "percent of lung (or of a zone) that is abnormal, 0-100"),
    "mosmed": SystemSpec("mosmed", (), None, (0, 4), True,
                         "MosMedData category CT-0..CT-4 of the whole lung (unit 'total' only)"),
    "lobar": SystemSpec("lobar", LOBE_UNITS, (0, 4), (0, 20), True,
                        "five lobes scored 0-4 (six-zone bands), total 0-20"),
    "lobar25": SystemSpec("lobar25", LOBE_UNITS, (0, 5), (0, 25), True,
                          "five lobes scored 0-5 (Pan et al. bands), total 0-25"),
    # a reader's visual estimate of well-aerated lung (Colombi et al., Radiology 2020: %S-WAL) against ctscore's
    # percent_well_aerated (lung voxels in hu_classes.well_aerated)
    "well_aerated": SystemSpec("well_aerated", SIDES, (0, 100), (0, 100), False,
                               "percent of lung (or of one lung) that is well aerated, 0-100 (Colombi et al. 2020)"),
}

#: The unit of a difference between two raters (MAE, Bland-Altman bias and limits) on each system's scale.
DIFFERENCE_UNITS = {"six_zone": "score points", "zhang900": "score points", "lobar": "score points",
                    "lobar25": "score points", "percent_involvement": "percentage points",
                    "mosmed": "categories", "well_aerated": "percentage points"}


def difference_unit(system: str) -> str:
    """What a difference of 1 means on ``system``'s scale ("score points", "percentage points", "categories")."""
    return DIFFERENCE_UNITS.get(system, "")


#: Other spellings accepted in the reference's ``system`` column.
SYSTEM_ALIASES = {
    "sixzone": "six_zone", "six-zone": "six_zone", "six_zone_24": "six_zone",
    "zhang": "zhang900", "zhang2020": "zhang900",
    "percent": "percent_involvement", "percent_opacity": "percent_involvement", "po": "percent_involvement",
    "mosmed_category": "mosmed", "ct_category": "mosmed",
    "lobar20": "lobar", "lobe": "lobar",
    "wal": "well_aerated", "percent_well_aerated": "well_aerated", "s_wal": "well_aerated", "s-wal": "well_aerated",
    "swal": "well_aerated", "well-aerated": "well_aerated",
}


def canonical_system(name: str) -> str | None:
    """The system key for a spelling in the reference (None when unknown)."""
    key = name.strip().lower()
    key = SYSTEM_ALIASES.get(key, key)
    return key if key in SYSTEMS else None


def mosmed_to_ordinal(value: str | float) -> float:
    """``CT-0``..``CT-4`` (or 0-4) to 0-4; NaN for empty; ValueError for anything else."""
    if isinstance(value, float) and math.isnan(value):
        return math.nan
    text = str(value).strip().upper().replace("_", "-").replace(" ", "")
    if text == "":
        return math.nan
    if text in MOSMED_CATEGORIES:
        return float(MOSMED_CATEGORIES.index(text))
    if text.startswith("CT") and text[2:].lstrip("-").isdigit():
        text = text[2:].lstrip("-")
    return float(text)

