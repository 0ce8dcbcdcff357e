"""Momentum distillation (ALBEF; Li et al., 2021, "Align before Fuse", NeurIPS).

An exponential-moving-average *teacher* copy of every encoder and projection head produces
soft targets: for each modality pair ``(a, b)`` the teacher's similarity distribution
``q_ij = softmax_j(s * ta_i . tb_j)``. The student is trained on

    loss = (1 - alpha) * contrastive_loss + alpha * mean_pairs 1/2 [CE(q_ab, p_ab) + CE(q_ba, p_ba)]

with ``p_ab = softmax_j(s * a_i . b_j)`` the student's distribution and ``s`` the loss's logit
scale (the teacher's logits use it detached). After every optimiser step the teacher moves
towards the student, ``theta_t <- m * theta_t + (1 - m) * theta_s``; it is never trained by
gradient, runs in eval mode (no dropout, no RNG use) and is saved in checkpoints (state-dict
prefix ``teacher.``). ALBEF uses ``alpha = 0.4`` and ``m = 0.995`` and ramps ``alpha`` up during
the first epoch (``warmup_steps`` here).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from biomodal.errors import ConfigError
from biomodal.losses.distributed import GlobalBatch
from biomodal.modalities import mask_key

__all__ = ["TEACHER_PREFIX", "MomentumTeacher", "distillation_loss"]

#: Prefix of the teacher's embeddings in :meth:`ContrastiveModel.loss_inputs` (no gradient).
TEACHER_PREFIX = "teacher/"

_KEYS = ("alpha", "momentum", "warmup_steps")


class MomentumTeacher(nn.Module):
    """EMA copies of a model's encoders and heads (always in eval mode, no gradients).

    Parameters
    ----------
    encoders, heads
        The student's modules (deep-copied here; the copy is synchronised with the student's
        weights at the first use, so weights loaded after construction are picked up).
    alpha
        Weight of the soft-target term, in ``[0, 1]`` (0: the plain loss).
    momentum
        EMA momentum ``m`` in ``[0, 1)``.
    warmup_steps
        Ramp ``alpha`` linearly from 0 over this many optimiser steps (0: no ramp).
    """

    def __init__(
        self,
        encoders: nn.ModuleDict,
        heads: nn.ModuleDict,
        *,
        alpha: float = 0.4,
        momentum: float = 0.995,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"distill alpha={alpha!r} is invalid; expected a number in [0, 1]")
        if not isinstance(momentum, (int, float)) or isinstance(momentum, bool) or not 0.0 <= momentum < 1.0:
            raise ConfigError(f"distill momentum={momentum!r} is invalid; expected a number in [0, 1)")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ConfigError(f"distill warmup_steps={warmup_steps!r} is invalid; expected an integer >= 0")
        self.encoders = copy.deepcopy(encoders)
        self.heads = copy.deepcopy(heads)
        for p in self.parameters():
            p.requires_grad_(False)
        self.alpha, self.momentum, self.warmup_steps = float(alpha), float(momentum), int(warmup_steps)
        self.register_buffer("synced", torch.zeros((), dtype=torch.bool))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        super().train(False)

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], encoders: nn.ModuleDict, heads: nn.ModuleDict
    ) -> MomentumTeacher:
        """Build from ``{"alpha": ..., "momentum": ..., "warmup_steps": ...}`` (unknown keys: error)."""
        if not isinstance(config, Mapping):
            raise ConfigError(
                f"distill must be a mapping like {{'alpha': 0.4, 'momentum': 0.995}}, got {config!r}"
            )
        bad = sorted(set(config) - set(_KEYS))
        if bad:
            raise ConfigError(f"distill: unknown keys {bad}; allowed: {list(_KEYS)}")
        return cls(encoders, heads, **dict(config))

    def train(self, mode: bool = True) -> MomentumTeacher:
        """Stay in eval mode whatever the student does."""
        return super().train(False)

    @property
    def current_alpha(self) -> float:
        """``alpha``, ramped over ``warmup_steps``."""
        if self.warmup_steps == 0:
            return self.alpha
        return self.alpha * min(1.0, int(self.step) / self.warmup_steps)

    def _pairs(self, student: nn.Module) -> list[tuple[Tensor, Tensor]]:
        mine = [*self.encoders.values(), *self.heads.values()]
        theirs = [*student.encoders.values(), *student.heads.values()]
        out: list[tuple[Tensor, Tensor]] = []
        for t, s in zip(mine, theirs, strict=True):
            tt, ss = [*t.parameters(), *t.buffers()], [*s.parameters(), *s.buffers()]
            if len(tt) != len(ss) or any(a.shape != b.shape for a, b in zip(tt, ss)):
                raise ConfigError(
                    f"the student's {type(s).__name__} no longer matches its distillation teacher (changed "
                    "after ContrastiveModel was built?); wrap or replace encoders before building the model"
                )
            out.extend(zip(tt, ss))
        return out

    @torch.no_grad()
    def sync(self, student: nn.Module, *, force: bool = False) -> None:
        """Copy the student's weights into the teacher (once, unless ``force``)."""
        if bool(self.synced) and not force:
            return
        for t, s in self._pairs(student):
            t.copy_(s.detach())
        self.synced.fill_(True)

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """EMA step after an optimiser step: ``t <- m t + (1 - m) s`` (integer buffers copied)."""
        if not bool(self.synced):
            self.sync(student)
            return
        m = self.momentum
        for t, s in self._pairs(student):
            if t.is_floating_point():
                t.mul_(m).add_(s.detach().to(t.dtype), alpha=1.0 - m)
            else:
                t.copy_(s)


def _soft_ce(logits: Tensor, targets: Tensor) -> Tensor:
    return -(targets * torch.log_softmax(logits, dim=1)).sum()


def distillation_loss(
    loss: nn.Module,
    embeddings: Mapping[str, Tensor],
    teacher: Mapping[str, Tensor],
    modalities: Sequence[str],
) -> Tensor:
    """Soft-target cross-entropy of the student against the teacher, mean over the loss's pairs.

    Parameters
    ----------
    loss
        The contrastive loss (its ``distill_pairs`` and ``logit_scale`` are used).
    embeddings
        Student embeddings ``{name: (B, D)}`` plus ``<name>_mask`` entries.
    teacher
        Teacher embeddings ``{name: (B, D)}`` (same rows, no gradient).
    modalities
        The model's modality names, in order.
    """
    active = getattr(loss, "current", loss)
    restrict = getattr(active, "modalities", None)
    names = [m for m in (restrict or modalities) if m in embeddings and m in teacher]
    pairs = loss.distill_pairs(names)
    if pairs is None:
        raise ConfigError(f"momentum distillation does not support the loss {type(active).__name__}")
    embs: dict[str, Tensor] = {}
    masks: dict[str, Tensor | None] = {}
    for n in names:
        m = embeddings.get(mask_key(n))
        m = None if m is None else torch.as_tensor(m, device=embeddings[n].device).bool()
        embs[n], masks[n] = embeddings[n], m
        embs[TEACHER_PREFIX + n], masks[TEACHER_PREFIX + n] = teacher[n].detach().to(embeddings[n].dtype), m
    gb = GlobalBatch(embs, masks)
    scale = loss.logit_scale.to(embs[names[0]].dtype)
    t_scale = scale.detach()
    terms = []
    for a, b in pairs:
        ta, tb = TEACHER_PREFIX + a, TEACHER_PREFIX + b
        sel = gb.select([a, b, ta, tb])
        if sel.n_global == 0:
            terms.append(gb.anchor_zero())
            continue
        q_ab = F.softmax(t_scale * (sel.local[ta] @ sel.glob[tb].T), dim=1)
        q_ba = F.softmax(t_scale * (sel.local[tb] @ sel.glob[ta].T), dim=1)
        total = _soft_ce(scale * (sel.local[a] @ sel.glob[b].T), q_ab)
        total = total + _soft_ce(scale * (sel.local[b] @ sel.glob[a].T), q_ba)
        terms.append(gb.finish(0.5 * total, sel.n_global))
    return torch.stack(terms).mean()
