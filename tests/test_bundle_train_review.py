"""Review of plug-in bundles and ``ctscore train``.

A bundle without a lesion label is refused at load (it scored every patient as healthy); labels beyond the
network's output channels, and a network that fails on its window, stop ``ctscore run --model`` when the model is
loaded (they failed every scan after a whole inference); the trained model and the training cache follow the
umask like every other output (they were 0600); ``ctscore train --help`` gives every option a help text with its
default and shows no Sphinx markup. Tiny bundles and toy cases only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")
yaml = pytest.importorskip("yaml")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.errors import EXIT_USAGE  # noqa: E402
from segmentation.bundle import LABELS_FILE, BundleError, BundleSegmenter, write_tiny_bundle  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_dicoms"


def _edit_mapping(folder: Path, edit) -> Path:
    path = folder / LABELS_FILE
    m = yaml.safe_load(path.read_text())
    edit(m)
    path.write_text(yaml.safe_dump(m, sort_keys=False))
    return folder


# ------------------------------------------------------------------------------------------ no lesion label

@pytest.mark.parametrize("lobes", [False, True], ids=["lungs", "lobes"])
def test_a_bundle_without_a_lesion_label_is_refused_at_load(tmp_path, lobes):
    """No ``lesion`` label: the model ran and scored every patient as healthy (lesion 0 mL, six-zone 0, CT-0, no
    flag). Refused when loaded, naming the mapping file and saying the label is required."""
    b = _edit_mapping(write_tiny_bundle(tmp_path / "b", with_lobes=lobes), lambda m: m["labels"].pop("lesion"))
    with pytest.raises(BundleError, match="no lesion label: it is required") as e:
        BundleSegmenter(b, device="cpu")
    assert e.value.path.endswith(LABELS_FILE) and e.value.code == "BAD_MODEL"


def test_run_refuses_a_bundle_without_a_lesion_label_before_any_scan(tmp_path, capsys):
    if not SAMPLE.is_dir():
        pytest.skip("sample_dicoms/ not present")
    from pipeline.cli import main

    b = _edit_mapping(write_tiny_bundle(tmp_path / "b"), lambda m: m["labels"].pop("lesion"))
    out = tmp_path / "out"
    rc = main(["run", str(SAMPLE), "-o", str(out), "--model", str(b), "-d", "cpu", "-q"])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE
    assert "BAD_MODEL" in err and "lesion label" in err and str(b / LABELS_FILE) in err
    assert not (out / "scans.csv").exists()


# ------------------------------------------------------------------------------------------ output channels

BEYOND = {
    "lung label 7": (lambda m: m["labels"].update(right_lung=[7]), 7),
    "lobe label 6": (lambda m: m.update(labels={"lobes": {"right_upper": 1, "right_middle": 2, "right_lower": 4,
                                                          "left_upper": 5, "left_lower": 6}, "lesion": [3]}), 6),
}


@pytest.mark.parametrize("case", list(BEYOND))
def test_labels_beyond_the_output_channels_are_refused_when_the_model_is_built(tmp_path, case, monkeypatch):
    """``right_lung: [7]`` (or a lobe label 6) on a 4-channel network failed every series, each after its whole
    inference (exit 8). The factory runs one window through the network and refuses it before any scan."""
    from segmentation.factory import build_segmenter

    edit, label = BEYOND[case]
    b = _edit_mapping(write_tiny_bundle(tmp_path / "b"), edit)
    calls = []
    monkeypatch.setattr(BundleSegmenter, "label_map", lambda self, hu, sp: calls.append(1))
    with pytest.raises(BundleError, match=f"label {label} is beyond the network's 4 output channels") as e:
        build_segmenter({"segmentation": {"method": str(b), "device": "cpu"}})
    assert e.value.path.endswith(LABELS_FILE) and not calls
    # a mapping within the channels still loads, and the check says how many there are
    good = write_tiny_bundle(tmp_path / "good")
    assert isinstance(build_segmenter({"segmentation": {"method": str(good), "device": "cpu"}}), BundleSegmenter)
    assert BundleSegmenter(good, device="cpu").check_output() == 4


def test_run_stops_at_load_for_labels_beyond_the_output_channels(tmp_path, capsys):
    """``ctscore run --model`` with such a mapping: one BAD_MODEL error and exit 1 before any scan, not a failure
    of every series (exit 8)."""
    if not SAMPLE.is_dir():
        pytest.skip("sample_dicoms/ not present")
    from pipeline.cli import main

    b = _edit_mapping(write_tiny_bundle(tmp_path / "b"), lambda m: m["labels"].update(right_lung=[7]))
    out = tmp_path / "out"
    rc = main(["run", str(SAMPLE), "-o", str(out), "--model", str(b), "-d", "cpu", "-q"])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE
    assert "BAD_MODEL" in err and "beyond the network's 4 output channels" in err
    assert not (out / "scans.csv").exists() and not (out / "failures.csv").exists()


def test_a_network_that_fails_on_its_window_is_refused_when_the_model_is_built(tmp_path):
    """A UNet given an odd roi_size (its strided convolutions and skip connections do not fit) failed every scan;
    now the factory's one window finds it, naming the config."""
    from monai.networks.nets import UNet
    from safetensors.torch import save_file

    from segmentation.factory import build_segmenter

    b = write_tiny_bundle(tmp_path / "b")
    net_def = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 4, "channels": [4, 8, 16],
               "strides": [2, 2]}
    (b / "configs" / "inference.json").write_text(json.dumps({"network_def": net_def}))
    net = UNet(spatial_dims=3, in_channels=1, out_channels=4, channels=(4, 8, 16), strides=(2, 2))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(b / "models" / "model.safetensors"))
    (b / "models" / "manifest.json").unlink()
    _edit_mapping(b, lambda m: m.update(roi_size=[30, 30, 30]))
    with pytest.raises(BundleError, match="fails on the windows ctscore gives it") as e:
        build_segmenter({"segmentation": {"method": str(b), "device": "cpu"}})
    assert e.value.path.endswith("inference.json")


# ------------------------------------------------------------------------------------------ file modes

@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_trained_model_and_cache_follow_the_umask(tmp_path, umask):
    """model.safetensors (safetensors writes 0600) and the cached cases (mkstemp: 0600) were private to the user who
    trained: other users of a lab server could not run the model. Both follow the umask like every other output."""
    from segmentation.training import save_case, train
    from tests.toy_cases import toy_cached_case

    want = 0o666 & ~umask
    old = os.umask(umask)
    try:
        src = toy_cached_case(tmp_path / "src.npz")
        with np.load(src) as z:
            case = {k: z[k] for k in z.files}
        (tmp_path / "cache").mkdir()
        save_case(tmp_path / "cache" / "toy.npz", case)
        train([tmp_path / "cache" / "toy.npz"], tmp_path / "out",
              {"roi_size": [16, 32, 32], "samples_per_volume": 1, "batch_size": 1, "num_workers": 0,
               "iterations": 1}, device="cpu")
    finally:
        os.umask(old)
    assert oct((tmp_path / "cache" / "toy.npz").stat().st_mode & 0o777) == oct(want)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "out").iterdir()}
    assert set(modes) == {"model.safetensors", "model.yaml", "manifest.json", "train_log.json"}
    assert modes == dict.fromkeys(modes, oct(want))


# ------------------------------------------------------------------------------------------ train --help

def test_train_help_gives_every_option_a_default_and_no_markup(capsys):
    """--iterations, --max-minutes, --batch-size, --num-workers and --seed had no help text; the description showed
    ``ctscore train``, :data:`...` and :func:`...` as written in the docstring."""
    from pipeline.cli import main
    from pipeline.commands.train import add_arguments
    from segmentation.training import DEFAULT_TRAIN

    p = argparse.ArgumentParser()
    add_arguments(p)
    helps = {a.option_strings[-1]: a.help or "" for a in p._actions if a.option_strings}
    for opt, key in (("--iterations", "iterations"), ("--max-minutes", "max_minutes"),
                     ("--batch-size", "batch_size"), ("--num-workers", "num_workers"), ("--seed", "seed")):
        assert f"default {DEFAULT_TRAIN[key]:g}" in helps[opt], (opt, helps[opt])
    assert "other weights" in helps["--num-workers"]  # the number of workers is part of a seeded run's result
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--num-workers" in text and "segmentation.recipe.train_segmenter" in text
    for markup in ("``", ":data:", ":func:", ":class:"):
        assert markup not in text, markup
