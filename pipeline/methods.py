"""A "Methods" paragraph for a paper, written from a run's own records (``ctscore methods OUT``).

Everything the text states is read from the output folder: ``scans.csv`` (versions, segmenter, model, device, counts,
slice thickness, scanners, QC flags, the scores' configuration hash), ``failures.csv`` (failure codes) and
``run.json`` (the resolved configuration: resampling, HU bands, score settings; package versions) and each scored
scan's ``result.json`` (its own configuration and package versions: a resumed run or merged shards hold several;
settings that differ are named, and segmenter settings other than those its model card measured). Nothing is taken
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

from pipeline import version_key
from pipeline.errors import CTScoreError
from pipeline.outputs import check_tables_current

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
CITE_COLOMBI = "Colombi et al., Radiology 2020;296:E86-E96"
CITE_GATTINONI = ("Gattinoni et al., N Engl J Med 2006;354:1775-1786; Gattinoni et al., Am J Respir Crit Care Med "
                  "2001;164:1701-1711")
CITE_MOSMED = "Morozov et al., MosMedData, medRxiv 2020, doi:10.1101/2020.05.20.20100362"

ZHANG_LEVELS = "suprasternal notch, aortic arch, carina, bronchus intermedius and diaphragm dome"

#: The in-sample error of the levels placed at fixed offsets, on the six reference scans they were calibrated on
#: (``python scripts/landmark_accuracy.py``, ../shared/data/landmarks/reference.csv; median / maximum mm).
OFFSET_LEVEL_ERRORS_MM = {"IPV": (3.0, 6.6), "aortic arch": (2.8, 7.1), "bronchus intermedius": (2.8, 3.9)}

#: What the text states of the shipped network and of the classical segmenter (their model card's figures).
EVALUATION_JSON = Path(__file__).resolve().parents[1] / "segmentation" / "weights" / "evaluation.json"


def methods_text(out_dir: str | Path, inventory_from: str | Path | None = None,
                 exclude: str | Path | Any = None) -> str:
    """The Markdown "Methods" text of the run in ``out_dir`` (what ``ctscore methods OUT -o -`` prints).

    ``inventory_from``: the folder whose ``inventory.csv`` gives the stacks found (default ``out_dir``; ``ctscore
    share`` names the original output folder, as it does not share that file: only its counts are stated).
    ``exclude``: the scans excluded at QC review (``--exclude``, the list given to ``ctscore stats`` / ``validate``;
    a CSV path or a DataFrame of it, :mod:`scoring.exclusions`): the text then says how many of the scored scans
    were excluded, and why, in place of a bracketed request to say so (EXCLUSIONS_INVALID when a row names no scan
    of the run).

    Read from ``scans.csv``, ``failures.csv`` and ``run.json`` of ``out_dir``, never from the current defaults; a
    missing ``run.json`` leaves the settings it holds unknown (said in the text). Raises CTScoreError:
    ``INPUT_NOT_FOUND`` (no such folder), ``NOTHING_TO_DESCRIBE`` (no readable ``scans.csv`` of a run in it).
    """
    out = Path(out_dir)
    scans = _read_scans(out)
    failures = _read_failures(out)
    run, run_problem = _read_run(out)
    excluded = None
    if exclude is not None:
        from scoring.exclusions import read_exclusions

        excluded = read_exclusions(exclude, scans)  # BAD_OPTION for a value that is no path or DataFrame
        excluded.check_leaves_some(set(scans.loc[scans["status"].str.strip() == "ok", "scan_id"]),  # as stats
                                   None if excluded.source == "a DataFrame" else exclude)
    return _compose(scans, failures, run, run_problem,
                    _read_inventory(Path(inventory_from) if inventory_from is not None else out),
                    moves=_reader_moves(out, scans), exclusions=excluded, records=_scan_records(out, scans))


#: a scan id as ctscore makes them (a folder of OUT): a scans.csv row naming another path is not read
_SAFE_ID = re.compile(r"^scan-[0-9a-f]{6,64}$")


def _reader_moves(out: Path, scans) -> dict[str, list[float]]:
    """How far readers moved ctscore's levels (level -> |reader - ctscore| mm, one per scan), from the result.json of
    the scans flagged LANDMARK_BY_READER: SCORING.md counts landmark error in mm as a quality figure of its own, and
    a reader's corrections measure it on the cohort itself. Levels ctscore did not have are left out."""
    moves: dict[str, list[float]] = {}
    if "qc_flags" not in scans.columns or "status" not in scans.columns:
        return moves
    for sid, status, flags in zip(scans["scan_id"], scans["status"], scans["qc_flags"]):
        if str(status).strip() != "ok" or "LANDMARK_BY_READER" not in str(flags) or not _SAFE_ID.match(str(sid)):
            continue
        try:
            result = json.loads((out / str(sid) / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for name, lm in (result.get("landmarks") or {}).items():
            if isinstance(lm, dict) and lm.get("method") == "reader" and isinstance(lm.get("ctscore_z_mm"), (int, float)) \
                    and isinstance(lm.get("z_mm"), (int, float)):
                moves.setdefault(name, []).append(abs(float(lm["z_mm"]) - float(lm["ctscore_z_mm"])))
    return moves


def _scan_records(out: Path, scans) -> dict[str, dict[str, Any]]:
    """What each scored scan's result.json records of how it was made: scan id -> {"config", "segmenter" (its name),
    "python", "versions"}. A resumed run or merged shards hold scans made by several processes, with their own
    configurations and package versions; run.json records the last process's only. Scans without a readable
    result.json are left out (the text then falls back on run.json)."""
    records: dict[str, dict[str, Any]] = {}
    for sid, status in zip(scans["scan_id"], scans["status"]):
        if str(status).strip() != "ok" or not _SAFE_ID.match(str(sid)):
            continue
        try:
            result = json.loads((out / str(sid) / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(result, dict) or not isinstance(result.get("config"), Mapping):
            continue
        env = result.get("environment") if isinstance(result.get("environment"), Mapping) else {}
        seg = result.get("segmenter") if isinstance(result.get("segmenter"), Mapping) else {}
        records[str(sid)] = {"config": result["config"], "segmenter": str(seg.get("name") or ""),
                             "python": str(env.get("python") or ""),
                             "versions": env.get("versions") if isinstance(env.get("versions"), Mapping) else {}}
    return records


def write_methods(out_dir: str | Path, output: str | Path | None = None, exclude: str | Path | Any = None,
                  overwrite: bool = False) -> Path:
    """Write :func:`methods_text` to ``output`` (default ``OUT/METHODS.md``), all or nothing; returns the path.

    A file already there is replaced only when it is what ctscore last wrote there from OUT (its sha256 is kept in
    :data:`WRITTEN_RECORD`), holds the same text, or ``overwrite`` is given: the text is a draft its authors are told
    to check and edit, and a file edited since (or not written by ``ctscore methods`` from OUT) is refused.

    Raises as :func:`methods_text`, and CTScoreError ``OUTPUT_EXISTS`` (the file there was edited since ctscore wrote
    it, or ctscore did not write it), ``OUTPUT_UNWRITABLE`` when the file cannot be written, ``BAD_OPTION`` for an
    ``overwrite`` that is not a bool."""
    import hashlib

    from pipeline.outputs import atomic_write_bytes

    if not isinstance(overwrite, bool):
        raise CTScoreError("BAD_OPTION", f"overwrite must be True or False, not {overwrite!r}")
    out = Path(out_dir)
    text = methods_text(out_dir, exclude=exclude)
    path = Path(output) if output is not None else out / METHODS_NAME
    if path.is_dir():
        raise CTScoreError("OUTPUT_UNWRITABLE", "is a folder: give the file to write (e.g. METHODS.md)", path)
    data = text.encode("utf-8")
    key = _record_key(out, path)
    if not overwrite and (path.exists() or path.is_symlink()):
        try:
            old: bytes | None = path.read_bytes()
        except OSError:
            old = None
        if old != data:
            last = _written(out).get(key)
            if old is not None and last == hashlib.sha256(old).hexdigest():
                pass  # what ctscore wrote, not edited since: replaced
            else:
                why = ("was edited since ctscore wrote it" if last else
                       "was not written by `ctscore methods` from this output folder (or was written by a ctscore "
                       "older than 0.18.0), so it may hold edits")
                raise CTScoreError("OUTPUT_EXISTS", f"{path.name} {why}: it is not replaced (-o writes another "
                                   "file; --overwrite, Python overwrite=True, replaces it and the edits are lost)",
                                   path)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot write the methods text ({exc.strerror or exc})",
                           path) from exc
    _remember(out, key, hashlib.sha256(data).hexdigest())
    return path


#: ``OUT/.status/methods_written.txt``: the sha256 of each file ``ctscore methods`` last wrote from OUT and its path
#: (relative to OUT when inside it), one a line as sha256sum writes them: a file there that differs was edited since
#: and is not replaced without ``overwrite``. Not ``*.json``: those are the per-scan records.
WRITTEN_RECORD = Path(".status") / "methods_written.txt"


def _record_key(out: Path, path: Path) -> str:
    import os

    target = Path(os.path.abspath(path))
    try:
        return target.relative_to(Path(os.path.abspath(out))).as_posix()
    except ValueError:
        return str(target)


def _written(out: Path) -> dict[str, str]:
    """The record of what ``ctscore methods`` last wrote from ``out``: path -> sha256 (empty when there is none)."""
    record = out / WRITTEN_RECORD
    if record.parent.is_symlink() or record.is_symlink():
        return {}
    try:
        lines = record.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        return {}
    found = {}
    for line in lines:
        digest, sep, name = line.partition("  ")
        if sep and re.fullmatch(r"[0-9a-f]{64}", digest):
            found[name] = digest
    return found


def _remember(out: Path, key: str, digest: str) -> None:
    """Record ``digest`` as what was written at ``key`` (warned, not raised, when the record cannot be written: the
    next run then refuses to replace the file without ``overwrite``)."""
    from pipeline.outputs import atomic_write_bytes

    record = out / WRITTEN_RECORD
    if record.parent.is_symlink() or record.is_symlink() or "\n" in key:
        return
    written = {**_written(out), key: digest}
    try:
        atomic_write_bytes(record, "".join(f"{d}  {k}\n" for k, d in sorted(written.items())).encode("utf-8"))
    except OSError as exc:
        log.warning("cannot record what ctscore methods wrote in %s (%s): the next `ctscore methods` will not "
                    "replace it without --overwrite", record, exc.strerror or exc)


# --------------------------------------------------------------------------------------------------
# Reading the records


def _read_scans(out: Path):
    import pandas as pd

    if not out.is_dir():
        raise CTScoreError("INPUT_NOT_FOUND", "no such output folder" if not out.exists() else
                           "not a folder: give the output folder of a ctscore run", out)
    path = out / "scans.csv"
    check_tables_current(out)  # TABLES_STALE: a run began scoring into OUT and has not written its tables
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


def _read_optional(path: Path, left_out: str):
    """An optional table of the run as text, or None when it is absent or unreadable (warned: ``left_out`` says
    what the text then lacks)."""
    import pandas as pd

    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (OSError, ValueError) as exc:
        log.warning("%s cannot be read (%s): %s", path.name, exc, left_out)
        return None


def _read_failures(out: Path):
    return _read_optional(out / "failures.csv", "failure codes are left out of the methods text")


def _read_inventory(out: Path):
    """inventory.csv (every file and stack found, with the selection's decision), or None."""
    inv = _read_optional(out / "inventory.csv", "the stacks found are left out of the methods text")
    return inv if inv is not None and {"stack_id", "decision"} <= set(inv.columns) else None


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


def _evaluation() -> dict[str, Any]:
    """segmentation/weights/evaluation.json ({} when it cannot be read: the text then asks the authors)."""
    try:
        data = json.loads(EVALUATION_JSON.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s cannot be read (%s): the network's evaluation is left for the authors to state",
                    EVALUATION_JSON, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _shipped_ids(evaluation: Mapping[str, Any]) -> set[str]:
    """The model ids of the network shipped with this ctscore: those its evaluation names (evaluation.json's
    ``model_ids``, whose figures the text quotes), not the id of whatever segmentation/weights holds now (a model
    trained or copied into that folder is not the network those figures describe). Only where evaluation.json names
    none (unreadable, or without ``model_ids``: no figures are quoted then) the folder's manifest id stands in."""
    ids = {str(m) for m in evaluation.get("model_ids") or []}
    if ids:
        return ids
    from segmentation.monai_segmenter import shipped_model_id

    return {shipped_model_id()} - {None}


def _shipped_meta() -> dict[str, Any]:
    """The shipped network's model.yaml (its grid and lesion threshold; the model id covers its bytes)."""
    import yaml

    try:
        meta = yaml.safe_load((EVALUATION_JSON.parent / "model.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _said(value: Any) -> str:
    """A configuration value as its YAML reads: true, 50, -400, "slab" as slab, [1, 2]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return _g(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_said(v) for v in value) + "]"
    return _md(str(value))


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"scoring.zhang900.mode": "slab", ...}: the leaves of a nested configuration by their dotted keys."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


#: How many differing or changed keys a sentence names before it says how many more there are.
MAX_KEYS_NAMED = 10


def _named_keys(items: list[str], where: str) -> str:
    """"a, b, c" of at most :data:`MAX_KEYS_NAMED` items, then how many more (and ``where`` they are)."""
    if len(items) <= MAX_KEYS_NAMED:
        return "; ".join(items)
    return "; ".join(items[:MAX_KEYS_NAMED]) + f"; and {len(items) - MAX_KEYS_NAMED} more ({where})"


def _differing_settings(configs: list[Mapping[str, Any]]) -> list[str]:
    """The settings whose values differ between the scans' configurations, as the run read them
    (:func:`pipeline.config.read_settings`, secrets redacted; the segmenter itself, said apart, left out):
    ["scoring.zhang900.mode slab (1 scan), zone (1 scan)", ...]. A key only some configurations hold (another
    segmenter's section) is compared among those that hold it."""
    if len(configs) < 2:
        return []
    from pipeline.config import REFUSAL_ONLY_KEYS, read_settings, redact_secrets

    values: dict[str, Counter] = {}
    for cfg in configs:
        try:
            flat = _flat(redact_secrets(read_settings(cfg)) or {})
        except (TypeError, ValueError, AttributeError):
            continue
        for key, value in flat.items():
            # what does not change a scan's scores (its output files, refusal-only limits) is no setting to state,
            # and where the lobe maps lie is a path (only whether there are some: scores_config_hash's rules)
            if key.startswith("outputs.") or key in {f"loading.{k}" for k in REFUSAL_ONLY_KEYS}:
                continue
            if key == "scoring.lobar.lobes_dir":
                value = "given" if value else value
            values.setdefault(key, Counter())[json.dumps(value, sort_keys=True, default=str)] += 1
    out = []
    for key in sorted(values):
        if key == "segmentation.method" or len(values[key]) < 2:
            continue
        seen = sorted(values[key].items(), key=lambda kv: (-kv[1], kv[0]))
        out.append(f"{key} " + ", ".join(f"{_said(json.loads(v))} ({_plural(n, 'scan')})" for v, n in seen))
    return out


#: Network options that do not change the masks (how many windows go to the device at once).
NO_EFFECT_OPTIONS = ("sw_batch_size",)


def _changed_segmentation(configs: list[Mapping[str, Any]], network: bool,
                          meta: Mapping[str, Any] | None = None) -> list[str]:
    """The segmentation settings of ``configs`` (those of the scans one segmenter made) that are not those its model
    card figures were measured with: ctscore's default configuration (its ``segmentation`` section: the flat keys for
    the classical segmenter, ``segmentation.monai`` and min_lung_volume_ml for the network) and, for a network
    option the defaults do not hold (lesion_threshold), the shipped model.yaml (``meta``). ["segmentation.ggo_delta_hu
    50 (default 100)", ...]; a key a configuration does not hold (an older ctscore) is not compared."""
    from pipeline.config import SHARED_SEGMENTATION_KEYS, default_config

    defaults = default_config()["segmentation"]
    if network:
        measured = {f"monai.{k}": v for k, v in (defaults.get("monai") or {}).items()}
        measured["min_lung_volume_ml"] = defaults.get("min_lung_volume_ml")
    else:
        measured = {k: v for k, v in defaults.items() if not isinstance(v, Mapping)
                    and (k not in SHARED_SEGMENTATION_KEYS or k == "min_lung_volume_ml")}
    seen: dict[str, list[Any]] = {}
    for cfg in configs:
        seg = _get(cfg, "segmentation")
        if not isinstance(seg, Mapping):
            continue
        if network:
            opts = seg.get("monai") if isinstance(seg.get("monai"), Mapping) else {}
            own = {f"monai.{k}": v for k, v in opts.items() if k not in NO_EFFECT_OPTIONS}
            if "min_lung_volume_ml" in seg:
                own["min_lung_volume_ml"] = seg["min_lung_volume_ml"]
        else:
            own = {k: v for k, v in seg.items() if k in measured}
        for key, value in own.items():
            if key in measured:
                reference, known = measured[key], True
            elif meta and key.removeprefix("monai.") in meta:
                reference, known = meta[key.removeprefix("monai.")], True
            else:
                reference, known = None, False
            if known and (value == reference or (_num(value) is not None and _num(value) == _num(reference)
                                                  and not isinstance(value, bool))):
                continue
            if value not in seen.setdefault(key, []):
                seen[key].append(value)
    out = []
    for key in sorted(seen):
        ref = measured.get(key, (meta or {}).get(key.removeprefix("monai.")))
        was = (f" (default {_said(ref)})" if key in measured else
               f" (model.yaml {_said(ref)})" if ref is not None else " (no default)")
        out.append(f"segmentation.{key} " + " and ".join(_said(v) for v in seen[key]) + was)
    # the working grid the masks are made on: the model card's figures are on the default one (a review: a 3 mm
    # grid was credited with them)
    grid = default_config()["resample"].get("spacing_mm")
    grids = []
    for cfg in configs:
        value = (_get(cfg, "resample") or {}).get("spacing_mm") if isinstance(_get(cfg, "resample"), Mapping) else None
        if value is not None and grid is not None and [float(v) for v in value] != [float(v) for v in grid] \
                and value not in grids:
            grids.append(value)
    if grids:
        out.append("resample.spacing_mm " + " and ".join(_said(v) for v in grids) + f" (default {_said(grid)})")
    return out


# --------------------------------------------------------------------------------------------------
# The text


def _compose(scans, failures, run: dict[str, Any], run_problem: str, inventory=None,
             moves: Mapping[str, list[float]] | None = None, exclusions=None,
             records: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    from pipeline import __version__

    records = records or {}

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
    differing = _differing_settings([r["config"] for r in records.values()])
    if differing:
        caveats.append("the scans were made with settings that differ between them (a resumed run or merged shards): "
                       + _named_keys(differing, "each scan's result.json") + "; the settings stated in the text are "
                       "those of run.json [state each group's, or analyse the groups apart]")
    if len(devices) > 1:
        caveats.append(f"the network ran on several devices ({_counted(devices, False)}): CUDA runs in half "
                       "precision and its masks differ a little from the CPU's")

    monai_models = Counter(m for m, n in zip(_values(ok, "model_id"), _values(ok, "segmenter")) if n == "monai" and m)
    recorded = run.get("segmenter") if isinstance(run.get("segmenter"), Mapping) else {}
    if not monai_models and "monai" in segmenters and recorded.get("name") == "monai" and recorded.get("model_id"):
        monai_models = Counter([str(recorded["model_id"])])  # (the rows without one: run.json's)
    evaluation = _evaluation()
    if not monai_models:
        shipped: bool | None = None  # the network's model id is not recorded: which weights is unknown
    else:
        shipped = set(monai_models) <= _shipped_ids(evaluation)
    seg_of = dict(zip(_values(ok, "scan_id"), _values(ok, "segmenter")))

    def configs_of(name: str) -> list[Mapping[str, Any]]:
        """The configurations of the scans ``name`` segmented (run.json's where no result.json says)."""
        own = [r["config"] for sid, r in records.items() if (seg_of.get(sid) or r.get("segmenter")) == name]
        return own or ([cfg] if cfg is not None else [])

    packages: dict[str, Counter] = {}
    for r in records.values():
        for name, version in (r.get("versions") or {}).items():
            if version:
                packages.setdefault(str(name), Counter())[str(version)] += 1
    pythons = Counter(r["python"] for r in records.values() if r.get("python"))
    several = sorted(n for n in NAMED_PACKAGES + NETWORK_PACKAGES if len(packages.get(n, ())) > 1)
    if several or len(pythons) > 1:
        caveats.append("the scans were scored with different package versions (" + ", ".join(
            (["Python"] if len(pythons) > 1 else []) + several) + "; a resumed run): each is named with its "
            "number of scans; scores may differ a little between them")
    paragraphs = [
        _software(run, versions, segmenters, models, devices, n_ok, shipped, packages, pythons) + " "
        + _selection_text(cfg, run, ok, inventory, caveats) + " " + _pipeline_text(cfg, segmenters),
        _segmenter_text(cfg, segmenters, shipped, evaluation, configs_of("monai"), configs_of("classical"),
                        models=monai_models),
        _scores_text(cfg, ok, n_ok) + " " + _qc_text(ok, moves, exclusions, _qc_images(
            [r["config"] for r in records.values()] or ([cfg] if cfg is not None else []))),
    ]
    paragraphs = [p for p in paragraphs if p]
    bullets = _counts(ok, n_ok, n_failed, codes, inventory)
    if exclusions is not None:  # the counts above are of the run; the analyses left these out
        from scoring.exclusions import by_reason

        hit = exclusions.scan_ids & set(ok["scan_id"])
        bullets.append(f"- Scans excluded at QC review: {len(hit)} of {n_ok} scored"
                       + (f" ({_md(by_reason(exclusions.counts(hit)))})" if hit else "")
                       + (f"; reviewed: {exclusions.reviewed_text(set(ok['scan_id']))}" if exclusions.is_sheet
                          else "")
                       + "; the counts above include them")
    lines = ["## Methods", ""]
    for p in paragraphs:
        lines += [p, ""]
    lines += bullets + [""]
    if unknown or caveats:
        lines += ["Caveats:", ""] + [f"- {c[0].upper()}{c[1:]}." for c in unknown + caveats] + [""]
    lines.append(_closing(run, hashes, __version__))
    return "\n".join(lines) + "\n"


#: A scan whose result.json names no code revision: an installed release, git not readable, or an older result.
NO_REVISION = "no recorded revision (an installed release, or git not readable)"


def _commit_label(source: str) -> str:
    """``commit <12 hex>`` of a ``git <sha>[ +local changes]`` source, saying when its files were changed."""
    return f"commit {source.split()[1][:12]}" + (", with local changes to its files" if "local changes" in source
                                                 else "")


def _revision_label(source: str) -> str:
    """How a Methods text names one source: a commit, an installed copy by its code digest (since 0.7.0), or
    :data:`NO_REVISION`."""
    if source.startswith("git "):
        return _commit_label(source)
    if "code " in source:
        digest = source.rsplit("code ", 1)[1].strip()
        return ("installed package, " if source.startswith("installed") else "") + f"code digest {digest}"
    return NO_REVISION


def _commit_text(source: str) -> str:
    """`` (commit <12 hex>)`` of one source; ``: state them`` after local changes."""
    return f" ({_commit_label(source)}{': state them' if 'local changes' in source else ''})"


def _software(run, versions: Counter, segmenters: Counter, models: Counter, devices: Counter, n_ok: int,
              shipped: bool | None, packages: Mapping[str, Counter] | None = None,
              pythons: Counter | None = None) -> str:
    """The opening sentences: ctscore, its revision, Python and the packages named (each version the scans'
    result.json record, with its number of scans where they differ; else run.json's), the segmenter and device."""
    if versions:
        ctscore = "ctscore " + " and ".join(sorted(versions, key=version_key))
    else:
        ctscore = ("ctscore (version not recorded)" if n_ok
                   else f"ctscore {run.get('ctscore_version') or '(version unknown)'}")
    network = any(s != "classical" for s in segmenters)
    pkg = run.get("versions") if isinstance(run.get("versions"), Mapping) else {}
    names = NAMED_PACKAGES + (NETWORK_PACKAGES if network else ())
    if packages:  # the scans' own (a resumed run: several processes, perhaps other versions)
        listed = [f"{name} {_each(packages[name])}" for name in names if packages.get(name)]
    else:
        listed = [f"{name} {pkg[name]}" for name in names if pkg.get(name)]
    source = str(run.get("source") or "")
    sources = run.get("sources") if isinstance(run.get("sources"), Mapping) else None
    if sources is not None:  # the revisions that scored the scans (since 0.6.0; a resume keeps earlier ones)
        revisions = sorted(str(k) for k in sources)
        if len(revisions) == 1 and revisions[0].startswith("git ") and len(versions) <= 1:
            ctscore += _commit_text(revisions[0])
        elif len(revisions) == 1 and "code " in revisions[0] and len(versions) <= 1:
            ctscore += f" ({_revision_label(revisions[0])})"
        elif len(revisions) > 1:
            ctscore += (f" (scans scored by {len(revisions)} code revisions under this version label: "
                        + "; ".join(f"{_revision_label(r)}: "
                                    f"{sources[r]} scan{'s' if sources[r] != 1 else ''}" for r in revisions)
                        + "; state them, or score every scan with one)")
    elif (source.startswith("git ") and len(versions) <= 1 and (not versions or run.get("ctscore_version") in versions)
            and "aggregated_from" not in run):  # (an aggregate's run.json: the checkout that merged, not scored)
        # an older run.json: the commit of the run, and whether its files were changed (one version only)
        ctscore += _commit_text(source)
    python = (f"Python {_each(pythons)}" if pythons else f"Python {run['python']}" if run.get("python")
              else "Python (version unknown)")
    env = python + (f" with {', '.join(listed)}" if listed else "")
    text = f"Chest CT series were scored automatically with {ctscore}, a chest CT lung-injury scoring tool ({env})."
    if not segmenters:
        return text + " The segmenter is not recorded."
    parts = []
    for name in sorted(segmenters):
        if name == "classical":
            parts.append("ctscore's classical segmenter (Hounsfield-unit thresholds and morphology, no trained model")
        elif name == "monai" and shipped is None:
            parts.append("a convolutional neural network (MONAI; its model id is not recorded: [state which weights "
                         "were used]")
        elif name == "monai" and shipped:
            parts.append("the convolutional neural network shipped with ctscore (MONAI")
        elif name == "monai":
            parts.append("a convolutional neural network given to ctscore as weights of its own, not the one shipped "
                         "with it (MONAI")
        else:
            parts.append(f"the neural network of the model bundle \"{_md(name)}\" (MONAI")
    ids = ", ".join(f"`{m}`" for m in sorted(models))
    parts = [p + (f"; model id {ids})" if ids and len(parts) == 1 else ")") for p in parts]
    model_text = f"; model ids {ids}" if ids and len(segmenters) > 1 else ""
    device_text = ""
    if devices:
        where = " and ".join("a GPU (CUDA, half precision)" if d.startswith("cuda") else "the CPU" if d == "cpu"
                             else d for d in sorted(devices))
        device_text = f", run on {where}"
    if set(segmenters) == {"classical"}:
        return text + f" Lungs, airway and lesions were segmented by {parts[0]}{device_text}."
    return text + (f" Lungs and lesions were segmented by {' and '.join(parts)}{model_text}{device_text}; the airway, "
                   "from which the carina was found, by ctscore's classical region growing.")


def _each(versions: Counter) -> str:
    """"2.4.6", or "1.26.4 (1 scan) and 2.4.6 (3 scans)" where the scans were scored with several."""
    if len(versions) == 1:
        return next(iter(versions))
    return " and ".join(f"{v} ({_plural(n, 'scan')})" for v, n in sorted(versions.items(),
                                                                         key=lambda kv: version_key(kv[0])))


def _selection_text(cfg, run: Mapping[str, Any] | None = None, ok=None, inventory=None,
                    caveats: list[str] | None = None) -> str:
    """Which stacks were eligible and which of them were scored (run.json's selection and loading settings, and the
    series the user named, ``series_uid_requested``, when every scored scan is that series: a later run or an
    aggregate may have added others). A study with several scored series although one_per_study was on (a resumed
    or merged run made with other selection settings) goes to ``caveats``."""
    sel, load = _get(cfg, "selection"), _get(cfg, "loading")
    requested = str(run.get("series_uid_requested") or "") if isinstance(run, Mapping) else ""
    uids = _values(ok, "series_uid") if ok is not None else []
    named = bool(requested) and (not uids or all(u == requested.split("#", 1)[0] for u in uids))
    if requested and not named and caveats is not None:
        caveats.append("the series requested by the user (run.json series_uid_requested) is not the only one scored "
                       "(another run scored into this folder): the selection stated is run.json's automatic one")
    if not isinstance(sel, Mapping) and not named:
        return "How the series were selected is not recorded."
    eligible = ""
    if isinstance(sel, Mapping):
        angle = _num(sel.get("max_axial_angle_deg"))
        types = [x.strip() for x in str(sel.get("exclude_image_types") or "").split(",") if x.strip()]
        eligible = ("axial CT image stacks" + (f" (slice normal within {_g(angle)}\u00b0 of the patient's long axis)"
                                               if angle is not None else "")
                    + f" of at least {_g(sel.get('min_slices'))} slices, no thicker than "
                    f"{_g(sel.get('max_slice_thickness_mm'))} mm"
                    + (f", whose ImageType held none of {', '.join(_md(x) for x in types)}" if types
                       else ", whatever their ImageType (no ImageType value excluded)"))
    if named:
        rules = ["The series to score was named by the user (its SeriesInstanceUID or stack id given to ctscore), "
                 "not selected automatically" + (f"; it had to be eligible: {eligible}" if eligible else "")]
    else:
        if sel.get("one_per_study") is False:
            chosen = "every eligible stack was scored (several per study where a study held several)"
        else:
            prefs = ", ".join(p.strip() for p in str(sel.get("preferences") or "").split(",") if p.strip())
            chosen = (f"the best-ranked one of each study was scored (ctscore's preferences, in this order: {prefs}; "
                      f"kernel preference {sel.get('kernel_preference')})")
            shared = _studies_scored_twice(uids, inventory)
            if shared and caveats is not None:
                caveats.append(f"{_plural(shared, 'study', 'studies')} had several series scored although one "
                               "series per study was to be (selection.one_per_study; a resumed or merged run made "
                               "with other selection settings): say which series was analysed")
        rules = [f"Series were selected automatically: eligible were {eligible}; {chosen}"]
    if isinstance(load, Mapping):
        ratio = _num(load.get("max_gap_ratio"))
        gap = (f" (a step between slices more than {_g(ratio)} times the local slice step)" if ratio is not None
               else "")
        rules.append(f"missing slices{gap} were interpolated" if load.get("allow_gaps") else
                     f"series with a missing slice{gap} were not scored")
        rules.append("lossy-compressed series were not scored" if load.get("allow_lossy") is False else
                     "lossy-compressed series were scored and flagged")
    return "; ".join(rules) + "."


def _studies_scored_twice(uids: list[str], inventory) -> int:
    """How many studies (inventory.csv's study_key of each scored series) had more than one series scored."""
    if inventory is None or not uids or not {"series_uid", "study_key"} <= set(inventory.columns):
        return 0
    study = {u.strip(): k.strip() for u, k in zip(inventory["series_uid"], inventory["study_key"])
             if u.strip() and k.strip()}
    per_study = Counter(study[u] for u in set(uids) if u in study)
    return sum(1 for n in per_study.values() if n > 1)


def _segmenter_text(cfg, segmenters: Counter, shipped: bool | None, evaluation: Mapping[str, Any],
                    network_cfgs: list[Mapping[str, Any]] | None = None,
                    classical_cfgs: list[Mapping[str, Any]] | None = None, models: Counter | None = None) -> str:
    """How the network ran (the configuration of the scans it segmented) and how well it did (evaluation.json), or
    what the authors must add; the classical segmenter's figures on the same test. Where the scans' segmentation
    settings are not those the figures were measured with (the defaults, and the shipped model.yaml), the changed
    keys are named and the figures put in a bracket saying so."""
    s: list[str] = []
    if "monai" in segmenters:
        net_cfgs = network_cfgs or ([cfg] if cfg is not None else [])
        net_cfg = _most_common(net_cfgs) if net_cfgs else cfg
        s.append(_network_settings(net_cfg, bool(shipped), models))
        if shipped:
            changed = _changed_segmentation(net_cfgs, True, _shipped_meta())
            if changed:
                s.append("The network's settings were not those its model card's figures were measured with: "
                         + _named_keys(changed, "the scans' result.json") + ".")
                s.append("[Measured with other inference settings (ctscore's defaults), which may not hold for "
                         "those of this run: " + _lower_first(_network_evaluation(evaluation).strip()) + "]")
            else:
                s.append(_network_evaluation(evaluation))
        elif shipped is None:
            s.append("[Describe how the network was trained and validated: the run does not record which weights were "
                     "used.]")
        else:
            s.append("[Describe how this network was trained and validated: its weights are not those shipped with "
                     "ctscore, and ctscore's model card does not apply to them.]")
    bundles = sorted(n for n in segmenters if n not in ("monai", "classical"))
    if bundles:
        s.append(f"[Describe the inference settings, training data and validation of the model bundle(s) "
                 f"{', '.join(_md(b) for b in bundles)}.]")
    classical = evaluation.get("classical") if isinstance(evaluation.get("classical"), Mapping) else None
    if "classical" in segmenters and classical and _num(classical.get("lesion_dice")) is not None:
        dice = _g(round(_num(classical.get("lesion_dice")) or 0, 2))
        test = evaluation.get("test_data", "the developers held-out test")
        changed = _changed_segmentation(classical_cfgs or ([cfg] if cfg is not None else []), False)
        if changed:
            s.append("The classical segmenter's settings were not those its model card's figures were measured "
                     "with: " + _named_keys(changed, "the scans' result.json") + ".")
            s.append(f"[Measured with other settings (ctscore's defaults), which may not hold for those of this run: "
                     f"on {test}, the classical segmenter's lesion Dice {dice}, and {_g(classical.get('pleural_coverage_pct'))} % "
                     "of the consolidation touching the pleura kept inside the lung mask (ctscore's model card).]")
        else:
            s.append(f"On {test}, the classical segmenter's lesion Dice was {dice}, and it kept "
                     f"{_g(classical.get('pleural_coverage_pct'))} % of the consolidation touching the pleura inside the "
                     "lung mask (ctscore's model card).")
    return " ".join(s)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _most_common(configs: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The configuration most of ``configs`` share (the first of the most frequent)."""
    keys = [json.dumps(c, sort_keys=True, default=str) for c in configs]
    best = Counter(keys).most_common(1)[0][0]
    return configs[keys.index(best)]


def _own_weights_meta(cfg, models: Counter | None) -> dict[str, Any]:
    """The model.yaml of a network's own weights (the model folder segmentation.method names, or
    segmentation.monai.weights) when its files still give the model id the scans record; else {}."""
    import hashlib

    import yaml

    from segmentation.monai_segmenter import model_id_of

    where = [_get(cfg, "segmentation.monai.weights"), _get(cfg, "segmentation.method")]
    for folder in (Path(str(w)) for w in where if w and str(w) not in ("monai", "classical")):
        try:
            hashes = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                      for name in ("model.safetensors", "model.yaml")}
            if not models or model_id_of(hashes) not in models:
                continue
            meta = yaml.safe_load((folder / "model.yaml").read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            continue
        if isinstance(meta, dict):
            return meta
    return {}


def _network_settings(cfg, shipped: bool, models: Counter | None = None) -> str:
    opts = _get(cfg, "segmentation.monai")
    if not isinstance(opts, Mapping):
        return "The network's inference settings are not recorded."
    meta = _shipped_meta() if shipped else _own_weights_meta(cfg, models)
    grid = meta.get("model_spacing_mm")
    times = " \u00d7 "
    grid_text = (f"its own {times.join(_g(v) for v in grid)} mm grid" if isinstance(grid, list) and grid
                 else "its own model grid (the model.yaml of its weights)")

    def said(key: str) -> str:
        return _g(opts[key]) if opts.get(key) is not None else "(not recorded)"

    views = ["the scan"]
    if opts.get("flip_tta"):
        views.append("its left-right mirror image")
    zoom = _num(opts.get("scale_tta"))
    if zoom:
        views.append(f"the scan zoomed by {_g(round(1 - zoom, 6))} and {_g(round(1 + zoom, 6))}")
    averaged = (f"its outputs were averaged over {', '.join(views[:-1])} and {views[-1]}" if len(views) > 1
                else "it was run once (no test-time augmentation)")
    threshold = opts.get("lesion_threshold", meta.get("lesion_threshold"))
    threshold_text = (_g(threshold) if threshold is not None else
                      "[state the lesion_threshold of the model.yaml of its weights]" if not shipped
                      else "(not recorded)")
    margin = _num(opts.get("body_margin_mm"))
    spacing = _get(cfg, "resample.spacing_mm")
    applied = ""
    if margin is not None and isinstance(spacing, (list, tuple)) and spacing and all(_num(v) for v in spacing):
        # body_crop grows the box by whole voxels of the working grid: ceil(margin / spacing) of them
        steps = sorted({round(math.ceil(margin / float(v)) * float(v), 3) for v in spacing})
        if steps != [round(margin, 3)]:
            applied = (" (rounded up to whole voxels of the working grid: "
                       + (f"{_g(steps[0])} mm)" if len(steps) == 1 else
                          f"{_g(steps[0])} to {_g(steps[-1])} mm, by axis)"))
    text = (f"The network was run on the HU image resampled (trilinear) to {grid_text} and cut to the body (voxels "
            f"above -500 HU) plus {said('body_margin_mm')} mm of air{applied}; {averaged}; voxels were lesion where its "
            f"lesion probability exceeded {threshold_text}")
    gas = opts.get("remove_bowel_gas")
    if gas is not None:
        text += ("; stomach and colon gas under the diaphragm was taken out of the lung mask" if gas else
                 "; stomach and colon gas under the diaphragm was left in the lung mask")
    apex = opts.get("trim_apex_soft_tissue")
    if apex is not None:
        kept = "airless tissue at least 6 mm thick reaching 25 mm down (consolidation filling an apex) excepted"
        text += ("; soft tissue taken for lung at the apices was taken out of the lung mask (the slices above a lung's "
                 f"highest aerated slice, and in its top 20 mm airless tissue more than 5 mm from aerated lung), {kept}"
                 if apex else
                 f"; the slices above a lung's highest aerated slice were taken out of the lung mask, {kept}")
    return text + "."


def _severe_disease(sev: Any) -> str:
    """The sentence on extensive disease (evaluation.json's ``severe_disease``: the model card's severity ladder); ''
    when the record lacks it."""
    try:
        lo, hi = sev["percent_opacity_low_pct"]
        z1, z2 = sev["zhang900_low_pct"]
        a, b = sev["at_involvement_pct"]
        s1, s2 = sev["six_zone"]
        r1, r2 = sev["six_zone_reference"]
        return (f"With more extensive disease its scores ran lower still ({sev['what']}: % opacity {_g(lo)}-{_g(hi)} % "
                f"low from {_g(sev['from_involvement_pct'])} % involvement, the 0-900 score {_g(z1)}-{_g(z2)} % low at "
                f"{_g(a)}-{_g(b)} %, the six-zone score {_g(s1)}-{_g(s2)} against {_g(r1)}-{_g(r2)}; "
                f"`{sev['reproduce']}`), mostly because dense dependent consolidation was left out of the lung mask. ")
    except (KeyError, TypeError, ValueError):
        return ""


def _network_evaluation(ev: Mapping[str, Any]) -> str:
    """The shipped network's training and test, from evaluation.json."""
    needed = ("architecture", "training_data", "test_data", "lesion_dice", "lung_dice", "pleural_coverage_pct",
              "pleural_coverage_ci95_pct", "pleural_coverage_target_pct", "small_lesions", "score_difference")
    if any(k not in ev for k in needed):
        return ("[Describe how the network was trained and validated (segmentation/weights/MODEL_CARD.md): its "
                "evaluation record could not be read.]")
    lo, hi = ev["pleural_coverage_ci95_pct"]
    diff = ev["score_difference"]
    lung = sorted(round(float(v), 2) for v in ev["lung_dice"])
    median = (f" (median per case {_g(round(ev['lesion_dice_median'], 2))})"
              if isinstance(ev.get("lesion_dice_median"), (int, float)) else "")
    cases = (f", resampling the {ev['pleural_coverage_ci_cases']} cases that held it"
             if isinstance(ev.get("pleural_coverage_ci_cases"), int) else "")
    return (f"The network, {ev['architecture']}, was trained by ctscore's developers on {ev['training_data']}. On "
            f"{ev['test_data']}, its lesion Dice pooled over the cases was {_g(round(ev['lesion_dice'], 2))}{median} "
            f"and its lung Dice against ctscore's classical segmenter (its teacher) "
            f"{_g(lung[0]) if lung[0] == lung[-1] else f'{_g(lung[0])}-{_g(lung[-1])}'}; consolidation touching the pleura was kept inside the lung mask for "
            f"{_g(ev['pleural_coverage_pct'])} % of its volume (95 % bootstrap interval {_g(lo)}-{_g(hi)} %{cases}; the "
            f"developers' target was {_g(ev['pleural_coverage_target_pct'])} %); {ev['small_lesions']}; and its "
            f"scores were lower than those of the inserted lesions (mean difference six-zone "
            f"{_g(diff['six_zone_total'])}, 0-900 {_g(diff['zhang900_total'])} against a mean of "
            f"{_g(diff['zhang900_reference_mean'])}; segmentation/weights/MODEL_CARD.md, `{ev.get('reproduce', '')}`). "
            + _severe_disease(ev.get("severe_disease"))
            + ("It has not been validated against radiologists' reading of real pneumonia."
               if not ev.get("validated_on_real_pneumonia") else ""))


def _pipeline_text(cfg, segmenters: Counter) -> str:
    s: list[str] = []
    spacing = _get(cfg, "resample.spacing_mm")
    if isinstance(spacing, (list, tuple)) and spacing:
        grid = " \u00d7 ".join(_g(v) for v in spacing)
        s.append(f"Images were converted to Hounsfield units (HU) and resampled (linear interpolation) to a {grid} mm "
                 "grid for segmentation; the masks were brought back to the original CT grid (nearest neighbour), where all "
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
        wal = _band(cfg, "well_aerated")
        if wal:
            s.append(f"Well-aerated lung was measured as the lung voxels from {_g(wal[0])} to under {_g(wal[1])} HU, "
                     f"lesion or not, in mL and as a percentage of the lung volume (after {CITE_COLOMBI}), and "
                     "low-attenuation lung as the percentage below -950 HU (%LAA-950).")
        edges = _get(cfg, "hu_classes.aeration_edges")
        if isinstance(edges, (list, tuple)) and len(edges) == 4 and all(_num(e) is not None for e in edges):
            e1, e2, e3, e4 = (_g(_num(e)) for e in edges)
            s.append(f"The lung was divided by attenuation into hyperinflated (below {e1} HU), normally aerated ({e1} "
                     f"to under {e2} HU), poorly aerated ({e2} to under {e3} HU) and non-aerated ({e3} to {e4} HU) "
                     "compartments, lesion or not; the tissue mass of each voxel up to "
                     f"{e4} HU was taken as (1 + HU/1000) \u00d7 its volume, with HU held at -1000 from below, "
                     "assuming air at -1000 HU and tissue of water density (1 g/mL), and its gas volume as -HU/1000 "
                     f"\u00d7 its volume for voxels from -1000 to 0 HU (all gas below, none above; {CITE_GATTINONI}).")
        if segmenters and all(n == "classical" for n in segmenters):
            s.append(f"The classical segmenter looks for lesions between {_g(faint[0])} and {_g(cons[1])} HU.")
    else:
        s.append("Lesion voxels were classified by attenuation into faint ground-glass opacity, ground-glass opacity "
                 "and consolidation (the HU bands used are not recorded).")
    errors = "; ".join(f"{name} median {_g(med)} mm, maximum {_g(mx)} mm"
                       for name, (med, mx) in OFFSET_LEVEL_ERRORS_MM.items())
    s.append("Anatomical levels were found automatically: the carina from the segmented airway, the suprasternal "
             "notch from the sternum and the diaphragm domes from the lung bases. The bronchus intermedius, aortic "
             "arch and inferior pulmonary vein (IPV) levels were not detected but placed at fixed offsets from the "
             "carina and domes, calibrated by ctscore's developers on six reference scans (error on those same "
             f"scans, with the classical segmenter: {errors}); the IPV level is the border between the six-zone middle and lower zones.")
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
                 f"slice spacing where slices were more than {_g(2 * _num(half)) if _num(half) else 'twice that'} mm "
                 "apart)")
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
    s.append(f"The extent \u00d7 density\u00b2 score (0-900; {CITE_ZHANG}) was measured {where}: extent 0-10, the unit's involvement "
             "rounded to the nearest 10 % (halves up; at least 1 when involved) and density 1 (faint ground glass), 2 (ground glass) or 3 "
             f"(consolidation), the density being {density}; each unit scored extent \u00d7 density\u00b2.")
    s.append("The MosMedData category (CT-0 to CT-4: no lesion, <25 %, 25 to <50 %, 50 to <75 %, \u226575 %; "
             f"{CITE_MOSMED}) was assigned from the percentage of opacity of both lungs.")
    versions = [v for v in _values(ok, "ctscore_version") if v]
    if versions and all(version_key(v) >= version_key("0.12.0") for v in versions):  # zones.csv's anteroposterior rows
        s.append("To describe the anteroposterior distribution, each lung was divided in every axial slice at the "
                 "midpoint of its own anteroposterior extent into an anterior and a posterior half, in which lung and "
                 "lesion volumes and the percentage of opacity were measured.")
    if versions and all(version_key(v) >= version_key("0.13.0") for v in versions):  # zones.csv's peripheral_central rows
        s.append("To describe the peripheral (subpleural) or central distribution, the lung lying, in each axial "
                 "slice, within one third of that lung's greatest in-plane depth (at least 10 mm) of the pleura, of "
                 "the chest wall (in-plane distance from the convex hull of both lungs) or of the diaphragm (vertical "
                 "height above the lung's base over the dome), was classed as peripheral and the rest as central, "
                 "and lung and lesion volumes and the percentage of opacity were measured in each.")
    n_lobar = sum(1 for a, b in zip(_values(ok, "lobar20_total") or [""] * n_ok,
                                    _values(ok, "lobar25_total") or [""] * n_ok) if a or b)
    if n_lobar:
        labels = _get(cfg, "scoring.lobar.lobe_labels")
        if _get(cfg, "scoring.lobar.lobes_dir"):
            named = {"totalsegmentator": "TotalSegmentator labels", "ctscore": "ctscore labels",
                     "lungmask": "lungmask LTRCLobes labels"}.get(labels, f"labels {labels}") if labels else ""
            source = ("a lobe segmentation supplied by the authors (" + (f"{_md(named)}; " if named else "")
                      + "[name the software that made the lobe maps])")
        else:
            source = "a lobe segmentation from the segmenter"
        s.append(f"Lobar scores were computed for the {_plural(n_lobar, 'scan')} with {source}: each lobe 0-4 by the six-zone bands, total severity "
                 f"score 0-20 ({CITE_CHUNG}), and 0 (none), 1 (<5 %), "
                 f"2 (5-25 %), 3 (over 25 to under 50 %), 4 (50-75 %) or 5 (>75 %), CT severity score 0-25 ({CITE_PAN}).")
        from scoring.quantify import LOBES_MAX_UNCOVERED_PCT

        s.append("A lobe's lung was the lung mask inside it; lung that the lobe map left in no lobe (at most "
                 f"{_g(LOBES_MAX_UNCOVERED_PCT)} % of a lung; maps leaving more were not used) was assigned to the "
                 "nearest lobe of the same lung in the same axial slice.")
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
    s.append("These scores are automated approximations, computed from segmentations, of the visual scores of the "
             "cited studies [state whether, and how, their agreement with radiologists' scores was assessed in this "
             "cohort, e.g. with `ctscore validate`].")
    return " ".join(s)


def _flag_counts(ok) -> Counter:
    """How many scans carry each QC flag, by its name (the part before ':')."""
    counts: Counter = Counter()
    for cell in _values(ok, "qc_flags"):
        counts.update({f.split(":", 1)[0].strip() for f in cell.split(";") if f.strip()})
    return counts


def _estimated_landmarks(ok, flag: str = "LANDMARK_ESTIMATED") -> tuple[int, Counter]:
    """(scans with an estimated landmark, scans per landmark name) from the LANDMARK_ESTIMATED flags (or another
    per-level ``flag``: LANDMARK_BY_READER)."""
    per_name: Counter = Counter()
    n = 0
    for cell in _values(ok, "qc_flags"):
        names = {f.split(":", 1)[1].strip() for f in cell.split(";")
                 if f.strip().split(":", 1)[0] == flag and ":" in f}
        per_name.update(names)
        n += bool(names)
    return n, per_name


def _qc_images(configs: list[Mapping[str, Any]]) -> tuple[int, int]:
    """(configurations that wrote QC images, configurations): outputs.write_qc_png of each scan's configuration
    (unrecorded counts as written, the default)."""
    return sum(1 for c in configs if _get(c, "outputs.write_qc_png") is not False), len(configs)


def _qc_text(ok, moves: Mapping[str, list[float]] | None = None, exclusions=None,
             images: tuple[int, int] = (1, 1)) -> str:
    """The QC flags and images (only where outputs.write_qc_png wrote them), and who reviewed them."""
    flagged = sum(1 for cell in _values(ok, "qc_flags") if cell)
    wrote, of = images
    text = ("Each scan was checked by automated quality-control (QC) flags (coverage of the lung apices and bases, "
            "landmarks estimated rather than detected, HU calibration, contrast, noise, metal, among others)")
    if wrote:
        text += (" and QC images showing the lung and lesion masks, zone boundaries and landmark levels"
                 + (f" (written for {wrote} of {of} scans; outputs.write_qc_png was off for the others)"
                    if wrote < of else ""))
    with_images = (" with these QC images" if wrote
                   else " [state how: ctscore wrote no QC images, outputs.write_qc_png being off]")
    if len(ok):
        text += f"; {_plural(flagged, 'scan')} carried at least one flag." if flagged else "; no scan carried a flag."
    else:
        text += "."
    n_masks, kinds = _estimated_landmarks(ok, "MASKS_FROM_USER")
    if n_masks:
        text += (f" In {_plural(n_masks, 'scan')}, masks corrected by a reader were scored instead of the automated "
                 f"segmentation ({_counted(kinds, False)}) [state who corrected them, with which software, and "
                 "why].")
    n_reader, names = _estimated_landmarks(ok, "LANDMARK_BY_READER")
    if n_reader:
        text += (f" In {_plural(n_reader, 'scan')}, landmark levels were set by a reader instead of the automated "
                 f"detection ({_counted(names, False)}) [state who set them, and how: e.g. on the levels image, "
                 "blinded to the scores], and the levels placed from them followed"
                 + (" (distance from the automated level: " + "; ".join(
                     f"{name} {_g(round(d[0], 1))} mm" if len(d) == 1 else
                     f"{name} median {_g(round(_median(sorted(d)), 1))}, largest {_g(round(max(d), 1))} mm "
                     f"({len(d)} scans)" for name, d in sorted(moves.items())) + ")" if moves else "") + ".")
    if exclusions is not None:
        from scoring.exclusions import by_reason

        hit = exclusions.scan_ids & set(ok["scan_id"])
        reasons = f" ({_md(by_reason(exclusions.counts(hit)))})" if hit else ""
        used = set(ok["scan_id"])
        n_reviewed = len(used & exclusions.reviewed) if exclusions.is_sheet else 0
        if exclusions.is_sheet:
            exclusions.undecided(used, "scored scans")  # the warning stats and validate give
        if n_reviewed:  # a review sheet: how many were reviewed is known too
            whose = ("the one scored scan" if n_reviewed == len(used) == 1 else
                     f"all {n_reviewed} scored scans" if n_reviewed == len(used) else
                     f"{n_reviewed} of the {len(used)} scored scans")
            return text + (f" The segmentations and scores of {whose} were reviewed" + with_images + " before analysis "
                           "[state by whom, blinded to what]; "
                           + (f"{len(hit)} {'was' if len(hit) == 1 else 'were'} excluded{reasons}." if hit
                              else "none was excluded."))
        if exclusions.is_sheet:  # decisions on failed scans only: nothing analysed was reviewed
            return text + (" The segmentations and scores should be reviewed" + with_images + " before analysis "
                           "[state here whether, and by whom, they were reviewed, and which scans were excluded].")
        return text + (" The segmentations and scores were reviewed" + with_images + " before analysis [state by "
                       f"whom, blinded to what]; {_plural(len(hit), 'scored scan')} of {len(ok)} "
                       f"{'was' if len(hit) == 1 else 'were'} excluded{reasons}.")
    return text + (" The segmentations and scores should be reviewed" + with_images + " before analysis "
                   "[state here whether, and by whom, they were reviewed, and which scans were excluded].")


def _stacks_line(inventory) -> str | None:
    """'- Image stacks found: 8 (6 selected; skipped: LOCALIZER 2)' from inventory.csv."""
    if inventory is None:
        return None
    stacks = inventory[inventory["stack_id"].str.strip() != ""].drop_duplicates("stack_id")
    if stacks.empty:
        return None
    decisions = Counter(d.strip() or "no decision" for d in stacks["decision"])
    parts = [f"{decisions.pop('selected', 0)} selected"]
    if "reason" in stacks.columns:
        skipped = Counter(r.split()[0].rstrip(":") if r.strip() else "no reason" for d, r in zip(stacks["decision"], stacks["reason"])
                          if d.strip() == "skipped")
        decisions.pop("skipped", None)
        if skipped:
            parts.append("skipped: " + _counted(skipped, False))
    parts += [f"{d} {n}" for d, n in sorted(decisions.items())]
    return f"- Image stacks found: {len(stacks)} ({'; '.join(parts)})"


def _counts(ok, n_ok: int, n_failed: int, codes: Counter, inventory=None) -> list[str]:
    lines = [line for line in [_stacks_line(inventory)] if line]
    lines.append(f"- Scans scored: {n_ok}" + (f" of {n_ok + n_failed} selected series" if n_failed else ""))
    failed = f"- Scans that could not be scored: {n_failed}"
    if codes:
        failed += f" ({_counted(codes, False)})"
    lines.append(failed)
    patients = _distinct(ok, "patient_id")
    if "patient_id" in ok.columns:
        no_id = sum(1 for v in _values(ok, "patient_id") if not v)
        lines.append(f"- Patients: {len(patients)}" + (f" ({_plural(no_id, 'scan')} without a PatientID, not counted)"
                                                       if no_id else ""))
    else:
        lines.append("- Patients: not recorded")
    # 0 (tables of versions before 0.18.0: a header without SliceThickness) is not a thickness
    thick = sorted(t for t in (_num(v) for v in _values(ok, "slice_thickness_mm")) if t is not None and t > 0)
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
        totals = [(label, sum(1 for v in _values(ok, column) if v)) for column, label in
                  (("six_zone_total", "six-zone"), ("zhang900_total", "0-900"), ("mosmed_category", "MosMed"),
                   ("lobar20_total", "lobar")) if column in ok.columns]
        if totals:
            lines.append("- Scores available (scans): " + ", ".join(f"{label} {n} of {n_ok}" for label, n in totals))
        n_est, names = _estimated_landmarks(ok)
        lines.append(f"- Scans in which a level that is normally detected (carina, notch, domes, apices, bases) had "
                     f"to be estimated: {n_est}"
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
