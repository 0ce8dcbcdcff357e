"""``probe``: linear probes for label columns, fitted on training items, scored held out."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from biomodal.eval.protocols.base import EvalContext, ProtocolConfig, ProtocolResult, register_protocol

__all__ = ["ProbeConfig"]

log = logging.getLogger("biomodal")


class ProbeConfig(ProtocolConfig):
    """Parameters of ``probe``.

    Attributes
    ----------
    labels
        ``obs`` columns to predict; default: the family's label columns.
    modalities
        Embeddings probed; default: every modality of the model.
    C
        Inverse L2 regularisation of the logistic regression.
    unseen
        Test items whose class never occurs in training: ``"error"`` or ``"drop"`` them (the
        number dropped is reported).
    """

    labels: list[str] | None = None
    modalities: list[str] | None = None
    C: float = Field(default=1.0, gt=0)
    unseen: Literal["error", "drop"] = "error"


def _probe(ctx: EvalContext, cfg: ProbeConfig) -> ProtocolResult:
    import numpy as np

    from biomodal.eval import linear_probe

    mods = list(cfg.modalities or ctx.modalities)
    ctx.check_modalities(mods, "eval.protocols.probe.modalities")
    out: dict[str, Any] = {}
    train_obs, test_obs = ctx.obs["train"], ctx.obs[ctx.split]
    for lab in cfg.labels if cfg.labels is not None else ctx.label_keys:
        if lab not in train_obs or lab not in test_obs:
            log.warning("probe label %r missing from obs; skipped", lab)
            continue
        ytr = np.asarray(train_obs[lab].astype(str))
        yte = np.asarray(test_obs[lab].astype(str))
        out[lab] = {
            m: linear_probe(ctx.emb("train", m), ytr, ctx.emb(ctx.split, m), yte, C=cfg.C, unseen=cfg.unseen)
            for m in mods
        }
    return ProtocolResult(out)


def _markdown(section: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    nan = float("nan")
    for lab, res in section.items():
        rows = {m: r for m, r in res.items() if isinstance(r, Mapping) and "balanced_accuracy" in r}
        if not rows:  # another protocol's entry in the shared section (multilabel_probe)
            continue
        lines += ["", f"| linear probe: {lab} | balanced acc | chance |", "|---|---|---|"]
        for mod, r in rows.items():
            lines.append(
                f"| {mod} | {r.get('balanced_accuracy', nan):.3f} | {r.get('chance_uniform', nan):.3f} |"
            )
    return lines[1:]


register_protocol("probe", config=ProbeConfig, markdown=_markdown)(_probe)
