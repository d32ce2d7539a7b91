"""Opacity classes by Hounsfield units inside the lesion mask (bands come from the config)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from scoring.systems import CONSOLIDATION, FAINT_GGO, GGO


def classify_lesions(hu: np.ndarray, lesions: np.ndarray, bands: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Label lesion voxels 1 faint ground glass, 2 ground glass, 3 consolidation (0 elsewhere).

    Bands are [low, high). Lesion voxels below the faint band count as faint ground glass and those
    above the consolidation band as consolidation, so that every lesion voxel has a class, up to
    ``lesion_max_hu`` when the bands give it: a voxel at or above it is no lesion (0) but an enhanced vessel,
    calcification, bone or metal inside the lesion mask (3D Slicer's Lung CT Analyzer subtracts vessels from 0 HU up;
    consolidation is 20-60 HU, with contrast up to about 120). On a CT pulmonary angiogram the network took 4-57 mL of
    enhanced vessel (300-400 HU) into lesions, graded consolidation, and a unit's density went from 0 to 3.
    """
    out = np.zeros(hu.shape, np.uint8)
    les = lesions.astype(bool)
    top = bands.get("lesion_max_hu")
    if top is not None:
        les = les & (hu < top)
    out[les] = FAINT_GGO
    out[les & (hu >= bands["ggo"][0])] = GGO
    out[les & (hu >= bands["consolidation"][0])] = CONSOLIDATION
    return out
