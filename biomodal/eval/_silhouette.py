"""Silhouette-based metrics (ASW label, ASW batch, BRAS, isolated labels) as scib-metrics defines them.

:func:`silhouette_samples` computes distances exactly in float64, a block of rows
at a time (BLAS matrix products), reduced per cluster with a one-hot matrix
product: ``O(n^2 d)`` time, ``O(block * n)`` memory. :func:`batch_metrics` instead
takes per-(label, batch) distance sums from the single float32 distance pass that
also builds the kNN graph (:func:`silhouettes_from_group_sums`), and computes the
cosine BRAS in ``O(n d)`` from per-batch sums of unit vectors (:func:`bras_cosine`).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "asw_batch",
    "asw_label",
    "bras_cosine",
    "isolated_labels",
    "silhouette_samples",
    "silhouettes_from_group_sums",
]

_BLOCK_ELEMS = 8_000_000  # distance entries per block (~64 MB float64)


def _dist_block(xb: np.ndarray, X: np.ndarray, sq: np.ndarray, sqb: np.ndarray, metric: str) -> np.ndarray:
    g = xb @ X.T
    if metric == "cosine":
        return np.clip(1.0 - g, 0.0, 2.0)
    d2 = sqb[:, None] + sq[None, :] - 2.0 * g
    return np.sqrt(np.maximum(d2, 0.0))


def silhouette_samples(
    X: np.ndarray, codes: np.ndarray, *, metric: str = "euclidean", between: str = "nearest"
) -> np.ndarray:
    """Per-cell silhouette width (scikit-learn / scib-metrics definition).

    Parameters
    ----------
    X
        ``(n, d)`` embedding.
    codes
        Cluster code per cell, ``0..n_clusters-1``.
    metric
        ``"euclidean"`` or ``"cosine"``.
    between
        ``"nearest"`` (standard silhouette) or ``"mean_other"`` (BRAS: mean distance to all
        cells of the other clusters).

    Returns
    -------
    numpy.ndarray
        ``(n,)`` silhouette values; undefined ones (singleton clusters, zero distances) are 0.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if metric == "cosine":
        norm = np.linalg.norm(X, axis=1, keepdims=True)
        X = X / np.where(norm > 0, norm, 1.0)
    sq = np.einsum("ij,ij->i", X, X)
    n_c = int(codes.max()) + 1
    freq = np.bincount(codes, minlength=n_c).astype(np.float64)
    onehot = np.zeros((n, n_c))
    onehot[np.arange(n), codes] = 1.0
    intra = np.empty(n)
    inter = np.empty(n)
    step = max(1, _BLOCK_ELEMS // max(n, 1))
    for s in range(0, n, step):
        e = min(n, s + step)
        D = _dist_block(X[s:e], X, sq, sq[s:e], metric)
        if metric == "euclidean":
            D[np.arange(e - s), np.arange(s, e)] = 0.0
        cd = D @ onehot
        own = codes[s:e]
        r = np.arange(e - s)
        intra[s:e] = cd[r, own]
        if between == "mean_other":
            inter[s:e] = (cd.sum(axis=1) - cd[r, own]) / (n - freq[own])
        else:
            cd = cd / freq
            cd[r, own] = np.inf
            inter[s:e] = cd.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        intra = intra / (freq[codes] - 1)
        sil = (inter - intra) / np.maximum(intra, inter)
    return np.nan_to_num(sil, nan=0.0)


def asw_label(X: np.ndarray, label_codes: np.ndarray) -> float:
    """Rescaled label ASW ``(mean silhouette + 1) / 2`` (``scib_metrics.silhouette_label``)."""
    return float((np.mean(silhouette_samples(X, label_codes)) + 1) / 2)


def isolated_labels(
    X: np.ndarray, label_codes: np.ndarray, batch_codes: np.ndarray, sil: np.ndarray | None = None
) -> float:
    """Isolated-label ASW (``scib_metrics.isolated_labels``, rescaled to [0, 1]).

    Labels present in the fewest batches count as isolated; the score is the mean, over
    those labels, of the mean rescaled label silhouette of their cells.
    """
    if sil is None:
        sil = silhouette_samples(X, label_codes)
    sil = (sil + 1) / 2
    n_l = int(label_codes.max()) + 1
    pairs = np.unique(np.stack([label_codes, batch_codes]), axis=1)
    n_batches_per_label = np.bincount(pairs[0], minlength=n_l)
    present = np.unique(label_codes)
    thr = n_batches_per_label[present].min()
    iso = present[n_batches_per_label[present] <= thr]
    return float(np.mean([sil[label_codes == lab].mean() for lab in iso]))


def asw_batch(
    X: np.ndarray,
    label_codes: np.ndarray,
    batch_codes: np.ndarray,
    *,
    metric: str = "euclidean",
    between: str = "nearest",
) -> float:
    """Batch ASW within labels, ``1 - |silhouette|`` per cell (``scib_metrics.silhouette_batch``).

    For each label with at least 2 batches (and fewer batches than cells), the
    silhouette of its cells with respect to batch is computed, mapped to ``1 - |s|``
    and averaged; the score is the mean over labels. ``metric="cosine",
    between="mean_other"`` gives BRAS (``scib_metrics.bras``).
    """
    X = np.asarray(X, dtype=np.float64)
    scores = []
    for lab in np.unique(label_codes):
        m = label_codes == lab
        b = batch_codes[m]
        ub, b = np.unique(b, return_inverse=True)
        if len(ub) == 1 or len(ub) == m.sum():
            continue
        s = silhouette_samples(X[m], b, metric=metric, between=between)
        scores.append(np.mean(1 - np.abs(s)))
    return float(np.mean(scores)) if scores else float("nan")


def _sil_from_cluster_sums(cd: np.ndarray, own: np.ndarray, freq: np.ndarray, between: str) -> np.ndarray:
    """Silhouettes from ``cd[i, c]`` = sum of distances of cell ``i`` to cluster ``c``."""
    n = cd.shape[0]
    r = np.arange(n)
    intra = cd[r, own]
    with np.errstate(divide="ignore", invalid="ignore"):
        if between == "mean_other":
            inter = (cd.sum(axis=1) - intra) / (freq.sum() - freq[own])
        else:
            means = cd / freq
            means[r, own] = np.inf
            inter = means.min(axis=1)
        intra = intra / (freq[own] - 1)
        sil = (inter - intra) / np.maximum(intra, inter)
    return np.nan_to_num(sil, nan=0.0)


def silhouettes_from_group_sums(
    sums: np.ndarray, group_ids: np.ndarray, label_codes: np.ndarray, batch_codes: np.ndarray
) -> tuple[np.ndarray, float]:
    """Label silhouettes and batch ASW from per-(label, batch) distance sums.

    Parameters
    ----------
    sums
        ``(n, n_groups)`` sum of each cell's Euclidean distances to the cells of every
        present group ``label * n_batches + batch`` (self distance 0).
    group_ids
        ``(n_groups,)`` sorted ids of the present groups (columns of ``sums``).
    label_codes, batch_codes
        Codes per cell; every label code ``0..n_labels-1`` is present.

    Returns
    -------
    tuple
        Per-cell label silhouette (as :func:`silhouette_samples`) and the batch ASW (as
        :func:`asw_batch`, ``nan`` when no label has 2 batches and fewer batches than cells).
    """
    n_b = int(batch_codes.max()) + 1
    glab = group_ids // n_b
    counts = np.bincount(label_codes * n_b + batch_codes, minlength=int(group_ids.max()) + 1)[group_ids]
    lstarts = np.flatnonzero(np.r_[True, glab[1:] != glab[:-1]])
    label_sums = np.add.reduceat(sums, lstarts, axis=1)
    freq = np.add.reduceat(counts, lstarts).astype(np.float64)
    sil_label = _sil_from_cluster_sums(label_sums, label_codes, freq, "nearest")
    scores = []
    bounds = np.r_[lstarts, group_ids.size]
    for lab in range(lstarts.size):
        a, b = bounds[lab], bounds[lab + 1]
        m = np.flatnonzero(label_codes == lab)
        if b - a == 1 or b - a == m.size:
            continue
        own = np.searchsorted(group_ids[a:b], lab * n_b + batch_codes[m])
        s = _sil_from_cluster_sums(sums[m, a:b], own, counts[a:b].astype(np.float64), "nearest")
        scores.append(np.mean(1 - np.abs(s)))
    return sil_label, float(np.mean(scores)) if scores else float("nan")


def bras_cosine(X: np.ndarray, label_codes: np.ndarray, batch_codes: np.ndarray) -> float:
    """BRAS (``scib_metrics.bras``: cosine distance, mean distance to the other batches) in ``O(n d)``.

    The summed cosine distance of a cell to a set of cells is ``|set| - u . sum(u_j)``
    with unit vectors ``u``, so per-batch sums of unit vectors replace the pairwise
    distances. Equal to ``asw_batch(X, ..., metric="cosine", between="mean_other")``.
    """
    X = np.asarray(X, dtype=np.float64)
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    U = X / np.where(norm > 0, norm, 1.0)
    scores = []
    for lab in np.unique(label_codes):
        m = np.flatnonzero(label_codes == lab)
        ub, b = np.unique(batch_codes[m], return_inverse=True)
        if len(ub) == 1 or len(ub) == m.size:
            continue
        freq = np.bincount(b).astype(np.float64)
        S = np.zeros((ub.size, X.shape[1]))
        np.add.at(S, b, U[m])
        cd = freq[None, :] - U[m] @ S.T
        s = _sil_from_cluster_sums(cd, b, freq, "mean_other")
        scores.append(np.mean(1 - np.abs(s)))
    return float(np.mean(scores)) if scores else float("nan")
