"""Reuse a trained recipe: load a self-describing checkpoint, re-evaluate it, embed new data.

A recipe checkpoint is a trainer checkpoint whose ``extra`` records the
resolved recipe, its family, one fitted preprocessor state per modality (the gene
panel and normalisation of ``expression``, the tile geometry of ``histology``...),
the input spec each encoder was built with and the batch categories, so that a
model is rebuilt exactly and refuses data it was not trained for. The family
plugin rebuilds and validates the preprocessors; this module knows no modality.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from biomodal.errors import CheckpointError, ConfigError

__all__ = ["embed_h5ad", "evaluate_checkpoint", "load"]

_NEEDED = ("recipe", "preprocessors", "input_specs", "batch_categories")


def _read(path: str | os.PathLike) -> dict[str, Any]:
    from biomodal.train.checkpoint import load_checkpoint

    p = Path(path)
    if p.is_dir():  # a run directory: prefer its final model
        for cand in (p / "model.pt", p / "checkpoints" / "best.pt"):
            if cand.is_file():
                p = cand
                break
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found (give a .pt file or a run directory with model.pt)")
    ckpt = load_checkpoint(p)
    from biomodal.recipes.families import DEFAULT_FAMILY, get_family

    extra = dict(ckpt.get("extra") or {})
    if "recipe" in extra:  # checkpoints from before family plugins: the family converts them
        extra = get_family(str(extra.get("family", DEFAULT_FAMILY))).upgrade_checkpoint(extra)
    missing = [k for k in _NEEDED if k not in extra]
    if missing:
        raise CheckpointError(
            f"{p}: not a recipe checkpoint (extra lacks {', '.join(missing)}); "
            "load plain trainer checkpoints with ContrastiveModel.load_checkpoint"
        )
    ckpt["extra"] = extra
    ckpt["_path"] = str(p)
    return ckpt


def load(checkpoint: str | os.PathLike) -> Any:
    """Rebuild the trained model of a recipe checkpoint, ready for a notebook.

    Parameters
    ----------
    checkpoint
        A ``.pt`` written by :func:`biomodal.recipes.run` (``model.pt``, ``checkpoints/*.pt``)
        or a run directory.

    Returns
    -------
    ContrastiveModel
        In eval mode, with attributes ``recipe`` (:class:`~biomodal.recipes.Recipe`),
        ``family`` (the family plugin), ``preprocessors`` (one fitted preprocessor per
        modality, e.g. the gene pipeline of ``expression``), ``input_specs``,
        ``batch_categories`` and ``checkpoint_path``.

    Raises
    ------
    CheckpointError
        The file is not a recipe checkpoint, a preprocessor does not fit the encoder it
        feeds (named by modality), or the weights do not fit the recorded recipe.
    """
    from biomodal.recipes._build import build_model
    from biomodal.recipes.families import get_family
    from biomodal.recipes.schema import load_recipe

    ckpt = _read(checkpoint)
    extra = ckpt["extra"]
    try:
        recipe = load_recipe(extra["recipe"])
    except ConfigError as exc:
        detail = str(exc).removeprefix("invalid recipe <dict>:").strip()
        raise CheckpointError(
            f"{ckpt['_path']}: the recipe recorded in this checkpoint is not valid (was it edited?): {detail}"
        ) from None
    family = get_family(recipe.data.family)
    preprocessors = family.load_preprocessors(extra["preprocessors"])
    missing = [m for m in extra["preprocessors"] if m not in preprocessors]
    if missing:
        raise CheckpointError(
            f"{ckpt['_path']}: family {family.name!r} cannot rebuild preprocessors of {missing}"
        )
    family.check_checkpoint(preprocessors, extra["input_specs"])
    model = build_model(recipe, input_specs=extra["input_specs"], n_batches=len(extra["batch_categories"]))
    try:
        model.load_checkpoint(ckpt)
    except CheckpointError:
        raise
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{ckpt['_path']}: weights do not fit the recorded recipe ({exc})") from exc
    model.eval()
    model.recipe = recipe
    model.family = family
    model.preprocessors = preprocessors
    model.input_specs = dict(extra["input_specs"])
    model.batch_categories = list(extra["batch_categories"])
    model.checkpoint_path = ckpt["_path"]
    return model


def evaluate_checkpoint(
    checkpoint: str | os.PathLike, *, out: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Re-evaluate a checkpoint on its recipe's held-out split; write ``metrics.json`` to ``out``."""
    import json

    from biomodal._atomic import atomic_write_text
    from biomodal.recipes._evaluate import evaluate
    from biomodal.recipes.runner import format_metrics

    model = load(checkpoint)
    ckpt_path = Path(model.checkpoint_path)
    out_dir = Path(out) if out is not None else ckpt_path.parent / f"eval_{ckpt_path.stem}"
    if (out_dir / "run.json").is_file() or (out_dir / "checkpoints").is_dir():
        raise CheckpointError(
            f"--out {out_dir} is a training run folder; evaluation never replaces its metrics.json: "
            "choose another --out (default: eval_<checkpoint> beside the checkpoint)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared = model.family.prepare(model.recipe, out_dir, preprocessors=model.preprocessors)
    metrics = evaluate(model.recipe, model, prepared, out_dir)
    metrics["recipe"] = model.recipe.name
    metrics["checkpoint"] = str(ckpt_path)
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2, default=float))
    atomic_write_text(out_dir / "metrics.md", format_metrics(metrics))
    return metrics


def embed_h5ad(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    output: str | os.PathLike,
    *,
    slide: str | os.PathLike | None = None,
    mpp: float | None = None,
) -> Any:
    """Embed every item of a new file with a checkpoint; write ``obsm['X_biomodal_<m>']``.

    The family of the checkpoint's recipe reads the file (the spatial family takes an
    ``.h5ad`` section following the spatial convention, covering the checkpoint's gene panel;
    a mismatched panel is refused with the missing genes listed). ``slide`` and ``mpp`` give
    the image an ``.h5ad`` without ``uns['spatial']['slide_path']`` refers to (``biomodal
    embed --slide --mpp``). The output is written atomically (temporary file, then rename):
    an existing file is never left half-written.
    """
    import tempfile

    import numpy as np

    from biomodal.eval import embed

    model = load(checkpoint)
    with tempfile.TemporaryDirectory(prefix="biomodal-embed-") as tmp:
        source = Path(data)
        if slide is not None or mpp is not None:  # record the slide in a copy the family reads
            from biomodal.io import read_h5ad

            completed = read_h5ad(source, slide=slide, mpp=mpp)
            source = Path(tmp) / source.name
            completed.write_h5ad(source)
        ds, adata = model.family.embed_file(model, source)
    emb = embed(model, ds, progress=False)
    out = adata.copy()
    for name in model.modalities:
        out.obsm[f"X_biomodal_{name}"] = np.asarray(emb[name], dtype=np.float32)
    out.uns["biomodal"] = {"checkpoint": str(model.checkpoint_path), "recipe": model.recipe.name}
    dest = Path(output)
    dest.parent.mkdir(parents=True, exist_ok=True)
    from biomodal._atomic import atomic_path

    with atomic_path(dest) as tmp:  # a refused or interrupted write never leaves a partial file
        out.write_h5ad(tmp)
    return out
