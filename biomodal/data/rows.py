"""Row selection in batch dicts: one implementation for micro-batches, masks and embedding.

A batch value is per-sample when it is a tensor whose first dimension is the batch size, a
list/tuple with one item per sample (report strings, file names), or a dict of such values (a
tokenizer's ``{"input_ids": (B, L), "attention_mask": (B, L)}``), nested to any depth. Other
values (scalars, a 0-d tensor, a config string) are shared by every row and copied as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["batch_size_of", "select_rows"]


def batch_size_of(value: Any) -> int | None:
    """First dimension of the first tensor leaf (depth first) of ``value``, or ``None``.

    Lists and tuples count by their length when they hold no tensor.
    """
    if isinstance(value, Tensor):
        return int(value.shape[0]) if value.ndim > 0 else None
    if isinstance(value, Mapping):
        for v in value.values():
            n = batch_size_of(v)
            if n is not None:
                return n
        return None
    if isinstance(value, (list, tuple)):
        return len(value) if value else None
    return None


def select_rows(value: Any, index: slice | Tensor, size: int) -> Any:
    """Rows ``index`` of every per-sample leaf of ``value`` (batch size ``size``).

    Parameters
    ----------
    value
        A batch value: tensor, list/tuple, dict (nested), or anything else (copied).
    index
        A ``slice``, a boolean mask of shape ``(size,)`` or a 1-D tensor of row indices.
    size
        The batch size: only tensors whose first dimension (and sequences whose length)
        equals it are indexed.

    Returns
    -------
    Any
        The same structure with the selected rows; lists stay lists, tuples stay tuples.
    """
    if isinstance(value, Tensor):
        if value.ndim == 0 or value.shape[0] != size:
            return value
        if isinstance(index, slice):
            return value[index]
        return value[index.to(value.device)]
    if isinstance(value, Mapping):
        return {k: select_rows(v, index, size) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and len(value) == size:
        if isinstance(index, slice):
            picked = list(value[index])
        else:
            idx = index.detach().cpu()
            rows = torch.nonzero(idx, as_tuple=False).flatten() if idx.dtype == torch.bool else idx
            picked = [value[int(i)] for i in rows.tolist()]
        return tuple(picked) if isinstance(value, tuple) else picked
    return value
