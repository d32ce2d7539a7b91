"""A second scored series in a copy of an output folder: a tests' helper for merged or resumed folders."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add_twin(out: Path, edit: Callable[[dict[str, Any]], None], name: str = "scan-ffffffffffff") -> Path:
    """Copy the first ``scan-*`` folder of ``out`` as ``name`` (another scan id and series UID), with its result.json
    changed by ``edit(result)``; returns the new folder."""
    twin = out / name
    shutil.copytree(next(out.glob("scan-*")), twin)
    result = json.loads((twin / "result.json").read_text())
    result["scan_id"] = result["scores"]["scan_id"] = twin.name
    result["scores"]["series_uid"] += ".9"
    edit(result)
    (twin / "result.json").write_text(json.dumps(result))
    return twin
