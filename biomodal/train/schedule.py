"""AdamW with separate encoder/head learning rates and a warm-up + decay schedule."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["LRSchedule", "build_optimizer", "build_scheduler"]


class LRSchedule:
    """Multiplier of the peak learning rate at optimiser step ``s`` (0-based).

    Linear warm-up ``(s + 1) / warmup_steps``, then ``"cosine"`` or ``"linear"`` decay from 1 to
    ``min_lr_ratio`` at ``total_steps``, or ``"constant"``. A plain object (not a lambda) so that
    ``LambdaLR.state_dict`` stores only numbers.
    """

    def __init__(
        self, warmup_steps: int, total_steps: int, schedule: str = "cosine", min_lr_ratio: float = 0.0
    ) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)
        self.schedule = schedule
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step: int) -> float:
        """Multiplier at 0-based step ``step``."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        span = max(self.total_steps - self.warmup_steps, 1)
        p = min(max((step - self.warmup_steps) / span, 0.0), 1.0)
        shape = 0.5 * (1.0 + math.cos(math.pi * p)) if self.schedule == "cosine" else 1.0 - p
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape

    def __repr__(self) -> str:
        return (
            f"LRSchedule({self.schedule}, warmup={self.warmup_steps}, total={self.total_steps}, "
            f"min_ratio={self.min_lr_ratio:g})"
        )


def build_optimizer(model: Any, config: Any) -> torch.optim.Optimizer:
    """AdamW over ``model.param_groups`` (fused kernels when every parameter is on CUDA)."""
    groups = model.param_groups(config.effective_encoder_lr, config.lr, config.weight_decay)
    params = [p for g in groups for p in g["params"]]
    kw: dict[str, Any] = {}
    if params and all(p.is_cuda for p in params):
        kw["fused"] = True
    return torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), eps=config.eps, **kw)


def build_scheduler(optimizer: torch.optim.Optimizer, config: Any, total_steps: int) -> Any:
    """``LambdaLR`` with :class:`LRSchedule` for every parameter group."""
    fn = LRSchedule(config.warmup_steps, total_steps, config.schedule, config.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=fn)
