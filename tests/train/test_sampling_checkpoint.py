import random

import numpy as np
import pytest
import torch

from biomodal.errors import CheckpointError, ConfigError
from biomodal.train import checkpoint as ck
from biomodal.train.sampling import ResumableBatchSampler, SkippingBatchSampler


def test_ranks_partition_the_single_process_batches():
    single = list(ResumableBatchSampler(50, 8, seed=4))
    r0 = list(ResumableBatchSampler(50, 4, seed=4, rank=0, world_size=2))
    r1 = list(ResumableBatchSampler(50, 4, seed=4, rank=1, world_size=2))
    assert len(single) == len(r0) == len(r1) == 6
    for s, a, b in zip(single, r0, r1):
        assert sorted(s) == sorted(a + b) and not set(a) & set(b)
    flat = [i for b in single for i in b]
    assert len(set(flat)) == 48 and max(flat) < 50


def test_order_is_a_function_of_seed_and_epoch_and_skip_is_one_shot():
    s = ResumableBatchSampler(40, 5, seed=1)
    e0 = list(s)
    assert list(s) == e0
    s.set_epoch(1)
    e1 = list(s)
    assert e1 != e0 and sorted(i for b in e1 for i in b) == sorted(i for b in e0 for i in b)
    assert list(ResumableBatchSampler(40, 5, seed=2)) != e0
    s.set_skip(3)
    assert list(s) == e1[3:]
    assert list(s) == e1
    plain = list(ResumableBatchSampler(10, 4, shuffle=False, drop_last=False))
    assert plain == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_skipping_wrapper_forwards_epoch():
    class Sampler:
        def __init__(self):
            self.epoch = None

        def set_epoch(self, e):
            self.epoch = e

        def __iter__(self):
            return iter([[0], [1], [2]])

        def __len__(self):
            return 3

    inner = Sampler()
    w = SkippingBatchSampler(inner)
    w.set_epoch(5)
    w.set_skip(2)
    assert inner.epoch == 5 and list(w) == [[2]] and list(w) == [[0], [1], [2]]


def _payload(**kw):
    return {
        "format": ck.FORMAT,
        "version": ck.VERSION,
        "model": {"w": torch.ones(2)},
        "modalities": ["x"],
        **kw,
    }


def test_save_is_atomic_and_loads_weights_only(tmp_path, monkeypatch):
    path = ck.save_checkpoint(
        _payload(extra={"genes": ["A", "B"], "mean": 1.5}), tmp_path / "c" / "step_1.pt"
    )
    assert torch.load(path, weights_only=True)["extra"]["genes"] == ["A", "B"]
    assert ck.load_checkpoint(path)["model"]["w"].sum() == 2
    # a crash while writing leaves the previous file intact and no temporary behind
    real_save = torch.save

    def crash(obj, fh):
        real_save({"partial": True}, fh)
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match=r"cannot write checkpoint.*disk full"):  # named, CLI-reportable
        ck.save_checkpoint(_payload(), path)
    monkeypatch.undo()
    assert ck.load_checkpoint(path)["extra"]["mean"] == 1.5
    assert sorted(p.name for p in path.parent.iterdir()) == ["step_1.pt"]


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ck.load_checkpoint(tmp_path / "nope.pt")
    torch.save({"format": "other"}, tmp_path / "o.pt")
    with pytest.raises(CheckpointError, match="not a 'biomodal-checkpoint'"):
        ck.load_checkpoint(tmp_path / "o.pt")
    torch.save(_payload(version=99), tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        ck.load_checkpoint(tmp_path / "v.pt")
    (tmp_path / "g.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"g\.pt: not a PyTorch checkpoint"):
        ck.load_checkpoint(tmp_path / "g.pt")
    torch.save({"format": ck.FORMAT, "version": 1, "obj": np.zeros(3)}, tmp_path / "np.pt")
    with pytest.raises(CheckpointError, match="loaded safely"):
        ck.load_checkpoint(tmp_path / "np.pt")


def test_check_safe():
    ck.check_safe({"a": [1, 2.0, "x", None, torch.zeros(1)], "b": {"c": (True,)}})
    with pytest.raises(ConfigError, match=r"extra\['a'\] holds a ndarray"):
        ck.check_safe({"a": np.zeros(2)})


def test_latest_and_prune(tmp_path):
    for s in (5, 10, 100, 20):
        ck.save_checkpoint(_payload(), ck.step_path(tmp_path, s))
    (tmp_path / "best.pt").write_bytes(b"")
    assert ck.find_latest(tmp_path).name == "step_00000100.pt"
    removed = ck.prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in removed) == ["step_00000005.pt", "step_00000010.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "step_00000020.pt", "step_00000100.pt"]
    assert ck.find_latest(tmp_path / "none") is None


def test_rng_roundtrip(tmp_path):
    state = ck.capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    ck.save_checkpoint(_payload(rng=[state]), tmp_path / "r.pt")
    loaded = ck.load_checkpoint(tmp_path / "r.pt")["rng"][0]
    random.random(), np.random.rand(), torch.rand(3)  # noqa: NPY002
    ck.restore_rng(loaded)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a  # noqa: NPY002
