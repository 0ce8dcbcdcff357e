"""Post-hoc batch correction: harmony, combat, center_scale."""

from __future__ import annotations

import numpy as np
import pytest

from biomodal.errors import DataError
from biomodal.eval.batch import batch_metrics
from biomodal.pp.batch import CenterScale, center_scale, combat, harmony

ad = pytest.importorskip("anndata")
pd = pytest.importorskip("pandas")


def shifted_blobs(n=900, n_labels=4, n_batches=3, dims=20, shift=3.0, seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, n_labels, n)
    bat = rng.integers(0, n_batches, n)
    centres = rng.normal(0, 5, (n_labels, dims))
    shifts = rng.normal(0, shift, (n_batches, dims))
    X = centres[lab] + shifts[bat] + rng.normal(0, 1, (n, dims))
    obs = pd.DataFrame({"donor": [f"d{b}" for b in bat], "ct": [f"c{c}" for c in lab]})
    obs.index = obs.index.astype(str)
    adata = ad.AnnData(X=np.zeros((n, 1), dtype=np.float32), obs=obs)
    adata.obsm["X_pca"] = X
    return adata


# ------------------------------------------------------------------ center_scale


def test_center_scale_exact_against_numpy():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4)) * 3 + 1
    b = np.array(["a", "b"] * 25)
    Z = center_scale(X, b, scale=True)
    for lvl in ("a", "b"):
        m = b == lvl
        np.testing.assert_allclose(Z[m], (X[m] - X[m].mean(0)) / X[m].std(0), atol=1e-12)
    Zc = center_scale(X, b)
    for lvl in ("a", "b"):
        np.testing.assert_allclose(Zc[b == lvl], X[b == lvl] - X[b == lvl].mean(0), atol=1e-12)


def test_center_scale_anndata_writes_basis_and_uns():
    adata = shifted_blobs(n=300)
    assert center_scale(adata, "donor", scale=True) is None
    Z = adata.obsm["X_pca_center_scale"]
    for d in np.unique(adata.obs["donor"]):
        m = (adata.obs["donor"] == d).to_numpy()
        np.testing.assert_allclose(Z[m].mean(0), 0, atol=1e-10)
        np.testing.assert_allclose(Z[m].std(0), 1, atol=1e-10)
    rec = adata.uns["X_pca_center_scale"]
    assert rec["method"] == "center_scale" and rec["scale"] is True and rec["means"].shape == (3, 20)
    out = center_scale(adata, "donor", adjusted_basis="X_cs", copy=True)
    assert "X_cs" in out.obsm and "X_cs" not in adata.obsm


def test_center_scale_fit_apply_on_new_batches():
    rng = np.random.default_rng(1)
    Xtr, btr = rng.normal(2, 1, (40, 3)), np.repeat(["a", "b"], 20)
    cs = CenterScale().fit(Xtr, btr)
    Xte = rng.normal(5, 1, (10, 3))
    bte = np.array(["a"] * 5 + ["new"] * 5)
    Z = cs.transform(Xte, bte)
    np.testing.assert_allclose(Z[:5], Xte[:5] - Xtr[:20].mean(0))  # seen batch: training stats
    np.testing.assert_allclose(Z[5:], Xte[5:] - Xte[5:].mean(0))  # unseen batch: its own stats
    assert "n_batches=2" in repr(cs)
    with pytest.raises(DataError, match="new"):
        CenterScale(unseen="error").fit(Xtr, btr).transform(Xte, bte)


def test_bad_keys_name_the_key():
    adata = shifted_blobs(n=60)
    with pytest.raises(DataError, match="'sample'"):
        center_scale(adata, "sample")
    with pytest.raises(DataError, match="'X_umap'"):
        center_scale(adata, "donor", basis="X_umap")
    with pytest.raises(DataError, match="'sample'"):
        harmony(adata, "sample")
    with pytest.raises(DataError, match="'sample'"):
        combat(adata, "sample")
    with pytest.raises(DataError, match="one value per row"):
        center_scale(np.zeros((5, 2)), ["a"] * 4)


# ------------------------------------------------------------------ harmony


def test_harmony_mixes_batches_and_keeps_labels():
    pytest.importorskip("harmonypy")
    adata = shifted_blobs()
    harmony(adata, "donor", max_iter_harmony=20)
    Z = adata.obsm["X_pca_harmony"]
    assert Z.shape == adata.obsm["X_pca"].shape
    keep = ["ilisi", "kbet", "asw_batch", "nmi", "ari", "asw_label"]
    before = batch_metrics(adata, "donor", "ct", basis="X_pca", metrics=keep)
    after = batch_metrics(adata, "donor", "ct", basis="X_pca_harmony", metrics=keep)
    assert after["ilisi"] > before["ilisi"] + 0.3
    # shift 3 sd: before, no mixing at all; after, iLISI ~0.46, kBET ~0.06, ASW batch ~0.92
    assert after["kbet"] > before["kbet"] + 0.03
    assert after["asw_batch"] > before["asw_batch"] + 0.4
    assert after["asw_label"] >= before["asw_label"]
    assert after["nmi"] > 0.95 and after["ari"] > 0.95
    rec = adata.uns["X_pca_harmony"]
    assert rec["method"] == "harmony" and rec["key"] == ["donor"] and rec["n_iter"] >= 1
    # array form: same result, rows stay cells (harmonypy 2.x returns cells x dims)
    Za = harmony(adata.obsm["X_pca"], adata.obs["donor"].to_numpy(), max_iter_harmony=20)
    np.testing.assert_allclose(Za, Z, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ combat


def test_combat_removes_additive_shift():
    pytest.importorskip("scanpy")
    rng = np.random.default_rng(0)
    n, g = 400, 30
    base = rng.normal(3, 1, (n, g))
    b = np.repeat(["x", "y"], n // 2)
    shift = rng.normal(0, 2, g)
    X = base + np.where(b[:, None] == "y", shift, 0)
    adata = ad.AnnData(X=X.copy(), obs=pd.DataFrame({"batch": b}, index=[str(i) for i in range(n)]))
    combat(adata, "batch", layer="combat")
    Z = adata.layers["combat"]
    gap_before = np.abs(X[b == "y"].mean(0) - X[b == "x"].mean(0))
    gap_after = np.abs(Z[b == "y"].mean(0) - Z[b == "x"].mean(0))
    assert gap_before.mean() > 1.0 and gap_after.max() < 0.05
    np.testing.assert_array_equal(adata.X, X)  # layer= leaves X alone
    assert adata.uns["combat"]["layer"] == "combat"
    np.testing.assert_allclose(combat(X, b), Z)
    combat(adata, "batch")
    np.testing.assert_allclose(adata.X, Z)
