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
    intensity: {a_min: -1024, a_max: 400, b_min: 0.0, b_max: 1.0, clip: true}   # MONAI's ScaleIntensityRanged
                                    # (clip: true by default here; false scales the HU outside [a_min, a_max] too)
    roi_size: [96, 96, 96]          # sliding-window size
    output: softmax                 # softmax: argmax over channels (logits or probabilities alike) |
                                    # sigmoid: logits, each channel set where > 0 (its sigmoid > 0.5) |
                                    # sigmoid_probabilities: a network ending in its own sigmoid, each channel > 0.5
    orientation: LPS                # LPS (default): the network gets ctscore's arrays [z, y, x], x to the
                                    # patient's left, y posterior | RAS: MONAI's LoadImage + Orientationd(RAS)
                                    # convention, arrays [x, y, z], x to the patient's right, y anterior (most
                                    # MONAI model-zoo bundles); spacing_mm and roi_size are then in that order
    labels:                         # output label (softmax) or channel (sigmoid*) -> meaning
      right_lung: [1]
      left_lung: [2]
      lesion: [3]                   # required: the lesion label(s) or channel(s); lesion also counts as lung
      lobes: {right_upper: 1, right_middle: 2, right_lower: 3, left_upper: 4, left_lower: 5}

The mapping is checked when the bundle is loaded (unknown keys, a key written twice, labels that are not whole
numbers, label 0 of a softmax output, a label given to two meanings, a side with neither its lung label nor any of
its lobes, no ``lesion`` label): a :class:`BundleError` naming the file. ``lesion`` is required: every score
ctscore gives (lesion volumes, six-zone, zhang900, MosMed) is made from the lesion mask, and a model that cannot
see lesions would score every patient as healthy. A side whose lobes are mapped only in part and that has no lung
label is warned about: the unmapped lobes are not lung at all. ctscore gives the network one channel of 3-D CT: a
``network_def`` with another ``in_channels`` or ``spatial_dims`` is refused at load. When ctscore loads the bundle
(:func:`segmentation.factory.build_segmenter`: ``ctscore run --model``) it runs the network once on a window of
``roi_size`` (:meth:`BundleSegmenter.check_output`), so that labels beyond the network's output channels (a
:class:`BundleError` naming the mapping) and a network that fails on that window (one naming the config) stop the
run before any scan, not every scan after its inference; a :class:`BundleSegmenter` made directly finds them at
its first scan.

With ``lobes`` the lungs are the union of the lobes (right = right_*), and :class:`Segmentation`
carries ``lobes`` (coded as :data:`segmentation.base.LOBES`), which makes lobar scores available.
Lesion voxels of a softmax model (mutually exclusive with lung labels) are given the side of the
nearest lung voxel, in pieces that touch the lung or lie within :data:`ORPHAN_LESION_MM` of it; pieces farther
away are no lung, and are taken out (flag ``LESION_OFF_LUNG_REMOVED:<mL>``: a stray lesion label below the lung's
base once enlarged the lung past the scan's end and emptied the six-zone and lobar totals).

A sigmoid output read as ``sigmoid`` (logits) that lies wholly within 0-1 (on the window run at load, or over a
whole scan) is refused: a network ending in its own sigmoid gives probabilities, whose ``> 0`` would set every
voxel of every channel (a probability network read as logits once scored 26 L of lung, all of it lesion);
``sigmoid_probabilities`` outputs outside 0-1 are refused alike. A voxel set in a right and a left lung channel (or
lobe) of a sigmoid output goes to the side whose output is larger (the left lung, read last, took them all). Output channels the mapping does not name are
warned about once (their voxels are background). The bundle's own preprocessing is not run (only
``network_def`` is): where the config's ``Spacing(d)``, ``ScaleIntensityRange(d)`` or ``Orientation(d)`` give
literal values that the mapping does not repeat (``spacing_mm``, ``hu_window``/``intensity``, ``orientation``),
a warning at load names both files and the values to copy.

Only ``network_def`` of the config is used, and it is checked before MONAI's ConfigParser builds it: literal
values, ``@`` references to literal values elsewhere in the config, and ``_target_`` classes that are
``torch.nn.Module`` subclasses in ``monai.networks`` or ``torch.nn`` (MONAI's short names, e.g. ``UNet``,
included). Expressions (``$...``, which MONAI would ``eval``), macros (``%...``), ``_requires_``, ``_mode_`` and
any other ``_target_`` (which would import and call any module: ``os.system``) are refused, so a bundle cannot run
code of its own. Weights are read without pickle code execution (safetensors or weights_only); the manifest checks
the weights only (MONAI bundles carry no hash of their config). The model id in the outputs' provenance hashes the
weights, the config and the label mapping together.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from pipeline.errors import ModelError
from segmentation.base import LEFT_LUNG, LOBES, RIGHT_LUNG, Segmentation, sides_swapped
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


def _read_config(path: Path) -> Any:
    """A bundle's config (JSON or YAML) as MONAI's ``ConfigParser.load_config_file`` reads it (a key given twice
    is refused), but decoded as UTF-8: MONAI opens it in the locale's encoding (cp1252 on Windows), which garbles
    or refuses a config with any non-ASCII character (an author's name, a description)."""
    import yaml
    from monai.utils.misc import CheckKeyDuplicatesYamlLoader, check_key_duplicates

    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        return json.loads(text, object_pairs_hook=check_key_duplicates)
    return yaml.load(text, CheckKeyDuplicatesYamlLoader)  # noqa: S506 - MONAI's safe loader


_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def load_state(path: Path, data: bytes | None = None) -> dict[str, Any]:
    """A state dict from ``.safetensors`` or a ``.pt`` read with ``torch.load(weights_only=True)`` (from ``data``,
    the file's bytes already read and checked, when given); a checkpoint holding it under ``model`` or
    ``state_dict`` gives that. A file that is not one (truncated, corrupt, a pickle of other objects such as a whole
    model saved with ``torch.save(model)``) is a :class:`BundleError` naming it."""
    import io
    import pickle

    import torch

    try:
        data = path.read_bytes() if data is None else data
        if path.suffix == ".safetensors":
            from safetensors.torch import load

            state = load(data)
        else:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - SafetensorError, pickle.UnpicklingError, zip errors, ...
        text = _ANSI_RE.sub("", str(exc)).strip()
        if isinstance(exc, pickle.UnpicklingError) and "weights only load failed" in text.lower():
            # torch's own text goes on to say how to load it anyway (running the pickle): not our advice
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise BundleError(f"unreadable weights: the file holds pickled Python objects{what}, not only tensors (a "
                              f"whole model saved with torch.save(model)?); they are not loaded, a pickle can run "
                              f"code. Save the weights alone: torch.save(model.state_dict(), ...) or safetensors",
                              path) from exc
        msg = text.splitlines()[0] if text else type(exc).__name__
        raise BundleError(f"unreadable weights, not a state dict saved with safetensors or torch.save "
                          f"({type(exc).__name__}: {msg[:300]})", path) from exc
    for key in ("model", "state_dict"):  # a training checkpoint: {"model": ..., "optimizer": ..., "epoch": ...}
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = (f"a dict whose keys {sorted(map(str, state))[:8]} hold other things than tensors"
                if isinstance(state, dict) else type(state).__name__)
        raise BundleError(f"the weights file holds {what}, not a state dict of tensors (nor one under 'model' or "
                          f"'state_dict')", path)
    return state


def load_into(net: Any, state: dict[str, Any], path: Path) -> None:
    """Load ``state`` into ``net`` (strict), saying which tensors are missing, unexpected or of another shape (torch's
    lines after its first, which names only the class); a state dict saved from DataParallel /
    DistributedDataParallel (every key ``module.``-prefixed) loads too."""
    if state and all(k.startswith("module.") for k in state) and not any(
            k.startswith("module.") for k in net.state_dict()):
        state = {k[len("module."):]: v for k, v in state.items()}
    try:
        net.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, OSError) as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
            lines = lines[1:]
        msg = "; ".join(ln if len(ln) <= 240 else ln[:240] + "..." for ln in lines[:4]) or type(exc).__name__
        raise BundleError(f"the weights do not fit network_def (another network, or another out_channels or "
                          f"features in the config?): {msg}", path) from exc


SAFE_TARGET_MODULES = ("monai.networks.", "torch.nn.")
_TARGET_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _bad_def(msg: str, path: Path) -> BundleError:
    return BundleError(f"network_def cannot be built: {msg}", path)


#: Keyword arguments of network classes that download weights when the network is built.
_DOWNLOADS = re.compile(r"pretrain|url|download", re.IGNORECASE)


def _safe_target(name: Any, where: str, path: Path) -> str:
    """The full name of a ``_target_`` that is a torch.nn.Module class in :data:`SAFE_TARGET_MODULES`."""
    import importlib
    import inspect

    import torch
    from monai.bundle.config_item import ComponentLocator

    if not isinstance(name, str) or not _TARGET_RE.fullmatch(name):
        raise _bad_def(f"{where}::_target_ must be a class name, got {name!r}", path)
    module = ComponentLocator().get_component_module_name(name)  # MONAI's short names (UNet, SegResNet, ...)
    if isinstance(module, list):
        module = module[0]
    full = f"{module}.{name}" if module else name
    if not full.startswith(SAFE_TARGET_MODULES):
        raise _bad_def(f"{where}::_target_ {name!r} is outside {' and '.join(m[:-1] for m in SAFE_TARGET_MODULES)}:"
                          f" refused (a bundle config may only build networks, not import or call other code)", path)
    mod, _, attr = full.rpartition(".")
    try:
        obj = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise _bad_def(f"{where}::_target_ {name!r} not found ({exc})", path) from exc
    if not (inspect.isclass(obj) and issubclass(obj, torch.nn.Module)):
        raise _bad_def(f"{where}::_target_ {name!r} is not a torch.nn.Module class", path)
    return full


def safe_network_def(config: dict[str, Any], path: Path) -> Any:
    """``network_def`` of a bundle config, checked and with its ``@`` references inlined: literal values and
    ``_target_`` network classes only (see the module docstring); anything else is a :class:`BundleError`."""
    def lookup(ref: str, where: str) -> Any:
        node: Any = config
        for part in ref.replace("#", "::").split("::"):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise _bad_def(f"{where} refers to @{ref}, which the config does not define", path)
        return node

    def walk(node: Any, where: str, depth: int) -> Any:
        if depth > 64:
            raise _bad_def(f"{where} nests too deep (a reference to itself?)", path)
        if isinstance(node, str):
            if node.startswith("$"):
                raise _bad_def(f"{where} is an expression ({node[:60]!r}): refused, a "
                                  f"bundle config may not run code (give the value itself)", path)
            if node.startswith("%"):
                raise _bad_def(f"{where} is a macro ({node[:60]!r}): refused (give the value itself)", path)
            if node.startswith("@"):
                return walk(lookup(node[1:], where), where, depth + 1)
            return node
        if isinstance(node, list | tuple):
            return [walk(v, f"{where}::{i}", depth + 1) for i, v in enumerate(node)]
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for k, v in node.items():
                k = str(k)
                if k == "_target_":
                    out[k] = _safe_target(v, where, path)
                elif k == "_desc_":
                    continue
                elif k.startswith("_") and k.endswith("_"):
                    raise _bad_def(f"{where}::{k} refused (only _target_ is allowed there)", path)
                elif (_DOWNLOADS.search(k) or k == "weights" and isinstance(v, str)) and v not in (False, None, "", 0):
                    # DenseNet/ResNet/SENet(pretrained=True), HoVerNet(pretrained_url=...), TorchVisionFCModel(weights=
                    # a torchvision weights name) fetch weights at build
                    raise _bad_def(f"{where}::{k} = {str(v)[:80]!r} refused: the network would download weights "
                                   "while it is built (ctscore opens no network connection; the bundle's own "
                                   "weights are loaded after it); set it to false or leave it out", path)
                else:
                    out[k] = walk(v, f"{where}::{k}", depth + 1)
            return out
        if node is None or isinstance(node, bool | int | float):
            return node
        raise _bad_def(f"{where} is a {type(node).__name__}", path)

    if not isinstance(config, dict) or "network_def" not in config:
        raise BundleError("the config defines no network_def", path)
    net = walk(config["network_def"], "network_def", 0)
    if not isinstance(net, dict) or "_target_" not in net:
        raise _bad_def("it must be a {_target_: ..., ...} network", path)
    return net


def check_network_input(net_def: dict[str, Any], path: Path) -> None:
    """ctscore gives the network one channel of 3-D CT: a ``network_def`` asking for more input channels (CT + PET,
    ...) or another number of spatial dimensions (a 2-D network) is a :class:`BundleError` naming the config (it
    was loaded, then failed every scan with a bare RuntimeError). Only literal values are checked; a network whose
    input keys are named otherwise fails at its first window (see :meth:`BundleSegmenter.label_map`)."""
    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    n_in = net_def.get("in_channels")
    if whole(n_in) and n_in != 1:
        raise _bad_def(f"in_channels is {n_in}, but ctscore gives the network one channel (the CT in HU, normalized "
                       f"as the label mapping says)", path)
    for key in ("spatial_dims", "dimensions"):  # ``dimensions``: MONAI's older name
        dims = net_def.get(key)
        if whole(dims) and dims != 3:
            raise _bad_def(f"{key} is {dims}, but ctscore runs 3-D networks on the whole volume", path)


@functools.cache
def _unique_key_loader() -> Any:
    """A YAML safe loader that refuses a key written twice in one mapping (PyYAML keeps the last one silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                dup = key in seen
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if dup:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} written twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return Loader


_MAPPING_KEYS = {"name", "spacing_mm", "hu_window", "intensity", "roi_size", "output", "labels", "orientation"}
#: The outputs a mapping can declare: softmax (argmax), sigmoid logits (> 0), sigmoid probabilities (> 0.5).
OUTPUTS = ("softmax", "sigmoid", "sigmoid_probabilities")
#: Lesion pieces of a softmax bundle that lie off its lung labels are given the nearest lung's side when they touch
#: the lung or lie within this many mm of it (a lesion label is lung too; at least one voxel's diagonal, so that a
#: piece touching the lung on a coarse grid counts); smaller pieces farther away are taken out.
ORPHAN_LESION_MM = 5.0
#: A piece off the lung of this many mL or more is kept whatever its distance: a whole lung labelled lesion (a white
#: lung, ARDS) lies beyond the mediastinum from the other lung's label, and was taken out with it. It takes the side
#: where it lies (:func:`_side_of`). The stray label the limit was made for held 3.8 mL.
ORPHAN_LESION_KEEP_ML = 50.0
#: Outputs read as probabilities may pass 0-1 by this much (fp16 autocast on CUDA rounds).
_PROBABILITY_SLACK = 1e-3
_LABEL_KEYS = ("right_lung", "left_lung", "lesion", "lobes")
_INTENSITY_KEYS = ("a_min", "a_max", "b_min", "b_max", "clip")


def check_mapping(mapping: dict[str, Any], path: Path) -> dict[str, Any]:
    """The label mapping with its values checked and labels as lists of ints (``labels.lobes``: name -> list);
    anything unusable is a :class:`BundleError` naming ``path``."""
    def bad(msg: str) -> BundleError:
        return BundleError(msg, path)

    def numbers(key: str, n: int, integer: bool = False) -> list[float]:
        v = mapping[key]
        if not isinstance(v, list | tuple) or len(v) != n or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v):
            raise bad(f"{key} must be a list of {n} numbers, got {v!r}")
        if integer and not all(float(x).is_integer() for x in v):
            raise bad(f"{key} must be whole numbers, got {v!r}")
        return [float(x) for x in v]

    m = dict(mapping)
    unknown = sorted(set(m) - _MAPPING_KEYS)
    if unknown:
        raise bad(f"unknown key(s) {unknown}; expected {sorted(_MAPPING_KEYS)}")
    m["output"] = str(m.get("output", "softmax")).lower()
    if m["output"] not in OUTPUTS:
        raise bad(f"output must be softmax or sigmoid (logits) or sigmoid_probabilities, got {mapping.get('output')!r}")
    m["orientation"] = str(m.get("orientation", "LPS")).upper()
    if m["orientation"] not in ("LPS", "RAS"):
        raise bad(f"orientation must be LPS or RAS, got {mapping.get('orientation')!r}")
    if m.get("spacing_mm") is not None and min(numbers("spacing_mm", 3)) <= 0:
        raise bad(f"spacing_mm must be positive, got {m['spacing_mm']!r}")
    if "roi_size" in m and min(numbers("roi_size", 3, integer=True)) < 1:
        raise bad(f"roi_size must be positive, got {m['roi_size']!r}")
    if "intensity" in m and "hu_window" in m:
        raise bad("give hu_window or intensity, not both")
    if "hu_window" in m:
        lo, hi = numbers("hu_window", 2)
        if not lo < hi:
            raise bad(f"hu_window must be [low, high] with low < high, got {m['hu_window']!r}")
    if "intensity" in m:
        i = m["intensity"]
        if isinstance(i, dict) and sorted(set(map(str, i)) - set(_INTENSITY_KEYS)):
            raise bad(f"unknown intensity key(s) {sorted(set(map(str, i)) - set(_INTENSITY_KEYS))}; expected "
                      f"{list(_INTENSITY_KEYS)} (MONAI's ScaleIntensityRanged)")
        try:
            a0, a1 = float(i["a_min"]), float(i["a_max"])
            b0, b1 = float(i.get("b_min", 0.0)), float(i.get("b_max", 1.0))
        except (TypeError, KeyError, ValueError) as exc:
            raise bad(f"intensity must be {{a_min, a_max, b_min, b_max}} numbers, got {i!r}") from exc
        if not all(math.isfinite(v) for v in (a0, a1, b0, b1)) or not a0 < a1:
            raise bad(f"intensity must have finite numbers and a_min < a_max, got {i!r}")
        if not isinstance(i.get("clip", True), bool):
            raise bad(f"intensity clip must be true or false, got {i['clip']!r}")
    labels = m.get("labels") or {}
    if not isinstance(labels, dict) or not (("right_lung" in labels and "left_lung" in labels) or "lobes" in labels):
        raise bad("labels must give right_lung and left_lung, or lobes")
    unknown = sorted(set(map(str, labels)) - set(_LABEL_KEYS))
    if unknown:
        raise bad(f"unknown label key(s) {unknown}; expected {list(_LABEL_KEYS)}")
    lowest = 1 if m["output"] == "softmax" else 0
    used: dict[int, str] = {}

    def values(v: Any, role: str) -> list[int]:
        vals = list(v) if isinstance(v, list | tuple) else [v]
        if not vals or not all(isinstance(x, int) and not isinstance(x, bool) for x in vals):
            raise bad(f"labels.{role} must be a whole number or a non-empty list of them, got {v!r}")
        for x in vals:
            if x < lowest:
                raise bad(f"labels.{role}: {x} is not a {'label' if lowest else 'channel'} of a {m['output']} output"
                          + (" (0 is the background)" if lowest else ""))
            if x in used and used[x] != role:
                raise bad(f"label {x} is given to both {used[x]} and {role}")
            used[x] = role
        return vals

    out: dict[str, Any] = {}
    if "lobes" in labels:
        lobes = labels["lobes"]
        if not isinstance(lobes, dict) or not lobes:
            raise bad(f"labels.lobes must map lobe names to labels, got {lobes!r}")
        for name in lobes:
            if name not in LOBE_CODES:
                raise bad(f"unknown lobe name {name!r}; expected one of {sorted(LOBE_CODES)}")
        out["lobes"] = {name: values(v, f"lobes.{name}") for name, v in lobes.items()}
    for key in ("right_lung", "left_lung", "lesion"):
        if key in labels:
            out[key] = values(labels[key], key)
    for side in ("right", "left"):  # each lung from its lung label or from its lobes
        if f"{side}_lung" in out:
            continue
        lobes_of_side = sorted(n for n in LOBE_CODES if n.startswith(side))
        missing = [n for n in lobes_of_side if n not in out.get("lobes", {})]
        if missing == lobes_of_side:
            raise bad(f"labels give no {side} lung: neither {side}_lung nor any {side} lobe (the {side} lung would "
                      f"never be segmented)")
        if missing:
            log.warning("%s maps %s but not %s, and gives no %s_lung: those voxels are not lung at all (add %s_lung "
                        "with the labels of the rest of that lung)", path, ", ".join(
                            n for n in lobes_of_side if n not in missing), ", ".join(missing), side, side)
    if "lesion" not in out:
        raise bad("labels give no lesion label: it is required, every score ctscore gives (lesion volumes, six-zone, "
                  "zhang900, MosMed) is made from the lesion mask, and a model that cannot see lesions would score "
                  "every patient as healthy; add lesion: [...] with the network's lesion label(s) (softmax) or "
                  "channel(s) (sigmoid, sigmoid_probabilities)")
    m["labels"] = out
    m["max_label"] = max(used)
    m["used_labels"] = sorted(used)
    return m


def torch_isfinite_all(y: Any) -> bool:
    """Whether every value of a tensor is finite."""
    import torch

    return bool(torch.isfinite(y).all())


def _transforms(node: Any, names: set[str]) -> list[dict[str, Any]]:
    """The config's dicts whose ``_target_`` ends in one of ``names`` (``Spacingd``, ``monai.transforms.Spacingd``),
    in the order they are written; read only, nothing is built."""
    found = []
    if isinstance(node, dict):
        target = node.get("_target_")
        if isinstance(target, str) and target.rsplit(".", 1)[-1] in names:
            found.append(node)
        for v in node.values():
            found += _transforms(v, names)
    elif isinstance(node, list):
        for v in node:
            found += _transforms(v, names)
    return found


def preprocessing_mismatches(config: Any, mapping: dict[str, Any]) -> list[str]:
    """What the bundle's own preprocessing (``Spacing(d)``, ``ScaleIntensityRange(d)``, ``Orientation(d)`` in its
    config, literal values only) does that the label mapping does not repeat: ctscore runs only ``network_def``, so
    the network would get another grid, scale or orientation than it was trained on. One sentence each, saying what
    to write into the mapping; [] when they agree or the config has none."""
    out = []
    ras = mapping.get("orientation", "LPS") == "RAS"
    for t in _transforms(config, {"Orientationd", "Orientation"})[:1]:
        codes = t.get("axcodes")
        if isinstance(codes, str) and codes.upper() == "RAS" and not ras:
            out.append("its Orientation(d) gives RAS arrays, [x, y, z]: add orientation: RAS")
            ras = True  # the spacing below in that order
    for t in _transforms(config, {"Spacingd", "Spacing"})[:1]:
        pix = t.get("pixdim")
        pix = [pix] * 3 if isinstance(pix, int | float) and not isinstance(pix, bool) else pix
        if isinstance(pix, list) and pix and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pix):
            pix = (list(pix) + [pix[-1]] * 3)[:3]  # as MONAI: a short list padded with its last value, a long one cut
            if min(pix) <= 0:
                out.append(f"its Spacing(d) pixdim {list(pix)} keeps the scan's own spacing on an axis (a value <= 0), "
                           "which the mapping cannot say: check what grid the network was trained on")
                pix = None
        if isinstance(pix, list) and len(pix) == 3:
            want = [float(v) for v in (pix if ras else pix[::-1])]  # the mapping's order: [x, y, z] (RAS), [z, y, x]
            have = mapping.get("spacing_mm")
            if have is None or any(abs(float(a) - b) > 1e-6 for a, b in zip(have, want)):
                now = "gives none (the network gets the scan's own grid)" if have is None else f"gives {list(have)}"
                out.append(f"its Spacing(d) resamples to pixdim {list(pix)}, the mapping's spacing_mm {now}: write "
                           f"spacing_mm: {want}" + ("" if ras else " (z, y, x)"))
    for t in _transforms(config, {"ScaleIntensityRanged", "ScaleIntensityRange"})[:1]:
        keys = ("a_min", "a_max", "b_min", "b_max")
        if not all(isinstance(t.get(k), int | float) and not isinstance(t.get(k), bool) for k in keys[:2]):
            continue
        b_min, b_max = t.get("b_min"), t.get("b_max")
        if not all(v is None or isinstance(v, int | float) for v in (b_min, b_max)):
            continue
        theirs = (float(t["a_min"]), float(t["a_max"]), 0.0 if b_min is None else float(b_min),
                  1.0 if b_max is None else float(b_max), bool(t.get("clip", False)))  # MONAI's defaults
        if "intensity" in mapping:
            i = mapping["intensity"]
            ours = (float(i["a_min"]), float(i["a_max"]), float(i.get("b_min", 0.0)), float(i.get("b_max", 1.0)),
                    bool(i.get("clip", True)))
        else:
            lo, hi = (float(v) for v in mapping.get("hu_window", [-1024.0, 400.0]))
            ours = (lo, hi, 0.0, 1.0, True)
        if any(abs(a - b) > 1e-6 for a, b in zip(theirs[:4], ours[:4])) or theirs[4] != ours[4]:
            said = ("intensity" if "intensity" in mapping else "hu_window" if "hu_window" in mapping
                    else "no hu_window (the default [-1024, 400])")
            out.append(f"its ScaleIntensityRange(d) scales a_min {theirs[0]:g}, a_max {theirs[1]:g} to b_min "
                       f"{theirs[2]:g}, b_max {theirs[3]:g}, clip {str(theirs[4]).lower()}, the mapping gives {said}: "
                       f"write intensity: {{a_min: {theirs[0]:g}, a_max: {theirs[1]:g}, b_min: {theirs[2]:g}, b_max: "
                       f"{theirs[3]:g}, clip: {str(theirs[4]).lower()}}}")
    return out


def _machine_fault(exc: BaseException) -> bool:
    """Out of memory or a device fault: the machine's limit, not the bundle's error."""
    import torch

    low = str(exc).lower()
    return isinstance(exc, torch.cuda.OutOfMemoryError) or any(
        w in low for w in ("out of memory", "can't allocate memory", "cuda error"))


class BundleSegmenter:
    """A MONAI bundle as a :class:`segmentation.base.Segmenter` (lungs, lesions, lobes if provided)."""

    name = "bundle"

    def __init__(self, folder: str | Path, device: str = "auto", cfg: dict[str, Any] | None = None) -> None:
        import torch
        import yaml
        from monai.bundle import ConfigParser
        from monai.inferers import SlidingWindowInferer

        from segmentation.monai_segmenter import read_verified, resolve_device
        from segmentation.training import sha256_file

        self.folder = Path(folder)
        labels_path = self.folder / LABELS_FILE
        if not labels_path.exists():
            raise BundleError(f"no {LABELS_FILE} (the label mapping ctscore needs; a weights folder from "
                              f"'ctscore train' has model.safetensors, model.yaml and manifest.json)", self.folder)
        try:
            mapping = yaml.load(labels_path.read_text(encoding="utf-8"), Loader=_unique_key_loader()) or {}  # noqa: S506
            if not isinstance(mapping, dict):
                raise yaml.YAMLError("not a mapping")
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            mark = getattr(exc, "problem_mark", None)
            why = f"{exc.problem}, line {mark.line + 1}" if mark is not None and getattr(exc, "problem", None) else exc
            raise BundleError(f"unreadable label mapping ({why})", labels_path) from exc
        self.mapping: dict[str, Any] = check_mapping(mapping, labels_path)
        self.labels_path = labels_path
        config = _find(self.folder, ["configs/inference.json", "configs/inference.yaml", "configs/inference.yml"])
        if config is None:
            raise BundleError("no configs/inference.json|yaml", self.folder)
        weights = _find(self.folder, ["models/model.safetensors", "models/model.pt"])
        if weights is None:
            ts = _find(self.folder, ["models/model.ts"])
            raise BundleError("no models/model.safetensors or models/model.pt" + (
                " (models/model.ts, TorchScript, is not read: it is a program, and ctscore runs no code from a "
                "bundle; save the network's state dict as models/model.pt, torch.save(net.state_dict(), ...), or "
                "as safetensors)" if ts is not None else ""), self.folder)
        if weights.suffix == ".safetensors" and (weights.parent / "model.pt").exists():
            log.info("bundle %s: models/model.safetensors is read, models/model.pt beside it is not", self.folder)
        data = None  # the weights' bytes when checked against a manifest: loaded as checked
        if (weights.parent / "manifest.json").exists():
            hashes, contents = read_verified(weights.parent, [weights.name])
            self.sha256, data = hashes[weights.name], contents[weights.name]
        else:
            self.sha256 = sha256_file(weights)
            log.warning("bundle %s has no models/manifest.json: weights not verified (sha256 %s)", self.folder,
                        self.sha256[:12])
        # the config and the label mapping decide what the weights mean: both are part of the model's identity
        self.config_sha256, self.labels_sha256 = sha256_file(config), sha256_file(labels_path)
        self.device = resolve_device(device)
        try:
            raw = _read_config(config)  # JSON / safe YAML: reading runs nothing
        except Exception as exc:  # noqa: BLE001 - json, yaml and OS errors alike mean an unreadable config
            raise BundleError(f"unreadable config ({type(exc).__name__}: {exc})", config) from exc
        net_def = safe_network_def(raw, config)  # literal values and network classes only: nothing else runs
        for why in preprocessing_mismatches(raw, self.mapping):
            log.warning("bundle %s: %s (%s); ctscore runs only network_def of %s, not its preprocessing", self.folder,
                        why, labels_path, config)
        check_network_input(net_def, config)
        self.config_path = config
        try:
            self.net = ConfigParser({"network_def": net_def}).get_parsed_content("network_def")
        except Exception as exc:  # noqa: BLE001 - MONAI's parser raises many kinds; all mean a bad config
            raise BundleError(f"network_def cannot be built ({type(exc).__name__}: {exc})", config) from exc
        if not isinstance(self.net, torch.nn.Module):
            raise _bad_def(f"it gives a {type(self.net).__name__}, not a torch.nn.Module", config)
        load_into(self.net, load_state(weights, data), weights)
        self.net.eval().to(self.device)
        # CPU inference with deterministic algorithms, switched on only while segment, label_map or check_output runs
        # (monai_segmenter.deterministic_algorithms): the process's own torch setting is left as it was
        self.deterministic = self.device.type == "cpu"
        roi = self.mapping.get("roi_size", [96, 96, 96])
        self.orientation = self.mapping["orientation"]
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

    @property
    def hashes(self) -> dict[str, str]:
        """The full sha256 of the three files :attr:`model_id` digests (result.json's ``files_sha256``), so that the
        id can be checked from the record."""
        return {"weights": self.sha256, "config": self.config_sha256, "labels": self.labels_sha256}

    def _check_channels(self, n_out: int) -> None:
        """Labels of the mapping beyond ``n_out`` output channels, or a softmax of one channel: a BundleError;
        channels beyond the mapping's labels: a warning, once (their voxels become background)."""
        m = self.mapping
        if m["output"] == "softmax" and n_out < 2:
            raise BundleError(f"a softmax output needs 2 or more channels, the network has {n_out}", self.labels_path)
        if m["max_label"] >= n_out:
            raise BundleError(f"label {m['max_label']} is beyond the network's {n_out} output channels "
                              f"(0-{n_out - 1})", self.labels_path)
        named = set(m["used_labels"]) | ({0} if m["output"] == "softmax" else set())
        unnamed = [c for c in range(n_out) if c not in named]
        if unnamed and not getattr(self, "_warned_unnamed", False):
            self._warned_unnamed = True
            log.warning("%s names no meaning for the network's output %s %s (of %d): %s; map them (a lobe, a lung, "
                        "lesion) if they are lung", self.labels_path,
                        "label" if m["output"] == "softmax" else "channel", ", ".join(map(str, unnamed)), n_out,
                        "their voxels are background" if m["output"] == "softmax" else "they are not read")

    def _check_range(self, y: Any, where: str) -> None:
        """A sigmoid output declared as logits that lies wholly within 0-1 (probabilities: ``> 0`` would set every
        voxel), or one declared as probabilities that leaves 0-1: a BundleError naming the mapping."""
        out = self.mapping["output"]
        if y.numel() and not bool(torch_isfinite_all(y)):
            raise BundleError(f"the network's output holds NaN or infinite values on {where} (a broken network, or "
                              "half precision overflowing on CUDA: try --device cpu)", self.config_path)
        if out == "softmax" or y.numel() == 0:
            return
        lo, hi = float(y.min()), float(y.max())
        inside = lo >= -_PROBABILITY_SLACK and hi <= 1.0 + _PROBABILITY_SLACK
        if out == "sigmoid" and inside:
            raise BundleError(f"the network's outputs all lie within 0-1 ({lo:.3g} to {hi:.3g} on {where}), as "
                              "probabilities do, but output: sigmoid reads logits (a channel is set where > 0, which "
                              "every probability is): a network that ends in its own sigmoid needs output: "
                              "sigmoid_probabilities (a channel set where > 0.5)", self.labels_path)
        if out == "sigmoid_probabilities" and not inside:
            raise BundleError(f"the network's outputs run from {lo:.3g} to {hi:.3g} on {where}: no probabilities; "
                              "output: sigmoid reads logits", self.labels_path)

    def _infer(self, x: Any) -> Any:
        """The sliding-window output ``[1, C, ...]`` of the network on ``x`` ``[1, 1, ...]`` (normalized, on the
        device); a network that fails on the window is a :class:`BundleError` naming the config (out of memory and
        device faults are raised as they are: the machine's, not the bundle's)."""
        import torch

        from segmentation.monai_segmenter import deterministic_algorithms

        with torch.inference_mode(), deterministic_algorithms(self.deterministic):
            try:
                if self.device.type == "cuda":
                    with torch.autocast("cuda", dtype=torch.float16):
                        return self.inferer(x, self.net)
                return self.inferer(x, self.net)
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                if _machine_fault(exc):
                    raise  # the machine's limit or fault, not the bundle's
                text = str(exc).strip()
                msg = text.splitlines()[0] if text else type(exc).__name__
                roi = ", ".join(str(int(v)) for v in getattr(self.inferer, "roi_size", ())) or "?"
                raise BundleError(f"the network fails on the windows ctscore gives it, [1, 1, {roi}] (one channel "
                                  f"of 3-D CT; the window is roi_size of {LABELS_FILE}) ({type(exc).__name__}: "
                                  f"{msg[:300]})", self.config_path) from exc

    def check_output(self) -> int | None:
        """Run the network once on a window of ``roi_size`` (zeros) and check its output channels against the
        label mapping: labels beyond them (or a softmax of one channel) are a :class:`BundleError` naming the
        mapping, and a network that fails on the window one naming the config, when the model is loaded instead
        of at every scan after its inference. Returns the number of output channels; None (with a warning) when
        the machine could not run even that window (out of memory: the channels are then checked at the first
        scan). The cost is one window of the many of a scan."""
        import torch

        roi = tuple(int(v) for v in self.inferer.roi_size)
        try:
            y = self._infer(torch.zeros((1, 1) + roi, device=self.device))
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            if isinstance(exc, BundleError) or not _machine_fault(exc):
                raise
            log.warning("bundle %s: could not run one %s window at load (%s); its output channels are checked at "
                        "the first scan", self.folder, list(roi), str(exc).strip().splitlines()[0][:200])
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return None
        n_out = int(y.shape[1])
        self._check_channels(n_out)
        self._check_range(y, "a window of zeros, the air ctscore feeds it at load")
        del y
        return n_out

    def _normalize(self, x: Any) -> Any:
        m = self.mapping
        if "intensity" in m:
            i = m["intensity"]
            a0, a1 = float(i["a_min"]), float(i["a_max"])
            b0, b1 = float(i.get("b_min", 0.0)), float(i.get("b_max", 1.0))
            if i.get("clip", True):
                x = x.clamp(a0, a1)
            return (x - a0) / (a1 - a0) * (b1 - b0) + b0
        lo, hi = (float(v) for v in m.get("hu_window", [-1024.0, 400.0]))
        return (x.clamp(lo, hi) - lo) / (hi - lo)

    def label_map(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
        """The bundle's output on the input grid: a label map (softmax) or [C, z, y, x] bool (sigmoid)."""
        from segmentation.monai_segmenter import deterministic_algorithms

        with deterministic_algorithms(self.deterministic):
            return self._label_map(hu, spacing)

    def _label_map(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
        import torch

        from segmentation.monai_segmenter import resize_to, upsample_slabs

        ras = self.orientation == "RAS"
        if ras:  # [z, y, x] LPS -> [x, y, z] RAS (x to the right, y anterior), as MONAI's Orientationd(RAS) gives
            hu = np.flip(np.asarray(hu).transpose(2, 1, 0), (0, 1))
            spacing = tuple(spacing)[::-1]
        msp = self.mapping.get("spacing_mm")
        size = hu.shape if msp is None else tuple(
            int(v) for v in np.maximum(1, np.round(np.asarray(hu.shape) * np.asarray(spacing) / np.asarray(msp))))
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(hu, np.float32))[None, None]
            x = self._normalize(resize_to(x, tuple(size))).to(self.device)
            y = self._infer(x)[0].float().cpu()
        self._check_channels(int(y.shape[0]))  # labels beyond the output channels would never be found
        self._check_range(y, "this scan")
        sigmoid = self.mapping["output"] != "softmax"
        cut = 0.5 if self.mapping["output"] == "sigmoid_probabilities" else 0.0
        out = np.zeros(((y.shape[0],) if sigmoid else ()) + tuple(hu.shape), bool if sigmoid else np.uint8)
        right, left = self._side_channels()

        def put(z0: int, z1: int, v: Any) -> None:
            if sigmoid:
                on = v > cut
                if right and left:  # a voxel set in a right and a left channel: the side with the larger output
                    r, lft = v[right].amax(0), v[left].amax(0)
                    both = on[right].any(0) & on[left].any(0)
                    on[right] = on[right] & ~(both & (lft > r))
                    on[left] = on[left] & ~(both & (r >= lft))
                out[:, z0:z1] = on.numpy()
            else:
                out[z0:z1] = torch.argmax(v, 0).numpy().astype(np.uint8)

        upsample_slabs(y, hu.shape, put)
        if ras:  # back to [z, y, x] LPS
            out = np.ascontiguousarray(np.flip(out, (-3, -2)).swapaxes(-3, -1))
        return out

    def _side_channels(self) -> tuple[list[int], list[int]]:
        """The channels (labels) meaning the right lung and the left lung, their lobes included."""
        labels = self.mapping["labels"]
        sides: dict[str, list[int]] = {"right": list(labels.get("right_lung", [])),
                                       "left": list(labels.get("left_lung", []))}
        for name, values in labels.get("lobes", {}).items():
            sides["right" if name.startswith("right") else "left"] += list(values)
        return sides["right"], sides["left"]

    def segment(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> Segmentation:
        """Segment one HU volume ``[z, y, x]`` (LPS) with voxel size ``spacing`` (z, y, x) in mm. On CPU, torch's
        deterministic algorithms are on while it runs, the process's own setting restored after it."""
        from segmentation.monai_segmenter import deterministic_algorithms

        with deterministic_algorithms(self.deterministic):
            return self._segment(hu, spacing)

    def _segment(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> Segmentation:
        out = self.label_map(np.asarray(hu, np.float32), spacing)
        labels = self.mapping["labels"]

        def sel(vals: list[int]) -> np.ndarray:
            if out.ndim == 4:
                return np.any(out[vals], axis=0)
            return np.isin(out, vals)

        lungs = np.zeros(hu.shape, np.uint8)
        lobes = None
        if "lobes" in labels:
            lobes = np.zeros(hu.shape, np.uint8)
            for name, value in labels["lobes"].items():  # names checked at load (check_mapping)
                m = sel(value)
                lobes[m] = LOBE_CODES[name]
                lungs[m] = RIGHT_LUNG if name.startswith("right") else LEFT_LUNG
        if "right_lung" in labels:
            lungs[sel(labels["right_lung"])] = RIGHT_LUNG
        if "left_lung" in labels:
            lungs[sel(labels["left_lung"])] = LEFT_LUNG
        lesions = sel(labels["lesion"]) if "lesion" in labels else np.zeros(hu.shape, bool)
        flags = []
        orphan = lesions & (lungs == 0)
        if orphan.any():
            # lesion labels of a softmax model are lung too: give them the side (and the lobe) of the nearest
            # lung voxel, so that lobar scores count them; but only pieces that touch the lung or lie within
            # ORPHAN_LESION_MM of it: a stray label far from the lung is no lung (unless it is a lung's worth)
            pieces, n = ndi.label(orphan, ndi.generate_binary_structure(3, 3))
            labels_n = np.arange(1, n + 1)
            idx = None  # no lung labelled: every piece is off it (the large ones are lung by where they lie)
            nearest = np.full(n, np.inf)
            if (lungs > 0).any():
                dist, idx = ndi.distance_transform_edt(lungs == 0, sampling=spacing, return_indices=True)
                nearest = np.asarray(ndi.minimum(dist, pieces, labels_n))
                del dist
            voxel_ml = float(np.prod(spacing)) / 1000.0
            sizes = np.bincount(pieces.ravel(), minlength=n + 1)[1:] * voxel_ml
            limit = max(ORPHAN_LESION_MM, float(np.linalg.norm(spacing)))
            off = nearest > limit
            small = labels_n[off & (sizes < ORPHAN_LESION_KEEP_ML)]
            large = labels_n[off & (sizes >= ORPHAN_LESION_KEEP_ML)]
            for k in large:  # a lung labelled lesion only: lung of the side where it lies
                piece = pieces == k
                side = _side_of(piece, lungs)
                lungs[piece] = side
                orphan &= ~piece
                log.warning("bundle %s: %.0f mL labelled lesion lay more than %g mm from its lung labels and was "
                            "kept as %s lung (a lung labelled lesion only?)", self.folder, sizes[k - 1], limit,
                            "right" if side == RIGHT_LUNG else "left")
            far = np.isin(pieces, small)
            del pieces
            if far.any():
                ml = float(far.sum()) * voxel_ml
                lesions &= ~far
                orphan &= ~far
                flags.append(f"LESION_OFF_LUNG_REMOVED:{ml:.1f}")
                log.warning("bundle %s: %.1f mL labelled lesion lay more than %g mm from its lung labels, in pieces "
                            "under %g mL, and was taken out", self.folder, ml, limit, ORPHAN_LESION_KEEP_ML)
            if idx is not None and orphan.any():
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
        if sides_swapped(lungs):
            flags.append("LUNG_SIDES_SWAPPED")
            log.warning("bundle %s: its right lung lies left of its left lung (labels swapped in %s, or the bundle "
                        "expects another orientation: see 'orientation' there)", self.folder, LABELS_FILE)
        return Segmentation(lungs=lungs, lesions=lesions, airway=airway, lobes=lobes, flags=flags)


def _side_of(piece: np.ndarray, lungs: np.ndarray) -> int:
    """The side a piece lies on, by its centre's x (LPS: the right lung at smaller x): the side of the nearer lung's
    centre when both are labelled; with one lung labelled, the other side when the piece lies past that lung's centre
    towards the other side, else that lung's side; with none, by the image's middle."""
    x = float(np.nonzero(piece)[2].mean())
    centres = {s: float(np.nonzero(lungs == s)[2].mean()) for s in (RIGHT_LUNG, LEFT_LUNG) if (lungs == s).any()}
    if len(centres) == 2:
        return min(centres, key=lambda s: abs(centres[s] - x))
    if not centres:
        return RIGHT_LUNG if x < lungs.shape[2] / 2 else LEFT_LUNG
    (side, cx), = centres.items()
    other = LEFT_LUNG if side == RIGHT_LUNG else RIGHT_LUNG
    return other if (x > cx if side == RIGHT_LUNG else x < cx) else side


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
    n_out = 7 if with_lobes else 4
    net_def = {"_target_": "monai.networks.nets.BasicUNet", "spatial_dims": 3, "in_channels": 1,
               "out_channels": n_out, "features": [4, 4, 4, 4, 4, 4]}
    (folder / "configs" / "inference.json").write_text(json.dumps({"network_def": net_def}, indent=1),
                                                       encoding="utf-8")
    with torch.random.fork_rng(devices=[]):  # seeded weights; the caller's torch random state is left as it was
        torch.manual_seed(seed)
        net = BasicUNet(spatial_dims=3, in_channels=1, out_channels=n_out, features=(4, 4, 4, 4, 4, 4))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "models" / "model.safetensors"))
    sha = sha256_file(folder / "models" / "model.safetensors")
    (folder / "models" / "manifest.json").write_text(json.dumps({"files": {"model.safetensors": {"sha256": sha}}}),
                                                     encoding="utf-8")
    labels: dict[str, Any] = ({"lobes": {"right_upper": 1, "right_middle": 2, "right_lower": 3, "left_upper": 4,
                                         "left_lower": 5}, "lesion": [6]} if with_lobes
                              else {"right_lung": [1], "left_lung": [2], "lesion": [3]})
    mapping = {"name": "tiny-bundle", "spacing_mm": [4.0, 4.0, 4.0], "hu_window": [-1024, 400],
               "roi_size": [32, 32, 32], "output": "softmax", "labels": labels}
    (folder / LABELS_FILE).write_text(yaml.safe_dump(mapping, sort_keys=False), encoding="utf-8")
    return folder
