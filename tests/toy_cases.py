"""A tiny cached training case (the ``.npz`` layout of :func:`segmentation.training.prepare_case`):
two air boxes (right lung 1, left lung 2) in soft tissue, 2.5 mm voxels by default. Shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def toy_cached_case(path: Path, noise_hu: float = 0.0, spacing: float = 2.5) -> Path:
    """A tiny cached training case (two box lungs) at ``spacing`` mm (default: the default model grid)."""
    img = np.full((24, 40, 48), 40, np.int16)
    lungs = np.zeros(img.shape, np.uint8)
    img[4:20, 8:32, 4:22], lungs[4:20, 8:32, 4:22] = -850, 1
    img[4:20, 8:32, 26:44], lungs[4:20, 8:32, 26:44] = -850, 2
    if noise_hu:
        img += np.random.default_rng(0).normal(0, noise_hu, img.shape).astype(np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, image=img, lungs=lungs, spacing=np.full(3, spacing, np.float32))
    return path


def toy_training_dirs(tmp_path: Path, name: str = "toy", noise_hu: float = 0.0) -> tuple[Path, Path]:
    """``(cache, data)`` for ``ctscore train --data DATA --backgrounds NAME --cache CACHE``: the cache holds the toy
    case ``NAME.npz`` and ``DATA/NAME`` is an empty folder (the cached case is used)."""
    cache, data = tmp_path / "cache", tmp_path / "data"
    toy_cached_case(cache / f"{name}.npz", noise_hu=noise_hu)
    (data / name).mkdir(parents=True)
    return cache, data
