"""Plug-in segmenters: any MONAI bundle folder plus a small label-mapping YAML.

Folder layout (the MONAI bundle convention, plus ``ctscore_labels.yaml``)::

    my_bundle/
      configs/inference.json   (or .yaml)  must define ``network_def``
      models/model.safetensors (or models/model.pt: a state dict, read with weights_only=True)
      models/manifest.json     optional: {"files": {"model.safetensors": {"sha256": ...}}}, checked at load
      ctscore_labels.yaml

``ctscore_labels.yaml``::

    spacing_mm: [1.5, 1.5, 1.5]     # z, y, x grid the network expects (default: the input grid)
    hu_window: [-1024, 400]         # clipped, then scaled to [0, 1]; or
    intensity: {a_min: -1024, a_max: 400, b_min: 0.0, b_max: 1.0}
    roi_size: [96, 96, 96]          # sliding-window size
    output: softmax                 # softmax: argmax over channels | sigmoid: each channel > 0.5
    labels:                         # output label (softmax) or channel (sigmoid) -> meaning
      right_lung: [1]
      left_lung: [2]
      lesion: [3]                   # optional; a lesion label also counts as lung
      lobes: {right_upper: 1, right_middle: 2, right_lower: 3, left_upper: 4, left_lower: 5}

With ``lobes`` the lungs are the union of the lobes (right = right_*), and :class:`Segmentation`
carries ``lobes`` (coded as :data:`segmentation.base.LOBES`), which makes lobar scores available.
Lesion voxels of a softmax model (mutually exclusive with lung labels) are given the side of the
nearest lung voxel.

A bundle's config can instantiate any Python object (that is how MONAI bundles work): use bundles
you trust. Weights are read without pickle code execution (safetensors or weights_only); the manifest checks the
weights only (MONAI bundles carry no hash of their config). The model id in the outputs' provenance hashes the
weights, the config and the label mapping together.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from pipeline.errors import ModelError
from segmentation.base import LEFT_LUNG, LOBES, RIGHT_LUNG, Segmentation
from segmentation.classical import segment_airway

log = logging.getLogger(__name__)

LABELS_FILE = "ctscore_labels.yaml"
LOBE_CODES = {v: k for k, v in LOBES.items()}  # name -> code


class BundleError(ModelError):
    """The bundle folder or its label mapping is not usable."""


def _find(folder: Path, candidates: list[str]) -> Path | None:
    for c in candidates:
        if (folder / c).exists():
            return folder / c
    return None


def load_state(path: Path) -> dict[str, Any]:
    """A state dict from ``.safetensors`` or a ``.pt`` read with ``torch.load(weights_only=True)``."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return state


class BundleSegmenter:
    """A MONAI bundle as a :class:`segmentation.base.Segmenter` (lungs, lesions, lobes if provided)."""

    name = "bundle"

    def __init__(self, folder: str | Path, device: str = "auto", cfg: dict[str, Any] | None = None) -> None:
        import torch
        import yaml
        from monai.bundle import ConfigParser
        from monai.inferers import SlidingWindowInferer

        from segmentation.monai_segmenter import check_manifest, resolve_device
        from segmentation.training import sha256_file

        self.folder = Path(folder)
        labels_path = self.folder / LABELS_FILE
        if not labels_path.exists():
            raise BundleError(f"no {LABELS_FILE} (the label mapping ctscore needs; a weights folder from "
                              f"'ctscore train' has model.safetensors, model.yaml and manifest.json)", self.folder)
        try:
            self.mapping: dict[str, Any] = yaml.safe_load(labels_path.read_text()) or {}
            if not isinstance(self.mapping, dict):
                raise yaml.YAMLError("not a mapping")
        except (OSError, yaml.YAMLError) as exc:
            raise BundleError(f"unreadable label mapping ({exc})", labels_path) from exc
        labels = self.mapping.get("labels") or {}
        if not isinstance(labels, dict) or not (("right_lung" in labels and "left_lung" in labels)
                                                or "lobes" in labels):
            raise BundleError("labels must give right_lung and left_lung, or lobes", labels_path)
        config = _find(self.folder, ["configs/inference.json", "configs/inference.yaml", "configs/inference.yml"])
        if config is None:
            raise BundleError("no configs/inference.json|yaml", self.folder)
        weights = _find(self.folder, ["models/model.safetensors", "models/model.pt"])
        if weights is None:
            raise BundleError("no models/model.safetensors or models/model.pt", self.folder)
        if (weights.parent / "manifest.json").exists():
            self.sha256 = check_manifest(weights.parent, [weights.name])[weights.name]
        else:
            self.sha256 = sha256_file(weights)
            log.warning("bundle %s has no models/manifest.json: weights not verified (sha256 %s)", self.folder,
                        self.sha256[:12])
        # the config and the label mapping decide what the weights mean: both are part of the model's identity
        self.config_sha256, self.labels_sha256 = sha256_file(config), sha256_file(labels_path)
        self.device = resolve_device(device)
        try:
            parser = ConfigParser()
            parser.read_config(str(config))
            self.net = parser.get_parsed_content("network_def")
        except Exception as exc:  # noqa: BLE001 - MONAI's parser raises many kinds; all mean a bad config
            raise BundleError(f"network_def cannot be built ({type(exc).__name__}: {exc})", config) from exc
        try:
            self.net.load_state_dict(load_state(weights))
        except (RuntimeError, ValueError, OSError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"the weights do not load into network_def ({msg})", weights) from exc
        self.net.eval().to(self.device)
        if self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        roi = self.mapping.get("roi_size", [96, 96, 96])
        self.inferer = SlidingWindowInferer(roi_size=tuple(int(v) for v in roi), sw_batch_size=1, overlap=0.25,
                                            mode="gaussian")
        self.name = str(self.mapping.get("name", "bundle"))
        log.info("bundle %s loaded (%s)", self.folder, weights.name)

    @property
    def model_id(self) -> str:
        """``bundle-`` plus 16 hex digits of the sha256 over the weights, the network config and the label mapping
        (each file's own sha256): a changed config or mapping is another model in the provenance, and resume
        re-scores with it."""
        import hashlib

        h = hashlib.sha256(self.sha256.encode())
        for extra in (self.config_sha256, self.labels_sha256):
            h.update(b"\0" + extra.encode())
        return "bundle-" + h.hexdigest()[:16]

    def _normalize(self, x: Any) -> Any:
        m = self.mapping
        if "intensity" in m:
            i = m["intensity"]
            a0, a1 = float(i["a_min"]), float(i["a_max"])
            b0, b1 = float(i.get("b_min", 0.0)), float(i.get("b_max", 1.0))
            return (x.clamp(a0, a1) - a0) / (a1 - a0) * (b1 - b0) + b0
        lo, hi = (float(v) for v in m.get("hu_window", [-1024.0, 400.0]))
        return (x.clamp(lo, hi) - lo) / (hi - lo)

    def label_map(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
        """The bundle's output on the input grid: a label map (softmax) or [C, z, y, x] bool (sigmoid)."""
        import torch

        from segmentation.monai_segmenter import resize_to, upsample_slabs

        msp = self.mapping.get("spacing_mm")
        size = hu.shape if msp is None else tuple(
            int(v) for v in np.maximum(1, np.round(np.asarray(hu.shape) * np.asarray(spacing) / np.asarray(msp))))
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(hu, np.float32))[None, None]
            x = self._normalize(resize_to(x, tuple(size))).to(self.device)
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    y = self.inferer(x, self.net)
            else:
                y = self.inferer(x, self.net)
            y = y[0].float().cpu()
        sigmoid = str(self.mapping.get("output", "softmax")).lower() == "sigmoid"
        out = np.zeros(((y.shape[0],) if sigmoid else ()) + tuple(hu.shape), bool if sigmoid else np.uint8)

        def put(z0: int, z1: int, v: Any) -> None:
            if sigmoid:
                out[:, z0:z1] = (v > 0).numpy()
            else:
                out[z0:z1] = torch.argmax(v, 0).numpy().astype(np.uint8)

        upsample_slabs(y, hu.shape, put)
        return out

    def segment(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> Segmentation:
        """Segment one HU volume ``[z, y, x]`` (LPS) with voxel size ``spacing`` (z, y, x) in mm."""
        out = self.label_map(np.asarray(hu, np.float32), spacing)
        labels = self.mapping["labels"]

        def sel(values: Any) -> np.ndarray:
            vals = [int(v) for v in (values if isinstance(values, list | tuple) else [values])]
            if out.ndim == 4:
                return np.any(out[vals], axis=0)
            return np.isin(out, vals)

        lungs = np.zeros(hu.shape, np.uint8)
        lobes = None
        if "lobes" in labels:
            lobes = np.zeros(hu.shape, np.uint8)
            for name, value in labels["lobes"].items():
                if name not in LOBE_CODES:
                    raise BundleError(f"unknown lobe name {name!r}; expected one of {sorted(LOBE_CODES)}",
                                      self.folder / LABELS_FILE)
                m = sel(value)
                lobes[m] = LOBE_CODES[name]
                lungs[m] = RIGHT_LUNG if name.startswith("right") else LEFT_LUNG
        if "right_lung" in labels:
            lungs[sel(labels["right_lung"])] = RIGHT_LUNG
        if "left_lung" in labels:
            lungs[sel(labels["left_lung"])] = LEFT_LUNG
        lesions = sel(labels["lesion"]) if "lesion" in labels else np.zeros(hu.shape, bool)
        orphan = lesions & (lungs == 0)
        if orphan.any() and (lungs > 0).any():
            # lesion labels of a softmax model are lung too: give them the side (and the lobe) of the nearest
            # lung voxel, so that lobar scores count them
            _, idx = ndi.distance_transform_edt(lungs == 0, sampling=spacing, return_indices=True)
            near = tuple(i[orphan] for i in idx)
            lungs[orphan] = lungs[near]
            if lobes is not None:
                lobes[orphan] = lobes[near]
        # bundles label no airway: the classical region growing gives the landmark detector its trachea, and
        # the airway is never lung (as for the other segmenters)
        airway = segment_airway(hu, spacing)
        lungs[airway] = 0
        lesions &= (lungs > 0)
        if lobes is not None:
            lobes[lungs == 0] = 0
        return Segmentation(lungs=lungs, lesions=lesions, airway=airway, lobes=lobes)


def write_tiny_bundle(folder: str | Path, with_lobes: bool = False, seed: int = 0) -> Path:
    """Write a tiny (random-weight) bundle: for tests and as a template of the expected layout."""
    import torch
    import yaml
    from monai.networks.nets import BasicUNet
    from safetensors.torch import save_file

    from segmentation.training import sha256_file

    folder = Path(folder)
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    n_out = 6 if with_lobes else 4
    net_def = {"_target_": "monai.networks.nets.BasicUNet", "spatial_dims": 3, "in_channels": 1,
               "out_channels": n_out, "features": [4, 4, 4, 4, 4, 4]}
    (folder / "configs" / "inference.json").write_text(json.dumps({"network_def": net_def}, indent=1))
    torch.manual_seed(seed)
    net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=n_out, features=(4, 4, 4, 4, 4, 4))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "models" / "model.safetensors"))
    sha = sha256_file(folder / "models" / "model.safetensors")
    (folder / "models" / "manifest.json").write_text(json.dumps({"files": {"model.safetensors": {"sha256": sha}}}))
    labels: dict[str, Any] = ({"lobes": {"right_upper": 1, "right_middle": 2, "right_lower": 3, "left_upper": 4,
                                         "left_lower": 5}} if with_lobes else {"right_lung": [1], "left_lung": [2],
                                                                               "lesion": [3]})
    mapping = {"name": "tiny-bundle", "spacing_mm": [4.0, 4.0, 4.0], "hu_window": [-1024, 400],
               "roi_size": [32, 32, 32], "output": "softmax", "labels": labels}
    (folder / LABELS_FILE).write_text(yaml.safe_dump(mapping, sort_keys=False))
    return folder
