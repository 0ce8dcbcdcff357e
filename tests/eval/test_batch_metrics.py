"""Batch-mixing / bio-conservation metrics: independent references and behaviour on known data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from biomodal.errors import DataError
from biomodal.eval._kbet import graph_connectivity, kbet
from biomodal.eval._knn import KNNGraph, exact_knn
from biomodal.eval._lisi import lisi_per_cell
from biomodal.eval._silhouette import silhouette_samples
from biomodal.eval.batch import BIO_METRICS, batch_metrics, pcr_variance


def blobs(n=600, n_labels=4, n_batches=3, dims=20, shift=0.0, sep=4.0, seed=0):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, n_labels, n)
    bat = rng.integers(0, n_batches, n)
    centres = rng.normal(0, sep, (n_labels, dims))
    shifts = rng.normal(0, shift, (n_batches, dims)) if shift else np.zeros((n_batches, dims))
    X = centres[lab] + shifts[bat] + rng.normal(0, 1, (n, dims))
    return X, bat, lab


# ---------------------------------------------------------------- building blocks vs references


def test_exact_knn_matches_brute_force():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 7))
    D = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    ref = np.argsort(D, axis=1, kind="stable")[:, :12]
    for backend in ("faiss", "sklearn"):
        if backend == "faiss":
            pytest.importorskip("faiss")
        g = exact_knn(X, 12, backend=backend)
        assert (g.indices[:, 0] == np.arange(300)).all()
        np.testing.assert_array_equal(np.sort(g.indices, 1), np.sort(ref, 1))
        np.testing.assert_allclose(g.distances, np.take_along_axis(D, ref, 1), atol=1e-10)
    assert repr(g) == "KNNGraph(n_cells=300, k=12)"


def test_exact_knn_self_first_with_duplicates():
    X = np.zeros((20, 3))
    X[10:] = 1.0
    g = exact_knn(X, 5)
    assert (g.indices[:, 0] == np.arange(20)).all()
    assert (g.distances == 0).all()


def test_silhouette_matches_sklearn():
    from sklearn.metrics import silhouette_samples as sk_sil

    X, _, lab = blobs(n=300, sep=1.0)
    np.testing.assert_allclose(silhouette_samples(X, lab), sk_sil(X, lab), atol=1e-10)
    np.testing.assert_allclose(
        silhouette_samples(X, lab, metric="cosine"), sk_sil(X, lab, metric="cosine"), atol=1e-10
    )


def test_pcr_variance_matches_pca_regression():
    X, bat, _ = blobs(n=400, shift=1.0, dims=6)
    Xc = X - X.mean(0)
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    pcs = Xc @ vt.T
    onehot = np.eye(3)[bat]
    onehot -= onehot.mean(0)
    r2 = []
    for j in range(pcs.shape[1]):
        beta, *_ = np.linalg.lstsq(onehot, pcs[:, j], rcond=None)
        r2.append(1 - ((pcs[:, j] - onehot @ beta) ** 2).sum() / (pcs[:, j] ** 2).sum())
    var = s**2
    assert pcr_variance(X, bat) == pytest.approx(np.dot(r2, var) / var.sum(), abs=1e-10)


def _lisi_loop(idx, dist, codes, perplexity, tol=1e-5):
    """Straightforward per-cell LISI (Korsunsky et al.), written independently."""
    out = []
    for i in range(idx.shape[0]):
        d, nb = dist[i][idx[i] != i], codes[idx[i][idx[i] != i]]
        beta, lo, hi = 1.0, -np.inf, np.inf
        for t in range(51):
            P = np.exp(-d * beta)
            H = np.log(P.sum()) + beta * (d * P).sum() / P.sum()
            diff = H - np.log(perplexity)
            if abs(diff) < tol or t == 50:
                break
            if diff > 0:
                lo, beta = beta, (beta * 2 if np.isinf(hi) else (beta + hi) / 2)
            else:
                hi, beta = beta, (beta / 2 if np.isinf(lo) else (beta + lo) / 2)
        P /= P.sum()
        out.append(1 / sum(P[nb == c].sum() ** 2 for c in np.unique(codes)))
    return np.array(out)


def test_lisi_matches_loop_reference():
    X, bat, _ = blobs(n=200, shift=0.5)
    g = exact_knn(X, 30)
    np.testing.assert_allclose(lisi_per_cell(g, bat), _lisi_loop(g.indices, g.distances, bat, 10), rtol=1e-6)


def test_kbet_matches_scipy_chisquare():
    from scipy.stats import chisquare

    rng = np.random.default_rng(3)
    batch = rng.integers(0, 3, 500)
    neigh = batch[rng.integers(0, 500, (500, 20))]
    neigh[:100] = 0  # some clearly unmixed neighbourhoods
    freq = np.bincount(batch) / 500
    p = np.array([chisquare(np.bincount(r, minlength=3), freq * 20).pvalue for r in neigh])
    assert kbet(neigh, batch) == pytest.approx((p >= 0.05).mean())


def test_graph_connectivity_on_split_labels():
    # two labels; label 1 is split into two far clusters -> its largest component holds half its cells
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (100, 2)), rng.normal(50, 1, (50, 2)), rng.normal(-50, 1, (50, 2))])
    lab = np.repeat([0, 1], 100)
    assert graph_connectivity(exact_knn(X, 15), lab) == pytest.approx((1.0 + 0.5) / 2)


# ---------------------------------------------------------------- behaviour


@pytest.fixture(scope="module")
def mixed_and_separated():
    mixed = blobs(n=900, shift=0.0, seed=2)
    sep = blobs(n=900, shift=6.0, seed=2)
    return batch_metrics(*mixed), batch_metrics(*sep)


def test_mixed_batches_score_high_separated_low(mixed_and_separated):
    mixed, sep = mixed_and_separated
    assert mixed["ilisi"] > 0.8 and sep["ilisi"] < 0.1
    assert mixed["asw_batch"] > 0.9 and sep["asw_batch"] < mixed["asw_batch"] - 0.2
    assert mixed["kbet"] > 0.7 and sep["kbet"] < 0.05
    assert mixed["pcr"] > 0.98 and sep["pcr"] < 0.6
    assert mixed["graph_connectivity"] > 0.9 and sep["graph_connectivity"] < 0.5
    assert mixed["batch_mean_unscaled"] > sep["batch_mean_unscaled"]
    for v in (*mixed.values(), *sep.values()):
        assert 0.0 <= v <= 1.0 + 1e-9


def test_aggregates_are_named_unscaled_and_leave_out_pcr_without_x_pre():
    X, b, lab = blobs(n=300, shift=3.0, seed=4)
    no_pre = batch_metrics(X, b, lab)
    assert not {"batch_correction", "bio_conservation", "total"} & set(no_pre)  # not scib's totals
    parts = ("bras", "ilisi", "kbet", "graph_connectivity")  # pcr without X_pre is not scib's pcr
    assert no_pre["batch_mean_unscaled"] == pytest.approx(np.mean([no_pre[m] for m in parts]))
    with_pre = batch_metrics(X, b, lab, X_pre=X + 0.1)
    assert with_pre["batch_mean_unscaled"] == pytest.approx(np.mean([with_pre[m] for m in (*parts, "pcr")]))
    bio = ("isolated_labels", "nmi", "ari", "asw_label", "clisi")
    assert no_pre["bio_mean_unscaled"] == pytest.approx(np.mean([no_pre[m] for m in bio]))
    assert no_pre["overall_unscaled"] == pytest.approx(
        0.4 * no_pre["batch_mean_unscaled"] + 0.6 * no_pre["bio_mean_unscaled"]
    )


def test_without_labels_no_bio_metric_is_reported():
    X, b, _ = blobs(n=300, shift=3.0, seed=5)
    res = batch_metrics(X, b, None)
    assert not set(BIO_METRICS) & set(res) and "bio_mean_unscaled" not in res
    assert {"ilisi", "kbet", "asw_batch", "graph_connectivity"} <= set(res)
    with pytest.raises(DataError, match="need labels"):
        batch_metrics(X, b, None, metrics=["nmi"])


def test_label_preserving_embedding_scores_high(mixed_and_separated):
    mixed, _ = mixed_and_separated
    assert mixed["nmi"] > 0.98 and mixed["ari"] > 0.98
    assert mixed["asw_label"] > 0.7 and mixed["clisi"] > 0.98
    X, bat, lab = blobs(n=900, seed=2)
    shuffled = np.random.default_rng(0).permutation(lab)
    bad = batch_metrics(X, bat, shuffled, metrics=["nmi", "ari", "asw_label", "clisi"])
    assert bad["nmi"] < 0.05 and abs(bad["ari"]) < 0.05
    assert bad["asw_label"] < 0.55 and bad["clisi"] < 0.5


def test_pcr_comparison_with_pre_embedding():
    X, bat, lab = blobs(n=400, shift=3.0)
    Xc = X.copy()
    for b in range(3):
        Xc[bat == b] -= Xc[bat == b].mean(0)
    r = batch_metrics(Xc, bat, lab, X_pre=X, metrics=["pcr"])
    assert r["pcr"] > 0.9
    assert batch_metrics(X, bat, lab, X_pre=Xc, metrics=["pcr"])["pcr"] == 0.0  # worse -> clipped


def test_anndata_input_and_keys():
    ad = pytest.importorskip("anndata")
    import pandas as pd

    X, bat, lab = blobs(n=300)
    adata = ad.AnnData(
        X=np.zeros((300, 2), dtype=np.float32),
        obs=pd.DataFrame({"donor": bat.astype(str), "ct": lab.astype(str)}),
    )
    adata.obsm["X_emb"] = X
    r1 = batch_metrics(adata, "donor", "ct", basis="X_emb", metrics=["ilisi", "asw_label"])
    r2 = batch_metrics(X, bat, lab, metrics=["ilisi", "asw_label"])
    assert r1 == pytest.approx(r2)
    with pytest.raises(DataError, match="X_missing"):
        batch_metrics(adata, "donor", "ct", basis="X_missing")
    with pytest.raises(DataError, match="'nope'"):
        batch_metrics(adata, "nope", "ct", basis="X_emb")
    with pytest.raises(DataError, match="300"):
        batch_metrics(X, bat[:10], lab)
    with pytest.raises(DataError, match="unknown metric"):
        batch_metrics(X, bat, lab, metrics=["ilsi"])
    with pytest.raises(DataError, match="neighbours"):
        batch_metrics(X, bat, lab, neighbors=exact_knn(X, 10), metrics=["ilisi"])
    with pytest.raises(DataError, match="same shape"):
        KNNGraph(np.zeros((3, 2), int), np.zeros((3, 3)))


def test_import_does_not_pull_jax_or_scib():
    code = (
        "import sys, biomodal.eval.batch, biomodal.pp.batch;"
        "bad=[m for m in ('jax','scib_metrics','sklearn','scanpy','harmonypy') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- fast paths vs exact references


def test_blas_knn_is_exact_on_offset_data():
    # 3,000 cells far from the origin (float32 cancellation), two-stage selection path
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 6)) + 500.0
    X[100] = X[7]  # a duplicate pair
    g = exact_knn(X, 40, backend="blas")
    assert (g.indices[:, 0] == np.arange(3000)).all()
    for i in range(0, 3000, 37):
        d = np.sqrt(((X - X[i]) ** 2).sum(1))
        d[i] = -1.0  # self first
        ref = np.lexsort((np.arange(3000), d))[:40]
        np.testing.assert_array_equal(g.indices[i], ref)
        np.testing.assert_allclose(g.distances[i, 1:], d[ref[1:]], rtol=1e-12)
    assert g.distances[7, 1] == 0.0 and g.indices[7, 1] == 100


def test_distance_pass_group_sums_match_float64():
    from biomodal.eval._knn import distance_pass

    X, bat, lab = blobs(n=1500, dims=12, seed=4)
    groups = lab * 3 + bat
    _, sums, gid = distance_pass(X, 0, groups)
    D = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    ref = np.stack([D[:, groups == g].sum(1) for g in gid], axis=1)
    np.testing.assert_array_equal(gid, np.unique(groups))
    np.testing.assert_allclose(sums, ref, rtol=2e-5)


def test_fused_silhouettes_match_pairwise_float64():
    from biomodal.eval._knn import distance_pass
    from biomodal.eval._silhouette import asw_batch, silhouettes_from_group_sums

    X, bat, lab = blobs(n=700, n_labels=4, n_batches=3, shift=0.7, sep=1.5, seed=6)
    bat[lab == 3] = 0  # a label with a single batch (skipped by asw_batch)
    m2 = np.flatnonzero(lab == 2)
    bat[m2] = np.arange(m2.size) % 2
    bat[m2[0]] = 2  # a batch with a single cell in label 2
    _, sums, gid = distance_pass(X, 0, lab * 3 + bat)
    sil, aswb = silhouettes_from_group_sums(sums, gid, lab, bat)
    np.testing.assert_allclose(sil, silhouette_samples(X, lab), atol=2e-5)
    assert aswb == pytest.approx(asw_batch(X, lab, bat), abs=2e-5)


def test_bras_cosine_matches_pairwise():
    from biomodal.eval._silhouette import asw_batch, bras_cosine

    X, bat, lab = blobs(n=500, shift=1.0, seed=7)
    X[3] = 0.0  # a zero vector
    ref = asw_batch(X, lab, bat, metric="cosine", between="mean_other")
    assert bras_cosine(X, lab, bat) == pytest.approx(ref, abs=1e-10)


def test_ilisi_clisi_shared_kernel_matches_separate():
    from biomodal.eval._lisi import clisi, ilisi, ilisi_clisi

    X, bat, lab = blobs(n=400, shift=0.5, seed=8)
    g = exact_knn(X, 45)
    assert ilisi_clisi(g, bat, lab) == pytest.approx((ilisi(g, bat), clisi(g, lab)), abs=1e-12)


def test_kbet_arpack_path_matches_dense_reference():
    """A 1,400-cell label (sparse eigensolver) against dense eigh + brute-force neighbours."""
    import scipy.linalg
    from scipy.stats import chisquare
    from threadpoolctl import threadpool_limits

    from biomodal.eval._kbet import kbet_per_label
    from biomodal.eval._knn import umap_connectivities

    X, bat, _ = blobs(n=1400, n_labels=1, n_batches=3, shift=0.25, dims=8, seed=9)
    lab = np.zeros(1400, dtype=int)
    conn = umap_connectivities(exact_knn(X, 50))
    ours = kbet_per_label(conn, bat, lab)
    # reference: diffusion map from a dense eigendecomposition, exact neighbours, scipy chi2
    C = conn.toarray().astype(np.float64)
    q = C.sum(0)
    K = C / np.outer(q, q)
    z = np.sqrt(K.sum(0))
    with threadpool_limits(limits=1, user_api="blas"):  # threaded LAPACK is slow at this size
        w, v = scipy.linalg.eigh(K / np.outer(z, z))
    top = np.argsort(-np.abs(w))[:100]
    w = w[top] + 1e-8
    emb = v[:, top] * np.where(np.isclose(w, 1), w, w / (1 - w))
    sq = (emb**2).sum(1)
    D = sq[:, None] + sq[None, :] - 2 * emb @ emb.T
    np.fill_diagonal(D, -1.0)  # self first
    k0 = int(np.clip(np.floor(np.bincount(bat).mean() / 4), 10, 70))
    nn = np.argsort(D, axis=1)[:, : k0 + 1]
    freq = np.bincount(bat) / 1400
    p = np.array([chisquare(np.bincount(bat[r], minlength=3), freq * (k0 + 1)).pvalue for r in nn])
    ref = (p >= 0.05).mean()
    assert 0.05 < ref < 0.95  # not degenerate
    assert ours == pytest.approx(ref, abs=2e-3)  # at most ~2 of 1,400 cells differ (near ties)
