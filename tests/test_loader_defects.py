"""Three loader defects, each refused with a named code that points at the offending file:

1. a slice without ImagePositionPatient / PixelSpacing is MISSING_GEOMETRY naming that file, not a
   SLICE_GAP naming the folder (the inventory splits the file off; the stack's refusal names it);
2. damaged RLE (or other compressed) pixel data are CORRUPT_PIXEL_DATA / CORRUPT_FILE, not NO_DECODER
   with advice to install a decoder that is installed;
3. a slice whose own rescale gives values no CT can hold (RescaleSlope 1e9) is HU_OUT_OF_RANGE.

Small pydicom-written series only (tests/dicom_factory.py); no real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import JPEG2000Lossless, RLELossless

from pipeline.cli import main
from pipeline.dicom_codes import CODES
from pipeline.errors import EXIT_SOME_FAILED
from pipeline.inventory import build_inventory
from pipeline.loading import PLAUSIBLE_HU_RANGE, load_series
from tests.dicom_factory import edit_file as _edit
from tests.dicom_factory import loading_config as _cfg
from tests.dicom_factory import phantom_slice, read, write_series
from tests.dicom_factory import refused as _refused
from tests.dicom_factory import replace_frame as _replace_frame

# --- 1. missing geometry names the file -----------------------------------------------------------

@pytest.mark.parametrize("keyword", ["ImagePositionPatient", "PixelSpacing", "ImageOrientationPatient"])
def test_slice_without_geometry_is_missing_geometry_naming_the_file_not_a_gap(tmp_path, keyword):
    files = write_series(tmp_path / "series", 12, shuffle=False)
    bad = files[5]  # a middle slice: the stack without it has a gap
    _edit(bad, **{keyword: None})

    inv = build_inventory(tmp_path)  # the file is split off into a stack of its own ...
    alone = next(c for c in inv.candidates if c.files == [bad])
    assert "MISSING_GEOMETRY" in alone.problems and bad.name in alone.messages["MISSING_GEOMETRY"]
    row = inv.files.set_index("path").loc[str(bad)]  # ... and its own row says what is wrong with it
    assert row["file_code"] == "MISSING_GEOMETRY" and keyword in row["file_detail"]

    (stack,) = inv.chosen
    assert bad not in stack.files and "SLICE_GAP" in stack.problems
    exc = _refused(stack.files)  # refused for the file, not for the hole it leaves
    assert exc.code == "MISSING_GEOMETRY" and exc.path == str(bad) and keyword in exc.message
    assert f"between {files[4].name} and {files[6].name}" in exc.message

    vol = load_series(stack.files, _cfg(allow_gaps=True))  # gaps allowed: the hole is interpolated
    assert "SLICE_GAP_ALLOWED" in vol.flags and vol.image.GetSize()[2] == 12


def test_run_reports_the_file_without_position_in_failures_csv(tmp_path):
    files = write_series(tmp_path / "in", 12, shuffle=False)
    _edit(files[6], ImagePositionPatient=None)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "in"), "-o", str(out), "-q", "--segmenter", "classical"]) == EXIT_SOME_FAILED
    failures = pd.read_csv(out / "failures.csv")
    assert failures["code"].tolist() == ["MISSING_GEOMETRY"]
    assert failures["path"].iloc[0].endswith(files[6].name)


def test_a_real_gap_stays_a_gap_beside_an_unrelated_file_without_geometry(tmp_path):
    """A file of another matrix size (or another series) without position is not the missing slice."""
    zs = [-100.0 + 2 * k for k in range(12) if k != 6]
    files = write_series(tmp_path, positions=zs, shuffle=False)
    uid = read(files[0]).SeriesInstanceUID
    stray = write_series(tmp_path, 1, size=16, series_uid=uid, prefix="stray")[0]
    other = write_series(tmp_path, 1, prefix="other")[0]
    _edit(stray, ImagePositionPatient=None)
    _edit(other, ImagePositionPatient=None)
    exc = _refused(files)
    assert exc.code == "SLICE_GAP" and exc.path == str(tmp_path)


def test_a_slice_without_geometry_at_the_end_leaves_a_scorable_stack(tmp_path):
    """No gap: the split-off file is listed in the inventory, and the rest of the series loads."""
    files = write_series(tmp_path, 12, shuffle=False)
    _edit(files[-1], ImagePositionPatient=None)
    inv = build_inventory(tmp_path)
    assert inv.files.set_index("path").loc[str(files[-1]), "file_code"] == "MISSING_GEOMETRY"
    assert load_series(inv.chosen[0].files).image.GetSize()[2] == 11


def test_gap_message_names_the_slices_on_either_side(tmp_path):
    zs = [-100.0 + 2 * k for k in range(12) if k not in (6, 7)]
    files = write_series(tmp_path, positions=zs, shuffle=False)
    exc = _refused(files)
    assert exc.code == "SLICE_GAP"
    assert f"between {files[5].name} and {files[6].name}" in exc.message


# --- 2. damaged compressed pixel data ---------------------------------------------------------------

def _compressed_series(folder: Path, syntax=RLELossless) -> list[Path]:
    files = write_series(folder, 12, shuffle=False)
    for f in files:
        ds = read(f)
        ds.compress(syntax)
        ds.save_as(f)
    return files


DAMAGE = {
    "fragment cut short": lambda b: b[: len(b) // 2],
    "garbage in the segments": lambda b: b[:64] + b"\x7f" * (len(b) - 64),
    "bad segment count": lambda b: (99).to_bytes(4, "little") + b[4:],
}


def test_intact_rle_series_loads(tmp_path):
    vol = load_series(_compressed_series(tmp_path))
    assert np.allclose(sitk.GetArrayFromImage(vol.image)[3], phantom_slice(32), atol=0.5)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_rle_is_corrupt_pixel_data_not_no_decoder(tmp_path, damage):
    files = _compressed_series(tmp_path)
    _replace_frame(files[3], DAMAGE[damage])
    exc = _refused(files)
    assert exc.code == "CORRUPT_PIXEL_DATA" and exc.path == str(files[3])
    assert "truncated or damaged" in exc.message and "pip install" not in exc.message


def test_damaged_rle_without_gdcm_is_still_corrupt(tmp_path, monkeypatch):
    """pydicom's own RLE decoder is always there: its failure means damaged data, whatever else is installed."""
    import pipeline.decoding as dec

    def no_gdcm(*a, **k):
        raise ImportError("no gdcm")

    monkeypatch.setattr(dec, "_gdcm_decode", no_gdcm)
    files = _compressed_series(tmp_path)
    _replace_frame(files[3], DAMAGE["fragment cut short"])
    exc = _refused(files)
    assert exc.code == "CORRUPT_PIXEL_DATA" and exc.path == str(files[3])


@pytest.mark.filterwarnings("ignore:End of file reached")
@pytest.mark.parametrize("cut", [10, 300])
def test_truncated_rle_file_is_corrupt_file_not_no_pixel_data(tmp_path, cut):
    """pydicom drops the whole dataset (with a warning) when a file ends inside encapsulated pixel data."""
    files = _compressed_series(tmp_path)
    files[3].write_bytes(files[3].read_bytes()[:-cut])
    exc = _refused(files)
    assert exc.code == "CORRUPT_FILE" and exc.path == str(files[3]) and "truncated" in exc.message


def test_damaged_jpeg2000_is_corrupt_but_a_missing_decoder_is_still_no_decoder(tmp_path, monkeypatch):
    pytest.importorskip("openjpeg", reason="pylibjpeg-openjpeg is needed to write JPEG 2000 test files")
    files = _compressed_series(tmp_path, JPEG2000Lossless)
    assert load_series(files).image.GetSize()[2] == 12
    _replace_frame(files[3], DAMAGE["fragment cut short"])
    exc = _refused(files)
    assert exc.code == "CORRUPT_PIXEL_DATA" and exc.path == str(files[3])

    import pipeline.decoding as dec

    def no_gdcm(*a, **k):
        raise ImportError("no gdcm")

    monkeypatch.setattr(dec, "_gdcm_decode", no_gdcm)
    monkeypatch.setattr(pydicom.Dataset, "pixel_array",
                        property(lambda self: (_ for _ in ()).throw(RuntimeError("no plugin"))))
    exc = _refused(files)
    assert exc.code == "NO_DECODER" and "pylibjpeg-openjpeg" in exc.message


# --- 3. values no CT can hold -------------------------------------------------------------------------

@pytest.mark.parametrize("values", [
    {"RescaleSlope": 1e9},
    {"RescaleSlope": 1000},
    {"RescaleSlope": -1},
    {"RescaleIntercept": -1e6},  # every value far below any padding: would become "outside the body"
    {"RescaleIntercept": 1e6},
])
def test_one_slice_with_absurd_rescale_is_refused_naming_it(tmp_path, values):
    files = write_series(tmp_path, 12, shuffle=False)
    _edit(files[5], **values)
    exc = _refused(files)
    assert exc.code == "HU_OUT_OF_RANGE" and exc.path == str(files[5])
    assert "Rescale" in exc.message


def test_extreme_but_real_ct_values_still_load(tmp_path):
    """Metal on the extended CT scale (+30710 HU) and -32768 padding are CT values."""
    hu = phantom_slice(32, pad_value=-32768)
    hu[16, 16] = 30710.0
    vol = load_series(write_series(tmp_path, 12, hu=hu, pad_value=-32768))
    arr = sitk.GetArrayFromImage(vol.image)
    assert arr.max() == pytest.approx(30710.0) and "PADDING_MASKED" in vol.flags
    assert PLAUSIBLE_HU_RANGE[0] < -32768 - 1024 and PLAUSIBLE_HU_RANGE[1] > 30710


def test_new_code_is_documented_in_the_code_table():
    code = CODES["HU_OUT_OF_RANGE"]
    assert code.action == "E" and code.meaning and code.what_to_do


def test_one_slice_with_a_wrong_intercept_is_refused_naming_it(tmp_path):
    """One file's RescaleIntercept is +1000 instead of -1024: its air reads about 0 HU, within what CT can hold, and
    the series-wide air check does not see one slice among twelve. The series' usual rescale would put its air
    at -1000, so the file is named (NOT_HU)."""
    files = write_series(tmp_path, 12, shuffle=False)
    _edit(files[5], RescaleIntercept=1000)
    exc = _refused(files)
    assert exc.code == "NOT_HU" and exc.path == str(files[5]) and "RescaleIntercept 1000" in exc.message


def test_slices_with_their_own_valid_rescale_still_load(tmp_path):
    """A slice stored with another slope/intercept that still gives CT values (as some scanners write) loads."""
    def other_rescale(k, params):
        if k == 5:
            params.update(slope=0.5, intercept=-1000.0)

    files = write_series(tmp_path, 12, shuffle=False, per_slice=other_rescale)
    vol = load_series(files)
    arr = sitk.GetArrayFromImage(vol.image)
    ref = sitk.GetArrayFromImage(load_series(write_series(tmp_path / "ref", 12, shuffle=False)).image)
    assert np.abs(arr - ref).max() <= 1.0
