"""Tests of SpotTileDataset on the generated demo dataset (tiles checked against OpenSlide)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import sparse

from biomodal.data import SpotTileDataset
from biomodal.data.transforms import Compose, RandomFlip, RandomRot90, ToTensor
from biomodal.errors import ConfigError, DataError, ReaderError

openslide = pytest.importorskip("openslide")


def _dense(m):
    return m.toarray() if sparse.issparse(m) else np.asarray(m)


@pytest.fixture(scope="module")
def ds(demo_dataset):
    return SpotTileDataset(demo_dataset, tile_um=56.0, mpp=0.5)


def test_items_and_alignment(demo_dataset, ds):
    adatas = demo_dataset.adatas()
    assert len(ds) == sum(a.n_obs for a in adatas)
    assert len(ds.obs) == len(ds) and ds.obs.index.is_unique
    assert ds.tile_px == 112
    item = ds[7]
    assert item["histology"].shape == (3, 112, 112) and item["histology"].dtype == torch.float32
    assert 0.0 <= float(item["histology"].min()) and float(item["histology"].max()) <= 1.0
    assert item["expression"].shape == (len(ds.gene_names),) and item["expression"].dtype == torch.float32
    for key in ("batch_code", "subject", "index", "tissue_type"):
        assert item[key].dtype == torch.int64 and item[key].ndim == 0
    assert int(item["index"]) == 7
    # Codes agree with obs.
    for i in (0, 100, len(ds) - 1):
        it = ds[i]
        assert ds.batch_categories[int(it["batch_code"])] == str(ds.obs["batch"].iloc[i])
        assert ds.subject_categories[int(it["subject"])] == str(ds.obs["donor"].iloc[i])
        assert ds.label_categories["tissue_type"][int(it["tissue_type"])] == str(
            ds.obs["tissue_type"].iloc[i]
        )
    # genes=None: expression is X as stored.
    x = np.concatenate([_dense(a.X) for a in adatas])
    np.testing.assert_array_equal(ds.expression, x)
    assert ds.gene_names == list(adatas[0].var_names)
    assert "SpotTileDataset(spots=" in repr(ds) and "112 px" in repr(ds)


def test_native_tile_equals_openslide_crop(ds):
    for i in (3, 150):
        a_xy = ds._xy[i]
        path = ds._slide_paths[ds._section[i]]
        with openslide.OpenSlide(str(path)) as slide:
            ref = np.asarray(
                slide.read_region((round(a_xy[0] - 56), round(a_xy[1] - 56)), 0, (112, 112)).convert("RGB")
            )
        np.testing.assert_array_equal(ds.tile(i), ref)


def test_resampled_tile_matches_block_mean(demo_dataset):
    d = SpotTileDataset(demo_dataset, tile_um=112.0, mpp=1.0)
    assert d.tile_px == 112
    i = 42
    cx, cy = d._xy[i]
    with openslide.OpenSlide(str(d._slide_paths[d._section[i]])) as slide:
        full = np.asarray(slide.read_region((round(cx - 112), round(cy - 112)), 0, (224, 224)).convert("RGB"))
    ref = full.astype(float).reshape(112, 2, 112, 2, 3).mean((1, 3))
    assert np.abs(d.tile(i).astype(float) - ref).mean() < 6.0


def test_tile_px_wins_and_spec(demo_dataset):
    d = SpotTileDataset(demo_dataset, tile_um=112.0, tile_px=64)
    assert d.tile(0).shape == (64, 64, 3)
    spec = d.spec
    assert spec["tile_px"] == 64 and spec["mpp"] == pytest.approx(112 / 64) and spec["tile_um"] == 112.0
    assert spec["genes"] == d.gene_names and spec["batch_categories"] == d.batch_categories


def test_gene_pipeline_output(demo_dataset):
    from biomodal.pp import GenePipeline

    train = demo_dataset.adatas("train")
    gp = GenePipeline(n_top_genes=30).fit(train)
    d = SpotTileDataset(demo_dataset, genes=gp)
    assert d.gene_names == gp.var_names_
    test = demo_dataset.read("d1_s1")
    start = int(np.nonzero(d.obs["sample"].astype(str).to_numpy() == "d1_s1")[0][0])
    np.testing.assert_allclose(d.expression[start : start + test.n_obs], gp.transform(test), rtol=1e-6)
    assert d.spec["normalisation"]["var_names"] == gp.var_names_
    with pytest.raises(ConfigError, match="not fitted"):
        SpotTileDataset(demo_dataset, genes=GenePipeline())


def test_caches_agree(demo_dataset):
    plain = SpotTileDataset(demo_dataset, tile_um=40.0, mpp=2.0)
    mem = SpotTileDataset(demo_dataset, tile_um=40.0, mpp=2.0, cache="memory")
    pre = SpotTileDataset(demo_dataset, tile_um=40.0, mpp=2.0, cache="preload")
    assert pre._tiles.shape == (len(pre), 20, 20, 3)
    for i in (0, 17, len(plain) - 1):
        np.testing.assert_array_equal(plain.tile(i), mem.tile(i))
        np.testing.assert_array_equal(plain.tile(i), pre.tile(i))
    assert set(mem._memory) == {0, 17, len(plain) - 1}


def test_dataloader_workers_match_single_process(demo_dataset):
    d = SpotTileDataset(demo_dataset, tile_um=40.0, mpp=2.0)
    idx = list(range(0, 40))
    ref = torch.stack([d[i]["histology"] for i in idx])
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(d, idx), batch_size=10, num_workers=2)
    got = torch.cat([b["histology"] for b in loader])
    assert torch.equal(got, ref)


def test_relative_slide_paths(demo_dataset, tmp_path, monkeypatch):
    import anndata as ad

    h5ad = demo_dataset.sections[0]["h5ad_path"]
    monkeypatch.chdir(tmp_path)
    raw = ad.read_h5ad(h5ad)  # slide_path is relative to the h5ad's folder
    with pytest.raises(ReaderError, match="not found"):
        SpotTileDataset([raw])
    assert len(SpotTileDataset([raw], root=demo_dataset.root)) == raw.n_obs
    assert len(SpotTileDataset([h5ad])) == raw.n_obs  # a path resolves against its own folder


def test_bad_inputs(demo_dataset):
    a = demo_dataset.read("d0_s0")
    with pytest.raises(DataError, match="nope"):
        SpotTileDataset([a], obs_keys=["nope"])
    with pytest.raises(ConfigError, match="clashes"):
        SpotTileDataset([a], obs_keys=["batch_code"])
    with pytest.raises(ConfigError, match="cache"):
        SpotTileDataset([a], cache="disk")
    b = a.copy()
    del b.uns["spatial"]["slide_path"]
    with pytest.raises(DataError, match="slide_path"):
        SpotTileDataset([b])
    c = demo_dataset.read("d0_s1")[:, :50]
    with pytest.raises(DataError, match="var_names"):
        SpotTileDataset([a, c])


def test_seeded_augmentation_per_index_and_epoch(demo_dataset):
    aug = Compose([RandomFlip(), RandomRot90(), ToTensor()])
    d = SpotTileDataset(demo_dataset, tile_um=40.0, mpp=2.0, transform=aug, seed=1)
    first = [d[i]["histology"] for i in range(12)]
    assert all(torch.equal(a, d[i]["histology"]) for i, a in enumerate(first))
    d.set_epoch(1)
    assert any(not torch.equal(a, d[i]["histology"]) for i, a in enumerate(first))
