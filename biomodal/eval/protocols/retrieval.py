"""``retrieval``: cross-modal retrieval over the whole evaluation set, both directions.

Every query is ranked against every gallery item of the split (chunked), never only inside a
mini-batch; chance level is reported beside every recall. Items missing either modality (NaN
embeddings, from ``<name>_mask``) are left out of that pair. With ``within`` set, a second set
of figures ranks each query only among items of its own group (e.g. its tissue section).
The validation metric that early stopping follows comes from the same code on the
validation split.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import permutations
from typing import Any

from pydantic import Field, field_validator

from biomodal.eval.protocols.base import EvalContext, ProtocolConfig, ProtocolResult, register_protocol

__all__ = ["RetrievalConfig"]


class RetrievalConfig(ProtocolConfig):
    """Parameters of the ``retrieval`` protocol.

    Attributes
    ----------
    pairs
        ``[query, gallery]`` modality pairs; default: every ordered pair of the model's
        modalities (so both directions).
    ks
        Cut-offs of recall@k.
    within
        ``obs`` column of groups to also rank within (``"sample"`` ranks within sections);
        ``None``: full set only.
    within_label
        Name of those groups in metric keys (``<q>_to_<g>_within_<label>``; default: the
        column name).
    untrained
        Also rank with the untrained model's embeddings (when the runner provides them): each
        pair gets ``untrained_recall@k`` and ``untrained_median_rank`` beside chance.
    """

    pairs: list[tuple[str, str]] | None = None
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10])
    within: str | None = None
    within_label: str | None = None
    untrained: bool = False

    @field_validator("ks")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v):
            raise ValueError(f"ks must be a non-empty list of positive integers, got {v}")
        return v


def _pairs(ctx: EvalContext, cfg: RetrievalConfig) -> list[tuple[str, str]]:
    pairs = [tuple(p) for p in cfg.pairs] if cfg.pairs else list(permutations(ctx.modalities, 2))
    ctx.check_modalities([m for p in pairs for m in p], "eval.protocols.retrieval.pairs")
    return pairs  # type: ignore[return-value]


def _name(q: str, g: str) -> str:
    return f"{q}_to_{g}"


def pair_retrieval(
    ctx: EvalContext, cfg: RetrievalConfig, split: str, *, within: bool = True
) -> dict[str, dict[str, float]]:
    """Score every configured pair on ``split`` (the one retrieval implementation)."""
    import numpy as np

    from biomodal.eval import retrieval

    ks = tuple(cfg.ks)
    pairs = _pairs(ctx, cfg)
    out = {}
    groups = np.asarray(ctx.obs[split][cfg.within].astype(str)) if within and cfg.within else None
    for q, g in pairs:
        zq, zg = np.asarray(ctx.emb(split, q)), np.asarray(ctx.emb(split, g))
        both = np.isfinite(zq).all(axis=1) & np.isfinite(zg).all(axis=1)  # items with both modalities
        zq, zg = zq[both], zg[both]
        out[_name(q, g)] = retrieval(zq, zg, ks=ks)
        if groups is not None:
            label = cfg.within_label or cfg.within
            out[f"{_name(q, g)}_within_{label}"] = retrieval(
                zq, zg, ks=ks, query_groups=groups[both], gallery_groups=groups[both]
            )
    return out


def _validate(ctx: EvalContext, cfg: RetrievalConfig) -> dict[str, float]:
    """Mean over the configured pairs of recall@k and median rank on the validation split."""
    res = pair_retrieval(ctx, cfg, ctx.split, within=False)
    rows = list(res.values())
    out = {f"val/{k}_mean": sum(r[k] for r in rows) / len(rows) for k in rows[0] if k.startswith("recall@")}
    out["val/median_rank_mean"] = sum(r["median_rank"] for r in rows) / len(rows)
    return out


def _headline(cfg: RetrievalConfig, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    names = [k for k in metrics.get("retrieval", {}) if "_within_" not in k]
    cols: list[tuple[str, str]] = []
    ks = sorted(cfg.ks)
    for i, name in enumerate(names):
        q, _, g = name.partition("_to_")
        short = f"{q[:1]}->{g[:1]}"
        if i == 0 and ks[0] != ks[-1]:
            cols.append((f"retrieval.{name}.recall@{ks[0]}", f"{short} R@{ks[0]}"))
        cols.append((f"retrieval.{name}.recall@{ks[-1]}", f"{short} R@{ks[-1]}"))
    if names:
        cols.append((f"retrieval.{names[0]}.chance@{ks[-1]}", f"chance@{ks[-1]}"))
    return cols


def _markdown(section: Mapping[str, Any]) -> list[str]:
    if not section:
        return []
    first = next(iter(section.values()))
    ks = sorted(int(k.split("@")[1]) for k in first if k.startswith("recall@"))
    head = " | ".join(f"R@{k}" for k in ks)
    chance = [ks[0], ks[-1]] if len(ks) > 1 else ks
    lines = [
        f"| retrieval | {head} | " + " | ".join(f"chance@{k}" for k in chance) + " | median rank |",
        "|---" * (len(ks) + len(chance) + 2) + "|",
    ]
    for name, r in section.items():
        cells = [f"{r[f'recall@{k}']:.3f}" for k in ks] + [f"{r[f'chance@{k}']:.4f}" for k in chance]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r['median_rank']:.0f} |")
    return lines


@register_protocol(
    "retrieval",
    config=RetrievalConfig,
    validate=_validate,
    monitor=lambda cfg: f"val/recall@{min(cfg.ks)}_mean",
    headline=_headline,
    markdown=_markdown,
)
def run_retrieval(ctx: EvalContext, cfg: RetrievalConfig) -> ProtocolResult:
    """Full-set retrieval of every pair (and within groups), chance beside every recall."""
    import numpy as np

    from biomodal.eval import retrieval

    out = pair_retrieval(ctx, cfg, ctx.split)
    if cfg.untrained and "untrained" in ctx.features:
        for q, g in _pairs(ctx, cfg):
            zq = np.asarray(ctx.feature("untrained", ctx.split, q))
            zg = np.asarray(ctx.feature("untrained", ctx.split, g))
            both = np.isfinite(zq).all(axis=1) & np.isfinite(zg).all(axis=1)
            base = retrieval(zq[both], zg[both], ks=tuple(cfg.ks))
            out[_name(q, g)].update({f"untrained_{k}": v for k, v in base.items()
                                     if k.startswith("recall@") or k == "median_rank"})  # fmt: skip
    return ProtocolResult(out)
