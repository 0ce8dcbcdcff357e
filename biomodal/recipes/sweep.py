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

_COLUMNS = (
    ("retrieval.histology_to_expression.recall@1", "h->e R@1"),
    ("retrieval.histology_to_expression.recall@10", "h->e R@10"),
    ("retrieval.expression_to_histology.recall@10", "e->h R@10"),
    ("retrieval.histology_to_expression.chance@10", "chance@10"),
    ("expression.pearson_mean", "HEST r"),
    ("expression.baseline_pearson_mean", "untrained r"),
    ("expression.knn_pearson_mean", "kNN r"),
    ("batch.joint.ilisi", "iLISI"),
    ("batch.joint.asw_batch", "ASW batch"),
    ("batch.joint.kbet", "kBET"),
    ("batch.joint.graph_connectivity", "graph conn."),
    ("batch.joint.asw_label", "ASW label"),
    ("batch.joint.nmi", "NMI"),
    ("batch.joint.ari", "ARI"),
)


def _get(metrics: dict[str, Any], dotted: str) -> float | None:
    if dotted.startswith("batch.joint.") and "joint_corrected" in metrics.get("batch", {}):
        dotted = dotted.replace("batch.joint.", "batch.joint_corrected.", 1)  # post-hoc variants
    node: Any = metrics
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None


def sweep_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table of the headline metrics of each variant."""
    cols = [(k, label) for k, label in _COLUMNS if any(_get(m, k) is not None for m in results.values())]
    lines = ["| variant | " + " | ".join(label for _, label in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in results.items():
        cells = [_get(m, k) for k, _ in cols]
        lines.append(f"| {name} | " + " | ".join("" if c is None else f"{c:.3f}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def run_sweep(recipe: Recipe, *, out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run every variant of ``recipe.sweep``; return ``{variant: metrics}``.

    Parameters
    ----------
    recipe
        A recipe whose ``sweep`` maps variant names to override lists.
    out
        Run directory (default: the recipe's ``output.dir``); variant ``v`` runs in ``out/v``.
    """
    from biomodal.recipes.runner import _atomic_write, run

    run_dir = recipe.run_dir(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    base = recipe.to_dict()
    variants = base.pop("sweep")
    if base["data"]["source"] == "demo" and base["data"]["demo"]["root"] is None:
        base["data"]["demo"]["root"] = str((run_dir / "data").resolve())  # generate once, share

    def fresh() -> dict[str, Any]:  # overrides edit nested dicts in place: give each a deep copy
        return json.loads(json.dumps(base))

    for overrides in variants.values():
        load_recipe(fresh(), overrides)  # fail fast on a bad variant before training anything
    results: dict[str, Any] = {}
    for name, overrides in variants.items():
        results[name] = run(fresh(), overrides=list(overrides), out=run_dir / name)
        _atomic_write(run_dir / "sweep.json", json.dumps(results, indent=2, default=float))
    table = sweep_table(results)
    _atomic_write(run_dir / "sweep.md", f"# {recipe.name}\n\n{table}")
    print(table)
    return results
