"""Small AnnData helpers shared by preprocessing and evaluation (no heavy imports)."""

from __future__ import annotations

from typing import Any

import numpy as np

from biomodal.errors import DataError

__all__ = ["dense_matrix"]


def dense_matrix(adata: Any, key: str, where: str) -> np.ndarray:
    """Return ``adata.X`` (``key="X"``) or ``adata.obsm[key]`` as a dense array.

    Parameters
    ----------
    adata
        An AnnData.
    key
        ``"X"`` or an ``obsm`` key.
    where
        Caller and argument, named in the error (e.g. ``"harmony basis"``).

    Raises
    ------
    DataError
        When ``key`` is neither ``"X"`` nor in ``obsm``; the message lists the available keys.
    """
    if key == "X":
        M = adata.X
    elif key in adata.obsm:
        M = adata.obsm[key]
    else:
        raise DataError(
            f"{where}: {key!r} not in adata.obsm (available: {sorted(adata.obsm.keys())}, or 'X')"
        )
    if hasattr(M, "toarray"):
        M = M.toarray()
    return np.asarray(M)
