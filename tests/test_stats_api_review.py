"""Statistics module, Python API review: matplotlib state, stale outputs, run_stats keywords, summary settings,
the zhang2020 correlation note, scans without a PatientID, DataFrame inputs (and run_validation's refusal of them)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import build_parser, main
from pipeline.errors import CTScoreError
from scoring.stats import report
from scoring.stats.api import run_stats
from scoring.stats.cohort import load_cohort
from scoring.stats.simulate import write_cohort

FIGURES = ("liao2021_trajectories.png", "zhang2020_score_vs_labs.png", "li2020_score_by_period.png")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict[str, Path]:
    return write_cohort(tmp_path_factory.mktemp("cohort"), seed=3, n_survivors=8, n_nonsurvivors=4)


def _refuse(*args, **kwargs):
    raise AssertionError("the statistics module must not touch matplotlib's global backend or pyplot")


@pytest.fixture(scope="module")
def python_all(cohort, tmp_path_factory) -> dict:
    """run_stats(all studies, out_dir) with matplotlib.use and pyplot's figure makers refused."""
    import matplotlib
    import matplotlib.pyplot as plt

    out = tmp_path_factory.mktemp("py") / "st"
    state = {"backend": matplotlib.get_backend(), "fignums": plt.get_fignums(), "out": out, "error": None}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib, "use", _refuse)
        mp.setattr(plt, "figure", _refuse)
        mp.setattr(plt, "subplots", _refuse)
        try:
            state["tables"] = run_stats(cohort["scores"], cohort["clinical"], cohort["labs"], out_dir=out)
        except AssertionError as exc:
            state["error"] = exc
    state["backend_after"], state["fignums_after"] = matplotlib.get_backend(), plt.get_fignums()
    return state


def _settings(html: str) -> list[str]:
    return re.findall(r"<li>([^<]*)</li>", html.split("<h2>Settings</h2>", 1)[1].split("</ul>", 1)[0])


# 1. matplotlib: an Agg canvas per figure, no global backend, no pyplot figure

def test_figures_leave_matplotlib_backend_and_pyplot_alone(python_all):
    assert python_all["error"] is None, python_all["error"]
    assert python_all["backend_after"] == python_all["backend"]
    assert python_all["fignums_after"] == python_all["fignums"]
    for name in FIGURES:
        data = (python_all["out"] / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name


# 2. a run removes the tables and figures of the previous run, nothing else

def test_second_run_removes_previous_outputs_only(cohort, tmp_path):
    out = tmp_path / "st"
    out.mkdir()
    mine = ["notes.txt", "liao2021_my_notes.csv", "my_plot.png", "liao2021_roc.csv.bak"]
    for name in mine:
        (out / name).write_text("the user's own file")
    run_stats(cohort["scores"], cohort["clinical"], cohort["labs"], study="liao2021", out_dir=out)
    assert (out / "liao2021_roc.csv").is_file() and (out / "liao2021_trajectories.png").is_file()
    (out / ".zhang2020_score_vs_labs.4242.tmp.png").write_bytes(b"left by a killed run")
    run_stats(cohort["scores"], cohort["clinical"], cohort["labs"], study="li2020", out_dir=out)
    names = {p.name for p in out.iterdir()}
    assert set(mine) <= names
    ours = names - set(mine)
    assert not [n for n in ours if n.startswith(("liao2021_", "zhang2020_", ".zhang2020_"))], sorted(ours)
    html = (out / "summary.html").read_text()
    assert all(Path(n).stem in html for n in ours - {"summary.html", "data_summary.csv"})
    # the command alike (it calls run_stats): a liao2021 run after the li2020 one leaves no li2020 file
    assert main(["stats", "--scores", str(cohort["scores"]), "--clinical", str(cohort["clinical"]), "--labs",
                 str(cohort["labs"]), "--study", "liao2021", "-o", str(out), "-q"]) == 0
    names = {p.name for p in out.iterdir()}
    assert set(mine) <= names and not [n for n in names if n.startswith("li2020_")]
    assert (out / "liao2021_trajectories.png").is_file()


def test_known_output_names_cover_every_table_and_figure(python_all):
    written = {p.name for p in python_all["out"].iterdir()}
    assert written - {"summary.html", "data_summary.csv", "codebook.csv"} <= report.STUDY_FILES
    assert {f"{n}.csv" for n in python_all["tables"]} - {"data_summary.csv"} <= report.STUDY_FILES
    assert set(FIGURES) <= written


# 3. run_stats keywords: the command's options for all studies, study lists, clear errors

def test_run_stats_takes_the_commands_global_options_with_its_defaults():
    args = build_parser().parse_args(["stats", "--scores", "s", "--clinical", "c", "-o", "o"])
    params = inspect.signature(run_stats).parameters
    for name in ("min_n", "window_days", "id_column"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[name].default == getattr(args, name), name


def test_min_n_keyword_and_study_list(cohort):
    s, c, lab = cohort["scores"], cohort["clinical"], cohort["labs"]
    five = run_stats(s, c, lab, study=["li2020"], min_n=5)
    per = five["li2020_period_comparison"]
    assert per["note"].str.contains("fewer than 5").any()
    pd.testing.assert_frame_equal(per, run_stats(s, c, lab, study="li2020", li2020={"min_n": 5})
                                  ["li2020_period_comparison"])
    # a study's own min_n wins over the keyword
    three = run_stats(s, c, lab, study=("li2020",), min_n=5, li2020={"min_n": 3})["li2020_period_comparison"]
    assert not three["note"].str.contains("fewer than 5").any()
    both = run_stats(s, c, lab, study=["li2020", "liao2021"])
    assert {n.split("_")[0] for n in both} == {"data", "liao2021", "li2020"}


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"threshold": 5}, ["'threshold'", "min_n", "window_days", "id_column", "liao2021={'threshold': ...}"]),
    ({"minn": 4}, ["'minn'", "did you mean 'min_n'?"]),
    ({"min_n": 1}, ["min_n must be a whole number >= 2"]),
    ({"study": ["liao2021", "li2021"]}, ["unknown study 'li2021'"]),
    ({"study": []}, ["study must be 'all'"]),
    ({"study": {"li2020": 1}}, ["study must be 'all'"]),
])
def test_bad_keywords_are_named_before_anything_is_read(tmp_path, kwargs, words):
    with pytest.raises(CTScoreError) as e:  # the inputs do not exist: the keywords are refused first
        run_stats(tmp_path / "no_scores", tmp_path / "no.csv", None, out_dir=tmp_path / "st", **kwargs)
    assert e.value.code == "BAD_OPTION"
    assert all(w in e.value.message for w in words), e.value.message
    assert not (tmp_path / "st").exists()


# 4. summary.html lists the options used, the same from the command and from Python

def test_summary_settings_same_from_command_and_python(cohort, python_all, tmp_path):
    assert main(["stats", "--scores", str(cohort["scores"]), "--clinical", str(cohort["clinical"]), "--labs",
                 str(cohort["labs"]), "-o", str(tmp_path / "cli"), "-q"]) == 0
    cli = _settings((tmp_path / "cli" / "summary.html").read_text())
    py = _settings((python_all["out"] / "summary.html").read_text())
    assert cli == py
    assert any(x.startswith("liao2021 options:") and "threshold" in x and "min_n" in x for x in py), py
    assert any(x.startswith("zhang2020 options:") and "followup_days" in x for x in py), py
    assert any(x.startswith("li2020 options:") and "min_n" in x for x in py), py


# 5. zhang2020_correlations says why it is empty

def test_correlations_without_labs_say_not_run(cohort):
    t = run_stats(cohort["scores"], cohort["clinical"], None, study="zhang2020")
    corr = t["zhang2020_correlations"]
    assert list(corr["note"]) == list(t["zhang2020_subgroup_labs"]["note"])
    assert corr["note"].iloc[0].startswith("not run: no lab values")


# 6. a scan without a PatientID is counted as such, not as an id missing from the clinical table

def test_scan_without_patient_id_has_its_own_note(cohort, tmp_path):
    scans = pd.read_csv(cohort["scans"], dtype=str, keep_default_na=False)
    scans.loc[0, "patient_id"] = ""
    scans.loc[1, "patient_id"] = "nobody"
    scans.to_csv(tmp_path / "scans.csv", index=False)
    notes = load_cohort(tmp_path / "scans.csv", cohort["clinical"]).notes
    empty = [n for n in notes if "have no patient_id" in n]
    assert len(empty) == 1 and empty[0].startswith("1 scan(s) have no patient_id (no PatientID in their DICOM headers)")
    assert repr(scans.loc[0, "scan_id"]) in empty[0] and "docs/clinical_schema.md" in empty[0]
    assert "'scores_patient_id'" in empty[0]  # the column whose value the scan needs
    other = [n for n in notes if "not in the clinical table were left out" in n]
    assert other == ["1 scan(s) whose patient_id is not in the clinical table were left out (e.g. 'nobody')"]


# 7. DataFrames: run_stats takes them, run_validation says what to use

def test_run_stats_takes_dataframes_as_the_files(cohort, tmp_path):
    clin = pd.read_csv(cohort["clinical"])
    clin.loc[0, "age"] = np.nan  # read_csv's NaN for an empty cell
    clin.to_csv(tmp_path / "clinical.csv", index=False)
    from_files = run_stats(cohort["scores"], tmp_path / "clinical.csv", cohort["labs"], study="li2020")
    from_frames = run_stats(pd.read_csv(cohort["scans"]), clin, pd.read_csv(cohort["labs"]), study="li2020")
    assert list(from_frames) == list(from_files)
    for name in from_files:
        pd.testing.assert_frame_equal(from_frames[name], from_files[name])
    with pytest.raises(CTScoreError) as e:  # a frame is checked as its file is
        run_stats(cohort["scores"], clin.assign(outcome="dead?"), None, study="li2020")
    assert e.value.code == "BAD_CLINICAL_DATA" and "'outcome'" in e.value.message
    with pytest.raises(CTScoreError) as e:
        run_stats(cohort["scores"], clin.to_dict("list"), None)
    assert e.value.code == "BAD_OPTION" and "clinical_csv must be" in e.value.message and "DataFrame" in e.value.message


def test_run_validation_refuses_dataframes_naming_validate_frames(tmp_path):
    from scoring.validation.api import run_validation

    frame = pd.DataFrame({"scan_id": ["s1"], "system": ["six_zone"], "unit": ["total"], "reader": ["r1"],
                          "value": [3]})
    for kwargs in ({"pred_dir": frame, "reference_csv": tmp_path / "ref.csv"},
                   {"pred_dir": tmp_path, "reference_csv": frame}):
        with pytest.raises(CTScoreError) as e:
            run_validation(**kwargs)
        assert e.value.code == "BAD_OPTION"
        assert "DataFrame" in e.value.message and "validate_frames" in e.value.message
