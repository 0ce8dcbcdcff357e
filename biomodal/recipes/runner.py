"""``biomodal.recipes.run``: read data, train, evaluate, write the run directory.

A run directory holds ``recipe.yaml`` (the resolved recipe), ``metrics.csv``
and TensorBoard logs from the trainer, ``checkpoints/``, ``metrics.json``,
``metrics.md`` (a readable table) and ``plots/``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import yaml

from biomodal._atomic import atomic_write_text
from biomodal.recipes.schema import Recipe, load_recipe

__all__ = ["format_metrics", "run"]

log = logging.getLogger("biomodal")


def _save_model(path: Path, model: Any, config: Any, extra: dict[str, Any]) -> None:
    """Write the final weights with everything needed to rebuild them (atomically)."""
    from biomodal.train.checkpoint import FORMAT, VERSION, save_checkpoint

    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": config.to_dict(),
        "modalities": list(model.modalities),
        "extra": extra,
        "model": model.state_dict(),
    }
    save_checkpoint(payload, path)


def checkpoint_extra(rec: Recipe, prepared: Any) -> dict[str, Any]:
    """Return what a recipe checkpoint records beside its weights (see ``biomodal.recipes.checkpoint``)."""
    return {
        "recipe": rec.to_dict(),
        "family": rec.data.family,
        "preprocessors": {m: p.state_dict() for m, p in prepared.preprocessors.items()},
        "input_specs": {m: dict(v) for m, v in prepared.input_specs.items()},
        "batch_categories": [str(c) for c in prepared.batch_categories],
    }


def use_feature_cache(rec: Recipe, model: Any, prepared: Any, tcfg: Any) -> Any:
    """Swap the datasets of frozen, un-augmented modalities for cached features; the training set.

    Training, validation, evaluation (the untrained copy shares the frozen encoder's weights)
    and the encoder-feature baselines then read the features instead of running the encoder.
    """
    names = [n for n, m in rec.modalities.items() if m.freeze and m.cache_features]
    if not names:
        return prepared.datasets["train"]
    from biomodal.train.feature_cache import with_feature_cache

    kw = dict(modalities=names, cache_dir=rec.output.feature_cache, batch_size=tcfg.batch_size)
    prepared.datasets, _ = with_feature_cache(model, prepared.datasets, **kw)
    prepared.eval_datasets, _ = with_feature_cache(model, prepared.eval_datasets, **kw)
    return prepared.datasets["train"]


def run(
    recipe: str | os.PathLike | dict[str, Any] | Recipe,
    *,
    overrides: list[str] | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Run a recipe end to end and return its metrics.

    Parameters
    ----------
    recipe
        YAML path, shipped name (``"spatial/demo"``), dict or :class:`Recipe`.
    overrides
        ``key=value`` overrides, as ``biomodal run --set``.
    out
        Run directory (default: the recipe's ``output.dir``). A folder that already holds a
        run is refused unless ``resume`` or ``overwrite`` is given.
    resume
        Continue the run in ``out`` from its newest checkpoint (the recipe must be the same
        except ``trainer.max_steps``); implied by ``trainer.resume``.
    overwrite
        Remove the run in ``out`` first (generated data in ``out/data`` are kept for reuse).

    Returns
    -------
    dict
        The content of ``metrics.json``.
    """
    t0 = time.time()
    rec = load_recipe(recipe, overrides)  # validate before importing anything heavy
    if rec.sweep:
        from biomodal.recipes.sweep import run_sweep

        return run_sweep(rec, out=out, resume=resume, overwrite=overwrite)

    from biomodal.data import BatchAwareSampler
    from biomodal.recipes._build import ReversalSchedule, build_model, check_names
    from biomodal.recipes._evaluate import evaluate, resolve_protocols, validation
    from biomodal.recipes._run_dir import claim_run_dir
    from biomodal.recipes.families import get_family
    from biomodal.train import TrainConfig, Trainer

    check_names(rec)  # registry names fail here, not after the data are read
    family = get_family(rec.data.family)
    run_dir = rec.run_dir(out)
    family.on_run_dir(rec.data, run_dir)
    resume = resume or rec.trainer.get("resume") is not None
    if claim_run_dir(run_dir, rec.to_dict(), resume=resume, overwrite=overwrite):
        trainer = {**rec.trainer, "resume": rec.trainer.get("resume") or "latest"}
        rec = load_recipe({**rec.to_dict(), "trainer": trainer})
    atomic_write_text(run_dir / "recipe.yaml", yaml.safe_dump(rec.to_dict(), sort_keys=False))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    prepared = family.prepare(rec, run_dir)
    train_ds = prepared.datasets["train"]
    model = build_model(rec, input_specs=prepared.input_specs, n_batches=len(prepared.batch_categories))
    needs_untrained = any(
        info.needs_untrained or getattr(cfg, "untrained", False) for info, cfg in resolve_protocols(rec)
    )
    untrained = copy.deepcopy(model) if needs_untrained else None
    val_fn, monitor = validation(rec, prepared)
    defaults: dict[str, Any] = {"seed": rec.seed}
    if monitor is not None:  # the metric early stopping and best.pt follow comes from the protocol
        defaults["early_stopping_metric"] = monitor
    tcfg = TrainConfig.from_dict({**defaults, **rec.trainer})
    train_ds = use_feature_cache(rec, model, prepared, tcfg)
    sampler = None
    if rec.batch_correction.sampler != "none":
        sampler = BatchAwareSampler(
            train_ds.batch_codes,
            tcfg.batch_size,
            mode=rec.batch_correction.sampler,
            mix_fraction=rec.batch_correction.mix_fraction,
            seed=rec.seed,
        )
    extra = checkpoint_extra(rec, prepared)
    adv = rec.batch_correction.adversarial
    callbacks = [ReversalSchedule(adv.max_reversal, adv.schedule)] if adv.weight > 0 else []
    trainer = Trainer(
        model,
        tcfg,
        run_dir,
        train_data=train_ds,
        val_data=prepared.eval_datasets.get("val"),
        batch_sampler=sampler,
        val_fn=val_fn,
        callbacks=callbacks,
        extra=extra,
    )
    result = trainer.fit()
    if not trainer.env.is_main:  # under torchrun only rank 0 evaluates and writes the run directory
        return {}
    if result.best_checkpoint is not None:  # selected on validation retrieval, never on test
        model.load_checkpoint(result.best_checkpoint)
    _save_model(run_dir / "model.pt", model, tcfg, extra)
    metrics = evaluate(rec, model, prepared, run_dir, untrained=untrained)
    metrics["recipe"] = rec.name
    metrics["train"] = {
        "steps": result.step,
        "final_loss": float(result.final_metrics.get("loss", math.nan)),
        "seconds": round(time.time() - t0, 1),
        "last_checkpoint": str(result.last_checkpoint or ""),
        "best_checkpoint": str(result.best_checkpoint or ""),
        "stopped_early": result.stopped_early,
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=float))
    atomic_write_text(run_dir / "metrics.md", format_metrics(metrics))
    print(format_metrics(metrics))
    print(f"run directory: {run_dir}")
    return metrics


def format_metrics(metrics: dict[str, Any]) -> str:
    """Render a readable Markdown table per metrics section (each protocol renders its own)."""
    from biomodal.eval.protocols import get_protocol, list_protocols

    unit = metrics.get("unit", "items")
    lines = [
        f"## {metrics.get('recipe', 'run')}: held-out {metrics.get('split', 'test')} "
        f"({metrics.get('n_test', '?')} {unit})",
    ]
    names = metrics.get("protocols") or list_protocols()
    seen: set[str] = set()
    for name in names:
        info = get_protocol(name)
        if info.section in seen or info.markdown is None or not metrics.get(info.section):
            continue
        seen.add(info.section)
        body = info.markdown(metrics[info.section])
        if body:
            lines += ["", *body]
    return "\n".join(lines) + "\n"
