"""--model given the weights file instead of its folder says so (it said 'no such folder' of a file that exists)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from segmentation.factory import get_segmenter

REPO = Path(__file__).resolve().parents[1]


def test_cli_says_the_model_is_a_file(tmp_path, capsys):
    from pipeline.cli import main

    weights = REPO / "segmentation" / "weights" / "model.safetensors"
    rc = main(["run", str(REPO / "sample_dicoms"), "-o", str(tmp_path / "out"), "--model", str(weights)])
    err = capsys.readouterr().err
    assert rc != 0 and "a file, not a folder: give the folder that holds the weights" in err
    assert "no such folder" not in err and "Traceback" not in err
    assert not (tmp_path / "out" / "scans.csv").exists()


def test_api_twin_says_the_same(tmp_path):
    weights = REPO / "segmentation" / "weights" / "model.safetensors"
    cfg = load_config()
    cfg["segmentation"]["method"] = str(weights)
    with pytest.raises(ConfigError, match="a file, not a folder"):
        get_segmenter(cfg)
    cfg["segmentation"]["method"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no such folder"):
        get_segmenter(cfg)
