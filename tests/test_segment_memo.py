"""The tests' segmentation memo (tests/conftest.py): a hit is a copy, and a patched segmenter module is a miss."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from tests import conftest


def _result():
    return SimpleNamespace(lungs=np.ones((2, 3, 3), np.uint8), lesions=np.zeros((2, 3, 3), bool),
                           airway=np.zeros((2, 3, 3), bool), lobes=None, flags=["A"])


def test_a_hit_is_a_copy_and_does_not_compute_again():
    calls = []
    key = ("test", "hit", conftest._module_state())

    def compute():
        calls.append(1)
        return _result()

    try:
        first = conftest._memo_segment(key, compute)
        first.lungs[:] = 0  # a caller changes what it got
        first.flags.append("B")
        second = conftest._memo_segment(key, compute)
        assert len(calls) == 1
        assert second.lungs.all() and second.flags == ["A"]
    finally:
        conftest._SEGMENTS_DONE.pop(key, None)


def test_a_patched_constant_or_helper_is_another_key(monkeypatch):
    import segmentation.classical as classical

    hu, spacing = np.zeros((2, 3, 3), np.int16), (1.0, 1.0, 1.0)
    before = conftest._memo_key("classical", "id", hu, spacing)
    monkeypatch.setattr(classical, "AIRWAY_RETRY_ML", classical.AIRWAY_RETRY_ML + 1)
    patched = conftest._memo_key("classical", "id", hu, spacing)
    assert patched != before
    monkeypatch.setattr(classical, "segment_airway", lambda *a, **k: None)
    assert conftest._memo_key("classical", "id", hu, spacing) not in (before, patched)
    monkeypatch.undo()
    assert conftest._memo_key("classical", "id", hu, spacing) == before
