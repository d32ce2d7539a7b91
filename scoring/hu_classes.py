"""Opacity classes by Hounsfield units inside the lesion mask (bands come from the config)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from scoring.systems import CONSOLIDATION, FAINT_GGO, GGO


def classify_lesions(hu: np.ndarray, lesions: np.ndarray, bands: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Label lesion voxels 1 faint ground glass, 2 ground glass, 3 consolidation (0 elsewhere).

    Bands are [low, high). Lesion voxels below the faint band count as faint ground glass and those
    above the consolidation band as consolidation, so that every lesion voxel has a class.
    """
    out = np.zeros(hu.shape, np.uint8)
    les = lesions.astype(bool)
    out[les] = FAINT_GGO
    out[les & (hu >= bands["ggo"][0])] = GGO
    out[les & (hu >= bands["consolidation"][0])] = CONSOLIDATION
    return out
