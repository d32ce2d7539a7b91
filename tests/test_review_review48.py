"""Review 48 of the QC review sheet: re-formatted numbers are not "scored again", a scan removed from the run does
not block the sheet, semicolon exports, what --update did, a list excluding every scan, pandas' NaN, '-' and
workbooks."""

from __future__ import annotations

import logging
import os

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.errors import CTScoreError
from pipeline.review_sheet import COLUMNS, review_sheet, write_review_sheet
from scoring.exclusions import CODE, read_exclusions, scored_otherwise
from tests import test_review_sheet
from tests.test_review_sheet import SCANS

three = test_review_sheet.three  # the three-scan run fixture

B1, C2 = "scan-0000000000b1", "scan-0000000000c2"


def _decided(out, sid):
    """The run's sheet, two decimals of % opacity, b1 excluded and the sample kept; the run's scans.csv."""
    scans = pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False)
    scans["percent_opacity"] = "13.27"
    scans.to_csv(out / "scans.csv", index=False)
    sheet = review_sheet(out)
    sheet.loc[sheet["scan_id"] == B1, ["exclude", "reason"]] = ["yes", "motion"]
    sheet.loc[sheet["scan_id"] == sid, "exclude"] = "no"
    return sheet, scans


@pytest.mark.parametrize("shown", ["13.3", "13,27"])
def test_numbers_a_spreadsheet_re_formatted_are_not_scored_again(three, shown, capsys):
    out, sid = three
    sheet, scans = _decided(out, sid)
    sheet["percent_opacity"] = shown
    path = out / "review.csv"
    sheet.to_csv(path, index=False, encoding="utf-8-sig")
    ex = read_exclusions(path, scans)  # the fingerprint matches: the shown values are not compared
    assert ex.reasons == {B1: "motion"} and ex.reviewed == {B1, sid}
    assert main(["review-sheet", str(out), "--update", "-q"]) == 0
    got = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig").set_index("scan_id")
    assert (got.loc[B1, "exclude"], got.loc[sid, "exclude"]) == ("yes", "no")  # nothing cleared
    assert "0 decision(s) cleared" in capsys.readouterr().out
    # without the fingerprint the shown values are compared: a decimal comma is a point
    assert scored_otherwise(pd.Series({"percent_opacity": "13,27"}), {"percent_opacity": "13.27"}) is None
    assert scored_otherwise(pd.Series({"percent_opacity": "14,27"}), {"percent_opacity": "13.27"}) is not None
    # scored again: cleared, and said at WARNING
    scans.loc[scans["scan_id"] == B1, "percent_opacity"] = "30.5"
    scans.to_csv(out / "scans.csv", index=False)
    assert main(["review-sheet", str(out), "--update", "-q"]) == 0  # -q: warnings only
    said = capsys.readouterr()
    assert "WARNING" in said.err and "1 decision(s) cleared" in said.err and "1 decision(s) cleared" in said.out


def test_a_scan_removed_from_the_run_does_not_block_the_sheet(three, caplog, capsys):
    out, sid = three
    sheet, scans = _decided(out, sid)  # c2 (failed) is undecided
    path = out / "review.csv"
    sheet.to_csv(path, index=False, encoding="utf-8-sig")
    lines = {s: k + 2 for k, s in enumerate(sheet["scan_id"])}
    fewer = scans[scans["scan_id"] != C2]
    fewer.to_csv(out / "scans.csv", index=False)
    with caplog.at_level(logging.WARNING):  # --exclude: the undecided row of the absent scan is skipped
        ex = read_exclusions(path, fewer)
    assert ex.reasons == {B1: "motion"} and f"line {lines[C2]}: {C2}" in caplog.text and "skipped" in caplog.text
    # --update drops it, naming it, and says so on stdout
    capsys.readouterr()
    assert main(["review-sheet", str(out), "--update", "-q"]) == 0
    said = capsys.readouterr()
    assert "WARNING" in said.err and f"line {lines[C2]} ({C2})" in said.err and "dropped" in said.err
    assert f"1 row(s) dropped (undecided, scans no longer in the run: {C2})" in said.out
    got = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert set(got["scan_id"]) == {sid, B1} and set(got.loc[got["scan_id"] == B1, "exclude"]) == {"yes"}
    # a decided row of an absent scan is refused by both, naming its line
    gone = scans[scans["scan_id"] != B1]
    gone.to_csv(out / "scans.csv", index=False)
    line = int(got.index[got["scan_id"] == B1][0]) + 2
    with pytest.raises(CTScoreError, match=f"line {line} \\({B1}\\)\\. No longer in this run\\? Delete those lines"
                       ) as err:
        write_review_sheet(out, update=True)
    assert err.value.code == "OUTPUT_EXISTS"
    with pytest.raises(CTScoreError, match=f"no longer in this run\\?.*delete line\\(s\\) {line} ") as err:
        read_exclusions(path, gone)
    assert err.value.code == CODE


def test_a_semicolon_export_of_the_sheet_is_read_and_written_back_so(three, capsys):
    out, sid = three
    sheet, scans = _decided(out, sid)
    sheet["note"] = ["streaks, both bases", "", ""]  # a comma in a cell: no separator in a ';' file
    path = out / "review.csv"
    european = sheet.copy()
    european["percent_opacity"] = european["percent_opacity"].str.replace(".", ",", regex=False)
    european.to_csv(path, index=False, sep=";", encoding="utf-8-sig")
    ex = read_exclusions(path, scans)
    assert ex.reasons == {B1: "motion"} and ex.reviewed == {B1, sid}
    assert main(["review-sheet", str(out), "--update", "-q"]) == 0
    text = path.read_text(encoding="utf-8-sig")
    assert text.splitlines()[0] == ";".join(COLUMNS) and ";13,27;" in text  # as the spreadsheet exported it
    got = pd.read_csv(path, sep=";", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert list(got["exclude"]) == list(sheet["exclude"]) and got["note"][0] == "streaks, both bases"
    assert read_exclusions(path, scans).reasons == {B1: "motion"}
    # a semicolon table that is not the sheet's own header stays refused
    path.write_text("scan_id;exclude;reason\nscan-aa01;yes;motion\n", encoding="utf-8")
    with pytest.raises(CTScoreError, match="separated by semicolons"):
        read_exclusions(path, SCANS)


def test_a_dataframe_read_with_pandas_defaults_does_not_silently_undecide(tmp_path, caplog):
    p = tmp_path / "review.csv"
    p.write_text("scan_id,exclude,reason,reviewer\nscan-aa01,N/A,motion,AB\nscan-bb02,no,,AB\n", encoding="utf-8")
    with pytest.raises(CTScoreError, match="line 2.*'exclude': missing \\(NaN\\).*keep_default_na=False") as err:
        read_exclusions(pd.read_csv(p), SCANS)
    assert err.value.code == CODE
    p.write_text("scan_id,exclude,reason,reviewer\nscan-aa01,N/A,,AB\nscan-bb02,no,,AB\n", encoding="utf-8")
    with pytest.raises(CTScoreError, match="was a decision written there\\?"):
        read_exclusions(pd.read_csv(p), SCANS)  # a reviewer's initials beside it: decided-looking
    p.write_text("scan_id,exclude,reason\nscan-aa01,yes,NA\nscan-bb02,no,\n", encoding="utf-8")
    with pytest.raises(CTScoreError, match="line 2.*'reason': missing \\(NaN\\) on an exclusion.*dtype=str"):
        read_exclusions(pd.read_csv(p), SCANS)
    assert read_exclusions(pd.read_csv(p, dtype=str, keep_default_na=False), SCANS).reasons == {"scan-aa01": "NA"}
    p.write_text("scan_id,exclude,reason\nscan-aa01,yes,motion\nscan-bb02,,\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert read_exclusions(pd.read_csv(p), SCANS).reviewed == {"scan-aa01"}  # an empty row stays undecided
    assert "1 row(s) with a missing (NaN) 'exclude' are read as not reviewed" in caplog.text  # 'N/A' would be too


def test_excluding_every_scored_scan_is_refused_by_the_reader_helper(tmp_path):
    p = tmp_path / "list.csv"
    p.write_text("scan_id,reason\n" + "".join(f"{s},motion\n" for s in SCANS["scan_id"]), encoding="utf-8")
    ex = read_exclusions(p, SCANS)
    ex.check_leaves_some({"scan-aa01", "zz"})  # one left: fine
    with pytest.raises(CTScoreError, match="leaves no scored scan to analyse \\(it excludes all 4\\)") as err:
        ex.check_leaves_some(set(SCANS["scan_id"]), p)
    assert err.value.code == CODE and err.value.path == str(p)


def test_dash_and_workbook_names_and_a_workbook_given_as_the_sheet(three, tmp_path, monkeypatch):
    out, sid = three
    monkeypatch.chdir(tmp_path)
    for name in ("-", "review.xlsx", "review.XLS"):
        with pytest.raises(CTScoreError) as err:
            write_review_sheet(out, name)
        assert err.value.code == "BAD_OPTION" and not os.path.exists(name)
    with pytest.raises(CTScoreError, match="stdout.*review_sheet\\(out_dir\\) gives the table"):
        write_review_sheet(out, "-")
    assert main(["review-sheet", str(out), "-o", "review.xlsx", "-q"]) != 0 and not os.path.exists("review.xlsx")
    book = out / "review.csv"  # an .xlsx saved under the sheet's name
    book.write_bytes(b"PK\x03\x04" + b"\x00" * 60)
    for call, code in ((lambda: read_exclusions(book, SCANS), CODE),
                       (lambda: write_review_sheet(out, update=True), "OUTPUT_EXISTS")):
        with pytest.raises(CTScoreError, match="an Excel workbook.*save it as CSV UTF-8") as err:
            call()
        assert err.value.code == code
    # the run's table is what '-' prints
    assert main(["review-sheet", str(out), "-o", "-"]) == 0


def test_update_keeps_a_note_only_row_without_its_scan_id(three, caplog):
    out, sid = three
    sheet, _ = _decided(out, sid)
    note = pd.DataFrame([{c: "" for c in COLUMNS} | {"note": "ask CD about the bases"}])
    path = out / "review.csv"
    pd.concat([sheet, note], ignore_index=True).to_csv(path, index=False, encoding="utf-8-sig")
    assert read_exclusions(path, pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False)).reasons == \
        {B1: "motion"}  # --exclude skips it
    with caplog.at_level(logging.WARNING):
        write_review_sheet(out, update=True)
    got = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert list(got["note"])[-1] == "ask CD about the bases" and list(got["scan_id"])[-1] == ""
    assert "without a scan_id and without a decision (line 5) kept" in caplog.text
    assert set(got.loc[got["scan_id"] == B1, "exclude"]) == {"yes"}


def test_methods_refuses_a_sheet_that_excludes_every_scored_scan(three):
    """stats and validate refused it; ctscore methods wrote "198 were excluded" (README: a list that leaves nothing
    to analyse is refused)."""
    from pipeline.methods import methods_text

    out, _ = three
    every = review_sheet(out)
    every["exclude"], every["reason"] = "yes", "motion"
    with pytest.raises(CTScoreError, match="leaves no scored scan"):
        methods_text(out, exclude=every)
    every.to_csv(out / "every.csv", index=False)
    with pytest.raises(CTScoreError, match="leaves no scored scan"):
        methods_text(out, exclude=out / "every.csv")
