"""scripts/apex_soft_tissue.py: what the network segmenter's apex step (airless lung-mask voxels far from aerated lung
in the top of each lung) takes out of a run's masks."""

from __future__ import annotations

import numpy as np

from tests.scripts_loader import load_script


def _chest():
    """A right lung 40 slices high (z 0-78 mm, 2 mm slices, 1 mm pixels): aerated, with an airless block beside it
    (10-20 mm away) in its top 4 slices, an airless block as far away 30 mm below its top, and a 2 mm airless rim."""
    z = np.arange(41) * 2.0
    lungs = np.zeros((41, 60, 60), np.uint8)  # (the top slice empty: the scan holds the apex)
    hu = np.full(lungs.shape, -850.0, np.float32)
    lungs[:40, 10:30, 10:30] = 1
    hu[:, 10:30, 28:30] = -100.0  # rim within 2 mm of aerated lung: partial volume, kept
    lungs[36:40, 10:30, 40:50] = 1  # soft tissue beside the apex, 10-19 mm from the aerated lung
    hu[36:40, 10:30, 40:50] = 40.0
    lungs[22:26, 10:30, 40:50] = 1  # the same lower down (28-36 mm below the top): not the apex
    hu[22:26, 10:30, 40:50] = 40.0
    lesions = np.zeros(lungs.shape, np.uint8)
    lesions[36:, 10:20, 40:50] = 3  # half the apical block called consolidation
    return lungs, lesions, hu, z


def test_the_block_beside_the_apex_is_counted_and_nothing_else():
    script = load_script("apex_soft_tissue")
    lungs, lesions, hu, z = _chest()
    got = script.apex_soft_tissue(lungs, lesions, hu, z, (1.0, 1.0), top_mm=20, far_mm=5)
    voxel_ml = 2.0 / 1000
    assert got == {"right": (round(4 * 20 * 10 * voxel_ml, 2), round(4 * 10 * 10 * voxel_ml, 2))}
    # within 40 mm of the top the lower block is a candidate too, but thick airless tissue reaching 25 mm below the
    # top is consolidation filling the apex to the step, and stays; beyond 25 mm of aerated lung nothing goes
    assert script.apex_soft_tissue(lungs, lesions, hu, z, (1.0, 1.0), top_mm=40)["right"][0] == round(
        4 * 200 * voxel_ml, 2)
    # the slices in either order: the same
    assert script.apex_soft_tissue(lungs[::-1], lesions[::-1], hu[::-1], z[::-1], (1.0, 1.0)) == got
    assert (lungs[36:40, 10:30, 40:50] == 1).all()  # the arrays given are not changed
    assert script.apex_soft_tissue(lungs, lesions, hu, z, (1.0, 1.0), far_mm=25) == {"right": (0.0, 0.0)}


def test_a_slice_without_aerated_lung_and_a_missing_lung_are_left_alone():
    script = load_script("apex_soft_tissue")
    lungs, lesions, hu, z = _chest()
    hu[39][lungs[39] == 1] = 40.0  # the top slice airless: the apex trim's, not this rule's
    got = script.apex_soft_tissue(lungs, lesions, hu, z, (1.0, 1.0))
    assert got["right"][0] == round(3 * 200 * 2.0 / 1000, 2) and "left" not in got


def test_a_folder_that_is_no_output_is_a_clear_error(tmp_path, capsys):
    script = load_script("apex_soft_tissue")
    assert script.main([str(tmp_path), str(tmp_path)]) == 2
    assert "holds no scans.csv" in capsys.readouterr().err
    (tmp_path / "scans.csv").write_text("scan_id,status\n")
    assert script.main([str(tmp_path), str(tmp_path / "absent")]) == 2
    assert "no such input folder" in capsys.readouterr().err
