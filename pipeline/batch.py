"""Batch runs over many series: serial, on a dask LocalCluster, or on SLURM through dask-jobqueue.

The unit of work is one series (:func:`pipeline.run.process_series`); this module only decides which
series still need work, hands them to an existing engine and records what happened:

* **Executors.** ``serial`` runs in this process; ``local`` starts a ``dask.distributed.LocalCluster``
  (one process per worker, ``threads_per_worker`` threads each); ``slurm`` starts a
  ``dask_jobqueue.SLURMCluster`` from a YAML profile (see ``scripts/slurm/profile.example.yaml``).
  Job arrays use :func:`shard` (``--shard-index K --num-shards N``) with any executor.
* **Resume.** Every attempt ends in a per-scan record ``OUT/.status/<scan_id>.json`` (written
  atomically by the process that ran the scan) and, when it succeeded, in ``OUT/<scan_id>/result.json``
  (the series folder is renamed into place only when complete). A scan is skipped when its state is
  ``ok`` and its input fingerprint, config hash and model id all match; a failed scan with the same
  inputs is kept as failed unless ``retry_failed``; ``overwrite`` redoes everything.
* **Isolation.** A scan that raises is a failure record (``process_series`` never raises for a bad scan); a scan
  that runs past ``timeout_s`` is recorded as ``TIMEOUT`` and its worker takes no new scan and is
  restarted by its dask Nanny; a scan that kills its worker (segfault, out of memory) more than
  ``allowed_failures`` times is recorded as ``WORKER_DIED`` (serial executor: counted across runs by the
  scan's ``started`` record, see :func:`run_task`). All other scans go on.
* **Output folder.** An output folder that cannot be written (a full disk, a read-only or vanished folder) is no
  fault of the scan and would fail every scan after it: ``process_series`` raises CTScoreError
  ``OUTPUT_UNWRITABLE``, and so does a per-scan record that cannot be written. That scan keeps no outcome (it is
  scored on resume) and the run stops with that error, with every executor: a dask run gives the scans not yet
  started back and lets those under way finish (their outcomes are recorded as usual).
* **One writer.** The driver holds a lock on the output folder (a shard: on its shard) for the whole run; a second
  run into it is refused with ``OUTPUT_LOCKED`` before it scores anything (:func:`writer_lock`).
* **Tables** are a pure function of the per-scan records (:func:`collect_statuses`), so a resumed run,
  an uninterrupted run and ``ctscore aggregate`` over shards write the same ``scans.csv``,
  ``zones.csv`` and ``failures.csv``.

dask and dask-jobqueue are imported only when their executor is used.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline import __version__, version_key
from pipeline.errors import ConfigError, CTScoreError, OutputLocked
from pipeline.outputs import (
    TABLES_PENDING,
    CommitGate,
    ScanCancelled,
    atomic_write_bytes,
    atomic_write_json,
    commit_started,
    device_text,
    mark_tables_pending,
    reset_commit_state,
    restore_interrupted,
    scan_id_for,
    series_location,
    set_aside_earlier_copy,
    set_commit_gate,
)
from segmentation.factory import uses_gpu

log = logging.getLogger(__name__)

EXECUTORS = ("serial", "local", "slurm")
STATUS_DIR = ".status"
SHARDS_DIR = "shards"
DEFAULT_TIMEOUT_S = 3600.0
STARTED = "started"  # the status of a record written before a scan runs (see write_started)
TEST_HOOKS_ENV = "CTSCORE_TEST_HOOKS"


# --------------------------------------------------------------------------------------------------
# Options and tasks


@dataclass
class BatchOptions:
    """How to run a batch. The defaults reproduce a plain serial, resumable run."""

    executor: str | None = None  # serial | local | slurm; None: local when workers > 1, else serial
    workers: int = 1  # local: worker processes; slurm: > 1: that many jobs, else the profile's scale: section
    threads_per_worker: int = 1
    slurm_profile: str | Path | None = None
    shard_index: int | None = None
    num_shards: int | None = None
    overwrite: bool = False
    retry_failed: bool = False
    timeout_s: float | None = DEFAULT_TIMEOUT_S  # per scan; None or 0: no limit
    allowed_failures: int = 1  # worker deaths tolerated per scan before it is recorded as WORKER_DIED
    progress: bool | None = None  # None: a bar when stderr is a terminal and logging is at INFO

    def resolved_executor(self) -> str:
        """The executor to use: the one asked for, else ``local`` for more than one worker."""
        ex = self.executor or ("local" if self.workers > 1 else "serial")
        if ex not in EXECUTORS:
            raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {ex!r}")
        return ex

    def shard_name(self) -> str | None:
        """``K-of-N`` for a shard (its folder under ``OUT/shards/``), None for a whole run."""
        return None if self.num_shards is None else f"{self.shard_index}-of-{self.num_shards}"

    def validate(self) -> None:
        """Refuse inconsistent options with a message a user can act on."""
        for name in ("workers", "threads_per_worker", "allowed_failures", "shard_index", "num_shards"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"{name} must be a whole number, got {value!r}")
        if self.timeout_s is not None and (isinstance(self.timeout_s, bool)
                                           or not isinstance(self.timeout_s, (int, float))):
            raise ConfigError(f"timeout_s must be a number of seconds, got {self.timeout_s!r}")
        self.resolved_executor()
        # each option named as the Python field and the command-line option (--workers ...) it comes from
        if self.workers < 0 or self.threads_per_worker < 1:
            raise ConfigError("workers (--workers) must be >= 0 and threads_per_worker (--threads-per-worker) >= 1")
        if self.timeout_s is not None and not self.timeout_s >= 0:  # also refuses NaN
            raise ConfigError(f"timeout_s (--timeout) must be >= 0 seconds (0: no limit), got {self.timeout_s:g}")
        if self.timeout_s is not None and self.timeout_s > threading.TIMEOUT_MAX:  # inf: the alarm cannot be set
            raise ConfigError(f"timeout_s (--timeout) must be at most {threading.TIMEOUT_MAX:.0f} seconds (0: no "
                              f"limit), got {self.timeout_s:g}")
        if self.allowed_failures < 0:
            raise ConfigError(f"allowed_failures must be >= 0, got {self.allowed_failures}")
        if (self.shard_index is None) != (self.num_shards is None):
            raise ConfigError("shard_index and num_shards (--shard-index, --num-shards) go together")
        if self.num_shards is not None and not 0 <= int(self.shard_index or 0) < self.num_shards:
            raise ConfigError(f"shard_index (--shard-index) must be in 0..{self.num_shards - 1}, "
                              f"got {self.shard_index}")
        if self.resolved_executor() == "slurm" and not self.slurm_profile:
            raise ConfigError("executor 'slurm' (--executor slurm) needs slurm_profile (--slurm-profile "
                              "PROFILE.yaml, see scripts/slurm/profile.example.yaml)")


def batch_options(batch: Any = None) -> BatchOptions:
    """The ``batch`` argument of :func:`pipeline.run.run_pipeline` (and :func:`run_batch`) as a :class:`BatchOptions`:
    None (the defaults, those of ``ctscore run``), a BatchOptions, or a mapping of its fields (``{"workers": 2,
    "executor": "local"}``). Anything else, or an unknown field, is a ConfigError (BAD_CONFIG) naming the accepted
    forms and fields. Not yet validated (:meth:`BatchOptions.validate`)."""
    if batch is None:
        return BatchOptions()
    if isinstance(batch, BatchOptions):
        return batch
    known = [f.name for f in fields(BatchOptions)]
    if isinstance(batch, Mapping):
        unknown = [k for k in batch if k not in known]
        if unknown:
            raise ConfigError(f"unknown batch option(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
        return BatchOptions(**batch)
    raise ConfigError(f"batch must be a pipeline.batch.BatchOptions, a mapping of its options (e.g. "
                      f"{{'workers': 2}}; known: {', '.join(known)}) or None, got {type(batch).__name__} "
                      f"{batch!r}"[:600])


@dataclass
class Task:
    """One series to score: what a worker needs, and the fingerprint resume compares."""

    scan_id: str
    series_uid: str
    files: list[str]
    header: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    flags: list[str] = field(default_factory=list)  # the inventory's fixes and warnings (ACQUISITIONS_MERGED ...)
    patient_id: str = ""  # as the tables show it (pseudonymous by default): failed rows keep it too
    study_date: str = ""
    input_id: str = ""  # which INPUT the run was given (:func:`input_id_for`), recorded with the outcome
    shape: tuple[int, int, int] = (0, 0, 0)  # slices, rows, columns from the headers (0: not known)
    alternatives: list[str] = field(default_factory=list)  # stack ids of the study's next eligible stacks
    reader_levels: dict[str, float] = field(default_factory=dict)  # a reader's levels for it (in the fingerprint)
    user_masks: list[str] = field(default_factory=list)  # the kinds of edited masks given for it (--masks)


def input_id_for(input_path: str | Path | None, salt: str) -> str:
    """A salted hash of a run's INPUT folder (its absolute path), recorded in each ``result.json`` and per-scan record
    so that ``ctscore aggregate`` can tell results of different inputs apart without naming the path (folder names
    often hold patient names); "" when the input is not known."""
    from pipeline.outputs import pseudonym

    return pseudonym(_path_key(input_path), salt, "input-", 12) if input_path else ""


def _path_key(path: str | Path) -> str:
    """A path as the fingerprints hash it: absolute, and in one case where the file system ignores case (Windows:
    ``D:\\Study`` and ``d:\\study`` are one folder, and a resume through either spelling finds the other's results;
    ``os.path.normcase``, which changes nothing on POSIX systems)."""
    return os.path.normcase(os.path.abspath(str(path)))


def input_fingerprint(files: Iterable[str | Path]) -> str:
    """sha256 of the sorted (absolute path, size, mtime) of the input files: changes when any file
    of the series is added, removed, replaced or touched."""
    h = hashlib.sha256()
    for f in sorted(_path_key(f) for f in files):
        try:
            st = os.stat(f)
            line = f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n"
        except OSError:
            line = f"{f}\0missing\n"
        h.update(line.encode("utf-8", "surrogateescape"))  # a file name that is not UTF-8 (a Latin-1 CD)
    return h.hexdigest()


def tasks_for(candidates: Sequence[Any], cfg: dict[str, Any]) -> list[Task]:
    """Tasks for the selected series candidates, sorted by scan id (the order of every table)."""
    from pipeline.reader_levels import levels_fingerprint, levels_for
    from pipeline.run import _lobe_inputs, find_user_lobes, find_user_masks, table_patient_id

    salt = cfg["outputs"]["pseudonym_salt"]
    per_series = Counter(cand.series_uid for cand in candidates)
    tasks = []
    for cand in candidates:
        # absolute: a failure's path in failures.csv names the files wherever the run was started from (and a worker
        # whose working directory differs still finds them)
        files = [os.path.abspath(str(f)) for f in cand.files]
        # the scan id hashes the SeriesInstanceUID: stable when a stray file (a localizer, a slice without
        # position) splits the series into stacks and renumbers them; only when several stacks of one series
        # are scored (--all-series) does the stack id tell them apart
        key = cand.series_uid if per_series[cand.series_uid] == 1 and cand.series_uid else (cand.stack_id or
                                                                                            cand.series_uid)
        scan_id = scan_id_for(key, salt)
        # a lobe map of the user's (--lobes) is an input too: replaced, added or removed, the scan is scored again;
        # so are a reader's levels for it (--landmarks), as they are written in its row
        lobes = find_user_lobes(cfg, cand.series_uid)
        levels = levels_for(cfg, scan_id, cand.series_uid)[0]
        masks = find_user_masks(cfg, scan_id, cand.series_uid)  # --masks: inputs too
        fingerprint = levels_fingerprint(input_fingerprint(files + _lobe_inputs(lobes) +
                                                           [str(f) for f in masks.values()]), levels)
        tasks.append(Task(scan_id, cand.series_uid, files, dict(cand.header), fingerprint,
                          flags=list(cand.flags), patient_id=table_patient_id(cand.header, cfg),
                          study_date=str(cand.header.get("study_date") or ""), shape=_declared_shape(cand),
                          alternatives=list(getattr(cand, "alternatives", None) or []), reader_levels=levels,
                          user_masks=sorted(masks)))
    return sorted(tasks, key=lambda t: t.scan_id)


def _declared_shape(cand: Any) -> tuple[int, int, int]:
    """Slices, rows and columns of a candidate as its headers declare them ((0, 0, 0) when not known)."""
    info = getattr(cand, "info", None) or {}
    try:
        return int(info.get("n_slices") or 0), int(info.get("rows") or 0), int(info.get("columns") or 0)
    except (TypeError, ValueError):
        return 0, 0, 0


def _memory_need_gb(task: Task, cfg: dict[str, Any]) -> float:
    """The memory scoring ``task`` takes, estimated from its declared size (GB; 0 when not known)."""
    from pipeline.loading import estimated_peak_mb

    voxels = task.shape[0] * task.shape[1] * task.shape[2]
    return estimated_peak_mb(voxels, bool(cfg["outputs"].get("write_dicom_seg"))) / 1024.0 if voxels else 0.0


def _worker_memory_gb(client) -> float:
    """The least memory a worker of ``client``'s cluster may use before dask stops it (GB; 0 when unlimited)."""
    try:
        limits = [float(w.get("memory_limit") or 0) for w in client.scheduler_info()["workers"].values()]
    except Exception:  # noqa: BLE001 - only a warning depends on it
        return 0.0
    limits = [x for x in limits if x > 0]
    return min(limits) / 2**30 if limits else 0.0


def warn_memory(todo: Sequence[Task], cfg: dict[str, Any], worker_gb: float) -> dict[str, float]:
    """Warn (once) about the series whose estimated need exceeds what a worker may use: dask stops such a worker
    and the series ends WORKER_DIED after minutes of work. Returns each such scan's need in GB."""
    if worker_gb <= 0:
        return {}
    over = {t.scan_id: need for t in todo if (need := _memory_need_gb(t, cfg)) > 0.95 * worker_gb}
    if over:
        big = max(todo, key=lambda t: over.get(t.scan_id, 0.0))
        log.warning("%d series need more memory than a worker may use (%.1f GB each; dask stops a worker at 95 %%), "
                    "e.g. %s (%d x %d x %d voxels, about %.1f GB): they will likely fail WORKER_DIED; run them with "
                    "fewer --workers (--workers 1 uses the whole memory) or on a machine with more", len(over),
                    worker_gb, big.scan_id, *big.shape, over[big.scan_id])
    return over


def shard(items: Sequence[Any], index: int, count: int) -> list[Any]:
    """Shard ``index`` of ``count`` of an ordered list: ``items[index::count]``. Shards 0..count-1
    together hold every item exactly once, and their sizes differ by at most one."""
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard index must be in 0..{count - 1}, got {index}")
    return list(items[index::count])


# --------------------------------------------------------------------------------------------------
# Per-scan records and resume


def record_path(out_dir: Path, scan_id: str) -> Path:
    """Where the record of the last attempt at ``scan_id`` lives."""
    return Path(out_dir) / STATUS_DIR / f"{scan_id}.json"


OUTPUT_UNWRITABLE = "OUTPUT_UNWRITABLE"


def _write_record_file(out_dir: Path, scan_id: str, rec: dict[str, Any]) -> None:
    """Write a per-scan record atomically; an output folder that cannot take it is OUTPUT_UNWRITABLE (as in
    :func:`pipeline.run.process_series`), not an error of the scan."""
    try:
        atomic_write_json(record_path(out_dir, scan_id), rec)
    except OSError as exc:
        raise CTScoreError(OUTPUT_UNWRITABLE, f"cannot write the record of {scan_id} ({exc.strerror or exc}); free "
                           "space or fix the output folder, then run the same command again to resume",
                           out_dir) from exc


def write_record(out_dir: Path, task: Task, status: dict[str, Any], config_sha256: str, model_id: str,
                 attempt: str = "") -> None:
    """Record the outcome of one attempt (atomically): what failed and why, the hashes resume needs, and
    the run's ``attempt`` token (a task that dask runs again in the same run returns this record). Raises
    CTScoreError OUTPUT_UNWRITABLE when the record cannot be written."""
    rec = {k: status.get(k, "") for k in ("scan_id", "series_uid", "status", "code", "message", "path")}
    rec.update(patient_id=task.patient_id, study_date=task.study_date)  # a failed row still names its patient
    if status.get("traceback"):  # an unexpected error: where in the code, for the bug report
        rec["traceback"] = status["traceback"]
    rec.update(scan_id=task.scan_id, series_uid=task.series_uid, input_fingerprint=task.fingerprint,
               input_id=task.input_id, reader_levels=dict(task.reader_levels),
               config_sha256=config_sha256, model_id=model_id, seconds=status.get("seconds"), attempt=attempt,
               finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), ctscore_version=__version__)
    _write_record_file(out_dir, task.scan_id, rec)


def write_started(out_dir: Path, task: Task, starts: int, config_sha256: str, model_id: str,
                  attempt: str = "") -> None:
    """Record (atomically) that an attempt at ``task`` begins: the ``starts``-th in a row without an outcome.

    The record is replaced by the outcome (:func:`write_record`); a ``started`` record found when the scan
    is tried again means the process running it died (a segfault, an out-of-memory kill, a wall-time kill).
    Raises CTScoreError OUTPUT_UNWRITABLE when the record cannot be written.
    """
    _write_record_file(out_dir, task.scan_id, {
        "scan_id": task.scan_id, "series_uid": task.series_uid, "status": STARTED, "starts": starts,
        "input_fingerprint": task.fingerprint, "config_sha256": config_sha256, "model_id": model_id,
        "attempt": attempt, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(),
        "executor": "serial" if _current_dask_worker() is None else "dask"})


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when it cannot be read or holds anything else (a stray file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def scan_state(out_dir: Path, scan_id: str, restore: bool = True) -> dict[str, Any] | None:
    """The state of one scan in ``out_dir``, or None when it has no finished attempt.

    ``restore``: first put back a result folder whose commit was interrupted (:func:`restore_interrupted`); off to
    only look at scans this process does not own (another input's, that shards of it may be committing).

    The record of the last attempt decides; an ``ok`` state also needs the committed
    ``result.json``. With no record (the process died between committing the folder and writing the
    record), a committed ``result.json`` counts as ok. Returned keys: ``status`` (ok | failed),
    ``input_fingerprint``, ``config_sha256``, ``model_id``, plus ``result`` (ok) or the failure fields.
    """
    if restore and restore_interrupted(Path(out_dir), scan_id):
        log.warning("%s: a commit was interrupted; the earlier result folder is put back", scan_id)
    rec = _read_json(record_path(out_dir, scan_id))
    if rec is not None and rec.get("scan_id") != scan_id:  # not a record of ctscore's (a stray file)
        rec = None
    result = _read_json(Path(out_dir) / scan_id / "result.json")
    if result is not None and (result.get("scan_id", scan_id) != scan_id or not isinstance(result.get("scores"), dict)):
        result = None  # another tool's result.json (ctscore's carry their scan_id and scores)
    if rec is not None and rec.get("status") not in ("ok", STARTED):  # a started record has no outcome yet
        return {**rec, "status": "failed"}
    if result is None:
        return None
    # The fingerprint of the files the scan was made from is the one taken before it read them (its task's, in
    # the ok record of the attempt that committed this folder); result.json's is taken after scoring, and a file
    # rewritten in between would make the stale result match the new files.
    fingerprint = result.get("input_fingerprint", "")
    ok_rec = rec if rec is not None and rec.get("status") == "ok" else {}
    if ok_rec.get("input_fingerprint"):
        fingerprint = ok_rec["input_fingerprint"]
    return {
        "status": "ok", "scan_id": scan_id, "series_uid": (result.get("scores") or {}).get("series_uid", ""),
        "input_fingerprint": fingerprint, "config_sha256": result.get("config_sha256", ""),
        "model_id": (result.get("segmenter") or {}).get("model_id", ""), "result": result,
        "ctscore_version": result.get("ctscore_version", ""),
        "input_id": result.get("input_id") or ok_rec.get("input_id", ""), "seconds": ok_rec.get("seconds"),
        # the levels a reader set for it (--landmarks), as its result.json says: resume tells their change apart
        "reader_levels": {name: lm.get("z_mm") for name, lm in (result.get("landmarks") or {}).items()
                          if isinstance(lm, dict) and lm.get("method") == "reader"},
        "user_masks": sorted(result.get("user_masks") or {}),  # the kinds of edited masks it was scored from
    }


def needs_work(state: dict[str, Any] | None, task: Task, config_sha256: str, model_id: str,
               overwrite: bool = False, retry_failed: bool = False) -> bool:
    """Whether ``task`` must run, given its current ``state`` (see :func:`scan_state`)."""
    if overwrite or state is None:
        return True
    # another ctscore version may score differently (its scoring rules): its results are made again
    same = (state.get("input_fingerprint") == task.fingerprint and state.get("config_sha256") == config_sha256
            and state.get("model_id") == model_id and state.get("ctscore_version") == __version__)
    if not same:
        return True
    return state["status"] != "ok" and retry_failed


def status_from_state(state: dict[str, Any]) -> dict[str, Any]:
    """The status dict that :func:`pipeline.run.write_run_tables` takes, rebuilt from a stored state."""
    if state["status"] == "ok":
        res = state["result"]
        return {"scan_id": state["scan_id"], "series_uid": state["series_uid"], "status": "ok",
                "row": res.get("scores", {}), "zones": res.get("zones", []), "timings": res.get("timings_s", {}),
                "landmarks": res.get("landmarks") or {},
                "config_sha256": state["config_sha256"],
                "segmenter": res.get("segmenter", {}), "ctscore_version": res.get("ctscore_version", ""),
                "config": res.get("config"), "input_id": state.get("input_id", ""),
                "source": str((res.get("environment") or {}).get("source") or ""),
                "pseudonym_salt_id": res.get("pseudonym_salt_id", ""),
                "seconds": _scan_seconds(state.get("seconds"), res.get("timings_s"))}
    return {**{k: state.get(k, "") for k in ("scan_id", "series_uid", "status", "code", "message", "path",
                                             "config_sha256", "model_id", "patient_id", "study_date", "input_id")},
            "seconds": _scan_seconds(state.get("seconds"))}


def _scan_seconds(recorded: Any, timings: Any = None) -> float:
    """The time one scan took when it was scored: its record's ``seconds``, else the sum of its result's stage
    timings (a result copied without its record), else 0."""
    value = _seconds(recorded)
    if not value and isinstance(timings, dict):
        value = sum(_seconds(v) for v in timings.values())
    return value


def scan_ids_under(out_dir: Path) -> set[str]:
    """The scan ids with a per-scan record or a result folder in ``out_dir`` (what ``ctscore aggregate`` merges)."""
    out_dir = Path(out_dir)
    found = {p.stem for p in (out_dir / STATUS_DIR).glob("*.json")}
    found |= {p.parent.name for p in out_dir.glob("*/result.json") if not p.parent.name.startswith(".")}
    return found


#: ``.status/run_scans.txt`` in a run's tables folder (OUT, or ``OUT/shards/K-of-N/`` for a shard): the scan ids of the
#: run's whole input (every shard's, before sharding), one a line, written before it scores. ``ctscore aggregate``
#: names those without an outcome (a run killed before it scored them, a shard of an input that grew in between).
#: Not ``*.json``: those are the per-scan records.
RUN_SCANS = Path(STATUS_DIR) / "run_scans.txt"


def input_scans_digest(scan_ids: Iterable[str]) -> dict[str, Any]:
    """The count and sha256 of a run's whole list of scan ids (``input_scans`` of its run.json): the shards of one
    array agree on it unless their input or selection changed between their tasks."""
    ids = sorted(set(scan_ids))
    return {"count": len(ids), "sha256": hashlib.sha256("".join(f"{i}\n" for i in ids).encode()).hexdigest()}


def write_run_scans(folder: Path, scan_ids: Iterable[str]) -> None:
    """Write :data:`RUN_SCANS` into ``folder`` (atomically); OUTPUT_UNWRITABLE when it cannot be written."""
    try:
        atomic_write_bytes(Path(folder) / RUN_SCANS, "".join(f"{i}\n" for i in sorted(set(scan_ids))).encode())
    except OSError as exc:
        raise CTScoreError(OUTPUT_UNWRITABLE, f"cannot write the run's list of series ({exc.strerror or exc}); free "
                           "space or fix the output folder, then run the same command again", folder) from exc


def read_run_scans(folder: Path) -> list[str]:
    """The scan ids of :data:`RUN_SCANS` in ``folder``, sorted ([] when there is none: a run of an earlier version)."""
    try:
        text = (Path(folder) / RUN_SCANS).read_text(encoding="utf-8")
    except (OSError, ValueError):
        return []
    return sorted({line.strip() for line in text.splitlines() if line.strip()})


def collect_statuses(out_dir: Path, scan_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Statuses of ``scan_ids`` (default: every scan with a record or a result in ``out_dir``), sorted by
    scan id. Scans with no finished attempt are left out."""
    out_dir = Path(out_dir)
    if scan_ids is None:
        scan_ids = scan_ids_under(out_dir)
    statuses = []
    for sid in sorted(set(scan_ids)):
        state = scan_state(out_dir, sid)
        if state is not None:
            statuses.append(status_from_state(state))
    return statuses


# --------------------------------------------------------------------------------------------------
# One writer per output folder


LOCK_NAME = ".lock"
_owners: dict[tuple[str, str | None], int] = {}  # (folder, shard) -> the thread of this process holding its lock
_owners_lock = threading.Lock()


def _writing() -> set[tuple[str, str | None]]:
    """The (folder, shard) locks the calling thread holds: run_pipeline takes one and run_batch, called by it, finds
    it held."""
    me = threading.get_ident()
    with _owners_lock:
        return {k for k, owner in _owners.items() if owner == me}


def _claim(key: tuple[str, str | None]) -> bool:
    """Claim ``key`` for the calling thread within this process: False when another thread holds it. Per thread, and
    whatever the file system's locks do (NFS emulates flock with locks of the whole process; some have none): two
    notebook threads running into one folder were both let in."""
    me = threading.get_ident()
    with _owners_lock:
        if _owners.get(key, me) != me:
            return False
        _owners[key] = me
        return True


def _release(key: tuple[str, str | None]) -> None:
    with _owners_lock:
        if _owners.get(key) == threading.get_ident():
            del _owners[key]


def lock_path(out_dir: str | Path, shard: str | None = None) -> Path:
    """The lock file of ``out_dir`` (``OUT/.status/.lock``, out of the inventory of an OUT inside the input), or
    of one shard of it (``OUT/shards/K-of-N/.lock``)."""
    out = Path(out_dir)
    return out / SHARDS_DIR / shard / LOCK_NAME if shard else out / STATUS_DIR / LOCK_NAME


def _take(stack: contextlib.ExitStack, path: Path, exclusive: bool, command: str,
          folder: Path | None = None) -> bool | OSError:
    """``fcntl.flock`` ``path`` (LOCK_EX or LOCK_SH) without waiting, until ``stack`` closes: True when taken, False
    when another process holds a conflicting lock, the OSError when the file system has no locks (ENOLCK,
    EOPNOTSUPP, ENOSYS on some NFS and Lustre mounts). An exclusive holder writes its command, host, pid and start
    time into the file, for the message of a run it refuses."""
    try:
        import fcntl
    except ImportError:  # Windows: LockFileEx
        fcntl = None
        if sys.platform != "win32":
            return OSError(errno.ENOSYS, "neither fcntl nor Windows file locks")
    inside = [path]  # a link planted in OUT (.status, shards, K-of-N or the lock itself) would make the run write
    # (truncate) a file elsewhere, e.g. another user's on a shared scratch space
    while folder is not None and inside[-1].parent != inside[-1] and inside[-1].parent != Path(folder):
        inside.append(inside[-1].parent)
    for p in reversed(inside):
        if p.is_symlink():
            raise CTScoreError(OUTPUT_UNWRITABLE, f"{p.name} in the output folder is a symbolic link (to "
                               f"{os.readlink(p)}): ctscore does not write through it; remove it", p)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        nofollow = getattr(os, "O_NOFOLLOW", 0)
        try:  # held open for the run; not inherited by worker processes
            fh = stack.enter_context(os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | nofollow,
                                                       0o666), "a+"))
        except PermissionError:  # left by another user of a shared folder: locked all the same, without the text
            fh = stack.enter_context(os.fdopen(os.open(path, os.O_RDONLY | nofollow)))
    except OSError as exc:
        raise CTScoreError(OUTPUT_UNWRITABLE, f"cannot write into the output folder ({exc.strerror or exc})",
                           folder or path.parent) from exc
    try:
        if fcntl is None:
            if not _lock_windows(fh.fileno(), exclusive):
                return False
            stack.callback(_unlock_windows, fh.fileno())  # before the file is closed (the stack runs backwards)
        else:
            fcntl.flock(fh.fileno(), (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as exc:
        return False if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES) else exc
    if exclusive:
        with contextlib.suppress(OSError):  # only the text of a refusal
            fh.truncate(0)
            fh.write(json.dumps({"command": command, "host": socket.gethostname(), "pid": os.getpid(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
            fh.flush()
    return True  # closing the file (stack) releases the lock


def _windows_lock_call(name: str, fd: int, *flags: int) -> bool:
    """``kernel32.<name>`` (LockFileEx or UnlockFileEx) on one byte 4 GiB into the file ``fd``; its result."""
    import ctypes
    import msvcrt
    from ctypes import wintypes

    class Overlapped(ctypes.Structure):
        _fields_ = [("internal", ctypes.c_void_p), ("internal_high", ctypes.c_void_p), ("offset", wintypes.DWORD),
                    ("offset_high", wintypes.DWORD), ("event", wintypes.HANDLE)]

    where = Overlapped(None, None, 0, 1, None)
    call = getattr(ctypes.WinDLL("kernel32", use_last_error=True), name)
    return bool(call(wintypes.HANDLE(msvcrt.get_osfhandle(fd)), *flags, 0, 1, 0, ctypes.byref(where)))


def _lock_windows(fd: int, exclusive: bool) -> bool:
    """Windows' ``LockFileEx``, shared or exclusive, without waiting, on one byte 4 GiB into the file (past its
    end: the holder's text stays readable to the runs it refuses). True when taken, False when another process holds
    a conflicting lock; OSError when the file system has none. Released by :func:`_unlock_windows`."""
    import ctypes

    fail_immediately, exclusive_lock, lock_violation, io_pending = 0x1, 0x2, 33, 997
    if _windows_lock_call("LockFileEx", fd, fail_immediately | (exclusive_lock if exclusive else 0)):
        return True
    code = ctypes.get_last_error()
    if code in (lock_violation, io_pending):
        return False
    raise OSError(errno.ENOLCK, ctypes.FormatError(code))


def _unlock_windows(fd: int) -> None:
    """Release :func:`_lock_windows`'s byte now: Windows releases a lock left at close "after a delay that depends on
    system resources", and a run takes the lock twice in a row (before and after its inventory)."""
    _windows_lock_call("UnlockFileEx", fd)


def _holder(path: Path) -> str:
    """Who holds the exclusive lock ``path``, from what it wrote there: "ctscore run (pid P on host H, since T)"."""
    info = _read_json(path) or {}
    return (f"{info.get('command', 'ctscore run')} (pid {info.get('pid', '?')} on host {info.get('host', '?')}, "
            f"since {info.get('since', '?')})")


def writer_busy(out_dir: str | Path) -> str | None:
    """Who holds the lock of ``out_dir`` (:func:`writer_lock`: "ctscore run (pid P on host H, since T)"), or None when
    no run or aggregate writes into it. Only reads: the lock file is opened read-only and a shared lock taken and let
    go at once; a folder without a lock file, a linked lock and a file system without locks count as not busy."""
    path = lock_path(out_dir)
    if (Path(out_dir) / STATUS_DIR).is_symlink() or path.is_symlink() or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        try:
            import fcntl
        except ImportError:  # Windows
            try:
                busy = not _lock_windows(fd, False)
                if not busy:
                    _unlock_windows(fd)
            except OSError:
                busy = False
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                busy = False
            except OSError as exc:
                busy = exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)
    finally:
        os.close(fd)
    return _holder(path) if busy else None


@contextlib.contextmanager
def lock_file(path: str | Path, command: str, target: str | Path, hint: str = "wait for it") -> Iterator[None]:
    """Hold the lock file ``path`` exclusively for ``command`` (e.g. "ctscore train") while it writes ``target``,
    with the same rules as :func:`writer_lock`: per thread within this process, ``flock`` / ``LockFileEx`` between
    processes, one warning and no lock where the file system has none. Raises OutputLocked (OUTPUT_LOCKED) naming the
    holder and ``hint`` (what to do)."""
    from pipeline.errors import OutputLocked

    path = Path(os.path.abspath(path))
    key = (str(path), command)
    if not _claim(key):
        raise OutputLocked(f"another {command} of this process (another thread) is writing to {target}; {hint}",
                           target)
    with contextlib.ExitStack() as stack:
        stack.callback(_release, key)
        got = _take(stack, path, exclusive=True, command=command, folder=path.parent)
        if got is False:
            raise OutputLocked(f"another {_holder(path)} is writing to {target}; {hint}", target)
        if isinstance(got, OSError):
            log.warning("cannot lock %s (%s: the file system has no file locks): nothing stops another %s from "
                        "writing into %s at the same time", path, got.strerror or got, command, target)
        yield


@contextlib.contextmanager
def writer_lock(out_dir: str | Path, shard: str | None = None, aggregating: bool = False):
    """Hold the lock of one writer into ``out_dir`` for the ``with`` block, or raise OutputLocked (OUTPUT_LOCKED)
    naming the process that holds it.

    A run holds ``OUT/.status/.lock`` exclusively; a shard ``K-of-N`` (``shard``) holds it shared, so that shards
    run side by side but not next to a whole run, and holds ``OUT/shards/K-of-N/.lock`` exclusively.
    ``ctscore aggregate`` (``aggregating``) holds it exclusively, or shared while shards run (with a warning that
    their tables are not complete; the ``with`` block then gets True, else False). ``flock`` locks go with the
    process: a killed run leaves the file, not the lock (Windows: ``LockFileEx``, the same). Where the file system has
    no locks, one warning, and the run goes on without."""
    out = Path(out_dir)
    key = (os.path.abspath(out), shard)
    if key in _writing():  # held already by this thread (run_pipeline, then run_batch)
        yield False
        return
    if not _claim(key):
        raise OutputLocked(f"another ctscore run of this process (another thread) is writing to {out}; wait for it")
    path = lock_path(out)
    command = "ctscore aggregate" if aggregating else "ctscore run"
    if aggregating:
        hint = "wait for it"
    elif shard is not None:  # a shard is refused by a whole run (or an aggregate): it already is a parallel job
        hint = ("wait for it: shards (--shard-index/--num-shards) cannot write into an output folder while a run "
                "without them, or ctscore aggregate, writes there")
    else:
        hint = "wait for it, or for parallel jobs use --shard-index/--num-shards"
    shards_running = False
    with contextlib.ExitStack() as stack:
        stack.callback(_release, key)
        got = _take(stack, path, exclusive=shard is None, command=command, folder=out)
        if got is False and shard is None:
            got = _take(stack, path, exclusive=False, command=command, folder=out)  # taken: only shards hold it (shared)
            if got is True and aggregating:
                shards_running = True
                log.warning("shard runs are still writing into %s: the tables hold the series they finished so far; "
                            "run ctscore aggregate again when they have ended", out)
            elif got is True:
                raise OutputLocked(f"ctscore runs of shards (--shard-index/--num-shards) are writing to {out}; wait "
                                   "for them, or run this one as a shard too")
        if got is False:
            raise OutputLocked(f"another {_holder(path)} is writing to {out}; {hint}")
        if got is True and shard is not None:
            got = _take(stack, lock_path(out, shard), exclusive=True, command=f"{command} of shard {shard}",
                        folder=out)
            if got is False:
                raise OutputLocked(f"another {_holder(lock_path(out, shard))} is writing to {out}; wait for it, or "
                                   "give each parallel job its own --shard-index")
        if isinstance(got, OSError):
            log.warning("cannot lock %s (%s: the file system has no file locks): nothing stops another ctscore run "
                        "from writing into %s at the same time", path, got.strerror or got, out)
        yield shards_running


# --------------------------------------------------------------------------------------------------
# The worker side: one scan, with a time limit


class ScanTimeout(BaseException):
    """Raised in the main thread by the serial executor's alarm (a BaseException, so that
    ``process_series``'s ``except Exception`` does not swallow it)."""


def _test_hook(scan_id: str) -> None:
    """FOR TESTS ONLY: misbehave for chosen scans when ``$CTSCORE_TEST_HOOKS`` is set, e.g.
    ``{"sleep": {"scan-abc": 60, "*": 0.5}, "crash": ["scan-def"], "unwritable": ["scan-123"], "log":
    "/tmp/starts.txt", "wait_for": "/tmp/release"}`` (sleep seconds before the scan; SIGKILL the process running it;
    raise OUTPUT_UNWRITABLE as :func:`pipeline.run.process_series` does on a full disk; ``log``: see
    :func:`_test_log`; ``wait_for``: every scan waits until that file exists, at most ``wait_max`` seconds, default
    120: a test holds a run in its scans exactly as long as it needs, not a guessed sleep). Never set in production;
    unset, this does nothing."""
    raw = os.environ.get(TEST_HOOKS_ENV)
    if not raw:
        return
    hooks = json.loads(raw)
    if hooks.get("wait_for"):
        deadline = time.monotonic() + float(hooks.get("wait_max", 120))
        while not os.path.exists(hooks["wait_for"]) and time.monotonic() < deadline:
            time.sleep(0.05)
    if scan_id in hooks.get("crash", []):
        os.kill(os.getpid(), signal.SIGKILL)
    if scan_id in hooks.get("unwritable", []):
        time.sleep(float(hooks.get("sleep", {}).get(scan_id, 0)))
        raise CTScoreError(OUTPUT_UNWRITABLE, f"cannot write the results of {scan_id} ([Errno 28] No space left on "
                           "device); free space or fix the output folder, then run the same command again to resume")
    sleep = hooks.get("sleep", {})
    seconds = sleep.get(scan_id, sleep.get("*", 0))
    if seconds:
        time.sleep(float(seconds))


def _test_log(scan_id: str) -> None:
    """FOR TESTS ONLY: with ``"log": PATH`` in ``$CTSCORE_TEST_HOOKS``, append the scan id to PATH each time a
    task for it begins (before anything else), so a test can count how often a scan was started."""
    raw = os.environ.get(TEST_HOOKS_ENV)
    path = json.loads(raw).get("log") if raw else None
    if path:
        with open(path, "a") as fh:
            fh.write(scan_id + "\n")


_SMALL_KEYS = ("scan_id", "series_uid", "status", "code", "message", "path", "seconds")


def _remove_partials(out_dir: Path, scan_id: str) -> None:
    """Remove temporary folders left by an earlier, interrupted attempt at this scan."""
    for p in out_dir.glob(f".{scan_id}.*.partial"):
        shutil.rmtree(p, ignore_errors=True)


def _forget_attempt(out_dir: Path, scan_id: str, prev: dict[str, Any] | None) -> None:
    """Undo this attempt's ``started`` record: put back the record of the attempt before (``prev``), or none. On a
    full disk the old record may not fit back: then the scan keeps no record (it is scored again on resume)."""
    try:
        if prev is not None:
            atomic_write_json(record_path(out_dir, scan_id), prev)
            return
    except OSError:
        pass
    record_path(out_dir, scan_id).unlink(missing_ok=True)


def _is_unwritable(exc: BaseException) -> bool:
    return isinstance(exc, CTScoreError) and exc.code == OUTPUT_UNWRITABLE


def _worker_died_status(task: Task, deaths: int) -> dict[str, Any]:
    return {"scan_id": task.scan_id, "series_uid": task.series_uid, "status": "failed", "code": "WORKER_DIED",
            "path": series_location(task.files), "message": f"the process died {deaths} time(s) while scoring this series "
                                   "(crash, out of memory, or killed from outside: the OOM killer, scancel, a node "
                                   "reboot); --retry-failed scores it again"}


def _timeout_status(task: Task, timeout_s: float) -> dict[str, Any]:
    return {"scan_id": task.scan_id, "series_uid": task.series_uid, "status": "failed", "code": "TIMEOUT",
            "message": f"no result after {timeout_s:g} s (per-scan timeout); the scan was stopped",
            "path": series_location(task.files), "seconds": round(timeout_s, 2)}


def run_task(task: Task, cfg: dict[str, Any], out_dir: str | Path, timeout_s: float | None = None,
             attempt: str = "", allowed_failures: int = 1) -> dict[str, Any]:
    """Score one series where this function runs (driver or dask worker) and record the outcome.

    Returns a small status (no arrays). ``restart_worker`` is set when a scan ran past ``timeout_s``
    in a worker thread that cannot be stopped: the driver then restarts that worker. Idempotent within
    a run: when dask runs the task again (its result was held by a worker that was restarted), the
    record of this ``attempt`` is returned and the scan is not processed twice.

    A ``started`` record is written before the scan runs. Outside dask (the serial executor),
    a ``started`` record left by an earlier attempt with the same inputs means that the process died while
    scoring this series: after ``allowed_failures + 1`` such deaths the scan is recorded as ``WORKER_DIED``
    without running it again, so that one crashing series cannot block the rest of its shard. (On a dask
    worker, dask counts the deaths itself: ``distributed.scheduler.allowed-failures``.)
    """
    from pipeline.config import config_hash
    from pipeline.run import process_series
    from segmentation.factory import get_segmenter

    _test_log(task.scan_id)
    out_dir = Path(out_dir)
    prev = _read_json(record_path(out_dir, task.scan_id))
    if attempt and prev is not None and prev.get("attempt") == attempt and prev.get("status") != STARTED:
        return {k: prev.get(k) for k in _SMALL_KEYS}
    _remove_partials(out_dir, task.scan_id)
    set_aside_earlier_copy(out_dir, task.scan_id)  # an undeletable .old folder would stop its commit
    segmenter = get_segmenter(cfg)  # cached: loaded once per process
    config_sha256 = config_hash(cfg)
    deaths = 0
    # a started record left by a dask worker is no death of the serial process (dask counts its workers' deaths;
    # a dask run stopped with Ctrl-C or killed whole leaves the records of the scans under way)
    if prev is not None and prev.get("status") == STARTED and _current_dask_worker() is None \
            and prev.get("executor", "serial") == "serial" and all(
            prev.get(k) == v for k, v in (("input_fingerprint", task.fingerprint), ("config_sha256", config_sha256),
                                          ("model_id", segmenter.model_id))):
        deaths = int(prev.get("starts", 1))
    if deaths > allowed_failures:
        status = _worker_died_status(task, deaths)
        log.warning("%s: %s; recorded as failed", task.scan_id, status["message"])
        write_record(out_dir, task, status, config_sha256, segmenter.model_id, attempt)
        return {k: status.get(k) for k in _SMALL_KEYS if k in status}
    write_started(out_dir, task, deaths + 1, config_sha256, segmenter.model_id, attempt)

    def work() -> dict[str, Any]:
        _test_hook(task.scan_id)
        return process_series(task.files, cfg, out_dir, task.scan_id, task.header, segmenter,
                              inventory_flags=task.flags, input_id=task.input_id)

    restart = False
    try:
        if not timeout_s:
            status = work()
        elif threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            status = _run_with_alarm(work, task, timeout_s)
        else:
            status, restart = _run_in_thread(work, task, timeout_s)
    except BaseException:  # Ctrl-C, SystemExit, OUTPUT_UNWRITABLE: not an outcome of the scan; the record as it was
        _forget_attempt(out_dir, task.scan_id, prev)
        raise
    if status["status"] != "ok":
        _remove_partials(out_dir, task.scan_id)
        if status["status"] == "failed" and task.alternatives and status.get("message"):
            status["message"] += (f" (the study has other eligible stacks: {', '.join(task.alternatives)}; "
                                   f"score one with --series-uid {task.alternatives[0]})")
    try:
        write_record(out_dir, task, status, config_sha256, segmenter.model_id, attempt)
    except CTScoreError:  # OUTPUT_UNWRITABLE: no outcome recorded (a committed result folder still counts as ok)
        record_path(out_dir, task.scan_id).unlink(missing_ok=True)
        raise
    small = {k: status.get(k) for k in _SMALL_KEYS if k in status}
    if restart:
        worker = _current_dask_worker()
        if worker is not None:
            _stop_taking_scans(worker)
            small["restart_worker"] = worker.address
        else:
            log.warning("%s: the timed-out scan runs on in a background thread until it ends (its results are "
                        "not kept), as no alarm can stop it here (Windows, or the serial executor outside the main "
                        "thread); use --workers 2 to have it stopped", task.scan_id)
    return small


def _stop_taking_scans(worker: Any) -> None:
    """Have the scheduler send this worker no more scans before it learns that the timed-out one returned: the
    worker is restarted next (a thread of it still runs that scan), and a scan started there in the meantime
    died with it (retried, and counted against it). The status change is queued on the worker's event loop
    ahead of this task's result, so the scheduler sees it first; the restarted worker starts as running. Should
    the restart never come (the driver gone, a failed restart), the process ends itself after
    :data:`RESTART_GRACE_S`, so that the Nanny replaces it and the worker does not sit closed to work for good."""
    from distributed.core import Status

    def exit_if_still_closed() -> None:
        if worker.status == Status.closing_gracefully:
            log.warning("no restart %g s after a timed-out scan: this worker process ends", RESTART_GRACE_S)
            os._exit(1)

    def close_to_new_work() -> None:
        if worker.status == Status.running:
            worker.status = Status.closing_gracefully
            worker.loop.call_later(RESTART_GRACE_S, exit_if_still_closed)

    worker.loop.add_callback(close_to_new_work)


#: Seconds a worker closed to new scans after a timeout waits for the driver's restart before ending itself.
RESTART_GRACE_S = 300.0


def _current_dask_worker() -> Any:
    """The dask worker running this task, or None outside dask."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:
        return None


def _run_with_alarm(work, task: Task, timeout_s: float) -> dict[str, Any]:
    """Serial executor: a SIGALRM interrupts the scan at the next Python instruction, unless the scan has begun
    to commit its result folder (:func:`pipeline.outputs.commit_started`): then its result is in place or being
    put there, and the scan is let finish (stopped between the two renames, or after them, its folder would be
    lost or contradict a TIMEOUT record)."""

    def on_alarm(signum, frame):
        if commit_started():
            return
        raise ScanTimeout()

    reset_commit_state()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, float(timeout_s))
    try:
        return work()
    except ScanTimeout:
        return _timeout_status(task, timeout_s)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _run_in_thread(work, task: Task, timeout_s: float) -> tuple[dict[str, Any], bool]:
    """Run the scan in a daemon thread and stop waiting after ``timeout_s`` (a dask worker; the serial executor
    where no alarm can interrupt it: Windows, or outside the main thread). A thread cannot be killed: the scan is
    cancelled through a :class:`pipeline.outputs.CommitGate` (it runs on, but its results are never put in place,
    as its TIMEOUT record says), or, when it had begun to commit them, waited for and counted as finished. The
    wait is in short steps, so that Ctrl-C reaches the caller meanwhile (a long ``join`` cannot be interrupted on
    Windows before Python 3.14). True second: the caller asks the Nanny to restart the worker process."""
    box: dict[str, Any] = {}
    gate = CommitGate()

    def target() -> None:
        reset_commit_state()
        set_commit_gate(gate)
        try:
            box["status"] = work()
        except ScanCancelled:
            pass  # recorded as timed out by the waiting thread
        except BaseException as exc:  # noqa: BLE001 - reported as the scan's failure
            box["error"] = exc

    th = threading.Thread(target=target, name=f"ctscore-{task.scan_id}", daemon=True)
    th.start()
    deadline = time.monotonic() + timeout_s
    try:
        while th.is_alive() and (left := deadline - time.monotonic()) > 0:
            th.join(min(left, 0.5))
    except BaseException:  # Ctrl-C while waiting: the scan must not put results in place after the run let go
        if not gate.cancel():
            th.join()  # its commit under way: let it end, as the alarm does
        raise
    if th.is_alive():
        if gate.cancel():
            return _timeout_status(task, timeout_s), True
        th.join()  # its commit has begun: its result is in place or being put there
    if "error" in box:
        exc = box["error"]
        if _is_unwritable(exc):  # the output folder's fault, not the scan's: the run stops (see run_task)
            raise exc
        return {"scan_id": task.scan_id, "series_uid": task.series_uid, "status": "failed",
                "code": "INTERNAL_ERROR", "message": f"{type(exc).__name__}: {exc}",
                "path": series_location(task.files)}, False
    return box["status"], False


def segmenter_info(cfg: dict[str, Any]) -> dict[str, str]:
    """Name and model id of the configured segmenter (loads it once in the calling process)."""
    from segmentation.factory import get_segmenter

    seg = get_segmenter(cfg)
    return {"name": seg.name, "model_id": seg.model_id}


def preflight(cfg: dict[str, Any], opts: BatchOptions) -> None:
    """What can be checked before anything is written (``run_pipeline`` calls it before making OUT): the SLURM
    profile is readable; serially, the segmenter loads (the model folder is a model, the device exists; it is
    loaded once and kept for the run); for a local dask run the device exists (the workers load the model). A
    SLURM run's device and model are the compute nodes' to check."""
    executor = opts.resolved_executor()
    if executor == "slurm":
        import importlib.util

        if importlib.util.find_spec("dask_jobqueue") is None:  # an optional extra: said before the inventory is read
            raise ConfigError("--executor slurm needs dask-jobqueue, which is not installed: pip install "
                              "\"ctscore[cluster]\" (or pip install dask-jobqueue), or run a SLURM job array without "
                              "dask (README, \"On SLURM with a job array\")")
        load_slurm_profile(opts.slurm_profile)  # type: ignore[arg-type]
    elif executor == "serial":
        segmenter_info(cfg)
    elif uses_gpu(cfg["segmentation"]["method"]):
        from segmentation.monai_segmenter import resolve_device

        resolve_device(str(cfg["segmentation"].get("device", "auto")))


def wants_gpu(cfg: dict[str, Any]) -> bool:
    """Whether the configured segmenter runs on a GPU here (one that never does, as classical, does not:
    segmentation.factory.SEGMENTERS)."""
    seg = cfg["segmentation"]
    if not uses_gpu(seg["method"]):
        return False
    device = str(seg.get("device", "auto"))
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# --------------------------------------------------------------------------------------------------
# dask clusters


def pinned_gpu(worker_name: Any, n_gpus: int, visible: str | None) -> str:
    """The one GPU a worker uses: its index (the last number of its name: ``3`` of a LocalCluster, ``1`` of
    ``SLURMCluster-7-1``, the second process of job 7) into the GPUs this process may see (``visible``, the
    CUDA_VISIBLE_DEVICES that the user or SLURM set, else ``0..n_gpus-1``)."""
    gpus = [g.strip() for g in visible.split(",") if g.strip()] if visible else [str(i) for i in range(n_gpus)]
    if not gpus:
        return ""
    try:
        index = int(str(worker_name).rsplit("-", 1)[-1])
    except ValueError:
        index = 0
    return gpus[index % len(gpus)]


class _WorkerSetupMixin:
    """dask WorkerPlugin: limit ITK threads to the worker's threads, pin one GPU per worker.

    Runs again in a worker restarted by its Nanny (after a timeout or a crash). The plugin class,
    :class:`WorkerSetup`, is built on first use (module ``__getattr__``) so that importing this module
    does not import dask.
    """

    idempotent = True
    name = "ctscore-worker-setup"

    def __init__(self, threads: int, n_gpus: int = 0):
        self.threads = threads
        self.n_gpus = n_gpus

    def setup(self, worker) -> None:
        import SimpleITK as sitk

        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(self.threads)
        if self.n_gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = pinned_gpu(worker.name, self.n_gpus,
                                                            os.environ.get("CUDA_VISIBLE_DEVICES"))
        log.debug("worker %s: %d ITK threads, CUDA_VISIBLE_DEVICES=%s", worker.name, self.threads,
                  os.environ.get("CUDA_VISIBLE_DEVICES", ""))


def __getattr__(name: str) -> Any:
    if name == "WorkerSetup":
        from distributed import WorkerPlugin

        cls = type("WorkerSetup", (_WorkerSetupMixin, WorkerPlugin), {"__module__": __name__})
        globals()["WorkerSetup"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _worker_setup(threads: int, n_gpus: int = 0) -> Any:
    return __getattr__("WorkerSetup")(threads, n_gpus)


def load_slurm_profile(path: str | Path) -> dict[str, Any]:
    """Read a SLURM profile (YAML with a ``slurm:`` section and an optional ``scale:`` section) and check it
    (:func:`check_slurm_profile`: an unknown or misspelt key is a ConfigError naming the known ones)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read SLURM profile: {exc}", path) from exc
    if not isinstance(data, dict) or not isinstance(data.get("slurm"), dict):
        raise ConfigError("a SLURM profile needs a 'slurm:' mapping (see scripts/slurm/profile.example.yaml)", path)
    try:
        check_slurm_profile(data)
    except ConfigError as exc:
        raise ConfigError(exc.message, exc.path or path) from None
    return data


_PROFILE_KEYS = {"queue", "account", "walltime", "cores", "processes", "memory", "gpus_per_job", "prologue",
                 "worker_lifetime", "lifetime_stagger", "local_directory", "log_directory", "interface",
                 "job_extra_directives", "python", "job_name", "worker_start_timeout"}
_TOP_KEYS = ("slurm", "scale")
_SCALE_KEYS = ("jobs", "minimum_jobs", "maximum_jobs")
#: ``scale:`` without ``jobs:`` and without ``maximum_jobs:`` (and ``--workers`` 1): at most this many jobs at once.
DEFAULT_MAXIMUM_JOBS = 4
#: ``slurm: worker_start_timeout`` when the profile does not set it: how long a run waits for its first worker.
DEFAULT_WORKER_START_TIMEOUT_S = 1800.0


def check_slurm_profile(profile: dict[str, Any]) -> None:
    """Refuse (ConfigError BAD_CONFIG) what a SLURM profile cannot mean: unknown keys at the top, under ``slurm:``
    or under ``scale:`` (a misspelt ``max_jobs:`` would silently leave the default maximum), job counts that are
    not whole numbers, and a ``worker_start_timeout`` that is not a duration."""
    unknown = sorted(set(profile) - set(_TOP_KEYS), key=str)
    if unknown:
        raise ConfigError(f"unknown SLURM profile section(s): {', '.join(map(str, unknown))} "
                          f"(known: {', '.join(_TOP_KEYS)})")
    try:
        slurm_cluster_kwargs(profile)  # unknown slurm: keys
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"slurm: cores, processes and gpus_per_job in the SLURM profile must be whole numbers, "
                          f"and prologue and job_extra_directives lists ({exc})") from None
    worker_start_timeout(profile)
    scale_settings(profile)


def scale_settings(profile: dict[str, Any]) -> dict[str, int]:
    """The profile's ``scale:`` section, checked: ``jobs`` (a fixed number), or ``minimum_jobs`` (default 0) and
    ``maximum_jobs`` (default :data:`DEFAULT_MAXIMUM_JOBS`). An unknown key is a ConfigError listing the known ones."""
    scale = profile.get("scale")
    if scale is None:
        scale = {}
    if not isinstance(scale, dict):
        raise ConfigError(f"the SLURM profile's 'scale:' must be a mapping of {', '.join(_SCALE_KEYS)}, got {scale!r}")
    unknown = sorted(set(scale) - set(_SCALE_KEYS), key=str)
    if unknown:
        raise ConfigError(f"unknown SLURM profile key(s) under scale: {', '.join(map(str, unknown))} "
                          f"(known: {', '.join(_SCALE_KEYS)})")
    out: dict[str, int] = {}
    for key, value in scale.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "jobs" else 0):
            raise ConfigError(f"scale: {key} in the SLURM profile must be a whole number >= "
                              f"{1 if key == 'jobs' else 0}, got {value!r}")
        out[key] = value
    if "jobs" not in out:
        out.setdefault("minimum_jobs", 0)
        out.setdefault("maximum_jobs", max(DEFAULT_MAXIMUM_JOBS, out["minimum_jobs"]))
        if out["maximum_jobs"] < max(1, out["minimum_jobs"]):
            raise ConfigError(f"scale: maximum_jobs in the SLURM profile must be >= 1 and >= minimum_jobs "
                              f"({out['minimum_jobs']}), got {out['maximum_jobs']}")
    return out


_DURATION_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def worker_start_timeout(profile: dict[str, Any]) -> float | None:
    """``slurm: worker_start_timeout`` in seconds (a number, or ``90s``, ``30m``, ``2h``, ``1d``; default
    :data:`DEFAULT_WORKER_START_TIMEOUT_S`): how long a run waits for its first worker before it gives up with
    SLURM_NO_WORKERS. 0: wait as long as it takes. None when there is no limit."""
    value = (profile.get("slurm") or {}).get("worker_start_timeout")
    if value is None:
        return DEFAULT_WORKER_START_TIMEOUT_S
    seconds = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-z]*)\s*", value.lower())
        if m and m.group(2) in _DURATION_UNITS:
            seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if seconds is None or not 0 <= seconds < float("inf"):
        raise ConfigError(f"slurm: worker_start_timeout in the SLURM profile must be a duration (seconds, or e.g. "
                          f"90s, 30m, 2h; 0: no limit), got {value!r}")
    return seconds or None


def _shell_word(value: str) -> str:
    """``value`` as one word of the job script's worker command line, whatever it expands to on the node: plain
    words as they are, anything else in double quotes, so that ``$VAR`` and ``${VAR:-/tmp}`` still expand there
    but an unset variable (or a path with a space) can no longer swallow the next argument or split in two. A
    leading ``~/`` becomes ``$HOME/`` (no tilde expansion inside quotes); a value already in quotes is kept."""
    value = str(value)
    if re.fullmatch(r"[A-Za-z0-9_./:@%+=,-]+", value):
        return value
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value
    if value == "~" or value.startswith("~/"):
        value = "$HOME" + value[1:]
    return '"' + re.sub(r'(["\\`])', r"\\\1", value) + '"'


def slurm_cluster_kwargs(profile: dict[str, Any]) -> dict[str, Any]:
    """SLURMCluster keyword arguments from a profile's ``slurm:`` section.

    Each worker runs one scan at a time (``--nthreads 1`` after dask-jobqueue's ``--nthreads cores/processes``: the
    last one counts), and :class:`WorkerSetup` gives that scan ``cores / processes`` ITK threads;
    ``gpus_per_job`` becomes ``--gres=gpu:N`` and the worker resource ``GPU=1``, and must equal ``processes`` (one
    GPU per worker process: ConfigError BAD_CONFIG naming both keys otherwise);
    ``prologue`` (e.g. module loads) goes before the worker starts; ``worker_lifetime`` makes workers retire
    before the wall time (``--lifetime``); :func:`_scale_slurm` keeps submitting jobs to replace them.
    ``local_directory``, ``python`` and ``interface`` go into the worker's command line as one shell word each
    (:func:`_shell_word`: ``$TMPDIR`` unset on a node no longer swallows the next argument).
    ``worker_start_timeout`` is ctscore's own (see :func:`worker_start_timeout`), not a SLURMCluster argument.
    """
    s = dict(profile["slurm"])
    unknown = set(s) - _PROFILE_KEYS
    if unknown:
        raise ConfigError(f"unknown SLURM profile key(s) under slurm: {', '.join(sorted(map(str, unknown)))} "
                          f"(known: {', '.join(sorted(_PROFILE_KEYS))})")
    gpus = int(s.get("gpus_per_job", 0) or 0)
    processes = int(s.get("processes", 1))
    kwargs: dict[str, Any] = {
        "queue": s.get("queue"), "account": s.get("account"), "walltime": s.get("walltime", "01:00:00"),
        "cores": int(s.get("cores", 1)), "processes": processes, "memory": str(s.get("memory", "16GB")),
        "job_script_prologue": list(s.get("prologue", [])),
        "job_extra_directives": list(s.get("job_extra_directives", [])),
        "worker_extra_args": [],
    }
    if gpus and gpus != processes:
        # refused, not adjusted: processes also divides the job's cores and memory among the workers, which a silent
        # change would halve or double (an audit: gpus_per_job 2 with processes 1 ran two scans on one card, the
        # other idle; gpus_per_job 1 with processes 2 pinned both workers to the one card)
        raise ConfigError(f"slurm: gpus_per_job ({gpus}) and slurm: processes ({processes}) in the SLURM profile must "
                          f"be equal: each worker process scores one scan at a time on a GPU of its own; set processes: "
                          f"{gpus} (the job's cores and memory are shared among its processes) or gpus_per_job: "
                          f"{processes}")
    if gpus:
        kwargs["job_extra_directives"].append(f"--gres=gpu:{gpus}")
        kwargs["worker_extra_args"] += ["--resources", "GPU=1"]
    if s.get("worker_lifetime"):
        kwargs["worker_extra_args"] += ["--lifetime", _shell_word(s["worker_lifetime"]),
                                        "--lifetime-stagger", _shell_word(s.get("lifetime_stagger", "2m"))]
    # one scan at a time per worker (see :func:`_start_cluster`): its threads speed up that scan (WorkerSetup) instead
    # of each running a scan of its own
    kwargs["worker_extra_args"] += ["--nthreads", "1"]
    for key in ("local_directory", "python", "interface"):
        if s.get(key):  # $VARS are left for the job's shell (node-local $TMPDIR), quoted as one word
            kwargs[key] = _shell_word(s[key])
    if s.get("python"):  # a command with arguments (apptainer exec img.sif python, python -u): word by word
        import shlex

        kwargs["python"] = " ".join(_shell_word(w) for w in shlex.split(str(s["python"])))
    for key in ("log_directory", "job_name"):  # #SBATCH lines and the driver's own folder: no shell there
        if s.get(key):
            kwargs[key] = str(s[key])
    return kwargs


def check_local_gpu_device(cfg: dict[str, Any], n_gpus: int) -> None:
    """The local executor pins one GPU to each worker (CUDA_VISIBLE_DEVICES), so inside a worker the only GPU
    is ``cuda:0``: a device ``cuda:N`` would name another GPU per worker, or none. Refused with the way out."""
    dev = str(cfg["segmentation"].get("device", "auto")).strip().lower()
    if n_gpus and ":" in dev and dev.split(":", 1)[0] in ("cuda", "gpu"):
        raise ConfigError(f"--device {dev} with --workers: each worker gets one GPU of its own; use --device cuda "
                          f"(or auto), and CUDA_VISIBLE_DEVICES to choose which GPUs the run may use")


def _scale_slurm(cluster, opts: BatchOptions, profile: dict[str, Any]) -> tuple[int, int]:
    """Ask for worker jobs: a fixed number (``--workers N`` with N > 1, else ``scale: jobs: N``) or adaptive
    between ``scale: minimum_jobs`` (default 0) and ``maximum_jobs`` (default :data:`DEFAULT_MAXIMUM_JOBS`).
    Returns the (minimum, maximum) number of jobs asked for.

    A fixed number is ``adapt(minimum_jobs=N, maximum_jobs=N)``, not ``scale(jobs=N)``: ``scale`` does not
    replace jobs that end (a worker retired by ``worker_lifetime``, a job killed at its wall time), and the
    run would wait forever for workers (dask-jobqueue issues #122, #611); the adaptive loop submits new ones.
    """
    scale = scale_settings(profile)
    if opts.workers > 1 or "jobs" in scale:
        jobs = int(opts.workers if opts.workers > 1 else scale["jobs"])
        cluster.adapt(minimum_jobs=jobs, maximum_jobs=jobs)
        return jobs, jobs
    cluster.adapt(minimum_jobs=scale["minimum_jobs"], maximum_jobs=scale["maximum_jobs"])
    return scale["minimum_jobs"], scale["maximum_jobs"]


#: variables that distributed's Nanny sets in the calling process too (``distributed.nanny.pre-spawn-environ``, applied
#: with ``os.environ.update`` before it starts each worker): put back after a run, or a notebook's later runs and its
#: own PyTorch got one thread
_WORKER_ENVIRON = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def _dask_settings(opts: BatchOptions):
    """The dask settings of a run, as a context manager: the scheduler reads them while the cluster runs, and
    they are undone afterwards (a notebook that calls :func:`run_batch` keeps its own settings, and its thread-count
    variables, :data:`_WORKER_ENVIRON`)."""
    saved = {v: os.environ.get(v) for v in _WORKER_ENVIRON}
    try:
        with _dask_config(opts):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _dask_config(opts: BatchOptions):
    import dask
    import distributed  # noqa: F401 - adds its defaults now: leaving the context must keep them

    return dask.config.set({
        "distributed.scheduler.allowed-failures": int(opts.allowed_failures),
        # One scan per worker thread (one per worker: _start_cluster) at a time: with the default saturation (1.1)
        # a second scan waits on each worker as "processing", and dies with it (counted against it) if its
        # neighbour crashes the worker. Scans are long, so queueing on the scheduler costs nothing.
        "distributed.scheduler.worker-saturation": 1.0,
    })


def _started(make):
    """``make()``, a dask cluster; interrupted while it starts (Ctrl-C in a notebook), the clusters it had begun are
    closed (distributed cleans up after an Exception only: its scheduler and worker processes stayed in the kernel)."""
    from distributed.deploy.spec import SpecCluster

    before = set(SpecCluster._instances)
    try:
        return make()
    except BaseException:
        for cluster in set(SpecCluster._instances) - before:
            _close_quietly(cluster)
        raise


def _start_cluster(opts: BatchOptions, cfg: dict[str, Any], executor: str):
    """A started dask cluster, its worker plugin, its resources per task (``{"GPU": 1}`` for GPU work, else None)
    and, for SLURM, how to wait for the first result (:func:`_first_result_from_slurm`, given the client and the
    future; None for a LocalCluster, whose workers are there when it has started)."""
    import dask

    if executor == "local":
        from distributed import LocalCluster

        n_gpus = 0
        if wants_gpu(cfg):
            import torch

            n_gpus = torch.cuda.device_count()
        check_local_gpu_device(cfg, n_gpus)
        workers = max(1, opts.workers)
        kwargs: dict[str, Any] = {}
        if n_gpus:
            if workers > n_gpus:
                log.warning("%d workers asked for but %d GPU(s) found: one worker per GPU", workers, n_gpus)
                workers = n_gpus
            kwargs["resources"] = {"GPU": 1}
        threads = opts.threads_per_worker
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{v}": threads
                              for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}):
            # one dask thread: one scan at a time per worker, with --threads-per-worker threads for ITK and BLAS
            # (WorkerSetup, the variables above). A worker of T dask threads ran T scans at once, each with T threads
            # and a scan's memory (an audit); a resource (SCAN=1) would do it too, but dask queues only tasks without
            # resources on the scheduler: the others all wait on a worker, and a crash there counts against each
            cluster = _started(lambda: LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                    dashboard_address=":0", scheduler_port=0, **kwargs))
        log.info("LocalCluster: %d worker(s), one scan at a time each with %d thread(s)%s", workers, threads,
                 f", one GPU each ({n_gpus} found)" if n_gpus else "")
        return cluster, _worker_setup(threads, n_gpus), ({"GPU": 1} if n_gpus else None), None
    SLURMCluster = _slurm_cluster_class()  # noqa: N806 - the class

    profile = load_slurm_profile(opts.slurm_profile)  # type: ignore[arg-type]
    kwargs = slurm_cluster_kwargs(profile)
    processes = max(1, kwargs["processes"])
    if opts.threads_per_worker != 1:
        warn_threads_ignored(opts.threads_per_worker, profile)
    _warn_bare_variables(profile)
    jobs = _SlurmJobs()
    cluster = _started(lambda: SLURMCluster(scheduler_options={"dashboard_address": None},
                                            job_cls=_recording_job_class(jobs), **kwargs))
    try:  # scaling submits jobs: interrupted or failed here, the caller has no cluster to close
        asked = _scale_slurm(cluster, opts, profile)
        log.info("SLURMCluster started; job script:\n%s", cluster.job_script())
    except BaseException:
        _close_quietly(cluster)
        raise
    gpus = int(profile["slurm"].get("gpus_per_job", 0) or 0)
    # each worker process of a job takes one of the job's GPUs (SLURM sets CUDA_VISIBLE_DEVICES to them)
    setup = _worker_setup(kwargs["cores"] // processes, gpus if processes > 1 else 0)
    wait = functools.partial(_first_result_from_slurm, jobs=jobs, timeout_s=worker_start_timeout(profile),
                             logs=_job_logs(kwargs), asked=asked)
    return cluster, setup, ({"GPU": 1} if gpus else None), wait


def _slurm_cluster_class() -> Any:
    """dask-jobqueue's SLURMCluster, imported without its SIGINT handler.

    Importing dask_jobqueue (its ``runner`` module) replaces Python's SIGINT handler with one that calls
    ``sys.exit()``: Ctrl-C then ended a SLURM run with exit code 0 and no message, instead of KeyboardInterrupt (exit
    130 and the resume hint, as with the other executors). The handler in place before the import is put back."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        from dask_jobqueue import SLURMCluster
    finally:
        if previous is not None and signal.getsignal(signal.SIGINT) is not previous:
            signal.signal(signal.SIGINT, previous)
    return SLURMCluster


def warn_threads_ignored(threads_per_worker: int, profile: Any = None) -> None:
    """Warn that ``threads_per_worker`` (``--threads-per-worker``) does not apply to the slurm executor: a worker of
    a SLURM job runs ``cores / processes`` threads of the profile's ``slurm:`` section (``profile``: the profile or
    its path, to name that number)."""
    threads = None
    with contextlib.suppress(Exception):  # a profile that cannot be read is refused by the run itself
        data = profile if isinstance(profile, dict) else load_slurm_profile(profile)
        kw = slurm_cluster_kwargs(data)
        threads = max(1, kw["cores"] // max(1, kw["processes"]))
    here = f" ({threads} with this profile)" if threads else ""
    log.warning("--threads-per-worker (threads_per_worker) %s is not used with --executor slurm: each worker runs "
                "cores / processes threads of the SLURM profile's slurm: section%s; set cores and processes there",
                threads_per_worker, here)


def _warn_bare_variables(profile: dict[str, Any]) -> None:
    """Warn that ``local_directory`` names a variable with no fallback (``$TMPDIR``): where it is not set on a
    node, the worker puts its scratch files into its working directory (the quoted word is empty)."""
    value = str(profile["slurm"].get("local_directory") or "")
    always = ("HOME", "USER", "LOGNAME")  # and SLURM's own: set in every job
    bare = [name for a, b in re.findall(r"\$(?:\{(\w+)\}|(\w+))", value)
            if (name := a or b) not in always and not name.startswith("SLURM")]
    if bare:
        names = ", ".join(dict.fromkeys(bare))
        log.warning("slurm: local_directory %s: where %s is not set on a node, the workers there write their scratch "
                    "files into the job's working directory; write ${%s:-/tmp} for a fallback", value, names, bare[0])


class _SlurmJobs:
    """What the worker jobs of one SLURM run did: the job ids sbatch gave, and the submissions that failed (the
    gist of each error), recorded by :func:`_recording_job_class`."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.failed: list[str] = []
        self.pending = 0  # submissions under way


def _submit_error(exc: BaseException) -> str:
    """The gist of a failed submission: what sbatch wrote on stderr (dask-jobqueue's RuntimeError holds the command,
    its exit code, stdout and stderr), or that sbatch could not be run at all."""
    if isinstance(exc, FileNotFoundError):
        return (f"sbatch could not be run ({exc.strerror or exc}: {exc.filename or 'sbatch'}): run ctscore on a SLURM "
                "login node, with sbatch on PATH")
    text = str(exc)
    if "stderr:" in text:
        said = " ".join(text.split("stderr:", 1)[1].split()) or " ".join(text.split("stdout:", 1)[-1].split())
        code = re.search(r"Exit code: (-?\d+)", text)
        return f"sbatch said: {said or '(nothing)'}" + (f" (exit code {code.group(1)})" if code else "")
    return f"{type(exc).__name__}: {' '.join(text.split())}"[:1000]


class _ReportedSubmitErrors(logging.Filter):
    """Drops tornado's "Exception in callback" traceback of a failed ``sbatch`` that ctscore has recorded (and
    reports as SLURM_SUBMIT_FAILED or a warning): the traceback printed before ctscore's own one-line error.
    Anything else tornado logs passes."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: collections.deque = collections.deque(maxlen=64)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or not any(exc is e for e in self.errors)


_REPORTED_SUBMIT_ERRORS = _ReportedSubmitErrors()


def _recording_job_class(jobs: _SlurmJobs) -> type:
    """dask-jobqueue's SLURMJob, recording into ``jobs`` each job id and each failed submission: dask-jobqueue only
    logs a failed ``sbatch`` (from its event loop), and the run would wait for workers that never come."""
    from dask_jobqueue.slurm import SLURMJob
    from distributed.core import Status

    tornado_log = logging.getLogger("tornado.application")
    if _REPORTED_SUBMIT_ERRORS not in tornado_log.filters:
        tornado_log.addFilter(_REPORTED_SUBMIT_ERRORS)

    async def start(self) -> None:
        jobs.pending += 1
        try:
            await SLURMJob.start(self)
        except Exception as exc:
            jobs.failed.append(_submit_error(exc))
            _REPORTED_SUBMIT_ERRORS.errors.append(exc)
            self.status = Status.failed  # else closing the cluster fails on a job that never started
            raise
        else:
            jobs.submitted.append(str(self.job_id))
        finally:
            jobs.pending -= 1

    return type("CTScoreSLURMJob", (SLURMJob,), {"start": start, "__module__": __name__})


def _job_logs(kwargs: dict[str, Any]) -> str:
    """Where the worker jobs' output goes, for the messages of a run that waits for them."""
    if kwargs.get("log_directory"):
        return f"{os.path.abspath(kwargs['log_directory'])} (dask-worker-<jobid>.err and .out)"
    return (f"the jobs' output files (slurm-<jobid>.out in {os.getcwd()}; set log_directory: in the profile to keep "
            "them together)")


#: Seconds between two "waiting for SLURM workers" lines (the first comes after WAIT_FIRST_REPORT_S).
WAIT_REPORT_S = 60.0
WAIT_FIRST_REPORT_S = 10.0
WAIT_POLL_S = 1.0


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 60:.3g} min" if seconds >= 120 else f"{seconds:.0f} s"


def _squeue(job_ids: list[str]) -> str:
    """What squeue says of ``job_ids`` ("1001 PENDING (Priority), ..."), "" when it cannot say."""
    if not job_ids:
        return ""
    import subprocess

    try:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids[-20:]), "-o", "%i %T %r"], capture_output=True,
                             text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = [line.split(None, 2) for line in out.stdout.splitlines() if line.strip()]
    if out.returncode == 0 and not lines or "Invalid job id" in out.stderr:
        return "none of them is in the queue any more (they ended: see their logs)"
    if out.returncode:
        return ""
    running = sum(len(p) > 1 and p[1] == "RUNNING" for p in lines)
    states = ", ".join(f"{p[0]} {p[1]}" + (f" ({p[2]})" if len(p) > 2 and p[2] not in ("None", "(null)") else "")
                       for p in lines[:8] if len(p) > 1)
    return f"{running} of {len(lines)} running (squeue: {states}{', ...' if len(lines) > 8 else ''})"


def _jobs_text(jobs: _SlurmJobs) -> str:
    ids = jobs.submitted
    if not ids:
        return "no job submitted yet"
    text = f"{len(ids)} job(s) submitted ({', '.join(ids[:8])}{', ...' if len(ids) > 8 else ''})"
    queue = _squeue(ids)
    return f"{text}: {queue}" if queue else text


def _first_result_from_slurm(client: Any, future: Any, jobs: _SlurmJobs, timeout_s: float | None, logs: str,
                             asked: tuple[int, int]) -> Any:
    """The result of ``future`` (the run's first task), waiting for the SLURM workers to connect.

    Every :data:`WAIT_REPORT_S` seconds a line says how many jobs were submitted (and what squeue says of them) and
    where their logs are. Submissions that all fail (sbatch missing, or refusing the job) are CTScoreError
    SLURM_SUBMIT_FAILED at once (some of them only, e.g. a limit of jobs per user: a warning, and the run waits for
    the others); no worker connected for ``timeout_s`` (``slurm: worker_start_timeout``) is SLURM_NO_WORKERS. (The
    caller's cleanup closes the cluster: the jobs are cancelled.)"""
    from distributed import TimeoutError as DaskTimeoutError

    t0 = time.monotonic()
    no_worker_since = t0
    next_report = t0 + min(WAIT_FIRST_REPORT_S, timeout_s / 2 if timeout_s else WAIT_FIRST_REPORT_S)
    wanted = f"{asked[0]}" if asked[0] == asked[1] else f"{asked[0]} to {asked[1]}"
    n_failed_told = 0
    while True:
        if jobs.failed and not jobs.submitted and not jobs.pending:
            raise CTScoreError("SLURM_SUBMIT_FAILED", f"a worker job could not be submitted: {jobs.failed[0]}; check "
                               "the slurm: section of the SLURM profile (queue, account, walltime, memory, gpus_per_job,"
                               " job_extra_directives: what your site accepts)")
        if jobs.submitted and len(jobs.failed) > n_failed_told:
            log.warning("%d worker job(s) could not be submitted (%s); waiting for the %d submitted",
                        len(jobs.failed) - n_failed_told, jobs.failed[-1], len(jobs.submitted))
            n_failed_told = len(jobs.failed)
        try:
            return future.result(timeout=WAIT_POLL_S)
        except (TimeoutError, DaskTimeoutError):
            pass
        now = time.monotonic()
        n_workers = len(client.scheduler_info().get("workers") or {})
        if n_workers:
            no_worker_since = now
        elif timeout_s and now - no_worker_since >= timeout_s:
            raise CTScoreError("SLURM_NO_WORKERS", f"no SLURM worker connected within {_duration(timeout_s)} "
                               f"(slurm: worker_start_timeout in the SLURM profile; 0: no limit); {_jobs_text(jobs)}. "
                               "The jobs may still wait in the queue (raise worker_start_timeout where queues are "
                               "long), or their workers failed to start or cannot reach this host (check the job "
                               f"logs in {logs}: a prologue line that fails, a python the nodes cannot run, "
                               "interface:). The jobs are cancelled; run the same command again to resume")
        if now >= next_report:
            waited = _duration(now - t0)
            if n_workers:
                log.info("waiting for SLURM workers (%s): %d worker(s) connected, loading the model", waited,
                         n_workers)
            else:
                limit = f"; giving up after {_duration(timeout_s)} (slurm: worker_start_timeout)" if timeout_s else ""
                log.log(logging.INFO if now - t0 < 600 else logging.WARNING,
                        "waiting for SLURM workers (%s): none connected yet, %s job(s) asked for, %s; if the jobs run "
                        "but no worker connects, check the job logs in %s%s", waited, wanted, _jobs_text(jobs), logs,
                        limit)
            next_report = now + WAIT_REPORT_S


# --------------------------------------------------------------------------------------------------
# Progress


class Progress:
    """A tqdm bar on a terminal, one log line per scan otherwise (cluster logs)."""

    def __init__(self, total: int, enabled: bool | None = None):
        if enabled is None:
            enabled = sys.stderr.isatty() and log.getEffectiveLevel() <= logging.INFO
        self.total, self.done, self.n_ok, self.n_failed = total, 0, 0, 0
        self.bar = None
        if enabled and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="series", dynamic_ncols=True)

    def update(self, status: dict[str, Any]) -> None:
        """Account for one finished scan."""
        self.done += 1
        ok = status["status"] == "ok"
        self.n_ok += ok
        self.n_failed += not ok
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(ok=self.n_ok, failed=self.n_failed, refresh=False)
            if not ok:
                self.bar.write(f"{status['scan_id']}: failed {status.get('code')}: {status.get('message')}")
        elif ok:
            log.info("[%d/%d] %s ok in %.1f s", self.done, self.total, status["scan_id"], status.get("seconds") or 0)
        else:
            log.warning("[%d/%d] %s failed %s: %s", self.done, self.total, status["scan_id"], status.get("code"),
                        status.get("message"))

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------------------------------
# The driver


def _run_serial(todo: list[Task], cfg: dict[str, Any], out_dir: Path, opts: BatchOptions, progress: Progress) -> None:
    for task in todo:
        log.debug("scoring %s (%d files)", task.scan_id, len(task.files))
        progress.update(run_task(task, cfg, out_dir, opts.timeout_s, allowed_failures=opts.allowed_failures))


STOPPED = "stopped"  # the status of a scan whose output could not be written (OUTPUT_UNWRITABLE): the run stops


def _run_task_on_worker(task: Task, cfg: dict[str, Any], out_dir: str, timeout_s: float | None,
                        attempt: str) -> dict[str, Any]:
    """:func:`run_task` on a dask worker, with OUTPUT_UNWRITABLE returned as a ``stopped`` status instead of raised
    (a CTScoreError does not come back through pickle: its arguments are not its constructor's); the driver
    raises it again and stops the run, as the serial executor does."""
    try:
        return run_task(task, cfg, out_dir, timeout_s, attempt)
    except CTScoreError as exc:
        if not _is_unwritable(exc):
            raise
        return {"scan_id": task.scan_id, "series_uid": task.series_uid, "status": STOPPED, "code": exc.code,
                "message": exc.message, "path": exc.path}


def _run_dask(client, todo: list[Task], cfg: dict[str, Any], out_dir: Path, opts: BatchOptions, progress: Progress,
              resources: dict[str, int] | None, config_sha256: str, model_id: str) -> None:
    from distributed import as_completed
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker

    attempt = uuid.uuid4().hex
    worker_gb = _worker_memory_gb(client)
    warn_memory(todo, cfg, worker_gb)
    futures = {client.submit(_run_task_on_worker, t, cfg, str(out_dir), opts.timeout_s, attempt,
                             key=f"ctscore-{t.scan_id}-{attempt[:8]}", resources=resources, pure=False): t
               for t in todo}
    stop: CTScoreError | None = None

    def stop_run(exc: CTScoreError) -> None:
        """The output folder cannot be written: no scan is started any more; those under way finish (their
        outcomes recorded as usual, or none when they cannot be written either) and the run then stops with the
        first error, as the serial executor does."""
        nonlocal stop
        if stop is not None:
            return
        stop = exc
        running = {key for keys in client.processing().values() for key in keys}
        queued = [f for f in futures if f.key not in running]
        client.cancel(queued)
        for f in queued:
            futures.pop(f, None)
        log.warning("%s: the output folder cannot be written; the run stops after the %d scan(s) under way",
                    exc.code, len(futures))

    for fut in as_completed(list(futures)):
        task = futures.pop(fut, None)
        if task is None:  # given back after the run was stopped
            continue
        try:
            try:
                status = fut.result()
            except KilledWorker:
                status = _worker_died_status(task, opts.allowed_failures + 1)
                need = _memory_need_gb(task, cfg)
                if need and worker_gb:
                    status["message"] += (f"; it needs about {need:.1f} GB, a worker may use {worker_gb:.1f} GB"
                                          + (": likely out of memory, run it with --workers 1"
                                             if need > 0.6 * worker_gb else ""))
                write_record(out_dir, task, status, config_sha256, model_id, attempt)
            except (FutureCancelledError, Exception) as exc:  # noqa: BLE001 - one scan never stops the rest
                status = {"scan_id": task.scan_id, "series_uid": task.series_uid, "status": "failed",
                          "code": "INTERNAL_ERROR", "path": series_location(task.files),
                          "message": f"{type(exc).__name__}: {exc}"}
                write_record(out_dir, task, status, config_sha256, model_id, attempt)
        except CTScoreError as exc:  # the record cannot be written (OUTPUT_UNWRITABLE): the scan keeps none
            stop_run(exc)
            continue
        fut.release()  # a result held by a worker that is restarted below must not be recomputed
        if status["status"] == STOPPED:
            stop_run(CTScoreError(status["code"], status["message"], status.get("path") or None))
            continue
        addr = status.pop("restart_worker", None)
        if addr:
            log.warning("%s ran past the time limit: restarting worker %s", task.scan_id, addr)
            client.restart_workers([addr], raise_for_error=False)
        progress.update(status)
    if stop is not None:
        raise stop


def run_batch(candidates: Sequence[Any], out_dir: str | Path, cfg: dict[str, Any], opts: Any = None,
              input_path: str = "", series_uid: str | None = None) -> dict[str, Any]:
    """Score the selected series ``candidates`` into ``out_dir`` with the executor of ``opts``.

    Skips finished scans (resume), runs the rest, and writes the run tables (into
    ``OUT/shards/K-of-N/`` for a shard; ``ctscore aggregate OUT`` merges them). ``opts``: as ``batch`` of
    :func:`batch_options`. Returns the summary of :func:`pipeline.run.write_run_tables` plus ``n_skipped``,
    ``n_run`` and ``executor`` (see :func:`pipeline.run.run_pipeline`). Raises OutputLocked (OUTPUT_LOCKED),
    before scoring anything, while another process writes into ``out_dir`` (the same shard of it; see
    :func:`writer_lock`).
    """
    opts = batch_options(opts)
    opts.validate()
    executor = opts.resolved_executor()
    out_dir = Path(out_dir)
    with writer_lock(out_dir, opts.shard_name()):  # OUTPUT_LOCKED while another run writes there
        return _run_batch(candidates, out_dir, cfg, opts, executor, input_path, series_uid)


def _run_batch(candidates: Sequence[Any], out_dir: Path, cfg: dict[str, Any], opts: BatchOptions, executor: str,
               input_path: str, series_uid: str | None = None) -> dict[str, Any]:
    from pipeline.config import config_hash
    from pipeline.run import write_run_tables

    t0 = time.perf_counter()
    tasks = tasks_for(candidates, cfg)
    input_id = input_id_for(input_path, cfg["outputs"]["pseudonym_salt"])
    for t in tasks:
        t.input_id = input_id
    input_ids = {t.scan_id for t in tasks}  # every series of this run's input (all shards)
    tables_dir = out_dir
    if opts.num_shards is not None:
        tasks = shard(tasks, int(opts.shard_index or 0), opts.num_shards)
        tables_dir = out_dir / SHARDS_DIR / str(opts.shard_name())
        tables_dir.mkdir(parents=True, exist_ok=True)
        log.info("shard %d of %d: %d series", opts.shard_index, opts.num_shards, len(tasks))
    # the whole input's series, before any is scored: ctscore aggregate names those left without an outcome (a run
    # killed mid-way; shards of an input that changed between their tasks split it differently). While the folder's
    # last run did not end (its tables.pending still there: this run has not marked it yet), that run's series are
    # kept too: a run of one series after a killed run (--series-uid, to see what killed it) left aggregate blind
    # to the two the killed run never started (a review, 2026-12-07)
    unended = read_run_scans(tables_dir) if (tables_dir / TABLES_PENDING).is_file() else []
    write_run_scans(tables_dir, set(input_ids) | set(unended))
    config_sha256 = config_hash(cfg)
    states = {t.scan_id: scan_state(out_dir, t.scan_id) for t in tasks}
    # nothing left to score (a resume after the run ended): no cluster is started, no SLURM job submitted
    segmenter = None if executor == "serial" else _segmenter_if_all_done(cfg, tasks, states, config_sha256, opts)
    if segmenter is not None:
        log.info("every series is done already: no %s cluster is started", executor)

    cluster = client = None
    resources = None
    dask_run = executor != "serial" and segmenter is None
    with _dask_settings(opts) if dask_run else contextlib.nullcontext():  # undone after the run
        try:
            if segmenter is not None:
                pass
            elif executor == "serial":
                segmenter = segmenter_info(cfg)
            else:
                from distributed import Client

                cluster, plugin, resources, wait = _start_cluster(opts, cfg, executor)
                client = Client(cluster)
                client.register_plugin(plugin)
                first = client.submit(segmenter_info, cfg, resources=resources, pure=False)
                segmenter = first.result() if wait is None else wait(client, first)
                first.release()  # else held for the whole run: a SLURM worker retiring (worker_lifetime) waits on it
            model_id = segmenter["model_id"]
            todo = [t for t in tasks if needs_work(states[t.scan_id], t, config_sha256, model_id,
                                                   opts.overwrite, opts.retry_failed)]
            n_skipped = len(tasks) - len(todo)
            if not opts.overwrite:
                _warn_replaced(out_dir, [s for s in states.values() if s is not None], config_sha256, model_id)
                _warn_inputs_changed(out_dir, tasks, states, config_sha256, model_id)
            _warn_not_in_input(out_dir, input_ids, input_path)
            todo_ids = {t.scan_id for t in todo}
            _warn_kept_device(cfg, [states[t.scan_id] for t in tasks if t.scan_id not in todo_ids])
            kept_failed = sum(1 for t in tasks if t.scan_id not in todo_ids
                              and (states[t.scan_id] or {}).get("status") != "ok")
            log.info("%d series: %d to score, %d finished in an earlier run (resume)%s", len(tasks), len(todo),
                     n_skipped, f", {kept_failed} of them failed (--retry-failed scores them again)"
                     if kept_failed else "")
            if todo:  # the scan folders change from here: the tables are out of date until written again
                mark_tables_pending(tables_dir)
                if tables_dir != out_dir:  # a shard: OUT's own tables (an earlier aggregate) too
                    mark_tables_pending(out_dir)
            progress = Progress(len(todo), opts.progress)
            try:
                if executor == "serial" or not todo:
                    _run_serial(todo, cfg, out_dir, opts, progress)
                else:
                    _run_dask(client, todo, cfg, out_dir, opts, progress, resources, config_sha256, model_id)
            finally:
                progress.close()
        finally:
            _close_quietly(client, cluster)

    statuses = collect_statuses(out_dir, [t.scan_id for t in tasks])
    missing = {t.scan_id for t in tasks} - {s["scan_id"] for s in statuses}
    if missing:  # cannot happen unless records were deleted during the run
        raise CTScoreError("INTERNAL_ERROR", f"no outcome recorded for {len(missing)} series", out_dir)
    warn_devices(out_dir, statuses)
    warn_sources(out_dir, statuses)
    # the inputs of earlier runs into this folder stay named, for ctscore aggregate's warning about merged inputs
    names = _input_names([_read_json(tables_dir / "run.json") or {}])
    if input_id:
        names[input_id] = input_path
    summary = write_run_tables(tables_dir, statuses, cfg, segmenter, time.perf_counter() - t0, input_path,
                               provenance={"input_id": input_id, "input_names": dict(sorted(names.items())),
                                           # the whole input (all shards): aggregate refuses shards that disagree
                                           "input_scans": input_scans_digest(input_ids),
                                           # how this call ran (results repeat across executors and threads on the
                                           # CPU; a methods reviewer asks anyway)
                                           # --series-uid: the series the user named (METHODS.md says so)
                                           **({"series_uid_requested": series_uid} if series_uid else {}),
                                           "execution": {"executor": executor,
                                                         "workers_requested": opts.workers,
                                                         "threads_per_worker_requested": opts.threads_per_worker}})
    summary.update(n_skipped=n_skipped, n_run=len(todo), executor=executor)
    return summary


def _close_quietly(*things: Any) -> None:
    """Close the dask client and cluster of a run (jobs of a SLURM cluster are cancelled): a failure to close is a
    warning, never an error that would hide the one that ended the run."""
    for thing in things:
        if thing is None:
            continue
        try:
            thing.close()
        except Exception as exc:  # noqa: BLE001 - cleanup
            log.warning("could not close the dask %s cleanly: %s: %s", type(thing).__name__, type(exc).__name__, exc)


def _segmenter_if_all_done(cfg: dict[str, Any], tasks: list[Task], states: dict[str, Any], config_sha256: str,
                           opts: BatchOptions) -> dict[str, str] | None:
    """The segmenter's name and model id when no task needs work (resume after a run that ended), else None.

    Whether a scan is done depends on the model id, which the workers report: here, when every scan has an outcome
    with this run's inputs and configuration and one model id, the model is loaded once in this process, on the CPU,
    to compare (cheaper than a dask cluster or SLURM jobs that would score nothing). A model that cannot be loaded
    here (None) leaves the question to the workers."""
    if opts.overwrite:
        return None
    models = set()
    for t in tasks:
        state = states[t.scan_id]
        if state is None or (state.get("input_fingerprint"), state.get("config_sha256")) != (t.fingerprint,
                                                                                             config_sha256):
            return None
        if state["status"] != "ok" and opts.retry_failed:
            return None
        models.add(state.get("model_id", ""))
    if len(models) > 1:
        return None
    from segmentation.factory import build_segmenter

    here = json.loads(json.dumps(cfg))  # a copy, on the CPU: the model id is the files', whatever the device
    here["segmentation"]["device"] = "cpu"
    try:
        seg = build_segmenter(here)
        info = {"name": seg.name, "model_id": seg.model_id}
    except Exception as exc:  # noqa: BLE001 - the workers will load it (and say why not)
        log.debug("cannot load the model here to check for a no-op resume (%s): the workers will", exc)
        return None
    if models and models != {info["model_id"]}:
        return None
    return info


def _short(text: str, n: int = 12) -> str:
    return text if len(text) <= n else text[:n] + "..."


def _warn_replaced(out_dir: Path, states: list[dict[str, Any]], config_sha256: str, model_id: str) -> None:
    """Warn, before scoring, that earlier results of this run's series were made with another configuration, model
    or ctscore version: resume does not keep them, so they are about to be replaced (``states``: see
    :func:`scan_state`; an upgrade replaced every result of the earlier version without a word)."""
    def setting(s: dict[str, Any]) -> tuple[str, str, str]:
        return s.get("config_sha256") or "?", s.get("model_id") or "?", s.get("ctscore_version") or "?"

    this = (config_sha256, model_id, __version__)
    other = [s for s in states if setting(s) != this]
    if not other:
        return
    made = Counter(setting(s) for s in other)
    what = "; ".join(f"ctscore {v if v != '?' else '(unknown)'}, config sha256 {_short(c)}, model {m}"
                     + (f": {n}" if len(made) > 1 else "") for (c, m, v), n in sorted(made.items()))
    n_failed = sum(s.get("status") != "ok" for s in other)
    kinds = f" ({len(other) - n_failed} scored, {n_failed} failed)" if n_failed else ""
    log.warning("%d earlier result(s)%s under %s were made with another ctscore version, configuration or model (%s; "
                "this run: ctscore %s, config sha256 %s, model %s) and will be replaced: resume keeps only results of "
                "the same version, configuration and model; to keep both, use another output folder (or copy this one "
                "first)", len(other), kinds, out_dir, what, __version__, _short(config_sha256), model_id)


def _warn_inputs_changed(out_dir: Path, tasks: Sequence[Task], states: Mapping[str, Any], config_sha256: str,
                         model_id: str) -> None:
    """Warn when finished series of the same version, configuration and model are scored again because their input
    fingerprint changed (files edited, copied or moved; the same folder reached through a symbolic link): a
    configuration audit found a whole folder scored again without a word."""
    changed = [t for t in tasks if (st := states.get(t.scan_id)) is not None
               and st.get("input_fingerprint") != t.fingerprint and st.get("config_sha256") == config_sha256
               and st.get("model_id") == model_id and st.get("ctscore_version") == __version__]
    # a reader's levels (--landmarks) are in the fingerprint too: said apart, and loudest when they are dropped (the
    # same command without --landmarks undoes every correction; a review, 2026-12-06)
    before = {t.scan_id: dict(states[t.scan_id].get("reader_levels") or {}) for t in changed}
    lost = [t.scan_id for t in changed if before[t.scan_id] and not t.reader_levels]
    moved = [t.scan_id for t in changed if t.reader_levels and before[t.scan_id] != t.reader_levels]
    unmasked = [t.scan_id for t in changed if states[t.scan_id].get("user_masks") and not t.user_masks]
    if unmasked:
        log.warning("%d finished series under %s (%s) will be scored again WITHOUT the edited masks they were scored "
                    "from: --masks (segmentation.masks_dir) is not given, or their masks are no longer there; give the "
                    "folder again to keep them", len(unmasked), out_dir,
                    ", ".join(unmasked[:3]) + (", ..." if len(unmasked) > 3 else ""))
    if lost:
        log.warning("%d finished series under %s (%s) will be scored again WITHOUT the reader's levels they were "
                    "scored with: --landmarks (landmarks.reader_levels) is not given, or their rows no longer set a "
                    "level; give the table again to keep them", len(lost), out_dir,
                    ", ".join(lost[:3]) + (", ..." if len(lost) > 3 else ""))
    if moved:
        log.warning("%d finished series under %s (%s) will be scored again: their reader's levels (--landmarks) "
                    "changed", len(moved), out_dir, ", ".join(moved[:3]) + (", ..." if len(moved) > 3 else ""))
    changed = [t.scan_id for t in changed if t.scan_id not in lost and t.scan_id not in moved
               and t.scan_id not in unmasked]
    if changed:
        ids = ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
        log.warning("%d finished series under %s (%s) will be scored again: their input files changed or moved "
                    "(DICOM files, a --lobes map, --masks files; the fingerprint is of their paths, sizes and "
                    "modification times: a copy, a move or a path through a symbolic link counts)", len(changed),
                    out_dir, ids)


def _warn_kept_device(cfg: Mapping[str, Any], kept: Sequence[Mapping[str, Any] | None]) -> None:
    """Warn when a device asked for explicitly (``-d cpu``, not ``auto``) is not the one that scored results kept on
    resume (resume does not score a scan again for another device: README). A review: ``-d cpu`` after a CUDA run
    kept the half-precision results without a word."""
    from segmentation.factory import uses_gpu

    seg = cfg.get("segmentation") or {}
    asked = device_text(seg.get("device", "auto"))
    asked = "cuda" if asked == "gpu" else asked
    if asked in ("", "auto") or not uses_gpu(str(seg.get("method"))):
        return
    other = Counter(device_text(((st.get("result") or {}).get("segmenter") or {}).get("device", ""))
                    for st in kept if st and st.get("status") == "ok")
    other.pop(asked, None)
    other.pop("", None)
    if other:
        log.warning("%d result(s) kept from an earlier run were scored on %s, not on %s as asked: resume does not score "
                    "a scan again for another device (--overwrite scores them on %s)", sum(other.values()),
                    ", ".join(sorted(other)), asked, asked)


def _warn_not_in_input(out_dir: Path, scan_ids: set[str], input_path: str) -> None:
    """Warn that results under ``out_dir`` are no series of this run's input (``scan_ids``: every series of it, all
    shards): the run's tables leave them out, but ``ctscore aggregate`` would merge them with this run's."""
    # read only: these scans may be another input's, whose shards may be committing them (a restore would race)
    others = sorted(sid for sid in scan_ids_under(out_dir) - scan_ids
                    if scan_state(out_dir, sid, restore=False) is not None)
    if not others:
        return
    ids = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
    log.warning("%d result(s) under %s (%s) are not part of this run's input%s (another input, series selection or "
                "pseudonym salt): this run's scans.csv and report.html leave them out, but `ctscore aggregate %s` "
                "would merge them with this run's results; use one output folder per input, or move them away",
                len(others), out_dir, ids, f" {input_path}" if input_path else "", out_dir)


def aggregate(out_dir: str | Path, allow_missing_shards: bool = False, allow_unfinished: bool = False
              ) -> dict[str, Any]:
    """Rebuild ``scans.csv``, ``zones.csv``, ``failures.csv`` and ``run.json`` in ``out_dir`` from every
    per-scan record under it (e.g. after the shards of a job array). Returns the tables summary: ``n_series``,
    ``n_ok``, ``n_failed``, ``scans`` and ``failures`` (DataFrames, as :func:`pipeline.run.run_pipeline` returns
    them), ``out_dir``, and ``warnings``: the messages of the warnings logged meanwhile (results of several
    inputs, salts, configurations or versions merged; one series under two scan ids), also on the console.
    ``out_dir`` that is not a folder is CTScoreError INPUT_NOT_FOUND; a folder without results NOTHING_TO_AGGREGATE.

    The configuration in ``run.json`` is that of an earlier run.json with one of the scans' hashes, else a
    scan's own (``result.json``); the warnings of :func:`merge_warnings` and mixed configurations or models are
    logged. Raises OutputLocked (OUTPUT_LOCKED) while a run (not a shard) writes into ``out_dir``; while shards run,
    warns that their series are not all in the tables yet (see :func:`writer_lock`).

    Shards (``OUT/shards/K-of-N/``, see :func:`check_shards`): a shard of the N found that has not ended (no
    ``run.json`` in its folder) is CTScoreError SHARDS_MISSING, shards of different N are SHARDS_MIXED, unless
    ``allow_missing_shards`` (``--allow-missing-shards``): then a warning, and run.json lists them under
    ``missing_shards``. While shards still run, a warning only.

    Series without an outcome (:func:`check_outcomes`: a run or shard stopped while scoring them or before it came to
    them; shards run on different lists of series, SHARDS_INPUT_CHANGED) are CTScoreError SCANS_UNFINISHED naming
    them and what to run; the tables stay marked out of date (``.status/tables.pending``). ``allow_unfinished``
    (``--allow-unfinished``; ``allow_missing_shards`` too) writes the tables of what is there anyway, with a warning,
    and run.json lists them under ``unfinished_scans``."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        what = ("is a file, not a run's output folder (give the folder that holds run.json and scans.csv)"
                if out_dir.exists() else "output folder does not exist")
        raise CTScoreError("INPUT_NOT_FOUND", what, out_dir)
    from pipeline.logcapture import collect_warnings

    with collect_warnings() as said, writer_lock(out_dir, aggregating=True) as shards_running:
        summary = _aggregate(out_dir, allow_missing_shards, shards_running, allow_unfinished)
    summary["warnings"] = list(said)
    return summary


_SHARD_FOLDER = re.compile(r"(\d+)-of-(\d+)")


def check_shards(out_dir: str | Path, allow_missing: bool = False, shards_running: bool = False) -> dict[str, Any]:
    """Check the shard folders under ``OUT/shards/`` before ``ctscore aggregate`` merges them: their names
    (``K-of-N``) say how many there should be. A shard whose folder holds no ``run.json`` (never run, or stopped
    before it ended), or still holds ``.status/tables.pending`` (a resubmission stopped before it ended: the
    ``run.json`` is an earlier one's), is missing; folders of several N are mixed (arrays of different
    ``--num-shards``).

    Raises CTScoreError SHARDS_MIXED or SHARDS_MISSING naming them, unless ``allow_missing`` (or ``shards_running``:
    the tables are known to be partial): then a warning. Returns what run.json records: ``missing_shards`` (and
    ``num_shards_found`` when mixed), {} when all is well or there are no shards."""
    root = Path(out_dir) / SHARDS_DIR
    found: dict[int, dict[int, bool]] = {}  # N -> {K: ended (has run.json, no tables.pending)}
    why_not: dict[tuple[int, int], str] = {}  # (K, N) -> why it did not end (folder names may be zero-padded)
    if root.is_dir():
        for p in root.iterdir():
            m = _SHARD_FOLDER.fullmatch(p.name)
            if not m or not p.is_dir():
                continue
            k, n = int(m.group(1)), int(m.group(2))
            if 0 <= k < n:
                if _read_json(p / "run.json") is None:
                    why_not[k, n] = "no run.json"
                elif (p / TABLES_PENDING).is_file():  # its run.json is that of an earlier run of it
                    why_not[k, n] = f"its {TABLES_PENDING.as_posix()} is still there"
                found.setdefault(n, {})[k] = (k, n) not in why_not
    if not found:
        return {}
    missing = [f"{k}-of-{n}" for n in sorted(found) for k in range(n) if not found[n].get(k)]
    names = ", ".join(missing[:12]) + (f", ... ({len(missing)} in all)" if len(missing) > 12 else "")
    unended = [f"{k}-of-{n} did not end: {why_not[k, n]}" for n in sorted(found)
               for k, ended in sorted(found[n].items()) if not ended]
    if len(found) > 1:
        code = "SHARDS_MIXED"
        kinds = "; ".join(f"--num-shards {n}: {', '.join(f'{k}-of-{n}' for k in sorted(found[n]))}"
                          for n in sorted(found))
        what = (f"shards of {len(found)} different --num-shards under {root} ({kinds}): they split the series "
                f"differently, so their union may miss some" + (f" (missing: {names})" if missing else "") +
                "; let one array end before resubmitting it with another NUM_SHARDS, and remove the shard folders "
                "of the other number (their tables only: the results stay in OUT)")
    elif missing:
        code = "SHARDS_MISSING"
        (n,) = found
        why = f" ({'; '.join(unended)})" if unended else ""
        what = (f"{len(missing)} of {n} shards have no tables under {root}: {names}{why}; their series are not all "
                f"in OUT: run them again (e.g. sbatch --array={','.join(m.split('-')[0] for m in missing[:12])} "
                f"with NUM_SHARDS={n}; finished series are skipped)")
    else:
        return {}
    record: dict[str, Any] = {"missing_shards": missing}
    if len(found) > 1:
        record["num_shards_found"] = sorted(found)
    if shards_running:
        log.warning("%s: %s", code, what)
    elif not allow_missing:
        raise CTScoreError(code, what + ", or merge what is there with --allow-missing-shards (Python: "
                           "allow_missing_shards=True)", root)
    else:
        log.warning("%s: %s; merged anyway (--allow-missing-shards): run.json lists them under missing_shards",
                    code, what)
    return record


def _shard_folders(out_dir: Path) -> list[Path]:
    """The ``K-of-N`` folders under ``OUT/shards/``, sorted by name."""
    root = Path(out_dir) / SHARDS_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (m := _SHARD_FOLDER.fullmatch(p.name))
                  and int(m.group(1)) < int(m.group(2)))


def _ids_text(ids: Sequence[str], n: int = 6) -> str:
    return ", ".join(ids[:n]) + (f", ... ({len(ids)} in all)" if len(ids) > n else "")


def check_outcomes(out_dir: str | Path, statuses: Sequence[Mapping[str, Any]], allow_unfinished: bool = False,
                   allow_mixed: bool = False, shards_running: bool = False) -> dict[str, Any]:
    """Check, before ``ctscore aggregate`` writes the tables of ``out_dir``, that every series of the runs into it
    has an outcome in ``statuses`` (:func:`collect_statuses`): the series of each run's whole input
    (:data:`RUN_SCANS` of OUT and of each shard folder) and those with a ``started`` record (a run or shard stopped
    while scoring them: killed, out of memory, the wall time).

    Raises CTScoreError SHARDS_INPUT_CHANGED when the shards were run on different lists of series (their input or
    selection changed between the array's tasks: they split it differently), unless ``allow_mixed``; then
    SCANS_UNFINISHED naming the series without an outcome and what to run, unless ``allow_unfinished``. With them
    (or ``shards_running``: the tables are known to be partial) a warning. Returns what run.json records:
    ``unfinished_scans``, and ``input_scans`` (the shards agree) or ``input_scans_by_shard`` (they do not)."""
    out_dir = Path(out_dir)
    done = {s["scan_id"] for s in statuses}
    shards = _shard_folders(out_dir)
    lists = {name: ids for name, ids in [("", read_run_scans(out_dir))] + [(p.name, read_run_scans(p)) for p in shards]
             if ids}
    expected = set().union(*lists.values())
    started = {sid for sid in scan_ids_under(out_dir) - done
               if (rec := _read_json(record_path(out_dir, sid))) and rec.get("scan_id") == sid
               and rec.get("status") == STARTED}
    unfinished = sorted((expected | started) - done)
    record: dict[str, Any] = {}
    # each shard's whole list: that of its last run (RUN_SCANS, also when it did not end), else its run.json's
    digests = {p.name: input_scans_digest(lists[p.name]) if p.name in lists else (_read_json(p / "run.json") or {})
               .get("input_scans") for p in shards}
    digests = {name: d for name, d in digests.items() if isinstance(d, dict) and d.get("sha256")}
    kinds = Counter(d["sha256"] for d in digests.values())
    checks: list[tuple[str, str, bool, str]] = []  # (code, what, allowed, the option that allows it)
    if len(kinds) > 1:
        record["input_scans_by_shard"] = digests
        groups = "; ".join(f"{', '.join(n for n, d in digests.items() if d['sha256'] == h)}: "
                           f"{next(d['count'] for d in digests.values() if d['sha256'] == h)} series (list sha256 "
                           f"{h[:12]})" for h in kinds)
        n_all = max(int(m.group(2)) for m in map(_SHARD_FOLDER.fullmatch, digests))
        code = "SHARDS_INPUT_CHANGED"
        checks.append((code, (
            f"the shards under {out_dir / SHARDS_DIR} were run on {len(kinds)} different lists of series ({groups}): "
            "the input changed between the array's tasks (an export still arriving, files added or removed) or "
            "their selection options or pseudonym salt differed, so they split the series differently: some were "
            "scored by two shards and others by none" + (f" ({len(unfinished)} without an outcome: "
                                                        f"{_ids_text(unfinished)})" if unfinished else "") +
            f"; once the input is complete, run every shard again (e.g. sbatch --array=0-{n_all - 1} with "
            f"NUM_SHARDS={n_all}; finished series are skipped), then aggregate again"), allow_mixed,
            "--allow-missing-shards (Python: allow_missing_shards=True)"))
    elif digests:
        record["input_scans"] = next(iter(digests.values()))
    if unfinished:
        record["unfinished_scans"] = unfinished
        stopped = [sid for sid in unfinished if sid in started]
        never = [sid for sid in unfinished if sid not in started]
        parts = ([f"{len(stopped)} were being scored when their run stopped (a started record in "
                  f"{STATUS_DIR}/ and no result: {_ids_text(stopped)})"] if stopped else []) + \
                ([f"{len(never)} were never started ({_ids_text(never)})"] if never else [])
        # shard K-of-N scores items K, K+N, ... of its sorted list (:func:`shard`): which shards hold them
        shares = {name: set(ids[int(k)::int(n)]) for name, ids in lists.items() if name
                  for k, n in [name.split("-of-")]}
        owners = sorted(name for name, share in shares.items() if share & set(unfinished))
        todo = []
        if set(unfinished) - set().union(*(shares[name] for name in owners)):
            todo.append("run the same `ctscore run` command again to resume (it scores them and writes the tables)")
        for n in sorted({int(name.split("-of-")[1]) for name in owners}):
            ks = ",".join(name.split("-of-")[0] for name in owners if name.endswith(f"-of-{n}"))
            todo.append(f"resubmit the shard(s) that hold them (sbatch --array={ks} with NUM_SHARDS={n}; finished "
                        "series are skipped), then aggregate again")
        code = "SCANS_UNFINISHED"
        checks.append((code, (
            f"{len(unfinished)} series of the runs into {out_dir} have no outcome: {'; '.join(parts)}; the tables would "
            f"leave them out: {' or '.join(todo)}"), allow_unfinished, "--allow-unfinished (Python: "
                                                                       "allow_unfinished=True)"))
    for code, what, allowed, option in checks:
        if shards_running:
            log.warning("%s: %s", code, what)
        elif not allowed:
            raise CTScoreError(code, f"{what}; or write the tables of what is there with {option}: run.json then "
                               "lists them under unfinished_scans", out_dir)
        else:
            log.warning("%s: %s; merged anyway: run.json lists them under unfinished_scans (the tables leave them "
                        "out)", code, what)
    return record


def warn_devices(out_dir: Path, statuses: Sequence[Mapping[str, Any]]) -> None:
    """Warn when the scored scans of a folder were made on several devices (a resume on a GPU node of a folder begun
    on CPUs keeps the CPU's results: resume does not score a scan again for another device)."""
    devices = Counter(device_text((s.get("segmenter") or {}).get("device", "")) for s in statuses
                      if s.get("status") == "ok")
    devices.pop("", None)
    if len(devices) > 1:  # a network on CUDA runs in half precision: its masks differ a little from the CPU's
        log.warning("the scans under %s were scored on several devices (%s): masks made on CUDA (half precision) "
                    "differ a little from those made on the CPU; scans.csv's device column says which", out_dir,
                    ", ".join(f"{d}: {n}" for d, n in sorted(devices.items())))


def scan_sources(statuses: Sequence[Mapping[str, Any]]) -> Counter:
    """The code revisions (``environment.source`` of result.json: a git commit, "+local changes") that scored the ok
    scans -> how many; "" for a result of an installed release or of a checkout git could not read."""
    return Counter(str(s.get("source") or "") for s in statuses if s.get("status") == "ok")


def warn_sources(out_dir: Path, statuses: Sequence[Mapping[str, Any]]) -> None:
    """Warn when the scored scans of a folder were made by several code revisions of a checkout: one version label
    can cover code that scores differently until its release (a configuration audit: resume kept, and methods named
    the current commit for, scans of two other commits, one with local changes)."""
    sources = scan_sources(statuses)
    if len(sources) > 1:
        log.warning("the scans under %s were scored by %d code revisions (%s): under one ctscore version label, code "
                    "that changed before its release may score differently; run.json lists them under sources "
                    "(--overwrite scores every scan with this code)", out_dir, len(sources),
                    ", ".join(f"{s or 'no checkout'}: {n}" for s, n in sorted(sources.items())))


def _aggregate(out_dir: Path, allow_missing_shards: bool = False, shards_running: bool = False,
               allow_unfinished: bool = False) -> dict[str, Any]:
    from pipeline.run import write_run_tables

    shard_check = check_shards(out_dir, allow_missing_shards, shards_running)
    statuses = collect_statuses(out_dir)
    # a missing shard's series have no outcome: merging without it merges without them
    shard_check.update(check_outcomes(out_dir, statuses, allow_unfinished or allow_missing_shards,
                                      allow_missing_shards, shards_running))
    if not statuses:
        raise CTScoreError("NOTHING_TO_AGGREGATE", "no per-scan results or records found", out_dir)
    hashes = sorted({s.get("config_sha256", "") for s in statuses} - {""})
    models = sorted({(s.get("segmenter") or {}).get("model_id", s.get("model_id", "")) for s in statuses} - {""})
    versions = Counter(str(s.get("ctscore_version")) for s in statuses if s.get("ctscore_version"))
    from pipeline.config import scores_config_hash

    scoring = {scores_config_hash(s.get("config")) for s in statuses if s.get("status") == "ok"} - {""}
    if len(scoring) > 1 or len(models) > 1:
        per = Counter((scores_config_hash(s.get("config"))[:12],
                       (s.get("segmenter") or {}).get("model_id", s.get("model_id", "")))
                      for s in statuses if s.get("status") == "ok")
        log.warning("the scans under %s were made with %d configurations and %d models (scans.csv's "
                    "scores_config_sha256 and model_id say which scan by which: %s)", out_dir, len(scoring),
                    len(models), "; ".join(f"{n} scan{'s' if n != 1 else ''} by settings {h or '?'}, model {m or '?'}"
                                           for (h, m), n in per.most_common()))
    elif len(ok_hashes := {s.get("config_sha256") for s in statuses if s.get("status") == "ok"} - {""}) > 1:
        # outputs or selection only (a shard without QC pictures): the same scoring
        log.info("the scans under %s were made with %d configurations that differ only in what was written, which "
                 "series were selected or the memory limits (outputs, selection, loading.max_voxels/max_memory_mb): "
                 "their scores are comparable", out_dir, len(ok_hashes))
    warn_devices(out_dir, statuses)
    warn_sources(out_dir, statuses)
    cfg = None
    shard_found = [(p.parent.name, _read_json(p)) for p in sorted((out_dir / SHARDS_DIR).glob("*/run.json"))]
    shard_runs = [r for _, r in shard_found if r]
    for run in shard_runs + [_read_json(out_dir / "run.json") or {}]:
        if run.get("config_sha256") in hashes and run.get("config"):
            cfg = run["config"]
            break
    if cfg is None:  # no run.json names it (a later run into OUT rewrote it): the scans keep their own
        cfg = next((s["config"] for s in statuses if s.get("config") and s.get("config_sha256") in hashes), None)
    names = sorted({(s.get("segmenter") or {}).get("name", "") for s in statuses} - {""})
    segmenter = {"name": ";".join(names), "model_id": ";".join(models)}
    # what the shards ran on, not the machine that aggregates: their inputs, package versions and time
    provenance: dict[str, Any] = {"aggregated_from": [name for name, r in shard_found if r], **shard_check}
    if shard_runs:
        inputs = sorted({str(r.get("input", "")) for r in shard_runs} - {""})
        provenance["input"] = inputs[0] if len(inputs) == 1 else inputs
        for key in ("versions", "python", "platform", "series_uid_requested"):
            values = [r[key] for r in shard_runs if key in r]
            if values and all(v == values[0] for v in values):
                provenance[key] = values[0]
        provenance["seconds"] = round(sum(_seconds(r.get("seconds")) for r in shard_runs), 2)
    else:  # no shards: the run that wrote OUT's run.json made the results; its input and time stay (they were
        # replaced by "aggregate of OUT" and 0 s)
        prior = _read_json(out_dir / "run.json") or {}
        provenance.update({k: prior[k] for k in ("input", "input_id", "versions", "python", "platform", "seconds",
                                                 "series_uid_requested", "input_scans") if k in prior})
    # the input each result was made from (recorded with it): results of several inputs merged are named
    named = _input_names(shard_runs + [_read_json(out_dir / "run.json") or {}])
    inputs = Counter(s["input_id"] for s in statuses if s.get("input_id"))
    if named:
        provenance["input_names"] = {i: named[i] for i in sorted(inputs) if i in named}
    salts = Counter(s["pseudonym_salt_id"] for s in statuses if s.get("pseudonym_salt_id"))
    if len(inputs) > 1:
        provenance["input"] = sorted({named.get(i, i) for i in inputs})
        provenance["input_id"] = sorted(inputs)
        # an input id is salted (it hides the folder's name): one folder scored with two salts has two ids
        salted = (" (or one input scored with different pseudonym salts: an input id is a salted hash of the "
                  "folder's path, see the salt warning)" if len(salts) > 1 else "")
        log.warning("the results under %s were made from %d different inputs%s (%s): check that they belong together "
                    "(expected for results copied together from several machines; not for an output folder re-used "
                    "for another input, whose earlier results are merged here too)", out_dir, len(inputs), salted,
                    "; ".join(f"{named.get(i, i + ' (no run.json names it)')}: {n} result(s)"
                              for i, n in sorted(inputs.items())))
    elif inputs:
        (only,) = inputs
        provenance["input_id"] = only
        if only in named:
            provenance["input"] = named[only]
    if len(hashes) > 1:  # run.json's config is one of them: name them all
        provenance["config_sha256_all"] = hashes
    if salts:
        provenance["pseudonym_salt_ids"] = dict(sorted(salts.items()))
    if len(salts) > 1:
        log.warning("the results under %s were made with %d different pseudonym salts (salt id %s): one patient has "
                    "a different patient_id under each, and the statistics would count them as different patients; "
                    "score every site with the same outputs.pseudonym_salt", out_dir, len(salts),
                    ", ".join(f"{k}: {n} result(s)" for k, n in sorted(salts.items())))
    if versions:  # the versions that made the results (run.json's ctscore_version is the aggregating one)
        provenance["ctscore_versions"] = dict(sorted(versions.items(), key=lambda kv: version_key(kv[0])))
    summary = write_run_tables(out_dir, statuses, cfg, segmenter, 0.0, f"aggregate of {out_dir}",
                               provenance=provenance)
    if shards_running:  # the tables lack what the running shards score from now: still pending
        mark_tables_pending(out_dir)
    for message in merge_warnings(summary["scans"], versions):
        log.warning(message)
    return summary


def _input_names(runs: list[dict[str, Any]]) -> dict[str, str]:
    """input id -> the input path, from run.json files (their ``input_names``, and ``input_id`` with ``input``)."""
    names: dict[str, str] = {}
    for r in runs:
        known = r.get("input_names")
        if isinstance(known, dict):
            names.update({k: v for k, v in known.items() if isinstance(k, str) and isinstance(v, str) and v})
        if isinstance(r.get("input_id"), str) and r.get("input_id") and isinstance(r.get("input"), str):
            names[r["input_id"]] = r["input"]
    return names


def _seconds(value: Any) -> float:
    """A ``seconds`` of a run.json or a per-scan record as a number (0 when it holds none)."""
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def merge_warnings(scans: Any, versions: Counter) -> list[str]:
    """What merged results can hide, as warnings: one series under several scan ids (several stacks of it scored
    with --all-series, or results made with different pseudonym salts: a statistic would count it, and its patient,
    twice) and results made by several ctscore versions (``versions``: version -> number of scans)."""
    messages = []
    uids = scans["series_uid"].astype("string").fillna("")
    twice = scans[(uids != "") & uids.duplicated(keep=False)]
    if len(twice):
        ids = ", ".join(twice["scan_id"].astype(str).head(6)) + (", ..." if len(twice) > 6 else "")
        messages.append(f"{twice['series_uid'].nunique()} series appear under more than one scan id ({ids}): several "
                        "stacks of one series (--all-series), or results made with different pseudonym salts (the "
                        "patient_id differs too); keep one row per series before statistics")
    if len(versions) > 1:
        messages.append("the results were made by several ctscore versions (" +
                        ", ".join(f"{v}: {n} scans" for v, n in sorted(versions.items(), key=lambda kv: version_key(kv[0]))) +
                        "); run.json lists them under ctscore_versions")
    return messages
