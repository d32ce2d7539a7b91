"""Where two segmenters' lung masks differ on one scan: the lung one of them adds, piece by piece.

Between two training stages the lung volume on a real scan can move by a few hundred mL; this says whether the
change is diseased lung taken in (dense, called lesion) or neighbours taken from outside the lung (the
descending aorta, the mediastinum, the liver dome: soft-tissue density, not called lesion), with a picture of
each large piece (axial slice through its centre; blue: A's lung, red: B's lung, yellow: B's lesions).

    python scripts/compare_segmenters.py ../shared/data/chest/ricord_covid_419639 \
        --a segmentation/weights --b /tmp/st15 --png /tmp/diff.png

Weights folders as written by training (model.safetensors + model.yaml); ``classical`` for the classical
segmenter. The scan is read on the working grid of scripts/evaluate_segmenter.py (1.5 mm by default).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "scripts"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


def added_pieces(lungs_a: np.ndarray, lungs_b: np.ndarray, lesions_b: np.ndarray, hu: np.ndarray,
                 spacing: tuple[float, float, float], min_ml: float = 1.0) -> list[dict]:
    """Connected pieces (26-connectivity) of lung in ``lungs_b`` and not in ``lungs_a``, largest first.

    Arrays are [z, y, x] (LPS: x to the patient's left); lung labels 1 right, 2 left. Each piece: its volume,
    centre (voxel index and mm from the grid origin), median HU, the share of it ``lesions_b`` calls lesion,
    and the side B gives it. Pieces under ``min_ml`` are left out.
    """
    from scipy import ndimage as ndi

    add = (lungs_b > 0) & (lungs_a == 0)
    lab, n = ndi.label(add, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return []
    voxel_ml = float(np.prod(spacing)) / 1000.0
    idx = np.arange(1, n + 1)
    sizes = ndi.sum_labels(add, lab, idx)
    centres = ndi.center_of_mass(add, lab, idx)
    out = []
    for i in np.argsort(sizes)[::-1]:
        ml = float(sizes[i]) * voxel_ml
        if ml < min_ml:
            break
        m = lab == i + 1
        centre = tuple(int(round(c)) for c in centres[i])
        side = int(np.bincount(lungs_b[m].astype(np.int64)).argmax())
        out.append({"ml": ml, "centre_zyx": centre,
                    "centre_mm_zyx": tuple(round(c * s, 1) for c, s in zip(centre, spacing)),
                    "median_hu": float(np.median(hu[m])), "lesion_frac": float((lesions_b[m] > 0).mean()),
                    "side": {1: "right", 2: "left"}.get(side, "?")})
    return out


def _segmenter(spec: str, device: str):
    if spec == "classical":
        from segmentation.classical import ClassicalSegmenter

        return ClassicalSegmenter()
    from segmentation.monai_segmenter import MonaiSegmenter

    return MonaiSegmenter(Path(spec), device=device)


def picture(path: Path, hu: np.ndarray, a, b, pieces: list[dict], n: int = 6) -> None:
    """Axial slices through the centres of the ``n`` largest pieces."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = pieces[:n] or [{"ml": 0.0, "centre_zyx": (hu.shape[0] // 2, 0, 0)}]
    cols = min(3, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig, axs = plt.subplots(rows, cols, figsize=(5 * cols, 5 * rows), squeeze=False)
    for ax in axs.flat:
        ax.axis("off")
    for ax, p in zip(axs.flat, shown):
        z = p["centre_zyx"][0]
        ax.imshow(hu[z], cmap="gray", vmin=-1000, vmax=200)
        for mask, colour in ((a.lungs[z] > 0, "b"), (b.lungs[z] > 0, "r"), (b.lesions[z] > 0, "y")):
            if mask.any():
                ax.contour(mask, [0.5], colors=colour, linewidths=0.8)
        ax.set_title(f"slice {z}: {p['ml']:.0f} mL")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".part.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("series", type=Path, help="DICOM folder of one series")
    ap.add_argument("--a", required=True, help="weights folder, or 'classical' (the reference)")
    ap.add_argument("--b", required=True, help="weights folder, or 'classical' (the one compared)")
    ap.add_argument("--spacing", type=float, nargs=3, default=[1.5, 1.5, 1.5], help="working grid x y z (mm)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--min-ml", type=float, default=1.0)
    ap.add_argument("--png", type=Path, help="picture of the largest pieces")
    args = ap.parse_args(argv)
    if not all(v > 0 for v in args.spacing):
        ap.error(f"--spacing must be three sizes > 0 mm, got {args.spacing}")
    if args.png is not None and not args.png.parent.is_dir():  # found out before the segmenters run, not after
        ap.error(f"--png {args.png}: folder {args.png.parent} does not exist")
    if args.png is not None and args.png.is_dir():
        ap.error(f"--png {args.png} is a folder; give the PNG file to write")

    from evaluate_segmenter import working_grid  # this script's neighbour in scripts/

    from pipeline.errors import CTScoreError

    try:
        seg_a, seg_b = _segmenter(args.a, args.device), _segmenter(args.b, args.device)
        hu, sp = working_grid(args.series, args.spacing)
    except (CTScoreError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    a = seg_a.segment(hu, sp)
    b = seg_b.segment(hu, sp)
    vml = float(np.prod(sp)) / 1000.0
    print(f"{args.series.name}: lung A {(a.lungs > 0).sum() * vml:.0f} mL, B {(b.lungs > 0).sum() * vml:.0f} mL; "
          f"lesion A {(a.lesions > 0).sum() * vml:.0f} mL, B {(b.lesions > 0).sum() * vml:.0f} mL; "
          f"lung in B not in A {((b.lungs > 0) & (a.lungs == 0)).sum() * vml:.0f} mL, "
          f"in A not in B {((a.lungs > 0) & (b.lungs == 0)).sum() * vml:.0f} mL")
    pieces = added_pieces(a.lungs, b.lungs, b.lesions, hu, sp, args.min_ml)
    for p in pieces:
        print(f"  +{p['ml']:6.1f} mL  {p['side']:5s}  centre z/y/x {p['centre_zyx']} (mm {p['centre_mm_zyx']})  "
              f"median {p['median_hu']:5.0f} HU  lesion {100 * p['lesion_frac']:.0f} %")
    if args.png:
        picture(args.png, hu, a, b, pieces)
        print(f"picture: {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
