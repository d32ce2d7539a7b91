"""A researcher adapting the configuration to a study protocol (an audit): values that were accepted and then
ignored, recorded wrongly or failing only inside each scan are refused or warned about when the configuration
is loaded, naming the key."""

from __future__ import annotations

import json
import logging

import pytest

from pipeline.config import config_hash, load_config, scores_config_hash, warn_unused_settings
from pipeline.errors import ConfigError
from pipeline.report import render_run_report
from tests.test_a11y_report import run_dir  # noqa: F401 - fixture


def _yaml(tmp_path, text: str):
    f = tmp_path / "protocol.yaml"
    f.write_text(text)
    return f


@pytest.mark.parametrize("text", ["hu_classes:\n  high_opacity_min_hu: .inf\n",
                                  "hu_classes:\n  consolidation: [-300, .inf]\n",
                                  "segmentation:\n  lesion_min_component_ml: .inf\n",
                                  "segmentation:\n  lung_threshold_hu: -.inf\n"])
def test_infinite_values_are_refused(tmp_path, text):
    """run.json recorded them as null (JSON has no infinity): the record no longer matched its own hash."""
    f = _yaml(tmp_path, text)
    with pytest.raises(ConfigError, match="must be a finite number") as info:
        load_config(f)
    assert info.value.path == str(f)


def test_the_same_values_written_differently_are_one_setting():
    """-320.0 and -320, CPU and cpu: different hashes made a resume score every scan again and stats report mixed
    settings."""
    plain = load_config(overrides=["segmentation.lung_threshold_hu=-320", "hu_classes.ggo=[-550, -300]",
                                   "segmentation.device=cpu"])
    written = load_config(overrides=["segmentation.lung_threshold_hu=-320.0", "hu_classes.ggo=[-550.0, -300.0]",
                                     "segmentation.device=CPU"])
    assert config_hash(plain) == config_hash(written) and scores_config_hash(plain) == scores_config_hash(written)
    assert config_hash(load_config(overrides=["segmentation.lung_threshold_hu=-320.0"])) == config_hash(load_config())
    assert load_config(overrides=["segmentation.lung_threshold_hu=-320.5"])["segmentation"]["lung_threshold_hu"] == -320.5


def test_a_gap_between_hu_bands_is_refused(tmp_path):
    """Only the lower bounds of ggo and consolidation split the classes: [-750, -650] then [-550, -400] scored
    -650..-550 as faint ground glass while the report's key showed the gap."""
    f = _yaml(tmp_path, "hu_classes:\n  faint_ggo: [-750, -650]\n  ggo: [-550, -400]\n")
    with pytest.raises(ConfigError, match=r"faint_ggo \[-750, -650\] must end where hu_classes.ggo \[-550, -400\] "
                                          r"begins.*between -650 and -550 HU would be counted as faint_ggo"):
        load_config(f)
    ok = load_config(_yaml(tmp_path, "hu_classes:\n  faint_ggo: [-750, -650]\n  ggo: [-650, -300]\n"))
    assert ok["hu_classes"]["ggo"] == [-650, -300]


@pytest.mark.parametrize("override, key", [
    ("segmentation.texture_sigma_mm=-3", "segmentation.texture_sigma_mm"),
    ("segmentation.texture_fraction=7", "segmentation.texture_fraction"),
    ("segmentation.pleural_closing_radius_mm=-5", "segmentation.pleural_closing_radius_mm"),
    ("segmentation.lesion_min_component_ml=-1", "segmentation.lesion_min_component_ml"),
    ("segmentation.min_lung_volume_ml=-100", "segmentation.min_lung_volume_ml"),
    ("segmentation.monai.body_margin_mm=-50", "segmentation.monai.body_margin_mm"),
    ("selection.min_slices=-5", "selection.min_slices"),
    ("selection.min_slices=10.5", "selection.min_slices"),
    ("selection.max_slice_thickness_mm=-1", "selection.max_slice_thickness_mm"),
    ("loading.max_gap_ratio=0.5", "loading.max_gap_ratio"),
    ("loading.max_voxels=-1", "loading.max_voxels"),
    ("loading.air_hu_range=[-800, -1200]", "loading.air_hu_range"),
])
def test_values_out_of_range_are_refused_when_the_configuration_is_loaded(override, key):
    """Each was taken as 'off' or as another value without a word, or failed every scan only when it was loaded
    (NOT_HU, SLICE_GAP, TOO_LARGE)."""
    with pytest.raises(ConfigError, match=rf"{key} must be"):
        load_config(overrides=[override])


def test_edges_of_the_ranges_are_accepted():
    cfg = load_config(overrides=["segmentation.pleural_closing_radius_mm=0", "segmentation.texture_fraction=1",
                                 "selection.min_slices=1", "segmentation.monai.body_margin_mm=0",
                                 "segmentation.texture_sigma_mm=0", "loading.max_voxels=2.5e8"])
    assert cfg["segmentation"]["pleural_closing_radius_mm"] == 0 and cfg["segmentation"]["texture_sigma_mm"] == 0
    assert cfg["loading"]["max_voxels"] == 250_000_000  # 2.5e8: a number (YAML 1.1 wanted 2.5e+8)


def test_classical_only_settings_are_said_to_be_ignored_by_the_network(caplog):
    """lesion_min_component_ml: 50 with the default segmenter changed nothing but the hashes, without a word."""
    with caplog.at_level(logging.WARNING, logger="pipeline.config"):
        warn_unused_settings(load_config(overrides=["segmentation.lesion_min_component_ml=50",
                                                    "segmentation.consolidation_min_ml=40"]))
    assert ("segmentation.lesion_min_component_ml, segmentation.consolidation_min_ml are read by the classical "
            "segmenter only (--segmenter classical); the monai segmenter ignores them") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.config"):
        warn_unused_settings(load_config(overrides=[
            "segmentation.lesion_min_component_ml=50", "segmentation.method=classical",
            "segmentation.min_lung_volume_ml=200", "segmentation.monai.flip_tta=false"]))
        warn_unused_settings(load_config(overrides=["segmentation.min_lung_volume_ml=200"]))  # every segmenter's
    assert "ignores" not in caplog.text


def test_the_unused_settings_warning_comes_once_per_run_and_not_from_scan(tmp_path, capsys, classical_memo):
    """It came from every load_config: twice per `ctscore run` (the CLI's, then run_pipeline's) and from
    `ctscore scan`, which segments nothing."""
    from pipeline.cli import main

    f = _yaml(tmp_path, "segmentation:\n  method: classical\n  device: cuda\n")
    assert main(["scan", "sample_dicoms", "--config", str(f), "-o", str(tmp_path / "inv.csv")]) == 0
    assert "is not used" not in capsys.readouterr().err
    main(["run", "sample_dicoms", "-o", str(tmp_path / "out"), "--config", str(f), "--set",
          "outputs.write_qc_png=false"])
    assert capsys.readouterr().err.count("segmentation.device cuda is not used") == 1


def test_a_key_at_the_wrong_level_is_pointed_to_its_place(tmp_path):
    f = _yaml(tmp_path, "scoring:\n  density_rule: predominant\n")
    with pytest.raises(ConfigError, match=r"unknown key 'scoring.density_rule' .*did you mean "
                                          r"scoring.zhang900.density_rule\?"):
        load_config(f)


def test_a_yaml_error_names_the_file_and_a_set_error_the_option(tmp_path):
    f = _yaml(tmp_path, "scoring:\n  min_involvement_ml: [1\n")
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert "<unicode string>" not in str(info.value) and 'in "protocol.yaml", line' in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown key 'hu_clases' .*\(in --set hu_clases.ggo=\[-550, -300\]\)"):
        load_config(overrides=["hu_clases.ggo=[-550, -300]"])


def test_the_report_key_says_how_zhang900_was_read_and_what_counts_as_involved(run_dir):  # noqa: F811
    data = json.loads((run_dir / "run.json").read_text())
    data["config"]["scoring"] = {"min_involvement_pct": 1, "min_involvement_ml": 2,
                                 "zhang900": {"mode": "zone", "density_rule": "predominant"}}
    (run_dir / "run.json").write_text(json.dumps(data))
    key = render_run_report(run_dir).split("<summary>Key</summary>")[1].split("</details>")[0]
    assert "the volumes between the levels&#x27; midpoints (zone mode)" in key
    assert "density from the unit&#x27;s predominant lesion class" in key
    assert "with at least 2 mL and 1 % of lesion" in key


def test_an_empty_config_file_and_an_unused_device_are_mentioned(tmp_path, caplog):
    f = _yaml(tmp_path, "# protocol B: to be filled in\n")
    with caplog.at_level(logging.WARNING, logger="pipeline.config"):
        assert load_config(f) == load_config()
        warn_unused_settings(load_config(overrides=["segmentation.method=classical", "segmentation.device=cuda"]))
    assert "protocol.yaml holds no settings (empty, or comments only): it changes nothing" in caplog.text
    assert "segmentation.device cuda is not used: the classical segmenter runs on the CPU" in caplog.text
