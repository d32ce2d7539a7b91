"""Lobe maps that do not fit the scan. A mirrored map (right lobes on the left lung) or a misaligned one (lung in no
lobe) gave lobar scores of the wrong lung tissue with no flag; non-integer and unknown label values were dropped
silently; a map named after no series was never read, with nothing but LOBES_NOT_FOUND to say so."""

from __future__ import annotations

import csv
import json
import logging
import math

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.errors import SeriesError
from scoring.quantify import TOTALSEGMENTATOR_LOBES, score_scan
from tests.conftest import SAMPLE
from tests.test_scoring_review3 import lobar, lobe_map
from tests.test_zones import LEVELS, Z, cfg, lms, phantom

TS_CODE = {ours: ts for ts, ours in TOTALSEGMENTATOR_LOBES.items()}  # our lobe code -> TotalSegmentator label


def _score(lobes):
    hu, lungs, classes = phantom({12: 5})  # lungs in slices 1..18, right columns 0..9, left 10..19
    return score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg(), lobes=lobes)


def _refused(row, zones) -> bool:
    lob = lobar(zones)
    return (len(lob) == 5 and all(r["status"] == "missing" and math.isnan(r["unit_score"]) for r in lob.values())
            and math.isnan(row["lobar20_total"]) and math.isnan(row["lobar25_total"]))


def test_a_mirrored_lobe_map_gives_no_lobar_scores():
    """Right lobes on the left lung mask and left lobes on the right: the right upper lobe was measured on the left
    lung, with totals and no flag."""
    good = lobe_map(phantom()[1].shape)
    row, zones, flags = _score(good)
    assert not [f for f in flags if f.startswith("LOBES_")] and row["lobar20_total"] == 3
    row, zones, flags = _score(good[:, :, ::-1].copy())  # mirrored left-right
    assert "LOBES_SIDES_SWAPPED" in flags and _refused(row, zones), (flags, row)
    assert not [f for f in flags if f.startswith(("LOBES_PARTIAL", "LOBES_MISSING"))]


def test_a_lobe_map_leaving_lung_in_no_lobe_gives_no_lobar_scores():
    good = lobe_map(phantom()[1].shape)
    ok_row, ok_zones, _ = _score(good)
    # shifted 30 mm cranially: 3 of the lungs' 18 slices in no lobe (16.7 %), the lobes' values taken from the wrong
    # slices, the totals given and no flag
    shifted = np.zeros_like(good)
    shifted[3:] = good[:-3]
    row, zones, flags = _score(shifted)
    assert f"LOBES_PARTIAL:{100 * 3 / 18:.1f}" in flags and _refused(row, zones), (flags, row)
    # a left lobe's lung in a right lobe is in no lobe of its side either
    crossed = good.copy()
    crossed[1:19, :, 10:12] = 3  # 2 of the left lung's 10 columns: 10 % of the lungs, 20 % of the left one
    row, zones, flags = _score(crossed)
    assert "LOBES_PARTIAL:20.0" in flags and _refused(row, zones)  # the share of the lung it happens in
    # under the threshold (one row of one slice uncovered, 0.6 %): scored as before, no flag
    trimmed = good.copy()
    trimmed[5, 0, :] = 0
    row, zones, flags = _score(trimmed)
    assert not [f for f in flags if f.startswith("LOBES_")]
    assert (row["lobar20_total"], row["lobar25_total"]) == (ok_row["lobar20_total"], ok_row["lobar25_total"])
    # a lobe absent from the map (its lung in no lobe) stays LOBES_MISSING, the other lobes scored
    no_lll = good.copy()
    no_lll[no_lll == 5] = 0
    row, zones, flags = _score(no_lll)
    assert "LOBES_MISSING" in flags and not [f for f in flags if f.startswith("LOBES_PARTIAL")]
    assert lobar(zones)["left_upper"]["status"] == "ok" and lobar(zones)["left_lower"]["status"] == "missing"


def _reference() -> sitk.Image:
    ref = sitk.GetImageFromArray(np.zeros(phantom()[1].shape, np.int16))
    ref.SetSpacing((1.0, 1.0, 10.0))
    return ref


def _write(arr: np.ndarray, path, pixel=None) -> str:
    img = sitk.GetImageFromArray(arr if pixel is None else arr.astype(pixel))
    img.CopyInformation(_reference())
    sitk.WriteImage(img, str(path))
    return str(path)


def test_a_non_integer_lobe_map_fails_naming_the_file(tmp_path):
    """Labels 12.4 (a map resampled linearly) matched no lobe label and were dropped silently."""
    from pipeline.run import read_user_lobes

    ts = np.vectorize(lambda c: TS_CODE.get(int(c), 0))(lobe_map(phantom()[1].shape)).astype(np.float32)
    whole = read_user_lobes(_write(ts, tmp_path / "whole.nii.gz"), _reference(), cfg())  # 12.0 etc.: a label map
    assert (whole == lobe_map(phantom()[1].shape)).all()
    ts[ts == 12] = 12.4
    path = _write(ts, tmp_path / "float.nii.gz")
    with pytest.raises(SeriesError) as err:
        read_user_lobes(path, _reference(), cfg())
    assert err.value.code == "LOBES_UNREADABLE" and path in err.value.message and "12.4" in err.value.message


def test_label_values_outside_the_convention_are_named(tmp_path, caplog):
    from pipeline.run import read_user_lobes

    lungs = phantom()[1]
    ts = np.vectorize(lambda c: TS_CODE.get(int(c), 0))(lobe_map(lungs.shape)).astype(np.uint8)
    ts[0] = 51  # TotalSegmentator's heart, outside the lung mask: expected in a `total` map
    with caplog.at_level(logging.WARNING, logger="pipeline.run"):
        read_user_lobes(_write(ts, tmp_path / "ok.nii.gz"), _reference(), cfg(), lungs=lungs)
    assert not caplog.records
    ts[ts == 12] = 99  # the right upper lobe labelled 99: 10 % of the lung mask
    ts[ts == 14] = 7
    with caplog.at_level(logging.WARNING, logger="pipeline.run"):
        read_user_lobes(_write(ts, tmp_path / "odd.nii.gz"), _reference(), cfg(), lungs=lungs)
    msg = caplog.records[-1].getMessage()
    assert "odd.nii.gz" in msg and "label values 7 (25 % of the lung mask), 99 (10 % of the lung mask)" in msg
    assert "51 (" not in msg
    # the ctscore convention has no other structures: every unknown value is named, wherever it lies
    caplog.clear()
    ours = lobe_map(lungs.shape)
    ours[0] = 7
    c = cfg()
    c["scoring"]["lobar"]["lobe_labels"] = "ctscore"
    with caplog.at_level(logging.WARNING, logger="pipeline.run"):
        read_user_lobes(_write(ours, tmp_path / "ours.nii.gz"), _reference(), c, lungs=lungs)
    assert "label values 7 (0 % of the lung mask) are no ctscore lobe label" in caplog.records[-1].getMessage()


def test_lobes_dir_names_files_of_no_series_and_series_without_a_map(tmp_path):
    from pipeline.run import lobes_dir_warnings

    (tmp_path / "scan-f07e43f72876.nii.gz").write_bytes(b"")
    (tmp_path / "1.2.3.nrrd").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a lobe map")
    msgs = lobes_dir_warnings(tmp_path, ["1.2.3", "1.2.4", "1.2.5"])
    assert len(msgs) == 2
    assert "1 of 2 lobe map files match no series of the input (scan-f07e43f72876.nii.gz)" in msgs[0]
    assert "2 of 3 series have no lobe map there (expected 1.2.4.nii.gz, 1.2.5.nii.gz)" in msgs[1]
    assert lobes_dir_warnings(tmp_path, ["1.2.3", "scan-f07e43f72876"]) == []


def test_sample_with_a_mirrored_and_a_misnamed_map(sample_run, tmp_path, caplog, classical_memo):
    """End to end: the warning at the start names the misnamed file; the mirrored map gives no lobar scores."""
    from pipeline.batch import BatchOptions
    from pipeline.config import load_config
    from pipeline.run import run_pipeline
    from tests.test_user_lobes import _lobe_map, _scan_dir

    scan = _scan_dir(sample_run)
    uid = json.loads((scan / "result.json").read_text())["scores"]["series_uid"]
    lobes = tmp_path / "lobes"
    lobes.mkdir()
    good = _lobe_map(scan / "lungs.nii.gz")
    sitk.WriteImage(good, str(lobes / "scan-f07e43f72876.nii.gz"))
    mirrored = sitk.GetImageFromArray(sitk.GetArrayFromImage(good)[:, :, ::-1].copy())
    mirrored.CopyInformation(good)
    sitk.WriteImage(mirrored, str(lobes / f"{uid}.nii.gz"))
    cfg = load_config(extra={"segmentation": {"method": "classical"}, "scoring": {"lobar": {"lobes_dir": str(lobes)}},
                             "outputs": {"write_qc_png": False, "write_masks": False}})
    with caplog.at_level(logging.WARNING):
        run_pipeline(SAMPLE, tmp_path / "out", cfg, batch=BatchOptions(progress=False))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "1 of 2 lobe map files match no series of the input (scan-f07e43f72876.nii.gz)" in text
    assert f"no lobar scores from lobe map {lobes / uid}.nii.gz: LOBES_SIDES_SWAPPED" in text
    row = next(csv.DictReader((tmp_path / "out" / "scans.csv").open()))
    assert "LOBES_SIDES_SWAPPED" in row["qc_flags"] and row["lobar20_total"] in ("", "nan")
    lob = [r for r in csv.DictReader((tmp_path / "out" / "zones.csv").open()) if r["system"] == "lobar"]
    assert len(lob) == 5 and all(r["status"] == "missing" for r in lob)


def test_upper_and_lower_lobes_swapped_give_no_lobar_scores():
    """A map with the upper and lower labels of a side swapped was scored (a walk-through of lobe maps from other
    tools: right_upper 1334 mL / 12.7 % instead of 607 mL / 10.6 %), no flag."""
    lungs = phantom()[1]
    zi = np.arange(lungs.shape[0])[:, None, None] * np.ones(lungs.shape, int)  # z grows with the slice index (Z)
    good = np.where(lungs == 1, np.where(zi >= 13, 1, np.where(zi >= 7, 2, 3)),
                    np.where(lungs == 2, np.where(zi >= 10, 4, 5), 0)).astype(np.uint8)
    row, zones, flags = _score(good)
    assert not [f for f in flags if f.startswith("LOBES_")] and row["lobar20_total"] >= 0, flags
    for upper, lower in ((1, 3), (4, 5)):
        swapped = good.copy()
        swapped[good == upper], swapped[good == lower] = lower, upper
        row, zones, flags = _score(swapped)
        assert "LOBES_UPPER_BELOW_LOWER" in flags and _refused(row, zones), flags


def test_a_lobe_of_a_few_stray_voxels_is_missing():
    """The middle lobe merged into the upper one but for 50 stray voxels was scored as a healthy lobe (0.61 mL,
    score 0) and the totals given."""
    good = lobe_map(phantom()[1].shape)
    merged = good.copy()
    merged[good == 2] = 1
    idx = np.argwhere(good == 2)[:3]
    merged[tuple(idx.T)] = 2
    row, zones, flags = _score(merged)
    assert "LOBES_MISSING" in flags and lobar(zones)["right_middle"]["status"] == "missing"
    assert np.isnan(row["lobar20_total"])


def test_two_lobe_maps_for_one_series_are_named(tmp_path, caplog):
    """maps/<uid>.nrrd and maps/<uid>.nii: the .nii was used without a word, and result.json did not say which."""
    from pipeline.run import find_user_lobes

    (tmp_path / "1.2.3.nrrd").write_bytes(b"x")
    (tmp_path / "1.2.3.nii").write_bytes(b"x")
    cfg_ = {"scoring": {"lobar": {"lobes_dir": str(tmp_path)}}}
    with caplog.at_level(logging.WARNING, logger="pipeline.run"):
        assert find_user_lobes(cfg_, "1.2.3") == tmp_path / "1.2.3.nii"
    assert any("2 lobe maps for one series" in r.getMessage() and "1.2.3.nii is used" in r.getMessage()
               for r in caplog.records)


def test_lung_in_no_lobe_takes_the_nearest_lobe_of_its_side():
    """Lung the lobe map leaves in no lobe (its border, or dense consolidation a lobe model leaves out, as lungmask's
    plain LTRCLobes does) under the 5 % of LOBES_PARTIAL: its lesion counted in no lobe, and the lobe's involvement
    and the totals came out lower with no flag (an audit of lobe maps, 2026-12-07)."""
    from scoring.quantify import complete_lobe_map

    hu, lungs, classes = phantom()
    classes[9:11, :, 6:9] = 3  # consolidation in the right lower lobe (columns 5..9), 60 voxels, 3.3 % of the right
    # lung, centred in z (the lobes here are columns, LOBES_UPPER_BELOW_LOWER compares their heights)
    hu[classes > 0] = -50.0
    good = lobe_map(lungs.shape)
    full = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg(), lobes=good)
    hole = good.copy()
    hole[classes > 0] = 0  # the dense lung in no lobe
    row, zones, flags = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg(), lobes=hole)
    assert "LOBE_MAP_FILLED:0.1" in flags and not [f for f in flags if f.startswith("LOBES_")]
    assert lobar(zones)["right_lower"]["lesion_ml"] == lobar(full[1])["right_lower"]["lesion_ml"] == 0.06
    assert row["lobar20_total"] == full[0]["lobar20_total"] and row["lobar25_total"] == full[0]["lobar25_total"]
    assert "LOBE_MAP_FILLED" not in ";".join(full[2])  # a map that holds the whole lung needs no filling
    # nearest in the slice, of the lung's own side: column 1 (between lobe 1 at column 0 and lobe 2 from column
    # 4) takes lobe 1, column 3 lobe 2; a left-lung voxel labelled a right lobe stays so (check_lobe_map counts it);
    # lung in a slice where the map holds no lobe of its side stays in none
    m = good.copy()
    m[5, :, 1:4] = 0
    m[6, :, 12] = 3
    m[18] = 0
    m[18, :, 12] = 4  # left lobes only in slice 18
    done, n_lesion = complete_lobe_map(lungs, m, classes > 0)
    assert (done[5, :, 1] == 1).all() and (done[5, :, 3] == 2).all() and (done[6, :, 12] == 3).all()
    assert (done[18, :, :10] == 0).all() and (done[18, :, 10:] == 4).all() and n_lesion == 0
    assert (m[5, :, 1:4] == 0).all()  # the input map itself is not changed
    # more than 5 % of a lung in no lobe is still refused, not filled, though the other lung is whole (pooled over
    # both, 10 % of one lung read 5 % and was filled)
    big = good.copy()
    big[1:19, :, 8:10] = 0  # 20 % of the right lung, 10 % of both
    row, zones, flags = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg(), lobes=big)
    assert "LOBES_PARTIAL:20.0" in flags and _refused(row, zones)
    big = good.copy()
    big[1:19, :, 19] = 0  # 10 % of the left lung, 5 % of both
    row, zones, flags = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg(), lobes=big)
    assert "LOBES_PARTIAL:10.0" in flags and _refused(row, zones)


def test_a_lobe_absent_from_the_map_does_not_take_its_neighbour_s_lung():
    """A map without the left lower lobe: the fill gave the whole left lung to the left upper lobe, which was scored
    "ok" on the lower lobe's lung and lesion beside LOBES_MISSING (a review, 2026-12-07)."""
    hu, lungs, classes = phantom()
    classes[9:11, :, 16:19] = 2  # lesion in the left lower lobe's columns (15..19)
    no_lll = lobe_map(lungs.shape)
    no_lll[no_lll == 5] = 0
    row, zones, flags = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg(), lobes=no_lll)
    lul = lobar(zones)["left_upper"]
    assert "LOBES_MISSING" in flags and not [f for f in flags if f.startswith("LOBE_MAP_FILLED")]
    assert lul["lung_ml"] == 0.9 and lul["lesion_ml"] == 0.0  # its own five columns, no lesion
