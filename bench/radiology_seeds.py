"""RadCLIP slice pooling (attention vs mean) and PubMedCLIP-style fine-tuning over seeds.

``radclip``: ``recipes/clinical/radclip_volume.yaml`` with RadCLIP's attention slice pooling and
with mean pooling, once per seed (the seed sets the generated volumes and the initialisation).
``image_text``: ``recipes/clinical/image_text.yaml`` once per seed; its probe compares the
fine-tuned image tower with the ImageNet tower it started from. Prints Markdown tables, mean
+/- sd over seeds, beside the untrained model and chance::

    OMP_NUM_THREADS=2 .venv/bin/python bench/radiology_seeds.py --which radclip image_text --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _seeds_table import mean_sd, metric

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "clinical"
#: study -> (recipe, {variant: overrides}, [(label, dotted key)])
STUDIES: dict[str, tuple[str, dict[str, list[str]], list[tuple[str, str]]]] = {
    "radclip": (
        "radclip_volume.yaml",
        {"attention": ["modalities.volume.params.pooling=attention"],
         "mean": ["modalities.volume.params.pooling=mean"]},
        [*[(f"zero-shot AUROC {f}", f"zero_shot.per_class.{f}") for f in ("nodule", "cyst", "calcification")],
         ("zero-shot macro AUROC", "zero_shot.macro_auroc"),
         ("zero-shot macro AUROC, untrained", "zero_shot.untrained_macro_auroc"),
         ("volume->report R@1", "retrieval.volume_to_report.recall@1"),
         ("volume->report R@10", "retrieval.volume_to_report.recall@10"),
         ("report->volume R@10", "retrieval.report_to_volume.recall@10"),
         ("R@10 untrained", "retrieval.volume_to_report.untrained_recall@10"),
         ("chance R@1", "retrieval.volume_to_report.chance@1"),
         ("chance R@10", "retrieval.volume_to_report.chance@10"),
         ("probe macro AUROC (embedding)", "probe.findings.macro_auroc"),
         ("probe macro AUROC (trained encoder)", "probe.findings.trained_encoder_macro_auroc"),
         ("probe macro AUROC (untrained encoder)", "probe.findings.untrained_encoder_macro_auroc"),
         ("train seconds", "train.seconds")],
    ),
    "image_text": (
        "image_text.yaml",
        {"fine-tuned": []},
        [("probe AUROC cardiomegaly (fine-tuned tower)",
          "probe.conditions.trained_encoder_per_class.cardiomegaly"),
         ("probe AUROC cardiomegaly (ImageNet tower)",
          "probe.conditions.untrained_encoder_per_class.cardiomegaly"),
         ("probe AUROC effusion (fine-tuned tower)",
          "probe.conditions.trained_encoder_per_class.pleural_effusion"),
         ("probe AUROC effusion (ImageNet tower)",
          "probe.conditions.untrained_encoder_per_class.pleural_effusion"),
         ("probe macro AUROC, 4 conditions (fine-tuned)", "probe.conditions.trained_encoder_macro_auroc"),
         ("probe macro AUROC, 4 conditions (ImageNet)", "probe.conditions.untrained_encoder_macro_auroc"),
         ("zero-shot AUROC cardiomegaly", "zero_shot.per_class.cardiomegaly"),
         ("zero-shot AUROC effusion", "zero_shot.per_class.pleural_effusion"),
         ("zero-shot macro AUROC, untrained", "zero_shot.untrained_macro_auroc"),
         ("xray->report R@10", "retrieval.xray_to_report.recall@10"),
         ("xray->report R@10 untrained", "retrieval.xray_to_report.untrained_recall@10"),
         ("chance R@10", "retrieval.xray_to_report.chance@10"),
         ("train seconds", "train.seconds")],
    ),
}  # fmt: skip


def table(runs: dict[str, dict[int, dict[str, Any]]], rows: list[tuple[str, str]]) -> str:
    """One row per figure, one column per variant (mean +/- sd over seeds)."""
    lines = ["| figure | " + " | ".join(runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for label, key in rows:
        cells = [
            mean_sd([v for m in per.values() if (v := metric(m, key)) is not None]) for per in runs.values()
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run the studies; write ``<out>/<study>/<variant>/seed<k>/`` runs and ``<out>/<study>.md``."""
    from biomodal.recipes import run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--which", nargs="+", default=list(STUDIES), choices=list(STUDIES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=Path("runs/radiology_seeds"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    for study in args.which:
        recipe, variants, rows = STUDIES[study]
        runs: dict[str, dict[int, dict[str, Any]]] = {}
        for name, over in variants.items():
            runs[name] = {}
            for seed in args.seeds:
                out = args.out / study / name / f"seed{seed}"
                with contextlib.redirect_stdout(io.StringIO()):
                    m = run(RECIPES / recipe, overrides=[f"seed={seed}", *over, *args.overrides], out=out,
                            overwrite=True)  # fmt: skip
                runs[name][seed] = m
                print(f"{study} {name} seed {seed}: {m['train']['seconds']:.0f} s", file=sys.stderr)
        text = table(runs, rows)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{study}.md").write_text(text + "\n")
        (args.out / f"{study}.json").write_text(json.dumps(runs, indent=1, default=float))
        print(f"\n{study} ({recipe}, seeds {args.seeds})\n\n{text}")


if __name__ == "__main__":
    main()
