"""The segmenter registry (segmentation.factory.SEGMENTERS): the configuration check, the error message, the CLI help,
the unused-settings warnings, the preflight and the GPU planning all read it, so a new segmenter is one entry."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from pipeline.batch import BatchOptions, preflight, wants_gpu
from pipeline.config import (
    SHARED_SEGMENTATION_KEYS,
    classical_only_changes,
    default_config,
    load_config,
    warn_unused_settings,
)
from pipeline.errors import ConfigError
from segmentation.base import Segmentation, Segmenter
from segmentation.factory import (
    SEGMENTERS,
    SegmenterSpec,
    build_segmenter,
    model_stamp,
    segmenter_help,
    uses_gpu,
)
from tests.conftest import REPO

UNKNOWN = ("segmentation.method (--segmenter) must be 'classical', 'monai' or a model folder (a MONAI bundle, or "
           "weights from 'ctscore train'), got {!r}: no such folder")


class _Fake:
    """A minimal segmenter: everything is right lung."""

    name = "fake"
    model_id = "fake-1"

    def __init__(self, cfg):
        self.cfg = cfg

    def segment(self, hu, spacing):
        return Segmentation(lungs=np.ones(hu.shape, np.uint8), lesions=np.zeros(hu.shape, bool))


@pytest.fixture
def fake(monkeypatch):
    """A CPU-only segmenter ``fake`` in the registry, its options in ``segmentation.fake`` (none in the defaults)."""
    spec = SegmenterSpec("fake", _Fake, uses_gpu=False, options="fake", description="a test double")
    monkeypatch.setitem(SEGMENTERS, "fake", spec)
    return spec


def test_the_built_in_segmenters():
    assert list(SEGMENTERS) == ["classical", "monai"]
    assert [s.uses_gpu for s in SEGMENTERS.values()] == [False, True]
    assert all(name == spec.name and spec.description for name, spec in SEGMENTERS.items())


def test_each_options_section_is_in_the_default_config():
    seg = default_config()["segmentation"]
    for spec in SEGMENTERS.values():
        if spec.options is not None:
            assert isinstance(seg[spec.options], dict), spec.name
    assert set(SHARED_SEGMENTATION_KEYS) <= set(seg)
    assert default_config()["segmentation"]["method"] in SEGMENTERS


def test_classical_is_built_without_torch():
    """The registry's builders import their segmenter only when called: classical never imports torch."""
    code = ("import sys; from pipeline.config import load_config; from segmentation.factory import build_segmenter; "
            "import pipeline.batch, pipeline.commands.run; "
            "s = build_segmenter(load_config(overrides=['segmentation.method=classical'])); "
            "print(s.name, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["classical", "False"]


def test_built_segmenter_implements_the_protocol_and_is_named_as_registered():
    seg = build_segmenter(load_config(overrides=["segmentation.method=classical"]))
    assert isinstance(seg, Segmenter) and seg.name == "classical"
    assert model_stamp({"segmentation": {"method": "classical"}}) == ()


def test_unknown_method_message_is_said_once_the_same_way():
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["segmentation.method=nonesuch"])
    assert info.value.message.startswith(UNKNOWN.format("nonesuch"))
    cfg = load_config()
    cfg["segmentation"]["method"] = "nonesuch"
    with pytest.raises(ConfigError) as info:
        build_segmenter(cfg)
    assert info.value.message == UNKNOWN.format("nonesuch")


def test_cli_help_lists_the_default_first():
    from pipeline.cli import build_parser

    run = build_parser()._subparsers._group_actions[0].choices["run"]
    (action,) = [a for a in run._actions if "--segmenter" in a.option_strings]
    assert action.help == ("monai (the default: the shipped network) | classical | path to a model folder "
                           "(segmentation.method)")
    assert segmenter_help("classical").startswith("classical (the default: thresholds and morphology")


def test_gpu_use_follows_the_registry(tmp_path):
    assert not uses_gpu("classical") and uses_gpu("monai") and uses_gpu(str(tmp_path))  # a folder: a network
    for method, device, want in (("classical", "cuda", False), ("monai", "cuda:1", True), ("monai", "cpu", False),
                                 (str(tmp_path), "cuda", True)):
        assert wants_gpu({"segmentation": {"method": method, "device": device}}) is want, (method, device)


def test_local_preflight_checks_the_device_only_for_a_gpu_segmenter(monkeypatch):
    import segmentation.monai_segmenter as ms

    asked = []
    monkeypatch.setattr(ms, "resolve_device", asked.append)
    opts = BatchOptions(executor="local", workers=2)
    preflight(load_config(overrides=["segmentation.method=classical", "segmentation.device=cuda"]), opts)
    assert asked == []
    preflight(load_config(overrides=["segmentation.device=cuda"]), opts)
    assert asked == ["cuda"]


def test_a_new_entry_is_enough(fake, monkeypatch, caplog):
    """Registered, it is a valid method, built by name, planned on the CPU, its device warned about, and the
    classical segmenter's flat keys are said to be ignored by it."""
    cfg = load_config(overrides=["segmentation.method=fake", "segmentation.lesion_min_component_ml=50"])
    seg = build_segmenter(cfg)
    assert isinstance(seg, _Fake) and isinstance(seg, Segmenter)
    assert model_stamp(cfg) == () and not wants_gpu({"segmentation": {"method": "fake", "device": "cuda"}})
    assert classical_only_changes(cfg) == ["segmentation.lesion_min_component_ml"]
    cfg["segmentation"]["device"] = "cuda"
    with caplog.at_level(logging.WARNING, logger="pipeline.config"):
        warn_unused_settings(cfg)
    assert "segmentation.device cuda is not used: the fake segmenter runs on the CPU" in caplog.text
    assert "the fake segmenter ignores it" in caplog.text
    asked = []
    monkeypatch.setattr("segmentation.monai_segmenter.resolve_device", asked.append)
    preflight(cfg, BatchOptions(executor="local", workers=2))
    assert asked == []


def test_the_classical_segmenter_reads_the_flat_keys():
    cfg = load_config(overrides=["segmentation.method=classical", "segmentation.lesion_min_component_ml=50",
                                 "segmentation.min_lung_volume_ml=200"])
    assert classical_only_changes(cfg) == []
    cfg = load_config(overrides=["segmentation.lesion_min_component_ml=50", "segmentation.min_lung_volume_ml=200",
                                 "segmentation.monai.flip_tta=false"])
    assert classical_only_changes(cfg) == ["segmentation.lesion_min_component_ml"]
