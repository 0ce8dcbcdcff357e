"""10x Xenium output-folder reader; public entry point is :func:`biomodal.io.read_xenium`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from biomodal.errors import DataError, ReaderError
from biomodal.io._spatial_common import (
    build_anndata,
    check_counts,
    image_size,
    log,
    make_unique,
    read_10x_h5,
    require_file,
)

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

#: Xenium morphology-image pixel size (microns) when experiment.xenium does not say.
XENIUM_DEFAULT_PIXEL_SIZE_UM = 0.2125
_IMAGE_CANDIDATES = (
    "morphology_focus.ome.tif",
    "morphology_mip.ome.tif",
    "morphology.ome.tif",
    "morphology_focus/morphology_focus_0000.ome.tif",
    "morphology_focus/ch0000_dapi.ome.tif",
)


def _read_cells(folder: Path) -> tuple[pd.DataFrame, Path]:
    import pandas as pd

    for name in ("cells.csv.gz", "cells.csv", "cells.parquet"):
        p = folder / name
        if p.exists():
            try:
                cells = pd.read_parquet(p) if name.endswith(".parquet") else pd.read_csv(p)
            except (OSError, ValueError, ImportError) as exc:
                raise ReaderError(p, f"cannot read the cell table: {exc}") from exc
            missing = [c for c in ("cell_id", "x_centroid", "y_centroid") if c not in cells.columns]
            if missing:
                raise ReaderError(p, f"missing column(s) {missing}; expected cell_id, x_centroid, y_centroid")
            cells["cell_id"] = [c.decode() if isinstance(c, bytes) else str(c) for c in cells["cell_id"]]
            if cells["cell_id"].duplicated().any():
                raise DataError(
                    f"{p}: duplicated cell_id {cells['cell_id'][cells['cell_id'].duplicated()][:5].tolist()}"
                )
            if not np.isfinite(cells[["x_centroid", "y_centroid"]].to_numpy(dtype=np.float64)).all():
                raise DataError(f"{p}: NaN or infinite x_centroid / y_centroid")
            return cells.set_index("cell_id"), p
    raise ReaderError(
        folder / "cells.csv.gz", "Xenium cell table not found (cells.csv.gz, cells.csv or cells.parquet)"
    )


def _pixel_size(folder: Path) -> float | None:
    p = folder / "experiment.xenium"
    if not p.exists():
        return None
    try:
        meta = json.loads(p.read_text())
    except ValueError as exc:
        raise ReaderError(p, f"invalid JSON: {exc}") from exc
    value = meta.get("pixel_size")
    return float(value) if value is not None else None


def pool_bins(
    X: sp.csr_matrix, xy_um: np.ndarray, size_um: float
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Sum cells into square bins of ``size_um``.

    Returns
    -------
    tuple
        ``(counts (n_bins, G), bin_index (n_bins, 2) as (bx, by), n_cells (n_bins,))``;
        bins are sorted by ``(by, bx)`` and only non-empty bins are returned.
    """
    import scipy.sparse as sp

    b = np.floor(np.asarray(xy_um, dtype=np.float64) / size_um).astype(np.int64)
    uniq, inv, n_cells = np.unique(b[:, ::-1], axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    A = sp.csr_matrix((np.ones(len(b), np.float32), (inv, np.arange(len(b)))), shape=(len(uniq), len(b)))
    return sp.csr_matrix(A @ X), uniq[:, ::-1], n_cells


def read_xenium(
    path: str | os.PathLike,
    *,
    pseudo_spot_um: float | None = None,
    sample: str | None = None,
    donor: str | None = None,
    batch: str | None = None,
    image: str | os.PathLike | None = None,
    mpp: float | None = None,
) -> ad.AnnData:
    """Read a Xenium output folder (cells, or cells pooled into square pseudo-spots).

    Parameters
    ----------
    path
        Folder with ``cell_feature_matrix.h5`` and ``cells.csv.gz`` (or ``cells.csv`` /
        ``cells.parquet``); ``experiment.xenium`` supplies ``pixel_size``.
    pseudo_spot_um
        When given, cells are binned into squares of this side (microns) by their
        centroid; counts are summed and coordinates are the bin centres.
    sample, donor, batch
        ``obs`` labels; ``sample`` defaults to the folder name.
    image
        Morphology image the coordinates are expressed in; by default the first of
        ``morphology_focus.ome.tif``, ``morphology_mip.ome.tif``, ``morphology.ome.tif``, ...
    mpp
        Pixel size in microns (default: ``experiment.xenium``'s ``pixel_size``, else 0.2125).

    Returns
    -------
    anndata.AnnData
        One observation per cell (``obs_names`` = cell ids, cell-table columns in ``obs``)
        or per non-empty bin (``obs["n_cells"]``, ``array_row`` / ``array_col`` = bin row / column).
        Only ``Gene Expression`` features are kept (control probes/codewords are dropped and logged).

    Raises
    ------
    ReaderError
        Missing or unreadable files, no morphology image.
    DataError
        Invalid counts, no matrix cell in the cell table, empty result, ``pseudo_spot_um <= 0``.
    """
    import pandas as pd

    folder = require_file(path, "Xenium output folder")
    if pseudo_spot_um is not None and not pseudo_spot_um > 0:
        raise DataError(f"pseudo_spot_um must be > 0, got {pseudo_spot_um}")
    h5 = require_file(folder / "cell_feature_matrix.h5", "Xenium cell-feature matrix")
    cells, cells_path = _read_cells(folder)
    if image is None:
        found = [folder / c for c in _IMAGE_CANDIDATES if (folder / c).exists()]
        if not found:
            raise ReaderError(
                folder, f"no morphology image found (tried {', '.join(_IMAGE_CANDIDATES)}); pass image="
            )
        slide = found[0].resolve()
    else:
        slide = require_file(image, "Xenium morphology image")

    meta_px = _pixel_size(folder)
    if mpp is not None:
        px, source = float(mpp), "user"
    elif meta_px is not None:
        px, source = meta_px, "metadata"
    else:
        px, source = XENIUM_DEFAULT_PIXEL_SIZE_UM, "estimated"
        log.warning("%s: no experiment.xenium pixel_size; assuming the Xenium default %.4f um/px", folder, px)

    X, barcodes, var = read_10x_h5(h5)
    is_ge = (var["feature_types"] == "Gene Expression").to_numpy()
    if not is_ge.all():
        log.info(
            "%s: dropping %d control/codeword features, keeping %d genes", h5, (~is_ge).sum(), is_ge.sum()
        )
        X, var = X[:, is_ge], var.loc[is_ge]
    is_int = check_counts(X, h5)
    known = pd.Index(barcodes).isin(cells.index)
    if not known.any():
        raise DataError(f"{h5}: none of {len(barcodes)} cell ids appears in {cells_path}")
    if not known.all():
        log.warning(
            "%s: dropping %d of %d matrix cells absent from %s", h5, (~known).sum(), len(known), cells_path
        )
        X, barcodes = X[known], barcodes[known]
    n_unused = len(cells) - len(barcodes)
    if n_unused:
        log.info("%s: %d cells have no row in %s", cells_path, n_unused, h5)
    c = cells.loc[barcodes]
    xy_um = c[["x_centroid", "y_centroid"]].to_numpy(dtype=np.float64)
    var = var.copy()
    var.index = pd.Index(make_unique(var.pop("name").tolist(), h5))

    uns = {
        "slide_path": str(slide),
        "mpp": px,
        "mpp_source": source,
        "technology": "xenium",
        "source_path": str(folder),
    }
    if pseudo_spot_um is None:
        obs = c.drop(columns=["x_centroid", "y_centroid"]).copy()
        obs.index = pd.Index(barcodes, dtype=str)
        area = c["cell_area"].to_numpy(dtype=np.float64) if "cell_area" in c.columns else np.array([])
        uns["spot_diameter_um"] = float(np.median(2 * np.sqrt(area / np.pi))) if area.size else float("nan")
        uns["spot_pitch_um"] = float("nan")
        uns["unit"] = "cell"
        coords_um = xy_um
    else:
        s = float(pseudo_spot_um)
        X, bins, n_cells = pool_bins(X, xy_um, s)
        coords_um = (bins + 0.5) * s
        obs = pd.DataFrame(
            {"n_cells": n_cells, "array_row": bins[:, 1], "array_col": bins[:, 0]},
            index=pd.Index([f"{bx}x{by}" for bx, by in bins], dtype=str),
        )
        uns.update(spot_diameter_um=s, spot_pitch_um=s, unit="bin", pseudo_spot_um=s)
        log.info("%s: pooled %d cells into %d bins of %g um", folder, len(xy_um), len(bins), s)
    return build_anndata(
        X,
        obs=obs,
        var=var,
        coords=coords_um / px,
        uns_spatial=uns,
        sample=sample if sample is not None else folder.name,
        donor=donor,
        batch=batch,
        source=h5,
        image_wh=image_size(slide),
        is_integer=is_int,
    )
