"""DICOM-SEG output (highdicom): lungs and lesions as segments referencing the source series.

The masks travel as a geometry-carrying :class:`highdicom.Volume` built from the SimpleITK mask
image (origin, spacing and direction included), its axes put in the source's order (slices first, as
SimpleITK's arrays are), so that every SEG frame lies in a source slice's plane and references it
(DerivationImageSequence): viewers overlay the frames on the CT slices. Nothing is flipped by hand and
the SEG cannot come out mirrored.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes

from pipeline import __version__

log = logging.getLogger(__name__)


def _code(scheme: str, value: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


_ANATOMY = ("SCT", "91723000", "Anatomical Structure")  # CID 7150
_ABNORMAL = ("SCT", "49755003", "Morphologically Abnormal Structure")  # CID 7150
# (label, property category, property type) of each segment (DICOM CID 7150 / 7151 / 6102)
SEGMENTS = [
    ("Right lung", _ANATOMY, ("SCT", "3341006", "Right lung")),
    ("Left lung", _ANATOMY, ("SCT", "44029006", "Left lung")),
    ("Ground glass opacity", _ABNORMAL, ("DCM", "112120", "Ground glass opacity")),
    ("Consolidation", _ABNORMAL, ("SCT", "95436008", "Lung consolidation")),
]


_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID",
                 "AccessionNumber", "StudyDate", "StudyTime", "ReferringPhysicianName", "SliceThickness")
# type-1 UIDs that anonymised or hand-made exports sometimes lack (the loader scores such series; the inventory
# flags a missing SeriesInstanceUID): the SEG must have them, so they are made up, the same for the same images
_TYPE1_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


def _uid(*parts: str) -> str:
    """A deterministic UID under the 2.25 root from the given text."""
    return "2.25." + str(int(hashlib.sha256("|".join(parts).encode()).hexdigest()[:30], 16))


def build_seg(source_files: Sequence[str | Path], lungs: sitk.Image, lesions: sitk.Image, model_id: str):
    """A highdicom Segmentation with 4 binary segments on the source series' grid.

    ``lungs`` (1 right, 2 left) and ``lesions`` (1 faint GGO, 2 GGO, 3 consolidation) are SimpleITK
    images on the source grid (any orientation: geometry comes from the image). Type-2 attributes the
    sources lack are copied empty, and a StudyInstanceUID, SeriesInstanceUID or FrameOfReferenceUID they lack
    is taken from another source file or made up (the same for the same images), in memory only.
    """
    import highdicom as hd

    sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in source_files]
    for ds in sources:  # anonymised exports drop type-2 attributes the SEG must copy (in memory only)
        for kw in _TYPE2_COPIED:
            if kw not in ds:
                setattr(ds, kw, "")
    instances = sorted(str(ds.SOPInstanceUID) for ds in sources)
    for kw in _TYPE1_UIDS:
        if any(not ds.get(kw) for ds in sources):
            value = next((str(ds.get(kw)) for ds in sources if ds.get(kw)), None) or _uid(kw, *instances)
            log.warning("the source images lack %s: the DICOM-SEG gets %s", kw, value)
            for ds in sources:
                if not ds.get(kw):
                    setattr(ds, kw, value)
    def volume(img: sitk.Image, **kw):
        # highdicom's Volume is (x, y, z) from SimpleITK; frames run along its first axis: back to (z, y, x)
        return hd.Volume.from_simpleitk(img, **kw).permute_spatial_axes([2, 1, 0])

    geom = volume(lungs, frame_of_reference_uid=sources[0].FrameOfReferenceUID)
    lung_arr = volume(lungs).array
    les_arr = volume(lesions).array
    stack = np.stack([lung_arr == 1, lung_arr == 2, (les_arr == 1) | (les_arr == 2), les_arr == 3], axis=-1)
    vol = hd.Volume(array=stack.astype(np.uint8), affine=geom.affine, coordinate_system="PATIENT",
                    frame_of_reference_uid=sources[0].FrameOfReferenceUID,
                    channels={"SegmentNumber": [1, 2, 3, 4]})
    algorithm = hd.AlgorithmIdentificationSequence(
        name="ctscore", family=codes.DCM.ArtificialIntelligence, version=f"{__version__} ({model_id})",
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i, segment_label=label, segmented_property_category=_code(*cat),
            segmented_property_type=_code(*typ), algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for i, (label, cat, typ) in enumerate(SEGMENTS, start=1)
    ]
    # the same masks of the same series give the same UIDs (a rerun replaces its SEG); other masks (other
    # settings, another model) give new ones, so that an archive never holds two contents under one UID
    content = hashlib.sha256(np.ascontiguousarray(stack).tobytes()).hexdigest()
    series_uid = _uid("seg-series", sources[0].SeriesInstanceUID, model_id, content)
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=vol, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=series_uid, series_number=9901,
        sop_instance_uid=_uid("seg-instance", series_uid), instance_number=1, manufacturer="ctscore",
        manufacturer_model_name="ctscore", software_versions=__version__, device_serial_number="0",
        series_description="ctscore lungs and lesions",
    )
