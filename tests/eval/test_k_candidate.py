"""k_candidate: scores and accuracy against known answers, ties, the protocol and its config."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from biomodal.errors import ConfigError, DataError
from biomodal.eval.k_candidate import candidate_scores, k_candidate_accuracy
from biomodal.eval.protocols import EvalContext, get_protocol


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_scores_known_answers():
    q1 = np.array([[1.0, 2.0, 0.0]])
    q2 = np.array([[0.0, 1.0, 3.0]])
    cand = np.array([[[1.0, 1.0, 1.0], [2.0, 0.0, -1.0]]])
    mip = candidate_scores([q1, q2], cand, "mip")
    assert np.allclose(mip, [[2.0, 0.0]])  # sum(q1*q2*c): (0, 2, 0).c
    pw = candidate_scores([q1, q2], cand, "pairwise")
    # c.q1 + c.q2 + q1.q2 = (3 + 4) + 2, (2 + -3) + 2
    assert np.allclose(pw, [[9.0, 1.0]])
    # gram with unit vectors: identical vectors span zero volume, orthonormal ones volume 1
    e = np.eye(3)
    g = candidate_scores([e[:1], e[1:2]], np.stack([e[2], e[0]])[None], "gram")
    assert np.allclose(g, [[-1.0, 0.0]], atol=1e-9)
    # shared candidates (k, d) broadcast to every item
    assert np.allclose(candidate_scores([q1, q2], cand[0], "mip"), mip)
    with pytest.raises(ConfigError):
        candidate_scores([q1], cand, "cosine")


def test_perfect_and_adversarial_embeddings():
    rng = np.random.default_rng(0)
    n, d = 200, 16
    a = _unit(rng.normal(size=(n, d)))
    emb = {"x": a, "y": a.copy(), "z": a.copy()}
    res = k_candidate_accuracy(emb, "z", k=8, draws=3, score="pairwise")
    assert res["accuracy"] == pytest.approx(1.0)
    assert res["chance"] == pytest.approx(1 / 8)
    assert (res["n"], res["k"], res["given"]) == (n, 8, ["x", "y"])
    # the held-out modality anti-aligned: the true candidate always scores lowest
    bad = {"x": a, "z": -a}
    assert k_candidate_accuracy(bad, "z", k=5, score="pairwise")["accuracy"] == pytest.approx(0.0)


def test_random_embeddings_score_chance():
    rng = np.random.default_rng(1)
    emb = {m: _unit(rng.normal(size=(3000, 8))) for m in "abc"}
    for score in ("mip", "pairwise", "gram"):
        res = k_candidate_accuracy(emb, "c", k=4, draws=2, score=score, seed=3)
        assert abs(res["accuracy"] - 0.25) < 0.03, (score, res["accuracy"])


def test_xor_structure_only_the_mip_sees_it():
    # a, b random signs; c = a * b per dimension (XOR of bits in the +-1 coding): every pair
    # is independent, so pairwise similarities carry nothing while the MIP picks c exactly
    rng = np.random.default_rng(2)
    a = rng.choice([-1.0, 1.0], size=(1000, 12))
    b = rng.choice([-1.0, 1.0], size=(1000, 12))
    emb = {"a": _unit(a), "b": _unit(b), "c": _unit(a * b)}
    mip = k_candidate_accuracy(emb, "c", k=10, draws=2, score="mip")
    pw = k_candidate_accuracy(emb, "c", k=10, draws=2, score="pairwise")
    assert mip["accuracy"] > 0.99
    assert abs(pw["accuracy"] - 0.1) < 0.03


def test_ties_count_fractionally_and_set_the_ceiling():
    # two distinct held-out vectors only: with k = 2 a random other item is identical half the time
    rng = np.random.default_rng(4)
    bits = rng.integers(0, 2, 4000)
    v = np.where(bits[:, None] == 1, 1.0, -1.0) * np.ones((1, 4)) / 2.0
    emb = {"a": v, "c": v.copy()}
    res = k_candidate_accuracy(emb, "c", k=2, draws=2, score="mip")
    # identical candidate half the time (credit 1/2), a different one otherwise (credit 1)
    assert res["ceiling"] == pytest.approx(0.75, abs=0.02)
    assert res["accuracy"] == pytest.approx(res["ceiling"], abs=1e-9)


def test_missing_rows_left_out_and_errors():
    rng = np.random.default_rng(5)
    a = _unit(rng.normal(size=(30, 4)))
    c = a.copy()
    c[:5] = np.nan
    res = k_candidate_accuracy({"a": a, "c": c}, "c", k=3, score="pairwise")
    assert res["n"] == 25 and res["accuracy"] == pytest.approx(1.0)
    with pytest.raises(DataError, match="fewer than k"):
        k_candidate_accuracy({"a": a, "c": c}, "c", k=26)
    with pytest.raises(ConfigError):
        k_candidate_accuracy({"a": a}, "a")
    with pytest.raises(ConfigError):
        k_candidate_accuracy({"a": a, "c": c}, "b")
    sub = k_candidate_accuracy({"a": a, "c": a}, "c", k=3, max_items=7, score="mip")
    assert sub["n"] == 7


def _ctx(emb, loss=None):
    n = len(next(iter(emb.values())))
    ctx = EvalContext(
        split="test",
        embeddings={"test": emb, "train": emb},
        obs={"test": pd.DataFrame(index=range(n)), "train": pd.DataFrame(index=range(n))},
        modalities=tuple(emb),
    )
    if loss is not None:
        ctx.loss = loss
    return ctx


def test_protocol_targets_score_auto_and_markdown():
    info = get_protocol("k_candidate")
    rng = np.random.default_rng(6)
    a = rng.choice([-1.0, 1.0], size=(400, 16))
    b = rng.choice([-1.0, 1.0], size=(400, 16))
    emb = {"ecg": _unit(a), "labs": _unit(b), "text": _unit(a * b)}
    cfg = info.parse({"targets": ["text"], "k": 5, "draws": 2})
    with pytest.raises(ConfigError, match="score"):
        info.fn(_ctx(emb), cfg)
    sym = info.fn(_ctx(emb, loss="symile"), cfg).metrics["text"]
    clip = info.fn(_ctx(emb, loss="clip"), cfg).metrics["text"]
    assert sym["score"] == "mip" and sym["accuracy"] > 0.99
    assert clip["score"] == "pairwise" and abs(clip["accuracy"] - 0.2) < 0.06
    every = info.fn(_ctx(emb), info.parse({"score": "mip", "k": 3})).metrics
    assert sorted(every) == ["ecg", "labs", "text"]  # each modality held out in turn
    assert all(r["accuracy"] > 0.99 for r in every.values())  # a * b * c is symmetric
    assert "pick one of k" in info.markdown(every)[0]
    val = info.validate(_ctx(emb), info.parse({"score": "mip", "k": 3}))
    assert val["val/k_candidate_accuracy"] > 0.99
    assert info.monitor_for(cfg) == "val/k_candidate_accuracy"


def test_protocol_config_validation():
    info = get_protocol("k_candidate")
    with pytest.raises(ValidationError):
        info.parse({"k": 1})
    with pytest.raises(ValidationError):
        info.parse({"score": "cosine"})
    with pytest.raises(ValidationError):
        info.parse({"kk": 3})
    emb = {"ecg": np.eye(4), "text": np.eye(4)}
    with pytest.raises(ConfigError, match="not in the model"):
        info.fn(_ctx(emb), info.parse({"targets": ["xray"], "score": "mip"}))


def test_score_follows_the_loss():
    from biomodal.eval.protocols.k_candidate import score_for_loss

    assert [score_for_loss(n) for n in ("symile", "gram", "clip", "siglip")] == [
        "mip",
        "gram",
        "pairwise",
        "pairwise",
    ]
    with pytest.raises(ConfigError, match=r"params\.score"):
        score_for_loss(None)


def test_validation_with_fewer_complete_items_than_k_caps_k():
    info = get_protocol("k_candidate")
    rng = np.random.default_rng(2)
    a = _unit(rng.normal(size=(16, 8)))
    b = a.copy()
    b[6:] = np.nan  # only six items have both modalities
    cfg = info.parse({"score": "pairwise", "k": 10})
    with pytest.raises(DataError, match="fewer than k=10"):
        info.fn(_ctx({"x": a, "y": b}), cfg)
    val = info.validate(_ctx({"x": a, "y": b}), cfg)
    assert val["val/k_candidate_accuracy"] == pytest.approx(1.0)  # identical pairs: always found
