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
    """The child process decoding a file died (GDCM aborted on the file's pixel data)."""


_lock = threading.Lock()
_child: subprocess.Popen | None = None


def _start() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.gdcm_worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=None, cwd=str(Path(__file__).resolve().parents[1]))


def _stop(child: subprocess.Popen) -> None:
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
    with _lock:
        if _child is not None:
            _stop(_child)
            _child = None


def decode(path: Path, shape: tuple[int, int, int], mode: str = "raw") -> np.ndarray:
    """The file decoded in the child (``mode`` as in the module's protocol); its errors are raised here with their
    message (as RuntimeError, ImportError kept as ImportError); :class:`GdcmCrashed` when the child died on this
    file."""
    global _child
    request = (json.dumps({"mode": mode, "path": str(path), "shape": list(shape)}) + "\n").encode()
    with _lock:
        if _child is None or _child.poll() is not None:
            _child = _start()
        child = _child
        try:
            child.stdin.write(request)
            child.stdin.flush()
            header = child.stdout.readline()
            if not header:
                raise EOFError
            answer = json.loads(header)
            if "error" in answer:
                kind = ImportError if answer.get("type") == "ImportError" else RuntimeError
                raise kind(answer["error"])
            raw = child.stdout.read(int(answer["nbytes"]))
            if len(raw) != int(answer["nbytes"]):
                raise EOFError
        except (EOFError, BrokenPipeError, OSError, ValueError) as exc:
            _stop(child)
            _child = None
            code = child.returncode
            raise GdcmCrashed(f"gdcm ended its process while decoding this file (exit {code}): the pixel data are "
                              "damaged") from exc
    return np.frombuffer(raw, dtype=np.dtype(answer["dtype"])).reshape(answer["shape"])


def _serve() -> None:
    """The child's loop: decode each requested file (:func:`pipeline.decoding._gdcm_decode_here` or
    :func:`pipeline.decoding._pydicom_gdcm_here`)."""
    out = os.fdopen(os.dup(1), "wb")  # the protocol's own stream; GDCM's prints go to stderr
    os.dup2(2, 1)
    from pipeline.decoding import _gdcm_decode_here, _pydicom_gdcm_here

    for line in sys.stdin.buffer:
        req = json.loads(line)
        try:
            path = Path(req["path"])
            arr = (_pydicom_gdcm_here(path) if req.get("mode") == "pydicom"
                   else _gdcm_decode_here(path, tuple(req["shape"])))
            arr = np.ascontiguousarray(arr)
        except Exception as exc:  # noqa: BLE001 - sent back to the caller, who decides
            out.write((json.dumps({"error": str(exc), "type": type(exc).__name__}) + "\n").encode())
        else:
            out.write((json.dumps({"dtype": arr.dtype.str, "shape": list(arr.shape), "nbytes": arr.nbytes})
                       + "\n").encode())
            out.write(arr.tobytes())
        out.flush()


if __name__ == "__main__":
    _serve()
