"""Training on a lab's own labelled CT (a stand-in researcher's walk-through): lesion masks were checked for their
volume only, so a mirrored lesion mask (on normal lung), one in the mediastinum, and a combined lung + lesion map
given as the lesion file (the whole lung 'lesion', which also switched the lung mask's own checks off) went into
the training cache without a word; a 'lung 1 / lesion 2' map was taken as right lung / left lung; a lung mask that
excludes its lesions taught that consolidation is not lung; fractional (linearly resampled) masks were read as
labels. Each test failed before its fix."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from segmentation.training import Background, prepare_case, read_backgrounds_file

SPACING = (2.0, 2.0, 2.0)  # z, y, x


def _image(a: np.ndarray, path: Path) -> Path:
    img = sitk.GetImageFromArray(a)
    img.SetSpacing(SPACING[::-1])
    img.SetOrigin((-60.0, -60.0, -40.0))
    sitk.WriteImage(img, str(path))
    return path


@pytest.fixture(scope="module")
def chest(tmp_path_factory) -> dict:
    """A 40 x 60 x 60 chest: body 40 HU, right lung (low x: the patient's right on LPS) and left lung -850 HU, a
    +20 HU consolidation in the right lung; label maps written as labs deliver them."""
    d = tmp_path_factory.mktemp("labelled")
    z, y, x = np.mgrid[0:40, 0:60, 0:60]
    body = (y - 30) ** 2 / 27 ** 2 + (x - 30) ** 2 / 29 ** 2 < 1
    right = (np.abs(z - 20) < 15) & ((y - 30) ** 2 + (x - 17) ** 2 < 10 ** 2)
    left = (np.abs(z - 20) < 15) & ((y - 30) ** 2 + (x - 43) ** 2 < 10 ** 2)
    lesion = right & ((z - 20) ** 2 + (y - 34) ** 2 + (x - 14) ** 2 < 5 ** 2)
    ct = np.where(body, 40, -1000).astype(np.int16)
    ct[right | left] = -850
    ct[lesion] = 20
    lungs = (right * 1 + left * 2).astype(np.uint8)
    files = {"ct": _image(ct, d / "ct.nii.gz"), "lungs": _image(lungs, d / "lungs.nii.gz"),
             "lesions": _image(lesion.astype(np.uint8), d / "lesions.nii.gz"),
             "mirrored": _image(np.flip(lesion, 2).astype(np.uint8), d / "mirrored.nii.gz"),
             "chest_wall": _image(np.roll(lesion, 18, axis=1).astype(np.uint8), d / "chest_wall.nii.gz"),
             "combined": _image(np.where(lesion, 3, lungs).astype(np.uint8), d / "combined.nii.gz"),
             "lung_les": _image(np.where(lesion, 2, (right | left) * 1).astype(np.uint8), d / "lung_les.nii.gz"),
             "excluding": _image(np.where(lesion, 0, lungs).astype(np.uint8), d / "excluding.nii.gz"),
             "linear": _image(np.where(lesion, 0.5, 0.0).astype(np.float32), d / "linear.nii.gz")}
    return {"files": files, "lesion_ml": float(lesion.sum()) * 8 / 1000}


def _case(chest, lungs="lungs", lesions="lesions", **kw) -> dict:
    f = chest["files"]
    bg = Background("c", f["ct"], f[lungs], f[lesions] if lesions else None, **kw)
    return prepare_case(bg, SPACING)


def test_a_correct_lesion_mask_is_cached_on_the_right_lung(chest):
    case = _case(chest)
    les = case["lesions"] > 0
    assert les.sum() * 8 / 1000 == pytest.approx(chest["lesion_ml"], rel=0.05)
    assert (case["lungs"][les] == 1).all()


@pytest.mark.parametrize("which, words", [("mirrored", "no denser than the clear lung"),
                                          ("chest_wall", "within 5 mm of the lung")])
def test_a_lesion_mask_off_its_lesion_is_refused(chest, which, words):
    with pytest.raises(ValueError, match=words) as e:
        _case(chest, lesions=which)
    assert f"{which}.nii.gz" in str(e.value)


def test_a_combined_map_as_lesion_file_needs_its_lesion_values(chest):
    with pytest.raises(ValueError, match="covers 100 % of the lung labels.*lesion_values"):
        _case(chest, lungs="combined", lesions="combined")
    case = _case(chest, lungs="combined", lesions="combined", lesion_values=(3,))
    les = case["lesions"] > 0
    assert les.sum() * 8 / 1000 == pytest.approx(chest["lesion_ml"], rel=0.05)
    assert (case["lungs"][les] == 1).all()  # the infection label is right lung too


def test_lesion_values_from_a_backgrounds_file(chest, tmp_path):
    f = chest["files"]
    listing = tmp_path / "b.yaml"
    listing.write_text(f"backgrounds:\n  - {{image: {f['ct']}, lungs: {f['combined']}, lesions: {f['combined']}, "
                       "right: [1], left: [2], lesion_values: [3]}\n")
    [bg] = read_backgrounds_file(listing)
    assert bg.lesion_values == (3,)
    listing.write_text(f"backgrounds:\n  - {{image: {f['ct']}, lungs: {f['lungs']}, lesion_values: [3]}}\n")
    with pytest.raises(ValueError, match="'lesion_values' needs 'lesions'"):
        read_backgrounds_file(listing)


def test_a_lung_and_lesion_map_is_not_taken_for_right_and_left(chest):
    with pytest.raises(ValueError, match="left lung label is .* not aerated .* a lesion label read as a lung"):
        _case(chest, lungs="lung_les", lesions=None)


def test_lesions_just_outside_a_lung_mask_that_excludes_them_join_that_lung(chest):
    case = _case(chest, lungs="excluding")
    les = case["lesions"] > 0
    assert les.any() and (case["lungs"][les] == 1).all()  # consolidated lung is lung


def test_fractional_label_maps_are_refused(chest):
    with pytest.raises(ValueError, match="fractional values .* nearest neighbour"):
        _case(chest, lesions="linear")


def test_label_values_neither_right_nor_left_are_named(chest, caplog):
    with caplog.at_level(logging.WARNING, logger="segmentation.training"):
        _case(chest, lungs="combined", lesions=None)
    assert any("label values 3 (" in r.getMessage() and "lesion_values" in r.getMessage() for r in caplog.records)
