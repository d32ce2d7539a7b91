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
from scoring.validation.systems import ALL_UNITS, MOSMED_CATEGORIES, SYSTEMS, TOTAL

log = logging.getLogger(__name__)

MAX_PANELS = 6


def _figure(n_panels: int, size: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(n_panels, 3)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(size * cols + 0.6, size * rows + 0.6))
    FigureCanvasAgg(fig)
    # fixed margins: tight_layout costs more than the drawing itself
    # the left margin in inches (0.75: tick labels and the y label), not a share of a width that varies 3x
    fig.subplots_adjust(left=0.75 / fig.get_figwidth(), right=0.98, bottom=0.12 / rows, top=1 - 0.14 / rows, wspace=0.35,
                        hspace=0.45)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    return fig, axes


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

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    atomic_write_bytes(path, buf.getvalue())
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
    """One panel per rater pair: difference (a - b) against the mean, bias and 95 % limits of agreement."""
    usable = [(c, a, b) for c, a, b in pairs if len(g[[a, b]].dropna()) >= 2]
    if not usable:
        return None
    fig, axes = _figure(len(usable))
    for ax, (_, a, b) in zip(axes, usable):
        both = g[[a, b]].dropna()
        x, y = both[a].to_numpy(float), both[b].to_numpy(float)
        ba = metrics.bland_altman(x, y)
        mean, diff = (x + y) / 2, x - y
        # jitter-free but visible overlaps: marker size grows with the count at a point
        pts, counts = np.unique(np.column_stack([mean, diff]), axis=0, return_counts=True)
        ax.scatter(pts[:, 0], pts[:, 1], s=marker_areas(counts), alpha=0.7, color="tab:blue",
                   label=f"largest dot: {counts.max()} targets" if counts.max() > 1 else None)
        ax.axhline(ba["ba_bias"], color="tab:red", label=f"bias {ba['ba_bias']:.2f}")
        if math.isfinite(ba["ba_sd"]):
            for v in (ba["ba_loa_low"], ba["ba_loa_high"]):
                ax.axhline(v, color="tab:red", linestyle="--")
            ax.plot([], [], color="tab:red", linestyle="--",
                    label=f"LoA {ba['ba_loa_low']:.2f} to {ba['ba_loa_high']:.2f}")
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_xlabel(f"mean of {a} and {b}")
        ax.set_ylabel(f"{a} - {b}")
        ax.set_title(f"{a} vs {b} (n={len(x)})", fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"Bland-Altman: {title}")
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


def confusion_png(g: pd.DataFrame, pairs: list[tuple[str, str, str]], labels: list[int], title: str,
                  path: Path, tick_names: list[str] | None = None) -> Path | None:
    """One heat map per rater pair: rows = rater a's category, columns = rater b's."""
    usable = [(c, a, b) for c, a, b in pairs if len(g[[a, b]].dropna()) >= 1]
    if not usable:
        return None
    fig, axes = _figure(len(usable), 3.6 if len(labels) <= 10 else 6.0)  # room for the counts of a 0-24 scale
    names = tick_names or [str(v) for v in labels]
    for ax, (_, a, b) in zip(axes, usable):
        both = g[[a, b]].dropna()
        cm = metrics.confusion(both[a].to_numpy(), both[b].to_numpy(), labels).to_numpy()
        im = ax.imshow(cm, cmap="Blues", origin="upper", vmin=0)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)  # shade = number of scans
        if len(labels) <= 25:  # every count written (0-24 six-zone totals included); a bigger scale: the shade only
            size = 8 if len(labels) <= 10 else 6
            for i in range(cm.shape[0]):
                for j in range(cm.shape[1]):
                    if cm[i, j]:
                        ax.text(j, i, _count_text(int(cm[i, j])), ha="center", va="center", fontsize=size,
                                color="white" if cm[i, j] > cm.max() / 2 else "black")
        step = 1 if len(labels) <= 10 else 4
        ticks = list(range(0, len(labels), step))
        ax.set_xticks(ticks, [names[t] for t in ticks], fontsize=7)
        ax.set_yticks(ticks, [names[t] for t in ticks], fontsize=7)
        ax.set_xlabel(b)
        ax.set_ylabel(a)
        ax.set_title(f"{a} vs {b} (n={len(both)})", fontsize=10)
    fig.suptitle(f"Confusion matrix: {title}")
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
