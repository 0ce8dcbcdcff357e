"""Memory-bounded row-vs-all kernels with hand-written backward passes.

Both kernels score ``q`` (``(B, D)`` queries, e.g. this rank's rows) against ``k`` (``(N, D)``
keys, e.g. all ranks' rows), ``logits = scale * q @ k.T (+ bias)``, and never hold more than a
``(chunk, N)`` block of logits: the forward pass streams over query chunks and keeps only one
number per row (its log-sum-exp); the backward pass recomputes each block from the saved inputs.
Peak extra memory is therefore O(chunk x N) in both passes, not O(B x N).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["chunked_infonce", "chunked_sigmoid", "infonce_rows", "sigmoid_rows"]


def _batch_bias(qb: Tensor | None, kb: Tensor | None, log_w: float, like: Tensor) -> Tensor | None:
    if qb is None or kb is None or log_w == 0.0:
        return None
    same = qb[:, None] == kb[None, :]
    return torch.where(same, like.new_zeros(()), like.new_full((), log_w))


class _ChunkedInfoNCE(torch.autograd.Function):
    """Sum over rows of ``logsumexp_j(l_ij) - l_{i,t_i}`` (cross-entropy, summed)."""

    @staticmethod
    def forward(ctx, q, k, scale, targets, q_batch, k_batch, log_w, chunk):  # type: ignore[override]
        total = q.new_zeros(())
        lse = q.new_empty(q.shape[0])
        for s in range(0, q.shape[0], chunk):
            e = min(s + chunk, q.shape[0])
            logits = (q[s:e] @ k.T).mul_(scale)
            bias = _batch_bias(None if q_batch is None else q_batch[s:e], k_batch, log_w, logits)
            if bias is not None:
                logits.add_(bias)
            lse[s:e] = torch.logsumexp(logits, dim=1)
            pos = logits.gather(1, targets[s:e, None]).squeeze(1)
            total += (lse[s:e] - pos).sum()
        ctx.save_for_backward(q, k, scale, targets, lse, q_batch, k_batch)
        ctx.log_w, ctx.chunk = log_w, chunk
        return total

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        q, k, scale, targets, lse, q_batch, k_batch = ctx.saved_tensors
        gq = torch.empty_like(q)
        gk = torch.zeros_like(k)
        gs = q.new_zeros(())
        for s in range(0, q.shape[0], ctx.chunk):
            e = min(s + ctx.chunk, q.shape[0])
            raw = q[s:e] @ k.T
            logits = raw * scale
            bias = _batch_bias(None if q_batch is None else q_batch[s:e], k_batch, ctx.log_w, logits)
            if bias is not None:
                logits.add_(bias)
            g = logits.sub_(lse[s:e, None]).exp_()  # softmax, in place
            g[torch.arange(e - s, device=g.device), targets[s:e]] -= 1.0
            g.mul_(grad)
            gs += torch.dot(g.reshape(-1), raw.reshape(-1))
            del raw
            g.mul_(scale)
            gq[s:e] = g @ k
            gk.addmm_(g.T, q[s:e])
        return gq, gk, gs, None, None, None, None, None


class _ChunkedSigmoid(torch.autograd.Function):
    """Sum over all (i, j) of ``-log sigmoid(z_ij * l_ij)``, ``z = +1`` at ``j = t_i`` else ``-1``."""

    @staticmethod
    def forward(ctx, q, k, scale, bias, targets, chunk):  # type: ignore[override]
        total = q.new_zeros(())
        for s in range(0, q.shape[0], chunk):
            e = min(s + chunk, q.shape[0])
            logits = (q[s:e] @ k.T).mul_(scale).add_(bias)
            rows = torch.arange(e - s, device=q.device)
            logits[rows, targets[s:e]] *= -1.0  # logits now -z*l
            total += torch.nn.functional.softplus(logits).sum()  # -logsigmoid(z*l) = softplus(-z*l)
        ctx.save_for_backward(q, k, scale, bias, targets)
        ctx.chunk = chunk
        return total

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        q, k, scale, bias, targets = ctx.saved_tensors
        gq = torch.empty_like(q)
        gk = torch.zeros_like(k)
        gs = q.new_zeros(())
        gb = q.new_zeros(())
        for s in range(0, q.shape[0], ctx.chunk):
            e = min(s + ctx.chunk, q.shape[0])
            raw = q[s:e] @ k.T
            rows = torch.arange(e - s, device=q.device)
            # d/dl softplus(-z l) = -z * sigmoid(-z l); with z=-1 off the positive: sigmoid(l)
            g = torch.sigmoid(raw * scale + bias)
            g[rows, targets[s:e]] -= 1.0  # z=+1: -sigmoid(-l) = sigmoid(l) - 1
            g.mul_(grad)
            gb += g.sum()
            gs += torch.dot(g.reshape(-1), raw.reshape(-1))
            del raw
            g.mul_(scale)
            gq[s:e] = g @ k
            gk.addmm_(g.T, q[s:e])
        return gq, gk, gs, gb, None, None


def _check_chunk(chunk: int) -> int:
    chunk = int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk}")
    return chunk


def chunked_infonce(
    q: Tensor,
    k: Tensor,
    scale: Tensor,
    targets: Tensor,
    chunk: int,
    q_batch: Tensor | None = None,
    k_batch: Tensor | None = None,
    cross_batch_weight: float = 1.0,
) -> Tensor:
    """Sum InfoNCE of queries against keys in O(chunk x N) memory (see module docstring)."""
    log_w = -math.inf if cross_batch_weight == 0 else math.log(cross_batch_weight)
    return _ChunkedInfoNCE.apply(q, k, scale, targets, q_batch, k_batch, log_w, _check_chunk(chunk))


def chunked_sigmoid(q: Tensor, k: Tensor, scale: Tensor, bias: Tensor, targets: Tensor, chunk: int) -> Tensor:
    """Sum the pairwise sigmoid loss in O(chunk x N) memory (see module docstring)."""
    return _ChunkedSigmoid.apply(q, k, scale, bias, targets, _check_chunk(chunk))


def infonce_rows(
    q: Tensor,
    k: Tensor,
    scale: Tensor,
    targets: Tensor,
    chunk: int | None = None,
    q_batch: Tensor | None = None,
    k_batch: Tensor | None = None,
    cross_batch_weight: float = 1.0,
) -> Tensor:
    """Sum over query rows of the InfoNCE cross-entropy against all keys (autograd or chunked)."""
    if chunk is not None:
        return chunked_infonce(q, k, scale, targets, chunk, q_batch, k_batch, cross_batch_weight)
    logits = (scale * q) @ k.T
    log_w = -math.inf if cross_batch_weight == 0 else math.log(cross_batch_weight)
    bias = _batch_bias(q_batch, k_batch, log_w, logits)
    if bias is not None:
        logits = logits + bias
    return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")


def sigmoid_rows(
    q: Tensor, k: Tensor, scale: Tensor, bias: Tensor, targets: Tensor, chunk: int | None = None
) -> Tensor:
    """Sum over query rows and all keys of the SigLIP pairwise sigmoid loss."""
    if chunk is not None:
        return chunked_sigmoid(q, k, scale, bias, targets, chunk)
    # -log sigmoid(z l) = softplus(-z l): softplus(l) off the positive, softplus(l) - l on it
    logits = torch.addmm(bias.expand(1, k.shape[0]), scale * q, k.T)
    pos = logits.gather(1, targets[:, None])
    return torch.nn.functional.softplus(logits).sum() - pos.sum()
