from __future__ import annotations

import numpy as np
import pytest

from biomodal.datasets import write_pyramid_tiff
from biomodal.errors import ConfigError, MissingMetadataError
from biomodal.io import read_slide
from biomodal.pp import TissueMask, detect_tissue
from biomodal.pp.tissue import otsu_threshold

pytest.importorskip("openslide")


def _disc_slide(tmp_path, mpp=2.0, holes=True, speck=True):
    """1024x1024 white slide with a pink disc (r=300 px), a 20-px hole, and a 12-px speck."""
    yy, xx = np.mgrid[0:1024, 0:1024]
    img = np.full((1024, 1024, 3), 242, np.uint8)
    disc = (xx - 512) ** 2 + (yy - 512) ** 2 < 300**2
    img[disc] = (205, 120, 175)
    if holes:
        img[(xx - 512) ** 2 + (yy - 512) ** 2 < 20**2] = 242  # small lumen inside the tissue
    if speck:
        img[100:112, 100:112] = (120, 40, 110)  # dust / debris
    path = tmp_path / "disc.tiff"
    write_pyramid_tiff(path, img, mpp=mpp, n_levels=4)
    return read_slide(path), disc


def test_otsu_matches_reference():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.1, 0.03, 5000), rng.normal(0.6, 0.05, 3000)])
    t = otsu_threshold(values)
    assert 0.15 < t < 0.45  # in the gap between the classes

    def between(c):  # brute-force between-class variance (independent implementation)
        lo, hi = values[values <= c], values[values > c]
        return lo.size * hi.size * (lo.mean() - hi.mean()) ** 2

    cuts = np.linspace(values.min(), values.max(), 400)[1:-1]
    assert between(t) >= 0.999 * max(between(c) for c in cuts)
    skf = pytest.importorskip("skimage.filters")
    assert t == pytest.approx(skf.threshold_otsu(values), abs=(values.max() - values.min()) / 128)


def test_detect_disc(tmp_path):
    slide, disc = _disc_slide(tmp_path)
    m = detect_tissue(slide, mpp=8.0)  # 4x coarser than the 2 um/px slide
    assert isinstance(m, TissueMask)
    assert m.shape == (256, 256) and m.mpp == pytest.approx(8.0)
    assert m.downsample == pytest.approx((4.0, 4.0))
    truth = disc.reshape(256, 4, 256, 4).mean(axis=(1, 3)) > 0.5
    iou = (m.mask & truth).sum() / (m.mask | truth).sum()
    assert iou > 0.97
    assert m.mask[128, 128]  # the 80-um lumen (5,000 um^2 < 1e5) is filled
    assert not m.mask[22:31, 22:31].any()  # the 24-um speck (576 um^2 < 1e4) is removed
    assert m.tissue_fraction == pytest.approx(np.pi * 300**2 / 1024**2, rel=0.03)
    assert "256x256" in repr(m) and "8 um/px" in repr(m)


def test_detect_options(tmp_path):
    slide, _ = _disc_slide(tmp_path)
    keep = detect_tissue(slide, mpp=8.0, max_hole_um2=0, min_area_um2=0)
    assert not keep.mask[128, 128] and keep.mask[24:29, 24:29].any()
    od = detect_tissue(slide, mpp=8.0, channel="od")
    assert (od.mask == detect_tissue(slide, mpp=8.0).mask).mean() > 0.99
    fixed = detect_tissue(slide, mpp=8.0, method="threshold", threshold=0.99)
    assert not fixed.mask.any()
    small = detect_tissue(slide, max_size=64)
    assert small.shape == (64, 64) and small.mpp == pytest.approx(32.0)
    with pytest.raises(ConfigError, match="method"):
        detect_tissue(slide, method="magic")
    with pytest.raises(ConfigError, match="channel"):
        detect_tissue(slide, channel="hue")


def test_blank_slide_has_no_tissue(tmp_path):
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(240, 3, (512, 512, 3)), 0, 255).astype(np.uint8)
    write_pyramid_tiff(tmp_path / "blank.tiff", img, mpp=1.0, n_levels=2)
    slide = read_slide(tmp_path / "blank.tiff")
    assert detect_tissue(slide, mpp=4.0).tissue_fraction == 0.0


def test_no_mpp_needs_max_size(tmp_path):
    slide, _ = _disc_slide(tmp_path, mpp=None)
    with pytest.raises(MissingMetadataError, match=r"disc\.tiff"):
        detect_tissue(slide)
    with pytest.warns(UserWarning, match="skipped"):
        m = detect_tissue(slide, max_size=128)
    assert m.mpp is None and m.shape == (128, 128) and m.mask[64, 32]


def test_region_fraction_exact():
    mask = np.zeros((10, 20), bool)
    mask[2:6, 4:12] = True
    tm = TissueMask(mask, (200, 100))  # 10 level-0 px per mask px
    # reference: upsample the mask to level 0 and average the boxes directly
    big = np.kron(mask, np.ones((10, 10), bool))
    rng = np.random.default_rng(1)
    x, y = rng.integers(-30, 190, 300), rng.integers(-30, 95, 300)
    w, h = rng.integers(1, 60, 300), rng.integers(1, 60, 300)
    got = tm.region_fraction(x, y, w, h)
    padded = np.zeros((100 + 120, 200 + 120), bool)  # outside the slide counts as background
    padded[30:130, 30:230] = big
    ref = [
        padded[yy + 30 : yy + 30 + hh, xx + 30 : xx + 30 + ww].mean() for xx, yy, ww, hh in zip(x, y, w, h)
    ]
    np.testing.assert_allclose(got, ref, atol=1e-9)
    with pytest.raises(ConfigError, match="2-D"):
        TissueMask(np.zeros(5, bool), (5, 1))


@pytest.mark.realdata
def test_cmu_tissue(shared_data):
    slide = read_slide(shared_data / "wsi" / "CMU-1-Small-Region.svs")
    m = detect_tissue(slide)
    assert m.mpp == pytest.approx(8.0, rel=0.01)
    # CMU-1 small region: tissue in the upper and central parts, white glass at the bottom rows
    assert 0.2 < m.tissue_fraction < 0.6
    thumb = slide.thumbnail((m.shape[1], m.shape[0])).astype(float)
    assert thumb[m.mask].mean() < thumb[~m.mask].mean() - 30  # tissue darker than background
