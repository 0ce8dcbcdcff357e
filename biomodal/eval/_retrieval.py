"""Full-set cross-modal retrieval, computed in tiles so N x N similarities never materialise.

Query ``i``'s true match is gallery item ``i``. Similarity is the dot product, which is
the cosine similarity when both sides are L2-normalised (the encoders' contract); pass
``normalize=True`` to normalise here. The rank of the true match is
``1 + #{gallery items that score higher}``, counted over (query chunk x gallery chunk)
tiles, so memory is O(chunk_size^2), not O(N^2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from biomodal.errors import ConfigError, DataError

__all__ = ["retrieval", "retrieval_ranks", "topk_neighbours"]

Ties = Literal["pessimistic", "optimistic", "average"]
_TIES = ("pessimistic", "optimistic", "average")


def _as_tensor(x: Any, name: str, device: torch.device | None) -> torch.Tensor:
    """Return ``x`` as a 2-D float32 tensor on ``device`` (numpy or torch input)."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.ndim != 2:
        raise DataError(f"{name} must be a 2-D array (n_items, dim); got shape {tuple(t.shape)}.")
    if not (t.dtype.is_floating_point or t.dtype in (torch.int32, torch.int64)):
        raise DataError(f"{name} must hold numbers; got dtype {t.dtype}.")
    t = t.to(device=device if device is not None else t.device, dtype=torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise DataError(f"{name} contains NaN or infinite values (masked-out rows must be removed first).")
    return t


def _resolve_device(device: str | torch.device | None, *arrays: Any) -> torch.device:
    if device is not None:
        return torch.device(device)
    for a in arrays:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


def _check_ties(ties: str) -> None:
    if ties not in _TIES:
        raise ConfigError(f"ties={ties!r} is not supported; expected one of {', '.join(_TIES)}.")


def _count_rows(s: torch.Tensor, thr: torch.Tensor, strict: bool) -> torch.Tensor:
    """Per row, how many entries of ``s`` exceed (``strict``) or reach ``thr``."""
    if s.device.type == "cpu":
        # numpy's boolean row count is several times faster than torch's on CPU.
        sn, tn = s.numpy(), thr.numpy()
        return torch.from_numpy(np.count_nonzero(sn > tn if strict else sn >= tn, axis=1))
    return torch.count_nonzero(s > thr if strict else s >= thr, dim=1)


def _ranks_core(
    q: torch.Tensor, g: torch.Tensor, match: torch.Tensor, chunk_size: int, ties: str, tie_tol: float
) -> torch.Tensor:
    """Ranks (float64, 1-based) of gallery column ``match[i]`` for each query row ``i``."""
    nq, ng = q.shape[0], g.shape[0]
    higher = torch.zeros(nq, dtype=torch.float64, device=q.device)
    at_least = torch.zeros(nq, dtype=torch.float64, device=q.device)
    for a in range(0, nq, chunk_size):
        qc = q[a : a + chunk_size]
        mc = match[a : a + chunk_size]
        # The true-match similarity, computed once per query; the match itself is excluded
        # from the tile comparisons, so rounding differences between kernels cannot count it.
        tc = (qc * g[mc]).sum(dim=1, keepdim=True)
        rows = torch.arange(qc.shape[0], device=q.device)
        for b in range(0, ng, chunk_size):
            s = qc @ g[b : b + chunk_size].T
            inside = (mc >= b) & (mc < b + s.shape[1])
            s[rows[inside], mc[inside] - b] = -torch.inf
            if ties != "pessimistic":
                higher[a : a + qc.shape[0]] += _count_rows(s, tc + tie_tol, strict=True)
            if ties != "optimistic":  # higher or tied
                at_least[a : a + qc.shape[0]] += _count_rows(s, tc - tie_tol, strict=False)
            del s
    if ties == "pessimistic":
        return 1.0 + at_least
    if ties == "average":
        return 1.0 + higher + 0.5 * (at_least - higher)
    return 1.0 + higher


def _group_codes(query_groups: Any, gallery_groups: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    qg = np.asarray(query_groups)
    gg = qg if gallery_groups is None else np.asarray(gallery_groups)
    for name, arr in (("query_groups", qg), ("gallery_groups", gg)):
        if arr.shape != (n,):
            raise DataError(f"{name} must have one label per item, shape ({n},); got {arr.shape}.")
    _, codes = np.unique(np.concatenate([qg, gg]), return_inverse=True)
    qc, gc = codes[:n], codes[n:]
    bad = np.flatnonzero(qc != gc)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"query {i} is in group {qg[i]!r} but its true match (gallery {i}) is in group {gg[i]!r}; "
            f"{bad.size} pairs differ. A query's match must be among its candidates."
        )
    return qc, gc


def _ranks_and_candidates(
    query: Any,
    gallery: Any,
    *,
    chunk_size: int,
    query_groups: Any,
    gallery_groups: Any,
    device: str | torch.device | None,
    ties: str,
    tie_tol: float,
    normalize: bool,
) -> tuple[np.ndarray, np.ndarray]:
    _check_ties(ties)
    if int(chunk_size) < 1:
        raise ConfigError(f"chunk_size must be a positive integer; got {chunk_size!r}.")
    dev = _resolve_device(device, query, gallery)
    q = _as_tensor(query, "query", dev)
    g = _as_tensor(gallery, "gallery", dev)
    if q.shape != g.shape:
        raise DataError(
            f"query and gallery must be paired (query i matches gallery i) with the same dim; "
            f"got query {tuple(q.shape)} and gallery {tuple(g.shape)}."
        )
    n = q.shape[0]
    if n == 0:
        raise DataError("retrieval needs at least one query/gallery pair; got 0.")
    if normalize:
        q = torch.nn.functional.normalize(q, dim=1)
        g = torch.nn.functional.normalize(g, dim=1)
    with torch.inference_mode():
        if query_groups is None and gallery_groups is None:
            match = torch.arange(n, device=dev)
            ranks = _ranks_core(q, g, match, int(chunk_size), ties, tie_tol).cpu().numpy()
            return ranks, np.full(n, n, dtype=np.int64)
        if query_groups is None:
            raise DataError("gallery_groups was given without query_groups; pass query_groups too.")
        qc, gc = _group_codes(query_groups, gallery_groups, n)
        ranks = np.empty(n, dtype=np.float64)
        n_cand = np.empty(n, dtype=np.int64)
        for code in np.unique(qc):
            qi = np.flatnonzero(qc == code)
            gi = np.flatnonzero(gc == code)
            # Position of each query's match inside this group's gallery subset.
            match = torch.from_numpy(np.searchsorted(gi, qi)).to(dev)
            sub = _ranks_core(
                q[torch.from_numpy(qi).to(dev)],
                g[torch.from_numpy(gi).to(dev)],
                match,
                int(chunk_size),
                ties,
                tie_tol,
            )
            ranks[qi] = sub.cpu().numpy()
            n_cand[qi] = gi.size
        return ranks, n_cand


def retrieval_ranks(
    query: Any,
    gallery: Any,
    *,
    chunk_size: int = 4096,
    query_groups: Any = None,
    gallery_groups: Any = None,
    device: str | torch.device | None = None,
    ties: Ties = "pessimistic",
    tie_tol: float = 1e-6,
    normalize: bool = False,
) -> np.ndarray:
    """Return the 1-based rank of each query's true match in the gallery.

    Parameters
    ----------
    query, gallery
        Paired embeddings, ``(N, D)`` numpy arrays or torch tensors; query ``i`` matches
        gallery ``i``. Similarity is the dot product: cosine when rows are L2-normalised,
        which the encoders guarantee (or pass ``normalize=True``).
    chunk_size
        Tile edge: at most ``chunk_size x chunk_size`` similarities exist at once.
    query_groups, gallery_groups
        Optional labels (e.g. section ids), shape ``(N,)``; a query is ranked only against
        gallery items of its own group (within-section retrieval). ``gallery_groups``
        defaults to ``query_groups``.
    device
        Where to compute (e.g. ``"cuda"``); defaults to the input tensors' device or CPU.
    ties
        How gallery items scoring the same as the true match (within ``tie_tol``) count:
        ``"pessimistic"`` (default; all ties rank ahead of the match, so a collapsed model
        that maps everything to one point gets rank N, not 1), ``"optimistic"`` (none do),
        or ``"average"`` (half do, the fractional-rank convention).
    tie_tol
        Absolute similarity tolerance within which scores count as tied.
    normalize
        L2-normalise rows first.

    Returns
    -------
    numpy.ndarray
        Ranks, shape ``(N,)``: int64, or float64 for ``ties="average"``.
    """
    ranks, _ = _ranks_and_candidates(
        query,
        gallery,
        chunk_size=chunk_size,
        query_groups=query_groups,
        gallery_groups=gallery_groups,
        device=device,
        ties=ties,
        tie_tol=tie_tol,
        normalize=normalize,
    )
    return ranks if ties == "average" else np.rint(ranks).astype(np.int64)


def retrieval(
    query: Any,
    gallery: Any,
    *,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 4096,
    query_groups: Any = None,
    gallery_groups: Any = None,
    device: str | torch.device | None = None,
    ties: Ties = "pessimistic",
    tie_tol: float = 1e-6,
    normalize: bool = False,
) -> dict[str, float]:
    """Score paired retrieval over the whole set, with chance level beside every recall.

    Parameters
    ----------
    query, gallery, chunk_size, query_groups, gallery_groups, device, ties, tie_tol, normalize
        As in :func:`retrieval_ranks`.
    ks
        Cut-offs for recall@k.

    Returns
    -------
    dict
        ``"recall@k"`` (fraction of queries whose match ranks within ``k``) and
        ``"chance@k"`` (the expected recall of a random ranking,
        ``min(k, n_candidates) / n_candidates`` per query, averaged) for each ``k``;
        ``"median_rank"``, ``"mean_rank"`` (1-based), ``"mrr"`` (mean reciprocal rank),
        ``"chance_mrr"`` (its random-ranking value, the mean of ``H(n)/n`` over queries),
        ``"n"`` (queries) and ``"n_candidates_mean"``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.eye(4, dtype="float32")
    >>> retrieval(x, x, ks=(1,))["recall@1"]
    1.0
    """
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise ConfigError(f"ks must be positive integers; got {ks}.")
    ranks, n_cand = _ranks_and_candidates(
        query,
        gallery,
        chunk_size=chunk_size,
        query_groups=query_groups,
        gallery_groups=gallery_groups,
        device=device,
        ties=ties,
        tie_tol=tie_tol,
        normalize=normalize,
    )
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(np.mean(ranks <= k))
        out[f"chance@{k}"] = float(np.mean(np.minimum(k, n_cand) / n_cand))
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(np.mean(ranks))
    out["mrr"] = float(np.mean(1.0 / ranks))
    harmonic = {int(m): float(np.sum(1.0 / np.arange(1, m + 1))) for m in np.unique(n_cand)}
    out["chance_mrr"] = float(np.mean([harmonic[int(m)] / m for m in n_cand]))
    out["n"] = int(ranks.size)
    out["n_candidates_mean"] = float(np.mean(n_cand))
    return out


def topk_neighbours(
    query: Any,
    keys: Any,
    k: int,
    *,
    chunk_size: int = 4096,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return indices and similarities of the ``k`` highest dot-product keys per query.

    Computed over query chunks, keeping a running top-k across key chunks, so memory stays
    O(chunk_size^2). Exact ties between keys are broken arbitrarily.

    Parameters
    ----------
    query, keys
        ``(Nq, D)`` and ``(Nk, D)`` arrays or tensors.
    k
        Neighbours per query, capped at ``Nk``.
    chunk_size
        Tile edge.
    device
        Where to compute.

    Returns
    -------
    tuple of numpy.ndarray
        ``(indices (Nq, k) int64, similarities (Nq, k) float32)``, best first.
    """
    dev = _resolve_device(device, query, keys)
    q = _as_tensor(query, "query", dev)
    kk = _as_tensor(keys, "keys", dev)
    if q.shape[1] != kk.shape[1]:
        raise DataError(f"query dim {q.shape[1]} != keys dim {kk.shape[1]}.")
    if kk.shape[0] == 0:
        raise DataError("topk_neighbours needs at least one key; got 0.")
    k = min(int(k), kk.shape[0])
    if k < 1:
        raise ConfigError(f"k must be a positive integer; got {k}.")
    idx_out = np.empty((q.shape[0], k), dtype=np.int64)
    sim_out = np.empty((q.shape[0], k), dtype=np.float32)
    with torch.inference_mode():
        for a in range(0, q.shape[0], chunk_size):
            qc = q[a : a + chunk_size]
            best_s = torch.full((qc.shape[0], 0), -torch.inf, device=dev)
            best_i = torch.zeros((qc.shape[0], 0), dtype=torch.int64, device=dev)
            for b in range(0, kk.shape[0], chunk_size):
                s = qc @ kk[b : b + chunk_size].T
                ts, ti = torch.topk(s, min(k, s.shape[1]), dim=1)
                cand_s = torch.cat([best_s, ts], dim=1)
                cand_i = torch.cat([best_i, ti + b], dim=1)
                top_s, top = torch.topk(cand_s, min(k, cand_s.shape[1]), dim=1)
                best_s, best_i = top_s, cand_i.gather(1, top)
            idx_out[a : a + qc.shape[0]] = best_i.cpu().numpy()
            sim_out[a : a + qc.shape[0]] = best_s.cpu().numpy()
    return idx_out, sim_out
