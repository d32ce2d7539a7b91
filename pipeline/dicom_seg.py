"""DICOM-SEG output (highdicom): lungs and lesions as segments referencing the source series.

The masks travel as a geometry-carrying :class:`highdicom.Volume` built from the SimpleITK mask
image (origin, spacing and direction included), so highdicom maps every voxel to the source frames
by patient position: nothing is flipped by hand and the SEG cannot come out mirrored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes

from pipeline import __version__


def _sct(value: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator="SCT", meaning=meaning)


# (label, property category, property type) of each segment, SNOMED CT (as in DICOM CID 7150/7151).
SEGMENTS = [
    ("Right lung", ("123037004", "Anatomical Structure"), ("3341006", "Right lung")),
    ("Left lung", ("123037004", "Anatomical Structure"), ("44029006", "Left lung")),
    ("Ground glass opacity", ("49755003", "Morphologically Altered Structure"), ("50196008", "Ground glass opacity")),
    ("Consolidation", ("49755003", "Morphologically Altered Structure"), ("95436008", "Lung consolidation")),
]


_TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID",
                        "AccessionNumber", "StudyDate", "StudyTime", "ReferringPhysicianName")


def _uid(*parts: str) -> str:
    """A deterministic UID under the 2.25 root from the given text."""
    return "2.25." + str(int(hashlib.sha256("|".join(parts).encode()).hexdigest()[:30], 16))


def build_seg(source_files: Sequence[str | Path], lungs: sitk.Image, lesions: sitk.Image, model_id: str):
    """A highdicom Segmentation with 4 binary segments on the source series' grid.

    ``lungs`` (1 right, 2 left) and ``lesions`` (1 faint GGO, 2 GGO, 3 consolidation) are SimpleITK
    images on the source grid (any orientation: geometry comes from the image).
    """
    import highdicom as hd

    sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in source_files]
    for ds in sources:  # anonymised exports drop type-2 attributes the SEG must copy (in memory only)
        for kw in _TYPE2_PATIENT_STUDY:
            if kw not in ds:
                setattr(ds, kw, "")
    geom = hd.Volume.from_simpleitk(lungs, frame_of_reference_uid=sources[0].FrameOfReferenceUID)
    lung_arr = hd.Volume.from_simpleitk(lungs).array
    les_arr = hd.Volume.from_simpleitk(lesions).array
    stack = np.stack([lung_arr == 1, lung_arr == 2, (les_arr == 1) | (les_arr == 2), les_arr == 3], axis=-1)
    vol = hd.Volume(array=stack.astype(np.uint8), affine=geom.affine, coordinate_system="PATIENT",
                    frame_of_reference_uid=sources[0].FrameOfReferenceUID,
                    channels={"SegmentNumber": [1, 2, 3, 4]})
    algorithm = hd.AlgorithmIdentificationSequence(
        name="ctscore", family=codes.DCM.ArtificialIntelligence, version=f"{__version__} ({model_id})",
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i, segment_label=label, segmented_property_category=_sct(*cat),
            segmented_property_type=_sct(*typ), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for i, (label, cat, typ) in enumerate(SEGMENTS, start=1)
    ]
    series_uid = _uid("seg-series", sources[0].SeriesInstanceUID, model_id)
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=vol, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=series_uid, series_number=9901,
        sop_instance_uid=_uid("seg-instance", series_uid), instance_number=1, manufacturer="ctscore",
        manufacturer_model_name="ctscore", software_versions=__version__, device_serial_number="0",
        series_description="ctscore lungs and lesions",
    )
