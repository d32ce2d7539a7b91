"""Which stacks are scored: hard filters, then ranked preferences, both read from the config.

The rules are data (``selection:`` in configs/default.yaml). A stack failing a hard filter is
skipped with that filter's code. Among the eligible stacks of a study, stacks whose headers already
predict a refusal (a gap, missing geometry, ...) come last; the rest are ordered by the configured
preferences. Every stack gets a decision and a reason a researcher can read. When every preference ties, the
headers' content decides (AcquisitionNumber, acquisition date and time, the smallest SOPInstanceUID), never the
file names, and the chosen stack gets SELECTION_TIE. The chosen stack also gets the warnings a reader needs about
what was left aside: EXPIRATORY_SERIES, STUDY_DATES_DIFFER, SPLIT_ACROSS_SERIES.
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

PREFERENCES = ("chest", "original", "primary", "axial", "coverage", "fov", "contiguous", "inspiration", "supine",
               "noncontrast", "thin", "kernel", "thinnest", "slices")
#: BodyPartExamined values (substrings) that name the chest; the "chest" preference ranks them, and stacks that
#: name no body part, above stacks that name another one (the ABDOMEN series of a chest-abdomen study).
CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG", "THX", "TORAX", "THORAC")
#: Thickness differences smaller than this (mm) do not make one stack "thinnest" before another.
THICKNESS_TIE_MM = 0.05
#: The "thin" preference compares thickness classes, not thicknesses: thin-section (up to 1.5 mm), up to 3 mm,
#: thicker. Within a class the kernel decides (a 1.25 mm LUNG series before a 0.625 mm STANDARD one of the same
#: scan: the kernel moved the ground-glass band 21 %, a few tenths of a millimetre of thickness far less), then
#: "thinnest" (the thinner slices) and "slices". A 1 mm soft-tissue series still comes before a 5 mm lung one.
THICKNESS_CLASSES_MM = (1.5, 3.0)
#: The "coverage" preference: a stack is short when its z coverage is below ``selection.full_coverage_mm`` and
#: below this share of the widest z coverage among the loadable chest stacks of its study (a complete 190 mm chest
#: is not short beside an 80 mm series of the bases; 198 and 205 mm series are alike, and the next preference,
#: inspiration, decides between them). Nor is a stack short that lacks less than :data:`COVERAGE_MIN_SHORTFALL_MM`
#: of the widest (a few slices at either end; for a chest scan of 100 mm or more the share is the stricter bound).
COVERAGE_SHARE = 0.9
COVERAGE_MIN_SHORTFALL_MM = 10.0
#: The "supine" preference: PatientPosition values of a prone or decubitus patient (PS3.3 C.7.3.1.1.2), ranked
#: below supine ones (HFS, FFS, LFS, RFS) and a position not recorded: the published scores were read supine, and
#: prone lung redistributes dependent density.
PRONE_OR_DECUBITUS = ("HFP", "FFP", "LFP", "RFP", "HFDL", "HFDR", "FFDL", "FFDR", "AFDL", "AFDR", "PFDL", "PFDR")
#: SPLIT_ACROSS_SERIES: two stacks of a study whose z ranges meet end to end (their nearest slices at most this many
#: slice spacings apart: one slice position missing between them at most; an overlap of at most one spacing) with
#: the same Frame of Reference, kernel, thickness and in-plane grid.
SPLIT_MAX_GAP_SPACINGS = 2.5
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


def _chest(c) -> bool:
    part = (c.header.get("body_part") or "").upper()
    return not part or any(w in part for w in CHEST_BODY_PARTS)


def _widest_chest_fov(group: list) -> float:
    """The widest in-plane field of view among the stacks of a study that are loadable and not of another body part
    (an abdomen stack or one headers predict refused must not make the chest stacks "targeted"); 0 when none."""
    fovs = [fov_mm(c) for c in group if not c.problems and _chest(c)]
    return max(fovs, default=0.0)


def _widest_chest_coverage(group: list) -> float:
    """The widest z coverage (mm) among the loadable stacks of a study that are not of another body part, or among
    all its loadable stacks where none names the chest (a PET/CT's WHOLEBODY or TRUNK series: none counted, no stack
    was short and 80 mm of the bases in 1 mm slices won over a 300 mm series, a review); 0 when none is known."""
    loadable = [c for c in group if not c.problems]
    covs = [float(c.info.get("z_coverage_mm") or 0.0) for c in ([c for c in loadable if _chest(c)] or loadable)]
    return max(covs, default=0.0)


def _short_below(rules: SelectionRules, widest_coverage_mm: float) -> float:
    """The z coverage (mm) under which a stack is short (the "coverage" preference); ``selection.full_coverage_mm``
    where no stack's coverage is known."""
    if widest_coverage_mm <= 0:
        return rules.full_coverage_mm
    return min(rules.full_coverage_mm, COVERAGE_SHARE * widest_coverage_mm,
               widest_coverage_mm - COVERAGE_MIN_SHORTFALL_MM)


def _expiratory(description: str) -> bool:
    return bool(EXPIRATION_WORDS.search(description)) and not INSPIRATION_WORDS.search(description)


def _thickness(cand) -> float:
    return float(cand.header.get("slice_thickness") or cand.info.get("slice_spacing_mm") or 99.0)


def _thickness_class(t: float) -> int:
    """0: thin-section (up to 1.5 mm), 1: up to 3 mm, 2: thicker or unknown (:data:`THICKNESS_CLASSES_MM`)."""
    return sum(not (t <= bound + 1e-6) for bound in THICKNESS_CLASSES_MM)  # NaN: the thickest class


_CLASS_NAMES = ("thin-section, up to 1.5 mm", "1.5 to 3 mm", "thicker than 3 mm")


def _prone(cand) -> bool:
    return (cand.header.get("patient_position") or "").strip().upper() in PRONE_OR_DECUBITUS


def _lung_kernel(cand, rules: SelectionRules) -> bool:
    return bool(rules.lung_kernel.search(cand.header.get("kernel", "") or ""))


def _preference_key(cand, rules: SelectionRules, widest_fov_mm: float = 0.0, widest_coverage_mm: float = 0.0) -> tuple:
    """The sort key of a stack among the eligible stacks of its study; ``widest_fov_mm`` and ``widest_coverage_mm``:
    the widest in-plane field of view and z coverage among the loadable chest stacks of the study (the "fov" and
    "coverage" preferences). Stacks with equal keys tie: :func:`_content_key` orders them."""
    h = cand.header
    itype = h.get("image_type", "").split("\\")
    key: list[Any] = [bool(cand.problems)]  # loadable first
    for pref in rules.preferences:
        if pref == "chest":
            key.append(not _chest(cand))
        elif pref == "original":
            key.append(itype[0] != "ORIGINAL" if itype else True)
        elif pref == "primary":
            key.append(len(itype) < 2 or itype[1] != "PRIMARY")
        elif pref == "axial":
            key.append(round(float(cand.info.get("axial_angle_deg") or 0.0), 1))
        elif pref == "coverage":
            key.append(float(cand.info.get("z_coverage_mm") or 0.0) < _short_below(rules, widest_coverage_mm))
        elif pref == "fov":  # a targeted reconstruction (one lung, a nodule) does not show the whole chest
            fov = fov_mm(cand)
            key.append(bool(fov) and fov < TARGETED_FOV_SHARE * widest_fov_mm and fov < TARGETED_FOV_MM)
        elif pref == "contiguous":  # sequential HRCT samples the lung: a volumetric series shows all of it
            key.append(_sparse(h.get("slice_thickness") or 0.0, cand.info.get("slice_spacing_mm")))
        elif pref == "inspiration":  # on an expiratory scan normal lung reads as ground glass
            key.append(_expiratory(h.get("series_description") or ""))
        elif pref == "supine":  # prone and decubitus lung redistributes dependent density
            key.append(_prone(cand))
        elif pref == "noncontrast":  # the published scores were read on non-contrast CT; contrast shifts HU
            key.append(has_contrast(h.get("contrast")))
        elif pref == "thin":
            key.append(_thickness_class(_thickness(cand)))
        elif pref == "kernel":
            lung = _lung_kernel(cand, rules)
            key.append(0 if rules.kernel_preference == "none" else (not lung if rules.kernel_preference == "lung"
                                                                       else lung))
        elif pref == "thinnest":
            steps = _thickness(cand) / THICKNESS_TIE_MM  # inf for a thickness or spacing near the float maximum
            key.append(round(steps) if math.isfinite(steps) else math.inf)
        elif pref == "slices":
            key.append(-int(cand.info.get("n_slices", len(cand.files))))
    return tuple(key)


#: What the content key of a stack compares, in order (the words of the reasons).
_TIE_BREAKS = ("AcquisitionNumber", "acquisition date and time", "smallest SOPInstanceUID")
_CONTENT_TAGS = ["SOPInstanceUID", "AcquisitionDate", "AcquisitionTime", "ContentDate", "ContentTime",
                 "AcquisitionDateTime"]


def _content_key(cand) -> tuple:
    """How stacks that tie on every preference are ordered, from what they hold, not from where their files lie
    (stack order follows file paths: the same files under other names took another acquisition): the smallest
    AcquisitionNumber, the earliest acquisition (or content) date and time, the smallest SOPInstanceUID; what is not
    recorded comes last. Reads those few header values of the stack's files (ties only)."""
    import pydicom

    from pipeline import headers as H

    numbers = [a.strip() for a in str(cand.info.get("acquisitions") or "").split(",") if a.strip()]
    ints = sorted(int(a) for a in numbers if re.fullmatch(r"[+-]?\d{1,18}", a))
    acq = (0, ints[0], "") if ints else ((1, 0, min(numbers)) if numbers else (2, 0, ""))
    when: list[str] = []
    sops: list[str] = []
    for f in cand.files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=_CONTENT_TAGS)
        except Exception:  # noqa: BLE001 - a file that cannot be read again adds nothing to the order
            continue
        sop = H.text(ds, "SOPInstanceUID")
        if sop:
            sops.append(sop)
        stamp = re.sub(r"[^0-9.]", "", H.text(ds, "AcquisitionDateTime"))
        if not stamp:
            date = (H.text(ds, "AcquisitionDate") or H.text(ds, "ContentDate") or cand.header.get("study_date") or "")
            time = H.text(ds, "AcquisitionTime") or H.text(ds, "ContentTime")
            date, time = re.sub(r"[^0-9]", "", date), re.sub(r"[^0-9.]", "", time)
            stamp = f"{date:0<8}{time}" if date and time else ""
        if stamp:
            when.append(stamp)
    return (acq, (0, min(when)) if when else (1, ""), (0, min(sops)) if sops else (1, ""))


def _tie_break(best_key: tuple, other_key: tuple) -> str:
    """How a tie on every preference was broken, in words."""
    for name, a, b in zip(_TIE_BREAKS, best_key, other_key):
        if a != b:
            if name == "AcquisitionNumber" and a[0] < 2 and b[0] < 2:  # both recorded (numbers or text)
                return f"AcquisitionNumber {a[2] or a[1]} before {b[2] or b[1]}"
            return {"AcquisitionNumber": "a recorded AcquisitionNumber",
                    "acquisition date and time": "the earlier acquisition date and time",
                    "smallest SOPInstanceUID": "the smaller SOPInstanceUID"}[name]
    return "stack order"


def _detail(pref: str, best, other, rules: SelectionRules, widest_coverage_mm: float) -> str:
    """The values behind a preference that decided, for the reason text ('' when the name says enough)."""
    if pref == "coverage":
        limit = _short_below(rules, widest_coverage_mm)
        if limit == rules.full_coverage_mm:
            why = "selection.full_coverage_mm"
        elif limit == COVERAGE_SHARE * widest_coverage_mm:
            why = f"{COVERAGE_SHARE:g} x the widest stack of the study, {widest_coverage_mm:g} mm"
        else:
            why = f"{COVERAGE_MIN_SHORTFALL_MM:g} mm short of the widest stack of the study, {widest_coverage_mm:g} mm"
        return f"z coverage {float(other.info.get('z_coverage_mm') or 0.0):g} mm is short: under {limit:g} mm, {why}"
    if pref in ("thin", "thinnest"):
        tb, to = _thickness(best), _thickness(other)
        text = f"{tb:g} mm over " + (f"{to:g} mm" if to < 99.0 else "no usable thickness")
        return f"{text}; {_CLASS_NAMES[_thickness_class(tb)]}" if pref == "thin" else text
    if pref == "kernel":
        return f"{best.header.get('kernel') or 'no kernel'} over {other.header.get('kernel') or 'no kernel'}"
    if pref == "supine":
        return (f"{best.header.get('patient_position') or 'no PatientPosition'} over "
                f"{other.header.get('patient_position')}, prone or decubitus")
    return ""


def _explain(best, other, rules: SelectionRules, widest_fov_mm: float = 0.0, widest_coverage_mm: float = 0.0,
             content: dict | None = None) -> str:
    """Why ``best`` ranked above ``other``: the first preference that differs (with its values where they help),
    or how a tie on every preference was broken (``content``: the stacks' :func:`_content_key`, by id)."""
    kb = _preference_key(best, rules, widest_fov_mm, widest_coverage_mm)
    ko = _preference_key(other, rules, widest_fov_mm, widest_coverage_mm)
    for name, a, b in zip(["loadable"] + rules.preferences, kb, ko):
        if a != b:
            detail = _detail(name, best, other, rules, widest_coverage_mm)
            return f"{name} ({detail})" if detail else name
    content = content or {}
    how = _tie_break(content.get(id(best), ()), content.get(id(other), ()))
    return f"a tie-break: equal on every preference, {how}"


def _split_partner(cand, group: list, rules: SelectionRules) -> list:
    """The stacks of ``group`` that seem the rest of ``cand``'s scan, split into another series: ``cand`` is short
    of ``selection.full_coverage_mm``, and the other meets its z range end to end with the same orientation,
    in-plane grid and position, kernel, slice thickness and patient position (and FrameOfReferenceUID, where the
    first files of both can be read)."""
    if cand.positions is None or cand.iop is None or len(cand.positions) < 2:
        return []
    if float(cand.info.get("z_coverage_mm") or 0.0) >= rules.full_coverage_mm:
        return []
    same = ("rows", "columns")

    def grid(c) -> tuple:
        return tuple(c.info.get(k) for k in same) + (c.header.get("kernel", "").upper(),
                                                     (c.header.get("patient_position") or "").upper())

    partners = []
    for o in group:
        if o is cand or o.problems or o.positions is None or o.iop is None or len(o.positions) < 2:
            continue
        if not _chest(o):  # the ABDOMEN series below a complete chest is no other half of it
            continue
        if grid(o) != grid(cand) or abs(_thickness(o) - _thickness(cand)) >= THICKNESS_TIE_MM:
            continue
        px_c, px_o = cand.info.get("pixel_spacing_mm"), o.info.get("pixel_spacing_mm")
        if not px_c or not px_o or abs(float(px_c) - float(px_o)) > 1e-3:
            continue
        if float(abs(o.iop - cand.iop).max()) > 1e-3:
            continue
        if float(abs(o.positions[:, :2].mean(axis=0) - cand.positions[:, :2].mean(axis=0)).max()) > float(px_c):
            continue
        spacing = max(float(cand.info.get("slice_spacing_mm") or 0.0), float(o.info.get("slice_spacing_mm") or 0.0))
        if not spacing:
            continue
        zc, zo = cand.positions[:, 2], o.positions[:, 2]
        gap = max(float(zo.min() - zc.max()), float(zc.min() - zo.max()))
        if not (-spacing - 0.01 <= gap <= SPLIT_MAX_GAP_SPACINGS * spacing + 0.01):
            continue
        frames = {_frame_of_reference(c) for c in (cand, o)}
        if len(frames - {""}) > 1:
            continue
        partners.append(o)
    return partners


def _frame_of_reference(cand) -> str:
    import pydicom

    from pipeline import headers as H

    try:
        return H.text(pydicom.dcmread(cand.files[0], stop_before_pixels=True,
                                      specific_tags=["FrameOfReferenceUID"]), "FrameOfReferenceUID")
    except Exception:  # noqa: BLE001 - unknown: the geometry alone decides
        return ""


def _warn_chosen(c, group: list, rules: SelectionRules, one_per_study: bool, requested: bool = False) -> None:
    """The flags of a stack to be scored that say what its study holds beside it: it is expiratory; other stacks
    of the study bear another StudyDate (one per study is scored); it seems one part of a scan split in two.
    ``requested``: the stack was named with --series-uid."""
    if _expiratory(c.header.get("series_description") or ""):
        others = [o for o in group if o is not c and not _expiratory(o.header.get("series_description") or "")]
        if requested:
            why = "it was requested with --series-uid"
        elif not one_per_study:
            why = "every eligible stack is scored (--all-series)"
        elif others:
            why = (f"chosen over {len(others)} eligible stack(s) of the study that do not name it (the reason of each "
                   "says why)")
        else:
            why = "every eligible stack of the study names expiration"
        c.flags.append("EXPIRATORY_SERIES")
        c.messages["EXPIRATORY_SERIES"] = (
            "its SeriesDescription names expiration: normal lung reads denser on expiration, so % opacity and the "
            f"ground-glass volume are overestimated; {why}")
    if not one_per_study:
        return
    date = c.header.get("study_date") or ""
    other_dates = [o for o in group if o is not c and date and (o.header.get("study_date") or "") not in ("", date)]
    if other_dates:
        n_dates = len({o.header.get("study_date") for o in other_dates})
        c.flags.append(f"STUDY_DATES_DIFFER:{len(other_dates)}")
        c.messages["STUDY_DATES_DIFFER"] = (
            f"{len(other_dates)} other eligible stack(s) of this StudyInstanceUID bear {n_dates} other StudyDate(s) "
            f"({', '.join(o.stack_id for o in other_dates[:5])}{', ...' if len(other_dates) > 5 else ''}): several "
            "time points under one study (an anonymiser's or archive's merge?), of which only this stack is scored; "
            "--all-series scores every eligible stack, each under its own study_date")
    partners = _split_partner(c, group, rules)
    if partners:
        c.flags.append("SPLIT_ACROSS_SERIES")
        c.messages["SPLIT_ACROSS_SERIES"] = (
            f"its z range ({float(c.info.get('z_coverage_mm') or 0.0):g} mm) continues end to end in "
            f"{', '.join(o.stack_id for o in partners)} (same kernel, thickness and grid): the scan seems split "
            "into series, of which only this part is scored (a lung cut short: PARTIAL_LUNG_COVERAGE); "
            "--series-uid or --all-series scores the other part as a scan of its own")


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
        widest, widest_cov = _widest_chest_fov(group), _widest_chest_coverage(group)
        keys = {id(c): _preference_key(c, rules, widest, widest_cov) for c in group}
        ranked = sorted(group, key=lambda c: (keys[id(c)], c.stack_id))
        # stacks equal to the best on every preference: ordered by what they hold (the same files under other names
        # must give the same choice), the stack id only where that is equal too. Only the tie that decides is read
        # (its files' headers again); ties further down, or with every stack scored, keep the stack id's order
        content: dict[int, tuple] = {}
        end = 0
        while end + 1 < len(ranked) and keys[id(ranked[end + 1])] == keys[id(ranked[0])]:
            end += 1
        if end > 0 and one_per_study:
            run = ranked[:end + 1]
            content.update({id(c): _content_key(c) for c in run})
            ranked[:end + 1] = sorted(run, key=lambda c: (content[id(c)], c.stack_id))

        if len(ranked) > 1 and one_per_study and keys[id(ranked[0])] == keys[id(ranked[1])]:
            ties = [c for c in ranked[1:] if keys[id(c)] == keys[id(ranked[0])]]
            ranked[0].flags.append("SELECTION_TIE")
            ranked[0].messages["SELECTION_TIE"] = (
                f"ranked equal to {', '.join(c.stack_id for c in ties)} by every preference; taken by "
                f"{_tie_break(content[id(ranked[0])], content[id(ties[0])])}")
        ranked[0].alternatives = [c.stack_id for c in ranked[1:] if not c.problems][:3] if one_per_study else []
        for k, c in enumerate(ranked, start=1):
            c.rank = k
            predicted = f"; headers predict {','.join(c.problems)}" if c.problems else ""
            if k == 1 or not one_per_study:
                c.decision = "selected"
                c.reason = (f"best of {len(ranked)} eligible stack(s) in the study{predicted}" if k == 1
                            else f"eligible (all series requested){predicted}")
                _warn_chosen(c, group, rules, one_per_study, requested=bool(series_uid))
                chosen.append(c)
            else:
                c.reason = (f"NOT_SELECTED: rank {k}; {ranked[0].stack_id} preferred by "
                            f"{_explain(ranked[0], c, rules, widest, widest_cov, content)}")
    return chosen
