"""QC pictures: axial slices at the zone levels and a coronal view, with lung and lesion contours."""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np

LESION_COLOURS = {1: "#ffe066", 2: "#ff9f1c", 3: "#e63946"}  # faint GGO, GGO, consolidation
LUNG_COLOURS = {1: "#2ec4b6", 2: "#3a86ff"}  # right, left


def qc_png(hu: np.ndarray, lungs: np.ndarray, classes: np.ndarray, z_mm: np.ndarray, spacing_zyx,
           levels: Mapping[str, float | None], title: str = "") -> bytes:
    """A PNG (bytes) with 3 axial slices and a coronal view; arrays are LPS [z, y, x]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    zs = np.nonzero(lungs.any(axis=(1, 2)))[0]
    if zs.size == 0:
        zs = np.arange(hu.shape[0])
    picks: list[tuple[str, int]] = []
    for name in ("aortic_arch", "carina", "ipv"):
        z = levels.get(name)
        if z is not None:
            picks.append((name, int(np.argmin(np.abs(z_mm - z)))))
    if not picks:
        picks = [(f"{f:.0%}", int(zs.min() + f * (zs.max() - zs.min()))) for f in (0.75, 0.5, 0.25)]
    # The axial slice with the most lesion, if any.
    les_per_slice = (classes > 0).sum(axis=(1, 2))
    if les_per_slice.any():
        picks.append(("most lesion", int(np.argmax(les_per_slice))))
    else:
        picks.append(("lower lung", int(zs.min() + 0.15 * (zs.max() - zs.min()))))

    ncol = len(picks) + 1
    fig, axes = plt.subplots(1, ncol, figsize=(3.2 * ncol, 3.6), dpi=90)
    aspect_ax = spacing_zyx[1] / spacing_zyx[2]
    for ax, (label, k) in zip(axes, picks):
        ax.imshow(hu[k], cmap="gray", vmin=-1350, vmax=150, aspect=aspect_ax, interpolation="nearest")
        for v, c in LUNG_COLOURS.items():
            if (lungs[k] == v).any():
                ax.contour(lungs[k] == v, levels=[0.5], colors=c, linewidths=0.8)
        for v, c in LESION_COLOURS.items():
            m = classes[k] == v
            if m.any():
                ax.contourf(m, levels=[0.5, 1.5], colors=[c], alpha=0.55)
        ax.set_title(f"{label}\nz={z_mm[k]:.0f} mm", fontsize=8)
        ax.axis("off")
    # Coronal view through the lungs' centre, head at the top.
    ax = axes[-1]
    yc = int(np.nonzero(lungs)[1].mean()) if lungs.any() else hu.shape[1] // 2
    cor = hu[::-1, yc, :]
    ax.imshow(cor, cmap="gray", vmin=-1350, vmax=150, aspect=spacing_zyx[0] / spacing_zyx[2],
              interpolation="nearest")
    for v, c in LUNG_COLOURS.items():
        m = lungs[::-1, yc, :] == v
        if m.any():
            ax.contour(m, levels=[0.5], colors=c, linewidths=0.8)
    for v, c in LESION_COLOURS.items():
        m = classes[::-1, yc, :] == v
        if m.any():
            ax.contourf(m, levels=[0.5, 1.5], colors=[c], alpha=0.55)
    zr = z_mm[::-1]
    for name, z in levels.items():
        if z is None or not (min(zr) <= z <= max(zr)):
            continue
        row = int(np.argmin(np.abs(zr - z)))
        ax.axhline(row, color="#80ffdb", lw=0.6, ls="--")
        ax.text(2, row - 1, name, color="#80ffdb", fontsize=6)
    ax.set_title("coronal (R on left)", fontsize=8)
    ax.axis("off")
    handles = [Line2D([], [], color=c, lw=4) for c in LESION_COLOURS.values()]
    fig.legend(handles, ["faint GGO", "GGO", "consolidation"], loc="lower center", ncol=3, fontsize=7,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
