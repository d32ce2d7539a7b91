"""Review 48 of the training workflow (``ctscore train`` / ``segmentation.recipe.train_segmenter``): training into the
shipped weights folder, an all-zero lesion file, an init folder without its manifest, what train_log.json records of
each case and of the synthesis, a MONAI bundle as init, the wording of the overwrite refusal. Tiny networks and
volumes, one iteration; the shipped weights are never touched (``WEIGHTS_DIR`` is a folder under ``tmp_path``)."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("SimpleITK")
pytest.importorskip("torch")
pytest.importorskip("monai")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.errors import ConfigError  # noqa: E402
from segmentation.recipe import train_segmenter  # noqa: E402
from tests.test_training_backgrounds import write_list  # noqa: E402
from tests.test_training_user_labels import _image, chest  # noqa: E402, F401 - the labelled chest fixture
from tests.test_training_workflow_review import FAST, GRID4, tiny_setup  # noqa: E402

LOGGER = "segmentation"
EMPTY_LESIONS = "the lesion file holds no lesion voxel"


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture()
def shipped(tmp_path, monkeypatch) -> Path:
    """A stand-in for the shipped weights folder (segmentation/weights), with an evaluation.json naming its id."""
    from segmentation import monai_segmenter
    from segmentation.training import model_id_of
    from tests.test_segmentation_monai import tiny_weights

    folder = tiny_weights(tmp_path / "shipped_weights")
    (folder / "evaluation.json").write_text(json.dumps({"model_ids": [model_id_of(folder)]}))
    monkeypatch.setattr(monai_segmenter, "WEIGHTS_DIR", folder)
    return folder


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------------ 1. the shipped weights folder

def test_training_into_the_shipped_weights_folder_is_refused_even_with_overwrite(tmp_path, shipped):
    """train_segmenter(out=<segmentation/weights>, overwrite=True) replaced the shipped model, which Methods then
    described as the shipped network with the model card's figures."""
    from segmentation.training import train

    kw = tiny_setup(tmp_path)
    cfg = write_list(tmp_path / "c.yaml", GRID4)
    before = _bytes(shipped)
    link = tmp_path / "link_to_weights"
    link.symlink_to(shipped, target_is_directory=True)
    for out in (shipped, shipped / "mine", link):
        with pytest.raises(ConfigError, match="the weights shipped with ctscore") as e:
            train_segmenter(out, train_config=cfg, overwrite=True, **kw)
        assert "train into another folder" in str(e.value)
    # the training loop's own entry refuses it too (a notebook calling segmentation.training.train)
    with pytest.raises(ConfigError, match="the weights shipped with ctscore"):
        train([tmp_path / "cache" / "toy.npz"], shipped, {"model_spacing_mm": [4.0] * 3, "roi_size": [8, 16, 16],
                                                          "samples_per_volume": 2, **{k: v for k, v in FAST.items()
                                                                                      if k != "device"}},
              device="cpu", init_weights=kw["init"])
    assert _bytes(shipped) == before and not (shipped / "mine").exists()
    # prepare-only writes no model: allowed; another folder: trained
    train_segmenter(shipped, train_config=cfg, prepare_only=True, **kw)
    train_segmenter(tmp_path / "mine", train_config=cfg, **kw)
    assert (tmp_path / "mine" / "model.safetensors").exists() and _bytes(shipped) == before


def test_a_replaced_shipped_model_is_named_in_a_warning_when_loaded(tmp_path, shipped, caplog):
    """The shipped folder holding a model its evaluation.json does not name loaded without a word."""
    from segmentation.monai_segmenter import MonaiSegmenter

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        MonaiSegmenter(shipped, device="cpu")
    assert not [m for m in _warnings(caplog) if "not the network shipped" in m]
    (shipped / "evaluation.json").write_text(json.dumps({"model_ids": ["monai-0000000000000000"]}))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        seg = MonaiSegmenter(shipped, device="cpu")
    said = [m for m in _warnings(caplog) if "not the network shipped" in m]
    assert said and seg.model_id in said[0] and "monai-0000000000000000" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):  # a copy elsewhere is the user's model: no warning
        MonaiSegmenter(shutil.copytree(shipped, tmp_path / "copy"), device="cpu")
    assert not [m for m in _warnings(caplog) if "not the network shipped" in m]


# ------------------------------------------------------------------------------ 2. an all-zero lesion file

def _zero_lesions_list(chest, tmp_path: Path) -> Path:  # noqa: F811 - the fixture
    f = chest["files"]
    zero = _image(np.zeros((40, 60, 60), np.uint8), tmp_path / "zero_lesions.nii.gz")
    return write_list(tmp_path / "bg.yaml", f"backgrounds:\n  - {{name: empty, image: {f['ct']}, lungs: {f['lungs']}, "
                                             f"lesions: {zero}}}\n")


def test_an_all_zero_lesion_file_is_a_warning_kept_with_the_cached_case(chest, tmp_path, caplog):  # noqa: F811
    """An all-zero lesions file without lesion_values was cached as a lesion-free case (no synthesis) without a
    word. Now a warning naming the file, kept in the cache and said again when the case is reused (also for a case
    cached before the warning existed)."""
    from segmentation.training import cache_warnings

    lst = _zero_lesions_list(chest, tmp_path)
    kw = dict(backgrounds_file=lst, cache=tmp_path / "cache", prepare_only=True, device="cpu")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        (f,) = map(Path, train_segmenter(tmp_path / "out", **kw)["cache_files"])
    said = [m for m in _warnings(caplog) if EMPTY_LESIONS in m]
    assert said and "zero_lesions.nii.gz" in said[0] and "'empty' trained as lesion-free" in said[0]
    assert "remove the file to get synthetic lesions" in said[0]
    assert any(EMPTY_LESIONS in m for m in cache_warnings(f))
    stamp = f.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        train_segmenter(tmp_path / "out", **kw)
    again = [m for m in _warnings(caplog) if EMPTY_LESIONS in m]
    assert f.stat().st_mtime_ns == stamp and again and "reused" in again[0]
    # a case cached before this warning (its warnings kept without it): said when reused all the same
    with np.load(f) as z:
        case = {k: z[k] for k in z.files}
    case["warnings"] = np.asarray(json.dumps([]))
    np.savez_compressed(f, **case)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        train_segmenter(tmp_path / "out", **kw)
    assert [m for m in _warnings(caplog) if EMPTY_LESIONS in m]


def test_train_log_records_each_cases_sources_volumes_and_the_synthesis_used(chest, tmp_path):  # noqa: F811
    """train_log.json's data entries lacked the sha256 of each case's image and label files (the cache had them)
    and its lung and lesion mL (an all-zero lesion file trained as lesion-free could not be told from the log); the
    log recorded only the synthesis overrides, not the settings used."""
    from segmentation.synth import DEFAULTS
    from segmentation.training import sha256_file

    f = chest["files"]
    lst = _zero_lesions_list(chest, tmp_path)
    two = lst.read_text() + f"  - {{name: own, image: {f['ct']}, lungs: {f['lungs']}}}\n"
    lst.write_text(two)
    kw = tiny_setup(tmp_path)
    cfg = write_list(tmp_path / "c.yaml", GRID4)
    train_segmenter(tmp_path / "out", backgrounds_file=lst, cache=tmp_path / "cache2", train_config=cfg,
                    init=kw["init"], p_empty=0.5, **FAST)
    log = json.loads((tmp_path / "out" / "train_log.json").read_text())
    data = {d["case"]: d for d in log["data"]}
    empty, own = data["empty"], data["own"]
    assert empty["source_sha256"] == {"image": sha256_file(f["ct"]), "lungs": sha256_file(f["lungs"]),
                                      "lesions": sha256_file(tmp_path / "zero_lesions.nii.gz")}
    assert own["source_sha256"] == {"image": sha256_file(f["ct"]), "lungs": sha256_file(f["lungs"]), "lesions": None}
    assert empty["lesion_ml"] == 0.0 and own["lesion_ml"] is None  # lesion-free / synthetic lesions
    # two 10-voxel-radius cylinders 29 slices long of 8 uL voxels: ~14.6 mL together, within the 4 mm grid's error
    assert empty["lung_ml"] == own["lung_ml"] == pytest.approx(2 * np.pi * 100 * 29 * 8 / 1000, rel=0.25)
    assert log["synth_used"] == {**DEFAULTS, "p_empty": 0.5}
    assert log["cfg"]["synth"] == {"p_empty": 0.5}  # the options as given stay as they were
    assert str(tmp_path) not in json.dumps([d["source_sha256"] for d in log["data"]])  # sha256, not paths


# ------------------------------------------------------------------------------ 3. an init without its manifest

def test_an_init_folder_without_its_manifest_is_refused_as_run_model_refuses_it(tmp_path):
    """--init accepted a folder with model.yaml but no manifest.json and kept its unverified inference settings
    (lesion_threshold 0.05) in a new model with a valid manifest; ctscore run --model refuses such a folder."""
    import yaml

    from segmentation.monai_segmenter import MonaiSegmenter, WeightsError

    kw = tiny_setup(tmp_path)
    init = kw["init"]
    meta = yaml.safe_load((init / "model.yaml").read_text())
    (init / "model.yaml").write_text(yaml.safe_dump({**meta, "lesion_threshold": 0.05}))
    (init / "manifest.json").unlink()
    with pytest.raises(WeightsError, match="no manifest.json: refusing unverified weights"):
        MonaiSegmenter(init, device="cpu")
    cfg = write_list(tmp_path / "c.yaml", GRID4)
    for given in (init, init / "model.safetensors"):
        with pytest.raises(ConfigError, match="no manifest.json: refusing unverified weights"):
            train_segmenter(tmp_path / "out", train_config=cfg, **{**kw, "init": given})
    assert not (tmp_path / "out").exists()
    # a bare weights file (no model.yaml beside it) is still a valid start: its network is in its metadata
    from safetensors.torch import load_file, save_file

    bare = tmp_path / "bare"
    bare.mkdir()
    save_file(load_file(str(init / "model.safetensors")), str(bare / "model.safetensors"),
              metadata={"arch": json.dumps(meta["arch"])})
    train_segmenter(tmp_path / "out", train_config=cfg, **{**kw, "init": bare / "model.safetensors"})
    assert yaml.safe_load((tmp_path / "out" / "model.yaml").read_text())["lesion_threshold"] == 0.5


# ------------------------------------------------------------------------------ 5. wording

def test_a_monai_bundle_as_init_is_refused_as_a_bundle(tmp_path):
    """--init <MONAI bundle> failed with 'does not exist ... model.safetensors'."""
    from segmentation.bundle import write_tiny_bundle

    bundle = write_tiny_bundle(tmp_path / "bundle")
    kw = tiny_setup(tmp_path)
    with pytest.raises(ConfigError, match="a MONAI bundle cannot be fine-tuned") as e:
        train_segmenter(tmp_path / "out", train_config=write_list(tmp_path / "c.yaml", GRID4),
                        **{**kw, "init": bundle})
    assert "written by ctscore train" in str(e.value) and "does not exist" not in str(e.value)


def test_the_overwrite_refusal_names_the_command_option_first(tmp_path, capsys):
    """The refusal read 'or overwrite=True (--overwrite)' on the command line; the project's pattern is the option
    with its Python twin in brackets ('--allow-missing-shards (Python: allow_missing_shards=True)')."""
    from pipeline.cli import main
    from pipeline.errors import EXIT_USAGE

    kw = tiny_setup(tmp_path)
    cfg = write_list(tmp_path / "c.yaml", GRID4)
    train_segmenter(tmp_path / "out", train_config=cfg, **kw)
    with pytest.raises(ConfigError, match=r"--overwrite \(Python: overwrite=True\) to replace it"):
        train_segmenter(tmp_path / "out", train_config=cfg, **kw)
    argv = ["train", "--data", str(kw["data"]), "--cache", str(kw["cache"]), "--init", str(kw["init"]),
            "--train-config", str(cfg), "--device", "cpu", "--iterations", "1", "--batch-size", "1",
            "--num-workers", "0", "--out", str(tmp_path / "out")]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--overwrite (Python: overwrite=True)" in err and "overwrite=True (--overwrite)" not in err


def test_methods_takes_the_shipped_ids_from_the_evaluation_alone(monkeypatch):
    """A model trained or copied into segmentation/weights is not the network evaluation.json's figures describe:
    ctscore methods must not call it the shipped one (the folder's manifest id stands in only where evaluation.json
    names no model)."""
    import segmentation.monai_segmenter as ms
    from pipeline.methods import _shipped_ids

    monkeypatch.setattr(ms, "shipped_model_id", lambda: "monai-4f30d4cfb1773df0")  # what the folder holds now
    assert _shipped_ids({"model_ids": ["monai-b04876427b83751d"]}) == {"monai-b04876427b83751d"}
    assert _shipped_ids({}) == {"monai-4f30d4cfb1773df0"}  # no figures quoted then


@pytest.mark.parametrize("which", ["out", "cache"])
def test_an_output_or_cache_folder_that_cannot_be_made_fails_before_caching(tmp_path, monkeypatch, which):
    """--out (or --cache) under a file was found only after every case had been cached (23-32 s on two cores, an hour
    on a real list), as a raw FileExistsError that a notebook's ``except CTScoreError`` missed."""
    import segmentation.recipe as recipe
    from pipeline.errors import CTScoreError

    monkeypatch.setattr(recipe, "_cache", lambda *a, **k: pytest.fail("cached before the output was checked"))
    (tmp_path / "afile").write_text("x")
    paths = {"out": tmp_path / "model", "cache": tmp_path / "cache", which: tmp_path / "afile" / "sub"}
    with pytest.raises(CTScoreError) as e:
        train_segmenter(paths["out"], cache=paths["cache"], backgrounds=[str(tmp_path)], iterations=1)
    assert e.value.code == "OUTPUT_UNWRITABLE" and "not a folder" in str(e.value)
