"""``ctscore stats`` usability: a missing or misspelt clinical column is refused with a clear BAD_CLINICAL_DATA (never a
KeyError), misspelt optional columns and ``--normal-labs`` names are warned about in ``data_summary``, the id-column
errors name the file, and the clinical schema says how to get the pseudonymous ids of one's own patients."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.errors import CTScoreError
from scoring.stats import li2020
from scoring.stats.api import run_stats
from scoring.stats.cohort import load_cohort
from scoring.stats.simulate import write_cohort

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict[str, Path]:
    return write_cohort(tmp_path_factory.mktemp("usability"), seed=5, n_survivors=6, n_nonsurvivors=3)


def _clinical(cohort: dict[str, Path], tmp_path: Path, **renames: str) -> Path:
    """The cohort's clinical.csv with columns renamed (a misspelling) or dropped (renamed to '')."""
    clin = pd.read_csv(cohort["clinical"], dtype=str, keep_default_na=False)
    clin = clin.drop(columns=[c for c, new in renames.items() if not new])
    clin = clin.rename(columns={c: new for c, new in renames.items() if new})
    path = tmp_path / "clinical.csv"
    clin.to_csv(path, index=False)
    return path


def _notes(tables: dict[str, pd.DataFrame]) -> list[str]:
    return tables["data_summary"].query("item == 'note'")["value"].tolist()


@pytest.mark.parametrize("study", ["all", "li2020"])
def test_misspelt_outcome_is_refused_naming_column_study_columns_and_file(cohort, tmp_path, capsys, study):
    clinical = _clinical(cohort, tmp_path, outcome="outcom")
    out = tmp_path / "o"
    rc = main(["stats", "--scores", str(cohort["scores"]), "--clinical", str(clinical), "--labs", str(cohort["labs"]),
               "--study", study, "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "KeyError" not in err
    assert "BAD_CLINICAL_DATA" in err and "li2020 needs column 'outcome'" in err
    assert "'outcom' looks like a misspelling of 'outcome'" in err and "found [" in err
    assert err.rstrip().endswith(f"[{clinical}]")
    assert not out.exists()  # refused before the output folder is made
    with pytest.raises(CTScoreError) as exc:  # the Python API: the same error, not a bare KeyError
        run_stats(cohort["scores"], clinical, cohort["labs"], study=study)
    assert exc.value.code == "BAD_CLINICAL_DATA" and exc.value.path == str(clinical)


def test_without_outcome_liao2021_and_zhang2020_still_run(cohort, tmp_path):
    clinical = _clinical(cohort, tmp_path, outcome="")
    t = run_stats(cohort["scores"], clinical, cohort["labs"], study="zhang2020")
    cat = t["zhang2020_subgroup_categorical"].set_index("variable")
    assert cat.loc["outcome", "note"] == "not in the data"
    co = load_cohort(cohort["scores"], clinical, cohort["labs"])  # li2020 called directly: a note, not a KeyError
    tables, figures = li2020.run(co)
    assert "needs 'outcome'" in tables["li2020_period_comparison"]["note"].iloc[0] and not figures


def test_misspelt_optional_columns_are_warned_about_and_kept(cohort, tmp_path, caplog):
    clinical = _clinical(cohort, tmp_path, onset_date="onset_dat", admission_date="admision_date")
    clin = pd.read_csv(clinical, dtype=str)
    clin["ward"] = "A"  # an extra column that matches no schema column: kept without a word
    clin.to_csv(clinical, index=False)
    with caplog.at_level(logging.WARNING):
        # onset_dat and admision_date: neither date column is there, which is refused, with the hint
        with pytest.raises(CTScoreError) as exc:
            run_stats(cohort["scores"], clinical, cohort["labs"], study="liao2021")
    assert "'onset_dat' looks like a misspelling of 'onset_date'" in str(exc.value)
    assert "'admision_date' looks like a misspelling of 'admission_date'" in str(exc.value)
    clin = clin.rename(columns={"admision_date": "admission_date"})
    clin.to_csv(clinical, index=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        t = run_stats(cohort["scores"], clinical, cohort["labs"], study="liao2021")
    notes = _notes(t)
    assert any("'onset_dat'" in n and "did you mean 'onset_date'" in n for n in notes), notes
    assert any("no 'onset_date' column" in n for n in notes)
    assert not any("ward" in n for n in notes)
    assert "did you mean 'onset_date'" in caplog.text
    co = load_cohort(cohort["scores"], clinical, cohort["labs"])
    assert {"onset_dat", "ward"} <= set(co.clinical.columns)


def test_misspelt_admission_date_and_unit_are_noted(cohort, tmp_path):
    clinical = _clinical(cohort, tmp_path, admission_date="admision_date")
    labs = pd.read_csv(cohort["labs"], dtype=str, keep_default_na=False)
    if "unit" not in labs.columns:
        labs["unit"] = ""
    labs = labs.rename(columns={"unit": "units"})
    labs.to_csv(tmp_path / "labs.csv", index=False)
    co = load_cohort(cohort["scores"], clinical, tmp_path / "labs.csv")
    notes = co.data_summary().query("item == 'note'")["value"].tolist()
    assert any("clinical table: column 'admision_date'" in n and "'admission_date'" in n for n in notes), notes
    assert any("lab table: column 'units'" in n and "did you mean 'unit'" in n for n in notes), notes


def test_normal_labs_typo_is_noted_with_the_labs_available(cohort, tmp_path):
    out = tmp_path / "o"
    rc = main(["stats", "--scores", str(cohort["scores"]), "--clinical", str(cohort["clinical"]), "--labs",
               str(cohort["labs"]), "--study", "zhang2020", "--normal-labs", "crp,lymphocite_count", "-o", str(out),
               "-q"])
    assert rc == 0
    summary = pd.read_csv(out / "data_summary.csv")
    notes = summary.loc[summary["item"] == "note", "value"].tolist()
    typo = [n for n in notes if "'lymphocite_count'" in n]
    assert len(typo) == 1 and "did you mean 'lymphocyte_count'?" in typo[0] and "Labs available:" in typo[0]
    assert not any("'crp'" in n for n in notes)  # a lab that is there: no note
    assert "lymphocite_count" in (out / "summary.html").read_text()


def test_misspelt_scores_patient_id_error_names_the_file(cohort, tmp_path):
    clinical = _clinical(cohort, tmp_path, scores_patient_id="score_patient_id")
    with pytest.raises(CTScoreError) as exc:
        run_stats(cohort["scores"], clinical, cohort["labs"], study="liao2021")
    assert exc.value.code == "BAD_CLINICAL_DATA" and exc.value.path == str(clinical)
    assert str(exc.value).endswith(f"[{clinical}]")
    assert "'score_patient_id' looks like a misspelling of 'scores_patient_id'" in str(exc.value)
    with pytest.raises(CTScoreError) as exc:  # an --id-column that is not there names the file too
        run_stats(cohort["scores"], cohort["clinical"], None, study="liao2021", id_column="hospital_no")
    assert exc.value.path == str(cohort["clinical"]) and "found [" in str(exc.value)


def test_schema_doc_explains_how_to_get_the_pseudonymous_ids():
    doc = (REPO / "docs" / "clinical_schema.md").read_text()
    assert "ctscore scan" in doc and "--identifiers" in doc and "--stacks" in doc
    assert "series_uid" in doc and "pseudonym_salt" in doc


@pytest.mark.parametrize("sep, word", [(";", "semicolons"), ("\t", "tabs")])
def test_a_table_separated_by_semicolons_or_tabs_says_so(tmp_path, sep, word):
    """A spreadsheet saved with ';' (a European locale's CSV) or tabs was refused as 'missing required column(s)
    ['patient_id']', the whole header read as one column name."""
    from scoring.stats.schema import read_clinical

    path = tmp_path / "clinical.csv"
    path.write_text(sep.join(["patient_id", "scores_patient_id", "age", "sex", "outcome"]) + "\n"
                    + sep.join(["P1", "pt-1", "61", "M", "survivor"]) + "\n")
    with pytest.raises(CTScoreError) as e:
        read_clinical(path)
    assert e.value.code == "BAD_CLINICAL_DATA" and f"separated by {word}, not commas" in str(e.value)
    assert "clinical.csv" in str(e.value)
