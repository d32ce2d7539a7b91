"""Batch runs (issue 6): failure isolation on a dask LocalCluster, resume after the driver is killed,
job-array shards merged by ``ctscore aggregate``, resume rules, and the SLURM job script.

Series are small generated chests (40 x 64 x 64, scored on a 3 mm grid in about half a second).
Misbehaving scans (a hang, a worker crash) are injected with the test-only ``$CTSCORE_TEST_HOOKS``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import __version__
from pipeline.batch import (
    BatchOptions,
    Task,
    aggregate,
    collect_statuses,
    input_fingerprint,
    load_slurm_profile,
    needs_work,
    shard,
    slurm_cluster_kwargs,
)
from pipeline.config import load_config
from pipeline.errors import EXIT_SOME_FAILED, EXIT_USAGE, ConfigError, CTScoreError
from pipeline.outputs import TABLES_PENDING, scan_id_for
from pipeline.run import run_pipeline
from tests.scripts_loader import load_script

REPO = Path(__file__).resolve().parents[1]
N_SERIES = 9
CORRUPT, HANG, CRASH = 6, 7, 8  # series indexes (HANG and CRASH misbehave only when the hooks are set)
TABLES = ("scans.csv", "zones.csv", "failures.csv")


@pytest.fixture(scope="module")
def cfg() -> dict:
    return load_config(overrides=["resample.spacing_mm=[3,3,3]"],
                       extra={"segmentation": {"method": "classical"},
                              "outputs": {"write_qc_png": False, "write_masks": False}})


@pytest.fixture(scope="module")
def series(tmp_path_factory, cfg) -> tuple[Path, list[str]]:
    """N_SERIES generated series under one folder; series CORRUPT has a truncated slice. Returns the
    folder and the scan ids by series index."""
    root = tmp_path_factory.mktemp("batch_in")
    bench = load_script("benchmark_batch")
    uids = [bench.write_chest_series(root / f"s{i:02d}", i) for i in range(N_SERIES)]
    victim = sorted((root / f"s{CORRUPT:02d}").glob("*.dcm"))[5]
    data = victim.read_bytes()
    victim.write_bytes(data[:-3000])  # header readable, pixel data short
    return root, [scan_id_for(u, cfg["outputs"]["pseudonym_salt"]) for u in uids]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, series, cfg) -> Path:
    """An uninterrupted serial run over every series (no hooks): the tables the others must equal."""
    out = tmp_path_factory.mktemp("batch_ref")
    summary = run_pipeline(series[0], out, cfg, all_series=True, batch=BatchOptions(progress=False))
    assert (summary["n_ok"], summary["n_failed"]) == (N_SERIES - 1, 1)
    return out


def _hooks(**kw) -> str:
    return json.dumps(kw)


def _same_tables(a: Path, b: Path) -> None:
    for name in TABLES:
        assert (a / name).read_text() == (b / name).read_text(), name


# ---------------------------------------------------------------------------------------------------
# Pure rules


def test_shards_cover_every_item_exactly_once():
    items = list(range(23))
    for n in (1, 2, 3, 7, 30):
        parts = [shard(items, k, n) for k in range(n)]
        assert sorted(x for p in parts for x in p) == items
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ConfigError):
        shard(items, 3, 3)


def test_resume_rules():
    task = Task("scan-a", "1.2", ["f"], fingerprint="fp")
    ok = {"status": "ok", "input_fingerprint": "fp", "config_sha256": "c", "model_id": "m",
          "ctscore_version": __version__}
    failed = {**ok, "status": "failed"}
    assert needs_work(None, task, "c", "m")  # never attempted (or interrupted)
    assert not needs_work(ok, task, "c", "m")
    assert needs_work(ok, task, "c2", "m")  # config changed
    assert needs_work(ok, task, "c", "m2")  # model changed
    assert needs_work({**ok, "ctscore_version": "0.1.0"}, task, "c", "m")  # another version (its scoring rules)
    assert needs_work({**failed, "ctscore_version": "0.1.0"}, task, "c", "m")
    assert needs_work({**ok, "input_fingerprint": "other"}, task, "c", "m")  # input changed
    assert needs_work(ok, task, "c", "m", overwrite=True)
    assert not needs_work(failed, task, "c", "m")  # failures are kept ...
    assert needs_work(failed, task, "c", "m", retry_failed=True)  # ... unless retried


def test_input_fingerprint_follows_files(tmp_path):
    f = tmp_path / "a.dcm"
    f.write_bytes(b"x")
    fp = input_fingerprint([f])
    assert input_fingerprint([str(f)]) == fp
    os.utime(f, ns=(1, 1))
    assert input_fingerprint([f]) != fp


def test_options_are_validated():
    assert BatchOptions(workers=2).resolved_executor() == "local"
    assert BatchOptions().resolved_executor() == "serial"
    for bad in (BatchOptions(shard_index=1), BatchOptions(shard_index=2, num_shards=2),
                BatchOptions(executor="slurm"), BatchOptions(executor="cloud")):
        with pytest.raises(ConfigError):
            bad.validate()


def test_partial_outputs_never_count(tmp_path):
    (tmp_path / ".scan-x.abc.partial").mkdir()
    (tmp_path / ".scan-x.abc.partial" / "result.json").write_text("{}")
    (tmp_path / "scan-y").mkdir()  # a folder without result.json
    assert collect_statuses(tmp_path) == []


# ---------------------------------------------------------------------------------------------------
# Acceptance


def test_local_cluster_isolates_corrupt_and_hanging_scans(tmp_path, series, cfg, monkeypatch):
    """The acceptance case: 2 workers, one corrupt series and one that hangs; every good one completes."""
    root, ids = series
    monkeypatch.setenv("CTSCORE_TEST_HOOKS", _hooks(sleep={ids[HANG]: 120}))
    # 8 s: healthy 3-mm scans take 1-3 s, but one ran past 4 s on a loaded 2-core machine (a full suite beside
    # other work) and was recorded TIMEOUT too
    opts = BatchOptions(executor="local", workers=2, threads_per_worker=1, timeout_s=8, progress=False)
    t = time.perf_counter()
    summary = run_pipeline(root, tmp_path, cfg, all_series=True, batch=opts)
    assert time.perf_counter() - t < 120  # the hang was cut short (8 s limit, 120 s hang)
    assert (summary["n_ok"], summary["n_failed"]) == (N_SERIES - 2, 2)
    failures = {r["scan_id"]: r for r in _csv(tmp_path / "failures.csv")}
    assert set(failures) == {ids[CORRUPT], ids[HANG]}
    assert failures[ids[CORRUPT]]["code"] not in {"TIMEOUT", "WORKER_DIED", "INTERNAL_ERROR"}  # the loader's code
    assert failures[ids[CORRUPT]]["path"].endswith("0005.dcm")
    assert failures[ids[HANG]]["code"] == "TIMEOUT" and "8 s" in failures[ids[HANG]]["message"]
    for i, sid in enumerate(ids):
        done = (tmp_path / sid / "result.json").is_file()
        assert done == (i not in (CORRUPT, HANG)), sid
        assert json.loads((tmp_path / ".status" / f"{sid}.json").read_text())["scan_id"] == sid
    assert not list(tmp_path.glob(".*.partial"))


def test_local_cluster_records_a_scan_that_kills_its_worker(tmp_path, series, cfg, monkeypatch):
    """A scan that kills its worker process (twice) is WORKER_DIED; the others of the shard complete.

    Kept apart from the hang: a crash also takes down whatever else runs on that worker, which would
    make the hang's outcome depend on scheduling.
    """
    root, ids = series
    monkeypatch.setenv("CTSCORE_TEST_HOOKS", _hooks(crash=[ids[CRASH]]))
    opts = BatchOptions(executor="local", workers=2, threads_per_worker=1, timeout_s=60, progress=False)
    summary = run_pipeline(root, tmp_path, cfg, all_series=True, batch=opts)
    failures = {r["scan_id"]: r for r in _csv(tmp_path / "failures.csv")}
    assert failures[ids[CRASH]]["code"] == "WORKER_DIED"
    assert set(failures) == {ids[CORRUPT], ids[CRASH]}
    assert summary["n_ok"] == N_SERIES - 2


def test_sigkill_driver_then_resume_equals_uninterrupted_run(tmp_path, series, reference, cfg):
    root, ids = series
    out = tmp_path / "out"
    env = {**os.environ, "CTSCORE_TEST_HOOKS": _hooks(sleep={"*": 0.7})}
    cmd = [sys.executable, "-m", "pipeline", "run", str(root), "-o", str(out), "--all-series", "-q",
           "--workers", "2", "--set", "resample.spacing_mm=[3,3,3]", "--set", "outputs.write_qc_png=false",
           "--set", "outputs.write_masks=false", "--segmenter", "classical"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(list(out.glob("scan-*/result.json"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # dask workers exit when their parent goes away
    finished = {p.parent.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.glob("scan-*/result.json")}
    assert 3 <= len(finished) < N_SERIES - 1, "the driver was not killed midway"
    assert not (out / "scans.csv").exists()
    assert (out / TABLES_PENDING).is_file()  # share, methods, stats, validate refuse (TABLES_STALE) until written

    summary = run_pipeline(root, out, cfg, all_series=True,
                           batch=BatchOptions(executor="local", workers=2, progress=False))
    assert summary["n_skipped"] >= len(finished)
    assert summary["n_run"] == N_SERIES - summary["n_skipped"]
    for sid, stamp in finished.items():  # no finished series was processed twice
        p = out / sid / "result.json"
        assert (p.stat().st_mtime_ns, p.stat().st_ino) == stamp, sid
    _same_tables(out, reference)
    assert not (out / TABLES_PENDING).exists()


def test_shards_cover_every_series_once_and_aggregate_merges_them(tmp_path, series, reference, cfg):
    root, ids = series
    n = 3
    seen: list[str] = []
    for k in range(n):
        summary = run_pipeline(root, tmp_path, cfg, all_series=True,
                               batch=BatchOptions(shard_index=k, num_shards=n, progress=False))
        seen += [r["scan_id"] for r in _csv(tmp_path / "shards" / f"{k}-of-{n}" / "scans.csv")]
        assert summary["n_series"] == len(shard(sorted(ids), k, n))
    assert sorted(seen) == sorted(ids)
    assert not (tmp_path / "scans.csv").exists()
    assert (tmp_path / TABLES_PENDING).is_file()  # OUT's own tables wait for the aggregate
    assert not any((tmp_path / "shards" / f"{k}-of-{n}" / TABLES_PENDING).exists() for k in range(n))
    from pipeline.cli import main

    assert main(["aggregate", str(tmp_path), "-q"]) == EXIT_SOME_FAILED  # one corrupt series
    _same_tables(tmp_path, reference)
    assert not (tmp_path / TABLES_PENDING).exists()
    run = json.loads((tmp_path / "run.json").read_text())
    # all_series=True is recorded as the setting it is (selection.one_per_study false)
    assert run["n_series"] == N_SERIES and run["config"] == {**cfg, "selection": {**cfg["selection"],
                                                                                  "one_per_study": False}}
    # provenance of the shards, not of the aggregating call: their input, versions and summed time
    shard_runs = [json.loads((tmp_path / "shards" / f"{k}-of-{n}" / "run.json").read_text()) for k in range(n)]
    assert run["input"] == shard_runs[0]["input"] == str(Path(root).resolve())
    assert run["aggregated_from"] == [f"{k}-of-{n}" for k in range(n)]
    assert run["versions"] == shard_runs[0]["versions"]
    assert run["seconds"] == pytest.approx(sum(r["seconds"] for r in shard_runs), abs=0.05)
    assert run["config_sha256"] == shard_runs[0]["config_sha256"]


def test_resume_overwrite_retry_failed_and_changed_inputs(tmp_path, series, cfg):
    src, ids = series
    root = tmp_path / "in"
    for i in (0, CORRUPT):
        shutil.copytree(src / f"s{i:02d}", root / f"s{i:02d}")
    out = tmp_path / "out"

    def run(c=cfg, **kw) -> dict:
        return run_pipeline(root, out, c, all_series=True, batch=BatchOptions(progress=False, **kw))

    assert (run()["n_run"], run()["n_run"]) == (2, 0)  # resume by default
    assert run(retry_failed=True)["n_run"] == 1  # only the failed one
    os.utime(next((root / "s00").glob("*.dcm")), ns=(10**18, 10**18))
    s = run()
    assert (s["n_run"], s["n_ok"], s["n_failed"]) == (1, 1, 1)  # touched input: scored again
    assert run(overwrite=True)["n_run"] == 2
    changed = load_config(overrides=["resample.spacing_mm=[3,3,3]", "scoring.min_involvement_ml=2.0"],
                          extra={"outputs": {"write_qc_png": False, "write_masks": False}})
    assert run(c=changed)["n_run"] == 2  # config changed


def test_serial_timeout_stops_a_hanging_scan(tmp_path, series, cfg, monkeypatch):
    src, ids = series
    root = tmp_path / "in"
    for i in (0, 1):
        shutil.copytree(src / f"s{i:02d}", root / f"s{i:02d}")
    monkeypatch.setenv("CTSCORE_TEST_HOOKS", _hooks(sleep={ids[1]: 60}))
    t = time.perf_counter()
    # 5 s: far below the 60 s hang, well above a healthy 3-mm scan even on a loaded 2-core machine
    # (1 s once failed there in a full suite run: the healthy scan ran past it too)
    summary = run_pipeline(root, tmp_path / "out", cfg, all_series=True,
                           batch=BatchOptions(timeout_s=5, progress=False))
    assert time.perf_counter() - t < 30
    assert (summary["n_ok"], summary["n_failed"]) == (1, 1)
    failures = _csv(tmp_path / "out" / "failures.csv")
    assert [r["code"] for r in failures] == ["TIMEOUT"]
    assert failures[0]["path"] == str((root / "s01").resolve())  # was empty: which series hung?


def test_every_failure_row_names_its_series(tmp_path, series, cfg):
    """failures.csv's ``path`` was empty for NO_LUNG_FOUND (and TIMEOUT, WORKER_DIED, INTERNAL_ERROR): the README
    promises the offending file or series folder for each failed series."""
    src, _ = series
    root = tmp_path / "in"
    shutil.copytree(src / "s00", root / "s00")
    c = json.loads(json.dumps(cfg))
    c["segmentation"]["min_lung_volume_ml"] = 1e9  # no scan has that much lung: NO_LUNG_FOUND
    run_pipeline(root, tmp_path / "out", c, all_series=True, batch=BatchOptions(progress=False))
    failures = _csv(tmp_path / "out" / "failures.csv")
    assert [(r["code"], r["path"]) for r in failures] == [("NO_LUNG_FOUND", str((root / "s00").resolve()))]


def test_aggregate_refuses_an_empty_folder(tmp_path):
    from pipeline.cli import main

    assert main(["aggregate", str(tmp_path), "-q"]) == EXIT_USAGE
    with pytest.raises(Exception, match="NOTHING_TO_AGGREGATE"):
        aggregate(tmp_path)


def test_aggregate_of_a_file_says_it_is_a_file(tmp_path):
    f = tmp_path / "scans.csv"
    f.write_text("scan_id\n")
    with pytest.raises(CTScoreError, match="is a file, not a run's output folder") as err:
        aggregate(f)
    assert err.value.code == "INPUT_NOT_FOUND"
    with pytest.raises(CTScoreError, match="output folder does not exist"):
        aggregate(tmp_path / "missing")


def test_slurm_job_script_from_example_profile(tmp_path, monkeypatch):
    pytest.importorskip("dask_jobqueue")
    monkeypatch.chdir(tmp_path)  # the example's relative log_directory is created where the cluster is made
    from dask_jobqueue import SLURMCluster

    profile = load_slurm_profile(REPO / "scripts" / "slurm" / "profile.example.yaml")
    cluster = SLURMCluster(scheduler_options={"dashboard_address": None}, **slurm_cluster_kwargs(profile))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:1" in script
    assert "#SBATCH -A my-lab" in script
    assert "#SBATCH -p gpu" in script
    assert "#SBATCH -t 04:00:00" in script
    assert "module load cuda/12.1" in script
    assert "--resources GPU=1" in script
    assert "--lifetime 3h45m" in script


def test_array_script_shards_by_task_id():
    text = (REPO / "scripts" / "slurm" / "ctscore_array.sbatch").read_text()
    assert "--shard-index \"$SLURM_ARRAY_TASK_ID\"" in text and "--num-shards \"$NUM_SHARDS\"" in text
    assert "#SBATCH --gres=gpu:1" in text and "#SBATCH --account=" in text and "#SBATCH --time=" in text


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_aggregate_of_a_run_without_shards_keeps_its_input_and_time(tmp_path, series, cfg):
    """run.json after ``ctscore aggregate`` on an OUT made without shards said input "aggregate of OUT" and 0 s:
    where the results came from was lost."""
    src, _ = series
    root = tmp_path / "in"
    shutil.copytree(src / "s00", root / "s00")
    out = tmp_path / "out"
    run_pipeline(root, out, cfg, all_series=True, batch=BatchOptions(progress=False))
    before = json.loads((out / "run.json").read_text())
    aggregate(out)
    after = json.loads((out / "run.json").read_text())
    assert after["input"] == before["input"] == str(root.resolve())
    assert after["seconds"] == before["seconds"] > 0
    assert after["n_ok"] == before["n_ok"] == 1


def test_aggregate_warns_about_results_made_with_different_salts(tmp_path, series, cfg, caplog):
    """Two sites with their own pseudonym salts: one patient was two patient_ids in the merged tables, and aggregate
    gave only its generic 'several inputs' warning (which also fires when the salts match)."""
    import copy
    import logging

    src, _ = series
    outs = []
    for i, salt in enumerate(("site-a-secret", "site-b-secret")):
        c = copy.deepcopy(cfg)
        c["outputs"]["pseudonym_salt"] = salt
        root = tmp_path / f"in{i}"
        shutil.copytree(src / f"s0{i}", root / f"s0{i}")
        outs.append(tmp_path / f"out{i}")
        run_pipeline(root, outs[-1], c, all_series=True, batch=BatchOptions(progress=False))
    ids = [json.loads(next(o.glob("scan-*/result.json")).read_text())["pseudonym_salt_id"] for o in outs]
    assert len(set(ids)) == 2 and all(len(i) == 8 for i in ids)
    assert all("site-a-secret" not in (o / "run.json").read_text() for o in outs)
    merged = tmp_path / "merged"
    merged.mkdir()
    for o in outs:
        for d in o.glob("scan-*"):
            shutil.copytree(d, merged / d.name)
    with caplog.at_level(logging.WARNING, logger="pipeline.batch"):
        summary = aggregate(merged)
    [warning] = [r.getMessage() for r in caplog.records if "different pseudonym salts (salt id" in r.getMessage()]
    assert "made with 2 different pseudonym salts" in warning and f"{ids[0]}: 1 result(s)" in warning
    # a notebook can test it in code (the API twin returns what the console shows)
    assert warning in summary["warnings"]
    # the input ids are salted: one folder scored with two salts would also show as two inputs; the warning says so
    [inputs] = [w for w in summary["warnings"] if "different inputs" in w]
    assert "or one input scored with different pseudonym salts" in inputs
    assert json.loads((merged / "run.json").read_text())["pseudonym_salt_ids"] == {i: 1 for i in sorted(ids)}


def test_benchmark_batch_takes_turns_and_reports_medians_of_three(monkeypatch, capsys):
    """scripts/benchmark_batch.py: 3 repeats by default, the configurations taking turns within each repeat (drift
    in the machine's load falls on all of them), medians printed."""
    bench = load_script("benchmark_batch")
    calls = []

    def fake_time(root, workers, threads, cfg, n):
        calls.append((workers, threads))
        return {1: 10.0, 2: 6.0}[workers] + len(calls) / 100

    monkeypatch.setattr(bench, "time_config", fake_time)
    monkeypatch.setattr(bench, "write_chest_series", lambda *a, **k: None)
    assert bench.main(["--series", "2"]) == 0
    assert calls == [(1, 1), (2, 1)] * 3
    out = capsys.readouterr().out
    assert "median 10.0 s over 3 run(s)" in out and "median 6.0 s over 3 run(s)" in out
