"""ctscore's own scores, read from a pipeline output folder into the long form the comparison uses.

Input: ``OUT/scans.csv`` (one row per series) and, when present, ``OUT/zones.csv`` (one row per
scan x system x unit). Output: one row per (scan_id, system, unit) with ``value``; a unit the
pipeline reports as missing (zone not seen by the scan) has NaN and is left out of comparisons.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from pipeline.errors import CTScoreError
from scoring.validation.systems import TOTAL, mosmed_to_ordinal

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
}


def _scans_path(pred: Path) -> Path:
    return pred if pred.is_file() else pred / "scans.csv"


def load_scans(pred: str | Path) -> pd.DataFrame:
    """``scans.csv`` of a pipeline output (folder or file), identifiers as text, dates as YYYYMMDD."""
    path = _scans_path(Path(pred))
    if not path.is_file():
        raise CTScoreError("PRED_NOT_FOUND", "no scans.csv: --pred must be a ctscore output folder "
                           "(with scans.csv and zones.csv) or a scans.csv file", path)
    scans = pd.read_csv(path, dtype={c: str for c in SCAN_ID_COLUMNS}, keep_default_na=True)
    missing = [c for c in ("scan_id",) if c not in scans.columns]
    if missing:
        raise CTScoreError("PRED_SCHEMA", f"scans.csv lacks column(s) {missing}", path)
    for c in ("patient_id", "study_date", "series_uid", "status"):
        if c not in scans.columns:
            scans[c] = pd.NA
    scans["study_date"] = scans["study_date"].map(normalise_date)
    if scans["scan_id"].duplicated().any():
        dup = scans.loc[scans["scan_id"].duplicated(), "scan_id"].iloc[0]
        raise CTScoreError("PRED_SCHEMA", f"scan_id {dup!r} appears more than once in scans.csv", path)
    return scans


def normalise_date(value: object) -> str | None:
    """``YYYYMMDD`` from ``YYYYMMDD``, ``YYYY-MM-DD`` or ``YYYY/MM/DD``; None for empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    if text == "" or text.lower() == "nan":
        return None
    digits = text.replace("-", "").replace("/", "").replace(".", "")
    if len(digits) == 8 and digits.isdigit():
        return digits
    if text.endswith(".0") and text[:-2].isdigit():  # a date read as a number
        return text[:-2]
    return text


def _unit_name(lung: object, unit: object) -> str:
    lung, unit = str(lung), str(unit)
    return unit if unit.startswith(f"{lung}_") else f"{lung}_{unit}"


def load_predictions(pred: str | Path, scans: pd.DataFrame | None = None) -> pd.DataFrame:
    """ctscore's scores in long form: scan_id, system, unit, value (ok scans only)."""
    pred = Path(pred)
    scans = load_scans(pred) if scans is None else scans
    ok = scans[scans["status"].fillna("ok").str.lower() == "ok"]
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
            rows.append({"scan_id": sid, "system": system, "unit": TOTAL, "value": _float(v)})
    for side in ("right", "left"):
        les, lung = f"lesion_volume_ml_{side}", f"lung_volume_ml_{side}"
        if les in ok.columns and lung in ok.columns:
            for sid, a, b in zip(ok["scan_id"], ok[les], ok[lung]):
                a, b = _float(a), _float(b)
                pct = 100.0 * a / b if b and b > 0 else math.nan
                rows.append({"scan_id": sid, "system": "percent_involvement", "unit": side, "value": pct})

    zpath = (pred.parent if pred.is_file() else pred) / "zones.csv"
    if zpath.is_file():
        zones = pd.read_csv(zpath, dtype={"scan_id": str, "system": str, "lung": str, "unit": str})
        zones = zones[zones["scan_id"].isin(set(ok["scan_id"]))]
        for z in zones.itertuples(index=False):
            unit = _unit_name(z.lung, z.unit)
            score, pct = _float(getattr(z, "unit_score", math.nan)), _float(getattr(z, "involvement_pct", math.nan))
            if z.system in ("six_zone", "zhang900"):
                rows.append({"scan_id": z.scan_id, "system": z.system, "unit": unit, "value": score})
                rows.append({"scan_id": z.scan_id, "system": "percent_involvement", "unit": unit, "value": pct})
            elif z.system == "lobar":
                rows.append({"scan_id": z.scan_id, "system": "lobar", "unit": unit,
                             "value": _float(getattr(z, "extent_score", math.nan))})
                rows.append({"scan_id": z.scan_id, "system": "lobar25", "unit": unit, "value": score})
                rows.append({"scan_id": z.scan_id, "system": "percent_involvement", "unit": f"lobe:{unit}",
                             "value": pct})
    else:
        log.warning("no zones.csv next to scans.csv: only totals can be compared (%s)", zpath)
    out = pd.DataFrame(rows, columns=["scan_id", "system", "unit", "value"])
    return out.astype({"scan_id": str, "system": str, "unit": str, "value": float})


def _float(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
