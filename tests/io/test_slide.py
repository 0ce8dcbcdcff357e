from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from biomodal.datasets import write_pyramid_tiff
from biomodal.errors import ConfigError, MissingMetadataError, ReaderError, UnsupportedFormatError
from biomodal.io import Slide, read_slide
from tests.io._pyramid import synthetic_he

openslide = pytest.importorskip("openslide")


def area_resize(img: np.ndarray, out_w: int, out_h: int, fw: float | None = None, fh: float | None = None):
    """Exact area-average resampling of the box [0, fw) x [0, fh) of ``img`` (independent reference)."""
    fh = img.shape[0] if fh is None else fh
    fw = img.shape[1] if fw is None else fw

    def weights(n_out: int, extent: float, n_in: int) -> np.ndarray:
        edges = np.linspace(0.0, extent, n_out + 1)
        lo = np.arange(n_in)[None, :]
        overlap = np.clip(np.minimum(edges[1:, None], lo + 1) - np.maximum(edges[:-1, None], lo), 0, None)
        return overlap / overlap.sum(axis=1, keepdims=True)

    wy, wx = weights(out_h, fh, img.shape[0]), weights(out_w, fw, img.shape[1])
    rows = np.tensordot(wy, img.astype(np.float64), axes=(1, 0))  # (out_h, in_w, c)
    return np.einsum("ikc,lk->ilc", rows, wx, optimize=True)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    img = synthetic_he(1024, 768, seed=1)
    path = tmp_path_factory.mktemp("pyr") / "slide.tiff"
    write_pyramid_tiff(path, img, mpp=0.5, n_levels=3)
    return path, img


# -- synthetic pyramids ------------------------------------------------------------------------------
def test_pyramid_metadata_and_levels(pyramid):
    path, _ = pyramid
    with read_slide(path) as slide:
        assert slide.backend == "openslide/generic-tiff"
        assert slide.dimensions == (1024, 768)
        assert slide.level_count == 3
        assert slide.level_dimensions == ((1024, 768), (512, 384), (256, 192))
        assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        assert slide.mpp == pytest.approx(0.5)
        assert slide.has_mpp and slide.mpp_source == "metadata"
        assert slide.best_level(1.95) == 0 and slide.best_level(1.99) == 1 and slide.best_level(100) == 2
        r = repr(slide)
        assert "slide.tiff" in r and "1024x768" in r and "3 levels" in r and "0.5" in r


def test_read_native_matches_openslide(pyramid):
    path, _ = pyramid
    slide = read_slide(path)
    ref = np.asarray(openslide.OpenSlide(str(path)).read_region((100, 50), 0, (300, 200)).convert("RGB"))
    out = slide.read_region((100, 50), (300, 200))
    assert out.shape == (200, 300, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, ref)


def test_read_at_mpp_uses_best_level(pyramid):
    path, _ = pyramid
    slide = read_slide(path)
    osr = openslide.OpenSlide(str(path))
    # 1.0 um/px on a 0.5 um/px slide is exactly level 1: no resampling, identical pixels.
    lvl1 = np.asarray(osr.read_region((200, 120), 1, (128, 96)).convert("RGB"))
    np.testing.assert_array_equal(slide.read_region((200, 120), (128, 96), mpp=1.0), lvl1)
    # forcing level 0 at the same mpp downsamples level 0 instead (close, not identical)
    forced = slide.read_region((200, 120), (128, 96), mpp=1.0, level=0)
    assert np.abs(forced.astype(int) - lvl1).mean() < 4
    # level=1 without mpp reads level pixels (OpenSlide semantics)
    np.testing.assert_array_equal(slide.read_region((200, 120), (128, 96), level=1), lvl1)


def test_read_at_fractional_mpp_equals_area_downscale(pyramid):
    path, img = pyramid
    slide = read_slide(path)
    # 1.5 um/px: best level is 1 (2x), resampled by 1.5 from there; compare with the exact
    # area average of the original (pre-JPEG) level-0 array over the same 300x300 um box.
    out = slide.read_region((90, 60), (200, 150), mpp=1.5).astype(np.float64)
    ref = area_resize(img[60 : 60 + 450, 90 : 90 + 600], 200, 150)
    assert out.shape == ref.shape
    assert np.abs(out - ref).mean() < 4.0
    assert np.abs(out - ref).max() < 80  # JPEG + level-1 rounding, no misalignment


def test_upsampling_and_outside_padding(pyramid):
    path, _ = pyramid
    slide = read_slide(path)
    up = slide.read_region((500, 400), (64, 64), mpp=0.25)  # 2x upsample of a 32x32 box
    native = slide.read_region((500, 400), (32, 32))
    small = np.asarray(Image.fromarray(up).resize((32, 32), Image.Resampling.BOX)).astype(int)
    assert np.abs(small - native).mean() < 4
    # region hanging over the bottom-right corner: outside is white, inside matches
    out = slide.read_region((1000, 700), (50, 100))
    assert (out[68:, :] == 255).all() and (out[:, 24:] == 255).all()
    np.testing.assert_array_equal(out[:68, :24], slide.read_region((1000, 700), (24, 68)))
    # entirely outside, including negative coordinates: an error naming the file, not a white tile
    with pytest.raises(ConfigError, match=r"slide\.tiff.*entirely outside the slide \(1024x768"):
        slide.read_region((-500, -500), (40, 30), mpp=2.0)


def test_chunked_large_read_matches_single_read(pyramid, monkeypatch):
    import biomodal.io.slide as slide_mod

    path, _ = pyramid
    slide = read_slide(path)
    whole = slide.read_region((0, 0), (341, 256), mpp=1.5)
    monkeypatch.setattr(slide_mod, "_CHUNK_PIXELS", 5000)
    monkeypatch.setattr(slide_mod, "_BLOCK", 60)
    chunked = slide.read_region((0, 0), (341, 256), mpp=1.5)
    assert chunked.shape == whole.shape
    assert np.abs(chunked.astype(int) - whole).mean() < 2.0


def test_thumbnail(pyramid):
    path, img = pyramid
    slide = read_slide(path)
    th = slide.thumbnail(128)
    assert th.shape == (96, 128, 3)
    ref = area_resize(img, 128, 96)
    assert np.abs(th - ref).mean() < 4
    assert slide.thumbnail((64, 64)).shape == (48, 64, 3)
    assert slide.thumbnail(5000).shape == (768, 1024, 3)  # never upsamples


def test_user_mpp_overrides_and_validation(pyramid, tmp_path):
    path, _ = pyramid
    slide = read_slide(path, mpp=0.25)
    assert slide.mpp == 0.25 and slide.mpp_source == "user"
    for bad in (0, -1, float("nan"), "x"):
        with pytest.raises(ConfigError, match="mpp"):
            read_slide(path, mpp=bad)
    with pytest.raises(ConfigError, match="level"):
        slide.read_region((0, 0), (4, 4), level=7)
    with pytest.raises(ConfigError, match="size"):
        slide.read_region((0, 0), (0, 4))


def test_missing_mpp_raises_only_when_needed(tmp_path):
    path = tmp_path / "nompp.tiff"
    write_pyramid_tiff(path, synthetic_he(512, 512), mpp=None, n_levels=2)
    slide = read_slide(path)  # opening works
    assert not slide.has_mpp and slide.mpp_source is None
    assert "unknown" in repr(slide)
    assert slide.read_region((0, 0), (16, 16)).shape == (16, 16, 3)  # native reads need no mpp
    with pytest.raises(MissingMetadataError, match=r"nompp\.tiff.*mpp="):
        _ = slide.mpp
    with pytest.raises(MissingMetadataError, match=r"nompp\.tiff"):
        slide.read_region((0, 0), (16, 16), mpp=1.0)
    assert read_slide(path, mpp=0.5).read_region((0, 0), (16, 16), mpp=1.0).shape == (16, 16, 3)


def test_pickle_reopens_lazily(pyramid):
    path, _ = pyramid
    slide = read_slide(path, mpp=0.5)
    blob = pickle.dumps(slide)
    assert len(blob) < 1000  # path + mpp only, no handle or pixels
    clone = pickle.loads(blob)
    assert clone._handle is None and "not opened" in repr(clone)
    np.testing.assert_array_equal(
        clone.read_region((10, 10), (50, 40)), slide.read_region((10, 10), (50, 40))
    )
    assert clone._handle is not None and clone.mpp == 0.5


def test_close_and_reopen(pyramid):
    path, _ = pyramid
    with read_slide(path) as slide:
        a = slide.read_region((0, 0), (8, 8))
    assert slide._handle is None
    np.testing.assert_array_equal(slide.read_region((0, 0), (8, 8)), a)


def test_plain_images_via_pillow(tmp_path):
    img = synthetic_he(300, 200, seed=3)
    # PNG with a transparent hole -> white
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    rgba[:20, :30, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "a.png")
    s = read_slide(tmp_path / "a.png")
    assert s.backend == "pillow/png" and s.dimensions == (300, 200) and s.level_count == 1
    assert not s.has_mpp
    out = s.read_region((0, 0), (300, 200))
    assert (out[:20, :30] == 255).all()
    np.testing.assert_array_equal(out[20:, 30:], img[20:, 30:])
    # striped TIFF (OpenSlide refuses it) with resolution tags -> Pillow with mpp from the tags
    import tifffile

    tifffile.imwrite(
        tmp_path / "s.tif",
        img,
        photometric="rgb",
        resolution=(1e4 / 0.8, 1e4 / 0.8),
        resolutionunit="CENTIMETER",
    )
    t = read_slide(tmp_path / "s.tif")
    assert t.backend == "pillow/tiff" and t.mpp == pytest.approx(0.8, rel=1e-4)
    np.testing.assert_array_equal(t.read_region((-10, 5), (40, 40))[:, 10:], img[5:45, :30])
    assert (t.read_region((-10, 5), (40, 40))[:, :10] == 255).all()
    # JPEG dpi is not trusted as a physical resolution
    Image.fromarray(img).save(tmp_path / "j.jpg", dpi=(300, 300))
    assert not read_slide(tmp_path / "j.jpg").has_mpp


def test_bad_inputs(tmp_path):
    with pytest.raises(ReaderError, match=r"missing\.svs.*not found"):
        read_slide(tmp_path / "missing.svs")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(UnsupportedFormatError, match=r"notes\.txt.*OpenSlide"):
        read_slide(tmp_path / "notes.txt")
    (tmp_path / "trunc.tiff").write_bytes(b"II*\x00" + b"\x00" * 20)
    with pytest.raises(ReaderError, match=r"trunc\.tiff"):
        read_slide(tmp_path / "trunc.tiff")
    with pytest.raises(UnsupportedFormatError, match="folder"):
        read_slide(tmp_path)
    assert issubclass(UnsupportedFormatError, ReaderError)


# -- real files ---------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_cmu_svs(shared_data):
    path = shared_data / "wsi" / "CMU-1-Small-Region.svs"
    slide = read_slide(path)
    assert isinstance(slide, Slide)
    assert slide.dimensions == (2220, 2967) and slide.level_count == 1
    assert slide.mpp == pytest.approx(0.499)
    assert slide.properties["openslide.vendor"] == "aperio"
    osr = openslide.OpenSlide(str(path))
    level0 = np.asarray(osr.read_region((600, 900), 0, (600, 600)).convert("RGB"))
    # 0.5 um/px on a 0.499 um/px slide: 224 px cover 224.4 level-0 px, within half a pixel -> raw read
    np.testing.assert_array_equal(slide.read_region((600, 900), (224, 224), mpp=0.5), level0[:224, :224])
    # 1.0 um/px equals an exact area downscale of the level-0 pixels covering 224 / 0.499 px
    out = slide.read_region((600, 900), (224, 224), mpp=1.0).astype(np.float64)
    fw = 224 * 1.0 / 0.499
    ref = area_resize(level0, 224, 224, fw, fw)
    assert np.abs(out - ref).mean() < 4.0  # Pillow's box filter weighs edge pixels by centre, not overlap
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.98


@pytest.mark.realdata
def test_tcga_svs_without_mpp(shared_data):
    path = shared_data / "wsi" / "TCGA-CR-7395-01A-01-TS1.svs"
    slide = read_slide(path)
    assert slide.level_count == 2 and slide.level_dimensions == ((4443, 3567), (2221, 1783))
    assert not slide.has_mpp
    with pytest.raises(MissingMetadataError, match=r"TCGA-CR-7395.*mpp="):
        slide.read_region((0, 0), (64, 64), mpp=1.0)
    slide = read_slide(path, mpp=0.25)
    # 0.5 um/px = downsample 2 -> level 1 (downsample 2.0005) without resampling
    lvl1 = np.asarray(openslide.OpenSlide(str(path)).read_region((1000, 800), 1, (224, 224)).convert("RGB"))
    np.testing.assert_array_equal(slide.read_region((1000, 800), (224, 224), mpp=0.5), lvl1)
    assert slide.thumbnail(256).shape == (206, 256, 3)


@pytest.mark.realdata
def test_her2st_jpeg_plain_image(shared_data):
    path = shared_data / "spatial" / "her2st" / "C2" / "image.jpg"
    slide = read_slide(path)
    assert slide.backend == "pillow/jpeg"
    assert slide.dimensions == (9274, 9911) and slide.level_count == 1
    assert not slide.has_mpp  # JPEG dpi is ignored
    with pytest.raises(MissingMetadataError, match=r"image\.jpg"):
        slide.read_region((0, 0), (8, 8), mpp=1.0)
    Image.MAX_IMAGE_PIXELS, old = None, Image.MAX_IMAGE_PIXELS
    try:
        with Image.open(path) as im:
            ref = np.asarray(im.crop((6800, 3400, 7056, 3656)).convert("RGB"))
    finally:
        Image.MAX_IMAGE_PIXELS = old
    np.testing.assert_array_equal(slide.read_region((6800, 3400), (256, 256)), ref)
    s2 = read_slide(path, mpp=0.78)
    tile = s2.read_region((6800, 3400), (128, 128), mpp=1.56)
    assert np.abs(tile - area_resize(ref, 128, 128)).mean() < 2
    assert s2.thumbnail(500).shape == (500, 468, 3)


@pytest.mark.realdata
def test_visium_hires_png(shared_data):
    path = shared_data / "spatial" / "visium_spaceranger_1.0.0" / "spatial" / "tissue_hires_image.png"
    slide = read_slide(path)
    assert slide.backend == "pillow/png" and slide.dimensions == (2000, 2000)
    out = slide.read_region((0, 0), (100, 100))
    assert out.shape == (100, 100, 3) and out.dtype == np.uint8


@pytest.mark.realdata
def test_openslide_fixture_files(shared_data):
    bad = shared_data / "wsi" / "bad"
    with pytest.raises(ReaderError, match=r"unreadable\.svs"):
        read_slide(bad / "unreadable.svs")
    with pytest.raises(ReaderError, match=r"unopenable\.tiff.*compression"):
        read_slide(bad / "unopenable.tiff")
    small = read_slide(bad / "small.svs")
    assert small.dimensions == (16, 16) and small.mpp == pytest.approx(0.499)
    boxes = read_slide(bad / "boxes.tiff")
    assert boxes.level_count == 4 and boxes.dimensions == (300, 250)
    assert boxes.mpp == pytest.approx(1e4 / 28.346456527709961)  # from the TIFF resolution tags
    assert boxes.read_region((0, 0), (150, 125), level=1).shape == (125, 150, 3)
