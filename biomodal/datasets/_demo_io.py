"""On-disk side of the demo dataset: the :class:`DemoDataset` handle and the pyramidal TIFF writer."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biomodal._atomic import publish_folder
from biomodal.errors import ConfigError, DataError

__all__ = ["DemoDataset", "publish_folder", "staging_folder", "write_pyramid_tiff"]


@dataclass
class DemoDataset:
    """A generated demo dataset on disk.

    Attributes
    ----------
    root
        Folder holding the slides, ``.h5ad`` files, ``manifest.csv`` and ``generation.json``.
    sections
        One dict per section: ``sample``, ``donor``, ``split``, ``slide_path`` and ``h5ad_path``
        (absolute :class:`~pathlib.Path`).
    manifest
        The ``manifest.csv`` table (paths relative to ``root``).
    params
        The generation parameters (``generation.json``).
    """

    root: Path
    sections: list[dict[str, Any]]
    manifest: Any
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, root: str | os.PathLike) -> DemoDataset:
        """Open a dataset written by :func:`make_demo_spatial` (from its ``manifest.csv``)."""
        import pandas as pd

        root = Path(root).resolve()
        if not (root / "manifest.csv").is_file():
            raise DataError(f"{root}: no manifest.csv; expected a folder written by make_demo_spatial")
        manifest = pd.read_csv(root / "manifest.csv")
        params = {}
        if (root / "generation.json").is_file():
            params = json.loads((root / "generation.json").read_text())
        sections = [
            {
                "sample": r.sample,
                "donor": r.donor,
                "split": r.split,
                "slide_path": root / r.slide_path,
                "h5ad_path": root / r.h5ad_path,
            }
            for r in manifest.itertuples()
        ]
        return cls(root, sections, manifest, params)

    @property
    def samples(self) -> list[str]:
        """Section names in manifest order."""
        return [s["sample"] for s in self.sections]

    def samples_in(self, split: str) -> list[str]:
        """Sections of one split (``"train"``, ``"val"`` or ``"test"``)."""
        return [s["sample"] for s in self.sections if s["split"] == split]

    def read(self, sample: str):
        """Read one section's AnnData; ``uns["spatial"]["slide_path"]`` is made absolute.

        Parameters
        ----------
        sample
            A name from :attr:`samples`.
        """
        import anndata as ad

        match = [s for s in self.sections if s["sample"] == sample]
        if not match:
            raise DataError(f"{self.root}: no section {sample!r}; available: {self.samples}")
        path = Path(match[0]["h5ad_path"])
        adata = ad.read_h5ad(path)
        rel = adata.uns["spatial"]["slide_path"]
        adata.uns["spatial"]["slide_path"] = str((path.parent / rel).resolve())
        return adata

    def adatas(self, split: str | None = None) -> list:
        """Read every section (or those of ``split``) as AnnData, in manifest order."""
        names = self.samples if split is None else self.samples_in(split)
        return [self.read(s) for s in names]

    def __len__(self) -> int:
        return len(self.sections)

    def __repr__(self) -> str:
        splits = {sp: len(self.samples_in(sp)) for sp in ("train", "val", "test")}
        n_spots = int(self.manifest["n_spots"].sum()) if "n_spots" in self.manifest else "?"
        donors = len({s["donor"] for s in self.sections})
        return (
            f"DemoDataset(root={str(self.root)!r}, donors={donors}, sections={len(self)}, "
            f"spots={n_spots}, genes={self.params.get('n_genes', '?')}, splits={splits})"
        )


def _pyramid_dims(width: int, height: int, n_levels: int | None, min_side: int) -> list[tuple[int, int]]:
    """Level sizes: halve (floor) until ``n_levels`` levels, or until the longest side is <= ``min_side``."""
    dims = [(width, height)]
    while (len(dims) < n_levels) if n_levels is not None else (max(dims[-1]) > min_side):
        w, h = dims[-1]
        if w < 2 or h < 2:
            break
        dims.append((w // 2, h // 2))
    return dims


def _halve(level: np.ndarray) -> np.ndarray:
    """2x2 block mean of an RGB uint8 image (rounded half up; odd last row/column dropped)."""
    h2, w2 = level.shape[0] // 2 * 2, level.shape[1] // 2 * 2
    acc = level[0:h2:2, 0:w2:2].astype(np.uint16) + level[1:h2:2, 0:w2:2]
    acc += level[0:h2:2, 1:w2:2]
    acc += level[1:h2:2, 1:w2:2]
    return ((acc + 2) // 4).astype(np.uint8)


def write_pyramid_tiff(
    path: str | os.PathLike,
    image: np.ndarray | None = None,
    mpp: float | None = 0.25,
    *,
    size: tuple[int, int] | None = None,
    tile_fn: Callable[[int, int, int, int], np.ndarray] | None = None,
    n_levels: int | None = None,
    tile: int = 256,
    compression: str = "jpeg",
    quality: int = 90,
    bigtiff: bool | None = None,
    min_side: int = 1024,
) -> list[tuple[int, int]]:
    """Write an RGB image as a tiled pyramidal TIFF that OpenSlide opens (``generic-tiff``).

    Level ``k`` is level 0 downsampled by ``2**k`` (2x2 block means, sizes floored). Each
    level is its own top-level page (not a SubIFD), ``subfiletype`` 0 for level 0 and 1
    (reduced resolution) for the others, with resolution tags in pixels per centimetre so
    OpenSlide reports ``openslide.mpp-x``.

    Parameters
    ----------
    path
        Output file.
    image
        ``(H, W, 3)`` uint8 level-0 image held in memory. Give either this, or ``size`` and
        ``tile_fn`` to stream a slide too large for memory.
    mpp
        Microns per level-0 pixel; ``None`` writes no resolution tags.
    size
        ``(width, height)`` of level 0 when streaming with ``tile_fn``.
    tile_fn
        ``tile_fn(level, x, y, tile) -> (tile, tile, 3) uint8``: the tile whose top-left
        corner is ``(x, y)`` in that level's pixels; called in row-major order per level.
    n_levels
        Number of levels; ``None`` halves until the longest side is at most ``min_side``.
    tile
        Tile side in pixels (a multiple of 16).
    compression
        A codec libtiff decodes: ``"jpeg"`` (default), ``"zlib"``/``"deflate"`` or ``"lzw"``.
    quality
        JPEG quality (only used with ``compression="jpeg"``).
    bigtiff
        Write BigTIFF; ``None`` chooses it when level 0 holds more than 2 GiB uncompressed.
    min_side
        Stop rule used when ``n_levels`` is ``None``.

    Returns
    -------
    list of (width, height)
        The level dimensions written.
    """
    tifffile = _import("tifffile")
    if compression not in ("zlib", "deflate", "none", None):
        _import("imagecodecs")
    if image is not None:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(f"{path}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        height, width = image.shape[:2]
    elif size is not None and tile_fn is not None:
        width, height = size
    else:
        raise DataError(f"{path}: pass an image, or size=(width, height) and tile_fn to stream tiles")
    dims = _pyramid_dims(width, height, n_levels, min_side)
    if bigtiff is None:
        bigtiff = width * height * 3 > 2**31
    comp_args = {"level": quality} if compression == "jpeg" else {}
    level = image
    with tifffile.TiffWriter(path, bigtiff=bigtiff) as tw:
        for k, (lw, lh) in enumerate(dims):
            resolution_kw: dict[str, Any] = {}
            if mpp is not None:
                ppcm = 1e4 / (mpp * 2**k)
                resolution_kw = {"resolution": (ppcm, ppcm), "resolutionunit": "CENTIMETER"}
            if level is not None:
                if k > 0:
                    level = _halve(level)
                data: np.ndarray | Iterator[np.ndarray] = level
            else:
                data = _level_tiles(tile_fn, k, lw, lh, tile)  # type: ignore[arg-type]
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
                software="biomodal",
                **resolution_kw,
            )
    return dims


def _level_tiles(
    tile_fn: Callable[[int, int, int, int], np.ndarray], level: int, width: int, height: int, tile: int
) -> Iterator[np.ndarray]:
    for ty in range(0, height, tile):
        for tx in range(0, width, tile):
            yield tile_fn(level, tx, ty, tile)


def _import(name: str):
    from biomodal._lazy import import_optional

    return import_optional(name, "histology")


def staging_folder(out: Path) -> Path:
    """Create and return a hidden sibling of ``out``; an ``OSError`` naming ``out`` when impossible."""
    blocker = next((a for a in out.parents if a.exists() and not a.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"{out}: cannot create the folder, {blocker} is a file, not a folder")
    staging = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.partial"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot create the output folder ({exc.strerror or exc})", str(out)
        ) from exc
    return staging
