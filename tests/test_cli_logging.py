"""The run log carries ctscore's own lines; a library's working lines (with UIDs) only with --verbose."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline.cli import CHATTY_LIBRARIES, setup_logging


@pytest.fixture(autouse=True)
def _restore_logging():
    saved = {n: logging.getLogger(n).level for n in ("", *CHATTY_LIBRARIES)}
    yield
    for n, level in saved.items():
        logging.getLogger(n).setLevel(level)


def test_highdicom_info_is_quiet_unless_verbose():
    setup_logging()
    assert logging.getLogger("pipeline.run").isEnabledFor(logging.INFO)
    assert not logging.getLogger("highdicom.base").isEnabledFor(logging.INFO)
    assert logging.getLogger("highdicom.base").isEnabledFor(logging.WARNING)
    setup_logging(verbose=True)
    assert logging.getLogger("highdicom.base").isEnabledFor(logging.DEBUG)
    setup_logging()  # and back again in the same process (notebooks call it more than once)
    assert not logging.getLogger("highdicom.base").isEnabledFor(logging.INFO)


def test_a_dicom_seg_run_logs_no_source_uid(tmp_path, capfd, classical_memo):
    from pipeline.cli import main

    sample = Path(__file__).resolve().parents[1] / "sample_dicoms"
    assert main(["run", str(sample), "-o", str(tmp_path / "out"), "--segmenter", "classical", "--dicom-seg"]) == 0
    assert list((tmp_path / "out").glob("scan-*/seg.dcm"))
    err = capfd.readouterr().err
    assert "scored" in err or "ok in" in err  # ctscore's own INFO lines are there
    assert "highdicom" not in err and "copy Patient-related attributes" not in err


def test_a_log_file_that_cannot_be_opened_is_one_line_and_errors_reach_the_log(tmp_path, capsys):
    """--log-file in a folder that does not exist was a FileNotFoundError traceback; and the error line of a failed
    command went to stderr only, leaving the log file without it."""
    from pipeline.cli import main
    from pipeline.errors import EXIT_USAGE

    bad = tmp_path / "no" / "such" / "run.log"
    assert main(["aggregate", str(tmp_path), "--log-file", str(bad)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "cannot open the log file" in err and str(bad) in err and "Traceback" not in err
    log = tmp_path / "run.log"
    try:
        assert main(["aggregate", str(tmp_path / "missing"), "--log-file", str(log)]) != 0
    finally:
        for h in list(logging.getLogger().handlers):  # close the file handler this test opened
            if isinstance(h, logging.FileHandler):
                logging.getLogger().removeHandler(h)
                h.close()
    assert "output folder does not exist" in log.read_text()


def test_console_log_follows_a_swapped_stderr(monkeypatch):
    """A harness (a notebook, pytest's capsys) that swaps stderr and closes the old one: later records went to the
    closed stream, a "--- Logging error ---" traceback each (one test failed after any test that ran the CLI)."""
    import io
    import logging
    import sys

    from pipeline.cli import setup_logging

    old = io.StringIO()
    monkeypatch.setattr(sys, "stderr", old)
    setup_logging()
    try:
        old.close()
        new = io.StringIO()
        monkeypatch.setattr(sys, "stderr", new)
        logging.getLogger("pipeline.run").warning("after the swap")
        assert "after the swap" in new.getvalue() and "Logging error" not in new.getvalue()
    finally:
        logging.basicConfig(force=True, handlers=[logging.NullHandler()])


def test_a_log_line_naming_a_path_that_is_not_utf8_reaches_the_log_file(tmp_path):
    # a Latin-1 folder name decodes with a surrogate escape; the strict utf-8 log file printed "--- Logging error ---"
    # to stderr instead of the line (a failure-isolation audit); the console's sys.stderr escapes it itself
    log_file = tmp_path / "run.log"
    try:
        setup_logging(log_file=str(log_file))
        logging.getLogger("pipeline.test").warning("cannot read %s", "/data/pat\udce9/IM0001")
    finally:
        for h in logging.getLogger().handlers:
            h.flush()
        setup_logging()
    assert "cannot read /data/pat\\udce9/IM0001" in log_file.read_text(encoding="utf-8")
