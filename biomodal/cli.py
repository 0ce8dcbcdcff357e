"""The ``biomodal`` command line.

Subcommands import their heavy dependencies only when they run, so
``biomodal --help`` stays fast.
"""

from __future__ import annotations

import argparse
import signal
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
    p.add_argument("--slide", default=None, help="image obsm['spatial'] refers to, when the h5ad names none")
    p.add_argument("--mpp", type=float, default=None, help="microns per pixel of that image")

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

    if hasattr(signal, "SIGXFSZ"):  # a file-size limit (ulimit -f) becomes an OSError, not a kill
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        except ValueError:  # not the main thread (main() called from a thread): keep the default
            pass
    try:
        from biomodal import _cli_commands

        return int(getattr(_cli_commands, f"cmd_{args.command.replace('-', '_')}")(args) or 0)
    except BiomodalError as exc:  # bad input: the message names the file, key or value
        return _fail(str(exc), 2)
    except OSError as exc:  # unwritable or missing path, disk full, file size limit
        return _fail(_os_message(exc), 1)
    except MemoryError:
        return _fail("out of memory; use a smaller recipe (batch size, tile size, cache: none)", 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def _one_line(message: str) -> str:
    """Join a multi-line message (e.g. a list of recipe problems) into one line."""
    parts = [ln.strip().removeprefix("- ").strip() for ln in message.splitlines() if ln.strip()]
    out = ""
    for part in parts:
        out += part if not out else (" " if out.endswith(":") else "; ") + part
    return out


def _fail(message: str, code: int) -> int:
    print(f"biomodal: error: {_one_line(message)}", file=sys.stderr)
    return code


def _os_message(exc: OSError) -> str:
    """``<path>: <reason>`` for an operating-system error, with a hint for a full disk."""
    import errno

    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = ""
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        hint = " (no space left or file size limit reached; free space or choose another --out)"
    if exc.filename is None:
        return f"{reason}{hint}" if exc.strerror else f"{exc}{hint}"
    return f"{exc.filename}: {reason}{hint}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
