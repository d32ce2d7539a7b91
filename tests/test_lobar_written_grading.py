"""Lobar rows of zones.csv are graded from their written figures too (scoring/quantify.py
_lobar_scores). tests/test_written_grading.py covers six_zone and zhang900 only: reverting the lobar part of the fix
left every other test passing (a review, 2026-12-07)."""
import numpy as np

from pipeline.config import default_config
from scoring import systems
from scoring.hu_classes import classify_lesions
from scoring.quantify import score_scan
from tests.test_written_grading import _landmarks, box_lungs


def _lobar(n_lesion, ny=20, nx=40):
    z, hu, lungs = box_lungs(ny, nx)
    hu[lungs > 0] = -850
    lobes = np.zeros(lungs.shape, np.uint8)
    h = nx // 2
    for code, (a, b) in {1: (0, h // 3), 2: (h // 3, 2 * h // 3), 3: (2 * h // 3, h),
                         4: (h, h + h // 2), 5: (h + h // 2, nx)}.items():
        lobes[2:38, :, a:b] = code
    rul = lobes == 1
    lesion = np.zeros(lungs.shape, bool)
    lesion[tuple(np.argwhere(rul)[:n_lesion].T)] = True
    hu[lesion] = -400
    c = default_config()
    _, zones, _ = score_scan(hu, lungs, classify_lesions(hu, lesion, c["hu_classes"]), z, 2.5 / 1000,
                             _landmarks(z), c, lobes=lobes)
    return [r for r in zones if r["system"] == "lobar"], c


def test_a_lobe_written_1_ml_reaches_the_1_ml_minimum():
    rows, c = _lobar(399)  # 0.9975 mL, written 1.0
    r = rows[0]
    assert r["status"] == "ok" and r["lesion_ml"] == 1.0 and c["scoring"]["min_involvement_ml"] == 1.0
    assert r["extent_score"] == 1 and r["unit_score"] >= 1


def test_binning_the_lobar_rows_gives_their_scores():
    for n in (1, 397, 399, 400):
        rows, c = _lobar(n)
        for r in rows:
            if r["status"] != "ok":
                continue
            inv = systems.is_involved(r["lesion_ml"], r["involvement_pct"], c["scoring"]["min_involvement_ml"],
                                      c["scoring"]["min_involvement_pct"])
            assert r["extent_score"] == systems.six_zone_score(r["involvement_pct"], inv), (n, r)
            assert r["unit_score"] == systems.lobar_score_5(r["involvement_pct"], inv), (n, r)
