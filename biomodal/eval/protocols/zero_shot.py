"""``zero_shot``: classify held-out items by text prompts, AUROC per class and macro.

Each class has several prompts (in the language of the text the model was trained on; they
live in the recipe). Prompts are embedded with the model's text tower, averaged per class in
the embedding space (:func:`biomodal.eval.zero_shot.class_embeddings`), and each item of
``modality`` is scored by its cosine similarity with every class. Targets are either

* ``target``: a family :class:`~biomodal.eval.protocols.Target` whose columns are classes and
  whose values are 0/1 (multi-label, e.g. PTB-XL's diagnostic superclasses), or
* ``label``: an ``obs`` column of class names (single-label; ``accuracy`` is reported too).

Metrics (``zero_shot.*``): ``macro_auroc``, ``per_class``, ``n_classes_scored``,
``prevalence``, ``chance`` (0.5), ``n``, ``multilabel``, ``text_modality`` and ``note``. When
the training text was built from the very labels being predicted (``text_from_labels``, e.g.
PTB-XL statements from ``scp_codes``), ``note`` says the figure is not zero-shot.

The prompts are embedded by the context's ``encode(modality, inputs) -> (n, d) array``
callable (the trained model's encoder, head and normalisation); a context without it is a
clear error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator

from biomodal.errors import ConfigError
from biomodal.eval.protocols.base import EvalContext, ProtocolConfig, ProtocolResult, register_protocol

__all__ = ["ZeroShotConfig"]

_TEXT = ("text", "report")


class ZeroShotConfig(ProtocolConfig):
    """Parameters of ``zero_shot``.

    Attributes
    ----------
    prompts
        ``{class name: [prompt, ...]}``; several prompts per class are averaged.
    modality
        Items classified (default: the first model modality that is not text).
    text_modality
        The text tower the prompts go through (default: ``text`` or ``report``, whichever
        the model has).
    target
        Name of a multi-label target of the context (columns = class names).
    label
        ``obs`` column of class names (single-label); default when neither is given: the
        family's first label column.
    text_from_labels
        The training text was generated from these labels (the figure is then not zero-shot;
        ``note`` says so).
    untrained
        Also classify with the untrained model (both towers at initialisation):
        ``untrained_macro_auroc`` and ``untrained_per_class``, the floor the trained figure is
        read against.
    """

    prompts: dict[str, list[str]] = Field(min_length=2)
    modality: str | None = None
    text_modality: str | None = None
    target: str | None = None
    label: str | None = None
    text_from_labels: bool = False
    untrained: bool = True
    negatives: dict[str, list[str]] = Field(default_factory=dict)
    by_modality: dict[str, list[str]] | None = None

    @field_validator("prompts")
    @classmethod
    def _non_empty(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        empty = [c for c, p in v.items() if not p or not all(isinstance(s, str) and s.strip() for s in p)]
        if empty:
            raise ValueError(f"prompts: classes {empty} need at least one non-empty prompt")
        return v

    @model_validator(mode="after")
    def _by_modality(self) -> ZeroShotConfig:
        if not self.by_modality:
            return self
        listed = [c for cs in self.by_modality.values() for c in cs]
        twice = sorted({c for c in listed if listed.count(c) > 1})
        unknown = sorted(set(listed) - set(self.prompts))
        unlisted = [c for c in self.prompts if c not in listed]
        if twice or unknown or unlisted:
            raise ValueError(
                f"by_modality must list every prompt class once: twice {twice}, not a prompt class "
                f"{unknown}, not listed {unlisted}"
            )
        if self.modality is not None:
            raise ValueError("give either modality or by_modality, not both")
        return self

    @model_validator(mode="after")
    def _negatives(self) -> ZeroShotConfig:
        bad = sorted(set(self.negatives) - set(self.prompts))
        if bad:
            raise ValueError(f"negatives: {bad} are not prompt classes {list(self.prompts)}")
        empty = [
            c
            for c, p in self.negatives.items()
            if not p or not all(isinstance(t, str) and t.strip() for t in p)
        ]
        if empty:
            raise ValueError(f"negatives: classes {empty} need at least one non-empty prompt")
        return self


def _modalities(ctx: EvalContext, cfg: ZeroShotConfig) -> tuple[str, str]:
    text = cfg.text_modality or next((m for m in _TEXT if m in ctx.modalities), None)
    if text is None:
        raise ConfigError(
            f"zero_shot: the model has no text modality ({list(ctx.modalities)}); set text_modality"
        )
    item = cfg.modality or next((m for m in ctx.modalities if m != text), None)
    if item is None:
        raise ConfigError("zero_shot: no modality to classify besides the text one")
    ctx.check_modalities([text, item], "eval.protocols.zero_shot")
    return item, text


def _targets(ctx: EvalContext, cfg: ZeroShotConfig, classes: list[str]) -> Any:
    import numpy as np

    if cfg.target is not None:
        tgt = ctx.target(cfg.target)
        missing = [c for c in classes if c not in tgt.names]
        if missing:
            raise ConfigError(
                f"zero_shot: prompt classes {missing} are not columns of target {cfg.target!r} {tgt.names}"
            )
        cols = [tgt.names.index(c) for c in classes]
        return np.asarray(tgt.values[ctx.split])[:, cols]
    label = cfg.label or (ctx.label_keys[0] if ctx.label_keys else None)
    obs = ctx.obs[ctx.split]
    if label is None or label not in obs:
        raise ConfigError(f"zero_shot: give params.target or params.label (obs has {list(obs.columns)})")
    values = obs[label].astype(str).to_numpy()
    codes = np.full(len(values), -1, np.int64)
    for j, c in enumerate(classes):
        codes[values == c] = j
    if (codes >= 0).sum() == 0:
        raise ConfigError(f"zero_shot: no {label!r} value matches a prompt class {classes}")
    return codes


def _run(ctx: EvalContext, cfg: ZeroShotConfig) -> ProtocolResult:
    if cfg.by_modality:
        return _run_by_modality(ctx, cfg)
    return _run_one(ctx, cfg)


def _run_by_modality(ctx: EvalContext, cfg: ZeroShotConfig) -> ProtocolResult:
    import numpy as np

    sections: dict[str, Any] = {}
    for mod, classes in cfg.by_modality.items():
        negs = {c: p for c, p in cfg.negatives.items() if c in classes}
        prompts = {c: cfg.prompts[c] for c in classes}
        sub = cfg.model_copy(
            update={"by_modality": None, "modality": mod, "prompts": prompts, "negatives": negs}
        )
        sections[mod] = _run_one(ctx, sub).metrics
    per = {c: sections[m]["per_class"][c] for m, cs in cfg.by_modality.items() for c in cs}
    out: dict[str, Any] = {
        "macro_auroc": float(np.nanmean(list(per.values()))),
        "per_class": per,
        "class_modality": {c: m for m, cs in cfg.by_modality.items() for c in cs},
        "modality": "+".join(cfg.by_modality),
        "text_modality": next(iter(sections.values()))["text_modality"],
        "by_modality": sections,
        "chance": 0.5,
    }
    if all("untrained_per_class" in s for s in sections.values()):
        up = {c: sections[m]["untrained_per_class"][c] for m, cs in cfg.by_modality.items() for c in cs}
        out["untrained_per_class"] = up
        out["untrained_macro_auroc"] = float(np.nanmean(list(up.values())))
    if cfg.text_from_labels:
        out["note"] = "training text was built from these labels: not zero-shot"
    return ProtocolResult(out)


def _run_one(ctx: EvalContext, cfg: ZeroShotConfig) -> ProtocolResult:
    import numpy as np

    from biomodal.eval.zero_shot import zero_shot_evaluate

    encode = getattr(ctx, "encode", None)
    if not callable(encode):
        raise ConfigError(
            "zero_shot needs the context's encode(modality, inputs) to embed the prompts; this runner "
            "does not provide it"
        )
    item, text = _modalities(ctx, cfg)
    classes = list(cfg.prompts)
    prompt_emb = {c: np.asarray(encode(text, list(p)), np.float64) for c, p in cfg.prompts.items()}
    neg_emb = {c: np.asarray(encode(text, list(p)), np.float64) for c, p in cfg.negatives.items()}
    y = _targets(ctx, cfg, classes)
    out = zero_shot_evaluate(ctx.emb(ctx.split, item), prompt_emb, y, negative_embeddings=neg_emb)
    out.update(modality=item, text_modality=text, n_prompts={c: len(p) for c, p in cfg.prompts.items()})
    if cfg.negatives:
        out["negatives"] = sorted(cfg.negatives)
    if cfg.untrained:
        if callable(getattr(ctx, "encode_untrained", None)) and "untrained" in ctx.features:
            enc_u = ctx.encode_untrained
            prompt_u = {c: np.asarray(enc_u(text, list(p)), np.float64) for c, p in cfg.prompts.items()}
            neg_u = {c: np.asarray(enc_u(text, list(p)), np.float64) for c, p in cfg.negatives.items()}
            base = zero_shot_evaluate(
                ctx.feature("untrained", ctx.split, item), prompt_u, y, negative_embeddings=neg_u
            )
            out["untrained_macro_auroc"] = base["macro_auroc"]
            out["untrained_per_class"] = base["per_class"]
        else:
            out.setdefault("notes", []).append("untrained baseline not available")
    if cfg.text_from_labels:
        out["note"] = "training text was built from these labels: not zero-shot"
    return ProtocolResult(out)


def _headline(cfg: ZeroShotConfig, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [("zero_shot.macro_auroc", "zero-shot AUROC")]


def _markdown(section: Mapping[str, Any]) -> list[str]:
    if not section:
        return []
    per = section.get("per_class", {})
    lines = [
        "| zero-shot | macro AUROC | " + " | ".join(per) + " | chance |",
        "|---" * (len(per) + 3) + "|",
        f"| {section.get('modality', '')} vs prompts | {section['macro_auroc']:.3f} | "
        + " | ".join(f"{v:.3f}" for v in per.values())
        + " | 0.500 |",
    ]
    if "untrained_macro_auroc" in section:
        up = section.get("untrained_per_class", {})
        lines.append(f"| untrained model | {section['untrained_macro_auroc']:.3f} | "
                     + " | ".join(f"{up.get(c, float('nan')):.3f}" for c in per) + " | 0.500 |")  # fmt: skip
    if "accuracy" in section:
        lines.append(f"\naccuracy {section['accuracy']:.3f} (chance {section['chance_accuracy']:.3f})")
    if section.get("note"):
        lines.append(f"\nnote: {section['note']}")
    return lines


register_protocol(
    "zero_shot", config=ZeroShotConfig, headline=_headline, markdown=_markdown, needs_untrained=True
)(_run)
