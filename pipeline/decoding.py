"""Pixel decoding with permissively licensed decoders, and what to install when none can.

Order: pydicom's own decoders (native, RLE, deflate; then its plugins: python-gdcm,
pylibjpeg-openjpeg, pyjpegls, Pillow), then python-gdcm's ``ImageReader`` directly, which also reads
12-bit JPEG Extended, progressive and spectral-selection JPEG that pydicom's gdcm plugin declines.
pylibjpeg-libjpeg (GPL-3.0) is never required.

Decoded values are the stored values (no rescale); the loader applies rescale per slice.

Damaged compressed data do not always make a decoder fail: libjpeg (inside python-gdcm, the only
permissive decoder of JPEG Lossless) only prints "Corrupt JPEG data: ... extraneous bytes" on stderr
and returns made-up values; OpenJPEG decodes a JPEG 2000 stream whose packets were zeroed to a flat
image. Two cheap checks on the decoded frame catch these (:func:`_check_decoded`): a JPEG Lossless frame
is re-encoded in arithmetic only (the Huffman code length of every prediction difference, with the
stream's own tables and predictor), which must fill the stream's entropy-coded segment exactly; a
JPEG 2000 / JPEG-LS frame must not decode to one single value from a stream far longer than a flat
image needs. Both are pure numpy on the frame at hand (thread-safe, no stderr capture).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import generate_fragments, generate_frames

from pipeline import headers as H
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
    """Decode with python-gdcm's ImageReader (stored values), shaped (frames, rows, cols), in a child process
    (:mod:`pipeline.gdcm_worker`): GDCM aborts the whole process on some damaged streams, which then fail this
    file only (``GdcmCrashed``, a RuntimeError)."""
    from pipeline.gdcm_worker import decode

    return decode(path, shape, "raw")


def _pydicom_gdcm_here(path: Path) -> np.ndarray:
    """pydicom's ``pixel_array`` of the file with its gdcm plugin, in this process (what the child process of
    :func:`_pixel_array` runs)."""
    from pipeline.inventory import dcmread_as_inventory

    ds = dcmread_as_inventory(path)
    ds.pixel_array_options(decoding_plugin="gdcm")
    return ds.pixel_array


def _pixel_array(ds: pydicom.Dataset, path: Path, tsyntax: str, shape: tuple[int, int, int]) -> np.ndarray:
    """``ds.pixel_array``, with pydicom's gdcm plugin run in a child process (:mod:`pipeline.gdcm_worker`: GDCM
    aborts the process on some damaged streams) and the other plugins here, in pydicom's own order (gdcm first
    where it is installed: the same decoder, so the same values, as pydicom's ``pixel_array``). When every plugin
    fails, the error lists each one's reason, as pydicom's own does."""
    try:
        from pydicom.pixels import get_decoder

        plugins = tuple(get_decoder(tsyntax).available_plugins)
    except Exception:  # noqa: BLE001 - native or unknown syntax: pydicom says what it says
        plugins = ()
    if "gdcm" not in plugins:
        return ds.pixel_array
    from pipeline.gdcm_worker import decode

    errors = []
    try:
        for plugin in plugins:
            try:
                if plugin == "gdcm":
                    return decode(path, shape, "pydicom")
                ds.pixel_array_options(decoding_plugin=plugin)
                return ds.pixel_array
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - pydicom and its plugins raise many types
                said = _one_line(exc)
                errors.append(said if said.startswith(f"{plugin}:") else f"{plugin}: {said}")
    finally:
        ds.pixel_array_options()  # pydicom's defaults again
    raise RuntimeError("Unable to decode the pixel data as the following exceptions were raised by all available "
                       "plugins:\n" + "\n".join(errors))


def _gdcm_decode_here(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """:func:`_gdcm_decode` in this process (what the child process runs)."""
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


# --- checks of decoded frames against their compressed stream -------------------------------------

#: JPEG Lossless (process 14, any predictor; and selection value 1): verified by re-encoding lengths.
JPEG_LOSSLESS = ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")
#: Bytes an encoder may leave after the last coded sample (beyond the padding of the last byte) before a
#: JPEG Lossless frame is called damaged; a damaged stream puts the decoder out of step by far more.
LOSSLESS_TRAILING_SLACK_BYTES = 2
#: JPEG 2000, HTJ2K and JPEG-LS: a flat decoded frame from a long stream means lost packets.
FLAT_CHECKED = ("1.2.840.10008.1.2.4.8", "1.2.840.10008.1.2.4.9", "1.2.840.10008.1.2.4.20")
#: A flat frame is suspicious when its stream holds more than this many bytes per pixel (a flat
#: 512 x 512 frame needs a few hundred bytes in JPEG 2000 / JPEG-LS; real CT about 0.5-1 byte/pixel).
FLAT_STREAM_BYTES_PER_PIXEL = 1 / 64

#: Where each difference category starts: |difference| 0 is category 0, [2**(k-1), 2**k) category k
#: (k = 1..15), 32768 category 16.
_CATEGORY_STARTS = np.array([0] + [1 << k for k in range(16)])
#: Extra bits after each Huffman code: SSSS bits, none for category 16.
_EXTRA_BITS = np.array(list(range(16)) + [0])


@dataclass
class _LosslessScan:
    precision: int
    rows: int
    cols: int
    predictor: int
    point_transform: int
    code_lengths: np.ndarray  # Huffman code length per category 0..16 (0: no code)
    data_bytes: int  # entropy-coded bytes without stuffed zero bytes and fill bytes


def _parse_lossless_jpeg(stream: bytes) -> _LosslessScan | str | None:
    """The one scan of a single-component JPEG Lossless stream; a sentence when its marker structure is
    broken; None when it is a variant this check does not cover (restart intervals, several components
    or scans, arithmetic coding)."""
    b = stream
    n = len(b)
    if n < 4 or b[0] != 0xFF or b[1] != 0xD8:
        return "the JPEG stream does not start with a start-of-image marker"
    i, tables, sof = 2, {}, None
    while True:
        if i + 4 > n:
            return "the JPEG stream ends before its scan"
        if b[i] != 0xFF:
            return f"no JPEG marker at byte {i} of the stream"
        m = b[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m in (0xD8, 0xD9, 0x01) or 0xD0 <= m <= 0xD7:
            return f"unexpected JPEG marker 0xff{m:02x} before the scan"
        length = (b[i + 2] << 8) | b[i + 3]
        seg = b[i + 4:i + 2 + length]
        if length < 2 or len(seg) != length - 2:
            return "a JPEG marker segment runs past the end of the stream"
        if m == 0xC4:  # Huffman tables
            k = 0
            while k + 17 <= len(seg):
                counts = seg[k + 1:k + 17]
                values = seg[k + 17:k + 17 + sum(counts)]
                lengths = np.zeros(17, np.int64)
                pos = 0
                for bits, count in enumerate(counts, start=1):
                    for v in values[pos:pos + count]:
                        if v <= 16 and not lengths[v]:
                            lengths[v] = bits
                    pos += count
                tables[seg[k]] = lengths
                k += 17 + sum(counts)
        elif m == 0xDD:  # restart interval: prediction restarts, not modelled here
            if length >= 4 and (seg[0] << 8 | seg[1]):
                return None
        elif m == 0xC3:
            if len(seg) < 6 or seg[5] != 1:
                return None
            sof = (seg[0], (seg[1] << 8) | seg[2], (seg[3] << 8) | seg[4])
        elif 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            return None  # another process (or arithmetic coding)
        elif m == 0xDA:
            if sof is None or len(seg) < 6 or seg[0] != 1:
                return None
            table = seg[2] >> 4  # DC table of the only component
            predictor, point_transform = seg[3], seg[5] & 0x0F
            if table not in tables or not 1 <= predictor <= 7 or not 2 <= sof[0] <= 16:
                return None
            start = i + 2 + length
            data = np.frombuffer(b, np.uint8, offset=start) if start < n else np.zeros(0, np.uint8)
            ff = np.flatnonzero(data[:-1] == 0xFF)
            follow = data[ff + 1]
            markers = ff[follow != 0x00]
            if markers.size:
                end = int(markers[0])
            else:  # no end-of-image marker: count what is there (one pad byte to an even length aside)
                end = data.size - (1 if data.size and data[-1] == 0 else 0)
            while end > 0 and data[end - 1] == 0xFF:  # fill bytes before the marker
                end -= 1
            stuffed = int(np.count_nonzero(ff[follow == 0x00] < end))
            return _LosslessScan(sof[0], sof[1], sof[2], predictor, point_transform, tables[table],
                                 end - stuffed)
        i += 2 + length


def _lossless_bits(samples: np.ndarray, scan: _LosslessScan) -> int | None:
    """Bits a JPEG Lossless encoder writes for ``samples`` (uint16) with the scan's predictor and Huffman
    table (None when a difference has no Huffman code: the stream cannot have held these samples).

    Differences are taken modulo 2**16 (ITU-T T.81 H.1.2.1): uint16 arithmetic wraps exactly so.
    """
    x = samples
    if scan.predictor == 1:
        body = x[1:, 1:] - x[1:, :-1]
    elif scan.predictor in (2, 3):
        body = x[1:, 1:] - (x[:-1, 1:] if scan.predictor == 2 else x[:-1, :-1])
    else:
        ra, rb, rc = (v.astype(np.int32) for v in (x[1:, :-1], x[:-1, 1:], x[:-1, :-1]))
        pred = {4: lambda: ra + rb - rc, 5: lambda: ra + ((rb - rc) >> 1), 6: lambda: rb + ((ra - rc) >> 1),
                7: lambda: (ra + rb) >> 1}[scan.predictor]()
        body = x[1:, 1:] - pred.astype(np.uint16)
    first = np.array([int(x[0, 0]) - (1 << (scan.precision - scan.point_transform - 1))]).astype(np.uint16)
    counts = np.zeros(17, np.int64)
    for diff in (body, x[0, 1:] - x[0, :-1], x[1:, 0] - x[:-1, 0], first):
        magnitude = np.abs(diff.view(np.int16)).view(np.uint16)  # |-32768| stays 32768 as uint16
        counts += np.add.reduceat(np.bincount(magnitude.ravel(), minlength=32769), _CATEGORY_STARTS)
    if np.any((counts > 0) & (scan.code_lengths == 0)):
        return None
    return int(np.sum(counts * (scan.code_lengths + _EXTRA_BITS)))


def _lossless_mismatch(stream: bytes, frame: np.ndarray, ds: pydicom.Dataset) -> str:
    """Why a decoded JPEG Lossless frame cannot be what its stream holds ('' when it can, or when the
    stream is a variant not checked)."""
    scan = _parse_lossless_jpeg(stream)
    if scan is None:
        return ""
    if isinstance(scan, str):
        return scan
    if frame.shape != (scan.rows, scan.cols):
        return ""  # the size check of decode_frames reports this
    have = scan.data_bytes
    need = None
    stored = H.integer(ds, "BitsStored")
    masks = [(1 << scan.precision) - 1]
    if stored and stored < scan.precision:  # the decoder may have sign-extended or masked unused bits
        masks.append((1 << stored) - 1)
    raw = frame.view(np.uint16) if frame.dtype.itemsize == 2 else frame.astype(np.uint16)  # samples modulo 2**16
    for mask in masks:
        samples = raw if mask == 0xFFFF and not scan.point_transform else (raw & mask) >> scan.point_transform
        bits = _lossless_bits(np.ascontiguousarray(samples, np.uint16), scan)
        if bits is not None and 0 <= have - (bits + 7) // 8 <= LOSSLESS_TRAILING_SLACK_BYTES:
            return ""
        if need is None and bits is not None:
            need = (bits + 7) // 8
    if need is None:
        return "the decoded values need Huffman codes the stream does not define"
    what = "bytes more than the decoded image accounts for" if have > need else "bytes fewer than the decoded image needs"
    return (f"its entropy-coded data hold {have} bytes, {abs(have - need)} {what} "
            f"(the decoder stopped out of step with the data)")


#: JPEG (ITU-T T.81) transfer syntaxes: baseline, extended, spectral selection, progression, lossless.
JPEG_10918 = ("1.2.840.10008.1.2.4.5", "1.2.840.10008.1.2.4.70")
#: Sample precisions (bits) of a JPEG frame header that python-gdcm decodes; outside them (0, 1, 2, 4, 17, ...)
#: its JPEG codec fails an internal assertion and aborts the whole process (SIGABRT / SIGSEGV), no exception.
JPEG_PRECISION_RANGE = (8, 16)


def _jpeg_header_problem(stream: bytes) -> str:
    """Why a JPEG stream that starts with a start-of-image marker has no usable frame header ('' when it has
    one, or when it does not start with SOI: decoders refuse such streams with an exception)."""
    b, n = stream, len(stream)
    if n < 2 or b[0] != 0xFF or b[1] != 0xD8:
        return ""
    i = 2
    while True:
        if i + 2 > n:
            return "the JPEG stream ends before its frame header (start-of-frame marker)"
        if b[i] != 0xFF:
            return f"no JPEG marker at byte {i} of the stream, before its frame header"
        m = b[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m == 0x01 or 0xD0 <= m <= 0xD7:  # markers without a segment
            i += 2
            continue
        if m in (0xD9, 0xDA):
            return "the JPEG stream has no frame header (start-of-frame marker) before its scan or end"
        if i + 4 > n:
            return "the JPEG stream ends inside a marker segment before its frame header"
        length = (b[i + 2] << 8) | b[i + 3]
        if length < 2 or i + 2 + length > n:
            return "a JPEG marker segment before the frame header runs past the end of the stream"
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):  # SOFn
            if length < 8:
                return "the JPEG frame header is too short"
            precision = b[i + 4]
            lo, hi = JPEG_PRECISION_RANGE
            if not lo <= precision <= hi:
                return (f"the JPEG frame header declares a sample precision of {precision} bits (CT images hold "
                        f"{lo} to {hi})")
            return ""
        i += 2 + length


def _check_jpeg_headers(ds: pydicom.Dataset, path: Path, frames: int, tsyntax: str) -> None:
    """Refuse JPEG streams whose frame header is missing, cut off or impossible before any decoder sees them:
    python-gdcm aborts the process on such a stream (one bad file would stop a whole batch)."""
    if not tsyntax.startswith(JPEG_10918) or "PixelData" not in ds:
        return
    streams = _encoded_frames(ds, frames)
    if streams is None:  # fragments that do not split into the declared frames: check them as one stream
        try:
            streams = [b"".join(bytes(f) for f in generate_fragments(ds.PixelData))]
        except Exception:  # noqa: BLE001 - not encapsulated: the decoders report it
            return
    for k, stream in enumerate(streams):
        why = _jpeg_header_problem(stream)
        if why:
            where = f" (frame {k + 1})" if len(streams) > 1 else ""
            raise SeriesError("CORRUPT_PIXEL_DATA", f"the {_ts_name(tsyntax)} pixel data{where} are damaged: {why}; "
                              "copy the series again", path)


def _encoded_frames(ds: pydicom.Dataset, frames: int) -> list[bytes] | None:
    try:
        return [bytes(f) for f in generate_frames(ds.PixelData, number_of_frames=frames)]
    except Exception:  # noqa: BLE001 - the decoder read them; a parse failure here is not a verdict
        return None


def _gdcm_reads_it_clean(path: Path, shape: tuple[int, ...], k: int, stream: bytes, ds: pydicom.Dataset) -> bool:
    """Second opinion on the refusal path only: python-gdcm's own buffer of frame ``k`` (no pydicom value
    handling in between) does fit the stream."""
    try:
        frame = _gdcm_decode(path, tuple(shape))[k]
    except Exception:  # noqa: BLE001 - no gdcm, or it cannot read the file either
        return False
    return not _lossless_mismatch(stream, frame, ds)


def _check_decoded(ds: pydicom.Dataset, path: Path, arr: np.ndarray, tsyntax: str) -> None:
    """Refuse decoded frames that cannot be what their compressed stream holds (CORRUPT_PIXEL_DATA)."""
    lossless = tsyntax in JPEG_LOSSLESS
    flat = tsyntax.startswith(FLAT_CHECKED)
    if not (lossless or flat) or "PixelData" not in ds:
        return
    streams = _encoded_frames(ds, arr.shape[0])
    if streams is None or len(streams) != arr.shape[0]:
        return
    for k, (stream, frame) in enumerate(zip(streams, arr)):
        where = f" (frame {k + 1})" if arr.shape[0] > 1 else ""
        if lossless:
            why = _lossless_mismatch(stream, frame, ds)
            if why and not _gdcm_reads_it_clean(path, arr.shape, k, stream, ds):
                raise SeriesError("CORRUPT_PIXEL_DATA", f"the {_ts_name(tsyntax)} pixel data{where} are damaged: "
                                  f"{why}; the decoder returned made-up values. Copy the series again (if the files "
                                  "are known to be intact, report this and set loading.verify_compressed: false)",
                                  path)
        elif len(stream) > max(1024, FLAT_STREAM_BYTES_PER_PIXEL * frame.size) and frame.min() == frame.max():
            raise SeriesError("CORRUPT_PIXEL_DATA", f"the {_ts_name(tsyntax)} pixel data{where} decode to the single "
                              f"value {frame.flat[0]} although the stream holds {len(stream)} bytes: the data are "
                              "damaged (lost or zeroed packets). Copy the series again", path)


def decode_frames(ds: pydicom.Dataset, path: Path, frames: int, rows: int, cols: int,
                  verify: bool = True) -> np.ndarray:
    """Stored values of all frames of ``ds`` as an array (frames, rows, cols).

    Raises SeriesError NO_PIXEL_DATA, NO_DECODER (naming the package to install) or
    CORRUPT_PIXEL_DATA (an installed decoder that reads every variant of the transfer syntax failed:
    the data are truncated or damaged; or they decode, but not to the declared size, or to values the
    stream cannot hold: see :func:`_check_decoded`, skipped with ``verify=False``, the config's
    ``loading.verify_compressed``).
    """
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise SeriesError("NO_PIXEL_DATA", "the file has no pixel data", path)
    shape = (frames, rows, cols)
    tsyntax = transfer_syntax_of(ds)
    _check_jpeg_headers(ds, path, frames, tsyntax)
    try:
        arr = _pixel_array(ds, path, tsyntax, shape)
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
    if verify:
        _check_decoded(ds, path, arr, tsyntax)
    return arr
