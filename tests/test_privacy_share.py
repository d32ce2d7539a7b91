"""Sharing an OUT folder (a data-protection audit): report.html hides the DICOM file names a failure message names
(viewers and PACS put patient names in them), not only the input path."""

from __future__ import annotations

from pipeline.report import FILE_HIDDEN, PATH_HIDDEN, _hide_path
from tests.dicom_factory import write_series


def test_file_names_in_a_message_are_hidden():
    msg = "a gap between MUELLER_HANS_IMG0069.dcm and MUELLER_HANS_IMG0081.DCM (12 mm)"
    out = _hide_path(msg, "/in/MUELLER")
    assert "MUELLER" not in out and out.count(FILE_HIDDEN) == 2
    assert _hide_path("FileNotFoundError: '/in/MUELLER/IM1.dcm'", "/in/MUELLER") == \
        f"FileNotFoundError: '{PATH_HIDDEN}/{FILE_HIDDEN}'"
    assert _hide_path("values out of range (12 slices)", "") == "values out of range (12 slices)"


def test_report_of_a_failed_series_names_no_file(tmp_path):
    from pipeline.run import run_pipeline

    zs = [-100.0 + 2.0 * k for k in range(40) if k not in (20, 21, 22)]  # a gap: refused, naming the slices
    write_series(tmp_path / "in" / "case", positions=zs, size=48, prefix="MUELLER_HANS_")
    run_pipeline(tmp_path / "in", tmp_path / "out", {"segmentation": {"method": "classical"}})
    failures = (tmp_path / "out" / "failures.csv").read_text()
    assert "SLICE_GAP" in failures and "MUELLER_HANS_" in failures  # failures.csv keeps what it says
    html = (tmp_path / "out" / "report.html").read_text()
    assert "SLICE_GAP" in html and "MUELLER" not in html
