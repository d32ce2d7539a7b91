"""Report review 5: the page keeps input folders off (they hold patient names) and says where to find them."""

from __future__ import annotations

import csv
import re


def test_report_says_how_to_find_a_series_input_folder(sample_run):
    html = (sample_run / "report.html").read_text()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    assert "find its scan_id in scans.csv (series_uid) and that series_uid in inventory.csv (path)" in text
    row = next(csv.DictReader((sample_run / "scans.csv").open()))
    inventory = [r for r in csv.DictReader((sample_run / "inventory.csv").open())
                 if r["series_uid"] == row["series_uid"]]
    assert inventory and all(r["path"] for r in inventory)  # the way the page gives leads to the files
    assert not any(r["path"] in html for r in inventory)  # the page names the INPUT folder only
