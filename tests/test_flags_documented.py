"""Every QC flag the segmenters and the scoring write is explained in the README's QC-flag table, and every
loader code in docs/dicom_input.md: a researcher filtering scans on ``qc_flags`` can look each one up."""

from __future__ import annotations

import re

from tests.conftest import REPO

#: Every module of the three packages, not a hand-kept list: a flag written in a new module is checked too.
FLAG_SOURCES = sorted(p.relative_to(REPO).as_posix() for package in ("pipeline", "scoring", "segmentation")
                      for p in (REPO / package).rglob("*.py"))
#: An upper-case text written as a flag is: "NAME", "NAME:..." or f"NAME:{...}".
FLAG_PATTERNS = (re.compile(r'"([A-Z][A-Z0-9_]{4,})(?::|")'), re.compile(r'f"([A-Z][A-Z0-9_]{4,}):\{'))

# What else those patterns find, and why it is no QC flag:
#: written into failures.csv (the series failed), not into qc_flags
FAILURE_CODES = {"NO_LUNG_FOUND", "LOBES_UNREADABLE", "LOBES_EMPTY", "INTERNAL_ERROR", "OUTPUT_UNWRITABLE",
                 "OUTPUT_IS_INPUT", "READER_LEVELS_INVALID",  # refusals of the whole run (README, exit codes)
                 "EXCLUSIONS_INVALID",  # a refused exclusion list of stats, validate, methods (README)
                 "UNREADABLE_FILE"}  # a loader code of inventory.csv (docs/dicom_input.md), named by run's warning
#: error codes: the code of a CTScoreError (``CTScoreError("BAD_OPTION", ...)``, a subclass's
#: ``super().__init__("BAD_CONFIG", ...)``, a reference problem's ``problems.add("REFERENCE_...", ...)``) or of a
#: failure record (``"code": "TIMEOUT"``, ``code = "SHARDS_MISSING"``)
ERROR_CODE = re.compile(r'(?:Error\(|__init__\(|"code":\s*|\bcode\s*=\s*|\.add\()\s*"([A-Z][A-Z0-9_]{4,})"')
#: the rest, found by the patterns but no flag (a new one fails the test below: add it here, in its group)
NOT_FLAGS = {
    # environment variables and os constants
    "CTSCORE_GDCM_WORKER_TESTING", "CTSCORE_TEST_HOOKS", "CUDA_VISIBLE_DEVICES", "LOGNAME", "MKL_NUM_THREADS",
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "O_NOFOLLOW", "SLURM",
    # DICOM values the loader reads (ImageType, BodyPartExamined, PhotometricInterpretation, planes) and the
    # phantom writer writes
    "AXIAL", "CORONAL", "SAGITTAL", "CHEST", "THORAX", "THORAC", "TORAX", "MINIP", "MIP_SLAB", "SCOUT", "TOPOGRAM",
    "ORIGINAL", "PRIMARY", "MONOCHROME1", "MONOCHROME2", "STANDARD", "PATIENT", "PHANTOM001", "CTSCORE_PHANTOM",
    "HOUNSFIELD", "HOUNSFIELDUNIT", "HOUNSFIELDUNITS",
    # pixel data types and transfer syntax names of the decoder
    "FLOAT32", "FLOAT64", "INT16", "INT32", "UINT8", "UINT16", "UINT32", "HTJ2K", "MPEG2",
    # inventory placeholders for missing UIDs and an unknown plane (inventory.csv, docs/dicom_input.md)
    "NO_SERIES_UID", "NO_STUDY_UID", "UNKNOWN",
    # CLI metavars, a log level, an error code named in pipeline/cli.py INPUT_CODES, the report's word for a
    # failed scan without a code, a SLURM job state
    "COMMAND", "SECONDS", "ERROR", "INPUT_UNREADABLE", "FAILED", "RUNNING",
}


def _found() -> tuple[set[str], set[str]]:
    """(every text the flag patterns find, every error code) in :data:`FLAG_SOURCES`."""
    found: set[str] = set()
    codes: set[str] = set()
    for path in FLAG_SOURCES:
        text = (REPO / path).read_text(encoding="utf-8")
        for pattern in FLAG_PATTERNS:
            found |= set(pattern.findall(text))
        codes |= set(ERROR_CODE.findall(text))
    return found, codes


def test_flag_sources_are_every_module():
    assert {"pipeline/run.py", "scoring/quantify.py", "segmentation/classical.py", "segmentation/factory.py",
            "scoring/stats/schema.py", "pipeline/commands/run.py"} <= set(FLAG_SOURCES)


def test_every_scoring_and_segmentation_flag_is_in_the_readme_table():
    from pipeline.dicom_codes import CODES

    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("**QC flags**"):readme.index("**Privacy.**")]
    found, error_codes = _found()
    # loader codes are explained in docs/dicom_input.md (test_every_loader_code_is_explained_in_dicom_input_md)
    flags = found - FAILURE_CODES - error_codes - set(CODES) - NOT_FLAGS
    assert {"LUNG_CUT_BY_FOV", "LUNG_NOT_FOUND", "PARTIAL_LUNG_COVERAGE"} <= flags  # the scan works
    undocumented = sorted(f for f in flags if f"`{f}" not in table)
    where = {f: [p for p in FLAG_SOURCES if f in (REPO / p).read_text(encoding="utf-8")] for f in undocumented}
    assert not undocumented, (f"QC flags missing from the README table: {where} (no QC flag? add it to NOT_FLAGS of "
                              f"tests/test_flags_documented.py, in the group that says why)")
    from pipeline.flags import SCORING_FLAGS, explain

    assert set(SCORING_FLAGS) == flags, "pipeline/flags.py must explain exactly the flags the code writes"
    assert explain("LUNG_NOT_FOUND:right").startswith("the segmentation found no lung")
    assert explain("GANTRY_TILT_CORRECTED") and explain("NOT_A_FLAG") == ""


def test_report_shows_each_flags_meaning_on_hover(tmp_path):
    import json

    from pipeline.report import write_run_report

    d = tmp_path / "scan-aaaaaaaaaaaa"
    d.mkdir()
    (d / "result.json").write_text(json.dumps({"scan_id": d.name, "scores": {},
                                               "qc_flags": ["LUNG_CUT_BY_FOV:12", "LANDMARK_ESTIMATED:ipv"]}))
    (tmp_path / "scans.csv").write_text(f"scan_id,status,qc_flags\n{d.name},ok,LUNG_CUT_BY_FOV:12\n")
    html = write_run_report(tmp_path).read_text()
    assert 'title="a lung runs along the edge of the field of view' in html
    assert 'title="a level a detector was meant to find, placed from the others' in html


def test_every_loader_code_is_explained_in_dicom_input_md():
    from pipeline.dicom_codes import CODES

    doc = (REPO / "docs" / "dicom_input.md").read_text()
    assert not [c for c in CODES if c not in doc]


def test_dicom_input_md_table_says_what_the_code_says():
    """Each loader code's row in docs/dicom_input.md (action, meaning, what to do) is the text ``ctscore scan`` and
    the tables give (pipeline/dicom_codes.py): the two had drifted apart for NON_UNIFORM_SPACING_RESAMPLED."""
    from pipeline.dicom_codes import CODES

    doc = (REPO / "docs" / "dicom_input.md").read_text()
    rows = {m.group(1): m.groups()[1:] for line in doc.splitlines()
            if (m := re.match(r"\| `([A-Z_0-9]+)` \| (\w) \| (.*) \| (.*) \|$", line))}
    differ = [c.code for c in CODES.values() if rows.get(c.code) != (c.action, c.meaning, c.what_to_do)]
    assert not differ, f"docs/dicom_input.md rows that differ from pipeline/dicom_codes.py: {differ}"
