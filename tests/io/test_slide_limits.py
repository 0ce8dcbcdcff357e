"""Bounded reads: a read (output and pyramid level) or a tile grid over the limit fails before allocating."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from biomodal.errors import ConfigError, UnsupportedFormatError
from biomodal.io import read_slide
from biomodal.io import slide as slide_module
from biomodal.pp import tiling

pytestmark = pytest.mark.realdata
openslide = pytest.importorskip("openslide")


@pytest.fixture
def cmu(shared_data):
    with read_slide(shared_data / "wsi" / "CMU-1-Small-Region.svs") as s:
        yield s


def _refused(fn, match: str) -> None:
    """``fn`` raises ConfigError matching ``match`` and allocates almost nothing on the way."""
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=match):
            fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, peak


def test_huge_upsampled_output_is_refused_before_allocating(cmu):
    # the reproduction: 100000^2 output px from a 2000^2 px footprint (grew to 23 GB)
    _refused(
        lambda: cmu.read_region((0, 0), (100000, 100000), mpp=0.01),
        r"CMU-1-Small-Region\.svs: a read of 100000x100000 = 10,000,000,000 px "
        r".* read limit of 268,435,456 px",
    )


def test_huge_native_read_is_refused(cmu):
    _refused(lambda: cmu.read_region((0, 0), (200000, 200000)), r"200000x200000 .*exceeds the read limit")


def test_level_read_over_the_limit_is_refused(cmu, monkeypatch):
    # small output, but 2000x2000 level-0 px would be read to make it
    monkeypatch.setattr(slide_module, "MAX_READ_PIXELS", 1_000_000)
    _refused(
        lambda: cmu.read_region((0, 0), (200, 200), mpp=10 * cmu.mpp),
        r"needs 2000x2000 = 4,000,000 px of pyramid level 0, more than the read limit of 1,000,000 px",
    )
    with pytest.raises(ConfigError, match=r"needs 2220x2967 = 6,586,740 px of pyramid level 0"):
        cmu.thumbnail(64)


def test_limit_comes_from_the_environment_and_the_module_setting(cmu, monkeypatch):
    assert slide_module.max_read_pixels() == slide_module.DEFAULT_MAX_READ_PIXELS == 2**28
    monkeypatch.setenv("BIOMODAL_MAX_READ_PIXELS", "1000")
    assert slide_module.max_read_pixels() == 1000
    with pytest.raises(ConfigError, match=r"a read of 40x40 = 1,600 px .*read limit of 1,000 px"):
        cmu.read_region((0, 0), (40, 40))
    assert cmu.read_region((0, 0), (20, 20)).shape == (20, 20, 3)
    monkeypatch.setattr(slide_module, "MAX_READ_PIXELS", 5000)  # the module setting wins
    assert cmu.read_region((0, 0), (40, 40)).shape == (40, 40, 3)
    monkeypatch.setenv("BIOMODAL_MAX_READ_PIXELS", "lots")
    monkeypatch.setattr(slide_module, "MAX_READ_PIXELS", None)
    with pytest.raises(ConfigError, match=r"BIOMODAL_MAX_READ_PIXELS='lots' is invalid"):
        cmu.read_region((0, 0), (4, 4))


def test_plain_image_over_the_limit_is_refused_from_its_header(tmp_path, monkeypatch):
    from PIL import Image

    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setenv("BIOMODAL_MAX_READ_PIXELS", "100000")
    with pytest.raises(
        UnsupportedFormatError, match=r"big\.png: .*400x300 = 120000 px .*read limit is 100000"
    ):
        read_slide(tmp_path / "big.png")


def test_tile_grid_over_the_limit_is_refused(cmu, monkeypatch):
    _refused(
        lambda: tiling.tile(cmu, tile_px=1e-3, min_tissue_fraction=0),
        r"CMU-1-Small-Region\.svs: a grid of .* tiles .*exceeds the limit of 16,777,216 tiles",
    )
    monkeypatch.setenv("BIOMODAL_MAX_TILES", "10")
    with pytest.raises(ConfigError, match=r"a grid of 4x5 = 20 tiles"):
        tiling.tile(cmu, tile_px=512, min_tissue_fraction=0)
    monkeypatch.setenv("BIOMODAL_MAX_TILES", "20")
    assert len(tiling.tile(cmu, tile_px=512, min_tissue_fraction=0)) == 20


# -- readers that allocate from header values ------------------------------------------------------
def test_nifti_header_describing_more_data_than_the_file_holds_is_refused(tmp_path):
    nib = pytest.importorskip("nibabel")
    from biomodal.errors import ReaderError
    from biomodal.io._fmri import read_fmri

    data = np.random.default_rng(0).random((6, 6, 6, 10)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "bold.nii")
    assert read_fmri(tmp_path / "bold.nii").data.shape == (10, 216)
    raw = (tmp_path / "bold.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ReaderError, match=r"cut\.nii: the file looks truncated: .*shape \(6, 6, 6, 10\)"):
        read_fmri(tmp_path / "cut.nii")
