"""scripts/lobe_map_shares.py: the share of each lung a lobe map made another way leaves in no lobe (the figures
behind LOBES_PARTIAL's 5 % per lung)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from tests.scripts_loader import load_script


def _mask(shape=(40, 30, 40), grow: int = 0) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[5:35, 5 - grow:25 + grow, 3 - grow:18] = 1
    m[5:35, 5 - grow:25 + grow, 22:37 + grow] = 2
    return m


def test_shares_of_a_map_on_another_mask_and_of_shifted_maps(tmp_path, capsys):
    script = load_script("lobe_map_shares")
    scored, other = _mask(), _mask(grow=-1)  # the other mask a voxel smaller on its outer sides
    lobes = script.lobes_by_height(scored)
    assert set(np.unique(lobes)) == {0, 1, 2, 3, 4, 5}
    assert (lobes[30][scored[30] == 1] == 1).all() and (lobes[6][scored[6] == 1] == 3).all()  # upper lobe on top
    assert script.uncovered_pct(scored, lobes) == (0.0, 0.0)
    right, left = script.uncovered_pct(scored, script.lobes_by_height(other))
    assert right == 100 * (30 * 20 * 15 - 30 * 18 * 14) / (30 * 20 * 15) and left > 0
    paths = []
    for name, arr in (("a", scored), ("b", other)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((1.0, 1.0, 2.0))
        paths.append(str(tmp_path / f"{name}.nii.gz"))
        sitk.WriteImage(img, paths[-1])
    assert script.main(paths) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[-2:] == ["0.0", "0.0"] and len(out) == 10
    assert float(out[-1].split()[-1]) > float(out[4].split()[-1])  # 25 mm in z uncovers more than a voxel
