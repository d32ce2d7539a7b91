"""Lobe label maps of the user's own (``ctscore run --lobes DIR``): lobar scores without a lobe model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.cli import main
from pipeline.errors import EXIT_OK, EXIT_USAGE

# the unchanged sample is segmented once per test process (tests/conftest.py: classical_memo)
pytestmark = pytest.mark.usefixtures("classical_memo")

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicoms"


def _scan_dir(out: Path) -> Path:
    return next(p for p in out.iterdir() if p.is_dir() and p.name.startswith("scan-"))


def _lobe_map(lungs_path: Path, totalseg: bool = True) -> sitk.Image:
    """Lobes cut from a lung mask by height: right thirds (RUL/RML/RLL), left halves (LUL/LLL)."""
    lungs = sitk.ReadImage(str(lungs_path))
    arr = sitk.GetArrayFromImage(lungs)
    out = np.zeros(arr.shape, np.uint8)
    codes = ({"RUL": 12, "RML": 13, "RLL": 14, "LUL": 10, "LLL": 11} if totalseg
             else {"RUL": 1, "RML": 2, "RLL": 3, "LUL": 4, "LLL": 5})
    for side, names in ((1, ("RLL", "RML", "RUL")), (2, ("LLL", "LUL"))):
        ks = np.nonzero((arr == side).any(axis=(1, 2)))[0]
        cuts = np.linspace(ks.min(), ks.max() + 1, len(names) + 1).astype(int)
        for name, k0, k1 in zip(names, cuts[:-1], cuts[1:], strict=True):
            sl = (arr[k0:k1] == side)
            out[k0:k1][sl] = codes[name]
    img = sitk.GetImageFromArray(out)
    img.CopyInformation(lungs)
    return img


def lobes_folder(sample_run: Path, tmp_path: Path) -> Path:
    """A ``--lobes`` folder holding a TotalSegmentator-convention map of the sample run's lungs."""
    scan = _scan_dir(sample_run)
    uid = json.loads((scan / "result.json").read_text())["scores"]["series_uid"]
    lobes = tmp_path / "lobes"
    lobes.mkdir()
    sitk.WriteImage(_lobe_map(scan / "lungs.nii.gz"), str(lobes / f"{uid}.nii.gz"))
    return lobes


def test_user_lobes_give_lobar_scores(sample_run, tmp_path):
    lobes = lobes_folder(sample_run, tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(SAMPLE), "-o", str(out), "-q", "--segmenter", "classical", "--lobes", str(lobes),
                 "--set", "outputs.write_qc_png=false"]) == EXIT_OK
    row = next(csv.DictReader((out / "scans.csv").open()))
    assert row["lobar20_total"] not in ("", "nan") and 0 <= float(row["lobar20_total"]) <= 20
    units = {r["unit"] for r in csv.DictReader((out / "zones.csv").open()) if r["system"] == "lobar"}
    assert len(units) == 5
    assert "LOBES_NOT_FOUND" not in row["qc_flags"]
    # scoring.lobar.enabled: false turns the lobar scores off even with lobes at hand
    off = tmp_path / "off"
    assert main(["run", str(SAMPLE), "-o", str(off), "-q", "--segmenter", "classical", "--lobes", str(lobes),
                 "--set", "outputs.write_qc_png=false", "--set", "scoring.lobar.enabled=false"]) == EXIT_OK
    row = next(csv.DictReader((off / "scans.csv").open()))
    assert row["lobar20_total"] in ("", "nan")
    assert not any(r["system"] == "lobar" for r in csv.DictReader((off / "zones.csv").open()))


def test_user_lobes_missing_empty_or_unreadable(sample_run, tmp_path):
    scan = _scan_dir(sample_run)
    uid = json.loads((scan / "result.json").read_text())["scores"]["series_uid"]
    lobes = tmp_path / "lobes"
    lobes.mkdir()
    base = ["run", str(SAMPLE), "-q", "--segmenter", "classical", "--lobes", str(lobes),
            "--set", "outputs.write_qc_png=false", "--set", "outputs.write_masks=false"]
    # no file for this series: scored without lobes, flagged
    assert main(base + ["-o", str(tmp_path / "o1")]) == EXIT_OK
    row = next(csv.DictReader((tmp_path / "o1" / "scans.csv").open()))
    assert "LOBES_NOT_FOUND" in row["qc_flags"] and row["lobar20_total"] in ("", "nan")
    # a map in the other label convention has none of the expected labels: a named failure
    sitk.WriteImage(_lobe_map(scan / "lungs.nii.gz", totalseg=False), str(lobes / f"{uid}.nii.gz"))
    assert main(base + ["-o", str(tmp_path / "o2")]) == 8
    fail = next(csv.DictReader((tmp_path / "o2" / "failures.csv").open()))
    assert fail["code"] == "LOBES_EMPTY" and "no totalsegmentator lobe label" in fail["message"]
    assert "its labels: 1, 2, 3, 4, 5;" in fail["message"]  # what the map holds: the other convention
    # ... which the ctscore convention reads
    assert main(base + ["-o", str(tmp_path / "o3"), "--set", "scoring.lobar.lobe_labels=ctscore"]) == EXIT_OK
    # not an image at all
    (lobes / f"{uid}.nii.gz").write_bytes(b"not a nifti")
    assert main(base + ["-o", str(tmp_path / "o4")]) == 8
    assert "LOBES_UNREADABLE" in (tmp_path / "o4" / "failures.csv").read_text()
    # a lobes folder that does not exist is a usage error before anything runs
    assert main(["run", str(SAMPLE), "-o", str(tmp_path / "o5"), "-q", "--lobes", str(tmp_path / "nope")]) == EXIT_USAGE


def test_a_replaced_lobe_map_scores_the_scan_again_on_resume(sample_run, tmp_path):
    """The resume fingerprint covered the DICOM files only: a lobe map added, replaced or removed under --lobes
    left the scan 'already done' with the lobar scores of the old map (or none)."""
    from pipeline.batch import BatchOptions
    from pipeline.config import load_config
    from pipeline.run import run_pipeline

    scan = _scan_dir(sample_run)
    uid = json.loads((scan / "result.json").read_text())["scores"]["series_uid"]
    lobes = tmp_path / "lobes"
    lobes.mkdir()
    cfg = load_config(extra={"segmentation": {"method": "classical"}, "scoring": {"lobar": {"lobes_dir": str(lobes)}},
                             "outputs": {"write_qc_png": False, "write_masks": False}})

    def run() -> dict:
        return run_pipeline(SAMPLE, tmp_path / "out", cfg, batch=BatchOptions(progress=False))

    assert run()["n_run"] == 1  # no lobe map yet: LOBES_NOT_FOUND
    sitk.WriteImage(_lobe_map(scan / "lungs.nii.gz"), str(lobes / f"{uid}.nii.gz"))
    summary = run()  # the map added: scored again, now with lobar scores
    assert summary["n_run"] == 1
    row = next(csv.DictReader((tmp_path / "out" / "scans.csv").open()))
    assert row["lobar20_total"] not in ("", "nan")
    assert run()["n_run"] == 0  # nothing changed: resumed


def test_a_totalsegmentator_folder_of_one_mask_per_lobe(sample_run, tmp_path):
    """TotalSegmentator's default output (a folder of lung_upper_lobe_left.nii.gz, ...) was not read ('no lobe map
    there'); now <lobes>/<SeriesInstanceUID>/ with its five lobe files scores as the same map in one file does."""
    one = lobes_folder(sample_run, tmp_path)
    uid = next(one.iterdir()).name[:-len(".nii.gz")]
    img = sitk.ReadImage(str(one / f"{uid}.nii.gz"))
    arr = sitk.GetArrayFromImage(img)
    split = tmp_path / "split" / uid
    split.mkdir(parents=True)
    names = {12: "lung_upper_lobe_right", 13: "lung_middle_lobe_right", 14: "lung_lower_lobe_right",
             10: "lung_upper_lobe_left", 11: "lung_lower_lobe_left"}
    for value, name in names.items():
        mask = sitk.GetImageFromArray((arr == value).astype(np.uint8))
        mask.CopyInformation(img)
        sitk.WriteImage(mask, str(split / f"{name}.nii.gz"))
    rows = {}
    for key, folder in (("one", one), ("split", split.parent)):
        out = tmp_path / f"out_{key}"
        assert main(["run", str(SAMPLE), "-o", str(out), "-q", "--segmenter", "classical", "--lobes", str(folder),
                     "--set", "outputs.write_qc_png=false"]) == EXIT_OK
        rows[key] = next(csv.DictReader((out / "scans.csv").open()))
        zones = [r for r in csv.DictReader((out / "zones.csv").open()) if r["system"] == "lobar"]
        rows[key]["zones"] = [(r["unit"], r["lung_ml"], r["unit_score"]) for r in zones]
    assert rows["split"]["lobar25_total"] == rows["one"]["lobar25_total"] not in ("", "nan")
    assert rows["split"]["zones"] == rows["one"]["zones"]
    result = json.loads((_scan_dir(tmp_path / "out_split") / "result.json").read_text())
    assert result["lobe_map_file"] == uid


def test_an_unusable_lobe_map_fails_before_the_segmenter_runs(tmp_path):
    """LOBES_UNREADABLE and LOBES_EMPTY came after segmentation: minutes of the network per series of a cohort whose
    maps are of another convention."""
    from pipeline.config import load_config
    from pipeline.errors import SeriesError
    from pipeline.run import analyse_volume

    class Segmenter:
        name = "stub"

        def segment(self, hu, spacing):
            raise AssertionError("the segmenter ran")

    image = sitk.GetImageFromArray(np.full((8, 16, 16), -800, np.int16))
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    empty = tmp_path / "empty.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 16, 16), np.uint8)), str(empty))
    cfg = load_config()
    for path, code in ((bad, "LOBES_UNREADABLE"), (empty, "LOBES_EMPTY")):
        with pytest.raises(SeriesError) as exc:
            analyse_volume(image, cfg, Segmenter(), lobes_path=path)
        assert exc.value.code == code


def test_a_lungmask_lobe_map_is_read_in_its_own_convention(sample_run, tmp_path):
    """lungmask's LTRCLobes(_R231) labels (1 LUL, 2 LLL, 3 RUL, 4 RML, 5 RLL) land on the right lobes with
    scoring.lobar.lobe_labels=lungmask; its default R231 model's two-lung map (1 right, 2 left) is refused as what
    it is."""
    from pipeline.config import load_config
    from pipeline.errors import SeriesError
    from pipeline.run import read_user_lobes

    lungs_path = _scan_dir(sample_run) / "lungs.nii.gz"
    ref = sitk.ReadImage(str(lungs_path))
    ours = sitk.GetArrayFromImage(_lobe_map(lungs_path, totalseg=False))  # ctscore codes 1 RUL .. 5 LLL
    to_lungmask = {1: 3, 2: 4, 3: 5, 4: 1, 5: 2}
    lm = np.zeros_like(ours)
    for code, value in to_lungmask.items():
        lm[ours == code] = value
    img = sitk.GetImageFromArray(lm)
    img.CopyInformation(ref)
    path = tmp_path / "lm.nii.gz"
    sitk.WriteImage(img, str(path))
    cfg = load_config((), overrides=["scoring.lobar.lobe_labels=lungmask"])
    got = read_user_lobes(path, ref, cfg)
    assert got.shape == ours.shape and (got == ours).all() and set(np.unique(got)) == {0, 1, 2, 3, 4, 5}
    # lungmask's default model: lungs, not lobes
    r231 = sitk.GetImageFromArray(sitk.GetArrayFromImage(ref).astype(np.uint8))
    r231.CopyInformation(ref)
    sitk.WriteImage(r231, str(path))
    for convention in ("lungmask", "totalsegmentator"):
        c = load_config((), overrides=[f"scoring.lobar.lobe_labels={convention}"])
        with pytest.raises(SeriesError, match="R231") as e:
            read_user_lobes(path, ref, c)
        assert e.value.code == "LOBES_EMPTY"
    # ... but a lungmask map of the left lobes alone (a right pneumonectomy): 1 above 2, not side by side
    arr = sitk.GetArrayFromImage(ref)
    left = np.zeros(arr.shape, np.uint8)
    ks = np.nonzero((arr == 2).any(axis=(1, 2)))[0]
    mid = (ks.min() + ks.max()) // 2
    left[mid:][arr[mid:] == 2] = 1  # the z index grows towards the head: upper half LUL
    left[:mid][arr[:mid] == 2] = 2
    img = sitk.GetImageFromArray(left)
    img.CopyInformation(ref)
    sitk.WriteImage(img, str(path))
    got = read_user_lobes(path, ref, cfg)
    assert set(np.unique(got)) == {0, 4, 5} and (got[arr == 2] > 0).all()
    # the convention is checked when the configuration loads
    from pipeline.config import ConfigError
    with pytest.raises(ConfigError, match="'totalsegmentator', 'ctscore' or 'lungmask'"):
        load_config((), overrides=["scoring.lobar.lobe_labels=LTRCLobes"])
