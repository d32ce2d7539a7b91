"""Landmark and zone review: defects found against SCORING.md and reference.csv, each with a failing-first test."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.landmarks import detect_carina, detect_dome, detect_landmarks
from segmentation.base import LEFT_LUNG, RIGHT_LUNG
from tests.test_landmarks import SP, synthetic


def test_lumen_beside_the_trachea_is_not_the_carina():
    """A separate lumen 25 mm beside the trachea (a lung bronchus the airway growth reached; ricord_covid_419639,
    +6.4 mm) counted as the division: the carina was put at its top, 30 mm above the real one."""
    airway, _, z = synthetic()
    airway[70:80, 28:33, 50:55] = True  # side lumen, 17 voxels (25 mm) lateral of the trachea, slices 70..79
    c = detect_carina(airway, z, SP)
    assert c.method == "detected" and c.z_mm == pytest.approx(z[60])


def test_stack_with_z_falling_along_the_index_gives_the_same_levels():
    """A feet-first stack not reoriented (z falls with the index): apex and base came out swapped, both
    'detected', the domes missing and the carina estimated; the levels must be those of the reoriented stack."""
    airway, lungs, z = synthetic()
    hu = np.where(lungs > 0, -850.0, 40.0)
    hu[airway] = -1000.0
    ref = detect_landmarks(lungs, airway, z, SP, hu=hu)
    got = detect_landmarks(lungs[::-1], airway[::-1], z[::-1], SP, hu=hu[::-1])
    assert {k: (v.z_mm, v.method) for k, v in got.items()} == {k: (v.z_mm, v.method) for k, v in ref.items()}
    assert got["apex_right"].z_mm > got["base_right"].z_mm


def test_unsorted_or_mismatched_z_is_refused():
    airway, lungs, z = synthetic()
    zz = z.copy()
    zz[[5, 6]] = zz[[6, 5]]
    with pytest.raises(ValueError, match="monotonic"):
        detect_landmarks(lungs, airway, zz, SP)
    with pytest.raises(ValueError, match="one z per slice"):
        detect_landmarks(lungs, airway, z[:-1], SP)


def test_levels_from_an_estimated_carina_are_not_surer_than_it():
    """Without an airway the carina is a low-confidence estimate from lung extent; the aortic arch and bronchus
    intermedius placed at fixed offsets from it were still reported with medium confidence."""
    _, lungs, z = synthetic()
    lm = detect_landmarks(lungs, None, z, SP)
    assert lm["carina"].method == "estimated" and lm["carina"].confidence == "low"
    for name in ("aortic_arch", "bronchus_intermedius", "suprasternal_notch"):
        assert lm[name].confidence == "low" and "estimated carina" in lm[name].note
    airway, lungs, z = synthetic()
    assert detect_landmarks(lungs, airway, z, SP)["aortic_arch"].confidence == "medium"


def test_division_above_the_lung_apices_is_not_the_carina():
    """A scan reaching the neck: the airway divides (larynx, piriform sinuses) 30 mm above the lung apices after
    a long single lumen; that division was reported as the carina, detected with high confidence."""
    nz = 160
    airway, lungs, _ = synthetic()
    z = np.arange(nz) * 1.5 - 100.0
    airway = np.concatenate([airway, np.zeros((nz - 120, 60, 60), bool)])
    lungs = np.concatenate([lungs, np.zeros((nz - 120, 60, 60), np.uint8)])
    airway[120:, 28:33, 28:33] = True  # a longer single lumen up into the neck
    airway[125:131, 28:33, 28:33] = False
    airway[125:131, 28:33, 20:25] = True  # two lumina in slices 125..130, above the apices (slice 109)
    airway[125:131, 28:33, 36:41] = True
    lm = detect_landmarks(lungs, airway, z, SP)
    assert lm["apex_right"].z_mm == pytest.approx(z[109])
    assert lm["carina"].method == "detected" and lm["carina"].z_mm == pytest.approx(z[60])


def test_accuracy_counts_a_base_detected_where_the_reference_has_none(tmp_path, monkeypatch):
    """reference.csv leaves base_right empty when the scan cuts the base off; a base the detector reported there
    (a confident wrong level) was skipped, and the table said the target was met."""
    from tests.scripts_loader import load_script

    la = load_script("landmark_accuracy")
    airway, lungs, z = synthetic()  # both bases inside the scan: detected
    ref_csv = tmp_path / "reference.csv"
    ref_csv.write_text("scan,landmark,z_mm,confidence,note\n"
                       f"s1,base_right_z,,high,not visible: cut off\ns1,base_left_z,{z[20]},high,tip\n")
    (tmp_path / "s1").mkdir()
    arrays = {"hu": None, "lungs": lungs, "airway": airway, "z_mm": z, "spacing": np.asarray(SP)}
    asked: list[str] = []
    monkeypatch.setattr(la, "working_arrays", lambda scan_dir, cache, segmenter: asked.append(segmenter) or arrays)
    ref = la.read_reference(ref_csv)
    assert ref["s1"] == {"base_right": None, "base_left": pytest.approx(z[20])}
    res = la.evaluate(ref, tmp_path, None, verbose=True)
    assert res["base_right"]["spurious"] == 1 and res["base_left"]["spurious"] == 0
    la.evaluate(ref, tmp_path, None, segmenter="monai")  # the levels on the network's masks (the pipeline's default)
    assert asked == ["classical", "monai"]
    line = next(ln for ln in la.format_table(res).splitlines() if ln.startswith("| base_right |"))
    assert "| NO " in line


def test_no_dome_estimated_from_a_dome_that_is_not_one():
    """The right 'dome' found above the bronchus intermedius is dropped as not a dome, but the left dome had
    already been estimated from it (right - 23 mm) and stayed, with the IPV and the left L5 unit built on it."""
    airway, lungs, z = synthetic()
    lungs[10:50][lungs[10:50] == RIGHT_LUNG] = 0  # right lung floor at slice 50, above the bronchus intermedius
    lungs[0:20, 10:50, 36:58] = LEFT_LUNG  # left lung runs out of the bottom of the scan: its dome is not seen
    lm = detect_landmarks(lungs, airway, z, SP)
    assert lm["dome_right"].method == "missing"
    assert lm["dome_left"].method == "missing"
    assert lm["ipv"].z_mm is None


def test_tiny_lumina_just_above_the_division_keep_both_bronchi_in_view():
    """The slice above the division shows two specks (below the minimum area) instead of the trachea: both are
    followed, so that the division below them is found (following only one speck lost the carina of the sample)."""
    airway, _, z = synthetic()
    airway[60] = False
    airway[60, 30, 24] = airway[60, 30, 37] = True  # two specks of 2 mm2, 20 mm apart
    c = detect_carina(airway, z, SP)
    assert c.method == "detected" and c.z_mm == pytest.approx(z[60])
    airway[62:70, 28:33, 50:55] = True  # with a separate lumen beside the trachea above it too
    assert detect_carina(airway, z, SP).z_mm == pytest.approx(z[60])


def test_levels_detected_on_thick_source_slices_are_not_high_confidence():
    """On an 8 mm series (lung_pet_ct_dx_A0002) the apex came out 7 mm from the reference with high confidence: it
    was found on the 1.5 mm grid the slices were interpolated to. Above 5 mm source slices, high becomes medium."""
    from scoring.landmarks import Landmark, temper_for_thick_slices

    def levels():
        return {"apex_right": Landmark("apex_right", 100.0, "detected", "high", "top slice with lung"),
                "carina": Landmark("carina", 50.0, "detected", "high"),
                "ipv": Landmark("ipv", 10.0, "estimated", "low", "from the carina")}

    thin = levels()
    temper_for_thick_slices(thin, 2.0)
    assert thin["apex_right"].confidence == "high"
    thick = levels()
    temper_for_thick_slices(thick, 8.0)
    assert thick["apex_right"].confidence == "medium" and "half a 8.0 mm source slice" in thick["apex_right"].note
    assert thick["carina"].confidence == "medium" and thick["carina"].note.startswith("to within")
    assert thick["ipv"].confidence == "low"


def _anterior(pieces: list[tuple[int, int]], rows: tuple[int, int] = (20, 40), width: int = 120) -> np.ndarray:
    """A slice's bone in front of the trachea (1.5 mm pixels): one solid piece per (first, last) column."""
    m = np.zeros((50, width), bool)
    for a, b in pieces:
        m[rows[0]:rows[1], a:b + 1] = True
    return m


def test_two_clavicular_heads_are_told_from_the_manubrium():
    """ricord_covid_419639 (rotated): the right clavicular head crosses the trachea's and the spine's x above the
    manubrium, so the midline test followed it 15 mm past the notch. Two heads with soft tissue between them, the
    gap near the midline, are above the notch; the manubrium between or joining them, or a manubrium whose cortex
    breaks into pieces with bone still between them (lung_pet_ct_dx_A0002, 8 mm slices), is not."""
    from scoring.landmarks import _clavicular_heads

    sp = (1.5, 1.5, 1.5)
    heads = _anterior([(33, 57), (69, 91)])  # gap at x 58-68, one head across x_mid 53
    assert _clavicular_heads(heads, 53.0, 57.3, sp)
    assert not _clavicular_heads(_anterior([(33, 57), (60, 66), (69, 91)]), 53.0, 57.3, sp)  # manubrium between
    assert not _clavicular_heads(_anterior([(33, 91)]), 53.0, 57.3, sp)  # one bone across
    assert not _clavicular_heads(_anterior([(33, 57), (58, 91)]), 53.0, 57.3, sp)  # touching
    broken = _anterior([(33, 57), (69, 91)])
    broken[25:27, 62:64] = True  # a fleck of cortex in the gap: a manubrium, not the notch
    assert not _clavicular_heads(broken, 53.0, 57.3, sp)
    far = _anterior([(5, 30), (90, 115)])  # the gap's centre 30 mm from both midline markers (limit 16 mm)
    assert not _clavicular_heads(far, 40.0, 40.0, sp)
    # a stability audit: ricord_covid_419639 rotated 2 degrees put the gap's centre 12.4 mm from the spine's x; with a
    # 12 mm limit the notch read 15 mm high (216 instead of 201 mm) and zhang900 L1 lost its lesion
    rotated = _anterior([(94, 119), (131, 153)], width=170)
    assert _clavicular_heads(rotated, 113.0, 116.7, sp)


@pytest.mark.slow
def test_ricord_notch_is_not_taken_from_a_clavicular_head(shared_data, classical_memo):
    """The rotated patient's notch: 15.4 mm too high before (216.4 mm, the right clavicular head's top); the
    reference reads 201 mm."""
    from scripts.landmark_accuracy import evaluate, read_reference
    from tests.conftest import require

    scan = require(shared_data / "chest" / "ricord_covid_419639")
    ref = read_reference(require(shared_data / "landmarks" / "reference.csv"))
    res = evaluate({"ricord_covid_419639": ref["ricord_covid_419639"]}, scan.parent, cache=None)
    assert abs(res["suprasternal_notch"]["errors"][0]) <= 3.0
    assert abs(res["carina"]["errors"][0]) <= 3.0


def _domed_lung(nz: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """One lung on a dome: floor 40 slices up at the centre, falling 1 slice per pixel of radius (recesses),
    and a strip of columns whose floor is high (the lung's under-surface over the heart), 1.5 mm slices."""
    z = np.arange(nz) * 1.5
    yy, xx = np.mgrid[0:40, 0:40]
    floor = np.clip(40 - np.hypot(yy - 20, xx - 20).astype(int), 2, None)
    floor[:, 30:33] = 65  # over the heart: about 8 % of the central columns
    lung = np.arange(nz)[:, None, None] >= floor[None]
    lung[75:] = False
    return lung, z


def test_a_dome_below_the_scan_is_not_taken_from_the_high_floors_left():
    """A scan cut just below the dome (four cut real scans: a dome 16-42 mm too high, 'detected'): the columns whose
    lung reaches the bottom slice were left out, so the high floors (over the heart) made the percentile. Now they
    count with their floor at the bottom: the dome is found where it is, or missing when it is below the scan."""
    lung, z = _domed_lung()
    full = detect_dome(lung, "dome_right", z)
    assert abs(full.z_mm - 40 * 1.5) <= 3.0
    cut = detect_dome(lung[25:], "dome_right", z[25:])  # 22 mm below the dome: half the columns reach the bottom
    assert cut.z_mm is None or abs(cut.z_mm - full.z_mm) <= 6.0, cut
    below = detect_dome(lung[44:], "dome_right", z[44:])  # the dome 6 mm below the scan
    assert below.z_mm is None and below.note.startswith("lung floor below the scan"), below


def test_a_dome_running_out_of_the_scan_is_not_estimated_from_the_other():
    """The left dome of a scan cut above it was estimated 23 mm below the right one, inside the scan, although the
    left lung ran out of the bottom slice (normal001 cut at 35 %: 21 mm too high). Now missing."""
    airway, lungs, z = synthetic()
    lungs[20:110][lungs[20:110] == LEFT_LUNG] = 0
    lungs[0:110, 10:50, 36:58] = LEFT_LUNG  # the left lung runs out of the scan's bottom slice
    lungs[10:30][lungs[10:30] == RIGHT_LUNG] = 0  # the right dome 45 mm up: its estimate would fall in the scan
    lms = detect_landmarks(lungs, airway, z, SP)
    assert lms["dome_right"].method == "detected"
    assert lms["dome_left"].z_mm is None, lms["dome_left"]


@pytest.mark.parametrize("bad", ["x", "1.0", "-0.1"])
def test_landmark_accuracy_cut_bases_refuses_bad_fractions(tmp_path, bad, capsys):
    """`landmark_accuracy.py --cut-bases` (the cut-scan check of the domes) takes fractions in [0, 1)."""
    from tests.scripts_loader import load_script

    ref = tmp_path / "reference.csv"
    ref.write_text("scan,landmark,z_mm,confidence,note\ns1,carina_z,1.0,high,\n")
    with pytest.raises(SystemExit) as e:
        load_script("landmark_accuracy").main(["--reference", str(ref), "--data-root", str(tmp_path),
                                               "--cut-bases", bad])
    assert e.value.code == 2 and "--cut-bases" in capsys.readouterr().err


def test_the_notch_of_a_rotated_scan(shared_data, classical_memo):
    """ricord_covid_419639 rotated -2 and +2 degrees about the head-feet axis: the notch within 3 mm of the scan's own
    (a stability audit: -2 degrees read it 15 mm high, and zhang900 L1's 10 mL of lesion was lost)."""
    import SimpleITK as sitk

    from pipeline.config import load_config
    from pipeline.resample import resample_to_spacing
    from pipeline.run import slice_z_mm
    from scoring.landmarks import detect_landmarks
    from segmentation.classical import segment_airway
    from segmentation.factory import build_segmenter
    from segmentation.training import load_series_lps
    from tests.conftest import require

    cfg = load_config(extra={"segmentation": {"method": "classical"}})
    seg = build_segmenter(cfg)
    img = load_series_lps(require(shared_data / "chest" / "ricord_covid_419639"))
    notch = {}
    for deg in (0.0, -2.0, 2.0):
        tx = sitk.Euler3DTransform()
        size = np.array(img.GetSize())
        tx.SetCenter(img.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2.0).tolist()))
        tx.SetRotation(0, 0, np.deg2rad(deg))
        rotated = img if deg == 0 else sitk.Resample(img, img, tx, sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
        work = resample_to_spacing(rotated, cfg["resample"]["spacing_mm"])
        hu = sitk.GetArrayFromImage(work)
        sp = tuple(float(s) for s in work.GetSpacing()[::-1])
        lm = detect_landmarks(seg.segment(hu, sp).lungs, segment_airway(hu, sp), slice_z_mm(work), sp, hu=hu)
        notch[deg] = lm["suprasternal_notch"].z_mm
    assert abs(notch[-2.0] - notch[0.0]) <= 3.0 and abs(notch[2.0] - notch[0.0]) <= 3.0, notch
