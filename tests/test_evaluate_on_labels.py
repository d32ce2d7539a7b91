"""scripts/evaluate_on_labels.py: Dice of one or more models against the user's own labelled held-out cases, read
from a ``--backgrounds-file``-style list with the label conventions training uses."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")
pytest.importorskip("torch")
pytest.importorskip("monai")

from tests.scripts_loader import load_script  # noqa: E402
from tests.test_training_backgrounds import toy_volume, write_list  # noqa: E402


def test_case_metrics_dice_per_side_lesion_and_volume_difference():
    ev = load_script("evaluate_on_labels")
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[:, :, :5], ref[:, :, 5:] = 1, 2
    les = np.zeros(ref.shape, bool)
    les[2:4, 2:4, 2:4] = True  # 8 voxels
    pred = ref.copy()
    pred[:, :, 4] = 2  # one column of the right lung called left
    pred_les = np.zeros(ref.shape, bool)
    pred_les[2:4, 2:4, 2:3] = True  # half of it
    m = ev.case_metrics(ref, les, pred, pred_les, voxel_ml=0.5)
    assert m["lung_dice_right"] == pytest.approx(2 * 400 / 900)
    assert m["lung_dice_left"] == pytest.approx(2 * 500 / 1100)
    assert m["lesion_dice"] == pytest.approx(2 * 4 / 12) and m["lesion_ml_difference"] == pytest.approx(-2.0)
    no_ref = ev.case_metrics(ref, None, pred, pred_les, voxel_ml=0.5)
    assert math.isnan(no_ref["lesion_dice"]) and no_ref["lesion_ml"] == 2.0


def test_models_compared_on_a_labelled_case_with_mapped_label_values(tmp_path, capsys):
    """A NIfTI case with a bit-coded label map (right 12/524/780, left 9/777) and a lesion mask, two tiny models:
    a table per model, the paired difference, the JSON; the reference is read with the list's value mapping (a
    case read as 1 right / 2 left would have no lungs at all)."""
    from segmentation.monai_segmenter import MonaiSegmenter
    from tests.test_segmentation_monai import tiny_weights

    ev = load_script("evaluate_on_labels")
    ct, labels = toy_volume(tmp_path / "d")
    img = sitk.ReadImage(str(ct))
    a = sitk.GetArrayFromImage(img)
    les = np.zeros(a.shape, np.uint8)
    les[6:10, 10:16, 6:12] = 1  # in the right lung, made denser
    a[les > 0] = -100
    new = sitk.GetImageFromArray(a)
    new.CopyInformation(img)
    sitk.WriteImage(new, str(ct))
    les_img = sitk.GetImageFromArray(les)
    les_img.CopyInformation(img)
    sitk.WriteImage(les_img, str(tmp_path / "d" / "lesions.nii.gz"))
    lst = write_list(tmp_path / "heldout.yaml", "backgrounds:\n  - name: case1\n    image: d/ct.nii.gz\n"
                     "    lungs: d/labels.nii.gz\n    lesions: d/lesions.nii.gz\n"
                     "    right: [12, 524, 780]\n    left: [9, 777]\n")
    m1 = tiny_weights(tmp_path / "m1")
    m2 = tiny_weights(tmp_path / "m2")
    from safetensors.torch import load_file, save_file

    from segmentation.training import write_manifest

    w = load_file(str(m2 / "model.safetensors"))
    save_file({k: v * 1.5 for k, v in w.items()}, str(m2 / "model.safetensors"))  # another model
    write_manifest(m2)
    out = tmp_path / "eval.json"
    rc = ev.main([str(lst), "--model", str(m1), "--model", str(m2), "--spacing", "3", "3", "3", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    ids = [MonaiSegmenter(m, device="cpu").model_id for m in (m1, m2)]
    assert ids[0] in text and ids[1] in text and "paired difference" in text and "median" in text
    res = json.loads(out.read_text())
    assert [m["model_id"] for m in res["models"]] == ids
    rows = [m["cases"][0] for m in res["models"]]
    assert all(r["case"] == "case1" for r in rows)
    for r in rows:
        assert 0.0 <= r["lung_dice_right"] <= 1.0 and 0.0 <= r["lesion_dice"] <= 1.0
        # the reference lesion (4 x 6 x 6 voxels of 27 uL) was read with the list's lesion mask
        assert r["reference_lesion_ml"] == pytest.approx(144 * 0.027, rel=0.3)
    p = res["paired"][0]["cases"][0]
    assert p["lung_dice_right"] == pytest.approx(rows[1]["lung_dice_right"] - rows[0]["lung_dice_right"])
    # a case without lung labels is refused by name, before any model runs
    write_list(tmp_path / "bad.yaml", "backgrounds:\n  - name: nolabels\n    image: d/ct.nii.gz\n")
    assert ev.main([str(tmp_path / "bad.yaml"), "--model", str(m1)]) == 2
    assert "nolabels" in capsys.readouterr().err
