"""Mends after a review of the session's own changes (2026-12-07): a later run into a folder keeps a killed run's list
of series; zero-padded shard folders; --systems before the totals check; apostrophes in a quoted message; the Methods
caveats about differing and changed settings; the package pins the new picture code needs."""
# ruff: noqa: F811
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.batch import aggregate, check_shards
from pipeline.errors import CTScoreError
from tests.test_batch import cfg  # noqa: F401 - a fixture
from tests.test_cluster_review47 import CLI_CFG, REPO, _killed_run, inputs  # noqa: F401 - inputs is a fixture
from tests.test_stats_validate_review47 import _write, cohort  # noqa: F401 - cohort is a fixture


def test_a_later_run_into_the_folder_keeps_the_killed_runs_series(tmp_path, inputs):
    import pydicom

    from pipeline.outputs import scan_id_for

    root, ids = inputs
    out = tmp_path / "out"
    _killed_run(root, out, ids[0])  # killed while scoring the first: two never started
    uid = next(str(ds.SeriesInstanceUID) for f in sorted(root.rglob("*.dcm"))
               if scan_id_for(str((ds := pydicom.dcmread(f, stop_before_pixels=True)).SeriesInstanceUID),
                              "ctscore") == ids[0])
    # the user scores the series that killed the run alone, by its uid (to see what killed it)
    subprocess.run([sys.executable, "-m", "pipeline", "run", str(root), "-o", str(out), "--series-uid", uid, "-q",
                    "--executor", "serial", *CLI_CFG], cwd=REPO, check=True, capture_output=True, timeout=300)
    with pytest.raises(CTScoreError) as exc:  # before: 1 of 3 series written, exit 0
        aggregate(out)
    assert exc.value.code == "SCANS_UNFINISHED" and ids[1] in str(exc.value) and ids[2] in str(exc.value)


def test_a_zero_padded_shard_folder_is_a_missing_shard_not_a_crash(tmp_path):
    (tmp_path / "shards" / "0-of-2").mkdir(parents=True)
    (tmp_path / "shards" / "0-of-2" / "run.json").write_text("{}")
    (tmp_path / "shards" / "01-of-2").mkdir()
    with pytest.raises(CTScoreError) as exc:  # before: KeyError '1-of-2'
        check_shards(tmp_path)
    assert exc.value.code == "SHARDS_MISSING" and "1-of-2 did not end: no run.json" in str(exc.value)


def test_a_total_typo_in_a_system_left_out_does_not_stop_the_validation(cohort, tmp_path):
    from scoring.validation.api import run_validation

    pred, ref = cohort
    ref = ref.copy()
    i = ref.index[(ref["system"] == "six_zone") & (ref["unit"] == "total")][0]
    ref.loc[i, "value"] = str(int(ref.loc[i, "value"]) + 1 if int(ref.loc[i, "value"]) < 24 else 23)
    path = _write(tmp_path, ref)
    with pytest.raises(CTScoreError) as exc:
        run_validation(pred, path, draw=False)
    assert exc.value.code == "REFERENCE_TOTAL_MISMATCH"
    tables = run_validation(pred, path, draw=False, systems=["zhang900"])  # before: refused over six_zone
    assert set(tables["agreement"]["system"]) == {"zhang900"}


@pytest.mark.parametrize("message", ["can't build SEG for patient 'DOE^JOHN' now",
                                     "Unable to convert 'O'BRIEN^JOHN' to 'PN'"])
def test_an_apostrophe_in_a_message_withholds_it(message):
    from pipeline.dicom_seg import MESSAGE_WITHHELD, without_quoted_values

    said = without_quoted_values(message)
    assert said == MESSAGE_WITHHELD and "JOHN" not in said  # before: "...'<value>'BRIEN^JOHN..."


def _cfg(**changes):
    from pipeline.config import default_config

    c = default_config()
    for key, value in changes.items():
        section, name = key.split("__")
        c[section][name] = value
    return c


def test_settings_that_do_not_score_are_no_caveat_and_the_grid_is_a_changed_setting():
    from pipeline.methods import _changed_segmentation, _differing_settings

    a, b = _cfg(), _cfg(outputs__write_masks=False, outputs__write_qc_png=False)
    assert _differing_settings([a, a, b]) == []  # before: outputs.write_masks false (1 scan), true (2 scans)
    c = _cfg(scoring__min_involvement_ml=5.0)
    assert any(s.startswith("scoring.min_involvement_ml") for s in _differing_settings([a, c]))
    grid = _cfg(resample__spacing_mm=[3.0, 3.0, 3.0])
    changed = _changed_segmentation([grid], False)
    assert any(s.startswith("resample.spacing_mm") and "default" in s for s in changed)  # before: not named
    assert _changed_segmentation([a], False) == []


def test_the_pins_allow_no_version_the_pictures_cannot_run_on():
    text = (Path(REPO) / "pyproject.toml").read_text()

    def minimum(name: str) -> tuple[int, ...]:
        m = re.search(rf'"{name}>=([0-9.]+)"', text)
        assert m, name
        return tuple(int(v) for v in m.group(1).split("."))

    assert minimum("matplotlib") >= (3, 8)  # ContourSet.set_linestyle
    assert minimum("Pillow") >= (10, 1)  # ImageFont.load_default(size=)
