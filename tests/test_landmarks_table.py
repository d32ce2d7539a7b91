"""``OUT/landmarks.csv`` (and its Parquet twin): every scan's landmark levels in one table, as its result.json has
them, documented in data_dictionary.csv, rebuilt by ``ctscore aggregate`` and carried by ``ctscore share``."""

from __future__ import annotations

import json
import shutil

import pandas as pd

from pipeline.cli import main
from pipeline.outputs import LANDMARK_COLUMNS
from pipeline.run import landmark_rows


def test_the_table_holds_each_level_of_each_result(sample_run):
    table = pd.read_csv(sample_run / "landmarks.csv", dtype={"scan_id": str}, keep_default_na=False)
    assert list(table.columns) == LANDMARK_COLUMNS
    scan_id = pd.read_csv(sample_run / "scans.csv")["scan_id"][0]
    levels = json.loads((sample_run / scan_id / "result.json").read_text())["landmarks"]
    assert list(table["landmark"]) == list(levels) and set(table["scan_id"]) == {scan_id}
    for _, row in table.iterrows():
        lm = levels[row["landmark"]]
        assert row["method"] == lm["method"] and row["confidence"] == lm["confidence"] and row["note"] == lm["note"]
        if lm["z_mm"] is None:
            assert row["z_mm"] == ""
        else:
            assert float(row["z_mm"]) == round(lm["z_mm"], 2)
    assert not table.duplicated(["scan_id", "landmark"]).any()  # the key of data_dictionary.csv
    carina = table.set_index("landmark").loc["carina"]
    assert carina["method"] == "detected" and abs(float(carina["z_mm"])) <= 2.5  # the phantom's carina: 0 mm
    parquet = pd.read_parquet(sample_run / "landmarks.parquet")
    assert str(parquet["z_mm"].dtype) == "float64" and str(parquet["method"].dtype) == "string"
    dictionary = pd.read_csv(sample_run / "data_dictionary.csv", keep_default_na=False)
    described = dictionary[dictionary["table"] == "landmarks"]
    assert list(described["column"]) == LANDMARK_COLUMNS
    assert (described["description"].str.len() > 20).all() and not described["description"].str.contains(
        "not described").any()


def test_rows_of_a_result_without_levels_or_of_an_older_one():
    assert landmark_rows("scan-1", {}) == []
    rows = landmark_rows("scan-1", {"carina": {"name": "carina", "z_mm": 1.0000001, "method": "detected",
                                               "confidence": "high"}, "odd": "not a level"})
    assert rows == [{"scan_id": "scan-1", "landmark": "carina", "z_mm": 1.0, "method": "detected",
                     "confidence": "high", "ctscore_z_mm": None, "ctscore_method": None, "ctscore_confidence": None,
                     "note": None}]


def test_aggregate_rebuilds_it_and_share_carries_it(sample_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(sample_run, out)
    before = (out / "landmarks.csv").read_bytes()
    (out / "landmarks.csv").unlink()
    (out / "landmarks.parquet").unlink()
    assert main(["aggregate", str(out), "-q"]) == 0
    assert (out / "landmarks.csv").read_bytes() == before
    dest = tmp_path / "shared"
    assert main(["share", str(out), str(dest), "--allow-builtin-salt", "-q"]) == 0
    assert (dest / "landmarks.csv").read_bytes() == before and (dest / "landmarks.parquet").is_file()
    assert "landmarks.csv" in (dest / "SHARED.txt").read_text()
    assert 'href="landmarks.csv"' in (out / "report.html").read_text()


def test_share_writes_no_level_table_file_name_of_an_earlier_development_version(sample_run, tmp_path):
    """0.7.0 development versions wrote a reader's level's note as "set by a reader (<file> line <n>)": a file name
    may name a patient, so share writes such notes as ctscore writes them now."""
    out = tmp_path / "out"
    shutil.copytree(sample_run, out)
    scan_id = pd.read_csv(out / "scans.csv")["scan_id"][0]
    old = "set by a reader (levels_DOE_JANE.csv line 2)"
    path = out / scan_id / "result.json"
    result = json.loads(path.read_text())
    result["landmarks"]["carina"].update(method="reader", note=old)
    path.write_text(json.dumps(result))
    for name in ("landmarks.csv", "landmarks.parquet"):
        table = pd.read_parquet(out / "landmarks.parquet")
        table.loc[table["landmark"] == "carina", "note"] = old
        if name.endswith(".csv"):
            table.to_csv(out / name, index=False)
        else:
            table.to_parquet(out / name, index=False)
    dest = tmp_path / "shared"
    assert main(["share", str(out), str(dest), "--allow-builtin-salt", "-q"]) == 0
    for f in dest.rglob("*"):
        if f.is_file():
            assert b"DOE_JANE" not in f.read_bytes(), f
    shared = pd.read_parquet(dest / "landmarks.parquet").set_index("landmark")
    assert shared.loc["carina", "note"] == "set by a reader"
    assert pd.read_csv(dest / "landmarks.csv").set_index("landmark").loc["carina", "note"] == "set by a reader"
    assert json.loads((dest / scan_id / "result.json").read_text())["landmarks"]["carina"]["note"] == "set by a reader"
    assert "naming the level table's file" in (dest / "SHARED.txt").read_text()
