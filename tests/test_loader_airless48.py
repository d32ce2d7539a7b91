"""Loader audit 48 (huair): the HU plausibility check and the MONOCHROME1 vote on a field of view that the body
fills with airless lungs (only the airway holds air), and a padding ring read as air through a wrong intercept.
Small pydicom series (tests/dicom_factory.py), each well under a second."""

from __future__ import annotations

import numpy as np
import pydicom
import SimpleITK as sitk

from pipeline.loading import load_series
from tests.dicom_factory import refused, write_series

N = 64


def _airless(pad_ring: bool = False, seed: int = 0) -> np.ndarray:
    """HU of one slice: body (40 +- 15 HU) to the image border, consolidated lungs (-100..40 HU) and a trachea of
    -1000 HU (14 pixels, 0.34 % of the voxels); ``pad_ring``: -3024 outside the reconstruction circle."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:N, 0:N]
    c = (N - 1) / 2
    hu = 40.0 + rng.normal(0, 15, (N, N))
    for cx in (0.3 * N, 0.7 * N):
        m = np.hypot(yy - c, xx - cx) < 0.2 * N
        hu[m] = rng.uniform(-100, 40, m.sum())
    hu[np.hypot(yy - 0.4 * N, xx - c) < 2.1] = -1000.0
    if pad_ring:
        hu[np.hypot(yy - c, xx - c) > 0.5 * N] = -3024.0
    return np.round(hu)


def _edit(files, **values) -> None:
    for f in files:
        ds = pydicom.dcmread(f)
        for k, v in values.items():
            setattr(ds, k, v)
        ds.save_as(f)


def _hu(vol) -> np.ndarray:
    return sitk.GetArrayFromImage(vol.image)


def _body(hu: np.ndarray) -> float:
    """The median of a patch of body between the trachea and the image's top edge."""
    return float(np.median(hu[:, 4:14, 26:38]))


# --- finding 1: airless lungs in a filled field of view are HU (the airway is their air)

def test_airless_lungs_filling_the_field_of_view_load(tmp_path):
    vol = load_series(write_series(tmp_path, 12, size=N, hu=_airless()))
    assert vol.image.GetSize() == (N, N, 12)
    assert abs(_body(_hu(vol)) - 40) < 20


def test_airless_lungs_with_a_padding_ring_load(tmp_path):
    vol = load_series(write_series(tmp_path, 12, size=N, hu=_airless(pad_ring=True)))
    assert "PADDING_MASKED" in vol.flags


def test_airless_lungs_with_a_wrong_intercept_are_still_refused(tmp_path):
    files = write_series(tmp_path, 12, size=N, hu=_airless())
    _edit(files, RescaleIntercept=0)  # every value 1024 HU too high: the trachea reads +24
    assert refused(files).code == "NOT_HU"


def test_scattered_low_voxels_are_not_air(tmp_path):
    """Values 1024 HU off (no air) with 0.1 % isolated voxels at -1000 HU: the 0.02th percentile is 'air', but not
    in a connected region, so the series is still refused."""
    rng = np.random.default_rng(1)

    def per_slice(k, params):
        hu = _airless(seed=k) + 1024
        yy, xx = np.nonzero(np.ones((N // 4, N // 4)))
        pick = rng.choice(yy.size, 5, replace=False)
        hu[4 * yy[pick] + 1, 4 * xx[pick] + 1] = -1000.0  # at least 3 pixels apart: each its own region
        params["hu"] = hu

    files = write_series(tmp_path, 12, size=N, per_slice=per_slice)
    assert refused(files).code == "NOT_HU"


# --- finding 2: the MONOCHROME1 vote on a body that fills the field of view

def test_monochrome1_header_only_body_filling_the_field_of_view_not_inverted(tmp_path):
    """Values as stored are HU (DICOM): read inverted, the body (about -2089 HU) touches the border but is not
    padding, so the inverted reading has no air and the series is not inverted (it was: 0 % opacity, status ok)."""
    files = write_series(tmp_path, 12, size=N, hu=_airless())
    _edit(files, PhotometricInterpretation="MONOCHROME1")
    vol = load_series(files)
    assert "MONOCHROME1_NOT_INVERTED" in vol.flags
    assert abs(_body(_hu(vol)) - 40) < 20


def test_monochrome1_header_only_airless_with_padding_ring_not_inverted(tmp_path):
    files = write_series(tmp_path, 12, size=N, hu=_airless(pad_ring=True))
    _edit(files, PhotometricInterpretation="MONOCHROME1")
    vol = load_series(files)
    assert "MONOCHROME1_NOT_INVERTED" in vol.flags
    assert abs(_body(_hu(vol)) - 40) < 20


def test_monochrome1_stored_inverted_body_filling_the_field_of_view_inverted(tmp_path):
    """The mirror case: values written inverted; as stored the body reads about -2089 HU and the trachea -1049 HU.
    The body is not padding, the inverted reading's airway is air: inverted back to HU."""
    vol = load_series(write_series(tmp_path, 12, size=N, hu=_airless(), photometric="MONOCHROME1"))
    assert "MONOCHROME1_INVERTED" in vol.flags
    assert abs(_body(_hu(vol)) - 40) < 20


def test_monochrome1_stored_inverted_ring_with_lossy_edge_still_inverted(tmp_path):
    """Padding not exactly one value next to its edge (a lossy codec's ringing, +-40 HU over 3 pixels): the vote
    still takes it for padding and inverts an ordinary chest written inverted."""
    from tests.dicom_factory import phantom_slice

    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[0:N, 0:N]
    r = np.hypot(yy - (N - 1) / 2, xx - (N - 1) / 2)

    def per_slice(k, params):
        hu = phantom_slice(N, -2000)
        edge = (r > 0.49 * N) & (r < 0.49 * N + 3)
        hu[edge] += np.round(rng.uniform(-40, 40, edge.sum()))
        params["hu"] = hu

    vol = load_series(write_series(tmp_path, 12, size=N, per_slice=per_slice, photometric="MONOCHROME1"))
    assert "MONOCHROME1_INVERTED" in vol.flags
    hu = _hu(vol)
    assert abs(float(np.median(hu[:, N // 2, N // 2 - 2:N // 2 + 2])) - 40) < 5


# --- finding 3: a constant padding ring read as air through an intercept 1024 HU too high

def test_padding_ring_read_as_air_through_a_wrong_intercept_refused(tmp_path):
    """-2000 outside the field of view, no PixelPaddingValue, RescaleIntercept 0 instead of -1024: the ring reads
    -976 HU (air by value) and the true air +24 HU. One value over the whole border is padding, not air: NOT_HU."""
    from tests.dicom_factory import phantom_slice

    files = write_series(tmp_path, 12, size=N, hu=phantom_slice(N, -2000))
    _edit(files, RescaleIntercept=0)
    err = refused(files)
    assert err.code == "NOT_HU", err


def test_air_at_one_value_around_the_body_still_loads(tmp_path):
    """Air written as exactly -1000 HU around the body (the synthetic phantom): discounted as border padding, the
    lungs remain air and the series loads as before."""
    from tests.dicom_factory import phantom_slice

    vol = load_series(write_series(tmp_path, 12, size=N, hu=phantom_slice(N)))
    assert vol.image.GetSize() == (N, N, 12)
