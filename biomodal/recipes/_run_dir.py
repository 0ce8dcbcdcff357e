"""A run folder belongs to one run: claim it, resume it, or replace it, never mix two runs.

A run folder records the hash of its recipe in ``run.json``. Starting a recipe into a folder
that already holds a run is an error unless the caller asks to ``resume`` (continue the same
run: refused when the recipe differs in anything but ``trainer.max_steps``) or to
``overwrite`` (the old run's files are removed first; generated data in ``data/`` are kept,
they are reused only when their generation parameters match).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from biomodal.errors import ConfigError

__all__ = ["claim_run_dir", "recipe_hash"]

#: files and folders that make a directory a run folder
_RUN_FILES = ("run.json", "recipe.yaml", "metrics.json", "metrics.csv", "model.pt", "checkpoints")
#: what --overwrite keeps (content-addressed generated data)
_KEEP = ("data",)
#: recipe keys that may change when a run is resumed
_RESUMABLE = (("trainer", "max_steps"), ("trainer", "resume"))


def recipe_hash(recipe: dict[str, Any]) -> str:
    """SHA-256 of the resolved recipe without the keys a resume may change."""
    d = json.loads(json.dumps(recipe, default=str))
    for section, key in _RESUMABLE:
        d.get(section, {}).pop(key, None)
    d.pop("sweep", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out: list[str] = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        name = f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{name}.")
        elif a != b and tuple(name.split(".")) not in _RESUMABLE:
            out.append(name)
    return out


def claim_run_dir(run_dir: Path, recipe: dict[str, Any], *, resume: bool, overwrite: bool) -> bool:
    """Make ``run_dir`` this run's folder; return whether an earlier run is being resumed.

    Raises
    ------
    ConfigError
        The folder holds another run and neither ``resume`` nor ``overwrite`` was given, or
        ``resume`` was asked for a different recipe, or both flags were given.
    """
    if resume and overwrite:
        raise ConfigError("give either --resume or --overwrite, not both")
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir}: exists and is not a folder")
    present = [f for f in _RUN_FILES if (run_dir / f).exists()]
    digest = recipe_hash(recipe)
    if present and overwrite:
        for child in run_dir.iterdir():
            if child.name in _KEEP:
                continue
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        present = []
    if present and not resume:
        raise ConfigError(
            f"{run_dir} already holds a run ({', '.join(present)}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    resumed = False
    if present and resume:
        info = _read_info(run_dir)
        if info.get("recipe_hash") != digest:
            old = info.get("recipe") or {}
            diff = ", ".join(_differences(old, recipe)[:8]) or "unknown (no run.json)"
            raise ConfigError(
                f"{run_dir}: --resume needs the same recipe (only trainer.max_steps may change); "
                f"differs in: {diff}"
            )
        resumed = True
    run_dir.mkdir(parents=True, exist_ok=True)
    from biomodal._atomic import atomic_write_text

    atomic_write_text(run_dir / "run.json", json.dumps({"recipe_hash": digest, "recipe": recipe}, indent=1))
    return resumed


def _read_info(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "run.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable run record ({exc}); use --overwrite to start afresh") from exc
