"""The CLI and its Python twins, a notebook user's audit: run_stats refused the tables run_pipeline and scans.parquet
hand over (pd.NA cells), --lobes and its Python key made two settings of one, warnings reached a notebook only on
stderr, a --set key given twice was taken silently, stats and validate wrote into a run's folder or each other's,
and small differences of wording (min_n, `ctscore train`)."""

from __future__ import annotations

import logging
import shutil

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.config import ConfigError, load_config, resolve_config, scores_config_hash
from pipeline.errors import CTScoreError
from scoring.stats.api import run_stats
from scoring.stats.simulate import write_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict:
    return write_cohort(tmp_path_factory.mktemp("cohort"), seed=5, n_survivors=8, n_nonsurvivors=4)


def test_run_stats_takes_frames_with_nullable_columns(cohort):
    """run_pipeline's scans, scans.parquet and read_csv(dtype_backend="numpy_nullable") hold pd.NA, not NaN: the
    empty lobar totals were refused ('<NA>' is not a number), and so was a missing age."""
    scans = pd.read_csv(cohort["scans"])
    scans["lobar20_total"] = pd.array([pd.NA] * len(scans), dtype="Int64")  # as run_pipeline returns it
    clin = pd.read_csv(cohort["clinical"], dtype_backend="numpy_nullable")
    clin.loc[0, "age"] = pd.NA
    assert clin["age"].isna().sum() == 1 and clin["age"].dtype.name == "Int64"
    frames = run_stats(scans, clin, pd.read_csv(cohort["labs"], dtype_backend="numpy_nullable"), study="li2020")
    plain = run_stats(pd.read_csv(cohort["scans"]), clin.astype({"age": "float64"}), pd.read_csv(cohort["labs"]),
                      study="li2020")
    for name in plain:
        pd.testing.assert_frame_equal(frames[name], plain[name])


def test_lobes_folder_is_one_setting_from_cli_and_python(tmp_path, monkeypatch):
    """--lobes made the folder absolute, the Python key kept it as given: the same run from a notebook replaced the
    CLI's results as 'another configuration'; and two sites' lobe folders were two settings in the statistics."""
    (tmp_path / "lobes").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    api = resolve_config({"scoring": {"lobar": {"lobes_dir": "lobes"}}})
    assert api["scoring"]["lobar"]["lobes_dir"] == str((tmp_path / "lobes").resolve())  # as --lobes does
    other = load_config(overrides=[f"scoring.lobar.lobes_dir={tmp_path / 'elsewhere'}"])
    assert scores_config_hash(api) == scores_config_hash(other)  # where the maps lie is no scoring setting
    assert scores_config_hash(api) != scores_config_hash(load_config())  # whether there are some is


def test_a_set_key_given_twice_is_refused(tmp_path, capsys):
    with pytest.raises(ConfigError, match="given twice"):
        load_config(overrides=["selection.min_slices=10", "selection.min_slices=20"])
    assert main(["scan", str(tmp_path), "--set", "selection.min_slices=10", "--set", " selection.min_slices=20"]) == 1
    err = capsys.readouterr().err
    assert "--set selection.min_slices is given twice" in err and "BAD_CONFIG" in err
    load_config(overrides=["selection.min_slices=10", "selection.max_slice_thickness_mm=5"])  # two keys: fine
    load_config(overrides=["selection.min_slices=10", "selection.min_slices= 10"])  # the same value twice: harmless
    assert load_config(overrides=['scoring.lobar.lobes_dir=""'])["scoring"]["lobar"]["lobes_dir"] is None


def test_run_pipeline_returns_the_warnings_it_logged(monkeypatch):
    import pipeline.run as run

    def fake(*args):
        logging.getLogger("pipeline.batch").warning("one %s", "warning")
        logging.getLogger("pipeline.batch").info("not a warning")
        logging.getLogger("scoring.systems").error("an error")
        return {"n_ok": 0}

    monkeypatch.setattr(run, "_run_pipeline", fake)
    assert run.run_pipeline("in", "out")["warnings"] == ["one warning", "an error"]
    assert not logging.getLogger("pipeline").handlers  # the collector is removed again


def test_stats_and_validate_refuse_a_run_folder_and_each_others(tmp_path, sample_run, cohort, capsys):
    from scoring.validation.api import run_validation
    from tests.test_validation_end_to_end import write_cohort as write_validation_cohort

    # stats into the run folder it reads (or any run folder): its 30 tables among the run's
    for scores in (sample_run, sample_run / "scans.csv"):
        with pytest.raises(CTScoreError) as e:
            run_stats(scores, cohort["clinical"], out_dir=sample_run)
        assert e.value.code == "OUTPUT_IS_INPUT" and "folder of its own" in e.value.message
    # a copied scans.csv (no run folder) with the analysis beside it, a folder with a user's own agreement.csv: fine
    copied = tmp_path / "copied"
    copied.mkdir()
    shutil.copy(cohort["scans"], copied / "scans.csv")
    (copied / "agreement.csv").write_text("my,own\n1,2\n")
    run_stats(copied / "scans.csv", cohort["clinical"], study="li2020", out_dir=copied)
    run_dir = tmp_path / "another_run"
    shutil.copytree(sample_run, run_dir, ignore=shutil.ignore_patterns("scan-*"))
    with pytest.raises(CTScoreError) as e:
        run_stats(cohort["scores"], cohort["clinical"], out_dir=run_dir)
    assert e.value.code == "OUTPUT_IS_INPUT" and "run.json" in e.value.message
    # the same from the CLI, before anything is written
    assert main(["stats", "--scores", str(cohort["scores"]), "--clinical", str(cohort["clinical"]),
                 "-o", str(run_dir)]) == 1
    assert "OUTPUT_IS_INPUT" in capsys.readouterr().err
    assert not (run_dir / "data_summary.csv").exists()
    # stats and validate into one folder: each would replace the other's data_summary.csv and summary.html
    shared = tmp_path / "analysis"
    run_stats(cohort["scores"], cohort["clinical"], cohort["labs"], study="li2020", out_dir=shared)
    pred, ref, _, _ = write_validation_cohort(tmp_path / "val", 6, 3, "1.2.826.0.78")
    before = (shared / "data_summary.csv").read_bytes()
    with pytest.raises(CTScoreError) as e:
        run_validation(pred, ref, out_dir=shared, draw=False)
    assert e.value.code == "OUTPUT_IN_USE" and "li2020_" in e.value.message
    assert (shared / "data_summary.csv").read_bytes() == before
    with pytest.raises(CTScoreError) as e:
        run_validation(pred, ref, out_dir=pred, draw=False)
    assert e.value.code == "OUTPUT_IS_INPUT"
    run_validation(pred, ref, out_dir=tmp_path / "v", draw=False)
    with pytest.raises(CTScoreError) as e:
        run_stats(cohort["scores"], cohort["clinical"], out_dir=tmp_path / "v")
    assert e.value.code == "OUTPUT_IN_USE" and "ratings.csv" in e.value.message
    run_stats(cohort["scores"], cohort["clinical"], study="li2020", out_dir=shared)  # its own folder again: fine


def test_min_n_and_train_errors_read_as_the_python_twins(cohort, tmp_path, capsys):
    assert main(["stats", "--scores", str(cohort["scores"]), "--clinical", str(cohort["clinical"]),
                 "--min-n", "1", "-o", str(tmp_path / "st")]) == 1
    err = capsys.readouterr().err
    with pytest.raises(CTScoreError) as e:
        run_stats(cohort["scores"], cohort["clinical"], min_n=1)
    assert e.value.message in err and "all studies" in err
    assert main(["train", "--data", str(tmp_path / "missing"), "--prepare-only", "--cache", str(tmp_path / "c")]) \
        != 0
    assert capsys.readouterr().err.startswith("ctscore: error:")
