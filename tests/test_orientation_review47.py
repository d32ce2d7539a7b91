"""A small field of view (the audit's phantom reconstructed 180 x 198 mm, 30 mm off centre: review 47) raised
``ORIENTATION_SUSPECT:spine_anterior`` on a supine scan with a right header: the band searched for the spine, centred
on the cut body, held ribs and sternum (4.9 mL of bone, 91 mm in front of the lungs) and no spine. Where the body
reaches the back of the field of view the spine is not measured (pipeline.orientation_check.BACK_CUT_SHARE).

On the same scan the network labelled 169.5 mL of the right lung left, and the classical segmenter split the right
lung into a front (left label) and a back half, without LUNG_SIDES_SWAPPED: the two labels touching over a large area
(segmentation.base.sides_contact_cm2; the six real chests 0 to 7.4 cm2, the phantom 47.5 and 353.6) is flagged
``LUNG_SIDE_MIXED:<cm2>``.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.flags import FLAG_UNITS, SCORING_FLAGS
from pipeline.orientation_check import BACK_CUT_SHARE, back_cut_share, flags_for, measure
from segmentation.base import LEFT_LUNG, RIGHT_LUNG, SIDE_CONTACT_CM2, side_mixed_flags, sides_contact_cm2
from segmentation.classical import body_mask
from tests.test_orientation_check import FLAG, SPACING, chest


def _measure(hu, lungs, padding=None):
    return measure(hu, lungs, body_mask(hu, -500.0), SPACING, padding=padding)


def test_a_field_of_view_that_leaves_out_the_spine_is_not_checked():
    hu, lungs = chest()
    cut = (slice(None), slice(None, 72), slice(None))  # the back of the field in front of the vertebral body
    m = _measure(np.ascontiguousarray(hu[cut]), np.ascontiguousarray(lungs[cut]))
    assert math.isnan(m["spine_offset_mm"]) and m["spine_bone_ml"] > 2  # the sternum's bone, recorded
    assert flags_for(m) == []


def test_the_field_ending_in_padding_behind_the_body_counts_as_its_edge():
    hu, lungs = chest()
    hu[:, 72:] = -1000.0  # the loader's padding (outside a round field) reads as air
    lungs[:, 72:] = 0
    padding = np.zeros(hu.shape, bool)
    padding[:, 72:] = True
    assert flags_for(_measure(hu, lungs)) == [FLAG]  # without the padding mask: the sternum taken for the spine
    m = _measure(hu, lungs, padding)
    assert math.isnan(m["spine_offset_mm"]) and flags_for(m) == []


def test_a_whole_chest_is_checked_and_its_front_back_flip_still_flagged():
    hu, lungs = chest()
    body = body_mask(hu, -500.0)
    assert back_cut_share(body, None, SPACING[1]) == 0.0
    assert flags_for(_measure(hu, lungs)) == []
    flip = (slice(None), slice(None, None, -1), slice(None))
    assert flags_for(_measure(np.ascontiguousarray(hu[flip]), np.ascontiguousarray(lungs[flip]))) == [FLAG]


def test_a_table_reaching_the_edge_on_some_slices_does_not_stop_the_check():
    """The table, taken into the body, reached the image's last row on 41 % of the lungs' slices of a real chest."""
    hu, lungs = chest()
    n = int(0.4 * hu.shape[0])
    hu[:n, 99:, 50:70] = 200.0  # a cushion and table under the back, running off the image
    assert back_cut_share(body_mask(hu, -500.0)[:, :, 40:80], None, SPACING[1]) < BACK_CUT_SHARE
    m = _measure(hu, lungs)
    assert m["spine_offset_mm"] > 20 and flags_for(m) == []


def test_lungs_apart_are_not_mixed_and_a_lung_labelled_in_part_as_the_other_is():
    hu, lungs = chest()
    assert sides_contact_cm2(lungs, SPACING) == 0.0 and side_mixed_flags(lungs, SPACING) == []
    # the right lung's front half labelled left (the classical segmenter on the small field of view)
    front = lungs.copy()
    front[:, :58][front[:, :58] == RIGHT_LUNG] = LEFT_LUNG
    assert sides_contact_cm2(front, SPACING) > SIDE_CONTACT_CM2  # a 52 x 36 mm cut: 36 cm2
    assert side_mixed_flags(front, SPACING)[0].startswith("LUNG_SIDE_MIXED:")
    # the right lung's upper part labelled left (the network on the small field of view)
    upper = lungs.copy()
    upper[20:][upper[20:] == RIGHT_LUNG] = LEFT_LUNG
    assert side_mixed_flags(upper, SPACING) == [f"LUNG_SIDE_MIXED:{sides_contact_cm2(upper, SPACING):.0f}"]


def test_lungs_meeting_along_a_junction_line_are_not_mixed():
    """The anterior junction line: the lungs touch along a thin strip (the real chests: up to 7.4 cm2)."""
    _, lungs = chest()
    lungs[2:28, 40:52, 51:60] = RIGHT_LUNG
    lungs[2:28, 40:52, 60:69] = LEFT_LUNG
    cm2 = sides_contact_cm2(lungs, SPACING)
    assert 0 < cm2 < SIDE_CONTACT_CM2 and side_mixed_flags(lungs, SPACING) == []


def test_the_new_flag_is_explained_with_its_unit():
    assert "LUNG_SIDE_MIXED" in SCORING_FLAGS and FLAG_UNITS["LUNG_SIDE_MIXED"] == "cm2"
    assert "field of view" in SCORING_FLAGS["ORIENTATION_SUSPECT"]
