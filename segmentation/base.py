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


def sides_swapped(lungs: np.ndarray) -> bool:
    """Whether the right lung of an LPS ``[z, y, x]`` label map lies clearly on the patient's left of the left lung:
    its median x larger (x grows towards the patient's left) by more than a quarter of the lungs' width together.
    A right/left confusion of the segmenter, or a model that expects another orientation; never true of a correct
    map, whatever the patient's position on the table (the arrays are in LPS, the patient's own frame). Two sides
    mixed across the whole width (a model that has not learned the sides) are not a swap."""
    cols = []
    for side in (RIGHT_LUNG, LEFT_LUNG):
        counts = np.count_nonzero(lungs == side, axis=(0, 1))
        if not counts.any():
            return False
        cols.append(counts)
    med = [int(np.searchsorted(np.cumsum(c), c.sum() / 2.0)) for c in cols]
    present = np.flatnonzero(cols[0] + cols[1])
    return med[0] - med[1] > 0.25 * (present[-1] - present[0] + 1)


#: The right and left lung labels touching over more than this many cm2 are one lung labelled in part as the other
#: (LUNG_SIDE_MIXED). Real lungs meet only along the junction lines, through the pleura: the six real chests of
#: ../shared/data/chest 0 cm2 with the network, 0 to 7.4 (cap001) with the classical segmenter; the audit's small
#: field of view phantom (the right lung's upper part labelled left by the network: 47.5; the right lung split front
#: and back by the classical segmenter: 353.6).
SIDE_CONTACT_CM2 = 20.0


def sides_contact_cm2(lungs: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """The area (cm2) over which the right and left labels of an LPS ``[z, y, x]`` label map touch (voxel faces
    between a right and a left voxel, ``spacing`` (z, y, x) mm). Large where one lung is labelled in part as the
    other (:data:`SIDE_CONTACT_CM2`), whatever the field of view: no midline is needed, the body's being unknown
    where the field cuts it."""
    sz, sy, sx = (float(v) for v in spacing)
    area = 0.0
    for axis, face in ((0, sy * sx), (1, sz * sx), (2, sz * sy)):
        a = lungs[(slice(None),) * axis + (slice(None, -1),)]
        b = lungs[(slice(None),) * axis + (slice(1, None),)]
        area += face * np.count_nonzero(((a == RIGHT_LUNG) & (b == LEFT_LUNG)) | ((a == LEFT_LUNG) & (b == RIGHT_LUNG)))
    return float(area) / 100.0


def side_mixed_flags(lungs: np.ndarray, spacing: tuple[float, float, float]) -> list[str]:
    """``["LUNG_SIDE_MIXED:<cm2>"]`` where the two lung labels touch over more than :data:`SIDE_CONTACT_CM2`
    (:func:`sides_contact_cm2`), else []."""
    cm2 = sides_contact_cm2(lungs, spacing)
    return [f"LUNG_SIDE_MIXED:{cm2:.0f}"] if cm2 > SIDE_CONTACT_CM2 else []


#: a lung component with at least this share of its voxels outside the body's outline is air around the patient
#: (a real lung cut by the field of view has only the sliver between the outline's chord and the FOV edge outside)
OUTSIDE_BODY_SHARE = 0.5


def lung_outside_body(hu: np.ndarray, lungs: np.ndarray, body_threshold_hu: float = -500.0,
                      body: np.ndarray | None = None) -> np.ndarray:
    """The lung labels that lie in the air around the patient: voxels outside the convex outline of the body (its
    largest component denser than ``body_threshold_hu``, per slice) in lung components (3D, per side) that lie
    mostly (:data:`OUTSIDE_BODY_SHARE`) outside it.

    A network shown a scan with little or no lung (an abdominal series) labelled the air around the patient, the
    arms and the table as lung (400 mL: an upper abdomen scored CT-1). Real lungs lie inside the outline, also
    where the field of view cuts them (the outline's chord between the chest wall's two cut ends); its slivers
    beyond the chord are a small share of their component and are kept."""
    from scipy import ndimage as ndi
    from skimage.morphology import convex_hull_image

    from segmentation.classical import body_mask

    out = np.zeros(lungs.shape, bool)
    if not lungs.any():
        return out
    body = body_mask(hu, body_threshold_hu) if body is None else body  # (given: the caller's, same threshold)
    outside = (lungs > 0) & ~body  # holes filled per slice: a lung inside the chest is body here
    for k in np.flatnonzero(outside.any(axis=(1, 2))):
        if body[k].any():  # the convex outline: a lung open to the FOV edge, or air between arm and chest
            outside[k] &= ~convex_hull_image(body[k])
        else:  # no body in this slice (a body split along z, the largest part elsewhere): no outline to judge by
            outside[k] = False
    if not outside.any():
        return out
    for side in (RIGHT_LUNG, LEFT_LUNG):
        labels, n = ndi.label(lungs == side)
        if n == 0:
            continue
        size = np.bincount(labels.ravel(), minlength=n + 1)
        out_n = np.bincount(labels[outside].ravel(), minlength=n + 1)
        air = np.flatnonzero(out_n >= OUTSIDE_BODY_SHARE * np.maximum(size, 1))
        air = air[air > 0]
        if air.size:
            out |= np.isin(labels, air) & outside
    return out
