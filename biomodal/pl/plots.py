"""Plots written into a run directory (matplotlib, non-interactive backend).

Every function takes plain arrays/DataFrames, draws one figure and, when
``path`` is given, saves it and closes the figure; it returns the figure
otherwise so notebooks can show it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["embedding_umap", "expression_over_slide", "recall_curves", "training_curves"]


def _plt() -> Any:
    import matplotlib

    if os.environ.get("MPLBACKEND") is None and matplotlib.get_backend().lower() not in (
        "agg",
        "module://matplotlib_inline.backend_inline",
    ):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig: Any, path: str | os.PathLike | None) -> Any:
    if path is None:
        return fig
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return None


def training_curves(
    log: pd.DataFrame | str | os.PathLike,
    path: str | os.PathLike | None = None,
    *,
    val_log: pd.DataFrame | str | os.PathLike | None = None,
) -> Any:
    """Training loss terms and validation metrics against step.

    Parameters
    ----------
    log
        The trainer's ``metrics.csv`` (or a DataFrame with a ``step`` column).
    path
        Where to save the PNG.
    val_log
        The trainer's ``val_metrics.csv``; default: ``val_metrics.csv`` beside ``log``.
    """
    df = pd.read_csv(log) if not isinstance(log, pd.DataFrame) else log
    if val_log is None and not isinstance(log, pd.DataFrame):
        cand = Path(log).with_name("val_metrics.csv")
        val_log = cand if cand.is_file() else None
    val = pd.read_csv(val_log) if isinstance(val_log, str | os.PathLike) else val_log
    plt = _plt()
    skip = {"step", "epoch", "time", "grad_norm"}
    loss_cols = [
        c
        for c in df.columns
        if c not in skip
        and not c.startswith("lr")
        and pd.api.types.is_numeric_dtype(df[c])
        and df[c].notna().any()
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for c in loss_cols:
        sub = df[["step", c]].dropna()
        axes[0].plot(sub["step"], sub[c], label=c, lw=2 if c == "loss" else 1)
    axes[0].set(xlabel="step", ylabel="loss", title="training")
    if val is not None and len(val):
        for c in [c for c in val.columns if c.startswith("val/recall@")]:
            axes[1].plot(val["step"], val[c], marker="o", ms=3, label=c.removeprefix("val/"))
        axes[1].set(xlabel="step", ylabel="recall (validation, full set)", title="validation")
        if "val/loss" in val:
            twin = axes[1].twinx()
            twin.plot(val["step"], val["val/loss"], color="grey", ls="--", label="val loss")
            twin.set_ylabel("val loss (dashed)")
    else:
        axes[1].set_axis_off()
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return _finish(fig, path)


def embedding_umap(
    embedding: np.ndarray,
    colors: Mapping[str, Sequence[Any]],
    path: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    title: str = "",
) -> Any:
    """UMAP (umap-learn; PCA fallback when absent) of an embedding, one panel per colouring."""
    plt = _plt()
    X = np.asarray(embedding, dtype=np.float32)
    try:
        import umap

        xy = umap.UMAP(n_neighbors=min(15, max(2, len(X) - 1)), random_state=seed).fit_transform(X)
        kind = "UMAP"
    except Exception:  # pragma: no cover - umap missing or too few points
        from sklearn.decomposition import PCA

        xy = PCA(n_components=2, random_state=seed).fit_transform(X)
        kind = "PCA"
    fig, axes = plt.subplots(1, len(colors), figsize=(4.5 * len(colors), 4), squeeze=False)
    for ax, (name, values) in zip(axes[0], colors.items()):
        cats = pd.Categorical(np.asarray(values).astype(str))
        cmap = plt.get_cmap("tab10" if len(cats.categories) <= 10 else "tab20")
        for i, cat in enumerate(cats.categories):
            sel = cats.codes == i
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, color=cmap(i % cmap.N), label=cat)
        ax.set(title=f"{title} {kind} by {name}".strip(), xticks=[], yticks=[])
        if len(cats.categories) <= 12:
            ax.legend(markerscale=3, fontsize=7, loc="best")
    return _finish(fig, path)


def recall_curves(results: Mapping[str, Mapping[str, float]], path: str | os.PathLike | None = None) -> Any:
    """Recall@k against k for each retrieval direction, with chance level dashed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, res in results.items():
        ks = sorted(int(k.split("@")[1]) for k in res if k.startswith("recall@"))
        ax.plot(ks, [res[f"recall@{k}"] for k in ks], marker="o", label=name)
        ax.plot(ks, [res[f"chance@{k}"] for k in ks], ls="--", color="grey")
    ax.set(xlabel="k", ylabel="recall@k", ylim=(0, 1), title="retrieval (dashed: chance)")
    ax.legend(fontsize=7)
    return _finish(fig, path)


def expression_over_slide(
    xy: np.ndarray,
    measured: np.ndarray,
    predicted: np.ndarray,
    genes: Sequence[str],
    path: str | os.PathLike | None = None,
    *,
    thumbnail: np.ndarray | None = None,
    thumbnail_scale: float = 1.0,
) -> Any:
    """Measured vs predicted expression of a few genes drawn at the spot positions.

    Parameters
    ----------
    xy
        (n, 2) spot coordinates in level-0 pixels.
    measured, predicted
        (n, len(genes)) values.
    genes
        Gene names (one row of panels each).
    thumbnail
        Optional slide thumbnail drawn underneath; ``thumbnail_scale`` maps level-0 pixels to it.
    """
    plt = _plt()
    g = len(genes)
    fig, axes = plt.subplots(g, 2, figsize=(8, 3.6 * g), squeeze=False)
    pts = np.asarray(xy) * thumbnail_scale
    for row, gene in enumerate(genes):
        for col, (label, vals) in enumerate(
            (("measured", measured[:, row]), ("predicted", predicted[:, row]))
        ):
            ax = axes[row, col]
            if thumbnail is not None:
                ax.imshow(thumbnail)
            sc = ax.scatter(pts[:, 0], pts[:, 1], c=vals, s=10, cmap="viridis")
            if thumbnail is None:
                ax.invert_yaxis()
            ax.set(title=f"{gene} {label}", xticks=[], yticks=[], aspect="equal")
            fig.colorbar(sc, ax=ax, fraction=0.046)
    return _finish(fig, path)
