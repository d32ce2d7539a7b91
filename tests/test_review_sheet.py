"""The QC review sheet (``ctscore review-sheet OUT``): one row per scan to fill in while reviewing the pictures, read
back by ``--exclude`` of ``ctscore stats`` / ``validate`` / ``methods``, which then also say how many scans were
reviewed."""

from __future__ import annotations

import logging
import re
import shutil

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.errors import CTScoreError
from pipeline.methods import methods_text
from pipeline.review_sheet import COLUMNS, review_sheet, write_review_sheet
from scoring.exclusions import CODE, read_exclusions
from scoring.stats.api import run_stats
from scoring.stats.simulate import write_cohort
from scoring.validation.api import run_validation
from tests.test_validation_end_to_end import write_cohort as write_validation_cohort


@pytest.fixture()
def three(sample_run, tmp_path):
    """The sample run as three scans: the sample (with its pictures), a flagged scan without pictures, a failed one."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("scans.csv", "failures.csv", "run.json"):
        shutil.copy(sample_run / name, out / name)
    sid = pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False)["scan_id"][0]
    (out / sid).mkdir()
    for name in ("qc.png", "levels.png"):
        shutil.copy(sample_run / sid / name, out / sid / name)
    scans = pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False)
    rows = pd.concat([scans] * 3, ignore_index=True)
    rows.loc[1, ["scan_id", "series_uid", "status", "qc_flags"]] = ["scan-0000000000c2", "1.2.3.4.6", "failed", ""]
    rows.loc[2, ["scan_id", "series_uid", "qc_flags"]] = ["scan-0000000000b1", "1.2.3.4.5", "NOISY:41;METAL:0.3"]
    rows.loc[0, "qc_flags"] = ""
    rows.to_csv(out / "scans.csv", index=False)
    return out, sid


def test_the_sheet_has_a_row_per_scan_flagged_first_and_failed_last(three, capsys):
    out, sid = three
    sheet = review_sheet(out)
    assert tuple(sheet.columns) == COLUMNS
    assert list(sheet["scan_id"]) == ["scan-0000000000b1", sid, "scan-0000000000c2"]
    assert list(sheet["status"]) == ["ok", "ok", "failed"]
    assert sheet["qc_flags"][0] == "NOISY:41;METAL:0.3"
    # the pictures the scan has, relative to the run folder; none for scans without them
    assert list(sheet["qc_png"]) == ["", f"{sid}/qc.png", ""] and sheet["levels_png"][1] == f"{sid}/levels.png"
    assert (sheet[["exclude", "reason", "reviewer", "note"]] == "").all().all()
    scans = pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False).set_index("scan_id")
    for col in ("patient_id", "study_date", "six_zone_total", "zhang900_total", "percent_opacity"):
        assert sheet[col][1] == scans.loc[sid, col]
    # written once, as the API gives it; the command writes the same file; never replaced without --overwrite
    path = write_review_sheet(out)
    assert path == out / "review.csv"
    pd.testing.assert_frame_equal(pd.read_csv(path, dtype=str, keep_default_na=False), sheet)
    decided = sheet.copy()
    decided.loc[decided["scan_id"] == sid, "exclude"] = "no"
    decided.to_csv(path, index=False, encoding="utf-8-sig")
    kept = path.read_bytes()
    with pytest.raises(CTScoreError) as err:
        write_review_sheet(out)
    assert err.value.code == "OUTPUT_EXISTS" and "decisions" in str(err.value) and path.read_bytes() == kept
    assert main(["review-sheet", str(out), "-q"]) != 0 and path.read_bytes() == kept
    assert "OUTPUT_EXISTS" in capsys.readouterr().err
    assert main(["review-sheet", str(out), "-o", str(out.parent / "mine.csv"), "-q"]) == 0
    assert (out.parent / "mine.csv").read_bytes() == sheet.to_csv(index=False).encode("utf-8-sig")  # Excel: UTF-8
    assert main(["review-sheet", str(out), "--overwrite", "-q"]) == 0 and path.read_bytes() != kept
    scans_csv = (out / "scans.csv").read_bytes()  # --overwrite replaces a review sheet, nothing else
    with pytest.raises(CTScoreError, match="not a review sheet") as err:
        write_review_sheet(out, out / "scans.csv", overwrite=True)
    assert err.value.code == "OUTPUT_EXISTS" and (out / "scans.csv").read_bytes() == scans_csv
    with pytest.raises(CTScoreError) as err:
        write_review_sheet(out, out)  # a folder
    assert err.value.code == "OUTPUT_UNWRITABLE"
    with pytest.raises(CTScoreError) as err:
        write_review_sheet(out, overwrite="yes")
    assert err.value.code == "BAD_OPTION"
    with pytest.raises(CTScoreError) as err:
        review_sheet(out / "nope")
    assert err.value.code == "INPUT_NOT_FOUND"


SCANS = pd.DataFrame({"scan_id": ["scan-aa01", "scan-bb02", "scan-cc03", "scan-dd04"],
                      "series_uid": ["1.2.3.1", "1.2.3.2", "1.2.3.3", "1.2.3.4"], "status": "ok"})
HEADER = "scan_id,patient_id,status,qc_flags,qc_png,exclude,reason,reviewer,note\n"


def test_decisions_yes_no_and_empty(tmp_path, caplog):
    p = tmp_path / "review.csv"
    p.write_text(HEADER + "scan-aa01,pt-1,ok,NOISY:41,scan-aa01/qc.png,Yes,motion,AB,steps\n"
                 "scan-bb02,pt-1,ok,,,no,,AB,\n"
                 "scan-cc03,pt-2,ok,,,,,,\n"
                 "scan-dd04,pt-2,ok,,,x, wrong  phase ,CD,\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        ex = read_exclusions(p, SCANS)
    assert ex.reasons == {"scan-aa01": "motion", "scan-dd04": "wrong phase"}
    assert ex.reviewed == {"scan-aa01", "scan-bb02", "scan-dd04"} and ex.is_sheet
    assert "not read" not in caplog.text  # the sheet's own columns are expected
    assert ex.reviewed_text({"scan-aa01", "scan-bb02", "scan-cc03"}) == "2 of 3"
    assert ex.reviewed_text({"scan-aa01", "scan-bb02"}) == "all 2"
    assert "review sheet: 3 of 4 rows decided, 2 marked yes" in ex.setting()
    # a sheet that excludes nothing is an outcome, not an error
    p.write_text(HEADER + "scan-aa01,,,,,no,,,\nscan-bb02,,,,,,,,\n", encoding="utf-8")
    none = read_exclusions(p, SCANS)
    assert none.reasons == {} and none.reviewed == {"scan-aa01"}
    # as a spreadsheet or pandas gives the decisions back: TRUE, 1.0 (a 0/1 column with empty cells), spaces
    table = pd.DataFrame({"scan_id": SCANS["scan_id"], "exclude": [1.0, 0.0, float("nan"), " TRUE "],
                          "reason": ["motion", "", "", "Motion"]})
    with caplog.at_level(logging.WARNING):
        got = read_exclusions(table, SCANS)
    assert got.reasons == {"scan-aa01": "motion", "scan-dd04": "Motion"} and got.reviewed == {*got.reasons, "scan-bb02"}
    assert "spelled several ways" in caplog.text and "Motion / motion" in caplog.text


@pytest.mark.parametrize("rows, words", [
    ("scan-aa01,maybe,motion\n", ["line 2", "'exclude'", "'maybe'", "is no decision"]),
    ("scan-aa01,no,motion\n", ["line 2", "'reason'", "'motion'", "beside 'exclude' 'no'", "is the scan excluded?"]),
    ("scan-aa01,,motion\n", ["line 2", "left empty", "is the scan excluded?"]),
    ("scan-aa01,yes,\n", ["line 2", "reason", "is empty"]),
    ("scan-aa01,,\nscan-bb02,,\n", ["holds no decision"]),
    ("scan-aa01,no,\nscan-aa01,,\n", ["line 3", "on two rows", "also line 2"]),
    ("scan-zz09,no,\n", ["line 2", "scan-zz09", "no scan of this run"]),
])
def test_a_sheet_that_cannot_be_trusted_is_refused_naming_the_line(tmp_path, rows, words):
    p = tmp_path / "review.csv"
    p.write_text("scan_id,exclude,reason\n" + rows, encoding="utf-8")
    with pytest.raises(CTScoreError) as err:
        read_exclusions(p, SCANS)
    assert err.value.code == CODE and err.value.path == str(p)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_a_filled_sheet_excludes_as_the_list_and_says_how_many_were_reviewed(tmp_path, caplog):
    cohort = write_cohort(tmp_path / "cohort", seed=5, n_survivors=8, n_nonsurvivors=4)
    sheet = review_sheet(cohort["scores"])
    ok = sheet.index[sheet["status"] == "ok"]
    sheet.loc[ok, "exclude"] = "no"
    sheet.loc[ok[[0, 2]], ["exclude", "reason"]] = [["yes", "motion"], ["yes", "segmentation failure"]]
    sheet.loc[ok[5], "exclude"] = ""  # not reviewed yet
    path = tmp_path / "review.csv"
    sheet.to_csv(path, index=False)
    with caplog.at_level(logging.WARNING):
        got = run_stats(cohort["scores"], cohort["clinical"], study="li2020", exclude=path)
    assert "have no decision in its 'exclude' column" in caplog.text
    listed = pd.DataFrame({"scan_id": sheet.loc[ok[[0, 2]], "scan_id"], "reason": ["motion", "segmentation failure"]})
    want = run_stats(cohort["scores"], cohort["clinical"], study="li2020", exclude=listed)
    for name in want:
        if name != "data_summary":
            pd.testing.assert_frame_equal(got[name], want[name], obj=name)
    summary = dict(zip(got["data_summary"]["item"], got["data_summary"]["value"]))
    n_used = int(summary["scored scans before exclusion (status ok, dated)"])
    assert summary["of these, reviewed (review sheet)"] == f"{n_used - 1} of {n_used} (1 without a decision: analysed)"
    assert summary["scans excluded at QC review"] == "2 (motion: 1; segmentation failure: 1)"
    # every scan reviewed, none excluded: the analyses of the run as it is, and the summary says so
    sheet.loc[ok, ["exclude", "reason"]] = ["no", ""]
    sheet.to_csv(path, index=False)
    kept = run_stats(cohort["scores"], cohort["clinical"], study="li2020", exclude=path)
    plain = run_stats(cohort["scores"], cohort["clinical"], study="li2020")
    for name in plain:
        if name != "data_summary":
            pd.testing.assert_frame_equal(kept[name], plain[name], obj=name)
    k = dict(zip(kept["data_summary"]["item"], kept["data_summary"]["value"]))
    assert k["of these, reviewed (review sheet)"] == f"all {n_used}" and k["scans excluded at QC review"] == "0"


def test_validate_and_methods_read_the_sheet(three, tmp_path):
    out, sid = three
    sheet = review_sheet(out)
    sheet.loc[sheet["scan_id"] == "scan-0000000000b1", ["exclude", "reason"]] = ["yes", "noise"]
    sheet.loc[sheet["scan_id"] == sid, "exclude"] = "no"
    text = methods_text(out, exclude=sheet)
    assert ("The segmentations and scores of all 2 scored scans were reviewed with these QC images before analysis "
            "[state by whom, blinded to what]; 1 was excluded (noise: 1).") in text
    one = sheet.copy()
    one.loc[one["scan_id"] == "scan-0000000000b1", ["exclude", "reason"]] = ""
    assert "The segmentations and scores of 1 of the 2 scored scans were reviewed" in methods_text(out, exclude=one)
    one.loc[one["scan_id"] == sid, "exclude"] = ""
    one.loc[one["scan_id"] == "scan-0000000000c2", "exclude"] = "no"  # the failed scan alone: nothing analysed
    assert "[state here whether, and by whom, they were reviewed" in methods_text(out, exclude=one)
    assert "- Scans excluded at QC review: 1 of 2 scored (noise: 1); reviewed: all 2; the counts" in text
    sheet.loc[sheet["scan_id"] == "scan-0000000000b1", ["exclude", "reason"]] = ["no", ""]
    assert "scored scans were reviewed with these QC images before analysis [state by whom, blinded to what]; " \
           "none was excluded." in methods_text(out, exclude=sheet)
    # validate: the reference's scans, how many reviewed
    pred, ref, _, _ = write_validation_cohort(tmp_path / "val", 6, 3, "1.2.826.0.7")
    vs = review_sheet(pred)
    vs.loc[:, "exclude"] = "no"
    vs.loc[1, ["exclude", "reason"]] = ["yes", "motion"]
    summary = dict(zip(*run_validation(pred, ref, exclude=vs)["data_summary"].to_numpy().T))
    assert summary["of these, reviewed (review sheet)"] == "all 6"
    assert summary["scans excluded at QC review"] == "1 (motion: 1)"


@pytest.mark.parametrize("header", ["Exclude", "Exclude (y/n)", "keep?"])
def test_a_renamed_decision_column_is_not_read_as_a_list_of_exclusions(tmp_path, header):
    p = tmp_path / "review.csv"  # read as a list, every row would be an exclusion, those marked n too
    p.write_text(f"scan_id,{header},reason\nscan-aa01,y,motion\nscan-bb02,n,\n", encoding="utf-8")
    with pytest.raises(CTScoreError, match=f"column '{re.escape(header)}' holds a review sheet's decisions") as err:
        read_exclusions(p, SCANS)
    assert err.value.code == CODE
    # a list with other columns of the researcher's is read as before (warned about), yes / no ones too when every
    # row has its reason
    p.write_text("scan_id,reason,excluded_by,excluded_on,second_reader_agreed,contrast\n"
                 "scan-aa01,motion,AB,2026-01-02,yes,0\nscan-bb02,noise,AB,2026-01-02,no,1\n", encoding="utf-8")
    assert read_exclusions(p, SCANS).reasons == {"scan-aa01": "motion", "scan-bb02": "noise"}


def test_a_sheet_made_before_the_scans_were_scored_again_is_refused(three):
    out, sid = three
    sheet = review_sheet(out)
    sheet.loc[sheet["scan_id"] == sid, "exclude"] = "no"
    sheet.loc[sheet["scan_id"] == "scan-0000000000c2", "exclude"] = "no"  # the failed scan
    scans = pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False)
    assert read_exclusions(sheet, scans).reviewed == {sid, "scan-0000000000c2"}
    sheet.loc[sheet["scan_id"] == sid, "percent_opacity"] += "0000000001"  # a spreadsheet's re-save: the same
    assert read_exclusions(sheet, scans).reviewed == {sid, "scan-0000000000c2"}
    for column, now in (("percent_opacity", "14.5"), ("zhang900_total", "70"), ("status", "ok")):
        rescored = scans.copy()
        rescored.loc[rescored["scan_id"] == ("scan-0000000000c2" if column == "status" else sid), column] = now
        with pytest.raises(CTScoreError, match="scored again after the sheet was made") as err:
            read_exclusions(sheet, rescored)
        assert err.value.code == CODE and f"column '{column}'" in str(err.value)
    # an undecided row is not compared (nothing was decided on its pictures)
    sheet.loc[sheet["scan_id"] == "scan-0000000000c2", "exclude"] = ""
    assert read_exclusions(sheet, rescored).reviewed == {sid}


def test_share_leaves_the_sheet_out_saying_why():
    from pipeline.review_sheet import SHEET_NAME
    from pipeline.share import LEFT_OUT

    assert "initials and notes" in LEFT_OUT[SHEET_NAME]  # the manifest names it, with this reason


def test_a_semicolon_export_with_quoted_cells_is_named_as_such(tmp_path):
    p = tmp_path / "review.csv"  # LibreOffice's "quote all text cells": the parser stopped at the first quote
    p.write_text('"scan_id";"exclude";"reason"\n"scan-aa01";"yes";"motion"\n', encoding="utf-8")
    with pytest.raises(CTScoreError, match="separated by semicolons, not commas") as err:
        read_exclusions(p, SCANS)
    assert err.value.code == CODE


def test_the_run_report_points_to_the_sheet(sample_run):
    page = (sample_run / "report.html").read_text(encoding="utf-8")
    assert "<code>ctscore review-sheet OUT</code> writes <code>review.csv</code>" in page


def test_update_adds_new_scans_keeps_decisions_and_clears_those_of_scans_scored_again(three, capsys):
    out, sid = three
    scans = pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False)
    first = scans.iloc[[0, 2]]  # the run had two scans when the sheet was made
    first.to_csv(out / "scans.csv", index=False)
    path = write_review_sheet(out)
    sheet = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    sheet = sheet.iloc[::-1].reset_index(drop=True)  # the reviewer sorted it
    sheet.loc[sheet["scan_id"] == sid, ["exclude", "reviewer"]] = ["no", "AB"]
    sheet.loc[sheet["scan_id"] == "scan-0000000000b1", ["exclude", "reason", "note"]] = ["yes", "noise", "streaks"]
    sheet["second_reader"] = ["CD", ""]  # a column of the reviewer's
    sheet.to_csv(path, index=False, encoding="utf-8-sig")
    # the run grows by one scan (the failed one), and the flagged scan is scored again with other results
    scans.loc[scans["scan_id"] == "scan-0000000000b1", "percent_opacity"] = "30.5"
    scans.to_csv(out / "scans.csv", index=False)
    with pytest.raises(CTScoreError, match="scored again after the sheet was made") as err:
        read_exclusions(path, scans)
    assert "--update" in str(err.value)
    assert main(["review-sheet", str(out), "--update", "-q"]) == 0
    got = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert list(got["scan_id"]) == [sid, "scan-0000000000b1", "scan-0000000000c2"]  # its order, then the new scan
    assert list(got.columns) == [*COLUMNS, "second_reader"] and list(got["second_reader"]) == ["CD", "", ""]
    row = got.set_index("scan_id").loc[sid]
    assert (row["exclude"], row["reviewer"]) == ("no", "AB")
    b1 = got.set_index("scan_id").loc["scan-0000000000b1"]
    assert (b1["exclude"], b1["reason"], b1["percent_opacity"]) == ("", "", "30.5")
    assert b1["note"].startswith("scored again since the earlier decision (exclude 'yes', reason 'noise'; "
                                 "percent_opacity was ") and b1["note"].endswith("review again. streaks")
    ex = read_exclusions(path, scans)  # now valid: the kept decision only
    assert ex.reviewed == {sid} and ex.reasons == {}
    # a sheet naming a scan not in the run is not updated; a file that is no sheet is never touched
    first.iloc[:1].to_csv(out / "scans.csv", index=False)
    before = path.read_bytes()
    with pytest.raises(CTScoreError, match="not in this run") as err:
        write_review_sheet(out, update=True)
    assert err.value.code == "OUTPUT_EXISTS" and path.read_bytes() == before
    with pytest.raises(CTScoreError) as err:
        write_review_sheet(out, overwrite=True, update=True)
    assert err.value.code == "BAD_OPTION"
    assert main(["review-sheet", str(out), "-o", str(out / "new.csv"), "--update", "-q"]) == 0  # none there: written
    capsys.readouterr()
    assert main(["review-sheet", str(out), "-o", "-"]) == 0  # on stdout, as the API's table
    assert capsys.readouterr().out == review_sheet(out).to_csv(index=False)
    assert main(["review-sheet", str(out), "-o", "-", "--update", "-q"]) != 0
    # a scan_id whose case the reviewer changed is named as such
    retyped = pd.read_csv(out / "new.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    retyped["scan_id"] = retyped["scan_id"].str.upper()
    retyped.to_csv(out / "new.csv", index=False)
    with pytest.raises(CTScoreError, match="its case was changed") as err:
        write_review_sheet(out, out / "new.csv", update=True)
    assert err.value.code == CODE


def test_the_fingerprint_catches_what_the_shown_columns_do_not(three, caplog):
    """Masks edited again: the lung volume changes, the scores (0 on a lesion-free scan) do not."""
    out, sid = three
    sheet = review_sheet(out)
    sheet.loc[sheet["scan_id"] == sid, "exclude"] = "no"
    scans = pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False)
    typed = pd.read_csv(out / "scans.csv")  # numbers as floats, empty cells as NaN: the same fingerprints
    assert read_exclusions(sheet, typed).reviewed == {sid}
    # never read as a number (a spreadsheet would write 901622686589 back as 9.01623E+11)
    from scoring.exclusions import scoring_fingerprint

    for k in range(300):
        fp = scoring_fingerprint({"lesion_volume_ml": k})
        with pytest.raises(ValueError):
            float(fp)
    path = out / "sheet.csv"
    sheet.to_csv(path, index=False)
    assert read_exclusions(pd.read_csv(path), typed).reviewed == {sid}  # pandas' own types
    rescored = scans.copy()
    rescored.loc[rescored["scan_id"] == sid, "lung_volume_ml_left"] = "1643.86"
    with pytest.raises(CTScoreError, match="column 'scoring_fingerprint'.*scored again") as err:
        read_exclusions(sheet, rescored)
    assert err.value.code == CODE
    # a sheet cut down to its decisions cannot be checked: it is read, with a warning that says so
    trimmed = sheet[["scan_id", "exclude", "reason", "reviewer", "note"]]
    with caplog.at_level(logging.WARNING):
        assert read_exclusions(trimmed, rescored).reviewed == {sid}
    assert "1 decided row(s) (line 3) have no scoring_fingerprint" in caplog.text


def test_update_keeps_unchecked_decisions_unchecked_and_refuses_a_decided_row_without_its_scan(three, caplog):
    out, sid = three
    path = out / "review.csv"
    sheet = review_sheet(out)
    sheet.loc[sheet["scan_id"] == sid, ["exclude", "reviewer"]] = ["no", "AB"]
    sheet[["scan_id", "exclude", "reason", "reviewer", "note"]].to_csv(path, index=False)  # shown columns deleted
    with caplog.at_level(logging.WARNING):
        write_review_sheet(out, update=True)
    got = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig").set_index("scan_id")
    assert got.loc[sid, "exclude"] == "no" and got.loc[sid, "scoring_fingerprint"] == ""  # still unchecked
    assert got.loc["scan-0000000000b1", "scoring_fingerprint"] != ""  # undecided rows get the run's
    assert "1 decided row(s) have no scoring_fingerprint" in caplog.text
    # a decided row whose scan_id was emptied: its decision would be lost
    lost = got.reset_index()
    lost.loc[lost["scan_id"] == sid, "scan_id"] = ""
    lost.to_csv(path, index=False)
    before = path.read_bytes()
    with pytest.raises(CTScoreError, match="line 3: a row without a scan_id") as err:
        write_review_sheet(out, update=True)
    assert err.value.code == CODE and path.read_bytes() == before
    # a sheet a spreadsheet saved with semicolons is a sheet, and the reader names the separator
    path.write_text("scan_id;exclude;reason\nscan-0000000000b1;no;\n", encoding="utf-8")
    with pytest.raises(CTScoreError, match="separated by semicolons"):
        write_review_sheet(out, update=True)
