"""The same chest in any DICOM encoding gives the same scores.

Orientation (feet first, prone, rows and columns swapped, mirrored rows, descending slices, an off-centre origin) is
covered by the loader's and the pipeline's tests; rewriting real scans that way (normal001, cap001, classical and
network) gave identical scores. What did not hold is the field of view: the network's output depended on how much
air the scanner wrote around the patient (a larger field of view, a 768 x 768 matrix of 0.5 x 1.0 mm pixels).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tests.conftest import require  # noqa: E402
from tests.test_segmentation_monai import phantom, tiny_weights  # noqa: E402

AIR = -1000.0


def _in_wider_fov(hu: np.ndarray, ny: int, nx: int) -> np.ndarray:
    """``hu`` [z, y, x] with ``ny`` / ``nx`` voxels of air added on each side in-plane: a larger field of view."""
    return np.pad(hu, ((0, 0), (ny, ny), (nx, nx)), constant_values=AIR)


def test_network_output_does_not_depend_on_the_air_around_the_body(tmp_path):
    """A body that fills the field of view, and the same body written with 30-60 mm of air around it: the
    network sees the same input (the body with a margin of air), so it gives the same probabilities (the masks'
    clean-up with random weights would differ where the network calls the extra air lung).
    Before, the whole field of view went through the instance-normalised network: more air, other output."""
    from segmentation.monai_segmenter import MonaiSegmenter

    seg = MonaiSegmenter(weights_path=tiny_weights(tmp_path / "w"), device="cpu")
    hu, sp = phantom()  # body (40 HU) to the edges of the array, two lungs
    wide = _in_wider_fov(hu, 10, 20)
    inner = (slice(None), slice(10, 10 + hu.shape[1]), slice(20, 20 + hu.shape[2]))

    p0, p1 = seg.probabilities(hu, sp), seg.probabilities(wide, sp)
    for key in ("lung", "lesion"):
        np.testing.assert_array_equal(p1[key][inner], p0[key])


def test_body_crop_pads_a_body_cut_by_the_field_of_view():
    """The box is the body (above -500 HU) plus 5 mm; where the field of view cuts the body, the margin is
    air added in-plane, never along z (the chest is always cut there)."""
    from segmentation.monai_segmenter import body_crop

    hu = np.full((10, 50, 60), AIR, np.float32)
    hu[:, 20:50, 15:40] = 40.0  # reaches the posterior edge (y) and every slice (z)
    box, pad = body_crop(hu, (2.0, 2.0, 2.5))
    assert box == (slice(0, 10), slice(17, 50), slice(13, 42))
    assert pad == [(0, 0), (0, 3), (0, 0)]
    box, pad = body_crop(np.full((4, 8, 8), AIR, np.float32), (1.0, 1.0, 1.0))  # no body: everything, as is
    assert box == (slice(0, 4), slice(0, 8), slice(0, 8)) and pad == [(0, 0)] * 3


@pytest.mark.slow
def test_shipped_network_on_cap001_in_a_500_mm_field_of_view(shared_data, monai_memo):
    """cap001 (302 mm field of view) and the same voxels in a 500 mm field of view (air around it): the same
    lungs and lesions. Before: lungs 5850 -> 6885 mL, lesions 249 -> 1241 mL, apices lost."""
    import SimpleITK as sitk

    from pipeline.config import load_config
    from pipeline.loading import load_series
    from pipeline.resample import resample_to_spacing, to_lps
    from segmentation.monai_segmenter import MonaiSegmenter

    folder = require(shared_data / "chest" / "cap001")
    cfg = load_config()
    vol = load_series(sorted(p for p in folder.rglob("*.dcm")), cfg)
    work = resample_to_spacing(to_lps(vol.image), cfg["resample"]["spacing_mm"])
    hu = sitk.GetArrayFromImage(work)
    sp = tuple(work.GetSpacing()[::-1])
    extra = int(round((500.0 - hu.shape[2] * sp[2]) / 2 / sp[2]))
    seg = MonaiSegmenter(device="cpu")
    a, b = seg.segment(hu, sp), seg.segment(_in_wider_fov(hu, extra, extra), sp)
    ml = float(np.prod(sp)) / 1000
    for side in (1, 2):
        va, vb = (a.lungs == side).sum() * ml, (b.lungs == side).sum() * ml
        assert abs(vb - va) < 0.01 * va, (side, va, vb)
    la, lb = a.lesions.sum() * ml, b.lesions.sum() * ml
    assert abs(lb - la) < 0.03 * la + 1.0, (la, lb)


def test_body_margin_is_an_option_checked_at_build(tmp_path):
    """segmentation.monai.body_margin_mm (default 5) sets the air around the body in the network's box, for
    experiments (scripts/evaluate_segmenter.py --body-margin-mm); a negative or NaN margin is refused."""
    from pipeline.config import load_config
    from pipeline.errors import ConfigError
    from segmentation.monai_segmenter import BODY_MARGIN_MM, MonaiSegmenter, body_crop

    assert load_config()["segmentation"]["monai"]["body_margin_mm"] == BODY_MARGIN_MM == 5.0
    cfg = load_config(overrides=["segmentation.monai.body_margin_mm=20"])
    assert MonaiSegmenter(device="cpu", cfg=cfg).body_margin_mm == 20.0
    for bad in ("-1", "nan"):
        with pytest.raises(ConfigError, match="body_margin_mm must be in"):
            MonaiSegmenter(device="cpu", cfg={"segmentation": {"monai": {"body_margin_mm": float(bad)}}})
    hu = np.full((10, 50, 60), AIR, np.float32)
    hu[:, 20:30, 20:30] = 40.0
    box, _ = body_crop(hu, (2.0, 2.0, 2.0), margin_mm=20.0)
    assert box[1] == slice(10, 40) and box[2] == slice(10, 40)
