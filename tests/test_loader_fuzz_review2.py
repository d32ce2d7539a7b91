"""Crashes found by random runs of tests/test_loader_fuzz_review.py (session 22), minimised."""

from __future__ import annotations

import pytest

from pipeline.loading import load_series
from tests.dicom_factory import edit_file, write_series
from tests.test_loader_fuzz_review import CFG, SIZE


@pytest.mark.parametrize("thickness", [-1.0, float("1e309")])
def test_one_slice_with_a_negative_or_absurd_thickness_loads_with_a_nominal_spacing(tmp_path, thickness):
    """Minimised from test_fuzz_inventory_folder: a slice given its own SeriesInstanceUID and SliceThickness -1
    made a one-slice stack whose z spacing was -1; SimpleITK refused it with a raw RuntimeError ("Negative spacing
    is not supported") instead of a volume or a ctscore error."""
    (f,) = write_series(tmp_path, 1, size=SIZE)
    edit_file(f, SliceThickness=thickness)
    vol = load_series([f], CFG)
    assert vol.image.GetSpacing()[2] == 1.0
