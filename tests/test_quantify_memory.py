"""scoring.quantify's scan-level measures read the lung voxels, selected once: full-volume masks per side and class
made them the run's memory peak on a 600-slice series (+600 MiB over the rest; a performance audit, 2026-12-06)."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np

from scoring import quantify, systems


def _chest(shape=(120, 160, 160), seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    lungs = np.zeros(shape, np.uint8)  # about a quarter of the volume, as in a chest CT's field of view
    lungs[((x - 50) / 35.0) ** 2 + ((y - 80) / 55.0) ** 2 + ((z - 60) / 50.0) ** 2 <= 1] = 1
    lungs[((x - 110) / 33.0) ** 2 + ((y - 80) / 52.0) ** 2 + ((z - 60) / 48.0) ** 2 <= 1] = 2
    hu = rng.normal(-780, 150, shape).astype(np.float32)
    classes = np.zeros(shape, np.uint8)
    les = (lungs > 0) & (hu > -700)
    classes[les] = np.where(hu[les] < -550, 1, np.where(hu[les] < -300, 2, 3))
    return hu, lungs, classes


def _reference(hu, lungs, classes, voxel_ml, pho_min):
    """The definitions, on full-volume masks (classes is 0 outside the lung)."""
    lung = lungs > 0
    les = classes > 0
    lung_ml = lung.sum() * voxel_ml
    out = {"lesion_volume_ml": round(float(les.sum()) * voxel_ml, 2),
           "faint_ggo_volume_ml": round(float((classes == systems.FAINT_GGO).sum()) * voxel_ml, 2),
           "consolidation_volume_ml": round(float((classes == systems.CONSOLIDATION).sum()) * voxel_ml, 2),
           "percent_opacity": round(100.0 * les.sum() * voxel_ml / lung_ml, 3),
           "percent_high_opacity": round(100.0 * np.count_nonzero(les & (hu > pho_min)) * voxel_ml / lung_ml, 3),
           "mean_lung_hu": round(float(hu[lung].mean()), 1)}
    for side, name in quantify.SIDES.items():
        m = lungs == side
        out[f"lung_volume_ml_{name}"] = round(float(m.sum()) * voxel_ml, 2)
        out[f"mean_lung_hu_{name}"] = round(float(hu[m].mean()), 1)
        out[f"percent_opacity_{name}"] = round(100.0 * np.count_nonzero(m & les) / m.sum(), 3)
    return out


def test_scan_measures_are_the_definitions_on_full_masks():
    hu, lungs, classes = _chest()
    row = quantify._scan_measures(hu, lungs, classes, 0.001, -200.0, 1.0)
    want = _reference(hu, lungs, classes, 0.001, -200.0)
    assert {k: row[k] for k in want} == want
    assert row["mosmed_category"] != ""


def test_an_empty_lung_gives_nan_means_and_no_category():
    hu, lungs, classes = _chest(shape=(20, 40, 40))
    row = quantify._scan_measures(hu, np.zeros_like(lungs), np.zeros_like(classes), 0.001, -200.0, 1.0)
    assert row["lung_volume_ml_right"] == 0 and math.isnan(row["mean_lung_hu"]) and row["mosmed_category"] == ""


def test_scan_measures_peak_memory_is_under_the_ct_s_size():
    hu, lungs, classes = _chest()
    tracemalloc.start()
    try:
        quantify._scan_measures(hu, lungs, classes, 0.001, -200.0, 1.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # full-volume masks per side and class: 1.16 x the float32 CT; the lung voxels selected once: 0.72 x
    assert peak < 0.9 * hu.nbytes, peak / hu.nbytes


def test_the_benchmark_s_generated_chest_needs_little_more_than_itself():
    """scripts/benchmark_batch.chest_volume built dense float64 grids: ``benchmark.py --generated 600`` peaked at
    7.3 GB in its generator, so the README's memory figure could not be reproduced on an 8 GB laptop."""
    from tests.scripts_loader import load_script

    chest_volume = load_script("benchmark_batch").chest_volume
    tracemalloc.start()
    try:
        hu = chest_volume((60, 128, 128), 1.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert hu.dtype == np.float32 and 13 < float(hu[:, :10, :].std()) < 17  # air and its noise in front of the body
    assert peak < 5 * hu.nbytes, peak / hu.nbytes  # dense grids: 12 x
