"""Statistics module, unit level: schema validation, binning, matching and numbers recomputed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.errors import CTScoreError
from scoring.stats import binning, compare, li2020, schema
from scoring.stats.cohort import build_cohort


def _clinical(**cols: list[str]) -> pd.DataFrame:
    base = {"patient_id": ["A", "B"], "onset_date": ["2020-02-01", "2020-02-03"], "outcome": ["survivor", "died"]}
    base.update(cols)
    return pd.DataFrame(base)


def test_clinical_error_names_column_line_and_value():
    with pytest.raises(CTScoreError) as e:
        schema.validate_clinical(_clinical(outcome=["survivor", "dead?"]))
    assert e.value.code == "BAD_CLINICAL_DATA"
    assert "'outcome'" in e.value.message and "line 3" in e.value.message and "'dead?'" in e.value.message


def test_clinical_bad_date_duplicate_id_and_missing_column():
    with pytest.raises(CTScoreError, match=r"'onset_date', line 2: value '2020-13-01'"):
        schema.validate_clinical(_clinical(onset_date=["2020-13-01", "2020-02-03"]))
    with pytest.raises(CTScoreError, match="appears more than once"):
        schema.validate_clinical(_clinical(patient_id=["A", "A"]))
    with pytest.raises(CTScoreError, match="missing required column"):
        schema.validate_clinical(pd.DataFrame({"id": ["A"], "onset_date": ["2020-01-01"]}))
    with pytest.raises(CTScoreError, match=r"'age', line 3: value 'old' is not a number"):
        schema.validate_clinical(_clinical(age=["40", "old"]))


def test_clinical_typing_and_aliases():
    c = schema.validate_clinical(_clinical(glucocorticoid=["yes", "0"], sex=["male", "F"]))
    assert list(c["outcome"]) == ["survivor", "non-survivor"]
    assert list(c["glucocorticoid"]) == [1.0, 0.0]
    assert list(c["sex"]) == ["M", "F"]
    assert c["onset_date"].dtype.kind == "M"


def test_labs_error_and_analyte_names():
    df = pd.DataFrame({"patient_id": ["A", "A"], "date": ["2020-02-05", "20200206"], "analyte": ["IL-6", "CRP"],
                       "value": ["12.5", "abc"]})
    with pytest.raises(CTScoreError) as e:
        schema.validate_labs(df)
    assert e.value.code == "BAD_LAB_DATA" and "'value', line 3" in e.value.message and "'abc'" in e.value.message
    ok = schema.validate_labs(df.assign(value=["12.5", "3"]))
    assert list(ok["analyte"]) == ["il6", "crp"]
    assert schema.canonical_analyte("Lymphocytes") == "lymphocyte_count"
    assert schema.canonical_analyte("D-dimer") == "d_dimer"


@pytest.mark.parametrize("name, canon", [
    ("Lymphocytes %", "lymphocyte_pct"), ("Lymphocytes (%)", "lymphocyte_pct"), ("NEUT%", "neutrophil_pct"),
    ("neu%", "neutrophil_pct"), ("lymphocyte percentage", "lymphocyte_pct"), ("LYMPH#", "lymphocyte_count"),
    ("NEUT#", "neutrophil_count"), ("WBC count", "wbc"), ("PCT", "pct"), ("Procalcitonin", "pct"),
    ("Absolute lymphocyte count", "lymphocyte_count"), ("hs-CRP", "hs_crp"), ("Glucose", "glucose")])
def test_blood_count_analyser_spellings(name, canon):
    """'Lymphocytes %' was a lab of its own ('lymphocytes_%'), 'LYMPH#' became 'lymph': the percentage and the count
    the studies use were missing from the analyses without a word."""
    assert schema.canonical_analyte(name) == canon


def test_unknown_lab_names_are_listed_in_one_note():
    df = pd.DataFrame({"patient_id": ["A"] * 4, "date": ["2020-02-05"] * 4,
                       "analyte": ["Lymphocytes %", "hs-CRP", "glucose", "HS CRP"], "value": ["12.5", "1.1", "5", "3"],
                       "unit": ["%", "mg/L", "mmol/L", "mg/L"]})
    ok = schema.validate_labs(df)
    assert list(ok["analyte"]) == ["lymphocyte_pct", "hs_crp", "glucose", "hs_crp"]
    [note] = ok.attrs["notes"]
    assert "2 lab name(s) are none of those the studies use" in note
    assert "hs_crp (from 'hs-CRP', 'HS CRP'; 2 value(s))" in note and "glucose (from 'glucose'; 1 value(s))" in note
    assert schema.validate_labs(df.iloc[:1]).attrs["notes"] == []


def test_week_and_period_boundaries():
    days = pd.Series([-1, 0, 6, 7, 48, 49, 55, 56], dtype=float)
    assert binning.week_since_onset(days).tolist()[1:7] == [1, 1, 2, 7, 8, 8]
    assert np.isnan(binning.week_since_onset(days)[0]) and np.isnan(binning.week_since_onset(days)[7])
    per = binning.period_since_onset(pd.Series([0, 5, 6, 10, 11, 15, 16, 20, 21, 90, -2], dtype=float))
    assert list(per[:10]) == ["0-5", "0-5", "6-10", "6-10", "11-15", "11-15", "16-20", "16-20", ">20", ">20"]
    assert pd.isna(per[10])


def test_match_labs_window_and_nearest():
    scans = pd.DataFrame({"scan_id": ["s1", "s2"], "patient_id": ["A", "A"],
                          "study_date": pd.to_datetime(["2020-02-10", "2020-02-20"])})
    labs = pd.DataFrame({"patient_id": ["A"] * 3, "date": pd.to_datetime(["2020-02-09", "2020-02-10", "2020-02-18"]),
                         "crp": [1.0, 2.0, 3.0]})
    m = binning.match_labs(scans, labs, window_days=1).set_index("scan_id")
    assert m.loc["s1", "crp"] == 2.0  # same day beats the day before
    assert np.isnan(m.loc["s2", "crp"])  # 2 days away: outside a 1-day window
    m2 = binning.match_labs(scans, labs, window_days=2).set_index("scan_id")
    assert m2.loc["s2", "crp"] == 3.0


def test_small_groups_are_reported_not_tested():
    row = compare.compare_groups({"a": [1.0, 2.0], "b": [3.0, 4.0, 5.0, np.nan]}, min_n=3)
    assert np.isnan(row["p_value"]) and "fewer than 3 values in a" in row["note"]
    assert row["n_a"] == 2 and row["n_b"] == 3  # NaN dropped, n still shown


def test_mann_whitney_matches_scipy_and_effect_size():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1, 1, 20), rng.normal(0, 1, 25)
    row = compare.compare_groups({"a": a, "b": b})
    ref = stats.mannwhitneyu(a, b, alternative="two-sided")
    assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
    auc = np.mean([(x > y) + 0.5 * (x == y) for x in a for y in b])  # rank-biserial r = 2 AUC - 1
    assert row["effect_size"] == pytest.approx(2 * auc - 1)


def test_odds_ratio_matches_two_by_two_formula():
    # exposure x outcome counts: a=exposed cases, b=exposed non-cases, c=unexposed cases, d=unexposed non-cases
    a, b, c, d = 30, 20, 15, 35
    df = pd.DataFrame({"x": [1] * (a + b) + [0] * (c + d), "y": [1] * a + [0] * b + [1] * c + [0] * d})
    tab, res, note = compare.logistic(df, "y", ["x"])
    row = tab.iloc[0]
    or_ = a * d / (b * c)
    se = np.sqrt(1 / a + 1 / b + 1 / c + 1 / d)  # Woolf
    assert row["odds_ratio"] == pytest.approx(or_, rel=1e-6)
    assert row["ci_low"] == pytest.approx(np.exp(np.log(or_) - stats.norm.ppf(0.975) * se), rel=1e-5)
    assert row["ci_high"] == pytest.approx(np.exp(np.log(or_) + stats.norm.ppf(0.975) * se), rel=1e-5)
    assert row["n"] == 100 and row["events"] == 45


def test_logistic_refuses_when_too_few_events():
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 0, 0, 1]})
    tab, res, note = compare.logistic(df, "y", ["x"])
    assert res is None and "not fitted" in note and tab["note"].iloc[0].startswith("not fitted")


def test_mixed_model_fixed_effects_on_balanced_design():
    """Balanced design (every patient one scan per period): GLS fixed effects = cell-mean contrasts."""
    rng = np.random.default_rng(3)
    rows, clin = [], []
    days = {"0-5": 3, "6-10": 8, "11-15": 13}
    for i in range(24):
        ns = i >= 12
        pid = f"P{i:02d}"
        clin.append({"patient_id": pid, "onset_date": pd.Timestamp("2020-03-01"),
                     "outcome": "non-survivor" if ns else "survivor"})
        u = rng.normal(0, 2)  # random intercept
        for k, d in enumerate(days.values()):
            y = 6 + 2 * k + (3 + 1.5 * k if ns else 0) + u + rng.normal(0, 1)
            rows.append({"scan_id": f"{pid}_{k}", "patient_id": pid, "study_date": pd.Timestamp("2020-03-01")
                         + pd.Timedelta(days=d), "six_zone_total": y, "zhang900_total": 0.0})
    scans, clinical = pd.DataFrame(rows), pd.DataFrame(clin)
    cohort = build_cohort(scans, None, clinical, None)
    fe, wald = li2020.mixed_models(cohort, "six_zone_total", [], min_n=3)
    fe = fe.set_index("term")
    d = cohort.scans.merge(clinical[["patient_id", "outcome"]], on="patient_id")
    m = d.groupby([d["period"].astype(str), "outcome"])["six_zone_total"].mean()
    assert fe.loc["Intercept", "coef"] == pytest.approx(m[("0-5", "survivor")], abs=1e-6)
    assert fe.loc["non_survivor", "coef"] == pytest.approx(m[("0-5", "non-survivor")] - m[("0-5", "survivor")], abs=1e-6)
    did = (m[("11-15", "non-survivor")] - m[("0-5", "non-survivor")]) - (m[("11-15", "survivor")] - m[("0-5", "survivor")])
    assert fe.loc["non_survivor:period[11-15]", "coef"] == pytest.approx(did, abs=1e-6)
    assert fe.loc["period[6-10]", "coef"] == pytest.approx(m[("6-10", "survivor")] - m[("0-5", "survivor")], abs=1e-6)
    assert set(wald["effect"]) == {"outcome (non-survivor vs survivor, at reference period)", "period",
                                   "outcome x period interaction"}


def test_example_files_validate():
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    clin = schema.read_clinical(repo / "examples" / "clinical_example.csv")
    labs = schema.read_labs(repo / "examples" / "labs_example.csv", set(clin["patient_id"]))
    assert len(clin) == 6 and {"il6", "crp"} <= set(labs["analyte"])


def test_partial_correlation_equals_the_correlation_of_residuals_and_pingouins_figures():
    """zhang2020's partial correlation (no GPL dependency): Pearson partial r is the correlation of the residuals
    of x and y regressed on the covariates; Spearman's the same on ranks. The r and p below were printed by
    pingouin 0.7.0 ``partial_corr`` on the same data; the CI is Fisher's z with 1 / sqrt(n - k - 3)."""
    d = pd.DataFrame({"x": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "y": [2, 1, 4, 3, 6, 5, 8, 9, 7, 10],
                      "age": [30, 45, 50, 41, 62, 58, 70, 66, 49, 75], "gc": [0, 1, 0, 1, 1, 0, 1, 0, 1, 1]})
    for method, ranked in (("pearson", d), ("spearman", d.rank())):
        design = np.column_stack([np.ones(len(d)), ranked[["gc", "age"]]])
        res = [ranked[c] - design @ np.linalg.lstsq(design, ranked[c], rcond=None)[0] for c in ("x", "y")]
        pc = compare.partial_correlation(d, "x", "y", ["gc", "age"], method)
        assert pc["r"] == pytest.approx(np.corrcoef(*res)[0, 1], abs=1e-12)
        t = pc["r"] * np.sqrt(6 / (1 - pc["r"] ** 2))  # n - 2 - k = 10 - 2 - 2
        assert pc["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), 6), rel=1e-12)
        z, se = np.arctanh(pc["r"]), 1 / np.sqrt(10 - 2 - 3)
        assert (pc["ci_low"], pc["ci_high"]) == pytest.approx((np.tanh(z - 1.959964 * se), np.tanh(z + 1.959964 * se)))
    assert compare.partial_correlation(d, "x", "y", ["gc", "age"], "spearman")["r"] == pytest.approx(0.879079011444114)
    assert compare.partial_correlation(d, "x", "y", ["gc", "age"], "spearman")["p_value"] == pytest.approx(
        0.004029052806387326)
    assert compare.partial_correlation(d, "x", "y", ["gc", "age"], "pearson")["r"] == pytest.approx(0.8481765562614696)
    # undefined: a constant covariate, too few rows
    assert np.isnan(compare.partial_correlation(d.assign(gc=1), "x", "y", ["gc"])["r"])
    assert np.isnan(compare.partial_correlation(d.head(5), "x", "y", ["gc", "age"])["r"])
    with pytest.raises(ValueError):
        compare.partial_correlation(d, "x", "y", [], "kendall")


def test_lab_dates_with_the_sampling_time(tmp_path):
    """A laboratory export's '2020-02-05 10:30' (and a DataFrame's Timestamp with a time) was refused as 'not a
    date'; the time is now checked and dropped (the analyses count days)."""
    f = tmp_path / "labs.csv"
    f.write_text("patient_id,date,analyte,value,unit\nA,2020-02-05 10:30,CRP,3,mg/L\nA,20200206T23:59:59,CRP,4,mg/L\n")
    assert [str(d.date()) for d in schema.read_labs(f)["date"]] == ["2020-02-05", "2020-02-06"]
    frame = pd.DataFrame({"patient_id": ["A"], "date": pd.to_datetime(["2020-02-05 10:30"]), "analyte": ["CRP"],
                          "value": [3.0]})
    assert str(schema.validate_labs(schema.as_text(frame, "BAD_LAB_DATA"))["date"][0]) == "2020-02-05 00:00:00"
    f.write_text("patient_id,date,analyte,value\nA,2020-02-05 25:00,CRP,3\n")
    with pytest.raises(CTScoreError, match="line 2: value '2020-02-05 25:00' is not a date"):
        schema.read_labs(f)


def test_a_flag_column_written_by_pandas_with_a_gap(tmp_path):
    """pandas writes a 0/1 column with a missing value as 1.0 / 0.0: the file was refused ('not a yes/no flag') while
    the same DataFrame given to the API was read."""
    frame = pd.DataFrame({"patient_id": ["A", "B", "C"], "onset_date": ["2020-02-01"] * 3,
                          "glucocorticoid": [1, 0, np.nan]})
    frame.to_csv(tmp_path / "clinical.csv", index=False)
    assert "1.0" in (tmp_path / "clinical.csv").read_text()
    read = schema.read_clinical(tmp_path / "clinical.csv")["glucocorticoid"].tolist()
    assert read[:2] == [1.0, 0.0] and np.isnan(read[2])
    assert schema.validate_clinical(schema.as_text(frame))["glucocorticoid"].tolist()[:2] == [1.0, 0.0]


def test_percent_well_aerated_has_the_scale_of_a_percentage():
    """li2020's bands of percent_well_aerated followed the cohort's largest value (0-<17.4 ... 69.6-87) and its
    axis said 'unit not given' (a review)."""
    from scoring.stats.li2020 import score_bands
    from scoring.stats.report import axis_label

    assert [b.label for b in score_bands("percent_well_aerated")] == ["0-<20", "20-<40", "40-<60", "60-<80", "80-100"]
    assert axis_label("percent_well_aerated") == "percent_well_aerated (% of lung, 0-100)"
