"""Batch runs, review fixes: a crashing scan in the serial executor (job arrays) is recorded as WORKER_DIED
instead of blocking its shard, the serial alarm never interrupts a folder commit, fixed SLURM job counts
survive worker lifetimes, option validation, dask settings scoped to the run, the job-array script.

Uses the generated series of ``tests/test_batch.py`` and its test-only ``$CTSCORE_TEST_HOOKS``.
"""

# ruff: noqa: F811 - the fixtures imported from tests.test_batch are test arguments

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.batch import BatchOptions
from pipeline.errors import EXIT_SOME_FAILED, ConfigError
from tests.test_batch import N_SERIES, REPO, _csv, _hooks, cfg, series  # noqa: F401 - fixtures

_CLI = ["--all-series", "-q", "--set", "resample.spacing_mm=[3,3,3]", "--set", "outputs.write_qc_png=false",
        "--set", "outputs.write_masks=false", "--segmenter", "classical"]


def test_serial_crash_is_recorded_after_allowed_failures_and_the_shard_goes_on(tmp_path, series):
    """A scan that kills the serial process (segfault, OOM kill) is tried allowed_failures + 1 = 2 times over
    two runs; the third run records it as WORKER_DIED and scores the series after it."""
    src, ids = series
    crash, good = sorted(ids[:2])  # the crashing scan comes first in the shard
    root = tmp_path / "in"
    for i in (0, 1):
        shutil.copytree(src / f"s{i:02d}", root / f"s{i:02d}")
    out = tmp_path / "out"
    env = {**os.environ, "CTSCORE_TEST_HOOKS": _hooks(crash=[crash])}
    cmd = [sys.executable, "-m", "pipeline", "run", str(root), "-o", str(out), "--executor", "serial", *_CLI]
    codes = [subprocess.run(cmd, env=env, capture_output=True).returncode for _ in range(3)]
    assert codes == [-9, -9, EXIT_SOME_FAILED]
    failures = _csv(out / "failures.csv")
    assert [(r["scan_id"], r["code"]) for r in failures] == [(crash, "WORKER_DIED")]
    assert "2 time(s)" in failures[0]["message"]
    assert (out / good / "result.json").is_file()
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == EXIT_SOME_FAILED  # kept failed: no crash


class _FakeCluster:
    def __init__(self):
        self.calls = []

    def scale(self, **kw):
        self.calls.append(("scale", kw))

    def adapt(self, **kw):
        self.calls.append(("adapt", kw))


@pytest.mark.parametrize("workers, scale, expected", [
    (1, {"jobs": 3}, {"minimum_jobs": 3, "maximum_jobs": 3}),
    (4, {"minimum_jobs": 0, "maximum_jobs": 8}, {"minimum_jobs": 4, "maximum_jobs": 4}),
    (1, {"minimum_jobs": 1, "maximum_jobs": 8}, {"minimum_jobs": 1, "maximum_jobs": 8}),
])
def test_slurm_job_counts_are_adaptive_so_retired_jobs_are_replaced(workers, scale, expected):
    """scale(jobs=N) never replaces a job that ended (worker_lifetime, wall time): the run would hang."""
    from pipeline.batch import _scale_slurm

    cluster = _FakeCluster()
    _scale_slurm(cluster, BatchOptions(executor="slurm", workers=workers, slurm_profile="p.yaml"),
                 {"slurm": {}, "scale": scale})
    assert cluster.calls == [("adapt", expected)]


def test_serial_alarm_waits_for_a_folder_commit(tmp_path, monkeypatch):
    """The alarm goes off during a slow rename of the result folder (a network file system): the commit
    completes. A second thread is running, as in a real scan (ITK, BLAS pools): the kernel may deliver
    the signal to it, and Python still runs the handler in the main thread."""
    from pipeline.batch import Task, _run_with_alarm
    from pipeline.outputs import SeriesFolder

    real_replace = os.replace

    def slow_replace(a, b):
        if os.path.isdir(a):
            time.sleep(1.0)
        return real_replace(a, b)

    def work() -> dict:
        folder = SeriesFolder(tmp_path, "scan-x")
        folder.path("result.json").write_text("{}")
        monkeypatch.setattr(os, "replace", slow_replace)
        folder.commit()
        return {"scan_id": "scan-x", "status": "ok"}

    stop = threading.Event()
    helper = threading.Thread(target=stop.wait, daemon=True)
    helper.start()
    try:
        status = _run_with_alarm(work, Task("scan-x", "1.2", []), 0.3)
    finally:
        stop.set()
    assert (tmp_path / "scan-x" / "result.json").is_file()
    assert status["status"] == "ok"  # once its result is being committed the scan is let finish
    assert not list(tmp_path.glob(".scan-x.*"))


@pytest.mark.parametrize("bad", [BatchOptions(timeout_s=-1), BatchOptions(timeout_s=float("nan")),
                                 BatchOptions(allowed_failures=-1)])
def test_negative_timeout_and_allowed_failures_are_refused(bad):
    with pytest.raises(ConfigError):
        bad.validate()


def test_cli_refuses_a_negative_timeout(tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.errors import EXIT_USAGE

    assert main(["run", str(tmp_path), "-o", str(tmp_path / "out"), "--timeout", "-5", "-q"]) == EXIT_USAGE
    assert "--timeout" in capsys.readouterr().err


def test_local_run_leaves_the_callers_dask_settings_alone(tmp_path, series, cfg):
    """dask settings of a run (allowed-failures, worker-saturation) must not leak into a notebook's process."""
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")
    from pipeline.run import run_pipeline

    src, ids = series
    keys = ("distributed.scheduler.allowed-failures", "distributed.scheduler.worker-saturation")
    before = [dask.config.get(k) for k in keys]
    summary = run_pipeline(src / "s00", tmp_path, cfg,
                           batch=BatchOptions(executor="local", workers=1, allowed_failures=3, progress=False))
    assert summary["n_ok"] == 1
    assert [dask.config.get(k) for k in keys] == before


def _run_array_script(tmp_path: Path, task_id: str, **env) -> tuple[int, str]:
    """Run the job-array template with stand-ins for ``module`` and ``ctscore`` (which prints its arguments)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "module").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "ctscore").write_text('#!/bin/sh\necho "ctscore $*"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    activate = tmp_path / "home" / "venvs" / "ctscore" / "bin" / "activate"
    activate.parent.mkdir(parents=True, exist_ok=True)
    activate.write_text("")
    full_env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path / "home"), "INPUT": "/in",
                "OUT": "/out", "SLURM_ARRAY_JOB_ID": "42", "SLURM_ARRAY_TASK_ID": task_id, **env}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "slurm" / "ctscore_array.sbatch")], env=full_env,
                          capture_output=True, text=True, cwd=tmp_path)
    return proc.returncode, proc.stdout + proc.stderr


def test_array_script_keeps_the_shard_count_on_partial_reruns(tmp_path):
    """`sbatch --array=3,7` (a rerun of two shards) has SLURM_ARRAY_TASK_COUNT=2: the shards stay those of 10."""
    rc, out = _run_array_script(tmp_path, "7", SLURM_ARRAY_TASK_COUNT="2")
    assert rc == 0, out
    assert "--shard-index 7 --num-shards 10" in out and "--executor local --workers 1" in out
    rc, out = _run_array_script(tmp_path, "3", NUM_SHARDS="4", SLURM_ARRAY_TASK_COUNT="1")
    assert rc == 0 and "--shard-index 3 --num-shards 4" in out, out
    for task_id, num in (("10", "10"), ("4", "4"), ("0", "0")):  # outside 0..NUM_SHARDS-1
        rc, out = _run_array_script(tmp_path, task_id, NUM_SHARDS=num)
        assert rc != 0 and "ctscore run" not in out, out


def test_each_worker_is_pinned_to_one_of_the_visible_gpus():
    """Worker k takes GPU k of those the process may see: CUDA_VISIBLE_DEVICES as the user or SLURM set it
    (it was left as it was, so every worker used its first GPU), else 0..n-1."""
    from pipeline.batch import pinned_gpu

    assert [pinned_gpu(k, 2, None) for k in range(4)] == ["0", "1", "0", "1"]
    assert [pinned_gpu(k, 2, "2,3") for k in (0, 1)] == ["2", "3"]  # local run limited by the user
    assert pinned_gpu("SLURMCluster-7-1", 2, "0,1") == "1"  # second process of a 2-GPU job
    assert pinned_gpu("worker-without-number", 2, "5") == "5"


def test_run_pipeline_checks_its_options_and_config_before_writing(tmp_path):
    """The Python twin refuses what the CLI refuses, before anything is written (it wrote the inventory first)."""
    from pipeline.config import load_config
    from pipeline.run import run_pipeline

    sample = Path(__file__).resolve().parents[1] / "sample_dicoms"
    bad_cfg = load_config()
    bad_cfg["scoring"]["zhang900"]["mode"] = "zones"  # edited in a notebook
    cases = [({"batch": BatchOptions(workers=-1)}, "workers"), ({"batch": BatchOptions(workers="2")}, "workers"),
             ({"batch": BatchOptions(timeout_s="60")}, "timeout_s"), ({"cfg": bad_cfg}, "zhang900.mode"),
             ({"cfg": {"segmentation": {"method": "bogus"}}}, "segmentation.method"),
             ({"cfg": {"segmentation": {"device": "tpu"}}}, "segmentation.device")]
    for i, (kw, word) in enumerate(cases):
        out = tmp_path / f"out{i}"
        with pytest.raises(ConfigError, match=word.replace(".", r"\.")):
            run_pipeline(sample, out, **kw)
        assert not out.exists(), kw


def test_a_timed_out_scan_does_not_take_its_neighbour_down(tmp_path, series, cfg, monkeypatch):
    """One worker: the scan after the one that times out started on the same worker before the driver restarted
    it, and was killed with it (run twice, counted as a worker death). Now the worker takes no new scan once its
    scan timed out; every healthy scan starts exactly once."""
    root, ids = series
    starts = tmp_path / "starts.txt"
    # the first series hangs, so that others come after it on the one worker (series CORRUPT fails as usual)
    monkeypatch.setenv("CTSCORE_TEST_HOOKS", _hooks(sleep={ids[0]: 60}, log=str(starts)))
    opts = BatchOptions(executor="local", workers=1, threads_per_worker=1, timeout_s=8, progress=False)
    from pipeline.run import run_pipeline

    summary = run_pipeline(root, tmp_path / "out", cfg, all_series=True, batch=opts)
    assert (summary["n_ok"], summary["n_failed"]) == (N_SERIES - 2, 2)
    counts = Counter(starts.read_text().split())
    assert counts[ids[0]] == 1
    assert {sid: n for sid, n in counts.items() if n != 1} == {}


def test_a_worker_closed_after_a_timeout_ends_itself_if_no_restart_comes(monkeypatch):
    """The worker of a timed-out scan takes no new scan until the driver restarts it; should that restart never
    come, it would sit closed to work for good (a one-worker run would hang): it ends itself after the grace
    period, so that its Nanny replaces it."""
    from distributed.core import Status

    from pipeline import batch

    class Loop:
        def __init__(self):
            self.now, self.later = [], []

        def add_callback(self, fn):
            self.now.append(fn)

        def call_later(self, delay, fn):
            self.later.append((delay, fn))

    worker = type("W", (), {})()
    worker.status, worker.loop = Status.running, Loop()
    exits = []
    monkeypatch.setattr(batch.os, "_exit", exits.append)
    batch._stop_taking_scans(worker)
    assert worker.status == Status.running  # changed on the worker's event loop, not from the task's thread
    worker.loop.now[0]()
    assert worker.status == Status.closing_gracefully
    (delay, fn), = worker.loop.later
    assert delay == batch.RESTART_GRACE_S
    fn()
    assert exits == [1]
    worker.status, exits[:] = Status.running, []  # restarted meanwhile (a new process would not even run it)
    fn()
    assert exits == []


def test_a_started_record_left_by_a_dask_worker_is_no_serial_death(tmp_path, series, monkeypatch):
    """A dask run stopped with Ctrl-C (or killed whole) leaves the ``started`` records of the scans under way; a
    later serial resume counted each as a death of the serial process, so the scan was recorded WORKER_DIED after
    one real crash instead of allowed_failures + 1 = 2."""
    import json
    from types import SimpleNamespace

    import pipeline.batch as batch

    src, ids = series
    crash = ids[0]  # the scan of s00
    root = tmp_path / "in"
    shutil.copytree(src / "s00", root / "s00")
    out = tmp_path / "out"
    env = {**os.environ, "CTSCORE_TEST_HOOKS": _hooks(crash=[crash])}
    cmd = [sys.executable, "-m", "pipeline", "run", str(root), "-o", str(out), "--executor", "serial", *_CLI]
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == -9  # leaves a started record
    rec = json.loads(batch.record_path(out, crash).read_text())
    assert rec["status"] == batch.STARTED
    # the same scan's record as a dask worker writes it, for a dask run stopped while the scan was under way
    monkeypatch.setattr(batch, "_current_dask_worker", lambda: object())
    task = SimpleNamespace(scan_id=crash, series_uid=rec["series_uid"], fingerprint=rec["input_fingerprint"])
    batch.write_started(out, task, 1, rec["config_sha256"], rec["model_id"], "a1")
    codes = [subprocess.run(cmd, env=env, capture_output=True).returncode for _ in range(3)]
    assert codes == [-9, -9, EXIT_SOME_FAILED]  # two serial crashes, then WORKER_DIED (was [-9, 8, 8])
    assert "2 time(s)" in _csv(out / "failures.csv")[0]["message"]
