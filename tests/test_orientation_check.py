"""A prone scan with a supine header (pixels rotated 180 degrees in plane, or flipped front to back, PatientPosition
HFS) was scored with the lungs' sides swapped and about 650 mL of "lesion" (liver and spleen domes, back muscles)
on a normal scan, without a flag (an anatomy audit). ``ORIENTATION_SUSPECT:spine_anterior``
(pipeline.orientation_check): the vertebral column lies in front of the lungs, which no right header allows.

Evidence behind ``SPINE_ANTERIOR_MM`` and ``BONE_HU`` (``spine_offset_mm``, classical lung masks on the working grid;
the network's masks of the audit's own run where noted), with cortical bone (above 600 HU): right headers, the six
real chests of ../shared/data/chest +42 to +89 mm, the audit's copies of normal001 correctly labelled prone (HFP),
right side down (HFDR) and feet first (FFS) +51, shrunk to a child's size +31; the naive prone copies (rotated 180
degrees; flipped front to back; header HFS) -51 (network masks -32 and -42). With all bone above 200 HU the margins
were narrower (+21 / -16 mm) and contrast-filled vessels in front of the spine could flag a correct scan. The flag
is raised below 0 mm. The dicom_edge folders hold no whole chest.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from pipeline.config import load_config
from pipeline.orientation_check import SPINE_ANTERIOR_MM, flags_for, measure
from pipeline.run import analyse_volume, run_pipeline
from segmentation.base import LEFT_LUNG, RIGHT_LUNG, Segmentation
from segmentation.classical import body_mask
from tests.conftest import SAMPLE, require

FLAG = "ORIENTATION_SUSPECT:spine_anterior"
SHAPE = (30, 120, 120)  # 2 mm voxels, LPS [z, y, x]: y grows to the patient's back
SPACING = (2.0, 2.0, 2.0)


def chest():
    """A supine chest: a body ellipse (40 HU), two lungs (-850 HU), a vertebral body and spinous process behind them
    (700 HU, cortical) and a sternum in front (700 HU, smaller)."""
    z, y, x = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    hu = np.full(SHAPE, -1000.0, np.float32)
    body = ((y - 60) / 40.0) ** 2 + ((x - 60) / 55.0) ** 2 <= 1
    hu[:, body[0]] = 40.0
    lungs = np.zeros(SHAPE, np.uint8)
    right = ((y - 58) / 26.0) ** 2 + ((x - 33) / 18.0) ** 2 <= 1
    left = ((y - 58) / 26.0) ** 2 + ((x - 87) / 18.0) ** 2 <= 1
    lungs[2:28][:, right[0]] = RIGHT_LUNG
    lungs[2:28][:, left[0]] = LEFT_LUNG
    hu[lungs > 0] = -850.0
    vertebra = ((y - 78) / 8.0) ** 2 + ((x - 60) / 9.0) ** 2 <= 1
    hu[:, vertebra[0]] = 700.0
    hu[:, 86:96, 58:62] = 700.0  # the arch and spinous process
    hu[:, 22:25, 56:64] = 700.0  # the sternum
    return hu, lungs


def _measure(hu, lungs):
    return measure(hu, lungs, body_mask(hu, -500.0), SPACING)


def test_the_spine_behind_the_lungs_passes_and_any_front_back_flip_is_flagged():
    hu, lungs = chest()
    m = _measure(hu, lungs)
    assert m["spine_offset_mm"] > 20 and m["spine_bone_ml"] > 2 and flags_for(m) == []
    views = {"flipped front to back": (slice(None), slice(None, None, -1), slice(None)),
             "rotated 180 degrees (prone)": (slice(None), slice(None, None, -1), slice(None, None, -1))}
    for name, view in views.items():
        f = _measure(hu[view], lungs[view])
        assert f["spine_offset_mm"] == pytest.approx(-m["spine_offset_mm"], abs=2.1), name
        assert flags_for(f) == [FLAG], name
    # what a right header allows: left-right mirrored, feet first (z reversed), both: the spine stays behind
    for view in ((slice(None), slice(None), slice(None, None, -1)), (slice(None, None, -1), slice(None), slice(None)),
                 (slice(None, None, -1), slice(None), slice(None, None, -1))):
        assert flags_for(_measure(hu[view], lungs[view])) == []


def test_nothing_to_measure_is_no_flag():
    hu, lungs = chest()
    no_bone = np.where(hu > 200, 40.0, hu).astype(np.float32)  # a phantom without bone
    m = _measure(no_bone, lungs)
    assert math.isnan(m["spine_offset_mm"]) and flags_for(m) == []
    m = _measure(hu, np.zeros_like(lungs))
    assert math.isnan(m["spine_offset_mm"]) and flags_for(m) == []
    assert flags_for({}) == [] and flags_for({"spine_offset_mm": -SPINE_ANTERIOR_MM}) == []
    assert flags_for({"spine_offset_mm": -SPINE_ANTERIOR_MM - 0.1}) == [FLAG]


class _Stub:
    """Any segmenter: it returns the lungs it is given (no lesion)."""
    name = "stub"

    def __init__(self, lungs):
        self.lungs = lungs

    def segment(self, hu, spacing):
        return Segmentation(lungs=self.lungs.copy(), lesions=np.zeros(self.lungs.shape, bool))


def _image(hu):
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing(SPACING)
    return img


def test_analyse_volume_flags_for_every_segmenter_and_keeps_the_scores():
    hu, lungs = chest()
    cfg = load_config(overrides=["resample.spacing_mm=[2.0,2.0,2.0]"])
    ok = analyse_volume(_image(hu), cfg, _Stub(lungs))
    assert ok["orientation_check"]["spine_offset_mm"] > 20 and not any("ORIENTATION" in f for f in ok["flags"])
    flip = (slice(None), slice(None, None, -1), slice(None))
    bad = analyse_volume(_image(np.ascontiguousarray(hu[flip])), cfg, _Stub(np.ascontiguousarray(lungs[flip])))
    assert FLAG in bad["flags"] and bad["orientation_check"]["spine_offset_mm"] < -20
    for key in ("lung_volume_ml_right", "lung_volume_ml_left", "lesion_volume_ml"):
        assert bad["row"][key] == ok["row"][key]  # a flag only


def test_the_sample_is_not_flagged_and_records_its_measures(sample_run):
    row = pd.read_csv(sample_run / "scans.csv", dtype=str, keep_default_na=False).iloc[0]
    result = json.loads((sample_run / row["scan_id"] / "result.json").read_text())
    m = result["orientation_check"]
    assert set(m) == {"spine_offset_mm", "spine_bone_ml"}
    assert m["spine_offset_mm"] > 30 and "ORIENTATION_SUSPECT" not in row["qc_flags"]


def _flipped_copy(src, dest, rows: bool, cols: bool):
    """The sample's files with their pixels flipped in plane (rows: front to back; both: rotated 180 degrees), the
    header unchanged (HFS, the usual orientation): a prone scan written as supine."""
    dest.mkdir()
    n = 0
    for f in sorted(src.iterdir()):
        try:
            ds = pydicom.dcmread(f)
        except pydicom.errors.InvalidDicomError:
            continue
        px = ds.pixel_array
        px = px[::-1] if rows else px
        px = px[:, ::-1] if cols else px
        ds.PixelData = np.ascontiguousarray(px).tobytes()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.save_as(dest / f.name, enforce_file_format=True)
        n += 1
    assert n > 100


@pytest.mark.slow
def test_the_sample_scanned_prone_with_a_supine_header_is_flagged(tmp_path):
    src = tmp_path / "prone"
    _flipped_copy(SAMPLE, src, rows=True, cols=True)
    cfg = load_config(extra={"segmentation": {"method": "classical"}, "outputs": {"write_qc_png": False}})
    out = tmp_path / "out"
    assert run_pipeline(src, out, cfg)["n_ok"] == 1
    row = pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False).iloc[0]
    assert FLAG in row["qc_flags"].split(";")
    m = json.loads((out / row["scan_id"] / "result.json").read_text())["orientation_check"]
    assert m["spine_offset_mm"] < -30


@pytest.mark.slow
@pytest.mark.realdata
def test_a_real_chest_passes_and_its_naive_prone_copy_is_flagged(shared_data, classical_memo):
    """normal001 (supine, HFS): the spine 36 mm behind the lungs' centre; its pixels flipped front to back under
    the same header: 36 mm in front, flagged."""
    from pipeline.discovery import discover, select_series
    from pipeline.loading import load_series
    from pipeline.resample import resample_to_spacing, to_lps
    from segmentation.factory import build_segmenter

    src = require(shared_data / "chest" / "normal001")
    cfg = load_config(extra={"segmentation": {"method": "classical"}})
    image = to_lps(load_series(select_series(discover(src, cfg), cfg)[0].files, cfg).image)
    work = resample_to_spacing(image, cfg["resample"]["spacing_mm"])
    hu = sitk.GetArrayFromImage(work)
    spacing = tuple(work.GetSpacing()[::-1])
    lungs = build_segmenter(cfg).segment(hu, spacing).lungs
    m = measure(hu, lungs, body_mask(hu, -500.0), spacing)
    assert m["spine_offset_mm"] > 25 and flags_for(m) == []
    for view in ((slice(None), slice(None, None, -1), slice(None)),
                 (slice(None), slice(None, None, -1), slice(None, None, -1))):
        f = measure(hu[view], lungs[view], body_mask(hu[view], -500.0), spacing)
        assert f["spine_offset_mm"] < -25 and flags_for(f) == [FLAG]


def test_contrast_filled_vessels_in_front_are_not_taken_for_spine():
    """CT angiography: blood at 250-500 HU in the heart and great vessels, in front of the spine in the midline band,
    pulled the median 'bone' in front of the lungs (a reviewer flagged normal001 with its mediastinum at 350 HU)."""
    hu, lungs = chest()
    mediastinum = np.zeros(hu.shape, bool)
    mediastinum[:, 28:68, 48:72] = True
    mediastinum &= (lungs == 0) & (hu == 40.0)
    hu[mediastinum] = 450.0
    m = _measure(hu, lungs)
    assert m["spine_offset_mm"] > 0 and flags_for(m) == []


def test_the_margins_script_flags_the_flipped_sample_only(capsys, classical_memo):
    """scripts/orientation_margins.py, which reproduces the figures above: the sample as recorded passes, its pixels
    flipped front to back or rotated 180 degrees under the same header are flagged."""
    from tests.scripts_loader import load_script

    assert load_script("orientation_margins").main([str(SAMPLE)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sample_dicoms")]
    assert len(rows) == 3
    assert rows[0].rstrip().endswith("-") and float(rows[0].split()[-3]) > 0
    assert all(r.rstrip().endswith("ORIENTATION_SUSPECT:spine_anterior") for r in rows[1:])
