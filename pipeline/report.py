"""The static HTML run report, ``OUT/report.html``: one page for the whole run.

One row per series (QC thumbnail, scores, flags, status), the meanings of the flags the series carry, the failures
by code with what the code means (not their messages, which name input files: failures.csv has them), the image
stacks found but not scored (from inventory.csv), and the run's provenance (version, config sha256, segmenter and
model id, the number of input folders, timings). The page opens
offline: CSS and the few lines of JavaScript that sort the table are inline, and pictures are
referenced by relative path (``<scan_id>/thumb.png``), so the output folder can be moved or zipped.

The report is built only from the run's own files (``scans.csv``, ``failures.csv``, ``inventory.csv``, ``run.json``
and each ``<scan_id>/result.json``), so it can be rebuilt at any time, e.g. after ``ctscore aggregate``.
It never shows patient-identifying header values: series are named by ``scan_id`` and the patient by
the pseudonymous ``patient_id`` only (a patient id that is not a pseudonym is hidden). Links are only
written to files that exist. The markup is XHTML-compatible, so XML parsers read it too.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape as _html_escape
from pathlib import Path
from typing import Any
from urllib.parse import quote as _url_quote

from pipeline.outputs import atomic_write_bytes
from pipeline.qc import HATCHED_CLASS, LESION_CLASSES, LUNG_COLOUR, PLANE_COLOUR

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
#: Shown for a missing score (e.g. zones without landmarks); such cells sort last.
MISSING = "\u2014"
#: Only patient ids of this form (made by :func:`pipeline.outputs.pseudonym`) are shown.
PSEUDONYM_RE = re.compile(r"^pt-[0-9a-f]{6,64}$")
#: Run files linked from the page head, when present.
RUN_FILES = ("scans.csv", "zones.csv", "landmarks.csv", "failures.csv", "inventory.csv", "run.json")
#: Per-series files linked from a row, when present.
SERIES_FILES = ("result.json", "qc.png", "levels.png", "seg.dcm", "lungs.nii.gz", "lesions.nii.gz")


#: Characters XML 1.0 does not allow (C0 controls but tab, newline, carriage return; unpaired surrogates;
#: U+FFFE/U+FFFF): one in a message or path would make the page unreadable to XML parsers.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def escape(text: str, quote: bool = True) -> str:
    """HTML-escaped ``text`` with the characters XML does not allow replaced by U+FFFD."""
    return _html_escape(_XML_ILLEGAL.sub("\ufffd", str(text)), quote=quote)


def _number(value: Any) -> float | None:
    """A finite float, or None for blanks, NaN and text."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _fmt(decimals: int) -> Callable[[Any], str]:
    """The value rounded half up from its written decimals, as a reader rounds the CSV's (10.795 -> 10.80 as 0.005
    -> 0.01; binary floating point made the first 10.79)."""
    from decimal import ROUND_HALF_UP, Decimal

    step = Decimal(1).scaleb(-decimals)

    def fmt(value: Any) -> str:
        x = _number(value)
        return MISSING if x is None else f"{Decimal(repr(x)).quantize(step, rounding=ROUND_HALF_UP):,.{decimals}f}"

    return fmt


#: The MosMed band edges of % opacity (CT-1 under 25 %, CT-2 25-50 %, ...).
MOSMED_EDGES = (25.0, 50.0, 75.0)


def _fmt_percent_opacity(value: Any) -> str:
    """% opacity to 2 decimals, but never rounded up onto a MosMed band edge: 24.996 % (CT-1) is written 24.996, not
    25.00 next to CT-1 (more decimals, down to 6, until the text stays below the edge)."""
    text = _fmt(2)(value)
    x = _number(value)
    if x is None:
        return text
    for decimals in range(3, 7):
        if not any(x < edge <= float(text.replace(",", "")) for edge in MOSMED_EDGES):
            break
        text = f"{math.floor(x * 10 ** decimals) / 10 ** decimals:,.{decimals}f}"
    return text


@dataclass(frozen=True)
class Column:
    """A score column of the series table: the scans.csv key, its header, a tooltip and a formatter."""

    key: str
    header: str
    tip: str
    fmt: Callable[[Any], str] | None = None


SCORE_COLUMNS: tuple[Column, ...] = (
    Column("six_zone_total", "six-zone (0-24)", "six-zone score, 0-24", _fmt(0)),
    Column("zhang900_total", "zhang900 (0-900)", "zhang900 score (extent x density squared), 0-900", _fmt(0)),
    Column("percent_opacity", "% opacity", "lesion volume / lung volume, %", _fmt_percent_opacity),
    Column("percent_high_opacity", "% high opacity", "lesion above hu_classes.high_opacity_min_hu (default -200 HU; this run's value in run.json) / lung volume, %", _fmt(2)),
    Column("percent_well_aerated", "% well aerated", "lung voxels in hu_classes.well_aerated (default -950 to -700 HU; this run's value in run.json) / lung volume, %", _fmt(1)),
    Column("mosmed_category", "MosMed", "MosMed CT-0 to CT-4 (see Key)"),
    Column("lung_volume_ml_right", "lung R mL", "right lung volume, mL", _fmt(0)),
    Column("lung_volume_ml_left", "lung L mL", "left lung volume, mL", _fmt(0)),
    Column("lesion_volume_ml", "lesion mL", "lesion volume (all classes), mL", _fmt(1)),
)

CSS = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em 2em; color: #1b1b1b; }
h1 { font-size: 1.5em; margin: 0 0 .2em; } h2 { font-size: 1.2em; margin: 1.4em 0 .4em; }
.summary { color: #444; margin-bottom: .6em; } .summary a { margin-right: .8em; }
.mixed { background: #fff3cd; border-left: 4px solid #d39e00; padding: .4em .8em; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 8px; vertical-align: middle; text-align: left; }
th { background: #f3f3f3; position: sticky; top: 0; }
th button.sort { all: unset; cursor: pointer; } th button.sort:focus-visible { outline: 2px solid #0b57d0; }
table.js-sort th[data-col] button.sort::after { content: " \\2195"; color: #595959; }
table.js-sort th[aria-sort="ascending"] button.sort::after { content: " \\2191"; color: #000; }
table.js-sort th[aria-sort="descending"] button.sort::after { content: " \\2193"; color: #000; }
td.id { white-space: nowrap; font-family: ui-monospace, monospace; font-size: 12px; }
td.flags { max-width: 260px; } td.files { max-width: 140px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.thumb img { display: block; width: 320px; height: auto; background: #000; }
td.thumb .none { display: inline-block; width: 320px; color: #595959; }
.status-ok { color: #1a7f37; font-weight: 600; } .status-failed { color: #c62828; font-weight: 600; }
.flag { display: inline-block; background: #fff3cd; border: 1px solid #e6c200; border-radius: 3px;
        padding: 0 4px; margin: 1px; font-size: 12px; }
.files a { font-size: 12px; margin-right: .4em; }
.swatch { display: inline-block; width: 12px; height: 12px; vertical-align: -1px; margin: 0 3px 0 8px;
          border: 1px solid #1b1b1b; print-color-adjust: exact; -webkit-print-color-adjust: exact; }
.flag .unit { color: #444; }
dl.key { grid-template-columns: max-content minmax(0, 60em); }
@media print {
  body { margin: 0; font-size: 10px; } th { position: static; }
  td.thumb img, td.thumb .none { width: 160px; } td.flags, td.files { max-width: none; }
  table { page-break-inside: auto; } tr { page-break-inside: avoid; }
  table.js-sort th button.sort::after { content: ""; }
}
code { font-size: 12px; } dl { display: grid; grid-template-columns: max-content auto; gap: 2px 1em; }
dt { font-weight: 600; } dd { margin: 0; }
"""

# No "<" or "&" in the script, and CDATA around it, so that the page also parses as XML.
SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (t) { t.classList.add("js-sort"); });
document.querySelectorAll("table.sortable th[data-col]").forEach(function (th) {
  var button = th.querySelector("button.sort") || th;
  button.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], col = Number(th.dataset.col);
    var asc = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th[data-col]").forEach(function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    function key(tr) { var td = tr.cells[col]; return td.hasAttribute("data-sort") ? td.getAttribute("data-sort") : td.textContent.trim(); }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === "" || y === "") { return (x === "") - (y === ""); }
      var nx = Number(x), ny = Number(y);
      var c = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return asc ? c : -c;
    });
    rows.forEach(function (tr) { body.appendChild(tr); });
  });
});
"""


def _read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV as dicts of strings; [] when the file is missing or unreadable."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        log.warning("report: cannot read %s: %s", path, exc)
        return []


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object; {} when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        if path.exists():
            log.warning("report: cannot read %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _series_dir(out_dir: Path, scan_id: str) -> Path | None:
    """The folder of a series: ``OUT/<scan_id>``, or two levels up for a shard's tables
    (``OUT/shards/K-of-N/``). None when not found or when ``scan_id`` is not a plain name."""
    if not scan_id or scan_id in (".", "..") or "/" in scan_id or "\\" in scan_id:
        return None
    roots = [out_dir]
    if out_dir.parent.name == "shards":  # pipeline.batch.SHARDS_DIR; any other run's folders are not this run's
        roots.append(out_dir.parent.parent)
    for root in roots:
        if (root / scan_id).is_dir():
            return root / scan_id
    return None


def _href(out_dir: Path, target: Path) -> str:
    """A relative, URL-style link from the report folder to ``target``, each path segment percent-encoded: a
    folder named with '#', '?', '%', a space or non-ASCII letters (a scan_id not made by the pipeline, e.g. in a
    hand-made scans.csv) would otherwise end the path early (a fragment, a query) or point to another name."""
    rel = Path(os.path.relpath(target, out_dir)).as_posix()
    return "/".join(_url_quote(part, safe="") for part in rel.split("/"))


def _patient(value: str) -> str:
    """The patient id if it is a pseudonym; otherwise a placeholder (identifiers are never shown)."""
    if not value:
        return ""
    return value if PSEUDONYM_RE.match(value) else "(hidden)"


def _flags(value: Any) -> list[str]:
    """QC flags from a list or a ';'-joined string, with the LANDMARK_ESTIMATED ones merged into one."""
    items = value if isinstance(value, list) else str(value or "").split(";")
    items = [str(f).strip() for f in items if str(f).strip() and str(f).strip().lower() != "nan"]
    estimated = [f.split(":", 1)[1] for f in items if f.startswith("LANDMARK_ESTIMATED:")]
    out = [f for f in items if not f.startswith("LANDMARK_ESTIMATED:")]
    if estimated:
        out.append("landmarks estimated: " + ", ".join(estimated))
    return out


def _flag_span(flag: str, fallback: str = "", tip: str | None = None) -> str:
    """One flag as a badge, its meaning on hover (pipeline.flags.explain; ``fallback`` where that has none; ``tip``
    in its place when given, e.g. a failure code's :func:`_failure_reason`)."""
    from pipeline.flags import explain, unit_of

    if tip is None:
        tip = explain("LANDMARK_ESTIMATED" if flag.startswith("landmarks estimated") else flag) or fallback
    title = f' title="{escape(tip)}"' if tip else ""
    unit = unit_of(flag)
    unit = f'<span class="unit"> {escape(unit)}</span>' if unit else ""
    return f'<span class="flag"{title}>{escape(flag)}{unit}</span>'


def _td(text: str, cls: str = "", sort: str | None = None, raw: bool = False) -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' data-sort="{escape(sort)}"' if sort is not None else "")
    return f"<td{attrs}>{text if raw else escape(text)}</td>"


def _series_row(out_dir: Path, row: Mapping[str, str], failure: Mapping[str, str] | None) -> str:
    scan_id = row.get("scan_id", "")
    folder = _series_dir(out_dir, scan_id)
    failed = (row.get("status") not in ("", None, "ok")) or failure is not None
    # a failed rerun keeps the scan's earlier folder (never destroyed by a failure): its scores and pictures are
    # not this run's, so they are not shown as if they were; the folder stays linked as the previous result
    previous = folder if failed and folder else None
    if previous is not None:
        folder = None
    result = _read_json(folder / "result.json") if folder else {}
    scores = {**(result.get("scores") or {}), **{k: v for k, v in row.items() if v not in ("", None)}}
    status = scores.get("status") or ("ok" if result else "failed")

    cells = []
    thumb = next((folder / n for n in ("thumb.png", "qc.png") if folder and (folder / n).is_file()), None)
    if thumb is not None:
        img = (f'<img src="{escape(_href(out_dir, thumb))}" alt="QC montage of {escape(scan_id)}" '
               f'loading="lazy" width="320"/>')
        qc = folder / "qc.png"
        if qc.is_file():
            img = f'<a href="{escape(_href(out_dir, qc))}">{img}</a>'
        cells.append(_td(img, "thumb", raw=True))
    else:
        cells.append(_td('<span class="none">no picture</span>', "thumb", raw=True))
    cells.append(_td(scan_id, "id"))
    cells.append(_td(_patient(str(scores.get("patient_id", ""))), "id"))
    cells.append(_td(status, f"status-{'ok' if status == 'ok' else 'failed'}"))
    for col in SCORE_COLUMNS:
        value = scores.get(col.key, "")
        if col.fmt is None:
            text = "" if str(value).lower() in ("", "nan", "none") else str(value)
            cells.append(_td(text or MISSING, sort=text))
        else:
            x = _number(value)
            cells.append(_td(col.fmt(value), "num", sort="" if x is None else repr(x)))
    flags = _flags(result.get("qc_flags", scores.get("qc_flags", "")))
    spans = [_flag_span(f) for f in flags]
    if failure:
        code = _failure_code(failure)
        flags.insert(0, code)
        spans.insert(0, _flag_span(code, tip=f"failed: {_failure_reason(failure)}"))
    cells.append(_td("".join(spans), "flags", sort=str(len(flags)), raw=True))
    links = [f'<a href="{escape(_href(out_dir, folder / n))}">{escape(n)}</a>'
             for n in SERIES_FILES if folder and (folder / n).is_file()]
    if previous is not None and (previous / "result.json").is_file():
        links.append(f'<a href="{escape(_href(out_dir, previous / "result.json"))}">previous result (an earlier '
                     f'run; this run failed)</a>')
    cells.append(_td(" ".join(links), "files", raw=True))
    return "<tr>" + "".join(cells) + "</tr>"


#: Most series (and failures) report.html lists: a cohort of 50 000 made a 38 MB page; scans.csv has every row.
REPORT_MAX_ROWS = 1000


def _rows_shown(rows: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    """The rows the series table lists, in their order (at most :data:`REPORT_MAX_ROWS`: the failed ones first, then
    those with QC flags, then the others), and the sentence saying what was left out ('' when nothing)."""
    if len(rows) <= REPORT_MAX_ROWS:
        return rows, ""
    rank = [(0 if r.get("status") != "ok" else 1 if (r.get("qc_flags") or "").strip() else 2, i)
            for i, r in enumerate(rows)]
    keep = sorted(i for _, i in sorted(rank)[:REPORT_MAX_ROWS])
    return [rows[i] for i in keep], (
        f'<p class="summary"><b>This page lists {REPORT_MAX_ROWS} of the {len(rows)} series</b>, in the order of '
        "scans.csv (which lists every series): all failed ones first chosen, then those with QC flags, then the "
        "others.</p>\n")


def _more(n: int, table: str) -> str:
    return f'\n<p class="summary">... and {n - REPORT_MAX_ROWS} more: {table} lists them all.</p>' \
        if n > REPORT_MAX_ROWS else ""


def _series_table(out_dir: Path, rows: Sequence[Mapping[str, str]],
                  failures: Mapping[str, Mapping[str, str]]) -> str:
    headers = [("QC montage", "QC montage (click for full size)", False), ("scan_id", "", True),
               ("patient", "pseudonymous patient id (hidden when the tables hold a PatientID)", True), ("status", "", True)]
    headers += [(c.header, c.tip, True) for c in SCORE_COLUMNS]
    headers += [("flags", "QC flags and failure code", True), ("files", "", False)]
    ths = ""
    for i, (name, tip, sortable) in enumerate(headers):
        attrs = ' scope="col"' + (f' data-col="{i}"' if sortable else "") + (f' title="{escape(tip)}"' if tip else "")
        # a button: sorting works from the keyboard (Tab, Enter) too; without JavaScript it is plain text
        label = f'<button type="button" class="sort">{escape(name)}</button>' if sortable else escape(name)
        ths += f"<th{attrs}>{label}</th>"
    body = "\n".join(_series_row(out_dir, r, failures.get(r.get("scan_id", ""))) for r in rows)
    return (f'<table class="sortable" id="series">\n<thead><tr>{ths}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody>\n</table>")


#: What the failure codes of the run and the scoring mean (the loader's: :mod:`pipeline.dicom_codes`). report.html
#: shows a failure by its code and this fixed text, never by its message: messages name input files and folders
#: (often after the patient) in forms no pattern catches all of (files without an extension, quoted exception texts).
FAILURE_REASONS: dict[str, str] = {
    "NO_LUNG_FOUND": "no lung found in the series (not a chest CT, or a field of view that misses the lungs)",
    "TIMEOUT": "the series ran longer than --timeout",
    "WORKER_DIED": "the series killed the worker process scoring it (a crash, out of memory), each time it was tried",
    "INTERNAL_ERROR": "an unexpected error in ctscore (the scan's record in OUT/.status/ has the traceback)",
    "MASKS_INVALID": "a mask given with --masks cannot be read, is not on this series' grid or holds other labels",
    "LOBES_UNREADABLE": "the series' lobe map (scoring.lobar.lobes_dir) cannot be read",
    "LOBES_EMPTY": "the series' lobe map holds no lobe label of its convention on this CT (a lung mask, the wrong "
                   "label convention, or a map of another series)",
    "READER_LEVELS_INVALID": "a reader's level (--landmarks) is not valid for this series (outside it, or malformed)",
    "LANDMARKS_OUT_OF_ORDER": "a reader's levels (--landmarks) and ctscore's do not follow each other in anatomical "
                              "order",
    "BAD_MODEL": "the segmentation model cannot be used (files missing or not matching their manifest, an unusable "
                 "device)",
}
#: Said after a failure's reason on the page when failures.csv has its message (a shared copy of the table has not).
DETAILS_IN_CSV = "details in failures.csv"


def _failure_code(failure: Mapping[str, str]) -> str:
    """A failure's code as the page shows it: 'FAILED' when empty, 'other' when it is not an upper-case code (the
    column then holds something else, which may be anything)."""
    code = (failure.get("code", "") or "").strip()
    return "FAILED" if not code else code if _CODE_RE.match(code) else "other"


def _failure_reason(failure: Mapping[str, str]) -> str:
    """The fixed meaning of a failure's code (:data:`FAILURE_REASONS`, or the loader's :mod:`pipeline.dicom_codes`)
    and, when failures.csv has its message, :data:`DETAILS_IN_CSV`; never the message itself."""
    from pipeline.flags import explain

    code = _failure_code(failure)
    meaning = FAILURE_REASONS.get(code) or explain(code)
    details = DETAILS_IN_CSV if (failure.get("message") or "").strip() else ""
    return "; ".join(t for t in (meaning, details) if t) or "see failures.csv"


#: Written in place of the failed series' input path inside a failure message.
PATH_HIDDEN = "[input path, see failures.csv]"


FILE_HIDDEN = "[file, see failures.csv]"
#: File names a loader message may name ("a gap between DOE_JOHN_IMG0069.dcm and ..."): a token ending in a DICOM
#: file extension; exports from viewers and PACS often put the patient's name in them.
_FILE_NAME = re.compile(r"[^\s'\"(),;:\[\]/\\]+\.(?:dcm|dicom|ima|img)\b", re.IGNORECASE)


def _hide_path(message: str, path: str) -> str:
    """``message`` with the failure's input path (and anything under it) replaced by :data:`PATH_HIDDEN`, and the
    DICOM file names it names (``*.dcm``, ``*.ima``, ...) by :data:`FILE_HIDDEN`: DICOM folders and files are often
    named after the patient, and error texts (``FileNotFoundError: ... '/data/DOE^JOHN/IM1'``, "a gap between
    DOE_JOHN_0069.dcm and ...") repeat them. A best effort (a file without an extension keeps its name): report.html
    shows no message at all (:func:`_failure_reason`)."""
    path = (path or "").strip().rstrip("/\\")
    if len(path) >= 2:
        message = message.replace(path, PATH_HIDDEN)
    return _FILE_NAME.sub(FILE_HIDDEN, message)


def _failures_section(failures: Sequence[Mapping[str, str]]) -> str:
    if not failures:
        return "<p>No failures.</p>"
    rows = "\n".join("<tr>" + _td(f.get("scan_id", "")) + _td(_failure_code(f)) + _td(_failure_reason(f)) + "</tr>"
                     for f in failures)
    return ('<table class="sortable" id="failures">\n<thead><tr><th data-col="0">scan_id</th>'
            '<th data-col="1">code</th><th data-col="2">reason</th></tr></thead>\n'
            f"<tbody>\n{rows}\n</tbody>\n</table>")


#: A stack's reason code as inventory.csv writes it (an upper-case code); anything else is not shown on the page.
_CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
#: The inventory.csv columns the Not scored section reads (the others, paths and descriptions, are never kept).
_NOT_SCORED_COLUMNS = ("stack_id", "series_uid", "study_key", "series_number", "modality", "n_slices",
                       "slice_thickness_mm", "decision", "reason")


def _stack_code(reason: str) -> str:
    """The code a skipped stack's reason starts with ('NOT_SELECTED: rank 2; ...' -> NOT_SELECTED); 'other' for text
    that is not a code (never shown: it may hold anything)."""
    token = (reason or "").strip().split(" ", 1)[0].split(";", 1)[0].rstrip(":")
    return token if _CODE_RE.match(token) else ("no reason" if not token else "other")


def _read_stacks(path: Path) -> tuple[dict[str, dict[str, str]], Any, str]:
    """From inventory.csv, read row by row (a cohort's has millions of files): each stack's first row (only the columns
    the page shows), the counts of files not read into a stack by code, and '' or why the file cannot be used."""
    from collections import Counter

    stacks: dict[str, dict[str, str]] = {}
    files: Counter[str] = Counter()
    try:
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                return stacks, files, "inventory.csv is empty"
            missing = [c for c in ("stack_id", "decision") if c not in reader.fieldnames]
            if missing:
                return stacks, files, f"inventory.csv has no {' or '.join(missing)} column"
            for r in reader:
                sid = (r.get("stack_id") or "").strip()
                if sid:
                    if sid not in stacks:
                        stacks[sid] = {c: (r.get(c) or "").strip() for c in _NOT_SCORED_COLUMNS}
                elif (r.get("file_status") or "").strip() != "ok":
                    files[(r.get("file_code") or "").strip() or "no code"] += 1
    except (OSError, csv.Error) as exc:
        return {}, Counter(), f"inventory.csv cannot be read ({type(exc).__name__})"
    return stacks, files, ""


def _not_scored(out_dir: Path, rows: Sequence[Mapping[str, str]]) -> tuple[str, int]:
    """The section listing the image stacks of inventory.csv that were not scored (localizers, reformats, too few
    slices, a body part excluded, another stack of the study preferred, ...) and the files not read, and how many
    stacks. Stacks are named by the pseudonymous study key and the series number, never by description, UID or path
    (all can identify); inventory.csv has the rest. A study counts as scored when a series of it is ok in ``rows``
    (scans.csv): its selected stack may have failed."""
    from collections import Counter

    from pipeline.dicom_codes import describe

    path = out_dir / "inventory.csv"
    if not path.is_file():
        return ("<p>inventory.csv is not in this folder (a merged or shared folder): the image stacks found but not "
                "scored are not listed.</p>"), 0
    stacks, files, problem = _read_stacks(path)
    if problem:
        return f"<p>{escape(problem)}: the image stacks found but not scored are not listed.</p>", 0
    ok_series = {(r.get("series_uid") or "").strip() for r in rows if r.get("status") == "ok"}
    scored_studies = {r["study_key"] for r in stacks.values()
                      if r["decision"] == "selected" and r["series_uid"] in ok_series}
    skipped = [r for r in stacks.values() if r["decision"] != "selected"]
    lines = []
    if skipped:
        codes = Counter(_stack_code(r["reason"]) for r in skipped)
        orphans = {r["study_key"] for r in skipped} - scored_studies
        lines.append(f'<p class="summary">{len(skipped)} image stack(s) found but not scored ('
                     + escape(", ".join(f"{c} {n}" for c, n in codes.most_common())) + ")"
                     + (f"; <b>{len(orphans)} stud{'y has' if len(orphans) == 1 else 'ies have'} no series scored "
                        "(none selected, or the one selected failed)</b>" if orphans else "")
                     + ". Find a stack in inventory.csv by its study key and series number.</p>")
        body = "\n".join(
            "<tr>" + _td(r["study_key"]) + _td(r["series_number"], "num") + _td(r["modality"])
            + _td(r["n_slices"], "num") + _td(r["slice_thickness_mm"], "num")
            + _td(code := _stack_code(r["reason"])) + _td(describe(code) if code not in ("other", "no reason") else "")
            + _td("no" if r["study_key"] in orphans else "yes") + "</tr>"
            for r in skipped[:REPORT_MAX_ROWS])
        lines.append('<table class="sortable" id="not-scored">\n<thead><tr><th data-col="0">study key</th>'
                     '<th data-col="1">series number</th><th data-col="2">modality</th><th data-col="3">slices</th>'
                     '<th data-col="4">slice thickness mm</th><th data-col="5">code</th><th>meaning</th>'
                     '<th data-col="7">study has a series scored</th></tr></thead>\n'
                     f"<tbody>\n{body}\n</tbody>\n</table>{_more(len(skipped), 'inventory.csv')}")
    elif stacks:
        lines.append("<p>Every image stack found was selected (a selected one that failed is under Failures).</p>")
    else:
        lines.append("<p>inventory.csv lists no image stack.</p>")
    if files:
        lines.append('<p class="summary">Files not read as part of a stack: '
                     + escape(", ".join(f"{c} {n}" for c, n in files.most_common())) + " (inventory.csv).</p>")
    return "\n".join(lines), len(skipped)


def _flags_section(rows: Sequence[Mapping[str, str]]) -> str:
    """The meaning of every QC flag the run's series carry, with how many series carry it: the badges' tooltips do
    not work on touch screens or in print."""
    from collections import Counter

    from pipeline.flags import explain

    counts: Counter[str] = Counter()
    for r in rows:
        counts.update({f.split(":", 1)[0] for f in _flags(r.get("qc_flags", "")) if not f.startswith("landmarks ")})
        if any(f.startswith("LANDMARK_ESTIMATED") for f in str(r.get("qc_flags", "")).split(";")):
            counts["LANDMARK_ESTIMATED"] += 1
    if not counts:
        return "<p>No series carries a QC flag.</p>"
    items = "".join(f"<dt>{escape(flag)} ({n} series)</dt><dd>{escape(explain(flag) or 'see the README')}</dd>"
                    for flag, n in sorted(counts.items()))
    return f'<dl class="key">{items}</dl>'


def _timings_table(timings: Mapping[str, Any]) -> str:
    """Per stage: total and median seconds over the series."""
    per_stage: dict[str, list[float]] = {}
    for stages in timings.values():
        for stage, s in (stages or {}).items():
            x = _number(s)
            if x is not None:
                per_stage.setdefault(stage, []).append(x)
    if not per_stage:
        return ""
    rows = "".join(f"<tr>{_td(stage.removesuffix('_s'))}{_td(f'{sum(v):.1f}', 'num')}"
                   f"{_td(f'{statistics.median(v):.1f}', 'num')}{_td(str(len(v)), 'num')}</tr>"
                   for stage, v in per_stage.items())
    return ("<table><thead><tr><th>stage</th><th>total s</th><th>median s per series</th><th>series</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _secs(value: Any) -> str:
    """Seconds as the report shows them: 0.01 s is not "0.0 s"."""
    x = _number(value) or 0.0
    return f"{x:.1f} s" if x >= 1 or x == 0 else f"{x:.2g} s"


def _times(run: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The scoring time of the series in the tables (summed over them, each when it was scored: the same after a
    resume or ``ctscore aggregate``) and the wall time of the call(s) that wrote run.json, each saying what it is."""
    items = []
    if "scoring_seconds" in run:
        items.append(("scoring time", f"{_secs(run.get('scoring_seconds'))}, summed over the "
                                      f"{run.get('n_series', '')} series (each when it was scored)"))
    if run.get("aggregated_from"):
        label = "wall time of the shard runs merged (summed)"
    elif "aggregated_from" in run:
        label = "wall time of the run before ctscore aggregate"
    else:
        label = "wall time of this run (a resume counts only its own call)"
    items.append((label, _secs(run.get("seconds"))))
    return items


def _inputs(value: Any) -> str:
    """How many input folders the run read, not their paths: scripts run once per patient (``ctscore run
    /data/DOE^JOHN``) put names in them; run.json keeps the paths."""
    if value in (None, "", []):
        return "(not recorded)"
    if isinstance(value, str) and value.startswith("<redacted"):  # a shared folder's run.json (ctscore share)
        return value
    n = len(value) if isinstance(value, list) else 1
    return f"{n} folder{'s' if n != 1 else ''} (paths in run.json; kept off this page, as folder names often hold " \
           "patient names)"


def _provenance(run: Mapping[str, Any]) -> str:
    if not run:
        return "<p>run.json is missing: no provenance.</p>"
    seg = run.get("segmenter") or {}
    versions = run.get("versions") or {}
    made_by = run.get("ctscore_versions") or {}
    version = str(run.get("ctscore_version", ""))
    if isinstance(made_by, dict) and (len(made_by) > 1 or (made_by and version not in made_by)):
        version += " (wrote these tables); the results were made by " + ", ".join(
            f"{v}: {n} scan(s)" for v, n in made_by.items())
    configs = run.get("config_sha256_all")
    source = f" ({run['source']})" if run.get("source") else ""
    scored_by = run.get("sources")
    if isinstance(scored_by, dict) and scored_by and set(scored_by) != {str(run.get("source") or "")}:
        # a resume or an aggregate: the code revisions that scored the scans are not (only) this checkout
        source += " wrote these tables; the scans were scored by " + ", ".join(
            f"{k or 'no recorded revision'}: {n} scan(s)" for k, n in sorted(scored_by.items()))
    items = [
        ("ctscore version", version + source),
        ("config sha256", "; ".join(map(str, configs)) + " (several)" if isinstance(configs, list) and len(configs) > 1
         else str(run.get("config_sha256", "") or "(not known)")),
        ("segmenter", str(seg.get("name", ""))),
        ("model id", str(seg.get("model_id", ""))),
        ("input", _inputs(run.get("input"))),
        ("series", f"{run.get('n_series', '')} ({run.get('n_ok', '')} ok, {run.get('n_failed', '')} failed)"),
        *_times(run),
        ("finished", str(run.get("finished_at", "") or "(not known)")),
        ("python", f"{run.get('python', '')} on {run.get('platform', '')}"),
        ("packages", ", ".join(f"{k} {v}" for k, v in versions.items())),
    ]
    dl = "".join(f"<dt>{escape(k)}</dt><dd><code>{escape(v)}</code></dd>" for k, v in items)
    return f"<dl>{dl}</dl>\n{_timings_table(run.get('timings_s') or {})}"


def _mixed_settings(rows: list[dict[str, Any]]) -> str:
    """A warning box when the series of the folder were made with different settings (a merge of several runs)."""
    import pandas as pd

    from pipeline.outputs import settings_note

    note = settings_note(pd.DataFrame(rows), "the series of this folder") if rows else None
    return f'<p class="mixed">{escape(note)}</p>' if note else ""


def _key(run: Mapping[str, Any]) -> str:
    """What the columns' abbreviations and ranges mean, with this run's HU bands and minimum lesion (run.json's config;
    the defaults, said to be such, when run.json has none or a value is malformed)."""
    from pipeline.config import default_config

    config = run.get("config") if isinstance(run.get("config"), Mapping) else {}
    defaults = default_config()
    recorded = bool(config)

    def setting(section: str, key: str, ok) -> tuple[Any, bool]:
        value = (config.get(section) or {}).get(key) if isinstance(config.get(section), Mapping) else None
        return (value, True) if value is not None and ok(value) else (defaults[section][key], False)

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    def pair(v: Any) -> bool:
        return isinstance(v, (list, tuple)) and len(v) >= 2 and all(number(x) for x in v[:2])

    mark = {"default": False}

    def split(name: str) -> float:  # the classes are split at the lower bounds of ggo and consolidation only
        (low, *_), own = setting("hu_classes", name, pair)
        mark["default"] |= not own
        return low

    def choice(key: str, allowed: tuple[str, ...]) -> str:
        z = config.get("scoring", {}).get("zhang900") if isinstance(config.get("scoring"), Mapping) else None
        value = z.get(key) if isinstance(z, Mapping) else None
        mark["default"] |= value not in allowed
        return value if value in allowed else defaults["scoring"]["zhang900"][key]

    def zhang_number(key: str) -> float:
        z = config.get("scoring", {}).get("zhang900") if isinstance(config.get("scoring"), Mapping) else None
        value = z.get(key) if isinstance(z, Mapping) else None
        mark["default"] |= not number(value)
        return value if number(value) else defaults["scoring"]["zhang900"][key]

    ggo_low, cons_low = split("ggo"), split("consolidation")
    pho, own = setting("hu_classes", "high_opacity_min_hu", number)
    mark["default"] |= not own
    (wal_low, wal_high, *_), own = setting("hu_classes", "well_aerated", pair)
    mark["default"] |= not own
    min_ml, own = setting("scoring", "min_involvement_ml", number)
    mark["default"] |= not own
    min_pct, own = setting("scoring", "min_involvement_pct", number)
    mark["default"] |= not own
    mode, rule = choice("mode", ("slab", "zone")), choice("density_rule", ("densest", "predominant"))
    reading = (f"a slab of +-{zhang_number('slab_half_thickness_mm'):g} mm (at least half the slice step) around each "
               "level" if mode == "slab" else "the volumes between the levels' midpoints")
    density = (f"the densest class holding at least {zhang_number('density_share') * 100:g} % of the unit's lesion "
               "(else the predominant class)" if rule == "densest" else "the unit's predominant lesion class")
    items = [
        ("six-zone", "0-24: each lung in upper, middle and lower zones (at the carina and the inferior pulmonary "
                     "veins' level, which is estimated from the carina and the diaphragm, not seen in the image: "
                     "IPV (est.) in the pictures), each zone 0-4 by its share of opacity"),
        ("zhang900", f"0-900: five axial levels in each lung (10 units), each extent 0-10 x density 0-3 squared; "
                     f"units read as {reading} ({mode} mode), density from {density}"),
        ("involved", f"a zone or unit counts as involved with at least {min_ml:g} mL and {min_pct:g} % of lesion "
                     "(scoring.min_involvement_ml, scoring.min_involvement_pct)"),
        ("% opacity", "lesion volume / lung volume; on a scan flagged PARTIAL_LUNG_COVERAGE, of the lung in the scan"),
        ("% high opacity", f"lesion voxels above {pho:g} HU / lung volume"),
        ("% well aerated", f"lung voxels from {wal_low:g} to under {wal_high:g} HU, lesion or not / lung volume"),
        ("MosMed", f"% opacity: CT-0 no lesion of {min_ml:g} mL or more (scoring.min_involvement_ml), CT-1 under "
                   "25 %, CT-2 25-50 %, CT-3 50-75 %, CT-4 75 % or more"),
        ("faint GGO, GGO", f"lesion voxels: faint ground-glass opacity below {ggo_low:g} HU, ground-glass opacity "
                           f"{ggo_low:g} to {cons_low:g} HU"),
        ("consolidation", f"lesion voxels of {cons_low:g} HU and above"),
        ("flags", "QC flags (their meanings: Flags, below the series table; also on hover); a number after the "
                  "colon is in the unit shown"),
    ]
    if mark["default"]:
        items.append(("settings", "the defaults of this ctscore version" + (
            " where run.json records none or a malformed value" if recorded else ": run.json records no configuration")))
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items)
    return f'<details open="open"><summary>Key</summary><dl class="key">{dl}</dl></details>'


def _legend() -> str:
    """Colour swatches of the QC montage, from the same table the montage is drawn with."""
    items = [(f"repeating-linear-gradient(135deg, {c} 0 2px, #d9d9d9 2px 5px)" if v == HATCHED_CLASS else c,
              name + (" (hatched)" if v == HATCHED_CLASS else "")) for v, (c, name) in LESION_CLASSES.items()]
    items += [(LUNG_COLOUR, "lung outline"), (PLANE_COLOUR, "zone planes (carina, IPV)")]
    return "".join(f'<span class="swatch" style="background: {escape(c)}"></span>{escape(n)}' for c, n in items)


def render_run_report(out_dir: str | Path) -> str:
    """The report of the run in ``out_dir`` as an HTML string (see the module docstring)."""
    out_dir = Path(out_dir)
    rows = _read_csv(out_dir / "scans.csv")
    failures = _read_csv(out_dir / "failures.csv")
    run = _read_json(out_dir / "run.json")
    by_scan = {f.get("scan_id", ""): f for f in failures}
    seen = {r.get("scan_id", "") for r in rows}
    rows += [{"scan_id": f.get("scan_id", ""), "status": "failed"} for f in failures
             if f.get("scan_id", "") not in seen]
    n_ok = sum(r.get("status") == "ok" for r in rows)
    shown, cut = _rows_shown(rows)
    not_scored, n_skipped = _not_scored(out_dir, rows)
    links = " ".join(f'<a href="{escape(n)}">{escape(n)}</a>' for n in RUN_FILES if (out_dir / n).is_file())
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1"/>
<title>ctscore run report</title>
<style>{CSS}</style>
</head>
<body>
<h1>ctscore run report</h1>
<p class="summary">{len(rows)} series: {n_ok} ok, {len(rows) - n_ok} failed{
f"; {n_skipped} image stack(s) found but not scored (see Not scored)" if n_skipped else ""}.
ctscore {escape(str(run.get("ctscore_version", "")))}, segmenter
{escape(str((run.get("segmenter") or {}).get("name", "")))}. Tables: {links}</p>
{_mixed_settings(rows)}
<h2>Series</h2>
<p class="summary">Click a column header (or Tab to it and press Enter) to sort; click a picture for the full QC
montage (coronal view with the six-zone planes, axial slices in each zone):{_legend()}.
Which input folder a series came from is kept off this page (folder names often hold patient names): find its
scan_id in scans.csv (series_uid) and that series_uid in inventory.csv (path), or, for a failed series, in
failures.csv (path).</p>
{_key(run)}
{cut}{_series_table(out_dir, shown, by_scan)}
<p class="summary">Before analysis, review each series' QC montage and levels picture and record the ones that
cannot be used: <code>ctscore review-sheet OUT</code> writes <code>review.csv</code>, a row per series (flagged ones
first) with columns to mark <code>exclude</code> yes or no and a reason; give it to <code>ctscore stats</code>,
<code>validate</code> and <code>methods</code> with <code>--exclude</code> (README: "The review sheet").</p>
<h2>Flags</h2>
{_flags_section(rows)}
<h2>Failures</h2>
{_failures_section(failures[:REPORT_MAX_ROWS])}{_more(len(failures), "failures.csv")}
<h2>Not scored</h2>
{not_scored}
<h2>Provenance</h2>
{_provenance(run)}
<script>//<![CDATA[{SORT_JS}//]]></script>
</body>
</html>
"""


def write_run_report(out_dir: str | Path) -> Path:
    """Write ``out_dir/report.html`` (atomically) from the run's own files; returns its path."""
    out_dir = Path(out_dir)
    path = out_dir / REPORT_NAME
    atomic_write_bytes(path, render_run_report(out_dir).encode("utf-8"))
    return path
