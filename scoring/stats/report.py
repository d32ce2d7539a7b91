"""Write the statistics outputs: one CSV per table, PNG figures, an HTML summary."""

from __future__ import annotations

import html
import io
import logging
import os
import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

#: The headings with each study's default score (:func:`study_titles` builds them from the score a run used).
STUDY_TITLES = {
    "data": "Data used",
    "liao2021": "liao2021 - persistent lesions at week 8 and IL-6 (six-zone score, 0-24)",
    "zhang2020": "zhang2020 - admission score (0-900) vs inflammatory markers; treatment",
    "li2020": "li2020 - serial CT in survivors vs non-survivors by period since onset (six-zone, 0-24)",
}
#: The default ``score`` of each study's runner.
_SCORE_DEFAULT = {"liao2021": "six_zone_total", "zhang2020": "zhang900_total", "li2020": "six_zone_total"}
#: How a heading names a score and its range.
_SCORE_WORDS = {"six_zone_total": ("six-zone score, 0-24", "six-zone, 0-24"), "zhang900_total": ("0-900", "0-900"),
                "lobar20_total": ("lobar score, 0-20", "lobar, 0-20"), "lobar25_total": ("lobar score, 0-25", "lobar, 0-25"),
                "percent_opacity": ("percent opacity, 0-100 %", "percent opacity, 0-100 %"),
                "percent_high_opacity": ("percent high opacity, 0-100 %", "percent high opacity, 0-100 %"),
                "percent_well_aerated": ("percent well-aerated lung, 0-100 %", "percent well aerated, 0-100 %")}


def study_titles(options: dict[str, dict[str, object]] | None = None) -> dict[str, str]:
    """The study headings of the summary, naming the score each study used (its ``score`` option, else its
    default): li2020 run on percent_opacity no longer says "(six-zone, 0-24)"."""
    opts = options or {}
    titles = {"data": STUDY_TITLES["data"]}
    for study, default in _SCORE_DEFAULT.items():
        score = str(opts.get(study, {}).get("score") or default)
        long, short = _SCORE_WORDS.get(score, (score, score))
        titles[study] = {
            "liao2021": f"liao2021 - persistent lesions at week 8 and IL-6 ({long})",
            "zhang2020": f"zhang2020 - admission score ({long}) vs inflammatory markers; treatment",
            "li2020": f"li2020 - serial CT in survivors vs non-survivors by period since onset ({short})",
        }[study]
    return titles
#: One sentence per table shown above it in the summary (what it is and how it was computed).
TABLE_NOTES = {
    "data_summary": "What was read, matched and left out.",
    "liao2021_group_counts": "Patients per lesion group; unclassified patients are listed with the reason.",
    "liao2021_weekly_tests": "Per week since onset, one value per patient (last scan/lab of the week): "
                             "Mann-Whitney U (persistent vs recovery) or Kruskal-Wallis (severity; Mann-Whitney U "
                             "across the two levels left when a level has too few values that week or none in the cohort).",
    "liao2021_logistic": "Multivariable logistic regression of persistent lesions on admission values "
                         "(odds ratio per 1 unit of each predictor, the unit in column per; 95 % CI, Wald p).",
    "liao2021_roc": "ROC AUC of admission IL-6 for persistent lesions. The Youden cut-off (in cutoff_unit) is for "
                    "IL-6 >= cut-off "
                    "counting as persistent (cutoff_rule); when the AUC is below 0.5 lower IL-6 goes with persistent "
                    "lesions and the cut-off is for IL-6 <= cut-off.",
    "liao2021_peak_timing": "Does the lab peak precede the CT-score peak? lag = score-peak day - lab-peak day. A maximum "
                            "reached on several days (a tied peak; n_tied_score_peak, n_tied_lab_peak) is placed at "
                            "the mean of those days (the midpoint of two), favouring neither the first nor the last.",
    "zhang2020_subgroups": "Patients per admission-score subgroup.",
    "zhang2020_subgroup_labs": "Labs across subgroups: Kruskal-Wallis (ANOVA for variables declared normal); when "
                               "one subgroup has too few values, across the other two: Mann-Whitney U (Student's t), "
                               "as the pairwise test.",
    "zhang2020_pairwise": "Pairwise Mann-Whitney with Bonferroni correction (LSD t-tests after ANOVA).",
    "zhang2020_subgroup_categorical": "Chi-square, or Fisher's exact test when an expected count is below 5.",
    "zhang2020_correlations": "Spearman correlation of the admission score with each lab (labs within the window).",
    "zhang2020_lung_side": "Right vs left lung score at admission.",
    "zhang2020_levels": "Score by axial level at admission.",
    "zhang2020_before_after": "Before vs after treatment (pairs of scans with matched labs).",
    "zhang2020_glucocorticoid_change": "Change (after - before) with vs without glucocorticoids: Mann-Whitney U.",
    "zhang2020_partial_correlation": "Partial correlation of the change in score with the change in each lab.",
    "li2020_period_comparison": "Per period since onset, one value per patient (mean of the period's scans): "
                                "Mann-Whitney U, survivors vs non-survivors; days from onset to CT too.",
    "li2020_mixed_model": "Linear mixed model: value ~ non_survivor x period, random intercept per patient (REML, "
                          "statsmodels MixedLM); the score on all scans, each lab on all its samples (one per patient "
                          "and day, the period from the sample's date). p: Wald z test of each term (normal "
                          "approximation).",
    "li2020_mixed_model_tests": "Joint Wald tests of the model's terms.",
    "li2020_mortality_logistic": "Logistic regression of death on score and days since onset "
                                 "(one row per patient x period, cluster-robust SE; odds ratio per the unit in "
                                 "column per).",
    "li2020_predicted_mortality": "Predicted mortality by score band x period (the study's Table 3), with observed "
                                  "counts; band_rule says which values a band holds.",
    "li2020_kendall": "Kendall tau-b between serial scores and labs matched to the same scan.",
}
#: How ``within_bin`` takes one value per patient out of a week's (liao2021) or a period's (li2020) scans and labs.
_WITHIN_BIN_WORDS = {"last": "the last {x} of the {b}", "first": "the first {x} of the {b}",
                     "mean": "the mean of the {b}'s {xs}", "median": "the median of the {b}'s {xs}",
                     "max": "the highest of the {b}'s {xs}"}
#: The default ``within_bin`` of each study's runner (liao2021.run, li2020.run).
_WITHIN_BIN_DEFAULT = {"liao2021": "last", "li2020": "mean"}


def table_notes(options: dict[str, dict[str, object]] | None = None) -> dict[str, str]:
    """:data:`TABLE_NOTES` as they apply to this run: the binned tables say which ``within_bin`` made them."""
    notes = dict(TABLE_NOTES)
    opts = options or {}
    liao = str(opts.get("liao2021", {}).get("within_bin", _WITHIN_BIN_DEFAULT["liao2021"]))
    li = str(opts.get("li2020", {}).get("within_bin", _WITHIN_BIN_DEFAULT["li2020"]))
    if liao in _WITHIN_BIN_WORDS:
        notes["liao2021_weekly_tests"] = (
            f"Per week since onset, one value per patient ({_WITHIN_BIN_WORDS[liao].format(x='scan/lab', xs='scans/labs', b='week')}): "
            "Mann-Whitney U (persistent vs recovery) or Kruskal-Wallis (severity; Mann-Whitney U across the two "
            "levels left when a level has too few values that week or none in the cohort).")
    if li in _WITHIN_BIN_WORDS:
        notes["li2020_period_comparison"] = (
            f"Per period since onset, one value per patient ({_WITHIN_BIN_WORDS[li].format(x='scan', xs='scans', b='period')}): "
            "Mann-Whitney U, survivors vs non-survivors; days from onset to CT too.")
    return notes


#: Per-patient tables: written as CSV, left out of the HTML page.
DETAIL_TABLES = {"liao2021_lesion_groups", "liao2021_trajectories", "liao2021_peak_timing_patients",
                 "zhang2020_before_after_patients"}


#: The figures the studies draw (file names).
FIGURE_FILES = ("liao2021_trajectories.png", "zhang2020_score_vs_labs.png", "li2020_score_by_period.png")
#: Every table and figure file a study writes: what :func:`remove_stale` may remove (``data_summary.csv`` and
#: ``summary.html``, written by every run, are replaced instead). A test checks that a run writes no other name.
STUDY_FILES = frozenset({f"{n}.csv" for n in (*TABLE_NOTES, *DETAIL_TABLES) if n != "data_summary"} | set(FIGURE_FILES))
#: A figure's temporary file that a killed run left behind (:func:`write_figures`).
_FIGURE_TMP = re.compile(r"\.(" + "|".join(re.escape(Path(f).stem) for f in FIGURE_FILES) + r")\.\d+\.tmp\.png")


def remove_stale(out_dir: Path) -> list[Path]:
    """Remove the tables and figures a previous run wrote to ``out_dir`` (only the file names in
    :data:`STUDY_FILES` and figure temporaries; nothing else in the folder), so that a run of another study, or one
    whose figure was not drawn this time, leaves no outdated file next to its ``summary.html``."""
    gone = []
    if out_dir.is_dir():
        for p in sorted(out_dir.iterdir()):
            if (p.name in STUDY_FILES or _FIGURE_TMP.fullmatch(p.name)) and (p.is_file() or p.is_symlink()):
                p.unlink()
                gone.append(p)
    if gone:
        log.info("removed %d table(s)/figure(s) of a previous run from %s", len(gone), out_dir)
    return gone


#: Resolution of the PNG figures (dots per inch) and their widest size (inches: a journal column), so that text
#: drawn at 7 pt or more keeps at least that size in print.
FIGURE_DPI = 150
FIGURE_WIDTH = 6.5
#: Colour-blind-safe colours (Okabe-Ito), markers and line styles of two groups: told apart by any one of them.
GROUP_STYLES = ({"color": "#D55E00", "marker": "o", "linestyle": "-"},
                {"color": "#0072B2", "marker": "s", "linestyle": "--"})
#: The unit and range of each score column of scans.csv (axis labels, the ``per`` of an odds ratio).
SCORE_UNITS = {"six_zone_total": ("score points", "0-24"), "zhang900_total": ("score points", "0-900"),
               "lobar20_total": ("score points", "0-20"), "lobar25_total": ("score points", "0-25"),
               "percent_opacity": ("percentage points", "% of lung, 0-100"),
               "percent_high_opacity": ("percentage points", "% of lung, 0-100"),
               "percent_well_aerated": ("percentage points", "% of lung, 0-100")}
#: The unit of the other predictors a regression may hold (``age``: years, docs/clinical_schema.md).
_OTHER_UNITS = {"days_since_onset": "day", "age": "year"}


def axis_label(var: str, units: dict[str, str] | None = None) -> str:
    """An axis label with its unit: ``six_zone_total (score points, 0-24)``, ``IL-6, pg/mL`` (``units``: each lab's
    unit, :attr:`Cohort.units`)."""
    from scoring.stats.schema import analyte_label

    if var in SCORE_UNITS:
        unit, scale = SCORE_UNITS[var]
        return f"{var} ({scale})" if unit == "percentage points" else f"{var} ({unit}, {scale})"
    if var == "days_since_onset":
        return "days since symptom onset"
    unit = (units or {}).get(var, "")
    return f"{analyte_label(var)}, {unit}" if unit else f"{analyte_label(var)} (unit not given)"


def per_unit(term: str, units: dict[str, str] | None = None) -> str:
    """What an odds ratio of ``term`` is per: ``per 1 pg/mL``, ``per 10^9/L``, ``per 1 score point``, ``per 1 year``."""
    if term in SCORE_UNITS:
        return f"per 1 {SCORE_UNITS[term][0][:-1]}"
    if term in _OTHER_UNITS:
        return f"per 1 {_OTHER_UNITS[term]}"
    if term in (units or {}):
        unit = units[term]
        if not unit:
            return "per 1 unit (no unit in the lab table)"
        return f"per {unit}" if unit[0].isdigit() else f"per 1 {unit}"
    return "per 1 unit of the clinical column"


def compact_png(data: bytes) -> bytes:
    """A PNG as a 256-colour palette image (a plot has few colours: about a third of the bytes, same look; its
    resolution kept); anything Pillow cannot read is returned as it is."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            out = io.BytesIO()
            dpi = im.info.get("dpi", (FIGURE_DPI, FIGURE_DPI))
            im.convert("RGB").quantize(256).save(out, format="png", optimize=True, dpi=dpi)
    except OSError:
        return data
    return out.getvalue()


def new_figure(figsize: tuple[float, float]):
    """A ``matplotlib.figure.Figure`` on its own Agg canvas: drawing it sets no global backend and leaves pyplot's
    figures alone (a notebook's inline plots keep working after a run)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


#: How a float is written to the CSV tables: 12 significant digits, which keeps every digit a statistic has and
#: drops the binary noise of arithmetic (9.600999999999999 -> 9.601, 0.12099999999999955 -> 0.121); small values
#: keep their exponent (a p value of 1e-12 stays 1e-12, never 0), whole numbers lose their '.0' (a count beside a
#: missing value: 12, not 12.0). Read back, a value differs from the one computed by less than 1e-11 relative.
FLOAT_FORMAT = "%.12g"


def write_csv(tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """One CSV per table, floats written with :data:`FLOAT_FORMAT`, each written atomically; returns the paths."""
    from pipeline.outputs import write_csv_tables

    return write_csv_tables(tables, out_dir, float_format=FLOAT_FORMAT)


#: The file, beside the tables, with one row per (table, column) (:mod:`scoring.stats.codebook`).
CODEBOOK_FILE = "codebook.csv"


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path, units: dict[str, str] | None = None
                 ) -> list[Path]:
    """One CSV per table (12 significant digits: :data:`FLOAT_FORMAT`), written atomically, and ``codebook.csv``
    describing each of their columns (``units``: each lab's unit, :attr:`Cohort.units`)."""
    from pipeline.outputs import atomic_write_bytes
    from scoring.stats.codebook import codebook

    paths = write_csv(tables, out_dir)
    book = codebook(tables, units=units)
    for row in book[book["type"] == ""].itertuples():
        log.warning("codebook: column %r of %s is not described", row.column, row.table)
    p = Path(out_dir) / CODEBOOK_FILE
    atomic_write_bytes(p, book.to_csv(index=False).encode())
    return [*paths, p]


def write_figures(figures: dict[str, Callable[[str], None]], out_dir: Path) -> list[Path]:
    """Draw each figure to ``out_dir`` (under a temporary name, renamed when complete); a figure that fails
    is logged, not fatal."""
    from pipeline.outputs import replace_path

    paths = []
    for name, draw in figures.items():
        p = out_dir / name
        tmp = out_dir / f".{p.stem}.{os.getpid()}.tmp{p.suffix}"  # the suffix tells matplotlib the format
        try:
            draw(str(tmp))
            tmp.write_bytes(compact_png(tmp.read_bytes()))
            replace_path(tmp, p)
            paths.append(p)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("figure %s not drawn: %s", name, exc)
        finally:
            tmp.unlink(missing_ok=True)
    return paths


def _fmt(v: object) -> str:
    if isinstance(v, float):
        if v != v:  # NaN
            return ""
        if 1e3 <= abs(v) < 1e9:  # counts and large values in full (n 1234, not 1.23e+03)
            return f"{v:.0f}"
        return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


#: The style of both summary pages (statistics and validation): on screen, and for print (no table cut at the page
#: edge, headers not sticky, pictures within the page).
PAGE_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.4}"
              "table{border-collapse:collapse;font-size:12px;margin-bottom:1.5em}"
              "td,th{border:1px solid #bbb;padding:2px 6px;text-align:left}"
              "thead th{background:#eee;position:sticky;top:0}tbody th{background:#f7f7f7;font-weight:normal}"
              "p.note,p.provenance,figcaption{color:#444;font-size:13px}div.wide{overflow-x:auto}"
              "figure{margin:1em 0}img{max-width:100%;height:auto}"
              "@media print{body{max-width:none;margin:0;padding:0;font-size:10pt}div.wide{overflow:visible}"
              "table{font-size:7pt;width:100%}td,th{padding:1px 3px;overflow-wrap:anywhere}"
              "thead th{position:static}thead{display:table-header-group}tr,figure{break-inside:avoid}"
              "img{max-width:100%}}")


def page_start(title: str, written_at: datetime | None = None) -> list[str]:
    """The head of a summary page (language, viewport, style) and its top: the title and a provenance line with
    ctscore's version and when the page was written (ISO 8601, UTC; ``written_at``, default now)."""
    from pipeline import __version__

    when = (written_at or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    t = html.escape(title)
    return ["<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{t}</title><style>{PAGE_STYLE}</style></head><body>",
            f"<h1>{t}</h1>",
            f"<p class='provenance'>Written by ctscore {html.escape(__version__)} on "
            f"<time datetime='{when}'>{when}</time> (UTC).</p>"]


def _missing(v: object) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # a list or an array in a cell
        return False


def html_table(df: pd.DataFrame, fmt: Callable[[str, object], str], label_id: str = "", note_id: str = "",
               row_header: str | None = None, headers: dict[str, str] | None = None) -> str:
    """A table with ``<th scope="col">`` column headers (their text from ``headers``, else the column name), the
    cells of column ``row_header`` as ``<th scope="row">``, tied to its heading (``label_id``) and note (``note_id``);
    each cell is ``fmt(column, value)``, escaped (empty for a missing value)."""
    tied = (f" aria-labelledby='{label_id}'" if label_id else "") + (f" aria-describedby='{note_id}'" if note_id else "")
    head = "".join(f"<th scope='col'>{html.escape(str((headers or {}).get(c, c)), quote=False)}</th>"
                   for c in df.columns)
    rows = []
    for values in df.itertuples(index=False, name=None):
        cells = []
        for c, v in zip(df.columns, values, strict=True):
            text = "" if _missing(v) else html.escape(fmt(c, v), quote=False)
            cells.append(f"<th scope='row'>{text}</th>" if c == row_header else f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='wide'><table{tied}><thead><tr>{head}</tr></thead><tbody>" + "\n".join(rows)
            + "</tbody></table></div>")


def page_columns(df: pd.DataFrame) -> pd.DataFrame:
    """A table as the page shows it: without the numeric columns behind a ``median_iqr_<g>`` or ``mean_sd_<g>``
    text (``median_<g>``, ``q1_<g>``, ``q3_<g>``; ``mean_<g>``, ``sd_<g>``), which the page would repeat; the CSV
    files have them."""
    drop = []
    for c in map(str, df.columns):
        if c.startswith("median_iqr_"):
            g = c.removeprefix("median_iqr_")
            drop += [f"median_{g}", f"q1_{g}", f"q3_{g}"]
        elif c.startswith("mean_sd_"):
            g = c.removeprefix("mean_sd_")
            drop += [f"mean_{g}", f"sd_{g}"]
    return df.drop(columns=[c for c in drop if c in df.columns])


def html_figure(name: str, alt: str, caption: str) -> str:
    """A picture with its alternative text (what it shows) and a visible caption."""
    return (f"<figure><img src='{html.escape(name)}' alt='{html.escape(alt)}'>"
            f"<figcaption>{html.escape(caption, quote=False)}</figcaption></figure>")


#: What each figure shows: (alternative text, caption), the caption naming how groups are drawn and the table behind.
FIGURE_TEXT = {
    "liao2021_trajectories.png": (
        "Line charts of the weekly median of the CT score (and of IL-6 where measured) in weeks 1 to 8 after symptom "
        "onset, with the interquartile range as a band, for patients with persistent lesions at week 8 and those who "
        "recovered.",
        "liao2021: weekly median (band: interquartile range) by lesion group at week 8; persistent: solid line, "
        "circles, vermillion; recovery: dashed line, squares, blue. Values: liao2021_trajectories.csv."),
    "zhang2020_score_vs_labs.png": (
        "Scatter plots of the admission CT score against each laboratory value, one panel per lab, with Spearman's "
        "rho, its p value and n in each panel's title.",
        "zhang2020: admission score against each lab (one dot per patient); axis labels give each lab's unit. "
        "Values: zhang2020_correlations.csv."),
    "li2020_score_by_period.png": (
        "Line chart of the mean CT score, with standard-deviation error bars, against the mean day since symptom "
        "onset of each period, for survivors and non-survivors.",
        "li2020: mean score (error bars: SD) per period since onset; survivors: solid line, circles, vermillion; "
        "non-survivors: dashed line, squares, blue. Values: li2020_period_comparison.csv."),
}


def write_html(tables: dict[str, pd.DataFrame], figures: list[Path], out_dir: Path, title: str,
               settings: dict[str, object], notes: dict[str, str] | None = None,
               headings: dict[str, str] | None = None, written_at: datetime | None = None) -> Path:
    """A single readable page: settings, then per study its tables (3 significant digits) and figures.

    ``notes``: the sentence above each table (default :func:`table_notes` with the default options);
    ``headings``: the heading of each study (default :func:`study_titles` with the default options);
    ``written_at``: the time the provenance line gives (default now)."""
    notes = table_notes() if notes is None else notes
    headings = study_titles() if headings is None else headings
    parts = page_start(title, written_at)
    parts += ["<p class='note'>Every table gives n per group, the test and the exact p value; a test that was not "
              "run says why in <code>note</code>. CSV files (12 significant digits, with the numbers behind each "
              "median [IQR] and mean (SD); codebook.csv describes their columns) sit next to this page.</p>",
              "<h2>Settings</h2><ul>"]
    parts += [f"<li>{html.escape(str(k))}: {html.escape(str(v))}</li>" for k, v in settings.items()]
    parts.append("</ul>")
    for study in STUDY_TITLES:
        heading = headings.get(study, STUDY_TITLES[study])
        names = [n for n in tables if (n.startswith(study) or (study == "data" and n == "data_summary"))
                 and n not in DETAIL_TABLES]
        figs = [f for f in figures if f.name.startswith(study)]
        if not names and not figs:
            continue
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        for f in figs:
            alt, caption = FIGURE_TEXT.get(f.name, (f"figure {f.stem}", f.name))
            parts.append(html_figure(f.name, alt, caption))
        for n in names:
            parts.append(f"<h3 id='t-{html.escape(n)}'>{html.escape(n)}</h3>")
            note_id = ""
            if n in notes:
                note_id = f"t-{html.escape(n)}-note"
                parts.append(f"<p class='note' id='{note_id}'>{html.escape(notes[n])}</p>")
            parts.append(html_table(page_columns(tables[n]), lambda _c, v: _fmt(v), f"t-{html.escape(n)}", note_id,
                                    row_header="item" if n == "data_summary" else None))
        detail = [n for n in tables if n.startswith(study) and n in DETAIL_TABLES]
        if detail:
            parts.append("<p class='note'>Per-patient detail: " + ", ".join(f"<code>{d}.csv</code>" for d in detail) + "</p>")
    parts.append("</body></html>")
    from pipeline.outputs import atomic_write_bytes

    p = out_dir / "summary.html"
    atomic_write_bytes(p, "\n".join(parts).encode("utf-8"))
    return p
