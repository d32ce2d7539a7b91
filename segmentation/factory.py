"""Build the configured segmenter once per process."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from segmentation.base import Segmenter


def build_segmenter(cfg: dict[str, Any]) -> Segmenter:
    """The segmenter named by ``cfg['segmentation']['method']`` (classical, monai, or a bundle path)."""
    seg = cfg["segmentation"]
    method = str(seg["method"])
    if method == "classical":
        from segmentation.classical import ClassicalSegmenter

        return ClassicalSegmenter(cfg)
    if method == "monai":
        from segmentation.monai_segmenter import MonaiSegmenter

        return MonaiSegmenter(device=seg.get("device", "auto"), cfg=cfg)
    path = Path(method)
    if path.is_dir():
        from segmentation.bundle import BundleSegmenter

        return BundleSegmenter(path, device=seg.get("device", "auto"), cfg=cfg)
    raise ConfigError(f"segmentation.method must be 'classical', 'monai' or a MONAI bundle folder, got {method!r}")


@functools.lru_cache(maxsize=4)
def _cached(cfg_json: str) -> Segmenter:
    return build_segmenter(json.loads(cfg_json))


def get_segmenter(cfg: dict[str, Any]) -> Segmenter:
    """Process-wide cache: the same configuration gives the same (already loaded) segmenter."""
    return _cached(json.dumps(cfg, sort_keys=True))
