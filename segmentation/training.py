"""Training of the MONAI lung/lesion network from clean backgrounds plus synthetic lesions.

Two steps, both behind ``ctscore train`` / ``scripts/train_segmenter.py``:

1. :func:`prepare_cache`: each background (a DICOM series folder, or a :class:`Background`: a DICOM
   folder or an image file with its own label map, e.g. listed in a YAML file read by
   :func:`read_backgrounds_file`) is loaded, oriented LPS, segmented by the teacher (the classical segmenter, on the pipeline's 1.5 mm working grid) unless the folder has
   user masks, resampled to the model grid, cropped to the body and written as a compressed ``.npz``
   (``image`` int16 HU, ``lungs`` uint8 1 right / 2 left, optional ``lesions`` uint8, ``spacing``,
   ``source``: what it was made from, so a changed image, label file or option makes it again (label files by their
   sha256), ``warnings``: what was said while it was made, said again when it is reused, and, for own labels,
   ``checks``), written atomically. User label files that do not fit their CT (unreadable, one lung missing, not on the CT's
   geometry, mirrored head-feet or front-back against it, right and left swapped) are refused naming the file.
   User masks: ``lungs.nii.gz`` (or ``lung``, any case; .nii, .nrrd, .seg.nrrd, .mha, .mhd; 1 right, 2 left; what
   ``ctscore run`` writes) and optionally ``lesions.nii.gz`` (or ``lesion``) next to the DICOM files (or in
   ``<folder>/labels/``); other image files there are named in a warning. A case with its own
   lesion mask is trained on as it is (no synthesis); a case with lungs only gets synthetic lesions.
2. :func:`train`: a MONAI ``CacheDataset`` over the cached cases, random transforms (lesion synthesis,
   left-right flip with label swap, crop, affine scaling = spacing variety, optional smooth deformation = anatomy variety, blur = kernel and slice
   thickness variety, noise, intensity scale/shift), a U-Net (:mod:`segmentation.network`), Dice + CE
   on the lung head and Dice + BCE on the lesion head, AdamW with cosine decay, mixed precision on CUDA.
   Writes ``model.safetensors``, ``model.yaml``, ``manifest.json`` (sha256) and ``train_log.json``; a run cut short
   by ``max_minutes`` says so in a warning and in the log (``stopped_by``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

# The clean chest scans of ../shared/data/chest used as training backgrounds, and the held-out one.
DEFAULT_BACKGROUNDS = ["itkelastix00", "lung_pet_ct_dx_A0002", "ge_mister_ct"]
HELD_OUT_BACKGROUND = "normal001"

DEFAULT_TRAIN: dict[str, Any] = {
    "model_spacing_mm": [2.5, 2.5, 2.5],  # z, y, x
    "hu_window": [-1024.0, 400.0],
    "roi_size": [96, 128, 128],  # z, y, x training crop on the model grid
    "batch_size": 4,
    "iterations": 3000,
    "max_minutes": 7.5,
    "lr": 2e-3,
    "weight_decay": 1e-5,
    "lesion_weight": 1.0,
    "seed": 20240,
    "num_workers": 8,
    "samples_per_volume": 32,
    "teacher_spacing_mm": [1.5, 1.5, 1.5],  # x, y, z as in configs/default.yaml resample.spacing_mm
    # extra voxel-weighted loss on the two hardest places (0 = off):
    # lesion voxels in the lung head (consolidated lung is lung, above all at the pleura) and
    # dense non-lung voxels next to the lung (mediastinal fat, heart border, diaphragm) in both heads
    "lesion_lung_weight": 0.0,
    # dense lesion voxels (denser than hard_negative_hu: consolidation, which looks like mediastinum or chest
    # wall) once more, in both heads: lung in the lung head, lesion in the lesion head
    "dense_lesion_weight": 0.0,
    # which heads the dense-lesion term acts on: "both", or "lung" (dense consolidation must be lung; the
    # lesion head keeps only the plain losses, so the term cannot teach it to call dense fat lesion)
    "dense_lesion_heads": "both",
    "hard_negative_weight": 0.0,
    # the hard-negative weight in the lung head alone (None: hard_negative_weight in both heads): to keep the
    # lung head off the mediastinum harder than the lesion head off dense tissue (stages 12 and 15,
    # segmentation/weights/EXPERIMENTS.md)
    "hard_negative_lung_weight": None,
    "hard_negative_mm": 10.0,
    "hard_negative_hu": -300.0,
    # anatomy variety from few backgrounds: a random smooth deformation (MONAI RandSmoothDeformd, a coarse
    # random field of control points upsampled to the crop) bends domes, lung contours and the mediastinum;
    # displacement up to deform_range x half the crop (0.1: ~12-16 mm); 0 = off
    "deform_prob": 0.0,
    "deform_range": 0.1,
    # deform the background (image and lung labels) before the lesions are inserted, so the anatomy is bent
    # but the lesions keep their own shapes and textures (False: after insertion, bending the lesions too, as
    # every run with deformations but stage 14 was trained; segmentation/weights/EXPERIMENTS.md)
    "deform_before_synth": False,
    # train the lesion head on the deformed crops too (False: on deformed crops only the lung head learns, the
    # lesion-head losses take the undeformed crops of the batch alone), to give the lung head the bent anatomies
    # without the lesion head learning caution from them (stage 16, after stages 11, 13 and 14 had turned cautious;
    # segmentation/weights/EXPERIMENTS.md)
    "deform_lesion_loss": True,
    # lesion-wise recall term (0 = off): the lesion head's BCE over each inserted lesion's voxels, averaged per
    # lesion and then over the lesions of the batch, so a 1 mL nodule weighs as much as a lobar consolidation
    # (the Dice and voxel BCE are dominated by the large ones; cf. "blob loss", Kofler et al., IPMI 2023); like the
    # other lesion-head losses it skips the bent crops when deform_lesion_loss is false
    "lesion_instance_weight": 0.0,
    # anatomy variety from registration (segmentation.anatomy_mix): each background warped part of the way
    # (alphas) and all the way towards each other background's lung shape, added to the training cases as
    # mix_<A>__<B>_a<alpha>.npz beside the cache; e.g. {"alphas": [0.5, 1.0]}; None = off
    "anatomy_mix": None,
}


def _roi_divisor(arch: dict[str, Any] | None) -> int:
    """What every side of a training crop must be a multiple of for the network's down- and up-sampling."""
    from segmentation.network import downsampling_factor

    return downsampling_factor(arch)


def check_train_config(cfg: dict[str, Any], arch: dict[str, Any] | None = None) -> list[str]:
    """Problems with the values of a training config (keys of :data:`DEFAULT_TRAIN`, ``synth``: keys of
    :data:`segmentation.synth.DEFAULTS`), one sentence each naming the option; [] when it can train.
    Unknown keys are for the caller (:func:`segmentation.recipe.read_train_config`)."""
    from segmentation.synth import DEFAULTS as SYNTH_DEFAULTS

    c = {**DEFAULT_TRAIN, **(cfg or {})}
    bad: list[str] = []

    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def triple(v: Any) -> bool:
        return isinstance(v, (list, tuple)) and len(v) == 3

    for k in ("model_spacing_mm", "teacher_spacing_mm"):
        v = c.get(k)
        if not (triple(v) and all(num(x) and x > 0 for x in v)):
            bad.append(f"{k} must be three positive numbers (mm), got {v!r}")
    v = c.get("hu_window")
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(num(x) for x in v) and v[0] < v[1]):
        bad.append(f"hu_window must be two numbers [low, high] with low < high, got {v!r}")
    v, div = c.get("roi_size"), _roi_divisor(arch)
    if not (triple(v) and all(whole(x) and x >= 1 for x in v)):
        bad.append(f"roi_size must be three whole numbers (z, y, x voxels), got {v!r}")
    elif any(x % div for x in v):
        bad.append(f"roi_size {list(v)}: each side must be a multiple of {div} (the network halves the crop "
                   f"{int(round(math.log2(div)))} times)")
    for k in ("batch_size", "iterations", "samples_per_volume"):
        if not (whole(c.get(k)) and c[k] >= 1):
            bad.append(f"{k} must be a whole number >= 1, got {c.get(k)!r}")
    if not (whole(c.get("num_workers")) and c["num_workers"] >= 0):
        bad.append(f"num_workers must be a whole number >= 0, got {c.get('num_workers')!r}")
    if not (whole(c.get("seed")) and 0 <= c["seed"] < 2**32):
        bad.append(f"seed must be a whole number in [0, 2**32), got {c.get('seed')!r}")
    for k in ("max_minutes", "lr", "hard_negative_mm"):
        if not (num(c.get(k)) and c[k] > 0):
            bad.append(f"{k} must be a positive number, got {c.get(k)!r}")
    for k in ("weight_decay", "lesion_weight", "lesion_lung_weight", "dense_lesion_weight", "hard_negative_weight",
              "deform_range", "lesion_instance_weight", "hard_negative_lung_weight"):
        v = c.get(k)
        if not (num(v) and v >= 0) and not (k == "hard_negative_lung_weight" and v is None):
            bad.append(f"{k} must be a number >= 0, got {v!r}")
    if not num(c.get("hard_negative_hu")):
        bad.append(f"hard_negative_hu must be a number (HU), got {c.get('hard_negative_hu')!r}")
    if not (num(c.get("deform_prob")) and 0 <= c["deform_prob"] <= 1):
        bad.append(f"deform_prob must be a probability in [0, 1], got {c.get('deform_prob')!r}")
    for k in ("deform_before_synth", "deform_lesion_loss"):
        if not isinstance(c.get(k), bool):
            bad.append(f"{k} must be true or false, got {c.get(k)!r}")
    if c.get("dense_lesion_heads") not in ("both", "lung"):
        bad.append(f"dense_lesion_heads must be 'both' or 'lung', got {c.get('dense_lesion_heads')!r}")
    mix = c.get("anatomy_mix")
    if mix not in (None, False, True):
        alphas = mix.get("alphas", [0.5, 1.0]) if isinstance(mix, dict) and set(mix) <= {"alphas"} else None
        if not (isinstance(alphas, (list, tuple)) and alphas and all(num(a) and 0 < a <= 1 for a in alphas)):
            bad.append(f"anatomy_mix must be true or a mapping {{alphas: [...]}} with each alpha in (0, 1], got {mix!r}")
    synth = c.get("synth")
    if synth is not None and not isinstance(synth, dict):
        bad.append(f"synth must be a mapping of synthesis options, got {synth!r}")
    for k, v in (synth if isinstance(synth, dict) else {}).items():
        d = SYNTH_DEFAULTS.get(k)
        if d is None:
            continue  # unknown keys: the caller's
        if k.startswith("p_") or k == "label_threshold":
            ok = num(v) and 0 <= v <= 1
        elif isinstance(d, dict):
            ok = isinstance(v, dict) and set(v) <= set(d) and all(
                (isinstance(x, (list, tuple)) and len(x) == 2 and all(num(y) for y in x) and x[0] <= x[1])
                if isinstance(d[next(iter(d))], list) else (num(x) and x >= 0) for x in v.values())
            ok = ok and (isinstance(d[next(iter(d))], list) or sum(v.values()) > 0)
        elif isinstance(d, list):
            ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(num(y) for y in v) and v[0] <= v[1]
        elif k == "max_lesions":
            ok = whole(v) and v >= 1
        elif k == "peripheral_scale_mm":  # the decay length of the pleural preference: 0 divides by zero
            ok = num(v) and v > 0
        else:
            ok = num(v) and v >= (1 if k == "mean_lesions" else 0)
        if not ok:
            bad.append(f"synth.{k}: bad value {v!r} (default {d!r})")
    return bad


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# step 1: cache of backgrounds on the model grid


def load_series_lps(folder: str | Path) -> Any:
    """The selected CT series under ``folder`` as a float32 HU SimpleITK image oriented LPS."""
    import SimpleITK as sitk

    from pipeline.discovery import discover, select_series
    from pipeline.loading import load_series
    from pipeline.resample import to_lps

    chosen = select_series(discover(folder))
    if not chosen:
        raise FileNotFoundError(f"no eligible CT series under {folder}")
    vol = load_series(chosen[0].files)
    return to_lps(sitk.Cast(vol.image, sitk.sitkFloat32))


def load_image_lps(path: str | Path) -> Any:
    """A CT in HU as a float32 SimpleITK image oriented LPS: a DICOM series folder, or one image file
    (NIfTI, NRRD, MetaImage: anything SimpleITK reads)."""
    import SimpleITK as sitk

    from pipeline.imageio import check_sitk_path
    from pipeline.resample import to_lps

    path = Path(path)
    if path.is_dir():
        return load_series_lps(path)
    check_sitk_path(path, "training image")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: not a readable image ({str(exc).strip().splitlines()[-1]})") from exc
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: a background's CT must be one 3D volume of HU, got {img.GetDimension()}D with "
                         f"{img.GetNumberOfComponentsPerPixel()} component(s) per voxel")
    img = sitk.Cast(img, sitk.sitkFloat32)
    _check_in_hu(sitk.GetArrayViewFromImage(img), path)
    return to_lps(img)


#: Upper end of the darkest values (0.5th percentile, the DICOM loader's ``NOT_HU`` rule) an image file must reach to
#: be taken as HU. The loader asks for -800 (air around the patient); an image file may be cropped to the body, where
#: the darkest values are the lungs' (-950 to -700; the toy CTs of the tests: -700). A CT written without its rescale
#: intercept (stored values = HU + 1024) has its darkest values near 0.
IMAGE_AIR_HU_MAX = -500.0


def _check_in_hu(hu: np.ndarray, path: Path) -> None:
    """Refuse (``ValueError`` naming the file) an image file whose values are not plausibly HU: the DICOM loader's
    rule (:func:`pipeline.loading._check_hu`: the darkest non-padding values must be air), padding being values at or
    below ``loading.padding_hu_max`` (-1500)."""
    from pipeline.errors import SeriesError
    from pipeline.loading import LoadOptions, _check_hu

    opts = LoadOptions()
    opts = LoadOptions(air_hu_range=(opts.air_hu_range[0], IMAGE_AIR_HU_MAX))
    try:
        _check_hu(np.asarray(hu), np.asarray(hu) <= opts.padding_hu_max, opts, path)
    except SeriesError as exc:
        raise ValueError(f"{path}: the training image is not in Hounsfield units (NOT_HU): {exc.message}; an image "
                         "written from the stored values without the rescale (HU + 1024: RescaleIntercept -1024 "
                         "lost)? write it in HU") from exc


@dataclass(frozen=True)
class Background:
    """One training background: a CT and, optionally, its own lung (and lesion) labels.

    ``image`` is a DICOM series folder or an image file. ``lungs`` is a label image on any grid
    covering the CT (resampled by physical position); voxels whose value is in ``right`` / ``left``
    are right / left lung, everything else background (so a lobe map or a bit-coded label map works
    by listing its values). Without ``lungs`` the classical teacher labels the lungs.
    """

    name: str
    image: Path
    lungs: Path | None = None
    lesions: Path | None = None
    right: tuple[int, ...] = (1,)
    left: tuple[int, ...] = (2,)
    #: label values of ``lesions`` meaning lesion; empty: any value above 0 (a binary lesion mask). A combined map
    #: (e.g. 1 left lung, 2 right lung, 3 infection) is given as both ``lungs`` and ``lesions`` with these values.
    lesion_values: tuple[int, ...] = ()
    #: what the plausibility checks of one's own labels do when they fail (a side barely aerated, one lung a
    #: fraction of the other, a lesion mask covering nearly all of the lung, a large aerated label value that is
    #: neither side, dense lesion values left out by ``lesion_values``): "refuse" (default), or "warn" for labels
    #: known right (a white lung, a collapsed lung, ARDS).
    #: The checks of the label files against the CT (its geometry, the volume kept on it) and the side order (right
    #: and left swapped) always refuse.
    checks: str = "refuse"

    @classmethod
    def from_folder(cls, folder: str | Path) -> Background:
        """A DICOM folder, with ``lungs.nii.gz`` / ``lesions.nii.gz`` beside it (or in ``labels/``) if any (also named
        ``lung`` / ``lesion``, in any case, and with any of :data:`MASK_SUFFIXES`, e.g. Slicer's ``lungs.seg.nrrd``).
        Other image files there are named in a warning (they are not used)."""
        folder = Path(folder)
        lungs, lesions = _find_mask(folder, "lungs.nii.gz"), _find_mask(folder, "lesions.nii.gz")
        _warn_unused_images(folder, {lungs, lesions})
        return cls(folder.name, folder, lungs, lesions)


BACKGROUND_KEYS = {"name", "image", "lungs", "lesions", "right", "left", "lesion_values", "checks"}


def read_backgrounds_file(path: str | Path) -> list[Background]:
    """Backgrounds listed in a YAML file (``backgrounds:`` list); paths are relative to the file.

    Each entry is a DICOM folder path, or a mapping with ``image`` and optionally ``name``, ``lungs``,
    ``lesions``, ``right``, ``left``, ``lesion_values`` (see :class:`Background`). Raises ``ValueError`` naming the file
    and the entry for anything malformed or missing.
    """
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))  # not the locale's (cp1252 on Windows)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from exc
    entries = doc.get("backgrounds") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty 'backgrounds:' list")
    base = path.parent
    out: list[Background] = []
    for i, e in enumerate(entries):
        where = f"{path}: backgrounds[{i}]"
        if isinstance(e, str):
            e = {"image": e}
        if not isinstance(e, dict) or "image" not in e:
            raise ValueError(f"{where}: expected a folder path or a mapping with 'image'")
        unknown = sorted(set(e) - BACKGROUND_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}")
        image = (base / str(e["image"])).resolve()
        files = {k: (base / str(e[k])).resolve() if e.get(k) else None for k in ("lungs", "lesions")}
        if files["lesions"] is not None and files["lungs"] is None:
            raise ValueError(f"{where}: 'lesions' needs 'lungs' too (a lesion mask is trained on only with its lung mask)")
        for k, f in [("image", image)] + list(files.items()):
            if f is not None and not f.exists():
                raise ValueError(f"{where}: {k} not found: {f}")
        if image.is_dir() and files["lungs"] is None:
            found = Background.from_folder(image)
            files = {"lungs": found.lungs, "lesions": found.lesions}
        elif image.is_dir() and files["lesions"] is None:
            beside = Background.from_folder(image).lesions
            if beside is not None:
                log.warning("%s: 'lungs' is given, so %s beside the series is not used: the case gets synthetic "
                            "lesions (add 'lesions:' to train on it)", where, beside)
        try:
            right = tuple(int(v) for v in e.get("right", [1]))
            left = tuple(int(v) for v in e.get("left", [2]))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: 'right' and 'left' must be lists of label values") from exc
        if set(right) & set(left):
            raise ValueError(f"{where}: label values in both 'right' and 'left': {sorted(set(right) & set(left))}")
        try:
            lesion_values = tuple(int(v) for v in e.get("lesion_values") or ())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: 'lesion_values' must be a list of label values") from exc
        if lesion_values and files["lesions"] is None:
            raise ValueError(f"{where}: 'lesion_values' needs 'lesions' (the label file they are values of)")
        name = str(e.get("name") or (image.name if image.is_dir() else image.name.split(".")[0]))
        checks = str(e.get("checks", "refuse")).strip().lower()
        if checks not in ("refuse", "warn"):
            raise ValueError(f"{where}: 'checks' must be refuse or warn, not {e.get('checks')!r}")
        out.append(Background(name, image, files["lungs"], files["lesions"], right, left, lesion_values, checks))
    names = [b.name for b in out]
    hint = ("; give each entry its own 'name:' (without one, an entry is named by its folder, or by its image file's "
            "name without the extension: ct.nii.gz is 'ct')")
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: background names must be unique (the cache is named by them): {names}{hint}")
    clash = casefold_clash(names)
    if clash:  # on a case-insensitive file system (Windows, macOS) both would be one cached case
        raise ValueError(f"{path}: background names must be unique (the cache is named by them) also when upper "
                         f"and lower case are not told apart, as on Windows and macOS: {clash[0]!r} and "
                         f"{clash[1]!r} would be one cache file{hint}")
    return out


def casefold_clash(names: Sequence[str]) -> tuple[str, str] | None:
    """The first two different names that differ in case alone (``Case01`` and ``case01``), or None: a file
    named by each would be one file on a case-insensitive file system (Windows, macOS by default)."""
    seen: dict[str, str] = {}
    for n in names:
        other = seen.setdefault(str(n).casefold(), str(n))
        if other != str(n):
            return other, str(n)
    return None


def check_background(bg: Background) -> None:
    """Refuse (``ValueError`` naming the file) a background that cannot be prepared: image or label file missing,
    or a lesion mask without its lung mask (it would be dropped and the case trained on synthetic lesions)."""
    for what, f in (("image", bg.image), ("lungs", bg.lungs), ("lesions", bg.lesions)):
        if f is not None and not Path(f).exists():
            raise ValueError(f"{f}: {what} of background {bg.name!r} not found")
    if bg.lesions is not None and bg.lungs is None:
        raise ValueError(f"{bg.lesions}: a lesion mask is trained on only with its lung mask (lungs.nii.gz, "
                         f"1 right / 2 left) beside it; background {bg.name!r} has none")


#: File name endings a user's mask may have (SimpleITK reads them all; Slicer's ``.seg.nrrd`` is an NRRD label map),
#: matched in any case (``Lungs.NII.GZ``).
MASK_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha", ".mhd")
#: The names a mask beside a DICOM series is read under (without the suffix, in any case).
MASK_NAMES = {"lungs": ("lungs", "lung"), "lesions": ("lesions", "lesion")}
_IMAGE_SUFFIXES = MASK_SUFFIXES + (".nhdr", ".nia", ".hdr", ".img", ".img.gz", ".vtk", ".tif", ".tiff")
_warned_folders: set[str] = set()


def _image_files(folder: Path) -> list[Path]:
    """Image files (by their name's ending, any case) in ``folder`` and ``folder/labels``."""
    out = []
    for sub in (folder, folder / "labels"):
        if sub.is_dir():
            out += sorted(f for f in sub.iterdir() if f.is_file() and f.name.lower().endswith(_IMAGE_SUFFIXES))
    return out


def _find_mask(folder: Path, name: str) -> Path | None:
    """``<name>`` (or another of its :data:`MASK_NAMES`, in any case) with any of :data:`MASK_SUFFIXES`
    (``lungs.nii.gz``, ``Lung.nrrd``, ``lungs.seg.nrrd``, ...) beside the DICOM files or in ``labels/``;
    ``ValueError`` when there are several (which one was meant?)."""
    stem = name.split(".", 1)[0]
    wanted = {f"{n}{suffix}" for n in MASK_NAMES.get(stem, (stem,)) for suffix in MASK_SUFFIXES}
    found = [f for f in _image_files(folder) if f.name.lower() in wanted]
    if len(found) > 1:
        raise ValueError(f"{folder}: several {stem} masks ({', '.join(str(f.relative_to(folder)) for f in found)}); "
                         f"keep one")
    return found[0] if found else None


def _warn_unused_images(folder: Path, used: set[Path | None]) -> None:
    """Name (once per folder and run) the image files beside a DICOM series, or in its ``labels/``, that are not read
    as its masks: a mask under another name (``lungs_mask.nii.gz``, ``infection.nii.gz``) was skipped without a word
    and the case trained on the teacher's lungs and synthetic lesions; a CT as an image file is no DICOM series."""
    if not folder.is_dir() or str(folder) in _warned_folders:
        return
    unused = [f for f in _image_files(folder) if f not in used]
    if unused:
        _warned_folders.add(str(folder))
        names = "/".join(n for ns in MASK_NAMES.values() for n in ns)
        log.warning("%s: image file(s) %s are not used: masks beside a DICOM series are read only as %s (any case; "
                    "%s) here or in labels/; a CT given as an image file is a background of its own: list it "
                    "in a --backgrounds-file (image:, lungs:, lesions:)", folder,
                    ", ".join(str(f.relative_to(folder)) for f in unused), names, ", ".join(MASK_SUFFIXES))


def _onto(mask: Any, ref: Any) -> np.ndarray:
    """A label image resampled (nearest neighbour, physical space) onto ``ref``; array [z, y, x]."""
    import SimpleITK as sitk

    out = sitk.Resample(mask, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(out)


def _read_label_image(path: Path, what: str) -> Any:
    """A label file read by SimpleITK; ``ValueError`` naming the file when it cannot be read."""
    import SimpleITK as sitk

    from pipeline.imageio import check_sitk_path

    check_sitk_path(path, f"{what} label file")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: the {what} label file is not a readable image "
                         f"({str(exc).strip().splitlines()[-1]})") from exc
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        channels = img.GetDimension() == 4 or img.GetNumberOfComponentsPerPixel() > 1
        hint = ("; one channel per label (a one-hot or multi-layer export)? make it one label map holding each voxel's "
                "label (e.g. numpy argmax over the channel axis: 1 right / 2 left lung, or list the values in a "
                "backgrounds file) and write it with the CT's geometry") if channels else ""
        raise ValueError(f"{path}: the {what} label file must be one 3D label volume, got "
                         f"{img.GetDimension()}D with {img.GetNumberOfComponentsPerPixel()} component(s){hint}")
    return img


def _ml(count: int, img: Any) -> float:
    return float(count) * float(np.prod(img.GetSpacing())) / 1000.0


def _corners(img: Any) -> np.ndarray:
    """The 8 physical corners (outer voxel faces) of an image's grid."""
    size = img.GetSize()
    return np.asarray([img.TransformContinuousIndexToPhysicalPoint([s - 0.5 if hi else -0.5
                                                                    for hi, s in zip(c, size)])
                       for c in np.ndindex(2, 2, 2)])


def _check_geometry(label: Any, ct: Any, path: Path, image: Path) -> None:
    """Refuse a label image with its CT's voxel grid (the same numbers of voxels along its axes) that does not cover
    the same physical box: an array written without the CT's geometry (``sitk.GetImageFromArray`` without
    ``CopyInformation``: 1 mm voxels at origin 0; nibabel with another affine; or the axes in another order). Such a
    mask was resampled onto the CT by physical position and may still keep part of its volume there (a 5.6 L lung
    mask became 131 mL and was trained on). A mask on the same grid written in another orientation (RAS) is fine."""
    if sorted(label.GetSize()) != sorted(ct.GetSize()):
        return
    a, b = _corners(label), _corners(ct)
    gap = max(float(np.min(np.linalg.norm(b - p, axis=1))) for p in a)
    if gap <= max(ct.GetSpacing()):
        return

    def fmt(v: Sequence[float]) -> str:
        return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"

    raise ValueError(f"{path}: the label file has the voxel grid of the CT {image} "
                     f"({' x '.join(str(s) for s in ct.GetSize())} voxels) but not its geometry (spacing "
                     f"{fmt(label.GetSpacing())} mm, origin {fmt(label.GetOrigin())}; the CT: spacing "
                     f"{fmt(ct.GetSpacing())} mm, origin {fmt(ct.GetOrigin())}), so it is not on this CT: it looks "
                     "written from an array without the CT's geometry (SimpleITK: label.CopyInformation(ct); nibabel: "
                     "the CT's affine), or with its axes in another order; write it with the CT's geometry")


def _check_on_ct(label: Any, on_ct: np.ndarray, ct: Any, values: dict[int, str], path: Path, image: Path,
                 tolerance: float = 2.0) -> None:
    """Refuse a label image that does not lie on its CT: most of a label's volume lost (or made up) when resampled
    onto the CT by physical position means another case's mask, or one whose origin / spacing / direction was lost
    (e.g. written from an array without its CT's header)."""
    import SimpleITK as sitk

    src = sitk.GetArrayFromImage(label)
    for v, what in values.items():
        before = _ml(int((src == v).sum()), label)
        after = _ml(int((on_ct == v).sum()), ct)
        if before > 0 and not 1.0 / tolerance <= after / before <= tolerance:
            raise ValueError(f"{path}: {what} {before:.1f} mL in the label file but {after:.1f} mL where it lies on "
                             f"the CT {image}: the label file is not on this CT (another case's mask, or its "
                             f"origin / spacing / orientation lost); write it with the CT's geometry")


#: Label values within this of a whole number are read as that number (a mask stored as floating point: 0.99995).
WHOLE_TOLERANCE = 1e-3


def _whole_values(a: np.ndarray, path: Path, what: str) -> np.ndarray:
    """The label map with values within :data:`WHOLE_TOLERANCE` of a whole number rounded to it (said in the log);
    ``ValueError`` for one with values between the labels (a probability map, or a map resampled with linear
    interpolation: its edges are blurred into values between the labels, read as other labels or as lesion)."""
    if not np.issubdtype(a.dtype, np.floating):
        return a
    finite = np.isfinite(a)
    whole = np.round(a)
    off = finite & (a != whole)
    if not off.any():
        return a
    far = off & (np.abs(a - whole) > WHOLE_TOLERANCE)
    if far.any():
        raise ValueError(f"{path}: the {what} label file holds fractional values ({int(far.sum())} voxels, e.g. "
                         f"{float(a[far][0]):g}): a probability map, or a label map resampled with linear "
                         "interpolation? threshold it, or resample it with nearest neighbour (or write it on the "
                         "CT's grid)")
    log.info("%s: %d voxels of the %s label file hold values within %g of a whole number (e.g. %g), read as that "
             "number (labels stored as floating point)", path, int(off.sum()), what, WHOLE_TOLERANCE,
             float(a[off][0]))
    return np.where(finite, whole, a)


#: A label value that is neither right nor left lung (nor a declared lesion value) holding this many mL or more of
#: aerated voxels is lung left out of the lungs (refused): a lung in another value order (1 lesion, 2 right, 3 left
#: read with the default 1 right / 2 left), or a lobe not listed. Smallest lobe (right middle) ~200-400 mL; the largest
#: aerated non-lung label of the shipped lists, CIP's trachea (512), holds 35 mL.
LUNG_SIZED_ML = 150.0
#: A value left out of the lungs holding this many mL or more of aerated voxels (the test of :data:`LUNG_SIZED_ML`)
#: but less than a lung's worth is named in a warning (a lobe or segment relabelled, e.g. 57 mL of an apex): it
#: trains as background, not lung.
AERATED_VALUE_ML = 10.0
#: A value left out of the lungs that borders the lung labels over this share of its surface, and holds at least
#: :data:`OTHER_VALUE_WARN_SHARE` of their volume, is named in a warning (lung dropped out of the lungs, e.g. a
#: combined map's lesion label: real lesions 55-64 % of their border on lung); others (airway, mediastinal vessels,
#: other organs: CIP's trachea 512, 16 %; its hilar vessel 768, 0.02 % of the lungs) only in the log.
OTHER_VALUE_WARN_BORDER = 0.3
OTHER_VALUE_WARN_SHARE = 0.001


def _lung_labels(path: Path, right: Sequence[int], left: Sequence[int],
                 lesion_values: Sequence[int] = ()) -> tuple[Any, list[dict[str, Any]]]:
    """The label image at ``path`` mapped to 0 / 1 right / 2 left on its own grid (before any resampling,
    so label values above 255 survive), and the other values in it (neither right nor left nor one of
    ``lesion_values``, the lesion values of a combined map given as both lungs and lesions): dicts with ``value``,
    ``ml``, ``border`` (the share of its surface on the lung labels), ``loud`` (worth a warning) and, for values of
    :data:`AERATED_VALUE_ML` or more, ``mask`` (a 0/1 image of it). Both lungs must be there: a binary lung mask (0/1)
    would otherwise teach the network that both lungs are the right one."""
    import SimpleITK as sitk
    from scipy import ndimage as ndi

    src = _read_label_image(path, "lung")
    a = _whole_values(sitk.GetArrayFromImage(src), path, "lung")
    lab = np.where(np.isin(a, list(right)), 1, np.where(np.isin(a, list(left)), 2, 0)).astype(np.uint8)
    present = np.unique(a)
    shown = ", ".join(f"{v:g}" for v in present[:12]) + (", ..." if present.size > 12 else "")
    if not lab.any():
        raise ValueError(f"{path}: no voxel carries the right {list(right)} or left {list(left)} label values "
                         f"(values in the file: {shown})")
    for k, side, vals in ((1, "right", right), (2, "left", left)):
        if not (lab == k).any():
            raise ValueError(f"{path}: no voxel carries the {side} lung label values {list(vals)} (values in the "
                             f"file: {shown}); lung labels must be 1 right / 2 left (a binary lung mask is not "
                             f"enough), or list the values meaning right and left in a backgrounds file")
    other = (a != 0) & (lab == 0) & np.isfinite(a)
    if lesion_values:
        other &= ~np.isin(a, list(lesion_values))
    others: list[dict[str, Any]] = []
    if other.any():  # e.g. the infection label of a combined map: lung dropped out of the lung labels
        lung = lab > 0
        lung_ml = _ml(int(lung.sum()), src)
        vals = np.unique(a[other])
        index = np.zeros(a.shape, np.int32)
        index[other] = np.searchsorted(vals, a[other]) + 1
        cube = np.ones((3, 3, 3), bool)
        for i, box in enumerate(ndi.find_objects(index)):
            if box is None:
                continue
            box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
            m = index[box] == i + 1
            shell = ndi.binary_dilation(m, cube) & ~m
            border = float(lung[box][shell].mean()) if shell.any() else 0.0
            ml = _ml(int(m.sum()), src)
            o = {"value": float(vals[i]), "ml": ml, "border": border, "mask": None,
                 "loud": border >= OTHER_VALUE_WARN_BORDER and ml >= OTHER_VALUE_WARN_SHARE * lung_ml}
            if ml >= AERATED_VALUE_ML:
                mask = sitk.GetImageFromArray((index == i + 1).astype(np.uint8))
                mask.CopyInformation(src)
                o["mask"] = mask
            others.append(o)
    out = sitk.GetImageFromArray(lab)
    out.CopyInformation(src)
    return out, others


#: The midline band (a share of half the distance between the right and left lungs' centres, either side of their
#: midpoint) where an aerated label value left out of the lungs is taken for airway, not lung, when most of it lies
#: there: CIP's trachea (512, 35 mL, median -731 HU on the 2.5 mm grid) has 21 % of its voxels outside it, a lung apex
#: relabelled (57 mL, 148 mL) 96-97 %.
MIDLINE_BAND = 0.3


def _lateral_share(on: np.ndarray, lungs: np.ndarray | None) -> float:
    """The share of the voxels ``on`` that lie out of the midline band between the lungs (farther from the midpoint
    of the right and left lung labels' centres, along x, than :data:`MIDLINE_BAND` of half the distance between
    them): lung lies there; the trachea, main bronchi and oesophagus do not. 1 when the lungs cannot say."""
    if lungs is None or not ((lungs == 1).any() and (lungs == 2).any()):
        return 1.0
    xr, xl = (float(np.nonzero(lungs == k)[2].mean()) for k in (1, 2))
    half = abs(xl - xr) / 2
    if half == 0:
        return 1.0
    return float((np.abs(np.nonzero(on)[2] - (xr + xl) / 2) > MIDLINE_BAND * half).mean())


def _check_other_values(others: list[dict[str, Any]], ct: Any, hu: np.ndarray, path: Path, image: Path,
                        right: Sequence[int], left: Sequence[int], lesion_values: Sequence[int] = (),
                        lungs: np.ndarray | None = None) -> None:
    """Refuse (``ValueError`` naming the file and the values) label values left out of the lungs that hold a lung's
    worth of aerated lung on the CT (:data:`LUNG_SIZED_ML`; aerated: median -950 to -700 HU, or to -600 HU with a
    quarter of the voxels below -700: real lungs here -940 to -633 HU with 34-88 % below -700, lesion labels -400 to
    -650 HU with at most 14 %); name those of :data:`AERATED_VALUE_ML` or more that are aerated lung in a warning (they
    train as background; aerated and mostly out of the midline band between the lungs, ``lungs`` on ``ct``'s grid:
    :func:`_lateral_share`, so that the trachea is not), and the others in a warning (those in the lungs) or the log
    (those outside)."""
    values = (f"right {list(right)}, left {list(left)}" +
              (f" or lesion {list(lesion_values)}" if lesion_values else ""))
    aerated: list[dict[str, Any]] = []
    refusals: list[str] = []
    for o in others:
        if o["mask"] is None:
            continue
        on = _onto(o["mask"], ct) > 0
        if on.sum() < 10:
            continue
        vox = np.asarray(hu)[on]
        med, dark = float(np.median(vox)), float((vox < -700).mean())
        if not (-950 <= med <= -600 and (med <= -700 or dark >= 0.25)):
            continue
        if o["ml"] < LUNG_SIZED_ML:
            if _lateral_share(on, lungs) >= 0.5:
                o["median_hu"] = med
                aerated.append(o)
        else:
            o["median_hu"] = med
            refusals.append(f"{path}: label value {o['value']:g} holds {o['ml']:.0f} mL of aerated lung on the CT "
                       f"{image} (median {med:.0f} HU) but is none of the values read as lung ({values}): "
                       "that lung would train as background. The labels in another order (e.g. 1 lesion, "
                       "2 right, 3 left), or a lobe not listed? list the values meaning right and left (and "
                       "lesion with 'lesions:' and 'lesion_values') in a backgrounds file")
    named = {id(o) for o in others if "median_hu" in o}  # aerated: said apart (below), or refused

    def listed(os_: list[dict[str, Any]]) -> str:
        return ", ".join(f"{o['value']:g} ({o['ml']:.1f} mL)" for o in os_[:6]) + (", ..." if len(os_) > 6 else "")

    for o in aerated:
        log.warning("%s: label value %g holds %.1f mL of aerated lung on the CT %s (median %.0f HU) but is none of the "
                    "values read as lung (%s): it trains as background, not lung; a lobe or part of a lung labelled "
                    "apart? list it under 'right' or 'left' in a backgrounds file", path, o["value"], o["ml"], image,
                    o["median_hu"], values)
    rest = [o for o in others if id(o) not in named]
    loud = [o for o in rest if o["loud"]]
    quiet = [o for o in rest if not o["loud"]]
    if loud:
        log.warning("%s: label values %s are neither right %s nor left %s lung and are left out of the lungs (a "
                    "lesion label of a combined map? give the file as 'lesions' too, with 'lesion_values')", path,
                    listed(loud), list(right), list(left))
    if quiet:
        log.info("%s: label values %s (outside the lungs or small: airway, vessels, other organs?) are background",
                 path, listed(quiet))
    if refusals:  # after the warnings: with 'checks: warn' they are the case's record
        raise ValueError("; ".join(refusals))


#: A lung label under this share of the other side's volume is not a lung when it is not aerated (median above
#: :data:`SIDE_DENSE_HU`: a lesion label read as a lung), and under :data:`TINY_SIDE` in any case. Right and left
#: lungs here: 0.74-0.92 of each other; a lesion label read as one: 0.04-0.08 (itk, nrm cases of the audit).
SMALL_SIDE = 0.25
TINY_SIDE = 0.10
#: Ground glass is -700 to -300 HU (lesion labels here: medians -400 to -650); the densest real lungs here
#: (ge_mister_ct) -633 to -663 HU.
SIDE_DENSE_HU = -600.0
#: Share of the CT's aerated lung (-950 to -500 HU, inside the body, in the air spaces the labels touch) the lung
#: (and lesion) labels must cover: refused below :data:`LUNG_COVER_MIN` (the rest would train as background),
#: a warning below :data:`LUNG_COVER_WARN`. Real labels (the CIP label map, the teacher's) cover 97-99 %; a mask
#: drawn on a fifth of the slices ~20 %.
LUNG_COVER_MIN = 0.5
LUNG_COVER_WARN = 0.85


def _check_lungs_on_ct(lungs: np.ndarray, hu: np.ndarray, lesions: np.ndarray | None, path: Path,
                       image: Path) -> None:
    """Refuse user lung labels that do not sit on the CT's lungs (``ValueError`` naming both files): lung that is
    not lesion must be mostly air (each side), the right lung (1) must be on the patient's right (lower x on the LPS
    grid) of the left one (2), neither may be a lesion-sized label next to the other, and the labels must cover most
    of the CT's aerated lung."""
    from scipy import ndimage as ndi

    hu = np.asarray(hu)
    lung = lungs > 0
    clear = lung & ~(lesions > 0) if lesions is not None else lung
    if clear.sum() >= 50:
        air = hu < -400
        aerated = float(air[clear].mean())
        if aerated < 0.5:
            raise ValueError(f"{path}: only {100 * aerated:.0f} % of the voxels labelled lung (and not lesion) are "
                             f"air-like (< -400 HU) on the CT {image}: the label file is not on this CT (shifted, "
                             f"flipped, another case's mask), or the image is not in HU")
        # a mask mirrored against its CT (an array written in the other slice or row order with the CT's header)
        # keeps its volume and may still lie mostly on air; it lies clearly better on air mirrored back (real lung
        # masks: 88-98 % as given, 31-78 % mirrored; mirrored right-left: the side check below). Mirrored, only air
        # enclosed by the body in its slice counts (not the air around a patient off the centre of the field of view)
        inner = air & np.stack([ndi.binary_fill_holes(~a) for a in air])
        for axis, how in ((0, "head-feet (its slices in the other order)"), (1, "front-back")):
            mirrored = float(inner[np.flip(clear, axis)].mean())
            if mirrored > aerated + 0.15:
                raise ValueError(f"{path}: the lung labels lie on the CT {image} better mirrored {how}: "
                                 f"{100 * aerated:.0f} % of the voxels labelled lung (and not lesion) are air-like "
                                 f"(< -400 HU) as given, {100 * mirrored:.0f} % mirrored; the label file is flipped "
                                 f"against the CT (written from an array without the CT's orientation?)")
    sides = {k: lungs == k for k in (1, 2)}
    vol = {k: int(m.sum()) for k, m in sides.items()}
    for k, side in ((1, "right"), (2, "left")):
        ratio = vol[k] / max(vol[3 - k], 1)
        if ratio >= SMALL_SIDE:
            continue
        med = float(np.median(hu[sides[k]]))
        if med > SIDE_DENSE_HU:
            raise ValueError(f"{path}: the {side} lung label is {100 * ratio:.0f} % of the size of the other one and "
                             f"not aerated (median {med:.0f} HU) on the CT {image}: a lesion label read as a lung? "
                             "lung labels are 1 right / 2 left (list the values meaning right and left in a "
                             "backgrounds file); a lesion map goes under 'lesions' (a combined map with "
                             "'lesion_values')")
        if ratio < TINY_SIDE:
            raise ValueError(f"{path}: the {side} lung label is {100 * ratio:.0f} % of the size of the other one on "
                             f"the CT {image} (median {med:.0f} HU): too small for a lung (a lesion or airway label "
                             "read as a lung? the labels in another order?); lung labels are 1 right / 2 left (list "
                             "the values meaning right and left in a backgrounds file)")
    for k, side in ((1, "right"), (2, "left")):
        this = clear & sides[k]
        share = float((hu[this] < -400).mean()) if this.sum() >= 50 else 1.0
        if share < 0.5:
            raise ValueError(f"{path}: only {100 * share:.0f} % of the voxels labelled {side} lung (and not lesion) "
                             f"are air-like (< -400 HU) on the CT {image}: that label is not on this CT's {side} "
                             "lung (another structure's label read as lung?)")
    _check_side_order(lungs, path, image)
    labelled = lung | (lesions > 0) if lesions is not None else lung
    _check_lung_cover(labelled, hu, path, image)


class SidesSwapped(ValueError):
    """The right lung label lies on the patient's left of the left one: refused whatever the case's ``checks`` say
    (a white, collapsed or ARDS lung does not change its side)."""


def _check_side_order(lungs: np.ndarray, path: Path, image: Path) -> None:
    """Refuse (:class:`SidesSwapped`, a ``ValueError`` naming both files) lung labels whose right lung (1) lies on the
    patient's left (higher x on the LPS grid) of the left one (2)."""
    if not ((lungs == 1).any() and (lungs == 2).any()):
        return
    xr, xl = (float(np.nonzero(lungs == k)[2].mean()) for k in (1, 2))
    if xr > xl:
        raise SidesSwapped(f"{path}: the right lung label lies on the patient's left of the left lung label on the CT "
                           f"{image}: right and left swapped (lung labels are 1 right / 2 left, or list the values "
                           f"meaning right and left in a backgrounds file), or the mask is mirrored; refused whatever "
                           f"'checks' says (a collapsed lung does not change its side)")


def _check_lung_cover(labelled: np.ndarray, hu: np.ndarray, path: Path, image: Path) -> None:
    """Refuse lung labels that cover under :data:`LUNG_COVER_MIN` of the CT's aerated lung (warn under
    :data:`LUNG_COVER_WARN`): -950 to -500 HU, enclosed by the body in its slice, in the connected air spaces the
    labels touch (so that bowel gas or air outside does not count). A lung labelled on a few slices only trained the
    rest of the lung as background."""
    from scipy import ndimage as ndi

    body = np.stack([ndi.binary_fill_holes(s) for s in hu > -500])
    aer = body & (hu >= -950) & (hu <= -500)
    comp, n = ndi.label(aer)
    if not n:
        return
    touched = np.unique(comp[labelled & aer])
    region = np.isin(comp, touched[touched > 0])
    total = int(region.sum())
    if total < 50:
        return
    cover = float((region & labelled).sum()) / total
    what = (f"{path}: the lung labels cover {100 * cover:.0f} % of the aerated lung (-950 to -500 HU inside the body) "
            f"of the CT {image}")
    if cover < LUNG_COVER_MIN:
        raise ValueError(f"{what}: the rest would train as background (not lung); a mask drawn on some slices only, "
                         "or a part of the lungs left out? label the whole of both lungs")
    if cover < LUNG_COVER_WARN:
        log.warning("%s: the rest trains as background (not lung); label the whole of both lungs", what)


#: A lesion piece (connected component) a lung mask leaves out must border the lung labels over this share of its
#: surface (real lesions left out of their lung mask: 45-100 %, 28 mm subpleural balls 53-66 %; a mask shifted into
#: the chest wall: 0). Pieces mostly in or within 5 mm of the lung labels pass as they are.
LESION_BORDER_MIN = 0.3
#: Lesion pieces of this many mL or more lying on the lung labels must be denser than the clear lung.
LESION_PIECE_ML = 2.0


def _check_lesions_on_ct(lungs: np.ndarray, lesions: np.ndarray, hu: np.ndarray, spacing_zyx: Sequence[float],
                         path: Path, image: Path) -> np.ndarray:
    """Refuse a lesion mask that does not sit on the CT's diseased lung (``ValueError`` naming both files) and
    return the lung labels with the lesion beside them added: lesion voxels must be denser than the clear lung
    (a mask mirrored or shifted against its CT lands on normal lung; so must each lesion piece of
    :data:`LESION_PIECE_ML` or more lying on the lungs), lie in pieces that are in or beside the lungs (within 5 mm,
    in a hole of the lung mask, or bordering the lung labels over :data:`LESION_BORDER_MIN` of their surface: a lung
    mask that leaves out its lesions, as a combined map's lung values do), and not cover nearly all of the lung (a
    combined lung + lesion map read as all lesion). Lesion pieces outside the lung labels join the nearest lung:
    consolidated lung is lung, which is what the lung head must learn."""
    from scipy import ndimage as ndi

    les = lesions > 0
    n_les = int(les.sum())
    if n_les < 10:
        return lungs
    hu = np.asarray(hu)
    lung = lungs > 0
    covered = float((les & lung).sum()) / max(int(lung.sum()), 1)
    if covered > 0.9:
        raise ValueError(f"{path}: the lesion mask covers {100 * covered:.0f} % of the lung labels on the CT {image}: "
                         "a combined lung + lesion map read as all lesion? list the values meaning lesion with "
                         "'lesion_values' in a backgrounds file (any value above 0 is lesion without it)")
    dist, idx = ndi.distance_transform_edt(~lung, sampling=spacing_zyx, return_indices=True)
    holes = np.stack([ndi.binary_fill_holes(s) for s in lung]) & ~lung  # where a lung mask left its lesions out
    near = les & ((dist <= 5.0) | holes)
    cube = np.ones((3, 3, 3), bool)
    pieces, n = ndi.label(les, cube)
    ids = np.arange(1, n + 1)
    size = np.asarray(ndi.sum(les, pieces, ids), float)
    share = np.asarray(ndi.mean(near, pieces, ids), float)
    in_lung = np.asarray(ndi.mean(lung, pieces, ids), float)
    boxes = ndi.find_objects(pieces)
    on_lung = share >= 0.5
    for i in np.flatnonzero(~on_lung):  # a piece a lung mask leaves out: does it border the lung?
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in boxes[i])
        m = pieces[box] == i + 1
        shell = ndi.binary_dilation(m, cube) & ~m
        on_lung[i] = shell.any() and float(lung[box][shell].mean()) >= LESION_BORDER_MIN
    inside = float(size[on_lung].sum()) / n_les
    if inside < 0.8:
        raise ValueError(f"{path}: only {100 * inside:.0f} % of the lesion voxels are in pieces in or within 5 mm of "
                         f"the lung labels, or bordering them over {100 * LESION_BORDER_MIN:.0f} % of their surface "
                         f"(as lesions a lung mask leaves out do) on the CT {image}: the lesion mask is not on this "
                         "CT's lungs (mirrored, shifted, another case's mask)")
    clear = lung & ~les
    if clear.sum() >= 50:
        les_hu, clear_hu = float(np.median(hu[les])), float(np.median(hu[clear]))
        if les_hu < clear_hu + 50:
            raise ValueError(f"{path}: the voxels labelled lesion are no denser than the clear lung on the CT {image} "
                             f"(median {les_hu:.0f} HU against {clear_hu:.0f} HU): the lesion mask is mirrored or "
                             "shifted against the CT (written from an array without the CT's orientation?), or "
                             "another case's")
        voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
        faint = []
        for i in np.flatnonzero((size * voxel_ml >= LESION_PIECE_ML) & (in_lung >= 0.8)):
            med = float(np.median(hu[boxes[i]][pieces[boxes[i]] == i + 1]))
            if med < clear_hu + 50:
                faint.append(f"{size[i] * voxel_ml:.1f} mL at {med:.0f} HU")
        if faint:
            raise ValueError(f"{path}: lesion pieces on the lung labels are no denser than the clear lung "
                             f"({clear_hu:.0f} HU) on the CT {image}: {', '.join(faint[:6])}: the lesion mask is "
                             "shifted or mirrored against the CT, or another case's")
    add = np.isin(pieces, np.flatnonzero(on_lung) + 1) & ~lung  # pieces in, beside, against or enclosed by a lung
    if add.any():
        lungs = lungs.copy()
        lungs[add] = lungs[tuple(i[add] for i in idx)]
        log.info("%s: %.1f mL of lesion outside the lung labels joined the lungs (consolidated lung is lung)", path,
                 float(add.sum()) * float(np.prod(spacing_zyx)) / 1000.0)
    return lungs


#: Voxels of a separate lesion file left out by ``lesion_values`` holding this many mL or more inside the lungs, denser
#: than the clear lung (the rule of :func:`_check_lesions_on_ct`), are lesion trained as clear lung: refused.
LEFT_OUT_LESION_ML = 1.0


def _check_left_out_lesion_values(les_a: np.ndarray, les_src: Any, lesion_values: Sequence[int], lungs: np.ndarray,
                                  lesions: np.ndarray, model_img: Any, hu: np.ndarray, path: Path, image: Path) -> None:
    """A separate lesion file whose other non-zero values ``lesion_values`` leaves out (a lab coding 1 ground glass, 2
    consolidation, listing 1 only): name them in a warning with their mL inside the lungs (the lung labels and the
    holes they leave in a slice; they train as clear lung, or as background outside it), and refuse (``ValueError`` naming the file and the values) those denser inside the
    lungs than the clear lung (median at least its median + 50 HU) that make up :data:`LEFT_OUT_LESION_ML` or more."""
    import SimpleITK as sitk

    left_out = (les_a != 0) & np.isfinite(les_a) & ~np.isin(les_a, list(lesion_values))
    if not left_out.any():
        return
    from scipy import ndimage as ndi

    hu = np.asarray(hu)
    lung = lungs > 0
    inside = lung | np.stack([ndi.binary_fill_holes(s) for s in lung])  # with the holes a lung mask leaves its lesions
    voxel_ml = _ml(1, model_img)
    found = []
    for v in np.unique(les_a[left_out]):
        m = sitk.GetImageFromArray((les_a == v).astype(np.uint8))
        m.CopyInformation(les_src)
        on = (_onto(m, model_img) > 0) & inside
        found.append((float(v), on, float(on.sum()) * voxel_ml))
    taken = np.zeros(lung.shape, bool)
    for _, on, _ in found:
        taken |= on
    clear = lung & ~(lesions > 0) & ~taken
    clear_hu = float(np.median(hu[clear])) if clear.sum() >= 50 else None
    said, dense = [], []
    for v, on, ml in found:
        med = float(np.median(hu[on])) if on.any() else None
        said.append(f"{v:g} ({ml:.1f} mL" + (f", median {med:.0f} HU)" if med is not None else ")"))
        if clear_hu is not None and med is not None and ml >= LEFT_OUT_LESION_ML and med >= clear_hu + 50:
            dense.append(f"{v:g} ({ml:.1f} mL at median {med:.0f} HU)")
    log.warning("%s: the lesion file holds values left out by lesion_values %s: %s inside the lungs; they train as "
                "clear lung (or background outside it); list every value meaning lesion under 'lesion_values'", path,
                list(lesion_values), ", ".join(said))
    if dense:
        raise ValueError(f"{path}: label value(s) {', '.join(dense)} of the lesion file, left out by lesion_values "
                         f"{list(lesion_values)}, are denser inside the lungs than the clear lung (median "
                         f"{clear_hu:.0f} HU) on the CT {image}: lesion that would train as clear lung; list them "
                         "under 'lesion_values' too")


#: A teacher-labelled case whose lungs hold less than this is refused (no lung: not a chest CT, or not in HU).
TEACHER_MIN_LUNG_ML = 50.0


def _plausible(bg: Background, fallback: Any, check: Any, *args: Any) -> Any:
    """``check(*args)``, one of the plausibility checks of one's own labels; when it refuses: the refusal again, with
    how to accept labels known right, or, with ``checks: warn`` for this case, a warning and ``fallback``."""
    try:
        return check(*args)
    except SidesSwapped:
        raise  # not a matter of plausibility: 'checks: warn' does not make it right
    except ValueError as exc:
        if bg.checks == "warn":
            log.warning("%s (checks: warn for %r: trained on as given)", exc, bg.name)
            return fallback
        raise ValueError(f"{exc} (if these labels are right, e.g. a white, collapsed or ARDS lung, set 'checks: warn' "
                         f"for {bg.name!r} in the list)") from exc


def prepare_case(source: str | Path | Background, model_spacing_zyx: Sequence[float], teacher: Any = None,
                 teacher_spacing_xyz: Sequence[float] = (1.5, 1.5, 1.5)) -> dict[str, np.ndarray]:
    """Load one background, label its lungs (its own labels or the teacher) and bring it to the model grid."""
    import SimpleITK as sitk

    from pipeline.errors import CTScoreError
    from pipeline.resample import resample_to_spacing

    bg = source if isinstance(source, Background) else Background.from_folder(Path(source))
    check_background(bg)
    try:
        img = load_image_lps(bg.image)
    except (FileNotFoundError, CTScoreError) as exc:
        hint = ""
        if Path(bg.image).is_dir():
            files = [f for f in _image_files(Path(bg.image)) if f not in (bg.lungs, bg.lesions)]
            if files:
                hint = (f"; it holds the image file(s) {', '.join(f.name for f in files)}, and a --data folder is "
                        "read as DICOM series: list a CT given as an image file in a --backgrounds-file instead "
                        f"(e.g. '- {{name: {bg.name}, image: {files[0]}, lungs: ..., lesions: ...}}')")
        raise ValueError(f"{bg.image}: background {bg.name!r} cannot be loaded as a CT ({exc}){hint}") from exc
    sp_xyz = [float(s) for s in reversed(list(model_spacing_zyx))]
    model_img = resample_to_spacing(img, sp_xyz, default=-1024.0)
    hu_m = sitk.GetArrayViewFromImage(model_img)
    lesions_arr = None
    if bg.lungs is not None:
        log.info("%s: own lung labels %s", bg.name, bg.lungs)
        combined = bg.lesions is not None and Path(bg.lesions).resolve() == Path(bg.lungs).resolve()
        declared = bg.lesion_values if combined else ()
        lab_img, others = _lung_labels(bg.lungs, bg.right, bg.left, declared)
        _check_geometry(lab_img, img, bg.lungs, bg.image)
        lungs_arr = _onto(lab_img, model_img)
        _check_on_ct(lab_img, lungs_arr, model_img, {1: "right lung", 2: "left lung"}, bg.lungs, bg.image, 1.4)
        _plausible(bg, None, _check_other_values, others, model_img, hu_m, bg.lungs, bg.image, bg.right, bg.left,
                   declared, lungs_arr)
        if bg.lesions is not None:
            les_src = _read_label_image(bg.lesions, "lesion")
            les_a = _whole_values(sitk.GetArrayFromImage(les_src), bg.lesions, "lesion")
            les_sel = np.isin(les_a, list(bg.lesion_values)) if bg.lesion_values else les_a > 0
            if bg.lesion_values and not les_sel.any():
                raise ValueError(f"{bg.lesions}: no voxel carries the lesion values {list(bg.lesion_values)} "
                                 f"(values in the file: {', '.join(f'{v:g}' for v in np.unique(les_a)[:12])})")
            les_bin = sitk.Cast(sitk.GetImageFromArray(les_sel.astype(np.uint8)), sitk.sitkUInt8)
            les_bin.CopyInformation(les_src)
            _check_geometry(les_bin, img, bg.lesions, bg.image)
            lesions_arr = _onto(les_bin, model_img)
            if not lesions_arr.any():  # (with lesion_values, a file without them is refused above)
                log.warning("%s", empty_lesions_message(bg.lesions, bg.name, bool(les_sel.any())))
            # a few voxels' worth of lesion may vanish or double on a coarser grid; a whole mask may not
            if _ml(int(sitk.GetArrayViewFromImage(les_bin).sum()), les_bin) > 10 * _ml(1, model_img):
                _check_on_ct(les_bin, lesions_arr, model_img, {1: "lesion"}, bg.lesions, bg.image)
            if bg.lesion_values and not combined:  # (a combined map's other values: _check_other_values)
                _plausible(bg, None, _check_left_out_lesion_values, les_a, les_src, bg.lesion_values, lungs_arr,
                           lesions_arr, model_img, hu_m, bg.lesions, bg.image)
        if lesions_arr is not None:
            lungs_arr = _plausible(bg, lungs_arr, _check_lesions_on_ct, lungs_arr, lesions_arr, hu_m,
                                   list(model_spacing_zyx), bg.lesions, bg.image)
        _plausible(bg, None, _check_lungs_on_ct, lungs_arr, hu_m, lesions_arr, bg.lungs, bg.image)
        _check_side_order(lungs_arr, bg.lungs, bg.image)  # also when 'checks: warn' let the checks above pass
    else:
        if teacher is None:
            from segmentation.classical import ClassicalSegmenter

            teacher = ClassicalSegmenter()
        work = resample_to_spacing(img, teacher_spacing_xyz, default=-1024.0)
        hu_w = sitk.GetArrayFromImage(work).astype(np.float32)
        t = time.perf_counter()
        seg = teacher.segment(hu_w, tuple(reversed(work.GetSpacing())))
        ml = [float((seg.lungs == k).sum()) * float(np.prod(work.GetSpacing())) / 1000 for k in (1, 2)]
        log.info("%s: teacher %.1f s, lungs R %.0f mL L %.0f mL", bg.name, time.perf_counter() - t, *ml)
        if sum(ml) < TEACHER_MIN_LUNG_ML:
            raise ValueError(f"{bg.image}: the teacher found no lung in background {bg.name!r} (right {ml[0]:.0f} mL, "
                             f"left {ml[1]:.0f} mL): not a chest CT, or not in HU (stored values without the "
                             "rescale?); such a case would teach that there is no lung")
        lab = sitk.GetImageFromArray(seg.lungs.astype(np.uint8))
        lab.CopyInformation(work)
        lungs_arr = _onto(lab, model_img)
    hu = sitk.GetArrayFromImage(model_img)
    hu = np.clip(hu, -1024, 3071)
    body = hu > -500
    zz, yy, xx = np.nonzero(body | (lungs_arr > 0))
    m = 4
    box = (slice(max(zz.min() - m, 0), zz.max() + m + 1), slice(max(yy.min() - m, 0), yy.max() + m + 1),
           slice(max(xx.min() - m, 0), xx.max() + m + 1))
    case = {"image": np.round(hu[box]).astype(np.int16), "lungs": lungs_arr[box].astype(np.uint8),
            "spacing": np.asarray(model_spacing_zyx, np.float32)}
    if lesions_arr is not None:
        case["lesions"] = lesions_arr[box]
    return case


#: What the warning about a lesion file without a lesion voxel (on the model grid) begins with after the file's name.
EMPTY_LESIONS = "the lesion file holds no lesion voxel"


def empty_lesions_message(path: str | Path, name: str, on_source_grid: bool = False) -> str:
    """The warning for a case whose own lesion file holds no lesion voxel (or none left on the model grid): it is
    trained as lesion-free, not given synthetic lesions."""
    how = " (a few voxels on its own grid, none on the model grid)" if on_source_grid else ""
    return (f"{path}: {EMPTY_LESIONS}{how}: case {name!r} trained as lesion-free, no synthetic lesions; remove the "
            "file to get synthetic lesions (keep it only for a scan known free of lesions)")


def cache_spacing(path: str | Path) -> np.ndarray | None:
    """The model-grid spacing (z, y, x mm) a cached case was made at (None for a file without one)."""
    with np.load(path) as z:
        return np.asarray(z["spacing"], np.float32) if "spacing" in z.files else None


CACHE_VERSION = 3  # bump when prepare_case changes what it writes: older files are made again (3: the label
#                    checks of 0.4.0, rounding, lesion pieces joining the lung)


#: An image file up to this size is known to the cache by its content (sha256); a larger one, and the files of a DICOM
#: folder, by path, size and modification time (hashing gigabytes of CT at every run would cost more than it saves).
IMAGE_HASH_MAX_BYTES = 64 * 1024 * 1024


def _file_stamp(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _file_content(path: Path) -> list:
    """Path, size and sha256 of a file: what it holds, whatever its modification time says."""
    return [str(path.resolve()), path.stat().st_size, sha256_file(path)]


def background_fingerprint(bg: Background, model_spacing_zyx: Sequence[float],
                           teacher_spacing_xyz: Sequence[float] | None) -> str:
    """What a cached case was made from (JSON): the image, the label files and values, the model grid and, for
    teacher-labelled cases, the teacher's grid. A cached file whose fingerprint differs is made again.

    The label (mask) files are known by their content (path, size, sha256): a mask edited in place and given back its
    size and modification time (a copy with ``cp -p``, an editor or a sync tool keeping times) is a new mask. An image
    file is known by its content too up to :data:`IMAGE_HASH_MAX_BYTES`; a larger one, and every file of a DICOM
    folder, only by path, size and modification time (CTs are large, and are rarely edited in place). Paths are
    resolved: one folder reached through a symlink and through its target (the recipe's default ../shared/data/chest
    and a backgrounds file's resolved entries) is one source. Caches made before the label files were hashed
    (before 0.16.0) have other fingerprints: they are made again."""
    image = Path(bg.image).resolve()
    if image.is_dir():
        files = sorted(f for f in image.rglob("*") if f.is_file())
        stamp = hashlib.sha256(json.dumps([_file_stamp(f) for f in files]).encode()).hexdigest()
        img = [str(image), len(files), stamp]
    elif image.stat().st_size <= IMAGE_HASH_MAX_BYTES:
        img = _file_content(image)
    else:
        img = _file_stamp(image)
    doc = {"version": CACHE_VERSION, "image": img,
           "lungs": _file_content(Path(bg.lungs)) if bg.lungs else None,
           "lesions": _file_content(Path(bg.lesions)) if bg.lesions else None,
           "right": [int(v) for v in bg.right], "left": [int(v) for v in bg.left],
           "model_spacing_mm": [round(float(v), 6) for v in model_spacing_zyx],
           "teacher_spacing_mm": (None if bg.lungs or teacher_spacing_xyz is None
                                  else [round(float(v), 6) for v in teacher_spacing_xyz])}
    if bg.lesion_values:  # (only when given: caches made before the option stay valid)
        doc["lesion_values"] = [int(v) for v in bg.lesion_values]
    if bg.checks != "refuse":  # (likewise)
        doc["checks"] = bg.checks
    return json.dumps(doc, sort_keys=True)


def cache_fingerprint(path: str | Path) -> str | None:
    """The fingerprint a cached case was written with (None for a file made before fingerprints)."""
    with np.load(path) as z:
        return str(z["source"]) if "source" in z.files else None


def cache_warnings(path: str | Path) -> list[str] | None:
    """The warnings said while a cached case was made (None for a file made before they were kept)."""
    with np.load(path) as z:
        if "warnings" not in z.files:
            return None
        try:
            got = json.loads(str(z["warnings"]))
        except ValueError:
            return None
    return [str(m) for m in got] if isinstance(got, list) else None


class _Said(logging.Handler):
    """The warnings (and worse) logged while it is attached: those of preparing one case, kept with it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.messages.append(record.getMessage())


def _no_lesion_voxel(path: str | Path) -> bool:
    """Whether a cached case holds an own lesion mask without a lesion voxel."""
    try:
        with np.load(path) as z:
            return "lesions" in z.files and not z["lesions"].any()
    except Exception:  # noqa: BLE001 - np.load raises many types for a damaged file
        return False


def save_case(dest: str | Path, case: dict[str, np.ndarray]) -> None:
    """Write a cached case atomically: to a hidden file beside ``dest``, then renamed, so an interrupted write
    never leaves a half file under the name the cache trusts."""
    from pipeline.outputs import current_umask

    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=".partial.npz", dir=dest.parent)
    os.close(fd)
    try:
        np.savez_compressed(tmp, **case)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp made it private (0600); as readable as any other output
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def prepare_cache(sources: Sequence[str | Path | Background], cache_dir: str | Path,
                  model_spacing_zyx: Sequence[float], teacher: Any = None, overwrite: bool = False,
                  teacher_spacing_xyz: Sequence[float] = (1.5, 1.5, 1.5)) -> list[Path]:
    """Write one ``<name>.npz`` per background (folder or :class:`Background`) into ``cache_dir``.

    An existing file is reused when it was made from the same background and options (its fingerprint, see
    :func:`background_fingerprint`); one made from another image, other label files or values, or another
    teacher grid is made again; an unreadable one (an interrupted write of an older version) too. A file made
    at another model spacing is an error naming it; one made before fingerprints were recorded is reused with a
    warning. Every background is checked (files there, lesion masks with their lung masks) before any is made.
    """
    cache = Path(cache_dir)
    bgs = [src if isinstance(src, Background) else Background.from_folder(Path(src)) for src in sources]
    for bg in bgs:
        check_background(bg)
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for bg in bgs:
        dest = cache / f"{bg.name}.npz"
        fp = background_fingerprint(bg, model_spacing_zyx, teacher_spacing_xyz)
        if dest.exists() and not overwrite:
            try:
                got, old = cache_spacing(dest), cache_fingerprint(dest)
            except Exception as exc:  # noqa: BLE001 - np.load raises many types for a damaged file
                log.warning("%s: unreadable cached case (%s); made again", dest, exc)
                got, old = None, ""
            if got is not None and not np.allclose(got, np.asarray(model_spacing_zyx, np.float32), rtol=1e-3):
                raise ValueError(f"{dest}: cached at spacing {got.tolist()} mm, not the "
                                 f"{[float(v) for v in model_spacing_zyx]} mm asked for; use another cache folder")
            if old == fp:
                said = cache_warnings(dest) or []
                if bg.lesions is not None and not any(EMPTY_LESIONS in m for m in said) and _no_lesion_voxel(dest):
                    said.append(empty_lesions_message(bg.lesions, bg.name))  # cached before this was said
                for msg in said:  # the case is trained on as it was made: its warnings still hold
                    log.warning("%s (said when %s was cached; reused as it is)", msg, dest)
                out.append(dest)
                continue
            if old is None:
                log.warning("%s: cached before the cache recorded its sources; reused as it is (delete it to "
                            "make it again from %s)", dest, bg.image)
                out.append(dest)
                continue
            if old:
                log.info("%s: background or options changed since it was cached; made again", dest)
        said = _Said()
        # the loader's and the teacher's warnings too (an empty file beside the series, no trachea found)
        said_by = [logging.getLogger(name) for name in ("pipeline", "segmentation", "scoring")]
        for logger in said_by:
            logger.addHandler(said)
        try:
            case = prepare_case(bg, model_spacing_zyx, teacher, teacher_spacing_xyz)
        finally:
            for logger in said_by:
                logger.removeHandler(said)
        case["source"] = np.asarray(fp)
        # kept with the case: said again when it is reused, and recorded in the training log (with its checks)
        case["warnings"] = np.asarray(json.dumps(said.messages))
        if bg.lungs is not None:
            case["checks"] = np.asarray(bg.checks)
        save_case(dest, case)
        log.info("cached %s: %s, %.1f MB", bg.name, case["image"].shape, dest.stat().st_size / 1e6)
        out.append(dest)
    return out


# ----------------------------------------------------------------------------------------------
# step 2: MONAI transforms and the training loop


def _monai_transforms(cfg: dict[str, Any]):
    """The MONAI transform chain (deterministic load, then random synthesis and augmentation). Every transform is
    an instance of a module-level class (:mod:`segmentation.training_transforms`), so both can be pickled: data
    loader workers started with 'spawn' (macOS, Windows) receive them that way."""
    from monai.transforms import (
        Compose,
        RandAffined,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSpatialCropd,
        SpatialPadd,
    )

    from segmentation.training_transforms import (
        FlaggedSmoothDeformd,
        LoadCase,
        Normalize,
        Pack,
        RandFlipLR,
        Synthesize,
    )

    roi = [int(v) for v in cfg["roi_size"]]
    keys = ["image", "lungs", "lesions"]
    load = LoadCase()
    # anatomy variety: a smooth random deformation of the crop, before the lesions are inserted (the lesions
    # keep their shapes and textures) or after (image, lungs and lesions bent together)
    deform = ([FlaggedSmoothDeformd(keys, spatial_size=roi, rand_size=(4, 5, 5), prob=float(cfg["deform_prob"]),
                                 def_range=float(cfg["deform_range"]), field_mode="trilinear",
                                 grid_mode=("bilinear", "nearest", "nearest"), align_corners=True)]
              if float(cfg.get("deform_prob", 0.0)) > 0 else [])
    before = bool(cfg.get("deform_before_synth", False))
    rand = Compose([
        # crop first (constant padding = air, -1024 HU), then synthesize inside the crop (faster)
        SpatialPadd(["image"], spatial_size=roi, mode="constant", value=-1024),
        SpatialPadd(["lungs", "lesions"], spatial_size=roi, mode="constant", value=0),
        RandSpatialCropd(keys, roi_size=roi, random_size=False),
        *(deform if before else []),
        Synthesize(cfg.get("synth")),
        RandFlipLR(0.5),
        Normalize(cfg["hu_window"]),
        # spacing/field-of-view variety: +-15 % scale, small rotations
        RandAffined(keys, prob=0.7, rotate_range=(0.15, 0.08, 0.08), scale_range=(0.15, 0.15, 0.15),
                    mode=("bilinear", "nearest", "nearest"), padding_mode="zeros"),
        *([] if before else deform),
        # reconstruction kernel / slice thickness variety: blur, stronger along z
        RandGaussianSmoothd(["image"], prob=0.4, sigma_x=(0.0, 1.5), sigma_y=(0.0, 0.8), sigma_z=(0.0, 0.8)),
        RandGaussianNoised(["image"], prob=0.5, mean=0.0, std=0.02),
        RandScaleIntensityd(["image"], factors=0.05, prob=0.5),
        RandShiftIntensityd(["image"], offsets=0.02, prob=0.5),
        Pack(instances=float(cfg.get("lesion_instance_weight", 0.0)) > 0),
    ])
    return load, rand


def _training_dataset(cache_files: Sequence[str | Path], c: dict[str, Any]) -> Any:
    """The dataset :func:`train` draws its batches from: each epoch ``samples_per_volume`` random crops (the
    transforms of :func:`_monai_transforms`) of each cached case, loaded once into a MONAI ``CacheDataset``.
    Picklable (a :class:`segmentation.training_transforms.Sampled`), for data loader workers started with 'spawn'."""
    from monai.data import CacheDataset

    from segmentation.training_transforms import Sampled

    load, rand = _monai_transforms(c)
    items = [{"path": str(p)} for p in cache_files]
    cached = CacheDataset(items, transform=load, cache_rate=1.0, num_workers=0)
    # each epoch draws samples_per_volume random crops per case
    index = [i for i in range(len(cached)) for _ in range(int(c["samples_per_volume"]))]
    return Sampled(cached, index, rand)


def lesion_instance_weights(lesions: np.ndarray) -> tuple[np.ndarray, int]:
    """Per voxel 1 / (voxels of its 26-connected lesion), 0 outside lesions (float32), and the number of lesions:
    summed against a per-voxel loss, each lesion's mean loss, once."""
    from scipy import ndimage as ndi

    lab, n = ndi.label(lesions, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return np.zeros(lesions.shape, np.float32), 0
    inv = np.zeros(n + 1, np.float32)
    inv[1:] = 1.0 / np.bincount(lab.ravel(), minlength=n + 1)[1:]
    return inv[lab], n


def read_init(init: str | Path) -> tuple[Path, dict[str, Any] | None, dict[str, Any]]:
    """The weights to fine-tune from: a ``model.safetensors`` or a model folder (as ``ctscore run --model`` takes).
    Returns (the weights file, the network they were made for or None when not recorded, the model.yaml beside
    them or {}); ``ConfigError`` naming the file when they cannot be used (missing, not safetensors, a manifest
    beside them that does not match)."""
    import yaml
    from safetensors import safe_open

    p = Path(init)
    if p.is_dir():
        if not (p / "model.safetensors").exists() and _is_bundle(p):
            raise ConfigError("a MONAI bundle cannot be fine-tuned (ctscore train fine-tunes its own network): give "
                              "a model folder written by ctscore train (model.safetensors, model.yaml, manifest.json; "
                              "e.g. segmentation/weights) or its model.safetensors", p)
        p = p / "model.safetensors"
    if not p.is_file():
        raise ConfigError("the weights to start from (init) do not exist (a model.safetensors or a model folder)", p)
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ConfigError(f"the weights to start from (init) are not a readable safetensors file ({exc})", p) from exc
    man = p.parent / "manifest.json"
    if (p.parent / "model.yaml").is_file() and not man.is_file():
        # its model.yaml (grid, window, network, and the inference settings a fine-tune keeps) would be unverified:
        # refused as ctscore run --model refuses the folder
        raise ConfigError("no manifest.json: refusing unverified weights (the init folder's model.yaml, whose "
                          "inference settings a fine-tune keeps, is checked against it, as ctscore run --model "
                          "checks it): give a model folder written by ctscore train", man)
    if man.is_file():
        try:
            files = json.loads(man.read_text(encoding="utf-8"))["files"]
            want, want_yaml = (files.get(f, {}).get("sha256") for f in (p.name, "model.yaml"))
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
            raise ConfigError(f"unreadable manifest beside the init weights ({exc})", man) from exc
        if want and want != sha256_file(p):
            raise ConfigError("the init weights do not match the sha256 in the manifest beside them", p)
        # the grid, window and network fine-tuning keeps come from model.yaml: it must be the one the manifest vouches for
        if want_yaml and (p.parent / "model.yaml").is_file() and want_yaml != sha256_file(p.parent / "model.yaml"):
            raise ConfigError("model.yaml beside the init weights does not match the sha256 in the manifest beside "
                              "it (edited after the weights were written?)", p.parent / "model.yaml")
    model_yaml: dict[str, Any] = {}
    if (p.parent / "model.yaml").is_file():
        try:
            model_yaml = yaml.safe_load((p.parent / "model.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"unreadable model.yaml beside the init weights ({exc})", p.parent / "model.yaml") from exc
        if not isinstance(model_yaml, dict):
            raise ConfigError("model.yaml beside the init weights is not a mapping", p.parent / "model.yaml")
    arch = model_yaml.get("arch")
    if arch is None and "arch" in meta:
        try:
            arch = json.loads(meta["arch"])
        except ValueError:
            arch = None
    return p, (arch if isinstance(arch, dict) else None), model_yaml


def _is_bundle(folder: Path) -> bool:
    """A MONAI bundle's layout (``configs/``, ``models/`` or ctscore's label mapping), not a ctscore model folder."""
    from segmentation.bundle import LABELS_FILE

    return (folder / "configs").is_dir() or (folder / "models").is_dir() or (folder / LABELS_FILE).is_file()


def refuse_shipped_out(out: str | Path) -> None:
    """Refuse (ConfigError) an output folder that is the folder of the weights shipped with ctscore
    (:data:`segmentation.monai_segmenter.WEIGHTS_DIR`, by its real path) or inside it, whatever ``overwrite`` says:
    the model card, evaluation.json and ``ctscore methods`` describe the shipped network with its evaluation, and a
    model trained into its place would be published under its figures."""
    from segmentation import monai_segmenter

    shipped = os.path.realpath(monai_segmenter.WEIGHTS_DIR)
    target = os.path.realpath(out)
    if target == shipped or target.startswith(shipped + os.sep):
        raise ConfigError(f"the output folder (--out) is the folder of the weights shipped with ctscore ({shipped})"
                          f"{'' if target == shipped else ' or inside it'}: training into it would replace the shipped "
                          "model, which its model card and evaluation (and ctscore methods) describe; refused with "
                          "--overwrite (Python: overwrite=True) too: train into another folder (--out) and run that "
                          "model with ctscore run --model FOLDER", out)


#: the model.yaml keys that say how the network is run (not how it was trained): a fine-tune keeps its init's
INFERENCE_KEYS = ("inference_roi_size", "lesion_threshold", "sw_overlap")


def check_inference_settings(values: dict[str, Any], path: str | Path) -> None:
    """Inference settings carried from an init model.yaml are usable: a ConfigError naming that file otherwise
    (published unchecked, they would make a model that fails at its first scan)."""
    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and bool(np.isfinite(v))

    if "lesion_threshold" in values and not (number(values["lesion_threshold"]) and 0 < values["lesion_threshold"] < 1):
        raise ConfigError(f"lesion_threshold must be a number in (0, 1), got {values['lesion_threshold']!r}", path)
    if "sw_overlap" in values and not (number(values["sw_overlap"]) and 0 <= values["sw_overlap"] < 1):
        raise ConfigError(f"sw_overlap must be a number in [0, 1), got {values['sw_overlap']!r}", path)
    roi = values.get("inference_roi_size")
    if roi is not None and not (isinstance(roi, list | tuple) and len(roi) == 3
                                and all(number(v) and v >= 1 and float(v).is_integer() for v in roi)):
        raise ConfigError(f"inference_roi_size must be three positive whole numbers, got {roi!r}", path)
    div = _roi_divisor(values.get("arch") if isinstance(values.get("arch"), dict) else None)
    if roi is not None and any(int(v) % div for v in roi):
        raise ConfigError(f"inference_roi_size {list(roi)}: each side must be a multiple of {div} (the network's "
                          f"downsampling)", path)


def check_init_fits(model_yaml: dict[str, Any], cfg: dict[str, Any], init: str | Path) -> None:
    """Fine-tuning keeps the init model's input grid and HU window: refuse a training config that asks for others
    (the published model.yaml would describe a grid the weights were not made for)."""
    c = {**DEFAULT_TRAIN, **(cfg or {})}
    for k in ("model_spacing_mm", "hu_window"):
        if k in model_yaml and not np.allclose(np.asarray(model_yaml[k], float), np.asarray(c[k], float), rtol=1e-3):
            raise ConfigError(f"the init weights were made for {k} {list(model_yaml[k])}, the training config asks "
                              f"for {list(c[k])}; fine-tune at the init's {k}", init)


@contextlib.contextmanager
def global_random_state_kept() -> Iterator[None]:
    """The process's global random state as it was before the block, whatever the block seeds: Python's
    ``random``, numpy's global generator, torch's CPU generator and (where CUDA is available) every CUDA
    device's, cuDNN's ``deterministic`` and ``benchmark`` flags, torch's deterministic-algorithms setting and
    MONAI's recorded seed. :func:`train` seeds them all (``set_determinism``); a notebook calling it keeps its own."""
    import random

    import torch

    try:
        import monai.utils.misc as monai_misc
    except ImportError:  # pragma: no cover - training needs MONAI anyway
        monai_misc = None
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    det = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    monai_seed = getattr(monai_misc, "_seed", None)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        with torch.backends.__allow_nonbracketed_mutation():  # as set_determinism sets them
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        torch.use_deterministic_algorithms(det[0], warn_only=det[1])
        if monai_misc is not None:
            monai_misc._seed = monai_seed


def train(cache_files: Sequence[str | Path], out_dir: str | Path, cfg: dict[str, Any] | None = None,
          arch: dict[str, Any] | None = None, device: str = "auto", init_weights: str | Path | None = None,
          provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the network on cached cases; write weights, model.yaml, train_log.json and manifest.json (over all
    three); return the log.

    The log (``train_log.json``) records what the model was made from: the options (``cfg``), each cached case's
    name and sha256 (``cases``, ``data``; in ``data`` also its ``checks`` setting and the ``warnings`` said while it
    was cached and, for a case cached by :func:`prepare_cache`, ``source_sha256``: the sha256 of its image and label
    files, and its ``lung_ml`` and ``lesion_ml`` on the model grid, None without a lesion mask of its own), the
    synthesis settings used (``synth_used``: :data:`segmentation.synth.DEFAULTS` with ``cfg``'s overrides), what ended the training (``stopped_by``: ``"iterations"``, or ``"max_minutes"`` when the time limit
    stopped it before the iterations asked, also said in a warning), the starting weights (``init``: path, ``init_sha256``, ``init_model_id``
    as ``ctscore run`` reports it), the versions of ctscore, torch, MONAI and numpy, the new model's ``model_id``, and
    ``provenance`` (the caller's: e.g. the background list and its label mapping). Case names are recorded as they
    are: name cases with ``name:`` in a backgrounds file where their names identify patients.

    Seeded (``seed`` of the training config: Python's, numpy's and torch's global generators, cuDNN's flags), and
    the caller's global random state and cuDNN flags restored afterwards (:func:`global_random_state_kept`): what it
    computes is as seeded, and a notebook's own random numbers go on as they would have."""
    with global_random_state_kept():
        return _train(cache_files, out_dir, cfg, arch, device, init_weights, provenance)


def _train(cache_files: Sequence[str | Path], out_dir: str | Path, cfg: dict[str, Any] | None = None,
           arch: dict[str, Any] | None = None, device: str = "auto", init_weights: str | Path | None = None,
           provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    import torch
    from monai.data import DataLoader
    from monai.losses import DiceCELoss, DiceLoss
    from monai.utils import set_determinism
    from safetensors.torch import load_file, save_file

    from pipeline.outputs import current_umask
    from segmentation.network import DEFAULT_ARCH, build_network

    c = dict(DEFAULT_TRAIN)
    c.update(cfg or {})
    init_yaml: dict[str, Any] = {}
    if init_weights:  # fine-tuning: the network the init weights were made for, unless one is given
        init_weights, init_arch, init_yaml = read_init(init_weights)
        if arch is None:
            arch = init_arch
        check_init_fits(init_yaml, c, init_weights)
        check_inference_settings(init_yaml, Path(init_weights).parent / "model.yaml")  # before, not after, training
    arch = {**DEFAULT_ARCH, **(arch or {})}
    problems = check_train_config(c, arch)
    if problems:
        raise ConfigError("training options: " + "; ".join(problems))
    if not cache_files:
        raise ConfigError("no cached cases to train on")
    n_samples = len(cache_files) * int(c["samples_per_volume"])
    if int(c["batch_size"]) > n_samples:  # drop_last would leave no batch at all: the loop would never end
        raise ConfigError(f"batch_size {c['batch_size']} is more than the {n_samples} crops of an epoch "
                          f"({len(cache_files)} case(s) x samples_per_volume {c['samples_per_volume']}); lower "
                          f"batch_size or raise samples_per_volume")
    from segmentation.monai_segmenter import resolve_device

    dev = resolve_device(device)
    want = np.asarray(c["model_spacing_mm"], np.float32)
    for p in cache_files:  # a cache made at another spacing would train a model whose model.yaml lies
        try:
            got = cache_spacing(p)
        except Exception as exc:  # noqa: BLE001 - np.load raises many types for a damaged file
            raise ConfigError(f"unreadable cached case ({type(exc).__name__}: {exc}); delete it to make it again",
                              p) from exc
        if got is not None and not np.allclose(got, want, rtol=1e-3):
            raise ConfigError(f"cache made at spacing {got.tolist()} mm, the training config asks for "
                              f"model_spacing_mm {want.tolist()}: rebuild the cache (another --cache folder)", p)
    out = Path(out_dir)
    refuse_shipped_out(out)
    out.mkdir(parents=True, exist_ok=True)
    set_determinism(seed=int(c["seed"]))
    torch.manual_seed(int(c["seed"]))
    ds = _training_dataset(cache_files, c)
    loader = DataLoader(ds, batch_size=int(c["batch_size"]), shuffle=True, num_workers=int(c["num_workers"]),
                        persistent_workers=int(c["num_workers"]) > 0, drop_last=True)
    net = build_network(arch).to(dev)
    if init_weights:
        try:
            net.load_state_dict(load_file(str(init_weights)))
        except RuntimeError as exc:
            raise ConfigError(f"the init weights do not fit the network {arch} "
                              f"({str(exc).strip().splitlines()[0]})", init_weights) from exc
        log.info("fine-tuning from %s", init_weights)
    opt = torch.optim.AdamW(net.parameters(), lr=float(c["lr"]), weight_decay=float(c["weight_decay"]))
    iters = int(c["iterations"])
    max_s = 60.0 * float(c["max_minutes"])
    base_lr = float(c["lr"])
    lung_loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)
    lesion_loss = DiceLoss(sigmoid=True, batch=True)
    bce = torch.nn.BCEWithLogitsLoss()
    use_amp = dev.type == "cuda"
    w_les, w_hn = float(c["lesion_lung_weight"]), float(c["hard_negative_weight"])
    w_dense = float(c["dense_lesion_weight"])
    w_inst = float(c.get("lesion_instance_weight", 0.0))
    w_hn_lung = w_hn if c.get("hard_negative_lung_weight") is None else float(c["hard_negative_lung_weight"])
    dense_heads = str(c["dense_lesion_heads"])
    lesion_on_deformed = bool(c.get("deform_lesion_loss", True))
    lo, hi = (float(v) for v in c["hu_window"])
    hn_thr = (float(c["hard_negative_hu"]) - lo) / (hi - lo)
    hn_r = max(1, int(round(float(c["hard_negative_mm"]) / float(min(c["model_spacing_mm"])))))
    t0 = time.perf_counter()
    hist: list[dict[str, float]] = []
    it = 0
    net.train()
    done = False
    while not done:
        for batch in loader:
            x = batch["image"].to(dev, non_blocking=True)
            yl = batch["lungs"].to(dev, non_blocking=True)
            ys = batch["lesions"].to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = net(x)
            logits = logits.float()
            l1 = lung_loss(logits[:, 0:3], yl)
            # the samples the lesion head learns from: all, or (deform_lesion_loss false) the undeformed ones
            ok = None if lesion_on_deformed else batch["deformed"].to(dev) < 0.5
            if ok is None or bool(ok.all()):
                l2 = lesion_loss(logits[:, 3:4], ys) + bce(logits[:, 3:4], ys)
            elif bool(ok.any()):
                l2 = lesion_loss(logits[ok, 3:4], ys[ok]) + bce(logits[ok, 3:4], ys[ok])
            else:
                l2 = logits.new_zeros(())
            loss = l1 + float(c["lesion_weight"]) * l2
            li = None
            if w_inst > 0:  # each lesion's mean BCE, averaged over the lesions of the (lesion-head) samples
                keep = torch.ones(x.shape[0], device=dev) if ok is None else ok.float()
                n_les = float((batch["n_lesions"].to(dev) * keep).sum())
                if n_les > 0:
                    vb = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 3:4], ys, reduction="none")
                    li = (batch["lesion_w"].to(dev) * keep.view(-1, 1, 1, 1, 1) * vb).sum() / n_les
                    loss = loss + w_inst * li
            lf = (focus_loss(logits, x, yl, ys, w_les, w_hn, hn_thr, hn_r, w_dense, dense_heads, w_hn_lung,
                             lesion_samples=ok)
                  if (w_les > 0 or w_hn > 0 or w_dense > 0 or w_hn_lung > 0) else None)
            if lf is not None:
                loss = loss + lf
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            # cosine decay over whichever ends first: the iterations or the time budget
            # (not at the first step: the time then is start-up alone, and would make a seeded run differ)
            progress = min(1.0, max(it / iters, (time.perf_counter() - t0) / max_s if it else 0.0))
            for g in opt.param_groups:
                g["lr"] = base_lr * min(1.0, (it + 1) / 100) * 0.5 * (1 + math.cos(math.pi * progress))
            opt.step()
            it += 1
            if it % 50 == 0 or it == 1:
                el = time.perf_counter() - t0
                hist.append({"iter": it, "loss": loss.item(), "lung": l1.item(), "lesion": l2.item(),
                             "focus": lf.item() if lf is not None else 0.0,
                             "lesion_instances": li.item() if li is not None else 0.0, "s": el})
                log.info("iter %d loss %.4f (lung %.4f lesion %.4f focus %.4f) %.0f s", it, hist[-1]["loss"],
                         hist[-1]["lung"], hist[-1]["lesion"], hist[-1]["focus"], el)
            if it >= iters or (time.perf_counter() - t0) > max_s:
                done = True
                break
    wall = time.perf_counter() - t0
    stopped_by = "iterations" if it >= iters else "max_minutes"
    if stopped_by == "max_minutes":
        log.warning("training stopped by the time limit after %d of the %d iterations asked (max_minutes %g, %.1f min): "
                    "the model has had %.0f %% of its training; to train them all, raise the limit (--max-minutes, "
                    "or max_minutes in the training config or its stage)", it, iters, float(c["max_minutes"]),
                    wall / 60, 100.0 * it / iters)
    net.eval()
    state = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    # written beside the target, then moved in with the manifest last: a crash never leaves a folder whose
    # manifest vouches for files it was not made with (the loader refuses a mismatch)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out))
    try:
        wpath = tmp / "model.safetensors"
        save_file(state, str(wpath), metadata={"arch": json.dumps(arch)})
        # safetensors writes its file 0600: the model is as readable as the other outputs (the umask says), so that
        # the other users of a lab server can run it
        os.chmod(wpath, 0o666 & ~current_umask())
        model_yaml = {
            "arch": arch,
            "model_spacing_mm": [float(v) for v in c["model_spacing_mm"]],
            "hu_window": [float(v) for v in c["hu_window"]],
            "roi_size": [int(v) for v in c["roi_size"]],
            "inference_roi_size": [160, 192, 192],
            "lesion_threshold": 0.5,
            "sw_overlap": 0.25,
        }
        # a fine-tune keeps the inference settings of the model it started from (a lab's tuned lesion
        # threshold or window); they were checked when that model.yaml was read against its manifest
        kept = {k: init_yaml[k] for k in INFERENCE_KEYS if k in init_yaml}
        if kept:
            model_yaml.update(kept)
            log.info("inference settings kept from the init model: %s", kept)
        import yaml

        (tmp / "model.yaml").write_text(yaml.safe_dump(model_yaml, sort_keys=False), encoding="utf-8")
        from segmentation.synth import _params as synth_settings

        info = {"iterations": it, "stopped_by": stopped_by, "wall_s": wall, "device": str(dev), "init": str(init_weights) if init_weights else None,
                **(_init_record(Path(init_weights)) if init_weights else {}),
                "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
                **_versions(), "cfg": c,
                # the synthesis settings used (segmentation.synth.DEFAULTS with cfg's 'synth' overrides over them)
                "synth_used": synth_settings(c.get("synth")),
                "cases": [Path(p).stem for p in cache_files],
                # the sha256 of each cached case trained on (image and labels on the model grid): the training data,
                # without their names
                # and, for a case cached with them, its 'checks' setting and the warnings said while it was made, and
                # for a case cached by prepare_cache the sha256 of its source files and its lung and lesion mL
                "data": [{"case": Path(p).stem, "sha256": sha256_file(p), "bytes": Path(p).stat().st_size,
                          **_case_record(p)} for p in cache_files],
                "model_id": model_id_of(tmp), **(provenance or {}), "history": hist}
        (tmp / "train_log.json").write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")
        write_manifest(tmp)  # over the weights, model.yaml and the log: shared with the model, vouched for with it
        for name in ("model.safetensors", "model.yaml", "train_log.json", "manifest.json"):
            os.replace(tmp / name, out / name)
    finally:  # a crash while writing leaves no hidden half-written folder
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("trained %d iterations in %.0f s on %s", it, wall, dev)
    return info


def _case_record(path: str | Path) -> dict[str, Any]:
    """What a cached case keeps of how it was made, for the training log: ``checks`` (its own labels' checks: refuse
    or warn) and ``warnings`` (said while it was made); each absent where the file does not keep it (a teacher-labelled
    case has no checks; an older cache, an anatomy mix neither)."""
    out: dict[str, Any] = {}
    try:
        with np.load(path) as z:
            if "checks" in z.files:
                out["checks"] = str(z["checks"])
            if "source" in z.files:
                out.update(_source_record(str(z["source"])))
                voxel_ml = float(np.prod(np.asarray(z["spacing"], float))) / 1000.0
                out["lung_ml"] = round(float((z["lungs"] > 0).sum()) * voxel_ml, 1)
                # None: no lesion mask of its own (synthetic lesions); 0.0: trained as lesion-free
                out["lesion_ml"] = (round(float((z["lesions"] > 0).sum()) * voxel_ml, 1) if "lesions" in z.files
                                    else None)
        said = cache_warnings(path)
    except Exception:  # noqa: BLE001 - np.load raises many types for a damaged file
        return out
    if said is not None:
        out["warnings"] = said
    return out


def _source_record(fingerprint: str) -> dict[str, Any]:
    """The sha256 of the files a cached case was made from, as its cache fingerprint (:func:`background_fingerprint`)
    has them, without their paths: ``source_sha256`` with ``image`` (None for a DICOM folder, or an image file over
    :data:`IMAGE_HASH_MAX_BYTES`, which the cache knows by path, size and time; a DICOM folder's file count is
    ``image_files``), ``lungs`` and ``lesions`` (None where the case has none)."""
    try:
        doc = json.loads(fingerprint)
        image = doc.get("image")

        def sha(entry: Any) -> str | None:
            ok = isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], str) and len(entry[2]) == 64
            return entry[2] if ok else None

        folder = isinstance(image, list) and bool(image) and (
            Path(str(image[0])).is_dir() or not str(image[0]).lower().endswith(_IMAGE_SUFFIXES))
        rec: dict[str, Any] = {"source_sha256": {"image": None if folder else sha(image),
                                                 "lungs": sha(doc.get("lungs")), "lesions": sha(doc.get("lesions"))}}
        if folder and len(image) == 3:
            rec["image_files"] = image[1]
        return rec
    except (ValueError, TypeError, AttributeError):
        return {}


def focus_loss(logits: Any, x: Any, yl: Any, ys: Any, w_lesion: float, w_hard: float, hu_thr: float,
               radius: int, w_dense: float = 0.0, dense_heads: str = "both", w_hard_lung: float | None = None,
               lesion_samples: Any = None) -> Any:
    """Voxel-weighted cross-entropy on the places the plain losses under-weight.

    - lesion voxels, lung head: a consolidated voxel must still be right or left lung (pleural
      consolidation looks like chest wall; the Dice/CE averages let the network give it away);
    - dense lesion voxels (denser than ``hu_thr``), both heads: consolidation has the density of the
      mediastinum and chest wall it touches, so it is the part the network gives away; it must be lung in
      the lung head and lesion in the lesion head (``w_dense``; ``dense_heads="lung"``: the lung head only);
    - hard negatives, both heads: voxels outside the lung within ``radius`` voxels of it and denser than
      ``hu_thr`` (normalised), i.e. mediastinal and pericardial fat, heart border, diaphragm, chest wall,
      must be background and not lesion (``w_hard``; ``w_hard_lung``, when given, replaces it in the lung head).
      The two dense terms pull in opposite directions on voxels of the same density, so the network has to
      tell them apart by shape and context.
    Each term is a mean over its own voxels (0 when there are none), times its weight. ``lesion_samples`` (bool
    [B], None = all) limits the lesion-head terms to those samples of the batch (``deform_lesion_loss``).
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    lung = (yl > 0).float()
    ce = F.cross_entropy(logits[:, 0:3], yl[:, 0].long(), reduction="none")[:, None]
    out = logits.new_zeros(())
    les = ys > 0.5
    if w_lesion > 0 and bool(les.any()):
        out = out + w_lesion * ce[les].mean()
    w_hard_lung = w_hard if w_hard_lung is None else w_hard_lung
    if w_dense > 0 or w_hard > 0:  # per-voxel lesion-head loss, shared by the two dense terms
        bce = F.binary_cross_entropy_with_logits(logits[:, 3:4], ys, reduction="none")
    sel = (torch.ones_like(les) if lesion_samples is None
           else lesion_samples.bool().view(-1, 1, 1, 1, 1).expand_as(les))

    def lesion_mean(where: Any) -> Any:  # the lesion-head term over the voxels of the selected samples
        w = where & sel
        return bce[w].mean() if bool(w.any()) else logits.new_zeros(())

    if w_dense > 0:
        dense = les & (x > hu_thr)
        if bool(dense.any()):
            term = ce[dense].mean() + (lesion_mean(dense) if dense_heads == "both" else 0.0)
            out = out + w_dense * term
    if w_hard > 0 or w_hard_lung > 0:
        k = 2 * radius + 1
        near = lung
        for ks in ((k, 1, 1), (1, k, 1), (1, 1, k)):  # separable dilation
            near = F.max_pool3d(near, ks, stride=1, padding=tuple(v // 2 for v in ks))
        hard = (near > 0) & (lung == 0) & (x > hu_thr)
        if bool(hard.any()):
            out = out + w_hard_lung * ce[hard].mean() + (w_hard * lesion_mean(hard) if w_hard > 0 else 0.0)
    return out


def write_manifest(folder: str | Path, files: Sequence[str] | None = None) -> dict[str, Any]:
    """Write ``manifest.json`` (atomically) with the sha256 of each file of ``files`` in ``folder``; by default the
    model files and the training logs there (``model.safetensors``, ``model.yaml``, ``train_log.json``,
    ``train_log_<stage>.json``). The loader checks the model files it reads; the logs are vouched for with them."""
    from pipeline.outputs import atomic_write_bytes

    folder = Path(folder)
    if files is None:
        files = ["model.safetensors", "model.yaml", "train_log.json",
                 *sorted(p.name for p in folder.glob("train_log_*.json"))]
    man = {"files": {f: {"sha256": sha256_file(folder / f), "bytes": (folder / f).stat().st_size}
                     for f in files if (folder / f).exists()}}
    atomic_write_bytes(folder / "manifest.json", (json.dumps(man, indent=1) + "\n").encode("utf-8"))
    return man


def model_id_of(folder: str | Path) -> str:
    """The id ``ctscore run`` gives the model in ``folder`` (:attr:`segmentation.monai_segmenter.MonaiSegmenter.model_id`:
    ``monai-`` and 16 hex digits of the sha256 over the sha256 of its weights and of its model.yaml)."""
    folder = Path(folder)
    both = f"{sha256_file(folder / 'model.safetensors')}:{sha256_file(folder / 'model.yaml')}"
    return "monai-" + hashlib.sha256(both.encode()).hexdigest()[:16]


def _init_record(weights: Path) -> dict[str, Any]:
    """The starting weights of a fine-tune: their sha256 and, where model.yaml is beside them, the model id."""
    rec: dict[str, Any] = {"init_sha256": sha256_file(weights)}
    if (weights.parent / "model.yaml").is_file() and weights.name == "model.safetensors":
        rec["init_model_id"] = model_id_of(weights.parent)
    return rec


def _versions() -> dict[str, Any]:
    """The versions a model was trained with (ctscore, torch, MONAI, numpy, Python)."""
    import platform

    import torch

    from pipeline import __version__

    try:
        import monai

        monai_version = monai.__version__
    except ImportError:  # pragma: no cover - training needs MONAI
        monai_version = None
    return {"ctscore": __version__, "torch": torch.__version__, "monai": monai_version, "numpy": np.__version__,
            "python": platform.python_version()}
