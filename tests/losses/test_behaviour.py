"""Gradients, masks, chunking, temperature clamp and registry behaviour of the losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from biomodal.errors import ConfigError, DataError
from biomodal.losses import ContrastiveLoss, LossOutput, get_loss, list_losses, register_loss

ALL = [
    "clip",
    "siglip",
    "cwcl",
    "symile",
    "gram",
    "clip_uniformity",
    "mv_infonce",
    "mv_dhel",
    "softclip",
    "bimixco",
]
NWAY = {"symile", "gram", "mv_infonce", "mv_dhel"}


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def _extra(name, n, seed=0):
    g = torch.Generator().manual_seed(seed + 100)
    if name == "cwcl":
        return {"reference": torch.randn(n, 3, generator=g, dtype=torch.float64)}
    if name == "bimixco":
        return {
            "mix_perm": torch.roll(torch.arange(n), 1),
            "mix_lambda": torch.rand(n, generator=g, dtype=torch.float64),
        }
    if name == "symile":
        return {"generator": torch.Generator().manual_seed(seed)}
    return {}


def _names(name):
    return ["histology", "expression", "labs"] if name in NWAY else ["histology", "expression"]


def test_registry_lists_every_builtin():
    assert set(ALL) <= set(list_losses())


def test_registry_errors():
    with pytest.raises(ConfigError, match="Did you mean 'clip'"):
        get_loss("clipp")
    with pytest.raises(ConfigError, match="unknown loss"):
        get_loss("nonexistent_loss")
    with pytest.raises(ConfigError, match="temperature"):
        get_loss("clip", temperature=0.1)
    with pytest.raises(ConfigError, match="cross_batch_negative_weight"):
        get_loss("clip", cross_batch_negative_weight=1.5)
    with pytest.raises(ConfigError, match="negative_sampling"):
        get_loss("symile", negative_sampling="all")
    with pytest.raises(ValueError, match="already registered"):
        register_loss("clip")(lambda **kw: None)


def test_register_custom_loss():
    @register_loss("_test_custom", family="test")
    class Custom(ContrastiveLoss):
        def forward(self, embeddings, masks=None):
            embs, _ = self.parse(embeddings, masks)
            return LossOutput(sum(e.sum() for e in embs.values()) * self.logit_scale)

    loss = get_loss("_test_custom", logit_scale=2.0)
    assert isinstance(loss, Custom)
    assert float(loss({"a": torch.ones(2, 2), "b": torch.ones(2, 2)}).loss) == pytest.approx(16.0, rel=1e-6)


def test_bad_inputs_raise_data_errors():
    loss = get_loss("clip")
    x = torch.randn(4, 3)
    with pytest.raises(DataError, match="at least 2"):
        loss({"histology": x})
    with pytest.raises(DataError, match="rows"):
        loss({"histology": x, "expression": torch.randn(5, 3)})
    with pytest.raises(DataError, match="expression_mask"):
        loss({"histology": x, "expression": x, "expression_mask": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(DataError, match="floating"):
        loss({"histology": x, "expression": torch.ones(4, 3, dtype=torch.long)})


@pytest.mark.parametrize("name", ALL)
def test_gradcheck(name):
    n = 4
    loss = get_loss(name, logit_scale=3.0).double()
    names = _names(name)
    xs = [_unit(n, 3, i).requires_grad_() for i in range(len(names))]
    params = {k: p.detach().clone().requires_grad_() for k, p in loss.named_parameters()}
    keys = list(params)

    def f(*args):
        emb = dict(zip(names, args[: len(names)]))
        p = dict(zip(keys, args[len(names) :]))
        return functional_call(loss, p, (emb,), _extra(name, n)).loss

    assert torch.autograd.gradcheck(f, (*xs, *params.values()), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_aligned_pairs_beat_shuffled(name):
    n, d = 16, 8
    base = _unit(n, d, 1)
    # gram with three near-identical vectors has ~0 volume for every candidate: use two modalities
    names = _names(name)[:2] if name == "gram" else _names(name)
    aligned = {m: F.normalize(base + 0.1 * _unit(n, d, 10 + i), dim=1) for i, m in enumerate(names)}
    if name == "symile":  # the MIP is large when the third vector follows the product of the others
        x, y = _unit(n, d, 2), _unit(n, d, 3)
        aligned = {"histology": x, "expression": y, "labs": F.normalize(x * y, dim=1)}
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    shuffled = dict(aligned)
    shuffled[names[-1]] = aligned[names[-1]][perm]
    loss = get_loss(name, logit_scale=10.0).double()
    kw = _extra(name, n)
    kw.pop("mix_perm", None), kw.pop("mix_lambda", None)  # mixing targets would need mixed inputs
    kw2 = _extra(name, n) if name == "symile" else kw
    assert float(loss(aligned, **kw).loss) < float(loss(shuffled, **kw2).loss)


@pytest.mark.parametrize("name", ["clip", "siglip", "cwcl", "softclip", "bimixco", "clip_uniformity"])
def test_pairwise_masks_equal_dropping_rows(name):
    n = 7
    e = {"histology": _unit(n, 4, 0), "expression": _unit(n, 4, 1)}
    mask = torch.tensor([1, 1, 0, 1, 0, 1, 1], dtype=torch.bool)
    loss = get_loss(name).double()
    kw = _extra(name, n)
    kw.pop("mix_perm", None), kw.pop("mix_lambda", None)
    masks = {"expression_mask": mask}
    if name == "clip_uniformity":  # per-modality uniformity uses each modality's own rows
        masks["histology_mask"] = mask
    masked = loss({**e, **masks}, **kw)
    kw_f = {k: (v[mask] if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    dropped = loss({k: v[mask] for k, v in e.items()}, **kw_f)
    torch.testing.assert_close(masked.loss, dropped.loss)
    # masks given by keyword behave the same
    masks = {k.removesuffix("_mask"): v for k, v in masks.items()}
    torch.testing.assert_close(loss(e, masks=masks, **kw).loss, dropped.loss)


@pytest.mark.parametrize("name", sorted(NWAY))
def test_nway_masks_drop_rows_with_any_gap(name):
    n = 7
    e = {m: _unit(n, 4, i) for i, m in enumerate(["histology", "expression", "labs"])}
    m1 = torch.tensor([1, 1, 0, 1, 1, 1, 1], dtype=torch.bool)
    m2 = torch.tensor([1, 1, 1, 1, 0, 1, 1], dtype=torch.bool)
    keep = m1 & m2
    loss = get_loss(name).double()
    kw = _extra(name, n)
    masked = loss({**e, "expression_mask": m1, "labs_mask": m2}, **kw)
    dropped = loss({k: v[keep] for k, v in e.items()}, **_extra(name, n))
    torch.testing.assert_close(masked.loss, dropped.loss)


def test_clip_pairs_use_their_own_rows():
    n = 6
    e = {m: _unit(n, 4, i) for i, m in enumerate(["histology", "expression", "labs"])}
    m = torch.tensor([1, 0, 1, 1, 1, 0], dtype=torch.bool)
    out = get_loss("clip").double()({**e, "labs_mask": m})
    full = get_loss("clip").double()({"histology": e["histology"], "expression": e["expression"]})
    torch.testing.assert_close(out.parts["histology-expression"], full.loss)
    sub = get_loss("clip").double()({"histology": e["histology"][m], "labs": e["labs"][m]})
    torch.testing.assert_close(out.parts["histology-labs"], sub.loss)


def test_bimixco_mixed_with_missing_row_raises():
    e = {
        "histology": _unit(4, 3, 0),
        "expression": _unit(4, 3, 1),
        "expression_mask": torch.tensor([1, 1, 1, 0]).bool(),
    }
    loss = get_loss("bimixco").double()
    with pytest.raises(DataError, match="mixed"):
        loss(e, mix_perm=torch.tensor([3, 0, 1, 2]), mix_lambda=0.5)


@pytest.mark.parametrize(
    "name,kwargs", [("clip", {}), ("clip", {"cross_batch_negative_weight": 0.2}), ("siglip", {})]
)
def test_chunked_equals_unchunked(name, kwargs):
    n = 13
    e = {"histology": _unit(n, 5, 0).requires_grad_(), "expression": _unit(n, 5, 1).requires_grad_()}
    batch = torch.tensor([0, 1] * 6 + [0])
    fwd = {"batch_code": batch} if kwargs else {}
    full = get_loss(name, **kwargs).double()
    chunked = get_loss(name, chunk_size=4, **kwargs).double()
    a, b = full(e, **fwd).loss, chunked(e, **fwd).loss
    torch.testing.assert_close(a, b)
    ga = torch.autograd.grad(a, [*e.values(), *full.parameters()])
    gb = torch.autograd.grad(b, [*e.values(), *chunked.parameters()])
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y)


def test_logit_scale_clamp_and_buffer():
    loss = get_loss("clip", logit_scale=1000.0)
    assert float(loss.logit_scale) == pytest.approx(100.0)
    e = {"histology": _unit(5, 3, 0).float(), "expression": _unit(5, 3, 1).float()}
    loss(e).loss.backward()
    assert float(loss.log_logit_scale.grad) == 0.0  # beyond the clamp: no gradient
    loss.clamp_parameters_()
    assert float(loss.log_logit_scale) == pytest.approx(math.log(100.0))
    fixed = get_loss("siglip", learn_logit_scale=False, learn_logit_bias=False)
    assert list(fixed.parameters()) == []
    assert {"log_logit_scale", "logit_bias"} <= set(dict(fixed.named_buffers()))
    learn = get_loss("siglip")
    assert float(learn.logit_bias) == -10.0
    assert {n for n, _ in learn.named_parameters()} == {"log_logit_scale", "logit_bias"}
    assert float(get_loss("clip").logit_scale) == pytest.approx(1 / 0.07, rel=1e-6)
    with pytest.raises(ConfigError, match="logit_scale"):
        get_loss("clip", logit_scale=-1.0)


def test_output_repr_and_parts():
    out = get_loss("clip")({"histology": torch.randn(3, 2), "expression": torch.randn(3, 2)})
    assert "histology-expression" in repr(out) and out.loss.ndim == 0
    assert "logit_scale" in repr(get_loss("clip"))
