"""Tests of BatchAwareSampler: exact composition invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biomodal.data import BatchAwareSampler
from biomodal.errors import ConfigError, DataError

LABELS = np.array(["a"] * 37 + ["b"] * 20 + ["c"] * 11 + ["d"] * 5)


def _batches(s):
    return [list(b) for b in s]


@pytest.mark.parametrize("drop_last", [True, False])
def test_within_invariants(drop_last):
    s = BatchAwareSampler(LABELS, 8, mode="within", drop_last=drop_last, seed=3)
    batches = _batches(s)
    assert len(batches) == len(s)
    expected = sum((n // 8) if drop_last else -(-n // 8) for n in (37, 20, 11, 5))
    assert len(s) == expected
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))  # no index twice in an epoch
    for b in batches:
        assert len({LABELS[i] for i in b}) == 1
        if drop_last:
            assert len(b) == 8
    if drop_last:
        for lab, n in (("a", 37), ("b", 20), ("c", 11), ("d", 5)):
            assert sum(LABELS[i] == lab for i in flat) == (n // 8) * 8
    else:
        assert sorted(flat) == list(range(len(LABELS)))


def test_epochs_and_seeds():
    s = BatchAwareSampler(LABELS, 4, seed=0)
    e0 = _batches(s)
    assert _batches(s) == e0  # deterministic
    s.set_epoch(1)
    e1 = _batches(s)
    assert e1 != e0
    s.set_epoch(0)
    assert _batches(s) == e0
    assert _batches(BatchAwareSampler(LABELS, 4, seed=1)) != e0


@pytest.mark.parametrize("mode", ["within", "mixed"])
def test_distributed_split(mode):
    ranks = [BatchAwareSampler(LABELS, 4, mode=mode, seed=2, rank=r, world_size=2) for r in range(2)]
    per_rank = [_batches(s) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) == len(ranks[0])
    for b0, b1 in zip(*per_rank):
        assert len(b0) == len(b1) == 4
        if mode == "within":
            assert len({LABELS[i] for i in b0 + b1}) == 1  # the gathered batch is single-label
        else:
            assert sorted(LABELS[b0]) == sorted(LABELS[b1])  # same composition on every rank
            assert not set(b0) & set(b1)
    if mode == "within":
        flat = [i for bs in per_rank for b in bs for i in b]
        assert len(flat) == len(set(flat)) == len(ranks[0]) * 8


def test_within_distributed_no_drop_pads_equally():
    ranks = [BatchAwareSampler(LABELS, 4, seed=0, rank=r, world_size=3, drop_last=False) for r in range(3)]
    per_rank = [_batches(s) for s in ranks]
    for step in zip(*per_rank):
        assert len({len(b) for b in step}) == 1
        assert len({LABELS[i] for b in step for i in b}) == 1
    covered = {i for bs in per_rank for b in bs for i in b}
    assert covered == set(range(len(LABELS)))


def test_mixed_stratified_composition():
    s = BatchAwareSampler(LABELS, 10, mode="mixed", seed=0)
    assert len(s) == len(LABELS) // 10
    n = len(LABELS)
    for b in _batches(s):
        assert len(b) == 10 and len(set(b)) == 10
        for lab, size in (("a", 37), ("b", 20), ("c", 11), ("d", 5)):
            got = int((LABELS[b] == lab).sum())
            e = 10 * size / n
            assert np.floor(e) <= got <= np.ceil(e), (lab, got, e)


def test_mixed_with_anchor_fraction():
    s = BatchAwareSampler(LABELS, 8, mode="mixed", mix_fraction=0.25, seed=4)
    anchors = []
    for b in _batches(s):
        labs, counts = np.unique(LABELS[b], return_counts=True)
        top = labs[np.argmax(counts)]
        assert counts.max() >= 6  # anchor: 8 - round(0.25 * 8)
        others = {lab: c for lab, c in zip(labs, counts) if lab != top}
        assert sum(others.values()) <= 2
        anchors.append(top)
    assert len(set(anchors)) >= 2
    zero = BatchAwareSampler(LABELS, 8, mode="mixed", mix_fraction=0.0, seed=4)
    assert all(len(set(LABELS[b])) == 1 for b in _batches(zero))


def test_mixed_drop_last_false_length():
    s = BatchAwareSampler(LABELS, 10, mode="mixed", drop_last=False)
    bs = _batches(s)
    assert len(bs) == len(s) == 8 and [len(b) for b in bs][-1] == 3


def test_dataloader_batch_sampler():
    data = torch.arange(len(LABELS))
    s = BatchAwareSampler(LABELS, 5, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_sampler=s)
    got = [b.tolist() for b in loader]
    assert got == _batches(s)


def test_errors():
    with pytest.raises(ConfigError, match="mode"):
        BatchAwareSampler(LABELS, 4, mode="random")
    with pytest.raises(ConfigError, match="rank"):
        BatchAwareSampler(LABELS, 4, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="mix_fraction"):
        BatchAwareSampler(LABELS, 4, mode="mixed", mix_fraction=1.5)
    with pytest.raises(DataError, match="no batch"):
        BatchAwareSampler(LABELS, 64)
    assert "mode='within'" in repr(BatchAwareSampler(LABELS, 4))
