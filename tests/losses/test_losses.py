"""Every loss against an independent loop/numpy implementation, plus gradcheck and behaviour."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from biomodal.losses import get_loss

S = 1 / 0.07


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def _np(t):
    return t.detach().numpy()


def _lse(v):
    v = np.asarray(v, dtype=np.float64)
    m = v.max()
    return m + math.log(np.exp(v - m).sum())


# ---------------------------------------------------------------- naive references (loops)
def naive_clip(x, y, s, batch=None, w=1.0):
    x, y = _np(x), _np(y)
    n = len(x)
    tot = 0.0
    for i in range(n):
        for q, k in ((x, y), (y, x)):
            logits = []
            for j in range(n):
                v = s * float(q[i] @ k[j])
                if batch is not None and batch[i] != batch[j]:
                    v = v + math.log(w) if w > 0 else -np.inf
                logits.append(v)
            tot += _lse(logits) - s * float(q[i] @ k[i])
    return tot / (2 * n)


def naive_siglip(x, y, s, b):
    x, y = _np(x), _np(y)
    n = len(x)
    tot = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            tot += math.log1p(math.exp(-z * (s * float(x[i] @ y[j]) + b)))
    return tot / n


def naive_cwcl(x, y, s, ref):
    x, y, r = _np(x), _np(y), _np(ref)
    r = r / np.linalg.norm(r, axis=1, keepdims=True)
    n = len(x)
    tot = 0.0
    for q, k in ((x, y), (y, x)):
        for i in range(n):
            logits = [s * float(q[i] @ k[j]) for j in range(n)]
            lse = _lse(logits)
            ws = [(1 + float(r[i] @ r[j])) / 2 for j in range(n)]
            tot -= sum(ws[j] * (logits[j] - lse) for j in range(n)) / sum(ws)
    return tot / (2 * n)


def naive_symile_n2(reps, s):
    reps = [_np(r) for r in reps]
    n, m = len(reps[0]), len(reps)
    tot = 0.0
    for a in range(m):
        others = [reps[o] for o in range(m) if o != a]
        for i in range(n):
            logits, pos = [], None
            for combo in itertools.product(range(n), repeat=m - 1):
                prod = reps[a][i].copy()
                for o, j in zip(others, combo):
                    prod = prod * o[j]
                logits.append(s * prod.sum())
                if all(j == i for j in combo):
                    pos = logits[-1]
            tot += _lse(logits) - pos
    return tot / (n * m)


def naive_symile_n(reps, s, seed):
    g = torch.Generator().manual_seed(seed)
    reps = [_np(r) for r in reps]
    n, m = len(reps[0]), len(reps)
    tot = 0.0
    for a in range(m):
        others = [o for o in range(m) if o != a]
        perms = {o: torch.randperm(n, generator=g).numpy() for o in others}
        for i in range(n):
            logits = []
            for j in range(n):
                prod = reps[a][i].copy()
                for o in others:
                    prod = prod * reps[o][i if j == i else perms[o][j]]
                logits.append(s * prod.sum())
            tot += _lse(logits) - logits[i]
    return tot / (n * m)


def naive_gram(reps, s):
    reps = [_np(r) for r in reps]
    n = len(reps[0])
    vol = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            a = np.stack([reps[0][i]] + [r[j] for r in reps[1:]], axis=1)
            vol[i, j] = math.sqrt(abs(np.linalg.det(a.T @ a)))
    tot = 0.0
    for i in range(n):
        tot += _lse(-s * vol[i]) + s * vol[i, i]
        tot += _lse(-s * vol[:, i]) + s * vol[i, i]
    return tot / (2 * n)


def naive_mv_infonce(reps, s):
    reps = [_np(r) for r in reps]
    n, v = len(reps[0]), len(reps)
    tot = 0.0
    for i in range(n):
        pos = [s * reps[a][i] @ reps[b][i] for a in range(v) for b in range(v) if a != b]
        neg = [
            s * reps[a][i] @ reps[b][j]
            for a in range(v)
            for b in range(v)
            for j in range(n)
            if (j, b) != (i, a)
        ]
        tot += -_lse(pos) + _lse(neg)
    return tot / n


def naive_mv_dhel(reps, s):
    reps = [_np(r) for r in reps]
    n, v = len(reps[0]), len(reps)
    tot = 0.0
    for i in range(n):
        tot -= _lse([s * reps[a][i] @ reps[b][i] for a in range(v) for b in range(a + 1, v)])
        for a in range(v):
            tot += _lse([s * reps[a][i] @ reps[a][j] for j in range(n) if j != i])
    return tot / n


def naive_softclip(x, y, s, st):
    x, y = _np(x), _np(y)
    n = len(x)
    tot = 0.0
    for i in range(n):
        t = np.array([st * y[i] @ y[j] for j in range(n)])
        p = np.exp(t - _lse(t))
        for q, k in ((x, y), (y, x)):
            lg = np.array([s * q[i] @ k[j] for j in range(n)])
            tot -= float((p * (lg - _lse(lg))).sum())
    return tot / (2 * n)


def naive_bimixco(x, y, s, perm, lam):
    x, y = _np(x), _np(y)
    n = len(x)
    p = np.zeros((n, n))
    for i in range(n):
        p[i, i] += lam[i]
        p[i, perm[i]] += 1 - lam[i]
    logits = s * x @ y.T
    tot = 0.0
    for i in range(n):
        tot -= float((p[i] * (logits[i] - _lse(logits[i]))).sum())
    for j in range(n):
        tot -= float((p[:, j] * (logits[:, j] - _lse(logits[:, j]))).sum())
    return tot / (2 * n)


def _log_mean_exp_pairs(a, b):
    n = len(a)
    return _lse(
        [-2 * float(((a[i] - b[j]) ** 2).sum()) for i in range(n) for j in range(n) if i != j]
    ) - math.log(n * (n - 1))


def naive_clip_uniformity(x, y, s):
    clip = naive_clip(x, y, s)
    xa, ya = _np(x), _np(y)
    align = float((((xa - ya) ** 2).sum(1)).mean())
    unif = (_log_mean_exp_pairs(xa, xa) + _log_mean_exp_pairs(ya, ya)) / 2
    return clip + align + unif + _log_mean_exp_pairs(xa, ya)


# ---------------------------------------------------------------- value tests
N, D = 6, 4


def _pair(seed=0, n=N):
    return {"histology": _unit(n, D, seed), "expression": _unit(n, D, seed + 1)}


def _three(seed=0, n=N):
    return {
        "histology": _unit(n, D, seed),
        "expression": _unit(n, D, seed + 1),
        "labs": _unit(n, D, seed + 2),
    }


def test_clip_matches_loops():
    e = _pair()
    loss = get_loss("clip").double()
    assert float(loss(e).loss) == pytest.approx(naive_clip(e["histology"], e["expression"], S), rel=1e-6)


def test_clip_batch_weights_match_loops():
    e = _pair()
    batch = torch.tensor([0, 0, 1, 1, 0, 2])
    for w in (0.0, 0.4):
        loss = get_loss("clip", cross_batch_negative_weight=w).double()
        ref = naive_clip(e["histology"], e["expression"], S, batch.tolist(), w)
        assert float(loss(e, batch_code=batch).loss) == pytest.approx(ref, rel=1e-6)
    # weight 1 (default) ignores labels
    plain = get_loss("clip").double()
    ref = naive_clip(e["histology"], e["expression"], S)
    assert float(plain(e, batch_code=batch).loss) == pytest.approx(ref)


def test_clip_three_modalities_all_pairs_and_anchor():
    e = _three()
    out = get_loss("clip").double()(e)
    refs = {f"{a}-{b}": naive_clip(e[a], e[b], S) for a, b in itertools.combinations(e, 2)}
    assert set(out.parts) == set(refs)
    for k, v in refs.items():
        assert float(out.parts[k]) == pytest.approx(v, rel=1e-6)
    assert float(out.loss) == pytest.approx(np.mean(list(refs.values())), rel=1e-6)
    anc = get_loss("clip", anchor="labs").double()(e)
    assert set(anc.parts) == {"labs-histology", "labs-expression"}
    assert float(anc.parts["labs-histology"]) == pytest.approx(
        naive_clip(e["labs"], e["histology"], S), rel=1e-6
    )


@pytest.mark.slow  # importing open_clip takes ~10 s
def test_siglip_matches_loops_and_open_clip():
    e = _pair()
    loss = get_loss("siglip", logit_scale=7.0, logit_bias=-3.0).double()
    ref = naive_siglip(e["histology"], e["expression"], 7.0, -3.0)
    assert float(loss(e).loss) == pytest.approx(ref, rel=1e-6)
    open_clip_loss = pytest.importorskip("open_clip.loss")
    oc = open_clip_loss.SigLipLoss()(
        e["histology"], e["expression"], torch.tensor(7.0, dtype=torch.float64), -3.0
    )
    assert float(oc) == pytest.approx(ref, rel=1e-6)


@pytest.mark.slow
def test_clip_matches_open_clip():
    open_clip_loss = pytest.importorskip("open_clip.loss")
    e = _pair(n=32)
    loss = get_loss("clip", logit_scale=20.0).double()
    oc = open_clip_loss.ClipLoss()(e["histology"], e["expression"], loss.logit_scale.detach())
    assert float(loss(e).loss) == pytest.approx(float(oc), rel=1e-9)


def test_cwcl_matches_loops():
    e = _pair()
    ref = torch.randn(N, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    loss = get_loss("cwcl").double()
    expected = naive_cwcl(e["histology"], e["expression"], S, ref)
    assert float(loss(e, reference=ref).loss) == pytest.approx(expected, rel=1e-6)
    r = F.normalize(ref, dim=1)
    sim = r @ r.T
    assert float(loss(e, reference=sim).loss) == pytest.approx(expected, rel=1e-6)
    # identity-like reference (orthogonal rows) -> weights 1 on the diagonal, 1/2 elsewhere
    with pytest.raises(Exception, match="reference"):
        loss(e)


@pytest.mark.parametrize("m", [2, 3])
def test_symile_n_squared_matches_loops(m):
    e = dict(list(_three(n=4).items())[:m])
    loss = get_loss("symile", negative_sampling="n_squared", logit_scale=5.0).double()
    assert float(loss(e).loss) == pytest.approx(naive_symile_n2(list(e.values()), 5.0), rel=1e-6)


def test_symile_n_matches_loops():
    e = _three()
    e["labs2"] = _unit(N, D, 11)
    loss = get_loss("symile", logit_scale=5.0).double()
    out = loss(e, generator=torch.Generator().manual_seed(5))
    assert float(out.loss) == pytest.approx(naive_symile_n(list(e.values()), 5.0, 5), rel=1e-6)
    assert set(out.parts) == set(e)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_gram_matches_loops(k):
    e = {f"m{i}": _unit(N, D + 1, 20 + i) for i in range(k)}
    loss = get_loss("gram", logit_scale=3.0, eps=0.0).double()
    assert float(loss(e).loss) == pytest.approx(naive_gram(list(e.values()), 3.0), rel=1e-6)


def test_multiview_match_loops():
    e = _three()
    a = get_loss("mv_infonce", logit_scale=4.0).double()(e)
    assert float(a.loss) == pytest.approx(naive_mv_infonce(list(e.values()), 4.0), rel=1e-6)
    b = get_loss("mv_dhel", logit_scale=4.0).double()(e)
    assert float(b.loss) == pytest.approx(naive_mv_dhel(list(e.values()), 4.0), rel=1e-6)


def test_softclip_matches_loops():
    e = _pair()
    loss = get_loss("softclip", target_logit_scale=3.0).double()
    assert float(loss(e).loss) == pytest.approx(
        naive_softclip(e["histology"], e["expression"], S, 3.0), rel=1e-6
    )
    # reference= replaces the target self-similarity
    r = e["expression"] * 1.0
    assert float(loss(e, reference=r, reference_kind="embedding").loss) == pytest.approx(float(loss(e).loss))


def test_bimixco_matches_loops_and_reduces_to_clip():
    e = _pair()
    perm = torch.tensor([1, 0, 3, 2, 5, 4])
    lam = torch.tensor([0.3, 1.0, 0.6, 0.9, 0.5, 0.2], dtype=torch.float64)
    loss = get_loss("bimixco").double()
    ref = naive_bimixco(e["histology"], e["expression"], S, perm.tolist(), lam.tolist())
    assert float(loss(e, mix_perm=perm, mix_lambda=lam).loss) == pytest.approx(ref, rel=1e-6)
    assert float(loss(e).loss) == pytest.approx(naive_clip(e["histology"], e["expression"], S), rel=1e-6)


def test_clip_uniformity_matches_loops():
    e = _pair()
    loss = get_loss("clip_uniformity").double()
    out = loss(e)
    assert float(out.loss) == pytest.approx(
        naive_clip_uniformity(e["histology"], e["expression"], S), rel=1e-6
    )
    assert {"clip", "align", "uniform", "cross_uniform"} <= set(out.parts)
    w = get_loss("clip_uniformity", align_weight=0.0, uniform_weight=0.0, cross_uniform_weight=0.0).double()
    assert float(w(e).loss) == pytest.approx(naive_clip(e["histology"], e["expression"], S), rel=1e-6)
