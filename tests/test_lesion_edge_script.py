"""scripts/lesion_edge_hu.py: the lesion voxels below the faint ground glass band (README, "Scoring")."""

from __future__ import annotations

import numpy as np
import pytest

from tests.scripts_loader import load_script


def test_edge_measures_count_lesion_voxels_below_the_band():
    hu = np.array([-900.0, -760.0, -740.0, -600.0, -400.0, -900.0])
    classes = np.array([1, 1, 1, 1, 2, 0], np.uint8)  # the last voxel is no lesion
    m = load_script("lesion_edge_hu").edge_measures(hu, classes, -750.0, 0.5)
    assert m == {"lesion_ml": 2.5, "below_ml": 1.0, "pct_of_lesion": 40.0, "pct_of_faint_ggo": 50.0}


def test_the_sample_s_classical_lesion_edge(sample_run, capsys):
    from tests.conftest import SAMPLE

    assert load_script("lesion_edge_hu").main([str(SAMPLE), str(sample_run)]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    # 66.4 mL of the 581.7 mL lesion reads below -750 HU: half of the faint ground glass (README's +79 % over truth)
    assert [float(v) for v in row[1:]] == [pytest.approx(581.7, abs=0.1), pytest.approx(66.4, abs=0.1),
                                           pytest.approx(11.4, abs=0.1), pytest.approx(50.5, abs=0.1)]
