"""Contrast seen in the image (an audit of contrast-enhanced CT, finding 3): the CONTRAST flag came from the header's
ContrastBolusAgent only, so a CT pulmonary angiogram whose header names no agent was scored silently, though enhanced
vessels change the scores. Now ``mediastinum_hu`` (pipeline.hu_checks: the upper quartile of the HU of the soft
tissue between the lungs, in front of the spine) flags ``CONTRAST_SUSPECTED:<HU>`` when the header says nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import hu_checks
from pipeline.flags import FLAG_UNITS, SCORING_FLAGS, explain, unit_of
from pipeline.hu_checks import CONTRAST_SUSPECTED_HU, flags_for, measure, mediastinum_hu
from tests.conftest import require

VOXEL_ML = 0.008  # 2 mm voxels


def _chest(blood_hu: float = 40.0, spine_hu: float = 400.0, lungs_found: tuple[int, ...] = (1, 2)):
    """A chest of 2 mm voxels: air, an elliptic body of fat and muscle, two lungs (1 right at low x, 2 left), between
    them a heart and great vessels of blood at ``blood_hu`` in front and a vertebral body (``spine_hu``: cancellous
    bone reads 150-500 HU on the working grid, like enhanced blood) at the back, a sternum in front of the lungs.
    Returns (hu, lungs, lesions)."""
    z, y, x = np.mgrid[0:40, 0:128, 0:128]
    hu = np.full((40, 128, 128), -1000.0)
    body = ((y - 64) / 50.0) ** 2 + ((x - 64) / 60.0) ** 2 < 1
    hu[body] = -100.0  # fat
    hu[body & (((y - 64) / 44.0) ** 2 + ((x - 64) / 54.0) ** 2 < 1)] = 45.0  # muscle, mediastinum
    lungs = np.zeros(hu.shape, np.uint8)
    aerated = np.zeros(hu.shape, bool)
    for label, cx in ((1, 40), (2, 88)):
        lung = ((y - 60) / 30.0) ** 2 + ((x - cx) / 17.0) ** 2 < 1
        if label in lungs_found:
            lungs[lung] = label
        aerated |= lung
    hu[aerated] = -850.0
    hu[((y - 52) / 16.0) ** 2 + ((x - 64) / 9.0) ** 2 < 1] = blood_hu  # the heart's chambers, the great vessels
    hu[(((y - 80) / 9.0) ** 2 + ((x - 64) / 9.0) ** 2 < 1) & ~aerated] = spine_hu  # the vertebral body (36 mm)
    hu[(y >= 20) & (y < 26) & (abs(x - 64) < 6)] = spine_hu  # the sternum
    hu += np.random.default_rng(0).normal(0, 15, hu.shape)
    return hu, lungs, np.zeros(hu.shape, bool)


def test_a_non_contrast_chest_is_not_flagged_and_its_bone_is_not_contrast(monkeypatch):
    hu, lungs, les = _chest(40.0)
    m = measure(hu, lungs, les, VOXEL_ML)
    assert 30 < m["mediastinum_hu"] < 65 and flags_for(m, "", 1.0) == [], m
    # the vertebral body lies between the lungs at the back: measured over the lungs' whole front-to-back extent
    # (not the front 60 %), its bone would read as contrast
    monkeypatch.setattr(hu_checks, "MEDIASTINUM_FRONT_FRACTION", 1.0)
    assert mediastinum_hu(hu, lungs, hu > -500, VOXEL_ML) > CONTRAST_SUSPECTED_HU


@pytest.mark.parametrize("blood_hu", [150.0, 300.0, 450.0])  # venous phase, a CT pulmonary angiogram
def test_enhanced_blood_without_an_agent_in_the_header_is_flagged(blood_hu):
    hu, lungs, les = _chest(blood_hu)
    m = measure(hu, lungs, les, VOXEL_ML)
    assert m["mediastinum_hu"] > CONTRAST_SUSPECTED_HU, m
    for agent in (None, "", "NONE", "UNKNOWN"):  # the header says nothing, or "no": the image says contrast
        assert flags_for(m, agent, 1.0) == [f"CONTRAST_SUSPECTED:{m['mediastinum_hu']:.0f}"], (agent, m)


def test_an_agent_in_the_header_gives_contrast_only():
    """The two flags are exclusive: the header's word wins, the image only adds what the header does not say."""
    hu, lungs, les = _chest(300.0)
    m = measure(hu, lungs, les, VOXEL_ML)
    assert flags_for(m, "OMNIPAQUE 350", 1.0) == ["CONTRAST"]
    assert flags_for(m, "Iohexol", 8.0) == ["CONTRAST", "THICK_SLICES:8"]
    hu, lungs, les = _chest(40.0)
    assert flags_for(measure(hu, lungs, les, VOXEL_ML), "OMNIPAQUE 350") == ["CONTRAST"]


def test_flag_format_threshold_and_nothing_to_measure():
    assert flags_for({"mediastinum_hu": 212.4}) == ["CONTRAST_SUSPECTED:212"]
    assert flags_for({"mediastinum_hu": CONTRAST_SUSPECTED_HU}) == []  # over the limit, not at it
    assert flags_for({"mediastinum_hu": math.nan}) == [] and flags_for({}) == []
    hu, lungs, les = _chest(300.0, lungs_found=(1,))  # one lung found: no mediastinum between two lungs
    m = measure(hu, lungs, les, VOXEL_ML)
    assert math.isnan(m["mediastinum_hu"]) and flags_for(m) == []
    assert math.isnan(mediastinum_hu(hu, np.zeros(hu.shape, np.uint8), np.ones(hu.shape, bool), VOXEL_ML))


def test_the_flag_is_explained_with_its_unit():
    assert "CONTRAST_SUSPECTED" in SCORING_FLAGS and explain("CONTRAST_SUSPECTED:212").startswith(
        "the header names no contrast agent")
    assert FLAG_UNITS["CONTRAST_SUSPECTED"] == "HU" and unit_of("CONTRAST_SUSPECTED:212") == "HU"
    assert "CONTRAST_SUSPECTED:<HU>" in hu_checks.__doc__ and "CONTRAST_SUSPECTED_HU" in hu_checks.__doc__


def _working_grid(series_dir):
    """A real series as pipeline.run.analyse_volume sees it: the selected series on the 1.5 mm working grid, the
    classical lung mask, the body mask, the padding. Returns (hu, lungs, body, padding, voxel mL)."""
    import SimpleITK as sitk

    from pipeline.config import resolve_config
    from pipeline.discovery import discover, select_series
    from pipeline.loading import load_series
    from pipeline.resample import resample_to_spacing, to_lps
    from segmentation.classical import body_mask
    from segmentation.factory import build_segmenter

    cfg = resolve_config({"segmentation": {"method": "classical", "device": "cpu"}})
    vol = load_series(select_series(discover(series_dir, cfg), cfg)[0].files, cfg)
    work = resample_to_spacing(to_lps(vol.image), cfg["resample"]["spacing_mm"])
    hu = sitk.GetArrayFromImage(work).astype(np.float32)
    spacing = tuple(work.GetSpacing()[::-1])
    lungs = build_segmenter(cfg).segment(hu, spacing).lungs
    pad = None if vol.padding_mask is None else sitk.GetArrayFromImage(sitk.Resample(
        to_lps(vol.padding_mask), work, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    return hu, lungs, body_mask(hu, -500.0), pad, float(np.prod(spacing)) / 1000.0


@pytest.mark.parametrize("name", ["ge_mister_ct", "normal001"])
def test_real_non_contrast_chests_are_not_flagged_and_their_enhanced_blood_is(shared_data, name, classical_memo):
    """ge_mister_ct is sold as a contrast sample but its blood is unenhanced (40-45 HU): not flagged (hu_checks:
    35-44 HU on the six real series). Its mediastinal soft tissue (20-80 HU between the lungs, 2 mm from them) set to
    250 HU, a CT pulmonary angiogram, is flagged."""
    from scipy import ndimage as ndi

    from segmentation.classical import mediastinum

    hu, lungs, body, pad, voxel_ml = _working_grid(require(shared_data / "chest" / name))
    m = measure(hu, lungs, np.zeros(hu.shape, bool), voxel_ml, body=body, padding=pad)
    assert m["mediastinum_hu"] < CONTRAST_SUSPECTED_HU - 20, m
    assert not any(f.startswith(("CONTRAST", "CONTRAST_SUSPECTED")) for f in flags_for(m)), m
    blood = mediastinum(lungs) & ~ndi.binary_dilation(lungs > 0, iterations=2) & (hu > 20) & (hu < 80)
    enhanced = np.where(blood, 250.0, hu).astype(np.float32)
    m = measure(enhanced, lungs, np.zeros(hu.shape, bool), voxel_ml, body=body, padding=pad)
    assert m["mediastinum_hu"] > CONTRAST_SUSPECTED_HU + 50, m
    assert [f for f in flags_for(m) if f.startswith("CONTRAST")] == [f"CONTRAST_SUSPECTED:{m['mediastinum_hu']:.0f}"]
