"""Privacy audit 47: report.html shows a failure by its code and the code's meaning, never its message (file names
without an extension slipped past the pattern that hid ``*.dcm``); a seg.dcm that cannot be made logs no header
value, and a malformed birth date no longer stops it; BURNED_IN_ANNOTATION flags images whose pixels may carry a
name, and ``ctscore share`` leaves out their pictures."""

from __future__ import annotations

import json
import logging
import warnings

import pydicom

from tests.dicom_factory import edit_file, write_series

SALTED = {"segmentation": {"method": "classical"}, "outputs": {"pseudonym_salt": "site-secret"}}


def _run(src, out, **outputs):
    from pipeline.run import run_pipeline

    return run_pipeline(src, out, {**SALTED, "outputs": {**SALTED["outputs"], **outputs}})


# ------------------------------------------------------------------------------------------- report.html
def test_report_names_no_extensionless_file_of_a_failure(tmp_path):
    """PACS and dcm4che-style exports write files without an extension (MUELLER_HANS_0069): the SLICE_GAP message
    names two of them. failures.csv keeps the message; report.html shows the code and what it means."""
    from pipeline.dicom_codes import CODES
    from pipeline.report import DETAILS_IN_CSV, escape

    zs = [-100.0 + 2.0 * k for k in range(40) if k not in (20, 21, 22)]
    for p in write_series(tmp_path / "in" / "MUELLER_HANS", positions=zs, size=48, prefix="MUELLER_HANS_"):
        p.rename(p.with_suffix(""))  # no extension
    _run(tmp_path / "in", tmp_path / "out")
    failures = (tmp_path / "out" / "failures.csv").read_text()
    assert "SLICE_GAP" in failures and "MUELLER_HANS_" in failures  # failures.csv keeps what it says
    html = (tmp_path / "out" / "report.html").read_text()
    assert "SLICE_GAP" in html and "MUELLER" not in html
    assert escape(CODES["SLICE_GAP"].meaning) in html and DETAILS_IN_CSV in html


def test_report_shows_a_failure_by_code_never_by_message(tmp_path):
    """Whatever a message holds (a quoted path, a name in an exception text), the page shows the code's fixed
    meaning; a code column that is no code is shown as 'other'."""
    from pipeline.report import DETAILS_IN_CSV, FAILURE_REASONS, escape, render_run_report

    rows = [("scan-aaaaaaaaaaaa", "NO_LUNG_FOUND", "no lung in DOE^JANE's scan", "/data/DOE_JANE"),
            ("scan-bbbbbbbbbbbb", "INTERNAL_ERROR", "FileNotFoundError: 'IM_DOE_JANE_7'", ""),
            ("scan-cccccccccccc", "DOE JANE 1961", "x", "")]
    (tmp_path / "failures.csv").write_text("scan_id,series_uid,code,message,path\n"
                                           + "".join(f"{s},1.2.3,{c},\"{m}\",{p}\n" for s, c, m, p in rows))
    (tmp_path / "scans.csv").write_text("scan_id,status\n" + "".join(f"{s},failed\n" for s, *_ in rows))
    (tmp_path / "run.json").write_text(json.dumps({"ctscore_version": "9.9.9"}))
    html = render_run_report(tmp_path)
    assert "DOE" not in html and "JANE" not in html
    section = html[html.index("<h2>Failures</h2>"):html.index("<h2>Not scored</h2>")]
    assert escape(FAILURE_REASONS["NO_LUNG_FOUND"]) in section and escape(FAILURE_REASONS["INTERNAL_ERROR"]) in section
    assert "<td>other</td>" in section
    # a shared copy of failures.csv (scan_id and code only) holds no details to point to
    (tmp_path / "failures.csv").write_text("scan_id,code\nscan-aaaaaaaaaaaa,NO_LUNG_FOUND\n")
    html = render_run_report(tmp_path)
    assert escape(FAILURE_REASONS["NO_LUNG_FOUND"]) in html and DETAILS_IN_CSV not in html


def test_readme_says_what_seg_dcm_copies_and_how_ids_are_made():
    """seg.dcm copies PhysiciansOfRecord (the README's list lacked it); scan_id and patient_id are salted, truncated
    sha256 hashes (pipeline.outputs.pseudonym), not HMACs as the README said."""
    import hashlib

    from pipeline.outputs import scan_id_for
    from tests.conftest import REPO

    readme = " ".join((REPO / "README.md").read_text().split())
    assert "referring physician, physicians of record, study ID" in readme
    assert "HMAC keyed with `outputs.pseudonym_salt`, as scan_id and patient_id are" not in readme
    assert "scan_id and patient_id are salted hashes with the same salt: the sha256 of `salt:value`" in readme
    assert scan_id_for("1.2.3", "s") == "scan-" + hashlib.sha256(b"s:1.2.3").hexdigest()[:12]


# ------------------------------------------------------------------------------------------- seg.dcm
def _sample_copy(folder, series: str = "", **values) -> None:
    """sample_dicoms (a chest the classical segmenter scores) with the header ``values``; ``series``: a suffix making
    it another study's series (its own StudyInstanceUID, SeriesInstanceUID and SOPInstanceUIDs)."""
    from tests.conftest import REPO

    folder.mkdir(parents=True)
    for src in sorted(p for p in (REPO / "sample_dicoms").iterdir() if p.suffix != ".json"):
        ds = pydicom.dcmread(src)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns of the malformed values it is given
            for kw, value in values.items():
                setattr(ds, kw, value)
        if series:
            ds.StudyInstanceUID += series
            ds.SeriesInstanceUID += series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID + series
        ds.save_as(folder / src.name)


def test_seg_is_made_with_a_malformed_birth_date_and_logs_no_value(tmp_path, caplog, classical_memo):
    """PatientBirthDate written 1923-05-17 (not DICOM's 19230517) and PatientSex 'Zorblatt': highdicom refused the
    whole SEG and the log repeated the date, traceback and all. Type 2 allows empty: the SEG is made with both
    empty, and the warning names the attributes, not their values."""
    _sample_copy(tmp_path / "in" / "case", PatientBirthDate="1923-05-17", PatientSex="Zorblatt")
    caplog.clear()  # pydicom logged the values as they were written
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        summary = _run(tmp_path / "in", tmp_path / "out", write_dicom_seg=True)
    assert list(summary["scans"]["status"]) == ["ok"]
    assert "DICOM_SEG_FAILED" not in summary["scans"]["qc_flags"].iloc[0]
    seg = pydicom.dcmread(next((tmp_path / "out").rglob("seg.dcm")))
    assert seg.PatientBirthDate == "" and seg.PatientSex == "" and str(seg.PatientName) == "PHANTOM^CTSCORE"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "PatientBirthDate" in logged and "PatientSex" in logged
    assert "1923-05-17" not in logged and "Zorblatt" not in logged
    assert not [w for w in seen if "1923-05-17" in str(w.message) or "Zorblatt" in str(w.message)]


def test_seg_failure_is_logged_without_the_values_it_quotes(tmp_path, caplog, monkeypatch, classical_memo):
    """A SEG that cannot be made: the warning gives the exception's type and its message with the quoted values
    replaced; the traceback (whose text quotes them) only in debug records."""
    import pipeline.dicom_seg as dicom_seg

    def refuse(*args, **kwargs):
        raise ValueError("Unable to convert '1923-05-17' to 'DA' object")

    monkeypatch.setattr(dicom_seg, "build_seg", refuse)
    _sample_copy(tmp_path / "in" / "case")
    with caplog.at_level(logging.INFO):
        summary = _run(tmp_path / "in", tmp_path / "out", write_dicom_seg=True)
    assert "DICOM_SEG_FAILED" in summary["scans"]["qc_flags"].iloc[0]
    assert "1923-05-17" not in caplog.text
    warned = [r for r in caplog.records if "no seg.dcm" in r.getMessage()]
    assert warned and all(r.levelno == logging.WARNING and r.exc_info is None for r in warned)
    assert "ValueError: Unable to convert '<value>' to '<value>' object" in warned[0].getMessage()


def test_pydicom_invalid_value_messages_are_silenced_while_a_seg_is_built(caplog, monkeypatch):
    """pydicom both warns and logs "Invalid value for VR DA: '1923-05-17'": neither while build_seg runs; its log
    records elsewhere are left alone (the pydicom logger is not ctscore's)."""
    import pydicom.misc

    import pipeline.dicom_seg as dicom_seg

    def complain(*args):
        pydicom.misc.warn_and_log("Invalid value for VR DA: '1923-05-17'.")
        return "seg"

    monkeypatch.setattr(dicom_seg, "_build_seg", complain)
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert dicom_seg.build_seg([], None, None, "m") == "seg"
    assert "1923-05-17" not in caplog.text and not [w for w in seen if "1923-05-17" in str(w.message)]
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        complain()
    assert "1923-05-17" in caplog.text


def test_quoted_values_are_hidden():
    from pipeline.dicom_seg import without_quoted_values

    assert without_quoted_values('bad "DOE^JOHN" and \'19230517\'') == "bad '<value>' and '<value>'"
    assert without_quoted_values("no quotes here") == "no quotes here"


# ------------------------------------------------------------------------------------------- burned-in text
def test_loader_flags_burned_in_annotation(tmp_path):
    from pipeline.loading import load_series

    files = write_series(tmp_path / "a", n_slices=8)
    assert "BURNED_IN_ANNOTATION" not in load_series(files).flags
    edit_file(files[3], BurnedInAnnotation="YES")
    assert "BURNED_IN_ANNOTATION" in load_series(files).flags
    edit_file(files[3], BurnedInAnnotation="NO")
    assert "BURNED_IN_ANNOTATION" not in load_series(files).flags


def test_share_leaves_out_the_pictures_of_a_burned_in_scan(tmp_path, caplog, classical_memo):
    """qc.png, thumb.png and levels.png show the pixels, and so any name written into them: a scan whose headers
    say BurnedInAnnotation YES is shared without its pictures, SHARED.txt naming them, a warning counting them."""
    from pipeline.share import BURNED_IN_REASON, share_outputs

    _sample_copy(tmp_path / "in" / "a", BurnedInAnnotation="YES")
    _sample_copy(tmp_path / "in" / "b", series=".2")
    summary = _run(tmp_path / "in", tmp_path / "out")
    scans = summary["scans"].set_index("scan_id")
    assert list(scans["status"]) == ["ok", "ok"]
    flagged = [s for s in scans.index if "BURNED_IN_ANNOTATION" in scans.loc[s, "qc_flags"]]
    assert len(flagged) == 1
    (hidden,), (shown,) = flagged, [s for s in scans.index if s not in flagged]
    assert (tmp_path / "out" / hidden / "qc.png").is_file()  # the local run keeps it

    with caplog.at_level(logging.WARNING):
        shared = share_outputs(tmp_path / "out", tmp_path / "dest")
    dest = tmp_path / "dest"
    for name in ("qc.png", "thumb.png", "levels.png"):
        assert not (dest / hidden / name).exists() and (dest / shown / name).is_file()
    assert (dest / hidden / "result.json").is_file() and (dest / hidden / "lungs.nii.gz").is_file()
    manifest = (dest / "SHARED.txt").read_text()
    assert f"- {hidden}/qc.png: {BURNED_IN_REASON}" in manifest
    assert any("1 scan(s) flagged BURNED_IN_ANNOTATION" in w for w in shared["warnings"])
    assert "BURNED_IN_ANNOTATION" in caplog.text
    html = (dest / "report.html").read_text()
    assert f"{hidden}/thumb.png" not in html and f"{shown}/thumb.png" in html
