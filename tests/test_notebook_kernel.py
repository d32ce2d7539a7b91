"""One long-lived notebook kernel (an audit of the Python API): runs in threads, Ctrl-C while a cluster starts,
the kernel's environment after a local run, and warnings where no logging is set up."""

from __future__ import annotations

import logging
import os
import threading

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
