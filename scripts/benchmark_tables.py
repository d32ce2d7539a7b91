#!/usr/bin/env python
"""Time the table-level commands (``stats``, ``validate``, ``aggregate``) on a simulated cohort of N scans.

    python scripts/benchmark_tables.py                                # 2000 scans, 3 repeats, all three
    python scripts/benchmark_tables.py --scans 10000 --commands stats validate
    python scripts/benchmark_tables.py --scans 2000 --keep /tmp/cohort2k   # keep the generated inputs

The cohort is ctscore's own simulator (:func:`scoring.stats.simulate.make_cohort`) run in blocks of patients
with distinct seeds and ids, so that N can be a consortium's size: ``scans.csv``/``zones.csv`` as ``ctscore run``
writes them, ``clinical.csv`` and ``labs.csv``, and a reader sheet of two radiologists (six-zone per zone and total,
zhang900 and percent involvement totals, MosMed category; within one point / a few percent of the scores).
For ``aggregate`` every ok scan also gets ``OUT/<scan_id>/result.json`` and a per-scan record, cloned from one
real classical run of ``sample_dicoms/`` with the simulated scores put in (its QC pictures hard-linked).

Each repeat runs the command's Python twin (``run_stats(..., study="all")``, ``run_validation``, ``aggregate``)
in a fresh Python process and writes into a fresh folder; the figures are the median wall time of the call (imports
excluded: the libraries the commands load lazily, ``PRELOAD``, are imported before the clock starts), seconds per 1000
scans (the wall time over N: a fixed cost per call is spread over N too), and the median peak RSS of that process
(VmHWM; ru_maxrss without /proc).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics as stats_lib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COMMANDS = ("stats", "validate", "aggregate")
PATIENTS_PER_BLOCK = 100  # make_cohort gives about 8 scans per patient

# libraries the commands import lazily, inside the call: imported before the clock starts, so that the time is the
# command's work (stats imported about 1,090 modules in its first call, 0.9-1.3 s of it; validate 470, 0.3 s)
PRELOAD = ("matplotlib.pyplot", "matplotlib.backends.backend_agg", "statsmodels.api", "statsmodels.formula.api", "scipy.stats", "sklearn.metrics",
           "seaborn", "scikit_posthocs", "pyarrow.parquet", "PIL.Image", "psutil", "joblib")

# the call each repeat times, in a fresh process: argv = command, cohort folder, output folder
CHILD = r"""
import importlib, importlib.util, json, resource, sys, time
sys.path.insert(0, sys.argv[4])
import matplotlib
matplotlib.use("Agg")
for name in PRELOAD:
    try:
        if importlib.util.find_spec(name.split(".")[0]) is not None:
            importlib.import_module(name)
    except ImportError:
        pass
command, cohort, out = sys.argv[1], sys.argv[2], sys.argv[3]
if command == "stats":
    from scoring.stats.api import run_stats
    call = lambda: run_stats(cohort + "/scores", cohort + "/clinical.csv", cohort + "/labs.csv", "all", out)
elif command == "validate":
    from scoring.validation.api import run_validation
    call = lambda: run_validation(cohort + "/scores", cohort + "/readers.csv", out)
else:
    from pipeline.batch import aggregate
    call = lambda: aggregate(out)
before = set(sys.modules)
t0 = time.perf_counter()
call()
seconds = time.perf_counter() - t0
try:  # the peak of this process (ru_maxrss would carry the parent's over fork + exec)
    status = open("/proc/self/status").read()
    rss_mib = int(status.split("VmHWM:")[1].split()[0]) / 1024
except OSError:  # no /proc (macOS): ru_maxrss in bytes
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
imported = sorted(set(sys.modules) - before)
print(json.dumps({"seconds": seconds, "rss_mib": rss_mib, "imported_during_call": imported}))
"""
CHILD = CHILD.replace("PRELOAD", repr(PRELOAD), 1)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {text}")
    return value


def simulate(n_scans: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    """``scans``, ``zones``, ``clinical``, ``labs`` of about ``n_scans`` scans (whole patients, blocks of 100)."""
    from scoring.stats.simulate import make_cohort

    parts: dict[str, list[pd.DataFrame]] = {"scans": [], "zones": [], "clinical": [], "labs": []}
    total, block = 0, 0
    while total < n_scans:
        c = make_cohort(seed=seed * 100_003 + block, n_survivors=PATIENTS_PER_BLOCK * 3 // 4,
                        n_nonsurvivors=PATIENTS_PER_BLOCK // 4)
        # ids unique across blocks: patient hashes and scan ids prefixed, series UIDs given the block as a component
        tag = f"b{block:05d}"
        for key in ("scans", "zones"):
            c[key]["scan_id"] = tag + "-" + c[key]["scan_id"].astype(str)
        c["scans"]["patient_id"] = tag + "-" + c["scans"]["patient_id"].astype(str)
        c["scans"]["series_uid"] = c["scans"]["series_uid"].str.replace(".10.999.", f".10.999.{block + 1}.",
                                                                        regex=False)
        c["clinical"]["scores_patient_id"] = tag + "-" + c["clinical"]["scores_patient_id"].astype(str)
        for key in ("clinical", "labs"):
            c[key]["patient_id"] = tag + "-" + c[key]["patient_id"].astype(str)
        for key in parts:
            parts[key].append(c[key])
        total += len(c["scans"])
        block += 1
    out = {key: pd.concat(frames, ignore_index=True) for key, frames in parts.items()}
    # trim to n_scans, whole patients (the last patient may be cut: its scans stop earlier)
    out["scans"] = out["scans"].iloc[:n_scans]
    kept = set(out["scans"]["scan_id"])
    out["zones"] = out["zones"][out["zones"]["scan_id"].isin(kept)].reset_index(drop=True)
    patients = set(out["scans"]["patient_id"])
    out["clinical"] = out["clinical"][out["clinical"]["scores_patient_id"].isin(patients)].reset_index(drop=True)
    out["labs"] = out["labs"][out["labs"]["patient_id"].isin(set(out["clinical"]["patient_id"]))]
    return out


def reader_sheet(scans: pd.DataFrame, zones: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Two readers' long-form scores (docs/reference_schema.md), each near ctscore's."""
    rng = np.random.default_rng(seed + 1)
    ok = scans[scans["status"] == "ok"]
    six = zones[(zones["system"] == "six_zone") & zones["scan_id"].isin(set(ok["scan_id"]))]
    rows = []
    for reader in ("reader1", "reader2"):
        step = np.where(rng.random(len(six)) < 0.3, rng.choice([-1, 1], len(six)), 0)
        value = np.clip(pd.to_numeric(six["unit_score"]).to_numpy().astype(int) + step, 0, 4)
        rows.append(pd.DataFrame({"scan_id": six["scan_id"].to_numpy(), "system": "six_zone",
                                  "unit": (six["lung"] + "_" + six["unit"]).to_numpy(), "reader": reader,
                                  "value": value.astype(str)}))
        total = pd.Series(value, index=six["scan_id"].to_numpy()).groupby(level=0, sort=False).sum()
        rows.append(pd.DataFrame({"scan_id": total.index, "system": "six_zone", "unit": "total", "reader": reader,
                                  "value": total.to_numpy().astype(str)}))
        z900 = np.clip(np.round(pd.to_numeric(ok["zhang900_total"]) + rng.normal(0, 15, len(ok))), 0, 900)
        pct = np.clip(pd.to_numeric(ok["percent_opacity"]) * (1 + rng.normal(0, 0.15, len(ok))), 0, 100).round(2)
        mosmed = np.select([pct <= 0, pct < 25, pct < 50, pct < 75], ["CT-0", "CT-1", "CT-2", "CT-3"], "CT-4")
        for system, value in (("zhang900", z900.astype(int).astype(str)), ("percent_involvement", pct.astype(str)),
                              ("mosmed", mosmed)):
            rows.append(pd.DataFrame({"scan_id": ok["scan_id"].to_numpy(), "system": system, "unit": "total",
                                      "reader": reader, "value": np.asarray(value)}))
    return pd.concat(rows, ignore_index=True)


def _json_value(value):
    if isinstance(value, str) and value == "":  # an empty cell of the tables is null in result.json
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def template_run(work: Path) -> Path:
    """One classical ``ctscore run`` of ``sample_dicoms/``: the result.json and record that ``results`` clones."""
    from pipeline.run import run_pipeline

    out = work / "template"
    run_pipeline(REPO / "sample_dicoms", out, cfg={"segmentation": {"method": "classical"}})
    return out


def write_results(out: Path, template: Path, scans: pd.DataFrame, zones: pd.DataFrame) -> None:
    """``out/<scan_id>/result.json`` + ``out/.status/<scan_id>.json`` for every scan (records only for failed ones)."""
    scan_dir = next(p.parent for p in template.glob("*/result.json"))
    result_t = json.loads((scan_dir / "result.json").read_text())
    record_t = json.loads((template / ".status" / f"{scan_dir.name}.json").read_text())
    (out / ".status").mkdir(parents=True)
    zone_records: dict[str, list[dict]] = {}
    for row in zones.to_dict("records"):
        sid = row.pop("scan_id")
        zone_records.setdefault(sid, []).append({k: _json_value(v) for k, v in row.items()})
    pictures = [p for p in scan_dir.iterdir() if p.suffix == ".png"]
    for row in scans.to_dict("records"):
        row = {k: _json_value(v) for k, v in row.items()}
        sid = row["scan_id"]
        record = dict(record_t, scan_id=sid, series_uid=row["series_uid"], patient_id=row["patient_id"],
                      study_date=row["study_date"])
        if row["status"] != "ok":
            record.update(status="failed", code="NO_LUNG_FOUND", message="no lung found in this series")
        else:
            d = out / sid
            d.mkdir()
            result = copy.deepcopy(result_t)
            result.update(scan_id=sid, zones=zone_records.get(sid, []), qc_flags=[],
                          scores={**row, "segmenter": result_t["scores"].get("segmenter"), "qc_flags": ""})
            (d / "result.json").write_text(json.dumps(result))
            for picture in pictures:
                os.link(picture, d / picture.name)
        (out / ".status" / f"{sid}.json").write_text(json.dumps(record))


def write_cohort(folder: Path, n_scans: int, seed: int, with_results: bool) -> dict[str, int]:
    c = simulate(n_scans, seed)
    (folder / "scores").mkdir(parents=True)
    c["scans"].to_csv(folder / "scores" / "scans.csv", index=False)
    c["zones"].to_csv(folder / "scores" / "zones.csv", index=False)
    c["clinical"].to_csv(folder / "clinical.csv", index=False)
    c["labs"].to_csv(folder / "labs.csv", index=False)
    readers = reader_sheet(c["scans"], c["zones"], seed)
    readers.to_csv(folder / "readers.csv", index=False)
    if with_results:
        template = template_run(folder)
        write_results(folder / "results", template, c["scans"], c["zones"])
    return {"scans": len(c["scans"]), "ok": int((c["scans"]["status"] == "ok").sum()),
            "patients": len(c["clinical"]), "zone rows": len(c["zones"]), "lab rows": len(c["labs"]),
            "reader rows": len(readers)}


def time_command(command: str, cohort: Path, work: Path, repeat: int) -> dict[str, float]:
    if command == "aggregate":  # aggregate writes its tables into the results folder: a fresh copy each time
        out = work / f"aggregate-{repeat}"
        shutil.copytree(cohort / "results", out, copy_function=os.link)
    else:
        out = work / f"{command}-{repeat}"
    proc = subprocess.run([sys.executable, "-c", CHILD, command, str(cohort), str(out), str(REPO)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{command} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scans", type=positive_int, default=2000, help="cohort size in scans (default 2000)")
    p.add_argument("--repeats", type=positive_int, default=3, help="runs per command (default 3)")
    p.add_argument("--commands", nargs="+", choices=COMMANDS, default=list(COMMANDS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", metavar="DIR", help="write the cohort into DIR (a new folder) and keep it")
    a = p.parse_args(argv)
    if a.keep and Path(a.keep).exists():
        p.error(f"--keep {a.keep} exists; give a new folder")

    with tempfile.TemporaryDirectory(prefix="ctscore-tables-") as tmp:
        cohort = Path(a.keep) if a.keep else Path(tmp) / "cohort"
        sizes = write_cohort(cohort, a.scans, a.seed, with_results="aggregate" in a.commands)
        print(f"cohort: {', '.join(f'{v} {k}' for k, v in sizes.items())}  ({cohort})")
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"Python {platform.python_version()}, pandas {pd.__version__}")
        print(f"{'command':<10} {'median s':>9} {'min-max s':>15} {'s/1000 scans':>13} {'peak RSS MiB':>13}")
        for command in a.commands:
            runs = [time_command(command, cohort, Path(tmp), k) for k in range(a.repeats)]
            secs = [r["seconds"] for r in runs]
            med = stats_lib.median(secs)
            print(f"{command:<10} {med:9.2f} {min(secs):7.2f}-{max(secs):<7.2f} {1000 * med / sizes['scans']:13.2f} "
                  f"{stats_lib.median(r['rss_mib'] for r in runs):13.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
