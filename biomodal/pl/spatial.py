"""Measured vs predicted expression on the tissue, drawn with squidpy (``biomodal[spatial]``).

:func:`expression_on_tissue` lays the spots of one or more sections out with
``squidpy.pl.spatial_scatter`` (one panel per gene and kind, sections side by side through
``library_key``), the plot spatial researchers know. Without squidpy it falls back to
:func:`biomodal.pl.plots.expression_over_slide` (matplotlib only) and logs why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from biomodal.errors import DataError

__all__ = ["expression_on_tissue"]

log = logging.getLogger("biomodal")


def expression_on_tissue(
    xy: Any,
    measured: Any,
    predicted: Any,
    genes: Sequence[str],
    path: str | os.PathLike | None = None,
    *,
    sections: Sequence[Any] | None = None,
    spot_size: float | None = None,
) -> Any:
    """Draw measured and predicted expression of ``genes`` at the spot positions.

    Parameters
    ----------
    xy
        ``(n, 2)`` spot coordinates (image pixels).
    measured, predicted
        ``(n, len(genes))`` values.
    genes
        Gene names: one measured and one predicted panel each.
    path
        Write a PNG here (``None``: return the figure).
    sections
        ``(n,)`` section of each spot; several sections are drawn as separate libraries.
    spot_size
        Marker size in coordinate units; default: half the median nearest-spot distance.

    Returns
    -------
    matplotlib.figure.Figure or None
        The figure when ``path`` is ``None``.
    """
    import anndata as ad
    import pandas as pd

    from biomodal.pl.plots import _finish, _plt, expression_over_slide

    xy = np.asarray(xy, dtype=np.float64)
    measured, predicted = np.asarray(measured, np.float32), np.asarray(predicted, np.float32)
    g = len(genes)
    if xy.shape != (len(measured), 2) or measured.shape != (len(xy), g) or predicted.shape != measured.shape:
        raise DataError(
            f"expression_on_tissue: xy {xy.shape}, measured {measured.shape} and predicted "
            f"{predicted.shape} must be (n, 2), (n, {g}) and (n, {g})"
        )
    try:
        import squidpy as sq
    except ImportError as exc:  # pragma: no cover - squidpy is in the lock
        log.info("squidpy unavailable (%s): drawing with matplotlib only", exc)
        return expression_over_slide(xy, measured, predicted, genes, path)
    lib = np.zeros(len(xy), dtype=str) if sections is None else np.asarray(sections).astype(str)
    names = [f"{gene} {kind}" for gene in genes for kind in ("measured", "predicted")]
    values = np.stack([v for i in range(g) for v in (measured[:, i], predicted[:, i])], axis=1)
    obs = pd.DataFrame({"section": pd.Categorical(lib)}, index=[str(i) for i in range(len(xy))])
    adata = ad.AnnData(values, obs=obs, var=pd.DataFrame(index=names))
    adata.obsm["spatial"] = xy
    if spot_size is None:
        from scipy.spatial import cKDTree

        d, _ = cKDTree(xy).query(xy, k=2)
        spot_size = float(np.median(d[:, 1])) if len(xy) > 1 else 1.0
    plt = _plt()
    libs = list(adata.obs["section"].cat.categories)
    fig = plt.figure(figsize=(9.0, 3.6 * g * len(libs)))
    sq.pl.spatial_scatter(
        adata,
        color=names,
        shape=None,
        size=spot_size,
        library_key="section" if len(libs) > 1 else None,
        img=False,
        ncols=2,
        cmap="viridis",
        fig=fig,
        frameon=False,
    )
    fig = plt.gcf()
    return _finish(fig, path)
