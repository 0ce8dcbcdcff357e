"""Full-set retrieval against a naive full-matrix reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biomodal.errors import ConfigError, DataError
from biomodal.eval import retrieval, retrieval_ranks
from biomodal.eval._retrieval import topk_neighbours


def _reference_ranks(q, g, ties, groups=None):
    """Naive O(N^2) ranks in float64, written independently of the library."""
    q, g = np.asarray(q, np.float64), np.asarray(g, np.float64)
    n = len(q)
    ranks = np.zeros(n)
    for i in range(n):
        cand = np.arange(n) if groups is None else np.flatnonzero(groups == groups[i])
        cand = cand[cand != i]
        s = g[cand] @ q[i]
        t = g[i] @ q[i]
        higher, tied = np.sum(s > t), np.sum(s == t)
        ranks[i] = 1 + higher + {"pessimistic": tied, "optimistic": 0, "average": tied / 2}[ties]
    return ranks


def _integer_pairs(n, d, seed):
    # Small integers: every dot product is exact in float32, and ties are frequent.
    rng = np.random.default_rng(seed)
    q = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
    g = q + rng.integers(-1, 2, size=(n, d)).astype(np.float32)
    return q, g


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic", "average"])
@pytest.mark.parametrize("chunk", [7, 64, 4096])
def test_ranks_match_naive_reference_with_ties(ties, chunk):
    q, g = _integer_pairs(150, 4, seed=1)
    ref = _reference_ranks(q, g, ties)
    got = retrieval_ranks(q, g, chunk_size=chunk, ties=ties, tie_tol=1e-3)
    assert (ref != np.round(ref)).any() or ties != "average"  # the data really has ties
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_ranks_with_groups_match_reference(ties):
    q, g = _integer_pairs(200, 5, seed=2)
    groups = np.random.default_rng(3).choice(np.array(["s1", "s2", "s3", "s4"]), size=200)
    ref = _reference_ranks(q, g, ties, groups=groups)
    got = retrieval_ranks(q, g, chunk_size=16, ties=ties, query_groups=groups, tie_tol=1e-3)
    np.testing.assert_array_equal(got, ref)
    # Within-group ranks can only improve on whole-set ranks.
    assert (got <= retrieval_ranks(q, g, ties=ties, tie_tol=1e-3)).all()


def test_metrics_match_reference_on_continuous_data():
    rng = np.random.default_rng(4)
    q = _unit(rng.normal(size=(400, 32)))
    g = _unit(q + 0.8 * rng.normal(size=q.shape))
    ref = _reference_ranks(q, g, "pessimistic")
    out = retrieval(q, g, ks=(1, 5, 10), chunk_size=50)
    assert np.sum(retrieval_ranks(q, g, chunk_size=50) != ref) <= 1  # float32 vs float64 rounding
    for k in (1, 5, 10):
        assert out[f"recall@{k}"] == pytest.approx(np.mean(ref <= k), abs=1 / 400)
        assert out[f"chance@{k}"] == pytest.approx(k / 400)
    assert out["median_rank"] == pytest.approx(np.median(ref), abs=1)
    assert out["mean_rank"] == pytest.approx(ref.mean(), rel=1e-3)
    assert out["mrr"] == pytest.approx(np.mean(1 / ref), rel=1e-3)
    assert out["chance_mrr"] == pytest.approx(np.sum(1 / np.arange(1, 401)) / 400)
    assert out["n"] == 400
    assert out["recall@10"] > 5 * out["chance@10"]


def test_chance_with_groups_is_per_query_average():
    q, g = _integer_pairs(60, 3, seed=5)
    groups = np.array([0] * 5 + [1] * 15 + [2] * 40)
    out = retrieval(q, g, ks=(10,), query_groups=groups)
    expected = (5 * 1.0 + 15 * (10 / 15) + 40 * (10 / 40)) / 60
    assert out["chance@10"] == pytest.approx(expected)
    assert out["n_candidates_mean"] == pytest.approx((5 * 5 + 15 * 15 + 40 * 40) / 60)


def test_shuffled_pairs_score_at_chance():
    rng = np.random.default_rng(6)
    n = 2000
    q = _unit(rng.normal(size=(n, 32)))
    g = _unit(q + 0.3 * rng.normal(size=q.shape))
    paired = retrieval(q, g, ks=(10,), chunk_size=512)
    shuffled = retrieval(q, g[rng.permutation(n)], ks=(10,), chunk_size=512)
    assert paired["recall@10"] > 0.5
    chance = shuffled["chance@10"]
    assert abs(shuffled["recall@10"] - chance) < 5 * np.sqrt(chance * (1 - chance) / n)
    assert shuffled["mean_rank"] == pytest.approx((n + 1) / 2, rel=0.05)


def test_collapsed_model_is_not_rewarded():
    x = np.ones((50, 8), np.float32) / np.sqrt(8)
    assert retrieval(x, x, ks=(1,))["recall@1"] == 0.0  # pessimistic default
    assert retrieval(x, x, ks=(1,), ties="optimistic")["recall@1"] == 1.0
    np.testing.assert_array_equal(retrieval_ranks(x, x, ties="average"), np.full(50, 25.5))


def test_torch_input_and_normalize():
    rng = np.random.default_rng(7)
    q = rng.normal(size=(100, 16)).astype(np.float32)
    g = q + 0.5 * rng.normal(size=q.shape).astype(np.float32)
    a = retrieval_ranks(_unit(q), _unit(g))
    b = retrieval_ranks(torch.from_numpy(q), torch.from_numpy(g), normalize=True)
    assert np.sum(a != b) <= 1
    assert a.dtype == np.int64


def test_bad_inputs_raise_clear_errors():
    x = np.zeros((5, 4), np.float32)
    with pytest.raises(DataError, match="paired"):
        retrieval(x, np.zeros((6, 4)))
    with pytest.raises(DataError, match="NaN"):
        retrieval(np.full((5, 4), np.nan), x)
    with pytest.raises(DataError, match="group"):
        retrieval(x, x, query_groups=[0, 0, 1, 1, 1], gallery_groups=[0, 1, 1, 1, 1])
    with pytest.raises(DataError, match=r"\(5,\)"):
        retrieval(x, x, query_groups=[0, 1])
    with pytest.raises(ConfigError, match="ties"):
        retrieval(x, x, ties="random")
    with pytest.raises(ConfigError, match="ks"):
        retrieval(x, x, ks=(0,))


def test_topk_neighbours_matches_argsort():
    rng = np.random.default_rng(8)
    q, k = rng.normal(size=(70, 8)), rng.normal(size=(230, 8))
    idx, sim = topk_neighbours(q, k, 12, chunk_size=16)
    ref = np.argsort(-(q @ k.T), axis=1)[:, :12]
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(sim, np.take_along_axis(q @ k.T, ref, axis=1), rtol=1e-5, atol=1e-5)
    idx_all, _ = topk_neighbours(q, k[:5], 50)
    assert idx_all.shape == (70, 5)


def test_package_functions_are_functions():
    # the implementing submodules are private, so the public names stay functions
    import biomodal.eval

    x = np.eye(3, dtype=np.float32)
    assert biomodal.eval.retrieval(x, x, ks=(1,))["recall@1"] == 1.0
    assert callable(biomodal.eval.embed) and not isinstance(biomodal.eval.embed, type(np))
