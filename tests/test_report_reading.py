"""What a radiologist reviewing a cohort reads in report.html and qc.png (an audit of both for readers): the series
that were not scored, no input folder names, % opacity never rounded onto a MosMed band edge, the flags' meanings
written out, and in the montage the flags, slice positions to 0.1 mm and labels beside the image, not over the lung."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import qc
from pipeline.report import _fmt_percent_opacity, render_run_report
from tests.test_qc import two_lung_volume

INVENTORY_COLUMNS = ["path", "file_status", "file_code", "stack_id", "study_key", "series_number",
                     "series_description", "modality", "n_slices", "slice_thickness_mm", "decision", "reason"]


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    _write_csv(out / "scans.csv", [
        {"scan_id": "scan-0123456789ab", "series_uid": "1.2.3", "patient_id": "pt-0123456789", "status": "ok",
         "six_zone_total": "6",
         "zhang900_total": "117", "percent_opacity": "24.996", "mosmed_category": "CT-1",
         "qc_flags": "DENSE_LUNG:-620;LANDMARK_ESTIMATED:ipv"}])
    inv = [
        # the scored series, two files
        *({"path": f"/data/DOE^JOHN/chest/{i}.dcm", "file_status": "ok", "file_code": "", "stack_id": "1.2.3#1", "series_uid": "1.2.3",
           "study_key": "aaaa111111", "series_number": "3", "series_description": "DOE JOHN CHEST", "modality": "CT",
           "n_slices": "120", "slice_thickness_mm": "1.25", "decision": "selected",
           "reason": "best of 1 eligible stack(s) in the study"} for i in range(2)),
        {"path": "/data/DOE^JOHN/scout.dcm", "file_status": "ok", "file_code": "", "stack_id": "1.2.4#1", "series_uid": "1.2.4",
         "study_key": "aaaa111111", "series_number": "1", "series_description": "DOE JOHN SCOUT", "modality": "CT",
         "n_slices": "1", "slice_thickness_mm": "", "decision": "skipped", "reason": "LOCALIZER"},
        {"path": "/data/DOE^JOHN/head/1.dcm", "file_status": "ok", "file_code": "", "stack_id": "1.2.9#1", "series_uid": "1.2.9",
         "study_key": "bbbb222222", "series_number": "2", "series_description": "HEAD", "modality": "CT",
         "n_slices": "2", "slice_thickness_mm": "5", "decision": "skipped", "reason": "TOO_FEW_SLICES"},
        {"path": "/data/DOE^JOHN/notes.txt", "file_status": "not read", "file_code": "NOT_DICOM", "stack_id": "", "series_uid": "",
         "study_key": "", "series_number": "", "series_description": "", "modality": "", "n_slices": "",
         "slice_thickness_mm": "", "decision": "", "reason": ""},
    ]
    _write_csv(out / "inventory.csv", inv)
    (out / "run.json").write_text(json.dumps({"ctscore_version": "0.6.0", "n_series": 1, "n_ok": 1, "n_failed": 0,
                                              "input": ["/data/DOE^JOHN_MRN4455667"]}))
    return out


def test_the_series_not_scored_are_listed_without_identifiers(run_dir):
    """report.html said "1 series: 1 ok" and nothing of the localizer, the 2-slice stack or the study left with no
    series at all; they were only in inventory.csv, which the page did not link."""
    page = render_run_report(run_dir)
    assert "2 image stack(s) found but not scored" in page
    section = page[page.index("<h2>Not scored</h2>"):page.index("<h2>Provenance</h2>")]
    assert "LOCALIZER" in section and "TOO_FEW_SLICES" in section
    assert "1 study has no series scored (none selected, or the one selected failed)" in section
    assert "NOT_DICOM 1" in section
    assert 'href="inventory.csv"' in page
    # named by the study key and series number only: no description, UID or path
    assert "DOE" not in page and "SCOUT" not in page and "1.2.4" not in page


def test_a_study_whose_selected_series_failed_has_no_series_scored(run_dir):
    """The selected stack of study aaaa111111 failed (not ok in scans.csv): the study was counted as scored, though it
    is the one to score again with another series (a review)."""
    rows = list(csv.DictReader((run_dir / "scans.csv").open()))
    rows[0]["status"] = "failed"
    _write_csv(run_dir / "scans.csv", rows)
    page = render_run_report(run_dir)
    assert "2 studies have no series scored" in page
    assert "<td>yes</td>" not in page.split("<h2>Not scored</h2>")[1]


def test_without_a_usable_inventory_the_page_says_so(run_dir):
    inv = run_dir / "inventory.csv"
    rows = list(csv.DictReader(inv.open()))
    rows[2]["reason"] = "see DOE^JOHN's other series"  # free text, not a code: never shown
    _write_csv(inv, rows)
    page = render_run_report(run_dir)
    assert "DOE" not in page and "<td>other</td>" in page
    _write_csv(inv, [{k: v for k, v in r.items() if k != "decision"} for r in rows])
    assert "inventory.csv has no decision column" in render_run_report(run_dir)
    inv.write_text("")
    assert "inventory.csv is empty" in render_run_report(run_dir)
    inv.unlink()
    assert "inventory.csv is not in this folder" in render_run_report(run_dir)


def test_the_input_folder_is_not_on_the_page(run_dir):
    """The provenance block printed run.json's input paths: scripts run once per patient put names in them."""
    page = render_run_report(run_dir)
    assert "MRN4455667" not in page and "DOE" not in page
    assert "1 folder (paths in run.json" in page


def test_percent_opacity_is_never_rounded_onto_a_band_edge(run_dir):
    """24.996 % is CT-1: the page wrote 25.00 beside CT-1, while the Key puts 25 % in CT-2."""
    assert _fmt_percent_opacity(24.996) == "24.996"
    assert _fmt_percent_opacity(49.9999) == "49.999"
    assert _fmt_percent_opacity(10.795) == "10.80"  # away from an edge: 2 decimals, rounded half up as before
    assert _fmt_percent_opacity(25.0) == "25.00" and _fmt_percent_opacity("") == "\u2014"
    page = render_run_report(run_dir)
    assert ">24.996<" in page and ">25.00<" not in page


def test_the_flags_meanings_are_written_out(run_dir):
    """Only tooltips gave the meanings (not on touch screens, not in print)."""
    page = render_run_report(run_dir)
    section = page[page.index("<h2>Flags</h2>"):page.index("<h2>Failures</h2>")]
    assert "DENSE_LUNG (1 series)" in section and "expiratory" in section
    assert "LANDMARK_ESTIMATED (1 series)" in section
    assert "estimated from the carina and the diaphragm" in page  # the Key on the IPV level


@pytest.fixture(scope="module")
def volume() -> dict:
    return two_lung_volume(z_step=0.625, z0=-200.25)  # slices closer than 1 mm


def _texts(monkeypatch) -> list[tuple[float, str]]:
    """Every Axes.text (x, text) and Axes.set_title text drawn while the list is recorded."""
    from matplotlib.axes import Axes

    seen: list[tuple[float, str]] = []
    text, title = Axes.text, Axes.set_title
    monkeypatch.setattr(Axes, "text", lambda self, x, y, s, *a, **k: (seen.append((x, s)), text(self, x, y, s, *a,
                                                                                                  **k))[1])
    monkeypatch.setattr(Axes, "set_title", lambda self, s, *a, **k: (seen.append((np.nan, s)),
                                                                       title(self, s, *a, **k))[1])
    return seen


def test_axial_panels_give_z_to_a_tenth_of_a_mm(volume, monkeypatch):
    """0.625 mm slices: whole millimetres named two slices alike, and a PACS viewer shows 0.1 mm."""
    seen = _texts(monkeypatch)
    qc.qc_png(**volume)
    titles = [s for x, s in seen if "z=" in s]
    assert len(titles) == 4 and all(s.endswith(" mm") and "." in s.split("z=")[1] for s in titles)


def test_plane_labels_and_ticks_sit_beside_the_image(volume, monkeypatch):
    """The plane labels were drawn over the lung's right edge (they hid a tenth of a peripheral ground glass); now they
    sit in a margin right of the image, with the level in mm, and the slice ticks' tags in a margin left of it."""
    seen = _texts(monkeypatch)
    qc.qc_png(**volume)
    width = volume["hu"].shape[2]  # the crop is never wider than the image
    labels = [(x, s) for x, s in seen if s.startswith(("carina", "IPV"))]
    assert len(labels) == 2 and all(x > width for x, _ in labels)
    assert any(f"{volume['levels']['carina']:.1f} mm" in s for _, s in labels)
    tags = [s for x, s in seen if x < -0.5]
    # the four axial slices', and the soft-tissue column's (S: most lesion, its consolidation a speck; E: the base)
    assert sorted(" ".join(tags).split()) == ["*", "E", "L", "M", "S", "U"]


def test_the_montage_prints_the_flags(volume):
    """A qc.png opened on its own (or clicked through from the report) said nothing of the scan's QC flags."""
    import io

    from PIL import Image

    plain = np.asarray(Image.open(io.BytesIO(qc.qc_png(**volume))).convert("L"), dtype=float)
    flagged = np.asarray(Image.open(io.BytesIO(qc.qc_png(**volume, flags=["DENSE_LUNG:-620", "METAL:1.2"])))
                         .convert("L"), dtype=float)
    band = slice(int(0.05 * plain.shape[0]), int(0.08 * plain.shape[0]))  # under the title, above the panels
    assert np.abs(flagged[band] - plain[band]).max() > 100


def test_a_long_flag_list_is_one_line_that_fits():
    """Thirteen flags wrapped over the title (scan id and totals hidden): one line now, flags of one name joined, cut
    with the number left out."""
    flags = [f"ZONE_WITHOUT_LUNG:right_L{i}" for i in range(2, 5)] + ["DENSE_LUNG:-620", "CONTRAST"]
    assert qc.flags_line(flags) == "QC flags: ZONE_WITHOUT_LUNG:right_L2,right_L3,right_L4, DENSE_LUNG:-620, CONTRAST"
    assert qc.flags_line(flags, 50) == "QC flags: ZONE_WITHOUT_LUNG:right_L2,right_L3,right_L4 ... and 2 more (result.json)"


def test_labels_stay_beside_a_tall_narrow_coronal_view(volume, monkeypatch):
    """Margins were a share of the view's width: on 10 mm slices of a narrow crop the labels fell on the lung."""
    narrow = {**volume, "spacing_zyx": (10.0, 1.5, 1.5)}
    seen = _texts(monkeypatch)
    qc.qc_png(**narrow)
    width = volume["hu"].shape[2]
    labels = [x for x, s in seen if s.startswith(("carina", "IPV"))]
    assert labels and all(x > width for x in labels)
