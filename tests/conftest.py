"""Shared fixtures. Real CT lives outside the project: ../shared/data or $CTSCORE_TEST_DATA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The real-data folder, or None when it is not on this machine."""
    env = os.environ.get("CTSCORE_TEST_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test when the real data are absent."""
    d = shared_data_dir()
    if d is None:
        pytest.skip("real CT data not found: set CTSCORE_TEST_DATA or place it at ../shared/data")
    return d


def require(path: Path) -> Path:
    """Skip the calling test when a file or folder of the real data is missing."""
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path


SAMPLE = REPO / "sample_dicoms"


@pytest.fixture(scope="session")
def sample_truth() -> dict:
    """The phantom's ground truth (sample_dicoms/ground_truth.json)."""
    import json

    p = SAMPLE / "ground_truth.json"
    if not p.is_file():
        pytest.skip("sample_dicoms/ground_truth.json missing (run scripts/make_sample_dicoms.py)")
    return json.loads(p.read_text())


@pytest.fixture(scope="session")
def sample_classical(sample_truth):
    """(the sample as a SimpleITK image in LPS, the configuration with the classical segmenter, that segmenter): for
    tests that score an edited copy of the sample with ``pipeline.run.analyse_volume``."""
    from pipeline.config import load_config
    from segmentation.factory import build_segmenter
    from segmentation.training import load_series_lps

    cfg = load_config(extra={"segmentation": {"method": "classical"}})
    return load_series_lps(SAMPLE), cfg, build_segmenter(cfg)


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory, sample_truth) -> Path:
    """One pipeline run over sample_dicoms/ (classical segmenter, DICOM-SEG on), shared by tests."""
    from pipeline.config import load_config
    from pipeline.run import run_pipeline

    out = tmp_path_factory.mktemp("sample_run")
    cfg = load_config(extra={"segmentation": {"method": "classical"}, "outputs": {"write_dicom_seg": True}})
    summary = run_pipeline(SAMPLE, out, cfg)
    assert summary["n_ok"] == 1, (out / "failures.csv").read_text()
    return out


#: Classical segmentations already made in this test process: (model_id, spacing, dtype, shape, HU digest) -> result.
_CLASSICAL_DONE: dict = {}


@pytest.fixture()
def classical_memo(monkeypatch):
    """Opt-in (``pytestmark = pytest.mark.usefixtures("classical_memo")``): the classical segmenter segments a given
    HU volume once per test process and hands later calls with the same volume, spacing and parameters (its model_id
    hashes every one) a deep copy of that result. For files that run the unchanged sample many times to test what
    comes after segmentation (lobes, edited masks, reader levels): an edited, cropped or flipped volume is another key
    and is segmented. Not for tests that measure the segmenter's memory or patch its internals."""
    import copy
    import hashlib

    import numpy as np

    from segmentation.classical import ClassicalSegmenter

    segment = ClassicalSegmenter.segment

    def memo(self, hu, spacing):
        a = np.ascontiguousarray(hu)
        key = (self.model_id, tuple(float(s) for s in spacing), a.dtype.str, a.shape,
               hashlib.sha1(a.view(np.uint8).reshape(-1)).hexdigest())
        if key not in _CLASSICAL_DONE:
            _CLASSICAL_DONE[key] = segment(self, hu, spacing)
        return copy.deepcopy(_CLASSICAL_DONE[key])

    monkeypatch.setattr(ClassicalSegmenter, "segment", memo)
