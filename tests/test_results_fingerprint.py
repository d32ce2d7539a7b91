"""Results belong to a version: resume keeps a result only when the ctscore version that made it is this one (with the
same configuration and model), so a change of the code that alters scores, volumes, zones or QC flags must come
with a new ``pipeline.__version__`` and a CHANGELOG entry. An upgrade audit found scoring changed three times under
one version label (a resumed folder kept results the new code would not give). This test makes such a change
visible on the sample (classical segmenter, the default configuration): its scores, categories, QC flags and zone
grades exactly, its volumes within 1 %, recorded per version and scores configuration.

When it fails after an intended change of results: bump ``__version__`` (pipeline/__init__.py and pyproject.toml),
say what changed in CHANGELOG.md, and record the new values under the new key. A change of the default configuration
alone needs no bump (its hash is part of the key and resume compares it): record under the new key. When ctscore did
not change but a dependency did (the failure lists the packages), record the new values and say so in CHANGELOG.md.
It covers the code the classical path runs on one synthetic series, not the network's own steps or lobe maps."""

from __future__ import annotations

import hashlib
from importlib import metadata

import pandas as pd
import pytest

from pipeline import __version__

EXACT_SCAN_COLUMNS = ["status", "six_zone_total", "zhang900_total", "mosmed_category", "lobar20_total",
                      "lobar25_total", "lobar_note", "qc_flags", "apex_covered", "base_covered"]
EXACT_ZONE_COLUMNS = ["system", "lung", "unit", "status", "extent_score", "density_grade", "unit_score"]
VOLUMES = ["lung_volume_ml_right", "lung_volume_ml_left", "lesion_volume_ml", "ggo_volume_ml",
           "consolidation_volume_ml", "faint_ggo_volume_ml", "well_aerated_volume_ml", "non_aerated_volume_ml",
           "lung_tissue_g", "lung_gas_ml"]

#: (version, scores_config_sha256) -> the sample's exact results (sha256, 16 hex digits) and volumes in mL
RECORDED = {
    ("0.3.0", "d9dac4cad784"): {"exact": "5f589bad3065d793", "volumes_ml": {
        "lung_volume_ml_right": 2425.43, "lung_volume_ml_left": 2320.43, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51}},
    # 0.4.0: series selection, new QC flags (none on the sample): its results as under 0.3.0
    ("0.4.0", "d9dac4cad784"): {"exact": "5f589bad3065d793", "volumes_ml": {
        "lung_volume_ml_right": 2425.43, "lung_volume_ml_left": 2320.43, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51}},
    # 0.5.0: hu_classes.lesion_max_hu 150 (no sample lesion voxel reaches it), study_date normalised, new QC flags
    ("0.5.0", "5670f4ca1399"): {"exact": "5f589bad3065d793", "volumes_ml": {
        "lung_volume_ml_right": 2425.43, "lung_volume_ml_left": 2320.43, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51}},
    # 0.6.0: the airway grown again around a tube (the sample's is not), MOTION_SUSPECT and DEPENDENT_DENSITY (not on
    # the sample)
    # the sample of phantom version 2 (rounded main bronchi, the heart down to the diaphragm: a sample audit,
    # 2026-12-06; not a change of ctscore's code): left lung 2320.43 -> 2266.95 mL, scores as before; the scores hash
    # of the settings the configured segmenter reads (pipeline.config.read_settings): 5670f4ca1399 -> b9c20e1f7639
    ("0.6.0", "b9c20e1f7639"): {"exact": "5f589bad3065d793", "volumes_ml": {
        "lung_volume_ml_right": 2421.29, "lung_volume_ml_left": 2266.95, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51}},
    # 0.7.0: half-open zhang900 slabs, ZONE_WITHOUT_LUNG and ZONE_SMALL (a zone-boundary audit): the sample's slabs,
    # zones and flags are as before
    ("0.7.0", "b9c20e1f7639"): {"exact": "5f589bad3065d793", "volumes_ml": {
        "lung_volume_ml_right": 2421.29, "lung_volume_ml_left": 2266.95, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51}},
    # 0.8.0: the network's lung mask loses airless tissue above its apices (itkelastix00: 15.5 mL of the neck); the
    # sample is scored by the classical segmenter here: as before
    ("0.8.0", "b9c20e1f7639"): {"exact": "5f589bad3065d793", "volumes_ml": {
        "lung_volume_ml_right": 2421.29, "lung_volume_ml_left": 2266.95, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51}},
    # 0.9.0: a dome a second reading puts more than 5 mm higher, over a lens of dense tissue under the aerated lung, is
    # uncertain (LANDMARK_UNCERTAIN); the sample's lungs have none: as before
    ("0.9.0", "b9c20e1f7639"): {"exact": "5f589bad3065d793", "volumes_ml": {
        "lung_volume_ml_right": 2421.29, "lung_volume_ml_left": 2266.95, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51}},
    # 0.10.0: a base whose aerated tissue below the lung mask runs on to the scan's bottom slice is flagged
    # LANDMARK_UNCERTAIN; the sample's lungs end inside the scan: as before
    ("0.10.0", "b9c20e1f7639"): {"exact": "5f589bad3065d793", "volumes_ml": {
        "lung_volume_ml_right": 2421.29, "lung_volume_ml_left": 2266.95, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51}},
    # 0.11.0: well-aerated lung (new scans.csv columns; hu_classes.well_aerated in the default configuration, so the
    # scores hash b9c20e1f7639 -> 11b1882bb0e7); scores, flags and the other volumes as before
    ("0.11.0", "11b1882bb0e7"): {"exact": "5f589bad3065d793", "volumes_ml": {
        "lung_volume_ml_right": 2421.29, "lung_volume_ml_left": 2266.95, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51,
        "well_aerated_volume_ml": 4031.28}},
    # 0.12.0: aeration compartments, lung tissue and gas (new scans.csv columns; hu_classes.aeration_edges in the
    # default configuration, so the scores hash 11b1882bb0e7 -> a938cd392514) and zones.csv's anteroposterior rows
    # (four more rows, no score: the exact part 5f589bad3065d793 -> 2d31d134dd21ef2b); scores, flags and the other
    # volumes as before ("volumes_ml" holds the tissue mass in g too)
    ("0.12.0", "a938cd392514"): {"exact": "2d31d134dd21ef2b", "volumes_ml": {
        "lung_volume_ml_right": 2421.29, "lung_volume_ml_left": 2266.95, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51,
        "well_aerated_volume_ml": 4031.28, "non_aerated_volume_ml": 238.33, "lung_tissue_g": 1070.78,
        "lung_gas_ml": 3620.9}},
    # 0.13.0: zones.csv's peripheral_central rows (four more rows, no score: the exact part 2d31d134dd21ef2b ->
    # c35fc892b9357fcf); scores, flags, the configuration and every volume as under 0.12.0
    ("0.13.0", "a938cd392514"): {"exact": "c35fc892b9357fcf", "volumes_ml": {
        "lung_volume_ml_right": 2421.29, "lung_volume_ml_left": 2266.95, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51,
        "well_aerated_volume_ml": 4031.28, "non_aerated_volume_ml": 238.33, "lung_tissue_g": 1070.78,
        "lung_gas_ml": 3620.9}},
    # 0.14.0: the network's lung mask loses airless tissue beside an aerated apex (itkelastix00: 22 mL, 5.8 mL of
    # false lesion); the sample is scored by the classical segmenter here: as under 0.13.0
    ("0.14.0", "a938cd392514"): {"exact": "c35fc892b9357fcf", "volumes_ml": {
        "lung_volume_ml_right": 2421.29, "lung_volume_ml_left": 2266.95, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51,
        "well_aerated_volume_ml": 4031.28, "non_aerated_volume_ml": 238.33, "lung_tissue_g": 1070.78,
        "lung_gas_ml": 3620.9}},
    # 0.15.0: the QC flag PNEUMOTHORAX_SUSPECT (none on the sample) and two hu_check measures: as under 0.14.0
    ("0.15.0", "a938cd392514"): {"exact": "c35fc892b9357fcf", "volumes_ml": {
        "lung_volume_ml_right": 2421.29, "lung_volume_ml_left": 2266.95, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51,
        "well_aerated_volume_ml": 4031.28, "non_aerated_volume_ml": 238.33, "lung_tissue_g": 1070.78,
        "lung_gas_ml": 3620.9}},
    # 0.16.0: pneumothorax air off the airway, a bundle's stray lesion labels, UNREADABLE_FILES_BESIDE (none of them on
    # the sample): as under 0.15.0
    ("0.16.0", "a938cd392514"): {"exact": "c35fc892b9357fcf", "volumes_ml": {
        "lung_volume_ml_right": 2421.29, "lung_volume_ml_left": 2266.95, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51,
        "well_aerated_volume_ml": 4031.28, "non_aerated_volume_ml": 238.33, "lung_tissue_g": 1070.78,
        "lung_gas_ml": 3620.9}},
    # 0.17.0: zones graded from their written figures (0.001 %, 0.01 mL; no unit of the sample lies that near a
    # boundary), the QC flags BURNED_IN_ANNOTATION and LUNG_SIDE_MIXED, ORIENTATION_SUSPECT not checked where the field
    # of view cuts the back of the body (none on the sample): as under 0.16.0
    ("0.17.0", "a938cd392514"): {"exact": "c35fc892b9357fcf", "volumes_ml": {
        "lung_volume_ml_right": 2421.29, "lung_volume_ml_left": 2266.95, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51,
        "well_aerated_volume_ml": 4031.28, "non_aerated_volume_ml": 238.33, "lung_tissue_g": 1070.78,
        "lung_gas_ml": 3620.9}},
    # 0.18.0: loader fixes for series the sample is not (padding stored outside BitsStored, reused SOP instance
    # UIDs, spacing noise, missing slice thickness, airless fields of view), the domes' basal columns at least 75 mm
    # high and an IPV from the carina alone (the sample's levels do not move): as under 0.17.0
    ("0.18.0", "a938cd392514"): {"exact": "c35fc892b9357fcf", "volumes_ml": {
        "lung_volume_ml_right": 2421.29, "lung_volume_ml_left": 2266.95, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51,
        "well_aerated_volume_ml": 4031.28, "non_aerated_volume_ml": 238.33, "lung_tissue_g": 1070.78,
        "lung_gas_ml": 3620.9}},
    # 0.19.0: series selection (thickness classes before the kernel, coverage against the study's widest stack,
    # supine over prone; the sample is one series), the QC flags of expiratory series, several dates in a study and
    # truncated end slices (none on the sample), seg.dcm's frame references: as under 0.18.0
    ("0.19.0", "a938cd392514"): {"exact": "c35fc892b9357fcf", "volumes_ml": {
        "lung_volume_ml_right": 2421.29, "lung_volume_ml_left": 2266.95, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51,
        "well_aerated_volume_ml": 4031.28, "non_aerated_volume_ml": 238.33, "lung_tissue_g": 1070.78,
        "lung_gas_ml": 3620.9}},
    # 0.20.0: hidden and system folders (trash, snapshots) below the input are not read, archives are named
    # (ARCHIVE), compressed slices beside a stack are counted by UNREADABLE_FILES_BESIDE (the sample has none of
    # them): as under 0.19.0
    ("0.20.0", "a938cd392514"): {"exact": "c35fc892b9357fcf", "volumes_ml": {
        "lung_volume_ml_right": 2421.29, "lung_volume_ml_left": 2266.95, "lesion_volume_ml": 581.73,
        "ggo_volume_ml": 426.22, "consolidation_volume_ml": 155.51, "faint_ggo_volume_ml": 131.51,
        "well_aerated_volume_ml": 4031.28, "non_aerated_volume_ml": 238.33, "lung_tissue_g": 1070.78,
        "lung_gas_ml": 3620.9}},
}


def sample_results(out) -> tuple[str, str, dict[str, float], str]:
    """(config hash, sha256 of the exact part, volumes, the exact part as text) of a run's tables."""
    scans = pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False).sort_values("scan_id")
    zones = pd.read_csv(out / "zones.csv", dtype=str, keep_default_na=False)
    zones = zones.sort_values(["scan_id", "system", "lung", "unit"])
    exact = scans[EXACT_SCAN_COLUMNS].to_csv(index=False) + zones[EXACT_ZONE_COLUMNS].to_csv(index=False)
    volumes = {c: float(scans[c].iloc[0]) for c in VOLUMES}
    return (scans["scores_config_sha256"].iloc[0], hashlib.sha256(exact.encode()).hexdigest()[:16], volumes,
            exact)


def _packages() -> str:
    names = ("numpy", "scipy", "scikit-image", "SimpleITK", "pandas", "pydicom")
    return ", ".join(f"{n} {metadata.version(n)}" for n in names)


def test_the_sample_s_results_are_those_of_this_version(sample_run):
    config, exact, volumes, text = sample_results(sample_run)
    key = (__version__, config)
    assert key in RECORDED, (f"no results recorded for ctscore {__version__} with scores configuration {config}: "
                             f"add {key!r}: {{'exact': {exact!r}, 'volumes_ml': {volumes!r}}} (packages: "
                             f"{_packages()})")
    want = RECORDED[key]
    changed = [c for c in want["volumes_ml"] if volumes[c] != pytest.approx(want["volumes_ml"][c], rel=0.01, abs=0.5)]
    assert exact == want["exact"] and not changed, (
        f"the sample's results changed under ctscore {__version__} (exact part {exact}, recorded {want['exact']}; "
        f"volumes beyond 1 %: {changed}): if ctscore's code did it, bump pipeline.__version__ and pyproject's "
        f"version, add a CHANGELOG.md entry and record the new values under the new version; packages: "
        f"{_packages()}; the exact part now:\n{text}")
