"""Assemble the analysis data: scores mapped to clinical patients, time since onset, matched labs."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import CTScoreError
from pipeline.outputs import settings_note
from scoring.exclusions import CODE, Exclusions, read_exclusions, summary_rows
from scoring.stats import binning, schema

log = logging.getLogger(__name__)


@dataclass
class Cohort:
    """Everything the study modules need, already validated and joined.

    ``scans``: one row per scored scan with clinical ``patient_id``, ``study_date``, scores,
    ``days_since_onset``, ``week``, ``period`` and the matched lab values (one column per analyte).
    ``labs``: one row per patient and lab date (wide) with the same time columns.
    ``units``: the unit of each analyte (:func:`scoring.stats.schema.analyte_units`).
    """

    scans: pd.DataFrame
    zones: pd.DataFrame | None
    clinical: pd.DataFrame
    labs: pd.DataFrame
    analytes: list[str]
    window_days: int
    notes: list[str] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)
    #: the scans excluded at QC review (``--exclude``; :mod:`scoring.exclusions`), and their data_summary rows
    exclusions: Exclusions | None = None
    exclusion_rows: list[tuple[str, str]] = field(default_factory=list)
    #: clinical patient_ids whose every scan was excluded at QC review (liao2021 gives them their own reason)
    excluded_patients: set[str] = field(default_factory=set)
    #: the scans excluded at QC review of the clinical patients (patient_id, study_date, week, ...): an analysis
    #: that misses a patient's scan can say it was excluded, not absent (liao2021's week 8)
    excluded_scans: pd.DataFrame | None = None

    def data_summary(self) -> pd.DataFrame:
        """Counts and notes about what was read, matched and left out."""
        rows = [("patients in clinical table", len(self.clinical)),
                *self.exclusion_rows,  # before the counts of what is analysed, which come after the exclusions
                ("patients with scores", self.scans["patient_id"].nunique()),
                ("scans (status ok, matched to a patient)", len(self.scans)),
                ("scans with a days-since-onset", int(self.scans["days_since_onset"].notna().sum())),
                ("lab dates (patient x day)", len(self.labs)),
                ("analytes", ", ".join(self.analytes)),
                ("scan-lab matching window (days)", self.window_days)]
        out = pd.DataFrame(rows, columns=["item", "value"]).astype({"value": str})
        if self.notes:
            out = pd.concat([out, pd.DataFrame({"item": "note", "value": self.notes})], ignore_index=True)
        return out


def _id_text(ids: pd.Series, source: str | None = None) -> pd.Series:
    """Ids as stripped text for matching; an id column read as numbers gives '7' for 7.0, '' for empty. A float of
    16 or more digits (:func:`scoring.stats.schema.rounded_float`) is refused (BAD_CLINICAL_DATA naming the column):
    its last digits may be another patient's."""
    if pd.api.types.is_numeric_dtype(ids):
        big = ids.map(schema.rounded_float)
        if big.any():
            i = big.idxmax()
            line = int(i) + 2 if isinstance(i, (int, np.integer)) else None
            raise schema.rounded_float_error("BAD_CLINICAL_DATA", ids.name, line, ids[i],
                                             Path(source) if source else None)
        return ids.map(lambda v: "" if pd.isna(v) else str(int(v)) if float(v).is_integer() else str(v))
    return ids.astype(str).str.strip()


def _digits_key(ids: pd.Series) -> pd.Series:
    """An all-digit id without its leading zeros ('007' -> '7'); NaN for other ids."""
    return ids.str.lstrip("0").replace("", "0").where(ids.str.fullmatch(r"\d+"))


def _recover_leading_zeros(ids: pd.Series, targets: pd.Index) -> pd.Series:
    """For each of ``ids`` (text) that is not in ``targets``: the target with the same number without leading zeros
    (a spreadsheet turned '007' into 7), when unambiguous: one target with that number, which no id carries as
    such, and one spelling of it among the ids. Returns the target of each id so matched (index: that of ``ids``)."""
    digits = _digits_key(pd.Series(list(targets), index=list(targets), dtype=object))
    digits = digits[digits.notna() & ~digits.duplicated(keep=False) & ~digits.index.isin(set(ids))]
    target_of = pd.Series(digits.index, index=digits.to_numpy())  # number -> target id text
    left = ~ids.isin(set(targets))
    key = _digits_key(ids[left])
    spellings = ids[left].groupby(key).nunique()
    key = key[key.isin(target_of.index) & key.map(spellings).eq(1)]
    return key.map(target_of)


def _loose_id(x: str) -> str:
    """An id as compared to find a likely cause of a mismatch: case-folded, a number without a '.0' suffix and
    leading zeros."""
    s = re.sub(r"^(\d+)\.0+$", r"\1", str(x).strip().casefold())
    return (s.lstrip("0") or "0") if s.isdigit() else s


def _id_differences(a: str, b: str) -> list[str]:
    """How two ids of one :func:`_loose_id` differ: 'case', "a '.0' suffix", 'leading zeros'."""
    why = []
    a2, b2 = (re.sub(r"^(\d+)\.0+$", r"\1", x) for x in (a, b))
    if a2 != a or b2 != b:
        why.append("a '.0' suffix (a spreadsheet's number format)")
    if a2.isdigit() and b2.isdigit() and a2 != b2:
        why.append("leading zeros")
    if a2.casefold() == b2.casefold() and a2 != b2:
        why.append("case")
    return why


def _near_ids(ids: pd.Series, targets: pd.Series, what: str, target_what: str) -> tuple[int, str]:
    """The ids of ``ids`` that are no target but differ from one only by case, a '.0' suffix or leading zeros: how
    many, and a sentence naming every cause and up to three pairs ("1 lab id(s) differ only by case from one of the
    clinical 'patient_id' (e.g. 'sim005' vs 'SIM005')"; '' when there are none)."""
    loose: dict[str, list[str]] = {}
    for t in dict.fromkeys(targets.astype(str)):
        if t:
            loose.setdefault(_loose_id(t), []).append(t)
    pairs = []
    for u in dict.fromkeys(ids.astype(str)):
        near = loose.get(_loose_id(u)) if u else None
        if near and u not in near:
            pairs.append((u, near[0], _id_differences(u, near[0])))
    if not pairs:
        return 0, ""
    causes = list(dict.fromkeys(c for *_, why in pairs for c in why))
    return len(pairs), (f"{len(pairs)} {what} id(s) differ only by {' and '.join(causes)} from one of {target_what} "
                        "(e.g. " + ", ".join(f"{u!r} vs {t!r}" for u, t, _ in pairs[:3]) + ")")


def _examples(ids: pd.Series, n: int = 3) -> str:
    return ", ".join(repr(x) for x in list(dict.fromkeys(x for x in ids.astype(str) if x))[:n])


def _no_scan_matches(scan_ids: pd.Series, clinical: pd.DataFrame, id_column: str, ids: pd.Series) -> str:
    """The message when no scan matches: example ids of both sides and the likely cause (ids that differ only by
    case, a '.0' suffix or leading zeros; the scans' ids in another column, e.g. 'SCORES_PATIENT_ID'; a missing
    'scores_patient_id' column for pseudonymous ids)."""
    given = f"{id_column!r} e.g. {_examples(ids)}" if _examples(ids) else f"{id_column!r} is empty in every row"
    msg = f"no scan's patient_id matches clinical column {id_column!r} (scans.csv e.g. {_examples(scan_ids)}; {given})"
    _, near = _near_ids(scan_ids, ids, "scan", f"the clinical {id_column!r}")
    if near:
        return f"{msg}; {near}: write the ids as scans.csv spells them"
    best, best_n, best_loose = None, 0, 0
    for c in clinical.columns:  # another column of unique values (an id) that holds the scans' ids
        if c == id_column or pd.api.types.is_datetime64_any_dtype(clinical[c]):
            continue
        vals = _id_text(clinical[c])
        vals = vals[vals != ""]
        if vals.duplicated().any():
            continue
        n = int(scan_ids.isin(set(vals)).sum())
        n_loose = _near_ids(scan_ids, vals, "scan", "")[0]
        if (n, n_loose) > (best_n, best_loose):
            best, best_n, best_loose = c, n, n_loose
    if best is not None:
        how = f"{best_n} of {len(scan_ids)} scans" if best_n else "ids that differ only by case, a '.0' suffix or " \
                                                                   "leading zeros"
        use = f"pass --id-column {best} (Python: id_column={best!r})"
        near = "" if "scores_patient_id" in clinical.columns else schema.misspelling_hint("scores_patient_id", [best])
        if str(best).strip().lower() == "scores_patient_id":
            use = f"column names are case-sensitive: rename it 'scores_patient_id', or {use}"
        elif near:
            use = f"rename it 'scores_patient_id', or {use}"
        return f"{msg}; the scans' ids are in column {best!r} ({how}){near}: {use} (see docs/clinical_schema.md)"
    if id_column == "scores_patient_id" and not _examples(ids):
        return (f"{msg}; write each patient's id of scans.csv into 'scores_patient_id', or remove the empty column to "
                "match on 'patient_id' (see docs/clinical_schema.md)")
    if "scores_patient_id" in clinical.columns:
        return (f"{msg}; check that 'scores_patient_id' holds the patient_id values of this scans.csv (another run "
                "or pseudonym salt gives other ids; see docs/clinical_schema.md)")
    hint = schema.misspelling_hint("scores_patient_id", clinical.columns)
    return f"{msg}; pseudonymous ids need a 'scores_patient_id' column{hint} (see docs/clinical_schema.md)"


def _match_labs_to_patients(labs: pd.DataFrame, clinical: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """Lab rows with the clinical ``patient_id`` they belong to, matched as scans are: as written, or on their
    number without leading zeros when unambiguous (noted). The rest are left out with a note naming examples and
    ids that differ only by case, a '.0' suffix or leading zeros; when no lab value matches: BAD_LAB_DATA."""
    source = labs.attrs.get("source")
    labs = labs.reset_index(drop=True)
    lab_ids = _id_text(labs["patient_id"])
    clin_ids = _id_text(clinical["patient_id"])
    to_patient = pd.Series(clinical["patient_id"].to_numpy(), index=clin_ids.to_numpy())
    to_patient = to_patient[~to_patient.index.duplicated()]
    pid = lab_ids.map(to_patient).astype(object)
    rec = _recover_leading_zeros(lab_ids, to_patient.index)
    if len(rec):
        pid[rec.index] = rec.map(to_patient)
        pairs = dict(zip(lab_ids[rec.index], rec, strict=True))
        notes.append(f"{len(rec)} lab value(s) of {len(pairs)} patient(s) matched on their number without leading "
                     "zeros (e.g. " + ", ".join(f"{a!r} = {b!r}" for a, b in list(pairs.items())[:3])
                     + " in the clinical 'patient_id'); check that these ids mean the same patients")
        log.warning(notes[-1])
    unknown = pid.isna()
    if unknown.all():
        _, near = _near_ids(lab_ids, clin_ids, "lab", "the clinical 'patient_id'")
        if not near:  # the lab ids in another id column of the clinical table (scores_patient_id)
            for c in clinical.columns:
                if c == "patient_id" or pd.api.types.is_datetime64_any_dtype(clinical[c]):
                    continue
                vals = _id_text(clinical[c])
                vals = vals[vals != ""]
                if not vals.duplicated().any() and lab_ids.isin(set(vals)).any():
                    near = f"the lab ids are values of the clinical column {c!r}"
                    break
        raise CTScoreError("BAD_LAB_DATA", f"no lab value's patient_id matches the clinical table's 'patient_id' "
                           f"(labs e.g. {_examples(lab_ids)}; clinical e.g. {_examples(clin_ids)}); "
                           + (f"{near}: " if near else "")
                           + "write each lab value's patient_id as the clinical table's patient_id spells it "
                           "(not the scores' id)", source)
    if unknown.any():
        _, near = _near_ids(lab_ids[unknown], clin_ids, "lab", "the clinical 'patient_id'")
        notes.append(f"{int(unknown.sum())} lab value(s) of {lab_ids[unknown].nunique()} patient(s) not in the "
                     f"clinical table were left out (e.g. {_examples(lab_ids[unknown])})"
                     + (f"; {near}: write them as the clinical table does to use them" if near else ""))
        log.warning(notes[-1])
    out = labs[~unknown].copy()
    out["patient_id"] = pid[~unknown].to_numpy()
    return out


def build_cohort(scans: pd.DataFrame, zones: pd.DataFrame | None, clinical: pd.DataFrame, labs: pd.DataFrame | None,
                 window_days: int = 1, id_column: str | None = None,
                 excluded_scan_ids: set[str] | frozenset[str] = frozenset()) -> Cohort:
    """Join validated inputs. ``id_column``: the clinical column holding the id the scores carry
    (default ``scores_patient_id`` when present, else ``patient_id``). ``excluded_scan_ids``: scans excluded at QC
    review, matched to their patients as the others are (so that a patient who lost every scan is named as such),
    then left out."""
    # what validation noticed (a column that looks like a misspelt schema column), for data_summary
    notes: list[str] = [*scans.attrs.get("notes", []), *clinical.attrs.get("notes", []),
                        *(labs.attrs.get("notes", []) if labs is not None else [])]
    source = clinical.attrs.get("source")
    if id_column is None:
        id_column = "scores_patient_id" if "scores_patient_id" in clinical.columns else "patient_id"
    if id_column not in clinical.columns:
        raise CTScoreError("BAD_CLINICAL_DATA", f"id column {id_column!r} is not in the clinical table"
                           f"{schema.misspelling_hint(id_column, clinical.columns)}; found {list(clinical.columns)}",
                           source)
    if window_days < 0:
        raise CTScoreError("BAD_OPTION", f"window_days must be >= 0, not {window_days}")
    ids = _id_text(clinical[id_column], source)
    dup = ids.duplicated() & (ids != "")
    if dup.any():  # the scans of both patients would all go to the first one
        value = ids[dup].iloc[0]
        lines = ", ".join(str(int(i) + 2) for i in ids.index[(ids == value).to_numpy()][:5])
        raise CTScoreError("BAD_CLINICAL_DATA", f"column {id_column!r}: value {value!r} appears more than once "
                           f"(lines {lines}); the id that matches scans to patients must be unique", source)
    mapping = pd.Series(clinical["patient_id"].to_numpy(), index=ids.to_numpy())
    mapping = mapping[mapping.index != ""]
    scans = scans.copy()
    scan_ids = _id_text(scans["patient_id"])
    scans["patient_id"] = scan_ids.map(mapping)
    # a numeric id that lost its leading zeros on one side (a spreadsheet: '007' -> 7) matches when unambiguous:
    # one clinical id with that number, which no scan carries as such, and one spelling of it among the scans
    key = _recover_leading_zeros(scan_ids, mapping.index)
    if len(key):
        scans.loc[key.index, "patient_id"] = key.map(mapping)
        pairs = dict(zip(scan_ids[key.index], key, strict=True))
        notes.append(f"{len(key)} scan(s) matched on their number without leading zeros (e.g. "
                     + ", ".join(f"{a!r} = {b!r}" for a, b in list(pairs.items())[:3])
                     + f" in {id_column!r}); check that these ids mean the same patients")
        log.warning(notes[-1])
    excluded_patients: set[str] = set()
    excluded_scans = None
    if excluded_scan_ids:
        gone = scans["scan_id"].isin(set(excluded_scan_ids))
        excluded_patients = set(scans.loc[gone, "patient_id"].dropna()) - set(scans.loc[~gone, "patient_id"].dropna())
        excluded_scans = binning.add_time(scans.loc[gone & scans["patient_id"].notna(),
                                                    ["scan_id", "patient_id", "study_date"]], clinical, "study_date")
        scans, scan_ids = scans[~gone], scan_ids[~gone]
    unmatched = scans["patient_id"].isna()
    if unmatched.all():
        raise CTScoreError("BAD_CLINICAL_DATA", _no_scan_matches(scan_ids, clinical, id_column, ids[ids != ""]),
                           source)
    if unmatched.any():
        no_id = unmatched & (scan_ids == "")  # no PatientID in the DICOM headers: no clinical row can name it
        if no_id.any():
            examples = ", ".join(repr(x) for x in scans.loc[no_id, "scan_id"].astype(str)[:3])
            notes.append(f"{int(no_id.sum())} scan(s) have no patient_id (no PatientID in their DICOM headers): left "
                         f"out, as no clinical row can match an empty id (scan_id e.g. {examples}); to use one, write "
                         f"its patient's {id_column!r} value of the clinical table into its empty patient_id in "
                         "scans.csv (docs/clinical_schema.md, matching scores to patients)")
            log.warning(notes[-1])
        other = unmatched & ~no_id
        if other.any():
            examples = ", ".join(repr(x) for x in scan_ids[other].drop_duplicates()[:3])
            _, near = _near_ids(scan_ids[other], ids, "scan", f"the clinical {id_column!r}")
            notes.append(f"{int(other.sum())} scan(s) whose patient_id is not in the clinical table were left out "
                         f"(e.g. {examples})" + (f"; {near}: write them as scans.csv does to use them" if near else ""))
            log.warning(notes[-1])
        scans = scans[~unmatched]
    mixed = settings_note(scans, "the scores of the cohort")
    if mixed:
        notes.append(mixed)
        log.warning(notes[-1])
    conditions = conditions_note(scans)
    if conditions:
        notes.append(conditions)
        log.warning(notes[-1])
    coverage = coverage_note(scans)
    if coverage:
        notes.append(coverage)
        log.warning(notes[-1])
    no_scan = ~clinical["patient_id"].isin(set(scans["patient_id"]) | excluded_patients)
    if no_scan.any():  # they stay in the tables that list every clinical patient (liao2021: unclassified)
        notes.append(f"{int(no_scan.sum())} patient(s) of the clinical table have no scored scan (e.g. "
                     + ", ".join(repr(x) for x in clinical.loc[no_scan, "patient_id"][:3]) + ")")
        log.warning(notes[-1])
    if "onset_date" not in clinical.columns:
        notes.append("the clinical table has no 'onset_date' column: weekly (liao2021) and period (li2020) analyses "
                     "have no scans")
        log.warning(notes[-1])
    scans = binning.add_time(scans, clinical, "study_date")
    no_onset = scans["days_since_onset"].isna()
    if no_onset.any():
        notes.append(f"{int(no_onset.sum())} scan(s) of {scans.loc[no_onset, 'patient_id'].nunique()} patient(s) "
                     "have no onset date: excluded from weekly and period analyses")
    same_day = scans.duplicated(["patient_id", "study_date"], keep=False)
    if same_day.any():
        n_days = scans.loc[same_day, ["patient_id", "study_date"]].drop_duplicates().shape[0]
        notes.append(f"{n_days} patient-day(s) with more than one scored scan ({int(same_day.sum())} scans, e.g. two "
                     "series of one study): liao2021 takes the later by series_time, zhang2020 the earlier (by scan_id when "
                     "a scan of the day has no series_time, or two the same), li2020 averages them within a period; "
                     "the mixed model and Kendall tau count each")
        log.warning(notes[-1])
    neg = scans["days_since_onset"] < 0
    if neg.any():
        notes.append(f"{int(neg.sum())} scan(s) dated before symptom onset: excluded from weekly and period analyses")
    if zones is not None:
        zones = zones[zones["scan_id"].isin(set(scans["scan_id"]))].reset_index(drop=True)
    if labs is not None and len(labs):  # matched as the scans are (leading zeros), the rest named
        labs = _match_labs_to_patients(labs, clinical, notes)
    if labs is None or labs.empty:
        labs_w = pd.DataFrame(columns=["patient_id", "date"])
        labs_w["date"] = pd.to_datetime(labs_w["date"])
        analytes: list[str] = []
    else:
        labs_w = binning.labs_wide(labs)
        analytes = [c for c in labs_w.columns if c not in ("patient_id", "date")]
    matched = binning.match_labs(scans, labs_w, window_days=window_days)
    scans = scans.merge(matched, on="scan_id", how="left")
    scans = schema.order_scans(scans)
    labs_w = binning.add_time(labs_w, clinical, "date") if len(labs_w) else labs_w
    return Cohort(scans=scans.reset_index(drop=True), zones=zones, clinical=clinical, labs=labs_w,
                  analytes=analytes, window_days=window_days, notes=notes, units=schema.analyte_units(labs),
                  excluded_patients=excluded_patients, excluded_scans=excluded_scans)


#: What each input of :func:`load_cohort` / ``run_stats`` may be, for the message when it is something else.
_INPUTS = {"scores": "the pipeline's output folder, its scans.csv, or a DataFrame of scans.csv",
           "clinical": "a path to clinical.csv or a DataFrame of it",
           "labs": "a path to labs.csv, a DataFrame of it, or None",
           "exclude": "a path to the exclusion list (CSV), a DataFrame of it, or None"}


#: QC flags (scans.csv ``qc_flags``, the part before ``:``) of how a scan was made that move the HU-class measures
#: and scores (README, "Measurement conditions"): a cohort mixing scans with and without one is named in a note.
CONDITION_FLAGS = {"CONTRAST": "contrast-enhanced", "CONTRAST_SUSPECTED": "enhanced by their blood's HU (header silent)", "THICK_SLICES": "slices thicker than 5 mm",
                   "NOISY": "noisy (low dose)", "DENSE_LUNG": "dense lung without lesion (expiration?)",
                   "LOW_ATTENUATION": "with emphysema or bullae (10 % of the lung or more below -950 HU)",
                   "MOTION_SUSPECT": "with motion between slices", "DEPENDENT_DENSITY": "with dependent density"}


def conditions_note(scans: pd.DataFrame) -> str | None:
    """A note when the cohort's scans were made under different conditions that move the scores: some carry a flag
    of :data:`CONDITION_FLAGS` and others not, or the scans were reconstructed with several kernels. None when all
    alike (or the table does not say: no ``qc_flags`` / ``kernel`` column)."""
    if scans is None or not len(scans):
        return None
    parts = []
    if "qc_flags" in scans.columns:
        flags = scans["qc_flags"].astype(object).where(scans["qc_flags"].notna(), "").astype(str)
        names = flags.map(lambda t: {f.split(":", 1)[0].strip() for f in t.split(";") if f.strip()})
        for flag, what in CONDITION_FLAGS.items():
            n = int(names.map(lambda s, flag=flag: flag in s).sum())
            if 0 < n < len(scans):
                parts.append(f"{n} of {len(scans)} scans {what} ({flag})")
    if "kernel" in scans.columns:
        kernels = scans["kernel"].astype(object).where(scans["kernel"].notna(), "").astype(str).str.strip()
        counts = kernels[kernels != ""].value_counts()
        if len(counts) > 1:
            shown = ", ".join(f"{k} ({n})" for k, n in counts.head(6).items())
            parts.append(f"{len(counts)} reconstruction kernels: {shown}{', ...' if len(counts) > 6 else ''}")
    if not parts:
        return None
    return ("the scans were made under different conditions (" + "; ".join(parts) + "): ground-glass and "
            "consolidation volumes, % high opacity and the density grades depend on them (README, \"Measurement "
            "conditions\"); compare within a condition, or adjust for it (qc_flags, kernel, slice_thickness_mm of "
            "scans.csv)")


#: serial scans of one patient whose reach beyond the lungs (scans.csv ``scan_above_lungs_mm`` /
#: ``scan_below_lungs_mm``) differs by more than this (mm) are named in a note when a network segmented them: the
#: network's volumes moved by up to 49 mL a lung and 34 mL of lesion between cuts 8-40 mm outside the lungs
#: (README, "Measurement error"; the classical segmenter: 0.8 mL)
COVERAGE_SPREAD_MM = 20.0


def coverage_note(scans: pd.DataFrame) -> str | None:
    """A note when some patients' serial scans, segmented by a network (``segmenter`` not ``classical``), reach
    beyond the lungs by amounts more than :data:`COVERAGE_SPREAD_MM` apart. None otherwise (or when the table does
    not say: scans.csv before 0.10.0 has no such columns)."""
    cols = [c for c in ("scan_above_lungs_mm", "scan_below_lungs_mm") if c in getattr(scans, "columns", ())]
    if scans is None or not len(scans) or not cols or "patient_id" not in scans.columns:
        return None
    net = scans
    if "segmenter" in scans.columns:
        net = scans[scans["segmenter"].astype(str).str.strip().str.lower() != "classical"]
    net = net[net["patient_id"].notna()]
    values = net[cols].apply(pd.to_numeric, errors="coerce")
    spread = values.groupby(net["patient_id"]).agg(lambda v: v.max() - v.min())
    serial = net.groupby("patient_id").size() > 1
    far = spread[serial.reindex(spread.index, fill_value=False)].gt(COVERAGE_SPREAD_MM).any(axis=1)
    if not far.any():
        return None
    return (f"{int(far.sum())} of {int(serial.sum())} patients with serial scans segmented by a network have scans "
            f"whose reach beyond the lungs differs by more than {COVERAGE_SPREAD_MM:g} mm (scan_above_lungs_mm / "
            "scan_below_lungs_mm of scans.csv): the network's lung and lesion volumes near the apices and bases move "
            "with it (README, \"Measurement error\"); compare scans of like coverage, or score them with the "
            "classical segmenter")


def check_input(value: object, name: str, argument: str | None = None) -> None:
    """BAD_OPTION, before anything is read, when input ``name`` (scores, clinical, labs) is neither a path nor a
    pandas DataFrame (a list, a dict or a number otherwise failed deep inside with a TypeError)."""
    if isinstance(value, (str, os.PathLike, pd.DataFrame)) or (value is None and name in ("labs", "exclude")):
        return
    raise CTScoreError("BAD_OPTION", f"{argument or name} must be {_INPUTS[name]}, not {type(value).__name__}")


def _exclusion_notes(scans: pd.DataFrame, keep: pd.Series) -> list[str]:
    """What an exclusion list did to the patients: those who lost their first scan (the next one takes its place
    wherever an analysis uses the first, admission or before-treatment scan) and those who lost every scan."""
    order = scans.assign(_keep=keep.to_numpy()).sort_values(["patient_id", "study_date", "series_time"],
                                                            na_position="last", kind="stable")
    per = order.groupby("patient_id", sort=False)["_keep"]
    first_gone, any_kept = ~per.first(), per.any()
    notes = []
    n_first = int((first_gone & any_kept).sum())
    if n_first:
        notes.append(f"{n_first} patient(s) lost their first scan at QC review (--exclude): their next scan takes its "
                     "place wherever an analysis uses the first (admission) or the before-treatment scan")
    n_all = int((~any_kept).sum())
    if n_all:
        notes.append(f"{n_all} patient(s) had every scan excluded at QC review (--exclude): counted apart from the "
                     "patients without a scored scan")
    for note in notes:
        log.warning(note)
    return notes


def load_cohort(scores: str | Path | pd.DataFrame, clinical_csv: str | Path | pd.DataFrame,
                labs_csv: str | Path | pd.DataFrame | None = None, window_days: int = 1,
                id_column: str | None = None, exclude: str | Path | pd.DataFrame | None = None) -> Cohort:
    """Read and validate the three inputs and join them (see :func:`build_cohort`).

    ``exclude``: the scans excluded at QC review (``--exclude``; a CSV path or a DataFrame of it, read by
    :func:`scoring.exclusions.read_exclusions` against every row of scans.csv): left out before anything is
    joined, and counted by reason in ``data_summary``.

    Each input is a path or a pandas DataFrame of the file's table (as ``pd.read_csv`` gives it, or built in Python);
    a DataFrame is held to the same rules as the file (:func:`scoring.stats.schema.as_text`), its "line N" in a
    message is row label N - 2 (``pd.read_csv``'s numbering). A scans DataFrame comes without ``zones.csv``:
    zhang2020's lung-side and level tables then say ``not run`` (give the output folder for them)."""
    check_input(scores, "scores")
    check_input(clinical_csv, "clinical")
    check_input(labs_csv, "labs")
    check_input(exclude, "exclude")
    if isinstance(scores, pd.DataFrame):
        scans, zones = schema.validate_scans(schema.as_text(scores, "BAD_SCORES")), None
    else:
        scans, zones = schema.read_scores(scores)
    # every row of scans.csv, for the exclusion list: taken out of attrs at once, as pandas deep-copies attrs on
    # every operation (a list of 2000 rows kept there made the analyses 7-13 % slower)
    run_rows = scans.attrs.pop("run_rows", [])
    clinical = schema.validate_clinical(schema.as_text(clinical_csv, "BAD_CLINICAL_DATA")) if isinstance(clinical_csv, pd.DataFrame) \
        else schema.read_clinical(clinical_csv)
    if labs_csv is None:
        labs = None
    elif isinstance(labs_csv, pd.DataFrame):
        labs = schema.validate_labs(schema.as_text(labs_csv, "BAD_LAB_DATA"))
    else:  # unknown patients: counted by build_cohort
        labs = schema.read_labs(labs_csv)
    excluded, rows = None, []
    if exclude is not None:
        rows_run = pd.DataFrame(run_rows, columns=list(schema.RUN_ROW_COLUMNS))
        excluded = read_exclusions(exclude, rows_run.loc[:, rows_run.notna().any() | (rows_run.columns == "scan_id")])
        used = set(scans["scan_id"])
        rows = summary_rows(excluded, used, "scored scans before exclusion (status ok, dated)",
                            "failed in the run, or no study_date")
        keep = ~scans["scan_id"].isin(excluded.scan_ids)
        if not keep.any():
            raise CTScoreError(CODE, f"the exclusion list leaves no scored scan to analyse (it excludes all "
                               f"{len(scans)})", None if isinstance(exclude, pd.DataFrame) else exclude)
        scans.attrs["notes"] = [*scans.attrs.get("notes", []), *_exclusion_notes(scans, keep)]
        log.info("exclusion list: %s", "; ".join(f"{k} {v}" for k, v in rows[1:]))
    cohort = build_cohort(scans, zones, clinical, labs, window_days=window_days, id_column=id_column,
                          excluded_scan_ids=excluded.scan_ids if excluded is not None else frozenset())
    cohort.exclusions, cohort.exclusion_rows = excluded, rows
    return cohort
