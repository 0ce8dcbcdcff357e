from __future__ import annotations

import numpy as np
import pytest
import torch

from biomodal.errors import ConfigError, DataError
from biomodal.nn import create_encoder
from biomodal.nn.expression import BatchConditionedNorm


def _set_affines(norm: BatchConditionedNorm, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.gamma.copy_(torch.rand(norm.gamma.shape, generator=g) + 0.5)
        norm.beta.copy_(torch.randn(norm.beta.shape, generator=g))


def test_batch_conditioned_norm_reference():
    norm = BatchConditionedNorm(6, n_batches=3)
    _set_affines(norm)
    x = torch.randn(5, 6)
    batch = torch.tensor([0, 2, 1, -1, 7])
    y = norm(x, batch)
    mu, var = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
    z = (x - mu) / torch.sqrt(var + 1e-5)
    g, b = norm.gamma.detach(), norm.beta.detach()
    for i, code in enumerate([0, 2, 1]):
        assert torch.allclose(y[i], z[i] * g[code] + b[code], atol=1e-5)
    # unseen codes (-1 and >= n_batches) use the mean affine
    for i in (3, 4):
        assert torch.allclose(y[i], z[i] * g.mean(0) + b.mean(0), atol=1e-5)
    assert torch.allclose(norm(x), z * g.mean(0) + b.mean(0), atol=1e-5)  # batch_code=None -> unseen


def test_batch_conditioned_norm_identity_policy_and_tokens():
    norm = BatchConditionedNorm(4, n_batches=2, unseen="identity")
    _set_affines(norm)
    x = torch.randn(3, 7, 4)
    y = norm(x, torch.tensor([-1, 0, 5]))
    z = torch.nn.functional.layer_norm(x, (4,))
    assert torch.allclose(y[0], z[0], atol=1e-5) and torch.allclose(y[2], z[2], atol=1e-5)
    assert torch.allclose(y[1], z[1] * norm.gamma[0] + norm.beta[0], atol=1e-5)
    with pytest.raises(DataError, match="integer"):
        norm(x, torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(DataError, match=r"shape \(3,\)"):
        norm(x, torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="unseen"):
        BatchConditionedNorm(4, 2, unseen="zero")


def test_mlp_unseen_batch_equals_averaged_model():
    torch.manual_seed(0)
    enc = create_encoder("mlp", in_features=12, hidden=(16, 8), n_batches=3, dropout=0.0).eval()
    assert enc.spec.covariates == ("batch_code",)
    for norm in enc.norms:
        _set_affines(norm, seed=len(norm.gamma[0]))
    x = torch.rand(4, 12)
    y_unseen = enc(x, torch.tensor([-1, 3, 99, -5]))
    # reference: a model whose every batch has the averaged affine, queried with code 0
    avg = create_encoder("mlp", in_features=12, hidden=(16, 8), n_batches=3, dropout=0.0).eval()
    avg.load_state_dict(enc.state_dict())
    with torch.no_grad():
        for norm in avg.norms:
            norm.gamma[:] = norm.gamma.mean(0)
            norm.beta[:] = norm.beta.mean(0)
    assert torch.allclose(y_unseen, avg(x, torch.zeros(4, dtype=torch.long)), atol=1e-6)
    assert torch.allclose(enc(x), y_unseen, atol=1e-6)
    # seen batches differ from one another
    assert not torch.allclose(
        enc(x, torch.zeros(4, dtype=torch.long)), enc(x, torch.ones(4, dtype=torch.long))
    )


def test_mlp_options_and_errors():
    enc = create_encoder("mlp", in_features=10, hidden=[32, 16], out_dim=4, norm="batch").train()
    assert enc(torch.rand(5, 10)).shape == (5, 4) and enc.spec.covariates == ()
    assert enc(torch.rand(5, 10), batch_code=torch.zeros(5, dtype=torch.long)).shape == (5, 4)  # ignored
    with pytest.raises(DataError, match=r"expected input \[B, 10\]"):
        enc(torch.rand(5, 11))
    with pytest.raises(ConfigError, match="activation"):
        create_encoder("mlp", in_features=10, activation="swish2")


def _gt(**kw):
    torch.manual_seed(0)
    base = dict(in_features=30, dim=16, depth=1, heads=2, dropout=0.0)
    return create_encoder("gene_transformer", **{**base, **kw}).eval()


def test_gene_transformer_top_n_ignores_low_genes():
    enc = _gt(top_n=5)
    x = torch.rand(3, 30) * 0.5
    x[:, :5] += 10.0  # genes 0-4 are the top 5 in every cell
    y1 = enc(x)
    x2 = x.clone()
    x2[:, 5:] = torch.rand(3, 25) * 0.5  # change only genes outside the top 5
    assert torch.allclose(y1, enc(x2), atol=1e-5)
    x3 = x.clone()
    x3[:, 0] += 1.0
    assert not torch.allclose(y1, enc(x3), atol=1e-4)


def test_gene_transformer_zero_genes_are_masked_and_identity_matters():
    enc = _gt()
    x = torch.zeros(2, 30)
    x[:, [1, 4, 9]] = torch.tensor([1.0, 2.0, 3.0])
    y = enc(x)
    # the gene identity matters: same values on other genes give another embedding
    x_other = torch.zeros(2, 30)
    x_other[:, [2, 4, 9]] = torch.tensor([1.0, 2.0, 3.0])
    assert not torch.allclose(y, enc(x_other), atol=1e-4)
    # masked zero genes do not influence the output: perturbing their embeddings changes nothing
    assert enc.tokenize(x)[2].sum(1).tolist() == [27, 27]
    zero_genes = [g for g in range(30) if g not in (1, 4, 9)]
    unmasked = _gt(mask_zeros=False)
    y_unmasked = unmasked(x)
    with torch.no_grad():
        noise = torch.randn(len(zero_genes), 16)  # not a constant shift: LayerNorm would cancel that
        for model in (enc, unmasked):
            model.gene_embed.weight[zero_genes] += noise
    assert torch.allclose(enc(x), y, atol=1e-6)
    assert not torch.allclose(unmasked(x), y_unmasked, atol=1e-4)


def test_gene_transformer_rank_encoding_depends_on_order_only():
    enc = _gt(value_encoding="rank", top_n=8)
    x = torch.rand(4, 30) + 0.1
    assert torch.allclose(enc(x), enc(x**3 * 5), atol=1e-5)
    assert enc.out_dim == 16


def test_gene_transformer_bins_match_numpy_quantiles():
    enc = _gt(value_encoding="binned", n_bins=5)
    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, size=(6, 30)).astype(np.float32)
    bins = enc._bins(torch.from_numpy(x)).numpy()
    for i in range(6):
        nz = x[i][x[i] > 0]
        edges = np.quantile(nz, np.linspace(0, 1, 6)[1:-1], method="lower")
        ref = np.where(x[i] > 0, np.minimum(np.digitize(x[i], edges, right=False) + 1, 5), 0)
        np.testing.assert_array_equal(bins[i], ref)
    assert enc(torch.from_numpy(x)).shape == (6, 16)


def test_gene_transformer_batch_conditioning():
    enc = _gt(n_batches=2, out_dim=8)
    _set_affines(enc.norm)
    x = torch.rand(3, 30)
    assert enc.spec.covariates == ("batch_code",)
    assert enc(x, torch.tensor([0, 1, -1])).shape == (3, 8)
    assert torch.allclose(enc(x, torch.tensor([-1, -1, -1])), enc(x), atol=1e-6)
    with pytest.raises(ConfigError, match="value_encoding"):
        _gt(value_encoding="fourier")
