#!/usr/bin/env python
"""Render a run's ``report.html`` to a PNG in headless Chromium, for a visual check (not run in CI).

    python scripts/render_report.py OUT/report.html -o report.png
    python scripts/render_report.py OUT                      # OUT/report.html -> OUT/report.png

Chromium is not a project dependency: install it yourself (Debian: ``apt-get install chromium``) or
pass ``--chromium PATH``. The page is opened from disk (``file://``), as a user would open it; the
browser is started with a fresh profile and with its background network traffic switched off, so
nothing is fetched from anywhere. The window is as tall as the page is expected to be (from the
number of table rows) unless ``--height`` is given, so that the screenshot shows the whole report.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: Flags for a quiet, offline, one-shot headless run (``--no-sandbox`` is needed as root).
CHROMIUM_FLAGS = (
    "--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--virtual-time-budget=5000",
)
#: Page height guess: a fixed part, one step per series row (a thumbnail) and per other table row.
BASE_HEIGHT_PX, SERIES_ROW_PX, OTHER_ROW_PX = 700, 190, 32


def find_chromium(explicit: str | None) -> str:
    """The Chromium executable: ``explicit``, else the first of :data:`BROWSERS` on PATH."""
    if explicit:
        return explicit
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("no Chromium found: install it (apt-get install chromium) or pass --chromium")


def guess_height(html: str) -> int:
    """A window height (px) that fits the whole report: a fixed part plus one step per table row."""
    n_series = len(re.findall(r'<tr><td class="thumb">', html))
    n_other = len(re.findall(r"<tr>", html)) - n_series
    return BASE_HEIGHT_PX + SERIES_ROW_PX * n_series + OTHER_ROW_PX * n_other


def render(report: Path, png: Path, width: int = 1600, height: int | None = None,
           chromium: str | None = None, timeout_s: float = 120.0) -> Path:
    """Screenshot ``report`` into ``png`` with headless Chromium; returns ``png``."""
    report = report.resolve()
    png = png.resolve()
    height = height or guess_height(report.read_text(encoding="utf-8"))
    exe = find_chromium(chromium)
    # Chromium writes a part file beside the PNG, renamed into place when whole: a failed or killed render
    # leaves an earlier PNG as it was, never a half-written one or none
    part = png.with_name(f".{png.name}.{os.getpid()}.part.png")
    try:
        with tempfile.TemporaryDirectory(prefix="ctscore-chromium-") as profile:
            cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={part}",
                   f"--window-size={width},{height}", report.as_uri()]
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                cmd.insert(1, "--no-sandbox")
            part.unlink(missing_ok=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        if not part.is_file():
            raise RuntimeError(f"Chromium wrote no screenshot (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        os.replace(part, png)
    finally:
        part.unlink(missing_ok=True)
    return png


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="report.html, or the run folder that holds it")
    ap.add_argument("-o", "--out", type=Path, help="PNG to write (default: next to the report)")
    ap.add_argument("--width", type=int, default=1600, help="window width in px (default 1600)")
    ap.add_argument("--height", type=int, help="window height in px (default: fits the table)")
    ap.add_argument("--chromium", help="path of the Chromium executable")
    args = ap.parse_args(argv)
    report = args.report / "report.html" if args.report.is_dir() else args.report
    if not report.is_file():
        print(f"no report at {report}", file=sys.stderr)
        return 2
    out = args.out or report.with_suffix(".png")
    if args.width <= 0 or (args.height is not None and args.height <= 0):
        ap.error("--width and --height must be at least 1 px")
    if out.is_dir() or not out.resolve().parent.is_dir():
        ap.error(f"-o {out}: give a PNG file in an existing folder")
    try:
        print(render(report, out, args.width, args.height, args.chromium))
    # OSError, not only FileNotFoundError: a --chromium that is a folder or not executable (PermissionError), or a
    # PNG that cannot be moved into place, is one line too, not a traceback
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
