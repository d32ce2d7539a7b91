"""An unexpected error in one scan (a bug, not bad input) is recorded with the series folder and the traceback,
and the scan id stays the same when a stray file splits the series into stacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom

from pipeline.batch import Task, record_path, tasks_for, write_record
from pipeline.config import load_config
from pipeline.inventory import build_inventory
from pipeline.outputs import scan_id_for
from pipeline.run import process_series

REPO = Path(__file__).resolve().parents[1]


class Broken:
    name = "broken"
    model_id = "broken-1"

    def segment(self, hu, spacing):
        raise KeyError("lungs")


def test_internal_error_names_the_series_folder_and_keeps_the_traceback(tmp_path):
    files = sorted(str(p) for p in (REPO / "sample_dicoms").iterdir() if p.is_file() and p.suffix != ".json")
    cfg = load_config(overrides=["outputs.write_qc_png=false"])
    st = process_series(files, cfg, tmp_path / "out", "scan-x", {}, Broken())
    assert st["status"] == "failed" and st["code"] == "INTERNAL_ERROR"
    assert st["message"] == "KeyError: 'lungs'"
    assert Path(st["path"]) == (REPO / "sample_dicoms").resolve()
    assert "segment" in st["traceback"] and "KeyError" in st["traceback"]
    task = Task("scan-x", "1.2.3", files, {}, "f" * 64)
    write_record(tmp_path / "out", task, st, "c" * 64, "broken-1")
    rec = json.loads(record_path(tmp_path / "out", "scan-x").read_text())
    assert rec["path"] == st["path"] and "KeyError" in rec["traceback"]
    assert not (tmp_path / "out" / "scan-x").exists()  # nothing half-written under the final name


def test_scan_id_hashes_the_series_uid_when_a_stray_file_splits_the_series(tmp_path):
    cfg = load_config()
    src = tmp_path / "series"
    shutil.copytree(REPO / "sample_dicoms", src)
    inv = build_inventory(src, cfg)
    (ident,) = [t.scan_id for t in tasks_for(inv.chosen, cfg)]
    uid = inv.chosen[0].series_uid
    assert ident == scan_id_for(uid, cfg["outputs"]["pseudonym_salt"])
    # one slice loses its position: it no longer stacks with the others
    f = sorted(p for p in src.iterdir() if p.is_file())[0]
    ds = pydicom.dcmread(f)
    del ds.ImagePositionPatient
    ds.save_as(f)
    inv2 = build_inventory(src, cfg)
    assert [c.series_uid for c in inv2.chosen] == [uid]
    assert inv2.chosen[0].stack_id != uid  # the series is split and its stacks renumbered
    (ident2,) = [t.scan_id for t in tasks_for(inv2.chosen, cfg)]
    assert ident2 == ident


def test_an_interrupted_commit_is_undone(tmp_path, monkeypatch):
    """The process dies between the two renames of a commit: the next look at the scan puts the earlier
    folder back instead of losing it."""
    import os

    import pytest

    import pipeline.outputs as outputs
    from pipeline.batch import scan_state

    out = tmp_path / "out"
    first = outputs.SeriesFolder(out, "scan-a")
    first.path("result.json").write_text(json.dumps({"scores": {"series_uid": "1.2"}, "input_fingerprint": "f"}))
    first.commit()
    second = outputs.SeriesFolder(out, "scan-a")
    second.path("result.json").write_text("{}")
    real = os.replace
    calls = []

    def die_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(outputs.os, "replace", die_on_second)
    with pytest.raises(KeyboardInterrupt):
        second.commit()
    monkeypatch.setattr(outputs.os, "replace", real)
    assert not (out / "scan-a").exists() and (out / ".scan-a.old").is_dir()
    state = scan_state(out, "scan-a")
    assert state is not None and state["status"] == "ok" and state["series_uid"] == "1.2"
    assert (out / "scan-a" / "result.json").exists() and not (out / ".scan-a.old").exists()


def test_local_executor_refuses_a_gpu_index():
    """Each local worker sees one pinned GPU: cuda:N would be wrong there, so it is refused before the cluster
    starts, with the way out; cuda / auto / cpu pass, and without GPUs nothing is checked."""
    import pytest

    from pipeline.batch import check_local_gpu_device
    from pipeline.errors import ConfigError

    for dev in ("cuda:1", "GPU:0"):
        cfg = load_config(overrides=[f"segmentation.device={dev}"])
        with pytest.raises(ConfigError, match="use --device cuda"):
            check_local_gpu_device(cfg, n_gpus=2)
        check_local_gpu_device(cfg, n_gpus=0)
    for dev in ("cuda", "auto", "cpu"):
        check_local_gpu_device(load_config(overrides=[f"segmentation.device={dev}"]), n_gpus=2)


def test_failed_rows_keep_patient_and_date_and_inventory_flags_reach_the_result(tmp_path, monkeypatch,
                                                                               classical_memo):
    """A failed scan's row in scans.csv keeps its (pseudonymous) patient id and study date, so that a reference
    table naming scans by patient and date still matches it; the inventory's flags (here MISSING_SERIES_UID)
    reach the scored scan's QC flags."""
    import pandas as pd

    import pipeline.batch as batch
    from pipeline.run import run_pipeline, table_patient_id

    src = tmp_path / "in"
    shutil.copytree(REPO / "sample_dicoms", src)
    for f in src.iterdir():
        if f.suffix != ".json":
            ds = pydicom.dcmread(f)
            del ds.SeriesInstanceUID
            ds.save_as(f)
    cfg = load_config(overrides=["outputs.write_qc_png=false", "outputs.write_dicom_seg=false",
                                 "segmentation.method=classical"])
    header = build_inventory(src, cfg).chosen[0].header
    pt = table_patient_id(header, cfg)
    assert pt.startswith("pt-") and header["study_date"]

    run_pipeline(src, tmp_path / "ok", cfg)
    row = pd.read_csv(tmp_path / "ok" / "scans.csv", dtype=str).iloc[0]
    assert "MISSING_SERIES_UID" in row["qc_flags"].split(";")
    assert row["patient_id"] == pt

    def fail(*args, **kwargs):
        return {"scan_id": args[3], "series_uid": "", "status": "failed", "code": "NOT_HU", "message": "x"}

    monkeypatch.setattr("pipeline.run.process_series", fail)
    run_pipeline(src, tmp_path / "failed", cfg)
    row = pd.read_csv(tmp_path / "failed" / "scans.csv", dtype=str).iloc[0]
    assert row["status"] == "failed" and row["patient_id"] == pt and row["study_date"] == header["study_date"]
    rec = json.loads(next((tmp_path / "failed").glob(f"{batch.STATUS_DIR}/*.json")).read_text())  # for resume
    assert rec["patient_id"] == pt and rec["study_date"] == header["study_date"]
