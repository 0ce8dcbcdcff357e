from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import time

import numpy as np
import pandas as pd
import pytest
import torch

from biomodal.data import TileDataset
from biomodal.datasets import write_pyramid_tiff
from biomodal.errors import ConfigError, DataError, MissingMetadataError
from biomodal.io import read_slide
from biomodal.pp import tile
from tests.io._pyramid import synthetic_he

pytest.importorskip("openslide")


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    img = synthetic_he(1024, 1024, seed=4)
    path = tmp_path_factory.mktemp("tiles") / "s.tiff"
    write_pyramid_tiff(path, img, mpp=0.5, n_levels=3)
    return path


@pytest.fixture(scope="module")
def coords(slide_path):
    return tile(read_slide(slide_path), tile_px=64, mpp=1.0, min_tissue_fraction=0)


class PidTiles(TileDataset):
    """Reports which process served a sample and which process opened the slide handle."""

    def __getitem__(self, index):
        out = super().__getitem__(index)
        out["pid"] = os.getpid()
        out["handle_pid"] = self.slide._pid
        return out


def test_items_match_direct_reads(slide_path, coords):
    slide = read_slide(slide_path)
    ds = TileDataset(slide_path, coords, tile_px=64, mpp=1.0)
    assert len(ds) == len(coords) == 64
    as_float = TileDataset(slide_path, coords, tile_px=64, mpp=1.0, dtype="float32")
    for i in (0, 17, 63, -1):
        item = ds[i]
        img = item["histology"]
        assert img.dtype == torch.uint8 and img.shape == (3, 64, 64) and img.is_contiguous()
        row = coords.iloc[i]
        assert (item["x"], item["y"]) == (row.x, row.y)
        ref = slide.read_region((row.x, row.y), (64, 64), mpp=1.0)
        np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), ref)
        f = as_float[i]["histology"]
        assert f.dtype == torch.float32 and 0.0 <= f.min() and f.max() <= 1.0
        np.testing.assert_allclose(f.permute(1, 2, 0).numpy(), ref.astype(np.float32) / 255, atol=1e-6)
    with pytest.raises(IndexError):
        ds[64]
    r = repr(ds)
    assert "s.tiff" in r and "64 tiles" in r and "64px" in r and "1 um/px" in r and "uint8" in r
    with pytest.raises(ConfigError, match="dtype"):
        TileDataset(slide_path, coords, tile_px=64, mpp=1.0, dtype="float16")


def test_batched_reads_in_slide_order_return_items_in_asked_order(slide_path, coords):
    ds = TileDataset(slide_path, coords, tile_px=32, mpp=1.0)
    asked = [40, 3, 63, 0, 17, -1]
    calls: list[int] = []
    original = ds.read_tile

    def spy(i: int) -> np.ndarray:
        calls.append(i)
        return original(i)

    ds.read_tile = spy  # type: ignore[method-assign]
    items = ds.__getitems__(asked)
    keys = [(coords.y.iloc[i], coords.x.iloc[i]) for i in calls]
    assert keys == sorted(keys) and sorted(calls) == sorted(i % len(ds) for i in asked)
    for k, i in enumerate(asked):
        torch.testing.assert_close(items[k]["histology"], ds[i]["histology"])
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False)
    batch = next(iter(loader))  # torch calls __getitems__ for a whole batch
    assert batch["histology"].dtype == torch.uint8 and batch["histology"].shape == (8, 3, 32, 32)
    torch.testing.assert_close(batch["histology"][5], ds[5]["histology"])
    with pytest.raises(IndexError):
        ds.__getitems__([0, 64])


def test_transform_and_modality(slide_path, coords):
    ds = TileDataset(
        read_slide(slide_path), coords, tile_px=32, mpp=2.0, transform=lambda t: 1 - t, modality="image"
    )
    plain = TileDataset(read_slide(slide_path), coords, tile_px=32, mpp=2.0)
    assert ds[5]["image"].dtype == torch.float32  # a transform receives [0, 1] floats
    torch.testing.assert_close(ds[5]["image"], 1 - plain[5]["histology"].float() / 255)
    with pytest.raises(ConfigError, match="histo"):
        TileDataset(slide_path, coords, tile_px=32, mpp=2.0, modality="histo")


def test_bad_input(slide_path, tmp_path):
    with pytest.raises(DataError, match="'x' and 'y'"):
        TileDataset(slide_path, pd.DataFrame({"a": [1]}), tile_px=32, mpp=1.0)
    with pytest.raises(ConfigError, match="tile_px"):
        TileDataset(slide_path, pd.DataFrame({"x": [0], "y": [0]}), tile_px=0, mpp=1.0)
    nompp = tmp_path / "n.tiff"
    write_pyramid_tiff(nompp, synthetic_he(256, 256), mpp=None, n_levels=1)
    with pytest.raises(MissingMetadataError, match=r"n\.tiff"):
        TileDataset(nompp, pd.DataFrame({"x": [0], "y": [0]}), tile_px=32, mpp=1.0)
    native = TileDataset(nompp, pd.DataFrame({"x": [0], "y": [0]}), tile_px=32, mpp=None)
    assert native[0]["histology"].shape == (3, 32, 32)


def test_dataloader_workers_open_their_own_handles(slide_path, coords):
    slide = read_slide(slide_path)
    ds = PidTiles(slide, coords, tile_px=64, mpp=1.0)
    parent = os.getpid()
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, multiprocessing_context="fork")
    batches = list(loader)
    imgs = torch.cat([b["histology"] for b in batches])
    pids = torch.cat([b["pid"] for b in batches])
    handle_pids = torch.cat([b["handle_pid"] for b in batches])
    assert imgs.shape == (64, 3, 64, 64)
    assert len(set(pids.tolist())) == 2 and parent not in pids.tolist()
    assert torch.equal(pids, handle_pids)  # every worker reopened the slide after fork
    ref = torch.stack([ds[i]["histology"] for i in range(len(ds))])
    torch.testing.assert_close(imgs, ref)
    assert torch.equal(torch.cat([b["x"] for b in batches]), torch.as_tensor(coords.x.values))
    assert slide._pid == parent  # the parent's handle is untouched


def test_pickle_roundtrip(slide_path, coords, tmp_path):
    ds = TileDataset(slide_path, coords, tile_px=64, mpp=1.0, cache_dir=tmp_path)
    ds[3]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.slide._handle is None and clone.cache._data is None
    torch.testing.assert_close(clone[3]["histology"], ds[3]["histology"])


def test_cache_reuse_and_keys(slide_path, coords, tmp_path, monkeypatch):
    ds = TileDataset(slide_path, coords, tile_px=64, mpp=1.0, cache_dir=tmp_path)
    first = torch.stack([ds[i]["histology"] for i in range(len(ds))])
    assert ds.cache.n_done() == len(ds) and "cache=64/64" in repr(ds)
    again = TileDataset(slide_path, coords, tile_px=64, mpp=1.0, cache_dir=tmp_path)
    assert again.cache.data_path == ds.cache.data_path and again.cache.n_done() == len(ds)

    def boom(*a, **k):
        raise AssertionError("slide read although the tile was cached")

    monkeypatch.setattr(again.slide, "read_region", boom)
    torch.testing.assert_close(torch.stack([again[i]["histology"] for i in range(len(again))]), first)
    other = TileDataset(slide_path, coords, tile_px=32, mpp=1.0, cache_dir=tmp_path)
    assert other.cache.data_path != ds.cache.data_path and other.cache.n_done() == 0
    shifted = TileDataset(slide_path, coords.assign(x=coords.x + 1), tile_px=64, mpp=1.0, cache_dir=tmp_path)
    assert shifted.cache.data_path != ds.cache.data_path
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left behind


def test_unflagged_tile_is_never_trusted(slide_path, coords, tmp_path):
    ds = TileDataset(slide_path, coords, tile_px=64, mpp=1.0, cache_dir=tmp_path)
    truth = ds[7]["histology"].clone()
    ds.cache._done[7] = 0  # as if the writer died after (or while) writing the pixels
    ds.cache._data[7] = 0  # half-written garbage
    fresh = TileDataset(slide_path, coords, tile_px=64, mpp=1.0, cache_dir=tmp_path)
    torch.testing.assert_close(fresh[7]["histology"], truth)


def _fill_forever(path, coords, cache_dir):
    ds = TileDataset(path, coords, tile_px=64, mpp=1.0, cache_dir=cache_dir)
    while True:
        for i in range(len(ds)):
            ds.read_tile(i)
            time.sleep(0.002)


def test_killed_writer_leaves_only_valid_tiles(slide_path, coords, tmp_path):
    ds = TileDataset(slide_path, coords, tile_px=64, mpp=1.0, cache_dir=tmp_path)
    proc = mp.get_context("fork").Process(target=_fill_forever, args=(slide_path, coords, tmp_path))
    proc.start()
    deadline = time.time() + 30
    while ds.cache.n_done() < 10 and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    done = np.flatnonzero(np.asarray(ds.cache._done))
    assert len(done) >= 10
    nocache = TileDataset(slide_path, coords, tile_px=64, mpp=1.0)
    for i in done:
        np.testing.assert_array_equal(ds.read_tile(int(i)), nocache.read_tile(int(i)))


@pytest.mark.realdata
def test_cmu_tiles_at_half_micron(shared_data):
    import openslide

    path = shared_data / "wsi" / "CMU-1-Small-Region.svs"
    coords = tile(read_slide(path), tile_px=224, mpp=0.5).head(5)
    ds = TileDataset(path, coords, tile_px=224, mpp=0.5)
    osr = openslide.OpenSlide(str(path))
    for i in range(len(ds)):
        x, y = int(coords.x.iloc[i]), int(coords.y.iloc[i])
        raw = np.asarray(osr.read_region((x, y), 0, (224, 224)).convert("RGB"))
        np.testing.assert_array_equal(ds[i]["histology"].permute(1, 2, 0).numpy(), raw)  # uint8, exact
