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


def test_published_config_hash_does_not_reveal_the_salt():
    """config_sha256 stands beside the redacted config in run.json: hashed with the salt, guessed salts could be
    tested against it. It is the hash of the redacted config: the same whatever the site's salt, and still
    changed by any other setting."""
    from pipeline.config import config_hash

    a = load_config(overrides=["outputs.pseudonym_salt=hospital2024"])
    b = load_config(overrides=["outputs.pseudonym_salt=another-secret"])
    assert config_hash(a) == config_hash(b) == config_hash(redact_secrets(a))
    assert config_hash(a) != config_hash(load_config(overrides=["outputs.pseudonym_salt=hospital2024",
                                                                 "hu_classes.high_opacity_min_hu=-250"]))


def test_run_warns_about_the_builtin_salt_and_writes_the_inventory_parquet(tmp_path, caplog, classical_memo):
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


def test_atomic_writes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    """atomic_write_bytes and a series folder's commit flush the file contents (fsync) before renaming them into
    place, so a power cut cannot leave an empty file under the final name."""
    import os

    from pipeline import outputs

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(outputs.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(outputs.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    outputs.atomic_write_bytes(tmp_path / "a.json", b"{}")
    assert events[0] == "fsync" and "replace" in events and (tmp_path / "a.json").read_bytes() == b"{}"
    events.clear()
    folder = outputs.SeriesFolder(tmp_path / "out", "scan-a")
    folder.path("lungs.nii.gz").write_bytes(b"x" * 10)  # written by another library, not through our helper
    folder.commit()
    assert events.index("fsync") < events.index("replace")
    assert (tmp_path / "out" / "scan-a" / "lungs.nii.gz").read_bytes() == b"x" * 10


def test_stats_and_validate_report_an_unwritable_output_folder(tmp_path):
    """ctscore stats / validate: an output folder that cannot be made is OUTPUT_UNWRITABLE at once (it was a raw
    FileNotFoundError after the whole analysis)."""
    import pytest

    from pipeline.outputs import prepare_output_dir
    from scoring.stats.api import run_stats

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CTScoreError) as err:
        prepare_output_dir(blocker / "out")
    assert err.value.code == "OUTPUT_UNWRITABLE" and err.value.path == str(blocker / "out")
    with pytest.raises(CTScoreError) as err:
        run_stats(tmp_path / "no-scores", tmp_path / "no-clinical.csv", out_dir=blocker / "stats")
    assert err.value.code == "OUTPUT_UNWRITABLE"
