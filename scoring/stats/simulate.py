"""A simulated cohort with known effects, written as the pipeline and a researcher would write it.

Planted effects (everything else is noise):

- li2020: non-survivors have higher scores in every period (latent severity), serial scans over the
  five periods; non-survivors' lesions keep growing until death (day 18-32).
- liao2021: a latent inflammation level raises admission IL-6 and the chance of residual lesions at
  week 8 (six-zone >= 5, "persistent"); about 12 % of survivors drop out after day 40 and miss the week-8 scan (unclassified);
  IL-6 peaks about five days before the CT score.
- zhang2020: CRP, IL-6, D-dimer, LDH, neutrophils rise and lymphocytes fall with the current extent
  of lesions; glucocorticoids speed up the resolution after admission (larger score decrease).
- No effect: ``potassium`` (lab), ``age`` and ``sex`` (clinical) are independent of everything.

The tables have every column of the pipeline's (``pipeline.outputs.SCAN_COLUMNS``, ``ZONE_COLUMNS``), with the
measures consistent as the pipeline's are: the six-zone zones are thirds of their lung and add up to it (lesion,
ground glass, consolidation, faint ground glass, mean HU), the lungs to the scan; ground glass + consolidation =
lesion; high opacity (PHO) is the consolidation (every consolidation voxel above -200 HU); a zhang900 unit's class
volumes give its density grade by the default ``densest`` rule (share 0.2); the measured-only systems
(``anteroposterior``, ``peripheral_central``) split each lung and its lesion in two, posterior- and
peripheral-predominant (:data:`PART_SYSTEMS`). The measures are computed from the
simulated involvement without further random draws, so the other columns of a seed are those they always were.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

SIX_ZONE_WEIGHT = {"upper": 0.6, "middle": 1.0, "lower": 1.4}
LEVEL_WEIGHT = {"L1": 0.4, "L2": 0.7, "L3": 1.0, "L4": 1.3, "L5": 1.5}
LUNG_WEIGHT = {"right": 1.1, "left": 0.9}
ZONE_FLOOR_PCT = 1.0  # simulated involvement below this is "not involved"
#: lung volume share of a zhang900 unit (a 10 mm slab around its level: slab mode, configs/default.yaml)
LEVEL_SHARE = {"L1": 0.03, "L2": 0.04, "L3": 0.05, "L4": 0.05, "L5": 0.04}
#: mean HU of normal lung and of each lesion class (faint ground glass, ground glass, consolidation above the
#: -200 HU of high opacity), for the simulated mean_lung_hu
HU_NORMAL, HU_FAINT, HU_GGO, HU_CONSOLIDATION = -860.0, -650.0, -425.0, -100.0
#: the share of lesion-free lung that is well aerated (hu_classes.well_aerated): vessels and airway walls are not
#: (healthy chests of ../shared/data 81-88 %)
WELL_AERATED_SHARE = 0.87
#: %LAA-950 of every simulated scan (no emphysema; real chests of ../shared/data 0.03-3.8 %)
SIM_LOW_ATTENUATION_PCT = 0.5
#: the share of lesion-free lung that is hyperinflated (below -900 HU, hu_classes.aeration_edges), at this mean HU;
#: the rest of it is normally aerated (real chests of ../shared/data: see docs/scoring.md)
HYPERINFLATED_SHARE, HU_HYPERINFLATED = 0.05, -930.0
SIM_SLICES, SIM_SLICE_MM = 300, 1.0  # the scans.csv series description of a simulated scan
#: zones.csv's measured-only systems (no scores), each lung's two units as (unit, share of the lung, share of its
#: lesion): the anterior and posterior halves, and the peripheral rind (the outer third of the depth from the chest
#: wall: 55-65 % of a real lung) and the centre. The lesion lies as COVID-19's typically does, posterior and
#: peripheral (ricord_covid_419639 with the network: 92 % posterior, 67 % peripheral); a unit never holds more lesion
#: than its own volume, the other takes the rest.
PART_SYSTEMS = {"anteroposterior": (("anterior", 0.5, 0.3), ("posterior", 0.5, 0.7)),
                "peripheral_central": (("peripheral", 0.6, 0.75), ("central", 0.4, 0.25))}
LAB_UNITS = {"crp": "mg/L", "il6": "pg/mL", "il10": "pg/mL", "lymphocyte_count": "10^9/L",
             "neutrophil_count": "10^9/L", "wbc": "10^9/L", "lymphocyte_pct": "%", "neutrophil_pct": "%",
             "d_dimer": "mg/L FEU", "ldh": "U/L", "esr": "mm/h", "pct": "ng/mL", "ferritin": "ng/mL",
             "potassium": "mmol/L"}


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-x))


def _six_zone_points(pct: float) -> int:
    return 0 if pct <= 0 else 1 if pct < 25 else 2 if pct < 50 else 3 if pct < 75 else 4


def _mosmed(pct: float) -> str:
    return "CT-0" if pct <= 0 else "CT-1" if pct < 25 else "CT-2" if pct < 50 else "CT-3" if pct < 75 else "CT-4"


def _unit_measures(lung_ml: float, lesion_ml: float, cons_share: float, faint_share: float) -> dict[str, float]:
    """A unit's volumes (mL) by class, its high-opacity volume and the sum of its voxels' HU x mL: ``cons_share``
    of the lesion is consolidation (all of it high opacity), the rest ground glass, ``faint_share`` of that faint."""
    cons = lesion_ml * cons_share
    ggo = lesion_ml - cons
    faint = ggo * faint_share
    hu_ml = (HU_NORMAL * (lung_ml - lesion_ml) + HU_FAINT * faint + HU_GGO * (ggo - faint)
             + HU_CONSOLIDATION * cons)
    return {"lung": lung_ml, "lesion": lesion_ml, "ggo": ggo, "cons": cons, "faint": faint, "high": cons,
            "hu_ml": hu_ml}


def _unit_columns(m: dict[str, float]) -> dict[str, float]:
    """The measure columns of a zones.csv row (rounded as ``scoring.quantify.unit_columns`` rounds them)."""
    lung = m["lung"]
    return {"status": "ok", "lung_ml": round(lung, 2), "lesion_ml": round(m["lesion"], 2),
            "ggo_ml": round(m["ggo"], 2), "consolidation_ml": round(m["cons"], 2), "faint_ggo_ml": round(m["faint"], 2),
            "percent_high_opacity": round(100 * m["high"] / lung, 3), "mean_lung_hu": round(m["hu_ml"] / lung, 1)}


def _part_rows(scan_id: str, lung: str, lung_ml: float, totals: dict[str, float]) -> list[dict]:
    """The zones.csv rows of one lung's measured-only systems (:data:`PART_SYSTEMS`): each class of its lesion
    (``totals``, summed over its six zones) splits in the unit's share of the lesion, so that the two units add up to
    the lung, as the pipeline's do; no scores."""
    rows = []
    lesion = totals["lesion"]
    for system, ((unit_a, lung_a, lesion_a), (unit_b, lung_b, _)) in PART_SYSTEMS.items():
        in_a = min(max(lesion_a * lesion, lesion - lung_b * lung_ml), lung_a * lung_ml)
        share_a = in_a / lesion if lesion > 0 else 0.0
        for unit, lung_share, share in ((unit_a, lung_a, share_a), (unit_b, lung_b, 1.0 - share_a)):
            m = {key: share * totals[key] for key in ("lesion", "ggo", "cons", "faint", "high")}
            m["lung"] = unit_ml = lung_share * lung_ml
            m["hu_ml"] = (HU_NORMAL * (unit_ml - m["lesion"]) + HU_FAINT * m["faint"]
                          + HU_GGO * (m["ggo"] - m["faint"]) + HU_CONSOLIDATION * m["cons"])
            rows.append({"scan_id": scan_id, "system": system, "lung": lung, "unit": unit, **_unit_columns(m),
                         "involvement_pct": round(100 * m["lesion"] / unit_ml, 3)})
    return rows


def _aeration_columns(m: dict[str, float]) -> dict[str, float]:
    """The aeration compartments, lung tissue and gas of a scan whose class volumes are ``m`` (both lungs summed), as
    ``scoring.quantify.aeration_measures`` writes them: lesion-free lung is hyperinflated (HYPERINFLATED_SHARE) or
    normally aerated, faint ground glass normally aerated, ground glass poorly aerated, consolidation non-aerated;
    tissue (1 + HU/1000) x mL at each class's mean HU, so that lung_tissue_g agrees with mean_lung_hu."""
    healthy = m["lung"] - m["lesion"]
    hyper = HYPERINFLATED_SHARE * healthy
    tissue = {"hyperinflated": hyper * (1 + HU_HYPERINFLATED / 1000),
              "normally_aerated": (healthy * (1 + HU_NORMAL / 1000) - hyper * (1 + HU_HYPERINFLATED / 1000)
                                   + m["faint"] * (1 + HU_FAINT / 1000)),
              "poorly_aerated": (m["ggo"] - m["faint"]) * (1 + HU_GGO / 1000),
              "non_aerated": m["cons"] * (1 + HU_CONSOLIDATION / 1000)}
    volume = {"hyperinflated": hyper, "normally_aerated": healthy - hyper + m["faint"],
              "poorly_aerated": m["ggo"] - m["faint"], "non_aerated": m["cons"]}
    total = sum(tissue.values())
    return {**{f"{k}_volume_ml": round(v, 1) for k, v in volume.items()},
            **{f"{k}_tissue_g": round(v, 1) for k, v in tissue.items()},
            "lung_tissue_g": round(total, 1), "lung_gas_ml": round(m["lung"] - total, 1)}


def make_cohort(seed: int = 0, n_survivors: int = 68, n_nonsurvivors: int = 25,
                gc_effect_per_week: float = 0.9) -> dict[str, pd.DataFrame]:
    """Simulate a cohort; returns ``scans``, ``zones``, ``clinical``, ``labs`` DataFrames."""
    rng = np.random.default_rng(seed)
    n = n_survivors + n_nonsurvivors
    died = np.r_[np.zeros(n_survivors, bool), np.ones(n_nonsurvivors, bool)]
    rng.shuffle(died)
    sev = np.where(died, rng.normal(1.6, 0.6, n), rng.normal(0.0, 1.0, n))
    z_sev = (sev - sev.mean()) / sev.std()
    infl = 0.5 * z_sev + np.sqrt(0.75) * rng.normal(0.0, 1.0, n)  # inflammation tracks severity in part
    peak = 0.85 * _sigmoid(-0.6 + 1.0 * sev)
    persistent = (~died) & (rng.random(n) < _sigmoid(-0.4 + 3.0 * infl))
    residual = np.where(persistent, rng.uniform(0.07, 0.16, n), 0.0)
    gc = rng.random(n) < 0.45
    age = np.clip(rng.normal(56, 14, n), 18, 92).round()
    sex = rng.choice(["M", "F"], n)
    onset = pd.Timestamp("2020-01-20") + pd.to_timedelta(rng.integers(0, 60, n), unit="D")
    adm_day = rng.integers(1, 7, n)
    death_day = rng.integers(18, 33, n)
    t_peak = np.where(died, death_day, rng.uniform(9, 13, n))
    dropout = (~died) & (rng.random(n) < 0.12)
    thirds = np.quantile(sev[~died], [1 / 3, 2 / 3])
    severity = np.where(died | (sev > thirds[1]), "severe", np.where(sev > thirds[0], "moderate", "mild"))

    def extent(i: int, t: float) -> float:
        if died[i]:  # lesions keep growing until death
            return float(peak[i] * (0.45 + 0.55 * min(1.0, t / death_day[i])))
        shape = (t / t_peak[i]) ** 2 * np.exp(2 * (1 - t / t_peak[i])) if t > 0 else 0.0
        g = np.exp(-gc_effect_per_week * max(0.0, t - adm_day[i]) / 7) if gc[i] and not died[i] else 1.0
        return float(residual[i] + (peak[i] - residual[i]) * shape * g)

    pids = [f"SIM{i + 1:03d}" for i in range(n)]
    hashed = [hashlib.sha256(f"ctscore-sim-{p}".encode()).hexdigest()[:16] for p in pids]
    scan_rows, zone_rows, lab_rows = [], [], []
    for i in range(n):
        days = [int(adm_day[i])]
        while days[-1] < 26:
            days.append(days[-1] + int(rng.integers(4, 7)))
        while days[-1] < 44:
            days.append(days[-1] + int(rng.integers(6, 9)))
        days.append(int(rng.integers(max(49, days[-1] + 1), 56)))  # week 8 (days 49-55), after the last scan
        if died[i]:
            days = [d for d in days if d < death_day[i]]
        elif dropout[i]:
            days = [d for d in days if d <= 40]
        vol = {"right": rng.normal(2700, 300), "left": rng.normal(2350, 280)}
        for k, d in enumerate(days):
            f = extent(i, d)
            date = onset[i] + pd.Timedelta(days=d)
            scan_id = f"{hashed[i]}_{k:02d}"
            six, lesion, high = 0, 0.0, 0.0
            # the six zones are thirds of their lung: their measures add up to the lung's (scans.csv _right/_left)
            side = {lung: dict.fromkeys(("lesion", "ggo", "cons", "faint", "high", "hu_ml"), 0.0)
                    for lung in ("right", "left")}
            faint_share = 0.7 - 0.6 * min(1.0, f)  # faint ground glass gives way to denser lesions as they grow
            for lung in ("right", "left"):
                for unit, w in SIX_ZONE_WEIGHT.items():
                    pct = float(np.clip(100 * f * w * LUNG_WEIGHT[lung] * np.exp(rng.normal(0, 0.25)), 0, 100))
                    pct = 0.0 if pct < ZONE_FLOOR_PCT else round(pct, 2)
                    pts = _six_zone_points(pct)
                    six += pts
                    zone_lesion = pct / 100 * vol[lung] / 3
                    lesion += zone_lesion
                    high += zone_lesion * min(0.8, f)
                    m = _unit_measures(vol[lung] / 3, zone_lesion, min(0.8, f), faint_share)
                    for key in side[lung]:
                        side[lung][key] += m[key]
                    zone_rows.append({"scan_id": scan_id, "system": "six_zone", "lung": lung, "unit": unit,
                                      **_unit_columns(m), "involvement_pct": pct, "extent_score": pts,
                                      "density_grade": "", "unit_score": pts})
            z900 = 0
            for lung in ("right", "left"):
                for unit, w in LEVEL_WEIGHT.items():
                    pct = float(np.clip(100 * f * w * LUNG_WEIGHT[lung] * np.exp(rng.normal(0, 0.25)), 0, 100))
                    pct = 0.0 if pct < ZONE_FLOOR_PCT else round(pct, 2)
                    ext = int(min(10, np.ceil(pct / 10)))
                    dens = 0 if ext == 0 else 3 if (f > 0.3 and rng.random() < 0.6) else 1 if f < 0.08 else 2
                    z900 += ext * dens**2
                    # class shares that give this density grade by the densest rule (share 0.2): consolidation
                    # >= 25 % for 3; 10 % consolidation, 60 % ground glass for 2; 90 % faint ground glass for 1
                    cons_share, faint_share_unit = ((0.25 + 0.5 * min(1.0, f), 0.3 * (1 - min(1.0, f))) if dens == 3
                                                    else (0.1, 1 / 3) if dens == 2 else (0.0, 0.9))
                    unit_ml = vol[lung] * LEVEL_SHARE[unit]
                    m = _unit_measures(unit_ml, pct / 100 * unit_ml, cons_share, faint_share_unit)
                    zone_rows.append({"scan_id": scan_id, "system": "zhang900", "lung": lung, "unit": unit,
                                      **_unit_columns(m), "involvement_pct": pct, "extent_score": ext,
                                      "density_grade": dens, "unit_score": ext * dens**2})
            # anteroposterior, then peripheral_central (measured, not scored), each lung's rows, as a run orders them
            parts = [r for lung in ("right", "left") for r in _part_rows(scan_id, lung, vol[lung], side[lung])]
            zone_rows.extend(sorted(parts, key=lambda r: list(PART_SYSTEMS).index(r["system"])))  # stable
            lung_ml = vol["right"] + vol["left"]
            po = 100 * lesion / lung_ml
            per_lung = {}
            for lung, m in side.items():
                per_lung.update({
                    f"lesion_volume_ml_{lung}": round(m["lesion"], 1),
                    f"mean_lung_hu_{lung}": round(m["hu_ml"] / vol[lung], 1),
                    f"ggo_volume_ml_{lung}": round(m["ggo"], 1),
                    f"consolidation_volume_ml_{lung}": round(m["cons"], 1),
                    f"faint_ggo_volume_ml_{lung}": round(m["faint"], 1),
                    f"percent_opacity_{lung}": round(100 * m["lesion"] / vol[lung], 2),
                    f"percent_high_opacity_{lung}": round(100 * m["high"] / vol[lung], 2),
                    f"percent_well_aerated_{lung}": round(
                        100 * WELL_AERATED_SHARE * (vol[lung] - m["lesion"]) / vol[lung], 2)})
            well_aerated = WELL_AERATED_SHARE * (lung_ml - lesion)
            scan_rows.append({
                "scan_id": scan_id, "patient_id": hashed[i], "study_date": date.strftime("%Y%m%d"),
                "series_uid": f"1.2.826.0.1.3680043.10.999.{i + 1}.{k + 1}", "status": "ok",
                "segmenter": "simulated",
                "lung_volume_ml_right": round(vol["right"], 1), "lung_volume_ml_left": round(vol["left"], 1),
                "lesion_volume_ml": round(lesion, 1), "ggo_volume_ml": round(lesion - high, 1),
                "consolidation_volume_ml": round(high, 1),
                "faint_ggo_volume_ml": round(side["right"]["faint"] + side["left"]["faint"], 1),
                "percent_opacity": round(po, 2),
                "percent_high_opacity": round(100 * high / lung_ml, 2), "six_zone_total": six,
                "zhang900_total": z900, "mosmed_category": _mosmed(po),
                "mean_lung_hu": round((side["right"]["hu_ml"] + side["left"]["hu_ml"]) / lung_ml, 1), **per_lung,
                "well_aerated_volume_ml": round(well_aerated, 1),
                "percent_well_aerated": round(100 * well_aerated / lung_ml, 2),
                "percent_low_attenuation": SIM_LOW_ATTENUATION_PCT,
                **_aeration_columns({"lung": lung_ml, **{key: side["right"][key] + side["left"][key]
                                                         for key in side["right"]}}),
                # no lobe map (lobar totals empty, as a run of the classical segmenter), whole lungs in view
                "apex_covered": True, "base_covered": True, "qc_flags": "", "n_slices": SIM_SLICES,
                "slice_thickness_mm": SIM_SLICE_MM, "manufacturer": "simulated", "kernel": "",
                "patient_position": "HFS"})
            # labs drawn on the scan day (15 % the day before), each value missing 8 % of the time
            lab_date = date - pd.Timedelta(days=1) if rng.random() < 0.15 else date
            il6_pulse = 1.3 * np.exp(-(((d - (t_peak[i] - 5)) / 4.0) ** 2))
            lym = float(np.exp(np.log(1.6) - 1.6 * f + rng.normal(0, 0.22)))
            neu = float(np.exp(np.log(3.2) + 1.3 * f + rng.normal(0, 0.22)))
            wbc = neu + lym + float(rng.uniform(0.4, 0.9))
            values = {
                "crp": np.exp(1.2 + 3.5 * f + 0.2 * infl[i] + rng.normal(0, 0.35)),
                "il6": np.exp(1.6 + 3.0 * f + 1.2 * infl[i] + il6_pulse + rng.normal(0, 0.25)),
                "il10": np.exp(np.log(5) + 1.5 * f + rng.normal(0, 0.4)),
                "lymphocyte_count": lym, "neutrophil_count": neu, "wbc": wbc,
                "lymphocyte_pct": 100 * lym / wbc, "neutrophil_pct": 100 * neu / wbc,
                "d_dimer": np.exp(np.log(0.4) + 2.8 * f + rng.normal(0, 0.45)),
                "ldh": 170 + 380 * f + rng.normal(0, 30), "esr": max(2.0, 14 + 55 * f + rng.normal(0, 8)),
                "pct": np.exp(np.log(0.05) + 2.0 * f + rng.normal(0, 0.5)),
                "ferritin": np.exp(np.log(280) + 1.5 * f + rng.normal(0, 0.5)),
                "potassium": rng.normal(4.2, 0.4),
            }
            for analyte, v in values.items():
                if rng.random() < 0.08:
                    continue
                lab_rows.append({"patient_id": pids[i], "date": lab_date.strftime("%Y-%m-%d"), "analyte": analyte,
                                 "value": round(float(v), 3), "unit": LAB_UNITS[analyte]})
        if i % 17 == 0:  # a failed series the statistics must ignore
            scan_rows.append({"scan_id": f"{hashed[i]}_failed", "patient_id": hashed[i],
                              "study_date": (onset[i] + pd.Timedelta(days=int(adm_day[i]))).strftime("%Y%m%d"),
                              "series_uid": f"1.2.826.0.1.3680043.10.999.{i + 1}.99", "status": "failed"})
    clinical = pd.DataFrame({
        "patient_id": pids, "scores_patient_id": hashed, "age": age.astype(int), "sex": sex,
        "onset_date": onset.strftime("%Y-%m-%d"),
        "admission_date": (onset + pd.to_timedelta(adm_day, unit="D")).strftime("%Y-%m-%d"),
        "outcome": np.where(died, "non-survivor", "survivor"), "severity": severity,
        "glucocorticoid": np.where(gc, "yes", "no"),
        "treatment_date": (onset + pd.to_timedelta(adm_day, unit="D")).strftime("%Y-%m-%d"),
    })
    from pipeline.outputs import SCAN_COLUMNS, ZONE_COLUMNS

    # the pipeline's columns in its order (a failed series has only its identifiers and status, as there)
    scans = pd.DataFrame(scan_rows).reindex(columns=SCAN_COLUMNS)
    zones = pd.DataFrame(zone_rows).reindex(columns=ZONE_COLUMNS)
    # whole points, empty on the measured-only rows (as a run writes them: "4", not "4.0")
    zones[["extent_score", "unit_score"]] = zones[["extent_score", "unit_score"]].astype("Int64")
    labs = pd.DataFrame(lab_rows)
    log.info("simulated %d patients, %d scans, %d lab values", n, len(scans), len(labs))
    return {"scans": scans, "zones": zones, "clinical": clinical, "labs": labs}


def write_cohort(out_dir: str | Path, seed: int = 0, n_survivors: int = 68, n_nonsurvivors: int = 25) -> dict[str, Path]:
    """Write ``scores/scans.csv``, ``scores/zones.csv``, ``clinical.csv`` and ``labs.csv`` under ``out_dir``."""
    out = Path(out_dir)
    (out / "scores").mkdir(parents=True, exist_ok=True)
    c = make_cohort(seed=seed, n_survivors=n_survivors, n_nonsurvivors=n_nonsurvivors)
    paths = {"scans": out / "scores" / "scans.csv", "zones": out / "scores" / "zones.csv",
             "clinical": out / "clinical.csv", "labs": out / "labs.csv"}
    from pipeline.outputs import atomic_write_bytes

    for key, p in paths.items():  # atomic: `ctscore stats` reads them
        atomic_write_bytes(p, c[key].to_csv(index=False).encode())
    paths["scores"] = out / "scores"
    return paths
