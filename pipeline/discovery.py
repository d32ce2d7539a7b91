"""Find DICOM files under an input path and group them into series (header reads only).

This is the simple first version: every readable DICOM file is grouped by SeriesInstanceUID, and a
series is eligible when it is CT, axial, not a localizer and has at least ``MIN_SLICES`` slices.
Selection prefers ORIGINAL images, then the most slices. Pixel data are never decoded here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from pipeline.errors import CTScoreError

log = logging.getLogger(__name__)

MIN_SLICES = 10
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
HEADER_TAGS = None  # read the whole header (stop before pixels)


@dataclass
class SeriesCandidate:
    """One series found under the input, with the files that belong to it."""

    series_uid: str
    files: list[Path] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)  # values from the first file
    eligible: bool = True
    reason: str = ""


def iter_files(root: Path) -> Iterator[Path]:
    """All regular files under ``root`` (or ``root`` itself), any depth, sorted for determinism."""
    if root.is_file():
        yield root
        return
    if not root.exists():
        raise CTScoreError("INPUT_NOT_FOUND", "input path does not exist", root)
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def read_header(path: Path) -> pydicom.Dataset | None:
    """The header of a DICOM file without its pixels, or None when the file is not DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, TypeError, KeyError, AttributeError):
        return None


def _is_axial(ds: pydicom.Dataset) -> bool:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return False
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    return abs(normal[2]) > 0.8


def summarize(ds: pydicom.Dataset) -> dict[str, Any]:
    """The header values that selection and outputs need."""
    return {
        "patient_id": str(ds.get("PatientID", "")),
        "study_date": str(ds.get("StudyDate", "")),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "series_description": str(ds.get("SeriesDescription", "")),
        "modality": str(ds.get("Modality", "")),
        "image_type": "\\".join(str(v) for v in (ds.get("ImageType") or [])),
        "manufacturer": str(ds.get("Manufacturer", "")),
        "kernel": str(ds.get("ConvolutionKernel", "")),
        "slice_thickness": float(ds.get("SliceThickness", 0) or 0),
    }


def discover(root: str | Path) -> list[SeriesCandidate]:
    """Group the DICOM files under ``root`` into series and mark which ones are eligible."""
    root = Path(root)
    series: dict[str, SeriesCandidate] = {}
    for path in iter_files(root):
        ds = read_header(path)
        if ds is None or "SeriesInstanceUID" not in ds:
            continue
        uid = str(ds.SeriesInstanceUID)
        if uid not in series:
            series[uid] = SeriesCandidate(series_uid=uid, header=summarize(ds))
            cand = series[uid]
            image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
            if str(ds.get("Modality", "")) != "CT":
                cand.eligible, cand.reason = False, "NOT_CT"
            elif "LOCALIZER" in image_type:
                cand.eligible, cand.reason = False, "LOCALIZER"
            elif not _is_axial(ds):
                cand.eligible, cand.reason = False, "NOT_AXIAL"
        cand = series[uid]
        if "PixelData" in ds or True:
            cand.files.append(path)
    for cand in series.values():
        if cand.eligible and len(cand.files) < MIN_SLICES:
            cand.eligible, cand.reason = False, f"TOO_FEW_SLICES ({len(cand.files)})"
    return list(series.values())


def select_series(candidates: list[SeriesCandidate]) -> list[SeriesCandidate]:
    """Eligible series, best first (original images first, then most slices)."""
    eligible = [c for c in candidates if c.eligible]
    return sorted(
        eligible,
        key=lambda c: ("ORIGINAL" not in c.header.get("image_type", "").upper(), -len(c.files)),
    )
