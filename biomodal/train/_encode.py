"""How :class:`~biomodal.train.ContrastiveModel` feeds a batch dict to its encoders.

* **Covariates.** An encoder declares the batch-dict entries it takes as keyword arguments in
  ``spec.covariates`` (names from :data:`biomodal.modalities.COVARIATES`); modules without a
  spec may set a ``covariates`` attribute, else the explicitly named keyword parameters of their
  ``forward`` that are covariate names are used (``**kwargs`` does not count).
* **Masked rows.** With a ``<name>_mask`` in the batch only the present rows (and the same rows
  of every covariate, token dict or list) reach the encoder and head; the result is scattered
  back into a full ``(B, D)`` tensor with zeros at absent rows.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from biomodal.data.rows import batch_size_of, select_rows
from biomodal.errors import ConfigError, DataError
from biomodal.modalities import BATCH_CODE, COVARIATES, mask_key

__all__ = ["batch_covariates", "check_covariates", "embed_present_rows", "encoder_covariates"]


def encoder_covariates(name: str, encoder: nn.Module) -> tuple[str, ...]:
    """Covariates encoder ``name`` takes: its spec's, its ``covariates`` attribute, or its signature."""
    spec = getattr(encoder, "spec", None)
    if spec is not None and hasattr(spec, "covariates"):
        declared = tuple(spec.covariates or ())
    elif hasattr(encoder, "covariates"):
        declared = tuple(encoder.covariates or ())
    else:
        try:
            params = inspect.signature(encoder.forward).parameters
        except (TypeError, ValueError):
            params = {}
        declared = tuple(c for c in COVARIATES if c in params)
    bad = [c for c in declared if c not in COVARIATES]
    if bad:
        raise ConfigError(f"encoders[{name!r}] declares covariates {bad}; expected names from {COVARIATES}")
    return declared


def check_covariates(name: str, declared: tuple[str, ...], given: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the covariates in ``given`` that the encoder declares; unknown names are errors."""
    unknown = sorted(k for k in given if k not in COVARIATES and k not in declared)
    if unknown:
        raise DataError(
            f"encode({name!r}) got unknown keyword(s) {unknown}; covariates are {list(COVARIATES)} "
            f"and encoder {name!r} takes {list(declared)}"
        )
    return {k: v for k, v in given.items() if k in declared}


def batch_covariates(
    name: str, declared: tuple[str, ...], batch: Mapping[str, Any], batch_key: str
) -> dict[str, Any]:
    """Read the declared covariates of encoder ``name`` from ``batch`` (``DataError`` if absent).

    The ``batch_code`` covariate is read from ``batch[batch_key]``; every other covariate from
    the batch key of its own name.
    """
    out: dict[str, Any] = {}
    for cov in declared:
        key = batch_key if cov == BATCH_CODE else cov
        if key not in batch:
            keys = sorted(k for k in batch if isinstance(k, str))
            raise DataError(
                f"encoder {name!r} declares covariate {cov!r} (spec.covariates={list(declared)}) but the "
                f"batch has no {key!r} entry; batch keys: {keys}"
            )
        out[cov] = batch[key]
    return out


def embed_present_rows(
    apply: Callable[..., Tensor],
    x: Any,
    covariates: Mapping[str, Any],
    mask: Any,
    *,
    name: str,
    out_dim: int,
    modules: list[nn.Module],
    transform: Callable[[Any], Any] | None = None,
) -> Tensor:
    """Run ``apply(x, **covariates)`` on the rows where ``mask`` is True; ``(B, out_dim)``.

    Parameters
    ----------
    apply
        Encoder + head (+ normalisation) of one modality.
    x
        The modality's batch entry (tensor, token dict, list of strings...).
    covariates
        Per-row covariates, sliced like ``x``.
    mask
        Presence mask ``(B,)`` or ``None`` (all present).
    name
        Modality name (error messages, mask key).
    out_dim
        Embedding width (of the all-absent zero output).
    modules
        Encoder and head: their dtype sets the all-absent output's, which requires grad when
        grad mode is on and they have trainable parameters (like an encoded output).
    transform
        Applied to the selected rows of ``x`` before ``apply`` (an augmentation).

    Returns
    -------
    Tensor
        Embeddings of present rows; absent rows hold zeros. When no row is present the encoder
        is not called (its parameters then get no gradient from this batch; the trainer's
        distributed reduction treats them as DDP's ``find_unused_parameters`` does).
    """
    if mask is None:
        return apply(transform(x) if transform else x, **covariates)
    keep = torch.as_tensor(mask).bool().reshape(-1)
    n = keep.numel()
    size = batch_size_of(x)
    if size is not None and size != n:
        raise DataError(f"batch[{mask_key(name)!r}] has {n} rows but batch[{name!r}] has {size}")
    if bool(keep.all()):
        return apply(transform(x) if transform else x, **covariates)
    rows = torch.nonzero(keep).flatten()
    if rows.numel() == 0:
        ref = next((t for m in modules for t in m.parameters()), None)
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.get_default_dtype()
        z = torch.zeros((n, out_dim), dtype=dtype, device=keep.device)
        # Require grad exactly when an encoded output would: the losses' gather-with-gradient then
        # runs the same collectives in backward on every rank (some ranks may have present rows).
        trainable = any(p.requires_grad for m in modules for p in m.parameters())
        return z.requires_grad_(torch.is_grad_enabled() and trainable)
    xs = select_rows(x, keep, n)
    covs = {k: select_rows(v, keep, n) for k, v in covariates.items()}
    z = apply(transform(xs) if transform else xs, **covs)
    return z.new_zeros((n, z.shape[1])).index_copy(0, rows.to(z.device), z)
