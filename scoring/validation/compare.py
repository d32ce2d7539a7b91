"""Who is compared with whom: readers with each other, ctscore with each reader and with the consensus.

The comparison works on a wide table with one row per target (scan_id, system, unit) and one column
per rater: ``ctscore``, each reader, and ``consensus`` (the median of the readers who scored the
target, when at least two did). Per system the agreement is computed for each unit, for the total,
and for all units pooled (``all_units``: each scan x unit is one target), so that a few scans with
many units still give a usable estimate.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from scoring.validation import metrics
from scoring.validation.systems import ALL_UNITS, SIDES, SIX_ZONE_UNITS, SYSTEMS, TOTAL

log = logging.getLogger(__name__)

CTSCORE, CONSENSUS = "ctscore", "consensus"
KEY = ["scan_id", "system", "unit"]
#: Confusion matrices are kept for ordinal scores with at most this many categories.
MAX_CONFUSION_CATEGORIES = 25


def unit_order(system: str, units: Iterable[str]) -> list[str]:
    """``total`` first, then the system's units in anatomical order."""
    spec_units = SYSTEMS[system].units
    present = set(units)
    return [u for u in (TOTAL, *spec_units) if u in present]


def ratings_table(reference: pd.DataFrame, predictions: pd.DataFrame,
                  unit_targets_without_zones: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """Wide table: scan_id, system, unit, ctscore, <reader...>, consensus; and the reader names.

    Only targets some reader scored are kept; ctscore is NaN where the pipeline had no value. The warning that
    counts those says how many are unit targets that no zones.csv could give (``unit_targets_without_zones``, when
    the pipeline output has none), instead of blaming failed scans or missing zones for them.
    """
    readers = sorted(reference["reader"].unique())
    wide = reference.pivot_table(index=KEY, columns="reader", values="value", aggfunc="first")
    wide = wide.reindex(columns=readers)
    pred = predictions.drop_duplicates(KEY).set_index(KEY)["value"]
    wide.insert(0, CTSCORE, pred.reindex(wide.index).to_numpy())
    if len(readers) >= 2:
        vals = wide[readers]
        med = vals.median(axis=1, skipna=True)
        wide[CONSENSUS] = med.where(vals.notna().sum(axis=1) >= 2)
    wide = wide.reset_index()
    wide.columns.name = None
    # sort keys live in their own frame, so no reader name can collide with them
    order = {s: i for i, s in enumerate(SYSTEMS)}
    keys = pd.DataFrame({
        "system": wide["system"].map(order),
        "unit": [unit_order(s, [u, TOTAL, *SYSTEMS[s].units]).index(u) for s, u in zip(wide["system"], wide["unit"])],
        "scan_id": wide["scan_id"]}, index=wide.index)
    wide = wide.loc[keys.sort_values(["system", "unit", "scan_id"], kind="stable").index].reset_index(drop=True)
    missing = wide[CTSCORE].isna().sum()
    units = min(int(unit_targets_without_zones), int(missing))
    if units:
        rest = "" if missing == units else f", {missing - units} of a failed scan or a zone reported missing"
        log.warning("%d reference target(s) have no ctscore value: %d unit target(s) because zones.csv is absent, so "
                    "unit scores cannot be compared%s", missing, units, rest)
    elif missing:
        log.warning("%d reference target(s) have no ctscore value (failed scan or zone reported missing)", missing)
    return wide, readers


def rater_pairs(readers: list[str], has_consensus: bool) -> list[tuple[str, str, str]]:
    """(comparison, a, b): reader vs reader, ctscore vs each reader, ctscore vs consensus."""
    pairs = [("reader_vs_reader", a, b) for a, b in itertools.combinations(readers, 2)]
    pairs += [("ctscore_vs_reader", CTSCORE, r) for r in readers]
    if has_consensus:
        pairs.append(("ctscore_vs_consensus", CTSCORE, CONSENSUS))
    return pairs


def partition_of(unit: str) -> str:
    """Which partition of the lungs a percent_involvement unit belongs to (units of one never overlap)."""
    if unit in SIDES:
        return "right/left"
    if unit.startswith("lobe:"):
        return "lobe"
    return "six_zone" if unit in SIX_ZONE_UNITS else "zhang900"


def pooled_units(system: str, units: Iterable[str]) -> tuple[list[str], str]:
    """The units ``all_units`` pools, and a note when some present units are left out of the pool.

    Units of one system are disjoint regions, except percent_involvement's: a reference may give the
    percentage per lung, per six-zone zone, per zhang900 unit and per lobe, and a right lung holds its
    three zones. Pooling those would count the same lung several times, so percent_involvement pools the
    one partition with the most units in the reference (ties: right/left, six_zone, zhang900, lobe).
    """
    units = [u for u in units if u != TOTAL]
    if system != "percent_involvement":
        return units, ""
    by_part: dict[str, list[str]] = {}
    for u in units:
        by_part.setdefault(partition_of(u), []).append(u)
    if len(by_part) <= 1:
        return units, ""
    order = ["right/left", "six_zone", "zhang900", "lobe"]
    best = max(by_part, key=lambda p: (len(by_part[p]), -order.index(p)))
    left_out = [p for p in order if p in by_part and p != best]
    return by_part[best], (f"all_units pools the {best} units only: the {', '.join(left_out)} units overlap "
                           "them (same lung counted twice)")


def groups(wide: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(system, unit, rows) per unit, per total and per system's pooled units (see :func:`pooled_units`)."""
    out = []
    for system in [s for s in SYSTEMS if s in set(wide["system"])]:
        sw = wide[wide["system"] == system]
        units = unit_order(system, sw["unit"].unique())
        for u in units:
            out.append((system, u, sw[sw["unit"] == u]))
        pooled, _ = pooled_units(system, units)
        if len(pooled) > 1:
            out.append((system, ALL_UNITS, sw[sw["unit"].isin(pooled)]))
    return out


def labels_for(system: str, unit: str) -> list[int] | None:
    """The full category range of an ordinal (system, unit); None for continuous scores."""
    spec = SYSTEMS[system]
    if not spec.ordinal:
        return None
    lo, hi = spec.value_range(TOTAL) if unit == TOTAL or spec.unit_range is None else spec.unit_range
    return list(range(int(lo), int(hi) + 1))


def agreement_table(wide: pd.DataFrame, readers: list[str], min_n: int = 3) -> pd.DataFrame:
    """One row per (system, unit, comparison, rater_a, rater_b) with every agreement statistic."""
    pairs = rater_pairs(readers, CONSENSUS in wide.columns)
    rows = []
    for system, unit, g in groups(wide):
        labels = labels_for(system, unit)
        for comparison, a, b in pairs:
            both = g[[a, b]].dropna()
            stats = metrics.agreement(both[a].to_numpy(), both[b].to_numpy(), ordinal=labels is not None,
                                      labels=labels, min_n=min_n)
            n_scans = int(g.loc[both.index, "scan_id"].nunique())
            if a == CTSCORE:
                lacking = int((g[b].notna() & g[a].isna()).sum())
                if lacking:  # a failed scan or a missing unit: said in data_summary.csv, and here beside the n
                    gap = (f"{lacking} target(s) {b} scored have no ctscore value (failed scan or missing unit; "
                           "data_summary.csv)")
                    stats["note"] = "; ".join(x for x in (stats["note"], gap) if x)
            if unit == ALL_UNITS and n_scans < len(both) and min_n <= len(both):
                # the units of one scan are not independent targets: the F, t and rank tests assume they are
                pooled = (f"all_units pools {len(both)} targets from {n_scans} scan(s) as if independent: "
                          "CIs too narrow, p too small")
                stats["note"] = "; ".join(x for x in (stats["note"], pooled) if x)
            if unit == ALL_UNITS:
                _, partial = pooled_units(system, wide.loc[wide["system"] == system, "unit"].unique())
                stats["note"] = "; ".join(x for x in (stats["note"], partial) if x)
            rows.append({"system": system, "unit": unit, "comparison": comparison, "rater_a": a, "rater_b": b,
                         "n_scans": n_scans, **stats})
    cols = ["system", "unit", "comparison", "rater_a", "rater_b", "n", "n_scans", "kappa_qw",
            "icc2_1", "icc2_1_ci_low", "icc2_1_ci_high", "icc3_1", "icc3_1_ci_low", "icc3_1_ci_high",
            "spearman_rho", "spearman_p", "mae", "exact_agreement", "ba_bias", "ba_sd", "ba_loa_low",
            "ba_loa_high", "mean_a", "mean_b", "note"]
    return pd.DataFrame(rows).reindex(columns=cols)


SIDE_METRICS = ("kappa_qw", "icc2_1", "mae", "ba_bias")


def side_by_side(wide: pd.DataFrame, readers: list[str], min_n: int = 3) -> pd.DataFrame:
    """Per (system, unit): readers among themselves next to ctscore vs readers and vs consensus.

    Every figure here is computed on the same targets: those ctscore and every reader scored
    (``n`` of them, on ``n_scans`` scans), so that ctscore cannot look closer to the readers by
    having no value on hard cases (a failed scan, a zone reported missing). ``n_without_ctscore``
    counts the targets every reader scored but ctscore did not.

    ``readers_*`` is the mean over reader pairs, ``ctscore_vs_readers_*`` the mean over readers.
    ``within_readers_mae``: ctscore's mean absolute difference from the readers is no larger than the
    readers' mean absolute difference from each other; ``within_readers_icc``: ctscore's mean ICC(2,1)
    with the readers is no lower than the readers' mean ICC(2,1) with each other. Both empty when
    there is only one reader or fewer than ``min_n`` common targets (``note`` says which).
    """
    pairs = rater_pairs(readers, CONSENSUS in wide.columns)
    part_of = {"reader_vs_reader": "readers", "ctscore_vs_reader": "ctscore_vs_readers",
               "ctscore_vs_consensus": "ctscore_vs_consensus"}
    rows = []
    for system, unit, g in groups(wide):
        labels = labels_for(system, unit)
        read = g[readers].notna().all(axis=1)
        common = g[read & g[CTSCORE].notna()]
        row: dict[str, object] = {"system": system, "unit": unit, "n": len(common),
                                  "n_scans": int(common["scan_id"].nunique()),
                                  "n_without_ctscore": int((read & g[CTSCORE].isna()).sum())}
        stats: dict[str, list[dict]] = {name: [] for name in part_of.values()}
        for comparison, a, b in pairs:
            stats[part_of[comparison]].append(metrics.agreement(
                common[a].to_numpy(), common[b].to_numpy(), ordinal=labels is not None, labels=labels,
                min_n=min_n))
        means: dict[str, float] = {}
        for m in SIDE_METRICS:
            for name, found in stats.items():
                values = [float(st[m]) for st in found if not math.isnan(float(st[m]))]
                means[f"{name}_{m}"] = float(np.mean(values)) if values else math.nan
        row.update(means)
        why = ("one reader: nothing to compare ctscore's figures with" if len(readers) < 2 else
               f"{len(common)} target(s) scored by ctscore and every reader, fewer than {min_n}"
               if len(common) < min_n else "")
        notes = [why] if why else []
        for m, label, better in (("mae", "mae", np.less_equal), ("icc2_1", "icc", np.greater_equal)):
            r, c = means[f"readers_{m}"], means[f"ctscore_vs_readers_{m}"]
            ok = not why and not (math.isnan(r) or math.isnan(c))
            row[f"within_readers_{label}"] = ("yes" if better(c, r) else "no") if ok else ""
            if not why and not ok:
                notes.append(f"within_readers_{label}: {m} undefined on these targets (agreement.csv notes say why)")
        row["note"] = "; ".join(notes)
        rows.append(row)
    return pd.DataFrame(rows)


def confusion_table(wide: pd.DataFrame, readers: list[str],
                    max_categories: int = MAX_CONFUSION_CATEGORIES) -> pd.DataFrame:
    """Long confusion counts (system, unit, rater_a, rater_b, value_a, value_b, count) for ordinal
    scores with at most ``max_categories`` categories."""
    pairs = rater_pairs(readers, CONSENSUS in wide.columns)
    frames = []
    for system, unit, g in groups(wide):
        labels = labels_for(system, unit)
        if labels is None or len(labels) > max_categories:
            continue
        for comparison, a, b in pairs:
            both = g[[a, b]].dropna()
            if both.empty:
                continue
            cm = metrics.confusion(both[a].to_numpy(), both[b].to_numpy(), labels)
            long = cm.stack().rename("count").reset_index().rename(columns={"a": "value_a", "b": "value_b"})
            long.insert(0, "rater_b", b)
            long.insert(0, "rater_a", a)
            long.insert(0, "comparison", comparison)
            long.insert(0, "unit", unit)
            long.insert(0, "system", system)
            frames.append(long)
    cols = ["system", "unit", "comparison", "rater_a", "rater_b", "value_a", "value_b", "count"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
