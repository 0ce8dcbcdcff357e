"""Exact k-nearest-neighbour graphs and UMAP-style connectivities for the batch metrics.

The graph is exact (brute force, no approximate index): candidates come from one
blockwise pass over the float32 distance matrix (BLAS, ``||a||^2 + ||b||^2 - 2ab``
on centred data; optionally faiss or scikit-learn), and the distances of the kept
pairs are then recomputed in float64 so that self-distances are exactly 0 and ties
are ordered by index. The same pass can accumulate per-group distance sums, which
the silhouette metrics need, so the O(n^2 d) distances are computed once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biomodal.errors import DataError

__all__ = ["KNNGraph", "distance_pass", "exact_knn", "knn_and_group_sums", "umap_connectivities"]


@dataclass(frozen=True)
class KNNGraph:
    """A k-nearest-neighbour graph: each row lists a cell's neighbours, itself first.

    Parameters
    ----------
    indices
        ``(n_cells, k)`` int64 neighbour indices, column 0 is the cell itself.
    distances
        ``(n_cells, k)`` float64 Euclidean distances, ascending along each row.
    """

    indices: np.ndarray
    distances: np.ndarray

    def __post_init__(self) -> None:
        if self.indices.shape != self.distances.shape or self.indices.ndim != 2:
            raise DataError(
                f"KNNGraph: indices {self.indices.shape} and distances {self.distances.shape} "
                "must be 2-D arrays of the same shape (n_cells, k)"
            )

    @property
    def n_cells(self) -> int:
        """Number of cells (rows)."""
        return int(self.indices.shape[0])

    @property
    def k(self) -> int:
        """Neighbours per cell, self included."""
        return int(self.indices.shape[1])

    def subset(self, k: int) -> KNNGraph:
        """Return the graph restricted to the first ``k`` neighbours of each cell."""
        if k > self.k:
            raise DataError(f"KNNGraph.subset: k={k} exceeds the {self.k} neighbours stored")
        return KNNGraph(self.indices[:, :k], self.distances[:, :k])

    def __repr__(self) -> str:
        return f"KNNGraph(n_cells={self.n_cells}, k={self.k})"


_BLOCK_ELEMS = 2_000_000  # float32 distance entries per block of rows (8 MB)
_SUB = 16  # rows post-processed together (about 1 MB at 20,000 cells)
_CHUNK = 16  # columns per chunk in the two-stage selection of the k smallest
_MARGIN = 8  # extra float32 candidates re-ranked in float64


def _smallest(G: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` smallest entries of every row of ``G`` (unordered).

    ``G`` has ``_CHUNK * w`` columns; chunk ``c`` holds columns ``c, c + w, c + 2w, ...``.
    Every one of a row's ``k`` smallest entries lies in one of the ``k`` chunks with the
    smallest minima (otherwise ``k`` chunk minima, all smaller, would precede it), so only
    those ``k * _CHUNK`` entries are searched.
    """
    b, n = G.shape
    w = n // _CHUNK
    if k * _CHUNK * 2 > n:
        return np.argpartition(G, k - 1, axis=1)[:, :k]
    mins = G.reshape(b, _CHUNK, w).min(axis=1)
    chunks = np.argpartition(mins, k - 1, axis=1)[:, :k]
    cols = (chunks[:, :, None] + w * np.arange(_CHUNK)[None, None, :]).reshape(b, k * _CHUNK)
    vals = G.ravel().take(cols + (np.arange(b) * n)[:, None])
    return np.take_along_axis(cols, np.argpartition(vals, k - 1, axis=1)[:, :k], axis=1)


def distance_pass(
    X: np.ndarray, k: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """One blockwise pass over all pairwise Euclidean distances (float32 BLAS, centred data).

    Parameters
    ----------
    X
        ``(n, d)`` data.
    k
        Candidates per row to return (``0``: none).
    groups
        Optional ``(n,)`` integer group per cell: the sum of every cell's distances to the
        cells of each group is accumulated (self distance exactly 0).

    Returns
    -------
    tuple
        ``(candidates, sums, group_ids)``: ``(n, k)`` unordered indices of each row's ``k``
        smallest float32 distances (or None); ``(n, n_present_groups)`` float64 distance sums
        and the sorted group ids they belong to (or None, None).
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    Xc = np.asarray(X, dtype=np.float64)
    Xc = Xc - Xc.mean(axis=0)
    n, d = Xc.shape
    sq = np.einsum("ij,ij->i", Xc, Xc)
    order = np.argsort(groups, kind="stable") if groups is not None else np.arange(n)
    k = min(int(k), n)
    # One product gives squared distances: [x, |x|^2, 1] . [-2y, 1, |y|^2]. Columns (cells in
    # group order) are padded to a multiple of _CHUNK with huge distances, never selected.
    n_pad = -(-n // _CHUNK) * _CHUNK if k else n
    rows_x = np.empty((n, d + 2), dtype=np.float32)
    rows_x[:, :d], rows_x[:, d], rows_x[:, d + 1] = Xc, sq, 1.0
    cols_x = np.zeros((d + 2, n_pad), dtype=np.float32)
    cols_x[:d, :n] = -2.0 * Xc[order].T
    cols_x[d, :n] = 1.0
    cols_x[d + 1, :n] = sq[order]
    cols_x[d + 1, n:] = 1e30
    cand = np.empty((n, k), dtype=np.int64) if k else None
    sums = gid = starts = self_pos = None
    if groups is not None:
        g_sorted = groups[order]
        starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
        gid = g_sorted[starts]
        sums = np.empty((n, starts.size))
        self_pos = np.empty(n, dtype=np.int64)
        self_pos[order] = np.arange(n)

    def block(s: int) -> None:
        e = min(n, s + step)
        D2 = rows_x[s:e] @ cols_x
        # Post-process a few rows at a time so the chain of passes stays in cache.
        for r in range(s, e, _SUB):
            re_ = min(e, r + _SUB)
            G = D2[r - s : re_ - s]
            if k:
                cand[r:re_] = order[_smallest(G, k)]
            if groups is not None:
                G = G[:, :n]
                np.maximum(G, 0.0, out=G)
                np.sqrt(G, out=G)
                G[np.arange(re_ - r), self_pos[r:re_]] = 0.0
                sums[r:re_] = np.add.reduceat(G, starts, axis=1)

    # Blocks run on all cores with one BLAS thread each: numpy releases the GIL in the
    # element-wise passes, which a multithreaded BLAS product alone would leave serial.
    workers = min(os.cpu_count() or 1, 8)
    step = max(1, min(_BLOCK_ELEMS // n_pad, -(-n // workers)))
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        list(pool.map(block, range(0, n, step)))
    return cand, sums, gid


def _refine(X: np.ndarray, cand: np.ndarray, k: int) -> KNNGraph:
    """Exact float64 re-ranking of candidate neighbours; the cell itself first."""
    n = X.shape[0]
    rows = np.arange(n)[:, None]
    keep = cand != rows
    n_keep = keep.sum(axis=1)
    # Every row keeps the same number of non-self candidates: drop self where found, else the
    # last candidate (the lists are unordered, so re-rank first when self is absent).
    m = cand.shape[1] - 1
    if (n_keep > m).any():
        extra = np.flatnonzero(n_keep > m)
        d_extra = _pair_dist(X, extra, cand[extra])
        worst = np.argmax(d_extra, axis=1)
        keep[extra, worst] = False
    rest = np.sort(cand[keep].reshape(n, m), axis=1)
    d = _pair_dist(X, np.arange(n), rest)
    order = np.argsort(d, axis=1, kind="stable")[:, : k - 1]  # ties: lower index first
    rest = np.take_along_axis(rest, order, axis=1)
    d = np.take_along_axis(d, order, axis=1)
    indices = np.concatenate([np.arange(n, dtype=np.int64)[:, None], rest], axis=1)
    distances = np.concatenate([np.zeros((n, 1)), d], axis=1)
    return KNNGraph(indices, distances)


def _pair_dist(X: np.ndarray, rows: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """Float64 Euclidean distances between ``X[rows[i]]`` and ``X[nb[i, j]]`` (threaded chunks)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    d = np.empty(nb.shape, dtype=np.float64)
    step = max(1, 500_000 // max(1, nb.shape[1] * X.shape[1]))

    def chunk(s: int) -> None:
        diff = X[nb[s : s + step]] - X[rows[s : s + step], None, :]
        d[s : s + step] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))

    starts = range(0, rows.size, step)
    if len(starts) < 4:
        for s in starts:
            chunk(s)
    else:
        with ThreadPoolExecutor(min(os.cpu_count() or 1, 8)) as pool:
            list(pool.map(chunk, starts))
    return d


def _library_candidates(X: np.ndarray, k: int, n_jobs: int | None, backend: str) -> np.ndarray | None:
    if backend == "faiss":
        from biomodal._lazy import import_optional

        faiss = import_optional("faiss", "batch", package="faiss-cpu")
        if n_jobs is not None and n_jobs > 0:
            faiss.omp_set_num_threads(int(n_jobs))
        xf = np.ascontiguousarray(X, dtype=np.float32)
        index = faiss.IndexFlatL2(xf.shape[1])
        index.add(xf)
        _, idx = index.search(xf, int(k))
        return idx.astype(np.int64)
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", n_jobs=n_jobs).fit(X)
    return nn.kneighbors(X, return_distance=False).astype(np.int64)


def exact_knn(X: np.ndarray, k: int, *, n_jobs: int | None = None, backend: str = "auto") -> KNNGraph:
    """Exact Euclidean k-nearest neighbours of every row of ``X`` (self included, first).

    Candidates come from a brute-force search (float32); the distances of the kept
    pairs are recomputed in float64 and re-ranked, so self-distances are exactly 0 and
    ties are broken by index.

    Parameters
    ----------
    X
        ``(n_cells, n_features)`` array.
    k
        Neighbours per cell including the cell itself (scib-metrics convention).
    n_jobs
        Threads for the faiss / scikit-learn search (``None``: library default).
    backend
        ``"auto"`` / ``"blas"`` (blockwise BLAS distances with ``k + 8`` float32 candidates
        re-ranked in float64; the fastest), ``"faiss"`` (``IndexFlatL2``) or ``"sklearn"``.

    Returns
    -------
    KNNGraph
        Neighbour indices and float64 distances, ascending per row.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    k = int(k)
    if not 1 <= k <= n:
        raise DataError(f"exact_knn: k={k} must be between 1 and the number of cells ({n})")
    if backend in ("auto", "blas"):
        cand, _, _ = distance_pass(X, min(n, k + _MARGIN))
    elif backend in ("faiss", "sklearn"):
        cand = _library_candidates(X, k, n_jobs, backend)
    else:
        raise DataError(f"knn backend {backend!r} is not one of 'auto', 'blas', 'faiss', 'sklearn'")
    return _refine(X, cand, k)


def knn_and_group_sums(
    X: np.ndarray, k: int, groups: np.ndarray | None
) -> tuple[KNNGraph | None, np.ndarray | None, np.ndarray | None]:
    """Exact kNN graph (``k > 0``) and per-group distance sums from one distance pass.

    See :func:`distance_pass` and :func:`exact_knn` (``backend="blas"``); returns
    ``(graph or None, sums or None, group_ids or None)``.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    k = min(int(k), n)
    cand, sums, gid = distance_pass(X, min(n, k + _MARGIN) if k else 0, groups)
    return (_refine(X, cand, k) if k else None), sums, gid


_SMOOTH_K_TOL = 1e-5
_MIN_K_DIST_SCALE = 1e-3
_FLOATMAX = float(np.finfo(np.float32).max)


def _smooth_knn_dist(dist: np.ndarray, k: float, n_iter: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised UMAP ``smooth_knn_dist`` (local_connectivity=1, bandwidth=1), float32 like UMAP."""
    n = dist.shape[0]
    target = np.log2(k)
    pos = dist > 0
    has = pos.any(axis=1)
    first = np.argmax(pos, axis=1)
    rho = np.where(has, dist[np.arange(n), first], 0.0).astype(np.float32)
    lo = np.zeros(n)
    hi = np.full(n, _FLOATMAX)
    mid = np.ones(n)
    active = np.ones(n, dtype=bool)
    d = (dist[:, 1:] - rho[:, None]).astype(np.float64)
    for _ in range(n_iter):
        a = np.flatnonzero(active)
        if a.size == 0:
            break
        da = d[a]
        psum = np.where(da > 0, np.exp(-(np.maximum(da, 0) / mid[a, None])), 1.0).sum(axis=1)
        done = np.abs(psum - target) < _SMOOTH_K_TOL
        up = (psum > target) & ~done
        dn = ~up & ~done
        iu, idn = a[up], a[dn]
        hi[iu] = mid[iu]
        mid[iu] = (lo[iu] + hi[iu]) / 2.0
        lo[idn] = mid[idn]
        unbounded = hi[idn] >= _FLOATMAX
        mid[idn] = np.where(unbounded, mid[idn] * 2, (lo[idn] + hi[idn]) / 2.0)
        active[a[done]] = False
    sigma = mid.astype(np.float32)
    floor = np.where(rho > 0, _MIN_K_DIST_SCALE * dist.mean(axis=1), _MIN_K_DIST_SCALE * dist.mean())
    sigma = np.where(sigma < floor, floor, sigma).astype(np.float32)
    return sigma, rho


def umap_connectivities(graph: KNNGraph):
    """Fuzzy-union connectivities as UMAP / scanpy / scib-metrics compute them.

    Parameters
    ----------
    graph
        The kNN graph (self first).

    Returns
    -------
    scipy.sparse.csr_matrix
        Symmetric ``(n, n)`` float32 connectivity matrix.
    """
    import scipy.sparse as sp

    n, k = graph.indices.shape
    dist = graph.distances.astype(np.float32)
    sigma, rho = _smooth_knn_dist(dist, float(k))
    rows = np.repeat(np.arange(n), k)
    cols = graph.indices.ravel()
    dr = dist - rho[:, None]
    val = np.exp(-(np.maximum(dr, 0) / sigma[:, None]))
    val = np.where((dr <= 0) | (sigma[:, None] == 0), 1.0, val).astype(np.float32).ravel()
    val[cols == rows] = 0.0
    m = sp.csr_matrix((val, (rows, cols)), shape=(n, n))
    m.eliminate_zeros()
    t = m.T.tocsr()
    out = (m + t - m.multiply(t)).tocsr()
    out.eliminate_zeros()
    return out
