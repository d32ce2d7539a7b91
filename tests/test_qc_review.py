"""Review of the QC outputs a radiologist reads: the montage (qc.png) and the run report (report.html).

Small synthetic arrays and fake run folders only; no real CT needed.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import pipeline.qc as qc
from pipeline.report import write_run_report
from tests.test_report import _parse, _png, _write_csv, fake_run  # noqa: F401 - fake_run is a fixture


def _chest(one_lung: bool = False, body_hu: float = 40.0, lung_hu: float = -850.0) -> dict:
    """A 40 x 48 x 64 chest: a body filling the grid, a right lung (low x: patient right in LPS) and,
    unless ``one_lung``, a left lung; no lesion and no landmark."""
    nz, ny, nx = 40, 48, 64
    zz, yy, xx = np.mgrid[:nz, :ny, :nx]
    lungs = np.zeros((nz, ny, nx), np.uint8)
    for label, xc in ((1, 20), (2, 44)):
        if one_lung and label == 2:
            continue
        lungs[((xx - xc) / 10.0) ** 2 + ((yy - 24) / 16.0) ** 2 + ((zz - 20) / 17.0) ** 2 < 1] = label
    hu = np.where(lungs > 0, lung_hu, body_hu)
    return {"hu": hu, "lungs": lungs, "classes": np.zeros_like(lungs), "z_mm": -200.0 + 5.0 * np.arange(nz),
            "spacing_zyx": (5.0, 1.5, 1.5), "levels": {}}


def _rgb(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert("RGB")).astype(int)


# ---------------------------------------------------------------------------------------------- qc.png


def test_one_lung_montage_still_shows_the_other_hemithorax(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the right lung segmented (pneumonectomy, or a white lung the segmenter missed): the pictures must
    still show the left hemithorax, or the reader can neither see the missed lung nor tell which side is shown."""
    panels: list[np.ndarray] = []
    real_panel = qc._panel
    monkeypatch.setattr(qc, "_panel", lambda ax, hu2d, *a, **k: (panels.append(hu2d), real_panel(ax, hu2d, *a, **k)))
    case = _chest(one_lung=True)
    qc.qc_png(**case)
    assert len(panels) == 5  # coronal + 4 axial
    nx = case["hu"].shape[2]
    for hu2d in panels:
        # the right lung spans x 10..30; its mirror about the body's midline (x 31.5) spans 33..53
        assert hu2d.shape[1] >= 48, hu2d.shape
    # a normal two-lung scan keeps the tight crop around both lungs
    panels.clear()
    qc.qc_png(**_chest())
    assert all(hu2d.shape[1] < nx for hu2d in panels)


def test_slice_tick_labels_are_readable_on_bright_tissue() -> None:
    """The letters at the axial-slice ticks (U, M, L, *) are white; drawn over chest wall, bone or liver (near
    white in the lung window) they vanished. They need a dark box behind them."""
    case = _chest(body_hu=150.0, lung_hu=150.0)  # everything white in the lung window
    img = _rgb(qc.qc_png(**case))
    left = img[60:490, :495]  # the coronal view, below its title
    white = (left > 220).all(axis=2)
    dark = (left < 128).all(axis=2)
    n_dark = 0
    for r in range(left.shape[0]):
        cols = np.nonzero(white[r])[0]
        if cols.size:
            n_dark += int(dark[r, cols[0]:cols[-1] + 1].sum())  # dark pixels inside the picture, not its margin
    assert n_dark > 100, n_dark


# ----------------------------------------------------------------------------------------- report.html


def test_levels_picture_is_linked_from_the_report(fake_run: Path) -> None:  # noqa: F811
    """levels.png (the landmark levels behind the zones) is one of the QC pictures: the report links it."""
    (fake_run / "scan-aaaaaaaaaaaa" / "levels.png").write_bytes(_png(30, 20))
    parsed = _parse(write_run_report(fake_run).read_text(encoding="utf-8"))
    assert "scan-aaaaaaaaaaaa/levels.png" in parsed.links
    assert not any(link.endswith("scan-bbbbbbbbbbbb/levels.png") for link in parsed.links)  # only when present
    for link in parsed.links:
        assert (fake_run / link).is_file(), link


def test_control_characters_in_a_message_keep_the_page_xml(fake_run: Path) -> None:  # noqa: F811
    """A failure message with a control character (from a header value or an exception text) must not make
    the page unreadable to XML parsers (the report promises XHTML-compatible markup)."""
    failed = {"scan_id": "scan-cccccccccccc", "series_uid": "1.2.3", "code": "CORRUPT_FILE",
              "message": "cannot read DICOM file: bad value '\x0c\x01' <in> header", "path": ""}
    _write_csv(fake_run / "failures.csv", [failed], list(failed))
    html = write_run_report(fake_run).read_text(encoding="utf-8")
    ET.fromstring(html)
    assert "CORRUPT_FILE" in html and "\x0c" not in html  # the code and its meaning; the message stays out


def test_failure_message_does_not_repeat_the_identifying_input_path(fake_run: Path) -> None:  # noqa: F811
    """The failed series' path is kept out of the report (folders are often named after the patient); an
    error text that quotes a file under it must not bring it back."""
    failed = {"scan_id": "scan-cccccccccccc", "series_uid": "1.2.3", "code": "INTERNAL_ERROR",
              "message": "FileNotFoundError: [Errno 2] No such file or directory: '/data/ALICE^SMITH/series9/IM1'",
              "path": "/data/ALICE^SMITH/series9"}
    _write_csv(fake_run / "failures.csv", [failed], list(failed))
    html = write_run_report(fake_run).read_text(encoding="utf-8")
    assert "ALICE^SMITH" not in html
    assert "IM1" not in html and "INTERNAL_ERROR" in html  # the code and its meaning, not the message
    assert "details in failures.csv" in html
    run = json.loads((fake_run / "run.json").read_text())
    assert run["input"] not in html and "1 folder (paths in run.json" in html  # counted, not named
