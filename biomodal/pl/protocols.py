"""The plots of each evaluation protocol, registered by protocol name.

``pl`` sits above ``eval`` in the layering, so protocols own their plots through this
registry rather than by importing matplotlib code themselves: the recipe runner calls
:func:`plot_protocol` after each protocol ran. Adding plots for a new protocol is one
function decorated with :func:`register_plot`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_embeddings", "plot_protocol", "register_plot"]

_PLOTS: dict[str, Callable[[Any, Any, Any, Path], None]] = {}


def register_plot(protocol: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``fn(ctx, cfg, result, out_dir)`` as the plots of ``protocol`` (decorator)."""

    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        _PLOTS[protocol] = fn
        return fn

    return deco


def plot_protocol(protocol: str, ctx: Any, cfg: Any, result: Any, out_dir: str | Path) -> None:
    """Draw the plots of ``protocol`` (no-op for protocols without registered plots)."""
    fn = _PLOTS.get(protocol)
    if fn is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        fn(ctx, cfg, result, out)


def plot_embeddings(ctx: Any, out_dir: str | Path) -> None:
    """UMAP of the first modality's held-out embedding, coloured by group, donor and label."""
    from biomodal.pl.plots import embedding_umap

    obs = ctx.obs[ctx.split]
    colours: dict[str, Any] = {}
    if ctx.group_key and ctx.group_key in obs:
        colours[ctx.group_label] = obs[ctx.group_key].astype(str).values
    if "donor" in obs:
        colours["donor"] = obs["donor"].astype(str).values
    if ctx.label_keys and ctx.label_keys[0] in obs:
        colours[ctx.label_keys[0]] = obs[ctx.label_keys[0]].astype(str).values
    if not colours:
        return
    first = ctx.modalities[0]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    embedding_umap(ctx.emb(ctx.split, first), colours, out / f"umap_{first}.png", title=first)


@register_plot("retrieval")
def _retrieval_plots(ctx: Any, cfg: Any, result: Any, out: Path) -> None:
    from biomodal.pl.plots import recall_curves

    full = {k: v for k, v in result.metrics.items() if "_within_" not in k}
    if full:
        recall_curves(full, out / "recall_at_k.png")


@register_plot("hest_expression")
def _hest_plots(ctx: Any, cfg: Any, result: Any, out: Path) -> None:
    """Measured vs predicted values of the three best-predicted columns over the first group (squidpy)."""
    from biomodal.pl.spatial import expression_on_tissue

    per_gene = result.metrics.get("pearson_per_gene") or {}
    pred = result.artifacts.get("predictions")
    coords = ctx.coords.get(ctx.split)
    if not per_gene or pred is None or coords is None:
        return
    tgt = ctx.target(result.artifacts["target"])
    top = sorted(per_gene, key=lambda g: np.nan_to_num(per_gene[g], nan=-1.0), reverse=True)[:3]
    measured_idx = [list(tgt.names).index(g) for g in top]
    pred_idx = [list(result.artifacts["genes"]).index(g) for g in top]
    obs = ctx.obs[ctx.split]
    groups = obs[ctx.group_key].astype(str).values if ctx.group_key in obs else np.zeros(len(obs), str)
    first = groups == groups[0]
    measured = np.asarray(tgt.values[ctx.split])
    expression_on_tissue(
        np.asarray(coords)[first],
        measured[first][:, measured_idx],
        np.asarray(pred)[first][:, pred_idx],
        top,
        out / "expression_over_slide.png",
    )


# protocol plots that live in their own modules register on import
from biomodal.pl import survival as _survival  # noqa: E402, F401
