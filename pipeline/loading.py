"""Load one CT series into a :class:`~pipeline.volume.CTVolume` in Hounsfield units.

Slices are sorted by their position along the slice normal (never by InstanceNumber or file name),
the rescale slope/intercept is applied per slice in float, padding values are recorded as outside
the field of view, and the geometry (origin, spacing, direction) comes from the headers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from pipeline.discovery import summarize
from pipeline.errors import SeriesError
from pipeline.volume import CTVolume

log = logging.getLogger(__name__)

AIR_HU = -1000.0


def _geometry(ds: pydicom.Dataset, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], float)
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], float)
        spacing = np.asarray([float(v) for v in ds.PixelSpacing], float)
    except (AttributeError, ValueError, TypeError) as exc:
        raise SeriesError("MISSING_GEOMETRY", f"missing or bad position/orientation/spacing: {exc}", path) from exc
    if iop.size != 6 or ipp.size != 3 or spacing.size != 2:
        raise SeriesError("MISSING_GEOMETRY", "malformed ImageOrientation/Position/PixelSpacing", path)
    return iop, ipp, spacing


def load_series(files: Sequence[str | Path]) -> CTVolume:
    """Read, sort and convert the files of one series to a float32 HU image."""
    files = [Path(f) for f in files]
    if not files:
        raise SeriesError("EMPTY_SERIES", "no files given")
    slices = []
    for f in files:
        try:
            ds = pydicom.dcmread(f)
        except Exception as exc:  # pydicom raises many types for broken files
            raise SeriesError("CORRUPT_FILE", f"cannot read DICOM file: {exc}", f) from exc
        slices.append((f, ds))
    iop, _, spacing = _geometry(slices[0][1], slices[0][0])
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    positions = []
    for f, ds in slices:
        iop_i, ipp_i, _ = _geometry(ds, f)
        if not np.allclose(iop_i, iop, atol=1e-3):
            raise SeriesError("INCONSISTENT_GEOMETRY", "slices of the series have different orientations", f)
        positions.append(float(np.dot(ipp_i, normal)))
    order = np.argsort(positions, kind="stable")
    slices = [slices[i] for i in order]
    positions = [positions[i] for i in order]
    flags: list[str] = []
    if len(positions) > 1:
        steps = np.diff(positions)
        if np.any(steps < 1e-3):
            raise SeriesError("DUPLICATE_POSITION", "two slices share a position", slices[0][0])
        dz = float(np.median(steps))
        if np.max(np.abs(steps - dz)) > 0.1 * dz:
            flags.append("NON_UNIFORM_SPACING")
    else:
        dz = float(slices[0][1].get("SliceThickness", 1.0) or 1.0)

    rows, cols = int(slices[0][1].Rows), int(slices[0][1].Columns)
    hu = np.empty((len(slices), rows, cols), np.float32)
    pad = np.zeros((len(slices), rows, cols), np.uint8)
    for k, (f, ds) in enumerate(slices):
        try:
            raw = ds.pixel_array
        except Exception as exc:
            raise SeriesError("NO_DECODER", f"cannot decode pixel data ({ds.file_meta.TransferSyntaxUID}): {exc}", f) from exc
        if raw.shape != (rows, cols):
            raise SeriesError("INCONSISTENT_GEOMETRY", f"slice size {raw.shape} differs from {(rows, cols)}", f)
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        padv = ds.get("PixelPaddingValue")
        padmask = raw == padv if padv is not None else np.zeros(raw.shape, bool)
        values = raw.astype(np.float32) * slope + intercept
        padmask |= values < -1500  # -2000 / -3024 / -32768 style padding outside the FOV
        if str(ds.get("PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1":
            flags.append("MONOCHROME1_INVERTED") if "MONOCHROME1_INVERTED" not in flags else None
        values[padmask] = AIR_HU
        hu[k] = values
        pad[k] = padmask
    img = sitk.GetImageFromArray(hu)
    origin = [float(v) for v in slices[0][1].ImagePositionPatient]
    img.SetOrigin(origin)
    # PixelSpacing is (row spacing, column spacing) = (y, x).
    img.SetSpacing((float(spacing[1]), float(spacing[0]), dz))
    img.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    padimg = sitk.GetImageFromArray(pad)
    padimg.CopyInformation(img)
    meta = summarize(slices[0][1])
    meta["n_slices"] = len(slices)
    meta["rows"], meta["columns"] = rows, cols
    return CTVolume(image=img, meta=meta, files=[f for f, _ in slices], flags=flags, padding_mask=padimg)
