"""The her2st recipe over seeds, variants and folds: every compared figure as mean +/- sd.

Runs ``recipes/spatial/her2st.yaml`` once per (fold, variant, seed) into ``--out`` (a finished
run is reused, so an interrupted sweep resumes) and prints one Markdown table per
fold. ``--write-docs`` replaces the generated block ``--block`` (default ``her2st_seeds``) of
``docs/her2st.md``, between ``<!-- <block>:begin -->`` and ``<!-- <block>:end -->``.

Folds: ``recipe`` (train A2 + C2, early-stop on C3, test A1: within-patient), ``A_to_C``
(train A2, early-stop on A1, test C2 + C3) and ``C_to_A`` (train C2, early-stop on C3, test A1 +
A2): leave-one-patient-out, as HEST splits across patients; ``C2_to_C3`` (train C2, test C3, no
early stopping): within patient C, whose images are at full resolution. Variants: ``scratch`` (the recipe's
small CNN), ``frozen_effnet`` (ImageNet EfficientNet-Lite0, frozen, linear head trained) and
``finetune_effnet`` (the same backbone fine-tuned at a tenth of the head's learning rate); the
pretrained variants read 112 um tiles at 1 um/px (112 px).

    python bench/her2st_seeds.py --seeds 0 1 2 3 4 --variants scratch --folds recipe
    python bench/her2st_seeds.py --seeds 0 1 2 --variants scratch frozen_effnet --folds A_to_C C_to_A
    python bench/her2st_seeds.py ... --write-docs      # regenerate the table in docs/her2st.md
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _seeds_table import mean_sd, metric

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "spatial" / "her2st.yaml"
DOC = ROOT / "docs" / "her2st.md"


def _sec(name: str, split: str, labels: bool = False) -> dict[str, Any]:
    img = "image.png" if name.startswith("A") else "image.jpg"
    out = {"name": name, "donor": name[0], "split": split, "counts": f"{name}/counts.tsv.gz",
           "spots": f"{name}/spots.tsv", "image": f"{name}/{img}"}  # fmt: skip
    if labels:
        out["labels"] = f"{name}/labels.tsv"
    return out


FOLDS: dict[str, list[dict[str, Any]] | None] = {
    "recipe": None,  # the recipe's own sections
    "A_to_C": [_sec("A2", "train"), _sec("A1", "val", True), _sec("C2", "test"), _sec("C3", "test")],
    "C_to_A": [_sec("C2", "train"), _sec("C3", "val"), _sec("A1", "test", True), _sec("A2", "test")],
    "C2_to_C3": [_sec("C2", "train"), _sec("C3", "test")],  # within patient C, full-resolution images
}
_EFFNET = {"encoder": "efficientnet_lite0", "params": {"pretrained": True}}
VARIANTS: dict[str, dict[str, Any]] = {
    "scratch": {},
    "frozen_effnet": {"modalities.histology": {**_EFFNET, "freeze": True}, "data.mpp": 1.0},
    "finetune_effnet": {"modalities.histology": _EFFNET, "data.mpp": 1.0, "trainer.encoder_lr": 1e-4},
}
_PROBE = "spatial_probe.label."
_ONCE = ("colour_histogram", "efficientnet_lite0")
#: (label, dotted metrics key) of the compared figures
FIGURES = [
    ("HEST r: trained (head output)", "expression.pearson_mean"),
    ("HEST r: trained encoder, before the head", "expression.trained_encoder_pearson_mean"),
    ("HEST r: model at initialisation (head output)", "expression.baseline_pearson_mean"),
    ("HEST r: encoder at initialisation, before the head", "expression.untrained_encoder_pearson_mean"),
    ("HEST r: colour histogram", "expression.colour_histogram_pearson_mean"),
    ("HEST r: frozen ImageNet EfficientNet-Lite0", "expression.efficientnet_lite0_pearson_mean"),
    ("HEST r within section (mean over test sections): trained", "expression.pearson_mean_within_section"),
    ("HEST r within section: model at initialisation", "expression.baseline_pearson_mean_within_section"),
    ("HEST r within section: colour histogram", "expression.colour_histogram_pearson_mean_within_section"),
    ("HEST r within section: ImageNet Lite0", "expression.efficientnet_lite0_pearson_mean_within_section"),
    ("kNN (BLEEP) r, k = 50", "expression.knn_pearson_mean"),
    ("h->e R@10", "retrieval.histology_to_expression.recall@10"),
    ("e->h R@10", "retrieval.expression_to_histology.recall@10"),
    ("chance@10", "retrieval.histology_to_expression.chance@10"),
    ("h->e median rank", "retrieval.histology_to_expression.median_rank"),
    ("tissue probe bal. acc: histology embedding", "spatial_probe.label.histology.balanced_accuracy"),
    ("tissue probe bal. acc: model at initialisation", _PROBE + "untrained:histology.balanced_accuracy"),
    ("tissue probe bal. acc: colour histogram", _PROBE + "colour_histogram:histology.balanced_accuracy"),
    ("tissue probe bal. acc: ImageNet Lite0", _PROBE + "efficientnet_lite0:histology.balanced_accuracy"),
    ("tissue probe chance (1 / classes)", "spatial_probe.label.histology.chance_balanced"),
]  # fmt: skip


def recipe_for(fold: str, variant: str, seed: int, data_root: Path, steps: int | None) -> dict[str, Any]:
    """The her2st recipe as a dict with the fold's sections, the variant's overrides and ``seed``."""
    rec = yaml.safe_load(RECIPE.read_text())
    rec["seed"] = seed
    rec["data"]["root"] = str(data_root)
    if FOLDS[fold] is not None:
        rec["data"]["sections"] = copy.deepcopy(FOLDS[fold])
    for key, value in VARIANTS[variant].items():
        node = rec
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = copy.deepcopy(value)
    if steps is not None:
        rec["trainer"]["max_steps"] = steps
    if seed != 0:  # deterministic baselines (same features for every seed): computed once, at seed 0
        for proto in rec["eval"]["protocols"]:
            base = proto.get("params", {}).get("baselines")
            if base:
                proto["params"]["baselines"] = [b for b in base if b not in _ONCE]
    return rec


def run_one(out: Path, fold: str, variant: str, seed: int, data_root: Path, steps: int | None) -> dict:
    """Metrics of one run (reused when ``metrics.json`` exists)."""
    from biomodal.recipes import run

    run_dir = out / fold / variant / f"seed{seed}"
    path = run_dir / "metrics.json"
    if path.is_file():
        metrics = json.loads(path.read_text())
    else:
        metrics = run(recipe_for(fold, variant, seed, data_root, steps), out=run_dir, overwrite=True)
    return metrics


def table(results: dict[tuple[str, str], list[dict]], fold: str) -> str:
    """Markdown table of one fold: a row per figure, a column per variant."""
    variants = [v for (f, v) in results if f == fold]
    lines = ["| figure | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    multi = any((metric(m, "expression.n_sections") or 1) > 1 for v in variants for m in results[(fold, v)])
    for label, key in FIGURES:
        if "within section" in label and not multi:  # one test section: the same as the pooled figure
            continue
        cells = [
            mean_sd([x for m in results[(fold, v)] if (x := metric(m, key)) is not None], show_n=True)
            for v in variants
        ]
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_genes(metrics: dict, n: int = 5) -> str:
    """The best-predicted genes of one run: selected on the test sections themselves."""
    per = metrics.get("expression", {}).get("pearson_per_gene", {})
    top = sorted(((r, g) for g, r in per.items() if r == r), reverse=True)[:n]
    return ", ".join(f"{g} ({r:.2f})" for r, g in top)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep and print (or write) the tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--variants", nargs="+", default=["scratch"], choices=sorted(VARIANTS))
    ap.add_argument("--folds", nargs="+", default=["recipe"], choices=sorted(FOLDS))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "her2st_seeds")
    ap.add_argument("--data-root", type=Path, default=(RECIPE.parent / "../../../shared/data/spatial/her2st"))
    ap.add_argument("--steps", type=int, default=None, help="override trainer.max_steps (smoke runs)")
    ap.add_argument(
        "--existing-only",
        action="store_true",
        help="tabulate finished runs only (a variant may have fewer seeds; n is in each cell)",
    )
    ap.add_argument("--write-docs", action="store_true", help=f"replace the generated block of {DOC.name}")
    ap.add_argument("--block", default="her2st_seeds", help="name of the docs block (<!-- NAME:begin -->)")
    args = ap.parse_args(argv)
    root = args.data_root.resolve()
    results: dict[tuple[str, str], list[dict]] = {}
    for fold in args.folds:
        for variant in args.variants:
            for seed in args.seeds:
                if (
                    args.existing_only
                    and not (args.out / fold / variant / f"seed{seed}" / "metrics.json").is_file()
                ):
                    continue
                results.setdefault((fold, variant), []).append(
                    run_one(args.out, fold, variant, seed, root, args.steps)
                )
    cmd = "python bench/her2st_seeds.py " + " ".join(argv if argv is not None else sys.argv[1:])
    parts = [
        f"Generated by `{cmd}` (seeds {args.seeds}; deterministic baselines computed once, at seed 0).",
        "",
    ]
    for fold in args.folds:
        parts += [f"**Fold `{fold}`**", "", table(results, fold), ""]
        first = results.get((fold, args.variants[0]), [{}])[0]
        if first.get("expression"):
            parts.append(
                f"Best-predicted genes of {args.variants[0]}, seed {args.seeds[0]} (**selected on the test "
                f"sections themselves**, so optimistic by construction): {best_genes(first)}."
            )
            parts.append("")
    text = "\n".join(parts)
    print(text)
    if args.write_docs:
        begin, end = f"<!-- {args.block}:begin -->", f"<!-- {args.block}:end -->"
        doc = DOC.read_text()
        if begin not in doc or end not in doc:
            raise SystemExit(f"{DOC}: markers {begin} / {end} not found")
        head, rest = doc.split(begin, 1)
        DOC.write_text(head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1])
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
