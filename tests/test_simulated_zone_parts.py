"""The simulated cohort's zones.csv holds the measured-only systems a run writes (``anteroposterior``,
``peripheral_central``), consistent with its scans.csv as a run's are (scoring.stats.simulate)."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.stats.simulate import PART_SYSTEMS, make_cohort

CLASSES = {"lesion_ml": "lesion_volume_ml", "ggo_ml": "ggo_volume_ml", "consolidation_ml": "consolidation_volume_ml",
           "faint_ggo_ml": "faint_ggo_volume_ml"}


@pytest.fixture(scope="module")
def cohort():
    c = make_cohort(seed=3, n_survivors=12, n_nonsurvivors=6)
    ok = c["scans"][c["scans"].status == "ok"].set_index("scan_id")
    return ok, c["zones"]


@pytest.mark.parametrize("system", sorted(PART_SYSTEMS))
def test_each_lung_splits_into_two_units_that_add_up_to_it(cohort, system):
    scans, zones = cohort
    rows = zones[zones.system == system]
    units = [u for u, _, _ in PART_SYSTEMS[system]]
    assert len(rows) == 4 * len(scans) and set(rows.unit) == set(units)
    assert rows[["extent_score", "density_grade", "unit_score"]].isna().all().all()  # measured, not scored
    assert (rows.status == "ok").all()
    assert (rows.involvement_pct.between(0, 100)).all()
    assert np.allclose(rows.involvement_pct, 100 * rows.lesion_ml / rows.lung_ml, atol=0.01)
    assert np.allclose(rows.lesion_ml, rows.ggo_ml + rows.consolidation_ml, atol=0.011)
    for lung in ("right", "left"):
        side = rows[rows.lung == lung]
        sums = side.groupby("scan_id")[["lung_ml", *CLASSES]].sum()
        assert np.allclose(sums.lung_ml, scans.loc[sums.index, f"lung_volume_ml_{lung}"], atol=0.06)
        for col, scan_col in CLASSES.items():
            assert np.allclose(sums[col], scans.loc[sums.index, f"{scan_col}_{lung}"], atol=0.06), col
        weighted = (side.mean_lung_hu * side.lung_ml).groupby(side.scan_id).sum() / sums.lung_ml
        assert np.allclose(weighted, scans.loc[sums.index, f"mean_lung_hu_{lung}"], atol=0.15)
    assert scans.lesion_volume_ml.max() > 100  # the sums above are not 0 = 0


def test_the_lesion_is_posterior_and_peripheral(cohort):
    _, zones = cohort
    lesion = zones[zones.system.isin(list(PART_SYSTEMS))].groupby(["system", "unit"]).lesion_ml.sum()
    assert lesion["anteroposterior", "posterior"] > 2 * lesion["anteroposterior", "anterior"]
    assert lesion["peripheral_central", "peripheral"] > 2 * lesion["peripheral_central", "central"]
    # a unit never holds more lesion than its volume, even where a lung is nearly all lesion
    rows = zones[zones.system.isin(list(PART_SYSTEMS))]
    assert (rows.lesion_ml <= rows.lung_ml + 0.01).all()


def test_a_lung_nearly_all_lesion_fills_both_units_without_overflow():
    from scoring.stats.simulate import _part_rows

    totals = {"lesion": 950.0, "ggo": 400.0, "cons": 550.0, "faint": 100.0, "high": 550.0}
    rows = _part_rows("s", "right", 1000.0, totals)
    for system in PART_SYSTEMS:
        units = [r for r in rows if r["system"] == system]
        assert sum(r["lesion_ml"] for r in units) == pytest.approx(950.0, abs=0.02)
        assert all(r["lesion_ml"] <= r["lung_ml"] for r in units), units
    assert _part_rows("s", "left", 800.0, dict.fromkeys(totals, 0.0))[0]["involvement_pct"] == 0.0
