"""QC picture of the landmark levels (``levels.png``): every level as a labelled line.

Left: a coronal view through the lungs' centre (lung window); right: a sagittal view through the
trachea (mediastinal window, so the sternum, the arch and the heart show). Each level is drawn
across both views at its patient z, labelled with its name, z (mm) and how it was found: a solid
line when detected, dashed when estimated (a label that would cover the one above it goes under its line).
Missing levels (no z, or a z that is not finite) are listed in the title. Images are in the radiological
convention (patient right on the left of the coronal view, anterior on the left of the sagittal view, head at
the top), with true millimetre proportions; each slice spans half-way to its neighbours, so unevenly spaced
slices, in either order, lie at their own z. Both views are cropped to the
body and the lungs plus 10 mm of air (:data:`VIEW_MARGIN_MM`), whatever the field of view.

Pure function: arrays in, PNG bytes out. Arrays are LPS-oriented ``[z, y, x]``.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Levels drawn, in this order, with their label and colour.
LEVELS: dict[str, tuple[str, str]] = {
    "apex_right": ("apex R", "#bbbbbb"),
    "apex_left": ("apex L", "#dddddd"),
    "suprasternal_notch": ("notch", "#ffd166"),
    "aortic_arch": ("arch", "#ef476f"),
    "carina": ("carina", "#06d6a0"),
    "rul_takeoff": ("RUL", "#8ecae6"),
    "bronchus_intermedius": ("BI", "#118ab2"),
    "ipv": ("IPV", "#f78c6b"),
    "dome_right": ("dome R", "#c77dff"),
    "dome_left": ("dome L", "#e0aaff"),
    "base_right": ("base R", "#999999"),
    "base_left": ("base L", "#777777"),
}
LUNG_WINDOW = (-1350.0, 150.0)
SOFT_WINDOW = (-160.0, 240.0)
#: Air kept beside the body in each view (mm): the views are cropped to the body (above
#: :data:`pipeline.qc.BODY_MIN_HU`) and the lungs, so a 500 mm field of view does not shrink the chest.
VIEW_MARGIN_MM = 10.0
#: Dark box behind the level labels: coloured text stays readable on bone and soft tissue (near white in the
#: lung window), as in qc.png.
LABEL_BOX = {"facecolor": "black", "alpha": 0.85, "pad": 0.5, "linewidth": 0}
#: A label sits this far (mm) above its line, or below it when the label above leaves no room.
LABEL_OFFSET_MM = 1.0


def view_span(img: np.ndarray, lung_cols: np.ndarray, spacing: float, margin_mm: float = VIEW_MARGIN_MM
              ) -> tuple[int, int]:
    """[start, stop) of the columns of a ``[z, col]`` view that hold the body or the lungs, plus ``margin_mm``;
    every column when neither is there."""
    from pipeline.qc import BODY_MIN_HU

    cols = np.nonzero((img > BODY_MIN_HU).any(axis=0) | lung_cols)[0]
    n = img.shape[1]
    if cols.size == 0:
        return 0, n
    m = int(np.ceil(margin_mm / spacing)) if spacing > 0 else 0
    return max(0, int(cols[0]) - m), min(n, int(cols[-1]) + 1 + m)


def _median_index(counts: np.ndarray) -> int:
    """``int(np.median(idx))`` of the indices ``idx`` that ``counts[i]`` times hold ``i``, without listing them."""
    cum = np.cumsum(counts)
    n = int(cum[-1])
    lo = int(np.searchsorted(cum, (n - 1) // 2, side="right"))  # the middle element(s) of the sorted list
    hi = int(np.searchsorted(cum, n // 2, side="right"))
    return int(0.5 * (lo + hi))


def _spread_labels(fig: Any, labels: Sequence[tuple[Any, str, float, Any]]) -> None:
    """Labels on one side of one view closer than their height (the carina and the RUL take-off, 3 mm apart)
    hid one another. From the top down, a label that would overlap the one above goes under its own line, or
    just under that label."""
    renderer = fig.canvas.get_renderer()
    groups: dict[tuple[int, str], list[tuple[float, Any, Any]]] = {}
    for ax, side, z, text in labels:
        groups.setdefault((id(ax), side), []).append((z, ax, text))
    pad_px = LABEL_BOX["pad"] * fig.dpi / 72.0
    for items in groups.values():
        ax = items[0][1]
        ax.apply_aspect()
        y0, y1 = ax.get_ylim()
        mm_per_px = abs(y1 - y0) / max(ax.get_window_extent(renderer).height, 1.0)
        pad = (pad_px + 0.5) * mm_per_px
        floor = np.inf  # the lowest box edge so far
        for z, _, text in sorted(items, key=lambda item: -item[0]):
            h = text.get_window_extent(renderer).height * mm_per_px
            top = z + LABEL_OFFSET_MM + h + pad  # of its box, when above its line
            if top > floor:
                top = min(z - LABEL_OFFSET_MM + pad, floor)  # under its line, or under the label above
                text.set_y(top - pad)
                text.set_verticalalignment("top")
            floor = top - h - 2 * pad


def _z(lm: Any) -> float | None:
    return getattr(lm, "z_mm", None) if not isinstance(lm, Mapping) else lm.get("z_mm")


def _method(lm: Any) -> str:
    return getattr(lm, "method", "") if not isinstance(lm, Mapping) else lm.get("method", "")


def levels_png(hu: np.ndarray, lungs: np.ndarray, z_mm: Sequence[float], spacing_zyx: Sequence[float],
               landmarks: Mapping[str, Any], title: str = "", airway: np.ndarray | None = None) -> bytes:
    """PNG bytes of the coronal + sagittal level picture.

    ``landmarks`` maps a name to a :class:`scoring.landmarks.Landmark` or its dict form.
    The sagittal plane goes through the trachea when ``airway`` is given, else the lungs' midline."""
    # a Figure on its own Agg canvas: the global backend and pyplot's figures (a notebook's inline plots) are not
    # touched
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pipeline.qc import LUNG_COLOUR

    z_mm = np.asarray(z_mm, float)
    nz, ny, nx = hu.shape
    sz, sy, sx = (float(s) for s in spacing_zyx)
    lung = lungs > 0
    # the centre from the counts per row and column: np.nonzero would hold three int64 indices per lung voxel
    # (about 1 GB for a 600-slice scan)
    per_y = np.count_nonzero(lung, axis=(0, 2))
    if per_y.any():
        xs = np.nonzero(lung.any(axis=(0, 1)))[0]
        yc, xc = _median_index(per_y), int(round(0.5 * (xs[0] + xs[-1])))
    else:
        yc, xc = ny // 2, nx // 2
    per_x = None if airway is None else np.count_nonzero(airway, axis=(0, 1))
    if per_x is not None and per_x.any():
        xc = _median_index(per_x)
    order = np.argsort(z_mm)
    cor = hu[order, yc, :]
    sag = hu[order, :, xc]
    x0, x1 = view_span(cor, lung.any(axis=(0, 1)), sx)
    y0, y1 = view_span(sag, lung.any(axis=(0, 2)), sy)
    cor, sag = cor[:, x0:x1], sag[:, y0:y1]
    nx, ny = x1 - x0, y1 - y0
    # each slice reaches half-way to its neighbours (half a slice spacing at a lone slice): on unevenly spaced
    # slices the rows are repeated onto an even grid (the nearest slice), so every row lies at its patient z
    zs = z_mm[order]
    half = np.diff(zs) / 2 if nz > 1 else np.array([sz / 2])
    edges = np.concatenate([[zs[0] - half[0]], zs[:-1] + half[: nz - 1], [zs[-1] + half[-1]]])
    zlo, zhi = float(edges[0]), float(edges[-1])
    steps = np.diff(edges)
    if not np.allclose(steps, steps.mean(), rtol=1e-3):
        dz = max(float(steps.min()), (zhi - zlo) / 4000)
        idx = np.clip(np.searchsorted(edges, np.arange(zlo + dz / 2, zhi, dz), side="right") - 1, 0, nz - 1)
        cor, sag = cor[idx], sag[idx]
        zhi = zlo + len(idx) * dz

    fig = Figure(figsize=(11, 7), dpi=100, facecolor="black")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [nx * sx, ny * sy]})
    for ax, img, width, win, lab in ((axes[0], cor, nx * sx, LUNG_WINDOW, "coronal (R | L), lung window"),
                                     (axes[1], sag, ny * sy, SOFT_WINDOW, "sagittal (A | P), soft-tissue window")):
        ax.imshow(img, cmap="gray", vmin=win[0], vmax=win[1], origin="lower",
                  extent=(0, width, zlo, zhi), aspect="equal", interpolation="nearest")
        ax.set_title(f"{lab} W {win[1] - win[0]:.0f} / L {(win[0] + win[1]) / 2:.0f}", color="white", fontsize=10)
        ax.set_facecolor("black")
        ax.tick_params(colors="white", labelsize=9)
        ax.set_xticks([])
        ax.set_ylabel("patient z (mm)", color="white", fontsize=10)
    if lung.any() and nz > 1 and nx > 1:  # the outline at the pixel centres of the image it is drawn on
        axes[0].contour((np.arange(nx) + 0.5) * sx, z_mm[order], lung[order, yc, x0:x1].astype(float),
                        levels=[0.5], colors=LUNG_COLOUR, linewidths=0.6)
    missing = []
    labels: list[tuple[Any, str, float, Any]] = []  # (axes, side, z, text)
    readers = False  # any level set by a reader (landmarks.reader_levels): said in the legend
    for name, (label, colour) in LEVELS.items():
        if name not in landmarks:
            continue
        z = _z(landmarks[name])
        if z is None or not np.isfinite(z):
            missing.append(label)
            continue
        meth = _method(landmarks[name])
        style = "-" if meth in ("detected", "reader") else "--"
        mark = {"detected": "D", "reader": "R"}.get(meth, "E")
        readers = readers or meth == "reader"
        for i, ax in enumerate(axes):
            width = nx * sx if i == 0 else ny * sy
            ax.axhline(z, color=colour, linestyle=style, linewidth=1.1)
            if i == 1 or name.endswith("_right"):
                xt = 2 if i == 0 else width - 2
                ha = "left" if i == 0 else "right"
            else:
                xt, ha = width - 2, "right"
            text = ax.text(xt, z + LABEL_OFFSET_MM, f"{label} {round(z) + 0:.0f} {mark}",
                           color=colour, fontsize=7, ha=ha, va="bottom", bbox=LABEL_BOX)
            labels.append((ax, ha, z, text))
    sub = "solid = detected (D)" + (" or set by a reader (R)" if readers else "") + ", dashed = estimated (E)"
    if missing:
        sub += "; missing: " + ", ".join(missing)
    fig.suptitle(f"{title}\n{sub}", color="white", fontsize=10)
    fig.tight_layout()
    _spread_labels(fig, labels)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="black")
    return buf.getvalue()
