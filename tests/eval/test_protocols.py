"""Evaluation protocols: registry, typed configs, and each protocol on known embeddings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from biomodal.errors import ConfigError
from biomodal.eval.protocols import EvalContext, Target, get_protocol, list_protocols


def _ctx(n_train: int = 80, n_test: int = 40, seed: int = 0, **kw) -> EvalContext:
    rng = np.random.default_rng(seed)
    emb, obs, tgt = {}, {}, {}
    w = rng.normal(size=(3, 6))  # one target map for every split
    for split, n in (("train", n_train), ("test", n_test)):
        z = rng.normal(size=(n, 8)).astype(np.float32)
        a = z / np.linalg.norm(z, axis=1, keepdims=True)
        b = a + 0.05 * rng.normal(size=a.shape).astype(np.float32)
        emb[split] = {"image": a, "text": b / np.linalg.norm(b, axis=1, keepdims=True)}
        obs[split] = pd.DataFrame(
            {
                "group": np.repeat(["g0", "g1"], n // 2),
                "batch": np.tile(["b0", "b1"], n // 2),
                "label": np.where(z[:, 0] > 0, "pos", "neg"),
            }
        )
        tgt[split] = (z[:, :3] @ w + 0.1 * rng.normal(size=(n, 6))).astype(np.float32)
    return EvalContext(
        split="test",
        embeddings=emb,
        obs=obs,
        modalities=("image", "text"),
        targets={"text": Target(tgt, [f"g{i}" for i in range(6)])},
        batch_key="batch",
        label_keys=["label"],
        group_key="group",
        **kw,
    )


def _run(name: str, ctx: EvalContext, **params):
    info = get_protocol(name)
    return info.fn(ctx, info.parse(params))


def test_registry_lists_builtins_and_suggests():
    assert {"retrieval", "hest_expression", "knn_expression", "probe", "batch_mixing"} <= set(
        list_protocols()
    )
    with pytest.raises(ConfigError, match="Did you mean 'retrieval'"):
        get_protocol("retreival")
    with pytest.raises(ValidationError, match="kss"):
        get_protocol("retrieval").parse({"kss": [1]})
    with pytest.raises(ValidationError, match="positive"):
        get_protocol("retrieval").parse({"ks": [0]})


def test_retrieval_both_directions_full_set_and_within_groups():
    ctx = _ctx()
    res = _run("retrieval", ctx, ks=[1, 5], within="group", within_label="section").metrics
    assert set(res) == {
        "image_to_text",
        "text_to_image",
        "image_to_text_within_section",
        "text_to_image_within_section",
    }
    full, within = res["image_to_text"], res["image_to_text_within_section"]
    assert full["n"] == 40 and full["chance@1"] == pytest.approx(1 / 40)
    assert within["chance@1"] == pytest.approx(1 / 20)  # ranked among its own group only
    assert full["recall@1"] > 0.9  # near-identical views
    with pytest.raises(ConfigError, match="not in the model"):
        _run("retrieval", ctx, pairs=[["image", "ecg"]])


def test_retrieval_validation_is_the_same_code_and_names_its_monitor():
    ctx = _ctx()
    info = get_protocol("retrieval")
    cfg = info.parse({"ks": [2, 5]})
    val = info.validate(ctx, cfg)
    full = info.fn(ctx, cfg).metrics
    mean2 = (full["image_to_text"]["recall@2"] + full["text_to_image"]["recall@2"]) / 2
    assert val["val/recall@2_mean"] == pytest.approx(mean2)
    assert info.monitor_for(cfg) == "val/recall@2_mean"


def test_expression_protocols_beat_a_baseline_on_signal():
    ctx = _ctx(
        features={
            "noise": lambda split, mod: np.random.default_rng(1).normal(
                size=(80 if split == "train" else 40, 8)
            )
        }
    )
    hest = _run("hest_expression", ctx, target="text", n_components=8, top_k=6, baselines=["noise"])
    assert hest.metrics["pearson_mean"] > hest.metrics["noise_pearson_mean"] + 0.3
    assert hest.artifacts["modality"] == "image"  # default: the modality that is not the target's
    knn = _run("knn_expression", ctx, target="text", k=5, top_k=6).metrics
    assert knn["knn_pearson_mean"] > 0.3
    with pytest.raises(ConfigError, match="no target 'expression'"):
        _run("hest_expression", ctx)


def test_untrained_baseline_is_skipped_without_a_model_but_others_are_not():
    ctx = _ctx()
    res = _run("hest_expression", ctx, target="text", n_components=8, top_k=6).metrics
    assert "baseline_pearson_mean" not in res
    with pytest.raises(ConfigError, match="baseline 'colour_histogram'"):
        _run("hest_expression", ctx, target="text", n_components=8, top_k=6, baselines=["colour_histogram"])


def test_probe_and_batch_mixing():
    ctx = _ctx(post_hoc="none")
    probe = _run("probe", ctx).metrics
    assert probe["label"]["image"]["balanced_accuracy"] > 0.8
    assert set(probe["label"]) == {"image", "text"}
    bm = _run("batch_mixing", ctx, bases=["image", "joint"]).metrics
    assert bm["batch_key"] == "batch" and bm["label_key"] == "label"
    assert 0 <= bm["joint"]["ilisi"] <= 1
    single = _ctx()
    single.obs["test"]["batch"] = "b0"
    assert "skipped" in _run("batch_mixing", single).metrics


def test_retrieval_leaves_out_items_missing_a_modality():
    ctx = _ctx()
    ctx.embeddings["test"]["text"][:10] = np.nan  # ten items lack the text modality
    res = _run("retrieval", ctx, ks=[1]).metrics
    assert res["image_to_text"]["n"] == 30 and res["image_to_text"]["chance@1"] == pytest.approx(1 / 30)
    assert res["image_to_text"]["recall@1"] > 0.9
