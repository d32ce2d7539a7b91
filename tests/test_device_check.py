"""scripts/device_check.py: the network's masks on two devices compared, from a saved working-grid volume (what
the GPU machine runs without the DICOM loader). Without a GPU, "cpu" against "auto" (= cpu) must agree exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.scripts_loader import load_script
from tests.test_segmentation_monai import phantom

dc = load_script("device_check")


def test_dice_of_masks():
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    assert dc.dice(a, b) == 1.0  # both empty
    a[0, 0, :2] = True
    b[0, 0, 1:3] = True
    assert dc.dice(a, b) == pytest.approx(0.5)


def test_saved_volume_round_trip_and_bad_files(tmp_path):
    hu, spacing = phantom()
    path = tmp_path / "v.npz"
    dc.save_npz(str(path), hu, spacing)
    back, sp = dc.load_npz(str(path))
    assert back.dtype == np.int16 and np.array_equal(back, hu.astype(np.int16)) and sp == spacing
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically: nothing left beside it
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SystemExit, match="bad.npz: not a volume written by --save-npz"):
        dc.load_npz(str(bad))
    np.savez(tmp_path / "flat.npz", hu=np.zeros((3, 3)), spacing=np.ones(3))
    with pytest.raises(SystemExit, match="flat.npz: expected a 3-D 'hu' array"):
        dc.load_npz(str(tmp_path / "flat.npz"))


def test_options_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        dc.main(["x.npz", "--npz", "--devices", "cpu", "cpu"])
    assert "name each device once" in capsys.readouterr().err
    assert dc.main([str(tmp_path / "missing.npz"), "--npz", "--devices", "cpu"]) == 2
    assert "missing.npz: no such file" in capsys.readouterr().err
    hu, spacing = phantom()
    dc.save_npz(str(tmp_path / "v.npz"), hu, spacing)
    assert dc.main([str(tmp_path / "v.npz"), "--npz", "--devices", "tpu"]) == 2
    assert "device tpu" in capsys.readouterr().err


@pytest.mark.slow
def test_two_devices_compared(tmp_path, capsys):
    hu = np.full((40, 64, 64), 40, np.int16)  # a small chest: two air boxes in soft tissue, body all round
    hu[8:32, 12:52, 6:28] = -850
    hu[8:32, 12:52, 36:58] = -850
    hu[14:20, 24:32, 12:20] = -50  # a dense focus in the right box
    path = tmp_path / "box.npz"
    dc.save_npz(str(path), hu, (2.5, 2.5, 2.5))
    out = tmp_path / "dc.json"
    rc = dc.main([str(path), "--npz", "--devices", "cpu", "auto", "--runs", "2", "--json", str(out)])
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    rec = res["auto"]["inputs"]["box"]
    if res["auto"]["device"] == "cpu":  # no GPU here: the same device twice must agree to the voxel
        assert rc == 0
        agree = rec["agreement_with_cpu"]
        assert agree["right_dice"] == agree["left_dice"] == agree["lesion_dice"] == 1.0
        assert agree["lesion_ml_diff"] == 0.0
    assert rec["repeat_identical"] is True and rec["runs"] == 2 and rec["shape"] == [40, 64, 64]
    assert rec["median_s"] > 0 and rec["right_ml"] > 0 and rec["left_ml"] > 0
    assert "vs cpu: Dice right" in text and "repeats identical: True" in text
