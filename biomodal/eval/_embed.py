"""Embed a whole dataset with a trained model, in dataset order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from biomodal.data.rows import select_rows
from biomodal.errors import DataError
from biomodal.modalities import COVARIATES, features_key, mask_key

__all__ = ["embed"]


def _is_sequential(loader: torch.utils.data.DataLoader) -> bool:
    """Whether ``loader`` yields its dataset's items once each, in order."""
    from torch.utils.data import BatchSampler, IterableDataset, SequentialSampler

    if isinstance(loader.dataset, IterableDataset):
        return True  # the stream order is the dataset order
    bs = loader.batch_sampler
    sampler = bs.sampler if isinstance(bs, BatchSampler) else (loader.sampler if bs is None else None)
    return isinstance(sampler, SequentialSampler) and not getattr(bs, "drop_last", False)


def _as_loader(
    data: Any, batch_size: int, num_workers: int, device: torch.device
) -> torch.utils.data.DataLoader:
    from torch.utils.data import DataLoader, Dataset, IterableDataset

    if isinstance(data, DataLoader):
        return data
    if isinstance(data, (Dataset, IterableDataset)) or hasattr(data, "__getitem__"):
        return DataLoader(
            data,
            batch_size=int(batch_size),
            shuffle=False,
            num_workers=int(num_workers),
            collate_fn=getattr(data, "collate_fn", None),
            pin_memory=device.type == "cuda",
        )
    raise DataError(f"embed() needs a torch Dataset or DataLoader; got {type(data).__name__}.")


def _length(x: Any) -> int:
    """Items in a modality entry: a tensor, a list (e.g. report strings) or a dict of tensors."""
    if isinstance(x, dict):
        return _length(next(iter(x.values()))) if x else 0
    return len(x)


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    return x


def _model_device(model: Any) -> torch.device:
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return torch.device("cpu")


def _obs_of(data: Any, n: int) -> Any:
    import pandas as pd

    ds = getattr(data, "dataset", data)
    obs = getattr(ds, "obs", None)
    if isinstance(obs, pd.DataFrame) and len(obs) == n:
        obs = obs.copy()
        obs.index = obs.index.astype(str)
        return obs
    return pd.DataFrame(index=[str(i) for i in range(n)])


def _check_cached(model: Any, dataset: Any) -> None:
    """Refuse cached features that another encoder computed (see :mod:`biomodal.train.feature_cache`)."""
    prints = getattr(dataset, "fingerprints", None)
    if not isinstance(prints, dict) or not prints:
        return
    from biomodal.train.feature_cache import encoder_fingerprint

    inner = getattr(model, "model", model)  # EncoderView
    encoders = getattr(inner, "encoders", None)
    for name, fp in prints.items():
        if not callable(getattr(model, "encode_features", None)):
            raise DataError(
                f"the dataset carries cached {name!r} features but {type(model).__name__} has no "
                "encode_features(); embed the raw dataset (its .base) instead"
            )
        if encoders is not None and name in encoders and encoder_fingerprint(encoders[name]) != fp:
            raise DataError(
                f"the dataset's cached {name!r} features come from another encoder (weights or spec "
                "differ from this model's); embed the raw dataset (its .base) instead"
            )


def embed(
    model: Any,
    data: Any,
    *,
    modalities: Sequence[str] | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    as_anndata: bool = False,
    covariates: Sequence[str] = (),
) -> dict[str, np.ndarray] | Any:
    """Encode every item of ``data`` with ``model``, one embedding matrix per modality.

    Parameters
    ----------
    model
        An object with ``modalities`` (list of names) and ``encode(name, x) -> Tensor
        (B, D)`` returning L2-normalised embeddings (e.g. ``biomodal.train.ContrastiveModel``).
        It is put in eval mode for the pass and restored to its previous mode afterwards.
    data
        A torch ``Dataset`` returning batch dicts (one tensor per modality, optional
        ``<name>_mask``, integer fields such as ``"index"``), or a ``DataLoader`` over one.
        A loader that does not yield items in order (shuffled, custom sampler) is accepted
        when its batches carry ``"index"``; results are then sorted by it.
    modalities
        Names to encode; default: every name in ``model.modalities`` present in the batches.
    batch_size, num_workers
        Used when ``data`` is a Dataset.
    device
        Where to run the model; default: the device of its parameters (CPU when it has none).
    progress
        Show a tqdm progress bar.
    covariates
        Batch keys passed to ``model.encode`` as keyword arguments (rows selected like the
        inputs), e.g. ``("subject",)`` for per-subject adapters; the model gives each encoder
        only the covariates it declares. Default none: batch-effect codes are deliberately not
        used at evaluation (conditional normalisation then applies its unseen-batch affine to
        every row alike).
    as_anndata
        Return an AnnData (``obsm["X_biomodal_<name>"]``, masks as bool ``obs`` columns,
        ``obs`` from ``data.obs`` when the dataset has a DataFrame ``.obs``).

    Returns
    -------
    dict or anndata.AnnData
        ``{name: float32 (N, D)}`` in dataset order plus ``{"<name>_mask": bool (N,)}`` for
        modalities that have masks; rows whose mask is False are not encoded and hold NaN.
    """
    from tqdm.auto import tqdm

    covariates = tuple(covariates)
    bad = [c for c in covariates if c not in COVARIATES]
    if bad:
        raise DataError(f"embed(covariates=...) got {bad}; expected names from {list(COVARIATES)}")
    dev = torch.device(device) if device is not None else _model_device(model)
    loader = _as_loader(data, batch_size, num_workers, dev)
    _check_cached(model, loader.dataset)
    model_mods = list(getattr(model, "modalities", []) or [])
    if modalities is not None:
        unknown = [m for m in modalities if m not in model_mods]
        if unknown:
            raise DataError(f"model has no encoder for {unknown}; it encodes {model_mods}.")
    chunks: dict[str, list[np.ndarray]] = {}
    masks: dict[str, list[np.ndarray]] = {}
    index: list[np.ndarray] = []
    names: list[str] | None = None
    was_training = getattr(model, "training", None)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.inference_mode():
            total = len(loader) if hasattr(loader, "__len__") else None
            for batch in tqdm(loader, total=total, desc="embed", disable=not progress, leave=False):
                if not isinstance(batch, dict):
                    raise DataError(f"embed() expects batches that are dicts; got {type(batch).__name__}.")
                if names is None:
                    wanted = list(modalities) if modalities is not None else model_mods
                    names = [m for m in wanted if m in batch or features_key(m) in batch]
                    missing = [m for m in wanted if m not in names]
                    if not names or (modalities is not None and missing):
                        raise DataError(
                            f"batches have keys {sorted(batch)}, but modalities {missing or wanted} "
                            "were requested; check the dataset's modality names."
                        )
                if "index" in batch:
                    index.append(np.asarray(torch.as_tensor(batch["index"]).cpu()).reshape(-1))
                for name in names:
                    cached = features_key(name) in batch
                    x = batch[features_key(name)] if cached else batch[name]
                    n = _length(x)
                    m = batch.get(mask_key(name))
                    keep = None if m is None else torch.as_tensor(m).bool().reshape(-1).cpu()
                    if keep is not None:
                        masks.setdefault(name, []).append(keep.numpy())
                    missing = [c for c in covariates if c not in batch]
                    if missing:
                        raise DataError(f"embed(covariates={list(covariates)}): batches have no {missing}")
                    cov = {c: batch[c] for c in covariates}
                    if keep is not None:
                        sel = select_rows(x, keep, n)
                        cov = {c: select_rows(v, keep, n) for c, v in cov.items()}
                    else:
                        sel = x
                    z = None
                    if _length(sel):
                        cov = {c: _to(v, dev) for c, v in cov.items()}
                        if cached:
                            z = model.encode_features(name, _to(sel, dev))
                        else:
                            z = model.encode(name, _to(sel, dev), **cov)
                        z = z.detach().float().cpu().numpy()
                    if keep is None:
                        if z is not None:
                            chunks.setdefault(name, []).append(z)
                    else:
                        full = np.full((n, z.shape[1] if z is not None else 0), np.nan, np.float32)
                        if z is not None:
                            full[keep.numpy()] = z
                        chunks.setdefault(name, []).append(full)
    finally:
        if was_training is not None and hasattr(model, "train"):
            model.train(bool(was_training))
    if names is None:
        raise DataError("embed() got no batches: the dataset is empty.")
    out: dict[str, np.ndarray] = {}
    for name in names:
        parts = chunks[name]
        dim = max(p.shape[1] for p in parts)
        parts = [p if p.shape[1] == dim else np.full((len(p), dim), np.nan, np.float32) for p in parts]
        out[name] = np.concatenate(parts).astype(np.float32, copy=False)
        if name in masks:
            out[mask_key(name)] = np.concatenate(masks[name])
    if not _is_sequential(loader):
        if not index:
            raise DataError(
                "the DataLoader does not yield items in dataset order (shuffled or custom sampler) and its "
                "batches have no 'index' to restore it; pass the Dataset or a sequential loader."
            )
        idx = np.concatenate(index)
        if np.unique(idx).size != idx.size:
            raise DataError(
                "the DataLoader yielded some 'index' values more than once; cannot restore order."
            )
        order = np.argsort(idx, kind="stable")
        out = {k: v[order] for k, v in out.items()}
    if not as_anndata:
        return out
    import anndata as ad

    n = len(next(iter(out.values())))
    adata = ad.AnnData(obs=_obs_of(data, n))
    for name in names:
        adata.obsm[f"X_biomodal_{name}"] = out[name]
        if mask_key(name) in out:
            adata.obs[mask_key(name)] = out[mask_key(name)]
    adata.uns["biomodal_embed"] = {
        "modalities": list(names),
        "dims": {k: int(out[k].shape[1]) for k in names},
    }
    return adata
