"""LUNG_NOT_AERATED (a radiologist's audit of unusual anatomy): a hemithorax filled with fluid or soft tissue taken
as lung by the network (a pneumonectomy scored six-zone 9 with no flag) is flagged; the side stays scored (a white
lung is lung), and an aerated lung is not flagged."""

from __future__ import annotations

import numpy as np

from scoring.quantify import AERATED_MIN_SHARE, score_scan
from tests.test_continuous_measures import VML, case
from tests.test_zones import LEVELS, Z, cfg, lms


def flags_of(hu, lungs, classes):
    return score_scan(hu, lungs, classes, Z, VML, lms(**LEVELS), cfg())[2]


def test_an_airless_side_is_flagged_and_still_scored():
    hu, lungs, classes = case()
    left = lungs == 2
    hu[left] = 30.0  # a filled hemithorax: soft tissue throughout
    classes[left] = 3
    row, _, flags = score_scan(hu, lungs, classes, Z, VML, lms(**LEVELS), cfg())
    assert "LUNG_NOT_AERATED:left" in flags and "LUNG_NOT_AERATED:right" not in flags
    assert "LUNG_NOT_FOUND:left" not in flags and row["six_zone_total"] > 0


def test_aerated_lungs_and_dense_disease_above_the_share_are_not_flagged():
    hu, lungs, classes = case()
    assert not [f for f in flags_of(hu, lungs, classes) if f.startswith("LUNG_NOT_AERATED")]
    # a lung with dense disease but still more air than the share: not flagged
    left = np.argwhere(lungs == 2)
    dense = left[: int(len(left) * (1 - 2 * AERATED_MIN_SHARE))]
    hu[tuple(dense.T)] = 20.0
    classes[tuple(dense.T)] = 3
    assert not [f for f in flags_of(hu, lungs, classes) if f.startswith("LUNG_NOT_AERATED")]
