"""A security reviewer's findings: a link planted in OUT made the run truncate a file elsewhere; a bundle's network
could download weights while built; a lobe map's header could claim gigabytes or point at /dev/zero, and a crafted
SeriesInstanceUID named a file outside the lobe folder; a deflated DICOM inflated to 1 GiB in memory before any
check; header text reached tables and the terminal with control characters, at 100 kB, or as "b'...'"; a config
error printed a YAML alias bomb's whole value."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pydicom
import pytest
import SimpleITK as sitk

from pipeline.errors import CTScoreError


def test_a_link_planted_in_out_is_not_written_through(tmp_path):
    from pipeline.batch import lock_path, writer_lock

    victim = tmp_path / "victim.txt"
    victim.write_text("IMPORTANT")
    out = tmp_path / "out"
    (out / ".status").mkdir(parents=True)
    os.symlink(victim, lock_path(out))  # OUT/.status/.lock -> a file of someone else
    with pytest.raises(CTScoreError) as e:
        with writer_lock(out):
            pass
    assert e.value.code == "OUTPUT_UNWRITABLE" and "symbolic link" in e.value.message
    assert victim.read_text() == "IMPORTANT"
    out2, elsewhere = tmp_path / "out2", tmp_path / "elsewhere"
    out2.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, out2 / ".status")  # the whole status folder
    with pytest.raises(CTScoreError, match="symbolic link"):
        with writer_lock(out2):
            pass
    assert list(elsewhere.iterdir()) == []
    (tmp_path / "out3" / "shards").mkdir(parents=True)
    os.symlink(elsewhere, tmp_path / "out3" / "shards" / "1-of-2")  # a shard's folder
    with pytest.raises(CTScoreError, match="symbolic link"):
        with writer_lock(tmp_path / "out3", "1-of-2"):
            pass
    with writer_lock(tmp_path / "out4"):  # a plain folder: as before
        assert lock_path(tmp_path / "out4").is_file()


@pytest.mark.parametrize("kw", [{"pretrained": True}, {"pretrained_url": "http://127.0.0.1:1/evil.pth"},
                                {"weights": "IMAGENET1K_V1"}])
def test_a_bundle_network_that_downloads_is_refused(tmp_path, kw):
    from segmentation.bundle import BundleError, safe_network_def

    net = {"_target_": "BasicUNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 4, **kw}
    with pytest.raises(BundleError, match="download weights"):
        safe_network_def({"network_def": net}, tmp_path / "inference.json")
    net.update({k: False for k in kw})  # switched off: fine
    assert safe_network_def({"network_def": net}, tmp_path / "inference.json")


def test_lobe_map_headers_are_checked_before_reading(tmp_path):
    from pipeline.run import find_user_lobes
    from scoring.quantify import check_label_map_header, read_label_map

    ct = sitk.Image(64, 64, 40, sitk.sitkInt16)
    zero = tmp_path / "zero.mhd"
    zero.write_text("ObjectType = Image\nNDims = 3\nDimSize = 64 64 40\nElementType = MET_UCHAR\n"
                    "ElementDataFile = /dev/zero\n")
    with pytest.raises(ValueError, match="outside the header's folder"):
        read_label_map(str(zero), ct)
    big = tmp_path / "big.mhd"
    (tmp_path / "big.raw").write_bytes(b"")
    big.write_text("ObjectType = Image\nNDims = 3\nDimSize = 4096 4096 256\nElementType = MET_UCHAR\n"
                   "ElementDataFile = big.raw\n")
    with pytest.raises(ValueError, match="more than a lobe map of this CT can hold"):
        read_label_map(str(big), ct)
    fine = tmp_path / "fine.nii.gz"
    sitk.WriteImage(sitk.Image(64, 64, 40, sitk.sitkUInt8), str(fine))
    check_label_map_header(fine, ct)  # a map of the CT's size: read
    # a crafted SeriesInstanceUID never names a file outside the lobe folder
    (tmp_path / "lobes").mkdir()
    cfg = {"scoring": {"lobar": {"lobes_dir": str(tmp_path / "lobes")}}}
    assert find_user_lobes(cfg, "../fine.nii.gz"[:-len(".nii.gz")]) is None
    assert find_user_lobes(cfg, str(tmp_path / "fine")) is None


def _deflated(tmp_path: Path, payload: int) -> Path:
    """A Deflated Explicit VR file whose data set inflates to ``payload`` bytes and more."""
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = pydicom.uid.CTImageStorage, "1.2.3.4", "CT"
    ds.add_new(0x00091010, "OB", b"\0" * payload)
    path = tmp_path / f"d{payload}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_a_deflate_bomb_is_refused_without_inflating_it(tmp_path, monkeypatch):
    from pipeline.inventory import deflate_problem, read_file

    small = _deflated(tmp_path, 1000)
    assert read_file(small).code != "UNREADABLE_FILE"
    bomb = _deflated(tmp_path, 4 << 20)
    assert bomb.stat().st_size < 50_000
    with open(bomb, "rb") as fp:
        assert "inflates to more than 1 MiB" in deflate_problem(fp, True, limit=1 << 20)
        assert fp.tell() == 0
    with open(small, "rb") as fp:
        assert deflate_problem(fp, True, limit=1 << 20) is None
    import pipeline.inventory as inv

    monkeypatch.setattr(inv, "DEFLATE_MAX_BYTES", 1 << 20)  # read_file's limit (1 GiB) scaled down for the test
    rec = read_file(bomb)
    assert (rec.status, rec.code) == ("skipped", "UNREADABLE_FILE") and "decompression bomb" in rec.detail


@pytest.mark.filterwarnings("ignore:The value length")
def test_header_text_is_clean_and_bounded():
    from pipeline import headers as H

    ds = pydicom.Dataset()
    ds.Manufacturer = "\x1b[2J\x1b[31mPWN"
    ds.SeriesDescription = "Siemens\u202egpj.exe"
    ds.ConvolutionKernel = ["B30f", "\x00x"]
    ds.StationName = "L" * 100_000
    assert H.text(ds, "Manufacturer") == "[2J[31mPWN"
    assert H.text(ds, "SeriesDescription") == "Siemensgpj.exe"
    assert H.text(ds, "ConvolutionKernel") == "B30f\\x"
    long = H.text(ds, "StationName")
    assert len(long) == H.MAX_TEXT and long.endswith("\u2026")
    assert H._as_text(b"abc") == "abc"  # an undecoded value: its text, not "b'abc'"
    buf = io.StringIO()
    print(H.clean_text("a\tb\nc"), file=buf)
    assert buf.getvalue() == "a b c\n"


def test_a_config_error_shows_a_value_cut_short(tmp_path):
    from pipeline.config import ConfigError, load_config

    bomb = tmp_path / "bomb.yaml"
    items = ["&a0 [x, x, x, x, x, x, x, x, x, x]"]
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    bomb.write_text("resample:\n  spacing_mm: [" + ", ".join(items) + "]\n")  # 10**9 x when printed whole
    with pytest.raises(ConfigError) as e:
        load_config([bomb])
    assert "resample.spacing_mm must be a list of 3 values" in str(e.value) and len(str(e.value)) < 2000
