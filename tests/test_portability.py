"""Windows and macOS behaviour, simulated on Linux (a portability audit): each test applies one documented rule of
the other system and checks what ctscore does under it."""

from __future__ import annotations

import errno
import fcntl
import io
import os
import sys
import threading
import time

import numpy as np
import pytest

from pipeline import batch, gdcm_worker, outputs
from pipeline.errors import OutputLocked
from tests.test_batch import _csv, _hooks, cfg, series  # noqa: F401 - fixtures
from tests.test_gdcm_worker import SIZE, jpeg_ls_files  # noqa: F401 - fixture


def _windows_fsync(real):
    """Windows flushes only handles open for writing: on a read-only one ``os.fsync`` fails (EBADF)."""

    def fsync(fd):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY and not os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EBADF, "Bad file descriptor")
        return real(fd)

    return fsync


def test_a_series_folder_commits_where_only_writable_handles_can_be_flushed(tmp_path, monkeypatch):
    """fsync_tree opened each file read-only: on Windows every run stopped at its first scan (OUTPUT_UNWRITABLE,
    "Bad file descriptor")."""
    monkeypatch.setattr(outputs.os, "fsync", _windows_fsync(os.fsync))
    folder = outputs.SeriesFolder(tmp_path, "scan-1")
    folder.path("result.json").write_text("{}")
    (folder.tmp / "sub").mkdir()
    (folder.tmp / "sub" / "lungs.nii.gz").write_bytes(b"x")
    assert folder.commit() == tmp_path / "scan-1" and (tmp_path / "scan-1" / "result.json").read_text() == "{}"


def test_a_file_that_cannot_be_opened_for_writing_is_still_committed(tmp_path, monkeypatch):
    folder = outputs.SeriesFolder(tmp_path, "scan-1")
    folder.path("result.json").write_text("{}")
    real_open = os.open

    def no_write(path, flags, *a):
        if flags & os.O_RDWR and str(path).endswith("result.json"):
            raise PermissionError(errno.EACCES, "read-only file")
        return real_open(path, flags, *a)

    monkeypatch.setattr(outputs.os, "open", no_write)
    monkeypatch.setattr(outputs.os, "fsync", _windows_fsync(os.fsync))
    assert (folder.commit() / "result.json").exists()


def test_replace_is_tried_again_on_windows_while_another_program_holds_the_file(tmp_path, monkeypatch):
    """Excel holding scans.csv, or an antivirus scanner a new file: os.replace fails for that moment on Windows."""
    monkeypatch.setattr(outputs.sys, "platform", "win32")
    monkeypatch.setattr(outputs.time, "sleep", lambda s: None)
    real = os.replace
    tries = []

    def busy_twice(src, dst):
        tries.append(dst)
        if len(tries) <= 2:
            raise PermissionError(errno.EACCES, "The process cannot access the file")
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", busy_twice)
    outputs.atomic_write_bytes(tmp_path / "scans.csv", b"a,b\n")
    assert (tmp_path / "scans.csv").read_bytes() == b"a,b\n" and len(tries) == 3

    def always_busy(src, dst):
        raise PermissionError(errno.EACCES, "The process cannot access the file")

    monkeypatch.setattr(outputs.os, "replace", always_busy)
    with pytest.raises(PermissionError, match="scans.csv is held open by another program .*Excel"):
        outputs.atomic_write_bytes(tmp_path / "scans.csv", b"new")
    assert (tmp_path / "scans.csv").read_bytes() == b"a,b\n"  # the old table, untouched
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_replace_is_not_retried_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs.sys, "platform", "linux")
    calls = []

    def refused(src, dst):
        calls.append(dst)
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(outputs.os, "replace", refused)
    with pytest.raises(PermissionError, match="Permission denied"):
        outputs.atomic_write_bytes(tmp_path / "a.json", b"{}")
    assert len(calls) == 1


@pytest.fixture()
def no_select(monkeypatch):
    """The gdcm child's pipe read as on Windows (no select on pipes, no os.readv)."""
    monkeypatch.setattr(gdcm_worker, "_SELECT_PIPES", False)
    monkeypatch.delattr(os, "readv")


def test_gdcm_answers_are_read_without_select(jpeg_ls_files, no_select):  # noqa: F811
    """JPEG Lossless series all failed on Windows (CORRUPT_PIXEL_DATA): the child's answer was awaited with
    select.select, which takes sockets only there, and read with os.readv, which Windows lacks."""
    a, b = jpeg_ls_files
    pa = gdcm_worker.decode(a, (1, SIZE, SIZE), "pydicom").reshape(SIZE, SIZE)
    pb = gdcm_worker.decode(b, (1, SIZE, SIZE), "pydicom").reshape(SIZE, SIZE)
    expect = np.arange(SIZE * SIZE, dtype=np.int16).reshape(SIZE, SIZE)
    assert np.array_equal(pa, expect) and np.array_equal(pb, expect * 2)


def test_a_hung_gdcm_decode_is_stopped_without_select(jpeg_ls_files, no_select, monkeypatch):  # noqa: F811
    a, b = jpeg_ls_files
    monkeypatch.setattr(gdcm_worker, "DECODE_TIMEOUT_S", 0.5)
    t = time.monotonic()
    with pytest.raises(gdcm_worker.GdcmCrashed, match="did not finish decoding this file"):
        gdcm_worker.decode(a, (1, SIZE, SIZE), "pydicom", _test_delay_s=30.0)
    assert time.monotonic() - t < 10
    # a new child starts (Python, numpy, pydicom, gdcm): more than 0.5 s on a loaded machine
    monkeypatch.setattr(gdcm_worker, "DECODE_TIMEOUT_S", 60.0)
    expect = np.arange(SIZE * SIZE, dtype=np.int16).reshape(SIZE, SIZE) * 2
    assert np.array_equal(gdcm_worker.decode(b, (1, SIZE, SIZE), "pydicom").reshape(SIZE, SIZE), expect)  # in step
    for th in threading.enumerate():  # the killed child's reader ended (EOF), not left blocked
        if th.name == "ctscore-gdcm-read":
            th.join(5)
            assert not th.is_alive()


def test_a_timed_out_scan_run_in_a_thread_never_puts_its_results_in_place(tmp_path, monkeypatch):
    """Windows has no SIGALRM: the serial executor waits for the scan in a thread; the timed-out scan ran on and
    committed its complete result folder after its TIMEOUT was recorded (a result that aggregate called failed)."""
    release = threading.Event()

    def work():
        folder = outputs.SeriesFolder(tmp_path, "scan-a")
        folder.path("result.json").write_text("{}")
        release.wait(10)
        try:
            folder.commit()
        except BaseException:
            folder.discard()
            raise
        return {"status": "ok"}

    task = batch.Task(scan_id="scan-a", series_uid="1.2", files=[str(tmp_path / "f.dcm")])
    status, restart = batch._run_in_thread(work, task, 0.3)
    assert status["code"] == "TIMEOUT" and restart
    release.set()
    for th in threading.enumerate():
        if th.name == "ctscore-scan-a":
            th.join(10)
    assert not (tmp_path / "scan-a").exists()
    assert not list(tmp_path.iterdir())  # its temporary folder discarded too


def test_a_scan_whose_commit_has_begun_at_its_time_limit_is_waited_for(tmp_path, monkeypatch):
    """Stopped between its renames, or after them, its folder would be lost or contradict a TIMEOUT record."""
    real_replace = outputs.replace_path

    def work():
        folder = outputs.SeriesFolder(tmp_path, "scan-c")
        folder.path("result.json").write_text("{}")
        monkeypatch.setattr(outputs, "replace_path", lambda a, b: (time.sleep(0.8), real_replace(a, b))[1])
        folder.commit()
        return {"status": "ok", "scan_id": "scan-c"}

    task = batch.Task(scan_id="scan-c", series_uid="1.4", files=[str(tmp_path / "f.dcm")])
    t = time.monotonic()
    status, restart = batch._run_in_thread(work, task, 0.4)
    assert status == {"status": "ok", "scan_id": "scan-c"} and not restart, status
    assert time.monotonic() - t >= 0.8 and (tmp_path / "scan-c" / "result.json").exists()


def test_serial_timeouts_without_an_alarm_keep_no_results_of_the_timed_out_scan(tmp_path, series, cfg,  # noqa: F811
                                                                                monkeypatch):
    """The audit's run on Windows rules (no setitimer): both series TIMEOUT, yet a full result folder of one."""
    import shutil

    from pipeline.batch import BatchOptions
    from pipeline.run import run_pipeline

    src, ids = series
    root = tmp_path / "in"
    for i in (0, 1):
        shutil.copytree(src / f"s{i:02d}", root / f"s{i:02d}")
    monkeypatch.delattr(batch.signal, "setitimer")
    monkeypatch.setenv("CTSCORE_TEST_HOOKS", _hooks(sleep={ids[1]: 7}))
    summary = run_pipeline(root, tmp_path / "out", cfg, all_series=True,
                           batch=BatchOptions(timeout_s=5, progress=False))
    for th in threading.enumerate():  # the timed-out scan, run on to its end
        if th.name == f"ctscore-{ids[1]}":
            th.join(120)
    assert (summary["n_ok"], summary["n_failed"]) == (1, 1)
    assert [r["code"] for r in _csv(tmp_path / "out" / "failures.csv")] == ["TIMEOUT"]
    assert (tmp_path / "out" / ids[0] / "result.json").exists()
    assert not (tmp_path / "out" / ids[1]).exists()
    assert not [p.name for p in (tmp_path / "out").iterdir() if ids[1] in p.name]


def test_output_folders_are_locked_on_windows(tmp_path, monkeypatch):
    """fcntl does not exist on Windows: every run warned that the file system had no locks, and two runs wrote
    into one folder at once. LockFileEx (faked here with its rules: shared or exclusive, per open file) locks it."""
    held: dict[int, tuple[str, bool]] = {}

    def fake_lock(fd, exclusive):
        path = os.path.realpath(f"/proc/self/fd/{fd}")
        others = [ex for f, (p, ex) in held.items() if p == path and f != fd]
        if others and (exclusive or any(others)):
            return False
        held[fd] = (path, exclusive)
        return True

    real_close = os.close
    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.setattr(batch.sys, "platform", "win32")
    monkeypatch.setattr(batch, "_lock_windows", fake_lock)
    monkeypatch.setattr(batch, "_unlock_windows", lambda fd: held.pop(fd, None))
    monkeypatch.setattr(batch, "_owners", {})
    out = tmp_path / "out"
    with batch.writer_lock(out):
        owners = dict(batch._owners)
        batch._owners.clear()  # as if another process asked
        with pytest.raises(OutputLocked, match="another ctscore run .* is writing to"):
            with batch.writer_lock(out):
                pass
        batch._owners.update(owners)
    assert not held  # unlocked when the block ended
    with batch.writer_lock(out, shard="1-of-2"):  # shards share the folder's lock
        batch._owners.clear()
        with batch.writer_lock(out, shard="2-of-2"):
            pass
    assert real_close  # the lock goes with the file, closed by the with block


def test_the_cli_survives_a_console_that_cannot_show_the_text(tmp_path, monkeypatch):
    """A folder named with "≥" printed to a Windows console or pipe in cp1252 raised UnicodeEncodeError after a
    finished command (exit 1)."""
    from pipeline import cli

    out = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")
    monkeypatch.setattr(sys, "stdout", out)
    cli._tolerant_console()
    print("out \u2265 E, J\u00fcrgen")
    out.flush()
    assert out.buffer.getvalue().decode("cp1252") == "out \\u2265 E, J\u00fcrgen\n"


def test_the_log_file_is_utf8(tmp_path, monkeypatch):
    import logging

    from pipeline import cli

    log_file = tmp_path / "run.log"
    cli.setup_logging(log_file=str(log_file))
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    assert [h.encoding for h in files] == ["utf-8"]  # not the system's (cp1252 on Windows: lines lost)
    try:
        logging.getLogger("ctscore.test").warning("folder \u2265 E")
    finally:
        for h in logging.getLogger().handlers:
            h.close()
        logging.getLogger().handlers.clear()
    assert "folder \u2265 E" in log_file.read_text(encoding="utf-8")


def test_resume_finds_results_through_another_spelling_of_a_case_insensitive_path(tmp_path, monkeypatch):
    """``D:\\Study`` and ``d:\\study`` are one folder on Windows: a resume through the other spelling scored every
    series again (the fingerprints hashed the path as typed)."""
    f = tmp_path / "Study" / "a.dcm"
    f.parent.mkdir()
    f.write_bytes(b"x")
    lower = str(f).lower()
    monkeypatch.setattr(batch.os.path, "normcase", lambda p: p.lower())  # ntpath.normcase, in effect
    real_stat = os.stat
    monkeypatch.setattr(batch.os, "stat", lambda p, *a, **k: real_stat(str(f) if str(p).lower() == lower else p))
    assert batch.input_fingerprint([f]) == batch.input_fingerprint([lower])
    assert batch.input_id_for(tmp_path / "Study", "s") == batch.input_id_for(str(tmp_path / "Study").lower(), "s")


def test_kept_failures_are_told_apart_without_inodes_from_scandir(tmp_path, monkeypatch):
    """os.scandir's cached stat has inode 0 on Windows: a record rewritten with the same size in the same
    nanosecond tick looked kept from an earlier run (the --retry-failed hint and ``n_failed_kept`` were wrong)."""
    import types

    from pipeline import run as run_mod

    status = tmp_path / batch.STATUS_DIR
    status.mkdir()
    (status / "scan-a.json").write_text("{}")
    real_scandir = os.scandir

    class WindowsEntries:
        def __init__(self, path):
            self.it = real_scandir(path)

        def __enter__(self):
            return [types.SimpleNamespace(name=e.name, path=e.path, stat=lambda e=e: types.SimpleNamespace(
                st_ino=0, st_mtime_ns=e.stat().st_mtime_ns, st_size=e.stat().st_size)) for e in self.it]

        def __exit__(self, *exc):
            self.it.close()

    monkeypatch.setattr(run_mod.os, "scandir", WindowsEntries)
    records = run_mod._status_records(tmp_path)
    assert records["scan-a.json"][0] == os.stat(status / "scan-a.json").st_ino != 0


def test_masks_are_written_with_nibabel_where_simpleitk_cannot_open_the_path(tmp_path, monkeypatch):
    """SimpleITK cannot open non-ASCII paths on Windows (an output folder under C:\\Users\\Jürgen failed every scan):
    the masks are written with nibabel there, with the same geometry and voxels."""
    import SimpleITK as sitk

    from pipeline import imageio

    arr = np.zeros((6, 7, 8), np.uint8)
    arr[1:4, 2:5, 3:7] = 2
    arr[0, 0, 0] = 1
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.8, 2.5))
    img.SetOrigin((-120.0, 30.5, 900.0))
    c, s = np.cos(0.3), np.sin(0.3)
    img.SetDirection((c, -s, 0, 0, 0, -1, s, c, 0))  # oblique, not LPS
    a, b = tmp_path / "sitk.nii.gz", tmp_path / "J\u00fcrgen" / "nib.nii.gz"
    b.parent.mkdir()
    imageio.write_nifti(img, a)
    monkeypatch.setattr(imageio.sys, "platform", "win32")
    assert not imageio.sitk_can_open(b) and imageio.sitk_can_open(a)
    monkeypatch.setattr(imageio.sys, "platform", "linux")  # SimpleITK itself must not be given the path
    monkeypatch.setattr(imageio, "sitk_can_open", lambda p: "\u00fc" not in str(p))
    monkeypatch.setattr(sitk, "WriteImage", lambda *a, **k: pytest.fail("SimpleITK given a non-ASCII path"))
    imageio.write_nifti(img, b)
    ra, rb = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
    assert np.array_equal(sitk.GetArrayFromImage(ra), sitk.GetArrayFromImage(rb))
    assert sitk.GetArrayFromImage(rb).dtype == np.uint8
    assert np.allclose(ra.GetSpacing(), rb.GetSpacing()) and np.allclose(ra.GetOrigin(), rb.GetOrigin(), atol=1e-4)
    assert np.allclose(ra.GetDirection(), rb.GetDirection(), atol=1e-5)


def test_a_lobe_map_simpleitk_cannot_open_is_refused_by_name(tmp_path, monkeypatch):
    from pipeline import imageio
    from scoring.quantify import check_label_map_header

    p = tmp_path / "M\u00fcller" / "1.2.3.nii.gz"
    monkeypatch.setattr(imageio.sys, "platform", "win32")
    with pytest.raises(ValueError, match="lobe map .*M\u00fcller.*SimpleITK cannot open a path with characters "
                                         "outside ASCII on Windows"):
        check_label_map_header(p)


def test_training_images_simpleitk_cannot_open_are_refused_by_name(tmp_path, monkeypatch):
    from pipeline import imageio
    from segmentation.training import _read_label_image, load_image_lps

    p = tmp_path / "F\u00e4lle" / "ct.nii.gz"
    monkeypatch.setattr(imageio.sys, "platform", "win32")
    with pytest.raises(ValueError, match="training image .*F\u00e4lle.*outside ASCII on Windows"):
        load_image_lps(p)
    with pytest.raises(ValueError, match="lungs label file .*outside ASCII"):
        _read_label_image(p, "lungs")


def test_the_windows_lock_calls_kernel32_as_documented(monkeypatch):
    """LockFileEx(hFile, dwFlags, dwReserved, nBytesLow, nBytesHigh, lpOverlapped) and UnlockFileEx(hFile, dwReserved,
    nBytesLow, nBytesHigh, lpOverlapped), checked against a fake kernel32 (the real one exists on Windows only)."""
    import ctypes
    import types

    calls, answer = [], {"ok": 1, "error": 0}

    class Kernel32:
        def __getattr__(self, name):
            def call(*args):
                calls.append((name, args))
                return answer["ok"]
            return call

    monkeypatch.setattr(ctypes, "WinDLL", lambda name, use_last_error=False: Kernel32(), raising=False)
    monkeypatch.setattr(ctypes, "get_last_error", lambda: answer["error"], raising=False)
    monkeypatch.setattr(ctypes, "FormatError", lambda code: f"error {code}", raising=False)
    monkeypatch.setitem(sys.modules, "msvcrt", types.SimpleNamespace(get_osfhandle=lambda fd: 1000 + fd))
    assert batch._lock_windows(7, exclusive=True) is True
    assert batch._lock_windows(7, exclusive=False) is True
    batch._unlock_windows(7)
    (n1, a1), (n2, a2), (n3, a3) = calls
    assert (n1, n2, n3) == ("LockFileEx", "LockFileEx", "UnlockFileEx")
    assert a1[0].value == 1007 and a1[1:5] == (0x1 | 0x2, 0, 1, 0) and a2[1:5] == (0x1, 0, 1, 0)
    assert a3[0].value == 1007 and a3[1:4] == (0, 1, 0) and len(a3) == 5
    overlapped = a1[5]._obj
    assert (overlapped.offset, overlapped.offset_high) == (0, 1)  # one byte at 4 GiB, past the holder's text
    answer.update(ok=0, error=33)  # ERROR_LOCK_VIOLATION: another process holds it
    assert batch._lock_windows(7, exclusive=True) is False
    answer.update(error=1)  # ERROR_INVALID_FUNCTION: a file system without locks
    with pytest.raises(OSError, match="error 1"):
        batch._lock_windows(7, exclusive=True)
