"""Find the CT stacks under an input path and choose which to score (header reads only).

The work is done in :mod:`pipeline.inventory` (files, series, stacks) and :mod:`pipeline.selection`
(rules from the ``selection:`` config section); this module keeps the small interface the
orchestrator calls::

    cands = discover(root)                       # list[SeriesCandidate], one per stack
    chosen = select_series(cands, cfg=cfg, series_uid=None, all_eligible=False)

Pixel data are never decoded here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.inventory import SeriesCandidate, _salt_of, discover_records, iter_files, read_file, summarize

log = logging.getLogger(__name__)

__all__ = ["SeriesCandidate", "discover", "select_series", "iter_files", "read_file", "summarize"]


def discover(root: str | Path, cfg: dict[str, Any] | None = None) -> list[SeriesCandidate]:
    """Every stack under ``root``, with ``eligible``/``reason`` from the hard filters of ``cfg``
    (defaults when None). Raises CTScoreError INPUT_NOT_FOUND when ``root`` cannot be read."""
    from pipeline.selection import select_stacks

    records, stacks = discover_records(root, _salt_of(cfg))
    skipped = sum(r.status == "skipped" for r in records)
    log.info("%d files under %s: %d skipped, %d stack(s)", len(records), root, skipped, len(stacks))
    select_stacks(stacks, cfg)  # fills eligibility, predicted problems and a default decision
    return stacks


def select_series(candidates: list[SeriesCandidate], cfg: dict[str, Any] | None = None,
                  series_uid: str | None = None, all_eligible: bool = False) -> list[SeriesCandidate]:
    """The stacks to score, best first: by default the best eligible stack of each study; with
    ``series_uid`` only that series (or stack id); with ``all_eligible`` every eligible stack.
    Each candidate's ``decision``, ``reason`` and ``rank`` explain the choice."""
    from pipeline.selection import select_stacks

    return select_stacks(candidates, cfg, series_uid=series_uid, all_eligible=all_eligible)
