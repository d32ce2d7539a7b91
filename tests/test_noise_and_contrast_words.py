"""Two audits. Noise: ctscore measured no image noise, and with ultra-low-dose noise (added SD 80 HU) the default
segmenter scored a normal subject six-zone 2 / CT-1 without a QC flag; now ``noise_hu`` (median local SD of the air
around the patient) is in result.json's hu_check and ``NOISY:<HU>`` flags it. Contrast: "no contrast" words ("W/O",
"NON CON", "NOT GIVEN", "0 ml", "-/-", ...) were read as an agent, flagged CONTRAST and made selection take the CTPA
of a study; unknown ("UNKNOWN", "?") is no agent either."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from pipeline import hu_checks
from pipeline.flags import FLAG_UNITS, SCORING_FLAGS, explain, unit_of
from pipeline.hu_checks import NOISE_MAX_HU, flags_for, has_contrast, measure, noise_hu
from tests.conftest import require

VOXEL_ML = 0.008


def _chest(noise_sd: float = 15.0, correlated: bool = False, seed: int = 0):
    """Air around an elliptic body with two lungs (2 mm voxels), plus noise of this SD: (hu, lungs, lesions)."""
    z, y, x = np.mgrid[0:40, 0:128, 0:128]
    hu = np.full((40, 128, 128), -1000.0)
    body = ((y - 64) / 50.0) ** 2 + ((x - 64) / 60.0) ** 2 < 1
    hu[body] = 40.0
    lungs = np.zeros(hu.shape, np.uint8)
    for label, cx in ((1, 40), (2, 88)):
        lungs[((y - 60) / 30.0) ** 2 + ((x - cx) / 17.0) ** 2 < 1] = label
    hu[lungs > 0] = -850.0
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(hu.shape)
    if correlated:  # CT-like: smoothed in-plane (the audit's noise), rescaled to the SD asked for
        noise = ndi.gaussian_filter(noise, (0, 1.0, 1.0))
        noise /= noise.std()
    return hu + noise_sd * noise, lungs, np.zeros(hu.shape, bool)


@pytest.mark.parametrize("sd", [10.0, 20.0, 40.0, 80.0])
def test_noise_hu_reads_the_noise_of_the_air(sd):
    hu, lungs, les = _chest(sd)
    m = measure(hu, lungs, les, VOXEL_ML)
    assert m["noise_hu"] == pytest.approx(sd, rel=0.1), m  # (a 5 x 5 sample SD: a little under the SD)


def test_ultra_low_dose_noise_is_flagged_and_normal_noise_is_not():
    for sd, flagged in ((15.0, False), (30.0, False), (60.0, True), (80.0, True), (120.0, True)):
        hu, lungs, les = _chest(sd, correlated=True)
        m = measure(hu, lungs, les, VOXEL_ML)
        flags = [f for f in flags_for(m) if f.startswith("NOISY")]
        assert flags == ([f"NOISY:{m['noise_hu']:.0f}"] if flagged else []), (sd, m)


def test_noisy_flag_format_and_limit():
    assert flags_for({"noise_hu": 72.4}) == ["NOISY:72"]
    assert flags_for({"noise_hu": NOISE_MAX_HU}) == []  # over the limit, not at it
    assert flags_for({"noise_hu": math.nan}) == [] and flags_for({}) == []
    assert flags_for({"noise_hu": 72.4}, "OMNIPAQUE", 8.0) == ["CONTRAST", "THICK_SLICES:8", "NOISY:72"]


def test_noise_is_not_the_skin_the_padding_or_a_flat_border():
    """Windows straddling the skin would read the body's edge (1000 HU steps) as noise; the loader's padding (exactly
    -1000 HU, masked: left out) and the resampling's border are flat: each would pull the median away from the
    noise."""
    hu, lungs, les = _chest(20.0)
    ref = measure(hu, lungs, les, VOXEL_ML)["noise_hu"]
    pad = np.zeros(hu.shape, bool)
    pad[:, :, :10] = pad[:, :, -10:] = pad[:, :10, :] = pad[:, -10:, :] = True
    padded = np.where(pad, -1000.0, hu)
    assert measure(padded, lungs, les, VOXEL_ML, padding=pad)["noise_hu"] == pytest.approx(ref, abs=1.0)
    # a flat square (padding, the resampling's border) with no mask: its windows are left out, not read as 0 HU
    assert measure(padded, lungs, les, VOXEL_ML)["noise_hu"] > 0.8 * ref
    # a noiseless chest: the skin's edge is not noise (no window lies across it)
    hu0, _, _ = _chest(0.0)
    assert math.isnan(measure(hu0, lungs, les, VOXEL_ML)["noise_hu"])  # flat air everywhere: nothing to measure
    assert ref < 22  # (the skin's 1000 HU step in a window would read hundreds)


def test_too_little_air_is_nan():
    hu, lungs, les = _chest(20.0)
    tight = (slice(None), slice(30, 98), slice(24, 104))  # a field of view inside the body: no air around it
    assert math.isnan(measure(hu[tight], lungs[tight], les[tight], VOXEL_ML)["noise_hu"])
    assert math.isnan(noise_hu(hu, np.zeros(hu.shape, bool)))


def test_air_clipped_at_the_storage_floor_still_flags_ultra_low_dose_noise():
    """Stored down to -1024 HU (unsigned pixels, intercept -1024): SD 80 HU around -1000 puts 38 % of the air at
    the floor, and the SD reads low (a lower bound), still over the limit."""
    hu, lungs, les = _chest(80.0, correlated=True)
    m = measure(np.maximum(hu, -1024.0), lungs, les, VOXEL_ML)
    assert 40 < m["noise_hu"] < 80 and any(f.startswith("NOISY:") for f in flags_for(m)), m
    hu, lungs, les = _chest(20.0, correlated=True)  # normal noise, clipped: not flagged
    assert not any(f.startswith("NOISY") for f in flags_for(measure(np.maximum(hu, -1024.0), lungs, les, VOXEL_ML)))


def test_noisy_is_explained_with_its_unit():
    assert "NOISY" in SCORING_FLAGS and explain("NOISY:72").startswith("the image noise")
    assert FLAG_UNITS["NOISY"] == "HU" and unit_of("NOISY:72") == "HU"
    assert "NOISY:<HU>" in hu_checks.__doc__ and "NOISE_MAX_HU" in hu_checks.__doc__


def _working_grid_hu(series_dir, noise_sd: float = 0.0):
    """A real series on the working grid (as pipeline.run.analyse_volume makes it), with CT-like noise added before
    the resampling (the audit's: smoothed in-plane, sigma 1 px, rescaled to this SD): (hu, padding)."""
    import SimpleITK as sitk

    from pipeline.config import resolve_config
    from pipeline.loading import load_series
    from pipeline.resample import resample_to_spacing, to_lps

    cfg = resolve_config({"segmentation": {"method": "classical"}})
    vol = load_series(sorted(series_dir.glob("*.dcm")), cfg)
    image = vol.image
    if noise_sd:
        base = sitk.GetArrayFromImage(image)
        noise = ndi.gaussian_filter(np.random.default_rng(0).standard_normal(base.shape).astype(np.float32),
                                    (0, 1.0, 1.0))
        noisy = base + noise * (noise_sd / noise.std())
        if vol.padding_mask is not None:
            noisy = np.where(sitk.GetArrayFromImage(vol.padding_mask) > 0, base, noisy)
        image = sitk.GetImageFromArray(noisy.astype(np.float32))
        image.CopyInformation(vol.image)
    work = resample_to_spacing(to_lps(image), cfg["resample"]["spacing_mm"])
    pad = None if vol.padding_mask is None else sitk.GetArrayFromImage(sitk.Resample(
        to_lps(vol.padding_mask), work, sitk.Transform(), sitk.sitkNearestNeighbor, 0)) > 0
    return sitk.GetArrayFromImage(work), pad


def test_the_audits_normal_subject_with_ultra_low_dose_noise_is_flagged(shared_data):
    """normal001 (real noise, soft kernel) is not flagged; with added noise SD 80 HU (scored six-zone 2 / CT-1 by the
    default segmenter, no flag) it is; SD 40 (no false lesion) is not. Lungs: inside the body's outline here."""
    series = require(shared_data / "chest" / "normal001")
    for sd, flagged in ((0.0, False), (40.0, False), (80.0, True)):
        hu, pad = _working_grid_hu(series, sd)
        m = measure(hu, np.zeros(hu.shape, np.uint8), np.zeros(hu.shape, bool), 0.003375, padding=pad)
        assert any(f.startswith("NOISY:") for f in flags_for(m)) is flagged, (sd, m["noise_hu"])


# --- "no contrast" words ---------------------------------------------------------------------------------------

NOT_CONTRAST = ["W/O", "w/o contrast", "W/O CONTRAST", "NON CON", "NONCON", "NON-CON", "NO_CONTRAST", "N", "Nein",
                "Non", "NOT APPLIED", "NOT USED", "NOT GIVEN", "0 ml", "0", "0.0 cc", "0ml", "-/-", "--",
                "UNKNOWN", "unknown", "?", "none", "NONE", "", None, " none ", "NO", "n/a", "Non-contrast",
                "NO CONTRAST AGENT", "None used", "non-enhanced", "without contrast", "NATIV", "ohne KM",
                "sin contraste", "senza contrasto", "sans injection", "noncontrast", "kein KM"]
CONTRAST = ["Iohexol", "APPLIED", "ORAL", "Visipaque 320", "NON-IONIC CONTRAST", "Non ionic", "NONIONIC",
            "No oral, IV Omnipaque", "Ultravist 370", "OMNIPAQUE 350", "ISOVUE 370", "IV contrast", "CONTRAST", "YES",
            "Y", "100 ml", "80 ML OMNIPAQUE", "Barium sulfate", "Iohexol\\Barium sulfate"]


@pytest.mark.parametrize("agent", NOT_CONTRAST)
def test_no_contrast_words_are_not_contrast(agent):
    assert has_contrast(agent) is False
    assert "CONTRAST" not in flags_for({}, agent)


@pytest.mark.parametrize("agent", CONTRAST)
def test_agents_are_contrast(agent):
    assert has_contrast(agent) is True
    assert "CONTRAST" in flags_for({}, agent)


def test_selection_takes_the_non_contrast_series_named_non_con(tmp_path):
    """The audit: one study, "NON CON" at 2 mm and "ISOVUE 370" at 1 mm: the ISOVUE series won by thin."""
    from tests.test_selection_vendor import _chosen, _study

    uids = _study(tmp_path, {"plain": dict(thickness=2.0, dz=2.0, contrast="NON CON"),
                             "ctpa": dict(thickness=1.0, dz=1.0, n=24, contrast="ISOVUE 370")})
    chosen, stacks = _chosen(tmp_path)
    assert chosen == uids["plain"]
    assert "preferred by noncontrast" in stacks.loc[stacks.series_uid == uids["ctpa"], "reason"].iloc[0]
