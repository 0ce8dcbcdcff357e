from __future__ import annotations

import time

import numpy as np
import pytest

from biomodal.errors import ConfigError, MissingMetadataError
from biomodal.pp import TissueMask, detect_tissue, tile


class FakeSlide:
    """Just the geometry tile() needs: no file, any size."""

    def __init__(self, width: int, height: int, mpp: float | None = 0.25) -> None:
        self.dimensions = (width, height)
        self._mpp = mpp
        self.path = "fake.svs"

    @property
    def mpp(self) -> float:
        if self._mpp is None:
            raise MissingMetadataError("fake.svs: microns per pixel are unknown; pass mpp=...")
        return self._mpp

    @property
    def has_mpp(self) -> bool:
        return self._mpp is not None


def blob_mask(h: int, w: int, seed: int = 0, cell: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.random((h // cell + 1, w // cell + 1)) < 0.4
    return np.kron(coarse, np.ones((cell, cell), bool))[:h, :w]


def test_grid_positions_match_loop():
    slide = FakeSlide(5000, 3000, mpp=0.25)
    df = tile(slide, tile_px=224, mpp=0.5, min_tissue_fraction=0)
    assert list(df.columns) == ["x", "y", "w0", "h0", "tissue_fraction"]
    ref = [(x, y) for y in range(0, 3000 - 448 + 1, 448) for x in range(0, 5000 - 448 + 1, 448)]
    assert list(zip(df.x, df.y)) == ref
    assert (df.w0 == 448).all() and (df.h0 == 448).all()
    assert df.tissue_fraction.isna().all()
    assert df.attrs["tile_size_um"] == pytest.approx(112.0)
    # the same tiles in microns; half-overlapping stride
    same = tile(slide, tile_size_um=112.0, min_tissue_fraction=0)
    assert same[["x", "y"]].equals(df[["x", "y"]])
    half = tile(slide, tile_size_um=112.0, stride_um=56.0, min_tissue_fraction=0)
    assert len(half) == ((5000 - 448) // 224 + 1) * ((3000 - 448) // 224 + 1)
    px = tile(slide, tile_px=224, mpp=0.5, stride_px=112, min_tissue_fraction=0)
    assert px[["x", "y"]].equals(half[["x", "y"]])


def test_fractional_tile_size_rounding():
    slide = FakeSlide(1000, 1000, mpp=0.499)
    df = tile(slide, tile_px=224, mpp=0.5, min_tissue_fraction=0)
    size0 = 224 * 0.5 / 0.499
    n = int((1000 - size0) // size0) + 1
    assert len(df) == n * n
    np.testing.assert_array_equal(np.unique(df.x), np.round(np.arange(n) * size0).astype(int))
    assert (df.w0 == round(size0)).all()


def test_tissue_fraction_and_filter_against_brute_force():
    mask = blob_mask(60, 80, seed=2)
    slide = FakeSlide(800, 600, mpp=1.0)  # 10 level-0 px per mask px
    tm = TissueMask(mask, slide.dimensions, mpp=10.0)
    full = tile(slide, tile_size_um=64, stride_um=37, min_tissue_fraction=0, mask=tm)
    big = np.kron(mask, np.ones((10, 10), bool))
    ref = np.array([big[y : y + 64, x : x + 64].mean() for x, y in zip(full.x, full.y)])
    np.testing.assert_allclose(full.tissue_fraction, ref, atol=1e-9)
    kept = tile(slide, tile_size_um=64, stride_um=37, min_tissue_fraction=0.5, mask=tm)
    assert len(kept) == int((ref >= 0.5).sum()) and (kept.tissue_fraction >= 0.5).all()
    assert list(kept.index) == list(range(len(kept)))


def test_level0_pixels_without_mpp():
    slide = FakeSlide(1000, 500, mpp=None)
    df = tile(slide, tile_px=256, min_tissue_fraction=0)
    assert len(df) == 3 * 1 and (df.w0 == 256).all()
    with pytest.raises(MissingMetadataError, match=r"fake\.svs"):
        tile(slide, tile_size_um=100, min_tissue_fraction=0)


def test_bad_arguments():
    slide = FakeSlide(1000, 1000)
    with pytest.raises(ConfigError, match="exactly one"):
        tile(slide, min_tissue_fraction=0)
    with pytest.raises(ConfigError, match="exactly one"):
        tile(slide, tile_size_um=10, tile_px=10, min_tissue_fraction=0)
    with pytest.raises(ConfigError, match="tile_size_um"):
        tile(slide, tile_size_um=-5, min_tissue_fraction=0)
    with pytest.raises(ConfigError, match="min_tissue_fraction"):
        tile(slide, tile_size_um=10, min_tissue_fraction=2)
    wrong = TissueMask(np.ones((10, 10), bool), (999, 1000))
    with pytest.raises(ConfigError, match="999x1000"):
        tile(slide, tile_size_um=10, mask=wrong)
    assert len(tile(slide, tile_size_um=1e6, min_tissue_fraction=0)) == 0  # bigger than the slide


def test_gridding_100k_slide_is_fast():
    # 100,000 x 100,000 px at 0.25 um/px; tissue mask at 8 um/px (3125 x 3125)
    slide = FakeSlide(100_000, 100_000, mpp=0.25)
    mask = blob_mask(3125, 3125, seed=5, cell=25)
    tm = TissueMask(mask, slide.dimensions, mpp=8.0)
    t0 = time.perf_counter()
    df = tile(slide, tile_px=224, mpp=0.5, stride_px=112, min_tissue_fraction=0.5, mask=tm)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, f"gridding took {elapsed:.1f}s"
    n_all = ((100_000 - 448) // 224 + 1) ** 2
    assert 0.2 * n_all < len(df) < 0.6 * n_all
    # tiles aligned with the mask grid (448 = 14 mask px, starts multiples of 7 mask px): exact block means
    rng = np.random.default_rng(0)
    for i in rng.choice(len(df), 50, replace=False):
        x, y = df.x.iloc[i] // 32, df.y.iloc[i] // 32
        assert df.tissue_fraction.iloc[i] == pytest.approx(mask[y : y + 14, x : x + 14].mean())


def test_default_mask_detects_tissue(tmp_path):
    pytest.importorskip("openslide")
    from biomodal.datasets import write_pyramid_tiff
    from biomodal.io import read_slide

    img = np.full((1024, 1024, 3), 240, np.uint8)
    img[:, 512:] = (200, 110, 170)  # right half is tissue
    write_pyramid_tiff(tmp_path / "half.tiff", img, mpp=1.0, n_levels=3)
    slide = read_slide(tmp_path / "half.tiff")
    df = tile(slide, tile_size_um=128)
    assert len(df) == 4 * 8 and (df.x >= 512).all()
    mask = detect_tissue(slide, mpp=4.0)
    assert tile(slide, tile_size_um=128, mask=mask).equals(df)


@pytest.mark.realdata
def test_cmu_tiles(shared_data):
    from biomodal.io import read_slide

    slide = read_slide(shared_data / "wsi" / "CMU-1-Small-Region.svs")
    df = tile(slide, tile_px=224, mpp=0.5)
    n_all = int((2220 - 224.45) // 224.45 + 1) * int((2967 - 224.45) // 224.45 + 1)
    assert 20 < len(df) < n_all
    # tiles on tissue are darker and more saturated than the glass ones
    on = np.mean([slide.read_region((x, y), (56, 56), mpp=2.0).mean() for x, y in zip(df.x, df.y)])
    alltiles = tile(slide, tile_px=224, mpp=0.5, min_tissue_fraction=0)
    off = alltiles.merge(df[["x", "y"]], how="left", indicator=True).query("_merge == 'left_only'")
    glass = np.mean([slide.read_region((x, y), (56, 56), mpp=2.0).mean() for x, y in zip(off.x, off.y)])
    assert on < glass - 15
