"""Validation defects found by review: each test failed before its fix and passes after."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import f as fdist

from pipeline.cli import build_parser, main
from pipeline.errors import CTScoreError
from scoring.validation import api, compare, figures, metrics
from scoring.validation.api import run_validation, validate_frames
from scoring.validation.phantom import make_reference
from scoring.validation.schema import load_reference
from tests.test_validation_end_to_end import write_cohort


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    """Six scans, two readers (alice, bob), ctscore equal to the truth."""
    pred, ref, rows, _ = write_cohort(tmp_path_factory.mktemp("defects"), 6, 11, "1.2.826.0.9")
    return pred, ref, rows


# --- 1. ICC confidence intervals unrounded ---------------------------------------------------------

def _mcgraw_wong(m: np.ndarray, alpha: float = 0.05) -> dict[str, float]:
    """ICC(A,1) and ICC(C,1) with CI written out directly (McGraw & Wong 1996, Table 7; psych::ICC)."""
    n, k = m.shape
    gm = m.mean()
    ssr = k * ((m.mean(1) - gm) ** 2).sum()
    ssc = n * ((m.mean(0) - gm) ** 2).sum()
    sse = ((m - gm) ** 2).sum() - ssr - ssc
    msr, msc, mse = ssr / (n - 1), ssc / (k - 1), sse / ((n - 1) * (k - 1))
    icc3 = (msr - mse) / (msr + (k - 1) * mse)
    icc2 = (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n)
    f0 = msr / mse
    fl = f0 / fdist.ppf(1 - alpha / 2, n - 1, (n - 1) * (k - 1))
    fu = f0 * fdist.ppf(1 - alpha / 2, (n - 1) * (k - 1), n - 1)
    fj = msc / mse
    vn = (k - 1) * (n - 1) * (k * icc2 * fj + n * (1 + (k - 1) * icc2) - k * icc2) ** 2
    vd = (n - 1) * k ** 2 * icc2 ** 2 * fj ** 2 + (n * (1 + (k - 1) * icc2) - k * icc2) ** 2
    v = vn / vd
    f_u, f_l = fdist.ppf(1 - alpha / 2, n - 1, v), fdist.ppf(1 - alpha / 2, v, n - 1)
    return {"icc2_1": icc2,
            "icc2_1_ci_low": n * (msr - f_u * mse) / (f_u * (k * msc + (k * n - k - n) * mse) + n * msr),
            "icc2_1_ci_high": n * (f_l * msr - mse) / (k * msc + (k * n - k - n) * mse + n * f_l * msr),
            "icc3_1": icc3, "icc3_1_ci_low": (fl - 1) / (fl + k - 1), "icc3_1_ci_high": (fu - 1) / (fu + k - 1)}


@pytest.mark.parametrize("noise", [0.25, 1.5])
def test_icc_ci_is_unrounded_and_holds_the_estimate(noise):
    rng = np.random.default_rng(3)
    t = rng.normal(10, 3, 30)
    m = np.column_stack([t + rng.normal(0, noise, 30), t + 0.5 + rng.normal(0, noise, 30)])
    ours, direct = metrics.icc_matrix(m), _mcgraw_wong(m)
    for key, value in direct.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key
    for name in ("icc2_1", "icc3_1"):
        assert ours[f"{name}_ci_low"] < ours[name] < ours[f"{name}_ci_high"]


def test_icc_ci_matches_shrout_fleiss_published_values():
    # Shrout & Fleiss (1979) Table 2; 95 % CIs as published by psych::ICC: ICC2 [0.019, 0.76], ICC3 [0.34, 0.95]
    sf = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
    r = metrics.icc_matrix(sf)
    assert r["icc2_1_ci_low"] == pytest.approx(0.019, abs=5e-4) and r["icc2_1_ci_high"] == pytest.approx(0.761, abs=5e-4)
    assert r["icc3_1_ci_low"] == pytest.approx(0.342, abs=5e-4) and r["icc3_1_ci_high"] == pytest.approx(0.946, abs=5e-4)


# --- 2. side by side on the targets ctscore and every reader scored ---------------------------------

def test_side_by_side_compares_on_common_targets():
    a, b = {"s1": 5, "s2": 8, "s3": 12, "s4": 2}, {"s1": 5, "s2": 8, "s3": 12, "s4": 20}
    ref, pred = [], []
    for s in a:
        ref += [{"scan_id": s, "system": "six_zone", "unit": "total", "reader": "alice", "value": float(a[s])},
                {"scan_id": s, "system": "six_zone", "unit": "total", "reader": "bob", "value": float(b[s])}]
        # ctscore has no value for s4, the scan the readers disagree on
        pred.append({"scan_id": s, "system": "six_zone", "unit": "total", "value": np.nan if s == "s4" else a[s] + 3.0})
    side = validate_frames(pd.DataFrame(ref), pd.DataFrame(pred))["side_by_side"].iloc[0]
    assert side["n"] == 3 and side["n_scans"] == 3 and side["n_without_ctscore"] == 1
    assert side["readers_mae"] == 0 and side["ctscore_vs_readers_mae"] == 3
    assert side["within_readers_mae"] == "no" and side["within_readers_icc"] == "no"
    side = validate_frames(pd.DataFrame(ref), pd.DataFrame(pred), min_n=4)["side_by_side"].iloc[0]
    assert side["within_readers_mae"] == "" and "3 target(s) scored by ctscore and every reader" in side["note"]


# --- 3. rows left out, nothing left, failed scans named by patient + date ---------------------------

def test_rows_left_out_are_counted_and_nothing_left_is_an_error(small_cohort, tmp_path):
    pred, _, rows = small_cohort
    df = pd.DataFrame(rows)
    df.loc[:9, "series_uid"] = "9.9.9"
    df.to_csv(tmp_path / "some.csv", index=False)
    t = run_validation(pred, tmp_path / "some.csv", on_unmatched="warn", draw=False)
    summary = dict(t["data_summary"].values.tolist())
    assert summary["reference rows left out (no matching scan)"] == "10"
    assert summary["reference rows"] == str(len(df) - 10)
    df["series_uid"] = "9.9.9"
    df.to_csv(tmp_path / "none.csv", index=False)
    with pytest.raises(CTScoreError) as e:
        run_validation(pred, tmp_path / "none.csv", on_unmatched="warn", draw=False)
    assert e.value.code == "REFERENCE_NO_MATCH" and "nothing to compare" in e.value.message


def test_one_reader_summary_says_so(small_cohort, tmp_path):
    pred, _, rows = small_cohort
    pd.DataFrame([r for r in rows if r["reader"] == "alice"]).to_csv(tmp_path / "one.csv", index=False)
    summary = dict(run_validation(pred, tmp_path / "one.csv", draw=False)["data_summary"].values.tolist())
    assert summary["consensus"] == "not formed (1 reader)"


def test_failed_scan_without_patient_and_date_gets_a_hint(tmp_path):
    scans = pd.DataFrame({"scan_id": ["scan-a", "scan-f"], "patient_id": ["P1", None], "study_date": ["20200201", None],
                          "series_uid": ["1.2.3.1", "1.2.3.9"], "status": ["ok", "failed"]})
    p = tmp_path / "r.csv"
    p.write_text("patient_id,study_date,system,unit,reader,value\nP2,20200301,six_zone,total,R1,4\n")
    with pytest.raises(CTScoreError) as e:
        load_reference(p, scans)
    assert e.value.code == "REFERENCE_NO_MATCH"
    assert "1 failed scan(s) in scans.csv lack patient_id or study_date" in e.value.message
    assert "series_uid" in e.value.message.split("lack")[1]


# --- 4. max_confusion_categories reaches the CSV; options checked first; the CLI flag --------------

def test_max_confusion_categories_reaches_the_csv(small_cohort):
    pred, ref, _ = small_cohort
    cm = run_validation(pred, ref, systems=["zhang900", "mosmed"], draw=False, max_confusion_categories=100)[
        "confusion_matrices"]
    assert ("zhang900", "all_units") in set(zip(cm.system, cm.unit))  # 91 categories per unit
    cm = run_validation(pred, ref, systems=["mosmed"], draw=False, max_confusion_categories=4)["confusion_matrices"]
    assert cm.empty  # MosMed has 5 categories


@pytest.mark.parametrize("option", [{"max_confusion_categories": "many"}, {"min_n": "3x"}, {"min_n": 1},
                                    {"max_confusion_categories": True}, {"draw": "no"},
                                    {"on_unmatched": "ignore"}, {"systems": ["brixia"]}])
def test_bad_options_stop_before_anything_is_written(small_cohort, tmp_path, option):
    pred, ref, _ = small_cohort
    out = tmp_path / "VAL"
    with pytest.raises(CTScoreError) as e:
        run_validation(pred, ref, out, **option)
    assert e.value.code == "BAD_OPTION" and not out.exists()


def test_cli_and_api_share_options_and_defaults(small_cohort, tmp_path):
    args = build_parser().parse_args(["validate", "--pred", "P", "--reference", "R", "-o", "O"])
    defaults = api.DEFAULTS
    assert args.max_confusion_categories == defaults["max_confusion_categories"]
    assert args.min_n == defaults["min_n"] and args.on_unmatched == defaults["on_unmatched"]
    assert (not args.no_figures) == defaults["draw"]
    pred, ref, _ = small_cohort
    out = tmp_path / "V"
    assert main(["validate", "--pred", str(pred), "--reference", str(ref), "-o", str(out), "--systems", "mosmed",
                 "--max-confusion-categories", "4", "-q"]) == 0
    assert pd.read_csv(out / "confusion_matrices.csv").empty and not list(out.glob("confusion_*.png"))


# --- 5. atomic writes; stale pictures removed --------------------------------------------------------

def test_html_and_pictures_are_written_atomically_and_stale_pictures_go(small_cohort, tmp_path, monkeypatch):
    import pipeline.outputs

    pred, ref, _ = small_cohort
    out = tmp_path / "VAL"
    out.mkdir()
    stale = [out / "bland_altman_lobar_total.png", out / "confusion_zhang900_total.png"]
    kept = [out / "bland_altman_notes.png", out / "my_figure.png", out / "confusion_six_zone_total.png.bak"]
    for p in stale + kept:
        p.write_bytes(b"old")
    written: list[str] = []
    real = pipeline.outputs.atomic_write_bytes

    def spy(path: Path, data: bytes) -> None:
        written.append(Path(path).name)
        real(path, data)

    monkeypatch.setattr(pipeline.outputs, "atomic_write_bytes", spy)
    run_validation(pred, ref, out, systems=["mosmed"])
    assert "summary.html" in written and "confusion_mosmed_total.png" in written
    assert "bland_altman_mosmed_total.png" in written
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# --- 6. unreadable reference files -------------------------------------------------------------------

@pytest.mark.parametrize("content, words", [
    (b"", "empty"),
    ("series_uid,system,unit,reader,value\n1.2,six_zone,total,J\xfcrgen,3\n".encode("latin-1"),
     "not UTF-8 text (byte 0xfc on line 2)"),
    (b'scan_id,system,unit,reader,value\nscan-a,six_zone,total,R1,3\nscan-a,six_zone,"total,R2,4\n',
     "not a readable CSV"),
])
def test_unreadable_reference_is_a_schema_error(tmp_path, content, words):
    p = tmp_path / "r.csv"
    p.write_bytes(content)
    with pytest.raises(CTScoreError) as e:
        load_reference(p, pd.DataFrame({"scan_id": ["scan-a"], "patient_id": ["P"], "study_date": ["20200101"],
                                        "series_uid": ["1.2"], "status": ["ok"]}))
    assert e.value.code == "REFERENCE_SCHEMA" and words in e.value.message and e.value.path == str(p)


def test_utf8_with_byte_order_mark_is_read(tmp_path):
    p = tmp_path / "r.csv"
    p.write_bytes("\ufeffscan_id,system,unit,reader,value\nscan-a,six_zone,total,Jürgen,3\n".encode("utf-8"))
    ref = load_reference(p, pd.DataFrame({"scan_id": ["scan-a"], "patient_id": ["P"], "study_date": ["20200101"],
                                          "series_uid": ["1.2"], "status": ["ok"]}))
    assert ref["reader"].tolist() == ["Jürgen"]


# --- 7. the note gives the actual reason -------------------------------------------------------------

def test_note_for_two_targets_is_too_few_not_no_variation():
    row = metrics.agreement([1, 3], [2, 4], ordinal=True, labels=range(5), min_n=2)
    assert "no variation" not in row["note"]
    assert "ICC not computed: 2 target(s)" in row["note"] and "rho not computed" in row["note"]


def test_note_for_constant_raters_and_undefined_ci():
    row = metrics.agreement([1, 1, 1, 1], [2, 2, 2, 2], ordinal=True, labels=range(5))
    assert np.isnan(row["icc2_1_ci_low"]) and np.isnan(row["icc3_1"]) and np.isnan(row["spearman_rho"])
    assert "ICC(2,1) CI undefined" in row["note"] and "ICC(3,1) undefined" in row["note"]
    assert "rho undefined: both raters" in row["note"]
    row = metrics.agreement([1, 1, 1, 1], [0, 1, 2, 3], ordinal=True, labels=range(5))
    assert "rho undefined: rater_a gives every target the same value" in row["note"]
    assert "ICC" not in row["note"]  # both ICCs and their CIs are defined here


# --- 8. the consensus panel is drawn with many readers -----------------------------------------------

def test_consensus_panel_comes_first_with_six_readers():
    readers = [f"r{i}" for i in range(6)]
    wide = pd.DataFrame(columns=["scan_id", "system", "unit", "ctscore", *readers, "consensus"])
    pairs = figures._pairs(wide, readers)
    assert len(pairs) == figures.MAX_PANELS and pairs[0] == ("ctscore_vs_consensus", "ctscore", "consensus")


# --- 9. reader names cannot collide with internal columns --------------------------------------------

def test_readers_named_like_sort_keys(caplog):
    caplog.set_level(logging.ERROR)
    ref = [{"scan_id": f"s{i}", "system": "six_zone", "unit": "total", "reader": r, "value": float(i + j)}
           for i in range(4) for j, r in enumerate(("_s", "_u"))]
    pred = [{"scan_id": f"s{i}", "system": "six_zone", "unit": "total", "value": float(i)} for i in range(4)]
    wide, readers = compare.ratings_table(pd.DataFrame(ref), pd.DataFrame(pred))
    assert readers == ["_s", "_u"] and wide["_u"].tolist() == [1.0, 2.0, 3.0, 4.0]


# --- 10. make_reference: scan_id only when the truth names no series ---------------------------------

def test_scan_id_names_only_a_truth_without_series_uid():
    truth = {"series": [{"series_uid": "1.2.3", "scores": {"six_zone_total": 4}},
                        {"scores": {"six_zone_total": 5}}]}
    ref = make_reference(truth, n_simulated=0, scan_id="scan-x")
    assert ref[["series_uid", "scan_id"]].values.tolist() == [["1.2.3", ""], ["", "scan-x"]]


def test_two_truths_without_series_uid_are_refused_not_pooled_under_one_scan_id():
    truth = [{"scores": {"six_zone_total": 4}}, {"scores": {"six_zone_total": 5}}]
    with pytest.raises(CTScoreError, match="2 ground-truth entries name no series_uid"):
        make_reference(truth, n_simulated=0, scan_id="scan-x")


def test_a_six_zone_confusion_picture_has_its_counts_and_a_colour_bar(tmp_path, monkeypatch):
    """A scale of more than 10 categories (the 0-24 six-zone total) was drawn as shades alone: no count in any cell
    and no colour bar saying what a shade means."""
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or path)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 25, 40)
    g = pd.DataFrame({"alice": a, "bob": np.clip(a + rng.integers(-1, 2, 40), 0, 24)})
    assert figures.confusion_png(g, [("r", "alice", "bob")], list(range(25)), "six_zone total", tmp_path / "c.png")
    [fig] = drawn
    panel, bar = fig.axes  # the heat map and its colour bar
    cm = metrics.confusion(g["alice"].to_numpy(), g["bob"].to_numpy(), list(range(25))).to_numpy()
    assert sorted(int(t.get_text()) for t in panel.texts) == sorted(cm[cm > 0].tolist())
    assert bar.get_ylim()[1] >= cm.max()
