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


def test_a_result_of_another_version_is_scored_again_on_resume(tmp_path):
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
