"""Regular tile grids over a slide, filtered by tissue: :func:`tile`.

Tiles are laid out in physical units (microns) so the same call gives
comparable tiles on slides scanned at different resolutions. The tissue
fraction of every tile comes from the summed-area table of the tissue mask
(vectorised, area weighted), so gridding a 100,000 x 100,000 px slide takes
well under a second once the mask exists.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from biomodal.errors import ConfigError
from biomodal.pp.tissue import TissueMask, detect_tissue

__all__ = ["DEFAULT_MAX_TILES", "MAX_TILES", "max_tiles", "tile"]

#: Default limit on the grid cells of one :func:`tile` call (2**24, about 16.8 million tiles).
DEFAULT_MAX_TILES = 2**24
#: Limit on the grid cells :func:`tile` lays out (checked before the grid is allocated).
#: ``None``: ``$BIOMODAL_MAX_TILES``, else :data:`DEFAULT_MAX_TILES`.
MAX_TILES: int | None = None
_ENV_MAX_TILES = "BIOMODAL_MAX_TILES"


def max_tiles() -> int:
    """Return the grid-size limit in force now (see :data:`MAX_TILES`)."""
    import os

    where, value = "biomodal.pp.tiling.MAX_TILES", MAX_TILES
    if value is None:
        where, value = _ENV_MAX_TILES, os.environ.get(_ENV_MAX_TILES) or DEFAULT_MAX_TILES
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n <= 0:
        raise ConfigError(f"{where}={value!r} is invalid; expected a positive integer number of tiles")
    return n


def _positive(value: Any, key: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{key}={value!r} is invalid; expected a positive number")
    return v


def _count(extent: int, size0: float, stride0: float) -> int:
    """Count the tiles of ``size0`` every ``stride0`` that fit inside ``extent``."""
    if size0 > extent + 1e-9:
        return 0
    return math.floor((extent - size0) / stride0 + 1e-9) + 1


def _starts(extent: int, size0: float, stride0: float) -> np.ndarray:
    """Level-0 starts of tiles of ``size0`` every ``stride0`` that fit inside ``extent``."""
    return np.round(np.arange(_count(extent, size0, stride0)) * stride0).astype(np.int64)


def tile(
    slide: Any,
    *,
    tile_size_um: float | None = None,
    tile_px: int | None = None,
    mpp: float | None = None,
    stride_um: float | None = None,
    stride_px: int | None = None,
    min_tissue_fraction: float = 0.5,
    mask: TissueMask | None = None,
) -> pd.DataFrame:
    """Lay a regular grid of tiles over a slide and keep those on tissue.

    Give the tile size either in microns (``tile_size_um``) or in pixels at a resolution
    (``tile_px`` and ``mpp``, i.e. ``tile_size_um = tile_px * mpp``). With ``tile_px`` and
    no ``mpp`` the size is in level-0 pixels, which works on slides without mpp metadata.

    Parameters
    ----------
    slide
        A :class:`biomodal.io.Slide` (or any object with ``dimensions`` and ``mpp``).
    tile_size_um
        Tile side in microns.
    tile_px
        Tile side in pixels at ``mpp`` (level-0 pixels when ``mpp`` is ``None``).
    mpp
        Resolution ``tile_px`` refers to.
    stride_um
        Grid step in microns; default the tile size (no overlap).
    stride_px
        Grid step in pixels at ``mpp`` (level-0 pixels when ``mpp`` is ``None``).
    min_tissue_fraction
        Keep tiles with at least this fraction of tissue; ``0`` keeps every tile.
    mask
        Tissue mask; computed with :func:`detect_tissue` when ``None`` and
        ``min_tissue_fraction > 0`` (with ``0`` and no mask, ``tissue_fraction`` is NaN).

    Returns
    -------
    pandas.DataFrame
        One row per tile: ``x``, ``y`` (level-0 top-left), ``w0``, ``h0`` (level-0 size) and
        ``tissue_fraction``; ``df.attrs`` records the tile size, stride and slide path.

    Raises
    ------
    ConfigError
        Invalid sizes, or a grid of more than :func:`max_tiles` tiles (checked before the
        grid is allocated; the message names the slide, the grid and the limit).
    """
    if (tile_size_um is None) == (tile_px is None):
        raise ConfigError("tile() needs exactly one of tile_size_um=<microns> or tile_px=<pixels> (+ mpp)")
    if stride_um is not None and stride_px is not None:
        raise ConfigError("give stride_um or stride_px, not both")
    if not 0 <= float(min_tissue_fraction) <= 1:
        raise ConfigError(
            f"min_tissue_fraction={min_tissue_fraction!r} is invalid; expected a value in [0, 1]"
        )
    width, height = (int(v) for v in slide.dimensions)

    physical = tile_size_um is not None or mpp is not None or stride_um is not None
    if physical:
        level0_mpp = slide.mpp  # raises MissingMetadataError naming the file when unknown
        px_mpp = _positive(mpp, "mpp") if mpp is not None else level0_mpp
        size_um = _positive(tile_size_um, "tile_size_um") if tile_size_um is not None else None
        if size_um is None:
            size_um = _positive(tile_px, "tile_px") * px_mpp
        if stride_um is not None:
            step_um = _positive(stride_um, "stride_um")
        elif stride_px is not None:
            step_um = _positive(stride_px, "stride_px") * px_mpp
        else:
            step_um = size_um
        size0, step0 = size_um / level0_mpp, step_um / level0_mpp
    else:  # level-0 pixels, no mpp needed
        size0 = _positive(tile_px, "tile_px")
        step0 = _positive(stride_px, "stride_px") if stride_px is not None else size0
        size_um = step_um = None

    nx, ny, limit = _count(width, size0, step0), _count(height, size0, step0), max_tiles()
    if nx * ny > limit:  # refuse before the grid (5 columns per tile) is allocated
        raise ConfigError(
            f"{getattr(slide, 'path', 'slide')}: a grid of {nx}x{ny} = {nx * ny:,} tiles (level-0 tile "
            f"{size0:.4g} px, step {step0:.4g} px on {width}x{height} px) exceeds the limit of {limit:,} "
            f"tiles; use larger tiles or strides, or raise the limit with ${_ENV_MAX_TILES} or "
            "biomodal.pp.tiling.MAX_TILES"
        )
    xs, ys = _starts(width, size0, step0), _starts(height, size0, step0)
    gx, gy = np.meshgrid(xs, ys)  # row-major: y outer, x inner
    gx, gy = gx.ravel(), gy.ravel()
    side = max(1, round(size0))

    if mask is None and min_tissue_fraction > 0:
        mask = detect_tissue(slide)
    if mask is not None:
        if tuple(mask.slide_dimensions) != (width, height):
            raise ConfigError(
                f"mask was made for a {mask.slide_dimensions[0]}x{mask.slide_dimensions[1]} slide, "
                f"but this slide is {width}x{height}"
            )
        frac = mask.region_fraction(gx, gy, size0, size0)
        keep = frac >= min_tissue_fraction
        gx, gy, frac = gx[keep], gy[keep], frac[keep]
    else:
        frac = np.full(gx.shape, np.nan)

    df = pd.DataFrame(
        {
            "x": gx,
            "y": gy,
            "w0": np.full(gx.shape, side, dtype=np.int64),
            "h0": np.full(gx.shape, side, dtype=np.int64),
            "tissue_fraction": frac,
        }
    )
    df.attrs.update(
        {
            "tile_size_um": size_um,
            "stride_um": step_um,
            "tile_size0": size0,
            "stride0": step0,
            "tile_px": tile_px,
            "mpp": mpp,
            "slide": str(getattr(slide, "path", "")),
        }
    )
    return df
