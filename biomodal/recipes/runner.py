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

from biomodal.recipes.schema import Recipe, load_recipe

__all__ = ["format_metrics", "run"]

log = logging.getLogger("biomodal")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


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


def _val_fn(prepared: Any, ks: tuple[int, ...]) -> Any:
    """Full-set validation retrieval (mean of both directions' recall@1) for early stopping."""
    from biomodal.eval import embed, retrieval

    val = prepared.eval_datasets.get("val")
    if val is None:
        return None

    def fn(model: Any) -> dict[str, float]:
        emb = embed(model, val, modalities=["histology", "expression"], progress=False)
        a = retrieval(emb["histology"], emb["expression"], ks=ks)
        b = retrieval(emb["expression"], emb["histology"], ks=ks)
        out = {f"val/{k}_mean": (a[k] + b[k]) / 2 for k in a if k.startswith("recall@")}
        out["val/median_rank_mean"] = (a["median_rank"] + b["median_rank"]) / 2
        return out

    return fn


def run(
    recipe: str | os.PathLike | dict[str, Any] | Recipe,
    *,
    overrides: list[str] | None = None,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Run a recipe end to end and return its metrics.

    Parameters
    ----------
    recipe
        YAML path, shipped name (``"spatial/demo"``), dict or :class:`Recipe`.
    overrides
        ``key=value`` overrides, as ``biomodal run --set``.
    out
        Run directory (default: the recipe's ``output.dir``).

    Returns
    -------
    dict
        The content of ``metrics.json``.
    """
    t0 = time.time()
    rec = load_recipe(recipe, overrides)  # validate before importing anything heavy
    if rec.sweep:
        from biomodal.recipes.sweep import run_sweep

        return run_sweep(rec, out=out)

    from biomodal.data import BatchAwareSampler
    from biomodal.recipes._build import ReversalSchedule, build_model
    from biomodal.recipes._data import prepare_data
    from biomodal.recipes._evaluate import evaluate
    from biomodal.train import TrainConfig, Trainer

    run_dir = rec.run_dir(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rec.data.source == "demo" and rec.data.demo.root is None:
        # record where the generated data lives so `biomodal eval` finds it again
        rec.data.demo.root = str((run_dir / "data").resolve())
    _atomic_write(run_dir / "recipe.yaml", yaml.safe_dump(rec.to_dict(), sort_keys=False))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    prepared = prepare_data(rec, run_dir)
    train_ds = prepared.datasets["train"]
    model = build_model(
        rec, n_genes=len(prepared.pipeline.var_names_), n_batches=len(train_ds.batch_categories)
    )
    untrained = copy.deepcopy(model)
    tcfg = TrainConfig.from_dict({"seed": rec.seed, **rec.trainer})
    sampler = None
    if rec.batch_correction.sampler != "none":
        sampler = BatchAwareSampler(
            train_ds.batch_codes,
            tcfg.batch_size,
            mode=rec.batch_correction.sampler,
            mix_fraction=rec.batch_correction.mix_fraction,
            seed=rec.seed,
        )
    extra = {
        "recipe": rec.to_dict(),
        "genes": prepared.pipeline.state_dict(),
        "dataset": train_ds.spec,
        "batch_categories": list(train_ds.batch_categories),
    }
    adv = rec.batch_correction.adversarial
    callbacks = [ReversalSchedule(adv.max_reversal, adv.schedule)] if adv.weight > 0 else []
    trainer = Trainer(
        model,
        tcfg,
        run_dir,
        train_data=train_ds,
        val_data=prepared.eval_datasets.get("val"),
        batch_sampler=sampler,
        val_fn=_val_fn(prepared, tuple(rec.eval.ks)),
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
    _atomic_write(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=float))
    _atomic_write(run_dir / "metrics.md", format_metrics(metrics))
    print(format_metrics(metrics))
    print(f"run directory: {run_dir}")
    return metrics


def format_metrics(metrics: dict[str, Any]) -> str:
    """Render a readable Markdown table of the headline metrics (chance and baselines beside them)."""
    lines = [
        f"## {metrics.get('recipe', 'run')}: held-out {metrics.get('split', 'test')} "
        f"({metrics.get('n_test', '?')} spots)",
        "",
        "| retrieval | R@1 | R@5 | R@10 | chance@1 | chance@10 | median rank |",
        "|---|---|---|---|---|---|---|",
    ]
    nan = float("nan")
    for name, r in metrics.get("retrieval", {}).items():
        r5, r10, c10 = r.get("recall@5", nan), r.get("recall@10", nan), r.get("chance@10", nan)
        lines.append(
            f"| {name} | {r['recall@1']:.3f} | {r5:.3f} | {r10:.3f} "
            f"| {r['chance@1']:.4f} | {c10:.4f} | {r['median_rank']:.0f} |"
        )
    e = metrics.get("expression", {})
    if e:
        lines += ["", "| expression (Pearson, top HVGs) | value |", "|---|---|"]
        for key in (
            "pearson_mean",
            "knn_pearson_mean",
            "baseline_pearson_mean",
            "colour_histogram_pearson_mean",
        ):
            if key in e:
                lines.append(f"| {key} | {e[key]:.3f} |")
    for lab, res in metrics.get("probe", {}).items():
        lines += ["", f"| linear probe: {lab} | balanced acc | chance |", "|---|---|---|"]
        for mod, r in res.items():
            bal, chance = r.get("balanced_accuracy", nan), r.get("chance_uniform", nan)
            lines.append(f"| {mod} | {bal:.3f} | {chance:.3f} |")
    b = metrics.get("batch", {})
    rows = {k: v for k, v in b.items() if isinstance(v, dict)}
    if rows:
        keys = list(next(iter(rows.values())))
        lines += ["", "| batch/bio metrics | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for name, vals in rows.items():
            lines.append(f"| {name} | " + " | ".join(f"{vals[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"
