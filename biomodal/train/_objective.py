"""The full training objective of a :class:`~biomodal.train.ContrastiveModel` from embeddings.

``loss = (1 - alpha) * contrastive + alpha * distill + sum_m w_m * ssl/m + w_adv * adversary``,
each term present only when switched on, computed in float32 outside autocast.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from biomodal.errors import DataError
from biomodal.losses.base import LossOutput
from biomodal.modalities import BATCH_CODE, MASK_SUFFIX, mask_key
from biomodal.nn.adversarial import grad_reverse
from biomodal.train.distill import TEACHER_PREFIX, distillation_loss

__all__ = ["adversary_loss", "loss_extras", "total_loss"]

_HALF = (torch.float16, torch.bfloat16)


def loss_extras(loss: nn.Module, batch: Mapping[str, Any], batch_key: str) -> dict[str, Any]:
    """Collect the batch entries ``loss`` consumes: its ``extra_keys`` present in ``batch``.

    ``batch_code`` is read from ``batch[batch_key]``. A loss without ``extra_keys`` (a plain
    module) gets ``batch_code=`` when its ``forward`` names that parameter.
    """
    keys = getattr(loss, "extra_keys", None)
    if keys is None:
        try:
            named = inspect.signature(loss.forward).parameters
        except (TypeError, ValueError):
            named = {}
        keys = (BATCH_CODE,) if BATCH_CODE in named else ()
    out = {}
    for key in keys:
        bkey = batch_key if key == BATCH_CODE else key
        if bkey in batch:
            out[key] = batch[bkey]
    return out


def adversary_loss(model: Any, embs: Mapping[str, Tensor], codes: Tensor) -> Tensor:
    """Mean over modalities of the batch cross-entropy; codes outside ``[0, C)`` are ignored."""
    terms = []
    for name in model.modalities:
        if name not in embs:
            continue
        z, y = embs[name], codes.long()
        m = embs.get(mask_key(name))
        if m is not None:
            z, y = z[m.bool()], y[m.bool()]
        if not model._adversary_reverses:
            z = grad_reverse(z, model.adversary_lambda)
        logits = model.adversary(z)
        logits = logits.float() if logits.dtype in _HALF else logits
        valid = (y >= 0) & (y < logits.shape[-1])
        target = torch.where(valid, y, torch.full_like(y, -100))
        ce = F.cross_entropy(logits, target, ignore_index=-100, reduction="sum")
        terms.append(ce / valid.sum().clamp(min=1))
    return torch.stack(terms).mean()


def total_loss(model: Any, embeddings: Mapping[str, Tensor], batch: Mapping[str, Any]) -> LossOutput:
    """See :meth:`biomodal.train.ContrastiveModel.loss_from_embeddings`."""
    codes = batch.get(model.batch_key)
    device = next(iter(embeddings.values())).device
    mods = set(model.modalities)
    with torch.autocast(device_type=device.type, enabled=False):
        embs = {k: (v.float() if v.dtype in _HALF else v) for k, v in embeddings.items()}
        main = {
            k: v
            for k, v in embs.items()
            if k in mods or (k.endswith(MASK_SUFFIX) and k[: -len(MASK_SUFFIX)] in mods)
        }
        out = model.loss(main, **loss_extras(model.loss, batch, model.batch_key))
        total, parts = out.loss, dict(getattr(out, "parts", {}) or {})
        terms: dict[str, Tensor] = {}
        if model.teacher is not None:
            teacher = {k[len(TEACHER_PREFIX) :]: v for k, v in embs.items() if k.startswith(TEACHER_PREFIX)}
            if teacher:
                alpha = model.teacher.current_alpha
                terms["distill"] = distillation_loss(model.loss, main, teacher, model.modalities)
                total = (1.0 - alpha) * total + alpha * terms["distill"]
        if model.selfsup is not None:
            for name, term in model.selfsup.terms(embs).items():
                terms[f"ssl/{name}"] = term
                total = total + model.selfsup.weights[name] * term
        if model.adversary is not None and model.adversary_weight > 0:
            if codes is None:
                raise DataError(f"the adversary needs integer batch codes in batch[{model.batch_key!r}]")
            terms["adversary"] = adversary_loss(model, main, codes.to(device))
            total = total + model.adversary_weight * terms["adversary"]
        if terms:
            parts = {"contrastive": out.loss, **parts, **terms}
    return LossOutput(loss=total, parts=parts)
