"""Batch runs, third review: stray files in the output folder under ``ctscore aggregate``, a series whose files change
while it is scored (resume must score it again), and a per-scan time limit too large for the platform's timers.

Series are small generated chests (40 x 64 x 64 on a 3 mm grid, about half a second each).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pipeline.batch import BatchOptions, aggregate
from pipeline.config import load_config
from pipeline.errors import EXIT_USAGE, ConfigError
from pipeline.run import run_pipeline
from tests.scripts_loader import load_script

FAST = ["resample.spacing_mm=[3,3,3]", "outputs.write_qc_png=false", "outputs.write_masks=false"]
TABLES = ("scans.csv", "zones.csv", "failures.csv")


@pytest.fixture(scope="module")
def cfg() -> dict:
    return load_config(overrides=FAST, extra={"segmentation": {"method": "classical"}})


@pytest.fixture(scope="module")
def one_series(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rv3_in")
    load_script("benchmark_batch").write_chest_series(root / "s00", 0)
    return root


@pytest.fixture(scope="module")
def finished(tmp_path_factory, one_series, cfg) -> Path:
    """An output folder of one finished serial run."""
    out = tmp_path_factory.mktemp("rv3_out") / "out"
    summary = run_pipeline(one_series, out, cfg, all_series=True, batch=BatchOptions(progress=False))
    assert summary["n_ok"] == summary["n_series"] >= 1
    return out


def test_aggregate_ignores_stray_files_in_the_output_folder(tmp_path, finished):
    """Files that are not ctscore's in OUT (a note saved as JSON in .status/, another tool's result.json in a
    sub-folder, a foreign run.json) crashed `ctscore aggregate` (AttributeError) or became rows of the tables (a scan
    with no scan_id, ok or failed)."""
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    before = {name: (out / name).read_text() for name in TABLES}
    n_series = json.loads((out / "run.json").read_text())["n_series"]
    (out / ".status" / "notes.json").write_text('{"todo": "check the failures"}')
    (out / ".status" / "list.json").write_text("[1, 2, 3]")
    (out / "notes").mkdir()
    (out / "notes" / "result.json").write_text('{"reader": "A", "score": 12}')
    (out / "other").mkdir()
    (out / "other" / "result.json").write_text("[]")
    (out / "shards" / "old").mkdir(parents=True)
    (out / "shards" / "old" / "run.json").write_text('["not", "a run"]')
    (out / "run.json").write_text('["a foreign run.json"]')

    summary = aggregate(out)
    assert (summary["n_series"], summary["n_failed"]) == (n_series, 0)
    for name in TABLES:
        assert (out / name).read_text() == before[name], name
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["resample"]["spacing_mm"] == [3, 3, 3]  # the scans' own configuration

    from pipeline.cli import main

    assert main(["aggregate", str(out), "-q"]) == 0


def test_a_series_whose_files_change_while_it_is_scored_is_scored_again(tmp_path, one_series, cfg, monkeypatch):
    """The result recorded the input fingerprint taken after scoring: a file rewritten between the read and the end of
    the scan (a transfer still running) made the stale result match the new files, and resume kept it."""
    import pipeline.loading as loading

    root = tmp_path / "in"
    shutil.copytree(one_series, root)
    out = tmp_path / "out"
    real = loading.load_series

    def load_then_change(files, c):
        vol = real(files, c)
        os.utime(sorted(files)[0], ns=(10**18, 10**18))  # the file is replaced once it has been read
        return vol

    monkeypatch.setattr(loading, "load_series", load_then_change)
    first = run_pipeline(root, out, cfg, all_series=True, batch=BatchOptions(progress=False))
    assert first["n_run"] == first["n_ok"] >= 1
    monkeypatch.setattr(loading, "load_series", real)
    again = run_pipeline(root, out, cfg, all_series=True, batch=BatchOptions(progress=False))
    assert again["n_run"] == first["n_run"]  # the files it was made from are not those there now
    third = run_pipeline(root, out, cfg, all_series=True, batch=BatchOptions(progress=False))
    assert third["n_run"] == 0  # and once scored from the files as they are, it is kept


@pytest.mark.parametrize("seconds", [float("inf"), 1e300])
def test_a_timeout_beyond_the_platform_timers_is_refused(tmp_path, one_series, seconds, capsys):
    """`--timeout inf` passed the checks and crashed the run with an OverflowError traceback at the first scan (the
    alarm and the thread join cannot wait that long), after the inventory was written."""
    with pytest.raises(ConfigError, match="timeout"):
        BatchOptions(timeout_s=seconds).validate()
    with pytest.raises(ConfigError, match="timeout"):
        run_pipeline(one_series, tmp_path / "api", batch=BatchOptions(timeout_s=seconds, progress=False))
    assert not (tmp_path / "api").exists()
    from pipeline.cli import main

    out = tmp_path / "cli"
    assert main(["run", str(one_series), "-o", str(out), "--timeout", repr(seconds), "-q", "--segmenter",
                 "classical"] + [a for s in FAST for a in ("--set", s)]) == EXIT_USAGE
    assert "--timeout" in capsys.readouterr().err
    assert not out.exists()
