"""On-disk side of the demo dataset: the :class:`DemoDataset` handle and the pyramidal TIFF writer."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biomodal.errors import DataError

__all__ = ["DemoDataset", "write_pyramid_tiff"]


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


def write_pyramid_tiff(
    path: str | os.PathLike, image: np.ndarray, mpp: float, *, tile: int = 256, quality: int = 90
) -> list[tuple[int, int]]:
    """Write an RGB image as a tiled, JPEG-compressed pyramidal TIFF that OpenSlide reads.

    One IFD per level (downsample 2 each, until the longest side is at most 1024 px),
    resolution tags in pixels per centimetre so OpenSlide reports ``openslide.mpp-x``.

    Returns
    -------
    list of (width, height)
        The level dimensions written.
    """
    tifffile = _import("tifffile")
    _import("imagecodecs")
    dims = []
    level = image
    with tifffile.TiffWriter(path, bigtiff=False) as tw:
        i = 0
        while True:
            res = 1e4 / (mpp * 2**i)
            tw.write(
                level,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": quality},
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                subfiletype=0 if i == 0 else 1,
                metadata=None,
                software="biomodal",
            )
            dims.append((level.shape[1], level.shape[0]))
            if max(level.shape[:2]) <= 1024:
                break
            h2, w2 = level.shape[0] // 2 * 2, level.shape[1] // 2 * 2
            acc = level[0:h2:2, 0:w2:2].astype(np.uint16) + level[1:h2:2, 0:w2:2]
            acc += level[0:h2:2, 1:w2:2]
            acc += level[1:h2:2, 1:w2:2]
            level = ((acc + 2) // 4).astype(np.uint8)
            i += 1
    return dims


def _import(name: str):
    from biomodal._lazy import import_optional

    return import_optional(name, "histology")
