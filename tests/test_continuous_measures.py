"""SCORING.md "Continuous measures" per lung and per zone: ground-glass, consolidation and faint ground-glass volumes,
PO, PHO and mean lung HU in scans.csv (``<measure>_<side>``) and zones.csv (``ggo_ml`` ... ``mean_lung_hu``), on a
synthetic case with hand-computed answers, and in the tables a pipeline run writes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.outputs import SCAN_COLUMNS, ZONE_COLUMNS, table_dtypes
from scoring.quantify import score_scan
from tests.test_zones import LEVELS, Z, cfg, lms

VML = 0.1  # mL per voxel: 100 voxels per lung slice = 10 mL
SIDE_COLS = ("ggo_volume_ml", "consolidation_volume_ml", "faint_ggo_volume_ml", "percent_opacity",
             "percent_high_opacity")
UNIT_COLS = ("ggo_ml", "consolidation_ml", "faint_ggo_ml", "percent_high_opacity", "mean_lung_hu")
CLASS_COLS = {"ggo_ml": "ggo_volume_ml", "consolidation_ml": "consolidation_volume_ml",
              "faint_ggo_ml": "faint_ggo_volume_ml"}


def case(left: bool = True):
    """Both lungs in slices 1..18 (10 x 10 voxels each; z = 10..180 mm). Six-zone (carina 110, IPV 60): upper =
    slices 12..18 (700 voxels a lung), middle 6..11 (600), lower 1..5 (500).

    Right (background -850 HU): upper: 20 faint GGO (-650) in slice 15, 30 GGO (-400) in slice 16; middle
    (slice 8): 10 consolidation at 0 HU (high opacity), 10 consolidation at -250 HU (not above -200), 2 vessel
    voxels at 40 HU (no lesion); lower (slice 3): 10 GGO (-400).
    Left (background -800 HU): lower (slice 4): 7 faint GGO (-650); upper (slice 14): 3 consolidation at 50 HU."""
    lungs = np.zeros((len(Z), 10, 20), np.uint8)
    lungs[1:19, :, :10] = 1
    lungs[1:19, :, 10:] = 2
    if not left:
        lungs[lungs == 2] = 0
    classes = np.zeros(lungs.shape, np.uint8)
    hu = np.where(lungs == 2, -800.0, -850.0)
    hu[lungs == 0] = -1000.0

    def put(k, rows, cols, cls, value):
        classes[k, rows, cols] = cls
        hu[k, rows, cols] = value

    put(15, slice(0, 2), slice(0, 10), 1, -650.0)
    put(16, slice(0, 3), slice(0, 10), 2, -400.0)
    put(8, 0, slice(0, 10), 3, 0.0)
    put(8, 1, slice(0, 10), 3, -250.0)
    hu[8, 5, 0:2] = 40.0
    put(3, 0, slice(0, 10), 2, -400.0)
    if left:
        put(4, 0, slice(10, 17), 1, -650.0)
        put(14, 0, slice(10, 13), 3, 50.0)
    return hu, lungs, classes


def score(hu, lungs, classes, lobes=None, **zhang):
    row, zones, flags = score_scan(hu, lungs, classes, Z, VML, lms(**LEVELS), cfg(**zhang), lobes=lobes)
    return row, {(r["system"], r["lung"], r["unit"]): r for r in zones}, flags


def test_per_lung_columns_hand_computed():
    row, _, flags = score(*case())
    assert not flags
    # right: lung 1800 voxels = 180 mL; lesion 20 + 30 + 20 + 10 = 80 voxels
    assert row["ggo_volume_ml_right"] == 6.0  # faint + ground glass: 20 + 30 + 10 voxels
    assert row["faint_ggo_volume_ml_right"] == 2.0
    assert row["consolidation_volume_ml_right"] == 2.0
    assert row["percent_opacity_right"] == round(100 * 80 / 1800, 3) == 4.444
    assert row["percent_high_opacity_right"] == round(100 * 10 / 1800, 3) == 0.556  # the 10 voxels at 0 HU
    # left: 7 faint GGO + 3 consolidation (50 HU)
    assert row["ggo_volume_ml_left"] == row["faint_ggo_volume_ml_left"] == 0.7
    assert row["consolidation_volume_ml_left"] == 0.3
    assert row["percent_opacity_left"] == round(100 * 10 / 1800, 3)
    assert row["percent_high_opacity_left"] == round(100 * 3 / 1800, 3) == 0.167
    # the per-lung class volumes add up to the scan's; the lesion volume of a lung is its classes' sum
    for c in ("ggo_volume_ml", "consolidation_volume_ml", "faint_ggo_volume_ml"):
        assert row[f"{c}_right"] + row[f"{c}_left"] == pytest.approx(row[c], abs=0.011)
    for side in ("right", "left"):
        assert (row[f"ggo_volume_ml_{side}"] + row[f"consolidation_volume_ml_{side}"]
                == pytest.approx(row[f"lesion_volume_ml_{side}"], abs=0.011))
    # the scan-level PO / PHO are the lung-volume-weighted means of the per-lung ones (equal lungs: plain mean)
    assert row["percent_opacity"] == pytest.approx((row["percent_opacity_right"] + row["percent_opacity_left"]) / 2,
                                                   abs=1e-3)
    assert row["percent_high_opacity"] == pytest.approx(
        (row["percent_high_opacity_right"] + row["percent_high_opacity_left"]) / 2, abs=1e-3)


def test_well_aerated_lung_hand_computed():
    """Well-aerated lung: every lung voxel in hu_classes.well_aerated ([-950, -700) HU by default), lesion or not."""
    hu, lungs, classes = case()
    row, _, _ = score(hu, lungs, classes)
    # right: 1800 voxels at -850 HU but 82 outside the band (20 at -650, 30 + 10 at -400, 20 consolidation, 2 vessel
    # voxels at 40 HU); left: 1800 at -800 HU but 10 (7 at -650, 3 at 50)
    assert row["percent_well_aerated_right"] == round(100 * 1718 / 1800, 3) == 95.444
    assert row["percent_well_aerated_left"] == round(100 * 1790 / 1800, 3) == 99.444
    assert row["well_aerated_volume_ml"] == 350.8
    assert row["percent_well_aerated"] == round(100 * 3508 / 3600, 3)
    # no lesion mask is read: the same without lesions
    row0, _, _ = score(hu, lungs, np.zeros_like(classes))
    assert all(row0[c] == row[c] for c in ("well_aerated_volume_ml", "percent_well_aerated",
                                           "percent_well_aerated_right", "percent_well_aerated_left"))
    # [low, high): -950 in, -700 out, below -950 out (emphysema), just under -700 in; voxels outside the lungs never
    hu2 = hu.copy()
    hu2[10, 0, 0:4] = (-950.0, -700.0, -950.5, -700.5)
    hu2[0] = -800.0  # slice 0 holds no lung
    row2, _, _ = score(hu2, lungs, classes)
    assert row2["well_aerated_volume_ml"] == pytest.approx(350.8 - 0.2, abs=1e-9)
    # the band is configuration (uAI's -950..-750): the left lung's -800 HU background stays in, the right's -850 too
    c = cfg()
    c["hu_classes"]["well_aerated"] = [-950, -825]
    row3, _, _ = score_scan(hu, lungs, classes, Z, VML, lms(**LEVELS), c)[:3]
    assert row3["percent_well_aerated_right"] == 95.444 and row3["percent_well_aerated_left"] == 0.0
    # no left lung: its percentage and the whole scan's are empty, the found lung's is its own
    row4, _, flags = score(*case(left=False))
    assert "LUNG_NOT_FOUND:left" in flags
    assert math.isnan(row4["percent_well_aerated_left"]) and math.isnan(row4["percent_well_aerated"])
    assert row4["percent_well_aerated_right"] == 95.444 and row4["well_aerated_volume_ml"] == 171.8


def test_low_attenuation_is_the_share_below_minus_950():
    hu, lungs, classes = case()
    hu[10, 0:2, 0:10] = -960.0  # 20 voxels of the right lung: emphysema
    hu[11, 0, 10:15] = -950.0  # 5 of the left at -950: not below it
    row, _, _ = score(hu, lungs, classes)
    assert row["percent_low_attenuation"] == round(100 * 20 / 3600, 3)
    assert row["percent_well_aerated"] == round(100 * (3508 - 20) / 3600, 3)  # -960 is below the band, -950 in it
    from pipeline.hu_checks import LAA_HU, low_attenuation_pct

    assert LAA_HU == -950.0 and low_attenuation_pct(hu, lungs) == round(row["percent_low_attenuation"], 2)
    row4, _, _ = score(*case(left=False))
    assert math.isnan(row4["percent_low_attenuation"])  # a whole-scan percentage of one lung


def test_well_aerated_band_is_checked_at_load():
    from pipeline.config import ConfigError, load_config
    for bad in ("[-700, -950]", "[-2000, -700]", "[-950]"):
        with pytest.raises(ConfigError, match="hu_classes.well_aerated"):
            load_config((), overrides=[f"hu_classes.well_aerated={bad}"])
    assert load_config((), overrides=["hu_classes.well_aerated=[-950, -750]"])["hu_classes"]["well_aerated"] == [
        -950, -750]
    # the module default (partial configurations, the sample's ground truth) is the configuration's
    from scoring.quantify import WELL_AERATED_HU

    assert load_config()["hu_classes"]["well_aerated"] == list(WELL_AERATED_HU)


def test_aeration_compartments_tissue_and_gas_hand_computed():
    """Gattinoni's compartments (hu_classes.aeration_edges, default -900/-500/-100/+100), each voxel weighing
    (1 + HU/1000) g/mL and holding -HU/1000 of gas: every lung voxel, lesion or not."""
    hu, lungs, classes = case()
    row, _, _ = score(hu, lungs, classes)
    # right: 1718 at -850 and 20 at -650 (normally aerated), 40 at -400 and 10 at -250 (poorly), 10 at 0 and 2 at
    # 40 (non-aerated); left: 1790 at -800 and 7 at -650 (normally), 3 at 50 (non-aerated); 0.1 mL a voxel
    assert row["hyperinflated_volume_ml"] == 0.0 and row["hyperinflated_tissue_g"] == 0.0
    assert row["normally_aerated_volume_ml"] == 353.5
    assert row["poorly_aerated_volume_ml"] == 5.0
    assert row["non_aerated_volume_ml"] == 1.5
    assert row["normally_aerated_tissue_g"] == pytest.approx(0.1 * (1718 * 0.15 + 20 * 0.35 + 1790 * 0.2 + 7 * 0.35),
                                                             abs=0.006)
    assert row["poorly_aerated_tissue_g"] == pytest.approx(0.1 * (40 * 0.6 + 10 * 0.75), abs=0.006)
    assert row["non_aerated_tissue_g"] == pytest.approx(0.1 * (10 * 1.0 + 2 * 1.04 + 3 * 1.05), abs=0.006)
    assert row["lung_tissue_g"] == pytest.approx(67.188, abs=0.006)
    assert row["lung_gas_ml"] == pytest.approx(0.1 * (1718 * 0.85 + 20 * 0.65 + 40 * 0.4 + 10 * 0.25
                                                      + 1790 * 0.8 + 7 * 0.65), abs=0.006)
    # tissue agrees with the mean lung HU (both lungs): lung x (1 + mean/1000), but for the voxels above 0 HU
    assert row["lung_tissue_g"] == pytest.approx(360 * (1 + row["mean_lung_hu"] / 1000), abs=0.05)
    # no lesion mask is read
    row0, _, _ = score(hu, lungs, np.zeros_like(classes))
    assert all(row0[c] == row[c] for c in row if c.endswith(("_aerated_volume_ml", "_tissue_g")) or c == "lung_gas_ml")
    # edges: -900 normally aerated, just under it hyperinflated; -100 and +100 non-aerated, just above +100 in no
    # compartment (in neither tissue nor gas); air below -1000 hyperinflated, weighing nothing
    hu2 = hu.copy()
    hu2[10, 0, 0:6] = (-900.0, -900.5, -100.0, 100.0, 100.5, -1024.0)  # six right-lung voxels at -850 before
    row2, _, _ = score(hu2, lungs, classes)
    assert row2["hyperinflated_volume_ml"] == pytest.approx(0.2) and row2["hyperinflated_tissue_g"] == pytest.approx(
        0.1 * 0.0995, abs=0.006)
    assert row2["normally_aerated_volume_ml"] == pytest.approx(353.5 - 0.5)
    assert row2["non_aerated_volume_ml"] == pytest.approx(1.5 + 0.2)
    assert sum(row2[f"{c}_volume_ml"] for c in ("hyperinflated", "normally_aerated", "poorly_aerated",
                                                "non_aerated")) == pytest.approx(360 - 0.1)
    assert row2["lung_gas_ml"] == pytest.approx(row["lung_gas_ml"] + 0.1 * (0.9 + 0.9005 + 0.1 + 1.0 - 6 * 0.85),
                                                abs=0.01)
    # the edges are configuration: the left lung's -800 HU background becomes poorly aerated under [-900, -810, ...]
    c = cfg()
    c["hu_classes"]["aeration_edges"] = [-900, -810, -100, 100]
    row3, _, _ = score_scan(hu, lungs, classes, Z, VML, lms(**LEVELS), c)[:3]
    assert row3["poorly_aerated_volume_ml"] == pytest.approx(5.0 + 0.1 * (1790 + 7 + 20))
    assert row3["lung_tissue_g"] == row["lung_tissue_g"]  # the weight does not depend on the edges between
    # a lung not found: the volumes and masses stay the found lung's (as lung_volume_ml_<side>)
    row4, _, _ = score(*case(left=False))
    assert row4["normally_aerated_volume_ml"] == pytest.approx(0.1 * 1738)


def test_aeration_of_an_empty_or_airless_lung_writes_zeros_not_minus_zero():
    from scoring.quantify import aeration_measures

    for hu in (np.array([], np.float32), np.array([0, 20, 40], np.int16)):
        out = aeration_measures(hu, 0.5)
        assert str(out["lung_gas_ml"]) == "0.0" and all(v >= 0 for v in out.values())
    assert aeration_measures(np.array([0, 20, 40], np.int16), 0.5)["non_aerated_tissue_g"] == pytest.approx(1.53)


def test_front_and_back_halves_of_each_lung_hand_computed():
    """zones.csv's anteroposterior rows: in each slice each lung is halved at the midpoint of its own front-to-back
    extent (the image is LPS: row 0 is the front), measured like a zone and not scored."""
    from tests.test_zones import phantom

    hu, lungs, classes = phantom({12: 3, 13: 7})  # lesion rows 0-2 of slice 12 and 0-6 of slice 13, right lung
    row, zones, _ = score_scan(hu, lungs, classes, Z, 0.001, lms(**LEVELS), cfg())
    ap = {(z["lung"], z["unit"]): z for z in zones if z["system"] == "anteroposterior"}
    assert set(ap) == {(lung, unit) for lung in ("right", "left") for unit in ("anterior", "posterior")}
    # each lung 18 slices x 10 rows x 10 columns; rows 0-4 in front of the midpoint 4.5, rows 5-9 behind it
    assert all(z["lung_ml"] == 0.9 and z["status"] == "ok" and math.isnan(z["unit_score"])
               and math.isnan(z["extent_score"]) and math.isnan(z["density_grade"]) for z in ap.values())
    assert ap[("right", "anterior")]["lesion_ml"] == 0.08 and ap[("right", "posterior")]["lesion_ml"] == 0.02
    assert ap[("right", "anterior")]["involvement_pct"] == round(100 * 80 / 900, 3)
    assert ap[("right", "anterior")]["ggo_ml"] == 0.08 and ap[("left", "posterior")]["lesion_ml"] == 0.0
    assert ap[("right", "posterior")]["mean_lung_hu"] == round((880 * -850 + 20 * -500) / 900, 1)
    for lung in ("right", "left"):  # the halves are the lung
        assert ap[(lung, "anterior")]["lung_ml"] + ap[(lung, "posterior")]["lung_ml"] == pytest.approx(
            row[f"lung_volume_ml_{lung}"])
        assert ap[(lung, "anterior")]["lesion_ml"] + ap[(lung, "posterior")]["lesion_ml"] == pytest.approx(
            row[f"lesion_volume_ml_{lung}"])
    # an odd extent: rows 0-8 halve at row 4, which lies on the midpoint and is posterior
    lungs9 = lungs.copy()
    lungs9[:, 9, :] = 0
    _, zones9, _ = score_scan(hu, lungs9, classes, Z, 0.001, lms(**LEVELS), cfg())
    ap9 = {(z["lung"], z["unit"]): z["lung_ml"] for z in zones9 if z["system"] == "anteroposterior"}
    assert ap9[("left", "anterior")] == 0.72 and ap9[("left", "posterior")] == 0.9
    # halves of each slice, not a coronal plane: a basal slice holding only the back of the lung is halved too
    # (an opacity filling a posterior recess counts half anterior)
    recess = lungs.copy()
    recess[1:3, 0:6, :] = 0  # slices 1-2: lung only in rows 6-9
    cls_r = np.zeros_like(classes)
    cls_r[1:3, 6:10, :10] = 3
    _, zones_c, _ = score_scan(hu, recess, cls_r, Z, 0.001, lms(**LEVELS), cfg())
    apc = {(z["lung"], z["unit"]): z["lesion_ml"] for z in zones_c if z["system"] == "anteroposterior"}
    assert apc[("right", "anterior")] == apc[("right", "posterior")] == 0.04  # rows 6-7 and 8-9 of two slices
    # a lung not found: both its rows missing
    lungs_r = lungs.copy()
    lungs_r[lungs_r == 2] = 0
    _, zones_r, flags = score_scan(hu, lungs_r, classes, Z, 0.001, lms(**LEVELS), cfg())
    left = [z for z in zones_r if z["system"] == "anteroposterior" and z["lung"] == "left"]
    assert "LUNG_NOT_FOUND:left" in flags and len(left) == 2 and all(z["status"] == "missing" for z in left)
    # a half without lung (a lung one row deep in every slice) is missing, as a zone without lung
    thin = np.zeros_like(lungs)
    thin[1:19, 4, :10], thin[1:19, 4:8, 10:] = 1, 2  # right lung: row 4 only, a single row is posterior
    _, zones_t, _ = score_scan(hu, thin, np.zeros_like(classes), Z, 0.001, lms(**LEVELS), cfg())
    t = {(z["lung"], z["unit"]): z for z in zones_t if z["system"] == "anteroposterior"}
    assert t[("right", "anterior")]["status"] == "missing" and t[("right", "anterior")]["lung_ml"] == 0.0
    assert t[("right", "posterior")]["status"] == "ok" and t[("right", "posterior")]["lung_ml"] == 0.18


def test_aeration_in_chunks_is_the_aeration_at_once(monkeypatch):
    """aeration_measures reads the lung voxels in chunks (memory): the sums are those of one pass, as Python floats."""
    from scoring import quantify

    hu = np.random.default_rng(1).normal(-700, 300, 3 * quantify.AERATION_CHUNK + 17).astype(np.float32)
    chunked = quantify.aeration_measures(hu, 0.37)
    monkeypatch.setattr(quantify, "AERATION_CHUNK", hu.size)
    once = quantify.aeration_measures(hu, 0.37)
    assert chunked.keys() == once.keys() and all(chunked[k] == pytest.approx(once[k], abs=0.011) for k in once)
    assert all(type(v) is float for v in chunked.values())


def test_aeration_edges_are_checked_at_load():
    from pipeline.config import ConfigError, load_config
    for bad in ("[-500, -900, -100, 100]", "[-2000, -500, -100, 100]", "[-900, -500, -500, 100]",
                "[-900, -500, -100]"):
        with pytest.raises(ConfigError, match="hu_classes.aeration_edges"):
            load_config((), overrides=[f"hu_classes.aeration_edges={bad}"])
    from scoring.quantify import AERATION_EDGES_HU

    assert load_config()["hu_classes"]["aeration_edges"] == list(AERATION_EDGES_HU)


def test_per_zone_columns_hand_computed():
    _, z, _ = score(*case())
    up, mid, low = (z[("six_zone", "right", u)] for u in ("upper", "middle", "lower"))
    assert (up["lung_ml"], up["ggo_ml"], up["faint_ggo_ml"], up["consolidation_ml"]) == (70.0, 5.0, 2.0, 0.0)
    assert up["involvement_pct"] == round(100 * 50 / 700, 3) and up["percent_high_opacity"] == 0.0
    assert up["mean_lung_hu"] == round((650 * -850 + 20 * -650 + 30 * -400) / 700, 1) == -825.0
    assert (mid["lung_ml"], mid["ggo_ml"], mid["faint_ggo_ml"], mid["consolidation_ml"]) == (60.0, 0.0, 0.0, 2.0)
    assert mid["percent_high_opacity"] == round(100 * 10 / 600, 3) == 1.667  # not the -250 HU ones, nor vessels
    assert mid["mean_lung_hu"] == pytest.approx((578 * -850 + 10 * 0 + 10 * -250 + 2 * 40) / 600, abs=0.05)
    assert (low["ggo_ml"], low["faint_ggo_ml"], low["consolidation_ml"], low["percent_high_opacity"]) == (
        1.0, 0.0, 0.0, 0.0)
    assert low["mean_lung_hu"] == round((490 * -850 + 10 * -400) / 500, 1)
    lup = z[("six_zone", "left", "upper")]
    assert lup["consolidation_ml"] == 0.3 and lup["percent_high_opacity"] == round(100 * 3 / 700, 3)
    assert lup["mean_lung_hu"] == round((697 * -800 + 3 * 50) / 700, 1)
    # zhang900 slab L3 (z 105..115 mm: slice 11 only): no lesion, its lung's background HU
    l3 = z[("zhang900", "right", "L3")]
    assert (l3["lung_ml"], l3["ggo_ml"], l3["consolidation_ml"], l3["percent_high_opacity"],
            l3["mean_lung_hu"]) == (10.0, 0.0, 0.0, 0.0, -850.0)


@pytest.mark.parametrize("system,mode", [("six_zone", "slab"), ("zhang900", "zone")])
def test_zones_add_up_to_the_lung(system, mode):
    """Units that cover the lung (six zones; zhang900 in zone mode) sum to the per-lung columns; the lung-volume
    weighted mean of the units' mean HU and PHO is the lung's."""
    row, z, _ = score(*case(), mode=mode)
    for side in ("right", "left"):
        us = [r for (s, lung, _), r in z.items() if s == system and lung == side]
        assert all(r["status"] == "ok" for r in us) and len(us) in (3, 5)
        lung_ml = sum(r["lung_ml"] for r in us)
        assert lung_ml == pytest.approx(row[f"lung_volume_ml_{side}"])
        for unit_col, scan_col in CLASS_COLS.items():
            assert sum(r[unit_col] for r in us) == pytest.approx(row[f"{scan_col}_{side}"], abs=0.005 * len(us))
        hu = sum(r["mean_lung_hu"] * r["lung_ml"] for r in us) / lung_ml
        assert hu == pytest.approx(row[f"mean_lung_hu_{side}"], abs=0.06)
        pho = sum(r["percent_high_opacity"] * r["lung_ml"] for r in us) / lung_ml
        assert pho == pytest.approx(row[f"percent_high_opacity_{side}"], abs=1e-3)
        po = sum(r["involvement_pct"] * r["lung_ml"] for r in us) / lung_ml
        assert po == pytest.approx(row[f"percent_opacity_{side}"], abs=1e-3)


def test_missing_units_and_a_lung_not_found_are_empty():
    # the apex cut off: the upper zones are missing, their new columns empty like lung_ml / lesion_ml
    hu, lungs, classes = case()
    lungs[19] = lungs[18]
    _, z, flags = score(hu, lungs, classes)
    assert "ZONES_MISSING" in flags
    up = z[("six_zone", "right", "upper")]
    assert up["status"] == "missing"
    for c in ("lung_ml", "lesion_ml", *UNIT_COLS):
        assert math.isnan(up.get(c, math.nan)), c
    assert z[("six_zone", "right", "middle")]["consolidation_ml"] == 2.0
    # no left lung: its per-lung volumes 0, percentages and mean HU empty; its units missing
    row, z, flags = score(*case(left=False))
    assert "LUNG_NOT_FOUND:left" in flags
    assert row["ggo_volume_ml_left"] == row["consolidation_volume_ml_left"] == row["faint_ggo_volume_ml_left"] == 0
    assert row["lung_volume_ml_left"] == row["lesion_volume_ml_left"] == 0
    for c in ("percent_opacity_left", "percent_high_opacity_left", "mean_lung_hu_left"):
        assert math.isnan(row[c]), c
    assert row["percent_opacity_right"] == 4.444 and row["ggo_volume_ml_right"] == 6.0  # the found lung's own
    for (s, lung, u), r in z.items():
        if lung == "left":
            assert r["status"] == "missing" and all(math.isnan(r.get(c, math.nan)) for c in UNIT_COLS), (s, u)


def test_lobar_rows():
    """Lobes (RUL slices 10..18, RLL 1..9, no RML; LUL 10..18, LLL 1..9): an ok lobe has the new columns, the
    missing RML has them empty; the lobes of a lung add up to it."""
    hu, lungs, classes = case()
    lobes = np.zeros(lungs.shape, np.uint8)
    upper = np.arange(len(Z))[:, None, None] >= 10
    lobes[(lungs == 1) & upper], lobes[(lungs == 1) & ~upper] = 1, 3
    lobes[(lungs == 2) & upper], lobes[(lungs == 2) & ~upper] = 4, 5
    row, z, flags = score(hu, lungs, classes, lobes=lobes)
    assert "LOBES_MISSING" in flags
    rul, rll, rml = (z[("lobar", "right", u)] for u in ("right_upper", "right_lower", "right_middle"))
    assert (rul["ggo_ml"], rul["faint_ggo_ml"], rul["consolidation_ml"], rul["percent_high_opacity"]) == (
        5.0, 2.0, 0.0, 0.0)
    assert (rll["ggo_ml"], rll["consolidation_ml"], rll["percent_high_opacity"]) == (1.0, 2.0, round(1000 / 900, 3))
    assert rul["mean_lung_hu"] == round((850 * -850 + 20 * -650 + 30 * -400) / 900, 1)
    assert rml["status"] == "missing" and all(math.isnan(rml.get(c, math.nan)) for c in UNIT_COLS)
    lul, lll = z[("lobar", "left", "left_upper")], z[("lobar", "left", "left_lower")]
    for unit_col, scan_col in CLASS_COLS.items():
        assert lul[unit_col] + lll[unit_col] == pytest.approx(row[f"{scan_col}_left"], abs=0.011)


# --- the written tables -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_tables(sample_run):
    """The tables of the session's run over sample_dicoms/ (classical segmenter), only read here."""
    return sample_run


def test_written_tables_hold_the_columns_with_their_types(run_tables):
    new_scan = [f"{c}_{s}" for c in SIDE_COLS for s in ("right", "left")]
    assert set(new_scan) <= set(SCAN_COLUMNS) and set(UNIT_COLS) <= set(ZONE_COLUMNS)
    for name, cols, new in (("scans", SCAN_COLUMNS, new_scan), ("zones", ZONE_COLUMNS, list(UNIT_COLS))):
        csv = pd.read_csv(run_tables / f"{name}.csv", dtype=table_dtypes(cols))
        pq = pd.read_parquet(run_tables / f"{name}.parquet")
        assert list(csv.columns) == list(pq.columns) == cols
        for c in new:
            assert table_dtypes([c])[c] == "float64" and str(pq[c].dtype) == "float64", c
    scans = pd.read_parquet(run_tables / "scans.parquet")
    zones = pd.read_parquet(run_tables / "zones.parquet")
    assert len(scans) == 1 and scans["status"].iloc[0] == "ok"
    row = scans.iloc[0]
    for c in ("ggo_volume_ml", "consolidation_volume_ml", "faint_ggo_volume_ml"):
        assert row[f"{c}_right"] + row[f"{c}_left"] == pytest.approx(row[c], abs=0.011)
        assert row[f"{c}_right"] >= 0 and row[f"{c}_left"] >= 0
    six = zones[zones["system"] == "six_zone"]
    for side in ("right", "left"):
        u = six[six["lung"] == side]
        assert len(u) == 3 and (u["status"] == "ok").all()
        for unit_col, scan_col in CLASS_COLS.items():
            assert u[unit_col].sum() == pytest.approx(row[f"{scan_col}_{side}"], abs=0.016)
        assert (u["percent_high_opacity"] * u["lung_ml"]).sum() / u["lung_ml"].sum() == pytest.approx(
            row[f"percent_high_opacity_{side}"], abs=2e-3)
        assert (u["mean_lung_hu"] * u["lung_ml"]).sum() / u["lung_ml"].sum() == pytest.approx(
            row[f"mean_lung_hu_{side}"], abs=0.06)
    assert zones[zones["status"] == "ok"][list(UNIT_COLS)].notna().all().all()


def test_written_aeration_columns_add_up_and_the_patient_position_is_written(run_tables):
    """The sample's aeration compartments cover its lungs (the phantom holds no lung voxel above +100 HU but a few),
    its tissue agrees with its mean HU, and scans.csv says how the patient lay (the phantom's header: HFS)."""
    row = pd.read_parquet(run_tables / "scans.parquet").iloc[0]
    lung = row["lung_volume_ml_right"] + row["lung_volume_ml_left"]
    parts = sum(row[f"{c}_volume_ml"] for c in ("hyperinflated", "normally_aerated", "poorly_aerated", "non_aerated"))
    assert 0 <= lung - parts < 0.5
    assert row["lung_tissue_g"] == pytest.approx(sum(row[f"{c}_tissue_g"] for c in (
        "hyperinflated", "normally_aerated", "poorly_aerated", "non_aerated")), abs=0.03)
    assert row["lung_tissue_g"] == pytest.approx(lung * (1 + row["mean_lung_hu"] / 1000), rel=0.002)
    assert row["lung_gas_ml"] == pytest.approx(lung - row["lung_tissue_g"], rel=0.002)
    assert row["patient_position"] == "HFS"
    zones = pd.read_parquet(run_tables / "zones.parquet")
    ap = zones[zones["system"] == "anteroposterior"]
    assert len(ap) == 4 and (ap["status"] == "ok").all() and ap["unit_score"].isna().all()
    for side in ("right", "left"):
        halves = ap[ap["lung"] == side]
        assert halves["lung_ml"].sum() == pytest.approx(row[f"lung_volume_ml_{side}"], abs=0.011)
        assert halves["lesion_ml"].sum() == pytest.approx(row[f"lesion_volume_ml_{side}"], abs=0.011)


def test_written_peripheral_and_central_rows_are_each_lung(run_tables):
    """zones.csv's peripheral_central rows of a real run: four rows, measured, not scored, the two units of a lung
    adding up to it (the sample's lesions lie mostly inside aerated lung, away from the pleura: no share is asserted)."""
    row = pd.read_parquet(run_tables / "scans.parquet").iloc[0]
    zones = pd.read_parquet(run_tables / "zones.parquet")
    pc = zones[zones["system"] == "peripheral_central"]
    assert len(pc) == 4 and (pc["status"] == "ok").all() and pc["unit_score"].isna().all()
    assert set(pc["unit"]) == {"peripheral", "central"} and pc[list(UNIT_COLS)].notna().all().all()
    for side in ("right", "left"):
        units = pc[pc["lung"] == side].set_index("unit")
        assert units["lung_ml"].sum() == pytest.approx(row[f"lung_volume_ml_{side}"], abs=0.011)
        assert units["lesion_ml"].sum() == pytest.approx(row[f"lesion_volume_ml_{side}"], abs=0.011)
        assert 0.3 < units.loc["peripheral", "lung_ml"] / units["lung_ml"].sum() < 0.7
