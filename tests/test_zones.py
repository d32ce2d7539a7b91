"""Zones and unit scores on small synthetic arrays with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.config import load_config
from scoring.landmarks import Landmark
from scoring.quantify import TOTALSEGMENTATOR_LOBES, map_lobe_labels, score_scan
from scoring.zones import ZInterval, six_zone_intervals, zhang_intervals

Z = np.arange(20, dtype=float) * 10.0  # 20 slices, z = 0..190 mm, index grows cranially


def lms(**z: float | None) -> dict[str, Landmark]:
    return {k: Landmark(k, v, "detected", "high") for k, v in z.items()}


LEVELS = dict(suprasternal_notch=170.0, aortic_arch=140.0, carina=110.0, bronchus_intermedius=80.0,
              ipv=60.0, dome_right=30.0, dome_left=30.0)


def phantom(lesion_slices: dict[int, int] | None = None, cut_top: bool = False, cut_bottom: bool = False):
    """Both lungs in slices 1..18 (10 x 10 voxels each); lesion rows per slice (class 2) in the right lung."""
    nz = len(Z)
    lungs = np.zeros((nz, 10, 20), np.uint8)
    k0, k1 = (0 if cut_bottom else 1), (nz if cut_top else nz - 1)
    lungs[k0:k1, :, :10] = 1
    lungs[k0:k1, :, 10:] = 2
    classes = np.zeros(lungs.shape, np.uint8)
    for k, rows in (lesion_slices or {}).items():
        classes[k, :rows, :10] = 2
    hu = np.where(classes > 0, -500, -850).astype(float)
    return hu, lungs, classes


def cfg(**zhang):
    c = load_config()
    c["scoring"]["min_involvement_ml"] = 0.0
    c["scoring"]["min_involvement_pct"] = 0.0
    c["scoring"]["zhang900"].update(zhang)
    return c


def rows(zones, system, lung="right"):
    return {r["unit"]: r for r in zones if r["system"] == system and r["lung"] == lung}


def test_six_zone_intervals_split_at_carina_and_ipv():
    iv = six_zone_intervals(110.0, 60.0)
    assert iv["upper"] == ZInterval(110.0, math.inf)
    assert iv["middle"] == ZInterval(60.0, 110.0)
    assert iv["lower"] == ZInterval(-math.inf, 60.0)
    assert six_zone_intervals(None, 60.0) == dict.fromkeys(("upper", "middle", "lower"))


def test_zhang_slab_and_zone_modes():
    levels = [170.0, 140.0, 110.0, 80.0, 30.0]
    slab = zhang_intervals(levels, "slab", 5.0)
    assert slab["L3"] == ZInterval(105.0, 115.0)
    zone = zhang_intervals(levels, "zone")
    assert zone["L1"] == ZInterval(155.0, math.inf)
    assert zone["L3"] == ZInterval(95.0, 125.0)
    assert zone["L5"] == ZInterval(-math.inf, 55.0)
    with pytest.raises(ValueError):
        zhang_intervals(levels, "bogus")


def test_six_zone_scores_hand_computed():
    # right lung: slices 12..18 upper (7 slices); lesion fills 5 of 10 rows in slices 12 and 13
    # -> 2 slices x 50 % = 100 / 700 voxels = 14.3 % -> six-zone score 1
    hu, lungs, classes = phantom({12: 5, 13: 5})
    row, zones, flags = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg())
    r = rows(zones, "six_zone")
    assert r["upper"]["involvement_pct"] == pytest.approx(100 * 100 / 700, abs=1e-3)
    assert r["upper"]["unit_score"] == 1 and r["middle"]["unit_score"] == 0
    assert row["six_zone_total"] == 1 and not flags


def test_slab_vs_zone_mode_differ_as_expected():
    # lesion only in slice 13 (z = 130): outside the L2 slab (140 +- 5) but inside the L2 zone (125..155]
    hu, lungs, classes = phantom({13: 10})
    _, slab, _ = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg(mode="slab"))
    _, zone, _ = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg(mode="zone"))
    assert rows(slab, "zhang900")["L2"]["unit_score"] == 0
    # zone L2 = slices 13, 14, 15 -> 1 of 3 slices = 33.3 % -> extent 3, density 2 (GGO) -> 3 x 4 = 12
    assert rows(zone, "zhang900")["L2"]["unit_score"] == 12
    # slab L3: slices with 105 < z <= 115 = slice 11 only; no lesion
    assert rows(slab, "zhang900")["L3"]["unit_score"] == 0


def test_density_rule_predominant_vs_densest():
    hu, lungs, classes = phantom({11: 10})  # slab L3 = slice 11: 100 % involved
    classes[11, :7, :10] = 1  # 70 % faint ground glass
    classes[11, 7:, :10] = 3  # 30 % consolidation
    _, pre, _ = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg(density_rule="predominant"))
    _, den, _ = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg(density_rule="densest", density_share=0.2))
    assert rows(pre, "zhang900")["L3"]["density_grade"] == 1 and rows(pre, "zhang900")["L3"]["unit_score"] == 10
    assert rows(den, "zhang900")["L3"]["density_grade"] == 3 and rows(den, "zhang900")["L3"]["unit_score"] == 90


def test_min_involvement_rule():
    hu, lungs, classes = phantom()
    classes[15, 0, 0] = 2  # one voxel = 1 mL at voxel_ml 1.0; upper right zone has 700 voxels (0.14 %)
    c = cfg()
    c["scoring"]["min_involvement_ml"] = 2.0
    _, zones, _ = score_scan(hu, lungs, classes, Z, 1.0, lms(**LEVELS), c)
    assert rows(zones, "six_zone")["upper"]["unit_score"] == 0
    c["scoring"]["min_involvement_ml"] = 1.0
    c["scoring"]["min_involvement_pct"] = 0.1
    _, zones, _ = score_scan(hu, lungs, classes, Z, 1.0, lms(**LEVELS), c)
    assert rows(zones, "six_zone")["upper"]["unit_score"] == 1


def test_partial_coverage_zones_missing_not_zero():
    hu, lungs, classes = phantom(cut_top=True)  # lungs run out of the top of the scan
    levels = dict(LEVELS, suprasternal_notch=None)
    row, zones, flags = score_scan(hu, lungs, classes, Z, 0.001, lms(**levels), cfg())
    assert row["apex_covered"] is False and row["base_covered"] is True
    assert "PARTIAL_LUNG_COVERAGE" in flags and "ZONES_MISSING" in flags
    up = rows(zones, "six_zone")["upper"]
    assert up["status"] == "missing" and math.isnan(up["unit_score"])
    assert rows(zones, "six_zone")["lower"]["status"] == "ok"
    assert math.isnan(rows(zones, "zhang900")["L1"]["unit_score"])
    assert math.isnan(row["six_zone_total"]) and math.isnan(row["zhang900_total"])


def test_lobar_scores_on_synthetic_lobe_map():
    hu, lungs, classes = phantom()
    lobes = np.zeros(lungs.shape, np.uint8)
    for code, (a, b) in {1: (0, 2), 2: (2, 5), 3: (5, 10), 4: (10, 15), 5: (15, 20)}.items():
        lobes[1:19, :, a:b] = code
    classes[1:19, :, 0:2][:, :8] = 2      # right upper: 80 % -> 4 / 5
    classes[1:19, :, 5:10][:, :1] = 2     # right lower: 10 % -> 1 / 2
    classes[1:10, :, 15:20][:, :1] = 2    # left lower: 9 of 180 rows-slices = 5 % -> 1 / 2
    row, zones, _ = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg(), lobes=lobes)
    lob = {r["unit"]: r for r in zones if r["system"] == "lobar"}
    assert lob["right_upper"]["extent_score"] == 4 and lob["right_upper"]["unit_score"] == 5
    assert lob["right_lower"]["extent_score"] == 1 and lob["right_lower"]["unit_score"] == 2
    assert lob["left_lower"]["extent_score"] == 1 and lob["left_lower"]["unit_score"] == 2
    assert lob["right_middle"]["unit_score"] == 0
    assert row["lobar20_total"] == 6 and row["lobar25_total"] == 9


def test_totalsegmentator_lobe_labels_are_mapped():
    lab = np.array([0, 10, 11, 12, 13, 14, 5])
    assert map_lobe_labels(lab, TOTALSEGMENTATOR_LOBES).tolist() == [0, 4, 5, 1, 2, 3, 0]


def test_boundary_shares_are_graded_exactly_whatever_the_voxel_size():
    """300 of 400 voxels is 75 %: grade 4, also where voxel count x voxel volume has floating-point error."""
    from scoring import systems
    from scoring.quantify import percent

    for sp in ((0.742, 0.742, 2.0), (1.5, 1.5, 1.5), (0.6, 0.6, 0.625), (0.7, 0.7, 1.25)):
        v = sp[0] * sp[1] * sp[2] / 1000.0
        assert percent(300 * v, 400 * v) == 75.0
        assert systems.six_zone_score(percent(300 * v, 400 * v), True) == 4
        assert systems.zhang_extent(percent(15 * v, 100 * v), True) == systems.zhang_extent(15.0, True)
    assert math.isnan(percent(1.0, 0.0))


def test_stray_voxels_in_the_edge_slice_do_not_cut_the_lung():
    """The landmark detector's rule: the edge slice must itself hold >= 5 mm2 of that lung."""
    hu, lungs, classes = phantom()
    pixel_mm2 = 1.0  # voxel 1 x 1 x 10 mm = 0.01 mL
    lungs[-1, 0, 0] = 1  # one stray right-lung voxel (1 mm2) in the top slice
    row, _, flags = score_scan(hu, lungs, classes, Z, 0.01, lms(**LEVELS), cfg())
    assert row["apex_covered"] is True and "PARTIAL_LUNG_COVERAGE" not in flags
    lungs[-1, 0, :6] = 1  # 6 mm2: cut off
    assert 6 * pixel_mm2 >= 5.0
    row, _, flags = score_scan(hu, lungs, classes, Z, 0.01, lms(**LEVELS), cfg())
    assert row["apex_covered"] is False and "PARTIAL_LUNG_COVERAGE" in flags


def test_lobes_cut_off_or_absent_are_missing_not_zero():
    hu, lungs, classes = phantom()
    lobes = np.zeros(lungs.shape, np.uint8)
    for code, (a, b) in {1: (0, 2), 3: (5, 10), 4: (10, 15), 5: (15, 20)}.items():  # no right middle lobe
        lobes[1:19, :, a:b] = code
    row, zones, flags = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg(), lobes=lobes)
    lob = {r["unit"]: r for r in zones if r["system"] == "lobar"}
    assert lob["right_middle"]["status"] == "missing" and math.isnan(lob["right_middle"]["unit_score"])
    assert lob["right_upper"]["status"] == "ok"
    assert math.isnan(row["lobar20_total"]) and math.isnan(row["lobar25_total"]) and "LOBES_MISSING" in flags
    # all five lobes, the upper ones running out of the top of the scan
    hu, lungs, classes = phantom(cut_top=True)
    for code, (a, b) in {1: (0, 2), 2: (2, 5), 3: (5, 10), 4: (10, 15), 5: (15, 20)}.items():
        lobes[1:19, :, a:b] = code
    lobes[19, :, 0:2], lobes[19, :, 10:15] = 1, 4  # 20 and 50 mm2 in the top slice (1 x 1 mm pixels)
    row, zones, flags = score_scan(hu, lungs, classes, Z, 0.01, lms(**LEVELS), cfg(), lobes=lobes)
    lob = {r["unit"]: r for r in zones if r["system"] == "lobar"}
    assert lob["right_upper"]["status"] == "missing" and lob["left_upper"]["status"] == "missing"
    assert lob["right_lower"]["status"] == "ok" and math.isnan(row["lobar20_total"])


def test_plane_tilt_of_an_image():
    """The angle between an image's slice planes and the axial plane (above 2 degrees: ZONED_AXIALLY)."""
    import SimpleITK as sitk

    from pipeline.run import TILT_FLAG_DEG, plane_tilt_deg

    img = sitk.Image(4, 4, 4, sitk.sitkInt16)
    assert plane_tilt_deg(img) == pytest.approx(0.0)
    a = np.radians(14.0)
    img.SetDirection((1, 0, 0, 0, np.cos(a), -np.sin(a), 0, np.sin(a), np.cos(a)))  # rows tilted about x
    assert plane_tilt_deg(img) == pytest.approx(14.0)
    img.SetDirection((1, 0, 0, 0, 0, 1, 0, 1, 0))  # coronal slices
    assert plane_tilt_deg(img) == pytest.approx(90.0)
    assert 0 < TILT_FLAG_DEG < 14


def test_voxel_z_of_a_tilted_image_matches_simpleitk():
    """Every voxel's patient z, checked against SimpleITK's index-to-point transform."""
    import SimpleITK as sitk

    from pipeline.run import voxel_z_mm

    img = sitk.Image(7, 5, 4, sitk.sitkInt16)
    a = np.radians(14.0)
    img.SetDirection((1, 0, 0, 0, np.cos(a), -np.sin(a), 0, np.sin(a), np.cos(a)))
    img.SetSpacing((0.7, 0.8, 2.5))
    img.SetOrigin((-10.0, 20.0, -300.0))
    z = voxel_z_mm(img)
    assert z.shape == (4, 5, 7)
    for i, j, k in [(0, 0, 0), (6, 4, 3), (3, 2, 1), (0, 4, 2)]:
        assert z[k, j, i] == pytest.approx(img.TransformIndexToPhysicalPoint((i, j, k))[2], abs=1e-3)


def test_tilted_slices_are_zoned_at_axial_planes():
    """On slices tilted from axial a zone border is an axial plane through the volume, not the slice centre's z:
    lesion in the anterior half of a slice whose centre lies just below the carina, but whose anterior half lies
    above it, belongs to the upper zone (SCORING.md defines zones by axial levels)."""
    hu, lungs, classes = phantom()
    # rows (y, anterior -> posterior) 1 mm apart; the slice planes tilt so that z falls by 1 mm per row
    z_voxel = (Z[:, None, None] + 5.0 - np.arange(10, dtype=float)[None, :, None] * 1.0
               + np.zeros((1, 1, 20))).astype(np.float32)
    classes[10, :5, :10] = 2  # slice 10 (z 100 by index), anterior rows 0-4: z 105..101, below the carina at 110
    classes[11, :4, :10] = 2  # slice 11 (z 110 by index), rows 0-3: z 115..112, above the carina
    sl = rows(score_scan(hu, lungs, classes, Z, 0.01, lms(**LEVELS), cfg())[1], "six_zone")
    vx = rows(score_scan(hu, lungs, classes, Z, 0.01, lms(**LEVELS), cfg(), z_voxel=z_voxel)[1], "six_zone")
    # by slice index (z 100, 110): both lesion pieces lie in the middle zone (110 is not above the carina)
    assert sl["upper"]["lesion_ml"] == 0 and sl["middle"]["lesion_ml"] == pytest.approx(0.9)
    # voxel by voxel: slice 11's rows 0-3 (z 112-115) are upper, slice 10's lesion stays middle
    assert vx["upper"]["lesion_ml"] == pytest.approx(0.4)
    assert vx["middle"]["lesion_ml"] == pytest.approx(0.5)
    # the lung is split likewise: the zones still add up to the whole lung
    total = sum(vx[u]["lung_ml"] for u in ("upper", "middle", "lower"))
    assert total == pytest.approx(float((lungs == 1).sum()) * 0.01)
    with pytest.raises(ValueError, match="z_voxel"):
        score_scan(hu, lungs, classes, Z, 0.01, lms(**LEVELS), cfg(), z_voxel=z_voxel[:, :, :3])


def test_qc_title_says_missing_for_a_missing_total():
    """qc.png's title shows a total the scan cannot see as "missing" (it printed "nan")."""
    from pipeline.run import _total_text

    assert _total_text(math.nan, 24) == "missing" and _total_text(None, 900) == "missing"
    assert _total_text(6, 24) == "6/24" and _total_text(6.0, 24) == "6/24" and _total_text(12.5, 900) == "12.5/900"
