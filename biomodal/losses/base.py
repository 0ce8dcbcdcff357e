"""Common pieces of every contrastive loss: the output type, input parsing and the temperature.

Every loss is called as ``loss(embeddings, masks=None, **extra)`` where ``embeddings`` maps a
modality (or view) name to a ``(B, D)`` tensor. ``extra`` are per-batch inputs named by the
class attribute :attr:`ContrastiveLoss.extra_keys` (batch-dict keys such as ``"batch_code"`` or
``"reference"``), which :class:`~biomodal.train.ContrastiveModel` takes from the batch dict.
Boolean presence masks ``<name>_mask`` of shape ``(B,)`` may sit in the same mapping (as in a
training batch) or be passed as ``masks=``. Losses never L2-normalise their inputs unless their
docstring says so: normalise in the model (projection head) as open_clip does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from biomodal.errors import ConfigError, DataError
from biomodal.modalities import MASK_SUFFIX

__all__ = ["ContrastiveLoss", "LossOutput", "split_inputs", "supports_distillation"]


@dataclass
class LossOutput:
    """Result of a loss: the scalar to optimise plus named terms for logging.

    Attributes
    ----------
    loss
        Scalar tensor (carries the graph).
    parts
        Named terms, e.g. one per modality pair (``"histology-expression"``) or per component
        (``"clip"``, ``"align"``). In distributed runs every part is scaled like ``loss``.
    """

    loss: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in self.parts.items())
        return f"LossOutput(loss={float(self.loss.detach()):.4g}, parts={{{parts}}})"


def split_inputs(
    embeddings: Mapping[str, Tensor],
    masks: Mapping[str, Tensor] | None = None,
    modalities: Sequence[str] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor | None]]:
    """Separate embeddings from ``<name>_mask`` entries and validate shapes.

    Parameters
    ----------
    embeddings
        ``{name: (B, D) tensor}``, optionally with boolean ``{name}_mask`` entries of shape ``(B,)``.
    masks
        Extra masks keyed by modality name (or by ``"<name>_mask"``); they win over masks found
        in ``embeddings``.
    modalities
        Use only these names, in this order (default: every embedding, in mapping order).

    Returns
    -------
    tuple
        ``(embeddings, masks)``; ``masks[name]`` is a bool tensor or ``None`` (all present).
    """
    if not isinstance(embeddings, Mapping):
        raise DataError(
            f"embeddings must be a mapping name -> (B, D) tensor, got {type(embeddings).__name__}"
        )
    embs: dict[str, Tensor] = {}
    found: dict[str, Tensor] = {}
    for key, value in embeddings.items():
        if key.endswith(MASK_SUFFIX):
            found[key[: -len(MASK_SUFFIX)]] = value
        else:
            embs[key] = value
    for key, value in (masks or {}).items():
        name = key[: -len(MASK_SUFFIX)] if key.endswith(MASK_SUFFIX) else key
        found[name] = value
    if modalities is not None:
        missing = [m for m in modalities if m not in embs]
        if missing:
            raise DataError(f"embeddings lack modalities {missing}; got {sorted(embs)}")
        embs = {m: embs[m] for m in modalities}
    n = None
    for key, x in embs.items():
        if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise DataError(f"embeddings[{key!r}] must be a floating (B, D) tensor, got {shape}")
        if n is None:
            n = x.shape[0]
        elif x.shape[0] != n:
            raise DataError(f"embeddings[{key!r}] has {x.shape[0]} rows, expected {n} like the others")
    out_masks: dict[str, Tensor | None] = {k: None for k in embs}
    for name, m in found.items():
        if name not in embs:
            if modalities is not None:
                continue
            raise DataError(f"mask {name + MASK_SUFFIX!r} has no matching embedding; got {sorted(embs)}")
        m = torch.as_tensor(m, device=embs[name].device)
        if m.shape != (n,):
            raise DataError(f"mask {name + MASK_SUFFIX!r} must have shape ({n},), got {tuple(m.shape)}")
        out_masks[name] = m if m.dtype == torch.bool else m != 0
    return embs, out_masks


class ContrastiveLoss(nn.Module):
    """Base class holding the learnable temperature of a contrastive loss.

    The multiplicative logit scale ``s = 1 / tau`` is stored as its logarithm (as in CLIP and
    open_clip) and clamped to at most ``max_logit_scale`` (100, as open_clip) whenever it is used.
    The clamp is applied to the value, so past the bound the gradient is zero; call
    :meth:`clamp_parameters_` after each optimiser step to keep the stored value inside, exactly
    as open_clip's training loop does.

    Parameters
    ----------
    logit_scale
        Initial multiplicative scale (``1 / temperature``), default ``1 / 0.07``.
    learn_logit_scale
        ``True``: a :class:`~torch.nn.Parameter`; ``False``: a fixed buffer.
    max_logit_scale
        Upper bound of the scale.
    modalities
        Restrict the loss to these entries of the embedding mapping (default: all).

    Attributes
    ----------
    extra_keys
        Batch-dict keys ``forward`` takes as keyword arguments (class attribute; ``()`` here).
        :meth:`biomodal.train.ContrastiveModel.loss_from_embeddings` passes exactly these, when
        present in the batch (the whole batch, also under GradCache accumulation).
    """

    extra_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        logit_scale: float = 1 / 0.07,
        learn_logit_scale: bool = True,
        max_logit_scale: float = 100.0,
        modalities: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if not (logit_scale > 0 and math.isfinite(logit_scale)):
            raise ConfigError(f"logit_scale must be a positive finite number, got {logit_scale!r}")
        if not max_logit_scale > 0:
            raise ConfigError(f"max_logit_scale must be positive, got {max_logit_scale!r}")
        init = torch.tensor(math.log(logit_scale), dtype=torch.get_default_dtype())
        if learn_logit_scale:
            self.log_logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_logit_scale", init)
        self.max_logit_scale = float(max_logit_scale)
        self.modalities = tuple(modalities) if modalities is not None else None

    @property
    def logit_scale(self) -> Tensor:
        """The clamped multiplicative scale ``exp(log_logit_scale)`` (a 0-d tensor)."""
        return self.log_logit_scale.clamp(max=math.log(self.max_logit_scale)).exp()

    @torch.no_grad()
    def clamp_parameters_(self) -> None:
        """Clamp the stored log scale in place (call after the optimiser step, as open_clip)."""
        self.log_logit_scale.clamp_(max=math.log(self.max_logit_scale))

    def _scale(self, like: Tensor) -> Tensor:
        return self.logit_scale.to(like.dtype)

    def parse(
        self, embeddings: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None, min_modalities: int = 2
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | None]]:
        """Split and validate the inputs (see :func:`split_inputs`)."""
        embs, msk = split_inputs(embeddings, masks, self.modalities)
        if len(embs) < min_modalities:
            raise DataError(
                f"{type(self).__name__} needs at least {min_modalities} modalities, got {sorted(embs)}"
            )
        return embs, msk

    def distill_pairs(self, names: Sequence[str]) -> list[tuple[str, str]] | None:
        """Modality pairs whose softmax similarities momentum distillation may soften.

        ``None`` (the default) means the loss does not support distillation (it is not a
        pairwise softmax contrastive loss); pairwise losses return the pairs they contrast.
        """
        return None

    def extra_repr(self) -> str:
        """Describe the configuration in ``repr``."""
        learn = isinstance(self.log_logit_scale, nn.Parameter)
        return f"logit_scale={float(self.logit_scale):.4g}, learn_logit_scale={learn}"


def supports_distillation(loss: nn.Module) -> bool:
    """Whether ``loss`` works with momentum distillation (:mod:`biomodal.train.distill`).

    True for losses that override :meth:`ContrastiveLoss.distill_pairs` (the pairwise softmax
    losses ``clip``, ``clip_uniformity``, ``cwcl``, ``softclip``) and for a schedule whose every
    stage does.
    """
    own = getattr(loss, "supports_distillation", None)
    if callable(own):
        return bool(own())
    fn = getattr(type(loss), "distill_pairs", None)
    return fn is not None and fn is not ContrastiveLoss.distill_pairs
