"""scripts/levels_planes.py prints where levels.png cuts its views (the figures of docs/scoring.md and the closing
notes), here on the sample."""

from __future__ import annotations

import re

from tests.conftest import SAMPLE
from tests.scripts_loader import load_script


def test_levels_planes_prints_the_figures_of_the_sample(capsys, classical_memo) -> None:
    assert load_script("levels_planes").main([str(SAMPLE), "--segmenter", "classical"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith(f"{SAMPLE.name}:"))
    # each dome: its level, then the diaphragm in the view's row and in the centre row, minus the level
    m = re.search(r"dome R (-?[\d.]+): ([+-][\d.]+) / ([+-][\d.]+); dome L (-?[\d.]+): ([+-][\d.]+) / ([+-][\d.]+)",
                  line)
    assert m, line
    assert abs(float(m.group(2))) <= 6.0 and abs(float(m.group(5))) <= 6.0  # the view meets each dome
    t = re.search(r"trachea (\d+)/(\d+) slices", line)
    assert t and int(t.group(2)) > 0 and int(t.group(1)) >= 0.9 * int(t.group(2)), line


def test_levels_planes_without_series_or_data_says_so(tmp_path, monkeypatch, capsys) -> None:
    import pytest

    monkeypatch.setenv("CTSCORE_TEST_DATA", str(tmp_path))
    with pytest.raises(SystemExit):
        load_script("levels_planes").main([])
    assert "no series folders given" in capsys.readouterr().err
