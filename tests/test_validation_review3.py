"""Validation against readers' files as labs deliver them (a stand-in researcher's review): each test failed
before its fix. Silent misreadings (a blank unit compared with the total, a second reader's columns dropped, one
reader split in two by case) are refused naming the line; spreadsheet exports get messages that say what to do."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import CTScoreError
from scoring.validation import compare, figures
from scoring.validation.schema import load_reference

SCANS = pd.DataFrame({"scan_id": ["scan-a", "scan-b", "scan-c"],
                      "series_uid": ["1.2.1", "1.2.2", "1.2.3"],
                      "patient_id": ["pt-aaaa", "pt-bbbb", "pt-cccc"],
                      "study_date": ["20200301", "20200302", "20200303"],
                      "status": ["ok", "ok", "ok"]})
HEADER = "scan_id,system,unit,reader,value\n"


def _load(tmp_path: Path, text: str | bytes) -> pd.DataFrame:
    p = tmp_path / "readers.csv"
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return load_reference(p, SCANS)


def _error(tmp_path: Path, text: str | bytes) -> CTScoreError:
    with pytest.raises(CTScoreError) as e:
        _load(tmp_path, text)
    assert e.value.path == str(tmp_path / "readers.csv")
    return e.value


def test_blank_unit_is_refused_not_compared_with_the_total(tmp_path):
    e = _error(tmp_path, HEADER + "scan-a,six_zone,right_upper,R1,1\nscan-b,six_zone,,R1,2\n")
    assert e.code == "REFERENCE_BAD_UNIT" and "line 3" in e.message and "empty unit" in e.message
    ref = _load(tmp_path, HEADER + "scan-a,six_zone,total,R1,1\nscan-b,mosmed,Total,R1,CT-1\n")
    assert ref["unit"].tolist() == ["total", "total"]


@pytest.mark.parametrize("header", ["scan_id,system,unit,reader,value,reader,value",
                                    "scan_id,system,unit,Reader,reader,value"])
def test_a_column_named_twice_is_refused(tmp_path, header):
    e = _error(tmp_path, header + "\nscan-a,six_zone,total,R1,11,R2,13\n")
    assert e.code == "REFERENCE_SCHEMA" and "appears twice" in e.message and "long form" in e.message


def test_columns_not_read_are_named(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="scoring.validation.schema"):
        ref = _load(tmp_path, "scan_id,system,unit,reader,value,R2,comment,\n"
                              "scan-a,six_zone,total,R1,11,13,,\nscan-b,six_zone,total,R1,12,14,re-read,\n")
    assert len(ref) == 2
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "'r2'" in warned[0] and "not read" in warned[0] and "comment" not in warned[0]
    assert any("'comment'" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_reader_names_differing_only_in_case_are_refused(tmp_path):
    e = _error(tmp_path, HEADER + "scan-a,six_zone,total,Smith,1\nscan-b,six_zone,total,smith,2\n"
                                  "scan-c,six_zone,total,Jones,2\n")
    assert e.code == "REFERENCE_BAD_READER" and "line 3" in e.message and "'Smith'" in e.message


@pytest.mark.parametrize("sep, word", [(";", "semicolons"), ("\t", "tabs")])
def test_semicolon_and_tab_exports_say_so(tmp_path, sep, word):
    text = "\ufeff" + HEADER.replace(",", sep) + "scan-a;percent_involvement;total;R1;33,5\r\n".replace(";", sep)
    e = _error(tmp_path, text.replace("\n", "\r\n"))
    assert e.code == "REFERENCE_SCHEMA" and f"separated by {word}" in e.message


def test_trailing_comma_on_rows_keeps_the_columns(tmp_path):
    ref = _load(tmp_path, HEADER + "scan-a,six_zone,total,R1,11,\nscan-b,six_zone,total,R1,12,\n")
    assert ref["scan_id"].tolist() == ["scan-a", "scan-b"] and ref["value"].tolist() == [11, 12]


def test_unquoted_comma_decimal_is_refused_naming_the_line(tmp_path):
    e = _error(tmp_path, HEADER + "scan-a,six_zone,total,R1,11\nscan-a,percent_involvement,total,R1,33,5\n")
    assert e.code == "REFERENCE_SCHEMA" and "line 3" in e.message and "6 fields, the header 5" in e.message
    e = _error(tmp_path, HEADER + 'scan-a,percent_involvement,total,R1,"33,5"\n')
    assert e.code == "REFERENCE_BAD_VALUE" and "decimals with a point" in e.message


def test_underscores_are_not_digits(tmp_path):
    e = _error(tmp_path, HEADER + "scan-a,six_zone,total,R1,1_2\n")
    assert e.code == "REFERENCE_BAD_VALUE"


def test_lines_count_file_lines_after_a_multiline_cell(tmp_path):
    text = ("scan_id,system,unit,reader,value,comment\n"
            "scan-a,six_zone,total,R1,3,\"GGO\nre-read\nsee PACS\"\n"
            "scan-b,six_zone,total,R1,25,\n")
    e = _error(tmp_path, text)
    assert e.code == "REFERENCE_OUT_OF_RANGE" and "line 5" in e.message


def test_identifiers_naming_different_scans_are_refused(tmp_path):
    e = _error(tmp_path, "scan_id,series_uid,system,unit,reader,value\nscan-a,1.2.2,six_zone,total,R1,11\n")
    assert e.code == "REFERENCE_ID_CONFLICT" and "scan-a" in e.message and "1.2.2" in e.message
    e = _error(tmp_path, "series_uid,patient_id,study_date,system,unit,reader,value\n"
                         "1.2.1,pt-bbbb,2020-03-02,six_zone,total,R1,11\n")
    assert e.code == "REFERENCE_ID_CONFLICT"
    # a lab's own patient numbers beside the scan_id are not ctscore's pseudonyms: no conflict
    ref = _load(tmp_path, "scan_id,patient_id,study_date,system,unit,reader,value\n"
                          "scan-a,MRN0042,01.03.2020,six_zone,total,R1,11\n")
    assert ref["scan_id"].tolist() == ["scan-a"]


def test_unmatched_rows_say_why_when_the_cause_is_visible(tmp_path):
    e = _error(tmp_path, "patient_id,study_date,system,unit,reader,value\npt-aaaa,01.03.2020,six_zone,total,R1,1\n")
    assert e.code == "REFERENCE_NO_MATCH" and "is not YYYYMMDD or YYYY-MM-DD" in e.message
    e = _error(tmp_path, "patient_id,study_date,system,unit,reader,value\nPHANTOM001,20200301,six_zone,total,R1,1\n")
    assert e.code == "REFERENCE_NO_MATCH" and "pseudonymous" in e.message


def test_agreement_notes_targets_without_a_ctscore_value():
    wide = pd.DataFrame({"scan_id": [f"s{i}" for i in range(6)], "system": "six_zone", "unit": "total",
                         "ctscore": [1, 2, 3, 4, 5, np.nan], "R1": [1, 2, 3, 4, 6, 7.0]})
    table = compare.agreement_table(wide, ["R1"])
    row = table[(table["rater_a"] == "ctscore") & (table["rater_b"] == "R1")].iloc[0]
    assert row["n"] == 5 and "1 target(s) R1 scored have no ctscore value" in row["note"]


def test_one_panel_bland_altman_keeps_its_y_label_on_the_canvas():
    fig, (ax,) = figures._figure(1)
    ax.set_ylabel("ctscore - R1")
    ax.plot([0, 100], [0, 1000])
    fig.canvas.draw()
    box = ax.yaxis.label.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= 0, box


# --- a reviewer's read of the changes above -----------------------------------------------------------------------

def test_a_day_first_date_beside_a_scan_id_is_no_conflict(tmp_path):
    """Excel re-saves dates in the local format: the same patient and date written 01.03.2020 beside the scan_id
    was refused as REFERENCE_ID_CONFLICT ('a shifted column?')."""
    ref = _load(tmp_path, "scan_id,patient_id,study_date,system,unit,reader,value\n"
                          "scan-a,pt-aaaa,01.03.2020,six_zone,total,R1,11\nscan-b,pt-bbbb,2020-3-2,six_zone,total,R1,3\n")
    assert ref["scan_id"].tolist() == ["scan-a", "scan-b"]


def test_a_space_before_a_quoted_cell_is_not_part_of_it(tmp_path):
    ref = _load(tmp_path, 'scan_id, system, unit, reader, value\nscan-a, six_zone, total, "Smith, J", 12\n')
    assert ref["reader"].tolist() == ["Smith, J"] and ref["value"].tolist() == [12]


def test_impossible_dates_are_not_dates():
    from scoring.validation.predictions import normalise_date

    assert normalise_date("2020-02-30") == "2020-02-30" and normalise_date("07032020") == "07032020"
    assert normalise_date("2020-02-29") == "20200229"


def test_an_empty_unit_of_a_system_without_units_is_its_total(tmp_path):
    ref = _load(tmp_path, HEADER + "scan-a,mosmed,,R1,CT-2\n")
    assert ref["unit"].tolist() == ["total"]


def test_blank_lines_above_the_header_are_skipped(tmp_path):
    ref = _load(tmp_path, "\n\n" + HEADER + "scan-a,six_zone,total,R1,3\nscan-b,six_zone,total,R1,4\n")
    assert ref["line"].tolist() == [4, 5]
    e = _error(tmp_path, "\n" + HEADER + "scan-a,six_zone,total,R1,30\n")
    assert e.code == "REFERENCE_OUT_OF_RANGE" and "line 3" in e.message
