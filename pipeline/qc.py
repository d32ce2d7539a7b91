"""QC pictures: a montage per series (``qc.png``) and a small copy of it for the run report (``thumb.png``).

The montage has one fixed layout so that many scans can be compared at a glance, also at thumbnail
size: on the left a large coronal view through the lungs' centre with the six-zone planes (carina,
inferior pulmonary vein) drawn across it and ticks at the levels of the axial slices; in the middle a
2 x 2 grid of axial slices, one in each six-zone zone (upper, middle, lower) and the slice with the
most lesion; a zone the scan has no slice of (no IPV level, no lung in it) gets a panel that says so. On the right,
two axial slices in a soft-tissue window (W 400, L 40), with the lung and the consolidation outlined only: the slice
with the most consolidation (else the most lesion) and the lung base, where pleural effusion collects. In the lung
window fluid, atelectasis and consolidation are all near white; in the soft-tissue window an effusion is a smooth
band of water density along the dependent pleura, with no air bronchograms, and a consolidation outline over it
shows that the segmentation took fluid for lung.
Lungs are outlined in one colour, the right lung (label 1) solid and the left (label 2) dashed, so that a lung labelled
as the wrong side, in whole or in part, shows (in one colour the outline stays apart from the lesion colours in every
colour vision); a suspected pneumothorax (``PNEUMOTHORAX_SUSPECT``, air in a sheet inside the
lung mask) is outlined dotted in white in the axial lung-window slices that cross it and, seen from the front
(where there is 4.5 mm or more of it front to back), on the coronal view; the legend says at which z it is largest,
so that a reader can find it in a viewer; faint ground glass and ground glass are filled half-transparent, each in
its own colour, so that the CT under them stays visible (a false positive over aerated lung looks darker than real ground
glass); consolidation is hatched and outlined, never filled, so that the bright tissue under it shows (a dark fill
over bright tissue looked like aerated lung to deuteranopes and in greyscale print). Plane labels and the axial
slices' ticks sit in margins beside the coronal view, never over the lung. Images are shown in the radiological convention
(patient right on the left of the picture, head at the top) with the lung window, cropped to the lungs
(widened to be symmetric about the body midline, so both sides show even when one lung is missing).

All functions here are pure: arrays in, PNG bytes out. Arrays are LPS-oriented ``[z, y, x]``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scoring.zones import six_zone_intervals

#: Colour of each lesion class (value in the lesion mask) and its legend name: blue / yellow fills and dark wine
#: hatching, chosen to stay apart for readers with red-green or blue-yellow colour blindness and in greyscale print
#: (tests/test_a11y_report.py renders them and checks CIEDE2000 differences under the Machado 2009 simulations).
LESION_CLASSES: dict[int, tuple[str, str]] = {
    1: ("#5a8cff", "faint GGO"),
    2: ("#ffd400", "GGO"),
    3: ("#5c0030", "consolidation"),
}
#: Opacity of the faint GGO and GGO fills: half, so that what lies under a fill stays visible (at 0.7 a GGO fill over
#: aerated lung, a false positive, was 5.6 CIEDE2000 from one over real ground glass; at 0.5 it is 10).
LESION_ALPHA = 0.5
#: Classes drawn hatched and outlined instead of filled, and the hatch pattern: consolidation lies on tissue the lung
#: window shows near white, and any fill dark enough to stay apart from the GGO fills took it to the grey of aerated
#: lung (5.2 CIEDE2000 under deuteranopia, 2.0 in greyscale at 0.7); hatched, the tissue shows through (24 or more).
HATCHED_CLASS = 3
HATCH = "////"
HATCH_LINEWIDTH = 1.5
LUNG_COLOUR = "#00e5ff"
#: Lung labels (segmentation.base: 1 right, 2 left) and the left lung's outline: dashed, in the lung colour. One colour
#: drawn for both lungs hid a lung labelled as the wrong side (938 mL of a right lung labelled left drew a byte-identical
#: qc.png); a second colour would have to stay apart from the lesion colours in every colour vision, a dash does.
LEFT_LUNG = 2
LEFT_LUNG_STYLE = (0, (4.0, 2.5))
#: The consolidation outline of the soft-tissue column: the wine of the lung window is lost on its grey tissue;
#: orange stays apart from the cyan lung outline and from water-density grey in every colour vision
#: (tests/test_a11y_report.py).
SOFT_CONSOLIDATION_COLOUR = "#ff9500"
PLANE_COLOUR = "#ffffff"
#: The suspected pneumothorax's outline: white and dotted. It lies on black air, where any colour is visible; white
#: and a dotted line keep it apart from the cyan lung outline in every colour vision and in greyscale print, and from
#: the planes' solid and dashed white lines, which run straight across the coronal view.
PNEUMOTHORAX_COLOUR = "#ffffff"
PNEUMOTHORAX_STYLE = ":"
#: The outline is drawn around the mask smoothed by a Gaussian of this SD in mm: the working grid's voxel (1.5 mm), so
#: that single voxels left at the air's top and bottom draw no rings of their own.
PNEUMOTHORAX_SMOOTH_MM = 1.5
#: The coronal view outlines the suspected pneumothorax where there is at least this much of it front to back (mm).
PNEUMOTHORAX_CORONAL_DEPTH_MM = 4.5
TICK_COLOUR = "#ffffff"
#: Lung window (W 1500, L -600).
WINDOW_HU = (-1350.0, 150.0)
#: Soft-tissue (mediastinal) window of the right-hand column (W 400, L 40).
SOFT_TISSUE_WINDOW_HU = (-160.0, 240.0)
#: The six-zone boundary planes drawn on the coronal view (landmark name -> label).
ZONE_PLANES: dict[str, str] = {"carina": "carina", "ipv": "IPV"}
MONTAGE_SIZE_IN = (12.5, 5.4)
MONTAGE_DPI = 100
THUMB_WIDTH_PX = 320
#: The panels end this far (a share of the montage's height) above its bottom: the band below holds the window note
#: and the legend.
MONTAGE_BOTTOM = 0.08
#: Labels closer than this fraction of the coronal view's height are moved apart.
LABEL_GAP = 0.045
#: Margins beside the coronal view in pixels of the montage: the plane labels' (right) and the axial slices' ticks'
#: (left); in pixels, not a share of the image's width, so that a tall, narrow view keeps room for them.
LABEL_MARGIN_PX = 122
TICK_MARGIN_PX = 45
#: The legend's font sizes, tried in turn until its one row fits right of the window note.
LEGEND_FONT_SIZES = (12, 11, 10, 9)
#: Most characters of the flags line under the title (one line: the rest is counted, result.json has all).
FLAGS_LINE_CHARS = 140


def flags_line(flags: Sequence[str], max_chars: int = FLAGS_LINE_CHARS) -> str:
    """The scan's QC flags as one line: flags of one name joined ("ZONE_WITHOUT_LUNG:right_L2,right_L3") and cut
    after ``max_chars`` characters with the number left out."""
    groups: dict[str, list[str]] = {}
    for f in flags:
        name, _, value = str(f).partition(":")
        groups.setdefault(name, []).append(value)
    items = [name + (":" + ",".join(v for v in values if v) if any(values) else "") for name, values in groups.items()]
    text = "QC flags: "
    for i, item in enumerate(items):
        rest = len(items) - i
        if len(text) + len(item) > max_chars and i:
            return text.rstrip(", ") + f" ... and {rest} more (result.json)"
        text += item + ", "
    return text.rstrip(", ")
#: Margin around the lungs' bounding box, as a fraction of its size.
CROP_MARGIN = 0.08


@dataclass(frozen=True)
class AxialPick:
    """One axial slice of the montage: a short tag (drawn on the coronal view too), a label and its index; ``k`` is
    None for a zone the scan has no slice of (its panel says why, in ``note``)."""

    tag: str
    label: str
    k: int | None
    note: str = ""


def _bbox(mask: np.ndarray, margin: float) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin`` of its size per axis (the whole array if empty)."""
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    out = []
    for axis, n in enumerate(mask.shape):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.nonzero(mask.any(axis=other))[0]
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        pad = int(round(margin * (hi - lo))) + 1
        out.append(slice(max(0, lo - pad), min(n, hi + pad)))
    return tuple(out)


#: HU above which a voxel counts as body (not the air around the patient) when the crop is centred.
BODY_MIN_HU = -500.0
#: Dark box behind labels drawn over the image, so that white or coloured text stays readable on bone
#: and soft tissue (the lung window shows those near white).
LABEL_BOX = {"facecolor": "black", "alpha": 0.7, "pad": 1.0, "linewidth": 0}


def _crop_box(hu: np.ndarray, lungs: np.ndarray, margin: float) -> tuple[slice, slice, slice]:
    """The montage's crop: the lungs' bounding box grown by ``margin``, widened in x to be symmetric about
    the body's midline, so that both hemithoraces are always in view. A scan with one lung segmented (a
    pneumonectomy, or a white lung the segmenter missed) then still shows the other side, and which side
    is which."""
    crop_z, crop_y, crop_x = _bbox(lungs > 0, margin)
    if not lungs.any():
        return crop_z, crop_y, crop_x
    cols = np.nonzero((hu[crop_z] > BODY_MIN_HU).any(axis=(0, 1)))[0]
    if cols.size == 0:
        return crop_z, crop_y, crop_x
    mid = 0.5 * (cols[0] + cols[-1])
    lo = min(crop_x.start, int(np.floor(2 * mid - (crop_x.stop - 1))))
    hi = max(crop_x.stop, int(np.ceil(2 * mid - crop_x.start)) + 1)
    return crop_z, crop_y, slice(max(0, lo), min(hu.shape[2], hi))


def _level(levels: Mapping[str, float | None], name: str) -> float | None:
    """The z of a level, or None when it is missing or not a finite number."""
    z = levels.get(name)
    return None if z is None or not math.isfinite(float(z)) else float(z)


def _base_cut(lungs: np.ndarray, z_mm: np.ndarray, voxel_ml: float | None) -> bool:
    """Whether a lung runs out of the scan's lowest slice (see :func:`pick_axial_slices`)."""
    if voxel_ml is None:
        return bool(lungs[int(np.argmin(z_mm))].any())
    from scoring.landmarks import lung_ends

    return any(lung_ends(lungs == side, z_mm, voxel_ml)[3] for side in np.unique(lungs[lungs > 0]))


def pick_axial_slices(lungs: np.ndarray, classes: np.ndarray, z_mm: np.ndarray,
                      levels: Mapping[str, float | None], voxel_ml: float | None = None) -> list[AxialPick]:
    """The four axial slices of the montage: the middle of each six-zone zone and the most-lesion slice.

    Zones are those the six-zone score uses (:func:`scoring.zones.six_zone_intervals`, from the carina and IPV
    levels), clipped to the lungs' top and bottom slices; each zone's slice lies inside it. A zone that is missing
    (no IPV level: the middle and lower zones of a scan that stops above the diaphragm) or that holds no lung slice
    gets no slice (``k`` None), never a slice of another zone under its name. Without the carina, or with the IPV
    not below it, no zone is known and the lungs' craniocaudal extent is split in thirds, labelled so. Without any
    lesion the fourth slice is the lung base (15 % above the lowest lung slice); where the lungs reach the scan's
    last slice (base cut off) it is the lowest lung slice, labelled "base cut off": with ``voxel_ml`` (mL per voxel)
    by the coverage's rule (:func:`scoring.landmarks.lung_ends`: that slice holds >= 5 mm2 of a lung, stray voxels do
    not count), so the picture says what scans.csv's base_covered says; without it, any lung voxel there.
    """
    ks = np.nonzero(lungs.any(axis=(1, 2)))[0]
    if ks.size == 0:
        ks = np.arange(lungs.shape[0])
    z_lung = z_mm[ks]
    z_top, z_bottom = float(z_lung.max()), float(z_lung.min())
    carina, ipv = _level(levels, "carina"), _level(levels, "ipv")
    picks: list[AxialPick] = []
    if carina is None or (ipv is not None and not ipv < carina):
        span = z_top - z_bottom  # zones not known: thirds of the lungs' height
        centres = {"upper": z_top - span / 6.0, "middle": z_top - span / 2.0, "lower": z_top - 5.0 * span / 6.0}
        picks += [AxialPick(name[0].upper(), f"{name} third", int(ks[np.argmin(np.abs(z_lung - z))]))
                  for name, z in centres.items()]
    else:
        for name, iv in six_zone_intervals(carina, ipv).items():
            tag = name[0].upper()
            inside = np.zeros(len(ks), bool) if iv is None else iv.mask(z_lung)
            if not inside.any():
                why = "no IPV level" if iv is None else "no lung slice in this zone"
                picks.append(AxialPick(tag, f"{name} zone: missing", None, why))
                continue
            z_in = z_lung[inside]
            z = (max(iv.low, z_bottom) + min(iv.high, z_top)) / 2.0
            picks.append(AxialPick(tag, f"{name} zone", int(ks[inside][np.argmin(np.abs(z_in - z))])))
    per_slice = (classes > 0).sum(axis=(1, 2))
    if per_slice.any():
        picks.append(AxialPick("*", "most lesion", int(np.argmax(per_slice))))
    elif _base_cut(lungs, z_mm, voxel_ml):  # the lungs go on below the scan: its lowest slice is not their base
        picks.append(AxialPick("B", "base cut off", int(ks[np.argmin(z_lung)])))
    else:
        z = z_bottom + 0.15 * (z_top - z_bottom)
        picks.append(AxialPick("B", "lung base", int(ks[np.argmin(np.abs(z_lung - z))])))
    return picks


#: Least consolidation (mL) for the soft-tissue column's first slice to be the slice with the most of it (a speck
#: says nothing): the default scoring.min_involvement_ml.
SOFT_MIN_CONSOLIDATION_ML = 1.0


def soft_tissue_slices(lungs: np.ndarray, classes: np.ndarray, z_mm: np.ndarray,
                       voxel_ml: float | None = None) -> list[AxialPick]:
    """The two slices of the soft-tissue column: the slice with the most consolidation (tag C, when the scan holds
    at least :data:`SOFT_MIN_CONSOLIDATION_ML`, or any with ``voxel_ml`` unknown; else the most lesion, else the
    lungs' middle slice, tag S), and the lung base (tag E: 15 % of the lungs' height above their lowest slice,
    where an effusion collects, at the back in a supine patient; the lowest lung slice, labelled so, when the base
    is cut off: :func:`_base_cut`)."""
    ks = np.nonzero(lungs.any(axis=(1, 2)))[0]
    if ks.size == 0:
        ks = np.arange(lungs.shape[0])
    dense = (classes == HATCHED_CLASS).sum(axis=(1, 2))
    lesion = (classes > 0).sum(axis=(1, 2))
    enough = dense.any() and (voxel_ml is None or float(dense.sum()) * voxel_ml >= SOFT_MIN_CONSOLIDATION_ML)
    first = (AxialPick("C", "most consolidation", int(np.argmax(dense))) if enough else
             AxialPick("S", "most lesion", int(np.argmax(lesion))) if lesion.any() else
             AxialPick("S", "lung centre", int(ks[len(ks) // 2])))
    z_lung = z_mm[ks]
    if _base_cut(lungs, z_mm, voxel_ml):  # the recesses where an effusion collects are not in the scan
        return [first, AxialPick("E", "lowest lung (base cut off)", int(ks[np.argmin(z_lung)]))]
    z = float(z_lung.min()) + 0.15 * float(z_lung.max() - z_lung.min())
    return [first, AxialPick("E", "lung base (effusion site)", int(ks[np.argmin(np.abs(z_lung - z))]))]


def _lung_outlines(ax, lungs2d: np.ndarray, linewidth: float) -> None:
    """Each lung's outline in :data:`LUNG_COLOUR`: the left lung (:data:`LEFT_LUNG`) dashed, any other lung label
    solid (a mask with one label for both lungs draws both solid). Where the right lung holds voxels labelled left,
    their border is drawn across it."""
    left = lungs2d == LEFT_LUNG
    right = (lungs2d > 0) & ~left
    if right.any():
        ax.contour(right, levels=[0.5], colors=LUNG_COLOUR, linewidths=linewidth)
    if left.any():  # (the dashes set on the contour drawn, not passed as linestyles: those are the pneumothorax's)
        ax.contour(left, levels=[0.5], colors=LUNG_COLOUR, linewidths=linewidth).set_linestyle(LEFT_LUNG_STYLE)


def _soft_panel(ax, hu2d: np.ndarray, lungs2d: np.ndarray, classes2d: np.ndarray, aspect: float) -> None:
    """CT in the soft-tissue window with the lung and the consolidation outlined, never filled: what lies under
    them (fluid, atelectasis, consolidation) shows."""
    ax.imshow(hu2d, cmap="gray", vmin=SOFT_TISSUE_WINDOW_HU[0], vmax=SOFT_TISSUE_WINDOW_HU[1], aspect=aspect,
              interpolation="bilinear")
    if min(classes2d.shape) >= 2:
        hatched = classes2d == HATCHED_CLASS
        if hatched.any():
            ax.contour(hatched, levels=[0.5], colors=SOFT_CONSOLIDATION_COLOUR, linewidths=1.2)
        _lung_outlines(ax, lungs2d, 1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _outline_field(mask2d: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """What the suspected pneumothorax's outline is drawn around (its 0.5 contour): the mask closed by a disc of
    :data:`PNEUMOTHORAX_SMOOTH_MM` x 2, its holes filled, smoothed by a Gaussian of :data:`PNEUMOTHORAX_SMOOTH_MM`.
    Where a slice cuts the air's top or bottom, or noise lifts voxels above its cut, the mask is working-grid voxels
    scattered over the lung (3 x 3 pixels of a 0.63 mm CT): drawn as they are, they were dozens of small dotted rings
    (normal001 with a synthetic lateral pneumothorax); closed, those near each other are one region, and smoothed,
    single ones fall under 0.5. A sheet keeps its outline."""
    from scipy import ndimage as ndi

    px = [max(float(p), 1e-3) for p in pixel_mm]
    r = [max(0, int(round(2.0 * PNEUMOTHORAX_SMOOTH_MM / p))) for p in px]
    yy, xx = np.ogrid[-r[0]:r[0] + 1, -r[1]:r[1] + 1]
    disc = (yy * px[0]) ** 2 + (xx * px[1]) ** 2 <= (2.0 * PNEUMOTHORAX_SMOOTH_MM) ** 2
    padded = np.pad(np.asarray(mask2d, bool), [(n + 1, n + 1) for n in r])  # (a closing at the edge would open it)
    closed = ndi.binary_closing(padded, disc)[r[0] + 1: r[0] + 1 + mask2d.shape[0], r[1] + 1: r[1] + 1 + mask2d.shape[1]]
    filled = ndi.binary_fill_holes(closed | mask2d)
    return ndi.gaussian_filter(filled.astype(np.float32), [PNEUMOTHORAX_SMOOTH_MM / p for p in px])


#: The HU under a fill's legend swatch: aerated lung, as a fill over it is drawn (LESION_ALPHA over the lung window's
#: grey). Swatches at full strength were 7-14 CIEDE2000 from the half-transparent fills they name.
SWATCH_UNDER_HU = -850.0


def swatch_colour(colour: str) -> tuple[float, float, float]:
    """A fill's legend swatch colour (RGB 0-1): ``colour`` at :data:`LESION_ALPHA` over the grey that the lung window
    gives :data:`SWATCH_UNDER_HU`, as :func:`_panel` draws the fill."""
    from matplotlib import colormaps
    from matplotlib.colors import to_rgb

    low, high = WINDOW_HU
    under = np.asarray(colormaps["gray"]((SWATCH_UNDER_HU - low) / (high - low))[:3])
    rgb = LESION_ALPHA * np.asarray(to_rgb(colour)) + (1.0 - LESION_ALPHA) * under
    return (float(rgb[0]), float(rgb[1]), float(rgb[2]))


def _lesion_rgba(classes2d: np.ndarray) -> np.ndarray:
    """An RGBA overlay (floats 0-1) with each filled lesion class in its colour; transparent elsewhere (and under the
    hatched class, which :func:`_panel` draws as hatching)."""
    from matplotlib.colors import to_rgba

    rgba = np.zeros(classes2d.shape + (4,), dtype=np.float32)
    for value, (colour, _) in LESION_CLASSES.items():
        if value != HATCHED_CLASS:
            r, g, b, _a = to_rgba(colour)
            rgba[classes2d == value] = (r, g, b, LESION_ALPHA)
    return rgba


def hatch_style():
    """A Matplotlib rc context that draws hatching in the hatched class's colour: Matplotlib reads the hatch colour
    from rcParams (when drawing, in older versions), so the figure is both drawn and saved inside it."""
    import matplotlib

    return matplotlib.rc_context({"hatch.color": LESION_CLASSES[HATCHED_CLASS][0], "hatch.linewidth": HATCH_LINEWIDTH})


def _panel(ax, hu2d: np.ndarray, lungs2d: np.ndarray, classes2d: np.ndarray, aspect: float,
           pneumothorax2d: np.ndarray | None = None, pixel_mm: tuple[float, float] = (1.0, 1.0)) -> None:
    """CT in the lung window, lung outline, filled (faint GGO, GGO) and hatched (consolidation) lesion classes on one
    axes, and the suspected pneumothorax's dotted outline where ``pneumothorax2d`` has any (``pixel_mm``: the
    picture's pixel size, rows and columns, for the outline's smoothing). The hatching takes its colour from
    ``rcParams["hatch.color"]``: draw and save inside :func:`hatch_style`."""
    ax.imshow(hu2d, cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1], aspect=aspect, interpolation="bilinear")
    if (classes2d > 0).any():
        ax.imshow(_lesion_rgba(classes2d), aspect=aspect, interpolation="nearest")
    drawable = min(classes2d.shape) >= 2  # contours need 2 x 2 (a one-slice series: no outline, no hatching)
    hatched = classes2d == HATCHED_CLASS
    if drawable and hatched.any():
        ax.contourf(hatched, levels=[0.5, 1.5], colors="none", hatches=[HATCH])
        ax.contour(hatched, levels=[0.5], colors=LESION_CLASSES[HATCHED_CLASS][0], linewidths=1.2)
    if drawable:
        _lung_outlines(ax, lungs2d, 1.0)
    if pneumothorax2d is not None and drawable and pneumothorax2d.any():
        ax.contour(_outline_field(pneumothorax2d, pixel_mm), levels=[0.5], colors=PNEUMOTHORAX_COLOUR, linewidths=1.6,
                   linestyles=PNEUMOTHORAX_STYLE)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def qc_png(hu: np.ndarray, lungs: np.ndarray, classes: np.ndarray, z_mm: np.ndarray,
           spacing_zyx: Sequence[float], levels: Mapping[str, float | None], title: str = "",
           estimated: Collection[str] = (), flags: Sequence[str] = (), reader: Collection[str] = (),
           pneumothorax: np.ndarray | None = None) -> bytes:
    """The QC montage of one series as PNG bytes (1250 x 540 px).

    ``hu``, ``lungs`` (0 background, >0 lung) and ``classes`` (0 none, 1 faint GGO, 2 GGO,
    3 consolidation) are LPS ``[z, y, x]`` arrays of one shape, ``z_mm`` the patient z of each slice,
    ``spacing_zyx`` the voxel spacing in mm and ``levels`` landmark name -> z (mm) or None. Levels named in
    ``estimated`` (placed from the others, not found in the image) are drawn dashed and labelled "(est.)", as in
    levels.png: the zones they bound are only as good as the estimate; levels named in ``reader`` (set by a reader:
    ``landmarks.reader_levels``) are labelled "(reader)". ``flags`` (the scan's QC flags) are printed under
    the title, so that the picture, opened on its own, says what to look at (their meanings: README, report.html).
    ``pneumothorax`` (bool, the same shape, or None): the suspected pneumothorax
    (:func:`pipeline.hu_checks.pneumothorax`), outlined dotted where an axial slice crosses it and, seen from the
    front, on the coronal view; the legend gives the z of its largest slice.
    """
    if not (hu.shape == lungs.shape == classes.shape) or hu.ndim != 3 or len(z_mm) != hu.shape[0]:
        raise ValueError(f"arrays disagree: hu {hu.shape}, lungs {lungs.shape}, classes {classes.shape}, "
                         f"{len(z_mm)} z values")
    if pneumothorax is not None:
        if pneumothorax.shape != hu.shape:
            raise ValueError(f"arrays disagree: hu {hu.shape}, pneumothorax {pneumothorax.shape}")
        pneumothorax = np.asarray(pneumothorax, bool) if np.any(pneumothorax) else None
    z_mm = np.asarray(z_mm, dtype=float)
    sz, sy, sx = (float(s) for s in spacing_zyx)
    picks = pick_axial_slices(lungs, classes, z_mm, levels, voxel_ml=sz * sy * sx / 1000.0)

    with hatch_style():  # the hatching's colour is read from rcParams when it is drawn (savefig)
        return _montage(hu, lungs, classes, z_mm, (sz, sy, sx), levels, picks, title, estimated, flags, reader,
                        pneumothorax)


def _montage(hu: np.ndarray, lungs: np.ndarray, classes: np.ndarray, z_mm: np.ndarray,
             spacing_zyx: tuple[float, float, float], levels: Mapping[str, float | None], picks: list[AxialPick],
             title: str, estimated: Collection[str], flags: Sequence[str], reader: Collection[str] = (),
             pneumothorax: np.ndarray | None = None) -> bytes:
    """The montage of :func:`qc_png` (its arguments checked), drawn and saved."""
    # a Figure on its own Agg canvas: the global backend and pyplot's figures (a notebook's inline plots) are not
    # touched, and the picture is the same as pyplot with the Agg backend drew it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    sz, sy, sx = spacing_zyx
    crop_z, crop_y, crop_x = _crop_box(hu, lungs, CROP_MARGIN)
    fig = Figure(figsize=MONTAGE_SIZE_IN, dpi=MONTAGE_DPI, facecolor="black")
    FigureCanvasAgg(fig)
    # with flags, the panels start lower: the flags line sits between the title and the panels' titles
    grid = fig.add_gridspec(2, 5, left=0.01, right=0.99, top=0.86 if flags else 0.9, bottom=MONTAGE_BOTTOM,
                            wspace=0.04, hspace=0.14)
    text = {"color": "white", "fontsize": 12}

    # Coronal view through the lungs' centre, head at the top.
    ax = fig.add_subplot(grid[:, 0:2])
    box = ax.get_position()  # the room the coronal view has, before its aspect shrinks it
    per_row = np.count_nonzero(lungs, axis=(0, 2))  # lung voxels per y: the mean y without every voxel's indices
    yc = int(round(float(per_row @ np.arange(per_row.size)) / per_row.sum())) if per_row.any() else hu.shape[1] // 2
    rows = np.arange(hu.shape[0])[crop_z]
    rows = rows[np.argsort(-z_mm[rows], kind="stable")]  # cranial first
    ptx = pneumothorax  # (None, or bool with some voxels)
    # the pneumothorax seen from the front, not where this plane cuts it: an anterior one, the usual place on a supine
    # scan, never reaches the lungs' centre plane. Where there is PNEUMOTHORAX_CORONAL_DEPTH_MM of it front to back:
    # every voxel at any depth drew the working-grid voxels scattered at the air's top and bottom as rings
    front = None if ptx is None else \
        np.count_nonzero(ptx[rows][:, :, crop_x], axis=1) * sy >= PNEUMOTHORAX_CORONAL_DEPTH_MM
    _panel(ax, hu[rows, yc, crop_x], lungs[rows, yc, crop_x], classes[rows, yc, crop_x], sz / sx, front, (sz, sx))
    z_rows = z_mm[rows]
    width = crop_x.stop - crop_x.start

    def row_of(z: float) -> int | None:
        if not (z_rows.min() <= z <= z_rows.max()):
            return None
        return int(np.argmin(np.abs(z_rows - z)))

    def plane_row(z: float) -> float | None:
        """The (fractional) row of patient z: a plane lies at its own z, between the slices it separates, not
        snapped to the nearest slice (half a slice off, 4 mm on 8 mm slices)."""
        if not (z_rows.min() <= z <= z_rows.max()):
            return None
        return float(np.interp(z, z_rows[::-1], np.arange(len(z_rows), dtype=float)[::-1]))

    gap = LABEL_GAP * len(rows)
    last = -np.inf
    planes = [(r, label + (" (est.)" if name in estimated else " (reader)" if name in reader else "")
               + f"\n{float(levels[name]):.1f} mm",
               "--" if name in estimated else "-")
              for name, label in ZONE_PLANES.items()
              if levels.get(name) is not None and (r := plane_row(float(levels[name]))) is not None]
    # plane labels and slice ticks go in margins beside the image, never over the lung (over it, the labels hid a
    # tenth of a peripheral ground glass in the coronal view)
    box_w, box_h = box.width * fig.get_figwidth() * fig.dpi, box.height * fig.get_figheight() * fig.dpi
    px_per_x = min((box_w - LABEL_MARGIN_PX - TICK_MARGIN_PX) / width, box_h / (len(rows) * sz / sx))
    right, left = LABEL_MARGIN_PX / px_per_x, TICK_MARGIN_PX / px_per_x
    for r, label, style in sorted(planes):
        ax.axhline(r, color=PLANE_COLOUR, lw=1.5, alpha=0.9, linestyle=style)
        below = r - last < gap  # too close to the label above: write this one under its line
        ax.text(width - 0.5 + right, r + (1.5 if below else -1.5), label, color=PLANE_COLOUR, fontsize=10,
                ha="right", va="top" if below else "bottom", fontweight="bold", linespacing=1.0)
        last = r
    soft = soft_tissue_slices(lungs, classes, z_mm, voxel_ml=sz * sy * sx / 1000.0)
    ticks: list[tuple[int, str]] = []  # (row, tags); picks closer than the gap share one tick
    for r, tag in sorted((r, p.tag) for p in [*picks, *soft]
                         if p.k is not None and (r := row_of(float(z_mm[p.k]))) is not None):
        if ticks and r - ticks[-1][0] < gap:
            ticks[-1] = (ticks[-1][0], f"{ticks[-1][1]} {tag}")
        else:
            ticks.append((r, tag))
    for r, tags in ticks:
        ax.plot([-0.5 - 0.3 * left, -0.5], [r, r], color=TICK_COLOUR, lw=2.0, solid_capstyle="butt")
        ax.text(-0.5 - left, r, tags, color=TICK_COLOUR, fontsize=11, va="center", ha="left", fontweight="bold")
    ax.set_xlim(-0.5 - left, width - 0.5 + right)
    ax.set_facecolor("black")
    ax.set_title("coronal (R on left)", **text)

    # Axial slices, 2 x 2.
    for pick, cell in zip(picks, [grid[0, 2], grid[0, 3], grid[1, 2], grid[1, 3]]):
        ax = fig.add_subplot(cell)
        k = pick.k
        if k is None:  # a zone the scan has no slice of: an empty panel that says so
            ax.set_facecolor("black")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.5, 0.5, pick.note, color="#aaaaaa", fontsize=12, ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_title(f"{pick.tag}  {pick.label}", **text)
            continue
        _panel(ax, hu[k, crop_y, crop_x], lungs[k, crop_y, crop_x], classes[k, crop_y, crop_x], sy / sx,
               None if ptx is None else ptx[k, crop_y, crop_x], (sy, sx))
        # one decimal: slices 1 mm apart or closer rounded to the same whole mm (z as in ImagePositionPatient)
        ax.set_title(f"{pick.tag}  {pick.label}  z={float(z_mm[k]) + 0:.1f} mm", color="white", fontsize=11)
        for x, side in ((0.04, "R"), (0.96, "L")):  # the patient's sides (anterior is up)
            ax.text(x, 0.93, side, color=TICK_COLOUR, fontsize=10, fontweight="bold", ha="center", va="center",
                    transform=ax.transAxes, bbox=LABEL_BOX)

    # Soft-tissue window: the densest slice and the base, outlines only.
    for pick, cell in zip(soft, [grid[0, 4], grid[1, 4]]):
        ax = fig.add_subplot(cell)
        k = pick.k
        _soft_panel(ax, hu[k, crop_y, crop_x], lungs[k, crop_y, crop_x], classes[k, crop_y, crop_x], sy / sx)
        ax.set_title(f"{pick.tag}  {pick.label}", color="white", fontsize=11)  # its z: the tick on the coronal view
        for x, side in ((0.04, "R"), (0.96, "L")):
            ax.text(x, 0.93, side, color=TICK_COLOUR, fontsize=10, fontweight="bold", ha="center", va="center",
                    transform=ax.transAxes, bbox=LABEL_BOX)

    # swatches as drawn: the fills at LESION_ALPHA over aerated lung's grey (edged in white: dark on black), the
    # hatching over light grey, as over tissue; the lungs' outlines, the left dashed
    handles = [Patch(facecolor="#d9d9d9", edgecolor=c, hatch=HATCH, lw=1.2) if v == HATCHED_CLASS
               else Patch(facecolor=swatch_colour(c), edgecolor="white", lw=0.8)
               for v, (c, _) in LESION_CLASSES.items()]
    handles.append(Patch(facecolor="none", edgecolor=LUNG_COLOUR, lw=1.5))
    handles.append(Patch(facecolor="none", edgecolor=LUNG_COLOUR, lw=1.5, linestyle=LEFT_LUNG_STYLE))
    handles.append(Patch(facecolor="none", edgecolor=SOFT_CONSOLIDATION_COLOUR, lw=1.5))
    names = [n for _, n in LESION_CLASSES.values()] + ["R lung", "L lung", "consolidation, soft tissue"]
    if ptx is not None:  # only when there is one: where it is largest, to find it in a viewer
        handles.append(Patch(facecolor="none", edgecolor=PNEUMOTHORAX_COLOUR, lw=1.5, linestyle=PNEUMOTHORAX_STYLE))
        # one decimal, as the panels' titles give z (a slice titled z=-184.5 read -184 here)
        names.append(f"pneumothorax? largest z={pneumothorax_z_mm(ptx, z_mm) + 0:.1f} mm")
    if title:
        fig.suptitle(title, color="white", fontsize=14, y=0.985)
    renderer = fig.canvas.get_renderer()
    if flags:
        line = fig.text(0.5, 0.935, "", color="#ffb000", fontsize=9, ha="center", va="center")
        for chars in range(FLAGS_LINE_CHARS, 19, -10):  # cut until it fits the picture's width
            line.set_text(flags_line(flags, chars))
            if line.get_window_extent(renderer).width <= 0.98 * fig.bbox.width:
                break
    low, high = WINDOW_HU
    s_low, s_high = SOFT_TISSUE_WINDOW_HU
    note = fig.text(0.005, 0.01, f"lung window W {high - low:.0f} / L {(low + high) / 2:.0f}\nright column: soft "
                    f"tissue W {s_high - s_low:.0f} / L {(s_low + s_high) / 2:.0f}", color="#aaaaaa", fontsize=9,
                    ha="left", va="bottom")
    legend_right_of(fig, note, handles, names)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor=fig.get_facecolor())
    return buf.getvalue()


def legend_right_of(fig, note, handles: list, names: list[str]):
    """The legend in one row centred right of ``note`` (the window note in the bottom left corner), its font made
    smaller (:data:`LEGEND_FONT_SIZES`) until it fits there: the sixth entry, a suspected pneumothorax, ran past the
    picture's edge and over the note at 12 pt."""
    renderer = fig.canvas.get_renderer()
    start = note.get_window_extent(renderer).x1 / fig.bbox.width + 0.005
    for size in LEGEND_FONT_SIZES:
        legend = fig.legend(handles, names, loc="lower center", bbox_to_anchor=((start + 1.0) / 2, 0.0),
                            ncol=len(names), fontsize=size, frameon=False, labelcolor="white", handlelength=1.2,
                            columnspacing=1.2, borderaxespad=0.2)
        if legend.get_window_extent(renderer).width <= (0.995 - start) * fig.bbox.width or size == LEGEND_FONT_SIZES[-1]:
            return legend
        legend.remove()
    raise AssertionError("unreachable")


def pneumothorax_z_mm(pneumothorax: np.ndarray, z_mm: np.ndarray) -> float:
    """The z (mm) of the slice with the most suspected pneumothorax (the first of equals)."""
    return float(np.asarray(z_mm, float)[int(np.argmax(np.count_nonzero(pneumothorax, axis=(1, 2))))])


#: The thumbnail's caption, drawn over its bottom band (:data:`MONTAGE_BOTTOM` of its height, where the montage's
#: legend and window note shrink to a few pixels, as do its R / L markers: about 3 pixels high at 320 wide), in the
#: largest font that fits there: which side is which, legible at thumbnail size.
THUMB_CAPTION = "patient R on the left of each view; L lung dashed"


def qc_thumbnail(png: bytes, width: int = THUMB_WIDTH_PX) -> bytes:
    """A smaller copy of a QC montage (``width`` pixels wide, aspect kept) for the run report, its bottom band (the
    legend, unreadable at this size) covered by :data:`THUMB_CAPTION`."""
    from PIL import Image, ImageDraw, ImageFont

    with Image.open(io.BytesIO(png)) as img:
        img = img.convert("RGB")
        height = max(1, round(img.height * width / img.width))
        small = img.resize((width, height), Image.Resampling.LANCZOS)
    band = int(MONTAGE_BOTTOM * height)
    font, box = None, (0, 0, 0, 0)
    for size in range(max(band, 1), 5, -1):  # the largest font that fits the band and the width
        font = ImageFont.load_default(size=size)
        box = font.getbbox(THUMB_CAPTION)
        if box[2] - box[0] <= width - 4 and box[3] - box[1] <= band - 1:
            break
    else:
        font = None  # a band too small for any legible caption: the picture as it is
    if font is not None:
        draw = ImageDraw.Draw(small)
        draw.rectangle((0, height - band, width, height), fill="black")
        draw.text(((width - (box[2] - box[0])) // 2 - box[0], height - band + (band - (box[3] - box[1])) // 2 - box[1]),
                  THUMB_CAPTION, fill="white", font=font)
    buf = io.BytesIO()
    small.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
