"""Review 3 of training and fine-tuning (``ctscore train`` / ``segmentation.recipe.train_segmenter``).

Which backgrounds each stage trains on when the command and the training config both name lists, cases of two
lists that share a name in the one cache, and the init model's description checked against its manifest.
Tiny synthetic volumes, one or two iterations.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")
pytest.importorskip("torch")
pytest.importorskip("monai")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.errors import ConfigError  # noqa: E402
from segmentation.recipe import train_segmenter  # noqa: E402
from tests.conftest import shared_data_dir  # noqa: E402
from tests.test_training_backgrounds import toy_volume, write_list  # noqa: E402

FAST = dict(device="cpu", iterations=1, batch_size=1, num_workers=0)
ENTRY = ("  - name: {name}\n    image: {d}/ct.nii.gz\n    lungs: {d}/labels.nii.gz\n"
         "    right: [12, 524, 780]\n    left: [9, 777]\n")


def two_patients(tmp_path: Path) -> None:
    """``d/`` and ``e/``: two toy CTs with their label maps; ``e``'s lungs are denser (-700 HU, another patient)."""
    toy_volume(tmp_path / "d")
    toy_volume(tmp_path / "e")
    img = sitk.ReadImage(str(tmp_path / "e" / "ct.nii.gz"))
    a = sitk.GetArrayFromImage(img)
    a[a < -500] = -700
    new = sitk.GetImageFromArray(a)
    new.CopyInformation(img)
    sitk.WriteImage(new, str(tmp_path / "e" / "ct.nii.gz"))


def darkest(npz: Path) -> int:
    with np.load(npz) as z:
        return int(z["image"].min())


def test_command_backgrounds_file_wins_over_the_configs_top_level_list(tmp_path):
    """A training config with a top-level ``backgrounds_file`` and a command naming its own list
    (``--backgrounds-file``, documented to win over the config's) stopped with "no cached cases to train on":
    the command's list was never cached. Now the command's list is cached and trained on."""
    two_patients(tmp_path)
    write_list(tmp_path / "cfg_list.yaml", "backgrounds:\n" + ENTRY.format(name="cfgcase", d="d"))
    write_list(tmp_path / "cmd_list.yaml", "backgrounds:\n" + ENTRY.format(name="cmdcase", d="e"))
    cfg = write_list(tmp_path / "c.yaml", f"roi_size: [16, 32, 32]\nsamples_per_volume: 2\n"
                     f"backgrounds_file: {tmp_path / 'cfg_list.yaml'}\n")
    res = train_segmenter(tmp_path / "out", backgrounds_file=tmp_path / "cmd_list.yaml", cache=tmp_path / "cache",
                          train_config=cfg, **FAST)
    assert [Path(p).stem for p in res["cache_files"]] == ["cmdcase"]
    log = json.loads((tmp_path / "out" / "train_log.json").read_text())
    assert log["cases"] == ["cmdcase"] and log["iterations"] == 1
    # without the command's list the config's own is used, as before
    res = train_segmenter(tmp_path / "out2", cache=tmp_path / "cache", train_config=cfg, **FAST)
    assert json.loads((tmp_path / "out2" / "train_log.json").read_text())["cases"] == ["cfgcase"]


def test_two_lists_with_one_case_name_are_refused_before_anything_is_made(tmp_path):
    """The cache is named by the case: a recipe whose stage list held another patient under a name of the command's
    list re-made ``toy.npz`` from that patient before training, so the first stage trained on the other list's
    case (and each run re-made the file twice). Now refused, naming the name and both sources."""
    two_patients(tmp_path)
    write_list(tmp_path / "a.yaml", "backgrounds:\n" + ENTRY.format(name="toy", d="d"))
    write_list(tmp_path / "b.yaml", "backgrounds:\n" + ENTRY.format(name="toy", d="e"))
    cfg = write_list(tmp_path / "c.yaml", "roi_size: [16, 32, 32]\nsamples_per_volume: 2\nstages:\n  - {name: s1}\n"
                     f"  - {{name: s2, backgrounds_file: {tmp_path / 'b.yaml'}}}\n")
    with pytest.raises(ConfigError, match="'toy'") as e:
        train_segmenter(tmp_path / "out", backgrounds_file=tmp_path / "a.yaml", cache=tmp_path / "cache",
                        train_config=cfg, **FAST)
    assert str((tmp_path / "d" / "ct.nii.gz").resolve()) in str(e.value)
    assert str((tmp_path / "e" / "ct.nii.gz").resolve()) in str(e.value)
    assert not (tmp_path / "out").exists() and not list((tmp_path / "cache").glob("*.npz"))
    # the same case (same image, labels and values) in both lists is fine: one cached file serves both stages
    write_list(tmp_path / "b.yaml", "backgrounds:\n" + ENTRY.format(name="toy", d="d"))
    train_segmenter(tmp_path / "out", backgrounds_file=tmp_path / "a.yaml", cache=tmp_path / "cache",
                    train_config=cfg, **FAST)
    assert darkest(tmp_path / "cache" / "toy.npz") == -850
    for s in ("s1", "s2"):
        assert json.loads((tmp_path / "out" / f"train_log_{s}.json").read_text())["cases"] == ["toy"]


def test_init_model_yaml_is_checked_against_its_manifest(tmp_path):
    """``--init`` checked only the weights' sha256 against the manifest beside them: an edited ``model.yaml``
    (here: another model grid) was believed, and the fine-tune published weights made at 4 mm as a 3 mm model.
    Now refused naming model.yaml, as ``ctscore run --model`` refuses that folder."""
    from tests.test_segmentation_monai import tiny_weights
    from tests.toy_cases import toy_cached_case

    tiny = tiny_weights(tmp_path / "tiny")  # 4 mm grid
    y = tiny / "model.yaml"
    y.write_text(y.read_text().replace("4.0", "3.0"))
    (tmp_path / "data" / "toy").mkdir(parents=True)
    toy_cached_case(tmp_path / "cache" / "toy.npz", spacing=3.0)
    cfg = write_list(tmp_path / "c.yaml", "model_spacing_mm: [3.0, 3.0, 3.0]\nroi_size: [8, 16, 16]\n"
                     "samples_per_volume: 2\n")
    with pytest.raises(ConfigError, match="manifest") as e:
        train_segmenter(tmp_path / "out", data=tmp_path / "data", cache=tmp_path / "cache", train_config=cfg,
                        init=tiny, **FAST)
    assert e.value.path == str(y)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ user label files

def upper_lungs(folder: Path) -> tuple[Path, np.ndarray, sitk.Image]:
    """A 3 mm toy CT whose lungs fill the upper 12 of 20 slices and the front 16 of 30 rows (not symmetric
    head-feet or front-back, as real lungs), and its lung mask (1 right at low x, 2 left) on the CT's grid."""
    folder.mkdir(parents=True, exist_ok=True)
    hu = np.full((20, 30, 40), 40, np.int16)
    mask = np.zeros(hu.shape, np.uint8)
    hu[2:14, 4:20, 4:18], mask[2:14, 4:20, 4:18] = -850, 1
    hu[2:14, 4:20, 22:36], mask[2:14, 4:20, 22:36] = -850, 2
    ct = sitk.GetImageFromArray(hu)
    ct.SetSpacing((3.0, 3.0, 3.0))
    ct.SetOrigin((-60.0, -45.0, 10.0))
    sitk.WriteImage(ct, str(folder / "ct.nii.gz"))
    return folder / "ct.nii.gz", mask, ct


def write_mask(arr: np.ndarray, ref: sitk.Image, path: Path) -> Path:
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.CopyInformation(ref)
    sitk.WriteImage(img, str(path))
    return path


@pytest.mark.parametrize("axis,word", [(0, "head-feet"), (1, "front-back")])
def test_lung_mask_flipped_against_its_ct_is_refused(tmp_path, axis, word):
    """A lung label file whose array is mirrored head-feet (slices in the other order, the header copied from the
    CT) or front-back against its CT kept its volume and two thirds of it still lay on air, over the 50 % the
    check asked: it was cached and trained on, lungs half on the neck / abdomen. Now refused naming the file; the
    same mask as it should be is still taken."""
    from segmentation.training import Background, prepare_case

    ct, mask, ref = upper_lungs(tmp_path / "d")
    good = write_mask(mask, ref, tmp_path / "d" / "lungs.nii.gz")
    case = prepare_case(Background("toy", ct, good), (3.0, 3.0, 3.0))
    assert np.bincount(case["lungs"].ravel(), minlength=3)[1:].min() > 0
    bad = write_mask(np.flip(mask, axis), ref, tmp_path / "d" / "flipped.nii.gz")
    with pytest.raises(ValueError, match=word) as e:
        prepare_case(Background("toy", ct, bad), (3.0, 3.0, 3.0))
    assert str(bad) in str(e.value) and str(ct) in str(e.value)


DATA = shared_data_dir() or Path(__file__).resolve().parents[2] / "shared" / "data"  # $CTSCORE_TEST_DATA first


def test_flipped_real_label_map_is_refused(tmp_path):
    """The CIP chest of configs/training/backgrounds.yaml with its label map mirrored head-feet (71 % of it on air)
    or front-back (78 %) was accepted; the label map as it is (98 %) is taken."""
    from segmentation.training import Background, prepare_case

    ct, lm = DATA / "cip_copdgene" / "ct-64.nrrd", DATA / "cip_copdgene" / "lm-64.nrrd"
    if not (ct.exists() and lm.exists()):
        pytest.skip(f"{DATA / 'cip_copdgene'} not present (set CTSCORE_TEST_DATA)")
    right, left = (12, 13, 14, 524, 525, 526, 780, 781, 782), (9, 10, 11, 521, 522, 777, 778, 779)
    ref = sitk.ReadImage(str(lm))
    arr = sitk.GetArrayFromImage(ref)
    for axis, word in ((0, "head-feet"), (1, "front-back")):
        bad = write_mask(np.flip(arr, axis), ref, tmp_path / f"flip{axis}.nrrd")
        with pytest.raises(ValueError, match=word):
            prepare_case(Background("cip", ct, bad, None, right, left), (2.5, 2.5, 2.5))


@pytest.mark.parametrize("kind", ["2d", "vector"])
def test_image_file_that_is_not_one_ct_volume_is_refused_naming_it(tmp_path, kind, capsys):
    """A 2D image or a multi-component image listed as a background's CT stopped ``ctscore train`` with a SimpleITK
    RuntimeError (orientation / cast) that named neither the file nor the problem. Now a configuration error naming
    the file, before anything is cached."""
    from pipeline.cli import main
    from pipeline.errors import EXIT_USAGE

    ct, labels = toy_volume(tmp_path / "d")
    a = sitk.GetArrayFromImage(sitk.ReadImage(str(ct)))
    img = sitk.GetImageFromArray(a[5]) if kind == "2d" else sitk.GetImageFromArray(np.stack([a] * 3, -1),
                                                                                   isVector=True)
    sitk.WriteImage(img, str(tmp_path / "d" / "bad.nii.gz"))
    lst = write_list(tmp_path / "bg.yaml", "backgrounds:\n  - {name: bad, image: d/bad.nii.gz, lungs: d/labels.nii.gz,"
                     " right: [12, 524, 780], left: [9, 777]}\n")
    with pytest.raises(ConfigError, match="3D") as e:
        train_segmenter(tmp_path / "out", backgrounds_file=lst, cache=tmp_path / "cache", prepare_only=True)
    assert str((tmp_path / "d" / "bad.nii.gz").resolve()) in str(e.value)
    assert main(["train", "--backgrounds-file", str(lst), "--cache", str(tmp_path / "c"), "--prepare-only"]) \
        == EXIT_USAGE
    assert "ctscore: error:" in capsys.readouterr().err


def test_fine_tune_keeps_the_init_models_inference_settings(tmp_path):
    """A fine-tune wrote model.yaml with the built-in inference settings (lesion threshold 0.5, overlap 0.25,
    window 160x192x192) whatever the init model's were: a lab's tuned threshold was lost silently. Now they are
    kept; unusable ones are refused naming the init model.yaml before any training."""
    import yaml

    from segmentation.training import write_manifest
    from tests.test_segmentation_monai import tiny_weights
    from tests.toy_cases import toy_cached_case

    tiny = tiny_weights(tmp_path / "tiny")  # 4 mm grid
    y = tiny / "model.yaml"
    meta = yaml.safe_load(y.read_text())
    meta.update(lesion_threshold=0.35, sw_overlap=0.5, inference_roi_size=[16, 32, 48])
    y.write_text(yaml.safe_dump(meta))
    write_manifest(tiny)
    (tmp_path / "data" / "toy").mkdir(parents=True)
    toy_cached_case(tmp_path / "cache" / "toy.npz", spacing=4.0)
    cfg = write_list(tmp_path / "c.yaml", "model_spacing_mm: [4.0, 4.0, 4.0]\nroi_size: [8, 16, 16]\n"
                     "samples_per_volume: 2\n")
    kw = dict(data=tmp_path / "data", cache=tmp_path / "cache", train_config=cfg, init=tiny, **FAST)
    train_segmenter(tmp_path / "out", **kw)
    out = yaml.safe_load((tmp_path / "out" / "model.yaml").read_text())
    assert (out["lesion_threshold"], out["sw_overlap"], out["inference_roi_size"]) == (0.35, 0.5, [16, 32, 48])
    meta["lesion_threshold"] = 1.5
    y.write_text(yaml.safe_dump(meta))
    write_manifest(tiny)
    with pytest.raises(ConfigError, match=r"lesion_threshold must be a number in \(0, 1\)") as e:
        train_segmenter(tmp_path / "out2", **kw)
    assert e.value.path == str(y) and not (tmp_path / "out2").exists()
    meta.update(lesion_threshold=0.35, inference_roi_size=[16, 32, 47])  # the tiny net halves once: odd refused
    y.write_text(yaml.safe_dump(meta))
    write_manifest(tiny)
    with pytest.raises(ConfigError, match=r"inference_roi_size \[16, 32, 47\]: each side must be a multiple of 2"):
        train_segmenter(tmp_path / "out3", **kw)


def test_a_model_in_out_is_not_replaced_without_overwrite(tmp_path):
    """``--out`` holding a model (the shipped segmentation/weights, or an earlier run's hours of training) was
    replaced without a word; now refused before anything is cached, unless --overwrite (CLI and Python alike)."""
    from pipeline.cli import main
    from pipeline.errors import EXIT_USAGE
    from tests.test_segmentation_monai import tiny_weights
    from tests.toy_cases import toy_cached_case

    out = tiny_weights(tmp_path / "out")
    before = (out / "model.safetensors").read_bytes()
    (tmp_path / "data" / "toy").mkdir(parents=True)
    cfg = write_list(tmp_path / "c.yaml", "model_spacing_mm: [4.0, 4.0, 4.0]\nroi_size: [8, 16, 16]\n"
                     "samples_per_volume: 2\n")
    init = tiny_weights(tmp_path / "init")
    kw = dict(data=tmp_path / "data", cache=tmp_path / "cache", train_config=cfg, init=init, **FAST)
    with pytest.raises(ConfigError, match="already holds a model") as e:
        train_segmenter(out, **kw)
    assert e.value.path == str(out) and not (tmp_path / "cache").exists()
    argv = ["train", "--data", str(tmp_path / "data"), "--cache", str(tmp_path / "cache"), "--out", str(out),
            "--train-config", str(cfg), "--init", str(init), "--iterations", "1", "--batch-size", "1", "--num-workers", "0",
            "--device", "cpu"]
    assert main(argv) == EXIT_USAGE and (out / "model.safetensors").read_bytes() == before
    toy_cached_case(tmp_path / "cache" / "toy.npz", spacing=4.0)
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "model.safetensors").read_bytes() != before


def test_data_folder_problems_name_the_folder_and_the_cause(tmp_path):
    """An empty --data folder was blamed on the batch size ("more than the 0 crops of an epoch"); a background
    folder neither present nor cached was reported with the cache folder as its path."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no background series in this folder") as e:
        train_segmenter(tmp_path / "out", data=tmp_path / "empty", cache=tmp_path / "cache", **FAST)
    assert e.value.path == str(tmp_path / "empty")
    (tmp_path / "data" / "toy").mkdir(parents=True)
    want = r"background folder\(s\) not found: .*gone'\]; the cache .* lacks \['gone', 'toy'\]"
    with pytest.raises(ConfigError, match=want) as e:
        train_segmenter(tmp_path / "out", data=tmp_path / "data", backgrounds=["toy", "gone"],
                        cache=tmp_path / "cache", **FAST)
    assert e.value.path == str(tmp_path / "data" / "gone")
    assert not (tmp_path / "out").exists()
