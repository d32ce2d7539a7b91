"""Lungs cut by the reconstructed field of view, and a lung the segmentation does not find.

A field of view smaller than the chest shows part of a lung: the scores of such a scan are of the visible part
(flag ``LUNG_CUT_BY_FOV``). A segmenter may drop the cut lung altogether (the classical one takes air open to
the edge for air outside the body): that lung's zones are then missing, not scored 0 (flag ``LUNG_NOT_FOUND``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.conftest import SAMPLE

sitk = pytest.importorskip("SimpleITK")


def two_lungs(shape=(20, 64, 64)):
    """Right lung (label 1) on the image's left, left lung (2) on its right, 1 mm voxels."""
    lungs = np.zeros(shape, np.uint8)
    lungs[2:18, 16:48, 8:28] = 1
    lungs[2:18, 16:48, 36:56] = 2
    return lungs


def circle_padding(shape, radius, centre_x=None):
    nz, ny, nx = shape
    yy, xx = np.mgrid[:ny, :nx]
    cx = (nx - 1) / 2 if centre_x is None else centre_x
    return np.broadcast_to(np.hypot(yy - (ny - 1) / 2, xx - cx) > radius, shape)


def test_lungs_inside_the_field_of_view_are_not_flagged():
    from pipeline.fov import fov_flags, lung_fov_contact

    lungs = np.pad(two_lungs(), ((0, 0), (16, 16), (16, 16)))
    pad = circle_padding(lungs.shape, 47.5)  # the FOV holds both lungs, 8 mm from them at the nearest
    contact = lung_fov_contact(lungs, (1.0, 1.0, 1.0), pad)
    assert contact["cut_slices"] == 0 and contact["lung_slices"] == 16
    assert fov_flags(lungs, (1.0, 1.0, 1.0), pad) == []
    assert fov_flags(lungs, (1.0, 1.0, 1.0), None) == []


def test_a_lung_along_the_padding_edge_is_flagged():
    from pipeline.fov import fov_flags, lung_fov_contact

    lungs = two_lungs()
    pad = circle_padding(lungs.shape, 24.0, centre_x=40.0)  # the circle cuts the right lung (image left)
    lungs[pad] = 0  # what the segmenter can see
    contact = lung_fov_contact(lungs, (1.0, 1.0, 1.0), pad)
    assert contact["cut_slices"] == 16 and contact["max_contact_mm"] >= 20
    assert fov_flags(lungs, (1.0, 1.0, 1.0), pad) == ["LUNG_CUT_BY_FOV:100"]


def test_a_lung_stopping_a_few_millimetres_short_of_the_edge_counts_as_cut():
    """The network leaves the last millimetres before the edge out (it sees air beyond): still cut."""
    from pipeline.fov import EDGE_TOLERANCE_MM, fov_flags

    lungs = two_lungs()
    pad = circle_padding(lungs.shape, 24.0, centre_x=40.0)
    from scipy import ndimage

    near = ndimage.binary_dilation(pad, structure=np.ones((1, 5, 5), bool), iterations=1)  # 2 mm short
    assert EDGE_TOLERANCE_MM >= 2
    lungs[near] = 0
    assert fov_flags(lungs, (1.0, 1.0, 1.0), pad) == ["LUNG_CUT_BY_FOV:100"]


def test_a_lung_cut_by_the_image_border_is_flagged():
    """A square crop (a small display field of view) has no padding: the image border is the edge."""
    from pipeline.fov import fov_flags

    lungs = two_lungs()[:, :, 12:]  # the right lung runs out of the image on its left
    assert fov_flags(lungs, (1.0, 0.7, 0.7), None) == ["LUNG_CUT_BY_FOV:100"]


def test_one_slice_touching_the_edge_is_not_enough():
    from pipeline.fov import fov_flags, lung_fov_contact

    lungs = np.zeros((100, 64, 64), np.uint8)
    lungs[2:98] = two_lungs((20, 64, 64))[10]
    lungs[50, 16:48, 0:8] = 1  # one slice reaches the border
    assert lung_fov_contact(lungs, (1.0, 1.0, 1.0))["cut_slices"] == 1
    assert fov_flags(lungs, (1.0, 1.0, 1.0)) == []


def _score(lungs, cfg=None):
    from pipeline.config import load_config
    from scoring.landmarks import Landmark
    from scoring.quantify import score_scan

    cfg = cfg or load_config()
    z = np.arange(lungs.shape[0], dtype=float) * 10.0
    levels = dict(suprasternal_notch=170.0, aortic_arch=140.0, carina=110.0, bronchus_intermedius=80.0, ipv=60.0,
                  dome_right=30.0, dome_left=30.0)
    lms = {k: Landmark(name=k, z_mm=v, method="detected", confidence="high") for k, v in levels.items()}
    classes = np.zeros(lungs.shape, np.uint8)
    hu = np.full(lungs.shape, -850.0)
    return score_scan(hu, lungs, classes, z, 1.0, lms, cfg)  # 1 mL voxels: each lung 16 x 32 x 20 = 10 L


def test_a_lung_not_found_has_missing_zones_not_zero():
    lungs = two_lungs()
    lungs[lungs == 1] = 0
    row, zones, flags = _score(lungs)
    assert "LUNG_NOT_FOUND:right" in flags and "ZONES_MISSING" in flags
    right = [r for r in zones if r["lung"] == "right" and r["system"] in ("six_zone", "zhang900")]
    assert right and all(r["status"] == "missing" and math.isnan(r["unit_score"]) for r in right)
    left = [r for r in zones if r["lung"] == "left" and r["system"] == "six_zone"]
    assert all(r["status"] == "ok" for r in left)
    assert math.isnan(row["six_zone_total"]) and math.isnan(row["zhang900_total"])
    assert row["lung_volume_ml_right"] == 0.0


def test_two_lungs_are_scored_and_a_small_lung_is_still_a_lung():
    lungs = two_lungs()
    row, _, flags = _score(lungs)
    assert not any(f.startswith("LUNG_NOT_FOUND") for f in flags) and row["six_zone_total"] == 0
    small = lungs.copy()
    small[(lungs == 1) & (np.arange(64)[None, None, :] < 26)] = 0  # right lung 2 columns wide: 1 L vs 10 L
    _, _, flags = _score(small)
    assert not any(f.startswith("LUNG_NOT_FOUND") for f in flags)


def _cut_sample(method: str, cut: bool = True):
    if not (SAMPLE / "ground_truth.json").is_file():
        pytest.skip("sample_dicoms/ missing (run scripts/make_sample_dicoms.py)")
    from pipeline.config import load_config
    from pipeline.run import analyse_volume
    from segmentation.factory import build_segmenter
    from segmentation.training import load_series_lps

    cfg = load_config(extra={"segmentation": {"method": method}})
    img = load_series_lps(SAMPLE)
    a = sitk.GetArrayFromImage(img)
    # a circular field of view 0.8 of the image wide, shifted 16 pixels towards the patient's left: it cuts the
    # right lung (image left), as a reconstruction centred off the patient does
    pad = circle_padding(a.shape, 0.4 * a.shape[2], centre_x=(a.shape[2] - 1) / 2 + 16) if cut else \
        np.zeros(a.shape, bool)
    b = np.where(pad, -1000.0, a).astype(np.float32)
    image = sitk.GetImageFromArray(b)
    image.CopyInformation(img)
    padding = sitk.GetImageFromArray(pad.astype(np.uint8))
    padding.CopyInformation(img)
    return analyse_volume(image, cfg, build_segmenter(cfg), padding=padding)


def test_sample_cut_by_the_fov_is_flagged_by_the_network():
    """The default network keeps most of the cut lung and the check sees it run along the edge."""
    res = _cut_sample("monai")
    assert any(f.startswith("LUNG_CUT_BY_FOV:") for f in res["flags"]), res["flags"]


def test_sample_cut_by_the_fov_loses_the_lung_to_the_classical_segmenter_and_says_so():
    """The classical segmenter takes the open lung for outside air: its zones are missing, not 0."""
    res = _cut_sample("classical")
    assert "LUNG_NOT_FOUND:right" in res["flags"], res["flags"]
    assert math.isnan(res["row"]["six_zone_total"])


def test_sample_inside_its_fov_has_neither_flag(classical_memo):
    res = _cut_sample("classical", cut=False)
    assert not any(f.startswith(("LUNG_CUT_BY_FOV", "LUNG_NOT_FOUND")) for f in res["flags"]), res["flags"]
