"""``ctscore share OUT DEST``: copy the part of a run's output folder that can leave the institution.

An OUT folder holds more than the scores: ``inventory.csv`` / ``failures.csv`` and ``run.json`` name the input paths
(folder names often hold patient names), the hidden ``OUT/.status/`` records name failure paths and, in their lock
file, the host, ``seg.dcm`` carries every patient and study attribute of its source images, ``stacks.csv`` series
descriptions as written, logs whatever they logged, and ``report.html`` links files that are not shared (inventory.csv).
:func:`share_outputs`
copies into a new folder only what is meant to be shared:

- ``scans.csv`` / ``zones.csv`` / ``landmarks.csv`` and their Parquet twins, as they are;
- ``data_dictionary.csv``, without the rows of the failure columns left out below;
- ``failures.csv`` / ``.parquet`` rewritten with ``scan_id`` and ``code`` only (a failure's ``message`` and ``path``
  name input files and folders);
- per series folder that the run's tables (scans.csv, failures.csv) name: ``lungs.nii.gz``, ``lesions.nii.gz``, ``qc.png``, ``thumb.png``, ``levels.png`` as they are
  (the three pictures left out for a scan flagged ``BURNED_IN_ANNOTATION``: they may show a name written into the
  pixels), and ``result.json`` without the input's fingerprint, id and lobe-map file name, with local paths in its
  configuration redacted (its scores kept), and without ``image_sha256`` unless a site salt keyed it;
  ``seg.dcm`` only with ``include_dicom_seg`` (a warning);
- ``run.json`` with the input redacted and only the keys known to say nothing of the input's location (versions,
  configuration, model id, timings, counts);
- ``report.html`` made again from the files copied (the original links inventory.csv), so that its links all
  lead to files in DEST; ``METHODS.md`` (``ctscore methods``), when OUT has one, made again from them too (text
  edited by hand is not copied: it may name anything);
- ``SHARED.txt``, the manifest: what was copied (sha256 and size of each file), what was left out and why, what
  was redacted.

A series folder that neither table names (an earlier run of another input, series selection or salt into the same
OUT, which the run warns is not part of its input) is left out, and counted in the manifest; the salt is checked
on the folders shared only. Anything else is left out and named in the returned summary (the manifest counts files whose names ctscore did
not write, without their names: a file name can identify too). It refuses (``BUILTIN_SALT``) a run whose
pseudonyms were made with the built-in salt, which ``run.json`` names (numeric PatientIDs are recovered from the
pseudonyms by trying every number), unless ``allow_builtin_salt``, and (``NOT_PSEUDONYMOUS``) one made with
``outputs.pseudonymize: false``, unless ``allow_identifiers``. OUT is only read, never written (no lock is taken:
a run writing into OUT is refused, ``OUTPUT_LOCKED``, and a file of OUT that changes while it is copied stops the
share, ``OUTPUT_CHANGED``). DEST must not exist or be an empty folder; it is built in a temporary folder beside it
and renamed into place at the end, so it appears complete or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import CTScoreError, OutputLocked
from pipeline.outputs import check_tables_current

log = logging.getLogger(__name__)

#: The manifest written into DEST.
MANIFEST_NAME = "SHARED.txt"
#: Written in place of a value that names the input's location.
REDACTED = "<redacted by ctscore share>"
#: Run tables copied as they are.
TABLES = ("scans.csv", "scans.parquet", "zones.csv", "zones.parquet", "landmarks.csv", "landmarks.parquet")
#: Per-series files copied as they are (result.json is redacted; seg.dcm only when asked for).
SERIES_FILES = ("lungs.nii.gz", "lesions.nii.gz", "qc.png", "thumb.png", "levels.png")
#: The pictures of a series (of its images: they show burned-in text too).
PICTURES = ("qc.png", "thumb.png", "levels.png")
#: Why the pictures of a scan flagged BURNED_IN_ANNOTATION are left out (named in the manifest).
BURNED_IN_REASON = ("BURNED_IN_ANNOTATION: the headers of its images say the pixels carry burned-in text (names, "
                    "dates), which the picture may show")
#: The columns of failures.csv that are shared: the message and the path name input files and folders.
FAILURE_COLUMNS_SHARED = ["scan_id", "code"]
#: A series folder's name (:func:`pipeline.outputs.scan_id_for`).
SCAN_DIR = re.compile(r"^scan-[0-9a-f]{6,64}$")

#: Top-level entries of OUT left out, and why (named in the manifest).
LEFT_OUT = {
    "inventory.csv": "every input file with its path (folder names often hold patient names)",
    "inventory.parquet": "every input file with its path (folder names often hold patient names)",
    ".status": "per-series records: failure messages and input paths; the lock file names the host",
    "shards": "per-shard tables: their inventories, failures and run.json name the input paths (the merged tables "
              "at the top of OUT are shared)",
    "stacks.csv": "series descriptions as the scanner wrote them (sometimes a name) and input folders",
    "stacks.parquet": "series descriptions as the scanner wrote them (sometimes a name) and input folders",
    "review.csv": "the QC review sheet (ctscore review-sheet): the reviewers' initials and notes",
}
#: Rewritten or made again rather than copied (named in the manifest with what was done).
REWRITTEN = {
    "failures.csv": "rewritten with scan_id and code only (its message and path name input files and folders)",
    "failures.parquet": "rewritten with scan_id and code only (its message and path name input files and folders)",
    "run.json": "rewritten: the input redacted, keys not known to be safe left out",
    "report.html": "made again from the shared files (the original links files not shared, such as inventory.csv)",
    "data_dictionary.csv": "copied without the rows of failures.csv's columns left out",
    "METHODS.md": "made again from the shared files (ctscore methods; the original may have been edited by hand)",
}
NOT_RECOGNISED = "not recognised as a ctscore output"
#: Why a series folder that neither scans.csv nor failures.csv names is left out (an earlier run of another input, a
#: series selection or a salt into the same OUT: the run itself warns that they are not part of its input).
NOT_IN_TABLES = "a series folder not in this run's tables (scans.csv, failures.csv): an earlier run or another input"
LOG_REASON = "a log: it names input files and folders (a file that could not be read, a failed series)"

#: run.json keys shared as they are (``config`` is redacted, ``input`` replaced by :data:`REDACTED`); any other key
#: (``input_id``, ``input_names``, keys of later versions) is left out and named in the manifest.
RUN_KEYS = ("ctscore_version", "ctscore_versions", "source", "sources", "python", "platform", "versions", "config",
            "config_sha256", "config_sha256_all", "segmenter", "n_series", "n_ok", "n_failed", "seconds",
            "scoring_seconds", "finished_at", "timings_s", "execution", "aggregated_from", "missing_shards",
            "num_shards_found", "pseudonym_salt_ids")
#: result.json keys shared (``config`` redacted; ``image_sha256`` only when keyed with a site salt); any other key
#: (``input_fingerprint``, ``input_id``, ``lobe_map_file``, keys of later versions) is left out.
RESULT_KEYS = ("ctscore_version", "scan_id", "scores", "zones", "landmarks", "qc_flags", "segmenter", "environment",
               "config_sha256", "config", "timings_s", "pseudonym_salt_id", "hu_check", "orientation_check", "grid",
               "image_sha256", "user_masks")  # user_masks: which edited mask files (names only) were scored

_BUILTIN = "builtin"
_SITE = "site"
_NONE = "none"
_CHUNK = 1 << 20


def share_outputs(out_dir: str | Path, dest: str | Path, *, include_dicom_seg: bool = False,
                  allow_builtin_salt: bool = False, allow_identifiers: bool = False) -> dict[str, Any]:
    """Copy what can be shared of the run in ``out_dir`` into the new folder ``dest`` (see the module docstring).

    Returns a dict: ``dest`` (str), ``copied`` (list of dicts ``path`` relative to DEST, ``sha256``, ``bytes``,
    ``note``), ``left_out`` (list of dicts ``path`` relative to OUT, ``reason``, ``named``: whether the manifest
    names it; files not of ctscore's making are counted there, not named), ``not_recognised`` (the paths of
    ``left_out`` that ctscore does not know, relative to OUT), ``redacted`` (list of str: the values redacted or left
    out of run.json and result.json), ``salt`` ("site", "builtin", "none" or "unknown": what made the pseudonyms) and
    ``warnings`` (list of str, also logged).

    Raises CTScoreError: ``INPUT_NOT_FOUND`` (OUT missing), ``NOTHING_TO_SHARE`` (no run.json and scans.csv in OUT),
    ``OUTPUT_IS_INPUT`` (DEST is OUT or inside it), ``OUTPUT_NOT_EMPTY`` (DEST exists and is not an empty folder),
    ``OUTPUT_UNWRITABLE``, ``OUTPUT_LOCKED`` (a ctscore run or aggregate is writing into OUT), ``BUILTIN_SALT``,
    ``NOT_PSEUDONYMOUS``, ``OUTPUT_CHANGED`` (a file of OUT changed while it was copied).
    """
    out = Path(out_dir)
    dest = Path(dest)
    _check_out(out)
    _check_dest(out, dest)
    _check_not_locked(out)
    check_tables_current(out)  # TABLES_STALE: a run that ended without writing its tables

    # each file of OUT is stamped (size, modification time) before it is read: one that differs at the end was
    # rewritten during the share (OUTPUT_CHANGED), and what was read of it may be half old, half new
    sources: dict[Path, tuple[int, int]] = {p: _stamp(p) for p in (out / "run.json", out / "scans.csv",
                                                                   out / "report.html")}
    run = _read_json(out / "run.json", "run.json")
    scans = _read_table(out / "scans.csv")
    in_tables = _table_scan_ids(out, scans, sources)
    results: dict[str, dict[str, Any]] = {}
    left_out: list[dict[str, Any]] = []
    scan_dirs: list[Path] = []
    for entry in _entries(out):
        name = entry.name
        rel = name
        if entry.is_symlink():
            _leave(left_out, rel, "a symbolic link: not followed")
        elif entry.is_dir() and SCAN_DIR.match(name):
            if name not in in_tables:  # not this run's: its masks, pictures and result are not shared, nor checked
                _leave(left_out, rel + "/", NOT_IN_TABLES, named=True)
                continue
            if not (entry / "result.json").is_file() or (entry / "result.json").is_symlink():
                _leave(left_out, rel + "/", "a series folder without a result.json")
                continue
            sources[entry / "result.json"] = _stamp(entry / "result.json")
            try:
                results[name] = _read_json(entry / "result.json", f"{name}/result.json")
            except CTScoreError as exc:
                _leave(left_out, rel + "/", f"its result.json cannot be read ({exc.message})")
                continue
            scan_dirs.append(entry)
        elif name in TABLES or name in REWRITTEN:
            if not entry.is_file():
                _leave(left_out, rel, "not a plain file")
        elif name in LEFT_OUT:
            _leave(left_out, rel + ("/" if entry.is_dir() else ""), LEFT_OUT[name], named=True)
        elif entry.is_file() and name.lower().endswith((".log", ".log.txt")):
            _leave(left_out, rel, LOG_REASON)
        else:
            _leave(left_out, rel + ("/" if entry.is_dir() else ""), NOT_RECOGNISED)

    salt = _check_salt(run, scans, results, allow_builtin_salt, allow_identifiers)
    warnings: list[str] = []
    stale = [x["path"].rstrip("/") for x in left_out if x["reason"] == NOT_IN_TABLES]
    if stale:
        warnings.append(f"{len(stale)} scan folder(s) not in this run's tables left out: an earlier run or another "
                        f"input ({_few(stale)}); SHARED.txt counts them")
    if salt == _BUILTIN:
        warnings.append("the pseudonyms were made with the built-in salt (--allow-builtin-salt): anyone holding the "
                        "PatientIDs can recompute them, and a numeric PatientID is recovered from its pseudonym by "
                        "trying every number")
    if salt == _NONE:
        warnings.append("the tables hold the PatientIDs themselves (outputs.pseudonymize false; "
                        "--allow-identifiers)")

    redacted: list[str] = []
    copied: list[dict[str, Any]] = []
    target = Path(os.path.abspath(dest))  # "." and "a/.." have a name and a parent
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.", suffix=".partial"))
    except OSError as exc:
        raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot write beside the destination folder "
                           f"({exc.strerror or exc})", dest) from exc
    try:
        from pipeline.outputs import current_umask

        os.chmod(tmp, 0o777 & ~current_umask())
        for name in TABLES:
            if (out / name).is_file() and not (out / name).is_symlink():
                made = _landmarks_without_file_names(out / name, tmp / name, name, sources, redacted) \
                    if name.startswith("landmarks.") else None
                copied.append(made or _copy(out / name, tmp / name, name, sources))
        copied += _write_failures(out, tmp, sources)
        copied += _write_dictionary(out, tmp, sources)
        run_shared, dropped = _redact_run(run)
        redacted += dropped
        copied.append(_write_json(tmp / "run.json", "run.json", run_shared, REWRITTEN["run.json"]))
        for folder in scan_dirs:
            copied += _share_series(folder, tmp, results[folder.name], include_dicom_seg, left_out, redacted,
                                    sources)
        burned = {x["path"].split("/", 1)[0] for x in left_out if x["reason"] == BURNED_IN_REASON}
        if burned:
            warnings.append(f"the pictures ({', '.join(PICTURES)}) of {len(burned)} scan(s) flagged "
                            "BURNED_IN_ANNOTATION were left out: their images may carry burned-in text (names, "
                            "dates); SHARED.txt names them")
        if include_dicom_seg and any(c["path"].endswith("/seg.dcm") for c in copied):
            warnings.append("seg.dcm copied (--include-dicom-seg): each carries every patient and study attribute of "
                            "its source images (name, ID, birth date, accession number, institution, ...); "
                            "de-identify them with your archive's tools before DEST leaves the institution")
        from pipeline.report import render_run_report

        report = render_run_report(tmp).encode("utf-8")
        copied.append(_write_bytes(tmp / "report.html", "report.html", report, REWRITTEN["report.html"]))
        if (out / "METHODS.md").is_file() and not (out / "METHODS.md").is_symlink():
            from pipeline.methods import methods_text

            copied.append(_write_bytes(tmp / "METHODS.md", "METHODS.md", methods_text(tmp, inventory_from=out).encode("utf-8"),
                                       REWRITTEN["METHODS.md"]))
        changed = [str(p.relative_to(out)) for p, st in sources.items() if _stamp(p) != st]
        if changed:
            raise CTScoreError("OUTPUT_CHANGED", f"{len(changed)} file(s) of the output folder changed while they "
                               f"were copied ({', '.join(changed[:3])}): a ctscore run or aggregate wrote into it? "
                               "Run ctscore share again when it has ended", out)
        unknown = [x["path"] for x in left_out if x["reason"] == NOT_RECOGNISED]
        summary = {"dest": str(dest), "copied": copied, "left_out": left_out, "not_recognised": unknown,
                   "not_in_tables": stale, "redacted": sorted(set(redacted)), "salt": salt, "warnings": warnings}
        _write_bytes(tmp / MANIFEST_NAME, MANIFEST_NAME, _manifest(summary, include_dicom_seg).encode("utf-8"), "")
        from pipeline.outputs import fsync_dir, fsync_tree

        fsync_tree(tmp)
        _put_in_place(tmp, target)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for w in warnings:
        log.warning(w)
    return summary


# --------------------------------------------------------------------------------------------------
# Checks before anything is written


def _check_out(out: Path) -> None:
    if not out.is_dir():
        raise CTScoreError("INPUT_NOT_FOUND", "no such output folder" if not out.exists() else
                           "not a folder: give the output folder of a ctscore run", out)
    if not (out / "run.json").is_file() or not (out / "scans.csv").is_file():
        hint = ""
        if _is_shard(out):
            hint = ": this is one shard's folder; run `ctscore aggregate` on the whole output folder and share that"
        elif (out / "shards").is_dir():
            hint = ": its shards were not merged; run `ctscore aggregate OUT` first"
        raise CTScoreError("NOTHING_TO_SHARE", f"not the output folder of a ctscore run (no run.json and "
                           f"scans.csv){hint}", out)
    if _is_shard(out):
        raise CTScoreError("NOTHING_TO_SHARE", "this is one shard's folder (its series folders lie two levels up): "
                           "run `ctscore aggregate` on the whole output folder and share that", out)


def _is_shard(out: Path) -> bool:
    """Whether ``out`` is one shard's folder of a sharded run (``OUT/shards/K-of-N``), not an output folder that
    happens to lie in a folder named "shards"."""
    return out.parent.name == "shards" and bool(re.fullmatch(r"\d+-of-\d+", out.name))


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _check_dest(out: Path, dest: Path) -> None:
    here = out.resolve()
    target = dest.resolve()
    if _inside(target, here):
        raise CTScoreError("OUTPUT_IS_INPUT", "the destination is the output folder or lies inside it: ctscore share "
                           "never writes into OUT; give a folder outside it", dest)
    if dest.is_symlink():
        raise CTScoreError("OUTPUT_UNWRITABLE", "the destination is a symbolic link: give a new folder", dest)
    if dest.exists():
        if not dest.is_dir():
            raise CTScoreError("OUTPUT_NOT_EMPTY", "the destination exists and is not a folder: give a new folder "
                               "(or an empty one)", dest)
        try:
            entries = next(os.scandir(dest), None)
        except OSError as exc:
            raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot read the destination folder ({exc.strerror or exc})",
                               dest) from exc
        if entries is not None:
            raise CTScoreError("OUTPUT_NOT_EMPTY", "the destination folder is not empty: ctscore share writes only "
                               "into a new or empty folder (nothing left there by mistake is shared along)", dest)
    if dest.exists() and (os.path.ismount(dest) or dest.stat().st_dev != dest.parent.stat().st_dev):
        # the copy is built beside DEST and renamed into place: across file systems no rename can do that
        raise CTScoreError("OUTPUT_UNWRITABLE", "the destination is a mount point (another file system than its "
                           "parent folder): give a new folder inside it, e.g. DEST/shared", dest)
    from pipeline.outputs import folder_problem

    why = folder_problem(Path(os.path.abspath(dest)).parent)
    if why:
        raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot write the destination folder ({why})", dest)


def _check_not_locked(out: Path) -> None:
    """OUTPUT_LOCKED when a ctscore run or aggregate holds OUT's lock (its tables are being rewritten); nothing in OUT
    is created or written (:func:`pipeline.batch.writer_busy`)."""
    from pipeline.batch import writer_busy

    holder = writer_busy(out)
    if holder:
        raise OutputLocked(f"another {holder} is writing into {out}; wait for it, then run ctscore share "
                           "(its tables are being rewritten)", out)


def _salt_kind(outputs: Any) -> str | None:
    """What made the pseudonyms, from a configuration's ``outputs`` section as run.json and result.json write it
    (a site's salt redacted, the built-in one named)."""
    from pipeline.outputs import DEFAULT_SALT

    if not isinstance(outputs, Mapping):
        return None
    if outputs.get("pseudonymize") is False:
        return _NONE
    salt = outputs.get("pseudonym_salt")
    if salt in (None, ""):
        return _BUILTIN if "pseudonym_salt" in outputs else None
    return _BUILTIN if salt == DEFAULT_SALT else _SITE


def _salt_id_kind(value: Any) -> str | None:
    from pipeline.outputs import DEFAULT_SALT, salt_id

    text = str(value or "").strip()
    if not text or text.lower() in ("nan", "<na>"):
        return None
    if text == "none":
        return _NONE
    return _BUILTIN if text == salt_id(DEFAULT_SALT) else _SITE


def _result_salt(result: Mapping[str, Any]) -> str | None:
    kind = _salt_id_kind(result.get("pseudonym_salt_id"))
    if kind is None:
        kind = _salt_kind((result.get("config") or {}).get("outputs") if isinstance(result.get("config"), Mapping)
                          else None)
    return kind


def _check_salt(run: Mapping[str, Any], scans: Any, results: Mapping[str, Mapping[str, Any]],
                allow_builtin_salt: bool, allow_identifiers: bool) -> str:
    """What made the run's pseudonyms ("site", "builtin", "none", "unknown"), from run.json, scans.csv and every
    result.json; BUILTIN_SALT or NOT_PSEUDONYMOUS unless allowed."""
    from pipeline.report import PSEUDONYM_RE

    found: dict[str, list[str]] = {}

    def saw(kind: str | None, where: str) -> None:
        if kind:
            found.setdefault(kind, []).append(where)

    config = run.get("config") if isinstance(run.get("config"), Mapping) else {}
    saw(_salt_kind(config.get("outputs")), "run.json")
    for sid in (run.get("pseudonym_salt_ids") or {}) if isinstance(run.get("pseudonym_salt_ids"), Mapping) else {}:
        saw(_salt_id_kind(sid), "run.json")
    for scan_id, result in sorted(results.items()):
        saw(_result_salt(result), f"{scan_id}/result.json")
    if scans is not None and len(scans):
        if "pseudonym_salt_id" in scans.columns:
            for sid in sorted(set(scans["pseudonym_salt_id"])):
                saw(_salt_id_kind(sid), "scans.csv")
        if "patient_id" in scans.columns:
            clear = [p for p in scans["patient_id"] if p and not PSEUDONYM_RE.match(p)]
            if clear:
                saw(_NONE, "scans.csv (patient_id)")

    def places(kind: str) -> str:
        where = list(dict.fromkeys(found[kind]))
        return ", ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")

    if _NONE in found and not allow_identifiers:
        raise CTScoreError("NOT_PSEUDONYMOUS", f"the run was made with outputs.pseudonymize: false ({places(_NONE)}): "
                           "its patient_id is the header's PatientID; score it again with pseudonyms and a site "
                           "salt (outputs.pseudonym_salt), or give --allow-identifiers (Python: "
                           "allow_identifiers=True) to share the identifiers", None)
    pseudonymous = [k for k in (_BUILTIN, _SITE) if k in found]
    if _BUILTIN in found and not allow_builtin_salt and not (_NONE in found and allow_identifiers):
        risk = ("anyone holding a list of PatientIDs can recompute them, and a numeric PatientID is recovered from its "
                "pseudonym by trying every number (every 7-digit number takes seconds)")
        allow = "or give --allow-builtin-salt (Python: allow_builtin_salt=True) to share them anyway"
        if "run.json" in found.get(_SITE, []) and "run.json" not in found[_BUILTIN]:
            # the run had a site salt; some of its scans kept results scored before it was set (a resumed run)
            before = [w.split("/", 1)[0] for w in dict.fromkeys(found[_BUILTIN]) if w.endswith("/result.json")]
            which = f"{len(before)} scan(s) of this run's tables ({_few(before)})" if before else \
                "some rows of scans.csv"
            raise CTScoreError("BUILTIN_SALT", f"{which} were scored before the site salt was set: their pseudonyms "
                               f"were made with the built-in salt, though run.json names a site salt ({risk}). "
                               "Score them again with the site salt: the same `ctscore run` command (with your "
                               "--config site.yaml) and --overwrite; " + allow, None)
        raise CTScoreError("BUILTIN_SALT", f"the pseudonyms were made with the built-in salt ({places(_BUILTIN)}): "
                           f"{risk}. Make a secret salt once (python -c \"import secrets; "
                           "print(secrets.token_hex(16))\"), keep it in a site configuration file (e.g. site.yaml, "
                           "kept private, holding the two lines `outputs:` and `  pseudonym_salt: <the salt>`) and "
                           "give --config site.yaml on every run (the same salt every time: a new salt per run makes "
                           "new pseudonyms, so patients no longer link across runs and a rerun scores everything "
                           "again); score the input again into a new output folder, then share that; " + allow,
                           None)
    if not found and not allow_builtin_salt:
        raise CTScoreError("BUILTIN_SALT", "neither run.json nor scans.csv nor any result.json says which salt made "
                           "the pseudonyms (an older ctscore?): they may be of the built-in salt, from which a numeric "
                           "PatientID is recovered by trying every number; give --allow-builtin-salt (Python: "
                           "allow_builtin_salt=True) to share them anyway", None)
    if _NONE in found:
        return _NONE
    if _BUILTIN in found:
        return _BUILTIN
    return pseudonymous[0] if pseudonymous else "unknown"


# --------------------------------------------------------------------------------------------------
# Reading OUT (never written)


def _entries(folder: Path) -> list[Path]:
    try:
        with os.scandir(folder) as it:
            return sorted((Path(e.path) for e in it), key=lambda p: p.name)
    except OSError as exc:
        raise CTScoreError("INPUT_UNREADABLE", f"cannot list the output folder ({exc.strerror or exc})",
                           folder) from exc


def _read_json(path: Path, label: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CTScoreError("NOTHING_TO_SHARE", f"{label} cannot be read ({exc})", path.parent) from exc
    if not isinstance(data, dict):
        raise CTScoreError("NOTHING_TO_SHARE", f"{label} is not a JSON object", path.parent)
    return data


def _read_table(path: Path):
    import pandas as pd

    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise CTScoreError("NOTHING_TO_SHARE", f"{path.name} cannot be read ({exc})", path.parent) from exc


def _table_scan_ids(out: Path, scans: Any, sources: dict[Path, tuple[int, int]]) -> set[str]:
    """The scan ids that this run's tables name: scans.csv's and failures.csv's (a series folder of OUT that neither
    names was left there by an earlier run, of another input or salt, and is not shared)."""
    ids = set(scans["scan_id"]) if "scan_id" in scans.columns else set()
    failures = out / "failures.csv"
    if failures.is_file() and not failures.is_symlink():
        sources.setdefault(failures, _stamp(failures))
        table = _read_table(failures)
        if "scan_id" in table.columns:
            ids |= set(table["scan_id"])
    return {str(i) for i in ids if i}


def _few(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def _leave(left_out: list[dict[str, Any]], rel: str, reason: str, named: bool = False) -> None:
    """Note ``rel`` (relative to OUT) as left out; ``named``: its name is ctscore's own, written in the manifest (a
    name of another file can identify: it is printed, not written into DEST)."""
    left_out.append({"path": rel, "reason": reason, "named": named})


# --------------------------------------------------------------------------------------------------
# Writing DEST (the temporary folder beside it)


def _copy(src: Path, dst: Path, rel: str, sources: dict[Path, tuple[int, int]], note: str = "") -> dict[str, Any]:
    """Copy ``src`` to ``dst`` (new file, no metadata), hashing what was read."""
    sources.setdefault(src, _stamp(src))
    h = hashlib.sha256()
    n = 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        while chunk := fin.read(_CHUNK):
            h.update(chunk)
            fout.write(chunk)
            n += len(chunk)
    return {"path": rel, "sha256": h.hexdigest(), "bytes": n, "note": note}


def _write_bytes(dst: Path, rel: str, data: bytes, note: str) -> dict[str, Any]:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "xb") as fh:
        fh.write(data)
    return {"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "note": note}


def _write_json(dst: Path, rel: str, data: Any, note: str) -> dict[str, Any]:
    from pipeline.outputs import _clean

    return _write_bytes(dst, rel, (json.dumps(_clean(data), indent=2) + "\n").encode(), note)


def _write_failures(out: Path, tmp: Path, sources: dict[Path, tuple[int, int]]) -> list[dict[str, Any]]:
    from pipeline.outputs import table_dtypes

    src = out / "failures.csv"
    if not src.is_file() or src.is_symlink():
        return []
    sources.setdefault(src, _stamp(src))
    if (out / "failures.parquet").is_file():
        sources.setdefault(out / "failures.parquet", _stamp(out / "failures.parquet"))
    df = _read_table(src)
    df = df.reindex(columns=FAILURE_COLUMNS_SHARED).fillna("")
    df = df.astype(table_dtypes(df.columns))
    made = [_write_bytes(tmp / "failures.csv", "failures.csv", df.to_csv(index=False).encode(),
                         REWRITTEN["failures.csv"])]
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    made.append(_write_bytes(tmp / "failures.parquet", "failures.parquet", buf.getvalue(),
                             REWRITTEN["failures.parquet"]))
    return made


def _write_dictionary(out: Path, tmp: Path, sources: dict[Path, tuple[int, int]]) -> list[dict[str, Any]]:
    from pipeline.outputs import FAILURE_COLUMNS

    src = out / "data_dictionary.csv"
    if not src.is_file() or src.is_symlink():
        return []
    sources.setdefault(src, _stamp(src))
    df = _read_table(src)
    if {"table", "column"} <= set(df.columns):
        gone = set(FAILURE_COLUMNS) - set(FAILURE_COLUMNS_SHARED)
        df = df[~((df["table"] == "failures") & df["column"].isin(gone))]
    return [_write_bytes(tmp / "data_dictionary.csv", "data_dictionary.csv", df.to_csv(index=False).encode(),
                         REWRITTEN["data_dictionary.csv"])]


def _looks_like_path(text: str) -> bool:
    """A value that names a place on a disk: absolute, home-relative, relative with ./ or ../, a Windows drive or
    share, or words joined by slashes without spaces ("models/site_a", not "ratio 1/2" or a regular expression)."""
    return (text.startswith(("/", "~", "\\\\", "./", "../")) or bool(re.match(r"^[A-Za-z]:[\\/]", text))
            or bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)+/?", text)))


def _redact_config(cfg: Any, where: str, redacted: list[str]) -> Any:
    """The configuration without local paths (a model folder, the lobe maps' folder, any value that is a path):
    they can name a user's home folder or a project named after a patient."""
    if not isinstance(cfg, Mapping):
        return cfg
    try:
        from segmentation.factory import SEGMENTERS
        known = set(SEGMENTERS)
    except Exception:  # noqa: BLE001 - only the names of the built-in segmenters are wanted
        known = {"classical", "monai"}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, Mapping):
            return {k: walk(v, f"{path}.{k}") for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, path) for v in node]
        if isinstance(node, str) and node and (_looks_like_path(node)
                                               or (path.endswith("segmentation.method") and node not in known)
                                               or path.endswith("scoring.lobar.lobes_dir")):
            redacted.append(path)
            return REDACTED
        return node

    return walk(cfg, where)


def _redact_run(run: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    redacted: list[str] = []
    shared: dict[str, Any] = {}
    for key, value in run.items():
        if key == "input":
            shared["input"] = REDACTED
            redacted.append("run.json: input")
        elif key == "config":
            shared["config"] = _redact_config(value, "run.json: config", redacted)
        elif key in RUN_KEYS:
            shared[key] = value
        else:
            redacted.append(f"run.json: {key} (left out)")
    shared["shared_by"] = {"command": "ctscore share", "manifest": MANIFEST_NAME,
                           "redacted": sorted(set(redacted))}
    return shared, redacted


#: the note of a reader's level as ctscore 0.7.0 development versions wrote it, naming the level table's file and
#: line (a file name may name a patient): shared as "set by a reader", as ctscore writes it now
_READER_NOTE = re.compile(r"^set by a reader \(.*\)$", re.DOTALL)
_READER_NOTE_REDACTED = "landmarks: a reader's level's note naming the level table's file (written as 'set by a reader')"


def _reader_note(note: Any) -> Any:
    return "set by a reader" if isinstance(note, str) and _READER_NOTE.match(note) else note


def _landmarks_without_file_names(src: Path, dst: Path, rel: str, sources: dict[Path, tuple[int, int]],
                                  redacted: list[str]) -> dict[str, Any] | None:
    """``landmarks.csv`` / ``.parquet`` with the notes that name a reader's level table rewritten (results scored by
    an earlier 0.7.0 development version); None when no note does (the file is then copied as it is)."""
    import pandas as pd

    sources.setdefault(src, _stamp(src))
    try:
        table = pd.read_parquet(src) if src.suffix == ".parquet" else \
            pd.read_csv(src, dtype=str, keep_default_na=False)
    except Exception:  # noqa: BLE001 - an unreadable table is copied as it is, as the other tables are
        return None
    notes = table["note"].tolist() if "note" in table.columns else []
    if not any(_reader_note(v) != v for v in notes):  # (a 0-row string column has no any(): a run all failed)
        return None
    table["note"] = pd.Series([_reader_note(v) for v in notes], index=table.index, dtype=table["note"].dtype)
    if src.suffix == ".parquet":
        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        data = buf.getvalue()
    else:
        data = table.to_csv(index=False).encode()
    if _READER_NOTE_REDACTED not in redacted:
        redacted.append(_READER_NOTE_REDACTED)
    return _write_bytes(dst, rel, data, "rewritten: notes naming a reader's level table written as 'set by a "
                                        "reader'")


def _redact_result(result: Mapping[str, Any], redacted: list[str]) -> dict[str, Any]:
    shared: dict[str, Any] = {}
    keyed = _result_salt(result) == _SITE
    for key, value in result.items():
        if key == "landmarks" and isinstance(value, Mapping):
            levels = {k: ({**lm, "note": _reader_note(lm.get("note"))} if isinstance(lm, Mapping) else lm)
                      for k, lm in value.items()}
            if levels != dict(value) and _READER_NOTE_REDACTED not in redacted:
                redacted.append(_READER_NOTE_REDACTED)
            shared[key] = levels
        elif key == "config":
            shared["config"] = _redact_config(value, "result.json: config", redacted)
        elif key == "image_sha256" and not keyed:
            redacted.append("result.json: image_sha256 (left out: not keyed with a site salt, it ties the result to "
                            "the images wherever they are)")
        elif key in RESULT_KEYS:
            shared[key] = value
        else:
            redacted.append(f"result.json: {key} (left out)")
    return shared


def _share_series(folder: Path, tmp: Path, result: Mapping[str, Any], include_dicom_seg: bool,
                  left_out: list[dict[str, Any]], redacted: list[str], sources: dict[Path, tuple[int, int]]) -> list[dict[str, Any]]:
    name = folder.name
    made = [_write_json(tmp / name / "result.json", f"{name}/result.json", _redact_result(result, redacted),
                        "rewritten: the input's fingerprint, id and lobe-map file name left out, local paths "
                        "redacted; scores as they are")]
    flags = result.get("qc_flags")
    flags = flags if isinstance(flags, list) else str(flags or "").split(";")
    burned_in = any(str(f).split(":", 1)[0].strip() == "BURNED_IN_ANNOTATION" for f in flags)
    for entry in _entries(folder):
        rel = f"{name}/{entry.name}"
        if entry.name == "result.json":
            continue
        if entry.is_symlink() or not entry.is_file():
            _leave(left_out, rel, "a symbolic link or not a plain file: not followed")
        elif entry.name in PICTURES and burned_in:
            _leave(left_out, rel, BURNED_IN_REASON, named=True)
        elif entry.name in SERIES_FILES:
            made.append(_copy(entry, tmp / name / entry.name, rel, sources))
        elif entry.name == "seg.dcm":
            if include_dicom_seg:
                made.append(_copy(entry, tmp / name / entry.name, rel, sources,
                                  "DICOM-SEG (--include-dicom-seg): carries every patient and study attribute of its "
                                  "source images"))
            else:
                _leave(left_out, rel, "DICOM-SEG: carries every patient and study attribute of its source images "
                       "(--include-dicom-seg copies it)", named=True)
        else:
            _leave(left_out, rel, NOT_RECOGNISED)
    return made


def _put_in_place(tmp: Path, dest: Path) -> None:
    """Rename the finished folder to ``dest`` (an empty folder there is replaced)."""
    from pipeline.outputs import replace_path

    if dest.is_dir() and sys.platform == "win32":  # Windows renames onto no existing folder, empty or not
        with contextlib.suppress(OSError):
            dest.rmdir()
    try:
        replace_path(tmp, dest)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise CTScoreError("OUTPUT_NOT_EMPTY", "the destination folder was filled while the share was made: "
                               "nothing was written there; give a new folder", dest) from exc
        raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot make the destination folder ({exc.strerror or exc})",
                           dest) from exc


def _iter_manifest(summary: Mapping[str, Any], include_dicom_seg: bool) -> Iterator[str]:
    from pipeline import __version__

    yield "ctscore share: what this folder holds, and what was left out of it"
    yield ""
    yield (f"Made by ctscore {__version__} on {time.strftime('%Y-%m-%d %H:%M:%S %z')} from a ctscore output folder "
           "(its location is not written here).")
    salt = summary["salt"]
    yield {"site": "Pseudonyms: made with the site's own secret salt (outputs.pseudonym_salt).",
           "builtin": "Pseudonyms: made with the BUILT-IN salt (shared with --allow-builtin-salt): anyone holding "
                      "PatientIDs can recompute them, and a numeric PatientID is recovered by trying every number.",
           "none": "Patient ids: NOT pseudonymous (outputs.pseudonymize false; shared with --allow-identifiers).",
           }.get(salt, "Pseudonyms: which salt made them is not recorded (shared with --allow-builtin-salt).")
    yield ("The tables are pseudonymous, not anonymous: scans.csv and result.json keep the study date, the series "
           "time and the SeriesInstanceUID.")
    if include_dicom_seg:
        yield ("seg.dcm files were included (--include-dicom-seg): each carries every patient and study attribute "
               "of its source images.")
    yield ""
    yield "Check the copies: grep -E '^[0-9a-f]{64}  ' SHARED.txt | sha256sum -c"
    yield ""
    yield f"## Copied ({len(summary['copied'])} files): sha256, then the path in this folder"
    for c in summary["copied"]:
        yield f"{c['sha256']}  {c['path']}"
    notes = [c for c in summary["copied"] if c.get("note")]
    notes_by = {}
    for c in notes:
        notes_by.setdefault(c["note"], []).append(c["path"])
    if notes_by:
        yield ""
        yield "## Changed on the way"
        for note, paths in notes_by.items():
            shown = ", ".join(paths[:4]) + (f" and {len(paths) - 4} more" if len(paths) > 4 else "")
            yield f"- {shown}: {note}"
    if summary["redacted"]:
        yield ""
        yield "## Values redacted or left out of run.json and result.json"
        for item in summary["redacted"]:
            yield f"- {item}"
    yield ""
    yield "## Left out of this folder"
    stale = [x for x in summary["left_out"] if x["reason"] == NOT_IN_TABLES]
    if stale:
        yield f"- {len(stale)} scan folder(s) not in this run's tables left out: an earlier run or another input"
    named = [x for x in summary["left_out"] if x["named"] and x["reason"] != NOT_IN_TABLES]
    hidden = [x for x in summary["left_out"] if not x["named"]]
    for x in named:
        yield f"- {x['path']}: {x['reason']}"
    by_reason: dict[str, int] = {}
    for x in hidden:
        by_reason[x["reason"]] = by_reason.get(x["reason"], 0) + 1
    for reason, n in by_reason.items():
        yield (f"- {n} file(s) or folder(s), names not written here (a name can identify; ctscore share printed "
               f"them): {reason}")
    if not summary["left_out"]:
        yield "- nothing"
    yield ""
    yield ("report.html was made again from the files in this folder: its links lead to files here; it links no "
           "file that was left out (inventory.csv, which its text names, is not shared).")


def _manifest(summary: Mapping[str, Any], include_dicom_seg: bool) -> str:
    return "\n".join(_iter_manifest(summary, include_dicom_seg)) + "\n"
