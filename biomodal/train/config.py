"""Typed, validated configuration of the contrastive trainer."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from biomodal.errors import ConfigError

__all__ = ["TrainConfig"]

_PRECISIONS = ("32", "bf16", "16-mixed")
_SCHEDULES = ("cosine", "linear", "constant")
_DEVICES = ("auto", "cpu", "cuda")
_MODES = ("max", "min")


def _fail(name: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"TrainConfig.{name}={value!r} is invalid; expected {expected}")


@dataclass
class TrainConfig:
    """Everything the :class:`~biomodal.train.Trainer` needs besides the model and the data.

    Invalid values raise :class:`~biomodal.errors.ConfigError` naming the field.

    Attributes
    ----------
    max_steps, max_epochs
        Stop after this many optimiser steps / passes over the data; at least one is required,
        the first reached wins.
    batch_size
        Contrastive batch per process (the loss sees ``batch_size x world_size`` samples).
    accum_steps
        Micro-batches per contrastive batch (GradCache): memory of ``batch_size / accum_steps``
        samples, gradients of the whole batch. ``batch_size`` must be divisible by it.
    lr, encoder_lr
        Peak learning rate of heads/loss/adversary and of the encoders (``None``: ``lr``).
    weight_decay
        AdamW decoupled weight decay (never applied to biases, norms or the logit scale).
    betas, eps
        AdamW moments and epsilon.
    warmup_steps, schedule, min_lr_ratio
        Linear warm-up, then ``"cosine"`` / ``"linear"`` decay to ``min_lr_ratio * lr``, or
        ``"constant"``.
    precision
        ``"32"``; ``"bf16"`` (autocast, GPU or CPU); ``"16-mixed"`` (fp16 autocast with a
        ``GradScaler``, GPU only).
    grad_clip
        Max global L2 norm of the gradients (``None`` or 0: no clipping).
    ckpt_every, keep_last
        Checkpoint every N steps (0: only at the end) and keep the newest ``keep_last`` step
        checkpoints (``best.pt`` is kept apart).
    resume
        ``None``, ``"latest"`` (newest checkpoint in ``out_dir/checkpoints``, fresh start when
        none) or a checkpoint path.
    seed, deterministic
        Seed of python/numpy/torch and of the data order; ``deterministic`` turns on
        ``torch.use_deterministic_algorithms`` and disables cuDNN autotuning.
    num_workers, pin_memory
        DataLoader workers and pinned memory (``None``: on when training on CUDA).
    log_every, val_every
        Write metrics every N steps; validate every N steps (``None``: at each epoch end).
    early_stopping_patience, early_stopping_metric, early_stopping_mode
        Stop after this many validations without improvement of the metric (``None``: never).
        The same metric selects ``best.pt``.
    device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    progress, tensorboard
        tqdm progress bar and TensorBoard event files (rank 0 only).
    """

    max_steps: int | None = None
    max_epochs: int | None = None
    batch_size: int = 64
    accum_steps: int = 1
    lr: float = 1e-4
    encoder_lr: float | None = None
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    precision: str = "32"
    grad_clip: float | None = 1.0
    ckpt_every: int = 1000
    keep_last: int = 2
    resume: str | None = None
    seed: int = 0
    num_workers: int = 0
    pin_memory: bool | None = None
    log_every: int = 10
    val_every: int | None = None
    early_stopping_patience: int | None = None
    early_stopping_metric: str = "val/recall@1_mean"
    early_stopping_mode: str = "max"
    device: str = "auto"
    progress: bool = True
    deterministic: bool = False
    tensorboard: bool = False

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> TrainConfig:
        """Check every field; raise :class:`ConfigError` naming the first bad one."""

        def integer(name: str, lo: int, optional: bool = False) -> None:
            v = getattr(self, name)
            if v is None and optional:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise _fail(name, v, f"an integer >= {lo}" + (" or None" if optional else ""))

        def number(name: str, lo: float, hi: float = math.inf, optional: bool = False, strict: bool = False):
            v = getattr(self, name)
            if v is None and optional:
                return
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            ok = ok and (v > lo if strict else v >= lo) and v <= hi
            if not ok:
                rng = f"{'>' if strict else '>='} {lo}" + (f" and <= {hi}" if hi != math.inf else "")
                raise _fail(name, v, f"a finite number {rng}" + (" or None" if optional else ""))

        def choice(name: str, options: tuple[str, ...]) -> None:
            v = getattr(self, name)
            if v not in options:
                raise _fail(name, v, f"one of {', '.join(repr(o) for o in options)}")

        if isinstance(self.precision, int) and not isinstance(self.precision, bool):
            self.precision = str(self.precision)
        if isinstance(self.betas, list):
            self.betas = tuple(self.betas)
        integer("max_steps", 1, optional=True)
        integer("max_epochs", 1, optional=True)
        if self.max_steps is None and self.max_epochs is None:
            raise _fail("max_steps", None, "an integer >= 1 (or set max_epochs)")
        integer("batch_size", 1)
        integer("accum_steps", 1)
        if self.batch_size % self.accum_steps:
            raise _fail(
                "accum_steps", self.accum_steps, f"a divisor of batch_size={self.batch_size} (micro-batches)"
            )
        number("lr", 0.0, strict=True)
        number("encoder_lr", 0.0, optional=True)
        number("weight_decay", 0.0)
        if (
            not isinstance(self.betas, tuple)
            or len(self.betas) != 2
            or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas)
        ):
            raise _fail("betas", self.betas, "two numbers in [0, 1)")
        number("eps", 0.0, strict=True)
        integer("warmup_steps", 0)
        choice("schedule", _SCHEDULES)
        number("min_lr_ratio", 0.0, 1.0)
        choice("precision", _PRECISIONS)
        number("grad_clip", 0.0, optional=True)
        integer("ckpt_every", 0)
        integer("keep_last", 1)
        if self.resume is not None and not isinstance(self.resume, str):
            if hasattr(self.resume, "__fspath__"):
                self.resume = str(self.resume)
            else:
                raise _fail("resume", self.resume, "None, 'latest' or a checkpoint path")
        integer("seed", 0)
        integer("num_workers", 0)
        if self.pin_memory is not None and not isinstance(self.pin_memory, bool):
            raise _fail("pin_memory", self.pin_memory, "True, False or None")
        integer("log_every", 1)
        integer("val_every", 1, optional=True)
        integer("early_stopping_patience", 1, optional=True)
        if not isinstance(self.early_stopping_metric, str) or not self.early_stopping_metric:
            raise _fail("early_stopping_metric", self.early_stopping_metric, "a metric name, e.g. 'val/loss'")
        choice("early_stopping_mode", _MODES)
        choice("device", _DEVICES)
        for name in ("progress", "deterministic", "tensorboard"):
            if not isinstance(getattr(self, name), bool):
                raise _fail(name, getattr(self, name), "True or False")
        return self

    @property
    def effective_encoder_lr(self) -> float:
        """``encoder_lr``, or ``lr`` when it is ``None``."""
        return self.lr if self.encoder_lr is None else float(self.encoder_lr)

    @property
    def micro_batch_size(self) -> int:
        """Samples per forward pass: ``batch_size // accum_steps``."""
        return self.batch_size // self.accum_steps

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain dict of primitives (safe inside a ``weights_only`` checkpoint and in YAML)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys raise :class:`ConfigError` with a did-you-mean hint."""
        if isinstance(data, TrainConfig):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(f"TrainConfig expects a mapping, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            import difflib

            k = unknown[0]
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown TrainConfig field {k!r}.{hint} Known fields: {', '.join(names)}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> TrainConfig:
        """Copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)
