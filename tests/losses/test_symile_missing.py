"""Symile with missing modalities: rows dropped, or the paper's learned missing representations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from biomodal.errors import ConfigError, DataError
from biomodal.losses import get_loss

NAMES = ("ecg", "report", "labs")


def _batch(n=12, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = {m: F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1) for m in NAMES}
    masks = {m: torch.ones(n, dtype=torch.bool) for m in NAMES}
    masks["report"][[1, 4]] = False
    masks["labs"][[4, 7, 9]] = False  # row 4 has only the ECG
    return emb, masks


def test_drop_equals_the_loss_on_complete_rows():
    emb, masks = _batch()
    loss = get_loss(
        "symile", negative_sampling="n_squared", logit_scale=4.0, learn_logit_scale=False
    ).double()
    full = masks["report"] & masks["labs"]
    got = loss(emb, masks=masks).loss
    want = loss({m: e[full] for m, e in emb.items()}).loss
    assert float(got) == pytest.approx(float(want), rel=1e-10)
    none = {m: torch.zeros(12, dtype=torch.bool) for m in NAMES}
    assert float(loss(emb, masks=none).loss) == 0.0


def test_learned_missing_vectors_match_a_hand_substitution():
    emb, masks = _batch()
    kw = dict(negative_sampling="n_squared", logit_scale=4.0, learn_logit_scale=False)
    loss = get_loss("symile", missing="learned", modalities=list(NAMES), embed_dim=6, **kw).double()
    got = loss(emb, masks=masks)
    ref = get_loss("symile", **kw).double()
    filled = {}
    for m, e in emb.items():
        vec = F.normalize(loss.missing_embed[m].detach(), dim=-1)
        filled[m] = torch.where(masks[m][:, None], e, vec)
    keep = torch.stack(list(masks.values())).sum(0) >= 2  # row 4 (ECG only) is left out
    assert int(keep.sum()) == 11
    want = ref({m: e[keep] for m, e in filled.items()})
    assert float(got.loss.detach()) == pytest.approx(float(want.loss), rel=1e-10)
    # and it differs from dropping the incomplete rows (more rows, other negatives)
    assert abs(float(got.loss) - float(ref(emb, masks=masks).loss)) > 1e-6


def test_learned_vectors_get_gradients_and_masked_rows_do_not():
    emb, masks = _batch()
    for e in emb.values():
        e.requires_grad_(True)
    loss = get_loss("symile", missing="learned", modalities=list(NAMES), embed_dim=6).double()
    assert {n for n, _ in loss.named_parameters()} >= {f"missing_embed.{m}" for m in NAMES}
    out = loss(emb, masks=masks, generator=torch.Generator().manual_seed(1))
    out.loss.backward()
    assert loss.missing_embed["labs"].grad.abs().sum() > 0
    assert loss.missing_embed["ecg"].grad is None or loss.missing_embed["ecg"].grad.abs().sum() == 0
    assert emb["labs"].grad[[4, 7, 9]].abs().max() == 0  # the encoder output of missing rows is unused
    assert emb["labs"].grad[0].abs().sum() > 0


def test_learned_without_masks_equals_drop():
    emb, _ = _batch()
    kw = dict(negative_sampling="n_squared", logit_scale=3.0)
    a = get_loss("symile", missing="learned", modalities=list(NAMES), embed_dim=6, **kw).double()
    b = get_loss("symile", **kw).double()
    assert float(a(emb).loss) == pytest.approx(float(b(emb).loss), rel=1e-12)


def test_learned_config_errors():
    with pytest.raises(ConfigError, match="embed_dim"):
        get_loss("symile", missing="learned")
    with pytest.raises(ConfigError, match="missing"):
        get_loss("symile", missing="zeros")
    emb, masks = _batch(d=6)
    loss = get_loss("symile", missing="learned", modalities=list(NAMES), embed_dim=4).double()
    with pytest.raises(DataError, match="embed_dim"):
        loss(emb, masks=masks)
