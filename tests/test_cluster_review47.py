"""Cluster path audit, 2026-12-07 (F1-F5): ``ctscore aggregate`` after a run or a resubmitted shard was stopped
mid-way, shards of an input that grew between array tasks, GPUs per SLURM job and worker processes, scans per worker
thread, and the model-check future held for the whole run.

The runs are serial or on a LocalCluster of one worker over three small generated series, classical segmenter; a
run "killed at its wall time" is the ``crash`` test hook (SIGKILL of the process scoring the scan: with the serial
executor, the driver itself).
"""

# ruff: noqa: F811 - the cfg fixture imported from tests.test_batch is a test argument

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.batch import (
    RUN_SCANS,
    TEST_HOOKS_ENV,
    BatchOptions,
    aggregate,
    input_scans_digest,
    load_slurm_profile,
    slurm_cluster_kwargs,
)
from pipeline.errors import EXIT_USAGE, ConfigError, CTScoreError
from pipeline.outputs import TABLES_PENDING, scan_id_for
from pipeline.run import run_pipeline
from tests.scripts_loader import load_script
from tests.test_batch import cfg  # noqa: F401 - the same module-scoped classical config fixture

REPO = Path(__file__).resolve().parents[1]
N_SERIES = 3
CLI_CFG = ["--segmenter", "classical", "--set", "resample.spacing_mm=[3,3,3]", "--set", "outputs.write_qc_png=false",
           "--set", "outputs.write_masks=false"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, cfg) -> tuple[Path, list[str]]:
    """N_SERIES small generated chest series; returns the folder and their scan ids, sorted (the order of a run)."""
    root = tmp_path_factory.mktemp("review47_in")
    bench = load_script("benchmark_batch")
    uids = [bench.write_chest_series(root / f"s{i:02d}", i) for i in range(N_SERIES)]
    return root, sorted(scan_id_for(u, cfg["outputs"]["pseudonym_salt"]) for u in uids)


def _killed_run(root: Path, out: Path, crash: str, *extra: str) -> None:
    """``ctscore run`` (serial) killed with SIGKILL when it begins to score ``crash``: a wall-time kill mid-scan."""
    env = {**os.environ, TEST_HOOKS_ENV: json.dumps({"crash": [crash]})}
    proc = subprocess.run([sys.executable, "-m", "pipeline", "run", str(root), "-o", str(out), "--all-series", "-q",
                           "--executor", "serial", *CLI_CFG, *extra], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr  # SIGKILL


def _refusal(call) -> CTScoreError:
    with pytest.raises(CTScoreError) as exc:
        call()
    return exc.value


# --------------------------------------------------------------------------------------------------
# F1 aggregate after an interrupted run


def test_aggregate_after_a_killed_run_refuses_and_names_the_series_without_an_outcome(tmp_path, inputs, capsys):
    """Before: following the stop message, ``ctscore aggregate OUT`` exited 0 with "1 of 1 series scored", the scan
    under way and the one not yet started in no table, and removed tables.pending (share, stats, validate then read
    the tables). Now SCANS_UNFINISHED names both and says to resume; the mark stays."""
    from pipeline.cli import main

    root, ids = inputs
    out = tmp_path / "out"
    _killed_run(root, out, crash=ids[1])  # ids[0] scored, ids[1] under way, ids[2] never started
    assert json.loads((out / ".status" / f"{ids[1]}.json").read_text())["status"] == "started"
    assert (out / RUN_SCANS).read_text().split() == ids  # the whole input, written before scoring
    err = _refusal(lambda: aggregate(out))
    assert err.code == "SCANS_UNFINISHED"
    assert f"being scored when their run stopped (a started record in .status/ and no result: {ids[1]})" in err.message
    assert f"1 were never started ({ids[2]})" in err.message
    assert "run the same `ctscore run` command again to resume" in err.message and "--allow-unfinished" in err.message
    assert (out / TABLES_PENDING).is_file() and not (out / "scans.csv").exists()
    assert main(["aggregate", str(out), "-q"]) == EXIT_USAGE
    assert "ctscore: error: SCANS_UNFINISHED: " in capsys.readouterr().err

    # written anyway when asked for: run.json names them; the tables are no longer marked (what was asked for)
    assert main(["aggregate", str(out), "-q", "--allow-unfinished"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["unfinished_scans"] == ids[1:] and run["n_series"] == 1
    assert "merged anyway: run.json lists them under unfinished_scans" in capsys.readouterr().err

    # the resume the message asks for scores them; aggregate is then content
    summary = run_pipeline(root, out, _cli_cfg(), all_series=True, batch=BatchOptions(progress=False))
    assert summary["n_ok"] == N_SERIES
    assert aggregate(out)["n_series"] == N_SERIES
    run = json.loads((out / "run.json").read_text())
    assert "unfinished_scans" not in run and run["input_scans"] == input_scans_digest(ids)


def _cli_cfg() -> dict:
    from pipeline.config import load_config

    return load_config(overrides=["resample.spacing_mm=[3,3,3]"],
                       extra={"segmentation": {"method": "classical"},
                              "outputs": {"write_qc_png": False, "write_masks": False}})


def _shards(root: Path, out: Path, cfg: dict, n: int, *ks: int) -> None:
    for k in ks or range(n):
        run_pipeline(root, out, cfg, all_series=True, batch=BatchOptions(shard_index=k, num_shards=n, progress=False))


def test_a_resubmitted_shard_killed_mid_scan_is_missing_and_its_scan_unfinished(tmp_path, inputs, cfg):
    """Before: a shard resubmitted (--retry-failed) and killed at its wall time kept its earlier run.json, so
    check_shards counted it as ended, and its scan under way (a started record, no result) was in neither table:
    exit 0. Now the shard's tables.pending makes it SHARDS_MISSING, and merged anyway, the scan is named."""
    root, ids = inputs
    out = tmp_path / "out"
    _shards(root, out, cfg, 2)
    assert aggregate(out)["n_series"] == N_SERIES
    mine = ids[0::2]  # shard 0-of-2 scores items 0, 2 of the sorted list
    shutil.rmtree(out / mine[0])  # as if its earlier attempt had failed: the retry has no result to fall back on
    _killed_run(root, out, mine[0], "--shard-index", "0", "--num-shards", "2", "--overwrite")
    assert (out / "shards" / "0-of-2" / "run.json").is_file()  # the earlier run's
    assert (out / "shards" / "0-of-2" / TABLES_PENDING).is_file()
    err = _refusal(lambda: aggregate(out))
    assert err.code == "SHARDS_MISSING"
    assert f"0-of-2 did not end: its {TABLES_PENDING.as_posix()} is still there" in err.message
    assert "sbatch --array=0 " in err.message

    summary = aggregate(out, allow_missing_shards=True)  # what is there; the scan under way is named
    assert mine[0] not in set(summary["scans"]["scan_id"]) | set(summary["failures"]["scan_id"])
    run = json.loads((out / "run.json").read_text())
    assert run["missing_shards"] == ["0-of-2"] and run["unfinished_scans"] == [mine[0]]
    assert any("SCANS_UNFINISHED" in w and "sbatch --array=0 with NUM_SHARDS=2" in w for w in summary["warnings"])


def test_a_shard_that_ended_is_not_held_up_by_the_outs_own_mark(tmp_path, inputs, cfg):
    """OUT's own tables.pending (written by every shard) waits for the aggregate; only a shard folder's counts."""
    root, _ = inputs
    out = tmp_path / "out"
    _shards(root, out, cfg, 2)
    assert (out / TABLES_PENDING).is_file()
    assert aggregate(out)["n_series"] == N_SERIES
    assert not (out / TABLES_PENDING).exists()


# --------------------------------------------------------------------------------------------------
# F2 shards of an input that changed between array tasks


def test_shards_of_an_input_that_grew_between_tasks_are_refused(tmp_path, inputs, cfg):
    """Before: shard 0 ran on 3 series, a fourth arrived, shard 1 ran on 4: they split the list differently, one
    series was scored by both and one by neither, and aggregate exited 0. Now each shard's run.json records the
    count and sha256 of the whole list, and aggregate refuses SHARDS_INPUT_CHANGED naming the series left out."""
    root, ids = inputs
    grown = tmp_path / "in"
    shutil.copytree(root, grown)
    out = tmp_path / "out"
    _shards(grown, out, cfg, 2, 0)
    uid = load_script("benchmark_batch").write_chest_series(grown / "s99", 99)  # the export still arriving
    all_ids = sorted([*ids, scan_id_for(uid, cfg["outputs"]["pseudonym_salt"])])
    _shards(grown, out, cfg, 2, 1)
    runs = [json.loads((out / "shards" / f"{k}-of-2" / "run.json").read_text()) for k in (0, 1)]
    assert runs[0]["input_scans"] == input_scans_digest(ids) and runs[0]["input_scans"]["count"] == N_SERIES
    assert runs[1]["input_scans"] == input_scans_digest(all_ids)
    done = set(ids[0::2]) | set(all_ids[1::2])
    left = sorted(set(all_ids) - done)
    assert left  # the series no shard scored

    err = _refusal(lambda: aggregate(out))
    assert err.code == "SHARDS_INPUT_CHANGED"
    assert "0-of-2: 3 series" in err.message and "1-of-2: 4 series" in err.message
    assert f"({len(left)} without an outcome: {', '.join(left)})" in err.message
    assert "sbatch --array=0-1 with NUM_SHARDS=2" in err.message and "--allow-missing-shards" in err.message
    assert (out / TABLES_PENDING).is_file() and not (out / "scans.csv").exists()

    aggregate(out, allow_missing_shards=True)  # what is there, the gap named
    run = json.loads((out / "run.json").read_text())
    assert run["unfinished_scans"] == left and set(run["input_scans_by_shard"]) == {"0-of-2", "1-of-2"}

    _shards(grown, out, cfg, 2)  # the whole array again, once the input is complete
    assert aggregate(out)["n_series"] == N_SERIES + 1
    assert json.loads((out / "run.json").read_text())["input_scans"] == input_scans_digest(all_ids)


# --------------------------------------------------------------------------------------------------
# F3 GPUs per SLURM job and worker processes


def _slurm(**slurm) -> dict:
    return {"slurm": {"cores": 8, "memory": "32GB", **slurm}}


@pytest.mark.parametrize("gpus, processes", [(2, 1), (4, 2), (1, 2)])
def test_gpus_per_job_other_than_processes_is_refused(tmp_path, gpus, processes):
    """Before: gpus_per_job 2 with processes 1 gave the worker GPU=2 (two scans on cuda:0, the other card idle);
    gpus_per_job 1 with processes 2 pinned both workers to the one card. Now BAD_CONFIG naming both keys, before
    anything is written (the profile is read by preflight)."""
    with pytest.raises(ConfigError) as exc:
        slurm_cluster_kwargs(_slurm(gpus_per_job=gpus, processes=processes))
    assert exc.value.code == "BAD_CONFIG"
    assert f"slurm: gpus_per_job ({gpus}) and slurm: processes ({processes})" in exc.value.message
    path = tmp_path / "profile.yaml"
    path.write_text(json.dumps(_slurm(gpus_per_job=gpus, processes=processes)))
    with pytest.raises(ConfigError, match="must be equal") as exc:
        load_slurm_profile(path)
    assert exc.value.path == str(path)


def test_each_slurm_worker_owns_one_gpu_and_runs_one_scan():
    """The worker command line of the job script, as dask's worker reads it: one task thread (one scan at a time;
    the setup plugin gives it the cores / processes ITK threads) and, with GPUs, GPU=1 (one card per worker)."""
    pytest.importorskip("dask_jobqueue")
    from distributed.cli.dask_worker import main as dask_worker

    from tests.test_cluster_review import _worker_argv

    for gpus in (0, 1, 2):
        argv = _worker_argv(slurm_cluster_kwargs(_slurm(gpus_per_job=gpus, processes=max(1, gpus),
                                                        worker_lifetime="1h")), "CTSCORE_UNSET_DIR")
        assert argv[argv.index("--nthreads") + 1] == str(8 // max(1, gpus))  # dask-jobqueue's: cores / processes
        params = dask_worker.make_context("dask-worker", argv).params
        assert params["nthreads"] == 1, argv  # was cores / processes scans at once
        assert params["resources"] == ("GPU=1" if gpus else None), argv  # was GPU=gpus_per_job/processes


def test_example_profile_says_gpus_per_job_equals_processes():
    profile = load_slurm_profile(REPO / "scripts" / "slurm" / "profile.example.yaml")
    assert profile["slurm"]["gpus_per_job"] == profile["slurm"]["processes"]
    text = (REPO / "scripts" / "slurm" / "profile.example.yaml").read_text()
    assert "GPU=gpus_per_job/processes" not in text


# --------------------------------------------------------------------------------------------------
# F4 one scan per worker, F5 the model-check future


def test_a_worker_with_two_threads_scores_one_scan_at_a_time(tmp_path, inputs, cfg, monkeypatch):
    """Before: --workers 1 --threads-per-worker 2 ran two scans at once on the worker, each with two ITK threads
    (and a scan's memory each, while the memory warning counted one). Now a worker has one dask thread (its threads
    go to the scan's ITK and BLAS): while the first scan is held, no second one starts. The model-check future is released once read (F5)."""
    import distributed

    root, ids = inputs
    release, started = tmp_path / "release", tmp_path / "started.txt"
    monkeypatch.setenv(TEST_HOOKS_ENV, json.dumps({"wait_for": str(release), "wait_max": 90, "log": str(started)}))
    released: list[str] = []
    plain_release = distributed.Future.release

    def spy(self, *args, **kwargs):
        released.append(str(self.key))
        return plain_release(self, *args, **kwargs)

    monkeypatch.setattr(distributed.Future, "release", spy)
    seen: dict[str, int] = {}

    def watch() -> None:
        deadline = time.monotonic() + 120
        while not started.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.0)  # time enough for a second scan to start beside the first
        seen["while_held"] = len(started.read_text().split()) if started.is_file() else 0
        release.touch()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        summary = run_pipeline(root, tmp_path / "out", cfg, all_series=True,
                               batch=BatchOptions(executor="local", workers=1, threads_per_worker=2, progress=False))
    finally:
        release.touch()
        watcher.join(10)
    assert seen["while_held"] == 1  # was 2
    assert summary["n_ok"] == N_SERIES and sorted(started.read_text().split()) == ids
    # released once read, before any scan's result (before: only when the run's function returned)
    assert released and released[0].startswith("segmenter_info"), released


# --------------------------------------------------------------------------------------------------
# Documentation


def test_docs_name_the_new_refusals_and_the_rules():
    text = (REPO / "docs" / "cluster.md").read_text()
    for word in ("SCANS_UNFINISHED", "SHARDS_INPUT_CHANGED", "--allow-unfinished", "unfinished_scans",
                 "must equal `processes`", "--nthreads 1"):
        assert word in text, word
    sbatch = (REPO / "scripts" / "slurm" / "ctscore_array.sbatch").read_text()
    assert "SCANS_UNFINISHED" in sbatch
