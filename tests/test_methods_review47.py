"""``ctscore methods`` after an audit (review 47): the text follows each scored scan's own result.json (its
configuration, segmenter and package versions: a resumed run or merged shards hold several), says when the
segmenter ran with settings other than those its model card's figures were measured with, states the selection,
gap and QC-image settings as configured, and the body margin the network was actually given."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from pipeline.methods import methods_text
from segmentation.monai_segmenter import shipped_model_id

TABLES = ("scans.csv", "failures.csv", "run.json", "inventory.csv")
OTHER = "scan-0123456789ab"  # a second scan, made from the sample's
OTHER_UID = "1.2.3.4.5.6.7.8.9"


def _copy(sample_run: Path, dest: Path, second: bool = False) -> Path:
    """The sample run's tables and its scan's result.json (and, with ``second``, a copy of them as a second scan
    of another series of the same study)."""
    dest.mkdir()
    for name in TABLES:
        shutil.copy(sample_run / name, dest / name)
    scans = pd.read_csv(dest / "scans.csv", dtype=str, keep_default_na=False)
    sid = scans["scan_id"][0]
    (dest / sid).mkdir()
    shutil.copy(sample_run / sid / "result.json", dest / sid / "result.json")
    if second:
        (dest / OTHER).mkdir()
        shutil.copy(sample_run / sid / "result.json", dest / OTHER / "result.json")
        two = pd.concat([scans, scans], ignore_index=True)
        two.loc[1, ["scan_id", "series_uid"]] = [OTHER, OTHER_UID]
        two.to_csv(dest / "scans.csv", index=False)
    return dest


def _ids(out: Path) -> list[str]:
    return pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False)["scan_id"].tolist()


def _edit_result(out: Path, sid: str, edit) -> None:
    path = out / sid / "result.json"
    result = json.loads(path.read_text())
    edit(result)
    path.write_text(json.dumps(result))


def _edit_run(out: Path, edit) -> None:
    run = json.loads((out / "run.json").read_text())
    edit(run)
    (out / "run.json").write_text(json.dumps(run))


def _as_monai(out: Path, sids: list[str], **monai) -> None:
    """Those scans as if the shipped network had segmented them with the segmentation.monai options ``monai``."""
    scans = pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False)
    scans.loc[scans["scan_id"].isin(sids), ["segmenter", "model_id"]] = ["monai", shipped_model_id()]
    scans.to_csv(out / "scans.csv", index=False)

    def edit(result):
        result["config"]["segmentation"]["method"] = "monai"
        result["config"]["segmentation"]["monai"].update(monai)
        result["segmenter"]["name"] = "monai"
    for sid in sids:
        _edit_result(out, sid, edit)


def test_changed_classical_settings_are_named_and_the_model_card_figures_bracketed(sample_run, tmp_path):
    assert "the classical segmenter's lesion Dice was 0.71" in methods_text(sample_run)  # the defaults: as before
    out = _copy(sample_run, tmp_path / "a")

    def edit(result):
        result["config"]["segmentation"].update(ggo_delta_hu=50, pleural_closing_radius_mm=0)
    _edit_result(out, _ids(out)[0], edit)
    text = methods_text(out)
    assert "segmentation.ggo_delta_hu 50 (default 100)" in text
    assert "segmentation.pleural_closing_radius_mm 0 (default 35)" in text
    assert "lesion Dice was 0.71" not in text
    assert "[Measured with other settings (ctscore's defaults), which may not hold for those of this run" in text


def test_changed_network_options_detach_the_model_card_figures(sample_run, tmp_path):
    out = _copy(sample_run, tmp_path / "a")
    _as_monai(out, _ids(out), flip_tta=False, scale_tta=0, body_margin_mm=20)
    text = methods_text(out)
    assert "segmentation.monai.flip_tta false (default true)" in text
    assert "segmentation.monai.body_margin_mm 20 (default 5)" in text
    assert "[Measured with other inference settings (ctscore's defaults)" in text
    assert "pooled over the cases was 0.85" in text.split("[Measured with other inference settings")[1]
    default = _copy(sample_run, tmp_path / "b")
    _as_monai(default, _ids(default))
    assert "other inference settings" not in methods_text(default)


def test_the_network_paragraph_comes_from_the_network_scans(sample_run, tmp_path):
    out = _copy(sample_run, tmp_path / "a", second=True)
    _as_monai(out, [OTHER], flip_tta=False)  # run.json (the classical shard's) has flip_tta true
    text = methods_text(out)
    assert "left-right mirror image" not in text and "segmentation.monai.flip_tta false" in text


def test_settings_that_differ_between_scans_are_named(sample_run, tmp_path):
    out = _copy(sample_run, tmp_path / "a", second=True)

    def edit(result):
        result["config"]["scoring"]["zhang900"]["mode"] = "zone"
        result["config"]["scoring"]["min_involvement_ml"] = 5
    _edit_result(out, OTHER, edit)
    text = methods_text(out)
    assert "scoring.zhang900.mode slab (1 scan), zone (1 scan)" in text
    assert "scoring.min_involvement_ml 1 (1 scan), 5 (1 scan)" in text


def test_package_versions_of_every_scored_scan(sample_run, tmp_path):
    out = _copy(sample_run, tmp_path / "a", second=True)
    now = json.loads((out / "run.json").read_text())["versions"]["numpy"]
    _edit_result(out, OTHER, lambda r: r["environment"]["versions"].update(numpy="1.26.4", SimpleITK="2.3.1"))
    text = methods_text(out)
    assert "numpy 1.26.4 (1 scan) and " + now + " (1 scan)" in text and "SimpleITK 2.3.1 (1 scan)" in text
    assert "different package versions (SimpleITK, numpy" in text


def test_the_selection_states_its_settings(sample_run, tmp_path):
    out = _copy(sample_run, tmp_path / "a")

    def edit(run):
        run["config"]["selection"]["exclude_image_types"] = "LOCALIZER"
        run["config"]["selection"]["max_axial_angle_deg"] = 20
        run["config"]["loading"]["max_gap_ratio"] = 3
    _edit_run(out, edit)
    text = methods_text(out)
    assert "reformats or projections" not in text and "whose ImageType held none of LOCALIZER;" in text
    assert "slice normal within 20\u00b0 of the patient's long axis" in text
    assert "series with missing slices were not scored" not in text
    assert "a step between slices more than 3 times the local slice step" in text


def test_a_named_series_only_when_every_scored_scan_is_it(sample_run, tmp_path):
    out = _copy(sample_run, tmp_path / "a", second=True)
    uid = pd.read_csv(out / "scans.csv", dtype=str)["series_uid"][0]
    _edit_run(out, lambda run: run.update(series_uid_requested=uid))
    text = methods_text(out)
    assert "The series to score was named by the user" not in text and "Series were selected automatically" in text
    assert "is not the only one scored" in text
    one = _copy(sample_run, tmp_path / "b")
    _edit_run(one, lambda run: run.update(series_uid_requested=uid))
    assert "The series to score was named by the user" in methods_text(one)


def test_one_per_study_contradicted_by_the_scored_rows(sample_run, tmp_path):
    out = _copy(sample_run, tmp_path / "a", second=True)
    inv = pd.read_csv(out / "inventory.csv", dtype=str, keep_default_na=False)
    row = inv[inv["decision"] == "selected"].iloc[[0]].assign(stack_id=OTHER_UID, series_uid=OTHER_UID)
    pd.concat([inv, row], ignore_index=True).to_csv(out / "inventory.csv", index=False)
    text = methods_text(out)
    assert "1 study had several series scored although one series per study was to be" in text


def test_no_qc_images_claimed_when_none_were_written(sample_run, tmp_path):
    out = _copy(sample_run, tmp_path / "a")
    _edit_result(out, _ids(out)[0], lambda r: r["config"]["outputs"].update(write_qc_png=False))
    text = methods_text(out)
    assert "QC images showing" not in text and "with these QC images" not in text
    assert "ctscore wrote no QC images" in text


def test_landmark_errors_body_margin_and_skipped_reasons(sample_run, tmp_path):
    out = _copy(sample_run, tmp_path / "a")
    _as_monai(out, _ids(out))
    inv = pd.read_csv(out / "inventory.csv", dtype=str, keep_default_na=False)
    extra = inv.iloc[[0]].assign(stack_id="x#1", decision="skipped", reason="NOT_SELECTED: rank 2")
    pd.concat([inv, extra], ignore_index=True).to_csv(out / "inventory.csv", index=False)
    text = methods_text(out)
    assert "error on those same scans, with the classical segmenter:" in text
    assert "plus 5 mm of air (rounded up to whole voxels of the working grid: 6 mm)" in text
    assert "skipped: NOT_SELECTED (1)" in text
