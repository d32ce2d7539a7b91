"""Fixes of a review of the 0.5.0 changes: 'no contrast' words that hid IV contrast named later in the value, more
'no contrast' values, and ``ctscore stats`` refusing a scores table with one undated scan (STUDY_DATE_UNREADABLE
promises the scan is left out)."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.errors import CTScoreError
from pipeline.hu_checks import has_contrast


@pytest.mark.parametrize("value", [
    "W/O ORAL W/ IV", "WO ORAL, IV", "not given orally; IV contrast", "non con chest, IV for abdomen",
    "No oral, IV Omnipaque", "NON-IONIC CONTRAST", "Non ionic contrast", "NON-IONIC CONTRAST, 100 ML", "IV", "C+",
    "Omnipaque 350", "50 ml iv", "oral only",
    # (a second review) agents after a negation of another route; oral contrast counts, as designed
    "NO ORAL CONTRAST, IV 80ML", "Oral: none, IV: Omnipaque", "ohne KM, mit KM i.v.", "w/ contrast", "oral and iv",
    "w/o iv w/oral",
])
def test_contrast_given(value):
    assert has_contrast(value)


@pytest.mark.parametrize("value", [
    "WO ORAL", "C-", "not applicable", "N.A.", "n.a", "pre-contrast", "PRECONTRAST", "CONTRAST NOT GIVEN",
    "CONTRAST: NONE", "IV: none", "unknown contrast", "Not Specified", "nothing", "No IV contrast",
    "NON CON CHEST, ABDOMEN", "NO CONTRAST, NO IV", "W/O", "NON CON", "0 ml", "UNKNOWN", "?",
    # (a second review) several routes before the negation, nothing, not known; a later statement of no agent
    "IV CONTRAST: NOT GIVEN", "IV CONTRAST NOT ADMINISTERED", "contrast not applicable", "IV: 0", "iv: 0 ml",
    "IV - 0", "IV: N", "IV: -", "IV: unknown", "contrast: unknown", "contrast?", "no contrast, iv line in situ",
    "NONE, 10 ML SALINE FLUSH", "no contrast; 100 ml saline", "Nil by IV, oral water", "oral: water, iv: none",
    "ORAL: NEGATIVE, IV: NONE", "W/OUT CONTRAST",
])
def test_no_contrast(value):
    assert not has_contrast(value)


def _scans(dates):
    return pd.DataFrame({"scan_id": [f"s{i}" for i in range(len(dates))], "patient_id": ["p1"] * len(dates),
                         "study_date": dates, "status": ["ok"] * len(dates),
                         "six_zone_total": ["3"] * len(dates), "zhang900_total": ["40"] * len(dates)})


def test_an_undated_scan_is_left_out_with_a_note_not_the_whole_table(caplog):
    from scoring.stats.schema import validate_scans

    out = validate_scans(_scans(["20200405", "", "20200410"]))
    assert out["scan_id"].tolist() == ["s0", "s2"]
    assert any("1 scored scan(s) without a study_date left out (line(s) 3" in n for n in out.attrs["notes"])
    assert any("without a study_date" in r.getMessage() for r in caplog.records)
    # every scan undated: nothing to analyse, refused naming the column
    with pytest.raises(CTScoreError, match="study_date"):
        validate_scans(_scans(["", ""]))


def test_the_note_reaches_the_cohort(tmp_path):
    from scoring.stats.cohort import load_cohort
    from tests.scripts_loader import load_script

    load_script("simulate_cohort").main(["-o", str(tmp_path / "sim"), "--seed", "0"])
    path = tmp_path / "sim" / "scores" / "scans.csv"
    scans = pd.read_csv(path, dtype=str, keep_default_na=False)
    scans.loc[0, "study_date"] = ""
    scans.to_csv(path, index=False)
    cohort = load_cohort(tmp_path / "sim" / "scores", tmp_path / "sim" / "clinical.csv", tmp_path / "sim" / "labs.csv")
    assert any("without a study_date left out" in n for n in cohort.notes)
    assert scans.loc[0, "scan_id"] not in set(cohort.scans["scan_id"])


def test_an_airway_not_found_is_flagged_with_its_volume(sample_classical, classical_memo):
    """An ICU audit: an endotracheal tube left 0.5 mL of airway, and the carina estimated 25 mm high was flagged
    LANDMARK_ESTIMATED with no cause. AIRWAY_NOT_FOUND:<mL> says why; the sample's airway is not flagged."""
    import numpy as np

    from pipeline.run import AIRWAY_MIN_ML, analyse_volume

    img, cfg, seg = sample_classical
    base = analyse_volume(img, cfg, seg)
    assert not any(f.startswith("AIRWAY_NOT_FOUND") for f in base["flags"])

    class NoAirway:  # the same segmentation with the airway (but a few voxels) lost, as behind a tube
        name = seg.name

        def segment(self, hu, spacing):
            s = seg.segment(hu, spacing)
            keep = np.zeros(s.airway.shape, bool)
            keep[tuple(i[:10] for i in np.nonzero(s.airway))] = True
            s.airway = keep
            return s

    res = analyse_volume(img, cfg, NoAirway())
    flag = [f for f in res["flags"] if f.startswith("AIRWAY_NOT_FOUND:")]
    assert len(flag) == 1 and float(flag[0].split(":")[1]) < AIRWAY_MIN_ML


def test_a_thin_wire_is_metal_on_the_cts_own_grid(sample_classical):
    """An ICU audit: a 1 mm lead at 3000 HU averaged below 2500 HU on the 1.5 mm working grid and was not flagged."""
    import numpy as np
    import SimpleITK as sitk

    from pipeline.hu_checks import flags_for
    from pipeline.run import analyse_volume

    img, cfg, seg = sample_classical
    hu = sitk.GetArrayFromImage(img).astype(np.float32)
    sp = img.GetSpacing()
    body = np.nonzero(hu[hu.shape[0] // 2] > -300)
    y0, x0 = int(body[0].min()) + 3, int(np.median(body[1]))  # just inside the front of the chest wall
    wire = np.zeros(hu.shape, bool)
    wire[:, y0, x0:x0 + max(1, round(1.0 / sp[0]))] = True  # 1 mm wide, one pixel deep, along the whole scan
    assert wire.sum() * np.prod(sp) / 1000 >= 0.1
    hu[wire] = 3000.0
    im = sitk.GetImageFromArray(hu)
    im.CopyInformation(img)
    res = analyse_volume(im, cfg, seg)
    assert res["hu_check"]["metal_ml"] >= 0.1
    assert any(f.startswith("METAL:") for f in flags_for(res["hu_check"]))


def test_noise_does_not_make_a_non_contrast_scan_contrast_suspected():
    """scripts/measurement_conditions.py on the sample with noise SD 80: mediastinum_hu 75.4 (its blood is 40 HU) at
    noise_hu 36.8 was flagged CONTRAST_SUSPECTED; the limit now rises with the noise beyond that of real scans."""
    from pipeline.hu_checks import CONTRAST_SUSPECTED_HU, contrast_limit, flags_for

    assert contrast_limit({"noise_hu": 10.0}) == CONTRAST_SUSPECTED_HU
    assert flags_for({"mediastinum_hu": 75.4, "noise_hu": 36.8}) == ["NOISY:37"]
    assert flags_for({"mediastinum_hu": 84.0, "noise_hu": 10.0}) == ["CONTRAST_SUSPECTED:84"]  # enhanced, 150 HU blood
    assert flags_for({"mediastinum_hu": 200.0, "noise_hu": 60.0})[0] == "CONTRAST_SUSPECTED:200"


def test_the_measurement_conditions_script_reproduces_the_figures_on_the_sample(capsys, classical_memo):
    from tests.scripts_loader import load_script

    sample = __import__("pathlib").Path(__file__).parents[1] / "sample_dicoms"
    if not (sample / "ground_truth.json").is_file():
        pytest.skip("sample_dicoms/ missing (run scripts/make_sample_dicoms.py)")
    assert load_script("measurement_conditions").main([str(sample), "--noise", "0", "80"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[1:]]
    assert len(rows) == 2 and rows[0][-1] == "-"  # as recorded: no flag
    col = lines[0].split().index("airway_air_hu")
    assert -1010 < float(rows[0][col]) < -990  # the sample's trachea holds air at -1000 HU with noise
    assert float(rows[0][2]) < 20 and float(rows[1][2]) > 35  # noise_hu
    assert rows[1][-1] == "NOISY:37"  # noisy, and not CONTRAST_SUSPECTED
