"""Checkpointing, resuming, logging and validation of the :class:`~biomodal.train.Trainer`."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from biomodal.errors import CheckpointError, ConfigError
from biomodal.train import checkpoint as ck
from biomodal.train._runtime import to_device
from biomodal.train.sampling import ResumableBatchSampler

__all__ = ["TrainerIOMixin"]


class TrainerIOMixin:
    """Methods of :class:`~biomodal.train.Trainer` that touch files, metrics and other ranks."""

    config: Any
    env: Any
    model: Any

    def _resume(self) -> bool:
        cfg = self.config
        if cfg.resume is None:
            return False
        path = ck.find_latest(self.ckpt_dir) if cfg.resume == "latest" else Path(cfg.resume)
        if path is None:
            return False
        state = ck.load_checkpoint(path, map_location="cpu")
        ck.load_model_weights(self.model, state)
        old = state.get("config", {})
        changed = [k for k in ("batch_size", "seed", "accum_steps") if old.get(k) != getattr(cfg, k)]
        if changed or state.get("world_size", 1) != self.env.world_size:
            warnings.warn(
                f"resuming {path} with different {changed or ['world_size']}: data position is approximate",
                stacklevel=3,
            )
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler") is not None and self.scaler.is_enabled():
                self.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: optimizer/scheduler state does not fit the model: {exc}") from exc
        rngs = state["rng"]
        ck.restore_rng(rngs[self.env.rank] if self.env.rank < len(rngs) else rngs[0])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        ts = state.get("trainer_state", {})
        self.best_value = ts.get("best_value")
        self.bad_validations = ts.get("bad_validations", 0)
        self.last_val_step = ts.get("last_val_step", -1)
        self.last_checkpoint = Path(path)
        return True

    # ------------------------------------------------------------------ one step
    def _mean_over_ranks(self, values: list[torch.Tensor]) -> list[float]:
        t = torch.stack([v.double().reshape(()) for v in values])
        if self.env.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
            t /= self.env.world_size
        return t.cpu().tolist()

    def _log_step(
        self, loss: torch.Tensor, parts: dict[str, torch.Tensor], grad_norm: Any, stage: int | None = None
    ) -> dict:
        keys = list(parts)
        vals = self._mean_over_ranks([loss, *[parts[k] for k in keys]])
        row: dict[str, float] = {"step": self.step, "epoch": self.epoch, "loss": vals[0]}
        row.update({k: v for k, v in zip(keys, vals[1:])})
        lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
        row["lr"] = lrs.get("head", lrs.get("head_no_decay", next(iter(lrs.values()))))
        if "encoder" in lrs or "encoder_no_decay" in lrs:
            row["lr_encoder"] = lrs.get("encoder", lrs.get("encoder_no_decay"))
        if grad_norm is not None:
            row["grad_norm"] = float(grad_norm)
        if stage is not None:  # the ScheduledLoss stage this step trained with
            row["loss_stage"] = stage
        row["time"] = time.perf_counter() - self._t0
        if self.env.is_main:
            self.history.append(row)
            self.csv.log(row)
            if self.tb is not None:
                self.tb.log(row, self.step)
            self.pbar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
        return row

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Compute ``val/loss`` on ``val_data`` (all ranks) and ``val_fn`` metrics (rank 0, broadcast)."""
        cfg, model = self.config, self.model
        model.eval()
        metrics: dict[str, float] = {}
        try:
            if self.val_data is not None:
                bs = ResumableBatchSampler(
                    len(self.val_data), cfg.batch_size, rank=self.env.rank, world_size=self.env.world_size,
                    shuffle=False, drop_last=False,
                )  # fmt: skip
                loader = DataLoader(self.val_data, batch_sampler=bs, collate_fn=self.collate_fn)
                losses = []
                for batch in loader:
                    with self.autocast():
                        losses.append(model.compute_loss(to_device(batch, self.device)).loss.float())
                metrics["val/loss"] = self._mean_over_ranks([torch.stack(losses).mean()])[0]
            if self.val_fn is not None:
                extra = [None]
                if self.env.is_main:
                    got = self.val_fn(model)
                    if not isinstance(got, Mapping):
                        raise ConfigError(f"val_fn must return a mapping of metrics, not {type(got)}")
                    extra = [{k: float(v) for k, v in got.items()}]
                if self.env.distributed:
                    dist.broadcast_object_list(extra, src=0)
                metrics.update(extra[0])
        finally:
            model.train()
        self._after_validation(metrics)
        return metrics

    def _after_validation(self, metrics: dict[str, float]) -> None:
        cfg = self.config
        row = {"step": self.step, "epoch": self.epoch, **metrics}
        if self.env.is_main:
            self.val_history.append(row)
            self.val_csv.log(row)
            if self.tb is not None:
                self.tb.log(metrics, self.step)
        self.last_val_step = self.step
        value = metrics.get(cfg.early_stopping_metric)
        if value is None:
            if cfg.early_stopping_patience is not None:
                raise ConfigError(
                    f"TrainConfig.early_stopping_metric={cfg.early_stopping_metric!r} is not among the "
                    f"validation metrics {sorted(metrics)}"
                )
        elif math.isfinite(value):
            sign = 1.0 if cfg.early_stopping_mode == "max" else -1.0
            if self.best_value is None or sign * (value - self.best_value) > 0:
                self.best_value, self.bad_validations = value, 0
                self.save_checkpoint(self.ckpt_dir / "best.pt")
            else:
                self.bad_validations += 1
                if cfg.early_stopping_patience and self.bad_validations >= cfg.early_stopping_patience:
                    self.should_stop = True
        self._callback("on_validation_end", metrics)

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Write a resumable checkpoint (rank 0; every rank contributes its RNG state)."""
        rng = [ck.capture_rng()]
        if self.env.distributed:
            rng = [None] * self.env.world_size
            dist.all_gather_object(rng, ck.capture_rng())
        path = Path(path) if path is not None else ck.step_path(self.ckpt_dir, self.step)
        if self.env.is_main:
            payload = {
                "format": ck.FORMAT,
                "version": ck.VERSION,
                "config": self.config.to_dict(),
                "modalities": list(self.model.modalities),
                "extra": self.extra,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "rng": rng,
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "world_size": self.env.world_size,
                "trainer_state": {
                    "best_value": self.best_value,
                    "bad_validations": self.bad_validations,
                    "last_val_step": self.last_val_step,
                },
                "torch_version": str(torch.__version__),
            }
            ck.save_checkpoint(payload, path)
            if path.name.startswith("step_"):
                ck.prune_checkpoints(self.ckpt_dir, self.config.keep_last)
        if path.name.startswith("step_"):
            self.last_checkpoint = path
        return path
