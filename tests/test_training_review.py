"""Review of training and fine-tuning (``ctscore train`` / ``segmentation.recipe.train_segmenter``).

User label files that cannot be trained on are refused naming the file; the cache follows its backgrounds and
options and is written whole; every option (command line and training YAML) is checked before anything is made;
``--init`` takes a model folder and its network; a seeded CPU run is reproducible. Tiny synthetic volumes only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")
pytest.importorskip("torch")
pytest.importorskip("monai")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.errors import EXIT_USAGE, ConfigError  # noqa: E402
from segmentation.recipe import train_segmenter  # noqa: E402
from tests.test_training_backgrounds import toy_volume, write_list  # noqa: E402
from tests.toy_cases import toy_cached_case  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "segmentation" / "weights"
TINY = "roi_size: [16, 32, 32]\nsamples_per_volume: 2\n"
FAST = dict(device="cpu", iterations=1, batch_size=1, num_workers=0)


def labelled_case(tmp_path: Path, mask: np.ndarray | None = None, *, header: bool = True) -> Path:
    """The toy CT with a lung label file ``d/mask.nii.gz`` (``mask`` on the label grid; default 1 right / 2 left),
    listed in ``bg.yaml``; ``header=False`` writes the mask without the CT's origin and spacing."""
    ct, labels = toy_volume(tmp_path / "d")
    ref = sitk.ReadImage(str(labels))
    arr = sitk.GetArrayFromImage(ref)
    if mask is None:
        mask = np.where(np.isin(arr, [12, 524, 780]), 1, np.where(np.isin(arr, [9, 777]), 2, 0)).astype(np.uint8)
    img = sitk.GetImageFromArray(mask)
    if header:
        img.CopyInformation(ref)
    sitk.WriteImage(img, str(tmp_path / "d" / "mask.nii.gz"))
    return write_list(tmp_path / "bg.yaml", "backgrounds:\n  - {name: toy, image: d/ct.nii.gz, lungs: d/mask.nii.gz}\n")


def lungs_of(path: Path) -> np.ndarray:
    with np.load(path) as z:
        return np.bincount(z["lungs"].ravel(), minlength=3)


# ------------------------------------------------------------------------------------------ user label files

def test_binary_lung_mask_is_refused_naming_the_file(tmp_path):
    """A 0/1 lung mask (both lungs 1) was cached as 'right lung' everywhere and trained on silently."""
    ct, labels = toy_volume(tmp_path / "d")
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(labels)))
    lst = labelled_case(tmp_path, np.isin(arr, [12, 524, 780, 9, 777]).astype(np.uint8))
    with pytest.raises(ConfigError, match=r"no voxel carries the left lung label values \[2\]") as e:
        train_segmenter(tmp_path / "out", backgrounds_file=lst, cache=tmp_path / "cache", prepare_only=True)
    assert "mask.nii.gz" in str(e.value) and "values in the file: 0, 1" in str(e.value)
    assert not (tmp_path / "cache" / "toy.npz").exists()


def test_mask_not_on_the_ct_is_refused(tmp_path):
    """A mask written without its CT's header (origin 0, 1 mm) or another case's mask landed a few voxels of
    'lung' on the CT and was trained on."""
    lst = labelled_case(tmp_path, header=False)
    with pytest.raises(ConfigError, match="not on this CT") as e:
        train_segmenter(tmp_path / "out", backgrounds_file=lst, cache=tmp_path / "cache", prepare_only=True)
    assert "mask.nii.gz" in str(e.value) and "ct.nii.gz" in str(e.value)
    # the same labels with the CT's geometry, on another grid (resampled by physical position): fine
    ct, labels = toy_volume(tmp_path / "d")
    src = sitk.ReadImage(str(labels))
    arr = sitk.GetArrayFromImage(src)
    lab = sitk.GetImageFromArray(np.where(np.isin(arr, [12, 524, 780]), 1, np.where(np.isin(arr, [9, 777]), 2, 0))
                                 .astype(np.uint8))
    lab.CopyInformation(src)
    fine = sitk.Resample(lab, [80, 60, 40], sitk.Transform(), sitk.sitkNearestNeighbor, src.GetOrigin(),
                         (1.5, 1.5, 1.5), src.GetDirection(), 0, sitk.sitkUInt8)
    sitk.WriteImage(fine, str(tmp_path / "d" / "mask.nii.gz"))
    (f,) = train_segmenter(tmp_path / "out", backgrounds_file=lst, cache=tmp_path / "cache",
                           prepare_only=True)["cache_files"]
    assert lungs_of(Path(f))[1] > 0 and lungs_of(Path(f))[2] > 0


def test_right_and_left_swapped_are_refused(tmp_path):
    """A mask in the other convention (1 left / 2 right) or mirrored trained the network to swap the lungs."""
    ct, labels = toy_volume(tmp_path / "d")
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(labels)))
    swapped = np.where(np.isin(arr, [12, 524, 780]), 2, np.where(np.isin(arr, [9, 777]), 1, 0)).astype(np.uint8)
    lst = labelled_case(tmp_path, swapped)
    with pytest.raises(ConfigError, match="right and left swapped") as e:
        train_segmenter(tmp_path / "out", backgrounds_file=lst, cache=tmp_path / "cache", prepare_only=True)
    assert "mask.nii.gz" in str(e.value)


@pytest.mark.parametrize("which", ["lungs", "lesions"])
def test_unreadable_label_file_names_it(tmp_path, capsys, which):
    """A damaged label file gave a SimpleITK RuntimeError traceback."""
    from pipeline.cli import main

    toy_volume(tmp_path / "d")
    (tmp_path / "d" / "bad.nii.gz").write_bytes(b"not an image")
    files = ("lungs: d/bad.nii.gz" if which == "lungs"
             else "lungs: d/labels.nii.gz, lesions: d/bad.nii.gz, right: [12], left: [9]")
    lst = write_list(tmp_path / "bg.yaml", f"backgrounds:\n  - {{name: toy, image: d/ct.nii.gz, {files}}}\n")
    with pytest.raises(ConfigError, match="bad.nii.gz: the (lung|lesion) label file is not a readable image"):
        train_segmenter(tmp_path / "out", backgrounds_file=lst, cache=tmp_path / "cache", prepare_only=True)
    assert main(["train", "--backgrounds-file", str(lst), "--cache", str(tmp_path / "c2"), "--prepare-only"]) \
        == EXIT_USAGE
    err = capsys.readouterr().err  # (main returning = no exception escaped)
    assert any(line.startswith("ctscore: error:") and "bad.nii.gz" in line for line in err.splitlines())


def test_folder_with_lesions_but_no_lungs_is_refused(tmp_path):
    """``lesions.nii.gz`` beside a DICOM series without ``lungs.nii.gz`` was dropped without a word: the case was
    trained on synthetic lesions instead of the user's. Nothing is cached before the refusal."""
    from tests.dicom_factory import write_series

    write_series(tmp_path / "data" / "a", 8)
    write_series(tmp_path / "data" / "b", 8)
    _, labels = toy_volume(tmp_path / "d")
    (tmp_path / "data" / "b" / "lesions.nii.gz").write_bytes(labels.read_bytes())
    with pytest.raises(ConfigError, match="lesion mask is trained on only with its lung mask") as e:
        train_segmenter(tmp_path / "out", data=tmp_path / "data", cache=tmp_path / "cache", prepare_only=True)
    assert str(tmp_path / "data" / "b" / "lesions.nii.gz") in str(e.value)
    assert not list((tmp_path / "cache").glob("*.npz")) if (tmp_path / "cache").exists() else True


def test_folder_without_a_ct_series_is_a_config_error(tmp_path, capsys):
    """A sub-folder of --data with no CT series gave a FileNotFoundError traceback."""
    from pipeline.cli import main

    (tmp_path / "data" / "notes").mkdir(parents=True)
    (tmp_path / "data" / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(ConfigError, match="cannot be loaded as a CT") as e:
        train_segmenter(tmp_path / "out", data=tmp_path / "data", cache=tmp_path / "cache", prepare_only=True)
    assert "notes" in str(e.value)
    assert main(["train", "--data", str(tmp_path / "data"), "--cache", str(tmp_path / "c"), "--prepare-only"]) \
        == EXIT_USAGE
    assert "ctscore: error:" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ the cache

def test_changed_background_or_labels_invalidate_the_cache(tmp_path):
    """The cache was keyed by name only: other label values, another label file or another image under the
    same name reused the old case."""
    toy_volume(tmp_path / "d")
    lst = tmp_path / "bg.yaml"
    body = "backgrounds:\n  - {{name: v, image: d/ct.nii.gz, lungs: d/labels.nii.gz, right: {r}, left: {l}}}\n"
    kw = dict(backgrounds_file=lst, cache=tmp_path / "cache", prepare_only=True)
    write_list(lst, body.format(r="[12]", l="[9]"))
    (f,) = map(Path, train_segmenter(tmp_path / "out", **kw)["cache_files"])
    first, stamp = lungs_of(f), f.stat().st_mtime_ns
    train_segmenter(tmp_path / "out", **kw)
    assert f.stat().st_mtime_ns == stamp  # unchanged: reused
    write_list(lst, body.format(r="[12, 524, 780]", l="[9, 777]"))
    train_segmenter(tmp_path / "out", **kw)
    second = lungs_of(f)
    assert second[1] > first[1] and second[2] > first[2]  # the airway / vessel codes are lung now
    # the label file itself replaced (the left lung cut in half)
    lab = sitk.ReadImage(str(tmp_path / "d" / "labels.nii.gz"))
    arr = sitk.GetArrayFromImage(lab)
    arr[:10][np.isin(arr[:10], [9, 777])] = 0
    new = sitk.GetImageFromArray(arr)
    new.CopyInformation(lab)
    sitk.WriteImage(new, str(tmp_path / "d" / "labels.nii.gz"))
    os.utime(tmp_path / "d" / "labels.nii.gz", ns=(stamp + 10**9, stamp + 10**9))
    train_segmenter(tmp_path / "out", **kw)
    assert lungs_of(f)[2] < 0.8 * second[2]


def test_interrupted_cache_write_leaves_nothing_trusted(tmp_path, monkeypatch):
    """The case was written in place: a crash left a half .npz under the trusted name, which then stopped every
    later run with a BadZipFile traceback. Now: written beside and renamed; a damaged file is made again."""
    import segmentation.training as tr

    toy_volume(tmp_path / "d")
    lst = write_list(tmp_path / "bg.yaml", "backgrounds:\n  - {name: v, image: d/ct.nii.gz, "
                     "lungs: d/labels.nii.gz, right: [12], left: [9]}\n")
    kw = dict(backgrounds_file=lst, cache=tmp_path / "cache", prepare_only=True)
    real = np.savez_compressed

    def crash(file, **arrays):
        with open(file, "wb") as fh:
            fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(tr.np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt):
        train_segmenter(tmp_path / "out", **kw)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == []
    monkeypatch.setattr(tr.np, "savez_compressed", real)
    (f,) = map(Path, train_segmenter(tmp_path / "out", **kw)["cache_files"])
    good = lungs_of(f)
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # e.g. a copy cut short
    train_segmenter(tmp_path / "out", **kw)
    assert (lungs_of(f) == good).all()


def test_teacher_spacing_of_the_training_config_reaches_the_teacher(tmp_path, monkeypatch):
    """``teacher_spacing_mm`` (a documented training option) was never passed to the cache: always 1.5 mm."""
    import segmentation.training as tr

    seen = []

    def fake_case(bg, model_spacing, teacher=None, teacher_spacing=(1.5, 1.5, 1.5)):
        seen.append([float(v) for v in teacher_spacing])
        img = np.full((8, 8, 8), -1000, np.int16)
        return {"image": img, "lungs": np.zeros(img.shape, np.uint8), "spacing": np.full(3, 2.5, np.float32)}

    monkeypatch.setattr(tr, "prepare_case", fake_case)
    (tmp_path / "data" / "toy").mkdir(parents=True)
    cfg = write_list(tmp_path / "c.yaml", "teacher_spacing_mm: [1.0, 1.0, 2.0]\n")
    train_segmenter(tmp_path / "out", data=tmp_path / "data", cache=tmp_path / "cache", train_config=cfg,
                    prepare_only=True)
    assert seen == [[1.0, 1.0, 2.0]]
    # another teacher grid is another cache entry: made again
    cfg.write_text("teacher_spacing_mm: [1.5, 1.5, 1.5]\n")
    train_segmenter(tmp_path / "out", data=tmp_path / "data", cache=tmp_path / "cache", train_config=cfg,
                    prepare_only=True)
    assert seen == [[1.0, 1.0, 2.0], [1.5, 1.5, 1.5]]


# ------------------------------------------------------------------------------------------ options

@pytest.mark.parametrize("yaml_text, word", [
    ("iterations: -5\n", "iterations must be a whole number >= 1"),
    ("lr: fast\n", "lr must be a positive number"),
    ("roi_size: [20, 30, 30]\n", "multiple of 16"),
    ("roi_size: 32\n", "roi_size must be three whole numbers"),
    ("synth: 5\n", "synth must be a mapping"),
    ("model_spacing_mm: 2.5\n", "model_spacing_mm must be three positive numbers"),
    ("dense_lesion_heads: lesion\n", "dense_lesion_heads must be 'both' or 'lung'"),
    ("synth: {p_empty: 2}\n", "synth.p_empty"),
    ("deform_prob: 1.5\n", "deform_prob must be a probability"),
    ("stages:\n  - {name: a}\n  - {name: b, lr: -1}\n", r"stages\[1\] \(b\): lr must be a positive number"),
    ("stages:\n  - {name: a}\n  - {name: a}\n", "stage names must be unique"),
    ("stages:\n  - {name: ../../x}\n", "must be a plain file name"),
    ("stages: {name: a}\n", "'stages' must be a list"),
    ("anatomy_mix: {alphas: [0]}\n", "anatomy_mix"),
])
def test_training_yaml_values_are_checked_before_anything_is_made(tmp_path, yaml_text, word):
    """Only the command-line options were checked: ``iterations: -5`` in the YAML trained and published a model,
    other bad values gave tracebacks after the cache was built, a stage name with '..' wrote outside --out."""
    from pipeline.cli import main

    (tmp_path / "data" / "toy").mkdir(parents=True)
    cfg = write_list(tmp_path / "c.yaml", yaml_text)
    with pytest.raises(ConfigError, match=word) as e:
        train_segmenter(tmp_path / "out", data=tmp_path / "data", cache=tmp_path / "cache", train_config=cfg,
                        device="cpu")
    assert e.value.path == str(cfg)
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    assert main(["train", "--data", str(tmp_path / "data"), "--cache", str(tmp_path / "c2"), "--out",
                 str(tmp_path / "o2"), "--train-config", str(cfg), "--device", "cpu"]) == EXIT_USAGE
    assert not (tmp_path / "o2").exists() and not (tmp_path / "c2").exists()


def test_seed_is_checked_like_the_other_options(tmp_path):
    from pipeline.cli import main

    with pytest.raises(ConfigError, match="seed"):
        train_segmenter(tmp_path / "out", data=tmp_path, cache=tmp_path / "cache", seed=-1)
    assert main(["train", "--data", str(tmp_path), "--cache", str(tmp_path / "c"), "--seed", "-1"]) == EXIT_USAGE
    assert not (tmp_path / "cache").exists() and not (tmp_path / "c").exists()


def test_batch_larger_than_an_epoch_is_refused_instead_of_hanging(tmp_path):
    """batch_size above cases x samples_per_volume: the loader (drop_last) gave no batch and training looped
    forever."""
    from segmentation.training import train

    f = toy_cached_case(tmp_path / "cache" / "toy.npz")

    def stop(*_):
        raise TimeoutError("training hung")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(60)
    try:
        with pytest.raises(ConfigError, match="batch_size 4 is more than the 1 crops of an epoch"):
            train([f], tmp_path / "out", {"roi_size": [16, 32, 32], "samples_per_volume": 1, "batch_size": 4,
                                          "num_workers": 0, "iterations": 1}, device="cpu")
        (tmp_path / "data" / "toy").mkdir(parents=True)
        cfg = write_list(tmp_path / "c.yaml", "roi_size: [16, 32, 32]\nsamples_per_volume: 1\n")
        with pytest.raises(ConfigError, match="batch_size 3 is more than the 1 crops"):
            train_segmenter(tmp_path / "out2", data=tmp_path / "data", cache=tmp_path / "cache", train_config=cfg,
                            device="cpu", iterations=1, batch_size=3, num_workers=0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


# ------------------------------------------------------------------------------------------ fine-tuning

def test_fine_tune_from_the_shipped_model_folder_loads_with_run_model(tmp_path):
    """``--init segmentation/weights`` (the folder, as ``ctscore run --model`` takes it) was an OSError; the result
    of a fine-tune loads as a model with its own id, and the log names where it started from."""
    from pipeline.cli import main
    from segmentation.monai_segmenter import MonaiSegmenter

    if not (SHIPPED / "model.safetensors").exists():
        pytest.skip("shipped weights not present")
    (tmp_path / "data" / "toy").mkdir(parents=True)
    toy_cached_case(tmp_path / "cache" / "toy.npz", noise_hu=20)
    cfg = write_list(tmp_path / "c.yaml", TINY)
    out = tmp_path / "out"
    assert main(["train", "--data", str(tmp_path / "data"), "--cache", str(tmp_path / "cache"), "--out", str(out),
                 "--train-config", str(cfg), "--init", str(SHIPPED), "--iterations", "1", "--batch-size", "1",
                 "--num-workers", "0", "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.safetensors", "model.yaml",
                                                     "train_log.json"]
    log = json.loads((out / "train_log.json").read_text())
    assert log["init"] == str(SHIPPED / "model.safetensors")
    tuned = MonaiSegmenter(out, device="cpu")
    assert tuned.model_id != MonaiSegmenter(SHIPPED, device="cpu").model_id


def test_init_problems_name_the_file_and_the_init_network_is_kept(tmp_path):
    """A non-safetensors init, or weights of another network, gave tracebacks (safetensors / load_state_dict);
    init weights made for another model grid were fine-tuned at the config's grid and published with a
    model.yaml describing a grid they were not made for. Weights of another (recorded) network are fine-tuned as
    that network."""
    from segmentation.monai_segmenter import MonaiSegmenter
    from tests.test_segmentation_monai import tiny_weights

    (tmp_path / "data" / "toy").mkdir(parents=True)
    cache = tmp_path / "cache"
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not weights at all")
    kw = dict(data=tmp_path / "data", cache=cache, **FAST)
    with pytest.raises(ConfigError, match="not a readable safetensors file") as e:
        train_segmenter(tmp_path / "o1", init=junk, **kw)
    assert e.value.path == str(junk)
    tiny = tiny_weights(tmp_path / "tiny")  # 4 mm grid, 2-level network
    cfg = write_list(tmp_path / "c.yaml", TINY)
    with pytest.raises(ConfigError, match=r"made for model_spacing_mm \[4.0, 4.0, 4.0\]"):
        train_segmenter(tmp_path / "o2", init=tiny, train_config=cfg, **kw)
    assert not (tmp_path / "o2").exists() and not cache.exists()
    toy_cached_case(cache / "toy.npz", spacing=4.0)
    cfg4 = write_list(tmp_path / "c4.yaml", "model_spacing_mm: [4.0, 4.0, 4.0]\nroi_size: [8, 16, 16]\n"
                      "samples_per_volume: 2\n")
    train_segmenter(tmp_path / "o3", init=tiny, train_config=cfg4, **kw)
    seg = MonaiSegmenter(tmp_path / "o3", device="cpu")
    assert seg.model_id
    import yaml

    assert yaml.safe_load((tmp_path / "o3" / "model.yaml").read_text())["arch"]["channels"] == [4, 8]
    # roi_size checked against the init network's depth (one halving: multiples of 2)
    write_list(tmp_path / "c5.yaml", "model_spacing_mm: [4.0, 4.0, 4.0]\nroi_size: [9, 16, 16]\n")
    with pytest.raises(ConfigError, match="multiple of 2"):
        train_segmenter(tmp_path / "o4", init=tiny, train_config=tmp_path / "c5.yaml", **kw)


# ------------------------------------------------------------------------------------------ determinism

def test_seeded_cpu_training_is_reproducible_and_the_model_id_follows_the_weights(tmp_path):
    """Two runs with one seed differed in the last bits: the first step's learning rate came from the wall
    clock (the time share of the budget). Another seed gives other weights and another model id."""
    from segmentation.monai_segmenter import MonaiSegmenter
    from segmentation.training import train

    f = toy_cached_case(tmp_path / "cache" / "toy.npz", noise_hu=20)
    c = {"roi_size": [16, 32, 32], "samples_per_volume": 4, "batch_size": 2, "num_workers": 0, "iterations": 2,
         "deform_prob": 0.5}
    for name in ("a", "b"):
        train([f], tmp_path / name, c, device="cpu")
    train([f], tmp_path / "c", {**c, "seed": 7}, device="cpu")
    a, b, other = ((tmp_path / n / "model.safetensors").read_bytes() for n in "abc")
    assert a == b and a != other
    ids = [MonaiSegmenter(tmp_path / n, device="cpu").model_id for n in "abc"]
    assert ids[0] == ids[1] != ids[2]
    # a later run into the same folder replaces the model whole: no leftovers, the manifest vouches for it
    train([f], tmp_path / "a", {**c, "seed": 7}, device="cpu")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["manifest.json", "model.safetensors",
                                                                  "model.yaml", "train_log.json"]
    assert MonaiSegmenter(tmp_path / "a", device="cpu").model_id == ids[2]


def test_folder_masks_in_other_formats_are_found_and_two_are_refused(tmp_path):
    """``lungs.nrrd`` (or .nii, .mha) beside a DICOM series was ignored without a word (the teacher's lungs were
    trained on instead); now it is the case's mask, and two lung masks in one folder are refused."""
    from segmentation.training import Background
    from tests.dicom_factory import write_series

    write_series(tmp_path / "a", 8)
    _, labels = toy_volume(tmp_path / "d")
    sitk.WriteImage(sitk.ReadImage(str(labels)), str(tmp_path / "a" / "lungs.nrrd"))
    sitk.WriteImage(sitk.ReadImage(str(labels)), str(tmp_path / "a" / "lesions.nii"))
    bg = Background.from_folder(tmp_path / "a")
    assert bg.lungs == tmp_path / "a" / "lungs.nrrd" and bg.lesions == tmp_path / "a" / "lesions.nii"
    (tmp_path / "a" / "labels").mkdir()
    sitk.WriteImage(sitk.ReadImage(str(labels)), str(tmp_path / "a" / "labels" / "lungs.nii.gz"))
    with pytest.raises(ValueError, match="several lungs masks"):
        Background.from_folder(tmp_path / "a")
    with pytest.raises(ConfigError, match="several lungs masks"):
        train_segmenter(tmp_path / "out", data=tmp_path, backgrounds=["a"], cache=tmp_path / "cache",
                        prepare_only=True)
