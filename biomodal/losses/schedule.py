"""Staged losses: one contrastive objective after another, switched by the optimiser step.

MindEye2 (Scotti et al., 2024) trains with BiMixCo for the first part of training, then with
SoftCLIP; :class:`ScheduledLoss` expresses such a schedule for any registered losses.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from biomodal.errors import ConfigError
from biomodal.losses.base import supports_distillation

__all__ = ["ScheduledLoss", "get_loss_schedule"]

log = logging.getLogger(__name__)


class ScheduledLoss(nn.Module):
    """A sequence of losses, each active until an optimiser step.

    Stage ``i`` is active while ``step < until_step_i`` (``step`` = optimiser steps completed
    so far, so ``until_step=300`` means the first 300 steps); the last stage has
    ``until_step=None`` and runs to the end. The :class:`~biomodal.train.Trainer` calls
    :meth:`set_step` (through :meth:`biomodal.train.ContrastiveModel.set_step`) at the start of
    training, after a resume and after every optimiser step; each switch is logged (logger
    ``biomodal.losses.schedule``) and the trainer writes the stage index of every step in the
    ``loss_stage`` column of ``metrics.csv``.

    Every stage's loss is a submodule, so all their parameters (logit scales, biases) are
    trained while active and saved in checkpoints; the step and the stage index are buffers,
    so checkpoints carry them. Inactive stages' parameters get no gradient (``None``), so the
    optimiser leaves them alone (the trainer's DDP uses ``find_unused_parameters=True``).

    Parameters
    ----------
    stages
        ``[(loss, until_step), ..., (loss, None)]`` with strictly increasing ``until_step``.
    names
        Optional stage names for logs and ``repr`` (default: the loss class names).

    Examples
    --------
    >>> from biomodal.losses import ScheduledLoss, get_loss
    >>> loss = ScheduledLoss([(get_loss("bimixco", source="fmri"), 300), (get_loss("softclip"), None)])
    >>> loss.set_step(300)
    1
    """

    def __init__(
        self, stages: Sequence[tuple[nn.Module, int | None]], names: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        stages = list(stages)
        if not stages:
            raise ConfigError("ScheduledLoss needs at least one (loss, until_step) stage")
        bounds: list[int | None] = []
        mods = []
        for i, stage in enumerate(stages):
            if not isinstance(stage, (tuple, list)) or len(stage) != 2:
                raise ConfigError(f"ScheduledLoss stage {i} must be a (loss, until_step) pair, got {stage!r}")
            loss, until = stage
            if not isinstance(loss, nn.Module):
                raise ConfigError(
                    f"ScheduledLoss stage {i}: loss must be an nn.Module, got {type(loss).__name__}"
                )
            last = i == len(stages) - 1
            if last and until is not None:
                raise ConfigError(
                    f"ScheduledLoss: the last stage runs to the end; until_step must be None, got {until!r}"
                )
            if not last:
                if isinstance(until, bool) or not isinstance(until, int) or until < 1:
                    raise ConfigError(
                        f"ScheduledLoss stage {i}: until_step must be an integer >= 1, got {until!r}"
                    )
                if bounds and until <= bounds[-1]:  # type: ignore[operator]
                    raise ConfigError(
                        f"ScheduledLoss stage {i}: until_step={until} must exceed the previous {bounds[-1]}"
                    )
            bounds.append(until)
            mods.append(loss)
        if names is not None and len(names) != len(mods):
            raise ConfigError(f"ScheduledLoss: {len(names)} names for {len(mods)} stages")
        self.stages = nn.ModuleList(mods)
        self.until_steps: tuple[int | None, ...] = tuple(bounds)
        self.names = (
            tuple(str(n) for n in names) if names is not None else tuple(type(m).__name__ for m in mods)
        )
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("stage", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ the schedule
    def stage_at(self, step: int) -> int:
        """Index of the stage active for optimiser step ``step`` (0-based count of steps done)."""
        for i, until in enumerate(self.until_steps):
            if until is None or step < until:
                return i
        return len(self.until_steps) - 1  # pragma: no cover - the last bound is None

    def set_step(self, step: int) -> int:
        """Record the optimiser step, switch stage if due (logged) and return the stage index."""
        step = int(step)
        new, old = self.stage_at(step), int(self.stage)
        if new != old:
            log.info(
                "loss stage %d (%s) -> %d (%s) at step %d", old, self.names[old], new, self.names[new], step
            )
        self.step.fill_(step)
        self.stage.fill_(new)
        return new

    @property
    def current(self) -> nn.Module:
        """The active stage's loss."""
        return self.stages[int(self.stage)]

    @property
    def current_name(self) -> str:
        """Name of the active stage."""
        return self.names[int(self.stage)]

    # ------------------------------------------------------------------ the active loss's contract
    @property
    def extra_keys(self) -> tuple[str, ...]:
        """Batch keys the active stage consumes."""
        return tuple(getattr(self.current, "extra_keys", ()))

    @property
    def logit_scale(self) -> Tensor:
        """The active stage's logit scale."""
        return self.current.logit_scale

    def distill_pairs(self, names: Sequence[str]) -> list[tuple[str, str]] | None:
        """Return the active stage's distillation pairs (``None`` when it does not support it)."""
        fn = getattr(self.current, "distill_pairs", None)
        return fn(names) if fn is not None else None

    def supports_distillation(self) -> bool:
        """Whether every stage supports momentum distillation."""
        return all(supports_distillation(m) for m in self.stages)

    def mix_inputs(
        self, batch: Mapping[str, Any], modalities: Sequence[str]
    ) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """Mix inputs as the active stage does (identity when it has no ``mix_inputs``)."""
        fn = getattr(self.current, "mix_inputs", None)
        return fn(batch, modalities) if fn is not None else (dict(batch), {})

    def forward(
        self, embeddings: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None, **extra: Any
    ) -> Any:
        """Call the active stage's loss."""
        return self.current(embeddings, masks, **extra)

    def extra_repr(self) -> str:
        """Describe the schedule in ``repr``."""
        spans = ", ".join(
            f"{n} until {u}" if u is not None else f"{n} to the end"
            for n, u in zip(self.names, self.until_steps)
        )
        return f"{spans}; step={int(self.step)}, stage={int(self.stage)}"


def get_loss_schedule(stages: Sequence[Mapping[str, Any]]) -> ScheduledLoss:
    """Build a :class:`ScheduledLoss` from ``[{"name", "params", "until_step"}, ...]``.

    Parameters
    ----------
    stages
        One mapping per stage: ``name`` (a registered loss), optional ``params`` (its keyword
        options, passed to :func:`~biomodal.losses.get_loss`) and ``until_step`` (omitted or
        ``None`` for the last stage).

    Examples
    --------
    >>> loss = get_loss_schedule([
    ...     {"name": "bimixco", "params": {"source": "fmri"}, "until_step": 300},
    ...     {"name": "softclip", "params": {"source": "fmri"}},
    ... ])
    """
    from biomodal.losses.registry import get_loss

    built, names = [], []
    for i, st in enumerate(stages):
        if not isinstance(st, Mapping) or "name" not in st:
            raise ConfigError(f"loss schedule stage {i} must be a mapping with a 'name', got {st!r}")
        unknown = sorted(set(st) - {"name", "params", "until_step"})
        if unknown:
            raise ConfigError(
                f"loss schedule stage {i}: unknown keys {unknown}; allowed: name, params, until_step"
            )
        params = st.get("params") or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"loss schedule stage {i}: params must be a mapping, got {params!r}")
        built.append((get_loss(st["name"], **params), st.get("until_step")))
        names.append(st["name"])
    return ScheduledLoss(built, names=names)
