"""Write small pyramidal TIFFs that OpenSlide opens (generic-tiff vendor) for fast tests.

OpenSlide's generic-tiff reader needs: a *tiled* TIFF, one top-level page per
pyramid level (not SubIFDs), a codec libtiff decodes (JPEG/deflate/LZW, not
webp/JPEG 2000). Resolution tags in pixels per centimetre give ``openslide.mpp-x``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np


def _levels(width: int, height: int, n_levels: int) -> list[tuple[int, int, int]]:
    return [(max(1, width // 2**k), max(1, height // 2**k), 2**k) for k in range(n_levels)]


def write_pyramid_tiff(
    path: str | Path,
    image: np.ndarray | None = None,
    *,
    size: tuple[int, int] | None = None,
    tile_fn: Callable[[int, int, int, int], np.ndarray] | None = None,
    mpp: float | None = 0.25,
    n_levels: int = 3,
    tile: int = 256,
    compression: str = "jpeg",
    quality: int = 90,
) -> Path:
    """Write an RGB pyramid: level k is level 0 downsampled by ``2**k``.

    Either pass ``image`` (HxWx3 uint8; lower levels are 2x2 block means), or ``size=(w, h)``
    and ``tile_fn(level, x, y, tile) -> (tile, tile, 3) uint8`` (level pixels) to stream a
    slide too large for memory.
    """
    import tifffile

    path = Path(path)
    if image is not None:
        height, width = image.shape[:2]
    else:
        width, height = size  # type: ignore[misc]
    levels = _levels(width, height, n_levels)
    resolution_kw = {}
    comp_args = {"level": quality} if compression == "jpeg" else {}
    with tifffile.TiffWriter(path, bigtiff=width * height * 3 > 2**31) as tw:
        current = image
        for k, (lw, lh, d) in enumerate(levels):
            if mpp is not None:
                ppcm = 1e4 / (mpp * d)
                resolution_kw = {"resolution": (ppcm, ppcm), "resolutionunit": "CENTIMETER"}
            if image is not None:
                if k > 0:
                    prev = current[: 2 * lh, : 2 * lw].astype(np.float32)  # type: ignore[index]
                    current = prev.reshape(lh, 2, lw, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
                data: np.ndarray | Iterator[np.ndarray] = current  # type: ignore[assignment]
            else:

                def tiles(k: int = k, lw: int = lw, lh: int = lh) -> Iterator[np.ndarray]:
                    for ty in range(0, lh, tile):
                        for tx in range(0, lw, tile):
                            yield tile_fn(k, tx, ty, tile)  # type: ignore[misc]

                data = tiles()
            tw.write(
                data,
                shape=(lh, lw, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                compressionargs=comp_args,
                subfiletype=0 if k == 0 else 1,
                metadata=None,
                **resolution_kw,
            )
    return path


def synthetic_he(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth H&E-like RGB image: pink/purple blobs on a white background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.full((height, width, 3), 245, dtype=np.float32)
    for _ in range(4):
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        r = rng.uniform(0.08, 0.2) * min(width, height)
        inside = ((xx - cx) ** 2 + (yy - cy) ** 2) < r**2
        img[inside] = (200, 110, 170)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
