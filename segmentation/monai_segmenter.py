"""The learned segmenter: the MONAI U-Net of :mod:`segmentation.network` with the shipped weights.

Built once per process (weights read once, sha256 checked against ``manifest.json``), then
:meth:`MonaiSegmenter.segment` per scan:

1. the HU volume (any grid) is cut to the body (above -500 HU) plus 5 mm (:func:`body_crop`; the field of
   view and matrix the scanner wrote change nothing), resampled to the model
   grid (``model_spacing_mm`` of ``model.yaml``, trilinear, physical extent kept) and normalised;
2. MONAI's :class:`~monai.inferers.SlidingWindowInferer` runs the network (fp16 autocast on CUDA,
   float32 and deterministic algorithms on CPU), by default four times, the outputs averaged: on the
   scan and on its left-right mirror image (flipped back, right/left lung channels swapped;
   ``segmentation.monai.flip_tta``), and on the scan zoomed by 0.85 and 1.15 (``scale_tta: 0.15``,
   brought back to the model grid). The network was trained with that mirroring and +-15 % scaling, so
   all are valid views; averaging them removes false positives that depend on the view (clean held-out
   normal001, stage-3 weights: one pass 1.57 %, mirror 1.13 %, mirror + zooms 0.36 % of lung) for
   about 1.5 s more CPU than one pass;
3. the four output channels are interpolated back to the input grid slab by slab (memory stays small),
   the lung head is argmaxed (background / right / left) and the lesion head thresholded;
4. clean-up: per side the largest connected component (plus any other above 10 % of it), holes
   filled; stomach or colon gas taken in through the thin diaphragm taken out (:func:`remove_bowel_gas`,
   ``segmentation.monai.remove_bowel_gas``; cap001: 62 mL of the left lung mask); lesions only inside the
   lungs (adding lesion voxels outside the lung head's mask to the lungs was tried: pleural coverage +1.4
   points, lesion Dice -2 points; not kept);
   the slices above a lung's highest aerated slice taken out of that lung (:func:`trim_unaerated_apex`:
   itkelastix00's left "apex" was 15.5 mL of the neck's soft tissue, 14 mm above the lung), and in a lung's top
   20 mm the airless tissue beside its aerated apex (:func:`trim_apex_soft_tissue`,
   ``segmentation.monai.trim_apex_soft_tissue``; itkelastix00: 18.9 mL in front of the left apex, 5.8 mL of it
   called consolidation);
5. the airway (trachea, main bronchi) by the classical region growing
   (:func:`segmentation.classical.segment_airway`): the network has no airway head, and the landmark
   detector finds the carina on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from pipeline.errors import ConfigError, ModelError
from segmentation.base import LEFT_LUNG, RIGHT_LUNG, Segmentation, sides_swapped
from segmentation.classical import segment_airway

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def model_id_of(hashes: Mapping[str, str]) -> str:
    """The model id of weights whose ``model.safetensors`` and ``model.yaml`` have these sha256 (hex)."""
    import hashlib

    both = f"{hashes['model.safetensors']}:{hashes['model.yaml']}"
    return "monai-" + hashlib.sha256(both.encode()).hexdigest()[:16]


def shipped_model_id() -> str | None:
    """The model id of the weights shipped in this ctscore (from their manifest, without loading them); None when
    the manifest cannot be read."""
    try:
        files = json.loads((WEIGHTS_DIR / "manifest.json").read_text(encoding="utf-8"))["files"]
        return model_id_of({name: files[name]["sha256"] for name in ("model.safetensors", "model.yaml")})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def evaluated_model_ids() -> list[str] | None:
    """The model ids the shipped network's evaluation (``evaluation.json`` beside the shipped weights, the model
    card's figures) was made with; None when it cannot be read."""
    try:
        ids = json.loads((WEIGHTS_DIR / "evaluation.json").read_text(encoding="utf-8")).get("model_ids")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(m) for m in ids] if isinstance(ids, list) else None


def warn_unevaluated_shipped(folder: Path, model_id: str) -> None:
    """Warn when the shipped weights folder holds a model its evaluation.json does not name (replaced, e.g. by a
    model trained into it before ``ctscore train`` refused that): the model card's figures are not its figures."""
    try:
        shipped = Path(folder).resolve() == WEIGHTS_DIR.resolve()
    except OSError:
        return
    ids = evaluated_model_ids() if shipped else None
    if ids is not None and model_id not in ids:
        log.warning("%s: the weights here (model id %s) are not the network shipped with ctscore, whose model card and "
                    "evaluation.json describe the model ids %s: the shipped model was replaced; its figures do not "
                    "hold for these weights. Reinstall ctscore to get it back, and keep a model of your own in "
                    "another folder (ctscore run --model FOLDER)", folder, model_id, ", ".join(ids))


class WeightsError(ModelError):
    """The model files are missing, do not match their manifest, or do not describe a usable network."""


_DEVICE_RE = re.compile(r"cuda(?::(\d+))?")


_DETERMINISTIC_LOCK = threading.Lock()
_deterministic_users = 0
_deterministic_saved: tuple[bool, bool] = (False, False)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool = True) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` for the inference inside, and the caller's
    setting (:func:`torch.are_deterministic_algorithms_enabled`, its warn-only flag) restored after it: a notebook
    that runs a scan keeps its own torch settings. Nested and concurrent uses (scans in threads of one process)
    share one switch: the setting is restored when the last of them ends. ``enabled`` false: nothing changes."""
    global _deterministic_users, _deterministic_saved
    if not enabled:
        yield
        return
    import torch

    with _DETERMINISTIC_LOCK:
        if _deterministic_users == 0:
            _deterministic_saved = (torch.are_deterministic_algorithms_enabled(),
                                    torch.is_deterministic_algorithms_warn_only_enabled())
            torch.use_deterministic_algorithms(True, warn_only=True)
        _deterministic_users += 1
    try:
        yield
    finally:
        with _DETERMINISTIC_LOCK:
            _deterministic_users -= 1
            if _deterministic_users == 0:
                torch.use_deterministic_algorithms(_deterministic_saved[0], warn_only=_deterministic_saved[1])


def resolve_device(device: str | None) -> Any:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N`` (``gpu``/``gpu:N`` alike) as a torch
    device; anything else, CUDA asked for where there is none, or a CUDA index beyond the visible devices
    is a :class:`~pipeline.errors.ConfigError`."""
    import torch

    d = str(device or "auto").strip().lower()  # a torch.device too (from Python)
    if d == "gpu" or d.startswith("gpu:"):
        d = "cuda" + d[3:]
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d == "cpu":
        return torch.device("cpu")
    m = _DEVICE_RE.fullmatch(d)
    if not m:
        raise ConfigError(f"device must be cpu, cuda, cuda:N or auto, got {device!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available (use device cpu or auto: "
                          "--device, segmentation.device)")
    n = torch.cuda.device_count()
    if m.group(1) is not None and int(m.group(1)) >= n:
        raise ConfigError(f"device {device!r} asked for, but {n} CUDA device(s) are visible "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    return torch.device(d)


def check_manifest(folder: Path, files: list[str]) -> dict[str, str]:
    """sha256 of each file in ``files`` against ``folder/manifest.json``; returns the hashes."""
    return read_verified(folder, files)[0]


def warn_changed_records(folder: Path, loaded: list[str]) -> list[str]:
    """The other files ``folder/manifest.json`` vouches for (``train_log.json`` of ``ctscore train``: what the weights
    were trained on) that exist but no longer match it: a warning naming them, and their names returned. They do not
    change what the model does, so the model still loads; but their account of it cannot be trusted (an audit: a
    train_log.json edited after training loaded without a word). A missing record is left alone."""
    import hashlib

    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    changed = []
    for name, entry in sorted(manifest.items() if isinstance(manifest, dict) else []):
        path = folder / str(name)
        if name in loaded or not isinstance(entry, dict) or not path.is_file():
            continue
        try:
            if hashlib.sha256(path.read_bytes()).hexdigest() != entry.get("sha256"):
                changed.append(str(name))
        except OSError:
            changed.append(str(name))
    if changed:
        log.warning("%s: %s changed since the model was written (sha256 not as manifest.json says): the weights are "
                    "as verified, but that record of how they were made cannot be trusted", folder,
                    ", ".join(changed))
    return changed


def read_verified(folder: Path, files: list[str]) -> tuple[dict[str, str], dict[str, bytes]]:
    """The bytes of each file in ``files``, their sha256 checked against ``folder/manifest.json``: (hashes,
    contents). Load from these bytes, not from the file again, so that what is loaded is what was checked."""
    import hashlib

    man_path = folder / "manifest.json"
    if not man_path.exists():
        raise WeightsError("no manifest.json: refusing unverified weights", man_path)
    try:
        manifest = json.loads(man_path.read_text(encoding="utf-8"))["files"]
        if not isinstance(manifest, dict):
            raise TypeError("'files' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"unreadable manifest, expected {{'files': {{name: {{'sha256': ...}}}}}} ({exc})",
                           man_path) from exc
    hashes, contents = {}, {}
    for f in files:
        path = folder / f
        if not path.exists():
            raise WeightsError("model file missing", path)
        entry = manifest.get(f)
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise WeightsError(f"manifest has no sha256 for {f}", man_path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise WeightsError(f"unreadable model file ({exc})", path) from exc
        got = hashlib.sha256(data).hexdigest()
        if entry["sha256"] != got:
            raise WeightsError(f"sha256 of {f} is {got}, manifest.json says {entry['sha256']}", path)
        hashes[f], contents[f] = got, data
    return hashes, contents


def resize_to(x: Any, size: tuple[int, int, int]) -> Any:
    """Trilinear resize of a [N, C, z, y, x] tensor (voxel centres mapped proportionally)."""
    import torch.nn.functional as F  # noqa: N812

    if tuple(x.shape[-3:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)


def upsample_slabs(logits: Any, out_shape: tuple[int, int, int], fn: Any, slab: int = 16) -> None:
    """Interpolate ``logits`` [C, z, y, x] (model grid) to ``out_shape`` slab by slab along z.

    Calls ``fn(z0, z1, values[C, z1-z0, Y, X])`` for each slab of output slices, so that the whole
    full-resolution probability volume never exists at once. Interpolation is linear in z and
    bilinear in-plane with the same voxel-centre convention as :func:`resize_to`.
    """
    import torch
    import torch.nn.functional as F  # noqa: N812

    c, zw, _, _ = logits.shape
    zn, yn, xn = out_shape
    scale = zw / zn
    for z0 in range(0, zn, slab):
        z1 = min(zn, z0 + slab)
        pos = (torch.arange(z0, z1, dtype=torch.float64) + 0.5) * scale - 0.5
        pos = pos.clamp(0, zw - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=zw - 1)
        w = (pos - lo.double()).float()
        need = torch.unique(torch.cat([lo, hi]))
        planes = F.interpolate(logits[:, need], size=(yn, xn), mode="bilinear", align_corners=False)
        idx = {int(v): i for i, v in enumerate(need)}
        a = planes[:, [idx[int(v)] for v in lo]]
        b = planes[:, [idx[int(v)] for v in hi]]
        fn(z0, z1, a + (b - a) * w[None, :, None, None])


#: HU above which a voxel is body (or table), and the margin (mm) kept around it: the box the network sees.
BODY_HU = -500.0
BODY_MARGIN_MM = 5.0
#: HU of the air put where the in-plane margin reaches past the field of view (the loader's padding value).
MARGIN_AIR_HU = -1000.0


def mask_extent(mask: np.ndarray) -> list[tuple[int, int]] | None:
    """The first and last index along each axis of the true voxels of a 3-D ``mask``; None when there are none.

    From projections of the mask, not ``np.nonzero`` (three int64 arrays, 24 bytes per true voxel: 1.5 GB for the
    body of a 512x512x600 series, for six numbers)."""
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    if zs.size == 0:
        return None
    plane = mask[zs[0]:zs[-1] + 1].any(axis=0)
    ys, xs = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    return [(int(zs[0]), int(zs[-1])), (int(ys[0]), int(ys[-1])), (int(xs[0]), int(xs[-1]))]


def scan_input(hu: np.ndarray, spacing: Any) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``hu`` as float32 [z, y, x] and ``spacing`` as three floats, or a ValueError saying what is wrong (a 2-D
    slice, an empty volume, a spacing that is not three positive numbers). NaN voxels (missing data: some NIfTI
    writers and resamplers put NaN outside the field of view) become :data:`MARGIN_AIR_HU`, as the outside of the
    field of view: one NaN in the body made every logit of the instance-normalised window NaN, and the whole body
    box left lung."""
    hu = np.asarray(hu, np.float32)
    if hu.ndim != 3:
        raise ValueError(f"the HU volume must be 3-D [z, y, x], got an array of shape {hu.shape}")
    if hu.size == 0:
        raise ValueError(f"the HU volume is empty (shape {hu.shape})")
    try:
        sp = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        sp = ()
    if len(sp) != 3 or not all(np.isfinite(v) and v > 0 for v in sp):
        raise ValueError(f"spacing must be three positive numbers (z, y, x mm), got {spacing!r}")
    if not np.isfinite(hu.sum(dtype=np.float64)):  # one pass without a copy; NaN (or +inf and -inf) somewhere
        nan = np.isnan(hu)
        if nan.any():
            log.warning("%d NaN voxels in the HU volume: taken as air (%.0f HU), as outside the field of view",
                        int(nan.sum()), MARGIN_AIR_HU)
            hu = np.where(nan, np.float32(MARGIN_AIR_HU), hu)
    return hu, sp  # type: ignore[return-value]


def body_crop(hu: np.ndarray, spacing: tuple[float, float, float],
              margin_mm: float = BODY_MARGIN_MM) -> tuple[tuple[slice, ...], list[tuple[int, int]]]:
    """The part of ``hu`` [z, y, x] the network is run on: the bounding box of the voxels above :data:`BODY_HU`
    grown by ``margin_mm`` (default :data:`BODY_MARGIN_MM`) (the whole volume when there are none), and the in-plane (y, x) padding, as
    for ``np.pad``, where the margin reaches past the field of view (air is put there; z is never padded).

    Run on a whole field of view, the instance-normalised network depends on how much air surrounds the patient,
    i.e. on the field of view and matrix the scanner wrote, not on the anatomy (cap001 written with a 500 mm field
    of view instead of 302 mm: lungs 5850 -> 6885 mL, lesions 249 -> 1241 mL, apices lost); a body cut by the
    field of view gets the same margin as one inside it. The margin itself still matters (model card,
    "Inference box"): on the held-out normal001, 0 / 4.5 / 7.5 / 10.5 / 25.5 / 40.5 mm of air (the margin in
    voxels of 1.5 mm) gave false-positive lesion 0 / 0 / 0 / 2.3 / 1.9 / 10.3 mL (the liver dome under the
    right hemidiaphragm called consolidation) and synthetic lesion Dice 0.814 / 0.844 / 0.844 / 0.851 / 0.858 /
    0.843; 5 mm sits inside the clean plateau. The training cases were cut to the body plus 4 voxels of 2.5 mm
    (``prepare_case``), then cropped or air-padded to the 96x128x128 training window."""
    ext = mask_extent(np.asarray(hu) > BODY_HU)
    if ext is None:
        return tuple(slice(0, n) for n in hu.shape), [(0, 0)] * 3
    box, pad = [], []
    for axis, ((first, last), n, s) in enumerate(zip(ext, hu.shape, spacing)):
        m = int(np.ceil(margin_mm / s))
        lo, hi = first - m, last + m + 1
        box.append(slice(max(0, lo), min(n, hi)))
        pad.append((0, 0) if axis == 0 else (max(0, -lo), max(0, hi - n)))
    return tuple(box), pad


def _no_body(hu: np.ndarray, box: tuple[slice, ...], pad: list[tuple[int, int]]) -> bool:
    """Whether :func:`body_crop` found no body (no voxel above :data:`BODY_HU`): its box is then the whole volume,
    unpadded (checked again only in that case, which a body rarely gives)."""
    whole = all(b == slice(0, n) for b, n in zip(box, hu.shape)) and all(p == (0, 0) for p in pad)
    return whole and not bool((hu > BODY_HU).any())


def _inner(pad: list[tuple[int, int]], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The slices of a padded array (``shape``) that hold the unpadded one."""
    return tuple(slice(a, n - b) for (a, b), n in zip(pad, shape))


def argmax3(a: Any, b: Any, c: Any) -> Any:
    """``torch.argmax`` over three same-shaped tensors as uint8 0 / 1 / 2 (first index wins ties, as argmax);
    elementwise compares, several times faster on CPU than an argmax over a stacked leading axis."""
    import torch

    lab = torch.where(b >= c, 1, 2).to(torch.uint8)
    return torch.where((a >= b) & (a >= c), torch.zeros_like(lab), lab)


def keep_main_components(mask: np.ndarray, min_share: float = 0.1) -> np.ndarray:
    """The largest connected component of ``mask`` plus any other at least ``min_share`` of its size."""
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_share * sizes.max()) + 1
    return np.isin(lab, keep)


def air_level(hu: np.ndarray, spacing: tuple[float, float, float]) -> float | None:
    """What air reads on this scan: the median HU of its trachea and main bronchi
    (:func:`segmentation.classical.segment_airway`); None where none is found. Nominally -1000; scanners differ
    (of the six real series in shared/data/chest: -990 to -935)."""
    airway = segment_airway(hu, spacing)
    return float(np.median(hu[airway])) if airway.any() else None


def _beside_share(piece: np.ndarray, main: np.ndarray, sp: np.ndarray, inner_mm: float, width_mm: float) -> float:
    """The share of ``main`` in the ring from ``inner_mm`` to ``inner_mm + width_mm`` around ``piece`` within
    ``piece``'s own slices (distances in the slice plane only; the ring is cut at the arrays' edges)."""
    pad = np.r_[0, np.ceil((inner_mm + width_mm) / sp[1:]).astype(int) + 1]
    box = tuple(slice(max(int(i.min()) - p, 0), int(i.max()) + p + 1) for i, p in zip(np.nonzero(piece), pad))
    d = ndi.distance_transform_edt(~piece[box], sampling=(1e6, sp[1], sp[2]))  # (1e6: no distance across slices)
    ring = (d > inner_mm) & (d <= inner_mm + width_mm)
    return float(main[box][ring].mean()) if ring.any() else 0.0


#: A lung's top slice must hold at least this much aerated lung (mm2 below :data:`APEX_AERATED_HU`): the network took
#: soft tissue of the neck above the apex for lung (itkelastix00: 7 slices, 15.5 mL of the left lung mask, its median
#: -40 HU; the left apex 14 mm above the reference level, the right 12 mm, over 3.5 mL).
APEX_MIN_AERATED_MM2 = 5.0
APEX_AERATED_HU = -500.0


#: Airless tissue at a lung's top that stays (:func:`trim_unaerated_apex`, :func:`trim_apex_soft_tissue`): above
#: ``APEX_AIRLESS_HU``, at least ``2 * APEX_THICK_MM`` thick and reaching ``APEX_DEEP_MM`` below the lung's
#: (aerated) top, as consolidation filling an apex goes on down into the lung.
APEX_AIRLESS_HU = -300.0
APEX_THICK_MM = 3.0
APEX_DEEP_MM = 25.0
#: Soft tissue beside an aerated apex (:func:`trim_apex_soft_tissue`): in the top ``APEX_SOFT_TISSUE_TOP_MM`` of a
#: lung, mask voxels above ``APEX_AIRLESS_HU`` farther than ``APEX_SOFT_TISSUE_FAR_MM`` in plane from that lung's
#: aerated voxels in the slice.
APEX_SOFT_TISSUE_TOP_MM = 20.0
APEX_SOFT_TISSUE_FAR_MM = 5.0


def _thick_part(mask: np.ndarray, spacing: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """``mask`` opened by a ball of ``radius_mm`` (erosion then dilation, by distance transforms on the voxel grid's
    own spacing): what is left of it where it is at least ``2 * radius_mm`` thick. Vessels and thin strands go."""
    core = ndi.distance_transform_edt(mask, sampling=spacing) > radius_mm
    if not core.any():
        return core
    return mask & (ndi.distance_transform_edt(~core, sampling=spacing) <= radius_mm)


def _going_down(m: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float], k0: int, k1: int, k_deep: int,
                airless_hu: float, thick_mm: float) -> np.ndarray:
    """Over slices ``k0..k1`` of one lung's mask ``m`` (``[k1 - k0 + 1, y, x]``): its airless tissue (above
    ``airless_hu``) at least ``2 * thick_mm`` thick (:func:`_thick_part`) in the pieces that have a voxel at slice
    ``k_deep`` or below, i.e. reach that deep, with the airless voxels within ``thick_mm`` of them (the edges and
    corners that the opening rounds off); pieces are joined across slices (26-connected) within the window only.
    The thickness is measured with no tissue around the window's sides and top (the lung's box plus one voxel of
    nothing, and nothing above ``k1``, the lung's top), and as going on below ``k0``."""
    win = m[k0:k1 + 1]
    out = np.zeros(win.shape, bool)
    if k_deep < k0 or not win.any():
        return out
    ys, xs = np.nonzero(win.any(axis=0))
    box = (slice(None), slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    airless = np.pad(win[box] & (hu[k0:k1 + 1][box] > airless_hu), ((0, 1), (1, 1), (1, 1)))
    lab, _ = ndi.label(_thick_part(airless, spacing, thick_mm), structure=np.ones((3, 3, 3), bool))
    deep = np.unique(lab[:k_deep - k0 + 1])
    going = np.isin(lab, deep[deep > 0])
    if going.any():
        going = airless & (ndi.distance_transform_edt(~going, sampling=spacing) <= thick_mm)
    out[box] = going[:-1, 1:-1, 1:-1]
    return out


def trim_unaerated_apex(lungs: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float],
                        min_mm2: float = APEX_MIN_AERATED_MM2, aerated_hu: float = APEX_AERATED_HU,
                        airless_hu: float = APEX_AIRLESS_HU, thick_mm: float = APEX_THICK_MM,
                        deep_mm: float = APEX_DEEP_MM) -> dict[int, float]:
    """Per lung, the slices above its highest slice with at least ``min_mm2`` of that lung below ``aerated_hu``
    are taken out of it, in place (LPS ``[z, y, x]`` arrays: the head at the high slice indices) -- but for airless
    tissue at least ``2 * thick_mm`` thick that reaches ``deep_mm`` below that slice. Returns the mL taken out per
    lung label (only those with any).

    Lung at its apex holds air: a partial-volume rim still reads below -500 HU in the top slice (the five other real
    chests: 0-0.1 mL above their highest aerated slice). Soft tissue of the neck or the shoulder taken for lung has
    none (itkelastix00: 15.5 mL of the left lung mask on its own grid at 0.8.0; the log, on the 1.5 mm working grid
    where the step runs, says 18.8 mL left and 4.3 mL right). Consolidation that fills an apex to its top has none
    either, but it goes on down into the lung as thick airless tissue (:func:`_going_down`), where the neck's tissue
    stops near the apex: without that exception (0.8.0-0.13.0) the step took 19.7 mL of the synthetic apical
    consolidation of one of the held-out evaluation's twelve pleural cases (seed 1010, coverage of that case 59.9 ->
    56.4 %; the twelve 74.2 -> 73.6 %), with it 0.1 mL; on the six real chests it takes the same with or without.
    Only the top: at the base a dependent consolidation can fill the lowest slices of a lung, and the liver dome
    taken for lung is flagged (SOLID_LESION) instead. A lung whose mask reaches the volume's top slice is left
    alone: the scan cuts it, its top is the scan's edge and no apex (consolidation there would go; the lung is
    flagged PARTIAL_LUNG_COVERAGE)."""
    removed: dict[int, float] = {}
    px_mm2 = float(spacing[1]) * float(spacing[2])
    voxel_ml = px_mm2 * float(spacing[0]) / 1000.0
    n_deep = int(np.floor(deep_mm / float(spacing[0]) + 1e-6))
    for side, box in _side_boxes(lungs):  # (within each lung's box: the whole volume took 0.2-0.5 s)
        if box[0].stop == lungs.shape[0]:  # the scan cuts the lung: its top is the scan's edge, not an apex
            continue
        view, hu_box = lungs[box], hu[box]
        m = view == side
        aerated = np.count_nonzero(m & (hu_box < aerated_hu), axis=(1, 2)) * px_mm2
        ok = np.nonzero(aerated >= min_mm2)[0]
        if ok.size == 0:  # no aerated slice at all: not this step's to judge (NO_LUNG_FOUND, DENSE_LUNG)
            continue
        top, k1 = int(ok.max()), m.shape[0] - 1
        if top < k1:
            k0 = max(top - n_deep, 0)
            stays = _going_down(m, hu_box, spacing, k0, k1, top - n_deep, airless_hu, thick_mm)
            cap = m[top + 1:] & ~stays[top + 1 - k0:]
            if cap.any():
                removed[side] = float(np.count_nonzero(cap)) * voxel_ml
                view[top + 1:][cap] = 0
    return removed


def _side_boxes(lungs: np.ndarray) -> list[tuple[int, tuple[slice, ...]]]:
    """(label, bounding box) of each lung found in ``lungs`` (one pass over the volume)."""
    boxes = ndi.find_objects(lungs, max_label=max(RIGHT_LUNG, LEFT_LUNG))
    return [(side, boxes[side - 1]) for side in (RIGHT_LUNG, LEFT_LUNG) if boxes[side - 1] is not None]


def trim_apex_soft_tissue(lungs: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float],
                          top_mm: float = APEX_SOFT_TISSUE_TOP_MM, far_mm: float = APEX_SOFT_TISSUE_FAR_MM,
                          thick_mm: float = APEX_THICK_MM, deep_mm: float = APEX_DEEP_MM,
                          airless_hu: float = APEX_AIRLESS_HU, aerated_hu: float = APEX_AERATED_HU
                          ) -> dict[int, float]:
    """Airless tissue beside a lung's aerated apex taken out of that lung, in place (LPS ``[z, y, x]``, the head at
    the high slice indices). Returns the mL taken out per lung label (only those with any).

    :func:`trim_unaerated_apex` takes out whole airless slices only; beside an apex that does hold air the network
    can take the soft tissue at the thoracic inlet (the subclavian vessels, muscle) for lung, and its lesion head
    calls it consolidation (itkelastix00, a clean scan: 18.9 mL of its left lung mask in front of the apex in the
    top 14 mm on its own grid, 22.5 mL on the working grid, as logged; 5.8 mL of it "consolidation": six-zone left
    upper 1, zhang900 27 points). Apical lung holds air within a few mm of every point of it, so the candidates
    are, per slice in the top ``top_mm`` of each lung
    (after :func:`trim_unaerated_apex`), the lung-mask voxels above ``airless_hu`` more than ``far_mm`` in plane
    from that lung's voxels below ``aerated_hu`` in the slice. Consolidation that fills the apex is such tissue too
    (the synthetic apical consolidations of the held-out evaluation: 15-49 mL of candidates each), but it goes on
    down into the lung, where the soft tissue of the inlet stops at the top: candidates that belong to a piece of the
    lung's airless tissue at least ``2 * thick_mm`` thick (vessels do not join pieces) reaching ``deep_mm`` below
    the lung's top stay (:func:`_going_down`; those consolidations: 30-35 mm deep; itkelastix00's soft tissue
    18 mm, ge_mister_ct's 5 mm; without the exception the step cut three of the twelve pleural cases' apical
    consolidations, coverage 73.6 -> 71.0 %). A slice with no aerated voxel of that lung is
    :func:`trim_unaerated_apex`'s. A lung whose mask reaches the volume's top slice (the scan cuts it: no apex in
    the scan) or is under ``deep_mm`` high is left alone. What it costs: an apical consolidation confined to the top
    ``deep_mm`` of a lung loses what of it lies more than ``far_mm`` from air."""
    removed: dict[int, float] = {}
    voxel_ml = float(np.prod(spacing)) / 1000.0
    n_top = int(np.floor(top_mm / float(spacing[0]) + 1e-6))
    n_deep = int(np.floor(deep_mm / float(spacing[0]) + 1e-6))
    for side, box3 in _side_boxes(lungs):  # within each lung's box (the top slices of it, mostly)
        if box3[0].stop == lungs.shape[0]:  # the scan cuts the lung: its top is the scan's edge, not an apex
            continue
        view, hu_box = lungs[box3], hu[box3]
        top = view.shape[0] - 1
        if top < n_deep:  # a lung (a piece) under deep_mm high: its top 20 mm are most of it, and none goes down
            continue
        k_lo = max(top - max(n_deep, n_top), 0)
        m = view[k_lo:] == side  # the top of the lung: slices k_lo..top (below, local indices - k_lo)
        hu_top = hu_box[k_lo:]
        top -= k_lo
        k_first = max(top - n_top, 0)
        cand = np.zeros(m.shape, bool)
        for k in range(k_first, top + 1):
            sl = m[k]
            ys, xs = np.nonzero(sl)
            if ys.size == 0:  # a gap in the mask's slices (a second piece kept above)
                continue
            box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
            lung = sl[box]
            aerated = lung & (hu_top[k][box] < aerated_hu)
            airless = lung & (hu_top[k][box] > airless_hu)
            if aerated.any() and airless.any():
                # within the lung's own box: a voxel there is never nearer to aerated lung outside it
                cand[k][box] = airless & (ndi.distance_transform_edt(~aerated, sampling=spacing[1:]) > far_mm)
        if not cand.any():
            continue
        # thick airless tissue reaching deep_mm below the top stays
        cut = cand & ~_going_down(m, hu_top, spacing, 0, top, top - n_deep, airless_hu, thick_mm)
        view[k_lo:][cut] = 0
        n = int(np.count_nonzero(cut))
        if n:
            removed[side] = n * voxel_ml
    return removed


def remove_bowel_gas(lungs: np.ndarray, hu: np.ndarray, spacing: tuple[float, float, float],
                     gas_hu: float = -950.0, aerated_hu: float = -600.0, min_ml: float = 2.0,
                     wall_mm: float = 8.0, low_quantile: float = 25.0, air_hu: float | None = None,
                     max_air_shift: float = 50.0, under_share: float = 0.5, beside_share: float = 0.2,
                     beside_mm: float = 12.0) -> tuple[np.ndarray, dict[int, float]]:
    """Stomach or colon gas that the lung mask took in through the thin diaphragm, taken out again.

    Per side, the aerated part of the mask (below ``aerated_hu``) falls into connected pieces. A piece other than
    the largest is bowel gas when it is at least ``min_ml``, homogeneous air (median below ``gas_hu``; aerated lung
    parenchyma is -950 to -700 HU, bowel gas about -1000) and low (its mean height below the ``low_quantile``-th
    percentile of the largest piece's slices: under the dome). ``gas_hu`` is for a scan on which air reads -1000;
    where air reads higher (``air_hu``; by default measured in the trachea, :func:`air_level`, and only when a
    low piece's median lies within ``max_air_shift`` above ``gas_hu``) the limit rises with it, by at most
    ``max_air_shift`` (ricord_covid_419639: trachea -945 HU, the gastric gas in its left lung mask -943 HU, the
    basal lung -800 HU). The gas goes, with the mask voxels within ``wall_mm`` of it that are nearer to it than to
    the largest piece (diaphragm and stomach wall); what is then cut off the side goes too. An aerated island cut
    off by consolidation is lung density and stays. The pieces are cut at -600 HU, not -500: a thin diaphragm
    seen obliquely reads -600 to -500 HU in 1.5 mm voxels, which joined ricord_covid_419639's gastric gas to its
    lung (34 mL of gas and wall kept). Gas joined to the lung by voxels below ``aerated_hu`` is one piece with it and is not
    found here.

    A low air piece is gas only when it lies under the lung, as the stomach and colon do under the dome: at least
    ``under_share`` of its voxels have, in their (y, x) column, the largest piece above them and none of it below
    them; and at most ``beside_share`` of the ring from ``wall_mm`` to ``wall_mm + beside_mm`` around it within its
    own slices is that piece (under the dome lung lies above the gas, not around it: gastric gas of cap001 and
    ricord_covid_419639, all voxels under the lung, 4-6 % of the ring lung). An air space inside the lower lung
    whose rim reads above ``aerated_hu`` (a bulla with a wall, or in consolidation or dense ground glass: a cavity,
    a pneumatocele, COVID on emphysema) has lung below it in its columns or beside it in its slices and stays
    (before these tests an 87 mL right basal bulla in a consolidation rim, resting on the dome with 61 % of it under
    the lung but 39 % of its ring lung, left the lung with 8 mm of its rim: 99 mL). An air space with no aerated
    lung below or beside it (a bulla in a wholly consolidated base, on the diaphragm) still reads as gas.

    Returns the new label map and the removed volume (mL) per side label. ``lungs`` is not changed."""
    out = lungs.copy()
    sp = np.asarray(spacing, float)
    voxel_ml = float(np.prod(sp)) / 1000.0
    removed: dict[int, float] = {}
    measured = air_hu is not None
    for side in (RIGHT_LUNG, LEFT_LUNG):
        whole = out == side
        if not whole.any():
            continue
        side_box = tuple(slice(a, b + 1) for a, b in mask_extent(whole))
        m, h = whole[side_box], hu[side_box]  # all work within the side's box
        pieces, n = ndi.label(m & (h < aerated_hu))
        if n < 2:
            continue
        sizes = np.bincount(pieces.ravel())[1:]
        main = int(sizes.argmax()) + 1
        main_mask = pieces == main
        z_low = np.percentile(np.nonzero(main_mask)[0], low_quantile)
        # the floor of the largest piece in each (y, x) column (-1 where it has none): below it lies what is under
        # the lung (the dome and what is beneath it); an air space with lung below it in its column is in the lung
        floor = np.where(main_mask.any(axis=0), main_mask.argmax(axis=0), -1)
        gas = np.zeros(m.shape, bool)
        for k in np.flatnonzero(sizes * voxel_ml >= min_ml) + 1:
            if k == main:
                continue
            piece = pieces == k
            z, y, x = np.nonzero(piece)
            if z.mean() >= z_low or np.mean(z < floor[y, x]) < under_share or \
                    _beside_share(piece, main_mask, sp, wall_mm, beside_mm) > beside_share:
                continue
            median = float(np.median(h[piece]))
            if gas_hu <= median < gas_hu + max_air_shift and not measured:  # measured once, only when it matters
                air_hu, measured = air_level(hu, spacing), True
            shift = min(max((air_hu if air_hu is not None else -1000.0) + 1000.0, 0.0), max_air_shift)
            if median < gas_hu + shift:
                gas |= piece
        if not gas.any():
            continue
        # the wall between gas and lung, within a box around the gas (distances further out do not matter)
        pad = np.ceil(2 * wall_mm / sp).astype(int) + 1
        box = tuple(slice(max(int(i.min()) - p, 0), int(i.max()) + p + 1) for i, p in zip(np.nonzero(gas), pad))
        d_gas = ndi.distance_transform_edt(~gas[box], sampling=sp)
        main_box = pieces[box] == main
        d_main = ndi.distance_transform_edt(~main_box, sampling=sp) if main_box.any() else np.inf
        cut = gas.copy()
        cut[box] |= m[box] & (d_gas <= wall_mm) & (d_gas < d_main)
        drop = m & ~keep_main_components(m & ~cut)
        out[side_box][drop] = 0
        removed[side] = float(drop.sum()) * voxel_ml
    return out, removed


def check_model_yaml(meta: dict[str, Any], path: Path) -> None:
    """The grid, window and window sizes of a model description are usable numbers; else a WeightsError naming it."""
    def numbers(key: str, n: int) -> list[float]:
        v = meta[key]
        if not isinstance(v, list | tuple) or len(v) != n or not all(
                isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(x) for x in v):
            raise WeightsError(f"{key} must be a list of {n} numbers, got {v!r}", path)
        return [float(x) for x in v]

    if not isinstance(meta["arch"], dict):
        raise WeightsError(f"arch must be a mapping, got {meta['arch']!r}", path)
    if min(numbers("model_spacing_mm", 3)) <= 0:
        raise WeightsError(f"model_spacing_mm must be positive, got {meta['model_spacing_mm']!r}", path)
    lo, hi = numbers("hu_window", 2)
    if not lo < hi:
        raise WeightsError(f"hu_window must be [low, high] with low < high, got {meta['hu_window']!r}", path)
    from segmentation.network import downsampling_factor

    div = downsampling_factor(meta["arch"])
    for key in ("roi_size", "inference_roi_size"):
        if key in meta and (min(numbers(key, 3)) < 1 or not all(v.is_integer() for v in numbers(key, 3))):
            raise WeightsError(f"{key} must be three positive whole numbers, got {meta[key]!r}", path)
        if key in meta and any(int(v) % div for v in numbers(key, 3)):  # else every scan fails in the network
            raise WeightsError(f"{key} {meta[key]!r}: each side must be a multiple of {div} (the network's "
                               f"downsampling, the product of its strides)", path)

    def number_in(key: str, lo: float, hi: float) -> None:
        v = meta[key]
        if not (isinstance(v, int | float) and not isinstance(v, bool) and lo <= v < hi):
            raise WeightsError(f"{key} must be a number in [{lo:g}, {hi:g}), got {v!r}", path)

    if "sw_overlap" in meta:
        number_in("sw_overlap", 0.0, 1.0)
    if "scale_tta" in meta:
        number_in("scale_tta", 0.0, 0.5)
    if "flip_tta" in meta and not isinstance(meta["flip_tta"], bool):
        raise WeightsError(f"flip_tta must be true or false, got {meta['flip_tta']!r}", path)


class MonaiSegmenter:
    """Learned lung (right/left) and lesion segmenter implementing :class:`segmentation.base.Segmenter`."""

    name = "monai"

    def __init__(self, weights_path: str | Path | None = None, device: str = "auto",
                 cfg: dict[str, Any] | None = None) -> None:
        import yaml
        from safetensors import SafetensorError
        from safetensors.torch import load as load_bytes

        from segmentation.network import build_network

        seg_cfg = (cfg or {}).get("segmentation", {}) if cfg else {}
        # optional options: segmentation.monai.{weights, lesion_threshold, sw_batch_size, flip_tta, scale_tta, body_margin_mm,
        # remove_bowel_gas, trim_apex_soft_tissue}
        self.options: dict[str, Any] = dict(seg_cfg.get("monai", {}) or {})
        weights_path = weights_path or self.options.get("weights")
        folder = Path(weights_path) if weights_path else WEIGHTS_DIR
        if folder.is_file():  # the weights file itself: its folder holds model.yaml and manifest.json
            if folder.name != "model.safetensors":
                raise WeightsError("expected a weights folder (model.safetensors, model.yaml, manifest.json) "
                                   "or its model.safetensors", folder)
            folder = folder.parent
        elif not folder.is_dir():
            raise WeightsError("no such weights folder", folder)
        self.folder = folder
        self.hashes, contents = read_verified(folder, ["model.safetensors", "model.yaml"])
        warn_changed_records(folder, ["model.safetensors", "model.yaml"])
        yaml_path = folder / "model.yaml"
        try:
            self.meta: dict[str, Any] = yaml.safe_load(contents["model.yaml"].decode("utf-8"))
            if not isinstance(self.meta, dict):
                raise yaml.YAMLError("not a mapping")
            missing = [k for k in ("arch", "model_spacing_mm", "roi_size", "hu_window") if k not in self.meta]
        except (UnicodeDecodeError, yaml.YAMLError) as exc:
            raise WeightsError(f"unreadable model description ({exc})", yaml_path) from exc
        if missing:
            raise WeightsError(f"model description lacks {missing}", yaml_path)
        check_model_yaml(self.meta, yaml_path)
        self.device = resolve_device(device)
        try:
            state = load_bytes(contents.pop("model.safetensors"))  # safetensors: no pickle, no code
        except (SafetensorError, OSError) as exc:  # truncated or not a safetensors file (its manifest hash fits)
            raise WeightsError(f"unreadable weights, not a safetensors file ({type(exc).__name__}: {exc})",
                               folder / "model.safetensors") from exc
        try:
            self.net = build_network(self.meta["arch"])
            self.net.load_state_dict(state)
        except (ValueError, TypeError, RuntimeError, OSError, KeyError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(f"the weights do not load into the network model.yaml describes ({msg})",
                               folder / "model.safetensors") from exc
        self.net.eval().to(self.device)
        if "lesion_threshold" in self.options:
            thr, where = self.options["lesion_threshold"], "segmentation.monai.lesion_threshold"
        else:
            thr, where = self.meta.get("lesion_threshold", 0.5), f"lesion_threshold of {yaml_path}"
        try:
            self.lesion_threshold = float(thr)
        except (TypeError, ValueError):
            self.lesion_threshold = float("nan")
        if not 0.0 < self.lesion_threshold < 1.0:  # also false for NaN
            raise ConfigError(f"{where} must be a probability strictly between 0 and 1, got {thr!r}")
        self.flip_tta = bool(self.options.get("flip_tta", self.meta.get("flip_tta", True)))
        zoom = float(self.options.get("scale_tta", self.meta.get("scale_tta", 0.15)))
        if not 0.0 <= zoom < 0.5:
            raise ConfigError(f"segmentation.monai.scale_tta must be in [0, 0.5), got {zoom}")
        self.scales = (1.0,) if zoom == 0 else (1.0 - zoom, 1.0, 1.0 + zoom)
        self.remove_bowel_gas = bool(self.options.get("remove_bowel_gas", True))
        self.trim_apex_soft_tissue = bool(self.options.get("trim_apex_soft_tissue", True))
        self.body_margin_mm = float(self.options.get("body_margin_mm", BODY_MARGIN_MM))  # for experiments
        if not 0.0 <= self.body_margin_mm < 200.0:  # also false for NaN
            raise ConfigError(f"segmentation.monai.body_margin_mm must be in [0, 200) mm, got {self.body_margin_mm}")
        # CPU inference with deterministic algorithms, switched on only while segment, probabilities or
        # predict_logits runs (:func:`deterministic_algorithms`): the process's own torch setting is left as it was
        self.deterministic = self.device.type == "cpu"
        self.sw_batch_size = self.options.get("sw_batch_size", 1 if self.device.type == "cpu" else 4)
        if isinstance(self.sw_batch_size, bool) or not isinstance(self.sw_batch_size, int | np.integer) \
                or self.sw_batch_size < 1:
            raise ConfigError(f"segmentation.monai.sw_batch_size must be a whole number >= 1, "
                              f"got {self.sw_batch_size!r}")
        self.sw_overlap = float(self.meta.get("sw_overlap", 0.25))
        log.info("MONAI segmenter %s loaded from %s on %s (weights sha256 %s)", self.model_id, folder, self.device,
                 self.hashes["model.safetensors"][:12])
        warn_unevaluated_shipped(folder, self.model_id)

    @property
    def model_id(self) -> str:
        """``monai-`` plus 16 hex digits of the sha256 over the weights' and model.yaml's own sha256 (the
        manifest's): a changed threshold, grid or window in model.yaml is another model in the provenance, and
        resume re-scores with it (the bundle segmenter's id does the same)."""
        return model_id_of(self.hashes)

    def predict_logits(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> Any:
        """Network output [4, z, y, x] on the model grid for one HU volume (torch tensor, CPU float32).

        The mean of the logits over the views of the test-time augmentation: the scan at each zoom of
        :attr:`scales` (1 and 1 +- ``scale_tta``); at zoom 1 the mean of the scan and its left-right
        mirror image when ``flip_tta`` (mirroring the zoomed views too costs two more passes and measured
        no better, see the model card).
        """
        import torch
        from monai.inferers import SlidingWindowInferer

        from segmentation.network import downsampling_factor, normalize_hu

        msp = np.asarray(self.meta["model_spacing_mm"], float)
        extent = np.asarray(hu.shape) * np.asarray(spacing, float)  # mm
        size = tuple(int(v) for v in np.maximum(1, np.round(extent / msp)))
        cap = np.asarray(self.meta.get("inference_roi_size", self.meta["roi_size"]))
        # windows are multiples of 16 and of the network's downsampling (model.yaml's windows are, see
        # check_model_yaml), at least two of them (a U-Net needs more than one voxel at its bottom)
        mult = int(np.lcm(16, downsampling_factor(self.meta["arch"])))
        with torch.inference_mode(), deterministic_algorithms(self.deterministic):
            x0 = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32))[None, None]
            acc = None
            for f in self.scales:
                # zoom f: the scan seen as if its voxels were f times larger (anatomy f times bigger)
                sz = tuple(int(v) for v in np.maximum(1, np.round(extent * f / msp)))
                x = normalize_hu(resize_to(x0, sz), tuple(self.meta["hu_window"])).to(self.device)
                # one window when the scan fits (no padding beyond the next multiple of `mult`), else sliding;
                # an inferer per view, not a shared one re-sized: scans may run in threads of one process
                # (at least 2 * mult, 32 for the shipped net: a 16-voxel window leaves the 4-stride U-Net one
                # voxel at its bottom, which instance norm refuses; a scan of a few slices or a small field of
                # view gets such a window)
                inferer = SlidingWindowInferer(
                    roi_size=tuple(int(v) for v in np.minimum(
                        np.maximum(np.ceil(np.asarray(sz) / mult) * mult, 2 * mult), cap)),
                    sw_batch_size=self.sw_batch_size, overlap=self.sw_overlap, mode="gaussian")
                y = self._infer(inferer, x)
                if self.flip_tta and f == 1.0:
                    # mirror x (patient left-right): the right and left lung channels trade places
                    yf = torch.flip(self._infer(inferer, torch.flip(x, [-1])), [-1])[:, [0, 2, 1, 3]]
                    y = (y + yf) / 2
                y = resize_to(y.float(), size)
                acc = y if acc is None else acc + y
            return (acc / len(self.scales))[0].float().cpu()

    def probabilities(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, np.ndarray]:
        """The network's probabilities on the input grid, float16 [z, y, x]: ``lung`` (1 - the softmax of the
        background channel, either side) and ``lesion`` (the sigmoid of the lesion channel).

        Before any threshold and clean-up: for diagnostics (how sure the model is where it misses, what a lower
        threshold would add); :meth:`segment` does not keep them (memory)."""
        with deterministic_algorithms(self.deterministic):
            return self._probabilities(hu, spacing)

    def _probabilities(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, np.ndarray]:
        import torch

        hu, spacing = scan_input(hu, spacing)
        box, pad = body_crop(hu, spacing, self.body_margin_mm)
        if _no_body(hu, box, pad):
            return {"lung": np.zeros(hu.shape, np.float16), "lesion": np.zeros(hu.shape, np.float16)}
        x = np.pad(hu[box], pad, constant_values=MARGIN_AIR_HU)
        logits = self.predict_logits(x, spacing)
        lung, lesion = np.zeros(x.shape, np.float16), np.zeros(x.shape, np.float16)

        def put(z0: int, z1: int, v: torch.Tensor) -> None:
            lung[z0:z1] = (1.0 - torch.softmax(v[:3], 0)[0]).numpy()
            lesion[z0:z1] = torch.sigmoid(v[3]).numpy()

        upsample_slabs(logits, x.shape, put)
        out = {"lung": np.zeros(hu.shape, np.float16), "lesion": np.zeros(hu.shape, np.float16)}
        out["lung"][box], out["lesion"][box] = lung[_inner(pad, x.shape)], lesion[_inner(pad, x.shape)]
        return out

    def _infer(self, inferer: Any, x: Any) -> Any:
        import torch

        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                return inferer(x, self.net).float()
        return inferer(x, self.net)

    def segment(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> Segmentation:
        """Segment one HU volume ``[z, y, x]`` (LPS) with voxel size ``spacing`` (z, y, x) in mm.

        NaN voxels are taken as air (outside the field of view); a volume without body (no voxel above
        :data:`BODY_HU`) gets empty masks; a volume that is not 3-D or a spacing that is not three positive numbers
        is a ValueError (:func:`scan_input`). On CPU, torch's deterministic algorithms are on while it runs
        (:func:`deterministic_algorithms`), the process's own setting restored after it."""
        with deterministic_algorithms(self.deterministic):
            return self._segment(hu, spacing)

    def _segment(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> Segmentation:
        import torch

        hu, spacing = scan_input(hu, spacing)
        box, pad = body_crop(hu, spacing, self.body_margin_mm)  # the network sees the body, whatever the field of view around it
        if _no_body(hu, box, pad):  # no voxel above -500 HU: no chest (the network called some of such air lung)
            log.warning("no body in the volume (no voxel above %.0f HU): empty lung and lesion masks", BODY_HU)
            return Segmentation(lungs=np.zeros(hu.shape, np.uint8), lesions=np.zeros(hu.shape, bool),
                                airway=np.zeros(hu.shape, bool), lobes=None, flags=[])
        x = np.pad(hu[box], pad, constant_values=MARGIN_AIR_HU)
        logits = self.predict_logits(x, spacing)
        net_lungs = np.zeros(x.shape, np.uint8)
        net_lesions = np.zeros(x.shape, bool)
        thr = float(np.log(self.lesion_threshold / (1 - self.lesion_threshold)))

        def put(z0: int, z1: int, v: torch.Tensor) -> None:
            net_lungs[z0:z1] = argmax3(v[0], v[1], v[2]).numpy()
            net_lesions[z0:z1] = (v[3] > thr).numpy()

        upsample_slabs(logits, x.shape, put)
        lungs = np.zeros(hu.shape, np.uint8)
        lesions = np.zeros(hu.shape, bool)
        lungs[box], lesions[box] = net_lungs[_inner(pad, x.shape)], net_lesions[_inner(pad, x.shape)]
        out = np.zeros_like(lungs)
        for side in (RIGHT_LUNG, LEFT_LUNG):
            m = lungs == side
            if m.any():
                box = tuple(slice(max(a - 1, 0), b + 2) for a, b in mask_extent(m))
                region = out[box]  # a view: clean-up within the side's bounding box (same result, faster)
                region[ndi.binary_fill_holes(keep_main_components(m[box])) & (region == 0)] = side
        flags: list[str] = []
        # the network has no airway head; the landmark detector needs the trachea (carina level), so the
        # classical region growing supplies it, and airway voxels are not lung (the teacher's definition). Grown
        # once: the bowel-gas step reads air's level from it (it grew it again: 0.4 s of 5-8 s, a performance audit)
        airway = segment_airway(hu, spacing)
        if self.remove_bowel_gas:
            air_hu = float(np.median(hu[airway])) if airway.any() else None  # air_level(hu, spacing)
            out, removed = remove_bowel_gas(out, hu, spacing, air_hu=air_hu)
            for k, ml in removed.items():
                side = "right" if k == RIGHT_LUNG else "left"
                flags.append(f"BOWEL_GAS_REMOVED:{side}")
                log.info("bowel gas taken out of the %s lung mask: %.1f mL", side, ml)
        for k, ml in trim_unaerated_apex(out, hu, spacing).items():  # under 0.05 mL ("0.0 mL"): the debug log only
            log.log(logging.INFO if ml >= 0.05 else logging.DEBUG,
                    "airless tissue above the %s apex taken out of the lung mask: %.1f mL",
                    "right" if k == RIGHT_LUNG else "left", ml)
        if self.trim_apex_soft_tissue:
            for k, ml in trim_apex_soft_tissue(out, hu, spacing).items():
                log.log(logging.INFO if ml >= 0.05 else logging.DEBUG,
                        "airless tissue beside the %s apex taken out of the lung mask: %.1f mL",
                        "right" if k == RIGHT_LUNG else "left", ml)
        if sides_swapped(out):
            flags.append("LUNG_SIDES_SWAPPED")
            log.warning("the right lung mask lies left of the left lung mask: a right/left confusion of the network")
        lesions &= out > 0
        out[airway] = 0
        lesions &= ~airway
        return Segmentation(lungs=out, lesions=lesions, airway=airway, lobes=None, flags=flags)
