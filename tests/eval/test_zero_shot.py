"""zero_shot and multilabel_probe: prompt ensembles, AUROC per class and macro, known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from biomodal.errors import ConfigError, DataError
from biomodal.eval.multilabel import as_indicator, macro_auroc, multilabel_probe
from biomodal.eval.protocols import EvalContext, Target, get_protocol
from biomodal.eval.zero_shot import class_embeddings, zero_shot_evaluate, zero_shot_scores


def test_prompt_ensemble_is_mean_of_unit_vectors():
    cls = class_embeddings([np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([0.0, -3.0])])
    s = np.sqrt(0.5)
    assert np.allclose(cls, [[s, s], [0.0, -1.0]])
    scores = zero_shot_scores(
        np.array([[1.0, 1.0], [0.0, 2.0]]), [np.array([[2.0, 0.0], [0.0, 1.0]]), [[0.0, -3.0]]]
    )
    assert np.allclose(scores, [[1.0, -s], [s, -1.0]])
    with pytest.raises(DataError):
        zero_shot_scores(np.ones((2, 3)), [np.ones((1, 2))])


def test_macro_auroc_known_answers():
    y = np.array([[0, 1], [0, 0], [1, 1], [1, 0]])
    s = np.array([[0.1, 0.9], [0.4, 0.2], [0.35, 0.1], [0.8, 0.3]])
    r = macro_auroc(y, s, ["A", "B"])
    assert r["per_class"]["A"] == pytest.approx(0.75)  # pairs (0.35|0.8 vs 0.1|0.4): 3 of 4
    assert r["per_class"]["B"] == pytest.approx(0.5)  # 0.9 > 0.2, 0.3; 0.1 < both
    assert r["macro_auroc"] == pytest.approx(0.625)
    assert r["prevalence"] == {"A": 0.5, "B": 0.5} and r["chance"] == 0.5
    # a class without positives has no AUROC and is left out of the macro average
    y2 = np.array([[0, 1, 0], [0, 0, 0], [1, 1, 0], [1, 0, 0]])
    r2 = macro_auroc(y2, np.c_[s, np.arange(4)])
    assert np.isnan(r2["per_class"]["2"]) and r2["n_classes_scored"] == 2
    assert r2["macro_auroc"] == pytest.approx(0.625)
    # single-label codes are one vs rest
    codes = np.array([0, 1, 2, 2])
    assert np.array_equal(as_indicator(codes, 3), np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]]))
    assert macro_auroc(codes, np.eye(3)[codes])["macro_auroc"] == pytest.approx(1.0)


def _items(rng, y, d=6, noise=0.3):
    return (np.asarray(y, float) @ np.eye(y.shape[1], d)) + noise * rng.normal(size=(len(y), d))


def test_zero_shot_multilabel_and_single_label():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 3)) < 0.4).astype(int)
    x = _items(rng, y)
    prompts = {c: np.eye(6)[[j]] + 0.05 * rng.normal(size=(3, 6)) for j, c in enumerate("ABC")}
    r = zero_shot_evaluate(x, prompts, y)
    assert r["multilabel"] and r["macro_auroc"] > 0.9
    wrong = {"A": prompts["B"], "B": prompts["C"], "C": prompts["A"]}  # prompts swapped: no signal
    assert abs(zero_shot_evaluate(x, wrong, y)["macro_auroc"] - 0.5) < 0.1
    codes = rng.integers(0, 3, 300)
    codes[:10] = -1  # unlabelled rows are left out
    xs = _items(rng, np.eye(3)[np.maximum(codes, 0)])
    xs[10] = np.nan
    r1 = zero_shot_evaluate(xs, prompts, codes)
    assert not r1["multilabel"] and r1["n"] == 289 and r1["n_left_out"] == 11
    assert r1["accuracy"] > 0.9 and r1["chance_accuracy"] == pytest.approx(1 / 3)


def _ctx(emb_test, emb_train, obs_test, targets=None, features=None):
    return EvalContext(
        split="test",
        embeddings={"test": emb_test, "train": emb_train},
        obs={"test": obs_test, "train": pd.DataFrame(index=range(len(next(iter(emb_train.values())))))},
        modalities=tuple(emb_test),
        targets=targets or {},
        features=features or {},
    )


def test_zero_shot_protocol_with_encode():
    rng = np.random.default_rng(1)
    y = (rng.random((200, 2)) < 0.5).astype(int)
    ecg = _items(rng, y, d=4)
    vocab = {"normal ecg": [1, 0, 0, 0], "a normal tracing": [0.9, 0.1, 0, 0], "infarction": [0, 1, 0, 0]}
    ctx = _ctx(
        {"ecg": ecg, "report": np.zeros((200, 4))},
        {"ecg": ecg, "report": np.zeros((200, 4))},
        pd.DataFrame({"rhythm": np.where(y[:, 0] == 1, "NORM", "MI")}),
        targets={"superclass": Target(values={"test": y, "train": y}, names=["NORM", "MI"])},
    )
    info = get_protocol("zero_shot")
    cfg = info.parse(
        {
            "prompts": {"NORM": ["normal ecg", "a normal tracing"], "MI": ["infarction"]},
            "target": "superclass",
        }
    )
    with pytest.raises(ConfigError, match="encode"):
        info.fn(ctx, cfg)
    calls = []

    def encode(modality, texts):
        calls.append((modality, list(texts)))
        return np.array([vocab[t] for t in texts], float)

    ctx.encode = encode
    m = info.fn(ctx, cfg).metrics
    assert calls[0] == ("report", ["normal ecg", "a normal tracing"])
    assert m["modality"] == "ecg" and m["text_modality"] == "report"
    assert m["macro_auroc"] > 0.9 and set(m["per_class"]) == {"NORM", "MI"}
    single = info.fn(
        ctx, info.parse({"prompts": cfg.prompts, "label": "rhythm", "text_from_labels": True})
    ).metrics
    assert single["accuracy"] > 0.6 and "not zero-shot" in single["note"]
    assert "macro AUROC" in info.markdown(m)[0]
    with pytest.raises(ConfigError, match="not columns"):
        info.fn(
            ctx,
            info.parse({"prompts": {"NORM": ["normal ecg"], "HYP": ["infarction"]}, "target": "superclass"}),
        )
    with pytest.raises(ValidationError):
        info.parse({"prompts": {"NORM": ["x"]}})  # one class only
    with pytest.raises(ValidationError):
        info.parse({"prompts": {"NORM": ["x"], "MI": []}})


def test_multilabel_probe_array_and_protocol():
    rng = np.random.default_rng(2)
    ytr = (rng.random((400, 3)) < 0.3).astype(int)
    yte = (rng.random((200, 3)) < 0.3).astype(int)
    xtr, xte = _items(rng, ytr, noise=0.5), _items(rng, yte, noise=0.5)
    r = multilabel_probe(xtr, ytr, xte, yte, names=["A", "B", "C"])
    assert r["macro_auroc"] > 0.9 and r["n_train"] == 400
    noise = multilabel_probe(rng.normal(size=(400, 6)), ytr, rng.normal(size=(200, 6)), yte)
    assert abs(noise["macro_auroc"] - 0.5) < 0.1
    info = get_protocol("multilabel_probe")
    assert info.section == "probe" and info.needs_untrained
    feats = {
        "untrained": lambda s, m: rng.normal(size=(400 if s == "train" else 200, 6)),
        "handmade": lambda s, m: xtr if s == "train" else xte,
    }
    ctx = _ctx({"ecg": xte}, {"ecg": xtr}, pd.DataFrame(index=range(200)),
               targets={"superclass": Target(values={"train": ytr, "test": yte}, names=["A", "B", "C"])},
               features=feats)  # fmt: skip
    m = info.fn(ctx, info.parse({"target": "superclass", "features": "handmade"})).metrics["superclass"]
    assert m["macro_auroc"] > 0.9
    assert abs(m["untrained_macro_auroc"] - 0.5) < 0.1
    assert m["features_macro_auroc"] == pytest.approx(m["macro_auroc"])
    assert "macro AUROC" in "\n".join(info.markdown({"superclass": m}))
    with pytest.raises(ConfigError, match="no target"):
        info.fn(ctx, info.parse({"target": "nope"}))


def test_negative_prompts_rescue_a_text_tower_that_ignores_negation():
    rng = np.random.default_rng(3)
    y = (rng.random((300, 1)) < 0.4).astype(int)
    # items with the finding lean towards axis 1, those without towards axis 2; both share axis 0
    x = np.c_[np.ones(300), y[:, 0], 1 - y[:, 0]] + 0.2 * rng.normal(size=(300, 3))
    pos = np.array([[1.0, 0.05, 0.0]])  # "effusion": nearly the shared direction
    neg = np.array([[1.0, 0.0, 0.05]])  # "no effusion": nearly the same embedding
    y2 = np.c_[y, 1 - y]
    other = {"B": np.array([[0.0, 0.0, 1.0]])}
    plain = zero_shot_evaluate(x, {"A": pos, **other}, y2)["per_class"]["A"]
    paired = zero_shot_evaluate(x, {"A": pos, **other}, y2, negative_embeddings={"A": neg})["per_class"]["A"]
    assert paired > 0.95 and paired > plain
    with pytest.raises(DataError, match="'Z'"):
        zero_shot_evaluate(x, {"A": pos, **other}, y2, negative_embeddings={"Z": neg})


def test_zero_shot_by_modality_scores_each_class_on_its_modality():
    rng = np.random.default_rng(2)
    y = (rng.random((200, 2)) < 0.5).astype(int)
    xray = _items(rng, y[:, [0, 0]], d=4)  # shows class A only
    ecg = _items(rng, y[:, [1, 1]], d=4)[:, ::-1].copy()  # shows class B only, on other axes
    xray[:10] = np.nan  # patients without an X-ray are left out of A's AUROC
    vocab = {"a": [1, 1, 0, 0], "b": [0, 0, 1, 1]}
    ctx = _ctx({"xray": xray, "ecg": ecg, "report": np.zeros((200, 4))},
               {"xray": xray, "ecg": ecg, "report": np.zeros((200, 4))}, pd.DataFrame(index=range(200)),
               targets={"c": Target(values={"test": y, "train": y}, names=["A", "B"])})  # fmt: skip
    ctx.encode = lambda m, texts: np.array([vocab[t] for t in texts], float)
    info = get_protocol("zero_shot")
    cfg = info.parse({"prompts": {"A": ["a"], "B": ["b"]}, "target": "c", "text_modality": "report",
                      "by_modality": {"xray": ["A"], "ecg": ["B"]}})  # fmt: skip
    m = info.fn(ctx, cfg).metrics
    assert m["class_modality"] == {"A": "xray", "B": "ecg"} and m["modality"] == "xray+ecg"
    assert m["per_class"]["A"] > 0.9 and m["per_class"]["B"] > 0.9
    assert m["by_modality"]["xray"]["n"] == 190 and m["by_modality"]["ecg"]["n"] == 200
    one = info.fn(ctx, info.parse({"prompts": {"A": ["a"], "B": ["b"]}, "target": "c", "modality": "xray",
                                   "text_modality": "report"})).metrics  # fmt: skip
    assert one["per_class"]["B"] < 0.7  # the X-ray does not show B
    for bad, match in [({"xray": ["A"]}, "not listed"), ({"xray": ["A", "B"], "ecg": ["B"]}, "twice"),
                       ({"xray": ["A", "Q"], "ecg": ["B"]}, "not a prompt class")]:  # fmt: skip
        with pytest.raises(ValidationError, match=match):
            info.parse({"prompts": {"A": ["a"], "B": ["b"]}, "by_modality": bad})
    with pytest.raises(ValidationError, match="negatives"):
        info.parse({"prompts": {"A": ["a"], "B": ["b"]}, "negatives": {"Q": ["no q"]}})
