"""A configuration rule across keys (checked on the merged result) names where the configuration came from."""

from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError


def test_cross_key_error_names_the_file(tmp_path):
    f = tmp_path / "site.yaml"
    f.write_text("hu_classes:\n  ggo: [-550, -200]\n")  # overlaps the default consolidation band
    with pytest.raises(ConfigError, match=r"ggo \[-550, -200\] overlaps") as info:
        load_config(f)
    assert info.value.path == str(f) and str(f) in str(info.value)


def test_cross_key_error_lists_every_source(tmp_path):
    f = tmp_path / "site.yaml"
    f.write_text("hu_classes:\n  ggo: [-300, -200]\n")
    with pytest.raises(ConfigError) as info:
        load_config([f], overrides=["resample.spacing_mm=[1,1,1]"])
    assert f"in the configuration from {f}, --set resample.spacing_mm=[1,1,1]" in info.value.message
    with pytest.raises(ConfigError, match=r"got 'x' \(in the configuration from --set scoring.zhang900.mode=x\)"):
        load_config(overrides=["scoring.zhang900.mode=x"])


def test_python_only_configuration_unchanged():
    with pytest.raises(ConfigError) as info:
        load_config(extra={"scoring": {"zhang900": {"mode": "x"}}})
    assert info.value.message == "scoring.zhang900.mode must be 'slab' or 'zone', got 'x'" and info.value.path is None


def test_generator_of_paths_still_read(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text("resample:\n  spacing_mm: [2, 2, 2]\n")
    assert load_config(p for p in [f])["resample"]["spacing_mm"] == [2, 2, 2]


def test_exponent_without_a_dot_is_a_number(tmp_path):
    """PyYAML (YAML 1.1) reads 1e3 as text; a number key takes it as the number it is, in files and --set."""
    f = tmp_path / "site.yaml"
    f.write_text("segmentation:\n  min_lung_volume_ml: 1e3\nresample:\n  spacing_mm: [15e-1, 1.5, 1.5]\n")
    cfg = load_config(f)
    assert cfg["segmentation"]["min_lung_volume_ml"] == 1000.0
    assert cfg["resample"]["spacing_mm"] == [1.5, 1.5, 1.5]
    assert load_config(overrides=["segmentation.min_lung_volume_ml=2E2"])["segmentation"]["min_lung_volume_ml"] == 200
    with pytest.raises(ConfigError, match="must be a number, got '1e3x'"):
        load_config(overrides=["segmentation.min_lung_volume_ml=1e3x"])
    with pytest.raises(ConfigError, match="must be text, got 1000.0"):  # a number, as YAML 1.2 reads it
        load_config(overrides=["segmentation.method=1e3"])


def test_training_config_reads_exponent_numbers(tmp_path):
    from segmentation.recipe import read_train_config

    f = tmp_path / "t.yaml"
    f.write_text("lr: 1e-4\niterations: 10\n")
    common, stages, problem = read_train_config(f)
    assert problem is None and common["lr"] == 1e-4 and isinstance(common["lr"], float)
