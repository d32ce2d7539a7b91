"""Privacy audit of every output of a run (identifying header values and patient-named paths only where README
documents them), and the landmark-levels picture (levels.png) drawn at the right patient z."""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipeline.config import load_config
from pipeline.qc_levels import levels_png
from pipeline.run import run_pipeline

REPO = Path(__file__).resolve().parents[1]

#: distinctive values for every identifying attribute (and the patient-named folder and file names)
IDENTIFYING = {
    "PatientName": "ZZDOE^JOHNNYQ", "PatientID": "MRN998877", "PatientBirthDate": "19450203",
    "AccessionNumber": "ACC556677", "InstitutionName": "STMUNGOHOSP", "InstitutionAddress": "ELMSTREETQ",
    "ReferringPhysicianName": "DRWHOZZ^REFQ", "StudyTime": "134512", "SeriesTime": "134533",
    "AcquisitionTime": "134544", "SeriesDate": "20210918", "AcquisitionDate": "20210919", "StudyID": "STUDYQ4242",
    "OperatorsName": "OPERZZ^TECHQ", "OtherPatientIDs": "OPID3141", "StationName": "CTSTATION77",
    "DeviceSerialNumber": "SNX90210", "PatientAddress": "QUIETLANE9", "PerformingPhysicianName": "PERFZZ^DOCQ",
    "InstitutionalDepartmentName": "DEPTQRAD", "PatientComments": "COMMENTQQ", "PhysiciansOfRecord": "RECPHYZZ^DOCQ",
}
STUDY_DATE = "20210917"
STUDY_UID, SERIES_UID = "1.2.826.0.1.3680043.10.77701", "1.2.826.0.1.3680043.10.77702"
SOP_ROOT = "1.2.826.0.1.3680043.10.88"
PRIVATE = "PRIVSECRETQ"
NEEDLES = ([v.split("^")[0] for v in IDENTIFYING.values()] + [PRIVATE, "JOHNNYQ", STUDY_UID, SOP_ROOT])


def _identified_copy(folder: Path) -> None:
    """sample_dicoms with the identifying values above, in a folder and files named after the patient."""
    folder.mkdir(parents=True)
    sources = sorted(p for p in (REPO / "sample_dicoms").iterdir() if p.suffix != ".json")
    for k, src in enumerate(sources):
        ds = pydicom.dcmread(src)
        for kw, value in IDENTIFYING.items():
            setattr(ds, kw, value)
        ds.StudyDate, ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY_DATE, STUDY_UID, SERIES_UID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{SOP_ROOT}{k:03d}"
        ds.private_block(0x0009, "ZZPRIVCREATOR", create=True).add_new(0x01, "LO", PRIVATE)
        ds.save_as(folder / f"ZZDOE_JOHNNYQ_{k:04d}.dcm")


def _texts(path: Path):
    """The bytes of a file, gunzipped (NIfTI headers) and with its PNG text chunks."""
    data = path.read_bytes()
    yield data
    if data[:2] == b"\x1f\x8b":
        yield gzip.decompress(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        i = 8
        while i < len(data):
            n, kind = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8]
            chunk = data[i + 8:i + 8 + n]
            if kind == b"zTXt":
                yield zlib.decompress(chunk.split(b"\0", 1)[1][1:])
            elif kind in (b"tEXt", b"iTXt"):
                yield chunk
            i += 12 + n


def test_no_identifying_value_outside_the_documented_outputs(tmp_path, classical_memo):
    """README (Privacy): no identifying header value in an output path; seg.dcm carries the patient, study and
    source-equipment attributes; inventory.csv / failures.csv / run.json name the input paths (report.html names
    none);
    scans.csv and result.json keep the study date and the SeriesInstanceUID. Nothing else holds any of them:
    not the masks' NIfTI headers, the PNGs (text chunks; titles are the scan id), zones.csv, nor the status
    records beyond the score row they keep (as result.json)."""
    src = tmp_path / "ZZDOE_JOHNNYQ_MRN998877" / "ACC556677"
    _identified_copy(src)
    cfg = load_config(overrides=["segmentation.method=classical", "outputs.write_dicom_seg=true",
                                 "outputs.pseudonym_salt=site-secret"])
    out = tmp_path / "out"
    summary = run_pipeline(src.parent, out, cfg)
    assert list(summary["scans"]["status"]) == ["ok"]
    names = {p.name for p in out.rglob("*")}
    assert "seg.dcm" in names and "levels.png" in names and "lungs.nii.gz" in names

    paths_named = {"inventory.csv", "inventory.parquet", "failures.csv", "failures.parquet", "run.json"}
    date_and_uid = {"scans.csv", "scans.parquet", "result.json"}
    for p in out.rglob("*"):
        rel = str(p.relative_to(out)).lower()
        assert not [v for v in NEEDLES + [STUDY_DATE, SERIES_UID] if v.lower() in rel], rel
        if not p.is_file() or p.name == "seg.dcm":
            continue
        allowed = set()
        if p.name in paths_named:
            allowed |= {"ZZDOE", "JOHNNYQ", "MRN998877", "ACC556677"}  # the folder and file names
        for blob in _texts(p):
            text = blob.decode("latin-1").lower()
            hits = [v for v in NEEDLES if v.lower() in text and v not in allowed]
            if p.name not in date_and_uid | paths_named and p.parent.name != ".status":  # a record keeps its row
                hits += [v for v in (STUDY_DATE, SERIES_UID) if v in text]
            assert not hits, f"{p.relative_to(out)} holds {hits}"

    seg = pydicom.dcmread(next(out.rglob("seg.dcm")))
    assert str(seg.PatientID) == "MRN998877" and str(seg.AccessionNumber) == "ACC556677"  # documented, for PACS
    assert str(seg.PhysiciansOfRecord) == "RECPHYZZ^DOCQ"  # documented too (README: physicians of record)
    assert PRIVATE.encode() not in next(out.rglob("seg.dcm")).read_bytes()  # private tags are not copied
    scans = summary["scans"].iloc[0]
    assert scans["patient_id"].startswith("pt-") and "MRN998877" not in scans["patient_id"]


# ------------------------------------------------------------------------------------------- levels.png
def _volume(z_mm, band_z, n=64, s=2.0):
    """A body with two lungs; the slice at ``band_z`` is bright (+1000 HU) so it shows as a white band."""
    nz = len(z_mm)
    hu = np.full((nz, n, n), -1000.0)
    lungs = np.zeros((nz, n, n), np.uint8)
    yy, xx = np.mgrid[0:n, 0:n]
    body = np.hypot(yy - n / 2, xx - n / 2) < 0.45 * n
    for k, z in enumerate(z_mm):
        hu[k][body] = 40
        for side, xc in ((1, 0.3 * n), (2, 0.7 * n)):
            m = np.hypot(yy - n / 2, xx - xc) < 0.12 * n
            hu[k][m], lungs[k][m] = -850, side
        if z == band_z:
            hu[k] = 1000
    return hu, lungs, (2.0, s, s)


def _rows(png: bytes, rgb: tuple[int, int, int], min_share: float, tol: int = 30) -> np.ndarray:
    """Rows of the left half of the picture (the coronal view) where ``rgb`` (within ``tol``, summed over the
    channels: lines are antialiased) covers at least ``min_share``."""
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    left = img[:, : img.shape[1] // 2]
    share = (np.abs(left - np.array(rgb)).sum(axis=2) < tol).mean(axis=1)
    return np.nonzero(share >= min_share)[0]


@pytest.mark.parametrize("descending", [False, True])
def test_levels_drawn_at_the_slice_they_name_on_uneven_slices(descending):
    """Slices 2 mm apart below z 100 and 10 mm apart above (a non-uniform series, in either slice order): the
    slice at z 150 must show where the level line at z 150 is drawn. The rows were spread evenly over the z
    range, which put that slice about 33 mm higher than its line."""
    z = np.r_[np.arange(0, 100, 2.0), np.arange(100, 205, 10.0)]
    if descending:
        z = z[::-1]
    hu, lungs, spacing = _volume(z, band_z=150.0)
    png = levels_png(hu, lungs, z, spacing, {"carina": {"z_mm": 150.0, "method": "detected"}})
    line = _rows(png, (0x06, 0xD6, 0xA0), 0.3, tol=120)  # the carina's colour
    white = _rows(png, (255, 255, 255), 0.3)
    assert line.size and white.size
    assert white.min() <= line.mean() <= white.max()
    assert abs((white.min() + white.max()) / 2 - line.mean()) <= 3


def test_levels_with_non_finite_z_are_listed_as_missing_not_a_crash():
    """A landmark whose z is NaN (e.g. read back from a table) counts as missing; it raised ValueError
    (round(nan)), which would have failed the whole series in process_series."""
    z = np.arange(0, 100, 2.0)
    hu, lungs, spacing = _volume(z, band_z=None)
    lms = {"carina": {"z_mm": float("nan"), "method": "detected"}, "ipv": {"z_mm": float("inf"), "method": "estimated"},
           "dome_right": {"z_mm": 20.0, "method": "detected"}}
    png = levels_png(hu, lungs, z, spacing, lms, title="x")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert _rows(png, (0xC7, 0x7D, 0xFF), 0.3, tol=120).size  # the detected dome is still drawn
    png = levels_png(hu, np.zeros_like(lungs), z, spacing, {k: {"z_mm": np.nan} for k in ("apex_right", "carina")})
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
