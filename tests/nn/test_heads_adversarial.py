from __future__ import annotations

import itertools
import math

import pytest
import torch

from biomodal.errors import ConfigError
from biomodal.nn import BatchDiscriminator, GradientReversal, ProjectionHead
from biomodal.nn.adversarial import grl_schedule


@pytest.mark.parametrize("kind", ["linear", "mlp", "residual"])
def test_projection_head_shapes(kind):
    head = ProjectionHead(12, 5, kind=kind, dropout=0.1)
    assert head(torch.randn(3, 12)).shape == (3, 5)
    assert f"kind={kind!r}" in repr(head)


def test_projection_head_residual_reference():
    head = ProjectionHead(6, 4, kind="residual").eval()
    x = torch.randn(3, 6)
    p = x @ head.proj.weight.T + head.proj.bias
    h = torch.nn.functional.gelu(p) @ head.fc.weight.T + head.fc.bias
    ref = torch.nn.functional.layer_norm(p + h, (4,))
    assert torch.allclose(head(x), ref, atol=1e-6)
    mlp = ProjectionHead(6, 4, kind="mlp")
    assert mlp.hidden == 6 and ProjectionHead(6, 4, kind="mlp", hidden=32).net[0].out_features == 32
    with pytest.raises(ConfigError, match="kind"):
        ProjectionHead(6, 4, kind="conv")
    with pytest.raises(ConfigError, match="width 6"):
        head(torch.randn(2, 5))


@pytest.mark.parametrize("weight", [1.0, 0.5, 0.3, 0.0])
def test_gradient_reversal_exact(weight):
    torch.manual_seed(0)
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(3, 2)

    def f(z):
        return (torch.sin(z) @ w).pow(2).sum()

    (g_plain,) = torch.autograd.grad(f(x), x)
    grl = GradientReversal(weight)
    y = grl(x)
    assert torch.equal(y, x)
    (g_rev,) = torch.autograd.grad(f(y), x)
    assert torch.equal(g_rev, -weight * g_plain)


def test_grl_schedule_values():
    assert grl_schedule(0, 100) == 0.0
    assert grl_schedule(10, 100, max_weight=2.0) == pytest.approx(2 * 0.46211715726)  # tanh(0.5)
    assert grl_schedule(100, 100) == pytest.approx(math.tanh(5.0))
    assert grl_schedule(500, 100) == grl_schedule(100, 100)
    vals = [grl_schedule(s, 50) for s in range(51)]
    assert all(a < b for a, b in itertools.pairwise(vals))
    assert grl_schedule(25, 100, 0.8, kind="linear") == pytest.approx(0.2)
    assert grl_schedule(3, 100, 0.8, kind="constant") == 0.8
    with pytest.raises(ConfigError):
        grl_schedule(1, 10, kind="cosine")


def test_discriminator_learns_separable_batches():
    torch.manual_seed(0)
    n = 300
    batch = torch.randint(0, 3, (n,))
    centers = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
    z = centers[batch] + 0.5 * torch.randn(n, 4)
    disc = BatchDiscriminator(4, n_batches=3, hidden=(16,), dropout=0.0, weight=1.0)
    opt = torch.optim.Adam(disc.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        disc.loss(z, batch).backward()
        opt.step()
    acc = (disc(z).argmax(1) == batch).float().mean().item()
    assert acc > 0.95


def test_discriminator_reverses_into_encoder_and_ignores_unseen():
    torch.manual_seed(0)
    disc = BatchDiscriminator(4, n_batches=2, hidden=(), weight=0.7)
    z = torch.randn(6, 4, requires_grad=True)
    batch = torch.tensor([0, 1, -1, 1, 5, 0])
    loss = disc.loss(z, batch)
    keep = torch.tensor([0, 1, 3, 5])
    ref = torch.nn.functional.cross_entropy(disc.net(z[keep]), batch[keep])
    assert torch.allclose(loss, ref)
    (g,) = torch.autograd.grad(loss, z)
    (g_ref,) = torch.autograd.grad(torch.nn.functional.cross_entropy(disc.net(z[keep]), batch[keep]), z)
    assert torch.allclose(g, -0.7 * g_ref)
    disc.weight = 0.2
    assert disc.grl.weight == 0.2
    assert disc.loss(z, torch.full((6,), -1)).item() == 0.0
