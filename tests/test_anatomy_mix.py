"""Anatomy mixing (segmentation/anatomy_mix.py, issue 4): registration-made training anatomies.

Toy chests (an elliptic body with two elliptic lungs, 4 mm voxels) of different shapes stand in for the
cached backgrounds; the real run is stage 17 of the model card.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("SimpleITK")

from segmentation.anatomy_mix import lung_dice, mix_name, prepare_mixes, register, warp  # noqa: E402


def toy_chest(shape=(30, 40, 50), lung_r=(10.0, 11.0, 8.0), gap=3.0, body_r=(14.0, 17.0, 23.0),
              lesions: bool = False) -> dict[str, np.ndarray]:
    """A case in the cache's layout: soft-tissue body, right lung 1 at low x (patient right), left lung 2."""
    z, y, x = np.indices(shape, dtype=float)
    c = (np.asarray(shape, float) - 1) / 2
    body = ((z - c[0]) / body_r[0]) ** 2 + ((y - c[1]) / body_r[1]) ** 2 + ((x - c[2]) / body_r[2]) ** 2 <= 1
    img = np.where(body, 40, -1024).astype(np.int16)
    lungs = np.zeros(shape, np.uint8)
    for label, sign in ((1, -1), (2, 1)):
        cx = c[2] + sign * (gap + lung_r[2])
        inside = ((z - c[0]) / lung_r[0]) ** 2 + ((y - c[1]) / lung_r[1]) ** 2 + ((x - cx) / lung_r[2]) ** 2 <= 1
        lungs[inside], img[inside] = label, -850
    case = {"image": img, "lungs": lungs, "spacing": np.array([4.0, 4.0, 4.0], np.float32)}
    if lesions:
        case["lesions"] = np.zeros(shape, np.uint8)
    return case


def test_warp_brings_the_moving_lungs_onto_the_fixed_ones():
    """alpha 1: the moving case's lungs land on the fixed case's (Dice per side well above the unregistered
    overlap); alpha 0.5: a shape in between; labels and image warped together, on the fixed grid."""
    fixed = toy_chest()
    moving = toy_chest(shape=(34, 44, 56), lung_r=(12.0, 8.0, 10.0), gap=5.0, body_r=(16.0, 14.0, 26.0))
    tx = register(fixed, moving)
    out = {a: warp(moving, fixed, tx, a) for a in (1e-6, 0.5, 1.0)}
    for m in out.values():
        assert m["image"].shape == fixed["image"].shape and m["image"].dtype == np.int16
        assert set(np.unique(m["lungs"])) == {0, 1, 2}
        np.testing.assert_array_equal(m["spacing"], fixed["spacing"])
        # image and labels agree: the warped lung is air, outside it tissue or air
        assert np.median(m["image"][m["lungs"] > 0]) < -700
    d = {a: lung_dice(out[a]["lungs"], fixed["lungs"]) for a in out}
    assert min(d[1.0]) > 0.85, d
    assert min(d[1.0]) > max(d[1e-6]) + 0.1, d
    assert max(d[1e-6]) < min(d[0.5]) and max(d[0.5]) < min(d[1.0]), d  # half-way is in between
    assert lung_dice(fixed["lungs"], fixed["lungs"]) == (1.0, 1.0)
    assert np.isnan(lung_dice(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))[0])
    # the right lung stays the right lung (low x)
    xr, xl = (np.nonzero(out[0.5]["lungs"] == k)[2].mean() for k in (1, 2))
    assert xr < xl


def test_prepare_mixes_files_names_and_reuse(tmp_path):
    """Every ordered pair, one file per alpha, named mix_<A>__<B>_a<alpha*100>; existing files kept; cases with
    their own lesion masks and earlier mixes are not mixed; a re-cached background renews its mixes; bad alphas and a single background are refused."""
    cache = tmp_path / "cache"
    cache.mkdir()
    shapes = {"a": {}, "b": {"lung_r": (12.0, 9.0, 9.0)}, "c": {"gap": 5.0, "lung_r": (9.0, 12.0, 7.0)}}
    files = []
    for name, kw in shapes.items():
        np.savez_compressed(cache / f"{name}.npz", **toy_chest(**kw))
        files.append(cache / f"{name}.npz")
    np.savez_compressed(cache / "drawn.npz", **toy_chest(lesions=True))
    out = prepare_mixes(files + [cache / "drawn.npz"], alphas=(0.5, 1.0))
    expected = [cache / f"{mix_name(a, b, al)}.npz" for a in "abc" for b in "abc" if a != b for al in (0.5, 1.0)]
    assert out == expected
    assert all(p.exists() for p in out) and not list(cache.glob("*.partial.npz"))
    assert mix_name("a", "b", 0.5) == "mix_a__b_a050"
    with np.load(out[0]) as z:
        assert set(z.files) == {"image", "lungs", "spacing"}
    stamp = {p: p.stat().st_mtime_ns for p in out}
    assert prepare_mixes(files + out, alphas=(0.5, 1.0)) == out  # mixes in the list are not mixed again
    assert {p: p.stat().st_mtime_ns for p in out} == stamp
    # a background cached again makes its mixes (as source and as target) again, the others are kept
    later = max(stamp.values()) + 10**9
    os.utime(files[0], ns=(later, later))
    prepare_mixes(files, alphas=(0.5, 1.0))
    again = {p for p in out if p.stat().st_mtime_ns != stamp[p]}
    assert again == {p for p in out if "mix_a__" in p.name or "__a_" in p.name}
    with pytest.raises(ValueError, match="alphas"):
        prepare_mixes(files, alphas=(0.0,))
    with pytest.raises(ValueError, match="at least two"):
        prepare_mixes(files[:1])


def test_train_command_anatomy_mix(tmp_path, capsys):
    """``anatomy_mix`` in a training config adds the mixes of the backgrounds to the training cases; a malformed
    value is a usage error before any training."""
    from pipeline.cli import main
    from pipeline.errors import EXIT_USAGE

    cache = tmp_path / "cache"
    cache.mkdir()
    for name, kw in (("a", {}), ("b", {"lung_r": (12.0, 9.0, 9.0)})):
        np.savez_compressed(cache / f"{name}.npz", **toy_chest(**kw))
        (tmp_path / "data" / name).mkdir(parents=True)
    cfg = tmp_path / "mix.yaml"
    cfg.write_text("roi_size: [16, 32, 32]\nsamples_per_volume: 1\nmodel_spacing_mm: [4.0, 4.0, 4.0]\n"  # the toy cache's
                   "anatomy_mix: {alphas: [1.0]}\n")
    common = ["train", "--data", str(tmp_path / "data"), "--backgrounds", "a", "b", "--cache", str(cache),
              "--iterations", "1", "--batch-size", "1", "--num-workers", "0", "--device", "cpu"]
    assert main(common + ["--out", str(tmp_path / "out"), "--train-config", str(cfg)]) == 0
    log = json.loads((tmp_path / "out" / "train_log.json").read_text())
    assert log["cases"] == ["a", "b", "mix_a__b_a100", "mix_b__a_a100"]
    assert log["cfg"]["anatomy_mix"] == {"alphas": [1.0]}
    for bad in ("anatomy_mix: {alpha: [1.0]}\n", "anatomy_mix: {alphas: [1.5]}\n", "anatomy_mix: 3\n"):
        cfg.write_text("model_spacing_mm: [4.0, 4.0, 4.0]\n" + bad)
        assert main(common + ["--out", str(tmp_path / "bad"), "--train-config", str(cfg)]) == EXIT_USAGE
        assert "anatomy_mix" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
