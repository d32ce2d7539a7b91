"""Loader defects found in review, each refused (or loaded) as docs/dicom_input.md says:

1. damaged JPEG Lossless (libjpeg only warns on stderr) and flat-decoding JPEG 2000 are
   CORRUPT_PIXEL_DATA naming the file, checked without capturing stderr (thread-safe);
2. overlapping acquisitions of one series are separate stacks, tiling ones stay one stack;
3. files without preamble / File Meta Information load as the inventory read them;
4. gaps are judged against the (local) slice spacing, not the thickness; a file of the series split off
   by the inventory that would fill a gap is named;
5. an image cut off before its pixel data is CORRUPT_FILE, kept in its stack and refused by name;
6. RescaleSlope 0, padding interpolated into tissue, message texts.

Small pydicom-written series (tests/dicom_factory.py); real data only where stated (skipped without).
"""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, generate_uid

from pipeline import decoding
from pipeline.errors import SeriesError
from pipeline.geometry import analyse_stack, local_spacing
from pipeline.inventory import build_inventory, read_file
from pipeline.loading import MIN_PHYSICAL_HU, load_series
from tests.conftest import require
from tests.dicom_factory import edit_file as _edit
from tests.dicom_factory import loading_config as _cfg
from tests.dicom_factory import phantom_slice, read, strip_preamble, write_enhanced, write_series
from tests.dicom_factory import refused as _refused
from tests.dicom_factory import replace_frame as _damage_stream


def _noisy(size: int, seed: int = 0) -> np.ndarray:
    """The phantom with CT-like noise, so that compressed streams are realistically long."""
    return phantom_slice(size) + np.random.default_rng(seed).normal(0, 25, (size, size)).round()


# --- 1. damaged compressed pixel data that decoders accept ---------------------------------------------

def _encode_jpeg_lossless(samples: np.ndarray, predictor: int) -> bytes:
    """A minimal JPEG Lossless (process 14) encoder for one 16-bit component: every difference category
    has a 5-bit Huffman code; ``predictor`` 1..7 (ITU-T T.81 annex H)."""
    x = samples.astype(np.int64) & 0xFFFF
    rows, cols = x.shape
    bits: list[int] = []

    def put(value: int, n: int) -> None:
        bits.extend((value >> (n - 1 - k)) & 1 for k in range(n))

    for i in range(rows):
        for j in range(cols):
            if i == 0 and j == 0:
                pred = 1 << 15
            elif i == 0:
                pred = x[i, j - 1]
            elif j == 0:
                pred = x[i - 1, j]
            else:
                ra, rb, rc = x[i, j - 1], x[i - 1, j], x[i - 1, j - 1]
                pred = {1: ra, 2: rb, 3: rc, 4: ra + rb - rc, 5: ra + ((rb - rc) >> 1), 6: rb + ((ra - rc) >> 1),
                        7: (ra + rb) >> 1}[predictor]
            diff = (int(x[i, j]) - int(pred)) & 0xFFFF
            diff = diff - 65536 if diff >= 32768 else diff
            ssss = 16 if diff == -32768 else abs(diff).bit_length()
            put(ssss, 5)
            if 0 < ssss < 16:
                put(diff if diff > 0 else diff + (1 << ssss) - 1, ssss)
    bits.extend([1] * (-len(bits) % 8))
    data = bytearray()
    for k in range(0, len(bits), 8):
        byte = int("".join(map(str, bits[k:k + 8])), 2)
        data.append(byte)
        if byte == 0xFF:
            data.append(0x00)
    counts = [0] * 16
    counts[4] = 17  # 17 codes of length 5
    dht = bytes([0x00]) + bytes(counts) + bytes(range(17))
    sof = bytes([16]) + struct.pack(">HH", rows, cols) + bytes([1, 1, 0x11, 0])
    sos = bytes([1, 1, 0x00, predictor, 0, 0])

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload

    return b"\xff\xd8" + segment(0xC4, dht) + segment(0xC3, sof) + segment(0xDA, sos) + bytes(data) + b"\xff\xd9"


def _jpeg_lossless_series(folder: Path, predictor: int = 1, size: int = 48) -> list[Path]:
    """A series whose pixel data are JPEG Lossless streams written by :func:`_encode_jpeg_lossless`."""
    files = write_series(folder, 12, size=size, hu=_noisy(size), shuffle=False)
    syntax = "1.2.840.10008.1.2.4.70" if predictor == 1 else "1.2.840.10008.1.2.4.57"
    for f in files:
        ds = read(f)
        stored = ds.pixel_array
        ds.PixelData = encapsulate([_encode_jpeg_lossless(stored, predictor)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(f)
    return files


def _zero_second_half(stream: bytes) -> bytes:
    """Zero the second half of the stream, keeping the end-of-image marker (as a bad copy does)."""
    half = len(stream) // 2
    return stream[:half] + b"\x00" * (len(stream) - half - 2) + stream[-2:]


@pytest.mark.parametrize("predictor", range(1, 8))
def test_lossless_bit_count_matches_a_reference_encoder(predictor):
    """The numpy re-encoding length equals what an encoder writes, for every predictor (no decoder needed)."""
    stored = (_noisy(24, predictor) + 1024).astype(np.uint16)
    stream = _encode_jpeg_lossless(stored, predictor)
    scan = decoding._parse_lossless_jpeg(stream)
    assert scan.predictor == predictor and scan.rows == 24
    bits = decoding._lossless_bits(stored, scan)
    assert (bits + 7) // 8 == scan.data_bytes
    assert decoding._lossless_mismatch(stream, stored, pydicom.Dataset()) == ""
    made_up = stored.copy()
    made_up[12:] = np.random.default_rng(predictor).integers(0, 4000, made_up[12:].shape)
    assert "bytes" in decoding._lossless_mismatch(stream, made_up, pydicom.Dataset())


def test_two_stray_bytes_before_the_end_marker_are_tolerated():
    """libjpeg decodes such a stream correctly (it warns); only a decoder out of step is damage."""
    stored = (_noisy(24) + 1024).astype(np.uint16)
    stream = _encode_jpeg_lossless(stored, 1)
    padded = stream[:-2] + b"\x01\x02" + stream[-2:]
    assert decoding._lossless_mismatch(padded, stored, pydicom.Dataset()) == ""
    assert "fewer" in decoding._lossless_mismatch(stream[:-40] + stream[-2:], stored, pydicom.Dataset())


def test_values_changed_by_pydicom_are_checked_again_with_gdcm(tmp_path, monkeypatch):
    """A mismatch caused by value handling between decoder and array (not by the data) is not damage:
    on the refusal path python-gdcm's own buffer gets a second look."""
    pytest.importorskip("gdcm", reason="python-gdcm is the only installed JPEG Lossless decoder")
    files = _jpeg_lossless_series(tmp_path)
    real = pydicom.Dataset.pixel_array
    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(lambda ds: real.fget(ds) // 2))
    assert load_series(files).image.GetSize()[2] == 12


@pytest.mark.parametrize("predictor", [1, 4, 7])
def test_intact_jpeg_lossless_decodes_unchanged(tmp_path, predictor):
    pytest.importorskip("gdcm", reason="python-gdcm is the only installed JPEG Lossless decoder")
    files = _jpeg_lossless_series(tmp_path, predictor)
    arr = sitk.GetArrayFromImage(load_series(files).image)
    assert np.allclose(arr[3], _noisy(48), atol=0.5)


@pytest.mark.parametrize("damage", ["zeroed half", "cut short", "bytes flipped"])
def test_damaged_jpeg_lossless_is_corrupt_pixel_data_naming_the_file(tmp_path, damage):
    """libjpeg decodes these 'successfully' (it only prints 'Corrupt JPEG data' on stderr)."""
    pytest.importorskip("gdcm", reason="python-gdcm is the only installed JPEG Lossless decoder")
    files = _jpeg_lossless_series(tmp_path)
    how = {"zeroed half": _zero_second_half,
           "cut short": lambda b: b[: len(b) * 2 // 3] + b"\xff\xd9",
           "bytes flipped": lambda b: b[:200] + bytes(v ^ 0x5A for v in b[200:260]) + b[260:]}[damage]
    _damage_stream(files[5], how)
    exc = _refused(files)
    assert exc.code == "CORRUPT_PIXEL_DATA" and exc.path == str(files[5]), exc
    assert "damaged" in exc.message
    if damage != "bytes flipped":  # caught by the stream check (the flipped bytes make the decoder itself fail)
        assert "loading.verify_compressed" in exc.message
        # the check can be switched off (a site sure of its files, should it ever misjudge a stream)
        from pipeline.config import load_config

        cfg = load_config(overrides=["loading.verify_compressed=false"])
        assert load_series(files, cfg).image.GetSize()[2] == len(files)


def test_jpeg_lossless_check_is_thread_safe(tmp_path):
    """Scans run in threads: the verdict of each file is its own (no shared state, no stderr capture)."""
    pytest.importorskip("gdcm", reason="python-gdcm is the only installed JPEG Lossless decoder")
    good = _jpeg_lossless_series(tmp_path / "good")
    bad = _jpeg_lossless_series(tmp_path / "bad")
    _damage_stream(bad[2], _zero_second_half)

    def verdict(files):
        try:
            load_series(files)
            return "ok"
        except SeriesError as exc:
            return f"{exc.code}:{Path(exc.path).name}"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(verdict, [good, bad] * 4))
    assert results == ["ok", f"CORRUPT_PIXEL_DATA:{bad[2].name}"] * 4


def test_damaged_real_jpeg_lossless_is_refused(shared_data, tmp_path):
    """The reviewer's case: ricord_covid_419639 slices, half of one file's pixel data zeroed."""
    src = require(shared_data / "chest" / "ricord_covid_419639")
    files = []
    for k, path in enumerate(sorted(src.iterdir())[:16]):
        ds = pydicom.dcmread(path)
        files.append(tmp_path / f"s{k:02d}.dcm")
        ds.save_as(files[-1])
    inv = build_inventory(tmp_path)
    (stack,) = inv.chosen
    assert load_series(stack.files).image.GetSize()[2] == 16
    victim = stack.files[7]
    _damage_stream(victim, _zero_second_half)
    exc = _refused(stack.files)
    assert exc.code == "CORRUPT_PIXEL_DATA" and exc.path == str(victim)


def test_jpeg2000_decoding_to_one_value_is_corrupt_pixel_data(tmp_path):
    """OpenJPEG decodes a stream whose packets were zeroed to a flat image: name the file, not NOT_HU."""
    pytest.importorskip("openjpeg", reason="pylibjpeg-openjpeg is needed to write JPEG 2000 test files")
    files = write_series(tmp_path, 12, size=96, hu=_noisy(96), shuffle=False)
    for f in files:
        ds = read(f)
        ds.compress(JPEG2000Lossless)
        ds.save_as(f)
    assert load_series(files).image.GetSize()[2] == 12

    def zero_packets(stream: bytes) -> bytes:
        sod = stream.index(b"\xff\x93") + 2
        return stream[:sod] + b"\x00" * (len(stream) - sod - 2) + stream[-2:]

    _damage_stream(files[7], zero_packets)
    exc = _refused(files)
    assert exc.code == "CORRUPT_PIXEL_DATA" and exc.path == str(files[7]) and "single value" in exc.message


# --- 2. overlapping acquisitions ----------------------------------------------------------------------------

def _two_acquisitions(folder: Path, second_z0: float, n2: int = 12) -> tuple[list[Path], list[Path]]:
    uid, study, frame = generate_uid(), generate_uid(), generate_uid()
    first = write_series(folder, 12, dz=2.0, z0=0.0, series_uid=uid, study_uid=study, frame_uid=frame,
                         acquisition=1, prefix="a")
    second = write_series(folder, n2, dz=2.0, z0=second_z0, series_uid=uid, study_uid=study, frame_uid=frame,
                          acquisition=9, prefix="b", hu=phantom_slice(32) + 300)
    return first, second


def test_interleaved_acquisitions_are_separate_stacks(tmp_path):
    """Acquisition 9 repeats acquisition 1 shifted by 1 mm (+300 HU): never one interleaved volume."""
    first, second = _two_acquisitions(tmp_path, 1.0)
    inv = build_inventory(tmp_path)
    assert sorted(len(c.files) for c in inv.candidates) == [12, 12]
    assert all("ACQUISITIONS_MERGED" not in c.flags for c in inv.candidates)
    (chosen,) = inv.chosen
    assert set(chosen.files) in (set(first), set(second))
    assert any(c.reason.startswith("NOT_SELECTED") for c in inv.candidates)
    vol = load_series(chosen.files)
    assert vol.image.GetSize()[2] == 12 and "NON_UNIFORM_SPACING_RESAMPLED" not in vol.flags


@pytest.mark.parametrize("second_z0", [24.0, 23.0])  # one spacing after the end; less than one before
def test_tiling_acquisitions_stay_one_stack(tmp_path, second_z0):
    first, second = _two_acquisitions(tmp_path, second_z0)
    (stack,) = build_inventory(tmp_path).candidates
    assert set(stack.files) == set(first + second) and "ACQUISITIONS_MERGED" in stack.flags


def test_one_acquisition_per_slice_stays_one_stack(tmp_path):
    """Sequential (step-and-shoot) scans number every slice as an acquisition of its own."""
    files = write_series(tmp_path, 12, per_slice=lambda k, p: p.update(acquisition=k + 1))
    (stack,) = build_inventory(tmp_path).candidates
    assert set(stack.files) == set(files) and "ACQUISITIONS_MERGED" in stack.flags


def test_one_slice_acquisition_inside_another_is_split_off(tmp_path):
    """A single repeated slice (e.g. a monitoring scan) inside the range is not interleaved."""
    first, second = _two_acquisitions(tmp_path, 11.0, n2=1)
    inv = build_inventory(tmp_path)
    assert sorted(len(c.files) for c in inv.candidates) == [1, 12]


def test_ge_three_acquisitions_load_as_one_volume(shared_data):
    folder = require(shared_data / "chest" / "ge_mister_ct")
    (stack,) = build_inventory(folder).chosen
    assert stack.info["n_slices"] == 109 and stack.info["acquisitions"] == "1,2,3"
    assert "ACQUISITIONS_MERGED" in stack.flags and not stack.problems


# --- 3. files without preamble or File Meta Information -----------------------------------------------------

@pytest.mark.parametrize("keep_meta", [True, False])
def test_files_without_preamble_load_like_the_inventory_reads_them(tmp_path, keep_meta):
    files = write_series(tmp_path, 12, shuffle=False)
    strip_preamble(files, keep_meta)
    head = files[0].read_bytes()[:4]
    assert head[:2] == (b"\x02\x00" if keep_meta else b"\x08\x00")
    (stack,) = build_inventory(tmp_path).chosen
    vol = load_series(stack.files)
    assert np.allclose(sitk.GetArrayFromImage(vol.image)[4], phantom_slice(32), atol=0.5)


# --- 4. gaps against the slice spacing; split-off files that fill a gap ------------------------------------

def test_missing_slices_of_overlapping_slices_are_a_gap(tmp_path):
    """5 mm slices every 2.5 mm, two missing: a 7.5 mm step (max(spacing, thickness) let it through)."""
    zs = [2.5 * k for k in range(16) if k not in (7, 8)]
    files = write_series(tmp_path, positions=zs, thickness=5.0, shuffle=False)
    exc = _refused(files)
    assert exc.code == "SLICE_GAP" and "7.50" in exc.message and "unknown mm" not in exc.message
    assert "SLICE_GAP" in build_inventory(tmp_path).chosen[0].problems
    assert "SLICE_GAP_ALLOWED" in load_series(files, _cfg(allow_gaps=True)).flags


def test_a_change_of_spacing_is_resampled_not_a_gap():
    """gantry_tilt_ge_head: 4.22 mm x13, 1.14, 7.38 mm x13 (a spacing regime, not missing slices)."""
    steps = [4.22] * 13 + [1.14] + [7.38] * 13
    z = np.concatenate([[0.0], np.cumsum(steps)])
    geo = analyse_stack(np.array([1.0, 0, 0, 0, 1, 0]), np.column_stack([0 * z, 0 * z, z]), 5.0)
    assert geo.problems == [] and "NON_UNIFORM_SPACING_RESAMPLED" in geo.fixes
    assert np.allclose(local_spacing(np.array([2.5] * 5 + [7.5, 7.5] + [2.5] * 5))[5:7], 2.5)


def test_real_chest_series_have_no_predicted_problems(shared_data):
    """Every chest series of the shared data (thin, 8 mm, overlapping GE) is predicted to load."""
    chest = require(shared_data / "chest")
    for folder in sorted(p for p in chest.iterdir() if p.is_dir()):
        chosen = build_inventory(folder).chosen
        assert len(chosen) == 1 and chosen[0].problems == [], (folder.name, chosen[0].problems, chosen[0].messages)


def _split_off(tmp_path: Path, **edit) -> tuple[list[Path], Path]:
    files = write_series(tmp_path, 16, dz=2.5, thickness=5.0, shuffle=False)
    _edit(files[7], **edit)
    return files, files[7]


@pytest.mark.parametrize("edit, code", [
    ({"PixelSpacing": [0.7, 0.7]}, "INCONSISTENT_GEOMETRY"),
    ({"ImageOrientationPatient": [1, 0, 0, 0, 0, -1]}, "INCONSISTENT_ORIENTATION"),
    ({"ImagePositionPatient": None}, "MISSING_GEOMETRY"),
])
def test_a_split_off_file_of_the_series_in_the_gap_is_named(tmp_path, edit, code):
    files, bad = _split_off(tmp_path, **edit)
    inv = build_inventory(tmp_path)
    (stack,) = inv.chosen
    assert bad not in stack.files and "SLICE_GAP" in stack.problems
    exc = _refused(stack.files)
    assert exc.code == code and exc.path == str(bad), exc
    assert f"between {files[6].name} and {files[8].name}" in exc.message and "np.float64" not in exc.message


def test_a_split_off_file_outside_the_gaps_is_not_blamed(tmp_path):
    files = write_series(tmp_path, positions=[2.5 * k for k in range(16) if k != 5], shuffle=False)
    stray = write_series(tmp_path, 1, z0=2.5 * 12 + 0.5, series_uid=read(files[0]).SeriesInstanceUID,
                         spacing=0.7, prefix="x")[0]
    exc = _refused(files)
    assert exc.code == "SLICE_GAP" and exc.path == str(tmp_path) and stray.name not in exc.message


# --- 5. an image cut off before its pixel data ---------------------------------------------------------------

def _cut_before_pixels(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"\xe0\x7f\x10\x00")])  # (7FE0,0010) little endian


def test_image_cut_before_pixel_data_is_corrupt_and_stays_in_its_stack(tmp_path):
    files = write_series(tmp_path, 12, shuffle=False)
    _cut_before_pixels(files[5])
    rec = read_file(files[5])
    assert rec.status == "ok" and rec.code == "CORRUPT_FILE"
    inv = build_inventory(tmp_path)
    (stack,) = inv.chosen
    assert files[5] in stack.files and "CORRUPT_FILES_IN_STACK" in stack.flags
    assert inv.files.set_index("path").loc[str(files[5]), "file_code"] == "CORRUPT_FILE"
    exc = _refused(stack.files)
    assert exc.code == "CORRUPT_FILE" and exc.path == str(files[5])


def test_non_image_objects_without_pixels_are_still_skipped(tmp_path):
    files = write_series(tmp_path, 12, shuffle=False)
    ds = read(files[0])
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"  # enhanced SR
    ds.SOPInstanceUID = generate_uid()
    for keyword in ("PixelData", "Rows", "Columns"):
        delattr(ds, keyword)
    sr = tmp_path / "sr.dcm"
    ds.save_as(sr)
    assert read_file(sr).code == "NOT_IMAGE"


def test_header_cut_short_is_named_beside_the_gap(tmp_path):
    files = write_series(tmp_path, 12, shuffle=False)
    files[5].write_bytes(files[5].read_bytes()[:400])
    (stack,) = build_inventory(tmp_path).chosen
    exc = _refused(stack.files)
    assert exc.code == "SLICE_GAP" and files[5].name in exc.message


# --- 6. rescale slope 0, padding in tilt/resampling, message texts -----------------------------------------

def test_rescale_slope_zero_is_refused_not_replaced_by_one(tmp_path):
    files = write_series(tmp_path, 12, shuffle=False)
    _edit(files[4], RescaleSlope=0)
    exc = _refused(files)
    assert exc.code == "HU_OUT_OF_RANGE" and exc.path == str(files[4]) and "RescaleSlope 0" in exc.message


def test_multiframe_rescale_slope_zero_is_refused(tmp_path):
    path = write_enhanced(tmp_path / "enh.dcm")
    ds = read(path)
    ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleSlope = 0
    ds.save_as(path)
    exc = _refused([path])
    assert exc.code == "HU_OUT_OF_RANGE" and "RescaleSlope 0" in exc.message


def test_padding_is_not_interpolated_into_tissue_by_tilt_correction(tmp_path):
    """A tilted stack (slices shifted 0.37 px per slice in y) whose field of view is padded with -3024."""
    def tilt(k, params):
        params["ipp"] = (-16.0, -16.0 + 0.37 * k, params["z"])

    files = write_series(tmp_path, 12, pad_value=-3024, per_slice=tilt)
    vol = load_series(files)
    arr = sitk.GetArrayFromImage(vol.image)
    assert "GANTRY_TILT_CORRECTED" in vol.flags
    assert arr.min() >= MIN_PHYSICAL_HU


def test_padding_is_not_interpolated_into_tissue_by_resampling(tmp_path):
    """Non-uniform spacing, and the field of view shrinks on one slice: padding stays out of the tissue."""
    def fov(k, params):
        if k == 6:
            hu = params["hu"].copy()
            hu[:, :4] = -3024
            params["hu"] = hu

    zs = [0, 2, 4, 6, 8, 10, 11, 13, 15, 17, 19, 21]
    vol = load_series(write_series(tmp_path, positions=zs, pad_value=-3024, per_slice=fov))
    assert "NON_UNIFORM_SPACING_RESAMPLED" in vol.flags
    assert sitk.GetArrayFromImage(vol.image).min() >= MIN_PHYSICAL_HU


def test_multiframe_gap_names_the_frames(tmp_path):
    zs = [-100.0 + 2 * k for k in range(12) if k not in (6, 7)][::-1]
    path = write_enhanced(tmp_path / "enh.dcm", positions=zs)
    exc = _refused([path])
    assert exc.code == "SLICE_GAP" and "between frames" in exc.message and "enh.dcm and enh.dcm" not in exc.message


def test_orientation_message_has_plain_numbers(tmp_path):
    files = write_series(tmp_path, 12, shuffle=False)
    _edit(files[3], ImageOrientationPatient=[1, 0, 0, 0, 0.9998, 0.02])
    exc = _refused(files)
    assert exc.code == "INCONSISTENT_ORIENTATION" and "np.float64" not in exc.message and "0.9998" in exc.message
