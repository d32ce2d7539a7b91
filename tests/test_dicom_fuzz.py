"""Fuzz the loader: mutated header values and bytes of a small series either load or raise the
project's own error (CTScoreError with a code and message) -- never another exception, never a hang,
never an allocation beyond the configured limit. A longer run: ``python scripts/fuzz_loader.py``."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import default_config
from pipeline.errors import CTScoreError
from pipeline.loading import load_series
from tests.dicom_factory import write_series

N_SLICES = 4
FUZZ_CASES = int(os.environ.get("CTSCORE_FUZZ_CASES", "600"))  # each test; two tests -> >= 1000 cases

HEADER_KEYWORDS = [
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
    "RescaleSlope", "RescaleIntercept", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
    "SliceThickness", "NumberOfFrames", "PhotometricInterpretation", "PixelPaddingValue", "SOPInstanceUID",
    "FrameOfReferenceUID", "PixelData", "LossyImageCompression", "PlanarConfiguration",
]

VALUES = st.one_of(
    st.none(),  # delete the element
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.sampled_from([0, 1, -1, 7, 8, 12, 16, 17, 32, 64, 65535, 2**31 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=7),
    st.binary(max_size=64),
)


def fuzz_config() -> dict:
    cfg = default_config()
    cfg["loading"]["max_voxels"] = 2_000_000
    cfg["loading"]["max_memory_mb"] = 64.0
    return cfg


CFG = fuzz_config()


def _base_series() -> list[bytes]:
    with tempfile.TemporaryDirectory() as d:
        files = write_series(Path(d), N_SLICES, size=16, shuffle=False, pad_value=-2000)
        return [f.read_bytes() for f in files]


BASE = _base_series()


def _load(blobs: list[bytes]) -> None:
    d = Path(tempfile.mkdtemp(prefix="ctscore_fuzz_"))
    try:
        paths = []
        for k, b in enumerate(blobs):
            p = d / f"{k}.dcm"
            p.write_bytes(b)
            paths.append(p)
        try:
            load_series(paths, CFG)
        except CTScoreError as exc:
            assert exc.code and exc.code.isupper() and exc.message
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _set(ds: pydicom.Dataset, keyword: str, value) -> None:
    if value is None:
        if keyword in ds:
            delattr(ds, keyword)
        return
    if keyword == "PixelData":
        ds.PixelData = bytes(value) if isinstance(value, (bytes, bytearray)) else str(value).encode()[:64]
        return
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    setattr(ds, keyword, value)


@settings(max_examples=FUZZ_CASES, deadline=5000, derandomize=not os.environ.get("CTSCORE_FUZZ_RANDOM"),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(edits=st.lists(st.tuples(st.integers(0, N_SLICES - 1), st.sampled_from(HEADER_KEYWORDS), VALUES),
                      min_size=1, max_size=3))
def test_fuzz_header_values(edits):
    blobs = list(BASE)
    for idx, keyword, value in edits:
        ds = pydicom.dcmread(io.BytesIO(blobs[idx]))
        try:
            _set(ds, keyword, value)
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
        except Exception:  # noqa: BLE001 - pydicom refuses to write some values: not the loader's business
            continue
        blobs[idx] = buf.getvalue()
    _load(blobs)


@settings(max_examples=FUZZ_CASES, deadline=5000, derandomize=not os.environ.get("CTSCORE_FUZZ_RANDOM"),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(idx=st.integers(0, N_SLICES - 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=0, max_size=8),
       truncate=st.one_of(st.none(), st.floats(0, 1)),
       header_only=st.booleans())
def test_fuzz_bytes(idx, flips, truncate, header_only):
    blob = bytearray(BASE[idx])
    span = 1200 if header_only else len(blob)  # bias towards the header, where parsing happens
    for where, byte in flips:
        blob[min(len(blob) - 1, int(where * span))] = byte
    if truncate is not None:
        blob = blob[: int(truncate * len(blob))]
    blobs = list(BASE)
    blobs[idx] = bytes(blob)
    _load(blobs)


def test_fuzz_base_series_loads():
    d = Path(tempfile.mkdtemp())
    try:
        paths = []
        for k, b in enumerate(BASE):
            (d / f"{k}.dcm").write_bytes(b)
            paths.append(d / f"{k}.dcm")
        vol = load_series(paths, CFG)
        assert vol.image.GetSize() == (16, 16, N_SLICES)
        assert np.isfinite(vol.image.GetSpacing()).all()
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("keyword,value", [("Rows", 65535), ("NumberOfFrames", 65535), ("Columns", 60000)])
def test_huge_declared_dimension_is_refused_not_allocated(keyword, value):
    blobs = list(BASE)
    ds = pydicom.dcmread(io.BytesIO(blobs[0]))
    setattr(ds, keyword, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    blobs[0] = buf.getvalue()
    d = Path(tempfile.mkdtemp())
    try:
        paths = []
        for k, b in enumerate(blobs):
            (d / f"{k}.dcm").write_bytes(b)
            paths.append(d / f"{k}.dcm")
        with pytest.raises(CTScoreError):
            load_series(paths, CFG)
    finally:
        shutil.rmtree(d, ignore_errors=True)
