"""scripts/compare_segmenters.py: the lung one segmenter adds over another, piece by piece."""

import numpy as np

from tests.scripts_loader import load_script


def test_added_pieces_volume_place_density_and_lesion_share(tmp_path):
    cs = load_script("compare_segmenters")
    hu = np.full((20, 30, 40), -850.0, np.float32)
    a = np.zeros(hu.shape, np.uint8)
    a[:, :, 2:17] = 1
    a[:, :, 23:38] = 2
    b = a.copy()
    les = np.zeros(hu.shape, np.uint8)
    # B takes a soft-tissue block beside the left lung (an aorta): 4 x 5 x 3 = 60 voxels, not lesion
    b[8:12, 20:25, 20:23] = 2
    hu[8:12, 20:25, 20:23] = 40.0
    # and a small piece of consolidation beside the right lung, half called lesion: 2 x 2 x 2 = 8 voxels
    b[2:4, 5:7, 17:19] = 1
    hu[2:4, 5:7, 17:19] = -20.0
    les[2:4, 5:7, 17] = 1
    # and gives some lung away (not an added piece)
    b[0, 0, 2:5] = 0
    pieces = cs.added_pieces(a, b, les, hu, (2.0, 1.0, 1.0), min_ml=0.0)
    assert [p["side"] for p in pieces] == ["left", "right"]
    big, small = pieces
    assert big["ml"] == 60 * 2.0 / 1000 and small["ml"] == 8 * 2.0 / 1000
    assert big["centre_zyx"] == (10, 22, 21) and big["centre_mm_zyx"] == (20.0, 22.0, 21.0)
    assert big["median_hu"] == 40.0 and big["lesion_frac"] == 0.0
    assert small["median_hu"] == -20.0 and small["lesion_frac"] == 0.5
    # the size floor leaves the small piece out; identical masks add nothing
    assert len(cs.added_pieces(a, b, les, hu, (2.0, 1.0, 1.0), min_ml=0.05)) == 1
    assert cs.added_pieces(a, a, les, hu, (2.0, 1.0, 1.0)) == []
    # the picture is written whole (atomically) under its name
    from types import SimpleNamespace

    out = tmp_path / "diff.png"
    cs.picture(out, hu, SimpleNamespace(lungs=a, lesions=les), SimpleNamespace(lungs=b, lesions=les), pieces)
    assert out.stat().st_size > 1000 and not list(tmp_path.glob("*.part.png"))
