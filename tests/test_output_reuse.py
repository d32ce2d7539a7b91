"""Re-using an output folder (a usability test): another configuration or model into an OUT replaced every earlier
result without a word; another INPUT into it left the earlier results there unannounced (run's tables listed only the
new series, ``ctscore aggregate`` then merged them all); run.json's ``seconds`` after a resume or an aggregate was
that call's 0.01 s, shown as "wall time 0.0 s"; an input with nothing eligible printed its error without the
"ctscore: error:" prefix and without saying where the inventory is; ``ctscore validate`` on a scans.csv without its
zones.csv blamed failed scans for the unit targets it could not compare.

Small generated series (as in tests/test_batch.py), the classical segmenter, no QC pictures or masks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from pipeline import __version__
from pipeline.batch import BatchOptions, aggregate
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import EXIT_NOTHING_ELIGIBLE
from pipeline.run import run_pipeline
from tests.scripts_loader import load_script

REPO = Path(__file__).resolve().parents[1]
FAST = ["resample.spacing_mm=[3,3,3]", "outputs.write_qc_png=false", "outputs.write_masks=false",
        "segmentation.method=classical"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """Two inputs: A with two generated chest series, B with one other series."""
    root = tmp_path_factory.mktemp("reuse_in")
    bench = load_script("benchmark_batch")
    for i in (0, 1):
        bench.write_chest_series(root / "A" / f"s{i}", i)
    bench.write_chest_series(root / "B" / "s2", 2)
    return root / "A", root / "B"


def _run(src: Path, out: Path, *overrides: str) -> dict:
    return run_pipeline(src, out, load_config(overrides=[*FAST, *overrides]), all_series=True,
                        batch=BatchOptions(progress=False))


def _messages(caplog, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= level and r.name == "pipeline.batch"]


def test_another_configuration_warns_before_its_results_replace_the_earlier_ones(tmp_path, inputs, caplog):
    src, _ = inputs
    out = tmp_path / "out"
    _run(src, out)
    old_hash = json.loads((out / "run.json").read_text())["config_sha256"]
    caplog.set_level(logging.INFO, logger="pipeline.batch")
    caplog.clear()
    assert _run(src, out)["n_run"] == 0  # the same configuration: resumed, no warning
    assert not [m for m in _messages(caplog) if "will be replaced" in m]

    caplog.clear()
    summary = _run(src, out, "scoring.min_involvement_ml=2.0")
    assert summary["n_run"] == 2
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.batch"]
    warned = [i for i, m in enumerate(lines) if "another ctscore version, configuration or model" in m]
    assert len(warned) == 1, lines
    new_hash = json.loads((out / "run.json").read_text())["config_sha256"]
    message = lines[warned[0]]
    assert message.startswith(f"2 earlier result(s) under {out} were made with another ctscore version, configuration "
                              "or model")
    assert f"(ctscore {__version__}, config sha256 {old_hash[:12]}..., model classical-" in message
    assert f"this run: ctscore {__version__}, config sha256 {new_hash[:12]}..." in message
    assert "will be replaced" in message
    started = next(i for i, m in enumerate(lines) if "to score" in m)
    assert warned[0] < started  # told before scoring starts

    caplog.clear()  # --overwrite asks for it: no warning
    run_pipeline(src, out, load_config(overrides=FAST), all_series=True,
                 batch=BatchOptions(progress=False, overwrite=True))
    assert not [m for m in _messages(caplog) if "will be replaced" in m]


def test_another_input_into_an_out_is_named_by_run_and_by_aggregate(tmp_path, inputs, caplog):
    a, b = inputs
    out = tmp_path / "out"
    _run(a, out)
    caplog.set_level(logging.INFO, logger="pipeline.batch")
    caplog.clear()
    summary = _run(b, out)
    assert summary["n_series"] == 1  # this run's tables: this run's input only
    warned = [m for m in _messages(caplog) if "not part of this run's input" in m]
    assert len(warned) == 1 and warned[0].startswith(f"2 result(s) under {out} (scan-")
    assert str(b.resolve()) in warned[0] and f"ctscore aggregate {out}" in warned[0]
    ids = {json.loads(p.read_text())["input_id"] for p in out.glob("scan-*/result.json")}
    assert len(ids) == 2 and all(i.startswith("input-") for i in ids)  # a hash: no input path in result.json

    caplog.clear()
    summary = aggregate(out)
    assert summary["n_series"] == 3
    merged = [m for m in _messages(caplog) if "different inputs" in m]
    assert len(merged) == 1, _messages(caplog)
    assert f"{a.resolve()}: 2 result(s)" in merged[0] and f"{b.resolve()}: 1 result(s)" in merged[0]
    run = json.loads((out / "run.json").read_text())
    assert run["input"] == sorted([str(a.resolve()), str(b.resolve())])

    caplog.clear()  # one input only: no such warnings
    out2 = tmp_path / "out2"
    _run(a, out2)
    _run(a, out2)
    aggregate(out2)
    assert not [m for m in _messages(caplog) if "input" in m], _messages(caplog)
    assert json.loads((out2 / "run.json").read_text())["input"] == str(a.resolve())


def test_scoring_time_is_kept_by_a_resume_and_by_aggregate(tmp_path, inputs):
    src, _ = inputs
    out = tmp_path / "out"
    _run(src, out)
    first = json.loads((out / "run.json").read_text())
    records = [json.loads(p.read_text()) for p in (out / ".status").glob("scan-*.json")]
    assert first["scoring_seconds"] == pytest.approx(sum(r["seconds"] for r in records), abs=0.02)
    assert first["scoring_seconds"] > 0

    assert _run(src, out)["n_run"] == 0  # a resume that scores nothing
    resumed = json.loads((out / "run.json").read_text())
    assert resumed["scoring_seconds"] == first["scoring_seconds"]
    report = (out / "report.html").read_text()
    assert "<dt>scoring time</dt>" in report and "summed over the 2 series" in report
    assert "wall time of this run (a resume counts only its own call)" in report

    aggregate(out)
    after = json.loads((out / "run.json").read_text())
    assert after["scoring_seconds"] == first["scoring_seconds"]
    report = (out / "report.html").read_text()
    assert "<dt>scoring time</dt>" in report and "wall time of the run before ctscore aggregate" in report


def test_nothing_eligible_is_an_error_line_naming_the_inventory(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    assert main(["run", str(empty), "-o", str(out), "-q"]) == EXIT_NOTHING_ELIGIBLE
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ctscore:")]
    assert len(err) == 1 and err[0].startswith("ctscore: error: NO_ELIGIBLE_SERIES: no eligible CT series"), err
    assert str(out / "inventory.csv") in err[0] and (out / "inventory.csv").is_file()


def test_validate_without_zones_csv_says_unit_scores_cannot_be_compared(tmp_path, caplog):
    from scoring.validation.api import run_validation
    from tests.test_validation_end_to_end import write_pred

    six = {u: 1 for u in ("right_upper", "right_middle", "right_lower", "left_upper", "left_middle", "left_lower")}
    zh = {f"{lung}_L{k}": 2 for lung in ("right", "left") for k in range(1, 6)}
    truths = {f"1.2.{i}": {"six_zone": six, "zhang900": zh, "percent_opacity": 5.0 + i} for i in range(4)}
    pred = write_pred(tmp_path / "pred", truths)
    (pred / "zones.csv").unlink()
    rows = [{"series_uid": uid, "system": "six_zone", "unit": unit, "reader": reader, "value": value}
            for uid in truths for reader in ("alice", "bob")
            for unit, value in (("total", 6), ("right_lower", 1))]
    pd.DataFrame(rows).to_csv(tmp_path / "readers.csv", index=False)
    caplog.set_level(logging.WARNING)
    run_validation(pred / "scans.csv", tmp_path / "readers.csv", draw=False)
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "failed scan or zone reported missing" in m], messages
    missing = [m for m in messages if "have no ctscore value" in m]
    assert missing == ["4 reference target(s) have no ctscore value: 4 unit target(s) because zones.csv is absent, "
                       "so unit scores cannot be compared"], messages
    assert [m for m in messages if m.startswith("zones.csv is absent") and "unit scores cannot be compared" in m]


def test_docs_describe_the_lobes_in_the_fingerprint_and_output_reuse():
    cluster = (REPO / "docs" / "cluster.md").read_text()
    fingerprint = cluster[cluster.index("* its input fingerprint"):cluster.index("Each attempt leaves a record")]
    assert "`--lobes` map" in fingerprint
    # docs/cluster.md is the one full text; README's "Running on a cluster" summarises it and links to it
    assert "not in this\nrun's input" in cluster and "merges results of\nseveral inputs" in cluster
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Running on a cluster"):]
    section = section[:section.index("\n## ")]
    assert "[docs/cluster.md](docs/cluster.md)" in section


def test_review_follow_ups_report_inputs_read_only_state_and_lobes_warnings(tmp_path):
    """A reviewer's findings on this file's changes: (1) after aggregate merged several inputs, report.html showed
    the input as a Python list; (2) the warning about results of another input put back their interrupted commits
    (a rename racing that input's own shards): it now only looks; (3) the --lobes warnings did not stand down for a
    folder that cannot be listed."""
    from pipeline.batch import scan_state
    from pipeline.outputs import previous_name
    from pipeline.report import _provenance
    from pipeline.run import lobes_dir_warnings

    html = _provenance({"input": ["/data/a", "/data/b"], "segmenter": {}})
    assert "2 folders (paths in run.json" in html and "/data/a" not in html and "['" not in html  # counted, not named
    old = previous_name(tmp_path / "scan-x")
    old.mkdir()
    (old / "result.json").write_text("{}")
    assert scan_state(tmp_path, "scan-x", restore=False) is None
    assert old.is_dir() and not (tmp_path / "scan-x").exists()  # left for its owner
    scan_state(tmp_path, "scan-x")
    assert (tmp_path / "scan-x").is_dir()  # the default still restores
    assert lobes_dir_warnings(tmp_path / "no-such", ["1.2.3"]) == []
