"""Large series on a laptop (a memory audit): the CT is held once while it is scored, and a run with several
workers says beforehand which series need more memory than a worker may use."""

from __future__ import annotations

import gc
import logging

import numpy as np
import pytest

from pipeline import batch
from pipeline.config import load_config
from pipeline.imageio import array_view
from pipeline.loading import estimated_peak_mb


def test_the_ct_is_viewed_not_copied_and_the_view_keeps_its_image():
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.arange(60, dtype=np.float32).reshape(3, 4, 5))
    view = array_view(img)
    assert np.shares_memory(view, sitk.GetArrayViewFromImage(img))
    del img
    gc.collect()
    [np.full(100_000, 7.0) for _ in range(20)]  # memory a dropped image would have given back
    assert view.sum() == sum(range(60)) and view.shape == (3, 4, 5)
    with pytest.raises(ValueError, match="read-only"):
        view[0, 0, 0] = 1.0  # the input is never altered


def test_the_scan_analysis_holds_the_ct_once(tmp_path, monkeypatch):
    """run.py made a second float32 copy of the CT (GetArrayFromImage) for scoring: 2 GB of a 1024 x 1024 x 500
    series' 9.4 GB peak."""
    import SimpleITK as sitk

    from pipeline import run

    copies, views = [], []
    real, real_view = sitk.GetArrayFromImage, sitk.GetArrayViewFromImage

    def counted(im, into=copies, get=real):
        if im.GetPixelID() == sitk.sitkFloat32 and im.GetSize() == (160, 160, 124):  # the CT on its own grid
            into.append(im.GetSize())
        return get(im)

    monkeypatch.setattr(sitk, "GetArrayFromImage", counted)
    monkeypatch.setattr(sitk, "GetArrayViewFromImage", lambda im: counted(im, views, real_view))
    summary = run.run_pipeline("sample_dicoms", tmp_path / "out", {"segmentation": {"method": "classical"},
                                                                   "outputs": {"write_qc_png": False}})
    assert summary["n_ok"] == 1 and copies == [] and views  # the CT was seen, as a view


def _task(name, shape):
    return batch.Task(scan_id=name, series_uid="1." + name, files=["/x"], shape=shape)


def test_series_too_large_for_a_worker_are_named_before_the_run(caplog):
    cfg = load_config()
    todo = [_task("scan-small", (150, 512, 512)), _task("scan-huge", (496, 1024, 1024)), _task("scan-x", (0, 0, 0))]
    with caplog.at_level(logging.WARNING, logger="pipeline.batch"):
        over = batch.warn_memory(todo, cfg, worker_gb=7.6)
    assert list(over) == ["scan-huge"] and 7.5 < over["scan-huge"] < 9
    assert ("1 series need more memory than a worker may use (7.6 GB each; dask stops a worker at 95 %), e.g. "
            "scan-huge (496 x 1024 x 1024 voxels, about") in caplog.text
    caplog.clear()
    assert batch.warn_memory(todo, cfg, worker_gb=0) == {} and not caplog.text  # no limit known
    seg = load_config(overrides=["outputs.write_dicom_seg=true"])
    assert batch._memory_need_gb(todo[1], seg) > batch._memory_need_gb(todo[1], cfg)


def test_the_estimate_follows_the_measured_peak():
    """scripts/benchmark.py --generated 600 (512 x 512 x 600, network): peak RSS 2952 MiB."""
    assert 2800 < estimated_peak_mb(512 * 512 * 600) < 3400


def test_worker_memory_is_read_from_the_scheduler():
    class Client:
        def scheduler_info(self):
            return {"workers": {"a": {"memory_limit": 8 * 2**30}, "b": {"memory_limit": 6 * 2**30},
                                "c": {"memory_limit": 0}}}

    assert batch._worker_memory_gb(Client()) == 6.0


def test_tasks_carry_the_declared_shape(tmp_path):
    from pipeline.inventory import build_inventory

    inv = build_inventory("sample_dicoms")
    (task,) = batch.tasks_for(inv.chosen, load_config())
    assert task.shape == (124, 160, 160)
