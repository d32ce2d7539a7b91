"""The network path grows the airway once: the bowel-gas step reads air's level from the airway the landmarks use
(it grew it again on scans with gas under the dome: 0.4 s of 5-8 s of segmentation; a performance audit)."""

from __future__ import annotations

import numpy as np


def test_the_airway_is_grown_once_and_air_s_level_comes_from_it(monkeypatch):
    import segmentation.monai_segmenter as ms
    from tests.test_bullae_not_gas import GASTRIC, SP, add_noise, basal_chest

    hu, lungs, rng = basal_chest()
    hu[80:90, 25:35, 40:50] = -1000.0  # a trachea at the top
    hu[GASTRIC] = -930.0  # gas reading 70 HU above -1000: whether it is gas depends on the air level measured
    hu = add_noise(hu, rng)
    calls = []
    real = ms.segment_airway

    def counted(h, sp, *args, **kw):
        calls.append(1)
        return real(h, sp, *args, **kw)

    monkeypatch.setattr(ms, "segment_airway", counted)
    airway = counted(hu, SP)
    calls.clear()
    lazily = ms.remove_bowel_gas(lungs, hu, SP)  # measures air's level itself (one growing)
    assert len(calls) == 1
    calls.clear()
    given = ms.remove_bowel_gas(lungs, hu, SP, air_hu=float(np.median(hu[airway])) if airway.any() else None)
    assert calls == []
    np.testing.assert_array_equal(lazily[0], given[0])
    assert lazily[1] == given[1]
