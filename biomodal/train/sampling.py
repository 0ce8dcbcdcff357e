"""Batch samplers whose order is a pure function of ``(seed, epoch, rank)``.

A run can then resume mid-epoch by skipping the batches it already consumed (no data is loaded
for skipped batches).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["ResumableBatchSampler", "SkippingBatchSampler", "epoch_seed"]


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Return a well-mixed 63-bit seed derived from ``(seed, epoch, rank)``."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(2, dtype=np.uint64)[0] >> 1)


class ResumableBatchSampler(Sampler[list[int]]):
    """Distributed, deterministic batch sampler (``DistributedSampler`` + ``BatchSampler`` semantics).

    Every epoch draws one permutation of ``range(n)`` from ``(seed, epoch)`` (identical on all
    ranks); rank ``r`` takes positions ``r, r + W, r + 2W, ...`` and cuts them into batches, so
    the union of the ranks' ``t``-th batches is the ``t``-th batch of ``batch_size * W`` that a
    single process would see.

    Parameters
    ----------
    n
        Dataset length.
    batch_size
        Samples per batch and rank.
    seed, rank, world_size
        Order seed and rank layout.
    shuffle
        Permute per epoch (``False``: dataset order).
    drop_last
        Drop the incomplete last batch (default; contrastive batches should be full). Otherwise
        the permutation is padded by wrapping around so that every rank gets as many samples.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``."""
        self.epoch = int(epoch)

    def set_skip(self, n_batches: int) -> None:
        """Skip the first ``n_batches`` of the next iteration only (resume)."""
        self._skip = int(n_batches)

    def __len__(self) -> int:
        per_rank = self.n // self.world_size if self.drop_last else -(-self.n // self.world_size)
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            perm = torch.randperm(self.n, generator=g)
        else:
            perm = torch.arange(self.n)
        n_batches = len(self)
        if self.drop_last:
            perm = perm[: n_batches * self.batch_size * self.world_size]
        else:
            total = -(-self.n // self.world_size) * self.world_size
            if total > self.n:
                perm = torch.cat([perm, perm[: total - self.n]])
        mine = perm[self.rank :: self.world_size].tolist()
        skip, self._skip = self._skip, 0
        for b in range(skip, n_batches):
            yield mine[b * self.batch_size : (b + 1) * self.batch_size]

    def __repr__(self) -> str:
        return (
            f"ResumableBatchSampler(n={self.n}, batch_size={self.batch_size}, batches={len(self)}, "
            f"rank={self.rank}/{self.world_size}, seed={self.seed}, epoch={self.epoch})"
        )


class SkippingBatchSampler(Sampler[list[int]]):
    """Wrap a user's batch sampler: forwards ``set_epoch`` and skips already consumed batches."""

    def __init__(self, batch_sampler: Iterable[list[int]]) -> None:
        self.inner = batch_sampler
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Forward to the wrapped sampler (and its ``.sampler``) when they support it."""
        for obj in (self.inner, getattr(self.inner, "sampler", None)):
            if obj is not None and hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)

    def set_skip(self, n_batches: int) -> None:
        """Skip the first ``n_batches`` of the next iteration only (resume)."""
        self._skip = int(n_batches)

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        for i, b in enumerate(self.inner):
            if i >= skip:
                yield b
