"""The MONAI segmenter, its plug-in bundles, the shipped weights and ``ctscore train`` (issue 4).

Fast: tiny networks and tiny volumes; the shipped-weights test runs the real model once on the
sample phantom (sample_dicoms/) when it is there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

from segmentation.base import Segmenter  # noqa: E402
from tests.toy_cases import toy_cached_case, toy_training_dirs  # noqa: E402

WEIGHTS = Path(__file__).resolve().parents[1] / "segmentation" / "weights"


def tiny_weights(folder: Path) -> Path:
    """A random-weight model folder with the layout of segmentation/weights (tiny UNet)."""
    import yaml
    from safetensors.torch import save_file

    from segmentation.network import build_network
    from segmentation.training import write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    arch = {"name": "unet", "channels": [4, 8], "strides": [2], "num_res_units": 0}
    torch.manual_seed(0)
    net = build_network(arch)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "model.yaml").write_text(yaml.safe_dump({
        "arch": arch, "model_spacing_mm": [4.0, 4.0, 4.0], "hu_window": [-1024.0, 400.0],
        "roi_size": [16, 32, 32], "inference_roi_size": [16, 32, 32], "lesion_threshold": 0.5, "sw_overlap": 0.25}))
    write_manifest(folder)
    return folder


def phantom() -> tuple[np.ndarray, tuple[float, float, float]]:
    hu = np.full((20, 40, 48), 40.0, np.float32)
    hu[4:16, 8:32, 6:20] = -850.0
    hu[4:16, 8:32, 28:42] = -850.0
    return hu, (3.0, 3.0, 3.0)


def test_network_has_lung_and_lesion_heads():
    from segmentation.network import OUT_CHANNELS, build_network

    net = build_network({"channels": [4, 8], "strides": [2], "num_res_units": 0})
    y = net(torch.zeros(1, 1, 16, 16, 16))
    assert y.shape == (1, OUT_CHANNELS, 16, 16, 16)


def test_segmenter_protocol_output_shapes_and_determinism(tmp_path):
    from segmentation.monai_segmenter import MonaiSegmenter

    seg = MonaiSegmenter(tiny_weights(tmp_path / "w"), device="cpu")
    assert isinstance(seg, Segmenter)
    assert seg.model_id.startswith("monai-")
    hu, sp = phantom()
    a = seg.segment(hu, sp)
    b = seg.segment(hu, sp)
    assert a.lungs.shape == hu.shape and a.lungs.dtype == np.uint8
    assert a.lesions.shape == hu.shape and a.lesions.dtype == bool
    assert set(np.unique(a.lungs)) <= {0, 1, 2}
    assert not (a.lesions & (a.lungs == 0)).any()
    np.testing.assert_array_equal(a.lungs, b.lungs)
    np.testing.assert_array_equal(a.lesions, b.lesions)


def test_probabilities_agree_with_the_masks(tmp_path):
    """``probabilities`` gives the lung (1 - background) and lesion probabilities on the input grid, in [0, 1];
    inside the lung mask and outside the airway a voxel is in the lesion mask exactly where its lesion
    probability is above the threshold, and the lung mask lies where the lung probability is at least a third
    (argmax of three classes; the clean-up may also fill enclosed holes, which this phantom's masks do not have)."""
    from segmentation.monai_segmenter import MonaiSegmenter

    seg = MonaiSegmenter(tiny_weights(tmp_path / "w"), device="cpu",
                         cfg={"segmentation": {"monai": {"lesion_threshold": 0.5}}})
    hu, sp = phantom()
    p = seg.probabilities(hu, sp)
    assert set(p) == {"lung", "lesion"}
    for v in p.values():
        assert v.shape == hu.shape and v.dtype == np.float16
        assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
    out = seg.segment(hu, sp)
    inside = out.lungs > 0
    assert (p["lung"][inside] >= 1 / 3 - 1e-3).all()
    # lesions = (probability > threshold) & lungs & ~airway: compare away from float16 rounding at the threshold
    clear = inside & ~out.airway & (np.abs(p["lesion"].astype(np.float32) - 0.5) > 1e-2)
    np.testing.assert_array_equal(out.lesions[clear], p["lesion"][clear] > 0.5)


def test_flip_tta_makes_the_output_mirror_equivariant(tmp_path):
    """With the mirror-image pass (default), segmenting the mirrored scan gives exactly the mirrored result
    with right and left swapped; one pass alone does not (random weights are not symmetric)."""
    from segmentation.monai_segmenter import MonaiSegmenter

    rng = np.random.default_rng(1)
    hu = rng.normal(-300, 400, (16, 32, 40)).astype(np.float32)
    sp = (4.0, 4.0, 4.0)
    folder = tiny_weights(tmp_path / "w")
    tta = MonaiSegmenter(folder, device="cpu", cfg={"segmentation": {"monai": {"scale_tta": 0.0}}})
    assert tta.flip_tta
    a = tta.predict_logits(hu, sp)
    b = tta.predict_logits(np.ascontiguousarray(hu[..., ::-1]), sp)
    torch.testing.assert_close(torch.flip(b, [-1])[[0, 2, 1, 3]], a, atol=1e-5, rtol=1e-4)
    one = MonaiSegmenter(folder, device="cpu", cfg={"segmentation": {"monai": {"flip_tta": False, "scale_tta": 0.0}}})
    assert not one.flip_tta
    a1 = one.predict_logits(hu, sp)
    b1 = one.predict_logits(np.ascontiguousarray(hu[..., ::-1]), sp)
    assert not torch.allclose(torch.flip(b1, [-1])[[0, 2, 1, 3]], a1, atol=1e-3)
    # the two-pass output is the mean of the single pass and its mirrored, side-swapped twin
    torch.testing.assert_close(a, (a1 + torch.flip(b1, [-1])[[0, 2, 1, 3]]) / 2, atol=1e-5, rtol=1e-4)


def test_flip_tta_is_a_config_key(tmp_path):
    """``segmentation.monai.flip_tta`` is in the documented defaults and reaches the segmenter."""
    from pipeline.config import load_config
    from segmentation.factory import build_segmenter

    cfg = load_config([], ["segmentation.method=" + str(tiny_weights(tmp_path / "w")),
                             "segmentation.monai.flip_tta=false", "segmentation.device=cpu"])
    assert cfg["segmentation"]["monai"]["flip_tta"] is False
    assert build_segmenter(cfg).flip_tta is False
    assert load_config([], [])["segmentation"]["monai"]["flip_tta"] is True


def test_scale_tta_is_the_mean_over_three_zooms(tmp_path):
    """With ``scale_tta`` z the logits are the mean of the views zoomed by 1 - z, 1, 1 + z (each brought
    back to the model grid of zoom 1; the view at zoom 1 is itself the mean with the mirror image); 0 means
    one zoom."""
    import torch.nn.functional as F  # noqa: N812

    from segmentation.monai_segmenter import MonaiSegmenter

    rng = np.random.default_rng(2)
    hu = rng.normal(-300, 400, (16, 32, 40)).astype(np.float32)
    sp = (4.0, 4.0, 4.0)
    folder = tiny_weights(tmp_path / "w")
    multi = MonaiSegmenter(folder, device="cpu", cfg={"segmentation": {"monai": {"scale_tta": 0.2}}})
    assert multi.scales == (0.8, 1.0, 1.2)
    one = MonaiSegmenter(folder, device="cpu", cfg={"segmentation": {"monai": {"scale_tta": 0.0}}})
    assert one.scales == (1.0,)
    base = one.predict_logits(hu, sp)
    single = MonaiSegmenter(folder, device="cpu", cfg={"segmentation": {"monai": {"scale_tta": 0.0, "flip_tta": False}}})
    views = [F.interpolate(single.predict_logits(hu, tuple(s * f for s in sp))[None], size=tuple(base.shape[1:]),
                           mode="trilinear", align_corners=False)[0] for f in (0.8, 1.2)]
    assert views[0].shape == base.shape and not torch.allclose(views[0], base, atol=1e-3)
    torch.testing.assert_close(multi.predict_logits(hu, sp), (base + views[0] + views[1]) / 3, atol=1e-5, rtol=1e-4)


def test_scale_tta_is_a_config_key(tmp_path):
    """``segmentation.monai.scale_tta`` is documented (default 0.15), reaches the segmenter, and a value
    outside [0, 0.5) is refused naming the key."""
    from pipeline.config import load_config
    from pipeline.errors import ConfigError
    from segmentation.factory import build_segmenter

    assert load_config([], [])["segmentation"]["monai"]["scale_tta"] == 0.15
    cfg = load_config([], ["segmentation.method=" + str(tiny_weights(tmp_path / "w")),
                           "segmentation.monai.scale_tta=0", "segmentation.device=cpu"])
    assert build_segmenter(cfg).scales == (1.0,)
    with pytest.raises(ConfigError, match="scale_tta"):
        load_config([], ["segmentation.monai.scale_tta=0.7"])


def test_argmax3_equals_torch_argmax_including_ties():
    from segmentation.monai_segmenter import argmax3

    torch.manual_seed(0)
    x = torch.randn(3, 12, 10, 8)
    x[1, :3] = x[0, :3]          # background = right: background wins (first index)
    x[2, 3:6] = x[1, 3:6]        # right = left: right wins
    x[:, 6:8] = 0.5              # all equal: background
    got = argmax3(x[0], x[1], x[2])
    assert got.dtype == torch.uint8
    assert torch.equal(got.long(), torch.argmax(x, 0))


def test_tampered_weights_are_refused(tmp_path):
    from segmentation.monai_segmenter import MonaiSegmenter, WeightsError

    folder = tiny_weights(tmp_path / "w")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        MonaiSegmenter(folder, device="cpu")


def test_missing_manifest_is_refused(tmp_path):
    from segmentation.monai_segmenter import MonaiSegmenter, WeightsError

    folder = tiny_weights(tmp_path / "w")
    (folder / "manifest.json").unlink()
    with pytest.raises(WeightsError, match="manifest"):
        MonaiSegmenter(folder, device="cpu")


def test_upsample_slabs_matches_full_interpolation():
    from segmentation.monai_segmenter import resize_to, upsample_slabs

    torch.manual_seed(1)
    small = torch.randn(4, 7, 9, 11)
    full = resize_to(small[None], (20, 25, 30))[0]
    out = torch.zeros_like(full)

    def put(z0, z1, v):
        out[:, z0:z1] = v

    upsample_slabs(small, (20, 25, 30), put, slab=3)
    assert torch.allclose(out, full, atol=1e-5)


@pytest.mark.parametrize("lobes", [False, True])
def test_tiny_bundle_plugs_in(tmp_path, lobes):
    from segmentation.bundle import BundleSegmenter, write_tiny_bundle

    folder = write_tiny_bundle(tmp_path / "bundle", with_lobes=lobes)
    seg = BundleSegmenter(folder, device="cpu")
    assert isinstance(seg, Segmenter)
    assert seg.model_id.startswith("bundle-")
    hu, sp = phantom()
    res = seg.segment(hu, sp)
    assert res.lungs.shape == hu.shape and set(np.unique(res.lungs)) <= {0, 1, 2}
    if lobes:
        assert res.lobes is not None and set(np.unique(res.lobes)) <= {0, 1, 2, 3, 4, 5}
        assert ((res.lobes > 0) == (res.lungs > 0)).all()
        assert (res.lungs[(res.lobes >= 1) & (res.lobes <= 3)] == 1).all()
    else:
        assert res.lobes is None
    assert not (res.lesions & (res.lungs == 0)).any()


def test_bundle_lesion_labels_count_as_lung(tmp_path, monkeypatch):
    from segmentation.bundle import BundleSegmenter, write_tiny_bundle

    seg = BundleSegmenter(write_tiny_bundle(tmp_path / "b"), device="cpu")
    lab = np.zeros((4, 6, 6), np.uint8)
    lab[:, 1:5, 0:2] = 1
    lab[:, 1:5, 4:6] = 2
    lab[:, 2:4, 2] = 3  # lesion between: must become lung of the nearest side
    monkeypatch.setattr(seg, "label_map", lambda hu, sp: lab)
    res = seg.segment(np.zeros(lab.shape, np.float32), (1.0, 1.0, 1.0))
    assert res.lesions[:, 2:4, 2].all()
    assert (res.lungs[:, 2:4, 2] == 1).all()


def test_bundle_without_mapping_is_refused(tmp_path):
    from segmentation.bundle import LABELS_FILE, BundleError, BundleSegmenter, write_tiny_bundle

    folder = write_tiny_bundle(tmp_path / "b")
    (folder / LABELS_FILE).unlink()
    with pytest.raises(BundleError, match=LABELS_FILE):
        BundleSegmenter(folder, device="cpu")


def test_factory_builds_monai_and_bundle(tmp_path):
    from segmentation.bundle import BundleSegmenter, write_tiny_bundle
    from segmentation.factory import build_segmenter

    folder = write_tiny_bundle(tmp_path / "b")
    seg = build_segmenter({"segmentation": {"method": str(folder), "device": "cpu"}})
    assert isinstance(seg, BundleSegmenter)
    # a folder of weights written by `ctscore train` is our own network with those weights
    from segmentation.monai_segmenter import MonaiSegmenter

    w = tiny_weights(tmp_path / "w")
    seg = build_segmenter({"segmentation": {"method": str(w), "device": "cpu"}})
    assert isinstance(seg, MonaiSegmenter) and seg.folder == w


def test_run_model_option(tmp_path):
    """``ctscore run --model PATH`` plugs a model folder in; with --segmenter as well it is refused."""
    from pipeline.cli import main

    sample = Path(__file__).resolve().parents[1] / "sample_dicoms"
    if not (sample / "ground_truth.json").exists():
        pytest.skip("sample_dicoms/ not present")
    from segmentation.bundle import write_tiny_bundle

    bundle = write_tiny_bundle(tmp_path / "b")
    assert main(["run", str(sample), "-o", str(tmp_path / "o1"), "--model", str(bundle), "--segmenter", "monai",
                 "-q"]) == 1
    assert main(["run", str(sample), "-o", str(tmp_path / "o2"), "--model", str(tmp_path / "nope"), "-q"]) == 1
    rc = main(["run", str(sample), "-o", str(tmp_path / "o3"), "--model", str(bundle), "-q", "-d", "cpu",
               "--set", "outputs.write_masks=false"])
    run = json.loads((tmp_path / "o3" / "run.json").read_text())
    assert run["segmenter"]["model_id"].startswith("bundle-"), run["segmenter"]
    assert rc in (0, 8)  # a random tiny bundle may well find no lung: that is a scored failure, not a crash


def test_shipped_weights_sha256_and_safe_load():
    from safetensors.torch import load_file

    from segmentation.network import build_network
    from segmentation.training import sha256_file

    man = json.loads((WEIGHTS / "manifest.json").read_text())["files"]
    for name in ("model.safetensors", "model.yaml"):
        assert sha256_file(WEIGHTS / name) == man[name]["sha256"], name
    assert (WEIGHTS / "model.safetensors").stat().st_size <= 25 * 1024 * 1024
    assert (WEIGHTS / "MODEL_CARD.md").exists()
    import yaml

    meta = yaml.safe_load((WEIGHTS / "model.yaml").read_text())
    net = build_network(meta["arch"])
    net.load_state_dict(load_file(str(WEIGHTS / "model.safetensors")))


def test_shipped_model_on_the_phantom():
    """The real model on the embedded phantom: two lungs of plausible size, on the right sides."""
    import SimpleITK as sitk

    sample = Path(__file__).resolve().parents[1] / "sample_dicoms"
    if not (sample / "ground_truth.json").exists():
        pytest.skip("sample_dicoms/ not present")
    from pipeline.resample import resample_to_spacing
    from segmentation.monai_segmenter import MonaiSegmenter
    from segmentation.training import load_series_lps

    img = resample_to_spacing(load_series_lps(sample), [2.0, 2.0, 2.0])
    hu = sitk.GetArrayFromImage(img).astype(np.float32)
    sp = tuple(float(v) for v in reversed(img.GetSpacing()))
    res = MonaiSegmenter(device="cpu").segment(hu, sp)
    voxel_ml = float(np.prod(sp)) / 1000
    right, left = (res.lungs == 1).sum() * voxel_ml, (res.lungs == 2).sum() * voxel_ml
    assert right > 300 and left > 300, (right, left)
    # LPS: x index grows towards the patient's left, so the right lung lies at smaller x
    xr = np.nonzero(res.lungs == 1)[2].mean()
    xl = np.nonzero(res.lungs == 2)[2].mean()
    assert xr < xl


def test_default_run_uses_the_shipped_network(tmp_path):
    """The README demo: a default ``ctscore run`` uses the shipped network and gets close to the phantom's scores."""
    from pipeline.cli import main
    from pipeline.config import load_config

    assert load_config()["segmentation"]["method"] == "monai"
    sample = Path(__file__).resolve().parents[1] / "sample_dicoms"
    if not (sample / "ground_truth.json").exists():
        pytest.skip("sample_dicoms/ not present")
    truth = json.loads((sample / "ground_truth.json").read_text())["scores"]
    out = tmp_path / "out"
    assert main(["run", str(sample), "-o", str(out), "-q", "-d", "cpu"]) == 0
    run = json.loads((out / "run.json").read_text())
    files = json.loads((WEIGHTS / "manifest.json").read_text())["files"]
    both = f"{files['model.safetensors']['sha256']}:{files['model.yaml']['sha256']}"  # weights and model.yaml
    model_id = "monai-" + __import__("hashlib").sha256(both.encode()).hexdigest()[:16]
    assert run["segmenter"] == {"name": "monai", "model_id": model_id}, run["segmenter"]
    (result,) = out.glob("*/result.json")
    scores = json.loads(result.read_text())["scores"]
    # a drawn phantom, not anatomy the network was trained on: close to the truth, not equal to it (a few mL
    # of false positive in a clean zone scores 1 there)
    assert abs(scores["six_zone_total"] - truth["six_zone_total"]) <= 1, scores["six_zone_total"]
    assert abs(scores["zhang900_total"] - truth["zhang900_total"]) <= 10, scores["zhang900_total"]
    assert abs(scores["percent_opacity"] - truth["percent_opacity"]) <= 1.5, scores["percent_opacity"]


def test_monai_segmenter_supplies_the_airway(tmp_path):
    """The network has no airway head: the classical trachea is added (landmarks need the carina)."""
    from segmentation.monai_segmenter import MonaiSegmenter

    hu, sp = phantom()
    hu[10:, 18:22, 22:26] = -1000.0  # a trachea-like tube between the lungs, up to the top
    res = MonaiSegmenter(tiny_weights(tmp_path / "w"), device="cpu").segment(hu, sp)
    assert res.airway is not None and res.airway.shape == hu.shape
    assert res.airway[10:, 19:21, 23:25].mean() > 0.5  # the core of the tube is found
    assert not np.any(res.airway & (res.lungs > 0))


def gas_under_the_dome(seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A left lung (label 2) whose mask took in, through a 3 mm diaphragm, a gastric bubble beneath it; a right
    lung (1) with an aerated island cut off by a band of consolidation at its base. 1.5 mm voxels, z upwards."""
    rng = np.random.default_rng(seed)
    hu = np.full((70, 60, 90), 40.0, np.float32)
    lungs = np.zeros(hu.shape, np.uint8)
    hu[20:66, 10:50, 8:40] = -850.0
    lungs[20:66, 10:50, 8:40] = 1
    hu[20:66, 10:50, 50:82] = -850.0
    lungs[20:66, 10:50, 50:82] = 2
    hu[12:16, 15:45, 55:77] = -1000.0  # the bubble ...
    lungs[12:20, 15:45, 55:77] = 2     # ... and the diaphragm (z 16-19) in the left lung mask
    hu[26:30, 10:50, 8:40] = -20.0     # consolidation across the right base; the aerated island below stays lung
    hu += rng.normal(0, 15, hu.shape).astype(np.float32)
    return hu, lungs, (1.5, 1.5, 1.5)


def test_bowel_gas_is_taken_out_of_the_lung_mask():
    """The bubble and the wall voxels nearer to it than to the lung leave the left lung (the rule keeps dense
    tissue that borders aerated lung, as consolidation does); the aerated lung, the consolidation and the aerated
    island under it stay; the input is not changed; a high gas pocket (a bulla) is not touched."""
    from segmentation.monai_segmenter import remove_bowel_gas

    hu, lungs, sp = gas_under_the_dome()
    before = lungs.copy()
    out, removed = remove_bowel_gas(lungs, hu, sp)
    np.testing.assert_array_equal(lungs, before)
    assert not out[12:18, 15:45, 55:77].any()  # the bubble and the half of the diaphragm nearer to it gone
    np.testing.assert_array_equal(out[20:66], before[20:66])  # every lung voxel above kept, both sides
    np.testing.assert_array_equal(out == 1, before == 1)  # the island cut off by consolidation is lung density
    assert set(removed) == {2} and removed[2] == pytest.approx(6 * 30 * 22 * 1.5 ** 3 / 1000, rel=0.01)
    # gas high in the lung, walled off (a bulla): not under the dome, kept
    hu2, lungs2, _ = gas_under_the_dome()
    hu2[12:20] = 40.0
    lungs2[12:20] = 0
    hu2[56:64, 18:34, 58:74] = 40.0     # a wall on every side ...
    hu2[57:63, 19:33, 59:73] = -1000.0  # ... around 4 mL of gas: a piece of its own, large and homogeneous enough
    out2, removed2 = remove_bowel_gas(lungs2, hu2, sp)
    assert removed2 == {} and np.array_equal(out2, lungs2)
    # counted as low it still stays, as lung lies below and beside it; with those tests off too, it goes
    assert remove_bowel_gas(lungs2, hu2, sp, low_quantile=100.0)[1] == {}
    assert set(remove_bowel_gas(lungs2, hu2, sp, low_quantile=100.0, under_share=0.0, beside_share=1.0)[1]) == {2}


def test_remove_bowel_gas_is_a_config_key(tmp_path):
    """``segmentation.monai.remove_bowel_gas`` is on by default and reaches the segmenter."""
    from pipeline.config import load_config
    from segmentation.factory import build_segmenter

    w = str(tiny_weights(tmp_path / "w"))
    assert load_config([], [])["segmentation"]["monai"]["remove_bowel_gas"] is True
    assert build_segmenter(load_config([], ["segmentation.method=" + w, "segmentation.device=cpu"])).remove_bowel_gas
    cfg = load_config([], ["segmentation.method=" + w, "segmentation.monai.remove_bowel_gas=false",
                           "segmentation.device=cpu"])
    assert build_segmenter(cfg).remove_bowel_gas is False


def test_bowel_gas_flag_reaches_the_scan_flags(tmp_path, monkeypatch):
    """The MONAI segmenter flags ``BOWEL_GAS_REMOVED:<side>`` when its bowel-gas step takes something out (and not
    with the step off); a segmenter's flags go into the scan's QC flags (result.json, scans.csv)."""
    import dataclasses

    from pipeline.config import load_config
    from pipeline.run import analyse_volume
    from segmentation import monai_segmenter as ms
    from segmentation.classical import ClassicalSegmenter
    from segmentation.training import load_series_lps
    from tests.conftest import SAMPLE

    seg = ms.MonaiSegmenter(tiny_weights(tmp_path / "w"), device="cpu")
    hu, sp = phantom()
    monkeypatch.setattr(ms, "remove_bowel_gas", lambda lungs, hu, spacing, **kw: (lungs, {2: 4.0}))
    assert seg.segment(hu, sp).flags == ["BOWEL_GAS_REMOVED:left"]
    seg.remove_bowel_gas = False
    assert seg.segment(hu, sp).flags == []

    if not (SAMPLE / "ground_truth.json").is_file():
        pytest.skip("sample_dicoms/ missing (run scripts/make_sample_dicoms.py)")

    class Flagging(ClassicalSegmenter):
        def segment(self, hu, spacing):
            return dataclasses.replace(super().segment(hu, spacing), flags=["BOWEL_GAS_REMOVED:left"])

    cfg = load_config(extra={"segmentation": {"method": "classical"}})
    res = analyse_volume(load_series_lps(SAMPLE), cfg, Flagging(cfg))
    assert res["flags"][0] == "BOWEL_GAS_REMOVED:left"


def test_focus_loss_terms():
    """Consolidated lung given to background costs in the lung head; dense voxels beside the lung
    called lesion cost in both heads; with both weights 0 nothing is added."""
    from segmentation.training import focus_loss

    x = torch.zeros(1, 1, 8, 16, 16)
    yl = torch.zeros(1, 1, 8, 16, 16)
    yl[..., 2:6, 4:12, 2:7] = 1
    ys = torch.zeros_like(yl)
    ys[..., 3:5, 6:9, 3:6] = 1
    x[..., 2:6, 4:12, 7:9] = 0.8  # dense tissue right beside the lung
    good = torch.full((1, 4, 8, 16, 16), -5.0)
    good[:, 0] = 5.0
    good[:, 0][yl[:, 0] == 1] = -5.0
    good[:, 1][yl[:, 0] == 1] = 5.0
    good[:, 3][ys[:, 0] == 1] = 5.0
    assert float(focus_loss(good, x, yl, ys, 0.0, 0.0, 0.5, 2)) == 0.0
    base = float(focus_loss(good, x, yl, ys, 1.0, 1.0, 0.5, 2))
    bad_lung = good.clone()
    bad_lung[:, 0][ys[:, 0] == 1] = 10.0  # the lesion is called background by the lung head
    assert float(focus_loss(bad_lung, x, yl, ys, 1.0, 0.0, 0.5, 2)) > base + 1.0
    bad_fp = good.clone()
    bad_fp[:, 3][..., 2:6, 4:12, 7:9] = 5.0  # the dense neighbour is called lesion
    assert float(focus_loss(bad_fp, x, yl, ys, 0.0, 1.0, 0.5, 2)) > base + 1.0
    # the lung head's own hard-negative weight: the dense neighbour called lung costs only through it, the
    # neighbour called lesion only through the shared weight
    bad_lung_fp = good.clone()
    bad_lung_fp[:, 0][..., 2:6, 4:12, 7:9] = -5.0
    bad_lung_fp[:, 1][..., 2:6, 4:12, 7:9] = 5.0  # the dense neighbour is called right lung
    light = float(focus_loss(bad_lung_fp, x, yl, ys, 0.0, 1.0, 0.5, 2, w_hard_lung=1.0))
    assert float(focus_loss(bad_lung_fp, x, yl, ys, 0.0, 1.0, 0.5, 2, w_hard_lung=3.0)) == pytest.approx(3 * light, abs=0.05)
    assert float(focus_loss(bad_lung_fp, x, yl, ys, 0.0, 1.0, 0.5, 2, w_hard_lung=0.0)) < 0.01
    assert float(focus_loss(bad_fp, x, yl, ys, 0.0, 1.0, 0.5, 2, w_hard_lung=3.0)) == pytest.approx(
        float(focus_loss(bad_fp, x, yl, ys, 0.0, 1.0, 0.5, 2, w_hard_lung=1.0)), abs=1e-3)
    assert float(focus_loss(bad_lung_fp, x, yl, ys, 0.0, 0.0, 0.5, 2, w_hard_lung=2.0)) > 1.0


def test_focus_loss_lesion_samples():
    """``lesion_samples`` limits the lesion-head terms to those samples of the batch: a dense neighbour called
    lesion in a left-out sample costs nothing; the lung-head terms still count every sample."""
    from segmentation.training import focus_loss

    x = torch.zeros(2, 1, 8, 16, 16)
    yl = torch.zeros(2, 1, 8, 16, 16)
    yl[..., 2:6, 4:12, 2:7] = 1
    ys = torch.zeros_like(yl)
    ys[..., 3:5, 6:9, 3:6] = 1
    x[..., 2:6, 4:12, 7:9] = 0.8  # dense tissue beside the lung
    good = torch.full((2, 4, 8, 16, 16), -5.0)
    good[:, 0] = 5.0
    good[:, 0][yl[:, 0] == 1] = -5.0
    good[:, 1][yl[:, 0] == 1] = 5.0
    good[:, 3][ys[:, 0] == 1] = 5.0
    bad = good.clone()
    bad[1, 3, 2:6, 4:12, 7:9] = 5.0  # sample 1 calls the dense neighbour lesion
    both, first, second = (torch.tensor(v) for v in ([True, True], [True, False], [False, True]))
    base = float(focus_loss(good, x, yl, ys, 0.0, 1.0, 0.5, 2, lesion_samples=first))
    assert float(focus_loss(bad, x, yl, ys, 0.0, 1.0, 0.5, 2, lesion_samples=first)) == pytest.approx(base)
    assert float(focus_loss(bad, x, yl, ys, 0.0, 1.0, 0.5, 2, lesion_samples=second)) > base + 1.0
    assert float(focus_loss(bad, x, yl, ys, 0.0, 1.0, 0.5, 2, lesion_samples=both)) == pytest.approx(
        float(focus_loss(bad, x, yl, ys, 0.0, 1.0, 0.5, 2)))
    bad_lung = good.clone()
    bad_lung[1, 0][ys[1, 0] == 1] = 10.0  # sample 1's lung head gives the lesion away: counts whatever the samples
    assert float(focus_loss(bad_lung, x, yl, ys, 1.0, 0.0, 0.5, 2, lesion_samples=first)) > base + 1.0


def test_train_lesion_loss_skips_deformed_crops(tmp_path):
    """``deform_lesion_loss: false`` with every crop bent: the lesion head has nothing to learn from (its loss is
    0), the lung head still learns; by default the lesion loss counts the bent crops."""
    from segmentation.training import train

    f = toy_cached_case(tmp_path / "toy.npz", noise_hu=10.0)
    cfg = {"roi_size": [16, 32, 32], "samples_per_volume": 2, "batch_size": 2, "num_workers": 0, "iterations": 1,
           "deform_prob": 1.0, "deform_range": 0.1, "synth": {"p_empty": 0.0}}
    arch = {"channels": [4, 8], "strides": [2], "num_res_units": 0}
    off = train([f], tmp_path / "off", {**cfg, "deform_lesion_loss": False}, arch=arch, device="cpu")["history"][0]
    on = train([f], tmp_path / "on", cfg, arch=arch, device="cpu")["history"][0]
    assert off["lesion"] == 0.0 and off["lung"] > 0.0
    assert on["lesion"] > 0.0


def test_lesion_instance_weights_count_each_lesion_once():
    """1 / lesion size on each lesion's voxels (26-connected), 0 elsewhere: summed, one per lesion."""
    from segmentation.training import lesion_instance_weights

    les = np.zeros((10, 12, 14), bool)
    les[1:5, 1:5, 1:5] = True  # 64 voxels
    les[7, 9, 11] = True       # a one-voxel nodule
    les[8, 10, 12] = True      # ... touching it diagonally: the same lesion
    w, n = lesion_instance_weights(les)
    assert n == 2 and w.dtype == np.float32
    assert w[2, 2, 2] == pytest.approx(1 / 64) and w[7, 9, 11] == pytest.approx(0.5) and w[0, 0, 0] == 0
    assert float(w.sum()) == pytest.approx(2.0)
    w0, n0 = lesion_instance_weights(np.zeros((3, 3, 3), bool))
    assert n0 == 0 and not w0.any()


def test_train_lesion_instance_term(tmp_path):
    """``lesion_instance_weight`` adds the lesion-wise term (logged as ``lesion_instances``); off by default."""
    from segmentation.training import train

    f = toy_cached_case(tmp_path / "toy.npz", noise_hu=10.0)
    cfg = {"roi_size": [16, 32, 32], "samples_per_volume": 2, "batch_size": 2, "num_workers": 0, "iterations": 1,
           "synth": {"p_empty": 0.0, "size_probs": {"small": 1.0}}}
    arch = {"channels": [4, 8], "strides": [2], "num_res_units": 0}
    on = train([f], tmp_path / "on", {**cfg, "lesion_instance_weight": 1.0}, arch=arch, device="cpu")["history"][0]
    off = train([f], tmp_path / "off", cfg, arch=arch, device="cpu")["history"][0]
    assert on["lesion_instances"] > 0.0 and off["lesion_instances"] == 0.0
    assert on["loss"] == pytest.approx(on["lung"] + on["lesion"] + on["focus"] + on["lesion_instances"], rel=1e-4)
    bent = train([f], tmp_path / "bent", {**cfg, "lesion_instance_weight": 1.0, "deform_prob": 1.0,
                                          "deform_lesion_loss": False}, arch=arch, device="cpu")["history"][0]
    assert bent["lesion_instances"] == 0.0  # every crop bent, none for the lesion head


def test_focus_loss_dense_lesion_term():
    """The dense-lesion term weighs only lesion voxels denser than the threshold, in both heads: dense
    consolidation called background (lung head) or not lesion (lesion head) costs; faint ground glass the
    term does not see."""
    from segmentation.training import focus_loss

    x = torch.zeros(1, 1, 8, 16, 16)
    yl = torch.zeros(1, 1, 8, 16, 16)
    yl[..., 2:6, 4:12, 2:10] = 1
    ys = torch.zeros_like(yl)
    ys[..., 3:5, 6:9, 3:9] = 1
    x[..., 3:5, 6:9, 3:6] = 0.8  # dense half of the lesion (consolidation); the other half stays faint
    good = torch.full((1, 4, 8, 16, 16), -5.0)
    good[:, 0] = 5.0
    good[:, 0][yl[:, 0] == 1] = -5.0
    good[:, 1][yl[:, 0] == 1] = 5.0
    good[:, 3][ys[:, 0] == 1] = 5.0
    base = float(focus_loss(good, x, yl, ys, 0.0, 0.0, 0.5, 2, w_dense=1.0))
    assert base < 0.01
    dense_lost = good.clone()
    dense_lost[:, 0][..., 3:5, 6:9, 3:6] = 10.0  # the consolidation called background
    assert float(focus_loss(dense_lost, x, yl, ys, 0.0, 0.0, 0.5, 2, w_dense=1.0)) > base + 5.0
    assert float(focus_loss(dense_lost, x, yl, ys, 0.0, 0.0, 0.5, 2, w_dense=0.0)) == 0.0
    missed = good.clone()
    missed[:, 3][..., 3:5, 6:9, 3:6] = -5.0  # the consolidation not called lesion
    assert float(focus_loss(missed, x, yl, ys, 0.0, 0.0, 0.5, 2, w_dense=1.0)) > base + 4.0
    # dense_heads="lung": the lung head still pays for dense consolidation called background, the lesion
    # head no longer pays through this term
    assert float(focus_loss(dense_lost, x, yl, ys, 0.0, 0.0, 0.5, 2, 1.0, "lung")) > base + 4.0
    assert float(focus_loss(missed, x, yl, ys, 0.0, 0.0, 0.5, 2, 1.0, "lung")) == pytest.approx(
        float(focus_loss(good, x, yl, ys, 0.0, 0.0, 0.5, 2, 1.0, "lung")))
    faint_lost = good.clone()
    faint_lost[:, 0][..., 3:5, 6:9, 6:9] = 10.0  # the faint half called background: not this term's business
    assert float(focus_loss(faint_lost, x, yl, ys, 0.0, 0.0, 0.5, 2, w_dense=1.0)) == pytest.approx(base)


def test_smooth_deformation_bends_image_and_labels_together(tmp_path):
    """``deform_prob`` adds MONAI's RandSmoothDeformd: image and labels move together (labels stay
    0/1/2, nearest), the anatomy is bent, and with ``deform_prob: 0`` the chain is unchanged."""
    from segmentation.training import DEFAULT_TRAIN, _monai_transforms

    f = toy_cached_case(tmp_path / "toy.npz")
    base = {**DEFAULT_TRAIN, "roi_size": [24, 40, 48], "synth": {"p_empty": 1.0}}

    def sample(cfg, seed):
        load, rand = _monai_transforms(cfg)
        names = [type(t).__name__ for t in rand.transforms]
        rand.set_random_state(seed)
        return names, rand(load({"path": str(f)}))

    names0, plain = sample({**base, "deform_prob": 0.0}, 3)
    assert not any("SmoothDeform" in n for n in names0)
    names1, bent = sample({**base, "deform_prob": 1.0, "deform_range": 0.15}, 3)
    assert "FlaggedSmoothDeformd" in names1  # MONAI's RandSmoothDeformd, recording that it bent the crop
    assert float(bent["deformed"]) == 1.0 and float(plain["deformed"]) == 0.0
    lab = bent["lungs"].numpy()[0]
    assert set(np.unique(lab)) <= {0.0, 1.0, 2.0}
    moved = [float(np.mean(sample({**base, "deform_prob": 1.0, "deform_range": 0.15}, s)[1]["lungs"].numpy()[0]
                           != sample({**base, "deform_prob": 0.0}, s)[1]["lungs"].numpy()[0])) for s in (3, 4)]
    assert min(moved) > 0.01  # the lung contours are bent, not just copied
    # the image follows its labels: deformed lung voxels stay air-dense, deformed tissue stays dense
    im = bent["image"].numpy()[0]
    assert im[lab > 0].mean() < 0.2 and (lab[im > 0.6] == 0).mean() > 0.95


def test_deformation_before_synthesis_bends_the_background_not_the_lesions(tmp_path, monkeypatch):
    """``deform_before_synth``: the smooth deformation comes before the lesion insertion, so the synthesizer
    sees the bent lungs and its lesions are not bent afterwards; by default it comes after (as trained up to
    stage 13), and the synthesizer sees the crop as it was."""
    from types import SimpleNamespace

    import segmentation.synth
    from segmentation.training import DEFAULT_TRAIN, _monai_transforms

    f = toy_cached_case(tmp_path / "toy.npz")
    seen: list[np.ndarray] = []

    def fake_synthesize(hu, lungs, spacing, seed, cfg):
        assert isinstance(hu, np.ndarray) and isinstance(lungs, np.ndarray)
        seen.append(lungs.copy())
        return SimpleNamespace(hu=hu, lesions=(lungs > 0) & (np.arange(lungs.shape[0]) < 12)[:, None, None])

    monkeypatch.setattr(segmentation.synth, "synthesize", fake_synthesize)
    base = {**DEFAULT_TRAIN, "roi_size": [24, 40, 48], "deform_prob": 1.0, "deform_range": 0.15}
    with np.load(f) as z:
        toy_lungs = z["lungs"]
    for before in (False, True):
        load, rand = _monai_transforms({**base, "deform_before_synth": before})
        names = [type(t).__name__ for t in rand.transforms]
        assert (names.index("FlaggedSmoothDeformd") < names.index("Synthesize")) is before
        rand.set_random_state(5)
        out = rand(load({"path": str(f)}))
        passed = seen[-1]
        assert set(np.unique(passed)) <= {0, 1, 2}
        bent = float(np.mean(passed != toy_lungs))
        assert (bent > 0.01) if before else (bent == 0.0)
        # the lesions follow the lungs through whatever comes after the insertion
        les, lungs = out["lesions"].numpy()[0], out["lungs"].numpy()[0]
        assert les.sum() > 0 and (lungs[les > 0] > 0).all()


def test_train_config_file_and_unknown_keys(tmp_path):
    """``--train-config`` YAML reaches the training loop (incl. synthesis options); typos are refused."""
    from pipeline.cli import main
    from pipeline.errors import EXIT_USAGE

    cache, _ = toy_training_dirs(tmp_path)
    cfg = tmp_path / "t.yaml"
    cfg.write_text("roi_size: [16, 32, 32]\nsamples_per_volume: 2\nlesion_lung_weight: 1.0\n"
                   "hard_negative_weight: 1.0\nsynth: {p_empty: 0.0, p_pleural_consolidation: 1.0}\n")
    common = ["train", "--data", str(tmp_path / "data"), "--backgrounds", "toy", "--cache", str(cache),
              "--iterations", "2", "--batch-size", "1", "--num-workers", "0", "--device", "cpu"]
    assert main(common + ["--out", str(tmp_path / "out"), "--train-config", str(cfg)]) == 0
    log = json.loads((tmp_path / "out" / "train_log.json").read_text())
    assert log["cfg"]["hard_negative_weight"] == 1.0 and log["cfg"]["synth"]["p_pleural_consolidation"] == 1.0
    assert log["cfg"]["roi_size"] == [16, 32, 32]
    cfg.write_text("hard_negativ_weight: 1.0\nsynth: {p_emty: 0.1}\n")
    assert main(common + ["--out", str(tmp_path / "out2"), "--train-config", str(cfg)]) == EXIT_USAGE
    assert not (tmp_path / "out2").exists()
    # a two-stage recipe: the second stage starts from the first one's weights, the last one is the result
    cfg.write_text("roi_size: [16, 32, 32]\nsamples_per_volume: 2\nstages:\n  - {name: a}\n"
                   "  - {name: b, lr: 1.0e-4, synth: {p_empty: 1.0}}\n")
    assert main(common + ["--out", str(tmp_path / "out3"), "--train-config", str(cfg)]) == 0
    out3 = tmp_path / "out3"
    log_b = json.loads((out3 / "train_log_b.json").read_text())
    assert log_b["cfg"]["lr"] == 1.0e-4 and log_b["cfg"]["synth"] == {"p_empty": 1.0}
    assert (out3 / "model.safetensors").read_bytes() == (out3 / "stages" / "b" / "model.safetensors").read_bytes()
    assert (out3 / "train_log_a.json").exists() and (out3 / "manifest.json").exists()
    cfg.write_text("stages:\n  - {name: a, lr_typo: 1}\n")
    assert main(common + ["--out", str(tmp_path / "out4"), "--train-config", str(cfg)]) == EXIT_USAGE


def test_shipped_recipe_is_valid():
    """segmentation/weights/recipe.yaml (the one command behind the shipped weights) parses cleanly."""
    from pipeline.commands.train import read_train_config

    common, stages, problem = read_train_config(WEIGHTS / "recipe.yaml")
    assert problem is None and len(stages) >= 2 and common["seed"] == 20240
    for f in sorted((WEIGHTS.parents[1] / "configs" / "training").glob("*.yaml")):  # the experiments
        if not f.name.startswith("backgrounds"):  # background lists: tests/test_training_backgrounds.py
            assert read_train_config(f)[2] is None, f


def test_cpu_recipe_fits_in_90_minutes():
    """configs/training/cpu_recipe.yaml (training from scratch without a GPU) trains on the
    listed backgrounds (normal001, the evaluation scan, not among them) and its stages' time limits add up to
    under 90 minutes, the issue's aim for the 2-core machine (caching the backgrounds adds about half a minute)."""
    from pipeline.commands.train import read_train_config

    path = WEIGHTS.parents[1] / "configs" / "training" / "cpu_recipe.yaml"
    common, stages, problem = read_train_config(path)
    assert problem is None and len(stages) == 2
    assert sum(float(st["max_minutes"]) for st in stages) < 90
    assert all(int(st["num_workers"]) <= 1 and int(st["batch_size"]) <= 2 for st in stages)  # a 2-core machine
    listed = yaml.safe_load((path.parents[2] / common["backgrounds_file"]).read_text())["backgrounds"]
    assert listed and not any("normal001" in str(e) for e in listed)


def test_train_command_runs_two_iterations(tmp_path):
    """``ctscore train`` end to end on a tiny cached case (CPU, 2 iterations)."""
    from pipeline.cli import main

    cache, data = toy_training_dirs(tmp_path, noise_hu=10.0)
    import segmentation.training as tr

    old = dict(tr.DEFAULT_TRAIN)
    tr.DEFAULT_TRAIN.update({"roi_size": [16, 32, 32], "samples_per_volume": 2})
    try:
        rc = main(["train", "--data", str(data), "--backgrounds", "toy", "--cache", str(cache), "--out",
                   str(tmp_path / "out"), "--iterations", "2", "--batch-size", "1", "--num-workers", "0",
                   "--device", "cpu"])
    finally:
        tr.DEFAULT_TRAIN.clear()
        tr.DEFAULT_TRAIN.update(old)
    assert rc == 0
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "model.safetensors" in man["files"]
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temporary left
