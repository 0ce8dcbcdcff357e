"""M3CoL against a naive loop implementation, masks, the fusion classifier and model wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from biomodal.errors import ConfigError, DataError
from biomodal.losses import get_loss

MODS = ["mrna", "methylation", "mirna"]


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def _lse(v):
    m = max(v)
    return m + math.log(sum(math.exp(x - m) for x in v))


def naive_pair(a, b, perm, lam, s):
    """Explicit loops over the M3Co formula of one ordered pair (a mixed, b clean)."""
    a, b = a.tolist(), b.tolist()
    n = len(a)
    mixed = []
    for i in range(n):
        v = [lam[i] * a[i][k] + (1 - lam[i]) * a[perm[i]][k] for k in range(len(a[i]))]
        norm = math.sqrt(sum(x * x for x in v))
        mixed.append([x / norm for x in v])
    sim = [[s * sum(p * q for p, q in zip(mixed[i], b[j])) for j in range(n)] for i in range(n)]

    def target(i, j):
        return lam[i] * (j == i) + (1 - lam[i]) * (j == perm[i])

    fwd = 0.0
    for i in range(n):
        lse = _lse(sim[i])
        fwd -= sum(target(i, j) * (sim[i][j] - lse) for j in range(n))
    bwd = 0.0
    for j in range(n):
        col = [sim[i][j] for i in range(n)]
        lse = _lse(col)
        bwd -= sum(target(i, j) * (col[i] - lse) for i in range(n))
    return 0.5 * (fwd / n + bwd / n)


def naive_ce(logits, y):
    rows = [(lg, t) for lg, t in zip(logits.tolist(), y.tolist()) if t >= 0]
    return sum(_lse(lg) - lg[t] for lg, t in rows) / len(rows)


@pytest.fixture()
def case():
    n, d = 7, 5
    emb = {m: _unit(n, d, i) for i, m in enumerate(MODS)}
    perm = {"mrna": torch.tensor([3, 0, 6, 1, 4, 2, 5]), "methylation": torch.tensor([1, 2, 3, 4, 5, 6, 0]),
            "mirna": torch.tensor([6, 5, 4, 3, 2, 1, 0])}  # fmt: skip
    lam = {
        m: torch.tensor([0.3, 1.0, 0.55, 0.9, 1.0, 0.1, 0.7], dtype=torch.float64).roll(i)
        for i, m in enumerate(MODS)
    }
    label = torch.tensor([0, 1, 1, -1, 0, 1, 0])
    return emb, perm, lam, label


def test_m3col_matches_naive_loops(case):
    emb, perm, lam, label = case
    torch.manual_seed(0)
    loss = get_loss("m3col", modalities=MODS, n_classes=2, embed_dim=5, hidden=4, contrastive_weight=0.3,
                    unimodal_weight=0.5).double()  # fmt: skip
    out = loss.compute(emb, label=label, mix_perm=perm, mix_lambda=lam)
    pairs = [("mrna", "methylation"), ("methylation", "mirna"), ("mirna", "mrna")]  # the cycle
    con = 0.0
    for a, b in pairs:
        ref = naive_pair(emb[a], emb[b], perm[a].tolist(), lam[a].tolist(), 10.0)
        assert float(out.parts[f"{a}-{b}"].detach()) == pytest.approx(ref, abs=1e-5)
        con += ref
    with torch.no_grad():
        fused = loss.fusion(torch.cat([emb[m] for m in MODS], dim=1))
        ce = naive_ce(fused, label)
        uni = sum(naive_ce(loss.unimodal[m](emb[m]), label) for m in MODS)
    assert float(out.parts["fusion_ce"].detach()) == pytest.approx(ce, abs=1e-5)
    assert float(out.loss.detach()) == pytest.approx(0.3 * con + ce + 0.5 * uni, abs=1e-5)


def test_masks_drop_rows_from_pairs_and_zero_them_in_the_fusion(case):
    emb, _, lam, label = case
    mask = torch.tensor([1, 1, 0, 1, 1, 1, 1], dtype=torch.bool)  # subject 2 lacks methylation
    loss = get_loss("m3col", modalities=MODS, pairs="all", n_classes=2, embed_dim=5).double().eval()
    out = loss.compute({**emb, "methylation_mask": mask}, label=label)
    keep = mask.nonzero().flatten()
    ident = list(range(len(keep)))
    ref = naive_pair(emb["mrna"][keep], emb["methylation"][keep], ident, [1.0] * len(keep), 10.0)
    assert float(out.parts["mrna-methylation"].detach()) == pytest.approx(ref, abs=1e-5)
    ref_full = naive_pair(emb["mrna"], emb["mirna"], list(range(7)), [1.0] * 7, 10.0)
    assert float(out.parts["mrna-mirna"].detach()) == pytest.approx(ref_full, abs=1e-5)
    assert len([k for k in out.parts if "-" in k]) == 6  # every ordered pair
    with torch.no_grad():
        zeroed = emb["methylation"].clone()
        zeroed[2] = 0
        fused = loss.fusion(torch.cat([emb["mrna"], zeroed, emb["mirna"]], dim=1))
    assert float(out.parts["fusion_ce"].detach()) == pytest.approx(naive_ce(fused, label), abs=1e-5)
    bad_perm = {"mrna": torch.tensor([2, 0, 1, 3, 4, 5, 6])}  # row 0 mixed with the excluded row 2
    with pytest.raises(DataError, match="excluded"):
        loss.compute({**emb, "methylation_mask": mask}, mix_perm=bad_perm, mix_lambda=lam["mrna"])


def test_unmixed_two_modalities_is_twice_clip():
    e = {"mrna": _unit(9, 4, 1), "mirna": _unit(9, 4, 2)}
    m3 = get_loss("m3col").double().eval()  # eval mode: no mixing
    clip = get_loss("clip", logit_scale=10.0, learn_logit_scale=False).double()
    assert float(m3(e).loss) == pytest.approx(0.1 * 2 * float(clip(e).loss), rel=1e-9)


def test_labels_optional_and_training_mode_mixes():
    e = {m: _unit(12, 6, i).requires_grad_(True) for i, m in enumerate(MODS)}
    loss = get_loss("m3col", modalities=MODS, n_classes=3, embed_dim=6).double()
    plain = loss(e)
    assert set(plain.parts) == {"mrna-methylation", "methylation-mirna", "mirna-mrna", "contrastive"}
    unlabelled = loss(e, label=torch.full((12,), -1))
    assert "fusion_ce" not in unlabelled.parts
    torch.manual_seed(5)
    a = loss(e, label=torch.arange(12) % 3)
    torch.manual_seed(5)
    b = loss(e, label=torch.arange(12) % 3)
    assert float(a.loss.detach()) == float(b.loss.detach())  # draws come from the torch RNG
    loss.eval()
    c = loss(e, label=torch.arange(12) % 3)
    assert float(c.loss.detach()) != pytest.approx(float(a.loss.detach()))  # eval does not mix
    a.loss.backward()
    assert loss.fusion[0].weight.grad is not None and e["mrna"].grad is not None


def test_predict_proba_and_errors():
    loss = get_loss("m3col", modalities=["mrna", "mirna"], n_classes=2, embed_dim=4)
    z = {"mrna": np.random.default_rng(0).normal(size=(5, 4)), "mirna": np.ones((5, 4))}
    z["mirna"][1] = np.nan  # subject 1 lacks miRNA
    p = loss.predict_proba(z)
    assert p.shape == (5, 2) and np.allclose(p.sum(1), 1) and np.isfinite(p).all()
    assert loss.training  # mode restored
    with pytest.raises(ConfigError, match="modalities"):
        get_loss("m3col", n_classes=2, embed_dim=4)
    with pytest.raises(ConfigError, match="pairs"):
        get_loss("m3col", pairs="ring")
    e = {"mrna": _unit(4, 4, 0).float(), "mirna": _unit(4, 4, 1).float()}
    with pytest.raises(DataError, match="shape"):
        loss(e, label=torch.zeros(3, dtype=torch.long))
    with pytest.raises(DataError, match="n_classes"):
        loss(e, label=torch.tensor([0, 1, 2, 0]))


def test_model_passes_labels_to_the_loss():
    from biomodal.nn import create_encoder
    from biomodal.train import ContrastiveModel

    loss = get_loss("m3col", modalities=["mrna", "mirna"], n_classes=2, embed_dim=8)
    assert loss.extra_keys == ("label",)
    encs = {m: create_encoder("mlp", in_features=6, hidden=(16,)) for m in ("mrna", "mirna")}
    model = ContrastiveModel(encs, loss, embed_dim=8)
    g = torch.Generator().manual_seed(0)
    batch = {"mrna": torch.randn(10, 6, generator=g), "mirna": torch.randn(10, 6, generator=g),
             "label": torch.arange(10) % 2}  # fmt: skip
    out = model.compute_loss(batch)
    assert "fusion_ce" in out.parts and "mrna_ce" in out.parts
    names = {n for g in model.param_groups(1e-3, 1e-3, 0.0) for n in map(id, g["params"])}
    assert id(loss.fusion[0].weight) in names  # the classifier is optimised with the model
