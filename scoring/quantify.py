"""Turn masks into the measures and scores of one scan (pure numpy; no I/O).

Inputs are arrays on one grid (the original CT grid, LPS-oriented so that z index grows cranially),
the patient z of every slice (and, for slices tilted from axial, of every voxel), and the landmark
levels. Outputs are a flat dict of scan-level measures (one row of scans.csv) and a list of unit
rows (zones.csv).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scoring import systems
from scoring.landmarks import BASE_UNCERTAIN_NOTE, Landmark, lung_ends, settle_lung_ends
from scoring.zones import ZHANG_LEVELS, ZInterval, six_zone_intervals, zhang_intervals
from segmentation.base import LEFT_LUNG, LOBES, RIGHT_LUNG

SIDES = {RIGHT_LUNG: "right", LEFT_LUNG: "left"}
#: Below this volume (mL) a lung counts as not found, when the config does not set
#: ``segmentation.min_lung_volume_ml``.
MIN_SIDE_ML = 100.0
#: ... and below this share of the other lung's volume.
ABSENT_SHARE = 0.1
#: LUNG_NOT_AERATED: a side whose lung mask holds less than this share of voxels below AERATED_HU (HU) holds almost no
#: air: a pneumonectomy, a lung collapsed or replaced by effusion taken as consolidated lung, or complete
#: consolidation. Flagged for review, scored as segmented (dropping it would drop the sickest lungs). A filled
#: hemithorax taken as lung had 0 %; lungs of the real test series, diffuse pneumonia included, far more.
AERATED_HU = -500.0
#: Well-aerated lung, [low, high) HU, when the configuration does not set ``hu_classes.well_aerated``: Colombi et al.,
#: Radiology 2020;296:E86 (configs/default.yaml).
WELL_AERATED_HU = (-950.0, -700.0)
#: Low-attenuation lung (``percent_low_attenuation``, %LAA-950: emphysema, bullae, air trapping), below this HU; the
#: QC flag LOW_ATTENUATION reads the same count (pipeline.hu_checks.LAA_HU).
LOW_ATTENUATION_HU = -950.0
#: Aeration compartments (``hyperinflated_*``, ``normally_aerated_*``, ``poorly_aerated_*``, ``non_aerated_*``,
#: ``lung_tissue_g``, ``lung_gas_ml``), when the configuration does not set ``hu_classes.aeration_edges``: the edges
#: between hyperinflated and normally aerated, normally and poorly aerated, poorly and non-aerated lung, and the
#: non-aerated compartment's upper end (included), in HU: -1000/-900/-500/-100/+100 as Gattinoni et al. (N Engl J Med
#: 2006;354:1775) and the ARDS CT literature after them. Lung voxels above the last edge (contrast-filled vessels,
#: calcification) are in no compartment, and count in neither tissue nor gas.
AERATION_EDGES_HU = (-900.0, -500.0, -100.0, 100.0)
#: The compartments in HU order, the scans.csv column stems (``<name>_volume_ml``, ``<name>_tissue_g``).
AERATION_COMPARTMENTS = ("hyperinflated", "normally_aerated", "poorly_aerated", "non_aerated")
#: Lung voxels read at a time by :func:`aeration_measures` (a bounded working set: 1 MiB of float32).
AERATION_CHUNK = 1 << 18
AERATED_MIN_SHARE = 0.10
# A unit the scan cannot see: every score empty, never 0.
MISSING_UNIT = {"involvement_pct": math.nan, "extent_score": math.nan, "density_grade": math.nan,
                "unit_score": math.nan, "status": "missing", "near_edge": ""}
#: ZONE_SMALL:<lung>_<unit>: a six-zone zone holding less than this percentage of its lung's volume (scored, flagged
#: for review): a lung ending just above the carina or a level misplaced near an end of the lung leaves a zone of a
#: few mL, where 1.3 mL of lesion in 10 mL of lung scored 12.5 % (grade 1) as if it were a zone's worth of lung. On
#: the six real chests of ../shared/data (classical segmenter; 2026-12-08) the smallest zone held 22.2 % of its lung
#: (ge_mister_ct right lower), ricord_covid_419639 and normal001 resampled to 1-5 mm slices at four grid offsets
#: 24.7 % (an audit of zone boundaries): a quarter of that keeps the flag off normal anatomy. zhang900 has no such
#: limit: its L1 slab (the suprasternal notch) holds 0.3-4 % of the lung on normal scans (normal001 6 and 9 mL), and
#: none on itkelastix00's right lung, whose apex lies 11 mm below the notch (scripts/zone_shares.py prints these).
ZONE_MIN_SHARE_PCT = 5.0
#: A lobe map leaving more than this percentage of a lung in no lobe of its side (a misaligned, cropped or shifted
#: map, or another scan's) gives no lobar scores: QC flag ``LOBES_PARTIAL:<percent>``. Only the lungs whose lobes the
#: map all holds are measured (a lobe absent from the map is ``LOBES_MISSING``); less is given the nearest lobe
#: (:func:`complete_lobe_map`). On the sample (scripts/lobe_map_shares.py, right / left lung) a map made on the scored
#: lung mask leaves 0 %, one made on the MONAI network's lung mask 4.5 / 2.4 %, one at half the resolution 4.9 /
#: 5.3 %, one shifted a voxel 1.5-3.5 %; shifted 5 mm sideways 6.3 / 6.9 %, 10 mm in z 5.9 / 6.3 %, 25 mm in z 14.4 /
#: 15.3 %.
LOBES_MAX_UNCOVERED_PCT = 5.0
#: A lobe whose lung is less than this percentage of its side's lung is missing (``LOBES_MISSING``): a map whose
#: middle lobe was merged into the upper one but for a few stray voxels scored "a healthy middle lobe" (the smallest
#: lobe, the right middle, is about a tenth of its lung).
LOBE_MIN_SHARE_PCT = 1.0
#: A label value outside the lobe labels is named in a warning (:func:`foreign_lobe_labels`) when it covers at least
#: this percentage of the lung mask (TotalSegmentator's ``total`` maps hold 112 other structures, some touching it).
FOREIGN_LABEL_MIN_PCT = 1.0
#: Each lung's lobe codes (:data:`segmentation.base.LOBES`).
SIDE_LOBES = ((RIGHT_LUNG, (1, 2, 3)), (LEFT_LUNG, (4, 5)))


def slice_step_mm(z_mm: np.ndarray) -> float:
    """Median distance (mm) between consecutive slice centres; 0 for a single slice."""
    return float(np.median(np.abs(np.diff(z_mm)))) if len(z_mm) > 1 else 0.0


def _interval_seen(iv: ZInterval, z_mm: np.ndarray, lung_cut_top: bool, lung_cut_bottom: bool,
                   slab: bool) -> bool:
    """Whether the scan sees all of a zone: a zone reaching past a cut-off end of the lung is missing; a slab
    must lie within the scanned z range (the first and last slices reach half a slice step beyond their centres)."""
    zmin, zmax = float(z_mm.min()), float(z_mm.max())
    if slab:
        half = 0.5 * slice_step_mm(z_mm)
        return iv.low >= zmin - half - 1e-6 and iv.high <= zmax + half + 1e-6
    if lung_cut_top and iv.high > zmax:
        return False
    if lung_cut_bottom and iv.low < zmin:
        return False
    return True


def percent(part_ml: float, whole_ml: float) -> float:
    """100 x part / whole, rounded to 1e-9 %: both volumes are voxel counts x the voxel volume, and the product's
    floating-point error must not move a share that is exactly on a grade boundary (75 % of 400 voxels at
    0.742 x 0.742 x 2 mm came out 74.99999999999999 %, grade 3 instead of 4). NaN when ``whole_ml`` is 0."""
    return round(100.0 * part_ml / whole_ml, 9) if whole_ml > 0 else math.nan


def written_involvement(lesion_ml: float, lung_ml: float) -> tuple[float, float]:
    """A unit's involvement % and lesion mL as zones.csv writes them (3 and 2 decimals), from which its score and its
    involvement minimum are judged, as MosMed is from scans.csv's percent_opacity: binning the table's own figures
    gives the table's scores (graded unrounded, a zone of 24.9996 % was written 25.0 beside a six-zone 1, and 0.9975
    mL was written 1.0 beside a 0 under the 1 mL minimum; an audit, 2026-12-07). NaN % when ``lung_ml`` is 0."""
    pct = percent(lesion_ml, lung_ml)
    return (round(pct, 3) if math.isfinite(pct) else pct), round(lesion_ml, 2)


def edge_cut(lung_side: np.ndarray, z_mm: np.ndarray, voxel_ml: float) -> tuple[bool, bool]:
    """(top cut, bottom cut) of one lung: its first/last slice itself holds at least
    :data:`scoring.landmarks.MIN_LUNG_AREA_MM2` of it (stray voxels there do not count). The same function as the
    apex/base landmarks' "cut off by the scan" (:func:`scoring.landmarks.lung_ends`). A single-slice scan (no
    slice step) counts any lung voxel in it. The top slice is the one with the largest z (the last on an LPS grid;
    the first where z falls with the index: the ends were swapped there, a lung cut off at the apex was reported
    cut at the base)."""
    return lung_ends(lung_side, z_mm, voxel_ml)[2:]


def class_counts(cls: np.ndarray) -> np.ndarray:
    """Voxel counts of lesion classes 1-3 in ``cls`` (index 1-3; index 0 is left 0): three ``count_nonzero`` passes,
    ten times faster than ``np.bincount`` on uint8 classes (which casts them to int64 first)."""
    return np.array([0, *(np.count_nonzero(cls == c) for c in (1, 2, 3))], np.int64)


def unit_measures(sel: np.ndarray, lung_side: np.ndarray, classes: np.ndarray, voxel_ml: float,
                  hu: np.ndarray | None = None, high_opacity_min_hu: float | None = None) -> dict:
    """Lung and lesion volumes (mL) per class inside a z-selection of one lung: ``sel`` selects slices (1-D)
    or voxels (an array of the volume's shape, for tilted slices).

    With ``hu`` (the volume's HU) also the mean HU of the unit's lung voxels (``mean_hu``, NaN for no voxel) and,
    with ``high_opacity_min_hu``, the volume of its lesion voxels above that HU (``high_ml``, for PHO), read from
    the same selection (no further full-volume pass)."""
    if sel.ndim == 1:
        ks = np.flatnonzero(sel)
        if ks.size and ks.size == ks[-1] + 1 - ks[0]:  # consecutive slices (a zone): views, no full-volume mask
            lung_side, classes = lung_side[ks[0]:ks[-1] + 1], classes[ks[0]:ks[-1] + 1]
            hu = None if hu is None else hu[ks[0]:ks[-1] + 1]
            lung = lung_side
        else:
            lung = lung_side & sel[:, None, None]
    else:
        lung = lung_side & sel
    lung_ml = float(lung.sum()) * voxel_ml
    cls = classes[lung]
    n = class_counts(cls)
    counts = n * voxel_ml
    out = {
        "lung_ml": lung_ml,
        "lesion_ml": float(counts[1:].sum()),
        "class_ml": {1: float(counts[1]), 2: float(counts[2]), 3: float(counts[3])},
        "class_n": {1: int(n[1]), 2: int(n[2]), 3: int(n[3])},  # voxel counts, for class_columns
    }
    if hu is not None:
        hu_lung = hu[lung]
        out["mean_hu"] = float(hu_lung.mean()) if hu_lung.size else math.nan
        if high_opacity_min_hu is not None:
            out["high_ml"] = float(np.count_nonzero((cls > 0) & (hu_lung > high_opacity_min_hu))) * voxel_ml
    return out


def class_columns(class_n: Mapping[int, int], voxel_ml: float, suffix: str = "") -> dict[str, float]:
    """Ground-glass (faint + ground glass, as ``ggo_volume_ml``), consolidation and faint ground-glass volumes (mL,
    rounded to 0.01, computed as the scan-level columns are) from voxel counts per class, under the scan-level
    names with ``suffix`` (``_right``)."""
    faint, ggo, cons = (int(class_n[c]) for c in (systems.FAINT_GGO, systems.GGO, systems.CONSOLIDATION))
    return {f"ggo_volume_ml{suffix}": round(float(faint + ggo) * voxel_ml, 2),
            f"consolidation_volume_ml{suffix}": round(float(cons) * voxel_ml, 2),
            f"faint_ggo_volume_ml{suffix}": round(float(faint) * voxel_ml, 2)}


def unit_columns(m: Mapping[str, Any], pct: float, voxel_ml: float) -> dict[str, Any]:
    """The measures of one unit row of zones.csv from :func:`unit_measures` (with ``hu``) and its involvement %."""
    cols = class_columns(m["class_n"], voxel_ml)
    return {"lung_ml": round(m["lung_ml"], 2), "lesion_ml": round(m["lesion_ml"], 2), "involvement_pct": round(pct, 3),
            "ggo_ml": cols["ggo_volume_ml"], "consolidation_ml": cols["consolidation_volume_ml"],
            "faint_ggo_ml": cols["faint_ggo_volume_ml"],
            # a unit without lung is missing, but an L1 slab above the apex (SLAB_ABOVE_APEX), scored 0: so is its PHO
            "percent_high_opacity": round(percent(m["high_ml"], m["lung_ml"]), 3) if m["lung_ml"] > 0 else 0.0,
            "mean_lung_hu": round(m["mean_hu"], 1) if math.isfinite(m["mean_hu"]) else math.nan}


def score_scan(
    hu: np.ndarray,
    lungs: np.ndarray,
    classes: np.ndarray,
    z_mm: np.ndarray,
    voxel_ml: float,
    landmarks: Mapping[str, Landmark],
    cfg: Mapping[str, Any],
    lobes: np.ndarray | None = None,
    z_voxel: np.ndarray | None = None,
    pixel_mm: Sequence[float] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """Scores and measures of one scan. Returns (scan row, zone rows, QC flags).

    ``z_voxel``: the patient z of every voxel (the volume's shape), for slices tilted from axial; the zones are
    then cut at axial planes through the volume, as SCORING.md defines them, instead of slice by slice at the
    slice centre (``z_mm``, which still decides which edge slices are cut off).

    ``pixel_mm``: the (row, column) pixel spacing in mm, for the distances of the peripheral_central rows
    (:func:`_peripheral_central_rows`); None takes square pixels of the area ``voxel_ml`` and the slice step give,
    right for CT's square pixels but not for rectangular ones.

    The steps, each a function below: :func:`_check_inputs`, :func:`_lesion_classes_in_lung`, :func:`_scan_measures`
    (volumes, PO, PHO, MosMed), :func:`_coverage` (apex/base cut off), :func:`_absent_sides` (LUNG_NOT_FOUND,
    LUNG_NOT_AERATED), :func:`_zone_scores` (six-zone and zhang900 units and totals), :func:`_lobar_scores`."""
    z_arr = _check_inputs(hu, lungs, classes, z_mm, lobes, z_voxel)
    sc = cfg["scoring"]
    pho_min = cfg["hu_classes"]["high_opacity_min_hu"]
    flags: list[str] = []
    classes = _lesion_classes_in_lung(lungs, classes)
    row = _scan_measures(hu, lungs, classes, voxel_ml, pho_min, sc["min_involvement_ml"],
                         cfg["hu_classes"].get("well_aerated", WELL_AERATED_HU),
                         cfg["hu_classes"].get("aeration_edges", AERATION_EDGES_HU))
    cut = _coverage(lungs, z_mm, voxel_ml, landmarks, row, flags)
    absent_sides = _absent_sides(hu, lungs, voxel_ml, cfg, row, flags)
    zone_rows, six_total, zh_total = _zone_scores(hu, lungs, classes, z_mm, z_mm if z_voxel is None else z_voxel,
                                                  voxel_ml, landmarks, cfg, cut, absent_sides, flags)
    if six_total is None or zh_total is None:
        flags.append("ZONES_MISSING")
    row["six_zone_total"] = math.nan if six_total is None else six_total
    row["zhang900_total"] = math.nan if zh_total is None else zh_total
    # how many of a total's units sit at a rule's edge (zones.csv near_edge): each may change its score under a
    # shift of a fraction of a voxel, so these say how firm the total is; empty with the total
    for system, total in (("six_zone", six_total), ("zhang900", zh_total)):
        row[f"{system}_near_edge"] = math.nan if total is None else sum(
            1 for r in zone_rows if r["system"] == system and r.get("near_edge"))
    zone_rows += _lobar_scores(hu, lungs, classes, z_mm, z_arr, voxel_ml, cfg, lobes, absent_sides, row, flags)
    zone_rows += _anteroposterior_rows(hu, lungs, classes, voxel_ml, pho_min, absent_sides)
    zone_rows += _peripheral_central_rows(hu, lungs, classes, voxel_ml, pho_min, absent_sides,
                                          _pixel_mm(pixel_mm, voxel_ml, z_arr), z_arr, landmarks)
    return row, zone_rows, flags


def _pixel_mm(pixel_mm: Sequence[float] | None, voxel_ml: float, z_mm: np.ndarray) -> tuple[float, float]:
    """The (row, column) pixel spacing: as given, else square pixels of the area the voxel volume and the median
    slice step leave (1 mm slices when there is one slice)."""
    if pixel_mm is not None:
        return float(pixel_mm[0]), float(pixel_mm[1])
    step = float(np.median(np.abs(np.diff(np.sort(z_mm))))) if len(z_mm) > 1 else 1.0
    side = math.sqrt(voxel_ml * 1000.0 / step) if step > 0 and voxel_ml > 0 else 1.0
    return side, side


def _check_inputs(hu: np.ndarray, lungs: np.ndarray, classes: np.ndarray, z_mm: np.ndarray,
                  lobes: np.ndarray | None, z_voxel: np.ndarray | None) -> np.ndarray:
    """Refuse arrays that do not fit together (ValueError); return ``z_mm`` as a float array."""
    if z_voxel is not None and z_voxel.shape != lungs.shape:
        raise ValueError(f"z_voxel has shape {z_voxel.shape}, the volume {lungs.shape}")
    # one z per slice and arrays of the volume's shape: a longer z list was cut to the volume silently, and classes of
    # another shape broadcast
    if len(z_mm) != lungs.shape[0]:
        raise ValueError(f"z_mm has {len(z_mm)} values, the volume {lungs.shape[0]} slices")
    for name, arr in (("hu", hu), ("classes", classes), ("lobes", lobes)):
        if arr is not None and arr.shape != lungs.shape:
            raise ValueError(f"{name} has shape {arr.shape}, the lung mask {lungs.shape}")
    # one finite z per slice, in ascending or descending order (the ends are the top and bottom slices): a NaN z
    # dropped its slice out of every zone, and unsorted z put the coverage ends on the wrong slices
    z_arr = np.asarray(z_mm, dtype=float)
    if not np.isfinite(z_arr).all():
        raise ValueError("z_mm holds values that are not finite numbers (NaN or inf); give one z per slice")
    steps = np.diff(z_arr)
    if steps.size and not ((steps > 0).all() or (steps < 0).all()):
        raise ValueError("z_mm is not in ascending or descending order (or repeats a z); give the slices sorted "
                         "along z")
    return z_arr


def _lesion_classes_in_lung(lungs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The lesion classes inside the lung mask, 0 outside it; ValueError for codes other than 0-3."""
    # Lesion voxels outside the lung mask are not lung (SCORING.md: the lung mask is the denominator): they count
    # nowhere, so that scan-level lesion volumes, PO, PHO and MosMed agree with the per-lung and per-zone rows.
    classes = np.where(lungs > 0, classes, 0).astype(classes.dtype, copy=False)
    # codes 1-3 only (scoring.systems): a lesion voxel of another code (a 0/255 mask) was lesion with no class, and
    # a unit full of it scored extent 10 x density 0 = 0
    if classes.size and (int(classes.max()) > systems.CONSOLIDATION or int(classes.min()) < 0
                         or (np.issubdtype(classes.dtype, np.floating) and (classes != np.round(classes)).any())):
        raise ValueError(f"classes holds codes {int(classes.min())}..{int(classes.max())}; lesion classes are 0 none, "
                         "1 faint ground glass, 2 ground glass, 3 consolidation (scoring.hu_classes.classify_lesions)")
    return classes


def _scan_measures(hu: np.ndarray, lungs: np.ndarray, classes: np.ndarray, voxel_ml: float, pho_min: float,
                   min_ml: float, well_aerated: tuple[float, float] | list[float] = WELL_AERATED_HU,
                   aeration_edges: Sequence[float] = AERATION_EDGES_HU) -> dict[str, Any]:
    """The scan row's volumes, percentages, mean HU, well-aerated lung and MosMed category, whole scan and per lung.

    Well-aerated lung (``well_aerated_volume_ml``, ``percent_well_aerated``): the lung voxels whose HU lies in
    ``well_aerated`` ([low, high), ``hu_classes.well_aerated``), lesion or not: a measure of the lung mask and the
    CT numbers alone, which no lesion segmentation or class band moves. So are the aeration compartments, lung tissue
    and gas (:func:`aeration_measures`).

    Everything is read from the lung voxels, selected once (``classes`` is 0 outside the lung:
    :func:`_lesion_classes_in_lung`): full-volume masks per side and class made this the run's memory peak on a
    600-slice series (+600 MiB over the rest; the run's peak fell by 276 MiB; a performance audit, 2026-12-06). The same voxels in the same order, so the same
    sums and means."""
    row: dict[str, Any] = {}
    lung_all = lungs > 0
    lab, hu_l, cls_l = lungs[lung_all], hu[lung_all], classes[lung_all]
    del lung_all
    lung_ml = float(lab.size) * voxel_ml
    per_lung: dict[str, dict[str, Any]] = {}
    wal_lo, wal_hi = (float(v) for v in well_aerated)
    for side, name in SIDES.items():
        m = lab == side
        hu_m, cls_m = hu_l[m], cls_l[m]  # the lung's voxels once: its class volumes, PHO and mean HU read them
        n = class_counts(cls_m)
        side_ml = float(hu_m.size) * voxel_ml
        side_lesion_ml = float(n[1:].sum()) * voxel_ml
        row[f"lung_volume_ml_{name}"] = round(side_ml, 2)
        row[f"lesion_volume_ml_{name}"] = round(side_lesion_ml, 2)
        row[f"mean_lung_hu_{name}"] = round(float(hu_m.mean()), 1) if hu_m.size else math.nan
        side_wal = np.count_nonzero((hu_m >= wal_lo) & (hu_m < wal_hi))
        # the scan-level definitions per lung (columns after mean_lung_hu_<side>, pipeline.outputs.SCAN_COLUMNS);
        # percentages NaN for an empty lung
        per_lung[name] = {
            **class_columns(n, voxel_ml, f"_{name}"),
            f"percent_opacity_{name}": round(percent(side_lesion_ml, side_ml), 3),
            f"percent_high_opacity_{name}": round(percent(
                float(np.count_nonzero((cls_m > 0) & (hu_m > pho_min))) * voxel_ml, side_ml), 3),
            f"percent_well_aerated_{name}": round(percent(float(side_wal) * voxel_ml, side_ml), 3),
        }
    n_all = class_counts(cls_l)
    lesion_ml = float(n_all[1:].sum()) * voxel_ml
    row["lesion_volume_ml"] = round(lesion_ml, 2)
    row["faint_ggo_volume_ml"] = round(float(n_all[systems.FAINT_GGO]) * voxel_ml, 2)
    row["ggo_volume_ml"] = round(float(n_all[systems.FAINT_GGO] + n_all[systems.GGO]) * voxel_ml, 2)
    row["consolidation_volume_ml"] = round(float(n_all[systems.CONSOLIDATION]) * voxel_ml, 2)
    po = percent(lesion_ml, lung_ml)
    pho = percent(float(np.count_nonzero((cls_l > 0) & (hu_l > pho_min))) * voxel_ml, lung_ml)
    row["percent_opacity"] = round(po, 3)
    row["percent_high_opacity"] = round(pho, 3)
    row["mean_lung_hu"] = round(float(hu_l.mean()), 1) if hu_l.size else math.nan
    wal_n = np.count_nonzero((hu_l >= wal_lo) & (hu_l < wal_hi))
    row["well_aerated_volume_ml"] = round(float(wal_n) * voxel_ml, 2)
    row["percent_well_aerated"] = round(percent(float(wal_n) * voxel_ml, lung_ml), 3)
    # below the well-aerated band: emphysema lowers percent_well_aerated as opacities do, and this tells them apart
    row["percent_low_attenuation"] = round(percent(float(np.count_nonzero(hu_l < LOW_ATTENUATION_HU)) * voxel_ml,
                                                   lung_ml), 3)
    row.update(aeration_measures(hu_l, voxel_ml, aeration_edges))
    # MosMed: any lesion of at least min_involvement_ml counts (CT-1 is "< 25 %"); the percentage minimum is a
    # zone's noise floor (0.25 % of both lungs is 10-12 mL, which made a scan with a 12 mL lesion, six-zone 1, CT-0)
    involved = systems.is_involved(row["lesion_volume_ml"], po, min_ml, 0.0) if lung_ml > 0 else False
    # from the percentage as written (3 decimals): binning scans.csv's percent_opacity gives the same category (24.9996 %
    # was written 25.0 beside CT-1)
    row["mosmed_category"] = (systems.mosmed_category(row["percent_opacity"] if involved else 0.0)) if lung_ml > 0 else ""
    for name in SIDES.values():
        row.update(per_lung[name])
    return row


def aeration_measures(hu_lung: np.ndarray, voxel_ml: float,
                      edges: Sequence[float] = AERATION_EDGES_HU) -> dict[str, float]:
    """The aeration compartments of the lung voxels ``hu_lung`` (HU, any shape), with lung tissue and gas.

    ``edges`` (``hu_classes.aeration_edges``): e1 < e2 < e3 < e4 HU. Hyperinflated lung is below e1 (air under
    -1000 HU included), normally aerated [e1, e2), poorly aerated [e2, e3), non-aerated [e3, e4], e4 included
    (Gattinoni et al. 2006: -1000 to -901, -900 to -501, -500 to -101, -100 to +100 on whole HU). Per compartment:
    ``<name>_volume_ml`` (voxel count x voxel volume) and ``<name>_tissue_g``, its tissue mass. A voxel of CT number
    h (held at -1000 from below: noise under -1000 is air, not negative tissue) is a mix of air (-1000 HU) and tissue
    of water density (0 HU, 1 g/mL), so it holds (1 + h/1000) x its volume of tissue in grams and -h/1000 x its
    volume of gas (none above 0 HU), as Gattinoni et al. (Am J Respir Crit Care Med 2001;164:1701) weigh the lung
    from CT. ``lung_tissue_g`` and ``lung_gas_ml`` are the sums over the four compartments: voxels above e4 (vessels
    filled with contrast, calcification) are in none. Volumes and masses rounded to 0.01."""
    e1, e2, e3, e4 = (float(v) for v in edges)
    bounds = list(zip((-math.inf, e1, e2, e3), (e1, e2, e3, e4)))
    n = np.zeros(len(bounds), np.int64)
    hu_sum = np.zeros(len(bounds))  # sum of HU held at -1000 from below, per compartment
    air_sum = 0.0  # sum of HU held to -1000..0, up to e4
    flat = np.ravel(hu_lung)
    # in chunks: copies of the lung's voxels per compartment raised the scan measures' memory peak from 0.72 to 1.10
    # times the CT's (tests/test_quantify_memory.py)
    for start in range(0, flat.size, AERATION_CHUNK):
        chunk = flat[start:start + AERATION_CHUNK]
        for i, (lo, hi) in enumerate(bounds):
            h = chunk[(chunk >= lo) & ((chunk <= hi) if hi == e4 else (chunk < hi))]
            n[i] += h.size
            hu_sum[i] += float(np.maximum(h, -1000.0).sum(dtype=np.float64))
        air_sum += float(np.clip(chunk[chunk <= e4], -1000.0, 0.0).sum(dtype=np.float64))
    out: dict[str, float] = {}
    tissue_total = 0.0
    for i, name in enumerate(AERATION_COMPARTMENTS):
        tissue = (float(n[i]) + float(hu_sum[i]) / 1000.0) * voxel_ml
        tissue_total += tissue
        out[f"{name}_volume_ml"] = round(float(n[i]) * voxel_ml, 2)
        out[f"{name}_tissue_g"] = round(tissue, 2)
    out["lung_tissue_g"] = round(tissue_total, 2)
    out["lung_gas_ml"] = round(-air_sum / 1000.0 * voxel_ml, 2) + 0.0  # never -0.0
    return out


def _coverage(lungs: np.ndarray, z_mm: np.ndarray, voxel_ml: float, landmarks: Mapping[str, Landmark],
              row: dict[str, Any], flags: list[str]) -> dict[int, tuple[bool, bool]]:
    """(top cut, bottom cut) per lung side; sets ``apex_covered``/``base_covered`` and PARTIAL_LUNG_COVERAGE.

    A lung present in the first/last slice is cut off there (z index grows cranially). The apex/base landmarks
    (found on the working grid by the same rule) are settled on this mask, in place, so that result.json and
    levels.png say what apex_covered/base_covered and the zones' missing status say."""
    ends = {side: lung_ends(lungs == side, z_mm, voxel_ml) for side in SIDES}
    cut = {side: e[2:] for side, e in ends.items()}
    for side, e in ends.items():
        settle_lung_ends(landmarks, SIDES[side], e, slice_step_mm(z_mm))
    row["apex_covered"] = not any(c[0] for c in cut.values())
    row["base_covered"] = not any(c[1] for c in cut.values())
    if not row["apex_covered"] or not row["base_covered"]:
        flags.append("PARTIAL_LUNG_COVERAGE")
    row["scan_above_lungs_mm"], row["scan_below_lungs_mm"] = _beyond_lungs(ends, np.asarray(z_mm, float), landmarks)
    return cut


def _beyond_lungs(ends: Mapping[int, tuple], z: np.ndarray, landmarks: Mapping[str, Landmark]) -> tuple[float, float]:
    """(mm of scan above the higher apex, mm below the lower base), slice centres: how far the scan reaches beyond
    the lungs, which moves the network's masks near them (README, "Measurement error"). From the settled apex / base
    levels (a base follows the aerated recess tips below the mask), the mask's own ends where a level is not given;
    0 at an end where a lung is cut off, or may be (a base with ``LANDMARK_UNCERTAIN``: aerated tissue under its mask
    runs on to the bottom slice); NaN without lung."""
    out = []
    for i, kind, far in ((0, "apex", float(z.max()) if z.size else math.nan),
                         (1, "base", float(z.min()) if z.size else math.nan)):
        levels = []
        for side, e in ends.items():
            lm = landmarks.get(f"{kind}_{SIDES[side]}")
            if e[2 + i] or (lm is not None and BASE_UNCERTAIN_NOTE in (lm.note or "")):
                levels.append(far)
            elif lm is not None and lm.z_mm is not None and lm.method == "detected":
                levels.append(float(lm.z_mm))
            elif e[i] is not None:
                levels.append(float(e[i]))
        if not levels or not math.isfinite(far):
            out.append(math.nan)
        elif kind == "apex":
            out.append(round(max(0.0, far - max(levels)), 1))
        else:
            out.append(round(max(0.0, min(levels) - far), 1))
    return out[0], out[1]


def _absent_sides(hu: np.ndarray, lungs: np.ndarray, voxel_ml: float, cfg: Mapping[str, Any], row: dict[str, Any],
                  flags: list[str]) -> set[str]:
    """Names of the lungs the segmentation did not find (flag LUNG_NOT_FOUND:<side>; their percentages and mean HU
    emptied in ``row``); a lung found but holding almost no air is flagged LUNG_NOT_AERATED:<side> and scored.

    A lung the segmentation did not find (left out of the field of view, a segmenter failure, a pneumonectomy) has
    zones the scan cannot score: missing, not 0 (SCORING.md). Not found = empty, or smaller than
    segmentation.min_lung_volume_ml and than ABSENT_SHARE of the other lung. The whole-scan percentages (PO, PHO,
    MosMed) and mean HU would be one lung's: they are empty too."""
    min_side_ml = float(cfg.get("segmentation", {}).get("min_lung_volume_ml", MIN_SIDE_ML))
    absent_sides: set[str] = set()
    for side, name in SIDES.items():
        other = row[f"lung_volume_ml_{SIDES[LEFT_LUNG if side == RIGHT_LUNG else RIGHT_LUNG]}"]
        vol = row[f"lung_volume_ml_{name}"]
        absent = vol <= 0 or vol < min(min_side_ml, ABSENT_SHARE * other)
        if not absent and vol > 0 and hu is not None:
            aerated_ml = float(np.count_nonzero((lungs == side) & (hu < AERATED_HU))) * voxel_ml
            if aerated_ml < AERATED_MIN_SHARE * vol:  # flag only: a white lung is lung, and scored
                flags.append(f"LUNG_NOT_AERATED:{name}")
        if absent:
            absent_sides.add(name)
            flags.append(f"LUNG_NOT_FOUND:{name}")
            row.update(percent_opacity=math.nan, percent_high_opacity=math.nan, mosmed_category="",
                       mean_lung_hu=math.nan, percent_well_aerated=math.nan, percent_low_attenuation=math.nan)
            # and its own percentages and mean HU: of a few stray voxels (all lesion: 100 %), not of a lung
            row.update({f"percent_opacity_{name}": math.nan, f"percent_high_opacity_{name}": math.nan,
                        f"mean_lung_hu_{name}": math.nan, f"percent_well_aerated_{name}": math.nan})
    return absent_sides


def _zone_scores(hu: np.ndarray, lungs: np.ndarray, classes: np.ndarray, z_mm: np.ndarray, z_sel: np.ndarray,
                 voxel_ml: float, landmarks: Mapping[str, Landmark], cfg: Mapping[str, Any],
                 cut: Mapping[int, tuple[bool, bool]], absent_sides: set[str], flags: list[str] | None = None,
                 ) -> tuple[list[dict[str, Any]], int | None, int | None]:
    """The six-zone and zhang900 unit rows of both lungs, and the two totals (None when a unit is missing).

    ``z_sel``: the z that selects a unit's voxels (``z_mm`` per slice, or per voxel for tilted slices); ``z_mm``
    decides which edge slices are cut off.

    A six-zone zone the scan sees but that holds no lung voxel (the lung ends above or below it: a lung cut off by a
    lobectomy or collapse, an IPV placed below the bases) has no involvement (0 of 0 mL is undefined, not healthy): it
    is missing like a unit the scan cannot see, keeps ``lung_ml`` 0 (which says why), empties the six-zone total, and
    is named in ``flags`` as ``ZONE_WITHOUT_LUNG:<lung>_<unit>``; so is a zhang900 unit without lung, but for the
    L1 slab lying wholly above the lung's apex (the suprasternal notch above it: normal anatomy), which scores 0, as a
    reader of that level scores it, flagged ``SLAB_ABOVE_APEX:<lung>_L1``. A six-zone zone holding less than
    :data:`ZONE_MIN_SHARE_PCT` of its lung is scored and flagged ``ZONE_SMALL:<lung>_<unit>``."""
    sc = cfg["scoring"]
    zcfg = sc["zhang900"]
    min_ml, min_pct = sc["min_involvement_ml"], sc["min_involvement_pct"]
    pho_min = cfg["hu_classes"]["high_opacity_min_hu"]

    def lz(name: str) -> float | None:
        lm = landmarks.get(name)
        # a level that is not a number (NaN, inf) is missing: as a z it selected no voxel, and zone-mode units scored 0
        return None if lm is None or lm.z_mm is None or not math.isfinite(lm.z_mm) else lm.z_mm

    zone_rows: list[dict[str, Any]] = []
    six_total, six_missing = 0, False
    zh_total, zh_missing = 0, False
    for side, name in SIDES.items():
        lung_side = lungs == side
        cut_top, cut_bottom = cut[side]
        absent = name in absent_sides
        side_ml = float(np.count_nonzero(lung_side)) * voxel_ml

        def measure(iv: ZInterval, lung_side=lung_side) -> tuple[dict, float, bool]:
            """Volumes of one unit, its percent involvement (NaN without lung) and whether it counts as involved."""
            m = unit_measures(iv.mask(z_sel), lung_side, classes, voxel_ml, hu, pho_min)
            pct, les = written_involvement(m["lesion_ml"], m["lung_ml"])
            return m, pct, m["lung_ml"] > 0 and systems.is_involved(les, pct, min_ml, min_pct)

        def lung_top(lung_side: np.ndarray) -> float:
            """The highest z of this lung's voxels (per slice, or per voxel for tilted slices)."""
            if z_sel.ndim == 1:
                ks = np.flatnonzero(lung_side.any(axis=(1, 2)))
                return float(z_sel[ks].max()) if ks.size else -math.inf
            return float(z_sel[lung_side].max()) if lung_side.any() else -math.inf

        def without_lung(r: dict[str, Any]) -> None:
            """A seen unit holding no lung voxel: missing (never a healthy 0), lung_ml 0, flagged."""
            r.update(MISSING_UNIT, lung_ml=0.0)
            if flags is not None:
                flags.append(f"ZONE_WITHOUT_LUNG:{r['lung']}_{r['unit']}")

        # six-zone
        for unit, iv in six_zone_intervals(lz("carina"), lz("ipv")).items():
            r = {"system": "six_zone", "lung": name, "unit": unit}
            if absent or iv is None or not _interval_seen(iv, z_mm, cut_top, cut_bottom, slab=False):
                r.update(MISSING_UNIT)
                six_missing = True
            elif (mp := measure(iv))[0]["lung_ml"] <= 0:
                without_lung(r)
                six_missing = True
            else:
                m, pct, inv = mp
                s = systems.six_zone_score(pct, inv)
                r.update(unit_columns(m, pct, voxel_ml), extent_score=s, density_grade=math.nan, unit_score=s,
                         status="ok", near_edge=";".join(systems.near_edges("six_zone", round(m["lesion_ml"], 2), pct, None,
                                                                           min_ml, min_pct)))
                six_total += s
                if flags is not None and 100.0 * m["lung_ml"] < ZONE_MIN_SHARE_PCT * side_ml:
                    flags.append(f"ZONE_SMALL:{name}_{unit}")
            zone_rows.append(r)
        # zhang900
        dome = lz(f"dome_{name}")
        levels = [lz("suprasternal_notch"), lz("aortic_arch"), lz("carina"), lz("bronchus_intermedius"), dome]
        # A slab at least one slice step thick: thinner than the slice step it may fall between two slice centres,
        # select no voxel and score 0 as if healthy (12 mm slices, +-5 mm slab); it holds the nearest slice. Half-open
        # (scoring.zones.zhang_intervals), a slab one slice step thick holds exactly one slice wherever the level lies.
        half_mm = max(float(zcfg["slab_half_thickness_mm"]), 0.5 * slice_step_mm(z_mm))
        ivs = zhang_intervals(levels, zcfg["mode"], half_mm)
        for unit in ZHANG_LEVELS:
            iv = ivs[unit]
            r = {"system": "zhang900", "lung": name, "unit": unit}
            slab = zcfg["mode"] == "slab"
            if absent or iv is None or not _interval_seen(iv, z_mm, cut_top, cut_bottom, slab=slab):
                r.update(MISSING_UNIT)
                zh_missing = True
            elif (mp := measure(iv))[0]["lung_ml"] <= 0:
                if slab and unit == "L1" and lung_top(lung_side) < iv.low:
                    # the suprasternal notch above this lung's apex, normal anatomy (itkelastix00's right apex lies
                    # 11 mm below it): nothing to involve at that level, which a reader scores 0
                    r.update(unit_columns(mp[0], 0.0, voxel_ml), extent_score=0, density_grade=0, unit_score=0,
                             status="ok", near_edge="")
                    if flags is not None:
                        flags.append(f"SLAB_ABOVE_APEX:{name}_{unit}")
                else:  # any other unit without lung (a lung ending above L4, a zone-mode unit): an error to review
                    without_lung(r)
                    zh_missing = True
            else:
                m, pct, inv = mp
                ext = systems.zhang_extent(pct, inv)
                den = systems.density_grade(m["class_ml"], zcfg["density_rule"], zcfg["density_share"]) if inv else 0
                s = systems.zhang_unit_score(ext, den)
                near = systems.near_edges("zhang900", round(m["lesion_ml"], 2), pct, m["class_ml"], min_ml, min_pct,
                                          zcfg["density_rule"], zcfg["density_share"])
                r.update(unit_columns(m, pct, voxel_ml), extent_score=ext, density_grade=den, unit_score=s,
                         status="ok", near_edge=";".join(near))
                zh_total += s
            zone_rows.append(r)
    return zone_rows, None if six_missing else six_total, None if zh_missing else zh_total


def _lobar_scores(hu: np.ndarray, lungs: np.ndarray, classes: np.ndarray, z_mm: np.ndarray, z_arr: np.ndarray,
                  voxel_ml: float, cfg: Mapping[str, Any], lobes: np.ndarray | None, absent_sides: set[str],
                  row: dict[str, Any], flags: list[str]) -> list[dict[str, Any]]:
    """The lobar unit rows (none without a lobe map); sets ``lobar20_total``, ``lobar25_total`` and ``lobar_note``.

    Only with a lobe map. A lobe the scan cannot see all of (its lung lies in a cut-off edge slice), that the map
    does not hold, or of a lung not found (LUNG_NOT_FOUND: its few stray voxels are no lobe's lung) is missing, and
    so are the totals, as for the zones. A map whose lobes lie on the wrong lungs (LOBES_SIDES_SWAPPED) or that
    leaves too much of the lung in no lobe (LOBES_PARTIAL) would score lobes on the wrong lung tissue: no lobar
    scores at all."""
    if lobes is None or not lobes.any():
        row["lobar20_total"] = row["lobar25_total"] = math.nan
        row["lobar_note"] = "no lobe map" if lobes is None else "the lobe map holds no lobe"
        return []
    sc = cfg["scoring"]
    min_ml, min_pct = sc["min_involvement_ml"], sc["min_involvement_pct"]
    pho_min = cfg["hu_classes"]["high_opacity_min_hu"]
    lesion_all = classes > 0
    zone_rows: list[dict[str, Any]] = []
    t4 = t5 = 0
    lobes_missing = False
    refused = check_lobe_map(lungs, lobes, skip_sides={s for s, n in SIDES.items() if n in absent_sides},
                             z_mm=z_arr)
    if refused:
        flags.append(refused)
    else:
        # lung the map leaves in no lobe (its border, dense lung a lobe model left out) takes the nearest lobe of its
        # side: lesion there counted in no lobe and lowered the lobar scores without a word. Only lungs found whose
        # lobes the map all holds: a lobe absent from the map gave its lung to its neighbour lobes (a whole left lung
        # to its upper lobe), scored "ok" beside LOBES_MISSING
        held = set(_value_counts(lobes)[0])
        fill_sides = {side for side, codes in SIDE_LOBES
                      if held.issuperset(codes) and SIDES[side] not in absent_sides}
        lobes, filled_lesion = complete_lobe_map(lungs, lobes, lesion_all, sides=fill_sides)
        if filled_lesion and filled_lesion * voxel_ml >= min_ml:
            flags.append(f"LOBE_MAP_FILLED:{filled_lesion * voxel_ml:.1f}")
    for code, lobe in LOBES.items():
        if refused:
            zone_rows.append({"system": "lobar", "lung": "right" if code <= 3 else "left", "unit": lobe,
                              **MISSING_UNIT})
            continue
        in_map = lobes == code
        # the lobe's lung is the lung mask inside it: the denominator of the zones, PO and the lesion classes
        # (a lobe map's own border, e.g. TotalSegmentator's, takes in hilum and pleura the lung mask leaves out)
        # (of its own side: a right lobe holds no left lung)
        side_lung = lungs == (RIGHT_LUNG if code <= 3 else LEFT_LUNG)
        m = in_map & side_lung
        lml = float(m.sum()) * voxel_ml
        r = {"system": "lobar", "lung": "right" if code <= 3 else "left", "unit": lobe}
        stray = 100.0 * m.sum() < LOBE_MIN_SHARE_PCT * np.count_nonzero(side_lung)  # a few voxels are no lobe
        # cut off: the lobe's lung (not the lobe map, whose border may reach past the lung mask) in an edge slice,
        # by the rule of the lungs' own apex_covered / base_covered
        if lml <= 0 or stray or r["lung"] in absent_sides or any(edge_cut(m, z_mm, voxel_ml)):
            r.update(MISSING_UNIT, lung_ml=round(lml, 2))
            lobes_missing = True
            zone_rows.append(r)
            continue
        les = float((m & lesion_all).sum()) * voxel_ml
        pct, les_written = written_involvement(les, lml)
        inv = systems.is_involved(les_written, pct, min_ml, min_pct)
        s4, s5 = systems.six_zone_score(pct, inv), systems.lobar_score_5(pct, inv)
        t4, t5 = t4 + s4, t5 + s5
        # the lobe's class volumes, PHO and mean HU from its own mask (a voxel selection)
        r.update(unit_columns(unit_measures(m, m, classes, voxel_ml, hu, pho_min), pct, voxel_ml),
                 lesion_ml=round(les, 2), extent_score=s4, density_grade=math.nan, unit_score=s5, status="ok",
                 near_edge=";".join(systems.near_edges("lobar", les_written, pct, None, min_ml, min_pct)))
        zone_rows.append(r)
    if lobes_missing:
        flags.append("LOBES_MISSING")
    row["lobar20_total"], row["lobar25_total"] = (math.nan, math.nan) if lobes_missing or refused else (t4, t5)
    row["lobar_note"] = (f"lobe map not used ({refused})" if refused else
                         "a lobe is missing: cut off, absent from the map or in a lung not found (LOBES_MISSING)"
                         if lobes_missing else "")
    return zone_rows


class _UnitTally:
    """Running sums of one measured, unscored unit of zones.csv (anteroposterior, peripheral_central): its lung voxels,
    their lesion classes, HU sum and lesion voxels above the high-opacity HU, added slice by slice or at once."""

    def __init__(self, pho_min: float) -> None:
        self.pho_min = pho_min
        self.n = 0
        self.class_n = np.zeros(4, np.int64)
        self.hu_sum = 0.0
        self.high_n = 0

    def add(self, cls: np.ndarray, hu: np.ndarray) -> None:
        """Add lung voxels: their classes and HU (1-D arrays of the same voxels)."""
        self.n += int(cls.size)
        self.class_n += class_counts(cls)
        self.hu_sum += float(hu.sum(dtype=np.float64))
        self.high_n += int(np.count_nonzero((cls > 0) & (hu > self.pho_min)))

    def row(self, system: str, lung: str, unit: str, voxel_ml: float) -> dict[str, Any]:
        """The unit's zones.csv row: every measure column, no score; missing with lung_ml 0 when it holds no voxel
        (a unit of a lung found that holds none of its lung, as a zone without lung)."""
        if not self.n:
            return {"system": system, "lung": lung, "unit": unit, **MISSING_UNIT, "lung_ml": 0.0}
        n = self.class_n
        meas = {"lung_ml": float(self.n) * voxel_ml, "lesion_ml": float(n[1:].sum()) * voxel_ml,
                "class_n": {k: int(n[k]) for k in (1, 2, 3)}, "mean_hu": self.hu_sum / self.n,
                "high_ml": float(self.high_n) * voxel_ml}
        return {"system": system, "lung": lung, "unit": unit,
                **unit_columns(meas, percent(meas["lesion_ml"], meas["lung_ml"]), voxel_ml),
                "extent_score": math.nan, "density_grade": math.nan, "unit_score": math.nan,
                "status": "ok", "near_edge": ""}


def _missing_rows(system: str, lung: str, units: Sequence[str]) -> list[dict[str, Any]]:
    """The missing rows of a measured system's units in a lung not found."""
    return [{"system": system, "lung": lung, "unit": unit, **MISSING_UNIT} for unit in units]


#: zones.csv rows of the front and back halves of each lung (system ``anteroposterior``, :func:`_anteroposterior_rows`).
ANTEROPOSTERIOR_UNITS = ("anterior", "posterior")


def _anteroposterior_rows(hu: np.ndarray, lungs: np.ndarray, classes: np.ndarray, voxel_ml: float, pho_min: float,
                          absent_sides: set[str]) -> list[dict[str, Any]]:
    """zones.csv rows of system ``anteroposterior``: each lung's front (``anterior``) and back (``posterior``) half,
    with every measure column of a unit and no score.

    In each slice, the lung's own extent from its most anterior to its most posterior row is halved: a row whose
    centre lies at or behind the midpoint is posterior (the image is LPS: "posterior" is the patient's back, which
    is the dependent lung only in a supine scan; scans.csv ``patient_position`` says which). The halves follow each
    lung's own extent in each slice, whatever the chest's shape or the patient's place in the field of view: no
    coronal plane through the whole lung, nor a gravitational level (a basal slice holding only the posterior recess
    is halved too). They do not hold half the lung each: the lung is wider behind, and the posterior half held
    50.2-64.0 % of a lung on the six real chests of ../shared/data. A row on the midpoint (a lung an odd number of
    rows deep in that slice) is posterior. Together they are the lung. A lung not found has both rows missing. COVID-19
    opacities lie posteriorly and dependent atelectasis does too: these rows measure where the lesion lies, not why."""
    rows: list[dict[str, Any]] = []
    for side, name in SIDES.items():
        m = lungs == side
        zy = m.any(axis=2)  # [slice, row]: the lung's rows in each slice
        if name in absent_sides or not zy.any():
            rows += _missing_rows("anteroposterior", name, ANTEROPOSTERIOR_UNITS)
            continue
        # the lung's bounding box (views), its voxels read once as 1-D arrays: no further full-volume masks
        zs, ys, xs = (np.flatnonzero(a) for a in (zy.any(axis=1), zy.any(axis=0), m.any(axis=(0, 1))))
        box = (slice(zs[0], zs[-1] + 1), slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
        m = m[box]
        in_row = zy[box[0], box[1]]
        ny = in_row.shape[1]
        first = np.argmax(in_row, axis=1)
        last = ny - 1 - np.argmax(in_row[:, ::-1], axis=1)
        back = np.arange(ny)[None, :] >= ((first + last) / 2.0)[:, None]  # [slice, row]: at or behind the midpoint
        cls_v, hu_v = classes[box][m], hu[box][m]
        post_v = np.broadcast_to(back[:, :, None], m.shape)[m]
        del m
        for unit, half in (("anterior", ~post_v), ("posterior", post_v)):
            tally = _UnitTally(pho_min)  # a half without lung (a lung one row deep in every slice) is missing
            tally.add(cls_v[half], hu_v[half])
            rows.append(tally.row("anteroposterior", name, unit, voxel_ml))
    return rows


#: zones.csv rows of the peripheral (outer third) and central lung of each lung (system ``peripheral_central``,
#: :func:`_peripheral_central_rows`; the geometry in :mod:`scoring.periphery`).
PERIPHERAL_CENTRAL_UNITS = ("peripheral", "central")


def _peripheral_central_rows(hu: np.ndarray, lungs: np.ndarray, classes: np.ndarray, voxel_ml: float, pho_min: float,
                             absent_sides: set[str], pixel_mm: tuple[float, float], z_mm: np.ndarray,
                             landmarks: Mapping[str, Landmark]) -> list[dict[str, Any]]:
    """zones.csv rows of system ``peripheral_central``: each lung's ``peripheral`` lung, in each slice within a third of
    the lung's greatest in-plane depth there (at least 10 mm) of the costal pleura (in plane, from the chest cavity's
    edge) or of the diaphragm (up its column from the lung's floor over the dome), and the rest, ``central``
    (:mod:`scoring.periphery`), with every measure column of a unit and no score. Together they are the lung. A lung
    not found has both rows missing and is no lung of the chest cavity; a unit without lung (a lung lying wholly within
    10 mm of the pleura has no central lung) is missing with lung_ml 0. ``pixel_mm``: the (row, column) spacing;
    ``z_mm``: each slice's z; ``landmarks``: the domes."""
    from scoring.periphery import cut_off_mm, slice_depths

    present = {side: name for side, name in SIDES.items() if name not in absent_sides}
    acc = {(side, unit): _UnitTally(pho_min) for side in present for unit in PERIPHERAL_CENTRAL_UNITS}
    # the slices and the in-plane box of the lungs from reductions (no full-volume mask)
    zs = np.flatnonzero(lungs.max(axis=(1, 2)) > 0) if present else np.zeros(0, np.int64)
    if zs.size:
        plane = lungs[zs[0]:zs[-1] + 1].max(axis=0) > 0
        ys, xs = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
        box = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
        domes = {side: getattr(landmarks.get(f"dome_{name}"), "z_mm", None) for side, name in present.items()}
        for k, per_side in slice_depths(lungs, domes, z_mm, pixel_mm, box):
            lab = lungs[k][box]
            cls_k, hu_k = classes[k][box], hu[k][box]
            for side, (d, greatest) in per_side.items():
                m = lab == side
                outer = d <= cut_off_mm(greatest)
                c, h = cls_k[m], hu_k[m]
                for unit, sel in (("peripheral", outer), ("central", ~outer)):
                    acc[(side, unit)].add(c[sel], h[sel])
    rows: list[dict[str, Any]] = []
    for side, name in SIDES.items():
        if side not in present or not any(acc[(side, u)].n for u in PERIPHERAL_CENTRAL_UNITS):
            rows += _missing_rows("peripheral_central", name, PERIPHERAL_CENTRAL_UNITS)
        else:
            rows += [acc[(side, unit)].row("peripheral_central", name, unit, voxel_ml)
                     for unit in PERIPHERAL_CENTRAL_UNITS]
    return rows


#: A lesion piece of at least this many mL with no aerated or ground-glass part (:func:`solid_lesion_ml`) is flagged.
SOLID_PIECE_MIN_ML = 5.0
#: ... "no aerated part": fewer than this share of its voxels below -300 HU, and a median of at least 0 HU (water or
#: denser: blood, heart, liver). On real CT (an outputs audit, ricord_covid_419639) the aortic arch (27.4 mL, median
#: 43 HU, 0.2 % below -300) and the liver dome (22.1 mL, 35 HU, 0.8 %) taken as lung and consolidation met it; the
#: real lesions of ricord and cap001 (14-73 % below -300 HU) and the sample's did not.
SOLID_PIECE_MAX_AERATED = 0.02


def solid_lesion_ml(hu: np.ndarray, classes: np.ndarray, voxel_ml: float) -> float:
    """mL of the lesion pieces (connected, 26-neighbourhood) of at least :data:`SOLID_PIECE_MIN_ML` that are solid
    soft tissue throughout: median HU >= 0 and under :data:`SOLID_PIECE_MAX_AERATED` of their voxels below -300 HU.
    Pneumonia keeps some air (a ground-glass rim, air bronchograms); a piece without any is often the heart, a vessel
    or the liver dome taken as lung (QC flag SOLID_LESION), or a dense consolidation: a reader decides."""
    from scipy import ndimage as ndi

    lesion = classes > 0
    if voxel_ml <= 0 or lesion.sum() * voxel_ml < SOLID_PIECE_MIN_ML:
        return 0.0
    box = ndi.find_objects(lesion.astype(np.uint8))[0]  # labelled within the lesions' box, each piece within its own
    labels, n = ndi.label(lesion[box], structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    pieces = ndi.find_objects(labels)
    hu_box = hu[box]
    total = 0.0
    for i in np.flatnonzero(sizes * voxel_ml >= SOLID_PIECE_MIN_ML):
        if i == 0:
            continue
        sl = pieces[i - 1]
        values = hu_box[sl][labels[sl] == i]
        if np.median(values) >= 0 and (values < -300).mean() < SOLID_PIECE_MAX_AERATED:
            total += sizes[i] * voxel_ml
    return total


def check_lobe_map(lungs: np.ndarray, lobes: np.ndarray, skip_sides: set[int] | frozenset = frozenset(),
                   z_mm: np.ndarray | None = None) -> str | None:
    """The QC flag refusing a lobe map (our lobe codes, on the lung mask's grid), or None when it fits the lungs.

    ``LOBES_SIDES_SWAPPED``: more lung voxels lie in a lobe of the other side (right lobes on the left lung mask and
    left lobes on the right one) than in a lobe of their own side: a mirrored map, or a lung mask with swapped sides.
    ``LOBES_PARTIAL:<percent>``: more than :data:`LOBES_MAX_UNCOVERED_PCT` of a lung is in no lobe of its side
    (each lung whose lobes the map all holds and not in ``skip_sides``, lungs not found; over both lungs pooled before
    0.12.0), or of one lung in lobes of the other side (a piece of the left lung labelled a right lobe was scored in that lobe).
    ``LOBES_UPPER_BELOW_LOWER``: with ``z_mm`` (one z per slice, cranial larger), an upper lobe whose lung lies lower
    on average than its side's lower lobe (upper and lower labels swapped)."""
    right_lobes = (lobes >= 1) & (lobes <= 3)
    left_lobes = (lobes >= 4) & (lobes <= 5)
    right_lung, left_lung = lungs == RIGHT_LUNG, lungs == LEFT_LUNG
    own = np.count_nonzero(right_lobes & right_lung) + np.count_nonzero(left_lobes & left_lung)
    crossed = np.count_nonzero(right_lobes & left_lung) + np.count_nonzero(left_lobes & right_lung)
    if crossed > own:
        return "LOBES_SIDES_SWAPPED"
    values = set(_value_counts(lobes)[0])
    pct = 0.0
    for side, codes, side_lobes, lung_side in ((RIGHT_LUNG, (1, 2, 3), right_lobes, right_lung),
                                               (LEFT_LUNG, (4, 5), left_lobes, left_lung)):
        if side in skip_sides or not values.issuperset(codes):
            continue
        # per lung: pooled over both, one lung could be 10 % uncovered beside a whole one, and that lung is then
        # filled from its neighbours (complete_lobe_map)
        n_lung = np.count_nonzero(lung_side)
        if n_lung:
            pct = max(pct, 100.0 * np.count_nonzero(lung_side & ~side_lobes) / n_lung)
    for side, lung_side, other_lobes in ((RIGHT_LUNG, right_lung, left_lobes), (LEFT_LUNG, left_lung, right_lobes)):
        n_side = np.count_nonzero(lung_side)
        if side not in skip_sides and n_side:
            pct = max(pct, 100.0 * np.count_nonzero(lung_side & other_lobes) / n_side)
    if pct > LOBES_MAX_UNCOVERED_PCT:
        return f"LOBES_PARTIAL:{pct:.1f}"
    if z_mm is not None and len(z_mm) == lungs.shape[0]:
        z = np.asarray(z_mm, float)
        for side, upper, lower in ((RIGHT_LUNG, 1, 3), (LEFT_LUNG, 4, 5)):
            lung_side = lungs == side
            heights = []
            for code in (upper, lower):
                per_slice = np.count_nonzero((lobes == code) & lung_side, axis=(1, 2))
                heights.append(float((per_slice * z).sum() / per_slice.sum()) if per_slice.sum() else None)
            if side not in skip_sides and None not in heights and heights[0] < heights[1]:
                return "LOBES_UPPER_BELOW_LOWER"
    return None


def complete_lobe_map(lungs: np.ndarray, lobes: np.ndarray, lesion: np.ndarray | None = None,
                      sides: set[int] | frozenset = frozenset((RIGHT_LUNG, LEFT_LUNG))) -> tuple[np.ndarray, int]:
    """The lobe map (our codes) with every lung voxel that lies in no lobe (0, or a label no lobe's) given the
    nearest lobe of its own side in its own axial slice; (the completed map, how many ``lesion`` voxels were given a
    lobe so). A voxel labelled a lobe of the other side is left as it is (:func:`check_lobe_map` counts those), and
    so is lung in a slice where the map holds no lobe of its side (an apex or base beyond the map: the lobe is then
    cut off or missing, as before). Only the lungs in ``sides`` are filled (:func:`_lobar_scores` passes those whose
    lobes the map all holds, of a lung found).

    A lobe map's border is its own model's (TotalSegmentator's, lungmask's): lung the scored lung mask holds beyond
    it, subpleural lung where COVID-19 lesions lie, and dense consolidation a lobe model leaves out (lungmask's plain
    LTRCLobes) were in no lobe, and their lesion counted in no lobe's involvement. Nearest in the slice (a 2-D
    distance transform per slice, in-plane pixels square) rather than in 3-D keeps the cost to a slice's bounding
    box; lobes meet at oblique fissures, so a filled voxel near one may take the neighbour lobe, as a reader would be
    unsure there too."""
    from scipy import ndimage as ndi

    out = lobes.copy()
    filled_lesion = 0
    for side, codes in SIDE_LOBES:
        if side not in sides:
            continue
        source = np.isin(lobes, codes)
        target = (lungs == side) & ~source & ~np.isin(lobes, [c for c in LOBES if c not in codes])
        for k in np.nonzero(target.any(axis=(1, 2)) & source.any(axis=(1, 2)))[0]:
            t, src = target[k], source[k]
            rows, cols = np.nonzero(t | src)
            box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
            idx = ndi.distance_transform_edt(~src[box], return_distances=False, return_indices=True)
            tb = t[box]
            out_k = out[k][box]
            out_k[tb] = lobes[k][box][idx[0][tb], idx[1][tb]]
            if lesion is not None:
                filled_lesion += int(np.count_nonzero(tb & lesion[k][box]))
    return out, filled_lesion


#: TotalSegmentator lobe labels (``total`` task) -> our lobe codes (:data:`segmentation.base.LOBES`).
TOTALSEGMENTATOR_LOBES: dict[int, int] = {12: 1, 13: 2, 14: 3, 10: 4, 11: 5}
#: lungmask (github.com/JoHof/lungmask) ``--modelname LTRCLobes_R231`` / ``LTRCLobes`` labels -> our lobe codes:
#: 1 LUL, 2 LLL, 3 RUL, 4 RML, 5 RLL (the DICOM-SEG segment list of MHub's lungmask model, models/lungmask/config/
#: dseg.json; lungmask issue #25). Its default R231 model writes lungs, not lobes (1 right, 2 left): refused when read.
LUNGMASK_LOBES: dict[int, int] = {3: 1, 4: 2, 5: 3, 1: 4, 2: 5}
#: ``scoring.lobar.lobe_labels`` -> the label map it names.
LOBE_LABEL_CONVENTIONS: dict[str, dict[int, int]] = {
    "totalsegmentator": TOTALSEGMENTATOR_LOBES, "ctscore": {i: i for i in range(1, 6)}, "lungmask": LUNGMASK_LOBES}


def _value_counts(a: np.ndarray) -> tuple[list, list]:
    """The values of an array and how often each occurs (a bincount for small non-negative integers)."""
    if a.size and a.dtype.kind in "ui" and int(a.min()) >= 0 and int(a.max()) < 1 << 16:
        c = np.bincount(a.ravel())
        v = np.nonzero(c)[0]
        return v.tolist(), c[v].tolist()
    v, c = np.unique(a, return_counts=True)
    return v.tolist(), c.tolist()


def foreign_lobe_labels(labels: np.ndarray, label_map: Mapping[int, int], lungs: np.ndarray | None = None,
                        anywhere: bool = False) -> dict[int | float, float]:
    """Label values of a lobe map (its own labels, on the lungs' grid) that ``label_map`` does not know, with the
    percentage of the lung mask each covers: those covering at least :data:`FOREIGN_LABEL_MIN_PCT` of it, and with
    ``anywhere`` (a lobe-only convention) every such value present (0 is background)."""
    def key(v):
        return int(v) if float(v).is_integer() else v

    lung = None if lungs is None else lungs > 0
    n_lung = 0 if lung is None else int(np.count_nonzero(lung))
    pct: dict[int | float, float] = {}
    if n_lung:
        for v, c in zip(*_value_counts(labels[lung]), strict=True):
            if v != 0 and key(v) not in label_map:
                pct[key(v)] = 100.0 * c / n_lung
    out = {v: round(p, 1) for v, p in pct.items() if p >= FOREIGN_LABEL_MIN_PCT}
    if anywhere:
        for v in _value_counts(labels)[0]:
            if v != 0 and key(v) not in label_map:
                out.setdefault(key(v), round(pct.get(key(v), 0.0), 1))
    return dict(sorted(out.items()))


def map_lobe_labels(labels: np.ndarray, label_map: Mapping[int, int] = TOTALSEGMENTATOR_LOBES) -> np.ndarray:
    """Our lobe codes (1 RUL, 2 RML, 3 RLL, 4 LUL, 5 LLL; 0 elsewhere) from a label array."""
    out = np.zeros(labels.shape, np.uint8)
    for src, dst in label_map.items():
        out[labels == src] = dst
    return out


def load_lobe_map(path: str, reference: Any = None,
                  label_map: Mapping[int, int] = TOTALSEGMENTATOR_LOBES) -> np.ndarray:
    """A user-supplied lobe label file (NIfTI or any SimpleITK format) as an LPS ``[z, y, x]`` array.

    The labels are mapped with ``label_map`` (default: TotalSegmentator 10-14). When ``reference``
    (a SimpleITK image, e.g. the LPS-oriented CT) is given, the map is resampled onto its grid by
    nearest neighbour, so it can be passed to :func:`score_scan` as ``lobes``."""
    return map_lobe_labels(read_label_map(path, reference), label_map)


#: The most voxels a label map may declare: 8 times its CT's (a map at twice the CT's resolution in each axis), and
#: never more than this (a map of a whole-body CT at 0.5 mm is some 400 million).
LABEL_MAP_MAX_VOXELS = 1_000_000_000


def check_label_map_header(path: str | Path, reference: Any = None, what: str = "lobe map") -> None:
    """Read a label file's header only and refuse, with ValueError naming the file, a size no lobe map of this CT
    has (more than 8 times ``reference``'s voxels, or :data:`LABEL_MAP_MAX_VOXELS`: read whole, a header of 4096 x
    4096 x 4096 would take gigabytes before any check), and a MetaImage header (``.mhd``) whose data file lies
    outside the header's own folder (``ElementDataFile = /dev/zero`` or another user's file)."""
    import SimpleITK as sitk

    path = Path(path)
    if path.suffix.lower() == ".mhd":
        try:
            head = path.read_text(encoding="latin-1", errors="replace")[:65536]
        except OSError:
            head = ""  # SimpleITK says why it cannot be read
        m = re.search(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", head, re.MULTILINE)
        data = m.group(1) if m else ""
        if data and data.split()[0].lower() not in ("local", "list") and "%" not in data:
            target = (path.parent / data).resolve()
            if target.parent != path.parent.resolve():
                raise ValueError(f"{what} {path}: its ElementDataFile {data!r} lies outside the header's folder; "
                                 "keep a MetaImage's data file beside its .mhd (or give a .mha/.nii.gz)")
    from pipeline.imageio import check_sitk_path

    check_sitk_path(path, what)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return  # not readable as an image: sitk.ReadImage says so, as before
    voxels = math.prod(reader.GetSize())
    limit = LABEL_MAP_MAX_VOXELS
    if reference is not None:
        limit = min(limit, 8 * math.prod(reference.GetSize()))
    if voxels > limit:
        raise ValueError(f"{what} {path} declares {' x '.join(map(str, reader.GetSize()))} voxels ({voxels:,}), "
                         f"more than a {what} of this CT can hold ({limit:,}: 8 times the CT's voxels): not read")


def read_label_map(path: str, reference: Any = None) -> np.ndarray:
    """A label file's own labels as an LPS ``[z, y, x]`` array (on ``reference``'s grid by nearest neighbour when
    given). A map holding values that are not whole numbers (12.4: a label map resampled with interpolation, or
    a probability map) is refused with ValueError naming the file: rounding would assign voxels to arbitrary
    lobes."""
    import SimpleITK as sitk

    check_label_map_header(path, reference)
    img = sitk.ReadImage(str(path))
    if img.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        arr = sitk.GetArrayViewFromImage(img)
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            shown = ", ".join(f"{v:g}" for v in np.unique(arr[bad])[:5])
            raise ValueError(f"lobe map {path} holds non-integer label values ({shown}; "
                             f"{100.0 * np.count_nonzero(bad) / bad.size:.2g} % of its voxels): a lobe map must be a "
                             "label image of whole numbers (resample it by nearest neighbour, not linearly)")
    img = sitk.DICOMOrient(img, "LPS")
    if reference is not None:
        img = sitk.Resample(img, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, img.GetPixelID())
    return sitk.GetArrayFromImage(img)
