"""A batch on a hostile input (a walk-through of interrupted and hostile batch runs): an unreadable part of INPUT is
said at the start and at the end of the run, not only in inventory.csv; OUT = INPUT is refused."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import CTScoreError
from pipeline.run import run_pipeline, unreadable_warning
from tests.conftest import SAMPLE


def test_the_output_folder_may_not_be_the_input_folder(tmp_path, capsys):
    """'ctscore run IN -o IN' wrote its tables among the images and replaced the user's own report.html and
    scans.csv there, exit 0."""
    src = tmp_path / "in"
    shutil.copytree(SAMPLE, src)
    (src / "report.html").write_text("my notes")
    with pytest.raises(CTScoreError) as e:
        run_pipeline(src, src / ".." / "in", load_config(extra={"segmentation": {"method": "classical"}}))
    assert e.value.code == "OUTPUT_IS_INPUT" and "the output folder is the input folder" in e.value.message
    assert main(["run", str(src), "-o", str(src), "--segmenter", "classical", "-q"]) == 1
    assert "OUTPUT_IS_INPUT" in capsys.readouterr().err
    assert (src / "report.html").read_text() == "my notes" and not (src / "scans.csv").exists()


def test_unreadable_files_are_named_at_the_start_and_the_end(tmp_path, capsys, classical_memo):
    """A folder that could not be listed dropped its series from the batch: '1 of 1 series scored, 0 failed',
    exit 0, nothing on the console (the cause only in inventory.csv)."""
    src = tmp_path / "in"
    shutil.copytree(SAMPLE, src / "patient1")
    (src / "patient2").mkdir()
    (src / "patient2" / "IM0001").symlink_to(tmp_path / "gone")  # a link to nothing, as root ignores chmod 000
    out = tmp_path / "out"
    assert main(["run", str(src), "-o", str(out), "--segmenter", "classical"]) == 0
    printed = capsys.readouterr()
    note = [line for line in printed.out.splitlines() if line.startswith("note: ")]
    assert len(note) == 1 and "1 file(s) or folder(s) under the input could not be read" in note[0]
    assert "IM0001" in note[0] and "inventory.csv" in note[0]
    assert "WARNING pipeline.run: 1 file(s) or folder(s) under the input could not be read" in printed.err


def test_unreadable_warning_lists_three_and_counts_all():
    files = pd.DataFrame({"path": [f"/in/f{i}" for i in range(5)] + ["/in/ok"],
                          "file_code": ["UNREADABLE_FILE"] * 5 + [""],
                          "file_detail": ["Permission denied"] * 5 + [""]})
    message = unreadable_warning(files, "OUT/inventory.csv")
    assert message.startswith("5 file(s) or folder(s)") and "/in/f2 (Permission denied); ..." in message
    assert "/in/f3" not in message
    assert unreadable_warning(files.iloc[5:], "OUT/inventory.csv") is None


def test_an_empty_file_is_said_to_be_empty(tmp_path):
    """A 0-byte .dcm still being copied was listed as 'no DICM preamble'."""
    from pipeline.inventory import read_file

    (tmp_path / "IM0001.dcm").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("a note")
    empty, text = read_file(tmp_path / "IM0001.dcm"), read_file(tmp_path / "notes.txt")
    assert (empty.code, empty.detail) == ("NOT_DICOM", "empty file (0 bytes: still being copied?)")
    assert (text.code, text.detail) == ("NOT_DICOM", "no DICM preamble")


def test_a_leftover_earlier_copy_is_named(tmp_path, monkeypatch, caplog):
    """A '.scan-<id>.old' folder that could not be removed stayed without a word, and the next --overwrite stopped
    the batch with 'OUTPUT_UNWRITABLE: ... (Directory not empty)', not naming it."""
    import logging

    import pipeline.outputs as outputs

    out = tmp_path / "out"
    (out / "scan-x").mkdir(parents=True)
    (out / "scan-x" / "result.json").write_text("{}")
    monkeypatch.setattr(outputs.shutil, "rmtree", lambda *a, **k: None)  # as a folder without write permission
    folder = outputs.SeriesFolder(out, "scan-x")
    folder.path("result.json").write_text('{"new": 1}')
    with caplog.at_level(logging.WARNING, logger="pipeline.outputs"):
        folder.commit()
    assert (out / "scan-x" / "result.json").read_text() == '{"new": 1}'
    assert any(".scan-x.old could not be removed" in r.getMessage() for r in caplog.records)
    again = outputs.SeriesFolder(out, "scan-x")
    with pytest.raises(OSError) as e:
        again.commit()
    assert ".scan-x.old" in e.value.strerror and "remove it by hand" in e.value.strerror
    assert (out / "scan-x" / "result.json").read_text() == '{"new": 1}'  # the results in place are kept


def test_a_file_input_may_not_write_into_its_own_folder(tmp_path):
    src = tmp_path / "in"
    shutil.copytree(SAMPLE, src)
    one = sorted(p for p in src.iterdir() if p.is_file() and p.suffix != ".json")[0]
    with pytest.raises(CTScoreError) as e:
        run_pipeline(one, src, load_config(extra={"segmentation": {"method": "classical"}}))
    assert e.value.code == "OUTPUT_IS_INPUT"


def test_a_slice_gap_names_the_empty_file_beside_it(tmp_path):
    """A slice still being copied (0 bytes) left a SLICE_GAP naming only its neighbours; the cause was in
    inventory.csv alone."""
    from pipeline.errors import SeriesError
    from pipeline.loading import load_series
    from tests.dicom_factory import write_series

    files = write_series(tmp_path / "ct", 12, dz=2.5)
    victim = files[5]  # slice order: a middle slice
    keep = [str(f) for f in files if f != victim]
    victim.write_bytes(b"")
    with pytest.raises(SeriesError) as e:
        load_series(keep)
    assert e.value.code == "SLICE_GAP"
    assert f"{victim.name} (empty file (0 bytes: still being copied?))" in e.value.message
