"""Shared helpers of the spatial-transcriptomics readers (not public API).

Everything here is imported by :mod:`biomodal.io._visium`, ``_legacy_st``,
``_xenium`` and :mod:`biomodal.io.spatial`; the public names live in
:mod:`biomodal.io.spatial`. No torch, no scanpy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from biomodal.errors import DataError, ReaderError

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

log = logging.getLogger("biomodal")

#: Fraction of spots outside the image above which a reader refuses the section
#: (the image or the coordinate scale is almost certainly the wrong one).
MAX_OUTSIDE_FRACTION = 0.5


def require_file(path: str | os.PathLike, what: str) -> Path:
    """Return ``path`` as an absolute :class:`Path`, or raise :class:`ReaderError` naming it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ReaderError(p, f"{what} not found (expected an existing file)")
    return p.resolve()


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image from its header, without decoding the pixels.

    PIL reads the header of JPEG/PNG/TIFF lazily; pyramidal or BigTIFF files that
    PIL cannot open fall back to ``tifffile`` (level 0 of the first series).
    """
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None
    p = Path(path)
    try:
        with Image.open(p) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        pil_error = exc
    try:
        import tifffile

        with tifffile.TiffFile(p) as tf:
            shape = tf.series[0].levels[0].shape
            axes = tf.series[0].levels[0].axes
        return int(shape[axes.index("X")]), int(shape[axes.index("Y")])
    except Exception as exc:
        raise ReaderError(p, f"cannot read the image size ({pil_error}; tifffile: {exc})") from exc


def check_counts(X: sp.spmatrix | np.ndarray, path: str | os.PathLike) -> bool:
    """Validate a count matrix; return whether every value is integer-valued.

    Raises
    ------
    DataError
        NaN/inf or negative values (the message names ``path``).
    """
    import scipy.sparse as sp

    values = X.data if sp.issparse(X) else np.asarray(X)
    if values.size and not np.isfinite(values).all():
        n_bad = int((~np.isfinite(values)).sum())
        raise DataError(f"{path}: {n_bad} NaN or infinite count value(s); expected finite counts >= 0")
    if values.size and values.min() < 0:
        n_bad = int((values < 0).sum())
        raise DataError(
            f"{path}: {n_bad} negative count value(s) (min {values.min():g}); expected raw counts >= 0"
        )
    return bool(values.size == 0 or np.all(values == np.round(values)))


def make_unique(names: Sequence[str], path: str | os.PathLike) -> list[str]:
    """Make gene names unique the anndata way (``GENE``, ``GENE-1``, ...), logging a warning.

    The first occurrence keeps its name; later ones get ``-1``, ``-2``... suffixes
    (skipping suffixes that already exist). Nothing is summed or dropped.
    """
    names = [str(n) for n in names]
    seen: dict[str, int] = {}
    taken = set(names)
    out: list[str] = []
    dups: list[str] = []
    for n in names:
        if n not in seen:
            seen[n] = 0
            out.append(n)
            continue
        dups.append(n)
        k = seen[n]
        while True:
            k += 1
            cand = f"{n}-{k}"
            if cand not in taken:
                break
        seen[n] = k
        taken.add(cand)
        out.append(cand)
    if dups:
        uniq = sorted(set(dups))
        log.warning(
            "%s: %d duplicated gene name(s) made unique by appending -1, -2, ... (first: %s)",
            path,
            len(dups),
            ", ".join(uniq[:10]),
        )
    return out


def read_10x_h5(path: str | os.PathLike) -> tuple[sp.csr_matrix, np.ndarray, pd.DataFrame]:
    """Read a 10x Genomics HDF5 feature-barcode matrix (Cell/Space Ranger >= 3, Xenium; also v2).

    Returns
    -------
    X
        ``(n_barcodes, n_features)`` CSR matrix, float32.
    barcodes
        Barcode / cell-id strings.
    var
        DataFrame indexed by position with ``name``, ``gene_ids``, ``feature_types``
        (and ``genome`` where stored).
    """
    import h5py
    import pandas as pd
    import scipy.sparse as sp

    p = require_file(path, "10x HDF5 count matrix")

    def _str(a: np.ndarray) -> np.ndarray:
        return np.array([x.decode() if isinstance(x, bytes) else str(x) for x in a], dtype=object)

    try:
        with h5py.File(p, "r") as f:
            if "matrix" in f:
                g = f["matrix"]
                feats = g["features"]
                var = pd.DataFrame(
                    {
                        "name": _str(feats["name"][:]),
                        "gene_ids": _str(feats["id"][:]),
                        "feature_types": _str(feats["feature_type"][:])
                        if "feature_type" in feats
                        else "Gene Expression",
                    }
                )
                if "genome" in feats:
                    var["genome"] = _str(feats["genome"][:])
            elif len(f.keys()) == 1 and "genes" in next(iter(f.values())):  # Cell Ranger 2 layout
                g = next(iter(f.values()))
                var = pd.DataFrame(
                    {
                        "name": _str(g["gene_names"][:]),
                        "gene_ids": _str(g["genes"][:]),
                        "feature_types": "Gene Expression",
                    }
                )
            else:
                raise ReaderError(p, f"not a 10x feature-barcode matrix (top-level groups: {list(f.keys())})")
            data = g["data"][:]
            indices = g["indices"][:]
            indptr = g["indptr"][:]
            n_feat, n_bc = (int(v) for v in g["shape"][:])
            barcodes = _str(g["barcodes"][:])
    except ReaderError:
        raise
    except (OSError, KeyError) as exc:
        raise ReaderError(p, f"cannot read 10x HDF5 matrix: {exc}") from exc
    if len(indptr) != n_bc + 1 or len(barcodes) != n_bc or len(var) != n_feat:
        raise ReaderError(
            p,
            f"inconsistent 10x matrix: shape {(n_feat, n_bc)}, {len(indptr)} indptr entries, "
            f"{len(barcodes)} barcodes, {len(var)} features",
        )
    # 10x stores features x barcodes in CSC, which is barcodes x features in CSR.
    X = sp.csr_matrix((data.astype(np.float32), indices, indptr), shape=(n_bc, n_feat))
    X.sum_duplicates()
    return X, barcodes, var


def categorical(values: Any, n: int) -> pd.Categorical:
    """Return a categorical of strings of length ``n`` from a scalar or a sequence."""
    import pandas as pd

    if isinstance(values, str | int | float) or values is None:
        return pd.Categorical([str(values)] * n)
    return pd.Categorical([str(v) for v in values])


def build_anndata(
    X: sp.csr_matrix,
    *,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    coords: np.ndarray,
    uns_spatial: dict[str, Any],
    sample: str,
    donor: str | None,
    batch: str | None,
    source: str | os.PathLike,
    image_wh: tuple[int, int] | None,
    is_integer: bool,
    coords_source: str | os.PathLike | None = None,
) -> ad.AnnData:
    """Assemble an AnnData in the biomodal spatial convention (see docs/spatial.md).

    Drops spots whose centre lies outside the image (warning with the count;
    :class:`DataError` when more than half are outside) and raises
    :class:`DataError` on an empty section. ``coords_source``: the file the spot
    coordinates came from, named in those messages (default ``source``).
    """
    import anndata as ad
    import scipy.sparse as sp

    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"{source}: empty section ({X.shape[0]} spots x {X.shape[1]} genes after filtering)")
    if image_wh is not None:
        w, h = image_wh
        inside = (coords[:, 0] >= 0) & (coords[:, 0] < w) & (coords[:, 1] >= 0) & (coords[:, 1] < h)
        n_out = int((~inside).sum())
        if n_out:
            msg = (
                f"{coords_source or source}: {n_out} of {len(coords)} spot centres lie outside the image "
                f"{uns_spatial.get('slide_path')} ({w}x{h} px)"
            )
            if n_out > MAX_OUTSIDE_FRACTION * len(coords):
                raise DataError(
                    msg + "; wrong image or coordinate scale? (an image resized after the spots were "
                    "located needs its scale factor, e.g. scalefactors.json beside it)"
                )
            log.warning("%s; dropping them", msg)
            X, obs, coords = X[inside], obs.iloc[np.flatnonzero(inside)], coords[inside]
    X = sp.csr_matrix(X, dtype=np.float32)
    obs = obs.copy()
    obs.index = obs.index.astype(str)
    n = X.shape[0]
    obs["sample"] = categorical(sample, n)
    obs["donor"] = categorical(donor if donor is not None else sample, n)
    obs["batch"] = categorical(batch if batch is not None else sample, n)
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.layers["counts"] = X.copy()
    adata.obsm["spatial"] = coords
    uns_spatial = dict(uns_spatial)
    uns_spatial["x_is_counts"] = bool(is_integer)
    if not is_integer:
        log.warning(
            "%s: counts are not all integer-valued; recorded uns['spatial']['x_is_counts']=False", source
        )
    adata.uns["spatial"] = uns_spatial
    return adata


def estimate_mpp_from_spots(
    pixel_xy: np.ndarray,
    array_xy: np.ndarray,
    pitch_um: float = 200.0,
    *,
    tolerance: float = 0.05,
) -> float:
    """Estimate microns per pixel from spot centres and their array coordinates.

    Pairs of spots that are nearest neighbours *on the array* (array distance
    within ``tolerance`` of the median nearest-neighbour array distance) are
    ``pitch_um`` apart physically; the median of their pixel distances gives
    pixels per pitch, so ``mpp = pitch_um / median``. Medians make it robust to
    missing spots and to a few badly placed centres.

    Parameters
    ----------
    pixel_xy
        ``(n, 2)`` spot centres in image pixels.
    array_xy
        ``(n, 2)`` array coordinates (legacy ST: ``x, y``; Visium: ``array_col, array_row``).
    pitch_um
        Centre-to-centre distance of neighbouring spots in microns (legacy ST 200, Visium 100).
    tolerance
        Relative band around the nearest-neighbour array distance that counts as a neighbour.

    Returns
    -------
    float
        Estimated microns per pixel.

    Raises
    ------
    DataError
        Fewer than two spots, shape mismatch, non-finite values, duplicated array
        positions or no neighbouring pair.
    """
    from scipy.spatial import cKDTree

    pix = np.asarray(pixel_xy, dtype=np.float64)
    arr = np.asarray(array_xy, dtype=np.float64)
    if pix.ndim != 2 or pix.shape[1] != 2 or arr.shape != pix.shape:
        raise DataError(f"pixel_xy {pix.shape} and array_xy {arr.shape} must both be (n, 2)")
    if len(pix) < 2:
        raise DataError(f"need at least 2 spots to estimate microns per pixel, got {len(pix)}")
    if not (np.isfinite(pix).all() and np.isfinite(arr).all()):
        raise DataError("pixel_xy / array_xy contain NaN or infinite values")
    if pitch_um <= 0:
        raise DataError(f"pitch_um must be > 0, got {pitch_um}")
    tree = cKDTree(arr)
    d_nn, _ = tree.query(arr, k=2)
    if np.any(d_nn[:, 1] == 0):
        raise DataError("duplicated array coordinates: two spots share one array position")
    d0 = float(np.median(d_nn[:, 1]))
    pairs = np.array(sorted(tree.query_pairs(d0 * (1 + tolerance))), dtype=np.int64).reshape(-1, 2)
    if len(pairs):
        d_arr = np.linalg.norm(arr[pairs[:, 0]] - arr[pairs[:, 1]], axis=1)
        pairs = pairs[d_arr >= d0 * (1 - tolerance)]
    if len(pairs) == 0:
        raise DataError("no neighbouring spots on the array; cannot estimate microns per pixel")
    d_px = np.linalg.norm(pix[pairs[:, 0]] - pix[pairs[:, 1]], axis=1)
    px_per_pitch = float(np.median(d_px))
    if px_per_pitch <= 0:
        raise DataError("neighbouring spots share one pixel position; cannot estimate microns per pixel")
    mpp = pitch_um / px_per_pitch
    mad = float(np.median(np.abs(d_px - px_per_pitch)))
    log.info(
        "estimated %.4f um/px from %d neighbouring spot pairs (%.1f px per %.0f um pitch, MAD %.1f px)",
        mpp,
        len(pairs),
        px_per_pitch,
        pitch_um,
        mad,
    )
    if mad > 0.1 * px_per_pitch:
        log.warning(
            "spot spacing varies a lot (MAD %.1f px of %.1f px): the mpp estimate %.4f may be unreliable",
            mad,
            px_per_pitch,
            mpp,
        )
    return mpp
