"""The lesion synthesizer (segmentation/synth.py): what the issue asks of synthetic pneumonia."""

from __future__ import annotations

import numpy as np
import pytest

from segmentation.synth import KINDS, synthesize


@pytest.fixture(scope="module")
def chest() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A tiny synthetic chest on a 3 mm grid: soft tissue, two air-filled lungs with vessels."""
    rng = np.random.default_rng(0)
    shape = (40, 64, 80)
    hu = np.full(shape, 40.0, np.float32) + rng.normal(0, 10, shape).astype(np.float32)
    lungs = np.zeros(shape, np.uint8)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    for side, cx in ((1, 22), (2, 58)):  # LPS: x grows to the patient's left, right lung at small x
        inside = ((xx - cx) / 16.0) ** 2 + ((yy - 32) / 24.0) ** 2 + ((zz - 20) / 18.0) ** 2 < 1
        lungs[inside] = side
    hu[lungs > 0] = -850 + rng.normal(0, 20, int((lungs > 0).sum()))
    vessel = (lungs > 0) & ((xx - 22) ** 2 + (yy - 30) ** 2 < 2)
    hu[vessel] = 30.0
    return hu, lungs, (3.0, 3.0, 3.0)


def test_lesions_stay_inside_the_lungs_and_are_reproducible(chest):
    hu, lungs, sp = chest
    a = synthesize(hu, lungs, sp, 3, {"p_empty": 0.0})
    b = synthesize(hu, lungs, sp, 3, {"p_empty": 0.0})
    assert a.lesions.any()
    assert not (a.lesions & (lungs == 0)).any()
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.lesions, b.lesions)
    # outside the lungs nothing changes (the chest wall stays what it was)
    np.testing.assert_array_equal(a.hu[lungs == 0], hu[lungs == 0])


def test_ground_glass_and_consolidation_hu_ranges(chest):
    hu, lungs, sp = chest
    ggo = synthesize(hu, lungs, sp, 1, {"kind_probs": {"ggo": 1.0}, "p_empty": 0.0}, n_lesions=3)
    core = ggo.lesions & (hu < -600)  # parenchyma, not vessels
    assert core.any()
    assert -800 < float(np.median(ggo.hu[core])) < -350
    cons = synthesize(hu, lungs, sp, 2, {"kind_probs": {"consolidation": 1.0}, "p_empty": 0.0,
                                         "p_air_bronchogram": 0.0}, n_lesions=3)
    assert cons.consolidation.any()
    assert -150 < float(np.median(cons.hu[cons.consolidation])) < 100


def test_vessels_stay_visible_through_ground_glass(chest):
    hu, lungs, sp = chest
    res = synthesize(hu, lungs, sp, 5, {"kind_probs": {"ggo": 1.0}, "size_probs": {"large": 1.0}, "p_empty": 0.0},
                     n_lesions=4)
    vessel = res.lesions & (hu > 0)
    par = res.lesions & (hu < -600)
    if not vessel.any():
        pytest.skip("no vessel inside this draw")
    assert float(np.mean(res.hu[vessel])) > float(np.mean(res.hu[par])) + 150


def test_soft_edges_partial_volume(chest):
    hu, lungs, sp = chest
    res = synthesize(hu, lungs, sp, 7, {"kind_probs": {"consolidation": 1.0}, "p_empty": 0.0,
                                        "edge_mm": [3.0, 3.0]}, n_lesions=2)
    changed = np.abs(res.hu - hu) > 1
    between = changed & (res.hu > -800) & (res.hu < -200) & ~res.lesions
    assert between.any(), "a soft edge leaves intermediate HU just outside the label"


def test_pleural_consolidation_reaches_the_pleura(chest):
    from scipy import ndimage as ndi

    hu, lungs, sp = chest
    res = synthesize(hu, lungs, sp, 11, {"kind_probs": {"consolidation": 1.0}, "size_probs": {"large": 1.0},
                                         "p_pleural_consolidation": 1.0, "p_empty": 0.0}, n_lesions=2)
    assert res.pleural_consolidation.any()
    border = (lungs > 0) & ~ndi.binary_erosion(lungs > 0)
    assert (res.pleural_consolidation & border).any()


def test_medial_bias_moves_lesion_centres_towards_the_midline(chest):
    """``medial_bias`` (a training option for mediastinal-pleura consolidation) pulls centres towards the
    midline; at its default 0 the draws are exactly those of a config without it."""
    hu, lungs, sp = chest
    mid = lungs.shape[2] / 2.0

    def centre_offsets(cfg: dict) -> list[float]:
        out = []
        for s in range(20):
            res = synthesize(hu, lungs, sp, s, {"p_empty": 0.0, "p_uniform_centre": 0.0, **cfg})
            out += [abs(x.centre[2] - mid) for x in res.specs]
        return out

    plain, medial = centre_offsets({}), centre_offsets({"medial_bias": 5.0})
    assert np.mean(medial) < np.mean(plain) - 2.0  # voxels of 3 mm closer to the midline on average
    a = synthesize(hu, lungs, sp, 5, {"p_empty": 0.0})
    b = synthesize(hu, lungs, sp, 5, {"p_empty": 0.0, "medial_bias": 0.0})
    np.testing.assert_array_equal(a.hu, b.hu)


def test_kinds_sizes_and_multifocal_bilateral(chest):
    hu, lungs, sp = chest
    seen_kinds, sides, counts = set(), set(), []
    for s in range(12):
        res = synthesize(hu, lungs, sp, s, {"p_empty": 0.0, "p_bilateral": 1.0})
        seen_kinds |= {x.kind for x in res.specs}
        sides |= {x.side for x in res.specs}
        counts.append(len(res.specs))
    assert seen_kinds == set(KINDS)
    assert sides == {1, 2}
    assert max(counts) >= 3


def test_empty_lungs_give_no_lesions():
    hu = np.zeros((8, 8, 8), np.float32)
    res = synthesize(hu, np.zeros((8, 8, 8), np.uint8), (1.0, 1.0, 1.0), 0)
    assert not res.lesions.any()
