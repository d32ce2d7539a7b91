"""Landmark levels (patient z, mm) for the zone planes, found on non-contrast chest CT.

Every level is a :class:`Landmark` with its ``method`` (``detected`` from anatomy, ``estimated``
from other levels, or ``missing``), a ``confidence`` (high/medium/low) and a note saying how it was
found. Arrays are LPS-oriented ``[z, y, x]`` on the working grid: x grows to the patient's left,
y posteriorly, and the z index grows cranially; ``z_mm[k]`` is the patient z of slice ``k``.

What is detected and how (definitions of ../shared/data/landmarks/README.md):

* ``carina``: lowest slice where the airway (trachea, region-grown by the segmenter) is still one
  lumen, walking down from the trachea; the two lumina must lie beside the trachea followed from
  above, and a division above the highest lung apex (the larynx) does not count.
* ``rul_takeoff``, ``rml_origin``, ``bronchus_intermedius``: the right bronchial tree below the
  carina is region-grown from the trachea (HU below :data:`BRONCHUS_HU`, inside a box around the
  hilum, threshold lowered when it leaks). Walking down the right main bronchus, the right upper-lobe
  take-off is the first slice where a lumen leaves it laterally; the bronchus intermedius is then
  followed down until it divides (or fades); its mid-level is the bronchus intermedius level.
* ``suprasternal_notch``: the sternum is found as the bone (> :data:`BONE_HU`) anterior to the
  trachea near the midline below the notch, then followed cranially in a narrow midline box
  until no bone is left; the bone must also cross the midline (within
  :data:`NOTCH_MIDLINE_HALF_WIDTH_MM` of both the trachea's x in that slice and the spine's x),
  which the clavicular heads beside the notch do not; a slice holding two heads with soft tissue between
  them near the midline is above the notch (:func:`_clavicular_heads`: a rotated head crosses both markers). The top
  bone slice is the notch; outside :data:`NOTCH_ABOVE_CARINA_MM` above the carina it is estimated, and it is
  missing when the bone reaches the scan's top slice (the notch is above the scan).
* ``dome_right``/``dome_left``: highest point of the lung floor (lowest lung voxel per (y, x)
  column), excluding columns medial to the heart border (taken from the left lung's medial edge in the
  slab :data:`DOME_LEFT_HEART_SLAB_MM` above its own median floor), so that the lung lying on the heart does
  not count as diaphragm.
  The right dome is refined the same way (:data:`DOME_RIGHT_PASSES` passes): columns medial to the
  right lung's heart border in the slab :data:`DOME_HEART_SLAB_MM` above the current estimate.
  Columns whose lung reaches the scan's bottom slice count with their floor there: on a scan cut
  below the dome's top the dome is found or missing, never taken from the high floors left over.
  A second reading over a lens of dense tissue under the aerated lung (:func:`diaphragm_lung`) more than
  :data:`DOME_UNCERTAIN_MM` higher makes a dome uncertain (low confidence, ``LANDMARK_UNCERTAIN``).
* ``apex_*``/``base_*``: most cranial / most caudal slice of the segmenter's lung mask holding at least
  :data:`MIN_LUNG_AREA_MM2` of that lung. Missing when the scan's first/last slice itself holds at least
  :data:`MIN_LUNG_AREA_MM2` of that lung (cut off). One rule, :func:`lung_ends`, for these levels and the
  scan's coverage (``scoring.quantify.edge_cut``), and the scoring settles them on its own mask
  (:func:`settle_lung_ends`), so that result.json, levels.png, ``apex_covered``/``base_covered``,
  ``PARTIAL_LUNG_COVERAGE`` and the zones' missing status agree. A base's z follows the aerated
  recess tips below the mask (:func:`aerated_lung`, HU < -400, <= 15 mm), which the mask leaves out;
  where that tissue runs on to the bottom slice (a lung the mask ends above, or gas under it: a
  stomach bubble) the base is the mask's own, with low confidence and a note saying so (it once made
  the base "cut off" where the coverage saw the lung whole), and flagged ``LANDMARK_UNCERTAIN``: the lung may
  run out of the scan. The network leaves the last slices of a lung that runs out of the scan's bottom out of its
  mask (itkelastix00: both bases, lung_pet_ct_dx_A0002: the left; ``scripts/cut_coverage.py``), so its coverage
  says "covered" there.

What is estimated (constants calibrated on reference.csv, see :data:`CALIBRATION`):

* ``aortic_arch``: carina + 26 mm. The arch is soft tissue like its neighbours on non-contrast CT,
  and the offset from the carina varies little (22-30 mm over the six reference scans).
* ``ipv_right``/``ipv_left``/``ipv``: the mean of two estimates, a fixed fraction of the way from
  the carina down to the mean dome level and a fixed offset below the carina; the fraction alone where that mean
  would reach the domes (:func:`estimate_ipv`); with both domes below the scan (a scan cut above the diaphragm), the
  offset below the carina alone, flagged ``LANDMARK_ESTIMATED:ipv``, and missing where it lies below the scan
  (:func:`ipv_level`).
  Non-contrast veins cannot be followed reliably into the left atrium.
* Any detected level that fails (no airway, no bone, implausible result) falls back on an estimate
  from the carina, the domes or the lung extent, and is reported as ``estimated``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from segmentation.base import LEFT_LUNG, RIGHT_LUNG

log = logging.getLogger(__name__)

Spacing = tuple[float, float, float]

#: Calibration constants (mm or fractions), from ../shared/data/landmarks/reference.csv (six scans).
#: Each is the mean over the reference scans where the level is present; see docs/scoring.md.
CALIBRATION: dict[str, float] = {
    # level - carina (mm, + cranial)
    "aortic_arch_from_carina_mm": 26.3,
    "suprasternal_notch_from_carina_mm": 64.0,
    "bronchus_intermedius_from_carina_mm": -20.7,
    # bronchus intermedius below the detected right upper-lobe take-off (mm)
    "bronchus_intermedius_from_rul_mm": -14.4,
    # IPV = carina - f * (carina - mean dome level)
    "ipv_right_fraction": 0.68,
    "ipv_left_fraction": 0.62,
    "ipv_fraction": 0.64,
    # IPV - carina (mm); the IPV estimate is the mean of this offset and the fraction above
    "ipv_right_from_carina_mm": -60.2,
    "ipv_left_from_carina_mm": -54.6,
    "ipv_from_carina_mm": -56.7,
    # left dome below right dome (mm), used only when one dome is not found
    "dome_left_from_right_mm": -23.0,
    # carina at this fraction of the way from the higher apex to the lower base
    "carina_fraction_apex_to_base": 0.29,
}
MIN_LUNG_AREA_MM2 = 5.0
BONE_HU = 200.0
BRONCHUS_HU = (-900.0, -950.0, -980.0)  # tried in order until the tree does not leak
AERATED_HU = -400.0
#: the domes: "aerated" lung is below this HU (:func:`diaphragm_lung`; -300 to -200 HU is a plateau on the six reference
#: chests for the classical masks, -300 the best value for the network's)
DOME_AERATED_HU = -300.0
#: the domes: dense lung under a column's aerated lung up to the first height (mm) is the interface; a patch of
#: columns with up to the second under it, away from the lung's edge, is a lens (:func:`diaphragm_lung`)
DOME_LENS_MM = (3.0, 25.0)
#: the domes: a lens is a patch of columns that stays this far (mm) inside the edge of the lung's footprint
DOME_EDGE_MM = 4.5
#: the domes: a dome read from the mask's floor more than this (mm) below the dome read over a lens
#: (:func:`diaphragm_lung`) is uncertain (six real chests, network masks: ricord_covid_419639's right dome 12.0 mm;
#: the others 0-4.6 mm; classical masks 0-1.5 mm)
DOME_UNCERTAIN_MM = 5.0
#: the words that mark an uncertain dome's note (and give it the flag LANDMARK_UNCERTAIN)
DOME_UNCERTAIN_NOTE = "uncertain, a second reading"
#: the words that mark an uncertain base's note (and give it the flag LANDMARK_UNCERTAIN): aerated tissue under the
#: lung mask runs on to the scan's bottom slice
BASE_UNCERTAIN_NOTE = "the base may lie below the scan"
#: right dome: heart border read in this slab above the current dome estimate (mm), and passes
DOME_HEART_SLAB_MM = (10.0, 30.0)
DOME_RIGHT_PASSES = 2
#: left dome: heart border read in this slab above the median floor of the left lung's central columns (mm)
DOME_LEFT_HEART_SLAB_MM = (25.0, 45.0)
#: ... unless more of its central columns than this share reach the scan's bottom slice (then: 0-20 mm above the
#: right dome)
DOME_LEFT_CENSORED_SHARE = 0.25
#: notch: bone must cross the trachea's x within this half-width (mm); plausible height above the carina (mm)
NOTCH_MIDLINE_HALF_WIDTH_MM = 5.0
NOTCH_ABOVE_CARINA_MM = (30.0, 90.0)
#: note of a notch missing because the sternal bone reaches the scan's top slice (no estimate from the carina then)
MANUBRIUM_AT_TOP = "manubrium reaches the top of the scan"


@dataclass
class Landmark:
    """One level: z in patient coordinates (mm), how it was found and how sure we are."""

    name: str
    z_mm: float | None
    method: str  # "detected" | "estimated" | "missing" | "reader" (set by a reader: apply_reader_levels)
    confidence: str  # "high" | "medium" | "low"
    note: str = ""
    #: a level set by a reader, or placed again from a reader's levels: ctscore's own z, method and confidence before
    #: (None: ctscore had none, or the level owes nothing to a reader)
    ctscore_z_mm: float | None = None
    ctscore_method: str | None = None
    ctscore_confidence: str | None = None
    #: an uncertain dome's second reading (``LANDMARK_UNCERTAIN``: :func:`detect_landmarks`), drawn dotted in levels.png
    second_z_mm: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.method != "reader" and self.ctscore_method is None:  # only a level a reader changed says what it
            for k in ("ctscore_z_mm", "ctscore_method", "ctscore_confidence"):  # replaced
                d.pop(k)
        if self.second_z_mm is None:
            d.pop("second_z_mm")
        return d


#: Source slices thicker than this (mm): a level detected on the interpolated working grid is no surer than half a slice.
THICK_SLICE_MM = 5.0


def temper_for_thick_slices(landmarks: dict[str, Landmark], slice_step_mm: float) -> None:
    """On source slices more than :data:`THICK_SLICE_MM` apart, the levels detected with high confidence (on the
    finer working grid the series was interpolated to) are lowered to medium, with the uncertainty in the note:
    an 8 mm series places an apex or a carina only to within half a slice."""
    if not slice_step_mm > THICK_SLICE_MM:
        return
    for lm in landmarks.values():
        if lm.method == "detected" and lm.confidence == "high":
            lm.confidence = "medium"
            lm.note = f"{lm.note}; to within half a {slice_step_mm:.1f} mm source slice".lstrip("; ")


def _missing(name: str, note: str) -> Landmark:
    return Landmark(name, None, "missing", "low", note)


def _k_of(z_mm: np.ndarray, z: float) -> int:
    """Index of the slice nearest to patient z."""
    return int(np.argmin(np.abs(np.asarray(z_mm) - z)))


# ----------------------------------------------------------------------------------------- airway
def airway_lumen(airway: np.ndarray | None, hu: np.ndarray | None, spacing: Spacing, depth_mm: float = 70.0,
                 half_width_mm: float = 70.0, max_extra_ml: float = 15.0) -> tuple[np.ndarray | None, str]:
    """Trachea and central bronchi: the segmenter's airway, extended below it by region growing.

    From the segmenter's airway (seed), voxels below :data:`BRONCHUS_HU` connected to it are added
    inside a box reaching ``depth_mm`` below the airway and ``half_width_mm`` around the trachea.
    Thresholds are tried in order; one that adds more than ``max_extra_ml`` leaks into the lungs.
    Returns (lumen, note); without ``hu`` the segmenter's airway is returned as it is."""
    if airway is None or not airway.any():
        return None, "no airway segmented"
    if hu is None:
        return airway.astype(bool), "segmenter airway"
    ks = np.nonzero(airway.any(axis=(1, 2)))[0]
    k_lo = int(ks.min())
    _, ys, xs = np.nonzero(airway[k_lo:k_lo + max(1, int(round(30 / spacing[0])))])
    cy, cx = float(np.median(ys)), float(np.median(xs))
    lo = max(0, k_lo - int(round(depth_mm / spacing[0])))
    ry, rx = int(round(half_width_mm / spacing[1])), int(round(half_width_mm / spacing[2]))
    box = (slice(lo, hu.shape[0]), slice(max(0, int(cy) - ry), int(cy) + ry),
           slice(max(0, int(cx) - rx), int(cx) + rx))
    seed = airway[box].astype(bool)
    vox_ml = float(np.prod(spacing)) / 1000.0
    for thr in BRONCHUS_HU:
        air = (hu[box] < thr) | seed
        lab, _ = ndi.label(air)
        ids = np.unique(lab[seed])
        grown = np.isin(lab, ids[ids > 0])
        extra = float((grown & ~seed).sum()) * vox_ml
        if extra <= max_extra_ml:
            out = np.zeros(hu.shape, bool)
            out[box] = grown
            return out, f"airway grown below {thr:.0f} HU"
        log.debug("airway growth leaks at %s HU (%.1f mL)", thr, extra)
    return airway.astype(bool), "segmenter airway (growth leaked)"


def detect_carina(airway: np.ndarray | None, z_mm: np.ndarray, spacing: Spacing, min_area_mm2: float = 10.0,
                  min_trachea_mm: float = 20.0, persist: int = 2, min_sep_mm: float = 10.0,
                  max_gap_mm: float = 10.0, below_mm: float | None = None, max_lost_mm: float = 10.0) -> Landmark:
    """The lowest slice where the airway is still one lumen, walking down the trachea.

    A division counts when two lumina of at least ``min_area_mm2``, at least ``min_sep_mm`` apart
    left-right, are seen in ``persist`` + 1 consecutive slices after at least ``min_trachea_mm`` of
    one lumen (so the larynx and pharynx above do not count). Both lumina must lie within
    ``max_gap_mm`` of the airway they come from in the slice above (the largest lumen, the trachea,
    or the two lumina of the division): a separate lumen beside the trachea (a lung bronchus the
    growth reached, oesophageal gas) is not a division. A division above ``below_mm`` (the highest lung
    apex: the larynx and pharynx of a scan that reaches the neck) is not the carina either; the walk goes
    on below it. Slices without airway over at most ``max_lost_mm`` (a lumen filled or lost for a few slices) are
    bridged. Reported at the centre of the last one-lumen slice (the reference convention).

    Missing when no division qualifies; when a lasting division was passed over only because the one lumen above it
    was shorter than ``min_trachea_mm`` (a scan starting less than that above the carina), the note says so, with
    the lengths, instead of "airway never divides"."""
    if airway is None or not airway.any():
        return _missing("carina", "no airway segmented")
    pix = spacing[1] * spacing[2]
    zs = np.nonzero(airway.any(axis=(1, 2)))[0]

    def near(lab: np.ndarray, parent: np.ndarray) -> np.ndarray:
        """Labels of the lumina within ``max_gap_mm`` of ``parent``."""
        close = ndi.distance_transform_edt(~parent, sampling=spacing[1:]) <= max_gap_mm
        return np.unique(lab[close & (lab > 0)])

    def division(k: int, parent: np.ndarray | None) -> np.ndarray | None:
        """The two lumina of slice ``k`` near ``parent`` when they make a division, else None."""
        lab, n = ndi.label(airway[k])
        if n < 2:
            return None
        areas = np.bincount(lab.ravel())[1:] * pix
        if parent is not None and parent.any():
            areas[np.setdiff1d(np.arange(n), near(lab, parent) - 1)] = 0.0
        big = np.argsort(areas)[::-1][:2]
        if areas[big[1]] < min_area_mm2:
            return None
        xa = np.nonzero(lab == big[0] + 1)[1].mean()
        xb = np.nonzero(lab == big[1] + 1)[1].mean()
        if abs(xa - xb) * spacing[2] < min_sep_mm:
            return None
        return (lab == big[0] + 1) | (lab == big[1] + 1)

    def persists(k: int, kids: np.ndarray) -> bool:
        for j in range(1, persist + 1):
            kids = division(k - j, kids) if k - j >= 0 else None
            if kids is None:
                return False
        return True

    run = 0
    parent = None
    lost = 0
    # for the note: (z, mm of one lumen above it, whether that lumen starts at the airway's top) of the first lasting
    # division passed over for too short a lumen above it
    short: tuple[float, float, bool] | None = None
    first_run = True  # the lumen followed starts at the top of the airway (no division or long loss above)
    for k in range(zs.max(), zs.min() - 1, -1):  # z index grows cranially: walk downwards
        if not airway[k].any():
            # a lumen lost over a few slices (secretions, a tube's cuff, a slice where the threshold loses it) does
            # not start the trachea anew: its length above still counts (reset, the carina below it was missed)
            lost += 1
            if lost * spacing[0] > max_lost_mm:
                run, parent = 0, None
                first_run = False
            continue
        lost = 0
        kids = division(k, parent)
        if kids is not None:
            if (run * spacing[0] >= min_trachea_mm and (below_mm is None or z_mm[k + 1] <= below_mm)
                    and persists(k, kids)):
                return Landmark("carina", float(z_mm[k + 1]), "detected", "high",
                                "last slice where the airway is one lumen")
            if (short is None and run > 0 and run * spacing[0] < min_trachea_mm
                    and (below_mm is None or z_mm[k + 1] <= below_mm) and persists(k, kids)):
                # for the note only: the division is not taken (the larynx and pharynx also divide after a short
                # lumen), but "never divides" sent readers looking for an airway fault
                short = (float(z_mm[k + 1]), run * spacing[0], first_run)
            run, parent = 0, kids
            first_run = False
        else:
            run += 1
            # follow the trachea: the lumina near the one above (all of it starts at the largest lumen)
            lab, _ = ndi.label(airway[k])
            ids = near(lab, parent) if parent is not None and parent.any() else np.array([], int)
            parent = np.isin(lab, ids) if ids.size else lab == int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
    if short is not None:
        z, length, from_top = short
        if from_top:
            top = "the scan's top slice" if zs.max() == airway.shape[0] - 1 else "the top of the airway found"
            return _missing("carina", f"the trachea visible in the scan is shorter than the minimum: {length:.1f} mm "
                                      f"of one lumen from {top} down to its division at z = {z:.1f} mm, under the "
                                      f"{min_trachea_mm:g} mm of single trachea a carina needs (min_trachea_mm): a "
                                      f"scan starting that close above the carina")
        return _missing("carina", f"the airway divides at z = {z:.1f} mm after only {length:.1f} mm of one lumen "
                                  f"below another division, under the {min_trachea_mm:g} mm of single trachea a "
                                  f"carina needs (min_trachea_mm)")
    return _missing("carina", "airway never divides")


def trachea_centre(airway: np.ndarray | None, k_carina: int, spacing: Spacing) -> tuple[float, float] | None:
    """(y, x) index of the trachea's centre 10-30 mm above the carina."""
    if airway is None:
        return None
    k0 = min(airway.shape[0] - 1, k_carina + int(round(10 / spacing[0])))
    k1 = min(airway.shape[0], k_carina + int(round(30 / spacing[0])) + 1)
    sub = airway[k0:k1]
    if not sub.any():
        return None
    _, ys, xs = np.nonzero(sub)
    return float(ys.mean()), float(xs.mean())


def detect_right_bronchi(tree: np.ndarray, k_carina: int, centre: tuple[float, float], z_mm: np.ndarray,
                         spacing: Spacing, min_area_mm2: float = 4.0) -> tuple[int | None, int | None, str]:
    """Slices of the right upper-lobe take-off and of the end of the bronchus intermedius.

    Walks down the right main bronchus (the right lumen below the carina, patient right = smaller
    x). The take-off is the first slice where a lumen lies more than 12 mm lateral of the main
    bronchus' medial part, or where the main lumen widens laterally by more than that. The
    intermedius is then followed (largest lumen overlapping the previous one) until it divides into
    two lumina of at least ``min_area_mm2`` each or is lost. Returns (k_rul, k_end, note)."""
    pix = spacing[1] * spacing[2]
    cx = centre[1]
    lat_px = 12.0 / spacing[2]
    prev = None
    k_rul = None
    main_x = None
    for k in range(k_carina - 1, max(-1, k_carina - int(round(60 / spacing[0]))), -1):
        sl = tree[k].copy()
        sl[:, int(round(cx)):] = False  # patient right only
        lab, n = ndi.label(sl)
        if n == 0:
            return k_rul, (k + 1 if k_rul is not None else None), "right bronchial lumen lost"
        areas = np.bincount(lab.ravel())[1:] * pix
        idx = [i + 1 for i in range(n) if areas[i] >= min_area_mm2]
        if not idx:
            return k_rul, (k + 1 if k_rul is not None else None), "right bronchial lumen lost"
        if prev is not None:
            ov = [i for i in idx if (lab == i)[prev].any()]
        else:
            ov = idx
        if not ov:
            return k_rul, (k + 1 if k_rul is not None else None), "right bronchial lumen lost"
        if k_rul is None:
            main = max(ov, key=lambda i: areas[i - 1])
            xs = np.nonzero(lab == main)[1]
            if main_x is None:
                main_x = float(np.percentile(xs, 80))  # medial part of the main bronchus
            lateral = [i for i in idx if np.nonzero(lab == i)[1].mean() < main_x - lat_px - 3]
            if xs.min() < main_x - 2 * lat_px or lateral:
                k_rul = k
                # from here follow the intermedius: the most medial-posterior big lumen
                cand = [i for i in ov if i not in lateral] or ov
                main = max(cand, key=lambda i: np.nonzero(lab == i)[1].mean())
            prev = ndi.binary_dilation(lab == main, iterations=2)
            continue
        big = [i for i in ov if areas[i - 1] >= min_area_mm2]
        if len(big) >= 2 and z_mm[k_rul] - z_mm[k] >= 8.0:
            return k_rul, k, "intermedius divides"
        main = max(ov, key=lambda i: areas[i - 1])
        prev = ndi.binary_dilation(lab == main, iterations=2)
    return k_rul, None, "intermedius not ended within 60 mm"


# ------------------------------------------------------------------------------------------- bone
def _clavicular_heads(anterior: np.ndarray, x_mid: float, spine_x: float | None, spacing: Spacing,
                      half_width_mm: float = 30.0, min_area_mm2: float = 40.0, min_gap_mm: float = 2.0,
                      max_offset_mm: float = 16.0) -> bool:
    """True when the bone in front of the trachea is two heads with soft tissue between them, near the midline.

    ``anterior`` is a slice's bone mask in front of the trachea. At and above the suprasternal notch the
    midline holds the two clavicular heads with the notch between them; below it the manubrium lies
    between (or joins) them. A rotated patient puts one head across the trachea's and the spine's x,
    which the midline test alone takes for the manubrium (ricord_covid_419639: 15 mm too high).
    Bone pieces of at least ``min_area_mm2`` reaching within ``half_width_mm`` of ``x_mid`` count; the
    slice is the heads' when there are exactly two, at least ``min_gap_mm`` apart with no bone between them,
    the gap's centre within ``max_offset_mm`` of ``x_mid`` or of the spine's x (16 mm: ricord_covid_419639's gap lies
    9.6 mm from its spine's x, 12.4 mm when the scan is rotated 2 degrees; with 12 mm the notch then read 15 mm
    high, a stability audit)."""
    lab, n = ndi.label(anterior)
    if n < 2:
        return False
    areas = np.bincount(lab.ravel()) * (spacing[1] * spacing[2])
    areas[0] = 0.0
    x0 = int(max(0, x_mid - half_width_mm / spacing[2]))
    x1 = int(x_mid + half_width_mm / spacing[2]) + 1
    near = np.unique(lab[:, x0:x1])
    big = [int(i) for i in near if i > 0 and areas[i] >= min_area_mm2]
    if len(big) != 2:
        return False
    cols = [np.nonzero((lab == i).any(axis=0))[0] for i in big]
    (ra, rb), (la, lb) = sorted((int(c.min()), int(c.max())) for c in cols)
    if (la - rb - 1) * spacing[2] < min_gap_mm or anterior[:, rb + 1:la].any():
        return False  # touching, or bone between them (a manubrium's cortex broken into pieces)
    mid = 0.5 * (rb + la)
    refs = [x_mid] if spine_x is None else [x_mid, spine_x]
    return bool(min(abs(mid - r) for r in refs) * spacing[2] <= max_offset_mm)


def detect_suprasternal_notch(hu: np.ndarray, k_carina: int, centre: tuple[float, float], z_mm: np.ndarray,
                              spacing: Spacing, min_area_mm2: float = 5.0, box_half_width_mm: float = 10.0,
                              gap_mm: float = 6.0, airway: np.ndarray | None = None,
                              midline_half_width_mm: float = NOTCH_MIDLINE_HALF_WIDTH_MM) -> Landmark:
    """Top of the manubrium at the midline: sternal bone followed cranially from below the notch.

    With ``airway`` (the tracheal lumen), the bone must also cross the midline, within
    ``midline_half_width_mm`` of both the trachea's x in that slice and the spine's x: the clavicular
    heads, which rise above the notch on both sides of it, do not cross it, even when the box drifts
    or the trachea is deviated."""
    name = "suprasternal_notch"
    nz = hu.shape[0]
    pix = spacing[1] * spacing[2]
    cy, cx = centre
    dz = spacing[0]
    bone = hu > BONE_HU
    # 1. the sternum 5-40 mm above the carina: largest bone blob anterior to the trachea near the midline
    x0, x1 = int(max(0, cx - 30 / spacing[2])), int(cx + 30 / spacing[2]) + 1
    y1 = int(cy - 15 / spacing[1])
    if y1 <= 0:
        return _missing(name, "trachea at the front edge of the image")
    start = None
    for k in range(min(nz - 1, k_carina + int(round(5 / dz))), min(nz, k_carina + int(round(40 / dz)) + 1)):
        lab, n = ndi.label(bone[k, :y1, x0:x1])
        if n == 0:
            continue
        areas = np.bincount(lab.ravel())[1:] * pix
        i = int(np.argmax(areas))
        if areas[i] >= 40.0:
            ys, xs = np.nonzero(lab == i + 1)
            start = (k, float(xs.mean() + x0), float(ys.min()))
            break
    if start is None:
        return _missing(name, "no sternum found anterior to the trachea")
    k, xs_c, _ = start
    hw = box_half_width_mm / spacing[2]
    mw = midline_half_width_mm / spacing[2]
    # second midline marker: the spine (largest bone behind the trachea, 5-60 mm above the carina,
    # median x); the trachea can be deviated, the spine can be rotated, the notch must cross both
    spine_x = None
    if airway is not None:
        sx = []
        for kk in range(min(nz - 1, k_carina + int(round(5 / dz))), min(nz, k_carina + int(round(60 / dz)) + 1)):
            if not airway[kk].any():
                continue
            ys_, xs_ = np.nonzero(airway[kk])
            tyy, txx = int(ys_.max()), float(xs_.mean())
            xa0 = int(max(0, txx - 30 / spacing[2]))
            lab, n = ndi.label(bone[kk, tyy:int(tyy + 60 / spacing[1]), xa0:int(txx + 30 / spacing[2])])
            if n:
                a = np.bincount(lab.ravel())
                a[0] = 0
                sx.append(float(np.nonzero(lab == a.argmax())[1].mean()) + xa0)
        if sx:
            spine_x = float(np.median(sx))
            log.debug("notch midline: spine x %.1f, trachea x %.1f", spine_x, cx)
    ymax = int(cy - 8 / spacing[1])
    last_bone = k
    gap = 0
    while k + 1 < nz:
        k += 1
        xa, xb = int(max(0, xs_c - hw)), int(xs_c + hw) + 1
        sl = bone[k, :ymax, xa:xb]
        area = sl.sum() * pix
        if airway is not None and airway[k].any():
            for tx in (float(np.nonzero(airway[k])[1].mean()), spine_x):
                if tx is None:
                    continue
                ma, mb = int(max(0, tx - mw)), int(tx + mw) + 1
                area = min(area, bone[k, :ymax, ma:mb].sum() * pix)
        if area >= min_area_mm2 and _clavicular_heads(bone[k, :ymax], xs_c, spine_x, spacing):
            area = 0.0  # the notch lies between the two heads: above the manubrium, however rotated
        if area >= min_area_mm2:
            last_bone, gap = k, 0
            xs_c = 0.8 * xs_c + 0.2 * (np.nonzero(sl)[1].mean() + xa)  # follow a rotated sternum slowly
        else:
            gap += 1
            if gap * dz >= gap_mm:
                break
    if last_bone >= nz - 1:
        return _missing(name, f"{MANUBRIUM_AT_TOP}: the notch is above it")
    return Landmark(name, float(z_mm[last_bone]), "detected", "medium",
                    "top of the sternal bone in a midline box, followed up from below the notch")


# ------------------------------------------------------------------------------------------- lung
def _lowest_held_slice(lung: np.ndarray, spacing: Spacing) -> int | None:
    """Index of the lowest slice holding :data:`MIN_LUNG_AREA_MM2` of ``lung`` (lung_ends' rule), else of the
    lowest slice holding any of it; None for an empty mask."""
    area = lung.reshape(lung.shape[0], -1).sum(axis=1) * float(spacing[1]) * float(spacing[2])
    ks = np.nonzero(area >= MIN_LUNG_AREA_MM2)[0]
    if ks.size == 0:
        ks = np.nonzero(area > 0)[0]
    return int(ks.min()) if ks.size else None


def _air_below(seed: np.ndarray, hu: np.ndarray, k_from: int, max_extra_mm: float,
               spacing: Spacing) -> Iterator[tuple[int, np.ndarray]]:
    """Aerated tissue (HU < :data:`AERATED_HU`) followed downwards from the slice below ``k_from``, slice by slice:
    each slice's aerated components that overlap the slice above (``seed`` first), within 3 pixels of it; yields
    (slice index, its part) until a slice has none, ``max_extra_mm`` below ``k_from`` or slice 0."""
    prev = seed
    for k in range(k_from - 1, max(0, k_from - int(round(max_extra_mm / spacing[0]))) - 1, -1):
        air = hu[k] < AERATED_HU
        lab, n = ndi.label(air)
        ids = np.unique(lab[prev & air])
        ids = ids[ids > 0]
        if n == 0 or ids.size == 0:
            return
        cur = np.isin(lab, ids) & ndi.binary_dilation(prev, iterations=3)
        if not cur.any():
            return
        yield k, cur
        prev = cur


def aerated_lung(lungs: np.ndarray, hu: np.ndarray | None, side: int, max_extra_mm: float = 15.0,
                 spacing: Spacing = (1.5, 1.5, 1.5)) -> np.ndarray:
    """The lung mask of one side, extended caudally into aerated recess tips (HU < -400) that the
    mask cut off: slice by slice downwards, aerated voxels overlapping the slice above (:func:`_air_below`), from the
    lowest slice that holds the lung by lung_ends' rule (a few stray voxels of the mask below it, in the scan's
    bottom slice say, neither stop the extension nor start it from a speck).

    Used for the domes' floor map and a base's z; the extension also follows gas under the lung (a stomach
    bubble), so "cut off by the scan" is read from the mask itself (:func:`lung_ends`)."""
    m = lungs == side
    if hu is None or not m.any():
        return m
    kb = _lowest_held_slice(m, spacing)
    out = m.copy()
    for k, cur in _air_below(m[kb], hu, kb, max_extra_mm, spacing):
        out[k] = cur
    return out


def aerated_below_reaches_bottom(lung: np.ndarray, hu: np.ndarray, spacing: Spacing = (1.5, 1.5, 1.5),
                                 seed_mm: float = 6.0, max_extra_mm: float = 15.0) -> bool:
    """Whether aerated tissue under one lung mask runs on to the scan's bottom slice (index 0, z growing
    cranially), followed as :func:`aerated_lung` does but seeded from the footprint of the mask's lowest ``seed_mm``
    (from its lowest slice holding :data:`MIN_LUNG_AREA_MM2`), not from that slice alone: the network can end a lung
    it leaves out of a cut scan in a tip of a few voxels lying in dense tissue, with the aerated lung beside it
    (ricord_covid_419639 cut 6 mm inside its bases). Only for the base's flag (``LANDMARK_UNCERTAIN``): the levels
    keep :func:`aerated_lung`."""
    kb = _lowest_held_slice(lung, spacing)
    if kb is None or kb == 0:
        return False
    seed = lung[kb:kb + max(1, int(round(seed_mm / spacing[0])))].any(axis=0)
    last = None
    for k, cur in _air_below(seed, hu, kb, max_extra_mm, spacing):
        last = k, cur
    return (last is not None and last[0] == 0
            and float(last[1].sum()) * float(spacing[1]) * float(spacing[2]) >= MIN_LUNG_AREA_MM2)


#: Levels that are always placed from the others (no detector: non-contrast CT does not show them reliably). Their
#: method is "estimated" on every scan, so they raise no LANDMARK_ESTIMATED flag (a flag every scan carries tells a
#: reviewer nothing and buries the estimates that are a detector's fallback); result.json and the pictures still
#: show them as estimated (dashed).
ESTIMATED_BY_DESIGN = frozenset({"bronchus_intermedius", "aortic_arch", "ipv_right", "ipv_left", "ipv"})


def estimated_flags(landmarks: Mapping[str, Landmark]) -> list[str]:
    """``LANDMARK_ESTIMATED:<name>`` for each level a detector was meant to find but that was estimated instead
    (e.g. a carina from lung extent, a dome from the other, the notch's fallback); not for
    :data:`ESTIMATED_BY_DESIGN`, except the ``ipv`` the zones are split at when it was placed from the carina alone
    (:func:`ipv_level`: both domes below the scan), which is less sure than the usual estimate."""
    return [f"LANDMARK_ESTIMATED:{name}" for name, lm in landmarks.items()
            if lm.method == "estimated" and (name not in ESTIMATED_BY_DESIGN or
                                             (name == "ipv" and IPV_CARINA_ONLY_NOTE in (lm.note or "")))]


def uncertain_flags(landmarks: Mapping[str, Landmark]) -> list[str]:
    """``LANDMARK_UNCERTAIN:<name>`` for each dome that a second reading, over a lens of dense tissue under the
    aerated lung, puts more than :data:`DOME_UNCERTAIN_MM` higher, and for each base whose aerated tissue below the
    lung mask runs on to the scan's bottom slice (the lung may run out of the scan; :func:`detect_landmarks`)."""
    return [f"LANDMARK_UNCERTAIN:{name}" for name, lm in landmarks.items()
            if lm.z_mm is not None and any(m in (lm.note or "") for m in (DOME_UNCERTAIN_NOTE, BASE_UNCERTAIN_NOTE))]


def lung_ends(lung: np.ndarray, z_mm: np.ndarray, voxel_ml: float) -> tuple[float | None, float | None, bool, bool]:
    """(apex z, base z, cut at the top, cut at the bottom) of one lung mask: the one rule of the apex/base landmarks
    and of the scan's coverage (:func:`scoring.quantify.edge_cut`: ``apex_covered``/``base_covered``,
    ``PARTIAL_LUNG_COVERAGE``, the zones reaching past a cut-off end).

    A slice holds the lung when it holds at least :data:`MIN_LUNG_AREA_MM2` of it (stray voxels do not count; the
    pixel area is ``voxel_ml`` over the median slice step; a single-slice scan counts any voxel). Apex and base are
    the highest and lowest such slice's z; the lung is cut off at the top (bottom) when the top (bottom) slice
    itself holds it. The top slice is the one with the largest z, in either slice order. Apex and base are given
    even when cut off (the scan's edge slice then); the landmarks report them missing."""
    z_mm = np.asarray(z_mm, float)
    if not len(z_mm) or not lung.size:
        return None, None, False, False
    n = np.count_nonzero(lung.reshape(lung.shape[0], -1), axis=1)
    dz = float(np.median(np.abs(np.diff(z_mm)))) if len(z_mm) > 1 else 0.0
    pixel_mm2 = voxel_ml * 1000.0 / dz if dz > 0 else 0.0
    held = n * pixel_mm2 >= MIN_LUNG_AREA_MM2 if pixel_mm2 > 0 else n > 0
    i_top, i_bottom = (len(z_mm) - 1, 0) if z_mm[-1] >= z_mm[0] else (0, len(z_mm) - 1)
    cut_top, cut_bottom = bool(held[i_top]), bool(held[i_bottom])
    if not held.any():
        return None, None, cut_top, cut_bottom
    zs = z_mm[held]
    return float(zs.max()), float(zs.min()), cut_top, cut_bottom


def settle_lung_ends(landmarks: Mapping[str, Landmark], side: str,
                     ends: tuple[float | None, float | None, bool, bool], slice_step_mm: float = 0.0) -> None:
    """Bring ``apex_<side>`` and ``base_<side>`` in line with :func:`lung_ends` ``ends`` of the scoring's own lung
    mask (in place; levels not in ``landmarks`` are left out).

    The levels are found on the working grid, the coverage on the original grid (or, for tilted slices, on an axial
    reformat): an edge slice interpolated differently could make the two disagree. The scoring's decision stands:
    a lung cut off there has its level missing ("cut off by the scan"); one not cut off keeps a detected level, or
    gets the scoring mask's top/bottom slice where the level was missing (tempered on thick source slices as
    :func:`temper_for_thick_slices` does)."""
    apex, base, cut_top, cut_bottom = ends
    for kind, z, cut, edge in (("apex", apex, cut_top, "top"), ("base", base, cut_bottom, "bottom")):
        lm = landmarks.get(f"{kind}_{side}")
        if lm is None:
            continue
        if cut:
            new = _missing(lm.name, f"{kind} cut off by the scan")
        elif z is None:
            new = _missing(lm.name, "no lung")
        elif lm.method == "detected" and lm.z_mm is not None:
            continue
        else:
            new = Landmark(lm.name, z, "detected", "high", f"{edge} slice with >= 5 mm2 lung")
            temper_for_thick_slices({lm.name: new}, slice_step_mm)
        if (lm.z_mm, lm.method, lm.note) != (new.z_mm, new.method, new.note):
            log.info("%s: %s (%s) -> %s (%s), by the coverage of the scored lung mask", lm.name, lm.z_mm, lm.method,
                     new.z_mm, new.method)
        lm.z_mm, lm.method, lm.confidence, lm.note = new.z_mm, new.method, new.confidence, new.note


def heart_columns(lungs: np.ndarray, side: int, k_from: int, k_to: int, margin_px: int = 3) -> np.ndarray:
    """(y, x) columns medial to the lung's medial edge in slices ``k_from..k_to`` (the heart border).

    For each row y, columns on the midline side of the most medial lung voxel are excluded; rows
    without lung exclude nothing. The union over the slices is returned."""
    ny, nx = lungs.shape[1:]
    out = np.zeros((ny, nx), bool)
    xs = np.arange(nx)
    for k in range(max(0, k_from), min(lungs.shape[0], k_to + 1)):
        m = lungs[k] == side
        rows = np.nonzero(m.any(axis=1))[0]
        for y in rows:
            xi = np.nonzero(m[y])[0]
            if side == LEFT_LUNG:  # left lung: medial = smaller x
                out[y] |= xs < xi.min() + margin_px
            else:
                out[y] |= xs > xi.max() - margin_px
    return out


def central_columns(lung: np.ndarray, lo: float = 10.0, hi: float = 90.0) -> np.ndarray:
    """(y, x) columns inside the ``lo``-``hi`` percentile box of the lung's footprint."""
    has = lung.any(axis=0)
    ys, xs = np.nonzero(has)
    y0, y1 = np.percentile(ys, [lo, hi])
    x0, x1 = np.percentile(xs, [lo, hi])
    yy, xx = np.mgrid[: has.shape[0], : has.shape[1]]
    return (yy >= y0) & (yy <= y1) & (xx >= x0) & (xx <= x1)


#: the domes: the basal columns (:func:`basal_columns`) are the hull of the lung's footprint in its lowest
#: :data:`DOME_BASAL_SHARE` of height as the scan shows it, but never in less than :data:`DOME_BASAL_MM` above its
#: lowest slice. The share alone shrank with a scan cut at the top (normal001 cut 25 mm above the carina: its right
#: dome 12-13.5 mm lower, network or classical masks; an audit of 2026-12-07); the floor keeps the slab of a
#: whole adult lung (75 mm is 30 % of 250 mm) whatever the scan leaves of its top, and a taller lung keeps its share.
DOME_BASAL_SHARE = 0.3
DOME_BASAL_MM = 75.0


def basal_columns(lung: np.ndarray, spacing_z_mm: float, share: float = DOME_BASAL_SHARE,
                  min_mm: float = DOME_BASAL_MM) -> np.ndarray:
    """(y, x) columns inside the convex hull of the lung's footprint in its lowest ``share`` of height, or in the
    slab ``min_mm`` above its lowest slice where that is higher (slices ``spacing_z_mm`` apart; the recesses ring the
    dome there, and the heart lies mostly above).

    A share alone depends on how much of the lung the scan shows above the base: a scan cut at the top narrowed the
    slab and the columns (normal001's right dome 12 mm lower under a cut 25 mm above the carina). With the floor, a
    cut changes nothing on a lung up to ``min_mm`` / ``share`` (250 mm) high, and on a taller one only between its
    share and the floor (six real chests, cuts 25-60 mm above the carina: 0-1.5 mm). A lung less than about 150 mm
    high (a child's) has the slab reach half of it or more: the columns are then nearly the central box's, and the
    dome, the lower of the two readings (:func:`detect_dome`), can only err high, as that box's does."""
    from skimage.morphology import convex_hull_image

    ks = np.nonzero(lung.any(axis=(1, 2)))[0]
    kb, kt = int(ks.min()), int(ks.max())
    n = int(share * (kt - kb))
    if spacing_z_mm > 0:
        n = max(n, int(min_mm / float(spacing_z_mm)))
    return convex_hull_image(lung[kb: kb + n + 1].any(axis=0))


def diaphragm_lung(lung: np.ndarray, hu: np.ndarray | None, spacing: Spacing = (1.5, 1.5, 1.5)) -> np.ndarray:
    """The lung of the domes' second reading (slices in cranially growing order): the first, from the mask's floor,
    is reported; where this one puts a dome more than :data:`DOME_UNCERTAIN_MM` higher, that dome is uncertain.

    In each ``(y, x)`` column, the lung below its lowest aerated voxel (HU < :data:`DOME_AERATED_HU`) is dense lung or
    something a mask took in under the lung. It is left out (the column's floor is then the aerated lung's) where it
    is at most :data:`DOME_LENS_MM` [0] high (the partial-volume interface), and where it forms a lens: a connected
    patch of columns with more than that and at most :data:`DOME_LENS_MM` [1] under the aerated lung, none of them
    within :data:`DOME_EDGE_MM` (in rows and columns) of the edge of the lung's footprint (all slices). The network's
    mask bulges like that into the liver's dome (10-16 mm under the aerated lung of ricord_covid_419639 and
    normal001: read from the mask, right domes 15.8 and 11.2 mm too low). Consolidation that the mask rightly keeps
    looks the same: a dependent consolidation or a layer on the dome put this reading 10-36 mm too high on the six
    real chests (an audit of 2026-12-06), and a thin dense strip joining a bulge to the lung's edge keeps the bulge.
    That is why it only marks a dome uncertain and does not replace it. Without ``hu`` the lung is returned
    unchanged."""
    if hu is None or not lung.any():
        return lung
    aerated = lung & (hu < DOME_AERATED_HU)
    has = aerated.any(axis=0)
    under = np.where(has, (np.argmax(aerated, axis=0) - np.argmax(lung, axis=0)) * float(spacing[0]), 0.0)
    lo, hi = DOME_LENS_MM
    lens = has & (under > lo) & (under <= hi)
    if lens.any():
        foot = lung.any(axis=0)
        px = max(1, int(round(DOME_EDGE_MM / float(min(spacing[1], spacing[2])))))
        edge = foot & ~ndi.binary_erosion(foot, iterations=px, border_value=0)
        lab, _ = ndi.label(lens)
        lens &= ~np.isin(lab, np.unique(lab[edge & lens]))
    drop = has & ((under <= lo) | lens)
    k = np.arange(lung.shape[0])[:, None, None]
    return lung & ~(drop[None] & (k < np.argmax(aerated, axis=0)[None]))


#: share of a lung's diaphragm columns reaching the scan's bottom slice above which the dome is below the scan
#: (0.62-1.00 on real scans cut above the domes; 0.00-0.01 on whole scans, 0.09-0.27 on a phantom cut just
#: below its domes)
DOME_CUT_SHARE = 0.5
#: note of a dome missing because the lung runs out of the scan's bottom (no estimate from the other dome then): its
#: start, matched by the rules that read it
FLOOR_BELOW_SCAN = "lung floor below the scan"
#: ... and what that tells of the dome: most of the floor runs out of the scan, the dome itself may or may not be in it
DOME_MAY_BE_BELOW = "the dome may lie below the scan"


def detect_dome(lung: np.ndarray, name: str, z_mm: np.ndarray, exclude: np.ndarray | None = None,
                q: float = 90.0) -> Landmark:
    """Diaphragm dome: a high percentile (``q``) of the lung floor over the diaphragm columns.

    The floor of a column is its lowest lung voxel. Columns over the diaphragm are approximated two
    ways, both of which can only let in too-high floors (under-surfaces of the upper lobes, the
    heart): the central 10-90 % box of the footprint, and that box cut to the hull of the basal
    footprint (:func:`basal_columns`: its lowest 30 %, at least :data:`DOME_BASAL_MM`). The lower of the two
    results is kept. Columns in
    ``exclude`` (the heart, for the left lung) and columns where the lung reaches the scan's bottom
    are left out. Reported half a slice below the lowest lung voxel (the lung/diaphragm interface)."""
    if not lung.any():
        return _missing(name, "no lung")
    # a scan that stops above the diaphragm: most diaphragm columns run out of its bottom slice, and the
    # floors left (under the upper lobes, over the heart) are not the dome
    cols = lung.any(axis=0) & central_columns(lung)
    if lung[0].any() and cols.any():
        reach = float((lung[0] & cols).sum()) / float(cols.sum())
        if reach > DOME_CUT_SHARE:
            return _missing(name, f"{FLOOR_BELOW_SCAN} ({reach:.0%} of the diaphragm columns reach its "
                                  f"bottom slice): {DOME_MAY_BE_BELOW}")
    # columns whose lung reaches the bottom slice count with their floor there (censored): left out, they made the
    # high floors of a scan cut below the dome the percentile (a dome 20-40 mm too high); the percentile at
    # the bottom slice means the dome is not in the scan
    has = lung.any(axis=0)
    floor = np.argmax(lung, axis=0)
    ok = has & central_columns(lung)
    if exclude is not None:
        ok &= ~exclude
    ks = []
    dz = abs(float(z_mm[1] - z_mm[0])) if len(z_mm) > 1 else 0.0
    for sel in (ok, ok & basal_columns(lung, dz)):
        if sel.sum() >= 10:
            ks.append(int(np.percentile(floor[sel], q)))
    if not ks:
        return _missing(name, "too few lung columns over the diaphragm")
    if min(ks) <= 0:
        return _missing(name, f"{FLOOR_BELOW_SCAN} (the lung floor's percentile is its bottom slice): "
                              f"{DOME_MAY_BE_BELOW}")
    k = min(ks)
    note = "high percentile of the lung floor over the diaphragm columns"
    if exclude is not None:
        note += ", heart columns excluded"
    return Landmark(name, float(z_mm[k]) - 0.5 * dz, "detected", "medium", note)


# ------------------------------------------------------------------------------------------ main
def estimate_ipv(name: str, z_carina: float, z_dome: float, cal: Mapping[str, float] = CALIBRATION) -> Landmark:
    """The inferior pulmonary vein level ``name`` (``ipv_right``, ``ipv_left``, ``ipv``) from the carina and the mean
    dome: the mean of a fraction of the way down (scales with the chest) and a fixed offset below the carina (does
    not move with breathing; the better of the two on the reference scans, normal001 included, whose carina lies
    81 mm above its mean dome).

    Where the carina lies less than about 42 mm above the mean dome (lung volume loss, a raised hemidiaphragm,
    a dome found too high) that mean would fall at or below the domes and leave no lower zone: the veins drain
    above the diaphragm, so the fraction alone is used there, which always lies between the carina and the domes."""
    f, off = cal[f"{name}_fraction"], cal[f"{name}_from_carina_mm"]
    by_fraction = z_carina - f * (z_carina - z_dome)
    mean = 0.5 * by_fraction + 0.5 * (z_carina + off)
    if mean > z_dome:
        return Landmark(name, mean, "estimated", "low",
                        f"mean of {f:.2f} of the way from the carina to the mean dome and carina {off:+.0f} mm "
                        "(veins not traced without contrast)")
    return Landmark(name, by_fraction, "estimated", "low",
                    f"{f:.2f} of the way from the carina to the mean dome, {z_carina - z_dome:.0f} mm below it (with "
                    f"carina {off:+.0f} mm the level would be at or below the domes; veins not traced without contrast)")


#: the words that mark an IPV level placed from the carina alone (both domes below the scan: :func:`ipv_level`); the
#: ``ipv`` so placed is flagged ``LANDMARK_ESTIMATED:ipv`` (:func:`estimated_flags`), unlike the usual estimate
IPV_CARINA_ONLY_NOTE = "from the carina alone"


def domes_below_scan(landmarks: Mapping[str, Landmark]) -> bool:
    """Whether both domes are missing because their lungs run out of the scan's bottom (:data:`FLOOR_BELOW_SCAN`):
    a scan cut above the diaphragm. Not for a dome missing for another reason (not below the carina, no lung)."""
    lms = [landmarks.get(k) for k in ("dome_right", "dome_left")]
    return all(lm is not None and lm.z_mm is None and lm.note.startswith(FLOOR_BELOW_SCAN) for lm in lms)


def ipv_level(name: str, z_carina: float | None, domes: list[float], below_scan: bool = False,
              z_bottom: float | None = None, cal: Mapping[str, float] = CALIBRATION) -> Landmark:
    """The IPV level ``name`` from the carina and the domes found: :func:`estimate_ipv` from the mean dome. Where both
    domes are missing because the lungs run out of the scan's bottom (``below_scan``: :func:`domes_below_scan`, a
    scan cut above the diaphragm), the carina-offset half of that estimate alone (carina + ``<name>_from_carina_mm``,
    -56.7 mm for ``ipv``), low confidence, its note saying so (:data:`IPV_CARINA_ONLY_NOTE`): SCORING.md's middle
    zone runs from the carina down to the IPV, and a scan that stops between the IPV and the domes shows all of it
    (normal001 cut at -200.5 mm lost both middle zones; an audit of 2026-12-07). Missing there where that level lies
    below ``z_bottom`` (the scan's lowest slice: the middle zone reaches past the scan), without the carina, and
    without a dome for another reason (a floor above the carina that is not a dome: what the domes are is unknown)."""
    if z_carina is None:
        return _missing(name, "needs the carina")
    if domes:
        return estimate_ipv(name, z_carina, float(np.mean(domes)), cal)
    if not below_scan:
        return _missing(name, "needs the carina and a dome")
    off = cal[f"{name}_from_carina_mm"]
    z = z_carina + off
    if z_bottom is not None and z < z_bottom:
        return _missing(name, f"no dome found, and carina {off:+.1f} mm ({z:.1f} mm) lies below the scan "
                              f"({z_bottom:.1f} mm)")
    return Landmark(name, z, "estimated", "low",
                    f"carina {off:+.1f} mm (reference mean), {IPV_CARINA_ONLY_NOTE}: the domes may lie below the scan "
                    "(the lungs run out of its bottom); veins not traced without contrast")


def _read_domes(sides: Mapping[int, np.ndarray], lungs: np.ndarray, z_mm: np.ndarray,
                spacing: Spacing) -> dict[str, Landmark]:
    """Both domes from the lungs ``sides`` (by label) whose floors they are read from; the heart's columns from
    the segmenter's ``lungs``."""
    domes: dict[str, Landmark] = {}
    domes["dome_right"] = detect_dome(sides[RIGHT_LUNG], "dome_right", z_mm)
    # The right lung also lies on the heart (anterior-medial), whose top passes the column filter.
    # Refine twice: exclude the columns medial to the right lung's heart border, read in the slab
    # DOME_HEART_SLAB_MM above the current dome estimate (above the diaphragm, at the heart).
    for _ in range(DOME_RIGHT_PASSES):
        if domes["dome_right"].z_mm is None:
            break
        k = _k_of(z_mm, domes["dome_right"].z_mm)
        lo_mm, hi_mm = DOME_HEART_SLAB_MM
        ex = heart_columns(lungs, RIGHT_LUNG, k + int(round(lo_mm / spacing[0])), k + int(round(hi_mm / spacing[0])))
        refined = detect_dome(sides[RIGHT_LUNG], "dome_right", z_mm, exclude=ex)
        if refined.z_mm is None:
            break
        domes["dome_right"] = refined
    # The left lung lies on the heart over a large part of its floor: its heart border is read in the slab
    # DOME_LEFT_HEART_SLAB_MM above the median floor of its own central columns (near its dome). Read only at the
    # right dome, it was lost with the right dome (a collapsed or absent right lung: the left dome at the heart's
    # top, 80 mm too high) and misplaced when the two domes differ (eventration: above the heart, or below a raised
    # left dome, excluding the dome itself). The right dome's slab (0-20 mm above it) stays in use where the median
    # floor is not the lung's own: more than DOME_LEFT_CENSORED_SHARE of the columns reach the scan's bottom slice.
    kr = _k_of(z_mm, domes["dome_right"].z_mm) if domes["dome_right"].z_mm is not None else None
    excl = None
    left = sides[LEFT_LUNG]
    sel = left.any(axis=0) & central_columns(left) if left.any() else None
    if sel is not None and sel.any() and (left[0] & sel).sum() <= DOME_LEFT_CENSORED_SHARE * sel.sum():
        k_med = int(np.median(np.argmax(left, axis=0)[sel]))
        lo_mm, hi_mm = DOME_LEFT_HEART_SLAB_MM
        excl = heart_columns(lungs, LEFT_LUNG, k_med + int(round(lo_mm / spacing[0])),
                             k_med + int(round(hi_mm / spacing[0])))
    elif kr is not None:
        excl = heart_columns(lungs, LEFT_LUNG, kr, kr + int(round(20 / spacing[0])))
    domes["dome_left"] = detect_dome(left, "dome_left", z_mm, exclude=excl)
    return domes


def detect_landmarks(lungs: np.ndarray, airway: np.ndarray | None, z_mm: np.ndarray, spacing: Spacing,
                     hu: np.ndarray | None = None, cfg: Mapping[str, Any] | None = None) -> dict[str, Landmark]:
    """All levels needed by the zone systems, on an LPS-oriented grid (z index grows cranially).

    ``hu`` enables the detections that need more than the masks (bronchi, sternum, recess tips);
    without it those levels are estimated. ``cfg`` is the ``landmarks`` config section
    (``estimate_from_lung_extent``).

    ``z_mm`` must hold one patient z per slice, in slice order. A stack whose z falls with the index
    (a feet-first series not reoriented) is flipped to the cranially growing order first; a z that is
    not strictly monotonic (unsorted or repeated slices) is refused, since apex, base and domes would
    be read from the wrong ends."""
    cfg = dict(cfg or {})
    cal = CALIBRATION
    z_mm = np.asarray(z_mm, float)
    if np.ndim(lungs) != 3:
        raise ValueError(f"lungs has shape {np.shape(lungs)}, expected a 3-D (z, y, x) label volume")
    for what, arr in (("airway", airway), ("hu", hu)):
        if arr is not None and np.shape(arr) != lungs.shape:
            raise ValueError(f"{what} has shape {np.shape(arr)}, expected the lung mask's {lungs.shape}")
    if z_mm.ndim != 1 or len(z_mm) != lungs.shape[0]:
        raise ValueError(f"z_mm has shape {z_mm.shape}, expected one z per slice ({lungs.shape[0]})")
    step = np.diff(z_mm)
    if len(z_mm) > 1 and np.all(step < 0):
        lungs, z_mm = lungs[::-1], z_mm[::-1]
        airway = None if airway is None else airway[::-1]
        hu = None if hu is None else hu[::-1]
    elif not np.all(step > 0):
        raise ValueError("z_mm is not strictly monotonic along the slices (unsorted or repeated slices)")
    out: dict[str, Landmark] = {}

    # lungs: apices, bases, domes
    per_side: dict[int, np.ndarray] = {}
    for side, nm in ((RIGHT_LUNG, "right"), (LEFT_LUNG, "left")):
        # apex, base and "cut off by the scan" from the segmenter's lung mask, by the coverage's rule (lung_ends): the
        # aerated extension below it (for the domes) once took gas under the lung (a stomach bubble) down to the
        # bottom slice for lung, reporting a base cut off that the coverage and the zones saw whole
        voxel_ml = float(np.prod(spacing)) / 1000.0
        apex, base, cut_top, cut_bottom = lung_ends(lungs == side, z_mm, voxel_ml)
        per_side[side] = aerated_lung(lungs, hu, side, spacing=spacing)
        # the base's z follows the aerated recess tips the mask leaves out (calibrated on reference.csv: 0.5-1.3 mm
        # off on the normal scans, 5-10 mm on the mask alone), unless that tissue runs on to the bottom slice (a lung
        # the mask ends above, or gas under it: a stomach bubble): the mask's own base then, with low confidence
        _, base_aerated, _, aerated_cut = lung_ends(per_side[side], z_mm, voxel_ml)
        out[f"apex_{nm}"] = (_missing(f"apex_{nm}", "apex cut off by the scan" if cut_top else "no lung")
                             if cut_top or apex is None else
                             Landmark(f"apex_{nm}", apex, "detected", "high", "top slice with >= 5 mm2 lung"))
        if cut_bottom or base is None:
            out[f"base_{nm}"] = _missing(f"base_{nm}", "base cut off by the scan" if cut_bottom else "no lung")
        elif aerated_cut or (hu is not None and aerated_below_reaches_bottom(lungs == side, hu, spacing)):
            out[f"base_{nm}"] = Landmark(
                f"base_{nm}", base, "detected", "low", "bottom slice with >= 5 mm2 of the lung mask; aerated tissue "
                f"below it runs on to the scan's bottom slice: {BASE_UNCERTAIN_NOTE} (or that tissue is gas "
                "under the lung); coverage and zones follow the lung mask")
        else:
            out[f"base_{nm}"] = Landmark(f"base_{nm}", min(base, base_aerated) if base_aerated is not None else base,
                                         "detected", "high",
                                         "bottom slice with >= 5 mm2 lung (aerated recess tips followed)")
    # the domes from the mask's floor (as the zones have always used them); read again where the aerated lung ends
    # over a lens of dense tissue under it (diaphragm_lung), a dome more than DOME_UNCERTAIN_MM lower than that
    # reading is reported with low confidence, both readings in its note, and flagged LANDMARK_UNCERTAIN
    out.update(_read_domes(per_side, lungs, z_mm, spacing))
    if hu is not None:
        under = {side: diaphragm_lung(per_side[side], hu, spacing) for side in per_side}
        alt = _read_domes(under, lungs, z_mm, spacing)
        for side, name in ((RIGHT_LUNG, "dome_right"), (LEFT_LUNG, "dome_left")):
            z0, z1 = out[name].z_mm, alt[name].z_mm
            if z0 is None or z1 is None or z1 - z0 <= DOME_UNCERTAIN_MM:
                continue
            left_out = per_side[side] & ~under[side]
            lens = left_out.sum(axis=0) * float(spacing[0]) > DOME_LENS_MM[0]  # not the interface
            lens_ml = float(left_out[:, lens].sum()) * float(np.prod(spacing)) / 1000.0
            out[name].confidence = "low"
            out[name].second_z_mm = float(z1)
            out[name].note += (f"; {DOME_UNCERTAIN_NOTE}: {z1 - z0:.0f} mm higher ({z1:.1f}) where the aerated lung "
                               f"ends over {lens_ml:.0f} mL of dense tissue the lung mask holds under it: the liver's "
                               "or spleen's dome taken in as lung (the network's bulge), or consolidation lying on "
                               "the diaphragm (then this level is right); check it in levels.png")

    # carina
    lumen, lumen_note = airway_lumen(airway, hu, spacing)
    apex_top = max((out[k].z_mm for k in ("apex_right", "apex_left") if out[k].z_mm is not None), default=None)
    carina = detect_carina(lumen, z_mm, spacing, below_mm=apex_top)
    if carina.z_mm is None and cfg.get("estimate_from_lung_extent", True):
        apex = max((out[k].z_mm for k in ("apex_right", "apex_left") if out[k].z_mm is not None), default=None)
        base = min((out[k].z_mm for k in ("base_right", "base_left") if out[k].z_mm is not None), default=None)
        if apex is not None and base is not None:
            f = cal["carina_fraction_apex_to_base"]
            carina = Landmark("carina", apex - f * (apex - base), "estimated", "low",
                              f"{f:.2f} of the way from apex to base (airway split not found)")
    out["carina"] = carina
    zc = carina.z_mm

    def from_carina(name: str, key: str, why: str) -> Landmark:
        if zc is None:
            return _missing(name, "needs the carina")
        off = cal[key]
        # no surer than the carina it rests on: from an estimated carina it is low too
        sure = name != "suprasternal_notch" and carina.method == "detected"
        return Landmark(name, zc + off, "estimated", "medium" if sure else "low",
                        f"{'' if carina.method == 'detected' else 'estimated '}carina {off:+.1f} mm (reference mean); "
                        f"{why}")

    centre = None
    kc = None
    if carina.method == "detected":
        kc = _k_of(z_mm, zc)
        centre = trachea_centre(lumen, kc, spacing)

    # bronchus intermedius
    if hu is not None and centre is not None and kc is not None and lumen is not None:
        k_rul, k_end, why = detect_right_bronchi(lumen, kc, centre, z_mm, spacing)
        if k_rul is not None and 0 < zc - z_mm[k_rul] <= 20:
            out["rul_takeoff"] = Landmark("rul_takeoff", float(z_mm[k_rul]), "detected", "low",
                                          f"right upper-lobe bronchus leaves the main bronchus ({lumen_note})")
            log.debug("bronchus intermedius end: %s (%s)", None if k_end is None else z_mm[k_end], why)
    # The take-off/division detections above are informative but, on the reference scans, less
    # accurate than the carina offset (the middle-lobe division is often missed), so the level used is the estimate.
    out["bronchus_intermedius"] = from_carina("bronchus_intermedius", "bronchus_intermedius_from_carina_mm",
                                              "segmental take-offs not resolved reliably enough on CT")
    # suprasternal notch
    notch = None
    if hu is not None and centre is not None and kc is not None:
        notch = detect_suprasternal_notch(hu, kc, centre, z_mm, spacing, airway=lumen)
        if notch.z_mm is not None and not NOTCH_ABOVE_CARINA_MM[0] <= notch.z_mm - zc <= NOTCH_ABOVE_CARINA_MM[1]:
            log.info("suprasternal notch at carina %+.0f mm is implausible; estimated", notch.z_mm - zc)
            notch = None
        elif notch.z_mm is None and not notch.note.startswith(MANUBRIUM_AT_TOP):
            notch = None
        # the manubrium still at the midline in the top slice: the notch is above the scan, not at carina + 64 mm
        # inside it (a tall patient's scan starting below the notch had its L1 slab scored there); missing
    out["suprasternal_notch"] = notch or from_carina("suprasternal_notch", "suprasternal_notch_from_carina_mm",
                                                     "sternum not found")
    # aortic arch
    out["aortic_arch"] = from_carina("aortic_arch", "aortic_arch_from_carina_mm",
                                     "arch not separable from the mediastinum without contrast")
    # order: a dome at or above the bronchus intermedius (or the carina) is not a dome (a floor under the upper
    # lobes of a scan cut above the diaphragm); missing, so that the zones below it are missing too
    upper = [out[k].z_mm for k in ("bronchus_intermedius", "carina") if out[k].z_mm is not None]
    for k in ("dome_right", "dome_left"):
        if out[k].z_mm is not None and upper and out[k].z_mm >= min(upper):
            out[k] = _missing(k, f"found at {out[k].z_mm:.0f} mm, not below the bronchus intermedius / carina "
                                 f"({min(upper):.0f} mm): not a dome")
    # one dome not found: estimated from the other (detected, and kept by the check above), below the levels above
    for a, b, off in (("dome_left", "dome_right", cal["dome_left_from_right_mm"]),
                      ("dome_right", "dome_left", -cal["dome_left_from_right_mm"])):
        runs_out = out[a].note.startswith(FLOOR_BELOW_SCAN)  # its own lung says the dome is at or below the bottom
        if out[a].z_mm is None and not runs_out and out[b].z_mm is not None and out[b].method == "detected":
            z = out[b].z_mm + off
            if z > z_mm.min() and not (upper and z >= min(upper)):
                out[a] = Landmark(a, z, "estimated", "low", f"{b} {off:+.0f} mm ({a} not found)")
    # inferior pulmonary veins
    domes = [out[k].z_mm for k in ("dome_right", "dome_left") if out[k].z_mm is not None]
    # Two estimates, averaged: a fraction of the carina-dome distance (scales with the chest) and a
    # fixed offset below the carina (does not depend on the domes, which move with breathing).
    # Both domes below the scan (a scan cut above the diaphragm): the offset below the carina alone (ipv_level); the
    # middle zone lay whole in a scan cut 22 mm below normal001's IPV and was missing with it (an audit, 2026-12-07).
    for name in ("ipv_right", "ipv_left", "ipv"):
        out[name] = ipv_level(name, zc, domes, domes_below_scan(out), float(z_mm.min()), cal)
    for lm in out.values():
        log.debug("landmark %s: %s (%s, %s) %s", lm.name, lm.z_mm, lm.method, lm.confidence, lm.note)
    return out


# --------------------------------------------------------------------------------------------------
# Levels set by a reader (``landmarks.reader_levels``, ``ctscore run --landmarks CSV``)

#: The levels a reader may set: those the zone systems use (SCORING.md). Apices and bases are not among them: they are
#: the ends of the lung mask the zones are cut from, settled on that mask by the scoring.
READER_LEVELS = ("suprasternal_notch", "aortic_arch", "carina", "bronchus_intermedius", "ipv", "dome_right",
                 "dome_left")
#: (upper, lower): a level set by a reader must lie above / below the other of each pair it is in (the zhang900
#: levels L1-L5 from the top, the six-zone split below the carina); checked where either of the two is the reader's.
LEVEL_ORDER = (("suprasternal_notch", "aortic_arch"), ("aortic_arch", "carina"), ("carina", "bronchus_intermedius"),
               ("carina", "ipv"), ("bronchus_intermedius", "dome_right"), ("bronchus_intermedius", "dome_left"))


def apply_reader_levels(landmarks: dict[str, Landmark], levels: Mapping[str, float], source: str = "",
                        z_bottom: float | None = None) -> list[str]:
    """Put the levels a reader set (name -> patient z, mm) into ``landmarks`` (method ``reader``, confidence high,
    the note naming ``source``) and place again what rests on them, by the rules of :func:`detect_landmarks`:

    * from a reader's carina: the bronchus intermedius and the aortic arch (its offsets), the suprasternal notch when
      it was estimated, or detected outside :data:`NOTCH_ABOVE_CARINA_MM` above that carina (a notch missing because
      the manubrium reaches the scan's top stays missing);
    * a dome not set that lies at or above the bronchus intermedius or the carina (either set by the reader) is not a
      dome: missing; a dome estimated from the other (or not found), from the reader's other dome;
    * the IPV levels from the carina and the mean dome (:func:`estimate_ipv`), or from the carina alone where both domes
      lie below the scan (:func:`ipv_level`; missing where that level lies below ``z_bottom``, the scan's lowest z,
      as detection leaves it), whenever one of those is the reader's.

    Levels the reader set are never moved. A level placed again keeps what ctscore had placed (``ctscore_z_mm``,
    ``ctscore_method``, ``ctscore_confidence``) and says so in its note (the right upper-lobe take-off, informative
    only, becomes missing when it is not within 20 mm below the reader's carina). Returns the problems of :data:`LEVEL_ORDER` (empty when the levels are in
    order): a reader's IPV above the carina would leave no middle zone, an arch below the carina slabs in the wrong
    order; the caller fails the series with them. Raises ValueError for a name not in :data:`READER_LEVELS` or a z
    that is not a finite number."""
    cal = CALIBRATION
    given = dict(levels)
    unknown = sorted(set(given) - set(READER_LEVELS))
    if unknown:
        raise ValueError(f"levels a reader cannot set: {', '.join(unknown)} (only {', '.join(READER_LEVELS)})")
    if not given:
        return []
    # ctscore's domes before any level is set: a reader's dome, or one dropped below, moves the IPV (a review found
    # this read after the reader's levels were in, and a reader's domes left the IPV at ctscore's)
    domes_before = tuple(None if landmarks.get(k) is None else landmarks[k].z_mm for k in ("dome_right", "dome_left"))
    before = dict(landmarks)  # ctscore's own levels (the objects are replaced, never changed, below)
    for name, z in given.items():
        try:
            zf = float(z)
        except (TypeError, ValueError):
            zf = float("nan")
        if not np.isfinite(zf):
            raise ValueError(f"{name}: {z!r} is not a z in mm")
        old = landmarks.get(name)
        landmarks[name] = Landmark(name, zf, "reader", "high", f"set by a reader ({source})" if source else
                                   "set by a reader", ctscore_z_mm=None if old is None else old.z_mm,
                                   ctscore_method=None if old is None else old.method,
                                   ctscore_confidence=None if old is None else old.confidence)

    def z_of(name: str) -> float | None:
        lm = landmarks.get(name)
        return None if lm is None else lm.z_mm

    zc = z_of("carina")
    if "carina" in given:
        def from_reader_carina(name: str, key: str, why: str, confidence: str) -> Landmark:
            off = cal[key]
            return Landmark(name, zc + off, "estimated", confidence,
                            f"reader's carina {off:+.1f} mm (reference mean); {why}")

        for name, key, why in (("bronchus_intermedius", "bronchus_intermedius_from_carina_mm",
                                "segmental take-offs not resolved reliably enough on CT"),
                               ("aortic_arch", "aortic_arch_from_carina_mm",
                                "arch not separable from the mediastinum without contrast")):
            if name not in given:
                landmarks[name] = from_reader_carina(name, key, why, "medium")
        rul = landmarks.get("rul_takeoff")
        if rul is not None and rul.z_mm is not None and not 0 < zc - rul.z_mm <= 20:  # detect_landmarks' window
            # informative only, and found below ctscore's carina, not the reader's
            landmarks["rul_takeoff"] = _missing("rul_takeoff", f"found at {rul.z_mm:.0f} mm, not within 20 mm below "
                                                               "the reader's carina")
        notch = landmarks.get("suprasternal_notch")
        if "suprasternal_notch" not in given:
            at_top = notch is not None and notch.method == "missing" and notch.note.startswith(MANUBRIUM_AT_TOP)
            lo, hi = NOTCH_ABOVE_CARINA_MM
            if notch is None or (notch.method == "detected" and not lo <= notch.z_mm - zc <= hi):
                why = "sternum not found" if notch is None else (
                    f"the notch found at {notch.z_mm:.0f} mm is not {lo:.0f}-{hi:.0f} mm above the reader's carina")
                landmarks["suprasternal_notch"] = from_reader_carina(
                    "suprasternal_notch", "suprasternal_notch_from_carina_mm", why, "low")
            elif notch.method != "detected" and not at_top:
                landmarks["suprasternal_notch"] = from_reader_carina(
                    "suprasternal_notch", "suprasternal_notch_from_carina_mm", "sternum not found", "low")
    if given.keys() & {"carina", "bronchus_intermedius"}:
        upper = [z for z in (z_of("bronchus_intermedius"), zc) if z is not None]
        for k in ("dome_right", "dome_left"):
            z = z_of(k)
            if k not in given and z is not None and upper and z >= min(upper):
                landmarks[k] = _missing(k, f"found at {z:.0f} mm, not below the bronchus intermedius / carina "
                                           f"({min(upper):.0f} mm, placed by the reader): not a dome")
    for a, b, off in (("dome_left", "dome_right", cal["dome_left_from_right_mm"]),
                      ("dome_right", "dome_left", -cal["dome_left_from_right_mm"])):
        lm = landmarks.get(a)
        runs_out = lm is not None and lm.note.startswith(FLOOR_BELOW_SCAN)
        if b in given and a not in given and (lm is None or lm.method == "estimated" or
                                              (lm.z_mm is None and not runs_out)):
            landmarks[a] = Landmark(a, given[b] + off, "estimated", "low", f"{b} (reader) {off:+.0f} mm "
                                                                              f"({a} not found)")
    domes = [z for z in (z_of("dome_right"), z_of("dome_left")) if z is not None]
    if "carina" in given or (z_of("dome_right"), z_of("dome_left")) != domes_before:
        for name in ("ipv_right", "ipv_left", "ipv"):
            if name in given:
                continue
            landmarks[name] = ipv_level(name, zc, domes, domes_below_scan(landmarks), z_bottom, cal=cal)
    if "ipv" in given:  # the sides' estimates (reported, not used) would contradict the reader's level
        for name in ("ipv_right", "ipv_left"):
            if name in landmarks:
                landmarks[name] = _missing(name, "not estimated: the reader set the IPV level")
    for name, lm in landmarks.items():  # what the reader's levels moved: ctscore's level kept beside, the note says so
        old = before.get(name)
        if name in given or old is None or lm is old or (lm.z_mm, lm.method) == (old.z_mm, old.method):
            continue
        lm.ctscore_z_mm, lm.ctscore_method, lm.ctscore_confidence = old.z_mm, old.method, old.confidence
        if "reader" not in lm.note:
            lm.note = f"{lm.note}; placed again from the reader's levels".lstrip("; ")
    problems = []
    for hi_name, lo_name in LEVEL_ORDER:
        za, zb = z_of(hi_name), z_of(lo_name)
        if za is None or zb is None or not (hi_name in given or lo_name in given) or za > zb:
            continue
        problems.append(f"{hi_name} ({za:.1f} mm, {landmarks[hi_name].method}) is not above {lo_name} ({zb:.1f} mm, "
                        f"{landmarks[lo_name].method})")
    return problems


#: A reader's level this far (mm) from one ctscore detected with high or medium confidence is flagged
#: LANDMARK_READER_FAR: a slice number or a SliceLocation of another origin typed as z (ricord_covid_419639: its carina
#: at 154.9 mm is instance 108; carina=108 moved 417 mL of the right lung between zones without a word), or a level
#: placed on another series. Real corrections (a carina on a tracheal bronchus) are usually nearer; the flag asks
#: for a look at levels.png, it changes nothing.
READER_FAR_MM = 30.0


def reader_flags(landmarks: Mapping[str, Landmark]) -> list[str]:
    """``LANDMARK_BY_READER:<name>`` for each level a reader set (:func:`apply_reader_levels`), and
    ``LANDMARK_READER_FAR:<name>:<mm>`` for one more than :data:`READER_FAR_MM` from the level ctscore detected with
    high or medium confidence."""
    out = []
    for name, lm in landmarks.items():
        if lm.method != "reader":
            continue
        out.append(f"LANDMARK_BY_READER:{name}")
        if lm.ctscore_method == "detected" and lm.ctscore_confidence in ("high", "medium") \
                and lm.ctscore_z_mm is not None and abs(lm.z_mm - lm.ctscore_z_mm) > READER_FAR_MM:
            out.append(f"LANDMARK_READER_FAR:{name}:{abs(lm.z_mm - lm.ctscore_z_mm):.0f}")
    return out
