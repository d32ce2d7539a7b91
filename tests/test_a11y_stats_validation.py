"""Accessibility audit of the ``ctscore stats`` and ``ctscore validate`` outputs: figures told apart without colour,
units on axes and in the tables, one colour scale per confusion figure, figures readable in a 6.5 in journal column,
summary.html pages that a screen reader and a printer handle, statistics without floating-point noise."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.text import Text

from pipeline import __version__
from scoring.stats import li2020, liao2021, zhang2020
from scoring.stats import report as stats_report
from scoring.stats.api import run_stats
from scoring.stats.cohort import load_cohort
from scoring.stats.simulate import write_cohort
from scoring.validation import figures
from scoring.validation import report as val_report

OKABE_ITO = {"#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#000000"}
COLUMN_IN = 6.5  # a journal column, inches
WHEN = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture()
def stats_figures(monkeypatch) -> list:
    """The Figure objects the stats figure functions draw."""
    made = []
    real = stats_report.new_figure

    def keep(figsize):
        fig = real(figsize)
        made.append(fig)
        return fig

    monkeypatch.setattr(stats_report, "new_figure", keep)
    return made


@pytest.fixture()
def val_figures(monkeypatch) -> list:
    """The Figure objects the validation pictures draw (nothing written)."""
    made = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: made.append(fig) or path)
    return made


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> dict[str, Path]:
    return write_cohort(tmp_path_factory.mktemp("a11y"), seed=3, n_survivors=20, n_nonsurvivors=6)


@pytest.fixture(scope="module")
def stats_run(sim, tmp_path_factory) -> tuple[dict[str, pd.DataFrame], Path]:
    out = tmp_path_factory.mktemp("a11y_stats")
    return run_stats(sim["scores"], sim["clinical"], sim["labs"], out_dir=out), out


def _readable_in_a_column(fig) -> None:
    """Every text of ``fig`` is at least 7 pt when the figure is printed 6.5 in wide (never enlarged beyond)."""
    fig.canvas.draw()
    width = fig.get_figwidth()
    assert width <= COLUMN_IN + 1e-9, width
    small = [(t.get_text(), t.get_fontsize()) for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and t.get_fontsize() * COLUMN_IN / max(width, COLUMN_IN) < 7]
    assert not small, small


def _trajectory_desc() -> pd.DataFrame:
    rows = []
    for var in ("six_zone_total", "il6"):
        for grp, base in (("persistent", 10.0), ("recovery", 4.0)):
            for week in range(1, 9):
                rows.append({"grouping": "group", "variable": var, "week": week, "group": grp, "n": 5,
                             "median": base, "q1": base - 1, "q3": base + 1})
    return pd.DataFrame(rows)


def _group_lines(ax) -> list:
    return [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]


# ---- 1. groups told apart by more than colour ------------------------------------------------------------------

def test_liao2021_groups_differ_in_colour_blind_safe_colour_marker_and_line_style(tmp_path, stats_figures):
    liao2021.figure_trajectories(_trajectory_desc(), ["six_zone_total", "il6"], str(tmp_path / "t.png"),
                                 {"il6": "pg/mL"})
    [fig] = stats_figures
    for ax in fig.axes:
        persistent, recovery = _group_lines(ax)
        assert (persistent.get_label(), recovery.get_label()) == ("persistent", "recovery")
        assert {to_hex(persistent.get_color()), to_hex(recovery.get_color())} <= OKABE_ITO  # not tab:red/tab:green
        assert persistent.get_marker() != recovery.get_marker()
        assert persistent.get_linestyle() != recovery.get_linestyle()
    _readable_in_a_column(fig)


def test_li2020_outcomes_differ_in_line_style_and_marker_not_only_blue_and_red(tmp_path, stats_figures):
    rng = np.random.default_rng(0)
    per = pd.DataFrame({"patient_id": [f"p{i}" for i in range(20)] * 2,
                        "outcome": (["survivor"] * 10 + ["non-survivor"] * 10) * 2,
                        "period": ["0-5"] * 20 + ["6-10"] * 20, "days_since_onset": rng.uniform(0, 10, 40),
                        "six_zone_total": rng.integers(0, 25, 40).astype(float)})
    li2020.figure_score_by_period(per, "six_zone_total", str(tmp_path / "p.png"))
    [fig] = stats_figures
    [ax] = fig.axes
    lines = [c.lines[0] for c in ax.containers]  # the data line of each error-bar series
    assert len(lines) == 2
    assert lines[0].get_linestyle() != lines[1].get_linestyle() and lines[0].get_marker() != lines[1].get_marker()
    assert {to_hex(ln.get_color()) for ln in lines} <= OKABE_ITO
    assert "score points" in ax.get_ylabel()
    _readable_in_a_column(fig)


def test_bland_altman_lines_differ_in_style_and_use_colour_blind_safe_colours(val_figures):
    g = _pairs_frame()
    assert figures.bland_altman_png(g, [("ctscore_vs_reader", "ctscore", "alice")], "six_zone total", Path("x.png"))
    [fig] = val_figures
    ax = fig.axes[0]
    styles = {ln.get_linestyle() for ln in ax.get_lines() if len(ln.get_ydata())}
    assert {"-", "--", ":"} <= styles  # bias, limits of agreement, no difference
    colours = {to_hex(ln.get_color()) for ln in ax.get_lines() if len(ln.get_ydata()) and ln.get_linestyle() != ":"}
    assert colours <= OKABE_ITO


# ---- 2. units ----------------------------------------------------------------------------------------------------

def test_liao2021_axes_name_the_score_and_the_lab_unit(tmp_path, stats_figures):
    liao2021.figure_trajectories(_trajectory_desc(), ["six_zone_total", "il6"], str(tmp_path / "t.png"),
                                 {"il6": "pg/mL"})
    score_ax, il6_ax = stats_figures[0].axes
    assert "score points" in score_ax.get_ylabel() and "0-24" in score_ax.get_ylabel()
    assert il6_ax.get_ylabel().startswith("IL-6, pg/mL")


def test_zhang2020_axes_name_each_labs_unit(tmp_path, stats_figures):
    rng = np.random.default_rng(1)
    adm = pd.DataFrame({"zhang900_total": rng.uniform(0, 300, 20), "crp": rng.uniform(1, 50, 20),
                        "il6": rng.uniform(1, 80, 20), "ldh": rng.uniform(150, 400, 20)})
    corr = pd.DataFrame({"lab": ["crp", "il6", "ldh"], "coefficient": [0.5, 0.4, 0.3], "p_value": [0.01, 0.05, 0.2],
                         "n": [20, 20, 20]})
    zhang2020.figure_score_vs_labs(adm, "zhang900_total", ["crp", "il6", "ldh"], corr, str(tmp_path / "z.png"),
                                   {"crp": "mg/L", "il6": "pg/mL", "ldh": "U/L"})
    [fig] = stats_figures
    xlabels = [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()]
    assert xlabels == ["CRP, mg/L", "IL-6, pg/mL", "LDH, U/L"]
    assert "score points, 0-900" in fig.axes[0].get_ylabel()
    _readable_in_a_column(fig)


def test_cohort_carries_each_labs_unit(sim):
    cohort = load_cohort(sim["scores"], sim["clinical"], sim["labs"])
    assert cohort.units["il6"] == "pg/mL" and cohort.units["crp"] == "mg/L"
    assert cohort.units["potassium"] == "mmol/L"  # no expected unit: the one its values carry
    assert stats_report.axis_label("il6", cohort.units) == "IL-6, pg/mL"
    assert stats_report.axis_label("potassium", {}) == "potassium (unit not given)"


def test_odds_ratios_say_per_what_unit_and_the_cut_off_has_its_unit(stats_run):
    tables, out = stats_run
    logit = tables["liao2021_logistic"].set_index("term")
    assert logit.loc["il6", "per"] == "per 1 pg/mL" and logit.loc["age", "per"] == "per 1 year"
    assert logit.loc["lymphocyte_count", "per"] == "per 10^9/L"
    mort = tables["li2020_mortality_logistic"].set_index("term")
    assert mort.loc["six_zone_total", "per"] == "per 1 score point" and mort.loc["days_since_onset", "per"] == "per 1 day"
    assert tables["liao2021_roc"]["cutoff_unit"].iloc[0] == "pg/mL"
    page = (out / "summary.html").read_text()
    assert "<td>per 1 pg/mL</td>" in page and "<th scope='col'>cutoff_unit</th>" in page
    assert pd.read_csv(out / "liao2021_logistic.csv")["per"].notna().all()


def _pairs_frame(n: int = 30, seed: int = 0, hi: int = 24) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, hi + 1, n)
    return pd.DataFrame({"ctscore": a, "alice": np.clip(a + rng.integers(-1, 2, n), 0, hi),
                         "bob": np.clip(a + rng.integers(-2, 3, n), 0, hi)}).astype(float)


@pytest.mark.parametrize("title, unit", [("six_zone total", "score points"), ("zhang900 all units pooled", "score points"),
                                         ("lobar25 total", "score points"),
                                         ("percent_involvement total", "percentage points"),
                                         ("mosmed total", "categories")])
def test_bland_altman_axes_give_the_scales_unit(val_figures, title, unit):
    g = _pairs_frame(hi=4 if title.startswith("mosmed") else 24)
    assert figures.bland_altman_png(g, [("ctscore_vs_reader", "ctscore", "alice")], title, Path("x.png"))
    ax = val_figures[0].axes[0]
    assert ax.get_ylabel() == f"ctscore - alice ({unit})" and unit in ax.get_xlabel()


def test_agreement_tables_say_the_unit_of_mae_and_bias(tmp_path):
    side = pd.DataFrame({"system": ["six_zone", "percent_involvement", "mosmed"], "unit": "total", "n": 12,
                         "readers_mae": 1.2, "ctscore_vs_readers_mae": 0.8, "readers_ba_bias": 0.1})
    page = val_report.write_html({"side_by_side": side}, [], tmp_path, {}).read_text()
    assert "<th scope='col'>MAE, bias in</th>" in page
    cells = re.findall(r"<td>([^<]*)</td>", page)
    assert {"score points", "percentage points", "categories"} <= set(cells)


# ---- 3. one colour scale per confusion figure --------------------------------------------------------------------

def test_confusion_panels_share_one_colour_scale_with_a_whole_number_colour_bar(val_figures):
    g = _pairs_frame(n=40, hi=4)
    g.loc[:19, "bob"] = 0.0  # bob's panel has a much larger count than alice's
    pairs = [("ctscore_vs_reader", "ctscore", "alice"), ("ctscore_vs_reader", "ctscore", "bob")]
    assert figures.confusion_png(g, pairs, list(range(5)), "mosmed total", Path("c.png"),
                                 ["CT-0", "CT-1", "CT-2", "CT-3", "CT-4"])
    [fig] = val_figures
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2
    limits = {im.get_clim() for im in images}
    assert len(limits) == 1
    vmin, vmax = limits.pop()
    assert vmin == 0 and vmax == max(int(im.get_array().max()) for im in images)
    bars = [ax for ax in fig.axes if not ax.images]
    assert len(bars) == 1  # one colour bar for the figure
    assert bars[0].get_ylabel() == "number of scans"
    fig.canvas.draw()
    ticks = [t for t in bars[0].get_yticks() if vmin <= t <= vmax]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_pooled_confusion_counts_targets_not_scans(val_figures):
    g = _pairs_frame(n=40, hi=4)
    figures.confusion_png(g, [("r", "ctscore", "alice")], list(range(5)), "six_zone all units pooled", Path("c.png"))
    bar = val_figures[0].axes[-1]
    assert bar.get_ylabel() == "number of targets (scan x unit)"


# ---- 4. size and resolution ----------------------------------------------------------------------------------------

def _six_pairs() -> tuple[pd.DataFrame, list[tuple[str, str, str]]]:
    g = _pairs_frame(n=60)
    rng = np.random.default_rng(3)
    for r in ("carol", "dave"):
        g[r] = np.clip(g["ctscore"] + rng.integers(-1, 2, len(g)), 0, 24)
    readers = ["alice", "bob", "carol", "dave"]
    return g, [("ctscore_vs_reader", "ctscore", r) for r in readers] + [("reader_vs_reader", "alice", "bob"),
                                                                        ("reader_vs_reader", "carol", "dave")]


def test_bland_altman_fits_a_journal_column_and_its_legend_covers_no_dot(val_figures):
    g, pairs = _six_pairs()
    figures.bland_altman_png(g, pairs, "six_zone total", Path("b.png"))
    [fig] = val_figures
    _readable_in_a_column(fig)
    assert all(ax.get_legend() is None for ax in fig.axes)  # the key is below the panels
    assert len(fig.legends) == 1
    assert max(len(row) for row in _rows(fig)) <= 3


@pytest.mark.parametrize("labels", [list(range(5)), list(range(25))])
def test_confusion_matrices_fit_a_journal_column(val_figures, labels):
    g, pairs = _six_pairs()
    if len(labels) == 5:
        g = (g / 6).round()
    figures.confusion_png(g, pairs, labels, "six_zone total", Path("c.png"))
    [fig] = val_figures
    _readable_in_a_column(fig)
    assert max(len(row) for row in _rows(fig, panels_only=True)) <= 3
    texts = [t for ax in fig.axes for t in ax.texts]
    assert all(t.get_fontsize() >= 7 for t in texts)


def _rows(fig, panels_only: bool = False) -> list[list]:
    axes = [ax for ax in fig.axes if not panels_only or ax.images]
    rows: dict[float, list] = {}
    for ax in axes:
        rows.setdefault(round(ax.get_position().y0, 3), []).append(ax)
    return list(rows.values())


def test_pictures_are_written_at_150_dpi_or_more_and_stay_small(tmp_path):
    from PIL import Image

    g, pairs = _six_pairs()
    ba = figures.bland_altman_png(g, pairs, "six_zone total", tmp_path / "bland_altman_six_zone_total.png")
    cm = figures.confusion_png(g, pairs, list(range(25)), "six_zone total", tmp_path / "confusion_six_zone_total.png")
    for p in (ba, cm):
        with Image.open(p) as im:
            assert im.info["dpi"][0] >= 149.9 and im.size[0] >= 150 * 6
        assert p.stat().st_size < 250_000, p.stat().st_size


def test_stats_figures_are_written_at_150_dpi_or_more(stats_run):
    from PIL import Image

    _, out = stats_run
    for name in stats_report.FIGURE_FILES:
        with Image.open(out / name) as im:
            assert im.info["dpi"][0] >= 149.9
            assert im.size[0] / im.info["dpi"][0] <= COLUMN_IN + 0.01  # at most a column wide
        assert (out / name).stat().st_size < 250_000


# ---- 5. summary.html structure --------------------------------------------------------------------------------------

def _check_page(page: str) -> None:
    assert re.search(r"<html lang=['\"]en['\"]>", page)
    assert re.search(r"<meta name=['\"]viewport['\"] content=['\"]width=device-width", page)
    assert "@media print" in page and re.search(r"@media print\{[^@]*thead th\{position:static\}", page)
    assert re.search(r"@media print\{[^@]*img\{max-width:100%\}", page)
    tables = re.findall(r"<table[^>]*>", page)
    assert tables and all("aria-labelledby=" in t or "<caption" in page for t in tables)
    for label in re.findall(r"aria-labelledby='([^']+)'", page):
        assert f"id='{label}'" in page  # each table is tied to a heading that exists
    headers = re.findall(r"<th(?=[\s>])[^>]*>", page)
    assert headers and all("scope=" in h for h in headers)
    assert "<thead>" in page


def _check_figures(page: str, names: list[str]) -> None:
    blocks = re.findall(r"<figure>(.*?)</figure>", page, re.S)
    assert len(blocks) == len(names)
    for block, name in zip(blocks, names, strict=True):
        alt = re.search(r"alt='([^']*)'", block).group(1)
        assert alt and alt != Path(name).stem and len(alt.split()) >= 8, alt
        assert f"src='{name}'" in block
        caption = re.search(r"<figcaption>(.+?)</figcaption>", block, re.S)
        assert caption and caption.group(1).strip()


def _provenance(page: str) -> str:
    top = page.split("<h2", 1)[0]
    assert f"ctscore {__version__}" in top
    return re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", top).group()


def test_stats_summary_is_accessible_and_printable(tmp_path):
    tab = pd.DataFrame({"term": ["il6"], "per": ["per 1 pg/mL"], "odds_ratio": [1.02], "p_value": [0.03]})
    summary = pd.DataFrame({"item": ["patients in clinical table"], "value": ["26"]})
    page = stats_report.write_html({"data_summary": summary, "liao2021_logistic": tab},
                                   [Path("liao2021_trajectories.png"), Path("li2020_score_by_period.png")],
                                   tmp_path, "t", {"studies": "liao2021"}, written_at=WHEN).read_text()
    _check_page(page)
    assert "<th scope='row'>patients in clinical table</th>" in page
    _check_figures(page, ["liao2021_trajectories.png", "li2020_score_by_period.png"])
    assert _provenance(page) == "2024-01-02T03:04:05Z"


def test_validation_summary_is_accessible_and_printable(tmp_path):
    summary = pd.DataFrame({"item": ["readers"], "value": ["alice, bob"]})
    side = pd.DataFrame({"system": ["six_zone"], "unit": ["total"], "n": [5], "readers_icc2_1": [0.9],
                         "ctscore_vs_readers_icc2_1": [7.93e-17], "readers_mae": [1.0], "within_readers_mae": ["yes"]})
    names = ["bland_altman_six_zone_total.png", "confusion_mosmed_total.png"]
    page = val_report.write_html({"data_summary": summary, "side_by_side": side}, [Path(n) for n in names],
                                 tmp_path, {"min_n": 3}, written_at=WHEN).read_text()
    _check_page(page)
    assert "<th scope='row'>readers</th>" in page
    _check_figures(page, names)
    assert _provenance(page) == "2024-01-02T03:04:05Z"


def test_the_pages_give_the_time_they_were_written_in_utc(tmp_path):
    before = datetime.now(timezone.utc).replace(microsecond=0)
    page = val_report.write_html({}, [], tmp_path, {}).read_text()
    written = datetime.strptime(_provenance(page), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert before <= written <= datetime.now(timezone.utc)


def test_pages_written_at_the_same_time_are_identical(tmp_path):
    """The provenance time is the only thing that differs between two runs on the same inputs."""
    tab = {"data_summary": pd.DataFrame({"item": ["a"], "value": ["1"]})}
    a = stats_report.write_html(tab, [], tmp_path, "t", {}, written_at=WHEN).read_bytes()
    b = stats_report.write_html(tab, [], tmp_path, "t", {}, written_at=WHEN).read_bytes()
    assert a == b


def test_stats_run_page_has_figures_with_captions(stats_run):
    _, out = stats_run
    page = (out / "summary.html").read_text()
    _check_page(page)
    _check_figures(page, list(stats_report.FIGURE_FILES))
    _provenance(page)


# ---- 6. number formatting --------------------------------------------------------------------------------------------

def test_validation_statistics_have_fixed_decimals_and_n_beside_the_verdict(tmp_path):
    side = pd.DataFrame({"system": ["six_zone"], "unit": ["total"], "n": [5], "ctscore_vs_readers_icc2_1": [7.93e-17],
                         "readers_ba_bias": [-1e-12], "readers_mae": [1.23456], "within_readers_mae": ["yes"],
                         "within_readers_icc": [""]})
    agree = pd.DataFrame({"system": ["six_zone"], "unit": ["total"], "rater_a": ["ctscore"], "rater_b": ["alice"],
                          "n": [6.0], "spearman_p": [2e-6], "mae": [0.5], "exact_agreement": [0.2]})
    page = val_report.write_html({"side_by_side": side, "agreement": agree}, [], tmp_path, {}).read_text()
    cells = re.findall(r"<td>([^<]*)</td>", page)
    assert "7.93e-17" not in page and not any(re.search(r"\de[-+]\d", c) for c in cells)
    assert "0.000" in cells and "-0.000" not in cells and "1.235" in cells and "0.200" in cells
    assert "&lt; 0.001" in cells and "6" in cells  # a p value below 0.001, a count as a whole number
    assert "yes (n=5)" in cells
    assert "<th scope='col'>exact_agreement (fraction, 0-1)</th>" in page


def test_validation_csv_keeps_full_precision(tmp_path):
    side = pd.DataFrame({"system": ["six_zone"], "unit": ["total"], "n": [5], "ctscore_vs_readers_icc2_1": [7.93e-17]})
    val_report.write_tables({"side_by_side": side}, tmp_path)
    assert pd.read_csv(tmp_path / "side_by_side.csv")["ctscore_vs_readers_icc2_1"].iloc[0] == 7.93e-17


def test_roc_method_names_its_bootstrap_resamples_and_seed():
    """The ROC interval's bootstrap was seeded (seed 0, 1000 resamples) without a word in the table (a
    reproducibility audit)."""
    import numpy as np
    import pandas as pd

    from scoring.stats.liao2021 import roc_table

    rng = np.random.default_rng(1)
    y = pd.Series([1] * 10 + [0] * 10)
    x = pd.Series(np.r_[rng.normal(2, 1, 10), rng.normal(0, 1, 10)])
    row = roc_table(y, x, "il6", unit="pg/mL").iloc[0]
    assert "1000 resamples, seed 0" in row["method"]
    assert roc_table(y, x, "il6").iloc[0]["ci_low"] == row["ci_low"]  # the same interval again
