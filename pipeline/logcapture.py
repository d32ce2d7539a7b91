"""The warnings a Python twin logged, returned to its caller: a notebook can test them in code (``summary["warnings"]``)
as well as read them on stderr, where the CLI prints them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

#: The packages whose loggers are listened to (``logging.getLogger(__name__)`` in each module).
PACKAGES = ("pipeline", "scoring", "segmentation")


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # a record whose arguments do not format: logging itself reports it elsewhere
            self.handleError(record)
        if not _shown_elsewhere(record) and logging.lastResort is not None:
            logging.lastResort.handle(record)


def _shown_elsewhere(record: logging.LogRecord) -> bool:
    """Whether a handler other than a collector handles ``record`` on its way up the logger tree (as logging's own
    ``callHandlers`` walks it): where none does, Python would print it with its last-resort handler."""
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        if any(not isinstance(h, _Collector) and record.levelno >= h.level for h in logger.handlers):
            return True
        logger = logger.parent if logger.propagate else None
    return False


@contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """Yield a list that receives the message of every WARNING (or worse) logged by ctscore's packages inside the
    ``with`` block, in order. The records still reach the other handlers (the console) as before; where there are
    none (a notebook kernel, a script that set up no logging), Python would print them itself (its last-resort
    handler), but not once a handler is attached: then the collector prints them as Python would have."""
    collector = _Collector()
    loggers = [logging.getLogger(name) for name in PACKAGES]
    for lg in loggers:
        lg.addHandler(collector)
    try:
        yield collector.messages
    finally:
        for lg in loggers:
            lg.removeHandler(collector)
