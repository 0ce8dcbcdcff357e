"""The shared contrastive trainer: plain PyTorch + ``torch.distributed`` (see docs/trainer.md)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from biomodal.errors import ConfigError
from biomodal.train import checkpoint as ck
from biomodal.train._runtime import (
    TrainLoader,
    TrainResult,
    autocast_factory,
    resolve_device,
    seed_everything,
    to_device,
)
from biomodal.train._trainer_io import TrainerIOMixin
from biomodal.train.config import TrainConfig
from biomodal.train.distributed import all_reduce_grads, broadcast_module, setup_distributed, teardown
from biomodal.train.gradcache import accumulated_backward
from biomodal.train.loggers import CSVLogger, TensorBoardLogger, read_csv_metrics
from biomodal.train.schedule import build_optimizer, build_scheduler

__all__ = ["TrainResult", "Trainer", "fit"]


class _LossForward(nn.Module):
    """Wraps the model so that DDP's forward covers encoders, heads, loss and adversary."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.model.compute_loss(batch)
        return out.loss, dict(out.parts)


class Trainer(TrainerIOMixin):
    """Train a :class:`~biomodal.train.ContrastiveModel` (one trainer for every recipe).

    Parameters
    ----------
    model
        The model; freeze encoders before :meth:`fit`.
    config
        :class:`~biomodal.train.TrainConfig` or a mapping of its fields.
    out_dir
        Run folder: ``metrics.csv``, ``val_metrics.csv``, ``checkpoints/``, ``tensorboard/``.
    train_data
        Map-style dataset returning batch dicts (collated to dicts of tensors) or a DataLoader.
    val_data
        Optional dataset: its mean contrastive loss is reported as ``val/loss``.
    collate_fn, sampler, batch_sampler
        DataLoader pieces; by default a :class:`~biomodal.train.sampling.ResumableBatchSampler`.
    val_fn
        ``callable(model) -> {metric: float}``, run on rank 0 in eval mode without grad
        (e.g. full-set retrieval); it must not use collectives.
    callbacks
        Objects with any of ``on_train_start(trainer)``, ``on_step_end(trainer, step, row)``,
        ``on_validation_end(trainer, metrics)``, ``on_train_end(trainer, result)``; setting
        ``trainer.should_stop = True`` ends the run.
    extra
        Caller metadata stored in every checkpoint (recipe, gene panel, normalisation...);
        tensors, numbers, strings, lists and dicts only.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | Mapping[str, Any],
        out_dir: str | os.PathLike,
        *,
        train_data: Any,
        val_data: Any = None,
        collate_fn: Callable | None = None,
        sampler: Any = None,
        batch_sampler: Any = None,
        val_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
        callbacks: Sequence[Any] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = TrainConfig.from_dict(config) if not isinstance(config, TrainConfig) else config
        for attr in ("compute_loss", "loss_from_embeddings", "param_groups", "modalities"):
            if not hasattr(model, attr):
                raise ConfigError(f"model must be a ContrastiveModel (no .{attr}): {type(model).__name__}")
        if sampler is not None and batch_sampler is not None:
            raise ConfigError("pass either sampler or batch_sampler, not both")
        self.extra = dict(extra or {})
        ck.check_safe(self.extra)
        self.model, self.out_dir = model, Path(out_dir)
        self.train_data, self.val_data, self.val_fn = train_data, val_data, val_fn
        self.collate_fn, self.sampler, self.batch_sampler = collate_fn, sampler, batch_sampler
        self.callbacks = list(callbacks)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.should_stop = False
        self.best_value: float | None = None
        self.bad_validations = 0
        self.history: list[dict[str, float]] = []
        self.val_history: list[dict[str, float]] = []
        self.last_checkpoint: Path | None = None
        self.last_val_step = -1

    @property
    def ckpt_dir(self) -> Path:
        """Folder of the step checkpoints and ``best.pt``."""
        return self.out_dir / "checkpoints"

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        cfg = self.config
        device = resolve_device(cfg.device, cfg.precision)
        self.env = setup_distributed(device.type)
        if device.type == "cuda":
            device = torch.device("cuda", self.env.local_rank)
            torch.cuda.set_device(device)
            torch.backends.cudnn.benchmark = not cfg.deterministic
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.device = device
        seed_everything(cfg.seed + self.env.rank)
        self.model.to(device)
        broadcast_module(self.model)
        self.params = [p for p in self.model.parameters()]
        self._clampers = [m for m in self.model.modules() if hasattr(m, "clamp_parameters_")]
        pin = cfg.pin_memory if cfg.pin_memory is not None else device.type == "cuda"
        self.loader = TrainLoader(
            self.train_data,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            rank=self.env.rank,
            world_size=self.env.world_size,
            num_workers=cfg.num_workers,
            pin_memory=pin,
            collate_fn=self.collate_fn,
            sampler=self.sampler,
            batch_sampler=self.batch_sampler,
        )
        spe = self.loader.steps_per_epoch
        if cfg.max_epochs is not None and spe is None:
            raise ConfigError("TrainConfig.max_epochs needs train_data with a length; set max_steps instead")
        limits = [cfg.max_steps, cfg.max_epochs * spe if cfg.max_epochs and spe else None]
        self.total_steps = min(x for x in limits if x is not None)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total_steps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "16-mixed")
        self.autocast = autocast_factory(device, cfg.precision)
        self.ddp = None
        if self.env.distributed and cfg.accum_steps == 1:
            ids = [device.index] if device.type == "cuda" else None
            # find_unused_parameters: encoders of modalities absent from a rank's batch and inactive
            # loss stages get no gradient there (their grads stay None where unused on every rank)
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                _LossForward(self.model), device_ids=ids, find_unused_parameters=True
            )

    def _backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def train_step(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor], Any]:
        """Forward, backward (GradCache when ``accum_steps > 1``), clip, optimiser and LR step."""
        cfg = self.config
        if cfg.accum_steps == 1:
            with self.autocast():
                if self.ddp is not None:
                    loss, parts = self.ddp(batch)
                else:
                    out = self.model.compute_loss(batch)
                    loss, parts = out.loss, out.parts
            self._backward(loss)
        else:
            out = accumulated_backward(
                self.model,
                batch,
                cfg.accum_steps,
                autocast=self.autocast,
                backward=self._backward,
                device=self.device,
            )
            loss, parts = out.loss, out.parts
            all_reduce_grads(self.params, self.env.world_size)
        grad_norm = None
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        for m in self._clampers:
            m.clamp_parameters_()
        after = getattr(self.model, "after_optimizer_step", None)
        if after is not None:  # e.g. the momentum-distillation teacher's EMA update
            after()
        return loss.detach(), {k: v.detach() for k, v in parts.items()}, grad_norm

    def _notify_step(self) -> None:
        """Tell the model the number of optimiser steps done (loss schedules, distillation ramp)."""
        fn = getattr(self.model, "set_step", None)
        if fn is not None:
            fn(self.step)

    # ------------------------------------------------------------------ logging, validation, checkpoints
    def _callback(self, name: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, name, None)
            if fn is not None:
                fn(self, *args)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        """Run training to ``max_steps``/``max_epochs`` or early stopping; return a :class:`TrainResult`."""
        from tqdm.auto import tqdm

        cfg = self.config
        self._setup()
        resumed = self._resume()
        self._notify_step()
        main = self.env.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.csv = CSVLogger(self.out_dir / "metrics.csv")
            self.val_csv = CSVLogger(self.out_dir / "val_metrics.csv")
            if not resumed:
                for p in (self.csv.path, self.val_csv.path):
                    p.unlink(missing_ok=True)
                self.csv, self.val_csv = CSVLogger(self.csv.path), CSVLogger(self.val_csv.path)
            else:
                self.csv.truncate_after(self.step)
                self.val_csv.truncate_after(self.step)
                self.history = read_csv_metrics(self.csv.path)
                self.val_history = read_csv_metrics(self.val_csv.path)
            (self.out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        purge = self.step + 1 if resumed else None
        self.tb = TensorBoardLogger(self.out_dir / "tensorboard", purge) if cfg.tensorboard and main else None
        self.pbar = tqdm(total=self.total_steps, initial=self.step, disable=not (cfg.progress and main))
        has_val = self.val_data is not None or self.val_fn is not None
        last_ckpt = self.step if resumed else -1
        self._t0 = time.perf_counter()
        self.model.train()
        self._callback("on_train_start")
        try:
            while self.step < self.total_steps and not self.should_stop:
                start, n_batches, broke = self.batch_in_epoch, 0, False
                for batch in self.loader.epoch_iter(self.epoch, self.batch_in_epoch):
                    n_batches += 1
                    stage = getattr(self.model, "loss_stage", None)
                    loss, parts, gnorm = self.train_step(to_device(batch, self.device))
                    self.step += 1
                    self._notify_step()
                    self.batch_in_epoch += 1
                    self.pbar.update(1)
                    row = None
                    if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                        row = self._log_step(loss, parts, gnorm, stage)
                    if has_val and cfg.val_every and self.step % cfg.val_every == 0:
                        self.validate()
                    if cfg.ckpt_every and self.step % cfg.ckpt_every == 0:
                        self.save_checkpoint()
                        last_ckpt = self.step
                    self._callback("on_step_end", self.step, row)
                    if self.step >= self.total_steps or self.should_stop:
                        broke = True
                        break
                spe = self.loader.steps_per_epoch
                if n_batches == 0 and start == 0:
                    raise ConfigError("train_data yielded no batch in an epoch")
                if not broke or (spe is not None and self.batch_in_epoch >= spe):
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    if has_val and cfg.val_every is None and self.last_val_step != self.step:
                        self.validate()
            if has_val and self.last_val_step != self.step:
                self.validate()
            if last_ckpt != self.step:
                self.save_checkpoint()
        finally:
            self.pbar.close()
            if self.tb is not None:
                self.tb.close()
        result = self._result()
        self._callback("on_train_end", result)
        teardown(self.env)
        return result

    def _result(self) -> TrainResult:
        best = self.ckpt_dir / "best.pt"
        final = dict(self.history[-1]) if self.history else {}
        if self.val_history:
            final.update({k: v for k, v in self.val_history[-1].items() if k not in ("step", "epoch")})
        result = TrainResult(
            out_dir=self.out_dir,
            step=self.step,
            epoch=self.epoch,
            final_metrics=final,
            history=list(self.history),
            val_history=list(self.val_history),
            best_checkpoint=best if self.best_value is not None else None,
            best_metric=self.best_value,
            last_checkpoint=self.last_checkpoint,
            stopped_early=self.should_stop,
        )
        if self.env.is_main:
            summary = {k: v for k, v in vars(result).items() if k not in ("history", "val_history")}
            (self.out_dir / "train_result.json").write_text(json.dumps(summary, indent=2, default=str))
        return result


def fit(
    model: nn.Module,
    train_data: Any,
    out_dir: str | os.PathLike,
    config: TrainConfig | Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> TrainResult:
    """Train ``model`` in one call: ``fit(model, data, "runs/x", max_steps=1000, lr=3e-4, val_fn=f)``.

    Keyword arguments that are :class:`TrainConfig` fields override ``config``; the others go to
    :class:`Trainer` (``val_data``, ``val_fn``, ``collate_fn``, ``callbacks``, ``extra``...).
    """
    names = {f.name for f in fields(TrainConfig)}
    overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    base = TrainConfig.from_dict(config).to_dict() if config is not None else {}
    if not base and "max_steps" not in overrides and "max_epochs" not in overrides:
        raise ConfigError("fit needs max_steps or max_epochs (in config or as keyword)")
    cfg = TrainConfig.from_dict({**base, **overrides})
    return Trainer(model, cfg, out_dir, train_data=train_data, **kwargs).fit()
