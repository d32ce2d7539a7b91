"""``ctscore`` command line: a thin layer over the Python API (see pipeline/commands/)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading

from pipeline import __version__
from pipeline.commands import COMMANDS
from pipeline.errors import (
    EXIT_INPUT_UNREADABLE,
    EXIT_NOTHING_ELIGIBLE,
    EXIT_USAGE,
    CTScoreError,
    NoEligibleSeries,
)

# Errors about the input itself (exit code 4); other CTScoreErrors are usage/configuration (exit 1).
INPUT_CODES = {"INPUT_NOT_FOUND", "INPUT_UNREADABLE", "PRED_NOT_FOUND", "REFERENCE_NOT_FOUND"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctscore", description="Chest CT lung-injury scores from DICOM.")
    parser.add_argument("--version", action="version", version=f"ctscore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"pipeline.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"pipeline.commands.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    for subparser in sub.choices.values():
        _refuse_repeats(subparser)
    return parser


class _StoreOnce(argparse._StoreAction):
    """A single-valued option given twice is an error: argparse keeps the last value silently, so ``--scores A
    --scores B`` analysed B alone (options that take several values, ``--set`` and ``--config``, are appended)."""

    def __call__(self, parser, namespace, values, option_string=None):
        seen = namespace.__dict__.setdefault("_options_given", {})
        if self.dest in seen:
            takes = "it takes one value" if self.nargs in (None, "?") else f"give all its values after one {option_string}"
            parser.error(f"{option_string} given twice ({seen[self.dest]!r} and {values!r}): {takes}"
                         + (" (to analyse several output folders together, copy their scan-* folders into one folder "
                            "and run 'ctscore aggregate' on it)" if self.dest in ("scores", "pred") else ""))
        seen[self.dest] = values
        super().__call__(parser, namespace, values, option_string)


def _refuse_repeats(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if type(action) is argparse._StoreAction and action.option_strings:
            action.__class__ = _StoreOnce


#: Libraries whose INFO lines are their own working (highdicom: nine lines per DICOM-SEG, each naming the source
#: SOP Instance UID): shown with --verbose, else from WARNING up.
CHATTY_LIBRARIES = ("highdicom",)


class _CurrentStderr(logging.StreamHandler):
    """A console handler that writes to ``sys.stderr`` as it is when a record is emitted, not as it was when the
    command started: a notebook or test harness that swaps stderr (and closes the old one) gets the lines instead of
    a "--- Logging error ---" traceback on every later record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401 - the current stderr
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _tolerant_console() -> None:
    """Text the console's encoding cannot show (a folder named with "≥" or "ü" printed to a Windows console or pipe in
    cp1252) is escaped, not a UnicodeEncodeError that ended a finished run with exit 1."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):  # replaced by a test or a notebook: left as it is
            pass


def setup_logging(verbose: bool = False, quiet: bool = False, log_file: str | None = None) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    handlers: list[logging.Handler] = [_CurrentStderr()]
    if log_file:
        try:
            # utf-8: Windows would write cp1252; a path not valid UTF-8 (a Latin-1 folder name) as \udcNN, not a
            # "Logging error" in place of the line
            handlers.append(logging.FileHandler(log_file, encoding="utf-8", errors="backslashreplace"))
        except OSError as exc:  # a folder that does not exist, no permission: one line, not a traceback
            raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot open the log file ({exc.strerror or exc})",
                               log_file) from None
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers,
                        force=True)


class Stopped(KeyboardInterrupt):
    """SIGTERM (``kill``, ``scancel``, a wall-time limit) turned into an exception, as Ctrl-C is: the scan under way
    then keeps no outcome (it is scored again on resume, not counted as a crash of its own)."""


def _stop_handler(pid: int):
    def stop(signum, frame):
        if os.getpid() != pid:  # a forked child (a data-loader worker) that inherited the handler: die as before
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Stopped(signum)
    return stop


def _error(line: str) -> None:
    """The one line of a failed command: on stderr, and in the --log-file too (which otherwise ends without it)."""
    print(line, file=sys.stderr)
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            h.emit(logging.makeLogRecord({"name": "ctscore", "levelno": logging.ERROR, "levelname": "ERROR",
                                          "msg": line}))
            h.flush()


def main(argv: list[str] | None = None) -> int:
    _tolerant_console()
    from pipeline import install_problem

    problem = install_problem()
    if problem:  # another package's scoring/ or segmentation/ in ctscore's place: said before any import fails
        print(f"ctscore: error: INSTALL_SHADOWED: {problem}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        setup_logging(getattr(args, "verbose", False), getattr(args, "quiet", False), getattr(args, "log_file", None))
    except CTScoreError as exc:
        print(f"ctscore: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    main_thread = threading.current_thread() is threading.main_thread()  # only there can signals be handled
    previous = signal.signal(signal.SIGTERM, _stop_handler(os.getpid())) if main_thread else None
    try:
        return int(args.func(args))
    except NoEligibleSeries as exc:  # ctscore run: nothing under INPUT can be scored (the inventory says why)
        _error(f"ctscore: error: {exc}")
        return EXIT_NOTHING_ELIGIBLE
    except CTScoreError as exc:
        _error(f"ctscore: error: {exc}")
        return EXIT_INPUT_UNREADABLE if exc.code in INPUT_CODES else EXIT_USAGE
    except OSError as exc:  # a file that cannot be read or written outside any scan (e.g. a full disk)
        _error(f"ctscore: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        signum = exc.args[0] if isinstance(exc, Stopped) else signal.SIGINT
        # the run's tables are written when it ends: after a stop they are still the last complete run's (an upgrade
        # audit read 0.1.0 scores from scans.csv beside 0.2.0 results after a stop)
        resume = ("; finished series are kept: run the same command again to resume (scans.csv, zones.csv and "
                  "report.html are still those of the last complete run until it ends; `ctscore aggregate OUT "
                  "--allow-unfinished` writes them for what is finished now)") if args.command == "run" else ""
        print(f"ctscore: stopped ({signal.Signals(signum).name}){resume}", file=sys.stderr)
        return 128 + signum
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
