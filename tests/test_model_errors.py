"""Model folders, devices and training options that cannot be used are refused with a clear error naming the
file (a :class:`~pipeline.errors.CTScoreError`, so the CLI prints one line, no traceback), and the same
from Python; model files are published whole; scans in threads of one process do not disturb each other."""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("monai")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.errors import EXIT_USAGE, ConfigError, CTScoreError, ModelError  # noqa: E402
from tests.test_segmentation_monai import phantom, tiny_weights  # noqa: E402
from tests.toy_cases import toy_cached_case  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ devices

def test_resolve_device_accepts_the_documented_forms_only():
    import torch

    from segmentation.monai_segmenter import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(" CPU ").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "mps", "meta", "cuda:x", "cuda0", "cuda:0:1"):
        with pytest.raises(ConfigError, match="cpu, cuda, cuda:N or auto"):
            resolve_device(bad)
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        assert resolve_device("gpu").type == "cuda"
        with pytest.raises(ConfigError, match="device"):
            resolve_device(f"cuda:{n}")
    else:  # the gpu alias is checked too (it used to slip past the availability check)
        for d in ("cuda", "cuda:0", "gpu", "GPU:1"):
            with pytest.raises(ConfigError, match="CUDA is not available"):
                resolve_device(d)


def test_training_uses_the_same_device_check(tmp_path):
    import torch

    from segmentation.training import train

    if torch.cuda.is_available():
        pytest.skip("checks the refusal of CUDA where there is none")
    f = toy_cached_case(tmp_path / "toy.npz")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        train([f], tmp_path / "out", {"iterations": 1}, device="gpu")
    assert not (tmp_path / "out" / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------ model folders

def test_lesion_threshold_must_be_a_probability(tmp_path):
    from segmentation.monai_segmenter import MonaiSegmenter

    w = tiny_weights(tmp_path / "w")
    for bad in (0, 1.0, 1.5, -0.2, "x", float("nan")):
        with pytest.raises(ConfigError, match="segmentation.monai.lesion_threshold"):
            MonaiSegmenter(w, device="cpu", cfg={"segmentation": {"monai": {"lesion_threshold": bad}}})
    assert MonaiSegmenter(w, device="cpu", cfg={"segmentation": {"monai": {"lesion_threshold": 0.3}}}
                          ).lesion_threshold == pytest.approx(0.3)
    # a bad value in model.yaml names that file
    import yaml

    from segmentation.training import write_manifest

    meta = yaml.safe_load((w / "model.yaml").read_text())
    meta["lesion_threshold"] = 1.0
    (w / "model.yaml").write_text(yaml.safe_dump(meta))
    write_manifest(w)
    with pytest.raises(ConfigError, match="model.yaml"):
        MonaiSegmenter(w, device="cpu")


def test_bad_model_folders_name_the_file(tmp_path):
    import yaml

    from segmentation.monai_segmenter import MonaiSegmenter, WeightsError
    from segmentation.training import write_manifest

    w = tiny_weights(tmp_path / "w")
    assert issubclass(WeightsError, ModelError) and issubclass(ModelError, CTScoreError)
    # the weights file itself is accepted; any other file is not silently swapped for the folder's weights
    assert MonaiSegmenter(w / "model.safetensors", device="cpu").folder == w
    (w / "stage2.safetensors").write_bytes((w / "model.safetensors").read_bytes())
    with pytest.raises(WeightsError, match="expected a weights folder") as e:
        MonaiSegmenter(w / "stage2.safetensors", device="cpu")
    assert e.value.path.endswith("stage2.safetensors") and e.value.code == "BAD_MODEL"
    with pytest.raises(WeightsError, match="no such weights folder"):
        MonaiSegmenter(tmp_path / "nowhere", device="cpu")
    # an unreadable manifest, or one without the file, is named
    good = (w / "manifest.json").read_text()
    (w / "manifest.json").write_text("{bad")
    with pytest.raises(WeightsError, match="unreadable manifest") as e:
        MonaiSegmenter(w, device="cpu")
    assert e.value.path.endswith("manifest.json")
    (w / "manifest.json").write_text(json.dumps({"files": {"model.yaml": json.loads(good)["files"]["model.yaml"]}}))
    with pytest.raises(WeightsError, match="no sha256 for model.safetensors"):
        MonaiSegmenter(w, device="cpu")
    # a model description without the keys inference needs
    meta = yaml.safe_load((w / "model.yaml").read_text())
    (w / "model.yaml").write_text(yaml.safe_dump({k: v for k, v in meta.items() if k != "hu_window"}))
    write_manifest(w)
    with pytest.raises(WeightsError, match=r"lacks \['hu_window'\]") as e:
        MonaiSegmenter(w, device="cpu")
    assert e.value.path.endswith("model.yaml")
    # weights that do not fit the network model.yaml describes
    meta["arch"] = {**meta["arch"], "channels": [8, 16]}
    (w / "model.yaml").write_text(yaml.safe_dump(meta))
    write_manifest(w)
    with pytest.raises(WeightsError, match="do not load into the network") as e:
        MonaiSegmenter(w, device="cpu")
    assert e.value.path.endswith("model.safetensors")


def test_cli_reports_a_bad_model_in_one_line(tmp_path, capsys):
    from pipeline.cli import main

    empty = tmp_path / "empty_model"
    empty.mkdir()
    rc = main(["run", str(REPO / "sample_dicoms"), "-o", str(tmp_path / "out"), "--model", str(empty)])
    err = capsys.readouterr().err
    assert rc == EXIT_USAGE
    assert "BAD_MODEL" in err and "ctscore_labels.yaml" in err and str(empty) in err
    assert "Traceback" not in err


def test_bundle_errors_name_the_file(tmp_path):
    from segmentation.bundle import BundleError, BundleSegmenter, write_tiny_bundle

    b = write_tiny_bundle(tmp_path / "b")
    (b / "ctscore_labels.yaml").write_text("labels: [1, 2]\n")
    with pytest.raises(BundleError, match="labels must give") as e:
        BundleSegmenter(b, device="cpu")
    assert e.value.path.endswith("ctscore_labels.yaml")
    b2 = write_tiny_bundle(tmp_path / "b2")
    (b2 / "configs" / "inference.json").write_text(json.dumps({"network_def": {"_target_": "no.such.Net"}}))
    with pytest.raises(BundleError, match="network_def cannot be built") as e:
        BundleSegmenter(b2, device="cpu")
    assert e.value.path.endswith("inference.json")


def test_bundle_lesions_get_a_lobe_and_the_airway_is_not_lung(tmp_path, monkeypatch):
    """A softmax bundle with lobes and a lesion label: lesion voxels take the lobe of the nearest lobe voxel
    (else lobar scores leave them out), and the airway is taken out of the lungs as for the other segmenters."""
    import yaml

    import segmentation.bundle as bundle
    from segmentation.base import LOBES

    b = bundle.write_tiny_bundle(tmp_path / "b", with_lobes=True)
    mapping = yaml.safe_load((b / bundle.LABELS_FILE).read_text())
    mapping["labels"]["lesion"] = [5 + 1]  # the label after the lobes (the tiny bundle's lesion label)
    mapping["labels"]["lobes"].pop("left_lower")
    (b / bundle.LABELS_FILE).write_text(yaml.safe_dump(mapping))
    seg = bundle.BundleSegmenter(b, device="cpu")
    shape = (10, 20, 30)
    lab = np.zeros(shape, np.uint8)
    lab[2:8, 4:16, 2:12] = 1  # right upper
    lab[2:8, 4:16, 16:26] = 4  # left upper
    lab[3:6, 6:10, 12:16] = 6  # lesion between them, touching the left upper lobe on its right side
    airway = np.zeros(shape, bool)
    airway[2:8, 8:10, 5:7] = True  # a bronchus labelled right upper lobe by the bundle
    monkeypatch.setattr(seg, "label_map", lambda hu, sp: lab)
    monkeypatch.setattr(bundle, "segment_airway", lambda hu, sp: airway)
    out = seg.segment(np.zeros(shape, np.float32), (2.0, 2.0, 2.0))
    les = lab == 6
    assert out.lesions[les].all()
    assert (out.lobes[les] > 0).all()  # every lesion voxel in a lobe
    assert set(np.unique(out.lobes[les])) <= {1, 4}
    assert out.lobes[3, 7, 15] == 4 and out.lobes[3, 7, 12] == 1  # nearest lobe decides
    assert LOBES[1].startswith("right") and LOBES[4].startswith("left")  # the codes used above
    assert not out.lungs[airway].any() and not out.lobes[airway].any() and not out.lesions[airway].any()


# ------------------------------------------------------------------------------------------ threads

def test_scans_in_threads_of_one_process_match_serial(tmp_path):
    """One segmenter, two scans of different sizes at once (``--executor local`` with threads): each gets
    the window of its own size, the same masks as one at a time."""
    from segmentation.monai_segmenter import MonaiSegmenter

    seg = MonaiSegmenter(tiny_weights(tmp_path / "w"), device="cpu")
    hu, sp = phantom()
    small = np.ascontiguousarray(hu[:, 8:-8, 10:-10])
    want = [seg.segment(v, sp) for v in (hu, small)]
    got: dict[int, object] = {}

    def work(i: int, v: np.ndarray) -> None:
        for _ in range(3):
            got[i] = seg.segment(v, sp)
            r = got[i]
            assert np.array_equal(r.lungs, want[i].lungs) and np.array_equal(r.lesions, want[i].lesions)

    threads = [threading.Thread(target=work, args=(i, v)) for i, v in enumerate((hu, small))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 1):
        assert np.array_equal(got[i].lungs, want[i].lungs) and np.array_equal(got[i].lesions, want[i].lesions)


# ------------------------------------------------------------------------------------------ training

def test_cache_at_another_spacing_is_refused(tmp_path):
    from segmentation.training import train

    f = toy_cached_case(tmp_path / "cache" / "toy.npz", spacing=3.0)
    with pytest.raises(ConfigError, match=r"spacing \[3.0, 3.0, 3.0\].*model_spacing_mm \[2.5, 2.5, 2.5\]") as e:
        train([f], tmp_path / "out", {"iterations": 1}, device="cpu")
    assert e.value.path.endswith("toy.npz")


def test_prepare_cache_refuses_a_cache_made_at_another_spacing(tmp_path):
    from segmentation.training import prepare_cache

    toy_cached_case(tmp_path / "cache" / "toy.npz", spacing=3.0)
    (tmp_path / "data" / "toy").mkdir(parents=True)
    with pytest.raises(ValueError, match="cached at spacing"):
        prepare_cache([tmp_path / "data" / "toy"], tmp_path / "cache", (2.0, 2.0, 2.0))


def test_train_command_errors_go_to_stderr_and_api_twin_raises(tmp_path, capsys):
    from pipeline.cli import main
    from segmentation.recipe import train_segmenter

    missing = tmp_path / "no_such_data"
    assert main(["train", "--data", str(missing), "--cache", str(tmp_path / "c"), "--prepare-only"]) == EXIT_USAGE
    cap = capsys.readouterr()
    assert "no such folder of background series" in cap.err and str(missing) in cap.err
    assert "Traceback" not in cap.err and not cap.out
    with pytest.raises(ConfigError, match="no such folder of background series"):
        train_segmenter(tmp_path / "out", data=missing, cache=tmp_path / "c", prepare_only=True)
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 1e-4\nno_such_option: 1\n")
    with pytest.raises(ConfigError, match="no_such_option") as e:
        train_segmenter(tmp_path / "out", train_config=bad, prepare_only=True)
    assert e.value.path == str(bad)
    two = tmp_path / "two.yaml"
    two.write_text("stages:\n  - {model_spacing_mm: [2.5, 2.5, 2.5]}\n  - {model_spacing_mm: [2.0, 2.0, 2.0]}\n")
    with pytest.raises(ConfigError, match="different model_spacing_mm"):
        train_segmenter(tmp_path / "out", train_config=two, prepare_only=True)


def test_the_cache_follows_the_training_config_spacing(tmp_path, monkeypatch):
    """``model_spacing_mm`` of the training config is the grid the cache is made at (before: always 2.5 mm,
    whatever the config, and the model.yaml then named a grid the network never saw)."""
    import segmentation.training as tr
    from segmentation.recipe import train_segmenter

    seen = []
    monkeypatch.setattr(tr, "prepare_cache", lambda srcs, cache, sp, *a, **k: seen.append(list(sp)) or [])
    (tmp_path / "data" / "toy").mkdir(parents=True)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_spacing_mm: [2.0, 2.0, 2.0]\n")
    train_segmenter(tmp_path / "out", data=tmp_path / "data", cache=tmp_path / "c", train_config=cfg,
                    prepare_only=True)
    assert seen == [[2.0, 2.0, 2.0]]


def test_merge_stage_keeps_the_common_synth_options():
    from segmentation.recipe import merge_stage

    common = {"lr": 1e-4, "synth": {"p_empty": 0.4, "p_air_bronchogram": 0.2}}
    m = merge_stage(common, {"name": "s1", "lr": 5e-5, "synth": {"p_empty": 0.1}, "backgrounds_file": "x.yaml"})
    assert m == {"lr": 5e-5, "synth": {"p_empty": 0.1, "p_air_bronchogram": 0.2}}


def test_publish_model_moves_whole_files_manifest_last(tmp_path, monkeypatch):
    """A crash while publishing leaves the old manifest: the loader then refuses the folder rather than
    loading files the manifest does not vouch for."""
    import os

    import segmentation.recipe as recipe
    from segmentation.monai_segmenter import MonaiSegmenter, WeightsError

    new = tiny_weights(tmp_path / "new")
    out = tmp_path / "out"
    shutil.copytree(tiny_weights(tmp_path / "old"), out)
    (out / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes()[:-4] + b"\0\0\0\0")
    from segmentation.training import write_manifest

    write_manifest(out)  # an "old" model that differs from the new one
    real_replace = os.replace
    calls = []

    def crash_on_manifest(src, dst):
        calls.append(Path(dst).name)
        if Path(dst).name == "manifest.json":
            raise OSError("disk full")
        return real_replace(src, dst)

    import pipeline.outputs as outputs

    monkeypatch.setattr(outputs.os, "replace", crash_on_manifest)
    with pytest.raises(OSError):
        recipe.publish_model(new, out)
    assert calls == ["model.safetensors", "model.yaml", "manifest.json"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.safetensors", "model.yaml"]
    with pytest.raises(WeightsError, match="sha256"):
        MonaiSegmenter(out, device="cpu")
    monkeypatch.setattr(outputs.os, "replace", real_replace)
    recipe.publish_model(new, out)
    assert MonaiSegmenter(out, device="cpu").model_id == MonaiSegmenter(new, device="cpu").model_id
    mode = (out / "model.safetensors").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_average_weights_refuses_infinite_weights_and_output_is_readable(tmp_path):
    import os

    from segmentation.weight_averaging import AveragingError, average_weights

    a, b = tiny_weights(tmp_path / "a"), tiny_weights(tmp_path / "b")
    with pytest.raises(AveragingError, match="finite"):
        average_weights([a, b], tmp_path / "s", weights=[float("inf"), 1.0])
    average_weights([a, b], tmp_path / "s")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o777 & ~umask


def test_bundle_model_id_follows_config_and_label_mapping(tmp_path):
    """The same weights with another label mapping (or network config) are another model in the provenance."""
    import yaml

    from segmentation.bundle import LABELS_FILE, BundleSegmenter, write_tiny_bundle

    b = write_tiny_bundle(tmp_path / "b")
    first = BundleSegmenter(b, device="cpu").model_id
    assert first == BundleSegmenter(b, device="cpu").model_id  # stable
    m = yaml.safe_load((b / LABELS_FILE).read_text())
    m["labels"]["right_lung"], m["labels"]["left_lung"] = m["labels"]["left_lung"], m["labels"]["right_lung"]
    (b / LABELS_FILE).write_text(yaml.safe_dump(m))
    assert BundleSegmenter(b, device="cpu").model_id != first


@pytest.mark.parametrize("option, value, word", [
    ("iterations", -5, "iterations"), ("batch_size", 0, "batch_size"), ("lr", -1.0, "lr"),
    ("p_empty", 2.0, "p_empty"), ("max_minutes", 0, "max_minutes"), ("num_workers", -1, "num_workers"),
    ("init", "nope.safetensors", "init"), ("device", "tpu", "device"),
])
def test_train_options_are_checked_before_anything_is_made(tmp_path, option, value, word):
    """-5 iterations trained one and published a model; a negative lr or a missing init gave tracebacks after the
    cache was built. Now a ConfigError naming the option, and no cache, no output folder."""
    from pipeline.cli import main
    from segmentation.recipe import train_segmenter

    with pytest.raises(ConfigError, match=word):
        train_segmenter(tmp_path / "out", data=tmp_path, cache=tmp_path / "cache", **{option: value})
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    flag = "--" + option.replace("_", "-")
    assert main(["train", "--data", str(tmp_path), "--cache", str(tmp_path / "c2"), "--out", str(tmp_path / "o2"),
                 flag, str(value)]) == EXIT_USAGE
    assert not (tmp_path / "o2").exists() and not (tmp_path / "c2").exists()
