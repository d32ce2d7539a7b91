"""The procedural phantom (pipeline/phantom.py) and the committed sample series (sample_dicoms/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from pipeline import phantom as P

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_dicoms"
SMALL = {"shape": (40, 64, 64), "spacing": (7.5, 5.5, 5.5)}  # same field of view, fast


@pytest.fixture(scope="module")
def ph() -> P.Phantom:
    """The sample's phantom (default arguments)."""
    return P.make_phantom()


@pytest.fixture(scope="module")
def truth() -> dict:
    return json.loads((SAMPLE / "ground_truth.json").read_text())


def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != "ground_truth.json")


def _read_hu_pydicom(folder: Path) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    """Slices sorted by position along the slice normal, rescaled per slice to HU (float)."""
    dss = [pydicom.dcmread(p) for p in _dicom_files(folder)]
    normal = np.cross(*np.reshape(np.asarray(dss[0].ImageOrientationPatient, float), (2, 3)))
    dss.sort(key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, float))))
    hu = np.stack([d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss])
    return hu, dss


def _read_sitk_lps(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    reader.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.DICOMOrient(reader.Execute(), "LPS")


# ---------------------------------------------------------------------------------------------
# generator
# ---------------------------------------------------------------------------------------------


def test_make_phantom_is_deterministic_and_seeded() -> None:
    a, b = P.make_phantom(**SMALL, seed=3), P.make_phantom(**SMALL, seed=3)
    for name in ("hu", "lungs", "lesions", "airway", "vessels"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.landmarks_z_mm == b.landmarks_z_mm
    c = P.make_phantom(**SMALL, seed=4)
    assert not np.array_equal(a.hu, c.hu)


def test_phantom_arrays_and_geometry(ph: P.Phantom) -> None:
    assert ph.hu.shape == ph.lungs.shape == ph.lesions.shape == ph.airway.shape == P.DEFAULT_SHAPE
    assert ph.hu.dtype == np.float32 and np.array_equal(ph.hu, np.rint(ph.hu))
    assert set(np.unique(ph.lungs)) == {0, 1, 2}
    assert set(np.unique(ph.lesions)) == {0, 1, 2, 3}
    assert np.all(ph.lungs[ph.lesions > 0] > 0), "lesions lie inside the lungs"
    assert not np.any(ph.lungs[ph.airway]), "trachea and main bronchi are not lung"
    # right lung at low x (patient right), left lung at high x
    xs = np.nonzero(ph.lungs)[2]
    lab = ph.lungs[np.nonzero(ph.lungs)]
    assert xs[lab == 1].mean() < ph.hu.shape[2] / 2 < xs[lab == 2].mean()
    # whole lungs in the scan: no lung in the first or last slice
    assert not ph.lungs[0].any() and not ph.lungs[-1].any()
    assert np.allclose(ph.z_mm[1] - ph.z_mm[0], ph.spacing[0])


def test_phantom_hu_is_realistic(ph: P.Phantom) -> None:
    outside = ph.hu[:, :5, :5]
    assert abs(outside.mean() + 1000) < 5 and 15 <= outside.std() <= 25
    paren = (ph.lungs > 0) & (ph.lesions == 0) & ~ph.vessels
    assert -880 < np.median(ph.hu[paren]) < -820
    med = {c: np.median(ph.hu[ph.lesions == c]) for c in (1, 2, 3)}
    assert -750 < med[1] < -550 and -550 < med[2] < -300 and -100 < med[3] < 60
    assert ph.hu.max() >= 600, "cortical bone present"


def test_landmarks_match_the_anatomy(ph: P.Phantom) -> None:
    lm, z = ph.landmarks_z_mm, ph.z_mm
    # carina: the airway is one lumen just above it and two just below
    k_above = int(np.argmin(np.abs(z - (lm["carina"] + 1.25))))
    k_below = int(np.argmin(np.abs(z - (lm["carina"] - 1.25))))
    assert ndi.label(ph.airway[k_above])[1] == 1
    assert ndi.label(ph.airway[k_below])[1] == 2
    # suprasternal notch = top of the manubrium (bone in the anterior midline just below, none above)
    ant = (slice(None), slice(0, 60), slice(70, 90))
    bone = (ph.hu[ant] > 300).any(axis=(1, 2))
    assert bone[np.argmin(np.abs(z - (lm["suprasternal_notch"] - 3)))]
    assert not bone[np.argmin(np.abs(z - (lm["suprasternal_notch"] + 15)))]
    # domes: right higher than left, both above the lung bases, IPV between carina and domes
    assert lm["dome_right"] > lm["dome_left"]
    assert lm["base_right"] < lm["dome_right"] and lm["base_left"] < lm["dome_left"]
    assert lm["carina"] > lm["bronchus_intermedius"] > lm["ipv"] > lm["dome_right"]
    assert lm["suprasternal_notch"] > lm["aortic_arch"] > lm["carina"]
    assert lm["apex_right"] > lm["suprasternal_notch"]


def test_lesion_features(ph: P.Phantom) -> None:
    # a consolidation touches the chest wall (pleura)
    cons = ph.lesions == P.CONSOLIDATION
    wall = (ph.lungs == 0) & (ph.hu > -200)
    assert (ndi.binary_dilation(cons) & wall).sum() > 50
    # a vessel runs through a ground glass lesion
    ggo = ph.lesions == P.GGO
    assert (ph.vessels & ndi.binary_dilation(ggo, iterations=2)).sum() > 10


# ---------------------------------------------------------------------------------------------
# ground truth
# ---------------------------------------------------------------------------------------------


def test_ground_truth_matches_regenerated_phantom(ph: P.Phantom, truth: dict) -> None:
    fresh = json.loads(json.dumps(P.ground_truth(ph, series_uid=truth["series_uid"])))
    committed = {k: v for k, v in truth.items() if k != "series"}
    assert fresh == committed


def test_ground_truth_format_and_totals(truth: dict) -> None:
    s = truth["scores"]
    assert set(s["six_zone"]) == {f"{side}_{z}" for side in ("right", "left") for z in ("upper", "middle", "lower")}
    assert set(s["zhang900"]) == {f"{side}_L{i}" for side in ("right", "left") for i in range(1, 6)}
    assert s["six_zone_total"] == sum(s["six_zone"].values())
    assert s["zhang900_total"] == sum(s["zhang900"].values())
    assert 6 <= s["six_zone_total"] <= 10 and s["zhang900_total"] > 0
    assert 0 in s["six_zone"].values() and 0 in s["zhang900"].values()
    dens = {v["density_grade"] for v in truth["zones"].values() if v["system"] == "zhang900"}
    assert {1, 2, 3} <= dens, "faint GGO, GGO and consolidation units"
    v = truth["volumes_ml"]
    assert 1500 < v["lung_right"] < 3500 and 1500 < v["lung_left"] < 3500
    assert v["lesion_total"] == pytest.approx(v["faint_ggo"] + v["ggo"] + v["consolidation"], abs=0.01)
    assert s["percent_opacity"] == pytest.approx(100 * v["lesion_total"] / v["lung_total"], abs=0.01)
    assert s["mosmed_category"] == P.mosmed_category(s["percent_opacity"])
    for key in ("carina", "bronchus_intermedius", "ipv", "suprasternal_notch", "aortic_arch", "dome_right",
                "dome_left", "apex_right", "apex_left", "base_right", "base_left"):
        assert key in truth["landmarks_z_mm"]


def test_lesions_are_far_from_zone_planes_and_score_thresholds(truth: dict) -> None:
    margins = truth["robustness"]["lesion_distance_to_zone_planes_mm"]
    assert margins and min(margins.values()) >= 15.0
    for shifted in truth["robustness"]["totals_with_all_planes_shifted_mm"].values():
        assert shifted["six_zone_total"] == truth["scores"]["six_zone_total"]
        assert shifted["zhang900_total"] == truth["scores"]["zhang900_total"]
    for key, u in truth["zones"].items():
        pct = u["involvement_pct"]
        if u["lesion_ml"] == 0:
            continue
        if u["system"] == "six_zone":
            assert min(abs(pct - t) for t in (0, 25, 50, 75)) >= 5.0, (key, pct)
        else:
            assert min(abs(pct - t) for t in range(5, 100, 10)) >= 3.0, (key, pct)
            assert u["lesion_ml"] >= 5.0, key


def test_truth_scoring_rules() -> None:
    assert [P.six_zone_score(p) for p in (0, 0.1, 24.9, 25, 49.9, 50, 74.9, 75, 100)] == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert [P.zhang_extent(p) for p in (0, 0.1, 14.9, 15, 94.9, 95, 100)] == [0, 1, 1, 2, 9, 10, 10]
    assert P.density_grade({1: 10.0, 2: 5.0, 3: 2.0}) == 2
    assert P.density_grade({1: 10.0, 2: 1.0, 3: 3.0}) == 3
    assert P.density_grade({1: 0.0, 2: 0.0, 3: 0.0}) == 0
    assert [P.mosmed_category(p) for p in (0, 10, 30, 60, 80)] == ["CT-0", "CT-1", "CT-2", "CT-3", "CT-4"]


# ---------------------------------------------------------------------------------------------
# the committed series
# ---------------------------------------------------------------------------------------------


def test_sample_size_limit() -> None:
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total <= 5 * 1024 * 1024, total


def test_sample_is_valid_ct_and_geometry_recovers_volume(ph: P.Phantom, truth: dict) -> None:
    hu, dss = _read_hu_pydicom(SAMPLE)
    assert len(dss) == ph.hu.shape[0]
    names = [p.name for p in _dicom_files(SAMPLE)]
    inst = [int(pydicom.dcmread(SAMPLE / n, stop_before_pixels=True).InstanceNumber) for n in names]
    assert inst != sorted(inst), "file names are not in slice order"
    for d in dss:
        assert d.SOPClassUID == P.CT_IMAGE_STORAGE and d.file_meta.MediaStorageSOPClassUID == P.CT_IMAGE_STORAGE
        assert d.Modality == "CT" and list(d.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert d.SeriesInstanceUID == truth["series_uid"] and str(d.PatientID) == "PHANTOM001"
        assert float(d.RescaleSlope) == 1.0 and float(d.RescaleIntercept) == -1024.0
    assert len({d.SOPInstanceUID for d in dss}) == len(dss)
    zs = np.array([float(d.ImagePositionPatient[2]) for d in dss])
    assert np.allclose(zs, ph.z_mm, atol=1e-3)
    assert np.allclose([float(v) for v in dss[0].PixelSpacing], ph.spacing[1:])
    assert float(dss[0].SliceThickness) == ph.spacing[0]
    assert np.array_equal(hu, ph.hu)


def test_sample_reads_with_simpleitk(ph: P.Phantom) -> None:
    img = _read_sitk_lps(SAMPLE)
    assert img.GetSize() == ph.hu.shape[::-1]
    assert np.allclose(img.GetSpacing(), ph.spacing[::-1])
    assert np.allclose(img.GetOrigin(), ph.origin, atol=1e-3)
    assert np.array_equal(sitk.GetArrayFromImage(img), ph.hu)


def test_regenerating_the_sample_is_byte_identical(tmp_path: Path) -> None:
    from tests.scripts_loader import load_script

    assert load_script("make_sample_dicoms").main(["--out", str(tmp_path), "--seed", "0"]) == 0
    committed = {p.name: p.read_bytes() for p in SAMPLE.iterdir() if p.is_file()}
    fresh = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert committed.keys() == fresh.keys()
    assert all(committed[k] == fresh[k] for k in committed)


# ---------------------------------------------------------------------------------------------
# variants
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", ["axial", "reversed", "feet_first"])
def test_orientation_variants(tmp_path: Path, orientation: str) -> None:
    v = P.make_phantom(**SMALL, orientation=orientation)
    P.write_dicom_series(v, tmp_path, compress=False)
    hu, dss = _read_hu_pydicom(tmp_path)
    if orientation == "feet_first":
        assert dss[0].PatientPosition == "FFS" and float(dss[0].ImageOrientationPatient[0]) == -1.0
        hu = hu[::-1, :, ::-1]  # slice normal (row x column) points to the feet; rows run to patient right
    assert np.array_equal(hu, v.hu)
    first = min(dss, key=lambda d: int(d.InstanceNumber))
    top = float(first.ImagePositionPatient[2]) == pytest.approx(v.z_mm[-1])
    assert top == (orientation != "axial")
    img = _read_sitk_lps(tmp_path)
    assert np.array_equal(sitk.GetArrayFromImage(img), v.hu)
    assert np.allclose(img.GetOrigin(), v.origin, atol=1e-3)


def test_spacing_and_matrix_variant(tmp_path: Path) -> None:
    v = P.make_phantom(shape=(50, 96, 112), spacing=(6.0, 3.5, 3.0), seed=1)
    info = P.write_dicom_series(v, tmp_path, compress=True)
    assert info["n"] == 50
    img = _read_sitk_lps(tmp_path)
    assert img.GetSize() == (112, 96, 50) and np.allclose(img.GetSpacing(), (3.0, 3.5, 6.0))
    assert np.array_equal(sitk.GetArrayFromImage(img), v.hu)
    # anatomy does not depend on the grid: volumes agree with the sample within a few percent
    ref = P.volumes_ml(P.make_phantom(**SMALL, seed=1))
    vol = P.volumes_ml(v)
    assert vol["lung_right"] == pytest.approx(ref["lung_right"], rel=0.08)


def test_per_slice_rescale_variant(tmp_path: Path) -> None:
    v = P.make_phantom(**SMALL)
    P.write_dicom_series(v, tmp_path, compress=False, rescale="per_slice")
    hu, dss = _read_hu_pydicom(tmp_path)
    assert len({(float(d.RescaleSlope), float(d.RescaleIntercept)) for d in dss}) > 2
    assert np.array_equal(hu, v.hu)


def test_lesion_load_variants() -> None:
    none = P.make_phantom(**SMALL, lesions=None)
    assert not none.lesions.any()
    gt = P.ground_truth(none)
    assert gt["scores"]["six_zone_total"] == 0 and gt["scores"]["zhang900_total"] == 0
    assert gt["scores"]["mosmed_category"] == "CT-0"
    heavy = P.ground_truth(P.make_phantom(**SMALL, lesions="heavy"))
    default = P.ground_truth(P.make_phantom(**SMALL))
    assert heavy["scores"]["percent_opacity"] > 2 * default["scores"]["percent_opacity"]
    assert heavy["scores"]["six_zone_total"] > default["scores"]["six_zone_total"]
    custom = [P.LesionSpec("x", P.LEFT, P.GGO, (90.0, 0.0, -40.0), (30.0, 30.0, 15.0))]
    c = P.make_phantom(**SMALL, lesions=custom)
    assert set(np.unique(c.lesions)) == {0, 2} and np.all(c.lungs[c.lesions > 0] == P.LEFT)
    with pytest.raises(ValueError):
        P.make_phantom(**SMALL, lesions="bogus")
