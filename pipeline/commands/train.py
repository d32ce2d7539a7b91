"""``ctscore train``: train (or fine-tune) the MONAI lung/lesion segmenter.

Backgrounds are DICOM series folders: by default the clean scans of ``../shared/data/chest`` listed in
:data:`segmentation.training.DEFAULT_BACKGROUNDS` (the held-out ``normal001`` is never used), or the
sub-folders of ``--data``. A folder with ``lungs.nii.gz`` (1 right, 2 left, on the CT's geometry; any
grid) uses that as the lung label instead of the classical teacher; with ``lesions.nii.gz`` as well, its
real lesions are trained on as they are (no synthesis; a lesion mask without a lung mask is refused).
The cache (``--cache``) remembers what each case was made from: a changed image, label file (known by its
content), label values or teacher grid makes that case again; the warnings said while a case was made are said again
when it is reused. ``--backgrounds-file`` lists backgrounds in YAML instead, including image
files (NIfTI, NRRD) with their own label map (e.g. a lobe map; the values meaning right and left are
listed), such as ``configs/training/backgrounds.yaml``. A lesion file without a lesion voxel trains its case as
lesion-free (a warning says so). ``--init`` fine-tunes from existing weights (a model folder written by ctscore
train, checked against its manifest). ``--out`` is locked while training, and never the shipped
``segmentation/weights``; an interrupted recipe resumes from its finished stages when run again.
Python twin: :func:`segmentation.recipe.train_segmenter` (same options, same errors).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys

from pipeline.errors import EXIT_OK, EXIT_USAGE
from segmentation.recipe import read_train_config  # noqa: F401 - kept importable here (older scripts, tests)

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
                        "files (NIfTI, NRRD) with their own lung label map and the values meaning right / left, "
                        "optionally a lesion mask (lesions:, with lesion_values: for a combined map; trained on "
                        "as it is, no synthesis) (e.g. configs/training/backgrounds.yaml); paths relative to the "
                        "file")
    p.add_argument("--cache", default=".train_cache",
                   help="cache folder of preprocessed cases (.npz; default %(default)s)")
    p.add_argument("--out", default="segmentation/weights_new",
                   help="output folder for the weights (default %(default)s; the shipped segmentation/weights is "
                        "refused, with --overwrite too)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a model already in --out, with the logs and stages of the run that made it (refused "
                        "otherwise, before anything is made). Without it, rerunning an interrupted recipe resumes: "
                        "each finished stage (--out/stages/NAME) trained with the same options, cached cases and "
                        "starting weights is reused, one trained otherwise is refused (with it: replaced; while --out "
                        "holds no model, matching stages are reused with it too)")
    p.add_argument("--prepare-only", action="store_true", help="only build the cache")
    d = _train_defaults()
    p.add_argument("--iterations", type=int, default=None,
                   help=f"training steps (batches) at most, per stage of a recipe (default {d['iterations']}, or "
                        f"the training config's)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help=f"wall-clock limit of the training loop in minutes, per stage; training stops at "
                        f"--iterations or at this limit, whichever comes first (a warning says when the limit stopped it "
                        f"first; default {d['max_minutes']:g}, or the training config's)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"crops per training step (default {d['batch_size']}, or the training config's)")
    p.add_argument("--num-workers", type=int, default=None,
                   help=f"data-loader worker processes making the random crops (0: in the training process; "
                        f"default {d['num_workers']}, or the training config's). Part of the recipe: each worker "
                        f"draws its own random numbers, so for one --seed another number of workers trains "
                        f"other weights. More workers than CPUs only makes torch warn and run slower; on a small "
                        f"machine give e.g. --num-workers 1")
    p.add_argument("--seed", type=int, default=None,
                   help=f"random seed of the crops, synthetic lesions and network initialisation: a CPU run with "
                        f"the same seed, data and options that ends by its iteration count gives the same weights "
                        f"(one ended by --max-minutes stops after however many iterations that time held, and "
                        f"its learning-rate schedule follows the time: not repeatable) (default {d['seed']}, or "
                        f"the training config's)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (AdamW, cosine decay; default {d['lr']:g} from scratch, "
                        f"{_fine_tune_lr():g} with --init, or the training config's)")
    p.add_argument("--p-empty", type=float, default=None,
                   help="share of training samples without synthetic lesions (default 0.15)")
    p.add_argument("--train-config", default=None,
                   help="YAML of training options (keys of segmentation.training.DEFAULT_TRAIN; 'synth': "
                        "keys of segmentation.synth.DEFAULTS; 'stages': a list of such option sets run one "
                        "after the other, each from the weights of the one before = a whole recipe, e.g. "
                        "segmentation/weights/recipe.yaml; a stage's 'backgrounds_file' trains it on that list "
                        "instead of the command's, with a warning); command-line options win over it, its stages "
                        "included")
    p.add_argument("--init", default=None,
                   help="fine-tune from these weights: a model.safetensors or a model folder written by ctscore "
                        "train (as ctscore run --model takes, e.g. segmentation/weights; checked against its "
                        "manifest.json, a folder without one is refused; a MONAI bundle cannot be fine-tuned); its "
                        "network is kept, its model grid must be the training config's")
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    p.add_argument("--log-file", default=None, help="also write the log to this file")


def _fine_tune_lr() -> float:
    from segmentation.recipe import FINE_TUNE_LR

    return FINE_TUNE_LR


def _train_defaults() -> dict:
    """segmentation.training.DEFAULT_TRAIN, for the defaults the help shows (read, not copied: they cannot drift
    apart)."""
    from segmentation.training import DEFAULT_TRAIN

    return DEFAULT_TRAIN


_ROLE_RE = re.compile(r":(?:data|func|class|meth|mod|attr|obj|exc):`~?([^`]+)`")


def plain(text: str) -> str:
    """reST/Sphinx markup of a docstring as plain text for --help: ``x`` and :func:`x` become x."""
    return _ROLE_RE.sub(r"\1", text).replace("``", "")


def register(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune the MONAI lung/lesion segmenter",
                       description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from segmentation.recipe import train_segmenter

    # an error is "ctscore: error: ..." with its exit code from the CLI's handler, as for every command
    train_segmenter(args.out, data=args.data, backgrounds=args.backgrounds,
                    backgrounds_file=args.backgrounds_file, cache=args.cache, train_config=args.train_config,
                    init=args.init, device=args.device, prepare_only=args.prepare_only,
                    iterations=args.iterations, max_minutes=args.max_minutes, batch_size=args.batch_size,
                    num_workers=args.num_workers, seed=args.seed, lr=args.lr, p_empty=args.p_empty,
                    overwrite=args.overwrite)
    return EXIT_OK


def main_argv(argv: list[str]) -> int:
    """Entry point of scripts/train_segmenter.py (same options as ``ctscore train``)."""
    from pipeline.cli import setup_logging

    p = argparse.ArgumentParser(prog="train_segmenter", description=plain(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    from pipeline.errors import CTScoreError

    try:
        setup_logging(args.verbose, args.quiet, args.log_file)
    except CTScoreError as exc:
        print(f"train_segmenter: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return main(args)
    except CTScoreError as exc:
        print(f"train_segmenter: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
