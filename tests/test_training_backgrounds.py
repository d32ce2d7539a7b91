"""Training backgrounds from image files with their own label maps (``--backgrounds-file``, issue 4).

Tiny synthetic NIfTI / NRRD volumes written here; the shipped list (configs/training/backgrounds.yaml)
is checked against ../shared/data when it is there.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

from segmentation.training import Background, prepare_case, read_backgrounds_file  # noqa: E402
from tests.toy_cases import toy_training_dirs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CTSCORE_TEST_DATA", REPO.parent / "shared" / "data"))


def toy_volume(folder: Path, ext: str = ".nii.gz") -> tuple[Path, Path]:
    """A 3 mm chest-like volume (two air boxes in soft tissue) and a bit-coded uint16 label map of the
    CIP kind: right lung 12 / 524 (airway in lung) / 780 (vessel), left 9 / 777, trachea 512."""
    folder.mkdir(parents=True, exist_ok=True)
    hu = np.full((20, 30, 40), 40, np.int16)
    lab = np.zeros(hu.shape, np.uint16)
    hu[3:17, 6:24, 4:18], lab[3:17, 6:24, 4:18] = -850, 12   # low x = patient right (LPS)
    hu[3:17, 6:24, 22:36], lab[3:17, 6:24, 22:36] = -850, 9
    lab[8:10, 10:12, 8:10] = 780
    lab[12:14, 10:12, 8:10] = 524
    lab[8:10, 10:12, 28:30] = 777
    lab[15:20, 14:16, 19:21] = 512
    paths = []
    for name, arr in (("ct", hu), ("labels", lab)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((3.0, 3.0, 3.0))
        img.SetOrigin((-60.0, -45.0, 10.0))
        p = folder / f"{name}{ext}"
        sitk.WriteImage(img, str(p))
        paths.append(p)
    return paths[0], paths[1]


def write_list(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_image_file_with_bit_coded_labels_is_cached_on_the_model_grid(tmp_path):
    """Label values above 255 survive (mapped before resampling); right stays at low x (patient right)."""
    ct, labels = toy_volume(tmp_path / "d", ".nrrd")
    lst = write_list(tmp_path / "bg.yaml", "backgrounds:\n  - name: toy\n    image: d/ct.nrrd\n"
                     "    lungs: d/labels.nrrd\n    right: [12, 524, 780]\n    left: [9, 521, 777]\n")
    (bg,) = read_backgrounds_file(lst)
    assert bg == Background("toy", ct.resolve(), labels.resolve(), None, (12, 524, 780), (9, 521, 777))
    case = prepare_case(bg, (2.0, 2.0, 2.0))
    lungs, img = case["lungs"], case["image"]
    assert set(np.unique(lungs)) == {0, 1, 2}
    xr, xl = (np.nonzero(lungs == k)[2].mean() for k in (1, 2))
    assert xr < xl
    # 14 x 18 x 14 voxels of 27 mL/1000 per lung in the source: volume kept within resampling error
    for k in (1, 2):
        ml = (lungs == k).sum() * 8 / 1000
        assert ml == pytest.approx(14 * 18 * 14 * 27 / 1000, rel=0.15)
    assert img[lungs > 0].mean() < -700  # the labels sit on the air
    assert (case["spacing"] == 2.0).all()


def test_folder_entries_and_relative_paths(tmp_path):
    """A plain string is a DICOM folder; its lungs.nii.gz (if any) is picked up; paths are relative to the file."""
    (tmp_path / "scans" / "a").mkdir(parents=True)
    (tmp_path / "scans" / "b" / "labels").mkdir(parents=True)
    (tmp_path / "scans" / "b" / "labels" / "lungs.nii.gz").write_bytes(b"")
    (tmp_path / "cfg").mkdir()
    lst = write_list(tmp_path / "cfg" / "bg.yaml", "backgrounds:\n  - ../scans/a\n  - ../scans/b\n")
    a, b = read_backgrounds_file(lst)
    assert a.name == "a" and a.image == (tmp_path / "scans" / "a").resolve() and a.lungs is None
    assert b.lungs == tmp_path / "scans" / "b" / "labels" / "lungs.nii.gz"


@pytest.mark.parametrize("body, problem", [
    ("backgrounds: []\n", "non-empty 'backgrounds:' list"),
    ("something: 1\n", "non-empty 'backgrounds:' list"),
    ("backgrounds:\n  - {lungs: d/labels.nii.gz}\n", "mapping with 'image'"),
    ("backgrounds:\n  - {image: d/ct.nii.gz, colour: red}\n", "unknown key(s) ['colour']"),
    ("backgrounds:\n  - {image: d/nope.nii.gz}\n", "image not found"),
    ("backgrounds:\n  - {image: d/ct.nii.gz, lungs: d/nope.nii.gz}\n", "lungs not found"),
    ("backgrounds:\n  - {image: d/ct.nii.gz, lungs: d/labels.nii.gz, right: [1, 2], left: [2]}\n",
     "in both 'right' and 'left'"),
    ("backgrounds:\n  - {image: d/ct.nii.gz, right: one}\n", "lists of label values"),
    ("backgrounds:\n  - d/ct.nii.gz\n  - {image: d/ct.nii.gz}\n", "names must be unique"),
    ("backgrounds: [\n", "cannot read"),
    ("backgrounds:\n  - {image: d/ct.nii.gz, lesions: d/labels.nii.gz}\n", "'lesions' needs 'lungs' too"),
])
def test_malformed_lists_name_the_file_and_the_problem(tmp_path, body, problem):
    toy_volume(tmp_path / "d")
    lst = write_list(tmp_path / "bg.yaml", body)
    with pytest.raises(ValueError) as exc:
        read_backgrounds_file(lst)
    assert str(lst) in str(exc.value) and problem in str(exc.value)


def test_label_map_without_the_listed_values_is_refused(tmp_path):
    _, labels = toy_volume(tmp_path / "d")
    bg = Background("toy", tmp_path / "d" / "ct.nii.gz", labels, None, (1,), (2,))
    with pytest.raises(ValueError, match="no voxel carries"):
        prepare_case(bg, (2.0, 2.0, 2.0))


def test_train_command_backgrounds_file(tmp_path):
    """``ctscore train --backgrounds-file`` builds the cache from image files; errors are usage errors."""
    from pipeline.cli import main
    from pipeline.errors import EXIT_USAGE

    toy_volume(tmp_path / "d")
    lst = write_list(tmp_path / "bg.yaml", "backgrounds:\n  - name: toy\n    image: d/ct.nii.gz\n"
                     "    lungs: d/labels.nii.gz\n    right: [12, 524, 780]\n    left: [9, 777]\n")
    cache = tmp_path / "cache"
    assert main(["train", "--backgrounds-file", str(lst), "--cache", str(cache), "--prepare-only"]) == 0
    with np.load(cache / "toy.npz") as z:
        assert set(np.unique(z["lungs"])) == {0, 1, 2}
    assert main(["train", "--backgrounds-file", str(lst), "--data", str(tmp_path), "--cache", str(cache),
                 "--prepare-only"]) == EXIT_USAGE
    bad = write_list(tmp_path / "bad.yaml", "backgrounds:\n  - {image: d/missing.nii.gz}\n")
    assert main(["train", "--backgrounds-file", str(bad), "--cache", str(cache), "--prepare-only"]) == EXIT_USAGE


def test_shipped_background_list():
    """configs/training/backgrounds.yaml resolves against ../shared/data: the three clean chest scans plus
    the CIP chest with its own labels, never the held-out normal001."""
    if not (DATA / "chest").exists() or not (DATA / "cip_copdgene").exists():
        pytest.skip(f"real data not found at {DATA} (set CTSCORE_TEST_DATA)")
    if DATA.resolve() != (REPO.parent / "shared" / "data").resolve():
        pytest.skip("the list points at ../shared/data beside the repository (paths relative to the list file)")
    bgs = read_backgrounds_file(REPO / "configs" / "training" / "backgrounds.yaml")
    names = [b.name for b in bgs]
    assert names == ["itkelastix00", "lung_pet_ct_dx_A0002", "ge_mister_ct", "cip_copdgene_ct64"]
    cip = bgs[-1]
    case = prepare_case(cip, (2.5, 2.5, 2.5))
    ml = [(case["lungs"] == k).sum() * 2.5 ** 3 / 1000 for k in (1, 2)]
    assert 1500 < ml[0] < 4000 and 1500 < ml[1] < 4000
    assert np.nonzero(case["lungs"] == 1)[2].mean() < np.nonzero(case["lungs"] == 2)[2].mean()


def test_recipe_stage_with_its_own_backgrounds_file(tmp_path):
    """A recipe stage may name its own background list (``backgrounds_file``): that stage trains on
    those cases, the others on the command's; a bad list is refused before any training."""
    import json

    from pipeline.cli import main
    from pipeline.errors import EXIT_USAGE

    toy_volume(tmp_path / "d")
    write_list(tmp_path / "bg.yaml", "backgrounds:\n  - name: toy\n    image: d/ct.nii.gz\n"
               "    lungs: d/labels.nii.gz\n    right: [12, 524, 780]\n    left: [9, 777]\n")
    cache, _ = toy_training_dirs(tmp_path, "base")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("roi_size: [16, 32, 32]\nsamples_per_volume: 2\nstages:\n  - {name: a}\n"
                      f"  - {{name: b, backgrounds_file: {tmp_path / 'bg.yaml'}, deform_prob: 1.0}}\n")
    common = ["train", "--data", str(tmp_path / "data"), "--backgrounds", "base", "--cache", str(cache),
              "--iterations", "1", "--batch-size", "1", "--num-workers", "0", "--device", "cpu"]
    assert main(common + ["--out", str(tmp_path / "out"), "--train-config", str(recipe)]) == 0
    log_a = json.loads((tmp_path / "out" / "train_log_a.json").read_text())
    log_b = json.loads((tmp_path / "out" / "train_log_b.json").read_text())
    assert log_a["cases"] == ["base"] and log_b["cases"] == ["toy"]
    assert "backgrounds_file" not in log_b["cfg"] and log_b["cfg"]["deform_prob"] == 1.0
    recipe.write_text("stages:\n  - {name: a}\n  - {name: b, backgrounds_file: missing.yaml}\n")
    assert main(common + ["--out", str(tmp_path / "out2"), "--train-config", str(recipe)]) == EXIT_USAGE
    assert not (tmp_path / "out2").exists()


def test_command_line_options_win_over_the_stages_of_a_recipe(tmp_path):
    """`--iterations 1` shortens every stage of a recipe, even one that sets its own iterations (a quick try of a
    long recipe), and `--lr` reaches every stage; the stages' other options stay theirs."""
    import json

    from pipeline.cli import main

    cache, _ = toy_training_dirs(tmp_path, "base")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("roi_size: [16, 32, 32]\nsamples_per_volume: 2\nlr: 0.01\nstages:\n"
                      "  - {name: a, iterations: 500}\n  - {name: b, iterations: 300, lr: 0.002, deform_prob: 0.5}\n")
    assert main(["train", "--data", str(tmp_path / "data"), "--backgrounds", "base", "--cache", str(cache),
                 "--iterations", "1", "--lr", "0.0005", "--batch-size", "1", "--num-workers", "0", "--device", "cpu",
                 "--out", str(tmp_path / "out"), "--train-config", str(recipe)]) == 0
    for name in ("a", "b"):
        log = json.loads((tmp_path / "out" / f"train_log_{name}.json").read_text())
        assert log["cfg"]["iterations"] == 1 and log["cfg"]["lr"] == 0.0005, name
    assert json.loads((tmp_path / "out" / "train_log_b.json").read_text())["cfg"]["deform_prob"] == 0.5
