"""ContrastiveModel passes each loss the batch keys it declares; bimixco mixes raw inputs."""

import contextlib

import pytest
import torch
from torch import nn

from biomodal.losses import get_loss
from biomodal.train import ContrastiveModel
from biomodal.train.gradcache import accumulated_backward
from tests.train._toy import PairData, ToyEncoder, collate


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(loss, seed=0):
    torch.manual_seed(seed)
    return ContrastiveModel(
        {"histology": ToyEncoder(10), "expression": ToyEncoder(20)}, loss, embed_dim=8
    ).double()


def _batch(n=12, seed=1):
    b = collate([PairData(n, seed=seed, dtype=torch.float64)[i] for i in range(n)])
    g = torch.Generator().manual_seed(seed)
    b["reference"] = torch.randn(n, 5, generator=g, dtype=torch.float64)
    return b


def _grads(model):
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _both_paths(model, batch, seed=5):
    torch.manual_seed(seed)
    model.zero_grad()
    ref_out = model.compute_loss(batch)
    ref_out.loss.backward()
    ref = _grads(model)
    torch.manual_seed(seed)
    model.zero_grad()
    out = accumulated_backward(
        model,
        batch,
        2,
        autocast=contextlib.nullcontext,
        backward=lambda loss: loss.backward(),
        device=torch.device("cpu"),
    )
    got = _grads(model)
    torch.testing.assert_close(out.loss, ref_out.loss)
    assert set(got) == set(ref)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-10, msg=k)
    return ref_out


@pytest.mark.parametrize("name", ["cwcl", "softclip"])
def test_reference_reaches_the_loss_whole_under_gradcache(name):
    model = _model(get_loss(name))
    b = _batch()
    emb = model(b)
    direct = model.loss(emb, reference=b["reference"]).loss
    torch.testing.assert_close(model.compute_loss(b).loss, direct)
    if name == "softclip":  # without the key softclip uses the target's own similarities
        plain = {k: v for k, v in b.items() if k != "reference"}
        assert not torch.allclose(model.compute_loss(plain).loss, direct)
    _both_paths(model, b)


def test_batch_codes_reach_clip_through_the_model():
    model = _model(get_loss("clip", cross_batch_negative_weight=0.2))
    b = _batch()
    emb = model(b)
    torch.testing.assert_close(model.compute_loss(b).loss, model.loss(emb, batch_code=b["batch_code"]).loss)
    assert not torch.allclose(model.compute_loss(b).loss, model.loss(emb).loss)
    _both_paths(model, b)


class _Spy(ToyEncoder):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x, batch_code=None):
        self.inputs.append(x.detach().clone())
        return super().forward(x, batch_code)


def test_bimixco_mixes_inputs_in_training_only():
    torch.manual_seed(0)
    spy = _Spy(10)
    loss = get_loss("bimixco", source="histology", mix_prob=1.0, mix_beta=0.5)
    model = ContrastiveModel({"histology": spy, "expression": ToyEncoder(20)}, loss, embed_dim=8).double()
    b = _batch()
    torch.manual_seed(9)
    out = model.compute_loss(b)
    torch.manual_seed(9)
    mixed, state = loss.mix_inputs(b, ["histology", "expression"])
    torch.testing.assert_close(spy.inputs[-1], mixed["histology"])
    assert not torch.allclose(spy.inputs[-1], b["histology"])
    emb = model(mixed)
    torch.testing.assert_close(out.loss, model.loss(emb, **state).loss)
    model.eval()
    model.compute_loss(b)
    torch.testing.assert_close(spy.inputs[-1], b["histology"])  # validation never mixes


def test_bimixco_gradcache_matches_full_batch_with_masks():
    loss = get_loss("bimixco", source="histology", mix_prob=0.7)
    model = _model(loss)
    b = _batch()
    b["expression_mask"] = torch.tensor([1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1], dtype=torch.bool)
    out = _both_paths(model, b)
    assert out.loss.isfinite()


def test_plain_module_loss_gets_batch_codes_by_name():
    class Named(nn.Module):
        def __init__(self):
            super().__init__()
            self.got = None

        def forward(self, embeddings, batch_code=None):
            from biomodal.losses.base import LossOutput

            self.got = batch_code
            return LossOutput(sum(v.sum() for k, v in embeddings.items() if not k.endswith("_mask")))

    loss = Named()
    model = _model(loss)
    b = _batch()
    model.compute_loss(b)
    assert torch.equal(loss.got, b["batch_code"])
