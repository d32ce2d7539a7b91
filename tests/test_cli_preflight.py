"""Inputs checked before anything is written (`ctscore stats`, `ctscore validate` and their Python twins), and
PRED_SCHEMA for a pipeline output lacking a column the reference needs (docs/reference_schema.md)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import build_parser, main
from pipeline.errors import CTScoreError
from scoring.stats.api import run_stats
from scoring.stats.simulate import write_cohort as write_stats_cohort
from scoring.validation.api import run_validation
from tests.test_validation_end_to_end import write_cohort as write_validation_cohort


@pytest.fixture(scope="module")
def val(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    pred, ref, rows, _ = write_validation_cohort(tmp_path_factory.mktemp("val"), 4, 11, "1.2.826.0.9")
    return pred, ref, rows


@pytest.fixture(scope="module")
def stats(tmp_path_factory) -> dict[str, Path]:
    return write_stats_cohort(tmp_path_factory.mktemp("stats"), seed=5, n_survivors=3, n_nonsurvivors=2)


def _copy_pred(pred: Path, dest: Path, drop: tuple[str, ...] = (), drop_zones: tuple[str, ...] = ()) -> Path:
    dest.mkdir(parents=True)
    pd.read_csv(pred / "scans.csv", dtype=str).drop(columns=list(drop)).to_csv(dest / "scans.csv", index=False)
    pd.read_csv(pred / "zones.csv", dtype=str).drop(columns=list(drop_zones)).to_csv(dest / "zones.csv", index=False)
    return dest


def _both(pred: Path, ref: Path, out: Path, capsys, **options) -> tuple[CTScoreError, int, str]:
    """The Python twin's error and the CLI's exit code and stderr on the same inputs."""
    with pytest.raises(CTScoreError) as e:
        run_validation(pred, ref, out, draw=False, **options)
    args = ["--systems", ",".join(options["systems"])] if options.get("systems") else []
    rc = main(["validate", "--pred", str(pred), "--reference", str(ref), "-o", str(out), "--no-figures", "-q", *args])
    return e.value, rc, capsys.readouterr().err


# --- validate: PRED_SCHEMA for a column the reference needs --------------------------------------------------

def test_scans_csv_lacking_a_total_column_the_reference_needs_is_pred_schema(val, tmp_path, capsys):
    pred, ref, _ = val
    p2 = _copy_pred(pred, tmp_path / "p2", drop=("six_zone_total", "series_uid"))
    by_scan_id = tmp_path / "by_id.csv"  # the reference names scans by scan_id: series_uid is not needed
    pd.DataFrame([{**r, "series_uid": "", "scan_id": f"scan-{int(r['series_uid'].rsplit('.', 1)[1]):03d}"}
                  for r in pd.read_csv(ref, dtype=str).to_dict("records")]).to_csv(by_scan_id, index=False)
    out = tmp_path / "VAL"
    err, rc, text = _both(p2, by_scan_id, out, capsys)
    assert err.code == "PRED_SCHEMA" and err.path == str(p2 / "scans.csv")
    assert "six_zone_total" in err.message and "series_uid" not in err.message
    assert rc == 1 and "PRED_SCHEMA" in text and "six_zone_total" in text and "scans.csv" in text
    assert not out.exists()


def test_only_columns_of_the_systems_compared_are_needed(val, tmp_path):
    pred, ref, _ = val
    p2 = _copy_pred(pred, tmp_path / "p2", drop=("zhang900_total", "mosmed_category"))
    # zhang900 and mosmed are filtered out: their columns are not needed
    t = run_validation(p2, ref, systems=["six_zone", "percent_involvement"], draw=False)
    assert t["ratings"]["ctscore"].notna().all()
    with pytest.raises(CTScoreError) as e:
        run_validation(p2, ref, draw=False)
    assert e.value.code == "PRED_SCHEMA" and "zhang900_total" in e.value.message
    assert "mosmed_category" in e.value.message and "lobar20_total" not in e.value.message  # no lobar in the reference


def test_series_uid_column_needed_when_the_reference_names_scans_by_it(val, tmp_path, capsys):
    pred, ref, _ = val
    p2 = _copy_pred(pred, tmp_path / "p2", drop=("series_uid",))
    out = tmp_path / "VAL"
    err, rc, text = _both(p2, ref, out, capsys)  # this reference names every scan by series_uid
    assert err.code == "PRED_SCHEMA" and "series_uid" in err.message and err.path == str(p2 / "scans.csv")
    assert rc == 1 and "PRED_SCHEMA" in text and "REFERENCE_NO_MATCH" not in text
    assert not out.exists()
    # named by patient_id + study_date: those two columns are needed, series_uid is not
    p3 = _copy_pred(pred, tmp_path / "p3", drop=("series_uid", "study_date"))
    scans = pd.read_csv(pred / "scans.csv", dtype=str).set_index("series_uid")
    by_date = tmp_path / "by_date.csv"
    rows = pd.read_csv(ref, dtype=str)
    rows.assign(patient_id=rows["series_uid"].map(scans["patient_id"]), study_date=rows["series_uid"].map(
        scans["study_date"]), series_uid="").to_csv(by_date, index=False)
    with pytest.raises(CTScoreError) as e:
        run_validation(p3, by_date, draw=False)
    assert e.value.code == "PRED_SCHEMA" and "['study_date']" in e.value.message
    assert run_validation(_copy_pred(pred, tmp_path / "p4", drop=("series_uid",)), by_date, draw=False)[
        "ratings"]["ctscore"].notna().all()


def test_zones_csv_lacking_a_column_the_reference_units_need_is_pred_schema(val, tmp_path, capsys):
    pred, ref, _ = val
    p2 = _copy_pred(pred, tmp_path / "p2", drop_zones=("unit_score",))
    out = tmp_path / "VAL"
    err, rc, text = _both(p2, ref, out, capsys, systems=["six_zone"])
    assert err.code == "PRED_SCHEMA" and err.path == str(p2 / "zones.csv") and "unit_score" in err.message
    assert rc == 1 and "PRED_SCHEMA" in text and "zones.csv" in text
    assert not out.exists()
    # totals only: zones.csv is not needed
    only_totals = tmp_path / "totals.csv"
    pd.read_csv(ref, dtype=str).query("unit == 'total'").to_csv(only_totals, index=False)
    assert run_validation(p2, only_totals, systems=["six_zone"], draw=False)["ratings"]["ctscore"].notna().all()
    p3 = _copy_pred(pred, tmp_path / "p3", drop_zones=("lung", "unit_score"))  # was an AttributeError
    assert run_validation(p3, only_totals, systems=["six_zone"], draw=False)["ratings"]["ctscore"].notna().all()


@pytest.mark.parametrize("which", ["scans.csv", "zones.csv"])
def test_empty_pred_tables_are_pred_schema_not_a_traceback(val, tmp_path, capsys, which):
    pred, ref, _ = val
    p2 = _copy_pred(pred, tmp_path / "p2")
    (p2 / which).write_text("")
    out = tmp_path / "VAL"
    err, rc, text = _both(p2, ref, out, capsys)
    assert err.code == "PRED_SCHEMA" and err.path == str(p2 / which)
    assert rc == 1 and "Traceback" not in text and not out.exists()


# --- nothing written when an input is missing or unusable -------------------------------------------------

def test_validate_missing_input_leaves_no_output_folder(val, tmp_path, capsys):
    pred, ref, _ = val
    for p, r, code in ((pred, tmp_path / "nope.csv", "REFERENCE_NOT_FOUND"), (tmp_path / "nope", ref, "PRED_NOT_FOUND")):
        out = tmp_path / "VAL"
        err, rc, text = _both(p, r, out, capsys)
        assert err.code == code and rc == 4 and code in text
        assert not out.exists(), code


def test_validate_bad_reference_leaves_no_output_folder(val, tmp_path, capsys):
    pred, ref, _ = val
    bad = tmp_path / "bad.csv"
    df = pd.read_csv(ref, dtype=str)
    df.loc[3, "value"] = "lots"
    df.to_csv(bad, index=False)
    out = tmp_path / "VAL"
    err, rc, _ = _both(pred, bad, out, capsys)
    assert err.code == "REFERENCE_BAD_VALUE" and rc == 1 and not out.exists()


@pytest.mark.parametrize("option", ["--clinical", "--labs", "--scores"])
def test_stats_missing_input_leaves_no_output_folder(stats, tmp_path, capsys, option):
    files = {"--scores": stats["scores"], "--clinical": stats["clinical"], "--labs": stats["labs"],
             option: tmp_path / "nope.csv"}
    out = tmp_path / "STATS"
    with pytest.raises(CTScoreError) as e:
        run_stats(files["--scores"], files["--clinical"], files["--labs"], out_dir=out)
    assert e.value.code == "INPUT_NOT_FOUND" and not out.exists()
    rc = main(["stats", *[str(x) for kv in files.items() for x in kv], "-o", str(out), "-q"])
    assert rc == 4 and "INPUT_NOT_FOUND" in capsys.readouterr().err and not out.exists()


def test_stats_bad_clinical_data_or_score_option_leaves_no_output_folder(stats, tmp_path):
    clin = pd.read_csv(stats["clinical"], dtype=str)
    clin.loc[1, "outcome"] = "alive-ish"
    clin.to_csv(tmp_path / "clinical.csv", index=False)
    out = tmp_path / "STATS"
    with pytest.raises(CTScoreError) as e:
        run_stats(stats["scores"], tmp_path / "clinical.csv", stats["labs"], out_dir=out)
    assert e.value.code == "BAD_CLINICAL_DATA" and not out.exists()
    with pytest.raises(CTScoreError) as e:  # a score option is checked against scans.csv once it is read
        run_stats(stats["scores"], stats["clinical"], stats["labs"], study="li2020", out_dir=out,
                  li2020={"score": "no_such_column"})
    assert e.value.code == "BAD_OPTION" and not out.exists()


def test_unwritable_output_is_still_found_first_and_nothing_is_made(val, stats, tmp_path):
    """-o is checked (without making it) before the inputs are read: OUTPUT_UNWRITABLE at once, as before."""
    pred, ref, _ = val
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CTScoreError) as e:
        run_validation(pred, tmp_path / "nope.csv", blocker / "a" / "VAL", draw=False)
    assert e.value.code == "OUTPUT_UNWRITABLE" and e.value.path == str(blocker / "a" / "VAL")
    with pytest.raises(CTScoreError) as e:
        run_stats(stats["scores"], tmp_path / "nope.csv", out_dir=blocker)
    assert e.value.code == "OUTPUT_UNWRITABLE"
    out = tmp_path / "new" / "deeper" / "VAL"  # parents made only when the run goes ahead
    run_validation(pred, ref, out, draw=False)
    assert (out / "agreement.csv").is_file()


# --- scan: both table destinations checked before the inventory is built ------------------------------------

def test_scan_checks_both_tables_before_writing_either(tmp_path, capsys):
    sample = Path(__file__).resolve().parents[1] / "sample_dicoms"
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    inv = tmp_path / "inv.csv"
    rc = main(["scan", str(sample), "-o", str(inv), "--stacks", str(blocker / "stacks.csv"), "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "OUTPUT_UNWRITABLE" in err and "stacks.csv" in err
    assert not inv.exists()  # -o was written before --stacks failed
    (tmp_path / "adir").mkdir()
    assert main(["scan", str(sample), "-o", str(tmp_path / "adir"), "-q"]) == 1
    assert "a folder is in its place" in capsys.readouterr().err
    assert main(["scan", str(sample), "-o", str(tmp_path / "new" / "inv.csv"), "-q"]) == 0
    assert (tmp_path / "new" / "inv.csv").is_file()


def test_unmatched_row_is_described_with_the_value_as_written(val, tmp_path):
    pred, ref, _ = val
    bad = tmp_path / "bad.csv"
    df = pd.read_csv(ref, dtype=str)
    df.loc[0, "series_uid"] = "9.9.9"
    df.to_csv(bad, index=False)
    with pytest.raises(CTScoreError) as e:
        run_validation(pred, bad, draw=False)
    assert e.value.code == "REFERENCE_NO_MATCH" and f"={df.loc[0, 'value']!r}" in e.value.message  # not 2.0 for '2'


def test_scan_of_a_missing_input_says_error_like_every_command(tmp_path, capsys):
    """``ctscore scan`` printed "ctscore: INPUT_NOT_FOUND ..." (its own handler), the other commands
    "ctscore: error: ..."; the exit code is 4 either way."""
    from pipeline.cli import main
    from pipeline.errors import EXIT_INPUT_UNREADABLE

    assert main(["scan", str(tmp_path / "nowhere")]) == EXIT_INPUT_UNREADABLE
    assert capsys.readouterr().err.startswith("ctscore: error: INPUT_NOT_FOUND")


def test_run_with_an_unusable_model_device_or_slurm_profile_leaves_no_output_folder(tmp_path, capsys):
    """``run`` wrote OUT/inventory.csv before the model, the device or the SLURM profile were known to be usable: a
    folder that is no model, ``-d cuda:0`` without a GPU, a missing SLURM profile each left an OUT behind."""
    import torch

    from pipeline.batch import BatchOptions
    from pipeline.run import run_pipeline
    from tests.conftest import REPO

    sample = REPO / "sample_dicoms"
    (tmp_path / "not_a_model").mkdir()
    (tmp_path / "not_a_model" / "notes.txt").write_text("hello")
    cases = [["--model", str(tmp_path / "not_a_model")],
             ["--executor", "slurm", "--slurm-profile", str(tmp_path / "missing.yaml")]]
    if not torch.cuda.is_available():
        cases += [["-d", "cuda:0"], ["-d", "cuda:0", "--executor", "local"]]
    for i, extra in enumerate(cases):
        out = tmp_path / f"out{i}"
        assert main(["run", str(sample), "-o", str(out), "-q", *extra]) == 1, extra
        assert "ctscore: error:" in capsys.readouterr().err
        assert not out.exists(), extra
    with pytest.raises(CTScoreError):  # the Python twin alike
        run_pipeline(sample, tmp_path / "py", {"segmentation": {"method": str(tmp_path / "not_a_model")}})
    assert not (tmp_path / "py").exists()
    with pytest.raises(CTScoreError):
        run_pipeline(sample, tmp_path / "py2", batch=BatchOptions(executor="slurm",
                                                                  slurm_profile=str(tmp_path / "missing.yaml")))
    assert not (tmp_path / "py2").exists()


def test_scan_summary_names_each_stacks_folder_and_says_what_skipped_counts(tmp_path, capsys):
    """A tester could not tell which row of `ctscore scan`'s table was which patient folder (stack ids cut from the
    left, no folder), and read "0 skipped" against stacks whose decision was "skipped". Each stack now shows its
    folder relative to INPUT, and the file count says it counts files skipped one by one."""
    import shutil

    sample = Path(__file__).resolve().parents[1] / "sample_dicoms"
    root = tmp_path / "in"
    shutil.copytree(sample, root / "patient A" / "ct")
    (root / "notes.txt").write_text("not DICOM")
    assert main(["scan", str(root)]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert "in stacks not selected" in first and "skipped as files (not DICOM, unreadable or no image)" in first
    header, row = out.splitlines()[1:3]
    assert header.split()[0] == "folder" and row.split()[:2] == ["patient", "A/ct"]


@pytest.mark.parametrize("argv, option", [
    (["stats", "--scores", "A", "--scores", "B", "--clinical", "c.csv", "-o", "o"], "--scores"),
    (["validate", "--pred", "A", "--pred", "B", "--reference", "r.csv", "-o", "o"], "--pred"),
    (["stats", "--scores", "A", "--clinical", "c.csv", "--study", "liao2021", "--study", "li2020", "-o", "o"],
     "--study"),
    (["run", "IN", "-o", "A", "--out", "B"], "--out")])
def test_a_single_valued_option_given_twice_is_refused(argv, option, capsys):
    """argparse kept the last value: 'ctscore stats --scores outA --scores outB' analysed site B alone, exit 0."""
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    assert f"{option} given twice" in capsys.readouterr().err
    args = build_parser().parse_args(["run", "IN", "-o", "A", "--set", "a=1", "--set", "b=2", "--config", "x.yaml",
                                      "--config", "y.yaml"])
    assert args.overrides == ["a=1", "b=2"] and args.config == ["x.yaml", "y.yaml"]


def test_a_list_option_given_twice_says_to_give_all_values_once(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "-o", "w", "--backgrounds", "a", "--backgrounds", "b"])
    assert "give all its values after one --backgrounds" in capsys.readouterr().err
