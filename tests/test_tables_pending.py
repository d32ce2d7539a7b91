"""OUT/.status/tables.pending: a run marks its tables out of date when it starts scoring and clears the mark
once they are written (or ``ctscore aggregate`` writes them). While it lies there, the commands that read a run's
tables refuse (TABLES_STALE): after a run killed with SIGKILL, scans.csv gave a scan's old zhang900 total (68)
beside its new result.json (71), and share, methods, stats, validate and review-sheet read it without a word (an
audit, 2026-12-07). The SIGKILL and shard cases are in tests/test_batch.py."""

from __future__ import annotations

import shutil

import pytest

from pipeline.errors import CTScoreError
from pipeline.outputs import TABLES_PENDING, check_tables_current, clear_tables_pending, mark_tables_pending


@pytest.fixture
def stale_out(sample_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(sample_run, out)
    assert not (out / TABLES_PENDING).exists()  # a finished run leaves no mark
    mark_tables_pending(out)
    return out


def _refused(call):
    with pytest.raises(CTScoreError) as e:
        call()
    assert e.value.code == "TABLES_STALE", e.value
    assert "ctscore aggregate OUT" in e.value.message and str(TABLES_PENDING) in e.value.message
    return e.value


def test_every_reader_of_a_runs_tables_refuses_while_they_are_pending(stale_out, tmp_path):
    from pipeline.methods import methods_text
    from pipeline.review_sheet import review_sheet
    from pipeline.share import share_outputs
    from scoring.stats.api import run_stats
    from scoring.validation.api import run_validation

    ref = tmp_path / "reference.csv"
    ref.write_text("scan_id,system,unit,rater,score\n")
    calls = {
        "share": lambda: share_outputs(stale_out, tmp_path / "shared"),
        "methods": lambda: methods_text(stale_out),
        "review-sheet": lambda: review_sheet(stale_out),
        "stats (folder)": lambda: run_stats(stale_out, ref),
        "stats (scans.csv)": lambda: run_stats(stale_out / "scans.csv", ref),
        "validate": lambda: run_validation(stale_out, ref),
    }
    for name, call in calls.items():
        assert _refused(call).path == str(stale_out), name
    assert not (tmp_path / "shared").exists()


def test_aggregate_writes_the_tables_again_and_clears_the_mark(stale_out):
    from pipeline.cli import main
    from pipeline.methods import methods_text

    assert main(["aggregate", str(stale_out), "-q"]) == 0
    assert not (stale_out / TABLES_PENDING).exists()
    assert "Chest CT series were scored" in methods_text(stale_out)
    check_tables_current(stale_out / "scans.csv")


def test_the_mark_is_no_scan_record(stale_out):
    """The per-scan records are .status/*.json: the mark is not one (aggregate would have merged a scan
    "tables_pending")."""
    from pipeline.batch import scan_ids_under

    assert all(s.startswith("scan-") for s in scan_ids_under(stale_out))


def test_the_mark_is_read_only_where_it_lies(tmp_path):
    check_tables_current(tmp_path)  # no mark: nothing to say
    mark_tables_pending(tmp_path)
    (tmp_path / TABLES_PENDING).write_text("not json")  # an unreadable mark still refuses
    _refused(lambda: check_tables_current(tmp_path / "scans.csv"))
    clear_tables_pending(tmp_path)
    clear_tables_pending(tmp_path)  # twice: nothing there
    check_tables_current(tmp_path)


def test_aggregate_while_shards_still_score_leaves_the_mark(stale_out):
    """aggregate runs beside shards still scoring (it warns); its tables then lack what they score next, and it had
    removed the mark, so nothing refused them."""
    from pipeline.batch import _aggregate

    _aggregate(stale_out, shards_running=True)
    assert (stale_out / TABLES_PENDING).is_file()
    _aggregate(stale_out)
    assert not (stale_out / TABLES_PENDING).exists()
