"""The segmenter registry, and building the configured segmenter once per process.

:data:`SEGMENTERS` names every built-in segmenter (``segmentation.method: <name>``, ``--segmenter <name>``); the
configuration check, the CLI help, the batch preflight and the GPU planning read it, so a new segmenter is one
entry here (see docs/developing.md, "Adding a segmenter"). Anything else given as ``segmentation.method`` is a
model folder: weights written by ``ctscore train`` or a MONAI bundle with a label mapping.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from segmentation.base import Segmenter


def _classical(cfg: dict[str, Any]) -> Segmenter:
    from segmentation.classical import ClassicalSegmenter

    return ClassicalSegmenter(cfg)


def _monai(cfg: dict[str, Any]) -> Segmenter:
    from segmentation.monai_segmenter import MonaiSegmenter  # torch: only when this segmenter is built

    return MonaiSegmenter(device=cfg["segmentation"].get("device", "auto"), cfg=cfg)


def _monai_weights(seg: Mapping[str, Any]) -> Path:
    from segmentation.monai_segmenter import WEIGHTS_DIR

    return Path((seg.get("monai") or {}).get("weights") or WEIGHTS_DIR)


@dataclass(frozen=True)
class SegmenterSpec:
    """One built-in segmenter."""

    name: str  # segmentation.method / --segmenter value; also the segmenter's ``name`` (run.json, scans.csv)
    build: Callable[[dict[str, Any]], Segmenter]  # the resolved config -> the segmenter (imports it lazily)
    uses_gpu: bool  # reads segmentation.device (GPU planning, device check); False: always on the CPU
    #: the ``segmentation.<options>`` section of its own settings; None: the flat ``segmentation.*`` keys (only the
    #: classical segmenter's: set for another segmenter, they are warned about as unused)
    options: str | None
    description: str  # one line, for the --segmenter help
    #: the folder of its model files (a change of them builds it again: :func:`model_stamp`); None: no model files
    model_folder: Callable[[Mapping[str, Any]], Path] | None = None


#: The built-in segmenters, in the order the "must be ..." error names them.
SEGMENTERS: dict[str, SegmenterSpec] = {spec.name: spec for spec in (
    SegmenterSpec("classical", _classical, uses_gpu=False, options=None,
                  description="thresholds and morphology, no model"),
    SegmenterSpec("monai", _monai, uses_gpu=True, options="monai", description="the shipped network",
                  model_folder=_monai_weights),
)}


def uses_gpu(method: str) -> bool:
    """Whether the segmenter ``segmentation.method`` names may run on a GPU (reads ``segmentation.device``): a
    built-in one as :data:`SEGMENTERS` says, a model folder (a network) always."""
    spec = SEGMENTERS.get(str(method))
    return spec.uses_gpu if spec is not None else True


def unknown_method_message(method: str) -> str:
    """The error for a ``segmentation.method`` that is neither a built-in segmenter nor a model folder."""
    from pipeline.config import model_folder_problem

    names = ", ".join(repr(name) for name in SEGMENTERS)
    return (f"segmentation.method (--segmenter) must be {names} or a model folder (a MONAI bundle, or weights from "
            f"'ctscore train'), got {method!r}: {model_folder_problem(method)}")


def segmenter_help(default: str) -> str:
    """The built-in names for ``--segmenter``'s help, ``default`` (configs/default.yaml) first:
    ``monai (the default: the shipped network) | classical``."""
    names = sorted(SEGMENTERS, key=lambda name: name != default)
    return " | ".join(f"{n} (the default: {SEGMENTERS[n].description})" if n == default else n for n in names)


def build_segmenter(cfg: dict[str, Any]) -> Segmenter:
    """The segmenter named by ``cfg['segmentation']['method']``.

    A name of :data:`SEGMENTERS` (``classical``, ``monai``: the shipped weights), or a folder: weights written by
    ``ctscore train`` (``model.safetensors`` + ``model.yaml`` + ``manifest.json``) or a MONAI bundle with a label
    mapping.
    """
    seg = cfg["segmentation"]
    method = str(seg["method"])
    spec = SEGMENTERS.get(method)
    if spec is not None:
        return spec.build(cfg)
    path = Path(method)
    if path.is_dir() and (path / "model.safetensors").exists() and (path / "model.yaml").exists():
        # weights written by `ctscore train` (or a copy of segmentation/weights)
        from segmentation.monai_segmenter import MonaiSegmenter

        return MonaiSegmenter(path, device=seg.get("device", "auto"), cfg=cfg)
    if path.is_dir():
        from segmentation.bundle import BundleSegmenter

        bundle = BundleSegmenter(path, device=seg.get("device", "auto"), cfg=cfg)
        # one window through the network now: labels beyond its output channels (or a network that fails on its
        # window) are the model's error, found here once instead of at every scan after a whole inference
        bundle.check_output()
        return bundle
    raise ConfigError(unknown_method_message(method))


@functools.lru_cache(maxsize=4)
def _cached(cfg_json: str, stamp: tuple) -> Segmenter:
    return build_segmenter(json.loads(cfg_json))


def model_stamp(cfg: dict[str, Any]) -> tuple:
    """(name, size, mtime) of every file of the model folder ``cfg`` names (none for a segmenter without model
    files, such as ``classical``): part of the cache key, so that a model folder written again in this process
    (``ctscore train --overwrite``, a notebook re-training into the same folder) is loaded again, not served from
    the cache as it was."""
    seg = cfg.get("segmentation") or {}
    method = str(seg.get("method", ""))
    spec = SEGMENTERS.get(method)
    if spec is not None:
        if spec.model_folder is None:
            return ()
        folder = spec.model_folder(seg)
    else:
        folder = Path(method)
    try:
        # the folder's own files and a MONAI bundle's configs/ and models/ (not a walk: a wrong --model could be
        # a folder of thousands of scans)
        files = sorted(p for d in (folder, folder / "configs", folder / "models") if d.is_dir()
                       for p in d.iterdir() if p.is_file())
        return tuple((str(p.relative_to(folder)), st.st_size, st.st_mtime_ns) for p in files
                     for st in [p.stat()])
    except OSError:  # not there or unreadable: build_segmenter says why
        return ()


_LOCK = threading.Lock()


def get_segmenter(cfg: dict[str, Any]) -> Segmenter:
    """Process-wide cache: the same configuration gives the same (already loaded) segmenter. Thread-safe: scans
    that start at once in threads of one process share one model, loaded once (lru_cache alone would let each
    thread build its own on a cache miss)."""
    key = json.dumps(cfg, sort_keys=True)
    with _LOCK:
        return _cached(key, model_stamp(cfg))
