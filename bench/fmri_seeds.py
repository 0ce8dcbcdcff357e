"""fMRI family figures over seeds (the tables of docs/fmri.md).

``--synthetic``: ``recipes/fmri/cross_subject.yaml`` (generated data, 4 training subjects, the
300 shared test stimuli) once per seed (data, split and initialisation all follow the seed):
top-1 among 300 both ways (30 draws, per subject, averaged), chance beside, against ridge and
the untrained model; then the new-subject curve for ``sub-05`` (left out of training): a new
adapter on the frozen shared model vs the same architecture from scratch vs ridge, on 1 %, 10 %
and 100 % of its training trials.

``--real``: ``recipes/fmri/multisubject_tasks.yaml`` (the 19 real contrast maps) once per seed
(the subject split follows it), with reorientation on and off: task decoding (words vs faces)
of held-out subjects' maps, by top-1 retrieval among the two task captions (chance 1/2).

Usage: python bench/fmri_seeds.py [--synthetic] [--real] [--seeds 0 1 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _run(recipe: str, out: Path, sets: list[str]) -> dict:
    from biomodal.recipes import run

    with contextlib.redirect_stdout(io.StringIO()):
        return run(ROOT / "recipes" / "fmri" / recipe, out=out, overwrite=True, overrides=sets)


def _ms(values: list[float]) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def synthetic(seeds: list[int], out: Path, cache: str) -> dict:
    """Cross-subject top-1 among 300 and the new-subject curve, per seed."""
    from biomodal.recipes.checkpoint import load
    from biomodal.recipes.families._fmri_transfer import new_subject_curve

    rows = []
    for seed in seeds:
        t0 = time.time()
        rd = out / f"synthetic_{seed}"
        sets = [f"seed={seed}", f"data.synthetic.seed={seed}", f"data.targets.cache_dir={cache}"]
        m = _run("cross_subject.yaml", rd, sets)
        model = load(rd / "model.pt")
        prepared = model.family.prepare(model.recipe, rd, preprocessors=model.preprocessors)
        curve = new_subject_curve(model, prepared, seed=seed)
        rows.append({"seed": seed, "top1": m["top1_among_n"], "curve": curve, "seconds": time.time() - t0})
        print(f"synthetic seed {seed}: {time.time() - t0:.0f} s", flush=True)
    t = [r["top1"] for r in rows]
    print("\n### Cross-subject, generated data: top-1 among 300 (30 draws, 4 subjects), seeds", seeds)
    print("| model | brain->stimulus | stimulus->brain | chance |\n|---|---|---|---|")
    for name, get in (
        ("BiMixCo -> SoftCLIP, per-subject adapters", lambda r: r),
        ("ridge (per subject)", lambda r: r["baselines"]["ridge"]),
        ("untrained model", lambda r: r["baselines"]["untrained"]),
    ):
        b = _ms([get(r)["brain_to_stimulus"] for r in t])
        s = _ms([get(r)["stimulus_to_brain"] for r in t])
        print(f"| {name} | {b} | {s} | {t[0]['chance']:.4f} |")
    print("\n### New subject (sub-05): top-1 among 300, brain->stimulus / stimulus->brain")
    print("| training trials | new adapter, frozen shared model | from scratch | ridge |\n|---|---|---|---|")
    for i, point in enumerate(rows[0]["curve"]["curve"]):
        cells = []
        for kind in ("shared", "scratch", "ridge"):
            b = _ms([r["curve"]["curve"][i][kind]["brain_to_stimulus"] for r in rows])
            s = _ms([r["curve"]["curve"][i][kind]["stimulus_to_brain"] for r in rows])
            cells.append(f"{b} / {s}")
        frac = f"{point['fraction']:.0%} ({point['n_train']})"
        print(f"| {frac} | " + " | ".join(cells) + " |")
    return {"rows": rows}


def real(seeds: list[int], out: Path, cache: str) -> dict:
    """Task decoding of held-out subjects, reorientation on and off."""
    res: dict[str, list] = {"on": [], "off": []}
    for seed in seeds:
        for key, flag in (("on", "true"), ("off", "false")):
            sets = [f"seed={seed}", f"data.reorient={flag}", f"data.targets.cache_dir={cache}"]
            m = _run("multisubject_tasks.yaml", out / f"real_{key}_{seed}", sets)
            res[key].append({"n_test": m["n_test"], **m["top1_among_n"]})
        print(f"real seed {seed} done", flush=True)
    print("\n### Real maps: words vs faces of held-out subjects (top-1 among the 2 captions), seeds", seeds)
    print("| reorientation | method | brain->caption (accuracy) | caption->brain | chance | test maps |")
    print("|---|---|---|---|---|---|")
    for key in ("on", "off"):
        r = res[key]
        n = int(np.sum([x["n_test"] for x in r]))
        for name, get in (
            ("model", lambda x: x),
            ("ridge", lambda x: x["baselines"]["ridge"]),
            ("untrained", lambda x: x["baselines"]["untrained"]),
        ):
            b = _ms([get(x)["full_brain_to_stimulus"] for x in r])
            s = _ms([get(x)["full_stimulus_to_brain"] for x in r])
            print(f"| {key} | {name} | {b} | {s} | 0.5 | {n} over {len(r)} splits |")
    return res


def main() -> None:
    """Parse arguments and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--real", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.disable(logging.INFO)
    out = args.out or Path(tempfile.mkdtemp(prefix="fmri_bench_"))
    cache = str(out / "target_cache")
    results = {}
    if args.synthetic or not args.real:
        results["synthetic"] = synthetic(args.seeds, out, cache)
    if args.real or not args.synthetic:
        results["real"] = real(args.seeds, out, cache)
    (out / "fmri_seeds.json").write_text(json.dumps(results, indent=1, default=float))
    print(f"\nresults: {out / 'fmri_seeds.json'}")


if __name__ == "__main__":
    main()
