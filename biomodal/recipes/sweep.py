"""Sweeps: one base recipe, named variants given as overrides, one comparison table.

A recipe with a ``sweep`` section runs once per variant, each into its own
sub-directory of the run directory, and writes ``sweep.json`` and ``sweep.md``
(the table of headline metrics side by side)::

    sweep:
      none: []
      adversarial: [batch_correction.adversarial.weight=0.1]
      within_batch_negatives: [batch_correction.sampler=within]
"""

from __future__ import annotations

import json
import os
from typing import Any

from biomodal.recipes.schema import Recipe, load_recipe

__all__ = ["run_sweep", "sweep_table"]


def _get(metrics: dict[str, Any], dotted: str) -> float | None:
    node: Any = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None


def _columns(metrics: dict[str, Any], recipe: Recipe | None) -> list[tuple[str, str]]:
    """Headline ``(dotted key, label)`` of every protocol a variant ran (from its protocols)."""
    from biomodal.eval.protocols import get_protocol

    if recipe is not None:
        specs = [(p.name, p.parsed()) for p in recipe.eval.protocols]
    else:
        specs = [(n, get_protocol(n).parse({})) for n in metrics.get("protocols", [])]
    cols: list[tuple[str, str]] = []
    for name, cfg in specs:
        info = get_protocol(name)
        if info.headline is not None:
            cols += [c for c in info.headline(cfg, metrics) if c not in cols]
    return cols


def sweep_table(results: dict[str, dict[str, Any]], recipe: Recipe | None = None) -> str:
    """Markdown table of the headline metrics of each variant, columns from the protocols.

    Parameters
    ----------
    results
        ``{variant: metrics}``.
    recipe
        The base recipe (its protocol parameters shape the columns); default: the protocol
        names each variant's metrics record, with default parameters.
    """
    per_variant = {
        name: dict((label, key) for key, label in _columns(m, recipe)) for name, m in results.items()
    }
    labels: list[str] = []
    for cols in per_variant.values():
        labels += [lab for lab in cols if lab not in labels]
    labels = [lab for lab in labels if any(_get(results[v], c[lab]) is not None
                                           for v, c in per_variant.items() if lab in c)]  # fmt: skip
    lines = ["| variant | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for name, m in results.items():
        cells = [_get(m, per_variant[name][lab]) if lab in per_variant[name] else None for lab in labels]
        lines.append(f"| {name} | " + " | ".join("" if c is None else f"{c:.3f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def run_sweep(
    recipe: Recipe, *, out: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False
) -> dict[str, Any]:
    """Run every variant of ``recipe.sweep``; return ``{variant: metrics}``.

    Parameters
    ----------
    recipe
        A recipe whose ``sweep`` maps variant names to override lists.
    out
        Run directory (default: the recipe's ``output.dir``); variant ``v`` runs in ``out/v``.
    resume, overwrite
        Passed to each variant's :func:`~biomodal.recipes.run`.
    """
    from biomodal._atomic import atomic_write_text
    from biomodal.recipes.runner import run

    run_dir = recipe.run_dir(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    base = recipe.to_dict()
    variants = base.pop("sweep")
    from biomodal.recipes.families import get_family

    data = recipe.data.model_copy(deep=True)
    get_family(data.family).on_run_dir(data, run_dir)  # e.g. generated data: once, shared
    base["data"] = data.model_dump(mode="json")

    def fresh() -> dict[str, Any]:  # overrides edit nested dicts in place: give each a deep copy
        return json.loads(json.dumps(base))

    for overrides in variants.values():
        load_recipe(fresh(), overrides)  # fail fast on a bad variant before training anything
    results: dict[str, Any] = {}
    for name, overrides in variants.items():
        results[name] = run(
            fresh(), overrides=list(overrides), out=run_dir / name, resume=resume, overwrite=overwrite
        )
        atomic_write_text(run_dir / "sweep.json", json.dumps(results, indent=2, default=float))
    table = sweep_table(results, recipe)
    atomic_write_text(run_dir / "sweep.md", f"# {recipe.name}\n\n{table}")
    print(table)
    return results
