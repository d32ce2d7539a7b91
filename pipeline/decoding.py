"""Pixel decoding with permissively licensed decoders, and what to install when none can.

Order: pydicom's own decoders (native, RLE, deflate; then its plugins: python-gdcm,
pylibjpeg-openjpeg, pyjpegls, Pillow), then python-gdcm's ``ImageReader`` directly, which also reads
12-bit JPEG Extended, progressive and spectral-selection JPEG that pydicom's gdcm plugin declines.
pylibjpeg-libjpeg (GPL-3.0) is never required.

Decoded values are the stored values (no rescale); the loader applies rescale per slice.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom

from pipeline.errors import SeriesError

log = logging.getLogger(__name__)

#: Transfer syntaxes whose compression loses information.
LOSSY_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.53": "JPEG Spectral Selection",
    "1.2.840.10008.1.2.4.55": "JPEG Full Progression",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.4.203": "HTJ2K",
    "1.2.840.10008.1.2.4.100": "MPEG2",
    "1.2.840.10008.1.2.4.102": "MPEG-4",
}

#: What to install for each family of compressed transfer syntaxes (permissive licences first).
DECODER_HINTS = {
    "1.2.840.10008.1.2.4.5": "python-gdcm (BSD) -- pip install python-gdcm",
    "1.2.840.10008.1.2.4.57": "python-gdcm (BSD) -- pip install python-gdcm",
    "1.2.840.10008.1.2.4.70": "python-gdcm (BSD) -- pip install python-gdcm",
    "1.2.840.10008.1.2.4.8": "python-gdcm (BSD) or pyjpegls (MIT) -- pip install python-gdcm",
    "1.2.840.10008.1.2.4.9": "pylibjpeg-openjpeg (MIT) with pylibjpeg, or python-gdcm -- pip install "
                             "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.20": "pylibjpeg-openjpeg >= 2 (MIT) with pylibjpeg -- pip install pylibjpeg "
                              "pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pydicom's built-in RLE decoder (pip install --upgrade pydicom)",
}

#: Transfer syntaxes (prefixes) that python-gdcm's ImageReader decodes in every variant (all JPEG
#: processes, JPEG-LS, JPEG 2000, RLE): when it is installed and fails on one, the data are damaged.
GDCM_COMPLETE = ("1.2.840.10008.1.2.4.5", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.8",
                 "1.2.840.10008.1.2.4.9", "1.2.840.10008.1.2.5")


def decoder_hint(transfer_syntax: str) -> str:
    """The package to install for ``transfer_syntax`` (longest matching prefix)."""
    for prefix in sorted(DECODER_HINTS, key=len, reverse=True):
        if transfer_syntax.startswith(prefix):
            return DECODER_HINTS[prefix]
    return "no known permissive decoder; convert the series to an uncompressed transfer syntax (e.g. gdcmconv --raw)"


def transfer_syntax_of(ds: pydicom.Dataset) -> str:
    """The TransferSyntaxUID of a dataset read from a file ('' when unknown)."""
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def is_lossy(ds: pydicom.Dataset) -> bool:
    """True when the transfer syntax is lossy or the header says the image was lossy-compressed."""
    if transfer_syntax_of(ds) in LOSSY_TRANSFER_SYNTAXES:
        return True
    return str(ds.get("LossyImageCompression", "")).strip() == "01"


def _ts_name(tsyntax: str) -> str:
    try:
        return str(pydicom.uid.UID(tsyntax).name)
    except Exception:  # noqa: BLE001
        return "unknown"


def _is_compressed(tsyntax: str) -> bool | None:
    """True/False for a known transfer syntax, None when the UID is not a transfer syntax."""
    try:
        uid = pydicom.uid.UID(tsyntax)
        return bool(uid.is_compressed) if uid.is_transfer_syntax else None
    except Exception:  # noqa: BLE001
        return None


def _has_builtin_decoder(tsyntax: str) -> bool:
    """True when pydicom's own decoder (no plugin to install, e.g. RLE Lossless) reads ``tsyntax``."""
    try:
        from pydicom.pixels import get_decoder

        return "pydicom" in get_decoder(tsyntax).available_plugins
    except Exception:  # noqa: BLE001 - an unknown or unsupported syntax
        return False


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line; of pydicom's "raised by all available plugins:" list, only
    the lines "plugin: what went wrong"."""
    lines = [part.strip() for part in str(exc).splitlines() if part.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        lines = lines[1:]
    return "; ".join(lines)[:300]


def _gdcm_decode(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """Decode with python-gdcm's ImageReader (stored values), shaped (frames, rows, cols)."""
    import gdcm  # python-gdcm, BSD licence

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise RuntimeError("gdcm could not read the file")
    image = reader.GetImage()
    dtypes = {"UINT8": np.uint8, "INT8": np.int8, "UINT16": np.uint16, "INT16": np.int16,
              "UINT32": np.uint32, "INT32": np.int32, "FLOAT32": np.float32, "FLOAT64": np.float64}
    scalar = image.GetPixelFormat().GetScalarTypeAsString()
    if scalar not in dtypes:
        raise RuntimeError(f"gdcm returned unsupported pixel type {scalar}")
    if image.GetPixelFormat().GetSamplesPerPixel() != 1:
        raise RuntimeError("gdcm returned colour pixels")
    buf = image.GetBuffer()
    if buf is None:
        raise RuntimeError("gdcm returned no pixel buffer")
    raw = buf.encode("utf-8", "surrogateescape") if isinstance(buf, str) else bytes(buf)
    arr = np.frombuffer(raw, dtype=dtypes[scalar])
    if arr.size != int(np.prod(shape)):
        raise RuntimeError(f"gdcm decoded {arr.size} values, expected {int(np.prod(shape))}")
    return arr.reshape(shape)


def decode_frames(ds: pydicom.Dataset, path: Path, frames: int, rows: int, cols: int) -> np.ndarray:
    """Stored values of all frames of ``ds`` as an array (frames, rows, cols).

    Raises SeriesError NO_PIXEL_DATA, NO_DECODER (naming the package to install) or
    CORRUPT_PIXEL_DATA (an installed decoder that reads every variant of the transfer syntax failed:
    the data are truncated or damaged; or they decode, but not to the declared size).
    """
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise SeriesError("NO_PIXEL_DATA", "the file has no pixel data", path)
    shape = (frames, rows, cols)
    tsyntax = transfer_syntax_of(ds)
    try:
        arr = ds.pixel_array
    except MemoryError as exc:
        raise SeriesError("TOO_LARGE", "not enough memory to decode the pixel data", path) from exc
    except Exception as first:  # noqa: BLE001 - pydicom and its plugins raise many types
        compressed = _is_compressed(tsyntax)
        if compressed is None:
            raise SeriesError("NO_DECODER", f"unknown transfer syntax {tsyntax!r}: {str(first).splitlines()[0]}",
                              path) from first
        if not compressed:
            raise SeriesError("CORRUPT_PIXEL_DATA", f"cannot read the pixel data: {first}", path) from first
        try:
            arr = _gdcm_decode(path, shape)
            log.debug("decoded %s with python-gdcm directly (pydicom: %s)", path, first)
        except Exception as second:  # noqa: BLE001
            gdcm_ran = not isinstance(second, ImportError)
            if _has_builtin_decoder(tsyntax) or (gdcm_ran and tsyntax.startswith(GDCM_COMPLETE)):
                # a decoder for every variant of this syntax is installed and failed: damaged data
                gdcm_said = f"; gdcm: {second}" if gdcm_ran else ""
                raise SeriesError(
                    "CORRUPT_PIXEL_DATA", f"the {_ts_name(tsyntax)} pixel data cannot be decoded although a "
                    f"decoder for them is installed: they are truncated or damaged ({_one_line(first)}{gdcm_said}); "
                    "copy the series again", path) from second
            if not gdcm_ran:
                raise SeriesError(
                    "NO_DECODER", f"no installed decoder reads transfer syntax {tsyntax} "
                    f"({_ts_name(tsyntax)}): install {decoder_hint(tsyntax)}", path) from second
            raise SeriesError(
                "NO_DECODER", f"no installed decoder could read transfer syntax {tsyntax} "
                f"({_ts_name(tsyntax)}): {str(first).splitlines()[0]}; gdcm: {second}. "
                f"Install {decoder_hint(tsyntax)}", path) from second
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape != shape:
        raise SeriesError("CORRUPT_PIXEL_DATA", f"pixel data decode to shape {arr.shape}, header declares "
                          f"{shape} (frames, rows, columns)", path)
    return arr
