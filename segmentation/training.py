"""Training of the MONAI lung/lesion network from clean backgrounds plus synthetic lesions.

Two steps, both behind ``ctscore train`` / ``scripts/train_segmenter.py``:

1. :func:`prepare_cache`: each background (a DICOM series folder, or a :class:`Background`: a DICOM
   folder or an image file with its own label map, e.g. listed in a YAML file read by
   :func:`read_backgrounds_file`) is loaded, oriented LPS, segmented by the teacher (the classical segmenter, on the pipeline's 1.5 mm working grid) unless the folder has
   user masks, resampled to the model grid, cropped to the body and written as a compressed ``.npz``
   (``image`` int16 HU, ``lungs`` uint8 1 right / 2 left, optional ``lesions`` uint8, ``spacing``).
   User masks: ``lungs.nii.gz`` (1 right, 2 left; what ``ctscore run`` writes) and optionally
   ``lesions.nii.gz`` next to the DICOM files (or in ``<folder>/labels/``). A case with its own
   lesion mask is trained on as it is (no synthesis); a case with lungs only gets synthetic lesions.
2. :func:`train`: a MONAI ``CacheDataset`` over the cached cases, random transforms (lesion synthesis,
   left-right flip with label swap, crop, affine scaling = spacing variety, optional smooth deformation = anatomy variety, blur = kernel and slice
   thickness variety, noise, intensity scale/shift), a U-Net (:mod:`segmentation.network`), Dice + CE
   on the lung head and Dice + BCE on the lesion head, AdamW with cosine decay, mixed precision on CUDA.
   Writes ``model.safetensors``, ``model.yaml``, ``manifest.json`` (sha256) and ``train_log.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Hashable, Mapping, Sequence
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

    from pipeline.resample import to_lps

    path = Path(path)
    if path.is_dir():
        return load_series_lps(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{path}: not a readable image ({str(exc).strip().splitlines()[-1]})") from exc
    return to_lps(sitk.Cast(img, sitk.sitkFloat32))


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

    @classmethod
    def from_folder(cls, folder: str | Path) -> Background:
        """A DICOM folder, with ``lungs.nii.gz`` / ``lesions.nii.gz`` beside it (or in ``labels/``) if any."""
        folder = Path(folder)
        return cls(folder.name, folder, _find_mask(folder, "lungs.nii.gz"), _find_mask(folder, "lesions.nii.gz"))


BACKGROUND_KEYS = {"name", "image", "lungs", "lesions", "right", "left"}


def read_backgrounds_file(path: str | Path) -> list[Background]:
    """Backgrounds listed in a YAML file (``backgrounds:`` list); paths are relative to the file.

    Each entry is a DICOM folder path, or a mapping with ``image`` and optionally ``name``, ``lungs``,
    ``lesions``, ``right``, ``left`` (see :class:`Background`). Raises ``ValueError`` naming the file
    and the entry for anything malformed or missing.
    """
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
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
        try:
            right = tuple(int(v) for v in e.get("right", [1]))
            left = tuple(int(v) for v in e.get("left", [2]))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: 'right' and 'left' must be lists of label values") from exc
        if set(right) & set(left):
            raise ValueError(f"{where}: label values in both 'right' and 'left': {sorted(set(right) & set(left))}")
        name = str(e.get("name") or (image.name if image.is_dir() else image.name.split(".")[0]))
        out.append(Background(name, image, files["lungs"], files["lesions"], right, left))
    names = [b.name for b in out]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: background names must be unique (the cache is named by them): {names}")
    return out


def _find_mask(folder: Path, name: str) -> Path | None:
    for cand in (folder / name, folder / "labels" / name):
        if cand.exists():
            return cand
    return None


def _onto(mask: Any, ref: Any) -> np.ndarray:
    """A label image resampled (nearest neighbour, physical space) onto ``ref``; array [z, y, x]."""
    import SimpleITK as sitk

    out = sitk.Resample(mask, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(out)


def _lung_labels(path: Path, right: Sequence[int], left: Sequence[int]) -> Any:
    """The label image at ``path`` mapped to 0 / 1 right / 2 left on its own grid (before any resampling,
    so label values above 255 survive)."""
    import SimpleITK as sitk

    src = sitk.ReadImage(str(path))
    a = sitk.GetArrayFromImage(src)
    lab = np.where(np.isin(a, list(right)), 1, np.where(np.isin(a, list(left)), 2, 0)).astype(np.uint8)
    if not lab.any():
        raise ValueError(f"{path}: no voxel carries the right {list(right)} or left {list(left)} label values")
    out = sitk.GetImageFromArray(lab)
    out.CopyInformation(src)
    return out


def prepare_case(source: str | Path | Background, model_spacing_zyx: Sequence[float], teacher: Any = None,
                 teacher_spacing_xyz: Sequence[float] = (1.5, 1.5, 1.5)) -> dict[str, np.ndarray]:
    """Load one background, label its lungs (its own labels or the teacher) and bring it to the model grid."""
    import SimpleITK as sitk

    from pipeline.resample import resample_to_spacing

    bg = source if isinstance(source, Background) else Background.from_folder(Path(source))
    img = load_image_lps(bg.image)
    sp_xyz = [float(s) for s in reversed(list(model_spacing_zyx))]
    model_img = resample_to_spacing(img, sp_xyz, default=-1024.0)
    lesions_arr = None
    if bg.lungs is not None:
        log.info("%s: own lung labels %s", bg.name, bg.lungs)
        lungs_arr = _onto(_lung_labels(bg.lungs, bg.right, bg.left), model_img)
        if bg.lesions is not None:
            lesions_arr = (_onto(sitk.ReadImage(str(bg.lesions)), model_img) > 0).astype(np.uint8)
    else:
        if teacher is None:
            from segmentation.classical import ClassicalSegmenter

            teacher = ClassicalSegmenter()
        work = resample_to_spacing(img, teacher_spacing_xyz, default=-1024.0)
        hu_w = sitk.GetArrayFromImage(work).astype(np.float32)
        t = time.perf_counter()
        seg = teacher.segment(hu_w, tuple(reversed(work.GetSpacing())))
        log.info("%s: teacher %.1f s, lungs R %.0f mL L %.0f mL", bg.name, time.perf_counter() - t,
                 (seg.lungs == 1).sum() * np.prod(work.GetSpacing()) / 1000,
                 (seg.lungs == 2).sum() * np.prod(work.GetSpacing()) / 1000)
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


def cache_spacing(path: str | Path) -> np.ndarray | None:
    """The model-grid spacing (z, y, x mm) a cached case was made at (None for a file without one)."""
    with np.load(path) as z:
        return np.asarray(z["spacing"], np.float32) if "spacing" in z.files else None


def prepare_cache(sources: Sequence[str | Path | Background], cache_dir: str | Path,
                  model_spacing_zyx: Sequence[float], teacher: Any = None, overwrite: bool = False) -> list[Path]:
    """Write one ``<name>.npz`` per background (folder or :class:`Background`) into ``cache_dir``
    (skips existing files; one cached at another spacing is an error naming it)."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    for src in sources:
        bg = src if isinstance(src, Background) else Background.from_folder(Path(src))
        dest = cache / f"{bg.name}.npz"
        if dest.exists() and not overwrite:
            got = cache_spacing(dest)
            if got is not None and not np.allclose(got, np.asarray(model_spacing_zyx, np.float32), rtol=1e-3):
                raise ValueError(f"{dest}: cached at spacing {got.tolist()} mm, not the "
                                 f"{[float(v) for v in model_spacing_zyx]} mm asked for; use another cache folder")
            out.append(dest)
            continue
        case = prepare_case(bg, model_spacing_zyx, teacher)
        np.savez_compressed(dest, **case)
        log.info("cached %s: %s, %.1f MB", bg.name, case["image"].shape, dest.stat().st_size / 1e6)
        out.append(dest)
    return out


# ----------------------------------------------------------------------------------------------
# step 2: MONAI transforms and the training loop


def _monai_transforms(cfg: dict[str, Any]):
    """The MONAI transform chain (deterministic load, then random synthesis and augmentation)."""
    import torch
    from monai.transforms import (
        Compose,
        MapTransform,
        RandAffined,
        RandGaussianNoised,
        RandGaussianSmoothd,
        Randomizable,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSmoothDeformd,
        RandSpatialCropd,
        SpatialPadd,
        Transform,
    )

    from segmentation.synth import synthesize

    class LoadCase(Transform):
        """npz path -> dict of channel-first float arrays (deterministic; cached by CacheDataset)."""

        def __call__(self, item: Mapping[Hashable, Any]) -> dict[str, Any]:
            with np.load(item["path"]) as z:
                d = {"image": z["image"].astype(np.float32)[None], "lungs": z["lungs"].astype(np.float32)[None],
                     "spacing": z["spacing"].astype(float)}
                has = "lesions" in z.files
                d["lesions"] = (z["lesions"].astype(np.float32) if has else np.zeros_like(z["image"],
                                                                                          np.float32))[None]
                d["real_lesions"] = has
            return d

    class Synthesize(Randomizable, Transform):
        """Insert synthetic lesions (skipped for cases with user-drawn lesion masks)."""

        def __init__(self, synth_cfg: dict[str, Any] | None = None) -> None:
            self.synth_cfg = synth_cfg

        def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
            if d.get("real_lesions"):
                return d
            seed = int(self.R.randint(2**31 - 1))
            # numpy in (after a deformation the arrays are MONAI MetaTensors)
            image, lungs = (np.asarray(d[k].cpu() if hasattr(d[k], "cpu") else d[k]) for k in ("image", "lungs"))
            res = synthesize(image[0].astype(np.float32), lungs[0].astype(np.uint8), tuple(d["spacing"]), seed,
                             self.synth_cfg)
            d = dict(d)
            d["image"] = res.hu[None]
            d["lesions"] = res.lesions.astype(np.float32)[None]
            return d

    class RandFlipLR(Randomizable, MapTransform):
        """Mirror x (patient left-right) and swap the right/left lung labels."""

        def __init__(self, prob: float = 0.5) -> None:
            MapTransform.__init__(self, ["image", "lungs", "lesions"])
            self.prob = prob

        def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
            if self.R.random() >= self.prob:
                return d
            d = dict(d)
            for k in self.keys:
                d[k] = np.ascontiguousarray(np.asarray(d[k])[..., ::-1])
            lungs = d["lungs"]
            d["lungs"] = np.where(lungs == 1, 2, np.where(lungs == 2, 1, lungs)).astype(np.float32)
            return d

    class Normalize(Transform):
        def __init__(self, window: Sequence[float]) -> None:
            self.lo, self.hi = float(window[0]), float(window[1])

        def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
            d = dict(d)
            img = np.asarray(d["image"], np.float32)
            d["image"] = (np.clip(img, self.lo, self.hi) - self.lo) / (self.hi - self.lo)
            return d

    class Pack(Transform):
        """Keep tensors only (drop metadata that the default collate cannot batch); ``deformed`` 1.0 when the
        smooth deformation bent this crop; with ``instances``, ``lesion_w`` (1 / the size of the lesion a voxel
        belongs to, 0 elsewhere) and ``n_lesions`` for the lesion-wise term."""

        def __init__(self, instances: bool = False) -> None:
            self.instances = instances

        def __call__(self, d: dict[str, Any]) -> dict[str, Any]:
            out = {k: torch.as_tensor(np.asarray(d[k]), dtype=torch.float32) for k in ("image", "lungs", "lesions")}
            out["deformed"] = torch.tensor(float(d.get("deformed", 0.0)))
            if self.instances:
                w, n = lesion_instance_weights(out["lesions"].numpy()[0] > 0.5)
                out["lesion_w"] = torch.as_tensor(w[None])
                out["n_lesions"] = torch.tensor(float(n))
            return out

    class FlaggedSmoothDeformd(RandSmoothDeformd):
        """MONAI's RandSmoothDeformd that records in the sample whether it bent it (``deformed``)."""

        def __call__(self, data: Mapping[Hashable, Any]) -> dict[str, Any]:
            d = dict(super().__call__(data))
            d["deformed"] = float(self._do_transform)
            return d

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


def train(cache_files: Sequence[str | Path], out_dir: str | Path, cfg: dict[str, Any] | None = None,
          arch: dict[str, Any] | None = None, device: str = "auto", init_weights: str | Path | None = None
          ) -> dict[str, Any]:
    """Train the network on cached cases; write weights, model.yaml, manifest.json; return the log."""
    import torch
    from monai.data import CacheDataset, DataLoader, Dataset
    from monai.losses import DiceCELoss, DiceLoss
    from monai.utils import set_determinism
    from safetensors.torch import load_file, save_file

    from segmentation.network import DEFAULT_ARCH, build_network

    c = dict(DEFAULT_TRAIN)
    c.update(cfg or {})
    arch = {**DEFAULT_ARCH, **(arch or {})}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from segmentation.monai_segmenter import resolve_device

    dev = resolve_device(device)
    want = np.asarray(c["model_spacing_mm"], np.float32)
    for p in cache_files:  # a cache made at another spacing would train a model whose model.yaml lies
        got = cache_spacing(p)
        if got is not None and not np.allclose(got, want, rtol=1e-3):
            raise ConfigError(f"cache made at spacing {got.tolist()} mm, the training config asks for "
                              f"model_spacing_mm {want.tolist()}: rebuild the cache (another --cache folder)", p)
    set_determinism(seed=int(c["seed"]))
    torch.manual_seed(int(c["seed"]))
    load, rand = _monai_transforms(c)
    items = [{"path": str(p)} for p in cache_files]
    cached = CacheDataset(items, transform=load, cache_rate=1.0, num_workers=0)
    # each epoch draws samples_per_volume random crops per case
    index = [i for i in range(len(cached)) for _ in range(int(c["samples_per_volume"]))]

    class Sampled(Dataset):
        """Random crops of the cached cases; ``transform`` is visible to MONAI's per-worker seeding."""

        def __init__(self) -> None:
            super().__init__(index, transform=rand)

        def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
            return self.transform(cached[index[i]])

    ds = Sampled()
    loader = DataLoader(ds, batch_size=int(c["batch_size"]), shuffle=True, num_workers=int(c["num_workers"]),
                        persistent_workers=int(c["num_workers"]) > 0, drop_last=True)
    net = build_network(arch).to(dev)
    if init_weights:
        net.load_state_dict(load_file(str(init_weights)))
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
    if dense_heads not in ("both", "lung"):
        raise ValueError(f"dense_lesion_heads must be 'both' or 'lung', got {dense_heads!r}")
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
            progress = min(1.0, max(it / iters, (time.perf_counter() - t0) / max_s))
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
    net.eval()
    state = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    # written beside the target, then moved in with the manifest last: a crash never leaves a folder whose
    # manifest vouches for files it was not made with (the loader refuses a mismatch)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out))
    try:
        wpath = tmp / "model.safetensors"
        save_file(state, str(wpath), metadata={"arch": json.dumps(arch)})
        model_yaml = {
            "arch": arch,
            "model_spacing_mm": [float(v) for v in c["model_spacing_mm"]],
            "hu_window": [float(v) for v in c["hu_window"]],
            "roi_size": [int(v) for v in c["roi_size"]],
            "inference_roi_size": [160, 192, 192],
            "lesion_threshold": 0.5,
            "sw_overlap": 0.25,
        }
        import yaml

        (tmp / "model.yaml").write_text(yaml.safe_dump(model_yaml, sort_keys=False))
        write_manifest(tmp)
        info = {"iterations": it, "wall_s": wall, "device": str(dev),
                "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
                "torch": torch.__version__, "cfg": c,
                "cases": [Path(p).stem for p in cache_files], "history": hist}
        (tmp / "train_log.json").write_text(json.dumps(info, indent=1))
        for name in ("model.safetensors", "model.yaml", "train_log.json", "manifest.json"):
            os.replace(tmp / name, out / name)
    finally:  # a crash while writing leaves no hidden half-written folder
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("trained %d iterations in %.0f s on %s", it, wall, dev)
    return info


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


def write_manifest(folder: str | Path, files: Sequence[str] = ("model.safetensors", "model.yaml")) -> dict[str, Any]:
    """Write ``manifest.json`` with the sha256 of each model file in ``folder``."""
    folder = Path(folder)
    man = {"files": {f: {"sha256": sha256_file(folder / f), "bytes": (folder / f).stat().st_size}
                     for f in files if (folder / f).exists()}}
    (folder / "manifest.json").write_text(json.dumps(man, indent=1) + "\n")
    return man
