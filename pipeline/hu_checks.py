"""Image checks of the Hounsfield units a series was scored on, each a QC flag: the scores rest on fixed HU bands
(ground glass -700 to -300 HU, consolidation above), so a scale that is off, lungs that are dense without disease,
metal streaks and contrast change them without any other sign.

Measured on the working grid (the network's input) and recorded in result.json (``hu_check``), flagged only
beyond the limits below. The loader refuses what is plainly no HU (``NOT_HU``: air not near -1000 HU at the
low end of the values); these checks catch what passes it: a RescaleSlope that is wrong (air stays near -1000, soft
tissue moves to 1000 HU), an offset of 100-200 HU (a scanner out of calibration), an expiratory scan.

- ``HU_CALIBRATION:<air>/<tissue>``: the median HU of the air around the patient (outside the body's outline and
  the lungs, not the padding outside the field of view, -1200 to -500 HU) is outside :data:`AIR_RANGE`, or that of
  the body's soft tissue and bone (outside the lungs, -200 HU up to metal) outside :data:`TISSUE_RANGE`.
- ``DENSE_LUNG:<HU>``: the mean HU of the lung outside the lesion mask is above :data:`DENSE_LUNG_HU` (an
  expiratory scan, poor inspiration, dependent atelectasis, diffuse disease the network did not mark): normal lung
  itself then reaches the ground-glass band.
- ``METAL:<mL>``: this many mL at :data:`METAL_HU` or more (wires, clips, a pacemaker, electrodes; cortical bone
  stays below): their streaks can be taken as ground glass.
- ``CONTRAST``: the header names a contrast agent (ContrastBolusAgent): enhancement below
  ``hu_classes.lesion_max_hu`` (enhanced vessels above it are left out of the lesions) raises a lesion's density
  grade, enhanced great vessels can be taken for the manubrium; the HU bands and the network are of non-contrast CT.
- ``CONTRAST_SUSPECTED:<HU>``: the header names no contrast agent, but the mediastinal soft tissue
  (``mediastinum_hu``: :func:`mediastinum_hu`, the upper quartile of the HU of the soft tissue between the lungs in
  front of the spine, the heart and great vessels, on the lungs' middle third) is above
  :data:`CONTRAST_SUSPECTED_HU`: enhanced blood (a CT pulmonary angiogram or a contrast-enhanced chest CT whose
  header is blank), with the effects of ``CONTRAST``. Non-contrast blood and myocardium are 30-60 HU, enhanced
  blood 150-500 HU. Never together with ``CONTRAST``; a flag only: it changes no score.
- ``THICK_SLICES:<mm>``: slices thicker than :data:`THICK_SLICE_MM`: partial volume of vessels and of the lung's
  edges with the chest wall looks like ground glass.
- ``LOW_ATTENUATION:<%>``: this percentage of the lung mask (``laa950_pct``, on the CT's own grid) is below
  :data:`LAA_HU` (%LAA-950) and at least :data:`LOW_ATTENUATION_PCT`: emphysema or bullae (or air trapping). The
  lung mask keeps them, but pneumonia around air cysts is under-segmented, and lesion voxels in honeycomb air count as
  faint ground glass. A flag only.
- ``NOISY:<HU>``: the image noise (``noise_hu``: the median SD of the HU in 5 x 5 in-plane windows of the air around
  the patient, on the working grid; :func:`noise_hu`) is above :data:`NOISE_MAX_HU`: ultra-low-dose noise. The
  segmentation then takes the liver dome, pericardial fat or noise itself as lung lesion (a normal subject with
  added noise SD 80 HU scored six-zone 2 / CT-1 with the default segmenter) and voxels move between the HU classes
  (faint ground glass to consolidation). A flag only: it changes no score.
- ``MOTION_SUSPECT:<ratio>``: two adjacent slices differ far more (or far less) than the slices around them
  (``slice_jump_ratio``, :func:`slice_jump_ratio`, on the CT's own slices, above :data:`MOTION_RATIO`): breathing
  or heart motion during the scan, a step between acquisitions, repeated or blurred slices. A doubled diaphragm
  added about 200 mL of false ground glass to a normal scan; a stepped slab changed lung volume by 3-9 % and the
  0-900 score by up to 7. A flag only.
- ``PNEUMOTHORAX_SUSPECT:<mL>``: at least this many mL of the lung mask (``pneumothorax_ml_right`` / ``_left``,
  :func:`pneumothorax_ml`) are air without vessels or septa (as the trachea's air reads, ``airway_air_hu``), about
  1 cm thick or more, in a sheet along the mask's edge (:data:`PNEUMOTHORAX_MIN_ML` or more in one piece, at least
  :data:`PNEUMOTHORAX_SHEET_RATIO` times as long as it is thick, or lying with half its surface or more against the
  mask's edge: :data:`PNEUMOTHORAX_EDGE_SHARE`): a pneumothorax taken into the lung mask, which both segmenters do
  (its volume enlarges the lung, lowers % opacity and raises the well-aerated share); also a giant bulla of that
  shape, and bowel gas that a mask holds (the network takes bowel gas out itself). Emphysema, round bullae and an
  airway painted into a lung mask are not flagged. A flag only: the lung mask and the scores keep the air; the mL is
  a lower bound (thin parts, subpulmonic air and noise are undercounted).
- ``DEPENDENT_DENSITY:<HU>``: the back third of the lungs is denser than the front third by this much in most
  slices (``dependent_gradient_hu``, :func:`dependent_gradient_hu`, above :data:`DEPENDENT_GRADIENT_HU`):
  gravity-dependent density of a supine patient (dependent atelectasis, poor inspiration) or posterior-predominant
  disease; ctscore scores it as lesion. A flag only; a prone patient's dependent lung (in front) is not measured.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from scoring.quantify import LOW_ATTENUATION_HU

#: Median HU of the air around the patient that is taken as calibrated (air is -1000 HU; the six real series of
#: ../shared/data read -997 to -947: a tight field of view leaves mostly air beside the skin, partial volume).
AIR_RANGE = (-1080.0, -920.0)
#: Median HU of the body's soft tissue and bone outside the lungs (fat -100, muscle and blood 40, bone 400 and up):
#: the six real chests -83 to 41 HU (../shared/data).
TISSUE_RANGE = (-150.0, 100.0)
#: Mean HU of the lung outside the lesion mask above which the lung is flagged as dense (inspiratory normal lung:
#: -900 to -750 HU; the ground-glass band starts at -700).
DENSE_LUNG_HU = -700.0
#: HU at and above which a voxel is metal (12-bit scanners saturate at 3071; cortical bone stays below 2000).
METAL_HU = 2500.0
#: Metal volume flagged (mL): a few voxels of a beam-hardened bone edge are not metal.
METAL_MIN_ML = 0.1
#: noise_hu above which a series is flagged NOISY (HU). Measured as in production (pipeline.run: the loaded series,
#: resampled to the 1.5 mm working grid, padding mask, classical lung mask) on the six real series of
#: ../shared/data/chest, as scanned and with CT-like noise of SD 20/40/80/120 HU added before the resampling
#: (smoothed in-plane, sigma 1 px: the noise audit's), and with SD 40/80 clipped at -1024 HU (storage floor):
#:   series                 as scanned  +20   +40   +80   +120  +40 clipped  +80 clipped
#:   cap001                     20.2    24.0  33.4  57.1  80.6     29.6         44.1
#:   ge_mister_ct                6.3    15.9  29.1  56.1  79.5     26.8         44.6
#:   itkelastix00               11.3    16.2  28.5  53.4  75.0     22.1         37.3
#:   lung_pet_ct_dx_A0002        4.2    15.0  28.8  56.0  78.7     23.1         40.1
#:   normal001                  10.7    17.0  28.3  52.4  75.6     23.0         38.1
#:   ricord_covid_419639         7.6    16.5  29.7  56.6  80.1     25.5         43.4
#: (the working grid's linear resampling lowers the noise: normal001 reads 18 on its own 0.7 mm grid, +80 reads 72).
#: The audit saw false lesions from +80 (normal001: six-zone 2, CT-1), none at +40: 35 flags every +80, clipped or
#: not (37.3 and up), no +40 (33.4 at most) and no series as scanned (20.2 at most).
NOISE_MAX_HU = 35.0
#: In-plane window of the local standard deviation behind ``noise_hu`` (voxels of the working grid, 1.5 mm: 7.5 mm).
NOISE_WINDOW = 5
#: Voxels between a noise window and the edge of the air (the skin's partial volume, the table, the padding).
NOISE_MARGIN = 2
#: Slices measured for ``noise_hu`` at most (evenly spread): keeps it cheap on a long scan.
NOISE_SLICES = 64
#: HU below which lung is "low attenuation" (%LAA-950: the emphysema measure of COPD research, on the CT's own grid);
#: scans.csv's percent_low_attenuation counts the same voxels (scoring.quantify).
LAA_HU = LOW_ATTENUATION_HU
#: %LAA-950 at or above which a series is flagged LOW_ATTENUATION. The six real chests of ../shared/data read 0.02-4.0 %
#: (cap001, diffuse pneumonia, 4.0 % with the network's lung mask, 3.8 % with the classical one); the COPDGene subject (cip_copdgene ct-64, 4 mm voxels) 19.7 %. Emphysema is
#: usually called from 5 %; 10 % flags marked emphysema or large bullae, where an audit measured pneumonia
#: under-segmented (a ground-glass halo around a bulla: 0.3 of 62 mL found; centrilobular emphysema added to a COVID-19
#: scan: lesion volume -7 % network, -41 % classical). Noise raises it (normal lung at -870 HU dips below -950).
LOW_ATTENUATION_PCT = 10.0
#: ``mediastinum_hu`` above which a series without a contrast agent in its header is flagged CONTRAST_SUSPECTED
#: (HU). Measured as in production (the loaded series resampled to the 1.5 mm working grid, the classical lung mask,
#: the body mask) on the six real series of ../shared/data/chest (all non-contrast: ge_mister_ct's blood is 40-45 HU),
#: as scanned, with the mediastinal blood enhanced (the contrast audit's proxy of the blood pool, soft tissue of 20-80
#: HU between the lungs in pieces of 2 mL or more on the CT's own grid, 230-770 mL, set to 150/250/350/500 HU before
#: the resampling) and with CT-like noise added on the working grid (SD 30/55/80 HU, smoothed in-plane, sigma 1 px;
#: SD 55 reads noise_hu about 55, as the noise audit's +80):
#:   series                 as scanned  150 HU  250 HU  350 HU  500 HU  noise 30  noise 55  noise 80
#:   cap001                     41       96     147     199     278       45        53        63
#:   ge_mister_ct               42      138     229     319     454       46        53        62
#:   itkelastix00               35       84     130     176     244       40        48        58
#:   lung_pet_ct_dx_A0002       36      130     214     297     422       40        48        57
#:   normal001                  43       91     137     182     251       47        55        64
#:   ricord_covid_419639        44      141     232     324     462       49        57        67
#: The proxy misses part of the blood pool where the thin slices are noisy (itkelastix00: 230 mL), so the figures
#: with contrast are lower bounds. 75 flags every enhanced series, venous 150 HU included (84 and up), and no series
#: as scanned (44 at most) nor with noise SD 80 (67 at most). Measuring takes 0.02-0.03 s.
CONTRAST_SUSPECTED_HU = 75.0
#: ... raised by the noise above this (noise_hu, HU; the six real series as recorded read 4-20): noise lifts the upper
#: quartile of the soft tissue. scripts/measurement_conditions.py on the sample with noise SD 80 added: mediastinum_hu
#: 75.4 at noise_hu 36.8, flagged CONTRAST_SUSPECTED before this (its blood is 40 HU); the limit there is now 91.8.
CONTRAST_NOISE_HU = 20.0
#: HU window of the mediastinal soft tissue measured: fat, air and the lungs' partial volume below, cortical bone and
#: metal above (after the smoothing of :func:`mediastinum_hu`).
MEDIASTINUM_RANGE = (0.0, 600.0)
#: The part of the lungs' front-to-back extent, from their front, that is measured: the vertebral bodies (150-500 HU
#: on the working grid, like enhanced blood) lie between the lungs at the back of it, the descending aorta beside
#: them; the heart, the ascending aorta and the pulmonary trunk lie in front. Over the whole extent the spine raised
#: the six chests as scanned from 35-44 to 42-58 HU (cap001 41 -> 58), eating up the margin below the threshold.
MEDIASTINUM_FRONT_FRACTION = 0.6
#: Volume of mediastinal soft tissue under which ``mediastinum_hu`` is NaN (mL; the six real chests: 320-530 mL).
MEDIASTINUM_MIN_ML = 20.0
#: Slice thickness above which a series is flagged (mm).
THICK_SLICE_MM = 5.0

#: MOTION_SUSPECT:<ratio>: :func:`slice_jump_ratio` above this. The six real chests of ../shared/data read 1.2-1.3
#: (network's masks: 1.1-1.5) where no step is seen (normal001, cap001, ricord_covid_419639, lung_pet_ct_dx_A0002),
#: ge_mister_ct 4.9 (network 5.3; its three acquisitions meet with the lungs stepped) and itkelastix00 4.9 (network
#: 5.0; a flat step in the right dome, as from a 4D-CT's sorting), the sample 1.2; simulated breathing in the bases (a motion audit, 2026-12-06: a slab of the lower 60 mm
#: shown 5-15 mm higher or 10 mm to the front, a 10 mm slab doubled, three frozen slices, a slab blurred along z or
#: in plane) 2.1 (cap001, a 10 mm slab doubled, through the pipeline) to 13.2, and 1000 for frozen slices.
MOTION_RATIO = 2.0
#: The lungs dilated this much in plane are where slices are compared (the diaphragm's and vessels' edges).
MOTION_MARGIN_MM = 5.0
#: Each slice pair is compared with this many pairs on either side.
MOTION_NEIGHBOURS = 4
#: Slices this near the lungs' first and last are not compared (the apices and bases change fast anyway).
MOTION_EDGE_SLICES = 3

#: DEPENDENT_DENSITY:<HU>: :func:`dependent_gradient_hu` above this. The six real chests read -55 to 58 on the classical
#: segmenter's masks (58: ricord_covid_419639's posterior COVID-19) and -42 to 82 on the network's, whose mask holds
#: more of ricord's posterior disease: it reads 82 and is flagged (posterior-predominant disease, as the flag
#: says; an audit of the outputs, 2026-12-07); a normal scan given a posterior gradient of 200 HU (t squared, front to
#: back) 99-113 and 160 for 300 HU, which made the network score six-zone 4 (CT-1) and the classical segmenter 397
#: mL of lesion on normal001 with no other flag (DENSE_LUNG's mean stayed below -700).
DEPENDENT_GRADIENT_HU = 80.0
#: PNEUMOTHORAX_SUSPECT:<mL> (:func:`pneumothorax_ml`): lung voxels whose HU, averaged over a box of about 4.5 mm
#: (3 voxels of the working grid), is below a cut are air without vessels or septa (normal lung -900 to -750, its
#: vessels above). Air inside the chest does not read -1000 HU on every scanner: the trachea's air, 3 mm or more from
#: its wall on the working grid (:func:`airway_air_hu`), reads -940 (ge_mister_ct) to -989 HU on the six real chests
#: (normal001 -965, ricord_covid_419639 -953, the COPDGene subject -980), and a pneumothorax reads what the trachea
#: reads. The cut is that air plus :data:`PNEUMOTHORAX_AIR_MARGIN_HU`, within :data:`PNEUMOTHORAX_CUT_RANGE`;
#: this when the airway gives no measure (an endotracheal tube, a scan below the carina): the cut of air at -1000.
PNEUMOTHORAX_HU = -970.0
#: ... the margin over the trachea's air (HU): a box average of air with noise of SD 80 HU (clipped at -1024) spreads
#: about 15 HU. With a fixed -970, a sheet of air at -970 HU or above read 0 mL (a review, 2026-12-07).
PNEUMOTHORAX_AIR_MARGIN_HU = 30.0
#: ... the range of the cut (HU): -930 keeps it well below aerated lung (normal001's parenchyma averages -850).
#: The six real chests with the cut from their own trachea (-933 to -959, ricord_covid_419639 and ge_mister_ct -930):
#: nothing flagged; the COPDGene subject (19.7 % LAA-950) at -950 has pieces of 234 and 71 mL, sheet-shaped but
#: nowhere against the mask's edge (:data:`PNEUMOTHORAX_MIN_EDGE_SHARE`): not flagged.
PNEUMOTHORAX_CUT_RANGE = (-975.0, -930.0)
#: Trachea voxels at least this far from its wall (mm) measure the air, when there are
#: :data:`PNEUMOTHORAX_AIRWAY_MIN_VOXELS` of them.
PNEUMOTHORAX_AIRWAY_DEPTH_MM = 3.0
PNEUMOTHORAX_AIRWAY_MIN_VOXELS = 20
#: ... kept where a ball of this radius fits (mm) after the box average, which takes about 1.5 mm off each face: on the
#: 1.5 mm working grid a sheet of air about 1 cm thick or more (9 mm: none; 10 mm: 97 %, tests/test_pneumothorax_flag.py).
#: A thinner rim is not measured; centrilobular and panlobular emphysema, whose air is broken by vessels and septa,
#: do not pass.
PNEUMOTHORAX_RADIUS_MM = 3.0
#: ... in pieces of at least this many mL (the main bronchi inside a lung mask hold 5-9 mL) ...
PNEUMOTHORAX_MIN_ML = 20.0
#: ... that are at least this many times as long (the longest side of their box) as they
#: are thick (twice the deepest point of the air): a sheet along the chest wall, not a round bulla. Measured on
#: normal001 (network's lung mask): sheets of air 8-30 mm thick put along its chest wall, 30-1776 mL, read 5.3-14.8;
#: subpleural bullae of 15-30 mm radius with walls (among centrilobular emphysema and paraseptal cysts, 39 %
#: LAA-950) 1.3-1.7; the six real chests and the COPDGene subject have no piece of 20 mL at the cut of -970 (largest
#: 3.2 mL), nor have the six chests with noise of SD 40 or 80 HU added, at the cut of their trachea (``python
#: scripts/measurement_conditions.py ../shared/data/chest/* --noise 0 40 80``: 0.0 mL each, classical segmenter).
PNEUMOTHORAX_SHEET_RATIO = 3.0
#: ... or, whatever their shape, have at least this share of their surface voxels within 4.5 mm of the mask's edge: a
#: pneumothorax with the lung collapsed fills the hemithorax, as thick as it is long in a short chest (normal001's
#: right lung 85 % air, squeezed to 186 and 147 mm high: ratio 2.7 and 2.5, surface share 0.94, found 97 %); a sheet
#: reads about 0.54, round bullae 0.22-0.33 (a 344 mL giant bulla 0.33).
PNEUMOTHORAX_EDGE_SHARE = 0.5
#: A sheet (by :data:`PNEUMOTHORAX_SHEET_RATIO`) must also have at least this share of its surface within 4.5 mm of
#: the mask's edge: every synthetic pneumothorax had 0.18 or more (a noisy sheet 0.18, sheets 0.47-0.56, loculated
#: pockets 0.38-0.43); the lower lobes' parenchyma at -985 HU (extreme panlobular emphysema) left sheet-shaped pieces
#: of 0.04-0.06 (flagged 353 mL before this), the COPDGene subject's emphysema 0.0.
PNEUMOTHORAX_MIN_EDGE_SHARE = 0.1
#: The pieces found are grown back by this much (mm) into the lung's voxels up to 20 HU above the cut (-950 HU for
#: the cut of -970), raw or box-averaged (noise lifts single voxels of air above it): the box average and the ball
#: trim a sheet's edges. Synthetic pneumothoraces (air at -1000 HU, the cut at -970; scripts/pneumothorax_cases.py)
#: in normal001's lung mask (two reviews, 2026-12-07), found / in the mask: lateral and apical sheets 15 mm deep
#: 95-96 %, anterior 12 mm 86 %, anteromedial 15 mm 91 %, a loculated pocket of 87 mL 97 %, the lung 85 % collapsed
#: 98 %, subpulmonic 15 mm 56 %, 5 mm slices 83 %; with noise of SD 40 / 80 HU (clipped at -1024) 93-94 / 61-69 % (two draws); no voxel
#: outside the air. Not found: a compact pocket of 49 mL (as thick as long, a sixth of its surface at the edge), a
#: left anteromedial sheet of 72 mL along the heart, which the thin lung there breaks into pieces under 20 mL.
PNEUMOTHORAX_GROW_MM = 4.5
#: Header values of ContrastBolusAgent that say "no contrast" (English, and the German, Spanish, Italian and French
#: words sites write: "nativ", "sin contraste", "senza contrasto", "sans injection"; "n", "nein", "non" as the whole
#: value). Underscores are read as spaces (NO_CONTRAST).
NO_CONTRAST = {"", "none", "no", "nil", "n/a", "na", "0", "-", "without", "no contrast", "non contrast",
               "non-contrast", "noncontrast", "nc", "nativ", "native", "plain", "unenhanced", "non enhanced",
               "non-enhanced", "nonenhanced", "n", "nein", "non", "w/o", "wo"}
#: Values that say nobody knows, taken as no contrast: unknown is no agent, and a header that cannot say is treated
#: like an empty one (no CONTRAST flag, no preference against the series in selection); a site that scans with
#: contrast names the agent. A value of punctuation only ("?", "-/-", "--") names nothing either.
UNKNOWN_CONTRAST = {"unknown", "unk", "not known", "unbekannt", "desconocido", "not specified", "unspecified",
                    "nothing", "not applicable", "n.a.", "n.a", "na.", "c-", "pre-contrast", "precontrast",
                    "pre contrast"}
#: A value starting with one of these says nobody knows ("unknown contrast", "not known if given").
_UNKNOWN_START = re.compile(r"(unknown|unk|not known|not specified|unspecified)\b")
#: Words that start a value saying "no contrast" ("NO CONTRAST AGENT", "NONE USED", "ohne KM", "sin contraste", "W/O
#: CONTRAST", "NON CON", "NOT APPLIED"). "non" alone negates only contrast or enhancement: "NON-IONIC CONTRAST" is
#: contrast.
_NEGATION = re.compile(r"(no|none|nil|without|w/?out|w/?o|n/a|ohne|kein\w*|sin|senza|sans|nativ|native|plain|unenhanced|"
                       r"non[- ]?(con|contrast|enhanced)|not (applied|used|given|administered|done))\b")
#: "CONTRAST: NONE", "IV: none", "IV CONTRAST: NOT GIVEN", "IV: 0 ml", "contrast?", "IV: unknown": routes or the word
#: contrast, then a negation, nothing, or not known.
_TRAILING_NEGATION = re.compile(r"((contrast|kontrastmittel|km|agent|iv|i\.v\.?|intravenous|oral|rectal)\W*)+"
                                r"(none|no|nil|n|n/?a|-+|\?+|0+([.,]0*)?\s*(ml|cc)?|unknown|not known|not applicable|"
                                r"not (applied|used|given|administered|done))")
#: Words of a statement that name something other than an agent: "iv line in situ", "10 ML SALINE FLUSH", "oral
#: water", "ORAL: NEGATIVE" (negative oral contrast is water): such a statement says no agent was given.
_NOT_AGENT = re.compile(r"\b(saline|water|line|cannula|access|port|flush|negative|in situ)\b")
#: Where one value holds several statements ("W/O ORAL W/ IV", "not given orally; IV contrast", "non con chest, IV
#: for abdomen"): split at , ; + & "and" "w/" (not "w/o") "with"; a later statement counts only when it names a
#: route or agent (below), so "NON CON CHEST, ABDOMEN" stays no contrast.
_CLAUSES = re.compile(r"[,;+&]|\band\b|\bw/(?!o\b|out\b)|\bwith\b")
#: A later statement that names a route or an agent: contrast unless negated itself.
_ROUTE = re.compile(r"\b(iv|i\.v\.?|intraven\w*|contrast|kontrastmittel|km|agent|oral\w*|rectal\w*|\d+\s*(ml|cc))\b")
#: A volume of nothing: "0", "0 ml", "0.0 cc", "0ml".
_ZERO = re.compile(r"0+([.,]0*)?\s*(ml|cc|cm3)?")
#: Names of contrast agents (generic and brand): a value naming one is contrast even after a negation
#: ("No oral, IV Omnipaque").
_AGENTS = re.compile(r"io(hexol|pamidol|promide|dixanol|meprol|versol|bitridol|xaglate|pentol|xilan)|omnipaque|"
                     r"isovue|ultravist|visipaque|iomeron|imeron|optiray|xenetix|hexabrix|accupaque|solutrast|"
                     r"scanlux|barium|gastrografin|telebrix", re.IGNORECASE)


def has_contrast(agent: str | None) -> bool:
    """Whether a ContrastBolusAgent value names an agent ("none", "no", "n/a", "NO CONTRAST AGENT", "NONE USED",
    "nativ", "W/O", "NON CON", "NOT GIVEN", "0 ml", "-/-", "C-", "CONTRAST: NONE" and the like do not, nor "UNKNOWN"
    or "?": unknown is no agent; "NON-IONIC CONTRAST", "No oral, IV Omnipaque" and "W/O ORAL W/ IV" do: a value of
    several statements is contrast when one of them says a route or agent was given)."""
    text = " ".join((agent or "").replace("_", " ").strip().lower().split())
    if _AGENTS.search(text):
        return True
    if text in NO_CONTRAST or text in UNKNOWN_CONTRAST or _UNKNOWN_START.match(text):
        return False
    clauses = [c.strip() for c in _CLAUSES.split(text)]
    return any(_says_given(c) and (i == 0 or _ROUTE.search(c)) for i, c in enumerate(clauses))


def _says_given(clause: str) -> bool:
    """Whether one statement of a ContrastBolusAgent value says an agent was given (:func:`has_contrast`)."""
    if _TRAILING_NEGATION.fullmatch(clause) or _NOT_AGENT.search(clause):
        return False
    clause = clause.strip(" .:-/")
    if not re.search(r"[^\W_]", clause) or clause in NO_CONTRAST or clause in UNKNOWN_CONTRAST:
        return False  # punctuation only ("?", "-/-"), or a whole-value negation
    return not (_NEGATION.match(clause) or _ZERO.fullmatch(clause) or _TRAILING_NEGATION.fullmatch(clause)
                or _UNKNOWN_START.match(clause))


def noise_hu(hu: np.ndarray, air: np.ndarray) -> float:
    """The image noise of a series (HU): the median, over the air region ``air`` (the air around the patient of
    :func:`measure`), of the standard deviation of the HU in :data:`NOISE_WINDOW` x :data:`NOISE_WINDOW` in-plane
    windows; NaN when fewer than 1000 windows lie wholly in the air.

    Only windows that lie :data:`NOISE_MARGIN` voxels inside the air are taken (none straddles the skin, the
    table, clothing or the field of view's edge), and no flat window (SD under 0.5 HU: the loader's padding, the
    -1000 HU border the resampling adds). At most :data:`NOISE_SLICES` slices, evenly spread, are measured (the
    windows are in-plane, so each slice is measured as in the whole volume).

    Values clipped at the storage floor: air is stored down to -1024 HU on many scanners (unsigned pixels, intercept
    -1024), so where noise is high a share of the air sits at the floor, and its SD reads low (Gaussian noise
    around -1000 HU clipped at -1024: SD 20 reads 18, 40 reads 31, 80 reads 55). They are kept, not left out:
    leaving out the windows that hold a clipped value keeps the windows whose noise happened to be low, and
    leaving out the clipped values alone truncates the distribution further, both reading lower still. On the
    working grid (linear resampling) few values stay exactly at the floor anyway. So a clipped scan's noise_hu is
    a lower bound; :data:`NOISE_MAX_HU` is set low enough to flag ultra-low-dose noise even so. The trachea or
    soft tissue were not taken instead: the trachea is a few hundred voxels at 1.5 mm and needs finding, and soft
    tissue's windows hold fat-muscle edges and vessels (its local SD grows with anatomy, not with noise alone)."""
    size = NOISE_WINDOW + 2 * NOISE_MARGIN
    step = max(1, -(-hu.shape[0] // NOISE_SLICES))
    zs = slice(step // 2, None, step)
    region = air[zs]
    if region.sum() < 1000:
        return math.nan
    inside = ndi.uniform_filter(region.astype(np.float32), (1, size, size), mode="constant") > 1.0 - 1e-3
    x = hu[zs].astype(np.float32) + 1000.0  # (centred on air: float32 keeps x**2 - mean**2 to 0.01 HU**2)
    mean = ndi.uniform_filter(x, (1, NOISE_WINDOW, NOISE_WINDOW))
    var = ndi.uniform_filter(x * x, (1, NOISE_WINDOW, NOISE_WINDOW))[inside] - mean[inside] ** 2
    values = var[var >= 0.25]  # (SD 0.5 HU)
    return _round(math.sqrt(float(np.median(values)))) if values.size >= 1000 else math.nan


def contrast_limit(m: dict[str, Any]) -> float:
    """The mediastinum_hu above which CONTRAST_SUSPECTED is flagged: :data:`CONTRAST_SUSPECTED_HU`, plus the noise
    (``noise_hu``) beyond :data:`CONTRAST_NOISE_HU`."""
    noise = m.get("noise_hu", math.nan)
    return CONTRAST_SUSPECTED_HU + (max(0.0, noise - CONTRAST_NOISE_HU) if math.isfinite(noise) else 0.0)


def metal_ml(hu: np.ndarray, voxel_ml: float) -> float:
    """mL at :data:`METAL_HU` or more. The pipeline measures it on the CT's own grid: on the 1.5 mm working grid a 1 mm
    lead (0.2 mL at 3000 HU) averaged below the limit and read 0 (an ICU audit); the six real chests of ../shared/data
    read 0-0.03 mL on their own grids, ricord_covid_419639 1.2 mL (0.8 on the working grid)."""
    return round(float(np.count_nonzero(hu >= METAL_HU)) * voxel_ml, 2)


def low_attenuation_pct(hu: np.ndarray, lungs: np.ndarray) -> float:
    """%LAA-950: the percentage of the lung mask below :data:`LAA_HU` (emphysema, bullae, air trapping on expiration);
    NaN without lung. Measure it on the CT's own grid: resampling to a coarser grid averages the low voxels away
    (cap001: 3.8 % on its 0.6 mm grid, 2.4 % on the 1.5 mm working grid)."""
    n = int(np.count_nonzero(lungs))
    if n == 0:
        return math.nan
    return round(100.0 * float(np.count_nonzero(hu[lungs > 0] < LAA_HU)) / n, 2)


def mediastinum_hu(hu: np.ndarray, lungs: np.ndarray, body: np.ndarray, voxel_ml: float) -> float:
    """The upper quartile (75th percentile) of the HU of the mediastinal soft tissue, the heart and great vessels
    (HU); NaN with less than :data:`MEDIASTINUM_MIN_ML` of it (one lung or none found, a scan of the apices only).

    Measured in the slices of the lungs' middle third (the heart, the pulmonary trunk, the ascending aorta), in
    each row where both lungs are (``lungs``: 1 right, 2 left), between the right lung's last voxel and
    the left lung's first (:func:`segmentation.classical.mediastinum`; the ribs lie outside), over the front
    :data:`MEDIASTINUM_FRONT_FRACTION` of the lungs' front-to-back extent in that slice (the spine lies behind it),
    2 voxels away from the lungs, inside ``body``, on the HU smoothed over 3 x 3 x 3 voxels (noise moves the
    quartile otherwise: SD 55 HU raised it by up to 40 HU) and within :data:`MEDIASTINUM_RANGE` (fat and air out).
    The upper quartile rather than the median: the heart's wall and the pericardium, the oesophagus and lymph nodes
    stay near 40 HU (myocardium enhances to about 100) and may be half of the region, so the median of an
    enhanced chest can stay low, while the blood fills the upper half of the values."""
    from segmentation.classical import mediastinum

    lung = lungs > 0
    zs = np.flatnonzero(lung.any(axis=(1, 2)))
    if zs.size < 3:
        return math.nan
    z0 = zs[0] + (zs[-1] + 1 - zs[0]) // 3
    z1 = zs[0] + 2 * (zs[-1] + 1 - zs[0]) // 3
    sub = lungs[z0:z1]
    region = mediastinum(sub) & body[z0:z1]
    if not region.any():
        return math.nan
    rows = (sub > 0).any(axis=2)  # (z, y): the lungs' front-to-back extent in each slice
    ny = sub.shape[1]
    seen = rows.any(axis=1)
    front = np.where(seen, np.argmax(rows, axis=1), ny)
    back = np.where(seen, ny - 1 - np.argmax(rows[:, ::-1], axis=1), -1)
    y = np.arange(ny)
    region &= (y[None, :] <= (front + MEDIASTINUM_FRONT_FRACTION * (back - front))[:, None])[..., None]
    if not region.any():
        return math.nan
    ys, xs = np.flatnonzero(region.any(axis=(0, 2))), np.flatnonzero(region.any(axis=(0, 1)))
    box = (slice(None), slice(max(ys[0] - 3, 0), ys[-1] + 4), slice(max(xs[0] - 3, 0), xs[-1] + 4))
    region = region[box] & ~ndi.binary_dilation(sub[box] > 0, iterations=2)
    smooth = ndi.uniform_filter(hu[z0:z1][box].astype(np.float32), 3)
    values = smooth[region & (smooth >= MEDIASTINUM_RANGE[0]) & (smooth <= MEDIASTINUM_RANGE[1])]
    if values.size * voxel_ml < MEDIASTINUM_MIN_ML:
        return math.nan
    return _round(np.percentile(values, 75))


def slice_jump_ratio(hu: np.ndarray, lungs: np.ndarray, spacing_zyx: tuple[float, float, float],
                     lesions: np.ndarray | None = None) -> float:
    """How far the change between two adjacent slices departs from that of the slices around them, in all of the
    lungs at once. Each lung (``lungs``: 1 right, 2 left; a mask of one label or of one lung is one lung), dilated
    :data:`MOTION_MARGIN_MM` in plane, is cut into its front and back half (of its front-to-back extent in the two
    slices); in each part, the mean squared HU difference (HU clipped to -1000..200) of each pair of adjacent
    slices, outside ``lesions`` (and 2 pixels around them), is divided by the median of that of the
    :data:`MOTION_NEIGHBOURS` pairs on either side. A pair's spike is its smallest ratio over the parts (breathing
    moves the whole slice; a lesion, vessel or the dome starting moves one part), its dip the largest (identical or
    z-blurred slices change less everywhere), over the pairs where every part is measured. Returns the largest spike
    or the inverse of the smallest dip, whichever is larger (1000: identical slices); NaN with too few lung slices.
    Measured in plane on every second pixel where pixels are under 1 mm, slice by slice (a 600 x 512 x 512 series
    needs a few MB)."""
    zs = np.flatnonzero(lungs.any(axis=(1, 2)))
    if zs.size == 0:
        return math.nan
    k0, k1 = int(zs[0]) + MOTION_EDGE_SLICES, int(zs[-1]) - MOTION_EDGE_SLICES
    if k1 - k0 < 2 * MOTION_NEIGHBOURS + 2:
        return math.nan
    step = 2 if min(spacing_zyx[1], spacing_zyx[2]) < 1.0 else 1
    r = max(1, int(round(MOTION_MARGIN_MM / (spacing_zyx[1] * step))))
    sides = (1, 2)

    def one_slice(k: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray | None]:
        lab = lungs[k, ::step, ::step]
        near = [ndi.maximum_filter((lab == side).view(np.uint8), size=2 * r + 1) > 0 for side in sides]
        lesion = None
        if lesions is not None:
            lesion = ndi.maximum_filter((lesions[k, ::step, ::step] > 0).view(np.uint8), size=5) > 0
        return np.clip(hu[k, ::step, ::step], -1000, 200).astype(np.float32), near, lesion

    n_parts = 2 * len(sides)
    energy = np.full((n_parts, k1 - k0), np.nan)
    previous = one_slice(k0)
    y = np.arange(previous[0].shape[0])[:, None]
    for i, k in enumerate(range(k0, k1)):
        current = one_slice(k + 1)
        d2 = np.square(current[0] - previous[0])
        keep = np.ones(d2.shape, bool) if lesions is None else ~(previous[2] | current[2])
        for s, (before, after) in enumerate(zip(previous[1], current[1])):
            roi = (before | after) & keep
            rows = np.flatnonzero(roi.any(axis=1))
            if rows.size < 2:
                continue
            mid = (rows[0] + rows[-1]) / 2.0
            for j, part in enumerate((roi & (y <= mid), roi & (y > mid))):
                if np.count_nonzero(part) >= 50:
                    energy[2 * s + j, i] = float(d2[part].mean())
        previous = current
    ratios = np.full(energy.shape, np.nan)
    for k in range(energy.shape[1]):
        around = np.concatenate([energy[:, max(k - MOTION_NEIGHBOURS, 0):k], energy[:, k + 1:k + 1 + MOTION_NEIGHBOURS]],
                                axis=1)
        for part in range(n_parts):
            values = around[part][np.isfinite(around[part])]
            if np.isfinite(energy[part, k]) and values.size >= 3 and np.median(values) > 0:
                ratios[part, k] = energy[part, k] / float(np.median(values))
    # the parts of the lungs there: measured in at least half of the slice pairs (a lung not found, or a few stray
    # voxels labelled as it, is no part); the pairs where all of them are measured
    parts = np.isfinite(energy).mean(axis=1) >= 0.5
    if not parts.any():
        return math.nan
    ratios = ratios[parts]
    seen = np.isfinite(ratios).all(axis=0)
    if not seen.any():
        return math.nan
    spike = float(np.nanmin(ratios[:, seen], axis=0).max())
    dip = float(np.nanmax(ratios[:, seen], axis=0).min())
    return round(max(spike, 1.0 / max(dip, 0.001)), 2)  # (identical slices: 1000)


def dependent_gradient_hu(hu: np.ndarray, lungs: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """The front-to-back density gradient of the lungs that is there in most slices (HU): in each slice and lung
    (of at least 2 cm2), the median HU of its back third (its own front-to-back extent) minus that of its front third,
    over the lung voxels from -1000 to -200 HU (vessels and consolidation out); the 25th percentile over slices and
    lungs. Gravity makes a supine patient's dependent lung denser (dependent atelectasis, poor inspiration), in every
    slice; pneumonia is patchier and moves the lower quartile less (ricord_covid_419639's posterior COVID-19: 58 HU,
    its volume-weighted mean 134). The image is in LPS: "back" is the patient's back, which is dependent only when
    the patient lies supine. NaN with too little lung."""
    ny = hu.shape[1]
    y = np.arange(ny)[:, None]
    min_pixels = 200.0 / (spacing_zyx[1] * spacing_zyx[2])
    values: list[float] = []
    for k in np.flatnonzero(lungs.any(axis=(1, 2))):
        for side in (1, 2):
            m = lungs[k] == side
            if np.count_nonzero(m) < min_pixels:
                continue
            rows = np.flatnonzero(m.any(axis=1))
            front, back = rows[0], rows[-1]
            ok = m & (hu[k] > -1000) & (hu[k] < -200)
            ant = ok & (y <= front + (back - front) / 3.0)
            post = ok & (y >= front + 2.0 * (back - front) / 3.0)
            if np.count_nonzero(ant) > 20 and np.count_nonzero(post) > 20:
                values.append(float(np.median(hu[k][post])) - float(np.median(hu[k][ant])))
    if len(values) < 3:
        return math.nan
    return _round(np.percentile(values, 25))


def airway_air_hu(hu: np.ndarray, airway: np.ndarray | None, spacing_zyx: tuple[float, float, float]) -> float:
    """The median HU of the airway's voxels at least :data:`PNEUMOTHORAX_AIRWAY_DEPTH_MM` from its wall: what air
    reads inside this chest. NaN without an airway or with under :data:`PNEUMOTHORAX_AIRWAY_MIN_VOXELS` such
    voxels."""
    if airway is None or not np.any(airway):
        return math.nan
    sl = _around(airway, [1, 1, 1])  # the distances on the airway's box and one voxel around it: the same, and 1.9
    # -> 0.03 s on the sample's working grid, where the whole grid's distance transform was most of the checks' time
    deep = ndi.distance_transform_edt(np.asarray(airway[sl], bool), sampling=spacing_zyx) > PNEUMOTHORAX_AIRWAY_DEPTH_MM
    if np.count_nonzero(deep) < PNEUMOTHORAX_AIRWAY_MIN_VOXELS:
        return math.nan
    return _round(np.median(hu[sl][deep]))


def _around(mask: np.ndarray, margin: Sequence[int]) -> tuple[slice, ...]:
    """The bounding box of ``mask``'s voxels grown by ``margin`` voxels per axis (within the array): a distance
    transform of the voxels, or a dilation by up to ``margin`` - 1 voxels, is the same on it as on the whole array
    (the layer around the box is empty, and the box is convex)."""
    idx = [np.flatnonzero(np.asarray(mask).any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
           for axis in range(mask.ndim)]
    return tuple(slice(max(0, int(i[0]) - m), min(n, int(i[-1]) + 1 + m)) for i, m, n in zip(idx, margin, mask.shape))


def pneumothorax_cut_hu(air_hu: float | None) -> float:
    """The box-averaged HU below which lung is taken as air (:data:`PNEUMOTHORAX_HU` and what follows it)."""
    if air_hu is None or not math.isfinite(air_hu):
        return PNEUMOTHORAX_HU
    return float(np.clip(air_hu + PNEUMOTHORAX_AIR_MARGIN_HU, *PNEUMOTHORAX_CUT_RANGE))


def pneumothorax_mask(hu: np.ndarray, lungs: np.ndarray, spacing_zyx: tuple[float, float, float],
                      air_hu: float | None = None, airway: np.ndarray | None = None) -> np.ndarray:
    """The lung mask's voxels that are a sheet of air along its edge (``PNEUMOTHORAX_SUSPECT``), per lung (labels 1
    and 2): the mask's voxels below the cut (:func:`pneumothorax_cut_hu` of ``air_hu``, the trachea's air:
    :func:`airway_air_hu`; -970 without it) after a box average of about 4.5 mm, less the ``airway`` and 3 mm around
    it (an edited mask can hold the trachea), opened by a ball of :data:`PNEUMOTHORAX_RADIUS_MM`; of the pieces, those
    of :data:`PNEUMOTHORAX_MIN_ML` or more that are :data:`PNEUMOTHORAX_SHEET_RATIO` times as long as thick with
    :data:`PNEUMOTHORAX_MIN_EDGE_SHARE` of their surface within 4.5 mm of the mask's edge, or have
    :data:`PNEUMOTHORAX_EDGE_SHARE` of it there; grown back by :data:`PNEUMOTHORAX_GROW_MM` into the lung's voxels
    20 HU above the cut or lower (-950 for -970; raw or box-averaged), never into the airway's 3 mm. Meant for the 1.5 mm working grid (any spacing
    works; on 4 mm voxels the box average blurs thin sheets away)."""
    from segmentation.classical import ball

    spacing = tuple(float(s) for s in spacing_zyx)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out = np.zeros(lungs.shape, bool)
    boxes = ndi.find_objects(np.asarray(lungs, np.uint8))
    box = [max(1, int(round(4.5 / s))) for s in spacing]
    near = [int(math.ceil(4.5 / s)) + 1 for s in spacing]
    cut = pneumothorax_cut_hu(air_hu)
    not_airway = _not_airway(airway, lungs.shape, spacing)
    for side in (1, 2):
        if side > len(boxes) or boxes[side - 1] is None:
            continue
        sl = tuple(slice(max(0, b.start - n), b.stop + n) for b, n in zip(boxes[side - 1], near))
        m = lungs[sl] == side
        smooth = ndi.uniform_filter(hu[sl].astype(np.float32), size=box, mode="nearest")
        air = m & (smooth < cut)
        if not_airway is not None:
            air &= not_airway[sl]
        if np.count_nonzero(air) * voxel_ml < PNEUMOTHORAX_MIN_ML:
            continue
        pieces, n = ndi.label(ndi.binary_opening(air, ball(PNEUMOTHORAX_RADIUS_MM, spacing)))
        sizes = np.bincount(pieces.ravel(), minlength=n + 1) * voxel_ml
        big = [i for i in range(1, n + 1) if sizes[i] >= PNEUMOTHORAX_MIN_ML]
        if not big:
            continue
        depth = ndi.distance_transform_edt(air, sampling=spacing)  # mm to the nearest voxel that is not air
        edge = ndi.binary_dilation(~m, ball(4.5, spacing))
        keep = np.zeros(m.shape, bool)
        found = ndi.find_objects(pieces)
        for i in big:
            piece = pieces[found[i - 1]] == i
            length = max((b.stop - b.start) * s for b, s in zip(found[i - 1], spacing))
            thickness = 2.0 * float(depth[found[i - 1]][piece].max())
            surface = piece & ~ndi.binary_erosion(piece)
            share = float(edge[found[i - 1]][surface].mean())  # of its surface against the mask's edge
            if ((length >= PNEUMOTHORAX_SHEET_RATIO * thickness and share >= PNEUMOTHORAX_MIN_EDGE_SHARE)
                    or share >= PNEUMOTHORAX_EDGE_SHARE):
                keep[found[i - 1]] |= piece
        if keep.any():
            keep = (ndi.binary_dilation(keep, ball(PNEUMOTHORAX_GROW_MM, spacing)) & m
                    & ((hu[sl] < cut + 20.0) | (smooth < cut + 20.0)))
            if not_airway is not None:  # growing back stops short of the airway too (it once reached 4.5 mm into it)
                keep &= not_airway[sl]
            out[sl] |= keep
    return out


def _not_airway(airway: np.ndarray | None, shape: tuple[int, ...], spacing: tuple[float, float, float]
                ) -> np.ndarray | None:
    """False on the airway and 3 mm around it (dilated on the airway's box only: the same as on the whole grid), True
    elsewhere; None without an airway."""
    from segmentation.classical import ball

    if airway is None or not np.any(airway):
        return None
    ring = ball(3.0, spacing)
    sl = _around(airway, [r // 2 + 1 for r in ring.shape])
    out = np.ones(shape, bool)
    out[sl] = ~ndi.binary_dilation(np.asarray(airway[sl], bool), ring)
    return out


def pneumothorax_ml(hu: np.ndarray, lungs: np.ndarray, spacing_zyx: tuple[float, float, float],
                    airway: np.ndarray | None = None) -> dict[str, float]:
    """``pneumothorax_ml_right`` and ``pneumothorax_ml_left``: the mL of each lung mask in :func:`pneumothorax_mask`
    (0.0 with none; at least that much: thinner parts, noise and subpulmonic air are undercounted), and
    ``airway_air_hu``, the trachea's air that set the cut (:func:`airway_air_hu`; NaN: the cut of -1000 HU air).
    0.04-0.11 s a scan on the six real chests' working grids on 2 cores (median of 3; the trachea's distances on the
    whole grid had cost 0.4-2.7 s more, until 2026-12-07); 0.5-1.1 s with a large pneumothorax or emphysema."""
    return pneumothorax(hu, lungs, spacing_zyx, airway)[0]


def pneumothorax(hu: np.ndarray, lungs: np.ndarray, spacing_zyx: tuple[float, float, float],
                 airway: np.ndarray | None = None) -> tuple[dict[str, float], np.ndarray]:
    """:func:`pneumothorax_ml`'s measures and the mask they count (bool, ``hu``'s grid; the pipeline outlines it in
    qc.png)."""
    air = airway_air_hu(hu, airway, spacing_zyx)
    sheet = pneumothorax_mask(hu, lungs, spacing_zyx, air_hu=air, airway=airway)
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    return {**{f"pneumothorax_ml_{name}": round(float(np.count_nonzero(sheet & (lungs == side))) * voxel_ml, 1)
               for side, name in ((1, "right"), (2, "left"))}, "airway_air_hu": air}, sheet


def measure(hu: np.ndarray, lungs: np.ndarray, lesions: np.ndarray, voxel_ml: float,
            body: np.ndarray | None = None, padding: np.ndarray | None = None) -> dict[str, Any]:
    """The HU measures of one series on one grid: ``air_hu`` (median of the air around the patient), ``tissue_hu``
    (median of the body's soft tissue and bone outside the lungs, -200 HU and up), ``healthy_lung_hu`` (mean of the
    lung outside the lesions), ``metal_ml``, ``noise_hu`` (:func:`noise_hu`), ``mediastinum_hu``
    (:func:`mediastinum_hu`); NaN where there is nothing to measure. ``body``: the body mask above -500 HU
    (:func:`segmentation.classical.body_mask`), made here when not given. ``padding``: the loader's mask of the
    pixels outside the field of view, on the same grid: set to exactly -1000 HU, they are no measure of the air.
    The lungs are never "air around the patient" (a field of view that cuts the chest wall leaves the body's
    outline open, and its lungs outside the filled body)."""
    from segmentation.classical import body_mask

    body = body_mask(hu, -500.0) if body is None else body
    outside = ~body & (lungs == 0) & (hu >= -1200) & (hu <= -500)
    if padding is not None:
        outside &= ~padding
    inside = body & (lungs == 0) & (hu >= -200) & (hu < METAL_HU)
    healthy = (lungs > 0) & ~lesions
    return {
        "air_hu": _round(np.median(hu[outside])) if outside.sum() >= 1000 else math.nan,
        "tissue_hu": _round(np.median(hu[inside])) if inside.sum() >= 1000 else math.nan,
        "healthy_lung_hu": _round(hu[healthy].mean()) if healthy.sum() >= 1000 else math.nan,
        "metal_ml": metal_ml(hu, voxel_ml),  # (the pipeline replaces it by the CT's own grid's: pipeline.run)
        "noise_hu": noise_hu(hu, outside),
        "mediastinum_hu": mediastinum_hu(hu, lungs, body, voxel_ml),
    }


def _round(v: Any) -> float:
    return round(float(v), 1)


def flags_for(m: dict[str, Any], contrast_agent: str | None = None, slice_thickness_mm: float | None = None
              ) -> list[str]:
    """The QC flags (module docstring) of the measures of :func:`measure` and two header values."""
    flags = []
    air, tissue = m.get("air_hu", math.nan), m.get("tissue_hu", math.nan)
    off_air = math.isfinite(air) and not AIR_RANGE[0] <= air <= AIR_RANGE[1]
    off_tissue = math.isfinite(tissue) and not TISSUE_RANGE[0] <= tissue <= TISSUE_RANGE[1]
    if off_air or off_tissue:
        flags.append(f"HU_CALIBRATION:{_text(air)}/{_text(tissue)}")
    lung = m.get("healthy_lung_hu", math.nan)
    if math.isfinite(lung) and lung > DENSE_LUNG_HU:
        flags.append(f"DENSE_LUNG:{lung:.0f}")
    if m.get("metal_ml", 0.0) >= METAL_MIN_ML:
        flags.append(f"METAL:{m['metal_ml']:.1f}")
    if has_contrast(contrast_agent):  # (oral contrast too: still an agent the header names)
        flags.append("CONTRAST")
    elif math.isfinite(m.get("mediastinum_hu", math.nan)) and m["mediastinum_hu"] > contrast_limit(m):
        flags.append(f"CONTRAST_SUSPECTED:{m['mediastinum_hu']:.0f}")  # (the header says nothing: the image does)
    t = slice_thickness_mm
    if t is not None and math.isfinite(float(t)) and float(t) > THICK_SLICE_MM:
        flags.append(f"THICK_SLICES:{float(t):g}")
    laa = m.get("laa950_pct", math.nan)
    if math.isfinite(laa) and laa >= LOW_ATTENUATION_PCT:
        flags.append(f"LOW_ATTENUATION:{laa:.0f}")
    noise = m.get("noise_hu", math.nan)
    if math.isfinite(noise) and noise > NOISE_MAX_HU:
        flags.append(f"NOISY:{noise:.0f}")
    jump = m.get("slice_jump_ratio", math.nan)
    if math.isfinite(jump) and jump > MOTION_RATIO:
        flags.append(f"MOTION_SUSPECT:{jump:.1f}")
    sheet = sum(v for v in (m.get("pneumothorax_ml_right", 0.0), m.get("pneumothorax_ml_left", 0.0))
                if isinstance(v, (int, float)) and math.isfinite(v))
    if sheet >= PNEUMOTHORAX_MIN_ML:
        flags.append(f"PNEUMOTHORAX_SUSPECT:{sheet:.0f}")
    gradient = m.get("dependent_gradient_hu", math.nan)
    if math.isfinite(gradient) and gradient > DEPENDENT_GRADIENT_HU:
        flags.append(f"DEPENDENT_DENSITY:{gradient:.0f}")
    return flags


def _text(v: float) -> str:
    return f"{v:.0f}" if math.isfinite(v) else "nan"
