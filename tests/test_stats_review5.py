"""Statistics module, fifth review: units, categories and ids that the inputs spell in more than one way.

Each test failed before its fix. One analyte name in two units (a blood count export names both the count and the
percentage 'Neutrophils') was averaged into one value (neutrophil_count 32.5 from 3.55 x 10^9/L and 61.4 %, so NLR
was wrong), and CRP in mg/dL was averaged with CRP in mg/L, each with a console warning only ("values are used as
given"); 'mg/l', 'x10^9/L', 'U/l', 'pg/ml' were warned about as other units. A categorical column named in zhang2020's
``categorical`` option was split by case and spaces ('yes', 'Yes', 'YES ') and an empty cell was a category, which
changed the test (chi-square -> Fisher-Freeman-Halton) and n. Lab patient ids were matched strictly while scans
recover lost leading zeros: clinical '001' with labs '1' lost every lab value with a note naming no id, ids differing
only by case likewise, and a lab table that matched no patient ran on without its labs. The error when no scan
matches always suggested a 'scores_patient_id' column, also when that column was there in upper case or the ids
were '1.0' vs '001'.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import CTScoreError
from scoring.stats import binning, schema, zhang2020
from scoring.stats.api import run_stats
from scoring.stats.cohort import build_cohort, load_cohort
from scoring.stats.simulate import write_cohort
from tests.test_stats_review2 import _clin, _scans


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict[str, Path]:
    return write_cohort(tmp_path_factory.mktemp("small5"), seed=3, n_survivors=20, n_nonsurvivors=6)


def _text(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _notes(cohort) -> list[str]:
    return cohort.data_summary().query("item == 'note'")["value"].tolist()


# ---- 1. units: one analyte name in two units is never averaged --------------------------------------------------

def _blood_count_export(labs: pd.DataFrame) -> tuple[pd.DataFrame, str, str, float, float]:
    """The lab table with the first patient-day's neutrophil count renamed 'Neutrophils' and a 'Neutrophils' row in
    % added next to it (a blood count export names both so)."""
    i = labs.index[labs["analyte"] == "neutrophil_count"][0]
    pid, day = labs.loc[i, "patient_id"], labs.loc[i, "date"]
    lym = float(labs[(labs["patient_id"] == pid) & (labs["date"] == day)
                     & (labs["analyte"] == "lymphocyte_count")]["value"].iloc[0])
    labs = labs.copy()
    labs.loc[i, "analyte"] = "Neutrophils"
    pct = labs.loc[[i]].assign(value="61.41", unit="%")
    out = pd.concat([labs.loc[:i], pct, labs.loc[i + 1:]], ignore_index=True)
    return out, pid, day, float(labs.loc[i, "value"]), lym


def test_a_count_and_its_percentage_under_one_name_are_not_averaged(small, tmp_path):
    labs, pid, day, count, lym = _blood_count_export(_text(small["labs"]))
    labs.to_csv(tmp_path / "labs.csv", index=False)
    co = load_cohort(small["scores"], small["clinical"], tmp_path / "labs.csv")
    w = co.labs[(co.labs["patient_id"] == pid) & (co.labs["date"] == pd.Timestamp(day))].iloc[0]
    assert w["neutrophil_count"] == pytest.approx(count)  # was (count + 61.41) / 2
    assert w["nlr"] == pytest.approx(count / lym)
    assert 61.41 in set(schema.read_labs(tmp_path / "labs.csv").query("analyte == 'neutrophil_pct'")["value"])
    note = [n for n in _notes(co) if "'Neutrophils'" in n]
    assert len(note) == 1 and "taken as neutrophil_pct" in note[0] and "labs.csv" in note[0]


def test_a_value_in_another_unit_is_left_out_with_a_note_that_reaches_the_outputs(small, tmp_path):
    labs = _text(small["labs"])
    crp = labs.index[labs["analyte"] == "crp"][:4]
    labs.loc[crp, "value"] = (labs.loc[crp, "value"].astype(float) / 10).map(str)
    labs.loc[crp, "unit"] = "mg/dL"
    labs.to_csv(tmp_path / "labs.csv", index=False)
    out = tmp_path / "stats"
    run_stats(small["scores"], small["clinical"], tmp_path / "labs.csv", study="li2020", out_dir=out)
    summary = _text(out / "data_summary.csv")
    note = [n for n in summary.loc[summary["item"] == "note", "value"] if "mg/dL" in n]
    assert len(note) == 1, summary  # was a console warning only, and the values averaged with those in mg/L
    assert note[0].startswith("lab table: 4 value(s) of crp in unit(s) 'mg/dL'")
    assert "expected 'mg/L'" in note[0] and f"line {crp[0] + 2} of labs.csv" in note[0] and "left out" in note[0]
    assert f"<td>{note[0]}</td>" in (out / "summary.html").read_text()
    kept = schema.read_labs(tmp_path / "labs.csv")
    assert len(kept) == len(labs) - 4 and (kept["unit"] == "mg/dL").sum() == 0


def test_equivalent_unit_spellings_are_one_unit(small, tmp_path, caplog):
    labs = _text(small["labs"])
    labs["unit"] = labs["unit"].map({"mg/L": "mg/l", "10^9/L": "x10^9/L", "U/L": "U/l", "pg/mL": "pg/ml",
                                     "ng/mL": "µg/L", "mg/L FEU": "mg/L (FEU)", "mm/h": "mm/hr"}).fillna(labs["unit"])
    labs.to_csv(tmp_path / "labs.csv", index=False)
    with caplog.at_level(logging.WARNING):
        kept = schema.read_labs(tmp_path / "labs.csv")
    assert len(kept) == len(labs)
    assert [n for n in kept.attrs["notes"] if "none of those the studies use" not in n] == []  # potassium's
    assert not [r for r in caplog.records if "unit" in r.getMessage()]  # was "in unit(s) ['mg/l'], expected mg/L"


def test_a_frame_with_two_units_of_one_analyte_is_refused_not_averaged():
    clin = _clin(patient_id=["A"])
    labs = pd.DataFrame({"patient_id": ["A", "A"], "date": pd.to_datetime(["2020-02-01"] * 2),
                         "analyte": ["crp", "crp"], "value": [20.0, 2.0], "unit": ["mg/L", "mg/dL"]})
    with pytest.raises(CTScoreError, match="'crp' has values in more than one unit") as e:
        build_cohort(_scans(["A"]), None, clin, labs)
    assert e.value.code == "BAD_LAB_DATA"
    # spellings of one unit are one unit
    w = binning.labs_wide(labs.assign(unit=["mg/L", "mg/l"]))
    assert w["crp"].iloc[0] == 11.0


# ---- 2. categories of a user column: case, spaces and empty cells ------------------------------------------------

def test_categories_ignore_case_and_spaces_and_empty_cells_are_missing():
    sub = ["0-100"] * 6 + ["101-200"] * 6 + [">200"] * 6
    clean = ["yes", "no"] * 9
    messy = ["yes", "No", "Yes", "no ", "YES ", "NO", " yes", "no", "yes", "No", "yes", "no", "yes", "no", "Yes",
             "no", "yes", "no"]
    adm = pd.DataFrame({"subgroup": sub, "clean": clean, "messy": messy,
                        "gaps": [v if i not in (0, 3) else "" for i, v in enumerate(clean)]})
    t = zhang2020.subgroup_categorical(adm, ["clean", "messy", "gaps"]).set_index("variable")
    assert t.loc["messy", "test"] == t.loc["clean", "test"]  # was Fisher-Freeman-Halton on 2 x 6 categories
    assert t.loc["messy", "p_value"] == pytest.approx(t.loc["clean", "p_value"])
    counts = "counts (0-100/101-200/>200)"
    assert t.loc["messy", counts] == t.loc["clean", counts] == "no: 3/3/3; yes: 3/3/3"
    assert "counted as 'yes'" in t.loc["messy", "note"] and "'YES '" in t.loc["messy", "note"]
    assert t.loc["gaps", "n"] == 16 and t.loc["gaps", counts] == "no: 2/3/3; yes: 2/3/3"  # '' was a category, n 18
    assert "2 patient(s) without a gaps value" in t.loc["gaps", "note"]


def test_zhang2020_categorical_option_on_a_messy_column_matches_the_clean_one(small, tmp_path):
    clin = _text(small["clinical"])
    rng = np.random.default_rng(5)
    clean = np.where(rng.random(len(clin)) < 0.5, "yes", "no")
    spell = {"yes": ["yes", "Yes", "yes", "YES "], "no": ["no", "No", "no", " NO"]}  # the most common: lower case
    nth = pd.Series(clean).groupby(clean).cumcount()
    for name, col in (("clean", clean), ("messy", [spell[v][k % 4] for v, k in zip(clean, nth, strict=True)])):
        clin.assign(hypertension=col).to_csv(tmp_path / f"{name}.csv", index=False)
    t = {n: run_stats(small["scores"], tmp_path / f"{n}.csv", None, study="zhang2020",
                      zhang2020={"categorical": ["hypertension"]})["zhang2020_subgroup_categorical"].iloc[0]
         for n in ("clean", "messy")}
    for k in ("n", "test", "counts (0-100/101-200/>200)"):
        assert t["messy"][k] == t["clean"][k], k
    assert [t["messy"]["statistic"], t["messy"]["p_value"]] == pytest.approx([t["clean"]["statistic"],
                                                                              t["clean"]["p_value"]])


# ---- 3. lab ids matched as scan ids are --------------------------------------------------------------------------

def _labs(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"patient_id": ids, "date": ["2020-02-01"] * len(ids), "analyte": ["crp"] * len(ids),
                         "value": [str(5 + i) for i in range(len(ids))], "unit": ["mg/L"] * len(ids)})


def test_lab_ids_that_lost_their_leading_zeros_match_as_scans_do():
    clin = _clin(patient_id=["001", "002", "003"])
    co = build_cohort(_scans(["001", "002", "003"]), None, clin, schema.validate_labs(_labs(["1", "2", "3"])))
    assert co.analytes == ["crp"] and set(co.labs["patient_id"]) == {"001", "002", "003"}  # every value was lost
    assert co.scans.set_index("scan_id")["crp"].dropna().to_dict() == {"s0": 5.0}  # the scan of the labs' day
    note = [n for n in co.notes if n.startswith("3 lab value(s) of 3 patient(s) matched on their number")]
    assert note and "'1' = '001'" in note[0]


def test_lab_ids_that_differ_only_by_case_are_named_in_the_note():
    clin = _clin(patient_id=["SIM001", "SIM002", "SIM005"])
    co = build_cohort(_scans(["SIM001", "SIM002", "SIM005"]), None, clin,
                      schema.validate_labs(_labs(["SIM001", "SIM002", "sim005", "sim005"])))
    note = [n for n in co.notes if "not in the clinical table were left out" in n]
    assert note == ["2 lab value(s) of 1 patient(s) not in the clinical table were left out (e.g. 'sim005'); 1 lab "
                    "id(s) differ only by case from one of the clinical 'patient_id' (e.g. 'sim005' vs 'SIM005'): "
                    "write them as the clinical table does to use them"]


def test_a_lab_table_that_matches_no_patient_is_refused_naming_both_sides(tmp_path):
    clin = _clin(patient_id=["1.0", "2.0", "3.0"])
    _labs(["001", "002", "003"]).to_csv(tmp_path / "labs.csv", index=False)
    with pytest.raises(CTScoreError) as e:  # ran on without any lab, with a note naming no id
        build_cohort(_scans(["1.0", "2.0"]), None, clin, schema.read_labs(tmp_path / "labs.csv"))
    msg = e.value.message
    assert e.value.code == "BAD_LAB_DATA" and str(e.value).endswith("labs.csv]")
    assert "labs e.g. '001', '002', '003'; clinical e.g. '1.0', '2.0', '3.0'" in msg
    assert "only by a '.0' suffix" in msg and "leading zeros" in msg and "'001' vs '1.0'" in msg


# ---- 4. no scan matches: examples of both sides and the likely cause ---------------------------------------------

def test_no_scan_match_names_an_upper_case_scores_patient_id_column(small):
    clin = _text(small["clinical"]).rename(columns={"scores_patient_id": "SCORES_PATIENT_ID"})
    scans = _text(small["scans"])
    with pytest.raises(CTScoreError) as e:
        run_stats(small["scores"], clin, None, study="zhang2020")
    msg = e.value.message
    assert f"scans.csv e.g. {scans['patient_id'].iloc[0]!r}" in msg and "'patient_id' e.g. 'SIM001'" in msg
    assert "the scans' ids are in column 'SCORES_PATIENT_ID'" in msg and "case-sensitive" in msg
    assert "pseudonymous ids need" not in msg  # the suggestion of a column that is there


@pytest.mark.parametrize(("scan_ids", "clin_ids", "cause", "pair"), [
    (["001", "002"], ["1.0", "2.0"], "only by a '.0' suffix (a spreadsheet's number format) and leading zeros",
     "'001' vs '1.0'"),
    (["pt-7009cfa722", "pt-970126daf2"], ["PT-7009CFA722", "PT-970126DAF2"], "only by case",
     "'pt-7009cfa722' vs 'PT-7009CFA722'"),
])
def test_no_scan_match_names_ids_that_differ_only_by_case_or_a_spreadsheet_number_format(scan_ids, clin_ids, cause,
                                                                                      pair):
    clin = _clin(patient_id=["A", "B"], scores_patient_id=clin_ids)
    with pytest.raises(CTScoreError) as e:
        build_cohort(_scans(scan_ids), None, clin, None)
    msg = e.value.message
    assert e.value.code == "BAD_CLINICAL_DATA"
    assert f"scans.csv e.g. {scan_ids[0]!r}, {scan_ids[1]!r}" in msg and f"e.g. {clin_ids[0]!r}" in msg
    assert cause in msg and pair in msg and "pseudonymous ids need" not in msg
