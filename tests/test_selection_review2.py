"""Selection review 2: a single slice is no volume, also with selection.min_slices lowered to 1 (it was selected
and failed NO_LUNG_FOUND)."""

from __future__ import annotations

from pipeline.config import load_config
from pipeline.inventory import build_inventory
from tests.dicom_factory import write_series


def test_a_single_slice_is_not_a_volume_whatever_min_slices(tmp_path):
    write_series(tmp_path / "one", 1)
    inv = build_inventory(tmp_path, load_config(overrides=["selection.min_slices=1"]))
    assert not inv.chosen
    row = inv.stacks.iloc[0]
    assert row["decision"] == "skipped" and row["reason"] == "NOT_A_VOLUME"
    assert "a single slice" in row["notes"]
    # the default still says why in its own terms
    default = build_inventory(tmp_path, load_config()).stacks.iloc[0]
    assert default["reason"] == "TOO_FEW_SLICES"


def test_two_slices_are_a_volume_when_min_slices_allows(tmp_path):
    write_series(tmp_path / "two", 2)
    inv = build_inventory(tmp_path, load_config(overrides=["selection.min_slices=2"]))
    assert len(inv.chosen) == 1
