"""ROSMAP over seeds: M3CoL, its ablations, CLIP/SigLIP + probe and biomodal's linear baselines.

Runs ``recipes/omics/rosmap_m3col.yaml`` once per seed and variant (the seed sets both the
stratified 70/30 subject split and the initialisation), and prints mean +- std over seeds of
held-out accuracy, F1 and AUROC for

* M3CoL's fusion classifier (the model's own prediction; computed here from ``model.pt``
  with :func:`biomodal.recipes.families.omics.predict_proba`) and a logistic-regression probe
  on its concatenated embeddings;
* M3CoL without labels (contrastive term only, then the probe), supervised only
  (``contrastive_weight=0``), CLIP and SigLIP alignment followed by the probe;
* logistic regression on the standardised raw features: all three omics concatenated (early
  fusion) and each omics alone (the ``raw_*`` methods of the classification protocol, fitted
  on the same training subjects);

and cross-omics retrieval (mean recall@5 over the six directed pairs, chance beside).
Validation subjects (15 % of the training part) select the checkpoint; test subjects never do.

Usage: python bench/omics_rosmap_seeds.py [--seeds 0 1 2 3 4] [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

VARIANTS = {
    "m3col": [],
    "m3col_unsupervised": ["loss.params.n_classes=null"],
    "supervised_only": ["loss.params.contrastive_weight=0"],
    "clip": ["loss={name: clip}"],
    "siglip": ["loss={name: siglip}"],
}
MOGONET = {"accuracy": 0.815, "f1": 0.821, "auroc": 0.874}  # MOGONET paper, ROSMAP test half (Table 2)


def fusion_scores(run_dir: Path) -> dict[str, float]:
    """Held-out scores of the fusion classifier saved in ``run_dir/model.pt``."""
    from biomodal.eval.protocols.classification import classification_scores
    from biomodal.recipes import load
    from biomodal.recipes.families.omics import predict_proba

    model = load(run_dir / "model.pt")
    prepared = model.family.prepare(model.recipe, run_dir, preprocessors=model.preprocessors)
    test = prepared.eval_datasets["test"]
    return classification_scores(test.labels, predict_proba(model, test), 2)


def one_run(seed: int, name: str, overrides: list[str], out: Path, extra: list[str]) -> dict:
    from biomodal.recipes import run

    run_dir = out / name / f"seed{seed}"
    with contextlib.redirect_stdout(io.StringIO()):  # each run prints its metrics table
        metrics = run(
            "omics/rosmap_m3col",
            overrides=[f"seed={seed}", "eval.plots=false", *overrides, *extra],
            out=run_dir,
        )
    rows = {}
    methods = metrics["classification"]["methods"]
    rows[f"{name} (probe)"] = methods["probe"]
    if name in ("m3col", "supervised_only"):
        rows[f"{name} (fusion head)"] = fusion_scores(run_dir)
    if name == "m3col":
        for key, label in (
            ("raw_concat", "LR, raw concatenated"),
            ("raw_mrna", "LR, raw mRNA"),
            ("raw_methylation", "LR, raw methylation"),
            ("raw_mirna", "LR, raw miRNA"),
        ):
            rows[label] = methods[key]
    ret = metrics["retrieval"]
    rows[f"{name} (probe)"]["retrieval_r5"] = float(np.mean([r["recall@5"] for r in ret.values()]))
    rows[f"{name} (probe)"]["chance_r5"] = float(np.mean([r["chance@5"] for r in ret.values()]))
    rows[f"{name} (probe)"]["steps"] = metrics["train"]["steps"]
    return rows


def report(table: dict[str, list[dict]]) -> None:
    """Print the tables: scores over seeds, paired differences, retrieval."""

    def cell(rows: list[dict], key: str) -> str:
        v = np.array([r[key] for r in rows], float)
        return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"

    first = next(iter(table.values()))
    n_test, n_seeds = first[0]["n"], len(first)
    print(
        f"\nROSMAP, {n_seeds} seeds (stratified 70/30 holdout of the 245 training subjects, "
        f"{n_test} test subjects per seed); mean ± std over seeds\n"
    )
    print("| method | accuracy | F1 | AUROC |\n|---|---|---|---|")
    for label, rows in table.items():
        print(f"| {label} | {cell(rows, 'accuracy')} | {cell(rows, 'f1')} | {cell(rows, 'auroc')} |")
    print(
        f"| MOGONET (published, benchmark test half) | {MOGONET['accuracy']:.3f} | {MOGONET['f1']:.3f} | "
        f"{MOGONET['auroc']:.3f} |"
    )
    print("\n| cross-omics retrieval | mean recall@5 (6 directed pairs) | chance@5 | steps (early stopped) |")
    print("|---|---|---|---|")
    for label, rows in table.items():
        if "retrieval_r5" in rows[0]:
            print(
                f"| {label.replace(' (probe)', '')} | {cell(rows, 'retrieval_r5')} | "
                f"{rows[0]['chance_r5']:.3f} | {np.mean([r['steps'] for r in rows]):.0f} |"
            )
    pairs = [
        ("m3col (fusion head)", "LR, raw concatenated"),
        ("m3col (probe)", "LR, raw concatenated"),
        ("m3col (fusion head)", "supervised_only (fusion head)"),
    ]
    pairs = [(a, b) for a, b in pairs if a in table and b in table]
    if pairs:
        print("\n| paired difference over seeds | accuracy | F1 | AUROC | seeds where a > b (acc) |")
        print("|---|---|---|---|---|")
        for a, b in pairs:
            d = {
                k: np.array([x[k] - y[k] for x, y in zip(table[a], table[b])])
                for k in ("accuracy", "f1", "auroc")
            }
            cells = " | ".join(
                f"{v.mean():+.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}" for v in d.values()
            )
            print(f"| {a} − {b} | {cells} | {(d['accuracy'] > 0).sum()}/{len(d['accuracy'])} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--out", type=Path, default=None, help="run directories (default: a temporary folder)")
    ap.add_argument(
        "--quick", action="store_true", help="2 seeds, 60 steps, M3CoL and CLIP only (smoke test)"
    )
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--report", type=Path, default=None, help="print the tables of a saved rosmap_seeds.json")
    args = ap.parse_args()
    if args.report is not None:
        report(json.loads(args.report.read_text()))
        return
    logging.getLogger("biomodal").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    seeds, variants, extra = args.seeds, args.variants, []
    if args.quick:
        seeds, variants, extra = seeds[:2], ["m3col", "clip"], ["trainer.max_steps=60"]
    out = args.out or Path(tempfile.mkdtemp(prefix="rosmap_seeds_"))
    t0 = time.time()
    table: dict[str, list[dict]] = {}
    for seed in seeds:
        for name in variants:
            for label, scores in one_run(seed, name, VARIANTS[name], out, extra).items():
                table.setdefault(label, []).append(scores)
        print(f"seed {seed} done ({time.time() - t0:.0f} s)", flush=True)
    (out / "rosmap_seeds.json").write_text(json.dumps(table, indent=2, default=float))

    report(table)
    print(f"\n{len(seeds) * len(variants)} runs in {time.time() - t0:.0f} s; run directories: {out}")


if __name__ == "__main__":
    main()
