"""PNG pictures of the validation: Bland-Altman plots and confusion matrices (matplotlib, Agg canvas).

Figures are drawn on ``matplotlib.figure.Figure`` with an Agg canvas, so no global backend is set
and no display is needed.
"""

from __future__ import annotations

import io
import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from scoring.validation import metrics
from scoring.validation.compare import CONSENSUS, groups, labels_for, partition_of, pooled_units, rater_pairs
from scoring.validation.systems import ALL_UNITS, MOSMED_CATEGORIES, SYSTEMS, TOTAL, difference_unit

log = logging.getLogger(__name__)

MAX_PANELS = 6
#: Widest picture (inches): a journal column, so that text drawn at :data:`FONT` sizes (7 pt or more) keeps its size
#: when the picture is printed at that width.
MAX_WIDTH = 6.5
#: Resolution of the PNG files (dots per inch).
DPI = 150
#: Font sizes (points) of the pictures' text; none below 7.
FONT = {"title": 9, "panel": 8, "label": 8, "tick": 7, "legend": 7}
#: Okabe-Ito colours (told apart with colour-vision deficiency): the dots, and the bias and limit lines.
DOT_COLOUR, LINE_COLOUR = "#0072B2", "#D55E00"


def _figure(n_panels: int, cols: int = 2, right: float = 0.15, aspect: float = 0.85, max_panel: float = 3.0,
            bottom: float = 0.5):
    """A figure at most :data:`MAX_WIDTH` wide with ``n_panels`` axes in rows of ``cols`` (at most 3);
    ``right``, ``bottom``: margins in inches (room for a colour bar, a legend); ``aspect``: panel height / width."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = max(1, min(n_panels, cols, 3))
    rows = math.ceil(n_panels / cols)
    # fixed margins in inches (tight_layout costs more than the drawing itself): tick labels and the axis label
    # on the left, a two-line panel title above, the x label below
    left, top, gap_w, gap_h = 0.7, 0.75, 0.7, 0.95
    panel_w = min(max_panel, (MAX_WIDTH - left - right - gap_w * (cols - 1)) / cols)
    panel_h = panel_w * aspect
    width = left + right + cols * panel_w + gap_w * (cols - 1)
    height = top + bottom + rows * panel_h + gap_h * (rows - 1)
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=gap_w / panel_w, hspace=gap_h / panel_h)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    for ax in axes:
        ax.tick_params(labelsize=FONT["tick"])
    return fig, axes


def _system_of(title: str) -> str:
    """The system a picture's title names first (:func:`_title`)."""
    word = title.split(" ", 1)[0]
    return word if word in SYSTEMS else ""


def _title(system: str, unit: str) -> str:
    return f"{system} {'all units pooled' if unit == ALL_UNITS else unit}"


def _pairs(wide: pd.DataFrame, readers: list[str]) -> list[tuple[str, str, str]]:
    """At most MAX_PANELS pairs: ctscore vs consensus, ctscore vs each reader, then reader pairs."""
    pairs = rater_pairs(readers, CONSENSUS in wide.columns)
    rank = {"ctscore_vs_consensus": 0, "ctscore_vs_reader": 1, "reader_vs_reader": 2}
    pairs = sorted(pairs, key=lambda p: rank[p[0]])  # stable: readers keep their order
    if len(pairs) > MAX_PANELS:
        log.info("pictures show %d of %d rater pairs (all are in agreement.csv)", MAX_PANELS, len(pairs))
    return pairs[:MAX_PANELS]


def _save(fig, path: Path) -> Path:
    """The figure as PNG, rendered in memory and written atomically."""
    from pipeline.outputs import atomic_write_bytes
    from scoring.stats.report import compact_png

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, compact_png(buf.getvalue()))
    return path


#: The names of the pictures ctscore writes (and removes when a new run writes the same folder).
PICTURE_NAME = re.compile(rf"(bland_altman|confusion)_({'|'.join(map(re.escape, SYSTEMS))})_({TOTAL}|{ALL_UNITS})\.png")


def remove_stale(out_dir: Path) -> list[Path]:
    """Remove the pictures a previous run wrote to ``out_dir`` (only ctscore's own picture names)."""
    gone = []
    if out_dir.is_dir():
        for p in sorted(out_dir.iterdir()):
            if PICTURE_NAME.fullmatch(p.name) and p.is_file():
                p.unlink()
                gone.append(p)
    if gone:
        log.info("removed %d picture(s) of a previous run from %s", len(gone), out_dir)
    return gone


def bland_altman_png(g: pd.DataFrame, pairs: list[tuple[str, str, str]], title: str, path: Path) -> Path | None:
    """One panel per rater pair: difference (a - b) against the mean, bias and 95 % limits of agreement, in the
    unit of the system the title names (score points, percentage points, categories)."""
    usable = [(c, a, b) for c, a, b in pairs if len(g[[a, b]].dropna()) >= 2]
    if not usable:
        return None
    unit = difference_unit(_system_of(title))
    in_unit = f" ({unit})" if unit else ""
    fig, axes = _figure(len(usable), bottom=0.95)
    largest = 1
    for ax, (_, a, b) in zip(axes, usable):
        both = g[[a, b]].dropna()
        x, y = both[a].to_numpy(float), both[b].to_numpy(float)
        ba = metrics.bland_altman(x, y)
        mean, diff = (x + y) / 2, x - y
        # jitter-free but visible overlaps: marker size grows with the count at a point
        pts, counts = np.unique(np.column_stack([mean, diff]), axis=0, return_counts=True)
        largest = max(largest, int(counts.max()))
        ax.scatter(pts[:, 0], pts[:, 1], s=marker_areas(counts), alpha=0.7, color=DOT_COLOUR, marker="o")
        # told apart by line style, not by colour alone: bias solid, limits dashed, no difference dotted
        ax.axhline(ba["ba_bias"], color=LINE_COLOUR, linestyle="-", linewidth=1.5)
        loa = ""
        if math.isfinite(ba["ba_sd"]):
            for v in (ba["ba_loa_low"], ba["ba_loa_high"]):
                ax.axhline(v, color=LINE_COLOUR, linestyle="--", linewidth=1.2)
            loa = f", LoA {ba['ba_loa_low']:.2f} to {ba['ba_loa_high']:.2f}"
        ax.axhline(0, color="0.35", linestyle=":", linewidth=1.0)
        ax.set_xlabel(f"mean of the two{in_unit}", fontsize=FONT["label"])
        ax.set_ylabel(f"{a} - {b}{in_unit}", fontsize=FONT["label"])
        # the figures in the title, the key below the panels: no legend over the dots
        ax.set_title(f"{a} vs {b} (n={len(x)})\nbias {ba['ba_bias']:.2f}{loa}", fontsize=FONT["panel"])
    from matplotlib.lines import Line2D

    key = [Line2D([], [], color=DOT_COLOUR, marker="o", linestyle="none", alpha=0.7,
                  label="a target" + (f" (larger: several at one point, up to {largest})" if largest > 1 else "")),
           Line2D([], [], color=LINE_COLOUR, linestyle="-", linewidth=1.5, label="bias (mean difference)"),
           Line2D([], [], color=LINE_COLOUR, linestyle="--", linewidth=1.2, label="95 % limits of agreement (LoA)"),
           Line2D([], [], color="0.35", linestyle=":", linewidth=1.0, label="no difference")]
    fig.legend(handles=key, loc="lower center", ncols=2, fontsize=FONT["legend"], frameon=False)
    fig.suptitle(f"Bland-Altman: {title}", fontsize=FONT["title"])
    return _save(fig, path)


def marker_areas(counts: np.ndarray) -> np.ndarray:
    """Dot areas (points^2) for the number of targets at one point: 18 for one, 12 more per target up to 24 of them;
    beyond (a cohort of thousands: one dot covered the low scores), the largest is 294 and the others scale by the
    square root of their share of it."""
    counts = np.asarray(counts, float)
    if counts.max() <= 24:
        return 18 + 12 * (counts - 1)
    return 18 + 276 * np.sqrt((counts - 1) / (counts.max() - 1))


def _count_text(v: int) -> str:
    """A confusion count as written in its cell: 1234 as 1.2k, so that four digits fit a cell of a 0-24 scale."""
    return str(v) if v < 1000 else f"{v / 1000:.1f}k" if v < 100_000 else f"{v // 1000}k"


def _fits(texts: list[str], width_in: float, size: float) -> bool:
    """Whether the widest of ``texts`` at ``size`` points fits ``width_in`` inches (a digit of DejaVu Sans is about
    0.64 em wide)."""
    return max((len(t) for t in texts), default=0) * 0.64 * size <= 0.95 * width_in * 72


def confusion_png(g: pd.DataFrame, pairs: list[tuple[str, str, str]], labels: list[int], title: str,
                  path: Path, tick_names: list[str] | None = None) -> Path | None:
    """One heat map per rater pair: rows = rater a's category, columns = rater b's. Every panel shares one colour
    scale (0 to the largest count of the figure) and one colour bar; each count is written in its cell when every
    count fits its cell (a scale of 25 categories in two columns: single digits), else the shade alone
    (confusion_matrices.csv has the counts)."""
    from matplotlib.ticker import MaxNLocator

    usable = [(c, a, b) for c, a, b in pairs if len(g[[a, b]].dropna()) >= 1]
    if not usable:
        return None
    many = len(labels) > 10
    fig, axes = _figure(len(usable), cols=2 if many else 3, right=1.0, aspect=1.0, max_panel=4.5 if many else 2.6,
                        bottom=0.65)
    names = tick_names or [str(v) for v in labels]
    counted = []
    for _, a, b in usable:
        both = g[[a, b]].dropna()
        counted.append((a, b, len(both), metrics.confusion(both[a].to_numpy(), both[b].to_numpy(), labels).to_numpy()))
    vmax = max(1, max(int(cm.max()) for *_, cm in counted))  # one scale: a count has the same shade in every panel
    size = FONT["panel"] if not many else FONT["tick"]
    cell = fig.axes[0].get_position().width * fig.get_figwidth() / len(labels)
    texts = [_count_text(int(v)) for *_, cm in counted for v in cm[cm > 0]]
    step = 1 if not many else math.ceil(len(labels) / 7)  # at most 7 tick labels (every 4th of 0-24)
    write = len(labels) <= 25 and _fits(texts, cell, size)
    tilt = not _fits(names, cell * step, FONT["tick"])  # 'CT-0' is wider than a cell of a narrow panel: slanted
    im = None
    for ax, (a, b, n, cm) in zip(axes, counted):
        im = ax.imshow(cm, cmap="Blues", origin="upper", vmin=0, vmax=vmax)
        if write:
            for i in range(cm.shape[0]):
                for j in range(cm.shape[1]):
                    if cm[i, j]:
                        ax.text(j, i, _count_text(int(cm[i, j])), ha="center", va="center", fontsize=size,
                                color="white" if cm[i, j] > vmax / 2 else "black")
        ticks = list(range(0, len(labels), step))
        slant = {"rotation": 45, "ha": "right", "rotation_mode": "anchor"} if tilt else {}
        ax.set_xticks(ticks, [names[t] for t in ticks], fontsize=FONT["tick"], **slant)
        ax.set_yticks(ticks, [names[t] for t in ticks], fontsize=FONT["tick"])
        ax.set_xlabel(b, fontsize=FONT["label"])
        ax.set_ylabel(a, fontsize=FONT["label"])
        ax.set_title(f"{a} vs {b}\n(n={n})", fontsize=FONT["panel"])
    # one colour bar for the figure, right of the panels, with whole-number ticks
    top, bottom = axes[0].get_position().y1, axes[-1].get_position().y0
    width = fig.get_figwidth()
    cax = fig.add_axes((1 - 0.8 / width, bottom, 0.12 / width, top - bottom))
    bar = fig.colorbar(im, cax=cax, ticks=MaxNLocator(integer=True))
    bar.ax.tick_params(labelsize=FONT["tick"])
    bar.set_label("number of targets (scan x unit)" if "pooled" in title else "number of scans", fontsize=FONT["label"])
    fig.suptitle(f"Confusion matrix: {title}", fontsize=FONT["title"])
    return _save(fig, path)


def write_figures(wide: pd.DataFrame, readers: list[str], out_dir: Path,
                  max_confusion_categories: int = 25) -> list[Path]:
    """Bland-Altman and confusion-matrix PNGs for each system's total and pooled units; confusion
    matrices only for scales with at most ``max_confusion_categories`` categories."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = _pairs(wide, readers)
    paths: list[Path] = []
    for system, unit, g in groups(wide):
        if unit not in (TOTAL, ALL_UNITS):
            continue
        title = _title(system, unit)
        if unit == ALL_UNITS and system == "percent_involvement":  # one partition of the lung only
            pooled, _ = pooled_units(system, wide.loc[wide["system"] == system, "unit"].unique())
            title = f"{system} {partition_of(pooled[0])} units pooled"
        try:
            p = bland_altman_png(g, pairs, title, out_dir / f"bland_altman_{system}_{unit}.png")
            if p:
                paths.append(p)
            labels = labels_for(system, unit)
            if labels is not None and len(labels) <= max_confusion_categories:
                ticks = list(MOSMED_CATEGORIES) if system == "mosmed" else None
                p = confusion_png(g, pairs, labels, title, out_dir / f"confusion_{system}_{unit}.png", ticks)
                if p:
                    paths.append(p)
        except (ValueError, TypeError) as exc:
            log.warning("figure for %s not drawn: %s", title, exc)
    return paths
