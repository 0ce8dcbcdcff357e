"""RadCLIP slice pooling: padded slices never count, order matters for attention only, gradients flow."""

from __future__ import annotations

import pytest
import torch

from biomodal.errors import ConfigError, DataError
from biomodal.nn import create_encoder


def _enc(pooling: str, seed: int = 0):
    torch.manual_seed(seed)
    return create_encoder(
        "volume_slices", slice_params={"channels": (8, 16), "norm": "group"}, pooling=pooling, heads=2
    ).eval()


@pytest.mark.parametrize("pooling", ["attention", "mean"])
def test_padded_slices_do_not_change_the_output(pooling):
    enc = _enc(pooling)
    vol = torch.rand(2, 1, 4, 32, 32)
    padded = torch.cat([vol, torch.rand(2, 1, 3, 32, 32)], dim=2)  # 3 junk slices appended
    with torch.no_grad():
        ref = enc(vol)
        out = enc({"volume": padded, "n_slices": torch.tensor([4, 4])})
        mask = torch.zeros(2, 7, dtype=torch.bool)
        mask[:, :4] = True
        out_mask = enc({"volume": padded, "slice_mask": mask})
    assert ref.shape == (2, enc.out_dim)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_mask, ref, rtol=1e-4, atol=1e-5)


def test_attention_sees_slice_order_mean_does_not():
    vol = torch.rand(1, 1, 5, 32, 32)
    rev = vol.flip(2)
    att, mean = _enc("attention"), _enc("mean")
    with torch.no_grad():
        torch.testing.assert_close(mean(rev), mean(vol), rtol=1e-4, atol=1e-5)
        assert not torch.allclose(att(rev), att(vol), atol=1e-4)  # the position encoding at work
        assert not torch.allclose(att(vol), mean(vol), atol=1e-3)


def test_gradients_reach_slice_encoder_and_pooling():
    enc = _enc("attention").train()
    out = enc({"volume": torch.rand(2, 1, 3, 32, 32), "n_slices": torch.tensor([3, 2])})
    (out * torch.randn_like(out)).sum().backward()  # not out.sum(): a LayerNorm output sums to a constant
    for name in ("slices", "pool.query", "pool.pos", "pool.attn"):
        grads = [p.grad for n, p in enc.named_parameters() if n.startswith(name)]
        assert grads and all(g is not None for g in grads), name
        assert any(float(g.abs().sum()) > 0 for g in grads), name


def test_bad_inputs():
    enc = _enc("attention")
    with pytest.raises(DataError, match=r"\[B, C, D, H, W\]"):
        enc(torch.rand(2, 1, 32, 32))
    with pytest.raises(DataError, match="no slice"):
        enc({"volume": torch.rand(1, 1, 3, 32, 32), "n_slices": torch.tensor([0])})
    with pytest.raises(DataError, match="channels"):
        enc(torch.rand(1, 2, 3, 32, 32))
    with pytest.raises(ConfigError, match="pooling"):
        create_encoder("volume_slices", pooling="max")
    with pytest.raises(ConfigError, match="divisible"):
        create_encoder("volume_slices", slice_params={"channels": (8, 15)}, heads=4)


def test_spec_round_trip():
    enc = _enc("attention")
    assert enc.spec.input_kind == "volume" and enc.spec.modality == "volume"
    again = enc.spec.build()
    again.load_state_dict(enc.state_dict())
    x = torch.rand(1, 1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), enc(x))
