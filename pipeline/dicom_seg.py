"""DICOM-SEG output (highdicom): lungs and lesions as segments referencing the source series.

The masks travel as a geometry-carrying :class:`highdicom.Volume` built from the SimpleITK mask
image (origin, spacing and direction included), its axes put in the source's order (slices first, as
SimpleITK's arrays are), so that every SEG frame lies in a source slice's plane and references it
(DerivationImageSequence): viewers overlay the frames on the CT slices. Nothing is flipped by hand and
the SEG cannot come out mirrored.

The loader stacks the slices of a uniformly spaced series as they are, on a grid of the median step; header
positions rounded to a few decimals drift from that grid by hundredths of a millimetre, and highdicom links
frames to slices only within 0.001 mm (all or none). When the mask slices are the source slices (as many, each
within 5 % of the slice spacing of its grid position and in plane), the frames take the slices' own positions
and so reference them; a resampled or sheared volume keeps its own grid (its frames are not source slices).

Source files are read as the inventory and the loader read them (without a preamble or File Meta Information
too), and SOP Class and Instance UIDs that an export left only in the File Meta Information are taken from it.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes

from pipeline import __version__
from pipeline import headers as H
from pipeline.errors import SeriesError
from pipeline.inventory import dcmread_as_inventory

log = logging.getLogger(__name__)
#: highdicom's warning about a one-word PatientName quotes the name (an identifier on the console and in job logs):
#: silenced for the process as well as around build_seg (warnings.catch_warnings is not thread-safe)
_PERSON_NAME_WARNING = r"The string .* is unlikely to represent the intended person name"
warnings.filterwarnings("ignore", message=_PERSON_NAME_WARNING)


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
# SOP UIDs that some anonymised exports blank in the dataset but keep in the File Meta Information
_FROM_FILE_META = (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID"))
#: A mask slice is a source slice when they are this far apart at most (fraction of the slice / pixel spacing).
SAME_SLICE_TOLERANCE = 0.05


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

    sources = [dcmread_as_inventory(Path(f), stop_before_pixels=True) for f in source_files]
    for ds in sources:  # anonymised exports drop type-2 attributes the SEG must copy (in memory only)
        for kw in _TYPE2_COPIED:
            if kw not in ds:
                setattr(ds, kw, "")
        meta = getattr(ds, "file_meta", None)
        for kw, meta_kw in _FROM_FILE_META:
            if not ds.get(kw) and meta is not None and meta.get(meta_kw):
                setattr(ds, kw, meta[meta_kw].value)
    lacking = [kw for kw, _ in _FROM_FILE_META if any(not ds.get(kw) for ds in sources)]
    if lacking:  # a SEG references its source instances: made-up UIDs would reference nothing
        raise ValueError(f"source images without {' or '.join(lacking)}: a DICOM-SEG cannot reference them")
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
    positions = _source_positions(sources, source_files, geom)
    if positions is None:  # frames where the masks lie; highdicom links those that coincide with slices
        pixels = hd.Volume(array=stack.astype(np.uint8), affine=geom.affine, coordinate_system="PATIENT",
                           frame_of_reference_uid=sources[0].FrameOfReferenceUID,
                           channels={"SegmentNumber": [1, 2, 3, 4]})
        planes = {}
    else:  # the mask slices are the source slices: at their own positions
        pixels = stack.astype(np.uint8)
        planes = dict(plane_positions=[hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, p)
                                       for p in positions],
                      plane_orientation=geom.get_plane_orientation(), pixel_measures=geom.get_pixel_measures())
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
    with warnings.catch_warnings():
        # highdicom's warning about a one-word PatientName quotes the name: it would put an identifier on the
        # console and into cluster job logs (the SEG copies the source's patient module as it is, by design)
        warnings.filterwarnings("ignore", message=_PERSON_NAME_WARNING)
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=pixels, **planes,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=series_uid, series_number=9901,
            sop_instance_uid=_uid("seg-instance", series_uid), instance_number=1, manufacturer="ctscore",
            manufacturer_model_name="ctscore", software_versions=__version__, device_serial_number="0",
            series_description="ctscore lungs and lesions",
        )
    _set_slice_spacing(seg, geom)
    return seg


def _set_slice_spacing(seg, geom) -> None:
    """SpacingBetweenSlices of the SEG's shared Pixel Measures: the step between the masks' slices. highdicom copies
    the first source header's value when the pixel spacing matches (highdicom 0.28), and source headers can be
    wrong (a GE series said 6.5 mm for 2.5 mm slices; highdicom then could not read the SEG back as a volume) or
    negative (-2.0 on itkelastix00: the standard's value is a distance)."""
    step = float(np.linalg.norm(np.asarray(geom.affine, float)[:3, 0]))
    shared = seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    if shared is None or "PixelMeasuresSequence" not in shared or not step > 0:
        return
    measures = shared.PixelMeasuresSequence[0]
    written = measures.get("SpacingBetweenSlices")
    if written is None or abs(float(written) - step) > 1e-3 * step:
        measures.SpacingBetweenSlices = pydicom.valuerep.DS(step, auto_format=True)


def _source_positions(sources: Sequence[pydicom.Dataset], files: Sequence[str | Path], geom) -> list[list[float]] | None:
    """The ImagePositionPatient of the source slice (or frame) that each slice of ``geom`` (a highdicom Volume,
    slices first) is, in the volume's order; None when the volume's slices are not the source slices: another
    count, orientation or pixel spacing, or a slice further than :data:`SAME_SLICE_TOLERANCE` of the slice spacing
    (along the normal) or of the pixel spacing (in plane) from its grid position (a resampled or sheared volume)."""
    try:
        frames = [fr for ds, f in zip(sources, files) for fr in H.frames_of(ds, Path(f))]
    except SeriesError:
        return None
    n = geom.spatial_shape[0]
    if len(frames) != n:
        return None
    affine = np.asarray(geom.affine, float)
    origin, step, down, across = affine[:3, 3], affine[:3, 0], affine[:3, 1], affine[:3, 2]
    dz, dy, dx = (float(np.linalg.norm(v)) for v in (step, down, across))
    if min(dz, dy, dx) <= 0:
        return None
    positions: dict[int, list[float]] = {}
    for fr in frames:
        if not (np.allclose(fr.iop[:3], across / dx, atol=1e-3) and np.allclose(fr.iop[3:], down / dy, atol=1e-3)
                and np.allclose(fr.spacing, (dy, dx), rtol=1e-3)):
            return None
        offset = np.asarray(fr.ipp, float) - origin
        t = float(offset @ step) / dz**2  # fractional slice index
        k = int(round(t))
        in_plane = offset - t * step
        if (k in positions or not 0 <= k < n or abs(t - k) > SAME_SLICE_TOLERANCE
                or np.linalg.norm(in_plane) > SAME_SLICE_TOLERANCE * min(dx, dy)):
            return None
        positions[k] = [float(v) for v in fr.ipp]
    return [positions[k] for k in range(n)]
