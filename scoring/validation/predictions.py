"""ctscore's own scores, read from a pipeline output folder into the long form the comparison uses.

Input: ``OUT/scans.csv`` (one row per series) and, when present, ``OUT/zones.csv`` (one row per
scan x system x unit). Output: one row per (scan_id, system, unit) with ``value``; a unit the
pipeline reports as missing (zone not seen by the scan) has NaN and is left out of comparisons.
"""

from __future__ import annotations

import datetime
import logging
import math
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import CTScoreError
from pipeline.outputs import SETTINGS_COLUMNS
from scoring.validation.systems import SIDES, SYSTEMS, TOTAL, ZHANG_UNIT_VALUES, mosmed_to_ordinal

log = logging.getLogger(__name__)

SCAN_ID_COLUMNS = ("scan_id", "patient_id", "study_date", "series_uid", "status")

#: scans.csv column giving each system's total.
TOTAL_COLUMNS = {
    "six_zone": "six_zone_total",
    "zhang900": "zhang900_total",
    "percent_involvement": "percent_opacity",
    "mosmed": "mosmed_category",
    "lobar": "lobar20_total",
    "lobar25": "lobar25_total",
    "well_aerated": "percent_well_aerated",
}
#: scans.csv column giving each system's value for one lung (unit ``right`` / ``left``): ``{side}`` is the lung.
#: percent_involvement falls back to lesion / lung volume in results written before percent_opacity_<side>.
SIDE_COLUMNS = {"percent_involvement": "percent_opacity_{side}", "well_aerated": "percent_well_aerated_{side}"}


#: zones.csv columns every row is read by (with the value column of its system).
ZONE_KEY_COLUMNS = ("scan_id", "system", "lung", "unit")


def _scans_path(pred: Path) -> Path:
    return pred if pred.is_file() else pred / "scans.csv"


def load_scans(pred: str | Path) -> pd.DataFrame:
    """``scans.csv`` of a pipeline output (folder or file), identifiers as text, dates as YYYYMMDD."""
    path = _scans_path(Path(pred))
    if not path.is_file():
        raise CTScoreError("PRED_NOT_FOUND", "no scans.csv: --pred must be a ctscore output folder "
                           "(with scans.csv and zones.csv) or a scans.csv file", path)
    scans = _read_table(path, dtype={c: str for c in (*SCAN_ID_COLUMNS, *SETTINGS_COLUMNS)}, keep_default_na=True)
    missing = [c for c in ("scan_id",) if c not in scans.columns]
    if missing:
        raise CTScoreError("PRED_SCHEMA", f"scans.csv lacks column(s) {missing}", path)
    absent = [c for c in ("patient_id", "study_date", "series_uid", "status") if c not in scans.columns]
    for c in absent:
        scans[c] = pd.NA
    scans["study_date"] = scans["study_date"].map(normalise_date)
    if scans["scan_id"].duplicated().any():
        dup = scans.loc[scans["scan_id"].duplicated(), "scan_id"].iloc[0]
        raise CTScoreError("PRED_SCHEMA", f"scan_id {dup!r} appears more than once in scans.csv", path)
    # where the table came from, and the identifier columns it lacked (filled in empty above): a reference naming
    # scans by one of them is refused with PRED_SCHEMA, not left unmatched (schema.resolve_scans)
    scans.attrs.update(source=str(path), absent_columns=absent)
    return scans


def _read_table(path: Path, **kwargs) -> pd.DataFrame:
    """A table of the pipeline output; PRED_SCHEMA naming it when it is empty or not a readable UTF-8 CSV."""
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise CTScoreError("PRED_SCHEMA", f"{path.name} is empty (not even a header row)", path) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise CTScoreError("PRED_SCHEMA", f"{path.name} is not a readable CSV file: {exc}".strip(), path) from None


def _zones_path(pred: Path) -> Path:
    return (pred.parent if pred.is_file() else pred) / "zones.csv"


def needs_zones(system: str, unit: str) -> bool:
    """Whether ctscore's value for a reference target (``system`` x ``unit``) is read from zones.csv: every unit
    score; totals and the per-lung percentages are in scans.csv."""
    return unit != TOTAL and not (system in SIDE_COLUMNS and unit in SIDES)


def zone_targets_without_zones(pred: str | Path, targets: pd.DataFrame) -> int:
    """How many of the reference's targets (distinct scan x system x unit) need zones.csv (:func:`needs_zones`)
    when the pipeline output has none next to its scans.csv; 0 when it has one."""
    if _zones_path(Path(pred)).is_file() or targets.empty:
        return 0
    keys = targets[["scan_id", "system", "unit"]].drop_duplicates()
    return int(sum(needs_zones(s, u) for s, u in zip(keys["system"], keys["unit"])))


def needed_columns(targets: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The scans.csv and zones.csv columns that ctscore's values for the reference's targets (its ``system`` x
    ``unit`` pairs) are read from (see :func:`load_predictions`)."""
    in_scans: list[str] = []
    in_zones: list[str] = []
    for system, unit in targets[["system", "unit"]].drop_duplicates().itertuples(index=False):
        if unit == TOTAL:
            cols, into = [TOTAL_COLUMNS[system]], in_scans
        elif not needs_zones(system, unit):  # a lung's percentage
            cols = ([f"lesion_volume_ml_{unit}", f"lung_volume_ml_{unit}"] if system == "percent_involvement"
                    else [SIDE_COLUMNS[system].format(side=unit)])
            into = in_scans
        else:
            value = {"percent_involvement": "involvement_pct", "lobar": "extent_score"}.get(system, "unit_score")
            cols, into = [*ZONE_KEY_COLUMNS, value], in_zones
        into.extend(c for c in cols if c not in into)
    return in_scans, in_zones


def check_columns(pred: str | Path, scans: pd.DataFrame, reference: pd.DataFrame) -> None:
    """PRED_SCHEMA naming the file and the columns when scans.csv (or zones.csv, when there is one) lacks a column
    ctscore writes that the reference's systems and units need; a column of a system the reference does not score
    is not needed. Without zones.csv only totals can be compared (a warning, :func:`load_predictions`)."""
    pred = Path(pred)
    in_scans, in_zones = needed_columns(reference)
    missing = [c for c in in_scans if c not in scans.columns]
    if missing:
        raise CTScoreError("PRED_SCHEMA", f"scans.csv lacks column(s) {missing}, needed for the reference's "
                           f"{_systems_needing(missing)} scores", _scans_path(pred))
    zpath = _zones_path(pred)
    if in_zones and zpath.is_file():
        columns = _read_table(zpath, nrows=0).columns
        missing = [c for c in in_zones if c not in columns]
        if missing:
            raise CTScoreError("PRED_SCHEMA", f"zones.csv lacks column(s) {missing}, needed for the reference's "
                               "unit scores", zpath)


def _systems_needing(columns: list[str]) -> str:
    systems = {s for s, c in TOTAL_COLUMNS.items() if c in columns}
    if any(c.startswith(("lesion_volume_ml_", "lung_volume_ml_")) for c in columns):
        systems.add("percent_involvement")
    if any(c.startswith("percent_well_aerated_") for c in columns):
        systems.add("well_aerated")
    return ", ".join(s for s in TOTAL_COLUMNS if s in systems)


def normalise_date(value: object) -> str | None:
    """``YYYYMMDD`` from ``YYYYMMDD``, ``YYYY-MM-DD``, ``YYYY/MM/DD`` or ``YYYY.MM.DD`` (a spreadsheet's
    ``YYYY-MM-DD 00:00:00`` too); None for empty; anything else as written (``07.03.2020`` is not taken for
    a year 0703: it matches no scan, and the reference check says the format is not known)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    if text == "" or text.lower() == "nan":
        return None
    m = re.fullmatch(r"(\d{4})([-/.]?)(\d{2})\2(\d{2})(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?", text)
    if m:
        digits = m.group(1) + m.group(3) + m.group(4)
        try:  # 2020-02-30 is no date: kept as written, so that the reference check says the format is not known
            datetime.datetime.strptime(digits, "%Y%m%d")
        except ValueError:
            return text
        return digits
    if text.endswith(".0") and text[:-2].isdigit():  # a date read as a number
        return text[:-2]
    return text


def _unit_name(lung: object, unit: object) -> str:
    lung, unit = str(lung), str(unit)
    return unit if unit.startswith(f"{lung}_") else f"{lung}_{unit}"


def load_predictions(pred: str | Path, scans: pd.DataFrame | None = None,
                     needed: Iterable[str] | None = None, systems: Iterable[str] | None = None) -> pd.DataFrame:
    """ctscore's scores in long form: scan_id, system, unit, value (ok scans only).

    An empty value is missing; a value that is there but not a number (``ten``, ``12,5``) is refused with
    PRED_SCHEMA naming the file, the column and the scan (it was read as missing, and the comparison called its
    targets scored by the readers only). ``needed``: the columns the reference needs (:func:`needed_columns`);
    a non-number in another column is read as missing, with a warning. Default: every column is needed. A value
    outside its system's range is refused likewise when its column is needed and its system among ``systems``
    (those the reference scores; default all), else read as missing with a warning (:func:`_check_ranges`)."""
    pred = Path(pred)
    strict = None if needed is None else set(needed)
    if strict is not None:  # a lung's percent is read from percent_opacity_<side> where scans.csv has it
        strict |= {f"percent_opacity_{side}" for side in SIDES if f"lesion_volume_ml_{side}" in strict}

    def _number(v: object, path: Path, column: str, scan_id: object, where: str = "scan") -> float:
        return _value(v, path, column, scan_id, where, strict is None or column in strict)

    scans = load_scans(pred) if scans is None else scans
    ok = scans[scans["status"].fillna("ok").str.lower() == "ok"]
    spath = _scans_path(pred)
    rows: list[dict] = []
    for system, col in TOTAL_COLUMNS.items():
        if col not in ok.columns:
            continue
        for sid, v in zip(ok["scan_id"], ok[col]):
            if system == "mosmed":
                try:
                    v = mosmed_to_ordinal(v if isinstance(v, str) else math.nan)
                except ValueError:
                    log.warning("scan %s: unreadable mosmed_category %r", sid, v)
                    v = math.nan
            rows.append({"scan_id": sid, "system": system, "unit": TOTAL, "value": _number(v, spath, col, sid)})
    for side in ("right", "left"):
        les, lung, po = f"lesion_volume_ml_{side}", f"lung_volume_ml_{side}", f"percent_opacity_{side}"
        if po in ok.columns:  # the pipeline's own (empty for a lung not found: LUNG_NOT_FOUND, not its stray voxels)
            for sid, v in zip(ok["scan_id"], ok[po]):
                rows.append({"scan_id": sid, "system": "percent_involvement", "unit": side,
                             "value": _number(v, spath, po, sid)})
        elif les in ok.columns and lung in ok.columns:  # results of versions without the per-lung percentages
            for sid, a, b in zip(ok["scan_id"], ok[les], ok[lung]):
                a, b = _number(a, spath, les, sid), _number(b, spath, lung, sid)
                pct = 100.0 * a / b if b and b > 0 else math.nan
                rows.append({"scan_id": sid, "system": "percent_involvement", "unit": side, "value": pct})
        wal = SIDE_COLUMNS["well_aerated"].format(side=side)
        if wal in ok.columns:  # ctscore 0.11.0 and later (empty for a lung not found)
            for sid, v in zip(ok["scan_id"], ok[wal]):
                rows.append({"scan_id": sid, "system": "well_aerated", "unit": side,
                             "value": _number(v, spath, wal, sid)})

    zpath = _zones_path(pred)
    if zpath.is_file():
        zones = _read_table(zpath, dtype={"scan_id": str, "system": str, "lung": str, "unit": str})
        missing = [c for c in ZONE_KEY_COLUMNS if c not in zones.columns]
        if missing:  # refused by check_columns when the reference has unit scores
            log.warning("zones.csv lacks column(s) %s: only totals can be compared (%s)", missing, zpath)
            zones = pd.DataFrame(columns=list(ZONE_KEY_COLUMNS))
        zones = zones[zones["scan_id"].isin(set(ok["scan_id"]))]
        for z in zones.itertuples(index=False):
            unit = _unit_name(z.lung, z.unit)
            where = f"{z.system} {unit} of scan"

            def number(column: str, z=z, where=where) -> float:
                return _number(getattr(z, column, math.nan), zpath, column, z.scan_id, where)

            if z.system in ("six_zone", "zhang900"):
                rows.append({"scan_id": z.scan_id, "system": z.system, "unit": unit, "value": number("unit_score")})
                rows.append({"scan_id": z.scan_id, "system": "percent_involvement", "unit": unit,
                             "value": number("involvement_pct")})
            elif z.system == "lobar":
                score, pct = number("unit_score"), number("involvement_pct")
                rows.append({"scan_id": z.scan_id, "system": "lobar", "unit": unit, "value": number("extent_score")})
                rows.append({"scan_id": z.scan_id, "system": "lobar25", "unit": unit, "value": score})
                rows.append({"scan_id": z.scan_id, "system": "percent_involvement", "unit": f"lobe:{unit}",
                             "value": pct})
    elif strict is not None and strict & set(ZONE_KEY_COLUMNS):  # the reference has unit scores
        log.warning("zones.csv is absent (%s): the reference's unit scores cannot be compared (ctscore writes them "
                    "to zones.csv next to scans.csv); only totals and per-lung percentages are", zpath)
    else:
        log.warning("no zones.csv next to scans.csv: only totals can be compared (%s)", zpath)
    out = pd.DataFrame(rows, columns=["scan_id", "system", "unit", "value"])
    out = out.astype({"scan_id": str, "system": str, "unit": str, "value": float})
    return _check_ranges(out, spath, zpath, strict, None if systems is None else set(systems))


def _check_ranges(out: pd.DataFrame, spath: Path, zpath: Path, strict: set[str] | None,
                  systems: set[str] | None = None) -> pd.DataFrame:
    """Values outside their system's range (a six-zone total of 25, a zhang900 unit of 11, a percentage of 120):
    none that ctscore writes, but an edited or foreign table's. PRED_SCHEMA naming the file, column and scan for a
    column of a system the reference scores (``strict``, ``systems``: zones.csv's unit_score serves three systems;
    the comparison ended in a traceback, or sklearn dropped the target from kappa), else NaN with a warning. Vectorised: a consortium's tables hold hundreds of thousands of rows."""
    if out.empty:
        return out
    v = out["value"].to_numpy(float)
    total = (out["unit"] == TOTAL).to_numpy()
    rng = {name: (spec.total_range, spec.unit_range or spec.total_range) for name, spec in SYSTEMS.items()}
    lo = np.where(total, out["system"].map(lambda s: rng[s][0][0]), out["system"].map(lambda s: rng[s][1][0]))
    hi = np.where(total, out["system"].map(lambda s: rng[s][0][1]), out["system"].map(lambda s: rng[s][1][1]))
    integer = out["system"].map(lambda s: SYSTEMS[s].integer).to_numpy(bool)
    zhang_unit = ((out["system"] == "zhang900").to_numpy() & ~total)
    with np.errstate(invalid="ignore"):
        bad = np.isfinite(v) & ((v < lo) | (v > hi) | (integer & (v != np.round(v)))
                                | (zhang_unit & ~np.isin(v, sorted(ZHANG_UNIT_VALUES))))
    for i in np.flatnonzero(bad):
        system, unit, sid, value = out.at[i, "system"], out.at[i, "unit"], out.at[i, "scan_id"], v[i]
        in_scans, in_zones = needed_columns(pd.DataFrame({"system": [system], "unit": [unit]}))
        path, column = (spath, in_scans[0]) if in_scans else (zpath, in_zones[-1])
        why = SYSTEMS[system].check_value(unit, float(value)) or "outside its range"
        message = (f"{path.name}: {column} of scan {sid} ({system} {unit}) is {value:g}: {why}; ctscore writes no "
                   "such value (was the table edited, or made by another program?)")
        if (strict is None or column in strict) and (systems is None or system in systems):
            raise CTScoreError("PRED_SCHEMA", message, path)
        log.warning("%s; read as missing (%s)", message, path)
        out.at[i, "value"] = math.nan
    return out


def _value(v: object, path: Path, column: str, scan_id: object, where: str, refuse: bool) -> float:
    """``v`` as a float, NaN when empty; when it is not a number PRED_SCHEMA naming ``path``, ``column`` and the
    scan (``refuse``), else NaN with a warning."""
    if v is None or v is pd.NA or (isinstance(v, str) and v.strip() == ""):
        return math.nan
    try:
        return float(v.strip() if isinstance(v, str) else v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        message = f"{path.name}: {column} of {where} {scan_id} is {v!r}, not a number"
        if refuse:
            raise CTScoreError("PRED_SCHEMA", message, path) from None
        log.warning("%s; read as missing (%s)", message, path)
        return math.nan
