"""``k_candidate``: given all modalities of an item but one, pick its held-out one among k (Symile's task).

See :mod:`biomodal.eval.k_candidate` for the scores and the tie rule. Metrics go to
``k_candidate.<held-out modality>``: ``accuracy`` (mean over ``draws``), ``accuracy_sd``,
``chance`` (``1 / k``), ``ceiling`` (a perfect scorer, below 1 only when candidates share the
very same embedding), ``k``, ``draws``, ``n``, ``score`` and ``given``.

``score: auto`` follows the model's loss, as the Symile code does: the multilinear inner
product for ``symile``, minus the Gram volume for ``gram``, the sum of pairwise similarities
for every other loss. The loss name is read from the context's ``loss`` attribute; where the
runner does not provide it, give ``score`` explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from biomodal.errors import ConfigError
from biomodal.eval.protocols.base import EvalContext, ProtocolConfig, ProtocolResult, register_protocol

__all__ = ["KCandidateConfig", "score_for_loss"]

_N_WAY = {"symile": "mip", "gram": "gram"}


class KCandidateConfig(ProtocolConfig):
    """Parameters of ``k_candidate``.

    Attributes
    ----------
    targets
        Held-out modalities, each scored in turn; default: every modality of the model.
    modalities
        Modalities of the tuple (the held-out one and the given ones); default: all of the
        model's.
    k
        Candidates per item; chance is ``1 / k``.
    draws
        Independent draws of the negatives (figures are their mean; ``accuracy_sd`` their sd).
    score
        ``"auto"`` (from the loss), ``"mip"``, ``"pairwise"`` or ``"gram"``.
    seed
        Seed of the draws.
    max_items
        Score at most this many items (seeded subset); ``None``: all.
    """

    targets: list[str] | None = None
    modalities: list[str] | None = None
    k: int = Field(default=10, ge=2)
    draws: int = Field(default=5, ge=1)
    score: Literal["auto", "mip", "pairwise", "gram"] = "auto"
    seed: int = 0
    max_items: int | None = Field(default=None, ge=1)


def score_for_loss(loss: str | None) -> str:
    """Score of the k-candidate task that matches a loss name (``symile`` -> ``"mip"``...)."""
    if loss is None:
        raise ConfigError(
            "k_candidate: score='auto' needs the model's loss name, which this context lacks; set "
            "params.score to 'mip' (symile), 'gram' (gram) or 'pairwise' (clip and other pairwise losses)"
        )
    return _N_WAY.get(str(loss), "pairwise")


def _loss_name(ctx: EvalContext) -> str | None:
    loss = getattr(ctx, "loss", None)
    if loss is not None and not isinstance(loss, str):
        loss = getattr(loss, "name", None) or type(loss).__name__.lower().removesuffix("loss")
    return loss


def _run(ctx: EvalContext, cfg: KCandidateConfig) -> ProtocolResult:
    from biomodal.eval.k_candidate import k_candidate_accuracy

    mods = list(cfg.modalities or ctx.modalities)
    targets = list(cfg.targets or mods)
    ctx.check_modalities(mods + targets, "eval.protocols.k_candidate")
    bad = [t for t in targets if t not in mods]
    if bad:
        raise ConfigError(f"k_candidate: targets {bad} are not among params.modalities {mods}")
    if len(mods) < 2:
        raise ConfigError(f"k_candidate needs at least two modalities, got {mods}")
    score = score_for_loss(_loss_name(ctx)) if cfg.score == "auto" else cfg.score
    emb = {m: ctx.emb(ctx.split, m) for m in mods}
    out: dict[str, Any] = {}
    for t in targets:
        out[t] = k_candidate_accuracy(
            emb, t, k=cfg.k, draws=cfg.draws, score=score, seed=cfg.seed, max_items=cfg.max_items
        )
    return ProtocolResult(out)


def _validate(ctx: EvalContext, cfg: KCandidateConfig) -> dict[str, float]:
    """Mean accuracy over the held-out modalities on the validation split (one draw).

    A small validation split with fewer than ``k`` items that have every modality is scored
    with ``k`` = that number (at least 2), so that early stopping still has a criterion.
    """
    import numpy as np

    mods = list(cfg.modalities or ctx.modalities)
    complete = np.ones(len(ctx.emb(ctx.split, mods[0])), bool)
    for m in mods:
        complete &= np.isfinite(np.asarray(ctx.emb(ctx.split, m), np.float64)).all(axis=1)
    k = max(2, min(cfg.k, int(complete.sum())))
    res = _run(ctx, cfg.model_copy(update={"draws": 1, "k": k})).metrics
    return {"val/k_candidate_accuracy": sum(r["accuracy"] for r in res.values()) / len(res)}


def _headline(cfg: KCandidateConfig, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    section = metrics.get("k_candidate", {})
    cols = [(f"k_candidate.{t}.accuracy", f"pick {t} of {cfg.k}") for t in section]
    if section:
        cols.append((f"k_candidate.{next(iter(section))}.chance", "chance"))
    return cols


def _markdown(section: Mapping[str, Any]) -> list[str]:
    if not section:
        return []
    lines = [
        "| pick one of k | given | score | k | accuracy | chance | ceiling |",
        "|---|---|---|---|---|---|---|",
    ]
    for t, r in section.items():
        lines.append(
            f"| {t} | {', '.join(r['given'])} | {r['score']} | {r['k']} | "
            f"{r['accuracy']:.3f} ± {r['accuracy_sd']:.3f} | {r['chance']:.3f} | {r['ceiling']:.3f} |"
        )
    return lines


register_protocol(
    "k_candidate",
    config=KCandidateConfig,
    validate=_validate,
    monitor="val/k_candidate_accuracy",
    headline=_headline,
    markdown=_markdown,
)(_run)
