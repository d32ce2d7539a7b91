#!/usr/bin/env python
"""Average the weights of fine-tunes of one network into a new model folder (a "model soup").

    # the equal-weight mean of two fine-tunes of the shipped weights
    python scripts/average_weights.py --out /tmp/soup /tmp/st10 /tmp/st11
    # weighted (normalised to sum 1)
    python scripts/average_weights.py --out /tmp/soup segmentation/weights /tmp/st10 --weights 0.5 0.5

Each source is a folder with ``model.safetensors``, ``model.yaml`` and ``manifest.json`` (what
``ctscore train`` writes), checked against its manifest. The result has the same layout and loads with
``--model``/``segmentation.monai.weights`` or ``scripts/evaluate_segmenter.py --weights``. Python API:
:func:`segmentation.weight_averaging.average_weights`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    from segmentation.weight_averaging import AveragingError, average_weights

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sources", nargs="+", help="model folders (or their model.safetensors)")
    ap.add_argument("--out", required=True, help="new model folder (must not exist or be empty)")
    ap.add_argument("--weights", type=float, nargs="+", help="one weight per source (default: equal)")
    a = ap.parse_args(argv)
    try:
        meta = average_weights(a.sources, a.out, a.weights)
    except AveragingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s in meta["averaged_from"]:
        print(f"{s['weight']:.4f}  {s['sha256'][:16]}  {s['folder']}")
    print(f"written: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
