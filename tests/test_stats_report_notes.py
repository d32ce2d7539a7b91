"""Statistics summary: the sentence above a binned table says how it was binned; files are written whole."""

from __future__ import annotations

import inspect

import pandas as pd

from scoring.stats import li2020, liao2021, report, simulate
from scoring.stats.api import run_stats


def test_notes_follow_within_bin_and_their_defaults_match_the_runners():
    assert report._WITHIN_BIN_DEFAULT == {
        "liao2021": inspect.signature(liao2021.run).parameters["within_bin"].default,
        "li2020": inspect.signature(li2020.run).parameters["within_bin"].default}
    default = report.table_notes()
    assert "(the last scan/lab of the week)" in default["liao2021_weekly_tests"]
    assert "(the mean of the period's scans)" in default["li2020_period_comparison"]
    notes = report.table_notes({"li2020": {"within_bin": "last"}, "liao2021": {"within_bin": "max"}})
    assert "(the last scan of the period)" in notes["li2020_period_comparison"]
    assert "(the highest of the week's scans/labs)" in notes["liao2021_weekly_tests"]
    assert notes["zhang2020_subgroups"] == report.TABLE_NOTES["zhang2020_subgroups"]


def test_summary_html_says_which_value_per_period_was_taken(tmp_path):
    paths = simulate.write_cohort(tmp_path / "sim", seed=0)
    out = tmp_path / "stats"
    run_stats(paths["scores"], paths["clinical"], paths["labs"], study="li2020", out_dir=out,
              li2020={"within_bin": "median"})
    page = (out / "summary.html").read_text()
    assert "one value per patient (the median of the period&#x27;s scans)" in page
    assert "mean of the period" not in page
    # every figure and page is in place under its own name, no temporary file left behind
    assert (out / "li2020_score_by_period.png").stat().st_size > 1000
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_a_figure_that_fails_leaves_no_file(tmp_path):
    def broken(path: str) -> None:
        with open(path, "wb") as f:
            f.write(b"half a png")
        raise ValueError("no data to draw")

    def fine(path: str) -> None:
        pd.Series([1, 2, 3]).plot().figure.savefig(path)

    paths = report.write_figures({"bad.png": broken, "good.png": fine}, tmp_path)
    assert paths == [tmp_path / "good.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.png"]
