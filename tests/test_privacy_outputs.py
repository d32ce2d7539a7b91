"""Pseudonym salt kept out of run.json, a warning while the built-in salt is used, the inventory's Parquet twin,
and output folders that cannot be written reported as such."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from pipeline.config import load_config
from pipeline.errors import CTScoreError
from pipeline.outputs import DEFAULT_SALT
from pipeline.run import redact_secrets, run_pipeline

REPO = Path(__file__).resolve().parents[1]


def test_site_salt_is_redacted_the_builtin_one_shown():
    cfg = load_config(overrides=["outputs.pseudonym_salt=our-secret-2026"])
    out = redact_secrets(cfg)
    assert out["outputs"]["pseudonym_salt"].startswith("<redacted")
    assert cfg["outputs"]["pseudonym_salt"] == "our-secret-2026"  # the config itself untouched
    assert "our-secret-2026" not in json.dumps(out)
    assert redact_secrets(load_config())["outputs"]["pseudonym_salt"] == DEFAULT_SALT
    assert redact_secrets(None) is None


def test_run_warns_about_the_builtin_salt_and_writes_the_inventory_parquet(tmp_path, caplog):
    cfg = load_config(overrides=["segmentation.method=classical", "outputs.write_qc_png=false",
                                 "outputs.write_masks=false"])
    with caplog.at_level(logging.WARNING, logger="pipeline.run"):
        run_pipeline(REPO / "sample_dicoms", tmp_path / "out", cfg)
    assert any("built-in salt" in r.getMessage() for r in caplog.records)
    csv = pd.read_csv(tmp_path / "out" / "inventory.csv")
    pq = pd.read_parquet(tmp_path / "out" / "inventory.parquet")
    assert list(pq.columns) == list(csv.columns) and len(pq) == len(csv)
    assert set(pq["file_status"]) == set(csv["file_status"])


def test_unwritable_output_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    try:
        run_pipeline(REPO / "sample_dicoms", blocker / "out", load_config())
    except CTScoreError as exc:
        assert exc.code == "OUTPUT_UNWRITABLE" and exc.path == str(blocker / "out")
    else:
        raise AssertionError("expected OUTPUT_UNWRITABLE")
