"""Image files through SimpleITK, on every system.

SimpleITK (ITK) cannot open a path holding characters outside ASCII on Windows (ITK issue 6739, SimpleITK issues
651 and 795): an output folder under ``C:\\Users\\Jürgen`` failed every scan at its masks. There the masks are written
with nibabel (the same NIfTI geometry), and a file SimpleITK must read is refused with a message saying why.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np


def sitk_can_open(path: str | Path) -> bool:
    """Whether SimpleITK can open ``path`` on this system (everywhere but on Windows with non-ASCII characters)."""
    return sys.platform != "win32" or str(Path(path).absolute()).isascii()


def check_sitk_path(path: str | Path, what: str = "file") -> None:
    """Raise ValueError naming ``path`` when SimpleITK cannot open it here (:func:`sitk_can_open`)."""
    if not sitk_can_open(path):
        raise ValueError(f"{what} {path}: SimpleITK cannot open a path with characters outside ASCII on Windows "
                         "(ITK issue 6739); move or copy it to a folder whose path has none (e.g. C:\\ctscore\\)")


def write_nifti(img: Any, path: str | Path, compress: bool = True) -> None:
    """``sitk.WriteImage(img, path)``; on Windows with a non-ASCII path the same image written with nibabel."""
    import SimpleITK as sitk

    if sitk_can_open(path):
        sitk.WriteImage(img, str(path), useCompression=compress)
    else:
        _write_nifti_nibabel(img, Path(path))


def _write_nifti_nibabel(img: Any, path: Path) -> None:
    """A scalar SimpleITK image as NIfTI-1 through nibabel: voxels in x, y, z order, the affine from SimpleITK's
    LPS origin, spacing and direction turned to NIfTI's RAS, sform and qform both 'scanner' (as ITK writes them)."""
    import nibabel as nib
    import SimpleITK as sitk

    data = np.ascontiguousarray(sitk.GetArrayFromImage(img).transpose(2, 1, 0))
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(img.GetSpacing(), dtype=float)  # column j: axis j's step in mm
    affine[:3, 3] = img.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    out = nib.Nifti1Image(data, affine)
    out.header.set_xyzt_units("mm")
    out.set_sform(affine, code=1)
    out.set_qform(affine, code=1)
    nib.save(out, str(path))


class _ImageBuffer:
    """An image's pixel buffer as numpy sees it, holding the image: the array made from it keeps the image alive
    (``sitk.GetArrayViewFromImage`` alone does not: the view would outlive a dropped image's memory)."""

    def __init__(self, image: Any) -> None:
        import SimpleITK as sitk

        self.image = image
        view = sitk.GetArrayViewFromImage(image)
        self.__array_interface__ = {**view.__array_interface__, "data": (view.__array_interface__["data"][0], True)}


def array_view(image: Any) -> np.ndarray:
    """A read-only ``[z, y, x]`` array over ``image``'s own pixels, without the copy ``sitk.GetArrayFromImage``
    makes (4 bytes per voxel of a float32 CT: 2 GB for a 1024 x 1024 x 500 series), valid as long as the array
    lives. Writing into it raises (inputs are never altered)."""
    return np.asarray(_ImageBuffer(image))
