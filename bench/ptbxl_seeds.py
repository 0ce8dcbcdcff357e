"""PTB-XL ECG <-> report recipe over seeds: the table of docs/clinical.md.

Runs ``recipes/clinical/ptbxl_ecg_report.yaml`` once per seed (the seed changes the
initialisation and the batch order; the folds are fixed: train 1-6, val 7, test 8) and prints a
Markdown table of the test-fold figures, mean +- standard deviation over the seeds, beside
chance and the baselines (untrained model, hand-made ECG features and the supervised 1-D CNN
probed the same way)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/ptbxl_seeds.py --seeds 0 1 2 --out runs/ptbxl_seeds

Extra ``--set key=value`` overrides go to every run (``--set data.text=statements``). The ECG
files are read and preprocessed once per process (the family caches them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clinical" / "ptbxl_ecg_report.yaml"

#: (label, dotted metrics key)
ROWS = (
    ("ECG->report R@1", "retrieval.ecg_to_report.recall@1"),
    ("ECG->report R@10", "retrieval.ecg_to_report.recall@10"),
    ("report->ECG R@1", "retrieval.report_to_ecg.recall@1"),
    ("report->ECG R@10", "retrieval.report_to_ecg.recall@10"),
    ("chance R@1", "retrieval.ecg_to_report.chance@1"),
    ("untrained ECG->report R@10", "retrieval.ecg_to_report.untrained_recall@10"),
    ("untrained report->ECG R@10", "retrieval.report_to_ecg.untrained_recall@10"),
    ("chance R@10", "retrieval.ecg_to_report.chance@10"),
    ("zero-shot macro AUROC", "zero_shot.macro_auroc"),
    ("zero-shot macro AUROC (untrained model)", "zero_shot.untrained_macro_auroc"),
    ("probe macro AUROC (trained ECG embedding)", "probe.superclass.macro_auroc"),
    ("probe macro AUROC (trained ECG encoder)", "probe.superclass.trained_encoder_macro_auroc"),
    ("probe macro AUROC (untrained ECG embedding)", "probe.superclass.untrained_macro_auroc"),
    ("probe macro AUROC (untrained ECG encoder)", "probe.superclass.untrained_encoder_macro_auroc"),
    ("probe macro AUROC (ecg_features, hand-made)", "probe.superclass.features_macro_auroc"),
    ("probe macro AUROC (supervised 1-D CNN)", "probe.superclass.supervised_ecg_macro_auroc"),
    ("train steps", "train.steps"),
    ("train seconds", "train.seconds"),
)


def _get(metrics: dict[str, Any], key: str) -> float:
    node: Any = metrics
    for part in key.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return float(node) if isinstance(node, (int, float)) else float("nan")


def table(per_seed: dict[int, dict[str, Any]]) -> str:
    """Markdown table: one row per figure, one column per seed, then mean +- sd."""
    seeds = sorted(per_seed)
    head = "| figure | " + " | ".join(f"seed {s}" for s in seeds) + " | mean +- sd |"
    lines = [head, "|---" * (len(seeds) + 2) + "|"]
    for label, key in ROWS:
        vals = np.array([_get(per_seed[s], key) for s in seeds])
        fmt = "{:.0f}" if key.startswith("train.") else "{:.3f}"
        cells = [fmt.format(v) for v in vals]
        sd = vals.std(ddof=1) if len(vals) > 1 else float("nan")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {fmt.format(vals.mean())} +- {sd:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the seeds, write ``<out>/seed<k>/`` runs and ``<out>/table.md``, print the table."""
    from biomodal.recipes import run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("runs/ptbxl_seeds"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    per_seed = {}
    for seed in args.seeds:
        out = args.out / f"seed{seed}"
        per_seed[seed] = run(RECIPE, overrides=[f"seed={seed}", *args.overrides], out=out, overwrite=True)
    text = table(per_seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(text + "\n")
    (args.out / "per_seed.json").write_text(json.dumps(per_seed, indent=1, default=float))
    print(text)


if __name__ == "__main__":
    main()
