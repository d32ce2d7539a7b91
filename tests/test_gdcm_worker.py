"""The GDCM child process (pipeline.gdcm_worker): an interrupted or hung decode never hands a later file another
file's pixels, and the child stops with the run."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from pipeline import gdcm_worker
from tests.dicom_factory import read, write_series
from tests.test_loader_fuzz_review import SIZE


@pytest.fixture()
def jpeg_ls_files(tmp_path, monkeypatch):
    """Two one-slice JPEG-LS files of different content, and a fresh child that honours test delays."""
    from pydicom.uid import JPEGLSLossless

    monkeypatch.setenv("CTSCORE_GDCM_WORKER_TESTING", "1")
    gdcm_worker._stop_at_exit()  # a child started without the variable
    files = []
    for k in range(2):
        (f,) = write_series(tmp_path / str(k), 1, size=SIZE, z0=float(k))
        ds = read(f)
        ds.PixelData = (np.arange(SIZE * SIZE, dtype=np.int16).reshape(SIZE, SIZE) * (k + 1)).tobytes()
        ds.compress(JPEGLSLossless)
        ds.save_as(f)
        files.append(f)
    yield files
    gdcm_worker._stop_at_exit()


def _pixels(path):
    return gdcm_worker.decode(path, (1, SIZE, SIZE), "pydicom").reshape(SIZE, SIZE)


def test_an_interrupted_decode_does_not_hand_its_answer_to_the_next_file(jpeg_ls_files):
    """A scan's timeout alarm (or Ctrl-C) raised while the parent waited left the child running; its answer for
    the interrupted file was then read as the next file's pixels, and every later answer one file behind."""
    a, b = jpeg_ls_files
    expect_b = _pixels(b).copy()

    class Alarm(BaseException):
        pass

    def ring(*_):
        raise Alarm

    old = signal.signal(signal.SIGALRM, ring)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Alarm):
            gdcm_worker.decode(a, (1, SIZE, SIZE), "pydicom", _test_delay_s=1.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert np.array_equal(_pixels(b), expect_b)
    assert not np.array_equal(_pixels(a), expect_b)


def test_a_hung_decode_is_stopped_and_refused(jpeg_ls_files, monkeypatch):
    a, b = jpeg_ls_files
    monkeypatch.setattr(gdcm_worker, "DECODE_TIMEOUT_S", 0.5)
    with pytest.raises(gdcm_worker.GdcmCrashed, match="did not finish decoding this file"):
        gdcm_worker.decode(a, (1, SIZE, SIZE), "pydicom", _test_delay_s=30.0)
    monkeypatch.setattr(gdcm_worker, "DECODE_TIMEOUT_S", 60.0)  # a new child's start can take over 0.5 s
    assert _pixels(b).shape == (SIZE, SIZE)  # a new child


def test_the_child_ignores_the_terminals_ctrl_c(jpeg_ls_files):
    """Ctrl-C reached the child too (same process group) and printed its traceback; the parent stops it."""
    import os

    a, _ = jpeg_ls_files
    _pixels(a)
    child = gdcm_worker._child
    assert os.getsid(child.pid) != os.getsid(0)  # its own session: the terminal's SIGINT does not reach it
    child.send_signal(signal.SIGINT)
    assert _pixels(a).shape == (SIZE, SIZE) and gdcm_worker._child is child
