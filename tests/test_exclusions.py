"""Scans excluded at QC review (``--exclude REVIEW.csv``): one list read strictly against the run's scans, applied
alike by ``ctscore stats``, ``ctscore validate`` and ``ctscore methods``, and counted by reason in their outputs."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.errors import CTScoreError
from pipeline.methods import methods_text
from scoring.exclusions import CODE, read_exclusions
from scoring.stats.api import run_stats
from scoring.stats.simulate import write_cohort
from scoring.validation.api import run_validation
from tests.test_validation_end_to_end import write_cohort as write_validation_cohort

SCANS = pd.DataFrame({"scan_id": ["scan-aa01", "scan-bb02", "scan-cc03"],
                      "series_uid": ["1.2.3.1", "1.2.3.2", "1.2.3.3"], "status": ["ok", "ok", "failed"]})


def _csv(tmp_path: Path, text: str, name: str = "review.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_rows_name_scans_by_scan_id_or_series_uid(tmp_path, caplog):
    p = _csv(tmp_path, "scan_id,series_uid,reason,reviewer,note,slice\n"
                       "scan-aa01,,motion,AB,steps at the bases,40\n"
                       ",1.2.3.2, segmentation   failure ,AB,,\n"
                       "scan-cc03,1.2.3.3,wrong phase,CD,,\n"
                       ",,,,,\n")
    with caplog.at_level(logging.WARNING):
        ex = read_exclusions(p, SCANS)
    assert ex.reasons == {"scan-aa01": "motion", "scan-bb02": "segmentation failure", "scan-cc03": "wrong phase"}
    assert "'slice'" in caplog.text and "not read" in caplog.text  # an unknown column is named, not read
    assert ex.source == str(p) and len(ex.sha256) == 64 and ex.setting().endswith("3 scan(s))")
    # a DataFrame is read as the file
    df = pd.read_csv(p, dtype=str, keep_default_na=False)
    assert read_exclusions(df, SCANS).reasons == ex.reasons


@pytest.mark.parametrize("text, words", [
    ("scan_id,reason\nscan-aa0l,motion\n", ["line 2", "scan_id", "scan-aa0l", "did you mean 'scan-aa01'"]),
    ("scan_id,reason\nscan-zz99,motion\n", ["line 2", "no scan of this run", "salt"]),
    ("series_uid,reason\n1.2.3.9,motion\n", ["line 2", "series_uid", "1.2.3.9"]),
    ("scan_id,series_uid,reason\nscan-aa01,1.2.3.2,motion\n", ["line 2", "two different scans", "scan-bb02"]),
    ("scan_id,reason\nscan-aa01,motion\nscan-bb02,\n", ["line 3", "reason", "is empty"]),
    ("scan_id,series_uid,reason\nscan-aa01,,motion\n,1.2.3.1,noise\n", ["line 3", "twice", "also line 2"]),
    ("scan_id,reasons\nscan-aa01,motion\n", ["lacks 'reason'", "'reasons' looks like 'reason'"]),
    ("id,reason\nscan-aa01,motion\n", ["lacks an id column"]),
    ("scan_id,reason\n,,\n", ["names no scan"]),
    ("scan_id,reason\n,motion\n", ["line 2", "no scan named"]),
    ("series_uid,reason\n1.2.3.7,motion\n", ["line 2", "2 stacks", "scan-dd04, scan-ee05", "by its scan_id"]),
    ("scan_id,reason\nSCAN-AA01,motion\n", ["did you mean 'scan-aa01'"]),
])
def test_a_list_that_cannot_be_trusted_is_refused_naming_the_line(tmp_path, text, words):
    p = _csv(tmp_path, text)
    stacks = pd.DataFrame({"scan_id": ["scan-dd04", "scan-ee05"], "series_uid": ["1.2.3.7"] * 2, "status": "ok"})
    with pytest.raises(CTScoreError) as err:  # a series scored as two stacks (--all-series): which one?
        read_exclusions(p, pd.concat([SCANS, stacks], ignore_index=True))
    assert err.value.code == CODE and err.value.path == str(p)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_a_missing_list_is_input_not_found(tmp_path):
    with pytest.raises(CTScoreError) as err:
        read_exclusions(tmp_path / "nope.csv", SCANS)
    assert err.value.code == "INPUT_NOT_FOUND"
    with pytest.raises(CTScoreError, match="folder"):
        read_exclusions(tmp_path, SCANS)


# ---------------------------------------------------------------------------------------------------------------
# ctscore stats


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("excl_cohort"), seed=5, n_survivors=14, n_nonsurvivors=6)


def test_stats_leave_the_excluded_scans_out_as_if_they_were_never_scored(cohort, tmp_path):
    scans = pd.read_csv(cohort["scans"], dtype=str, keep_default_na=False)
    ok = scans[scans["status"] == "ok"]
    failed = scans.loc[scans["status"] != "ok", "scan_id"].iloc[0]
    drop = list(ok["scan_id"].iloc[[0, 3, 7]])
    review = _csv(tmp_path, "scan_id,reason,reviewer\n" + f"{drop[0]},motion,AB\n{drop[1]},motion,AB\n"
                  f"{drop[2]},segmentation failure,AB\n{failed},segmentation failure,AB\n")
    got = run_stats(cohort["scores"], cohort["clinical"], cohort["labs"], exclude=review)
    # the same analyses on a scans.csv without those rows
    trimmed = tmp_path / "trimmed"
    shutil.copytree(cohort["scores"], trimmed)
    scans[~scans["scan_id"].isin(drop)].to_csv(trimmed / "scans.csv", index=False)
    want = run_stats(trimmed, cohort["clinical"], cohort["labs"])
    assert set(got) == set(want)
    for name in want:
        if name != "data_summary":
            pd.testing.assert_frame_equal(got[name], want[name], obj=name)
    summary = dict(zip(got["data_summary"]["item"], got["data_summary"]["value"]))
    assert summary["scans excluded at QC review"] == "3 (motion: 2; segmentation failure: 1)"
    assert summary["listed for exclusion but not in the analysis anyway"].startswith("1 (failed in the run")
    assert summary["exclusion list (--exclude)"].startswith("review.csv (sha256 ")  # its name, not its folder
    assert str(tmp_path) not in got["data_summary"].to_csv()
    n_ok = int(((scans["status"] == "ok") & (scans["study_date"] != "")).sum())
    assert summary["scored scans before exclusion (status ok, dated)"] == str(n_ok)
    before = dict(zip(want["data_summary"]["item"], want["data_summary"]["value"]))
    assert int(summary["scans (status ok, matched to a patient)"]) == \
        int(before["scans (status ok, matched to a patient)"])


def test_stats_command_and_api_agree_and_the_page_names_the_list(cohort, tmp_path):
    scans = pd.read_csv(cohort["scans"], dtype=str, keep_default_na=False)
    sid = scans.loc[scans["status"] == "ok", "scan_id"].iloc[2]
    uid = scans.loc[scans["scan_id"] == sid, "series_uid"].iloc[0]
    review = _csv(tmp_path, f"series_uid,reason\n{uid},wrong phase\n")
    out = tmp_path / "stats"
    assert main(["stats", "--scores", str(cohort["scores"]), "--clinical", str(cohort["clinical"]), "--study",
                 "li2020", "-o", str(out), "--exclude", str(review), "-q"]) == 0
    api = run_stats(cohort["scores"], cohort["clinical"], study="li2020", exclude=review)
    cli = pd.read_csv(out / "data_summary.csv", dtype=str, keep_default_na=False)
    assert list(cli["value"]) == [str(v) for v in api["data_summary"]["value"]]
    page = (out / "summary.html").read_text(encoding="utf-8")
    assert "exclusion list" in page and "wrong phase: 1" in page


def test_stats_say_which_patients_lost_their_first_or_every_scan(cohort, tmp_path):
    scans = pd.read_csv(cohort["scans"], dtype=str, keep_default_na=False)
    ok = scans[scans["status"] == "ok"].sort_values(["patient_id", "study_date", "scan_id"])
    per = ok.groupby("patient_id")["scan_id"]
    firsts = list(per.first()[per.size() > 1].iloc[:3])  # three patients' first of several scans
    lone = per.size()[per.size() == 1].index  # a patient with one scan loses it
    alone = list(ok.loc[ok["patient_id"].isin(lone[:1]), "scan_id"]) if len(lone) else \
        list(ok.loc[ok["patient_id"] == per.size().index[-1], "scan_id"])
    review = pd.DataFrame({"scan_id": firsts + alone, "reason": "wrong phase"})
    tables = run_stats(cohort["scores"], cohort["clinical"], study="liao2021", exclude=review)
    notes = [v for k, v in tables["data_summary"].to_numpy() if k == "note"]
    assert any(n.startswith("3 patient(s) lost their first scan at QC review") for n in notes), notes
    assert any(n.startswith("1 patient(s) had every scan excluded at QC review") and "counted apart" in n
               for n in notes), notes
    assert not any("have no scored scan" in n for n in notes), notes  # scored, then excluded: said once, as such
    groups = tables["liao2021_lesion_groups"]
    assert list(groups["reason"]).count("every scan excluded at QC review") == 1


def test_a_patient_whose_week8_scan_was_excluded_is_not_one_without_follow_up(cohort):
    scans = pd.read_csv(cohort["scans"], dtype=str, keep_default_na=False)
    clinical = pd.read_csv(cohort["clinical"], dtype=str, keep_default_na=False)
    ok = scans[scans["status"] == "ok"].merge(clinical[["patient_id", "scores_patient_id", "onset_date"]],
                                             left_on="patient_id", right_on="scores_patient_id", suffixes=("", "_c"))
    day = (pd.to_datetime(ok["study_date"]) - pd.to_datetime(ok["onset_date"])).dt.days
    week8 = ok[day.between(49, 55)]
    patient = week8["patient_id_c"].iloc[0]
    drop = week8.loc[week8["patient_id_c"] == patient, "scan_id"]
    before = run_stats(cohort["scores"], cohort["clinical"], study="liao2021")["liao2021_lesion_groups"]
    after = run_stats(cohort["scores"], cohort["clinical"], study="liao2021",
                      exclude=pd.DataFrame({"scan_id": drop, "reason": "motion"}))["liao2021_lesion_groups"]
    assert before.set_index("patient_id").loc[patient, "group"] in ("persistent", "recovery")
    row = after.set_index("patient_id").loc[patient]
    assert (row["group"], row["reason"]) == ("unclassified", "week-8 scan excluded at QC review")


def test_stats_refuse_a_bad_list_before_writing(cohort, tmp_path, capsys):
    review = _csv(tmp_path, "scan_id,reason\nscan-not-there,motion\n")
    out = tmp_path / "stats"
    code = main(["stats", "--scores", str(cohort["scores"]), "--clinical", str(cohort["clinical"]), "-o", str(out),
                 "--exclude", str(review), "-q"])
    assert code != 0 and CODE in capsys.readouterr().err and not out.exists()
    for api in (lambda: run_stats(cohort["scores"], cohort["clinical"], exclude=["scan-1"]),
                lambda: run_validation(cohort["scores"], cohort["clinical"], exclude=3),
                lambda: methods_text(cohort["scores"], exclude={"scan-1": "motion"})):
        with pytest.raises(CTScoreError, match="exclude must be") as err:  # the three twins check alike
            api()
        assert err.value.code == "BAD_OPTION"
    scans = pd.read_csv(cohort["scans"], dtype=str, keep_default_na=False)
    every = pd.DataFrame({"scan_id": scans["scan_id"], "reason": "all"})
    with pytest.raises(CTScoreError, match="leaves no scored scan"):
        run_stats(cohort["scores"], cohort["clinical"], exclude=every)


# ---------------------------------------------------------------------------------------------------------------
# ctscore validate


def test_validate_leaves_out_the_excluded_scans_reference_rows(tmp_path):
    pred, ref, rows, truths = write_validation_cohort(tmp_path, 10, 3, "1.2.826.0.7")
    scans = pd.read_csv(pred / "scans.csv", dtype=str, keep_default_na=False)
    drop = {scans["scan_id"][1]: "motion", scans["scan_id"][4]: "segmentation failure"}
    review = pd.DataFrame({"scan_id": list(drop), "reason": list(drop.values())})
    got = run_validation(pred, ref, exclude=review)
    uids = set(scans.loc[scans["scan_id"].isin(drop), "series_uid"])
    trimmed_ref = tmp_path / "trimmed.csv"
    ref_rows = pd.DataFrame(rows)
    ref_rows[~ref_rows["series_uid"].isin(uids)].to_csv(trimmed_ref, index=False)
    want = run_validation(pred, trimmed_ref)
    for name in ("agreement", "side_by_side", "confusion_matrices"):
        pd.testing.assert_frame_equal(got[name], want[name], obj=name)
    assert not set(got["ratings"]["scan_id"]) & set(drop)
    summary = dict(zip(got["data_summary"]["item"], got["data_summary"]["value"]))
    assert summary["scans excluded at QC review"] == "2 (motion: 1; segmentation failure: 1)"
    assert int(summary["reference rows left out (scan excluded at QC review)"]) == \
        int(ref_rows["series_uid"].isin(uids).sum())
    assert summary["scans in the reference"] == "8" and summary["pipeline scans (ok / all)"] == "10 / 10"
    # the command gives the same summary and names the list in its page
    out = tmp_path / "val"
    review_csv = tmp_path / "review.csv"
    review.to_csv(review_csv, index=False)
    assert main(["validate", "--pred", str(pred), "--reference", str(ref), "-o", str(out), "--no-figures",
                 "--exclude", str(review_csv), "-q"]) == 0
    cli = pd.read_csv(out / "data_summary.csv", dtype=str, keep_default_na=False)
    assert dict(zip(cli["item"], cli["value"]))["scans excluded at QC review"] == summary["scans excluded at QC review"]
    assert "exclusion list" in (out / "summary.html").read_text(encoding="utf-8")
    # one system only: the rows left out are those of that system
    six = run_validation(pred, ref, exclude=review, systems="six_zone")
    six_summary = dict(zip(six["data_summary"]["item"], six["data_summary"]["value"]))
    base = dict(zip(*run_validation(pred, ref, systems="six_zone")["data_summary"].to_numpy().T))
    assert int(six_summary["reference rows left out (scan excluded at QC review)"]) + \
        int(six_summary["reference rows"]) == int(base["reference rows"])
    # a failed scan the readers scored is in their agreement with each other: excluding it counts
    failed = pred.parent / "FAILED"
    shutil.copytree(pred, failed)
    fscans = scans.copy()
    fscans.loc[1, "status"] = "failed"
    fscans.to_csv(failed / "scans.csv", index=False)
    f_summary = dict(zip(*run_validation(failed, ref, exclude=review)["data_summary"].to_numpy().T))
    assert f_summary["scans excluded at QC review"] == summary["scans excluded at QC review"]
    # excluding every scan leaves nothing to compare: refused, nothing written
    every = pd.DataFrame({"scan_id": scans["scan_id"], "reason": "all"})
    with pytest.raises(CTScoreError) as err:
        run_validation(pred, ref, tmp_path / "val2", exclude=every)
    assert err.value.code == CODE and not (tmp_path / "val2").exists()


# ---------------------------------------------------------------------------------------------------------------
# ctscore methods


def test_methods_text_says_how_many_scans_were_excluded_and_why(sample_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("scans.csv", "failures.csv", "run.json"):
        shutil.copy(sample_run / name, out / name)
    scans = pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False)
    three = pd.concat([scans] * 3, ignore_index=True)
    three.loc[1, ["scan_id", "series_uid"]] = ["scan-0000000000b1", "1.2.3.4.5"]
    three.loc[2, ["scan_id", "series_uid", "status"]] = ["scan-0000000000c2", "1.2.3.4.6", "failed"]
    three.to_csv(out / "scans.csv", index=False)
    plain = methods_text(out)
    assert "[state here whether, and by whom, they were reviewed, and which scans were excluded]" in plain
    review = _csv(tmp_path, "scan_id,reason\nscan-0000000000b1,motion_artefact\nscan-0000000000c2,motion\n")
    text = methods_text(out, exclude=review)
    assert "which scans were excluded]" not in text
    assert "1 scored scan of 2 was excluded (motion\\_artefact: 1)." in text  # Markdown-escaped reason
    assert "- Scans excluded at QC review: 1 of 2 scored (motion\\_artefact: 1); the counts above include them\n" in text
    assert main(["methods", str(out), "-o", "-", "--exclude", str(review)]) == 0
    assert capsys.readouterr().out == text
    with pytest.raises(CTScoreError) as err:
        methods_text(out, exclude=_csv(tmp_path, "scan_id,reason\nscan-0000000000zz,motion\n", "bad.csv"))
    assert err.value.code == CODE
