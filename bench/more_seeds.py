"""MoRE demo over seeds and N-modality losses (clip, symile, gram): the tables of docs/clinical_more.md.

Runs ``recipes/clinical/more_demo.yaml`` once per seed and loss (the seed sets the generated
patients and the initialisation) and prints Markdown tables, mean +/- sd over the seeds, of
zero-shot AUROC per condition (each on the modality that shows it) beside the untrained model
and chance, retrieval recall@10 of every modality pair beside the untrained model and chance,
and pick-one-of-10 accuracy per held-out modality (scored as each loss's paper scores it)::

    OMP_NUM_THREADS=2 .venv/bin/python bench/more_seeds.py --seeds 0 1 2 --out runs/more_seeds

Extra ``--set key=value`` overrides go to every run (``--set data.generated.reports=builtin``).
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

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "clinical" / "more_demo.yaml"
LOSSES = ("clip", "symile", "gram")
CONDITIONS = ("cardiomegaly", "pleural_effusion", "atrial_fibrillation", "myocardial_infarction")
MODS = ("xray", "ecg", "report", "labs")


def _rows(kind: str) -> list[tuple[str, str]]:
    if kind == "zero_shot":
        rows = [(c, f"zero_shot.per_class.{c}") for c in CONDITIONS]
        return [
            *rows,
            ("macro", "zero_shot.macro_auroc"),
            ("macro, untrained model", "zero_shot.untrained_macro_auroc"),
        ]
    if kind == "retrieval":
        return [(f"{a}->{b}", f"retrieval.{a}_to_{b}.recall@10") for a in MODS for b in MODS if a < b]
    return [(f"pick {t} of 10", f"k_candidate.{t}.accuracy") for t in MODS]


def table(runs: dict[str, dict[int, dict[str, Any]]], kind: str, extra: dict[str, str] | None = None) -> str:
    """One row per figure, one column per loss (mean +/- sd over seeds), then ``extra`` columns."""
    extra = extra or {}
    head = "| figure | " + " | ".join(runs) + "".join(f" | {e}" for e in extra) + " |"
    lines = [head, "|---" * (len(runs) + len(extra) + 1) + "|"]
    for label, key in _rows(kind):
        cells = []
        for per_seed in runs.values():
            vals = [v for m in per_seed.values() if (v := metric(m, key)) is not None]
            cells.append(mean_sd(vals))
        for _, ekey in extra.items():
            k2 = key.replace("recall@10", ekey) if kind == "retrieval" else ekey
            vals = [v for m in runs[next(iter(runs))].values() if (v := metric(m, k2)) is not None]
            cells.append(mean_sd(vals))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Run every loss on every seed; write ``<out>/<loss>/seed<k>/`` runs and ``<out>/tables.md``."""
    from biomodal.recipes import run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES)
    ap.add_argument("--out", type=Path, default=Path("runs/more_seeds"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for loss in args.losses:
        runs[loss] = {}
        for seed in args.seeds:
            out = args.out / loss / f"seed{seed}"
            with contextlib.redirect_stdout(io.StringIO()):
                over = [f"seed={seed}", f"loss.name={loss}", *args.overrides]
                runs[loss][seed] = run(RECIPE, overrides=over, out=out, overwrite=True)
            print(f"{loss} seed {seed}: {runs[loss][seed]['train']['seconds']:.0f} s", file=sys.stderr)
    text = "\n\n".join([
        "Zero-shot AUROC per condition (X-ray: cardiomegaly, effusion; ECG: AF, MI; chance 0.5)\n\n"
        + table(runs, "zero_shot"),
        "Retrieval recall@10 (whole test set, patients with both modalities)\n\n"
        + table(runs, "retrieval", {"untrained (clip)": "untrained_recall@10", "chance": "chance@10"}),
        "Pick one of 10 given the other three modalities (chance 0.100)\n\n" + table(runs, "k_candidate"),
    ])  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tables.md").write_text(text + "\n")
    (args.out / "per_seed.json").write_text(json.dumps(runs, indent=1, default=float))
    print(text)


if __name__ == "__main__":
    main()
