"""Local inverse Simpson's index (LISI), vectorised over cells, as scib-metrics defines it."""

from __future__ import annotations

import numpy as np

from biomodal.eval._knn import KNNGraph

__all__ = ["clisi", "ilisi", "ilisi_clisi", "lisi_per_cell"]


def _hbeta(d: np.ndarray, mask: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    P = np.where(mask, np.exp(-d * beta[:, None]), 0.0)
    s = P.sum(axis=1)
    ok = s > 0
    safe = np.where(ok, s, 1.0)
    with np.errstate(divide="ignore"):
        H = np.where(ok, np.log(safe) + beta * (d * P).sum(axis=1) / safe, 0.0)
    P = np.where(ok[:, None], P / safe[:, None], 0.0)
    return H, P


def lisi_per_cell(
    graph: KNNGraph,
    codes: np.ndarray,
    perplexity: float | None = None,
    tol: float = 1e-5,
    max_tries: int = 50,
) -> np.ndarray:
    """LISI of every cell: 1 / Simpson index of its perplexity-calibrated neighbourhood.

    Follows ``scib_metrics.utils.compute_simpson_index``: Gaussian kernel on the kNN
    distances (self excluded), bandwidth found by bisection on the entropy until it is
    within ``tol`` of ``log(perplexity)`` (at most ``max_tries`` steps); a cell whose
    kernel sums to 0 gets Simpson index -1, as in scib-metrics.

    Parameters
    ----------
    graph
        kNN graph.
    codes
        Integer category code of every cell, ``0..n_categories-1``.
    perplexity
        Effective neighbourhood size; ``None``: ``floor(k / 3)``.
    tol, max_tries
        Bisection tolerance and step limit.

    Returns
    -------
    numpy.ndarray
        ``(n_cells,)`` LISI values.
    """
    P, H = _lisi_weights(graph, perplexity, tol, max_tries)
    return _inverse_simpson(graph.indices, P, H, codes)


def _lisi_weights(
    graph: KNNGraph, perplexity: float | None, tol: float, max_tries: int
) -> tuple[np.ndarray, np.ndarray]:
    """Perplexity-calibrated neighbour weights ``P`` and entropies ``H`` (independent of the codes).

    Rows are independent: large graphs are split into row chunks run in threads (numpy
    releases the GIL in the element-wise work).
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    n, k = graph.indices.shape
    if perplexity is None:
        perplexity = float(np.floor(k / 3))
    workers = min(os.cpu_count() or 1, 8) if n >= 4000 else 1
    bounds = np.linspace(0, n, workers + 1).astype(int)
    P = np.empty((n, k))
    H = np.empty(n)

    def chunk(j: int) -> None:
        s, e = bounds[j], bounds[j + 1]
        d = graph.distances[s:e].astype(np.float64)
        mask = graph.indices[s:e] != np.arange(s, e)[:, None]
        H[s:e], P[s:e] = _calibrate(d, mask, float(perplexity), tol, max_tries)

    if workers == 1:
        chunk(0)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(chunk, range(workers)))
    return P, H


def _calibrate(
    d: np.ndarray, mask: np.ndarray, perplexity: float, tol: float, max_tries: int
) -> tuple[np.ndarray, np.ndarray]:
    n = d.shape[0]
    logp = np.log(perplexity)
    beta = np.ones(n)
    bmin = np.full(n, -np.inf)
    bmax = np.full(n, np.inf)
    H, P = _hbeta(d, mask, beta)
    hdiff = H - logp
    active = np.abs(hdiff) >= tol
    for _ in range(max_tries):
        a = np.flatnonzero(active)
        if a.size == 0:
            break
        hd, b = hdiff[a], beta[a]
        pos = hd > 0
        bmin[a] = np.where(pos, b, bmin[a])
        bmax[a] = np.where(pos, bmax[a], b)
        nb = np.where(
            pos,
            np.where(np.isinf(bmax[a]), b * 2, (b + bmax[a]) / 2),
            np.where(np.isinf(bmin[a]), b / 2, (b + bmin[a]) / 2),
        )
        beta[a] = nb
        Ha, Pa = _hbeta(d[a], mask[a], nb)
        H[a], P[a] = Ha, Pa
        hdiff[a] = Ha - logp
        active[a] = np.abs(hdiff[a]) >= tol
    return H, P


def _inverse_simpson(idx: np.ndarray, P: np.ndarray, H: np.ndarray, codes: np.ndarray) -> np.ndarray:
    n = idx.shape[0]
    n_cat = int(codes.max()) + 1
    lab = codes[idx]
    flat = (np.arange(n)[:, None] * n_cat + lab).ravel()
    sums = np.bincount(flat, weights=P.ravel(), minlength=n * n_cat).reshape(n, n_cat)
    simpson = np.where(H == 0, -1.0, (sums**2).sum(axis=1))
    return 1.0 / simpson


def ilisi(graph: KNNGraph, batch_codes: np.ndarray, perplexity: float | None = None) -> float:
    """Scaled integration LISI: ``(median LISI - 1) / (n_batches - 1)``; 1 = perfectly mixed."""
    n_b = len(np.unique(batch_codes))
    med = float(np.nanmedian(lisi_per_cell(graph, batch_codes, perplexity)))
    return (med - 1) / (n_b - 1) if n_b > 1 else float("nan")


def clisi(graph: KNNGraph, label_codes: np.ndarray, perplexity: float | None = None) -> float:
    """Scaled cell-type LISI: ``(n_labels - median LISI) / (n_labels - 1)``; 1 = pure neighbourhoods."""
    n_l = len(np.unique(label_codes))
    med = float(np.nanmedian(lisi_per_cell(graph, label_codes, perplexity)))
    return (n_l - med) / (n_l - 1) if n_l > 1 else float("nan")


def ilisi_clisi(graph: KNNGraph, batch_codes: np.ndarray, label_codes: np.ndarray) -> tuple[float, float]:
    """Return ``(ilisi, clisi)`` as :func:`ilisi` and :func:`clisi`, calibrating the kernel once."""
    P, H = _lisi_weights(graph, None, 1e-5, 50)
    med_b, med_l = (
        float(np.nanmedian(_inverse_simpson(graph.indices, P, H, c))) for c in (batch_codes, label_codes)
    )
    n_b, n_l = len(np.unique(batch_codes)), len(np.unique(label_codes))
    il = (med_b - 1) / (n_b - 1) if n_b > 1 else float("nan")
    cl = (n_l - med_l) / (n_l - 1) if n_l > 1 else float("nan")
    return il, cl
