"""PixelRepresentation that does not match the stored values (vendor / converter quirks):

A. unsigned stored values (HU + 32768 as uint16) under PixelRepresentation 1 (signed) with RescaleIntercept -32768:
   every voxel at or above 0 HU reads near -65000 HU, below the padding threshold. Enclosed by the body it was kept
   as image values (clipped to -1024 HU, scored as lung: lungs of 6000 mL, status ok); where the body touches the
   image border it was taken for padding outside the body. Now refused (NOT_HU), naming the files and
   PixelRepresentation, when much of the body holds padding values (loading.PADDING_IN_BODY_MAX_SHARE);
B. signed HU (intercept 0) under PixelRepresentation 0 (unsigned): air reads 64536, HU_OUT_OF_RANGE; the message
   names PixelRepresentation (the values look like two's complement) besides RescaleSlope/RescaleIntercept.

Small pydicom-written series (tests/dicom_factory.py), the embedded sample phantom, and (when present) real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import SimpleITK as sitk

import pipeline.loading as loading
from pipeline.cli import main
from pipeline.errors import EXIT_SOME_FAILED
from pipeline.inventory import build_inventory
from pipeline.loading import load_series
from tests.conftest import SAMPLE, require
from tests.dicom_factory import edit_file as _edit
from tests.dicom_factory import phantom_slice, read, write_series
from tests.dicom_factory import refused as _refused


def _restore(files, stored_of_hu, **header) -> None:
    """Rewrite each file's pixels as ``stored_of_hu(HU)`` (the HU its current header gives) and set ``header``."""
    for f in files:
        ds = read(f)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress()
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        ds.PixelData = stored_of_hu(hu).tobytes()
        for keyword, value in header.items():
            setattr(ds, keyword, value)
        ds.save_as(f)


def _unsigned_under_signed(files) -> None:
    """Defect A: stored = HU + 32768 as unsigned 16-bit, header PixelRepresentation 1, RescaleIntercept -32768."""
    _restore(files, lambda hu: np.clip(np.round(hu) + 32768, 0, 65535).astype(np.uint16),
             PixelRepresentation=1, RescaleIntercept=-32768)


def _body_to_border(n: int = 32) -> np.ndarray:
    """The phantom with a body wider than the image (a large patient): it touches all four borders."""
    yy, xx = np.mgrid[0:n, 0:n]
    c = (n - 1) / 2
    hu = np.full((n, n), -1000.0)
    hu[np.hypot(yy - c, xx - c) < 0.62 * n] = 40.0
    hu[np.hypot(yy - c, xx - 0.33 * n) < 0.12 * n] = -850.0
    hu[np.hypot(yy - c, xx - 0.67 * n) < 0.12 * n] = -850.0
    return hu


def _names_pixel_representation_signed(exc, files) -> None:
    assert exc.code == "NOT_HU"
    assert exc.path in {str(f) for f in files}
    assert Path(exc.path).name in exc.message  # the files are named in the message too
    assert "PixelRepresentation is 1 (signed)" in exc.message and "look unsigned" in exc.message


# --- A. unsigned values under PixelRepresentation 1 ------------------------------------------------------------------

def test_unsigned_values_under_signed_representation_refused_naming_it(tmp_path):
    files = write_series(tmp_path, 12)
    _unsigned_under_signed(files)
    exc = _refused(files)
    _names_pixel_representation_signed(exc, files)
    assert "would be 40 HU" in exc.message  # the body, read as unsigned
    assert "RescaleIntercept -32768" in exc.message


def test_unsigned_values_under_signed_representation_refused_when_the_body_touches_the_border(tmp_path):
    """The misread body is connected to the image border, so it is not 'padding inside the body': it would have
    become air outside the body. A signed file whose intercept cannot give 0 HU holds unsigned values."""
    files = write_series(tmp_path, 12, hu=_body_to_border())
    _unsigned_under_signed(files)
    _names_pixel_representation_signed(_refused(files), files)


def test_the_same_unsigned_values_load_under_pixel_representation_0(tmp_path):
    files = write_series(tmp_path, 12, hu=_body_to_border())
    _unsigned_under_signed(files)
    for f in files:
        _edit(f, PixelRepresentation=0)
    hu = sitk.GetArrayFromImage(load_series(files).image)
    assert np.array_equal(hu[5], _body_to_border())


def test_sample_phantom_with_unsigned_values_under_signed_representation_refused(tmp_path):
    """The auditor's reproduction on the embedded phantom (real anatomy and noise): scored 'ok' with lungs of about
    6000 mL each before; now refused for every slice, naming PixelRepresentation."""
    src = sorted(p for p in SAMPLE.iterdir() if p.is_file() and p.read_bytes()[128:132] == b"DICM")
    files = []
    for p in src:
        files.append(tmp_path / p.name)
        files[-1].write_bytes(p.read_bytes())
    _unsigned_under_signed(files)
    exc = _refused(files)
    _names_pixel_representation_signed(exc, files)
    assert f"{len(files)} of {len(files)} slices" in exc.message


def test_run_reports_unsigned_values_under_signed_representation_as_failed(tmp_path):
    files = write_series(tmp_path / "in", 12)
    _unsigned_under_signed(files)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "in"), "-o", str(out), "-q", "--segmenter", "classical"]) == EXIT_SOME_FAILED
    failures = pd.read_csv(out / "failures.csv")
    assert failures["code"].tolist() == ["NOT_HU"]
    assert "PixelRepresentation" in failures["message"].iloc[0]


def test_a_little_padding_inside_the_body_still_loads(tmp_path):
    """Padding values enclosed by the body below the share are kept as image values (clipped to -1024 HU)."""
    hu = phantom_slice(32, pad_value=-3024)
    hu[10:12, 15:17] = -2000.0  # 4 voxels of a body of about 450
    vol = load_series(write_series(tmp_path, 12, hu=hu))
    assert "PADDING_INSIDE_BODY" in vol.flags and "PADDING_MASKED" in vol.flags
    arr = sitk.GetArrayFromImage(vol.image)
    assert arr[5, 10, 15] == -1024.0 and arr[5, 0, 0] == -1000.0


def test_much_padding_inside_the_body_is_refused_even_when_not_a_representation_mismatch(tmp_path):
    """-2000 HU under PixelRepresentation 1 and intercept -1024 read as unsigned is no tissue: the refusal names
    PixelRepresentation among the headers to check, without claiming the values look unsigned."""
    hu = phantom_slice(32, pad_value=-3024)
    hu[8:24, 12:20] = -2000.0  # most of the body's centre
    files = write_series(tmp_path, 12, hu=hu)
    exc = _refused(files)
    assert exc.code == "NOT_HU" and exc.path in {str(f) for f in files}
    assert "look unsigned" not in exc.message
    assert "PixelRepresentation (1 (signed)" in exc.message and "PixelPaddingValue" in exc.message


def test_signed_12_bit_padding_touching_the_border_loads(tmp_path):
    """Real padding connected to the border is not counted as body, even where, read as unsigned, it would be
    tissue (-2000 HU with 12 bits stored and intercept 0 reads 2096 HU as unsigned): that header can hold 0 HU."""
    files = write_series(tmp_path, 12, hu=_body_to_border(), intercept=0.0)
    for f in files:
        ds = read(f)
        arr = ds.pixel_array.copy()
        arr[0, :] = -2000  # a padding row along the border
        ds.PixelData = arr.astype(np.int16).tobytes()
        ds.BitsStored, ds.HighBit = 12, 11
        ds.save_as(f)
    vol = load_series(files)
    assert "PADDING_MASKED" in vol.flags and "PADDING_INSIDE_BODY" not in vol.flags
    assert sitk.GetArrayFromImage(vol.padding_mask)[:, 0, :].all()
    assert sitk.GetArrayFromImage(vol.image)[5, 16, 16] == 40.0


def test_real_series_hold_no_padding_in_the_body(shared_data, monkeypatch):
    """The margin of PADDING_IN_BODY_MAX_SHARE: on real scanners' padding (-3024 outside the field of view,
    PixelPaddingValue) not one voxel counts (threshold 0 still loads); the misread phantom holds 58%."""
    monkeypatch.setattr(loading, "PADDING_IN_BODY_MAX_SHARE", 0.0)
    for name in ("ge_mister_ct", "ricord_covid_419639"):
        stack = max(build_inventory(require(shared_data / "chest" / name)).candidates, key=lambda c: len(c.files))
        vol = load_series(stack.files)
        assert "PADDING_MASKED" in vol.flags and "PADDING_INSIDE_BODY" not in vol.flags


# --- B. signed values under PixelRepresentation 0 --------------------------------------------------------------------

def test_signed_values_under_unsigned_representation_name_pixel_representation(tmp_path):
    files = write_series(tmp_path, 12, shuffle=False)
    _restore(files, lambda hu: np.round(hu).astype(np.int16), PixelRepresentation=0, RescaleIntercept=0)
    exc = _refused(files)
    assert exc.code == "HU_OUT_OF_RANGE" and exc.path in {str(f) for f in files}
    assert "PixelRepresentation is 0 (unsigned)" in exc.message and "look signed" in exc.message
    assert "2**16" in exc.message and "-1000 to 40 HU" in exc.message
    assert "check PixelRepresentation" in exc.message and "RescaleIntercept" in exc.message


def test_absurd_slope_does_not_blame_pixel_representation(tmp_path):
    files = write_series(tmp_path, 12, shuffle=False)
    _edit(files[5], RescaleSlope=1e9)
    exc = _refused(files)
    assert exc.code == "HU_OUT_OF_RANGE" and exc.path == str(files[5])
    assert "PixelRepresentation" not in exc.message and "RescaleSlope/RescaleIntercept" in exc.message


def test_unsigned_12_bit_storage_loads_unchanged(tmp_path):
    """Unsigned 12-bit values (HU + 1024) under PixelRepresentation 0 load as before (no false hint, no refusal)."""
    files = write_series(tmp_path, 12, shuffle=False)
    _restore(files, lambda hu: np.clip(np.round(hu) + 1024, 0, 4095).astype(np.uint16),
             PixelRepresentation=0, BitsStored=12, HighBit=11)
    hu = sitk.GetArrayFromImage(load_series(files).image)
    assert np.array_equal(hu[5], phantom_slice(32))


def test_pydicom_reads_the_files_as_declared(tmp_path):
    """The fixtures do what they claim: PixelRepresentation 1 turns stored 32808 (40 HU + 32768) negative."""
    files = write_series(tmp_path, 1)
    _unsigned_under_signed(files)
    ds = pydicom.dcmread(files[0])
    assert ds.PixelRepresentation == 1 and ds.pixel_array.dtype == np.int16
    assert int(ds.pixel_array[16, 16]) == 32808 - 65536
