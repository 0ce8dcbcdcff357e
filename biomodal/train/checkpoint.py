"""Self-describing, atomically written training checkpoints and RNG-state capture.

A checkpoint is a dict of tensors and primitive containers only, so it loads with
``torch.load(weights_only=True)``::

    {"format": "biomodal-checkpoint", "version": 1, "config": {...}, "modalities": [...],
     "extra": {...caller metadata...}, "model": state_dict, "optimizer": ..., "scheduler": ...,
     "scaler": ... | None, "rng": [per-rank states], "step": int, "epoch": int,
     "batch_in_epoch": int, "world_size": int, "trainer_state": {...}, "torch_version": str}
"""

from __future__ import annotations

import errno
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biomodal._atomic import atomic_path
from biomodal.errors import CheckpointError, ConfigError

__all__ = [
    "FORMAT",
    "VERSION",
    "capture_rng",
    "check_safe",
    "find_latest",
    "load_checkpoint",
    "load_model_weights",
    "prune_checkpoints",
    "restore_rng",
    "save_checkpoint",
    "step_path",
]

FORMAT = "biomodal-checkpoint"
VERSION = 1
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


def step_path(ckpt_dir: str | os.PathLike, step: int) -> Path:
    """Path of the checkpoint written after optimiser step ``step``."""
    return Path(ckpt_dir) / f"step_{step:08d}.pt"


def capture_rng() -> dict[str, Any]:
    """States of python ``random``, numpy's global generator, torch CPU and every CUDA device."""
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": [int(v) for v in np_state["state"]["key"]],
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": np.asarray(n["key"], dtype=np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def check_safe(obj: Any, where: str = "extra") -> None:
    """Raise :class:`ConfigError` unless ``obj`` holds only tensors and primitive containers."""
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_safe(v, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise ConfigError(f"checkpoint {where} has a key {k!r} of type {type(k).__name__}; use str")
            check_safe(v, f"{where}[{k!r}]")
        return
    raise ConfigError(
        f"checkpoint {where} holds a {type(obj).__name__}; only tensors, numbers, strings, lists and "
        "dicts load with torch.load(weights_only=True) (convert arrays with .tolist())"
    )


def save_checkpoint(payload: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``payload`` atomically: temporary file in the same folder, fsync, ``os.replace``."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(dict(payload), tmp)
    except OSError as exc:  # disk full, file-size limit, unwritable folder: keep the errno
        raise OSError(exc.errno, f"cannot write checkpoint ({exc.strerror or exc})", str(path)) from exc
    except RuntimeError as exc:  # torch's zip writer reports a failed write as a RuntimeError
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OSError(
            errno.EIO,
            "cannot write checkpoint: the write failed (disk full, file-size limit or unwritable "
            f"folder?; torch: {detail[:120]})",
            str(path),
        ) from exc
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load and validate a biomodal checkpoint (``weights_only=True``).

    Raises
    ------
    CheckpointError
        Missing file, unreadable content, or not a biomodal checkpoint of a known version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    _check_container(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt members, pickles with code objects...
        raise CheckpointError(f"{path}: {_load_failure(exc)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        fmt = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a {FORMAT!r} file (format={fmt!r})")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {ckpt.get('version')!r}; this biomodal reads {VERSION}"
        )
    return ckpt


_EXPECTED = "expected model.pt or checkpoints/*.pt written by biomodal"


def _check_container(path: Path) -> None:
    """Refuse files that are not a complete ``torch.save`` zip archive, saying which case it is."""
    import zipfile

    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(4)
    if size == 0:
        raise CheckpointError(f"{path}: the checkpoint is empty (0 bytes); {_EXPECTED}")
    if head != b"PK\x03\x04":
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (no torch.save archive signature at the start); {_EXPECTED}"
        )
    problem = None
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()  # CRC of every member: flipped bytes in the weights are found here
        if bad is not None:
            problem = f"member {bad!r} fails its checksum"
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        problem = f"its archive index cannot be read: {exc}"
    if problem:
        raise CheckpointError(
            f"{path}: the checkpoint looks truncated or corrupt ({size} bytes; {problem}); the write was "
            "interrupted or the copy is damaged; use another checkpoint of the run (checkpoints/step_*.pt, "
            "best.pt)"
        )


def _load_failure(exc: Exception) -> str:
    """Describe a failed safe load without repeating torch's advice to turn the safe loader off."""
    text = str(exc)
    m = re.search(r"WeightsUnpickler error: ([^;\n]*)", text)
    if m or "weights_only" in text:
        detail = m.group(1).strip() if m else type(exc).__name__
        return (
            "the checkpoint cannot be loaded safely: it holds data other than tensors, numbers, strings, "
            f"lists and dicts ({detail}); it is corrupt or was not written by biomodal; {_EXPECTED}"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"the checkpoint is corrupt and cannot be loaded ({first}); {_EXPECTED}"


def find_latest(ckpt_dir: str | os.PathLike) -> Path | None:
    """Newest ``step_*.pt`` in ``ckpt_dir`` (by step number), or ``None``."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _STEP_RE.match(p.name))]
    return max(found)[1] if found else None


def prune_checkpoints(ckpt_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` step checkpoints; return the deleted paths."""
    d = Path(ckpt_dir)
    found = sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _STEP_RE.match(p.name)))
    removed = [p for _, p in found[: max(len(found) - keep_last, 0)]]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def load_model_weights(
    model: Any, source: str | os.PathLike | Mapping[str, Any], *, strict: bool = True
) -> dict[str, Any]:
    """Load a checkpoint's model weights into ``model`` after checking the modality set.

    Parameters
    ----------
    model
        A :class:`~biomodal.train.ContrastiveModel`.
    source
        Checkpoint path or an already loaded checkpoint dict.
    strict
        Passed to ``load_state_dict``.

    Returns
    -------
    dict
        The checkpoint (config, extra metadata, ...).
    """
    ckpt = load_checkpoint(source) if not isinstance(source, Mapping) else dict(source)
    where = source if not isinstance(source, Mapping) else "checkpoint"
    saved = list(ckpt.get("modalities", []))
    have = list(getattr(model, "modalities", saved))
    if sorted(saved) != sorted(have):
        raise CheckpointError(f"{where} was trained on modalities {saved}, but the model has {have}")
    try:
        model.load_state_dict(ckpt["model"], strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(f"{where} does not match the model's parameters: {exc}") from exc
    return ckpt
