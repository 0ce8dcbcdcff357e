"""Implementations of the ``biomodal`` subcommands (imported only when a command runs)."""

from __future__ import annotations

import argparse


def cmd_run(args: argparse.Namespace) -> int:
    """``biomodal run RECIPE``."""
    from biomodal.recipes import run

    run(args.recipe, overrides=args.overrides, out=args.out, resume=args.resume, overwrite=args.overwrite)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """``biomodal eval CHECKPOINT``: re-evaluate on the recipe's held-out split."""
    from biomodal.recipes.checkpoint import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.checkpoint, out=args.out)
    from biomodal.recipes.runner import format_metrics

    print(format_metrics(metrics))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """``biomodal embed CHECKPOINT DATA -o OUT.h5ad``."""
    from biomodal.recipes.checkpoint import embed_h5ad

    adata = embed_h5ad(args.checkpoint, args.data, args.output, slide=args.slide, mpp=args.mpp)
    keys = ", ".join(k for k in adata.obsm if k.startswith("X_biomodal_"))
    print(f"wrote {args.output}: {adata.n_obs} spots, obsm: {keys}")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    """``biomodal demo-data OUT``."""
    from biomodal.datasets import make_demo_spatial

    ds = make_demo_spatial(
        args.out,
        n_donors=args.donors,
        sections_per_donor=args.sections_per_donor,
        seed=args.seed,
        spot_pitch_um=args.spot_pitch_um,
        n_test_donors=args.n_test_donors,
        small=args.small,
    )
    print(ds)
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    """``biomodal recipes``: list the shipped recipes with their first comment line."""
    from biomodal.recipes.schema import SHIPPED_DIR

    for path in sorted(SHIPPED_DIR.rglob("*.yaml")):
        first = next((ln[1:].strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        print(f"{path.relative_to(SHIPPED_DIR).with_suffix('')!s:28s} {first}")
    return 0


__all__ = ["cmd_demo_data", "cmd_embed", "cmd_eval", "cmd_recipes", "cmd_run"]
