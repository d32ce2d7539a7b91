"""Review of the user label files of ``ctscore train`` (a researcher fine-tuning on their own labels): label maps in
another value order, masks written without their CT's geometry or on a few slices only, a CT not in HU, the README's
own combined map, label files under other names and the messages for float, 4D and misplaced files. Each test failed
before its fix, but test_a_large_dense_value_left_out_is_only_named (a guard: what must stay a warning). A small
synthetic chest at 4 mm, prepared at 4 mm."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

from segmentation.training import Background, prepare_case, read_backgrounds_file  # noqa: E402
from tests.test_training_backgrounds import DATA  # noqa: E402

SP = (4.0, 4.0, 4.0)  # z, y, x
VOXEL_ML = 64 / 1000


def _write(a: np.ndarray, path: Path, ref: sitk.Image | None = None) -> Path:
    img = sitk.GetImageFromArray(a)
    if ref is not None:
        img.CopyInformation(ref)
    else:
        img.SetSpacing(SP[::-1])
        img.SetOrigin((-128.0, -128.0, -80.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))
    return path


@pytest.fixture(scope="module")
def chest(tmp_path_factory) -> SimpleNamespace:
    """A 40 x 64 x 64 chest at 4 mm: body 40 HU in air, right lung (low x: the patient's right on LPS) and left lung
    -850 HU (~700 mL each), a -500 HU ground-glass lesion (~29 mL) against the lateral chest wall in the right lung."""
    d = tmp_path_factory.mktemp("chest")
    z, y, x = np.mgrid[0:40, 0:64, 0:64]
    body = ((y - 32) / 29.0) ** 2 + ((x - 32) / 31.0) ** 2 < 1
    right = (np.abs(z - 20) < 15) & ((y - 32) ** 2 + (x - 18) ** 2 < 11 ** 2)
    left = (np.abs(z - 20) < 15) & ((y - 32) ** 2 + (x - 46) ** 2 < 11 ** 2)
    lesion = right & ((z - 20) ** 2 + (y - 32) ** 2 + (x - 7) ** 2 < 6 ** 2)
    hu = np.where(body, 40, -1000).astype(np.int16)
    hu[right | left] = -850
    hu[lesion] = -500
    lungs = (right * 1 + left * 2).astype(np.uint8)
    ct = _write(hu, d / "ct.nii.gz")
    ref = sitk.ReadImage(str(ct))
    return SimpleNamespace(d=d, ct=ct, ref=ref, hu=hu, right=right, left=left, lesion=lesion, lungs=lungs,
                           lungs_file=_write(lungs, d / "lungs.nii.gz", ref),
                           lesions_file=_write(lesion.astype(np.uint8), d / "lesions.nii.gz", ref))


def _ml(case: dict, k: int) -> float:
    return float((case["lungs"] == k).sum()) * VOXEL_ML


# ------------------------------------------------------------------------------------ 1: values in another order

def test_a_combined_map_in_another_value_order_is_refused(chest):
    """1 lesion, 2 right, 3 left read with the default 1 right / 2 left: the lesion became the right lung and the real
    left lung (value 3) was dropped with a warning only. Now refused naming the file and the value."""
    m = np.where(chest.lesion, 1, np.where(chest.right, 2, np.where(chest.left, 3, 0))).astype(np.uint8)
    f = _write(m, chest.d / "order.nii.gz", chest.ref)
    with pytest.raises(ValueError, match=r"label value 3 holds \d+ mL of aerated lung") as e:
        prepare_case(Background("c", chest.ct, f), SP)
    assert str(f) in str(e.value) and "right [1], left [2]" in str(e.value)
    # the same map with its values listed is fine: the lesion joins the right lung
    case = prepare_case(Background("c", chest.ct, f, f, (2,), (3,), (1,)), SP)
    les = case["lesions"] > 0
    assert les.sum() == chest.lesion.sum() and (case["lungs"][les] == 1).all()


def test_a_ground_glass_label_read_as_a_lung_is_refused(chest):
    """A ground-glass lesion (-500 HU) read as the right lung passed: a lesion read as a lung had to be denser than
    -300 HU; ground glass is -700 to -300."""
    m = np.where(chest.lesion, 1, np.where(chest.left, 2, 0)).astype(np.uint8)
    f = _write(m, chest.d / "ggo_as_lung.nii.gz", chest.ref)
    with pytest.raises(ValueError, match="right lung label is 4 % of the size of the other one and not aerated "
                                         r"\(median -500 HU\).*a lesion label read as a lung"):
        prepare_case(Background("c", chest.ct, f), SP)


def test_a_large_dense_value_left_out_is_only_named(chest, caplog):
    """A dense label (a consolidation of 200+ mL) neither right nor left is not lung-like: a warning, not a refusal."""
    hu = chest.hu.copy()
    z, y, x = np.mgrid[0:40, 0:64, 0:64]
    cons = chest.right & ((z - 20) ** 2 + (y - 32) ** 2 + (x - 18) ** 2 < 9 ** 2)
    hu[cons] = -100
    ct = _write(hu, chest.d / "cons_ct.nii.gz", chest.ref)
    f = _write(np.where(cons, 3, chest.lungs).astype(np.uint8), chest.d / "cons.nii.gz", chest.ref)
    assert cons.sum() * VOXEL_ML > 150
    with caplog.at_level(logging.WARNING, logger="segmentation.training"):
        prepare_case(Background("c", ct, f), SP)
    assert any("label values 3 (" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------ 2: geometry, partial masks

def test_a_mask_written_without_the_cts_geometry_is_refused(chest):
    """sitk.GetImageFromArray without CopyInformation (1 mm, origin 0): resampled by position, a part of it could
    still land on air and was trained on (131 mL of lungs instead of 5.6 L)."""
    f = _write(chest.lungs, chest.d / "nohdr.nii.gz", None)
    img = sitk.ReadImage(str(f))
    img.SetSpacing((1.0, 1.0, 1.0))
    img.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(img, str(f))
    with pytest.raises(ValueError, match="voxel grid of the CT .* but not its geometry .*not on this CT.*"
                                         "CopyInformation") as e:
        prepare_case(Background("c", chest.ct, f), SP)
    assert str(f) in str(e.value)
    # the same labels on the CT's grid written in another orientation (RAS, as nibabel tools do) are fine
    ras = sitk.DICOMOrient(sitk.ReadImage(str(chest.lungs_file)), "RAS")
    sitk.WriteImage(ras, str(chest.d / "ras.nii.gz"))
    case = prepare_case(Background("c", chest.ct, chest.d / "ras.nii.gz"), SP)
    assert _ml(case, 1) == pytest.approx(chest.right.sum() * VOXEL_ML)


def test_lungs_labelled_on_a_few_slices_are_refused(chest, caplog):
    """Lungs labelled on a fifth of the slices were accepted: the rest of the lung trained as background."""
    z = np.arange(40)[:, None, None]
    few = _write(np.where((z >= 17) & (z < 23), chest.lungs, 0).astype(np.uint8), chest.d / "few.nii.gz", chest.ref)
    with pytest.raises(ValueError, match=r"lung labels cover 2\d % of the aerated lung") as e:
        prepare_case(Background("c", chest.ct, few), SP)
    assert str(few) in str(e.value)
    # most of the lung labelled: a warning
    most = _write(np.where(z >= 13, chest.lungs, 0).astype(np.uint8), chest.d / "most.nii.gz", chest.ref)
    with caplog.at_level(logging.WARNING, logger="segmentation.training"):
        prepare_case(Background("c", chest.ct, most), SP)
    assert any("lung labels cover" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------ 3: CT not in HU

def test_a_ct_not_in_hu_is_refused_and_a_teacher_without_lungs_too(chest):
    """A CT written as stored values (HU + 1024) was cached with lungs of 0 mL (an INFO line only)."""
    raw = _write((chest.hu.astype(np.int32) + 1024).astype(np.int16), chest.d / "raw.nii.gz", chest.ref)
    no_lungs = SimpleNamespace(segment=lambda hu, sp: SimpleNamespace(lungs=np.zeros(hu.shape, np.uint8)))
    with pytest.raises(ValueError, match="not in Hounsfield units .*HU \\+ 1024") as e:
        prepare_case(Background("raw", raw), SP, teacher=no_lungs)
    assert str(raw) in str(e.value)
    with pytest.raises(ValueError, match="the teacher found no lung"):
        prepare_case(Background("c", chest.ct), SP, teacher=no_lungs)


# ------------------------------------------------------------------------------------ 4: the README's combined map

def test_the_readmes_combined_map_and_a_lung_mask_without_its_lesions_are_accepted(chest):
    """'1 left, 2 right, 3 infection' given as lungs: and lesions: with right [2], left [1], lesion_values [3] was
    refused ("only 24-40 % of the lesion voxels lie in or within 5 mm of the lung labels"): a lesion against the
    chest wall left out of the lung mask lies far from the lung labels. Now it joins the right lung."""
    m = np.where(chest.lesion, 3, np.where(chest.right, 2, np.where(chest.left, 1, 0))).astype(np.uint8)
    f = _write(m, chest.d / "readme.nii.gz", chest.ref)
    for bg in (Background("c", chest.ct, f, f, (2,), (1,), (3,)),
               Background("c", chest.ct, _write(np.where(chest.lesion, 0, chest.lungs).astype(np.uint8),
                                                chest.d / "excluding.nii.gz", chest.ref), chest.lesions_file)):
        case = prepare_case(bg, SP)
        les = case["lesions"] > 0
        assert les.sum() == chest.lesion.sum() and (case["lungs"][les] == 1).all()
        assert _ml(case, 1) == pytest.approx(chest.right.sum() * VOXEL_ML)


def test_a_lesion_piece_on_normal_lung_is_refused(chest):
    """A lesion mask with a piece on clear lung (shifted or another case's) passed while the median of all its
    voxels was dense."""
    z, y, x = np.mgrid[0:40, 0:64, 0:64]
    stray = (z - 20) ** 2 + (y - 32) ** 2 + (x - 46) ** 2 < 3 ** 2  # in the clear left lung
    f = _write((chest.lesion | stray).astype(np.uint8), chest.d / "stray.nii.gz", chest.ref)
    with pytest.raises(ValueError, match=r"lesion pieces on the lung labels are no denser than the clear lung .*"
                                         r"\d\.\d mL at -850 HU"):
        prepare_case(Background("c", chest.ct, chest.lungs_file, f), SP)


# ------------------------------------------------------------------------------------ 5: names in a --data folder

@pytest.mark.parametrize("lungs, lesions", [("Lungs.nii.gz", "Lesions.nii.gz"), ("lung.nii.gz", "lesion.nii.gz"),
                                            ("lungs.seg.nrrd", "lesions.seg.nrrd"), ("LUNGS.NII.GZ", "labels/lesion.mha")])
def test_label_files_under_other_names_are_found(tmp_path, lungs, lesions):
    """Slicer's lungs.seg.nrrd, Lungs.nii.gz, lung.nii.gz ... beside a DICOM series were skipped without a word."""
    for n in (lungs, lesions):
        (tmp_path / n).parent.mkdir(exist_ok=True)
        (tmp_path / n).write_bytes(b"x")
    bg = Background.from_folder(tmp_path)
    assert (bg.lungs, bg.lesions) == (tmp_path / lungs, tmp_path / lesions)


def test_other_image_files_beside_a_series_are_named(tmp_path, caplog):
    for n in ("lungs_mask.nii.gz", "infection.nii.gz", "s0001.dcm"):
        (tmp_path / n).write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="segmentation.training"):
        bg = Background.from_folder(tmp_path)
    assert bg.lungs is None and bg.lesions is None
    [msg] = [r.getMessage() for r in caplog.records if "not used" in r.getMessage()]
    assert "infection.nii.gz" in msg and "lungs_mask.nii.gz" in msg and "lungs/lung" in msg and "s0001" not in msg


# ------------------------------------------------------------------------------------ 6: messages

def test_float_masks_within_a_thousandth_of_a_label_are_rounded(chest, caplog):
    f = _write(chest.lungs.astype(np.float32) * np.float32(0.99995), chest.d / "float.nii.gz", chest.ref)
    with caplog.at_level(logging.INFO, logger="segmentation.training"):
        case = prepare_case(Background("c", chest.ct, f), SP)
    assert _ml(case, 2) == pytest.approx(chest.left.sum() * VOXEL_ML)
    assert any("read as that number" in r.getMessage() for r in caplog.records)
    g = _write(chest.lesion.astype(np.float32) * np.float32(0.4), chest.d / "prob.nii.gz", chest.ref)
    with pytest.raises(ValueError, match="fractional values .* probability map"):
        prepare_case(Background("c", chest.ct, chest.lungs_file, g), SP)


def test_a_nifti_ct_in_a_data_folder_is_pointed_to_a_backgrounds_file(chest, tmp_path):
    d = tmp_path / "case1"
    d.mkdir()
    for f in (chest.ct, chest.lungs_file):
        (d / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ValueError, match="cannot be loaded as a CT .*ct.nii.gz.*--backgrounds-file"):
        prepare_case(d, SP)


def test_duplicate_default_names_suggest_name(chest, tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "ct.nii.gz").write_bytes(chest.ct.read_bytes())
    lst = tmp_path / "b.yaml"
    lst.write_text("backgrounds:\n  - {image: a/ct.nii.gz}\n  - {image: b/ct.nii.gz}\n")
    with pytest.raises(ValueError, match=r"must be unique .*\['ct', 'ct'\].*own 'name:'"):
        read_backgrounds_file(lst)


def test_a_one_hot_label_file_is_pointed_to_argmax(chest):
    oh = np.stack([chest.lungs == 0, chest.lungs == 1, chest.lungs == 2]).astype(np.uint8)
    f = chest.d / "onehot.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(oh, isVector=False), str(f))
    with pytest.raises(ValueError, match="4D .*one-hot.*argmax"):
        prepare_case(Background("c", chest.ct, f), SP)


# ------------------------------------------------------------------------------------ the shipped list

def test_the_shipped_cip_label_map_is_taken_without_a_warning(caplog):
    """Its trachea (512) and hilar vessel (768) values, neither right nor left, were named in a warning on every
    run; they lie outside the lungs (or hold 0.02 % of their volume) and are named in the log only."""
    ct, lm = DATA / "cip_copdgene" / "ct-64.nrrd", DATA / "cip_copdgene" / "lm-64.nrrd"
    if not (ct.exists() and lm.exists()):
        pytest.skip(f"{DATA / 'cip_copdgene'} not present (set CTSCORE_TEST_DATA)")
    right, left = (12, 13, 14, 524, 525, 526, 780, 781, 782), (9, 10, 11, 521, 522, 777, 778, 779)
    with caplog.at_level(logging.INFO, logger="segmentation.training"):
        case = prepare_case(Background("cip", ct, lm, None, right, left), (2.5, 2.5, 2.5))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("512 (" in r.getMessage() and "768 (" in r.getMessage() for r in caplog.records)
    assert 1500 < (case["lungs"] == 1).sum() * 2.5 ** 3 / 1000 < 4000


def test_labels_known_right_are_taken_with_checks_warn(chest, caplog, tmp_path):
    """A collapsed, airless right lung (a reviewer: ARDS, a white or collapsed lung were refused with no way to
    accept them): refused by default, naming the way out; with `checks: warn` for that case, a warning and trained on.
    The label files must still fit the CT (a mask without its geometry stays refused)."""
    hu = chest.hu.copy()
    hu[chest.right] = 20  # the right lung airless: under a quarter of the left's volume after collapse
    small = chest.right & (np.abs(np.mgrid[0:40, 0:64, 0:64][0] - 20) < 3)
    lungs = np.where(small, 1, np.where(chest.left, 2, 0)).astype(np.uint8)
    ct = _write(hu, tmp_path / "ct.nii.gz", chest.ref)
    f = _write(lungs, tmp_path / "lungs.nii.gz", chest.ref)
    with pytest.raises(ValueError, match="checks: warn"):
        prepare_case(Background("c", ct, f), SP)
    with caplog.at_level(logging.WARNING, logger="segmentation.training"):
        case = prepare_case(Background("c", ct, f, checks="warn"), SP)
    assert (case["lungs"] == 1).any() and any("checks: warn" in r.getMessage() for r in caplog.records)
    listed = tmp_path / "list.yaml"
    listed.write_text(f"backgrounds:\n  - {{image: {ct}, lungs: {f}, checks: warn}}\n")
    assert read_backgrounds_file(listed)[0].checks == "warn"
    listed.write_text(f"backgrounds:\n  - {{image: {ct}, lungs: {f}, checks: maybe}}\n")
    with pytest.raises(ValueError, match="'checks' must be refuse or warn"):
        read_backgrounds_file(listed)
