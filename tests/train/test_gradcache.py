import contextlib

import pytest
import torch
from torch import nn

from biomodal.train import gradcache
from biomodal.train.gradcache import accumulated_backward, split_batch
from tests.train._toy import PairData, collate, make_model


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _batch(n=32, masked=False):
    b = collate([PairData(n, seed=1, dtype=torch.float64, masked=masked)[i] for i in range(n)])
    return b


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _cache(model, batch, k):
    model.zero_grad()
    accumulated_backward(
        model,
        batch,
        k,
        autocast=contextlib.nullcontext,
        backward=lambda loss: loss.backward(),
        device=torch.device("cpu"),
    )
    return _grads(model)


def test_split_batch():
    b = {"x": torch.arange(10), "names": list("abcdefghij"), "scalar": 3, "y": torch.zeros(10, 2)}
    parts = split_batch(b, 4)
    assert [len(p["x"]) for p in parts] == [2, 3, 2, 3]
    assert torch.equal(torch.cat([p["x"] for p in parts]), b["x"])
    assert [n for p in parts for n in p["names"]] == b["names"]
    assert all(p["scalar"] == 3 for p in parts)
    assert len(split_batch({"x": torch.arange(2)}, 4)) == 2


@pytest.mark.parametrize("masked", [False, True])
def test_accum4_equals_full_batch_without_dropout(masked):
    model = make_model(0, adversary=True).double()
    batch = _batch(masked=masked)
    model.zero_grad()
    ref_out = model.compute_loss(batch)
    ref_out.loss.backward()
    ref = _grads(model)
    got = _cache(model, batch, 4)
    assert set(got) == set(ref) and len(ref) > 10
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-5, atol=1e-10, msg=n)
    # the naive alternative (mean of 4 small-batch losses) is measurably different
    model.zero_grad()
    sum(model.compute_loss(mb).loss / 4 for mb in split_batch(batch, 4)).backward()
    naive = _grads(model)
    assert max((naive[n] - ref[n]).abs().max() for n in ref) > 1e-3


def _reference_with_dropout(model, batch, k, seed):
    """Full graph over k micro-batch forwards (same dropout masks as GradCache's first pass)."""
    torch.manual_seed(seed)
    model.zero_grad()
    embs = [model(mb) for mb in split_batch(batch, k)]
    full = {key: torch.cat([e[key] for e in embs]) for key in embs[0]}
    model.loss_from_embeddings(full, batch).loss.backward()
    return _grads(model)


def test_accum_with_dropout_restores_rng(monkeypatch):
    model = make_model(0, dropout=0.3, adversary=True).double()
    batch = _batch()
    ref = _reference_with_dropout(model, batch, 4, seed=7)
    torch.manual_seed(7)
    got = _cache(model, batch, 4)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-5, atol=1e-10, msg=n)
    after = torch.rand(1)
    # without the RNG restore the recomputed dropout masks differ and so do the gradients
    monkeypatch.setattr(gradcache, "_set_rng", lambda *a: None)
    torch.manual_seed(7)
    broken = _cache(model, batch, 4)
    assert max((broken[n] - ref[n]).abs().max() for n in ref) > 1e-4
    # RNG stream after the step equals one pass over the micro-batches
    _reference_with_dropout(model, batch, 4, seed=7)
    torch.testing.assert_close(torch.rand(1), after)


def test_batchnorm_running_stats_updated_once():
    model = make_model(0).double()
    model.encoders["histology"].net.insert(1, nn.BatchNorm1d(24).double())
    batch = _batch()
    bn = model.encoders["histology"].net[1]
    _cache(model, batch, 2)
    assert int(bn.num_batches_tracked) == 2  # one per micro-batch, not two
