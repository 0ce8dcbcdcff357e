"""The ``biomodal`` command line.

Subcommands import their heavy dependencies only when they run, so
``biomodal --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from biomodal import __version__


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biomodal",
        description="Multimodal contrastive learning for biomedical data.",
    )
    parser.add_argument("--version", action="version", version=f"biomodal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="train and evaluate a recipe (YAML)")
    p.add_argument("recipe", help="recipe YAML file, or the name of a shipped recipe such as 'spatial/demo'")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set trainer.max_steps=50 (repeatable)",
    )
    p.add_argument("--out", default=None, help="run directory (default: the recipe's output.dir)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its newest checkpoint"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="remove the run in --out first (generated data are kept)"
    )

    p = sub.add_parser("eval", help="re-evaluate a checkpoint on its recipe's evaluation data")
    p.add_argument("checkpoint")
    p.add_argument("--out", default=None, help="directory for metrics.json (default: next to the checkpoint)")

    p = sub.add_parser("embed", help="embed a dataset with a checkpoint into an .h5ad file")
    p.add_argument("checkpoint")
    p.add_argument("data", help="an .h5ad file with uns['spatial'] pointing at its slide, or a recipe YAML")
    p.add_argument("-o", "--output", required=True, help="output .h5ad")

    p = sub.add_parser("demo-data", help="generate the synthetic multi-donor spatial demo dataset")
    p.add_argument("out", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--donors", type=int, default=3)
    p.add_argument("--sections-per-donor", type=int, default=2)
    p.add_argument("--spot-pitch-um", type=float, default=None, help="spot centre-to-centre distance")
    p.add_argument("--n-test-donors", type=int, default=1)
    p.add_argument("--small", action="store_true", help="small slides for quick tests")

    sub.add_parser("recipes", help="list the shipped recipes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``biomodal`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from biomodal.errors import BiomodalError

    try:
        from biomodal import _cli_commands

        return int(getattr(_cli_commands, f"cmd_{args.command.replace('-', '_')}")(args) or 0)
    except BiomodalError as exc:
        print(f"biomodal: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
