"""``multilabel_probe``: per-class logistic probes on an embedding, macro AUROC, baselines beside.

For multi-label targets (PTB-XL's diagnostic superclasses: one record can be ``MI`` and
``STTC``) a one-vs-rest logistic regression per class is fitted on the training items'
embeddings and scored by AUROC on the held-out items
(:func:`biomodal.eval.multilabel.multilabel_probe`). The same probe on the baselines of the
context is reported beside: ``untrained_macro_auroc`` (the architecture at initialisation) and
``features_macro_auroc`` (a family feature such as hand-made ECG features, named by
``features``).

Metrics go to ``probe.<target>``: ``macro_auroc``, ``per_class``, ``n_classes_scored``,
``prevalence``, ``chance`` (0.5), ``n``, ``n_train``, ``modality``, and
``<baseline>_macro_auroc`` / ``<baseline>_per_class`` for each baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field

from biomodal.errors import ConfigError
from biomodal.eval.protocols.base import EvalContext, ProtocolConfig, ProtocolResult, register_protocol

__all__ = ["MultilabelProbeConfig"]


class MultilabelProbeConfig(ProtocolConfig):
    """Parameters of ``multilabel_probe``.

    Attributes
    ----------
    target
        Name of a context target with 0/1 columns, one per class.
    modality
        Embedding probed (default: the model's first modality).
    C
        Inverse L2 penalty of the logistic regressions.
    class_weight
        ``"none"`` or ``"balanced"``.
    untrained
        Also probe the untrained model's embedding (``untrained_macro_auroc``).
    features
        Family baseline feature probed the same way (``features_macro_auroc``); skipped with a
        note when the context has none of that name. ``None``: none.
    baselines
        More context features probed the same way, each reported as ``<name>_macro_auroc``:
        ``trained_encoder``/``untrained_encoder`` (the encoder before the head), a family's
        ``supervised_ecg`` (the same architecture trained on the labels: the upper reference).
    """

    target: str
    modality: str | None = None
    C: float = Field(default=1.0, gt=0)
    class_weight: str = Field(default="none", pattern="^(none|balanced)$")
    untrained: bool = True
    features: str | None = None
    baselines: list[str] = Field(default_factory=list)


def _run(ctx: EvalContext, cfg: MultilabelProbeConfig) -> ProtocolResult:
    import numpy as np

    from biomodal.eval.multilabel import multilabel_probe

    mod = cfg.modality or ctx.modalities[0]
    ctx.check_modalities([mod], "eval.protocols.multilabel_probe.modality")
    tgt = ctx.target(cfg.target)
    ytr, yte = np.asarray(tgt.values["train"]), np.asarray(tgt.values[ctx.split])
    if ytr.ndim != 2 or ytr.shape[1] != len(tgt.names):
        raise ConfigError(
            f"multilabel_probe: target {cfg.target!r} must be (n, {len(tgt.names)}) 0/1 columns"
        )
    cw = None if cfg.class_weight == "none" else "balanced"

    def probe(xtr: Any, xte: Any) -> dict[str, Any]:
        return multilabel_probe(xtr, ytr, xte, yte, names=tgt.names, C=cfg.C, class_weight=cw)

    out = probe(ctx.emb("train", mod), ctx.emb(ctx.split, mod))
    out["modality"] = mod
    baselines = (["untrained"] if cfg.untrained else []) + ([cfg.features] if cfg.features else [])
    baselines += [b for b in cfg.baselines if b not in baselines]
    for name in baselines:
        if name not in ctx.features:
            out.setdefault("notes", []).append(f"baseline {name!r} not available")
            continue
        res = probe(ctx.feature(name, "train", mod), ctx.feature(name, ctx.split, mod))
        key = "features" if name == cfg.features else name
        out[f"{key}_macro_auroc"] = res["macro_auroc"]
        out[f"{key}_per_class"] = res["per_class"]
    if cfg.features:
        out["features_name"] = cfg.features
    return ProtocolResult({cfg.target: out})


def _headline(cfg: MultilabelProbeConfig, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(f"probe.{cfg.target}.macro_auroc", f"probe {cfg.target} AUROC")]


def _markdown(section: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for name, r in section.items():
        if not isinstance(r, Mapping) or "macro_auroc" not in r or "per_class" not in r:
            continue  # the single-label probe's entries share this section
        cols = [("trained", r["macro_auroc"])]
        cols += [
            (k.removesuffix("_macro_auroc"), v)
            for k, v in r.items()
            if k.endswith("_macro_auroc") and k != "macro_auroc"
        ]
        lines += ["", f"| multi-label probe: {name} ({r.get('modality', '')}) | macro AUROC |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in cols] + ["| chance | 0.500 |"]
    return lines[1:]


register_protocol(
    "multilabel_probe",
    config=MultilabelProbeConfig,
    section="probe",
    headline=_headline,
    markdown=_markdown,
    needs_untrained=True,
)(_run)
