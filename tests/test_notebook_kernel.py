"""One long-lived notebook kernel (an audit of the Python API): runs in threads, Ctrl-C while a cluster starts,
the kernel's environment after a local run, and warnings where no logging is set up."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from pipeline import batch
from pipeline.errors import OutputLocked
from pipeline.logcapture import collect_warnings


def test_two_threads_of_one_kernel_cannot_write_into_one_folder(tmp_path):
    """The lock's re-entry was per process: a second run_pipeline from another thread of the kernel was let in
    while the first wrote, and the two scored the same scan into one folder (its returned scans disagreed with
    scans.csv)."""
    out = tmp_path / "out"
    holding, release = threading.Event(), threading.Event()

    def first():
        with batch.writer_lock(out):
            holding.set()
            release.wait(10)

    th = threading.Thread(target=first)
    th.start()
    try:
        assert holding.wait(10)
        with pytest.raises(OutputLocked, match="is writing to"):
            with batch.writer_lock(out):
                pass
    finally:
        release.set()
        th.join(10)
    with batch.writer_lock(out):  # released with the first thread's block
        with batch.writer_lock(out) as nested:  # the same thread: run_pipeline, then run_batch
            assert nested is False


def test_a_local_run_gives_the_kernel_its_thread_variables_back(monkeypatch):
    """distributed's Nanny sets OMP/MKL/OPENBLAS_NUM_THREADS=1 in the calling process too: a later serial run (and
    the notebook's own PyTorch) got one thread."""
    monkeypatch.setenv("MKL_NUM_THREADS", "4")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with batch._dask_settings(batch.BatchOptions()):
        os.environ.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "4"


def test_clusters_begun_before_an_interrupt_are_closed():
    """Ctrl-C while the LocalCluster started left its scheduler and worker processes in the kernel (distributed
    cleans up after an Exception only), and later runs warned that port 8787 was in use."""
    from distributed.deploy.spec import SpecCluster

    closed = []

    class Begun:
        def close(self):
            closed.append(self)

    begun = Begun()

    def make():
        SpecCluster._instances.add(begun)
        raise KeyboardInterrupt

    try:
        with pytest.raises(KeyboardInterrupt):
            batch._started(make)
    finally:
        SpecCluster._instances.discard(begun)
    assert closed == [begun]


def test_warnings_reach_a_notebook_that_set_up_no_logging(monkeypatch, capsys):
    """The collector of run_pipeline's warnings counted as a handler, so Python's last-resort handler (which prints
    warnings where no logging is set up, as in a Jupyter kernel) stayed silent: a failed scan said nothing until the
    call returned."""
    monkeypatch.setattr(logging.root, "handlers", [])
    for name in ("pipeline", "scoring", "segmentation"):
        monkeypatch.setattr(logging.getLogger(name), "handlers", [])
    with collect_warnings() as got:
        logging.getLogger("pipeline.batch").warning("[1/1] scan-x failed NO_LUNG_FOUND")
    assert got == ["[1/1] scan-x failed NO_LUNG_FOUND"]
    assert "[1/1] scan-x failed NO_LUNG_FOUND" in capsys.readouterr().err


def test_warnings_are_not_printed_twice_where_logging_is_set_up(monkeypatch, capsys):
    handler = logging.StreamHandler()
    monkeypatch.setattr(logging.root, "handlers", [handler])
    with collect_warnings() as got:
        logging.getLogger("pipeline.batch").warning("once")
    assert got == ["once"] and capsys.readouterr().err.count("once") == 1


def test_a_handler_on_a_sub_logger_only_prints_once(monkeypatch, capsys):
    import sys

    handler = logging.StreamHandler(sys.stderr)
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logging.getLogger("pipeline.batch"), "handlers", [handler])
    with collect_warnings():
        logging.getLogger("pipeline.batch").warning("once?")
    assert capsys.readouterr().err.count("once?") == 1


def test_another_thread_is_refused_where_file_locks_belong_to_the_process(tmp_path, monkeypatch):
    """NFS emulates flock with locks of the whole process (and some file systems have none): the file lock let a
    second thread in; the process's own record of which thread writes where refuses it."""
    monkeypatch.setattr(batch, "_take", lambda *a, **k: True)
    out = tmp_path / "out"
    refused = []

    def second():
        try:
            with batch.writer_lock(out):
                pass
        except OutputLocked as exc:
            refused.append(str(exc))

    with batch.writer_lock(out):
        th = threading.Thread(target=second)
        th.start()
        th.join(10)
    assert refused and "another thread" in refused[0]
    th = threading.Thread(target=second)
    th.start()
    th.join(10)
    assert len(refused) == 1  # released: let in


def test_an_interrupt_while_waiting_for_a_scan_keeps_its_results_out(tmp_path):
    """Ctrl-C reached the thread waiting for a scan run in a thread (Windows, a notebook): the scan ran on and put
    its results in place after the run had let go of the folder."""
    import _thread

    from pipeline import outputs

    done = threading.Event()

    def work():
        try:
            folder = outputs.SeriesFolder(tmp_path, "scan-k")
            folder.path("result.json").write_text("{}")
            time.sleep(1.0)
            try:
                folder.commit()
            except BaseException:
                folder.discard()
                raise
            return {"status": "ok"}
        finally:
            done.set()

    import signal

    # Python's own Ctrl-C (dask_jobqueue, imported by other tests, replaces it with sys.exit)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.3, _thread.interrupt_main).start()
        task = batch.Task(scan_id="scan-k", series_uid="1.5", files=[str(tmp_path / "f.dcm")])
        with pytest.raises(KeyboardInterrupt):
            batch._run_in_thread(work, task, 30)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done.wait(10)  # (an interrupted join can leave the Thread object looking ended: wait for the scan itself)
    time.sleep(0.2)
    assert not (tmp_path / "scan-k").exists() and not list(tmp_path.iterdir())


def test_a_timed_out_scan_stops_at_its_next_stage(tmp_path):
    from pipeline import outputs

    went_on = []

    def work():
        time.sleep(0.6)
        outputs.check_cancelled()  # as process_series does between loading, analysis and writing
        went_on.append(True)
        return {"status": "ok"}

    task = batch.Task(scan_id="scan-s", series_uid="1.6", files=[str(tmp_path / "f.dcm")])
    status, _ = batch._run_in_thread(work, task, 0.2)
    assert status["code"] == "TIMEOUT"
    for th in threading.enumerate():
        if th.name == "ctscore-scan-s":
            th.join(10)
    assert went_on == []
