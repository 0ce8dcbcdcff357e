"""Stimulus targets of the fMRI family: a frozen registry encoder's embeddings, cached on disk.

The cache key hashes the encoder (name, config, seed, weights) and the data (the image array's
bytes or the captions), so a changed stimulus file or encoder never reuses stale targets. Cache
files are written atomically and first-writer-wins, so parallel runs can share a cache folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biomodal._atomic import atomic_path
from biomodal.errors import ConfigError, DataError

log = logging.getLogger("biomodal")

__all__ = ["cache_dir", "stimulus_targets"]


def cache_dir(cfg: Any) -> Path:
    """``targets.cache_dir``, else ``$BIOMODAL_CACHE_DIR/fmri_targets``, else ``~/.cache/biomodal/...``."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    base = os.environ.get("BIOMODAL_CACHE_DIR") or Path.home() / ".cache" / "biomodal"
    return Path(base) / "fmri_targets"


def _encoder_name(cfg: Any) -> str:
    if cfg.package_model:
        from biomodal.nn.hf import find_package_model

        path = find_package_model(cfg.package_model)
        if path is None:
            raise ConfigError(f"data.targets.package_model: package {cfg.package_model!r} is not installed")
        return f"hf:{path}"
    return cfg.encoder


def _inputs(cfg: Any, root: Path, stimuli: Sequence[str]) -> tuple[Any, bytes]:
    """Return the encoder inputs of ``stimuli`` and the bytes that identify them."""
    if cfg.source == "captions":
        missing = [s for s in stimuli if s not in cfg.captions]
        if missing:
            raise DataError(f"data.targets.captions has no caption for stimuli {missing[:5]}")
        texts = [cfg.captions[s] for s in stimuli]
        return texts, json.dumps(texts).encode()
    path = Path(cfg.images)
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise DataError(f"data.targets.images: {path} not found (an .npy of stimulus images (n, C, H, W))")
    arr = np.load(path, mmap_mode="r")
    if arr.ndim != 4:
        raise DataError(f"{path}: stimulus images must be (n, C, H, W), got shape {arr.shape}")
    try:
        idx = np.array([int(s) for s in stimuli])
    except ValueError:
        raise DataError(
            f"{path}: stimulus ids must be integer row numbers, got e.g. {stimuli[0]!r}"
        ) from None
    if idx.min() < 0 or idx.max() >= len(arr):
        raise DataError(f"{path}: stimulus ids up to {idx.max()} for {len(arr)} images")
    images = np.ascontiguousarray(arr[idx], np.float32)
    return images, images.tobytes()


def stimulus_targets(cfg: Any, root: Path, stimuli: Sequence[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Embeddings ``(len(stimuli), d)`` of the stimuli by the frozen target encoder (cached).

    Returns
    -------
    tuple
        ``(embeddings float32, info)``; ``info`` has the encoder, the cache file and whether it
        was a cache hit.
    """
    stimuli = [str(s) for s in stimuli]
    name = _encoder_name(cfg)
    inputs, ident = _inputs(cfg, root, stimuli)
    key_src = json.dumps(
        {"encoder": name, "params": cfg.params, "seed": cfg.seed, "source": cfg.source},
        sort_keys=True,
        default=str,
    ).encode()
    key = hashlib.sha256(key_src + hashlib.sha256(ident).digest()).hexdigest()[:20]
    path = cache_dir(cfg) / f"targets_{key}.npz"
    info = {"encoder": name, "cache": str(path), "key": key}
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if list(z["stimuli"]) == stimuli:
                log.info("fmri targets: cache hit %s", path)
                return z["embeddings"].astype(np.float32), {**info, "cache_hit": True}
    emb = _embed(name, cfg, inputs)
    with atomic_path(path, overwrite=False) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, stimuli=np.array(stimuli), embeddings=emb)
    log.info("fmri targets: %d x %d from %s, cached in %s", *emb.shape, name, path)
    return emb, {**info, "cache_hit": False}


def _embed(name: str, cfg: Any, inputs: Any) -> np.ndarray:
    import torch

    from biomodal.nn import create_encoder

    torch.manual_seed(cfg.seed)
    enc = create_encoder(name, **cfg.params).eval()
    spec = enc.spec
    out = []
    with torch.no_grad():
        for i in range(0, len(inputs), cfg.batch_size):
            chunk = inputs[i : i + cfg.batch_size]
            if cfg.source == "images":
                x = torch.as_tensor(np.asarray(chunk))
                x = spec.normalize(x) if spec.mean is not None else x
                out.append(enc(x).float().numpy())
            else:
                out.append(enc(list(chunk)).float().numpy())
    emb = np.concatenate(out).astype(np.float32)
    if not np.isfinite(emb).all():
        raise DataError(f"target encoder {name!r} gave non-finite embeddings")
    return emb
