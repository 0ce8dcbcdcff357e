"""The volume reader: NIfTI orientation, DICOM series sorting and checks, multi-frame files, resampling."""

from __future__ import annotations

import numpy as np
import pytest

from biomodal.errors import ConfigError, ReaderError
from biomodal.io import Volume, read, read_volume
from biomodal.pp import resample_volume, window_volume

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")


def _testdata(name: str):
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed")
    return path


def _series(folder, n: int = 5, gap: float = 2.5, names=None):
    """Write ``n`` slices of CT_small stacked along the normal, slice k's pixels offset by 10 * k."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(_testdata("CT_small.dcm"))
    z0 = float(base.ImagePositionPatient[2])
    names = names or [f"slice_{(7 * k) % n:03d}.dcm" for k in range(n)]  # file order != slice order
    for k in range(n):
        ds = pydicom.dcmread(_testdata("CT_small.dcm"))
        arr = ds.pixel_array.astype(np.int16) + 10 * k
        ds.PixelData = arr.tobytes()
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], z0 + gap * k]
        ds.InstanceNumber = n - k  # misleading on purpose: sorting must use positions
        ds.save_as(folder / names[k])
    return folder, base


def test_series_sorted_by_position_with_modality_lut(tmp_path):
    folder, base = _series(tmp_path / "ct")
    (folder / "notes.txt").write_text("not a slice")
    vol = read_volume(folder)
    assert isinstance(vol, Volume) and vol.shape == (5, 128, 128) and vol.meta["source"] == "dicom_series"
    assert vol.spacing == pytest.approx((2.5, 0.661468, 0.661468))
    hu0 = base.pixel_array * float(base.RescaleSlope) + float(base.RescaleIntercept)
    for k in range(5):
        np.testing.assert_allclose(vol.data[k], hu0 + 10 * k * float(base.RescaleSlope), atol=1e-3)
    origin = np.array([float(v) for v in base.ImagePositionPatient])
    expected = np.append(origin + np.array([0.0, 0.0, 10.0]), 1.0)  # slice 4 lies 4 gaps of 2.5 mm up
    np.testing.assert_allclose(vol.affine @ [0, 0, 4, 1], expected, atol=1e-4)
    assert read(folder, reader="volume").shape == vol.shape


def test_series_inconsistencies_are_named(tmp_path):
    folder, _ = _series(tmp_path / "gap", n=4, names=["s0.dcm", "s1.dcm", "s2.dcm", "s3.dcm"])
    (folder / "s1.dcm").unlink()  # a missing slice: gaps of 5 and 2.5 mm
    with pytest.raises(ReaderError, match="uneven slice spacing"):
        read_volume(folder)
    folder, _ = _series(tmp_path / "orient", n=3)
    ds = pydicom.dcmread(folder / "slice_001.dcm")
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.save_as(folder / "slice_001.dcm")
    with pytest.raises(ReaderError, match=r"slice_001\.dcm.*orientation"):
        read_volume(folder)
    folder, _ = _series(tmp_path / "dup", n=3)
    ds = pydicom.dcmread(folder / "slice_000.dcm")
    ds.save_as(folder / "slice_999.dcm")
    with pytest.raises(ReaderError, match="share a position"):
        read_volume(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReaderError, match="a series needs >= 2"):
        read_volume(empty)


def test_multiframe_and_two_d_files():
    vol = read_volume(_testdata("emri_small.dcm"))
    assert vol.shape == (10, 64, 64) and vol.meta["frames"] == 10
    assert "1 mm assumed" in vol.meta["spacing_note"]  # the file carries no PixelSpacing
    frames = pydicom.dcmread(_testdata("emri_small.dcm")).pixel_array
    np.testing.assert_allclose(vol.data, frames.astype(np.float32))
    with pytest.raises(ReaderError, match="single 2-D image, not a volume"):
        read_volume(_testdata("CT_small.dcm"))


def test_nifti_reoriented_to_ras(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.normal(size=(6, 5, 4)).astype(np.float32)
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(arr, affine), tmp_path / "ras.nii.gz")
    flipped = np.diag([-2.0, 3.0, 4.0, 1.0])
    flipped[0, 3] = 2.0 * 5  # the same voxels, x axis stored the other way round
    nib.save(nib.Nifti1Image(arr[::-1].copy(), flipped), tmp_path / "las.nii")
    a, b = read_volume(tmp_path / "ras.nii.gz"), read_volume(tmp_path / "las.nii")
    assert a.shape == (4, 5, 6) and a.spacing == (4.0, 3.0, 2.0)
    np.testing.assert_allclose(a.data, arr.transpose(2, 1, 0))
    np.testing.assert_allclose(b.data, a.data)  # voxel-aligned after reorientation
    np.testing.assert_allclose(b.affine, a.affine)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), tmp_path / "series.nii")
    with pytest.raises(ReaderError, match="expected a 3-D volume"):
        read_volume(tmp_path / "series.nii")
    (tmp_path / "bad.nii").write_bytes(b"\x00" * 10)
    with pytest.raises(ReaderError, match=r"bad\.nii"):
        read_volume(tmp_path / "bad.nii")


@pytest.mark.realdata
def test_real_maps_in_two_orientations_align(shared_data):
    root = shared_data / "fmri" / "multisubject"
    words = read_volume(root / "auditory" / "subject_01" / "Words_1.nii")
    faces = read_volume(root / "visual" / "subject_01" / "con_0006.hdr")
    raw_w, raw_f = nib.load(root / "auditory" / "subject_01" / "Words_1.nii"), nib.load(
        root / "visual" / "subject_01" / "con_0006.hdr")  # fmt: skip
    assert np.sign(raw_w.affine[0, 0]) != np.sign(raw_f.affine[0, 0])  # stored mirrored
    assert words.shape == faces.shape == (46, 63, 53) and words.spacing == (3.0, 3.0, 3.0)
    np.testing.assert_allclose(words.affine, faces.affine, atol=1.5)  # one RAS grid (origins within 1 mm)
    brain_w, brain_f = (
        np.isfinite(words.data) & (words.data != 0),
        np.isfinite(faces.data) & (faces.data != 0),
    )
    overlap = (brain_w & brain_f).sum() / min(brain_w.sum(), brain_f.sum())
    assert overlap > 0.8  # the brain masks coincide once both are in RAS


def test_resample_and_window(tmp_path):
    arr = np.arange(8 * 10 * 12, dtype=np.float32).reshape(12, 10, 8)  # (i, j, k) for NIfTI
    nib.save(nib.Nifti1Image(arr, np.diag([1.0, 1.0, 2.0, 1.0])), tmp_path / "v.nii")
    vol = read_volume(tmp_path / "v.nii")  # (k, j, i) = (8, 10, 12) at (2, 1, 1) mm
    iso = resample_volume(vol, 1.0)
    assert iso.shape == (16, 10, 12) and iso.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert iso.data.mean() == pytest.approx(vol.data.mean(), rel=0.02)
    np.testing.assert_allclose(np.diag(iso.affine)[:3], [1.0, 1.0, 1.0])
    coarse = resample_volume(vol, (4.0, 2.0, 2.0))
    assert coarse.shape == (4, 5, 6)
    w = window_volume(vol, (100.0, 200.0))
    assert w.data.min() == 0.0 and w.data.max() == 1.0 and w.meta["window"] == "window 100/200"
    p = window_volume(vol)
    assert 0.0 <= p.data.min() and p.data.max() <= 1.0
    with pytest.raises(ConfigError):
        resample_volume(vol, 0)
    with pytest.raises(ConfigError):
        window_volume(vol, (0.0, -1.0))
