"""``survival``: does the embedding carry prognosis? Cox on PCA of embeddings, held-out c-index.

For each basis (a modality's embedding, or ``joint``: the concatenation of the model's
modalities) and each baseline feature (``raw``: the family's standardised inputs, on the same
basis), :func:`biomodal.eval.survival.survival_evaluation` fits PCA and a penalised Cox model on
the training items and reports the held-out concordance index with a bootstrap interval,
Kaplan-Meier risk groups and a log-rank test. Durations and events are ``obs`` columns
(``duration_key``, ``event_key``); items without them are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from biomodal.errors import ConfigError
from biomodal.eval.protocols.base import EvalContext, ProtocolConfig, ProtocolResult, register_protocol

__all__ = ["SurvivalConfig"]

log = logging.getLogger("biomodal")


class SurvivalConfig(ProtocolConfig):
    """Parameters of ``survival`` (see :func:`biomodal.eval.survival.survival_evaluation`).

    Attributes
    ----------
    duration_key, event_key
        ``obs`` columns of durations and event indicators (1 event, 0 censored).
    bases
        Modalities and/or ``joint``; default ``["joint"]``.
    baselines
        Context features run through the same pipeline (``raw``); missing ones are skipped.
    n_components, penalizer, l1_ratio, n_bootstrap, ci, n_groups, groups, seed
        As :func:`~biomodal.eval.survival.survival_evaluation`.
    """

    duration_key: str = "time"
    event_key: str = "event"
    bases: list[str] = Field(default_factory=lambda: ["joint"])
    baselines: list[str] = Field(default_factory=lambda: ["raw"])
    n_components: int | None = Field(default=10, ge=1)
    penalizer: float = Field(default=0.1, ge=0)
    l1_ratio: float = Field(default=0.0, ge=0, le=1)
    n_bootstrap: int = Field(default=1000, ge=0)
    ci: float = Field(default=0.95, gt=0, lt=1)
    n_groups: int = Field(default=2, ge=2)
    groups: Literal["risk", "cluster"] = "risk"
    seed: int = 0


def _features(ctx: EvalContext, get: Any, split: str, basis: str) -> Any:
    import numpy as np

    mods = list(ctx.modalities) if basis == "joint" else [basis]
    return np.concatenate([np.asarray(get(split, m), np.float64) for m in mods], axis=1)


def _outcome(ctx: EvalContext, cfg: SurvivalConfig, split: str) -> tuple[Any, Any, Any]:
    import numpy as np

    obs = ctx.obs[split]
    for key in (cfg.duration_key, cfg.event_key):
        if key not in obs:
            raise ConfigError(
                f"survival: obs of split {split!r} has no column {key!r}; columns: {list(obs.columns)}"
            )
    t = obs[cfg.duration_key].to_numpy(np.float64)
    e = obs[cfg.event_key].to_numpy(np.float64)
    ok = np.isfinite(t) & np.isfinite(e)
    return t, e, ok


def _run(ctx: EvalContext, cfg: SurvivalConfig) -> ProtocolResult:
    from biomodal.eval.survival import survival_evaluation

    bad = [b for b in cfg.bases if b != "joint" and b not in ctx.modalities]
    if bad:
        raise ConfigError(
            f"survival.bases: {bad} are neither 'joint' nor modalities of the model {list(ctx.modalities)}"
        )
    ttr, etr, ktr = _outcome(ctx, cfg, "train")
    tte, ete, kte = _outcome(ctx, cfg, ctx.split)
    kw = dict(
        n_components=cfg.n_components,
        penalizer=cfg.penalizer,
        l1_ratio=cfg.l1_ratio,
        n_bootstrap=cfg.n_bootstrap,
        ci=cfg.ci,
        n_groups=cfg.n_groups,
        groups=cfg.groups,
        seed=cfg.seed,
    )
    out: dict[str, Any] = {}
    results: dict[str, Any] = {}

    def one(name: str, get: Any, basis: str) -> None:
        xtr, xte = _features(ctx, get, "train", basis), _features(ctx, get, ctx.split, basis)
        res = survival_evaluation(xtr[ktr], ttr[ktr], etr[ktr], xte[kte], tte[kte], ete[kte], **kw)
        out[name], results[name] = res.metrics, res

    for basis in cfg.bases:
        one(basis, ctx.emb, basis)
        for b in cfg.baselines:
            if b not in ctx.features:
                log.warning(
                    "survival: baseline %r is not available (have %s); skipped", b, sorted(ctx.features)
                )
                continue
            one(f"{b}_{basis}", lambda s, m, b=b: ctx.feature(b, s, m), basis)
    out["n_dropped"] = int((~kte).sum())
    return ProtocolResult(out, artifacts={"results": results})


def _headline(cfg: Any, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    sec = metrics.get("survival", {})
    return [(f"survival.{k}.c_index", f"{k} c-index") for k in sec if isinstance(sec[k], dict)]


def _markdown(section: Mapping[str, Any]) -> list[str]:
    nan = float("nan")
    lines = ["| survival (held out) | c-index | CI | log-rank p | n / events |", "|---|---|---|---|---|"]
    for name, r in section.items():
        if not isinstance(r, dict):
            continue
        lines.append(
            f"| {name} | {r.get('c_index', nan):.3f} | [{r.get('c_index_ci_low', nan):.3f}, "
            f"{r.get('c_index_ci_high', nan):.3f}] | {r.get('logrank_p', nan):.3g} | "
            f"{r.get('n_test')} / {r.get('n_events_test')} |"
        )
    return lines


register_protocol("survival", config=SurvivalConfig, headline=_headline, markdown=_markdown)(_run)
