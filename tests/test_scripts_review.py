"""Review of scripts/: clear errors on bad input, atomic outputs that other tools read, the series a script reads."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.scripts_loader import load_script

REPO = Path(__file__).resolve().parents[1]


def _hardlink_watch(path: Path) -> Path:
    """A hard link to the existing ``path``: an in-place rewrite changes it too, a rename into place does not."""
    watch = path.with_name(path.name + ".watch")
    os.link(path, watch)
    return watch


# --- benchmark.py --------------------------------------------------------------------------------------------


def test_benchmark_missing_series_is_a_clear_error(tmp_path, capsys):
    assert load_script("benchmark").main([str(tmp_path / "missing"), "--segmenter", "classical"]) == 2
    assert "INPUT_NOT_FOUND" in capsys.readouterr().err


def test_benchmark_zero_runs_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        load_script("benchmark").main([str(REPO / "sample_dicoms"), "--runs", "0", "--segmenter", "classical"])
    assert e.value.code == 2 and "--runs" in capsys.readouterr().err


# --- benchmark_batch.py --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [["--configs", "1y1"], ["--configs", "0x1"], ["--series", "0"], ["--repeats", "0"]])
def test_benchmark_batch_bad_options_are_refused_by_the_parser(bad, capsys):
    with pytest.raises(SystemExit) as e:
        load_script("benchmark_batch").main(bad)
    assert e.value.code == 2 and bad[0] in capsys.readouterr().err


def test_benchmark_batch_prints_the_machine_s_load_and_threads(tmp_path, monkeypatch, capsys):
    """Times on a busy 2-core machine swung 4x with torch's default threads (a performance audit): the figures come
    with the cores, the load average and torch's thread count."""
    bench = load_script("benchmark_batch")
    monkeypatch.setattr(bench, "time_config", lambda input_dir, w, t, cfg, n: 6.0 / w)
    monkeypatch.setattr(bench, "write_chest_series", lambda *a, **k: "")
    assert bench.main(["--series", "1", "--configs", "1x1"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("machine: ") and "load average" in first and "torch threads" in first


def test_benchmark_batch_json_is_written_atomically(tmp_path, monkeypatch):
    bench = load_script("benchmark_batch")
    monkeypatch.setattr(bench, "time_config", lambda input_dir, w, t, cfg, n: 6.0 / w)
    monkeypatch.setattr(bench, "write_chest_series", lambda *a, **k: "")
    out = tmp_path / "bench.json"
    out.write_text("old")
    watch = _hardlink_watch(out)
    assert bench.main(["--series", "2", "--configs", "1x1", "2X1", "--json", str(out)]) == 0
    assert watch.read_text() == "old"  # the old file was replaced, not rewritten in place
    figures = json.loads(out.read_text())["figures"]
    assert [f["config"] for f in figures] == ["1x1", "2x1"] and [f["speedup"] for f in figures] == [1.0, 2.0]


# --- compare_segmenters.py -----------------------------------------------------------------------------------


def test_compare_segmenters_missing_series_is_a_clear_error(tmp_path, capsys):
    rc = load_script("compare_segmenters").main([str(tmp_path / "missing"), "--a", "classical", "--b", "classical"])
    assert rc == 2 and "INPUT_NOT_FOUND" in capsys.readouterr().err


def test_compare_segmenters_missing_weights_is_a_clear_error(tmp_path, capsys):
    rc = load_script("compare_segmenters").main([str(REPO / "sample_dicoms"), "--a", str(tmp_path / "nope"),
                                                 "--b", "classical"])
    assert rc == 2 and "BAD_MODEL" in capsys.readouterr().err


# --- fov_truncation.py ---------------------------------------------------------------------------------------


def test_fov_truncation_reads_only_the_selected_series(tmp_path, monkeypatch, capsys):
    """A series folder with a non-DICOM file (sample_dicoms/ has ground_truth.json) must not be loaded whole."""
    import pipeline.loading
    from pipeline.errors import CTScoreError

    load_script("benchmark_batch").write_chest_series(tmp_path, 0, shape=(12, 32, 32))
    (tmp_path / "notes.txt").write_text("reader notes\n")
    seen: list[list[str]] = []

    def fake_load(files, cfg):
        seen.append(list(files))
        raise CTScoreError("STOP", "stop after the file list")

    monkeypatch.setattr(pipeline.loading, "load_series", fake_load)
    assert load_script("fov_truncation").main([str(tmp_path), "--segmenter", "classical"]) == 2
    assert "STOP" in capsys.readouterr().err
    assert len(seen[0]) == 12 and all(f.endswith(".dcm") for f in seen[0])


def test_fov_truncation_missing_series_is_a_clear_error(tmp_path, capsys):
    assert load_script("fov_truncation").main([str(tmp_path / "missing"), "--segmenter", "classical"]) == 2
    assert "INPUT_NOT_FOUND" in capsys.readouterr().err


# --- make_reference_from_phantom.py --------------------------------------------------------------------------


def test_make_reference_csv_is_written_atomically(tmp_path):
    out = tmp_path / "readers.csv"
    out.write_text("old")
    watch = _hardlink_watch(out)
    assert load_script("make_reference_from_phantom").main(["-o", str(out), "--seed", "0"]) == 0
    assert watch.read_text() == "old"
    assert out.read_text().startswith("series_uid,scan_id,system,unit,reader,value\n")


@pytest.mark.parametrize("bad", [["--flip-prob", "2"], ["--flip-prob", "nan"], ["--readers", "-1"],
                                 ["--percent-sd", "-1"]])
def test_make_reference_out_of_range_options_are_refused(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as e:
        load_script("make_reference_from_phantom").main(["-o", str(tmp_path / "r.csv"), *bad])
    assert e.value.code == 2 and bad[0] in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()


def test_make_reference_unreadable_truth_is_a_clear_error(tmp_path, capsys):
    truth = tmp_path / "truth.json"
    truth.write_text("not json")
    rc = load_script("make_reference_from_phantom").main(["--truth", str(truth), "-o", str(tmp_path / "r.csv")])
    assert rc == 1 and "not a readable ground-truth JSON" in capsys.readouterr().err


# --- make_sample_dicoms.py -----------------------------------------------------------------------------------


def test_make_sample_ground_truth_is_written_atomically(tmp_path):
    gt = tmp_path / "ground_truth.json"
    gt.write_text("old")
    watch = _hardlink_watch(gt)
    ms = load_script("make_sample_dicoms")
    assert ms.main(["--out", str(tmp_path), "--shape", "16", "32", "32", "--no-compress"]) == 0
    assert watch.read_text() == "old"
    assert "scores" in json.loads(gt.read_text())


@pytest.mark.parametrize("bad", [["--shape", "0", "32", "32"], ["--spacing", "0", "1", "1"],
                                 ["--spacing", "inf", "1", "1"]])
def test_make_sample_bad_geometry_is_refused_before_writing(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as e:
        load_script("make_sample_dicoms").main(["--out", str(tmp_path / "s"), *bad])
    assert e.value.code == 2 and bad[0] in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_make_sample_out_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit) as e:
        load_script("make_sample_dicoms").main(["--out", str(f)])
    assert e.value.code == 2 and "not a folder" in capsys.readouterr().err


# --- simulate_cohort.py / fuzz_loader.py ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [["--survivors", "0"], ["--non-survivors", "-1"],
                                 ["--survivors", "1", "--non-survivors", "0"]])
def test_simulate_cohort_impossible_sizes_are_refused(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as e:
        load_script("simulate_cohort").main(["-o", str(tmp_path / "sim"), *bad])
    assert e.value.code == 2 and "--survivors" in capsys.readouterr().err


def test_fuzz_loader_zero_cases_is_refused(monkeypatch, capsys):
    import subprocess

    monkeypatch.setattr(sys, "argv", ["fuzz_loader.py", "--cases", "0"])
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("pytest started with 0 cases"))
    with pytest.raises(SystemExit) as e:
        load_script("fuzz_loader").main()
    assert e.value.code == 2 and "--cases" in capsys.readouterr().err


# --- landmark_accuracy.py, simulate.write_cohort -------------------------------------------------------------


def test_landmark_accuracy_missing_reference_and_unknown_scans_are_clear_errors(tmp_path, capsys):
    """A missing reference CSV gave a FileNotFoundError traceback; --scans naming no reference scan printed an empty
    table as if all was well."""
    la = load_script("landmark_accuracy")
    with pytest.raises(SystemExit) as e:
        la.main(["--reference", str(tmp_path / "none.csv")])
    assert e.value.code == 2 and "reference CSV not found" in capsys.readouterr().err
    ref = tmp_path / "ref.csv"
    ref.write_text("scan,landmark,z_mm,confidence,note\nscanA,carina_z,-120.5,high,\n")
    with pytest.raises(SystemExit) as e:
        la.main(["--reference", str(ref), "--scans", "scanB"])
    assert e.value.code == 2 and "not in the reference: scanB" in capsys.readouterr().err


def test_landmark_cache_is_keyed_by_the_working_spacing_and_written_atomically(tmp_path, monkeypatch):
    """The cache was one <scan>.npz whatever the working grid (a changed resample.spacing_mm reused stale arrays),
    written in place (a killed run left a partial file that later runs loaded)."""
    import numpy as np

    la = load_script("landmark_accuracy")
    arrays = {"hu": np.zeros((2, 3, 3), np.int16), "z_mm": np.arange(2.0)}
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "scanA.npz").write_bytes(b"partial")  # an old-style (or half-written) cache is not read
    np.savez_compressed(cache / "scanA_1.5x1.5x1.5.npz", **arrays)
    got = la.working_arrays(tmp_path / "scanA", cache)
    assert np.array_equal(got["z_mm"], arrays["z_mm"])


def test_simulated_cohort_tables_are_written_atomically(tmp_path):
    from scoring.stats.simulate import write_cohort

    first = write_cohort(tmp_path, seed=0, n_survivors=3, n_nonsurvivors=2)
    watch = _hardlink_watch(first["clinical"])
    write_cohort(tmp_path, seed=1, n_survivors=3, n_nonsurvivors=2)
    assert watch.read_bytes() != first["clinical"].read_bytes()  # replaced, not rewritten in place


def test_benchmark_on_a_generated_series(capsys):
    """--generated NZ benchmarks a generated 512 x 512 x NZ chest (the large-series memory figure of the README);
    the other options are kept."""
    assert load_script("benchmark").main(["--generated", "40", "--runs", "1", "--segmenter", "classical"]) == 0
    out = capsys.readouterr().out
    assert "(40 files)" in out and "runs: 1" in out and "peak RSS" in out


def test_benchmark_reads_the_load_average_before_it_runs(monkeypatch, capsys):
    """The machine line's load average is the one before the benchmark (the runs' own load would inflate it)."""
    import types

    import pipeline.run
    import tests.scripts_loader

    order = []
    real = pipeline.run.process_series
    monkeypatch.setattr(pipeline.run, "process_series", lambda *a, **k: order.append("run") or real(*a, **k))
    monkeypatch.setattr(tests.scripts_loader, "load_script", lambda name: types.SimpleNamespace(
        machine_line=lambda: order.append("machine") or "machine: load average 0.1/0.1/0.1"))
    assert load_script("benchmark").main(["--generated", "40", "--runs", "2", "--segmenter", "classical"]) == 0
    assert order == ["machine", "run", "run"]
    assert "machine: load average 0.1/0.1/0.1" in capsys.readouterr().out
