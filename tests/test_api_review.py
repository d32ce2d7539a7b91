"""Review of the Python API twins (``run_pipeline``, ``build_inventory``, ``train_segmenter``) as a notebook calls
them: notebook-natural values (paths, tuples, numpy arrays and scalars, a YAML path, a dict of batch options) are
taken or refused with a ctscore error, the same as the CLI's; a partial configuration is merged and checked by
``build_inventory`` too; the library leaves the process's global state alone (matplotlib backend and pyplot,
torch's deterministic-algorithms switch, the global random generators and cuDNN flags); the docstring of
``run_pipeline`` names every key it returns."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError, NoEligibleSeries

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_dicoms"
QUIET = {"outputs": {"write_qc_png": False, "write_masks": False}}


def _sample() -> Path:
    if not SAMPLE.is_dir() or not any(SAMPLE.iterdir()):
        pytest.skip("sample_dicoms missing (run scripts/make_sample_dicoms.py)")
    return SAMPLE


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory):
    """One classical run of sample_dicoms as a notebook writes it: a pathlib.Path for lobes_dir, a tuple spacing, a
    numpy integer, a numpy bool and a dict of batch options."""
    from pipeline.run import run_pipeline

    tmp = tmp_path_factory.mktemp("api_run")
    (tmp / "lobes").mkdir()
    out = tmp / "out"
    cfg = {"segmentation": {"method": "classical"},
           "resample": {"spacing_mm": (1.5, 1.5, 1.5)},
           "selection": {"min_slices": np.int64(10)},
           "scoring": {"lobar": {"lobes_dir": tmp / "lobes"}},
           "outputs": {"write_qc_png": np.bool_(False), "write_masks": False}}
    from tests.conftest import segment_memo

    with segment_memo():  # the unchanged sample is segmented once per test process (tests/conftest.py)
        summary = run_pipeline(_sample(), out, cfg, batch={"progress": False, "timeout_s": 0})
    return summary, out, tmp


# ------------------------------------------------------------------------------------------ 1: paths in the config

def test_path_in_the_config_is_taken_as_text_and_the_run_finishes(notebook_run):
    """A pathlib.Path passed validation (a None-default key took anything) and crashed in get_segmenter's
    json.dumps: TypeError "Object of type PosixPath is not JSON serializable"."""
    summary, out, tmp = notebook_run
    assert summary["n_series"] == 1 and summary["n_ok"] == 1, summary["failures"]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["scoring"]["lobar"]["lobes_dir"] == str(tmp / "lobes")
    assert "LOBES_NOT_FOUND" in summary["scans"]["qc_flags"].iloc[0]


def test_path_in_the_config_passes_the_preflight(tmp_path):
    """The reported crash: run_pipeline's preflight built the segmenter keyed by json.dumps(cfg)."""
    from pipeline.batch import BatchOptions, preflight

    cfg = load_config(extra={"segmentation": {"method": "classical"}, "scoring": {"lobar": {"lobes_dir": tmp_path}}})
    preflight(cfg, BatchOptions())


def test_path_where_text_is_expected_is_converted(tmp_path):
    cfg = load_config(extra={"segmentation": {"method": REPO / "segmentation" / "weights"},
                             "scoring": {"lobar": {"lobes_dir": tmp_path}}})
    assert cfg["segmentation"]["method"] == str(REPO / "segmentation" / "weights")
    assert cfg["scoring"]["lobar"]["lobes_dir"] == str(tmp_path)
    json.dumps(cfg)  # what get_segmenter and run.json do with it


def test_a_folder_named_by_a_number_is_taken_as_its_name(tmp_path, monkeypatch):
    """``--set scoring.lobar.lobes_dir=2020``: YAML reads the folder name 2020 as a number."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "2020").mkdir()
    folder = load_config(overrides=["scoring.lobar.lobes_dir=2020"])["scoring"]["lobar"]["lobes_dir"]
    assert folder == str((tmp_path / "2020").resolve())  # made absolute, as --lobes does


@pytest.mark.parametrize("value", [2.5, True, ["a"], {"a": 1}, object()])
def test_non_text_for_a_key_without_default_is_refused_naming_it(value):
    with pytest.raises(ConfigError, match=r"scoring\.lobar\.lobes_dir must be text") as e:
        load_config(extra={"scoring": {"lobar": {"lobes_dir": value}}})
    assert e.value.code == "BAD_CONFIG"


# ------------------------------------------------------------------------------------------ 2: build_inventory

def test_build_inventory_merges_a_partial_config_over_the_defaults():
    """{"selection": {"min_slices": 500}} raised a raw KeyError 'preferences'."""
    from pipeline.inventory import build_inventory

    inv = build_inventory(_sample(), {"selection": {"min_slices": 500}})
    assert not inv.chosen and "TOO_FEW_SLICES" in " ".join(inv.stacks["reason"].astype(str))
    assert len(build_inventory(_sample(), {"selection": {"min_slices": np.int64(20)}}).chosen) == 1


def test_build_inventory_refuses_what_ctscore_scan_refuses(capsys):
    """An unknown section was silently ignored, while `ctscore scan --set selection.bogus=1` is BAD_CONFIG."""
    from pipeline.cli import main
    from pipeline.inventory import build_inventory

    with pytest.raises(ConfigError, match="unknown key 'nosuch'"):
        build_inventory(_sample(), {"nosuch": {}})
    with pytest.raises(ConfigError) as e:
        build_inventory(_sample(), {"selection": {"bogus": 1}})
    assert main(["scan", str(_sample()), "--set", "selection.bogus=1"]) == 1
    assert str(e.value) in capsys.readouterr().err


def test_build_inventory_takes_a_yaml_path(tmp_path):
    from pipeline.inventory import build_inventory

    (tmp_path / "my.yaml").write_text("selection:\n  min_slices: 500\n")
    assert not build_inventory(_sample(), tmp_path / "my.yaml").chosen
    assert not build_inventory(_sample(), str(tmp_path / "my.yaml")).chosen


# ------------------------------------------------------------------------------------------ 3: matplotlib

def _toy_scan():
    from scoring.landmarks import Landmark

    hu = np.full((30, 40, 40), 40.0, np.float32)
    lungs = np.zeros(hu.shape, np.uint8)
    hu[3:27, 8:32, 4:18], lungs[3:27, 8:32, 4:18] = -850, 1
    hu[3:27, 8:32, 22:36], lungs[3:27, 8:32, 22:36] = -850, 2
    classes = np.zeros(hu.shape, np.uint8)
    classes[10:14, 12:16, 8:12] = 2
    z = np.arange(30, dtype=float) * -5.0
    lms = {"carina": Landmark("carina", -50.0, "detected", "high"), "dome_right": Landmark("dome_right", -120.0, "estimated", "low")}
    return hu, lungs, classes, z, lms


def test_pictures_leave_the_matplotlib_backend_and_pyplot_alone(monkeypatch):
    """qc_png and levels_png called matplotlib.use("Agg") (a notebook's inline plots stopped showing after
    run_pipeline) and drew through pyplot."""
    import io

    import matplotlib
    from PIL import Image

    from pipeline.qc import qc_png
    from pipeline.qc_levels import levels_png

    def refuse(*a, **k):
        raise AssertionError("the global matplotlib backend was changed")

    monkeypatch.setattr(matplotlib, "use", refuse)
    import matplotlib.pyplot as plt

    for name in ("figure", "subplots", "close"):
        monkeypatch.setattr(plt, name, refuse)
    backend = matplotlib.get_backend()
    hu, lungs, classes, z, lms = _toy_scan()
    png = qc_png(hu, lungs, classes, z, (5.0, 1.0, 1.0), {k: lm.z_mm for k, lm in lms.items()}, title="t",
                 estimated={"dome_right"})
    levels = levels_png(hu, lungs, z, (5.0, 1.0, 1.0), lms, title="t")
    assert matplotlib.get_backend() == backend
    assert Image.open(io.BytesIO(png)).size == (1250, 540)
    assert Image.open(io.BytesIO(levels)).size == (1100, 700)


# ------------------------------------------------------------------------------------------ 4: torch global state

def _det_state():
    import torch

    return torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()


@pytest.fixture
def torch_det_restored():
    torch = pytest.importorskip("torch")
    before = _det_state()
    yield torch
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@pytest.mark.parametrize("user", [(False, False), (True, False)])
def test_monai_segmenter_scopes_deterministic_algorithms_to_its_inference(torch_det_restored, user):
    """MonaiSegmenter turned torch.use_deterministic_algorithms(True, warn_only=True) on for the rest of the
    process when it was loaded; now only while the network runs, the caller's own setting restored."""
    torch = torch_det_restored
    pytest.importorskip("monai")
    from segmentation.monai_segmenter import MonaiSegmenter

    torch.use_deterministic_algorithms(user[0], warn_only=user[1])
    seg = MonaiSegmenter(device="cpu", cfg={"segmentation": {"monai": {"scale_tta": 0.0, "flip_tta": False}}})
    assert _det_state() == user
    seen = []
    net = seg.net

    def recording(x):
        seen.append(_det_state())
        return net(x)

    seg.net = recording
    hu, _, _, _, _ = _toy_scan()
    seg.segment(hu, (5.0, 4.0, 4.0))
    assert seen and set(seen) == {(True, True)}
    assert _det_state() == user


def test_bundle_segmenter_scopes_deterministic_algorithms_and_its_writer_keeps_the_rng(tmp_path, torch_det_restored):
    torch = torch_det_restored
    pytest.importorskip("monai")
    from segmentation.bundle import BundleSegmenter, write_tiny_bundle

    torch.manual_seed(3)
    state = torch.get_rng_state()
    write_tiny_bundle(tmp_path / "b", seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # the seeded weights did not reseed the caller's torch
    seg = BundleSegmenter(tmp_path / "b", device="cpu")
    seg.check_output()
    assert _det_state() == (False, False)
    hu, _, _, _, _ = _toy_scan()
    seg.segment(hu, (5.0, 4.0, 4.0))
    assert _det_state() == (False, False)


def _draws():
    import torch

    return random.random(), float(np.random.rand()), float(torch.rand(1))


def _seed_all(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def test_training_keeps_the_callers_random_state_and_cudnn_flags_and_stays_seeded(tmp_path):
    """train reseeded Python's random, numpy and torch for the rest of the process (MONAI set_determinism) and
    left cudnn.deterministic on; what it computes stays as seeded (the same weights whatever the caller's state)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    from segmentation.training import train
    from tests.toy_cases import toy_cached_case

    f = toy_cached_case(tmp_path / "cache" / "toy.npz", noise_hu=20)
    c = {"roi_size": [16, 32, 32], "samples_per_volume": 2, "batch_size": 1, "num_workers": 0, "iterations": 2}
    _seed_all(11)
    expected = _draws()
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    _seed_all(11)
    train([f], tmp_path / "a", c, device="cpu")
    assert _draws() == expected
    assert (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark) == flags
    _seed_all(12345)  # another caller state: the seeded training is the same
    train([f], tmp_path / "b", c, device="cpu")
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


# ------------------------------------------------------------------------------------------ 5: notebook values

@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), np.array([2.0, 2.0, 2.0]), np.array([2, 2, 2]),
                                     [np.float32(2), np.int64(2), 2.0]])
def test_tuple_and_numpy_spacing_are_lists_of_plain_numbers(spacing):
    cfg = load_config(extra={"resample": {"spacing_mm": spacing}})
    assert cfg["resample"]["spacing_mm"] == [2.0, 2.0, 2.0]
    assert all(type(v) is float for v in cfg["resample"]["spacing_mm"])
    json.dumps(cfg)


def test_numpy_scalars_are_plain_numbers_and_bools():
    cfg = load_config(extra={"selection": {"min_slices": np.int64(20), "max_slice_thickness_mm": np.float32(5)},
                             "outputs": {"write_qc_png": np.bool_(False)}, "resample": {"spacing_mm": [1, 1, 1]}})
    assert cfg["selection"]["min_slices"] == 20 and type(cfg["selection"]["min_slices"]) is int
    assert type(cfg["selection"]["max_slice_thickness_mm"]) is float
    assert cfg["outputs"]["write_qc_png"] is False
    json.dumps(cfg)
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(extra={"selection": {"min_slices": np.bool_(True)}})
    with pytest.raises(ConfigError, match="must be a list of 3 values"):
        load_config(extra={"resample": {"spacing_mm": np.zeros((2, 3))}})


def test_notebook_run_writes_plain_values(notebook_run):
    summary, out, _ = notebook_run
    cfg = json.loads((out / "run.json").read_text())["config"]
    assert cfg["resample"]["spacing_mm"] == [1.5, 1.5, 1.5] and cfg["selection"]["min_slices"] == 10
    assert summary["executor"] == "serial"


def test_run_pipeline_takes_a_yaml_path_as_config(tmp_path):
    """run_pipeline(S, out, "my.yaml") raised AttributeError "'str' object has no attribute 'items'"."""
    from pipeline.run import run_pipeline

    (tmp_path / "my.yaml").write_text("segmentation:\n  method: classical\nselection:\n  min_slices: 100000\n")
    for cfg in (tmp_path / "my.yaml", str(tmp_path / "my.yaml")):
        with pytest.raises(NoEligibleSeries):  # the file was read: no series has that many slices
            run_pipeline(_sample(), tmp_path / "out", cfg)
    assert "TOO_FEW_SLICES" in (tmp_path / "out" / "inventory.csv").read_text()


@pytest.mark.parametrize("cfg, words", [
    (["scoring.zhang900.mode=zone"], "load_config(overrides="),
    ("scoring.zhang900.mode=zone", "load_config(overrides="),
    (42, "must be a mapping of sections"),
    ("no_such_file.yaml", "config file not found"),
])
def test_other_config_arguments_are_a_bad_config(tmp_path, cfg, words):
    from pipeline.run import run_pipeline

    with pytest.raises(ConfigError) as e:
        run_pipeline(_sample(), tmp_path / "out", cfg)
    assert e.value.code == "BAD_CONFIG" and words in str(e.value)
    assert not (tmp_path / "out").exists()


def test_batch_options_as_a_dict_and_other_forms(tmp_path):
    """batch={"workers": 2} raised AttributeError "'dict' object has no attribute 'validate'"."""
    from pipeline.run import run_pipeline

    for bad, words in (({"wrkers": 2}, "unknown batch option"), (2, "mapping of its options"),
                       ({"workers": -1}, "workers"), ({"workers": 1, "timeout_s": -5}, "timeout")):
        with pytest.raises(ConfigError, match=words) as e:
            run_pipeline(_sample(), tmp_path / "out", {"segmentation": {"method": "classical"}}, batch=bad)
        assert e.value.code == "BAD_CONFIG"
    assert not (tmp_path / "out").exists()
    from pipeline.batch import BatchOptions, batch_options

    assert batch_options({"workers": 2, "executor": "local"}) == BatchOptions(workers=2, executor="local")
    assert batch_options(None) == BatchOptions()


def test_config_edited_from_load_config_is_unchanged_by_resolving():
    from pipeline.config import resolve_config

    cfg = load_config(overrides=["scoring.zhang900.mode=zone"])
    assert resolve_config(cfg) == cfg


# ------------------------------------------------------------------------------------------ 6: train backgrounds

@pytest.mark.parametrize("name", ["toy", Path("toy")])
def test_one_background_name_is_one_background(tmp_path, name):
    """train_segmenter(backgrounds="cap001") split the name into its letters: "background folder(s) not found:
    ['.../c', '.../a', ...]"."""
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    from segmentation.recipe import train_segmenter
    from tests.toy_cases import toy_training_dirs

    cache, data = toy_training_dirs(tmp_path)
    res = train_segmenter(tmp_path / "out", data=data, backgrounds=name, cache=cache, prepare_only=True)
    assert [Path(p).stem for p in res["cache_files"]] == ["toy"]
    with pytest.raises(ConfigError) as e:
        train_segmenter(tmp_path / "out", data=data, backgrounds="cap001", cache=cache, prepare_only=True)
    assert str(data / "cap001") in str(e.value) and str(data / "c") + "'" not in str(e.value)


# ------------------------------------------------------------------------------------------ 7: the docstring

def test_run_pipeline_docstring_names_every_key_it_returns(notebook_run):
    """The docstring said "a summary dict (counts, tables as records)": scans is a DataFrame, and n_skipped, n_run,
    executor were not named."""
    import pandas as pd

    from pipeline.run import run_pipeline

    summary, out, _ = notebook_run
    documented = dict(re.findall(r"``(\w+)`` \((int|str or None|str|pandas DataFrame|list of str)\)", run_pipeline.__doc__))
    assert set(documented) == set(summary), (documented, sorted(summary))
    kinds = {"int": int, "str": str, "str or None": (str, type(None)), "pandas DataFrame": pd.DataFrame,
             "list of str": list}
    for key, kind in documented.items():
        assert isinstance(summary[key], kinds[kind]), key
    for option, key in (("--segmenter", "segmentation.method"), ("--model", "segmentation.method"),
                        ("-d", "segmentation.device"), ("--lobes", "scoring.lobar.lobes_dir"),
                        ("--dicom-seg", "outputs.write_dicom_seg")):
        assert option in run_pipeline.__doc__ and key in run_pipeline.__doc__
    assert "failures.csv" in run_pipeline.__doc__
    assert list(summary["failures"].columns[:5]) == ["scan_id", "series_uid", "code", "message", "path"]
    assert summary["failures"].empty
    readme = (REPO / "README.md").read_text()
    twin = readme[readme.index("Every command has a Python twin"):readme.index("Exit codes of `run`")]
    assert all(f"`{k}`" in twin for k in summary)


# ------------------------------------------------------------------------------------------ 8: messages

@pytest.mark.parametrize("kw, field, option", [
    ({"timeout_s": -1}, "timeout_s", "--timeout"),
    ({"shard_index": 1}, "shard_index", "--shard-index"),
    ({"shard_index": 5, "num_shards": 2}, "shard_index", "--shard-index"),
    ({"workers": -1}, "workers", "--workers"),
    ({"executor": "slurm"}, "slurm_profile", "--slurm-profile"),
])
def test_batch_messages_name_the_python_field_and_the_cli_option(kw, field, option):
    from pipeline.batch import BatchOptions

    with pytest.raises(ConfigError) as e:
        BatchOptions(**kw).validate()
    assert e.value.code == "BAD_CONFIG" and field in e.value.message and option in e.value.message
