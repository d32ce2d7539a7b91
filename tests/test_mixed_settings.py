"""Scores made with different settings in one table (a longitudinal, multi-site walk-through: two sites' folders
merged, a config changed half-way) were analysed without a word; repeated scans of one patient in a validation
were counted as independent without a word."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.outputs import SETTINGS_COLUMNS, settings_note
from scoring.stats.cohort import load_cohort
from scoring.stats.simulate import write_cohort as write_stats_cohort
from scoring.validation.api import run_validation
from tests.test_validation_end_to_end import write_cohort as write_validation_cohort


def test_scans_csv_says_which_settings_made_each_row(sample_run):
    row = pd.read_csv(sample_run / "scans.csv", dtype=str).iloc[0]
    result = json.loads((sample_run / row["scan_id"] / "result.json").read_text())
    assert row["ctscore_version"] == result["ctscore_version"]
    assert row["model_id"] == result["segmenter"]["model_id"]
    assert row["device"] == "cpu" == result["segmenter"]["device"]
    from pipeline.config import load_config, scores_config_hash

    assert row["scores_config_sha256"] == scores_config_hash(result["config"])[:12]
    # settings that do not change a series' scores are not another setting (a follow-up batch with --dicom-seg)
    plain = load_config()
    assert scores_config_hash(plain) == scores_config_hash(load_config(extra={"outputs": {"write_dicom_seg": True,
                                                                                          "pseudonym_salt": "s"}}))
    assert scores_config_hash(plain) != scores_config_hash(load_config(overrides=["scoring.zhang900.mode=zone"]))


def test_settings_note_names_each_setting_and_its_scans():
    df = pd.DataFrame({"status": ["ok", "ok", "ok", "failed"], "segmenter": ["monai"] * 4,
                       "model_id": ["m1", "m1", "m2", "m3"], "scores_config_sha256": ["abc", "abc", "abc", "def"]})
    note = settings_note(df)
    assert "model_id m1 (2 scans), m2 (1 scan)" in note and "m3" not in note  # a failed scan made no score
    assert "config_sha256" not in note and "segmenter" not in note
    assert settings_note(df.iloc[:2]) is None
    older = df.drop(columns=[c for c in SETTINGS_COLUMNS[1:] if c in df.columns])
    assert settings_note(older) is None  # an older table: nothing to say
    devices = df.assign(device=["cpu", "cuda", "cuda", "cpu"], model_id="m1", scores_config_sha256="abc")
    assert "device cuda (2 scans), cpu (1 scan)" in settings_note(devices)  # shards on CPU and GPU nodes


def test_stats_note_a_cohort_scored_with_two_configurations(tmp_path):
    paths = write_stats_cohort(tmp_path / "sim", seed=1, n_survivors=12, n_nonsurvivors=4)
    scans = pd.read_csv(paths["scores"] / "scans.csv", dtype=str, keep_default_na=False)
    scans["scores_config_sha256"] = ["0123456789ab" if i % 3 else "ba9876543210" for i in range(len(scans))]
    scans.to_csv(paths["scores"] / "scans.csv", index=False)
    cohort = load_cohort(paths["scores"], paths["clinical"], paths["labs"])
    notes = cohort.data_summary().query("item == 'note'")["value"].tolist()
    [mixed] = [n for n in notes if "different settings" in n]
    assert mixed.startswith("the scores of the cohort were made with different settings (scores_config_sha256 ")
    assert "0123456789ab (" in mixed and "ba9876543210 (" in mixed


def test_validate_notes_repeated_scans_and_mixed_settings(tmp_path):
    pred, ref, _, _ = write_validation_cohort(tmp_path, 8, 3, "1.2.826.0.77")  # two scans per patient
    scans = pd.read_csv(pred / "scans.csv", dtype=str)
    scans["model_id"] = ["monai-a"] * 4 + ["monai-b"] * 4
    scans.to_csv(pred / "scans.csv", index=False)
    summary = run_validation(pred, ref, draw=False)["data_summary"].set_index("item")["value"]
    assert summary["patients of those scans"] == "4"
    notes = run_validation(pred, ref, draw=False)["data_summary"].query("item == 'note'")["value"].tolist()
    assert any(n.startswith("4 patient(s) have more than one scan in the comparison (8 scans)") for n in notes)
    assert any("model_id monai-a (4 scans), monai-b (4 scans)" in n for n in notes)


def test_result_json_carries_its_environment_and_model_hashes(sample_run):
    """A result.json shared or merged alone lost the package versions (only in run.json), and the weights' full
    sha256 was never written (model_id is a 16-hex digest of it)."""
    result = json.loads(next(sample_run.glob("scan-*/result.json")).read_text())
    env = result["environment"]
    assert env["python"] and env["versions"]["pydicom"] and env["versions"]["SimpleITK"]
    run = json.loads((sample_run / "run.json").read_text())
    assert env["versions"] == run["versions"]


def test_model_file_hashes_of_the_monai_segmenter():
    from pipeline.run import _weights_hashes

    class Seg:
        hashes = {"model.yaml": "b" * 64, "model.safetensors": "a" * 64}

    assert _weights_hashes(Seg()) == {"files_sha256": {"model.safetensors": "a" * 64, "model.yaml": "b" * 64}}
    assert _weights_hashes(object()) == {}


def test_a_solid_lesion_piece_without_air_is_measured():
    """The aortic arch and the liver dome taken as lung and consolidation (ricord_covid_419639: 49 mL, 0-900 score
    117 instead of 72) carried no flag; a real lesion keeps some air or ground glass."""
    import numpy as np

    from scoring.quantify import solid_lesion_ml

    hu = np.full((30, 40, 40), -850.0)
    classes = np.zeros(hu.shape, np.uint8)
    hu[2:12, 2:12, 2:12], classes[2:12, 2:12, 2:12] = 40.0, 3  # 1000 voxels of blood: 8 mL at 8 uL
    hu[15:25, 15:25, 15:25], classes[15:25, 15:25, 15:25] = 30.0, 3  # a consolidation with a ground-glass rim
    hu[15:25, 15:25, 15:17], classes[15:25, 15:25, 15:17] = -550.0, 2
    hu[2:6, 30:34, 30:34], classes[2:6, 30:34, 30:34] = 40.0, 3  # solid but small (0.5 mL)
    assert solid_lesion_ml(hu, classes, 0.008) == pytest.approx(8.0)
    hu[5, 5, 5] = -700.0  # one aerated voxel in 1000 is not air
    assert solid_lesion_ml(hu, classes, 0.008) == pytest.approx(8.0)
    hu[2:12, 2:12, 2:4] = -700.0  # 20 % aerated: a lesion
    assert solid_lesion_ml(hu, classes, 0.008) == 0.0


def test_the_report_of_a_merged_folder_says_its_settings_differ(tmp_path):
    """report.html of an aggregate of 0.1.0 and 0.2.0 results showed 'ctscore 0.2.0' and one config sha."""
    import json as _json

    from pipeline.report import render_run_report

    (tmp_path / "scans.csv").write_text("scan_id,status,ctscore_version,model_id,scores_config_sha256\n"
                                        "scan-a,ok,0.1.0,m1,aaaaaaaaaaaa\nscan-b,ok,0.2.0,m1,bbbbbbbbbbbb\n")
    (tmp_path / "run.json").write_text(_json.dumps({
        "ctscore_version": "0.2.0", "config_sha256": "a" * 64, "config_sha256_all": ["a" * 64, "b" * 64],
        "ctscore_versions": {"0.1.0": 1, "0.2.0": 1}, "segmenter": {"name": "monai", "model_id": "m1"}}))
    html = render_run_report(tmp_path)
    assert '<p class="mixed">the series of this folder were made with different settings' in html
    assert "0.2.0 (wrote these tables); the results were made by 0.1.0: 1 scan(s), 0.2.0: 1 scan(s)" in html
    assert f"{'a' * 64}; {'b' * 64} (several)" in html


def test_report_rounds_as_a_reader_rounds_the_csv():
    """10.795 showed as 10.79 (binary floating point) while 0.005 showed as 0.01."""
    from pipeline.report import _fmt

    assert [_fmt(2)(v) for v in (10.795, 0.005, 1234.5)] == ["10.80", "0.01", "1,234.50"]
    assert _fmt(0)(1528.49) == "1,528" and _fmt(1)("337.26") == "337.3"


def test_device_text_names_the_kind_of_device():
    """How scans.csv's device column names a device (the row itself: test_scans_csv_says_which_settings_made_each_row
    and test_aggregate_warns_of_scans_from_several_devices)."""
    from pipeline.outputs import device_text

    assert device_text("cuda:1") == "cuda" and device_text("CPU") == "cpu" and device_text(None) == ""


def test_results_say_which_source_made_them_in_a_checkout(sample_run):
    """A version label cannot prove which code made a result when the code was edited: a run from a git checkout
    records its commit (and whether its files differ from it); the package list names the decoders and the
    statistics packages too (a reproducibility audit)."""
    import subprocess

    run = json.loads((sample_run / "run.json").read_text())
    result = json.loads(next(sample_run.glob("scan-*/result.json")).read_text())
    for name in ("nibabel", "statsmodels", "scikit-learn", "python-gdcm"):
        assert name in result["environment"]["versions"] and name in run["versions"]
    assert run["execution"] == {"executor": "serial", "workers_requested": 1, "threads_per_worker_requested": 1}
    from pipeline.run import _source_revision

    repo = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip() if (repo / ".git").exists() else ""
    from pipeline.run import code_digest

    assert result["environment"]["code_sha256"] == code_digest() and len(code_digest()) == 64
    if not _source_revision().startswith("git "):  # an installed copy, no git, a checkout of another owner
        assert run["source"] == result["environment"]["source"] == _source_revision()
        assert run["source"].endswith(f"code {code_digest()[:12]}")
        return
    assert run["source"].startswith(f"git {head}") and result["environment"]["source"] == run["source"]


def test_source_revision_is_the_code_digest_when_git_cannot_tell(monkeypatch):
    import subprocess

    from pipeline import run as run_module

    def fail(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", fail)
    run_module._source_revision.cache_clear()
    try:
        assert run_module._source_revision() == f"code {run_module.code_digest()[:12]}"
    finally:
        run_module._source_revision.cache_clear()


def test_result_names_its_images_by_content(sample_run, tmp_path):
    """result.json's image_sha256 is a digest of the HU volume scored: the same images copied elsewhere under other
    names give the same digest (input_fingerprint is of paths, sizes and times; a reproducibility audit)."""
    import shutil

    import SimpleITK as sitk

    from pipeline.config import load_config
    from pipeline.inventory import build_inventory
    from pipeline.loading import load_series
    from pipeline.run import image_digest
    from tests.conftest import SAMPLE

    result = json.loads(next(sample_run.glob("scan-*/result.json")).read_text())
    for i, f in enumerate(sorted(p for p in Path(SAMPLE).rglob("*") if p.is_file())):
        (tmp_path / f"sub{i % 3}").mkdir(exist_ok=True)
        shutil.copy(f, tmp_path / f"sub{i % 3}" / f"x{(i * 7919) % 1000:03d}.dcm")
    files = build_inventory(tmp_path).chosen[0].files
    image = load_series(files).image
    salt = load_config()["outputs"]["pseudonym_salt"]  # pseudonymous outputs: keyed with the site's salt
    assert image_digest(image, salt) == result["image_sha256"]
    assert image_digest(image, "another site") != result["image_sha256"] != image_digest(image)
    moved = sitk.Image(image)
    moved.SetOrigin([v + 1.0 for v in image.GetOrigin()])
    changed = sitk.Image(image)
    changed[0, 0, 0] = changed[0, 0, 0] + 1.0
    assert len({image_digest(image, salt), image_digest(moved, salt), image_digest(changed, salt)}) == 3


def test_aggregate_warns_of_scans_from_several_devices(sample_run, tmp_path):
    """Shards on CPU and GPU nodes merged by ctscore aggregate: said on the console too, not only in the tables."""
    import shutil

    from pipeline.batch import aggregate
    from tests.result_twins import add_twin

    out = tmp_path / "out"
    shutil.copytree(sample_run, out)
    add_twin(out, lambda result: result["segmenter"].update(device="cuda:0"))
    warnings = aggregate(out)["warnings"]
    assert any("scored on several devices (cpu: 1, cuda: 1)" in w for w in warnings), warnings
    assert sorted(pd.read_csv(out / "scans.csv")["device"]) == ["cpu", "cuda"]


def test_a_run_warns_of_scans_from_several_devices_too(sample_run, tmp_path, monkeypatch, caplog):
    """Only aggregate said so: a folder begun on CPUs and resumed on a GPU node (resume keeps a scan made on another
    device) ended its `ctscore run` without a word."""
    import logging
    import shutil

    from pipeline import batch
    from pipeline.config import load_config
    from pipeline.run import run_pipeline

    with caplog.at_level(logging.WARNING, logger="pipeline.batch"):
        batch.warn_devices(tmp_path, [{"status": "ok", "segmenter": {"device": "cpu"}},
                                      {"status": "ok", "segmenter": {"device": "cuda:1"}},
                                      {"status": "failed"}])
    assert "scored on several devices (cpu: 1, cuda: 1)" in caplog.text
    out = tmp_path / "out"
    shutil.copytree(sample_run, out)
    seen = []
    monkeypatch.setattr(batch, "warn_devices", lambda where, statuses: seen.append([s["status"] for s in statuses]))
    cfg = load_config(extra={"segmentation": {"method": "classical"}, "outputs": {"write_dicom_seg": True}})
    assert run_pipeline("sample_dicoms", out, cfg)["n_skipped"] == 1
    assert seen == [["ok"]]  # the run's statuses, resumed ones included
