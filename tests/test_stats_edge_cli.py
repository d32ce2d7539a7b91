"""Statistics module: small cohorts, missing data, no week-8 scans, and ``ctscore stats`` end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from scoring.stats.api import run_stats
from scoring.stats.simulate import write_cohort

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, Path]:
    return write_cohort(tmp_path_factory.mktemp("small"), seed=3, n_survivors=20, n_nonsurvivors=6)


def test_tiny_cohort_reports_reasons_instead_of_failing(tmp_path):
    p = write_cohort(tmp_path, seed=5, n_survivors=3, n_nonsurvivors=2)
    t = run_stats(p["scores"], p["clinical"], p["labs"])
    per = t["li2020_period_comparison"]
    assert per["p_value"].isna().any()
    assert per.loc[per["p_value"].isna(), "note"].str.contains("not tested: fewer than 3").all()
    assert t["liao2021_logistic"]["note"].str.startswith("not fitted").all()
    assert "n_2" not in per.columns and {"n_survivor", "n_non-survivor"} <= set(per.columns)


def test_no_week8_scan_means_unclassified(small, tmp_path):
    scans = pd.read_csv(small["scans"], dtype=str)
    clin = pd.read_csv(small["clinical"])
    onset = clin.set_index("scores_patient_id")["onset_date"]
    day = (pd.to_datetime(scans["study_date"], format="%Y%m%d")
           - pd.to_datetime(scans["patient_id"].map(onset))).dt.days
    scans[day < 49].to_csv(tmp_path / "scans.csv", index=False)  # a scans.csv path works as --scores too
    t = run_stats(tmp_path / "scans.csv", small["clinical"], small["labs"], study="liao2021")
    g = t["liao2021_lesion_groups"]
    assert (g["group"] == "unclassified").all() and g["reason"].str.startswith("no week-8 scan").all()
    assert t["liao2021_logistic"]["note"].str.contains("0 event").all()
    assert "not computed" in t["liao2021_roc"]["note"].iloc[0]


def test_missing_values_and_missing_onset(small, tmp_path):
    clin = pd.read_csv(small["clinical"])
    clin.loc[0, "onset_date"] = ""
    clin.loc[1, "glucocorticoid"] = ""
    clin.to_csv(tmp_path / "clinical.csv", index=False)
    t = run_stats(small["scores"], tmp_path / "clinical.csv", None, study="all")  # no labs at all
    g = t["liao2021_lesion_groups"].set_index("patient_id")
    assert g.loc[clin.loc[0, "patient_id"], "reason"] == "no onset date"
    assert "have no onset date" in " ".join(t["data_summary"]["value"])
    assert list(t["zhang2020_correlations"]["note"]) == [
        "not run: no lab values (no lab table given, or none of its values belongs to a clinical patient)"] \
        and len(t["zhang2020_subgroups"]) == 3
    assert t["liao2021_logistic"].set_index("term").loc["il6", "note"] == "not in the data"


def test_cli_end_to_end_writes_tables_figures_and_html(small, tmp_path):
    out = tmp_path / "stats"
    rc = main(["stats", "--scores", str(small["scores"]), "--clinical", str(small["clinical"]),
               "--labs", str(small["labs"]), "--study", "all", "-o", str(out)])
    assert rc == 0
    for name in ("li2020_score_by_period.png", "zhang2020_score_vs_labs.png", "liao2021_trajectories.png"):
        assert (out / name).stat().st_size > 5000
    assert (out / "li2020_period_comparison.csv").is_file() and (out / "zhang2020_correlations.csv").is_file()
    html = (out / "summary.html").read_text()
    assert "li2020_score_by_period.png" in html and "Mann-Whitney U" in html and "p_value" in html
    tab = pd.read_csv(out / "liao2021_group_counts.csv")
    assert tab["n"].sum() == 26


def test_cli_bad_clinical_data_exits_with_named_error(small, tmp_path, capsys):
    clin = pd.read_csv(small["clinical"])
    clin.loc[4, "outcome"] = "alive-ish"
    clin.to_csv(tmp_path / "clinical.csv", index=False)
    rc = main(["stats", "--scores", str(small["scores"]), "--clinical", str(tmp_path / "clinical.csv"),
               "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 1 and "BAD_CLINICAL_DATA" in err and "line 6" in err and "alive-ish" in err


def test_missing_input_files_exit_4_as_for_run(small, tmp_path, capsys):
    """A --clinical / --labs / --scores / --reference / --pred that does not exist is an input error (exit 4, as
    `ctscore run` on a missing folder), naming the option and the path; a bad value stays exit 1."""
    missing = tmp_path / "nope.csv"
    base = ["--scores", str(small["scores"]), "--clinical", str(small["clinical"]), "-o", str(tmp_path / "o")]
    for option in ("--clinical", "--labs", "--scores"):
        args = list(base)
        if option in args:
            args[args.index(option) + 1] = str(missing)
        else:
            args += [option, str(missing)]
        assert main(["stats", *args]) == 4, option
        err = capsys.readouterr().err
        assert "INPUT_NOT_FOUND" in err and option in err and "nope.csv" in err
    assert main(["validate", "--pred", str(small["scores"]), "--reference", str(missing), "-o",
                 str(tmp_path / "v")]) == 4
    assert main(["validate", "--pred", str(tmp_path), "--reference", str(small["clinical"]), "-o",
                 str(tmp_path / "v")]) == 4


def test_simulate_script_is_deterministic(tmp_path):
    for d in ("a", "b"):
        subprocess.run([sys.executable, str(REPO / "scripts" / "simulate_cohort.py"), "-o", str(tmp_path / d),
                        "--survivors", "4", "--non-survivors", "2", "--seed", "7"], check=True, cwd=tmp_path,
                       capture_output=True)
    for f in ("scores/scans.csv", "scores/zones.csv", "clinical.csv", "labs.csv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    scans = pd.read_csv(tmp_path / "a" / "scores" / "scans.csv")
    assert {"scan_id", "patient_id", "study_date", "status", "six_zone_total", "zhang900_total",
            "mosmed_category", "percent_opacity"} <= set(scans.columns)
    ok = scans[scans["status"] == "ok"]
    assert ok["six_zone_total"].between(0, 24).all() and ok["zhang900_total"].between(0, 900).all()
    zones = pd.read_csv(tmp_path / "a" / "scores" / "zones.csv")
    z = zones[zones["system"] == "zhang900"]
    assert np.array_equal(z["unit_score"], z["extent_score"] * z["density_grade"] ** 2)
