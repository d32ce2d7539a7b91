"""Which stacks are scored: hard filters, then ranked preferences, both read from the config.

The rules are data (``selection:`` in configs/default.yaml). A stack failing a hard filter is
skipped with that filter's code. Among the eligible stacks of a study, stacks whose headers already
predict a refusal (a gap, missing geometry, ...) come last; the rest are ordered by the configured
preferences. Every stack gets a decision and a reason a researcher can read.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError
from pipeline.geometry import ORIENTATION_TOLERANCE, analyse_stack, axial_angle_deg
from pipeline.hu_checks import has_contrast

log = logging.getLogger(__name__)

PREFERENCES = ("chest", "original", "primary", "axial", "coverage", "fov", "contiguous", "inspiration", "noncontrast",
               "thin", "kernel", "slices")
#: BodyPartExamined values (substrings) that name the chest; the "chest" preference ranks them, and stacks that
#: name no body part, above stacks that name another one (the ABDOMEN series of a chest-abdomen study).
CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG", "THX", "TORAX", "THORAC")
#: Thickness differences smaller than this (mm) do not make one stack "thinner" than another.
THICKNESS_TIE_MM = 0.05
#: The "fov" preference: a stack whose in-plane field of view is below this share of the widest loadable chest stack
#: of its study, and below :data:`TARGETED_FOV_MM`, is a targeted reconstruction (one lung, a nodule) and ranks below
#: the full field of view (a 360 mm lung reconstruction beside a 500 mm extended field of view is not targeted).
TARGETED_FOV_SHARE = 0.8
TARGETED_FOV_MM = 260.0
#: SPARSE_SLICES: slices spaced more than this many times their thickness apart, and with gaps of
#: :data:`SPARSE_MIN_GAP_MM` or more between them (sequential HRCT: 1 mm slices every 10 mm), sample the lung.
SPARSE_SPACING_RATIO = 2.0
SPARSE_MIN_GAP_MM = 2.0
#: The "inspiration" preference: a SeriesDescription with one of these words names an expiratory series (air
#: trapping studies), whose normal lung reads as ground glass; one naming inspiration too ("INSP/EXP") is not.
#: Words are bounded by anything but a letter ("Thorax_Exp_1.0", "Exp1.0 B70f"); Spanish/Italian "espiración",
#: "espirazione", German "Ausatmung" count.
EXPIRATION_WORDS = re.compile(r"(?<![A-Z])(EXP|EXPI|EXPIR[A-Z]*|EXSPIR[A-Z]*|EXHAL[A-Z]*|EXSP|ESPIR[A-Z]*|"
                              r"AUSATM[A-Z]*)(?![A-Z])", re.IGNORECASE)
INSPIRATION_WORDS = re.compile(r"(?<![A-Z])(INSP[A-Z]*|INHAL[A-Z]*|EINATM[A-Z]*)(?![A-Z])", re.IGNORECASE)
#: Words that make an ImageType value a projection or reformat even inside a longer value (vendors write
#: "CT_SOM5 MIP" or "MIP_SLAB"); each counts only while ``selection.exclude_image_types`` lists it.
PROJECTION_WORDS = ("MIP", "MINIP", "MPR", "CPR")
_WORD_SPLIT = re.compile(r"[^A-Z0-9]+")
#: RescaleType values of CT images in HU ("US", unspecified, is what most CT writes); any other names a map
#: (a dual-energy Z-effective, iodine or electron-density map) whose values are not HU.
HU_RESCALE_TYPES = ("", "HU", "US", "HOUNSFIELD", "HOUNSFIELDUNIT", "HOUNSFIELDUNITS")


def _csv(value: str) -> list[str]:
    return [v.strip().upper() for v in str(value).split(",") if v.strip()]


@dataclass
class SelectionRules:
    """The ``selection:`` config section, parsed."""

    modalities: list[str]
    exclude_image_types: list[str]
    exclude_body_parts: list[str]
    max_axial_angle_deg: float
    min_slices: int
    max_slice_thickness_mm: float
    preferences: list[str]
    full_coverage_mm: float
    kernel_preference: str
    lung_kernel: re.Pattern
    one_per_study: bool

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> SelectionRules:
        from pipeline.config import default_config

        sel = (cfg or default_config()).get("selection") or default_config()["selection"]
        prefs = [p.lower() for p in _csv(sel["preferences"])]
        unknown = [p for p in prefs if p not in PREFERENCES]
        if unknown:
            raise ConfigError(f"selection.preferences: unknown {unknown}; known: {', '.join(PREFERENCES)}")
        if sel["kernel_preference"] not in ("lung", "soft", "none"):
            raise ConfigError(f"selection.kernel_preference must be lung, soft or none, got {sel['kernel_preference']!r}")
        try:
            pattern = re.compile(sel["lung_kernel_regex"], re.IGNORECASE)
        except re.error as exc:
            raise ConfigError(f"selection.lung_kernel_regex is not a valid regular expression: {exc}") from exc
        return cls(_csv(sel["modalities"]), _csv(sel["exclude_image_types"]), _csv(sel["exclude_body_parts"]),
                   float(sel["max_axial_angle_deg"]), int(sel["min_slices"]), float(sel["max_slice_thickness_mm"]),
                   prefs, float(sel["full_coverage_mm"]), sel["kernel_preference"], pattern,
                   bool(sel["one_per_study"]))


def _loading(cfg: dict[str, Any] | None) -> dict[str, Any]:
    from pipeline.config import default_config

    return (cfg or default_config()).get("loading") or default_config()["loading"]


def hard_filter(cand, rules: SelectionRules) -> str:
    """The skip code of the first hard filter the stack fails ('' when it passes)."""
    h = cand.header
    itype = [v for v in h.get("image_type", "").split("\\") if v]
    n = int(cand.info.get("n_slices", len(cand.files)))
    if h.get("modality", "").upper() not in rules.modalities:
        return "NOT_CT"
    if any(v in ("LOCALIZER", "SCOUT", "TOPOGRAM") for v in itype):
        return "LOCALIZER"
    words = {w for v in itype for w in _WORD_SPLIT.split(v.upper()) if w in PROJECTION_WORDS}
    if any(v in rules.exclude_image_types for v in itype) or words & set(rules.exclude_image_types):
        return "DERIVED_REFORMAT"
    if re.sub(r"[^A-Z]", "", (h.get("rescale_type") or "").upper()) not in HU_RESCALE_TYPES:
        return "NOT_HU_MAP"
    if h.get("photometric", "") and h["photometric"] not in ("MONOCHROME1", "MONOCHROME2"):
        return "NOT_MONOCHROME"
    if cand.iop is not None and axial_angle_deg(cand.iop) > rules.max_axial_angle_deg:
        return "NOT_AXIAL"
    if "NOT_A_VOLUME" in cand.problems:
        return "NOT_A_VOLUME"
    if n < rules.min_slices:
        return "TOO_FEW_SLICES"
    if n < 2:  # selection.min_slices lowered to 1: a single slice is still no volume (it failed NO_LUNG_FOUND)
        cand.messages.setdefault("NOT_A_VOLUME", "a single slice")
        return "NOT_A_VOLUME"
    thickness = h.get("slice_thickness") or 0.0
    if thickness and thickness > rules.max_slice_thickness_mm:
        return "TOO_THICK"
    if h.get("body_part", "") and h["body_part"] in rules.exclude_body_parts:
        return "BODY_PART_EXCLUDED"
    return ""


def assess(cand, cfg: dict[str, Any] | None = None) -> None:
    """(Re)compute the header-predicted geometry problems and flags of a stack under ``cfg``."""
    load = _loading(cfg)
    keep_problems = [p for p in cand.problems if p in ("MISSING_GEOMETRY", "INCONSISTENT_FRAME_OF_REFERENCE",
                                                       "BAD_HEADER_VALUE", "CORRUPT_FILE", "DUPLICATE_POSITION")]
    keep_flags = [f for f in cand.flags if f in ("ACQUISITIONS_MERGED", "MISSING_SERIES_UID",
                                                 "CORRUPT_FILES_IN_STACK", "SOP_UID_REUSED")]
    messages = {k: v for k, v in cand.messages.items() if k in keep_problems + keep_flags}
    cand.problems, cand.flags, cand.messages = keep_problems, keep_flags, messages
    _predict_too_large(cand, load)
    if cand.iop is None or cand.positions is None:
        return
    thickness = cand.header.get("slice_thickness") or None
    geo = analyse_stack(cand.iop, cand.positions, thickness, allow_gaps=bool(load["allow_gaps"]),
                        max_gap_ratio=float(load["max_gap_ratio"]), spacing_tolerance=float(load["spacing_tolerance"]))
    cand.problems += [p for p in geo.problems if p not in cand.problems]
    spread = float(getattr(cand, "iop_spread", 0.0) or 0.0)
    if spread > ORIENTATION_TOLERANCE and "INCONSISTENT_ORIENTATION" not in cand.problems:
        # grouped by the inventory (ORIENTATION_GROUPING_TOLERANCE), refused by the loader: predicted, so that
        # another stack of the study is chosen
        cand.problems.append("INCONSISTENT_ORIENTATION")
        cand.messages["INCONSISTENT_ORIENTATION"] = (f"direction cosines differ by up to {spread:.4g} between slices "
                                                     f"(loader tolerance {ORIENTATION_TOLERANCE:g})")
    cand.flags += [f for f in geo.fixes if f not in cand.flags]
    cand.messages.update(geo.messages)
    if geo.duplicate_groups and "DUPLICATE_POSITION" not in cand.problems:
        cand.messages["DUPLICATE_POSITION"] = (f"{sum(len(g) - 1 for g in geo.duplicate_groups)} slice(s) share a "
                                               "position with another (identical pixels: removed; else refused)")
    if cand.info.get("lossy"):
        cand.flags.append("LOSSY_COMPRESSION")
        if not load["allow_lossy"]:
            cand.problems.append("LOSSY_REFUSED")
    if _sparse(cand.header.get("slice_thickness") or 0.0, geo.spacing):
        cand.flags.append("SPARSE_SLICES")
        cand.messages["SPARSE_SLICES"] = (f"{float(cand.header['slice_thickness']):g} mm slices every "
                                          f"{geo.spacing:.3g} mm")
    z = cand.positions[:, 2]
    cand.info.update(
        slice_spacing_mm=round(geo.spacing, 4) if geo.spacing else None,
        z_min_mm=round(float(z.min()), 2), z_max_mm=round(float(z.max()), 2),
        z_coverage_mm=round(geo.z_extent + (geo.spacing or 0.0), 2),
        gantry_tilt_deg=round(geo.tilt_deg, 2),
    )


def _predict_too_large(cand, load: dict[str, Any]) -> None:
    """TOO_LARGE from the headers' slices x rows x columns, by the loader's own rule (``loading.max_voxels``,
    ``loading.max_memory_mb``): ``ctscore scan`` said such a stack would load, and ``run`` refused it unread."""
    from pipeline.loading import too_large

    info = cand.info or {}
    try:
        n, rows, cols = (int(info.get(k) or 0) for k in ("n_slices", "rows", "columns"))
    except (TypeError, ValueError):
        return
    why = too_large(n, rows, cols, int(load["max_voxels"]), float(load["max_memory_mb"])) if n * rows * cols else None
    if why:
        cand.problems.append("TOO_LARGE")
        cand.messages["TOO_LARGE"] = why


def _sparse(thickness: float, spacing: float | None) -> bool:
    """Whether slices ``thickness`` mm thick every ``spacing`` mm leave the lung between them unimaged
    (:data:`SPARSE_SPACING_RATIO`, :data:`SPARSE_MIN_GAP_MM`); False when either is unknown."""
    if not thickness or not spacing or not (math.isfinite(thickness) and math.isfinite(spacing)) or thickness <= 0:
        return False
    return spacing > SPARSE_SPACING_RATIO * thickness and spacing - thickness >= SPARSE_MIN_GAP_MM


def fov_mm(cand) -> float:
    """The in-plane field of view of a stack (mm): its larger matrix side times the pixel spacing; 0 when unknown."""
    info = cand.info
    try:
        return float(max(int(info.get("rows") or 0), int(info.get("columns") or 0)) *
                     float(info.get("pixel_spacing_mm") or 0.0))
    except (TypeError, ValueError):
        return 0.0


def _widest_chest_fov(group: list) -> float:
    """The widest in-plane field of view among the stacks of a study that are loadable and not of another body part
    (an abdomen stack or one headers predict refused must not make the chest stacks "targeted"); 0 when none."""
    def chest(c) -> bool:
        part = (c.header.get("body_part") or "").upper()
        return not part or any(w in part for w in CHEST_BODY_PARTS)

    fovs = [fov_mm(c) for c in group if not c.problems and chest(c)]
    return max(fovs, default=0.0)


def _expiratory(description: str) -> bool:
    return bool(EXPIRATION_WORDS.search(description)) and not INSPIRATION_WORDS.search(description)


def _preference_key(cand, rules: SelectionRules, widest_fov_mm: float = 0.0) -> tuple:
    """The sort key of a stack among the eligible stacks of its study; ``widest_fov_mm``: the widest in-plane
    field of view among them (the "fov" preference)."""
    h = cand.header
    itype = h.get("image_type", "").split("\\")
    key: list[Any] = [bool(cand.problems)]  # loadable first
    for pref in rules.preferences:
        if pref == "chest":
            part = (h.get("body_part") or "").upper()
            key.append(bool(part) and not any(w in part for w in CHEST_BODY_PARTS))
        elif pref == "original":
            key.append(itype[0] != "ORIGINAL" if itype else True)
        elif pref == "primary":
            key.append(len(itype) < 2 or itype[1] != "PRIMARY")
        elif pref == "axial":
            key.append(round(float(cand.info.get("axial_angle_deg") or 0.0), 1))
        elif pref == "coverage":
            key.append(float(cand.info.get("z_coverage_mm") or 0.0) < rules.full_coverage_mm)
        elif pref == "fov":  # a targeted reconstruction (one lung, a nodule) does not show the whole chest
            fov = fov_mm(cand)
            key.append(bool(fov) and fov < TARGETED_FOV_SHARE * widest_fov_mm and fov < TARGETED_FOV_MM)
        elif pref == "contiguous":  # sequential HRCT samples the lung: a volumetric series shows all of it
            key.append(_sparse(h.get("slice_thickness") or 0.0, cand.info.get("slice_spacing_mm")))
        elif pref == "inspiration":  # on an expiratory scan normal lung reads as ground glass
            key.append(_expiratory(h.get("series_description") or ""))
        elif pref == "noncontrast":  # the published scores were read on non-contrast CT; contrast shifts HU
            key.append(has_contrast(h.get("contrast")))
        elif pref == "thin":
            t = float(h.get("slice_thickness") or cand.info.get("slice_spacing_mm") or 99.0)
            steps = t / THICKNESS_TIE_MM  # inf for a thickness or spacing near the float maximum (1e308 mm)
            key.append(round(steps) if math.isfinite(steps) else math.inf)
        elif pref == "kernel":
            lung = bool(rules.lung_kernel.search(h.get("kernel", "") or ""))
            key.append(0 if rules.kernel_preference == "none" else (not lung if rules.kernel_preference == "lung"
                                                                       else lung))
        elif pref == "slices":
            key.append(-int(cand.info.get("n_slices", len(cand.files))))
    key.append(cand.stack_id)  # deterministic last resort, stated in the reason as "order"
    return tuple(key)


def _explain(best, other, rules: SelectionRules, widest_fov_mm: float = 0.0) -> str:
    """Why ``best`` ranked above ``other`` (the first preference that differs)."""
    kb, ko = _preference_key(best, rules, widest_fov_mm), _preference_key(other, rules, widest_fov_mm)
    names = ["loadable"] + rules.preferences + ["stack order"]
    for name, a, b in zip(names, kb, ko):
        if a != b:
            return name
    return "stack order"


def select_stacks(cands: list, cfg: dict[str, Any] | None = None, series_uid: str | None = None,
                  all_eligible: bool = False) -> list:
    """Decide every stack (sets ``eligible``, ``decision``, ``reason``, ``rank``); return the chosen ones,
    best first within each study, studies in input order."""
    rules = SelectionRules.from_config(cfg)
    for c in cands:
        assess(c, cfg)
        c.alternatives = []
        code = hard_filter(c, rules)
        c.eligible = not code
        c.reason = code
        c.decision = "skipped"
        c.rank = 0
    if series_uid:
        for c in cands:
            if c.series_uid != series_uid and c.stack_id != series_uid:
                c.eligible, c.reason = False, c.reason or "NOT_REQUESTED"
            elif not c.eligible:
                # forcing a series overrides the preferences, not the hard filters: say why
                c.reason = f"{c.reason} (requested with --series-uid, but refused by a hard filter)"
    one_per_study = rules.one_per_study and not all_eligible
    studies: dict[str, list] = {}
    for c in cands:
        if c.eligible:
            studies.setdefault(c.study_key, []).append(c)
    chosen = []
    for group in studies.values():
        widest = _widest_chest_fov(group)
        ranked = sorted(group, key=lambda c: _preference_key(c, rules, widest))
        if len(ranked) > 1 and one_per_study and _explain(ranked[0], ranked[1], rules, widest) == "stack order":
            ties = [c.stack_id for c in ranked[1:] if _explain(ranked[0], c, rules, widest) == "stack order"]
            ranked[0].flags.append("SELECTION_TIE")
            ranked[0].messages["SELECTION_TIE"] = (f"ranked equal to {', '.join(ties)} by every preference; "
                                                   "taken by stack order")
        ranked[0].alternatives = [c.stack_id for c in ranked[1:] if not c.problems][:3] if one_per_study else []
        for k, c in enumerate(ranked, start=1):
            c.rank = k
            predicted = f"; headers predict {','.join(c.problems)}" if c.problems else ""
            if k == 1 or not one_per_study:
                c.decision = "selected"
                c.reason = (f"best of {len(ranked)} eligible stack(s) in the study{predicted}" if k == 1
                            else f"eligible (all series requested){predicted}")
                chosen.append(c)
            else:
                c.reason = f"NOT_SELECTED: rank {k}; {ranked[0].stack_id} preferred by {_explain(ranked[0], c, rules, widest)}"
    return chosen
