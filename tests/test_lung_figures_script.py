"""scripts/lung_figures.py: lung weight, aeration and the front/back split per series of an output folder (the
figures of docs/scoring.md)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.scripts_loader import load_script


def test_the_sample_s_figures_come_from_its_tables(sample_run, capsys):
    script = load_script("lung_figures")
    per_scan, per_lung = script.lung_figures(sample_run)
    scans = pd.read_csv(sample_run / "scans.csv").iloc[0]
    assert per_scan["series"].tolist() == ["sample_dicoms"]  # named by its input folder
    row = per_scan.iloc[0]
    assert row["tissue_g"] == pytest.approx(scans["lung_tissue_g"], abs=0.05)
    assert row["non_aerated_pct_of_tissue"] == pytest.approx(
        100 * scans["non_aerated_tissue_g"] / scans["lung_tissue_g"], abs=0.05)
    assert sorted(per_lung["lung"]) == ["left", "right"]
    zones = pd.read_csv(sample_run / "zones.csv")
    ap = zones[(zones["system"] == "anteroposterior") & (zones["lung"] == "right")].set_index("unit")
    right = per_lung[per_lung["lung"] == "right"].iloc[0]
    assert right["posterior_pct_of_lung"] == pytest.approx(
        100 * ap.loc["posterior", "lung_ml"] / ap["lung_ml"].sum(), abs=0.05)
    assert right["lesion_ml"] == pytest.approx(scans["lesion_volume_ml_right"], abs=0.05)
    assert 0 <= right["posterior_pct_of_lesion"] <= 100
    pc = zones[(zones["system"] == "peripheral_central") & (zones["lung"] == "right")].set_index("unit")
    assert right["peripheral_pct_of_lung"] == pytest.approx(
        100 * pc.loc["peripheral", "lung_ml"] / pc["lung_ml"].sum(), abs=0.05)
    assert right["peripheral_pct_of_lesion"] == pytest.approx(
        100 * pc.loc["peripheral", "lesion_ml"] / pc["lesion_ml"].sum(), abs=0.05)
    assert right["peripheral_minus_central_hu"] == pytest.approx(
        pc.loc["peripheral", "mean_lung_hu"] - pc.loc["central", "mean_lung_hu"], abs=0.05)
    assert script.main([str(sample_run)]) == 0
    printed = capsys.readouterr().out
    assert "posterior_pct_of_lesion" in printed and "peripheral_pct_of_lesion" in printed


def test_a_folder_without_tables_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        load_script("lung_figures").main([str(tmp_path)])
