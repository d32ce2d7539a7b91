"""scripts/evaluate_segmenter.py: the per-lesion breakdown of pleural coverage."""

import numpy as np

from tests.scripts_loader import load_script


def test_pleural_lesions_place_and_coverage():
    """Two pieces of pleural consolidation in a box phantom ([z, y, x] LPS: z to the head, y to the back,
    x to the patient's left; right lung at low x): each is reported with its volume, the share the
    predicted lung covers and its place by thirds of its own lung."""
    ev = load_script("evaluate_segmenter")
    ref = np.zeros((30, 30, 40), np.uint8)
    ref[:, :, 2:17] = 1  # right lung: x 2..16, its medial side at high x
    ref[:, :, 23:38] = 2  # left lung: x 23..37, its medial side at low x
    pc = np.zeros(ref.shape, bool)
    pc[25:29, 0:4, 14:17] = True  # right, apical, anterior, medial: 48 voxels
    pc[0:3, 26:30, 34:38] = True  # left, basal, posterior, lateral: 48 voxels
    pred = ref.copy()
    pred[25:29, 0:4, 15:17] = 0  # two of the three x columns of the right piece given away
    out = ev.pleural_lesions(pc, pred, ref, voxel_ml=0.5)
    assert len(out) == 2
    by_side = {p["side"]: p for p in out}
    r, le = by_side["right"], by_side["left"]
    assert r["ml"] == 48 * 0.5 and le["ml"] == 48 * 0.5
    assert abs(r["coverage"] - 1 / 3) < 1e-9 and le["coverage"] == 1.0
    assert (r["level"], r["ap"], r["ml_axis"]) == ("apical", "anterior", "medial")
    assert (le["level"], le["ap"], le["ml_axis"]) == ("basal", "posterior", "lateral")


def test_pooled_coverage_interval():
    """The bootstrap resamples whole cases and pools by volume: identical cases give a point, a big badly
    covered case widens it, cases without pleural consolidation are left out, one case gives None."""
    ev = load_script("evaluate_segmenter")
    same = [{"pleural_consolidation_ml": 10.0, "pleural_coverage": 0.8} for _ in range(4)]
    lo, hi = ev.pooled_coverage_interval(same)
    assert abs(lo - 0.8) < 1e-12 and abs(hi - 0.8) < 1e-12
    mixed = [{"pleural_consolidation_ml": 100.0, "pleural_coverage": 0.2},
             {"pleural_consolidation_ml": 10.0, "pleural_coverage": 1.0},
             {"pleural_consolidation_ml": 10.0, "pleural_coverage": 1.0},
             {"pleural_consolidation_ml": 0.0, "pleural_coverage": None}]
    lo, hi = ev.pooled_coverage_interval(mixed)
    pooled = (100 * 0.2 + 20 * 1.0) / 120
    assert lo < pooled < hi
    assert lo == 0.2 and hi == 1.0  # all-big and all-small resamples are both likely among 2000 draws
    assert ev.pooled_coverage_interval(mixed[:1] + mixed[3:]) is None


def test_score_agreement_means_per_set():
    ev = load_script("evaluate_segmenter")

    def row(set_name, model, ref):
        keys = ev.SCORE_KEYS
        return {"set": set_name, "scores": {"model": dict(zip(keys, model)), "reference": dict(zip(keys, ref))}}

    rows = [row("default", (4, 100, 5.0), (4, 100, 5.0)),
            row("pleural", (6, 150, 8.0), (8, 200, 10.0)),
            row("pleural", (9, 250, 12.0), (8, 200, 11.0)),
            row("pleural", (float("nan"), 250, 12.0), (8, 200, 11.0))]  # six-zone total not computable
    agg = ev.score_agreement(rows)
    assert agg["default"]["n"] == 1 and agg["default"]["six_zone_total"]["mean_absolute_difference"] == 0.0
    p = agg["pleural"]
    assert p["n"] == 3
    assert p["six_zone_total"]["mean_difference"] == -0.5  # (-2 + 1) / 2, the NaN case left out
    assert p["six_zone_total"]["mean_absolute_difference"] == 1.5
    assert p["zhang900_total"]["mean_difference"] == (-50 + 50 + 50) / 3
    assert p["percent_opacity"]["mean_absolute_difference"] == (2 + 1 + 1) / 3
    assert agg["all"]["n"] == 4 and agg["all"]["zhang900_total"]["reference_mean"] == 175.0
    assert "pleural" not in ev.score_agreement(rows[:1])
    nan_only = ev.score_agreement(rows[3:])["pleural"]["six_zone_total"]  # no computable six-zone total
    # no case has both totals: no figure, not the reference mean of cases the model has none for
    assert nan_only == {"n": 0, "mean_difference": None, "mean_absolute_difference": None, "model_mean": None,
                        "reference_mean": None}
    nan_ref = [row("default", (4, 0, 1.0), (float("nan"), 0, 1.0))]
    assert ev.score_agreement(nan_ref)["default"]["six_zone_total"]["reference_mean"] is None


def test_miss_probabilities_quantiles():
    """Quantiles of both probabilities over the missed voxels; nothing missed gives None."""
    ev = load_script("evaluate_segmenter")
    p_lung = np.linspace(0, 1, 101).astype(np.float16)
    got = ev.miss_probabilities(p_lung, np.zeros(101, np.float16))
    assert got["voxels"] == 101 and got["quantiles"] == list(ev.QUANTILES)
    np.testing.assert_allclose(got["lung"], ev.QUANTILES, atol=2e-3)
    assert got["lesion"] == [0.0] * len(ev.QUANTILES)
    assert ev.miss_probabilities(np.zeros(0, np.float16), np.zeros(0, np.float16)) is None


def test_lung_threshold_sweep_coverage_and_false_lung():
    """A lower lung threshold adds the missed voxels at or above it to the coverage, and the clean scan's
    voxels outside the teacher at or above it to the false lung; the mask's own voxels always count."""
    ev = load_script("evaluate_segmenter")
    covered = np.array([True, True, False, False, False, False])
    p_pc = np.array([0.9, 0.2, 0.45, 0.3, 0.05, 0.0], np.float16)
    in_mask = np.array([True, False, False, False])
    p_clean = np.array([0.1, 0.6, 0.35, 0.0], np.float16)
    rows = ev.lung_threshold_sweep(covered, p_pc, in_mask, p_clean, [0.5, 0.4, 0.25], voxel_ml=2.0)
    assert [r["lung_threshold"] for r in rows] == [0.5, 0.4, 0.25]
    assert [r["pleural_coverage"] for r in rows] == [2 / 6, 3 / 6, 4 / 6]
    assert [r["lung_ml_outside_teacher"] for r in rows] == [4.0, 4.0, 6.0]


def test_lesion_detection_by_size_and_density():
    """Lesions are connected pieces; detected when >= 10 % marked; false-positive pieces touch no lesion."""
    ev = load_script("evaluate_segmenter")
    ref = np.zeros((20, 20, 40), bool)
    pred = np.zeros_like(ref)
    hu = np.full(ref.shape, -850.0)
    ref[2:12, 2:12, 2:12] = True          # 1000 voxels, dense, 80 % marked
    hu[2:12, 2:12, 2:12] = 20.0
    pred[2:12, 2:12, 2:10] = True
    ref[2:5, 2:5, 20:23] = True           # 27 voxels, ground glass, 1 voxel marked (< 10 %): missed
    hu[2:5, 2:5, 20:23] = -600.0
    pred[2, 2, 20] = True
    ref[15:18, 15:18, 30:33] = True       # 27 voxels, ground glass, not marked
    hu[15:18, 15:18, 30:33] = -600.0
    pred[15:17, 2:4, 30:32] = True        # a false-positive piece of 8 voxels
    rows, fp = ev.lesion_detection(ref, pred, hu, voxel_ml=0.01)
    assert sorted((round(r["ml"], 2), r["dense"], r["detected"]) for r in rows) == [
        (0.27, False, False), (0.27, False, False), (10.0, True, True)]
    assert fp == [0.08]
    summ = ev.detection_summary(rows, fp, n_cases=2)
    assert summ["all"] == {"n": 3, "detected": 1, "sensitivity": 1 / 3}
    sizes = {b["size"]: b for b in summ["by_size"]}
    assert sizes["< 1 mL"]["sensitivity"] == 0.0 and sizes["10-100 mL"]["sensitivity"] == 1.0
    assert sizes[">= 100 mL"] == {"size": ">= 100 mL", "n": 0, "detected": 0, "sensitivity": None}
    dens = {b["density"]: b["sensitivity"] for b in summ["by_density"]}
    assert dens == {"ground glass": 0.0, "consolidation": 1.0}
    assert summ["fp_pieces_per_case"] == 0.5 and summ["fp_pieces_ml_median"] == 0.08
    assert summ["missed_p90_median"] is None
    p = np.where(ref, 0.3, 0.0).astype(np.float16)
    p[2:12, 2:12, 2:12] = 0.9
    rows, _ = ev.lesion_detection(ref, pred, hu, voxel_ml=0.01, p_lesion=p)
    assert sorted(round(r["p90"], 2) for r in rows) == [0.3, 0.3, 0.9]
    assert abs(ev.detection_summary(rows, [], n_cases=2)["missed_p90_median"] - 0.3) < 1e-3


def test_neighbour_map_and_miss_location():
    """Each lung voxel is labelled by what lies beyond it: the gap between the lungs (medial), the outer wall
    (lateral) or the floor (below); the misses are split the same way."""
    ev = load_script("evaluate_segmenter")
    ref = np.zeros((20, 10, 40), np.uint8)
    ref[2:18, 2:8, 4:16] = 1  # right lung, x 4-15
    ref[2:18, 2:8, 24:36] = 2  # left lung, x 24-35; the gap x 16-23 is the mediastinum
    nb = ev.neighbour_map(ref, (1.0, 1.0, 1.0))
    assert nb[0].max() == 0 and (nb[ref > 0] > 0).all()
    assert nb[9, 5, 15] == 1 and nb[9, 5, 24] == 1  # against the gap
    assert nb[9, 5, 4] == 2 and nb[9, 5, 35] == 2  # against the side walls
    assert nb[2, 5, 10] == 3  # on the floor
    pc = np.zeros(ref.shape, bool)
    pc[8:12, 4:6, 13:16] = True  # 24 voxels against the mediastinum (x 15 touches it)
    pc[8:12, 4:6, 4:6] = True  # 16 voxels against the wall
    covered = np.zeros(ref.shape, bool)
    covered[:, :, :14] = True  # the mask misses x 14-15 of the medial lesion (16 voxels)
    loc = ev.miss_location(pc, covered, nb, 0.5)
    assert loc["lateral"]["coverage"] == 1.0 and loc["lateral"]["missed_ml"] == 0.0
    medial_ml = loc["medial"]["ml"]
    assert loc["medial"]["missed_ml"] == 8.0 and loc["medial"]["share_of_misses"] == 1.0
    assert loc["below"]["coverage"] is None and loc["below"]["share_of_misses"] == 0.0
    pooled = ev.add_miss_locations([loc, loc])
    assert pooled["medial"]["ml"] == 2 * medial_ml and pooled["medial"]["share_of_misses"] == 1.0
    assert pooled["medial"]["coverage"] == loc["medial"]["coverage"]
