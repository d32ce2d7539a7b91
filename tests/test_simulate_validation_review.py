"""Simulated cohort columns, exact agreement, evaluate_segmenter's paired score means, and ctscore values that are
not numbers in the validation's input (a helper's review)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import CTScoreError
from pipeline.outputs import SCAN_COLUMNS, ZONE_COLUMNS
from scoring import systems
from scoring.stats import simulate
from scoring.stats.schema import read_scores
from scoring.validation import metrics
from scoring.validation.api import run_validation
from tests.scripts_loader import load_script
from tests.test_validation_end_to_end import write_cohort as write_validation_cohort

# rounding of the simulated tables: zones.csv volumes to 0.01 mL, scans.csv volumes to 0.1 mL
ZONE_TOL, SCAN_TOL = 0.011, 0.051


@pytest.fixture(scope="module")
def cohort() -> dict[str, pd.DataFrame]:
    return simulate.make_cohort(seed=0, n_survivors=6, n_nonsurvivors=3)


# --- 1. the simulated tables have the pipeline's columns -------------------------------------------------------

def test_simulated_tables_have_the_pipeline_columns(cohort):
    """zones.csv lacked status, lung_ml, lesion_ml, ggo_ml, consolidation_ml, faint_ggo_ml, percent_high_opacity and
    mean_lung_hu, scans.csv the per-lung measures, faint_ggo_volume_ml and mean_lung_hu, which real runs write."""
    assert list(cohort["scans"].columns) == SCAN_COLUMNS
    assert list(cohort["zones"].columns) == ZONE_COLUMNS
    ok = cohort["scans"][cohort["scans"]["status"] == "ok"]
    measures = [c for c in SCAN_COLUMNS if c.startswith(("ggo_", "consolidation_", "faint_", "percent_", "mean_lung",
                                                          "lesion_volume"))]
    assert ok[measures].notna().all().all()
    zone_measures = ["lung_ml", "lesion_ml", "ggo_ml", "consolidation_ml", "faint_ggo_ml", "percent_high_opacity",
                     "mean_lung_hu"]
    assert cohort["zones"][zone_measures].notna().all().all() and (cohort["zones"]["status"] == "ok").all()


def test_simulated_zone_measures_are_consistent(cohort):
    z = cohort["zones"]
    assert (z["lesion_ml"] <= z["lung_ml"]).all()
    assert ((z["ggo_ml"] + z["consolidation_ml"] - z["lesion_ml"]).abs() <= ZONE_TOL).all()
    assert (z["faint_ggo_ml"] <= z["ggo_ml"] + ZONE_TOL).all()
    assert ((100 * z["lesion_ml"] / z["lung_ml"] - z["involvement_pct"]).abs() < 0.01).all()
    assert ((100 * z["consolidation_ml"] / z["lung_ml"] - z["percent_high_opacity"]).abs() < 0.01).all()
    assert z["percent_high_opacity"].le(z["involvement_pct"] + 0.001).all()
    # normal lung where nothing is involved, denser lung the more is
    assert (z.loc[z["involvement_pct"] == 0, "mean_lung_hu"] == simulate.HU_NORMAL).all()
    assert z["mean_lung_hu"].between(-1000, 100).all()
    six = z[z["system"] == "six_zone"]
    assert np.corrcoef(six["involvement_pct"], six["mean_lung_hu"])[0, 1] > 0.9
    # a zhang900 unit's class volumes give its density grade, by the pipeline's default rule
    zh = z[(z["system"] == "zhang900")]
    grades = [systems.density_grade({1: r.faint_ggo_ml, 2: r.ggo_ml - r.faint_ggo_ml, 3: r.consolidation_ml},
                                    "densest", 0.2) for r in zh.itertuples()]
    assert grades == zh["density_grade"].astype(int).tolist()
    assert set(zh["density_grade"].astype(int)) == {0, 1, 2, 3}


def test_simulated_zones_add_up_to_the_lungs_and_the_lungs_to_the_scan(cohort):
    ok = cohort["scans"][cohort["scans"]["status"] == "ok"].set_index("scan_id")
    six = cohort["zones"][cohort["zones"]["system"] == "six_zone"]
    sums = six.groupby(["scan_id", "lung"])[["lung_ml", "lesion_ml", "ggo_ml", "consolidation_ml",
                                              "faint_ggo_ml"]].sum()
    for side in ("right", "left"):
        s = sums.xs(side, level="lung").reindex(ok.index)
        lung = ok[f"lung_volume_ml_{side}"]
        assert ((s["lung_ml"] - lung).abs() <= 3 * ZONE_TOL + SCAN_TOL).all()
        for zone_col, scan_col in (("lesion_ml", "lesion_volume_ml"), ("ggo_ml", "ggo_volume_ml"),
                                   ("consolidation_ml", "consolidation_volume_ml"),
                                   ("faint_ggo_ml", "faint_ggo_volume_ml")):
            assert ((s[zone_col] - ok[f"{scan_col}_{side}"]).abs() <= 3 * ZONE_TOL + SCAN_TOL).all(), scan_col
        po = 100 * ok[f"lesion_volume_ml_{side}"] / lung
        assert ((po - ok[f"percent_opacity_{side}"]).abs() < 0.01).all()
        pho = 100 * ok[f"consolidation_volume_ml_{side}"] / lung
        assert ((pho - ok[f"percent_high_opacity_{side}"]).abs() < 0.01).all()
        assert (ok[f"percent_high_opacity_{side}"] <= ok[f"percent_opacity_{side}"]).all()
    for col in ("lesion_volume_ml", "ggo_volume_ml", "consolidation_volume_ml", "faint_ggo_volume_ml"):
        assert ((ok[f"{col}_right"] + ok[f"{col}_left"] - ok[col]).abs() <= 3 * SCAN_TOL).all(), col
    assert ((ok["ggo_volume_ml"] + ok["consolidation_volume_ml"] - ok["lesion_volume_ml"]).abs() <= 2 * SCAN_TOL).all()
    lung_ml = ok["lung_volume_ml_right"] + ok["lung_volume_ml_left"]
    mean_hu = (ok["mean_lung_hu_right"] * ok["lung_volume_ml_right"]
               + ok["mean_lung_hu_left"] * ok["lung_volume_ml_left"]) / lung_ml
    assert ((mean_hu - ok["mean_lung_hu"]).abs() <= 0.1).all()


def test_simulated_values_of_the_old_columns_are_kept(cohort):
    """The new measures take no random draws: the existing columns of a seed are what they were (values of the
    simulator before the new columns)."""
    ok = cohort["scans"][cohort["scans"]["status"] == "ok"]
    assert len(cohort["scans"]) == 71 and len(ok) == 70
    assert ok["six_zone_total"].tolist()[:8] == [6, 6, 6, 5, 1, 0, 0, 0]
    assert ok["zhang900_total"].tolist()[:8] == [12, 56, 10, 9, 3, 0, 0, 0]
    assert ok["lesion_volume_ml"].tolist()[:5] == pytest.approx([334.5, 368.3, 218.3, 94.5, 10.7])
    assert ok["percent_high_opacity"].tolist()[:5] == pytest.approx([0.5, 0.67, 0.23, 0.04, 0.0])
    assert cohort["zones"]["involvement_pct"].tolist()[:6] == pytest.approx([5.02, 6.57, 10.93, 3.66, 6.54, 10.35])
    assert cohort["labs"]["value"].tolist()[:3] == pytest.approx([3.064, 10.194, 6.174])


def test_written_simulated_cohort_reads_as_numbers(tmp_path):
    paths = simulate.write_cohort(tmp_path, seed=2, n_survivors=3, n_nonsurvivors=2)
    scans, zones = read_scores(paths["scores"])
    for c in ("faint_ggo_volume_ml", "percent_opacity_right", "percent_high_opacity_left", "mean_lung_hu",
              "ggo_volume_ml_left"):
        assert pd.api.types.is_float_dtype(scans[c]) and scans[c].notna().all(), c
    assert {"ggo_ml", "consolidation_ml", "faint_ggo_ml", "percent_high_opacity", "mean_lung_hu"} <= set(zones.columns)


# --- 2. exact agreement ------------------------------------------------------------------------------------------

def test_exact_agreement_has_no_relative_tolerance():
    """np.isclose's relative tolerance (1e-5 of the second value) called 99.999 and 100 % the same value, and not
    100 and 99.999: the figure depended on which rater came first."""
    a, b = [99.999, 40.0, 12.5, 7.0], [100.0, 40.0, 12.5, 7.001]
    assert metrics.agreement(a, b, ordinal=False)["exact_agreement"] == 0.5
    assert metrics.agreement(b, a, ordinal=False)["exact_agreement"] == 0.5
    assert metrics.exact_agreement([99.999, 50.0], [100.0, 50.0]) == 0.5
    # whole-number scores: equal only when equal, floating-point noise is no difference
    assert metrics.exact_agreement([900, 899, 0], [900, 900, 0]) == pytest.approx(2 / 3)
    assert metrics.exact_agreement([0.1 + 0.2], [0.3]) == 1.0
    assert np.isnan(metrics.exact_agreement([], []))


# --- 3. evaluate_segmenter: paired means -------------------------------------------------------------------------

def test_score_agreement_means_are_over_the_paired_cases():
    """The reference mean took cases whose model score was NaN, the differences did not: a mean difference of one
    set of cases next to the reference level of another. Now every figure is over the cases both scored, and ``n``
    says how many."""
    ev = load_script("evaluate_segmenter")

    def row(model, ref):
        keys = ev.SCORE_KEYS
        return {"set": "default", "scores": {"model": dict(zip(keys, model)), "reference": dict(zip(keys, ref))}}

    nan = float("nan")
    rows = [row((4, 100, 5.0), (6, 120, 6.0)),
            row((nan, 200, 9.0), (20, 220, 10.0)),  # the model's six-zone total not computable
            row((8, nan, 3.0), (8, 100, nan))]  # zhang900 on the model's side, % opacity on the reference's
    agg = ev.score_agreement(rows)["default"]
    assert agg["n"] == 3
    six = agg["six_zone_total"]
    assert six["reference_mean"] == 7.0  # not (6 + 20 + 8) / 3
    assert six["n"] == 2 and six["model_mean"] == 6.0
    assert six["mean_difference"] == six["model_mean"] - six["reference_mean"] == -1.0
    zh = agg["zhang900_total"]
    assert zh["n"] == 2 and zh["reference_mean"] == 170.0 and zh["model_mean"] == 150.0
    po = agg["percent_opacity"]
    assert po["n"] == 2 and po["reference_mean"] == 8.0 and po["model_mean"] == 7.0
    only_nan = ev.score_agreement(rows[1:2])["default"]["six_zone_total"]
    assert only_nan["n"] == 0 and only_nan["reference_mean"] is None and only_nan["mean_difference"] is None


# --- review: ctscore values that are not numbers ------------------------------------------------------------------

def test_a_ctscore_value_that_is_not_a_number_is_named(tmp_path, caplog):
    """A total or unit score in scans.csv / zones.csv that is not a number was read as missing: the comparison went
    on with the warning 'no ctscore value (failed scan or zone reported missing)'. Now PRED_SCHEMA names the file,
    the column and the scan; a column the reference does not need is read as missing with a warning."""
    pred, ref, _, _ = write_validation_cohort(tmp_path, 4, 5, "1.2.826.0.55")
    scans = pd.read_csv(pred / "scans.csv", dtype=str, keep_default_na=False)
    scans.loc[1, "six_zone_total"] = "twelve"
    scans.to_csv(pred / "scans.csv", index=False)
    with pytest.raises(CTScoreError) as e:
        run_validation(pred, ref, draw=False)
    assert e.value.code == "PRED_SCHEMA" and "scans.csv" in str(e.value)
    assert "six_zone_total" in str(e.value) and "scan-001" in str(e.value) and "'twelve'" in str(e.value)
    # the reference without six-zone scores does not need the column
    with caplog.at_level(logging.WARNING):
        t = run_validation(pred, ref, draw=False, systems="zhang900")
    assert "six_zone_total of scan scan-001 is 'twelve'" in caplog.text
    assert set(t["ratings"]["system"]) == {"zhang900"}

    scans.loc[1, "six_zone_total"] = ""  # an empty value is missing, as before
    scans.to_csv(pred / "scans.csv", index=False)
    zones = pd.read_csv(pred / "zones.csv", dtype=str, keep_default_na=False)
    i = zones.index[(zones["system"] == "zhang900") & (zones["scan_id"] == "scan-002")][0]
    zones.loc[i, "unit_score"] = "4,5"
    zones.to_csv(pred / "zones.csv", index=False)
    with pytest.raises(CTScoreError) as e:
        run_validation(pred, ref, draw=False)
    msg = str(e.value)
    assert e.value.code == "PRED_SCHEMA" and "zones.csv" in msg and "unit_score" in msg
    assert f"zhang900 {zones.loc[i, 'lung']}_{zones.loc[i, 'unit']} of scan scan-002" in msg


def test_a_lungs_percent_is_the_pipelines_own_empty_for_a_lung_not_found(tmp_path):
    """A lung's percent involvement was lesion / lung volume from scans.csv, so a lung not found (LUNG_NOT_FOUND,
    a few stray voxels, all lesion) compared as 100 % involved. It is now scans.csv's percent_opacity_<side>, empty
    for such a lung; results without that column still give lesion / lung volume."""
    from scoring.validation.predictions import load_predictions

    pred, _, _, _ = write_validation_cohort(tmp_path, 4, 5, "1.2.826.0.56")
    scans = pd.read_csv(pred / "scans.csv", dtype=str, keep_default_na=False)
    scans["lesion_volume_ml_left"] = scans["lung_volume_ml_left"] = "0.01"  # stray voxels, all lesion
    scans["percent_opacity_left"] = ""  # as score_scan writes a lung not found
    scans["lesion_volume_ml_right"], scans["lung_volume_ml_right"] = "30", "1500"
    scans["percent_opacity_right"] = "2.0"
    scans.to_csv(pred / "scans.csv", index=False)

    def per_lung() -> dict[str, list[float]]:
        p = load_predictions(pred)
        p = p[(p["system"] == "percent_involvement") & p["unit"].isin(["right", "left"])]
        return {side: p.loc[p["unit"] == side, "value"].tolist() for side in ("right", "left")}

    got = per_lung()
    assert len(got["left"]) == len(scans) and all(np.isnan(got["left"]))
    assert got["right"] == [2.0] * len(scans)
    scans.drop(columns=["percent_opacity_left", "percent_opacity_right"]).to_csv(pred / "scans.csv", index=False)
    got = per_lung()  # an older scans.csv: from the volumes, as before
    assert got["left"] == [100.0] * len(scans) and got["right"] == [2.0] * len(scans)
