"""Slices tilted from axial (gantry tilt, oblique reconstruction) are scored at axial planes.

The sample series is resampled onto a grid whose slices are tilted 15 degrees about the left-right axis (what a
gantry tilt leaves after the loader's shear) and scored with the classical segmenter; its zones must match the
axial series' as the zone definitions are axial planes (SCORING.md), and better than zones read slice by slice."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SAMPLE

sitk = pytest.importorskip("SimpleITK")


def tilted_copy(img, deg: float):
    """``img`` resampled onto a grid rotated ``deg`` about x around its centre (outside it: water, not air,
    so that the sample's trachea does not open into a block of air the sample never had)."""
    a = np.radians(deg)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    centre = np.array(img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in img.GetSize()]))
    size = [img.GetSize()[0], img.GetSize()[1], int(img.GetSize()[2] * 1.1)]
    spacing = np.array(img.GetSpacing())
    origin = centre - rot @ (spacing * (np.array(size) - 1) / 2)
    return sitk.Resample(img, size, sitk.Transform(), sitk.sitkLinear, origin.tolist(), spacing.tolist(),
                         rot.flatten().tolist(), 0.0)


def test_tilted_slices_scored_at_axial_planes(classical_memo):
    if not (SAMPLE / "ground_truth.json").is_file():
        pytest.skip("sample_dicoms/ missing (run scripts/make_sample_dicoms.py)")
    from pipeline.config import load_config
    from pipeline.run import analyse_volume, plane_tilt_deg
    from scoring.quantify import score_scan
    from segmentation.classical import ClassicalSegmenter
    from segmentation.training import load_series_lps

    cfg = load_config(extra={"segmentation": {"method": "classical"}})
    seg = ClassicalSegmenter(cfg)
    img = load_series_lps(SAMPLE)
    tilted = tilted_copy(img, 15.0)
    assert plane_tilt_deg(tilted) == pytest.approx(15.0)
    ax, ti = analyse_volume(img, cfg, seg), analyse_volume(tilted, cfg, seg)

    assert "ZONED_AXIALLY:15.0" in ti["flags"] and not any(f.startswith("ZONED_AXIALLY") for f in ax["flags"])
    for name in ("carina", "dome_right", "dome_left"):
        assert ti["landmarks"][name].z_mm == pytest.approx(ax["landmarks"][name].z_mm, abs=3.0), name
    assert ti["row"]["six_zone_total"] == ax["row"]["six_zone_total"]

    def unit_ml(zones):
        return {(r["lung"], r["unit"]): r["lung_ml"] for r in zones if r["system"] == "six_zone"}

    truth = unit_ml(ax["zones"])
    voxel = unit_ml(ti["zones"])
    # the same masks and levels zoned slice by slice at the slice centre, as before
    sp = ti["spacing_zyx"]
    _, by_slice, _ = score_scan(ti["hu"], ti["lungs"], ti["classes"], ti["z_mm"], float(np.prod(sp)) / 1000.0,
                                ti["landmarks"], cfg)
    by_slice = unit_ml(by_slice)
    err_voxel = max(abs(voxel[k] - truth[k]) / truth[k] for k in truth)
    err_slice = max(abs(by_slice[k] - truth[k]) / truth[k] for k in truth)
    print(f"largest six-zone lung volume error vs axial: voxel by voxel {err_voxel:.1%}, by slice {err_slice:.1%}")
    assert err_voxel < 0.035 and err_voxel < err_slice, (err_voxel, err_slice)
