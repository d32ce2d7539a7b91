"""Fourth review of the run report (report.html), the QC montage (qc.png) and the benchmark / render scripts.

Small synthetic arrays and fake run folders only; no real CT needed (the benchmark run-failure test reads the
embedded sample series).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import matplotlib.axes
import numpy as np
import pytest

import pipeline.qc as qc
from pipeline.report import write_run_report
from tests.scripts_loader import load_script
from tests.test_qc_review3 import _chest
from tests.test_report import _parse, _png, _write_csv

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_dicoms"

# ---------------------------------------------------------------------------------------------- report.html

#: Folder names that are legal on disk but not as raw URL path segments: '#' starts a fragment, '?' a query,
#: '%41' decodes to 'A', 'c:' reads as a URL scheme, and spaces / non-ASCII letters must be percent-encoded.
ODD_IDS = ["scan #1", "what?now", "a%41b", "c:d", "caf\u00e9 \u80ba"]


def _odd_run(root: Path) -> Path:
    """A run folder whose series folders have the names of :data:`ODD_IDS`, each with a thumbnail, a montage and a
    result."""
    out = root / "run"
    out.mkdir()
    rows = []
    for scan_id in ODD_IDS:
        d = out / scan_id
        d.mkdir()
        (d / "thumb.png").write_bytes(_png())
        (d / "qc.png").write_bytes(_png(20, 10))
        (d / "result.json").write_text(json.dumps({"scan_id": scan_id, "scores": {"status": "ok"}}))
        rows.append({"scan_id": scan_id, "status": "ok", "six_zone_total": 3})
    _write_csv(out / "scans.csv", rows, ["scan_id", "status", "six_zone_total"])
    _write_csv(out / "failures.csv", [], ["scan_id", "series_uid", "code", "message", "path"])
    return out


def _assert_links_resolve(report_dir: Path, links: list[str]) -> None:
    for link in links:
        url = urlparse(link)
        assert not url.scheme and not url.netloc, f"not a relative link: {link}"
        assert not url.query and not url.fragment, f"the path ends early: {link}"
        assert (report_dir / unquote(url.path)).is_file(), f"broken link: {link}"


def test_links_to_series_folders_with_url_special_characters_resolve(tmp_path: Path) -> None:
    """Links were HTML-escaped but not URL-encoded: a folder 'scan #1' gave href="scan #1/qc.png" (a fragment
    '#1/qc.png' of the page), 'what?now' a query, 'a%41b' the folder 'aAb', 'c:d' a URL with the scheme 'c'."""
    out = _odd_run(tmp_path)
    parsed = _parse(write_run_report(out).read_text(encoding="utf-8"))
    series_links = [link for link in parsed.links if "/" in link]
    assert len(series_links) == 4 * len(ODD_IDS)  # per series: thumbnail, its link to qc.png, qc.png, result.json
    _assert_links_resolve(out, parsed.links)
    assert "scan%20%231/thumb.png" in parsed.links
    assert "caf%C3%A9%20%E8%82%BA/result.json" in parsed.links


def test_shard_links_stay_relative_and_encoded(tmp_path: Path) -> None:
    """A shard's report links two levels up ('../../<scan_id>/...'): the '..' segments stay as they are, the
    folder name is encoded."""
    out = _odd_run(tmp_path)
    shard = out / "shards" / "0-of-2"
    shard.mkdir(parents=True)
    for name in ("scans.csv", "failures.csv"):
        (shard / name).write_bytes((out / name).read_bytes())
    parsed = _parse(write_run_report(shard).read_text(encoding="utf-8"))
    assert "../../scan%20%231/qc.png" in parsed.links
    _assert_links_resolve(shard, parsed.links)


# ---------------------------------------------------------------------------------------------- qc.png


def _cut_above_the_diaphragm() -> dict:
    """Two lungs running on below the scan's last slice (slices 8 mm apart, z growing with the index)."""
    case = _chest(nz=30)
    for key in ("hu", "lungs", "classes"):
        case[key] = case[key][10:]
    case["z_mm"] = case["z_mm"][10:]
    return case


def test_scan_without_an_ipv_level_gets_no_lower_zone_slice() -> None:
    """A scan that stops above the diaphragm has a carina but no IPV level (it needs a dome): the score keeps the
    upper zone and reports middle and lower missing. The montage fell back to thirds of the visible lungs and
    showed a panel 'L lower third' (a slice of the middle, or even upper, zone) and 'U upper third' below the
    carina drawn on the same picture."""
    case = _cut_above_the_diaphragm()
    z = case["z_mm"]
    carina = float(z[12]) + 3.0
    picks = {p.tag: p for p in qc.pick_axial_slices(case["lungs"], case["classes"], z,
                                                    {"carina": carina, "ipv": None})}
    assert picks["U"].label == "upper zone" and z[picks["U"].k] > carina
    for tag, name in (("M", "middle"), ("L", "lower")):
        assert picks[tag].k is None, f"a slice under the name of the {name} zone"
        assert picks[tag].label == f"{name} zone: missing" and "IPV" in picks[tag].note


def test_zone_without_lung_is_missing_not_a_third() -> None:
    """Carina and IPV known, but the segmented lungs end above the IPV: no lower-zone slice exists. The montage
    split the lungs in thirds instead, labelled the panels 'third' though the zone planes were drawn."""
    case = _chest(nz=30)
    z = case["z_mm"]
    rows = np.nonzero(case["lungs"].any(axis=(1, 2)))[0]
    carina, ipv = float(z[20]) + 3.0, float(z[rows[0]]) - 4.0  # the IPV half a slice below the lowest lung slice
    picks = qc.pick_axial_slices(case["lungs"], case["classes"], z, {"carina": carina, "ipv": ipv})
    assert [p.label for p in picks[:3]] == ["upper zone", "middle zone", "lower zone: missing"]
    assert z[picks[0].k] > carina >= z[picks[1].k] >= ipv
    assert picks[2].k is None and picks[2].note == "no lung slice in this zone"


def test_every_zone_slice_lies_in_its_zone() -> None:
    """A middle zone thinner than the slice step (carina and IPV between the same two 8 mm slices) holds no
    slice: the nearest slice to its centre, a lower-zone slice, was shown as 'middle zone'."""
    case = _chest(nz=30)
    z = case["z_mm"]
    carina, ipv = float(z[15]) + 6.0, float(z[15]) + 2.0
    picks = qc.pick_axial_slices(case["lungs"], case["classes"], z, {"carina": carina, "ipv": ipv})
    inside = {"upper zone": lambda v: v > carina, "middle zone": lambda v: ipv <= v <= carina,
              "lower zone": lambda v: v < ipv}
    for p in picks[:3]:
        if p.k is not None:
            assert inside[p.label](z[p.k]), f"{p.label} shows z={z[p.k]}"
    assert picks[1].label == "middle zone: missing" and picks[1].k is None


def test_a_nan_level_counts_as_missing() -> None:
    """A level that is not a number is missing (as in the scoring): the zones it bounds are missing, never a slice."""
    case = _cut_above_the_diaphragm()
    z = case["z_mm"]
    picks = qc.pick_axial_slices(case["lungs"], case["classes"], z, {"carina": float(z[12]), "ipv": float("nan")})
    assert [p.k is None for p in picks[:3]] == [False, True, True]


def test_base_cut_off_is_not_labelled_lung_base() -> None:
    """Without lesions the fourth panel is 'lung base'; on a scan whose last slice still holds lung it showed a
    slice 15 % above that last slice under the name of the base, which the scan does not reach."""
    case = _cut_above_the_diaphragm()
    z = case["z_mm"]
    picks = qc.pick_axial_slices(case["lungs"], case["classes"], z, {"carina": float(z[12]), "ipv": None})
    assert picks[-1].label == "base cut off" and picks[-1].k == int(np.argmin(z))
    whole = _chest(nz=30)  # the lungs end inside the scan: the base as before
    picks = qc.pick_axial_slices(whole["lungs"], whole["classes"], whole["z_mm"], {})
    assert picks[-1].label == "lung base"


def test_montage_says_which_zone_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drawn picture: a missing zone's panel is titled as missing and says why; no 'L' tick is drawn on the
    coronal view for a zone without a slice."""
    titles: list[str] = []
    texts: list[str] = []
    set_title, text = matplotlib.axes.Axes.set_title, matplotlib.axes.Axes.text

    def spy_title(self, label, *args, **kwargs):
        titles.append(str(label))
        return set_title(self, label, *args, **kwargs)

    def spy_text(self, x, y, s, *args, **kwargs):
        texts.append(str(s))
        return text(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", spy_title)
    monkeypatch.setattr(matplotlib.axes.Axes, "text", spy_text)
    case = _cut_above_the_diaphragm()
    png = qc.qc_png(**case, levels={"carina": float(case["z_mm"][12]) + 3.0, "ipv": None})
    assert png.startswith(b"\x89PNG")
    assert "L  lower zone: missing" in titles and "M  middle zone: missing" in titles
    assert not any("third" in t for t in titles)
    assert texts.count("no IPV level") == 2
    # the coronal's slice ticks: "U", "B", "S", "E", or "U B" when close; "R" and "L" only as the patient's sides on
    # the two axial panels drawn and the two soft-tissue panels
    assert texts.count("R") == texts.count("L") == 4
    assert not any("L" in t.split() for t in texts if t != "L")


# ---------------------------------------------------------------------------------------------- scripts


def _failing_run(returncode: int, stderr: str):
    """A stand-in for subprocess.run: the generator child exits with ``returncode``, as ``check=True`` would report."""

    def run(cmd, *args, check=False, **kwargs):
        if check and returncode:
            raise subprocess.CalledProcessError(returncode, cmd, stderr=stderr)
        return subprocess.CompletedProcess(cmd, returncode, stdout="", stderr=stderr)

    return run


@pytest.mark.parametrize(("returncode", "stderr", "expected"), [
    (1, "Traceback (most recent call last):\n  File \"<string>\", line 1\nOSError: [Errno 28] No space left on device\n",
     "OSError: [Errno 28] No space left on device"),
    (-9, "", "killed by signal 9"),
])
def test_benchmark_generation_failure_is_one_line(monkeypatch, capsys, returncode, stderr, expected) -> None:
    """`--generated NZ` on a full temporary disk (0.5 MB a slice) or out of memory: subprocess.run(check=True)
    raised CalledProcessError, a traceback after the child's own."""
    monkeypatch.setattr(subprocess, "run", _failing_run(returncode, stderr))
    rc = load_script("benchmark").main(["--generated", "40", "--runs", "1", "--segmenter", "classical"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip().splitlines() == [f"error: generating the 40-slice chest failed: {expected}"
                                        + (" (out of memory?)" if returncode < 0 else "")]
    assert "Traceback" not in err


def test_benchmark_unwritable_run_folder_is_one_line(monkeypatch, capsys) -> None:
    """process_series raises OUTPUT_UNWRITABLE when the run's output cannot be written (a full temporary disk):
    it stood outside the error handling, a traceback."""
    import pipeline.run
    from pipeline.errors import CTScoreError

    def unwritable(*args, **kwargs):
        raise CTScoreError("OUTPUT_UNWRITABLE", "cannot write the results of scan-x (No space left on device)")

    monkeypatch.setattr(pipeline.run, "process_series", unwritable)
    rc = load_script("benchmark").main([str(SAMPLE), "--runs", "1", "--segmenter", "classical"])
    err = capsys.readouterr().err
    assert rc == 1 and "run 0 failed: OUTPUT_UNWRITABLE: cannot write the results" in err
    assert "Traceback" not in err


def test_render_report_chromium_that_is_not_a_program_is_one_line(tmp_path: Path, capsys) -> None:
    """`--chromium` naming a folder (or a file that is not executable): PermissionError, not a FileNotFoundError,
    escaped the error handling as a traceback."""
    (tmp_path / "report.html").write_text("<!DOCTYPE html><html><body></body></html>", encoding="utf-8")
    not_a_program = tmp_path / "chromium"
    not_a_program.mkdir()
    rc = load_script("render_report").main([str(tmp_path), "--chromium", str(not_a_program)])
    err = capsys.readouterr().err
    assert rc == 1 and "Permission denied" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "report.png").exists()


def test_one_stray_voxel_in_the_bottom_slice_is_not_a_base_cut_off():
    """qc.png's fourth panel said "base cut off" for any lung voxel in the scan's lowest slice, while the coverage
    (scans.csv base_covered, result.json, levels.png) needs >= 5 mm2 there: the picture contradicted the tables and
    showed an almost empty slice. Given the voxel size it uses the coverage's rule."""
    from scoring.quantify import edge_cut

    nz = 40
    lungs = np.zeros((nz, 64, 64), np.uint8)
    lungs[5:35, 10:30, 10:28] = 1
    lungs[5:35, 10:30, 36:54] = 2
    lungs[0, 20, 20] = 1  # one stray voxel in the bottom slice
    z = np.arange(nz) * 2.0
    voxel_ml = 1.5 * 1.5 * 2.0 / 1000.0
    assert edge_cut(lungs == 1, z, voxel_ml) == (False, False)
    last = qc.pick_axial_slices(lungs, np.zeros_like(lungs), z, {"carina": 50.0, "ipv": 30.0}, voxel_ml=voxel_ml)[-1]
    assert last.label == "lung base" and last.k > 0
    lungs[0, 10:30, 10:28] = 1  # now the right lung itself runs out of the bottom slice
    last = qc.pick_axial_slices(lungs, np.zeros_like(lungs), z, {"carina": 50.0, "ipv": 30.0}, voxel_ml=voxel_ml)[-1]
    assert last.label == "base cut off" and last.k == 0
