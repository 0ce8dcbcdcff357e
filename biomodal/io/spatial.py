"""Spatial-transcriptomics readers: files -> AnnData in the biomodal spatial convention.

The convention (see ``docs/spatial.md``): raw counts in ``X`` and
``layers["counts"]``; ``obsm["spatial"]`` = ``(x, y)`` in level-0 pixels of the
slide/image; ``uns["spatial"]`` holds ``slide_path`` (absolute), ``mpp``,
``mpp_source``, ``spot_diameter_um``, ``spot_pitch_um``, ``technology`` and
``x_is_counts``; ``obs`` has categorical ``sample``, ``donor``, ``batch``.

Readers: :func:`read_visium` (Space Ranger), :func:`read_legacy_st` (her2st /
Ståhl arrays), :func:`read_xenium` (cells or pooled pseudo-spots) and
:func:`read_h5ad` (validate and complete an existing AnnData).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from biomodal.errors import DataError, MissingMetadataError, ReaderError
from biomodal.io._legacy_st import read_legacy_st
from biomodal.io._spatial_common import (
    MAX_OUTSIDE_FRACTION,
    categorical,
    check_counts,
    estimate_mpp_from_spots,
    image_size,
    log,
    make_unique,
    require_file,
)
from biomodal.io._visium import SPACERANGER_SPOT_DIAMETER_REF_UM, read_visium
from biomodal.io._xenium import read_xenium

if TYPE_CHECKING:  # pragma: no cover
    import anndata as ad

__all__ = ["estimate_mpp_from_spots", "read_h5ad", "read_legacy_st", "read_visium", "read_xenium"]


def _scanpy_libraries(uns_spatial: Any) -> dict[str, Any]:
    """Return the scanpy-style ``uns["spatial"][library_id] = {"scalefactors": ...}`` entries, if any."""
    if not isinstance(uns_spatial, dict):
        return {}
    return {k: v for k, v in uns_spatial.items() if isinstance(v, dict) and "scalefactors" in v}


def read_h5ad(
    path: str | os.PathLike,
    *,
    slide: str | os.PathLike | None = None,
    mpp: float | None = None,
    sample: str | None = None,
    donor: str | None = None,
    batch: str | None = None,
) -> ad.AnnData:
    """Read an ``.h5ad`` and validate / complete it to the biomodal spatial convention.

    What can be filled is filled: a relative ``uns["spatial"]["slide_path"]`` is
    resolved against the h5ad's folder; ``mpp`` falls back to a stored value, then
    to a scanpy-style Visium ``spot_diameter_fullres`` (``obsm["spatial"]`` is then
    taken to be full-resolution pixels); missing ``sample/donor/batch`` columns get
    the file stem. A scanpy-style ``uns["spatial"]`` (one entry per library) is kept
    under ``uns["spatial"]["libraries"]``. A non-count ``X`` (e.g. log-normalised) is
    accepted, logged and recorded as ``uns["spatial"]["x_is_counts"] = False``.

    Parameters
    ----------
    path
        The ``.h5ad`` file.
    slide
        Image/slide that ``obsm["spatial"]`` refers to (overrides the stored path).
    mpp
        Microns per pixel of that slide (overrides stored or estimated values).
    sample, donor, batch
        Override ``obs`` labels (existing columns are kept otherwise).

    Returns
    -------
    anndata.AnnData

    Raises
    ------
    ReaderError
        The file (or the slide it names) does not exist or cannot be read.
    MissingMetadataError
        No ``obsm["spatial"]``, no slide path or no way to determine ``mpp``.
    DataError
        NaN values, malformed coordinates, most spots outside the slide, empty data.
    """
    import anndata as ad
    import scipy.sparse as sp

    p = require_file(path, "h5ad file")
    try:
        adata = ad.read_h5ad(p)
    except Exception as exc:  # h5py/anndata raise many types on corrupt files
        raise ReaderError(p, f"cannot read h5ad: {exc}") from exc
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DataError(f"{p}: empty AnnData ({adata.n_obs} x {adata.n_vars})")
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()].unique()
        raise DataError(
            f"{p}: {len(dup)} spot ids appear more than once in obs_names (e.g. {list(dup[:3])}); "
            "expected one row per spot (call adata.obs_names_make_unique() if they are distinct spots)"
        )
    if "spatial" not in adata.obsm:
        raise MissingMetadataError(f"{p}: no obsm['spatial'] (expected (n, 2) x, y pixel coordinates)")
    coords = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] < 2 or not np.isfinite(coords[:, :2]).all():
        raise DataError(f"{p}: obsm['spatial'] must be finite (n, 2) coordinates, got shape {coords.shape}")
    adata.obsm["spatial"] = np.ascontiguousarray(coords[:, :2])

    old = adata.uns.get("spatial", {})
    old = dict(old) if isinstance(old, dict) else {}
    libraries = _scanpy_libraries(old)
    info: dict[str, Any] = {k: v for k, v in old.items() if k not in libraries}
    if libraries:
        info["libraries"] = libraries
        info.setdefault("technology", "visium")
    info.setdefault("technology", "unknown")

    # slide path
    if slide is not None:
        slide_path = require_file(slide, "slide image")
    elif info.get("slide_path"):
        sp_ = Path(str(info["slide_path"])).expanduser()
        slide_path = require_file(
            sp_ if sp_.is_absolute() else p.parent / sp_, "slide named in uns['spatial']['slide_path']"
        )
    else:
        raise MissingMetadataError(
            f"{p}: no uns['spatial']['slide_path']; give the image obsm['spatial'] refers to: "
            "read_h5ad(path, slide=...), `slide:` in a recipe section, or `biomodal embed --slide IMAGE`"
        )
    info["slide_path"] = str(slide_path)

    # microns per pixel
    if mpp is not None:
        info["mpp"], info["mpp_source"] = float(mpp), "user"
    elif info.get("mpp") is not None:
        info["mpp"] = float(info["mpp"])
        info.setdefault("mpp_source", "metadata")
    elif libraries:
        sf = next(iter(libraries.values()))["scalefactors"]
        d = float(sf.get("spot_diameter_fullres", np.nan))
        if not (np.isfinite(d) and d > 0):
            raise MissingMetadataError(
                f"{p}: no mpp in uns['spatial'] and no spot_diameter_fullres; pass mpp="
            )
        info["mpp"], info["mpp_source"] = SPACERANGER_SPOT_DIAMETER_REF_UM / d, "estimated"
        log.info("%s: mpp %.4f estimated from spot_diameter_fullres (full-resolution pixels)", p, info["mpp"])
    else:
        raise MissingMetadataError(
            f"{p}: no uns['spatial']['mpp']; pass mpp= (microns per pixel of the slide)"
        )
    if not info["mpp"] > 0:
        raise DataError(f"{p}: mpp must be > 0, got {info['mpp']}")
    if info["technology"] == "visium":
        info.setdefault("spot_diameter_um", 55.0)
        info.setdefault("spot_pitch_um", 100.0)
    info.setdefault("spot_diameter_um", float("nan"))
    info.setdefault("spot_pitch_um", float("nan"))

    # spots vs slide
    w, h = image_size(slide_path)
    xy = adata.obsm["spatial"]
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    n_out = int((~inside).sum())
    if n_out:
        msg = f"{p}: {n_out} of {adata.n_obs} spots lie outside {slide_path} ({w}x{h} px)"
        if n_out > MAX_OUTSIDE_FRACTION * adata.n_obs:
            raise DataError(msg + "; is obsm['spatial'] in this image's level-0 pixels?")
        log.warning("%s; dropping them", msg)
        adata = adata[inside].copy()

    # counts
    X = adata.X
    values = X.data if sp.issparse(X) else np.asarray(X)
    if values.size and not np.isfinite(values).all():
        raise DataError(f"{p}: X contains NaN or infinite values")
    is_counts = bool(values.size == 0 or (values.min() >= 0 and np.all(values == np.round(values))))
    if "counts" in adata.layers:
        check_counts(adata.layers["counts"], f"{p} (layers['counts'])")
    elif is_counts:
        adata.layers["counts"] = X.copy()
    if not is_counts:
        log.warning(
            "%s: X is not raw counts (non-integer or negative values, e.g. log-normalised); "
            "recorded uns['spatial']['x_is_counts']=False%s",
            p,
            "" if "counts" in adata.layers else " and no layers['counts']",
        )
    info["x_is_counts"] = is_counts

    if adata.var_names.duplicated().any():
        adata.var_names = make_unique(adata.var_names.tolist(), p)
    n = adata.n_obs
    stem = p.stem
    for key, value, default in (("sample", sample, stem), ("donor", donor, None), ("batch", batch, None)):
        if value is not None:
            adata.obs[key] = categorical(value, n)
        elif key not in adata.obs:
            fallback = default if default is not None else adata.obs["sample"]
            adata.obs[key] = categorical(fallback, n)
        else:
            adata.obs[key] = categorical(adata.obs[key].astype(str).to_numpy(), n)
    info.setdefault("source_path", str(p))
    adata.uns["spatial"] = info
    return adata
