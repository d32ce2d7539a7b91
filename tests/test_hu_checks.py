"""HU edge cases a radiologist meets (an audit on the phantom and on real CT): a wrong RescaleSlope or a +150 HU
offset passed the loader's check and scored a normal scan CT-2 to CT-4, an expiratory scan was diffuse ground glass,
metal streaks, contrast and 8-10 mm slices changed the scores; none was flagged. Now each is a QC flag
(pipeline.hu_checks), measured on a chest-like volume here and recorded in result.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pipeline.hu_checks import flags_for, has_contrast, measure


def _chest(lung_hu: float = -850.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Air around an elliptic body of fat and muscle with a spine, two lungs: (hu, lungs, lesions), 2 mm voxels."""
    z, y, x = np.mgrid[0:40, 0:128, 0:128]
    hu = np.full((40, 128, 128), -1000.0)
    rng = np.random.default_rng(0)
    body = ((y - 64) / 50.0) ** 2 + ((x - 64) / 60.0) ** 2 < 1
    hu[body] = -100.0  # fat
    hu[body & (((y - 64) / 44.0) ** 2 + ((x - 64) / 54.0) ** 2 < 1)] = 45.0  # muscle, mediastinum
    hu[body & ((y - 100) ** 2 + (x - 64) ** 2 < 49)] = 700.0  # the spine
    lungs = np.zeros(hu.shape, np.uint8)
    for label, cx in ((1, 40), (2, 88)):
        lung = ((y - 60) / 30.0) ** 2 + ((x - cx) / 17.0) ** 2 < 1
        lungs[lung] = label
    hu[lungs > 0] = lung_hu
    hu += rng.normal(0, 15, hu.shape)
    return hu, lungs, np.zeros(hu.shape, bool)


VOXEL_ML = 0.008


def test_a_calibrated_inspiratory_chest_is_not_flagged():
    hu, lungs, les = _chest()
    m = measure(hu, lungs, les, VOXEL_ML)
    assert abs(m["air_hu"] + 1000) < 5 and -100 < m["tissue_hu"] < 60 and abs(m["healthy_lung_hu"] + 850) < 5
    assert m["metal_ml"] == 0 and flags_for(m, "", 1.25) == []


@pytest.mark.parametrize("name, transform", [
    ("slope 2 read as 1", lambda hu: 2 * hu + 1024),  # air stays near -1000 (-976): the tissue says it
    ("offset +150", lambda hu: hu + 150),  # a scanner out of calibration: the air says it
    ("offset -120", lambda hu: hu - 120),
])
def test_a_wrong_scale_or_offset_is_flagged(name, transform):
    hu, lungs, les = _chest()
    flags = flags_for(measure(transform(hu), lungs, les, VOXEL_ML))
    assert flags and flags[0].startswith("HU_CALIBRATION:"), (name, flags)  # (slope 2: lungs dense, spine metal too)


def test_dense_lungs_metal_contrast_and_thick_slices_are_flagged():
    hu, lungs, les = _chest(lung_hu=-650.0)  # an expiratory scan
    flags = flags_for(measure(hu, lungs, les, VOXEL_ML))
    assert flags == ["DENSE_LUNG:-650"]
    hu, lungs, les = _chest(lung_hu=-650.0)
    les |= lungs > 0  # the whole lung marked as lesion: not "dense healthy lung", nothing to measure
    assert math.isnan(measure(hu, lungs, les, VOXEL_ML)["healthy_lung_hu"])
    hu, lungs, les = _chest()
    hu[20, 30:33, 60:66] = 3071  # a pacemaker lead, saturated: 18 voxels of 8 uL
    m = measure(hu, lungs, les, VOXEL_ML)
    assert m["metal_ml"] == pytest.approx(0.14) and flags_for(m) == ["METAL:0.1"]
    assert flags_for(m, "OMNIPAQUE 350", 8.0) == ["METAL:0.1", "CONTRAST", "THICK_SLICES:8"]
    assert flags_for({}, "None", 5.0) == []  # 5 mm: not thicker than 5
    assert not any(has_contrast(v) for v in ("", " none ", "NO", "n/a", "Non-contrast"))
    assert has_contrast("Iohexol") and has_contrast("APPLIED")


def test_a_scored_series_records_its_hu_measures(sample_run):
    """The sample (a calibrated phantom) is not flagged; result.json carries the measures behind the flags."""
    import pandas as pd

    row = pd.read_csv(sample_run / "scans.csv", dtype=str, keep_default_na=False).iloc[0]
    result = json.loads((sample_run / row["scan_id"] / "result.json").read_text())
    m = result["hu_check"]
    assert set(m) == {"air_hu", "tissue_hu", "healthy_lung_hu", "metal_ml", "noise_hu", "laa950_pct", "airway_ml",
                      "mediastinum_hu", "slice_jump_ratio", "dependent_gradient_hu", "pneumothorax_ml_right",
                      "pneumothorax_ml_left", "airway_air_hu"}
    assert m["pneumothorax_ml_right"] == 0.0 == m["pneumothorax_ml_left"]
    assert abs(m["air_hu"] + 1000) < 20 and m["healthy_lung_hu"] < -750 and 0 < m["noise_hu"] < 35
    assert 0 <= m["laa950_pct"] < 10
    assert not any(f.split(":")[0] in ("HU_CALIBRATION", "DENSE_LUNG", "METAL", "CONTRAST", "THICK_SLICES", "NOISY",
                                       "LOW_ATTENUATION", "MOTION_SUSPECT", "DEPENDENT_DENSITY",
                                       "PNEUMOTHORAX_SUSPECT")
                   for f in row["qc_flags"].split(";"))


def test_padding_and_a_tight_field_of_view_do_not_fake_or_hide_the_air():
    """The review: the loader's padding (set to exactly -1000 HU) fixed the air median at -1000 (an offset scan
    passed); a field of view cutting the chest wall left the lungs outside the filled body, counted as 'air'."""
    hu, lungs, les = _chest()
    hu += 100  # +100 HU: the air says it (-900)
    pad = np.zeros(hu.shape, bool)
    pad[:, :, :14] = pad[:, :, -14:] = pad[:, :14, :] = pad[:, -14:, :] = True  # outside a square FOV
    hu[pad] = -1000.0
    m = measure(hu, lungs, les, VOXEL_ML, padding=pad)
    assert m["air_hu"] == pytest.approx(-900, abs=5) and flags_for(m)[0].startswith("HU_CALIBRATION:")
    hu, lungs, les = _chest()
    tight = (slice(None), slice(20, 108), slice(24, 104))  # the body's outline cut on every side
    m = measure(hu[tight], lungs[tight], les[tight], VOXEL_ML)
    assert not any(f.startswith("HU_CALIBRATION") for f in flags_for(m)), m


def test_free_text_without_contrast_is_not_contrast():
    assert not any(has_contrast(v) for v in ("NO CONTRAST AGENT", "None used", "non-enhanced", "without contrast"))
    assert has_contrast("ORAL") and has_contrast("Visipaque 320")
