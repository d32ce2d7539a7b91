"""The warnings a Python twin logged, returned to its caller: a notebook can test them in code (``summary["warnings"]``)
as well as read them on stderr, where the CLI prints them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

#: The packages whose loggers are listened to (``logging.getLogger(__name__)`` in each module).
PACKAGES = ("pipeline", "scoring", "segmentation")


class _Collector(logging.Handler):
    def __init__(self, show: frozenset[str] = frozenset()) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.show = show  # packages whose records no other handler would show: passed to logging.lastResort

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # a record whose arguments do not format: logging itself reports it elsewhere
            self.handleError(record)
        if record.name.split(".", 1)[0] in self.show and logging.lastResort is not None:
            logging.lastResort.handle(record)


@contextmanager
def collect_warnings() -> Iterator[list[str]]:
    """Yield a list that receives the message of every WARNING (or worse) logged by ctscore's packages inside the
    ``with`` block, in order. The records still reach the other handlers (the console) as before; where there are
    none (a notebook kernel, a script that set up no logging), Python would print them itself (its last-resort
    handler), but not once a handler is attached: then the collector prints them as Python would have."""
    collector = _Collector(frozenset(name for name in PACKAGES if not logging.getLogger(name).hasHandlers()))
    loggers = [logging.getLogger(name) for name in PACKAGES]
    for lg in loggers:
        lg.addHandler(collector)
    try:
        yield collector.messages
    finally:
        for lg in loggers:
            lg.removeHandler(collector)
