"""Gather-with-grad machinery shared by every loss that uses in-batch negatives.

When :mod:`torch.distributed` is initialised with more than one process, each rank

1. gathers the batch sizes of all ranks (batches may be uneven), pads its rows to the largest
   size and all-gathers every modality *with gradient*: the backward of the gather all-reduces
   (sums) the incoming gradient over ranks and returns this rank's slice;
2. computes the loss terms of its LOCAL rows against the GLOBAL set of rows (positives sit at
   global index ``offset + i``), so memory is O(B_local x N) rather than O(N^2);
3. returns ``W * (sum of local row terms) / N_global``.

With ``L`` the single-process loss of the concatenated batch, the mean of the returned values
over ranks is ``L``; since the sum over ranks is ``W * L``, every rank's embedding gradient is
``W`` times the single-process gradient of its rows, which DDP's averaging of parameter
gradients (division by ``W``) turns into exactly the single-process parameter gradients. The
loss's own parameters (logit scale, bias) receive ``dL_r``; their DDP average is also exact.

In a single process every helper is the identity (``world == 1``), so one code path serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["GlobalBatch", "Selection", "Shard", "all_reduce_sum", "dist_info", "gather_rows", "make_shard"]


def dist_info() -> tuple[int, int]:
    """Return ``(rank, world_size)``; ``(0, 1)`` unless a process group with >1 ranks is live."""
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        if world > 1:
            return dist.get_rank(), world
    return 0, 1


@dataclass(frozen=True)
class Shard:
    """Where this rank's rows sit in the global batch."""

    rank: int
    world: int
    sizes: tuple[int, ...]

    @property
    def offset(self) -> int:
        """Global index of this rank's first row."""
        return sum(self.sizes[: self.rank])

    @property
    def n_global(self) -> int:
        """Total number of rows over all ranks."""
        return sum(self.sizes)


def make_shard(n_local: int, device: torch.device) -> Shard:
    """Exchange batch sizes between ranks (one small all-gather) and describe this rank's shard."""
    rank, world = dist_info()
    if world == 1:
        return Shard(0, 1, (int(n_local),))
    t = torch.tensor([int(n_local)], dtype=torch.long, device=device)
    out = [torch.zeros_like(t) for _ in range(world)]
    dist.all_gather(out, t)
    return Shard(rank, world, tuple(int(x.item()) for x in out))


class _GatherWithGrad(torch.autograd.Function):
    """All-gather of equally shaped (padded) tensors; backward all-reduces and slices."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.rank = dist.get_rank()
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.stack(out)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank]


def gather_rows(x: Tensor, shard: Shard, *, grad: bool = True) -> Tensor:
    """Concatenate ``x`` (rows = this rank's samples) over ranks, in rank order.

    Parameters
    ----------
    x
        ``(B_local, ...)`` tensor; booleans are sent as ``uint8`` (gloo has no bool).
    shard
        From :func:`make_shard`.
    grad
        Keep the graph: the backward sums gradients over ranks (see module docstring).
    """
    if shard.world == 1:
        return x
    is_bool = x.dtype == torch.bool
    y = x.to(torch.uint8) if is_bool else x
    pad = max(shard.sizes) - y.shape[0]
    if pad:
        y = torch.cat([y, y.new_zeros((pad, *y.shape[1:]))])
    if grad and torch.is_grad_enabled() and y.requires_grad:
        stacked = _GatherWithGrad.apply(y)
    else:
        parts = [torch.empty_like(y) for _ in range(shard.world)]
        dist.all_gather(parts, y.detach().contiguous())
        stacked = torch.stack(parts)
    out = torch.cat([stacked[r, : shard.sizes[r]] for r in range(shard.world)])
    return out.bool() if is_bool else out


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum of a (detached) tensor over ranks; identity in a single process."""
    if dist_info()[1] == 1:
        return t.detach()
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def shared_randperm(n: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
    """Draw a random permutation of ``range(n)`` identical on every rank (rank 0 draws it)."""
    perm = torch.randperm(n, generator=generator).to(device)
    if dist_info()[1] > 1:
        dist.broadcast(perm, src=0)
    return perm


@dataclass
class Selection:
    """Rows where all selected modalities are present, locally and globally.

    ``local[name][k]`` is global row ``offset + k`` of ``glob[name]``.
    """

    local: dict[str, Tensor]
    glob: dict[str, Tensor]
    local_rows: Tensor | None
    global_rows: Tensor | None
    offset: int
    n_local: int
    n_global: int

    def targets(self, device: torch.device) -> Tensor:
        """Global positions of the local rows (labels for in-batch InfoNCE)."""
        return torch.arange(self.offset, self.offset + self.n_local, device=device)


class GlobalBatch:
    """Local embeddings plus their (lazily) gathered global versions and masks.

    Parameters
    ----------
    embeddings
        ``{name: (B_local, D)}``.
    masks
        ``{name: bool (B_local,) or None}``.
    """

    def __init__(self, embeddings: dict[str, Tensor], masks: dict[str, Tensor | None]) -> None:
        first = next(iter(embeddings.values()))
        self.device = first.device
        self.local = embeddings
        self.masks = masks
        self.shard = make_shard(first.shape[0], self.device)
        self._glob: dict[str, Tensor] = {}
        self._gmask: dict[str, Tensor | None] = {}

    @property
    def world(self) -> int:
        """Number of ranks."""
        return self.shard.world

    def glob(self, name: str) -> Tensor:
        """All ranks' rows of modality ``name`` (gathered with gradient, cached)."""
        if name not in self._glob:
            self._glob[name] = gather_rows(self.local[name], self.shard)
        return self._glob[name]

    def gather(self, x: Tensor, *, grad: bool = False) -> Tensor:
        """Gather an extra per-row tensor (labels, reference embeddings, ...)."""
        return gather_rows(x, self.shard, grad=grad)

    def gmask(self, name: str) -> Tensor | None:
        """Global presence mask of ``name`` (``None``: present everywhere)."""
        if name not in self._gmask:
            m = self.masks.get(name)
            any_mask = torch.tensor([m is not None], device=self.device)
            if self.world > 1:
                any_mask = all_reduce_sum(any_mask.long()) > 0
            if bool(any_mask):
                if m is None:
                    m = torch.ones(self.local[name].shape[0], dtype=torch.bool, device=self.device)
                self._gmask[name] = gather_rows(m, self.shard, grad=False)
            else:
                self._gmask[name] = None
        return self._gmask[name]

    def row_masks(self, names: Sequence[str]) -> tuple[Tensor | None, Tensor | None]:
        """Local and global masks of rows where every modality in ``names`` is present."""
        lm: Tensor | None = None
        gm: Tensor | None = None
        for n in names:
            g = self.gmask(n)
            if g is None:
                continue
            m = self.masks.get(n)
            if m is None:
                m = torch.ones(self.local[n].shape[0], dtype=torch.bool, device=self.device)
            lm = m if lm is None else lm & m
            gm = g if gm is None else gm & g
        return lm, gm

    def select(self, names: Sequence[str], *, need_global: bool = True) -> Selection:
        """Restrict to rows where all ``names`` are present (see :class:`Selection`)."""
        lm, gm = self.row_masks(names)
        if lm is None or gm is None:
            local = {n: self.local[n] for n in names}
            glob = {n: self.glob(n) for n in names} if need_global else local
            n_local = self.shard.sizes[self.shard.rank]
            return Selection(local, glob, None, None, self.shard.offset, n_local, self.shard.n_global)
        local = {n: self.local[n][lm] for n in names}
        glob = {n: self.glob(n)[gm] for n in names} if need_global else local
        offset = int(gm[: self.shard.offset].sum())
        return Selection(local, glob, lm, gm, offset, int(lm.sum()), int(gm.sum()))

    def finish(self, total_local: Tensor, count_global: int | float) -> Tensor:
        """``W * total_local / count_global``: the exact per-rank share of a global mean."""
        if count_global <= 0:
            return total_local * 0.0
        return total_local * (self.world / count_global)

    def anchor_zero(self) -> Tensor:
        """Return a zero connected to every embedding (keeps the graph and collectives alive)."""
        return sum(x.sum() * 0.0 for x in self.local.values())  # type: ignore[return-value]


def log_mean_exp_global(gb: GlobalBatch, lse_local: Tensor, count_global: float) -> Tensor:
    """Exact per-rank share of ``log(mean over all ranks' terms of exp(term))``.

    ``lse_local`` is ``logsumexp`` of this rank's terms (with graph); ``count_global`` the number of
    terms over all ranks. The value returned on every rank is the global ``L = log(sum exp / M)``;
    its gradient is ``W * exp(lse_local - G) * d lse_local`` (``G`` the global log-sum-exp), so that
    the gradients summed over ranks are ``W * dL`` like every other loss here.
    """
    if count_global <= 0:
        return lse_local.new_zeros(()) + gb.anchor_zero()
    if gb.world == 1:
        return lse_local - torch.log(lse_local.new_tensor(float(count_global)))
    val = lse_local.detach()
    m = val.clone() if torch.isfinite(val) else val.new_tensor(-1e300)
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    local_sum = torch.exp(val - m) if torch.isfinite(val) else val.new_zeros(())
    g = torch.log(all_reduce_sum(local_sum)) + m
    value = g - torch.log(val.new_tensor(float(count_global)))
    if not torch.isfinite(val):
        return value + gb.anchor_zero()
    weight = gb.world * torch.exp(val - g)
    return value + weight * (lse_local - val)
