"""DICOM_EDGE_CASES.md, row by row, on small pydicom-generated series (no real data needed)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from pipeline.config import default_config
from pipeline.discovery import discover, select_series
from pipeline.errors import SeriesError
from pipeline.loading import load_series
from tests.dicom_factory import AXIAL, CORONAL, phantom_slice, write_enhanced, write_series


def cfg_with(**loading):
    cfg = default_config()
    cfg["loading"].update(loading)
    return cfg


def hu_of(vol):
    return sitk.GetArrayFromImage(vol.image)


def test_plain_series_loads_sorted_by_position_not_file_name(tmp_path):
    files = write_series(tmp_path, 12, dz=2.0, per_slice=lambda k, p: p.update(instance=100 - 7 * k))
    vol = load_series(files)
    assert vol.image.GetSize() == (32, 32, 12)
    assert vol.image.GetSpacing() == pytest.approx((1.0, 1.0, 2.0))
    assert vol.image.GetOrigin()[2] == pytest.approx(-100.0)
    assert [pydicom.dcmread(f).ImagePositionPatient[2] for f in vol.files] == sorted(
        pydicom.dcmread(f).ImagePositionPatient[2] for f in files)
    assert np.allclose(hu_of(vol)[0], phantom_slice(32), atol=0.5)
    assert vol.flags == []


def test_rescale_applied_per_slice_in_float(tmp_path):
    def vary(k, p):
        p.update(slope=0.5 if k % 2 else 1.0, intercept=-1024.0 + (k % 3))

    vol = load_series(write_series(tmp_path, 12, per_slice=vary))
    assert np.allclose(hu_of(vol), phantom_slice(32)[None], atol=0.51)


def test_duplicate_files_same_sop_instance_are_deduplicated(tmp_path):
    files = write_series(tmp_path / "a", 12)
    copy = tmp_path / "a" / "copy_of_first.dcm"
    copy.write_bytes(files[0].read_bytes())
    cands = discover(tmp_path)
    assert len(cands) == 1 and len(cands[0].files) == 12
    vol = load_series(files + [copy])
    assert vol.image.GetSize()[2] == 12 and "DUPLICATE_SOP_INSTANCE" in vol.flags


def test_same_position_identical_pixels_fixed_different_pixels_refused(tmp_path):
    zs = [-100.0 + 2 * k for k in range(12)]
    same = write_series(tmp_path / "same", positions=zs + [zs[5]])
    vol = load_series(same)
    assert vol.image.GetSize()[2] == 12 and "DUPLICATE_SLICE_REMOVED" in vol.flags

    def differ(k, p):
        if k == 12:
            p["hu"] = phantom_slice(32) + 100

    diff = write_series(tmp_path / "diff", positions=zs + [zs[5]], per_slice=differ)
    with pytest.raises(SeriesError) as exc:
        load_series(diff)
    assert exc.value.code == "DUPLICATE_POSITION"


def test_several_stacks_in_one_series_uid_are_split_and_the_axial_chosen(tmp_path):
    uid, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    write_series(tmp_path / "ax", 12, series_uid=uid, study_uid=study, prefix="a")
    write_series(tmp_path / "cor", 12, series_uid=uid, study_uid=study, prefix="c", iop=CORONAL,
                 per_slice=lambda k, p: p.update(ipp=(-16.0, -20.0 + k, 16.0)))
    # another matrix over the same field of view (24 x 4/3 mm = 32 x 1 mm): a smaller field of view would be a
    # targeted reconstruction, ranked below by the "fov" preference
    write_series(tmp_path / "thin", 20, series_uid=uid, study_uid=study, prefix="t", size=24, dz=1.0,
                 thickness=1.0, spacing=32 / 24)
    cands = discover(tmp_path)
    assert len(cands) == 3
    chosen = select_series(cands)
    assert len(chosen) == 1 and chosen[0].info["n_slices"] == 20 and chosen[0].info["rows"] == 24
    by_reason = {c.reason.split(":")[0] for c in cands if c.decision != "selected"}
    assert by_reason == {"NOT_AXIAL", "NOT_SELECTED"}
    assert len(select_series(cands, all_eligible=True)) == 2


def test_build_inventory_takes_all_series_as_run_pipeline_does(tmp_path):
    """The scan twin's option has the run twin's name (all_series, --all-series); all_eligible still works."""
    from pipeline.inventory import build_inventory, scan_inventory

    study = pydicom.uid.generate_uid()
    write_series(tmp_path / "a", 12, study_uid=study, prefix="a")
    write_series(tmp_path / "b", 20, study_uid=study, prefix="b", size=24, dz=1.0, thickness=1.0)
    assert len(build_inventory(tmp_path).chosen) == 1
    assert len(build_inventory(tmp_path, all_series=True).chosen) == 2
    assert (scan_inventory(tmp_path, all_series=True)["file_status"] == "used").all()
    with pytest.warns(DeprecationWarning, match="all_series"):
        assert len(build_inventory(tmp_path, all_eligible=True).chosen) == 2


def test_mixed_orientations_in_one_stack_refused_by_loader(tmp_path):
    def tilt(k, p):
        if k == 3:
            p["iop"] = (1.0, 0.0, 0.0, 0.0, 0.999, 0.0447)

    files = write_series(tmp_path, 12, per_slice=tilt)
    with pytest.raises(SeriesError) as exc:
        load_series(files)
    assert exc.value.code == "INCONSISTENT_ORIENTATION"


def test_overlapping_acquisitions_split_contiguous_ones_merged(tmp_path):
    uid, study = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    write_series(tmp_path / "a", 12, series_uid=uid, study_uid=study, prefix="a",
                 per_slice=lambda k, p: p.update(acquisition=1 if k < 6 else 2))
    cands = discover(tmp_path / "a")
    assert len(cands) == 1 and "ACQUISITIONS_MERGED" in cands[0].flags
    write_series(tmp_path / "b", 12, series_uid=uid, study_uid=study, prefix="b", acquisition=3)
    cands = discover(tmp_path)
    assert len(cands) == 2  # acquisition 3 repeats the positions of 1+2


def test_localizer_and_reformat_skipped(tmp_path):
    write_series(tmp_path / "loc", 12, image_type="ORIGINAL\\PRIMARY\\LOCALIZER")
    write_series(tmp_path / "mip", 12, image_type="DERIVED\\SECONDARY\\AXIAL\\MIP")
    cands = discover(tmp_path)
    assert sorted(c.reason for c in cands) == ["DERIVED_REFORMAT", "LOCALIZER"]
    assert select_series(cands) == []


def test_non_dicom_and_non_image_files_skipped(tmp_path):
    write_series(tmp_path, 12)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)
    from pipeline.inventory import build_inventory

    inv = build_inventory(tmp_path)
    codes = dict(zip(inv.files["path"].map(lambda p: p.rsplit("/", 1)[-1]), inv.files["file_code"]))
    assert codes["notes.txt"] == "NOT_DICOM" and codes["DICOMDIR"] in ("UNREADABLE_FILE", "DICOMDIR")
    assert (inv.files["file_status"] == "used").sum() == 12


def test_non_uniform_spacing_resampled(tmp_path):
    zs = np.cumsum([0, 2, 2, 2, 2, 3, 3, 3, 2, 2, 2, 2]) - 100.0
    vol = load_series(write_series(tmp_path, positions=zs))
    assert "NON_UNIFORM_SPACING_RESAMPLED" in vol.flags
    # 25 mm in 12 steps of 2.083 mm (the nearest to the median step 2 that divides it): first to last slice kept
    assert vol.image.GetSpacing()[2] == pytest.approx(25.0 / 12)
    assert vol.image.GetSize()[2] == 13
    top = vol.image.TransformIndexToPhysicalPoint((0, 0, 12))[2]
    bottom = vol.image.TransformIndexToPhysicalPoint((0, 0, 0))[2]
    assert sorted([top, bottom]) == pytest.approx([zs[0], zs[-1]])  # the last slice (25 mm) was dropped before


def test_gap_refused_unless_allowed(tmp_path):
    zs = [-100.0 + 2 * k for k in range(12) if k != 6]
    files = write_series(tmp_path, positions=zs)
    with pytest.raises(SeriesError) as exc:
        load_series(files)
    assert exc.value.code == "SLICE_GAP"
    assert "SLICE_GAP" in discover(tmp_path)[0].problems  # the inventory predicts it
    vol = load_series(files, cfg_with(allow_gaps=True))
    assert "SLICE_GAP_ALLOWED" in vol.flags and vol.image.GetSize()[2] == 12


def test_thick_overlapping_slices_missing_one_is_a_gap(tmp_path):
    """Gaps are judged against the slice spacing (2.5 mm), not the thickness (5 mm): a 5 mm step is a
    missing slice, refused unless gaps are allowed (docs/dicom_input.md, SLICE_GAP)."""
    zs = [-100.0 + 2.5 * k for k in range(14) if k != 6]
    files = write_series(tmp_path, positions=zs, thickness=5.0)
    with pytest.raises(SeriesError) as exc:
        load_series(files)
    assert exc.value.code == "SLICE_GAP"
    vol = load_series(files, {**default_config(), "loading": {**default_config()["loading"], "allow_gaps": True}})
    assert "SLICE_GAP_ALLOWED" in vol.flags


def test_gantry_tilt_sheared_to_orthogonal_grid(tmp_path):
    angle = np.radians(15.0)
    iop = (1.0, 0.0, 0.0, 0.0, np.cos(angle), -np.sin(angle))
    files = write_series(tmp_path, 12, iop=iop, per_slice=lambda k, p: p.update(ipp=(-16.0, -16.0, -100.0 + 2 * k)))
    vol = load_series(files)
    assert "GANTRY_TILT_CORRECTED" in vol.flags and vol.meta["gantry_tilt_deg"] == pytest.approx(15.0, abs=0.01)
    d = np.asarray(vol.image.GetDirection()).reshape(3, 3)
    assert np.allclose(d.T @ d, np.eye(3), atol=1e-6)
    assert vol.image.GetSpacing()[2] == pytest.approx(2 * np.cos(angle), abs=1e-3)
    # the body centre of every slice lands at one physical (x, y') after the shear: the image is a cylinder
    hu = hu_of(vol)
    centres = [np.argwhere(hu[k] > 0).mean(axis=0) for k in range(hu.shape[0])]
    assert np.ptp([c[0] for c in centres]) > 2  # the content moves along the column direction ...
    pts = [vol.image.TransformContinuousIndexToPhysicalPoint((c[1], c[0], k)) for k, c in enumerate(centres)]
    # ... so that it stays at one patient y, as acquired (uncorrected it would drift 11 x 2 sin 15 = 5.7 mm)
    assert np.ptp([p[1] for p in pts]) < 1.5


def test_missing_position_refused(tmp_path):
    files = write_series(tmp_path, 12)
    ds = pydicom.dcmread(files[4])
    del ds.ImagePositionPatient
    ds.save_as(files[4])
    with pytest.raises(SeriesError) as exc:
        load_series(files)
    assert exc.value.code == "MISSING_GEOMETRY"
    assert "MISSING_GEOMETRY" in discover(tmp_path)[0].problems or len(discover(tmp_path)) == 2


def test_inconsistent_frame_of_reference_refused(tmp_path):
    files = write_series(tmp_path, 12, per_slice=lambda k, p: p.update(frame_uid="1.2.3.4" if k == 2 else p["frame_uid"]))
    with pytest.raises(SeriesError) as exc:
        load_series(files)
    assert exc.value.code == "INCONSISTENT_FRAME_OF_REFERENCE"


def test_monochrome1_inverted(tmp_path):
    vol = load_series(write_series(tmp_path, 12, photometric="MONOCHROME1"))
    assert "MONOCHROME1_INVERTED" in vol.flags
    assert np.allclose(hu_of(vol)[3], phantom_slice(32), atol=0.5)


def test_rgb_refused(tmp_path):
    files = write_series(tmp_path, 12)
    ds = pydicom.dcmread(files[0])
    ds.PhotometricInterpretation, ds.SamplesPerPixel, ds.PlanarConfiguration = "RGB", 3, 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = b"\0" * (32 * 32 * 3)
    ds.save_as(files[0])
    with pytest.raises(SeriesError) as exc:
        load_series(files)
    assert exc.value.code == "NOT_MONOCHROME"


def test_values_not_hu_refused(tmp_path):
    files = write_series(tmp_path, 12, per_slice=lambda k, p: p.update(intercept=0.0))  # stored written as HU+0
    for f in files:  # the header now claims intercept +1024: air reads as 0 HU
        ds = pydicom.dcmread(f)
        ds.RescaleIntercept = 1024
        ds.save_as(f)
    with pytest.raises(SeriesError) as exc:
        load_series(files)
    assert exc.value.code == "NOT_HU"


@pytest.mark.parametrize("pad", [-2000, -3024, -32768])
def test_padding_outside_fov_masked(tmp_path, pad):
    vol = load_series(write_series(tmp_path, 12, pad_value=pad))
    assert "PADDING_MASKED" in vol.flags
    hu, mask = hu_of(vol), sitk.GetArrayFromImage(vol.padding_mask)
    assert mask[:, 0, 0].all() and not mask[:, 16, 16].any()
    assert hu[mask > 0].max() == -1000.0 and hu.min() >= -1024


def test_pixel_padding_value_inside_body_is_not_outside(tmp_path):
    """A PixelPaddingValue that also occurs inside the body (here -1000, the lung-air value of a
    mis-configured scanner) must not turn the lungs into 'outside the body'."""

    def lungs_at_pad(k, p):
        hu = phantom_slice(32)
        hu[hu == -850.0] = -1000.0
        hu[np.hypot(*np.mgrid[0:32, 0:32] - 15.5) > 15.5] = -1000.0
        p["hu"] = hu

    vol = load_series(write_series(tmp_path, 12, pad_value=-1000 + 1024, intercept=-1024.0, per_slice=lungs_at_pad))
    mask = sitk.GetArrayFromImage(vol.padding_mask)
    assert mask[:, 0, 0].all()  # outside: padding
    assert not mask[:, 16, int(0.33 * 32)].any()  # the lung: image, not padding
    assert "PADDING_INSIDE_BODY" in vol.flags


def test_enhanced_multiframe_uses_per_frame_geometry(tmp_path):
    path = write_enhanced(tmp_path / "enh.dcm", 12, slope=2.0, intercept=-2048.0)
    cands = discover(tmp_path)
    assert len(cands) == 1 and cands[0].info["n_slices"] == 12 and cands[0].info["multiframe"]
    vol = load_series([path])
    assert vol.image.GetSize() == (32, 32, 12)
    assert vol.image.GetOrigin()[2] == pytest.approx(-100.0)
    assert np.allclose(hu_of(vol)[5], phantom_slice(32), atol=1.01)


def test_enhanced_multiframe_gap_refused(tmp_path):
    path = write_enhanced(tmp_path / "enh.dcm", positions=[-100.0 + 2 * k for k in range(12) if k != 4])
    with pytest.raises(SeriesError) as exc:
        load_series([path])
    assert exc.value.code == "SLICE_GAP"


def test_huge_declared_dimensions_refused_before_allocation(tmp_path):
    files = write_series(tmp_path, 12)
    with pytest.raises(SeriesError) as exc:
        load_series(files, cfg_with(max_voxels=1000))
    assert exc.value.code == "TOO_LARGE"
    ds = pydicom.dcmread(files[0])
    ds.Rows = ds.Columns = 65535
    for f in files:
        d = pydicom.dcmread(f)
        d.Rows = d.Columns = 65535
        d.save_as(f)
    with pytest.raises(SeriesError) as exc:
        load_series(files)  # 12 x 65535^2 voxels: refused by the size check, no MemoryError
    assert exc.value.code == "TOO_LARGE"


def test_lossy_refused_when_not_allowed(tmp_path):
    files = write_series(tmp_path, 12)
    for f in files:
        d = pydicom.dcmread(f)
        d.LossyImageCompression = "01"
        d.save_as(f)
    assert "LOSSY_COMPRESSION" in load_series(files).flags
    with pytest.raises(SeriesError) as exc:
        load_series(files, cfg_with(allow_lossy=False))
    assert exc.value.code == "LOSSY_REFUSED"


def test_truncated_file_in_series_refused_and_flagged_in_inventory(tmp_path):
    files = write_series(tmp_path, 12)
    data = files[3].read_bytes()
    files[3].write_bytes(data[: len(data) - 500])
    cand = discover(tmp_path)[0]
    assert "CORRUPT_FILES_IN_STACK" in cand.flags
    with pytest.raises(SeriesError) as exc:
        load_series(files)
    assert exc.value.code in ("CORRUPT_FILE", "CORRUPT_PIXEL_DATA")


def test_missing_series_uid_grouped_by_folder(tmp_path):
    files = write_series(tmp_path / "x", 12)
    for f in files:
        d = pydicom.dcmread(f)
        del d.SeriesInstanceUID
        d.save_as(f)
    cands = discover(tmp_path)
    assert len(cands) == 1 and cands[0].series_uid.startswith("NO_SERIES_UID:")
    assert "x" not in cands[0].series_uid.split(":", 1)[1]  # folder names never leak
    assert select_series(cands)


def test_select_series_uid_forces_a_series(tmp_path):
    study = pydicom.uid.generate_uid()
    write_series(tmp_path / "a", 12, study_uid=study, prefix="a", thickness=1.0)
    write_series(tmp_path / "b", 12, study_uid=study, prefix="b", thickness=3.0)
    cands = discover(tmp_path)
    best = select_series(cands)[0]
    assert best.header["slice_thickness"] == 1.0
    other = next(c for c in cands if c is not best)
    forced = select_series(cands, series_uid=other.series_uid)
    assert [c.series_uid for c in forced] == [other.series_uid]


def test_kernel_preference_from_config(tmp_path):
    study = pydicom.uid.generate_uid()
    write_series(tmp_path / "a", 12, study_uid=study, prefix="a", kernel="B30f")
    write_series(tmp_path / "b", 12, study_uid=study, prefix="b", kernel="B70f")
    cands = discover(tmp_path)
    assert select_series(cands)[0].header["kernel"] == "B70f"
    cfg = default_config()
    cfg["selection"]["kernel_preference"] = "soft"
    assert select_series(cands, cfg=cfg)[0].header["kernel"] == "B30f"


def test_orientation_constants_sane():
    assert AXIAL[0] == 1.0
