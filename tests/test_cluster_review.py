"""Cluster path review: Ctrl-C of a SLURM run, a SLURM run waiting for workers that never come, ``$TMPDIR`` unset on
the nodes, ``ctscore aggregate`` over missing or mixed shards, ``--threads-per-worker`` with SLURM, unknown ``scale:``
keys, and three nitpicks (the lock message of a shard, a no-op resume starting a cluster, relative failure paths).

No SLURM is needed: the SLURM runs use a fake ``sbatch`` (and ``scancel``, ``squeue``) written into the test's own
folder; job scripts are checked by running their worker command line through bash with the worker replaced.
"""

# ruff: noqa: F811 - the cfg fixture imported from tests.test_batch is a test argument

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.batch import BatchOptions, aggregate, load_slurm_profile, slurm_cluster_kwargs, writer_lock
from pipeline.errors import EXIT_USAGE, ConfigError, CTScoreError, OutputLocked
from pipeline.run import run_pipeline
from tests.scripts_loader import load_script
from tests.test_batch import cfg  # noqa: F401 - the same module-scoped classical config fixture

REPO = Path(__file__).resolve().parents[1]
needs_jobqueue = pytest.mark.skipif(importlib.util.find_spec("dask_jobqueue") is None,
                                    reason="dask-jobqueue (the cluster extra) is not installed")
N_SERIES, CORRUPT = 3, 1  # series CORRUPT has a truncated slice: a failure row with a file path
CLI_CFG = ["--segmenter", "classical", "--set", "resample.spacing_mm=[3,3,3]", "--set", "outputs.write_qc_png=false",
           "--set", "outputs.write_masks=false"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """N_SERIES small generated chest series, series CORRUPT with a truncated slice."""
    root = tmp_path_factory.mktemp("cluster_in")
    bench = load_script("benchmark_batch")
    for i in range(N_SERIES):
        bench.write_chest_series(root / f"s{i:02d}", i)
    victim = sorted((root / f"s{CORRUPT:02d}").glob("*.dcm"))[5]
    victim.write_bytes(victim.read_bytes()[:-3000])
    return root


def _jobqueue_slurm_job():
    """dask-jobqueue's SLURMJob, imported without letting dask-jobqueue take over this process's SIGINT handler."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        pytest.importorskip("dask_jobqueue")
        from dask_jobqueue.slurm import SLURMJob
    finally:
        signal.signal(signal.SIGINT, handler)
    return SLURMJob


def _fake_slurm(tmp_path: Path, sbatch: str | None) -> Path:
    """A folder with a fake ``sbatch`` (``sbatch``: its bash body; None: no sbatch at all), a ``scancel`` that logs
    the job ids it is given into ``tmp_path/scancel.log`` and a ``squeue`` that cannot answer."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"scancel": f'echo "$@" >> "{tmp_path}/scancel.log"\n', "squeue": "exit 1\n"}
    if sbatch is not None:
        scripts["sbatch"] = sbatch
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _profile(tmp_path: Path, **slurm) -> Path:
    path = tmp_path / "profile.yaml"
    data = {"slurm": {"cores": 1, "memory": "2GB", "walltime": "00:10:00", "log_directory": str(tmp_path / "logs"),
                      **slurm}, "scale": {"jobs": 1}}
    path.write_text(yaml.safe_dump(data))
    return path


def _slurm_cmd(inputs: Path, tmp_path: Path, profile: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "run", str(inputs), "-o", str(tmp_path / "out"), "--executor", "slurm",
            "--slurm-profile", str(profile), *CLI_CFG, *extra]


def _env(bin_dir: Path, keep_path: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CTSCORE_TEST_HOOKS"}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}" if keep_path else str(bin_dir)
    return env


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ctscore: ")]


# --------------------------------------------------------------------------------------------------
# 1. Ctrl-C of a SLURM run


@needs_jobqueue
def test_importing_dask_jobqueue_through_ctscore_keeps_the_sigint_handler():
    """dask_jobqueue's runner module sets ``signal.signal(SIGINT, lambda *_: sys.exit())`` when imported: Ctrl-C then
    ended a SLURM run with exit code 0 and no message. ctscore imports it with its own handler kept."""
    code = ("import signal, sys\n"
            "before = signal.getsignal(signal.SIGINT)\n"
            "from pipeline import batch\n"
            "batch._slurm_cluster_class()\n"
            "assert 'dask_jobqueue.runner' in sys.modules\n"
            "assert signal.getsignal(signal.SIGINT) is before is signal.default_int_handler, signal.getsignal(2)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@needs_jobqueue
def test_ctrl_c_of_a_slurm_run_exits_130_with_the_resume_message(tmp_path, inputs):
    bin_dir = _fake_slurm(tmp_path, 'echo "Submitted batch job 4242"\n')  # a job that never starts (queued)
    profile = _profile(tmp_path)  # the default worker_start_timeout (30 min)
    err = tmp_path / "stderr.txt"
    with open(err, "w") as fh:
        proc = subprocess.Popen(_slurm_cmd(inputs, tmp_path, profile), cwd=REPO, env=_env(bin_dir),
                                stdout=subprocess.DEVNULL, stderr=fh)
    try:
        deadline = time.monotonic() + 120
        while "SLURMCluster started" not in err.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        time.sleep(2.0)  # the driver waits for its workers now
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = err.read_text()
    assert code == 128 + signal.SIGINT, text  # was 0, with no message
    assert _error_lines(text) == ["ctscore: stopped (SIGINT); finished series are kept: run the same command again "
                                  "to resume (scans.csv, zones.csv and report.html are still those of the last "
                                  "complete run until it ends; `ctscore aggregate OUT --allow-unfinished` "
                                  "writes them for what is finished now)"], text
    assert "4242" in (tmp_path / "scancel.log").read_text()  # the queued job is cancelled


# --------------------------------------------------------------------------------------------------
# 2. Waiting for SLURM workers that never come


@needs_jobqueue
@pytest.mark.parametrize("case", ["refused", "no sbatch"])
def test_a_worker_job_that_cannot_be_submitted_stops_the_run_at_once(tmp_path, inputs, case):
    """Before: sbatch missing or refusing the job left the driver waiting forever (the error only in a traceback of
    dask's event loop). Now: SLURM_SUBMIT_FAILED with what went wrong, exit 1, long before worker_start_timeout."""
    failing = ('echo "sbatch: error: Batch job submission failed: Invalid account or account/partition combination '
               'specified" >&2\nexit 1\n')
    bin_dir = _fake_slurm(tmp_path, failing if case == "refused" else None)
    profile = _profile(tmp_path)  # the default worker_start_timeout (30 min)
    t0 = time.monotonic()
    proc = subprocess.run(_slurm_cmd(inputs, tmp_path, profile), cwd=REPO, env=_env(bin_dir, case == "refused"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert time.monotonic() - t0 < 120
    [line] = _error_lines(proc.stderr)
    assert line.startswith("ctscore: error: SLURM_SUBMIT_FAILED: a worker job could not be submitted: "), line
    if case == "refused":
        assert "sbatch said: sbatch: error: Batch job submission failed: Invalid account" in line
    else:
        assert "sbatch could not be run" in line and "sbatch on PATH" in line
    assert "queue, account" in line  # where to look
    assert "Traceback" not in proc.stderr, proc.stderr  # tornado printed dask's traceback of the failure first


@needs_jobqueue
def test_workers_that_never_connect_give_up_after_worker_start_timeout(tmp_path, inputs):
    """Jobs submitted but no worker ever connects (queued, or dying at start): lines while waiting that say how many
    jobs and where their logs are, then SLURM_NO_WORKERS (exit 1) after worker_start_timeout, the jobs cancelled.
    Also: --threads-per-worker with slurm is named as not used."""
    bin_dir = _fake_slurm(tmp_path, 'echo "Submitted batch job 4242"\n')
    profile = _profile(tmp_path, worker_start_timeout=4)
    proc = subprocess.run(_slurm_cmd(inputs, tmp_path, profile, "--threads-per-worker", "2"), cwd=REPO,
                          env=_env(bin_dir), capture_output=True, text=True, timeout=180)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    [line] = _error_lines(proc.stderr)
    assert line.startswith("ctscore: error: SLURM_NO_WORKERS: no SLURM worker connected within 4 s "
                           "(slurm: worker_start_timeout in the SLURM profile"), line
    assert "1 job(s) submitted (4242)" in line and f"check the job logs in {tmp_path / 'logs'}" in line
    waiting = [w for w in proc.stderr.splitlines() if "waiting for SLURM workers" in w]
    assert waiting and "none connected yet, 1 job(s) asked for, 1 job(s) submitted (4242)" in waiting[0]
    assert str(tmp_path / "logs") in waiting[0]
    assert "4242" in (tmp_path / "scancel.log").read_text()
    assert "--threads-per-worker (threads_per_worker) 2 is not used with --executor slurm" in proc.stderr
    assert "(1 with this profile)" in proc.stderr


@pytest.mark.parametrize("value, seconds", [(None, 1800.0), (90, 90.0), ("30m", 1800.0), ("2h", 7200.0),
                                            ("45s", 45.0), (0, None)])
def test_worker_start_timeout_is_read_from_the_profile(tmp_path, value, seconds):
    from pipeline.batch import worker_start_timeout

    slurm = {} if value is None else {"worker_start_timeout": value}
    assert worker_start_timeout({"slurm": slurm}) == seconds
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"slurm": slurm}))
    load_slurm_profile(path)  # a known key


def test_a_worker_start_timeout_that_is_no_duration_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"slurm": {"worker_start_timeout": "soon"}}))
    with pytest.raises(ConfigError, match="worker_start_timeout in the SLURM profile must be a duration"):
        load_slurm_profile(path)


# --------------------------------------------------------------------------------------------------
# 3. $TMPDIR unset on the nodes


def _worker_argv(kwargs: dict, unset: str) -> list[str]:
    """The arguments the job script's worker command line gives the worker, run through bash on a "node" where the
    variable ``unset`` is not set."""
    job = _jobqueue_slurm_job()(scheduler="tcp://127.0.0.1:1", name="w", **kwargs)
    line = job.job_script().strip().splitlines()[-1]
    assert " -m distributed.cli.dask_worker " in line, line
    line = line.replace(" -m distributed.cli.dask_worker ",
                        " -c 'import json, sys; print(json.dumps(sys.argv[1:]))' ", 1)
    env = {k: v for k, v in os.environ.items() if k != unset}
    proc = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_example_profile_local_directory_survives_an_unset_tmpdir(tmp_path, monkeypatch):
    """``local_directory: $TMPDIR`` went unquoted into the job script: where TMPDIR is unset the worker took the next
    option as the directory and failed (``Got unexpected extra argument``)."""
    monkeypatch.chdir(tmp_path)  # the example's relative log_directory is created where the cluster is made
    profile = load_slurm_profile(REPO / "scripts" / "slurm" / "profile.example.yaml")
    assert ":-" in profile["slurm"]["local_directory"]  # ${TMPDIR:-/tmp}
    argv = _worker_argv(slurm_cluster_kwargs(profile), "TMPDIR")
    i = argv.index("--local-directory")
    assert argv[i + 1:i + 3] == ["/tmp", "--resources"], argv


def test_a_variable_in_local_directory_cannot_swallow_the_next_argument(caplog):
    kwargs = slurm_cluster_kwargs({"slurm": {"local_directory": "$CTSCORE_UNSET_DIR", "worker_lifetime": "1h",
                                             "cores": 1, "memory": "1GB"}})
    argv = _worker_argv(kwargs, "CTSCORE_UNSET_DIR")
    i = argv.index("--local-directory")
    assert argv[i + 1:i + 3] == ["", "--lifetime"], argv  # one (empty) word: the worker uses its working directory
    with_space = slurm_cluster_kwargs({"slurm": {"local_directory": "/scratch/my lab", "cores": 1, "memory": "1GB"}})
    argv = _worker_argv(with_space, "CTSCORE_UNSET_DIR")
    assert argv[argv.index("--local-directory") + 1] == "/scratch/my lab"
    from pipeline.batch import _warn_bare_variables

    with caplog.at_level(logging.WARNING, logger="pipeline.batch"):
        _warn_bare_variables({"slurm": {"local_directory": "$CTSCORE_UNSET_DIR"}})
        _warn_bare_variables({"slurm": {"local_directory": "${TMPDIR:-/tmp}"}})
    [warning] = [r.getMessage() for r in caplog.records]
    assert "write ${CTSCORE_UNSET_DIR:-/tmp} for a fallback" in warning


def test_docs_tell_how_to_give_a_variable_a_fallback():
    text = " ".join((REPO / "docs" / "cluster.md").read_text().split())
    assert "local_directory: ${TMPDIR:-/tmp}" in text


# --------------------------------------------------------------------------------------------------
# 4. ctscore aggregate over missing or mixed shards


def _shards(inputs: Path, out: Path, cfg: dict, *names: str) -> None:
    for name in names:
        k, n = (int(v) for v in name.split("-of-"))
        run_pipeline(inputs, out, cfg, all_series=True, batch=BatchOptions(shard_index=k, num_shards=n,
                                                                           progress=False))


def test_aggregate_refuses_missing_shards_unless_allowed(tmp_path, inputs, cfg, capsys, caplog):
    """Shards 0-of-3 and 2-of-3 merged silently (exit 8 only because a series failed). Now SHARDS_MISSING names
    1-of-3 (exit 1); --allow-missing-shards merges them with a warning and run.json lists the missing one."""
    from pipeline.cli import main

    out = tmp_path / "out"
    _shards(inputs, out, cfg, "0-of-3", "2-of-3")
    with pytest.raises(CTScoreError) as exc:
        aggregate(out)
    assert exc.value.code == "SHARDS_MISSING"
    assert "1 of 3 shards have no tables" in exc.value.message and "1-of-3" in exc.value.message
    assert "--allow-missing-shards" in exc.value.message and "sbatch --array=1 " in exc.value.message
    assert not (out / "scans.csv").exists()
    with caplog.at_level(logging.WARNING, logger="pipeline.batch"):
        summary = aggregate(out, allow_missing_shards=True)
    assert summary["n_series"] == 2
    assert any("SHARDS_MISSING" in r.getMessage() and "merged anyway" in r.getMessage() for r in caplog.records)
    run = json.loads((out / "run.json").read_text())
    assert run["missing_shards"] == ["1-of-3"]
    # the command: exit 1 and one line, or the merge with --allow-missing-shards
    assert main(["aggregate", str(out), "-q"]) == EXIT_USAGE
    [line] = _error_lines(capsys.readouterr().err)
    assert line.startswith("ctscore: error: SHARDS_MISSING: ")
    assert main(["aggregate", str(out), "-q", "--allow-missing-shards"]) in (0, 8)
    assert "merged anyway (--allow-missing-shards)" in capsys.readouterr().err


def test_aggregate_refuses_a_shard_that_did_not_end_and_mixed_shard_counts(tmp_path, inputs, cfg):
    out = tmp_path / "out"
    _shards(inputs, out, cfg, "0-of-2", "1-of-2")
    assert aggregate(out)["n_series"] == N_SERIES  # all there: no complaint
    assert "missing_shards" not in json.loads((out / "run.json").read_text())
    (out / "shards" / "1-of-2" / "run.json").unlink()  # as a shard killed at its wall time leaves it
    with pytest.raises(CTScoreError, match=r"1-of-2 did not end: no run\.json") as exc:
        aggregate(out)
    assert exc.value.code == "SHARDS_MISSING"

    mixed = tmp_path / "mixed"
    _shards(inputs, mixed, cfg, "0-of-2", "1-of-3")
    with pytest.raises(CTScoreError) as exc:
        aggregate(mixed)
    assert exc.value.code == "SHARDS_MIXED"
    assert "--num-shards 2: 0-of-2; --num-shards 3: 1-of-3" in exc.value.message
    assert "missing: 1-of-2, 0-of-3, 2-of-3" in exc.value.message
    aggregate(mixed, allow_missing_shards=True)
    run = json.loads((mixed / "run.json").read_text())
    assert run["missing_shards"] == ["1-of-2", "0-of-3", "2-of-3"] and run["num_shards_found"] == [2, 3]


def test_docs_name_the_shard_errors():
    for doc in ("docs/cluster.md", "README.md"):
        text = (REPO / doc).read_text()
        assert "SHARDS_MISSING" in text and "--allow-missing-shards" in text, doc


# --------------------------------------------------------------------------------------------------
# 5. --threads-per-worker with SLURM


def test_threads_per_worker_help_says_which_executors_use_it(capsys):
    from pipeline.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    help_text = text[text.index("--threads-per-worker N ") + len("--threads-per-worker N "):][:300]  # its help
    assert help_text.startswith("local executor:") and "nor by slurm" in help_text, help_text


def test_threads_per_worker_with_slurm_is_named_as_not_used(caplog):
    from pipeline.batch import warn_threads_ignored

    with caplog.at_level(logging.WARNING, logger="pipeline.batch"):
        warn_threads_ignored(4, {"slurm": {"cores": 8, "processes": 2}})
    [message] = [r.getMessage() for r in caplog.records]
    assert "--threads-per-worker (threads_per_worker) 4 is not used with --executor slurm" in message
    assert "(4 with this profile)" in message and "cores and processes" in message


# --------------------------------------------------------------------------------------------------
# 6. Unknown scale: keys


def test_unknown_scale_keys_are_refused_like_unknown_slurm_keys(tmp_path):
    """``scale: {max_jobs: 2}`` silently used the fallback maximum of 4 jobs."""
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"slurm": {"queue": "cpu"}, "scale": {"max_jobs": 2}}))
    with pytest.raises(ConfigError) as exc:
        load_slurm_profile(path)
    assert exc.value.message == ("unknown SLURM profile key(s) under scale: max_jobs (known: jobs, minimum_jobs, "
                                 "maximum_jobs)")
    assert exc.value.path == str(path)
    path.write_text(yaml.safe_dump({"slurm": {"queue": "cpu", "max_jobs": 2}}))
    with pytest.raises(ConfigError, match="unknown SLURM profile key\\(s\\) under slurm: max_jobs \\(known: "):
        load_slurm_profile(path)
    path.write_text(yaml.safe_dump({"slurm": {"queue": "cpu"}, "scales": {"jobs": 2}}))
    with pytest.raises(ConfigError, match="unknown SLURM profile section\\(s\\): scales \\(known: slurm, scale\\)"):
        load_slurm_profile(path)
    path.write_text(yaml.safe_dump({"slurm": {"queue": "cpu"}, "scale": {"jobs": "two"}}))
    with pytest.raises(ConfigError, match="scale: jobs in the SLURM profile must be a whole number >= 1"):
        load_slurm_profile(path)


def test_the_adaptive_fallback_is_documented_and_used():
    from pipeline.batch import DEFAULT_MAXIMUM_JOBS, _scale_slurm

    class Cluster:
        def adapt(self, **kw):
            self.kw = kw

    cluster = Cluster()
    assert _scale_slurm(cluster, BatchOptions(executor="slurm", slurm_profile="p.yaml"), {"slurm": {}}) == (0, 4)
    assert cluster.kw == {"minimum_jobs": 0, "maximum_jobs": DEFAULT_MAXIMUM_JOBS} and DEFAULT_MAXIMUM_JOBS == 4
    text = " ".join((REPO / "docs" / "cluster.md").read_text().split())
    assert "`minimum_jobs` and `maximum_jobs` (without them: 0 and 4)" in text


# --------------------------------------------------------------------------------------------------
# 7. Nitpicks


def test_a_shard_refused_by_a_whole_run_is_not_told_to_use_shards(tmp_path):
    out = tmp_path / "out"
    with writer_lock(out):
        with pytest.raises(OutputLocked) as exc:
            with writer_lock(out, "0-of-2"):
                pass
    message = exc.value.message
    assert message.startswith("another ctscore run (pid ") and f"is writing to {out}; wait for it" in message
    assert "for parallel jobs use" not in message  # it is a parallel job already
    with writer_lock(out, "1-of-2"):  # a whole run refused by shards still gets the hint
        with pytest.raises(OutputLocked, match="run this one as a shard too"):
            with writer_lock(out):
                pass


@pytest.mark.parametrize("executor", ["local", "slurm"])
def test_a_resume_with_nothing_to_score_starts_no_cluster(tmp_path, inputs, cfg, monkeypatch, executor):
    import pipeline.batch as batch

    out = tmp_path / "out"
    first = run_pipeline(inputs, out, cfg, all_series=True, batch=BatchOptions(progress=False))
    assert first["n_run"] == N_SERIES

    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started for a resume with nothing to score")

    monkeypatch.setattr(batch, "_start_cluster", no_cluster)
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({"slurm": {"queue": "cpu"}}))
    opts = BatchOptions(executor=executor, workers=2, slurm_profile=str(profile) if executor == "slurm" else None,
                        progress=False)
    summary = run_pipeline(inputs, out, cfg, all_series=True, batch=opts)
    assert (summary["n_skipped"], summary["n_run"], summary["n_failed"]) == (N_SERIES, 0, 1)
    assert summary["executor"] == executor
    # the failed series to try again: a cluster is needed
    with pytest.raises(AssertionError, match="a cluster was started"):
        run_pipeline(inputs, out, cfg, all_series=True, batch=BatchOptions(executor=executor, workers=2,
                     retry_failed=True, slurm_profile=opts.slurm_profile, progress=False))


def test_failure_paths_are_absolute_when_the_input_is_relative(tmp_path, inputs, cfg, monkeypatch):
    """failures.csv mixed `in/s01/file.dcm` (a scan's own error, relative to where ctscore was started) with absolute
    paths (TIMEOUT, WORKER_DIED rows)."""
    shutil.copytree(inputs, tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    summary = run_pipeline("in", "out", cfg, all_series=True, batch=BatchOptions(progress=False))
    [row] = summary["failures"].to_dict("records")
    assert row["code"].startswith("CORRUPT_"), row
    assert os.path.isabs(row["path"]), row["path"]
    assert Path(row["path"]).resolve().is_relative_to((tmp_path / "in" / f"s{CORRUPT:02d}").resolve())


def test_a_python_command_with_arguments_stays_a_command():
    """``python: apptainer exec img.sif python`` was quoted as one word: a command name that does not exist on the
    node (SLURM_NO_WORKERS only after the start timeout)."""
    from pipeline.batch import slurm_cluster_kwargs

    kw = slurm_cluster_kwargs({"slurm": {"python": "apptainer exec /opt/img.sif python -u"}})
    assert kw["python"] == "apptainer exec /opt/img.sif python -u"
    kw = slurm_cluster_kwargs({"slurm": {"python": "$HOME/envs/ct/bin/python"}})
    assert kw["python"] == '"$HOME/envs/ct/bin/python"'
