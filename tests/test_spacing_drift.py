"""Slices whose steps each pass the uniformity test but drift off the stacking grid are resampled, not misplaced."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.loading import load_series
from tests.dicom_factory import write_series


def _positions(first_steps: float, then_steps: float, n_each: int = 20) -> list[float]:
    steps = [first_steps] * n_each + [then_steps] * n_each
    return list(-100.0 + np.concatenate([[0.0], np.cumsum(steps)]))


def test_a_run_of_longer_steps_is_resampled_so_the_last_slice_stays_in_place(tmp_path):
    # 20 steps of 2.0 mm, then 20 of 2.15 mm: each within 10 % of the median step (2.075 mm), but the middle slice
    # lies 1.5 mm off the grid of median steps it was stacked on
    z = _positions(2.0, 2.15)
    vol = load_series(write_series(tmp_path / "s", positions=z, size=24))
    assert "NON_UNIFORM_SPACING_RESAMPLED" in vol.flags
    img = vol.image
    ends = [img.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in (0, img.GetSize()[2] - 1)]
    assert sorted(ends) == pytest.approx([z[0], z[-1]], abs=0.05)  # the series' own extent, first to last slice


def test_steps_that_only_jitter_are_stacked_as_they_are(tmp_path):
    # rounding noise (+-0.004 mm) and a single slightly long step do not trigger a resampling
    rng = np.random.default_rng(1)
    z = list(-100.0 + 2.5 * np.arange(40) + rng.uniform(-0.004, 0.004, 40))
    z[20:] = [v + 0.1 for v in z[20:]]
    vol = load_series(write_series(tmp_path / "s", positions=z, size=24))
    assert "NON_UNIFORM_SPACING_RESAMPLED" not in vol.flags
    assert vol.image.GetSpacing()[2] == pytest.approx(2.5, abs=0.01)
    assert sitk.GetArrayViewFromImage(vol.image).shape[0] == 40
