"""Validation: ``all_units`` pools disjoint regions only (percent_involvement units overlap)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scoring.validation.api import validate_frames
from scoring.validation.compare import pooled_units

ZONES = ("right_upper", "right_middle", "right_lower", "left_upper", "left_middle", "left_lower")


def _frames(units, n_scans=4, seed=0):
    rng = np.random.default_rng(seed)
    ref, pred = [], []
    for s in range(n_scans):
        for u in units:
            v = float(rng.uniform(0, 60))
            for reader, d in (("alice", 0.0), ("bob", float(rng.normal(0, 3)))):
                ref.append({"scan_id": f"s{s}", "system": "percent_involvement", "unit": u, "reader": reader,
                            "value": float(np.clip(v + d, 0, 100))})
            pred.append({"scan_id": f"s{s}", "system": "percent_involvement", "unit": u, "value": v})
    return pd.DataFrame(ref), pd.DataFrame(pred)


def test_percent_per_lung_and_per_zone_are_not_pooled_together():
    ref, pred = _frames(("right", "left", *ZONES))
    agree = validate_frames(ref, pred)["agreement"].set_index(["unit", "rater_a", "rater_b"])
    pooled = agree.loc[("all_units", "alice", "bob")]
    # the six zones of four scans, not 8 targets per scan (each lung counted twice)
    assert (pooled["n"], pooled["n_scans"]) == (24, 4)
    assert "pools the six_zone units only: the right/left units overlap them" in pooled["note"]
    # each unit keeps its own row
    assert agree.loc[("right", "alice", "bob"), "n"] == 4 and agree.loc[("left_lower", "alice", "bob"), "n"] == 4


def test_one_partition_is_pooled_whole_and_other_systems_are_unchanged():
    ref, pred = _frames(("right", "left"))
    pooled = validate_frames(ref, pred)["agreement"].set_index(["unit", "rater_a", "rater_b"]).loc[
        ("all_units", "alice", "bob")]
    assert pooled["n"] == 8 and "pools the" not in pooled["note"]
    assert pooled_units("six_zone", ["total", *ZONES]) == (list(ZONES), "")
    lobes = [f"lobe:{x}" for x in ("right_upper", "right_middle", "right_lower", "left_upper", "left_lower")]
    units, note = pooled_units("percent_involvement", ["total", "right", "left", *lobes])
    assert units == lobes and note.startswith("all_units pools the lobe units only: the right/left units")
    # a tie goes to the coarser partition, deterministically
    units, note = pooled_units("percent_involvement", ["right", "left", "lobe:right_upper", "lobe:left_upper"])
    assert units == ["right", "left"] and "the lobe units overlap" in note


def test_the_pooled_figure_names_the_partition(tmp_path, monkeypatch):
    from scoring.validation import figures

    titles = []
    monkeypatch.setattr(figures, "bland_altman_png", lambda g, pairs, title, path: titles.append((title, len(g))))
    ref, pred = _frames(("right", "left", *ZONES))
    from scoring.validation.compare import ratings_table

    wide, readers = ratings_table(ref, pred)
    figures.write_figures(wide, readers, tmp_path)
    assert ("percent_involvement six_zone units pooled", 24) in titles
