"""Writing outputs atomically, and the output contract.

Per run (in OUT/): ``run.json`` (versions, resolved config and its sha256, segmenter, timings),
``scans.csv`` (one row per series), ``zones.csv`` (one row per scan x system x lung x unit),
``failures.csv`` (series that could not be scored, with a code and a message).
Per series (in OUT/<scan_id>/): ``result.json``, ``lungs.nii.gz`` (1 right, 2 left lung),
``lesions.nii.gz`` (1 faint ground glass, 2 ground glass, 3 consolidation), both on the original
CT grid, and ``qc.png``. ``scan_id`` is derived from the SeriesInstanceUID by a salted hash: it is
file-system safe and carries no patient-identifying text.

Every file is written to a temporary name in the same folder and renamed into place; a series
folder is built under a temporary name and renamed when complete, so partial outputs never count.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)

SCAN_COLUMNS = [
    "scan_id", "patient_id", "study_date", "series_time", "series_uid", "status", "segmenter",
    "lung_volume_ml_right", "lung_volume_ml_left", "lesion_volume_ml", "ggo_volume_ml",
    "consolidation_volume_ml", "faint_ggo_volume_ml", "percent_opacity", "percent_high_opacity",
    "six_zone_total", "zhang900_total", "mosmed_category", "lobar20_total", "lobar25_total",
    "lesion_volume_ml_right", "lesion_volume_ml_left", "mean_lung_hu", "mean_lung_hu_right",
    "mean_lung_hu_left", "ggo_volume_ml_right", "ggo_volume_ml_left", "consolidation_volume_ml_right",
    "consolidation_volume_ml_left", "faint_ggo_volume_ml_right", "faint_ggo_volume_ml_left",
    "percent_opacity_right", "percent_opacity_left", "percent_high_opacity_right", "percent_high_opacity_left",
    "well_aerated_volume_ml", "percent_well_aerated", "percent_well_aerated_right", "percent_well_aerated_left",
    "percent_low_attenuation",
    "hyperinflated_volume_ml", "normally_aerated_volume_ml", "poorly_aerated_volume_ml", "non_aerated_volume_ml",
    "hyperinflated_tissue_g", "normally_aerated_tissue_g", "poorly_aerated_tissue_g", "non_aerated_tissue_g",
    "lung_tissue_g", "lung_gas_ml",
    "apex_covered", "base_covered", "scan_above_lungs_mm", "scan_below_lungs_mm", "qc_flags", "n_slices",
    "slice_thickness_mm", "manufacturer", "kernel", "patient_position", "lobar_note", "six_zone_near_edge", "zhang900_near_edge",
    *("ctscore_version", "model_id", "scores_config_sha256", "device", "pseudonym_salt_id"),
]
#: The settings that made a scan's scores (``scores_config_sha256``: 12 hex digits of
#: :func:`pipeline.config.scores_config_hash`, the configuration without the sections that do not change a series'
#: scores): scores made with different ones are not comparable, and ``ctscore stats`` / ``validate`` say so
#: (:func:`settings_note`). ``pseudonym_salt_id`` (:func:`salt_id`) says which salt made the row's patient_id: rows of
#: different salts give one patient different ids.
SETTINGS_COLUMNS = ("ctscore_version", "model_id", "scores_config_sha256", "device", "pseudonym_salt_id")
#: ``landmarks.csv``: one row per scan x landmark level (result.json's ``landmarks``): the z of each level, how it
#: was found (detected | estimated | missing | reader), with the levels a reader set or moved ctscore's own beside
LANDMARK_COLUMNS = ["scan_id", "landmark", "z_mm", "method", "confidence", "ctscore_z_mm", "ctscore_method",
                    "ctscore_confidence", "note"]
ZONE_COLUMNS = ["scan_id", "system", "lung", "unit", "status", "lung_ml", "lesion_ml", "involvement_pct",
                "ggo_ml", "consolidation_ml", "faint_ggo_ml", "percent_high_opacity", "mean_lung_hu",
                "extent_score", "density_grade", "unit_score", "near_edge"]


def device_text(device: Any) -> str:
    """The kind of device that ran the segmenter, as scans.csv names it ("cuda:1" -> "cuda"; "" when not known): a
    network on CUDA runs in half precision, and its masks differ a little from those made on the CPU."""
    text = str(device or "").strip().lower()
    return text.split(":", 1)[0]


FAILURE_COLUMNS = ["scan_id", "series_uid", "code", "message", "path"]


#: the built-in pseudonym salt (configs/default.yaml): public, so pseudonyms made with it can be recomputed by
#: anyone holding the PatientIDs; a site sets its own secret ``outputs.pseudonym_salt``
DEFAULT_SALT = "ctscore"


@functools.lru_cache(maxsize=8)
def salt_id(salt: str | None, pseudonymize: bool = True) -> str:
    """Which pseudonym salt made a result's ids, without giving the salt away: 8 hex digits of a slow key derivation
    (PBKDF2, 200 000 rounds, so that trying guesses is slow), ``"none"`` when the ids are not pseudonymised. Results
    with different salt ids give one patient different patient_ids (``ctscore aggregate`` warns)."""
    if not pseudonymize:
        return "none"
    return hashlib.pbkdf2_hmac("sha256", str(salt or DEFAULT_SALT).encode(), b"ctscore pseudonym salt id",
                               200_000)[:4].hex()


def pseudonym(value: str, salt: str, prefix: str, n: int = 12) -> str:
    """A salted, truncated sha256 of an identifier: stable, file-system safe, not reversible."""
    return prefix + hashlib.sha256(f"{salt}:{value}".encode()).hexdigest()[:n]


def scan_id_for(series_uid: str, salt: str) -> str:
    return pseudonym(series_uid, salt, "scan-")


def series_location(files: Iterable[str | Path]) -> str:
    """Where a series lies, for the ``path`` of its failure row: the folder its files share (the file itself for a
    one-file series, e.g. an enhanced multi-frame CT); "" for none."""
    files = [str(f) for f in files]
    if not files:
        return ""
    if len(files) == 1:
        return str(Path(files[0]).resolve())
    where = Path(os.path.commonpath(files)).resolve()
    return str(where.parent if where.is_file() else where)


def printable_text(value: Any) -> Any:
    """Text that a table (CSV, Parquet), report.html or run.json can hold: a file name that is not valid UTF-8 (a
    Latin-1 name from a CD, which Python decodes with surrogate escapes: ``b"pat\\xe9"`` -> ``"pat\\udce9"``) has its odd
    bytes written as ``\\xNN`` (``pat\\xe9``), as inventory.csv writes them; any other lone surrogate as ``\\udNNN``.
    Other values (valid text, numbers, None) are returned unchanged."""
    if not isinstance(value, str):
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def printable_deep(obj: Any) -> Any:
    """:func:`printable_text` of every text in nested mappings and lists (keys too), e.g. run.json."""
    if isinstance(obj, Mapping):
        return {printable_text(k): printable_deep(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [printable_deep(v) for v in obj]
    return printable_text(obj)


def printable_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with :func:`printable_text` applied to its text columns (a copy only where a value needed it)."""
    fixed = None
    for c in df.columns:
        if df[c].dtype != object:
            continue  # pandas' string dtypes cannot hold text that is not valid UTF-8
        col = df[c].map(printable_text)
        if not col.equals(df[c]):
            fixed = df.copy() if fixed is None else fixed
            fixed[c] = col
    return df if fixed is None else fixed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all or nothing: into a temporary file beside it, flushed to disk (fsync), then
    renamed over it; a crash or power cut leaves the old file or the new one, never an empty or partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        replace_path(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file of a folder (written by other libraries: SimpleITK, highdicom) and the folder itself.
    Each file is opened for writing: Windows flushes only such handles (on a read-only one ``os.fsync`` fails with
    "Bad file descriptor", which stopped every run there at its first scan). A file that cannot be opened for
    writing is flushed through a read-only handle where the system allows it, else left to the system."""
    for p in Path(folder).rglob("*"):
        if p.is_file():
            try:
                fd, writable = os.open(p, os.O_RDWR), True
            except PermissionError:
                fd, writable = os.open(p, os.O_RDONLY), False
            try:
                os.fsync(fd)
            except OSError:
                if writable:
                    raise
            finally:
                os.close(fd)
    fsync_dir(folder)


#: How long :func:`replace_path` keeps trying on Windows, in seconds between tries.
REPLACE_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


def replace_path(src: str | Path, dst: str | Path) -> None:
    """``os.replace(src, dst)``. On Windows a file or folder another program holds open (a table open in Excel; an
    antivirus or sync tool reading a file just written) cannot be replaced for that moment: the rename is tried
    again for about 3 s, then refused with a message naming the likely cause."""
    if sys.platform != "win32":
        os.replace(src, dst)
        return
    for delay in (*REPLACE_RETRY_DELAYS, None):
        try:
            os.replace(src, dst)
            return
        except PermissionError as exc:
            if delay is None:
                raise PermissionError(exc.errno, f"{dst} is held open by another program (a table open in Excel? an "
                                                 "antivirus or file-sync tool?): close it and run again",
                                      str(dst)) from exc
            time.sleep(delay)


_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc/self/status). Elsewhere it is set and put back
    under a lock: two threads swapping it at once (scans in the threads of one worker) left it at 0 for good, and
    every later output world-writable."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        mask = os.umask(0)
        os.umask(mask)
    return mask


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN becomes null, numpy scalars become Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(_clean(data), indent=2, sort_keys=False) + "\n").encode())


#: ``OUT/.status/tables.pending``: written when a run starts scoring (its scan folders change from then on) and
#: removed when the run's tables and report.html are written (by the run, or by ``ctscore aggregate OUT``). While it
#: lies there the tables may not match the scans' results: a run still going, or one that ended without a word (killed
#: with SIGKILL or by the out-of-memory killer, a power cut, a disk that filled while the tables were written), after
#: which scans.csv gave a scan's old scores beside its new result.json, and share, methods, stats, validate and
#: review-sheet read it without a word (an audit, 2026-12-07).
TABLES_PENDING = Path(".status") / "tables.pending"  # (JSON, but not *.json: those are the per-scan records)


def mark_tables_pending(folder: str | Path) -> None:
    """Say in ``folder`` that its tables are about to go out of date (:data:`TABLES_PENDING`)."""
    from datetime import datetime, timezone

    path = Path(folder) / TABLES_PENDING
    path.parent.mkdir(parents=True, exist_ok=True)
    import socket

    atomic_write_json(path, {"since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "pid": os.getpid(),
                             "host": socket.gethostname()})


def clear_tables_pending(folder: str | Path) -> None:
    """The tables of ``folder`` are written: remove :data:`TABLES_PENDING`."""
    (Path(folder) / TABLES_PENDING).unlink(missing_ok=True)


def check_tables_current(path: str | Path) -> None:
    """Refuse (``TABLES_STALE``) to read the tables of a run output folder (``path``, or the folder of a ``scans.csv``
    path) while :data:`TABLES_PENDING` lies in it: they may not match its scans' results."""
    from pipeline.errors import CTScoreError

    path = Path(path)
    folder = path if path.is_dir() else path.parent
    marker = folder / TABLES_PENDING
    if not marker.is_file():
        return
    try:
        since = json.loads(marker.read_text(encoding="utf-8")).get("since", "?")
    except (OSError, ValueError, AttributeError):
        since = "?"
    raise CTScoreError("TABLES_STALE", f"the tables of {folder} (scans.csv, zones.csv, landmarks.csv, run.json, "
                       f"report.html) may not match its scans' results: a run began scoring into it at {since} and has "
                       "not written them (it is still going, was stopped (Ctrl-C, SIGTERM), or ended without a word: "
                       "killed, out of memory, a power cut, a full disk): run the same command again to resume (it writes them), or, "
                       "once no run is going, `ctscore aggregate OUT` writes them from the scans' results "
                       f"(`--allow-unfinished` where series were left unscored) [{marker}]", folder)


# Stable dtypes of the tables (Parquet keeps them; CSV readers can use them via ``table_dtypes``).
_TEXT = {"scan_id", "patient_id", "study_date", "series_time", "series_uid", *SETTINGS_COLUMNS, "status", "segmenter", "mosmed_category",
         "qc_flags", "manufacturer", "kernel", "patient_position", "lobar_note", "system", "lung", "unit", "code", "message", "path",
         "near_edge", "landmark", "method", "confidence", "ctscore_method", "ctscore_confidence", "note"}
_BOOL = {"apex_covered", "base_covered"}
#: text columns where an empty value is a missing one (null in the Parquet files and the API's frames, like the
#: numbers): two scans without a PatientID were one patient "" to ``groupby`` there, while the CSV read them as NA.
#: (An empty ``qc_flags`` or ``lobar_note`` says "none": it stays "".)
_EMPTY_IS_MISSING = {"patient_id", "study_date", "series_time", "series_uid", "manufacturer", "kernel",
                      "patient_position"}
#: whole numbers (scores, grades, slice counts): nullable integers, so a failed scan's empty cell does not turn
#: every score of the column into "7.0" in the CSV
_INT = {"six_zone_total", "zhang900_total", "lobar20_total", "lobar25_total", "n_slices", "extent_score",
        "density_grade", "unit_score", "six_zone_near_edge", "zhang900_near_edge"}


def table_dtypes(columns: Iterable[str]) -> dict[str, str]:
    """pandas dtypes of the output table columns: text as string, flags as boolean, scores and counts as
    nullable integers (``Int64``), the rest float."""
    return {c: "string" if c in _TEXT else "boolean" if c in _BOOL else "Int64" if c in _INT else "float64"
            for c in columns}


def atomic_write_table(path: Path, rows: Iterable[Mapping[str, Any]], columns: list[str]) -> pd.DataFrame:
    """Write rows as CSV and Parquet (known columns first, extra columns after); return the frame.

    Columns have stable dtypes (see :func:`table_dtypes`), so an empty table and a full one read back
    alike in pandas, R (arrow) and Excel (CSV). Text that is not valid UTF-8 (a failed series' path or message naming
    a folder with a Latin-1 name) is written as inventory.csv writes it (:func:`printable_text`): it stopped the run
    before its tables with a UnicodeEncodeError, on every rerun and ``ctscore aggregate`` too.
    """
    df = pd.DataFrame([{printable_text(k): printable_text(v) for k, v in row.items()} for row in rows])
    extra = [c for c in df.columns if c not in columns]
    df = df.reindex(columns=columns + extra)
    for c in _EMPTY_IS_MISSING.intersection(df.columns):
        df[c] = df[c].mask(df[c].astype(object).map(lambda v: isinstance(v, str) and not v.strip()))
    for c, t in table_dtypes(df.columns).items():
        if c in extra and t == "float64":
            continue  # an unknown extra column keeps the type pandas gave it
        try:
            df[c] = df[c].astype(t)
        except (TypeError, ValueError):
            pass  # e.g. a fractional value in a whole-number column: kept as it is rather than truncated
    atomic_write_bytes(path, df.to_csv(index=False).encode())
    atomic_write_bytes(path.with_suffix(".parquet"), df.to_parquet(index=False))
    return df


def previous_name(final: Path) -> Path:
    """Where :meth:`SeriesFolder.commit` keeps a scan's earlier folder for the moment of the swap."""
    return final.with_name(f".{final.name}.old")


def restore_interrupted(out_dir: Path, scan_id: str) -> bool:
    """Put back a scan's earlier folder when a commit was interrupted between its two renames (the folder is
    missing, its ``.old`` copy is there); True when it did."""
    final = Path(out_dir) / scan_id
    old = previous_name(final)
    if not final.exists() and old.is_dir():
        replace_path(old, final)
        return True
    return False


_commit_state = threading.local()


def commit_started() -> bool:
    """Whether the calling thread has begun a :meth:`SeriesFolder.commit` since :func:`reset_commit_state`:
    the serial executor's alarm handler (main thread) then lets the scan finish, for its result is in
    place or being put there (stopping it between the renames, or after them, would lose or contradict it)."""
    return getattr(_commit_state, "started", False)


def reset_commit_state() -> None:
    """Forget earlier commits of the calling thread (before a scan starts)."""
    _commit_state.started = False
    _commit_state.gate = None


class ScanCancelled(BaseException):
    """Raised by :meth:`SeriesFolder.commit` in a scan whose waiting thread gave up on it (:class:`CommitGate`):
    the scan was recorded as timed out, and its results are not put in place. A BaseException, like Ctrl-C: the
    scan's folder is discarded, and no failure is recorded for it (its TIMEOUT is)."""


class CommitGate:
    """Between a scan run in a helper thread and the thread that waits for it with a time limit (where no alarm
    can interrupt the scan: a dask worker, Windows): at the limit the waiting thread either cancels the scan, whose
    commit then refuses to put its results in place (they would contradict its TIMEOUT record), or, when the
    commit has begun, lets it finish and takes its result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = False
        self.cancelled = False

    def begin_commit(self) -> None:
        with self._lock:
            if self.cancelled:
                raise ScanCancelled("the scan ran past its time limit; its results are not kept")
            self.started = True

    def cancel(self) -> bool:
        """True when the scan was cancelled before its commit; False when its commit has begun (wait for it)."""
        with self._lock:
            if self.started:
                return False
            self.cancelled = True
            return True


def check_cancelled() -> None:
    """Raise :class:`ScanCancelled` when the calling thread's scan was given up by the thread waiting for it: a
    cancelled scan stops at its next stage instead of running to its commit beside the scans after it (sharing the
    model, the GPU, the cores)."""
    gate = getattr(_commit_state, "gate", None)
    if gate is not None and gate.cancelled:
        raise ScanCancelled("the scan ran past its time limit; stopped")


def set_commit_gate(gate: CommitGate | None) -> None:
    """The :class:`CommitGate` of the scan the calling thread runs (after :func:`reset_commit_state`)."""
    _commit_state.gate = gate


class EarlierCopyStuck(OSError):
    """Raised by :meth:`SeriesFolder.commit` when the ``.<scan_id>.old`` folder an earlier commit could not remove is
    still there (no permission to empty it): the new results are not put in place, the ones in place are kept. A
    fault of that one scan's folder, not of the output folder: ``ctscore run`` records the scan as failed
    (OUTPUT_UNWRITABLE) and goes on with the others (it stopped the whole batch, an audit 2026-12-07), after first
    trying to set the folder aside (:func:`set_aside_earlier_copy`)."""


def set_aside_earlier_copy(out_dir: Path, scan_id: str) -> Path | None:
    """Before a scan is scored again: where its results are in place and a ``.<scan_id>.old`` folder of an earlier
    commit is left beside them (it could not be removed: a folder without write permission), remove it, or, where
    that fails, rename it to ``.<scan_id>.old.<time>`` (never deleted: it is named in a warning, to be removed by
    hand), so that the scan's commit can go on. Returns the new name, or None when nothing was set aside. Where the
    results are not in place the ``.old`` folder may be their only copy: it is left for :func:`restore_interrupted`."""
    final = Path(out_dir) / scan_id
    old = previous_name(final)
    if not old.is_dir() or not final.is_dir():
        return None
    shutil.rmtree(old, ignore_errors=True)  # an outdated copy: the results in place are newer
    if not old.exists():
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for k in range(100):
        aside = old.with_name(f"{old.name}.{stamp}" + (f"-{k}" if k else ""))
        if aside.exists():
            continue
        try:
            os.rename(old, aside)
        except OSError as exc:
            log.warning("%s: an earlier copy of its results, %s, can be neither removed nor renamed (%s): the scan "
                        "cannot be given new results until it is removed by hand", scan_id, old, exc.strerror or exc)
            return None
        log.warning("%s: an earlier copy of its results, %s, could not be removed (permissions?): set aside as %s; "
                    "remove it by hand", scan_id, old.name, aside.name)
        return aside
    return None


class SeriesFolder:
    """Build OUT/<scan_id>/ under a temporary name; :meth:`commit` renames it into place."""

    def __init__(self, out_dir: Path, scan_id: str):
        self.final = out_dir / scan_id
        out_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{scan_id}.", suffix=".partial"))
        os.chmod(self.tmp, 0o777 & ~current_umask())

    def path(self, name: str) -> Path:
        return self.tmp / name

    def commit(self) -> Path:
        """Rename the finished folder into place. A folder of an earlier run is moved aside first (two renames:
        no filesystem call swaps two folders atomically); the serial executor's alarm lets the scan finish from
        here on (:func:`commit_started`), and an interruption between the two renames is undone by
        :func:`restore_interrupted`."""
        fsync_tree(self.tmp)  # the files are on disk before the folder is renamed into place
        gate = getattr(_commit_state, "gate", None)
        if gate is not None:
            gate.begin_commit()
        _commit_state.started = True
        if self.final.exists():
            old = previous_name(self.final)
            shutil.rmtree(old, ignore_errors=True)
            if old.exists():  # left by an earlier commit that could not remove it: named, not "Directory not empty"
                raise EarlierCopyStuck(errno.ENOTEMPTY, f"an earlier copy of these results, {old}, cannot be removed "
                                                        "(permissions?): remove it by hand")
            replace_path(self.final, old)
            replace_path(self.tmp, self.final)
            shutil.rmtree(old, ignore_errors=True)
            if old.exists():
                log.warning("the earlier results of %s were replaced, but their folder %s could not be removed "
                            "(permissions?): remove it by hand", self.final.name, old)
        else:
            replace_path(self.tmp, self.final)
        fsync_dir(self.final.parent)
        return self.final

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def folder_problem(folder: str | Path) -> str | None:
    """Why ``folder`` could not be made and written into, found without making anything (its nearest existing
    ancestor, where new folders would go, is not a folder or not writable), or None."""
    where = Path(folder).absolute()
    while not where.exists() and where.parent != where:
        where = where.parent
    if not where.is_dir():
        return f"{where}: not a folder"
    if not os.access(where, os.W_OK | os.X_OK):
        return f"{where}: permission denied"
    return None


def check_output_dir(out_dir: str | Path) -> None:
    """OUTPUT_UNWRITABLE naming ``out_dir`` when it cannot be made or written into, found without making anything
    (``ctscore validate`` and ``ctscore stats`` check it first, read their inputs, and only then make the folder with
    :func:`prepare_output_dir`: a wrong ``-o`` fails at once, a missing input leaves no folder)."""
    from pipeline.errors import CTScoreError

    why = folder_problem(out_dir)
    if why:
        raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot write into the output folder ({why})", out_dir)


#: What each analysis command writes that the other does not (``data_summary.csv`` and ``summary.html`` both write):
#: one -o for both would replace the other's summary (glob patterns).
ANALYSIS_FILES = {
    "stats": ("liao2021_*.csv", "zhang2020_*.csv", "li2020_*.csv"),
    "validate": ("ratings.csv", "agreement.csv", "side_by_side.csv"),
}


def check_analysis_output(out_dir: str | Path, command: str, inputs: Iterable[str | Path] = ()) -> None:
    """Before ``ctscore stats`` or ``ctscore validate`` writes into ``out_dir`` (``command``: which): refuse a folder
    that is one of its ``inputs`` (the run's output folder it reads) or that holds a run's tables (``run.json``)
    with OUTPUT_IS_INPUT (some 30 tables and pictures would be mixed with the run's, its summary.html beside
    report.html), and a folder holding the other command's tables and a
    ``data_summary.csv`` or ``summary.html`` with OUTPUT_IN_USE (both write those: one would replace the other's)."""
    from pipeline.errors import CTScoreError

    out = Path(out_dir)
    if not out.is_dir():
        return
    here = out.resolve()
    for given in inputs:  # the run folder read (a scans.csv given alone: only a run's folder is refused, below)
        p = Path(given)
        if p.is_dir() and p.resolve() == here:
            raise CTScoreError("OUTPUT_IS_INPUT", f"the output folder is the folder of the input {str(given)!r}: "
                               f"the tables of `ctscore {command}` would be written among it; give -o a folder of "
                               "its own (e.g. a sub-folder)", out_dir)
    if (out / "run.json").is_file():
        raise CTScoreError("OUTPUT_IS_INPUT", f"the output folder holds a ctscore run's tables (run.json): the tables "
                           f"of `ctscore {command}` would be mixed with the run's; give -o a folder of its own (e.g. a "
                           "sub-folder)", out_dir)
    other = "validate" if command == "stats" else "stats"
    found = sorted({p.name for pattern in ANALYSIS_FILES[other] for p in out.glob(pattern) if p.is_file()})[:3]
    if found and ((out / "data_summary.csv").is_file() or (out / "summary.html").is_file()):
        raise CTScoreError("OUTPUT_IN_USE", f"the output folder holds the tables of `ctscore {other}` "
                           f"({', '.join(found)}): both write data_summary.csv and summary.html, so one would "
                           f"replace the other's; give `ctscore {command}` a folder of its own", out_dir)


def prepare_output_dir(out_dir: str | Path) -> Path:
    """Create the output folder (and its parents); OUTPUT_UNWRITABLE naming it when that is not possible. Call it
    before the work, so that a wrong ``-o`` fails at once, not after the analysis."""
    from pipeline.errors import CTScoreError

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK | os.X_OK):
            raise PermissionError(13, "permission denied")
    except OSError as exc:
        raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot write into the output folder ({exc.strerror or exc})",
                           out) from exc
    return out


def write_csv_tables(tables: Mapping[str, pd.DataFrame], out_dir: Path, float_format: str | None = None
                     ) -> list[Path]:
    """One CSV per table (floats in ``float_format``, full precision without one), each written atomically; returns
    the paths."""
    out_dir = prepare_output_dir(out_dir)
    paths = []
    for name, df in tables.items():
        p = out_dir / f"{name}.csv"
        atomic_write_bytes(p, printable_frame(df).to_csv(index=False, float_format=float_format).encode())
        paths.append(p)
    return paths


#: A setting left empty in some rows of a table and given in others (rows of an older ctscore pooled with newer).
NOT_RECORDED = "not recorded (an older ctscore?)"


def settings_note(scans: pd.DataFrame, what: str = "these scores") -> str | None:
    """A note when the scored rows of a scans table were made with more than one ctscore version, model or
    configuration (:data:`SETTINGS_COLUMNS`; a table of ctscore before 0.2.0 has only ``segmenter``), naming each
    setting and how many scans it made, rows without it as :data:`NOT_RECORDED` when others have it; None when one
    made them all (or the table does not say)."""
    if scans is None or not len(scans):
        return None
    df = scans
    if "status" in df.columns:
        df = df[df["status"].astype(str).str.strip().str.lower().isin(["ok", ""])]
    parts, salts = [], ""
    for col in ("segmenter", *SETTINGS_COLUMNS):
        if col not in df.columns:
            continue
        values = df[col].astype(object).where(df[col].notna(), "").astype(str).str.strip()
        values = values.replace({"nan": "", "<NA>": "", "None": ""})
        counts = values[values != ""].value_counts()
        if len(counts) and (values == "").any():  # rows of a table before 0.2.0 (no such column) pooled with newer
            counts[NOT_RECORDED] = int((values == "").sum())
        if len(counts) > 1:
            listed = ", ".join(f"{v} ({n} scan{'s' if n != 1 else ''})" for v, n in counts.items())
            if col == "pseudonym_salt_id":  # ids, not scores: two sites' own secret salts are the normal case
                salts = (f"patient ids were made with different pseudonym salts ({listed}): one patient has a "
                         "different patient_id under each, so link patients across them by your own key, not by "
                         "patient_id")
            else:
                parts.append(f"{col} {listed}")
    notes = []
    if parts:
        notes.append(f"{what} were made with different settings ({'; '.join(parts)}): scores of different models, "
                     "configurations, versions or devices are not comparable; score every scan with one setting "
                     "(ctscore run --overwrite into one OUT) or analyse each setting apart")
    if salts:
        notes.append(salts)
    return "; ".join(notes) or None
