"""``ctscore train``: train (or fine-tune) the MONAI lung/lesion segmenter.

Backgrounds are DICOM series folders: by default the clean scans of ``../shared/data/chest`` listed in
:data:`segmentation.training.DEFAULT_BACKGROUNDS` (the held-out ``normal001`` is never used), or the
sub-folders of ``--data``. A folder with ``lungs.nii.gz`` (1 right, 2 left) uses that as the lung
label instead of the classical teacher; with ``lesions.nii.gz`` as well, its real lesions are trained on
as they are (no synthesis). ``--backgrounds-file`` lists backgrounds in YAML instead, including image
files (NIfTI, NRRD) with their own label map (e.g. a lobe map; the values meaning right and left are
listed), such as ``configs/training/backgrounds.yaml``. ``--init`` fine-tunes from existing weights.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from pipeline.errors import EXIT_OK, EXIT_USAGE

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options shared by ``ctscore train`` and ``scripts/train_segmenter.py``."""
    p.add_argument("--data", default=None,
                   help="folder whose sub-folders are background series (default: ../shared/data/chest, "
                        "clean scans only)")
    p.add_argument("--backgrounds", nargs="*", default=None,
                   help="names of the sub-folders to use (default: all of --data, or the clean chest scans)")
    p.add_argument("--backgrounds-file", default=None,
                   help="YAML listing the backgrounds instead of --data/--backgrounds: DICOM folders, or image "
                        "files (NIfTI, NRRD) with their own lung label map and the values meaning right / left "
                        "(e.g. configs/training/backgrounds.yaml); paths relative to the file")
    p.add_argument("--cache", default=".train_cache", help="cache folder of preprocessed cases (.npz)")
    p.add_argument("--out", default="segmentation/weights_new", help="output folder for the weights")
    p.add_argument("--prepare-only", action="store_true", help="only build the cache")
    p.add_argument("--iterations", type=int, default=None)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (AdamW, cosine decay)")
    p.add_argument("--p-empty", type=float, default=None,
                   help="share of training samples without synthetic lesions (default 0.15)")
    p.add_argument("--train-config", default=None,
                   help="YAML of training options (keys of segmentation.training.DEFAULT_TRAIN; 'synth': "
                        "keys of segmentation.synth.DEFAULTS; 'stages': a list of such option sets run one "
                        "after the other, each from the weights of the one before = a whole recipe, e.g. "
                        "segmentation/weights/recipe.yaml; a stage's 'backgrounds_file' trains it on that list); "
                        "command-line options win over the top level")
    p.add_argument("--init", default=None, help="fine-tune from this model.safetensors")
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--log-file", default=None)


def register(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune the MONAI lung/lesion segmenter",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=main)


def _folders(args: argparse.Namespace) -> list[Path]:
    from segmentation.training import DEFAULT_BACKGROUNDS, HELD_OUT_BACKGROUND

    if args.data:
        root = Path(args.data)
        names = args.backgrounds or sorted(d.name for d in root.iterdir() if d.is_dir())
    else:
        repo = Path(__file__).resolve().parents[2]
        root = repo.parent / "shared" / "data" / "chest"
        names = args.backgrounds or list(DEFAULT_BACKGROUNDS)
        if HELD_OUT_BACKGROUND in names:
            log.warning("%s is the held-out evaluation background; training on it voids the metrics",
                        HELD_OUT_BACKGROUND)
    return [root / n for n in names]


def main(args: argparse.Namespace) -> int:
    from segmentation.training import (
        DEFAULT_TRAIN,
        HELD_OUT_BACKGROUND,
        prepare_cache,
        read_backgrounds_file,
        train,
    )

    cache = Path(args.cache)
    existing = sorted(cache.glob("*.npz")) if cache.exists() else []
    folders = _folders(args)
    if args.backgrounds_file:
        if args.data or args.backgrounds:
            print("ctscore train: --backgrounds-file replaces --data / --backgrounds; give one or the other")
            return EXIT_USAGE
        try:
            sources = read_backgrounds_file(args.backgrounds_file)
        except ValueError as exc:
            print(f"ctscore train: {exc}")
            return EXIT_USAGE
        if any(b.name == HELD_OUT_BACKGROUND for b in sources):
            log.warning("%s is the held-out evaluation background; training on it voids the metrics",
                        HELD_OUT_BACKGROUND)
        try:
            files = prepare_cache(sources, cache, DEFAULT_TRAIN["model_spacing_mm"])
        except ValueError as exc:
            print(f"ctscore train: {exc}")
            return EXIT_USAGE
    elif all(f.exists() for f in folders):
        files = prepare_cache(folders, cache, DEFAULT_TRAIN["model_spacing_mm"])
    else:
        missing = [str(f) for f in folders if not f.exists()]
        wanted = {f.name for f in folders}
        files = [p for p in existing if p.stem in wanted]
        if len(files) < len(wanted):
            print(f"ctscore train: background folders not found and not cached: {missing}")
            return EXIT_USAGE
        log.info("using cached cases %s", [p.stem for p in files])
    cfg: dict = {}
    stages: list[dict] = [{}]
    if args.train_config:
        cfg, stages, problem = read_train_config(Path(args.train_config))
        if problem:
            print(f"ctscore train: {args.train_config}: {problem}")
            return EXIT_USAGE
    # a stage (or the whole file) may name its own background list: cached now, before any training
    stage_files: list[list[Path]] = []
    for i, stage in enumerate(stages):
        bfile = stage.get("backgrounds_file", cfg.get("backgrounds_file"))
        if not bfile:
            stage_files.append(files)
            continue
        try:
            srcs = read_backgrounds_file(bfile)
            if any(b.name == HELD_OUT_BACKGROUND for b in srcs):
                log.warning("%s is the held-out evaluation background; training on it voids the metrics",
                            HELD_OUT_BACKGROUND)
            stage_files.append(prepare_cache(srcs, cache, DEFAULT_TRAIN["model_spacing_mm"]))
        except ValueError as exc:
            print(f"ctscore train: {args.train_config}: stages[{i}] backgrounds_file: {exc}")
            return EXIT_USAGE
    cfg.pop("backgrounds_file", None)
    stages = [{k: v for k, v in st.items() if k != "backgrounds_file"} for st in stages]
    # anatomy mixing (a stage's or the file's anatomy_mix): registered mixes of that stage's backgrounds, made now
    for i, stage in enumerate(stages):
        mix = stage.get("anatomy_mix", cfg.get("anatomy_mix"))
        if not mix:
            continue
        from segmentation.anatomy_mix import prepare_mixes

        try:
            stage_files[i] = list(stage_files[i]) + prepare_mixes(stage_files[i], **_mix_options(mix))
        except (TypeError, ValueError) as exc:
            print(f"ctscore train: {args.train_config}: anatomy_mix: {exc}")
            return EXIT_USAGE
    if args.prepare_only:
        return EXIT_OK
    cfg.update({k: v for k, v in {"iterations": args.iterations, "max_minutes": args.max_minutes,
                                  "batch_size": args.batch_size, "num_workers": args.num_workers,
                                  "seed": args.seed, "lr": args.lr}.items() if v is not None})
    if args.p_empty is not None:
        cfg["synth"] = {**(cfg.get("synth") or {}), "p_empty": args.p_empty}
    if len(stages) == 1:
        train(stage_files[0], args.out, {**cfg, **stages[0]}, device=args.device, init_weights=args.init)
        return EXIT_OK
    # a recipe: each stage starts from the weights of the one before; the last one's files go to --out
    out = Path(args.out)
    init = args.init
    for i, stage in enumerate(stages):
        name = str(stage.get("name", f"stage{i + 1}"))
        st = {k: v for k, v in stage.items() if k != "name"}
        merged = {**cfg, **st, "synth": {**(cfg.get("synth") or {}), **(st.get("synth") or {})}}
        log.info("recipe stage %s (%d of %d)", name, i + 1, len(stages))
        info = train(stage_files[i], out / "stages" / name, merged, device=args.device, init_weights=init)
        init = str(out / "stages" / name / "model.safetensors")
        shutil.copy2(out / "stages" / name / "train_log.json", out / f"train_log_{name}.json")
        log.info("stage %s: %d iterations, %.1f min", name, info["iterations"], info["wall_s"] / 60)
    for f in ("model.safetensors", "model.yaml", "manifest.json"):
        shutil.copy2(Path(init).parent / f, out / f)
    return EXIT_OK


def _mix_options(mix: object) -> dict:
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

    from segmentation.synth import DEFAULTS as SYNTH_DEFAULTS
    from segmentation.training import DEFAULT_TRAIN

    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        return {}, [{}], f"cannot read: {exc}"
    if not isinstance(doc, dict):
        return {}, [{}], "expected a mapping of options"
    stages = doc.pop("stages", None) or [{}]
    problems: list[str] = []
    for where, d in [("", doc)] + [(f"stages[{i}].", st) for i, st in enumerate(stages)]:
        if not isinstance(d, dict):
            problems.append(f"{where or 'top level'} is not a mapping")
            continue
        problems += [f"{where}{k}" for k in sorted(set(d) - set(DEFAULT_TRAIN) - {"synth", "name", "backgrounds_file"})]
        problems += [f"{where}synth.{k}" for k in (d.get("synth") or {}) if k not in SYNTH_DEFAULTS]
    return doc, stages, (f"unknown option(s) {problems}" if problems else None)


def main_argv(argv: list[str]) -> int:
    """Entry point of scripts/train_segmenter.py (same options as ``ctscore train``)."""
    from pipeline.cli import setup_logging

    p = argparse.ArgumentParser(prog="train_segmenter", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose, args.quiet, args.log_file)
    return main(args)
