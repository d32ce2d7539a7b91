"""The score rules of SCORING.md, table by table."""

import pytest

from scoring import systems
from scoring.hu_classes import classify_lesions


@pytest.mark.parametrize(
    "pct, score",
    [(0, 0), (0.01, 1), (24.99, 1), (25, 2), (49.99, 2), (50, 3), (74.99, 3), (75, 4), (100, 4)],
)
def test_six_zone_bands(pct, score):
    assert systems.six_zone_score(pct) == score


def test_six_zone_not_involved_scores_zero():
    assert systems.six_zone_score(30.0, involved=False) == 0


@pytest.mark.parametrize(
    "pct, extent",
    [(0, 0), (0.5, 1), (4.9, 1), (10, 1), (14.9, 1), (15, 2), (24.9, 2), (55, 6), (94.9, 9), (95, 10), (100, 10)],
)
def test_zhang_extent_nearest_ten_percent_at_least_one(pct, extent):
    assert systems.zhang_extent(pct) == extent


@pytest.mark.parametrize("extent, density, score", [(0, 3, 0), (10, 3, 90), (5, 2, 20), (3, 1, 3), (7, 0, 0)])
def test_zhang_unit_score_is_extent_times_density_squared(extent, density, score):
    assert systems.zhang_unit_score(extent, density) == score


def test_zhang_unit_score_range_checked():
    with pytest.raises(ValueError):
        systems.zhang_unit_score(11, 1)
    with pytest.raises(ValueError):
        systems.zhang_unit_score(1, 4)


@pytest.mark.parametrize(
    "volumes, rule, share, grade",
    [
        ({1: 0, 2: 0, 3: 0}, "densest", 0.2, 0),
        ({1: 5, 2: 90, 3: 5}, "predominant", 0.2, 2),
        ({1: 5, 2: 70, 3: 25}, "densest", 0.2, 3),
        ({1: 5, 2: 80, 3: 15}, "densest", 0.2, 2),
        ({1: 60, 2: 0, 3: 40}, "predominant", 0.2, 1),
        ({1: 50, 2: 50, 3: 0}, "predominant", 0.2, 2),  # tie goes to the denser class
        ({1: 100, 2: 0, 3: 0}, "densest", 0.2, 1),
    ],
)
def test_density_grade_rules(volumes, rule, share, grade):
    assert systems.density_grade(volumes, rule, share) == grade


@pytest.mark.parametrize(
    "pct, cat", [(0, "CT-0"), (0.1, "CT-1"), (24.9, "CT-1"), (25, "CT-2"), (50, "CT-3"), (75, "CT-4"), (99, "CT-4")]
)
def test_mosmed_category(pct, cat):
    assert systems.mosmed_category(pct) == cat


@pytest.mark.parametrize("pct, score", [(0, 0), (4.9, 1), (5, 2), (25, 2), (26, 3), (49, 3), (50, 4), (75, 4), (76, 5)])
def test_lobar_0_to_5(pct, score):
    assert systems.lobar_score_5(pct) == score


def test_involvement_needs_both_minima():
    assert systems.is_involved(2.0, 1.0, min_ml=1.0, min_pct=0.25)
    assert not systems.is_involved(0.5, 1.0, min_ml=1.0, min_pct=0.25)
    assert not systems.is_involved(2.0, 0.1, min_ml=1.0, min_pct=0.25)


def test_hu_classes_from_configured_bands():
    import numpy as np

    bands = {"faint_ggo": [-750, -550], "ggo": [-550, -300], "consolidation": [-300, 100]}
    hu = np.array([-900, -700, -550, -301, -300, 40, 300, -700], np.float32)
    lesion = np.array([1, 1, 1, 1, 1, 1, 1, 0], bool)
    assert classify_lesions(hu, lesion, bands).tolist() == [1, 1, 2, 2, 3, 3, 3, 0]
