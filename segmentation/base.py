"""The segmenter interface: HU image in; right/left lung labels and lesion mask out.

Every segmenter (the classical baseline, the MONAI network, a plug-in bundle) implements
:class:`Segmenter`. Arrays are ``[z, y, x]`` in LPS orientation (x towards patient left, z towards
the head; see :mod:`pipeline.volume`) on the working grid, with ``spacing`` given as (z, y, x) mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

# Label values of the lung map (also those of lungs.nii.gz).
RIGHT_LUNG = 1
LEFT_LUNG = 2

# Lobe labels (when a segmenter or a user mask provides lobes).
LOBES = {1: "right_upper", 2: "right_middle", 3: "right_lower", 4: "left_upper", 5: "left_lower"}


@dataclass
class Segmentation:
    """What a segmenter returns, on the grid it was given."""

    lungs: np.ndarray  # uint8: 0 background, 1 right lung, 2 left lung (includes diseased lung)
    lesions: np.ndarray  # bool: pneumonia opacity (any density) inside the lungs
    airway: np.ndarray | None = None  # bool: trachea and main bronchi (never part of the lungs)
    lobes: np.ndarray | None = None  # uint8 lobe labels (see LOBES) or None
    flags: list[str] = field(default_factory=list)  # QC flags of the segmentation (e.g. BOWEL_GAS_REMOVED:left)


@runtime_checkable
class Segmenter(Protocol):
    """A lung/lesion segmenter. Build it once per process; call :meth:`segment` per scan."""

    name: str  # short name written in run.json and result.json

    @property
    def model_id(self) -> str:
        """A stable identifier of the model and its parameters (e.g. sha256 of the weights)."""
        ...

    def segment(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> Segmentation:
        """Segment one HU volume ``[z, y, x]`` (LPS) with voxel size ``spacing`` (z, y, x) in mm."""
        ...
