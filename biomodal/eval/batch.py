"""Batch-mixing and bio-conservation metrics (scIB / scib-metrics definitions, exact kNN, vectorised).

:func:`batch_metrics` scores an embedding for how well batches mix (``asw_batch``,
``bras``, ``ilisi``, ``kbet``, ``graph_connectivity``, ``pcr``) and how well
biological labels are preserved (``asw_label``, ``isolated_labels``, ``clisi``,
``nmi``, ``ari``). Every value is scaled as scib-metrics scales it, so higher is
better and the range is [0, 1]. See ``docs/batch.md`` for the definitions.

Without labels (``labels=None``) only the batch metrics are computed, every item forming one
label group; bio-conservation metrics would be meaningless (NMI = ARI = 1 against one label)
and are not reported. The aggregates (``batch_mean_unscaled``, ``bio_mean_unscaled``,
``overall_unscaled``) are plain means of *unscaled* values: scib-metrics' ``Benchmarker``
min-max scales every metric across the methods it compares before averaging, so these are not
comparable with its totals. ``pcr`` enters the batch mean only with ``X_pre`` (scib's PCR
comparison); without it ``pcr`` is a different quantity and stays out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from biomodal._anndata import dense_matrix
from biomodal.errors import DataError
from biomodal.eval._kbet import graph_connectivity, kbet_per_label
from biomodal.eval._knn import KNNGraph, exact_knn, knn_and_group_sums, umap_connectivities
from biomodal.eval._lisi import clisi, ilisi, ilisi_clisi
from biomodal.eval._silhouette import bras_cosine, isolated_labels, silhouettes_from_group_sums

__all__ = ["AGGREGATES", "BATCH_METRICS", "BIO_METRICS", "KNNGraph", "batch_metrics", "exact_knn",
           "pcr_variance"]  # fmt: skip

BATCH_METRICS = ("asw_batch", "bras", "ilisi", "kbet", "graph_connectivity", "pcr")
BIO_METRICS = ("asw_label", "isolated_labels", "clisi", "nmi", "ari")
# scib-metrics' Benchmarker defaults (0.5.x): these enter its aggregate scores (pcr only with X_pre).
_AGG_BATCH = ("bras", "ilisi", "kbet", "graph_connectivity", "pcr")
_AGG_BIO = ("isolated_labels", "nmi", "ari", "asw_label", "clisi")
#: names of the unscaled aggregates (deliberately not scib's "batch_correction"/"total")
AGGREGATES = ("batch_mean_unscaled", "bio_mean_unscaled", "overall_unscaled")


def pcr_variance(X: np.ndarray, batch_codes: np.ndarray) -> float:
    """Share of the embedding's variance explained by batch (scib ``principal_component_regression``).

    With all principal components kept (the scib-metrics default) the variance-weighted
    mean of the per-PC R^2 of a regression on one-hot batch equals the between-batch sum
    of squares over the total sum of squares, which is computed directly (no SVD).
    """
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(axis=0)
    n_b = int(batch_codes.max()) + 1
    counts = np.bincount(batch_codes, minlength=n_b).astype(np.float64)
    sums = np.zeros((n_b, X.shape[1]))
    np.add.at(sums, batch_codes, Xc)
    present = counts > 0
    between = float((sums[present] ** 2 / counts[present, None]).sum())
    total = float((Xc**2).sum())
    return between / total if total > 0 else 0.0


def _nmi_ari(X: np.ndarray, label_codes: np.ndarray, n_init: int, seed: int) -> tuple[float, float]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    n_clusters = len(np.unique(label_codes))
    km = KMeans(n_clusters=n_clusters, init="k-means++", n_init=n_init, max_iter=300, random_state=seed)
    pred = km.fit_predict(np.asarray(X, dtype=np.float32))
    nmi = normalized_mutual_info_score(label_codes, pred, average_method="arithmetic")
    return float(nmi), float(adjusted_rand_score(label_codes, pred))


def _codes(values: Any, adata: Any, n: int, what: str) -> np.ndarray:
    if isinstance(values, str):
        if adata is None:
            raise DataError(f"{what}={values!r} is a column name but no AnnData was given; pass an array")
        if values not in adata.obs.columns:
            raise DataError(f"{what}: obs column {values!r} not found; available: {list(adata.obs.columns)}")
        values = adata.obs[values].to_numpy()
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{what}: expected {n} values (one per cell), got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise DataError(f"{what}: contains NaN")
    try:
        _, codes = np.unique(arr, return_inverse=True)
    except TypeError:  # mixed types
        _, codes = np.unique(arr.astype(str), return_inverse=True)
    return codes.astype(np.int64).ravel()


def _resolve(X_or_adata: Any, basis: str | None, X_pre: Any) -> tuple[np.ndarray, np.ndarray | None, Any]:
    adata = None
    if hasattr(X_or_adata, "obsm") and hasattr(X_or_adata, "obs"):
        adata = X_or_adata
        if basis is None:
            basis = "X_pca" if "X_pca" in adata.obsm else "X"
        X = dense_matrix(adata, basis, "batch_metrics basis")
        if isinstance(X_pre, str):
            X_pre = dense_matrix(adata, X_pre, "batch_metrics X_pre")
    else:
        if basis is not None:
            raise DataError(f"basis={basis!r} needs an AnnData; an array was given")
        if isinstance(X_pre, str):
            raise DataError(f"X_pre={X_pre!r} is a key but no AnnData was given; pass an array")
        X = np.asarray(X_or_adata)
    if X.ndim != 2 or X.shape[0] < 3:
        raise DataError(f"embedding must be a 2-D (n_cells >= 3, n_dims) array, got shape {X.shape}")
    X = X.astype(np.float64, copy=False)
    if not np.isfinite(X).all():
        raise DataError("embedding contains NaN or infinite values")
    if X_pre is not None:
        X_pre = np.asarray(X_pre, dtype=np.float64)
        if X_pre.ndim != 2 or X_pre.shape[0] != X.shape[0]:
            raise DataError(f"X_pre: expected ({X.shape[0]}, d) array, got shape {X_pre.shape}")
    return X, X_pre, adata


def batch_metrics(
    X_or_adata: Any,
    batch: Any,
    labels: Any,
    *,
    basis: str | None = None,
    X_pre: Any = None,
    metrics: Sequence[str] | None = None,
    k_lisi: int = 90,
    k_kbet: int = 50,
    k_graph: int = 15,
    neighbors: KNNGraph | None = None,
    kmeans_n_init: int = 5,
    seed: int = 0,
    n_jobs: int | None = None,
    knn_backend: str = "auto",
    aggregate: bool = True,
) -> dict[str, float]:
    """Batch-mixing and bio-conservation metrics of an embedding, scaled as in scib-metrics.

    One exact kNN graph with ``max(k_lisi, k_kbet, k_graph)`` neighbours (self included)
    is built and subset per metric, as scib-metrics' ``Benchmarker`` does with its
    15 / 50 / 90 neighbour graphs. All values are in [0, 1], higher is better.

    Parameters
    ----------
    X_or_adata
        ``(n_cells, n_dims)`` embedding, or an AnnData whose ``obsm[basis]`` is scored.
    batch, labels
        Per-cell batch and biological label (arrays, or ``obs`` column names with AnnData).
        ``labels=None``: no labels; only batch metrics are computed (every cell in one label
        group) and asking for a bio metric is an error.
    basis
        ``obsm`` key (or ``"X"``) with AnnData; default ``"X_pca"`` when present, else ``X``.
    X_pre
        Pre-integration embedding (array, or ``obsm`` key / ``"X"``) for scib's PCR
        comparison. Without it ``pcr`` is ``1 - (variance share explained by batch)`` of
        the embedding itself, which is not scib's definition and does not enter the aggregates.
    metrics
        Subset of :data:`BATCH_METRICS` + :data:`BIO_METRICS` to compute (default all; without
        labels, all batch metrics).
    k_lisi, k_kbet, k_graph
        Neighbours (self included) for iLISI/cLISI, kBET and graph connectivity
        (scib-metrics defaults 90, 50, 15). LISI perplexity is ``k_lisi // 3``.
    neighbors
        A precomputed :class:`KNNGraph` with at least ``max(k...)`` neighbours, used as is.
    kmeans_n_init
        k-means restarts for NMI/ARI (scib-metrics runs one; more are more stable).
    seed
        k-means seed.
    n_jobs
        Threads for the faiss / scikit-learn kNN search (``None``: all).
    knn_backend
        ``"auto"`` / ``"blas"`` (one blockwise distance pass that also yields the silhouette
        sums; fastest), ``"faiss"`` or ``"sklearn"`` (all exact).
    aggregate
        Add ``batch_mean_unscaled`` and ``bio_mean_unscaled`` (plain means of scib-metrics'
        Benchmarker metric sets, ``pcr`` only with ``X_pre``) and ``overall_unscaled =
        0.4 batch + 0.6 bio`` when their parts were computed. Not comparable with Benchmarker
        totals, which min-max scale each metric across the compared methods first.

    Returns
    -------
    dict
        Metric name -> float.
    """
    X, X_pre, adata = _resolve(X_or_adata, basis, X_pre)
    n = X.shape[0]
    b = _codes(batch, adata, n, "batch")
    lab = np.zeros(n, dtype=np.int64) if labels is None else _codes(labels, adata, n, "labels")
    known = BATCH_METRICS + BIO_METRICS
    default = BATCH_METRICS if labels is None else known
    wanted = list(default) if metrics is None else list(metrics)
    bad = [m for m in wanted if m not in known]
    if bad:
        raise DataError(f"unknown metric(s) {bad}; choose from {list(known)}")
    if labels is None and any(m in BIO_METRICS for m in wanted):
        asked = [m for m in wanted if m in BIO_METRICS]
        raise DataError(f"bio-conservation metric(s) {asked} need labels; labels=None was given")
    ks = {"ilisi": k_lisi, "clisi": k_lisi, "kbet": k_kbet, "graph_connectivity": k_graph}
    k_max = max([ks[m] for m in wanted if m in ks], default=0)
    graph = None
    k_max = min(k_max, n)
    if k_max and neighbors is not None:
        if neighbors.n_cells != n or neighbors.k < k_max:
            raise DataError(
                f"neighbors: need a graph over {n} cells with >= {k_max} neighbours, got {neighbors!r}"
            )
        graph = neighbors
    # One pass over the pairwise distances gives the kNN graph (blas backend) and the
    # per-(label, batch) distance sums behind asw_label, isolated_labels and asw_batch.
    need_sums = any(m in wanted for m in ("asw_batch", "asw_label", "isolated_labels"))
    k_pass = k_max if graph is None and knn_backend in ("auto", "blas") else 0
    sil_label = asw_b = None
    if need_sums or k_pass:
        n_b = int(b.max()) + 1
        g, sums, gid = knn_and_group_sums(X, k_pass, lab * n_b + b if need_sums else None)
        graph = g if k_pass else graph
        if need_sums:
            sil_label, asw_b = silhouettes_from_group_sums(sums, gid, lab, b)
    if k_max and graph is None:
        graph = exact_knn(X, k_max, n_jobs=n_jobs, backend=knn_backend)
    out: dict[str, float] = {}
    for m in wanted:
        if m == "asw_batch":
            out[m] = asw_b
        elif m == "bras":
            out[m] = bras_cosine(X, lab, b)
        elif m in ("ilisi", "clisi") and "ilisi" in wanted and "clisi" in wanted:
            if m not in out:  # one kernel calibration for both
                out["ilisi"], out["clisi"] = ilisi_clisi(graph.subset(min(k_lisi, n)), b, lab)
        elif m == "ilisi":
            out[m] = ilisi(graph.subset(min(k_lisi, n)), b)
        elif m == "clisi":
            out[m] = clisi(graph.subset(min(k_lisi, n)), lab)
        elif m == "kbet":
            conn = umap_connectivities(graph.subset(min(k_kbet, n)))
            out[m] = kbet_per_label(conn, b, lab, n_jobs=n_jobs)
        elif m == "graph_connectivity":
            out[m] = graph_connectivity(graph.subset(min(k_graph, n)), lab)
        elif m == "pcr":
            post = pcr_variance(X, b)
            if X_pre is None:
                out[m] = 1.0 - post
            else:
                pre = pcr_variance(X_pre, b)
                out[m] = max(0.0, (pre - post) / pre) if pre > 0 else float("nan")
        elif m == "asw_label":
            out[m] = float((sil_label.mean() + 1) / 2)
        elif m == "isolated_labels":
            out[m] = isolated_labels(X, lab, b, sil=sil_label)
        elif m in ("nmi", "ari"):
            if m not in out:
                out["nmi"], out["ari"] = _nmi_ari(X, lab, kmeans_n_init, seed)
    out = {m: out[m] for m in wanted}
    if aggregate:
        agg_batch = [m for m in _AGG_BATCH if m != "pcr" or X_pre is not None]
        if all(m in out for m in agg_batch):
            out["batch_mean_unscaled"] = float(np.mean([out[m] for m in agg_batch]))
        if all(m in out for m in _AGG_BIO):
            out["bio_mean_unscaled"] = float(np.mean([out[m] for m in _AGG_BIO]))
        if "batch_mean_unscaled" in out and "bio_mean_unscaled" in out:
            out["overall_unscaled"] = 0.4 * out["batch_mean_unscaled"] + 0.6 * out["bio_mean_unscaled"]
    return out
