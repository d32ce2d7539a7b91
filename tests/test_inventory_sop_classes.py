"""Inventory: secondary capture is its own SOP classes (…1.1.7 and …1.1.7.N), not every class that starts alike."""

from __future__ import annotations

import pytest

from pipeline.inventory import build_inventory, read_file
from tests.dicom_factory import edit_file, write_series


@pytest.mark.parametrize("uid", ["1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.2", "1.2.840.10008.5.1.4.1.1.7.4"])
def test_secondary_capture_classes(tmp_path, uid):
    (p,) = write_series(tmp_path / "sc", n_slices=1)
    edit_file(p, SOPClassUID=uid, Modality="OT")
    rec = read_file(p)
    assert (rec.status, rec.code) == ("skipped", "SECONDARY_CAPTURE")


def test_visible_light_photograph_is_not_called_secondary_capture(tmp_path):
    # VL Photographic Image Storage, 1.2.840.10008.5.1.4.1.1.77.1.4: starts with the secondary-capture class's digits
    (p,) = write_series(tmp_path / "photo", n_slices=1)
    edit_file(p, SOPClassUID="1.2.840.10008.5.1.4.1.1.77.1.4", Modality="XC")
    assert read_file(p).code != "SECONDARY_CAPTURE"
    write_series(tmp_path / "ct", n_slices=12)
    inv = build_inventory(tmp_path)
    photo = [c for c in inv.candidates if c.header["modality"] == "XC"]
    assert len(photo) == 1 and not photo[0].eligible and photo[0].reason == "NOT_CT"
    assert [c.header["modality"] for c in inv.chosen] == ["CT"]
