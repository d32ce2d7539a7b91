"""Second review of scripts/ as a researcher runs them: one clear line instead of a traceback (found out before the
long part runs, not after), outputs that never leave a half-written or missing file, labels that say what they
measure. Quick: argument parsing and tiny inputs, the expensive parts replaced by stand-ins."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from tests.scripts_loader import load_script

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_dicoms"


def _must_not_run(*_a, **_k):
    raise AssertionError("the expensive part ran before the bad option was refused")


# --- benchmark.py --------------------------------------------------------------------------------------------


def test_benchmark_segmenter_that_does_not_build_is_one_line(monkeypatch, capsys):
    """`benchmark.py SERIES --device cuda` on a machine without CUDA (or a model that does not load) raised a
    ConfigError traceback from get_segmenter, which stood outside the error handling."""
    import segmentation.factory
    from pipeline.errors import ConfigError

    def refuse(cfg):
        raise ConfigError("device 'cuda' asked for, but CUDA is not available (use --device cpu or auto)")

    monkeypatch.setattr(segmentation.factory, "get_segmenter", refuse)
    rc = load_script("benchmark").main([str(SAMPLE), "--runs", "1", "--segmenter", "classical"])
    err = capsys.readouterr().err
    assert rc == 2 and "error: BAD_CONFIG: device 'cuda'" in err and "Traceback" not in err


def test_benchmark_series_and_generated_together_are_refused_before_generating(monkeypatch, capsys):
    """`benchmark.py SERIES --generated NZ` generated the chest (minutes at NZ=600) and then failed on an
    'unrecognized arguments' error about the series."""
    import subprocess

    monkeypatch.setattr(subprocess, "run", _must_not_run)
    with pytest.raises(SystemExit) as e:
        load_script("benchmark").main([str(SAMPLE), "--generated", "5"])
    assert e.value.code == 2 and "not both" in capsys.readouterr().err


# --- benchmark_batch.py --------------------------------------------------------------------------------------


def test_benchmark_batch_bad_device_is_one_line(monkeypatch, capsys):
    """The documented `--segmenter monai --device cuda` on a machine without CUDA: ConfigError traceback from the
    batch preflight."""
    from pipeline.errors import ConfigError

    bench = load_script("benchmark_batch")
    monkeypatch.setattr(bench, "write_chest_series", lambda *a, **k: "")

    def refuse(*a):
        raise ConfigError("device 'cuda' asked for, but CUDA is not available (use --device cpu or auto)")

    monkeypatch.setattr(bench, "time_config", refuse)
    rc = bench.main(["--series", "1", "--configs", "1x1", "--segmenter", "monai", "--device", "cuda"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: BAD_CONFIG: device 'cuda'")


def test_benchmark_batch_failed_series_are_named_in_one_line(monkeypatch, capsys):
    """A series that failed gave `RuntimeError: 1 series failed` (a traceback) and the reason went with the
    temporary output folder."""
    import pipeline.run

    bench = load_script("benchmark_batch")

    def fake_run(input_dir, out, cfg, all_series, batch):
        (Path(out) / "failures.csv").write_text("scan_id,series_uid,code,message,path\n"
                                                "scan-1,1.2.3,SEGMENTATION_FAILED,no lungs found,/x\n")
        return {"n_ok": 1, "n_failed": 1}

    monkeypatch.setattr(pipeline.run, "run_pipeline", fake_run)
    with pytest.raises(RuntimeError, match="1 of 2 series failed.*SEGMENTATION_FAILED: no lungs found"):
        bench.time_config(Path("."), 1, 1, {}, 2)
    monkeypatch.setattr(bench, "write_chest_series", lambda *a, **k: "")
    rc = bench.main(["--series", "2", "--configs", "1x1"])
    err = capsys.readouterr().err
    assert rc == 1 and "SEGMENTATION_FAILED" in err and "Traceback" not in err


def test_benchmark_batch_json_records_what_was_measured(tmp_path, monkeypatch):
    """The JSON held the segmenter but not --device, --set or --repeats: the README's figure (made with
    --set resample.spacing_mm=[2,2,2]) could not be told from a run at the default grid."""
    bench = load_script("benchmark_batch")
    monkeypatch.setattr(bench, "time_config", lambda input_dir, w, t, cfg, n: 6.0 / w)
    monkeypatch.setattr(bench, "write_chest_series", lambda *a, **k: "")
    out = tmp_path / "bench.json"
    assert bench.main(["--series", "2", "--configs", "1x1", "--repeats", "2", "--set",
                       "resample.spacing_mm=[2,2,2]", "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["overrides"] == ["resample.spacing_mm=[2,2,2]"] and got["device"] is None and got["repeats"] == 2


# --- compare_segmenters.py -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["missing_folder", "a_folder"])
def test_compare_segmenters_bad_png_is_refused_before_segmenting(tmp_path, monkeypatch, where, capsys):
    """`--png` in a folder that does not exist failed with a FileNotFoundError traceback after both segmenters had
    run (minutes on a real scan), and the figures were lost with it."""
    cs = load_script("compare_segmenters")
    monkeypatch.setattr(cs, "_segmenter", _must_not_run)
    png = tmp_path / "no" / "diff.png" if where == "missing_folder" else tmp_path
    with pytest.raises(SystemExit) as e:
        cs.main([str(SAMPLE), "--a", "classical", "--b", "classical", "--png", str(png)])
    assert e.value.code == 2 and "--png" in capsys.readouterr().err


# --- device_check.py -----------------------------------------------------------------------------------------


def test_device_check_unavailable_device_is_refused_before_any_run(tmp_path, monkeypatch, capsys):
    """The default `--devices cpu cuda` on a machine without CUDA loaded every input and ran the CPU passes (minutes)
    before saying that CUDA is not there."""
    import numpy as np

    dc = load_script("device_check")
    dc.save_npz(str(tmp_path / "v.npz"), np.zeros((4, 8, 8), np.int16), (1.5, 1.5, 1.5))
    monkeypatch.setattr(dc, "run_device", _must_not_run)
    assert dc.main([str(tmp_path / "v.npz"), "--npz", "--devices", "cpu", "cuda:99"]) == 2
    assert "error: device cuda:99" in capsys.readouterr().err


def test_device_check_unreadable_series_is_one_line(monkeypatch, capsys):
    """A series the loader refuses (CTScoreError) gave a traceback, without the input's name."""
    from pipeline.errors import CTScoreError

    dc = load_script("device_check")

    def refuse(series):
        raise CTScoreError("LOAD_FAILED", "slices of different sizes")

    monkeypatch.setattr(dc, "load_working_grid", refuse)
    assert dc.main([str(SAMPLE), "--devices", "cpu"]) == 2
    assert f"error: {SAMPLE}: LOAD_FAILED: slices of different sizes" in capsys.readouterr().err
    assert dc.main([str(SAMPLE), "--save-npz", "x.npz"]) == 2
    assert "LOAD_FAILED" in capsys.readouterr().err


# --- evaluate_segmenter.py -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, said", [
    (["--real", "cap001", "no_such_scan_xyz"], "no_such_scan_xyz"),
    (["--series", "/no/such/folder"], "--series"),
    (["--cases", "-1"], "--cases"),
    (["--spacing", "1.5", "0", "1.5"], "--spacing"),
    (["--json", "/no/such/folder/eval.json"], "--json"),
])
def test_evaluate_segmenter_bad_inputs_refused_before_evaluating(tmp_path, monkeypatch, bad, said, capsys):
    """A misspelt `--real` name failed with a traceback after every synthetic case had run (the standard set:
    about an hour on CPU), and nothing was written; so did a bad --json path."""
    ev = load_script("evaluate_segmenter")
    monkeypatch.setattr(ev, "evaluate", _must_not_run)
    series = [] if "--series" in bad else ["--series", str(tmp_path)]
    with pytest.raises(SystemExit) as e:
        ev.main([*series, *bad])
    assert e.value.code == 2 and said in capsys.readouterr().err


def test_evaluate_segmenter_model_error_is_one_line(tmp_path, monkeypatch, capsys):
    """Weights that do not load (BAD_MODEL) or `--device cuda` without CUDA gave a traceback."""
    from pipeline.errors import ModelError

    ev = load_script("evaluate_segmenter")

    def refuse(*a, **k):
        raise ModelError("no manifest.json: refusing unverified weights", "/tmp/st99/manifest.json")

    monkeypatch.setattr(ev, "evaluate", refuse)
    assert ev.main(["--series", str(tmp_path), "--weights", "/tmp/st99"]) == 2
    assert capsys.readouterr().err.startswith("error: BAD_MODEL: no manifest.json")


# --- landmark_accuracy.py ------------------------------------------------------------------------------------


def test_landmark_accuracy_wrong_data_root_is_an_error_not_an_empty_table(tmp_path, capsys):
    """A --data-root without the scans printed an empty table and exit status 0 (warnings aside)."""
    ref = tmp_path / "ref.csv"
    ref.write_text("scan,landmark,z_mm,confidence,note\nscanA,carina_z,-120.5,high,\n")
    with pytest.raises(SystemExit) as e:
        load_script("landmark_accuracy").main(["--reference", str(ref), "--data-root", str(tmp_path / "nowhere")])
    assert e.value.code == 2 and "--data-root" in capsys.readouterr().err


def test_landmark_accuracy_nothing_to_compare_is_not_a_failed_target():
    """`--scans lung_pet_ct_dx_A0002` (its bases cut off, no right IPV read): base_right with n 0, none missing, none
    spurious was labelled 'NO', a failed target, where there was nothing to compare."""
    la = load_script("landmark_accuracy")
    res = {"base_right": {"errors": [], "missing": 0, "spurious": 0, "methods": {"missing": 1}},
           "base_left": {"errors": [], "missing": 1, "spurious": 0, "methods": {"missing": 1}},
           "carina": {"errors": [1.0], "missing": 0, "spurious": 0, "methods": {"detected": 1}}}
    rows = {ln.split("|")[1].strip(): ln for ln in la.format_table(res).splitlines()[2:]}
    assert "| n/a (" in rows["base_right"]
    assert "| NO (" in rows["base_left"] and "| yes (" in rows["carina"]


def test_landmark_accuracy_docstring_names_the_cache_file_it_writes():
    la = load_script("landmark_accuracy")
    assert "<scan>_<working spacing>.npz" in la.__doc__


def test_landmark_accuracy_airless_band_darkens_only_the_lowest_mm_of_each_column(tmp_path, capsys):
    """--airless-band MM: in every column the lung voxels within MM above its floor get 30 HU, per lung; the masks
    and the rest of the HU are untouched. A negative height is refused."""
    la = load_script("landmark_accuracy")
    lungs = np.zeros((20, 4, 6), np.uint8)
    lungs[5:18, :, :3] = 1
    lungs[2:18, :, 3:] = 2
    lungs[3:18, 0, 0] = 1  # one column reaching lower
    hu = np.where(lungs > 0, -850, 40).astype(np.int16)
    out = la.airless_band(hu, lungs, 4.5, 1.5)  # three slices
    assert (out[5:8, 1:, :3] == 30).all() and (out[8:18, 1:, :3] == -850).all()
    assert (out[3:6, 0, 0] == 30).all() and out[6, 0, 0] == -850
    assert (out[2:5, :, 3:] == 30).all() and (out[5:18, :, 3:] == -850).all()
    assert (out[lungs == 0] == 40).all() and (hu[lungs > 0] == -850).all()
    ref = tmp_path / "ref.csv"
    ref.write_text("scan,landmark,z_mm,confidence,note\nscanA,carina_z,-120.5,high,\n")
    (tmp_path / "scanA").mkdir()
    with pytest.raises(SystemExit) as e:
        la.main(["--reference", str(ref), "--data-root", str(tmp_path), "--airless-band", "-5"])
    assert e.value.code == 2 and "--airless-band" in capsys.readouterr().err


def test_landmark_accuracy_second_reading_scores_every_dome_s_second_reading(tmp_path, monkeypatch):
    """--second-reading: each dome's second reading (past a lens of dense tissue under the aerated lung) is scored in
    place of the dome, whatever its distance from it; without it the dome itself. The module's threshold is restored."""
    import scoring.landmarks as landmarks
    from segmentation.base import RIGHT_LUNG
    from tests.test_landmarks import SP, domed

    la = load_script("landmark_accuracy")
    airway, lungs, z, hu = domed()
    lungs[32:40, 20:40, 8:19] = RIGHT_LUNG  # the liver's dome taken in as lung, 12 mm under the aerated lung
    arrays = {"hu": hu, "lungs": lungs, "airway": airway, "z_mm": z, "spacing": np.asarray(SP)}
    monkeypatch.setattr(la, "working_arrays", lambda *a, **k: arrays)
    (tmp_path / "scanA").mkdir()
    ref = {"scanA": {"dome_right": float(z[40] - 0.75)}}
    assert la.evaluate(ref, tmp_path, None)["dome_right"]["errors"] == [pytest.approx(-12.0)]
    assert la.evaluate(ref, tmp_path, None, second_reading=True)["dome_right"]["errors"] == [pytest.approx(0.0)]
    assert landmarks.DOME_UNCERTAIN_MM == 5.0


# --- make_reference_from_phantom.py, simulate_cohort.py -----------------------------------------------------


def test_make_reference_output_that_is_a_folder_is_refused(tmp_path, capsys):
    """`-o FOLDER` gave an IsADirectoryError traceback from the atomic rename."""
    with pytest.raises(SystemExit) as e:
        load_script("make_reference_from_phantom").main(["-o", str(tmp_path)])
    assert e.value.code == 2 and "is a folder" in capsys.readouterr().err


def test_simulate_cohort_output_that_is_a_file_is_refused(tmp_path, capsys):
    """`-o FILE` gave a NotADirectoryError traceback."""
    f = tmp_path / "sim"
    f.write_text("")
    with pytest.raises(SystemExit) as e:
        load_script("simulate_cohort").main(["-o", str(f)])
    assert e.value.code == 2 and "is a file" in capsys.readouterr().err


# --- render_report.py ----------------------------------------------------------------------------------------


def _fake_chromium(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "fake-chromium"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return str(exe)


@pytest.mark.skipif(os.name != "posix", reason="a shell-script stand-in for Chromium")
def test_render_report_failed_render_keeps_the_old_png(tmp_path, capsys):
    """The PNG was deleted before Chromium ran and written by it in place: a failed render left no picture at all
    (the earlier one gone), a killed one a half-written file."""
    rr = load_script("render_report")
    (tmp_path / "report.html").write_text("<table><tr><td>x</td></tr></table>")
    png = tmp_path / "report.png"
    png.write_bytes(b"old picture")
    assert rr.main([str(tmp_path), "--chromium", _fake_chromium(tmp_path, "exit 1\n")]) == 1
    assert png.read_bytes() == b"old picture"
    writes = ('for a in "$@"; do case "$a" in --screenshot=*) printf new > "${a#--screenshot=}";; esac; done\n')
    assert rr.main([str(tmp_path), "--chromium", _fake_chromium(tmp_path, writes)]) == 0
    assert png.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake-chromium", "report.html", "report.png"]


@pytest.mark.parametrize("bad", [["--width", "0"], ["--height", "-5"], ["-o", "/no/such/folder/r.png"]])
def test_render_report_bad_size_or_output_is_refused(tmp_path, bad, capsys):
    (tmp_path / "report.html").write_text("<table></table>")
    with pytest.raises(SystemExit) as e:
        load_script("render_report").main([str(tmp_path), "--chromium", "/bin/false", *bad])
    assert e.value.code == 2 and bad[0] in capsys.readouterr().err


def test_sizes_of_zero_or_less_are_refused_before_any_work(monkeypatch, capsys):
    """compare_segmenters --spacing 0 and fov_truncation --radius 0 were taken (a grid of no size, a field of view
    of no size) and failed deep inside with a traceback."""
    cs = load_script("compare_segmenters")
    monkeypatch.setattr(cs, "_segmenter", _must_not_run)
    with pytest.raises(SystemExit) as e:
        cs.main([str(SAMPLE), "--a", "classical", "--b", "classical", "--spacing", "1.5", "0", "1.5"])
    assert e.value.code == 2 and "--spacing must be three sizes > 0" in capsys.readouterr().err
    fov = load_script("fov_truncation")
    with pytest.raises(SystemExit) as e:
        fov.main([str(SAMPLE), "--radius", "0"])
    assert e.value.code == 2 and "--radius must be > 0" in capsys.readouterr().err
