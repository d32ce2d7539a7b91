"""Second review of the plug-in bundles (``ctscore run --model PATH``): label mappings a lab writes by hand, and
networks that cannot take what ctscore gives them, are refused naming the file and the problem (they were taken
silently, or failed every scan with a bare traceback). Fast: tiny networks, tiny volumes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from pipeline.errors import CTScoreError  # noqa: E402
from segmentation.bundle import LABELS_FILE, BundleError, BundleSegmenter, write_tiny_bundle  # noqa: E402


def _phantom() -> tuple[np.ndarray, tuple[float, float, float]]:
    hu = np.full((20, 40, 48), 40.0, np.float32)
    hu[4:16, 8:32, 6:20] = -850.0
    hu[4:16, 8:32, 28:42] = -850.0
    return hu, (3.0, 3.0, 3.0)


def _edit_mapping(folder: Path, edit) -> Path:
    m = yaml.safe_load((folder / LABELS_FILE).read_text())
    edit(m)
    (folder / LABELS_FILE).write_text(yaml.safe_dump(m, sort_keys=False))
    return folder


def _bundle_with_net(folder: Path, net_def: dict, net: torch.nn.Module) -> Path:
    """The tiny bundle with another network (config and weights; no manifest)."""
    from safetensors.torch import save_file

    b = write_tiny_bundle(folder)
    (b / "models" / "manifest.json").unlink()
    (b / "configs" / "inference.json").write_text(json.dumps({"network_def": net_def}))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(b / "models" / "model.safetensors"))
    return b


# ------------------------------------------------------------------------------------------ network input

@pytest.mark.parametrize("kw, word", [({"spatial_dims": 3, "in_channels": 2}, "in_channels"),
                                      ({"spatial_dims": 2, "in_channels": 1}, "spatial_dims")],
                         ids=["two_input_channels", "2d_network"])
def test_network_that_cannot_take_one_channel_3d_ct_is_refused_at_load(tmp_path, kw, word):
    """A bundle for two input channels (e.g. CT + PET) or a 2-D network: ctscore gives one 3-D CT channel. It was
    loaded, then every scan failed with a bare RuntimeError from conv3d/conv2d (INTERNAL_ERROR, blamed on the scan);
    now a BundleError naming the config and the key."""
    from monai.networks.nets import BasicUNet

    net_def = {"_target_": "monai.networks.nets.BasicUNet", "out_channels": 4, "features": [4] * 6, **kw}
    b = _bundle_with_net(tmp_path / "b", net_def, BasicUNet(out_channels=4, features=(4,) * 6, **kw))
    with pytest.raises(BundleError, match=word) as e:
        BundleSegmenter(b, device="cpu")
    assert e.value.path.endswith("inference.json")


def test_network_that_fails_on_the_window_is_a_bundle_error_naming_the_config(tmp_path):
    """Any other network that cannot run on the [1, 1, *roi_size] window ctscore gives it (here a Linear layer
    expecting 7 features): a BundleError naming the config, not a bare RuntimeError at every scan."""
    net = torch.nn.Linear(7, 4)
    b = _bundle_with_net(tmp_path / "b", {"_target_": "torch.nn.Linear", "in_features": 7, "out_features": 4}, net)
    seg = BundleSegmenter(b, device="cpu")
    hu, sp = _phantom()
    with pytest.raises(BundleError, match="roi_size") as e:
        seg.segment(hu, sp)
    assert e.value.path.endswith("inference.json") and isinstance(e.value, CTScoreError)


# ------------------------------------------------------------------------------------------ label mapping

def test_a_key_written_twice_in_the_label_mapping_is_refused(tmp_path):
    """YAML keeps the last of two equal keys: a lobe written twice (a copy-paste slip for right_middle) silently
    dropped the first label, so that lobe was never lung. Refused, naming the file and the key."""
    b = write_tiny_bundle(tmp_path / "b", with_lobes=True)
    (b / LABELS_FILE).write_text(
        "spacing_mm: [4.0, 4.0, 4.0]\nroi_size: [32, 32, 32]\n"
        "labels:\n  lobes:\n    right_upper: 1\n    right_upper: 2\n    right_lower: 3\n"
        "    left_upper: 4\n    left_lower: 5\n")
    with pytest.raises(BundleError, match="right_upper.*twice|twice.*right_upper") as e:
        BundleSegmenter(b, device="cpu")
    assert e.value.path.endswith(LABELS_FILE)


def test_lobes_of_one_side_only_are_refused(tmp_path):
    """Lobes of the right lung only and no left_lung: the left lung was never segmented (every scan without a left
    lung). Refused at load, naming the file and the missing side."""
    b = _edit_mapping(write_tiny_bundle(tmp_path / "b", with_lobes=True),
                      lambda m: [m["labels"]["lobes"].pop(k) for k in ("left_upper", "left_lower")])
    with pytest.raises(BundleError, match="left") as e:
        BundleSegmenter(b, device="cpu")
    assert e.value.path.endswith(LABELS_FILE)
    # with left_lung for that side it is a usable mapping (lungs whole, left lobes missing from the lobar scores)
    _edit_mapping(b, lambda m: m["labels"].update(left_lung=[4, 5]))
    assert BundleSegmenter(b, device="cpu").mapping["labels"]["left_lung"] == [4, 5]


def test_lobes_mapped_partly_are_warned_about(tmp_path, caplog):
    """Four lobes and no left_lung: the unmapped lobe's voxels are not lung at all; said at load, naming the lobe."""
    b = _edit_mapping(write_tiny_bundle(tmp_path / "b", with_lobes=True),
                      lambda m: m["labels"]["lobes"].pop("left_lower"))
    with caplog.at_level(logging.WARNING, logger="segmentation.bundle"):
        BundleSegmenter(b, device="cpu")
    assert any("left_lower" in r.getMessage() and LABELS_FILE in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("intensity, word", [
    ({"a_min": -1024, "a_max": 400, "b_min": 0.0, "b_mx": 2.0}, "b_mx"),
    ({"a_min": -1024, "a_max": 400, "clip": "no"}, "clip"),
], ids=["typo", "clip_not_bool"])
def test_unknown_intensity_keys_are_refused(tmp_path, intensity, word):
    """A typo in intensity (b_mx) was ignored and the default b_max=1 used: the network got other values than it
    was trained on, silently. Refused naming the file and the key."""
    b = _edit_mapping(write_tiny_bundle(tmp_path / "b"),
                      lambda m: (m.pop("hu_window"), m.update(intensity=intensity)))
    with pytest.raises(BundleError, match=word) as e:
        BundleSegmenter(b, device="cpu")
    assert e.value.path.endswith(LABELS_FILE)


def test_intensity_clip_false_as_monai_scale_intensity_range(tmp_path):
    """MONAI's ScaleIntensityRanged takes clip (False by default): a bundle trained without clipping gives
    clip: false, and the HU outside [a_min, a_max] are scaled, not clipped (it was ignored: always clipped)."""
    b = _edit_mapping(write_tiny_bundle(tmp_path / "b"), lambda m: (m.pop("hu_window"), m.update(
        intensity={"a_min": -1000, "a_max": 1000, "b_min": 0.0, "b_max": 1.0, "clip": False})))
    seg = BundleSegmenter(b, device="cpu")
    got = seg._normalize(torch.tensor([-3000.0, 0.0, 3000.0]))
    assert torch.allclose(got, torch.tensor([-1.0, 0.5, 2.0]))
    _edit_mapping(b, lambda m: m["intensity"].update(clip=True))
    got = BundleSegmenter(b, device="cpu")._normalize(torch.tensor([-3000.0, 0.0, 3000.0]))
    assert torch.allclose(got, torch.tensor([0.0, 0.5, 1.0]))


# ------------------------------------------------------------------------------------------ weights files

def _pt_bundle(folder: Path, obj) -> Path:
    """The tiny bundle with ``obj`` saved (torch.save) as models/model.pt instead of its safetensors."""
    b = write_tiny_bundle(folder)
    (b / "models" / "model.safetensors").unlink()
    (b / "models" / "manifest.json").unlink()
    torch.save(obj, b / "models" / "model.pt")
    return b


def _tiny_net(out_channels: int = 4) -> torch.nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=3, in_channels=1, out_channels=out_channels, features=(4,) * 6)


def test_a_whole_pickled_model_is_refused_saying_what_to_save(tmp_path):
    """torch.save(model) (the whole object, a common way labs save a model): refused (a pickle is never run), with
    what to do, save model.state_dict(); it was torch's advice to load it anyway, with terminal escape codes."""
    b = _pt_bundle(tmp_path / "b", _tiny_net())
    with pytest.raises(BundleError, match=r"state_dict\(\)") as e:
        BundleSegmenter(b, device="cpu")
    assert e.value.path.endswith("model.pt")
    assert "\x1b" not in str(e.value) and "two options" not in str(e.value)


def test_a_checkpoint_with_its_state_dict_under_state_dict_loads(tmp_path):
    """{'state_dict': ..., 'epoch': ...} (Lightning and many training scripts), as {'model': ...} already was:
    the state dict inside is loaded (it was 'holds dict, not a state dict of tensors')."""
    net = _tiny_net()
    b = _pt_bundle(tmp_path / "b", {"state_dict": net.state_dict(), "epoch": 3})
    seg = BundleSegmenter(b, device="cpu")
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in seg.net.state_dict().items())


def test_weights_saved_from_data_parallel_load(tmp_path):
    """A state dict saved from DataParallel / DistributedDataParallel (every key 'module.'-prefixed) loads into
    network_def (it was 'the weights do not load into network_def (Error(s) in loading state_dict for BasicUNet:)')."""
    net = _tiny_net()
    b = _pt_bundle(tmp_path / "b", {f"module.{k}": v for k, v in net.state_dict().items()})
    seg = BundleSegmenter(b, device="cpu")
    assert seg.net.final_conv.weight.shape[0] == 4
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in seg.net.state_dict().items())


def test_weights_of_another_network_say_which_tensors_differ(tmp_path):
    """Weights for 6 output channels, network_def with 4 (the config edited, not the weights; a channel-count
    mismatch): the error says which tensor and both shapes. It said only 'Error(s) in loading state_dict for
    BasicUNet:' (torch's first line). Missing and unexpected tensors are named too."""
    b = _pt_bundle(tmp_path / "b", _tiny_net(out_channels=6).state_dict())
    with pytest.raises(BundleError, match=r"final_conv\.weight.*6.*4|final_conv\.weight.*4.*6") as e:
        BundleSegmenter(b, device="cpu")
    assert e.value.path.endswith("model.pt")
    state = _tiny_net().state_dict()
    state["extra.weight"] = state.pop("final_conv.bias")
    torch.save(state, b / "models" / "model.pt")
    with pytest.raises(BundleError, match=r"(?i)missing.*final_conv\.bias") as e:
        BundleSegmenter(b, device="cpu")
    assert "extra.weight" in str(e.value)
