"""One writer per output folder: a second ``ctscore run`` into the same OUT (a job array submitted without
``--shard-index/--num-shards``, the same command in two terminals) scored every series again, counted the first
run's ``started`` records as deaths of its own (WORKER_DIED without a crash) and rewrote the run tables. It is
now refused with OUTPUT_LOCKED before it scores anything; shards of one array still run side by side.

Uses the generated series of ``tests/test_batch.py`` and its test-only ``$CTSCORE_TEST_HOOKS`` (a ``sleep`` keeps
the first run going while the second starts).
"""

# ruff: noqa: F811 - the fixtures imported from tests.test_batch are test arguments

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.batch import BatchOptions, aggregate, lock_path, writer_lock
from pipeline.errors import EXIT_OK, EXIT_USAGE, OutputLocked
from pipeline.run import run_pipeline
from tests.test_batch import REPO, _csv, _hooks, cfg, series  # noqa: F401 - fixtures

_CLI = ["--all-series", "-q", "--set", "resample.spacing_mm=[3,3,3]", "--set", "outputs.write_qc_png=false",
        "--set", "outputs.write_masks=false", "--segmenter", "classical", "--executor", "serial"]
WAIT_S = 240  # a loaded 2-core machine: a process start and a scan can take many seconds


def _inputs(tmp_path: Path, src: Path, n: int) -> Path:
    root = tmp_path / "in"
    for i in range(n):
        shutil.copytree(src / f"s{i:02d}", root / f"s{i:02d}")
    return root


def _run(root: Path, out: Path, *extra: str, hooks: str = "") -> subprocess.Popen:
    env = {**os.environ, "CTSCORE_TEST_HOOKS": hooks} if hooks else dict(os.environ)
    if not hooks:
        env.pop("CTSCORE_TEST_HOOKS", None)
    return subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(root), "-o", str(out), *_CLI, *extra],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_start(log: Path, *procs: subprocess.Popen, scans: tuple[str, ...] = ()) -> None:
    """Until ``procs`` have begun a scan (``scans``: these scans; the hooks' start log)."""
    deadline = time.monotonic() + WAIT_S
    while not (log.is_file() and log.read_text() and set(scans) <= set(log.read_text().split())):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline, "the run did not start scoring"
        time.sleep(0.1)


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=WAIT_S)
    return proc.returncode, err


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ctscore: error:")]


_HOLD = """import sys, time
from pipeline.batch import writer_lock
with writer_lock(sys.argv[1], sys.argv[2] or None, sys.argv[3] == "1"):
    print("held", flush=True)
    time.sleep(600)
"""


@contextlib.contextmanager
def _held(out: Path, shard: str | None = None, aggregating: bool = False):
    """Another process holding the lock of a run (``shard``: of that shard; ``aggregating``: of ctscore aggregate)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(out), shard or "", "1" if aggregating else "0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held", proc.communicate()
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_run_into_the_same_folder_is_refused_before_scoring(tmp_path, series):
    """Before: both runs scored every series (each scan started twice), and both exited 0 after rewriting the
    tables. Now the second exits 1 at once with one line naming the first; each scan is scored once."""
    root = _inputs(tmp_path, series[0], 2)
    out, starts = tmp_path / "out", tmp_path / "starts.txt"
    release = tmp_path / "release"
    hooks = _hooks(wait_for=str(release), log=str(starts))  # the first run waits in its scans until released
    first = _run(root, out, hooks=hooks)
    try:
        _wait_for_start(starts, first)
        code, err = _finish(_run(root, out, hooks=hooks))
        refused_at_once = first.poll() is None  # while the first still runs
    finally:
        release.touch()
        first_code, first_err = _finish(first)
    assert (first_code, code) == (EXIT_OK, EXIT_USAGE), (first_err, err, starts.read_text().split())
    assert refused_at_once
    [line] = _errors(err)
    assert line.startswith(f"ctscore: error: OUTPUT_LOCKED: another ctscore run (pid {first.pid} on host "
                           f"{socket.gethostname()}, since ")
    assert f"is writing to {out}; wait for it, or for parallel jobs use --shard-index/--num-shards" in line
    assert sorted(starts.read_text().split()) == sorted(series[1][:2])  # each scan started once
    assert [r["status"] for r in _csv(out / "scans.csv")] == ["ok", "ok"]


def test_a_killed_run_leaves_the_lock_file_but_not_the_lock(tmp_path, series):
    root = _inputs(tmp_path, series[0], 1)
    out, starts = tmp_path / "out", tmp_path / "starts.txt"
    first = _run(root, out, hooks=_hooks(sleep={"*": 120}, log=str(starts)))
    _wait_for_start(starts, first)
    first.send_signal(signal.SIGKILL)
    assert _finish(first)[0] == -signal.SIGKILL
    assert lock_path(out).is_file()
    code, err = _finish(_run(root, out))
    assert code == EXIT_OK, err
    assert [r["status"] for r in _csv(out / "scans.csv")] == ["ok"]


def test_shards_run_side_by_side_but_not_next_to_a_whole_run_or_the_same_shard(tmp_path, series):
    root = _inputs(tmp_path, series[0], 3)
    out, starts = tmp_path / "out", tmp_path / "starts.txt"
    release = tmp_path / "release"
    hooks = _hooks(wait_for=str(release), log=str(starts))  # the shards wait in their scans until released
    shards = [_run(root, out, "--shard-index", str(k), "--num-shards", "2", hooks=hooks) for k in (0, 1)]
    try:
        _wait_for_start(starts, *shards, scans=tuple(sorted(series[1][:3])[:2]))  # the first scan of each shard
        late = [_run(root, out, "--shard-index", "0", "--num-shards", "2", hooks=hooks), _run(root, out, hooks=hooks)]
        again, whole = [_finish(p) for p in late]
        refused_at_once = shards[0].poll() is None  # while shard 0 still runs
    finally:
        release.touch()
        results = [_finish(p) for p in shards]
    assert [c for c, _ in results] == [EXIT_OK, EXIT_OK], results
    assert (again[0], whole[0]) == (EXIT_USAGE, EXIT_USAGE), (again, whole, starts.read_text().split())
    assert refused_at_once
    [line] = _errors(again[1])
    assert f"another ctscore run of shard 0-of-2 (pid {shards[0].pid} on host" in line
    assert "give each parallel job its own --shard-index" in line
    [line] = _errors(whole[1])
    assert f"OUTPUT_LOCKED: ctscore runs of shards (--shard-index/--num-shards) are writing to {out}" in line
    assert sorted(starts.read_text().split()) == sorted(series[1][:3])  # each scan started once
    summary = aggregate(out)
    assert (summary["n_ok"], summary["n_failed"]) == (3, 0)


def test_a_file_system_without_locks_warns_once_and_runs(tmp_path, series, cfg, monkeypatch, caplog):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    root = _inputs(tmp_path, series[0], 1)
    with caplog.at_level(logging.WARNING, logger="pipeline.batch"):
        summary = run_pipeline(root, tmp_path / "out", cfg, batch=BatchOptions(progress=False))
        assert aggregate(tmp_path / "out")["n_ok"] == 1
    assert summary["n_ok"] == 1
    warnings = [r.getMessage() for r in caplog.records if "has no file locks" in r.getMessage()]
    assert len(warnings) == 2, warnings  # one for the run (run_pipeline, then run_batch), one for aggregate
    assert "No locks available" in warnings[0]


def test_aggregate_is_refused_while_a_run_writes_and_warns_while_shards_do(tmp_path, series, cfg, caplog):
    root = _inputs(tmp_path, series[0], 1)
    out = tmp_path / "out"
    run_pipeline(root, out, cfg, batch=BatchOptions(progress=False))
    with _held(out) as holder:
        with pytest.raises(OutputLocked) as exc:
            aggregate(out)
        assert exc.value.code == "OUTPUT_LOCKED"
        assert str(exc.value).startswith(f"OUTPUT_LOCKED: another ctscore run (pid {holder.pid} on host ")
        assert str(exc.value).endswith(f"is writing to {out}; wait for it")
        cli = subprocess.run([sys.executable, "-m", "pipeline", "aggregate", str(out)], cwd=REPO, capture_output=True,
                             text=True, timeout=WAIT_S)
        assert cli.returncode == EXIT_USAGE
        assert _errors(cli.stderr) == [f"ctscore: error: {exc.value}"]
    with _held(out, shard="0-of-2"), caplog.at_level(logging.WARNING, logger="pipeline.batch"):
        assert aggregate(out)["n_ok"] == 1
    assert any("shard runs are still writing" in r.getMessage() for r in caplog.records)
    with _held(out, aggregating=True) as holder:  # a run is refused by an aggregate as well
        with pytest.raises(OutputLocked, match=f"another ctscore aggregate \\(pid {holder.pid} on host "):
            run_pipeline(root, out, cfg, batch=BatchOptions(progress=False))


def test_run_pipeline_raises_the_same_error_before_writing_anything(tmp_path, series, cfg):
    root = _inputs(tmp_path, series[0], 1)
    out = tmp_path / "out"
    with _held(out) as holder:
        with pytest.raises(OutputLocked) as exc:
            run_pipeline(root, out, cfg, batch=BatchOptions(progress=False))
        shard = BatchOptions(progress=False, shard_index=1, num_shards=2)
        with pytest.raises(OutputLocked, match="another ctscore run \\(pid"):  # a whole run excludes the shards
            run_pipeline(root, out, cfg, batch=shard)
    assert exc.value.message == (f"another ctscore run (pid {holder.pid} on host {socket.gethostname()}, since "
                                 f"{exc.value.message.split('since ')[1].split(')')[0]}) is writing to {out}; wait "
                                 "for it, or for parallel jobs use --shard-index/--num-shards")
    assert sorted(p.name for p in out.rglob("*")) == [".lock", ".status"]  # no inventory, no record, no table
    with writer_lock(out), writer_lock(out):  # re-entrant in one process (run_pipeline, then run_batch)
        assert run_pipeline(root, out, cfg, batch=BatchOptions(progress=False))["n_ok"] == 1


def test_a_locked_folder_is_refused_before_the_inventory_reads_the_input(tmp_path, series, cfg, monkeypatch):
    """Before: the refusal came only after the inventory had read every header under the input (minutes on a
    large study folder). Now the held lock is found first, and the input is not read."""
    import pipeline.inventory

    read = []
    real = pipeline.inventory.build_inventory
    monkeypatch.setattr(pipeline.inventory, "build_inventory", lambda *a, **k: read.append(a) or real(*a, **k))
    root = _inputs(tmp_path, series[0], 1)
    out = tmp_path / "out"
    with _held(out):
        with pytest.raises(OutputLocked, match="another ctscore run \\(pid"):
            run_pipeline(root, out, cfg, batch=BatchOptions(progress=False))
    assert read == []
    assert run_pipeline(root, out, cfg, batch=BatchOptions(progress=False))["n_ok"] == 1  # and free again after
    assert len(read) == 1
