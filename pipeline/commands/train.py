"""``ctscore train``: train (or fine-tune) the MONAI lung/lesion segmenter.

Backgrounds are DICOM series folders: by default the clean scans of ``../shared/data/chest`` listed in
:data:`segmentation.training.DEFAULT_BACKGROUNDS` (the held-out ``normal001`` is never used), or the
sub-folders of ``--data``. A folder with ``lungs.nii.gz`` (1 right, 2 left) uses that as the lung
label instead of the classical teacher; with ``lesions.nii.gz`` as well, its real lesions are trained on
as they are (no synthesis). ``--init`` fine-tunes from existing weights.
"""

from __future__ import annotations

import argparse
import logging
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
                        "keys of segmentation.synth.DEFAULTS); command-line options win")
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
    from segmentation.training import DEFAULT_TRAIN, prepare_cache, train

    cache = Path(args.cache)
    existing = sorted(cache.glob("*.npz")) if cache.exists() else []
    folders = _folders(args)
    if all(f.exists() for f in folders):
        files = prepare_cache(folders, cache, DEFAULT_TRAIN["model_spacing_mm"])
    else:
        missing = [str(f) for f in folders if not f.exists()]
        wanted = {f.name for f in folders}
        files = [p for p in existing if p.stem in wanted]
        if len(files) < len(wanted):
            print(f"ctscore train: background folders not found and not cached: {missing}")
            return EXIT_USAGE
        log.info("using cached cases %s", [p.stem for p in files])
    if args.prepare_only:
        return EXIT_OK
    cfg: dict = {}
    if args.train_config:
        import yaml

        from segmentation.synth import DEFAULTS as SYNTH_DEFAULTS

        cfg = yaml.safe_load(Path(args.train_config).read_text()) or {}
        unknown = sorted(set(cfg) - set(DEFAULT_TRAIN) - {"synth"})
        unknown += sorted(f"synth.{k}" for k in (cfg.get("synth") or {}) if k not in SYNTH_DEFAULTS)
        if unknown:
            print(f"ctscore train: {args.train_config}: unknown option(s) {unknown}")
            return EXIT_USAGE
    cfg.update({k: v for k, v in {"iterations": args.iterations, "max_minutes": args.max_minutes,
                             "batch_size": args.batch_size, "num_workers": args.num_workers,
                             "seed": args.seed, "lr": args.lr}.items() if v is not None})
    if args.p_empty is not None:
        cfg["synth"] = {**(cfg.get("synth") or {}), "p_empty": args.p_empty}
    train(files, args.out, cfg, device=args.device, init_weights=args.init)
    return EXIT_OK


def main_argv(argv: list[str]) -> int:
    """Entry point of scripts/train_segmenter.py (same options as ``ctscore train``)."""
    from pipeline.cli import setup_logging

    p = argparse.ArgumentParser(prog="train_segmenter", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    setup_logging(args.verbose, args.quiet, args.log_file)
    return main(args)
