"""Header-only inventory of everything under an input path: files, series, stacks, decisions.

Pixels are not decoded here: each file is read with ``stop_before_pixels`` and the presence and
length of its pixel data are checked by peeking at the next element; only files of a series that share a
SOPInstanceUID and a position have their pixels read (bytes, or decoded across transfer syntaxes), to tell copies
from edited ones (:func:`_dedupe`). Files are classified (kept or skipped with a code), de-duplicated by
SOPInstanceUID, grouped by series, and each series is split
into stacks by orientation, matrix size, pixel spacing, image type, kernel and (when they overlap)
acquisition or slice thickness. Each stack's geometry is judged with :mod:`pipeline.geometry` so that
the inventory shows what loading will do; :mod:`pipeline.selection` then decides which stacks are scored.

:func:`build_inventory` is the Python twin of ``ctscore scan`` (:func:`scan_inventory`: its per-file table only).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pipeline import decoding
from pipeline import headers as H
from pipeline.decoding import is_lossy, transfer_syntax_of
from pipeline.errors import CTScoreError, SeriesError
from pipeline.geometry import (
    ORIENTATION_GROUPING_TOLERANCE,
    PIXEL_SPACING_TOLERANCE,
    SAME_POSITION_TOLERANCE_MM,
    SamePositionIndex,
    axial_angle_deg,
    normal_of,
)

log = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: SOP class prefixes of objects that carry no CT image to score.
NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.": "structured report",
    "1.2.840.10008.5.1.4.1.1.11.": "presentation state",
    "1.2.840.10008.5.1.4.1.1.66": "segmentation / registration / raw data",
    "1.2.840.10008.5.1.4.1.1.481.": "radiotherapy object",
    "1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
    "1.2.840.10008.5.1.4.1.1.9.": "waveform",
}
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
#: Image storage SOP classes (CT, enhanced and legacy-converted CT; MR images, not spectroscopy; PET):
#: such a file without pixel data is damaged (cut off before them), not a non-image object.
IMAGE_STORAGE_PREFIXES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.128",
                          "1.2.840.10008.5.1.4.1.1.130")
IMAGE_STORAGE_EXACT = {"1.2.840.10008.5.1.4.1.1.4"}
PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
DEFLATED = "1.2.840.10008.1.2.1.99"
#: Transfer syntaxes preferred when de-duplicating (uncompressed / lossless first).
_TS_PREFERENCE = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"]


@dataclass
class FileRecord:
    """One file seen under the input, with what the inventory decided about it."""

    path: Path
    status: str = "ok"  # ok | skipped
    code: str = ""  # skip code (NOT_DICOM, DUPLICATE_SOP_INSTANCE, ...) or CORRUPT_FILE (truncated: kept in its stack)
    detail: str = ""
    ds: pydicom.Dataset | None = field(default=None, repr=False)
    has_pixels: bool = True
    truncated: bool = False
    stack_id: str = ""
    #: its SOPInstanceUID is shared by files of its series at this many positions (0: not reused): SOP_UID_REUSED
    sop_reused: int = 0
    #: files of its series with its SOPInstanceUID and position but other pixels (DUPLICATE_POSITION)
    duplicate_of: list[Path] = field(default_factory=list)


@dataclass
class SeriesCandidate:
    """One stack of slices (a series, or part of one) that could be scored.

    ``series_uid``, ``files``, ``header``, ``eligible`` and ``reason`` are the interface of
    :func:`pipeline.discovery.select_series`; the other fields explain the decision.
    """

    series_uid: str
    files: list[Path] = field(default_factory=list)
    header: dict[str, Any] = field(default_factory=dict)
    eligible: bool = True
    reason: str = ""  # skip code of a hard filter, or the selection reason
    stack_id: str = ""
    study_key: str = ""
    decision: str = ""  # selected | skipped
    rank: int = 0  # 1 = best stack of its study
    problems: list[str] = field(default_factory=list)  # refusals predicted from headers (loading would raise)
    flags: list[str] = field(default_factory=list)  # fixes / warnings predicted from headers
    messages: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # inventory columns
    #: the stack ids of the next-ranked eligible stacks of the study, without predicted refusals (set on the chosen
    #: stack when one stack per study is scored): named in its failure message, should it fail to load
    alternatives: list[str] = field(default_factory=list)
    # geometry inputs kept for re-analysis with another config
    iop: np.ndarray | None = field(default=None, repr=False)
    positions: np.ndarray | None = field(default=None, repr=False)
    #: the largest difference of a direction cosine from the first slice's (in slice order), as the loader compares
    #: them: over ``ORIENTATION_TOLERANCE`` the loader refuses the stack (INCONSISTENT_ORIENTATION), which grouping
    #: (``ORIENTATION_GROUPING_TOLERANCE``) lets through
    iop_spread: float = 0.0


#: What ``ctscore run`` writes into its output folder (pipeline.run, pipeline.batch, pipeline.report): left out of the
#: inventory when that folder lies inside the input (a second run listed them all as skipped files).
RUN_OUTPUT_FILES = {f"{name}.{ext}" for name in ("scans", "zones", "failures", "landmarks", "inventory")
                    for ext in ("csv", "parquet")
                    } | {"run.json", "report.html", "data_dictionary.csv"}
RUN_OUTPUT_DIRS = {".status", "shards"}
#: scan-<id>, .scan-<id>.*.partial, .scan-<id>.old, and .scan-<id>.old.<when> (an earlier copy that could not be
#: removed, set aside: :func:`pipeline.batch.set_aside_earlier_copy`)
_SCAN_FOLDER = re.compile(r"\.?scan-[0-9a-f]{12}(\..+\.partial|\.old(\..+)?)?")


def is_run_folder(folder: str | Path, dirnames: list[str], filenames: list[str]) -> bool:
    """Whether ``folder`` (listing ``dirnames``, ``filenames``) is the output folder of a ``ctscore run``: a
    ``run.json`` written by ctscore, or the per-scan records and the inventory of a run that has not finished."""
    if ".status" in dirnames and "inventory.parquet" in filenames:
        return True
    if "run.json" not in filenames:
        return False
    try:
        with open(os.path.join(folder, "run.json"), "rb") as fh:
            run = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(run, dict) and "ctscore_version" in run and "config_sha256" in run


def _leave_out_run_outputs(folder: str, dirnames: list[str], filenames: list[str]) -> None:
    """In a ctscore output folder (:func:`is_run_folder`), drop ctscore's own entries from an ``os.walk`` listing:
    its tables, run.json, report.html, per-scan records, shards and series folders (and their temporary names).
    Anything else in it (a user's own files) is kept."""
    if not is_run_folder(folder, dirnames, filenames):
        return

    def ours(name: str, names: set[str]) -> bool:  # .scans.csv.<random>.tmp: an atomic write under way
        return name in names or (name.startswith(".") and name.endswith(".tmp") and
                                 name[1:].split(".tmp", 1)[0].rsplit(".", 1)[0] in names)

    kept_dirs = [d for d in dirnames if d not in RUN_OUTPUT_DIRS and not _SCAN_FOLDER.fullmatch(d)]
    kept_files = [f for f in filenames if not ours(f, RUN_OUTPUT_FILES)]
    n = len(dirnames) - len(kept_dirs) + len(filenames) - len(kept_files)
    log.info("%s is a ctscore output folder: its %d own entries are left out of the inventory", folder, n)
    dirnames[:], filenames[:] = kept_dirs, kept_files


#: Folder names below INPUT that are not read, besides every name that starts with '.' (``.Trashes``, ``.Trash-1000``,
#: ``.snapshot``, ``.Spotlight-V100``, ``.fseventsd``...): trash, snapshot and metadata folders, compared without case.
#: A deleted copy of a series in the trash was chosen over the visible series of its study (an audit, 2026-12-08).
SYSTEM_FOLDERS = {"$recycle.bin", "system volume information", "__macosx", ".trashes", ".snapshot", ".spotlight-v100",
                  ".fseventsd",
                  "recycler", "recycled",  # older Windows
                  "#recycle", "#snapshot", "@eadir",  # Synology NAS: recycle bin, snapshots, thumbnails
                  "@recycle", "~snapshot"}  # QNAP / Netgear-style NAS
#: Files counted in a hidden or system folder (its HIDDEN_FOLDER row says "10000+" beyond).
HIDDEN_COUNT_LIMIT = 10_000


def is_hidden_folder(name: str) -> bool:
    """Whether a folder below INPUT is hidden or a system folder (:data:`SYSTEM_FOLDERS`): not read."""
    return name.startswith(".") or name.lower() in SYSTEM_FOLDERS


def _count_files(folder: Path, limit: int | None = None) -> str:
    """How many files ``folder`` holds at any depth (names only, nothing opened; links not followed): "12",
    "10000+" (``limit`` None: :data:`HIDDEN_COUNT_LIMIT`)."""
    limit = HIDDEN_COUNT_LIMIT if limit is None else limit
    n = 0
    for _, _, filenames in os.walk(folder):
        n += len(filenames)
        if n >= limit:
            return f"{limit}+"
    return str(n)


def hidden_folder_detail(folder: Path) -> str:
    """The file_detail of a HIDDEN_FOLDER row."""
    n = _count_files(folder)
    what = "hidden or system folder (trash, snapshot, metadata)"
    if n == "0":
        return f"{what}: not read; it holds no files"
    if n == "1":
        return f"{what}: its 1 file was not read; move it out of the folder to have it considered"
    return f"{what}: its {n} files were not read; move them out of the folder to have them considered"


def check_input(root: str | Path) -> None:
    """CTScoreError INPUT_NOT_FOUND unless ``root`` is a file, or a folder that can be listed (``ctscore run`` checks
    this before it loads the model; :func:`iter_files` before it walks the folder)."""
    root = Path(root)
    if root.is_file():
        return
    if not root.exists():
        raise CTScoreError("INPUT_NOT_FOUND", "input path does not exist", root)
    if not os.access(root, os.R_OK | os.X_OK):
        raise CTScoreError("INPUT_NOT_FOUND", "input folder cannot be read (permissions)", root)


def iter_files(root: Path) -> Iterator[Path]:
    """All regular files under ``root`` (or ``root`` itself), any depth, sorted for determinism.

    Links to folders are followed, each folder once (a link loop ends there). A folder that cannot be
    listed and a link to nothing are yielded too, so that :func:`read_file` names them (UNREADABLE_FILE).
    A DICOMDIR given as the input stands for the folder it indexes (a CD's root). The outputs of ``ctscore run`` in
    an output folder inside the input are left out (:func:`is_run_folder`). Hidden and system folders below ``root``
    (:func:`is_hidden_folder`: trash, snapshots, metadata) are not walked: each is yielded as a folder, which
    :func:`read_file` gives a HIDDEN_FOLDER row; ``root`` itself and the folders above it are never judged so."""
    if root.is_file() and root.name.upper() == "DICOMDIR":
        root = root.parent
    if root.is_file():
        yield root
        return
    check_input(root)
    unlisted: list[Path] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda exc: unlisted.append(Path(exc.filename)),
                                                followlinks=True):
        yield from unlisted
        unlisted.clear()
        real = os.path.realpath(dirpath)
        if real in seen:  # reached again through a link
            dirnames.clear()
            continue
        seen.add(real)
        _leave_out_run_outputs(dirpath, dirnames, filenames)
        hidden = sorted(d for d in dirnames if is_hidden_folder(d))
        dirnames[:] = sorted(d for d in dirnames if not is_hidden_folder(d))
        yield from (Path(dirpath) / d for d in hidden)
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_file() or (p.is_symlink() and not p.exists()):
                yield p
    yield from unlisted


def _peek_pixels(fp, ds: pydicom.Dataset, size: int) -> tuple[bool, bool]:
    """(has pixel data, looks truncated) from the bytes after the header of an open file."""
    if transfer_syntax_of(ds) == DEFLATED:
        return True, False  # the header was read from an inflated stream: positions are not file positions
    pos = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        return False, False
    little = transfer_syntax_of(ds) != "1.2.840.10008.1.2.2"
    fmt = "<HH" if little else ">HH"
    tag = struct.unpack(fmt, head[:4])
    if tag not in PIXEL_TAGS:
        return False, False
    implicit = transfer_syntax_of(ds) in ("1.2.840.10008.1.2", "")
    if implicit:
        length = struct.unpack("<I" if little else ">I", head[4:8])[0]
        header_len = 8
    else:
        if len(head) < 12:
            return True, True
        length = struct.unpack("<I" if little else ">I", head[8:12])[0]
        header_len = 12
    if length == 0xFFFFFFFF:
        return True, False  # encapsulated: its end is found only by parsing the fragments
    return True, pos + header_len + length > size


def has_dicm_preamble(start: bytes) -> bool:
    """True when the first 132 bytes of a file are a 128-byte preamble and 'DICM'."""
    return start[128:132] == b"DICM"


def ensure_transfer_syntax(ds: pydicom.Dataset) -> None:
    """Give a dataset read without File Meta Information (no preamble, raw dataset) the transfer
    syntax it was read with, so that its pixel data can be decoded (implicit VR little endian, the
    DICOM default, unless pydicom found explicit VRs)."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if H.text(meta, "TransferSyntaxUID") or "TransferSyntaxUID" in meta:
        return  # present (a malformed value is the decoder's to report)
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little in (None, True) else ExplicitVRBigEndian


def dcmread_as_inventory(path: Path, stop_before_pixels: bool = False) -> pydicom.Dataset:
    """Read a file the way :func:`read_file` accepts it: ``force`` when the DICM preamble is missing, and
    the transfer syntax set when the File Meta Information is missing (the loader reads every file the
    inventory kept this way)."""
    with open(path, "rb") as fp:
        preamble = has_dicm_preamble(fp.read(132))
        fp.seek(0)
        ds = pydicom.dcmread(fp, stop_before_pixels=stop_before_pixels, force=not preamble)
    ensure_transfer_syntax(ds)
    return ds


def is_image_storage(ds: pydicom.Dataset, sop_class: str) -> bool:
    """An image (by SOP class, or by Rows and Columns): its pixel data are mandatory."""
    if sop_class in IMAGE_STORAGE_EXACT or sop_class.startswith(IMAGE_STORAGE_PREFIXES):
        return True
    return H.integer(ds, "Rows", None) is not None and H.integer(ds, "Columns", None) is not None


#: The most a Deflated Explicit VR Little Endian data set may inflate to (more than any CT file holds: 1000 frames
#: of 512 x 512 x 16 bits are 0.5 GiB). pydicom inflates the whole of it in memory, before any size check.
DEFLATE_MAX_BYTES = 1 << 30
_DEFLATED_UID = str(pydicom.uid.DeflatedExplicitVRLittleEndian).encode()


def deflate_problem(fp: Any, has_preamble: bool, limit: int | None = None) -> str | None:
    """For a file in the deflated transfer syntax: why it is refused when its data set inflates to more than
    ``limit`` bytes (counted by a streaming inflate that keeps nothing: a 1 MB file of 1 GiB of zeros took 3.3 GB of
    memory in pydicom; ``limit`` None: :data:`DEFLATE_MAX_BYTES`), else None; ``fp`` is left at its start. Other
    transfer syntaxes: None at once."""
    import zlib

    from pydicom.filereader import _read_file_meta_info

    try:
        if _DEFLATED_UID not in fp.read(16384):  # the file meta (a few hundred bytes) names no deflate: at once
            return None
        fp.seek(132 if has_preamble else 0)
        meta = _read_file_meta_info(fp)
        if str(meta.get("TransferSyntaxUID", "")) != pydicom.uid.DeflatedExplicitVRLittleEndian:
            return None
        limit = DEFLATE_MAX_BYTES if limit is None else limit
        inflate, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while total <= limit:
            chunk = inflate.unconsumed_tail or fp.read(1 << 20)
            if not chunk:
                return None
            total += len(inflate.decompress(chunk, 1 << 24))
            if inflate.eof and total <= limit:
                return None
        return (f"deflated data set inflates to more than {limit >> 20} MiB (a decompression bomb, or no CT "
                "image): not read")
    except Exception:  # noqa: BLE001 - no readable meta or a damaged stream: pydicom says what is wrong
        return None
    finally:
        fp.seek(0)


#: What to do with an archive (ARCHIVE); a compressed single file gets its decompressor's name instead.
_UNPACK = "not opened (ctscore reads folders of DICOM files): unpack it and give the folder"
#: Leading bytes of archives and compressed files (a raw DICOM file begins with 08 00 or 02 00, never these).
_ARCHIVE_MAGIC = ((b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"), (b"PK\x07\x08", "zip"),
                  (b"7z\xbc\xaf\x27\x1c", "7z archive"), (b"Rar!\x1a\x07", "RAR archive"),
                  (b"\x1f\x8b\x08", "gzip"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"),
                  (b"BZh", "bzip2"))
#: Compressed single files: the tool that undoes each.
COMPRESSORS = {"gzip": "gunzip", "bzip2": "bunzip2", "xz": "unxz", "zstd": "unzstd"}
#: Zip-based documents (not archives of DICOM files): by suffix, or by the first member of the zip.
_ZIP_DOCUMENTS = (".docx", ".xlsx", ".pptx", ".docm", ".xlsm", ".odt", ".ods", ".odp", ".epub", ".jar", ".apk")
_ZIP_DOCUMENT_MEMBERS = (b"[Content_Types].xml", b"mimetype", b"META-INF/", b"word/", b"xl/", b"ppt/")
#: Suffixes a compressor adds to a file's name.
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")
#: Names of compressed tar archives (bzip2 inflates nothing until a whole block of up to 900 kB is read, so its first
#: bytes cannot tell a tar from a slice).
_TAR_NAMES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz", ".tar.zst", ".tzst")
#: File name extensions of DICOM files (``IM0001.dcm``); a file without an extension may be DICOM too.
DICOM_EXTENSIONS = (".dcm", ".dicom", ".ima", ".img", ".dc3")


def unpacked_name(name: str) -> str:
    """``name`` without one compression suffix (``IM0001.dcm.gz`` -> ``IM0001.dcm``)."""
    return name[:name.rindex(".")] if name.lower().endswith(COMPRESSION_SUFFIXES) else name


def compressed_slice(name: str, detail: str) -> bool:
    """Whether an ARCHIVE file (``detail``, as :func:`archive_detail` wrote it) is a single image file left compressed
    (``IM0001.dcm.gz``): a gzip, bzip2, xz or zstd stream whose first bytes inflate to DICOM, or whose name is a DICOM
    file's with the compressor's suffix. An archive of many files (zip, tar, 7z, RAR, ISO) or a NIfTI volume is no
    missing slice of a series beside it."""
    if name.lower().endswith(VOLUME_SUFFIXES) or "tar archive" in detail:
        return False
    if not any(detail.startswith(f"{k}-compressed") for k in COMPRESSORS):
        return False
    return "compressed DICOM file" in detail or Path(unpacked_name(name)).suffix.lower() in DICOM_EXTENSIONS


def _inflated_head(head: bytes, kind: str) -> bytes:
    """The first bytes a compressed stream inflates to ('' when they cannot be had cheaply)."""
    import bz2
    import lzma
    import zlib

    try:
        if kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 512)
        if kind == "bzip2":
            return bz2.BZ2Decompressor().decompress(head, 512)
        if kind == "xz":
            return lzma.LZMADecompressor().decompress(head, 512)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
        pass
    return b""


def archive_detail(fp: Any, name: str) -> str | None:
    """The file_detail of an archive or a compressed file (ARCHIVE), from its leading bytes (a second small read for
    an ISO disc image: CD001 at byte 0x8001); None for any other file. ``fp`` is left at its start."""
    try:
        fp.seek(0)
        head = fp.read(4096)
        kind = next((k for magic, k in _ARCHIVE_MAGIC if head.startswith(magic)), None)
        if kind == "bzip2" and not (len(head) > 3 and head[3:4] in b"123456789"):
            kind = None
        if kind is None and head[257:262] == b"ustar":
            kind = "tar archive"
        if kind is None:
            fp.seek(0x8001)
            kind = "ISO disc image" if fp.read(5) == b'CD001' else None  # ISO 9660 (quoted so: not read as a QC flag)
    except OSError:
        return None
    finally:
        fp.seek(0)
    if kind is None:
        return None
    if kind == "zip":
        first = head[30:30 + int.from_bytes(head[26:28], "little")] if head.startswith(b"PK\x03\x04") else b""
        if name.lower().endswith(_ZIP_DOCUMENTS) or first.startswith(_ZIP_DOCUMENT_MEMBERS):
            return None  # a report.docx or a table: not DICOM, no archive of series
        return f"ZIP archive: {_UNPACK}"
    if kind in COMPRESSORS:
        inner = _inflated_head(head, kind)
        if inner[257:262] == b"ustar" or (not inner and name.lower().endswith(_TAR_NAMES)):
            return f"{kind}-compressed tar archive: {_UNPACK}"
        dicom = has_dicm_preamble(inner) or inner[:2] in (b"\x08\x00", b"\x02\x00") or (
            not inner and Path(unpacked_name(name)).suffix.lower() in DICOM_EXTENSIONS)
        what = "DICOM file" if dicom else "file"
        return f"{kind}-compressed {what}: not read (ctscore reads uncompressed files): {COMPRESSORS[kind]} it"
    if kind == "ISO disc image":
        return "ISO disc image: not opened (ctscore reads folders of DICOM files): mount or unpack it and give the folder"
    return f"{kind}: {_UNPACK}"


def read_file(path: Path) -> FileRecord:
    """Read one file's header (never its pixels) and classify it."""
    rec = FileRecord(path=path)
    if path.is_dir() and is_hidden_folder(path.name):  # not walked (iter_files)
        rec.status, rec.code, rec.detail = "skipped", "HIDDEN_FOLDER", hidden_folder_detail(path)
        return rec
    if path.is_dir():  # a folder the walk could not list
        try:
            os.listdir(path)
            detail = "folder could not be listed"
        except OSError as exc:
            detail = f"folder cannot be listed: {exc.strerror or exc}"
        rec.status, rec.code, rec.detail = "skipped", "UNREADABLE_FILE", detail
        return rec
    if path.is_symlink() and not path.exists():
        rec.status, rec.code, rec.detail = ("skipped", "UNREADABLE_FILE",
                                            "a link that leads to no file (missing target, or a loop)")
        return rec
    try:
        size = path.stat().st_size
        with open(path, "rb") as fp:
            start = fp.read(132)
            fp.seek(0)
            has_preamble = has_dicm_preamble(start)
            if not has_preamble and start[:2] not in (b"\x08\x00", b"\x02\x00"):
                # a NIfTI volume (.nii.gz) is gzip too: said apart (volume_hint)
                archive = archive_detail(fp, path.name) if size and not path.name.lower().endswith(
                    VOLUME_SUFFIXES) else None
                if archive:  # a zip of the study, gzipped slices: named as such, not "no DICM preamble"
                    rec.status, rec.code, rec.detail = "skipped", "ARCHIVE", archive
                    return rec
                rec.status, rec.code, rec.detail = "skipped", "NOT_DICOM", (
                    "empty file (0 bytes: still being copied?)" if size == 0 else "no DICM preamble")
                return rec
            try:
                bomb = deflate_problem(fp, has_preamble)
                if bomb:
                    rec.status, rec.code, rec.detail = "skipped", "UNREADABLE_FILE", bomb
                    return rec
                ds = pydicom.dcmread(fp, stop_before_pixels=True, force=not has_preamble)
                ensure_transfer_syntax(ds)
                rec.has_pixels, rec.truncated = _peek_pixels(fp, ds, size)
            except (InvalidDicomError, EOFError) as exc:
                code = "UNREADABLE_FILE" if has_preamble else "NOT_DICOM"
                rec.status, rec.code, rec.detail = "skipped", code, str(exc).splitlines()[0][:200]
                return rec
            except Exception as exc:  # noqa: BLE001 - a damaged header raises many types
                rec.status, rec.code, rec.detail = "skipped", "UNREADABLE_FILE", f"{type(exc).__name__}: {exc}"[:200]
                return rec
    except OSError as exc:
        rec.status, rec.code, rec.detail = "skipped", "UNREADABLE_FILE", str(exc)[:200]
        return rec
    rec.ds = ds
    sop_class = H.text(ds, "SOPClassUID")
    meta = getattr(ds, "file_meta", None)
    media = H.text(meta, "MediaStorageSOPClassUID") if meta is not None else ""  # never raises
    if media == DICOMDIR_SOP_CLASS or path.name.upper() == "DICOMDIR" or "DirectoryRecordSequence" in ds:
        rec.status, rec.code, rec.detail = "skipped", "DICOMDIR", "DICOMDIR index"
    elif any(sop_class.startswith(p) for p in NON_IMAGE_SOP_CLASSES):
        kind = next(v for p, v in NON_IMAGE_SOP_CLASSES.items() if sop_class.startswith(p))
        rec.status, rec.code, rec.detail = "skipped", "NOT_IMAGE", kind
    elif sop_class == SECONDARY_CAPTURE_PREFIX or sop_class.startswith(SECONDARY_CAPTURE_PREFIX + "."):
        rec.status, rec.code, rec.detail = "skipped", "SECONDARY_CAPTURE", "secondary capture"
    elif not rec.has_pixels and (is_image_storage(ds, sop_class) or is_image_storage(ds, media)):
        # an image cut off before its pixel data (or stripped of them): part of its series, refused by name
        rec.truncated = True
        rec.code, rec.detail = "CORRUPT_FILE", "an image without pixel data: the file ends before them (truncated or damaged)"
    elif not rec.has_pixels:
        rec.status, rec.code, rec.detail = "skipped", "NOT_IMAGE", "no pixel data"
    if rec.status == "skipped":
        rec.ds = None
    elif rec.truncated and not rec.code:
        rec.code, rec.detail = "CORRUPT_FILE", "pixel data shorter than declared (truncated file)"
    return rec


def _short_hash(value: str, salt: str) -> str:
    """A salted hash of an identifier or a folder path (as the pseudonyms of :mod:`pipeline.outputs`): an unsalted
    one of a folder path could be checked against guessed, patient-named folders."""
    return hashlib.sha256(f"{salt}:{value}".encode("utf-8", "surrogateescape")).hexdigest()[:10]


def _folder_key(path: Path) -> str:
    """The folder of a file as an absolute path: the same however the input was written (relative or absolute)."""
    return os.path.abspath(str(path.parent))


def _salt_of(cfg: dict[str, Any] | None) -> str:
    from pipeline.outputs import DEFAULT_SALT

    return str(((cfg or {}).get("outputs") or {}).get("pseudonym_salt") or DEFAULT_SALT)


def summarize(ds: pydicom.Dataset) -> dict[str, Any]:
    """The header values that selection and outputs need (may be identifying: never in paths)."""
    return {
        "patient_id": H.text(ds, "PatientID"),
        "study_date": H.dicom_date(ds, "StudyDate")[0],  # YYYYMMDD, or '' (pipeline.headers.dicom_date)
        "series_time": H.time_of_day(ds),
        "study_uid": H.text(ds, "StudyInstanceUID"),
        "series_uid": H.text(ds, "SeriesInstanceUID"),
        "series_description": H.text(ds, "SeriesDescription"),
        "series_number": H.text(ds, "SeriesNumber"),
        "modality": H.text(ds, "Modality"),
        "image_type": "\\".join(H.image_type(ds)),
        "manufacturer": H.text(ds, "Manufacturer"),
        "model": H.text(ds, "ManufacturerModelName"),
        "kernel": H.kernel(ds),
        "slice_thickness": H.number(ds, "SliceThickness", None) or None,  # None (empty in the tables): not recorded
        "body_part": H.text(ds, "BodyPartExamined").upper(),
        "contrast": H.contrast_agent(ds),
        "rescale_type": H.rescale_type(ds),
        "photometric": H.text(ds, "PhotometricInterpretation").upper(),
        "transfer_syntax": transfer_syntax_of(ds),
        "sop_class": H.text(ds, "SOPClassUID"),
        "patient_position": H.text(ds, "PatientPosition"),
    }


def _orientation_label(iop: np.ndarray | None) -> str:
    if iop is None:
        return "UNKNOWN"
    n = np.abs(normal_of(iop))
    axis = int(np.argmax(n))
    label = ("SAGITTAL", "CORONAL", "AXIAL")[axis]
    return label if n[axis] > 0.999 else f"OBLIQUE_{label}"


@dataclass
class _Slice:
    rec: FileRecord
    frames: list[H.FrameInfo] | None  # None when the geometry is missing
    error: SeriesError | None
    acquisition: str


def _position_of(rec: FileRecord) -> np.ndarray | None:
    """The ImagePositionPatient of a file's first frame (None when it has no usable geometry)."""
    try:
        frames = H.frames_of(rec.ds, rec.path)
    except Exception:  # noqa: BLE001 - SeriesError (missing geometry) or a damaged header value
        return None
    return np.asarray(frames[0].ipp, float) if frames else None


def _encoded_digest(ds: pydicom.Dataset, path: Path) -> str | None:
    """A hash of a file's encoded pixel bytes (None without pixel data)."""
    for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if kw in ds:
            return hashlib.sha256(bytes(ds[kw].value)).hexdigest()
    return None


def _decoded_digest(ds: pydicom.Dataset, path: Path) -> str | None:
    """A hash of a file's decoded stored values (shape and kind included), decoded as the loader decodes
    (:func:`pipeline.decoding.decode_frames`: gdcm in a child process, as it can abort on a damaged stream); None
    when they cannot be decoded."""
    try:
        frames = H.integer(ds, "NumberOfFrames", 1) or 1
        arr = decoding.decode_frames(ds, path, frames, H.integer(ds, "Rows", 0), H.integer(ds, "Columns", 0),
                                     verify=False)
    except Exception:  # noqa: BLE001 - SeriesError (no decoder, damaged data) or a broken header value
        return None
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))  # big endian copies: the same values
    return hashlib.sha256(arr.tobytes() + f"{arr.dtype.kind}{arr.shape}".encode()).hexdigest()


def syntax_rank(ds: pydicom.Dataset) -> int:
    """Rank of a file's transfer syntax among copies of one instance (uncompressed first): its index in
    ``_TS_PREFERENCE``, 9 for any other."""
    ts = transfer_syntax_of(ds)
    return _TS_PREFERENCE.index(ts) if ts in _TS_PREFERENCE else 9


def same_pixel_groups(copies: list[tuple[pydicom.Dataset, Path, bool]], full: Any,
                      cache: dict | None = None) -> list[list[int]]:
    """Files sharing a SOPInstanceUID and a position, grouped by their pixels (one group: copies), as indices into
    ``copies`` (each (header dataset, path, truncated)); ``full(i)`` gives file ``i``'s dataset with its pixel data.
    The one rule of the inventory (:func:`_dedupe`) and the loader (``loading._read_files``): a truncated copy, a
    lossy beside a lossless one, or pixels that cannot be read are copies (the callers' preferences choose the one
    kept); files in one transfer syntax are compared by their encoded bytes, in several by their decoded values.
    ``cache`` (keyed by path and kind) spares hashing a file again."""
    n = len(copies)
    if n < 2 or any(t for _, _, t in copies) or len({is_lossy(ds) for ds, _, _ in copies}) > 1:
        return [list(range(n))]
    kind = "encoded" if len({transfer_syntax_of(ds) for ds, _, _ in copies}) == 1 else "decoded"
    digest = _encoded_digest if kind == "encoded" else _decoded_digest
    keys = []
    for i, (_, path, _) in enumerate(copies):
        key = cache.get((path, kind), ...) if cache is not None else ...
        if key is ...:
            try:
                key = digest(full(i), path)
            except Exception:  # noqa: BLE001 - pydicom raises many types for broken files
                key = None
            if cache is not None:
                cache[(path, kind)] = key
        if key is None:
            return [list(range(n))]
        keys.append(key)
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return list(groups.values())


def _same_pixels(recs: list[FileRecord]) -> list[list[FileRecord]]:
    """Files sharing a SOPInstanceUID and a position, grouped by their pixels (:func:`same_pixel_groups`, read
    only for such files: the only pixel reads of the inventory)."""
    groups = same_pixel_groups([(r.ds, r.path, r.truncated) for r in recs],
                               lambda i: dcmread_as_inventory(recs[i].path))
    return [[recs[i] for i in g] for g in groups]


def _dedupe(records: list[FileRecord]) -> None:
    """Mark files whose SOPInstanceUID was already seen in the same series (a SOPInstanceUID shared by files of two
    series is an anonymiser's or a CD writer's reuse, not a copy: both are kept, each in its series). Files sharing a
    SOPInstanceUID are copies only at the same position (within SAME_POSITION_TOLERANCE_MM) with the same pixels
    (encoded bytes, or decoded where the transfer syntaxes differ): at different positions each is a slice of its own
    and kept (``sop_reused``: the stack is flagged SOP_UID_REUSED; one UID written into every file by an anonymiser
    dropped all but one slice); at one position with different pixels (an edited copy) both are kept and the stack is
    refused (DUPLICATE_POSITION, naming both: which is the original is not for the path order to decide). Pixels are
    read only for files whose UIDs collide. Kept among copies: a complete copy before a truncated one, a lossless
    before a lossy one; among copies of the same pixels, the one in the folder holding most of its series (the
    folder the rest of the series is in: a copy of one slice elsewhere, e.g. in a folder of test files, must not
    pull the series' stack, its folder and its fingerprint there), then uncompressed (explicit VR, implicit VR, big
    endian) before compressed, then path order."""
    by_sop: dict[tuple[str, str], list[FileRecord]] = {}
    # series -> folder -> the SOPInstanceUIDs there (copies of one instance count once)
    folders: dict[str, dict[str, set[str]]] = {}
    for rec in records:
        if rec.status != "ok" or rec.ds is None:
            continue
        sop = H.text(rec.ds, "SOPInstanceUID")
        if sop:
            by_sop.setdefault((H.text(rec.ds, "SeriesInstanceUID"), sop), []).append(rec)
        folders.setdefault(H.text(rec.ds, "SeriesInstanceUID"), {}).setdefault(
            _folder_key(rec.path), set()).add(sop or str(rec.path))

    def pref(r: FileRecord) -> tuple:
        home = len(folders.get(H.text(r.ds, "SeriesInstanceUID"), {}).get(_folder_key(r.path), ()))
        return (r.truncated, is_lossy(r.ds), -home, syntax_rank(r.ds), str(r.path))

    for recs in by_sop.values():
        if len(recs) < 2:
            continue
        # files at one position (within SAME_POSITION_TOLERANCE_MM); files without geometry count as one position
        places: list[tuple[np.ndarray | None, list[FileRecord]]] = []
        index = SamePositionIndex()  # the places by their first file's position: near-linear, not pairwise
        nowhere: list[FileRecord] | None = None
        for r in recs:
            pos = _position_of(r)
            if pos is None:
                if nowhere is None:
                    nowhere = []
                    places.append((None, nowhere))
                nowhere.append(r)
                continue
            near = index.near(pos)
            if near:
                near[0].append(r)
            else:
                members = [r]
                places.append((pos, members))
                index.add(pos, members)
        kept_here: list[FileRecord] = []
        for _, members in places:
            variants = _same_pixels(members)
            kept = []
            for copies in variants:
                keep = min(copies, key=pref)
                kept.append(keep)
                for r in copies:
                    if r is not keep:
                        r.status, r.code, r.detail = ("skipped", "DUPLICATE_SOP_INSTANCE",
                                                      f"same SOPInstanceUID as {keep.path}")
                        r.ds = None
            if len(kept) > 1:  # one position, one UID, different pixels: an edited copy beside the original
                kept.sort(key=lambda r: str(r.path))
                for r in kept:
                    others = ", ".join(o.path.name for o in kept if o is not r)
                    r.code = r.code or "DUPLICATE_POSITION"
                    r.detail = r.detail or (f"same SOPInstanceUID and position as {others}, different pixels")
                    r.duplicate_of = [o.path for o in kept if o is not r]
            kept_here.extend(kept)
        if len(places) > 1:  # one UID at several positions: a reused UID, each file a slice of its own
            for r in kept_here:
                r.sop_reused = len(places)


def _group_orientation(iops: list[np.ndarray], iop: np.ndarray) -> int:
    for k, ref in enumerate(iops):
        if np.max(np.abs(ref - iop)) <= ORIENTATION_GROUPING_TOLERANCE:
            return k
    iops.append(iop)
    return len(iops) - 1


def _group_spacing(spacings: list[np.ndarray], spacing: np.ndarray) -> int:
    """The group of a PixelSpacing: the first one seen within the loader's relative tolerance
    (:data:`~pipeline.geometry.PIXEL_SPACING_TOLERANCE`), as :func:`_group_orientation` groups orientations; rounding
    to 0.001 mm split 2.2005 from 2.20050001 (float noise in one file) into two stacks."""
    for k, ref in enumerate(spacings):
        if ref.shape == spacing.shape and np.all(np.abs(spacing - ref) <= PIXEL_SPACING_TOLERANCE * ref):
            return k
    spacings.append(spacing)
    return len(spacings) - 1


def build_stacks(records: list[FileRecord], salt: str | None = None) -> list[SeriesCandidate]:
    """Group kept files into series and stacks (header values only). ``salt`` (``outputs.pseudonym_salt``; the
    built-in one when None) salts the ids of series without a SeriesInstanceUID and the study keys."""
    salt = _salt_of(None) if salt is None else salt
    _dedupe(records)
    series: dict[str, list[_Slice]] = {}
    missing_uid: set[str] = set()
    for rec in records:
        if rec.status != "ok" or rec.ds is None:
            continue
        ds = rec.ds
        uid = H.text(ds, "SeriesInstanceUID")
        if not uid:
            uid = f"NO_SERIES_UID:{_short_hash(_folder_key(rec.path), salt)}"  # a folder name may identify
            missing_uid.add(uid)
        try:
            frames, error = H.frames_of(ds, rec.path), None
        except SeriesError as exc:
            frames, error = None, exc
            if not rec.code:  # the file row says what is wrong with this file
                rec.code, rec.detail = exc.code, exc.message
        series.setdefault(uid, []).append(_Slice(rec, frames, error, H.text(ds, "AcquisitionNumber")))

    stacks: list[SeriesCandidate] = []
    for uid, slices in series.items():
        iops: list[np.ndarray] = []
        spacings: list[np.ndarray] = []
        groups: dict[tuple, list[_Slice]] = {}
        for s in slices:
            ds = s.rec.ds
            if s.frames is None:
                orient = -1
                spacing_key: int = -1
            else:
                orient = _group_orientation(iops, s.frames[0].iop)
                spacing_key = _group_spacing(spacings, np.asarray(s.frames[0].spacing, float))
            multiframe = str(s.rec.path) if H.is_multiframe(ds) else ""
            key = (orient, H.integer(ds, "Rows", 0), H.integer(ds, "Columns", 0), spacing_key,
                   tuple(H.image_type(ds)[:3]), H.kernel(ds).upper(), H.text(ds, "Modality"),
                   multiframe)
            groups.setdefault(key, []).append(s)
        parts: list[list[_Slice]] = []
        merged_acq: list[bool] = []
        for group in groups.values():
            for recon in _split_overlapping(group, _thickness_labels(group)):
                split = _split_overlapping(recon, {id(s): s.acquisition for s in recon})
                parts.extend(split)
                merged_acq.extend(len({s.acquisition for s in part}) > 1 for part in split)
        parts_sorted = sorted(zip(parts, merged_acq), key=lambda pm: str(pm[0][0].rec.path))
        for k, (part, merged) in enumerate(parts_sorted, start=1):
            cand = _make_candidate(uid, part, k if len(parts_sorted) > 1 else 0, salt)
            if merged:
                cand.flags.append("ACQUISITIONS_MERGED")
            if uid in missing_uid:
                cand.flags.append("MISSING_SERIES_UID")
            stacks.append(cand)
    return stacks


class _AcquisitionStack:
    """Acquisitions gathered into one stack so far: all their positions along the normal (sorted), and
    each acquisition's first and last position and slice spacing (NaN for a single slice)."""

    def __init__(self) -> None:
        self.positions = np.zeros(0)
        self.lo, self.hi, self.spacing = np.zeros(0), np.zeros(0), np.zeros(0)
        self.members: list[_Slice] = []

    def conflicts(self, pos: np.ndarray, spacing: float) -> bool:
        """True when an acquisition at sorted positions ``pos`` overlaps one already here."""
        tol = SAME_POSITION_TOLERANCE_MM
        if self.positions.size:  # a position in both
            k = np.searchsorted(self.positions, pos)
            left = self.positions[np.clip(k - 1, 0, None)]
            right = self.positions[np.clip(k, None, self.positions.size - 1)]
            if np.any(np.minimum(np.abs(left - pos), np.abs(right - pos)) < tol):
                return True
        lo, hi = pos[0], pos[-1]
        first = (self.lo < lo) | ((self.lo == lo) & (self.hi <= hi))  # the one here starts first
        inside = np.where(first, hi <= self.hi + tol, self.hi <= hi + tol)  # one lies within the other
        shared = np.where(first, self.hi - lo, hi - self.lo)  # < 0: a gap between the two ranges
        limit = np.fmin(self.spacing, spacing)  # the smaller spacing; NaN when neither has one
        limit = np.where(np.isnan(limit), 0.0, limit)
        return bool(np.any(inside | (shared >= limit - tol)))

    def add(self, pos: np.ndarray, spacing: float, slices: list[_Slice]) -> None:
        self.positions = np.sort(np.concatenate([self.positions, pos]))
        self.lo, self.hi = np.append(self.lo, pos[0]), np.append(self.hi, pos[-1])
        self.spacing = np.append(self.spacing, spacing)
        self.members.extend(slices)


def _thickness_labels(group: list[_Slice]) -> dict[int, str]:
    """Each slice's reconstruction by slice thickness (in steps of 0.05 mm, as a whole number); a slice
    without a thickness, or alone with its thickness (a stray header value), is given the commonest one."""
    labels = {}
    for s in group:
        t = s.frames[0].thickness if s.frames else None
        steps = t / 0.05 if t and t > 0 else None  # SliceThickness 1e308 (finite) gives inf steps: a label of its own
        labels[id(s)] = "" if steps is None else (str(int(round(steps))) if np.isfinite(steps) else f"{t:g}")
    counts: dict[str, int] = {}
    for v in labels.values():
        counts[v] = counts.get(v, 0) + 1
    common = max((v for v in counts if v), key=lambda v: counts[v], default="")
    return {k: (v if v and counts[v] > 1 else common) for k, v in labels.items()}


def _split_overlapping(group: list[_Slice], labels: dict[int, str]) -> list[list[_Slice]]:
    """One stack, unless slices of different ``labels`` (keyed by ``id`` of the slice: acquisitions, or
    reconstructions of another slice thickness) overlap along the slice normal: then the labels are
    gathered greedily (in label order, numbers numerically) into stacks in which none overlaps another.

    Two acquisitions overlap when a position of one coincides with a position of the other, or when
    their position ranges overlap by a slice spacing or more (a repeated breath-hold or contrast phase
    shifted by a fraction of a slice would otherwise be interleaved into one volume; so would a 5 mm
    reconstruction stored in the series of a 1 mm one). Acquisitions that tile z (the next starts about
    one spacing after the previous ends, or a little before) stay one stack.
    """
    acqs = {labels[id(s)] for s in group}
    if len(acqs) < 2 or any(s.frames is None for s in group):
        return [group]
    normal = normal_of(group[0].frames[0].iop)
    by_acq: dict[str, list[_Slice]] = {}
    for s in group:
        by_acq.setdefault(labels[id(s)], []).append(s)

    def acq_order(a: str) -> tuple:
        return (0, int(a)) if a.isdigit() else (1, a)

    stacks: list[_AcquisitionStack] = []
    for a in sorted(by_acq, key=acq_order):
        pos = np.unique(np.round([float(f.ipp @ normal) for s in by_acq[a] for f in s.frames], 3))
        steps = np.diff(pos)
        steps = steps[steps > SAME_POSITION_TOLERANCE_MM]
        spacing = float(np.median(steps)) if steps.size else np.nan
        target = next((st for st in stacks if not st.conflicts(pos, spacing)), None)
        if target is None:
            target = _AcquisitionStack()
            stacks.append(target)
        target.add(pos, spacing, by_acq[a])
    return [st.members for st in stacks]


def _make_candidate(uid: str, part: list[_Slice], index: int, salt: str) -> SeriesCandidate:
    first = part[0].rec.ds
    header = summarize(first)
    header["series_uid"] = uid
    study = header["study_uid"] or f"NO_STUDY_UID:{_folder_key(part[0].rec.path)}"
    stack_id = f"{uid}" if index == 0 else f"{uid}#{index}"
    frames = [f for s in part if s.frames for f in s.frames]
    errors = [s.error for s in part if s.error is not None]
    cand = SeriesCandidate(series_uid=uid, header=header, stack_id=stack_id, study_key=_short_hash(study, salt))
    cand.files = [s.rec.path for s in part]
    for s in part:
        s.rec.stack_id = stack_id
    if errors:
        first_bad = Path(errors[0].path).name if errors[0].path else "?"
        cand.problems.append(errors[0].code)
        cand.messages[errors[0].code] = f"{errors[0].message} ({len(errors)} of {len(part)} files, first {first_bad})"
    if frames:
        cand.iop = frames[0].iop
        cand.positions = np.array([f.ipp for f in frames])
        order = np.argsort(cand.positions @ normal_of(cand.iop), kind="stable")
        first_iop = frames[int(order[0])].iop
        cand.iop_spread = float(max(np.max(np.abs(f.iop - first_iop)) for f in frames))
        # files in slice order (multi-frame: one file)
        if len(frames) == len(part):
            cand.files = [frames[i].path for i in order]
        frame_ref = {f.frame_of_reference for f in frames}
        if len(frame_ref) > 1:
            cand.problems.append("INCONSISTENT_FRAME_OF_REFERENCE")
            cand.messages["INCONSISTENT_FRAME_OF_REFERENCE"] = f"{len(frame_ref)} FrameOfReferenceUIDs in one stack"
        thick = [f.thickness for f in frames if f.thickness]
        header["slice_thickness"] = float(np.median(thick)) if thick else header["slice_thickness"]
    reused = [s.rec for s in part if s.rec.sop_reused]
    if reused:
        cand.flags.append("SOP_UID_REUSED")
        cand.messages["SOP_UID_REUSED"] = (f"{len(reused)} files share a SOPInstanceUID with files at other positions "
                                           f"(first {reused[0].path.name}): each kept as a slice of its own")
    clashes = [s.rec for s in part if s.rec.duplicate_of]
    if clashes:
        clash = clashes[0]
        cand.problems.append("DUPLICATE_POSITION")
        cand.messages["DUPLICATE_POSITION"] = (f"{clash.path.name} and {', '.join(p.name for p in clash.duplicate_of)} "
                                               "share a SOPInstanceUID and a position but hold different pixels "
                                               "(an edited copy beside the original?): remove the one that is not "
                                               "the original")
    truncated = [s.rec for s in part if s.rec.truncated]
    if truncated:
        cand.flags.append("CORRUPT_FILES_IN_STACK")
        cand.messages["CORRUPT_FILES_IN_STACK"] = f"{len(truncated)} file(s) look truncated"
        # loading refuses the stack naming such a file: a refusal predicted from the headers (ranked last)
        cand.problems.append("CORRUPT_FILE")
        cand.messages["CORRUPT_FILE"] = (f"{len(truncated)} of {len(part)} files cannot be read to the end, first "
                                         f"{truncated[0].path.name}: {truncated[0].detail}")
    syntaxes = sorted({transfer_syntax_of(s.rec.ds) for s in part})
    lossy = any(is_lossy(s.rec.ds) for s in part)
    ts_names = []
    for ts in syntaxes:
        try:
            ts_names.append(pydicom.uid.UID(ts).name if ts else "unknown")
        except Exception:  # noqa: BLE001
            ts_names.append(ts)
    rows, cols = H.integer(first, "Rows", 0), H.integer(first, "Columns", 0)
    n_frames = len(frames) if frames else len(part)
    cand.info = {
        "n_files": len(part),
        "n_slices": n_frames,
        "rows": rows,
        "columns": cols,
        "orientation": _orientation_label(cand.iop),
        "axial_angle_deg": round(axial_angle_deg(cand.iop), 2) if cand.iop is not None else None,
        "pixel_spacing_mm": round(float(frames[0].spacing[0]), 4) if frames else None,
        "acquisitions": ",".join(sorted({s.acquisition for s in part})),
        "transfer_syntax": ";".join(ts_names),
        "lossy": lossy,
        "multiframe": H.is_multiframe(first),
    }
    return cand


def discover_records(root: str | Path, salt: str | None = None) -> tuple[list[FileRecord], list[SeriesCandidate]]:
    """Every file under ``root`` with its classification, and the stacks they form (``salt``: see
    :func:`build_stacks`)."""
    root = Path(root)
    records = [read_file(p) for p in iter_files(root)]
    stacks = build_stacks(records, salt)
    for rec in records:
        rec.ds = None  # headers are not needed any more; keep memory small for large trees
    return records, stacks


# --- the inventory table -------------------------------------------------------------------------

STACK_COLUMNS = [
    "stack_id", "series_uid", "study_key", "series_number", "series_description", "modality", "image_type",
    "orientation", "axial_angle_deg", "n_files", "n_slices", "rows", "columns", "pixel_spacing_mm",
    "slice_thickness_mm", "slice_spacing_mm", "z_min_mm", "z_max_mm", "z_coverage_mm", "gantry_tilt_deg",
    "kernel", "manufacturer", "model", "transfer_syntax", "lossy", "contrast", "body_part", "acquisitions",
    "multiframe", "eligible", "decision", "reason", "rank", "predicted_problems", "predicted_flags", "notes",
]
FILE_COLUMNS = ["path", "file_status", "file_code", "file_detail"] + STACK_COLUMNS
IDENTIFYING_COLUMNS = ["patient_id", "study_date"]
_INVENTORY_INT = ("n_files", "n_slices", "rows", "columns", "rank")
_INVENTORY_BOOL = ("lossy", "multiframe", "eligible")


def inventory_table(df: Any) -> Any:
    """The inventory (files or stacks) as written to inventory.csv / .parquet: counts as whole numbers (nullable
    ``Int64``: ``124``, not ``124.0``), yes/no columns as nullable booleans, everything else but measures as text;
    the same dtypes whether or not a row of the input is not a DICOM file (its empty cells made them floats and text)."""
    import pandas as pd

    out = df.copy()
    for c in out.columns:
        if c in _INVENTORY_INT:
            out[c] = out[c].astype("Float64").astype("Int64")
        elif c in _INVENTORY_BOOL:
            out[c] = out[c].astype("boolean")
        elif not pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].astype("string")
    return out


def _printable(value: Any) -> Any:
    """Text that a table can hold: a file name that is not valid UTF-8 (a Latin-1 name from a CD, decoded
    by Python with surrogate escapes) has its odd bytes written as ``\\xNN``; other values unchanged."""
    from pipeline.outputs import printable_text  # one rule for every table (failures.csv too)

    return printable_text(value)


def stack_row(c: SeriesCandidate, identifiers: bool = False) -> dict[str, Any]:
    """The inventory columns of one stack."""
    h = c.header
    row = {
        "stack_id": c.stack_id, "series_uid": c.series_uid, "study_key": c.study_key,
        "series_number": h.get("series_number", ""), "series_description": h.get("series_description", ""),
        "modality": h.get("modality", ""), "image_type": h.get("image_type", ""),
        "slice_thickness_mm": h.get("slice_thickness") or None, "kernel": h.get("kernel", ""),
        "manufacturer": h.get("manufacturer", ""), "model": h.get("model", ""), "contrast": h.get("contrast", ""),
        "body_part": h.get("body_part", ""), **c.info,
        "eligible": c.eligible, "decision": c.decision, "reason": c.reason, "rank": c.rank or None,
        "predicted_problems": ";".join(c.problems), "predicted_flags": ";".join(c.flags),
        "notes": " | ".join(f"{k}: {v}" for k, v in c.messages.items()),
    }
    if identifiers:
        row.update(patient_id=h.get("patient_id", ""), study_date=h.get("study_date", ""))
    return {k: _printable(v) for k, v in row.items()}


@dataclass
class Inventory:
    """The result of a scan: one row per file and one row per stack, plus the chosen stacks."""

    files: Any  # pandas.DataFrame (FILE_COLUMNS)
    stacks: Any  # pandas.DataFrame (STACK_COLUMNS)
    candidates: list[SeriesCandidate]
    chosen: list[SeriesCandidate]


def _all_series(all_series: bool, all_eligible: bool | None) -> bool:
    """``all_eligible``, the option's former name, still works (with a DeprecationWarning)."""
    if all_eligible is None:
        return all_series
    import warnings

    warnings.warn("all_eligible= is now all_series= (the name run_pipeline and --all-series use)",
                  DeprecationWarning, stacklevel=3)
    return bool(all_eligible) or all_series


def build_inventory(root: str | Path, cfg: Any = None, series_uid: str | None = None,
                    all_series: bool = False, identifiers: bool = False, *, all_eligible: bool | None = None
                    ) -> Inventory:
    """Scan ``root`` (headers only), decide every stack and return the inventory tables (``ctscore scan``).

    ``cfg``: None (the defaults), a mapping of sections with only the keys you change (e.g.
    ``{"selection": {"min_slices": 50}}``) or a whole configuration, or the path of a YAML file (``--config``):
    merged over the defaults and checked as ``ctscore scan`` checks it (:func:`pipeline.config.resolve_config`:
    an unknown key or a bad value is a ConfigError, BAD_CONFIG). ``all_series``: select every eligible stack, not
    one per study (``--all-series``, as in ``run_pipeline``); ``series_uid``: ``--series-uid``; ``identifiers``:
    ``--identifiers``.

    Returns an :class:`Inventory`: ``files`` (one row per file with its decision: the table ``-o`` writes,
    ``inventory.csv``), ``stacks`` (one row per stack: ``--stacks``), ``candidates`` (every stack found) and
    ``chosen`` (the stacks a run would score; each with ``problems``, the loading problems predicted from the
    headers). Nothing eligible is no error here: ``chosen`` is empty (``ctscore scan`` exits 2 for it;
    :func:`pipeline.commands.scan.exit_code` gives the CLI's exit code for an inventory, and
    :func:`requested_series_problem` says why a ``series_uid`` was not chosen). Raises CTScoreError
    INPUT_NOT_FOUND for an input that is not there or cannot be listed, ConfigError (BAD_CONFIG) for a bad
    configuration."""
    from pipeline.config import resolve_config

    cfg = resolve_config(cfg)  # as the CLI's load_config: merged over the defaults, unknown keys refused
    all_series = _all_series(all_series, all_eligible)
    with H.repeated_pydicom_messages_once():  # header text is decoded while read, selected and tabled
        return _build_inventory(root, cfg, series_uid, all_series, identifiers)


def _build_inventory(root: str | Path, cfg: dict[str, Any], series_uid: str | None, all_series: bool,
                     identifiers: bool) -> Inventory:
    import pandas as pd

    from pipeline.selection import select_stacks

    records, stacks = discover_records(root, _salt_of(cfg))
    chosen = select_stacks(stacks, cfg, series_uid=series_uid, all_eligible=all_series)
    for c in chosen:
        if "SELECTION_TIE" in c.flags:
            log.warning("stack %s of study %s was taken by a tie-break on its headers, not by stack order: %s (see "
                        "the inventory; --series-uid picks another)", c.stack_id, c.study_key,
                        c.messages.get("SELECTION_TIE", ""))
    by_id = {c.stack_id: stack_row(c, identifiers) for c in stacks}
    cols = STACK_COLUMNS + (IDENTIFYING_COLUMNS if identifiers else [])
    file_rows = []
    for rec in records:
        row = {"path": _printable(str(rec.path)), "file_status": "used" if rec.stack_id else "skipped",
               "file_code": rec.code, "file_detail": _printable(rec.detail)}
        row.update(by_id.get(rec.stack_id, {}))
        if rec.stack_id and by_id[rec.stack_id]["decision"] != "selected":
            row["file_status"] = "not scored"
        file_rows.append(row)
    files_df = pd.DataFrame(file_rows, columns=["path", "file_status", "file_code", "file_detail"] + cols)
    stacks_df = pd.DataFrame([by_id[c.stack_id] for c in stacks], columns=cols)
    for warning in (archives_warning(files_df), hidden_warning(files_df)) if stacks else ():
        if warning:  # series found, others may be inside the archives or the hidden folders
            log.warning("%s", warning)
    return Inventory(files=files_df, stacks=stacks_df, candidates=stacks, chosen=chosen)


def scan_inventory(input: str | Path, cfg: Any = None, series_uid: str | None = None,
                   all_series: bool = False, identifiers: bool = False, *, all_eligible: bool | None = None):
    """Header-only inventory of ``input`` as a DataFrame with one row per file (``ctscore scan``).

    Columns: the file's path, status (used / not scored / skipped) and skip code, then its stack's
    modality, image type, orientation, slice count, thickness, spacing, z coverage, kernel,
    manufacturer/model, transfer syntax, contrast, and the selection decision with its reason.
    Identifying values (patient id, study date) only with ``identifiers=True``.
    """
    return build_inventory(input, cfg, series_uid, _all_series(all_series, all_eligible), identifiers).files


# --- what to tell the user when nothing can be scored ----------------------------------------------

#: Image volume formats that ctscore does not read as input (it reads DICOM series); the suffixes of such files.
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def volume_files(files: Any) -> list[str]:
    """The paths of the per-file table ``files`` (:attr:`Inventory.files`) that are NIfTI/NRRD/MHA volumes."""
    if files is None or not len(files):
        return []
    return [p for p in files["path"].astype(str) if p.lower().endswith(VOLUME_SUFFIXES)]


def volume_hint(files: Any) -> str:
    """A sentence when NIfTI/NRRD/MHA files are among ``files`` (they are skipped as NOT_DICOM); '' when none is."""
    volumes = volume_files(files)
    if not volumes:
        return ""
    some = ", ".join(Path(p).name for p in volumes[:2]) + (", ..." if len(volumes) > 2 else "")
    if len(volumes) == len(files):
        return f"NIfTI/NRRD/MHA files ({some}) are not read: ctscore reads DICOM series; give it the scan's DICOM folder"
    return (f"{len(volumes)} of the {len(files)} files are NIfTI/NRRD/MHA ({some}), not read: ctscore reads DICOM "
            "series")


def _some(paths: list[str], k: int = 2) -> str:
    """The names of the first ``k`` of ``paths``, and ", ..." when there are more."""
    return ", ".join(Path(p).name for p in paths[:k]) + (", ..." if len(paths) > k else "")


def _rows(files: Any, code: str) -> Any:
    if files is None or not len(files) or "file_code" not in files.columns:
        return None
    rows = files[files["file_code"] == code]
    return rows if len(rows) else None


def _archive_groups(files: Any) -> tuple[list[str], list[str]]:
    """The ARCHIVE rows of ``files`` as (archives: zip, tar, 7z, RAR, ISO; compressed single files: IM0001.dcm.gz)."""
    rows = _rows(files, "ARCHIVE")
    if rows is None:
        return [], []
    archives, compressed = [], []
    for path, detail in zip(rows["path"].astype(str), rows["file_detail"].fillna("").astype(str)):
        (compressed if "-compressed" in detail and "tar archive" not in detail else archives).append(path)
    return archives, compressed


def _tools(files: Any) -> str:
    details = " ".join(_rows(files, "ARCHIVE")["file_detail"].fillna("").astype(str))
    return " or ".join(t for k, t in COMPRESSORS.items() if f"{k}-compressed" in details) or "gunzip"


def archive_hint(files: Any) -> str:
    """A sentence when archives or compressed files are among ``files`` (ARCHIVE: not opened); '' when none is."""
    archives, compressed = _archive_groups(files)
    parts = []
    if archives:
        one = len(archives) == 1
        parts.append(f"{len(archives)} archive{'' if one else 's'} ({_some(archives)}) not opened: ctscore reads "
                     f"folders of DICOM files; unpack {'it' if one else 'them'} and give the folder")
    if compressed:
        one = len(compressed) == 1
        parts.append(f"{len(compressed)} compressed file{'' if one else 's'} ({_some(compressed)}) not read: "
                     f"{_tools(files)} {'it' if one else 'them'} first")
    return "; ".join(parts)


def archives_warning(files: Any) -> str:
    """A warning for an input in which series were found but archives or compressed files were not opened (their
    series were not considered); '' when there are none."""
    archives, compressed = _archive_groups(files)
    parts = []
    if archives:
        one = len(archives) == 1
        parts.append(f"{len(archives)} archive{'' if one else 's'} not opened ({_some(archives)}): series inside "
                     f"{'it were' if one else 'them were'} not considered; unpack {'it' if one else 'them'} and run "
                     "again")
    if compressed:
        one = len(compressed) == 1
        parts.append(f"{len(compressed)} compressed file{'' if one else 's'} not read ({_some(compressed)}): "
                     f"{'its' if one else 'their'} images were not considered; {_tools(files)} "
                     f"{'it' if one else 'them'} and run again")
    return "; ".join(parts)


def hidden_hint(files: Any) -> str:
    """A sentence when hidden or system folders below INPUT were not read (HIDDEN_FOLDER); '' when none was."""
    rows = _rows(files, "HIDDEN_FOLDER")
    if rows is None:
        return ""
    paths = list(rows["path"].astype(str))
    one = len(paths) == 1
    return (f"{len(paths)} hidden or system folder{'' if one else 's'} ({_some(paths)}: trash, snapshot, metadata) "
            f"not read: move the series out of {'it' if one else 'them'} to have them considered")


def _held_count(detail: str) -> str:
    """"124 files" (or "1 file", "10000+ files") from a HIDDEN_FOLDER row's detail."""
    n = detail.split("its ", 1)[-1].split(" ", 1)[0]
    return f"{n} file{'' if n == '1' else 's'}"


def hidden_warning(files: Any) -> str:
    """A warning for an input in which series were found beside hidden or system folders that hold files (a trash
    may hold a deleted series of a study: it was not considered); '' when none holds any."""
    rows = _rows(files, "HIDDEN_FOLDER")
    if rows is None:
        return ""
    held = [(p, d) for p, d in zip(rows["path"].astype(str), rows["file_detail"].fillna("").astype(str))
            if "holds no files" not in d]
    if not held:
        return ""
    one = len(held) == 1
    counts = ", ".join(f"{Path(p).name}: {_held_count(d)}" for p, d in held[:2])
    return (f"{len(held)} hidden or system folder{'' if one else 's'} not read ({counts}{', ...' if len(held) > 2 else ''}): "
            f"series inside {'it were' if one else 'them were'} not considered (a trash or a snapshot); move them out "
            "and run again to have them scored")


def _run_folder_input(root: Path) -> str:
    """For a ctscore output folder given as INPUT: the sentence naming the DICOM input of its run; '' otherwise."""
    try:
        entries = list(os.scandir(root))
        dirnames = [e.name for e in entries if e.is_dir()]
        filenames = [e.name for e in entries if not e.is_dir()]
    except OSError:
        return ""
    if not is_run_folder(root, dirnames, filenames):
        return ""
    given = None
    try:
        with open(root / "run.json", "rb") as fh:
            run = json.load(fh)
        given = run.get("input") if isinstance(run, dict) else None
    except (OSError, ValueError):
        pass
    if isinstance(given, str) and given:
        return f"INPUT is a ctscore output folder; its DICOM input was {given}"
    return "INPUT is a ctscore output folder (its run.json does not name the DICOM input): give the DICOM folder"


def _dicomdir_hint(files: Any, root: Path) -> str:
    """For DICOMDIR files among ``files``: how many files each lists and how many of them are under INPUT, when not
    all are ("the DICOMDIR lists 124 images, none found under INPUT: copy the whole disc"); '' otherwise."""
    rows = _rows(files, "DICOMDIR")
    if rows is None:
        return ""
    for path in rows["path"].astype(str):
        try:
            with warnings.catch_warnings():  # a damaged index: pydicom's warnings are not the user's business here
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, force=True, specific_tags=["DirectoryRecordSequence"])
            records = [r for r in ds.get("DirectoryRecordSequence", []) if r.get("ReferencedFileID")]
        except Exception:  # noqa: BLE001 - a damaged index: nothing to say
            continue
        if not records:
            continue
        images = all(str(r.get("DirectoryRecordType", "")).strip().lower() == "image" for r in records)
        found = 0
        for r in records:
            ref = r.ReferencedFileID
            parts = [str(p) for p in ref] if isinstance(ref, (list, tuple, pydicom.multival.MultiValue)) else \
                str(ref).split("\\")
            found += os.path.isfile(os.path.join(os.path.dirname(path), *parts))
        if found < len(records):
            what = f"{len(records)} {'images' if images else 'files'}"
            where = "none" if not found else f"only {found}"
            return f"the DICOMDIR lists {what}, {where} found under INPUT: copy the whole disc, its image folders too"
    return ""


def _file_list(path: Path) -> bool:
    """Whether a file is a list of paths (most of its first lines are existing files or folders)."""
    try:
        with open(path, "rb") as fh:
            lines = [ln.strip().strip('"\'') for ln in fh.read(8192).decode("utf-8", "replace").splitlines()[:20]]
    except OSError:
        return False
    lines = [ln for ln in lines if ln]
    here = path.parent
    found = sum(1 for ln in lines if len(ln) < 1024 and (os.path.exists(ln) or os.path.exists(here / ln)))
    return bool(lines) and found * 2 > len(lines)


def input_hints(files: Any, root: str | Path | None = None, candidates: list[SeriesCandidate] | None = None
                ) -> list[str]:
    """Sentences for an input in which nothing can be scored: NIfTI/NRRD volumes (:func:`volume_hint`), archives
    (:func:`archive_hint`), hidden or system folders (:func:`hidden_hint`) and, with ``root`` (INPUT as given), a
    ctscore output folder given as INPUT, a DICOMDIR whose images are not there, INPUT one file (or a list of files).
    ``candidates``: the stacks found (a multi-frame file is a series of its own: no "one file" hint)."""
    hints = [h for h in (volume_hint(files), archive_hint(files), hidden_hint(files)) if h]
    if root is None:
        return hints
    root = Path(root)
    try:
        if root.is_dir():
            hints += [h for h in (_run_folder_input(root), _dicomdir_hint(files, root)) if h]
        elif root.is_file() and root.name.upper() == "DICOMDIR":
            hints += [h for h in (_dicomdir_hint(files, root.parent),) if h]
        elif root.is_file() and not volume_files(files) and not any(c.info.get("multiframe")
                                                                   for c in candidates or []):
            codes = set() if files is None or not len(files) else set(files["file_code"].fillna("").astype(str))
            if codes <= {"NOT_DICOM"} and _file_list(root):
                hints.append(f"INPUT ({root.name}) is a list of files, which ctscore does not read: put the files in "
                             "one folder (or give their folder)")
            elif "ARCHIVE" not in codes:
                hints.append("INPUT is one file: give the folder of its series")
    except OSError:
        pass
    return hints


def file_summary(files: Any) -> str:
    """What the files of an input without any DICOM image stack are: "4 files, none DICOM", "3 files: NOT_DICOM 2,
    NOT_IMAGE 1", "1 file, an archive", "no files"; and the hidden or system folders not read."""
    n = 0 if files is None else len(files)
    if not n:
        return "no files"
    codes = files["file_code"].fillna("").astype(str).replace("", "kept").value_counts()
    hidden = int(codes.get("HIDDEN_FOLDER", 0))
    codes = codes.drop("HIDDEN_FOLDER", errors="ignore")
    n -= hidden
    s = "s" if n != 1 else ""
    if not n:
        text = "no files"
    elif codes.get("NOT_DICOM", 0) == n:
        text = f"{n} file{s}, none DICOM"
    elif codes.get("ARCHIVE", 0) == n:
        text = f"{n} file{s}, " + ("an archive or compressed file" if n == 1 else "all archives or compressed files")
    else:
        text = f"{n} file{s}: " + ", ".join(f"{k} {v}" for k, v in codes.items())
    if hidden:
        text += f" and {hidden} hidden or system folder{'s' if hidden > 1 else ''} not read"
    return text


def no_stack_sentence(files: Any, root: str | Path | None = None) -> str:
    """One sentence for an input in which no DICOM image stack was found (``ctscore scan`` prints it instead of an
    empty table): how many files, what they are, and the hints of :func:`input_hints` (NIfTI/NRRD volumes, archives,
    hidden folders, and with ``root``, INPUT as given: an output folder, a DICOMDIR without its images, one file)."""
    hints = input_hints(files, root)
    return f"no DICOM image stack found: {file_summary(files)}" + (f" ({'; '.join(hints)})" if hints else "")


def _filter_detail(c: SeriesCandidate, code: str, cfg: dict[str, Any]) -> tuple[str, str]:
    """(what the stack has that the hard filter ``code`` refuses, a setting that lifts it, '' when none does)."""
    sel = cfg.get("selection") or {}
    h, info = c.header, c.info

    if code == "BODY_PART_EXCLUDED":  # the configured list without this body part (matched as selection does)
        part = h.get("body_part", "")
        kept = [v.strip() for v in str(sel.get("exclude_body_parts", "")).split(",")
                if v.strip() and v.strip().upper() != part.upper()]
        return f"BodyPartExamined {part}", f'--set selection.exclude_body_parts="{",".join(kept)}"'
    if code == "TOO_FEW_SLICES":
        return (f"{info.get('n_slices', len(c.files))} slices, selection.min_slices {sel.get('min_slices')}",
                f"--set selection.min_slices={info.get('n_slices', len(c.files))}")
    if code == "TOO_THICK":
        t = h.get("slice_thickness")
        return (f"{t:g} mm slices, selection.max_slice_thickness_mm {sel.get('max_slice_thickness_mm')}",
                f"--set selection.max_slice_thickness_mm={t:g}") if t else ("", "")
    if code == "NOT_AXIAL":
        return (f"{info.get('axial_angle_deg')} deg from axial, selection.max_axial_angle_deg "
                f"{sel.get('max_axial_angle_deg')}", "")
    if code == "NOT_CT":
        return f"Modality {h.get('modality') or '(none)'}, selection.modalities {sel.get('modalities')}", ""
    if code in ("LOCALIZER", "DERIVED_REFORMAT"):
        return f"ImageType {h.get('image_type') or '(none)'}", ""
    if code == "NOT_MONOCHROME":
        return f"PhotometricInterpretation {h.get('photometric')}", ""
    if code == "NOT_A_VOLUME":
        return c.messages.get("NOT_A_VOLUME", ""), ""
    return "", ""


def requested_series_problem(candidates: list[SeriesCandidate], series_uid: str, cfg: Any = None) -> str:
    """Why the series (or stack id) ``series_uid`` given with ``--series-uid`` is not scored: not found under the
    input, or each of its stacks with the hard filter that refused it (code, meaning, the value refused and the
    remedy of :mod:`pipeline.dicom_codes`). '' when one of its stacks was selected."""
    from pipeline.config import resolve_config
    from pipeline.dicom_codes import CODES

    cfg = resolve_config(cfg)
    mine = [c for c in candidates if series_uid in (c.series_uid, c.stack_id)]
    if not mine:
        n = len(candidates)
        listed = (f"; it holds {n} stack(s), their series_uid and stack_id in full in `ctscore scan INPUT --stacks "
                  "stacks.csv`") if n else "; it holds no DICOM image stack"
        return f"--series-uid {series_uid}: no series or stack with this SeriesInstanceUID or stack id under the " \
               f"input{listed}"
    if any(c.decision == "selected" for c in mine):
        return ""
    parts = []
    for c in mine:
        code = (c.reason or "").split(" ", 1)[0].split(":", 1)[0]
        known = CODES.get(code)
        detail, setting = _filter_detail(c, code, cfg)
        text = f"{code}: {known.meaning if known else c.reason}"
        if detail:
            text += f" (here {detail})"
        if known and known.what_to_do:
            text += f"; what to do: {known.what_to_do}"
        if setting:
            text += f", e.g. {setting}"
        parts.append(text if len(mine) == 1 else f"stack {c.stack_id}: {text}")
    which = "its stack is" if len(mine) == 1 else f"each of its {len(mine)} stacks is"
    return (f"--series-uid {series_uid}: {which} refused by a hard filter (--series-uid chooses among the eligible "
            f"stacks; it does not lift the hard filters of selection:): " + "; ".join(parts))
