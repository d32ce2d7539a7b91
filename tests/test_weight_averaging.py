"""Averaging the weights of fine-tunes (segmentation/weight_averaging.py, scripts/average_weights.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
from safetensors.torch import load_file, save_file  # noqa: E402

from segmentation.training import write_manifest  # noqa: E402
from segmentation.weight_averaging import AveragingError, average_weights  # noqa: E402
from tests.test_segmentation_monai import phantom, tiny_weights  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def fine_tune(folder: Path, shift: float) -> Path:
    """A tiny model folder whose float parameters are the seed-0 ones plus ``shift`` (a stand-in fine-tune)."""
    tiny_weights(folder)
    state = load_file(str(folder / "model.safetensors"))
    save_file({k: (v + shift if v.is_floating_point() else v).contiguous() for k, v in state.items()},
              str(folder / "model.safetensors"))
    write_manifest(folder)
    return folder


def test_weighted_mean_of_the_parameters_loads_and_records_its_sources(tmp_path):
    from segmentation.monai_segmenter import MonaiSegmenter

    a, b = fine_tune(tmp_path / "a", 0.0), fine_tune(tmp_path / "b", 0.4)
    meta = average_weights([a, b / "model.safetensors"], tmp_path / "avg", weights=[3, 1])
    sa, sb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    avg = load_file(str(tmp_path / "avg" / "model.safetensors"))
    assert set(avg) == set(sa)
    for k in sa:
        assert avg[k].dtype == sa[k].dtype
        assert torch.allclose(avg[k], 0.75 * sa[k] + 0.25 * sb[k], atol=1e-6), k
    assert [s["weight"] for s in meta["averaged_from"]] == [0.75, 0.25]
    written = yaml.safe_load((tmp_path / "avg" / "model.yaml").read_text())
    assert written["averaged_from"][1]["sha256"] == MonaiSegmenter(b, device="cpu").hashes["model.safetensors"]
    assert written["arch"] == yaml.safe_load((a / "model.yaml").read_text())["arch"]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "avg" / "model.safetensors"), "pt") as fh:  # header as training writes it
        assert json.loads(fh.metadata()["arch"]) == written["arch"]
    # the result is a model folder like any other: manifest checked, segments
    seg = MonaiSegmenter(tmp_path / "avg", device="cpu")
    hu, sp = phantom()
    out = seg.segment(hu, sp)
    assert out.lungs.shape == hu.shape
    # equal weights by default, and averaging a model with itself gives it back
    average_weights([a, a], tmp_path / "same")
    same = load_file(str(tmp_path / "same" / "model.safetensors"))
    assert all(torch.allclose(same[k], sa[k], atol=1e-7) for k in sa)


def test_different_networks_are_refused_by_name(tmp_path):
    a = fine_tune(tmp_path / "a", 0.0)
    b = fine_tune(tmp_path / "b", 0.1)
    meta = yaml.safe_load((b / "model.yaml").read_text())
    meta["model_spacing_mm"] = [2.0, 2.0, 2.0]
    (b / "model.yaml").write_text(yaml.safe_dump(meta))
    write_manifest(b)
    with pytest.raises(AveragingError, match=r"b/model.yaml: model_spacing_mm .*not the same network"):
        average_weights([a, b], tmp_path / "avg")
    # same model.yaml, different parameter shapes
    from segmentation.network import build_network

    c = fine_tune(tmp_path / "c", 0.0)
    net = build_network({"name": "unet", "channels": [4, 16], "strides": [2], "num_res_units": 0})
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(c / "model.safetensors"))
    write_manifest(c)
    with pytest.raises(AveragingError, match=r"c/model.safetensors: .* has shape"):
        average_weights([a, c], tmp_path / "avg")
    assert not (tmp_path / "avg").exists()


def test_tampered_source_bad_weights_and_existing_output_are_refused(tmp_path):
    a, b = fine_tune(tmp_path / "a", 0.0), fine_tune(tmp_path / "b", 0.1)
    with pytest.raises(AveragingError, match="at least two"):
        average_weights([a], tmp_path / "avg")
    with pytest.raises(AveragingError, match="2 weights for 3"):
        average_weights([a, b, a], tmp_path / "avg", weights=[1, 1])
    with pytest.raises(AveragingError, match=">= 0"):
        average_weights([a, b], tmp_path / "avg", weights=[1, -1])
    with pytest.raises(AveragingError, match=">= 0"):
        average_weights([a, b], tmp_path / "avg", weights=[float("nan"), 1])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me")
    with pytest.raises(AveragingError, match="refusing to overwrite"):
        average_weights([a, b], tmp_path / "full")
    assert (tmp_path / "full" / "x.txt").read_text() == "keep me"
    with pytest.raises(AveragingError, match="one of the source folders"):
        average_weights([a, b], b.parent / "b" / ".." / "a")
    before = (b / "model.safetensors").read_bytes()
    with open(b / "model.safetensors", "r+b") as fh:  # flip one byte of the tensor data
        fh.seek(-3, 2)
        last = fh.read(1)
        fh.seek(-3, 2)
        fh.write(bytes([last[0] ^ 0xFF]))
    with pytest.raises(AveragingError, match=r"sha256 of .*b/model.safetensors"):
        average_weights([a, b], tmp_path / "avg")
    assert not (tmp_path / "avg").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".avg")]  # no half-written folder left
    assert (b / "model.safetensors").read_bytes() != before  # (the tampering itself took)


def test_command_line(tmp_path):
    a, b = fine_tune(tmp_path / "a", 0.0), fine_tune(tmp_path / "b", 0.2)
    script = REPO / "scripts" / "average_weights.py"
    r = subprocess.run([sys.executable, str(script), str(a), str(b), "--out", str(tmp_path / "avg"),
                        "--weights", "1", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "0.5000" in r.stdout and (tmp_path / "avg" / "manifest.json").exists()
    r = subprocess.run([sys.executable, str(script), str(a), str(b), "--out", str(tmp_path / "avg")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "refusing to overwrite" in r.stderr
