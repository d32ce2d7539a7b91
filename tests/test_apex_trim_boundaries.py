"""The network segmenter's apex steps (``segmentation.monai_segmenter.trim_unaerated_apex``,
``trim_apex_soft_tissue``) at their boundaries: the depth that keeps consolidation, the top window, distances in mm on
anisotropic pixels, the other lung inside a lung's box, a lung the scan cuts at its top (a review, 2026-12-07)."""
from __future__ import annotations

import numpy as np
import pytest

from segmentation.base import LEFT_LUNG, RIGHT_LUNG
from segmentation.monai_segmenter import trim_apex_soft_tissue, trim_unaerated_apex

SP = (2.0, 1.0, 1.0)


def _col(z=40, cons_slices=0, block_z=(36, 40)):
    """A right lung 40 slices (80 mm) high, aerated; a 20 x 10 mm airless block 13-22 mm beside it in slices
    block_z; optional consolidation (medial 12 mm of the lung) in its top ``cons_slices`` slices."""
    lungs = np.zeros((z + 6, 40, 60), np.uint8)  # (empty slices on top: the scan holds the apex)
    hu = np.full(lungs.shape, 40.0, np.float32)
    lungs[:z, 10:30, 10:30] = RIGHT_LUNG
    hu[:z, 10:30, 10:30] = -850.0
    lungs[block_z[0]:block_z[1], 10:30, 40:50] = RIGHT_LUNG
    if cons_slices:
        hu[z - cons_slices:z, 10:30, 10:22] = 30.0
    return lungs, hu


@pytest.mark.parametrize("n, stays", [(13, True), (12, False)])
def test_step2_deep_boundary_is_exactly_deep_mm_below_the_top(n, stays):
    """Consolidation spanning 13 slices (its lowest 24 mm = 12 slices below the top at 2 mm) reaches 25 mm's
    floor(25 / 2) = 12 slices: it stays; one slice shorter, the part > 5 mm from air goes."""
    lungs, hu = _col(cons_slices=n, block_z=(0, 0))
    cons = (hu == 30.0) & (lungs == RIGHT_LUNG)
    trim_apex_soft_tissue(lungs, hu, SP)
    assert (lungs[cons] == RIGHT_LUNG).all() == stays


@pytest.mark.parametrize("n, stays", [(13, True), (12, False)])
def test_step1_deep_is_measured_from_the_highest_aerated_slice(n, stays):
    """Four airless slices on top of the lung; the consolidation below reaches n slices under the highest aerated
    slice (the reference of trim_unaerated_apex, not the mask's top)."""
    lungs, hu = _col(block_z=(0, 0))
    lungs[40:44, 10:30, 10:30] = RIGHT_LUNG
    hu[40:44, 10:30, 10:30] = 30.0
    # slices 40-n .. 39; 39 is the highest aerated (columns 22-29): 13 slices reach 39 - 12
    hu[40 - n:40, 10:30, 10:22] = 30.0
    trim_unaerated_apex(lungs, hu, SP)
    assert (lungs[40:42, 10:30, 10:22] == RIGHT_LUNG).all() == stays  # the cap above the consolidation


@pytest.mark.parametrize("k, goes", [(29, True), (28, False)])
def test_step2_top_window_is_top_mm(k, goes):
    """A one-slice airless block at slice k: slice 29 is 20 mm below the top (39), inside; slice 28 is outside."""
    lungs, hu = _col(block_z=(k, k + 1))
    removed = trim_apex_soft_tissue(lungs, hu, SP)
    assert (RIGHT_LUNG in removed) == goes


def test_in_plane_distance_is_in_mm_with_anisotropic_pixels():
    """1 mm rows, 0.5 mm columns: a block 8 columns (4 mm) wide beside aerated lung lies within 5 mm: it stays."""
    sp = (2.0, 1.0, 0.5)
    lungs = np.zeros((41, 40, 60), np.uint8)  # (an empty top slice: the scan holds the apex)
    hu = np.full(lungs.shape, 40.0, np.float32)
    lungs[:40, 10:30, 10:30] = RIGHT_LUNG
    hu[:40, 10:30, 10:30] = -850.0
    lungs[36:40, 10:30, 30:38] = RIGHT_LUNG
    assert trim_apex_soft_tissue(lungs, hu, sp) == {}
    lungs[36:40, 10:30, 30:42] = RIGHT_LUNG  # 6 mm: the last 2 columns (5.5, 6 mm) go
    assert trim_apex_soft_tissue(lungs, hu, sp) == {RIGHT_LUNG: pytest.approx(4 * 20 * 2 * 2 * 0.5 / 1000)}


def test_the_other_lung_inside_a_lungs_box_is_never_changed():
    """The right lung's box holds the left lung's airless tissue at the right's apex level (the left's top lies
    40 mm higher, so that tissue is not in the left's own top 20 mm): both steps leave every left voxel alone."""
    lungs = np.zeros((70, 40, 90), np.uint8)
    hu = np.full(lungs.shape, 40.0, np.float32)
    lungs[:40, 5:35, 5:30] = RIGHT_LUNG
    lungs[30:40, 5:10, 30:85] = RIGHT_LUNG  # a tongue of the right lung: its box spans the left lung
    hu[lungs == RIGHT_LUNG] = -850.0
    lungs[:60, 15:35, 60:85] = LEFT_LUNG
    hu[:60, 15:35, 60:85] = -850.0
    lungs[30:40, 15:35, 40:58] = LEFT_LUNG  # airless left-lung tissue inside the right's box, beside its apex
    lungs[40:44, 20:30, 10:20] = RIGHT_LUNG  # an airless cap on the right apex (neck tissue), 4 slices
    left = lungs == LEFT_LUNG
    assert trim_unaerated_apex(lungs, hu, SP) == {RIGHT_LUNG: pytest.approx(4 * 100 * 0.002)}
    trim_apex_soft_tissue(lungs, hu, SP)
    np.testing.assert_array_equal(lungs == LEFT_LUNG, left)


def test_a_lung_the_scan_cuts_at_its_top_is_left_alone():
    """The lung runs out of the volume's top slice (a scan starting below the apices): its top is the scan's edge, and
    consolidation there, far from air and not 25 mm deep, stays; with one empty slice above, the same goes."""
    lungs = np.zeros((40, 40, 60), np.uint8)
    hu = np.full(lungs.shape, 40.0, np.float32)
    lungs[:, 10:30, 10:30] = RIGHT_LUNG
    hu[:, 10:30, 10:30] = -850.0
    hu[31:, 10:30, 10:22] = 30.0  # 18 mm of consolidation at the top, the medial 12 mm of the lung
    lungs[35:, 10:30, 40:50] = RIGHT_LUNG  # and tissue beside it
    before = lungs.copy()
    assert trim_apex_soft_tissue(lungs, hu, SP) == {} and trim_unaerated_apex(lungs, hu, SP) == {}
    np.testing.assert_array_equal(lungs, before)
    hu[39] = 30.0  # the top slice airless too: still the scan's edge
    assert trim_unaerated_apex(lungs, hu, SP) == {} and trim_apex_soft_tissue(lungs, hu, SP) == {}
    padded_lungs = np.concatenate([before, np.zeros((1,) + before.shape[1:], np.uint8)])
    padded_hu = np.concatenate([hu, np.full((1,) + hu.shape[1:], 40.0, np.float32)])
    assert RIGHT_LUNG in trim_unaerated_apex(padded_lungs, padded_hu, SP)


def test_a_lung_under_25_mm_high_is_left_alone():
    """A piece of lung 18 mm high, two thirds airless: no part of it can reach 25 mm down, so the beside-apex step
    leaves it (it took 57 % of such a piece)."""
    lungs = np.zeros((20, 40, 60), np.uint8)
    hu = np.full(lungs.shape, 40.0, np.float32)
    lungs[5:14, 10:30, 10:40] = RIGHT_LUNG
    hu[5:14, 10:30, 10:20] = -850.0
    assert trim_apex_soft_tissue(lungs, hu, SP) == {}
