"""scripts/zone_shares.py: the share of each lung its smallest six-zone zone and its L1 slab hold (the figures behind
ZONE_SMALL's 5 % and SLAB_ABOVE_APEX)."""

from __future__ import annotations

import csv

from tests.scripts_loader import load_script


def test_the_sample_s_shares_are_printed_and_add_up(sample_run, capsys):
    script = load_script("zone_shares")
    rows = script.zone_shares(sample_run)
    assert {r["lung"] for r in rows} == {"right", "left"}
    zones = [r for r in csv.DictReader((sample_run / "zones.csv").open()) if r["system"] == "six_zone"]
    scans = next(csv.DictReader((sample_run / "scans.csv").open()))
    for r in rows:
        lung = [float(z["lung_ml"]) for z in zones if z["lung"] == r["lung"]]
        assert abs(sum(lung) - float(scans[f"lung_volume_ml_{r['lung']}"])) < 0.1  # the zones partition the lung
        assert abs(r["smallest_pct"] - 100 * min(lung) / sum(lung)) < 0.01
        assert 5 < r["smallest_pct"] < 100 / 3 and 0 <= r["l1_pct"] < 10
    assert script.main([str(sample_run)]) == 0
    out = capsys.readouterr().out
    assert "smallest zone:" in out and "ZONE_SMALL below 5 %" in out


def test_a_folder_without_tables_is_an_error(tmp_path, capsys):
    assert load_script("zone_shares").main([str(tmp_path)]) == 2
    assert "has no zones.csv and scans.csv" in capsys.readouterr().err
