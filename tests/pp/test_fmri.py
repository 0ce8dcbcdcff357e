"""fMRI preprocessing: train-only z-scoring, ROI masking, repeat averaging, detrending."""

from __future__ import annotations

import numpy as np
import pytest

from biomodal.errors import CheckpointError, DataError
from biomodal.io import FMRIImage
from biomodal.pp import VoxelZScore, average_repeats, detrend, mask_roi, roi_columns


def test_zscore_uses_training_trials_only():
    rng = np.random.default_rng(0)
    train = rng.normal(3.0, 2.0, size=(200, 5))
    test = rng.normal(10.0, 2.0, size=(50, 5))  # shifted: must not be centred by its own mean
    sc = VoxelZScore().fit(train)
    z_train, z_test = sc.transform(train), sc.transform(test)
    np.testing.assert_allclose(z_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z_train.std(0), 1, atol=1e-4)
    assert (z_test.mean(0) > 2.5).all()  # (10 - 3) / 2 = 3.5, not 0
    np.testing.assert_allclose(sc.mean_, train.mean(0), rtol=1e-5)
    again = VoxelZScore.from_state_dict(sc.state_dict(), "sub-01")
    np.testing.assert_allclose(again.transform(test), z_test)
    assert repr(again) == "VoxelZScore(sub-01: 5 voxels from 200 trials)"


def test_zscore_errors():
    sc = VoxelZScore(name="sub-02")
    with pytest.raises(DataError, match=r"sub-02.*fit\(\) on the training trials first"):
        sc.transform(np.zeros((2, 3)))
    with pytest.raises(DataError, match=r"needs >= 2 training trials"):
        sc.fit(np.zeros((1, 3)))
    sc.fit(np.ones((4, 3)))
    np.testing.assert_allclose(sc.transform(np.ones((2, 3))), 0)  # constant voxels: 0, not inf
    with pytest.raises(DataError, match=r"data have 4 voxels, the scaler was fitted on 3"):
        sc.transform(np.zeros((2, 4)))
    with pytest.raises(DataError, match=r"NaN/inf"):
        sc.transform(np.full((2, 3), np.nan))
    with pytest.raises(CheckpointError, match=r"'sub-03': not a VoxelZScore state"):
        VoxelZScore.from_state_dict({"kind": "other"}, "sub-03")


def _image() -> FMRIImage:
    mask = np.zeros((4, 3, 2), bool)
    mask[1:, :, :] = True
    n = int(mask.sum())
    data = np.arange(2 * n, dtype=np.float32).reshape(2, n)
    return FMRIImage(data, mask, np.eye(4), None, (1.0, 1.0, 1.0), "toy.nii")


def test_roi_columns_and_mask_roi():
    img = _image()
    atlas = np.zeros(img.shape, np.int16)
    atlas[3] = 2
    atlas[0] = 1  # outside the data mask
    cols = roi_columns(img.mask, atlas, labels=[2])
    assert cols.size == 6
    sub = mask_roi(img, atlas, labels=[2])
    assert sub.n_voxels == 6 and sub.mask.sum() == 6 and sub.mask[3].all() and not sub.mask[1].any()
    np.testing.assert_array_equal(sub.to_volume()[3], img.to_volume()[3])
    with pytest.raises(DataError, match=r"contains none of the 18 masked voxels"):
        roi_columns(img.mask, atlas, labels=[1])
    with pytest.raises(DataError, match=r"roi has grid shape"):
        roi_columns(img.mask, atlas[:2])


def test_average_repeats():
    x = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [10.0, 10.0]])
    ids, avg, n = average_repeats(x, ["b", "a", "b", "c"])
    assert ids.tolist() == ["b", "a", "c"] and n.tolist() == [2, 1, 1]
    np.testing.assert_allclose(avg, [[3.0, 2.5], [3.0, 2.0], [10.0, 10.0]])
    with pytest.raises(DataError, match=r"3 stimulus ids for 4 trials"):
        average_repeats(x, ["a", "b", "c"])


def test_detrend_removes_linear_drift_per_run():
    t = np.arange(40, dtype=float)
    signal = np.sin(t / 3.0)
    drift = np.where(t < 20, 0.5 * t, 30 - 0.2 * t)  # two runs, two slopes
    x = np.stack([signal + drift, 2 * signal + drift], axis=1)
    clean = detrend(x, breakpoints=[20])
    piecewise = detrend(np.stack([signal, 2 * signal], 1), breakpoints=[20])
    np.testing.assert_allclose(clean, piecewise, atol=1e-5)
    assert np.abs(clean - detrend(x)).max() > 1.0  # one line for both runs leaves drift behind
    np.testing.assert_allclose(detrend(x, kind="constant").mean(0), 0, atol=1e-5)
    with pytest.raises(DataError, match=r"kind='cubic'"):
        detrend(x, kind="cubic")
