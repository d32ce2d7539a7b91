"""DICOM ingestion on the real files of ../shared/data (each test skips when its data are absent)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.discovery import discover, select_series
from pipeline.errors import SeriesError
from pipeline.loading import load_series
from tests.conftest import require

TS = "dicom_edge/transfer_syntaxes"
LOSSLESS = ["BigEndianExplicit", "DeflatedExplicit", "JPEG2000LosslessOnly", "JPEGLSLossless", "JPEGProcess14SV1",
            "JPEGProcess14Transfer", "LittleEndianExplicit", "LittleEndianImplicit", "RLELossless"]
#: Stated tolerance for lossy encodings of the reference slice (HU): mean and maximum absolute error.
#: 8-bit JPEG baseline of a 12-bit CT quantises to 32-HU steps (max 64 HU); the 12-bit lossy JPEGs reach 36 HU.
LOSSY = {"JPEG2000Transfer": (1.0, 6.0), "JPEGLSLossy": (1.0, 1.0), "JPEGProcess1Transfer": (25.0, 70.0),
         "JPEGProcess2_4": (5.0, 40.0), "JPEGProcess6_8": (5.0, 40.0), "JPEGProcess10_12": (5.0, 40.0)}


def _hu(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(load_series([path]).image)[0]


def _one(folder: Path, key: str) -> Path:
    return next(p for p in folder.iterdir() if f"_{key}" in p.name)


@pytest.mark.parametrize("key", LOSSLESS)
def test_lossless_encodings_identical_to_reference(shared_data, key):
    folder = require(shared_data / TS)
    ref = _hu(folder / "CTImage.dcm")
    vol = load_series([_one(folder, key)])
    assert np.array_equal(sitk.GetArrayFromImage(vol.image)[0], ref)
    assert "LOSSY_COMPRESSION" not in vol.flags


@pytest.mark.parametrize("key", sorted(LOSSY))
def test_lossy_encodings_within_tolerance_and_flagged(shared_data, key):
    folder = require(shared_data / TS)
    ref = _hu(folder / "CTImage.dcm")
    vol = load_series([_one(folder, key)])
    err = np.abs(sitk.GetArrayFromImage(vol.image)[0] - ref)
    mean_tol, max_tol = LOSSY[key]
    assert err.mean() <= mean_tol and err.max() <= max_tol
    assert "LOSSY_COMPRESSION" in vol.flags


def test_no_decoder_names_what_to_install(shared_data, monkeypatch):
    folder = require(shared_data / TS)
    import pipeline.decoding as dec

    def refuse(*a, **k):
        raise ImportError("no gdcm")

    monkeypatch.setattr(dec, "_gdcm_decode", refuse)
    def no_plugin(*a, **k):
        raise RuntimeError("no plugin")

    monkeypatch.setattr(dec, "_pixel_array", no_plugin)  # pydicom's plugins (its gdcm one in a child process)
    with pytest.raises(SeriesError) as exc:
        load_series([_one(folder, "JPEG2000LosslessOnly")])
    assert exc.value.code == "NO_DECODER" and "pylibjpeg-openjpeg" in exc.value.message


def test_malformed_files_refused_with_codes(shared_data):
    folder = require(shared_data / TS)
    with pytest.raises(SeriesError, match="NO_PIXEL_DATA"):
        load_series([folder / "no-pixel-data.dcm"])
    with pytest.raises(SeriesError) as exc:
        load_series([folder / "no-pixel-spacing.dcm"])
    assert exc.value.code in ("NOT_MONOCHROME", "MISSING_GEOMETRY")


def test_enhanced_ct_fragmented_jpeg_decodes_and_perfusion_map_is_not_hu(shared_data):
    path = require(shared_data / TS / "CT0012.fragmented_no_bot_jpeg_baseline.51.dcm")
    with pytest.raises(SeriesError) as exc:
        load_series([path])
    assert exc.value.code == "NOT_HU"  # two frames decoded (12-bit JPEG via gdcm), values are a CBF map


def test_ge_mister_ct_chooses_the_109_slice_axial_stack(shared_data):
    folder = require(shared_data / "chest" / "ge_mister_ct")
    cands = discover(folder)
    chosen = select_series(cands)
    assert len(chosen) == 1
    best = chosen[0]
    assert best.info["n_slices"] == 109 and best.info["orientation"] == "AXIAL"
    assert "ACQUISITIONS_MERGED" in best.flags and not best.problems
    assert sorted(c.reason for c in cands if c is not best) == ["LOCALIZER", "LOCALIZER"]
    assert best.header["patient_position"] == "FFS"


def test_gantry_tilt_ge_head_corrected(shared_data):
    folder = require(shared_data / "dicom_edge" / "gantry_tilt_ge_head")
    vol = load_series(sorted(folder.glob("*.dcm")))
    assert {"GANTRY_TILT_CORRECTED", "NON_UNIFORM_SPACING_RESAMPLED"} <= set(vol.flags)
    assert vol.meta["gantry_tilt_deg"] == pytest.approx(18.5, abs=0.1)
    d = np.asarray(vol.image.GetDirection()).reshape(3, 3)
    assert np.allclose(d.T @ d, np.eye(3), atol=1e-6)


def test_dicom2nifti_gantrytilting_corrected(shared_data):
    folder = require(shared_data / "dicom_edge" / "dicom2nifti_gantrytilting" / "001")
    vol = load_series(sorted(p for p in folder.iterdir() if p.is_file()))
    assert "GANTRY_TILT_CORRECTED" in vol.flags and vol.image.GetSize()[2] == 4


def test_slice_increment_gap_and_not_a_volume(shared_data):
    gap = require(shared_data / "dicom_edge" / "dicom2nifti_sliceincrement" / "001")
    with pytest.raises(SeriesError, match="SLICE_GAP"):
        load_series(sorted(p for p in gap.iterdir() if p.is_file()))
    same = require(shared_data / "dicom_edge" / "dicom2nifti_notavolume" / "001")
    with pytest.raises(SeriesError, match="NOT_A_VOLUME"):
        load_series(sorted(p for p in same.iterdir() if p.is_file()))


def test_padding_values_of_real_scanners_masked(shared_data):
    folder = require(shared_data / "dicom_edge" / "covid19_ny_sbu_slices")
    flagged = 0
    for path in sorted(folder.glob("*/axial/*")):
        vol = load_series([path])
        hu = sitk.GetArrayFromImage(vol.image)
        assert hu.min() > -1500  # no -2000 / -2048 / -3024 padding left as "air"
        flagged += "PADDING_MASKED" in vol.flags
    assert flagged >= 3


def test_sagittal_reformat_folder_is_skipped(shared_data):
    folder = require(shared_data / "dicom_edge" / "ricord_sagittal_reformat")
    cands = discover(folder)
    assert select_series(cands) == [] and {c.reason for c in cands} == {"DERIVED_REFORMAT"}


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
            h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()


def test_inputs_never_modified_by_scan_and_load(shared_data, tmp_path):
    src = require(shared_data / "dicom_edge" / "transfer_syntaxes")
    work = tmp_path / "in"
    shutil.copytree(src, work)
    before = _tree_hash(work)
    from pipeline.cli import main

    assert main(["scan", str(work), "-o", str(tmp_path / "inv.csv"), "-q"]) == 2
    for p in sorted(work.iterdir()):
        try:
            load_series([p])
        except SeriesError:
            pass
    assert _tree_hash(work) == before
