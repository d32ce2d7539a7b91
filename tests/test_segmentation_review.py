"""Review of the segmenters' model loading and inference: unreadable weights and malformed bundles are refused
naming the file (never a traceback), a bundle config cannot run code of its own, label mappings are checked,
RAS bundles get RAS arrays, a right/left confusion is flagged, small volumes run through the shipped network,
and threads share one loaded model. Fast: tiny networks and tiny volumes, no shared data."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from pipeline.errors import CTScoreError  # noqa: E402
from segmentation.bundle import LABELS_FILE, BundleError, BundleSegmenter, write_tiny_bundle  # noqa: E402
from segmentation.monai_segmenter import MonaiSegmenter, WeightsError  # noqa: E402
from segmentation.training import sha256_file, write_manifest  # noqa: E402
from tests.test_segmentation_monai import WEIGHTS, phantom, tiny_weights  # noqa: E402


def _bundle_manifest(folder: Path) -> None:
    (folder / "models" / "manifest.json").write_text(json.dumps(
        {"files": {p.name: {"sha256": sha256_file(p)} for p in (folder / "models").glob("model.*")}}))


def _edit_mapping(folder: Path, edit) -> Path:
    m = yaml.safe_load((folder / LABELS_FILE).read_text())
    edit(m)
    (folder / LABELS_FILE).write_text(yaml.safe_dump(m))
    return folder


def _net_def(folder: Path) -> dict:
    return json.loads((folder / "configs" / "inference.json").read_text())["network_def"]


def _write_config(folder: Path, config: dict) -> None:
    (folder / "configs" / "inference.json").write_text(json.dumps(config))


# ------------------------------------------------------------------------------------------ weights files

@pytest.mark.parametrize("content", [b"garbage" * 10, None], ids=["garbage", "truncated"])
def test_unreadable_weights_with_a_matching_manifest_name_the_file(tmp_path, content):
    """A corrupt or truncated model.safetensors whose manifest was written for it: a WeightsError naming the file
    (was safetensors' SafetensorError, a traceback)."""
    w = tiny_weights(tmp_path / "w")
    data = (w / "model.safetensors").read_bytes()
    (w / "model.safetensors").write_bytes(content if content is not None else data[:500])
    write_manifest(w)
    with pytest.raises(WeightsError, match="unreadable weights") as e:
        MonaiSegmenter(w, device="cpu")
    assert e.value.path.endswith("model.safetensors")


def test_bundle_unreadable_weights_name_the_file(tmp_path):
    """Bundle weights that are not a state dict (garbage safetensors, a pickle of other objects, a corrupt or
    non-dict .pt): a BundleError naming the weights file, and a pickle's code never runs."""
    import os

    b = write_tiny_bundle(tmp_path / "b")
    (b / "models" / "model.safetensors").write_bytes(b"xx" * 40)
    _bundle_manifest(b)
    with pytest.raises(BundleError, match="unreadable weights") as e:
        BundleSegmenter(b, device="cpu")
    assert e.value.path.endswith("model.safetensors")

    marker = tmp_path / "pickle_ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (b / "models" / "model.safetensors").unlink()
    (b / "models" / "manifest.json").unlink()
    pt = b / "models" / "model.pt"
    for obj, word in ((Evil(), "unreadable weights"), ([1, 2, 3], "not a state dict")):
        torch.save({"a": obj} if isinstance(obj, Evil) else obj, pt)
        with pytest.raises(BundleError, match=word) as e:
            BundleSegmenter(b, device="cpu")
        assert e.value.path.endswith("model.pt")
    assert not marker.exists()
    pt.write_bytes(b"PK\x03\x04" + b"0" * 100)
    with pytest.raises(BundleError, match="unreadable weights"):
        BundleSegmenter(b, device="cpu")


def test_bad_model_yaml_numbers_name_the_file(tmp_path):
    """A model.yaml with a zero grid spacing or an inverted window: refused at load naming model.yaml (was an
    OverflowError / nonsense at the first scan)."""
    w = tiny_weights(tmp_path / "w")
    meta = yaml.safe_load((w / "model.yaml").read_text())
    for key, bad in (("model_spacing_mm", [0, 4, 4]), ("hu_window", [400, -1024]), ("roi_size", [16, 32])):
        (w / "model.yaml").write_text(yaml.safe_dump({**meta, key: bad}))
        write_manifest(w)
        with pytest.raises(WeightsError, match=key) as e:
            MonaiSegmenter(w, device="cpu")
        assert e.value.path.endswith("model.yaml")


# ------------------------------------------------------------------------------------------ bundle config policy

@pytest.mark.parametrize("case", ["target", "expression", "requires", "reference_to_expression", "macro"])
def test_bundle_config_cannot_run_code(tmp_path, case):
    """network_def may not import or call arbitrary code: an os.system _target_, a $ expression (eval), a
    _requires_, a reference to an expression or a macro are refused naming the config, and nothing ran."""
    marker = tmp_path / "ran"
    b = write_tiny_bundle(tmp_path / "b")
    net = _net_def(b)
    cmd = f"$__import__('os').system('touch {marker}')"
    config = {
        "target": {"network_def": {"_target_": "os.system", "command": f"touch {marker}"}},
        "expression": {"network_def": cmd},
        "requires": {"network_def": {**net, "_requires_": cmd}},
        "reference_to_expression": {"f": cmd, "network_def": {**net, "features": "@f"}},
        "macro": {"network_def": {**net, "features": "%other.json::features"}},
    }[case]
    _write_config(b, config)
    with pytest.raises(BundleError, match="refused") as e:
        BundleSegmenter(b, device="cpu")
    assert e.value.path.endswith("inference.json")
    assert not marker.exists()


def test_bundle_config_network_classes_and_literal_references_still_work(tmp_path):
    """The policy keeps real bundles working: MONAI short names (as in the model zoo) and @ references to literal
    values elsewhere in the config; an expression elsewhere in the config is simply not used."""
    b = write_tiny_bundle(tmp_path / "b")
    net = _net_def(b)
    marker = tmp_path / "ran"
    _write_config(b, {"n_out": 4, "unused": f"$__import__('os').system('touch {marker}')",
                      "network_def": {**net, "_target_": "BasicUNet", "out_channels": "@n_out"}})
    seg = BundleSegmenter(b, device="cpu")
    hu, sp = phantom()
    assert seg.segment(hu, sp).lungs.shape == hu.shape
    assert not marker.exists()


@pytest.mark.parametrize("net_def", [5, {"_target_": "torch.nn.functional.relu"}, {"_target_": "Norm"}])
def test_bundle_network_def_that_is_no_network_is_refused(tmp_path, net_def):
    """network_def that builds no torch.nn.Module: a BundleError naming the config (was an AttributeError)."""
    b = write_tiny_bundle(tmp_path / "b")
    _write_config(b, {"network_def": net_def})
    with pytest.raises(BundleError) as e:
        BundleSegmenter(b, device="cpu")
    assert e.value.path.endswith("inference.json")


# ------------------------------------------------------------------------------------------ label mapping

BAD_MAPPINGS = {
    "same label for both lungs": (lambda m: m["labels"].update(left_lung=[1]), "both right_lung and left_lung"),
    "negative label": (lambda m: m["labels"].update(right_lung=[-1]), "not a label"),
    "background label": (lambda m: m["labels"].update(right_lung=[0]), "background"),
    "non-integer label": (lambda m: m["labels"].update(right_lung=["a"]), "whole number"),
    "float label": (lambda m: m["labels"].update(right_lung=[1.7]), "whole number"),
    "empty list": (lambda m: m["labels"].update(right_lung=[]), "non-empty"),
    "typo in a label key": (lambda m: m["labels"].update(lesions=[3]), "unknown label key"),
    "typo in a key": (lambda m: m.update(spacing=[1, 1, 1]), "unknown key"),
    "output typo": (lambda m: m.update(output="softmx"), "softmax or sigmoid"),
    "zero spacing": (lambda m: m.update(spacing_mm=[0, 4, 4]), "spacing_mm"),
    "2-d spacing": (lambda m: m.update(spacing_mm=[4, 4]), "spacing_mm"),
    "2-d roi": (lambda m: m.update(roi_size=[32, 32]), "roi_size"),
    "inverted window": (lambda m: m.update(hu_window=[400, -1024]), "hu_window"),
    "intensity without a_max": (lambda m: (m.pop("hu_window"), m.update(intensity={"a_min": 0})), "intensity"),
    "orientation typo": (lambda m: m.update(orientation="RAI"), "orientation"),
}
BAD_LOBES = {
    "lobes not a mapping": (lambda m: m["labels"].update(lobes=[1, 2, 3, 4, 5]), "lobe names"),
    "two lobes one label": (lambda m: m["labels"]["lobes"].update(left_lower=4), "given to both"),
    "lobe and lung share a label": (lambda m: m["labels"].update(right_lung=[4]), "given to both"),
    "unknown lobe": (lambda m: m["labels"]["lobes"].update(right_lowr=3), "unknown lobe name"),
}


@pytest.mark.parametrize("lobes,case", [(False, k) for k in BAD_MAPPINGS] + [(True, k) for k in BAD_LOBES])
def test_bad_label_mapping_is_refused_at_load(tmp_path, lobes, case):
    """Label mappings that cannot mean anything are refused when the bundle is loaded, naming the mapping file
    (they used to give an empty mask silently, one side winning, or a traceback at the first scan)."""
    edit, word = (BAD_LOBES if lobes else BAD_MAPPINGS)[case]
    b = _edit_mapping(write_tiny_bundle(tmp_path / "b", with_lobes=lobes), edit)
    with pytest.raises(BundleError, match=word) as e:
        BundleSegmenter(b, device="cpu")
    assert e.value.path.endswith(LABELS_FILE)


@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_labels_beyond_the_output_channels_are_an_error_not_an_empty_mask(tmp_path, output):
    """A lesion label 7 for a 4-channel network: a BundleError naming the mapping (softmax: an empty lesion mask,
    silently; sigmoid: an IndexError)."""
    b = _edit_mapping(write_tiny_bundle(tmp_path / "b"), lambda m: (m.update(output=output),
                                                                      m["labels"].update(lesion=[7])))
    seg = BundleSegmenter(b, device="cpu")
    hu, sp = phantom()
    with pytest.raises(BundleError, match="beyond the network's 4 output channels") as e:
        seg.segment(hu, sp)
    assert e.value.path.endswith(LABELS_FILE) and isinstance(e.value, CTScoreError)


# ------------------------------------------------------------------------------------------ orientation, sides

def _side_logits(shape: tuple[int, ...], axis: int, right_high: bool) -> torch.Tensor:
    """[1, 4, *shape] logits: 'right lung' in the upper half of spatial ``axis`` (the lower half when not
    ``right_high``), 'left lung' in the other half, never background or lesion."""
    n = shape[axis]
    hi = (torch.arange(n) >= n // 2).float().reshape([n if i == axis else 1 for i in range(3)]).expand(*shape)
    r = hi if right_high else 1 - hi
    return torch.stack([torch.full(shape, 0.5), r, 1 - r, torch.zeros(shape)], 0)[None] * 4


def test_ras_bundle_gets_ras_arrays_and_sides_come_back_right(tmp_path, monkeypatch):
    """orientation: RAS (MONAI's LoadImage + Orientationd(RAS), as model-zoo bundles are trained): the network gets
    [x, y, z] with x towards the patient's right; a network that calls the right half of its x axis 'right lung'
    gives a right lung at the patient's right (small LPS x). The same network without the key (ctscore's LPS
    [z, y, x]) would put the right lung on the patient's left, which is flagged."""
    import segmentation.bundle as bundle

    monkeypatch.setattr(bundle, "segment_airway", lambda hu, sp: np.zeros(hu.shape, bool))
    hu = np.full((8, 10, 12), -800.0, np.float32)  # z, y, x: three different sizes
    seen = []

    def fake(ras: bool):  # a network that calls the upper half of the patient's x axis 'right lung'
        def infer(x, net):
            seen.append(tuple(x.shape[2:]))
            return _side_logits(tuple(x.shape[2:]), 0 if ras else 2, True)
        return infer

    for ras in (True, False):
        b = write_tiny_bundle(tmp_path / f"b{ras}")
        _edit_mapping(b, lambda m, ras=ras: (m.pop("spacing_mm"), m.update(orientation="RAS") if ras else None))
        seg = BundleSegmenter(b, device="cpu")
        seg.inferer = fake(ras)
        out = seg.segment(hu, (1.0, 1.0, 1.0))
        assert seen[-1] == ((12, 10, 8) if ras else (8, 10, 12))
        if ras:  # network's RAS x high = patient right = LPS x low
            assert (out.lungs[:, :, :6] == 1).all() and (out.lungs[:, :, 6:] == 2).all()
            assert "LUNG_SIDES_SWAPPED" not in out.flags
        else:  # LPS network calling the low-x half 'left': a swap, flagged
            assert (out.lungs[:, :, :6] == 2).all() and "LUNG_SIDES_SWAPPED" in out.flags


def test_monai_segmenter_flags_a_right_left_confusion(tmp_path, monkeypatch):
    """Whatever the patient's position the arrays are LPS, so a right lung at larger x than the left one is the
    network's confusion: flagged LUNG_SIDES_SWAPPED (was silent), not on a correct map."""
    import segmentation.monai_segmenter as ms
    from segmentation.base import sides_swapped

    monkeypatch.setattr(ms, "segment_airway", lambda hu, sp: np.zeros(hu.shape, bool))
    seg = MonaiSegmenter(tiny_weights(tmp_path / "w"), device="cpu", cfg={"segmentation": {"monai": {
        "remove_bowel_gas": False}}})
    hu, sp = phantom()
    for right_high, flagged in ((True, True), (False, False)):
        def logits(h, s, right_high=right_high):
            return _side_logits(tuple(h.shape), 2, right_high)[0]

        monkeypatch.setattr(seg, "predict_logits", logits)
        out = seg.segment(hu, sp)
        assert ("LUNG_SIDES_SWAPPED" in out.flags) == flagged
        assert sides_swapped(out.lungs) == flagged


# ------------------------------------------------------------------------------------------ sizes, cache

@pytest.mark.parametrize("shape,spacing", [((3, 33, 47), (5.0, 0.7, 0.7)), ((2, 20, 20), (2.5, 2.5, 2.5))])
def test_shipped_network_on_a_small_volume(shape, spacing):
    """A volume of a few slices and a small field of view (every side under 40 mm on the model grid): the
    shipped network runs (was: instance norm refused its 1-voxel bottleneck in a 16-voxel window)."""
    if not (WEIGHTS / "model.safetensors").exists():
        pytest.skip("shipped weights not present")
    hu = np.full(shape, 40.0, np.float32)
    hu[:, 3:-3, 2:shape[2] // 2 - 1] = -850.0
    hu[:, 3:-3, shape[2] // 2 + 1:-2] = -850.0
    res = MonaiSegmenter(device="cpu").segment(hu, spacing)
    assert res.lungs.shape == shape and res.lesions.shape == shape


def test_threads_share_one_loaded_segmenter(tmp_path, monkeypatch):
    """Scans starting at once in threads of one process load the model once (lru_cache alone built one per
    thread on the first miss)."""
    import segmentation.factory as factory

    built = []
    real = factory.build_segmenter

    def slow(cfg):
        built.append(1)
        time.sleep(0.2)
        return real(cfg)

    monkeypatch.setattr(factory, "build_segmenter", slow)
    factory._cached.cache_clear()
    cfg = {"segmentation": {"method": str(tiny_weights(tmp_path / "w")), "device": "cpu"}}
    got = []
    threads = [threading.Thread(target=lambda: got.append(factory.get_segmenter(cfg))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    factory._cached.cache_clear()
    assert len(built) == 1 and len({id(s) for s in got}) == 1


def test_the_weights_loaded_are_the_bytes_whose_sha256_was_checked(tmp_path, monkeypatch):
    """The weights were hashed, then read again to load: a file replaced in between was loaded unchecked. Now the
    checked bytes themselves are loaded (a plug-in bundle's too)."""
    import segmentation.monai_segmenter as ms

    w = tiny_weights(tmp_path / "w")
    checked = ms.read_verified

    def swap_after_check(folder, files):
        out = checked(folder, files)
        (Path(folder) / "model.safetensors").write_bytes(b"not the weights that were checked")
        return out

    monkeypatch.setattr(ms, "read_verified", swap_after_check)
    seg = MonaiSegmenter(w, device="cpu")  # loads what was checked, not what is on disk now
    assert seg.hashes["model.safetensors"] != sha256_file(Path(w) / "model.safetensors")


def test_a_model_folder_written_again_is_loaded_again(tmp_path):
    """The process-wide cache was keyed on the configuration only: a model folder trained again in the same
    process (``ctscore train --overwrite``, a notebook re-training into the same folder) kept being served as it
    was loaded the first time."""
    import os

    import segmentation.factory as factory
    from segmentation.training import write_manifest

    folder = tiny_weights(tmp_path / "w")
    cfg = {"segmentation": {"method": str(folder), "device": "cpu"}}
    first = factory.get_segmenter(cfg)
    assert factory.get_segmenter(cfg) is first  # unchanged: the same loaded model
    torch.manual_seed(1)  # new weights in place, as a re-training writes them
    from safetensors.torch import save_file

    from segmentation.network import build_network

    net = build_network({"name": "unet", "channels": [4, 8], "strides": [2], "num_res_units": 0})
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    write_manifest(folder)
    st = (folder / "model.safetensors").stat()
    os.utime(folder / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse clocks
    second = factory.get_segmenter(cfg)
    assert second is not first and second.model_id != first.model_id
    assert factory.get_segmenter({"segmentation": {"method": "classical"}}) is \
        factory.get_segmenter({"segmentation": {"method": "classical"}})
