"""Selection review 49 (a series-selection audit of multi-series studies):

- the thinner slices always won over the lung kernel (GE 0.625 mm STANDARD over 1.25 mm LUNG): "thin" now compares
  thickness classes (thin-section up to 1.5 mm, up to 3 mm, thicker), the kernel decides within one, then
  "thinnest";
- coverage was a fixed 200 mm yes/no: a complete 190 mm chest lost to 80 mm of the bases, an expiratory 205 mm
  series beat an inspiratory 198 mm one; a stack is now short against the widest chest stack of its study;
- prone and supine series were a coin flip: the "supine" preference;
- an expiratory series scored said nothing: EXPIRATORY_SERIES;
- two acquisitions of one series tied and the file names chose: the headers' content decides now;
- two StudyDates under one StudyInstanceUID: STUDY_DATES_DIFFER;
- a scan split into upper and lower series: SPLIT_ACROSS_SERIES names the other part.
"""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid

from pipeline.config import load_config
from pipeline.inventory import build_inventory
from tests.dicom_factory import edit_file, write_series


def _series(root, name: str, study: str, frame: str, *, thickness: float, n: int | None = None,
            z0: float = -100.0, length: float = 24.0, **kw) -> tuple[str, list]:
    """A series of ``thickness`` mm contiguous slices from ``z0`` over ``length`` mm (or ``n`` slices)."""
    uid = kw.pop("series_uid", None) or generate_uid()
    n = n if n is not None else int(round(length / thickness))
    files = write_series(root / name, n, dz=thickness, thickness=thickness, z0=z0, study_uid=study, frame_uid=frame,
                         series_uid=uid, size=16, **kw)
    return uid, files


def _edit(files, **values) -> None:
    for f in files:
        edit_file(f, **values)


def _only_chosen(root, cfg=None, **kw):
    inv = build_inventory(root, cfg or load_config(), **kw)
    assert len(inv.chosen) == 1
    return inv.chosen[0], inv


def _reason(inv, uid: str) -> str:
    return next(c.reason for c in inv.candidates if c.series_uid == uid)


# --- 1. the lung kernel within a thickness class ------------------------------------------------------------------

@pytest.mark.parametrize("soft,lung", [((0.625, "STANDARD"), (1.25, "LUNG")),  # GE
                                       ((0.75, "Br40d"), (1.0, "Bl57d")),  # Siemens
                                       ((0.5, "FC13"), (1.0, "FC86"))])  # Canon
def test_the_lung_kernel_wins_within_a_thickness_class(tmp_path, soft, lung):
    study, frame = generate_uid(), generate_uid()
    soft_uid, _ = _series(tmp_path, "a_soft", study, frame, thickness=soft[0], kernel=soft[1])
    lung_uid, _ = _series(tmp_path, "b_lung", study, frame, thickness=lung[0], kernel=lung[1])
    chosen, inv = _only_chosen(tmp_path)
    assert chosen.series_uid == lung_uid
    assert f"preferred by kernel ({lung[1]} over {soft[1]})" in _reason(inv, soft_uid)


def test_a_users_own_list_without_thinnest_still_prefers_the_lung_kernel(tmp_path):
    # the default list of earlier versions, kept in a site configuration
    study, frame = generate_uid(), generate_uid()
    _series(tmp_path, "a_soft", study, frame, thickness=0.625, kernel="STANDARD")
    lung_uid, _ = _series(tmp_path, "b_lung", study, frame, thickness=1.25, kernel="LUNG")
    cfg = load_config(overrides=["selection.preferences=chest,original,primary,axial,coverage,fov,contiguous,"
                                 "inspiration,noncontrast,thin,kernel,slices"])
    assert _only_chosen(tmp_path, cfg)[0].series_uid == lung_uid


def test_a_thin_soft_series_still_beats_a_thick_lung_one(tmp_path):
    study, frame = generate_uid(), generate_uid()
    thin_uid, _ = _series(tmp_path, "a_thin", study, frame, thickness=1.0, kernel="B30f", length=60)
    thick_uid, _ = _series(tmp_path, "b_thick", study, frame, thickness=5.0, kernel="B70f", length=60)
    chosen, inv = _only_chosen(tmp_path)
    assert chosen.series_uid == thin_uid
    assert "preferred by thin (1 mm over 5 mm; thin-section" in _reason(inv, thick_uid)


def test_within_a_class_and_kernel_the_thinner_wins_and_says_so(tmp_path):
    study, frame = generate_uid(), generate_uid()
    thick_uid, _ = _series(tmp_path, "a_1mm", study, frame, thickness=1.0, kernel="B70f", length=30)
    thin_uid, _ = _series(tmp_path, "b_075", study, frame, thickness=0.75, kernel="B70f", n=36)  # 27 mm
    chosen, inv = _only_chosen(tmp_path)
    assert chosen.series_uid == thin_uid
    assert "preferred by thinnest (0.75 mm over 1 mm)" in _reason(inv, thick_uid)


# --- 2. coverage against the widest chest stack of the study -------------------------------------------------------

def test_a_complete_190_mm_chest_beats_80_mm_of_the_bases(tmp_path):  # the audit's S14
    study, frame = generate_uid(), generate_uid()
    full_uid, _ = _series(tmp_path, "a_full", study, frame, thickness=5.0, kernel="B30f", length=190)
    bases_uid, _ = _series(tmp_path, "b_bases", study, frame, thickness=1.0, kernel="B70f", length=80, z0=-100)
    chosen, inv = _only_chosen(tmp_path)
    assert chosen.series_uid == full_uid and chosen.info["z_coverage_mm"] == 190
    assert "preferred by coverage (z coverage 80 mm is short: under 171 mm" in _reason(inv, bases_uid)


def test_a_mm_less_coverage_does_not_beat_thin_slices(tmp_path):  # the audit's S15b
    study, frame = generate_uid(), generate_uid()
    thin_uid, _ = _series(tmp_path, "a_thin", study, frame, thickness=1.0, kernel="B70f", length=199)
    thick_uid, _ = _series(tmp_path, "b_thick", study, frame, thickness=5.0, kernel="B30f", length=200)
    chosen, inv = _only_chosen(tmp_path)
    assert chosen.series_uid == thin_uid and chosen.info["z_coverage_mm"] == 199
    assert "preferred by thin" in _reason(inv, thick_uid)


def test_inspiration_decides_between_198_and_205_mm(tmp_path):  # the audit's S19
    study, frame = generate_uid(), generate_uid()
    insp_uid, insp = _series(tmp_path, "a_insp", study, frame, thickness=1.0, length=198)
    exp_uid, exp = _series(tmp_path, "b_exp", study, frame, thickness=1.0, length=205, z0=-105, acquisition=2)
    _edit(insp, SeriesDescription="Thorax 1.0 B70f")
    _edit(exp, SeriesDescription="Thorax EXP 1.0 B70f")
    chosen, inv = _only_chosen(tmp_path)
    assert chosen.series_uid == insp_uid
    assert "preferred by inspiration" in _reason(inv, exp_uid)


# --- 3. supine before prone ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("prone_thickness", [1.0, 0.75])  # the audit's S10 (alike) and S10b (the prone one thinner)
def test_supine_before_prone(tmp_path, prone_thickness):
    study, frame = generate_uid(), generate_uid()
    # the prone series named first: its name must not decide a tie, its position must
    prone_uid, prone = _series(tmp_path, "a_prone", study, frame, thickness=prone_thickness, n=30)
    supine_uid, supine = _series(tmp_path, "b_supine", study, frame, thickness=1.0, n=30)
    _edit(prone, PatientPosition="HFP")
    _edit(supine, PatientPosition="HFS")
    chosen, inv = _only_chosen(tmp_path)
    assert chosen.series_uid == supine_uid
    assert "SELECTION_TIE" not in chosen.flags
    assert "preferred by supine (HFS over HFP" in _reason(inv, prone_uid)


def test_decubitus_ranks_below_a_position_not_recorded(tmp_path):
    study, frame = generate_uid(), generate_uid()
    side_uid, side = _series(tmp_path, "a_side", study, frame, thickness=0.75, n=30)
    plain_uid, _ = _series(tmp_path, "b_plain", study, frame, thickness=1.0, n=30)
    _edit(side, PatientPosition="HFDL")
    assert _only_chosen(tmp_path)[0].series_uid == plain_uid


# --- 4. an expiratory series scored is flagged ---------------------------------------------------------------------

def test_an_expiratory_series_scored_is_flagged(tmp_path):  # the audit's S20: every chest series expiratory
    from pipeline.dicom_codes import CODES

    study, frame = generate_uid(), generate_uid()
    _, thin = _series(tmp_path, "a", study, frame, thickness=1.0, kernel="B70f", length=60)
    _, thick = _series(tmp_path, "b", study, frame, thickness=5.0, kernel="B30f", length=60)
    _edit(thin, SeriesDescription="Expiration 1.0 B70f")
    _edit(thick, SeriesDescription="Expiration 5.0 B30f")
    chosen, inv = _only_chosen(tmp_path)
    assert "EXPIRATORY_SERIES" in chosen.flags
    assert "every eligible stack of the study names expiration" in chosen.messages["EXPIRATORY_SERIES"]
    assert CODES["EXPIRATORY_SERIES"].action == "W"
    row = inv.stacks.set_index("stack_id").loc[chosen.stack_id]
    assert "EXPIRATORY_SERIES" in row["predicted_flags"] and "EXPIRATORY_SERIES: its SeriesDescription" in row["notes"]
    # an inspiratory one is not flagged
    _edit(thin, SeriesDescription="Thorax 1.0 B70f")
    assert "EXPIRATORY_SERIES" not in _only_chosen(tmp_path)[0].flags


# --- 5. a tie inside one series: the content decides, not the file names -------------------------------------------

def _one_series_two_acquisitions(root, first_prefix: str, second_prefix: str) -> None:
    study, frame, series = generate_uid(), generate_uid(), generate_uid()
    for acquisition, prefix in ((1, first_prefix), (2, second_prefix)):
        _series(root, "series", study, frame, thickness=1.0, n=30, series_uid=series, acquisition=acquisition,
                prefix=prefix)


@pytest.mark.parametrize("first,second", [("a", "b"), ("b", "a")])
def test_a_tie_inside_one_series_is_broken_by_content(tmp_path, first, second):  # the audit's S21
    _one_series_two_acquisitions(tmp_path, first, second)
    chosen, inv = _only_chosen(tmp_path)
    assert len(inv.candidates) == 2
    assert chosen.info["acquisitions"] == "1"  # whichever file names it has
    assert "SELECTION_TIE" in chosen.flags
    assert chosen.messages["SELECTION_TIE"].endswith("taken by AcquisitionNumber 1 before 2")
    other = next(c for c in inv.candidates if c is not chosen)
    assert other.reason.endswith("preferred by a tie-break: equal on every preference, AcquisitionNumber 1 before 2")


def test_a_tie_of_two_series_alike_falls_to_the_acquisition_time_then_the_sop_uid(tmp_path):
    study, frame = generate_uid(), generate_uid()
    late_uid, late = _series(tmp_path, "a_late", study, frame, thickness=1.0, n=20)
    early_uid, early = _series(tmp_path, "b_early", study, frame, thickness=1.0, n=20)
    _edit(late, AcquisitionTime="120500")
    _edit(early, AcquisitionTime="120000")
    chosen, inv = _only_chosen(tmp_path)
    assert chosen.series_uid == early_uid and "SELECTION_TIE" in chosen.flags
    assert _reason(inv, late_uid).endswith("the earlier acquisition date and time")


# --- 6. two StudyDates under one StudyInstanceUID ------------------------------------------------------------------

def test_stacks_of_other_study_dates_are_counted_on_the_chosen_one(tmp_path):  # the audit's S22
    study, frame = generate_uid(), generate_uid()
    _, day0 = _series(tmp_path, "a_day0", study, frame, thickness=1.0, n=20)
    _, day14 = _series(tmp_path, "b_day14", study, frame, thickness=1.0, n=20)
    _edit(day0, StudyDate="20200401")
    _edit(day14, StudyDate="20200415")
    chosen, inv = _only_chosen(tmp_path)
    assert "STUDY_DATES_DIFFER:1" in chosen.flags
    message = chosen.messages["STUDY_DATES_DIFFER"]
    other = next(c for c in inv.candidates if c is not chosen)
    assert other.stack_id in message and "--all-series" in message
    assert "2020" not in message and not any("2020" in f for f in chosen.flags)  # counts, not dates
    # every eligible stack scored: nothing left out, no flag
    every = build_inventory(tmp_path, load_config(), all_series=True)
    assert len(every.chosen) == 2 and not any(f.startswith("STUDY_DATES_DIFFER") for c in every.chosen
                                              for f in c.flags)


# --- 7. a scan split into two series -------------------------------------------------------------------------------

def _halves(root, change: dict) -> None:
    study, frame = generate_uid(), generate_uid()
    _series(root, "a_lower", study, frame, thickness=2.0, n=40, z0=-100.0)  # -100 .. -22
    kw = dict(z0=-20.0, kernel="B60f")  # -20 .. 50: the next slice position
    kw.update(change)
    other_frame = generate_uid() if kw.pop("frame", None) else frame
    _series(root, "b_upper", study, other_frame, thickness=2.0, n=36, acquisition=2, **kw)


def test_a_half_of_a_split_scan_names_the_other_half(tmp_path):  # the audit's S12
    _halves(tmp_path / "split", {})
    chosen, inv = _only_chosen(tmp_path / "split")
    other = next(c for c in inv.candidates if c is not chosen)
    assert "SPLIT_ACROSS_SERIES" in chosen.flags
    assert other.stack_id in chosen.messages["SPLIT_ACROSS_SERIES"]
    # stacks that do not continue each other: 40 mm apart, another kernel, another Frame of Reference
    for k, change in enumerate([dict(z0=20.0), dict(kernel="B30f"), dict(frame="other")]):
        _halves(tmp_path / f"not{k}", change)
        assert "SPLIT_ACROSS_SERIES" not in _only_chosen(tmp_path / f"not{k}")[0].flags, change


# --- after a review of the above ------------------------------------------------------------------------------------

@pytest.mark.parametrize("body_part", ["WHOLEBODY", "TRUNK"])
def test_coverage_counts_where_no_stack_names_the_chest(tmp_path, body_part):
    # a PET/CT's series: no stack names the chest, the widest coverage read 0 and no stack was short, so 80 mm of
    # the bases in 1 mm slices won over a 300 mm series (0.18.0 took the 300 mm one)
    study, frame = generate_uid(), generate_uid()
    full_uid, _ = _series(tmp_path, "a_full", study, frame, thickness=5.0, length=300, body_part=body_part)
    bases_uid, _ = _series(tmp_path, "b_bases", study, frame, thickness=1.0, length=80, body_part=body_part)
    chosen, inv = _only_chosen(tmp_path)
    assert chosen.series_uid == full_uid
    # the limit that applied is named: the 200 mm of selection.full_coverage_mm, not "0.9 x the widest"
    assert _reason(inv, bases_uid).endswith(
        "preferred by coverage (z coverage 80 mm is short: under 200 mm, selection.full_coverage_mm)")


def test_an_abdomen_series_below_a_complete_chest_is_no_other_half(tmp_path):
    study, frame = generate_uid(), generate_uid()
    _series(tmp_path, "a_chest", study, frame, thickness=2.0, n=90, z0=-100.0)  # -100 .. 78: 178 mm
    _series(tmp_path, "b_abdomen", study, frame, thickness=2.0, n=60, z0=-220.0, body_part="ABDOMEN",
            acquisition=2)  # -220 .. -102: continues below it
    chosen, _ = _only_chosen(tmp_path)
    assert chosen.header.get("body_part") == "CHEST" and "SPLIT_ACROSS_SERIES" not in chosen.flags


def test_only_the_deciding_tie_is_read_again(tmp_path, monkeypatch):
    # one non-contrast series and three contrast phases alike: no tie decides, no file is read again
    from pipeline import selection

    study, frame = generate_uid(), generate_uid()
    plain_uid, _ = _series(tmp_path, "a_plain", study, frame, thickness=1.0, n=20)
    for k in range(3):
        _series(tmp_path, f"b_phase{k}", study, frame, thickness=1.0, n=20, contrast="OMNIPAQUE")
    calls = []
    real = selection._content_key
    monkeypatch.setattr(selection, "_content_key", lambda c: calls.append(c.stack_id) or real(c))
    chosen, _ = _only_chosen(tmp_path)
    assert chosen.series_uid == plain_uid and calls == []
