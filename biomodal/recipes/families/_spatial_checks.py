"""Validation of a spatial section before training: its count table and its slide.

Everything a run will need from a section is opened and checked while the sections are
read, so a bad file fails before the first training step, with the file named: an
all-zero count table (scanpy would fail later with an ``IndexError``), a slide that does
not open or decode (checked by :func:`biomodal.io.read_slide`), a slide without microns
per pixel, and a tile that cannot be read at the section's first spot.
"""

from __future__ import annotations

from typing import Any

from biomodal.errors import DataError

__all__ = ["check_section"]


def _total(x: Any) -> float:
    import numpy as np
    from scipy import sparse

    if sparse.issparse(x):
        return float(np.abs(x.data).sum()) if x.nnz else 0.0
    return float(np.abs(np.asarray(x)).sum())


def check_section(adata: Any, source: str, tile_um: float, mpp: float) -> None:
    """Check one read section: counts not all zero, its slide opens and a spot's tile reads.

    Parameters
    ----------
    adata
        The section (spatial convention: ``obsm["spatial"]``, ``uns["spatial"]["slide_path"]``).
    source
        The count file the section was read from, for messages.
    tile_um, mpp
        Tile side in microns and output resolution of the tiles training will read.

    Raises
    ------
    DataError
        Every count of the section is zero (names ``source``).
    ReaderError, MissingMetadataError, ConfigError
        From opening the slide or reading a tile (the messages name the slide).
    """
    from pathlib import Path

    import numpy as np

    from biomodal.io import read_slide

    if _total(adata.X) == 0:
        raise DataError(
            f"{source}: every count of the section is zero ({adata.n_obs} spots x {adata.n_vars} genes); "
            "expected a count table with expressed genes"
        )
    spatial = adata.uns.get("spatial") if isinstance(adata.uns.get("spatial"), dict) else {}
    path = spatial.get("slide_path")
    if not path or "spatial" not in adata.obsm or adata.n_obs == 0:
        return  # the dataset reports what is missing
    smpp = spatial.get("mpp")
    with read_slide(Path(str(path)), mpp=None if smpp is None else float(smpp)) as slide:
        side0 = float(tile_um) / slide.mpp  # MissingMetadataError naming the slide
        x, y = (float(v) for v in np.asarray(adata.obsm["spatial"])[0, :2])
        px = max(1, round(float(tile_um) / float(mpp)))
        slide.read_region((round(x - side0 / 2), round(y - side0 / 2)), (px, px), mpp=float(mpp))
