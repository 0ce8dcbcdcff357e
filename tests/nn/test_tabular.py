"""labs_mlp: missing-value indicators, the three input forms, masks respected."""

from __future__ import annotations

import pytest
import torch

from biomodal.errors import ConfigError, DataError
from biomodal.nn import create_encoder
from biomodal.nn.tabular import split_missing


@pytest.fixture
def enc():
    torch.manual_seed(0)
    return create_encoder("labs_mlp", in_features=4, hidden=[16], dropout=0.0).eval()


def _values():
    torch.manual_seed(2)
    x = torch.randn(5, 4)
    miss = torch.zeros(5, 4, dtype=torch.bool)
    miss[0, 1] = miss[2, 3] = miss[4, 0] = True
    return x, miss


def test_registry_and_shape(enc):
    assert (enc.spec.modality, enc.spec.input_kind) == ("labs", "vector")
    assert enc.spec.input_shape == {"in_features": 4}
    assert enc(torch.randn(3, 4)).shape == (3, 16)


def test_split_missing_known_answer():
    x = torch.tensor([[1.0, float("nan")], [3.0, 4.0]])
    v, m = split_missing(x, 2)
    assert torch.equal(v, torch.tensor([[1.0, 0.0], [3.0, 4.0]]))
    assert torch.equal(m, torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    v2, m2 = split_missing(torch.tensor([[1.0, 9.0, 0.0, 1.0]]), 2)  # [values, indicators]
    assert torch.equal(v2, torch.tensor([[1.0, 0.0]])) and torch.equal(m2, torch.tensor([[0.0, 1.0]]))


def test_three_input_forms_agree(enc):
    x, miss = _values()
    nan = torch.where(miss, torch.full_like(x, float("nan")), x)
    packed = torch.cat([x, miss.float()], dim=1)
    with torch.no_grad():
        a = enc(nan)
        b = enc(packed)
        c = enc({"values": x, "missing": miss})
        d = enc({"values": x, "observed": ~miss})
    for other in (b, c, d):
        assert torch.allclose(a, other, atol=1e-6)


def test_missing_cell_value_is_ignored_but_missingness_is_used(enc):
    x, miss = _values()
    garbage = x.clone()
    garbage[miss] = 1e3
    with torch.no_grad():
        a = enc({"values": x, "missing": miss})
        b = enc({"values": garbage, "missing": miss})
        observed_zero = enc(torch.where(miss, torch.zeros_like(x), x))  # same values, nothing missing
    assert torch.allclose(a, b, atol=1e-6)
    rows = miss.any(1)
    assert not torch.allclose(a[rows], observed_zero[rows], atol=1e-4)
    assert torch.allclose(a[~rows], observed_zero[~rows], atol=1e-6)


def test_without_indicators_is_mean_imputation():
    enc = create_encoder("labs_mlp", in_features=4, hidden=[8], indicators=False, dropout=0.0).eval()
    x, miss = _values()
    with torch.no_grad():
        a = enc({"values": x, "missing": miss})
        b = enc(torch.where(miss, torch.zeros_like(x), x))
    assert torch.allclose(a, b, atol=1e-6)


def test_gradients_skip_missing_cells(enc):
    x, miss = _values()
    x.requires_grad_(True)
    enc({"values": x, "missing": miss}).sum().backward()
    assert x.grad[miss].abs().max() == 0
    assert x.grad[~miss].abs().max() > 0


def test_errors():
    with pytest.raises(ConfigError, match="in_features"):
        create_encoder("labs_mlp")
    enc = create_encoder("labs_mlp", in_features=4)
    with pytest.raises(DataError, match=r"\[B, 4\]"):
        enc(torch.randn(2, 5))
    with pytest.raises(DataError, match="values"):
        enc({"x": torch.randn(2, 4)})
