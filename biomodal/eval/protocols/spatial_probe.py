"""``spatial_probe``: a label probe inside labelled sections, cross-validated over spatial blocks.

Pathologist labels often exist for one section only (her2st: one per patient), so a probe
fitted on training sections and scored on held-out ones cannot run. This protocol probes the
labelled items of one split (by default the held-out split, whose embeddings the model never
trained on): each section's spots are cut into contiguous spatial blocks (k-means on their
coordinates), and a logistic regression (standardised features, balanced class weights) is
fitted on all blocks but one group of them and scored on the rest, ``n_folds`` times
(``GroupKFold``). Neighbouring spots share tissue, so a random spot-level split would put near
copies on both sides; blocks keep them apart. Predictions of all folds are pooled and scored:
balanced accuracy beside its chance level ``1 / n_classes``, macro F1. The same folds score the
baselines (``untrained``, ``colour_histogram``, ``efficientnet_lite0``...).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from biomodal.errors import DataError
from biomodal.eval.protocols.base import EvalContext, ProtocolConfig, ProtocolResult, register_protocol

__all__ = ["SpatialProbeConfig", "spatial_block_probe"]

log = logging.getLogger("biomodal")


class SpatialProbeConfig(ProtocolConfig):
    """Parameters of ``spatial_probe``.

    Attributes
    ----------
    labels
        ``obs`` label columns; default: the family's label columns.
    modalities
        Embeddings probed; default: every modality of the model.
    baselines
        Baseline features probed on the same folds (skipped, with the reason, when absent).
    split
        ``"held_out"`` (the evaluated split) or ``"train"``.
    n_blocks, n_folds
        Spatial blocks per section and cross-validation folds over them.
    min_class_size, ignore
        Classes with fewer items, and label values meaning "no label", are left out (listed).
    C
        Inverse L2 regularisation of the logistic regression.
    """

    labels: list[str] | None = None
    modalities: list[str] | None = None
    baselines: list[str] = Field(default_factory=lambda: ["untrained"])
    split: Literal["held_out", "train"] = "held_out"
    n_blocks: int = Field(default=10, ge=2)
    n_folds: int = Field(default=5, ge=2)
    min_class_size: int = Field(default=10, ge=2)
    ignore: list[str] = Field(default_factory=lambda: ["unlabelled", "undetermined", "nan"])
    C: float = Field(default=1.0, gt=0)


def _blocks(coords: Any, sections: Any, n_blocks: int, seed: int = 0) -> Any:
    """Block id of every item: k-means on coordinates, separately per section."""
    import numpy as np
    from sklearn.cluster import KMeans

    out = np.zeros(len(coords), dtype=np.int64)
    offset = 0
    for sec in np.unique(sections):
        rows = np.flatnonzero(sections == sec)
        k = int(min(n_blocks, len(rows)))
        km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(np.asarray(coords, float)[rows])
        out[rows] = km.labels_ + offset
        offset += k
    return out


def spatial_block_probe(X: Any, y: Any, groups: Any, *, n_folds: int = 5, C: float = 1.0) -> dict[str, Any]:
    """Cross-validated logistic-regression probe over groups (spatial blocks), pooled predictions.

    Parameters
    ----------
    X
        ``(n, d)`` features.
    y
        ``(n,)`` labels.
    groups
        ``(n,)`` block ids; all items of a block fall in one fold.
    n_folds, C
        Folds (capped at the number of blocks) and inverse regularisation.

    Returns
    -------
    dict
        ``balanced_accuracy``, ``macro_f1``, ``accuracy``, ``chance_balanced`` (``1/K``),
        ``chance_majority`` (accuracy of always predicting the most frequent class), ``n``,
        ``n_classes``, ``n_folds``.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, f1_score
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y).astype(str)
    groups = np.asarray(groups)
    if len(X) != len(y) or len(y) != len(groups):
        raise DataError(f"spatial_block_probe: X {X.shape}, y {y.shape}, groups {groups.shape} disagree")
    classes = np.unique(y)
    if classes.size < 2:
        raise DataError(f"spatial_block_probe: need two or more classes, got {classes.tolist()}")
    folds = int(min(n_folds, np.unique(groups).size))
    pred = np.empty(len(y), dtype=object)
    for tr, te in GroupKFold(n_splits=folds).split(X, y, groups):
        scaler = StandardScaler().fit(X[tr])
        if np.unique(y[tr]).size < 2:  # a fold whose training part holds one class predicts it
            pred[te] = y[tr][0]
            continue
        clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000)
        clf.fit(scaler.transform(X[tr]), y[tr])
        pred[te] = clf.predict(scaler.transform(X[te]))
    pred = pred.astype(str)
    counts = {c: int((y == c).sum()) for c in classes}
    return {
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro")),
        "accuracy": float((pred == y).mean()),
        "chance_balanced": 1.0 / classes.size,
        "chance_majority": max(counts.values()) / len(y),
        "n": len(y),
        "n_classes": int(classes.size),
        "class_counts": counts,
        "n_folds": folds,
    }


def _spatial_probe(ctx: EvalContext, cfg: SpatialProbeConfig) -> ProtocolResult:
    import numpy as np

    split = ctx.split if cfg.split == "held_out" else "train"
    mods = list(cfg.modalities or ctx.modalities)
    ctx.check_modalities(mods, "eval.protocols.spatial_probe.modalities")
    obs = ctx.obs[split]
    if split not in ctx.coords:
        return ProtocolResult({"skipped": f"the data provide no coordinates for split {split!r}"})
    coords = np.asarray(ctx.coords[split])
    sections = np.asarray(obs[ctx.group_key].astype(str)) if ctx.group_key in obs else np.zeros(len(obs), str)
    out: dict[str, Any] = {"split": split}
    for lab in cfg.labels if cfg.labels is not None else ctx.label_keys:
        if lab not in obs:
            out[lab] = {"skipped": f"label column {lab!r} is not in the {split} items' obs"}
            continue
        y = np.asarray(obs[lab].astype(str))
        keep = ~np.isin(y, cfg.ignore)
        small = {c: int(n) for c, n in zip(*np.unique(y[keep], return_counts=True)) if n < cfg.min_class_size}
        keep &= ~np.isin(y, list(small))
        if np.unique(y[keep]).size < 2:
            out[lab] = {
                "skipped": f"fewer than two classes with >= {cfg.min_class_size} labelled {split} items"
            }
            continue
        groups = _blocks(coords[keep], sections[keep], cfg.n_blocks)
        res: dict[str, Any] = {"dropped_small_classes": small, "ignored_values": list(cfg.ignore)}
        for m in mods:
            res[m] = spatial_block_probe(
                ctx.emb(split, m)[keep], y[keep], groups, n_folds=cfg.n_folds, C=cfg.C
            )
        skipped = {}
        for name in cfg.baselines:
            if name not in ctx.features:
                skipped[name] = "not available in this evaluation"
                continue
            feat = ctx.feature(name, split, mods[0])
            res[f"{name}:{mods[0]}"] = spatial_block_probe(
                feat[keep], y[keep], groups, n_folds=cfg.n_folds, C=cfg.C
            )
        if skipped:
            res["skipped_baselines"] = skipped
        out[lab] = res
    return ProtocolResult(out)


def _markdown(section: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for lab, res in section.items():
        if not isinstance(res, dict) or "skipped" in res:
            continue
        lines += ["", f"| spatial-block probe: {lab} ({section.get('split')}) | balanced acc | chance | n |",
                  "|---|---|---|---|"]  # fmt: skip
        for name, r in res.items():
            if isinstance(r, dict) and "balanced_accuracy" in r:
                lines.append(
                    f"| {name} | {r['balanced_accuracy']:.3f} | {r['chance_balanced']:.3f} | {r['n']} |"
                )
    return lines[1:]


def _headline(cfg: SpatialProbeConfig, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    cols = []
    for lab, res in metrics.get("spatial_probe", {}).items():
        if isinstance(res, dict):
            cols += [
                (f"spatial_probe.{lab}.{name}.balanced_accuracy", f"{lab} bal. acc ({name})")
                for name, r in res.items()
                if isinstance(r, dict) and "balanced_accuracy" in r
            ]
    return cols


register_protocol(
    "spatial_probe", config=SpatialProbeConfig, markdown=_markdown, headline=_headline, needs_untrained=True
)(_spatial_probe)
