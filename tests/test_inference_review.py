"""Review of the network inference path (segmentation/monai_segmenter.py, network.py): unusual but legal inputs,
model descriptions that cannot run, device values, memory of the body box.

Fast: tiny random-weight networks and small synthetic volumes; the shipped weights only where the behaviour of
the real model is the point (a few seconds on CPU)."""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from pipeline.errors import ConfigError  # noqa: E402
from segmentation.monai_segmenter import (  # noqa: E402
    BODY_HU,
    WEIGHTS_DIR,
    MonaiSegmenter,
    WeightsError,
    body_crop,
    resolve_device,
)
from tests.test_segmentation_monai import phantom, tiny_weights  # noqa: E402


def _rewrite_yaml(folder: Path, **changes) -> Path:
    """``folder``'s model.yaml with ``changes``, the manifest written again (the sha256 fits: only the values are
    wrong)."""
    from segmentation.training import write_manifest

    meta = yaml.safe_load((folder / "model.yaml").read_text())
    meta.update(changes)
    (folder / "model.yaml").write_text(yaml.safe_dump(meta))
    write_manifest(folder)
    return folder


def _tiny_net(folder: Path, arch: dict, roi: list[int], inference_roi: list[int]) -> Path:
    from safetensors.torch import save_file

    from segmentation.network import build_network
    from segmentation.training import write_manifest

    folder.mkdir(parents=True)
    torch.manual_seed(0)
    net = build_network(arch)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "model.yaml").write_text(yaml.safe_dump({
        "arch": arch, "model_spacing_mm": [4.0, 4.0, 4.0], "hu_window": [-1024.0, 400.0], "roi_size": roi,
        "inference_roi_size": inference_roi}))
    write_manifest(folder)
    return folder


# ------------------------------------------------------------------------------------------ NaN in the volume

def test_a_nan_voxel_in_the_body_does_not_turn_the_body_into_lung(tmp_path):
    """One NaN voxel inside the body (a NIfTI or a resampler that writes NaN for missing data) went through the
    instance-normalised network and made every logit of the window NaN: argmax3 then called the whole body box
    left lung (105000 of 153600 voxels with the shipped network) and ``probabilities`` were NaN everywhere. NaN is
    missing data: it is treated as air, like the outside of the field of view, and the rest of the scan is
    segmented as without it."""
    seg = MonaiSegmenter(tiny_weights(tmp_path / "w"), device="cpu",
                         cfg={"segmentation": {"monai": {"scale_tta": 0.0, "flip_tta": False}}})
    hu, sp = phantom()
    bad = hu.copy()
    bad[10, 20, 24] = np.nan  # in the soft tissue between the lungs
    air = hu.copy()
    air[10, 20, 24] = -1000.0
    got, want = seg.segment(bad, sp), seg.segment(air, sp)
    np.testing.assert_array_equal(got.lungs, want.lungs)
    np.testing.assert_array_equal(got.lesions, want.lesions)
    p = seg.probabilities(bad, sp)
    assert all(np.isfinite(v).all() for v in p.values())
    np.testing.assert_array_equal(p["lung"], seg.probabilities(air, sp)["lung"])


# ------------------------------------------------------------------------------------------ shapes and spacing

@pytest.mark.parametrize("case, word", [
    ("2d", "3-D"), ("4d", "3-D"), ("no slices", "empty"), ("spacing of 2", "spacing"), ("zero spacing", "spacing"),
    ("negative spacing", "spacing"), ("nan spacing", "spacing"), ("text spacing", "spacing"),
])
def test_a_volume_or_spacing_that_is_not_a_3d_scan_is_a_clear_error(tmp_path, case, word):
    """``segment`` / ``probabilities`` from Python: a 2-D slice, a 4-D array, a volume without slices, or a spacing
    that is not three positive numbers gave numpy / torch broadcasting errors, a ZeroDivisionError, "cannot convert
    float NaN to integer", or (negative spacing) a silent result. Now a ValueError that says what is wrong."""
    seg = MonaiSegmenter(tiny_weights(tmp_path / "w"), device="cpu")
    hu, sp = phantom()
    args = {"2d": (hu[5], sp), "4d": (hu[None], sp), "no slices": (hu[:0], sp), "spacing of 2": (hu, sp[1:]),
            "zero spacing": (hu, (0.0, 3.0, 3.0)), "negative spacing": (hu, (-3.0, 3.0, 3.0)),
            "nan spacing": (hu, (float("nan"), 3.0, 3.0)), "text spacing": (hu, ("a", 3.0, 3.0))}[case]
    for call in (seg.segment, seg.probabilities):
        with pytest.raises(ValueError, match=word):
            call(*args)


# ------------------------------------------------------------------------------------------ no body

def test_a_volume_of_air_has_no_lungs_and_no_lesions():
    """No voxel above -500 HU: no body, so no chest. The box was then the whole volume and the shipped network
    called some of the air lung and lesion (30x64x80 voxels of -1000 HU at 5 mm: 10418 lung and 284 lesion voxels
    with the default test-time augmentation), a non-zero severity score of an empty scan. Now empty masks."""
    if not (WEIGHTS_DIR / "model.safetensors").exists():
        pytest.skip("shipped weights not present")
    seg = MonaiSegmenter(device="cpu")
    hu = np.full((30, 64, 80), -1000.0, np.float32)
    hu[:, 30:34, 38:42] = -700.0  # some lung-like density, still no body
    out = seg.segment(hu, (5.0, 5.0, 5.0))
    assert out.lungs.shape == hu.shape and out.lungs.dtype == np.uint8 and out.lesions.dtype == bool
    assert not out.lungs.any() and not out.lesions.any()
    assert out.airway is not None and not out.airway.any()
    p = seg.probabilities(hu, (5.0, 5.0, 5.0))
    assert not p["lung"].any() and not p["lesion"].any()


# ------------------------------------------------------------------------------------------ model.yaml

def test_an_inference_window_the_network_cannot_take_is_refused_at_load(tmp_path):
    """``inference_roi_size`` (or ``roi_size``) not a multiple of the network's downsampling (the product of its
    strides): the model loaded, then every scan failed in the network with "Sizes of tensors must match except in
    dimension 1". Now a WeightsError naming model.yaml when the model is built."""
    w = _rewrite_yaml(tiny_weights(tmp_path / "w"), inference_roi_size=[17, 32, 32])  # tiny net: strides [2]
    with pytest.raises(WeightsError, match="inference_roi_size.*multiple of 2") as e:
        MonaiSegmenter(w, device="cpu")
    assert e.value.path.endswith("model.yaml")
    w = _rewrite_yaml(tiny_weights(tmp_path / "w2"), roi_size=[16, 31, 32])
    with pytest.raises(WeightsError, match="roi_size.*multiple of 2"):
        MonaiSegmenter(w, device="cpu")


@pytest.mark.parametrize("key, value, word", [
    ("sw_overlap", 1.0, "sw_overlap"), ("sw_overlap", -0.5, "sw_overlap"), ("sw_overlap", "x", "sw_overlap"),
    ("flip_tta", "no", "flip_tta"), ("scale_tta", "x", "scale_tta"), ("scale_tta", 0.7, "scale_tta"),
])
def test_model_yaml_inference_options_are_checked_at_load(tmp_path, key, value, word):
    """``sw_overlap`` outside [0, 1) or not a number failed at every scan (MONAI's "overlap must be >= 0 and < 1")
    or at load with a bare "could not convert string to float"; ``flip_tta: "no"`` was read as true (bool of a
    non-empty text); ``scale_tta: 0.7`` in model.yaml was blamed on ``segmentation.monai.scale_tta``. Now a
    WeightsError naming the key and model.yaml."""
    w = _rewrite_yaml(tiny_weights(tmp_path / "w"), **{key: value})
    with pytest.raises(WeightsError, match=word) as e:
        MonaiSegmenter(w, device="cpu")
    assert e.value.path.endswith("model.yaml")


def test_a_network_that_halves_five_times_runs_on_a_small_scan(tmp_path):
    """The window of a scan smaller than the inference window was rounded up to a multiple of 16, which suits the
    shipped four-stride U-Net only: a U-Net with five strides (``ctscore train`` takes the architecture) failed on
    every scan smaller than its window ("Sizes of tensors must match"). Windows are now multiples of the network's
    own downsampling."""
    arch = {"name": "unet", "channels": [2, 2, 2, 2, 2, 2], "strides": [2, 2, 2, 2, 2], "num_res_units": 0}
    seg = MonaiSegmenter(_tiny_net(tmp_path / "w", arch, [64, 64, 64], [160, 192, 192]), device="cpu",
                         cfg={"segmentation": {"monai": {"scale_tta": 0.0}}})
    hu, sp = phantom()
    out = seg.segment(hu, sp)
    assert out.lungs.shape == hu.shape


# ------------------------------------------------------------------------------------------ options, devices

def test_sw_batch_size_must_be_a_positive_whole_number(tmp_path):
    """``segmentation.monai.sw_batch_size`` 0 (from a Python configuration) loaded, then every scan failed inside
    MONAI; "x" gave a bare ValueError. Now a ConfigError naming the option at build."""
    w = tiny_weights(tmp_path / "w")
    for bad in (0, -2, "x", 1.5):
        with pytest.raises(ConfigError, match="sw_batch_size"):
            MonaiSegmenter(w, device="cpu", cfg={"segmentation": {"monai": {"sw_batch_size": bad}}})
    assert MonaiSegmenter(w, device="cpu", cfg={"segmentation": {"monai": {"sw_batch_size": 3}}}).sw_batch_size == 3


def test_resolve_device_takes_a_torch_device():
    """From Python, ``device=torch.device("cpu")`` failed with "'torch.device' object has no attribute 'strip'"."""
    assert resolve_device(torch.device("cpu")).type == "cpu"
    with pytest.raises(ConfigError, match="cpu, cuda, cuda:N or auto"):
        resolve_device(torch.device("meta"))


# ------------------------------------------------------------------------------------------ memory

def _reference_body_crop(hu, spacing, margin_mm=5.0):
    """body_crop as it was written (np.nonzero over the whole body): the reference for the result."""
    idx = np.nonzero(np.asarray(hu) > BODY_HU)
    if idx[0].size == 0:
        return tuple(slice(0, n) for n in hu.shape), [(0, 0)] * 3
    box, pad = [], []
    for axis, (i, n, s) in enumerate(zip(idx, hu.shape, spacing)):
        m = int(np.ceil(margin_mm / s))
        lo, hi = int(i.min()) - m, int(i.max()) + m + 1
        box.append(slice(max(0, lo), min(n, hi)))
        pad.append((0, 0) if axis == 0 else (max(0, -lo), max(0, hi - n)))
    return tuple(box), pad


def test_body_crop_does_not_hold_index_arrays_of_the_whole_body():
    """The body box came from np.nonzero of the body: three int64 arrays, 24 bytes per body voxel (1.5 GB for a
    512x512x600 series, twice the float32 volume), for six numbers. Now projections of the body mask (1 byte per
    voxel); the box is the same."""
    hu = np.full((96, 256, 256), -1000.0, np.float32)
    hu[:, 30:-20, 20:-25] = 40.0
    sp = (1.0, 0.7, 0.7)
    tracemalloc.start()
    try:
        got = body_crop(hu, sp)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == _reference_body_crop(hu, sp)
    assert peak < 2 * hu.size, f"{peak / 1e6:.0f} MB for a {hu.nbytes / 1e6:.0f} MB volume"
    rng = np.random.default_rng(3)
    for _ in range(20):  # the same box as before: bodies touching edges, single voxels, none
        v = np.full(tuple(rng.integers(1, 12, 3)), -1000.0, np.float32)
        v[rng.random(v.shape) < rng.choice([0.0, 0.02, 0.3])] = 40.0
        s = tuple(float(x) for x in rng.uniform(0.5, 6.0, 3))
        assert body_crop(v, s, 4.0) == _reference_body_crop(v, s, 4.0)


def test_segmenter_on_a_volume_touching_every_edge_and_a_single_slice(tmp_path):
    """Box offsets: a body to every edge of the array (padding in-plane), a single slice, a non-contiguous int16
    view: masks on the input grid, the same as for the contiguous float32 copy."""
    seg = MonaiSegmenter(tiny_weights(tmp_path / "w"), device="cpu")
    hu, sp = phantom()  # body to the edges
    view = hu.astype(np.int16)[:, ::-1, :][:, ::-1, :][::2]  # a non-contiguous view
    a, b = seg.segment(view, (6.0, 3.0, 3.0)), seg.segment(np.ascontiguousarray(view, np.float32), (6.0, 3.0, 3.0))
    np.testing.assert_array_equal(a.lungs, b.lungs)
    one = seg.segment(hu[10:11], sp)
    assert one.lungs.shape == (1,) + hu.shape[1:]


def test_the_shipped_network_copy_with_a_bad_window_names_model_yaml(tmp_path):
    """The shipped architecture (strides 2, 2, 2, 2): an inference window of 40 voxels is refused at load."""
    if not (WEIGHTS_DIR / "model.safetensors").exists():
        pytest.skip("shipped weights not present")
    w = tmp_path / "w"
    shutil.copytree(WEIGHTS_DIR, w)
    _rewrite_yaml(w, inference_roi_size=[40, 40, 40])
    with pytest.raises(WeightsError, match="multiple of 16"):
        MonaiSegmenter(w, device="cpu")
