"""The project's error type and its named codes.

Every refusal carries a short upper-case ``code`` (searchable in the docs, written to
``failures.csv`` and ``result.json``), the offending path when there is one, and a sentence a
researcher can act on. Library code raises these; only the CLI turns them into exit codes.
"""

from __future__ import annotations

from pathlib import Path


class CTScoreError(Exception):
    """A problem with the input or configuration that ctscore reports instead of crashing."""

    def __init__(self, code: str, message: str, path: str | Path | None = None):
        self.code = code
        self.path = str(path) if path is not None else None
        self.message = message
        where = f" [{self.path}]" if self.path else ""
        super().__init__(f"{code}: {message}{where}")

    def __reduce__(self):  # pickled across processes (dask workers) whatever the subclass's own arguments
        return _rebuild, (type(self), self.code, self.message, self.path)


def _rebuild(cls: type, code: str, message: str, path: str | None) -> CTScoreError:
    err = cls.__new__(cls)
    CTScoreError.__init__(err, code, message, path)
    return err


class ConfigError(CTScoreError):
    """Invalid configuration (unknown key, bad value)."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__("BAD_CONFIG", message, path)


class ModelError(CTScoreError):
    """A segmentation model that cannot be used: files missing or not matching their manifest, a bad
    label mapping or model description, an unusable device."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__("BAD_MODEL", message, path)


class OutputLocked(CTScoreError):
    """Another ctscore process is writing into the same output folder (or the same shard of it)."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__("OUTPUT_LOCKED", message, path)


class SeriesError(CTScoreError):
    """A series that cannot be scored (the selected series is refused)."""


class NoEligibleSeries(CTScoreError):
    """Nothing under the input could be scored."""

    def __init__(self, message: str, path: str | Path | None = None):
        super().__init__("NO_ELIGIBLE_SERIES", message, path)


# Exit codes shared by `ctscore run` and `ctscore scan` (documented in the README).
EXIT_OK = 0
EXIT_USAGE = 1
EXIT_NOTHING_ELIGIBLE = 2
EXIT_INPUT_UNREADABLE = 4
EXIT_SOME_FAILED = 8
