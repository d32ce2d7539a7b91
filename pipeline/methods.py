"""A "Methods" paragraph for a paper, written from a run's own records (``ctscore methods OUT``).

Everything the text states is read from the output folder: ``scans.csv`` (versions, segmenter, model, device, counts,
slice thickness, scanners, QC flags, the scores' configuration hash), ``failures.csv`` (failure codes) and
``run.json`` (the resolved configuration: resampling, HU bands, score settings; package versions). Nothing is taken
from the defaults of the ctscore that writes the text: a setting the records do not hold is said to be unknown. The
text is a draft for the authors to check and edit, and says so.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.errors import CTScoreError

log = logging.getLogger(__name__)

#: The file ``ctscore methods OUT`` writes in OUT unless ``-o`` names another.
METHODS_NAME = "METHODS.md"

#: Package versions named in the text (run.json ``versions``), in this order; torch and MONAI only for a network.
NAMED_PACKAGES = ("pydicom", "SimpleITK", "numpy", "scipy", "scikit-image")
NETWORK_PACKAGES = ("torch", "monai")

#: Columns without which scans.csv is not a run's table.
REQUIRED_COLUMNS = ("scan_id", "status")

CITE_SIX_ZONE = ("Liao et al., Int J Med Sci 2021;18(1):29-41; Li et al., Theranostics 2020;10(14):6113-6121")
CITE_ZHANG = "Zhang et al., Respiratory Research 2020;21:180"
CITE_CHUNG = "Chung et al., Radiology 2020;295:202-207"
CITE_PAN = "Pan et al., Radiology 2020;295:715-721"
CITE_MOSMED = "Morozov et al., MosMedData, medRxiv 2020, doi:10.1101/2020.05.20.20100362"

ZHANG_LEVELS = "suprasternal notch, aortic arch, carina, bronchus intermedius and diaphragm dome"


def methods_text(out_dir: str | Path) -> str:
    """The Markdown "Methods" text of the run in ``out_dir`` (what ``ctscore methods OUT -o -`` prints).

    Read from ``scans.csv``, ``failures.csv`` and ``run.json`` of ``out_dir``, never from the current defaults; a
    missing ``run.json`` leaves the settings it holds unknown (said in the text). Raises CTScoreError:
    ``INPUT_NOT_FOUND`` (no such folder), ``NOTHING_TO_DESCRIBE`` (no readable ``scans.csv`` of a run in it).
    """
    out = Path(out_dir)
    scans = _read_scans(out)
    failures = _read_failures(out)
    run, run_problem = _read_run(out)
    return _compose(scans, failures, run, run_problem)


def write_methods(out_dir: str | Path, output: str | Path | None = None) -> Path:
    """Write :func:`methods_text` to ``output`` (default ``OUT/METHODS.md``), all or nothing; returns the path.
    Raises as :func:`methods_text`, and CTScoreError ``OUTPUT_UNWRITABLE`` when the file cannot be written."""
    from pipeline.outputs import atomic_write_bytes

    text = methods_text(out_dir)
    path = Path(output) if output is not None else Path(out_dir) / METHODS_NAME
    if path.is_dir():
        raise CTScoreError("OUTPUT_UNWRITABLE", "is a folder: give the file to write (e.g. METHODS.md)", path)
    try:
        atomic_write_bytes(path, text.encode("utf-8"))
    except OSError as exc:
        raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot write the methods text ({exc.strerror or exc})",
                           path) from exc
    return path


# --------------------------------------------------------------------------------------------------
# Reading the records


def _read_scans(out: Path):
    import pandas as pd

    if not out.is_dir():
        raise CTScoreError("INPUT_NOT_FOUND", "no such output folder" if not out.exists() else
                           "not a folder: give the output folder of a ctscore run", out)
    path = out / "scans.csv"
    if not path.is_file():
        hint = ""
        if (out / "shards").is_dir():
            hint = ": its shards were not merged; run `ctscore aggregate OUT` first"
        elif any(out.glob("scan-*/result.json")):
            hint = ": the run did not end; `ctscore aggregate OUT` writes the tables from its per-scan results"
        raise CTScoreError("NOTHING_TO_DESCRIBE", f"not the output folder of a ctscore run (no scans.csv){hint}",
                           out)
    try:
        scans = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise CTScoreError("NOTHING_TO_DESCRIBE", f"scans.csv cannot be read ({exc})", path) from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in scans.columns]
    if missing:
        raise CTScoreError("NOTHING_TO_DESCRIBE", f"scans.csv has no column {', '.join(missing)}: not the table of a "
                           "ctscore run", path)
    return scans


def _read_failures(out: Path):
    import pandas as pd

    path = out / "failures.csv"
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (OSError, ValueError) as exc:
        log.warning("failures.csv cannot be read (%s): failure codes are left out of the methods text", exc)
        return None


def _read_run(out: Path) -> tuple[dict[str, Any], str]:
    """run.json as a dict, and '' or why it could not be used."""
    path = out / "run.json"
    if not path.is_file():
        return {}, "there is no run.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("run.json cannot be read (%s): its settings are stated as unknown", exc)
        return {}, "run.json cannot be read"
    if not isinstance(data, dict):
        return {}, "run.json is not a JSON object"
    return data, ""


# --------------------------------------------------------------------------------------------------
# Small helpers


def _num(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _g(value: Any) -> str:
    """A number as a reader writes it: -750, 1.5, 0.25 (no -750.0)."""
    number = _num(value)
    if number is None:
        return str(value)
    return f"{number:g}"


def _md(text: str) -> str:
    """Header text (manufacturer, kernel) as literal Markdown: its *, _, |, ... shown, not taken as markup."""
    return re.sub(r"([\\`*_{}\[\]<>()#+|!~])", r"\\\1", " ".join(str(text).split()))


def _counted(counter: Counter, escape: bool = True) -> str:
    """"a (3), b (1)": most frequent first, then by name."""
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{_md(k) if escape else k} ({n})" for k, n in items)


def _values(scans, column: str) -> list[str]:
    if column not in scans.columns:
        return []
    return [v.strip() for v in scans[column].tolist()]


def _distinct(scans, column: str) -> list[str]:
    return sorted({v for v in _values(scans, column) if v})


def _get(cfg: Mapping[str, Any] | None, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _band(cfg: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    band = _get(cfg, f"hu_classes.{key}")
    if isinstance(band, (list, tuple)) and len(band) == 2 and all(_num(b) is not None for b in band):
        return _num(band[0]), _num(band[1])
    return None


# --------------------------------------------------------------------------------------------------
# The text


def _compose(scans, failures, run: dict[str, Any], run_problem: str) -> str:
    from pipeline import __version__

    ok = scans[scans["status"].str.strip() == "ok"]
    failed_ids = set(scans.loc[scans["status"].str.strip() != "ok", "scan_id"]) - {""}
    codes: Counter = Counter()
    if failures is not None and "scan_id" in failures.columns:
        failed_ids |= set(failures["scan_id"]) - {""}
        if "code" in failures.columns:
            codes = Counter(c.strip() or "no code" for c in failures["code"].tolist())
    n_ok, n_failed = len(ok), len(failed_ids - set(ok["scan_id"]))
    cfg = run.get("config") if isinstance(run.get("config"), Mapping) else None
    caveats: list[str] = []
    unknown: list[str] = []
    if run_problem:
        unknown.append(f"{run_problem}: the settings that only run.json records (resampling, HU bands, "
                       "score options, package versions) are unknown")
    elif cfg is None:
        unknown.append("run.json holds no configuration: the settings it would record are unknown")

    # software: the rows' own versions, segmenters, models and devices (failed rows have none)
    versions = Counter(v for v in _values(ok, "ctscore_version") if v)
    segmenters = Counter(v for v in _values(ok, "segmenter") if v)
    models = Counter(v for v in _values(ok, "model_id") if v)
    devices = Counter(v for v in _values(ok, "device") if v)
    hashes = Counter(v for v in _values(ok, "scores_config_sha256") if v)
    if not segmenters and isinstance(run.get("segmenter"), Mapping):  # no scan scored: what the run was set to use
        name, model = run["segmenter"].get("name"), run["segmenter"].get("model_id")
        segmenters = Counter([str(name)] if name else [])
        models = Counter([str(model)] if model else [])
    if len(versions) > 1:
        caveats.append(f"the scans were scored by several ctscore versions ({_counted(versions, False)}): scores of "
                       "different versions may differ; rescore them with one version, or analyse them apart")
    if len(segmenters) > 1 or len(models) > 1:
        caveats.append(f"the scans were segmented by several segmenters or models ({_counted(models or segmenters)})")
    if len(hashes) > 1:
        caveats.append(f"the scans were scored with {len(hashes)} different configurations (scores_config_sha256 "
                       f"{_counted(hashes, False)}); the settings stated here are those of run.json")
    if cfg is not None and hashes:
        from pipeline.config import scores_config_hash

        own = scores_config_hash(cfg)[:12]
        if own not in hashes:
            caveats.append("the configuration in run.json is not the one the scans were scored with (its hash "
                           f"{own} is none of the rows'): the settings stated here may not be those of the scores; "
                           "each scan's result.json holds its own")
    if len(devices) > 1:
        caveats.append(f"the network ran on several devices ({_counted(devices, False)}): CUDA runs in half "
                       "precision and its masks differ a little from the CPU's")

    paragraphs = [
        _software(run, versions, segmenters, models, devices, n_ok) + " " + _pipeline_text(cfg, segmenters),
        _scores_text(cfg, ok, n_ok) + " " + _qc_text(ok),
    ]
    bullets = _counts(ok, n_ok, n_failed, codes)
    lines = ["## Methods", ""]
    for p in paragraphs:
        lines += [p, ""]
    lines += bullets + [""]
    if unknown or caveats:
        lines += ["Caveats:", ""] + [f"- {c[0].upper()}{c[1:]}." for c in unknown + caveats] + [""]
    lines.append(_closing(run, hashes, __version__))
    return "\n".join(lines) + "\n"


def _software(run, versions: Counter, segmenters: Counter, models: Counter, devices: Counter, n_ok: int) -> str:
    if versions:
        ctscore = "ctscore " + " and ".join(sorted(versions))
    else:
        ctscore = ("ctscore (version not recorded)" if n_ok
                   else f"ctscore {run.get('ctscore_version') or '(version unknown)'}")
    network = any(s != "classical" for s in segmenters)
    pkg = run.get("versions") if isinstance(run.get("versions"), Mapping) else {}
    names = NAMED_PACKAGES + (NETWORK_PACKAGES if network else ())
    listed = [f"{name} {pkg[name]}" for name in names if pkg.get(name)]
    python = f"Python {run['python']}" if run.get("python") else "Python (version unknown)"
    env = python + (f" with {', '.join(listed)}" if listed else "")
    text = f"Chest CT series were scored automatically with {ctscore}, a chest CT lung-injury scoring tool ({env})."
    if not segmenters:
        return text + " The segmenter is not recorded."
    parts = []
    for name in sorted(segmenters):
        if name == "classical":
            parts.append("ctscore's classical segmenter (Hounsfield-unit thresholds and morphology, no trained model")
        elif name == "monai":
            parts.append("the convolutional neural network shipped with ctscore (MONAI")
        else:
            parts.append(f"the neural network of the model bundle \"{_md(name)}\" (MONAI")
    ids = ", ".join(f"`{m}`" for m in sorted(models))
    parts = [p + (f"; model id {ids})" if ids and len(parts) == 1 else ")") for p in parts]
    model_text = f" (model ids {ids})" if ids and len(segmenters) > 1 else ""
    device_text = ""
    if devices:
        where = " and ".join("a GPU (CUDA, half precision)" if d.startswith("cuda") else "the CPU" if d == "cpu"
                             else d for d in sorted(devices))
        device_text = f", run on {where}"
    return text + f" Lungs, airway and lesions were segmented by {' and '.join(parts)}{model_text}{device_text}."


def _pipeline_text(cfg, segmenters: Counter) -> str:
    s: list[str] = []
    spacing = _get(cfg, "resample.spacing_mm")
    if isinstance(spacing, (list, tuple)) and spacing:
        grid = " \u00d7 ".join(_g(v) for v in spacing)
        s.append(f"Images were converted to Hounsfield units (HU) and resampled to a {grid} mm grid for "
                 "segmentation; the masks were brought back to the original CT grid (nearest neighbour), where all "
                 "volumes and scores were computed.")
    else:
        s.append("Images were converted to Hounsfield units (HU) and resampled for segmentation (the working grid "
                 "is not recorded); volumes and scores were computed on the original CT grid.")
    faint, ggo, cons = _band(cfg, "faint_ggo"), _band(cfg, "ggo"), _band(cfg, "consolidation")
    pho, lmax = _get(cfg, "hu_classes.high_opacity_min_hu"), _get(cfg, "hu_classes.lesion_max_hu")
    if faint and ggo and cons:
        s.append(f"Lesion voxels were classified by attenuation as faint ground-glass opacity (below {_g(ggo[0])} HU, "
                 f"lesion voxels under {_g(faint[0])} HU included; this split of the ground-glass band is ctscore's "
                 "assumption, as no source gives HU limits for Zhang et al.'s 'frosted glass'), ground-glass opacity "
                 f"({_g(ggo[0])} to {_g(cons[0])} HU) and consolidation ({_g(cons[0])} HU and above)"
                 + (f"; lesion voxels at or above {_g(lmax)} HU (enhanced vessels, calcification, bone, metal) were "
                    "not counted as lesion" if lmax is not None else "")
                 + (f"; the percentage of high opacity counted lesion voxels above {_g(pho)} HU" if pho is not None
                    else "") + ".")
        if segmenters and all(n == "classical" for n in segmenters):
            s.append(f"The classical segmenter looks for lesions between {_g(faint[0])} and {_g(cons[1])} HU.")
    else:
        s.append("Lesion voxels were classified by attenuation into faint ground-glass opacity, ground-glass opacity "
                 "and consolidation (the HU bands used are not recorded).")
    s.append("Anatomical levels were found automatically: the carina from the segmented airway, the suprasternal "
             "notch from the sternum and the diaphragm domes from the lung bases; the bronchus intermedius, aortic "
             "arch and inferior pulmonary vein (IPV) levels were placed at fixed offsets from the carina and domes, "
             "calibrated on reference scans.")
    return " ".join(s)


def _scores_text(cfg, ok, n_ok: int) -> str:
    s: list[str] = []
    s.append("The six-zone score divided each lung at the carina and the IPV into upper, middle and lower zones, each "
             "scored 0 (no involvement), 1 (<25 %), 2 (25 to <50 %), 3 (50 to <75 %) or 4 (\u226575 %), total 0-24 "
             f"({CITE_SIX_ZONE}).")
    mode, half = _get(cfg, "scoring.zhang900.mode"), _get(cfg, "scoring.zhang900.slab_half_thickness_mm")
    rule, share = _get(cfg, "scoring.zhang900.density_rule"), _get(cfg, "scoring.zhang900.density_share")
    if mode == "slab":
        where = (f"in slabs of \u00b1{_g(half)} mm about five levels per lung ({ZHANG_LEVELS}; widened to half the "
                 "slice spacing on thicker slices)")
    elif mode == "zone":
        where = (f"in five zones per lung bounded by the midpoints between the {ZHANG_LEVELS} levels (the top zone "
                 "reaching the apex, the bottom one the base)")
    else:
        where = f"at five levels per lung ({ZHANG_LEVELS}; slab or zone mode not recorded)"
    if rule == "densest":
        density = (f"the densest class holding at least {_g(100 * _num(share))} % of the unit's lesion volume "
                   "(else the predominant class)" if _num(share) is not None else "the densest class")
    elif rule == "predominant":
        density = "the class with the largest lesion volume"
    else:
        density = "a rule not recorded"
    s.append(f"The extent \u00d7 density\u00b2 score (0-900; {CITE_ZHANG}) was measured {where}: extent 0-10 in 10 % "
             "steps (at least 1 when involved) and density 1 (faint ground glass), 2 (ground glass) or 3 "
             f"(consolidation), the density being {density}; each unit scored extent \u00d7 density\u00b2.")
    s.append("The MosMedData category (CT-0 to CT-4: no lesion, <25 %, 25 to <50 %, 50 to <75 %, \u226575 %; "
             f"{CITE_MOSMED}) was assigned from the percentage of opacity of both lungs.")
    n_lobar = sum(1 for a, b in zip(_values(ok, "lobar20_total") or [""] * n_ok,
                                    _values(ok, "lobar25_total") or [""] * n_ok) if a or b)
    if n_lobar:
        s.append(f"Lobar scores were computed for the {_plural(n_lobar, 'scan')} with a lobe segmentation: each lobe "
                 f"0-4 (total severity score 0-20; {CITE_CHUNG}) and 0-5 (CT severity score 0-25; {CITE_PAN}).")
    elif n_ok:
        why = ("lobar scoring was turned off" if _get(cfg, "scoring.lobar.enabled") is False
               else "no lobe segmentation was available")
        s.append(f"Lobar scores were not computed ({why}).")
    ml, pct = _get(cfg, "scoring.min_involvement_ml"), _get(cfg, "scoring.min_involvement_pct")
    if ml is not None and pct is not None:
        s.append(f"A zone or unit counted as involved only when its lesion volume reached {_g(ml)} mL and "
                 f"{_g(pct)} % of its lung volume; a scan was CT-0 when it held less than {_g(ml)} mL of lesion.")
    else:
        s.append("The minimum lesion volume and percentage for a zone to count as involved are not recorded.")
    s.append("Zones a scan did not cover (apex or base cut off) were left missing, not scored 0.")
    return " ".join(s)


def _flag_counts(ok) -> Counter:
    """How many scans carry each QC flag, by its name (the part before ':')."""
    counts: Counter = Counter()
    for cell in _values(ok, "qc_flags"):
        counts.update({f.split(":", 1)[0].strip() for f in cell.split(";") if f.strip()})
    return counts


def _estimated_landmarks(ok) -> tuple[int, Counter]:
    """(scans with an estimated landmark, scans per landmark name) from the LANDMARK_ESTIMATED flags."""
    per_name: Counter = Counter()
    n = 0
    for cell in _values(ok, "qc_flags"):
        names = {f.split(":", 1)[1].strip() for f in cell.split(";")
                 if f.strip().split(":", 1)[0] == "LANDMARK_ESTIMATED" and ":" in f}
        per_name.update(names)
        n += bool(names)
    return n, per_name


def _qc_text(ok) -> str:
    flagged = sum(1 for cell in _values(ok, "qc_flags") if cell)
    text = ("Each scan was checked by automated quality-control (QC) flags (coverage of the lung apices and bases, "
            "landmarks estimated rather than detected, HU calibration, contrast, noise, metal, among others) and "
            "QC images showing the lung and lesion masks, zone boundaries and landmark levels")
    if len(ok):
        text += f"; {_plural(flagged, 'scan')} carried at least one flag." if flagged else "; no scan carried a flag."
    else:
        text += "."
    return text + (" The segmentations and scores should be reviewed with these QC images before analysis "
                   "[state here whether, and by whom, they were reviewed, and which scans were excluded].")


def _counts(ok, n_ok: int, n_failed: int, codes: Counter) -> list[str]:
    lines = [f"- Scans scored: {n_ok}" + (f" of {n_ok + n_failed} selected series" if n_failed else "")]
    failed = f"- Scans that could not be scored: {n_failed}"
    if codes:
        failed += f" ({_counted(codes, False)})"
    lines.append(failed)
    patients = _distinct(ok, "patient_id")
    lines.append(f"- Patients: {len(patients)}" if "patient_id" in ok.columns else "- Patients: not recorded")
    thick = sorted(t for t in (_num(v) for v in _values(ok, "slice_thickness_mm")) if t is not None)
    if thick:
        rng = f"{_g(thick[0])} mm" if thick[0] == thick[-1] else f"{_g(thick[0])}-{_g(thick[-1])} mm"
        lines.append(f"- Slice thickness: {rng}" + (f" (median {_g(round(_median(thick), 3))} mm)"
                                                    if thick[0] != thick[-1] else ""))
    elif n_ok:
        lines.append("- Slice thickness: not recorded")
    for column, label in (("manufacturer", "Manufacturers"), ("kernel", "Reconstruction kernels")):
        if column in ok.columns and n_ok:
            lines.append(f"- {label}: " + _counted(Counter(v or "not recorded" for v in _values(ok, column))))
    if n_ok:
        n_est, names = _estimated_landmarks(ok)
        lines.append(f"- Scans with a landmark estimated instead of detected: {n_est}"
                     + (f" ({_counted(names, False)})" if names else ""))
        flags = _flag_counts(ok)
        lines.append("- QC flags (scans carrying each): " + (_counted(flags, False) if flags else "none"))
    return lines


def _median(values: list[float]) -> float:
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def _closing(run: dict[str, Any], hashes: Counter, version: str) -> str:
    today = datetime.now(timezone.utc).date().isoformat()
    if hashes:
        config = ("For reproducibility: scores configuration hash (scores_config_sha256) "
                  + ", ".join(f"`{h}`" for h in sorted(hashes)))
    else:
        config = "For reproducibility: the scores configuration hash is not recorded"
    if run.get("config_sha256"):
        config += f"; the full configuration is in run.json (config_sha256 `{run['config_sha256']}`)"
    return (f"{config}. This text was generated by ctscore {version} on {today} from the run's records and must be "
            "checked by the authors.")
