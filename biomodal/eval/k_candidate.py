"""Pick one of k: given all modalities of an item but one, find its held-out modality among k candidates.

This is the evaluation of Symile (Saporta et al., 2024): the true held-out embedding of the
item and ``k - 1`` held-out embeddings of other items (drawn uniformly without replacement)
are scored against the item's other modalities, and the item counts as correct when the true
one scores highest. Chance is ``1 / k``. The score follows the model's objective, as in the
Symile code (``zeroshot_retrieval_logits``):

* ``"mip"`` (Symile): the multilinear inner product ``sum_d c_d q1_d q2_d ...`` of the
  candidate with the given modalities;
* ``"pairwise"`` (CLIP-style pairwise losses): the sum of the pairwise dot products of all
  vectors of the tuple, ``sum_q c . q + sum_{q < q'} q . q'`` (the second term is the same for
  every candidate of one item);
* ``"gram"`` (GRAM): minus the volume of the parallelotope spanned by the candidate and the
  given modalities.

Ties (a candidate scoring exactly as the true one, e.g. two items with the same input) count
fractionally: ``1 / (1 + n_tied)``, the expected accuracy of breaking ties at random, so
random scores give exactly ``1 / k`` on average. ``ceiling`` is the accuracy of a perfect
scorer under that rule: below 1 when some candidates have the very same held-out embedding as
the true one (duplicated inputs), which a model cannot tell apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from biomodal.errors import ConfigError, DataError

__all__ = ["SCORES", "candidate_scores", "k_candidate_accuracy"]

SCORES = ("mip", "pairwise", "gram")


def candidate_scores(given: Sequence[Any], candidates: Any, score: str = "mip") -> np.ndarray:
    """Scores ``(n, k)`` of each item's ``k`` candidates.

    Parameters
    ----------
    given
        The ``M - 1`` given modalities of the items, each ``(n, d)``.
    candidates
        ``(n, k, d)``: the candidates of each item, or ``(k, d)`` shared by every item.
    score
        ``"mip"``, ``"pairwise"`` or ``"gram"`` (see the module docstring).
    """
    if score not in SCORES:
        raise ConfigError(f"k_candidate: score={score!r} not in {SCORES}")
    qs = [np.asarray(q, np.float64) for q in given]
    if not qs:
        raise DataError("k_candidate: give at least one modality besides the held-out one")
    n, d = qs[0].shape
    cand = np.asarray(candidates, np.float64)
    if cand.ndim == 2:
        cand = np.broadcast_to(cand, (n, *cand.shape))
    if cand.shape[0] != n or cand.shape[2] != d or any(q.shape != (n, d) for q in qs):
        raise DataError(
            f"k_candidate: given {[q.shape for q in qs]} and candidates {cand.shape} do not match"
        )
    if score == "mip":
        prod = np.prod(np.stack(qs), axis=0)
        return np.einsum("nd,nkd->nk", prod, cand)
    if score == "pairwise":
        out = sum(np.einsum("nd,nkd->nk", q, cand) for q in qs)
        const = sum((qs[i] * qs[j]).sum(-1) for i in range(len(qs)) for j in range(i + 1, len(qs)))
        return out + (np.asarray(const)[:, None] if len(qs) > 1 else 0.0)
    # gram: Gram matrix of (candidate, q1, ..., q_{M-1}) for every (item, candidate)
    m = len(qs) + 1
    k = cand.shape[1]
    g = np.empty((n, k, m, m))
    g[:, :, 0, 0] = (cand * cand).sum(-1)
    for a, qa in enumerate(qs, start=1):
        g[:, :, 0, a] = g[:, :, a, 0] = np.einsum("nd,nkd->nk", qa, cand)
        for b in range(a, m):
            g[:, :, a, b] = g[:, :, b, a] = (qa * qs[b - 1]).sum(-1)[:, None]
    return -np.sqrt(np.abs(np.linalg.det(g)))


def k_candidate_accuracy(
    embeddings: Mapping[str, Any],
    target: str,
    *,
    k: int = 10,
    draws: int = 5,
    score: str = "mip",
    seed: int = 0,
    max_items: int | None = None,
    tol: float = 1e-6,
) -> dict[str, Any]:
    """Accuracy of picking each item's held-out modality ``target`` among ``k`` candidates.

    Parameters
    ----------
    embeddings
        ``{modality: (n, d)}`` of the same items (rows with NaN, an item missing a modality,
        are left out); every modality other than ``target`` is given.
    target
        The held-out modality.
    k
        Candidates per item (the true one and ``k - 1`` others); chance is ``1 / k``.
    draws
        Independent draws of the negatives; the accuracy is their mean (``accuracy_sd`` their
        standard deviation).
    score
        ``"mip"``, ``"pairwise"`` or ``"gram"``.
    seed
        Seed of the draws.
    max_items
        Score at most this many items (a seeded random subset); ``None``: all.
    tol
        Scores within ``tol`` of the true one count as ties.

    Returns
    -------
    dict
        ``accuracy``, ``accuracy_sd``, ``chance`` (``1 / k``), ``ceiling``, ``k``, ``draws``,
        ``n`` (items scored), ``score``, ``target`` and ``given``.
    """
    if target not in embeddings:
        raise ConfigError(f"k_candidate: target {target!r} not among the embeddings {sorted(embeddings)}")
    if k < 2 or draws < 1:
        raise ConfigError(f"k_candidate: need k >= 2 and draws >= 1, got k={k}, draws={draws}")
    given = [m for m in embeddings if m != target]
    if not given:
        raise ConfigError("k_candidate: needs at least two modalities")
    arrays = {m: np.asarray(v, np.float64) for m, v in embeddings.items()}
    n_all = len(arrays[target])
    keep = np.ones(n_all, bool)
    for m, v in arrays.items():
        if len(v) != n_all:
            raise DataError(f"k_candidate: {m!r} has {len(v)} rows, {target!r} has {n_all}")
        keep &= np.isfinite(v).all(axis=1)
    idx = np.flatnonzero(keep)
    if len(idx) < k:
        raise DataError(f"k_candidate: {len(idx)} items with every modality, fewer than k={k}")
    rng = np.random.default_rng(seed)
    queries = (
        idx
        if max_items is None or max_items >= len(idx)
        else np.sort(rng.choice(idx, max_items, replace=False))
    )
    tgt = arrays[target][idx]
    pos_in_idx = np.searchsorted(idx, queries)
    accs, ceils = [], []
    for _ in range(draws):
        # k - 1 distinct negatives per query, none the query itself: draw from n - 1 slots and skip it
        neg = _draw_negatives(rng, len(queries), len(idx) - 1, k - 1)
        neg = neg + (neg >= pos_in_idx[:, None])
        cand_idx = np.concatenate([pos_in_idx[:, None], neg], axis=1)  # true candidate first
        cand = tgt[cand_idx]
        s = candidate_scores([arrays[m][queries] for m in given], cand, score)
        accs.append(_tie_accuracy(s, tol).mean())
        same = np.abs(cand[:, 1:] - cand[:, :1]).max(axis=-1) <= tol
        ceils.append((1.0 / (1.0 + same.sum(1))).mean())
    accs_arr = np.asarray(accs)
    return {
        "accuracy": float(accs_arr.mean()),
        "accuracy_sd": float(accs_arr.std(ddof=1)) if draws > 1 else 0.0,
        "chance": 1.0 / k,
        "ceiling": float(np.mean(ceils)),
        "k": int(k),
        "draws": int(draws),
        "n": len(queries),
        "score": score,
        "target": target,
        "given": given,
    }


def _draw_negatives(rng: np.random.Generator, rows: int, n: int, size: int) -> np.ndarray:
    """``(rows, size)`` integers in ``[0, n)``, distinct within each row (uniform without replacement)."""
    if 2 * size > n:  # dense: a random permutation per row
        return np.argsort(rng.random((rows, n)), axis=1)[:, :size]
    out = rng.integers(0, n, size=(rows, size))
    while True:  # redraw the rows that hold a repeat (rare when size << n)
        srt = np.sort(out, axis=1)
        dup = (srt[:, 1:] == srt[:, :-1]).any(axis=1)
        if not dup.any():
            return out
        out[dup] = rng.integers(0, n, size=(int(dup.sum()), size))


def _tie_accuracy(scores: np.ndarray, tol: float) -> np.ndarray:
    """Per-row credit of the true candidate (column 0): 0 when beaten, ``1 / (1 + ties)`` otherwise."""
    pos = scores[:, :1]
    scale = max(1.0, float(np.abs(scores).max())) if scores.size else 1.0
    beaten = (scores[:, 1:] > pos + tol * scale).any(axis=1)
    ties = (np.abs(scores[:, 1:] - pos) <= tol * scale).sum(axis=1)
    return np.where(beaten, 0.0, 1.0 / (1.0 + ties))
