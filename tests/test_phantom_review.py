"""Review of the phantom's ground truth (pipeline/phantom.py:score_truth) against SCORING.md / docs/scoring.md and
the scorer (scoring/quantify.py), and of the committed sample series' DICOM."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipeline import phantom as P

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_dicoms"
LM = {"suprasternal_notch": 60.0, "aortic_arch": 30.0, "carina": 0.0, "bronchus_intermedius": -20.0,
      "ipv": -50.0, "dome_right": -80.0, "dome_left": -80.0}


def _scorer(lungs, lesions, z_mm, voxel_ml, landmarks, hu=None):
    """The project's scorer on the same masks and levels, involvement minima as configured by default."""
    from pipeline.config import load_config
    from scoring.landmarks import Landmark
    from scoring.quantify import score_scan

    lms = {k: Landmark(k, float(v), "detected", "high") for k, v in landmarks.items()}
    hu = np.zeros(lungs.shape, np.float32) if hu is None else hu
    row, zones, _ = score_scan(hu, lungs, lesions, np.asarray(z_mm, float), voxel_ml, lms, load_config())
    return row, {f"{r['system']}/{r['lung']}_{r['unit']}": r for r in zones}


def _slabs(z_mm, n_xy=10):
    """Both lungs filling every slice but the first and last (whole lungs in the scan), no lesion."""
    lungs = np.zeros((len(z_mm), n_xy, 2 * n_xy), np.uint8)
    lungs[1:-1, :, :n_xy] = P.RIGHT
    lungs[1:-1, :, n_xy:] = P.LEFT
    return lungs, np.zeros_like(lungs)


def _assert_truth_equals_scorer(truth, rows):
    for key, d in truth["detail"].items():
        r = rows[key]
        if r["status"] == "missing":
            assert d["unit_score"] is None, key
            continue
        assert d["unit_score"] == r["unit_score"], key
        assert d["lung_ml"] == pytest.approx(r["lung_ml"], abs=0.01), key
        assert d["lesion_ml"] == pytest.approx(r["lesion_ml"], abs=0.01), key


def test_slice_exactly_on_the_ipv_is_middle_zone() -> None:
    """SCORING.md "from the carina down to the IPV": a slice exactly on the IPV is middle (scoring/zones.py)."""
    z = np.arange(-100.0, 81.0, 10.0)  # slices at -50 (IPV) and 0 (carina) exactly
    lungs, lesions = _slabs(z)
    k_ipv = int(np.nonzero(z == -50.0)[0][0])
    lesions[k_ipv, :, :3] = P.CONSOLIDATION  # lesion only in the IPV slice of the right lung
    vml = 1.0
    t = P.score_truth(lungs, lesions, z, LM, vml)
    mid, low = t["detail"]["six_zone/right_middle"], t["detail"]["six_zone/right_lower"]
    assert mid["lung_ml"] == 6 * 100 * vml  # -50, -40, ..., 0
    assert mid["lesion_ml"] == 30 * vml and low["lesion_ml"] == 0
    assert t["six_zone"]["right_middle"] == 1 and t["six_zone"]["right_lower"] == 0
    _assert_truth_equals_scorer(t, _scorer(lungs, lesions, z, vml, LM)[1])


def test_slab_edges_half_open_and_widened_on_thick_slices() -> None:
    """zhang900 slabs: level - h <= z < level + h (a slice exactly on the lower edge counts, one on the upper edge
    does not: the same number of slices wherever the level falls), h widened to half the slice step so that a slab
    between two thick slices still holds the nearest one."""
    z = np.arange(-100.0, 81.0, 2.5)  # slices exactly at carina -+ 5 mm
    lungs, lesions = _slabs(z)
    t = P.score_truth(lungs, lesions, z, LM, 1.0)
    assert t["detail"]["zhang900/right_L3"]["lung_ml"] == 4 * 100  # -5, -2.5, 0, 2.5
    _assert_truth_equals_scorer(t, _scorer(lungs, lesions, z, 1.0, LM)[1])

    z = np.arange(-102.0, 90.0, 12.0)  # 12 mm slices at -6 and +6: none within +-5 mm of the carina
    lungs, lesions = _slabs(z)
    k = int(np.argmin(np.abs(z + 6.0)))
    lesions[k, :, :5] = P.GGO  # half of the right lung in the slice at -6, the slab's lower edge
    t = P.score_truth(lungs, lesions, z, LM, 1.0)
    d = t["detail"]["zhang900/right_L3"]
    assert d["z_low_mm"] == -6.0 and d["z_high_mm"] == 6.0
    assert d["lung_ml"] == 100 and t["zhang900"]["right_L3"] == 5 * 2**2  # one slice, 50 % -> extent 5, GGO
    _assert_truth_equals_scorer(t, _scorer(lungs, lesions, z, 1.0, LM)[1])


@pytest.mark.parametrize("grid", [
    {"shape": (41, 48, 48), "spacing": (7.5, 7.0, 7.0), "z_center_mm": -79.2},  # a slice exactly on the IPV
    {"shape": (72, 48, 48), "spacing": (2.5, 7.0, 7.0), "z_center_mm": -33.75},  # slices on slab edges
    {"shape": (24, 48, 48), "spacing": (12.0, 7.0, 7.0), "z_center_mm": -35.0},  # slabs widened to 6 mm
])
def test_truth_equals_scorer_on_truth_masks(grid) -> None:
    """On the phantom's own masks and levels the truth is what the scorer computes, unit by unit; a zone or slab
    the scan cannot see (the lung cut off, a slab outside the scan) is missing in both, with the totals."""
    ph = P.make_phantom(**grid)
    t = P.score_truth(ph.lungs, ph.lesions, ph.z_mm, ph.landmarks_z_mm, ph.voxel_ml)
    row, rows = _scorer(ph.lungs, ph.lesions, ph.z_mm, ph.voxel_ml, ph.landmarks_z_mm, ph.hu)
    _assert_truth_equals_scorer(t, rows)
    for system in ("six_zone", "zhang900"):
        want = row[f"{system}_total"]
        assert (t[f"{system}_total"] is None) if math.isnan(want) else t[f"{system}_total"] == want


def test_cut_off_lung_zones_are_missing_not_zero() -> None:
    """SCORING.md: the zones a scan cannot see are missing, not 0 (and the totals with them)."""
    z = np.arange(-100.0, 81.0, 10.0)
    lungs, lesions = _slabs(z)
    lungs[-1] = lungs[-2]  # the lungs fill the top slice: apex cut off
    lm = dict(LM, suprasternal_notch=83.0)  # slab 78-88 mm reaches past the last slice's half step (85 mm)
    t = P.score_truth(lungs, lesions, z, lm, 1.0)
    assert t["six_zone"]["right_upper"] is None and t["six_zone"]["left_upper"] is None
    assert t["six_zone"]["right_middle"] == 0 and t["six_zone_total"] is None
    assert t["zhang900"]["right_L1"] is None and t["zhang900"]["right_L2"] == 0 and t["zhang900_total"] is None
    _assert_truth_equals_scorer(t, _scorer(lungs, lesions, z, 1.0, lm)[1])


def test_share_exactly_on_a_boundary_gets_its_grade() -> None:
    """docs/scoring.md: percentages are rounded to 1e-9 % before grading (300 of 400 voxels at 1.3 x 1.3 x 2.5 mm
    is 74.99999999999999 % unrounded, grade 3)."""
    z = np.arange(-100.0, 81.0, 10.0)
    lungs, lesions = _slabs(z, n_xy=20)  # 400 voxels per lung slice
    k = int(np.nonzero(z == 50.0)[0][0])
    lungs[(z > 0) & (z != 50.0)] = 0  # the upper zone is one slice of lung
    lesions[k, :15, :20] = P.GGO  # 300 of the slice's 400 right-lung voxels
    vml = 1.3 * 1.3 * 2.5 / 1000
    t = P.score_truth(lungs, lesions, z, LM, vml)
    assert t["six_zone"]["right_upper"] == 4
    _assert_truth_equals_scorer(t, _scorer(lungs, lesions, z, vml, LM)[1])


def test_unit_below_the_involvement_minimum_scores_zero() -> None:
    """SCORING.md: a minimum lesion size must be reached before a zone counts (default 1 mL and 0.25 %), so
    that noise does not score 1; the truth uses the scorer's documented defaults."""
    z = np.arange(-100.0, 81.0, 10.0)
    lungs, lesions = _slabs(z)
    lesions[np.nonzero(z == 30.0)[0][0], 0, :5] = P.CONSOLIDATION  # 5 voxels x 0.1 mL = 0.5 mL, at L2
    t = P.score_truth(lungs, lesions, z, LM, 0.1)
    assert t["detail"]["six_zone/right_upper"]["lesion_ml"] == 0.5
    assert t["six_zone"]["right_upper"] == 0 and t["zhang900"]["right_L2"] == 0
    _assert_truth_equals_scorer(t, _scorer(lungs, lesions, z, 0.1, LM)[1])


def test_mosmed_category_needs_involvement() -> None:
    """The whole-lung MosMed category follows the same minimum (the scorer: CT-0 under 1 mL of lesion)."""
    ph = P.make_phantom(shape=(40, 64, 64), spacing=(7.5, 5.5, 5.5), lesions=None)
    k, y, x = (int(v[0]) for v in np.nonzero(ph.lungs == P.RIGHT))
    ph.lesions[k, y, x] = P.GGO  # one voxel, 0.23 mL
    gt = P.ground_truth(ph)
    assert 0 < gt["scores"]["percent_opacity"] and gt["scores"]["mosmed_category"] == "CT-0"


def test_committed_truth_documents_the_conventions() -> None:
    truth = json.loads((SAMPLE / "ground_truth.json").read_text())
    assert "IPV <= z <= carina" in truth["description"] and "half the slice step" in truth["description"]


def test_sample_is_valid_ct_image_storage() -> None:
    """Type 1/2 attributes of CT Image Storage present and consistent; highdicom accepts the series."""
    import highdicom as hd
    from pydicom.dataset import validate_file_meta

    files = sorted(p for p in SAMPLE.iterdir() if p.is_file() and p.name != "ground_truth.json")
    dss = [pydicom.dcmread(p) for p in files]
    for d in dss:
        validate_file_meta(d.file_meta)
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert d.file_meta.TransferSyntaxUID == pydicom.uid.RLELossless
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                   "ReferringPhysicianName", "StudyID", "AccessionNumber", "SeriesNumber", "PatientPosition",
                   "PositionReferenceIndicator", "Manufacturer", "InstanceNumber", "SliceThickness", "KVP",
                   "AcquisitionNumber"):
            assert kw in d, kw
        for kw in ("FrameOfReferenceUID", "ImageType", "PixelSpacing", "ImageOrientationPatient",
                   "ImagePositionPatient", "RescaleIntercept", "RescaleSlope", "StudyInstanceUID",
                   "SeriesInstanceUID"):
            assert d.get(kw) not in (None, ""), kw
        assert float(d.SliceLocation) == float(d.ImagePositionPatient[2])
    assert len({d.FrameOfReferenceUID for d in dss}) == len({d.StudyInstanceUID for d in dss}) == 1
    assert sorted(int(d.InstanceNumber) for d in dss) == list(range(1, len(dss) + 1))
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    legacy = hd.legacy.LegacyConvertedEnhancedCTImage(dss, series_instance_uid=hd.UID(), series_number=99,
                                                      sop_instance_uid=hd.UID(), instance_number=1)
    assert int(legacy.NumberOfFrames) == len(dss)
