"""scripts/cut_coverage.py: how a segmenter handles a scan that ends inside the lungs (coverage, the cut level and the
lung lost there), on a synthetic chest with two segmenters standing in for the real ones."""

from __future__ import annotations

import numpy as np
import pytest

from segmentation.base import LEFT_LUNG, RIGHT_LUNG
from tests.scripts_loader import load_script

SP = (1.5, 1.5, 1.5)


def chest() -> dict[str, np.ndarray]:
    """Lungs over slices 10..109 (z growing cranially), HU -850 in them and 40 elsewhere."""
    lungs = np.zeros((120, 40, 60), np.uint8)
    lungs[10:110, 5:35, 3:27] = RIGHT_LUNG
    lungs[10:110, 5:35, 33:57] = LEFT_LUNG
    hu = np.where(lungs > 0, -850, 40).astype(np.int16)
    return {"hu": hu, "lungs": lungs, "airway": np.zeros(lungs.shape, bool), "z_mm": np.arange(120) * 1.5 - 100.0,
            "spacing": np.asarray(SP)}


def by_hu(hu: np.ndarray, spacing) -> np.ndarray:
    """A segmenter that sees every aerated voxel: right lung in the image's left half."""
    out = np.zeros(hu.shape, np.uint8)
    air = hu < -500
    out[:, :, :30][air[:, :, :30]] = RIGHT_LUNG
    out[:, :, 30:][air[:, :, 30:]] = LEFT_LUNG
    return out


def drops_bottom_slices(hu: np.ndarray, spacing) -> np.ndarray:
    """As :func:`by_hu`, but the last 4 slices at the volume's bottom are left out (the network at a cut base)."""
    out = by_hu(hu, spacing)
    out[:4] = 0
    return out


def test_a_segmenter_that_follows_the_lung_to_the_edge_sees_every_cut():
    rows = load_script("cut_coverage").cut_rows(chest(), by_hu, [6.0, 15.0])
    assert len(rows) == 8  # 2 ends x 2 depths x 2 lungs
    assert all(r["cut"] and r["level"] == "missing" for r in rows)
    assert all(r["dv_ml"] == 0.0 and r["edge_mm2"] == r["edge_whole_mm2"] > 0 for r in rows)


def test_a_segmenter_that_drops_the_bottom_slices_misses_the_cut_and_is_flagged():
    rows = load_script("cut_coverage").cut_rows(chest(), drops_bottom_slices, [6.0])
    bottom = [r for r in rows if r["end"] == "bottom"]
    assert [r["lung"] for r in bottom] == ["right", "left"]
    for r in bottom:
        assert not r["cut"] and r["level"] == "uncertain"  # LANDMARK_UNCERTAIN:base_<side>
        assert r["edge_mm2"] == 0.0 and r["edge_whole_mm2"] == pytest.approx(30 * 24 * 2.25)
        assert r["dv_ml"] == pytest.approx(-4 * 30 * 24 * np.prod(SP) / 1000.0)
    top = [r for r in rows if r["end"] == "top"]
    assert all(r["cut"] and r["level"] == "missing" for r in top)


@pytest.mark.parametrize("bad", ["0", "-5", "six", ""])
def test_bad_depths_are_refused(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        load_script("cut_coverage").main(["--inside", bad, "--data-root", str(tmp_path)])
    assert exc.value.code == 2 and "--inside" in capsys.readouterr().err


def test_a_scan_folder_that_is_not_there_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        load_script("cut_coverage").main(["--data-root", str(tmp_path), "--scans", "nosuchscan"])
    assert exc.value.code == 2 and "nosuchscan" in capsys.readouterr().err


def with_lesions(segment):
    return lambda hu, spacing: (segment(hu, spacing), np.zeros(hu.shape, bool))


def test_beyond_a_voxelwise_segmenter_does_not_depend_on_the_scans_extent():
    """--beyond: the scan cut outside its lungs (8 / 5 mm: slices 10 and 110 bound the lungs, 15 mm of scan on
    each side beyond them) and segmented again; a segmenter that reads each voxel alone gives the same volumes."""
    rows = load_script("cut_coverage").beyond_rows(chest(), with_lesions(by_hu), [8.0, 5.0, 30.0])
    assert [(r["end"], r["beyond_mm"]) for r in rows] == [("bottom", 8.0), ("bottom", 5.0), ("top", 8.0),
                                                          ("top", 5.0)]  # 30 mm: more than the scan holds
    assert all(r["scan_beyond_mm"] == 15.0 for r in rows)
    assert all(r["d_right_ml"] == r["d_left_ml"] == r["d_lesion_ml"] == 0.0 for r in rows)


def test_beyond_a_segmenter_that_reads_the_scans_length_is_caught():
    """One that labels more lesion the shorter the scan (as the network's whole-volume view can) shows it."""
    def by_length(hu, spacing):
        lungs = by_hu(hu, spacing)
        lesions = np.zeros(hu.shape, bool)
        lesions[:, 20, 10:10 + max(0, 120 - hu.shape[0])] = True  # one voxel a slice per slice cut away
        return lungs, lesions & (lungs > 0)

    rows = load_script("cut_coverage").beyond_rows(chest(), by_length, [5.0])
    assert [r["d_right_ml"] for r in rows] == [0.0, 0.0]
    assert all(r["d_lesion_ml"] > 0 for r in rows)


def test_bad_margins_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        load_script("cut_coverage").main(["--beyond", "-8", "--data-root", str(tmp_path)])
    assert exc.value.code == 2 and "--beyond" in capsys.readouterr().err


def test_beyond_cuts_at_the_reference_ends_when_given():
    """Two segmenters whose masks end at different slices are cut at the same slices: from the reference levels."""
    cc = load_script("cut_coverage")
    a = chest()
    z = a["z_mm"]
    rows = cc.beyond_rows(a, with_lesions(by_hu), [3.0], lung_ends_mm=(float(z[14]), float(z[105])))
    assert [r["scan_beyond_mm"] for r in rows] == [21.0, 21.0]  # 14 slices below, 14 above, not the mask's 10
    ref = {"s": {"base_right": -80.0, "base_left": -85.0, "apex_right": 60.0, "apex_left": 62.0},
           "t": {"base_right": None, "base_left": -85.0, "apex_right": 60.0, "apex_left": 62.0}}
    assert cc.reference_ends(ref, "s") == (-85.0, 62.0)
    assert cc.reference_ends(ref, "t") is None and cc.reference_ends(ref, "u") is None
