"""Shared fixtures. Real CT lives outside the project: ../shared/data or $CTSCORE_TEST_DATA."""

from __future__ import annotations

import collections
import contextlib
import os
import threading
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
    with segment_memo():  # the unchanged sample is segmented once per test process (below)
        summary = run_pipeline(SAMPLE, out, cfg)
    assert summary["n_ok"] == 1, (out / "failures.csv").read_text()
    return out


#: Segmentations already made in this test process, least recently used first: key -> (result, bytes). Bounded by
#: SEGMENT_MEMO_MB (default 512 MB, $CTSCORE_TEST_MEMO_MB; 0 turns the memo off): a real chest's result on the
#: 1.5 mm grid holds 30-65 MB (lungs uint8, lesions and airway bool), the sample's 34 MB.
_SEGMENTS_DONE: collections.OrderedDict = collections.OrderedDict()
SEGMENT_MEMO_MB = float(os.environ.get("CTSCORE_TEST_MEMO_MB", "512"))


def _segmentation_bytes(seg) -> int:
    return sum(int(a.nbytes) for a in (seg.lungs, seg.lesions, seg.airway, getattr(seg, "lobes", None))
               if a is not None)


#: The segmenters' modules: a test that patches one of their constants or functions gets another key (below).
_SEGMENTER_MODULES = ("segmentation.classical", "segmentation.monai_segmenter")
_MEMO_LOCK = threading.Lock()  # a timed-out scan's thread may still segment beside the next scan's


def _module_state() -> str:
    """A digest of the segmenters' module-level names: constants by value, functions and other objects by identity,
    so that a monkeypatched threshold or helper (segment_airway, body_mask) is another key, not a stale hit."""
    import hashlib
    import sys
    import types

    h = hashlib.sha1()
    for name in _SEGMENTER_MODULES:
        module = sys.modules.get(name)
        for attr, value in sorted(vars(module).items()) if module else ():
            if isinstance(value, types.ModuleType):
                continue
            plain = isinstance(value, (bool, int, float, str, bytes, tuple, frozenset, type(None)))
            h.update(f"{name}.{attr}={repr(value) if plain else id(value)};".encode())
    return h.hexdigest()


def _memo_key(kind: str, seg_id, hu, spacing) -> tuple:
    import hashlib

    import numpy as np

    a = np.ascontiguousarray(hu)
    return (kind, seg_id, _module_state(), tuple(float(s) for s in spacing), a.dtype.str, a.shape,
            hashlib.sha1(a.view(np.uint8).reshape(-1)).hexdigest())


def _memo_segment(key: tuple, compute):
    """The result stored under ``key`` (computed once by ``compute()``), as a deep copy: callers may change it."""
    import copy

    with _MEMO_LOCK:
        hit = _SEGMENTS_DONE.get(key)
        if hit is not None:
            _SEGMENTS_DONE.move_to_end(key)
            return copy.deepcopy(hit[0])
    result = compute()  # outside the lock: a hung computation must not stop the others
    size = _segmentation_bytes(result)
    budget = SEGMENT_MEMO_MB * 2**20
    if size <= budget:
        with _MEMO_LOCK:
            while _SEGMENTS_DONE and sum(n for _, n in _SEGMENTS_DONE.values()) + size > budget:
                _SEGMENTS_DONE.popitem(last=False)  # the least recently used
            _SEGMENTS_DONE[key] = (result, size)
    return copy.deepcopy(result)


def _monai_memo_id(seg) -> tuple:
    """Everything of a MonaiSegmenter that its output depends on besides the volume and spacing: the settings it
    resolved, and its segmentation.monai options as given (an option added later is in the key without an edit)."""
    import json

    return (type(seg).__module__, type(seg).__qualname__, seg.model_id, str(seg.device), seg.lesion_threshold,
            seg.flip_tta, tuple(seg.scales), seg.remove_bowel_gas, seg.trim_apex_soft_tissue, seg.body_margin_mm, seg.sw_overlap,
            seg.sw_batch_size, seg.deterministic, json.dumps(seg.options, sort_keys=True, default=repr))


@contextlib.contextmanager
def segment_memo(classical: bool = True, monai: bool = False):
    """While it is open, the classical segmenter (and with ``monai``, the MONAI network) segments a given HU volume
    once per test process: later calls with the same volume, spacing and parameters get a deep copy of that result
    (the classical model_id hashes every parameter; the network's key holds its weights' id, device, threshold,
    test-time augmentation, bowel-gas removal, body margin, overlap and batch size). An edited, cropped or flipped
    volume is another key and is segmented. For module fixtures; tests opt in with :func:`classical_memo` or
    :func:`monai_memo`. Not for tests that measure a segmenter's time or memory or patch its internals."""
    with pytest.MonkeyPatch.context() as mp:
        if classical:
            from segmentation.classical import ClassicalSegmenter

            segment = ClassicalSegmenter.segment

            def memo(self, hu, spacing):
                key = _memo_key("classical", (type(self).__module__, type(self).__qualname__, self.model_id),
                                hu, spacing)
                return _memo_segment(key, lambda: segment(self, hu, spacing))

            mp.setattr(ClassicalSegmenter, "segment", memo)
        if monai:
            from segmentation.monai_segmenter import MonaiSegmenter

            net_segment = MonaiSegmenter.segment

            def net_memo(self, hu, spacing):
                key = _memo_key("monai", _monai_memo_id(self), hu, spacing)
                return _memo_segment(key, lambda: net_segment(self, hu, spacing))

            mp.setattr(MonaiSegmenter, "segment", net_memo)
        yield


@pytest.fixture()
def classical_memo():
    """Opt-in (``pytestmark = pytest.mark.usefixtures("classical_memo")``): :func:`segment_memo` for the classical
    segmenter during one test. For files that run the unchanged sample or a real chest many times to test what
    comes after segmentation (lobes, edited masks, reader levels, landmarks, flags)."""
    with segment_memo(classical=True):
        yield


@pytest.fixture()
def monai_memo():
    """Opt-in: :func:`segment_memo` for the MONAI network during one test (the classical segmenter is not
    memoised by it)."""
    with segment_memo(classical=False, monai=True):
        yield
