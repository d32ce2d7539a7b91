"""Anatomy mixing: new training anatomies made from the cached backgrounds by registration.

The pleural misses of the model card come from too few anatomies (the model fits the lung shapes it was trained
on and does not carry them to a new chest). Random smooth deformations (``deform_prob``) add shapes, but shapes
no chest has. Registration-based augmentation (Zhao et al., "Data augmentation using learned transformations for
one-shot medical image segmentation", CVPR 2019) adds plausible ones: each background A is registered to each
other background B, and A's image and lung labels are warped part of the way (``alpha``) or all the way towards
B's lung shape. The result has A's tissue and texture in a shape between A's and B's, and its labels are A's labels
warped with the same transform, so image and labels agree whatever the registration's accuracy.

Registration (SimpleITK): on a feature image made from the lung labels and the body (Gaussian-smoothed lung
mask + half the smoothed body mask), so that lung shape drives it and scanner contrast does not; lung centroids
aligned first, then affine, then a coarse B-spline (control points ~every 6 cm), mean squares; about 5 s per pair
on the 2-core machine. The metric sampling has a fixed seed; SimpleITK's multi-threaded sums can still differ in
the last digits between machines, which does not matter for augmentation.

:func:`prepare_mixes` writes ``mix_<A>__<B>_a<alpha*100>.npz`` beside the cached backgrounds, in the cache's
format (``image`` int16 HU, ``lungs`` uint8 1 right / 2 left, ``spacing``), and skips files that exist and are
newer than both their backgrounds.
A training config asks for them with ``anatomy_mix: {alphas: [0.5, 1.0]}`` (see ``ctscore train``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MIX_PREFIX = "mix_"


def _image(arr: np.ndarray, spacing_zyx: Sequence[float], centre_zyx: np.ndarray | None = None) -> Any:
    """A SimpleITK image of ``arr`` (z, y, x) with the given spacing, its origin set so that ``centre_zyx``
    (voxel coordinates) sits at physical 0."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(s) for s in reversed(list(spacing_zyx))])
    if centre_zyx is not None:
        img.SetOrigin([-float(c) * float(s) for c, s in zip(reversed(list(centre_zyx)), reversed(list(spacing_zyx)))])
    return img


def _feature(case: dict[str, np.ndarray], sigma_mm: float = 4.0) -> np.ndarray:
    """Smoothed lungs + half the smoothed body: what the registration aligns."""
    from scipy import ndimage as ndi

    sp = np.asarray(case["spacing"], float)
    lungs = (case["lungs"] > 0).astype(np.float32)
    body = (case["image"] > -500).astype(np.float32)
    return (ndi.gaussian_filter(lungs, sigma_mm / sp) + 0.5 * ndi.gaussian_filter(body, sigma_mm / sp)).astype(
        np.float32)


def _lung_centre(case: dict[str, np.ndarray]) -> np.ndarray:
    return np.array(np.nonzero(case["lungs"] > 0), float).mean(axis=1)


def register(fixed: dict[str, np.ndarray], moving: dict[str, np.ndarray], mesh_mm: float = 60.0,
             iterations: int = 60, seed: int = 20240) -> Any:
    """Transform (fixed physical -> moving physical; both with their lung centroid at 0) that brings the moving
    case's lungs onto the fixed case's: affine, then a B-spline with control points about every ``mesh_mm``."""
    import SimpleITK as sitk

    f = _image(_feature(fixed), fixed["spacing"], _lung_centre(fixed))
    m = _image(_feature(moving), moving["spacing"], _lung_centre(moving))

    def method() -> Any:
        r = sitk.ImageRegistrationMethod()
        r.SetMetricAsMeanSquares()
        r.SetMetricSamplingStrategy(r.RANDOM)
        r.SetMetricSamplingPercentage(0.1, seed)
        r.SetInterpolator(sitk.sitkLinear)
        r.SetShrinkFactorsPerLevel([4, 2])
        r.SetSmoothingSigmasPerLevel([2.0, 1.0])
        return r

    affine = sitk.AffineTransform(3)  # identity: the lung centroids already coincide
    r = method()
    r.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=iterations,
                                               gradientMagnitudeTolerance=1e-8)
    r.SetOptimizerScalesFromPhysicalShift()
    r.SetInitialTransform(affine, inPlace=True)
    r.Execute(f, m)
    size = [max(int(round(sz * sp / mesh_mm)), 1) for sz, sp in zip(f.GetSize(), f.GetSpacing())]
    bspline = sitk.BSplineTransformInitializer(f, size, order=3)
    r = method()
    r.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations,
                           maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=4 * iterations)
    r.SetMovingInitialTransform(affine)
    r.SetInitialTransform(bspline, inPlace=True)
    r.Execute(f, m)
    out = sitk.CompositeTransform(3)
    out.AddTransform(affine)
    out.AddTransform(bspline)
    return out


def warp(moving: dict[str, np.ndarray], fixed: dict[str, np.ndarray], transform: Any, alpha: float
         ) -> dict[str, np.ndarray]:
    """The moving case on the fixed case's grid, moved ``alpha`` of the way along ``transform`` (0: only the lung
    centroids aligned, 1: the moving lungs on the fixed lungs). Image linear (outside: -1024 HU), labels nearest."""
    import SimpleITK as sitk

    f = _image(np.zeros(fixed["lungs"].shape, np.uint8), fixed["spacing"], _lung_centre(fixed))
    disp = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, f.GetSize(), f.GetOrigin(),
                                             f.GetSpacing(), f.GetDirection())
    field = sitk.GetArrayFromImage(disp) * float(alpha)
    dimg = sitk.GetImageFromArray(field, isVector=True)
    dimg.CopyInformation(f)
    tx = sitk.DisplacementFieldTransform(dimg)
    centre = _lung_centre(moving)
    img = _image(moving["image"].astype(np.float32), moving["spacing"], centre)
    lab = _image(moving["lungs"].astype(np.uint8), moving["spacing"], centre)
    hu = sitk.GetArrayFromImage(sitk.Resample(img, f, tx, sitk.sitkLinear, -1024.0, sitk.sitkFloat32))
    lungs = sitk.GetArrayFromImage(sitk.Resample(lab, f, tx, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    return {"image": np.round(np.clip(hu, -1024, 3071)).astype(np.int16), "lungs": lungs.astype(np.uint8),
            "spacing": np.asarray(fixed["spacing"], np.float32)}


def lung_dice(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Dice of the right (1) and left (2) lung labels of two label maps on one grid (how far a mix moved)."""
    out = []
    for k in (1, 2):
        x, y = a == k, b == k
        n = int(x.sum() + y.sum())
        out.append(2.0 * float((x & y).sum()) / n if n else float("nan"))
    return out[0], out[1]


def mix_name(moving: str, fixed: str, alpha: float) -> str:
    return f"{MIX_PREFIX}{moving}__{fixed}_a{int(round(alpha * 100)):03d}"


def prepare_mixes(cache_files: Sequence[str | Path], alphas: Sequence[float] = (0.5, 1.0),
                  out_dir: str | Path | None = None) -> list[Path]:
    """Every ordered pair (A, B) of the cached backgrounds (mixes and cases with their own lesion masks left out),
    A warped towards B by each alpha: one npz each, next to the cache (or in ``out_dir``); existing files are
    kept unless one of their two backgrounds is newer. Returns the mix files in a fixed order. ValueError for an
    alpha outside (0, 1] or two alphas with one file name, a background without lung voxels, or fewer than two
    backgrounds to mix."""
    srcs = [Path(p) for p in cache_files if not Path(p).stem.startswith(MIX_PREFIX)]
    named: dict[str, float] = {}
    for a in alphas:
        if not 0.0 < float(a) <= 1.0:
            raise ValueError(f"anatomy_mix: alphas must be in (0, 1], got {a}")
        # the file name keeps the alpha in hundredths: two alphas with one name would write one file twice
        suffix = mix_name("", "", float(a)).rsplit("_", 1)[1]
        if named.setdefault(suffix, float(a)) != float(a):
            raise ValueError(f"anatomy_mix: alphas {named[suffix]} and {a} both give mixes named ..._{suffix} "
                             f"(alphas are named in hundredths): use alphas at least 0.01 apart")
    if len(srcs) < 2:
        raise ValueError(f"anatomy_mix needs at least two backgrounds, got {[p.stem for p in srcs]}")
    cases: dict[str, dict[str, np.ndarray]] = {}
    paths: dict[str, Path] = {}
    drawn: list[str] = []
    for p in srcs:
        with np.load(p) as z:
            if "lesions" in z.files:
                log.info("anatomy_mix: %s has its own lesion mask; not mixed", p.stem)
                drawn.append(p.stem)
                continue
            cases[p.stem] = {k: z[k] for k in ("image", "lungs", "spacing")}
            paths[p.stem] = p
        if not (cases[p.stem]["lungs"] > 0).any():  # its lung centre (the registration's origin) would be NaN
            raise ValueError(f"anatomy_mix: {p} has no lung voxel: it cannot be registered (a mix of it would have "
                             f"no lungs); check its lung labels or leave it out of the backgrounds")
    if len(cases) < 2:
        raise ValueError(f"anatomy_mix needs at least two backgrounds without their own lesion masks, got "
                         f"{list(cases)}" + (f" ({', '.join(drawn)}: lesion masks, not mixed)" if drawn else ""))
    out: list[Path] = []
    names = list(cases)
    for a_name in names:
        for b_name in names:
            if a_name == b_name:
                continue
            dests = {a: Path(out_dir or srcs[0].parent) / f"{mix_name(a_name, b_name, a)}.npz" for a in alphas}
            out.extend(dests.values())
            # a mix older than either of its backgrounds (one re-cached since) is made again
            newest = max(paths[a_name].stat().st_mtime_ns, paths[b_name].stat().st_mtime_ns)
            todo = {a: d for a, d in dests.items() if not d.exists() or d.stat().st_mtime_ns < newest}
            if not todo:
                continue
            t = time.perf_counter()
            tx = register(cases[b_name], cases[a_name])
            for a, dest in todo.items():
                mixed = warp(cases[a_name], cases[b_name], tx, a)
                tmp = dest.with_name(dest.stem + ".partial.npz")
                np.savez_compressed(tmp, **mixed)
                tmp.replace(dest)
                log.info("anatomy_mix: %s -> %s, alpha %.2f: lung Dice to %s's lungs right %.3f left %.3f",
                         a_name, b_name, a, b_name, *lung_dice(mixed["lungs"], cases[b_name]["lungs"]))
            log.info("anatomy_mix: %s -> %s in %.1f s", a_name, b_name, time.perf_counter() - t)
    return out
