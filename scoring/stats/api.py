"""Python API of the statistics module: :func:`run_stats` (what ``ctscore stats`` calls)."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import CTScoreError
from scoring.stats import compare, li2020, liao2021, report, zhang2020
from scoring.stats.codebook import conform
from scoring.stats.cohort import Cohort, check_input, load_cohort
from scoring.stats.schema import canonical_analyte, close_column, misspelling_hint

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


_WITHIN_BIN = ("last", "first", "mean", "median", "max")
_LIST_OPTIONS = {"labs", "covariates", "timing_labs", "normal_labs", "categorical", "partial_covariates"}
_LAB_OPTIONS = {"labs", "timing_labs", "normal_labs"}  # lab names: spelled as in labs.csv or canonical


def _whole(study: str, key: str, value: Any, lowest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float)) or not np.isfinite(value) \
            or value != int(value) or value < lowest:
        raise CTScoreError("BAD_OPTION", f"{study}: {key} must be a whole number >= {lowest}, not {value!r}")
    return int(value)


def check_options(options: dict[str, dict[str, Any]], window_days: Any = 1) -> dict[str, dict[str, Any]]:
    """Check the per-study option values (names, types, ranges) before anything runs or is written; lab names
    are mapped to their canonical form (``"IL-6"`` -> ``"il6"``). Returns the checked copy; BAD_OPTION otherwise."""
    _whole("scan-lab matching", "window_days", window_days, 0)
    checked: dict[str, dict[str, Any]] = {}
    for s, kw in (options or {}).items():
        if s not in _OPTIONS:
            raise CTScoreError("BAD_OPTION", f"options given for unknown study {s!r}")
        if not isinstance(kw, dict):
            raise CTScoreError("BAD_OPTION", f"options for {s} must be a dict, not {kw!r}")
        bad = set(kw) - _OPTIONS[s]
        if bad:
            raise CTScoreError("BAD_OPTION", f"unknown option(s) for {s}: {sorted(bad)}; known: {sorted(_OPTIONS[s])}")
        out = dict(kw)
        for key, v in kw.items():
            if key == "min_n":
                out[key] = _whole(s, key, v, 2)
            elif key in ("followup_days", "admission_window_days"):
                out[key] = _whole(s, key, v, 0)
            elif key == "min_gap_days":
                out[key] = _whole(s, key, v, 1)
            elif key == "threshold":
                if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
                    raise CTScoreError("BAD_OPTION", f"{s}: threshold must be a number, not {v!r}")
            elif key == "within_bin" and v not in _WITHIN_BIN:
                raise CTScoreError("BAD_OPTION", f"{s}: within_bin must be one of {', '.join(_WITHIN_BIN)}, not {v!r}")
            elif key == "partial_method" and v not in ("spearman", "pearson"):
                raise CTScoreError("BAD_OPTION", f"{s}: partial_method must be spearman or pearson, not {v!r}")
            elif key == "score" and not isinstance(v, str):
                raise CTScoreError("BAD_OPTION", f"{s}: score must be a column name of scans.csv, not {v!r}")
            elif key in _LIST_OPTIONS and v is not None:
                if isinstance(v, str) or not all(isinstance(x, str) for x in v):
                    raise CTScoreError("BAD_OPTION", f"{s}: {key} must be a list of names, not {v!r}")
                out[key] = [canonical_analyte(x) for x in v] if key in _LAB_OPTIONS else list(v)
        checked[s] = out
    return checked


#: Clinical columns a study cannot run without (docs/clinical_schema.md, "required" column); the others are optional
#: and an analysis that lacks one says so in its table's note.
STUDY_COLUMNS = {"li2020": {"outcome": "survivor / non-survivor"}}


def check_study_columns(cohort: Cohort, studies: list[str]) -> None:
    """BAD_CLINICAL_DATA, before any output is written, when a study lacks a clinical column it requires: the message
    names the column, the study, a column that looks like its misspelling, the columns found and the file."""
    columns = list(cohort.clinical.columns)
    for s in studies:
        for col, values in STUDY_COLUMNS.get(s, {}).items():
            if col not in columns:
                others = [x for x in STUDIES if x in studies and x not in STUDY_COLUMNS]
                raise CTScoreError(
                    "BAD_CLINICAL_DATA",
                    f"{s} needs column {col!r} ({values}) in the clinical table{misspelling_hint(col, columns)}; "
                    f"found {columns}" + (f"; {' and '.join(others)} run without it (--study "
                                          + " or --study ".join(others) + ")" if others else ""),
                    cohort.clinical.attrs.get("source"))


def lab_option_notes(cohort: Cohort, options: dict[str, dict[str, Any]], studies: list[str]) -> list[str]:
    """A note (also logged) for each lab named in a study's ``labs``/``normal_labs``/``timing_labs`` option that is no
    lab column of the data (a typo of a lab name would otherwise go unused without a word), naming the labs there are
    and the nearest one."""
    notes = []
    available = list(cohort.analytes)
    for s in studies:
        for key in sorted(_LAB_OPTIONS & set(options.get(s, {}))):
            flag = "--normal-labs" if key == "normal_labs" else key
            compared = None
            if s == "zhang2020" and key == "normal_labs":  # only the labs zhang2020 compares across subgroups
                compared = [x for x in (options[s].get("labs") or zhang2020.LABS) if x in available]
            for name in options[s][key] or []:
                if name in available and (compared is None or name in compared):
                    continue
                if name in available:
                    notes.append(f"{s}: {flag} names {name!r}, which is in the lab table but not among the labs "
                                 f"{s} compares ({', '.join(compared) or 'none'}); it is not used")
                else:
                    near = close_column(name, available)
                    notes.append(f"{s}: {flag} names {name!r}, which is not a lab in the lab table"
                                 + (f"; did you mean {near!r}?" if near else ".")
                                 + f" Labs available: {', '.join(available) or 'none'}")
                log.warning(notes[-1])
    return notes


def resolve_studies(study: Any) -> list[str]:
    """``study`` ("all", one study's name, or a list/tuple of names) as the list of studies to run, in the order of
    :data:`STUDIES`; BAD_OPTION for anything else."""
    if isinstance(study, str):
        names = list(STUDIES) if study == "all" else [study]
    elif isinstance(study, (list, tuple, set, frozenset)) and study and all(isinstance(x, str) for x in study):
        names = list(STUDIES) if "all" in study else list(study)
    else:
        raise CTScoreError("BAD_OPTION", f"study must be 'all', one of {', '.join(STUDIES)}, or a list of them, "
                           f"not {study!r}")
    unknown = [s for s in names if s not in _RUNNERS]
    if unknown:
        raise CTScoreError("BAD_OPTION", f"unknown study {unknown[0]!r}; choose one of {', '.join(STUDIES)} or all")
    return [s for s in STUDIES if s in names]


#: The options ``ctscore stats`` sets for each study (``--persistent-threshold``, ``--followup-days``,
#: ``--normal-labs``, ``--min-n``): ``summary.html`` lists them, with their defaults when not given, and any other
#: option given, so that the command and :func:`run_stats` list the same settings.
_SHOWN_OPTIONS = {"liao2021": ("threshold", "min_n"), "zhang2020": ("followup_days", "normal_labs", "min_n"),
                  "li2020": ("min_n",)}


def _plain(v: Any) -> Any:
    """A value for the settings line: 5 for 5.0 (the command's float threshold), lists and numbers as such."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    return v


def options_used(study: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options of ``study`` that ``summary.html`` lists: those ``ctscore stats`` sets (their runner defaults
    when not given) and every other one given, in the order of the runner's parameters; empty lists and None left
    out (``normal_labs`` none)."""
    params = [k for k in inspect.signature(_RUNNERS[study]).parameters if k != "cohort"]
    defaults = {k: inspect.signature(_RUNNERS[study]).parameters[k].default for k in _SHOWN_OPTIONS[study]}
    merged = {**defaults, **options}
    return {k: _plain(merged[k]) for k in params if k in merged and merged[k] is not None and merged[k] != []}


def run_cohort(cohort: Cohort, study: str | list[str] | tuple[str, ...] = "all", out_dir: str | Path | None = None,
               options: dict[str, dict[str, Any]] | None = None, *, min_n: int = compare.MIN_N
               ) -> dict[str, pd.DataFrame]:
    """Run the analyses of ``study`` ("all", a study's name or a list of names) on an assembled cohort.

    ``options``: per-study keyword arguments, e.g. ``{"liao2021": {"threshold": 5}}``; ``min_n`` applies to every
    study whose options give none. When ``out_dir`` is given, CSV tables, PNG figures and ``summary.html`` are
    written there; the tables and figures a previous run left there are removed first
    (:func:`scoring.stats.report.remove_stale`: only this module's own file names).
    """
    studies = resolve_studies(study)
    min_n = _whole("all studies", "min_n", min_n, 2)
    options = check_options(options or {}, cohort.window_days)
    options = {s: {"min_n": min_n, **options.get(s, {})} for s in studies}
    for s in studies:
        score = options.get(s, {}).get("score")
        if score is not None and (score not in cohort.scans.columns
                                  or not pd.api.types.is_numeric_dtype(cohort.scans[score])):
            raise CTScoreError("BAD_OPTION", f"{s}: score {score!r} is not a numeric column of scans.csv")
    check_study_columns(cohort, studies)
    for note in lab_option_notes(cohort, options, studies):
        if note not in cohort.notes:
            cohort.notes.append(note)
    if out_dir is not None:  # inputs read and options checked: a failed run leaves no folder behind
        from pipeline.outputs import prepare_output_dir

        prepare_output_dir(out_dir)
    tables: dict[str, pd.DataFrame] = {"data_summary": cohort.data_summary()}
    figures: dict[str, Any] = {}
    for s in studies:
        log.info("running %s analyses", s)
        t, f = _RUNNERS[s](cohort, **options[s])
        tables.update(t)
        figures.update(f)
    tables["data_summary"] = cohort.data_summary()  # with the notes the analyses added (zhang2020)
    # every table with all the columns of its categories, whatever the data held: two sites' tables stack
    tables = {name: conform(name, df) for name, df in tables.items()}
    if out_dir is not None:
        out = Path(out_dir)
        report.remove_stale(out)  # another study's (or an undrawn figure's) files of the last run
        report.write_tables(tables, out, units=cohort.units)
        figs = report.write_figures(figures, out)
        settings = {"studies": ", ".join(studies), "scan-lab window (days)": cohort.window_days,
                    **{f"{s} options": options_used(s, options[s]) for s in studies}}
        if cohort.exclusions is not None:
            settings["exclusion list"] = cohort.exclusions.setting()
        report.write_html(tables, figs, out, "ctscore statistics: " + ", ".join(studies), settings,
                          notes=report.table_notes(options), headings=report.study_titles(options))
        log.info("wrote %d tables and %d figures to %s", len(tables), len(figs), out)
    return tables


#: The keyword arguments of :func:`run_stats` besides the per-study option dicts (named in its messages).
_KEYWORDS = ("window_days", "id_column", "min_n", "exclude")
#: ``ctscore stats`` flags that set one study's option, as the message for a keyword run_stats lacks spells them.
_STUDY_FLAGS = {"threshold": "--persistent-threshold", "persistent_threshold": "--persistent-threshold",
                "followup_days": "--followup-days", "normal_labs": "--normal-labs"}


def _unknown_keywords(unknown: dict[str, Any]) -> CTScoreError:
    """BAD_OPTION for keyword arguments of run_stats that are neither a global option nor a study: names what is
    accepted and, for a study's option given on its own (``threshold=5``), the dict it belongs in."""
    hints = []
    for k in sorted(unknown):
        key = "threshold" if k == "persistent_threshold" else k
        owners = [s for s in STUDIES if key in _OPTIONS[s]]
        if owners:
            flag = f" (ctscore stats {_STUDY_FLAGS[k]})" if k in _STUDY_FLAGS else ""
            hints.append(f"{k!r}{flag} is an option of {' and '.join(owners)}: pass "
                         + " and ".join(f"{s}={{{key!r}: ...}}" for s in owners))
        else:
            near = close_column(k, [*_KEYWORDS, *STUDIES])
            if near:
                hints.append(f"did you mean {near!r}?")
    return CTScoreError(
        "BAD_OPTION",
        f"run_stats: unknown keyword argument(s) {', '.join(repr(k) for k in sorted(unknown))}; accepted: "
        f"{', '.join(_KEYWORDS)} (all studies) and the per-study option dicts {', '.join(f'{s}={{...}}' for s in STUDIES)}"
        + (f" ({'; '.join(hints)})" if hints else "")
        + "; options of each study: " + "; ".join(f"{s}: {', '.join(sorted(_OPTIONS[s]))}" for s in STUDIES))


def run_stats(scores_dir: str | Path | pd.DataFrame, clinical_csv: str | Path | pd.DataFrame,
              labs_csv: str | Path | pd.DataFrame | None = None, study: str | list[str] | tuple[str, ...] = "all",
              out_dir: str | Path | None = None, *, window_days: int = 1, id_column: str | None = None,
              min_n: int = compare.MIN_N, liao2021: dict[str, Any] | None = None,
              zhang2020: dict[str, Any] | None = None, li2020: dict[str, Any] | None = None,
              exclude: str | Path | pd.DataFrame | None = None, **unknown: Any) -> dict[str, pd.DataFrame]:
    """Replay the source studies' analyses on a cohort; returns the tables by name (``ctscore stats``).

    ``scores_dir``: the pipeline's output folder (``scans.csv``, ``zones.csv``), a ``scans.csv`` path, or a DataFrame
    of ``scans.csv`` (then without ``zones.csv``: zhang2020's lung-side and level tables say ``not run``).
    ``clinical_csv``, ``labs_csv``: paths or DataFrames of those tables (checked by the same rules as the files).
    ``study``: ``"all"``, one of ``"liao2021"``, ``"zhang2020"``, ``"li2020"``, or a list/tuple of them.
    ``out_dir``: when given, CSV tables, PNG figures and ``summary.html`` are written there (the tables and figures
    of a previous run in that folder are removed first; no other file).

    Options for all studies, with the command's defaults: ``window_days`` (``--window-days``, 1: labs are matched
    to a scan when within this many days, nearest wins), ``id_column`` (``--id-column``: the clinical column
    holding the id the scores carry; default ``scores_patient_id`` when present, else ``patient_id``), ``min_n``
    (``--min-n``, 3: fewest values per group for a test to run).
    Per-study options are dicts: ``liao2021={"threshold": 5}`` (``--persistent-threshold``),
    ``zhang2020={"followup_days": 14, "normal_labs": ["ldh"]}`` (``--followup-days``, ``--normal-labs``),
    ``li2020={"within_bin": "last"}``; a study's ``min_n`` there wins over ``min_n``.
    ``exclude`` (``--exclude``): the scans excluded at QC review, a CSV path or a DataFrame of it (scan_id or
    series_uid, reason; :mod:`scoring.exclusions`): left out of every analysis and counted by reason in
    ``data_summary``; a row naming no scan of scans.csv refuses the run (EXCLUSIONS_INVALID).
    Any other keyword argument: BAD_OPTION naming the accepted ones.
    """
    if unknown:
        raise _unknown_keywords(unknown)
    given = {s: v for s, v in (("liao2021", liao2021), ("zhang2020", zhang2020), ("li2020", li2020)) if v is not None}
    options = check_options(given, window_days)  # BAD_OPTION before anything is read or written
    window_days = _whole("scan-lab matching", "window_days", window_days, 0)
    min_n = _whole("all studies", "min_n", min_n, 2)
    studies = resolve_studies(study)
    check_input(scores_dir, "scores", "scores_dir")
    if isinstance(scores_dir, (str, Path)):
        from pipeline.outputs import check_tables_current

        check_tables_current(scores_dir)  # TABLES_STALE: a run began scoring into that folder and did not finish
    check_input(clinical_csv, "clinical", "clinical_csv")
    check_input(labs_csv, "labs", "labs_csv")
    check_input(exclude, "exclude", "exclude")
    if out_dir is not None:
        from pipeline.outputs import check_analysis_output, check_output_dir

        check_output_dir(out_dir)  # OUTPUT_UNWRITABLE now, not after the analysis; the folder is made once the
        # inputs are read (run_cohort)
        check_analysis_output(out_dir, "stats", [scores_dir] if isinstance(scores_dir, (str, Path)) else [])
    cohort = load_cohort(scores_dir, clinical_csv, labs_csv, window_days=window_days, id_column=id_column,
                         exclude=exclude)
    return run_cohort(cohort, study=studies, out_dir=out_dir, options=options, min_n=min_n)
