"""What each QC flag means, in one line: the tooltips of report.html (the README's QC-flag table says the same).

Loader codes (fixes and warnings of DICOM ingestion) are explained by :mod:`pipeline.dicom_codes`; the flags that
segmentation, scoring and the DICOM-SEG export add are here. A flag may carry a value after a colon
(``LUNG_NOT_FOUND:right``).
"""

from __future__ import annotations

SCORING_FLAGS: dict[str, str] = {
    "PARTIAL_LUNG_COVERAGE": "a lung runs out of the scan's first or last slice: the zones it cannot see are missing",
    "ZONES_MISSING": "at least one six-zone or zhang900 unit is missing: that system's total is empty",
    "ZONE_WITHOUT_LUNG": "this six-zone or zhang900 unit (<lung>_<unit>) holds no lung voxel (the lung ends above or "
                         "below it, or its level lies beyond the lung): it is missing, not a healthy 0, and its "
                         "system's total is empty",
    "SLAB_ABOVE_APEX": "this lung's zhang900 L1 slab (at the suprasternal notch) lies wholly above its apex and holds "
                       "no lung: normal anatomy, scored 0 as a reader of that level scores it (the total is kept)",
    "ZONE_SMALL": "this six-zone zone (<lung>_<unit>) holds less than 5 % of its lung (normal scans: 20 % or more): "
                  "a lung ending near the carina or a misplaced level; its percentage rests on little lung (scored): "
                  "review levels.png",
    "LOBES_MISSING": "a lobe is cut off or absent from the lobe map: the lobar totals are empty",
    "LOBES_NOT_FOUND": "scoring.lobar.lobes_dir holds no lobe map for this series: no lobar scores",
    "LOBES_SIDES_SWAPPED": "the lobe map's right lobes lie on the left lung mask and its left lobes on the right one "
                           "(a mirrored map, lung sides swapped, or a map of another label convention, e.g. "
                           "lungmask's read as ctscore: scoring.lobar.lobe_labels): no lobar scores",
    "LOBES_PARTIAL": "this percentage of a lung lies in no lobe of its side, or in a lobe of the other (over 5 %: a "
                     "misaligned, cropped or shifted lobe map, or another scan's): no lobar scores",
    "LOBE_MAP_FILLED": "this many mL of lesion lay in lung the lobe map left in no lobe (its border, or dense lung "
                       "the lobe model left out) and were given the nearest lobe of their side in their slice "
                       "(scored): review the lobes where it is large",
    "LOBES_UPPER_BELOW_LOWER": "a side's upper lobe lies lower than its lower lobe in the lobe map (upper and lower "
                               "labels swapped): no lobar scores",
    "LUNG_NOT_FOUND": "the segmentation found no lung on this side (a failure, a lung outside the field of view, "
                      "a pneumonectomy): its units, the totals and the whole-scan percentages are missing",
    "LUNG_CUT_BY_FOV": "a lung runs along the edge of the field of view on this percentage of its slices: its "
                       "measures are of the visible part, and zones.csv's peripheral_central rows take the cut edge "
                       "for the chest wall; review",
    "LUNG_SIDES_SWAPPED": "the right lung mask lies left of the left one (segmenter or orientation error): review",
    "LUNG_SIDE_MIXED": "the right and left lung masks touch over this many cm2, over 20 (real lungs meet only along "
                       "the junction lines): one lung labelled in part as the other, a side's volumes and scores "
                       "wrong: review qc.png",
    "ORIENTATION_SUSPECT": "the anatomy contradicts the header's orientation: the spine lies in front of the lungs "
                           "(spine_anterior: a prone scan with a supine header?); sides swapped, scores unreliable. "
                           "Not checked where the body reaches the back of the field of view (the spine may lie "
                           "outside it)",
    "ZONED_AXIALLY": "slices tilted this many degrees from axial: levels found on an axial reformat, zones cut "
                     "voxel by voxel",
    "LANDMARK_ESTIMATED": "a level a detector was meant to find, placed from the others instead: the zones it bounds "
                          "rest on an estimate",
    "LANDMARK_UNCERTAIN": "a dome: a second reading, where the aerated lung ends over a lens of dense tissue the "
                          "lung mask holds under it, lies more than 5 mm higher (the liver's or spleen's dome taken "
                          "in as lung, or consolidation on the diaphragm); a base: aerated tissue under the lung mask "
                          "runs on to the scan's bottom slice (the lung may run out of the scan, its lower zones "
                          "incomplete, or gas under the lung); check it in levels.png",
    "MASKS_FROM_USER": "these masks (lungs, lesions) are the user's edited ones (segmentation.masks_dir, --masks), "
                       "not the segmenter's: the scores are of them",
    "LANDMARK_READER_FAR": "a reader's level lies this many mm from the level ctscore detected (high or medium "
                           "confidence): a slice number or a SliceLocation typed as z? check levels.png (the z it "
                           "prints is the one to give)",
    "LANDMARK_BY_READER": "this level was set by a reader (landmarks.reader_levels, --landmarks), not found by "
                          "ctscore; the levels placed from it (arch, bronchus intermedius, IPV) follow it",
    "BOWEL_GAS_REMOVED": "stomach or colon gas was taken out of this lung mask",
    "LESION_OFF_LUNG_REMOVED": "this many mL a plug-in bundle labelled lesion lay more than 5 mm from its lung labels "
                               "and were taken out (a lesion label is lung only beside the lung): review the bundle's "
                               "output",
    "LUNG_OUTSIDE_BODY_REMOVED": "this many mL the segmentation labelled lung lay in the air around the patient "
                                 "(outside the body's outline) and was taken out: review the lung outline",
    "SOLID_LESION": "this many mL of lesion lie in pieces of solid soft tissue without any air or ground glass "
                    "(median 0 HU or more): often the heart, a vessel, the liver dome or a pleural effusion taken as "
                    "lung, sometimes a dense consolidation; qc.png shows where (hatched), and its right column shows the densest "
                    "slice and the lung base in a soft-tissue window (W 400 / L 40), where an effusion (water, about "
                    "0-20 HU) is a smooth band along the dependent pleura; check in a viewer (scores include them)",
    "LUNG_NOT_AERATED": "this side's lung mask is under 10 % aerated (below -500 HU): a pneumonectomy or a lung "
                        "collapsed or replaced by effusion taken as consolidated lung, or complete consolidation; "
                        "qc.png shows where, its right column in a soft-tissue window (W 400 / L 40) to tell "
                        "effusion from consolidation; check in a viewer (scored as segmented)",
    "HU_CALIBRATION": "the median HU of the air around the patient / of the body's soft tissue is off (air not "
                      "within -1080 to -920, tissue not within -150 to 100): a wrong rescale slope or intercept, or a "
                      "scanner out of calibration; the HU classes and scores are unreliable",
    "DENSE_LUNG": "the lung outside the lesions has this mean HU, above -700: an expiratory scan, poor inspiration or "
                  "diffuse disease; normal lung reaches the ground-glass band: review",
    "METAL": "this many mL at 2500 HU or more (wires, clips, a pacemaker, electrodes): streaks may be taken as ground "
             "glass; review qc.png",
    "LOW_ATTENUATION": "this % of the lung is below -950 HU (%LAA-950, at least 10 %): emphysema or bullae; pneumonia "
                       "around air cysts is under-segmented",
    "PNEUMOTHORAX_SUSPECT": "at least this many mL of the lung mask are air without vessels (as the trachea's air "
                            "reads), about 1 cm thick or more, in a sheet along its edge (or filling the hemithorax): "
                            "a pneumothorax taken as lung (it enlarges the lung, lowers % opacity and raises the "
                            "well-aerated share); also a giant bulla of that shape, or bowel gas that an edited or "
                            "classical mask holds; result.json's hu_check gives each side (scores not changed; the mL "
                            "is a lower bound: measure the air in a viewer before correcting lung volume or % "
                            "opacity); qc.png outlines the air measured, dotted white, and gives the z where it is "
                            "largest",
    "AIRWAY_NOT_FOUND": "the airway found is this many mL, under 2 (an endotracheal tube filling the trachea or with "
                        "secretions around it, streaks, a scan starting below the carina): the carina and the levels placed from it are estimated",
    "CONTRAST": "the header names a contrast agent: lesion voxels from hu_classes.lesion_max_hu (default 150 HU: "
                "enhanced vessels) are left out, "
                "enhancement below that raises density, enhanced great vessels can be taken for the manubrium (check "
                "the levels picture); the HU bands and the network are of non-contrast CT",
    "CONTRAST_SUSPECTED": "the header names no contrast agent, but the mediastinal soft tissue between the lungs "
                          "(upper quartile of its HU, heart and great vessels, lungs' middle third) reads this many "
                          "HU, over 75 (non-contrast blood 30-60): enhanced blood, a CT angiogram with a blank "
                          "header? The effects of CONTRAST follow (scores not changed): check the series",
    "THICK_SLICES": "slices this many mm thick, over 5 mm: partial volume may look like ground glass",
    "NOISY": "the image noise (median SD of the HU in 5 x 5 windows of the air around the patient, on the working "
             "grid) is this many HU, over 35: ultra-low-dose noise; the liver dome, pericardial fat or noise may be "
             "taken as lesion and voxels move between the HU classes (scores not changed): review qc.png",
    "MOTION_SUSPECT": "two adjacent slices differ this many times more (or less) than the slices around them, over 2 "
                      "(breathing during the scan, a step between acquisitions, repeated or blurred slices): "
                      "doubled or blurred edges of the diaphragm and vessels may be scored as ground glass, lung "
                      "volume and zone levels shift: review qc.png and a coronal view (scores not changed)",
    "DEPENDENT_DENSITY": "the back third of the lungs reads this many HU denser than the front third in most slices, "
                         "over 80: dependent atelectasis or poor inspiration of a supine patient, or "
                         "posterior-predominant disease; such density is scored as ground glass (scores not "
                         "changed): review qc.png. Measured front to back of the image: a prone patient's dependent "
                         "lung, in front, is not measured",
    "DICOM_SEG_FAILED": "the DICOM-SEG (--dicom-seg) could not be made from these images (the log says why): "
                        "scores and NIfTI masks as usual, no seg.dcm",
    "QC_PICTURE_FAILED": "that QC picture (qc.png with thumb.png, or levels.png) could not be drawn (the log says "
                         "why): scores and masks as usual, without the picture; review the scan in a viewer",
}


#: The unit of the value a flag carries after its colon (report.html shows it after the value).
FLAG_UNITS: dict[str, str] = {
    "HU_CALIBRATION": "HU (air / tissue)", "DENSE_LUNG": "HU", "METAL": "mL", "THICK_SLICES": "mm", "NOISY": "HU",
    "CONTRAST_SUSPECTED": "HU",
    "LOW_ATTENUATION": "% of the lung", "AIRWAY_NOT_FOUND": "mL", "MOTION_SUSPECT": "x the neighbouring slices",
    "DEPENDENT_DENSITY": "HU", "PNEUMOTHORAX_SUSPECT": "mL",
    "SOLID_LESION": "mL", "LUNG_OUTSIDE_BODY_REMOVED": "mL", "LESION_OFF_LUNG_REMOVED": "mL",
    "LUNG_CUT_BY_FOV": "% of slices", "LUNG_SIDE_MIXED": "cm2",
    "LOBES_PARTIAL": "% of the lung", "ZONED_AXIALLY": "degrees", "LOBE_MAP_FILLED": "mL",
    "TILT_UNCORRECTED": "degrees",
}


def unit_of(flag: str) -> str:
    """The unit of a flag's value ("DENSE_LUNG:-620" -> "HU"); "" for a flag without a number."""
    name, _, value = flag.partition(":")
    return FLAG_UNITS.get(name.strip(), "") if value.strip() else ""


def explain(flag: str) -> str:
    """The one-line meaning of a QC flag or loader code ("" when unknown)."""
    from pipeline.dicom_codes import CODES

    name = flag.split(":", 1)[0].strip()
    if name in SCORING_FLAGS:
        return SCORING_FLAGS[name]
    code = CODES.get(name)
    return code.meaning if code else ""
