"""Loader audit 48: padding stored outside BitsStored, reused SOPInstanceUIDs, PixelSpacing float noise, orientation
jitter between the grouping and the loader's tolerance, interleaved missing slices, MONOCHROME1 rescale, missing
SliceThickness. Small pydicom series (tests/dicom_factory.py), each a few seconds at most."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pydicom
import SimpleITK as sitk
from pydicom.uid import generate_uid

from pipeline.inventory import build_inventory, summarize
from pipeline.loading import load_series
from tests.dicom_factory import edit_file, phantom_slice, read, refused, write_enhanced, write_series


def hu_of(vol):
    return sitk.GetArrayFromImage(vol.image)


def _ring(n: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n]
    c = (n - 1) / 2
    return np.hypot(yy - c, xx - c) > 0.49 * n


def _restore(files, stored_of, **header):
    """Rewrite each file's pixels as ``stored_of(hu)`` (hu: the phantom) with header values changed."""
    for f in files:
        ds = read(f)
        for keyword, value in header.items():
            if isinstance(value, pydicom.DataElement):
                ds[keyword] = value
            else:
                setattr(ds, keyword, value)
        ds.PixelData = stored_of(phantom_slice(32)).tobytes()
        ds.save_as(f, enforce_file_format=True)


# 1. padding outside BitsStored ----------------------------------------------------------------------------------

def test_unsigned_padding_word_beyond_bits_stored_is_masked_not_bone(tmp_path):
    """BitsStored 12, unsigned, padding written into the whole 16-bit word (63536) with PixelPaddingValue 63536:
    the decoder keeps 12 bits (2096, +1072 HU), and the ring was scored as bone with no flag."""
    ring = _ring()

    def stored(hu):
        st = (hu + 1024).astype(np.uint16)
        st[ring] = 63536
        st[16, 16] = 2096  # a bone value equal to the reduced padding value, inside the body: an image value
        return st

    files = write_series(tmp_path, 12)
    _restore(files, stored, PixelRepresentation=0, BitsStored=12, HighBit=11,
             PixelPaddingValue=pydicom.DataElement(0x00280120, "US", 63536))
    vol = load_series(files)
    a = hu_of(vol)
    assert np.all(a[:, ring] == -1000.0)
    assert np.all(a[:, 16, 16] == 1072.0)
    assert "PADDING_MASKED" in vol.flags and "PADDING_INSIDE_BODY" not in vol.flags
    expected = phantom_slice(32)
    body = ~ring
    body[16, 16] = False
    assert np.array_equal(a[:, body], np.broadcast_to(expected[body], a[:, body].shape))


def test_signed_padding_below_bits_stored_range_is_masked(tmp_path):
    """BitsStored 12, signed, padding -3024 (below -2048) with PixelPaddingValue -3024: masked as padding."""
    ring = _ring()

    def stored(hu):
        st = hu.astype(np.int16)
        st[ring] = -3024
        return st

    files = write_series(tmp_path, 12)
    _restore(files, stored, BitsStored=12, HighBit=11, RescaleIntercept=0,
             PixelPaddingValue=pydicom.DataElement(0x00280120, "SS", -3024))
    vol = load_series(files)
    assert np.all(hu_of(vol)[:, ring] == -1000.0) and "PADDING_MASKED" in vol.flags


def test_padding_value_written_signed_under_unsigned_pixels_is_compared_as_bits(tmp_path):
    """PixelRepresentation 0 with PixelPaddingValue written as SS -2000, the same 16 bits as the stored 63536."""
    ring = _ring()

    def stored(hu):
        st = (hu + 1024).astype(np.uint16)
        st[ring] = 63536
        return st

    files = write_series(tmp_path, 12)
    _restore(files, stored, PixelRepresentation=0,
             PixelPaddingValue=pydicom.DataElement(0x00280120, "SS", -2000))
    vol = load_series(files)
    assert np.all(hu_of(vol)[:, ring] == -1000.0) and "PADDING_MASKED" in vol.flags


# 2. SOPInstanceUID reused / edited copies --------------------------------------------------------------------------

def test_one_sop_uid_in_every_file_keeps_every_slice_flagged(tmp_path):
    write_series(tmp_path, 12, per_slice=lambda k, p: p.update(sop_uid="1.2.3.4"))
    inv = build_inventory(tmp_path)
    (chosen,) = inv.chosen
    assert len(chosen.files) == 12 and "SOP_UID_REUSED" in chosen.flags
    assert "DUPLICATE_SOP_INSTANCE" not in set(inv.files["file_code"].fillna(""))
    vol = load_series(chosen.files)
    assert vol.image.GetSize()[2] == 12 and "SOP_UID_REUSED" in vol.flags


def test_last_slice_reusing_first_uid_is_kept(tmp_path):
    sop = generate_uid()
    files = write_series(tmp_path, 12, per_slice=lambda k, p: p.update(sop_uid=sop) if k in (0, 11) else None)
    (chosen,) = build_inventory(tmp_path).chosen
    assert len(chosen.files) == 12 and "SOP_UID_REUSED" in chosen.flags
    assert load_series(files).image.GetSize()[2] == 12


def test_edited_copy_with_the_same_uid_and_position_is_refused_naming_both(tmp_path):
    files = write_series(tmp_path / "a", 12, shuffle=False)
    ds = read(files[5])
    hu = phantom_slice(32)
    hu[8:24, 8:24] += 300
    ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
    edited = tmp_path / "a" / "s0005_.dcm"  # an altered copy beside the original
    ds.save_as(edited, enforce_file_format=True)
    inv = build_inventory(tmp_path)
    (cand,) = inv.candidates
    assert len(cand.files) == 13 and "DUPLICATE_POSITION" in cand.problems
    assert "s0005.dcm" in cand.messages["DUPLICATE_POSITION"] and "s0005_.dcm" in cand.messages["DUPLICATE_POSITION"]
    err = refused(cand.files)
    assert err.code == "DUPLICATE_POSITION" and "s0005.dcm" in err.message and "s0005_.dcm" in err.message
    # an exact copy is still one instance (dropped by the inventory and by the loader)
    edited.write_bytes(files[5].read_bytes())
    inv = build_inventory(tmp_path)
    assert list(inv.files["file_code"].fillna("")).count("DUPLICATE_SOP_INSTANCE") == 1
    vol = load_series(files + [edited])
    assert vol.image.GetSize()[2] == 12 and "DUPLICATE_SOP_INSTANCE" in vol.flags


# 3. PixelSpacing float noise -----------------------------------------------------------------------------------------

def test_pixel_spacing_float_noise_does_not_split_the_series(tmp_path):
    write_series(tmp_path, 12,
                 per_slice=lambda k, p: p.update(spacing=2.2005 if k % 2 == 0 else 2.20050001))
    inv = build_inventory(tmp_path)
    assert len(inv.candidates) == 1 and len(inv.candidates[0].files) == 12


# 4. orientation jitter between the grouping and the loader's tolerance ---------------------------------------------

def test_orientation_jitter_over_the_loader_tolerance_is_predicted_and_another_stack_chosen(tmp_path):
    study, frame = generate_uid(), generate_uid()
    jitter = (0.999998, 0.002, 0.0, -0.002, 0.999998, 0.0)
    write_series(tmp_path / "lung", 12, study_uid=study, frame_uid=frame, kernel="B70f",
                 per_slice=lambda k, p: p.update(iop=jitter) if k == 6 else None)
    soft = write_series(tmp_path / "soft", 12, study_uid=study, frame_uid=frame, kernel="B30f")
    inv = build_inventory(tmp_path)
    lung = next(c for c in inv.candidates if c.header["kernel"] == "B70f")
    assert "INCONSISTENT_ORIENTATION" in lung.problems
    assert refused(lung.files).code == "INCONSISTENT_ORIENTATION"  # what the prediction says
    (chosen,) = inv.chosen
    assert sorted(chosen.files) == sorted(soft)


# 5. interleaved missing slices ---------------------------------------------------------------------------------------

def test_four_interleaved_missing_slices_are_a_gap(tmp_path):
    zs = [k * 2.5 for k in range(24) if not (10 <= k < 18 and k % 2 == 1)]
    files = write_series(tmp_path, positions=zs, thickness=2.5)
    err = refused(files)
    assert err.code == "SLICE_GAP" and "4 step(s) of 5.00" in err.message and "spacing is 2.50 mm" in err.message
    (cand,) = build_inventory(tmp_path).candidates
    assert "SLICE_GAP" in cand.problems


def test_spacing_changing_by_another_ratio_is_still_resampled(tmp_path):
    zs = [k * 4.22 for k in range(8)] + [7 * 4.22 + k * 7.38 for k in range(1, 6)]  # the GE head series: 1.75
    vol = load_series(write_series(tmp_path, positions=zs, thickness=4.0))
    assert "NON_UNIFORM_SPACING_RESAMPLED" in vol.flags


# 6. MONOCHROME1 ------------------------------------------------------------------------------------------------------

def test_monochrome1_stored_values_are_rescaled_without_inverting(tmp_path):
    """DICOM rescales before the MONOCHROME1 presentation: stored x slope + intercept is HU; it was refused NOT_HU."""
    files = write_series(tmp_path, 12)
    for f in files:
        edit_file(f, PhotometricInterpretation="MONOCHROME1")
    vol = load_series(files)
    assert np.array_equal(hu_of(vol)[3], phantom_slice(32))
    assert "MONOCHROME1_NOT_INVERTED" in vol.flags and "MONOCHROME1_INVERTED" not in vol.flags


def test_monochrome1_stored_inverted_is_inverted_back(tmp_path):
    vol = load_series(write_series(tmp_path, 12, photometric="MONOCHROME1"))  # the factory stores -1 - value
    assert np.array_equal(hu_of(vol)[3], phantom_slice(32)) and "MONOCHROME1_INVERTED" in vol.flags


def test_monochrome1_refusal_names_monochrome1(tmp_path):
    files = write_series(tmp_path, 12)
    for f in files:
        edit_file(f, PhotometricInterpretation="MONOCHROME1", RescaleIntercept=500)
    err = refused(files)
    assert err.code == "NOT_HU" and "MONOCHROME1" in err.message


# 7. missing SliceThickness ---------------------------------------------------------------------------------------------

def test_missing_slice_thickness_is_empty_not_zero(tmp_path):
    from pipeline.inventory import stack_row
    from pipeline.methods import _counts

    files = write_series(tmp_path, 12)
    for f in files:
        edit_file(f, SliceThickness=None)
    assert summarize(read(files[0]))["slice_thickness"] is None
    (cand,) = build_inventory(tmp_path).candidates
    assert stack_row(cand)["slice_thickness_mm"] is None
    vol = load_series(files)
    assert vol.meta["slice_thickness"] is None
    ok = pd.DataFrame({"scan_id": ["a", "b"], "slice_thickness_mm": ["", "0.0"]}, dtype=str)
    lines = _counts(ok, 2, 0, Counter())
    assert "- Slice thickness: not recorded" in lines


# 8. smaller ones -------------------------------------------------------------------------------------------------------

def test_positions_rounded_to_a_tenth_of_a_millimetre_are_not_resampled(tmp_path):
    zs = [round(-200.0 + 0.625 * k, 1) for k in range(40)]  # steps of 0.6 and 0.7 mm
    vol = load_series(write_series(tmp_path, positions=zs, thickness=0.625))
    assert "NON_UNIFORM_SPACING_RESAMPLED" not in vol.flags
    assert vol.image.GetSize()[2] == 40 and abs(vol.image.GetSpacing()[2] - 0.625) < 0.005


def test_enhanced_ct_inconsistent_spacing_names_the_frame(tmp_path):
    path = write_enhanced(tmp_path / "enh.dcm", 12)
    ds = read(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    for k, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        measures = pydicom.Dataset()
        measures.PixelSpacing = [1.1, 1.1] if k == 9 else [1.0, 1.0]
        measures.SliceThickness = 2.0
        item.PixelMeasuresSequence = [measures]
    del shared.PixelMeasuresSequence
    ds.save_as(path, enforce_file_format=True)
    err = refused([path])
    assert err.code == "INCONSISTENT_GEOMETRY" and "(frame 10)" in err.message and "(frame 1)" in err.message


def test_small_uncorrected_gantry_tilt_is_flagged(tmp_path):
    shift = np.tan(np.radians(0.3))
    vol = load_series(write_series(tmp_path, 24, dz=2.5,
                                   per_slice=lambda k, p: p.update(ipp=(-16.0, -16.0 + k * 2.5 * shift, k * 2.5))))
    assert "TILT_UNCORRECTED:0.30" in vol.flags and "GANTRY_TILT_CORRECTED" not in vol.flags
    plain = load_series(write_series(tmp_path / "plain", 24, dz=2.5))
    assert not [f for f in plain.flags if f.startswith("TILT")]
