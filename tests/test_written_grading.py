"""Zone scores are graded from the involvement % and lesion mL as zones.csv writes them (3 and 2 decimals), as MosMed
is from scans.csv's percent_opacity: binning the table's own figures gives the table's scores (an audit, 2026-12-07:
graded unrounded, a zone of 24.9996 % was written 25.0 beside six-zone 1, and 0.9975 mL was written 1.0 beside 0)."""
import copy

import numpy as np
import pytest

from pipeline.config import default_config
from scoring import systems
from scoring.hu_classes import classify_lesions
from scoring.landmarks import Landmark
from scoring.quantify import score_scan, written_involvement


def _landmarks(z):
    levels = {"carina": 25, "ipv": 12, "suprasternal_notch": 35, "aortic_arch": 31, "bronchus_intermedius": 20,
              "dome_right": 5, "dome_left": 5}
    out = {n: Landmark(n, float(z[k]), "detected", "high") for n, k in levels.items()}
    for side in ("right", "left"):
        for end in ("apex", "base"):
            out[f"{end}_{side}"] = Landmark(f"{end}_{side}", None, "detected", "high")
    return out


def box_lungs(ny, nx):
    """(z, HU, lungs) of two box lungs, right then left along x, in 40 slices of 2.5 mm (slices 2-37)."""
    nz = 40
    z = -100 + 2.5 * np.arange(nz)
    hu = np.full((nz, ny, nx), 40.0, np.float32)
    lungs = np.zeros((nz, ny, nx), np.uint8)
    lungs[2:38, :, : nx // 2] = 1
    lungs[2:38, :, nx // 2:] = 2
    return z, hu, lungs


def _score(ny, nx, n_lesion, cfg=None):
    """Two box lungs (:func:`box_lungs`, 2.5 uL voxels); the first ``n_lesion`` voxels of the right upper zone
    (above the carina) are ground glass, or a count giving just under 25 % when ``n_lesion`` is None."""
    z, hu, lungs = box_lungs(ny, nx)
    lungs[30, 0, 0:3] = 0  # a zone of 4k - 3 voxels: (k - 1) of them is 24.9996 %
    hu[lungs > 0] = -850
    upper = (lungs == 1) & (z > z[25])[:, None, None]
    if n_lesion is None:
        n_lesion = (int(upper.sum()) - 1) // 4
    lesion = np.zeros(lungs.shape, bool)
    lesion[tuple(np.argwhere(upper)[:n_lesion].T)] = True
    hu[lesion] = -400
    c = cfg or default_config()
    row, zones, _ = score_scan(hu, lungs, classify_lesions(hu, lesion, c["hu_classes"]), z, 2.5 / 1000,
                               _landmarks(z), c)
    return row, zones, c


def _rebinned(r, c):
    inv = systems.is_involved(r["lesion_ml"], r["involvement_pct"], c["scoring"]["min_involvement_ml"],
                              c["scoring"]["min_involvement_pct"])
    if r["system"] == "six_zone":
        return systems.six_zone_score(r["involvement_pct"], inv)
    return systems.zhang_extent(r["involvement_pct"], inv)


def test_a_zone_written_25_percent_scores_as_25_percent():
    _, zones, c = _score(80, 120, None)
    r = next(r for r in zones if (r["system"], r["lung"], r["unit"]) == ("six_zone", "right", "upper"))
    assert r["involvement_pct"] == 25.0  # 24.999566 % exactly
    assert r["unit_score"] == 2 and "band" in r["near_edge"]


def test_a_lesion_written_1_ml_reaches_the_1_ml_minimum():
    _, zones, c = _score(20, 40, 399)  # 0.9975 mL
    r = next(r for r in zones if (r["system"], r["lung"], r["unit"]) == ("six_zone", "right", "upper"))
    assert r["lesion_ml"] == 1.0 and c["scoring"]["min_involvement_ml"] == 1.0
    assert r["unit_score"] == 1 and "minimum" in r["near_edge"]
    _, zones, _ = _score(20, 40, 397)  # 0.9925 mL, written 0.99: under the minimum
    r = next(r for r in zones if (r["system"], r["lung"], r["unit"]) == ("six_zone", "right", "upper"))
    assert r["lesion_ml"] == 0.99 and r["unit_score"] == 0


@pytest.mark.parametrize("n_lesion", [None, 1, 399, 400, 4000])
def test_binning_zones_csv_gives_its_scores(n_lesion):
    c = copy.deepcopy(default_config())
    ny, nx = (80, 120) if n_lesion is None else (20, 40)
    row, zones, c = _score(ny, nx, n_lesion, c)
    checked = 0
    for r in zones:
        if r["status"] != "ok" or r["system"] not in ("six_zone", "zhang900"):
            continue
        assert _rebinned(r, c) == r["extent_score"], r
        checked += 1
    assert checked >= 12  # six zones and the zhang900 slabs seen
    assert row["mosmed_category"] == systems.mosmed_category(
        row["percent_opacity"] if row["lesion_volume_ml"] >= c["scoring"]["min_involvement_ml"] else 0.0)


def test_written_involvement_keeps_nan_for_a_unit_without_lung():
    pct, les = written_involvement(0.0, 0.0)
    assert np.isnan(pct) and les == 0.0
    assert written_involvement(0.9975, 3.99) == (25.0, 1.0)
