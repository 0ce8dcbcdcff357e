"""The classification protocol: metrics against sklearn, no peeking, fusion predictions, baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from biomodal.errors import ConfigError
from biomodal.eval.protocols import EvalContext, get_protocol
from biomodal.eval.protocols.classification import classification_scores, probe_proba


def test_scores_match_sklearn_binary_and_multiclass():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    p1 = np.clip(0.6 * y + 0.4 * rng.random(40), 0, 1)
    proba = np.column_stack([1 - p1, p1])
    s = classification_scores(y, proba, 2)
    assert s["accuracy"] == pytest.approx(accuracy_score(y, proba.argmax(1)))
    assert s["f1"] == pytest.approx(f1_score(y, proba.argmax(1)))
    assert s["auroc"] == pytest.approx(roc_auc_score(y, p1))
    s0 = classification_scores(y, proba, 2, positive=0)  # the other class as positive
    assert s0["f1"] == pytest.approx(f1_score(y, proba.argmax(1), pos_label=0))
    y3 = rng.integers(0, 3, 60)
    p3 = rng.dirichlet(np.ones(3), 60) + np.eye(3)[y3] * 0.5
    p3 /= p3.sum(1, keepdims=True)
    m = classification_scores(y3, p3, 3)
    assert m["f1"] == m["f1_weighted"] == pytest.approx(f1_score(y3, p3.argmax(1), average="weighted"))
    assert m["f1_macro"] == pytest.approx(f1_score(y3, p3.argmax(1), average="macro"))
    assert m["auroc"] == pytest.approx(roc_auc_score(y3, p3, multi_class="ovr", average="macro"))
    with pytest.warns(UserWarning, match="single label"):  # sklearn on a one-class test set
        assert np.isnan(classification_scores(np.zeros(5, int), np.full((5, 2), 0.5), 2)["auroc"])


def test_probe_is_fitted_on_training_items_only():
    rng = np.random.default_rng(1)
    xtr, ytr = rng.normal(size=(60, 5)), rng.integers(0, 2, 60)
    xtr[:, 0] += 2 * ytr
    xte = rng.normal(size=(20, 5))
    a = probe_proba(xtr, ytr, xte, 2, C="cv")
    b = probe_proba(xtr, ytr, np.concatenate([xte, 100 + rng.normal(size=(30, 5))]), 2, C="cv")
    np.testing.assert_allclose(a, b[:20], rtol=1e-10)  # extra (even absurd) test rows change nothing
    c = probe_proba(xtr, ytr, xte, 3, C=1.0)  # a class absent from training gets probability 0
    assert c.shape == (20, 3) and np.all(c[:, 2] == 0)


def _context(with_fusion=True):
    rng = np.random.default_rng(2)
    n = {"train": 80, "test": 40}
    y = {s: rng.integers(0, 2, k) for s, k in n.items()}
    cats = ["control", "AD"]  # code order: AD (code 1) is the positive class though it sorts first
    obs = {s: pd.DataFrame({"label": pd.Categorical(np.array(cats)[y[s]], categories=cats)}) for s in n}
    obs["test"].loc[0, "label"] = None  # an unlabelled held-out item is left out
    emb = {s: {"mrna": rng.normal(size=(k, 6)) + 1.5 * y[s][:, None], "mirna": rng.normal(size=(k, 6))}
           for s, k in n.items()}  # fmt: skip
    emb["test"]["mirna"][3] = np.nan  # an item lacking miRNA
    raw = {
        s: {"mrna": rng.normal(size=(k, 9)) + y[s][:, None], "mirna": rng.normal(size=(k, 4))}
        for s, k in n.items()
    }
    feats = {"raw": lambda s, m: raw[s][m]}
    if with_fusion:
        p1 = np.where(y["test"] == 1, 0.9, 0.2)
        feats["predictions"] = lambda s, m: np.column_stack([1 - p1, p1])
    return EvalContext(split="test", embeddings=emb, obs=obs, modalities=("mrna", "mirna"), features=feats,
                       label_keys=["label"]), y  # fmt: skip


def test_protocol_headline_comes_from_the_fusion_classifier_when_supplied():
    info = get_protocol("classification")
    ctx, y = _context()
    m = info.fn(ctx, info.parse({"C": 1.0})).metrics  # C by CV is tested above
    assert m["source"] == "fusion" and m["classes"] == ["control", "AD"] and m["positive"] == "AD"
    assert m["n_test"] == 39 and m["n_dropped"] == 1 and m["n_train"] == 80
    yt = y["test"][1:]
    assert m["accuracy"] == 1.0 and m["auroc"] == 1.0 == m["methods"]["fusion"]["auroc"]
    assert m["f1"] == pytest.approx(f1_score(yt, yt))
    assert set(m["methods"]) == {"probe", "probe_mrna", "probe_mirna", "fusion", "raw_concat", "raw_mrna",
                                 "raw_mirna"}  # fmt: skip
    assert m["methods"]["probe_mrna"]["auroc"] > 0.85 > m["methods"]["probe_mirna"]["auroc"]
    assert m["methods"]["raw_mrna"]["auroc"] > 0.75
    assert 0.3 < m["chance_majority"] < 0.7
    md = "\n".join(info.markdown(m))
    assert "fusion (headline)" in md and "raw_concat" in md
    cols = [c for c, _ in info.headline(info.parse({}), {"classification": m})]
    assert "classification.auroc" in cols and "classification.methods.raw_concat.auroc" in cols


def test_protocol_without_model_predictions_uses_the_probe_and_reports_errors():
    info = get_protocol("classification")
    ctx, _ = _context(with_fusion=False)
    m = info.fn(ctx, info.parse({"modalities": ["mrna"], "C": 0.5, "baselines": ["raw", "missing"]})).metrics
    assert m["source"] == "probe" and m["accuracy"] == m["methods"]["probe"]["accuracy"]
    assert set(m["methods"]) == {
        "probe",
        "raw_concat",
    }  # one modality: no per-modality rows; 'missing' skipped
    with pytest.raises(ConfigError, match="label column 'stage'"):
        info.fn(ctx, info.parse({"label": "stage"}))
    with pytest.raises(ConfigError, match="positive 'MCI'"):
        info.fn(ctx, info.parse({"positive": "MCI"}))
    with pytest.raises(ConfigError, match="not in the model"):
        info.fn(ctx, info.parse({"modalities": ["xray"]}))
    with pytest.raises(ValueError, match="C"):
        info.parse({"C": "auto"})
