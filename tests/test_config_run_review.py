"""Review of the configuration, the command line and run folders: values that would silently change the scores,
config files and ``--set`` values that crashed, a full disk, and SIGTERM / Ctrl-C in the middle of a run.

Series are small generated chests (40 x 64 x 64 on a 3 mm grid, about half a second each)."""

from __future__ import annotations

import errno
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pipeline.run as run_mod
from pipeline import cli
from pipeline.batch import BatchOptions
from pipeline.config import load_config
from pipeline.errors import EXIT_USAGE, ConfigError, CTScoreError
from tests.scripts_loader import load_script

REPO = Path(__file__).resolve().parents[1]
FAST = ["resample.spacing_mm=[3,3,3]", "outputs.write_qc_png=false"]


@pytest.fixture(scope="module")
def cfg() -> dict:
    return load_config(overrides=FAST, extra={"segmentation": {"method": "classical"}})


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("review_in")
    bench = load_script("benchmark_batch")
    for i in range(2):
        bench.write_chest_series(root / f"s{i:02d}", i)
    return root


# --- configuration ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("override", [
    "scoring.min_involvement_pct=.nan",      # every zone "not involved": all scores 0, silently
    "hu_classes.high_opacity_min_hu=.nan",   # PHO 0, silently
    "resample.spacing_mm=[.nan,1,1]",
    "resample.spacing_mm=[.inf,1,1]",
    "resample.spacing_mm=null",              # crashed with TypeError
    "hu_classes.ggo=null",                   # crashed with TypeError
    "scoring.min_involvement_ml=",           # an empty value: every scan would fail INTERNAL_ERROR
])
def test_nan_infinite_and_empty_values_are_refused(override):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert override.split("=")[0] in info.value.message


def test_a_section_given_twice_in_a_config_file_is_refused(tmp_path):
    p = tmp_path / "site.yaml"
    p.write_text("scoring:\n  min_involvement_ml: 2.0\nresample:\n  spacing_mm: [2, 2, 2]\n"
                 "scoring:\n  zhang900:\n    mode: zone\n")  # plain YAML keeps only the second scoring:
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert "scoring" in info.value.message and "twice" in info.value.message
    assert info.value.path == str(p)


def test_bad_set_value_and_unreadable_config_file_are_config_errors(tmp_path, series, capsys):
    with pytest.raises(ConfigError, match="resample.spacing_mm"):
        load_config(overrides=["resample.spacing_mm=[2,2"])
    binary = tmp_path / "latin1.yaml"
    binary.write_bytes(b"outputs:\n  pseudonym_salt: caf\xe9\n")
    for bad in (tmp_path, binary):  # a folder; a file that is not UTF-8
        with pytest.raises(ConfigError) as info:
            load_config(bad)
        assert info.value.path == str(bad)
    # the command line: exit 1 with one line, not a traceback
    assert cli.main(["scan", str(series), "--set", "resample.spacing_mm=[2,2"]) == EXIT_USAGE
    assert cli.main(["scan", str(series), "--config", str(tmp_path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("BAD_CONFIG") == 2


# --- a full disk ---------------------------------------------------------------------------------------------


def test_a_full_disk_stops_the_run_and_the_scans_are_scored_on_resume(tmp_path, series, cfg, monkeypatch):
    real = run_mod.atomic_write_bytes

    def full(path, data):
        if path.name == "result.json" or path.name == "run.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    out = tmp_path / "out"
    monkeypatch.setattr(run_mod, "atomic_write_bytes", full)
    monkeypatch.setattr("pipeline.outputs.atomic_write_bytes", full)  # atomic_write_json, the run tables
    with pytest.raises(CTScoreError) as info:
        run_mod.run_pipeline(series, out, cfg, all_series=True, batch=BatchOptions(progress=False))
    assert info.value.code == "OUTPUT_UNWRITABLE" and "No space left" in info.value.message
    assert not list(out.glob("scan-*")) and not list(out.glob(".scan-*.partial"))
    assert not list((out / ".status").glob("*.json"))  # no scan recorded as failed (or as a crash)
    monkeypatch.undo()  # space freed: the same command scores every scan, none is "already done" as failed
    summary = run_mod.run_pipeline(series, out, cfg, all_series=True, batch=BatchOptions(progress=False))
    assert (summary["n_ok"], summary["n_failed"], summary["n_skipped"]) == (2, 0, 0)


def test_run_tables_on_a_full_disk_are_output_unwritable(tmp_path, monkeypatch):
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("pipeline.outputs.atomic_write_bytes", full)
    with pytest.raises(CTScoreError) as info:
        run_mod.write_run_tables(tmp_path, [], None, {"name": "classical", "model_id": "x"}, 1.0)
    assert info.value.code == "OUTPUT_UNWRITABLE"


def test_a_mask_that_simpleitk_could_not_write_completely_is_an_output_error(tmp_path, monkeypatch):
    """SimpleITK reports no error when the disk fills up under a .nii.gz: it leaves a truncated file."""
    import numpy as np
    import SimpleITK as sitk

    real = sitk.WriteImage

    def truncated(img, path, useCompression=False):
        real(img, path, useCompression=useCompression)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])

    monkeypatch.setattr(run_mod.sitk, "WriteImage", truncated)
    arr = np.zeros((20, 32, 32), np.uint8)
    arr[5:15, 8:24, 8:24] = 1
    ref = sitk.GetImageFromArray(arr)
    with pytest.raises(OSError, match="not written completely"):
        run_mod._write_mask(arr, ref, ref, tmp_path / "lungs.nii.gz")
    monkeypatch.undo()
    run_mod._write_mask(arr, ref, ref, tmp_path / "ok.nii.gz")  # a complete file passes
    with gzip.open(tmp_path / "ok.nii.gz") as fh:
        assert len(fh.read()) > arr.size


# --- SIGTERM and Ctrl-C ------------------------------------------------------------------------------------------


def test_sigterm_during_a_scan_leaves_no_crash_record(tmp_path, series):
    """SIGTERM (kill, scancel, a wall-time limit) is a stop, like Ctrl-C, not a crash of the scan: twice in the same
    scan used to record it as WORKER_DIED, never scored again on resume."""
    out = tmp_path / "out"
    env = {**os.environ, "CTSCORE_TEST_HOOKS": json.dumps({"sleep": {"*": 30}})}
    cmd = [sys.executable, "-m", "pipeline", "run", str(series), "-o", str(out), "--all-series", "-q",
           "--segmenter", "classical"] + [a for s in FAST for a in ("--set", s)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(out.glob(".status/*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped (SIGTERM)" in err and "Traceback" not in err
    assert not list((out / ".status").glob("*.json"))  # no "started" record counted as a death on resume
    assert not list(out.glob(".scan-*.partial"))


def test_ctrl_c_exits_130_with_one_line(tmp_path, series, monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.run.run_pipeline", interrupted)
    try:
        rc = cli.main(["run", str(series), "-o", str(tmp_path / "o"), "--segmenter", "classical"])
    except KeyboardInterrupt:  # before: a traceback
        rc = None
    assert rc == 130
    err = capsys.readouterr().err
    assert "stopped (SIGINT)" in err and "resume" in err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
