"""Symile's XOR experiment over seeds: symile, pairwise CLIP and GRAM; writes docs/symile_xor.md.

Runs ``recipes/clinical/symile_xor.yaml`` once per seed and loss (the seed sets the generated
data and the initialisation) and tabulates the accuracy of picking the right ``v_c`` among
``k`` candidates given ``v_a`` and ``v_b`` (mean ± sd over seeds), with chance (``1 / k``) and
the ceiling (a perfect scorer; below 1 because some candidates repeat the true ``v_c``) beside.
Each loss is scored the way its paper scores it: the multilinear inner product for symile, the
sum of pairwise similarities for clip, minus the Gram volume for gram. As a cross-check, the
symile model is also scored with the pairwise sum (higher-order information is invisible to
it).

Usage: python bench/symile_xor_seeds.py [--seeds 0 1 2 3 4] [--out DIR] [--doc docs/symile_xor.md]
       [--quick]
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

#: variant -> (loss override, k_candidate score)
VARIANTS = {
    "symile": ("{name: symile, params: {negative_sampling: n}}", "mip"),
    "clip": ("{name: clip}", "pairwise"),
    "gram": ("{name: gram}", "gram"),
}
DOC = Path(__file__).resolve().parents[1] / "docs" / "symile_xor.md"


def one_run(seed: int, name: str, out: Path, extra: list[str]) -> dict:
    """Train one variant on one seed; return its k-candidate figures (and the cross-check)."""
    from biomodal.eval.k_candidate import k_candidate_accuracy
    from biomodal.recipes import run

    loss, score = VARIANTS[name]
    k = 10
    protocol = f"[{{name: k_candidate, params: {{targets: [v_c], k: {k}, draws: 5, score: {score}}}}}]"
    run_dir = out / name / f"seed{seed}"
    with contextlib.redirect_stdout(io.StringIO()):
        metrics = run(
            "clinical/symile_xor",
            overrides=[f"seed={seed}", f"loss={loss}", f"eval.protocols={protocol}", *extra],
            out=run_dir,
            overwrite=True,
        )
    row = dict(metrics["k_candidate"]["v_c"])
    row["steps"] = metrics["train"]["steps"]
    row["seconds"] = metrics["train"]["seconds"]
    if name == "symile":  # the same embeddings scored pairwise
        from biomodal.eval import embed
        from biomodal.recipes import load

        model = load(run_dir / "model.pt")
        prepared = model.family.prepare(model.recipe, run_dir, preprocessors=model.preprocessors)
        emb = embed(model, prepared.eval_datasets["test"], progress=False)
        emb = {m: emb[m] for m in ("v_a", "v_b", "v_c")}
        row["pairwise_accuracy"] = k_candidate_accuracy(emb, "v_c", k=k, draws=5, score="pairwise")[
            "accuracy"
        ]
    return row


def _cell(values: list[float]) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def table(results: dict[str, list[dict]]) -> list[str]:
    """Markdown rows of the results (one row per loss)."""
    lines = [
        "| loss | score | accuracy (mean ± sd) | chance | ceiling | seeds | steps (early stopped) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        lines.append(
            f"| {name} | {rows[0]['score']} | {_cell([r['accuracy'] for r in rows])} | "
            f"{rows[0]['chance']:.3f} | {np.mean([r['ceiling'] for r in rows]):.3f} | {len(rows)} | "
            f"{np.mean([r['steps'] for r in rows]):.0f} |"
        )
    sym = results.get("symile", [])
    if sym and "pairwise_accuracy" in sym[0]:
        lines.append(
            f"| symile model, scored pairwise (cross-check) | pairwise | "
            f"{_cell([r['pairwise_accuracy'] for r in sym])} | {sym[0]['chance']:.3f} | "
            f"{np.mean([r['ceiling'] for r in sym]):.3f} | {len(sym)} | |"
        )
    return lines


def write_doc(results: dict[str, list[dict]], path: Path, command: str, seconds: float) -> None:
    """Replace the measured table of the docs page (between the markers) with these results."""
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    first = next(iter(results.values()))[0]
    body = [
        start,
        f"Measured with `{command}` ({seconds / 60:.0f} min, one thread per run); k = {first['k']}, "
        f"{first['n']} test triples per seed, {first['draws']} draws of the negatives per run.",
        "",
        *table(results),
        end,
    ]
    text = path.read_text() if path.is_file() else f"# Symile XOR\n\n{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    path.write_text(head + "\n".join(body) + tail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", type=Path, default=None, help="run directories (default: a temporary folder)")
    ap.add_argument("--doc", type=Path, default=DOC, help="docs page whose table is replaced")
    ap.add_argument("--no-doc", action="store_true", help="print only")
    ap.add_argument("--quick", action="store_true", help="2 seeds, 200 steps (smoke test; no docs update)")
    args = ap.parse_args()
    logging.getLogger("biomodal").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    seeds, extra = args.seeds, []
    if args.quick:
        seeds, extra = seeds[:2], ["trainer.max_steps=200"]
    out = args.out or Path(tempfile.mkdtemp(prefix="symile_xor_"))
    t0 = time.time()
    results: dict[str, list[dict]] = {}
    for seed in seeds:
        for name in args.variants:
            results.setdefault(name, []).append(one_run(seed, name, out, extra))
        print(f"seed {seed} done ({time.time() - t0:.0f} s)", flush=True)
    (out / "symile_xor_seeds.json").write_text(json.dumps(results, indent=2, default=float))
    print("\n".join(table(results)))
    if not (args.no_doc or args.quick):
        cmd = "python bench/symile_xor_seeds.py --seeds " + " ".join(map(str, seeds))
        write_doc(results, args.doc, cmd, time.time() - t0)
        print(f"wrote {args.doc}")
    print(f"{len(seeds) * len(args.variants)} runs in {time.time() - t0:.0f} s; run directories: {out}")


if __name__ == "__main__":
    main()
