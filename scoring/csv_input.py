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


def _rows(text: str, code: str, what: str, path: Path) -> list[tuple[int, list[str]]]:
    """Each row with the file line it starts on (a quoted cell may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows, start = [], 1
    try:
        for row in reader:
            rows.append((start, row))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise CTScoreError(code, f"{what} is not a readable CSV file (line {start}): {exc}", path) from None
    return rows


def read_csv_table(path: str | Path, code: str, what: str, *,
                   normalise: Callable[[str], str] = str.strip, strip_cells: bool = False,
                   twice_hint: str = "give each column one name") -> pd.DataFrame:
    """The CSV at ``path`` as a DataFrame of text (see the module docstring); problems are ``CTScoreError(code)``
    naming ``what`` (e.g. "clinical table") and the path.

    ``normalise`` maps each header cell to its column name (default: trimmed); two header cells with the same
    name are refused (``twice_hint`` says what to do). Columns with an empty name and no value are dropped (a trailing comma); one with values is
    kept as ``unnamed_<column number>`` and listed in ``attrs["unnamed_columns"]``. Rows with more fields than
    the header are refused unless the extra fields are empty (a trailing comma); shorter rows are padded with
    empty cells. Rows with no value are dropped (blank lines, a spreadsheet's ``,,,,`` rows): their lines are in
    ``attrs["skipped_lines"]``. ``attrs["source"]`` is the path as text."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CTScoreError(code, f"{what} is not UTF-8 text ({_first_bad_byte(raw)}); save it as CSV UTF-8",
                           path) from None
    rows = _rows(text, code, what, path)
    if not rows or not any(c.strip() for c in rows[0][1]):
        raise CTScoreError(code, f"{what} is empty (not even a header row)", path)
    header = rows[0][1]
    if len(header) == 1 and (";" in header[0] or "\t" in header[0]):  # a spreadsheet's export setting
        by = "semicolons" if ";" in header[0] else "tabs"
        raise CTScoreError(code, f"the columns are separated by {by}, not commas (header {header[0][:60]!r}): save "
                           "the table as comma-separated CSV (Excel: CSV UTF-8)", path)
    names = [normalise(h) for h in header]
    seen: dict[str, int] = {}
    for i, n in enumerate(names, 1):
        if n and n in seen:
            raise CTScoreError(code, f"column {n!r} appears twice in the header of the {what} (columns {seen[n]} "
                               f"and {i}: only one would be read); {twice_hint}", path)
        seen.setdefault(n, i)
    width = len(names)
    records, labels, skipped = [], [], []
    for line, cells in rows[1:]:
        if strip_cells:
            cells = [c.strip() for c in cells]
        if not any(c.strip() for c in cells):
            skipped.append(line)
            continue
        if len(cells) > width:
            if any(c.strip() for c in cells[width:]):
                raise CTScoreError(code, f"line {line} of the {what} has {len(cells)} fields, the header {width} "
                                   f"(row {','.join(cells)[:120]!r}): a comma inside a value? write decimals with "
                                   "a point, or quote the cell", path)
            cells = cells[:width]  # a trailing comma
        records.append(cells + [""] * (width - len(cells)))
        labels.append(line - 2)
    unnamed = [i for i, n in enumerate(names) if not n and any(r[i].strip() for r in records)]
    keep = [i for i, n in enumerate(names) if n or i in unnamed]
    columns = [names[i] or f"unnamed_{i + 1}" for i in keep]
    df = pd.DataFrame([[r[i] for i in keep] for r in records], columns=columns, index=labels, dtype=object)
    df = df.astype(str) if len(df) else df.astype(object)
    df.attrs.update(source=str(path), skipped_lines=skipped, unnamed_columns=[f"unnamed_{i + 1}" for i in unnamed])
    return df
