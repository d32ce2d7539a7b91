"""Loader review 48b: copies of one SOP instance in several transfer syntaxes (one rule for the inventory and the
loader), the inventory decoding through pipeline.decoding, near-linear look-up of positions sharing a UID, whole
multiples of the smallest step, and position rounding read as a gantry tilt. Small pydicom series
(tests/dicom_factory.py), each a few seconds at most."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import RLELossless

import pipeline.decoding as decoding
from pipeline import loading
from pipeline.geometry import multiple_gaps
from pipeline.inventory import build_inventory
from pipeline.loading import load_series
from tests.conftest import shared_data_dir
from tests.dicom_factory import phantom_slice, read, refused, write_series
from tests.test_loader_review48 import hu_of

DATA = shared_data_dir() or Path("/nonexistent")  # ../shared/data or CTSCORE_TEST_DATA
SYNTAXES = DATA / "dicom_edge" / "transfer_syntaxes"


def _rle_copy(path: Path, dest: Path, hu: np.ndarray | None = None) -> Path:
    """The same instance (UID, position) written RLE Lossless; ``hu`` replaces its pixels (an edited copy)."""
    ds = read(path)
    if hu is not None:
        ds.PixelData = (hu + 1024).astype(np.int16).tobytes()
    ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    ds.save_as(dest, enforce_file_format=True)
    return dest


# 2. copies in several transfer syntaxes -----------------------------------------------------------------------------

@pytest.mark.skipif(not SYNTAXES.is_dir(), reason="real data not found: dicom_edge/transfer_syntaxes of ../shared/data or CTSCORE_TEST_DATA")
def test_lossless_transfer_syntax_copies_of_one_slice_load_as_one_slice():
    files = sorted(p for p in SYNTAXES.glob("CTImage.dcm*")
                   if not decoding.is_lossy(pydicom.dcmread(p, stop_before_pixels=True)))
    assert len({decoding.transfer_syntax_of(pydicom.dcmread(p, stop_before_pixels=True)) for p in files}) >= 7
    vol = load_series(files)  # was refused NOT_A_VOLUME ('all 10 slices lie at one position')
    assert vol.image.GetSize()[2] == 1 and "DUPLICATE_SOP_INSTANCE" in vol.flags
    assert [p.name for p in vol.files] == ["CTImage.dcm_LittleEndianExplicitTransferSyntax_1.2.840.10008.1.2.1.dcm"]


def test_copy_in_another_lossless_syntax_is_one_instance_for_loader_and_inventory(tmp_path):
    files = write_series(tmp_path, 12, shuffle=False)
    rle = _rle_copy(files[5], tmp_path / "s0005_rle.dcm")
    assert decoding.transfer_syntax_of(read(rle)) == RLELossless and read(rle).SOPInstanceUID == read(files[5]).SOPInstanceUID
    for given in (files + [rle], [rle] + files):  # the uncompressed copy is kept, whichever comes first
        vol = load_series(given)
        assert vol.image.GetSize()[2] == 12 and "DUPLICATE_SOP_INSTANCE" in vol.flags
        assert rle not in vol.files and files[5] in vol.files
    inv = build_inventory(tmp_path)
    (chosen,) = inv.chosen
    assert len(chosen.files) == 12 and files[5] in chosen.files  # the inventory keeps the same one


def test_edited_copy_in_another_syntax_is_refused_by_loader_and_inventory(tmp_path):
    files = write_series(tmp_path, 12, shuffle=False)
    hu = phantom_slice(32)
    hu[8:24, 8:24] += 300
    rle = _rle_copy(files[5], tmp_path / "s0005_rle.dcm", hu)
    (cand,) = build_inventory(tmp_path).candidates
    assert "DUPLICATE_POSITION" in cand.problems
    err = refused(files + [rle])
    assert err.code == "DUPLICATE_POSITION" and "s0005.dcm" in err.message and "s0005_rle.dcm" in err.message


# 7. the inventory decodes through pipeline.decoding ----------------------------------------------------------------

def test_inventory_decodes_copies_through_the_safe_decoding_path(tmp_path, monkeypatch):
    files = write_series(tmp_path, 12, shuffle=False)
    _rle_copy(files[5], tmp_path / "s0005_rle.dcm")
    calls = []
    real = decoding.decode_frames

    def spy(ds, path, *args, **kw):
        calls.append(Path(path).name)
        return real(ds, path, *args, **kw)

    monkeypatch.setattr(decoding, "decode_frames", spy)
    inv = build_inventory(tmp_path)
    assert sorted(calls) == ["s0005.dcm", "s0005_rle.dcm"]
    assert list(inv.files["file_code"].fillna("")).count("DUPLICATE_SOP_INSTANCE") == 1


# 4. one UID in many files: positions looked up, not compared pairwise ---------------------------------------------

def _norm_calls(monkeypatch, run) -> int:
    count = [0]
    real = np.linalg.norm

    def counting(*args, **kw):
        count[0] += 1
        return real(*args, **kw)

    monkeypatch.setattr(np.linalg, "norm", counting)
    try:
        run()
    finally:
        monkeypatch.setattr(np.linalg, "norm", real)
    return count[0]


def test_position_comparisons_grow_linearly_with_files_sharing_one_uid(tmp_path, monkeypatch):
    counts = {}
    for n in (60, 240):
        folder = tmp_path / str(n)
        files = write_series(folder, n, dz=1.0, per_slice=lambda k, p: p.update(sop_uid="1.2.3.4"))
        read_files = _norm_calls(monkeypatch, lambda files=files: loading._read_files(files, []))
        inventory = _norm_calls(monkeypatch, lambda folder=folder: build_inventory(folder))
        counts[n] = (read_files, inventory)
    # pairwise: 4 x the files, 16 x the comparisons (60 files: 1770 pairs, 240: 28680)
    assert counts[240][0] <= 5 * max(counts[60][0], 1) and counts[240][0] < 2000
    assert counts[240][1] <= 5 * max(counts[60][1], 1) and counts[240][1] < 5000


# 5. whole multiples of the smallest step --------------------------------------------------------------------------

def test_large_ratio_is_not_a_whole_multiple_by_a_relative_tolerance():
    gaps, _ = multiple_gaps(np.array([0.5, 0.5, 6.25, 6.25, 6.25]), 0.5)
    assert not gaps.any()  # 12.5 x the smallest step: within 5 % of 12 only relative to 12
    gaps, _ = multiple_gaps(np.array([2.5, 2.5, 5.0, 5.0, 5.0, 5.0, 2.5, 2.5]), 2.5)
    assert list(gaps) == [False, False, True, True, True, True, False, False]
    gaps, _ = multiple_gaps(np.array([0.5, 0.5, 6.0, 6.0, 0.5, 0.5]), 0.5)
    assert gaps[2] and gaps[3]  # a true multiple (12) still is one


# 6. position rounding is no gantry tilt ---------------------------------------------------------------------------

def test_position_rounding_on_a_short_stack_is_no_tilt(tmp_path):
    def moved(k, p):
        if k == 29:
            p.update(ipp=(-16.0 + 0.1, -16.0, -100.0 + k * 1.0))

    vol = load_series(write_series(tmp_path / "rounded", 30, dz=1.0, per_slice=moved))  # 0.198 degrees
    assert not [f for f in vol.flags if f.startswith("TILT")]
    # a real small tilt over a short stack still is one (0.3 degrees, 0.15 mm over 29 mm)
    shift = np.tan(np.radians(0.3))
    vol = load_series(write_series(tmp_path / "tilted", 30, dz=1.0,
                                   per_slice=lambda k, p: p.update(ipp=(-16.0, -16.0 + k * shift, -100.0 + k))))
    assert "TILT_UNCORRECTED:0.30" in vol.flags
    assert hu_of(vol).shape[0] == 30


# 3. the constant-border labelling is skipped where it cannot change the HU check ---------------------------------

def _clipped_chest(border: float = -1024.0) -> np.ndarray:
    """Body (40 HU) with two noisy lungs (-1000..-900 HU, some clipped at -1024) in air of one value at the border."""
    rng = np.random.default_rng(0)
    hu = np.full((8, 64, 64), border, np.float32)
    yy, xx = np.mgrid[0:64, 0:64]
    body = np.hypot(yy - 31.5, xx - 31.5) < 28
    lungs = (np.hypot(yy - 31.5, xx - 18) < 8) | (np.hypot(yy - 31.5, xx - 45) < 8)
    for k in range(hu.shape[0]):
        hu[k][body] = 40.0
        hu[k][lungs] = rng.uniform(-1000, -900, int(lungs.sum()))
        hu[k][lungs & (xx % 5 == 0)] = -1024.0
    return hu


def test_clipped_air_at_the_border_is_not_labelled_and_a_padding_ring_still_is(monkeypatch):
    calls = []
    real = loading._border_connected
    monkeypatch.setattr(loading, "_border_connected", lambda c: calls.append(1) or real(c))
    opts = loading.LoadOptions.from_config(None)
    hu = _clipped_chest()
    loading._check_hu(hu, np.zeros(hu.shape, bool), opts, Path("x"))  # accepted either way: not labelled
    assert calls == []
    ring = _clipped_chest(-976.0)  # a -2000 ring read through an intercept 1024 too high, no air: labelled, refused
    ring[(ring != -976.0) & (ring < -800)] = 40.0
    with pytest.raises(loading.SeriesError) as exc:
        loading._check_hu(ring, np.zeros(ring.shape, bool), opts, Path("x"))
    assert exc.value.code == "NOT_HU" and calls
