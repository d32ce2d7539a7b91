"""The HTML run report: well-formed, offline, no broken links, failures listed, sortable, no identifiers."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from pipeline.report import write_run_report

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}
#: Values from DICOM headers that must never appear in the report.
IDENTIFYING = ["ALICE^SMITH", "PAT-000123", "20200411", "1.2.840.99999.1.2.3", "ACC42", "St Elsewhere"]


def _png(width: int = 8, height: int = 4) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (40, 40, 40)).save(buf, format="PNG")
    return buf.getvalue()


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


def _scan_row(scan_id: str, patient_id: str, six: int, z900: int, pct: float) -> dict:
    return {
        "scan_id": scan_id, "patient_id": patient_id, "study_date": "20200411",
        "series_uid": f"1.2.840.99999.1.2.3.{six}", "status": "ok", "segmenter": "classical",
        "lung_volume_ml_right": 2100.5, "lung_volume_ml_left": 1900.25, "lesion_volume_ml": 40.0 * six,
        "percent_opacity": pct, "percent_high_opacity": 0.5, "six_zone_total": six, "zhang900_total": z900,
        "mosmed_category": "CT-1", "qc_flags": "LANDMARK_ESTIMATED:ipv;PARTIAL_LUNG_COVERAGE",
        "manufacturer": "SIEMENS",
    }


@pytest.fixture()
def fake_run(tmp_path: Path) -> Path:
    """A run folder: two scored series (one without a thumbnail, one with a raw patient id) and a failure."""
    out = tmp_path / "run"
    out.mkdir()
    rows = [_scan_row("scan-aaaaaaaaaaaa", "pt-0123456789", 7, 210, 12.5),
            _scan_row("scan-bbbbbbbbbbbb", "PAT-000123", 2, 30, 1.25)]
    for i, row in enumerate(rows):
        d = out / row["scan_id"]
        d.mkdir()
        (d / "qc.png").write_bytes(_png(20, 10))
        if i == 0:
            (d / "thumb.png").write_bytes(_png())
        result = {"scan_id": row["scan_id"], "scores": row, "qc_flags": row["qc_flags"].split(";"),
                  "header": {"patient_name": "ALICE^SMITH", "accession": "ACC42", "institution": "St Elsewhere"}}
        (d / "result.json").write_text(json.dumps(result))
    failed = {"scan_id": "scan-cccccccccccc", "series_uid": "1.2.840.99999.1.2.3.9", "code": "NON_UNIFORM_SPACING",
              "message": "slice gaps of 5 mm and 10 mm", "path": "/data/ALICE^SMITH/series9"}
    rows.append({"scan_id": failed["scan_id"], "series_uid": failed["series_uid"], "status": "failed"})
    _write_csv(out / "scans.csv", rows, list(dict.fromkeys(k for r in rows for k in r)))
    _write_csv(out / "failures.csv", [failed], list(failed))
    run = {"ctscore_version": "9.9.9", "config_sha256": "f" * 64, "input": "/data/cohort",
           "segmenter": {"name": "classical", "model_id": "classical-1234"}, "n_series": 3, "n_ok": 2,
           "n_failed": 1, "seconds": 12.3, "versions": {"numpy": "2.0"},
           "timings_s": {"scan-aaaaaaaaaaaa": {"read_s": 1.0, "segment_s": 4.0},
                         "scan-bbbbbbbbbbbb": {"read_s": 2.0, "segment_s": 6.0}}}
    (out / "run.json").write_text(json.dumps(run))
    return out


class _Collector(HTMLParser):
    """Collects links and checks that every opened element is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.links.append(value)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.links.append(value)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Collector:
    p = _Collector()
    p.feed(html)
    p.close()
    return p


def test_report_is_well_formed_html_and_xml(fake_run: Path) -> None:
    path = write_run_report(fake_run)
    assert path == fake_run / "report.html"
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    parsed = _parse(html)
    assert parsed.errors == [] and parsed.stack == []
    root = ET.fromstring(html)  # XHTML-compatible markup
    assert root.tag == "html"


def test_every_link_resolves_to_a_file_in_the_run(fake_run: Path) -> None:
    parsed = _parse(write_run_report(fake_run).read_text(encoding="utf-8"))
    assert parsed.links
    for link in parsed.links:
        url = urlparse(link)
        assert not url.scheme and not url.netloc, f"not a relative link: {link}"
        target = (fake_run / unquote(url.path)).resolve()
        assert target.is_file(), f"broken link: {link}"
        assert fake_run.resolve() in target.parents
    assert "scan-aaaaaaaaaaaa/thumb.png" in parsed.links
    # no thumbnail: falls back to the montage, never a broken image
    assert "scan-bbbbbbbbbbbb/qc.png" in parsed.links


def test_offline_no_external_resources(fake_run: Path) -> None:
    html = write_run_report(fake_run).read_text(encoding="utf-8")
    for needle in ("http://", "https://", "//cdn", "<link", "@import", "script src"):
        assert needle not in html


def test_rows_scores_failures_and_provenance(fake_run: Path) -> None:
    html = write_run_report(fake_run).read_text(encoding="utf-8")
    root = ET.fromstring(html)
    body_rows = root.findall(".//table[@id='series']/tbody/tr")
    assert len(body_rows) == 3
    text = " ".join(_parse(html).text)
    for expected in ("scan-aaaaaaaaaaaa", "pt-0123456789", "210", "12.50", "CT-1", "2,101",
                     "PARTIAL_LUNG_COVERAGE", "landmarks estimated: ipv"):
        assert expected in text
    failures = root.findall(".//table[@id='failures']/tbody/tr")
    assert len(failures) == 1
    assert "NON_UNIFORM_SPACING" in "".join(failures[0].itertext())
    # by its code and what the code means, never by its message (which may name patient-named files)
    assert "details in failures.csv" in "".join(failures[0].itertext())
    assert "slice gaps of 5 mm and 10 mm" not in "".join(failures[0].itertext())
    for expected in ("9.9.9", "f" * 64, "classical-1234", "1 folder (paths in run.json"):
        assert expected in text
    assert "/data/cohort" not in text  # the input folder is counted, not named (names often hold patient names)


def test_table_is_sortable(fake_run: Path) -> None:
    html = write_run_report(fake_run).read_text(encoding="utf-8")
    root = ET.fromstring(html)
    table = root.find(".//table[@id='series']")
    assert "sortable" in table.get("class", "")
    assert table.findall(".//th[@data-col]")
    assert "addEventListener(\"click\"" in html and "rows.sort(" in html
    numeric = [td for td in root.iterfind(".//table[@id='series']/tbody/tr/td[@class='num']")]
    assert numeric and all(td.get("data-sort") is not None for td in numeric)


def test_no_identifying_header_values(fake_run: Path) -> None:
    html = write_run_report(fake_run).read_text(encoding="utf-8")
    for value in IDENTIFYING:
        assert value not in html, value
    assert "(hidden)" in html  # the raw patient id is replaced


def test_missing_files_still_give_a_report(tmp_path: Path) -> None:
    html = write_run_report(tmp_path).read_text(encoding="utf-8")
    ET.fromstring(html)
    assert "run.json is missing" in html


def test_shard_tables_link_to_series_two_levels_up(fake_run: Path) -> None:
    shard = fake_run / "shards" / "0-of-2"
    shard.mkdir(parents=True)
    for name in ("scans.csv", "failures.csv", "run.json"):
        (shard / name).write_bytes((fake_run / name).read_bytes())
    parsed = _parse(write_run_report(shard).read_text(encoding="utf-8"))
    assert "../../scan-aaaaaaaaaaaa/thumb.png" in parsed.links
    for link in parsed.links:
        assert (shard / link).resolve().is_file(), link


def test_a_run_nested_in_another_does_not_link_the_outer_runs_folders(fake_run: Path) -> None:
    """Only a shard's tables (OUT/shards/K-of-N) look two levels up; a run written to OUT/a/b does not take
    OUT's series folders for its own."""
    nested = fake_run / "a" / "b"
    nested.mkdir(parents=True)
    for name in ("scans.csv", "failures.csv", "run.json"):
        (nested / name).write_bytes((fake_run / name).read_bytes())
    parsed = _parse(write_run_report(nested).read_text(encoding="utf-8"))
    assert not [link for link in parsed.links if "scan-aaaaaaaaaaaa" in link]


def test_failed_rerun_does_not_show_the_earlier_result_as_current(fake_run: Path) -> None:
    """A scan that failed in this run but kept its folder from an earlier run: the row shows the failure, not
    the earlier scores and pictures, and links the earlier result as such."""
    d = fake_run / "scan-cccccccccccc"
    d.mkdir()
    (d / "thumb.png").write_bytes(_png())
    (d / "qc.png").write_bytes(_png(20, 10))
    old = _scan_row("scan-cccccccccccc", "pt-9999999999", 17, 777, 33.3)
    (d / "result.json").write_text(json.dumps({"scan_id": old["scan_id"], "scores": old, "qc_flags": []}))
    html = write_run_report(fake_run).read_text()
    row = next(r for r in html.split("<tr>") if "scan-cccccccccccc" in r and "<td" in r)
    assert "777" not in row and "33.3" not in row and "thumb.png" not in row and "qc.png" not in row
    assert "NON_UNIFORM_SPACING" in row and "previous result" in row and "scan-cccccccccccc/result.json" in row
    assert not _parse(html).errors
