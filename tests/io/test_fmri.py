"""``biomodal.io.read_fmri``: real NIfTI/Analyze files, reorientation, masks, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from biomodal.errors import DataError, ReaderError
from biomodal.io import find_reader, read, read_fmri

nib = pytest.importorskip("nibabel")


def _maps(shared: Path, task: str) -> list[Path]:
    folder = shared / "fmri" / "multisubject" / task
    pattern = "*/*.nii" if task == "auditory" else "*/*.hdr"
    return sorted(folder.glob(pattern))


def _lateral_index(img) -> float:
    """(R - L) / (R + L) of positive signal, hemispheres split at the grid's middle x index."""
    vol = img.to_volume(img.data[0])
    pos = np.where(np.isfinite(vol) & (vol > 0), vol, 0.0)
    half = vol.shape[0] // 2
    left, right = pos[:half].sum(), pos[half + 1 :].sum()
    return float((right - left) / (right + left))


# --------------------------------------------------------------------------- real files
@pytest.mark.realdata
def test_4d_files_time_voxels_tr_affine(shared_data):
    f = shared_data / "fmri" / "functional.nii"
    img = read_fmri(f)
    assert img.data.shape[0] == 20 and img.data.dtype == np.float32
    assert img.mask.shape == (17, 21, 3) and img.mask.sum() == img.n_voxels
    assert img.tr == pytest.approx(2.0)
    assert img.voxel_size == pytest.approx((4.0, 4.0, 8.0))
    assert img.source_orientation == "LAS" and img.orientation == "RAS"
    # RAS: the x column of the affine is positive; the world position of voxel 0 is unchanged
    raw = nib.load(f)
    assert img.affine[0, 0] == pytest.approx(4.0) and raw.affine[0, 0] == pytest.approx(-4.0)
    corner = raw.affine @ np.array([16, 0, 0, 1.0])
    np.testing.assert_allclose(img.affine @ np.array([0, 0, 0, 1.0]), corner, atol=1e-5)
    # the values of one voxel are the same place in both orders (x flipped)
    x = np.asarray(raw.dataobj, np.float32)
    vol = img.to_volume()
    assert vol.shape == (17, 21, 3, 20)
    i, j, k = np.argwhere(img.mask)[0]
    np.testing.assert_allclose(vol[i, j, k], x[16 - i, j, k])
    ex = read_fmri(shared_data / "fmri" / "example4d.nii.gz")
    assert ex.data.shape[0] == 2 and ex.tr == pytest.approx(2.0)  # 2000 stored under "sec": ms
    assert ex.shape == (128, 96, 24) and ex.voxel_size == pytest.approx((2.0, 2.0, 2.2), abs=1e-4)


@pytest.mark.realdata
def test_registry_picks_fmri_reader_for_every_suffix(shared_data):
    hdr = _maps(shared_data, "visual")[0]
    for f in (shared_data / "fmri" / "functional.nii", shared_data / "fmri" / "example4d.nii.gz", hdr):
        assert find_reader(f) == "fmri"
    a, b = read(hdr), read(hdr.with_suffix(".img"))
    np.testing.assert_array_equal(a.data, b.data)
    assert a.data.shape == (1, a.mask.sum())


@pytest.mark.realdata
def test_both_orientations_land_on_one_ras_grid(shared_data):
    words, faces = read_fmri(_maps(shared_data, "auditory")[0]), read_fmri(_maps(shared_data, "visual")[0])
    assert words.source_orientation == "RAS" and faces.source_orientation == "LAS"
    assert words.shape == faces.shape == (53, 63, 46)
    assert (
        np.sign(np.diag(words.affine)[:3]).tolist()
        == [1, 1, 1]
        == np.sign(np.diag(faces.affine)[:3]).tolist()
    )
    # after reorientation both grids start near (-78, -111, -51) mm: within 1 mm (a third of a voxel)
    np.testing.assert_allclose(words.affine[:3, 3], [-78, -111, -51], atol=1e-4)
    np.testing.assert_allclose(faces.affine[:3, 3], [-78, -112, -50], atol=1e-4)
    # NaN outside the brain is the mask, never a value
    assert np.isfinite(words.data).all() and np.isfinite(faces.data).all()
    raw = np.asarray(nib.load(_maps(shared_data, "visual")[0]).dataobj)
    assert faces.n_voxels == int(np.isfinite(raw).sum() - ((raw == 0) & np.isfinite(raw)).sum())


@pytest.mark.realdata
def test_faces_maps_are_right_lateralised_only_in_canonical_order(shared_data):
    """Face responses are right-lateralised: visible in RAS order, reversed in the stored order.

    Measured on these files: in RAS order 9 of the 10 faces maps carry more positive signal in the
    right hemisphere (the group index is +0.08); read without reorientation the same maps look
    left-lateralised (group -0.08). The words maps are stored in RAS already (unchanged either way)
    and lean left (7 of 9, group -0.05).
    """
    faces = [read_fmri(f) for f in _maps(shared_data, "visual")]
    faces_raw = [read_fmri(f, reorient=False) for f in _maps(shared_data, "visual")]
    words = [read_fmri(f) for f in _maps(shared_data, "auditory")]
    li = np.array([_lateral_index(i) for i in faces])
    li_raw = np.array([_lateral_index(i) for i in faces_raw])
    li_words = np.array([_lateral_index(i) for i in words])
    assert len(li) == 10 and len(li_words) == 9
    assert (li > 0).sum() >= 9 and li.mean() > 0.05
    assert (li_raw < 0).sum() >= 9 and li_raw.mean() < -0.05
    np.testing.assert_allclose(li_raw, -li, atol=0.02)  # a mirror image, up to the midline column
    assert (li_words < 0).sum() >= 7 and li_words.mean() < 0
    assert li.mean() > li_words.mean() > li_raw.mean()


@pytest.mark.realdata
def test_mask_image_atlas_and_grid_tolerance(shared_data, tmp_path):
    words_f, faces_f = _maps(shared_data, "auditory")[0], _maps(shared_data, "visual")[0]
    words = read_fmri(words_f)
    # a mask stored in the other orientation (LAS, like the faces set) selects the same voxels
    las = nib.as_closest_canonical(nib.load(words_f))
    m = words.mask.astype(np.uint8)[::-1]
    aff = las.affine.copy()
    aff[0, 0], aff[0, 3] = -aff[0, 0], aff[0, 3] + 3 * 52
    nib.save(nib.Nifti1Image(m, aff), tmp_path / "mask_las.nii.gz")
    again = read_fmri(words_f, mask=tmp_path / "mask_las.nii.gz")
    np.testing.assert_array_equal(again.mask, words.mask)
    np.testing.assert_array_equal(again.data, words.data)
    # the faces grid is 1 mm off the words grid: same grid within half a voxel, not within 0.5 mm
    assert read_fmri(words_f, mask=faces_f).n_voxels > 0
    with pytest.raises(DataError, match=r"different grids.*") as err:
        read_fmri(words_f, mask=faces_f, grid_atol=0.5)
    assert str(faces_f) in str(err.value) and str(words_f) in str(err.value)
    # a label atlas: left (1) and right (2) halves; labels= keeps one
    atlas = np.zeros(words.shape, np.int16)
    atlas[:26], atlas[27:] = 1, 2
    nib.save(nib.Nifti1Image(atlas, words.affine), tmp_path / "atlas.nii")
    both = read_fmri(words_f, mask=tmp_path / "atlas.nii")
    left = read_fmri(words_f, mask=tmp_path / "atlas.nii", labels=[1])
    assert set(np.unique(both.labels)) == {1, 2} and set(np.unique(left.labels)) == {1}
    assert left.n_voxels < both.n_voxels < words.n_voxels
    with pytest.raises(DataError, match=r"labels \[7\] do not occur"):
        read_fmri(words_f, mask=tmp_path / "atlas.nii", labels=[7])


# --------------------------------------------------------------------------- bad input
def _save(tmp_path: Path, name: str, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    f = tmp_path / name
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4) if affine is None else affine), f)
    return f


def test_3d_vs_4d_expectation_names_file(tmp_path):
    f3 = _save(tmp_path, "map.nii", np.ones((4, 5, 6)))
    f4 = _save(tmp_path, "run.nii.gz", np.random.default_rng(0).normal(size=(4, 5, 6, 7)))
    with pytest.raises(DataError, match=r"map\.nii: expected a 4-D time series, got a 3-D map"):
        read_fmri(f3, expect=4)
    with pytest.raises(DataError, match=r"run\.nii\.gz: expected a 3-D map .*got a 4-D time series"):
        read_fmri(f4, expect=3)
    assert read_fmri(f4, expect=4).data.shape == (7, 120)
    assert read_fmri(f3, expect=3).data.shape == (1, 120)


def test_all_nan_map_and_empty_support(tmp_path):
    f = _save(tmp_path, "nan.nii", np.full((3, 3, 3), np.nan))
    with pytest.raises(DataError, match=r"nan\.nii: every voxel is NaN"):
        read_fmri(f)
    z = _save(tmp_path, "zero.nii", np.zeros((3, 3, 3)))
    with pytest.raises(DataError, match=r"zero\.nii: every finite voxel is 0"):
        read_fmri(z)


def test_nan_voxels_leave_a_given_mask(tmp_path):
    x = np.arange(27, dtype=float).reshape(3, 3, 3) + 1
    x[0, 0, 0] = np.nan
    f = _save(tmp_path, "m.nii", x)
    img = read_fmri(f, mask=np.ones((3, 3, 3), bool))
    assert img.n_voxels == 26 and img.info["n_nan_in_mask"] == 1 and not img.mask[0, 0, 0]


def test_mask_shape_and_affine_mismatch_name_both_files(tmp_path):
    f = _save(tmp_path, "data.nii", np.ones((4, 4, 4)))
    small = _save(tmp_path, "small_mask.nii", np.ones((3, 4, 4)))
    with pytest.raises(DataError, match=r"small_mask\.nii has grid shape \(3, 4, 4\).*data\.nii"):
        read_fmri(f, mask=small)
    shifted = np.eye(4)
    shifted[:3, 3] = 5.0
    moved = _save(tmp_path, "moved_mask.nii", np.ones((4, 4, 4)), shifted)
    with pytest.raises(DataError, match=r"moved_mask\.nii and data .*data\.nii are on different grids"):
        read_fmri(f, mask=moved)


def test_hdr_without_img_and_img_without_hdr(tmp_path, shared_data):
    src = _maps(shared_data, "visual")[0]
    shutil.copy(src, tmp_path / "lonely.hdr")
    with pytest.raises(ReaderError, match=r"lonely\.hdr: .*needs its image data file lonely\.img"):
        read_fmri(tmp_path / "lonely.hdr")
    with pytest.raises(ReaderError, match=r"lonely\.hdr"):
        read(tmp_path / "lonely.hdr")  # through the registry too
    shutil.copy(src.with_suffix(".img"), tmp_path / "orphan.img")
    with pytest.raises(ReaderError, match=r"orphan\.img: .*needs its header file orphan\.hdr"):
        read(tmp_path / "orphan.img")


def test_not_an_image_is_a_reader_error(tmp_path):
    f = tmp_path / "junk.nii"
    f.write_bytes(b"\x5c\x01\x00\x00" + b"x" * 400)  # a plausible sizeof_hdr, then garbage
    with pytest.raises(ReaderError, match=r"junk\.nii: not a readable NIfTI"):
        read_fmri(f)
