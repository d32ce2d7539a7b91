"""Reading the CSV tables researchers give ctscore (clinical.csv, labs.csv, readers' scores, ctscore's own tables
read back), as spreadsheets export them.

One reader for all of them, built on the standard library's ``csv`` module rather than ``pandas.read_csv``,
because pandas resolves the usual export accidents silently: a trailing comma on every data row makes it take the
first column as the index (every value shifts one column), an unquoted decimal comma (``38,5``) does the same on
one row, a column named twice comes back as ``age`` and ``age.1`` (the second copy is never read), and its line
numbers stop being file lines after a quoted cell that spans lines. Here each of these is a clear error naming the
file and the line, or (a trailing comma, blank rows) is harmless by construction.

:func:`read_csv_table` returns every cell as text; the row labels are the file line of each row minus 2 (the
header is line 1), so ``label + 2`` is the line to name in a message, also after multi-line cells.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from pipeline.errors import CTScoreError


def _first_bad_byte(raw: bytes) -> str:
    """Where the first byte that is not UTF-8 sits, e.g. ``byte 0xfc on line 2``."""
    try:
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return f"byte 0x{raw[exc.start]:02x} on line {line}"
    return "undecodable bytes"


def _rows(text: str, code: str, what: str, path: Path, skip_initial_space: bool) -> tuple[list[list[str]], list[int]]:
    """The rows, and the file line each starts on (a quoted cell may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, skipinitialspace=skip_initial_space)
    rows: list[list[str]] = []
    starts: list[int] = []
    start = 1
    try:
        for row in reader:
            rows.append(row)
            starts.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise CTScoreError(code, f"{what} is not a readable CSV file (line {start}): {exc}", path) from None
    return rows, starts


def _refuse_separator(header: str, code: str, path: Path) -> None:
    by = "semicolons" if ";" in header else "tabs"
    raise CTScoreError(code, f"the columns are separated by {by}, not commas (header {header[:60]!r}): save "
                       "the table as comma-separated CSV (Excel: CSV UTF-8)", path)


def read_csv_table(path: str | Path, code: str, what: str, *,
                   normalise: Callable[[str], str] = str.strip, strip_cells: bool = False,
                   twice_hint: str = "give each column one name", skip_initial_space: bool = False) -> pd.DataFrame:
    """The CSV at ``path`` as a DataFrame of text (see the module docstring); problems are ``CTScoreError(code)``
    naming ``what`` (e.g. "clinical table") and the path.

    ``normalise`` maps each header cell to its column name (default: trimmed); two header cells with the same
    name are refused (``twice_hint`` says what to do). Columns with an empty name and no value are dropped (a
    trailing comma); one with values is kept as ``unnamed_<column number>`` and listed in ``attrs["unnamed_columns"]``. Rows with more fields than
    the header are refused unless the extra fields are empty (a trailing comma); shorter rows are padded with
    empty cells. Rows with no value are dropped (blank lines, a spreadsheet's ``,,,,`` rows): their lines are in
    ``attrs["skipped_lines"]``; blank lines above the header are skipped too. ``skip_initial_space``: spaces after a
    comma are not part of the cell (so that ``, "Smith, J"`` is one quoted cell). ``attrs["source"]`` is the path
    as text."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CTScoreError(code, f"{what} is not UTF-8 text ({_first_bad_byte(raw)}); save it as CSV UTF-8",
                           path) from None
    head = next((line for line in text.splitlines() if line.strip()), "")
    if "," not in head and (";" in head or "\t" in head):  # before parsing: a quoted ";" header stops the parser
        _refuse_separator(head, code, path)
    rows, starts = _rows(text, code, what, path, skip_initial_space)
    first = next((k for k, r in enumerate(rows) if any(c.strip() for c in r)), None)  # blank lines above the header
    if first is None:
        raise CTScoreError(code, f"{what} is empty (not even a header row)", path)
    header = rows[first]
    if len(header) == 1 and (";" in header[0] or "\t" in header[0]):  # a spreadsheet's export setting
        _refuse_separator(header[0], code, path)
    names = [normalise(h) for h in header]
    seen: dict[str, int] = {}
    for i, n in enumerate(names, 1):
        if n and n in seen:
            raise CTScoreError(code, f"column {n!r} appears twice in the header of the {what} (columns {seen[n]} "
                               f"and {i}: only one would be read); {twice_hint}", path)
        seen.setdefault(n, i)
    width = len(names)
    records, labels, skipped = [], [], []
    body = rows[first + 1:]
    if not strip_cells and all(len(r) == width for r in body) and all("".join(r).strip() for r in body):
        records, labels = body, [start - 2 for start in starts[first + 1:]]  # the usual table: nothing to mend
        body = []
    for k in range(len(rows) - len(body), len(rows)):
        cells = rows[k]
        if strip_cells:
            cells = [c.strip() for c in cells]
        n = len(cells)
        filled = "".join(cells).strip() != ""
        if n == width and filled:  # the usual row
            records.append(cells)
            labels.append(starts[k] - 2)
            continue
        if not filled:
            skipped.append(starts[k])
            continue
        if n > width:
            if any(c.strip() for c in cells[width:]):
                raise CTScoreError(code, f"line {starts[k]} of the {what} has {n} fields, the header {width} "
                                   f"(fields {cells[:12]!r}): a comma inside a value? write decimals with a point, "
                                   "or quote the cell", path)
            cells = cells[:width]  # a trailing comma
        records.append(cells + [""] * (width - len(cells)))
        labels.append(starts[k] - 2)
    del rows, body
    df = pd.DataFrame(records, columns=range(width), index=pd.Index(labels, dtype="int64"), dtype=object)
    del records
    unnamed = [i for i, n in enumerate(names) if not n and (df[i].str.strip() != "").any()]
    keep = [i for i, n in enumerate(names) if n or i in unnamed]
    df = df[keep]
    df.columns = [names[i] or f"unnamed_{i + 1}" for i in keep]
    df.attrs.update(source=str(path), skipped_lines=skipped, unnamed_columns=[f"unnamed_{i + 1}" for i in unnamed])
    return df
