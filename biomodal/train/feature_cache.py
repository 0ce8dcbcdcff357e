"""Frozen-encoder feature cache: encode a frozen, un-augmented modality once, train only the rest.

Most users of pathology foundation models train projection heads on a frozen backbone. When an
encoder is frozen (no trainable parameter, kept in eval mode) and its input is the same at every
step (no random augmentation), its features are the same at every step too. This module
computes them once per dataset, keeps them on disk and wraps the dataset so that its items carry
``"<modality>_features"`` (:func:`biomodal.modalities.features_key`) instead of the raw input;
:class:`~biomodal.train.ContrastiveModel` then runs only the head on them, and
:func:`biomodal.eval.embed` does the same at evaluation.

The cache is exact or it is not used:

* the key hashes the encoder's weights and buffers, its spec (name, config, normalisation) and
  the dataset's own description of the input (``dataset.feature_cache_key(modality)``: files
  with their size and modification time, coordinates, tile geometry, the transform). A changed
  input, encoder or preprocessing gives another key, so stale features are never reused;
* a dataset that cannot describe its input, or whose input is randomly augmented (it returns
  ``None``), is not cached; neither is an encoder that takes covariates, a modality with an
  in-modality self-supervised term, nor a loss that mixes raw inputs (BiMixCo);
* files are written under a temporary name and published by a rename (features first, then
  the JSON that marks them complete), so a crash mid-write leaves nothing that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from biomodal._atomic import atomic_path, atomic_write_text
from biomodal.errors import DataError
from biomodal.modalities import features_key, mask_key
from biomodal.nn.pixels import prepare_pixels

__all__ = [
    "CachedFeatureDataset",
    "cache_eligibility",
    "default_cache_dir",
    "encoder_fingerprint",
    "frozen_features",
    "with_feature_cache",
]

log = logging.getLogger("biomodal")

#: Version of the on-disk layout and of how features are computed (part of every key).
FORMAT = 1


def default_cache_dir() -> Path:
    """``$BIOMODAL_CACHE_DIR/features``, else ``~/.cache/biomodal/features``."""
    base = os.environ.get("BIOMODAL_CACHE_DIR") or Path.home() / ".cache" / "biomodal"
    return Path(base) / "features"


def encoder_fingerprint(encoder: nn.Module) -> str:
    """SHA-1 of an encoder's spec (name, config, normalisation) and every parameter and buffer."""
    h = hashlib.sha1()
    spec = getattr(encoder, "spec", None)
    has_spec = spec is not None and hasattr(spec, "to_dict")
    desc = spec.to_dict() if has_spec else {"type": type(encoder).__name__}
    desc.pop("weights", None)  # where the weights came from does not matter, their values do
    h.update(json.dumps(desc, sort_keys=True, default=str).encode())
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_eligibility(model: Any, name: str, dataset: Any) -> str | None:
    """Why modality ``name`` of ``dataset`` cannot use cached features, or ``None`` when it can."""
    enc = model.encoders[name]
    if any(p.requires_grad for p in enc.parameters()):
        return "the encoder has trainable parameters"
    if name not in getattr(model, "frozen", ()):
        return "the encoder is not frozen with model.freeze (it would train in train mode)"
    if getattr(model, "covariates", {}).get(name):
        return f"the encoder takes covariates {list(model.covariates[name])}"
    selfsup = getattr(model, "selfsup", None)
    if selfsup is not None and name in getattr(selfsup, "weights", {}):
        return "an in-modality self-supervised term augments its input"
    if getattr(model.loss, "mix_inputs", None) is not None:
        return f"the loss ({type(model.loss).__name__}) mixes raw inputs"
    describe = getattr(dataset, "feature_cache_key", None)
    if not callable(describe):
        return f"{type(dataset).__name__} does not describe its input (no feature_cache_key)"
    if describe(name) is None:
        return "its input is randomly augmented"
    return None


def _cache_key(encoder: nn.Module, dataset: Any, name: str) -> tuple[str, dict[str, Any]]:
    meta = {
        "format": FORMAT,
        "modality": name,
        "encoder": encoder_fingerprint(encoder),
        "input": dataset.feature_cache_key(name),
        "n": len(dataset),
    }
    key = hashlib.sha1(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return key, meta


def _compute(encoder: nn.Module, dataset: Any, name: str, batch_size: int, num_workers: int) -> np.ndarray:
    """Compute encoder features (no head) of every item; rows without the modality are zeros."""
    from torch.utils.data import DataLoader

    spec = getattr(encoder, "spec", None)
    device = next((p.device for p in encoder.parameters()), torch.device("cpu"))
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=getattr(dataset, "collate_fn", None),
    )  # fmt: skip
    was = encoder.training
    encoder.eval()
    chunks: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for batch in loader:
                x = batch[name]
                if isinstance(x, torch.Tensor):
                    x = x.to(device)
                x = prepare_pixels(x, spec)
                z = encoder(x)
                z = (z.flatten(1) if z.ndim > 2 else z).float().cpu().numpy()
                m = batch.get(mask_key(name))
                if m is not None:
                    z = np.where(np.asarray(m, dtype=bool).reshape(-1, 1), z, 0.0)
                chunks.append(z.astype(np.float32, copy=False))
    finally:
        encoder.train(was)
    if not chunks:
        raise DataError(f"feature cache: {type(dataset).__name__} has no items to encode for {name!r}")
    return np.concatenate(chunks)


def frozen_features(
    encoder: nn.Module,
    dataset: Any,
    name: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
) -> np.ndarray:
    """Features of frozen ``encoder`` for modality ``name`` of every item, from disk when cached.

    Parameters
    ----------
    encoder
        The encoder (its spec's normalisation is applied to pixel inputs, as the model does).
    dataset
        A dataset with ``feature_cache_key(name)`` describing its input (not ``None``).
    name
        Modality (batch key of the raw input).
    cache_dir
        Folder of the cache (default :func:`default_cache_dir`); one ``.npy`` and one ``.json``
        per (encoder, input) key.
    batch_size, num_workers
        Of the one pass that computes missing features.

    Returns
    -------
    numpy.ndarray
        ``(len(dataset), D)`` float32, read-only (memory-mapped when it came from disk).
    """
    key, meta = _cache_key(encoder, dataset, name)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    data_path, meta_path = root / f"{name}-{key}.npy", root / f"{name}-{key}.json"
    if meta_path.is_file() and data_path.is_file():
        try:
            arr = np.load(data_path, mmap_mode="r")
            if arr.dtype == np.float32 and arr.ndim == 2 and arr.shape[0] == len(dataset):
                log.info("feature cache: %s features of %d items from %s", name, len(arr), data_path)
                return arr
        except (OSError, ValueError):
            pass
        log.warning("feature cache: %s is unreadable or has the wrong shape; recomputing", data_path)
    log.info("feature cache: computing %s features of %d items (frozen encoder)", name, len(dataset))
    arr = _compute(encoder, dataset, name, batch_size, num_workers)
    if arr.shape[0] != len(dataset):
        raise DataError(f"feature cache: {arr.shape[0]} rows of {name!r} features for {len(dataset)} items")
    # the features first, then the JSON that marks them complete: a crash leaves no complete-looking cache
    meta_path.unlink(missing_ok=True)
    with atomic_path(data_path) as tmp:
        np.save(tmp, arr)
    atomic_write_text(meta_path, json.dumps({**meta, "shape": list(arr.shape)}, indent=1, default=str))
    arr.flags.writeable = False
    return arr


class CachedFeatureDataset(Dataset):
    """A dataset whose items carry precomputed encoder features instead of some raw inputs.

    ``item[features_key(name)]`` (``"histology_features"``) replaces ``item[name]`` for every
    cached modality; everything else (other modalities, masks, codes, labels) is the base
    dataset's. Attribute access falls through to the base dataset (``obs``, ``batch_codes``,
    ``set_epoch``...). When the base dataset has ``item(index, skip=...)``, cached inputs are not
    even read (no tile decoding).

    Parameters
    ----------
    base
        The dataset to wrap.
    features
        ``{modality: (len(base), D) array}``.
    fingerprints
        ``{modality: encoder_fingerprint}`` of the encoders the features came from.
    """

    def __init__(
        self, base: Any, features: Mapping[str, np.ndarray], fingerprints: Mapping[str, str]
    ) -> None:
        for name, arr in features.items():
            if len(arr) != len(base):
                raise DataError(f"features of {name!r} have {len(arr)} rows for {len(base)} items")
        self.base = base
        self.features = dict(features)
        self.fingerprints = dict(fingerprints)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        skip = tuple(self.features)
        getter = getattr(self.base, "item", None)
        item = dict(getter(index, skip=skip) if callable(getter) else self.base[index])
        i = int(index) % len(self)
        for name, arr in self.features.items():
            item.pop(name, None)
            item[features_key(name)] = torch.from_numpy(np.array(arr[i], dtype=np.float32))
        return item

    def __getattr__(self, attr: str) -> Any:
        if attr in ("base", "features", "fingerprints") or attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.base, attr)

    def __repr__(self) -> str:
        dims = {n: a.shape[1] for n, a in self.features.items()}
        return f"CachedFeatureDataset({self.base!r}, features={dims})"


def with_feature_cache(
    model: Any,
    datasets: Mapping[str, Any],
    *,
    modalities: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Wrap every dataset of ``datasets`` whose frozen modalities can be cached.

    Parameters
    ----------
    model
        A :class:`~biomodal.train.ContrastiveModel`.
    datasets
        ``{split: dataset}``; the same object under several splits is wrapped once.
    modalities
        Modalities to consider (default: the model's frozen ones).
    cache_dir, batch_size, num_workers
        As :func:`frozen_features`.

    Returns
    -------
    (dict, dict)
        The datasets (wrapped where cached) and ``{modality: reason}`` for frozen modalities that
        were not cached (logged too).
    """
    names = list(modalities) if modalities is not None else list(getattr(model, "frozen", ()))
    out: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    done: dict[int, Any] = {}
    for split, ds in datasets.items():
        if id(ds) in done:
            out[split] = done[id(ds)]
            continue
        feats, prints = {}, {}
        for name in names:
            why = cache_eligibility(model, name, ds)
            if why is not None:
                skipped.setdefault(name, why)
                continue
            enc = model.encoders[name]
            feats[name] = frozen_features(
                enc, ds, name, cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers
            )
            prints[name] = encoder_fingerprint(enc)
        out[split] = CachedFeatureDataset(ds, feats, prints) if feats else ds
        done[id(ds)] = out[split]
    for name, why in skipped.items():
        log.info("feature cache: %s not cached (%s)", name, why)
    return out, skipped
