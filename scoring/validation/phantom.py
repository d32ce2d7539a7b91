"""An example reference table from the phantom's ground truth plus simulated readers.

``reader1`` copies the ground truth (what a perfect radiologist would score); each simulated reader
(``reader2``, ``reader3``, ...) perturbs it with a seeded random generator the way readers disagree:
a zone score moves one step up or down with probability ``flip_prob`` (six-zone 0-4; zhang900 to
the neighbouring possible extent x density^2 value), the percent involvement is scaled by
``1 + N(0, percent_sd)``, the MosMed category follows the perturbed percentage, and totals are the
sums of the reader's own unit scores. Used by ``scripts/make_reference_from_phantom.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import CTScoreError
from scoring.validation.systems import (
    MOSMED_CATEGORIES,
    SIX_ZONE_UNITS,
    TOTAL,
    ZHANG_UNIT_VALUES,
    ZHANG_UNITS,
    mosmed_to_ordinal,
)

log = logging.getLogger(__name__)

COLUMNS = ["series_uid", "scan_id", "system", "unit", "reader", "value"]
_ZHANG_SORTED = sorted(ZHANG_UNIT_VALUES)
_UID_KEYS = ("series_uid", "SeriesInstanceUID", "series_instance_uid")


def _find_uid(truth: Mapping[str, Any]) -> str | None:
    for k in _UID_KEYS:
        if isinstance(truth.get(k), str) and truth[k]:
            return truth[k]
    for v in truth.values():  # one level down, e.g. {"dicom": {"series_uid": ...}}
        if isinstance(v, Mapping):
            for k in _UID_KEYS:
                if isinstance(v.get(k), str) and v[k]:
                    return v[k]
    return None


def truth_entries(truth: Any) -> list[Mapping[str, Any]]:
    """The per-series ground-truth dicts in a ground_truth.json (one dict, a list, or ``{"series": [...]}``)."""
    if isinstance(truth, list):
        return [t for t in truth if isinstance(t, Mapping)]
    if isinstance(truth, Mapping):
        if "scores" not in truth and isinstance(truth.get("series"), list):
            return [t for t in truth["series"] if isinstance(t, Mapping)]
        return [truth]
    raise CTScoreError("TRUTH_SCHEMA", "ground truth must be a JSON object or a list of objects")


def truth_scores(entry: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    """(system, unit) -> value from one ground-truth entry; what is absent is left out."""
    scores = entry.get("scores", {})
    if not isinstance(scores, Mapping):
        return {}
    out: dict[tuple[str, str], float] = {}
    for system, units in (("six_zone", SIX_ZONE_UNITS), ("zhang900", ZHANG_UNITS)):
        per_unit = scores.get(system, {})
        if isinstance(per_unit, Mapping):
            for u in units:
                v = per_unit.get(u)
                if isinstance(v, (int, float)) and np.isfinite(v):
                    out[(system, u)] = float(v)
        total = scores.get(f"{system}_total")
        if isinstance(total, (int, float)) and np.isfinite(total):
            out[(system, TOTAL)] = float(total)
    po = scores.get("percent_opacity", entry.get("percent_opacity"))
    if isinstance(po, (int, float)) and np.isfinite(po):
        out[("percent_involvement", TOTAL)] = float(po)
    wal = scores.get("percent_well_aerated")
    if isinstance(wal, (int, float)) and np.isfinite(wal):
        out[("well_aerated", TOTAL)] = float(wal)
    cat = scores.get("mosmed_category")
    if cat is not None:
        try:
            out[("mosmed", TOTAL)] = mosmed_to_ordinal(cat)
        except ValueError:
            log.warning("ground truth: unreadable mosmed_category %r left out", cat)
    return out


def simulate_reader(truth: Mapping[tuple[str, str], float], rng: np.random.Generator, flip_prob: float = 0.3,
                    percent_sd: float = 0.15) -> dict[tuple[str, str], float]:
    """A second reader's scores: seeded one-step disagreements, totals re-summed from the units."""
    out: dict[tuple[str, str], float] = {}
    for system in ("six_zone", "zhang900"):
        units = {k: v for k, v in truth.items() if k[0] == system and k[1] != TOTAL}
        for key, v in units.items():
            step = int(rng.choice([-1, 1])) if rng.random() < flip_prob else 0
            if system == "six_zone":
                out[key] = float(min(4, max(0, v + step)))
            else:
                i = _ZHANG_SORTED.index(int(v)) if int(v) in ZHANG_UNIT_VALUES else 0
                out[key] = float(_ZHANG_SORTED[min(len(_ZHANG_SORTED) - 1, max(0, i + step))])
        if (system, TOTAL) in truth:
            out[(system, TOTAL)] = float(sum(out[k] for k in units)) if units else truth[(system, TOTAL)]
    po = truth.get(("percent_involvement", TOTAL))
    if po is not None:
        out[("percent_involvement", TOTAL)] = float(np.clip(po * (1 + rng.normal(0, percent_sd)), 0, 100))
    if ("mosmed", TOTAL) in truth:
        if po is not None:
            p = out[("percent_involvement", TOTAL)]
            cat = 0 if p <= 0 else 1 if p < 25 else 2 if p < 50 else 3 if p < 75 else 4
        else:
            step = int(rng.choice([-1, 1])) if rng.random() < flip_prob else 0
            cat = int(min(4, max(0, truth[("mosmed", TOTAL)] + step)))
        out[("mosmed", TOTAL)] = float(cat)
    wal = truth.get(("well_aerated", TOTAL))
    if wal is not None:  # a visual estimate: to the nearest 5 %, off by a few points (drawn last: the draws above
        # are as before)
        out[("well_aerated", TOTAL)] = float(np.clip(5 * round((wal + rng.normal(0, 4)) / 5), 0, 100))
    return out


def make_reference(truth: Any, *, n_simulated: int = 1, seed: int = 0, flip_prob: float = 0.3,
                   percent_sd: float = 0.15, scan_id: str | None = None) -> pd.DataFrame:
    """Long-form reference (docs/reference_schema.md) from a ground-truth dict: reader1 = truth,
    reader2.. = simulated. Scans are named by series_uid; ``scan_id`` names a scan whose truth has none
    (a truth with a series_uid keeps it, so several series never share one ``scan_id``; more than one
    entry without a series_uid is refused for the same reason).
    """
    entries = truth_entries(truth)
    if not entries:  # else a header-only reference, reported as written
        raise CTScoreError("TRUTH_SCHEMA", "ground truth holds no series entries (an empty list or \"series\": [])")
    without_uid = sum(_find_uid(e) is None for e in entries)
    if without_uid > 1:  # one scan_id for several series would pool their scores under one scan
        raise CTScoreError("TRUTH_SCHEMA", f"{without_uid} ground-truth entries name no series_uid; scan_id "
                           "names one scan only: give each entry its series_uid")
    rng = np.random.default_rng(seed)
    rows = []
    for entry in entries:
        uid = _find_uid(entry)
        if uid is None and not scan_id:
            raise CTScoreError("TRUTH_SCHEMA", "ground truth names no series_uid; pass scan_id")
        scores = truth_scores(entry)
        if not scores:
            raise CTScoreError("TRUTH_SCHEMA", f"ground truth for {uid or scan_id} has no usable scores")
        readers = {"reader1": scores}
        for i in range(n_simulated):
            readers[f"reader{i + 2}"] = simulate_reader(scores, rng, flip_prob, percent_sd)
        for reader, values in readers.items():
            for (system, unit), v in values.items():
                value: object = MOSMED_CATEGORIES[int(v)] if system == "mosmed" else (
                    round(v, 3) if system in ("percent_involvement", "well_aerated") else int(v))
                rows.append({"series_uid": uid or "", "scan_id": "" if uid else scan_id, "system": system,
                             "unit": unit, "reader": reader, "value": value})
    return pd.DataFrame(rows, columns=COLUMNS)
