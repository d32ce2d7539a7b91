"""Review 48 (new user): ctscore share copied series folders no table of the run names (an earlier run of another
input into the same OUT); its BUILTIN_SALT advice led into a loop; ctscore methods replaced an edited METHODS.md."""

# ruff: noqa: F811 - the site_run fixture imported from tests.test_share is a test argument
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

import pipeline.methods
from pipeline.errors import CTScoreError
from pipeline.methods import METHODS_NAME, write_methods
from pipeline.outputs import DEFAULT_SALT, salt_id
from pipeline.share import MANIFEST_NAME, share_outputs
from tests.conftest import SAMPLE, segment_memo
from tests.test_methods_review47 import _copy as _methods_copy
from tests.test_share import SALT, _cli, site_run  # noqa: F401 - site_run is a fixture

STALE = "scan-abcdef123456"  # a series folder an earlier run of another input left in OUT


def _table_ids(out: Path) -> set[str]:
    ids = set(pd.read_csv(out / "scans.csv", dtype=str)["scan_id"])
    if (out / "failures.csv").is_file():
        ids |= set(pd.read_csv(out / "failures.csv", dtype=str)["scan_id"])
    return ids


def _scan_dirs(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("scan-*") if p.is_dir()}


def _plant_stale(out: Path, builtin: bool = False) -> None:
    """A series folder of an earlier run into ``out``: a result.json (of the built-in salt with ``builtin``) and
    pictures, in no table of the run."""
    sid = sorted(_table_ids(out) & _scan_dirs(out))[0]
    (out / STALE).mkdir()
    result = json.loads((out / sid / "result.json").read_text())
    result["scan_id"] = STALE
    if builtin:
        result["pseudonym_salt_id"] = salt_id(DEFAULT_SALT)
    (out / STALE / "result.json").write_text(json.dumps(result))
    for name in ("qc.png", "thumb.png", "lungs.nii.gz"):
        if (out / sid / name).is_file():
            shutil.copy(out / sid / name, out / STALE / name)


def test_share_copies_only_the_series_folders_of_the_run_tables(site_run, tmp_path, capsys):
    _, run_out = site_run
    out = tmp_path / "out"
    shutil.copytree(run_out, out)
    _plant_stale(out, builtin=True)  # of the built-in salt too: not shared, so not checked
    assert STALE not in _table_ids(out)
    summary = share_outputs(out, tmp_path / "dest")
    dest = tmp_path / "dest"
    assert _scan_dirs(dest) == _table_ids(out) & _scan_dirs(out) and STALE not in _scan_dirs(dest)
    assert summary["not_in_tables"] == [STALE] and summary["salt"] == "site"
    assert not any(STALE in c["path"] for c in summary["copied"])
    manifest = (dest / MANIFEST_NAME).read_text()
    assert "1 scan folder(s) not in this run's tables left out: an earlier run or another input" in manifest
    assert STALE not in manifest
    assert any("1 scan folder(s) not in this run's tables left out" in w for w in summary["warnings"])
    rc, stdout, stderr = _cli(["share", str(out), str(tmp_path / "dest2")], capsys)
    assert rc == 0 and f"{STALE}/" in stdout and "not in this run's tables left out" in stderr
    assert STALE not in _scan_dirs(tmp_path / "dest2")


def test_rescored_with_a_site_salt_into_the_same_out_is_shared(sample_run, tmp_path, capsys):
    """The BUILTIN_SALT advice followed: a site config file given with --config, scored again into the same OUT;
    the first run's folder (of the built-in salt) is in no table and no longer blocks the share."""
    out = tmp_path / "out"
    shutil.copytree(sample_run, out)
    old = _scan_dirs(out)
    site = tmp_path / "site.yaml"
    site.write_text(f"outputs:\n  pseudonym_salt: {SALT}\n")
    with segment_memo():
        rc, _, stderr = _cli(["run", str(SAMPLE), "-o", str(out), "--segmenter", "classical", "--config", str(site)],
                             capsys)
    assert rc == 0, stderr
    new = _table_ids(out) & _scan_dirs(out)
    assert new and not new & old, "a new salt makes new scan ids: the old folder is left over"
    summary = share_outputs(out, tmp_path / "dest")
    assert summary["salt"] == "site" and sorted(summary["not_in_tables"]) == sorted(old)
    assert _scan_dirs(tmp_path / "dest") == new


def test_builtin_salt_advice_keeps_one_salt_in_a_config_file(sample_run, tmp_path):
    with pytest.raises(CTScoreError) as err:
        share_outputs(sample_run, tmp_path / "d")
    msg = err.value.message
    assert err.value.code == "BUILTIN_SALT" and "trying every number" in msg
    assert "--config site.yaml" in msg and "pseudonym_salt: <the salt>" in msg and "new output folder" in msg
    assert "--set outputs.pseudonym_salt=<python" not in msg  # a shell syntax error when pasted
    assert "--allow-builtin-salt" in msg


def test_builtin_salt_only_in_scans_scored_before_the_site_salt_names_them(site_run, tmp_path):
    """run.json names a site salt, a scan of the tables kept a result of the built-in salt (resumed): the refusal
    names that scan and --overwrite, and does not blame run.json."""
    _, run_out = site_run
    out = tmp_path / "out"
    shutil.copytree(run_out, out)
    sid = sorted(_table_ids(out) & _scan_dirs(out))[0]
    result = json.loads((out / sid / "result.json").read_text())
    result["pseudonym_salt_id"] = salt_id(DEFAULT_SALT)
    (out / sid / "result.json").write_text(json.dumps(result))
    with pytest.raises(CTScoreError) as err:
        share_outputs(out, tmp_path / "d")
    msg = err.value.message
    assert err.value.code == "BUILTIN_SALT"
    assert sid in msg and "before the site salt was set" in msg and "--overwrite" in msg
    assert "which run.json names" not in msg and not (tmp_path / "d").exists()


# --------------------------------------------------------------------------------------------------
# ctscore methods: an edited METHODS.md is not replaced


@pytest.fixture()
def methods_out(sample_run, tmp_path) -> Path:
    return _methods_copy(sample_run, tmp_path / "out")


def _new_text(monkeypatch) -> str:
    """Make the next methods text differ from the one written (as a rerun with --exclude does)."""
    text = "# Methods\n\nanother text\n"
    monkeypatch.setattr(pipeline.methods, "methods_text", lambda *a, **k: text)
    return text


def test_methods_refuses_to_replace_an_edited_file(methods_out, monkeypatch, capsys):
    path = write_methods(methods_out)
    assert path == methods_out / METHODS_NAME
    edited = path.read_text() + "[reviewed by AB]\n"
    path.write_text(edited)
    with pytest.raises(CTScoreError) as err:
        write_methods(methods_out)
    assert err.value.code == "OUTPUT_EXISTS" and "edited since ctscore wrote it" in err.value.message
    assert "--overwrite" in err.value.message and "overwrite=True" in err.value.message
    rc, _, stderr = _cli(["methods", str(methods_out)], capsys)
    assert rc != 0 and "OUTPUT_EXISTS" in stderr and METHODS_NAME in stderr
    assert path.read_text() == edited
    new = _new_text(monkeypatch)
    with pytest.raises(CTScoreError):
        write_methods(methods_out)
    write_methods(methods_out, overwrite=True)
    assert path.read_text() == new


def test_methods_replaces_the_file_it_wrote(methods_out, monkeypatch, capsys):
    path = write_methods(methods_out)
    write_methods(methods_out)  # the same text again
    new = _new_text(monkeypatch)
    rc, _, stderr = _cli(["methods", str(methods_out)], capsys)
    assert rc == 0, stderr
    assert path.read_text() == new
    path.write_text(new + "edited\n")
    rc, _, stderr = _cli(["methods", str(methods_out), "--overwrite"], capsys)
    assert rc == 0, stderr
    assert path.read_text() == new


def test_methods_other_targets_follow_the_same_rule(methods_out, tmp_path, capsys):
    mine = tmp_path / "paper_methods.md"
    mine.write_text("my own text\n")
    for call in (lambda: write_methods(methods_out, mine),):
        with pytest.raises(CTScoreError) as err:
            call()
        assert err.value.code == "OUTPUT_EXISTS" and "not written by `ctscore methods`" in err.value.message
    rc, _, stderr = _cli(["methods", str(methods_out), "-o", str(mine)], capsys)
    assert rc != 0 and "OUTPUT_EXISTS" in stderr
    assert mine.read_text() == "my own text\n"
    rc, _, stderr = _cli(["methods", str(methods_out), "-o", str(mine), "--overwrite"], capsys)
    assert rc == 0 and mine.read_text() != "my own text\n"
    write_methods(methods_out, mine)  # written by ctscore now, not edited: replaced
    rc, stdout, stderr = _cli(["methods", str(methods_out), "-o", "-", "--overwrite"], capsys)
    assert rc != 0 and "BAD_OPTION" in stderr
    rc, stdout, _ = _cli(["methods", str(methods_out), "-o", "-"], capsys)
    assert rc == 0 and stdout.startswith("#")
    with pytest.raises(CTScoreError) as err:
        write_methods(methods_out, overwrite="yes")
    assert err.value.code == "BAD_OPTION"
