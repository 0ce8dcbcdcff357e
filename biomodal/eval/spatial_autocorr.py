"""Moran's I of spot values on the tissue, with squidpy (``biomodal[spatial]``).

The spatial neighbour graph is squidpy's kNN spot graph (``squidpy.gr.spatial_neighbors_knn``;
``spatial_neighbors(coord_type="generic")`` before squidpy 1.8): the ``n_neighs`` nearest spots,
built separately per section via ``library_key`` so spots of two sections are never neighbours.
Moran's I per column is :func:`squidpy.gr.spatial_autocorr` (``mode="moran"``, no permutations).
Used to pick spatially variable genes (from training sections only) and to compare the spatial
structure of measured and predicted expression.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from biomodal.errors import DataError

__all__ = ["morans_i"]


def morans_i(
    values: Any,
    coords: Any,
    groups: Sequence[Any] | None = None,
    *,
    n_neighs: int = 6,
) -> np.ndarray:
    """Moran's I of every column of ``values`` over a per-section kNN graph of spots.

    Parameters
    ----------
    values
        ``(n_spots, n_columns)`` values (expression, predictions).
    coords
        ``(n_spots, 2)`` spot coordinates (any unit; only neighbours matter).
    groups
        ``(n_spots,)`` section of each spot; spots are only linked within a section.
    n_neighs
        Neighbours per spot (6: a hexagonal Visium ring; legacy-ST's square grid has 4 at the
        pitch and 4 more on the diagonals).

    Returns
    -------
    numpy.ndarray
        ``(n_columns,)`` Moran's I in column order; NaN for a constant column.
    """
    import anndata as ad
    import pandas as pd

    from biomodal._lazy import import_optional

    sq = import_optional("squidpy", "spatial")
    x = np.asarray(values, dtype=np.float32)
    xy = np.asarray(coords, dtype=np.float64)
    if x.ndim != 2 or xy.shape != (len(x), 2):
        raise DataError(f"morans_i: values {x.shape} and coords {xy.shape} must be (n, g) and (n, 2)")
    lib = np.zeros(len(x), dtype=str) if groups is None else np.asarray(groups).astype(str)
    if len(lib) != len(x):
        raise DataError(f"morans_i: {len(lib)} groups for {len(x)} spots")
    smallest = min(int((lib == g).sum()) for g in np.unique(lib))
    if smallest <= n_neighs:
        raise DataError(f"morans_i: a section has {smallest} spots, not more than n_neighs={n_neighs}")
    names = [f"c{i}" for i in range(x.shape[1])]
    adata = ad.AnnData(
        x, obs=pd.DataFrame({"lib": pd.Categorical(lib)}, index=[str(i) for i in range(len(x))])
    )
    adata.var_names = names
    adata.obsm["spatial"] = xy
    knn = getattr(sq.gr, "spatial_neighbors_knn", None)  # squidpy >= 1.8; spatial_neighbors before
    if knn is not None:
        knn(adata, n_neighs=int(n_neighs), library_key="lib")
    else:  # pragma: no cover - older squidpy
        sq.gr.spatial_neighbors(adata, coord_type="generic", n_neighs=int(n_neighs), library_key="lib")
    varying = [n for n, v in zip(names, x.std(axis=0)) if v > 0]
    out = np.full(len(names), np.nan)
    if varying:
        sq.gr.spatial_autocorr(
            adata, mode="moran", genes=varying, n_perms=None, n_jobs=1, show_progress_bar=False
        )
        res = adata.uns["moranI"]["I"]
        out[[names.index(n) for n in res.index]] = res.to_numpy(dtype=np.float64)
    return out
