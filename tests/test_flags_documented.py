"""Every QC flag the segmenters and the scoring write is explained in the README's QC-flag table, and every
loader code in docs/dicom_input.md: a researcher filtering scans on ``qc_flags`` can look each one up."""

from __future__ import annotations

import re

from tests.conftest import REPO

FLAG_SOURCES = ["pipeline/run.py", "pipeline/fov.py", "pipeline/hu_checks.py", "scoring/quantify.py", "scoring/landmarks.py",
                "segmentation/monai_segmenter.py", "segmentation/bundle.py", "segmentation/classical.py"]
#: written into failures.csv (the series failed), not into qc_flags
FAILURE_CODES = {"NO_LUNG_FOUND", "LOBES_UNREADABLE", "LOBES_EMPTY", "INTERNAL_ERROR", "OUTPUT_UNWRITABLE",
                 "OUTPUT_IS_INPUT",  # a refusal of the whole run (README, exit codes)
                 "UNREADABLE_FILE"}  # a loader code of inventory.csv (docs/dicom_input.md), named by run's warning


def test_every_scoring_and_segmentation_flag_is_in_the_readme_table():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("**QC flags**"):readme.index("**Privacy.**")]
    found = set()
    for path in FLAG_SOURCES:
        text = (REPO / path).read_text()
        found |= set(re.findall(r'"([A-Z][A-Z0-9_]{4,})(?::|")', text))
        found |= set(re.findall(r'f"([A-Z][A-Z0-9_]{4,}):\{', text))
    flags = found - FAILURE_CODES
    assert {"LUNG_CUT_BY_FOV", "LUNG_NOT_FOUND", "PARTIAL_LUNG_COVERAGE"} <= flags  # the scan works
    undocumented = sorted(f for f in flags if f"`{f}" not in table)
    assert not undocumented, f"QC flags missing from the README table: {undocumented}"
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
