"""Lesion synthesizer fixes (segmentation/synth.py): the crash on lungs missing the coarse grid, and the
opt-in options (tubular air bronchograms, minimum ground-glass contrast, label where the HU changed, lobular
crazy paving). With the defaults every synthetic case must stay byte-identical to the one the shipped
model was trained on."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import ndimage as ndi

from segmentation.synth import DEFAULTS, synthesize

SHAPE = (40, 64, 80)
SP = (3.0, 3.0, 3.0)


def _chest(lung_hu: float, lung_std: float, seed: int = 0, airway_hu: float | None = None,
           airway_dy: int = 0):
    """A tiny chest on a 3 mm grid: soft tissue, two lungs of smooth parenchyma (``lung_hu`` +- ``lung_std``),
    a vessel in the right lung and, optionally, a bronchus (a straight tube) in each lung."""
    rng = np.random.default_rng(seed)
    hu = np.full(SHAPE, 40.0, np.float32) + rng.normal(0, 10, SHAPE).astype(np.float32)
    lungs = np.zeros(SHAPE, np.uint8)
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    for side, cx in ((1, 22), (2, 58)):  # LPS: right lung at small x
        inside = ((xx - cx) / 16.0) ** 2 + ((yy - 32) / 24.0) ** 2 + ((zz - 20) / 18.0) ** 2 < 1
        lungs[inside] = side
    par = ndi.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), 1.0)
    par = lung_hu + lung_std * par / par.std()
    hu[lungs > 0] = par[lungs > 0]
    hu[(lungs > 0) & ((xx - 22) ** 2 + (yy - 30) ** 2 < 2)] = 30.0  # a vessel
    if airway_hu is not None:
        for cx in (14, 66):  # a bronchus 3 voxels wide, 2 * airway_dy + 1 deep, running head-feet
            hu[(lungs > 0) & (np.abs(xx - cx) <= 1) & (np.abs(yy - 36) <= airway_dy)] = airway_hu
    return hu, lungs, SP


def _normal_chest():
    """The chest of tests/test_synth.py: normal lung about -850 HU."""
    rng = np.random.default_rng(0)
    hu = np.full(SHAPE, 40.0, np.float32) + rng.normal(0, 10, SHAPE).astype(np.float32)
    lungs = np.zeros(SHAPE, np.uint8)
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    for side, cx in ((1, 22), (2, 58)):
        inside = ((xx - cx) / 16.0) ** 2 + ((yy - 32) / 24.0) ** 2 + ((zz - 20) / 18.0) ** 2 < 1
        lungs[inside] = side
    hu[lungs > 0] = -850 + rng.normal(0, 20, int((lungs > 0).sum()))
    hu[(lungs > 0) & ((xx - 22) ** 2 + (yy - 30) ** 2 < 2)] = 30.0
    return hu, lungs, SP


@pytest.fixture(scope="module")
def chest():
    return _normal_chest()


@pytest.fixture(scope="module")
def emphysema():
    """Emphysema-like lung (median about -915 HU, like cip_copdgene ct-64) with a bronchus at -1000 HU."""
    return _chest(-915.0, 30.0, seed=1, airway_hu=-1000.0)


@pytest.fixture(scope="module")
def dense():
    """Dense lung (median about -680 HU, like ge_mister_ct)."""
    return _chest(-680.0, 40.0, seed=2)


def _digest(res) -> str:
    h = hashlib.sha256()
    for a in (res.hu, res.lesions, res.consolidation, res.pleural_consolidation):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr([(s.kind, s.centre, round(s.radius_mm, 9), s.side, round(s.hu, 6), s.pleural, s.voxels)
                   for s in res.specs]).encode())
    return h.hexdigest()[:16]


# (background, seed, cfg, n_lesions) -> digest of synthesize() before the v2 options existed (git HEAD
# 2026-12, numpy/scipy of /work/venv). Covers every kind, legacy air bronchograms firing on emphysema,
# legacy crazy paving and pleural consolidation.
PINNED = [  # (background, seed, cfg, n_lesions, digest)
    ("chest", 0, None, None, "4aad1aba07f38b0b"),
    ("chest", 1, None, None, "4a321ee12fea3091"),
    ("chest", 2, None, None, "e4b991cd7a1fcf08"),
    ("chest", 3, {"p_empty": 0.0}, None, "816f81a9a9e76d41"),
    ("emphysema", 4, {"kind_probs": {"consolidation": 1.0}, "p_air_bronchogram": 1.0}, 3, "dc17bd8c7f128146"),
    ("emphysema", 5, {"kind_probs": {"mixed": 1.0}, "p_air_bronchogram": 1.0}, 3, "15736bd88a3153dd"),
    ("dense", 6, {"kind_probs": {"ggo": 1.0}}, 3, "66e76636adb5b0f4"),
    ("chest", 7, {"kind_probs": {"crazy_paving": 1.0}, "size_probs": {"large": 1.0}}, 2, "4c39f0657026d531"),
    ("chest", 8, {"kind_probs": {"consolidation": 1.0}, "p_pleural_consolidation": 1.0,
                  "size_probs": {"large": 1.0}}, 2, "312a850b934b7b3f"),
    ("anisotropic", 9, {"p_empty": 0.0, "p_air_bronchogram": 1.0}, None, "7b594e3d79a0d74a"),
    ("anisotropic", 10, {"p_empty": 0.0, "p_air_bronchogram": 1.0}, None, "46620716d582e250"),
]


def test_defaults_are_byte_identical_to_the_shipped_training(chest, emphysema, dense):
    """The shipped weights were trained on these exact cases: the new options must be off by default."""
    bgs = {"chest": chest, "emphysema": emphysema, "dense": dense,
           "anisotropic": (*chest[:2], (2.5, 1.5, 1.5))}
    got = [(bg, seed, cfg, n, _digest(synthesize(*bgs[bg], seed, cfg, n_lesions=n)))
           for bg, seed, cfg, n, _ in PINNED]
    assert got == PINNED


@pytest.mark.parametrize("voxels", [[(10, 10, 10)],
                                    [(z, y, x) for z in (10, 11) for y in (10, 11) for x in (13, 14)]])
def test_lung_missing_the_coarse_grid_gives_no_lesion_instead_of_crashing(voxels):
    """Centres are drawn on every 3rd voxel at 1.5 mm: a lung (a crop's sliver) that no grid voxel hits
    crashed ``centre_weights`` (``zero-size array to reduction operation minimum``)."""
    hu = np.full((24, 24, 24), 40.0, np.float32)
    lungs = np.zeros(hu.shape, np.uint8)
    for v in voxels:
        lungs[v] = 1
        hu[v] = -850.0
    for seed in range(3):
        res = synthesize(hu, lungs, (1.5, 1.5, 1.5), seed, {"p_empty": 0.0})
        assert not res.lesions.any() and not res.specs
        np.testing.assert_array_equal(res.hu, hu)


@pytest.fixture(scope="module")
def emphysema_airway():
    """Emphysema-like lung (median about -915 HU) with a wide bronchus of air (-1024 HU) in each lung."""
    return _chest(-915.0, 30.0, seed=1, airway_hu=-1024.0, airway_dy=2)


def test_tubular_air_bronchograms_leave_no_emphysema_holes_in_consolidation(emphysema_airway):
    """Legacy: every voxel < -920 HU after smoothing inside a consolidation kept (nearly) its HU and label,
    so on emphysema (cip_copdgene ct-64) consolidation labels were full of normal-looking lung.
    ``air_bronchogram_below_median_hu`` keeps air only in tube-like air well below the lung median."""
    hu, lungs, sp = emphysema_airway
    cfg = {"kind_probs": {"consolidation": 1.0}, "p_air_bronchogram": 1.0}
    legacy, tubular, airway_air = [], [], 0
    for seed in range(4):
        a = synthesize(hu, lungs, sp, seed, cfg, n_lesions=3)
        b = synthesize(hu, lungs, sp, seed, {**cfg, "air_bronchogram_below_median_hu": 100.0}, n_lesions=3)
        legacy.append(float((a.hu[a.consolidation] < -700).mean()))
        tubular.append(float((b.hu[b.consolidation] < -700).mean()))
        kept = b.consolidation & (b.hu < -900)
        assert not (kept & (hu > -1000)).any(), "air kept outside the bronchus"
        assert (b.hu[kept] >= -1000).all() and (b.hu[kept] <= -950).all()
        airway_air += int(kept.sum())
    assert np.median(legacy) > 0.2  # the defect: about a third of the consolidation label looks like lung
    assert max(tubular) < 0.02
    assert airway_air > 0  # the bronchus still shows as an air bronchogram


def test_ggo_min_contrast_makes_ground_glass_visible_on_dense_lung(dense):
    """On dense lung (median about -680 HU, like ge_mister_ct) a -700..-650 HU ground glass adds next to
    nothing: a label with no visible opacity. ``ggo_min_contrast_hu`` lifts the level above the local lung."""
    hu, lungs, sp = dense
    cfg = {"kind_probs": {"ggo": 1.0}, "ggo_hu": [-700.0, -650.0]}
    for seed in range(3):
        for c, lo, hi in ((0.0, 0.0, 120.0), (150.0, 150.0, np.inf)):
            res = synthesize(hu, lungs, sp, seed, {**cfg, "ggo_min_contrast_hu": c}, n_lesions=3)
            par = res.lesions & (hu < -400)  # parenchyma, not vessels
            lung_median = float(np.median(hu[(lungs > 0) & ~res.lesions]))
            contrast = float(np.median(res.hu[par])) - lung_median
            assert lo <= contrast < hi, (seed, c, contrast)


def test_label_min_change_labels_every_visibly_changed_voxel(chest):
    """Legacy: the label is cut at alpha 0.5 while the soft edge beyond it is raised by > 50 HU (3-16 % of the
    label volume), consolidation rims pushed from < -750 to > -650 HU unlabelled. ``label_min_change_hu``
    labels each voxel a lesion raised by at least that much (never less than the alpha label)."""
    hu, lungs, sp = chest
    rims = []
    for seed in range(4):
        a = synthesize(hu, lungs, sp, seed, {"p_empty": 0.0})
        rims.append(int(((hu < -750) & (a.hu > -650) & ~a.lesions).sum()))
        unlab50 = ((a.hu - hu > 50) & ~a.lesions).sum() / a.lesions.sum()
        assert unlab50 > 0.02  # the defect
        for thr in (50.0, 100.0):
            b = synthesize(hu, lungs, sp, seed, {"p_empty": 0.0, "label_min_change_hu": thr})
            np.testing.assert_array_equal(a.hu, b.hu)  # same image, only the label changes
            assert (b.lesions >= a.lesions).all() and not (b.lesions & (lungs == 0)).any()
            assert not ((b.hu - hu >= thr) & ~b.lesions).any()
            assert not ((hu < -750) & (b.hu > -650) & ~b.lesions).any()
            np.testing.assert_array_equal(a.consolidation, b.consolidation)
    assert max(rims) > 0


def _line_network(res, hu) -> tuple[float, int, float]:
    """(share of the lesion's parenchyma raised > 60 HU over its ground glass, number of connected line
    pieces, share of the line voxels in the largest piece)."""
    par = res.lesions & (hu < -750)
    line = par & (res.hu > max(s.hu for s in res.specs) + 60)
    lab, n = ndi.label(line, structure=np.ones((3, 3, 3)))
    big = np.bincount(lab.ravel())[1:].max() / line.sum() if n else 0.0
    return float(line[par].mean()), n, float(big)


def test_lobular_crazy_paving_draws_a_network_of_septal_lines(chest):
    """Legacy crazy paving is speckle (hundreds of line fragments, 0.7-8 % of the lesion raised > 60 HU).
    ``crazy_paving_lobule_mm`` draws the walls of 10-25 mm lobules: a connected polygonal network."""
    hu, lungs, sp = (*chest[:2], (2.5, 2.5, 2.5))
    cfg = {"kind_probs": {"crazy_paving": 1.0}, "size_probs": {"large": 1.0}, "crazy_line_hu": [150.0, 250.0]}
    for seed in range(3):
        frac0, n0, big0 = _line_network(synthesize(hu, lungs, sp, seed, cfg, n_lesions=1), hu)
        lobular = {**cfg, "crazy_paving_lobule_mm": [10.0, 25.0]}
        frac1, n1, big1 = _line_network(synthesize(hu, lungs, sp, seed, lobular, n_lesions=1), hu)
        assert n0 > 50 and big0 < 0.6  # the defect: scattered speckle
        assert n1 <= 15 and big1 > 0.85 and frac1 > 0.15


@pytest.mark.parametrize("cell_mm", [10.0, 15.0, 25.0])
def test_septal_lines_enclose_lobules_of_the_asked_size(cell_mm):
    from segmentation.synth import septal_lines

    sp = np.full(3, 1.5)
    n = 60
    lines = septal_lines((n, n, n), sp, np.ones((n, n, n), bool), cell_mm, 1.5, np.random.default_rng(0))
    cells, _ = ndi.label(lines < 0.5)
    edge = np.unique(np.concatenate([f.ravel() for f in (cells[0], cells[-1], cells[:, 0], cells[:, -1],
                                                          cells[:, :, 0], cells[:, :, -1])]))
    vol = np.bincount(cells.ravel()).astype(float)
    vol[edge] = 0
    diam = (6 * vol[vol > 0] * sp.prod() / np.pi) ** (1 / 3)  # volume-equivalent diameter of inner lobules
    assert len(diam) >= 3
    assert 0.75 * cell_mm < np.median(diam) < 1.3 * cell_mm
    # septa about 1.5 mm thick: the line share of the volume is about 3 walls x 1.5 mm per cell
    assert 0.5 < (lines >= 0.5).mean() / (3 * 1.5 / cell_mm) < 1.5


def test_new_options_pass_the_training_config_checks():
    """The options are numbers so that training configs carrying them pass check_train_config as it is."""
    from pathlib import Path

    from segmentation.recipe import merge_stage, read_train_config
    from segmentation.training import check_train_config

    cfg = Path(__file__).resolve().parents[1] / "configs" / "training" / "synth_v2_example.yaml"
    common, stages, problem = read_train_config(cfg)
    assert problem is None
    synth = merge_stage(common, stages[0])["synth"]
    assert {"air_bronchogram_below_median_hu", "ggo_min_contrast_hu", "label_min_change_hu",
            "crazy_paving_lobule_mm"} <= set(synth)
    assert check_train_config(merge_stage(common, stages[0])) == []
    for k in ("air_bronchogram_below_median_hu", "ggo_min_contrast_hu", "label_min_change_hu"):
        assert DEFAULTS[k] == 0.0
    assert max(DEFAULTS["crazy_paving_lobule_mm"]) == 0.0


def test_lobule_size_near_zero_is_refused(chest):
    """A lobule range reaching 0 mm would tessellate the box into millions of cells."""
    hu, lungs, sp = chest
    with pytest.raises(ValueError, match="crazy_paving_lobule_mm"):
        synthesize(hu, lungs, sp, 0, {"crazy_paving_lobule_mm": [0.0, 25.0]})
