"""Orchestration: the unit of work (one series) and the serial run over an input folder.

:func:`process_series` is a pure function of (input files, resolved config, output folder): it loads
the series, segments it on the working grid, brings the masks back to the original grid, scores,
and writes the series folder atomically. It returns a small status dict and never raises for a bad
scan: a :class:`~pipeline.errors.CTScoreError` becomes ``status="failed"`` with its code.
:func:`run_pipeline` discovers the series, processes them and writes the run tables.
"""

from __future__ import annotations

import contextvars
import functools
import gzip
import hashlib
import hmac
import io
import json
import logging
import os
import platform
import time
import traceback
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from pipeline import __version__
from pipeline.config import config_hash, redact_secrets, scores_config_hash
from pipeline.data_dictionary import write_data_dictionary
from pipeline.errors import CTScoreError, NoEligibleSeries, SeriesError
from pipeline.imageio import array_view, write_nifti
from pipeline.outputs import (
    DEFAULT_SALT,
    FAILURE_COLUMNS,
    LANDMARK_COLUMNS,
    SCAN_COLUMNS,
    ZONE_COLUMNS,
    EarlierCopyStuck,
    SeriesFolder,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_table,
    check_cancelled,
    device_text,
    printable_deep,
    pseudonym,
    salt_id,
    series_location,
)

log = logging.getLogger(__name__)

#: Loggers (and their children) whose records, while :func:`process_series` scores a scan, begin with its scan_id
#: ("scan-0123abcd4567: no trachea found: airway not segmented"): their messages do not know which scan they are of.
SCAN_LOGGERS = ("segmentation", "scoring")
_current_scan: contextvars.ContextVar[str] = contextvars.ContextVar("ctscore_scan_id", default="")


def _scan_record_factory(previous):
    """A log record factory (wrapping ``previous``) that puts the scan under way (:data:`_current_scan`) before the
    message of a record of the :data:`SCAN_LOGGERS`. It works wherever :func:`process_series` runs (this process, a
    dask worker, a timeout thread: the scan is a context variable set by process_series itself), whatever handlers and
    format the process logs with."""

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        scan = _current_scan.get()
        if scan and record.name.split(".", 1)[0] in SCAN_LOGGERS and isinstance(record.msg, str) \
                and not record.msg.startswith(scan):
            record.msg = f"{scan}: {record.msg}"
        return record

    factory.ctscore_scan_prefix = True
    return factory


def _install_scan_prefix() -> None:
    """Install :func:`_scan_record_factory` once per process (at the import of this module)."""
    current = logging.getLogRecordFactory()
    if not getattr(current, "ctscore_scan_prefix", False):
        logging.setLogRecordFactory(_scan_record_factory(current))


_install_scan_prefix()

#: slice planes tilted more than this from axial: landmarks found on an axial reformat, zones cut voxel by voxel
#: (each voxel's own patient z), QC flag ZONED_AXIALLY:<degrees>
TILT_FLAG_DEG = 2.0


def slice_z_mm(image: sitk.Image) -> np.ndarray:
    """Patient z (mm) of every slice centre of an LPS-oriented axial image."""
    size = image.GetSize()
    cx, cy = (size[0] - 1) / 2.0, (size[1] - 1) / 2.0
    return np.array([image.TransformContinuousIndexToPhysicalPoint((cx, cy, float(k)))[2] for k in range(size[2])])


def plane_tilt_deg(image: sitk.Image) -> float:
    """Angle (degrees) between the image's slice planes and the axial plane (0 for an axial stack)."""
    d = np.asarray(image.GetDirection(), float).reshape(3, 3)
    normal = np.cross(d[:, 0], d[:, 1])
    return float(np.degrees(np.arccos(min(1.0, abs(normal[2]) / max(np.linalg.norm(normal), 1e-12)))))


def voxel_z_mm(image: sitk.Image) -> np.ndarray:
    """Patient z (mm) of every voxel centre, as a float32 array [z, y, x] of the image's shape."""
    size = image.GetSize()
    origin = np.asarray(image.GetOrigin(), float)
    d = np.asarray(image.GetDirection(), float).reshape(3, 3)
    step = d[2, :] * np.asarray(image.GetSpacing(), float)  # dz per index step along x, y, z
    zx = (step[0] * np.arange(size[0])).astype(np.float32)
    zy = (step[1] * np.arange(size[1])).astype(np.float32)
    zk = (origin[2] + step[2] * np.arange(size[2])).astype(np.float32)
    return zk[:, None, None] + zy[None, :, None] + zx[None, None, :]


def axial_landmarks(seg, work: sitk.Image, per_slice: dict, cfg: dict[str, Any]) -> dict:
    """The landmark levels of a stack with tilted slices, found on an axial reformat of the working grid.

    The reformat holds all of the tilted stack; what lies outside it is padded with water (0 HU), not air, so
    that the airway growing from the trachea's cut end does not leak out of the scan. A level the tilted slices
    find missing (a lung cut off by the scan, which the reformat's padding hides) stays missing."""
    from pipeline.resample import axial_grid, labels_to_grid
    from scoring.landmarks import detect_landmarks

    axial = axial_grid(work)

    def labels(arr):
        return sitk.GetArrayFromImage(labels_to_grid(_to_image(arr.astype(np.uint8), work), axial))

    hu = sitk.GetArrayFromImage(sitk.Resample(work, axial, sitk.Transform(), sitk.sitkLinear, 0.0,
                                              sitk.sitkFloat32))
    airway = None if seg.airway is None else labels(seg.airway) > 0
    found = detect_landmarks(labels(seg.lungs), airway, slice_z_mm(axial), tuple(axial.GetSpacing()[::-1]),
                             hu=hu, cfg=cfg.get("landmarks"))
    for name, lm in per_slice.items():
        if lm.method == "missing":
            found[name] = lm
    return found


def _to_image(arr: np.ndarray, ref: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(ref)
    return img


def _level(landmarks: Mapping[str, Any], name: str) -> float | None:
    lm = landmarks.get(name)
    z = None if lm is None else lm.z_mm
    return float(z) if z is not None and np.isfinite(z) else None


def _tilt_note(flags: list[str]) -> str:
    """levels.png's word on slices tilted from axial (ZONED_AXIALLY): it is drawn from an axial reformat
    (:func:`picture_arrays`)."""
    tilt = next((f.split(":", 1)[1] for f in flags if f.startswith("ZONED_AXIALLY:")), None)
    if tilt is None:
        return ""
    return (f"slices tilted {tilt} degrees from axial (ZONED_AXIALLY): drawn from an axial reformat (black: outside "
            "the tilted stack), as the levels are axial planes")


#: HU of the axial reformat's voxels outside a tilted stack (:func:`picture_arrays`): below both windows of the QC
#: pictures, so drawn black (no image there), neither air nor tissue.
PICTURE_PAD_HU = -2000


def picture_arrays(res: Mapping[str, Any]) -> dict[str, Any]:
    """What qc.png and levels.png are drawn from: the arrays of :func:`analyse_volume`'s ``res`` on the CT's grid;
    for slices tilted more than :data:`TILT_FLAG_DEG` from axial, the same resampled onto the axial reformat the
    levels were found on (:func:`pipeline.resample.axial_grid`: the CT's spacing, identity direction, all of the
    tilted stack), for the pictures only. Tilted slices drawn as they are made qc.png's coronal view an oblique cut
    (70 mm front to back over a 15-degree stack, missing the lesions) with its rows 7.7 mm off the z they were
    labelled with. The CT is resampled linearly (to int16; :data:`PICTURE_PAD_HU` outside the stack), the labels by
    nearest neighbour. Keys: hu, lungs, classes, pneumothorax (None or bool), z_mm, spacing_zyx, sagittal_x (the
    trachea's column, carried by physical position) and reformatted (bool)."""
    from pipeline.resample import axial_grid, labels_to_grid

    orig = res["orig"]
    out = {"hu": res["hu"], "lungs": res["lungs"], "classes": res["classes"], "pneumothorax": res.get("pneumothorax"),
           "z_mm": res["z_mm"], "spacing_zyx": res["spacing_zyx"], "sagittal_x": res.get("trachea_x"),
           "reformatted": False}
    if plane_tilt_deg(orig) <= TILT_FLAG_DEG:
        return out
    axial = axial_grid(orig)

    def labels(arr: np.ndarray) -> np.ndarray:
        return sitk.GetArrayFromImage(labels_to_grid(_to_image(np.asarray(arr, np.uint8), orig), axial))

    ptx = out["pneumothorax"]
    x = out["sagittal_x"]
    if x is not None:  # the trachea's column, at the stack's centre, onto the reformat's columns
        size = orig.GetSize()
        point = orig.TransformContinuousIndexToPhysicalPoint((float(x), (size[1] - 1) / 2.0, (size[2] - 1) / 2.0))
        x = int(np.clip(round(axial.TransformPhysicalPointToContinuousIndex(point)[0]), 0, axial.GetSize()[0] - 1))
    return {"hu": sitk.GetArrayFromImage(sitk.Resample(orig, axial, sitk.Transform(), sitk.sitkLinear,
                                                       float(PICTURE_PAD_HU), sitk.sitkInt16)),
            "lungs": labels(res["lungs"]), "classes": labels(res["classes"]),
            "pneumothorax": None if ptx is None else labels(ptx) > 0,
            "z_mm": slice_z_mm(axial), "spacing_zyx": tuple(axial.GetSpacing()[::-1]), "sagittal_x": x,
            "reformatted": True}


def trachea_column(airway: np.ndarray | None, work: sitk.Image, orig: sitk.Image,
                   z_range: tuple[float | None, float | None] = (None, None)) -> int | None:
    """The column (x index) of ``orig`` through the trachea, from the segmenter's airway on ``work``'s grid, carried
    by physical position; None without an airway. levels.png's sagittal view goes through it.

    The median centre of the largest airway lumen in each working slice within ``z_range`` (patient z, mm: from the
    carina to the notch, where the notch, arch and carina are read); where that range is unknown or holds no airway,
    the airway's upper half. The upper half alone reached up into the neck, where the trachea lies off to one side
    of its course in the chest: on ricord_covid_419639 the column met the lumen in 3 of 35 slices from the carina to
    the notch (an audit of 2026-12-06)."""
    from scipy import ndimage as ndi

    if airway is None or not airway.any():
        return None
    z = slice_z_mm(work)
    ks = np.nonzero(airway.any(axis=(1, 2)))[0]
    lo, hi = z_range
    if lo is not None and hi is None:  # no notch: the trachea's lowest 60 mm
        hi = lo + 60.0
    sel = [k for k in ks if lo is not None and hi is not None and lo < z[k] < hi]
    if not sel:
        mid = 0.5 * (z[ks].min() + z[ks].max())
        sel = [k for k in ks if z[k] >= mid]
    centres = []
    for k in sel:
        lab, n = ndi.label(airway[k])
        biggest = np.argmax(np.bincount(lab.ravel())[1:]) + 1
        ys, xs = np.nonzero(lab == biggest)
        centres.append((float(np.mean(xs)), float(np.mean(ys)), float(k)))
    xw, yw, kw = (float(np.median(c)) for c in zip(*centres))
    point = work.TransformContinuousIndexToPhysicalPoint((xw, yw, kw))
    xo = orig.TransformPhysicalPointToContinuousIndex(point)[0]
    return int(np.clip(round(xo), 0, orig.GetSize()[0] - 1))


def analyse_volume(image: sitk.Image, cfg: dict[str, Any], segmenter, lobes_path: str | Path | None = None,
                   padding: sitk.Image | None = None, reader_levels: Mapping[str, float] | None = None,
                   reader_source: str = "", user_masks: Mapping[str, str | Path] | None = None) -> dict[str, Any]:
    """Segment and score one HU image (any orientation). Returns arrays on the LPS original grid
    plus the score row, zone rows, landmarks, flags and stage timings.

    ``lobes_path``: a lobe label file of the user's (``scoring.lobar.lobe_labels`` convention), resampled
    onto the CT by nearest neighbour; it replaces any lobes of the segmenter. ``padding``: the loader's mask of
    the pixels outside the field of view (same grid as ``image``), for the ``LUNG_CUT_BY_FOV`` check.
    ``reader_levels``: levels a reader set for this series (name -> patient z, mm; ``reader_source`` says where from,
    e.g. ``levels.csv line 3``), used instead of ctscore's (:func:`scoring.landmarks.apply_reader_levels`); levels
    out of order fail the series (``LANDMARKS_OUT_OF_ORDER``). ``user_masks``: edited masks of this series (kind ->
    file, :func:`find_user_masks`), used instead of the segmenter's lungs and/or lesions (:func:`read_user_mask`);
    with both, the segmenter does not run (the airway for the carina is grown from the trachea, as the classical
    segmenter does), and the lungs are taken as given (no lung outside the body removed)."""
    from pipeline.fov import fov_flags
    from pipeline.orientation_check import flags_for as orientation_flags
    from pipeline.resample import labels_to_grid, resample_to_spacing, to_lps
    from scoring.hu_classes import classify_lesions
    from scoring.landmarks import apply_reader_levels, detect_landmarks, temper_for_thick_slices
    from scoring.quantify import score_scan, slice_step_mm, solid_lesion_ml
    from segmentation.base import lung_outside_body, side_mixed_flags

    timings: dict[str, float] = {}
    t = time.perf_counter()
    orig = to_lps(image)
    lobar_on = bool(cfg["scoring"]["lobar"].get("enabled", True))  # false: no lobar scores even with lobes
    # the user's lobe map is read before the segmenter runs: an unreadable or empty one (LOBES_UNREADABLE,
    # LOBES_EMPTY) fails the series at once, not after minutes of segmentation
    user_lobes = _read_user_lobes(lobes_path, orig, cfg) if lobes_path is not None and lobar_on else None
    given = {kind: read_user_mask(f, kind, orig) for kind, f in (user_masks or {}).items()}  # read first: fail fast
    work = resample_to_spacing(orig, cfg["resample"]["spacing_mm"])
    timings["resample_s"] = time.perf_counter() - t

    t = time.perf_counter()
    hu_w = sitk.GetArrayFromImage(work)
    spacing_w = tuple(work.GetSpacing()[::-1])

    def to_work(arr: np.ndarray) -> np.ndarray:
        return sitk.GetArrayFromImage(labels_to_grid(_to_image(arr.astype(np.uint8), orig), work))

    if len(given) == len(USER_MASKS):  # nothing left to segment but the airway (landmarks)
        from segmentation.base import Segmentation
        from segmentation.classical import segment_airway

        seg = Segmentation(lungs=to_work(given["lungs"]), lesions=to_work(given["lesions"]) > 0,
                           airway=segment_airway(hu_w, spacing_w))
    else:
        seg = segmenter.segment(hu_w, spacing_w)
        if "lungs" in given:
            seg.lungs = to_work(given["lungs"])
            seg.lobes = None  # the segmenter's lobes were of its own lungs
        if "lesions" in given:
            seg.lesions = to_work(given["lesions"]) > 0
    timings["segment_s"] = time.perf_counter() - t
    t = time.perf_counter()  # checks_s: lung outside the body, the HU and orientation checks
    voxel_ml_w = float(np.prod(spacing_w)) / 1000.0
    # lung labels in the air around the patient (any segmenter): taken out, and said (an abdominal series was
    # scored on 345 mL of "lung" outside the body)
    from pipeline.hu_checks import measure as measure_hu
    from pipeline.hu_checks import pneumothorax
    from pipeline.orientation_check import measure as measure_orientation
    from segmentation.classical import body_mask

    body_w = body_mask(hu_w, -500.0)
    air = lung_outside_body(hu_w, seg.lungs, body=body_w) if "lungs" not in given else np.zeros(hu_w.shape, bool)
    air_ml = float(air.sum()) * voxel_ml_w
    if air.any():
        seg.lungs = np.where(air, 0, seg.lungs).astype(seg.lungs.dtype)
        seg.lesions = seg.lesions & ~air
        seg.flags = [*(getattr(seg, "flags", None) or []), f"LUNG_OUTSIDE_BODY_REMOVED:{air_ml:.0f}"]
    pad_w = None if padding is None else sitk.GetArrayFromImage(sitk.Resample(
        to_lps(padding), work, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    hu_check = measure_hu(hu_w, seg.lungs, seg.lesions > 0, voxel_ml_w, body=body_w, padding=pad_w)  # flags: below
    ptx_check, ptx_w = pneumothorax(hu_w, seg.lungs, spacing_w, seg.airway)  # PNEUMOTHORAX_SUSPECT (a flag only)
    hu_check.update(ptx_check)
    # the spine behind the lungs (any segmenter; not checked where the field of view cuts the back of the body)
    orientation = measure_orientation(hu_w, seg.lungs, body_w, spacing_w, padding=pad_w)
    del body_w, pad_w
    lung_ml = float((seg.lungs > 0).sum()) * voxel_ml_w
    if lung_ml < cfg["segmentation"]["min_lung_volume_ml"]:
        removed = f", after {air_ml:.0f} mL labelled lung outside the body was taken out" if air_ml >= 0.5 else ""
        raise SeriesError("NO_LUNG_FOUND", f"no lung found in this series ({lung_ml:.0f} mL of lung{removed}; not a "
                          "chest CT, or a field of view that misses the lungs)")

    timings["checks_s"] = time.perf_counter() - t
    t = time.perf_counter()
    lungs_o = given.get("lungs")  # the user's own voxels, not a round trip through the working grid
    if lungs_o is None:
        lungs_o = sitk.GetArrayFromImage(labels_to_grid(_to_image(seg.lungs.astype(np.uint8), work), orig))
    les_o = given.get("lesions")
    if les_o is None:
        les_o = sitk.GetArrayFromImage(labels_to_grid(_to_image(seg.lesions.astype(np.uint8), work), orig)) > 0
    ptx_o = None  # the suspected pneumothorax on the CT's grid, for qc.png's outline (None: none found, or no qc.png)
    if ptx_w.any() and cfg.get("outputs", {}).get("write_qc_png", True):
        ptx_o = sitk.GetArrayFromImage(labels_to_grid(_to_image(ptx_w.astype(np.uint8), work), orig)) > 0
    del ptx_w
    lobes_o = None
    if user_lobes is not None:
        lobes_o, warn_foreign = user_lobes
        warn_foreign(lungs_o)
    elif seg.lobes is not None and lobar_on:
        lobes_o = sitk.GetArrayFromImage(labels_to_grid(_to_image(seg.lobes.astype(np.uint8), work), orig))
    hu_o = array_view(orig)  # read-only, no copy of the CT (it is kept in memory once)
    if "lesions" in given:  # a reader's lesion painted beyond the lungs: not counted, and said (a review)
        outside = int(np.count_nonzero(les_o & (lungs_o == 0)))
        if outside:
            ml = outside * float(np.prod(orig.GetSpacing())) / 1000.0
            hu_check["user_lesion_outside_lung_ml"] = round(ml, 2)
            log.warning("%.1f mL of the edited lesions mask lie outside the lungs: not counted (lesions are measured "
                        "in the lungs; paint the lung there too if it is lung)", ml)
    les_o &= lungs_o > 0
    classes = classify_lesions(hu_o, les_o, cfg["hu_classes"])
    from pipeline.hu_checks import dependent_gradient_hu, low_attenuation_pct, metal_ml, slice_jump_ratio

    hu_check["laa950_pct"] = low_attenuation_pct(hu_o, lungs_o)  # on the CT's own grid, as emphysema is measured
    # breathing between slices and a gravity-dependent density gradient, on the CT's own slices (MOTION_SUSPECT,
    # DEPENDENT_DENSITY: a motion audit, 2026-12-06)
    hu_check["slice_jump_ratio"] = slice_jump_ratio(hu_o, lungs_o, tuple(orig.GetSpacing()[::-1]), les_o)
    hu_check["dependent_gradient_hu"] = dependent_gradient_hu(hu_o, lungs_o, tuple(orig.GetSpacing()[::-1]))
    hu_check["metal_ml"] = metal_ml(hu_o, float(np.prod(orig.GetSpacing())) / 1000.0)  # a 1 mm wire blurs away on 1.5 mm
    timings["to_original_grid_s"] = time.perf_counter() - t

    t = time.perf_counter()
    z_o = slice_z_mm(orig)
    tilt = plane_tilt_deg(orig)
    landmarks = detect_landmarks(seg.lungs, seg.airway, slice_z_mm(work), spacing_w, hu=hu_w,
                                 cfg=cfg.get("landmarks"))
    z_voxel, flags_tilt = None, []
    if tilt > TILT_FLAG_DEG:
        # Slices tilted from axial (gantry tilt, oblique reconstruction): a slice's z is its centre's only,
        # tan(tilt) x 100 mm off at the front and back of the lungs, and SCORING.md's levels are axial planes.
        # The levels are found again on an axial reformat and the zones are cut voxel by voxel.
        landmarks = axial_landmarks(seg, work, landmarks, cfg)
        z_voxel = voxel_z_mm(orig)
        flags_tilt = [f"ZONED_AXIALLY:{tilt:.1f}"]
    temper_for_thick_slices(landmarks, slice_step_mm(z_o))
    if reader_levels:
        where = reader_source or "the reader's level table"
        # a level outside the scan is no level of it (a slice number, or another series' z, typed as z): refused
        zs = z_o if z_voxel is None else z_voxel
        lo, hi = float(np.min(zs)), float(np.max(zs))
        half = 0.5 * slice_step_mm(z_o)
        outside = [f"{k} {float(z):g} mm" for k, z in reader_levels.items()
                   if isinstance(z, (int, float)) and not lo - half <= float(z) <= hi + half]
        if outside:
            raise SeriesError("READER_LEVELS_INVALID", f"{where}: {', '.join(outside)} lies outside this series "
                              f"(patient z {lo:.1f} to {hi:.1f} mm): give the z that levels.png and result.json "
                              "print (ImagePositionPatient's), not a slice number or a SliceLocation")
        try:
            # the note names no file or line: result.json and landmarks.csv are shared (ctscore share), a file name
            # may name a patient, and a resume keeps the note when the levels moved to another line or file
            problems = apply_reader_levels(landmarks, reader_levels, z_bottom=lo)  # an IPV below the scan: missing
        except ValueError as exc:
            raise SeriesError("READER_LEVELS_INVALID", f"{where}: {exc}") from None
        if problems:
            raise SeriesError("LANDMARKS_OUT_OF_ORDER", f"the levels of {where} and ctscore's do not follow each "
                              f"other: {'; '.join(problems)}; set the other level of each pair in that row too, or "
                              "correct it")
    spacing_o = orig.GetSpacing()
    voxel_ml = float(np.prod(spacing_o)) / 1000.0
    row, zones, flags = score_scan(hu_o, lungs_o, classes, z_o, voxel_ml, landmarks, cfg, lobes=lobes_o,
                                   z_voxel=z_voxel, pixel_mm=tuple(spacing_o[::-1][1:]))
    if lobes_o is None:  # why the lobar totals are empty (SCORING.md: "they stay empty, with the reason")
        row["lobar_note"] = (
            "lobar scoring off (scoring.lobar.enabled: false)" if not lobar_on else
            "no lobe map for this series in scoring.lobar.lobes_dir (LOBES_NOT_FOUND)"
            if cfg["scoring"]["lobar"].get("lobes_dir") else
            "no lobe map: the segmenter makes none (give your own with --lobes DIR)")
    pad_o = None if padding is None else sitk.GetArrayFromImage(to_lps(padding)) > 0
    flags_fov = fov_flags(lungs_o, tuple(spacing_o[::-1]), pad_o)
    solid = solid_lesion_ml(hu_o, classes, voxel_ml)
    flags_solid = [f"SOLID_LESION:{solid:.0f}"] if solid else []
    # an airway of under AIRWAY_MIN_ML: the carina and the levels placed from it are estimated (LANDMARK_ESTIMATED);
    # this says why (an ICU audit: a tube with fluid around it in the trachea left 1.5 mL of airway)
    airway_ml = 0.0 if seg.airway is None else float(np.count_nonzero(seg.airway)) * voxel_ml_w
    hu_check["airway_ml"] = round(airway_ml, 2)  # (result.json: the measure behind AIRWAY_NOT_FOUND)
    flags_airway = [f"AIRWAY_NOT_FOUND:{airway_ml:.1f}"] if airway_ml < AIRWAY_MIN_ML else []
    flags_masks = [f"MASKS_FROM_USER:{'+'.join(k for k in USER_MASKS if k in given)}"] if given else []
    flags = (flags_masks + list(getattr(seg, "flags", None) or []) + flags + flags_tilt + flags_fov + flags_solid
             + flags_airway + orientation_flags(orientation) + side_mixed_flags(seg.lungs, spacing_w))
    trachea_x = trachea_column(seg.airway, work, orig, (_level(landmarks, "carina"),
                                                        _level(landmarks, "suprasternal_notch")))
    timings["score_s"] = time.perf_counter() - t
    return {
        "orig": orig, "hu": hu_o, "lungs": lungs_o, "classes": classes, "z_mm": z_o,
        "spacing_zyx": tuple(spacing_o[::-1]), "row": row, "zones": zones, "flags": flags,
        "landmarks": landmarks, "timings": timings, "hu_check": hu_check, "orientation_check": orientation,
        "trachea_x": trachea_x, "pneumothorax": ptx_o,
    }


#: An airway (trachea and main bronchi, as the segmenter found them) of less mL than this is flagged
#: AIRWAY_NOT_FOUND:<mL>. The six real chests of ../shared/data: 5.4 (8 mm slices) to 39.8 mL; an endotracheal tube
#: simulated in ricord_covid_419639's trachea (a +100 HU ring, tip 4 cm above the carina) left 0.5 mL (36.6 without);
#: the classical airway search now grows around such a tube (segmentation.classical.AIRWAY_RETRY_ML), not through
#: one that fills the trachea or has secretions around it.
AIRWAY_MIN_ML = 2.0

LOBE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
#: TotalSegmentator's default output, one binary mask per structure in a folder: its lobe files -> our lobe codes.
TOTALSEGMENTATOR_LOBE_FILES: dict[str, int] = {
    "lung_upper_lobe_right": 1, "lung_middle_lobe_right": 2, "lung_lower_lobe_right": 3,
    "lung_upper_lobe_left": 4, "lung_lower_lobe_left": 5}


def lobe_files_in(folder: Path) -> dict[int, Path]:
    """Lobe code -> file of a TotalSegmentator output folder (``<uid>/lung_upper_lobe_left.nii.gz``, ...)."""
    out = {}
    for name, code in TOTALSEGMENTATOR_LOBE_FILES.items():
        for suffix in LOBE_SUFFIXES:
            if (folder / f"{name}{suffix}").is_file():
                out[code] = folder / f"{name}{suffix}"
                break
    return out


def find_user_lobes(cfg: dict[str, Any], series_uid: str) -> Path | None:
    """``<scoring.lobar.lobes_dir>/<SeriesInstanceUID>.<ext>`` when that folder is configured and the file exists;
    of several (the same series in two formats), the first of :data:`LOBE_SUFFIXES`, with a warning naming them."""
    folder = cfg["scoring"]["lobar"].get("lobes_dir")
    if not folder or not series_uid:
        return None
    if Path(series_uid).name != series_uid or series_uid in (".", ".."):  # a crafted UID ('../../x', '/x') would
        return None  # name a file outside the folder; no lobe map can be named after it
    found = [Path(folder) / f"{series_uid}{suffix}" for suffix in LOBE_SUFFIXES
             if (Path(folder) / f"{series_uid}{suffix}").is_file()]
    if (Path(folder) / series_uid).is_dir() and lobe_files_in(Path(folder) / series_uid):
        found.append(Path(folder) / series_uid)  # TotalSegmentator's folder of one mask per lobe
    if len(found) > 1:
        log.warning("%d lobe maps for one series in %s (%s): %s is used; remove the others if it is not the right one",
                    len(found), folder, ", ".join(p.name for p in found), found[0].name)
    return found[0] if found else None


def lobes_dir_warnings(folder: str | Path | None, series_uids: list[str]) -> list[str]:
    """What the start of a run says about ``--lobes DIR``: the lobe map files (:data:`LOBE_SUFFIXES`) named after no
    series of the input (a map is found by its file name only: ``scan-xxxx.nii.gz`` or ``lobes.nii.gz`` is never
    read), and the series that have no map there (scored without lobar scores, ``LOBES_NOT_FOUND``)."""
    if not folder or not Path(folder).is_dir():
        return []
    stems = {}
    try:
        files = sorted(Path(folder).iterdir())
    except OSError:  # a folder that cannot be listed (no read permission): maps are still found by their names
        return []
    for f in files:
        suffix = next((x for x in LOBE_SUFFIXES if f.name.endswith(x)), None)
        if suffix and f.is_file():
            stems.setdefault(f.name[:-len(suffix)], f.name)
        elif f.is_dir() and f.name in series_uids and lobe_files_in(f):
            stems.setdefault(f.name, f.name + "/")
    uids = sorted({u for u in series_uids if u})
    stray = [name for stem, name in stems.items() if stem not in uids]
    without = [u for u in uids if u not in stems]
    out = []

    def some(names: list[str]) -> str:
        return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")

    if stray:
        out.append(f"--lobes {folder}: {len(stray)} of {len(stems)} lobe map files match no series of the input "
                   f"({some(stray)}); a map is found by its name only, <SeriesInstanceUID>.nii.gz (or "
                   f"{', '.join(LOBE_SUFFIXES[1:])})")
    if without:
        out.append(f"--lobes {folder}: {len(without)} of {len(uids)} series have no lobe map there (expected "
                   f"{some([u + '.nii.gz' for u in without])}): they get no lobar scores (QC flag LOBES_NOT_FOUND)")
    return out


def read_user_lobes(path: str | Path, orig: sitk.Image, cfg: dict[str, Any],
                    lungs: np.ndarray | None = None) -> np.ndarray:
    """A user lobe map on the LPS original grid, in ctscore lobe codes; a clear error when it is unusable.

    A map of non-integer values fails (``LOBES_UNREADABLE``); label values the convention does not know are named in
    a warning (with ``lungs``, the lung mask on the same grid: those covering part of it; in the ``ctscore``
    convention, every one): their voxels are in no lobe."""
    lobes, warn_foreign = _read_user_lobes(path, orig, cfg)
    warn_foreign(lungs)
    return lobes


def _read_user_lobes(path: str | Path, orig: sitk.Image,
                     cfg: dict[str, Any]) -> tuple[np.ndarray, Callable[[np.ndarray | None], None]]:
    """:func:`read_user_lobes` in two steps: the map (its errors raised now) and a function that logs the warning on
    label values the convention does not know, given the lung mask once there is one."""
    from scoring.quantify import LOBE_LABEL_CONVENTIONS, foreign_lobe_labels, map_lobe_labels, read_label_map

    if Path(path).is_dir():  # TotalSegmentator's default output: one mask per lobe, named by the structure
        return _read_lobe_files(Path(path), orig), lambda lungs: None
    convention = cfg["scoring"]["lobar"].get("lobe_labels", "totalsegmentator")
    label_map = LOBE_LABEL_CONVENTIONS[convention]
    try:
        labels = read_label_map(str(path), reference=orig)
    except RuntimeError as exc:  # SimpleITK: unreadable file
        raise SeriesError("LOBES_UNREADABLE", f"lobe map {path} cannot be read: {str(exc).strip()[:200]}",
                          path) from None
    except ValueError as exc:  # non-integer labels
        raise SeriesError("LOBES_UNREADABLE", str(exc), path) from None
    held = {v.item() for v in np.unique(labels) if v != 0}
    # lungmask's default R231 model writes two lungs side by side (1 right, 2 left): no lobes. Under the lungmask
    # convention 1 and 2 are the left upper and lower lobes, one above the other (a right pneumonectomy's map)
    if held and held <= {1, 2} and (convention == "totalsegmentator"
                                    or convention == "lungmask" and _side_by_side(labels)):
        raise SeriesError("LOBES_EMPTY", f"lobe map {path} holds only the labels {', '.join(map(str, sorted(held)))}: "
                          "a lung mask (lungmask's default R231 model writes 1 right lung, 2 left lung), not lobes; "
                          "make lobes with `lungmask CT OUT --modelname LTRCLobes_R231`", path)
    lobes = map_lobe_labels(labels, label_map)
    if lobes.any() and np.count_nonzero(labels) == np.count_nonzero(lobes):  # every labelled voxel is a lobe:
        return lobes, lambda lungs: None  # nothing to warn of, and the map's array is not kept while segmenting

    def warn_foreign(lungs: np.ndarray | None) -> None:
        foreign = foreign_lobe_labels(labels, label_map, lungs, anywhere=convention != "totalsegmentator")
        if foreign:
            known = ", ".join(str(k) for k in sorted(label_map))
            log.warning("lobe map %s: label values %s are no %s lobe label (%s): their voxels are in no lobe "
                        "(another convention? scoring.lobar.lobe_labels)", path,
                        ", ".join(f"{v} ({p:g} % of the lung mask)" for v, p in list(foreign.items())[:10]),
                        convention, known)

    if not lobes.any():  # read before segmentation: no lung mask yet; the map's own values say what it holds
        values = [v.item() for v in np.unique(labels) if v != 0][:12]
        holds = f"its labels: {', '.join(f'{v:g}' for v in values)}" if values else "it is all 0"
        if values and set(values) <= {1, 2, 3, 4, 5}:
            holds += ("; labels 1-5 are the ctscore (1 RUL, 2 RML, 3 RLL, 4 LUL, 5 LLL) or lungmask LTRCLobes (1 LUL, "
                      "2 LLL, 3 RUL, 4 RML, 5 RLL) convention: set scoring.lobar.lobe_labels")
        raise SeriesError("LOBES_EMPTY", f"lobe map {path} has no {convention} lobe label on this CT ({holds}; "
                          "wrong label convention, or a map of another series)", path)
    return lobes, warn_foreign


def _side_by_side(labels: np.ndarray) -> bool:
    """Labels 1 and 2 of an LPS ``[z, y, x]`` map lie side by side, 1 on the patient's right (lower x), their
    median x a quarter of their joint width or more apart: two lungs, as lungmask's R231 writes them, not a left
    upper and lower lobe."""
    x1, x2 = np.nonzero(labels == 1)[2], np.nonzero(labels == 2)[2]
    if not x1.size or not x2.size:
        return False
    width = max(int(x1.max()), int(x2.max())) - min(int(x1.min()), int(x2.min())) + 1
    return float(np.median(x2) - np.median(x1)) >= 0.25 * width


def _lobe_inputs(lobes_path: str | Path | None) -> list[str]:
    """The lobe map file(s) of a series, for its input fingerprint (a TotalSegmentator folder: its lobe files)."""
    if not lobes_path:
        return []
    if Path(lobes_path).is_dir():
        return [str(f) for _, f in sorted(lobe_files_in(Path(lobes_path)).items())]
    return [str(lobes_path)]


#: The masks a user may give for a series (``segmentation.masks_dir``, ``--masks DIR``): the files ctscore writes.
USER_MASKS = ("lungs", "lesions")


def find_user_masks(cfg: dict[str, Any], scan_id: str, series_uid: str) -> dict[str, Path]:
    """The edited masks of one series: ``<segmentation.masks_dir>/<scan_id or SeriesInstanceUID>/lungs.nii.gz``
    and/or ``lesions.nii.gz`` (or another of :data:`LOBE_SUFFIXES`): kind -> file; {} when none (or no folder set).
    The scan_id folder is used over the SeriesInstanceUID one (a copy of the series folder of OUT is the usual
    start)."""
    folder = cfg["segmentation"].get("masks_dir")
    if not folder:
        return {}
    for key in (scan_id, series_uid):
        # a crafted UID ('../../x', '/x') would name a folder outside masks_dir: none is named after it
        d = Path(folder) / key if key and Path(key).name == key and key not in (".", "..") else None
        if d is None or not d.is_dir():
            continue
        found = {}
        for kind in USER_MASKS:
            f = next((d / f"{kind}{x}" for x in LOBE_SUFFIXES if (d / f"{kind}{x}").is_file()), None)
            if f is not None:
                found[kind] = f
        if found:
            return found
    return {}


def masks_dir_warnings(folder: str | Path | None, tasks) -> list[str]:
    """What the start of a run says about ``--masks DIR`` (``tasks``: the run's scan_id and series_uid): folders
    that name no series of the run (a mistyped scan_id: their masks are not used), folders of a series holding
    image files that are not named ``lungs`` / ``lesions`` (Slicer's ``lungs.seg.nrrd``, ``Lungs.nii.gz``: not read),
    and series with a folder under both names (the scan_id one is used). A review found each of these scored from
    the segmenter without a word."""
    if not folder or not Path(folder).is_dir():
        return []
    tasks = list(tasks)
    names = {t.scan_id for t in tasks} | {t.series_uid for t in tasks if t.series_uid}
    try:
        subs = sorted(d for d in Path(folder).iterdir() if d.is_dir())
    except OSError:
        return []
    out = []

    def some(items: list[str]) -> str:
        return ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")

    stray = [d.name for d in subs if d.name not in names]
    if stray:
        out.append(f"--masks {folder}: {len(stray)} folder(s) name no series of this run ({some(stray)}): their masks "
                   "are not used; a folder is named by the scan_id of scans.csv or the SeriesInstanceUID")
    known = {f"{kind}{x}" for kind in USER_MASKS for x in LOBE_SUFFIXES}
    image_like = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".seg.nrrd")
    unread = []
    for d in subs:
        if d.name not in names:
            continue
        try:
            files = [f.name for f in d.iterdir() if f.is_file()]
        except OSError:
            continue
        unread += [f"{d.name}/{f}" for f in sorted(files) if f not in known and f.lower().endswith(image_like)]
    if unread:
        out.append(f"--masks {folder}: {len(unread)} image file(s) are not read ({some(unread)}): only lungs.nii.gz "
                   f"and lesions.nii.gz (or .nii, .nrrd, .mha, .mhd) are, named in lower case; export a Slicer "
                   "segmentation (.seg.nrrd) as a labelmap with the CT as reference geometry")
    both = [t.scan_id for t in tasks if t.series_uid and (Path(folder) / t.scan_id).is_dir()
            and (Path(folder) / t.series_uid).is_dir()]
    if both:
        out.append(f"--masks {folder}: {len(both)} series have a folder under their scan_id and one under their "
                   f"SeriesInstanceUID ({some(both)}): the scan_id folder's masks are used, the other's not")
    return out


def read_user_mask(path: str | Path, kind: str, orig: sitk.Image) -> np.ndarray:
    """An edited mask on the LPS original grid: ``lungs`` as labels 0 / 1 (right) / 2 (left), ``lesions`` as bool
    (any of ctscore's classes 1-3 is lesion: the classes are made again from the HU). The mask must lie on the CT's
    own grid (as ctscore writes it: size, spacing, origin and direction), and hold whole numbers of its kind:
    anything else fails the series ``MASKS_INVALID``, naming the file (a mask of another series, or one resampled,
    would be scored on the wrong voxels)."""
    from scoring.quantify import check_label_map_header
    from segmentation.base import sides_swapped

    try:
        check_label_map_header(path, orig, what=f"{kind} mask")
        img = sitk.ReadImage(str(path))
        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:  # a Slicer .seg.nrrd with layers
            raise ValueError(f"a {img.GetDimension()}-D image of {img.GetNumberOfComponentsPerPixel()} values per "
                             "voxel, not one 3-D label map (export the segmentation as a labelmap)")
        img = sitk.DICOMOrient(img, "LPS")
    except (RuntimeError, ValueError) as exc:
        raise SeriesError("MASKS_INVALID", f"{kind} mask {path} cannot be read: {str(exc).strip()[:200]}",
                          path) from None
    same = (img.GetSize() == orig.GetSize()
            and np.allclose(img.GetSpacing(), orig.GetSpacing(), rtol=1e-4, atol=1e-4)
            and np.allclose(img.GetOrigin(), orig.GetOrigin(), atol=0.1 * min(orig.GetSpacing()))
            and np.allclose(img.GetDirection(), orig.GetDirection(), atol=1e-4))
    if not same:
        def grid(im: sitk.Image) -> str:
            return (f"{' x '.join(map(str, im.GetSize()))} voxels of "
                    f"{' x '.join(f'{v:.3g}' for v in im.GetSpacing())} mm at "
                    f"({', '.join(f'{v:.1f}' for v in im.GetOrigin())})")
        raise SeriesError("MASKS_INVALID", f"{kind} mask {path} is not on this series' grid ({grid(img)}, the CT "
                          f"{grid(orig)}): a mask of another series, resampled, or cropped to the segments (a "
                          "viewer's default)? save it on the CT's grid, as ctscore writes lungs.nii.gz / "
                          "lesions.nii.gz (in Slicer: export to a labelmap with ctscore's lungs.nii.gz as reference "
                          "geometry; the CT itself serves only where ctscore stacked its slices unresampled, not "
                          "with NON_UNIFORM_SPACING_RESAMPLED, GANTRY_TILT_CORRECTED or SLICE_GAP_ALLOWED)", path)
    arr = sitk.GetArrayFromImage(img)
    allowed = (0, 1, 2) if kind == "lungs" else (0, 1, 2, 3)
    values = np.unique(arr)
    bad = [v for v in values.tolist() if v not in allowed]
    if bad:
        meaning = "0, 1 (right lung), 2 (left lung)" if kind == "lungs" else "0 and 1-3 (lesion; ctscore's classes)"
        raise SeriesError("MASKS_INVALID", f"{kind} mask {path} holds the values "
                          f"{', '.join(f'{v:.10g}' for v in bad[:5])}; a {kind} mask holds {meaning}", path)
    if kind == "lesions":
        return arr > 0
    arr = arr.astype(np.uint8)
    # the sides as the segmenters' masks are checked (LUNG_SIDES_SWAPPED), but refused: a reader's labels are the
    # reader's to fix (Slicer numbers segments in the order they were made; a review scored swapped labels 6 -> 7)
    if sides_swapped(arr):
        raise SeriesError("MASKS_INVALID", f"lungs mask {path}: its right lung (1) lies on the patient's left of its "
                          "left lung (2): labels swapped, or the mask mirrored; label the patient's right lung 1 and "
                          "the left 2", path)
    present = [v for v in (1, 2) if np.any(arr == v)]
    if len(present) == 1 and _two_lungs(arr == present[0]):
        raise SeriesError("MASKS_INVALID", f"lungs mask {path} labels both lungs {present[0]}: label the patient's "
                          "right lung 1 and the left 2", path)
    return arr


def _two_lungs(mask: np.ndarray) -> bool:
    """Whether one label's voxels are two lungs: its two largest pieces (on a grid of every second voxel) each hold
    at least a fifth of it, side by side (their centres further apart left-right than a quarter of its width)."""
    from scipy import ndimage as ndi

    small = mask[::2, ::2, ::2]
    lab, n = ndi.label(small)
    if n < 2:
        return False
    sizes = np.bincount(lab.ravel())[1:]
    a, b = np.argsort(sizes)[::-1][:2] + 1
    if min(sizes[a - 1], sizes[b - 1]) < 0.2 * small.sum():
        return False
    xs = np.flatnonzero(small.any(axis=(0, 1)))
    ca, cb = (ndi.center_of_mass(lab == k)[2] for k in (a, b))
    return abs(ca - cb) > 0.25 * (xs[-1] - xs[0] + 1)


def _read_lobe_files(folder: Path, orig: sitk.Image) -> np.ndarray:
    """The lobe map of a TotalSegmentator output folder (``lung_upper_lobe_right.nii.gz`` ...): each mask's nonzero
    voxels are its lobe; a lobe file absent leaves that lobe missing (LOBES_MISSING)."""
    from scoring.quantify import read_label_map

    lobes = None
    for code, f in sorted(lobe_files_in(folder).items()):
        try:
            mask = read_label_map(str(f), reference=orig) > 0
        except RuntimeError as exc:
            raise SeriesError("LOBES_UNREADABLE", f"lobe mask {f} cannot be read: {str(exc).strip()[:200]}",
                              f) from None
        except ValueError as exc:
            raise SeriesError("LOBES_UNREADABLE", str(exc), f) from None
        lobes = np.zeros(mask.shape, np.uint8) if lobes is None else lobes
        lobes[mask & (lobes == 0)] = code
    if lobes is None or not lobes.any():
        raise SeriesError("LOBES_EMPTY", f"the lobe masks in {folder} are empty on this CT", folder)
    return lobes


def _orient_like(arr: np.ndarray, lps_ref: sitk.Image, original: sitk.Image) -> sitk.Image:
    """A mask array on the LPS-oriented grid as an image in the source image's own orientation."""
    img = _to_image(arr.astype(np.uint8), lps_ref)
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(original.GetDirection())
    return sitk.DICOMOrient(img, code)


def _write_mask(arr: np.ndarray, lps_ref: sitk.Image, original: sitk.Image, path: Path) -> None:
    """Write a mask on the original grid (orientation of the source image restored). SimpleITK does not report
    a failed write (a full disk leaves a truncated file and a line on stderr), so the file is read back: an
    incomplete one raises OSError."""
    write_nifti(_orient_like(arr, lps_ref, original), path)
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 24):
                pass
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise OSError(f"{path.name} was not written completely (disk full?): {exc}") from None


def _total_text(value: Any, top: int) -> str:
    """A score total as the QC picture's title shows it: "6/24", or "missing" (zones the scan cannot see)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "missing"
    return f"{value:g}/{top}"


def table_patient_id(header: dict[str, Any], cfg: dict[str, Any]) -> str:
    """The patient id as the tables show it: a salted hash of the PatientID unless ``outputs.pseudonymize`` is
    off; empty without a PatientID."""
    patient = str(header.get("patient_id") or "")
    outs = cfg["outputs"]
    if outs["pseudonymize"] and patient:
        return pseudonym(patient, outs["pseudonym_salt"], "pt-", 10)
    return patient


def _dicom_seg_bytes(vol, res: dict[str, Any], segmenter, scan_id: str) -> bytes:
    from pipeline.dicom_seg import build_seg

    lungs_img = _orient_like(res["lungs"], res["orig"], vol.image)
    les_img = _orient_like(res["classes"], res["orig"], vol.image)
    edited = [k for k in USER_MASKS if any(f.startswith("MASKS_FROM_USER:") and k in f for f in res["flags"])]
    seg_ds = build_seg(vol.files, lungs_img, les_img, segmenter.model_id, edited=edited)
    log.info("%s: seg.dcm carries the patient and study attributes of its source images (not "
             "pseudonymous)", scan_id)
    buf = io.BytesIO()
    seg_ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def process_series(files: list[str], cfg: dict[str, Any], out_dir: str | Path, scan_id: str,
                   header: dict[str, Any] | None = None, segmenter=None,
                   inventory_flags: list[str] | None = None, input_id: str = "") -> dict[str, Any]:
    """The unit of work: one series in, one series folder out. Returns a small status dict.

    A scan that cannot be scored is a ``failed`` status, never an exception; but an output folder that cannot be
    written (a full disk, a read-only or vanished folder) is no fault of the scan and would fail every scan after
    it: that raises CTScoreError OUTPUT_UNWRITABLE, and the scan keeps no outcome (it is scored on resume).

    ``inventory_flags``: the fixes and warnings the inventory found for this series (ACQUISITIONS_MERGED,
    MISSING_SERIES_UID, ...); they go into the scan's QC flags with the loader's and the scoring's. ``input_id``: which
    INPUT the run was given (:func:`pipeline.batch.input_id_for`), recorded in ``result.json``.

    While it runs, the log records of the segmenters and the scoring (:data:`SCAN_LOGGERS`) begin with ``scan_id``."""
    token = _current_scan.set(scan_id)
    try:
        return _process_series(files, cfg, out_dir, scan_id, header, segmenter, inventory_flags, input_id)
    finally:
        _current_scan.reset(token)


def _process_series(files: list[str], cfg: dict[str, Any], out_dir: str | Path, scan_id: str,
                    header: dict[str, Any] | None, segmenter, inventory_flags: list[str] | None,
                    input_id: str) -> dict[str, Any]:
    """:func:`process_series`, its scan_id set for the log records."""
    from pipeline.batch import input_fingerprint
    from pipeline.loading import load_series
    from pipeline.qc import qc_png, qc_thumbnail
    from pipeline.reader_levels import levels_fingerprint, levels_for
    from scoring.landmarks import estimated_flags, reader_flags, uncertain_flags
    from segmentation.factory import get_segmenter

    out_dir = Path(out_dir)
    header = dict(header or {})
    status: dict[str, Any] = {"scan_id": scan_id, "series_uid": header.get("series_uid", ""), "status": "failed"}
    t0 = time.perf_counter()
    folder = None
    writing = False  # from here on an OSError is the output folder's (OUTPUT_UNWRITABLE), not the scan's
    try:
        t = time.perf_counter()
        vol = load_series(files, cfg)
        read_s = time.perf_counter() - t
        check_cancelled()
        header.update({k: v for k, v in vol.meta.items() if k not in header or not header[k]})
        segmenter = segmenter or get_segmenter(cfg)
        lobes_path = find_user_lobes(cfg, header.get("series_uid", ""))
        reader_levels, reader_source = levels_for(cfg, scan_id, header.get("series_uid", ""))
        masks = find_user_masks(cfg, scan_id, header.get("series_uid", ""))
        res = analyse_volume(vol.image, cfg, segmenter, lobes_path=lobes_path, padding=vol.padding_mask,
                             reader_levels=reader_levels, reader_source=reader_source, user_masks=masks)
        if cfg["scoring"]["lobar"].get("lobes_dir") and lobes_path is None:
            res["flags"].append("LOBES_NOT_FOUND")
        for flag in res["flags"]:
            if flag == "LOBES_SIDES_SWAPPED" or flag.startswith("LOBES_PARTIAL:"):
                from pipeline.flags import explain

                log.warning("%s: no lobar scores from %s: %s (%s)", scan_id,
                            f"lobe map {lobes_path}" if lobes_path else "the segmenter's lobes", flag, explain(flag))
        res["timings"] = {"read_s": read_s, **res["timings"]}
        check_cancelled()

        t = time.perf_counter()
        writing = True
        folder = SeriesFolder(out_dir, scan_id)
        outs = cfg["outputs"]
        if outs["write_masks"]:
            _write_mask(res["lungs"], res["orig"], vol.image, folder.path("lungs.nii.gz"))
            _write_mask(res["classes"], res["orig"], vol.image, folder.path("lesions.nii.gz"))
        levels = {k: lm.z_mm for k, lm in res["landmarks"].items()
                  if k in ("suprasternal_notch", "aortic_arch", "carina", "bronchus_intermedius", "ipv",
                           "dome_right", "dome_left")}
        if outs["write_dicom_seg"]:
            try:
                seg_bytes = _dicom_seg_bytes(vol, res, segmenter, scan_id)
            except Exception as exc:  # noqa: BLE001 - an export the headers do not allow must not lose the scores
                from pipeline.dicom_seg import without_quoted_values

                # the message without the header values it quotes ('1923-05-17'), the traceback (which has
                # them) only in debug logs: the console and --log-file must not repeat an identifier
                log.warning("%s: no seg.dcm: %s: %s", scan_id, type(exc).__name__, without_quoted_values(str(exc)))
                log.debug("%s: no seg.dcm", scan_id, exc_info=True)
                res["flags"].append("DICOM_SEG_FAILED")
            else:
                atomic_write_bytes(folder.path("seg.dcm"), seg_bytes)  # a full disk is OUTPUT_UNWRITABLE
        from pipeline.hu_checks import flags_for as hu_flags

        flags = list(dict.fromkeys(list(inventory_flags or []) + vol.flags + res["flags"] +
                                   estimated_flags(res["landmarks"]) + uncertain_flags(res["landmarks"]) +
                                   reader_flags(res["landmarks"]) +
                                   hu_flags(res["hu_check"], header.get("contrast"),
                                            header.get("slice_thickness") or vol.meta.get("slice_spacing_mm"))))
        if outs["write_qc_png"]:
            # a picture that cannot be drawn must not lose the scores: the scan is scored without it and flagged.
            # Both pictures from one set of arrays: an axial reformat of tilted slices (picture_arrays)
            pic = None
            try:
                pic = picture_arrays(res)
                png = qc_png(pic["hu"], pic["lungs"], pic["classes"], pic["z_mm"], pic["spacing_zyx"], levels,
                             title=f"{scan_id}  six-zone {_total_text(res['row']['six_zone_total'], 24)}  "
                                   f"zhang900 {_total_text(res['row']['zhang900_total'], 900)}"
                                   + ("  (axial reformat)" if pic["reformatted"] else ""),
                             estimated={name for name, lm in res["landmarks"].items() if lm.method == "estimated"},
                             flags=flags,
                             reader={name for name, lm in res["landmarks"].items() if lm.method == "reader"},
                             pneumothorax=pic["pneumothorax"])
                thumb = qc_thumbnail(png)
            except Exception as exc:  # noqa: BLE001 - a QC picture must not lose the scores
                log.warning("%s: no qc.png: %s: %s", scan_id, type(exc).__name__, exc, exc_info=True)
                flags.append("QC_PICTURE_FAILED:qc.png")
            else:
                atomic_write_bytes(folder.path("qc.png"), png)  # a full disk is OUTPUT_UNWRITABLE
                atomic_write_bytes(folder.path("thumb.png"), thumb)
            from pipeline.qc_levels import levels_png
            try:
                pic = pic or picture_arrays(res)
                png = levels_png(pic["hu"], pic["lungs"], pic["z_mm"], pic["spacing_zyx"], res["landmarks"],
                                 title=scan_id, sagittal_x=pic["sagittal_x"], note=_tilt_note(flags))
            except Exception as exc:  # noqa: BLE001 - a QC picture must not lose the scores
                log.warning("%s: no levels.png: %s: %s", scan_id, type(exc).__name__, exc, exc_info=True)
                flags.append("QC_PICTURE_FAILED:levels.png")
            else:
                atomic_write_bytes(folder.path("levels.png"), png)
            del pic
        row = {
            "scan_id": scan_id, "patient_id": table_patient_id(header, cfg), "study_date": header.get("study_date", ""),
            "series_time": header.get("series_time", ""),
            "series_uid": header.get("series_uid", ""), "status": "ok", "segmenter": segmenter.name,
            **res["row"], "qc_flags": ";".join(flags), "n_slices": int(res["hu"].shape[0]),
            "slice_thickness_mm": header.get("slice_thickness"), "manufacturer": header.get("manufacturer", ""),
            "kernel": header.get("kernel", ""), "patient_position": header.get("patient_position", ""),
        }
        outs_cfg = cfg["outputs"]
        digest = image_digest(vol.image, outs_cfg["pseudonym_salt"] if outs_cfg["pseudonymize"] else None)
        res["timings"]["write_s"] = time.perf_counter() - t
        result = {
            "ctscore_version": __version__, "scan_id": scan_id, "scores": row,
            "zones": res["zones"], "landmarks": {k: lm.to_dict() for k, lm in res["landmarks"].items()},
            "qc_flags": flags, "segmenter": {"name": segmenter.name, "model_id": segmenter.model_id,
                                             "device": str(getattr(segmenter, "device", "cpu")),
                                             **_weights_hashes(segmenter)},
            "environment": _environment(),  # a result.json shared or merged alone still says what made it
            "config_sha256": config_hash(cfg), "config": redact_secrets(cfg), "timings_s": res["timings"],
            "pseudonym_salt_id": salt_id(cfg["outputs"]["pseudonym_salt"], bool(cfg["outputs"]["pseudonymize"])),
            "input_fingerprint": levels_fingerprint(input_fingerprint(list(files) + _lobe_inputs(lobes_path)
                                                                      + [str(f) for f in masks.values()]),
                                                    reader_levels),
            "user_masks": {kind: f.name for kind, f in masks.items()},  # which files of --masks DIR were scored
            "lobe_map_file": Path(lobes_path).name if lobes_path else "",  # which of --lobes DIR's files
            "input_id": input_id,
            "hu_check": res["hu_check"],  # the measures behind HU_CALIBRATION, DENSE_LUNG, METAL (pipeline.hu_checks)
            "orientation_check": res.get("orientation_check"),  # behind ORIENTATION_SUSPECT (pipeline.orientation_check)
            "grid": {"size_xyz": list(vol.image.GetSize()), "spacing_xyz": list(vol.image.GetSpacing()),
                     "working_spacing_xyz": list(cfg["resample"]["spacing_mm"])},
            "image_sha256": digest,
        }
        atomic_write_json(folder.path("result.json"), result)
        folder.commit()
        status.update(status="ok", row=row, zones=res["zones"], timings=res["timings"], landmarks=result["landmarks"])
    except CTScoreError as exc:
        if folder:
            folder.discard()
        status.update(code=exc.code, message=exc.message, path=exc.path or series_location(files))
    except EarlierCopyStuck as exc:  # that scan's folder, not the output folder: the batch goes on
        if folder:
            folder.discard()
        log.warning("%s: not given new results: %s", scan_id, exc.strerror)
        status.update(code="OUTPUT_UNWRITABLE", message=f"the new results were not put in place: {exc.strerror}; the "
                      f"results in {scan_id} are of an earlier run; remove that folder by hand, then run again with "
                      "--retry-failed",
                      path=series_location(files))
    except Exception as exc:  # one bad scan never stops a batch
        if folder:
            folder.discard()
        if writing and isinstance(exc, OSError):
            raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot write the results of {scan_id} ({exc.strerror or exc}); "
                               "free space or fix the output folder, then run the same command again to resume",
                               out_dir) from exc
        where = series_location(files)
        log.warning("scan %s (%s): unexpected error %s: %s", scan_id, where, type(exc).__name__, exc,
                    exc_info=True)
        status.update(code="INTERNAL_ERROR", message=f"{type(exc).__name__}: {exc}",
                      path=where, traceback=traceback.format_exc(limit=8))
    except BaseException:  # Ctrl-C, SIGTERM: no outcome, and no temporary folder left behind
        if folder:
            folder.discard()
        raise
    status["seconds"] = round(time.perf_counter() - t0, 2)
    return status


def run_pipeline(input_path: str | Path, out_dir: str | Path, cfg: Any = None,
                 series_uid: str | None = None, all_series: bool = False, batch: Any = None) -> dict[str, Any]:
    """Score every selected series under ``input_path``; write the run tables to ``out_dir`` (``ctscore run``).

    ``cfg``: None (the defaults), a mapping of sections with only the keys you change (e.g.
    ``{"segmentation": {"method": "classical"}}``) or a whole configuration from
    :func:`pipeline.config.load_config`, or the path of a YAML file (``--config``); merged over the defaults and
    checked as the CLI checks it (:func:`pipeline.config.resolve_config`), paths (``pathlib.Path``), tuples, numpy
    arrays and numpy scalars taken as text, lists and numbers. The options of ``ctscore run`` that are config keys:
    ``--segmenter NAME`` and ``--model PATH`` set ``segmentation.method`` (``"classical"``, ``"monai"`` or a model
    folder), ``-d/--device`` sets ``segmentation.device``, ``--lobes DIR`` sets ``scoring.lobar.lobes_dir`` (made
    absolute, from the CLI or here), ``--landmarks CSV`` sets ``landmarks.reader_levels`` and ``--masks DIR``
    ``segmentation.masks_dir`` (likewise), ``--dicom-seg`` sets ``outputs.write_dicom_seg: true``; ``--config``/``--set`` are
    ``load_config(paths, overrides)``. ``series_uid`` and ``all_series`` are ``--series-uid`` and ``--all-series``.

    ``batch``: a :class:`pipeline.batch.BatchOptions`, a mapping of its fields (e.g. ``{"workers": 2}``) or None
    (a serial, resumable run, per-scan timeout 3600 s: the CLI's defaults); it picks the executor (serial, dask
    local or SLURM), the shard, resume and the per-scan timeout (the ``--executor``, ``--workers``, ... options).

    Returns a dict:

    - ``n_series`` (int): series of this run (of this shard), ``n_ok`` (int) scored, ``n_failed`` (int) failed;
    - ``n_skipped`` (int): of them, finished in an earlier run into ``out_dir`` and not scored again (resume);
      ``n_run`` (int): scored (or tried) in this call; ``n_failed_kept`` (int): of the failed ones, those that failed
      in an earlier run and were not tried again (``--retry-failed`` / ``BatchOptions.retry_failed`` tries them);
    - ``scans`` (pandas DataFrame): ``scans.csv``, one row per series (failed ones with ``status`` "failed");
    - ``failures`` (pandas DataFrame): ``failures.csv``, one row per failed series: why (``code``, ``message``,
      ``path``, with ``scan_id`` and ``series_uid``; no rows when none failed);
    - ``out_dir`` (str): the folder holding the tables: ``out_dir``, or ``out_dir/shards/K-of-N`` for a shard;
    - ``executor`` (str): ``"serial"``, ``"local"`` or ``"slurm"``;
    - ``unreadable`` (str or None): the warning naming files and folders under the input that could not be read
      (``UNREADABLE_FILE`` rows of ``inventory.csv``: their series are not in the batch);
    - ``warnings`` (list of str): the messages of every warning logged in this process during the call (the
      built-in salt, earlier results replaced, unreadable files, per-series problems...), in order, as the console
      shows them: a notebook can test them in code. With ``executor`` local or slurm, the warnings a worker process
      logs while it scores a series are on the console (and in ``--log-file``) only.

    The same tables are files in the returned ``out_dir``: ``scans.csv``, ``failures.csv`` (why a series failed),
    ``zones.csv`` (the zone rows, not returned), each with a Parquet twin, and ``run.json`` (provenance).

    A series that cannot be scored raises nothing: it is a row of ``failures``. Raises
    :class:`~pipeline.errors.CTScoreError` (the ``code`` the CLI prints): before anything is written, ConfigError
    (BAD_CONFIG) for a bad configuration or batch option, ModelError (BAD_MODEL) for a model that does not load,
    OutputLocked (OUTPUT_LOCKED) while another ctscore process writes into ``out_dir`` (or the same shard of it),
    INPUT_NOT_FOUND for an input that is not there or cannot be listed; OUTPUT_IS_INPUT when ``out_dir`` is the
    input folder itself; READER_LEVELS_INVALID for a reader's level table that cannot be used; NoEligibleSeries (NO_ELIGIBLE_SERIES) when
    nothing under the input can be scored (``inventory.csv`` in ``out_dir`` says why); OUTPUT_UNWRITABLE when
    ``out_dir`` cannot be written.
    """
    from pipeline.logcapture import collect_warnings

    with collect_warnings() as said:
        summary = _run_pipeline(input_path, out_dir, cfg, series_uid, all_series, batch)
    summary["warnings"] = list(said)
    return summary


def _run_pipeline(input_path: str | Path, out_dir: str | Path, cfg: Any, series_uid: str | None, all_series: bool,
                  batch: Any) -> dict[str, Any]:
    from pipeline import install_problem
    from pipeline.batch import batch_options, lock_path, preflight, run_batch, writer_lock
    from pipeline.config import resolve_config, warn_unused_settings
    from pipeline.inventory import build_inventory, check_input, inventory_table
    from pipeline.reader_levels import reader_levels_table

    if problem := install_problem():
        raise CTScoreError("INSTALL_SHADOWED", problem)
    cfg = resolve_config(cfg)  # merged over the defaults and validated, as the CLI's load_config
    if all_series:  # recorded as the setting it is (run.json, METHODS.md said "the best-ranked one of each study")
        cfg["selection"]["one_per_study"] = False
    batch = batch_options(batch)
    batch.validate()
    check_input(input_path)  # INPUT_NOT_FOUND before the model is loaded (seconds, and a log line, for nothing)
    in_folder = Path(input_path) if Path(input_path).is_dir() else Path(input_path).parent  # a file: its folder
    if Path(out_dir).resolve() == in_folder.resolve():
        raise CTScoreError("OUTPUT_IS_INPUT", "the output folder is the input folder: the tables, report.html and "
                           "scan folders would be written among the images (replacing a scans.csv or report.html "
                           "there); give the outputs a folder of their own (one inside INPUT is fine: it is not read)",
                           out_dir)
    reader_levels_table(cfg)  # a reader's level table that cannot be used (READER_LEVELS_INVALID): refused at once
    masks = cfg["segmentation"].get("masks_dir")
    if masks and Path(masks).resolve() == Path(out_dir).resolve():
        raise CTScoreError("OUTPUT_IS_INPUT", "--masks is the output folder: each run would write the masks it read "
                           "over them (lesions made again from the HU, cut to the lungs) and score them again; "
                           "copy the series folders to edit into a folder of their own and give that", masks)
    preflight(cfg, batch)  # the model, the device, the SLURM profile: a bad one leaves no OUT behind
    warn_unused_settings(cfg)
    out = Path(out_dir)
    if lock_path(out).is_file():  # a writer now is refused before the inventory reads every header (minutes on a
        with writer_lock(out, batch.shard_name()):  # large input); the lock is taken again for the writing below
            pass
    inventory = build_inventory(input_path, cfg, series_uid=series_uid, all_series=all_series)
    # Every file and stack with its decision (used, skipped and why), as `ctscore scan` writes it.
    with writer_lock(out, batch.shard_name()):  # refused (OUTPUT_LOCKED) while another run writes into OUT
        try:
            out.mkdir(parents=True, exist_ok=True)
            table = inventory_table(inventory.files)
            atomic_write_bytes(out / "inventory.csv", table.to_csv(index=False).encode())
            atomic_write_bytes(out / "inventory.parquet", table.to_parquet(index=False))
        except OSError as exc:
            raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot write into the output folder ({exc.strerror or exc})",
                               out) from exc
        if cfg["outputs"]["pseudonymize"] and cfg["outputs"]["pseudonym_salt"] == DEFAULT_SALT:
            log.warning("pseudonyms are made with the built-in salt %r: anyone holding the PatientIDs can recompute "
                        "them, and a numeric PatientID is found by trying every number (seconds for 7 digits); set "
                        "outputs.pseudonym_salt to a secret of your site (kept out of run.json) before sharing "
                        "outputs", DEFAULT_SALT)
        unreadable = unreadable_warning(inventory.files, out / "inventory.csv")
        if not inventory.chosen:
            raise NoEligibleSeries(no_eligible_message(inventory, series_uid, cfg, out / "inventory.csv", input_path),
                                   input_path)
        user_input_warnings(cfg, inventory.chosen)  # a level row naming two series: READER_LEVELS_INVALID
        lobar = cfg["scoring"]["lobar"]
        for message in lobes_dir_warnings(lobar.get("lobes_dir") if lobar.get("enabled", True) else None,
                                          [c.series_uid for c in inventory.chosen]):
            log.warning("%s", message)
        before = _status_records(out)
        summary = run_batch(inventory.chosen, out_dir, cfg, batch, input_path=str(Path(input_path).resolve()),
                            series_uid=series_uid)
        summary["n_failed_kept"] = _failed_kept(out, summary, before)
        summary["unreadable"] = unreadable  # said again at the end of the console summary
        return summary


def user_input_warnings(cfg: dict[str, Any], chosen) -> list[str]:
    """The start of a run's checks of the reader's level table and the edited masks against its series
    (:func:`reader_levels_warning`, :func:`masks_dir_warnings`): warnings logged and returned; a level table row naming
    two series refuses the run."""
    folder = cfg["segmentation"].get("masks_dir")
    if not folder and not cfg["landmarks"].get("reader_levels"):
        return []
    from pipeline.batch import tasks_for

    tasks = tasks_for(chosen, cfg)
    messages = reader_levels_warning(cfg, chosen, tasks)
    for message in masks_dir_warnings(folder, tasks):
        log.warning("%s", message)
        messages.append(message)
    return messages


def reader_levels_warning(cfg: dict[str, Any], chosen, tasks=None) -> list[str]:
    """The reader's level table (``landmarks.reader_levels``) against the series of this run
    (:func:`pipeline.reader_levels.check_against_run`): a row whose two ids name different series refuses the run
    (READER_LEVELS_INVALID); the warnings (logged, and returned) name series on two rows and rows naming no series of
    this run. [] when no table is given."""
    from pipeline.batch import tasks_for
    from pipeline.reader_levels import check_against_run, reader_levels_table

    table = reader_levels_table(cfg)
    if table is None:
        return []
    messages = check_against_run(table, tasks if tasks is not None else tasks_for(chosen, cfg))
    for message in messages:
        log.warning("%s", message)
    return messages


def unreadable_warning(files, table: Path) -> str | None:
    """A warning (logged, and returned) naming the files and folders under INPUT that could not be read (a folder
    without permission, a link to nothing, a damaged header): their series are missing from the batch, which
    otherwise ended 'all scored', exit 0, with the cause only in inventory.csv."""
    if files is None or not len(files) or "file_code" not in files.columns:
        return None
    bad = files[files["file_code"] == "UNREADABLE_FILE"]
    if bad.empty:
        return None
    examples = "; ".join(f"{r.path} ({r.file_detail})" for r in bad.head(3).itertuples())
    message = (f"{len(bad)} file(s) or folder(s) under the input could not be read and are not in this batch: "
               f"{examples}{'; ...' if len(bad) > 3 else ''} (all of them: UNREADABLE_FILE rows of {table})")
    log.warning("%s", message)
    return message


def no_eligible_message(inventory, series_uid: str | None, cfg: dict[str, Any], table: Path,
                        input_path: str | Path | None = None) -> str:
    """The NO_ELIGIBLE_SERIES message of ``ctscore run``: with ``--series-uid``, why that series is not scored
    (not found, or the hard filter that refused it and what to do); notes when the input holds NIfTI/NRRD/MHA
    files or archives (not read), hidden folders, or is an output folder, a DICOMDIR without its images, one file
    (:func:`pipeline.inventory.input_hints`); and where the inventory is."""
    from pipeline.inventory import file_summary, input_hints, requested_series_problem

    parts = ["no eligible CT series found under the input"]
    if not inventory.candidates:
        parts[0] += f" (no DICOM image stack in it: {file_summary(inventory.files)})"
    if series_uid:
        parts.append(requested_series_problem(inventory.candidates, series_uid, cfg))
    parts += input_hints(inventory.files, input_path, inventory.candidates)
    parts.append(f"every file and stack with the reason it was skipped is in {table} (or run `ctscore scan INPUT`)")
    return "; ".join(parts)


def _status_records(out: Path) -> dict[str, tuple[int, int, int]]:
    """The per-scan records under ``out`` now (name -> inode, mtime, size), to tell after a run which were kept."""
    from pipeline.batch import STATUS_DIR

    try:
        with os.scandir(out / STATUS_DIR) as entries:
            # os.stat, not the entry's cached stat: on Windows that has no inode (0), and every record looked kept
            return {e.name: (st.st_ino, st.st_mtime_ns, st.st_size) for e in entries
                    if e.name.endswith(".json") and (st := os.stat(e.path))}
    except OSError:
        return {}


def _failed_kept(out: Path, summary: dict[str, Any], before: dict[str, tuple[int, int, int]]) -> int:
    """How many of the run's failed series kept the record of an earlier run (not tried again: resume)."""
    from pipeline.batch import record_path

    kept = 0
    failures = summary.get("failures")
    for scan_id in ([] if failures is None else failures["scan_id"].astype(str)):
        path = record_path(out, scan_id)
        try:
            st = path.stat()
        except OSError:
            continue
        kept += before.get(path.name) == (st.st_ino, st.st_mtime_ns, st.st_size)
    return kept


def landmark_rows(scan_id: str, landmarks: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``landmarks.csv`` for one scan, from its result.json ``landmarks`` (name -> Landmark.to_dict()),
    in the result's order."""
    rows = []
    for name, lm in landmarks.items():
        if isinstance(lm, dict):
            row = {"scan_id": scan_id, "landmark": str(lm.get("name") or name),
                   **{c: lm.get(c) for c in LANDMARK_COLUMNS[2:]}}
            for c in ("z_mm", "ctscore_z_mm"):  # 0.01 mm: the levels are placed on a grid of 0.5 mm or more
                if isinstance(row[c], (int, float)):
                    row[c] = round(float(row[c]), 2)
            rows.append(row)
    return rows


def write_run_tables(out_dir: Path, statuses: list[dict[str, Any]], cfg: dict[str, Any] | None, segmenter,
                     seconds: float, input_path: str = "", provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """scans.csv, zones.csv, failures.csv, landmarks.csv (with their Parquet twins), data_dictionary.csv, run.json
    and report.html from per-series statuses.

    ``segmenter`` is a segmenter or a ``{"name", "model_id"}`` dict; ``cfg`` may be None when it is not
    known (``ctscore aggregate`` of results made elsewhere). An output folder that cannot be written (a full disk)
    raises CTScoreError OUTPUT_UNWRITABLE; the per-scan results stay, and a rerun (or ``ctscore aggregate``) writes
    the tables.
    """
    from pipeline.outputs import clear_tables_pending

    try:
        summary = _write_run_tables(out_dir, statuses, cfg, segmenter, seconds, input_path, provenance)
        clear_tables_pending(out_dir)  # the tables match the scans' results again
        return summary
    except OSError as exc:
        raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot write the run tables ({exc.strerror or exc}); free space, "
                           "then run the same command again (finished scans are kept)", out_dir) from exc


def _write_run_tables(out_dir: Path, statuses: list[dict[str, Any]], cfg: dict[str, Any] | None, segmenter,
                      seconds: float, input_path: str = "", provenance: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
    if not isinstance(segmenter, dict):
        segmenter = {"name": segmenter.name, "model_id": segmenter.model_id}
    rows, zones, failures, levels = [], [], [], []
    for st in statuses:
        if st["status"] == "ok":  # the settings that made it, from its result.json: a merged table shows a mix
            rows.append({**st["row"], "ctscore_version": st.get("ctscore_version", ""),
                         "model_id": (st.get("segmenter") or {}).get("model_id", ""),
                         "scores_config_sha256": scores_config_hash(st.get("config"))[:12],
                         "device": device_text((st.get("segmenter") or {}).get("device", "")),
                         "pseudonym_salt_id": st.get("pseudonym_salt_id", "")})
            zones.extend({"scan_id": st["scan_id"], **z} for z in st["zones"])
            rows_of_scan = landmark_rows(st["scan_id"], st.get("landmarks") or {})
            if not rows_of_scan:  # a result.json edited by hand, or made by hand: every scored scan has levels
                log.warning("%s: its result.json has no landmark levels: no rows in landmarks.csv", st["scan_id"])
            levels.extend(rows_of_scan)
        else:
            rows.append({"scan_id": st["scan_id"], "patient_id": st.get("patient_id", ""),
                         "study_date": st.get("study_date", ""), "series_uid": st.get("series_uid", ""),
                         "status": "failed"})
            failures.append({k: st.get(k, "") for k in FAILURE_COLUMNS})
    scans_df = atomic_write_table(out_dir / "scans.csv", rows, SCAN_COLUMNS)
    atomic_write_table(out_dir / "zones.csv", zones, ZONE_COLUMNS)
    failures_df = atomic_write_table(out_dir / "failures.csv", failures, FAILURE_COLUMNS)
    atomic_write_table(out_dir / "landmarks.csv", levels, LANDMARK_COLUMNS)
    write_data_dictionary(out_dir)  # the codebook of the four tables, beside them
    from pipeline.batch import scan_sources

    sources = scan_sources(statuses)
    run = {
        "ctscore_version": __version__,
        **({"source": _source_revision()} if _source_revision() else {}),
        # the code revisions that scored the ok scans (result.json's environment.source; "" an installed release):
        # after a resume or an aggregate, not only this process's
        **({"sources": dict(sorted(sources.items()))} if sources else {}),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": dict(_versions()),
        "input": input_path,
        "config": redact_secrets(cfg),
        "config_sha256": config_hash(cfg) if cfg is not None else "",
        "segmenter": segmenter,
        "n_series": len(statuses),
        "n_ok": sum(st["status"] == "ok" for st in statuses),
        "n_failed": sum(st["status"] != "ok" for st in statuses),
        "seconds": round(seconds, 2),
        # the time the series of these tables took when each was scored (in this call or an earlier one): unlike
        # ``seconds``, the same after a resume that scored nothing or a ctscore aggregate
        "scoring_seconds": round(sum(float(st.get("seconds") or 0) for st in statuses), 2),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "timings_s": {st["scan_id"]: st.get("timings", {}) for st in statuses},
    }
    run.update(provenance or {})  # ctscore aggregate: the shards' input, versions and time, not its own
    # text that is not valid UTF-8 (an input folder with a Latin-1 name) as the tables write it: a strict JSON reader
    # refuses the lone surrogates json.dumps would write
    atomic_write_json(out_dir / "run.json", printable_deep(run))
    from pipeline.report import write_run_report
    write_run_report(out_dir)  # OUT/report.html, from the files just written
    return {"n_series": run["n_series"], "n_ok": run["n_ok"], "n_failed": run["n_failed"],
            "scans": scans_df, "failures": failures_df, "out_dir": str(out_dir)}


def _weights_hashes(segmenter) -> dict[str, Any]:
    """The full sha256 of the model's files (model_id is a 16-hex digest of them), where the segmenter has them."""
    hashes = getattr(segmenter, "hashes", None)
    if isinstance(hashes, dict) and hashes:
        return {"files_sha256": dict(sorted(hashes.items()))}
    sha = getattr(segmenter, "sha256", None)
    return {"files_sha256": {"weights": sha}} if isinstance(sha, str) and sha else {}


def image_digest(image: sitk.Image, salt: str | None = None) -> str:
    """sha256 of the HU volume as scored (its float32 voxels, then its size, spacing, origin and direction): the same
    images decoded alike give the same digest wherever they lie and whatever their files are called, so a result can
    be matched to its images (``input_fingerprint`` is of paths, sizes and times). With ``salt`` (the pseudonym salt,
    when outputs are pseudonymous) an HMAC-SHA256 keyed with it: whoever holds the same images elsewhere cannot
    link a pseudonymous result to them without the site's salt, as with scan_id and patient_id."""
    voxels = np.ascontiguousarray(sitk.GetArrayViewFromImage(image), dtype=np.float32)
    h = hmac.new(salt.encode(), digestmod=hashlib.sha256) if salt is not None else hashlib.sha256()
    h.update(memoryview(voxels).cast("B"))
    geometry = (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    h.update(json.dumps([[round(float(v), 6) for v in part] for part in geometry]).encode())
    return h.hexdigest()


def _environment() -> dict[str, Any]:
    """Python, platform, the packages' versions and torch's thread count (results can differ in the last voxel
    between thread counts) of the process that scored a scan."""
    import sys

    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "versions": dict(_versions())}
    if "torch" in sys.modules:
        env["torch_threads"] = sys.modules["torch"].get_num_threads()
    source = _source_revision()
    if source:
        env["source"] = source
    env["code_sha256"] = code_digest()
    return env


#: ctscore's own code, for :func:`code_digest`: the packages' Python files and the configurations' YAML files.
CODE_FILES = (("pipeline", "*.py"), ("scoring", "*.py"), ("segmentation", "*.py"), ("configs", "*.yaml"))


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of ctscore's code as it runs here (:data:`CODE_FILES`: each file's path under the install and its
    bytes, in path order; the model's weights are named by ``model_id``). Recorded in result.json and run.json: a
    copy installed from an edited folder (``pip install .``, not ``-e``) carried its release's version and no
    revision, and its results mixed with the release's on resume without a word (a packaging audit, 2026-12-06)."""
    return tree_digest(Path(__file__).resolve().parents[1])


def tree_digest(root: Path) -> str:
    """:func:`code_digest` of the ctscore tree at ``root``."""
    import hashlib

    h = hashlib.sha256()
    files = sorted((f.relative_to(root).as_posix(), f) for package, pattern in CODE_FILES
                   for f in (root / package).rglob(pattern) if f.is_file() and "__pycache__" not in f.parts)
    for rel, f in files:
        try:
            data = f.read_bytes()
        except OSError:
            data = b"unreadable"
        h.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _source_revision() -> str:
    """Which code scored: the git commit of a run from a checkout (an editable install), with "+local changes" and
    the code's digest (:func:`code_digest`, 12 hex) when its files differ from that commit; ``installed, code
    <digest>`` for an installed copy (a release, or a folder installed with ``pip install .``: the digest tells an
    edited copy from the release), and ``code <digest>`` when git cannot tell. A version label alone cannot prove
    which code made a result when the code was edited (a reproducibility audit)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    code = code_digest()[:12]
    if not (root / ".git").exists():
        return f"installed, code {code}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # not another repository's (a hook's)
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True, env=env).stdout.strip()
        # --no-optional-locks: git status refreshes no index file in the user's checkout
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no", "--",
                                "pipeline", "scoring", "segmentation", "configs"], capture_output=True, text=True,
                               timeout=10, check=True, env=env).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:  # no git, a checkout of another owner, ...
        log.debug("the source revision is not known: %s", exc)
        return f"code {code}"
    return f"git {head}" + (f" +local changes, code {code}" if dirty else "") if head else f"code {code}"


@functools.lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("numpy", "scipy", "SimpleITK", "pydicom", "torch", "monai", "pandas", "highdicom", "safetensors",
                "scikit-image", "matplotlib", "Pillow", "pyarrow", "dask", "distributed", "nibabel", "statsmodels",
                "scikit-learn", "python-gdcm", "pylibjpeg", "pylibjpeg-openjpeg"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out

