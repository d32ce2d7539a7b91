"""The validation outputs on disk: one CSV per table and a single-page HTML summary."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from scoring.validation.systems import ALL_UNITS, TOTAL

TABLE_NOTES = {
    "data_summary": "What was read and matched.",
    "side_by_side": "Is ctscore within inter-reader variability? Every figure is computed on the same n "
                    "targets, those ctscore and every reader scored (n_without_ctscore: targets every reader "
                    "scored but ctscore did not). readers_* = mean over reader pairs; "
                    "ctscore_vs_readers_* = mean over readers; within_readers_mae: ctscore's mean absolute "
                    "difference from the readers is no larger than the readers' from each other; "
                    "within_readers_icc: ctscore's mean ICC(2,1) with the readers is no lower than theirs.",
    "agreement_summary": "Totals and all units pooled (each scan x unit one target; their CIs and p values "
                         "treat the units of a scan as independent, so they are too narrow). Quadratic-weighted kappa "
                         "(ordinal scores), ICC(2,1) absolute agreement and ICC(3,1) consistency with 95 % CI, "
                         "Spearman rho, MAE, Bland-Altman bias (a - b) and 95 % limits of agreement. "
                         "Per-unit rows: agreement.csv.",
}


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """One CSV per table (full precision), written atomically."""
    from pipeline.outputs import write_csv_tables

    return write_csv_tables(tables, out_dir)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if v != v:
            return ""
        return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return html.escape(str(v))


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, na_rep="", formatters={c: _fmt for c in df.columns}, border=0, escape=False)


def write_html(tables: dict[str, pd.DataFrame], figures: list[Path], out_dir: Path,
               settings: dict[str, object]) -> Path:
    """summary.html (written atomically): settings, data summary, side-by-side verdicts, headline agreement,
    pictures."""
    from pipeline.outputs import atomic_write_bytes

    title = "ctscore validation against readers"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
             "<style>body{font-family:sans-serif;max-width:1300px;margin:2em auto}"
             "table{border-collapse:collapse;font-size:12px;margin-bottom:1.5em}"
             "td,th{border:1px solid #bbb;padding:2px 6px}th{background:#eee}"
             "p.note{color:#444;font-size:13px}img{max-width:100%}</style></head><body>",
             f"<h1>{title}</h1>",
             "<p class='note'>Full-precision CSV files sit next to this page: agreement.csv (every unit and "
             "rater pair), side_by_side.csv, confusion_matrices.csv, ratings.csv (the matched values).</p>",
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
        parts.append(f"<h2>{html.escape(name.replace('_', ' '))}</h2>")
        if name in TABLE_NOTES:
            parts.append(f"<p class='note'>{html.escape(TABLE_NOTES[name])}</p>")
        parts.append(_table(df) if not df.empty else "<p>(nothing to compare)</p>")
    ba = [f for f in figures if f.name.startswith("bland_altman")]
    cm = [f for f in figures if f.name.startswith("confusion")]
    for heading, figs in (("Bland-Altman plots", ba), ("Confusion matrices", cm)):
        if figs:
            parts.append(f"<h2>{heading}</h2>")
            parts += [f"<p><img src='{html.escape(f.name)}' alt='{html.escape(f.stem)}'></p>" for f in figs]
    parts.append("</body></html>")
    p = out_dir / "summary.html"
    atomic_write_bytes(p, "\n".join(parts).encode("utf-8"))
    return p
