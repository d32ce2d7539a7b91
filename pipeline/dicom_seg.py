"""DICOM-SEG output (highdicom): lungs and lesions as segments referencing the source series.

The masks' geometry is a :class:`highdicom.VolumeGeometry` built from the SimpleITK mask image (origin, spacing
and direction included), its axes put in the source's order (slices first, as SimpleITK's arrays are), so that
every SEG frame lies in a source slice's plane and references it (DerivationImageSequence): viewers overlay the
frames on the CT slices. Nothing is flipped by hand and the SEG cannot come out mirrored.

Memory: the masks are read as views of the images; the one copy is the 0/1 uint8 stack of the four segments (4 bytes
a voxel, as highdicom takes them), hashed without a copy, and highdicom's check of segment overlap (a 64-bit sum of
the whole stack) is done a slice at a time (:func:`_segmentation_class`): build_seg peaks at about 5 bytes a voxel
(it was 20: a 1024 x 1024 x 496 series needed some 10 GiB more).

The loader stacks the slices of a uniformly spaced series as they are, on a grid of the median step; header
positions rounded to a few decimals drift from that grid by hundredths of a millimetre, and highdicom links
frames to slices only within 0.001 mm (all or none). A mask slice that is a source slice (within 5 % of the slice
spacing of its grid position, and in plane) takes that slice's own position and references it; a slice the loader
filled into a gap (``loading.allow_gaps``) stays on the grid and references nothing, and the others are linked here
(:func:`_link_frames`) when highdicom linked none. A resampled or sheared volume (uneven slices, a tilted gantry)
keeps its own grid: highdicom references what it can match, often nothing, and a frame keeps a reference only to a
slice that starts where it does (:func:`_unlink_displaced`: a sheared frame referenced the slice in its plane, up to
60 mm apart, and OHIF drew it there); viewers that place frames by geometry, such as 3D Slicer and highdicom, overlay
them; one that pairs frames with slices by reference does not.

Every segment carries a recommended display colour (ground glass and consolidation those of the QC picture, where
faint ground glass is a class of its own and here part of ground glass; the lungs two other colour-blind-safe
colours; a normal scan's empty lesion segments are described but have no frames, as DICOM allows) and the
algorithm family: Image Processing for the classical baseline, Artificial Intelligence for a network.

Source files are read as the inventory and the loader read them (without a preamble or File Meta Information
too), and SOP Class and Instance UIDs that an export left only in the File Meta Information are taken from it.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import logging
import re
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
from pipeline.geometry import POSITION_ROUNDING_MM
from pipeline.inventory import dcmread_as_inventory

log = logging.getLogger(__name__)
#: highdicom's warning about a one-word PatientName quotes the name, and pydicom's about a malformed header value
#: ("Invalid value for VR DA: '1923-05-17'") the value (identifiers on the console and in job logs): silenced for
#: the process as well as around build_seg (warnings.catch_warnings is not thread-safe)
_PERSON_NAME_WARNING = r"The string .* is unlikely to represent the intended person name"
_INVALID_VALUE_WARNING = r"Invalid value for VR "
warnings.filterwarnings("ignore", message=_PERSON_NAME_WARNING)
warnings.filterwarnings("ignore", message=_INVALID_VALUE_WARNING)
#: Whether this thread (or task) is building a SEG: pydicom logs its "Invalid value for VR" warning too, and
#: :class:`_HideQuotedValues` drops that record then (only then: the pydicom logger is not this module's).
_BUILDING = contextvars.ContextVar("ctscore_building_seg", default=False)


class _HideQuotedValues(logging.Filter):
    """Drops pydicom's "Invalid value for VR ..." log records (they quote the header value) while a SEG is built."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_BUILDING.get() and str(record.msg).startswith(_INVALID_VALUE_WARNING))


logging.getLogger("pydicom").addFilter(_HideQuotedValues())


def _code(scheme: str, value: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


_ANATOMY = ("SCT", "91723000", "Anatomical Structure")  # CID 7150
_ABNORMAL = ("SCT", "49755003", "Morphologically Abnormal Structure")  # CID 7150
# (label, property category, property type, recommended display colour) of each segment (DICOM CID 7150 / 7151 /
# 6102); the lesion colours are the QC picture's (pipeline.qc: ground glass, consolidation), the lungs two that stay
# apart from them and from each other with colour blindness
SEGMENTS = [
    ("Right lung", _ANATOMY, ("SCT", "3341006", "Right lung"), "#56b4e9"),
    ("Left lung", _ANATOMY, ("SCT", "44029006", "Left lung"), "#009e73"),
    ("Ground glass opacity", _ABNORMAL, ("DCM", "112120", "Ground glass opacity"), "#ffd400"),
    ("Consolidation", _ABNORMAL, ("SCT", "95436008", "Lung consolidation"), "#5c0030"),
]


_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID",
                 "AccessionNumber", "StudyDate", "StudyTime", "ReferringPhysicianName", "SliceThickness")
# type-2 attributes highdicom parses, refusing the whole SEG over a malformed value (a birth date written
# 1923-05-17, a sex other than M, F or O): such a value is left empty in the SEG (type 2 allows it) and the SEG is made
_TYPE2_PARSED = ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime")
# type-1 UIDs that anonymised or hand-made exports sometimes lack (the loader scores such series; the inventory
# flags a missing SeriesInstanceUID): the SEG must have them, so they are made up, the same for the same images
_TYPE1_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
# SOP UIDs that some anonymised exports blank in the dataset but keep in the File Meta Information
_FROM_FILE_META = (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID"))
#: A mask slice is a source slice when they are this far apart at most (fraction of the slice / pixel spacing).
SAME_SLICE_TOLERANCE = 0.05
#: Along the slice normal, as far as the loader lets a slice lie off the even grid it stacks the series on
#: unresampled (``loading.spacing_tolerance``'s default, 0.1 of the spacing), or positions written to 0.1 mm
#: (twice :data:`~pipeline.geometry.POSITION_ROUNDING_MM`), whichever is wider, and under half a slice. At 5 %,
#: 0.625 mm slices written to 0.1 mm left 282 of 718 frames referencing no slice (an audit).
NORMAL_TOLERANCE = 0.1


def _uid(*parts: str) -> str:
    """A deterministic UID under the 2.25 root from the given text."""
    return "2.25." + str(int(hashlib.sha256("|".join(parts).encode()).hexdigest()[:30], 16))


def build_seg(source_files: Sequence[str | Path], lungs: sitk.Image, lesions: sitk.Image, model_id: str,
              edited: Sequence[str] = ()):
    """A highdicom Segmentation with 4 binary segments on the source series' grid.

    ``lungs`` (1 right, 2 left) and ``lesions`` (1 faint GGO, 2 GGO, 3 consolidation) are SimpleITK
    images on the source grid (any orientation: geometry comes from the image). Type-2 attributes the
    sources lack are copied empty, as are a malformed birth date, sex, study date or time (a warning names the
    attribute, not its value), and a StudyInstanceUID, SeriesInstanceUID or FrameOfReferenceUID they lack
    is taken from another source file or made up (the same for the same images), in memory only.
    """
    token = _BUILDING.set(True)
    try:
        with warnings.catch_warnings():
            # the warnings of highdicom and pydicom that quote a header value (a one-word PatientName, a malformed
            # date): they would put an identifier on the console and into cluster job logs (the SEG copies the
            # source's patient module as it is, by design)
            warnings.filterwarnings("ignore", message=_PERSON_NAME_WARNING)
            warnings.filterwarnings("ignore", message=_INVALID_VALUE_WARNING)
            return _build_seg(source_files, lungs, lesions, model_id, edited)
    finally:
        _BUILDING.reset(token)


def _build_seg(source_files: Sequence[str | Path], lungs: sitk.Image, lesions: sitk.Image, model_id: str,
               edited: Sequence[str]):
    """:func:`build_seg`, the warnings that quote header values silenced."""
    import highdicom as hd

    sources = [dcmread_as_inventory(Path(f), stop_before_pixels=True) for f in source_files]
    emptied = set()
    for ds in sources:  # anonymised exports drop type-2 attributes the SEG must copy (in memory only)
        for kw in _TYPE2_COPIED:
            if kw not in ds:
                setattr(ds, kw, "")
        for kw in _TYPE2_PARSED:
            if not _parses(kw, ds.get(kw)):
                setattr(ds, kw, "")
                emptied.add(kw)
        meta = getattr(ds, "file_meta", None)
        for kw, meta_kw in _FROM_FILE_META:
            if not ds.get(kw) and meta is not None and meta.get(meta_kw):
                setattr(ds, kw, meta[meta_kw].value)
    if emptied:  # the attribute named, never its value (an identifier)
        one = len(emptied) == 1
        log.warning("the source images' %s %s malformed: the DICOM-SEG leaves %s empty",
                    " and ".join(sorted(emptied)), "is" if one else "are", "it" if one else "them")
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
    # geometry without pixels (highdicom's Volume.from_simpleitk copies the whole array), the same affine;
    # the masks as views of the images' buffers (slices first, as a permuted Volume's array was)
    geom = hd.VolumeGeometry.from_components(
        spatial_shape=lungs.GetSize(), spacing=lungs.GetSpacing(), coordinate_system="PATIENT",
        direction=np.reshape(lungs.GetDirection(), (3, 3)), position=lungs.GetOrigin(),
        frame_of_reference_uid=sources[0].FrameOfReferenceUID,
    ).permute_spatial_axes([2, 1, 0])
    stack = _segment_stack(sitk.GetArrayViewFromImage(lungs), sitk.GetArrayViewFromImage(lesions))
    frames = _source_frames(sources, source_files)
    positions = _source_positions(frames, geom)
    if positions is None:  # frames where the masks lie (a resampled or sheared volume: they are not source slices)
        pixels = hd.Volume(array=stack, affine=geom.affine, coordinate_system="PATIENT",
                           frame_of_reference_uid=sources[0].FrameOfReferenceUID,
                           channels={"SegmentNumber": [1, 2, 3, 4]})
        planes = {}
    else:  # the mask slices that are source slices at those slices' own positions, a filled-in one on its grid
        affine = np.asarray(geom.affine, float)
        positions = [p if p is not None else [float(v) for v in affine[:3, 3] + k * affine[:3, 0]]
                     for k, p in enumerate(positions)]
        pixels = stack
        planes = dict(plane_positions=[hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, p)
                                       for p in positions],
                      plane_orientation=geom.get_plane_orientation(), pixel_measures=geom.get_pixel_measures())
    # the classical baseline is thresholds and morphology, not a trained model
    family = codes.DCM.ImageProcessing if model_id.startswith("classical-") else codes.DCM.ArtificialIntelligence
    algorithm = hd.AlgorithmIdentificationSequence(name="ctscore", family=family, version=f"{__version__} ({model_id})")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i, segment_label=label, segmented_property_category=_code(*cat),
            segmented_property_type=_code(*typ),
            # a mask a reader edited (--masks: "lungs", "lesions") is no longer the algorithm's alone
            algorithm_type=(hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC
                            if ("lungs" if cat is _ANATOMY else "lesions") in edited
                            else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC),
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*(int(colour[j:j + 2], 16) for j in (1, 3, 5))),
        )
        for i, (label, cat, typ, colour) in enumerate(SEGMENTS, start=1)
    ]
    # the same masks of the same series give the same UIDs (a rerun replaces its SEG); other masks (other
    # settings, another model) give new ones, so that an archive never holds two contents under one UID
    # (the digest of the 0/1 bytes of the segments stack, as it was of the boolean stack, without a copy of it)
    content = hashlib.sha256(memoryview(stack).cast("B")).hexdigest()
    # which masks a reader edited too: the same voxels resubmitted through --masks are another object (SEMIAUTOMATIC
    # segments), which an archive keeping the first of two objects under one UID would lose (unedited: the UIDs of
    # earlier versions)
    series_uid = _uid("seg-series", sources[0].SeriesInstanceUID, model_id, content,
                      *([",".join(sorted(edited))] if edited else []))
    seg = _segmentation_class()(
        source_images=sources, pixel_array=pixels, **planes,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=series_uid, series_number=9901,
        sop_instance_uid=_uid("seg-instance", series_uid), instance_number=1, manufacturer="ctscore",
        manufacturer_model_name="ctscore", software_versions=__version__, device_serial_number="0",
        series_description="ctscore lungs and lesions",
    )
    del pixels, stack
    seg.__class__ = hd.seg.Segmentation  # a plain highdicom Segmentation (the subclass only checks differently)
    _set_slice_spacing(seg, geom)
    # highdicom draws a random DimensionOrganizationUID: the same content under the same SOP Instance UID then had
    # two headers (a reproducibility audit); derived from the series instead
    organization = _uid("seg-dimensions", series_uid)
    for item in [*seg.get("DimensionOrganizationSequence", []), *seg.get("DimensionIndexSequence", [])]:
        item.DimensionOrganizationUID = organization
    if planes and frames:
        _link_frames(seg, frames)
    if frames:
        _unlink_displaced(seg, frames)
    return seg


def _parses(keyword: str, value) -> bool:
    """Whether highdicom takes ``value`` for the type-2 attribute ``keyword`` (:data:`_TYPE2_PARSED`): a DA or TM
    pydicom can read, a PatientSex of M, F or O; empty counts as valid."""
    from highdicom.enum import PatientSexValues
    from pydicom.valuerep import DA, TM

    if value is None or str(value) == "":
        return True
    try:
        {"PatientSex": PatientSexValues, "StudyTime": TM}.get(keyword, DA)(value)
    except (TypeError, ValueError):
        return False
    return True


#: A value quoted in an exception text ('1923-05-17', "DOE^JOHN"): :func:`without_quoted_values` hides it.
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")


def without_quoted_values(text: str) -> str:
    """``text`` (an exception's message) with every quoted value replaced by ``'<value>'``: pydicom and highdicom
    quote the header value they refuse ("Unable to convert '1923-05-17' to 'DA' object"), and a log must not
    repeat an identifier."""
    hidden = _QUOTED.sub("'<value>'", text)
    rest = hidden.replace("'<value>'", "")
    if re.search(r"\w'\w", text) or "'" in rest or '"' in rest:
        # an apostrophe (can't, O'BRIEN) pairs the quotes wrongly and would leave part of a value (a review): the
        # message is not trusted at all
        return MESSAGE_WITHHELD
    return hidden


#: What :func:`without_quoted_values` says of a message whose quotes it cannot pair.
MESSAGE_WITHHELD = "(message withheld: it quotes header values; see the debug log)"


def _segment_stack(lungs: np.ndarray, lesions: np.ndarray) -> np.ndarray:
    """The four binary segments of the masks (right lung, left lung, ground glass with its faint part,
    consolidation) as one 0/1 uint8 array (slices, rows, columns, segment), filled a slice at a time: no boolean
    stack, cast copy or temporary the size of the volume (``lungs`` and ``lesions`` may be views of the images)."""
    if lungs.ndim != 3 or lesions.shape != lungs.shape:
        raise ValueError(f"the lung and lesion masks must be 3-D arrays of one shape, not {lungs.shape} and "
                         f"{lesions.shape}")
    out = np.empty((*lungs.shape, len(SEGMENTS)), np.uint8)
    for k, (lung, lesion) in enumerate(zip(lungs, lesions)):
        out[k, ..., 0] = lung == 1
        out[k, ..., 1] = lung == 2
        out[k, ..., 2] = (lesion == 1) | (lesion == 2)
        out[k, ..., 3] = lesion == 3
    return out


@functools.cache
def _segmentation_class():
    """highdicom's Segmentation, but with the checks of a 0/1 uint8 stack of segments done a slice at a time.

    highdicom (0.28) finds whether segments overlap by summing the segments of the whole stack into a 64-bit array
    (8 bytes a voxel, twice the stack itself; then a boolean one more): the largest allocation of a SEG of a big
    series. Here highdicom checks one slice (shape, type, number of segments, as it would the whole), the maximum
    is taken without a copy and the overlap found a slice at a time; the same SegmentsOverlap. Anything else (an
    array highdicom would cast or combine, values above 1) goes to highdicom's own check."""
    import highdicom as hd

    class _Segmentation(hd.seg.Segmentation):
        @classmethod
        def _check_and_cast_pixel_array(cls, pixel_array, *args, **kwargs):
            plain = pixel_array.array if isinstance(pixel_array, hd.Volume) else pixel_array
            if not (isinstance(plain, np.ndarray) and plain.dtype == np.uint8 and plain.ndim == 4 and len(plain)):
                return super()._check_and_cast_pixel_array(pixel_array, *args, **kwargs)
            first = plain[:1]
            checked, _ = super()._check_and_cast_pixel_array(first, *args, **kwargs)
            if checked is not first or plain.max() > 1:  # highdicom would change it, or refuse it
                return super()._check_and_cast_pixel_array(pixel_array, *args, **kwargs)
            overlap = any(frame.sum(axis=-1, dtype=np.uint8).max() > 1 for frame in plain)
            return pixel_array, (hd.seg.SegmentsOverlapValues.YES if overlap else hd.seg.SegmentsOverlapValues.NO)

    return _Segmentation


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


def _source_frames(sources: Sequence[pydicom.Dataset], files: Sequence[str | Path]
                   ) -> list[tuple[pydicom.Dataset, H.FrameInfo]] | None:
    """(dataset, frame) of every source slice (or frame of an enhanced file); None when a header cannot say."""
    try:
        return [(ds, fr) for ds, f in zip(sources, files) for fr in H.frames_of(ds, Path(f))]
    except SeriesError:
        return None


def _source_positions(frames: Sequence[tuple[pydicom.Dataset, H.FrameInfo]] | None, geom
                      ) -> list[list[float] | None] | None:
    """For each slice of ``geom`` (a highdicom Volume, slices first), in the volume's order, the ImagePositionPatient
    of the source slice (or frame) it is, or None for a slice that is none (a slice the loader filled in a gap).
    A source slice is a mask slice when it has the masks' orientation and pixel spacing and lies within
    :func:`_normal_tolerance` of the slice spacing (along the normal) and :data:`SAME_SLICE_TOLERANCE` of the pixel
    spacing (in plane) of the slice's grid position. None when fewer than half the mask slices are source slices (a resampled or sheared
    volume: the first slice of a sheared stack lies on its grid's origin) or two source slices are one."""
    if not frames:
        return None
    n = geom.spatial_shape[0]
    affine = np.asarray(geom.affine, float)
    origin, step, down, across = affine[:3, 3], affine[:3, 0], affine[:3, 1], affine[:3, 2]
    dz, dy, dx = (float(np.linalg.norm(v)) for v in (step, down, across))
    if min(dz, dy, dx) <= 0:
        return None
    along = _normal_tolerance(dz)
    positions: dict[int, list[float]] = {}
    for _, fr in frames:
        if not (np.allclose(fr.iop[:3], across / dx, atol=1e-3) and np.allclose(fr.iop[3:], down / dy, atol=1e-3)
                and np.allclose(fr.spacing, (dy, dx), rtol=1e-3)):
            return None
        offset = np.asarray(fr.ipp, float) - origin
        t = float(offset @ step) / dz**2  # fractional slice index
        k = int(round(t))
        in_plane = offset - t * step
        if (not 0 <= k < n or abs(t - k) > along
                or np.linalg.norm(in_plane) > SAME_SLICE_TOLERANCE * min(dx, dy)):
            continue  # not a mask slice
        if k in positions:
            return None
        positions[k] = [float(v) for v in fr.ipp]
    if len(positions) < n / 2:  # a resampled or sheared volume (only a slice or two coincide): on its own grid
        return None
    return [positions.get(k) for k in range(n)]


def _normal_tolerance(dz: float) -> float:
    """How far (a fraction of the slice spacing ``dz``) a source slice may lie from its mask slice along the normal:
    :data:`NORMAL_TOLERANCE`, or positions' rounding to 0.1 mm where that is wider (thin slices), under half a slice."""
    return min(0.45, max(NORMAL_TOLERANCE, (2 * POSITION_ROUNDING_MM + 1e-6) / dz))


#: How far (mm) a SEG frame's ImagePositionPatient may lie from that of the source slice it references: farther, the
#: reference is dropped (:func:`_unlink_displaced`).
LINK_TOLERANCE_MM = 0.1


def _unlink_displaced(seg: pydicom.Dataset, frames: Sequence[tuple[pydicom.Dataset, H.FrameInfo]]) -> int:
    """Drop, from each SEG frame, the source references whose slice does not start where the frame does. A tilted
    stack is sheared onto a grid of its own (GANTRY_TILT_CORRECTED): highdicom referenced the source slice in each
    frame's plane (SpatialLocationsPreserved NO) though the two start up to 60 mm apart in it, and a viewer that
    copies a frame onto the slice it references (OHIF's SEG loader) drew the masks that far off (an audit,
    2026-12-07); without the reference such a viewer shows nothing, one that places frames by their geometry
    (3D Slicer) is unaffected. Returns the number of frames left without a reference."""
    where = {}
    for ds, fr in frames:
        key = (str(ds.SOPInstanceUID), fr.frame + 1 if H.is_multiframe(ds) else None)
        where[key] = np.asarray(fr.ipp, float)
    unlinked = 0
    for item in seg.get("PerFrameFunctionalGroupsSequence", []):
        derivations = item.get("DerivationImageSequence")
        if not derivations:
            continue
        ipp = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        for derivation in derivations:
            kept = []
            for source in derivation.get("SourceImageSequence", []):
                number = source.get("ReferencedFrameNumber")
                at = where.get((str(source.ReferencedSOPInstanceUID), int(number) if number else None))
                if at is None or float(np.abs(at - ipp).max()) <= LINK_TOLERANCE_MM:
                    kept.append(source)
            derivation.SourceImageSequence = kept
        kept_derivations = [d for d in derivations if d.SourceImageSequence]
        if kept_derivations:
            item.DerivationImageSequence = kept_derivations
        else:
            del item.DerivationImageSequence
            unlinked += 1
    return unlinked


def _link_frames(seg: pydicom.Dataset, frames: Sequence[tuple[pydicom.Dataset, H.FrameInfo]]) -> int:
    """Reference, in each SEG frame that references nothing, the source slice at its exact position (highdicom links
    frames to slices only when every frame is a slice: a series with a slice gap got no reference at all, although
    all but the filled-in slices are source slices). Returns the number of frames linked."""
    by_position = {tuple(np.round(np.asarray(fr.ipp, float), 4)): (ds, fr) for ds, fr in frames}
    linked = 0
    for item in seg.get("PerFrameFunctionalGroupsSequence", []):
        if item.get("DerivationImageSequence"):
            continue
        ipp = tuple(np.round(np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float), 4))
        if ipp not in by_position:
            continue
        ds, fr = by_position[ipp]
        source = pydicom.Dataset()  # as highdicom writes a Source Image Sequence item
        source.ReferencedSOPClassUID = ds.SOPClassUID
        source.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        if H.is_multiframe(ds):  # an enhanced (multi-frame) object: which frame
            source.ReferencedFrameNumber = fr.frame + 1
        source.SpatialLocationsPreserved = "YES"
        source.PurposeOfReferenceCodeSequence = [_code("DCM", "121322",
                                                       "Source image for image processing operation")]
        derivation = pydicom.Dataset()
        derivation.DerivationCodeSequence = [_code("DCM", "113076", "Segmentation")]
        derivation.SourceImageSequence = [source]
        item.DerivationImageSequence = [derivation]
        linked += 1
    return linked
