#!/usr/bin/env python
"""Train the MONAI lung/lesion segmenter (same as ``ctscore train``).

    # 1. cache the default clean backgrounds of ../shared/data/chest (teacher = classical segmenter)
    python scripts/train_segmenter.py --prepare-only --cache .train_cache
    # 2. train from the cache (GPU if there is one) and write the weights folder
    python scripts/train_segmenter.py --cache .train_cache --out my_model   # a folder holding a model: --overwrite
    # your own backgrounds (DICOM folders; lungs.nii.gz / lesions.nii.gz beside them = your labels)
    python scripts/train_segmenter.py --data /my/scans --cache /tmp/cache --out my_model
    # image files (NIfTI, NRRD) with their own label maps, listed in YAML (values meaning right / left)
    python scripts/train_segmenter.py --backgrounds-file configs/training/backgrounds.yaml --cache /tmp/cache4 \
        --out my_model --init segmentation/weights/model.safetensors --train-config configs/training/stage4_negatives.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

if __name__ == "__main__":
    from pipeline.commands.train import main_argv

    sys.exit(main_argv(sys.argv[1:]))
