"""linear_probe(): metrics checked against hand-computed values on data with known outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from biomodal.errors import DataError
from biomodal.eval import linear_probe


def _blobs(n_per, centres, seed, spread=0.3):
    rng = np.random.default_rng(seed)
    X = np.vstack([c + spread * rng.normal(size=(n_per, len(c))) for c in centres])
    y = np.repeat(np.arange(len(centres)), n_per)
    return X, y


def test_known_confusion_gives_hand_computed_metrics():
    # 1-D feature: class 1 iff x > 0, learned from clean training data. The test set holds
    # points far from the boundary, some deliberately mislabelled, so predictions are known.
    rng = np.random.default_rng(0)
    Xtr = np.concatenate([rng.uniform(-3, -1, 200), rng.uniform(1, 3, 100)])[:, None]
    ytr = np.array(["a"] * 200 + ["b"] * 100)
    x_te = np.array([-2.0] * 8 + [2.0] * 2 + [2.0] * 3 + [-2.0] * 1)  # first 10 true "a", last 4 true "b"
    y_te = np.array(["a"] * 10 + ["b"] * 4)
    out = linear_probe(Xtr, ytr, x_te[:, None], y_te)
    # predictions: a a a a a a a a b b | b b b a
    assert out["accuracy"] == pytest.approx(11 / 14)
    assert out["balanced_accuracy"] == pytest.approx((8 / 10 + 3 / 4) / 2)
    f1_a = 2 * 8 / (2 * 8 + 2 + 1)  # tp=8, fn=2, fp=1
    f1_b = 2 * 3 / (2 * 3 + 1 + 2)  # tp=3, fn=1, fp=2
    assert out["macro_f1"] == pytest.approx((f1_a + f1_b) / 2)
    # AUROC of a monotone score in x: pairs (b, a) with x_b > x_a, ties count half.
    pos, neg = x_te[y_te == "b"], x_te[y_te == "a"]
    auc = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert out["macro_auroc"] == pytest.approx(auc)
    assert out["chance_majority"] == pytest.approx(10 / 14)  # "a" is the training majority
    assert out["chance_uniform"] == 0.5
    assert out["classes"] == ["a", "b"] and out["n_train"] == 300 and out["n_test"] == 14


def test_separable_multiclass_and_scale_invariance():
    centres = [np.array(c, float) for c in ([0, 0, 3], [3, 0, 0], [0, 3, 0], [3, 3, 3])]
    Xtr, ytr = _blobs(40, centres, seed=1)
    Xte, yte = _blobs(25, centres, seed=2)
    out = linear_probe(Xtr, ytr, Xte, yte)
    assert out["accuracy"] == 1.0 and out["macro_auroc"] == 1.0 and out["n_auroc_classes"] == 4
    assert out["chance_uniform"] == 0.25
    scaled = linear_probe(Xtr * 1e4, ytr, Xte * 1e4, yte)  # standardisation fitted on train
    assert scaled["accuracy"] == 1.0


def test_random_labels_score_near_chance():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(1200, 16)), rng.integers(0, 3, size=1200)
    out = linear_probe(X[:600], y[:600], X[600:], y[600:])
    assert abs(out["balanced_accuracy"] - 1 / 3) < 0.08
    assert abs(out["macro_auroc"] - 0.5) < 0.08


def test_unseen_labels_error_or_drop():
    centres = [np.zeros(2), np.full(2, 4.0)]
    Xtr, ytr = _blobs(30, centres, seed=4)
    Xte, yte = _blobs(10, [*centres, np.array([8.0, 0.0])], seed=5)
    with pytest.raises(DataError, match=r"never seen in training: \['2'\]"):
        linear_probe(Xtr, ytr, Xte, yte)
    out = linear_probe(Xtr, ytr, Xte, yte, unseen="drop")
    assert out["n_dropped_unseen"] == 10 and out["n_test"] == 20 and out["accuracy"] == 1.0


def test_degenerate_inputs():
    X = np.random.default_rng(6).normal(size=(10, 3))
    with pytest.raises(DataError, match="single class"):
        linear_probe(X, np.zeros(10), X, np.zeros(10))
    with pytest.raises(DataError, match="features"):
        linear_probe(X, np.arange(10) % 2, X[:, :2], np.arange(10) % 2)
    one_class_test = linear_probe(X, np.arange(10) % 2, X[:4], np.zeros(4))
    assert np.isnan(one_class_test["macro_auroc"])
