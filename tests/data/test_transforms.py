"""Tests of the histology tile augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biomodal.data.transforms import (
    ColorJitter,
    Compose,
    HEDJitter,
    Normalize,
    RandomFlip,
    RandomRot90,
    ToTensor,
    default_histology_transforms,
    rgb_to_hed,
)


@pytest.fixture
def img():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)


def test_flips_are_exact(img):
    np.testing.assert_array_equal(RandomFlip(1.0, 0.0)(img), img[:, ::-1])
    np.testing.assert_array_equal(RandomFlip(0.0, 1.0)(img), img[::-1])
    np.testing.assert_array_equal(RandomFlip(1.0, 1.0)(img), img[::-1, ::-1])
    np.testing.assert_array_equal(RandomFlip(0.0, 0.0)(img), img)
    t = torch.from_numpy(img.transpose(2, 0, 1).copy())
    np.testing.assert_array_equal(RandomFlip(1.0, 0.0)(t).numpy().transpose(1, 2, 0), img[:, ::-1])


def test_rot90_is_a_rotation_and_consistent_for_tensors(img):
    seen = set()
    t = torch.from_numpy(img.transpose(2, 0, 1).copy())
    for seed in range(20):
        out = RandomRot90(seed=seed)(img)
        k = [
            k
            for k in range(4)
            if out.shape == np.rot90(img, k).shape and np.array_equal(out, np.rot90(img, k))
        ]
        assert len(k) == 1
        seen.add(k[0])
        out_t = RandomRot90(seed=seed)(t)
        np.testing.assert_array_equal(out_t.numpy().transpose(1, 2, 0), out)
    assert seen == {0, 1, 2, 3}


def test_hed_zero_jitter_is_identity(img):
    out = HEDJitter(sigma=0.0, bias=0.0)(img)
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - img.astype(int)).max() <= 1
    f = np.random.default_rng(1).uniform(0.05, 1.0, (8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(HEDJitter(0.0, 0.0)(f), f, atol=1e-5)


def test_hed_decomposition_matches_skimage():
    skcolor = pytest.importorskip("skimage.color")
    f = np.random.default_rng(2).uniform(0.02, 1.0, (16, 16, 3))
    ours = np.maximum(rgb_to_hed(f.astype(np.float32)) / -np.log(1e-6), 0)
    np.testing.assert_allclose(ours, skcolor.rgb2hed(f), atol=1e-5)


def test_hed_jitter_changes_image_and_is_seeded(img):
    a = HEDJitter(sigma=0.3, bias=0.05, seed=5)(img)
    b = HEDJitter(sigma=0.3, bias=0.05, seed=5)(img)
    c = HEDJitter(sigma=0.3, bias=0.05, seed=6)(img)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, img)
    d = HEDJitter(sigma=0.3, bias=0.05, seed=99)(img, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, d)  # an explicit rng overrides the own generator


def test_color_jitter(img):
    np.testing.assert_array_equal(ColorJitter()(img), img)
    f = np.random.default_rng(3).uniform(0.1, 0.6, (6, 6, 3)).astype(np.float32)
    out = ColorJitter(brightness=0.4, seed=0)(f)
    ratio = out / f
    assert np.allclose(ratio, ratio.flat[0], atol=1e-5) and 0.6 <= ratio.flat[0] <= 1.4
    # A hue rotation keeps luminance (Y of YIQ).
    out = ColorJitter(hue=0.25, seed=1)(f)
    y = np.array([0.299, 0.587, 0.114], np.float32)
    inside = (out > 0).all(-1) & (out < 1).all(-1)
    np.testing.assert_allclose((out @ y)[inside], (f @ y)[inside], atol=1e-5)
    assert not np.allclose(out, f)
    gray = ColorJitter(saturation=1.0, seed=0)
    t = torch.from_numpy(f.transpose(2, 0, 1).copy())
    res = gray(t)
    assert isinstance(res, torch.Tensor) and res.dtype == torch.float32 and res.shape == t.shape


def test_to_tensor_and_normalize(img):
    t = ToTensor()(img)
    assert t.shape == (3, 12, 10) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), img.transpose(2, 0, 1) / 255.0, atol=1e-7)
    n = Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.5))(t)
    ref = (img.transpose(2, 0, 1) / 255.0 - np.array([0.5, 0.4, 0.3])[:, None, None]) / np.array(
        [0.2, 0.25, 0.5]
    )[:, None, None]
    np.testing.assert_allclose(n.numpy(), ref, atol=1e-5)


def test_default_pipelines(img):
    ev = default_histology_transforms(train=False)
    assert torch.equal(ev(img), ToTensor()(img))
    tr = default_histology_transforms(train=True, mean=(0.5,) * 3, std=(0.5,) * 3)
    a = tr(img, rng=np.random.default_rng(0))
    b = tr(img, rng=np.random.default_rng(0))
    assert a.shape in ((3, 12, 10), (3, 10, 12)) and a.dtype == torch.float32 and torch.equal(a, b)
    assert float(a.min()) >= -1.0 - 1e-6 and float(a.max()) <= 1.0 + 1e-6
    assert "RandomFlip" in repr(tr)


def test_compose_calls_plain_callables(img):
    c = Compose([RandomFlip(1.0, 0.0), lambda x: x[:4]], seed=0)
    np.testing.assert_array_equal(c(img), img[:, ::-1][:4])
