"""Second review of the phantom generator (pipeline/phantom.py) and its scripts: what a user can hit with plausible
arguments, and the DICOM it writes. Small grids only (fast)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pydicom
import pytest

from pipeline import phantom as P
from pipeline.errors import CTScoreError
from scoring.validation.phantom import make_reference
from tests.dicom_factory import write_series
from tests.scripts_loader import load_script

TINY = {"shape": (6, 32, 32), "spacing": (7.5, 11.0, 11.0)}
SAMPLE_ARGS = ["--shape", "8", "32", "32", "--spacing", "10", "11", "11", "--no-compress"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


# --- scripts/make_sample_dicoms.py: the previous sample survives a failed run -----------------------------------


@pytest.mark.parametrize("step", ["make_phantom", "write_dicom_series"])
def test_failed_regeneration_keeps_the_previous_sample(tmp_path, monkeypatch, step):
    """A run that fails (bad or huge arguments, Ctrl-C, a full disk) must not leave the folder without its series
    but with the old ground_truth.json, or with a half-written series."""
    ms = load_script("make_sample_dicoms")
    assert ms.main(["--out", str(tmp_path), *SAMPLE_ARGS]) == 0
    before = _snapshot(tmp_path)
    assert len(before) == 8 + 1

    real = getattr(ms, step)

    def failing(*args, **kwargs):
        if step == "write_dicom_series":
            real(*args, **kwargs)  # the whole new series written, then the run dies
        raise KeyboardInterrupt

    monkeypatch.setattr(ms, step, failing)
    with pytest.raises(KeyboardInterrupt):
        ms.main(["--out", str(tmp_path), *SAMPLE_ARGS, "--seed", "5"])
    assert _snapshot(tmp_path) == before
    assert not [p for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}")], "staging left over"
    monkeypatch.undo()  # a run that completes replaces the old series
    assert ms.main(["--out", str(tmp_path), *SAMPLE_ARGS, "--seed", "5"]) == 0
    truth = json.loads((tmp_path / "ground_truth.json").read_text())
    dss = [pydicom.dcmread(p) for p in tmp_path.iterdir() if p.name != "ground_truth.json"]
    assert len(dss) == 8 and {d.SeriesInstanceUID for d in dss} == {truth["series_uid"]}
    assert truth["generator"]["seed"] == 5


def test_make_sample_never_deletes_other_dicom_files(tmp_path, capsys):
    """--out pointing at a folder of real scans: their files are not the generator's to delete."""
    foreign = write_series(tmp_path, 3, size=16)
    ms = load_script("make_sample_dicoms")
    with pytest.raises(SystemExit) as e:
        ms.main(["--out", str(tmp_path), *SAMPLE_ARGS])
    assert e.value.code == 2 and "not written by the phantom generator" in capsys.readouterr().err
    assert sorted(p for p in tmp_path.iterdir()) == sorted(foreign)


# --- write_dicom_series -------------------------------------------------------------------------------------------


def test_each_slice_file_is_written_all_or_nothing(tmp_path, monkeypatch):
    """A write that dies half-way through a file leaves no truncated DICOM file in the series folder."""
    ph = P.make_phantom(**TINY)
    real = pydicom.dcmwrite
    calls = []

    def dying(fp, ds, *args, **kwargs):
        calls.append(1)
        if len(calls) < 3:
            return real(fp, ds, *args, **kwargs)
        buf = io.BytesIO()
        real(buf, ds, *args, **kwargs)
        data = buf.getvalue()[: len(buf.getvalue()) // 2]
        if isinstance(fp, (str, Path)):
            Path(fp).write_bytes(data)
        else:
            fp.write(data)
        raise OSError("No space left on device")

    monkeypatch.setattr(pydicom, "dcmwrite", dying)
    with pytest.raises(OSError):
        P.write_dicom_series(ph, tmp_path, compress=False)
    files = list(tmp_path.iterdir())
    assert len(files) == 2
    for p in files:
        ds = pydicom.dcmread(p)
        assert ds.pixel_array.shape == ph.hu.shape[1:]


def test_series_with_another_study_date_gets_its_own_uids(tmp_path):
    """Baseline and follow-up written from one phantom with two study dates are two studies, not the same SOP
    instances with different dates (a loader de-duplicates by SOPInstanceUID)."""
    ph = P.make_phantom(**TINY)
    a = P.write_dicom_series(ph, tmp_path / "a", compress=False)
    b = P.write_dicom_series(ph, tmp_path / "b", compress=False, study_date="20200401")
    da = [pydicom.dcmread(tmp_path / "a" / f) for f in a["files"]]
    db = [pydicom.dcmread(tmp_path / "b" / f) for f in b["files"]]
    assert {d.StudyDate for d in db} == {"20200401"}
    assert a["series_uid"] != b["series_uid"] and a["study_uid"] != b["study_uid"]
    assert not {d.SOPInstanceUID for d in da} & {d.SOPInstanceUID for d in db}
    assert {d.FrameOfReferenceUID for d in da}.isdisjoint({d.FrameOfReferenceUID for d in db})
    again = P.write_dicom_series(ph, tmp_path / "c", compress=False, study_date="20200401")
    assert again["series_uid"] == b["series_uid"], "still deterministic"


def test_spacing_headers_are_exact(tmp_path):
    """PixelSpacing and SliceThickness carry the spacing the pixels were made with (0.68359375 mm = 350 mm / 512,
    a common CT pixel size, came out as 0.683594)."""
    ph = P.make_phantom(shape=(3, 24, 24), spacing=(0.625, 0.68359375, 0.68359375))
    info = P.write_dicom_series(ph, tmp_path, compress=False)
    ds = pydicom.dcmread(tmp_path / info["files"][0])
    assert [float(v) for v in ds.PixelSpacing] == [0.68359375, 0.68359375]
    assert float(ds.SliceThickness) == 0.625
    assert all(len(str(v)) <= 16 for v in ds.PixelSpacing)


# --- make_phantom arguments ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, word", [
    ({"shape": (0, 32, 32)}, "shape"),
    ({"shape": (6, 32)}, "shape"),
    ({"spacing": (0.0, 11.0, 11.0)}, "spacing"),
    ({"spacing": (-7.5, 11.0, 11.0)}, "spacing"),  # made negative lung volumes in the ground truth
    ({"spacing": (7.5, float("nan"), 11.0)}, "spacing"),
])
def test_bad_grid_is_a_clear_error(kwargs, word):
    with pytest.raises(ValueError, match=word):
        P.make_phantom(**{**TINY, **kwargs})


@pytest.mark.parametrize("kwargs, word", [
    ({"side": 0}, "side"),  # 0-based "right": made no lesion (or one outside the lungs) silently
    ({"side": "left"}, "side"),
    ({"cls": 4}, "cls"),  # a label 4 in the truth map that no volume or score counts
    ({"cls": "ggo"}, "cls"),
    ({"radii_mm": (0.0, 30.0, 15.0)}, "radii"),
])
def test_bad_lesion_spec_is_a_clear_error(kwargs, word):
    args = {"name": "x", "side": P.LEFT, "cls": P.GGO, "center_mm": (90.0, 0.0, -40.0),
            "radii_mm": (30.0, 30.0, 15.0), **kwargs}
    with pytest.raises(ValueError, match=word):
        P.make_phantom(**TINY, lesions=[P.LesionSpec(**args)])


# --- ground truth -------------------------------------------------------------------------------------------------


def test_ground_truth_is_strict_json_when_a_lung_is_outside_the_scan():
    """A scan of the neck only (no lung): the landmarks it cannot see are null, not NaN (invalid JSON)."""
    ph = P.make_phantom(shape=(4, 32, 32), spacing=(5.0, 11.0, 11.0), z_center_mm=250.0, lesions=None)
    assert not ph.lungs.any()
    gt = json.loads(json.dumps(P.ground_truth(ph), allow_nan=False))
    assert gt["landmarks_z_mm"]["apex_right"] is None and gt["landmarks_z_mm"]["base_left"] is None
    assert gt["landmarks_z_mm"]["carina"] == 0.0


# --- scoring/validation/phantom.py --------------------------------------------------------------------------------


def test_reference_from_a_truth_without_entries_is_refused():
    """``{"series": []}`` wrote a header-only reference CSV and reported success."""
    with pytest.raises(CTScoreError, match="no series"):
        make_reference({"series": []})
    assert not make_reference({"series_uid": "1.2", "scores": {"six_zone_total": 0}}, n_simulated=0).empty

