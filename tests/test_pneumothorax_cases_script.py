"""scripts/pneumothorax_cases.py, the figures behind PNEUMOTHORAX_SUSPECT, runs and measures what it says (on the
sample, classical segmenter; normal001's figures are in the script's docstring and pipeline/hu_checks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scripts_loader import load_script

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicoms"


def test_the_script_finds_a_sheet_and_nothing_in_a_bulla(capsys, classical_memo):
    if not (SAMPLE / "ground_truth.json").is_file():
        pytest.skip("sample_dicoms/ missing (run scripts/make_sample_dicoms.py)")
    script = load_script("pneumothorax_cases")
    assert script.main([str(SAMPLE), "--segmenter", "classical", "--cases", "lateral15", "giant_bulla"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == {"lateral15", "giant_bulla"}
    truth, found, other = (float(rows["lateral15"][i]) for i in (1, 2, 4))
    assert truth > 100 and found >= 0.8 * truth and other <= 0.02 * truth
    assert rows["giant_bulla"][1:3] == ["0", "0"] and rows["giant_bulla"][3] == "-" and rows["giant_bulla"][4] == "0"


def test_qc_scores_each_case_again_and_writes_its_picture(capsys, tmp_path, classical_memo):
    """--qc: the clean scan and the case scored through the pipeline (segmented again), the flag in the second table
    and each qc.png written."""
    if not (SAMPLE / "ground_truth.json").is_file():
        pytest.skip("sample_dicoms/ missing (run scripts/make_sample_dicoms.py)")
    script = load_script("pneumothorax_cases")
    out = tmp_path / "qc"
    assert script.main([str(SAMPLE), "--segmenter", "classical", "--cases", "lateral15", "--qc", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("case (scored again)"))
    rows = {line.split()[0]: line.split() for line in lines[start + 1:] if line.strip()}
    assert set(rows) == {"clean", "lateral15"}
    assert rows["clean"][1] == "-" and rows["lateral15"][1].startswith("PNEUMOTHORAX_SUSPECT:")
    assert int(rows["lateral15"][1].split(":")[1]) > 100
    assert rows["clean"][4] == "6"  # the sample's six-zone, as scanned
    assert sorted(p.name for p in out.iterdir()) == ["clean.png", "lateral15.png"]
