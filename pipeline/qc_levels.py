"""QC picture of the landmark levels (``levels.png``): every level as a labelled line.

Left: a coronal view at the diaphragm domes (lung window): each lung's half of the view is cut at the row where the
diaphragm beside the heart reaches that lung's dome level (:func:`coronal_rows`; the two rows are ticked on the
sagittal view, and a dashed line marks the seam between the halves). A plane through the lungs' centre passes
behind the domes, where the diaphragm lay 18-22 mm below a correct right dome on three real chests: a dome line drawn
over it looked misplaced when it was right. The row follows the level drawn, so the view shows where a dome level
meets the diaphragm, not whether it is the diaphragm's highest point: a dome placed up to about 20 mm too low still
meets the diaphragm in some row (ctscore's domes lie 0-16 mm below the hand-checked reference levels of the real
chests). A dome line that no row brings to the diaphragm is wrong. A dotted outline shows the lungs seen through
(their projection): the apices touch it; a base may lie a few mm below it, in aerated recess tips beyond the lung
mask that the base follows. Right: a sagittal view through the trachea between the carina and the notch
(mediastinal window, so the sternum, the arch and the heart show). Each level is drawn across both views at its
patient z, labelled with its name, z (mm) and how it was found: a solid line when detected (``D``, ``D?`` with low
confidence) or set by a reader (``R``), dashed when estimated (``E``); a label that would cover the one above it goes
under its line. Missing levels (no z, or a z that is not finite) and levels beyond the scan's ends are listed in the
title. Images are in the radiological convention (patient right on the left of the coronal view, anterior on the
left of the sagittal view, head at the top), with true millimetre proportions; each slice spans half-way to its
neighbours, so unevenly spaced slices, in either order, lie at their own z (slices tilted from axial would be drawn
at their centre's z: ``ctscore run`` draws them from an axial reformat, :func:`pipeline.run.picture_arrays`, and the
title says so). Both views are cropped to the body and the lungs plus 10 mm of air
(:data:`VIEW_MARGIN_MM`), whatever the field of view.

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
    """Labels of one view closer than their height (the carina and the RUL take-off, 3 mm apart) hid one another.
    From the top down, a label that would overlap one above it (on its own side, or across a narrow view) goes under
    its own line, or just under the lowest label it would overlap."""
    renderer = fig.canvas.get_renderer()
    groups: dict[int, list[tuple[float, Any, Any]]] = {}
    for ax, _side, z, text in labels:
        groups.setdefault(id(ax), []).append((z, ax, text))
    pad_px = LABEL_BOX["pad"] * fig.dpi / 72.0
    for items in groups.values():
        ax = items[0][1]
        ax.apply_aspect()
        y0, y1 = ax.get_ylim()
        mm_per_px = abs(y1 - y0) / max(ax.get_window_extent(renderer).height, 1.0)
        pad = (pad_px + 0.5) * mm_per_px
        placed: list[tuple[float, float, float]] = []  # (left, right) in pixels and the bottom (mm) of each box
        for z, _, text in sorted(items, key=lambda item: -item[0]):
            box = text.get_window_extent(renderer)
            left, right = box.x0 - pad_px, box.x1 + pad_px
            h = box.height * mm_per_px
            floor = min((b for a, c, b in placed if a < right and left < c), default=np.inf)
            top = z + LABEL_OFFSET_MM + h + pad  # of its box, when above its line
            if top > floor:
                top = min(z - LABEL_OFFSET_MM + pad, floor)  # under its line, or under the label above
                text.set_y(top - pad)
                text.set_verticalalignment("top")
            placed.append((left, right, top - h - 2 * pad))


def _z(lm: Any) -> float | None:
    return getattr(lm, "z_mm", None) if not isinstance(lm, Mapping) else lm.get("z_mm")


def _method(lm: Any) -> str:
    return getattr(lm, "method", "") if not isinstance(lm, Mapping) else lm.get("method", "")


def _confidence(lm: Any) -> str:
    return getattr(lm, "confidence", "") if not isinstance(lm, Mapping) else lm.get("confidence", "")


def _second(lm: Any) -> float | None:
    """An uncertain dome's second reading (``LANDMARK_UNCERTAIN``), or None."""
    z = getattr(lm, "second_z_mm", None) if not isinstance(lm, Mapping) else lm.get("second_z_mm")
    return float(z) if isinstance(z, (int, float)) and np.isfinite(z) else None


def _mark(method: str, confidence: str) -> str:
    """D detected (D? with low confidence), R set by a reader, E estimated."""
    if method == "detected":
        return "D?" if confidence == "low" else "D"
    return "R" if method == "reader" else "E"


#: Lung labels (segmentation.base) and the dome each coronal half is cut through.
SIDES = ((1, "dome_right", "R"), (2, "dome_left", "L"))
#: A coronal row shows a lung's dome when the lung's floor in that row, over its lateral half (away from the heart),
#: reaches the dome level to within this (mm; at least a slice and a half).
DOME_ROW_TOLERANCE_MM = 5.0


def floor_index(lung: np.ndarray, z_mm: Sequence[float]) -> np.ndarray:
    """Index (in the array's slice order) of each ``(y, x)`` column's lowest lung voxel (lowest patient z); 0 where
    the column holds none. Slices in either order. Walks the slices from the lowest up (ten times faster than an
    argmax along the slice axis: 0.02 against 0.23 s for 154 x 512 x 512)."""
    k = np.zeros(lung.shape[1:], np.intp)
    found = np.zeros(lung.shape[1:], bool)
    for i in np.argsort(np.asarray(z_mm, float), kind="stable"):
        new = lung[i] & ~found
        k[new] = i
        found |= new
    return k


def floor_z(lung: np.ndarray, z_mm: Sequence[float]) -> np.ndarray:
    """Patient z (mm) of each ``(y, x)`` column's lowest lung voxel; NaN where the column holds none. Slices in
    either order."""
    out = np.asarray(z_mm, float)[floor_index(lung, z_mm)]
    out[~lung.any(axis=0)] = np.nan
    return out


def floor_maps(lungs: np.ndarray, z_mm: Sequence[float], lung: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """:func:`floor_z` of each lung label (1 right, 2 left), NaN where the column's lowest lung voxel is of the
    other label: one pass over the mask (``lung``: ``lungs > 0`` when already at hand)."""
    lung = lungs > 0 if lung is None else lung
    k = floor_index(lung, z_mm)
    label = np.take_along_axis(lungs, k[None], axis=0)[0]
    z = np.asarray(z_mm, float)[k]
    return {lab: np.where(label == lab, z, np.nan) for lab, _, _ in SIDES}


def lateral_floor_top(floor: np.ndarray, lateral: str) -> np.ndarray:
    """Per row (y index) of a lung's floor map (:func:`floor_maps`): the highest floor (patient z, mm) over the
    lateral half of the row's extent (``lateral``: "low" for the right lung, whose lateral side has the low x
    indices of an LPS array; "high" for the left), NaN for a row without lung. This is the top of the diaphragm that
    a coronal view through the row shows beside the heart: from front to back it falls from the heart's overhang
    over the domes' plateau into the posterior recesses."""
    out = np.full(floor.shape[0], np.nan)
    for r in np.nonzero(~np.isnan(floor).all(axis=1))[0]:
        cols = np.flatnonzero(~np.isnan(floor[r]))
        mid = 0.5 * (cols[0] + cols[-1])
        half = cols[cols <= mid] if lateral == "low" else cols[cols >= mid]
        out[r] = np.max(floor[r, half])
    return out


def coronal_rows(lungs: np.ndarray, z_mm: Sequence[float], landmarks: Mapping[str, Any], spacing_z: float,
                 lung: np.ndarray | None = None) -> dict[int, tuple[int, str]]:
    """The row (y index) each lung is cut at in the coronal view, by lung label, with how it was chosen.

    "dome": the middle one of the rows (within the central 10-90 % of the lung's front-to-back extent) where the
    diaphragm the view shows beside the heart (:func:`lateral_floor_top`) reaches the dome level, to within
    :data:`DOME_ROW_TOLERANCE_MM`; the row coming closest when none does. A plane through the lungs' centre passes
    behind the domes: on the real chests the diaphragm there lay 18-22 mm below a correct right dome. A dome that no
    row reaches (set below the lung, on the liver) still shows as a line away from the lung's floor.

    The row follows the level: a dome up to about 20 mm too low or too high also meets the diaphragm in some row (an
    audit of 2026-12-06: 8-9 of 12 real hemidiaphragms), so the view shows where a level meets the diaphragm, not
    that it is the highest point. No row chosen without the level did better against the hand-checked reference
    domes of the six real chests: through the centre row the diaphragm lay 5-30 mm below the reference dome in 11 of
    12 hemidiaphragms; the row with the highest floor over the lateral third reached 6-97 mm above it in 11 of 12 (the
    heart's overhang, the lung's front edge).

    "centre": the median row of both lungs' voxels, without a dome level. A label the mask does not hold is left
    out. ``lung``: ``lungs > 0`` when already at hand."""
    out: dict[int, tuple[int, str]] = {}
    lung = lungs > 0 if lung is None else lung
    per_y = np.count_nonzero(lung, axis=(0, 2))
    if not per_y.any():
        return out
    centre = _median_index(per_y)
    dz = abs(float(spacing_z))
    tol = max(DOME_ROW_TOLERANCE_MM, 1.5 * dz)
    floors = floor_maps(lungs, z_mm, lung)
    for label, name, _ in SIDES:
        if np.isnan(floors[label]).all():
            continue
        z = _z(landmarks[name]) if name in landmarks else None
        if z is None or not np.isfinite(z):
            out[label] = (centre, "centre")
            continue
        top = lateral_floor_top(floors[label], "low" if label == 1 else "high")
        ys = np.flatnonzero(~np.isnan(top))
        lo, hi = np.percentile(ys, [10, 90])
        central = ys[(ys >= lo) & (ys <= hi)]
        ys = central if central.size else ys  # a lung a few rows deep: between two rows' percentiles lies no row
        off = np.abs(top[ys] - (float(z) + 0.5 * dz))  # the dome is reported half a slice below its floor voxel
        near = ys[off <= tol]
        row = int(near[len(near) // 2]) if near.size else int(ys[np.argmin(off)])
        out[label] = (row, "dome")
    return out


def _coronal_words(rows: Mapping[int, tuple[int, str]]) -> str:
    """How the coronal view was cut, for its title."""
    kinds = [rows[label][1] for label, _, _ in SIDES if label in rows]
    if kinds and all(k == "dome" for k in kinds):
        if len({rows[label][0] for label in rows}) > 1:
            return "through each dome"
        return "through the domes" if len(kinds) == 2 else "through the dome"
    if all(k == "centre" for k in kinds):
        return "through the lungs' centre"
    return ", ".join(f"{tag} through its {rows[label][1]}" for label, _, tag in SIDES if label in rows)


def levels_png(hu: np.ndarray, lungs: np.ndarray, z_mm: Sequence[float], spacing_zyx: Sequence[float],
               landmarks: Mapping[str, Any], title: str = "", airway: np.ndarray | None = None,
               sagittal_x: int | None = None, note: str = "") -> bytes:
    """PNG bytes of the coronal + sagittal level picture.

    ``landmarks`` maps a name to a :class:`scoring.landmarks.Landmark` or its dict form. The coronal view cuts each
    lung through its dome (:func:`coronal_rows`). The sagittal plane is column ``sagittal_x`` (the trachea's,
    :func:`pipeline.run.trachea_column`), else the median column of ``airway`` when given, else the lungs' midline.
    ``note`` is added to the legend (run.py: slices tilted from axial). A level outside the scan's z range is listed
    in the legend, not drawn (a far one stretched the axis: 10 mm ticks over 10^9 mm ran out of memory)."""
    # a Figure on its own Agg canvas: the global backend and pyplot's figures (a notebook's inline plots) are not
    # touched
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MultipleLocator

    from pipeline.qc import LEFT_LUNG, LEFT_LUNG_STYLE, LUNG_COLOUR

    z_mm = np.asarray(z_mm, float)
    nz, ny, nx = hu.shape
    sz, sy, sx = (float(s) for s in spacing_zyx)
    lung = lungs > 0
    # the centre from the counts per row and column: np.nonzero would hold three int64 indices per lung voxel
    # (about 1 GB for a 600-slice scan)
    per_y = np.count_nonzero(lung, axis=(0, 2))
    lung_x = lung.any(axis=(0, 1))
    if per_y.any():
        xs = np.nonzero(lung_x)[0]
        yc, xc = _median_index(per_y), int(round(0.5 * (xs[0] + xs[-1])))
    else:
        yc, xc = ny // 2, nx // 2
    through = "the lungs' midline"
    per_x = None if airway is None else np.count_nonzero(airway, axis=(0, 1))
    if sagittal_x is not None and 0 <= int(sagittal_x) < nx:
        xc, through = int(sagittal_x), "the trachea"
    elif per_x is not None and per_x.any():
        xc, through = _median_index(per_x), "the trachea"
    rows = coronal_rows(lungs, z_mm, landmarks, sz, lung=lung)
    order = np.argsort(z_mm)
    # each lung's half of the coronal view at its own row; the seam at the column between the lungs that holds the
    # least lung (the mediastinum)
    row_r, row_l = (rows[label][0] if label in rows else None for label, _, _ in SIDES)
    if row_r is None and row_l is None:
        row_r = row_l = yc
    row_r, row_l = (row_r if row_r is not None else row_l), (row_l if row_l is not None else row_r)
    seam = None
    if row_r != row_l:
        per_label = np.stack([np.count_nonzero(lungs[:, yy, :] == label, axis=0)
                              for label, yy in ((1, row_r), (2, row_l))])  # each lung's columns in its own row
        cr, cl = (_median_index(c) if c.any() else nx // 2 for c in per_label)
        lo, hi = min(cr, cl), max(cr, cl)
        per_col = per_label.sum(axis=0)[lo: hi + 1]
        seam = lo + int(np.flatnonzero(per_col == per_col.min()).mean().round())
    cor = hu[order, row_r, :].copy()
    cor_lung = lungs[order, row_r, :].copy()  # labels: the left lung's outline is dashed
    if seam is not None:
        cor[:, seam:] = hu[order, row_l, seam:]
        cor_lung[:, seam:] = lungs[order, row_l, seam:]
    sag = hu[order, :, xc]
    x0, x1 = view_span(cor, lung_x, sx)
    y0, y1 = view_span(sag, lung.any(axis=(0, 2)), sy)
    cor, sag, cor_lung = cor[:, x0:x1], sag[:, y0:y1], cor_lung[:, x0:x1]
    seen_through = lung.any(axis=1)[order, x0:x1]  # the lungs' projection onto the coronal plane
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
    apart = ""
    if seam is not None:  # how far apart the two halves were cut (y grows towards the back in an LPS array)
        gap = (row_l - row_r) * sy
        apart = f" (L half {abs(gap):.0f} mm {'behind' if gap > 0 else 'in front of'} R)"
    views = ((axes[0], cor, nx * sx, LUNG_WINDOW, f"coronal (R | L) {_coronal_words(rows)}{apart}, lung window"),
             (axes[1], sag, ny * sy, SOFT_WINDOW, f"sagittal (A | P) through {through}, soft-tissue window"))
    for ax, img, width, win, lab in views:
        ax.imshow(img, cmap="gray", vmin=win[0], vmax=win[1], origin="lower",
                  extent=(0, width, zlo, zhi), aspect="equal", interpolation="nearest")
        ax.set_title(f"{lab}\nW {win[1] - win[0]:.0f} / L {(win[0] + win[1]) / 2:.0f}", color="white", fontsize=10)
        ax.set_facecolor("black")
        ax.tick_params(colors="white", labelsize=9)
        ax.tick_params(which="minor", colors="white", length=2)
        ax.yaxis.set_minor_locator(MultipleLocator(10))  # a tick every 10 mm: a level's z read off to within 5 mm
        ax.set_xticks([])
        ax.set_ylabel("patient z (mm)", color="white", fontsize=10)
    if lung.any() and nz > 1 and nx > 1:  # the outlines at the pixel centres of the image they are drawn on
        xs_mm = (np.arange(nx) + 0.5) * sx
        left = cor_lung == LEFT_LUNG
        for drawn, style in (((cor_lung > 0) & ~left, "solid"), (left, LEFT_LUNG_STYLE)):
            if drawn.any():  # the right lung solid, the left dashed: a lung labelled as the wrong side shows
                axes[0].contour(xs_mm, z_mm[order], drawn.astype(float), levels=[0.5], colors=LUNG_COLOUR,
                                linewidths=0.6).set_linestyle(style)
        axes[0].contour(xs_mm, z_mm[order], seen_through.astype(float), levels=[0.5], colors=LUNG_COLOUR,
                        linewidths=0.7, linestyles="dotted")
    # where each view cuts the other: the coronal rows on the sagittal view, the sagittal column on the coronal
    # view (named under the image), and the seam between the coronal view's two rows
    ref = {"color": "white", "alpha": 0.8}
    under = {"color": "white", "fontsize": 7, "va": "top", "ha": "center", "clip_on": False}
    cuts = [(row_r, "cor R"), (row_l, "cor L")] if row_r != row_l else [(row_r, "cor")]
    for row, name in cuts:
        if y0 <= row < y1:
            at = (row - y0 + 0.5) * sy
            for ends in ((0.0, 0.04), (0.96, 1.0)):  # short ticks at the edges: a full line ran along the trachea
                axes[1].axvline(at, ymin=ends[0], ymax=ends[1], **{**ref, "linewidth": 1.2})
            # two names stand apart: the one more anterior (left) ends at its line, the other starts there
            ha = "center" if len(cuts) == 1 else "right" if row == min(row_r, row_l) else "left"
            axes[1].text(at, -0.01, name, transform=axes[1].get_xaxis_transform(), **{**under, "ha": ha})
    if x0 <= xc < x1:
        at = (xc - x0 + 0.5) * sx
        for ends in ((0.0, 0.04), (0.96, 1.0)):  # short ticks: a full line would cover the trachea
            axes[0].axvline(at, ymin=ends[0], ymax=ends[1], **{**ref, "linewidth": 1.2})
        axes[0].text(at, -0.01, "sag", transform=axes[0].get_xaxis_transform(), **under)
    if seam is not None and x0 <= seam < x1:
        axes[0].axvline((seam - x0) * sx, color="#888888", linestyle="--", linewidth=0.7)
    missing: list[str] = []
    outside: list[str] = []  # levels beyond the scan's ends: listed, not drawn
    labels: list[tuple[Any, str, float, Any]] = []  # (axes, side, z, text)
    readers = False  # any level set by a reader (landmarks.reader_levels): said in the legend
    unsure = False  # any level detected with low confidence (a base that may lie below the scan): marked "D?"
    seconds = False  # any uncertain dome's second reading (LANDMARK_UNCERTAIN): dotted
    for name, (label, colour) in LEVELS.items():
        if name not in landmarks:
            continue
        z = _z(landmarks[name])
        if z is None or not np.isfinite(z):
            missing.append(label)
            continue
        meth = _method(landmarks[name])
        if not zlo <= z <= zhi:
            outside.append(f"{label} {round(z) + 0:.0f} {_mark(meth, _confidence(landmarks[name]))}")
            continue
        style = "-" if meth in ("detected", "reader") else "--"
        mark = _mark(meth, _confidence(landmarks[name]))
        unsure = unsure or mark == "D?"
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
            z2 = _second(landmarks[name])
            if z2 is not None and zlo <= z2 <= zhi:  # the dome's other candidate, for the reviewer to choose
                seconds = True
                ax.axhline(z2, color=colour, linestyle=":", linewidth=1.1)
                text = ax.text(xt, z2 + LABEL_OFFSET_MM, f"{label} 2nd {round(z2) + 0:.0f}", color=colour,
                               fontsize=7, ha=ha, va="bottom", bbox=LABEL_BOX)
                labels.append((ax, ha, z2, text))
    sub = ("solid = detected (D" + (", D? with low confidence: result.json says why" if unsure else "") + ")"
           + (" or set by a reader (R)" if readers else "") + ", dashed = estimated (E)"
           + (", dotted = an uncertain dome's second reading (2nd)" if seconds else "") + "\n"
           "lung outline (cyan): R lung solid, L lung dashed\n"
           "dotted outline: the lungs seen through (apices touch it; a base may lie below it, in aerated recess tips "
           "beyond the lung mask)")
    if missing:
        sub += "; missing: " + ", ".join(missing)
    if outside:
        sub += "; outside the scan: " + ", ".join(outside)
    if note:
        sub += "\n" + note
    for ax in axes:  # the scan's z range, whatever was drawn
        ax.set_ylim(zlo, zhi)
    fig.suptitle(f"{title}\n{sub}", color="white", fontsize=10)
    fig.tight_layout()
    _spread_labels(fig, labels)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="black")
    return buf.getvalue()
