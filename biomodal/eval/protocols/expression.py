"""``hest_expression`` and ``knn_expression``: predicting a measured target from embeddings.

``hest_expression`` follows HEST-Benchmark: features of the training items -> scaler -> PCA
-> ridge, Pearson per target column on the most variable columns of the training items,
averaged; beside it the same probe on baseline features (the untrained model, raw-input
features the family provides). ``knn_expression`` follows BLEEP: each held-out query
retrieves its ``k`` nearest training items of the target's own modality in the joint space
and predicts their mean measured value. Both write the ``expression`` section of
``metrics.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from biomodal.errors import ConfigError
from biomodal.eval.protocols.base import EvalContext, ProtocolConfig, ProtocolResult, register_protocol

__all__ = ["HestConfig", "KnnExpressionConfig"]

log = logging.getLogger("biomodal")


class HestConfig(ProtocolConfig):
    """Parameters of ``hest_expression``.

    Attributes
    ----------
    target
        Name of the family-supplied target (``"expression"``).
    modality
        Embeddings used as features; default: the first model modality that is not the
        target's own.
    n_components, top_k
        PCA components of the probe and number of most variable target columns scored.
    baselines
        Baseline features probed the same way (``"untrained"``: the architecture at
        initialisation; family features such as ``"colour_histogram"``).
    """

    target: str = "expression"
    modality: str | None = None
    n_components: int = Field(default=256, ge=1)
    top_k: int = Field(default=50, ge=1)
    baselines: list[str] = Field(default_factory=lambda: ["untrained"])


class KnnExpressionConfig(ProtocolConfig):
    """Parameters of ``knn_expression`` (BLEEP).

    Attributes
    ----------
    target
        Name of the family-supplied target.
    query
        Modality of the held-out queries; default: the first model modality that is not the
        target's own.
    gallery
        Modality of the training keys; default: the target's own modality.
    k, top_k
        Neighbours averaged and number of most variable target columns scored.
    """

    target: str = "expression"
    query: str | None = None
    gallery: str | None = None
    k: int = Field(default=50, ge=1)
    top_k: int = Field(default=50, ge=1)


def _other_modality(ctx: EvalContext, target: str, given: str | None, where: str) -> str:
    if given is not None:
        ctx.check_modalities([given], where)
        return given
    for m in ctx.modalities:
        if m != target:
            return m
    raise ConfigError(f"{where}: the model has no modality besides {target!r}")


def _hest(ctx: EvalContext, cfg: HestConfig) -> ProtocolResult:
    from biomodal.eval import expression_prediction

    tgt = ctx.target(cfg.target)
    mod = _other_modality(ctx, cfg.target, cfg.modality, "eval.protocols.hest_expression.modality")
    y_train, y_test = tgt.values["train"], tgt.values[ctx.split]
    kw = dict(genes=list(tgt.names), n_components=cfg.n_components, top_k=cfg.top_k)
    res = expression_prediction(
        ctx.emb("train", mod), y_train, ctx.emb(ctx.split, mod), y_test, return_predictions=True, **kw
    )
    out: dict[str, Any] = {
        "pearson_mean": float(res["pearson_mean"]),
        "pearson_per_gene": res.get("pearson_per_gene", {}),
    }
    for name in cfg.baselines:
        if name == "untrained" and name not in ctx.features:
            log.info("hest_expression: no untrained model here; the untrained baseline is skipped")
            continue
        f_train, f_test = ctx.feature(name, "train", mod), ctx.feature(name, ctx.split, mod)
        key = "baseline_pearson_mean" if name == "untrained" else f"{name}_pearson_mean"
        out[key] = float(expression_prediction(f_train, y_train, f_test, y_test, **kw)["pearson_mean"])
    artifacts = {"predictions": res.get("predictions"), "genes": list(res.get("genes", tgt.names)),
                 "target": cfg.target, "modality": mod}  # fmt: skip
    return ProtocolResult(out, artifacts)


def _knn(ctx: EvalContext, cfg: KnnExpressionConfig) -> ProtocolResult:
    from biomodal.eval import knn_expression

    tgt = ctx.target(cfg.target)
    where = "eval.protocols.knn_expression"
    query = _other_modality(ctx, cfg.target, cfg.query, f"{where}.query")
    gallery = cfg.gallery or cfg.target
    ctx.check_modalities([gallery], f"{where}.gallery")
    res = knn_expression(
        ctx.emb("train", gallery),
        tgt.values["train"],
        ctx.emb(ctx.split, query),
        tgt.values[ctx.split],
        k=cfg.k,
        genes=list(tgt.names),
        top_k=cfg.top_k,
    )
    value = res.get("knn_pearson_mean", res.get("pearson_mean"))
    if value is None:
        raise KeyError("knn_expression returned no pearson mean")
    return ProtocolResult({"knn_pearson_mean": float(value)})


_LABELS = (
    ("pearson_mean", "HEST r"),
    ("baseline_pearson_mean", "untrained r"),
    ("knn_pearson_mean", "kNN r"),
)


def _headline(cfg: Any, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    have = metrics.get("expression", {})
    return [(f"expression.{k}", label) for k, label in _LABELS if k in have]


def _markdown(section: Mapping[str, Any]) -> list[str]:
    rows = [(k, v) for k, v in section.items() if k.endswith("pearson_mean")]
    if not rows:
        return []
    lines = ["| expression (Pearson, top variable columns) | value |", "|---|---|"]
    return lines + [f"| {k} | {float(v):.3f} |" for k, v in rows]


register_protocol(
    "hest_expression",
    config=HestConfig,
    section="expression",
    headline=_headline,
    markdown=_markdown,
    needs_untrained=True,
)(_hest)
register_protocol(
    "knn_expression", config=KnnExpressionConfig, section="expression", headline=_headline, markdown=_markdown
)(_knn)
