"""Fuzz review of the ingestion stages that tests/test_dicom_fuzz.py does not reach, and the crashes it found.

tests/test_dicom_fuzz.py mutates header values and bytes of one classic series and calls ``load_series`` on
it. Not fuzzed there, and fuzzed here (each: load or a CTScoreError with a code, never another exception):

1. the inventory over a folder of several fuzzed files (``build_inventory``: header reads, de-duplication,
   grouping into series and stacks, selection and ranking), then loading every stack it forms;
2. enhanced multi-frame CT: values, items and sequences of the shared / per-frame functional groups;
3. compressed transfer syntaxes (RLE, JPEG-LS, JPEG Lossless) with odd fragment lengths, wrong item lengths,
   missing delimiters, extra or split fragments, garbage offset tables, and native (odd-length) pixel data
   under a compressed transfer syntax.

CI runs a few derandomized examples per test; a longer local run with random seeds::

    CTSCORE_FUZZ_REVIEW_CASES=5000 CTSCORE_FUZZ_RANDOM=1 python -m pytest -q tests/test_loader_fuzz_review.py

Regression tests for the crashes found, each with its minimised input written with pydicom, are at the end.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import tempfile
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import JPEGLSLossless, RLELossless

from pipeline.config import default_config
from pipeline.errors import CTScoreError, SeriesError
from pipeline.inventory import build_inventory
from pipeline.loading import load_series
from pipeline.selection import select_stacks
from tests.dicom_factory import edit_file, write_enhanced, write_series
from tests.test_loader_review import _encode_jpeg_lossless

FUZZ_CASES = min(int(os.environ.get("CTSCORE_FUZZ_REVIEW_CASES", "120")), 100_000)
RANDOM = bool(os.environ.get("CTSCORE_FUZZ_RANDOM"))
N_SLICES = 4
SIZE = 16

# No deadline in CI (a loaded 2-core runner took 12.5 s for one first example, 5.5 s when repeated: a flaky failure,
# not a slow input); the long random runs of the fuzz script keep one, to find inputs that make the loader crawl.
FUZZ = settings(max_examples=FUZZ_CASES, deadline=10_000 if RANDOM else None, derandomize=not RANDOM,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


def _config() -> dict:
    cfg = default_config()
    cfg["loading"]["max_voxels"] = 2_000_000
    cfg["loading"]["max_memory_mb"] = 64.0
    cfg["selection"]["min_slices"] = 2  # the small fuzzed stacks are eligible, so ranking runs too
    return cfg


CFG = _config()

# Values of any size: float64 extremes (1e308) as well as the float32 ones of test_dicom_fuzz.
VALUES = st.one_of(
    st.none(),  # delete the element
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.sampled_from([0, 1, -1, 2, 16, 65535, 1e-300, 1e30, 1e300, 1.7e308, -1.7e308]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                       st.sampled_from([0.0, 1.0, -1.0, 1e300, -1e300, 1e307])), max_size=7),
    st.binary(max_size=32),
)


def _blobs_of(files: list[Path]) -> list[bytes]:
    return [f.read_bytes() for f in files]


def _base_classic() -> tuple[list[bytes], list[bytes]]:
    """Two series of one study in one folder: a 4-slice axial stack and a 3-slice one (thicker slices)."""
    with tempfile.TemporaryDirectory() as d:
        a = write_series(Path(d) / "a", N_SLICES, size=SIZE, shuffle=False, pad_value=-2000,
                         study_uid="1.2.826.0.1.3680043.8.498.1", frame_uid="1.2.826.0.1.3680043.8.498.2")
        b = write_series(Path(d) / "b", 3, size=SIZE, shuffle=False, thickness=5.0, dz=5.0, kernel="B30f",
                         study_uid="1.2.826.0.1.3680043.8.498.1", frame_uid="1.2.826.0.1.3680043.8.498.2")
        return _blobs_of(a), _blobs_of(b)


BASE_A, BASE_B = _base_classic()


def _run_stages(folder: Path, files: list[Path] | None = None) -> None:
    """What ``ctscore run`` does with a folder: inventory, selection, then loading (here: every stack, as
    ``--series-uid`` may force any one). Only CTScoreError (with a code and a message) may come out."""
    try:
        inv = build_inventory(folder, CFG, all_series=True)
    except CTScoreError as exc:
        assert exc.code and exc.code.isupper() and exc.message
        event(f"inventory refused: {exc.code}")
        return
    event(f"inventory: {len(inv.candidates)} stack(s), {len(inv.chosen)} chosen")
    stacks = [c.files for c in inv.candidates]
    if files is not None:
        stacks.append(files)
    for stack in stacks:
        try:
            load_series(stack, CFG)
            event("load: ok")
        except CTScoreError as exc:
            assert exc.code and exc.code.isupper() and exc.message
            event(f"load: {exc.code}")


def _write(folder: Path, blobs: list[bytes], prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, b in enumerate(blobs):
        p = folder / f"{prefix}{k}.dcm"
        p.write_bytes(b)
        paths.append(p)
    return paths


def _set(ds: Dataset, keyword: str, value) -> None:
    if value is None:
        if keyword in ds:
            delattr(ds, keyword)
        return
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    setattr(ds, keyword, value)


def _edited(blob: bytes, edits) -> bytes:
    """``blob`` with header ``edits`` (keyword, value) applied; unchanged where pydicom refuses to write."""
    for keyword, value in edits:
        ds = pydicom.dcmread(io.BytesIO(blob))
        try:
            if keyword in ("TransferSyntaxUID", "MediaStorageSOPClassUID"):
                _set(ds.file_meta, keyword, value)
            else:
                _set(ds, keyword, value)
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
        except Exception:  # noqa: BLE001 - pydicom refuses to write some values: not the loader's business
            continue
        blob = buf.getvalue()
    return blob


def _flipped(blob: bytes, flips, truncate) -> bytes:
    out = bytearray(blob)
    for where, byte in flips:
        out[min(len(out) - 1, int(where * len(out)))] = byte
    if truncate is not None:
        out = out[: int(truncate * len(out))]
    return bytes(out)


# --- 1. the inventory over a folder of fuzzed files -------------------------------------------------------

INVENTORY_KEYWORDS = [
    "SeriesInstanceUID", "StudyInstanceUID", "SOPInstanceUID", "SOPClassUID", "Modality", "ImageType",
    "ConvolutionKernel", "AcquisitionNumber", "SliceThickness", "ImagePositionPatient", "ImageOrientationPatient",
    "PixelSpacing", "Rows", "Columns", "BodyPartExamined", "ContrastBolusAgent", "PhotometricInterpretation",
    "RescaleSlope", "RescaleIntercept", "NumberOfFrames", "FrameOfReferenceUID", "LossyImageCompression",
    "PixelData", "TransferSyntaxUID", "MediaStorageSOPClassUID", "SeriesNumber", "InstanceNumber",
]


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, N_SLICES + 2), st.sampled_from(INVENTORY_KEYWORDS), VALUES),
                      min_size=1, max_size=4),
       damage=st.one_of(st.none(), st.tuples(st.integers(0, N_SLICES + 2),
                                              st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6),
                                              st.one_of(st.none(), st.floats(0, 1)))),
       duplicate=st.one_of(st.none(), st.integers(0, N_SLICES + 2)))
def test_fuzz_inventory_folder(edits, damage, duplicate):
    blobs = BASE_A + BASE_B
    blobs = list(blobs)
    for idx, keyword, value in edits:
        blobs[idx] = _edited(blobs[idx], [(keyword, value)])
    if damage is not None:
        idx, flips, truncate = damage
        blobs[idx] = _flipped(blobs[idx], flips, truncate)
    if duplicate is not None:
        blobs.append(blobs[duplicate])  # the same SOPInstanceUID under another name
    d = Path(tempfile.mkdtemp(prefix="ctscore_fuzz_inv_"))
    try:
        _write(d / "a", blobs[:N_SLICES], "a")
        _write(d / "b", blobs[N_SLICES:], "b")
        _run_stages(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- 2. enhanced multi-frame functional groups -------------------------------------------------------------

def _base_enhanced() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = write_enhanced(Path(d) / "e.dcm", N_SLICES, size=SIZE)
        ds = pydicom.dcmread(path)
        recon = Dataset()
        recon.ConvolutionKernel = "B60f"
        ds.SharedFunctionalGroupsSequence[0].CTReconstructionSequence = [recon]
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()


BASE_ENHANCED = _base_enhanced()

MACROS = {
    "PlanePositionSequence": ["ImagePositionPatient"],
    "PlaneOrientationSequence": ["ImageOrientationPatient"],
    "PixelMeasuresSequence": ["PixelSpacing", "SliceThickness"],
    "PixelValueTransformationSequence": ["RescaleSlope", "RescaleIntercept"],
    "CTReconstructionSequence": ["ConvolutionKernel"],
}
WHERE = st.one_of(st.just("shared"), st.integers(0, N_SLICES))  # N_SLICES: one past the last per-frame item
MACRO_EDIT = st.tuples(st.just("value"), WHERE, st.sampled_from(sorted(MACROS)), st.integers(0, 1), VALUES)
STRUCTURE_EDIT = st.tuples(st.sampled_from(["drop_macro", "empty_macro", "two_items", "drop_item", "no_group",
                                            "empty_group"]),
                           WHERE, st.sampled_from(sorted(MACROS)), st.integers(0, 1), st.none())
TOP_EDIT = st.tuples(st.just("top"), st.just("shared"),
                     st.sampled_from(["NumberOfFrames", "ImagePositionPatient", "ImageOrientationPatient",
                                      "PixelSpacing", "RescaleSlope", "Rows", "PixelData", "SOPClassUID"]),
                     st.integers(0, 1), VALUES)


def _group(ds: Dataset, where) -> Dataset | None:
    if where == "shared":
        seq = ds.get("SharedFunctionalGroupsSequence")
        return seq[0] if seq else None
    seq = ds.get("PerFrameFunctionalGroupsSequence")
    return seq[where] if seq is not None and where < len(seq) else None


def _apply_enhanced(ds: Dataset, op: str, where, macro: str, which: int, value) -> None:
    if op == "top":
        _set(ds, macro, value)
        return
    group_kw = "SharedFunctionalGroupsSequence" if where == "shared" else "PerFrameFunctionalGroupsSequence"
    if op == "no_group":
        if group_kw in ds:
            delattr(ds, group_kw)
        return
    if op == "empty_group":
        setattr(ds, group_kw, [])
        return
    if op == "drop_item":
        seq = ds.get("PerFrameFunctionalGroupsSequence")
        if seq is not None and where != "shared" and where < len(seq):
            del seq[where]
        return
    group = _group(ds, where)
    if group is None:
        return
    if op == "drop_macro":
        if macro in group:
            delattr(group, macro)
    elif op == "empty_macro":
        setattr(group, macro, [])
    elif op == "two_items":
        items = list(group.get(macro) or [])
        setattr(group, macro, items + [Dataset()])
    else:  # value
        if macro not in group or not len(group[macro].value):
            setattr(group, macro, [Dataset()])
        _set(group[macro].value[0], MACROS[macro][which % len(MACROS[macro])], value)


@FUZZ
@given(edits=st.lists(st.one_of(MACRO_EDIT, STRUCTURE_EDIT, TOP_EDIT), min_size=1, max_size=4),
       second=st.booleans())
def test_fuzz_enhanced_functional_groups(edits, second):
    ds = pydicom.dcmread(io.BytesIO(BASE_ENHANCED))
    for edit in edits:
        try:
            _apply_enhanced(ds, *edit)
        except Exception:  # noqa: BLE001 - pydicom refuses some values: not the loader's business
            continue
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except Exception:  # noqa: BLE001
        return
    blobs = [buf.getvalue()]
    if second:  # a second, intact enhanced file of the same series: grouping of multi-frame files
        other = pydicom.dcmread(io.BytesIO(BASE_ENHANCED))
        other.SeriesInstanceUID = ds.get("SeriesInstanceUID", other.SeriesInstanceUID)
        other.SOPInstanceUID = pydicom.uid.generate_uid()
        b2 = io.BytesIO()
        other.save_as(b2, enforce_file_format=True)
        blobs.append(b2.getvalue())
    d = Path(tempfile.mkdtemp(prefix="ctscore_fuzz_enh_"))
    try:
        files = _write(d, blobs, "e")
        _run_stages(d, files[:1])
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- 3. compressed pixel data: odd lengths, broken items --------------------------------------------------

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
SYNTAXES = [str(RLELossless), str(JPEGLSLossless), JPEG_LOSSLESS_SV1]


def _base_compressed() -> dict[str, list[tuple[bytes, bytes, bytes]]]:
    """Per transfer syntax, each slice as (header bytes without pixel data, encoded frame, native pixels)."""
    out: dict[str, list[tuple[bytes, bytes, bytes]]] = {}
    for ts in SYNTAXES:
        slices = []
        for blob in BASE_A:
            ds = pydicom.dcmread(io.BytesIO(blob))
            native = bytes(ds.PixelData)
            if ts == JPEG_LOSSLESS_SV1:
                frame = _encode_jpeg_lossless(ds.pixel_array, 1)
            else:
                ds.compress(ts)
                frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
            del ds.PixelData
            ds.file_meta.TransferSyntaxUID = ts
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            slices.append((buf.getvalue(), bytes(frame), native))
        out[ts] = slices
    return out


BASE_COMPRESSED = _base_compressed()
ITEM = b"\xfe\xff\x00\xe0"
SEQ_DELIM = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


def _pixel_element(body: bytes, length: int) -> bytes:
    return b"\xe0\x7f\x10\x00OB\x00\x00" + struct.pack("<I", length & 0xFFFFFFFF) + body


def _encapsulated(frame: bytes, bot: str, frag: tuple, deltas: list[int], trailer: str) -> bytes:
    kind, where, extra = frag
    cut = int(where * len(frame))
    if kind == "truncate":
        fragments = [frame[:cut]]
    elif kind == "append":
        fragments = [frame + extra]
    elif kind == "split":
        fragments = [frame[:cut], frame[cut:]]
    elif kind == "extra":
        fragments = [frame, extra]
    elif kind == "empty":
        fragments = [b"", frame]
    elif kind == "flip":  # bytes of the stream's own header (markers, sizes, precision, predictor) replaced
        at = int(where * min(len(frame), 48))
        fragments = [frame[:at] + extra + frame[at + len(extra):]]
    else:
        fragments = [frame]
    if bot == "none":
        table = b""
    elif bot == "right":
        table = struct.pack("<I", 0)
    else:
        table = extra[:8]
    body = ITEM + struct.pack("<I", len(table)) + table
    for k, f in enumerate(fragments):
        declared = len(f) + (deltas[k] if k < len(deltas) else 0)
        body += ITEM + struct.pack("<I", max(0, declared)) + f
    if trailer == "delimiter":
        body += SEQ_DELIM
    elif trailer == "garbage":
        body += extra
    return _pixel_element(body, 0xFFFFFFFF)


@FUZZ
@given(ts=st.sampled_from(SYNTAXES), idx=st.integers(0, N_SLICES - 1),
       mode=st.sampled_from(["encapsulated", "encapsulated", "native"]),
       bot=st.sampled_from(["none", "right", "garbage"]),
       frag=st.tuples(st.sampled_from(["keep", "truncate", "append", "split", "extra", "empty", "flip", "flip"]),
                      st.floats(0, 1), st.binary(max_size=9)),
       deltas=st.lists(st.sampled_from([0, 0, 0, 1, -1, 2, 7, -3, 1000]), max_size=3),
       trailer=st.sampled_from(["delimiter", "delimiter", "none", "garbage"]),
       native_len=st.floats(0, 1.5), odd=st.booleans())
def test_fuzz_compressed_pixel_data(ts, idx, mode, bot, frag, deltas, trailer, native_len, odd):
    slices = BASE_COMPRESSED[ts]
    blobs = [head + _encapsulated(frame, "none", ("keep", 0, b""), [], "delimiter") for head, frame, _ in slices]
    head, frame, native = slices[idx]
    if mode == "native":
        n = int(native_len * len(native))
        n = n | 1 if odd else n
        raw = (native * 2)[:n]
        blobs[idx] = head + _pixel_element(raw, len(raw))
    else:
        blobs[idx] = head + _encapsulated(frame, bot, frag, deltas, trailer)
    d = Path(tempfile.mkdtemp(prefix="ctscore_fuzz_enc_"))
    try:
        files = _write(d, blobs, "c")
        _run_stages(d, files)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_compressed_base_series_load():
    """The unmutated compressed series of the fuzz test load (the fuzz starts from valid files)."""
    for ts, slices in BASE_COMPRESSED.items():
        d = Path(tempfile.mkdtemp())
        try:
            files = _write(d, [h + _encapsulated(f, "none", ("keep", 0, b""), [], "delimiter")
                               for h, f, _ in slices], "c")
            vol = load_series(files, CFG)
            assert vol.image.GetSize() == (SIZE, SIZE, N_SLICES), ts
        finally:
            shutil.rmtree(d, ignore_errors=True)


def test_enhanced_base_loads():
    d = Path(tempfile.mkdtemp())
    try:
        files = _write(d, [BASE_ENHANCED], "e")
        assert load_series(files, CFG).image.GetSize() == (SIZE, SIZE, N_SLICES)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- regressions: crashes and silent garbage found by the fuzz tests above, minimised --------------------

def test_slice_thickness_near_the_float_maximum_does_not_crash_the_inventory(tmp_path):
    """Minimised: one file of a series with SliceThickness 1e308 (finite, so headers.number keeps it). The
    inventory's reconstruction labels (thickness in 0.05 mm steps, inventory._thickness_labels) overflowed:
    OverflowError: cannot convert float infinity to integer, and the whole scan stopped."""
    files = write_series(tmp_path, 6, size=SIZE)
    edit_file(files[0], SliceThickness=1e308)
    inv = build_inventory(tmp_path, CFG)
    assert len(inv.candidates) == 1  # a stray thickness value of one slice: still one stack
    assert sorted(inv.candidates[0].files) == sorted(files)
    assert load_series(inv.candidates[0].files, CFG).image.GetSize() == (SIZE, SIZE, 6)


def _huge_positions(folder: Path, zs: list[float], **kw) -> list[Path]:
    files = write_series(folder, len(zs), size=SIZE, shuffle=False, **kw)
    for f, z in zip(files, zs):
        edit_file(f, ImagePositionPatient=[-16.0, -16.0, z])
    return files


def test_huge_image_position_is_refused_naming_the_file_not_loaded_with_infinite_spacing(tmp_path):
    """Minimised: ImagePositionPatient z of -1e308, -2e307, 9e307 (finite). The median slice step overflowed to
    inf and load_series returned a volume with slice spacing inf (no error; later stages fail far from the cause)."""
    files = _huge_positions(tmp_path, [-1e308, -0.2e308, 0.9e308])
    with pytest.raises(SeriesError) as exc:
        load_series(files, CFG)
    assert exc.value.code == "MISSING_GEOMETRY"
    assert exc.value.path == str(files[0])
    assert "ImagePositionPatient" in exc.value.message and "not a plausible position" in exc.value.message


def test_huge_slice_spacing_does_not_crash_the_inventory(tmp_path):
    """Minimised: 12 slices 1e307 mm apart without a SliceThickness. Selection's "thin" preference falls back on
    the slice spacing, and round(1e307 / 0.05) overflowed (selection._preference_key): the scan stopped. The
    positions are now refused per file (MISSING_GEOMETRY, in the file table), and the scan goes on."""
    files = _huge_positions(tmp_path, [k * 1e307 for k in range(12)], thickness=0.0)
    inv = build_inventory(tmp_path, CFG)
    codes = dict(zip(inv.files["path"], inv.files["file_code"]))
    assert codes[str(files[1])] == "MISSING_GEOMETRY"
    assert codes[str(files[0])] == ""  # z = 0 is a position
    assert inv.chosen and all("MISSING_GEOMETRY" in c.problems for c in inv.chosen)  # refused at loading, named


def test_ranking_survives_a_thickness_or_spacing_near_the_float_maximum():
    """The "thin" preference key of selection itself (a stack whose only size is a spacing near the float
    maximum, e.g. from a config that lets any thickness through): ranked last, no OverflowError."""
    from pipeline.inventory import SeriesCandidate

    def cand(uid: str, spacing: float) -> SeriesCandidate:
        c = SeriesCandidate(series_uid=uid, stack_id=uid, study_key="s")
        c.header = {"modality": "CT", "image_type": "ORIGINAL\\PRIMARY\\AXIAL", "slice_thickness": 0.0}
        c.info = {"n_slices": 20, "slice_spacing_mm": spacing}
        c.files = [Path(f"{uid}{k}.dcm") for k in range(20)]
        return c

    stacks = [cand("huge", 1e308), cand("thin", 1.0)]
    chosen = select_stacks(stacks, CFG)
    assert [c.stack_id for c in chosen] == ["thin"]
    assert stacks[0].reason.startswith("NOT_SELECTED: rank 2; thin preferred by thin")


def _jpeg_lossless_stream() -> bytes:
    return BASE_COMPRESSED[JPEG_LOSSLESS_SV1][0][1]


def _with_precision(precision: int) -> bytes:
    s = _jpeg_lossless_stream()
    i = s.index(b"\xff\xc3")  # SOF3: marker, length (2), precision, rows, columns, components
    return s[:i + 4] + bytes([precision]) + s[i + 5:]


_BAD_JPEG = {
    "cut_in_huffman_table": _jpeg_lossless_stream()[:15],  # the fuzzed input
    "soi_only": _jpeg_lossless_stream()[:2],
    "cut_in_frame_header": _jpeg_lossless_stream()[:_jpeg_lossless_stream().index(b"\xff\xc3") + 6],
    "precision_0": _with_precision(0),
    "precision_2": _with_precision(2),
    "precision_17": _with_precision(17),
}


@pytest.mark.parametrize("name,stream", list(_BAD_JPEG.items()), ids=list(_BAD_JPEG))
def test_jpeg_stream_without_a_usable_frame_header_is_corrupt_pixel_data_not_a_process_abort(tmp_path, name, stream):
    """Minimised from test_fuzz_compressed_pixel_data: one file of a JPEG Lossless (SV1) series whose stream ends
    before its frame header (or declares an impossible sample precision). pydicom fails, then python-gdcm's
    ImageReader.Read() (decoding._gdcm_decode) fails an internal assertion and aborts the process
    ("terminate called after throwing an instance of 'gdcm::Exception' ... (precision - 1) >= 0", SIGABRT; SIGSEGV
    for precision 17): no exception to catch, so one bad file stopped the whole batch."""
    slices = BASE_COMPRESSED[JPEG_LOSSLESS_SV1]
    blobs = [head + _encapsulated(frame, "none", ("keep", 0, b""), [], "delimiter") for head, frame, _ in slices]
    blobs[1] = slices[1][0] + _encapsulated(stream, "right", ("keep", 0, b""), [], "delimiter")
    files = _write(tmp_path, blobs, "c")
    with pytest.raises(SeriesError) as exc:
        load_series(files, CFG)
    assert exc.value.code == "CORRUPT_PIXEL_DATA", name
    assert exc.value.path == str(files[1])
    assert "JPEG" in exc.value.message and "damaged" in exc.value.message
    # the intact files of the series still load
    assert load_series([f for k, f in enumerate(files) if k != 1], CFG).image.GetSize()[2] == N_SLICES - 1
