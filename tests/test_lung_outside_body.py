"""Lung labels in the air around the patient are taken out (any segmenter): an abdominal series with no lung was
scored on 345 mL of "lung" that the network found in the air around the body, the arms and the table."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.config import load_config
from pipeline.errors import SeriesError
from pipeline.run import analyse_volume
from segmentation.base import LEFT_LUNG, RIGHT_LUNG, Segmentation, lung_outside_body
from tests.conftest import require

SHAPE = (30, 120, 120)  # 2 mm voxels


def chest(fov_cut: bool = False):
    """A body ellipse (40 HU) with two lungs (-850 HU) in the air (-1000 HU); ``fov_cut``: the image ends inside the
    right lung, which then runs into the image's edge (the body's outline open there)."""
    z, y, x = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    hu = np.full(SHAPE, -1000.0, np.float32)
    body = ((y - 60) / 40.0) ** 2 + ((x - 60) / 55.0) ** 2 <= 1
    hu[:, body[0]] = 40.0
    lungs = np.zeros(SHAPE, np.uint8)
    right = ((y - 60) / 28.0) ** 2 + ((x - 35) / 20.0) ** 2 <= 1
    left = ((y - 60) / 28.0) ** 2 + ((x - 85) / 20.0) ** 2 <= 1
    lungs[2:28][:, right[0]] = RIGHT_LUNG
    lungs[2:28][:, left[0]] = LEFT_LUNG
    hu[lungs > 0] = -850.0
    if fov_cut:
        hu, lungs = hu[:, :, 25:].copy(), lungs[:, :, 25:].copy()
    return hu, lungs


def test_real_lungs_are_kept_also_where_the_field_of_view_cuts_them():
    for cut in (False, True):
        hu, lungs = chest(cut)
        assert not lung_outside_body(hu, lungs).any()


def test_air_around_the_patient_labelled_lung_is_found():
    hu, lungs = chest()
    lungs[:, 105:, :] = LEFT_LUNG  # the air under the table side, as a network labelled it
    lungs[:, :8, 30:90] = RIGHT_LUNG  # and above the patient
    air = lung_outside_body(hu, lungs)
    expect = np.zeros(SHAPE, bool)
    expect[:, 105:, :] = True
    expect[:, :8, 30:90] = True
    assert np.array_equal(air, expect)


def test_a_lung_piece_mostly_inside_keeps_its_voxels_beyond_the_outline():
    """A lung that reaches a little beyond the body's outline (a tongue through the chest wall, its two outer rows
    outside, far under the lung's share) is kept whole: only pieces lying mostly in the air around the patient
    are air."""
    hu, lungs = chest()
    lungs[2:28, 18:40, 30:40] = RIGHT_LUNG  # joined to the right lung, outside the body above y = 20
    assert not lung_outside_body(hu, lungs).any()


class _Stub:
    name = "stub"

    def __init__(self, lungs):
        self.lungs = lungs

    def segment(self, hu, spacing):
        return Segmentation(lungs=self.lungs.copy(), lesions=self.lungs > 0)


def _image(hu):
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing((2.0, 2.0, 2.0))
    return img


def test_a_series_whose_lung_is_all_outside_the_body_fails_saying_so():
    hu, lungs = chest()
    stub = np.zeros(SHAPE, np.uint8)
    stub[:, 100:, :] = LEFT_LUNG  # 30 x 20 x 120 voxels of 8 uL: 576 mL of air under the patient, no lung
    cfg = load_config(overrides=["resample.spacing_mm=[2.0,2.0,2.0]"])
    with pytest.raises(SeriesError, match=r"\d mL of lung, after 5\d\d mL labelled lung outside the body") as e:
        analyse_volume(_image(hu), cfg, _Stub(stub))
    assert e.value.code == "NO_LUNG_FOUND"


def test_air_outside_is_taken_out_of_a_real_lung_mask_and_flagged():
    hu, lungs = chest()
    stub = lungs.copy()
    stub[:, 112:, :] = LEFT_LUNG  # 30 x 8 x 120 voxels: 230 mL
    cfg = load_config(overrides=["resample.spacing_mm=[2.0,2.0,2.0]"])
    res = analyse_volume(_image(hu), cfg, _Stub(stub))
    assert "LUNG_OUTSIDE_BODY_REMOVED:230" in res["flags"]
    assert np.array_equal(res["lungs"], lungs)
    assert np.array_equal(res["classes"] > 0, lungs > 0)  # the stub's lesions outside went with them


def test_abdominal_series_with_the_network_fails_no_lung_found(shared_data, tmp_path):
    from pipeline.cli import main

    src = require(shared_data / "totalsegmentator_example" / "example_ct_dicom")
    out = tmp_path / "out"
    assert main(["run", str(src), "-o", str(out), "-q", "--set", "outputs.write_qc_png=false"]) == 8
    row = next(csv.DictReader((out / "failures.csv").open()))
    assert row["code"] == "NO_LUNG_FOUND" and "outside the body was taken out" in row["message"]
