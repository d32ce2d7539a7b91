"""The data dictionary (codebook) of the run tables: ``OUT/data_dictionary.csv``.

One row per column of ``scans.csv``, ``zones.csv``, ``failures.csv`` and ``landmarks.csv`` (and their Parquet
twins), in the tables' column order (:data:`pipeline.outputs.SCAN_COLUMNS`, :data:`~pipeline.outputs.ZONE_COLUMNS`,
:data:`~pipeline.outputs.FAILURE_COLUMNS`, :data:`~pipeline.outputs.LANDMARK_COLUMNS`), for whoever imports the tables into R, SPSS, Stata or REDCap:

- ``table``: scans, zones, failures or landmarks;
- ``column``: the column's name;
- ``type``: text | integer | number | boolean, as the Parquet twin stores it (:func:`pipeline.outputs.table_dtypes`:
  string, nullable Int64, float64, nullable boolean);
- ``unit``: mL, %, HU, mm, score points, or empty;
- ``allowed``: the range or the values the column holds;
- ``missing``: what an empty cell means in that column;
- ``description``: what the column is.

Keys (:data:`TABLE_KEYS`): ``scans.csv`` has one row per ``scan_id`` (one per series, scored or failed);
``zones.csv`` one row per (``scan_id``, ``system``, ``lung``, ``unit``), for the scored series only;
``failures.csv`` one row per ``scan_id`` of a failed series (``status`` failed in scans.csv); ``landmarks.csv`` one
row per (``scan_id``, ``landmark``), for the scored series only.

Text columns (ids, dates, times, UIDs) are to be imported as text: read as numbers, ``study_date`` becomes
20200315 and a PatientID loses its leading zeros. In the CSVs an empty cell is a missing value; a text column
(``qc_flags``, ``lobar_note``) may also be empty as a value (no flag, no note).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pipeline.outputs import (
    FAILURE_COLUMNS,
    LANDMARK_COLUMNS,
    SCAN_COLUMNS,
    ZONE_COLUMNS,
    atomic_write_bytes,
    table_dtypes,
)
from scoring.zones import SIX_ZONE_UNITS, ZHANG_LEVELS
from segmentation.base import LOBES

log = logging.getLogger(__name__)

#: the columns of data_dictionary.csv
DICTIONARY_COLUMNS = ["table", "column", "type", "unit", "allowed", "missing", "description"]
#: the columns that identify a row of each table
TABLE_KEYS = {"scans": ("scan_id",), "zones": ("scan_id", "system", "lung", "unit"), "failures": ("scan_id",),
              "landmarks": ("scan_id", "landmark")}
#: pandas dtype of a table column (:func:`pipeline.outputs.table_dtypes`) -> the dictionary's ``type``
TYPE_OF_DTYPE = {"string": "text", "Int64": "integer", "float64": "number", "boolean": "boolean"}
FILE_NAME = "data_dictionary.csv"

# What an empty cell means, for the columns that share a reason.
_FAILED = "series failed (status failed: see failures.csv)"
_LUNG_NOT_FOUND = ("series failed; or a lung not found (QC flag LUNG_NOT_FOUND:<side>): these whole-scan "
                   "percentages would be one lung's")
_UNIT_MISSING = "unit missing (status missing)"
_PCT = "0-100"
_ML = ">= 0"
_SIX, _ZHANG, _LOBAR = " | ".join(SIX_ZONE_UNITS), " | ".join(ZHANG_LEVELS), " | ".join(LOBES.values())

_CLASSES = ("Lesion voxels are classed by HU (configs/default.yaml hu_classes): faint ground glass below -550 HU, "
            "ground glass -550 to -300 HU, consolidation from -300 HU; voxels from hu_classes.lesion_max_hu (150 HU: "
            "enhanced vessels, calcification) are no lesion (defaults).")


def _side(side: str) -> str:
    return f"series failed; or the {side} lung not found (QC flag LUNG_NOT_FOUND:{side})"


def _volume(what: str, where: str) -> str:
    return f"Volume of {what} inside {where} (voxel count x voxel volume on the original CT grid, rounded to 0.01 mL)."


#: The aeration compartments' stems, in words, and their bands at the default hu_classes.aeration_edges.
_AERATION = (("hyperinflated", "hyperinflated", "below -900 HU"),
             ("normally_aerated", "normally aerated", "from -900 to under -500 HU"),
             ("poorly_aerated", "poorly aerated", "from -500 to under -100 HU"),
             ("non_aerated", "non-aerated", "from -100 to +100 HU"))


# column: (type, unit, allowed, missing, description), in the tables' column order
_SCANS: dict[str, tuple[str, str, str, str, str]] = {
    "scan_id": (
        "text", "", "'scan-' followed by 12 hex digits", "never empty",
        "Pseudonymous id of the series: a salted hash (outputs.pseudonym_salt) of its SeriesInstanceUID (of its stack "
        "id when several stacks of one series are scored); the name of its folder OUT/<scan_id>/. Key of scans.csv "
        "(one row per scan_id); links to zones.csv and failures.csv."),
    "patient_id": (
        "text", "", "'pt-' followed by 10 hex digits; with outputs.pseudonymize false the header's PatientID",
        "the series' header has no PatientID",
        "A salted pseudonym (pt-...) of the DICOM PatientID, unless outputs.pseudonymize is false: then the header's "
        "PatientID as text (import it as text to keep leading zeros). Rows made with different salts "
        "(pseudonym_salt_id) give one patient different ids."),
    "study_date": (
        "text", "", "YYYYMMDD (DICOM date)", "the series' header has no StudyDate, or one that is not a date "
        "(QC flag STUDY_DATE_UNREADABLE)",
        "The DICOM StudyDate, YYYYMMDD text (the old form YYYY.MM.DD is written YYYYMMDD, QC flag "
        "STUDY_DATE_NORMALISED; not pseudonymised). Import as text, or parse as a date with format %Y%m%d."),
    "series_time": (
        "text", "", "HH:MM:SS",
        "series failed; or no valid SeriesTime, AcquisitionTime, ContentTime or StudyTime in the header",
        "Time of day of the series: the header's SeriesTime, else AcquisitionTime, ContentTime or StudyTime, as "
        "HH:MM:SS; it orders two scans of one patient on one day."),
    "series_uid": (
        "text", "", "DICOM UID (digits and dots)", "the series' header has no SeriesInstanceUID",
        "The DICOM SeriesInstanceUID of the series (not pseudonymised: it leads back to the images)."),
    "status": (
        "text", "", "ok | failed", "never empty",
        "ok: the series was scored; failed: it could not be scored (failures.csv gives the code and message), and "
        "only scan_id, patient_id, study_date, series_uid and status are filled."),
    "segmenter": (
        "text", "", "classical | monai | a model bundle's own name (default bundle)", _FAILED,
        "Name of the segmenter that made the lung and lesion masks."),
    "lung_volume_ml_right": (
        "number", "mL", _ML, _FAILED,
        _volume("the right lung mask (consolidated lung included)", "the scan")),
    "lung_volume_ml_left": (
        "number", "mL", _ML, _FAILED,
        _volume("the left lung mask (consolidated lung included)", "the scan")),
    "lesion_volume_ml": (
        "number", "mL", _ML, _FAILED,
        _volume("the lesion (opacity) mask, all classes", "both lungs")),
    "ggo_volume_ml": (
        "number", "mL", _ML, _FAILED,
        _volume("ground-glass lesion (faint ground glass + ground glass)", "both lungs") + " " + _CLASSES),
    "consolidation_volume_ml": (
        "number", "mL", _ML, _FAILED,
        _volume("consolidation (lesion voxels from -300 HU, hu_classes.consolidation)", "both lungs")),
    "faint_ggo_volume_ml": (
        "number", "mL", _ML, _FAILED,
        _volume("faint ground glass (zhang2020 'frosted glass': lesion voxels below -550 HU, hu_classes.ggo)",
                "both lungs") + " Part of ggo_volume_ml."),
    "percent_opacity": (
        "number", "%", _PCT, _LUNG_NOT_FOUND,
        "Percentage of opacity (PO): lesion volume / lung volume x 100, both lungs. Given also where the scan cuts a "
        "lung off (QC flag PARTIAL_LUNG_COVERAGE, base_covered or apex_covered false): it then speaks of the lung "
        "the scan shows, while the zone scores there are missing."),
    "percent_high_opacity": (
        "number", "%", _PCT, _LUNG_NOT_FOUND,
        "Percentage of high opacity (PHO): volume of lesion voxels above hu_classes.high_opacity_min_hu (default "
        "-200 HU) / lung volume x 100, both lungs."),
    "six_zone_total": (
        "integer", "score points", "0-24",
        "series failed; or a zone missing (QC flag ZONES_MISSING: zone not covered by the scan, "
        "PARTIAL_LUNG_COVERAGE; a level it needs not found; its lung not found, LUNG_NOT_FOUND; or a zone holding no "
        "lung, ZONE_WITHOUT_LUNG)",
        "Six-zone score (liao2021, li2020): the sum of the six zone scores 0-4 (zones.csv system six_zone). A base "
        "that may lie below the scan (LANDMARK_UNCERTAIN:base_<side>, scan_below_lungs_mm 0) leaves the lower zones "
        "scored, for a reviewer to decide (docs/scoring.md): filter on the flag to keep only scans seen whole."),
    "zhang900_total": (
        "integer", "score points", "0-900",
        "series failed; or a unit missing (QC flag ZONES_MISSING: unit not covered by the scan: a slab beyond the "
        "first or last slice, or with zhang900.mode zone a lung cut off (PARTIAL_LUNG_COVERAGE; in the default slab "
        "mode a cut lung leaves the slabs inside the scan scored); a level it needs not found; its lung "
        "not found, LUNG_NOT_FOUND; or a unit holding no lung, ZONE_WITHOUT_LUNG)",
        "zhang2020 extent x density^2 score: the sum of the ten unit scores 0-90 (zones.csv system zhang900)."),
    "mosmed_category": (
        "text", "", "CT-0 | CT-1 | CT-2 | CT-3 | CT-4", _LUNG_NOT_FOUND,
        "MosMedData category from percent_opacity: CT-0 no lesion of at least scoring.min_involvement_ml (default "
        "1 mL), CT-1 under 25 %, CT-2 25 to under 50 %, CT-3 50 to under 75 %, CT-4 75 % or more. Like "
        "percent_opacity, given also where the scan cuts a lung off (PARTIAL_LUNG_COVERAGE)."),
    "lobar20_total": (
        "integer", "score points", "0-20", "no lobar score: see lobar_note (or series failed)",
        "Lobar score 0-20: the sum of the five lobes' scores 0-4 (six-zone bands; zones.csv system lobar, "
        "extent_score). Only with a lobe map."),
    "lobar25_total": (
        "integer", "score points", "0-25", "no lobar score: see lobar_note (or series failed)",
        "Lobar score 0-25: the sum of the five lobes' scores 0-5 (zones.csv system lobar, unit_score). Only with a "
        "lobe map."),
    "lesion_volume_ml_right": (
        "number", "mL", _ML, _FAILED, _volume("the lesion mask, all classes", "the right lung")),
    "lesion_volume_ml_left": (
        "number", "mL", _ML, _FAILED, _volume("the lesion mask, all classes", "the left lung")),
    "mean_lung_hu": (
        "number", "HU", "any number (inspiratory normal lung about -900 to -750)", _LUNG_NOT_FOUND,
        "Mean HU of the voxels of both lung masks (lesions included), rounded to 0.1 HU."),
    "mean_lung_hu_right": (
        "number", "HU", "any number", _side("right"),
        "Mean HU of the right lung mask's voxels (lesions included), rounded to 0.1 HU."),
    "mean_lung_hu_left": (
        "number", "HU", "any number", _side("left"),
        "Mean HU of the left lung mask's voxels (lesions included), rounded to 0.1 HU."),
    "ggo_volume_ml_right": (
        "number", "mL", _ML, _FAILED, _volume("ground-glass lesion (faint + ground glass)", "the right lung")),
    "ggo_volume_ml_left": (
        "number", "mL", _ML, _FAILED, _volume("ground-glass lesion (faint + ground glass)", "the left lung")),
    "consolidation_volume_ml_right": (
        "number", "mL", _ML, _FAILED, _volume("consolidation", "the right lung")),
    "consolidation_volume_ml_left": (
        "number", "mL", _ML, _FAILED, _volume("consolidation", "the left lung")),
    "faint_ggo_volume_ml_right": (
        "number", "mL", _ML, _FAILED, _volume("faint ground glass", "the right lung")),
    "faint_ggo_volume_ml_left": (
        "number", "mL", _ML, _FAILED, _volume("faint ground glass", "the left lung")),
    "percent_opacity_right": (
        "number", "%", _PCT, _side("right"),
        "Percentage of opacity of the right lung: its lesion volume / its volume x 100."),
    "percent_opacity_left": (
        "number", "%", _PCT, _side("left"),
        "Percentage of opacity of the left lung: its lesion volume / its volume x 100."),
    "percent_high_opacity_right": (
        "number", "%", _PCT, _side("right"),
        "Percentage of high opacity of the right lung: its lesion voxels above hu_classes.high_opacity_min_hu "
        "(default -200 HU), % of its volume."),
    "percent_high_opacity_left": (
        "number", "%", _PCT, _side("left"),
        "Percentage of high opacity of the left lung: its lesion voxels above hu_classes.high_opacity_min_hu "
        "(default -200 HU), % of its volume."),
    "well_aerated_volume_ml": (
        "number", "mL", _ML, _FAILED,
        _volume("well-aerated lung (lung voxels in hu_classes.well_aerated, default -950 to under -700 HU; lesion or "
                "not: no lesion mask is read; Colombi et al., Radiology 2020)", "both lungs")),
    "percent_well_aerated": (
        "number", "%", _PCT, _LUNG_NOT_FOUND,
        "Percentage of well-aerated lung: well_aerated_volume_ml / lung volume x 100, both lungs (healthy "
        "inspiratory lungs about 80-90 %; lower with opacities, expiration or a lung mask taking in other tissue)."),
    "percent_well_aerated_right": (
        "number", "%", _PCT, _side("right"),
        "Percentage of well-aerated lung of the right lung: its voxels in hu_classes.well_aerated (default -950 to "
        "under -700 HU), % of its volume."),
    "percent_well_aerated_left": (
        "number", "%", _PCT, _side("left"),
        "Percentage of well-aerated lung of the left lung: its voxels in hu_classes.well_aerated (default -950 to "
        "under -700 HU), % of its volume."),
    "percent_low_attenuation": (
        "number", "%", _PCT, _LUNG_NOT_FOUND,
        "%LAA-950: lung voxels below -950 HU, % of lung volume, both lungs, on the original CT grid (emphysema, "
        "bullae, air trapping; noise raises it). The QC flag LOW_ATTENUATION fires from 10 % (result.json's "
        "hu_check laa950_pct, the same count to 2 decimals)."),
    **{f"{name}_volume_ml": (
        "number", "mL", _ML, _FAILED,
        _volume(f"{what} lung (lung voxels {band} by default, hu_classes.aeration_edges; lesion or not: no lesion mask is read; "
                "Gattinoni et al., N Engl J Med 2006)", "both lungs")) for name, what, band in _AERATION},
    **{f"{name}_tissue_g": (
        "number", "g", _ML, _FAILED,
        f"Tissue mass of {what} lung (lung voxels {band} by default), both lungs: the sum over its voxels of (1 + HU/1000) x "
        "voxel volume, HU held at -1000 from below (air -1000 HU, tissue 0 HU and 1 g/mL; Gattinoni et al., Am J "
        "Respir Crit Care Med 2001), on the original CT grid, rounded to 0.01 g.") for name, what, band in _AERATION},
    "lung_tissue_g": (
        "number", "g", ">= 0 (adult lungs about 600-1000 g; more with oedema, consolidation or a lung mask "
        "taking in other tissue)", _FAILED,
        "Lung tissue mass (lung weight), both lungs: the four compartments' tissue_g summed, i.e. lung voxels up to "
        "the last of hu_classes.aeration_edges (default +100 HU; above it contrast-filled vessels and calcification "
        "count in no compartment)."),
    "lung_gas_ml": (
        "number", "mL", _ML, _FAILED,
        "Gas volume of both lungs: the sum over the lung voxels up to the last of hu_classes.aeration_edges of "
        "-HU/1000 x voxel volume (HU held to -1000..0: a voxel at -1000 HU is all gas, one at 0 HU or above none), "
        "on the original CT grid, rounded to 0.01 mL. Inspiration depth moves it most."),
    "apex_covered": (
        "boolean", "", "True | False", _FAILED,
        "False when a lung runs out of the scan's top slice (that slice holds at least 5 mm2 of it): the lung "
        "apex is cut off, QC flag PARTIAL_LUNG_COVERAGE, and the zones there are missing. It speaks of the lungs "
        "found: a lung not found (LUNG_NOT_FOUND) is not counted as cut off."),
    "base_covered": (
        "boolean", "", "True | False", _FAILED,
        "False when a lung runs out of the scan's bottom slice (that slice holds at least 5 mm2 of it): the lung "
        "base is cut off, QC flag PARTIAL_LUNG_COVERAGE, and the zones there are missing. It speaks of the lungs "
        "found: a lung not found (LUNG_NOT_FOUND) is not counted as cut off."),
    "scan_above_lungs_mm": (
        "number", "mm", ">= 0", _FAILED + "; or no lung found",
        "How far the scan reaches above the lungs: from the higher apex level (landmarks.csv) to the scan's top "
        "slice (slice centres; 0 when a lung is cut off there). The network's masks near the apices move with it "
        "(README, Measurement error): compare serial scans acquired with like coverage."),
    "scan_below_lungs_mm": (
        "number", "mm", ">= 0", _FAILED + "; or no lung found",
        "How far the scan reaches below the lungs: from the lower base level (landmarks.csv; it follows aerated "
        "recess tips below the lung mask) to the scan's bottom slice (slice centres; 0 when a lung is cut off "
        "there, or may be: LANDMARK_UNCERTAIN:base_<side>). The network's masks near the bases move with it (README, "
        "Measurement error): compare serial scans acquired with like coverage."),
    "qc_flags": (
        "text", "", "QC flag names joined by ';' (README: QC flags; docs/dicom_input.md)",
        "no QC flag; or series failed",
        "The scan's quality-control flags, ';'-joined (e.g. PARTIAL_LUNG_COVERAGE;ZONES_MISSING): fixes and warnings "
        "of the loader, the segmentation and the scoring. A flag with a value is written NAME:value."),
    "n_slices": (
        "integer", "", ">= 1", _FAILED,
        "Number of slices of the scored CT volume (original grid)."),
    "slice_thickness_mm": (
        "number", "mm", "> 0", "series failed; or the header gives no SliceThickness (0.17.0 and earlier wrote 0)",
        "Slice thickness from the DICOM header (SliceThickness; the median over the series' slices where they "
        "differ); not the slice spacing."),
    "manufacturer": (
        "text", "", "free text", "series failed; or the header has no Manufacturer",
        "The header's Manufacturer as the scanner wrote it (control characters removed, at most 1024 characters)."),
    "kernel": (
        "text", "", "free text", "series failed; or the header has no ConvolutionKernel",
        "The header's ConvolutionKernel (reconstruction kernel) as written; several values joined by a backslash."),
    "patient_position": (
        "text", "", "HFS | HFP | FFS | FFP | HFDR | HFDL | FFDR | FFDL, or as written",
        "series failed; or the header has no PatientPosition (a NIfTI input has none)",
        "The header's PatientPosition: head or feet first, supine (S), prone (P) or decubitus right/left (DR/DL). "
        "Which lung is dependent follows from it: the back in a supine scan, the front in a prone one (ICU studies "
        "of COVID-19 ARDS scan prone patients). ctscore scores every position alike (its zones run head to feet); "
        "a prone scan whose header says supine is flagged ORIENTATION_SUSPECT."),
    "lobar_note": (
        "text", "",
        "empty when the lobar totals are scored; else one of: 'no lobe map: the segmenter makes none (give your own "
        "with --lobes DIR)', 'no lobe map for this series in scoring.lobar.lobes_dir (LOBES_NOT_FOUND)', 'lobar "
        "scoring off (scoring.lobar.enabled: false)', 'a lobe is missing: cut off, absent from the map or in a lung "
        "not found (LOBES_MISSING)', 'lobe map not used (<QC flag>)', 'the lobe map holds no lobe'",
        "lobar20_total and lobar25_total are scored; or series failed",
        "Why lobar20_total and lobar25_total are empty."),
    "six_zone_near_edge": (
        "integer", "", "0-6",
        "six_zone_total empty (a zone missing), or series failed; or a result of ctscore before 0.7.0",
        "How many of the six zones sit at a rule's edge (zones.csv near_edge: the 1 mL / 0.25 % minimum or a score "
        "band's edge): each may change its score, by 1, when the patient is shifted by a fraction of a voxel. 0: the "
        "total is firm against such shifts; landmark moves are not covered."),
    "zhang900_near_edge": (
        "integer", "", "0-10",
        "zhang900_total empty (a unit missing), or series failed; or a result of ctscore before 0.7.0",
        "How many of the ten zhang900 units sit at a rule's edge (zones.csv near_edge: the minimum, an extent band or "
        "the density share): each may change its unit score (a density grade 2 -> 3 turns 4 into 9) under a shift of "
        "a fraction of a voxel."),
    "ctscore_version": (
        "text", "", "a version number, e.g. 0.3.0", _FAILED,
        "Version of ctscore that scored the series (from its result.json: in a merged table rows may differ)."),
    "model_id": (
        "text", "", "an identifier, e.g. classical-<16 hex digits>", _FAILED,
        "Identifier of the segmentation model and its parameters (for a network a digest of its files)."),
    "scores_config_sha256": (
        "text", "", "12 hex digits", _FAILED,
        "The settings that made the row's scores: 12 hex digits of a hash of the configuration without the sections "
        "that do not change a series' scores. Rows with different values are not comparable."),
    "device": (
        "text", "", "cpu | cuda", "series failed; or not known",
        "Kind of device the segmenter ran on (a CUDA index dropped). A network on CUDA runs in half precision: its "
        "masks differ a little from the CPU's."),
    "pseudonym_salt_id": (
        "text", "", "8 hex digits, or none", "series failed; or not recorded (results of an older version)",
        "Which pseudonym salt made the row's patient_id (8 hex digits of a slow hash of outputs.pseudonym_salt, not "
        "the salt), 'none' when the ids are not pseudonymised. Rows of different salts give one patient "
        "different patient_ids."),
}


_ZONES: dict[str, tuple[str, str, str, str, str]] = {
    "scan_id": (
        "text", "", "a scan_id of scans.csv with status ok", "never empty",
        "The series (scans.csv scan_id). Key of zones.csv: (scan_id, system, lung, unit); failed series have no "
        "zone rows."),
    "system": (
        "text", "", "six_zone | zhang900 | lobar | anteroposterior | peripheral_central", "never empty",
        "Scoring system of the row: six_zone (3 zones per lung), zhang900 (5 levels per lung), lobar (5 lobes; rows "
        "only with a lobe map and scoring.lobar.enabled), anteroposterior (each lung's front and back half, "
        "measured and not scored: where the lesion lies front to back), peripheral_central (the part of each lung near "
        "the pleura and the rest, measured and not scored: whether the lesion is peripheral, subpleural, or central)."),
    "lung": (
        "text", "", "right | left", "never empty",
        "The lung the unit lies in (the patient's right or left)."),
    "unit": (
        "text", "", f"six_zone: {_SIX}; zhang900: {_ZHANG}; lobar: {_LOBAR}; anteroposterior: anterior | posterior; "
        "peripheral_central: peripheral | central",
        "never empty",
        "The unit within its lung. six_zone: upper (above the carina), middle (carina to the inferior pulmonary vein "
        "level), lower (below it). zhang900: L1 suprasternal notch, L2 aortic arch, L3 carina, L4 bronchus "
        "intermedius, L5 diaphragm dome, each by default a slab of +-5 mm (at least half the slice step) around "
        "the level, level - 5 <= z < level + 5 mm (scoring.zhang900.mode). lobar: the lobe. anteroposterior: in each "
        "slice, the lung's rows in front of (anterior) or at and behind (posterior) the midpoint of its own "
        "front-to-back extent; posterior is the patient's back, broadly the dependent lung when supine (scans.csv "
        "patient_position), though halves of each slice are no gravitational levels. peripheral_central: in each "
        "slice, the lung voxels within a third of the lung's greatest in-plane depth there (at least 10 mm) of the "
        "pleura, the chest wall (in plane, from the edge of the convex hull of both lungs in the slice) or the "
        "diaphragm (straight down, over the dome), are peripheral (55-65 % of a lung on real chests), the rest "
        "central: the inner part of each slice's lung, with its mediastinal side (except in a slice holding one lung "
        "only) and anything a segmenter takes in along the mediastinum (what it takes in at the dome is "
        "peripheral)."),
    "status": (
        "text", "", "ok | missing", "never empty",
        "ok: the unit was measured and scored (anteroposterior and peripheral_central rows: measured); missing: the scan cannot score it (not covered by the scan, a level "
        "it needs not found, its lung not found, the unit holds no lung voxel (QC flag ZONE_WITHOUT_LUNG; an L1 "
        "slab wholly above the apex scores 0 instead, SLAB_ABOVE_APEX); lobar: a "
        "lobe missing or the lobe map refused): its scores and measures are empty, never 0, and so are the system's "
        "totals in scans.csv."),
    "lung_ml": (
        "number", "mL", _ML,
        "unit missing (status missing); but a missing lobar unit (a lobe cut off, absent from the map, under 1 % of "
        "its lung or in a lung not found) keeps the lung the map gives it (0 when the map holds no such lobe); a "
        "six_zone or zhang900 unit missing because it holds no lung voxel (ZONE_WITHOUT_LUNG), and an anteroposterior or "
        "peripheral_central unit of a lung found that holds none of its voxels, keep 0",
        "Volume of the lung mask inside the unit."),
    "lesion_ml": (
        "number", "mL", _ML, _UNIT_MISSING,
        "Volume of the lesion mask (all classes) inside the unit, to 0.01 mL; the involvement minimum "
        "(scoring.min_involvement_ml) is judged on this written value."),
    "involvement_pct": (
        "number", "%", _PCT, _UNIT_MISSING,
        "The unit's percent opacity: lesion_ml / lung_ml x 100 (a unit holding no lung is missing; an L1 slab wholly "
        "above the apex, SLAB_ABOVE_APEX, reads 0), to 3 decimals; the unit's scores follow from this written value, "
        "so binning the column gives the table's scores."),
    "ggo_ml": (
        "number", "mL", _ML, _UNIT_MISSING,
        "Volume of ground-glass lesion (faint ground glass + ground glass) inside the unit."),
    "consolidation_ml": (
        "number", "mL", _ML, _UNIT_MISSING, "Volume of consolidation inside the unit."),
    "faint_ggo_ml": (
        "number", "mL", _ML, _UNIT_MISSING, "Volume of faint ground glass inside the unit (part of ggo_ml)."),
    "percent_high_opacity": (
        "number", "%", _PCT, _UNIT_MISSING,
        "Lesion voxels above hu_classes.high_opacity_min_hu (default -200 HU), % of the unit's lung volume."),
    "mean_lung_hu": (
        "number", "HU", "any number", _UNIT_MISSING + "; or an L1 slab wholly above the apex (SLAB_ABOVE_APEX: no lung "
        "voxel)",
        "Mean HU of the unit's lung voxels (lesions included), rounded to 0.1 HU."),
    "extent_score": (
        "integer", "score points", "six_zone: 0-4; zhang900: 0-10; lobar: 0-4",
        "unit missing (status missing); anteroposterior and peripheral_central rows (not scored)",
        "six_zone: the zone score 0-4 (as unit_score). zhang900: extent 0-10 (involvement_pct to the nearest 10 % "
        "step, halves up: 25 % is 3, 95 % is 10; at least 1 when involved). lobar: the lobe's lobar20 score 0-4 (six-zone bands), summed in lobar20_total."),
    "density_grade": (
        "integer", "score points", "zhang900: 0-3",
        "six_zone, lobar, anteroposterior and peripheral_central rows (not graded); or unit missing",
        "zhang900 density grade: 0 normal (also a unit with lesion under the involvement limits, "
        "scoring.min_involvement_*), 1 faint ground glass, 2 ground glass, 3 consolidation "
        "(scoring.zhang900.density_rule)."),
    "unit_score": (
        "integer", "score points", "six_zone: 0-4; zhang900: 0-90; lobar: 0-5",
        "unit missing (status missing); anteroposterior and peripheral_central rows (not scored)",
        "six_zone: the zone score 0-4, summed in six_zone_total. zhang900: extent x density^2 0-90, summed in "
        "zhang900_total. lobar: the lobe's lobar25 score 0-5, summed in lobar25_total."),
    "near_edge": (
        "text", "", "empty, or ';'-separated: minimum, band, density_share", "(empty: no edge near, no lesion, "
        "unit missing; or a result of ctscore before 0.6.0, which did not compute it)",
        "The score rules whose edge the unit's measures lie near, where a small change of the segmentation (the "
        "patient shifted by a fraction of a voxel) can change its score (scoring.systems.near_edges): minimum "
        "(lesion within 0.5 mL of scoring.min_involvement_ml, or involvement within 0.1 points of "
        "min_involvement_pct), band (involvement within 1 point of a score step: six_zone 25/50/75 %, lobar "
        "5/25/50/75 %, zhang900 15/25/.../95 %), density_share (zhang900: a class's share of the lesion within 0.05 "
        "of scoring.zhang900.density_share; predominant rule: the two largest classes within 0.05). The landmarks "
        "that place the units can move too; this does not cover them. README, 'Measurement error'."),
}

_FAILURES: dict[str, tuple[str, str, str, str, str]] = {
    "scan_id": (
        "text", "", "a scan_id of scans.csv with status failed", "never empty",
        "The failed series (scans.csv scan_id). Key of failures.csv: one row per failed series."),
    "series_uid": (
        "text", "", "DICOM UID (digits and dots)", "the series' header has no SeriesInstanceUID",
        "The DICOM SeriesInstanceUID of the series."),
    "code": (
        "text", "", "an upper-case code, e.g. NO_LUNG_FOUND, CORRUPT_PIXEL_DATA, NOT_HU, TIMEOUT, WORKER_DIED, "
                    "INTERNAL_ERROR", "never empty",
        "Why the series could not be scored, as a short code."),
    "message": (
        "text", "", "free text", "not given",
        "Why the series could not be scored, in a sentence."),
    "path": (
        "text", "", "an absolute file or folder path", "not given",
        "Where the series lies: the folder its files share (the file of a one-file series), or the file the error "
        "concerns. May name the patient: not for sharing outside the institution."),
}

_LANDMARKS: dict[str, tuple[str, str, str, str, str]] = {
    "scan_id": (
        "text", "", "a scan_id of scans.csv with status ok", "never empty",
        "The series (scans.csv scan_id). Key of landmarks.csv: (scan_id, landmark); failed series have no rows."),
    "landmark": (
        "text", "", "apex_right | apex_left | base_right | base_left | dome_right | dome_left | carina | "
                    "rul_takeoff | bronchus_intermedius | suprasternal_notch | aortic_arch | ipv_right | ipv_left | ipv",
        "never empty",
        "The level (docs/scoring.md): the six-zone split uses the carina and the inferior pulmonary veins (ipv), the "
        "zhang900 slabs L1-L5 the suprasternal notch, aortic arch, carina, bronchus intermedius and domes."),
    "z_mm": (
        "number", "mm", "patient z (ImagePositionPatient, + towards the head)",
        "the level could not be found or estimated (method missing)",
        "Where the level lies, in the scanner's patient coordinates (the z that levels.png and qc.png show; "
        "differences between levels of one scan are distances in mm), rounded to 0.01 mm."),
    "method": (
        "text", "", "detected | estimated | missing | reader", "never empty",
        "How the level was placed: detected on the image, estimated from other levels (reference offsets: "
        "docs/scoring.md), missing, or set by a reader (ctscore run --landmarks)."),
    "confidence": (
        "text", "", "high | medium | low", "never empty",
        "How sure the placement is (a reader's level: high)."),
    "ctscore_z_mm": (
        "number", "mm", "patient z", "no reader set or moved the level, or ctscore had none",
        "For a level set by a reader (method reader): ctscore's own z before it was replaced (reader minus this is "
        "the correction, a measure of ctscore's landmark error on the cohort); for a level placed again from a "
        "reader's levels (the IPV from a reader's carina or dome, say): ctscore's z before that."),
    "ctscore_method": (
        "text", "", "detected | estimated | missing", "no reader set or moved the level",
        "For a level a reader set or moved: how ctscore had placed it."),
    "ctscore_confidence": (
        "text", "", "high | medium | low", "no reader set or moved the level",
        "For a level a reader set or moved: ctscore's confidence in its own placement (LANDMARK_READER_FAR compares "
        "a reader's level with ctscore's detected high- and medium-confidence ones)."),
    "note": (
        "text", "", "free text written by ctscore", "no note",
        "How the level was found or estimated, in a phrase."),
}

_DOCS = {"scans": (_SCANS, SCAN_COLUMNS), "zones": (_ZONES, ZONE_COLUMNS), "failures": (_FAILURES, FAILURE_COLUMNS),
         "landmarks": (_LANDMARKS, LANDMARK_COLUMNS)}


def documented_columns(table: str) -> list[str]:
    """The columns this module documents for ``table`` (scans, zones, failures, landmarks), in its order."""
    return list(_DOCS[table][0])


def dictionary_frame() -> pd.DataFrame:
    """The data dictionary: one row per column of scans, zones, failures and landmarks, in the tables' column order, with
    :data:`DICTIONARY_COLUMNS`. A column of a table that this module does not describe (yet) still gets a row, with
    its type from :func:`pipeline.outputs.table_dtypes` and a description saying so."""
    rows = []
    for table, (docs, columns) in _DOCS.items():
        dtypes = table_dtypes(columns)
        for column in columns:
            doc = docs.get(column)
            if doc is None:
                log.warning("data dictionary: column %s of %s is not described", column, table)
                doc = (TYPE_OF_DTYPE.get(dtypes[column], "number"), "", "", "", "(not described: see README.md)")
            rows.append(dict(zip(DICTIONARY_COLUMNS, (table, column, *doc), strict=True)))
    return pd.DataFrame(rows, columns=DICTIONARY_COLUMNS)


def write_data_dictionary(out_dir: str | Path) -> Path:
    """Write ``OUT/data_dictionary.csv`` (UTF-8, no index) atomically; return its path."""
    path = Path(out_dir) / FILE_NAME
    atomic_write_bytes(path, dictionary_frame().to_csv(index=False).encode("utf-8"))
    return path
