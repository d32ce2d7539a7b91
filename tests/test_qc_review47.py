"""QC pictures after an audit (review 47): which lung is which, tilted slices, the legend's swatches, the thumbnail's
side markers, and header variants that must draw the same picture.

Each test reads as the finding it checks: a lung labelled as the wrong side shows in qc.png and levels.png; a
15-degree tilted stack is drawn from an axial reformat (its coronal view a coronal cut, its rows at their own z); the
fill swatches are the colour of the fills as drawn; the thumbnail says which side is which in a legible font; and a
small phantom written with other headers (feet first, rows or columns flipped, files in reverse order) draws a
pixel-identical qc.png.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")


def _rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert("RGB"), dtype=float) / 255


@pytest.fixture(scope="module")
def phantom():
    """A small phantom (4 mm pixels, 5 mm slices) with the sample's lesions."""
    from pipeline.phantom import make_phantom

    return make_phantom(shape=(56, 80, 80), spacing=(5.0, 4.2, 4.2), seed=1)


def _qc(ph, lungs, **kw) -> bytes:
    from pipeline.qc import qc_png

    return qc_png(ph.hu, lungs, ph.lesions, ph.z_mm, ph.spacing, dict(ph.landmarks_z_mm), **kw)


# --- 1. the two lungs drawn apart ------------------------------------------------------------------------------------

def test_part_of_the_right_lung_labelled_left_changes_qc_png(phantom, monkeypatch):
    """Both lungs were outlined in one colour: 938 mL of a right lung labelled left drew a byte-identical qc.png. The
    left lung is dashed now, and the legend names both."""
    from pipeline import qc

    names: list[list[str]] = []
    handles: list[list] = []
    legend = qc.legend_right_of

    def spy(fig, note, hs, ns):
        names.append(list(ns))
        handles.append(list(hs))
        return legend(fig, note, hs, ns)

    monkeypatch.setattr(qc, "legend_right_of", spy)
    right = phantom.lungs == 1
    wrong = phantom.lungs.copy()
    wrong[right & (np.arange(wrong.shape[1])[None, :, None] < np.median(np.nonzero(right)[1]))] = 2  # its front half
    assert (wrong != phantom.lungs).sum() * phantom.voxel_ml > 200
    before, after = _rgb(_qc(phantom, phantom.lungs)), _rgb(_qc(phantom, wrong))
    changed = np.abs(before - after).sum(axis=2) > 0.1
    assert changed.sum() > 200, changed.sum()
    assert "R lung" in names[0] and "L lung" in names[0]
    r, l_ = (handles[0][names[0].index(n)] for n in ("R lung", "L lung"))
    assert r.get_linestyle() == "solid" and l_.get_linestyle() != "solid"  # the left dashed, as drawn


def test_part_of_the_right_lung_labelled_left_changes_levels_png(phantom):
    """levels.png's coronal view outlines the right lung solid and the left dashed, and says so."""
    from pipeline.qc_levels import levels_png

    right = phantom.lungs == 1
    wrong = phantom.lungs.copy()
    top = np.median(phantom.z_mm[np.nonzero(right.any(axis=(1, 2)))[0]])
    wrong[right & (phantom.z_mm > top)[:, None, None]] = 2  # its upper half, through every coronal row
    lm = {"carina": {"z_mm": phantom.landmarks_z_mm["carina"], "method": "detected"}}
    pics = [levels_png(phantom.hu, m, phantom.z_mm, phantom.spacing, lm) for m in (phantom.lungs, wrong)]
    changed = np.abs(_rgb(pics[0]) - _rgb(pics[1])).sum(axis=2) > 0.1
    assert changed.sum() > 50, changed.sum()

    import matplotlib.figure

    captured: list[str] = []
    orig = matplotlib.figure.Figure.suptitle

    def spy(self, t, **kw):
        captured.append(t)
        return orig(self, t, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.figure.Figure, "suptitle", spy)
        levels_png(phantom.hu, phantom.lungs, phantom.z_mm, phantom.spacing, lm)
    assert "R lung solid, L lung dashed" in captured[0]


# --- 2. tilted slices drawn from an axial reformat -------------------------------------------------------------------

def _tilted(img, deg: float, interp):
    """``img`` resampled onto a stack tilted ``deg`` about x around its centre at the carina's level, z = 0 (what a
    gantry tilt leaves after the loader's shear, as tests/test_tilted_scoring.py and the audit make it)."""
    a = np.radians(deg)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    centre = np.array(img.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in img.GetSize()]))
    centre[2] = 0.0
    size = [img.GetSize()[0], img.GetSize()[1], int(img.GetSize()[2] * 1.1)]
    spacing = np.array(img.GetSpacing())
    origin = centre - rot @ (spacing * (np.array(size) - 1) / 2)
    default = -1000.0 if interp == sitk.sitkLinear else 0
    return sitk.Resample(img, size, sitk.Transform(), interp, origin.tolist(), spacing.tolist(),
                         rot.flatten().tolist(), default)


def _coronal_cut(lungs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The lesion pixels of qc.png's coronal view, [z, x]: the row at the lung voxels' mean y (as the montage cuts
    it)."""
    per_row = np.count_nonzero(lungs, axis=(0, 2))
    yc = int(round(float(per_row @ np.arange(per_row.size)) / per_row.sum()))
    return classes[:, yc, :] > 0


def _overlap(ref: np.ndarray, z_ref: np.ndarray, cut: np.ndarray, z_cut: np.ndarray) -> int:
    """How many of the reference cut's lesion pixels are lesion in ``cut`` at the row labelled with the nearest z
    (the same columns: a tilt about x keeps them)."""
    rows = np.abs(np.asarray(z_cut)[None, :] - np.asarray(z_ref)[:, None]).argmin(axis=1)
    return int((ref & cut[rows]).sum())


def test_a_tilted_stack_is_drawn_from_an_axial_reformat():
    """On a 15-degree stack the coronal view was an oblique cut (70 mm front to back, missing the lesions) with rows
    7.7 mm off their labels (the audit's phantom: lesions in the right lung only). The pictures' arrays
    (:func:`pipeline.run.picture_arrays`) are an axial reformat: the coronal cut holds at least half the untilted
    reference's lesion pixels where the reference has them, at rows labelled with their z; each slice's label is
    the true z of the lesions in it, within half a slice."""
    from pipeline.phantom import CONSOLIDATION, GGO, RIGHT, LesionSpec, make_phantom
    from pipeline.run import picture_arrays, plane_tilt_deg, slice_z_mm

    les = [LesionSpec("rll_ggo", RIGHT, GGO, (-80.0, 40.0, -95.0), (38.0, 35.0, 16.0)),
           LesionSpec("rul_cons", RIGHT, CONSOLIDATION, (-84.0, -5.0, 31.0), (26.0, 28.0, 14.0))]
    phantom = make_phantom(shape=(56, 80, 80), spacing=(5.0, 4.2, 4.2), lesions=les, seed=3)

    def image(arr, dtype):
        img = sitk.GetImageFromArray(arr.astype(dtype))
        img.SetSpacing(tuple(float(s) for s in phantom.spacing[::-1]))
        img.SetOrigin(tuple(float(o) for o in phantom.origin))
        return img

    tilted = _tilted(image(phantom.hu, np.float32), 15.0, sitk.sitkLinear)
    assert plane_tilt_deg(tilted) == pytest.approx(15.0)
    lungs = sitk.GetArrayFromImage(_tilted(image(phantom.lungs, np.uint8), 15.0, sitk.sitkNearestNeighbor))
    classes = sitk.GetArrayFromImage(_tilted(image(phantom.lesions, np.uint8), 15.0, sitk.sitkNearestNeighbor))
    z_tilted = slice_z_mm(tilted)
    res = {"orig": tilted, "hu": sitk.GetArrayFromImage(tilted), "lungs": lungs, "classes": classes,
           "pneumothorax": None, "z_mm": z_tilted, "spacing_zyx": tuple(tilted.GetSpacing()[::-1]), "trachea_x": 40}
    pic = picture_arrays(res)
    assert pic["reformatted"] and pic["hu"].shape == pic["lungs"].shape == pic["classes"].shape
    assert pic["sagittal_x"] == 40  # (a tilt about x keeps the columns)

    ref = _coronal_cut(phantom.lungs, phantom.lesions)
    oblique = _overlap(ref, phantom.z_mm, _coronal_cut(lungs, classes), z_tilted)
    reformat = _overlap(ref, phantom.z_mm, _coronal_cut(pic["lungs"], pic["classes"]), pic["z_mm"])
    print(f"coronal cut: {ref.sum()} lesion pixels in the reference, held by the oblique cut {oblique}, by the "
          f"reformat {reformat}")
    assert reformat >= 0.5 * ref.sum()

    half = 0.5 * phantom.spacing[0]
    def lesion_z(mask: np.ndarray, z: np.ndarray) -> float:
        """The mean z of a lesion's voxels, each at its slice's label."""
        n = np.count_nonzero(mask, axis=(1, 2))
        return float(n @ np.asarray(z) / n.sum())

    for value in (2, 3):  # each lesion (one per class) at its own z
        truth = lesion_z(phantom.lesions == value, phantom.z_mm)
        assert abs(lesion_z(pic["classes"] == value, pic["z_mm"]) - truth) <= half, value
        if value == 2:  # 40 mm behind the slices' centres: at their centre's z it was tan(15) x 40 = 10.7 mm off
            assert abs(lesion_z(classes == value, z_tilted) - truth) > half


def test_an_untilted_stack_is_drawn_as_it_is(phantom):
    from pipeline.run import picture_arrays

    img = sitk.GetImageFromArray(phantom.hu)
    res = {"orig": img, "hu": phantom.hu, "lungs": phantom.lungs, "classes": phantom.lesions, "pneumothorax": None,
           "z_mm": phantom.z_mm, "spacing_zyx": phantom.spacing, "trachea_x": 3}
    pic = picture_arrays(res)
    assert not pic["reformatted"] and pic["hu"] is phantom.hu and pic["lungs"] is phantom.lungs
    assert pic["sagittal_x"] == 3


# --- 3. swatches as the fills are drawn ------------------------------------------------------------------------------

def test_fill_swatches_are_the_fills_as_drawn_over_aerated_lung(phantom):
    """The swatches were full strength, the fills half transparent (7-14 CIEDE2000 apart): a swatch is now the fill
    at LESION_ALPHA over the lung window's grey of aerated lung, as _panel draws it, and the legend shows it."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    from pipeline import qc
    from tests.test_a11y_report import draw_panel

    hu = np.full((20, 20 * 2), qc.SWATCH_UNDER_HU)
    classes = np.zeros(hu.shape, np.uint8)
    classes[:, :20], classes[:, 20:] = 1, 2
    drawn = draw_panel(hu, classes)
    h, w = drawn.shape[:2]
    legend = _rgb(_qc(phantom, phantom.lungs))[-int(qc.MONTAGE_BOTTOM * 540):]
    for i, value in enumerate((1, 2)):
        fill = drawn[h // 4: 3 * h // 4, w * i // 2 + w // 8: w * (i + 1) // 2 - w // 8].reshape(-1, 3).mean(0)
        swatch = np.asarray(qc.swatch_colour(qc.LESION_CLASSES[value][0]))
        lab = rgb2lab(np.stack([fill, swatch])[None])[0]
        assert deltaE_ciede2000(lab[0], lab[1]) < 2.0, (value, fill, swatch)
        near = np.abs(legend - swatch).max(axis=2) < 3 / 255  # the legend holds a block of the swatch colour
        assert near.sum() >= 50, (value, near.sum())


# --- 4. the thumbnail says which side is which, legibly --------------------------------------------------------------

def test_thumbnail_caption_is_legible_and_the_size_unchanged(phantom):
    """The montage's R / L markers shrink to about 3 px in the 320 px thumbnail: its bottom band (the legend, as
    unreadable) carries a caption in a font of 7 px or more."""
    from pipeline.qc import MONTAGE_BOTTOM, THUMB_CAPTION, qc_thumbnail

    png = _qc(phantom, phantom.lungs)
    thumb = _rgb(qc_thumbnail(png))
    h, w = _rgb(png).shape[:2]
    assert thumb.shape[:2] == (round(h * 320 / w), 320)
    band = thumb[-int(MONTAGE_BOTTOM * thumb.shape[0]):]
    ink = band.min(axis=2) > 0.6  # white text
    rows = np.nonzero(ink.any(axis=1))[0]
    cols = np.nonzero(ink.any(axis=0))[0]
    assert rows[-1] - rows[0] + 1 >= 7 and cols[-1] - cols[0] > 150
    assert "R on the left" in THUMB_CAPTION and "L lung dashed" in THUMB_CAPTION


# --- 5. header variants draw the same picture ------------------------------------------------------------------------

def _variant(ref_dir, out_dir, kind: str) -> None:
    """The reference files rewritten for ``kind``: the same patient-space image under other headers."""
    import pydicom

    out_dir.mkdir(parents=True)
    files = sorted(ref_dir.iterdir())
    for f in files:
        ds = pydicom.dcmread(f)
        px = ds.pixel_array
        ipp = [float(v) for v in ds.ImagePositionPatient]
        iop = [float(v) for v in ds.ImageOrientationPatient]
        dy, dx = (float(v) for v in ds.PixelSpacing)
        if kind == "rows_flipped":
            px = px[::-1]
            ipp = [ipp[i] + (ds.Rows - 1) * dy * iop[3 + i] for i in range(3)]
            iop = iop[:3] + [-v for v in iop[3:]]
        elif kind == "cols_flipped":
            px = px[:, ::-1]
            ipp = [ipp[i] + (ds.Columns - 1) * dx * iop[i] for i in range(3)]
            iop = [-v for v in iop[:3]] + iop[3:]
        elif kind == "reverse_files":
            ds.InstanceNumber = len(files) + 1 - int(ds.InstanceNumber)
        ds.PixelData = np.ascontiguousarray(px).tobytes()
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
        ds.ImageOrientationPatient = [f"{v:g}" for v in iop]
        name = f.name if kind != "reverse_files" else f"{len(files) - files.index(f):04d}"
        ds.save_as(out_dir / name, enforce_file_format=True)


def test_header_variants_draw_the_same_qc_png(tmp_path, classical_memo):
    """diffpics.py's check as a regression test: the same phantom written feet first, with its rows or columns
    flipped, or its files in reverse order, draws a pixel-identical qc.png (small phantom, classical segmenter)."""
    from pipeline.config import load_config
    from pipeline.phantom import make_phantom, write_dicom_series
    from pipeline.run import process_series

    ph = make_phantom(shape=(44, 72, 72), spacing=(6.0, 4.6, 4.6), seed=2)
    write_dicom_series(ph, tmp_path / "ref", compress=False)
    write_dicom_series(ph, tmp_path / "feet_first", orientation="feet_first", compress=False)
    for kind in ("rows_flipped", "cols_flipped", "reverse_files"):
        _variant(tmp_path / "ref", tmp_path / kind, kind)
    cfg = load_config(extra={"segmentation": {"method": "classical"}, "resample": {"spacing_mm": [3.0, 3.0, 3.0]},
                             "outputs": {"write_masks": False}})
    pics = {}
    for kind in ("ref", "feet_first", "rows_flipped", "cols_flipped", "reverse_files"):
        files = sorted(str(f) for f in (tmp_path / kind).iterdir())
        status = process_series(files, cfg, tmp_path / f"out_{kind}", "scan-1")
        assert status["status"] == "ok", (kind, status)
        pics[kind] = _rgb((tmp_path / f"out_{kind}" / "scan-1" / "qc.png").read_bytes())
    for kind, pic in pics.items():
        assert pic.shape == pics["ref"].shape, kind
        differ = np.abs(pic - pics["ref"]).sum(axis=2) > 0
        assert not differ.any(), (kind, int(differ.sum()), np.nonzero(differ.any(axis=1))[0][[0, -1]])
