"""Plug-in bundles after an audit (2026-12-07): a sigmoid network's probabilities are not read as logits, lesion
labels far off the lung are not lung, output channels the mapping leaves out and the bundle's own preprocessing
are warned about, and result.json's hashes let the model id be checked. Tiny networks and volumes."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from segmentation.bundle import (  # noqa: E402
    LABELS_FILE,
    ORPHAN_LESION_MM,
    BundleError,
    BundleSegmenter,
    preprocessing_mismatches,
    write_tiny_bundle,
)
from tests.test_segmentation_review import _edit_mapping, _write_config  # noqa: E402


def _no_airway(monkeypatch):
    import segmentation.bundle as bundle

    monkeypatch.setattr(bundle, "segment_airway", lambda hu, sp: np.zeros(hu.shape, bool))


class _Net:
    """A stand-in inferer: a network ending in its own sigmoid, channel 1 (right lung) sure in the image's left half
    (x), channel 2 (left lung) in its right half, channel 3 (lesion) nowhere, all values within 0-1; as logits
    (``scale``: ``scale * (p - 0.5)``) when asked."""

    roi_size = (8, 8, 8)

    def __init__(self, scale: float | None = None):
        self.scale = scale

    def __call__(self, x, net):
        shape = tuple(x.shape[2:])
        half = (torch.arange(shape[2]) < shape[2] // 2).float().expand(*shape)
        p = torch.stack([torch.full(shape, 0.3), 0.05 + 0.9 * half, 0.95 - 0.9 * half, torch.full(shape, 0.2)])[None]
        return p if self.scale is None else self.scale * (p - 0.5)


def test_probabilities_read_as_logits_are_refused_and_read_as_probabilities_are_thresholded_at_a_half(
        tmp_path, monkeypatch):
    """output: sigmoid reads logits (> 0): a network that ends in its own sigmoid set every channel of every voxel
    (26 L of lung, all of it lesion, status ok). Refused naming the mapping; output: sigmoid_probabilities reads the
    same values at 0.5."""
    _no_airway(monkeypatch)
    hu = np.full((6, 8, 10), -800.0, np.float32)
    b = _edit_mapping(write_tiny_bundle(tmp_path / "b"), lambda m: (m.update(output="sigmoid"),
                                                                   m["labels"].update(right_lung=[1], left_lung=[2],
                                                                                      lesion=[3])))
    seg = BundleSegmenter(b, device="cpu")
    seg.inferer = _Net()
    with pytest.raises(BundleError, match="sigmoid_probabilities") as e:
        seg.segment(hu, (4.0, 4.0, 4.0))
    assert e.value.path.endswith(LABELS_FILE)
    with pytest.raises(BundleError, match="all lie within 0-1"):
        seg.check_output()
    _edit_mapping(b, lambda m: m.update(output="sigmoid_probabilities"))
    seg = BundleSegmenter(b, device="cpu")
    seg.inferer = _Net()
    seg.check_output()
    out = seg.segment(hu, (4.0, 4.0, 4.0))
    assert (out.lungs[:, :, :5] == 1).all() and (out.lungs[:, :, 5:] == 2).all() and not out.lesions.any()
    seg.inferer = _Net(scale=4.0)  # logits declared as probabilities
    with pytest.raises(BundleError, match="no probabilities"):
        seg.segment(hu, (4.0, 4.0, 4.0))


def test_a_lesion_label_far_from_the_lung_is_taken_out_and_flagged(tmp_path, monkeypatch):
    """Lesion labels of a softmax bundle off its lung labels are lung of the nearest side only beside the lung
    (touching or within ORPHAN_LESION_MM): a stray blob 22 mm below cap001's base had been made lung, the base
    called cut by the scan and the six-zone and lobar totals emptied."""
    _no_airway(monkeypatch)
    seg = BundleSegmenter(write_tiny_bundle(tmp_path / "b"), device="cpu")
    lab = np.zeros((4, 6, 30), np.uint8)
    lab[:, 1:5, 0:2] = 1
    lab[:, 1:5, 4:6] = 2
    lab[:, 2:4, 2] = 3  # between the lungs, touching both
    lab[:, 2:4, 9] = 3  # 4 mm off the left lung's last voxel (x 5): within the limit
    lab[:, 2:4, 20:23] = 3  # 15 mm off: no lung
    monkeypatch.setattr(seg, "label_map", lambda hu, sp: lab)
    res = seg.segment(np.zeros(lab.shape, np.float32), (1.0, 1.0, 1.0))
    assert ORPHAN_LESION_MM == 5.0
    assert res.lesions[:, 2:4, 2].all() and (res.lungs[:, 2:4, 2] > 0).all()
    assert res.lesions[:, 2:4, 9].all() and (res.lungs[:, 2:4, 9] == 2).all()
    assert not res.lesions[:, :, 20:].any() and not res.lungs[:, :, 20:].any()
    assert res.flags == ["LESION_OFF_LUNG_REMOVED:0.0"]  # 24 voxels of 1 uL
    res = seg.segment(np.zeros(lab.shape, np.float32), (10.0, 10.0, 1.0))  # the same blob, 24 mL
    assert "LESION_OFF_LUNG_REMOVED:2.4" in res.flags


def test_output_channels_the_mapping_leaves_out_are_warned_about_once(tmp_path, caplog):
    """A 7-channel network mapped as lungs and lesion (labels 1-3): labels 4-6 silently became background (27 % of a
    scan's voxels in the audit, which then failed NO_LUNG_FOUND, blaming the scan)."""
    b = _edit_mapping(write_tiny_bundle(tmp_path / "b", with_lobes=True),
                      lambda m: m.update(labels={"right_lung": [1], "left_lung": [2], "lesion": [3]}))
    seg = BundleSegmenter(b, device="cpu")
    with caplog.at_level(logging.WARNING, logger="segmentation.bundle"):
        assert seg.check_output() == 7
        seg.check_output()
    said = [r.getMessage() for r in caplog.records if "names no meaning" in r.getMessage()]
    assert len(said) == 1 and "label 4, 5, 6 (of 7)" in said[0] and LABELS_FILE in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="segmentation.bundle"):
        BundleSegmenter(write_tiny_bundle(tmp_path / "c"), device="cpu").check_output()  # all four mapped
    assert not [r for r in caplog.records if "names no meaning" in r.getMessage()]


PREPROCESSING = {"preprocessing": {"_target_": "Compose", "transforms": [
    {"_target_": "LoadImaged", "keys": "image"},
    {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
    {"_target_": "monai.transforms.Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0]},
    {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -1000, "a_max": 500, "b_min": 0.0, "b_max": 1.0,
     "clip": True}]}}


def test_the_bundles_own_preprocessing_that_the_mapping_does_not_repeat_is_named():
    """ctscore runs only network_def: a bundle whose config resamples to 1.5 x 1.5 x 2 mm and scales -1000..500 got
    the scan's own grid and ctscore's -1024..400 window, silently."""
    got = preprocessing_mismatches(PREPROCESSING, {"orientation": "LPS"})
    assert len(got) == 3
    assert "add orientation: RAS" in got[0]
    assert "spacing_mm: [1.5, 1.5, 2.0]" in got[1] and "gives none" in got[1]
    assert "intensity: {a_min: -1000, a_max: 500, b_min: 0, b_max: 1, clip: true}" in got[2]
    same = {"orientation": "RAS", "spacing_mm": [1.5, 1.5, 2.0],
            "intensity": {"a_min": -1000, "a_max": 500, "b_min": 0.0, "b_max": 1.0, "clip": True}}
    assert preprocessing_mismatches(PREPROCESSING, same) == []
    lps = {"orientation": "LPS", "spacing_mm": [2.0, 1.5, 1.5], "hu_window": [-1000, 500]}  # the mapping's z, y, x
    cfg = {"t": [{"_target_": "Spacingd", "pixdim": [1.5, 1.5, 2.0]},
                 {"_target_": "ScaleIntensityRanged", "a_min": -1000, "a_max": 500, "clip": True}]}
    assert preprocessing_mismatches(cfg, lps) == []
    unclipped = {"t": [{"_target_": "ScaleIntensityRanged", "a_min": -1000, "a_max": 500}]}  # MONAI: clip False
    assert "clip: false" in preprocessing_mismatches(unclipped, lps)[0]
    refs = {"t": [{"_target_": "Spacingd", "pixdim": "@spacing"}, {"_target_": "Spacingd", "pixdim": [-1, -1, 2]}]}
    assert preprocessing_mismatches(refs, lps) == []  # not literal, or MONAI's "keep": not compared
    assert preprocessing_mismatches({"network_def": {}}, lps) == []


def test_a_bundle_with_preprocessing_the_mapping_misses_warns_at_load_naming_both_files(tmp_path, caplog):
    b = write_tiny_bundle(tmp_path / "b")
    import json

    net_def = json.loads((b / "configs" / "inference.json").read_text())["network_def"]
    _write_config(b, {"network_def": net_def, **PREPROCESSING})
    with caplog.at_level(logging.WARNING, logger="segmentation.bundle"):
        BundleSegmenter(b, device="cpu")
    said = [r.getMessage() for r in caplog.records if "not its preprocessing" in r.getMessage()]
    assert len(said) == 3 and all(LABELS_FILE in m and "inference.json" in m for m in said)


def test_result_hashes_give_the_model_id(tmp_path):
    """result.json's files_sha256 held only the weights, but model_id digests weights, config and mapping: two
    mappings of the same weights had the same hashes and different ids."""
    from pipeline.run import _weights_hashes

    seg = BundleSegmenter(write_tiny_bundle(tmp_path / "b"), device="cpu")
    files = _weights_hashes(seg)["files_sha256"]
    assert set(files) == {"weights", "config", "labels"}
    h = hashlib.sha256(files["weights"].encode())
    for k in ("config", "labels"):
        h.update(b"\0" + files[k].encode())
    assert seg.model_id == "bundle-" + h.hexdigest()[:16]


def test_a_torchscript_only_bundle_is_told_why_and_what_to_save(tmp_path):
    b = write_tiny_bundle(tmp_path / "b")
    w = b / "models" / "model.safetensors"
    w.rename(b / "models" / "model.ts")
    (b / "models" / "manifest.json").unlink()
    with pytest.raises(BundleError, match="TorchScript, is not read") as e:
        BundleSegmenter(b, device="cpu")
    assert "state_dict" in e.value.message


def test_training_into_a_file_is_a_config_error_not_a_traceback(tmp_path):
    from pipeline.errors import ConfigError
    from segmentation.recipe import train_segmenter

    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder") as e:
        train_segmenter(f, device="cpu")
    assert e.value.path == str(f)


def test_a_training_log_changed_after_training_is_warned_about(tmp_path, caplog):
    """train_log.json (what the weights were trained on) is in the manifest with the weights; an edited copy loaded
    without a word (an audit). The weights still load: the log does not change what they do."""
    from segmentation.monai_segmenter import MonaiSegmenter
    from segmentation.training import write_manifest
    from tests.test_segmentation_monai import tiny_weights

    w = tiny_weights(tmp_path / "w")
    (w / "train_log.json").write_text('{"iterations": 3}')
    write_manifest(w)
    with caplog.at_level(logging.WARNING, logger="segmentation.monai_segmenter"):
        MonaiSegmenter(w, device="cpu")
    assert "changed since the model was written" not in caplog.text
    (w / "train_log.json").write_text('{"iterations": 3000}')
    with caplog.at_level(logging.WARNING, logger="segmentation.monai_segmenter"):
        MonaiSegmenter(w, device="cpu")
    assert "train_log.json changed since the model was written" in caplog.text
    caplog.clear()
    (w / "train_log.json").unlink()  # a record left out when the folder was copied: nothing to say
    with caplog.at_level(logging.WARNING, logger="segmentation.monai_segmenter"):
        MonaiSegmenter(w, device="cpu")
    assert "changed since" not in caplog.text


def test_a_voxel_in_both_sigmoid_lung_channels_goes_to_the_larger_one(tmp_path, monkeypatch):
    """Sigmoid lung channels may overlap; the left lung, assigned last, took every such voxel (89 % of a random
    network's voxels in the audit). Now the side whose output is larger."""
    _no_airway(monkeypatch)
    b = _edit_mapping(write_tiny_bundle(tmp_path / "b"), lambda m: m.update(output="sigmoid_probabilities"))
    seg = BundleSegmenter(b, device="cpu")

    class Both(_Net):
        def __call__(self, x, net):  # both lungs sure everywhere; right surer in the image's left half (x)
            shape = tuple(x.shape[2:])
            half = (torch.arange(shape[2]) < shape[2] // 2).float().expand(*shape)
            return torch.stack([torch.full(shape, 0.1), 0.7 + 0.2 * half, 0.8 - 0.0 * half,
                                torch.full(shape, 0.1)])[None]

    seg.inferer = Both()
    out = seg.segment(np.full((6, 8, 10), -800.0, np.float32), (4.0, 4.0, 4.0))
    assert (out.lungs[:, :, :5] == 1).all() and (out.lungs[:, :, 5:] == 2).all()


def test_a_lung_labelled_only_lesion_is_kept_as_lung_of_its_side(tmp_path, monkeypatch):
    """A white lung that the bundle labels lesion only lies beyond the mediastinum from the other lung's label: it
    was taken out whole (810 mL of lesion lost; before the distance rule it went to the other side). Pieces of
    ORPHAN_LESION_KEEP_ML or more stay, as lung of the side where they lie."""
    from segmentation.bundle import ORPHAN_LESION_KEEP_ML

    _no_airway(monkeypatch)
    seg = BundleSegmenter(write_tiny_bundle(tmp_path / "b"), device="cpu")
    lab = np.zeros((20, 30, 60), np.uint8)
    lab[:, 5:25, 2:20] = 1  # the right lung (LPS: small x)
    lab[:, 5:25, 40:58] = 3  # the left lung, all lesion, 20 mm (x) from the right one
    monkeypatch.setattr(seg, "label_map", lambda hu, sp: lab)
    res = seg.segment(np.zeros(lab.shape, np.float32), (4.0, 4.0, 1.0))
    ml = float((lab == 3).sum()) * 16.0 / 1000.0
    assert ml >= ORPHAN_LESION_KEEP_ML
    assert (res.lungs[lab == 3] == 2).all() and res.lesions[lab == 3].all() and (res.lungs[lab == 1] == 1).all()
    assert not [f for f in res.flags if f.startswith("LESION_OFF_LUNG_REMOVED")]
    only = np.where(lab == 1, 0, lab)  # and with no lung label at all: the side by the image's middle
    monkeypatch.setattr(seg, "label_map", lambda hu, sp: only)
    assert (seg.segment(np.zeros(lab.shape, np.float32), (4.0, 4.0, 1.0)).lungs[lab == 3] == 2).all()


def test_a_piece_touching_the_lung_on_a_coarse_grid_stays(tmp_path, monkeypatch):
    """Distances run between voxel centres: on a grid of 6 mm slices a lesion piece on the slice above the lung lay
    6 mm "off" it and was taken out. The limit is at least one voxel's diagonal."""
    _no_airway(monkeypatch)
    seg = BundleSegmenter(write_tiny_bundle(tmp_path / "b"), device="cpu")
    lab = np.zeros((6, 10, 20), np.uint8)
    lab[:3, 2:8, 2:8] = 1
    lab[:3, 2:8, 12:18] = 2
    lab[3, 3:6, 3:6] = 3  # the slice above the right lung
    monkeypatch.setattr(seg, "label_map", lambda hu, sp: lab)
    res = seg.segment(np.zeros(lab.shape, np.float32), (6.0, 1.0, 1.0))
    assert res.lesions[3, 3:6, 3:6].all() and (res.lungs[3, 3:6, 3:6] == 1).all() and not res.flags


def test_non_finite_outputs_are_the_networks_fault(tmp_path):
    b = _edit_mapping(write_tiny_bundle(tmp_path / "b"), lambda m: m.update(output="sigmoid"))
    seg = BundleSegmenter(b, device="cpu")

    class Nan(_Net):
        def __call__(self, x, net):
            return torch.full((1, 4, *x.shape[2:]), float("nan"))

    seg.inferer = Nan()
    with pytest.raises(BundleError, match="NaN or infinite") as e:
        seg.check_output()
    assert e.value.path.endswith("inference.json")


@pytest.mark.parametrize("pixdim,want", [([1.5, 2.0], "[1.5, 2.0, 2.0]"), ([1.5, 1.5, 2.0, 1.0], "[1.5, 1.5, 2.0]"),
                                         ([1.5, 1.5, -1], "keeps the scan's own spacing")])
def test_pixdim_as_monai_reads_it(pixdim, want):
    """MONAI pads a short pixdim with its last value, cuts a long one, and keeps the scan's spacing on an axis of a
    value <= 0: all three were passed over without a word."""
    got = preprocessing_mismatches({"t": [{"_target_": "Spacingd", "pixdim": pixdim}]}, {"orientation": "RAS"})
    assert len(got) == 1 and want in got[0]
