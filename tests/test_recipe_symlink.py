"""Training recipe: one background folder reached through a symlink and through its target is one source (a
docs walk-through: the model card's recipe command stopped with 'two backgrounds named itkelastix00 are made from
different sources' when ../shared was a symlink: stages 1-3 used the default folder as given, stages 4-6 the
backgrounds file's resolved paths)."""

from __future__ import annotations

import os

import pytest

from pipeline.errors import ConfigError
from segmentation.recipe import _check_case_names
from segmentation.training import Background
from tests.dicom_factory import write_series


def test_symlinked_and_resolved_paths_are_one_background(tmp_path):
    real = tmp_path / "data" / "chest"
    write_series(real / "bg1", 4)
    link = tmp_path / "shared"
    os.symlink(tmp_path / "data", link)
    spacing, teacher = [2.0, 2.0, 2.0], [1.0, 1.0, 1.0]
    _check_case_names([[link / "chest" / "bg1"], [Background.from_folder(real / "bg1")]], spacing, teacher)
    # two different folders under one name are still refused
    write_series(tmp_path / "other" / "bg1", 5)
    with pytest.raises(ConfigError, match="two backgrounds named 'bg1'"):
        _check_case_names([[real / "bg1"], [tmp_path / "other" / "bg1"]], spacing, teacher)
