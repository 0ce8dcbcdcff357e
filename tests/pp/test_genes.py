"""Gene panels (intersect_panels, hvg_union) and GenePipeline."""

from __future__ import annotations

import gzip
import importlib.util
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from biomodal.errors import CheckpointError, ConfigError, DataError, MissingDependencyError
from biomodal.pp import GenePipeline, hvg_union, intersect_panels


def _section(counts, genes, sample="s"):
    a = ad.AnnData(X=sp.csr_matrix(np.asarray(counts, dtype=np.float32)))
    a.var_names = list(genes)
    a.obs_names = [f"{sample}_{i}" for i in range(a.n_obs)]
    a.obs["sample"] = pd.Categorical([sample] * a.n_obs)
    a.layers["counts"] = a.X.copy()
    return a


def _planted(rng, n_spots, genes, hot, scale=1.0):
    """Poisson background, wide range of means; ``hot`` genes keep their mean but are off in 90 % of spots."""
    mu = np.exp(rng.uniform(np.log(0.5), np.log(40), len(genes))) * scale
    X = rng.poisson(mu, size=(n_spots, len(genes))).astype(float)
    for j, g in enumerate(genes):
        if g in hot:
            on = rng.random(n_spots) < 0.1
            X[:, j] = np.where(on, rng.poisson(10 * mu[j], n_spots), 0)
    return X


def _ref_log_norm(counts, idx, target=1e4, totals=None):
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(1) if totals is None else totals
    return np.log1p(counts[:, idx] / totals[:, None] * target)


# ------------------------------------------------------------------------------ panels
def test_intersect_panels_order_and_errors():
    a = _section(np.ones((2, 4)), ["D", "B", "A", "C"])
    b = _section(np.ones((2, 3)), ["A", "B", "E"])
    assert intersect_panels([a, b]) == ["B", "A"]
    assert intersect_panels([["x", "y", "z"], ["z", "x"]]) == ["x", "z"]
    assert intersect_panels(a) == ["D", "B", "A", "C"]
    with pytest.raises(DataError, match="no gene is shared"):
        intersect_panels([["x"], ["y"]])
    with pytest.raises(DataError, match="duplicated gene names"):
        intersect_panels([["x", "x"], ["x"]])
    with pytest.raises(DataError, match="no sections"):
        intersect_panels([])


def test_hvg_union_recovers_planted_genes():
    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(1000)]  # enough genes to fill every mean bin
    hot1, hot2 = set(genes[:8]), set(genes[100:108])
    g1 = [*genes, "only1"]
    s1 = _section(_planted(rng, 200, g1, hot1 | {"only1"}), g1, "s1")
    s2 = _section(_planted(rng, 150, genes, hot2, scale=2.0), genes, "s2")
    got = hvg_union([s1, s2], n_top=8)
    assert got == [g for g in genes if g in hot1 | hot2]  # exactly the planted genes, stable order
    assert "only1" not in got  # not shared by both sections
    assert hvg_union([s2], n_top=8) == sorted(hot2, key=genes.index)


@pytest.mark.skipif(importlib.util.find_spec("skmisc") is not None, reason="scikit-misc installed")
def test_hvg_seurat_v3_names_missing_dependency():
    s = _section(np.ones((5, 3)), ["a", "b", "c"])
    with pytest.raises(MissingDependencyError, match="scikit-misc"):
        hvg_union([s], flavor="seurat_v3")


def test_hvg_bad_flavor():
    with pytest.raises(ConfigError, match="flavor"):
        hvg_union([_section(np.ones((3, 3)), "abc")], flavor="cell_ranger")


# ------------------------------------------------------------------------------ pipeline
def _three_sections(rng):
    genes = [f"G{i}" for i in range(40)]
    a = _section(rng.poisson(3, (30, 40)), genes, "a")
    b = _section(rng.poisson(3, (25, 40)), genes, "b")
    c = _section(rng.poisson(9, (20, 42)), [*genes[::-1], "X1", "X2"], "c")  # other order, extra genes
    return genes, a, b, c


def test_transform_matches_reference_and_reorders():
    rng = np.random.default_rng(1)
    _, a, b, c = _three_sections(rng)
    panel = ["G5", "G1", "G30"]
    p = GenePipeline(genes=panel).fit([a, b])
    Z = p.transform(c)
    cc = c.X.toarray()
    idx = [list(c.var_names).index(g) for g in panel]
    assert Z.dtype == np.float32 and Z.shape == (20, 3)
    np.testing.assert_allclose(Z, _ref_log_norm(cc, idx), rtol=1e-6)
    q = GenePipeline(genes=panel, library_size="panel", target_sum=100).fit([a])
    np.testing.assert_allclose(q.transform(c), _ref_log_norm(cc, idx, 100, cc[:, idx].sum(1)), rtol=1e-6)
    r = GenePipeline(genes=panel, normalize="none").fit([a])
    np.testing.assert_array_equal(r.transform(c), cc[:, idx])


def test_scaling_uses_training_statistics_only():
    rng = np.random.default_rng(2)
    genes, a, b, c = _three_sections(rng)
    p = GenePipeline(hvg="none", scale=True, clip=None).fit([a, b])
    assert p.var_names_ == genes
    train = np.vstack([_ref_log_norm(x.X.toarray(), list(range(40))) for x in (a, b)])
    mu, sd = train.mean(0), train.std(0)
    np.testing.assert_allclose(p.mean_, mu) and np.testing.assert_allclose(p.std_, sd)
    np.testing.assert_allclose(np.vstack([p.transform(a), p.transform(b)]).mean(0), 0, atol=1e-5)
    idx = [list(c.var_names).index(g) for g in genes]
    ref_c = (_ref_log_norm(c.X.toarray(), idx) - mu) / sd
    np.testing.assert_allclose(p.transform(c), ref_c, rtol=1e-5, atol=1e-5)
    assert abs(p.transform(c).mean()) > 0.05  # c is not centred by its own statistics


def test_clip_and_constant_gene():
    X = np.ones((10, 3))
    X[:, 0] = [1] * 9 + [1000]  # one extreme spot
    X[:, 2] = 5  # constant fraction -> std 0 after normalisation? keep non-constant totals
    a = _section(X, ["a", "b", "c"])
    p = GenePipeline(hvg="none", scale=True, clip=2.0).fit([a])
    Z = p.transform(a)
    assert Z.max() <= 2.0 and Z.min() >= -2.0 and np.isclose(Z[:, 0].max(), 2.0)
    b = _section(np.full((4, 2), 3.0), ["a", "b"])
    q = GenePipeline(hvg="none", scale=True).fit([b])
    np.testing.assert_array_equal(q.std_, [1.0, 1.0])
    np.testing.assert_array_equal(q.transform(b), 0)


def test_missing_genes_listed():
    rng = np.random.default_rng(3)
    _, a, _, _ = _three_sections(rng)
    p = GenePipeline(genes=["G1", "G2"]).fit([a])
    short = _section(np.ones((3, 2)), ["G1", "Z"])
    with pytest.raises(DataError, match=r"1 of 2 panel gene\(s\) missing: \['G2'\]"):
        p.transform(short)
    with pytest.raises(DataError, match="not measured"):
        GenePipeline(genes=["G1", "nope"]).fit([a])


def test_counts_layer_preferred_and_non_counts_refused():
    rng = np.random.default_rng(4)
    genes, a, _, _ = _three_sections(rng)
    logged = a.copy()
    logged.X = sp.csr_matrix(np.log1p(a.X.toarray()))
    p = GenePipeline(genes=genes[:5]).fit([a])
    np.testing.assert_array_equal(p.transform(logged), p.transform(a))  # uses layers["counts"]
    del logged.layers["counts"]
    with pytest.raises(DataError, match="normalize='none'"):
        p.transform(logged)


def test_state_dict_round_trip_and_check_compatible():
    rng = np.random.default_rng(5)
    _, a, b, c = _three_sections(rng)
    p = GenePipeline(n_top_genes=5, scale=True).fit([a, b])
    state = json.loads(json.dumps(p.state_dict()))
    q = GenePipeline.from_state_dict(state)
    assert q.var_names_ == p.var_names_ and len(q.var_names_) >= 5  # scanpy keeps ties at the cut-off
    np.testing.assert_array_equal(q.transform(c), p.transform(c))
    q.check_compatible(p.var_names_)
    q.check_compatible(list(c.var_names), allow_extra=True)
    with pytest.raises(DataError, match=r"1 missing \['.+'\], 2 extra \['X1', 'Y1'\]"):
        q.check_compatible([*p.var_names_[1:], "X1", "Y1"])
    with pytest.raises(DataError, match="order differs"):
        q.check_compatible(p.var_names_[::-1])
    with pytest.raises(CheckpointError, match="not a GenePipeline"):
        GenePipeline.from_state_dict({"format": "other"})
    bad = dict(state, mean=None)
    with pytest.raises(CheckpointError, match="'mean'"):
        GenePipeline.from_state_dict(bad)
    assert "genes" in repr(p) and "unfitted" in repr(GenePipeline())


def test_config_errors():
    for kw in ({"hvg": "top"}, {"normalize": "cpm"}, {"n_top_genes": 0}, {"genes": ["a", "a"]}, {"clip": 0}):
        with pytest.raises(ConfigError):
            GenePipeline(**kw)
    with pytest.raises(ConfigError, match="not fitted"):
        _ = GenePipeline().var_names_


# ------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def her2st(shared_data):
    from biomodal.io import read_legacy_st

    secs = []
    for name in ("C2", "C3"):
        d = shared_data / "spatial" / "her2st" / name
        secs.append(read_legacy_st(d / "counts.tsv.gz", d / "spots.tsv", d / "image.jpg"))
    return secs


def _header(path):
    with gzip.open(path, "rt") as fh:
        return fh.readline().rstrip("\n").split("\t")[1:]


@pytest.mark.realdata
def test_her2st_panel_intersection(shared_data, her2st):
    heads = [_header(shared_data / f"spatial/her2st/{n}/counts.tsv.gz") for n in ("C2", "C3")]
    common = intersect_panels(her2st)
    second = set(heads[1])
    assert common == [g for g in heads[0] if g in second] and len(common) == 15011


@pytest.mark.realdata
def test_her2st_hvg_union_against_scanpy(her2st):
    sc = pytest.importorskip("scanpy")
    secs = her2st
    common = intersect_panels(secs)
    got = hvg_union(secs, n_top=300)
    ref: set[str] = set()
    for s in secs:  # reference: plain scanpy per section
        t = s.copy()
        sc.pp.normalize_total(t, target_sum=1e4)
        sc.pp.log1p(t)
        t = t[:, common].copy()
        sc.pp.highly_variable_genes(t, n_top_genes=300, flavor="seurat")
        ref |= set(t.var_names[t.var["highly_variable"]])
    assert set(got) == ref and 300 < len(got) <= 600
    p = GenePipeline(n_top_genes=300, scale=True).fit(secs[:1])  # train on C2 only
    try:
        Z = p.transform(secs[1])
        assert Z.shape == (180, len(p.var_names_)) and np.isfinite(Z).all()
    except DataError as exc:  # genes HVG in C2 but absent from C3 must be listed
        assert "missing" in str(exc)
    Zs = GenePipeline(n_top_genes=300).fit(secs).fit_transform(secs)
    assert [z.shape[0] for z in Zs] == [187, 180]


@pytest.mark.realdata
def test_squidpy_lognormalised_h5ad(shared_data):
    from biomodal.io import read_h5ad

    d = shared_data / "spatial" / "squidpy_mouse_brain"
    a = read_h5ad(d / "test_data.h5ad", slide=d / "test_img.jpg")
    with pytest.raises(DataError, match="not integer counts"):
        GenePipeline(n_top_genes=50).fit([a])
    p = GenePipeline(n_top_genes=50, normalize="none").fit([a])
    assert len(p.var_names_) == 50
    np.testing.assert_allclose(p.transform(a), a[:, p.var_names_].X.toarray(), rtol=1e-6)
