"""The configuration hashes cover the settings the configured segmenter and the scoring read
(pipeline.config.read_settings). A configuration audit (2026-12-06): a network option changed for a classical run,
``-d cpu`` for the classical segmenter, a memory limit raised, or one model folder spelled ``./m`` and ``/abs/m``
scored a finished folder again and made identical settings "not comparable" in report.html, methods and stats."""

from __future__ import annotations

import shutil

from pipeline.config import config_hash, load_config, scores_config_hash


def _classical(**extra):
    seg = {"method": "classical", **extra.pop("segmentation", {})}
    return load_config(extra={"segmentation": seg, **extra})


def test_settings_the_classical_segmenter_does_not_read_change_no_hash():
    base = _classical()
    for other in (_classical(segmentation={"monai": {"flip_tta": False, "scale_tta": 0.0}}),
                  _classical(segmentation={"device": "cpu"})):
        assert config_hash(other) == config_hash(base)
        assert scores_config_hash(other) == scores_config_hash(base)


def test_classical_settings_change_no_hash_of_the_network_s():
    base = load_config()
    other = load_config(extra={"segmentation": {"lesion_min_component_ml": 0.1, "ggo_delta_hu": 80}})
    assert config_hash(other) == config_hash(base) and scores_config_hash(other) == scores_config_hash(base)
    # its own settings do
    tta = load_config(extra={"segmentation": {"monai": {"flip_tta": False}}})
    assert config_hash(tta) != config_hash(base) and scores_config_hash(tta) != scores_config_hash(base)
    # where it ran is no setting (`auto` never told CPU from GPU either): the device column says, and aggregate warns
    # when a cohort mixes devices
    gpu = load_config(extra={"segmentation": {"device": "cuda"}})
    assert config_hash(gpu) == config_hash(base) and scores_config_hash(gpu) == scores_config_hash(base)


def test_settings_the_classical_segmenter_reads_change_both_hashes():
    base = _classical()
    other = _classical(segmentation={"lesion_min_component_ml": 0.1})
    assert config_hash(other) != config_hash(base) and scores_config_hash(other) != scores_config_hash(base)
    bands = _classical(hu_classes={"faint_ggo": [-760, -550]})
    assert scores_config_hash(bands) != scores_config_hash(base)


def test_a_model_folder_is_named_by_its_model_id_not_its_path(tmp_path, monkeypatch):
    model = tmp_path / "mymodel"
    from segmentation.monai_segmenter import WEIGHTS_DIR

    shutil.copytree(WEIGHTS_DIR, model)
    monkeypatch.chdir(tmp_path)
    spellings = ["mymodel", "./mymodel", str(model), str(model) + "/"]
    hashes = {(config_hash(c), scores_config_hash(c))
              for c in (load_config(extra={"segmentation": {"method": m}}) for m in spellings)}
    assert len(hashes) == 1


def test_a_memory_limit_is_no_other_scoring_but_refused_series_are_tried_again():
    base = _classical()
    raised = _classical(loading={"max_memory_mb": 16000.0, "max_voxels": 2_000_000_000})
    assert scores_config_hash(raised) == scores_config_hash(base)  # a scored series scores alike
    assert config_hash(raised) != config_hash(base)  # resume tries a TOO_LARGE series again


def test_resume_keeps_a_classical_result_when_a_network_option_changes(sample_run, tmp_path):
    from pipeline.run import run_pipeline
    from tests.conftest import SAMPLE

    out = tmp_path / "out"
    shutil.copytree(sample_run, out)
    cfg = load_config(extra={"segmentation": {"method": "classical", "device": "cpu", "monai": {"flip_tta": False}},
                             "outputs": {"write_dicom_seg": True}})
    summary = run_pipeline(SAMPLE, out, cfg)
    assert summary["n_skipped"] == 1 and summary["n_run"] == 0


def _twin(out, edit):
    """A second scan whose configuration ``edit`` changed (and its hash with it)."""
    from tests.result_twins import add_twin

    def change(result):
        edit(result["config"])
        result["config_sha256"] = config_hash(result["config"])

    add_twin(out, change)


def test_aggregate_warns_of_configurations_only_when_they_score_differently(sample_run, tmp_path, caplog):
    """An audit: a shard run without QC pictures made `aggregate` warn "2 configurations" of identical scoring."""
    from pipeline.batch import aggregate

    out = tmp_path / "out"
    shutil.copytree(sample_run, out)
    _twin(out, lambda cfg: cfg["outputs"].update(write_qc_png=False))
    with caplog.at_level("INFO"):
        aggregate(out)
    assert "made with 2 configurations that differ only in what was written" in caplog.text
    assert "2 configurations and" not in caplog.text

    other = tmp_path / "other"
    shutil.copytree(sample_run, other)
    _twin(other, lambda cfg: cfg["segmentation"].update(lesion_min_component_ml=0.1))
    caplog.clear()
    with caplog.at_level("INFO"):
        aggregate(other)
    assert "were made with 2 configurations and 1 models" in caplog.text
    assert caplog.text.count(" scan by settings ") == 2  # which scans by which settings (an audit: it did not say)


def test_a_finished_series_whose_input_moved_is_scored_again_with_a_warning(sample_run, tmp_path, caplog,
                                                                            classical_memo):
    """A configuration audit: the same files through a symbolic link scored a finished folder again without a word."""
    import os

    from pipeline.run import run_pipeline
    from tests.conftest import SAMPLE

    out = tmp_path / "out"
    shutil.copytree(sample_run, out)
    link = tmp_path / "sample_link"
    os.symlink(SAMPLE, link)
    cfg = load_config(extra={"segmentation": {"method": "classical"}, "outputs": {"write_dicom_seg": True}})
    with caplog.at_level("WARNING"):
        summary = run_pipeline(link, out, cfg)
    assert summary["n_run"] == 1
    assert "1 finished series under" in caplog.text and "input files changed or moved" in caplog.text


def test_an_explicit_device_other_than_the_kept_results_is_warned_about(caplog):
    """A review: `-d cpu` after a CUDA run kept the half-precision results without a word."""
    from pipeline.batch import _warn_kept_device

    kept = [{"status": "ok", "result": {"segmenter": {"device": "cuda:0"}}},
            {"status": "ok", "result": {"segmenter": {"device": "cpu"}}}, {"status": "failed"}, None]
    with caplog.at_level("WARNING"):
        _warn_kept_device(load_config(extra={"segmentation": {"device": "cpu"}}), kept)
    assert "1 result(s) kept from an earlier run were scored on cuda, not on cpu as asked" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        _warn_kept_device(load_config(), kept)  # auto: whatever the machine has
        _warn_kept_device(_classical(segmentation={"device": "cpu"}), kept)  # the classical segmenter: CPU only
    assert caplog.text == ""
