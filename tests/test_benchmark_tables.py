"""scripts/benchmark_tables.py: its simulated consortium cohort is well formed and its results folder aggregates
to the simulated tables (what the benchmark times is what ``ctscore`` would do with a real one)."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.batch import aggregate
from scoring.validation.api import run_validation
from tests.scripts_loader import load_script

bench = load_script("benchmark_tables")


def test_cohort_of_several_blocks_has_unique_ids():
    c = bench.simulate(1000, seed=3)  # about 800 scans a block: two blocks
    scans = c["scans"]
    assert len(scans) == 1000
    assert scans["scan_id"].is_unique and scans["series_uid"].is_unique
    assert set(c["zones"]["scan_id"]) <= set(scans["scan_id"])
    assert set(scans["patient_id"]) == set(c["clinical"]["scores_patient_id"])
    assert c["clinical"]["patient_id"].is_unique
    assert set(c["labs"]["patient_id"]) <= set(c["clinical"]["patient_id"])
    assert scans["patient_id"].str[:6].nunique() == 2  # patients of both blocks


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench") / "cohort"
    sizes = bench.write_cohort(folder, 40, seed=0, with_results=True)
    return folder, sizes


def test_results_aggregate_to_the_simulated_tables(cohort):
    folder, sizes = cohort
    out = aggregate(folder / "results")
    assert out["n_series"] == sizes["scans"] == 40 and out["n_ok"] == sizes["ok"]
    simulated = pd.read_csv(folder / "scores" / "scans.csv").set_index("scan_id").sort_index()
    got = pd.read_csv(folder / "results" / "scans.csv").set_index("scan_id").sort_index()
    assert list(got.index) == list(simulated.index)
    for column in ("status", "patient_id", "series_uid", "six_zone_total", "zhang900_total", "percent_opacity",
                   "lung_volume_ml_right"):
        pd.testing.assert_series_equal(got[column], simulated[column], check_dtype=False)
    zones = pd.read_csv(folder / "results" / "zones.csv")
    assert len(zones) == sizes["zone rows"]


def test_reader_sheet_validates_against_the_scores(cohort):
    folder, sizes = cohort
    tables = run_validation(folder / "scores", folder / "readers.csv")
    agreement = tables["agreement"]
    assert {"six_zone", "zhang900", "percent_involvement", "mosmed"} <= set(agreement["system"])
    assert len(pd.read_csv(folder / "readers.csv")) == sizes["reader rows"]


def test_main_prints_a_row_per_command(tmp_path, capsys):
    assert bench.main(["--scans", "30", "--repeats", "2", "--commands", "validate"]) == 0  # no run of the sample
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("cohort: 30 scans")
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:]}
    assert set(rows) == {"validate"}
    for values in rows.values():
        assert float(values[0]) > 0 and float(values[-1]) > 50  # seconds, peak RSS in MiB


def test_keep_refuses_an_existing_folder(tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["--scans", "10", "--keep", str(tmp_path)])


@pytest.mark.parametrize("command", ["stats", "validate"])
def test_the_timed_call_imports_no_library(cohort, tmp_path, command):
    """The figures exclude imports: the libraries the commands load lazily are imported before the clock starts
    (stats imported about 1,090 modules inside its first call, 0.9-1.3 s of it)."""
    folder, _ = cohort
    figures = bench.time_command(command, folder, tmp_path, 0)
    imported = figures["imported_during_call"]
    assert len(imported) < 100, imported  # plug-ins and submodules only
    heavy = ("statsmodels", "scipy", "sklearn", "seaborn", "patsy", "matplotlib.pyplot", "matplotlib.figure")
    assert not [m for m in imported if m.split(".")[0] in heavy or m in heavy], imported
    assert figures["seconds"] > 0
