"""The stats and validate tables as a statistician takes them into R, Stata or Excel: the same columns whatever the
data held (two sites' tables stack), floats without binary noise, numbers beside the median [IQR] / mean (SD)
texts, and a codebook.csv that lists exactly the columns written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scoring.stats import report
from scoring.stats.api import run_stats
from scoring.stats.simulate import write_cohort
from scoring.validation.api import run_validation
from tests.test_validation_end_to_end import write_cohort as write_validation_cohort

TYPES = {"text", "integer", "number", "boolean"}


@pytest.fixture(scope="module")
def stats_runs(tmp_path_factory) -> dict[str, tuple[dict[str, pd.DataFrame], Path]]:
    """The simulated cohort as it is, and as a site without severe patients, without a glucocorticoid column and
    without IL-10 or ferritin labs would have it."""
    tmp = tmp_path_factory.mktemp("sites")
    p = write_cohort(tmp, seed=0, n_survivors=30, n_nonsurvivors=12)
    clin = pd.read_csv(p["clinical"], dtype=str)
    labs = pd.read_csv(p["labs"], dtype=str)
    assert (clin["severity"] == "severe").any() and {"il10", "ferritin"} <= set(labs["analyte"])
    clin.assign(severity=clin["severity"].replace({"severe": "moderate"})).drop(columns=["glucocorticoid"]).to_csv(
        tmp / "clinical_b.csv", index=False)
    labs[~labs["analyte"].isin(["il10", "ferritin"])].to_csv(tmp / "labs_b.csv", index=False)
    runs = {}
    for site, clinical, lab in (("a", p["clinical"], p["labs"]), ("b", tmp / "clinical_b.csv", tmp / "labs_b.csv")):
        out = tmp / f"stats_{site}"
        runs[site] = (run_stats(p["scores"], clinical, lab, study="all", out_dir=out), out)
    return runs


@pytest.fixture(scope="module")
def validate_run(tmp_path_factory) -> tuple[dict[str, pd.DataFrame], Path]:
    tmp = tmp_path_factory.mktemp("val")
    pred, ref, _, _ = write_validation_cohort(tmp, 8, 3, "1.2.826.0.9")
    out = tmp / "VAL"
    return run_validation(pred, ref, out, draw=False), out


def _headers(out: Path) -> dict[str, list[str]]:
    return {p.stem: list(pd.read_csv(p, nrows=0).columns) for p in sorted(out.glob("*.csv"))
            if p.name != "codebook.csv"}


# ---- (a) the columns do not depend on the data -----------------------------------------------------------------

def test_two_sites_tables_have_the_same_columns(stats_runs):
    a, b = _headers(stats_runs["a"][1]), _headers(stats_runs["b"][1])
    assert set(a) == set(b)
    differ = {name: sorted(set(a[name]) ^ set(b[name])) for name in a if a[name] != b[name]}
    assert not differ
    for name in a:  # the Python API returns the tables as written
        assert list(stats_runs["b"][0][name].columns) == b[name], name


def test_a_severity_level_without_patients_keeps_its_columns_and_the_test_is_named(stats_runs):
    t = stats_runs["b"][0]["liao2021_weekly_tests"]
    sev = t[t["grouping"] == "severity"]
    assert len(sev) and {"n_severe", "median_iqr_severe", "median_severe", "q1_severe", "q3_severe"} <= set(t.columns)
    assert (sev["n_severe"] == 0).all() and sev["median_iqr_severe"].replace("", np.nan).isna().all()
    tested = sev[sev["p_value"].notna()]
    assert len(tested) and (tested["test"] == "Mann-Whitney U (two-sided)").all()
    assert tested["note"].str.contains("no severe patient").all()
    full = stats_runs["a"][0]["liao2021_weekly_tests"]
    assert (full.loc[full["grouping"] == "severity", "test"] == "Kruskal-Wallis H").all()


def test_labs_and_covariates_missing_at_a_site_keep_their_columns(stats_runs):
    ba = stats_runs["b"][0]["zhang2020_before_after_patients"]
    for col in ("il10_before", "il10_after", "il10_change", "ferritin_before", "ferritin_after", "ferritin_change",
                "glucocorticoid"):
        assert col in ba.columns and ba[col].isna().all(), col
    gc = stats_runs["b"][0]["zhang2020_glucocorticoid_change"]
    assert list(gc.columns) == list(stats_runs["a"][0]["zhang2020_glucocorticoid_change"].columns)
    assert gc["note"].str.contains("no 'glucocorticoid' column").all()


# ---- (b) floats without binary noise ---------------------------------------------------------------------------

def test_floats_are_written_without_noise_and_small_p_values_kept(tmp_path):
    df = pd.DataFrame({"x": [9.600999999999999, 0.12099999999999955, 1234.5, 1 / 3],
                       "p_value": [1e-12, 3.5e-300, 0.049999999999999996, np.nan],
                       "n": [12.0, np.nan, 3.0, 4.0]})
    report.write_tables({"t": df}, tmp_path)
    text = (tmp_path / "t.csv").read_text().splitlines()
    assert text[1].split(",")[:2] == ["9.601", "1e-12"] and text[2].split(",")[:2] == ["0.121", "3.5e-300"]
    assert text[1].split(",")[2] == "12" and text[3].split(",")[1] == "0.05"
    back = pd.read_csv(tmp_path / "t.csv")
    np.testing.assert_allclose(back.to_numpy(float), df.to_numpy(float), rtol=1e-10, equal_nan=True)


def _noisy(text: str) -> bool:
    """A number written with more than 12 significant digits (float noise: 9.600999999999999)."""
    m = re.fullmatch(r"-?(\d+)\.?(\d*)(e[-+]\d+)?", text)
    return bool(m) and len((m[1] + m[2]).lstrip("0")) > 12


@pytest.mark.parametrize("which", ["stats", "validate"])
def test_written_tables_have_no_float_noise_and_read_back_the_same(which, stats_runs, validate_run):
    tables, out = stats_runs["a"] if which == "stats" else validate_run
    for name, df in tables.items():
        raw = pd.read_csv(out / f"{name}.csv", dtype=str, keep_default_na=False)
        noisy = [(c, v) for c in raw.columns for v in raw[c] if _noisy(v)]
        assert not noisy, (name, noisy[:3])
        back = pd.read_csv(out / f"{name}.csv")
        for c in df.columns:
            if pd.api.types.is_float_dtype(df[c]) and df[c].notna().any():
                np.testing.assert_allclose(back[c].to_numpy(float), df[c].to_numpy(float), rtol=1e-10, atol=0,
                                           equal_nan=True, err_msg=f"{name}.{c}")


# ---- (c) numbers beside the texts ------------------------------------------------------------------------------

#: the columns each table had before the numeric companions (a public interface: they keep their names and order)
OLD_PREFIX = {
    "liao2021_weekly_tests": ["grouping", "variable", "week", "n_persistent", "median_iqr_persistent", "n_recovery",
                              "median_iqr_recovery", "test", "statistic", "p_value", "effect_size",
                              "effect_size_name", "note", "n_mild", "median_iqr_mild", "n_moderate",
                              "median_iqr_moderate", "n_severe", "median_iqr_severe"],
    "li2020_period_comparison": ["period_days", "variable", "mean_sd_survivor", "mean_sd_non-survivor", "n_survivor",
                                 "median_iqr_survivor", "n_non-survivor", "median_iqr_non-survivor", "test",
                                 "statistic", "p_value", "effect_size", "effect_size_name", "note"],
    "zhang2020_before_after": ["variable", "n_pairs", "median_iqr_before", "median_iqr_after", "mean_change",
                               "sd_change", "test", "statistic", "p_value", "note"],
    "liao2021_peak_timing": ["lab", "n_patients", "n_lab_first", "n_same_day", "n_score_first", "n_tied_score_peak",
                             "n_tied_lab_peak", "median_iqr_lag_days", "wilcoxon_p", "sign_test_p", "test", "note"],
}


def _parse_iqr(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?[\d.]+(?:e[-+]?\d+)?", text)]


def test_every_text_descriptive_has_numbers_after_the_existing_columns(stats_runs):
    tables = stats_runs["a"][0]
    for name, old in OLD_PREFIX.items():
        assert list(tables[name].columns[:len(old)]) == old, name
    for name, df in tables.items():
        for c in [c for c in df.columns if c.startswith("median_iqr_")]:
            g = c.removeprefix("median_iqr_")
            trio = [f"median_{g}", f"q1_{g}", f"q3_{g}"]
            assert set(trio) <= set(df.columns), (name, c)
            assert min(df.columns.get_loc(x) for x in trio) > df.columns.get_loc("note"), (name, c)
            for text, *numbers in df[[c, *trio]].itertuples(index=False):
                if isinstance(text, str) and text:
                    np.testing.assert_allclose(_parse_iqr(text), numbers, rtol=6e-3, atol=1e-9,
                                               err_msg=f"{name}.{c} {text}")
                else:
                    assert all(pd.isna(x) for x in numbers), (name, c, numbers)
        for c in [c for c in df.columns if c.startswith("mean_sd_")]:
            g = c.removeprefix("mean_sd_")
            for text, mean, sd in df[[c, f"mean_{g}", f"sd_{g}"]].itertuples(index=False):
                if text:
                    np.testing.assert_allclose(_parse_iqr(text), [mean, sd], rtol=6e-2, atol=1e-9)


# ---- (d, e) the codebook ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["stats_a", "stats_b", "validate"])
def test_codebook_lists_exactly_the_columns_written(which, stats_runs, validate_run):
    out = validate_run[1] if which == "validate" else stats_runs[which[-1]][1]
    book = pd.read_csv(out / "codebook.csv", dtype=str, keep_default_na=False)
    assert list(book.columns) == ["table", "column", "type", "unit", "allowed", "description"]
    written = [(t, c) for t, cols in _headers(out).items() for c in cols]
    assert sorted(written) == sorted(zip(book["table"], book["column"], strict=True))
    assert not book.duplicated(["table", "column"]).any()
    assert set(book["type"]) <= TYPES and (book["description"].str.len() >= 5).all()
    assert "not described" not in set(book["description"])
    for t, c, kind in book[["table", "column", "type"]].itertuples(index=False):
        values = pd.read_csv(out / f"{t}.csv", dtype=str, keep_default_na=False)[c]
        values = values[values != ""]
        if kind in ("number", "integer"):
            nums = pd.to_numeric(values, errors="coerce")
            assert nums.notna().all(), (t, c, list(values[nums.isna()][:3]))
            if kind == "integer":
                assert (nums == nums.round()).all(), (t, c)
        elif kind == "boolean":
            assert set(values) <= {"True", "False"}, (t, c)


def test_codebook_documents_the_two_boolean_encodings(stats_runs, validate_run):
    stats_book = pd.read_csv(stats_runs["a"][1] / "codebook.csv", keep_default_na=False)
    row = stats_book[(stats_book["table"] == "liao2021_peak_timing_patients")
                     & (stats_book["column"] == "lab_peak_precedes")].iloc[0]
    assert row["type"] == "boolean" and row["allowed"] == "True, False"
    val_book = pd.read_csv(validate_run[1] / "codebook.csv", keep_default_na=False)
    within = val_book[val_book["column"].str.startswith("within_readers_")]
    assert len(within) == 2 and (within["type"] == "text").all()
    assert within["allowed"].str.startswith("yes, no").all() and within["description"].str.contains("True/False").all()
    side = pd.read_csv(validate_run[1] / "side_by_side.csv", dtype=str, keep_default_na=False)
    assert set(side["within_readers_mae"]) <= {"yes", "no", ""}
    readers = val_book[(val_book["table"] == "ratings") & val_book["column"].isin(["alice", "bob"])]
    assert len(readers) == 2 and readers["description"].str.contains("reader").all()


# --- measurement conditions of the cohort (an audit of contrast, noise and kernels) ------------------------------------

def test_a_cohort_mixing_contrast_kernels_or_thick_slices_is_named_in_a_note():
    import pandas as pd

    from scoring.stats.cohort import conditions_note

    scans = pd.DataFrame({"scan_id": list("abcd"), "qc_flags": ["CONTRAST;ZONES_MISSING", "", "THICK_SLICES:8", None],
                          "kernel": ["B30f", "B30f", "B70f", None]})
    note = conditions_note(scans)
    assert "1 of 4 scans contrast-enhanced (CONTRAST)" in note
    assert "1 of 4 scans slices thicker than 5 mm (THICK_SLICES)" in note
    assert "2 reconstruction kernels: B30f (2), B70f (1)" in note
    assert "NOISY" not in note and "DENSE_LUNG" not in note
    # all alike (every scan contrast, one kernel) or not said: no note
    same = pd.DataFrame({"scan_id": list("ab"), "qc_flags": ["CONTRAST", "CONTRAST:x"], "kernel": ["B30f", "B30f"]})
    assert conditions_note(same) is None
    assert conditions_note(pd.DataFrame({"scan_id": ["a"]})) is None


def test_the_note_reaches_the_cohort_of_ctscore_stats(tmp_path):
    """Through the public API on a simulated cohort whose scans.csv gets a CONTRAST flag on one scan."""
    import pandas as pd

    from scoring.stats.cohort import load_cohort
    from tests.scripts_loader import load_script

    sim = load_script("simulate_cohort")
    sim.main(["-o", str(tmp_path / "sim"), "--seed", "0"])
    scans = pd.read_csv(tmp_path / "sim" / "scores" / "scans.csv", dtype=str, keep_default_na=False)
    scans.loc[0, "qc_flags"] = "CONTRAST"
    scans.to_csv(tmp_path / "sim" / "scores" / "scans.csv", index=False)
    cohort = load_cohort(tmp_path / "sim" / "scores", tmp_path / "sim" / "clinical.csv", tmp_path / "sim" / "labs.csv")
    assert any("contrast-enhanced (CONTRAST)" in n for n in cohort.notes)


def test_serial_network_scans_of_unlike_coverage_are_named_in_a_note(tmp_path):
    """The network's volumes move with how far a scan reaches beyond the lungs (README, "Measurement error"): a
    patient whose serial scans differ there by more than 20 mm is counted in a note; scans of the classical segmenter,
    single scans and tables without the columns (before 0.10.0) are not."""
    import pandas as pd

    from scoring.stats.cohort import coverage_note, load_cohort
    from tests.scripts_loader import load_script

    scans = pd.DataFrame({"patient_id": ["a", "a", "b", "b", "c"], "segmenter": ["monai"] * 5,
                          "scan_above_lungs_mm": [20.0, 22.0, 10.0, 12.0, 5.0],
                          "scan_below_lungs_mm": [8.0, 40.0, 30.0, 31.0, 0.0]})
    note = coverage_note(scans)
    assert note.startswith("1 of 2 patients with serial scans segmented by a network")
    assert "more than 20 mm" in note and "Measurement error" in note
    assert coverage_note(scans.assign(segmenter="classical")) is None
    assert coverage_note(scans.drop(columns=["scan_above_lungs_mm", "scan_below_lungs_mm"])) is None
    assert coverage_note(scans.assign(scan_below_lungs_mm=[8.0, 20.0, 30.0, 31.0, 0.0])) is None  # 12 mm apart
    # through the public API: the simulated cohort's scans.csv given the columns
    sim = load_script("simulate_cohort")
    sim.main(["-o", str(tmp_path / "sim"), "--seed", "0"])
    path = tmp_path / "sim" / "scores" / "scans.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table["segmenter"] = "monai"
    table["scan_above_lungs_mm"] = "20.0"
    table["scan_below_lungs_mm"] = "30.0"
    first = table.index[table["patient_id"] == table["patient_id"].iloc[0]]
    table.loc[first[0], "scan_below_lungs_mm"] = "2.0"
    table.to_csv(path, index=False)
    cohort = load_cohort(tmp_path / "sim" / "scores", tmp_path / "sim" / "clinical.csv", tmp_path / "sim" / "labs.csv")
    assert any(n.startswith("1 of ") and "reach beyond the lungs" in n for n in cohort.notes)
