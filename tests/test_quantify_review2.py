"""Quantification and score systems, a second independent review: inputs that were scored silently wrong
(a missing percentage graded as the worst grade, a stack whose z falls with the index, a landmark level that is
NaN, lesion codes outside the classes, a z list that does not match the volume)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scoring import systems
from scoring.quantify import edge_cut, score_scan
from tests.test_zones import LEVELS, Z, cfg, lms, phantom, rows


@pytest.mark.parametrize("fn", [systems.six_zone_score, systems.zhang_extent, systems.lobar_score_5,
                                systems.mosmed_category])
@pytest.mark.parametrize("pct", [math.nan, math.inf])
def test_a_missing_percentage_is_refused_not_graded(fn, pct):
    """A missing unit's percentage (NaN, e.g. a zones.csv row with status=missing) scored six-zone 4, lobar 5 and
    MosMed CT-4 (NaN fails every '<' test and fell through to the top grade); SCORING.md: missing, never a score."""
    with pytest.raises(ValueError, match="percent"):
        fn(pct)
    if fn is not systems.mosmed_category:
        for involved in (True, False):
            with pytest.raises(ValueError, match="percent"):
                fn(pct, involved)
    assert fn(0.0) in (0, "CT-0") and fn(100.0) in (4, 10, 5, "CT-4")


def units(zones, system, lung="right"):
    return {r["unit"]: {k: v for k, v in r.items()} for r in zones if r["system"] == system and r["lung"] == lung}


def same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_a_stack_whose_z_falls_with_the_index_is_scored_like_the_sorted_one():
    """edge_cut took the last slice for the top: with z falling with the index (slice 0 the most cranial) a lung
    cut off at the apex was reported apex_covered and its upper zone scored, while the complete base made the
    lower zones missing."""
    hu, lungs, classes = phantom({12: 5, 4: 3}, cut_top=True)
    row, zones, flags = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg())
    assert row["apex_covered"] is False and row["base_covered"] is True
    z_desc = Z[::-1].copy()
    assert edge_cut(lungs[::-1] == 1, z_desc, 0.001) == edge_cut(lungs == 1, Z, 0.001) == (True, False)
    row_d, zones_d, flags_d = score_scan(hu[::-1], lungs[::-1], classes[::-1], z_desc, 0.001, lms(**LEVELS), cfg())
    assert flags_d == flags
    assert row_d.keys() == row.keys() and all(same(row_d[k], row[k]) for k in row)
    assert len(zones_d) == len(zones)
    for a, b in zip(zones, zones_d):
        assert a.keys() == b.keys() and all(same(a[k], b[k]) for k in a), (a, b)
    assert units(zones_d, "six_zone")["upper"]["status"] == "missing"
    assert units(zones_d, "six_zone")["lower"]["status"] == "ok"


def test_a_nan_landmark_level_is_a_missing_level():
    """A level whose z is NaN (not None) selected no voxel: in zone mode every unit of both lungs scored 0, 'ok'
    (the lesion in L2 lost, total 0) instead of missing."""
    hu, lungs, classes = phantom({13: 10})
    levels = dict(LEVELS, aortic_arch=math.nan)
    row, zones, flags = score_scan(hu, lungs, classes, Z, 0.001, lms(**levels), cfg(mode="zone"))
    zh = rows(zones, "zhang900")
    # zone mode: L2 (its own level missing), L1 and L3 (next to it) are missing, as for a level given as None
    row_none, zones_none, _ = score_scan(hu, lungs, classes, Z, 0.001, lms(**dict(LEVELS, aortic_arch=None)),
                                         cfg(mode="zone"))
    assert {u: r["status"] for u, r in zh.items()} == {u: r["status"] for u, r in rows(zones_none, "zhang900").items()}
    assert zh["L2"]["status"] == "missing" and math.isnan(row["zhang900_total"]) and "ZONES_MISSING" in flags
    # slab mode and the six zones already treated it as missing; an infinite level too
    row, zones, _ = score_scan(hu, lungs, classes, Z, 0.001, lms(**dict(LEVELS, carina=math.inf)), cfg())
    assert math.isnan(row["six_zone_total"]) and rows(zones, "six_zone")["upper"]["status"] == "missing"


def test_lesion_codes_outside_the_classes_are_refused():
    """A lesion voxel with a code other than 1-3 (a 0/255 mask passed as classes) counted as lesion with no class:
    the unit was 100 % involved, extent 10, density 0 and scored 0 ('a lesion but no voxel in any class')."""
    hu, lungs, classes = phantom({11: 10})
    classes[classes > 0] = 255
    with pytest.raises(ValueError, match="classes"):
        score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg())


def test_arrays_and_z_that_do_not_match_the_volume_are_refused():
    """z_mm with one value per slice is required: a longer list was cut silently to the volume (zones and cut-off
    ends read from the wrong z); classes of another shape broadcast."""
    hu, lungs, classes = phantom({12: 5})
    with pytest.raises(ValueError, match="z_mm"):
        score_scan(hu, lungs, classes, np.append(Z, 200.0), 0.001, lms(**LEVELS), cfg())
    with pytest.raises(ValueError, match="classes"):
        score_scan(hu, lungs, classes[12:13], Z, 0.001, lms(**LEVELS), cfg())
    with pytest.raises(ValueError, match="lobes"):
        score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg(), lobes=np.ones((1, 10, 20), np.uint8))
