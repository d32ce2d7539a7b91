"""``ctscore methods`` for a network run (a methods editor's audit): the network's own settings (a changed body margin
changed the scores, not the text), its training and test figures from its model card, a user's own weights not called
the shipped network, the airway's own method, which stacks were selected, and how many scans each score covers."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.methods import EVALUATION_JSON, methods_text
from segmentation.monai_segmenter import WEIGHTS_DIR, shipped_model_id

TABLES = ("scans.csv", "failures.csv", "run.json", "inventory.csv")


def _as_network(sample_run: Path, dest: Path, model_id: str | None = None, **monai) -> Path:
    """The sample run's records as if the network (``model_id``, default the shipped one) had scored it with the
    segmentation.monai options ``monai``."""
    dest.mkdir()
    for name in TABLES:
        shutil.copy(sample_run / name, dest / name)
    scans = pd.read_csv(dest / "scans.csv", dtype=str, keep_default_na=False)
    scans["segmenter"], scans["model_id"] = "monai", model_id or shipped_model_id()
    scans.to_csv(dest / "scans.csv", index=False)
    run = json.loads((dest / "run.json").read_text())
    run["config"]["segmentation"]["method"] = "monai"
    run["config"]["segmentation"]["monai"].update(monai)
    (dest / "run.json").write_text(json.dumps(run))
    return dest


def test_the_networks_settings_are_stated(sample_run, tmp_path):
    text = methods_text(_as_network(sample_run, tmp_path / "a"))
    assert "the convolutional neural network shipped with ctscore (MONAI; model id" in text
    assert "2.5 \u00d7 2.5 \u00d7 2.5 mm grid" in text and "plus 5 mm of air" in text
    assert "averaged over the scan, its left-right mirror image and the scan zoomed by 0.85 and 1.15" in text
    assert "lesion probability exceeded 0.5" in text and "gas under the diaphragm was taken out" in text
    assert "soft tissue taken for lung at the apices was taken out of the lung mask" in text  # (0.14.0)
    # the airway is not the network's
    assert "Lungs and lesions were segmented by" in text and "the airway, from which the carina was found, by " \
        "ctscore's classical region growing" in text and "Lungs, airway and lesions" not in text
    # a body margin of 25 mm changed cap001's 0-900 from 36 to 54: the text says so now
    changed = methods_text(_as_network(sample_run, tmp_path / "b", body_margin_mm=25, flip_tta=False, scale_tta=0,
                                       remove_bowel_gas=False, lesion_threshold=0.4,
                                       trim_apex_soft_tissue=False))
    assert "plus 25 mm of air" in changed and "it was run once (no test-time augmentation)" in changed
    assert "lesion probability exceeded 0.4" in changed and "gas under the diaphragm was left in" in changed
    assert "slices above a lung's highest aerated slice were taken out" in changed and "soft tissue" not in changed
    assert changed != text


def test_the_shipped_networks_training_and_test_are_stated(sample_run, tmp_path):
    text = methods_text(_as_network(sample_run, tmp_path / "a"))
    ev = json.loads(EVALUATION_JSON.read_text())
    assert "trained by ctscore's developers on four public chest CT scans" in text and "synthetic pneumonia" in text
    assert "lesion Dice pooled over the cases was 0.85 (median per case 0.79)" in text
    assert "lung Dice against ctscore's classical segmenter (its teacher) 0.98" in text
    assert ("kept inside the lung mask for 69.9 % of its volume (95 % bootstrap interval 30-82 %, resampling the 4 "
            "cases that held it" in text)
    # normal001 chose the model (a model-card audit): said where the figures are stated
    assert "used to choose among training runs and inference settings" in text
    assert "target was 95 %" in text and ev["small_lesions"] in text
    assert "six-zone -0.9, 0-900 -12.3 against a mean of 34.4" in text
    assert "It has not been validated against radiologists' reading of real pneumonia." in text
    # extensive disease (the model card's severity ladder): a paper on a severe cohort must be able to say it
    assert ("With more extensive disease its scores ran lower still (a severity ladder: synthetic lesions inserted "
            "cumulatively into the held-out scan at 2-74 % of the lung, four seeds: % opacity 8-37 % low from 21 % "
            "involvement, the 0-900 score 7-50 % low at 46-74 %, the six-zone score 14-18 against 17-20" in text)


def test_own_weights_are_not_called_the_shipped_network(sample_run, tmp_path):
    text = methods_text(_as_network(sample_run, tmp_path / "a", model_id="monai-5753fd9f96b82ac4"))
    assert "shipped with ctscore (MONAI" not in text and "weights of its own, not the one shipped" in text
    assert "[Describe how this network was trained and validated" in text
    assert "69.9 %" not in text and "[state the lesion_threshold of the model.yaml of its weights]" in text
    assert "its own model grid" in text


def test_the_evaluation_record_agrees_with_the_model_card():
    """What the text states of the shipped network is what its model card measured, for the weights shipped."""
    ev = json.loads(EVALUATION_JSON.read_text())
    card = (WEIGHTS_DIR / "MODEL_CARD.md").read_text()
    assert shipped_model_id() in ev["model_ids"] and f"(`{shipped_model_id()}`)" in card.splitlines()[0]
    assert f"**{ev['lesion_dice']}**" in card and f"**{ev['lung_dice'][0]:.3f} / {ev['lung_dice'][1]:.3f}**" in card
    lo, hi = ev["pleural_coverage_ci95_pct"]
    assert f"{ev['pleural_coverage_pct']} % (not met; 95 % interval {lo}-{hi} %" in card
    assert ev["reproduce"] in card
    assert "| detected (shipped model) | 0 of 9 | 4 of 14 |" in card and ev["small_lesions"].startswith(
        "0 of 9 inserted lesions under 1 mL and 4 of 14 of 1-10 mL")
    assert "2.45 M" in card and "2.45 M" in ev["architecture"]
    diff = ev["score_difference"]
    assert (f"mean difference six-zone {diff['six_zone_total']} (reference mean 4.4),\n0-900 {diff['zhang900_total']} "
            f"(reference mean {diff['zhang900_reference_mean']})") in card
    cls = ev["classical"]
    assert f"| {cls['lesion_dice']} |" in card
    assert f"| {cls['pleural_coverage_pct']} % |" in card and f"| {cls['false_positive_pct_of_lung']} % |" in card
    assert ev["validated_on_real_pneumonia"] is False
    sev = ev["severe_disease"]
    lo, hi = sev["percent_opacity_low_pct"]
    (z1, z2), (a, b), (s1, s2) = sev["zhang900_low_pct"], sev["at_involvement_pct"], sev["six_zone"]
    assert (f"% opacity {lo}-{hi} % low from {sev['from_involvement_pct']}-24 % involvement, 0-900 {z1}-{z2} % low at "
            f"{a}-{b} %, six-zone {s1}-{s2} against {sev['six_zone_reference'][0]}-{sev['six_zone_reference'][1]}"
            ) in " ".join(card.split()) and sev["reproduce"].removesuffix(" --seed N") in card


def test_classical_runs_state_the_classical_figures(sample_run):
    text = methods_text(sample_run)
    assert "the classical segmenter's lesion Dice was 0.71, and it kept 8.2 % of the consolidation touching the " \
        "pleura inside the lung mask" in text
    assert "Lungs, airway and lesions were segmented by ctscore's classical segmenter" in text
    assert "trained by ctscore's developers" not in text


def test_selection_stacks_and_scores_available(sample_run, tmp_path):
    out = _as_network(sample_run, tmp_path / "a")
    run = json.loads((out / "run.json").read_text())
    run["config"]["selection"]["one_per_study"] = False
    run["config"]["loading"]["allow_gaps"] = True
    run["config"]["loading"]["allow_lossy"] = False
    run["source"] = "git 0123456789abcdef0123 +local changes"
    run["sources"] = {"git 0123456789abcdef0123 +local changes": 1}  # the revision that scored the scans
    (out / "run.json").write_text(json.dumps(run))
    inv = pd.read_csv(out / "inventory.csv", dtype=str, keep_default_na=False)
    extra = inv.iloc[[0]].assign(stack_id="scout#1", decision="skipped", reason="LOCALIZER (ImageType)")
    pd.concat([inv, extra], ignore_index=True).to_csv(out / "inventory.csv", index=False)
    scans = pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False)
    two = pd.concat([scans, scans], ignore_index=True)
    two.loc[1, ["scan_id", "patient_id", "six_zone_total"]] = ["scan-other", "", ""]
    two.to_csv(out / "scans.csv", index=False)
    text = methods_text(out)
    assert "every eligible stack was scored" in text and "missing slices (a step between slices more than 1.5 times" in text
    assert "lossy-compressed series were not scored" in text
    assert "- Image stacks found: 2 (1 selected; skipped: LOCALIZER (1))\n" in text
    assert "- Patients: 1 (1 scan without a PatientID, not counted)\n" in text
    assert "- Scores available (scans): six-zone 1 of 2, 0-900 2 of 2, MosMed 2 of 2, lobar 0 of 2\n" in text
    assert "(commit 0123456789ab, with local changes to its files: state them)" in text
    default = methods_text(sample_run)
    assert re.search(r"the best-ranked one of each study was scored \(ctscore's preferences, in this order: chest, "
                     r"original, .*; kernel preference lung\)", default)
    assert "series with a missing slice (a step between slices more than 1.5 times the local slice step) were not scored" in default


def test_levels_placed_by_offsets_are_said_to_be_estimated(sample_run):
    text = methods_text(sample_run)
    assert "were not detected but placed at fixed offsets" in text and "six reference scans" in text
    assert "IPV median 3 mm, maximum 6.6 mm" in text and "border between the six-zone middle and lower zones" in text
    assert "automated approximations" in text and "agreement with radiologists' scores" in text
    assert "rounded to the nearest 10 % (halves up" in text and "more than 10 mm apart" in text


@pytest.mark.parametrize("broken", ["", "{", "[]", '{"model_ids": []}'])
def test_an_unreadable_evaluation_record_asks_the_authors(sample_run, tmp_path, monkeypatch, broken):
    import pipeline.methods as methods

    path = tmp_path / "evaluation.json"
    path.write_text(broken)
    monkeypatch.setattr(methods, "EVALUATION_JSON", path)
    text = methods_text(_as_network(sample_run, tmp_path / "a"))
    assert "[Describe how the network was trained and validated" in text and "69.9" not in text


def test_a_network_whose_model_id_is_not_recorded(sample_run, tmp_path):
    """A review: a blank model_id read as "weights of its own"; it is unknown, unless run.json names it."""
    out = _as_network(sample_run, tmp_path / "a", model_id="")
    scans = pd.read_csv(out / "scans.csv", dtype=str, keep_default_na=False)
    scans["model_id"] = ""
    scans.to_csv(out / "scans.csv", index=False)
    run = json.loads((out / "run.json").read_text())
    run["segmenter"] = {"name": "monai", "model_id": ""}
    (out / "run.json").write_text(json.dumps(run))
    text = methods_text(out)
    assert "its model id is not recorded: [state which weights were used]" in text
    assert "weights of its own" not in text and "shipped with ctscore (MONAI" not in text
    assert "the run does not record which weights were used" in text
    run["segmenter"]["model_id"] = shipped_model_id()  # run.json names the shipped weights
    (out / "run.json").write_text(json.dumps(run))
    assert "the convolutional neural network shipped with ctscore (MONAI" in methods_text(out)


def test_an_aggregated_run_names_no_commit_of_the_merging_checkout(sample_run, tmp_path):
    out = _as_network(sample_run, tmp_path / "a")
    run = json.loads((out / "run.json").read_text())
    run["source"], run["aggregated_from"] = "git 0123456789abcdef0123", ["shard-1", "shard-2"]
    run.pop("sources", None)  # a run.json of before 0.6.0: which code scored the scans is not known
    (out / "run.json").write_text(json.dumps(run))
    assert "(commit" not in methods_text(out)
    # run.json's sources (the revisions of the scans' result.json): theirs, not the merging checkout's
    run["sources"] = {"git aaaaaaaaaaaabbbbbbbb": 3}
    (out / "run.json").write_text(json.dumps(run))
    text = methods_text(out)
    assert "(commit aaaaaaaaaaaa)" in text and "0123456789ab" not in text


def test_scans_of_several_code_revisions_are_named_and_warned_about(sample_run, tmp_path, caplog):
    """A configuration audit: a resume kept scans of two other commits (one with local changes) under the same
    version label, nothing warned, and methods named the current commit, which had scored none of them."""
    import shutil

    from pipeline.batch import aggregate
    from tests.result_twins import add_twin

    out = tmp_path / "out"
    shutil.copytree(sample_run, out)
    add_twin(out, lambda result: result["environment"].update(source="git " + "0" * 40 + " +local changes"))
    with caplog.at_level("WARNING"):
        aggregate(out)
    assert "scored by 2 code revisions" in caplog.text
    run = json.loads((out / "run.json").read_text())
    assert run["sources"]["git " + "0" * 40 + " +local changes"] == 1 and len(run["sources"]) == 2
    text = methods_text(out)
    assert "scans scored by 2 code revisions under this version label" in text
    assert "commit 000000000000, with local changes to its files" in text
    report = (out / "report.html").read_text()
    assert "the scans were scored by" in report and "git " + "0" * 40 + " +local changes: 1 scan(s)" in report
    # a shared copy keeps them (a review: `ctscore share` left `sources` out, and its METHODS.md named the checkout)
    from pipeline.methods import write_methods
    from pipeline.share import share_outputs

    write_methods(out)
    share_outputs(out, tmp_path / "shared", allow_builtin_salt=True)
    assert json.loads((tmp_path / "shared" / "run.json").read_text())["sources"] == run["sources"]
    assert "scans scored by 2 code revisions" in (tmp_path / "shared" / "METHODS.md").read_text()
