"""ECG encoders: shapes, lead masks respected, gradients, registry metadata, bad inputs."""

from __future__ import annotations

import pytest
import torch

from biomodal.errors import ConfigError, DataError
from biomodal.nn import create_encoder

SMALL = {
    "ecg_resnet1d": {"width": 8, "blocks": [1, 1]},
    "ecg_transformer": {"patch": 25, "dim": 16, "depth": 1, "heads": 2, "dropout": 0.0},
}


@pytest.fixture(params=sorted(SMALL))
def enc(request):
    torch.manual_seed(0)
    return create_encoder(request.param, **SMALL[request.param]).eval()


def test_registry_metadata(enc):
    assert enc.spec.modality == "ecg"
    assert enc.spec.input_kind == "signal"
    assert enc.spec.input_shape["leads"] == 12


@pytest.mark.parametrize("samples", [250, 263, 1000])
def test_shapes_any_length(enc, samples):
    with torch.no_grad():
        out = enc(torch.randn(3, 12, samples))
    assert out.shape == (3, enc.out_dim)
    assert torch.isfinite(out).all()


def test_out_dim_projection():
    e = create_encoder("ecg_resnet1d", width=8, blocks=[1], out_dim=5)
    assert e(torch.randn(2, 12, 200)).shape == (2, 5)
    t = create_encoder("ecg_transformer", patch=20, dim=16, heads=2, depth=1, out_dim=7)
    assert t(torch.randn(2, 12, 200)).shape == (2, 7)


def test_masked_leads_are_ignored_and_mask_is_used(enc):
    torch.manual_seed(1)
    x = torch.randn(4, 12, 250)
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[:, 3] = False
    mask[1, 7:] = False
    noisy = x.clone()
    noisy[~mask] = torch.randn(int((~mask).sum()), 250) * 100  # absent leads hold garbage
    noisy[0, 3, 0] = float("nan")
    with torch.no_grad():
        a = enc(x, lead_mask=mask)
        b = enc(noisy, lead_mask=mask)
        c = enc({"signal": noisy, "lead_mask": mask})  # the mask inside the modality entry
        full = enc(x)
        changed = x.clone()
        changed[:, 0] += 1.0  # a present lead: the output must move
        d = enc(changed, lead_mask=mask)
        zeroed = x.clone()
        zeroed[~mask] = 0.0
        e = enc(zeroed)  # same signal values, but all leads declared present
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a, c, atol=1e-5)
    assert not torch.allclose(a, full, atol=1e-3)
    assert not torch.allclose(a, d, atol=1e-3)
    assert not torch.allclose(a, e, atol=1e-4), "the mask itself must be an input"


def test_gradients_flow_to_weights_not_to_absent_leads(enc):
    enc.train()
    x = torch.randn(3, 12, 250, requires_grad=True)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[:, 5] = False
    enc(x, lead_mask=mask).pow(2).sum().backward()
    assert x.grad[:, 5].abs().max() == 0
    assert x.grad[:, 0].abs().max() > 0
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_bad_inputs(enc):
    with pytest.raises(DataError, match=r"\[B, 12, samples\]"):
        enc(torch.randn(2, 8, 100))
    with pytest.raises(DataError, match="lead_mask"):
        enc(torch.randn(2, 12, 100), lead_mask=torch.ones(2, 8, dtype=torch.bool))
    with pytest.raises(DataError, match="signal"):
        enc({"x": torch.randn(2, 12, 100)})


def test_bad_config():
    with pytest.raises(ConfigError):
        create_encoder("ecg_transformer", dim=10, heads=4)
    with pytest.raises(ConfigError):
        create_encoder("ecg_resnet1d", kernel=4)


def test_spec_rebuilds_same_architecture():
    e = create_encoder("ecg_transformer", leads=3, patch=10, dim=8, heads=2, depth=1)
    again = e.spec.build()
    assert again.spec.input_shape == {"leads": 3, "patch": 10}
    assert [p.shape for p in again.parameters()] == [p.shape for p in e.parameters()]
