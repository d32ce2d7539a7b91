"""Results belong to a version: resume keeps a result only when the ctscore version that made it is this one (with the
same configuration and model), so a change of the code that alters scores, volumes, zones or QC flags must come
with a new ``pipeline.__version__`` and a CHANGELOG entry. An upgrade audit found scoring changed three times under
one version label (a resumed folder kept results the new code would not give). This test makes such a change
visible: the sample's results (classical segmenter) are fingerprinted and the fingerprint recorded per version.

When it fails after an intended change of results: bump ``__version__`` (pipeline/__init__.py and pyproject.toml),
say what changed in CHANGELOG.md, and record the new fingerprint below. A change of the network's weights needs no
bump (its model_id changes) nor does one of the configuration (its hash changes)."""

from __future__ import annotations

import hashlib

import pandas as pd

from pipeline import __version__

#: sha256 (first 16 hex digits) of the sample's results, by the version that gives them
RESULTS_FINGERPRINT = {
    "0.3.0": "fc536d11a8f3a5f1",
}

SCAN_COLUMNS = ["six_zone_total", "zhang900_total", "mosmed_category", "lobar20_total", "lobar25_total",
                "lobar_note", "qc_flags", "apex_covered", "base_covered"]
ROUNDED = {"lung_volume_ml_right": 0, "lung_volume_ml_left": 0, "lesion_volume_ml": 0, "ggo_volume_ml": 0,
           "consolidation_volume_ml": 0, "faint_ggo_volume_ml": 0, "percent_opacity": 1, "mean_lung_hu": 0}
ZONE_COLUMNS = ["system", "lung", "unit", "status", "extent_score", "density_grade", "unit_score"]


def results_fingerprint(out) -> str:
    """The scores, flags, coarsely rounded volumes and zone grades of a run's tables (rounding keeps the last digit of
    a float sum, which may differ between CPUs, out)."""
    scans = pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False).sort_values("scan_id")
    zones = pd.read_csv(out / "zones.csv", dtype=str, keep_default_na=False)
    parts = [scans[SCAN_COLUMNS].to_csv(index=False)]
    for col, digits in ROUNDED.items():
        parts.append(",".join(f"{round(float(v), digits):.{digits}f}" if v else "" for v in scans[col]))
    zones = zones.sort_values(["scan_id", "system", "lung", "unit"])
    parts.append(zones[ZONE_COLUMNS].to_csv(index=False))
    parts.append(",".join(f"{round(float(v)):.0f}" if v else "" for v in zones["lesion_ml"]))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def test_the_sample_s_results_are_those_of_this_version(sample_run):
    got = results_fingerprint(sample_run)
    assert __version__ in RESULTS_FINGERPRINT, f"no fingerprint recorded for {__version__}: add {got!r}"
    assert got == RESULTS_FINGERPRINT[__version__], (
        f"the sample's results changed ({got}, recorded {RESULTS_FINGERPRINT[__version__]} for {__version__}): if "
        "intended, bump pipeline.__version__ and pyproject's version, add a CHANGELOG.md entry and record the new "
        "fingerprint under the new version (resume keeps results of the same version only)")
