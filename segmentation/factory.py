"""Build the configured segmenter once per process."""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from segmentation.base import Segmenter


def build_segmenter(cfg: dict[str, Any]) -> Segmenter:
    """The segmenter named by ``cfg['segmentation']['method']``.

    ``classical``, ``monai`` (the shipped weights), or a folder: weights written by ``ctscore train``
    (``model.safetensors`` + ``model.yaml`` + ``manifest.json``) or a MONAI bundle with a label mapping.
    """
    seg = cfg["segmentation"]
    method = str(seg["method"])
    if method == "classical":
        from segmentation.classical import ClassicalSegmenter

        return ClassicalSegmenter(cfg)
    if method == "monai":
        from segmentation.monai_segmenter import MonaiSegmenter

        return MonaiSegmenter(device=seg.get("device", "auto"), cfg=cfg)
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
    from pipeline.config import model_folder_problem

    raise ConfigError(f"segmentation.method (--segmenter) must be 'classical', 'monai' or a model folder (a MONAI bundle, or "
                      f"weights from 'ctscore train'), got {method!r}: {model_folder_problem(method)}")


@functools.lru_cache(maxsize=4)
def _cached(cfg_json: str, stamp: tuple) -> Segmenter:
    return build_segmenter(json.loads(cfg_json))


def model_stamp(cfg: dict[str, Any]) -> tuple:
    """(name, size, mtime) of every file of the model folder ``cfg`` names (none for ``classical``): part of the
    cache key, so that a model folder written again in this process (``ctscore train --overwrite``, a notebook
    re-training into the same folder) is loaded again, not served from the cache as it was."""
    seg = cfg.get("segmentation") or {}
    method = str(seg.get("method", ""))
    if method == "classical":
        return ()
    if method == "monai":
        from segmentation.monai_segmenter import WEIGHTS_DIR

        folder = Path((seg.get("monai") or {}).get("weights") or WEIGHTS_DIR)
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
