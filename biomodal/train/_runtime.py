"""Helpers of the trainer loop: device and precision, data loaders, seeding, result object."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader

from biomodal.errors import ConfigError, DataError
from biomodal.train.sampling import ResumableBatchSampler, SkippingBatchSampler, epoch_seed

__all__ = ["TrainLoader", "TrainResult", "autocast_factory", "resolve_device", "seed_everything", "to_device"]


def resolve_device(device: str, precision: str) -> torch.device:
    """``"auto"``/``"cpu"``/``"cuda"`` -> device, checking the precision is supported there."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("TrainConfig.device='cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    dev = torch.device("cuda" if device in ("cuda", "auto") and torch.cuda.is_available() else "cpu")
    if dev.type == "cpu" and precision == "16-mixed":
        raise ConfigError("TrainConfig.precision='16-mixed' needs a CUDA device; on CPU use '32' or 'bf16'")
    return dev


def autocast_factory(device: torch.device, precision: str) -> Callable[[], AbstractContextManager]:
    """Zero-argument factory of the autocast context for ``precision``."""
    if precision == "32":
        return nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (the global generator users rely on)
    torch.manual_seed(seed)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move the tensors of a (nested) batch to ``device`` (non-blocking)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class TrainLoader:
    """Resumable iteration over the training data: epoch-seeded order, skip of consumed batches.

    Parameters
    ----------
    data
        Map-style dataset, or a ready ``DataLoader`` (resume then skips by reading batches).
    batch_size, seed, rank, world_size, num_workers, pin_memory
        Loader settings.
    collate_fn, sampler, batch_sampler
        As for ``DataLoader``; a custom sampler must split data between ranks itself.
    """

    def __init__(
        self,
        data: Any,
        *,
        batch_size: int,
        seed: int,
        rank: int,
        world_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        collate_fn: Callable | None = None,
        sampler: Any = None,
        batch_sampler: Any = None,
    ) -> None:
        self.seed, self.rank = seed, rank
        self.generator = torch.Generator()
        if isinstance(data, DataLoader):
            if sampler is not None or batch_sampler is not None or collate_fn is not None:
                raise ConfigError("pass sampler/batch_sampler/collate_fn with a Dataset, not a DataLoader")
            self.loader, self.batch_sampler = data, None
        else:
            if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
                raise ConfigError(f"train_data must be a map-style Dataset or a DataLoader, got {type(data)}")
            if batch_sampler is not None:
                bs: Any = SkippingBatchSampler(batch_sampler)
            elif sampler is not None:
                bs = SkippingBatchSampler(BatchSampler(sampler, batch_size, drop_last=True))
            else:
                bs = ResumableBatchSampler(len(data), batch_size, seed=seed, rank=rank, world_size=world_size)
            self.batch_sampler = bs
            self.loader = DataLoader(
                data,
                batch_sampler=bs,
                collate_fn=collate_fn,
                num_workers=num_workers,
                pin_memory=pin_memory,
                generator=self.generator,
            )
        try:
            self.steps_per_epoch: int | None = len(self.loader)
        except TypeError:
            self.steps_per_epoch = None
        if self.steps_per_epoch == 0:
            n = len(data) if hasattr(data, "__len__") else "?"
            raise DataError(
                f"train_data yields no batch: {n} samples for batch_size={batch_size} "
                f"x {world_size} process(es)"
            )

    def epoch_iter(self, epoch: int, skip: int) -> Iterator[Any]:
        """Batches of ``epoch`` after the first ``skip`` ones."""
        self.generator.manual_seed(epoch_seed(self.seed, epoch, self.rank))
        if self.batch_sampler is not None:
            self.batch_sampler.set_epoch(epoch)
            self.batch_sampler.set_skip(skip)
            return iter(self.loader)
        for obj in (getattr(self.loader, "sampler", None), getattr(self.loader, "batch_sampler", None)):
            if obj is not None and hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
        return itertools.islice(iter(self.loader), skip, None)


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    Attributes
    ----------
    out_dir
        Run folder (``metrics.csv``, ``checkpoints/``, ``tensorboard/``).
    step, epoch
        Optimiser steps done; current epoch (0-based, incremented at each epoch end).
    final_metrics
        Last logged training row merged with the last validation metrics.
    history, val_history
        Logged training rows and validation rows (dicts of floats).
    best_checkpoint, best_metric
        ``best.pt`` and its value of ``early_stopping_metric`` (``None`` without validation).
    last_checkpoint
        Newest step checkpoint.
    stopped_early
        Whether early stopping (or a callback) ended the run.
    """

    out_dir: Path
    step: int = 0
    epoch: int = 0
    final_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    val_history: list[dict[str, float]] = field(default_factory=list)
    best_checkpoint: Path | None = None
    best_metric: float | None = None
    last_checkpoint: Path | None = None
    stopped_early: bool = False

    def __repr__(self) -> str:
        loss = self.final_metrics.get("loss")
        loss_s = f"{loss:.4g}" if loss is not None else "n/a"
        best = f", best={self.best_metric:.4g} ({self.best_checkpoint.name})" if self.best_checkpoint else ""
        return (
            f"TrainResult(out_dir={str(self.out_dir)!r}, step={self.step}, epoch={self.epoch}, "
            f"loss={loss_s}{best}, stopped_early={self.stopped_early})"
        )
