"""The data that travels between stages.

Array convention (one place, so nobody flips by hand): a volume's numpy array is indexed
``[z, y, x]`` after orienting the image to LPS with ``SimpleITK.DICOMOrient(img, "LPS")``: x grows
towards the patient's left, y towards posterior, z towards the head. The SimpleITK image carries
origin, spacing and direction, so masks are brought back to any grid by physical-space resampling,
never by index arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import SimpleITK as sitk


@dataclass
class CTVolume:
    """A loaded CT series in Hounsfield units, on its original grid."""

    image: sitk.Image  # float32 HU, original geometry (slices sorted along their normal)
    meta: dict[str, Any]  # header values of the series (may be identifying: never put in paths)
    files: list[Path] = field(default_factory=list)  # the files of the series, in slice order
    flags: list[str] = field(default_factory=list)  # QC flag codes raised while loading (W / F rows)
    padding_mask: sitk.Image | None = None  # uint8, 1 where the pixel was padding (outside the FOV)
