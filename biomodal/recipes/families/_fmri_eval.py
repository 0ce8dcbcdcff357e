"""``top1_among_n``: MindEye's brain <-> stimulus top-1 among ``n`` random test items.

Each draw picks ``n`` distinct stimuli of a group's test items (one subject's; with ``group:
null`` the pooled test set) and one brain item of each; brain -> stimulus is correct when a brain
item's most similar stimulus (of the ``n``) is its own, stimulus -> brain when a stimulus' most
similar brain item is the one that saw it. Figures are averaged over ``draws`` draws and over
groups, with chance ``1 / n`` beside. When a group has fewer than ``n`` distinct stimuli, ``n``
is what it has (reported as ``n``). ``full`` scores every item against all distinct stimuli of
its group (brain -> stimulus) and every stimulus against all brain items (stimulus -> brain).
Baselines (``ridge``: voxels -> target embeddings by ridge regression fitted on the training
split; ``untrained``: the model at initialisation) are scored by the same code.

Registered by the fMRI family; it reads only embeddings and ``obs`` and would sit in
``biomodal/eval/protocols/`` as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from biomodal.eval.protocols.base import EvalContext, ProtocolConfig, ProtocolResult, register_protocol

__all__ = ["Top1AmongNConfig", "top1_among_n"]


class Top1AmongNConfig(ProtocolConfig):
    """Parameters of ``top1_among_n``.

    Attributes
    ----------
    n, draws
        Candidates per draw (MindEye: 300) and number of random draws (30).
    brain, stimulus
        The brain modality and the stimulus (target) modality (default: the model's other one).
    group
        ``obs`` column the draws are made within (``"subject"``); ``None`` pools the test set.
    stimulus_key
        ``obs`` column with the stimulus id of every item.
    baselines
        Baseline features scored the same way (``ridge``, ``untrained``) when available.
    seed
        Seed of the draws.
    """

    n: int = Field(default=300, ge=2)
    draws: int = Field(default=30, ge=1)
    brain: str = "fmri"
    stimulus: str | None = None
    group: str | None = "subject"
    stimulus_key: str = "stimulus"
    baselines: list[str] = Field(default_factory=lambda: ["ridge", "untrained"])
    seed: int = 0


def _unit(x: Any) -> Any:
    import numpy as np

    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def top1_among_n(
    brain: Any, stim_emb: Any, stimulus: Any, *, n: int = 300, draws: int = 30, seed: int = 0
) -> dict[str, Any]:
    """Top-1 both ways among ``n`` distinct stimuli (one group), plus the full-set figures.

    Parameters
    ----------
    brain, stim_emb
        ``(items, d)`` embeddings of the brain items and of their stimuli (same row order).
    stimulus
        ``(items,)`` stimulus id of every item (rows of one id share one stimulus embedding).
    """
    import numpy as np

    zb, zs = _unit(brain), _unit(stim_emb)
    stim = np.asarray(stimulus).astype(str)
    ids, first = np.unique(stim, return_index=True)
    k = min(int(n), len(ids))
    rng = np.random.default_rng(seed)
    b2s, s2b = [], []
    by_stim = {s: np.flatnonzero(stim == s) for s in ids}
    for _ in range(draws):
        chosen = rng.choice(len(ids), size=k, replace=False)
        rows = np.array([rng.choice(by_stim[ids[c]]) for c in chosen])
        sim = zb[rows] @ zs[first[chosen]].T  # (k brain, k stimuli)
        b2s.append(float((sim.argmax(1) == np.arange(k)).mean()))
        s2b.append(float((sim.argmax(0) == np.arange(k)).mean()))
    full = zb @ zs[first].T  # every item vs every distinct stimulus
    truth = np.searchsorted(ids, stim)
    return {
        "brain_to_stimulus": float(np.mean(b2s)),
        "stimulus_to_brain": float(np.mean(s2b)),
        "chance": 1.0 / k,
        "n": int(k),
        "draws": int(draws),
        "full_brain_to_stimulus": float((full.argmax(1) == truth).mean()),
        "full_stimulus_to_brain": float((truth[full.argmax(0)] == np.arange(len(ids))).mean()),
        "full_chance_brain_to_stimulus": 1.0 / len(ids),
        "full_chance_stimulus_to_brain": float(np.mean([len(by_stim[s]) for s in ids]) / len(stim)),
        "n_items": len(stim),
        "n_stimuli": len(ids),
    }


def _stim_mod(ctx: EvalContext, cfg: Top1AmongNConfig) -> str:
    other = cfg.stimulus or next((m for m in ctx.modalities if m != cfg.brain), None)
    ctx.check_modalities([cfg.brain, other or "?"], "eval.protocols.top1_among_n")
    return str(other)


def _score(
    ctx: EvalContext, cfg: Top1AmongNConfig, split: str, zb: Any, zs: Any, draws: int | None = None
) -> dict[str, Any]:
    import numpy as np

    obs = ctx.obs[split]
    stim = obs[cfg.stimulus_key].astype(str).to_numpy()
    groups = obs[cfg.group].astype(str).to_numpy() if cfg.group else np.full(len(obs), "all")
    per = {}
    for g in sorted(set(groups)):
        rows = np.flatnonzero(groups == g)
        if len(set(stim[rows])) < 2:
            continue
        per[g] = top1_among_n(
            zb[rows], zs[rows], stim[rows], n=cfg.n, draws=draws or cfg.draws, seed=cfg.seed
        )
    if not per:
        return {}
    keys = [k for k, v in next(iter(per.values())).items() if isinstance(v, float)]
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in per.values()])) for k in keys}
    out["n"] = int(min(r["n"] for r in per.values()))
    out["draws"] = int(draws or cfg.draws)
    out["groups"] = len(per)
    if cfg.group:
        out["per_group"] = {
            g: {k: r[k] for k in ("brain_to_stimulus", "stimulus_to_brain", "n")} for g, r in per.items()
        }
    return out


def _run(ctx: EvalContext, cfg: Top1AmongNConfig) -> ProtocolResult:
    sm = _stim_mod(ctx, cfg)
    split = ctx.split
    metrics = _score(ctx, cfg, split, ctx.emb(split, cfg.brain), ctx.emb(split, sm))
    base = {}
    for name in cfg.baselines:
        if name not in ctx.features:
            continue
        zb, zs = ctx.feature(name, split, cfg.brain), ctx.feature(name, split, sm)
        res = _score(ctx, cfg, split, zb, zs)
        base[name] = {k: v for k, v in res.items() if k != "per_group"}
    if base:
        metrics["baselines"] = base
    return ProtocolResult(metrics)


def _validate(ctx: EvalContext, cfg: Top1AmongNConfig) -> dict[str, float]:
    sm = _stim_mod(ctx, cfg)
    res = _score(ctx, cfg, ctx.split, ctx.emb(ctx.split, cfg.brain), ctx.emb(ctx.split, sm), draws=5)
    if not res:
        return {"val/top1_mean": 0.0}
    return {"val/top1_mean": 0.5 * (res["brain_to_stimulus"] + res["stimulus_to_brain"])}


def _headline(cfg: Top1AmongNConfig, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        ("top1_among_n.brain_to_stimulus", "b->s top1"),
        ("top1_among_n.stimulus_to_brain", "s->b top1"),
        ("top1_among_n.chance", "chance"),
    ]


def _markdown(section: Mapping[str, Any]) -> list[str]:
    if not section:
        return []
    lines = [
        f"| top-1 among n (n={section['n']}, {section['draws']} draws) | brain->stimulus | stimulus->brain | "
        "chance | full b->s | full s->b |",
        "|---|---|---|---|---|---|",
    ]
    rows = [("model", section), *section.get("baselines", {}).items()]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['brain_to_stimulus']:.3f} | {r['stimulus_to_brain']:.3f} | {r['chance']:.4f} | "
            f"{r['full_brain_to_stimulus']:.3f} | {r['full_stimulus_to_brain']:.3f} |"
        )
    return lines


register_protocol(
    "top1_among_n",
    config=Top1AmongNConfig,
    validate=_validate,
    monitor="val/top1_mean",
    headline=_headline,
    markdown=_markdown,
    needs_untrained=True,
)(_run)


def ridge_features(
    train_x: Any, train_t: Any, train_groups: Any, alphas: tuple[float, ...] = (1e0, 1e1, 1e2, 1e3, 1e4, 1e5)
) -> Any:
    """Fit one ridge regression voxels -> target embedding per group; return ``predict(x, groups)``."""
    import numpy as np
    from sklearn.linear_model import RidgeCV

    models = {}
    gr = np.asarray(train_groups)
    for g in np.unique(gr):
        rows = gr == g
        models[g] = RidgeCV(alphas=alphas).fit(np.asarray(train_x)[rows], np.asarray(train_t)[rows])

    def predict(x: Any, groups: Any) -> Any:
        x, groups = np.asarray(x), np.asarray(groups)
        out = np.zeros((len(x), np.asarray(train_t).shape[1]), np.float32)
        for g in np.unique(groups):
            rows = groups == g
            m = models.get(g)
            out[rows] = np.nan if m is None else m.predict(x[rows])
        return out

    return predict
