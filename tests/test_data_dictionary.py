"""The data dictionary (OUT/data_dictionary.csv) documents every column of scans, zones and failures, once, in the
tables' order, with the types the Parquet twins store and categorical values that cover those of a real run."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from pipeline.data_dictionary import (
    DICTIONARY_COLUMNS,
    TABLE_KEYS,
    TYPE_OF_DTYPE,
    dictionary_frame,
    documented_columns,
    write_data_dictionary,
)
from pipeline.outputs import FAILURE_COLUMNS, LANDMARK_COLUMNS, SCAN_COLUMNS, ZONE_COLUMNS, table_dtypes

REPO = Path(__file__).resolve().parents[1]
TABLES = {"scans": SCAN_COLUMNS, "zones": ZONE_COLUMNS, "failures": FAILURE_COLUMNS, "landmarks": LANDMARK_COLUMNS}
TYPES = {"text", "integer", "number", "boolean"}
UNITS = {"", "mL", "g", "%", "HU", "mm", "score points"}  # g: tissue mass (lung_tissue_g)
CATEGORICAL = {"scans": ("status", "mosmed_category"), "zones": ("system", "lung", "unit", "status")}


@pytest.fixture(scope="module")
def run_out(sample_run) -> Path:
    """The tables of one real run of the sample (classical segmenter): the session's run, only read here."""
    return sample_run


def _dtype_type(dtype) -> str:
    return TYPE_OF_DTYPE[str(dtype)]


def test_frame_shape_and_vocabulary():
    df = dictionary_frame()
    assert list(df.columns) == DICTIONARY_COLUMNS
    assert set(df["table"]) == set(TABLES)
    assert set(df["type"]) <= TYPES
    assert set(df["unit"]) <= UNITS
    for col in ("allowed", "missing", "description"):
        assert (df[col].str.strip() != "").all(), df.loc[df[col].str.strip() == "", ["table", "column"]]
    assert all(s.isascii() for col in DICTIONARY_COLUMNS for s in df[col]), "non-ASCII text trips Stata/SPSS"


@pytest.mark.parametrize("table", list(TABLES))
def test_every_column_documented_once_in_order(table):
    columns = TABLES[table]
    assert documented_columns(table) == columns, "documented columns differ from the table's (missing, extra, order)"
    df = dictionary_frame()
    assert df.loc[df["table"] == table, "column"].tolist() == columns
    assert not df.duplicated(["table", "column"]).any()
    assert "not described" not in " ".join(df["description"])


@pytest.mark.parametrize("table", list(TABLES))
def test_types_match_table_dtypes(table):
    """The type of every column is that of :func:`pipeline.outputs.table_dtypes` (what the writer casts to; the
    check for an empty failures table, whose Parquet twin may hold object columns)."""
    df = dictionary_frame().set_index(["table", "column"])
    for column, dtype in table_dtypes(TABLES[table]).items():
        assert df.loc[(table, column), "type"] == _dtype_type(dtype), column


def test_types_match_parquet_of_a_real_run(run_out):
    df = dictionary_frame().set_index(["table", "column"])
    for table in ("scans", "zones"):
        pq = pd.read_parquet(run_out / f"{table}.parquet")
        assert list(pq.columns) == TABLES[table]
        assert len(pq)
        for column in pq.columns:
            assert df.loc[(table, column), "type"] == _dtype_type(pq[column].dtype), (table, column)


def _allowed_tokens(text: str) -> set[str]:
    return {t for t in re.split(r"[\s|;:,]+", text) if t}


def test_categorical_values_of_a_real_run_are_allowed(run_out):
    df = dictionary_frame().set_index(["table", "column"])
    for table, columns in CATEGORICAL.items():
        data = pd.read_parquet(run_out / f"{table}.parquet")
        for column in columns:
            allowed = _allowed_tokens(df.loc[(table, column), "allowed"])
            values = set(data[column].dropna()) - {""}
            assert values, (table, column)
            assert values <= allowed, (table, column, values - allowed)
    # each system's units are listed under that system
    zones = pd.read_parquet(run_out / "zones.parquet")
    per_system = dict(part.split(":", 1) for part in df.loc[("zones", "unit"), "allowed"].split(";"))
    per_system = {k.strip(): _allowed_tokens(v) for k, v in per_system.items()}
    assert set(per_system) == {"six_zone", "zhang900", "lobar", "anteroposterior", "peripheral_central"}
    for system, units in zones.groupby("system")["unit"]:
        assert set(units) <= per_system[system], system


def test_lobar_units_and_scores_documented():
    """Lobar rows: extent_score the lobar20 lobe score 0-4, unit_score the lobar25 lobe score 0-5."""
    from segmentation.base import LOBES

    df = dictionary_frame().set_index(["table", "column"])
    assert set(LOBES.values()) <= _allowed_tokens(df.loc[("zones", "unit"), "allowed"])
    assert "lobar: 0-4" in df.loc[("zones", "extent_score"), "allowed"]
    assert "lobar: 0-5" in df.loc[("zones", "unit_score"), "allowed"]
    assert "lobar20" in df.loc[("zones", "extent_score"), "description"]
    assert "lobar25" in df.loc[("zones", "unit_score"), "description"]
    assert df.loc[("scans", "six_zone_total"), "allowed"] == "0-24"
    assert df.loc[("scans", "zhang900_total"), "allowed"] == "0-900"


def test_keys_unique_in_a_real_run(run_out):
    for table in ("scans", "zones", "landmarks"):
        data = pd.read_parquet(run_out / f"{table}.parquet")
        assert not data.duplicated(list(TABLE_KEYS[table])).any(), table
    for table, key in TABLE_KEYS.items():
        assert set(key) <= set(TABLES[table])


def test_write_data_dictionary_round_trip(tmp_path):
    path = write_data_dictionary(tmp_path / "out")
    assert path == tmp_path / "out" / "data_dictionary.csv"
    assert path.is_file()
    back = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    pd.testing.assert_frame_equal(back, dictionary_frame())
    assert not list(path.parent.glob(".*.tmp")), "temporary file left behind"
