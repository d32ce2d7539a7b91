"""The named codes of DICOM ingestion: one table, used by the inventory, the loader and the docs.

Each code has an action from ../shared/docs/DICOM_EDGE_CASES.md:

- ``S`` skip: the file or stack is left out and counted in the inventory (``ctscore scan``);
- ``E`` error: the series is refused (:class:`~pipeline.errors.SeriesError` with this code, written to
  ``failures.csv``);
- ``W`` warning: loading goes on and the code is recorded as a QC flag (``result.json``);
- ``F`` fix: the loader repairs the input and records the code as a QC flag.

``docs/dicom_input.md`` explains every code for users; keep the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Code:
    """One named outcome of ingestion."""

    code: str
    action: str  # S | E | W | F
    meaning: str
    what_to_do: str


_CODES = [
    # --- files (inventory, S) ---
    Code("NOT_DICOM", "S", "not a DICOM file (no DICM preamble and no parsable header)", "nothing; ignored"),
    Code("ARCHIVE", "S", "an archive (ZIP, tar, 7z, RAR, an ISO disc image) or a compressed file (gzip, bzip2, xz, "
         "zstd: IM0001.dcm.gz), recognised by its leading bytes: not opened, so series inside it are not considered "
         "(a run that finds other series warns; zip-based documents such as .docx are NOT_DICOM)",
         "unpack it (or decompress it: gunzip) and give the folder"),
    Code("HIDDEN_FOLDER", "S", "a hidden or system folder below INPUT (a name starting with '.', $RECYCLE.BIN, "
         "System Volume Information, __MACOSX, .Trashes, .Trash-<uid>, .snapshot, RECYCLER, Recycled, and a NAS's "
         "#recycle, @Recycle, #snapshot, ~snapshot, @eaDir): trash, snapshots and metadata, not read; one row for the "
         "folder, with how many files it holds (INPUT itself may be hidden); a run that finds series warns when such a "
         "folder holds files",
         "move the series out of it if it should be considered"),
    Code("DICOMDIR", "S", "a DICOMDIR index file", "nothing; the images it lists are read directly"),
    Code("NOT_IMAGE", "S", "a DICOM object without pixels to score (structured report, presentation state, "
         "segmentation, raw data, KOS); an image (image SOP class, or Rows/Columns) without pixel data is "
         "CORRUPT_FILE instead", "nothing; ignored"),
    Code("SECONDARY_CAPTURE", "S", "a secondary capture (screenshot-like image without CT geometry)",
         "nothing; ignored"),
    Code("UNREADABLE_FILE", "S", "a file with a DICOM preamble whose header cannot be parsed; a stray file; a folder "
         "that cannot be listed; a link to nothing",
         "check the copy if you expected it to be part of a series"),
    Code("DUPLICATE_SOP_INSTANCE", "S", "same SOPInstanceUID as a file of the same series already kept (F: de-duplicated; "
         "files of other series that reuse the UID are kept)",
         "nothing; one copy is used (a complete, lossless copy in the folder holding the rest of its series "
         "preferred, then an uncompressed one)"),
    # --- stacks (selection, S) ---
    Code("NOT_CT", "S", "modality is not CT", "nothing; selection.modalities lists what is scored"),
    Code("LOCALIZER", "S", "localizer / scout / topogram image", "nothing"),
    Code("DERIVED_REFORMAT", "S", "derived reformat (MPR, MIP, MinIP, average, projection, curved)",
         "point ctscore at the original axial series"),
    Code("NOT_HU_MAP", "S", "RescaleType names values other than HU (a dual-energy Z-effective, iodine or "
         "electron-density map; HU or US, unspecified, are CT numbers)", "point ctscore at the conventional series"),
    Code("NOT_AXIAL", "S", "slice normal more than selection.max_axial_angle_deg from the patient z axis "
         "(coronal, sagittal, strongly oblique)",
         "nothing; only axial stacks are scored (selection.max_axial_angle_deg)"),
    Code("NOT_A_VOLUME", "S", "all slices of the stack lie at one position, or it is a single slice", "nothing"),
    Code("TOO_FEW_SLICES", "S", "fewer slices than selection.min_slices", "lower selection.min_slices if intended"),
    Code("TOO_THICK", "S", "slices thicker than selection.max_slice_thickness_mm",
         "use a thinner reconstruction, or raise selection.max_slice_thickness_mm"),
    Code("BODY_PART_EXCLUDED", "S", "BodyPartExamined is in selection.exclude_body_parts",
         "edit selection.exclude_body_parts if this is a chest scan"),
    Code("NOT_SELECTED", "S", "eligible, but another stack of the same study ranked higher",
         "use --series-uid UID or --all-series to score it"),
    Code("NOT_REQUESTED", "S", "not the series given with --series-uid", "nothing"),
    # --- refusals (E) ---
    Code("INPUT_NOT_FOUND", "E", "the input path does not exist or cannot be read", "check the path"),
    Code("EMPTY_SERIES", "E", "no files were given for the series", "check the input"),
    Code("CORRUPT_FILE", "E", "a file of the selected series cannot be read (truncated or damaged), or is an "
         "image cut off before its pixel data (the inventory keeps it in its stack so that loading names it)",
         "copy the series again from the source"),
    Code("NO_PIXEL_DATA", "E", "a file of the series has no pixel data", "copy the series again"),
    Code("MISSING_GEOMETRY", "E", "ImagePositionPatient, ImageOrientationPatient or PixelSpacing is missing, "
         "not numeric or not plausible (a position beyond 1 km, a spacing beyond 1 m); a file of the series without them is split off in the inventory (file_code "
         "MISSING_GEOMETRY), and the series is refused with this code naming the file when its absence leaves a "
         "gap", "re-export the series from the PACS; anonymisers sometimes strip these"),
    Code("INCONSISTENT_ORIENTATION", "E", "slices of one stack have different orientations; or a file of the "
         "series with another orientation (split off by the inventory) lies in a gap of the stack",
         "select the series with --series-uid, or split it with a DICOM tool"),
    Code("INCONSISTENT_GEOMETRY", "E", "slices differ in matrix size or pixel spacing, or their positions are "
         "not on one line; or a file of the series with another pixel spacing or matrix (split off by the "
         "inventory) lies in a gap of the stack", "re-export the series"),
    Code("INCONSISTENT_FRAME_OF_REFERENCE", "E", "slices of one stack have different FrameOfReferenceUIDs",
         "re-export the series"),
    Code("DUPLICATE_POSITION", "E", "two slices at the same position with different pixels (F when the pixels "
         "are identical: DUPLICATE_SLICE_REMOVED)", "check for mixed acquisitions; use --series-uid"),
    Code("SLICE_GAP", "E", "a step between slices larger than loading.max_gap_ratio x the local slice spacing "
         "(median of the neighbouring steps; the slice thickness does not widen it, so overlapping slices with "
         "missing ones are refused too): slices are missing", "copy the complete series, or set loading.allow_gaps: "
         "true"),
    Code("NOT_HU", "E", "values are not plausibly Hounsfield units (air is not near -1000 HU after rescale; or one "
         "slice's own rescale, unlike the other slices', puts its air elsewhere)",
         "check RescaleSlope/RescaleIntercept; the series may be a parametric map"),
    Code("HU_OUT_OF_RANGE", "E", "a slice's values after its own rescale lie outside what CT can hold (below "
         "-65536 or above +32767 HU, padding included), or its RescaleSlope is not positive (0 is never "
         "replaced by 1)",
         "check RescaleSlope/RescaleIntercept of the file named in the message; copy the series again"),
    Code("NO_DECODER", "E", "no installed decoder can read the transfer syntax; the message names the package",
         "install the package named in the message (python-gdcm, pylibjpeg-openjpeg, pyjpegls)"),
    Code("CORRUPT_PIXEL_DATA", "E", "the pixel data cannot be decoded although a decoder for their transfer "
         "syntax is installed (truncated or damaged), or do not decode to the declared size, or decode to values "
         "their stream cannot hold (JPEG Lossless whose entropy-coded data do not match the decoded image; JPEG "
         "2000 / JPEG-LS decoding to one single value from a long stream), or a JPEG stream without a complete frame "
         "header or with a precision outside 8-16 bits (refused before decoding: python-gdcm aborts the process on "
         "such streams)", "copy the series again"),
    Code("NOT_MONOCHROME", "E", "RGB, YBR or palette colour images are not CT values", "use the original CT series"),
    Code("LOSSY_REFUSED", "E", "lossy compression while loading.allow_lossy is false",
         "get the original series, or set loading.allow_lossy: true"),
    Code("TOO_LARGE", "E", "declared dimensions exceed loading.max_voxels or loading.max_memory_mb (checked "
         "before any allocation)", "raise the limits if the scan is genuine"),
    Code("BAD_HEADER_VALUE", "E", "a header value needed for loading is malformed (Rows, Columns, bits, frames)",
         "re-export the series"),
    # --- warnings and fixes (W / F, QC flags) ---
    Code("DUPLICATE_SLICE_REMOVED", "F", "two slices at one position had identical pixels; one was kept", "nothing"),
    Code("GANTRY_TILT_CORRECTED", "F", "tilted gantry (slices stacked obliquely to their normal): each slice was "
         "shifted in its plane (shear) onto an orthogonal grid; tilt angle in meta['gantry_tilt_deg']",
         "nothing; check the QC picture"),
    Code("NON_UNIFORM_SPACING_RESAMPLED", "W", "slice spacing varies by more than loading.spacing_tolerance (a step "
         "off the median step, or a slice off the grid of median steps from the first slice, by more than that "
         "fraction of the median step); resampled to a uniform spacing (linear along the slice normal; the median "
         "step, adjusted so that the first and last slices are kept)", "nothing; check the QC picture"),
    Code("SLICE_GAP_ALLOWED", "W", "slices are missing but loading.allow_gaps is true; the gap was interpolated",
         "interpret zones across the gap with care"),
    Code("PADDING_MASKED", "F", "padding values (PixelPaddingValue, <= -1500 HU such as -2000, -3024, -32768) "
         "connected to the image border were set to -1000 HU and marked outside the body", "nothing"),
    Code("PADDING_INSIDE_BODY", "W", "padding-valued pixels enclosed by the body were kept as image values "
         "(clipped to -1024 HU), not treated as outside", "check the QC picture"),
    Code("MONOCHROME1_INVERTED", "W", "MONOCHROME1 photometric interpretation: stored values were inverted "
         "before rescale", "nothing; check HU plausibility"),
    Code("LOSSY_COMPRESSION", "W", "lossy compressed pixel data (transfer syntax or LossyImageCompression=01); "
         "HU may differ from the original by a few HU", "prefer the original series for research"),
    Code("OBLIQUE_ORIENTATION", "W", "slice planes are oblique (not parallel to the patient axes)", "nothing"),
    Code("ACQUISITIONS_MERGED", "F", "several AcquisitionNumbers tile the z range without overlap (each starts "
         "about one spacing after the previous ends, or less than a spacing before) and form one stack; "
         "acquisitions whose ranges overlap are separate stacks", "nothing"),
    Code("STUDY_DATE_NORMALISED", "F", "StudyDate written the old ACR-NEMA way (YYYY.MM.DD) or as YYYY-MM-DD; the tables "
         "hold it as YYYYMMDD", "nothing"),
    Code("STUDY_DATE_UNREADABLE", "W", "StudyDate is not a calendar date (YYYYMMDD, 1900-2100); study_date is left "
         "empty and the statistics leave the scan out", "write the scan's date (YYYYMMDD) into its empty study_date in "
         "scans.csv, or correct the header"),
    Code("MISSING_SERIES_UID", "W", "no SeriesInstanceUID; the files of one folder were grouped as one series",
         "nothing; the series is named NO_SERIES_UID:<salted hash of its folder>"),
    Code("CORRUPT_FILES_IN_STACK", "W", "some files of the stack look truncated, or are images without pixel "
         "data (inventory); the stack also gets the predicted problem CORRUPT_FILE (loading refuses it), so another "
         "stack of the study is preferred", "copy the series again"),
    Code("UNREADABLE_FILES_BESIDE", "W", "files beside the series (in its folders, named like its own: the same "
         "DICOM extension or none, its leading letters or, for UID names, a leading digit) that cannot be read: no "
         "permission, empty (still being copied), or cut short before their pixel data (truncated inside their header, "
         "before the series UID, or inside their preamble; files that begin otherwise, a text or a picture, are left "
         "alone), or left compressed (IM0001.dcm.gz beside IM0002.dcm: ARCHIVE); the series was scored without them, and if they are its first "
         "or last slices it is shorter than it should be (a missing slice inside it is refused, SLICE_GAP); the flag "
         "carries how many, the log names them",
         "make them readable (or wait for the copy, or copy them again, or decompress them), then run again with "
         "--overwrite, or check that they are another series'"),
    Code("SPARSE_SLICES", "W", "slices spaced more than twice their thickness apart, with gaps of 2 mm or more "
         "(sequential HRCT: 1 mm slices every 10 mm): most of the lung between the slices was not imaged; volumes "
         "and scores are interpolated from a sample", "prefer a contiguous volumetric reconstruction of the study"),
    Code("SELECTION_TIE", "W", "another stack of the study has headers that rank it equal to this one (dual-energy "
         "tube images, repeated or inspiratory/expiratory series described alike): the choice fell to what the "
         "stacks hold, not to their file names: the smallest AcquisitionNumber, else the earliest acquisition date "
         "and time, else the smallest SOPInstanceUID (the reason column says which)",
         "check the inventory (inventory.csv, reason column) and pick the series with --series-uid if needed"),
    Code("EXPIRATORY_SERIES", "W", "the scored stack's SeriesDescription names expiration (EXP, EXPIRATION, "
         "EXHALATION, ...; not INSP/EXP): normal lung reads denser on expiration, so % opacity and the ground-glass "
         "volume are overestimated; every eligible stack of its study named expiration, or an earlier preference "
         "(coverage, the field of view, ...) chose it",
         "score an inspiratory series of the study if there is one (--series-uid), else compare such scans apart"),
    Code("STUDY_DATES_DIFFER", "W", "written STUDY_DATES_DIFFER:<n>: n other eligible stacks of the study (one "
         "StudyInstanceUID) bear another StudyDate: several time points under one study (an anonymiser or an "
         "archive merged them), and one stack per study is scored, so the other dates are not; the inventory's "
         "notes name the stacks, not the dates",
         "score every eligible stack with --all-series (each under its own study_date), or check the study UIDs"),
    Code("SPLIT_ACROSS_SERIES", "W", "the scored stack covers less than selection.full_coverage_mm in z and another "
         "stack of its study continues its z range end to end (at most one slice position missing between them) "
         "with the same kernel, thickness, in-plane grid, patient position and Frame of Reference: one scan split "
         "into series (upper and lower halves), of which only this part is scored; the inventory's notes name the "
         "other stack",
         "expect PARTIAL_LUNG_COVERAGE; score the other part with --series-uid (a scan of its own), or join the "
         "series before scoring"),
    Code("BURNED_IN_ANNOTATION", "W", "a file of the series says BurnedInAnnotation YES: its pixels may carry "
         "burned-in text (names, dates, record numbers), which qc.png and thumb.png show as they show the images",
         "look at the pictures before they leave the institution; ctscore share leaves out the pictures of such "
         "scans (SHARED.txt names them)"),
    Code("SOP_UID_REUSED", "W", "files of the series share a SOPInstanceUID at different positions (an "
         "anonymiser's or exporter's reuse): each kept as a slice of its own",
         "check the slice count against the source"),
    Code("MONOCHROME1_NOT_INVERTED", "W", "MONOCHROME1 photometric interpretation: stored values rescaled as they "
         "are (DICOM rescales before the display inversion), not inverted: they hold air as stored",
         "nothing; check HU plausibility"),
    Code("TILT_UNCORRECTED", "W", "written TILT_UNCORRECTED:<degrees>: a gantry tilt from 0.1 up to 0.5 degrees, "
         "below the correction (GANTRY_TILT_CORRECTED): left as stored, each slice shifted in-plane along the stack "
         "(0.49 degrees: 2.6 mm over 300 mm)", "review qc.png"),
]

CODES: dict[str, Code] = {c.code: c for c in _CODES}


def describe(code: str) -> str:
    """The one-line meaning of a code (the code itself when unknown)."""
    c = CODES.get(code.split(":", 1)[0])
    return c.meaning if c else code
