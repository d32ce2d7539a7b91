"""The transforms and the crop dataset of :func:`segmentation.training.train`, defined at module level.

A ``DataLoader`` with worker processes sends its dataset (and so every transform in it) to each worker. Under the
'spawn' start method (the default on macOS and Windows) that is done by pickling, and pickle finds a class by its
module and name: classes defined inside a function (as these were, in ``_monai_transforms`` and ``_train``) cannot
be pickled, and ``ctscore train`` stopped at its first batch with "Can't pickle local object". Here each carries its
state as attributes. Built by :func:`segmentation.training._monai_transforms` and
:func:`segmentation.training._training_dataset`; MONAI is imported with this module (lazily, by those functions).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import MapTransform, Randomizable, RandSmoothDeformd, Transform


class LoadCase(Transform):
    """npz path -> dict of channel-first float arrays (deterministic; cached by CacheDataset)."""

    def __call__(self, item: Mapping[Hashable, Any]) -> dict[str, Any]:
        with np.load(item["path"]) as z:
            d = {"image": z["image"].astype(np.float32)[None], "lungs": z["lungs"].astype(np.float32)[None],
                 "spacing": z["spacing"].astype(float)}
            has = "lesions" in z.files
            d["lesions"] = (z["lesions"].astype(np.float32) if has else np.zeros_like(z["image"],
                                                                                      np.float32))[None]
            d["real_lesions"] = has
        return d


class Synthesize(Randomizable, Transform):
    """Insert synthetic lesions (skipped for cases with user-drawn lesion masks)."""

    def __init__(self, synth_cfg: dict[str, Any] | None = None) -> None:
        self.synth_cfg = synth_cfg

    def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
        # looked up at each call: a test's stand-in is seen, and a spawned worker imports it when it needs it
        from segmentation.synth import synthesize

        if d.get("real_lesions"):
            return d
        seed = int(self.R.randint(2**31 - 1))
        # numpy in (after a deformation the arrays are MONAI MetaTensors)
        image, lungs = (np.asarray(d[k].cpu() if hasattr(d[k], "cpu") else d[k]) for k in ("image", "lungs"))
        res = synthesize(image[0].astype(np.float32), lungs[0].astype(np.uint8), tuple(d["spacing"]), seed,
                         self.synth_cfg)
        d = dict(d)
        d["image"] = res.hu[None]
        d["lesions"] = res.lesions.astype(np.float32)[None]
        return d


class RandFlipLR(Randomizable, MapTransform):
    """Mirror x (patient left-right) and swap the right/left lung labels."""

    def __init__(self, prob: float = 0.5) -> None:
        MapTransform.__init__(self, ["image", "lungs", "lesions"])
        self.prob = prob

    def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
        if self.R.random() >= self.prob:
            return d
        d = dict(d)
        for k in self.keys:
            d[k] = np.ascontiguousarray(np.asarray(d[k])[..., ::-1])
        lungs = d["lungs"]
        d["lungs"] = np.where(lungs == 1, 2, np.where(lungs == 2, 1, lungs)).astype(np.float32)
        return d


class Normalize(Transform):
    """HU window -> [0, 1]."""

    def __init__(self, window: Sequence[float]) -> None:
        self.lo, self.hi = float(window[0]), float(window[1])

    def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
        d = dict(d)
        img = np.asarray(d["image"], np.float32)
        d["image"] = (np.clip(img, self.lo, self.hi) - self.lo) / (self.hi - self.lo)
        return d


class Pack(Transform):
    """Keep tensors only (drop metadata that the default collate cannot batch); ``deformed`` 1.0 when the
    smooth deformation bent this crop; with ``instances``, ``lesion_w`` (1 / the size of the lesion a voxel
    belongs to, 0 elsewhere) and ``n_lesions`` for the lesion-wise term."""

    def __init__(self, instances: bool = False) -> None:
        self.instances = instances

    def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
        out = {k: torch.as_tensor(np.asarray(d[k]), dtype=torch.float32) for k in ("image", "lungs", "lesions")}
        out["deformed"] = torch.tensor(float(d.get("deformed", 0.0)))
        if self.instances:
            from segmentation.training import lesion_instance_weights

            w, n = lesion_instance_weights(out["lesions"].numpy()[0] > 0.5)
            out["lesion_w"] = torch.as_tensor(w[None])
            out["n_lesions"] = torch.tensor(float(n))
        return out


class FlaggedSmoothDeformd(RandSmoothDeformd):
    """MONAI's RandSmoothDeformd that records in the sample whether it bent it (``deformed``)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[str, Any]:
        d = dict(super().__call__(data))
        d["deformed"] = float(self._do_transform)
        return d


class Sampled(Dataset):
    """Random crops of the cached cases: item ``i`` is ``transform`` applied to case ``index[i]`` of ``cached`` (a
    ``CacheDataset`` of :class:`LoadCase`); ``transform`` is visible to MONAI's per-worker seeding.

    ``cached`` is set after ``Dataset.__init__`` on purpose: MONAI's worker seeding (``monai.data.utils.set_rnd``)
    walks the attributes in the order they were set, and ``transform`` must be seeded first (as it always was), so
    that a seed gives the same crops as before."""

    def __init__(self, cached: Any, index: Sequence[int], transform: Any) -> None:
        super().__init__(list(index), transform=transform)
        self.cached = cached

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        return self.transform(self.cached[self.data[i]])
