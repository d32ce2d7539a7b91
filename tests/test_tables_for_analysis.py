"""Run tables as a statistician's R / Stata / pandas reads them (an audit of the tables for analysis).

- ``study_date`` is YYYYMMDD: the old ACR-NEMA ``YYYY.MM.DD`` (which DICOM PS3.5 asks readers to accept) was written as
  found, then refused by ``ctscore stats`` (BAD_SCORES) and read as NA by R's ``as.Date(x, "%Y%m%d")``; a value that
  is no date is left empty and flagged, never passed on.
- An empty identifier is missing (null) in the Parquet files and the API's frames, as in the CSV: two scans without a
  PatientID were one patient ``""`` to ``groupby``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pydicom
import pytest

from pipeline import headers as H
from pipeline.outputs import SCAN_COLUMNS, atomic_write_table


def _ds(value):
    ds = pydicom.Dataset()
    if value is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about a DA value that is not YYYYMMDD
            ds.StudyDate = value
    return ds


@pytest.mark.parametrize("value, expected", [
    ("20200405", ("20200405", "")),
    ("2020.04.05", ("20200405", "normalised")),
    ("2020-04-05", ("20200405", "normalised")),
    (" 20200405 ", ("20200405", "")),
    ("2020.13.45", ("", "unreadable")),
    ("20200230", ("", "unreadable")),
    ("2020.04-05", ("", "unreadable")),
    ("00000000", ("", "unreadable")),
    ("18000101", ("", "unreadable")),
    ("unknown", ("", "unreadable")),
    ("2020", ("", "unreadable")),
    ("", ("", "")),
    (None, ("", "")),
])
def test_dicom_date(value, expected):
    assert H.dicom_date(_ds(value), "StudyDate") == expected


@pytest.mark.parametrize("value, date, flag", [
    ("2020.04.05", "20200405", "STUDY_DATE_NORMALISED"),
    ("2020.13.45", "", "STUDY_DATE_UNREADABLE"),
    ("20200405", "20200405", None),
])
def test_loaded_series_has_a_yyyymmdd_study_date_and_says_when_it_was_not(tmp_path, value, date, flag, caplog):
    from pipeline.inventory import summarize
    from pipeline.loading import load_series
    from tests.dicom_factory import edit_file, write_series

    files = write_series(tmp_path / "s", 6, size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for f in files:
            edit_file(f, StudyDate=value)
        vol = load_series(files)
        header = summarize(pydicom.dcmread(files[0]))
    assert vol.meta["study_date"] == date
    assert header["study_date"] == date  # the inventory's header: what scans.csv and failures name the scan by
    study_flags = [f for f in vol.flags if f.startswith("STUDY_DATE")]
    assert study_flags == ([flag] if flag else [])
    if flag == "STUDY_DATE_UNREADABLE":
        assert any("StudyDate is not a date" in r.getMessage() and str(tmp_path) in r.getMessage()
                   for r in caplog.records)


def test_the_date_codes_are_documented():
    from pipeline.dicom_codes import CODES

    names = {c.name for c in CODES} if not isinstance(CODES, dict) else set(CODES)
    assert {"STUDY_DATE_NORMALISED", "STUDY_DATE_UNREADABLE"} <= names
    text = (Path(__file__).parents[1] / "docs" / "dicom_input.md").read_text()
    assert "`STUDY_DATE_NORMALISED`" in text and "`STUDY_DATE_UNREADABLE`" in text


def test_empty_identifiers_are_missing_in_parquet_and_frames_as_in_the_csv(tmp_path):
    rows = [{"scan_id": "a", "patient_id": "", "study_date": "20200101", "series_time": "", "series_uid": "1.2",
             "status": "ok", "kernel": "", "qc_flags": ""},
            {"scan_id": "b", "patient_id": " ", "study_date": "", "series_uid": "", "status": "failed"},
            {"scan_id": "c", "patient_id": "P7", "study_date": "20200102", "series_time": "10:00:00",
             "series_uid": "1.3", "status": "ok", "kernel": "B40f", "qc_flags": "ZONES_MISSING"}]
    df = atomic_write_table(tmp_path / "scans.csv", rows, SCAN_COLUMNS)
    pq = pd.read_parquet(tmp_path / "scans.parquet")
    csv = pd.read_csv(tmp_path / "scans.csv", dtype=str)
    for frame in (df, pq):
        assert frame["patient_id"].isna().tolist() == [True, True, False]
        assert frame["study_date"].isna().tolist() == [False, True, False]
        assert frame["series_uid"].isna().tolist() == [False, True, False]
        assert frame["kernel"].isna().tolist() == [True, True, False]
        # groupby no longer makes one patient "" of two scans without a PatientID (CSV readers never did)
        assert frame.groupby("patient_id").size().to_dict() == {"P7": 1}
    assert csv["patient_id"].isna().tolist() == [True, True, False]
    # an empty qc_flags says "no flag": it stays an empty string, not missing
    assert df["qc_flags"].tolist()[0] == ""


# --- lesion voxels of enhanced vessels (an audit of contrast-enhanced CT) ---------------------------------------------

def test_lesion_voxels_at_or_above_lesion_max_hu_are_no_lesion():
    import numpy as np

    from pipeline.config import default_config
    from scoring.hu_classes import classify_lesions
    from scoring.systems import density_grade

    bands = default_config()["hu_classes"]
    assert bands["lesion_max_hu"] == 150
    hu = np.array([-800, -600, -400, -100, 40, 120, 149.9, 150, 350, 3000], float)
    cls = classify_lesions(hu, np.ones(hu.shape, bool), bands)
    assert cls.tolist() == [1, 1, 2, 3, 3, 3, 3, 0, 0, 0]
    # a unit of ground glass with an enhanced vessel running through it: ground glass (grade 2), not consolidation
    unit = np.r_[np.full(800, -450.0), np.full(200, 350.0)]
    c = classify_lesions(unit, np.ones(unit.shape, bool), bands)
    assert density_grade({k: float((c == k).sum()) for k in (1, 2, 3)}) == 2
    # without the limit (older configurations, or a very high one) every voxel has a class, as before
    old = {k: v for k, v in bands.items() if k != "lesion_max_hu"}
    assert classify_lesions(hu, np.ones(hu.shape, bool), old).tolist()[-3:] == [3, 3, 3]


def test_lesion_max_hu_below_consolidation_is_refused():
    from pipeline.config import ConfigError, default_config, validate

    cfg = default_config()
    cfg["hu_classes"]["lesion_max_hu"] = -300
    with pytest.raises(ConfigError, match="lesion_max_hu"):
        validate(cfg)


def test_enhanced_vessels_do_not_add_lesion_volume_or_pho():
    """score_scan on the classes: the same lesion mask with its vessel at 40 HU or at 350 HU (contrast) gives the same
    lesion volume, PHO and density; the lung volume is unchanged."""
    import numpy as np

    from pipeline.config import default_config
    from scoring.hu_classes import classify_lesions
    from scoring.quantify import _scan_measures

    cfg = default_config()
    lungs = np.ones((4, 10, 10), np.uint8)
    lungs[:, :, 5:] = 2
    lesion = np.zeros(lungs.shape, bool)
    lesion[:, 2:8, 2:4] = True
    hu = np.full(lungs.shape, -850.0)
    hu[lesion] = -450.0
    vessel = lesion.copy()
    vessel[:, :, 3] = False  # half the lesion is an enhanced vessel
    rows = {}
    for v in (-450.0, 350.0):
        h = hu.copy()
        h[vessel] = v
        classes = classify_lesions(h, lesion, cfg["hu_classes"])
        rows[v] = _scan_measures(h, lungs, classes, 1.0, cfg["hu_classes"]["high_opacity_min_hu"], 1.0)
    assert rows[350.0]["lesion_volume_ml"] == rows[-450.0]["lesion_volume_ml"] / 2
    assert rows[350.0]["percent_high_opacity"] == 0.0
    assert rows[350.0]["consolidation_volume_ml"] == 0.0
    assert rows[350.0]["lung_volume_ml_right"] == rows[-450.0]["lung_volume_ml_right"]
