"""Landmark levels set by a reader (``ctscore run --landmarks CSV``, ``landmarks.reader_levels``): the table is read
strictly, its levels replace ctscore's and what rests on them follows, levels out of order fail the series, and a
series whose row changes is scored again on resume while the others are kept."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from pipeline.errors import CTScoreError
from scoring.landmarks import CALIBRATION, Landmark, apply_reader_levels, reader_flags
from tests.conftest import SAMPLE

# the unchanged sample is segmented once per test process (tests/conftest.py: classical_memo)
pytestmark = pytest.mark.usefixtures("classical_memo")


def _detected() -> dict[str, Landmark]:
    """ctscore's levels of a normal chest (the sample's, rounded)."""
    lm = {name: Landmark(name, z, "detected", "high", "") for name, z in (
        ("apex_right", 95.5), ("apex_left", 92.5), ("base_right", -155.0), ("base_left", -155.0),
        ("dome_right", -107.8), ("dome_left", -127.3), ("carina", 1.0), ("rul_takeoff", -6.5),
        ("suprasternal_notch", 67.0))}
    for name, key in (("bronchus_intermedius", "bronchus_intermedius_from_carina_mm"),
                      ("aortic_arch", "aortic_arch_from_carina_mm")):
        lm[name] = Landmark(name, 1.0 + CALIBRATION[key], "estimated", "medium", "")
    for name in ("ipv_right", "ipv_left", "ipv"):
        lm[name] = Landmark(name, -65.0, "estimated", "low", "")
    return lm


def test_a_readers_carina_moves_the_levels_placed_from_it():
    lm = _detected()
    assert apply_reader_levels(lm, {"carina": -20.0}, "levels.csv line 2") == []
    assert (lm["carina"].z_mm, lm["carina"].method, lm["carina"].note) == (-20.0, "reader",
                                                                           "set by a reader (levels.csv line 2)")
    assert lm["bronchus_intermedius"].z_mm == pytest.approx(-20.0 - 20.7)
    assert lm["aortic_arch"].z_mm == pytest.approx(-20.0 + 26.3)
    assert lm["aortic_arch"].note.startswith("reader's carina +26.3 mm")
    # the IPV from the reader's carina and the domes; 87 mm above the domes' mean: the mean of the two estimates
    mean_dome = (-107.8 - 127.3) / 2
    expected = 0.5 * (-20.0 - 0.64 * (-20.0 - mean_dome)) + 0.5 * (-20.0 - 56.7)
    assert lm["ipv"].z_mm == pytest.approx(expected)
    # a detected notch 87 mm above the reader's carina is kept; the take-off, now above that carina, is dropped
    assert (lm["suprasternal_notch"].z_mm, lm["suprasternal_notch"].method) == (67.0, "detected")
    assert lm["rul_takeoff"].method == "missing" and "reader's carina" in lm["rul_takeoff"].note
    assert reader_flags(lm) == ["LANDMARK_BY_READER:carina"]
    # what the reader's carina moved keeps ctscore's own level beside it, and says so (landmarks.csv shows both)
    assert (lm["ipv"].ctscore_z_mm, lm["ipv"].ctscore_method) == (-65.0, "estimated")
    assert lm["ipv"].note.endswith("placed again from the reader's levels")
    assert lm["ipv"].to_dict()["ctscore_z_mm"] == -65.0 and "ctscore_z_mm" not in lm["suprasternal_notch"].to_dict()
    assert lm["aortic_arch"].ctscore_method is not None and "placed again" not in lm["aortic_arch"].note


def test_a_detected_notch_implausible_for_the_readers_carina_is_estimated_from_it():
    lm = _detected()
    assert apply_reader_levels(lm, {"carina": -40.0}) == []  # the notch found 107 mm above it
    assert (lm["suprasternal_notch"].z_mm, lm["suprasternal_notch"].method) == (-40.0 + 64.0, "estimated")
    assert "not 30-90 mm above the reader's carina" in lm["suprasternal_notch"].note
    # a notch missing because the manubrium reaches the top of the scan stays missing
    lm = _detected()
    lm["suprasternal_notch"] = Landmark("suprasternal_notch", None, "missing", "low",
                                        "manubrium reaches the top of the scan")
    apply_reader_levels(lm, {"carina": 5.0})
    assert lm["suprasternal_notch"].z_mm is None


def test_domes_follow_the_reader():
    lm = _detected()
    lm["dome_left"] = Landmark("dome_left", -130.8, "estimated", "low", "dome_right -23 mm (dome_left not found)")
    assert apply_reader_levels(lm, {"dome_right": -95.0}) == []
    assert lm["dome_left"].z_mm == pytest.approx(-95.0 - 23.0)
    assert lm["dome_left"].method == "estimated" and "(reader)" in lm["dome_left"].note
    # a detected dome is the detector's: kept
    lm = _detected()
    apply_reader_levels(lm, {"dome_right": -95.0})
    assert (lm["dome_left"].z_mm, lm["dome_left"].method) == (-127.3, "detected")
    # a dome at or above the reader's carina is not a dome: missing, and the IPV rests on the other
    lm = _detected()
    apply_reader_levels(lm, {"carina": -100.0, "ipv": -105.0})
    assert lm["dome_right"].z_mm is None and "placed by the reader" in lm["dome_right"].note
    assert lm["dome_left"].z_mm == -127.3


def test_levels_out_of_order_are_problems_and_bad_names_are_refused():
    lm = _detected()
    problems = apply_reader_levels(lm, {"dome_right": 10.0})  # above the bronchus intermedius (detected carina)
    assert problems == ["bronchus_intermedius (-19.7 mm, estimated) is not above dome_right (10.0 mm, reader)"]
    assert apply_reader_levels(_detected(), {"ipv": 5.0}) == [
        "carina (1.0 mm, detected) is not above ipv (5.0 mm, reader)"]
    with pytest.raises(ValueError, match="levels a reader cannot set: apex_right"):
        apply_reader_levels(_detected(), {"apex_right": 90.0})
    with pytest.raises(ValueError, match="carina: 'x' is not a z in mm"):
        apply_reader_levels(_detected(), {"carina": "x"})


@pytest.mark.parametrize(("text", "message"), [
    ("scan_id,apex_right\nscan-a,3\n", "unknown column\\(s\\) 'apex_right' .*apices and bases are the ends of the lung"),
    ("scan_id,carnia\nscan-a,3\n", "unknown column\\(s\\) 'carnia'"),
    ("patient,carina\np1,3\n", "no scan_id or series_uid column"),
    ("scan_id,note\nscan-a,x\n", "no level column"),
    ("scan_id,carina\nscan-a,3\nscan-b,1 mm\n", "line 3, column 'carina' .*'1 mm' is not a patient z in mm"),
    ("scan_id,carina\nscan-a,3\nscan-a,4\n", "scan_id scan-a is on lines 2 and 3 .*keep one row per series"),
    ("scan_id,carina,ipv\nscan-a,3,10\n", "line 2 .*carina \\(3 mm\\) is not above ipv \\(10 mm\\)"),
    ("scan_id,series_uid,carina\n,,3\n", "line 2 .*names no series"),
    ("scan_id;carina\nscan-a;3\n", "separated by semicolons"),
])
def test_a_table_that_cannot_be_used_is_refused_naming_the_line(tmp_path, text, message):
    from pipeline.reader_levels import read_reader_levels

    path = tmp_path / "levels.csv"
    path.write_text(text)
    with pytest.raises(CTScoreError, match=message) as err:
        read_reader_levels(path)
    assert err.value.code == "READER_LEVELS_INVALID" and str(path) in str(err.value.path)


def test_the_table_is_read_as_spreadsheets_write_it(tmp_path):
    from types import SimpleNamespace

    from pipeline.reader_levels import check_against_run, levels_fingerprint, read_reader_levels

    path = tmp_path / "levels.csv"
    path.write_bytes("\ufeffScan_ID, Carina ,dome_right,Reader,Note\r\nscan-a,-3.5,,AB,tracheal bronchus\r\n"
                     ",,,,\r\nscan-b,,,AB,nothing to change\r\n1.2.3,,,,\r\n".replace("1.2.3", "scan-c").encode())
    table = read_reader_levels(path)
    assert table.levels_for("scan-a", "9.9") == ({"carina": -3.5}, "levels.csv line 2")
    assert table.levels_for("scan-b", "") == ({}, "")  # a row with no level is for the records
    assert levels_fingerprint("f" * 64, {}) == "f" * 64  # a series without levels keeps its fingerprint
    assert levels_fingerprint("f" * 64, {"carina": -3.5}) != levels_fingerprint("f" * 64, {"carina": -3.0})
    # a scan_id row is used over a series_uid row (a stack of --all-series over its series), and said at the start
    path.write_text("scan_id,series_uid,carina\nscan-a,,1\n,1.2.3,2\nscan-z,,5\n")
    table = read_reader_levels(path)
    assert table.levels_for("scan-a", "1.2.3") == ({"carina": 1.0}, "levels.csv line 2")
    assert table.levels_for("scan-b", "1.2.3") == ({"carina": 2.0}, "levels.csv line 3")
    tasks = [SimpleNamespace(scan_id="scan-a", series_uid="1.2.3"), SimpleNamespace(scan_id="scan-b",
                                                                                      series_uid="1.2.3")]
    said = check_against_run(table, tasks)
    assert said[0].startswith("1 series have levels on two rows") and "scan-a: line 2 over line 3" in said[0]
    assert said[1].startswith("1 of the 3 rows") and "scan-z" in said[1]
    # a row whose scan_id is another series than its series_uid: whose levels? refused (one patient's levels were
    # given to two)
    path.write_text("scan_id,series_uid,carina\nscan-a,9.9.9,1\n")
    with pytest.raises(CTScoreError, match="line 2 .*scan_id scan-a is series 1.2.3, not series_uid 9.9.9"):
        check_against_run(read_reader_levels(path), tasks)
    path.write_text("scan_id,series_uid,carina\nscan-a,1.2.3,1\n")
    assert check_against_run(read_reader_levels(path), tasks) == []


def test_the_table_is_no_setting_of_the_configuration(tmp_path):
    from pipeline.config import ConfigError, config_hash, load_config, scores_config_hash

    path = tmp_path / "levels.csv"
    path.write_text("scan_id,carina\nscan-a,1\n")
    plain = load_config()
    given = load_config(extra={"landmarks": {"reader_levels": str(path)}})
    assert given["landmarks"]["reader_levels"] == str(path.resolve())
    # series without a row score as without the table: nothing is scored again for giving it
    assert (config_hash(given), scores_config_hash(given)) == (config_hash(plain), scores_config_hash(plain))
    with pytest.raises(ConfigError, match="landmarks.reader_levels: no such file"):
        load_config(extra={"landmarks": {"reader_levels": str(tmp_path / "nope.csv")}})
    assert load_config(extra={"landmarks": {"reader_levels": ""}})["landmarks"]["reader_levels"] is None


def test_a_run_uses_the_readers_levels_and_scores_only_their_series_again(sample_run, tmp_path):
    """The sample's IPV is estimated at -65 mm; the phantom's own is -79.2 mm (its ground truth). A reader's row
    moves it there: that series is scored again with the reader's level (flag, method, note, levels.png), the table
    given again scores nothing, and a row naming no series of the run is warned about."""
    from pipeline.config import load_config
    from pipeline.run import run_pipeline

    out = tmp_path / "out"
    shutil.copytree(sample_run, out)
    scan_id = pd.read_csv(out / "scans.csv")["scan_id"][0]
    levels = tmp_path / "levels.csv"
    levels.write_text(f"scan_id,ipv,note\n{scan_id},-79.2,phantom truth\nscan-000000000000,-50,another run\n")
    cfg = load_config(extra={"segmentation": {"method": "classical"}, "outputs": {"write_dicom_seg": True},
                             "landmarks": {"reader_levels": str(levels)}})
    summary = run_pipeline(SAMPLE, out, cfg)
    assert (summary["n_run"], summary["n_ok"]) == (1, 1)
    assert any("1 of the 2 rows of the reader's level table" in w and "scan-000000000000" in w
               for w in summary["warnings"])
    result = json.loads((out / scan_id / "result.json").read_text())
    ipv = result["landmarks"]["ipv"]
    assert (ipv["z_mm"], ipv["method"], ipv["confidence"], ipv["note"]) == (-79.2, "reader", "high",
                                                                           "set by a reader")  # no file name
    assert "levels.csv" not in json.dumps(result["landmarks"])  # result.json and landmarks.csv are shared
    assert (round(ipv["ctscore_z_mm"], 1), ipv["ctscore_method"]) == (-65.3, "estimated")  # what it replaced
    assert "ctscore_z_mm" not in result["landmarks"]["carina"]
    assert result["landmarks"]["ipv_right"]["z_mm"] is None  # the sides' estimates would contradict the reader
    assert "LANDMARK_BY_READER:ipv" in result["qc_flags"]
    assert "LANDMARK_BY_READER:ipv" in summary["scans"]["qc_flags"][0]
    table = pd.read_parquet(out / "landmarks.parquet").set_index("landmark")  # the run's table
    assert (table.loc["ipv", "z_mm"], table.loc["ipv", "method"], table.loc["ipv", "ctscore_z_mm"],
            table.loc["ipv", "ctscore_method"]) == (-79.2, "reader", -65.27, "estimated")
    assert pd.isna(table.loc["carina", "ctscore_z_mm"]) and table.loc["ipv_right", "method"] == "missing"
    from pipeline.methods import methods_text

    text = methods_text(out)
    assert "In 1 scan, landmark levels were set by a reader instead of the automated detection (ipv (1))" in text
    # how far the reader moved it: landmark error in mm, measured on the cohort itself (SCORING.md)
    assert "the levels placed from them followed (distance from the automated level: ipv 13.9 mm)." in text
    zones = pd.read_csv(out / "zones.csv")
    before = pd.read_csv(sample_run / "zones.csv")
    lower = (zones["system"] == "six_zone") & (zones["unit"] == "lower")
    assert (zones[lower]["lung_ml"].to_numpy() < before[lower]["lung_ml"].to_numpy()).all()  # the split moved down
    # given again, unchanged: nothing is scored; the same run without the row's level: scored again
    assert run_pipeline(SAMPLE, out, cfg)["n_run"] == 0
    levels.write_text(f"scan_id,ipv\n{scan_id},\n")
    again = run_pipeline(SAMPLE, out, cfg)
    assert again["n_run"] == 1
    assert any("scored again WITHOUT the reader's levels" in w for w in again["warnings"])
    assert not any("input files changed" in w for w in again["warnings"])
    result = json.loads((out / scan_id / "result.json").read_text())
    assert result["landmarks"]["ipv"]["method"] == "estimated"
    assert result["input_fingerprint"] == json.loads((sample_run / scan_id / "result.json").read_text())[
        "input_fingerprint"]


def test_levels_out_of_order_with_ctscores_or_outside_the_scan_fail_the_series(sample_classical):
    from pipeline.errors import SeriesError
    from pipeline.run import analyse_volume

    image, cfg, seg = sample_classical
    with pytest.raises(SeriesError, match="levels.csv line 4 and ctscore's do not follow each other: "
                                          "bronchus_intermedius .* is not above dome_right \\(10.0 mm, reader\\)") as e:
        analyse_volume(image, cfg, seg, reader_levels={"dome_right": 10.0}, reader_source="levels.csv line 4")
    assert e.value.code == "LANDMARKS_OUT_OF_ORDER"
    # the sample spans z -188.8 to 118.8 mm: a carina at 500 (a slice number?) is no level of it
    with pytest.raises(SeriesError, match="levels.csv line 2: carina 500 mm lies outside this series \\(patient z "
                                          "-188.8 to 118.8 mm\\)") as e:
        analyse_volume(image, cfg, seg, reader_levels={"carina": 500.0}, reader_source="levels.csv line 2")
    assert e.value.code == "READER_LEVELS_INVALID"


def test_a_reader_level_far_from_a_detected_one_is_flagged():
    lm = _detected()
    apply_reader_levels(lm, {"carina": -45.0, "ipv": -100.0})
    # 46 mm from the detected carina: flagged; the IPV was an estimate (replaced at any distance without a flag)
    assert reader_flags(lm) == ["LANDMARK_BY_READER:carina", "LANDMARK_READER_FAR:carina:46",
                                "LANDMARK_BY_READER:ipv"]
    assert lm["carina"].to_dict()["ctscore_z_mm"] == 1.0 and lm["carina"].to_dict()["ctscore_method"] == "detected"
    lm = _detected()
    apply_reader_levels(lm, {"carina": -25.0})
    assert reader_flags(lm) == ["LANDMARK_BY_READER:carina"]


def test_a_readers_domes_move_the_ipv():
    from scoring.landmarks import estimate_ipv

    lm = _detected()
    assert apply_reader_levels(lm, {"dome_right": -185.0, "dome_left": -186.0}) == []
    assert lm["ipv"].z_mm == pytest.approx(estimate_ipv("ipv", 1.0, -185.5).z_mm)  # -87.0, not ctscore's -65
    assert lm["ipv"].z_mm == pytest.approx(-87.03, abs=0.01)
    lm = _detected()
    apply_reader_levels(lm, {"dome_right": -150.0})  # one dome: the mean with ctscore's other
    assert lm["ipv"].z_mm == pytest.approx(estimate_ipv("ipv", 1.0, (-150.0 - 127.3) / 2).z_mm)


def test_a_dome_dropped_by_a_readers_bronchus_intermedius_moves_the_ipv():
    lm = _detected()
    assert apply_reader_levels(lm, {"bronchus_intermedius": -115.0}) == []
    assert lm["dome_right"].z_mm is None  # -107.8, above the reader's bronchus intermedius
    expected = 0.5 * (1.0 - 0.64 * (1.0 + 127.3)) + 0.5 * (1.0 - 56.7)  # from the left dome alone
    assert lm["ipv"].z_mm == pytest.approx(expected)


def test_the_cli_option_is_the_config_key(tmp_path, monkeypatch):
    from pipeline import cli
    from pipeline import run as run_module

    seen = {}

    def fake(input_path, out_dir, cfg, **kw):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(run_module, "run_pipeline", fake)
    path = tmp_path / "levels.csv"
    path.write_text("scan_id,carina\nscan-a,1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        cli.main(["run", str(tmp_path), "-o", str(tmp_path / "o"), "--landmarks", "levels.csv"])
    assert seen["cfg"]["landmarks"]["reader_levels"] == str(path.resolve())
