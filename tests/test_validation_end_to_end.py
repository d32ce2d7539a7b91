"""``ctscore validate`` end to end on pipeline-shaped outputs built here, and on the phantom reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from scoring.validation.api import run_validation
from scoring.validation.phantom import make_reference, truth_scores
from scoring.validation.systems import MOSMED_CATEGORIES, SIX_ZONE_UNITS, ZHANG_UNITS
from tests.scripts_loader import load_script

REPO = Path(__file__).resolve().parents[1]
ZHANG_VALUES = sorted({e * d * d for e in range(11) for d in range(4)})


def _mosmed(pct: float) -> str:
    return MOSMED_CATEGORIES[0 if pct <= 0 else 1 if pct < 25 else 2 if pct < 50 else 3 if pct < 75 else 4]


def write_pred(out: Path, truths: dict[str, dict], failed: tuple[str, ...] = ()) -> Path:
    """A ctscore output folder (scans.csv, zones.csv) from per-series scores keyed by series_uid."""
    out.mkdir(parents=True, exist_ok=True)
    scans, zones = [], []
    for i, (uid, t) in enumerate(truths.items()):
        sid = f"scan-{i:03d}"
        six, zh = t["six_zone"], t["zhang900"]
        scans.append({"scan_id": sid, "patient_id": f"P{i // 2}", "study_date": f"202003{10 + i % 2 + 2 * (i // 2) % 18:02d}",
                      "series_uid": uid, "status": "failed" if uid in failed else "ok",
                      "lung_volume_ml_right": 2500.0, "lung_volume_ml_left": 2200.0,
                      "lesion_volume_ml": 47.0 * t["percent_opacity"], "ggo_volume_ml": 40.0 * t["percent_opacity"],
                      "consolidation_volume_ml": 7.0 * t["percent_opacity"],
                      "percent_opacity": t["percent_opacity"], "percent_high_opacity": t["percent_opacity"] / 5,
                      "six_zone_total": sum(six.values()), "zhang900_total": sum(zh.values()),
                      "mosmed_category": _mosmed(t["percent_opacity"]),
                      **({"percent_well_aerated": t["percent_well_aerated"]} if "percent_well_aerated" in t else {})})
        for name, s in six.items():
            lung, unit = name.split("_")
            zones.append({"scan_id": sid, "system": "six_zone", "lung": lung, "unit": unit,
                          "involvement_pct": 20.0 * s, "extent_score": s, "density_grade": None, "unit_score": s})
        for name, s in zh.items():
            lung, unit = name.split("_")
            zones.append({"scan_id": sid, "system": "zhang900", "lung": lung, "unit": unit,
                          "involvement_pct": min(100.0, 3.0 * s), "extent_score": None, "density_grade": None,
                          "unit_score": s})
    pd.DataFrame(scans).to_csv(out / "scans.csv", index=False)
    pd.DataFrame(zones).to_csv(out / "zones.csv", index=False)
    return out


def random_truth(rng: np.random.Generator) -> dict:
    six = {u: int(rng.integers(0, 5)) for u in SIX_ZONE_UNITS}
    zh = {u: int(rng.choice(ZHANG_VALUES[:20])) for u in ZHANG_UNITS}
    return {"six_zone": six, "zhang900": zh, "percent_opacity": round(float(rng.uniform(0, 80)), 2)}


def reader_rows(truths: dict[str, dict], reader: str, rng: np.random.Generator, flip: float) -> list[dict]:
    rows = []
    for uid, t in truths.items():
        six = {u: int(np.clip(v + (rng.choice([-1, 1]) if rng.random() < flip else 0), 0, 4))
               for u, v in t["six_zone"].items()}
        for u, v in six.items():
            rows.append({"series_uid": uid, "system": "six_zone", "unit": u, "reader": reader, "value": v})
        rows.append({"series_uid": uid, "system": "six_zone", "unit": "total", "reader": reader, "value": sum(six.values())})
        for u, v in t["zhang900"].items():
            rows.append({"series_uid": uid, "system": "zhang900", "unit": u, "reader": reader, "value": v})
        rows.append({"series_uid": uid, "system": "zhang900", "unit": "total", "reader": reader,
                     "value": sum(t["zhang900"].values())})
        pct = float(np.clip(t["percent_opacity"] + rng.normal(0, 3), 0, 100))
        rows.append({"series_uid": uid, "system": "percent_involvement", "unit": "total", "reader": reader,
                     "value": round(pct, 2)})
        rows.append({"series_uid": uid, "system": "mosmed", "unit": "total", "reader": reader, "value": _mosmed(pct)})
    return rows


def write_cohort(tmp: Path, n: int, seed: int, uid_root: str) -> tuple[Path, Path, list[dict], dict]:
    """``n`` scans with random truths, ctscore equal to the truth, two readers (alice, bob) perturbing it:
    (pred folder, readers.csv, reader rows, truths)."""
    rng = np.random.default_rng(seed)
    truths = {f"{uid_root}.{i}": random_truth(rng) for i in range(n)}
    pred = write_pred(tmp / "OUT", truths)
    rows = reader_rows(truths, "alice", rng, 0.2) + reader_rows(truths, "bob", rng, 0.3)
    ref = tmp / "readers.csv"
    pd.DataFrame(rows).to_csv(ref, index=False)
    return pred, ref, rows, truths


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, Path, dict]:
    pred, ref, _, truths = write_cohort(tmp_path_factory.mktemp("val"), 12, 7, "1.2.826.0.1")
    return pred, ref, truths


@pytest.fixture(scope="module")
def validated(cohort, tmp_path_factory) -> Path:
    """One full ``ctscore validate`` run shared by the tests that read its outputs."""
    pred, ref, _ = cohort
    val = tmp_path_factory.mktemp("VAL")
    assert main(["validate", "--pred", str(pred), "--reference", str(ref), "-o", str(val), "-q"]) == 0
    return val


def test_ctscore_validate_writes_tables_pictures_and_html(validated):
    val = validated
    for name in ("data_summary", "ratings", "agreement", "side_by_side", "confusion_matrices"):
        assert (val / f"{name}.csv").is_file(), name
    for png in ("bland_altman_six_zone_total.png", "bland_altman_six_zone_all_units.png",
                "bland_altman_zhang900_total.png", "bland_altman_percent_involvement_total.png",
                "confusion_six_zone_total.png", "confusion_six_zone_all_units.png", "confusion_mosmed_total.png"):
        assert (val / png).stat().st_size > 1000, png
    assert not (val / "confusion_zhang900_total.png").exists()  # 901 categories: no picture
    html = (val / "summary.html").read_text()
    assert "side by side" in html and "bland_altman_six_zone_total.png" in html and "confusion_mosmed_total.png" in html


def test_agreement_tables_have_every_pair_and_the_side_by_side_verdict(validated):
    val = validated
    agree = pd.read_csv(val / "agreement.csv")
    six = agree[(agree.system == "six_zone") & (agree.unit == "total")].set_index(["rater_a", "rater_b"])
    assert set(six.index) == {("alice", "bob"), ("ctscore", "alice"), ("ctscore", "bob"), ("ctscore", "consensus")}
    assert (six["n"] == 12).all() and six["kappa_qw"].notna().all() and six["icc2_1"].notna().all()
    pooled = agree[(agree.system == "six_zone") & (agree.unit == "all_units")]
    assert (pooled["n"] == 72).all() and (pooled["n_scans"] == 12).all()
    pct = agree[(agree.system == "percent_involvement") & (agree.unit == "total")]
    assert pct["kappa_qw"].isna().all() and pct["icc2_1"].notna().all()  # not ordinal: no kappa
    side = pd.read_csv(val / "side_by_side.csv", keep_default_na=False)
    assert {"readers_kappa_qw", "ctscore_vs_readers_kappa_qw", "ctscore_vs_consensus_kappa_qw",
            "within_readers_mae", "within_readers_icc"} <= set(side.columns)
    # ctscore equals the truth, readers are noisy: ctscore is within inter-reader variability for zone scores
    assert side.set_index(["system", "unit"]).loc[("six_zone", "all_units"), "within_readers_mae"] == "yes"
    cm = pd.read_csv(val / "confusion_matrices.csv")
    g = cm[(cm.system == "mosmed") & (cm.rater_a == "ctscore") & (cm.rater_b == "alice")]
    assert g["count"].sum() == 12 and len(g) == 25


def test_api_matches_cli_and_filters_systems(cohort):
    pred, ref, _ = cohort
    t = run_validation(pred, ref, systems=["six_zone"], draw=False)
    assert set(t["agreement"]["system"]) == {"six_zone"}
    r = t["ratings"]
    assert {"ctscore", "alice", "bob", "consensus"} <= set(r.columns)
    both = r[["alice", "bob"]].median(axis=1)
    assert np.allclose(r["consensus"], both)


def test_ctscore_equal_to_reader_is_perfect(cohort, tmp_path):
    pred, _, truths = cohort
    rows = []
    for uid, t in truths.items():
        rows += [{"series_uid": uid, "system": "six_zone", "unit": u, "reader": "exact", "value": v}
                 for u, v in t["six_zone"].items()]
    ref = tmp_path / "exact.csv"
    pd.DataFrame(rows).to_csv(ref, index=False)
    t = run_validation(pred, ref)
    a = t["agreement"]
    pooled = a[a.unit == "all_units"].iloc[0]
    assert pooled["kappa_qw"] == 1 and pooled["icc2_1"] == 1 and pooled["mae"] == 0 and pooled["ba_bias"] == 0
    assert set(a["comparison"]) == {"ctscore_vs_reader"}  # one reader: no pairs, no consensus
    assert (t["side_by_side"]["within_readers_mae"] == "").all()


def test_validate_reports_reference_errors_with_exit_code(cohort, tmp_path, capsys):
    pred, ref, _ = cohort
    bad = pd.read_csv(ref, dtype=str)
    bad.loc[5, "series_uid"] = "9.9.9.9"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert main(["validate", "--pred", str(pred), "--reference", str(tmp_path / "bad.csv"), "-o", str(tmp_path / "V")]) == 1
    err = capsys.readouterr().err
    assert "REFERENCE_NO_MATCH" in err and "line 7" in err
    assert main(["validate", "--pred", str(pred), "--reference", str(tmp_path / "bad.csv"), "-o", str(tmp_path / "V"),
                 "--on-unmatched", "warn", "--no-figures", "--systems", "mosmed", "-q"]) == 0
    assert (tmp_path / "V" / "summary.html").is_file() and not list((tmp_path / "V").glob("*.png"))


def test_failed_scan_has_no_ctscore_value(cohort, tmp_path):
    _, ref, truths = cohort
    failed = next(iter(truths))
    pred = write_pred(tmp_path / "OUT", truths, failed=(failed,))
    t = run_validation(pred, ref, systems=["mosmed"])
    assert int(t["ratings"]["ctscore"].isna().sum()) == 1
    a = t["agreement"].set_index(["rater_a", "rater_b"])
    assert a.loc[("ctscore", "alice"), "n"] == 11 and a.loc[("alice", "bob"), "n"] == 12


# --- the phantom: reference from ground truth plus a simulated second reader -------------------------

PHANTOM_TRUTH = {
    "series_uid": "1.2.826.0.1.3680043.8.498.1",
    "generator": {"seed": 0},
    "scores": {
        "six_zone_total": 7, "zhang900_total": 84,
        "six_zone": {"right_upper": 0, "right_middle": 1, "right_lower": 2, "left_upper": 1, "left_middle": 1,
                     "left_lower": 2},
        "zhang900": {"right_L1": 0, "right_L2": 0, "right_L3": 4, "right_L4": 8, "right_L5": 27,
                     "left_L1": 0, "left_L2": 3, "left_L3": 4, "left_L4": 20, "left_L5": 18},
        "percent_opacity": 14.2, "mosmed_category": "CT-1",
    },
}


def test_reference_from_truth_is_valid_and_seeded():
    ref = make_reference(PHANTOM_TRUTH, seed=3)
    r1 = ref[ref.reader == "reader1"]
    assert len(r1) == 6 + 1 + 10 + 1 + 2 and set(ref["reader"]) == {"reader1", "reader2"}
    assert r1.set_index(["system", "unit"]).loc[("mosmed", "total"), "value"] == "CT-1"
    r2 = ref[ref.reader == "reader2"].set_index(["system", "unit"])["value"]
    assert int(r2[("six_zone", "total")]) == sum(int(r2[("six_zone", u)]) for u in SIX_ZONE_UNITS)
    assert ref.equals(make_reference(PHANTOM_TRUTH, seed=3))
    assert not ref.equals(make_reference(PHANTOM_TRUTH, seed=4, flip_prob=0.9))


def test_truth_is_read_defensively():
    assert truth_scores({"scores": {"six_zone_total": 3}}) == {("six_zone", "total"): 3.0}
    assert truth_scores({"scores": None}) == {}
    nested = {"series": [{"dicom": {"SeriesInstanceUID": "1.2"}, "scores": {"mosmed_category": "CT-0"}}]}
    assert make_reference(nested, n_simulated=0)["series_uid"].tolist() == ["1.2"]


def test_phantom_acceptance_with_built_truth(tmp_path):
    """Script -> reference; a pipeline output equal to the truth -> ctscore validate writes everything."""
    truth_json = tmp_path / "ground_truth.json"
    truth_json.write_text(json.dumps(PHANTOM_TRUTH))
    ref = tmp_path / "phantom_readers.csv"
    assert load_script("make_reference_from_phantom").main(["--truth", str(truth_json), "-o", str(ref), "--seed", "1"]) == 0
    s = PHANTOM_TRUTH["scores"]
    pred = write_pred(tmp_path / "OUT", {PHANTOM_TRUTH["series_uid"]: {
        "six_zone": s["six_zone"], "zhang900": s["zhang900"], "percent_opacity": s["percent_opacity"]}})
    val = tmp_path / "VAL"
    assert main(["validate", "--pred", str(pred), "--reference", str(ref), "-o", str(val), "-q"]) == 0
    agree = pd.read_csv(val / "agreement.csv")
    exact = agree[(agree.rater_b == "reader1") & (agree.unit == "all_units")]
    assert (exact["mae"] == 0).all() and (exact["kappa_qw"] == 1).all()
    assert (val / "bland_altman_six_zone_all_units.png").is_file()
    assert (val / "confusion_six_zone_all_units.png").is_file()
    assert (val / "summary.html").is_file()


def test_reference_from_the_real_phantom_truth(sample_truth, tmp_path):
    """sample_dicoms/ground_truth.json -> script -> reference that validates against a truth-equal output."""
    ref = tmp_path / "phantom_readers.csv"
    assert load_script("make_reference_from_phantom").main(["-o", str(ref)]) == 0  # default --truth is sample_dicoms/ground_truth.json
    s = sample_truth["scores"]
    pred = write_pred(tmp_path / "OUT", {sample_truth["series_uid"]: {
        "six_zone": s["six_zone"], "zhang900": s["zhang900"], "percent_opacity": s["percent_opacity"],
        "percent_well_aerated": s["percent_well_aerated"]}})
    t = run_validation(pred, ref, draw=False)
    a = t["agreement"]
    exact = a[(a.rater_b == "reader1") & (a.unit == "all_units")]
    assert len(exact) == 2 and (exact["mae"] == 0).all()
    # the truth's well-aerated lung (87.0 %) and a second reader's visual estimate, to the nearest 5 %
    r = t["ratings"].set_index(["system", "unit"])
    assert r.loc[("well_aerated", "total"), "reader1"] == pytest.approx(s["percent_well_aerated"])
    assert r.loc[("well_aerated", "total"), "reader2"] % 5 == 0


@pytest.mark.slow
def test_phantom_acceptance_on_the_real_phantom_run(sample_run, sample_truth, tmp_path):
    """On sample_dicoms (skipped until its ground_truth.json exists): the real pipeline run is validated."""
    ref = tmp_path / "phantom_readers.csv"
    make_reference(sample_truth, seed=0).to_csv(ref, index=False)
    val = tmp_path / "VAL"
    assert main(["validate", "--pred", str(sample_run), "--reference", str(ref), "-o", str(val), "-q"]) == 0
    assert (val / "summary.html").is_file() and (val / "agreement.csv").is_file()
    assert list(val.glob("bland_altman_*.png")) and list(val.glob("confusion_*.png"))


def test_bad_options_are_refused(cohort):
    from pipeline.errors import CTScoreError

    pred, ref, _ = cohort
    with pytest.raises(CTScoreError, match="BAD_OPTION"):
        run_validation(pred, ref, colour="red")
    with pytest.raises(CTScoreError, match="unknown system 'brixia'"):
        run_validation(pred, ref, systems="six_zone,brixia")
    with pytest.raises(CTScoreError, match="PRED_NOT_FOUND"):
        run_validation(pred / "nope", ref)
