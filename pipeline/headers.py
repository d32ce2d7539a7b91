"""Safe reading of the header values ingestion needs, for classic and enhanced (multi-frame) CT.

Header values in the wild are missing, empty, non-numeric, NaN or of the wrong multiplicity; every
helper here either returns a clean value or raises :class:`~pipeline.errors.SeriesError` with a named
code, never another exception.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from pipeline.errors import SeriesError

log = logging.getLogger(__name__)

ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
#: Upper limit on Rows / Columns / frames that a header may declare before we call it malformed.
MAX_DIMENSION = 65535
#: ImagePositionPatient values farther than this from the origin (mm, i.e. 1 km) are malformed, not a position.
MAX_POSITION_MM = 1e6


@dataclass
class FrameInfo:
    """Geometry and rescale of one slice (a classic file, or one frame of an enhanced file)."""

    path: Path
    frame: int  # frame index inside the file (0 for classic single-frame files)
    iop: np.ndarray  # 6 direction cosines
    ipp: np.ndarray  # 3 position values (mm)
    spacing: np.ndarray  # PixelSpacing (row spacing, column spacing) in mm
    thickness: float | None
    slope: float
    intercept: float
    frame_of_reference: str


def get(ds: pydicom.Dataset, keyword: str, default: Any = None) -> Any:
    """``ds.get`` that never raises on a malformed element (returns ``default`` instead)."""
    try:
        value = ds.get(keyword, default)
    except Exception:  # noqa: BLE001 - malformed values raise many types in pydicom
        return default
    return default if value is None else value


#: The longest header text kept (a crafted 100 kB SeriesDescription made inventory.csv cells longer than a
#: spreadsheet holds); longer text is cut and ends with an ellipsis.
MAX_TEXT = 1024
#: Control characters (C0, DEL, C1) and bidirectional overrides: a header's ESC sequences reached the
#: terminal through `ctscore scan`, and an override reverses what a table shows ("Siemens\u202egpj.exe").
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean_text(value: str) -> str:
    """Header text as tables and the console show it: control characters and bidi overrides removed (a tab or a
    line break a space), surrounding spaces stripped, at most :data:`MAX_TEXT` characters."""
    value = _UNPRINTABLE.sub(lambda m: " " if m.group() in "\t\n\r" else "", value).strip()
    return value if len(value) <= MAX_TEXT else value[:MAX_TEXT - 1] + "\u2026"


#: UTF-8 multi-byte sequences as Latin-1 shows them ("Ã¶" for "ö"): text written as UTF-8 under a
#: SpecificCharacterSet of ISO_IR 100 (or none), a common PACS and anonymiser mismatch.
_UTF8_AS_LATIN1 = re.compile("[\xc2-\xf4][\x80-\xbf]")
#: Character sets under which such text is read again as UTF-8 (Latin-1, or none declared).
_LATIN1_SETS = ("", "ISO_IR 100", "ISO_IR 6", "ISO 2022 IR 100", "ISO 2022 IR 6")


def _plausible(text: str) -> bool:
    """Whether UTF-8 re-read text holds only characters of Latin, Greek, Cyrillic, Hebrew, Arabic or of the 3-byte
    planes (CJK, ...): genuine Latin-1 pairs ("ß" + no-break space) decode to rare scripts (N'Ko) instead."""
    return all(ord(ch) < 0x80 or 0xA0 <= ord(ch) < 0x0700 or ord(ch) >= 0x0800 for ch in text)


def _as_text(v: Any, latin1: bool = False) -> str:
    """``v`` as text; ``latin1``: the value was decoded as Latin-1, so UTF-8 bytes in it are read as UTF-8."""
    if isinstance(v, bytes):  # a value pydicom left undecoded: its characters, not the "b'...'" of its repr
        return v.decode("utf-8", errors="replace")
    text = str(v)
    if latin1 and _UTF8_AS_LATIN1.search(text):  # read as viewers do: as the UTF-8 it is
        try:
            fixed = text.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return text
        return fixed if _plausible(fixed) else text
    return text


def _latin1(ds: pydicom.Dataset) -> bool:
    """Whether the dataset's text was decoded as Latin-1 (SpecificCharacterSet ISO_IR 100, or none)."""
    value = get(ds, "SpecificCharacterSet", "")
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else ""
    return str(value).strip().upper() in _LATIN1_SETS


class _RepeatedMessages(logging.Filter):
    """Lets each distinct message of pydicom's logger through once and counts the rest (an unknown
    SpecificCharacterSet was logged several times for every file: 746 identical lines for 124 files)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call: let logging report it as it would
            return True
        if message in self.seen:
            self.dropped += 1
            return False
        if len(self.seen) < 10000:
            self.seen.add(message)
        return True


@contextlib.contextmanager
def repeated_pydicom_messages_once() -> Iterator[None]:
    """While reading the headers of an inventory, pydicom's repeated messages are shown once (then counted in one
    line); outside it, pydicom's logging is untouched."""
    logger = logging.getLogger("pydicom")
    once = _RepeatedMessages()
    logger.addFilter(once)
    try:
        yield
    finally:
        logger.removeFilter(once)
        if once.dropped:
            log.info("%d repeated pydicom message(s) not shown again", once.dropped)


def text(ds: pydicom.Dataset, keyword: str) -> str:
    """A header value as clean text (:func:`clean_text`; '' when missing or malformed); multi-values joined by
    '\\'."""
    value = get(ds, keyword, "")
    try:
        # (not PatientID: its pseudonym must stay that of earlier runs, whatever its bytes)
        latin1 = keyword != "PatientID" and _latin1(ds)
        if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
            return clean_text("\\".join(_as_text(v, latin1).strip() for v in value))
        return clean_text(_as_text(value, latin1))
    except Exception:  # noqa: BLE001
        return ""


def number(ds: pydicom.Dataset, keyword: str, default: float | None = None) -> float | None:
    """A finite float header value, or ``default``."""
    value = get(ds, keyword, None)
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return default
    return out if np.isfinite(out) else default


def integer(ds: pydicom.Dataset, keyword: str, default: int | None = None) -> int | None:
    """An integer header value, or ``default``."""
    value = number(ds, keyword, None)
    if value is None or value != int(value):
        return default
    return int(value)


def floats(ds: pydicom.Dataset, keyword: str, n: int) -> np.ndarray | None:
    """Exactly ``n`` finite floats from a multi-valued element, or None."""
    value = get(ds, keyword, None)
    if value is None:
        return None
    try:
        arr = np.asarray([float(v) for v in value], float)
    except (TypeError, ValueError, OverflowError):
        return None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        return None
    return arr


def time_of_day(ds: pydicom.Dataset) -> str:
    """When the series was made, as ``HH:MM:SS``: SeriesTime, else AcquisitionTime, ContentTime, StudyTime (DICOM
    ``HHMMSS.FFFFFF``, a shorter ``HHMM``, or the old ``HH:MM:SS``); '' when none is a valid time. It orders two
    scans of one patient on one day (the statistics' earlier / later scan)."""
    for keyword in ("SeriesTime", "AcquisitionTime", "ContentTime", "StudyTime"):
        m = re.fullmatch(r"(\d{2}):?(\d{2})?:?(\d{2})?(?:\.\d*)?", text(ds, keyword))
        if m:
            hh, mm, ss = (int(g) if g else 0 for g in m.groups())
            if hh < 24 and mm < 60 and ss < 61:
                return f"{hh:02d}:{mm:02d}:{min(ss, 59):02d}"
    return ""


def dicom_date(ds: pydicom.Dataset, keyword: str) -> tuple[str, str]:
    """A DICOM date as ``YYYYMMDD`` and how it was read: ``("20200405", "")`` for a DA value, ``("20200405",
    "normalised")`` for the old ACR-NEMA ``YYYY.MM.DD`` (which PS3.5 asks readers to accept) or ``YYYY-MM-DD``,
    ``("", "unreadable")`` for anything that is not a calendar date between 1900 and 2100 (``2020.13.45``, ``0``,
    ``unknown``), ``("", "")`` when missing. Written as found, ``2020.04.05`` was refused by ``ctscore stats`` and read
    as NA by R's ``as.Date(x, "%Y%m%d")``."""
    raw = text(ds, keyword).strip()
    if not raw:
        return "", ""
    m = re.fullmatch(r"(\d{4})([.\-]?)(\d{2})\2(\d{2})", raw)
    if m:
        y, mo, d = int(m.group(1)), int(m.group(3)), int(m.group(4))
        try:
            datetime.date(y, mo, d)
        except ValueError:
            return "", "unreadable"
        if 1900 <= y <= 2100:
            return f"{y:04d}{mo:02d}{d:02d}", "normalised" if m.group(2) else ""
    return "", "unreadable"


def image_type(ds: pydicom.Dataset) -> list[str]:
    """ImageType values, upper-case and stripped ('DERIVED ' and 'DERIVED' are the same)."""
    value = get(ds, "ImageType", [])
    if isinstance(value, str):
        value = value.split("\\")
    try:
        return [str(v).strip().upper() for v in value]
    except TypeError:
        return []


def kernel(ds: pydicom.Dataset) -> str:
    """ConvolutionKernel; for enhanced CT, where it is not at the top level, that of the first frame's
    CT Reconstruction functional group."""
    value = text(ds, "ConvolutionKernel")
    if value or not is_multiframe(ds):
        return value
    recon = _functional(ds, 0, "CTReconstructionSequence")
    return text(recon, "ConvolutionKernel") if recon is not None else ""


def contrast_agent(ds: pydicom.Dataset) -> str:
    """ContrastBolusAgent; for enhanced CT, whose Enhanced Contrast/Bolus module names the agents in
    ContrastBolusAgentSequence instead, the meanings of the agents there, joined by '\\', less those the first
    frame's Contrast/Bolus Usage functional group says were not administered (ContrastBolusAgentAdministered NO
    for their ContrastBolusAgentNumber)."""
    value = text(ds, "ContrastBolusAgent")
    if value:
        return value
    agents = []
    try:
        not_given = {integer(u, "ContrastBolusAgentNumber") for u in _functional_items(ds, 0, "ContrastBolusUsageSequence")
                     if text(u, "ContrastBolusAgentAdministered").upper() == "NO"}
        for item in get(ds, "ContrastBolusAgentSequence", None) or []:
            if integer(item, "ContrastBolusAgentNumber") in not_given - {None}:
                continue
            name = text(item, "CodeMeaning") or text(item, "CodeValue")
            if name:
                agents.append(name)
    except Exception:  # noqa: BLE001 - a malformed sequence names no agent
        return ""
    return "\\".join(agents)


def _functional_items(ds: pydicom.Dataset, frame: int, macro: str) -> list:
    """All items of functional group ``macro`` for ``frame`` (per-frame first, then shared; [] when absent)."""
    per_frame = get(ds, "PerFrameFunctionalGroupsSequence", None)
    shared = get(ds, "SharedFunctionalGroupsSequence", None)
    for group, index in ((per_frame, frame), (shared, 0)):
        try:
            if group is not None and index < len(group):
                items = get(group[index], macro, None)
                if items is not None and len(items):
                    return list(items)
        except Exception:  # noqa: BLE001 - a malformed group holds no items
            continue
    return []


def rescale_type(ds: pydicom.Dataset) -> str:
    """RescaleType (HU, US, or what a map's values are, e.g. a dual-energy Z-effective or iodine map); for
    enhanced CT that of the first frame's Pixel Value Transformation functional group; '' when absent."""
    value = text(ds, "RescaleType")
    if value or not is_multiframe(ds):
        return value.upper()
    item = _functional(ds, 0, "PixelValueTransformationSequence")
    return text(item, "RescaleType").upper() if item is not None else ""


def _first_item(ds: pydicom.Dataset, keyword: str) -> pydicom.Dataset | None:
    seq = get(ds, keyword, None)
    try:
        return seq[0] if seq is not None and len(seq) else None
    except Exception:  # noqa: BLE001
        return None


def _functional(ds: pydicom.Dataset, frame: int, macro: str) -> pydicom.Dataset | None:
    """The item of functional group ``macro`` for ``frame`` (per-frame first, then shared)."""
    per_frame = get(ds, "PerFrameFunctionalGroupsSequence", None)
    try:
        if per_frame is not None and frame < len(per_frame):
            item = _first_item(per_frame[frame], macro)
            if item is not None:
                return item
    except Exception:  # noqa: BLE001
        pass
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    return _first_item(shared, macro) if shared is not None else None


def n_frames(ds: pydicom.Dataset) -> int:
    """NumberOfFrames (1 when absent); raises BAD_HEADER_VALUE when malformed."""
    if "NumberOfFrames" not in ds:
        return 1
    value = integer(ds, "NumberOfFrames", None)
    if value is None or not 1 <= value <= MAX_DIMENSION:
        raise SeriesError("BAD_HEADER_VALUE", f"NumberOfFrames is {text(ds, 'NumberOfFrames')!r}",
                          getattr(ds, "filename", None))
    return value


def is_multiframe(ds: pydicom.Dataset) -> bool:
    """True for enhanced / multi-frame images (per-frame functional groups)."""
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def frames_of(ds: pydicom.Dataset, path: Path) -> list[FrameInfo]:
    """Geometry and rescale of every frame; raises MISSING_GEOMETRY when a value is absent or bad."""
    if not is_multiframe(ds):
        return [_classic_frame(ds, path)]
    out = []
    for k in range(n_frames(ds)):
        orient = _functional(ds, k, "PlaneOrientationSequence")
        position = _functional(ds, k, "PlanePositionSequence")
        measures = _functional(ds, k, "PixelMeasuresSequence")
        transform = _functional(ds, k, "PixelValueTransformationSequence")
        iop = floats(orient, "ImageOrientationPatient", 6) if orient is not None else None
        ipp = floats(position, "ImagePositionPatient", 3) if position is not None else None
        spacing = floats(measures, "PixelSpacing", 2) if measures is not None else None
        if iop is None:
            iop = floats(ds, "ImageOrientationPatient", 6)
        if spacing is None:
            spacing = floats(ds, "PixelSpacing", 2)
        _check_geometry(iop, ipp, spacing, path, f"frame {k + 1}")
        thickness = number(measures, "SliceThickness") if measures is not None else None
        src = transform if transform is not None else ds
        # RescaleSlope 0 (or negative) is kept: the loader refuses it (HU_OUT_OF_RANGE), never assumes 1
        out.append(FrameInfo(path, k, iop, ipp, spacing, thickness, number(src, "RescaleSlope", 1.0),
                             number(src, "RescaleIntercept", 0.0), text(ds, "FrameOfReferenceUID")))
    return out


def _classic_frame(ds: pydicom.Dataset, path: Path) -> FrameInfo:
    iop = floats(ds, "ImageOrientationPatient", 6)
    ipp = floats(ds, "ImagePositionPatient", 3)
    spacing = floats(ds, "PixelSpacing", 2)
    _check_geometry(iop, ipp, spacing, path, "")
    # RescaleSlope 0 (or negative) is kept: the loader refuses it (HU_OUT_OF_RANGE), never assumes 1
    return FrameInfo(path, 0, iop, ipp, spacing, number(ds, "SliceThickness"), number(ds, "RescaleSlope", 1.0),
                     number(ds, "RescaleIntercept", 0.0), text(ds, "FrameOfReferenceUID"))


def _check_geometry(iop, ipp, spacing, path: Path, where: str) -> None:
    from pipeline.geometry import valid_orientation

    missing = [name for name, v in (("ImageOrientationPatient", iop), ("ImagePositionPatient", ipp),
                                    ("PixelSpacing", spacing)) if v is None]
    where = f" ({where})" if where else ""
    if missing:
        raise SeriesError("MISSING_GEOMETRY", f"{', '.join(missing)} missing or not numeric{where}", path)
    if not valid_orientation(iop):
        raise SeriesError("MISSING_GEOMETRY", f"ImageOrientationPatient {list(iop)} is not two orthogonal unit "
                          f"vectors{where}", path)
    if np.any(spacing <= 0) or np.any(spacing > 1e3):
        raise SeriesError("MISSING_GEOMETRY", f"PixelSpacing {list(spacing)} is not a plausible size{where}", path)
    if np.any(np.abs(ipp) > MAX_POSITION_MM):
        # finite but huge (1e308): positions along the normal, their differences and the stack extent overflow
        raise SeriesError("MISSING_GEOMETRY", f"ImagePositionPatient {[float(v) for v in ipp]} is not a plausible "
                          f"position (more than {MAX_POSITION_MM:g} mm from the origin){where}", path)
