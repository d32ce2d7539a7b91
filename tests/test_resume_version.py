"""Resume scores again what another ctscore version made: its scoring rules may differ (0.2.0 changed MosMed's
noise floor, the level tolerance and the lung outside the body), and old rows were kept next to new ones."""

from __future__ import annotations

import csv
import json
import shutil

from pipeline import __version__
from pipeline.cli import main
from pipeline.errors import EXIT_OK
from tests.test_user_lobes import SAMPLE, _scan_dir


def test_a_result_of_another_version_is_scored_again_on_resume(tmp_path, classical_memo):
    out = tmp_path / "out"
    args = ["run", str(SAMPLE), "-o", str(out), "-q", "--segmenter", "classical", "--set", "outputs.write_qc_png=false"]
    assert main(args) == EXIT_OK
    scan = _scan_dir(out)
    first = json.loads((scan / "result.json").read_text())
    assert first["ctscore_version"] == __version__
    # as if an earlier version had made it
    for path in (scan / "result.json", out / ".status" / f"{scan.name}.json"):
        data = json.loads(path.read_text())
        data["ctscore_version"] = "0.1.0"
        path.write_text(json.dumps(data))
    assert main(args) == EXIT_OK
    again = json.loads((scan / "result.json").read_text())
    assert again["ctscore_version"] == __version__
    assert next(csv.DictReader((out / "scans.csv").open()))["status"] == "ok"
    # and the same version is kept as it is (resume)
    stamp = (scan / "result.json").stat().st_mtime_ns
    assert main(args) == EXIT_OK
    assert (scan / "result.json").stat().st_mtime_ns == stamp
    shutil.rmtree(out)


def test_an_upgrade_warns_before_it_replaces_the_earlier_version_s_results(tmp_path, capsys, classical_memo):
    """Running a new version into an OUT of the earlier one replaced every result without a word (an upgrade audit:
    0.2.0 into a 0.1.0 folder said only '7 to score'); the warning named other configurations and models only."""
    out = tmp_path / "out"
    args = ["run", str(SAMPLE), "-o", str(out), "--segmenter", "classical", "--set", "outputs.write_qc_png=false"]
    assert main(args) == EXIT_OK
    scan = _scan_dir(out)
    for path in (scan / "result.json", out / ".status" / f"{scan.name}.json"):
        data = json.loads(path.read_text())
        data["ctscore_version"] = "0.1.0"
        path.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(args) == EXIT_OK
    warned = [line for line in capsys.readouterr().err.splitlines() if "will be replaced" in line]
    assert len(warned) == 1
    assert "1 earlier result(s)" in warned[0] and "(ctscore 0.1.0, config sha256" in warned[0]
    assert f"this run: ctscore {__version__}" in warned[0]
    assert main(args) == EXIT_OK  # the same version: resumed, no warning
    assert "will be replaced" not in capsys.readouterr().err


def test_rows_without_a_version_pooled_with_rows_with_one_are_noted():
    """A 0.1.0 scans.csv (no ctscore_version, model_id, scores_config_sha256 columns) concatenated with a 0.2.0 one
    went through stats and validate without a word."""
    import pandas as pd

    from pipeline.outputs import NOT_RECORDED, settings_note

    old = pd.DataFrame({"scan_id": ["a", "b"], "status": "ok", "segmenter": "monai"})
    new = pd.DataFrame({"scan_id": ["c"], "status": "ok", "segmenter": "monai", "ctscore_version": "0.3.0",
                        "model_id": "m", "scores_config_sha256": "x"})
    note = settings_note(pd.concat([old, new]))
    assert note is not None and f"ctscore_version 0.3.0 (1 scan), {NOT_RECORDED} (2 scans)" in note
    assert settings_note(old) is None and settings_note(new) is None


def test_versions_sort_by_their_numbers():
    """0.10.0 comes after 0.9.0 and 0.4.0 in the Methods text and run.json's ctscore_versions, not before them (a
    string sort put "0.10.0" first once the minor version reached two digits)."""
    from pipeline import version_key

    assert sorted(["0.10.0", "0.4.0", "0.9.0", "0.2.0", "1.0.0rc1", "0.10.1"], key=version_key) == [
        "0.2.0", "0.4.0", "0.9.0", "0.10.0", "0.10.1", "1.0.0rc1"]
