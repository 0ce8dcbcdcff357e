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
from typing import Any, Literal

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
        Baseline features probed the same way: ``"untrained"`` (the model at initialisation,
        head output, as the model embeds), ``"untrained_encoder"`` / ``"trained_encoder"``
        (encoder features before the head, when the runner supplies them) and family features
        such as ``"colour_histogram"`` or ``"efficientnet_lite0"`` (a frozen ImageNet
        backbone). A baseline the context cannot supply is skipped with its reason recorded
        under ``skipped_baselines``.
    genes_by
        How the ``top_k`` scored columns are chosen on the training split: ``"variance"``
        (HEST's top-variance genes) or ``"moran"`` (spatially variable genes: highest Moran's I
        over each training section's spot graph, squidpy).
    moran
        Also report Moran's I of the measured and of the predicted held-out expression per
        scored gene (``moran_i_measured_mean``, ``moran_i_predicted_mean``, ``moran_i_per_gene``).
    """

    target: str = "expression"
    modality: str | None = None
    n_components: int = Field(default=256, ge=1)
    top_k: int = Field(default=50, ge=1)
    baselines: list[str] = Field(default_factory=lambda: ["untrained"])
    genes_by: Literal["variance", "moran"] = "variance"
    moran: bool = False


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
    genes_by
        ``"variance"`` or ``"moran"``, as in ``hest_expression``.
    """

    target: str = "expression"
    query: str | None = None
    gallery: str | None = None
    k: int = Field(default=50, ge=1)
    top_k: int = Field(default=50, ge=1)
    genes_by: Literal["variance", "moran"] = "variance"


def _other_modality(ctx: EvalContext, target: str, given: str | None, where: str) -> str:
    if given is not None:
        ctx.check_modalities([given], where)
        return given
    for m in ctx.modalities:
        if m != target:
            return m
    raise ConfigError(f"{where}: the model has no modality besides {target!r}")


#: baselines the runner supplies (absent when it was not asked to keep or expose the model)
_RUNNER_BASELINES = ("untrained", "untrained_encoder", "trained_encoder")


def _groups(ctx: EvalContext, split: str) -> Any:
    obs = ctx.obs.get(split)
    if obs is None or ctx.group_key not in getattr(obs, "columns", ()):
        return None
    return obs[ctx.group_key].astype(str).to_numpy()


def evaluated_columns(ctx: EvalContext, target: str, top_k: int, by: str = "variance") -> list[str]:
    """Names of the ``top_k`` target columns scored, chosen on the training split only.

    ``by="variance"``: most variable, ranked on :meth:`Target.ranking` (e.g. expression before
    z-scoring), so the choice is not arbitrary when every scored column has variance 1.
    ``by="moran"``: highest Moran's I over the training sections' spot graphs (spatially
    variable genes; needs the family's coordinates).
    """
    import numpy as np

    from biomodal.eval.expression import select_genes

    tgt = ctx.target(target)
    if by == "variance":
        _, names = select_genes(tgt.ranking(), list(tgt.names), top_k, None)
        return names
    if "train" not in ctx.coords:
        raise ConfigError("genes_by: moran needs spot coordinates, which these data do not provide")
    from biomodal.eval.spatial_autocorr import morans_i

    moran = morans_i(tgt.values["train"], ctx.coords["train"], _groups(ctx, "train"))
    order = [
        i for i in np.argsort(-np.nan_to_num(moran, nan=-np.inf), kind="stable") if np.isfinite(moran[i])
    ]
    return [tgt.names[i] for i in sorted(order[:top_k])]


def hest_probe(
    ctx: EvalContext,
    target: str,
    train_x: Any,
    test_x: Any,
    *,
    n_components: int,
    top_k: int,
    genes_by: str = "variance",
    columns: list[str] | None = None,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """HEST probe of ``target`` from ``train_x`` -> ``test_x`` on the evaluated columns.

    Besides the pooled ``pearson_mean`` the result holds ``pearson_mean_within_group``: Pearson
    per gene inside each held-out group (section) of ``ctx.group_key``, averaged over genes,
    then over groups, as HEST averages its per-patient splits. Pooled over several sections,
    Pearson also rewards predicting which section (patient, stain) a spot comes from.
    """
    import numpy as np

    from biomodal.eval import expression_prediction
    from biomodal.eval.expression import pearson_per_gene

    tgt = ctx.target(target)
    res = expression_prediction(
        train_x,
        tgt.values["train"],
        test_x,
        tgt.values[ctx.split],
        genes=list(tgt.names),
        n_components=n_components,
        hvg_genes=columns if columns is not None else evaluated_columns(ctx, target, top_k, genes_by),
        return_predictions=True,
    )
    obs = ctx.obs.get(ctx.split)
    if obs is not None and ctx.group_key in getattr(obs, "columns", ()):
        groups = np.asarray(obs[ctx.group_key].astype(str))
        idx = [list(tgt.names).index(g) for g in res["genes"]]
        y = np.asarray(tgt.values[ctx.split], dtype=np.float64)[:, idx]
        per = []
        for g in np.unique(groups):
            rows = groups == g
            r = pearson_per_gene(res["predictions"][rows], y[rows])
            if np.isfinite(r).any():
                per.append(float(np.nanmean(r)))
        res["pearson_mean_within_group"] = float(np.mean(per)) if per else float("nan")
        res["n_groups"] = len(per)
    if not return_predictions:
        res.pop("predictions", None)
        res.pop("model", None)
    return res


def _hest(ctx: EvalContext, cfg: HestConfig) -> ProtocolResult:
    tgt = ctx.target(cfg.target)
    mod = _other_modality(ctx, cfg.target, cfg.modality, "eval.protocols.hest_expression.modality")
    cols = evaluated_columns(ctx, cfg.target, cfg.top_k, cfg.genes_by)
    kw = dict(n_components=cfg.n_components, top_k=cfg.top_k, columns=cols)
    res = hest_probe(
        ctx, cfg.target, ctx.emb("train", mod), ctx.emb(ctx.split, mod), return_predictions=True, **kw
    )
    within = f"_within_{ctx.group_label}"
    out: dict[str, Any] = {
        "pearson_mean": float(res["pearson_mean"]),
        "pearson_per_gene": res.get("pearson_per_gene", {}),
        "genes_selected_by": f"{cfg.genes_by} on the training split"
        + (" (values before scaling)" if cfg.genes_by == "variance" and tgt.rank_values is not None else ""),
        **tgt.info,
    }
    if "pearson_mean_within_group" in res:
        out[f"pearson_mean{within}"] = res["pearson_mean_within_group"]
        out[f"n_{ctx.group_label}s"] = res["n_groups"]
    if cfg.moran:
        out.update(_moran_summary(ctx, tgt, res))
    skipped: dict[str, str] = {}
    for name in cfg.baselines:
        if name in _RUNNER_BASELINES and name not in ctx.features:
            skipped[name] = "the runner supplied no such model features to this evaluation"
            log.info("hest_expression: baseline %s skipped (%s)", name, skipped[name])
            continue
        f_train, f_test = ctx.feature(name, "train", mod), ctx.feature(name, ctx.split, mod)
        key = "baseline_pearson_mean" if name == "untrained" else f"{name}_pearson_mean"
        base = hest_probe(ctx, cfg.target, f_train, f_test, **kw)
        out[key] = float(base["pearson_mean"])
        if "pearson_mean_within_group" in base:
            out[f"{key}{within}"] = base["pearson_mean_within_group"]
    if skipped:
        out["skipped_baselines"] = skipped
    artifacts = {"predictions": res.get("predictions"), "genes": list(res.get("genes", tgt.names)),
                 "target": cfg.target, "modality": mod}  # fmt: skip
    return ProtocolResult(out, artifacts)


def _moran_summary(ctx: EvalContext, tgt: Any, res: Mapping[str, Any]) -> dict[str, Any]:
    """Moran's I of measured and predicted held-out expression for the scored genes."""
    import numpy as np

    from biomodal.eval.spatial_autocorr import morans_i

    if ctx.split not in ctx.coords:
        return {"moran_skipped": "the data provide no spot coordinates"}
    genes = list(res["genes"])
    idx = [list(tgt.names).index(g) for g in genes]
    measured = np.asarray(tgt.values[ctx.split], dtype=np.float64)[:, idx]
    groups = _groups(ctx, ctx.split)
    mi = morans_i(measured, ctx.coords[ctx.split], groups)
    pi = morans_i(res["predictions"], ctx.coords[ctx.split], groups)
    return {
        "moran_i_measured_mean": float(np.nanmean(mi)),
        "moran_i_predicted_mean": float(np.nanmean(pi)),
        "moran_i_per_gene": {g: [float(a), float(b)] for g, a, b in zip(genes, mi, pi)},
    }


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
        hvg_genes=evaluated_columns(ctx, cfg.target, cfg.top_k, cfg.genes_by),
    )
    value = res.get("knn_pearson_mean", res.get("pearson_mean"))
    if value is None:
        raise KeyError("knn_expression returned no pearson mean")
    return ProtocolResult({"knn_pearson_mean": float(value)})


_LABELS = (
    ("pearson_mean", "HEST r"),
    ("baseline_pearson_mean", "untrained r"),
    ("untrained_encoder_pearson_mean", "untrained enc. r"),
    ("trained_encoder_pearson_mean", "trained enc. r"),
    ("efficientnet_lite0_pearson_mean", "ImageNet enc. r"),
    ("colour_histogram_pearson_mean", "colour hist. r"),
    ("knn_pearson_mean", "kNN r"),
)


def _headline(cfg: Any, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    have = metrics.get("expression", {})
    cols = [(f"expression.{k}", label) for k, label in _LABELS if k in have]
    for k in have:
        for prefix, label in (
            ("pearson_mean_within_", "HEST r"),
            ("baseline_pearson_mean_within_", "untrained r"),
        ):
            if k.startswith(prefix):
                cols.append((f"expression.{k}", f"{label} within {k.removeprefix(prefix)}"))
    return cols


def _markdown(section: Mapping[str, Any]) -> list[str]:
    rows = [(k, v) for k, v in section.items() if "pearson_mean" in k and isinstance(v, int | float)]
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
