"""zones.csv ``near_edge`` (a stability audit): units whose measures lie at a rule's edge changed score when the
same CT was shifted by a fraction of a voxel (0-900 43 <-> 48 on ricord_covid_419639 from one unit's consolidation
share 0.199 <-> 0.245); the column names those units so that an analyst can see which scores are fragile."""

from __future__ import annotations

import pandas as pd
import pytest

from scoring.systems import near_edges

MIN = dict(min_ml=1.0, min_pct=0.25)


@pytest.mark.parametrize("system, lesion_ml, pct, class_ml, expected", [
    ("zhang900", 1.25, 1.2, {1: 0.0, 2: 1.0, 3: 0.25}, ["minimum", "density_share"]),  # ricord left L2, share 0.2
    ("zhang900", 30.0, 15.9, {1: 0.0, 2: 0.0, 3: 30.0}, ["band"]),  # extent 2 <-> 1 at 15 %
    ("zhang900", 30.0, 13.0, {1: 0.0, 2: 30.0, 3: 0.0}, []),
    ("zhang900", 30.0, 20.0, {1: 0.0, 2: 24.0, 3: 6.0}, ["density_share"]),  # consolidation 0.20 of the lesion
    ("zhang900", 30.0, 20.0, {1: 0.0, 2: 20.0, 3: 10.0}, []),  # 0.33: well past the share
    ("six_zone", 5.0, 0.27, None, ["minimum"]),  # cap001 left upper: 0.270 -> 0.231 %
    ("six_zone", 50.0, 24.5, None, ["band"]),
    ("six_zone", 50.0, 30.0, None, []),
    ("lobar", 10.0, 4.6, None, ["band"]),  # lobar25 1 <-> 2 at 5 %
    ("six_zone", 0.0, 0.0, None, []),  # no lesion: nothing to lose
    ("six_zone", float("nan"), float("nan"), None, []),  # a missing unit
    # a review: a unit far from involvement on one measure cannot reach it (0.85 mL short of 1 mL)
    ("zhang900", 0.15, 0.203, {1: 0.0, 2: 0.15, 3: 0.0}, []),
    ("six_zone", 0.7, 0.2, None, ["minimum"]),  # within reach of both minima
    ("six_zone", 1.2, 3.0, None, ["minimum"]),  # involved, 0.2 mL above the 1 mL minimum
    # a class that cannot change the grade: consolidation 0.30 of the lesion, faint 0.20 (below the graded class)
    ("zhang900", 30.0, 20.0, {1: 6.0, 2: 15.0, 3: 9.0}, []),
    ("zhang900", 30.0, 20.0, {1: 9.0, 2: 6.0, 3: 15.0}, []),
    ("lobar", 10.0, 25.5, None, ["band"]),  # lobar25 2 (<= 25) <-> 3
    ("lobar", 10.0, 75.8, None, ["band"]),  # lobar25 4 (<= 75) <-> 5
    ("lobar", 10.0, 40.0, None, []),
])
def test_near_edges(system, lesion_ml, pct, class_ml, expected):
    assert near_edges(system, lesion_ml, pct, class_ml, **MIN) == expected


def test_predominant_rule_edge_is_a_near_tie():
    assert near_edges("zhang900", 30.0, 20.0, {1: 0.0, 2: 24.0, 3: 6.0}, density_rule="predominant", **MIN) == []
    assert near_edges("zhang900", 30.0, 20.0, {1: 0.0, 2: 15.5, 3: 14.5}, density_rule="predominant",
                      **MIN) == ["density_share"]  # 52 / 48 %: grade 2 or 3


def test_the_column_is_written(sample_run):
    zones = pd.read_csv(sample_run / "zones.csv", dtype=str, keep_default_na=False)
    assert list(zones.columns)[-1] == "near_edge"
    values = {v for cell in zones["near_edge"] for v in cell.split(";") if v}
    assert values <= {"minimum", "band", "density_share"} and values  # the sample has units at an edge
    assert (zones.loc[zones["status"] == "missing", "near_edge"] == "").all()
