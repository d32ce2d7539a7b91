"""The validation outputs on disk: one CSV per table and a single-page HTML summary."""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from scoring.stats.report import html_figure, html_table, page_start
from scoring.validation.figures import MAX_PANELS, PICTURE_NAME
from scoring.validation.systems import ALL_UNITS, TOTAL, difference_unit

TABLE_NOTES = {
    "data_summary": "What was read and matched.",
    "side_by_side": "Is ctscore within inter-reader variability? Every figure is computed on the same n "
                    "targets, those ctscore and every reader scored (n_without_ctscore: targets every reader "
                    "scored but ctscore did not). readers_* = mean over reader pairs; "
                    "ctscore_vs_readers_* = mean over readers; within_readers_mae: ctscore's mean absolute "
                    "difference from the readers is no larger than the readers' from each other; "
                    "within_readers_icc: ctscore's mean ICC(2,1) with the readers is no lower than theirs (n beside "
                    "each verdict: few targets make it uncertain). MAE and bias are differences on the system's "
                    "scale, in the unit the column 'MAE, bias in' gives.",
    "agreement_summary": "Totals and all units pooled (each scan x unit one target; their CIs and p values "
                         "treat the units of a scan as independent, so they are too narrow). Quadratic-weighted kappa "
                         "(ordinal scores), ICC(2,1) absolute agreement and ICC(3,1) consistency with 95 % CI, "
                         "Spearman rho, MAE, Bland-Altman bias (a - b) and 95 % limits of agreement (in the "
                         "unit of column 'MAE, bias in'); exact agreement is the fraction (0-1) of targets the two "
                         "raters gave the same value. Per-unit rows: agreement.csv.",
}


def _s(kind: str, description: str, unit: str = "", allowed: str = "") -> tuple[str, str, str, str]:
    return kind, unit, allowed, description


_SCALE = "on the system's scale (the unit 'MAE, bias in' of summary.html: score points, or percentage points)"
_AGREE = {
    "system": _s("text", "the scoring system"), "unit": _s("text", "the scored unit, 'total', or 'all_units' (the "
                                                                    "units pooled)"),
    "comparison": _s("text", "which raters are compared",
                     allowed="reader_vs_reader, ctscore_vs_reader, ctscore_vs_consensus"),
    "rater_a": _s("text", "first rater (ctscore, a reader's name, or consensus)"),
    "rater_b": _s("text", "second rater"),
    "n": _s("integer", "targets both raters scored"), "n_scans": _s("integer", "scans those targets come from"),
    "kappa_qw": _s("number", "quadratic-weighted kappa (ordinal scores; empty for continuous ones)"),
    "icc2_1": _s("number", "ICC(2,1), absolute agreement"),
    "icc2_1_ci_low": _s("number", "lower bound of the 95 % CI of ICC(2,1)"),
    "icc2_1_ci_high": _s("number", "upper bound of the 95 % CI of ICC(2,1)"),
    "icc3_1": _s("number", "ICC(3,1), consistency"),
    "icc3_1_ci_low": _s("number", "lower bound of the 95 % CI of ICC(3,1)"),
    "icc3_1_ci_high": _s("number", "upper bound of the 95 % CI of ICC(3,1)"),
    "spearman_rho": _s("number", "Spearman rank correlation (-1 to 1)"),
    "spearman_p": _s("number", "p value of spearman_rho, not rounded"),
    "mae": _s("number", f"mean absolute difference, {_SCALE}"),
    "exact_agreement": _s("number", "fraction (0-1) of targets both raters gave the same value"),
    "ba_bias": _s("number", f"Bland-Altman bias (mean of a - b), {_SCALE}"),
    "ba_sd": _s("number", f"standard deviation of a - b, {_SCALE}"),
    "ba_loa_low": _s("number", f"lower 95 % limit of agreement, {_SCALE}"),
    "ba_loa_high": _s("number", f"upper 95 % limit of agreement, {_SCALE}"),
    "mean_a": _s("number", "mean score of rater_a on these targets"),
    "mean_b": _s("number", "mean score of rater_b on these targets"),
    "note": _s("text", "why a statistic is empty, and anything that qualifies the row; empty when nothing to say")}
_METRIC_WORDS = {"kappa_qw": "quadratic-weighted kappa", "icc2_1": "ICC(2,1)", "mae": f"MAE ({_SCALE})",
                 "ba_bias": f"Bland-Altman bias ({_SCALE})"}
_PARTS = {"readers": "of the readers with each other (mean over reader pairs)",
          "ctscore_vs_readers": "of ctscore with the readers (mean over readers)",
          "ctscore_vs_consensus": "of ctscore with the consensus"}
#: The columns of the validation tables, in order, with their codebook entry (type, unit, allowed, description);
#: ``ratings`` has a column per reader besides these (:func:`_describe`).
VALIDATION_COLUMNS: dict[str, dict[str, tuple[str, str, str, str]]] = {
    "data_summary": {"item": _s("text", "what is counted or noted"), "value": _s("text", "its count or text")},
    "ratings": {"scan_id": _s("text", "the scan (scan_id of scans.csv)"), "system": _AGREE["system"],
                "unit": _AGREE["unit"], "ctscore": _s("number", "ctscore's score; empty when it has none")},
    "agreement": _AGREE,
    "side_by_side": (
        {"system": _AGREE["system"], "unit": _AGREE["unit"],
         "n": _s("integer", "targets ctscore and every reader scored (every figure of the row is on these)"),
         "n_scans": _s("integer", "scans those targets come from"),
         "n_without_ctscore": _s("integer", "targets every reader scored but ctscore did not")}
        | {f"{part}_{m}": _s("number", f"{_METRIC_WORDS[m]} {words}")
           for m in ("kappa_qw", "icc2_1", "mae", "ba_bias") for part, words in _PARTS.items()}
        | {"within_readers_mae": _s("text", "ctscore's MAE from the readers is no larger than the readers' from each "
                                            "other: written yes/no, empty when not decided (note says why); text, "
                                            "not the True/False of the run tables", allowed="yes, no, (empty)"),
           "within_readers_icc": _s("text", "ctscore's mean ICC(2,1) with the readers is no lower than the readers' "
                                            "with each other: written yes/no, empty when not decided (note says "
                                            "why); text, not the True/False of the run tables",
                                    allowed="yes, no, (empty)"),
           "note": _AGREE["note"]}),
    "confusion_matrices": {"system": _AGREE["system"], "unit": _AGREE["unit"], "comparison": _AGREE["comparison"],
                           "rater_a": _AGREE["rater_a"], "rater_b": _AGREE["rater_b"],
                           "value_a": _s("integer", "rater_a's category"),
                           "value_b": _s("integer", "rater_b's category"),
                           "count": _s("integer", "targets with that pair of categories")},
}


def _describe(table: str, column: str) -> tuple[str, str, str, str] | None:
    """The codebook entry of a rater column of ``ratings`` (one per reader, and the readers' consensus)."""
    if table != "ratings" or column in VALIDATION_COLUMNS["ratings"]:
        return None
    if column == "consensus":
        return _s("number", "median of the readers who scored the target (at least 2); the column is there only "
                            "with two or more readers")
    return _s("number", f"the score reader {column!r} gave (a column per reader, named as in the reference)")


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """One CSV per table (12 significant digits: :data:`scoring.stats.report.FLOAT_FORMAT`), each with every
    column of its table (:data:`VALIDATION_COLUMNS`; side_by_side keeps its header when nothing was compared),
    written atomically, and ``codebook.csv`` describing each column."""
    from pipeline.outputs import atomic_write_bytes
    from scoring.stats.codebook import codebook, conform
    from scoring.stats.report import CODEBOOK_FILE, write_csv

    tables = {n: df if n == "ratings" else conform(n, df, VALIDATION_COLUMNS) for n, df in tables.items()}
    paths = write_csv(tables, out_dir)
    p = Path(out_dir) / CODEBOOK_FILE
    atomic_write_bytes(p, codebook(tables, VALIDATION_COLUMNS, describe=_describe).to_csv(index=False).encode())
    return [*paths, p]


def _is_count(column: str) -> bool:
    """A column of counts (written whole when a missing value made it float)."""
    return column == "n" or column.startswith("n_")


def _fmt(column: str, v: object) -> str:
    """A cell of the page: statistics with 3 decimals (never an exponent: an ICC of 7.93e-17 is 0.000), p values
    below 0.001 as '< 0.001', counts whole; the CSV files keep 12 significant digits."""
    if isinstance(v, (float, np.floating)):
        if _is_count(column) and float(v).is_integer():
            return f"{v:.0f}"
        if (column.endswith("_p") or column == "p_value") and v < 0.001:
            return "< 0.001"
        text = f"{v:.3f}"
        return "0.000" if text == "-0.000" else text
    return str(v)


#: Header text of the page where a column's name alone does not say its scale.
HEADERS = {"exact_agreement": "exact_agreement (fraction, 0-1)"}
#: The column the page adds after ``unit``: the unit of MAE, bias and limits of agreement of each row's system.
DIFF_COLUMN = "MAE, bias in"


def shown_table(df: pd.DataFrame) -> pd.DataFrame:
    """A table as the page shows it: the unit of MAE and bias beside each system's rows, and n beside each
    within_readers verdict ('yes (n=5)'), so that a verdict on few targets reads as such."""
    out = df.copy()
    if "system" in out.columns and ("mae" in out.columns or any(c.endswith("_mae") for c in out.columns)):
        at = out.columns.get_loc("unit") + 1 if "unit" in out.columns else len(out.columns)
        out.insert(at, DIFF_COLUMN, out["system"].map(difference_unit))
    if "n" in out.columns:
        for c in [c for c in out.columns if c.startswith("within_readers_")]:
            out[c] = [f"{v} (n={n})" if isinstance(v, str) and v else v for v, n in zip(out[c], out["n"], strict=True)]
    return out


def _figure_text(name: str) -> tuple[str, str]:
    """(alternative text, caption) of a picture, from its file name."""
    m = PICTURE_NAME.fullmatch(name)
    if not m:
        return f"picture {name}", name
    kind, system, unit = m.groups()
    what = f"{system} {'total' if unit == TOTAL else 'units pooled'}"
    diff = difference_unit(system)
    if kind == "bland_altman":
        return (f"Bland-Altman plots of the {what}: for each rater pair, the difference between the two raters in "
                f"{diff} against their mean, with the bias and the 95 % limits of agreement.",
                f"Bland-Altman plots, {what}: one panel per rater pair (at most {MAX_PANELS}; every pair is in "
                f"agreement.csv); bias (solid line) and 95 % limits of agreement (dashed) in {diff}, also in each "
                "panel's title; dotted line: no difference; a larger dot holds several targets.")
    counted = "scan x unit targets" if unit == ALL_UNITS else "scans"
    return (f"Confusion matrices of the {what}: for each rater pair, the number of {counted} at each pair of "
            "categories, rows the first rater, columns the second; darker is more.",
            f"Confusion matrices, {what}: rows the first rater's category, columns the second's; one colour scale "
            f"(number of {counted}) for every panel. Counts: confusion_matrices.csv.")


def write_html(tables: dict[str, pd.DataFrame], figures: list[Path], out_dir: Path,
               settings: dict[str, object], written_at: datetime | None = None) -> Path:
    """summary.html (written atomically): settings, data summary, side-by-side verdicts, headline agreement,
    pictures; ``written_at``: the time its provenance line gives (default now)."""
    from pipeline.outputs import atomic_write_bytes

    parts = page_start("ctscore validation against readers", written_at)
    parts += ["<p class='note'>CSV files (12 significant digits) sit next to this page: agreement.csv (every unit "
              "and rater pair), side_by_side.csv, confusion_matrices.csv, ratings.csv (the matched values); "
              "codebook.csv describes their columns. "
              "Statistics here have 3 decimals.</p>",
              "<h2>Settings</h2><ul>"]
    parts += [f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in settings.items()]
    parts.append("</ul>")
    agree = tables.get("agreement", pd.DataFrame())
    shown = {
        "data_summary": tables.get("data_summary"),
        "side_by_side": tables.get("side_by_side"),
        "agreement_summary": agree[agree["unit"].isin([TOTAL, ALL_UNITS])] if not agree.empty else agree,
    }
    for name, df in shown.items():
        if df is None:
            continue
        parts.append(f"<h2 id='t-{name}'>{html.escape(name.replace('_', ' '))}</h2>")
        note_id = ""
        if name in TABLE_NOTES:
            note_id = f"t-{name}-note"
            parts.append(f"<p class='note' id='{note_id}'>{html.escape(TABLE_NOTES[name])}</p>")
        parts.append(html_table(shown_table(df), _fmt, f"t-{name}", note_id, headers=HEADERS,
                                row_header="item" if name == "data_summary" else None)
                     if not df.empty else "<p>(nothing to compare)</p>")
    ba = [f for f in figures if f.name.startswith("bland_altman")]
    cm = [f for f in figures if f.name.startswith("confusion")]
    for heading, figs in (("Bland-Altman plots", ba), ("Confusion matrices", cm)):
        if figs:
            parts.append(f"<h2>{heading}</h2>")
            parts += [html_figure(f.name, *_figure_text(f.name)) for f in figs]
    parts.append("</body></html>")
    p = out_dir / "summary.html"
    atomic_write_bytes(p, "\n".join(parts).encode("utf-8"))
    return p
