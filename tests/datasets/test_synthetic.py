"""Tests of the synthetic multi-donor spatial demo dataset (ground truth is known)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from biomodal.datasets import make_demo_spatial
from biomodal.datasets.synthetic import DemoDataset, write_pyramid_tiff
from biomodal.errors import ConfigError


def _dense(m):
    return m.toarray() if sparse.issparse(m) else np.asarray(m)


def test_files_manifest_and_splits(demo_dataset):
    ds = demo_dataset
    assert isinstance(ds, DemoDataset)
    assert len(ds) == 4
    for name in ("manifest.csv", "generation.json", "README.md"):
        assert (ds.root / name).is_file()
    assert {s["split"] for s in ds.sections} == {"train", "val", "test"}
    # Two donors: donor0 trains; donor1 holds val (first section) and test.
    by = {s["sample"]: (s["donor"], s["split"]) for s in ds.sections}
    assert by == {
        "d0_s0": ("donor0", "train"),
        "d0_s1": ("donor0", "train"),
        "d1_s0": ("donor1", "val"),
        "d1_s1": ("donor1", "test"),
    }
    for s in ds.sections:
        assert s["slide_path"].is_file() and s["h5ad_path"].is_file()
    again = DemoDataset.load(ds.root)
    pd.testing.assert_frame_equal(again.manifest, ds.manifest)
    params = json.loads((ds.root / "generation.json").read_text())
    assert params["seed"] == 0 and params["small"] is True
    assert "donors=2" in repr(ds) and "sections=4" in repr(ds)


def test_splits_by_donor_for_three_donors(tmp_path):
    ds = make_demo_spatial(tmp_path, n_donors=3, sections_per_donor=1, small=True, slide_px=700, n_genes=80)
    assert [s["split"] for s in ds.sections] == ["train", "val", "test"]


def test_openslide_reads_slide_with_mpp_and_levels(demo_dataset):
    openslide = pytest.importorskip("openslide")
    tifffile = pytest.importorskip("tifffile")
    path = demo_dataset.sections[0]["slide_path"]
    with openslide.OpenSlide(str(path)) as slide:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(0.5)
        assert slide.level_count == 2
        assert slide.level_dimensions == ((1536, 1536), (768, 768))
        assert slide.level_downsamples == pytest.approx((1.0, 2.0))
        region = np.asarray(slide.read_region((300, 400), 0, (200, 150)).convert("RGB"))
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 2
        page = tif.pages[0]
        assert page.is_tiled and page.tilewidth == 256 and page.compression == 7  # JPEG
        ref = page.asarray()[400:550, 300:500]
    # Two independent JPEG decoders (libjpeg via OpenSlide, imagecodecs via tifffile) agree.
    assert np.abs(region.astype(int) - ref.astype(int)).mean() < 2.0
    assert region.std() > 10  # not a blank image


def test_write_pyramid_tiff_levels(tmp_path):
    openslide = pytest.importorskip("openslide")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (2100, 2500, 3), dtype=np.uint8)
    dims = write_pyramid_tiff(tmp_path / "x.tiff", img, 0.25)
    assert dims == [(2500, 2100), (1250, 1050), (625, 525)]
    with openslide.OpenSlide(str(tmp_path / "x.tiff")) as slide:
        assert slide.level_dimensions == tuple(dims)
        assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)


def test_h5ad_follows_spatial_convention(demo_dataset):
    ds = demo_dataset
    for s in ds.sections:
        a = ds.read(s["sample"])
        assert 60 <= a.n_obs <= 110
        x = _dense(a.X)
        assert np.array_equal(x, np.round(x)) and x.min() >= 0
        assert np.array_equal(x, _dense(a.layers["counts"]))
        assert a.var_names.is_unique and a.obs_names.is_unique
        for col in ("sample", "donor", "batch", "split", "tissue_type"):
            assert isinstance(a.obs[col].dtype, pd.CategoricalDtype), col
        assert set(a.obs["sample"]) == {s["sample"]} and set(a.obs["donor"]) == {s["donor"]}
        sp = a.uns["spatial"]
        assert {"slide_path", "mpp", "mpp_source", "spot_diameter_um", "spot_pitch_um", "technology"} <= set(
            sp
        )
        assert sp["slide_path"] == str(s["slide_path"])  # read() resolved the relative path
        xy = a.obsm["spatial"]
        assert xy.shape == (a.n_obs, 2)
        assert xy.min() >= 0 and xy.max() < 1536
        # Hexagonal grid: nearest-neighbour distance equals the recorded pitch.
        d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
        assert np.median(d.min(1)) * sp["mpp"] == pytest.approx(sp["spot_pitch_um"], rel=1e-6)
        frac = a.obsm["tissue_fractions"]
        assert frac.shape == (a.n_obs, len(a.uns["tissue_types"]))
        np.testing.assert_allclose(frac.sum(1), 1.0, atol=1e-5)
        assert list(a.obs["tissue_type"].astype(str)) == [a.uns["tissue_types"][k] for k in frac.argmax(1)]
    import anndata as ad

    raw = ad.read_h5ad(ds.sections[0]["h5ad_path"])
    assert raw.uns["spatial"]["slide_path"] == ds.sections[0]["slide_path"].name  # stored relative


def test_deterministic_given_seed(tmp_path):
    kw = dict(n_donors=1, sections_per_donor=1, small=True, slide_px=640, n_genes=80)
    a = make_demo_spatial(tmp_path / "a", seed=3, **kw)
    b = make_demo_spatial(tmp_path / "b", seed=3, **kw)
    c = make_demo_spatial(tmp_path / "c", seed=4, **kw)
    tifffile = pytest.importorskip("tifffile")
    xa, xb, xc = (_dense(d.read("d0_s0").X) for d in (a, b, c))
    assert np.array_equal(xa, xb)
    assert xa.shape != xc.shape or not np.array_equal(xa, xc)
    ia, ib, ic = (tifffile.imread(d.sections[0]["slide_path"]) for d in (a, b, c))
    assert np.array_equal(ia, ib) and not np.array_equal(ia, ic)


def _tile_features(ds, sample):
    """Simple colour / darkness statistics of the tile around each spot (read with OpenSlide)."""
    openslide = pytest.importorskip("openslide")
    a = ds.read(sample)
    feats = []
    with openslide.OpenSlide(a.uns["spatial"]["slide_path"]) as slide:
        for x, y in a.obsm["spatial"]:
            t = np.asarray(slide.read_region((int(x) - 56, int(y) - 56), 1, (56, 56)).convert("RGB")) / 255.0
            grey = t.mean(-1)
            feats.append(np.r_[t.mean((0, 1)), t.std((0, 1)), (grey < 0.55).mean(), (grey < 0.45).mean()])
    x = _dense(a.X)
    logx = np.log1p(x / x.sum(1, keepdims=True) * 1e4)
    return np.array(feats), logx, a


def test_image_predicts_expression(demo_dataset):
    """Genuine learning problem: tile statistics predict marker/density genes, shuffled tiles do not."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    parts = [_tile_features(demo_dataset, s) for s in demo_dataset.samples]
    train = [p for p, s in zip(parts, demo_dataset.sections) if s["split"] == "train"]
    test = [p for p, s in zip(parts, demo_dataset.sections) if s["split"] != "train"]
    ftr, ytr = np.concatenate([p[0] for p in train]), np.concatenate([p[1] for p in train])
    fte, yte = np.concatenate([p[0] for p in test]), np.concatenate([p[1] for p in test])
    var = parts[0][2].var
    genes = np.nonzero(var["program"].isin(["marker", "density", "tumour_density"]).to_numpy())[0]
    sc = StandardScaler().fit(ftr)

    def mean_pearson(f_train):
        pred = Ridge(alpha=1.0).fit(sc.transform(f_train), ytr[:, genes]).predict(sc.transform(fte))
        return np.nanmean([np.corrcoef(pred[:, j], yte[:, g])[0, 1] for j, g in enumerate(genes)])

    real = mean_pearson(ftr)
    shuffled = mean_pearson(ftr[np.random.default_rng(0).permutation(len(ftr))])
    assert real > 0.3, real
    assert real > shuffled + 0.25, (real, shuffled)


def test_donor_effects_measurable(demo_dataset):
    """Between-donor differences of gene means exceed between-section differences within a donor."""
    ds = demo_dataset
    means, colours = {}, {}
    for s in ds.sections:
        a = ds.read(s["sample"])
        x = _dense(a.X)
        # Background genes carry no tissue signal: their shifts are batch effects.
        bg = (a.var["program"] == "background").to_numpy()
        means[s["sample"]] = np.log((x[:, bg].sum(0) + 1) / x.sum())
        colours[s["sample"]] = np.asarray(a.uns["demo"]["stain"]["e_vec"])
    within = np.var(means["d0_s0"] - means["d0_s1"]) + np.var(means["d1_s0"] - means["d1_s1"])
    between = np.var(means["d0_s0"] - means["d1_s0"]) + np.var(means["d0_s1"] - means["d1_s1"])
    assert between > 1.5 * within, (between, within)
    stain_within = np.linalg.norm(colours["d0_s0"] - colours["d0_s1"])
    stain_between = np.linalg.norm(colours["d0_s0"] - colours["d1_s0"])
    assert stain_between > stain_within


def test_donor_staining_visible_in_pixels(demo_dataset):
    tifffile = pytest.importorskip("tifffile")
    med = {}
    for s in demo_dataset.sections:
        img = tifffile.imread(s["slide_path"], key=1).reshape(-1, 3).astype(float)
        tissue = img[img.mean(1) < 215]
        med[s["sample"]] = np.median(tissue, 0)
    within = np.abs(med["d0_s0"] - med["d0_s1"]).sum() + np.abs(med["d1_s0"] - med["d1_s1"]).sum()
    between = np.abs(med["d0_s0"] - med["d1_s0"]).sum() + np.abs(med["d0_s1"] - med["d1_s1"]).sum()
    assert between > within


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="n_donors"):
        make_demo_spatial(tmp_path, n_donors=0)
    with pytest.raises(ConfigError, match="n_genes"):
        make_demo_spatial(tmp_path, n_genes=10, small=True)
