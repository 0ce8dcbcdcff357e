"""Corrupt and truncated copies of a real SVS fail at open with the file named; reads off the slide.

Each test damages a copy of the real CMU-1 region (``../shared/data/wsi``) in ``tmp_path``.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from biomodal.errors import BiomodalError, ConfigError, ReaderError
from biomodal.io import read_slide

pytestmark = pytest.mark.realdata
openslide = pytest.importorskip("openslide")
NAME = "CMU-1-Small-Region.svs"


@pytest.fixture
def svs(shared_data, tmp_path):
    dest = tmp_path / NAME
    shutil.copyfile(shared_data / "wsi" / NAME, dest)
    return dest


def _flip(path, offset: int, n: int = 1) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_metadata_byte_fails_at_open_naming_the_file(svs):
    # the reproduction: openslide-python raised a bare KeyError in dict(osr.properties)
    _flip(svs, svs.read_bytes().index(b"|AppMag = ") + 1)
    with pytest.raises(
        ReaderError, match=rf"{NAME}: metadata property .* cannot be read; the file looks corrupt"
    ):
        read_slide(svs)


def test_flipped_bytes_in_the_centre_tile_fail_at_open(svs):
    tifffile = pytest.importorskip("tifffile")
    with tifffile.TiffFile(svs) as tif:
        page = tif.pages[0]
        n_across = -(-page.imagewidth // page.tilewidth)
        # the tile holding the centre of level 0, which opening decodes
        row, col = (page.imagelength // 2) // page.tilelength, (page.imagewidth // 2) // page.tilewidth
        offset, count = page.dataoffsets[row * n_across + col], page.databytecounts[row * n_across + col]
    _flip(svs, offset + count // 3, 64)
    with pytest.raises(
        ReaderError, match=rf"{NAME}: OpenSlide opened the file but cannot decode .*looks corrupt"
    ):
        read_slide(svs)


def test_damaged_tile_elsewhere_fails_on_read_with_the_file_named(svs):
    tifffile = pytest.importorskip("tifffile")
    with tifffile.TiffFile(svs) as tif:
        page = tif.pages[0]
        n_across = -(-page.imagewidth // page.tilewidth)
        offset = page.dataoffsets[n_across + 8]  # row 1, column 8: not decoded at open
        x, y = 8 * page.tilewidth, page.tilelength
    _flip(svs, offset + 200, 64)
    slide = read_slide(svs)
    with pytest.raises(ReaderError, match=rf"{NAME}: failed to read region at \({x}, {y}\)"):
        slide.read_region((x, y), (240, 240))


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.7, 0.9, 0.99])
def test_truncated_copy_says_it_looks_truncated(svs, fraction):
    data = svs.read_bytes()
    svs.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ReaderError, match=rf"{NAME}: the file looks truncated .*the file is \d+ bytes but"):
        read_slide(svs)


def test_intact_copy_opens_and_is_not_called_truncated(svs):
    with read_slide(svs) as slide:
        assert slide.dimensions == (2220, 2967)
        assert slide.read_region((1000, 1000), (32, 32)).shape == (32, 32, 3)


@pytest.mark.parametrize("location", [(-100, -100), (2220, 0), (0, 2967), (-64, 500), (5000, 5000)], ids=str)
def test_read_entirely_off_the_slide_is_an_error_not_a_white_tile(svs, location):
    slide = read_slide(svs)
    with pytest.raises(
        ConfigError, match=rf"{NAME}: region at .*entirely outside the slide \(2220x2967 px\)"
    ):
        slide.read_region(location, (64, 64))


def test_read_partly_off_the_slide_is_padded_white(svs):
    slide = read_slide(svs)
    out = slide.read_region((-16, -8), (64, 64))
    assert (out[:8] == 255).all() and (out[:, :16] == 255).all()
    np.testing.assert_array_equal(out[8:, 16:], slide.read_region((0, 0), (48, 56)))


def test_shared_bad_fixtures_fail_with_biomodal_errors(shared_data):
    for name in ("unreadable.svs", "unopenable.tiff"):
        with pytest.raises(BiomodalError, match=name):
            read_slide(shared_data / "wsi" / "bad" / name).read_region((0, 0), (16, 16))
