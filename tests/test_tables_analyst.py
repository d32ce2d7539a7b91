"""The tables as a biostatistician imports them (an audit): which salt made each row's patient id, and the
zones table's key and lobar score columns as the README states them."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.outputs import SCAN_COLUMNS, SETTINGS_COLUMNS, salt_id, settings_note


@pytest.fixture(scope="module")
def run_out(tmp_path_factory, sample_run):
    """A copy of the session's run of the sample (a test here deletes and rebuilds a table)."""
    import shutil

    out = tmp_path_factory.mktemp("analyst") / "out"
    shutil.copytree(sample_run, out)
    return out


def test_each_row_says_which_salt_made_its_patient_id(run_out):
    """Two scans.csv stacked in R gave one patient two patient_ids, with nothing in the rows to show it (only
    ctscore aggregate warned, in its log and run.json)."""
    assert "pseudonym_salt_id" in SCAN_COLUMNS and "pseudonym_salt_id" in SETTINGS_COLUMNS
    for table in (pd.read_csv(run_out / "scans.csv", dtype=str), pd.read_parquet(run_out / "scans.parquet")):
        assert table["pseudonym_salt_id"].tolist() == [salt_id("ctscore")]


def test_stacked_tables_of_two_salts_are_noted(run_out):
    a = pd.read_csv(run_out / "scans.csv", dtype=str)
    b = a.assign(pseudonym_salt_id="none", patient_id="12345")
    note = settings_note(pd.concat([a, b]))
    assert note.startswith("patient ids were made with different pseudonym salts (") and "link patients" in note
    assert "not comparable" not in note  # two sites' own salts: the ids differ, the scores do not
    c = b.assign(model_id="another")
    assert "not comparable" in settings_note(pd.concat([a, c])) and "pseudonym salts" in settings_note(pd.concat([a, c]))
    assert settings_note(pd.concat([a, a])) is None


def test_zones_key_and_lobar_columns_are_as_documented():
    """README: one row per (scan_id, system, lung, unit); lobar extent_score sums to lobar20_total and unit_score
    to lobar25_total; a lobar unit names its side."""
    import numpy as np

    from scoring.quantify import score_scan
    from tests.test_zones import LEVELS, Z, cfg, lms

    nz, ny, nx = len(Z), 30, 60
    lungs = np.zeros((nz, ny, nx), np.uint8)
    lungs[1:19, 5:25, 5:28] = 1
    lungs[1:19, 5:25, 32:55] = 2
    lobes = np.zeros_like(lungs)
    lobes[12:19, :, 5:28], lobes[7:12, :, 5:28], lobes[1:7, :, 5:28] = 1, 2, 3  # index grows cranially
    lobes[10:19, :, 32:55], lobes[1:10, :, 32:55] = 4, 5
    lobes[lungs == 0] = 0
    classes = np.zeros_like(lungs)
    classes[2:10, 8:22, 8:25] = 2  # ground glass in the right middle and lower lobes
    classes[13:17, 8:22, 35:50] = 3  # consolidation in the left upper lobe
    hu = np.where(lungs > 0, -850.0, 40.0).astype(np.float32)
    hu[classes == 2], hu[classes == 3] = -500.0, 20.0
    row, zones, _ = score_scan(hu, lungs, classes, Z, 1.0, lms(**LEVELS), cfg(), lobes=lobes)
    df = pd.DataFrame(zones)
    assert not df.duplicated(["system", "lung", "unit"]).any()
    lobar = df[df["system"] == "lobar"]
    assert sorted(lobar["unit"]) == sorted(["right_upper", "right_middle", "right_lower", "left_upper", "left_lower"])
    assert all(u.startswith(f"{lung}_") for lung, u in zip(lobar["lung"], lobar["unit"]))
    assert lobar["extent_score"].sum() == row["lobar20_total"] > 0
    assert lobar["unit_score"].sum() == row["lobar25_total"] != row["lobar20_total"]
    assert lobar["extent_score"].max() <= 4 and lobar["unit_score"].max() <= 5


def test_inventory_types_do_not_depend_on_a_stray_non_dicom_file(tmp_path, run_out):
    """sample_dicoms holds ground_truth.json: its empty row made n_slices 124.0 and eligible the text "False" in
    inventory.csv / .parquet, while a folder of DICOM files only gave int64 and bool."""
    import shutil

    from pipeline.inventory import build_inventory, inventory_table

    clean = tmp_path / "dicom_only"
    shutil.copytree("sample_dicoms", clean, ignore=shutil.ignore_patterns("*.json"))
    a = pd.read_parquet(run_out / "inventory.parquet")
    b = inventory_table(build_inventory(clean).files)
    cols = ["n_files", "n_slices", "rows", "columns", "rank", "lossy", "eligible", "multiframe", "series_number",
            "pixel_spacing_mm"]
    assert [str(a[c].dtype) for c in cols] == [str(b[c].dtype) for c in cols] == [
        "Int64"] * 5 + ["boolean"] * 3 + ["string", "float64"]
    csv = pd.read_csv(run_out / "inventory.csv", dtype=str, keep_default_na=False)
    used = csv[csv["file_status"] != "skipped"].iloc[0]
    assert used["n_slices"] == "124" and used["eligible"] == "True"


def test_the_codebook_is_written_beside_the_tables(run_out, tmp_path):
    from pipeline.batch import aggregate

    book = pd.read_csv(run_out / "data_dictionary.csv", dtype=str, keep_default_na=False)
    assert list(book["column"][book["table"] == "scans"]) == SCAN_COLUMNS
    (run_out / "data_dictionary.csv").unlink()
    aggregate(run_out)  # the tables rebuilt: the codebook too
    assert (run_out / "data_dictionary.csv").is_file()
