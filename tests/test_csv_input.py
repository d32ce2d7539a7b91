"""Clinical and lab tables as spreadsheets export them (a stand-in researcher's review of `ctscore stats`): each
test failed before the tables were read with scoring.csv_input. pandas' read_csv took the first column as the
index when every data row ended in a comma (or one row held an unquoted decimal comma), so every value shifted one
column and the error named another column, line and value; a column named twice was read once; line numbers
stopped being file lines after a multi-line cell; a Latin-1 byte was reported by byte position."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import CTScoreError
from scoring.csv_input import read_csv_table
from scoring.stats.schema import read_clinical, read_labs

HEADER = ["patient_id", "scores_patient_id", "age", "sex", "outcome", "onset_date"]
ROWS = [["P1", "pt-1", "61", "M", "survivor", "2020-02-01"], ["P2", "pt-2", "70", "F", "non-survivor", "2020-02-03"],
        ["P3", "pt-3", "55", "F", "survivor", "2020-02-05"]]


def _write(tmp_path: Path, lines: list[str], name: str = "clinical.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes("\n".join(lines).encode(encoding) + b"\n")
    return path


def _csv(rows: list[list[str]], tail: str = "") -> list[str]:
    return [",".join(r) + tail for r in rows]


def _refused(reader, path: Path) -> CTScoreError:
    with pytest.raises(CTScoreError) as e:
        reader(path)
    assert path.name in str(e.value)
    return e.value


def test_trailing_comma_on_every_data_row_keeps_the_columns(tmp_path):
    clean = read_clinical(_write(tmp_path, _csv([HEADER] + ROWS), "clean.csv"))
    shifted = read_clinical(_write(tmp_path, _csv([HEADER]) + _csv(ROWS, ",")))
    pd.testing.assert_frame_equal(clean.reset_index(drop=True), shifted.reset_index(drop=True))


def test_unquoted_decimal_comma_is_refused_at_its_line(tmp_path):
    rows = [["P1", "pt-1", "61,5", "M", "survivor", "2020-02-01"]] + ROWS[1:]
    e = _refused(read_clinical, _write(tmp_path, _csv([HEADER] + rows)))
    assert e.code == "BAD_CLINICAL_DATA" and "line 2" in e.message and "decimals with a point" in e.message


@pytest.mark.parametrize("second", ["age", "age "])
def test_a_column_named_twice_is_refused(tmp_path, second):
    header = HEADER[:3] + [second] + HEADER[3:]
    rows = [r[:3] + ["62"] + r[3:] for r in ROWS]
    e = _refused(read_clinical, _write(tmp_path, _csv([header] + rows)))
    assert e.code == "BAD_CLINICAL_DATA" and "'age' appears twice" in e.message


def test_semicolons_with_decimal_commas_on_a_later_row_say_semicolons(tmp_path):
    lines = [";".join(HEADER), "P1;pt-1;61;M;survivor;2020-02-01", "P2;pt-2;70,5;F;survivor;2020-02-01"]
    e = _refused(read_clinical, _write(tmp_path, lines))
    assert "separated by semicolons" in e.message


def test_a_latin1_byte_is_named_by_its_line(tmp_path):
    lines = ["patient_id,date,analyte,value,unit", "P1,2020-02-01,crp,12,mg/L", "P1,2020-02-02,ferritin,300,µg/L"]
    e = _refused(read_labs, _write(tmp_path, lines, "labs.csv", "latin-1"))
    assert e.code == "BAD_LAB_DATA" and "byte 0xb5 on line 3" in e.message and "UTF-8" in e.message


def test_lines_are_file_lines_after_a_multiline_cell(tmp_path):
    header = HEADER + ["comment"]
    lines = [",".join(header), 'P1,pt-1,61,M,survivor,2020-02-01,"fever\ncough\nICU"',
             "P2,pt-2,70,F,survivor,2020-02-01,", "P3,pt-3,55,X,survivor,2020-02-01,"]
    e = _refused(read_clinical, _write(tmp_path, lines))
    assert "column 'sex', line 6" in e.message, e.message


def test_reader_contract(tmp_path):
    path = _write(tmp_path, ["a,b,", "1,2,", "", ",,", "3,,x", "4"], "t.csv")
    df = read_csv_table(path, "CODE", "table")
    assert list(df.columns) == ["a", "b", "unnamed_3"] and df.attrs["unnamed_columns"] == ["unnamed_3"]
    assert df.index.tolist() == [0, 3, 4] and df.attrs["skipped_lines"] == [3, 4]  # label + 2 = file line
    assert df.loc[4].tolist() == ["4", "", ""]


def test_a_dataframe_with_a_column_named_twice_is_refused():
    """The same rule for a DataFrame given to run_stats: 'age' and 'age ' were a traceback ('tolist')."""
    from scoring.stats.schema import as_text

    frame = pd.DataFrame([r + ["62"] for r in ROWS], columns=HEADER + ["age "])
    with pytest.raises(CTScoreError) as e:
        as_text(frame, "BAD_CLINICAL_DATA")
    assert e.value.code == "BAD_CLINICAL_DATA" and "'age' appears twice" in e.value.message


def test_giga_per_litre_in_either_case_of_litre():
    from scoring.stats.schema import _unit_key

    assert _unit_key("G/l") == _unit_key("G/L") == _unit_key("10^9/L") and _unit_key("g/L") != _unit_key("G/L")
