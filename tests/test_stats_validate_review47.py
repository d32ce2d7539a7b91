"""Statistics and validation, review 47: each test failed before its fix.

An 18-digit id column (``--id-column mrn``) was typed as float64, so two patients whose numbers round to one float
shared a clinical row (or were called one value "more than once"); a DataFrame whose id column pandas read as
floats joined the same way. The reference's reader check took 'reader 1' and 'reader1', 'Dr. Smith' and 'Dr Smith'
for two readers; a reader's total that was not the sum of their own units was compared as given; units without a
total, rows left out by ``--on-unmatched warn`` and a column of numbers not read were only counted or logged. Missing
markers (``NA``) and an all-empty ``scores_patient_id`` gave messages that did not say what to do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import CTScoreError
from scoring.stats import schema
from scoring.stats.cohort import build_cohort
from scoring.validation import schema as vschema
from scoring.validation.api import run_validation
from tests.test_stats_review2 import _clin, _scans
from tests.test_validation_end_to_end import write_cohort

# two different patients whose 18-digit hospital numbers are one float64
A, B = "110101199001010017", "110101199001010016"


# ---- 1. ids of 16 digits and more keep every digit -------------------------------------------------------

def test_an_18_digit_id_column_keeps_every_digit():
    assert float(A) == float(B)
    clin = _clin(patient_id=["P1", "P2"], mrn=[A, "110101199001010034"])
    assert clin["mrn"].tolist() == [A, "110101199001010034"]  # text, not float64
    co = build_cohort(_scans([B, "110101199001010034"]), None, clin, None, id_column="mrn")
    matched = co.scans.set_index("scan_id")["patient_id"].to_dict()
    assert matched == {"s1": "P2"}  # the scan of patient ...016 is not given the clinical row of ...017
    assert any(B in n for n in co.notes)


def test_two_adjacent_18_digit_ids_are_two_values_not_one_repeated():
    clin = _clin(patient_id=["P1", "P2"], mrn=["110101199001010000", "110101199001010001"])
    co = build_cohort(_scans(["110101199001010000", "110101199001010001"]), None, clin, None, id_column="mrn")
    assert co.scans.set_index("scan_id")["patient_id"].to_dict() == {"s0": "P1", "s1": "P2"}


def test_an_id_column_with_leading_zeros_stays_text_and_a_covariate_stays_numbers():
    clin = _clin(patient_id=["P1", "P2"], mrn=["007", "012"], bmi=["21.5", "30"])
    assert clin["mrn"].tolist() == ["007", "012"]
    assert pd.api.types.is_numeric_dtype(clin["bmi"])


def test_a_repeated_id_names_its_lines():
    clin = _clin(patient_id=["P1", "P2", "P3"], mrn=[A, "9", A])
    with pytest.raises(CTScoreError, match=f"'{A}' appears more than once \\(lines 2, 4\\)"):
        build_cohort(_scans([A]), None, clin, None, id_column="mrn")


def test_a_dataframe_with_rounded_ids_is_refused():
    clin = pd.DataFrame({"patient_id": ["A", "B"], "scores_patient_id": [float(A), float("nan")],
                         "onset_date": ["2020-01-25"] * 2})
    with pytest.raises(CTScoreError, match="column 'scores_patient_id', line 2.*dtype=str") as e:
        schema.as_text(clin)
    assert e.value.code == "BAD_CLINICAL_DATA"


def test_an_id_column_of_rounded_floats_given_to_build_cohort_is_refused():
    clin = _clin(patient_id=["P1", "P2"], mrn=["1", "2"])
    clin["mrn"] = [float(A), np.nan]  # a frame typed outside validate_clinical
    with pytest.raises(CTScoreError, match="column 'mrn'.*dtype=str") as e:
        build_cohort(_scans([B]), None, clin, None, id_column="mrn")
    assert e.value.code == "BAD_CLINICAL_DATA"


def test_run_stats_with_an_18_digit_id_column_matches_each_patient(tmp_path):
    from scoring.stats.api import run_stats

    (tmp_path / "scores").mkdir()
    _scans([B, "110101199001010034"]).assign(study_date=["2020-02-01", "2020-02-08"]).to_csv(
        tmp_path / "scores" / "scans.csv", index=False)
    (tmp_path / "clinical.csv").write_text(f"patient_id,mrn,onset_date,outcome\nP1,{A},2020-01-25,survivor\n"
                                           "P2,110101199001010034,2020-01-25,survivor\n")
    tables = run_stats(tmp_path / "scores", tmp_path / "clinical.csv", None, study="liao2021", id_column="mrn")
    summary = tables["data_summary"]
    assert dict(zip(summary["item"], summary["value"]))["scans (status ok, matched to a patient)"] == "1"
    left_out = [n for n in summary["value"] if "not in the clinical table were left out" in n]
    assert len(left_out) == 1 and repr(B) in left_out[0]  # ...016 has no clinical row; ...034 matched P2


# ---- 2. one reader spelled with and without a space or dot -------------------------------------------------

@pytest.mark.parametrize("a, b", [("Dr. Smith", "Dr Smith"), ("reader 1", "reader1"), ("reader-1", "Reader_1")])
def test_a_reader_written_with_and_without_a_space_or_dot_is_refused(tmp_path, a, b):
    p = tmp_path / "r.csv"
    p.write_text(f"scan_id,system,unit,reader,value\ns1,six_zone,total,{a},3\ns2,six_zone,total,{b},4\n")
    with pytest.raises(CTScoreError, match="spell each reader one way") as e:
        vschema.check_values(vschema.read_reference(p), p)
    assert e.value.code == "REFERENCE_BAD_READER"


# ---- 3. a reader's total against their own units -----------------------------------------------------------

@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    pred, ref, _, _ = write_cohort(tmp_path_factory.mktemp("val47"), 4, 3, "1.2.826.0.47")
    return pred, pd.read_csv(ref, dtype=str, keep_default_na=False)


def _write(tmp_path: Path, ref: pd.DataFrame) -> Path:
    p = tmp_path / "readers.csv"
    ref.to_csv(p, index=False)
    return p


def _summary(tables: dict[str, pd.DataFrame]) -> list[str]:
    s = tables["data_summary"]
    return s.loc[s["item"] == "note", "value"].tolist()


def test_a_total_that_is_not_the_sum_of_the_readers_units_is_refused(cohort, tmp_path):
    pred, ref = cohort
    ref = ref.copy()
    i = ref.index[(ref["system"] == "six_zone") & (ref["unit"] == "total") & (ref["reader"] == "alice")][0]
    ref.loc[i, "value"] = str(int(ref.loc[i, "value"]) + 1 if int(ref.loc[i, "value"]) < 24 else 23)
    with pytest.raises(CTScoreError, match=f"line {i + 2}: .* six_zone reader 'alice': total .* is not .*, the sum "
                       "of the reader's 6 unit scores of the scan \\(lines") as e:
        run_validation(pred, _write(tmp_path, ref), draw=False)
    assert e.value.code == "REFERENCE_TOTAL_MISMATCH"


def test_units_without_a_total_are_noted_not_summed(cohort, tmp_path):
    pred, ref = cohort
    ref = ref[~((ref["system"] == "six_zone") & (ref["unit"] == "total") & (ref["reader"] == "bob"))]
    tables = run_validation(pred, _write(tmp_path, ref), draw=False)
    notes = [n for n in _summary(tables) if "without a total" in n]
    assert len(notes) == 1 and "reader 'bob'" in notes[0] and "4 scan(s)" in notes[0]
    assert "not computed from the units" in notes[0]
    r = tables["ratings"]
    assert r.loc[(r["system"] == "six_zone") & (r["unit"] == "total"), "bob"].isna().all()


def test_a_reader_who_scored_only_some_units_is_not_held_to_the_total(cohort, tmp_path):
    pred, ref = cohort
    ref = ref[~((ref["system"] == "six_zone") & (ref["unit"] == "right_upper"))]
    tables = run_validation(pred, _write(tmp_path, ref), draw=False)
    assert not [n for n in _summary(tables) if "without a total" in n]


# ---- 4. rows left out by --on-unmatched warn are named ------------------------------------------------------

def test_rows_left_out_are_named_with_lines_and_the_scans_without_rows(cohort, tmp_path):
    pred, ref = cohort
    ref = ref.copy()
    first = ref["series_uid"] == ref["series_uid"].iloc[0]
    ref.loc[first, "series_uid"] = "9.9.9"
    tables = run_validation(pred, _write(tmp_path, ref), draw=False, on_unmatched="warn")
    notes = _summary(tables)
    left = [n for n in notes if "were left out (--on-unmatched warn)" in n]
    assert left and "series_uid '9.9.9' (lines 2, 3, 4 and" in left[0]
    scans = pd.read_csv(pred / "scans.csv", dtype=str)
    missing = scans.loc[scans["series_uid"] == "1.2.826.0.47.0", "scan_id"].iloc[0]
    assert any("have no reference row" in n and repr(missing) in n for n in notes)


def test_a_patient_id_that_lost_its_leading_zeros_is_named(tmp_path):
    scans = pd.DataFrame({"scan_id": ["s1"], "patient_id": ["0000001"], "study_date": ["20200203"],
                          "series_uid": ["1.2"], "status": ["ok"]})
    p = tmp_path / "r.csv"
    p.write_text("patient_id,study_date,system,unit,reader,value\n1,2020-02-03,six_zone,total,R1,3\n")
    with pytest.raises(CTScoreError, match="scans.csv has patient_id '0000001': did a spreadsheet drop its leading "
                       "zeros"):
        vschema.load_reference(p, scans)
    with pytest.raises(CTScoreError, match="no reference row matches.*leading zeros"):
        vschema.load_reference(p, scans, on_unmatched="warn")


def test_a_date_in_no_known_format_lists_every_accepted_format(tmp_path):
    scans = pd.DataFrame({"scan_id": ["s1"], "patient_id": ["P1"], "study_date": ["20200203"],
                          "series_uid": ["1.2"], "status": ["ok"]})
    p = tmp_path / "r.csv"
    p.write_text("patient_id,study_date,system,unit,reader,value\nP1,03/02/2020,six_zone,total,R1,3\n")
    with pytest.raises(CTScoreError, match="is not YYYYMMDD or YYYY-MM-DD, nor YYYY/MM/DD or YYYY.MM.DD"):
        vschema.load_reference(p, scans)


# ---- 5, 6. missing markers, an empty scores_patient_id, a second reader's column ---------------------------------

@pytest.mark.parametrize("column, value", [("age", "NA"), ("onset_date", "n/a"), ("outcome", "missing"),
                                           ("glucocorticoid", ".")])
def test_a_missing_marker_in_a_typed_column_says_to_leave_the_cell_empty(tmp_path, column, value):
    row = {"patient_id": "P1", "onset_date": "2020-01-25", "age": "50", "outcome": "survivor", "glucocorticoid": "1"}
    row[column] = value
    p = tmp_path / "clinical.csv"
    p.write_text(",".join(row) + "\n" + ",".join(row.values()) + "\n")
    with pytest.raises(CTScoreError, match=f"column '{column}', line 2: .*leave the cell empty"):
        schema.read_clinical(p)


def test_an_all_empty_scores_patient_id_says_so():
    clin = _clin(patient_id=["P1", "P2"], scores_patient_id=["", ""])
    with pytest.raises(CTScoreError) as e:
        build_cohort(_scans(["x1", "x2"]), None, clin, None)
    assert "e.g. )" not in str(e.value)
    assert "'scores_patient_id' is empty in every row" in str(e.value)


def test_a_column_of_a_second_readers_numbers_is_a_data_summary_note(cohort, tmp_path):
    pred, ref = cohort
    alice = ref[ref["reader"] == "alice"].reset_index(drop=True)
    bob = ref[ref["reader"] == "bob"].reset_index(drop=True)
    wide = alice.assign(value_reader2=bob["value"].where(bob["system"] != "mosmed", "1"))
    tables = run_validation(pred, _write(tmp_path, wide), draw=False)
    assert any("'value_reader2' hold numbers but are not read" in n for n in _summary(tables))
