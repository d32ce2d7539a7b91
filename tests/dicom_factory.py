"""Small synthetic CT series written with pydicom, for the DICOM ingestion tests.

``write_series(folder, ...)`` writes one classic CT Image Storage file per slice: a 32x32 (default)
"body" disc of soft tissue containing two "lungs" of air-like values, surrounded by air and, when
asked, by padding outside a circular field of view. Every geometry value can be overridden per slice
so a test states exactly the irregularity it checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def phantom_slice(n: int = 32, pad_value: int | None = None) -> np.ndarray:
    """HU of one slice: air -1000, body 40, lungs -850; ``pad_value`` outside a circular FOV."""
    yy, xx = np.mgrid[0:n, 0:n]
    c = (n - 1) / 2
    r = np.hypot(yy - c, xx - c)
    hu = np.full((n, n), -1000.0)
    hu[r < 0.42 * n] = 40.0
    hu[(np.hypot(yy - c, xx - 0.33 * n) < 0.12 * n)] = -850.0
    hu[(np.hypot(yy - c, xx - 0.67 * n) < 0.12 * n)] = -850.0
    if pad_value is not None:
        hu[r > 0.49 * n] = pad_value
    return hu


def make_dataset(hu: np.ndarray, z: float, *, series_uid: str, study_uid: str, frame_uid: str,
                 iop: Sequence[float] = AXIAL, ipp: Sequence[float] | None = None, spacing: float = 1.0,
                 thickness: float = 2.0, slope: float = 1.0, intercept: float = -1024.0, instance: int = 1,
                 image_type: str = "ORIGINAL\\PRIMARY\\AXIAL", modality: str = "CT", kernel: str = "B60f",
                 acquisition: int = 1, photometric: str = "MONOCHROME2", pad_value: int | None = None,
                 sop_uid: str | None = None, body_part: str = "CHEST", contrast: str = "") -> Dataset:
    """One CT Image Storage dataset whose stored values give ``hu`` through slope/intercept."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = "SYNTH001"
    ds.PatientName = "Synthetic^Phantom"
    ds.StudyDate = "20200401"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.Modality = modality
    ds.Manufacturer = "ctscore-tests"
    ds.ImageType = image_type.split("\\")
    ds.ConvolutionKernel = kernel
    if body_part:
        ds.BodyPartExamined = body_part
    if contrast:
        ds.ContrastBolusAgent = contrast
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = acquisition
    ds.InstanceNumber = instance
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
    if ipp is None:
        ipp = (-16.0, -16.0, z)
    ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = thickness
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    stored = np.round((hu - intercept) / slope).astype(np.int16)
    if photometric == "MONOCHROME1":
        stored = (-1 - stored.astype(np.int32)).astype(np.int16)
    if pad_value is not None:
        ds.PixelPaddingValue = int(pad_value)
    ds.PixelData = stored.tobytes()
    return ds


def write_series(folder: Path, n_slices: int = 12, *, size: int = 32, dz: float = 2.0, z0: float = -100.0,
                 positions: Sequence[float] | None = None, series_uid: str | None = None,
                 study_uid: str | None = None, frame_uid: str | None = None,
                 per_slice: Callable[[int, dict], None] | None = None, shuffle: bool = True,
                 hu: np.ndarray | None = None, prefix: str = "s", **kw) -> list[Path]:
    """Write a series (one file per slice, names in shuffled order) and return the paths.

    ``per_slice(k, params)`` may edit the keyword arguments of :func:`make_dataset` for slice ``k``
    (e.g. its position, slope or pixels under ``params["hu"]``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    zs = list(positions) if positions is not None else [z0 + k * dz for k in range(n_slices)]
    names = list(range(len(zs)))
    if shuffle:
        np.random.default_rng(0).shuffle(names)
    paths = []
    for k, z in enumerate(zs):
        params = dict(kw)
        params.update(z=z, series_uid=series_uid, study_uid=study_uid, frame_uid=frame_uid, instance=k + 1,
                      hu=phantom_slice(size, kw.get("pad_value")) if hu is None else hu)
        if per_slice:
            per_slice(k, params)
        ds = make_dataset(**params)
        path = folder / f"{prefix}{names[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced(path: Path, n_frames: int = 12, *, size: int = 32, dz: float = 2.0, z0: float = -100.0,
                   positions: Sequence[float] | None = None, slope: float = 1.0, intercept: float = -1024.0,
                   iop: Sequence[float] = AXIAL) -> Path:
    """An Enhanced CT Image Storage file with per-frame positions (frames in reverse z order)."""
    zs = list(positions) if positions is not None else [z0 + k * dz for k in range(n_frames)][::-1]
    ds = make_dataset(phantom_slice(size), zs[0], series_uid=generate_uid(), study_uid=generate_uid(),
                      frame_uid=generate_uid(), slope=slope, intercept=intercept)
    ds.SOPClassUID = ENHANCED_CT
    ds.file_meta.MediaStorageSOPClassUID = ENHANCED_CT
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
               "RescaleSlope", "RescaleIntercept"):
        delattr(ds, kw)
    shared = Dataset()
    orient = Dataset()
    orient.ImageOrientationPatient = list(iop)
    shared.PlaneOrientationSequence = [orient]
    measures = Dataset()
    measures.PixelSpacing = [1.0, 1.0]
    measures.SliceThickness = dz
    shared.PixelMeasuresSequence = [measures]
    transform = Dataset()
    transform.RescaleSlope = slope
    transform.RescaleIntercept = intercept
    transform.RescaleType = "HU"
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for z in zs:
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [-16.0, -16.0, z]
        item.PlanePositionSequence = [pos]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.NumberOfFrames = len(zs)
    stored = np.round((phantom_slice(size) - intercept) / slope).astype(np.int16)
    ds.PixelData = np.repeat(stored[None], len(zs), axis=0).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def read(path: Path) -> Dataset:
    """Read a file written here (convenience for tests that edit one)."""
    return pydicom.dcmread(path)


def loading_config(**loading) -> dict:
    """The default configuration with ``loading:`` keys changed."""
    from pipeline.config import default_config

    cfg = default_config()
    cfg["loading"].update(loading)
    return cfg


def refused(files, cfg=None):
    """The SeriesError with which load_series refuses ``files`` (the test fails when it loads them)."""
    import pytest

    from pipeline.errors import SeriesError
    from pipeline.loading import load_series

    with pytest.raises(SeriesError) as exc:
        load_series(files, cfg)
    return exc.value


def edit_file(path: Path, **values) -> None:
    """Set (or, with None, delete) header attributes of one file in place."""
    ds = read(path)
    for keyword, value in values.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)


def replace_frame(path: Path, damage) -> None:
    """Replace the one encapsulated frame of a compressed file by ``damage(frame bytes)``."""
    from pydicom.encaps import encapsulate, generate_frames

    ds = read(path)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([damage(frame)])
    ds.save_as(path)


def strip_preamble(files: Sequence[Path], keep_meta: bool = True) -> None:
    """Rewrite files without the 128-byte preamble; without any File Meta Information too unless ``keep_meta``
    (a raw dataset, implicit VR little endian)."""
    for f in files:
        ds = read(f)
        ds.preamble = None
        if keep_meta:
            pydicom.dcmwrite(f, ds, enforce_file_format=False)
        else:
            ds.file_meta = FileMetaDataset()  # a raw dataset: no meta group at all
            pydicom.dcmwrite(f, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
