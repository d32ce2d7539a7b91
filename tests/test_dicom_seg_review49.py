"""DICOM-SEG frames of series the loader stacks unresampled though their positions lie off the even grid (an audit of
the masks in world space): positions written to 0.1 mm (0.625 and 1.25 mm slices) and steps of 4.6, 5.0 and 5.4 mm.
Every frame references its source slice and starts where that slice does; at the old 5 % tolerance, 282 of 718
frames of a 0.625 mm series referenced nothing."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from pipeline.dicom_seg import build_seg
from pipeline.loading import load_series
from tests.dicom_factory import write_series
from tests.test_dicom_seg_interop import _masks, _referenced


@pytest.mark.parametrize("positions", [
    [round(-100.0 + 0.625 * k, 1) for k in range(40)],  # 0.625 mm slices written to 0.1 mm
    [round(-100.0 + 1.25 * k, 1) for k in range(30)],  # 1.25 mm: steps 1.2 and 1.3 mm
    [-100.0 + sum((4.6, 5.0, 5.4)[j % 3] for j in range(k)) for k in range(16)],  # steps 4.6, 5.0, 5.4 mm
], ids=["0.625mm-rounded", "1.25mm-rounded", "4.6-5.4mm"])
def test_every_frame_references_the_slice_it_starts_on(tmp_path, positions):
    files = write_series(tmp_path / "ct", len(positions), positions=positions)
    vol = load_series([str(f) for f in files])
    assert "NON_UNIFORM_SPACING_RESAMPLED" not in vol.flags  # stacked as it is, on the even grid
    assert len(vol.files) == len(positions)
    seg = build_seg(vol.files, *_masks(vol), "classical-0123456789abcdef")
    refs = _referenced(seg)
    assert None not in refs and len(set(refs)) == len(positions)
    start = {str(ds.SOPInstanceUID): np.asarray(ds.ImagePositionPatient, float)
             for ds in (pydicom.dcmread(f, stop_before_pixels=True) for f in vol.files)}
    for item, uid in zip(seg.PerFrameFunctionalGroupsSequence, refs):
        frame = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        assert np.allclose(frame, start[uid], atol=1e-3)
