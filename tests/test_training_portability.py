"""Training on macOS and Windows (portability audit).

1. Data loader workers started with 'spawn' (the default on macOS and Windows) receive the dataset and its
   transforms pickled: they were classes defined inside functions, and ``ctscore train`` stopped at its first
   batch ("Can't pickle local object '_train.<locals>.Sampled'").
2. Text files (backgrounds lists, training configs, bundle label maps and configs) were read in the locale's
   encoding (cp1252 on Windows, ASCII under LC_ALL=C): a non-ASCII path or name was garbled or refused.
3. Background and stage names were unique only case-sensitively, but ``Case01.npz`` and ``case01.npz`` are one
   file on a case-insensitive file system (Windows, macOS): one case was trained twice, the other never.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError
from tests.toy_cases import toy_cached_case

REPO = Path(__file__).resolve().parents[1]
TINY_ARCH = {"channels": [4, 8], "strides": [2], "num_res_units": 0}


def _toy_cases(folder: Path) -> list[Path]:
    """Two tiny cached cases: one gets synthetic lesions, one has its own lesion mask (trained as it is)."""
    a = toy_cached_case(folder / "a.npz", noise_hu=10.0)
    with np.load(toy_cached_case(folder / "b0.npz", noise_hu=5.0)) as z:
        d = dict(z)
    les = np.zeros(d["lungs"].shape, np.uint8)
    les[8:12, 12:20, 8:14] = 1
    np.savez_compressed(folder / "b.npz", **d, lesions=les)
    return [a, folder / "b.npz"]


def _cfg(**kw) -> dict:
    from segmentation.training import DEFAULT_TRAIN

    return {**DEFAULT_TRAIN, "roi_size": [16, 32, 32], "samples_per_volume": 2, "batch_size": 2,
            "deform_prob": 0.5, "lesion_instance_weight": 1.0, "synth": {"p_empty": 0.0}, **kw}


def _same(x: dict, y: dict) -> bool:
    return x.keys() == y.keys() and all(np.array_equal(np.asarray(x[k]), np.asarray(y[k])) for k in x)


# ------------------------------------------------------------------------------ 1. spawn start method


def test_training_dataset_and_transforms_pickle(tmp_path):
    """The transforms and the dataset as the training code builds them survive pickling (what a 'spawn' worker
    gets), and the copy draws the same crops as the original for the same seed."""
    from monai.data.utils import set_rnd

    from segmentation.training import _monai_transforms

    files = _toy_cases(tmp_path)
    for before in (False, True):
        load, rand = _monai_transforms(_cfg(deform_before_synth=before))
        load2, rand2 = pickle.loads(pickle.dumps((load, rand)))
        rand.set_random_state(3)
        rand2.set_random_state(3)
        assert _same(rand(load({"path": str(files[0])})), rand2(load2({"path": str(files[0])})))
    from segmentation.training import _training_dataset  # the dataset train() draws from

    ds = _training_dataset(files, _cfg())
    ds2 = pickle.loads(pickle.dumps(ds))
    assert len(ds2) == len(ds) == 4
    for d in (ds, ds2):
        set_rnd(d, 12345)  # as MONAI's worker_init_fn seeds a worker's copy
    for i in range(len(ds)):
        assert _same(ds[i], ds2[i])


_SPAWN_SCRIPT = textwrap.dedent("""
    import json, multiprocessing as mp, sys
    from pathlib import Path

    if __name__ == "__main__":
        mp.set_start_method("spawn")  # the default on macOS and Windows
        import numpy as np
        import torch
        from monai.data import DataLoader

        from segmentation.training import DEFAULT_TRAIN, train

        files, out, cfg, arch = json.loads(sys.argv[1])
        info = train(files, out, {**cfg, "num_workers": 1, "iterations": 2}, arch=arch, device="cpu")
        assert info["iterations"] == 2 and (Path(out) / "model.safetensors").is_file()
        from segmentation.training import _training_dataset  # the dataset train() draws from
        # the same crops whichever way the worker was started
        batches = {}
        for ctx in [m for m in ("spawn", "fork") if m in mp.get_all_start_methods()]:
            torch.manual_seed(7)
            loader = DataLoader(_training_dataset(files, {**DEFAULT_TRAIN, **cfg}), batch_size=2, shuffle=True, num_workers=1,
                                multiprocessing_context=ctx)
            batches[ctx] = [{k: np.asarray(v) for k, v in b.items()} for b in loader]
        if "fork" in batches:
            assert len(batches["fork"]) == len(batches["spawn"]) == 2
            for x, y in zip(batches["fork"], batches["spawn"]):
                assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x), "spawn != fork"
        print("SPAWN-OK")
""")


def test_train_with_spawned_data_loader_workers(tmp_path):
    """``train`` with num_workers > 0 under the 'spawn' start method (a fresh interpreter, as on macOS and
    Windows): it trains, and its workers draw the same crops as forked ones."""
    files = [str(p) for p in _toy_cases(tmp_path / "cache")]
    cfg = {k: v for k, v in _cfg().items() if k in ("roi_size", "samples_per_volume", "batch_size", "deform_prob",
                                                     "lesion_instance_weight", "synth")}
    script = tmp_path / "spawn_train.py"
    script.write_text(_SPAWN_SCRIPT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, str(script), json.dumps([files, str(tmp_path / "out"), cfg, TINY_ARCH])],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0 and "SPAWN-OK" in r.stdout, r.stderr[-3000:]


# ------------------------------------------------------------------------------ 2. text encodings


@pytest.fixture()
def cp1252_default(monkeypatch):
    """Text files opened without an encoding decode as cp1252 (the default on Windows)."""
    real = io.text_encoding

    def text_encoding(encoding, stacklevel=2):
        return "cp1252" if encoding is None else real(encoding, stacklevel)

    monkeypatch.setattr(io, "text_encoding", text_encoding)


def test_non_ascii_paths_and_names_under_a_cp1252_default(tmp_path, cp1252_default):
    from segmentation.recipe import read_train_config
    from segmentation.training import read_backgrounds_file

    probe = tmp_path / "probe.txt"
    probe.write_bytes("ü".encode())
    if probe.read_text() == "ü":  # pragma: no cover - a Python whose pathlib no longer asks io.text_encoding
        pytest.skip("cannot simulate a cp1252 default encoding on this Python")
    folder = tmp_path / "Fälle"
    folder.mkdir()
    (folder / "ct.nii.gz").write_bytes(b"")
    (folder / "lungs.nii.gz").write_bytes(b"")
    lst = tmp_path / "bg.yaml"
    lst.write_bytes("backgrounds:\n  - {name: Lüngen, image: Fälle/ct.nii.gz, lungs: Fälle/lungs.nii.gz}\n"
                    .encode())
    (bg,) = read_backgrounds_file(lst)
    assert bg.name == "Lüngen" and bg.image == (folder / "ct.nii.gz").resolve()
    assert bg.lungs == (folder / "lungs.nii.gz").resolve()
    cfg = tmp_path / "recipe.yaml"
    cfg.write_bytes("backgrounds_file: Fälle.yaml\nstages:\n  - {name: Grundstufe-ä}\n  - {name: Feinstufe-ö}\n"
                    .encode())
    doc, stages, problem = read_train_config(cfg)
    assert problem is None and doc["backgrounds_file"] == "Fälle.yaml"
    assert [s["name"] for s in stages] == ["Grundstufe-ä", "Feinstufe-ö"]


_ASCII_SCRIPT = textwrap.dedent("""
    import json, locale, sys
    from pathlib import Path

    assert locale.getpreferredencoding(False).lower() in ("ascii", "ansi_x3.4-1968", "us-ascii"), \\
        locale.getpreferredencoding(False)
    from segmentation.bundle import BundleSegmenter
    from segmentation.recipe import read_train_config
    from segmentation.training import read_backgrounds_file

    lst, cfg, bundle = sys.argv[1:]
    (bg,) = read_backgrounds_file(lst)
    doc, stages, problem = read_train_config(Path(cfg))
    seg = BundleSegmenter(bundle, device="cpu")
    print(json.dumps({"bg": bg.name, "problem": problem, "stages": [s["name"] for s in stages], "bundle": seg.name}))
""")


def test_text_files_are_utf8_where_the_locale_is_ascii(tmp_path):
    """Under LC_ALL=C without UTF-8 mode (the locale's encoding is ASCII), a backgrounds list, a training config
    and a bundle (label map and config) with non-ASCII names are read as UTF-8, not refused."""
    from segmentation.bundle import LABELS_FILE, write_tiny_bundle

    (tmp_path / "scan").mkdir()
    (tmp_path / "scan" / "ct.nii.gz").write_bytes(b"")
    lst = tmp_path / "bg.yaml"
    lst.write_bytes("backgrounds:\n  - {name: Lüngen-1, image: scan/ct.nii.gz}\n".encode())
    cfg = tmp_path / "recipe.yaml"
    cfg.write_bytes("stages:\n  - {name: Grundstufe-ä}\n".encode())
    bundle = write_tiny_bundle(tmp_path / "bundle")
    labels = (bundle / LABELS_FILE).read_text(encoding="utf-8").replace("name: tiny-bundle", "name: Bündel-ü")
    (bundle / LABELS_FILE).write_bytes(labels.encode())
    conf = bundle / "configs" / "inference.json"
    conf.write_bytes(json.dumps({**json.loads(conf.read_bytes()), "description": "Lungen (Müller)"},
                                ensure_ascii=False).encode())
    script = tmp_path / "ascii_read.py"
    script.write_text(_ASCII_SCRIPT, encoding="utf-8")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONIOENCODING": "utf-8",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, str(script), str(lst), str(cfg), str(bundle)], cwd=str(tmp_path), env=env,
                       capture_output=True, timeout=240)
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")[-3000:]
    got = json.loads(r.stdout.decode("utf-8").strip().splitlines()[-1])
    assert got == {"bg": "Lüngen-1", "problem": None, "stages": ["Grundstufe-ä"], "bundle": "Bündel-ü"}


# ------------------------------------------------------------------------------ 3. names that differ in case


def test_background_names_differing_in_case_alone_are_refused(tmp_path):
    from segmentation.training import read_backgrounds_file

    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "ct.nii.gz").write_bytes(b"")
    lst = tmp_path / "bg.yaml"
    lst.write_text("backgrounds:\n  - {name: Case01, image: one/ct.nii.gz}\n"
                   "  - {name: case01, image: two/ct.nii.gz}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="must be unique") as exc:
        read_backgrounds_file(lst)
    assert "'Case01'" in str(exc.value) and "'case01'" in str(exc.value) and str(lst) in str(exc.value)
    lst.write_text("backgrounds:\n  - {name: Case01, image: one/ct.nii.gz}\n"
                   "  - {name: Case02, image: two/ct.nii.gz}\n", encoding="utf-8")
    assert [b.name for b in read_backgrounds_file(lst)] == ["Case01", "Case02"]


def test_background_names_differing_in_case_are_a_usage_error_of_the_command(tmp_path):
    from pipeline.cli import main
    from pipeline.errors import EXIT_USAGE

    for d in ("one", "two"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "ct.nii.gz").write_bytes(b"")
    lst = tmp_path / "bg.yaml"
    lst.write_text("backgrounds:\n  - {name: Case01, image: one/ct.nii.gz}\n"
                   "  - {name: CASE01, image: two/ct.nii.gz}\n", encoding="utf-8")
    assert main(["train", "--backgrounds-file", str(lst), "--cache", str(tmp_path / "cache"),
                 "--prepare-only"]) == EXIT_USAGE
    assert not (tmp_path / "cache").exists()


def test_stage_names_differing_in_case_alone_are_refused(tmp_path):
    from segmentation.recipe import read_train_config, train_segmenter

    cfg = tmp_path / "recipe.yaml"
    cfg.write_text("stages:\n  - {name: Fine}\n  - {name: fine}\n", encoding="utf-8")
    problem = read_train_config(cfg)[2]
    assert "stage names must be unique" in problem and "'Fine'" in problem and "'fine'" in problem
    (tmp_path / "data" / "toy").mkdir(parents=True)
    with pytest.raises(ConfigError, match="stage names must be unique"):
        train_segmenter(tmp_path / "out", data=tmp_path / "data", cache=tmp_path / "cache", train_config=cfg,
                        device="cpu")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    cfg.write_text("stages:\n  - {name: coarse}\n  - {name: fine}\n", encoding="utf-8")
    assert read_train_config(cfg)[2] is None


def test_backgrounds_of_two_lists_differing_in_case_alone_are_refused(tmp_path):
    """A stage's backgrounds list and the command's, naming different scans 'Case01' and 'case01': one cache file
    where case is not told apart. The same scan under both spellings stays allowed (one source)."""
    from segmentation.recipe import _check_case_names
    from segmentation.training import Background

    for d in ("data/Case01", "other/case01"):
        (tmp_path / d).mkdir(parents=True)
    spacing, teacher = [2.0, 2.0, 2.0], [1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="two backgrounds named 'Case01' and 'case01'"):
        _check_case_names([[tmp_path / "data" / "Case01"], [tmp_path / "other" / "case01"]], spacing, teacher)
    _check_case_names([[tmp_path / "data" / "Case01"], [Background("case01", tmp_path / "data" / "Case01")]],
                      spacing, teacher)
