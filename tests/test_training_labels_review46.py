"""Review 46 of the user label files of ``ctscore train``: a separate lesion file's values left out by
``lesion_values``, ``checks: warn`` and the side order, warnings kept with the cache and in train_log.json, small
aerated label values left out of the lungs, the time limit, and the cache knowing label files by their content.
Each test failed before its fix. A small synthetic chest at 4 mm (tests/test_training_labels_review.py), prepared at
4 mm; training on a tiny cached case on the CPU."""
# ruff: noqa: F811 - the chest fixture imported from tests.test_training_labels_review is a test argument

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

sitk = pytest.importorskip("SimpleITK")

from segmentation.training import (  # noqa: E402
    Background,
    background_fingerprint,
    cache_fingerprint,
    cache_warnings,
    prepare_cache,
    prepare_case,
)
from tests.test_training_labels_review import SP, VOXEL_ML, _write, chest  # noqa: E402, F401

LOGGER = "segmentation.training"


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _two_value_case(chest) -> tuple[Path, Path, np.ndarray]:
    """The chest with a -100 HU consolidation (~7 mL) in the left lung coded 2 in the lesion file, the ground-glass
    lesion coded 1: (CT, lesion file, consolidation)."""
    z, y, x = np.mgrid[0:40, 0:64, 0:64]
    cons = chest.left & ((z - 20) ** 2 + (y - 32) ** 2 + (x - 46) ** 2 < 3 ** 2)
    hu = chest.hu.copy()
    hu[cons] = -100
    ct = _write(hu, chest.d / "twoval_ct.nii.gz", chest.ref)
    les = np.where(chest.lesion, 1, np.where(cons, 2, 0)).astype(np.uint8)
    return ct, _write(les, chest.d / "twoval_lesions.nii.gz", chest.ref), cons


# ------------------------------------------------------------------------ 1: values left out by lesion_values

def test_lesion_values_leaving_out_a_dense_value_is_refused_and_named(chest, caplog):
    """1 ground glass, 2 consolidation, lesion_values [1]: the consolidation trained as clear lung without a word.
    Now a warning names the file, the value and its mL in the lungs, and a dense one is refused (checks: warn: the
    warning only)."""
    ct, les, cons = _two_value_case(chest)
    bg = Background("c", ct, chest.lungs_file, les, lesion_values=(1,))
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(ValueError) as e:
        prepare_case(bg, SP)
    msg = str(e.value)
    assert str(les) in msg and "label value(s) 2 (" in msg and "lesion_values [1]" in msg and "checks: warn" in msg
    said = [m for m in _warnings(caplog) if "left out by lesion_values" in m]
    ml = cons.sum() * VOXEL_ML
    assert said and str(les) in said[0] and f"2 ({ml:.1f} mL" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        case = prepare_case(Background("c", ct, chest.lungs_file, les, lesion_values=(1,), checks="warn"), SP)
    assert (case["lesions"] > 0).sum() == chest.lesion.sum()  # as asked: value 1 only
    assert any("left out by lesion_values" in m and str(les) in m for m in _warnings(caplog))
    # both listed: nothing to say
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        case = prepare_case(Background("c", ct, chest.lungs_file, les, lesion_values=(1, 2)), SP)
    assert (case["lesions"] > 0).sum() == chest.lesion.sum() + cons.sum()
    assert not [m for m in _warnings(caplog) if "left out" in m]


def test_a_left_out_value_on_clear_lung_is_only_named(chest, caplog):
    """A left-out value that is not denser than the clear lung (e.g. a 'resolved' code on normal lung) is named in a
    warning, not refused."""
    z, y, x = np.mgrid[0:40, 0:64, 0:64]
    other = chest.left & ((z - 20) ** 2 + (y - 32) ** 2 + (x - 46) ** 2 < 3 ** 2)
    les = _write(np.where(chest.lesion, 1, np.where(other, 3, 0)).astype(np.uint8), chest.d / "les13.nii.gz",
                 chest.ref)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        prepare_case(Background("c", chest.ct, chest.lungs_file, les, lesion_values=(1,)), SP)
    said = [m for m in _warnings(caplog) if "left out by lesion_values" in m]
    assert said and str(les) in said[0] and "3 (" in said[0] and "mL" in said[0]


# ------------------------------------------------------------------------ 2: checks: warn and the side order

def test_right_and_left_swapped_are_refused_also_with_checks_warn(chest):
    """checks: warn turned the left/right-swap refusal into a warning: a collapsed lung does not change its side."""
    swapped = _write(np.where(chest.right, 2, np.where(chest.left, 1, 0)).astype(np.uint8),
                     chest.d / "swapped.nii.gz", chest.ref)
    for checks in ("warn", "refuse"):
        with pytest.raises(ValueError, match="right and left swapped") as e:
            prepare_case(Background("c", chest.ct, swapped, checks=checks), SP)
        assert str(swapped) in str(e.value) and "set 'checks: warn'" not in str(e.value)


def test_warnings_are_kept_with_the_cache_and_in_the_training_log(chest, tmp_path, caplog):
    """Warnings said while a case was prepared were lost when the cache was reused; train_log.json had neither the
    case's checks setting nor its warnings."""
    from segmentation.recipe import train_segmenter

    ct, les, _ = _two_value_case(chest)
    lst = tmp_path / "bg.yaml"
    lst.write_text(f"backgrounds:\n  - {{name: two, image: {ct}, lungs: {chest.lungs_file}, lesions: {les}, "
                   f"lesion_values: [1], checks: warn}}\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_spacing_mm: [4.0, 4.0, 4.0]\nroi_size: [16, 32, 32]\nsamples_per_volume: 2\n")
    kw = dict(backgrounds_file=lst, cache=tmp_path / "cache", train_config=cfg, device="cpu", iterations=1,
              batch_size=1, num_workers=0)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        (f,) = map(Path, train_segmenter(tmp_path / "out", prepare_only=True, **kw)["cache_files"])
    first = [m for m in _warnings(caplog) if "left out by lesion_values" in m]
    kept = cache_warnings(f)
    assert first and kept and any("left out by lesion_values" in m for m in kept)
    stamp = f.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        train_segmenter(tmp_path / "out", **kw)
    assert f.stat().st_mtime_ns == stamp  # reused
    again = [m for m in _warnings(caplog) if "left out by lesion_values" in m]
    assert again and "reused" in again[0] and str(f) in again[0]
    log = json.loads((tmp_path / "out" / "train_log.json").read_text())
    (data,) = log["data"]
    assert data["case"] == "two" and data["checks"] == "warn" and data["warnings"] == kept


# ------------------------------------------------------------------------ 3: small aerated values left out

def test_an_aerated_value_left_out_of_the_lungs_is_a_warning(chest, caplog):
    """The apex of the right lung relabelled 3 (aerated lung, under a lung's 150 mL) was said at INFO only, as airway,
    vessels or other organs. Now a warning naming the file, the value and its mL."""
    z = np.mgrid[0:40, 0:64, 0:64][0]
    apex = chest.right & (z < 10)
    ml = apex.sum() * VOXEL_ML
    assert 10 <= ml < 150
    f = _write(np.where(apex, 3, chest.lungs).astype(np.uint8), chest.d / "apex3.nii.gz", chest.ref)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        prepare_case(Background("c", chest.ct, f), SP)
    said = [m for m in _warnings(caplog) if "label value 3 holds" in m and "aerated lung" in m]
    assert said and str(f) in said[0] and f"{ml:.1f} mL" in said[0]
    assert not [r for r in caplog.records if r.levelno == logging.INFO and "airway, vessels" in r.getMessage()]
    # an aerated value in the midline between the lungs (a trachea, as in the shipped CIP list) stays in the log
    z, y, x = np.mgrid[0:40, 0:64, 0:64]
    tube = (z < 36) & ((y - 32) ** 2 + (x - 32) ** 2 < 3 ** 2)
    hu = chest.hu.copy()
    hu[tube] = -850
    ct = _write(hu, chest.d / "trachea_ct.nii.gz", chest.ref)
    f = _write(np.where(tube, 3, chest.lungs).astype(np.uint8), chest.d / "trachea.nii.gz", chest.ref)
    assert tube.sum() * VOXEL_ML >= 10
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        prepare_case(Background("c", ct, f), SP)
    assert not [m for m in _warnings(caplog) if "label value 3" in m]
    assert [r for r in caplog.records if "label values 3 (" in r.getMessage() and "airway" in r.getMessage()]


# ------------------------------------------------------------------------ 4: the time limit

def test_the_time_limit_is_said_and_recorded(tmp_path, caplog):
    """max_minutes cut training short without a word; train_log.json now says what stopped it."""
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    from segmentation.training import train
    from tests.toy_cases import toy_cached_case

    f = toy_cached_case(tmp_path / "cache" / "toy.npz")
    c = {"roi_size": [16, 32, 32], "samples_per_volume": 2, "batch_size": 1, "num_workers": 0}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        info = train([f], tmp_path / "a", {**c, "iterations": 500, "max_minutes": 1e-5}, device="cpu")
    assert info["stopped_by"] == "max_minutes" and info["iterations"] < 500
    said = [m for m in _warnings(caplog) if "time limit" in m]
    assert said and f"{info['iterations']} of the 500 iterations" in said[0] and "--max-minutes" in said[0]
    assert json.loads((tmp_path / "a" / "train_log.json").read_text())["stopped_by"] == "max_minutes"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        info = train([f], tmp_path / "b", {**c, "iterations": 1}, device="cpu")
    assert info["stopped_by"] == "iterations" and not [m for m in _warnings(caplog) if "time limit" in m]


# ------------------------------------------------------------------------ 5: the cache knows label contents

def test_a_label_file_edited_with_its_size_and_mtime_kept_makes_the_case_again(chest, tmp_path):
    """The cache knew label files by path, size and mtime: a lesion mask edited in place and given back its time
    (same size: an uncompressed NIfTI) was reused. A cache made with the old fingerprint is made again."""
    les = _write(chest.lesion.astype(np.uint8), tmp_path / "lesions.nii", chest.ref)
    bg = Background("c", chest.ct, chest.lungs_file, les)
    cache = tmp_path / "cache"
    (f,) = prepare_cache([bg], cache, SP)
    with np.load(f) as z:
        before = int((z["lesions"] > 0).sum())
    st = les.stat()
    smaller = chest.lesion.copy()
    smaller[:20] = False
    _write(smaller.astype(np.uint8), les, chest.ref)
    os.utime(les, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert les.stat().st_size == st.st_size and les.stat().st_mtime_ns == st.st_mtime_ns
    prepare_cache([bg], cache, SP)
    with np.load(f) as z:
        after = int((z["lesions"] > 0).sum())
    assert 0 < after < before
    # a case cached with the fingerprint of earlier versions (label files by size and mtime): made again, no error
    fp = json.loads(background_fingerprint(bg, SP, None))
    for k in ("lungs", "lesions"):
        p = Path(fp[k][0])
        fp[k] = [fp[k][0], p.stat().st_size, p.stat().st_mtime_ns]
    with np.load(f) as z:
        old = {k: z[k] for k in z.files if k != "warnings"}
    old["source"] = np.asarray(json.dumps(fp, sort_keys=True))
    np.savez_compressed(f, **old)
    stamp = f.stat().st_mtime_ns
    prepare_cache([bg], cache, SP)
    assert cache_fingerprint(f) == background_fingerprint(bg, SP, (1.5, 1.5, 1.5)) and f.stat().st_mtime_ns != stamp


def test_the_loaders_warnings_are_kept_with_the_case_too(chest, tmp_path, monkeypatch):
    """Only segmentation.training's own warnings were kept with a cached case; the loader's (an empty file beside a
    series) and the teacher's were not, though the docs say every warning said while it was made is."""
    import segmentation.training as training
    from segmentation.recipe import train_segmenter

    real = training.prepare_case

    def prepare(*a, **k):
        logging.getLogger("pipeline.loading").warning("1 file(s) beside the series cannot be read")
        return real(*a, **k)

    monkeypatch.setattr(training, "prepare_case", prepare)
    ct, les, _ = _two_value_case(chest)
    lst = tmp_path / "bg.yaml"
    lst.write_text(f"backgrounds:\n  - {{name: two, image: {ct}, lungs: {chest.lungs_file}}}\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_spacing_mm: [4.0, 4.0, 4.0]\nroi_size: [16, 32, 32]\nsamples_per_volume: 2\n")
    (f,) = map(Path, train_segmenter(tmp_path / "out", prepare_only=True, backgrounds_file=lst,
                                     cache=tmp_path / "cache", train_config=cfg, device="cpu")["cache_files"])
    assert any("beside the series cannot be read" in m for m in cache_warnings(f))
