"""Crashes found by random runs of tests/test_loader_fuzz_review.py (session 22), minimised."""

from __future__ import annotations

import pytest

from pipeline.errors import SeriesError
from pipeline.loading import load_series
from tests.dicom_factory import edit_file, write_series
from tests.test_loader_fuzz_review import CFG, SIZE


@pytest.mark.parametrize("thickness", [-1.0, float("1e309")])
def test_one_slice_with_a_negative_or_absurd_thickness_loads_with_a_nominal_spacing(tmp_path, thickness):
    """Minimised from test_fuzz_inventory_folder: a slice given its own SeriesInstanceUID and SliceThickness -1
    made a one-slice stack whose z spacing was -1; SimpleITK refused it with a raw RuntimeError ("Negative spacing
    is not supported") instead of a volume or a ctscore error."""
    (f,) = write_series(tmp_path, 1, size=SIZE)
    edit_file(f, SliceThickness=thickness)
    vol = load_series([f], CFG)
    assert vol.image.GetSpacing()[2] == 1.0


# Damaged compressed frames on which GDCM ends the whole process (an uncaught C++ exception: std::terminate) with
# pydicom's gdcm plugin or ctscore's gdcm fallback: minimised from random runs of test_fuzz_compressed_pixel_data
# (a few header bytes of the frame replaced). The process died, and in a serial run every later series with it.
ABORTS = {
    "jpeg_ls_terminate": ("1.2.840.10008.1.2.4.80", 1, "garbage", ("flip", 0.1, b">\xe7I\xb7"), []),
    "jpeg_ls_length_error": ("1.2.840.10008.1.2.4.80", 2, "garbage",
                             ("flip", 0.1410796999033362, b"\x9b+\xb7Ec\xf5\x15\xa0H"), [1, 1, 1]),
    "jpeg_lossless_logic_error": ("1.2.840.10008.1.2.4.70", 0, "garbage", ("flip", 0.05, b"\xab\xd5\xa3"), []),
    "rle_logic_error": ("1.2.840.10008.1.2.5", 1, "right", ("flip", 0.0, b"\x0f"), [0, 0, 0]),
}


@pytest.mark.parametrize("case", sorted(ABORTS))
def test_pixel_data_that_abort_gdcm_fail_that_file_only(tmp_path, case):
    from tests.test_loader_fuzz_review import BASE_COMPRESSED, _encapsulated, _write

    ts, idx, bot, frag, deltas = ABORTS[case]
    head, frame, _ = BASE_COMPRESSED[ts][idx]
    files = _write(tmp_path, [head + _encapsulated(frame, bot, frag, deltas, "delimiter")], "c")
    with pytest.raises(SeriesError) as exc:
        load_series(files, CFG)
    assert exc.value.code == "CORRUPT_PIXEL_DATA" and exc.value.path == str(files[0])
    # the next file decodes (a new child process after the crash)
    good = _write(tmp_path / "good", [head + _encapsulated(frame, "none", ("keep", 0, b""), [], "delimiter")], "g")
    assert load_series(good, CFG).image.GetSize()[:2] == (SIZE, SIZE)
