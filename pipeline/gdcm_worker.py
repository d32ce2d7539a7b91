"""python-gdcm decoding in a child process: damaged pixel data that make GDCM abort the process cannot take ctscore
down with them.

GDCM's codecs end the whole process (``std::terminate``: an uncaught C++ exception) on some damaged JPEG Lossless,
JPEG-LS and RLE streams (the header bytes of a frame replaced: found by random runs of
tests/test_loader_fuzz_review.py). In a serial run that stopped the batch at that series with no result for the
others; pydicom's own gdcm plugin (the first of the JPEG, JPEG-LS and JPEG 2000 decoders it tries, the only one
for JPEG Lossless) is run there too. :func:`decode` sends each file to one long-lived child (``python -m pipeline.gdcm_worker``, started on
first use, one per process, restarted after a crash) over its stdin/stdout: the child's death is that file's
error (:class:`GdcmCrashed`), and the next file gets a new child. A plain subprocess, not multiprocessing: nothing
of the caller's ``__main__`` is imported again (a notebook's or a script's), and it works inside dask's daemonic
worker processes.

Protocol, one request at a time: a JSON line ``{"mode": "raw" | "pydicom", "path": ..., "shape": [frames, rows,
cols]}``; the answer a JSON line ``{"dtype": ..., "shape": [...], "nbytes": N}`` then N bytes of the decoded array
(C order), or ``{"error": ..., "type": ...}``. ``raw``: :func:`pipeline.decoding._gdcm_decode_here` (GDCM's own
buffer); ``pydicom``: :func:`pipeline.decoding._pydicom_gdcm_here` (pydicom's pixel_array with its gdcm plugin).
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np


class GdcmCrashed(RuntimeError):
    """The child process decoding a file died (GDCM aborted on the file's pixel data) or did not answer in time."""


#: seconds a file may take to decode in the child before it is killed and the file refused (a 1000-frame enhanced
#: CT takes a few seconds; a decoder caught in a loop on damaged data would hold the whole run)
DECODE_TIMEOUT_S = 600.0

_lock = threading.Lock()
_child: subprocess.Popen | None = None
_serial = 0


def _start() -> subprocess.Popen:
    # its own session: a Ctrl-C in the terminal reaches ctscore, which stops the child, not the child itself
    return subprocess.Popen([sys.executable, "-m", "pipeline.gdcm_worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=None, bufsize=0, start_new_session=True,
                            cwd=str(Path(__file__).resolve().parents[1]))


def _stop(child: subprocess.Popen, kill: bool = False) -> None:
    if kill:
        child.kill()
    for stream in (child.stdin, child.stdout):
        try:
            stream.close()
        except OSError:
            pass
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


@atexit.register
def _stop_at_exit() -> None:
    global _child
    child = _child
    if child is None:
        return
    if _lock.acquire(timeout=1.0):  # a thread stuck in decode holds it: kill the child without it
        try:
            _stop(child)  # its stdin closed: it ends
            _child = None
        finally:
            _lock.release()
    else:
        child.kill()


#: whether the child's pipe can be waited on with ``select`` (POSIX); on Windows ``select`` takes sockets only and
#: there is no ``os.readv``: each answer is read by a helper thread that the caller waits for with a deadline.
_SELECT_PIPES = sys.platform != "win32"


def _read(fd: int, n: int, deadline: float, into: memoryview | None = None) -> bytes | None:
    """Exactly ``n`` bytes from ``fd`` (into ``into`` when given), or raise EOFError / TimeoutError."""
    if not _SELECT_PIPES:
        return _with_deadline(lambda: _read_blocking(fd, n, into), deadline)
    import select
    import time

    got, parts = 0, []
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError
        if into is not None:
            k = os.readv(fd, [into[got:]])
        else:
            chunk = os.read(fd, n - got)
            k = len(chunk)
            parts.append(chunk)
        if k == 0:
            raise EOFError
        got += k
    return None if into is not None else b"".join(parts)


def _read_blocking(fd: int, n: int, into: memoryview | None = None) -> bytes | None:
    """:func:`_read` without a deadline (blocking reads; ``os.read`` exists everywhere)."""
    got, parts = 0, []
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 22))
        if not chunk:
            raise EOFError
        if into is not None:
            into[got:got + len(chunk)] = chunk
        else:
            parts.append(chunk)
        got += len(chunk)
    return None if into is not None else b"".join(parts)


def _read_line_blocking(fd: int) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        line += _read_blocking(fd, 1)
        if len(line) > 1 << 16:
            raise ValueError("answer line too long")
    return line


def _with_deadline(read, deadline: float):
    """``read()`` in a helper thread, waited for until ``deadline`` (TimeoutError after it); its exception is raised
    here. The wait is in short steps, so that Ctrl-C and a scan's timeout reach the caller meanwhile; the caller
    then kills the child, which ends the read (EOF) and the thread."""
    import time

    box: dict = {}

    def target():
        try:
            box["value"] = read()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = exc

    t = threading.Thread(target=target, name="ctscore-gdcm-read", daemon=True)
    t.start()
    while t.is_alive():
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        t.join(min(left, 0.25))
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _read_line(fd: int, deadline: float) -> bytes:
    if not _SELECT_PIPES:
        return _with_deadline(lambda: _read_line_blocking(fd), deadline)
    line = b""
    while not line.endswith(b"\n"):
        line += _read(fd, 1, deadline)
        if len(line) > 1 << 16:
            raise ValueError("answer line too long")
    return line


def decode(path: Path, shape: tuple[int, int, int], mode: str = "raw", _test_delay_s: float = 0.0) -> np.ndarray:
    """The file decoded in the child (``mode`` as in the module's protocol); its errors are raised here with their
    message (RuntimeError; ImportError and MemoryError kept); :class:`GdcmCrashed` when the child died on this
    file or did not answer within :data:`DECODE_TIMEOUT_S`. Anything raised while waiting (a scan's timeout
    alarm, Ctrl-C) stops the child too, so that no later file reads this one's answer."""
    import time

    global _child, _serial
    with _lock:
        _serial += 1
        request = (json.dumps({"id": _serial, "mode": mode, "path": str(path), "shape": list(shape),
                               "delay_s": _test_delay_s}) + "\n").encode()
        if _child is None or _child.poll() is not None:
            _child = _start()
        child = _child
        fd = child.stdout.fileno()
        deadline = time.monotonic() + DECODE_TIMEOUT_S
        try:
            child.stdin.write(request)
            answer = json.loads(_read_line(fd, deadline))
            if answer.get("id") != _serial:
                raise ValueError(f"answer {answer.get('id')} to request {_serial}")
            if "error" in answer:
                kind = {"ImportError": ImportError, "MemoryError": MemoryError}.get(answer.get("type"), RuntimeError)
                raise kind(answer["error"])
            arr = np.empty(answer["shape"], dtype=np.dtype(answer["dtype"]))
            if arr.nbytes != int(answer["nbytes"]):
                raise ValueError("answer size does not match its shape")
            _read(fd, arr.nbytes, deadline, into=memoryview(arr.reshape(-1).view(np.uint8)))
        except (ImportError, MemoryError, RuntimeError):
            raise  # the child's own answer: it is in step and stays
        except TimeoutError as exc:
            _stop(child, kill=True)
            _child = None
            raise GdcmCrashed(f"gdcm did not finish decoding this file in {DECODE_TIMEOUT_S:.0f} s (stopped): the "
                              "pixel data are likely damaged") from exc
        except (EOFError, OSError, ValueError) as exc:
            _stop(child, kill=child.poll() is None)
            _child = None
            code = child.returncode
            if code == -9:  # SIGKILL from outside: the kernel's out-of-memory killer, most likely
                raise MemoryError("the gdcm decoding process was killed (out of memory?)") from exc
            raise GdcmCrashed(f"gdcm ended its process while decoding this file (exit {code}): the pixel data are "
                              "damaged") from exc
        except BaseException:  # a timeout alarm or Ctrl-C while waiting: the answer would reach the next file
            _stop(child, kill=True)
            _child = None
            raise
    return arr


def _serve() -> None:
    """The child's loop: decode each requested file (:func:`pipeline.decoding._gdcm_decode_here` or
    :func:`pipeline.decoding._pydicom_gdcm_here`); ends when its stdin closes."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    out = os.fdopen(os.dup(1), "wb")  # the protocol's own stream; GDCM's prints go to stderr
    os.dup2(2, 1)
    from pipeline.decoding import _gdcm_decode_here, _pydicom_gdcm_here

    try:
        for line in sys.stdin.buffer:
            req = json.loads(line)
            try:
                if os.environ.get("CTSCORE_GDCM_WORKER_TESTING"):  # tests: a slow or hung decoder
                    import time

                    time.sleep(float(req.get("delay_s") or 0.0))
                path = Path(req["path"])
                arr = (_pydicom_gdcm_here(path) if req.get("mode") == "pydicom"
                       else _gdcm_decode_here(path, tuple(req["shape"])))
                arr = np.ascontiguousarray(arr)
            except Exception as exc:  # noqa: BLE001 - sent back to the caller, who decides
                out.write((json.dumps({"id": req.get("id"), "error": str(exc), "type": type(exc).__name__})
                           + "\n").encode())
            else:
                out.write((json.dumps({"id": req.get("id"), "dtype": arr.dtype.str, "shape": list(arr.shape),
                                       "nbytes": arr.nbytes}) + "\n").encode())
                out.write(memoryview(arr.reshape(-1).view(np.uint8)))
            out.flush()
    except (BrokenPipeError, KeyboardInterrupt):  # the parent went away
        pass


if __name__ == "__main__":
    _serve()
