"""Training from a notebook: :func:`train_segmenter`, the Python twin of ``ctscore train``.

Same options and defaults as the command (``pipeline/commands/train.py`` only parses arguments and
calls this), same errors: every problem with the backgrounds, the training config or the device is a
:class:`~pipeline.errors.ConfigError` naming the file.

Steps: the backgrounds (the clean scans of ``../shared/data/chest``, the sub-folders of ``data``, or a
``backgrounds_file``) are cached at the model grid of the training config; a stage may name its own
``backgrounds_file`` and add registration-made anatomies (``anatomy_mix``); then
:func:`segmentation.training.train` runs once, or once per stage of a recipe (each from the weights of
the one before; the last stage's model files are moved into ``out`` with the manifest last, which covers the
training logs too).

The backgrounds a stage trains on: its own ``backgrounds_file`` when it names one (a warning says so when the command
named a list of its own, whose cases that stage then does not see), else the command's (``--backgrounds-file``,
``--data`` / ``--backgrounds``), else the config's top-level ``backgrounds_file``, else the clean chest scans.

``out`` is locked for the run (another ``ctscore train`` into it is refused). A recipe resumes by stage: a finished
stage (``out/stages/<name>`` with its model, manifest and log) made with the same options, training data and starting
weights is reused; one made otherwise is refused unless ``overwrite``, which sets the earlier run's files aside
(``out/.replaced``) and removes them once the new model is written (while ``out`` holds no model, ``overwrite`` too
reuses the finished stages that match: the same command run again resumes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)

MODEL_FILES = ("model.safetensors", "model.yaml", "manifest.json")  # manifest last: see publish_model

#: peak learning rate of a fine-tune (``init``) whose command and training config give none: the from-scratch default
#: (:data:`segmentation.training.DEFAULT_TRAIN` ``lr``, 2e-3) is ten times what the project's fine-tunes of trained
#: weights used (1e-4 to 5e-4: segmentation/weights/recipe.yaml stages 3-6, configs/training/stage*.yaml and
#: finetune_focus.yaml, EXPERIMENTS.md)
FINE_TUNE_LR = 2e-4

#: where an ``--overwrite`` run keeps the earlier run's files until its own model is written
REPLACED_DIR = ".replaced"


def mix_options(mix: object) -> dict:
    """``anatomy_mix`` of a training config: a mapping with ``alphas`` (each in (0, 1]), or true for the default."""
    if mix is True:
        return {}
    if not isinstance(mix, dict) or set(mix) - {"alphas"}:
        raise ValueError(f"expected true or a mapping with 'alphas', got {mix!r}")
    return {"alphas": [float(a) for a in mix.get("alphas", (0.5, 1.0))]}


def read_train_config(path: Path) -> tuple[dict, list[dict], str | None]:
    """Training options from YAML: (common options, stages, problem or None).

    Keys are those of :data:`segmentation.training.DEFAULT_TRAIN`, ``synth`` takes those of
    :data:`segmentation.synth.DEFAULTS`; an optional ``stages`` list (each a dict of the same keys plus
    ``name``) makes the file a multi-stage recipe. ``backgrounds_file`` (top level or per stage) trains
    that stage on the backgrounds listed there (as ``--backgrounds-file``) instead of the command's.
    ``anatomy_mix`` (``{alphas: [0.5, 1.0]}``) adds registration-made mixes of that stage's backgrounds
    (:mod:`segmentation.anatomy_mix`), written into the cache before any training.
    """
    import yaml

    from pipeline.config import load_yaml
    from segmentation.synth import DEFAULTS as SYNTH_DEFAULTS
    from segmentation.training import DEFAULT_TRAIN, casefold_clash

    try:
        doc = load_yaml(Path(path).read_text(encoding="utf-8")) or {}  # not the locale's (cp1252 on Windows)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return {}, [{}], f"cannot read: {exc}"
    if not isinstance(doc, dict):
        return {}, [{}], "expected a mapping of options"
    stages = doc.pop("stages", None) or [{}]
    if not isinstance(stages, list):
        return {}, [{}], f"'stages' must be a list of option mappings, got {stages!r}"
    problems: list[str] = []
    other: list[str] = []
    for where, d in [("", doc)] + [(f"stages[{i}].", st) for i, st in enumerate(stages)]:
        if not isinstance(d, dict):
            other.append(f"{where.rstrip('.') or 'top level'} is not a mapping")
            continue
        problems += [f"{where}{k}" for k in sorted(set(d) - set(DEFAULT_TRAIN) - {"synth", "name", "backgrounds_file"})]
        synth = d.get("synth")
        if synth is not None and not isinstance(synth, dict):
            other.append(f"{where}synth must be a mapping of synthesis options, got {synth!r}")
        else:
            problems += [f"{where}synth.{k}" for k in (synth or {}) if k not in SYNTH_DEFAULTS]
    if other:
        return {}, [{}], "; ".join(other)
    if "name" in doc:
        other.append("'name' names a stage (inside 'stages'), not the top level")
    names = [str(st.get("name", f"stage{i + 1}")) for i, st in enumerate(stages)]
    for i, n in enumerate(names):  # each stage writes stages/<name>/ and train_log_<name>.json under the output
        if not n or n in (".", "..") or "/" in n or "\\" in n or n.startswith("."):
            other.append(f"stages[{i}].name {n!r} must be a plain file name")
    if len(set(names)) != len(names):
        other.append(f"stage names must be unique (each writes its own folder), got {names}")
    elif clash := casefold_clash(names):  # on a case-insensitive file system: one folder, one stage lost
        a, b = clash
        other.append(f"stage names must be unique (each writes its own folder) also when upper and lower case are "
                     f"not told apart, as on Windows and macOS: {a!r} and {b!r} would be one folder")
    msgs = ([f"unknown option(s) {problems}"] if problems else []) + other
    return doc, stages, ("; ".join(msgs) if msgs else None)


def merge_stage(common: dict, stage: dict) -> dict:
    """A stage's options over the common ones; ``synth`` merged key by key (a stage's own ``synth`` block
    does not drop the common one, e.g. ``p_empty`` from the command line)."""
    st = {k: v for k, v in stage.items() if k not in ("name", "backgrounds_file")}
    return {**common, **st, "synth": {**(common.get("synth") or {}), **(st.get("synth") or {})}}


def publish_model(src: Path, out: Path) -> None:
    """Copy the model files of ``src`` into ``out``, each written atomically (:func:`pipeline.outputs.atomic_write_bytes`),
    the manifest last, so ``out`` never holds a manifest vouching for files it was not made with."""
    from pipeline.outputs import atomic_write_bytes

    for f in MODEL_FILES:
        atomic_write_bytes(out / f, (src / f).read_bytes())


def _default_folders(data: str | Path | None, names: list[str] | None) -> list[Path]:
    from segmentation.training import DEFAULT_BACKGROUNDS, HELD_OUT_BACKGROUND

    if data:
        root = Path(data)
        if not root.is_dir():
            raise ConfigError("no such folder of background series", root)
        names = names or sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not names:  # was blamed on the batch size ("more than the 0 crops of an epoch")
            raise ConfigError("no background series in this folder: --data takes a folder with one subfolder per "
                              "series (a single series: give the folder above it, or its name with --backgrounds)",
                              root)
    else:
        root = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest"
        names = names or list(DEFAULT_BACKGROUNDS)
    if HELD_OUT_BACKGROUND in names:
        log.warning("%s is the held-out evaluation background; training on it voids the metrics",
                    HELD_OUT_BACKGROUND)
    return [root / n for n in names]


def _read_backgrounds(path: str | Path, where: str = "") -> list:
    from segmentation.training import HELD_OUT_BACKGROUND, read_backgrounds_file

    try:
        srcs = read_backgrounds_file(path)
    except ValueError as exc:
        raise ConfigError(f"{where}{exc}", path) from exc
    if any(b.name == HELD_OUT_BACKGROUND for b in srcs):
        log.warning("%s is the held-out evaluation background; training on it voids the metrics",
                    HELD_OUT_BACKGROUND)
    return srcs


def _check_case_names(lists: list[list | None], spacing: list[float], teacher_spacing: list[float]) -> None:
    """The cache names a case by its background's name: refuse (ConfigError naming both sources) two backgrounds of
    the lists a run caches that share a name but are made from different images, label files or label values (the
    later one would re-make the file and every stage would train on it). Names that differ in case alone
    (``Case01``, ``case01``) count as one: on a case-insensitive file system (Windows, macOS) they are one file."""
    from segmentation.training import Background, background_fingerprint

    seen: dict[str, tuple[str, Background]] = {}
    for srcs in lists:
        for src in srcs or []:
            try:
                bg = src if isinstance(src, Background) else Background.from_folder(Path(src))
            except ValueError as exc:
                raise ConfigError(str(exc), src) from exc
            fp = background_fingerprint(bg, spacing, teacher_spacing)
            key = bg.name.casefold()
            if key in seen and seen[key][0] != fp:

                def made_of(b: Background) -> str:
                    return f"{b.image}" + (f" with lungs {b.lungs} (right {list(b.right)}, left {list(b.left)})"
                                           + (f" and lesions {b.lesions}" if b.lesions else "") if b.lungs else "")

                first = seen[key][1]
                named = (f"named {bg.name!r}" if first.name == bg.name else
                         f"named {first.name!r} and {bg.name!r} (one cache file where upper and lower case are not "
                         f"told apart, as on Windows and macOS)")
                raise ConfigError(f"two backgrounds {named} are made from different sources "
                                  f"({made_of(first)}; {made_of(bg)}); the cache names each case by its "
                                  f"name, so one would replace the other for every stage: give one another name "
                                  f"('name:' in its backgrounds file)")
            seen.setdefault(key, (fp, bg))


def _cache(sources: list, cache: Path, spacing: list[float], where: str = "",
           teacher_spacing: list[float] | None = None) -> list[Path]:
    from segmentation.training import DEFAULT_TRAIN, prepare_cache

    try:
        return prepare_cache(sources, cache, spacing,
                             teacher_spacing_xyz=teacher_spacing or DEFAULT_TRAIN["teacher_spacing_mm"])
    except ValueError as exc:
        raise ConfigError(f"{where}{exc}", cache) from exc


def check_train_options(*, init: str | Path | None, device: str, prepare_only: bool, iterations: int | None,
                        max_minutes: float | None, batch_size: int | None, num_workers: int | None,
                        lr: float | None, p_empty: float | None, seed: int | None = None) -> None:
    """Refuse option values training cannot use (ConfigError), before any cache or output folder is made."""
    def bad(name: str, value: Any, want: str) -> ConfigError:
        return ConfigError(f"{name} must be {want}, got {value!r}")

    for name, value in (("iterations", iterations), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise bad(name, value, "a whole number >= 1")
    if num_workers is not None and (isinstance(num_workers, bool) or not isinstance(num_workers, int)
                                    or num_workers < 0):
        raise bad("num_workers", num_workers, "a whole number >= 0")
    for name, value in (("max_minutes", max_minutes), ("lr", lr)):
        if value is not None and not (isinstance(value, (int, float)) and value > 0):  # also refuses NaN
            raise bad(name, value, "a positive number")
    if p_empty is not None and not (isinstance(p_empty, (int, float)) and 0 <= p_empty <= 1):
        raise bad("p_empty", p_empty, "a share between 0 and 1")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32):
        raise bad("seed", seed, "a whole number in [0, 2**32)")
    if init is not None:  # a model.safetensors or a model folder (as ctscore run --model takes)
        from segmentation.training import read_init

        read_init(init)
    if not prepare_only:
        from segmentation.monai_segmenter import resolve_device

        resolve_device(device)


@contextlib.contextmanager
def out_lock(out: Path) -> Iterator[None]:
    """Hold the lock of ``out`` for a training run, or raise :class:`pipeline.errors.OutputLocked` naming the run that
    holds it: the project's output-folder lock (:func:`pipeline.batch.lock_file`, ``flock`` / ``LockFileEx``, per
    thread too) on a hidden file beside ``out`` (``.<out name>.train.lock``: inside, it would be part of the model
    folder a user shares). Where the file system has no locks, a warning and the run goes on."""
    from pipeline.batch import lock_file

    out = Path(os.path.abspath(out))
    with lock_file(out.parent / f".{out.name}.train.lock", "ctscore train", out,
                   hint="wait for it, or give another --out"):
        yield


def _settings_key(cfg: dict, data: list[dict], init_sha256: str | None) -> str:
    """What a stage's result depends on, as one sha256: its options (over the defaults), what each cached case it
    trains on was made from (its cache fingerprint: the source files, label values, grids and cache version; the
    file's own sha256 for a case without one, e.g. an anatomy mix) and the sha256 of the weights it starts from. A
    finished stage with the same key is reused: also from a cache made again elsewhere (another --cache, another
    machine) whose files differ in their last bits."""
    from segmentation.training import DEFAULT_TRAIN

    doc = {"cfg": {**DEFAULT_TRAIN, **cfg}, "data": sorted((d["case"], d.get("source") or d["sha256"]) for d in data),
           "init_sha256": init_sha256}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def _data_digests(files: list[Path]) -> list[dict]:
    """Per cached case: its name, the file's sha256 and size, and the sha256 of its cache fingerprint ("source":
    what it was made from; absent for a case written without one)."""
    from segmentation.training import cache_fingerprint, sha256_file

    out = []
    for f in files:
        d = {"case": Path(f).stem, "sha256": sha256_file(f), "bytes": Path(f).stat().st_size}
        source = cache_fingerprint(f)
        if source:
            d["source"] = hashlib.sha256(source.encode()).hexdigest()
        out.append(d)
    return out


def _finished_stage(folder: Path) -> dict | None:
    """The training log of a finished stage folder (model, manifest vouching for it, log), else None."""
    from segmentation.training import sha256_file

    try:
        man = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))["files"]
        info = json.loads((folder / "train_log.json").read_text(encoding="utf-8"))
        if man["model.safetensors"]["sha256"] != sha256_file(folder / "model.safetensors"):
            return None
        return info if isinstance(info, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _background_record(srcs: list | None, origin: str, where: str | Path | None) -> dict:
    """What a stage's background list was, for its training log: where it came from, the list file's sha256, and each
    case's name and label mapping (own lung / lesion labels, the values meaning right, left and lesion). Each case's
    ``checks`` setting and the warnings said while it was cached are in the log's ``data``
    (:func:`segmentation.training.train`)."""
    from segmentation.training import Background, sha256_file

    rec: dict[str, Any] = {"from": origin}
    if where is not None:
        rec["path"] = str(where)
        if Path(where).is_file():
            rec["sha256"] = sha256_file(where)
    cases = []
    for src in srcs or []:
        try:
            bg = src if isinstance(src, Background) else Background.from_folder(Path(src))
        except ValueError:
            continue
        c: dict[str, Any] = {"name": bg.name, "own_lungs": bg.lungs is not None, "own_lesions": bg.lesions is not None}
        if bg.lungs is not None:
            c.update(right=[int(v) for v in bg.right], left=[int(v) for v in bg.left])
        if bg.lesion_values:
            c["lesion_values"] = [int(v) for v in bg.lesion_values]
        cases.append(c)
    if cases:
        rec["cases"] = cases
    return rec


def _set_aside(out: Path, keep: set[str] = frozenset()) -> None:
    """``--overwrite``: move the earlier run's model, logs and stages (but the stages ``keep``, reused, and their
    logs) into ``out/.replaced`` (manifest first, so no manifest vouches for files that are gone), to be removed once
    the new model is written (:func:`_drop_set_aside`): an interrupted run leaves them there."""
    aside = out / REPLACED_DIR
    keep_aside = aside.exists() and not (out / "model.safetensors").exists()
    if aside.exists() and not keep_aside:  # from a run interrupted before its model was written, and a model was
        shutil.rmtree(aside)               # written since: older than what is in out now
    items = [out / f for f in ("manifest.json", "model.safetensors", "model.yaml", "train_log.json")]
    items += [p for p in sorted(out.glob("train_log_*.json")) if p.name[len("train_log_"):-5] not in keep]
    if (out / "stages").is_dir():
        items += [d for d in sorted((out / "stages").iterdir()) if d.name not in keep]
    items = [p for p in items if p.exists() or p.is_symlink()]
    if not items:
        return
    if keep_aside:
        # an earlier --overwrite run was interrupted: .replaced holds the model it replaced, the only copy left; what
        # lies in out now is that run's unfinished work (stages it did not reuse), removed rather than set aside
        log.info("%s holds the model an interrupted --overwrite run replaced: kept until this run's model is written; "
                 "that run's unfinished stages are removed", aside)
        for p in items:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        with contextlib.suppress(OSError):
            (out / "stages").rmdir()
        return
    for p in items:
        dest = aside / p.relative_to(out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, dest)
    with contextlib.suppress(OSError):  # stages/ itself when no stage of it is kept
        (out / "stages").rmdir()
    log.warning("--overwrite: the earlier run's %s moved to %s; removed once the new model is written",
                ", ".join(str(p.relative_to(out)) for p in items), aside)


def _drop_set_aside(out: Path) -> None:
    shutil.rmtree(out / REPLACED_DIR, ignore_errors=True)


def _stale_outputs(out: Path, keep: set[str]) -> list[str]:
    """Files of an earlier run in ``out`` that a run without ``--overwrite`` would leave beside its model: finished
    stages and their logs not in ``keep`` (the stages it reuses), a lone ``train_log.json``."""
    stale = []
    stages = out / "stages"
    if stages.is_dir():
        stale += [f"stages/{d.name}" for d in sorted(stages.iterdir())
                  if d.is_dir() and d.name not in keep and _finished_stage(d) is not None]
    stale += [p.name for p in sorted(out.glob("train_log_*.json")) if p.name[len("train_log_"):-5] not in keep]
    if (out / "train_log.json").exists():
        stale.append("train_log.json")
    return stale


def train_segmenter(out: str | Path = "segmentation/weights_new", *, data: str | Path | None = None,
                    backgrounds: str | Path | list[str | Path] | None = None, backgrounds_file: str | Path | None = None,
                    cache: str | Path = ".train_cache", train_config: str | Path | None = None,
                    init: str | Path | None = None, device: str = "auto", prepare_only: bool = False,
                    iterations: int | None = None, max_minutes: float | None = None,
                    batch_size: int | None = None, num_workers: int | None = None, seed: int | None = None,
                    lr: float | None = None, p_empty: float | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Cache the backgrounds and train (or fine-tune from ``init``) the segmenter into ``out``.

    ``out`` being the shipped ``segmentation/weights`` (or a folder inside it) is refused, with ``overwrite`` too:
    train into another folder. ``out`` holding a model already (``model.safetensors``, e.g. an earlier run's hours
    of training) is refused before anything is made, unless ``overwrite``; so are the files of
    an earlier run that this one would leave beside its model (stages it does not reuse, their logs). ``out`` is
    locked while training (:func:`out_lock`). A recipe whose run was interrupted resumes: each finished stage
    (``out/stages/<name>``) trained with the same options, cached cases and starting weights is reused (logged), one
    trained otherwise is refused unless ``overwrite``, which sets the earlier run's model, logs and stages aside and
    removes them once the new model is written (while ``out`` holds no model, matching finished stages are reused
    with ``overwrite`` too).

    Options as ``ctscore train --help`` (``backgrounds``: the names of sub-folders of ``data``, or one name as a
    ``str``/``Path``, as ``--backgrounds A B``; ``backgrounds_file`` replaces ``data``/``backgrounds``; the
    keyword options win over ``train_config``, its stages included; a stage's own ``backgrounds_file`` wins over
    ``backgrounds_file`` (with a warning naming the stages that then do not train on the command's list), which
    wins over the config's top level). With ``init`` and no ``lr`` (neither here nor in the training config or its
    stage) a stage's peak learning rate is :data:`FINE_TUNE_LR`, not the from-scratch default. Returns
    ``{"cache_files": [...]}`` plus, unless ``prepare_only``, ``"stages"``: the training log of each stage
    (iterations, wall time, ..., ``"resumed": True`` for a stage reused from an earlier run).
    """
    from segmentation.training import (
        DEFAULT_TRAIN,
        check_inference_settings,
        check_init_fits,
        check_train_config,
        read_init,
        refuse_shipped_out,
        train,
    )

    if isinstance(backgrounds, (str, os.PathLike)):  # one background, not its letters
        backgrounds = [backgrounds]
    if backgrounds is not None:
        backgrounds = [os.fspath(b) if isinstance(b, os.PathLike) else b for b in backgrounds]
    check_train_options(init=init, device=device, prepare_only=prepare_only, iterations=iterations,
                        max_minutes=max_minutes, batch_size=batch_size, num_workers=num_workers, lr=lr,
                        p_empty=p_empty, seed=seed)
    if not prepare_only:  # the shipped model is never replaced, not even with overwrite
        refuse_shipped_out(out)
    if not prepare_only and Path(out).exists() and not Path(out).is_dir():
        raise ConfigError("the output folder (--out) is a file, not a folder: give a folder for the model", out)
    if not prepare_only:  # a folder that cannot be made fails now, not after an hour of caching (as the other commands)
        from pipeline.outputs import check_output_dir

        check_output_dir(out)
    if not prepare_only and not overwrite and (Path(out) / "model.safetensors").exists():
        raise ConfigError("the output folder already holds a model (model.safetensors): give another output folder "
                          "(--out), or --overwrite (Python: overwrite=True) to replace it", out)
    if not prepare_only and overwrite and init:  # --overwrite sets out's model and stages aside before training
        from segmentation.training import read_init

        w = os.path.realpath(read_init(init)[0])
        replaced = [os.path.realpath(Path(out) / "model.safetensors"), os.path.realpath(Path(out) / "stages")]
        if w == replaced[0] or w.startswith(replaced[1] + os.sep):
            raise ConfigError("the weights to start from (init) are the model --overwrite replaces: copy them to "
                              "another folder first, or give another --out", init)
    cfg: dict = {}
    stages: list[dict] = [{}]
    if train_config:
        cfg, stages, problem = read_train_config(Path(train_config))
        if problem:
            raise ConfigError(problem, train_config)
    # the command's options win over the training config, its stages included (`--iterations 5` shortens every
    # stage of a recipe, for a quick try)
    cli = {k: v for k, v in {"iterations": iterations, "max_minutes": max_minutes, "batch_size": batch_size,
                             "num_workers": num_workers, "seed": seed, "lr": lr}.items() if v is not None}
    cli_synth = {} if p_empty is None else {"p_empty": p_empty}

    def stage_options(stage: dict) -> dict:
        m = {k: v for k, v in merge_stage(cfg, stage).items() if k != "backgrounds_file"}
        if init and "lr" not in m and "lr" not in cli:  # a fine-tune: not the from-scratch peak learning rate
            m["lr"] = FINE_TUNE_LR
        return {**m, **cli, "synth": {**m["synth"], **cli_synth}}
    # every stage's options checked before anything is made (a bad value in a late stage would cost the early ones)
    init_arch, init_yaml = read_init(init)[1:] if init else (None, {})
    merged = [stage_options(st) for st in stages]
    for i, m in enumerate(merged):
        problems = check_train_config(m, init_arch)
        if problems:
            where = f"stages[{i}] ({stages[i].get('name', f'stage{i + 1}')}): " if len(stages) > 1 else ""
            raise ConfigError(where + "; ".join(problems), train_config)
    if init:
        check_init_fits(init_yaml, merged[0], init)
        check_inference_settings(init_yaml, read_init(init)[0].parent / "model.yaml")
    # the cache is made at the model grid (and the teacher at its grid) the training config asks for
    grids = {}
    for key in ("model_spacing_mm", "teacher_spacing_mm"):
        vals = {tuple(float(v) for v in m.get(key, DEFAULT_TRAIN[key])) for m in merged}
        if len(vals) > 1:
            raise ConfigError(f"the stages ask for different {key} {sorted(vals)}; a recipe trains one "
                              f"model grid (its cache is made once)", train_config)
        grids[key] = list(vals.pop())
    spacing, teacher_spacing = grids["model_spacing_mm"], grids["teacher_spacing_mm"]
    cache = Path(cache)
    if cache.exists() and not cache.is_dir():
        raise ConfigError("the cache folder (--cache) is a file, not a folder", cache)
    if not cache.exists():  # one that cannot be made fails now (an existing one may be read-only and made before)
        from pipeline.outputs import check_output_dir

        check_output_dir(cache)
    # the backgrounds of every stage, read (not yet cached) first
    base_srcs: list | None = None
    folders: list[Path] = []
    if backgrounds_file:
        if data or backgrounds:
            raise ConfigError("backgrounds_file replaces data / backgrounds; give one or the other")
        base_srcs = _read_backgrounds(backgrounds_file)
    else:
        folders = _default_folders(data, backgrounds)
        if all(f.exists() for f in folders):
            base_srcs = folders
    # each stage's list: its own; else the command's (--backgrounds-file / --data), else the config's top level
    # (None: the command's backgrounds, cached as `files` below)
    command_list = bool(backgrounds_file or data or backgrounds)
    bfiles = [stage.get("backgrounds_file") or (None if command_list else cfg.get("backgrounds_file"))
              for stage in stages]
    stage_names = [str(st.get("name", f"stage{i + 1}")) for i, st in enumerate(stages)]
    own = [n for n, st in zip(stage_names, stages) if st.get("backgrounds_file")]
    if command_list and own:  # the recipe's list wins for those stages: say so (the user's cases are not in them)
        if backgrounds_file:
            given = f"--backgrounds-file {backgrounds_file}"
        else:
            given = " ".join(([f"--data {data}"] if data else [])
                             + ([f"--backgrounds {' '.join(map(str, backgrounds))}"] if backgrounds else []))
        last = " (the last one, whose weights are the result)" if stage_names[-1] in own else ""
        log.warning("stage(s) %s of %s name their own background list (backgrounds_file: %s) and train on it, "
                    "not on the backgrounds of the command (%s)%s; to train on your cases in every stage, drop "
                    "backgrounds_file from those stages or list your cases in that file",
                    ", ".join(own), train_config, ", ".join(sorted({str(st["backgrounds_file"]) for st in stages
                                                                    if st.get("backgrounds_file")})),
                    given, last)
    stage_srcs: list[list | None] = []
    for i, bfile in enumerate(bfiles):
        stage_srcs.append(_read_backgrounds(bfile, f"{train_config}: stages[{i}] backgrounds_file: ")
                          if bfile else base_srcs)
    _check_case_names([base_srcs if not all(bfiles) else None]
                      + [stage_srcs[i] if b else None for i, b in enumerate(bfiles)], spacing, teacher_spacing)
    if not prepare_only:  # an epoch too small for one batch would never end
        for i, m in enumerate(merged):
            n = len(stage_srcs[i]) if stage_srcs[i] is not None else len(folders)
            mix = m.get("anatomy_mix")
            if mix:
                n += n * (n - 1) * len(mix_options(mix).get("alphas", (0.5, 1.0)))
            spv, bs = int(m.get("samples_per_volume", DEFAULT_TRAIN["samples_per_volume"])), int(
                m.get("batch_size", DEFAULT_TRAIN["batch_size"]))
            if bs > n * spv:
                where = f"stages[{i}]: " if len(stages) > 1 else ""
                raise ConfigError(f"{where}batch_size {bs} is more than the "
                                  f"{n * spv} crops of an epoch ({n} case(s) x samples_per_volume {spv})",
                                  train_config)
    if all(bfiles):
        files = []  # every stage trains on its own list: the command's backgrounds are not needed
    elif base_srcs is not None:
        files = _cache(base_srcs, cache, spacing, teacher_spacing=teacher_spacing)
    else:  # the shared data are not here: a cache made before will do
        existing = sorted(cache.glob("*.npz")) if cache.exists() else []
        wanted = {f.name for f in folders}
        files = [p for p in existing if p.stem in wanted]
        if len(files) < len(wanted):
            cached = {p.stem for p in files}
            absent = [f for f in folders if not f.exists()]
            raise ConfigError(f"background folder(s) not found: {[str(f) for f in absent]}; the cache {cache} "
                              f"lacks {sorted(f.name for f in folders if f.name not in cached)}", absent[0])
        log.info("using cached cases %s", [p.stem for p in files])
    # a stage (or the whole file) may name its own background list: cached now, before any training
    stage_files: list[list[Path]] = []
    for i, bfile in enumerate(bfiles):
        if not bfile:
            stage_files.append(files)
            continue
        where = f"{train_config}: stages[{i}] backgrounds_file: "
        stage_files.append(_cache(stage_srcs[i], cache, spacing, where, teacher_spacing))
    cfg.pop("backgrounds_file", None)
    # anatomy mixing (a stage's or the file's anatomy_mix): registered mixes of that stage's backgrounds, made now
    for i, stage in enumerate(stages):
        mix = stage.get("anatomy_mix", cfg.get("anatomy_mix"))
        if not mix:
            continue
        from segmentation.anatomy_mix import prepare_mixes

        try:
            stage_files[i] = list(stage_files[i]) + prepare_mixes(stage_files[i], **mix_options(mix))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"anatomy_mix: {exc}", train_config) from exc
    result: dict[str, Any] = {"cache_files": sorted({str(p) for fs in stage_files for p in fs})}
    if prepare_only:
        return result
    out = Path(out)
    # what each stage trained on, for its log (provenance): the list, its sha256, each case's label mapping
    records = []
    for i, bfile in enumerate(bfiles):
        if bfile:
            where = "stage backgrounds_file" if stages[i].get("backgrounds_file") else "training config backgrounds_file"
            records.append(_background_record(stage_srcs[i], where, bfile))
        elif backgrounds_file:
            records.append(_background_record(base_srcs, "--backgrounds-file", backgrounds_file))
        else:
            records.append(_background_record(base_srcs or folders, "--data" if data else "default backgrounds",
                                              Path(data) if data else None))
    from segmentation.training import sha256_file

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # made unwritable since the check above
        from pipeline.errors import CTScoreError

        raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot make the output folder ({exc.strerror or exc})", out) from exc
    with out_lock(out):
        if not overwrite and (out / "model.safetensors").exists():  # written by a run that ended meanwhile
            raise ConfigError("the output folder already holds a model (model.safetensors): give another output "
                              "folder (--out), or --overwrite (Python: overwrite=True) to replace it", out)
        init_sha = sha256_file(read_init(init)[0]) if init else None
        digests = [_data_digests(fs) for fs in stage_files]
        # the stages an earlier, interrupted run finished with the same settings: reused (a prefix of the recipe)
        # (with --overwrite too when out holds no model: the same command run again after an interruption)
        reused: dict[str, dict] = {}
        prev = init_sha
        for i, name in enumerate(stage_names):
            if len(stages) == 1 or (overwrite and (out / "model.safetensors").exists()):
                break
            done = _finished_stage(out / "stages" / name)
            if done is None:
                break  # not finished: it and the stages after it are trained (a finished later one is stale)
            if done.get("settings_sha256") != _settings_key(merged[i], digests[i], prev):
                if overwrite:
                    break  # replaced, with the stages after it
                raise ConfigError(f"stages/{name} holds stage {name!r} of an earlier run made with other options, "
                                  f"training data or starting weights (or before runs recorded them): give "
                                  f"--overwrite to train the recipe again from its first stage, or another --out",
                                  out / "stages" / name)
            reused[name] = done
            prev = sha256_file(out / "stages" / name / "model.safetensors")
        if overwrite:
            _set_aside(out, set(reused))
        else:
            stale = _stale_outputs(out, set(reused))
            if stale:
                raise ConfigError(f"the output folder holds files of an earlier run that this one would leave beside "
                                  f"its model ({', '.join(stale)}): give --overwrite to replace them, or another "
                                  f"--out", out)
        if len(stages) == 1:
            key = _settings_key(merged[0], digests[0], init_sha)
            result["stages"] = [train(stage_files[0], out, merged[0], device=device,
                                      init_weights=str(init) if init else None,
                                      provenance={"backgrounds": records[0], "settings_sha256": key})]
            _drop_set_aside(out)
            return result
        # a recipe: each stage starts from the weights of the one before; the last one's files go to out
        result["stages"] = []
        current = str(init) if init else None
        for i, name in enumerate(stage_names):
            folder = out / "stages" / name
            if name in reused:
                log.info("recipe stage %s (%d of %d): finished by an earlier run with the same options, data and "
                         "starting weights (%s): reused", name, i + 1, len(stages), folder)
                info = {**reused[name], "resumed": True}
            else:
                key = _settings_key(merged[i], digests[i], sha256_file(current) if i else init_sha)
                log.info("recipe stage %s (%d of %d)", name, i + 1, len(stages))
                info = train(stage_files[i], folder, merged[i], device=device, init_weights=current,
                             provenance={"stage": name, "backgrounds": records[i], "settings_sha256": key})
                log.info("stage %s: %d iterations, %.1f min", name, info["iterations"], info["wall_s"] / 60)
            current = str(folder / "model.safetensors")
            atomic_copy(folder / "train_log.json", out / f"train_log_{name}.json")
            result["stages"].append(info)
        publish_recipe_model(Path(current).parent, out, [f"train_log_{n}.json" for n in stage_names])
        _drop_set_aside(out)
    return result


def atomic_copy(src: Path, dst: Path) -> None:
    from pipeline.outputs import atomic_write_bytes

    atomic_write_bytes(dst, src.read_bytes())


def publish_recipe_model(src: Path, out: Path, logs: list[str]) -> None:
    """The last stage's model files into ``out`` (each written atomically), then a manifest over them and the
    stages' training logs (``logs``, in ``out``), written last: ``out`` never holds a manifest vouching for files it
    was not made with, and the logs shared with the model are covered by it."""
    from segmentation.training import write_manifest

    for f in ("model.safetensors", "model.yaml"):
        atomic_copy(src / f, out / f)
    write_manifest(out, ["model.safetensors", "model.yaml", *logs])
