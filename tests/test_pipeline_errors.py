"""The run over odd inputs: named failures, inventory written, exit codes."""

from __future__ import annotations

import pandas as pd

from pipeline.cli import main
from pipeline.errors import EXIT_INPUT_UNREADABLE, EXIT_NOTHING_ELIGIBLE, EXIT_SOME_FAILED
from tests.dicom_factory import write_series


def test_series_without_lungs_is_a_named_failure(tmp_path):
    """A CT with no lung in it (here a small water-and-air phantom) fails with NO_LUNG_FOUND, not 'ok'."""
    src = tmp_path / "in"
    write_series(src, n_slices=16, size=32)
    out = tmp_path / "out"
    code = main(["run", str(src), "-o", str(out), "-q", "--segmenter", "classical"])
    assert code == EXIT_SOME_FAILED
    failures = pd.read_csv(out / "failures.csv")
    assert failures["code"].tolist() == ["NO_LUNG_FOUND"]
    inventory = pd.read_csv(out / "inventory.csv")
    assert (inventory["file_status"] == "used").sum() == 16


def test_nothing_eligible_and_missing_input_exit_codes(tmp_path):
    (tmp_path / "notes.txt").write_text("not DICOM")
    assert main(["run", str(tmp_path), "-o", str(tmp_path / "out"), "-q"]) == EXIT_NOTHING_ELIGIBLE
    inv = pd.read_csv(tmp_path / "out" / "inventory.csv")
    assert inv.loc[0, "file_code"] == "NOT_DICOM"
    assert main(["run", str(tmp_path / "missing"), "-o", str(tmp_path / "out2"), "-q"]) == EXIT_INPUT_UNREADABLE
