"""HEST-style expression prediction, BLEEP-style kNN, and the non-learned baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import pearsonr

from biomodal.errors import DataError
from biomodal.eval import expression_prediction, knn_expression
from biomodal.eval.baselines import colour_histogram_features, raw_pixel_features


def _synthetic(n_train=300, n_test=120, d=24, n_genes=80, seed=0):
    """Expression linear in the embedding plus noise; gene scales vary so HVGs are known."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(d, n_genes)) * np.linspace(0.1, 3.0, n_genes)
    X = rng.normal(size=(n_train + n_test, d))
    Y = X @ W + 0.5 * rng.normal(size=(n_train + n_test, n_genes))
    genes = [f"G{i}" for i in range(n_genes)]
    return X[:n_train], Y[:n_train], X[n_train:], Y[n_train:], genes


def _reference_hest(Xtr, Ytr, Xte, Yte, n_comp, top_k):
    """Independent numpy version: HVG on train, standardise, PCA (SVD), ridge, Pearson."""
    hv = np.sort(np.argsort(-Ytr.var(axis=0), kind="stable")[:top_k])
    ytr, yte = Ytr[:, hv], Yte[:, hv]
    mu, sd = Xtr.mean(0), Xtr.std(0)
    Ztr, Zte = (Xtr - mu) / sd, (Xte - mu) / sd
    zm = Ztr.mean(0)
    _, _, Vt = np.linalg.svd(Ztr - zm, full_matrices=False)
    P = Vt[:n_comp].T
    Ptr, Pte = (Ztr - zm) @ P, (Zte - zm) @ P
    alpha = 100 / (n_comp * len(hv))
    B = np.linalg.solve(Ptr.T @ Ptr + alpha * np.eye(n_comp), Ptr.T @ ytr)
    pred = Pte @ B
    return hv, np.array([pearsonr(pred[:, j], yte[:, j])[0] for j in range(len(hv))])


def test_matches_independent_reference():
    Xtr, Ytr, Xte, Yte, genes = _synthetic()
    out = expression_prediction(Xtr, Ytr, Xte, Yte, genes=genes, n_components=10, top_k=30)
    hv, ref = _reference_hest(Xtr, Ytr, Xte, Yte, 10, 30)
    assert out["genes"] == [genes[i] for i in hv]
    got = np.array([out["pearson_per_gene"][g] for g in out["genes"]])
    np.testing.assert_allclose(got, ref, atol=2e-3)
    assert out["pearson_mean"] == pytest.approx(ref.mean(), abs=2e-3)
    assert out["n_genes"] == 30 and out["n_train"] == 300 and out["n_test"] == 120
    assert out["alpha"] == pytest.approx(100 / (10 * 30))


def test_signal_is_recovered_and_noise_is_not():
    Xtr, Ytr, Xte, Yte, genes = _synthetic()
    good = expression_prediction(Xtr, Ytr, Xte, Yte, genes=genes)
    assert good["pearson_mean"] > 0.9
    assert good["n_components"] == 24  # capped at the feature dimension
    rng = np.random.default_rng(1)
    noise = expression_prediction(rng.normal(size=Xtr.shape), Ytr, rng.normal(size=Xte.shape), Yte)
    assert abs(noise["pearson_mean"]) < 0.1


def test_no_test_set_peeking():
    Xtr, Ytr, Xte, Yte, genes = _synthetic()
    base = expression_prediction(Xtr, Ytr, Xte, Yte, genes=genes, top_k=20, return_predictions=True)
    # A different test set: extra spots, and expression with huge variance on other genes.
    rng = np.random.default_rng(2)
    extra_X = rng.normal(size=(50, Xte.shape[1])) * 100
    Yte2 = np.vstack([Yte, rng.normal(size=(50, Yte.shape[1]))])
    Yte2[:, ~np.isin(genes, base["genes"])] *= 1e4
    other = expression_prediction(
        Xtr, Ytr, np.vstack([Xte, extra_X]), Yte2, genes=genes, top_k=20, return_predictions=True
    )
    assert other["genes"] == base["genes"]  # gene selection ignores test variance
    np.testing.assert_array_equal(other["predictions"][: len(Xte)], base["predictions"])
    np.testing.assert_array_equal(other["model"].ridge_.coef_, base["model"].ridge_.coef_)
    np.testing.assert_array_equal(other["model"].scaler_.mean_, base["model"].scaler_.mean_)


def test_input_forms_and_explicit_genes():
    Xtr, Ytr, Xte, Yte, genes = _synthetic()
    dense = expression_prediction(Xtr, Ytr, Xte, Yte, genes=genes)
    frames = expression_prediction(
        Xtr, pd.DataFrame(Ytr, columns=genes), Xte, pd.DataFrame(Yte, columns=genes)
    )
    assert frames["pearson_per_gene"] == pytest.approx(dense["pearson_per_gene"])
    counts = np.random.default_rng(3).poisson(2.0, size=Ytr.shape)
    a = expression_prediction(Xtr, sp.csr_matrix(counts), Xte, Yte.clip(0), log1p=True)
    b = expression_prediction(Xtr, counts.astype(float), Xte, Yte.clip(0), log1p=True)
    assert a["genes"] == b["genes"] and a["pearson_mean"] == pytest.approx(b["pearson_mean"])
    chosen = expression_prediction(Xtr, Ytr, Xte, Yte, genes=genes, hvg_genes=["G3", "G70"])
    assert chosen["genes"] == ["G3", "G70"]
    with pytest.raises(DataError, match="G999"):
        expression_prediction(Xtr, Ytr, Xte, Yte, genes=genes, hvg_genes=["G999"])
    with pytest.raises(DataError, match="rows"):
        expression_prediction(Xtr, Ytr, Xte[:5], Yte, genes=genes)


def test_gene_constant_in_test_is_reported_not_averaged():
    Xtr, Ytr, Xte, Yte, genes = _synthetic()
    Yte = Yte.copy()
    top = int(np.argmax(Ytr.var(axis=0)))
    Yte[:, top] = 1.0  # the most variable training gene, constant on the test section
    out = expression_prediction(Xtr, Ytr, Xte, Yte, genes=genes, top_k=5)
    assert np.isnan(out["pearson_per_gene"][genes[top]])
    assert out["n_genes_undefined"] == 1
    finite = [v for v in out["pearson_per_gene"].values() if np.isfinite(v)]
    assert out["pearson_mean"] == pytest.approx(np.mean(finite))


def _reference_knn(keys, Ytr, queries, Yte, k, hv, weighted=False):
    kn = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    s = qn @ kn.T
    pred = np.zeros((len(queries), len(hv)))
    for i in range(len(queries)):
        nb = np.argsort(-s[i])[:k]
        w = np.exp(-np.sum((kn[nb] - qn[i]) ** 2, axis=1)) if weighted else np.ones(k)
        pred[i] = np.average(Ytr[nb][:, hv], axis=0, weights=w)
    return np.array([pearsonr(pred[:, j], Yte[:, hv[j]])[0] for j in range(len(hv))])


@pytest.mark.parametrize("weighting", ["mean", "exp"])
def test_knn_matches_brute_force_reference(weighting):
    Xtr, Ytr, Xte, Yte, genes = _synthetic()
    rng = np.random.default_rng(4)
    keys = Xtr + 0.3 * rng.normal(size=Xtr.shape)  # "expression embeddings" of training spots
    out = knn_expression(keys, Ytr, Xte, Yte, k=7, genes=genes, top_k=15, weighting=weighting, chunk_size=64)
    hv = np.sort(np.argsort(-Ytr.var(axis=0), kind="stable")[:15])
    ref = _reference_knn(keys, Ytr, Xte, Yte, 7, hv, weighted=weighting == "exp")
    got = np.array([out["knn_pearson_per_gene"][g] for g in out["genes"]])
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert out["knn_pearson_mean"] > 0.3 and out["k"] == 7


def test_knn_exact_key_recovers_expression():
    Xtr, Ytr, _, _, genes = _synthetic()
    out = knn_expression(Xtr, Ytr, Xtr[:100], Ytr[:100], k=1, genes=genes, return_predictions=True)
    assert out["knn_pearson_mean"] == pytest.approx(1.0)
    np.testing.assert_array_equal(out["neighbours"][:, 0], np.arange(100))


def test_colour_histogram_matches_numpy_histograms():
    rng = np.random.default_rng(5)
    tiles = rng.integers(0, 256, size=(6, 20, 16, 3), dtype=np.uint8)
    feats = colour_histogram_features(tiles, bins=8)
    assert feats.shape == (6, 24) and feats.dtype == np.float32
    for i in range(6):
        ref = [np.histogram(tiles[i, ..., c], bins=8, range=(0, 256))[0] / 320 for c in range(3)]
        np.testing.assert_allclose(feats[i], np.concatenate(ref), atol=1e-7)
    joint = colour_histogram_features(tiles, bins=4, joint=True)
    ref = np.histogramdd(tiles[2].reshape(-1, 3), bins=4, range=[(0, 256)] * 3)[0].ravel() / 320
    np.testing.assert_allclose(joint[2], ref, atol=1e-7)
    streamed = colour_histogram_features(iter([tiles[0], tiles[1:4], tiles[4], tiles[5]]), bins=8)
    np.testing.assert_array_equal(streamed, feats)
    with pytest.raises(DataError, match="uint8"):
        colour_histogram_features(tiles.astype(np.float32))


def test_raw_pixels_are_exact_area_averages():
    rng = np.random.default_rng(6)
    tiles = rng.integers(0, 256, size=(3, 37, 29, 3), dtype=np.uint8)
    feats = raw_pixel_features(tiles, size=5)
    assert feats.shape == (3, 75)
    # Upsampling by 5 makes every output cell an exact block of 37 x 29 upsampled pixels.
    up = tiles.repeat(5, axis=1).repeat(5, axis=2).astype(np.float64)
    ref = up.reshape(3, 5, 37, 5, 29, 3).mean(axis=(2, 4)) / 255
    np.testing.assert_allclose(feats.reshape(3, 5, 5, 3), ref, atol=1e-6)
    # Integer factors: plain block means.
    block = raw_pixel_features(tiles[:, :36, :28], size=4)
    ref = tiles[:, :36, :28].reshape(3, 4, 9, 4, 7, 3).mean(axis=(2, 4)) / 255
    np.testing.assert_allclose(block.reshape(3, 4, 4, 3), ref, atol=1e-6)


def _her2st_section(root, name, tile=128):
    import pandas as pd
    from PIL import Image

    spots = pd.read_csv(root / name / "spots.tsv", sep="\t")
    spots = spots[spots["selected"] == 1]
    counts = pd.read_csv(root / name / "counts.tsv.gz", sep="\t", index_col=0)
    spots.index = [f"{x}x{y}" for x, y in zip(spots["x"], spots["y"])]
    spots = spots.loc[spots.index.intersection(counts.index)]
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # a ~9,300 x 9,900 px section image
    try:
        img = np.asarray(Image.open(root / name / "image.jpg").convert("RGB"))
    finally:
        Image.MAX_IMAGE_PIXELS = old
    h = tile // 2
    cx = spots["pixel_x"].round().astype(int).clip(h, img.shape[1] - h)
    cy = spots["pixel_y"].round().astype(int).clip(h, img.shape[0] - h)
    tiles = np.stack([img[y - h : y + h, x - h : x + h] for x, y in zip(cx, cy)])
    return tiles, counts.loc[spots.index]


@pytest.mark.realdata
@pytest.mark.slow
def test_her2st_colour_baseline_across_sections(shared_data):
    """Non-learned baseline on two real ST sections of one tumour, split by section."""
    root = shared_data / "spatial" / "her2st"
    tiles_tr, counts_tr = _her2st_section(root, "C2")
    tiles_te, counts_te = _her2st_section(root, "C3")
    genes = counts_tr.columns.intersection(counts_te.columns)
    ytr = counts_tr[genes].to_numpy(float)
    yte = counts_te[genes].to_numpy(float)
    ytr = ytr / ytr.sum(1, keepdims=True) * 1e4  # per-spot normalisation uses only that spot
    yte = yte / yte.sum(1, keepdims=True) * 1e4
    Xtr, Xte = colour_histogram_features(tiles_tr, bins=8), colour_histogram_features(tiles_te, bins=8)
    out = expression_prediction(Xtr, ytr, Xte, yte, genes=list(genes), log1p=True)
    assert out["n_genes"] == 50 and out["n_train"] == len(tiles_tr) > 150
    assert out["n_components"] == 24  # 3 x 8 histogram bins
    assert np.isfinite(out["pearson_mean"])
    # Colour carries some expression signal across sections (tumour vs stroma), but far
    # from all of it; shuffling the test spots destroys it.
    assert 0.02 < out["pearson_mean"] < 0.8
    perm = np.random.default_rng(0).permutation(len(Xte))
    shuffled = expression_prediction(Xtr, ytr, Xte[perm], yte, genes=list(genes), log1p=True)
    assert abs(shuffled["pearson_mean"]) < out["pearson_mean"]
    print({k: out[k] for k in ("pearson_mean", "n_train", "n_test")}, shuffled["pearson_mean"])


def test_predictions_are_on_the_measured_scale():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 12))
    Y = 5.0 + X[:, :4] @ rng.normal(size=(4, 6)) + rng.normal(scale=0.1, size=(300, 6))
    out = expression_prediction(X[:200], Y[:200], X[200:], Y[200:], top_k=6, return_predictions=True)
    pred = out["predictions"]
    np.testing.assert_allclose(pred.mean(axis=0), Y[200:].mean(axis=0), atol=0.3)
    assert out["mse_mean"] < 0.1
