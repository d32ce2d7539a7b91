"""Python API of the statistics module: :func:`run_stats` (what ``ctscore stats`` calls)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import CTScoreError
from scoring.stats import li2020, liao2021, report, zhang2020
from scoring.stats.cohort import Cohort, load_cohort

log = logging.getLogger(__name__)

STUDIES = ("liao2021", "zhang2020", "li2020")
_RUNNERS = {"liao2021": liao2021.run, "zhang2020": zhang2020.run, "li2020": li2020.run}
_OPTIONS = {
    "liao2021": {"score", "threshold", "within_bin", "labs", "covariates", "timing_labs", "admission_window_days",
                 "min_n"},
    "zhang2020": {"score", "labs", "normal_labs", "categorical", "followup_days", "min_gap_days",
                  "partial_covariates", "partial_method", "min_n"},
    "li2020": {"score", "within_bin", "labs", "min_n"},
}


def run_cohort(cohort: Cohort, study: str = "all", out_dir: str | Path | None = None,
               options: dict[str, dict[str, Any]] | None = None) -> dict[str, pd.DataFrame]:
    """Run the analyses of ``study`` (a key or ``all``) on an assembled cohort.

    ``options``: per-study keyword arguments, e.g. ``{"liao2021": {"threshold": 5}}``.
    When ``out_dir`` is given, CSV tables, PNG figures and ``summary.html`` are written there.
    """
    studies = list(STUDIES) if study == "all" else [study]
    unknown = [s for s in studies if s not in _RUNNERS]
    if unknown:
        raise CTScoreError("BAD_OPTION", f"unknown study {unknown[0]!r}; choose one of {', '.join(STUDIES)} or all")
    options = options or {}
    for s, kw in options.items():
        if s not in _OPTIONS:
            raise CTScoreError("BAD_OPTION", f"options given for unknown study {s!r}")
        bad = set(kw) - _OPTIONS[s]
        if bad:
            raise CTScoreError("BAD_OPTION", f"unknown option(s) for {s}: {sorted(bad)}; known: {sorted(_OPTIONS[s])}")
    tables: dict[str, pd.DataFrame] = {"data_summary": cohort.data_summary()}
    figures: dict[str, Any] = {}
    for s in studies:
        log.info("running %s analyses", s)
        t, f = _RUNNERS[s](cohort, **options.get(s, {}))
        tables.update(t)
        figures.update(f)
    if out_dir is not None:
        out = Path(out_dir)
        report.write_tables(tables, out)
        figs = report.write_figures(figures, out)
        settings = {"studies": ", ".join(studies), "scan-lab window (days)": cohort.window_days,
                    **{f"{s} options": v for s, v in options.items() if v}}
        report.write_html(tables, figs, out, "ctscore statistics: " + ", ".join(studies), settings)
        log.info("wrote %d tables and %d figures to %s", len(tables), len(figs), out)
    return tables


def run_stats(scores_dir: str | Path, clinical_csv: str | Path, labs_csv: str | Path | None = None,
              study: str = "all", out_dir: str | Path | None = None, *, window_days: int = 1,
              id_column: str | None = None, **options: Any) -> dict[str, pd.DataFrame]:
    """Replay the source studies' analyses on a cohort; returns the tables by name.

    ``scores_dir``: the pipeline's output folder (``scans.csv``, ``zones.csv``) or a ``scans.csv`` path.
    ``window_days``: labs are matched to a scan when within this many days (nearest wins).
    ``id_column``: clinical column holding the id the scores carry (default ``scores_patient_id`` when
    present, else ``patient_id``). Other keyword arguments are per-study option dicts, e.g.
    ``liao2021={"threshold": 5}``, ``zhang2020={"normal_labs": ["ldh"]}``, ``li2020={"within_bin": "last"}``.
    """
    if out_dir is not None:
        from pipeline.outputs import prepare_output_dir

        prepare_output_dir(out_dir)  # OUTPUT_UNWRITABLE now, not after the analysis
    cohort = load_cohort(scores_dir, clinical_csv, labs_csv, window_days=window_days, id_column=id_column)
    return run_cohort(cohort, study=study, out_dir=out_dir, options=options)
