"""Load one CT stack into a :class:`~pipeline.volume.CTVolume` in Hounsfield units.

Steps, each with a named refusal (:class:`~pipeline.errors.SeriesError`) or QC flag
(``CTVolume.flags``; see :mod:`pipeline.dicom_codes` and docs/dicom_input.md):

1. read every file (pixels kept encoded), drop repeated SOPInstanceUIDs, check the header values
   loading needs (geometry, matrix, photometric interpretation), classic and enhanced multi-frame;
2. check the declared size against ``loading.max_voxels`` / ``max_memory_mb`` before allocating;
3. sort along the slice normal (never by InstanceNumber or file name) and judge duplicates, gaps,
   spacing and gantry tilt (:func:`pipeline.geometry.analyse_stack`);
4. decode (:mod:`pipeline.decoding`), invert MONOCHROME1, apply each slice's own rescale in float;
5. resolve duplicate positions (identical pixels: keep one; else refuse), shear a tilted stack onto an
   orthogonal grid, resample non-uniform spacing;
6. mark padding connected to the image border as outside the body; check that values are HU (refused when
   much of the body holds padding values, as stored values misread through a wrong PixelRepresentation do).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk

from pipeline import headers as H
from pipeline.decoding import decode_frames, is_lossy, transfer_syntax_of
from pipeline.errors import SeriesError
from pipeline.geometry import (
    ORIENTATION_TOLERANCE,
    PIXEL_SPACING_TOLERANCE,
    POSITION_ROUNDING_MM,
    SAME_POSITION_TOLERANCE_MM,
    TILT_NOTE_DEG,
    TILT_TOLERANCE_DEG,
    SamePositionIndex,
    StackGeometry,
    analyse_stack,
    in_plane_offsets,
    resample_along_normal,
    same_orientation,
    shear_to_orthogonal,
)
from pipeline.inventory import (
    DICOM_EXTENSIONS,
    archive_detail,
    compressed_slice,
    dcmread_as_inventory,
    has_dicm_preamble,
    read_file,
    same_pixel_groups,
    summarize,
    syntax_rank,
    unpacked_name,
)
from pipeline.volume import CTVolume

log = logging.getLogger(__name__)

#: HU written where a voxel is padding (outside the field of view); the padding mask says which.
AIR_HU = -1000.0
#: Lowest physical CT value; padding-valued pixels inside the body are clipped to it.
MIN_PHYSICAL_HU = -1024.0
#: Working memory per voxel of a scan (float32 HU, raw values while loading, masks and classes on the CT's grid):
#: a generated 512 x 512 x 600 series peaked at 2952 MiB with the network, about 1 GiB of program
#: (:data:`PROGRAM_MB`) plus 13 bytes per voxel (``scripts/benchmark.py --generated 600``).
WORKING_BYTES_PER_VOXEL = 14
#: Memory of the program itself (Python, PyTorch and the model, SimpleITK), before any series.
PROGRAM_MB = 1024.0
#: Working memory per voxel that writing seg.dcm adds (``outputs.write_dicom_seg``): a margin; the same generated
#: series peaked at 2802 MiB with it (it needs about 5 bytes per voxel, after scoring's arrays are freed).
DICOM_SEG_BYTES_PER_VOXEL = 2


def estimated_peak_mb(voxels: int, dicom_seg: bool = False) -> float:
    """The peak memory of scoring a series of ``voxels`` voxels, estimated (MB)."""
    per_voxel = WORKING_BYTES_PER_VOXEL + (DICOM_SEG_BYTES_PER_VOXEL if dicom_seg else 0)
    return PROGRAM_MB + voxels * per_voxel / 2**20
#: PIXEL_SPACING_TOLERANCE (pipeline.geometry): the relative difference of PixelSpacing between slices that is still
#: "the same", for the loader and the inventory's grouping alike.
#: Percentile of the non-padding voxels that must look like air (see loading.air_hu_range).
AIR_PERCENTILE = 0.5
#: When the AIR_PERCENTILE-th percentile lies above the air range (airless lungs in a field of view the body fills:
#: only the airway holds air, 0.14-0.41 % of the voxels on three real chests made airless, an endotracheal tube's
#: lumen alone 0.03 %), this percentile must be air and at least that share of the non-padding voxels must be air
#: in connected regions (the airway, AIR_REGION_MIN_VOXELS), not scattered low values; wrong rescales, label and
#: parametric maps hold none.
AIR_MIN_PERCENTILE = 0.02
#: The smallest connected region of air (voxels of the subsampled grid of :func:`_check_hu`, a 3 x 3 patch) that
#: counts towards AIR_MIN_PERCENTILE: an endotracheal tube's lumen, cut into pieces across slices, is 10-20 such
#: regions on two real chests made airless; single low voxels (noise, outliers) are not air evidence.
AIR_REGION_MIN_VOXELS = 9
#: Padding is one written value: border-connected values within this many HU of their most common value (the
#: MONOCHROME1 vote, :func:`_constant_padding`; the air check, :func:`_constant_border`).
PADDING_CONSTANT_HU = 2.0
#: The share of a slice's border-connected values at or below ``loading.padding_hu_max`` that must lie within
#: PADDING_CONSTANT_HU of their most common value for all of them to be padding in the MONOCHROME1 vote (a body read
#: inverted that touches the border: a few % to a quarter at one value, with the tissue's noise; the lossy padding of
#: dicom_edge/transfer_syntaxes: 98.9-100 %).
PADDING_CONSTANT_SHARE = 0.5
#: A slice with a rescale of its own is refused when its median lies more than RESCALE_OUTLIER_HU from its
#: neighbours' and the series' usual rescale would bring it within RESCALE_MATCH_HU of them.
RESCALE_OUTLIER_HU = 300.0
RESCALE_MATCH_HU = 100.0
#: Values (HU, after each slice's own rescale) a CT slice can hold: CT numbers reach about +30700 on
#: the extended CT scale (+32767 is the top of a signed 16-bit value with slope 1); padding reaches
#: down to a 16-bit minimum shifted by an intercept (-32768 - 32768). Outside: HU_OUT_OF_RANGE.
PLAUSIBLE_HU_RANGE = (-65536.0, 32767.0)
#: Voxels above this (HU) count as body (soft tissue, fat, bone) for :data:`PADDING_IN_BODY_MAX_SHARE`.
BODY_HU = -500.0
#: Largest share of the body (voxels above BODY_HU, plus the padding-valued ones counted as body) that may hold values
#: at or below ``loading.padding_hu_max`` (see :func:`_check_padding_in_body`); more is refused (NOT_HU). Real padding
#: lies outside the body: on every real series of ../shared/data (chest/, dicom_edge/, cip_copdgene/,
#: totalsegmentator_example/; padding -2048, -3024, -32768 and PixelPaddingValue) and on sample_dicoms the share is 0
#: (not one such voxel), while unsigned stored values (HU + 32768) read through PixelRepresentation 1 make every voxel
#: at or above 0 HU "padding": 58% of the body of the sample phantom, 15% of it enclosed by the body when the body
#: touches the image border (the rest connected to the border, counted only through its reading as unsigned).
PADDING_IN_BODY_MAX_SHARE = 0.05
#: Values (HU) a misread slice would hold if its stored values were read with the other PixelRepresentation: the
#: range of 12-bit CT (air to dense bone), for the hint that names PixelRepresentation.
TISSUE_HU_RANGE = (-1024.0, 3071.0)


@dataclass
class LoadOptions:
    """The ``loading:`` config section."""

    allow_gaps: bool = False
    max_gap_ratio: float = 1.5
    spacing_tolerance: float = 0.1
    allow_lossy: bool = True
    max_voxels: int = 1_000_000_000
    max_memory_mb: float = 8192.0
    air_hu_range: tuple[float, float] = (-1200.0, -800.0)
    padding_hu_max: float = -1500.0
    verify_compressed: bool = True

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> LoadOptions:
        if not cfg or "loading" not in cfg:
            from pipeline.config import default_config

            cfg = default_config()
        d = cfg["loading"]
        return cls(bool(d["allow_gaps"]), float(d["max_gap_ratio"]), float(d["spacing_tolerance"]),
                   bool(d["allow_lossy"]), int(d["max_voxels"]), float(d["max_memory_mb"]),
                   (float(d["air_hu_range"][0]), float(d["air_hu_range"][1])), float(d["padding_hu_max"]),
                   bool(d.get("verify_compressed", True)))


@dataclass
class _File:
    path: Path
    ds: pydicom.Dataset
    frames: list[H.FrameInfo]
    rows: int
    cols: int


def _add(flags: list[str], code: str) -> None:
    if code not in flags:
        flags.append(code)


#: File name endings read as a DICOM file's extension (any other ending, e.g. the last part of a UID-named file, is
#: none).
_DICOM_EXTENSIONS = DICOM_EXTENSIONS


def _name_shape(name: str) -> tuple[str, bool]:
    """A file name's DICOM extension ('' for none) and whether it starts with a digit; one compression suffix
    (``IM0001.dcm.gz``) is read through."""
    name = unpacked_name(name)
    ext = Path(name).suffix.lower()
    return (ext if ext in _DICOM_EXTENSIONS else ""), name[:1].isdigit()


def _named_like(names: set[str]):
    """A test of whether a file name (not one of ``names``, the series' own in a folder) is named like them: the same
    DICOM extension (or none), and their common leading letters (``IM``, ``s``) or, for names without (UIDs), a
    leading digit; hidden files are not."""
    shapes = {_name_shape(n) for n in names}
    letters = re.match(r"\D*", os.path.commonprefix(sorted(names))).group(0)

    def like(name: str) -> bool:
        return (name not in names and not name.startswith(".") and _name_shape(name) in shapes
                and (not letters or name.startswith(letters)))

    return like


#: How many bytes of a file :func:`_starts_like` compares: the preamble and "DICM" (or the first elements of a
#: file without them).
_HEAD_BYTES = 132


def _head(path: str | Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(_HEAD_BYTES)
    except OSError:
        return b""


def _common_start(paths: Sequence[str | Path]) -> bytes:
    """The bytes the series' own files in one folder begin with alike (two of them: the first and the last named)."""
    ordered = sorted(str(p) for p in paths)
    return os.path.commonprefix([_head(ordered[0]), _head(ordered[-1])])


def _starts_like(head: bytes, common: bytes) -> bool:
    """Whether a file beginning with ``head`` begins as the series' own files do (``common``, :func:`_common_start`):
    a slice cut inside its preamble (a prefix of it), or one whose preamble is there and the rest damaged (the first
    128 bytes compared; at least 8 of them, or all the file has). A text
    file, a JSON file, a JPEG or PNG picture do not."""
    k = min(len(head), len(common), 128)  # the preamble: what follows it may be damaged
    return k > 0 and head[:k] == common[:k] and (k >= 8 or k == len(head))


def _cut_slice(path: Path, rec: Any, size: int, head: bytes, common: bytes, series: set[str], sops: set[str]) -> str:
    """Why a file beside a series, named like its own files, looks like a slice of it cut short (truncated before its
    pixel data: no series UID, or no DICM preamble, or no readable header), ``""`` when it does not (an image of
    another series, a copy of one of the series' slices, a valid file without pixels, a file of another kind). ``rec``:
    the file as the inventory reads it (:func:`pipeline.inventory.read_file`)."""
    if rec.ds is not None:
        if rec.code != "CORRUPT_FILE":
            return ""
        uid, sop = H.text(rec.ds, "SeriesInstanceUID"), H.text(rec.ds, "SOPInstanceUID")
        if (uid and uid not in series) or (sop and sop in sops):
            return ""  # another series' damaged file, or a damaged copy of a slice the series has
        return f"truncated, {size} bytes" + ("" if uid else ", no series UID")
    if rec.code not in ("NOT_DICOM", "UNREADABLE_FILE", "NOT_IMAGE") or size == 0 or not _starts_like(head, common):
        return ""
    if rec.code == "NOT_IMAGE":  # read whole but without pixel data: cut short only when it is no dataset of its own
        if rec.detail != "no pixel data":
            return ""
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception:  # noqa: BLE001 - a damaged header
            ds = None
        if ds is not None and (H.text(ds, "SeriesInstanceUID") or H.text(ds, "SOPClassUID")):
            return ""
        return f"truncated, {size} bytes, no image header"
    if rec.code == "NOT_DICOM":
        return f"truncated or damaged, {size} bytes, no DICM preamble"
    return f"truncated or damaged, {size} bytes, header unreadable"


def _header_bytes(it: _File) -> int:
    """About how many bytes of a slice's file come before its pixel data (its size where that is not known)."""
    try:
        size = it.path.stat().st_size
    except OSError:
        return 0
    for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if kw in it.ds:
            try:
                return max(size - len(it.ds[kw].value), 0)
            except TypeError:  # not read (deferred)
                return size
    return size


def _unreadable_beside(items: list[_File]) -> list[str]:
    """The files in the series' folders, not among its own, that cannot be opened (no permission), are empty (still
    being copied), or are cut short before their pixel data (truncated inside their header, before the series UID a
    reader could place them by, or inside their preamble: :func:`_cut_slice`), each as "name (why)", among those
    named like the series' own files (:func:`_named_like`); hidden files and others (a ``TRANSFER_COMPLETE`` marker, a
    ``.txt``) are left alone, and so are files that begin otherwise than the series' own (a text, JSON or picture
    file named like them). A series whose end slices are such files is whole to the geometry checks (no gap shows):
    only this says it may be short (a slice cut to 600 bytes at the top of a 50-slice series was scored from 49 with
    no flag, an audit 2026-12-07). One open and 132 bytes a file; a header read only for files no longer than a
    slice's header."""
    own: dict[Path, set[str]] = {}
    for it in items:
        own.setdefault(it.path.parent, set()).add(it.path.name)
    series = {H.text(it.ds, "SeriesInstanceUID") for it in items} - {""}
    sops = {H.text(it.ds, "SOPInstanceUID") for it in items} - {""}
    header_limit = 2 * max((_header_bytes(it) for it in items[:3]), default=0) + 4096
    found = []
    for folder, names in sorted(own.items()):
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        like = _named_like(names)
        common = None
        for e in entries:
            if not like(e.name):
                continue
            try:
                if not e.is_file():
                    continue
                size = e.stat().st_size
                if size == 0:
                    found.append(f"{e.name} (empty)")
                    continue
                with open(e.path, "rb") as fh:
                    head = fh.read(_HEAD_BYTES)
                    packed = archive_detail(fh, e.name) if not has_dicm_preamble(head) else None
            except OSError as exc:
                found.append(f"{e.name} ({exc.strerror or type(exc).__name__})")
                continue
            if packed:  # IM0001.dcm.gz: a slice left compressed (ARCHIVE), of any size; not a zip or tar beside it
                if compressed_slice(e.name, packed):
                    found.append(f"{e.name} ({packed.split(':', 1)[0]})")
                continue
            if size > header_limit:
                continue  # as long as a whole slice's header: no slice cut before its series UID
            if common is None:
                common = _common_start([folder / n for n in names])
            why = _cut_slice(Path(e.path), read_file(Path(e.path)), size, head, common, series, sops)
            if why:
                found.append(f"{e.name} ({why})")
    return found


def _read(path: Path) -> pydicom.Dataset:
    """Read a file as the inventory does (without a DICM preamble too; see ``dcmread_as_inventory``)."""
    try:
        return dcmread_as_inventory(path)
    except MemoryError as exc:
        raise SeriesError("TOO_LARGE", "not enough memory to read the file", path) from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for broken files
        raise SeriesError("CORRUPT_FILE", f"cannot read DICOM file: {type(exc).__name__}: {exc}"[:300], path) from exc


def _lost_to_truncation(ds: pydicom.Dataset, path: Path) -> str:
    """Why a dataset read without pixel data is a damaged file ('' when it simply has none).

    When a file ends inside an element of undefined length (encapsulated pixel data, a sequence),
    pydicom warns and drops what it was reading, often the whole dataset; the header read alone
    (:func:`pipeline.inventory.read_file`) still sees the pixel data element.
    """
    if len(ds) == 0:
        return "no data element could be read: the file is truncated or damaged"
    rec = read_file(path)
    if rec.code not in ("NOT_DICOM", "UNREADABLE_FILE") and rec.has_pixels:
        return "the header declares pixel data, but the file ends before they do (truncated or damaged)"
    if rec.code == "CORRUPT_FILE":  # an image without pixel data: cut off before them
        return rec.detail
    return ""


def _check_image_header(ds: pydicom.Dataset, path: Path) -> tuple[int, int]:
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        damaged = _lost_to_truncation(ds, path)
        if damaged:
            raise SeriesError("CORRUPT_FILE", damaged, path)
        raise SeriesError("NO_PIXEL_DATA", "the file has no pixel data", path)
    photometric = H.text(ds, "PhotometricInterpretation").upper()
    samples = H.integer(ds, "SamplesPerPixel", 1)
    if photometric not in ("MONOCHROME1", "MONOCHROME2", "") or samples != 1:
        raise SeriesError("NOT_MONOCHROME", f"photometric interpretation {photometric or '?'} with {samples} "
                          "samples per pixel is not a CT image", path)
    rows, cols = H.integer(ds, "Rows", None), H.integer(ds, "Columns", None)
    bits = H.integer(ds, "BitsAllocated", None)
    if rows is None or cols is None or not (1 <= rows <= H.MAX_DIMENSION and 1 <= cols <= H.MAX_DIMENSION):
        raise SeriesError("BAD_HEADER_VALUE", f"Rows/Columns are {H.text(ds, 'Rows')!r}/{H.text(ds, 'Columns')!r}",
                          path)
    if bits not in (8, 16, 32, 64):
        raise SeriesError("BAD_HEADER_VALUE", f"BitsAllocated is {H.text(ds, 'BitsAllocated')!r}", path)
    stored = H.integer(ds, "BitsStored", bits)
    if stored is None or not 1 <= stored <= bits:
        raise SeriesError("BAD_HEADER_VALUE", f"BitsStored is {H.text(ds, 'BitsStored')!r}", path)
    return rows, cols


def _truncated(ds: pydicom.Dataset) -> bool:
    """Native pixel data shorter than the header declares (a file cut off in them); encapsulated data: not told."""
    if "PixelData" not in ds or pydicom.uid.UID(transfer_syntax_of(ds) or "1.2.840.10008.1.2").is_encapsulated:
        return False
    rows, cols = H.integer(ds, "Rows", 0) or 0, H.integer(ds, "Columns", 0) or 0
    frames, bits = H.integer(ds, "NumberOfFrames", 1) or 1, H.integer(ds, "BitsAllocated", 16) or 16
    return len(ds.PixelData) < (rows * cols * frames * bits + 7) // 8


def _copy_rank(it: _File) -> tuple:
    """Which of two copies of one instance is kept (the lower; the earlier file on a tie): a complete one before a
    truncated one, lossless before lossy, uncompressed before compressed, as the inventory prefers them."""
    return _truncated(it.ds), is_lossy(it.ds), syntax_rank(it.ds)


def _read_files(files: Sequence[Path], flags: list[str]) -> list[_File]:
    """Read every file; a file repeating an earlier one's SOPInstanceUID is a copy (one of them dropped:
    DUPLICATE_SOP_INSTANCE) only at the same position with the same pixels, judged as the inventory judges them
    (:func:`pipeline.inventory.same_pixel_groups`: encoded bytes, decoded values across transfer syntaxes; a
    truncated or lossy copy of a complete lossless one is a copy); kept is the one :func:`_copy_rank` prefers. At
    another position it is a slice of its own (kept: SOP_UID_REUSED); at the same position with other pixels both
    are kept, for the duplicate-position step to judge on the decoded pixels (identical: one kept; else
    DUPLICATE_POSITION naming both). Positions are looked up by bucket (:class:`SamePositionIndex`), not compared
    with every earlier file's."""
    out: list[_File] = []
    seen: dict[str, SamePositionIndex] = {}  # UID -> the indices into ``out`` of its files, by position
    first: dict[str, _File] = {}
    digests: dict = {}
    for f in files:
        ds = _read(f)
        sop = H.text(ds, "SOPInstanceUID")
        rows, cols = _check_image_header(ds, f)
        item = _File(f, ds, H.frames_of(ds, f), rows, cols)
        if sop and sop in seen:
            same = seen[sop].near(item.frames[0].ipp)
            if same:
                group = [out[k] for k in same] + [item]
                pixels = same_pixel_groups([(it.ds, it.path, _truncated(it.ds)) for it in group],
                                           lambda i, group=group: group[i].ds, digests)
                twins = [i for g in pixels if len(same) in g for i in g if i != len(same)]
                if twins:
                    k = same[twins[0]]
                    _add(flags, "DUPLICATE_SOP_INSTANCE")
                    if _copy_rank(item) < _copy_rank(out[k]):
                        log.info("%s repeats SOPInstanceUID %s of %s: kept instead of it", f, sop, out[k].path)
                        out[k] = item
                    else:
                        log.info("%s repeats SOPInstanceUID %s: ignored", f, sop)
                    continue
            else:
                _add(flags, "SOP_UID_REUSED")
                log.warning("%s repeats SOPInstanceUID %s of %s at another position: kept as a slice of its own", f,
                            sop, first[sop].path.name)
        seen.setdefault(sop, SamePositionIndex()).add(item.frames[0].ipp, len(out))
        first.setdefault(sop, item)
        out.append(item)
    return out


def _frame_of(it: _File, fr: H.FrameInfo) -> str:
    """' (frame 11)' for a frame of a multi-frame file ('' for a single-frame file): which frame a message means."""
    return f" (frame {fr.frame + 1})" if len(it.frames) > 1 else ""


def _check_consistency(items: list[_File]) -> None:
    ref = items[0]
    ref_frame = ref.frames[0]
    for it in items:
        if (it.rows, it.cols) != (ref.rows, ref.cols):
            raise SeriesError("INCONSISTENT_GEOMETRY", f"matrix {it.rows}x{it.cols} differs from "
                              f"{ref.rows}x{ref.cols} of {ref.path.name}", it.path)
        for fr in it.frames:
            if not same_orientation(fr.iop, ref_frame.iop, ORIENTATION_TOLERANCE):
                raise SeriesError("INCONSISTENT_ORIENTATION", f"orientation {_fmt(fr.iop)}{_frame_of(it, fr)} "
                                  f"differs from {_fmt(ref_frame.iop)} of {_slice_name(ref, ref_frame)} (tolerance "
                                  f"{ORIENTATION_TOLERANCE:g})", it.path)
            if np.any(np.abs(fr.spacing - ref_frame.spacing) > PIXEL_SPACING_TOLERANCE * ref_frame.spacing):
                raise SeriesError("INCONSISTENT_GEOMETRY", f"pixel spacing {_fmt(fr.spacing)}{_frame_of(it, fr)} "
                                  f"differs from {_fmt(ref_frame.spacing)} of {_slice_name(ref, ref_frame)}", it.path)
            if fr.frame_of_reference != ref_frame.frame_of_reference:
                raise SeriesError("INCONSISTENT_FRAME_OF_REFERENCE", "slices have different FrameOfReferenceUIDs",
                                  it.path)


def too_large(n: int, rows: int, cols: int, max_voxels: int, max_memory_mb: float) -> str | None:
    """Why a stack of ``n`` slices of ``rows`` x ``cols`` is TOO_LARGE under ``loading.max_voxels`` and
    ``loading.max_memory_mb`` (None when it is not): the rule of the loader and of selection's prediction."""
    voxels = int(n) * int(rows) * int(cols)
    mb = voxels * WORKING_BYTES_PER_VOXEL / 2**20
    if voxels > max_voxels or mb > max_memory_mb:
        return (f"{n} x {rows} x {cols} = {voxels} voxels (about {mb:.0f} MB to load) exceeds "
                f"loading.max_voxels={max_voxels} or max_memory_mb={max_memory_mb:g}")
    return None


def _check_size(n: int, rows: int, cols: int, opts: LoadOptions, path: Path) -> None:
    why = too_large(n, rows, cols, opts.max_voxels, opts.max_memory_mb)
    if why:
        raise SeriesError("TOO_LARGE", why, path)


def _fmt(values) -> str:
    """Header numbers for a message: '[1, 0, 0, 0, 0.9997, -0.0262]' (no numpy reprs)."""
    return "[" + ", ".join(f"{round(float(v), 4):g}" for v in values) + "]"


def _slice_name(it: _File, fr: H.FrameInfo) -> str:
    return f"{it.path.name} (frame {fr.frame + 1})" if len(it.frames) > 1 else it.path.name


def _gap_neighbours(geo: StackGeometry, frames: list[tuple[_File, H.FrameInfo]], gap: int = 0) -> str:
    """'between A and B': the slices on either side of missing-slice gap number ``gap`` (frames sorted);
    frames of one multi-frame file are named by their frame numbers."""
    k = int(geo.gap_after[gap])
    below = int(np.searchsorted(geo.positions, geo.unique_positions[k], side="right")) - 1
    above = min(below + 1, len(frames) - 1)
    (it_a, fr_a), (it_b, fr_b) = frames[below], frames[above]
    if it_a.path == it_b.path and len(it_a.frames) > 1:
        return f"between frames {fr_a.frame + 1} and {fr_b.frame + 1} of {it_a.path.name}"
    return f"between {_slice_name(it_a, fr_a)} and {_slice_name(it_b, fr_b)}"


def _unplaced_slice(items: list[_File], geo: StackGeometry,
                    suspects: list[str] | None = None) -> tuple[SeriesError, int] | None:
    """The refusal of a file of the stack's series that the inventory left out of the stack although it
    belongs in one of its gaps, with the index of that gap (None when there is none):

    - no usable position, orientation or pixel spacing (same matrix): MISSING_GEOMETRY;
    - an image cut off before its pixel data and without usable geometry: CORRUPT_FILE;
    - positioned inside a gap, but with another orientation (INCONSISTENT_ORIENTATION), pixel spacing
      or matrix (INCONSISTENT_GEOMETRY), or truncated (CORRUPT_FILE).

    The inventory puts such a file in a stack of its own (or skips it), so the stack it belongs to shows a
    gap where the file should be: the file, not the gap, is what to report. Header reads, on the
    refusal path only. Files split off for other reasons (another acquisition, kernel or image type)
    are not this stack's slices and are left alone. Truncated files whose series cannot be read are
    named in ``suspects`` (when given): they may be the missing slices.
    """
    given = {it.path.resolve() for it in items}
    series = {H.text(it.ds, "SeriesInstanceUID") for it in items}
    matrix = (items[0].rows, items[0].cols)
    ref = items[0].frames[0]
    gaps = [(geo.unique_positions[k], geo.unique_positions[k + 1]) for k in geo.gap_after]

    def gap_of(ipp: np.ndarray) -> int | None:
        p = float(ipp @ geo.normal)
        for g, (lo, hi) in enumerate(gaps):
            if lo + SAME_POSITION_TOLERANCE_MM < p < hi - SAME_POSITION_TOLERANCE_MM:
                return g
        return None

    sops = {H.text(it.ds, "SOPInstanceUID") for it in items} - {""}
    for folder in sorted({it.path.parent for it in items}):
        try:
            siblings = sorted(p for p in folder.iterdir() if p.is_file() and p.resolve() not in given)
        except OSError:
            continue
        own = [it.path for it in items if it.path.parent == folder]
        like, common = _named_like({p.name for p in own}), None
        for path in siblings:
            rec = read_file(path)
            ds = rec.ds  # None for files the inventory skips
            if ds is not None and rec.code == "CORRUPT_FILE" and not H.text(ds, "SeriesInstanceUID"):
                if suspects is not None:
                    suspects.append(path.name)
                continue
            if ds is None and suspects is not None and (rec.code == "UNREADABLE_FILE" or rec.detail.startswith("empty")):
                suspects.append(f"{path.name} ({rec.detail})")  # no permission, or still being copied (0 bytes)
                continue
            if ds is None and suspects is not None and rec.code == "ARCHIVE" and like(path.name) and compressed_slice(
                    path.name, rec.detail):
                suspects.append(f"{path.name} ({rec.detail.split(':', 1)[0]})")  # a slice left compressed
                continue
            if ds is None and suspects is not None and rec.code in ("NOT_DICOM", "NOT_IMAGE") and like(path.name):
                # a slice cut inside its preamble (to 100 bytes), or replaced by junk after it: named like the
                # series' own and beginning as they do (a notes.txt or a picture does not)
                common = _common_start(own) if common is None else common
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                why = _cut_slice(path, rec, size, _head(path), common, series, sops)
                if why:
                    suspects.append(f"{path.name} ({why})")
                continue
            if ds is None or H.text(ds, "SeriesInstanceUID") not in series or "LOCALIZER" in H.image_type(ds):
                continue
            same_matrix = (H.integer(ds, "Rows", 0), H.integer(ds, "Columns", 0)) == matrix
            truncated = rec.code == "CORRUPT_FILE"
            try:
                placed = H.frames_of(ds, path)
            except SeriesError as exc:
                if exc.code == "MISSING_GEOMETRY" and (same_matrix or truncated):
                    return (SeriesError("CORRUPT_FILE", rec.detail, path) if truncated else exc), 0
                continue
            gap = next((g for g in (gap_of(fr.ipp) for fr in placed) if g is not None), None)
            if gap is None:
                continue
            fr = placed[0]
            if not same_orientation(fr.iop, ref.iop, ORIENTATION_TOLERANCE):
                why = ("INCONSISTENT_ORIENTATION", f"orientation {_fmt(fr.iop)} differs from {_fmt(ref.iop)} of the "
                       "other slices")
            elif np.any(np.abs(fr.spacing - ref.spacing) > PIXEL_SPACING_TOLERANCE * ref.spacing):
                why = ("INCONSISTENT_GEOMETRY", f"pixel spacing {_fmt(fr.spacing)} differs from {_fmt(ref.spacing)} "
                       "of the other slices")
            elif not same_matrix:
                why = ("INCONSISTENT_GEOMETRY", f"matrix {H.integer(ds, 'Rows', 0)}x{H.integer(ds, 'Columns', 0)} "
                       f"differs from {matrix[0]}x{matrix[1]} of the other slices")
            elif truncated:
                why = ("CORRUPT_FILE", rec.detail)
            else:
                continue
            return SeriesError(why[0], why[1], path), gap
    return None


def _air_ok(values: np.ndarray, padmask: np.ndarray | None, opts: LoadOptions) -> bool:
    """Whether the darkest values of a slice are air (:func:`_air_found`, the test of :func:`_check_hu`), among the
    values neither marked padding (PixelPaddingValue) nor at or below
    ``loading.padding_hu_max`` at one value (:func:`_constant_padding`) connected to the image border (padding around
    the field of view); subsampled. A body read through the wrong convention (about -2089 HU for soft tissue) that
    fills the field of view touches the border too, but spans its tissues' values: it is not taken for padding."""
    step = max(1, int(round((values.shape[0] * values.shape[1] / 65536) ** 0.5)))
    v = values[::step, ::step]
    drop = _constant_padding(v, opts)
    if padmask is not None:
        drop = drop | padmask[::step, ::step]
    return _air_found(v, drop, opts)[0]


def _constant_padding(v: np.ndarray, opts: LoadOptions) -> np.ndarray:
    """Padding around the field of view in one slice ``v``: values at or below ``loading.padding_hu_max`` connected to
    the image border, when most of them (:data:`PADDING_CONSTANT_SHARE`) lie within :data:`PADDING_CONSTANT_HU` of
    their most common value (padding is one written value; a lossy codec leaves it near that value, off it at the
    padding's edge). Otherwise (a body read through the wrong MONOCHROME1 convention, about -2089 HU for soft
    tissue, that touches the border: it spans its tissues' values) only the values at that one value connected to the
    border, and the low values up to 4 pixels of the grid given from them (a ring of padding beside that body)."""
    low = v <= opts.padding_hu_max
    if not low.any():
        return low
    border = _border_connected(low[None])[0]
    if not border.any():
        return border
    u, c = np.unique(np.round(v[border]), return_counts=True)
    const = border & (np.abs(v - u[np.argmax(c)]) <= PADDING_CONSTANT_HU)
    if np.count_nonzero(const) >= PADDING_CONSTANT_SHARE * np.count_nonzero(border):
        return border
    drop = _border_connected(const[None])[0]
    if drop.any():
        from scipy import ndimage

        drop |= ndimage.binary_dilation(drop, np.ones((3, 3), bool), iterations=4) & low
    return drop


def _inverted_hu(values: np.ndarray, fr: H.FrameInfo, ds: pydicom.Dataset) -> np.ndarray:
    """The HU of a slice's stored values inverted (MONOCHROME1 written inverted), from its HU read as stored:
    (top - stored) x slope + intercept, top = -1 (signed) or 2**BitsStored - 1 (unsigned)."""
    signed = H.integer(ds, "PixelRepresentation", 0) == 1
    bits = H.integer(ds, "BitsStored", 16) or 16
    top = -1.0 if signed else float(2**bits - 1)
    return (np.float64(top * fr.slope + 2.0 * fr.intercept) - values.astype(np.float64)).astype(np.float32)


def _stored_value(value: float, ds: pydicom.Dataset) -> tuple[int, bool] | None:
    """A PixelPaddingValue (or PixelPaddingRangeLimit) as the decoded pixels hold it: reduced to BitsStored bits as
    the pixels are (``value & (2**BitsStored - 1)``), sign-extended under PixelRepresentation 1, so that the bit
    pattern is compared (a PixelPaddingValue written as SS -2000 under PixelRepresentation 0 is the word 63536); and
    whether bits were lost (the value does not fit BitsStored bits: 63536 or -3024 with BitsStored 12). None for a
    value that is not a whole number."""
    if value != int(value):
        return None
    v = int(value)
    pr, bits = _representation(ds)
    mask = (1 << bits) - 1
    out = v & mask
    if pr == 1 and out >= 1 << (bits - 1):
        out -= 1 << bits
    lost = not (-(1 << (bits - 1)) <= v <= mask)
    return out, lost


def _padding_value_mask(raw: np.ndarray, ds: pydicom.Dataset) -> np.ndarray | None:
    """Pixels holding PixelPaddingValue (to PixelPaddingRangeLimit when given), compared as the pixels are stored
    (:func:`_stored_value`). A value that did not fit BitsStored (the padding written into the whole 16-bit word,
    which the decoder masks to BitsStored bits) now equals a tissue value (63536 & 0xFFF = 2096, +1072 HU): only
    pixels connected to the image border count then (the padding around the field of view), not bone inside."""
    value = H.number(ds, "PixelPaddingValue", None)
    if value is None:
        return None
    if raw.dtype.kind == "f":
        reduced: tuple[int, bool] | None = (int(value), False) if value == int(value) else None
    else:
        reduced = _stored_value(value, ds)
    if reduced is None:
        return raw == value
    v, lost = reduced
    limit = H.number(ds, "PixelPaddingRangeLimit", None)
    if limit is None:
        mask = raw == v
    else:
        lim = _stored_value(limit, ds) if raw.dtype.kind != "f" else (int(limit), False)
        if lim is None:
            lim = (int(limit), False)
        lost = lost or lim[1]
        lo, hi = min(v, lim[0]), max(v, lim[0])
        mask = (raw >= lo) & (raw <= hi)
    if lost and mask.any():
        mask = _border_connected(mask[None])[0]
    return mask


def _border_connected(candidates: np.ndarray) -> np.ndarray:
    """Voxels of ``candidates`` connected (in-plane, 4-neighbourhood) to the border of their slice.

    Slices usually share one padding pattern (the same circular field of view), so each distinct
    slice mask is labelled once.
    """
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(2, 1)
    out = np.zeros_like(candidates)
    cache: dict[bytes, np.ndarray] = {}
    for k in range(candidates.shape[0]):
        sl = candidates[k]
        if not sl.any():
            continue
        key = np.packbits(sl).tobytes()
        hit = cache.get(key)
        if hit is None:
            labels, n = ndimage.label(sl, structure=structure)
            border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
            lut = np.zeros(n + 1, bool)
            lut[border] = True
            lut[0] = False
            hit = lut[labels]
            if len(cache) < 64:
                cache[key] = hit
        out[k] = hit
    return out


def load_series(files: Sequence[str | Path], cfg: dict[str, Any] | None = None) -> CTVolume:
    """Read, check, sort and convert the files of one stack to a float32 HU image.

    ``cfg`` is the resolved config (``loading:`` section; defaults when None). Raises SeriesError with
    a named code when the stack cannot be scored; fixes and warnings go into ``CTVolume.flags``.
    """
    opts = LoadOptions.from_config(cfg)
    paths = [Path(f) for f in files]
    if not paths:
        raise SeriesError("EMPTY_SERIES", "no files given")
    flags: list[str] = []
    items = _read_files(paths, flags)
    _check_consistency(items)
    frames = [(it, fr) for it in items for fr in it.frames]
    rows, cols = items[0].rows, items[0].cols
    _check_size(len(frames), rows, cols, opts, items[0].path)

    ref = frames[0][1]
    thick = [fr.thickness for _, fr in frames if fr.thickness]
    thickness = float(np.median(thick)) if thick else None
    positions = np.array([fr.ipp for _, fr in frames])
    geo = analyse_stack(ref.iop, positions, thickness, allow_gaps=opts.allow_gaps, max_gap_ratio=opts.max_gap_ratio,
                        spacing_tolerance=opts.spacing_tolerance)
    frames = [frames[i] for i in geo.order]
    for code in geo.problems:
        message = geo.messages.get(code, code)
        if code == "SLICE_GAP" and geo.gap_after:
            suspects: list[str] = []
            unplaced = _unplaced_slice(items, geo, suspects)
            if unplaced is not None:  # the gap is a file of the series that cannot be placed: name that file
                exc, gap = unplaced
                raise SeriesError(exc.code, f"{exc.message}; the file belongs to this series but cannot be "
                                  f"placed in it, which leaves a gap {_gap_neighbours(geo, frames, gap)}", exc.path)
            message += f"; the first gap lies {_gap_neighbours(geo, frames)}"
            if suspects:
                message += (f"; file(s) beside it that cannot be read (truncated, empty or without permission) may "
                            f"be the missing slices: {', '.join(suspects[:5])}")
        raise SeriesError(code, message, items[0].path.parent)

    beside = _unreadable_beside(items)
    if beside:  # they may be the series' end slices: no gap shows where they are missing
        flags.append(f"UNREADABLE_FILES_BESIDE:{len(beside)}")
        log.warning("%d file(s) beside the series in %s cannot be read and may be its missing first or last slices: "
                    "%s", len(beside), items[0].path.parent, ", ".join(beside[:5]) + (", ..." if len(beside) > 5 else ""))

    lossy = [it for it in items if is_lossy(it.ds)]
    if lossy:
        if not opts.allow_lossy:
            raise SeriesError("LOSSY_REFUSED", f"{len(lossy)} file(s) are lossy-compressed and loading.allow_lossy "
                              "is false", lossy[0].path)
        _add(flags, "LOSSY_COMPRESSION")
    if any(H.text(it.ds, "BurnedInAnnotation").upper() == "YES" for it in items):
        _add(flags, "BURNED_IN_ANNOTATION")  # the QC pictures show the pixels, text and all (ctscore share: left out)

    # Decode in slice order; each slice keeps its own rescale.
    hu = np.empty((len(frames), rows, cols), np.float32)
    pad = np.zeros((len(frames), rows, cols), bool)
    decoded: dict[Path, np.ndarray] = {}
    mono1: dict[int, tuple[bool, bool, np.ndarray | None]] = {}  # MONOCHROME1 slices: air as stored, inverted
    for k, (it, fr) in enumerate(frames):
        if it.path not in decoded:
            decoded = {it.path: decode_frames(it.ds, it.path, len(it.frames), rows, cols,
                                              verify=opts.verify_compressed)}
            if "PixelData" in it.ds:
                del it.ds.PixelData  # free the encoded bytes
        raw = decoded[it.path][fr.frame]
        padmask = _padding_value_mask(raw, it.ds)
        values = hu[k]
        np.multiply(raw, np.float32(fr.slope), out=values, casting="unsafe")
        values += np.float32(fr.intercept)
        if H.text(it.ds, "PhotometricInterpretation").upper() == "MONOCHROME1":
            # DICOM applies the rescale to the stored values; MONOCHROME1 says only how to display them
            # (PS3.4 N.2.1.3): stored x slope + intercept is HU. Some writers store the values inverted: judged
            # on the whole series below (each slice: which reading has air).
            mono1[k] = (_air_ok(values, padmask, opts), _air_ok(_inverted_hu(values, fr, it.ds), padmask, opts),
                        padmask)
        _check_hu_range(values, padmask, fr, it)
        cand = values <= opts.padding_hu_max
        pad[k] = cand if padmask is None else (cand | padmask)
    decoded.clear()
    if mono1:
        # inverted only where more slices have air inverted than as stored (slices with little body have air
        # either way and do not vote)
        as_stored = sum(1 for a, b, _ in mono1.values() if a and not b)
        inverted = sum(1 for a, b, _ in mono1.values() if b and not a)
        if inverted > as_stored:
            for k, (_, _, padmask) in mono1.items():
                it, fr = frames[k]
                hu[k] = _inverted_hu(hu[k], fr, it.ds)
                cand = hu[k] <= opts.padding_hu_max
                pad[k] = cand if padmask is None else (cand | padmask)
            _add(flags, "MONOCHROME1_INVERTED")
        else:
            _add(flags, "MONOCHROME1_NOT_INVERTED")
    _check_rescale_outliers(hu, pad, frames, opts)

    # Duplicate positions: identical pixels are one slice; different pixels are refused.
    if geo.duplicate_groups:
        drop = []
        for group in geo.duplicate_groups:
            for j in group[1:]:
                if not np.array_equal(hu[group[0]], hu[j]):
                    raise SeriesError("DUPLICATE_POSITION", f"two slices at {geo.positions[j]:.2f} mm along the normal "
                                      f"have different pixels ({frames[group[0]][0].path.name}, {frames[j][0].path.name})",
                                      frames[j][0].path)
                drop.append(j)
        keep = np.setdiff1d(np.arange(len(frames)), drop)
        hu, pad = hu[keep], pad[keep]
        frames = [frames[i] for i in keep]
        _add(flags, "DUPLICATE_SLICE_REMOVED")
    # Padding enclosed by the body, judged on the slices as stored (each names its file): a little is kept as image
    # values below; much of the body is stored values misread (e.g. a wrong PixelRepresentation), refused.
    outside = _border_connected(pad) if pad.any() else None
    if outside is not None:
        _check_padding_in_body(hu, outside, frames, opts, _monochrome1(flags))
    sorted_ipp = np.array([fr.ipp for _, fr in frames])
    along = geo.unique_positions

    meta_extra: dict[str, Any] = {}
    spacing_xy = (float(ref.spacing[1]), float(ref.spacing[0]))  # PixelSpacing is (row = y, column = x)
    resample = len(along) > 1 and (not geo.uniform or bool(geo.gap_steps))
    if resample or "GANTRY_TILT_CORRECTED" in geo.fixes:
        outside = None  # the grid changes: judged again on the new one
    if pad.any() and (resample or "GANTRY_TILT_CORRECTED" in geo.fixes):
        # Padding (-2000, -3024, -32768 HU) must not be interpolated into the tissue beside it: bring it to
        # the lowest physical value first (what it becomes anyway: -1000 HU outside, -1024 HU inside).
        np.maximum(hu, MIN_PHYSICAL_HU, out=hu, where=pad)
    if "GANTRY_TILT_CORRECTED" in geo.fixes:
        offsets = in_plane_offsets(sorted_ipp, ref.iop)
        hu, pad = shear_to_orthogonal(hu, pad, offsets, spacing_xy, AIR_HU)
        _add(flags, "GANTRY_TILT_CORRECTED")
        meta_extra["gantry_tilt_deg"] = round(geo.tilt_deg, 3)
        log.warning("gantry tilt of %.1f deg corrected by shearing slices in-plane", geo.tilt_deg)
    elif geo.oblique:
        _add(flags, "OBLIQUE_ORIENTATION")
    shift = float(np.linalg.norm(in_plane_offsets(sorted_ipp, ref.iop)[-1])) if len(sorted_ipp) > 1 else 0.0
    if ("GANTRY_TILT_CORRECTED" not in geo.fixes and geo.tilt_deg >= TILT_NOTE_DEG
            and shift > 2 * POSITION_ROUNDING_MM + 1e-6):
        # below the correction's threshold, yet slices shifted in-plane along the stack (up to a few mm); a shift
        # the rounding of two positions explains (up to 0.1 mm between the first and last slice of a short stack,
        # positions written to 0.1 mm) is no tilt
        _add(flags, f"TILT_UNCORRECTED:{geo.tilt_deg:.2f}")
        log.warning("gantry tilt of %.2f deg left uncorrected (below %g deg): slices shifted %.1f mm in-plane over "
                    "the stack", geo.tilt_deg, TILT_TOLERANCE_DEG, shift)
    # one slice: its thickness, when that is a usable length (a negative or absent one: 1 mm, only a nominal size)
    t = float(thickness or 0.0)
    dz = geo.spacing if len(along) > 1 else (t if np.isfinite(t) and 0.0 < t < 1e6 else 1.0)
    if resample:
        hu, pad, new_along = resample_along_normal(hu, pad, along, dz)
        dz = float(new_along[1] - new_along[0]) if len(new_along) > 1 else dz  # the extent in whole steps
        _add(flags, "SLICE_GAP_ALLOWED" if geo.gap_steps else "NON_UNIFORM_SPACING_RESAMPLED")
        if geo.gap_steps:
            _add(flags, "NON_UNIFORM_SPACING_RESAMPLED")
        log.warning("slice spacing not uniform (%s): resampled to %.3f mm", ", ".join(
            f"{s:.2f}" for s in sorted(set(np.round(np.diff(along), 2)))), dz)

    # Padding: candidates connected to the border are outside the body; enclosed ones are image values.
    if pad.any():
        if outside is None:
            outside = _border_connected(pad)
        inside = pad & ~outside
        if inside.any():
            hu[inside] = np.maximum(hu[inside], MIN_PHYSICAL_HU)
            _add(flags, "PADDING_INSIDE_BODY")
        if outside.any():
            hu[outside] = AIR_HU
            _add(flags, "PADDING_MASKED")
        pad = outside
    _check_hu(hu, pad, opts, items[0].path.parent, _monochrome1(flags))

    img = sitk.GetImageFromArray(hu)
    img.SetOrigin(tuple(float(v) for v in sorted_ipp[0]))
    img.SetSpacing((spacing_xy[0], spacing_xy[1], float(dz)))
    img.SetDirection(tuple(np.column_stack([ref.iop[:3], ref.iop[3:], geo.normal]).ravel()))
    padimg = sitk.GetImageFromArray(pad.astype(np.uint8))
    padimg.CopyInformation(img)

    first = items[0].ds
    meta = summarize(first)
    date_read = H.dicom_date(first, "StudyDate")[1]
    if date_read == "normalised":
        _add(flags, "STUDY_DATE_NORMALISED")
    elif date_read == "unreadable":
        _add(flags, "STUDY_DATE_UNREADABLE")
        log.warning("%s: StudyDate is not a date (YYYYMMDD); the tables leave study_date empty, and the statistics "
                    "leave the scan out", items[0].path)
    meta.update(n_slices=int(hu.shape[0]), n_files=len(items), rows=rows, columns=cols,
                slice_spacing_mm=float(dz), slice_thickness=thickness or meta.get("slice_thickness"),
                transfer_syntaxes=sorted({transfer_syntax_of(it.ds) for it in items}), **meta_extra)
    files_sorted = list(dict.fromkeys(it.path for it, _ in frames))
    log.debug("loaded %d slices %dx%d, flags %s", hu.shape[0], rows, cols, flags)
    return CTVolume(image=img, meta=meta, files=files_sorted, flags=flags, padding_mask=padimg)


def _check_hu_range(values: np.ndarray, padmask: np.ndarray | None, fr: H.FrameInfo, it: _File) -> None:
    """Refuse a slice whose own rescale cannot give CT values (e.g. RescaleSlope 1e9 in one file):
    the series-wide air check (:func:`_check_hu`) does not see one bad slice among many."""
    frame = f" (frame {fr.frame + 1})" if len(it.frames) > 1 else ""
    if fr.slope <= 0:
        raise SeriesError("HU_OUT_OF_RANGE", f"RescaleSlope {fr.slope:g}{frame} is not positive: CT values cannot "
                          "fall as the stored values rise; check RescaleSlope of this file", it.path)
    kept = values if padmask is None else values[~padmask]  # PixelPaddingValue may be any stored value
    if kept.size == 0:
        return
    low, high = float(kept.min()), float(kept.max())
    lo, hi = PLAUSIBLE_HU_RANGE
    if not (lo <= low and high <= hi):  # also refuses NaN
        hint = _sign_hint(kept, fr, it.ds)
        check = ("check PixelRepresentation (and RescaleSlope/RescaleIntercept) of this file" if hint else
                 "check RescaleSlope/RescaleIntercept of this file")
        raise SeriesError("HU_OUT_OF_RANGE", f"values from {low:.6g} to {high:.6g} HU after this file's rescale{frame} "
                          f"(RescaleSlope {fr.slope:g}, RescaleIntercept {fr.intercept:g}); CT values, padding "
                          f"included, lie between {lo:g} and {hi:g} HU{hint}: {check}", it.path)


def _representation(ds: pydicom.Dataset) -> tuple[int | None, int]:
    """PixelRepresentation (0 unsigned, 1 signed; None when absent or another value) and BitsStored of a file."""
    pr = H.integer(ds, "PixelRepresentation", None)
    bits = H.integer(ds, "BitsStored", None) or H.integer(ds, "BitsAllocated", None) or 16
    return (pr if pr in (0, 1) else None), (bits if 2 <= bits <= 32 else 16)


def _sign_hint(kept: np.ndarray, fr: H.FrameInfo, ds: pydicom.Dataset) -> str:
    """'. PixelRepresentation ... look signed/unsigned ...' when the values, with the stored values read the other
    way (two's complement of BitsStored bits), would be CT values; '' otherwise (the range is not explained by it).

    Signed HU (air -1000) written under PixelRepresentation 0 read as 2**16 - 1000 = 64536: just below 2**BitsStored.
    """
    pr, bits = _representation(ds)
    if pr is None or fr.slope <= 0 or H.text(ds, "PhotometricInterpretation").upper() == "MONOCHROME1":
        return ""
    raw = (kept.astype(np.float64) - fr.intercept) / fr.slope
    full, half = 2.0**bits, 2.0 ** (bits - 1)
    wrapped = raw >= half if pr == 0 else raw < 0
    if not wrapped.any():
        return ""
    other = np.where(wrapped, raw - full if pr == 0 else raw + full, raw) * fr.slope + fr.intercept
    lo2, hi2 = float(other.min()), float(other.max())
    if not (PLAUSIBLE_HU_RANGE[0] <= lo2 and hi2 <= PLAUSIBLE_HU_RANGE[1]):
        return ""
    if pr == 0:
        top = float(raw.max())
        return (f". PixelRepresentation is 0 (unsigned) but the stored values look signed (two's complement): the "
                f"highest, {top:.0f}, lies {full - top:.0f} below 2**{bits}; read as signed they give {lo2:.6g} to "
                f"{hi2:.6g} HU")
    bottom = float(raw.min())
    return (f". PixelRepresentation is 1 (signed) but the stored values look unsigned: the lowest, {bottom:.0f}, lies "
            f"{bottom + half:.0f} above -2**{bits - 1}; read as unsigned they give {lo2:.6g} to {hi2:.6g} HU")


def _check_padding_in_body(hu: np.ndarray, outside: np.ndarray, frames: list, opts: LoadOptions,
                           monochrome1: bool = False) -> None:
    """Refuse a series in which much of the body holds padding values (<= ``loading.padding_hu_max``;
    :data:`PADDING_IN_BODY_MAX_SHARE`): real padding lies outside the body. Unsigned stored values (HU + 32768,
    RescaleIntercept -32768) read through PixelRepresentation 1 (signed) put every voxel at or above 0 HU near
    -65000 HU: enclosed by the body they were kept as image values, clipped to -1024 HU and scored as lung, and where
    the body touches the image border they were taken for padding outside it. So padding values count as body
    when enclosed by it, and also when connected to the border in a file whose header cannot hold 0 HU as a signed
    value (PixelRepresentation 1 with RescaleIntercept near -2**(BitsStored-1): such files are unsigned data) if
    read as unsigned they are tissue (:data:`TISSUE_HU_RANGE`)."""
    n = hu.shape[0]
    shift = np.zeros(n)  # what reading the stored values as unsigned adds (HU); 0: the file is not signed
    unsigned_only = np.zeros(n, bool)  # signed, yet its largest signed value is below 0 HU
    for k, (it, fr) in enumerate(frames):
        pr, bits = _representation(it.ds)
        if pr == 1 and fr.slope > 0:
            shift[k] = 2.0**bits * fr.slope
            unsigned_only[k] = (2.0 ** (bits - 1) - 1) * fr.slope + fr.intercept < 0
    misread = np.zeros(n, np.int64)

    def misread_mask(k: int) -> np.ndarray:
        low = hu[k] <= opts.padding_hu_max
        m = low & ~outside[k]
        if unsigned_only[k]:
            alt = hu[k] + np.float32(shift[k])
            m |= low & outside[k] & (alt >= TISSUE_HU_RANGE[0]) & (alt <= TISSUE_HU_RANGE[1])
        return m

    for k in range(n):
        misread[k] = np.count_nonzero(misread_mask(k))
    if not misread.any():
        return
    body = misread.copy()
    for k in range(n):
        body[k] += np.count_nonzero((hu[k] > BODY_HU) & ~outside[k])
    share = float(misread.sum()) / float(body.sum())
    if share <= PADDING_IN_BODY_MAX_SHARE:
        return
    per = misread / np.maximum(body, 1)
    order = [int(k) for k in np.argsort(-per, kind="stable") if per[k] > PADDING_IN_BODY_MAX_SHARE]
    order = order or [int(np.argmax(per))]
    names = list(dict.fromkeys(frames[k][0].path.name for k in order))
    worst = order[0]
    it, fr = frames[worst]
    typical = float(np.median(hu[worst][misread_mask(worst)]))
    pr, bits = _representation(it.ds)
    if monochrome1:
        cause = _MONOCHROME1_NOTE[2:]
    elif shift[worst] and TISSUE_HU_RANGE[0] <= typical + shift[worst] <= TISSUE_HU_RANGE[1]:
        cause = (f"PixelRepresentation is 1 (signed) but the stored values look unsigned: read as unsigned, their "
                 f"median would be {typical + shift[worst]:.0f} HU (e.g. HU + {2 ** (bits - 1)} stored with "
                 f"RescaleIntercept {fr.intercept:g}); check PixelRepresentation of these files")
    else:
        said = {0: "0 (unsigned)", 1: "1 (signed)"}.get(pr, "absent")
        cause = (f"the stored values are likely misread: check PixelRepresentation ({said}; signed values read as "
                 "unsigned or the reverse), RescaleSlope/RescaleIntercept and PixelPaddingValue of these files")
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    raise SeriesError("NOT_HU", f"{100 * share:.0f}% of the body ({int(misread.sum())} voxels; {len(order)} of {n} "
                      f"slices over {100 * PADDING_IN_BODY_MAX_SHARE:g}%: {shown}) holds padding values (at or below "
                      f"{opts.padding_hu_max:g} HU, median {typical:.0f} HU), where real padding does not lie; "
                      f"{cause}", it.path)


def _check_rescale_outliers(hu: np.ndarray, pad: np.ndarray, frames: list, opts: LoadOptions) -> None:
    """Refuse a slice whose own RescaleSlope/Intercept, unlike the rest of the series', shifts its values away from
    its neighbours' while the series' usual rescale would put them in line (one file with a wrong intercept reads
    every tissue 2000 HU off, and its padding may pass for air; the series-wide check of :func:`_check_hu` does not
    see one slice among many). A slice whose rescale differs legitimately gives values in line with its
    neighbours and is left alone; so is one whose neighbours differ from each other (no verdict)."""
    pairs = [(fr.slope, fr.intercept) for _, fr in frames]
    counts: dict[tuple[float, float], int] = {}
    for p in pairs:
        counts[p] = counts.get(p, 0) + 1
    if len(counts) < 2 or len(frames) < 3:
        return
    usual = max(counts, key=counts.get)
    step = max(1, int(round((hu.shape[1] * hu.shape[2] / 65536) ** 0.5)))
    for k, ((it, fr), pair) in enumerate(zip(frames, pairs)):
        near = [j for j in (k - 1, k + 1) if 0 <= j < len(frames) and pairs[j] == usual]
        if pair == usual or not near:
            continue
        keep = ~pad[near, ::step, ::step].any(axis=0)  # pixels the neighbours do not call padding
        if not keep.any():
            continue
        own = float(np.median(hu[k, ::step, ::step][keep]))
        nb = [float(np.median(hu[j, ::step, ::step][keep])) for j in near]
        if max(nb) - min(nb) > RESCALE_MATCH_HU:
            continue
        ref = float(np.mean(nb))
        with_usual = (own - fr.intercept) / fr.slope * usual[0] + usual[1]
        if abs(own - ref) > RESCALE_OUTLIER_HU and abs(with_usual - ref) <= RESCALE_MATCH_HU:
            frame = f" (frame {fr.frame + 1})" if len(it.frames) > 1 else ""
            raise SeriesError("NOT_HU", f"this slice's values lie {own - ref:+.0f} HU from its neighbours' with its own "
                              f"rescale{frame} (RescaleSlope {fr.slope:g}, RescaleIntercept {fr.intercept:g}); with the "
                              f"rescale of the other slices ({usual[0]:g}, {usual[1]:g}) they would be in line: check "
                              "RescaleSlope/RescaleIntercept of this file", it.path)


#: Said in a NOT_HU refusal of a MONOCHROME1 series: the values were read as stored, or inverted, and neither is HU.
_MONOCHROME1_NOTE = ("; the series is MONOCHROME1: its stored values were rescaled as they are (DICOM) and, where "
                     "they held no air, inverted too, and neither gives CT values: check PhotometricInterpretation "
                     "and RescaleSlope/RescaleIntercept")


def _monochrome1(flags: list[str]) -> bool:
    """Whether the series is MONOCHROME1 (read as stored or inverted)."""
    return "MONOCHROME1_INVERTED" in flags or "MONOCHROME1_NOT_INVERTED" in flags


def _check_hu(hu: np.ndarray, pad: np.ndarray, opts: LoadOptions, where: Path, monochrome1: bool = False) -> None:
    """Refuse values that are not plausibly HU: the darkest non-padding voxels must be air. Those are the
    :data:`AIR_PERCENTILE` % (or, above the air range, at least :data:`AIR_MIN_PERCENTILE` % in connected
    regions: an airway in a field of view the body fills). A border-connected value in or below the air range held
    by much of the border (:func:`_constant_border`) is padding, not air."""
    step = max(1, int(round((hu.shape[1] * hu.shape[2] / 65536) ** 0.5)))
    h, p = hu[:, ::step, ::step], pad[:, ::step, ::step]
    lo, hi = opts.air_hu_range
    p = p | _constant_border(h, p, hi, lo)
    if p.all():
        raise SeriesError("NOT_HU", "every voxel is padding", where)
    ok, low = _air_found(h, p, opts)
    if not ok:
        raise SeriesError("NOT_HU", f"the {AIR_PERCENTILE}th percentile of the values is {low:.0f}, expected air "
                          f"between {lo:g} and {hi:g} HU (check RescaleSlope/RescaleIntercept; parametric maps and "
                          f"non-CT values are refused)" + (_MONOCHROME1_NOTE if monochrome1 else ""), where)


def _air_found(h: np.ndarray, p: np.ndarray, opts: LoadOptions) -> tuple[bool, float]:
    """Whether the darkest values of ``h`` (a slice or a volume) outside the padding ``p`` are air, and their
    :data:`AIR_PERCENTILE` percentile: that percentile lies in ``loading.air_hu_range``, or above it while the
    :data:`AIR_MIN_PERCENTILE` percentile lies in it and at least that share of the values is air in connected
    regions (:func:`_air_region`): the airway of airless lungs in a field of view the body fills."""
    sample = h[~p]
    if sample.size == 0:
        return False, float("nan")
    low, least = (float(x) for x in np.percentile(sample, [AIR_PERCENTILE, AIR_MIN_PERCENTILE]))
    lo, hi = opts.air_hu_range
    if lo <= low <= hi:
        return True, low
    return (low > hi and lo <= least <= hi
            and _air_region(h, p, lo, hi) >= AIR_MIN_PERCENTILE / 100 * sample.size), low


def _air_region(h: np.ndarray, p: np.ndarray, lo: float, hi: float) -> int:
    """The non-padding air voxels of ``h`` in connected regions (4-neighbourhood in a slice, 6 in a volume) of at least
    :data:`AIR_REGION_MIN_VOXELS`: an airway or a tube's lumen, not scattered low values."""
    from scipy import ndimage

    air = (h >= lo) & (h <= hi) & ~p
    if not air.any():
        return 0
    labels, _ = ndimage.label(air)
    sizes = np.bincount(labels.ravel())[1:]
    return int(sizes[sizes >= AIR_REGION_MIN_VOXELS].sum())


def _air_either_way(h: np.ndarray, p: np.ndarray, cand: np.ndarray, lo: float, hi: float) -> bool:
    """Whether the :data:`AIR_PERCENTILE` percentile of the values outside ``p`` lies in the air range [lo, hi]
    whichever part of ``cand`` (values within the air range) is taken out as padding too: then the air check
    accepts without :func:`_border_connected` telling which part is (an ordinary scan whose air is clipped at
    -1024 HU, the border mostly that one value: the labelling cost 0.12 s a load). Exact, by ranks: the values below
    ``lo`` stay the lowest and those above ``hi`` the highest, whatever is taken out of the band between."""
    free = ~p
    total = int(np.count_nonzero(free))
    rest = total - int(np.count_nonzero(cand))  # the fewest values left (all of cand taken out)
    below = int(np.count_nonzero((h < lo) & free))
    above = int(np.count_nonzero((h > hi) & free))
    if rest < 3 or below + above + int(np.count_nonzero((h >= lo) & (h <= hi) & free)) != total:  # NaN: no guess
        return False
    rank = AIR_PERCENTILE / 100 * (rest - 1)  # np.percentile's (linear) position, the lowest it can be
    # the percentile lies between the values at floor(rank) and ceil(rank) (margin 1 for float rounding); the value
    # at ceil(rank) <= hi holds for every larger sample too (its position grows slower than the sample)
    return below <= np.floor(rank) - 1 and np.ceil(rank) + 1 <= rest - 1 - above


def _constant_border(h: np.ndarray, p: np.ndarray, hi: float, lo: float | None = None) -> np.ndarray:
    """Padding that the padding threshold missed: the most common non-padding value on the image border, when it
    lies at or below ``hi`` (the air range's top) and holds at least half of those border pixels, taken within
    :data:`PADDING_CONSTANT_HU` where connected to the border. A -2000 ring read with an intercept 1024 too high
    is -976 HU 'air' otherwise; air around a patient varies with the noise. With ``lo`` (the air range's bottom):
    none when the value lies in the air range and the air check accepts whichever of its voxels are padding
    (:func:`_air_either_way`; the check's outcome is the same, without labelling)."""
    edge = np.concatenate([h[:, 0, :], h[:, -1, :], h[:, :, 0], h[:, :, -1]], axis=1)
    free = ~np.concatenate([p[:, 0, :], p[:, -1, :], p[:, :, 0], p[:, :, -1]], axis=1)
    vals = np.round(edge[free])
    if vals.size == 0:
        return np.zeros_like(p)
    u, c = np.unique(vals, return_counts=True)
    m = u[np.argmax(c)]
    if m > hi or np.count_nonzero(np.abs(edge[free] - m) <= PADDING_CONSTANT_HU) < 0.5 * vals.size:
        return np.zeros_like(p)
    cand = (np.abs(h - m) <= PADDING_CONSTANT_HU) & ~p
    if (lo is not None and cand.any() and lo <= m - PADDING_CONSTANT_HU and m + PADDING_CONSTANT_HU <= hi
            and _air_either_way(h, p, cand, lo, hi)):
        return np.zeros_like(p)
    return _border_connected(cand) if cand.any() else cand
