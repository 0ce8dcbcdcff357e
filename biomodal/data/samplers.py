"""Batch-aware mini-batch sampling for contrastive training."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from biomodal.errors import ConfigError, DataError

__all__ = ["BatchAwareSampler"]


class BatchAwareSampler:
    """A ``batch_sampler`` that controls how technical batches (sections, donors) mix in a mini-batch.

    Use it as ``DataLoader(dataset, batch_sampler=BatchAwareSampler(dataset.obs["batch"], 64))``.

    Parameters
    ----------
    batch_labels
        One label per dataset index (e.g. ``SpotTileDataset.obs["batch"]``).
    batch_size
        Mini-batch size *per process*.
    mode
        ``"within"``: every mini-batch comes from one label, so contrastive negatives cannot
        be told apart by batch signal.  ``"mixed"``: every mini-batch mixes labels in set
        proportions (see ``mix_fraction``).
    mix_fraction
        Only for ``"mixed"``.  ``None`` (default): each mini-batch is stratified, label ``b``
        contributing ``batch_size * n_b / N`` samples (rounded down or up).  A float ``f`` in
        ``[0, 1]``: each mini-batch has an anchor label contributing ``batch_size - round(f *
        batch_size)`` samples, the remaining ``round(f * batch_size)`` are stratified over the
        other labels; anchors are drawn in proportion to label sizes.
    drop_last
        ``"within"``: drop each label's incomplete final global batch (otherwise keep it, padded
        by repeating that label's indices to a multiple of ``world_size``).  ``"mixed"``: drop
        the incomplete final batch.
    seed
        Base seed; the order of epoch ``e`` depends only on ``(seed, e)``.
    rank, world_size
        Distributed splitting (as ``DistributedSampler``).  All ranks compute the same global
        plan of ``batch_size * world_size`` samples per step and rank ``r`` takes its share, so
        the *gathered* batch of a step obeys the mode (one label for ``"within"``; for
        ``"mixed"`` every rank's mini-batch has the same composition).

    Notes
    -----
    ``"within"`` visits every index at most once per epoch (all of them when ``drop_last=False``).
    ``"mixed"`` draws without replacement from per-label queues that are refilled with a fresh
    permutation when a small label runs out, so an epoch has ``N // (batch_size * world_size)``
    steps and small labels may repeat.
    """

    def __init__(
        self,
        batch_labels: Sequence[Any] | np.ndarray,
        batch_size: int,
        *,
        mode: str = "within",
        mix_fraction: float | None = None,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if mode not in ("within", "mixed"):
            raise ConfigError(f"BatchAwareSampler mode={mode!r}; expected 'within' or 'mixed'")
        if int(batch_size) < 1:
            raise ConfigError(f"BatchAwareSampler batch_size={batch_size}; expected >= 1")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ConfigError(
                f"BatchAwareSampler rank={rank}, world_size={world_size}; need 0 <= rank < world_size"
            )
        if mix_fraction is not None and not 0.0 <= float(mix_fraction) <= 1.0:
            raise ConfigError(
                f"BatchAwareSampler mix_fraction={mix_fraction}; expected None or a value in [0, 1]"
            )
        labels = np.asarray(batch_labels)
        if labels.ndim != 1 or labels.size == 0:
            raise DataError(
                f"BatchAwareSampler batch_labels must be a non-empty 1-D sequence, got shape {labels.shape}"
            )
        self.categories, self.codes = np.unique(labels.astype(str), return_inverse=True)
        self.groups = [np.nonzero(self.codes == c)[0] for c in range(len(self.categories))]
        self.batch_size, self.mode, self.drop_last = int(batch_size), mode, bool(drop_last)
        self.mix_fraction = None if mix_fraction is None else float(mix_fraction)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.epoch = 0
        if len(self) == 0:
            sizes = {str(c): len(g) for c, g in zip(self.categories, self.groups)}
            raise DataError(
                f"BatchAwareSampler yields no batch: global batch {self.batch_size * self.world_size} "
                f"(batch_size x world_size) exceeds every label's size {sizes} with drop_last=True"
            )

    # ------------------------------------------------------------------ plan
    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (call before iterating, as with ``DistributedSampler``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        glob = self.batch_size * self.world_size
        if self.mode == "within":
            if self.drop_last:
                return sum(len(g) // glob for g in self.groups)
            return sum(-(-len(g) // glob) for g in self.groups)
        n = len(self.codes)
        return n // glob if self.drop_last else -(-n // glob)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        plan = self._within(rng) if self.mode == "within" else self._mixed(rng)
        for step in plan:
            yield [int(i) for i in step[self.rank]]

    def _within(self, rng: np.random.Generator) -> list[list[np.ndarray]]:
        glob, w = self.batch_size * self.world_size, self.world_size
        steps = []
        for g in self.groups:
            perm = rng.permutation(g)
            for start in range(0, len(perm), glob):
                chunk = perm[start : start + glob]
                if len(chunk) < glob:
                    if self.drop_last:
                        continue
                    per_rank = -(-len(chunk) // w)
                    chunk = np.resize(chunk, per_rank * w)  # pad by repeating this label's indices
                steps.append(np.split(chunk, w))
        order = rng.permutation(len(steps))
        return [steps[i] for i in order]

    def composition(self, size: int, anchor: int | None, rng: np.random.Generator) -> np.ndarray:
        """Return the samples per label in one mini-batch of ``size`` (``"mixed"`` mode)."""
        sizes = np.array([len(g) for g in self.groups], dtype=np.float64)
        counts = np.zeros(len(sizes), dtype=np.int64)
        rest = size
        if anchor is not None:
            counts[anchor] = size - round(self.mix_fraction * size)
            rest = size - counts[anchor]
            sizes[anchor] = 0.0
            if sizes.sum() == 0:  # a single label: nothing to mix with
                counts[anchor] += rest
                return counts
        expected = rest * sizes / sizes.sum()
        base = np.floor(expected).astype(np.int64)
        extra = rest - int(base.sum())
        if extra:
            frac = expected - base
            pick = rng.choice(len(sizes), size=extra, replace=False, p=frac / frac.sum())
            base[pick] += 1
        return counts + base

    def _mixed(self, rng: np.random.Generator) -> list[list[np.ndarray]]:
        w, n = self.world_size, len(self.codes)
        sizes = np.array([len(g) for g in self.groups], dtype=np.float64)
        n_steps = len(self)
        local = [self.batch_size] * n_steps
        if not self.drop_last and n % (self.batch_size * w):
            local[-1] = -(-(n % (self.batch_size * w)) // w)
        anchors = [None] * n_steps
        if self.mix_fraction is not None:
            anchors = list(rng.choice(len(sizes), size=n_steps, p=sizes / sizes.sum()))
        queues = [rng.permutation(g) for g in self.groups]
        pos = [0] * len(self.groups)

        def take(c: int, k: int) -> np.ndarray:
            out = []
            while k > 0:
                if pos[c] >= len(queues[c]):
                    queues[c], pos[c] = rng.permutation(self.groups[c]), 0
                got = queues[c][pos[c] : pos[c] + k]
                pos[c] += len(got)
                k -= len(got)
                out.append(got)
            return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

        steps = []
        for size, anchor in zip(local, anchors):
            counts = self.composition(size, anchor, rng)
            per_rank: list[list[np.ndarray]] = [[] for _ in range(w)]
            for c in np.nonzero(counts)[0]:
                for r, part in enumerate(np.split(take(int(c), int(counts[c]) * w), w)):
                    per_rank[r].append(part)
            steps.append([rng.permutation(np.concatenate(p)) for p in per_rank])
        return steps

    def __repr__(self) -> str:
        return (
            f"BatchAwareSampler(mode={self.mode!r}, batch_size={self.batch_size}, "
            f"labels={len(self.categories)}, "
            f"n={len(self.codes)}, batches={len(self)}, mix_fraction={self.mix_fraction}, "
            f"rank={self.rank}/{self.world_size}, epoch={self.epoch})"
        )
