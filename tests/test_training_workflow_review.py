"""Review of the fine-tuning workflow (``ctscore train`` / ``segmentation.recipe.train_segmenter``) as a researcher
uses it on their own labels: which backgrounds a recipe stage trains on, resuming an interrupted recipe, the lock on
``--out``, what ``--overwrite`` leaves behind, the provenance in ``train_log.json`` and the fine-tune learning rate.
Tiny networks and volumes, one or two iterations."""

from __future__ import annotations

import json
import logging
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("SimpleITK")
pytest.importorskip("torch")
pytest.importorskip("monai")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.errors import ConfigError, OutputLocked  # noqa: E402
from segmentation.recipe import train_segmenter  # noqa: E402
from tests.test_training_backgrounds import toy_volume, write_list  # noqa: E402

FAST = dict(device="cpu", iterations=1, batch_size=1, num_workers=0)
GRID4 = "model_spacing_mm: [4.0, 4.0, 4.0]\nroi_size: [8, 16, 16]\nsamples_per_volume: 2\n"


def tiny_setup(tmp_path: Path) -> dict:
    """A tiny init model (4 mm, 2-level network) and a cached toy case at 4 mm: keyword arguments of a fast run."""
    from tests.test_segmentation_monai import tiny_weights
    from tests.toy_cases import toy_cached_case

    init = tiny_weights(tmp_path / "init")
    (tmp_path / "data" / "toy").mkdir(parents=True)
    toy_cached_case(tmp_path / "cache" / "toy.npz", spacing=4.0, noise_hu=20)
    return dict(data=tmp_path / "data", cache=tmp_path / "cache", init=init, **FAST)


def recipe(tmp_path: Path, body: str = "  - {name: a}\n  - {name: b}\n", name: str = "r.yaml") -> Path:
    return write_list(tmp_path / name, GRID4 + "stages:\n" + body)


# ------------------------------------------------------------------------------------------ 1. stage lists

def test_a_stage_list_that_replaces_the_command_list_is_named_in_a_warning(tmp_path, caplog):
    """The shipped recipe's stages 4-6 name their own background list: run with a user's --backgrounds-file, those
    stages trained on the shipped list instead, without a word, and the result (the last stage) had not seen the
    user's cases. Now a warning names the stages, the list and the command's, and each stage's log records the list
    it trained on."""
    toy_volume(tmp_path / "d")
    entry = "  - name: {n}\n    image: d/ct.nii.gz\n    lungs: d/labels.nii.gz\n    right: [12, 524, 780]\n    left: [9, 777]\n"
    write_list(tmp_path / "mine.yaml", "backgrounds:\n" + entry.format(n="mine"))
    write_list(tmp_path / "theirs.yaml", "backgrounds:\n" + entry.format(n="theirs"))
    cfg = write_list(tmp_path / "c.yaml", "roi_size: [16, 32, 32]\nsamples_per_volume: 2\nstages:\n  - {name: s1}\n"
                     f"  - {{name: s2, backgrounds_file: {tmp_path / 'theirs.yaml'}}}\n")
    with caplog.at_level(logging.WARNING, logger="segmentation.recipe"):
        train_segmenter(tmp_path / "out", backgrounds_file=tmp_path / "mine.yaml", cache=tmp_path / "cache",
                        train_config=cfg, **FAST)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "s2" in r.getMessage()]
    assert warned and "theirs.yaml" in warned[0] and "mine.yaml" in warned[0] and "last one" in warned[0]
    log1 = json.loads((tmp_path / "out" / "train_log_s1.json").read_text())
    log2 = json.loads((tmp_path / "out" / "train_log_s2.json").read_text())
    assert log1["cases"] == ["mine"] and log2["cases"] == ["theirs"]
    assert log1["backgrounds"]["from"] == "--backgrounds-file"
    assert log2["backgrounds"]["from"] == "stage backgrounds_file"
    assert log2["backgrounds"]["path"].endswith("theirs.yaml") and len(log2["backgrounds"]["sha256"]) == 64
    # the label mapping of each case is recorded
    assert log1["backgrounds"]["cases"] == [{"name": "mine", "own_lungs": True, "own_lesions": False,
                                             "right": [12, 524, 780], "left": [9, 777]}]


# ------------------------------------------------------------------------------------------ 2. resume, lock

def interrupt_stage(monkeypatch, stage: str) -> None:
    """Make training crash when it reaches ``stage`` (as an interrupted run)."""
    import segmentation.training as training

    real = training.train

    def crash(files, out_dir, *a, **k):
        if Path(out_dir).name == stage:
            raise KeyboardInterrupt
        return real(files, out_dir, *a, **k)

    monkeypatch.setattr(training, "train", crash)


def test_an_interrupted_recipe_resumes_by_stage(tmp_path, monkeypatch, caplog):
    """Rerunning a recipe after an interruption trained its finished stages again (hours on a CPU) and overwrote
    them. Now a finished stage made with the same options, data and starting weights is reused (logged); one made
    with other options is refused without --overwrite, naming the stage."""
    kw = tiny_setup(tmp_path)
    cfg = recipe(tmp_path)
    out = tmp_path / "out"
    interrupt_stage(monkeypatch, "b")
    with pytest.raises(KeyboardInterrupt):
        train_segmenter(out, train_config=cfg, **kw)
    monkeypatch.undo()
    a = out / "stages" / "a" / "model.safetensors"
    before, mtime = a.read_bytes(), a.stat().st_mtime_ns
    assert not (out / "model.safetensors").exists()
    # other options for stage a: refused, nothing touched
    with pytest.raises(ConfigError, match="stages/a holds stage 'a' of an earlier run made with other options"):
        train_segmenter(out, train_config=cfg, **{**kw, "lr": 1e-5})
    assert a.stat().st_mtime_ns == mtime
    with caplog.at_level(logging.INFO, logger="segmentation.recipe"):
        res = train_segmenter(out, train_config=cfg, **kw)
    assert [s.get("resumed", False) for s in res["stages"]] == [True, False]
    assert any("reused" in r.getMessage() and "stage a" in r.getMessage() for r in caplog.records)
    assert a.read_bytes() == before and a.stat().st_mtime_ns == mtime
    # stage b started from the reused stage a
    log_b = json.loads((out / "train_log_b.json").read_text())
    from segmentation.training import sha256_file

    assert log_b["init_sha256"] == sha256_file(a)
    assert (out / "model.safetensors").read_bytes() == (out / "stages" / "b" / "model.safetensors").read_bytes()


def test_finished_stages_of_another_recipe_are_not_left_beside_a_new_model(tmp_path, monkeypatch):
    """An interrupted recipe's finished stages stayed in --out under a rerun with other stage names: refused now
    (they would sit beside the new model as if it were made from them), unless --overwrite, which removes them."""
    kw = tiny_setup(tmp_path)
    out = tmp_path / "out"
    interrupt_stage(monkeypatch, "b")
    with pytest.raises(KeyboardInterrupt):
        train_segmenter(out, train_config=recipe(tmp_path), **kw)
    monkeypatch.undo()
    other = recipe(tmp_path, "  - {name: x}\n  - {name: y}\n", "other.yaml")
    with pytest.raises(ConfigError, match=r"files of an earlier run .*stages/a"):
        train_segmenter(out, train_config=other, **kw)
    train_segmenter(out, train_config=other, overwrite=True, **kw)
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["x", "y"]
    assert not (out / "train_log_a.json").exists() and not (out / ".replaced").exists()


def test_out_is_locked_while_a_run_trains_into_it(tmp_path):
    """Two runs could write one --out at the same time (the overwrite guard is a look, not a lock)."""
    from segmentation.recipe import out_lock

    kw = tiny_setup(tmp_path)
    out = tmp_path / "out"
    held, release = threading.Event(), threading.Event()

    def holder():
        with out_lock(out):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(30)
        with pytest.raises(OutputLocked, match="writing to"):
            train_segmenter(out, train_config=write_list(tmp_path / "c.yaml", GRID4), **kw)
    finally:
        release.set()
        t.join()
    assert not (out / "model.safetensors").exists()
    train_segmenter(out, train_config=tmp_path / "c.yaml", **kw)  # released: the run goes on
    assert (out / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------ 3. provenance

def test_train_log_records_data_digests_versions_and_model_ids_and_the_manifest_covers_it(tmp_path):
    """train_log.json lacked the digests of the training data, the versions of ctscore and MONAI and the starting
    model's id, and the manifest did not cover it."""
    import monai

    from pipeline import __version__
    from segmentation.monai_segmenter import MonaiSegmenter
    from segmentation.training import sha256_file

    kw = tiny_setup(tmp_path)
    out = tmp_path / "out"
    train_segmenter(out, train_config=write_list(tmp_path / "c.yaml", GRID4), **kw)
    log = json.loads((out / "train_log.json").read_text())
    assert log["data"] == [{"case": "toy", "sha256": sha256_file(tmp_path / "cache" / "toy.npz"),
                            "bytes": (tmp_path / "cache" / "toy.npz").stat().st_size}]
    assert (log["ctscore"], log["monai"]) == (__version__, monai.__version__) and log["torch"]
    assert log["init_sha256"] == sha256_file(kw["init"] / "model.safetensors")
    assert log["init_model_id"] == MonaiSegmenter(kw["init"], device="cpu").model_id
    assert log["model_id"] == MonaiSegmenter(out, device="cpu").model_id
    assert log["backgrounds"]["from"] == "--data" and len(log["settings_sha256"]) == 64
    man = json.loads((out / "manifest.json").read_text())["files"]
    assert man["train_log.json"]["sha256"] == sha256_file(out / "train_log.json")
    # a recipe: the manifest in --out covers every stage's log beside the model
    train_segmenter(tmp_path / "out2", train_config=recipe(tmp_path), **kw)
    man = json.loads((tmp_path / "out2" / "manifest.json").read_text())["files"]
    assert set(man) == {"model.safetensors", "model.yaml", "train_log_a.json", "train_log_b.json"}
    assert man["train_log_b.json"]["sha256"] == sha256_file(tmp_path / "out2" / "train_log_b.json")
    assert MonaiSegmenter(tmp_path / "out2", device="cpu").model_id


def test_overwrite_clears_the_stages_and_logs_of_the_run_it_replaces(tmp_path):
    """After --overwrite, the earlier recipe's train_log_<stage>.json and stages/ stayed beside the new model."""
    kw = tiny_setup(tmp_path)
    out = tmp_path / "out"
    train_segmenter(out, train_config=recipe(tmp_path), **kw)
    assert (out / "train_log_a.json").exists() and (out / "stages" / "b").is_dir()
    train_segmenter(out, train_config=write_list(tmp_path / "c.yaml", GRID4), overwrite=True, **kw)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.safetensors", "model.yaml",
                                                     "train_log.json"]
    # the init weights cannot be the model --overwrite replaces
    with pytest.raises(ConfigError, match="the model --overwrite replaces"):
        train_segmenter(out, train_config=tmp_path / "c.yaml", overwrite=True, **{**kw, "init": out})


# ------------------------------------------------------------------------------------------ 5. fine-tune lr

def test_a_fine_tune_without_an_lr_gets_the_fine_tune_learning_rate(tmp_path):
    """--init kept the from-scratch peak learning rate (2e-3), ten times what the project's fine-tunes used."""
    from segmentation.recipe import FINE_TUNE_LR

    kw = tiny_setup(tmp_path)
    cfg = write_list(tmp_path / "c.yaml", GRID4)
    train_segmenter(tmp_path / "o1", train_config=cfg, **kw)
    assert json.loads((tmp_path / "o1" / "train_log.json").read_text())["cfg"]["lr"] == FINE_TUNE_LR == 2e-4
    train_segmenter(tmp_path / "o2", train_config=cfg, **{**kw, "lr": 1e-3})  # given: kept
    assert json.loads((tmp_path / "o2" / "train_log.json").read_text())["cfg"]["lr"] == 1e-3
    write_list(tmp_path / "c2.yaml", GRID4 + "lr: 5.0e-4\n")  # in the config: kept
    train_segmenter(tmp_path / "o3", train_config=tmp_path / "c2.yaml", **kw)
    assert json.loads((tmp_path / "o3" / "train_log.json").read_text())["cfg"]["lr"] == 5e-4


def test_the_same_overwrite_command_run_again_resumes_its_own_stages(tmp_path, monkeypatch):
    """``--overwrite`` of a finished model, interrupted in its second stage: the same command run again reuses the
    first stage it had trained (out holds no model then), and the earlier run's files are gone at the end."""
    kw = tiny_setup(tmp_path)
    out = tmp_path / "out"
    train_segmenter(out, train_config=write_list(tmp_path / "c.yaml", GRID4), **kw)  # an earlier model
    cfg = recipe(tmp_path)
    interrupt_stage(monkeypatch, "b")
    with pytest.raises(KeyboardInterrupt):
        train_segmenter(out, train_config=cfg, overwrite=True, **kw)
    monkeypatch.undo()
    assert not (out / "model.safetensors").exists() and (out / ".replaced" / "model.safetensors").exists()
    mtime = (out / "stages" / "a" / "model.safetensors").stat().st_mtime_ns
    res = train_segmenter(out, train_config=cfg, overwrite=True, **kw)
    assert [s.get("resumed", False) for s in res["stages"]] == [True, False]
    assert (out / "stages" / "a" / "model.safetensors").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.safetensors", "model.yaml", "stages",
                                                     "train_log_a.json", "train_log_b.json"]


def test_an_interrupted_overwrite_run_twice_keeps_the_replaced_model(tmp_path, monkeypatch):
    """A second interrupted --overwrite run deleted .replaced, the only copy of the model the first replaced (a
    reviewer's reproduction)."""
    kw = tiny_setup(tmp_path)
    out = tmp_path / "out"
    train_segmenter(out, train_config=write_list(tmp_path / "c.yaml", GRID4), **kw)   # the user's good model
    original = (out / "model.safetensors").read_bytes()
    cfg = recipe(tmp_path)
    interrupt_stage(monkeypatch, "a")       # first --overwrite run dies in its first stage
    with pytest.raises(KeyboardInterrupt):
        train_segmenter(out, train_config=cfg, overwrite=True, **kw)
    assert (out / ".replaced" / "model.safetensors").read_bytes() == original
    with pytest.raises(KeyboardInterrupt):  # the same command again, dies again (OOM, Ctrl-C, wall-time limit)
        train_segmenter(out, train_config=cfg, overwrite=True, **kw)
    left = [p for p in out.rglob("model.safetensors") if p.read_bytes() == original]
    assert left, "the original model is gone and no new one was written"


def test_the_resume_key_follows_what_a_case_was_made_from_not_its_bytes(tmp_path):
    """The resume key hashed the cached files' bytes: a cache made again elsewhere (another --cache, an anatomy mix
    registered again on another machine: last bits differ) made a finished stage "other data", refused. Now a case is
    known by its cache fingerprint (what it was made from), by its bytes only when it has none."""
    import numpy as np

    from segmentation.recipe import _data_digests, _settings_key

    def case(folder: str, noise: int, source: str | None) -> Path:
        path = tmp_path / folder / "toy.npz"
        path.parent.mkdir(exist_ok=True)
        arrays = {"image": np.full((4, 8, 8), 40 + noise, np.int16), "lungs": np.zeros((4, 8, 8), np.uint8)}
        if source is not None:
            arrays["source"] = np.array(source)
        np.savez_compressed(path, **arrays)
        return path

    def key(path: Path) -> str:
        return _settings_key({}, _data_digests([path]), None)

    assert key(case("a", 0, "sources 1")) == key(case("b", 1, "sources 1"))  # remade elsewhere: the same case
    assert key(case("c", 0, "sources 1")) != key(case("d", 0, "sources 2"))  # made from other sources
    assert key(case("e", 0, None)) != key(case("f", 1, None))  # no fingerprint: its bytes decide
    assert _data_digests([tmp_path / "a" / "toy.npz"])[0]["sha256"] != _data_digests([tmp_path / "b" / "toy.npz"])[0][
        "sha256"]  # the log still records each file's own digest
