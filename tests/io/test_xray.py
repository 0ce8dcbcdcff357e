"""The radiograph reader on the real DICOM and PNGs, pydicom's shipped files and broken inputs."""

from __future__ import annotations

import numpy as np
import pytest

from biomodal.errors import DataError, ReaderError
from biomodal.io import XRay, find_reader, read, read_xray

pydicom = pytest.importorskip("pydicom")


def _testdata(name: str):
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed")
    return path


@pytest.mark.realdata
def test_jpeg2000_monochrome1_radiograph(shared_data):
    path = shared_data / "xray" / "dicom" / "RG1_J2KI.dcm"
    xr = read_xray(path)
    assert isinstance(xr, XRay) and xr.shape == (1955, 1841) and xr.image.dtype == np.float32
    assert xr.photometric == "MONOCHROME1" and xr.view_position == "PA" and xr.meta["modality"] == "CR"
    assert xr.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.91" and xr.bits == 15
    assert xr.pixel_spacing is None  # stored as 0\0 in this file: unknown, not zero
    assert xr.window == "file window 15000/30000"
    assert 0.0 <= xr.image.min() and xr.image.max() <= 1.0
    h, w = xr.shape
    rows = slice(h // 4, 3 * h // 4)
    mediastinum = xr.image[rows, int(w * 0.45) : int(w * 0.55)].mean()
    lungs = (
        xr.image[rows, int(w * 0.2) : int(w * 0.35)].mean()
        + xr.image[rows, int(w * 0.65) : int(w * 0.8)].mean()
    ) / 2
    assert mediastinum > lungs + 0.1  # dense tissue bright after inverting MONOCHROME1
    raw = pydicom.dcmread(path).pixel_array.astype(float)
    assert raw[rows, int(w * 0.45) : int(w * 0.55)].mean() < raw[rows, int(w * 0.2) : int(w * 0.35)].mean()
    assert find_reader(path) == "xray"
    np.testing.assert_array_equal(read(path).image, xr.image)
    pct = read_xray(path, window="percentile")
    assert pct.window.startswith("percentile") and abs(float(pct.image.mean()) - 0.5) < 0.45


@pytest.mark.realdata
def test_png_radiographs(shared_data):
    import pandas as pd

    png = shared_data / "xray" / "png"
    labels = pd.read_csv(png / "nih_labels.csv")
    for name in labels["Image Index"]:
        xr = read(png / name, reader="xray")  # PNG is the slide reader's unless xray is named
        assert xr.bits == 8 and xr.photometric == "L" and xr.image.ndim == 2
        from PIL import Image

        ref = np.asarray(Image.open(png / name).convert("L"), np.float32) / 255
        np.testing.assert_allclose(xr.image, ref, atol=1e-6)
    tb = read_xray(png / "tbx11k" / "tb_tb0005.png")  # stored as RGB: collapsed to grey
    assert tb.image.ndim == 2 and tb.photometric == "RGB" and 0.05 < tb.image.mean() < 0.95


def test_sixteen_bit_png_and_window(tmp_path):
    from PIL import Image

    arr = (np.arange(64 * 48, dtype=np.uint32).reshape(64, 48) * 20).astype(np.uint16)
    path = tmp_path / "cxr16.png"
    Image.fromarray(arr).save(path)
    xr = read_xray(path)
    assert xr.bits == 16
    np.testing.assert_allclose(xr.image, arr / 65535.0, atol=1e-6)
    win = read_xray(path, window=(30000, 20000))
    np.testing.assert_allclose(win.image, np.clip((arr - 20000.0) / 20000.0, 0, 1), atol=1e-6)


def test_modality_lut_and_window_on_a_ct_slice():
    path = _testdata("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    xr = read_xray(path, window=(40, 400))
    np.testing.assert_allclose(xr.image, np.clip((hu - (40 - 200)) / 400, 0, 1), atol=1e-6)
    assert xr.pixel_spacing == tuple(float(v) for v in ds.PixelSpacing)
    from biomodal.io._imaging_readers import _is_dicom_radiograph

    assert not _is_dicom_radiograph(path)  # a CT slice is no radiograph: read it by name


def test_multiframe_needs_a_frame():
    path = _testdata("emri_small.dcm")
    with pytest.raises(ReaderError, match="10 frames; pass frame="):
        read_xray(path)
    xr = read_xray(path, frame=3)
    assert xr.shape == (64, 64)
    with pytest.raises(ReaderError, match="out of range"):
        read_xray(path, frame=10)


def test_bad_dicoms_are_named(tmp_path):
    ds = pydicom.dcmread(_testdata("CT_small.dcm"))
    del ds.PixelData
    nopix = tmp_path / "no_pixels.dcm"
    ds.save_as(nopix)
    with pytest.raises(ReaderError, match=r"no_pixels\.dcm.*no pixel data"):
        read_xray(nopix)
    with pytest.raises(ReaderError, match="greyscale"):
        read_xray(_testdata("SC_rgb.dcm"))
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all" * 20)
    with pytest.raises(ReaderError, match=r"junk\.dcm.*not a readable DICOM"):
        read_xray(junk)
    fake = tmp_path / "fake.png"
    fake.write_text("hello")
    with pytest.raises(ReaderError, match=r"fake\.png.*not a readable PNG"):
        read_xray(fake)
    with pytest.raises(ReaderError, match="no such file"):
        read_xray(tmp_path / "absent.dcm")


@pytest.mark.realdata
def test_missing_codec_plugin_names_what_to_install(shared_data, monkeypatch):
    from pydicom.dataset import Dataset

    def no_plugin(self):
        raise RuntimeError("Unable to decompress 'JPEG 2000 Image Compression' pixel data: no plugin")

    monkeypatch.setattr(Dataset, "pixel_array", property(no_plugin))
    with pytest.raises(
        ReaderError, match=r"RG1_J2KI\.dcm.*1\.2\.840\.10008\.1\.2\.4\.91.*pylibjpeg-openjpeg"
    ):
        read_xray(shared_data / "xray" / "dicom" / "RG1_J2KI.dcm")


def test_read_limit(tmp_path, monkeypatch):
    from PIL import Image

    import biomodal.io.slide as slide_mod

    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(path)
    monkeypatch.setattr(slide_mod, "MAX_READ_PIXELS", 5_000)
    with pytest.raises(ReaderError, match="read limit"):
        read_xray(path)


@pytest.mark.realdata
def test_registry_keeps_waveforms_and_images_apart(shared_data):
    assert find_reader(shared_data / "ecg" / "dicom" / "waveform_ecg.dcm") == "ecg_dicom"
    with pytest.raises(DataError, match="no reader claims"):
        find_reader(_testdata("MR_small.dcm"))  # an MR slice: neither a radiograph nor a waveform
