"""Registrations of the built-in readers (imported by :mod:`biomodal.io.registry`).

Each entry is a thin shim that imports the real reader on its first call, so
registering them imports no backend (numpy, anndata, openslide stay unloaded).
The content checks only look at names, folder listings and a few header bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from biomodal.errors import ConfigError
from biomodal.io import (
    _clinical_readers,  # noqa: F401  (registers wfdb, ecg_dicom, ecg_npz, openi_xml, ...)
    _imaging_readers,  # noqa: F401  (registers xray)
)
from biomodal.io.registry import _check_options, register_reader

_TIFF = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_JPEG = (b"\xff\xd8\xff",)
#: Header signatures checked for these slide suffixes (others, e.g. .mrxs, are not checked).
_MAGIC = {
    **dict.fromkeys((".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif"), _TIFF),
    ".png": (b"\x89PNG\r\n\x1a\n",),
    ".jpg": _JPEG,
    ".jpeg": _JPEG,
}
_XENIUM_CELLS = ("cells.csv.gz", "cells.csv", "cells.parquet")


def _is_slide(path: Path) -> bool:
    """Accept a TIFF, PNG or JPEG header matching the suffix (.svs, .tif, .ndpi, .scn, .bif are TIFF)."""
    magic = _MAGIC.get(path.suffix.lower())
    if magic is None:
        return path.is_file()
    with open(path, "rb") as fh:
        return fh.read(8).startswith(magic)


def _is_visium_dir(folder: Path) -> bool:
    """Whether ``folder`` looks like a Space Ranger ``outs`` folder."""
    return folder.is_dir() and (
        (folder / "spatial" / "scalefactors_json.json").is_file()
        or any((folder / f"{k}_feature_bc_matrix.h5").is_file() for k in ("filtered", "raw"))
    )


def _is_visium(path: Path) -> bool:
    """Accept a folder with spatial/scalefactors_json.json or *_feature_bc_matrix.h5, or that matrix."""
    if path.is_dir():
        return _is_visium_dir(path)
    return path.name.lower().endswith("_feature_bc_matrix.h5") and (path.parent / "spatial").is_dir()


def _is_xenium_dir(folder: Path) -> bool:
    """Whether ``folder`` looks like a Xenium run folder."""
    return folder.is_dir() and (
        (folder / "experiment.xenium").is_file()
        or (
            (folder / "cell_feature_matrix.h5").is_file()
            and any((folder / c).is_file() for c in _XENIUM_CELLS)
        )
    )


def _is_xenium(path: Path) -> bool:
    """Accept a folder with experiment.xenium or cell_feature_matrix.h5 + cells table, or those files."""
    if path.is_dir():
        return _is_xenium_dir(path)
    name = path.name.lower()
    return name in ("experiment.xenium", "cell_feature_matrix.h5") and _is_xenium_dir(path.parent)


def _folder_of(path: str | os.PathLike) -> Path:
    """``path`` if it is a folder, else the folder holding it."""
    p = Path(path).expanduser()
    return p if p.is_dir() else p.parent


@register_reader(
    "slide",
    suffixes=(".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".svslide", ".bif", ".png", ".jpg", ".jpeg"),
    kind="slide",
    claims=_is_slide,
    description="whole-slide image (OpenSlide) or plain image (Pillow), read lazily at any mpp",
)
def read_slide_entry(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Open a slide with :func:`biomodal.io.read_slide` (options: ``mpp``)."""
    from biomodal.io.slide import read_slide

    _check_options(read_slide, "slide", kwargs)
    return read_slide(path, **kwargs)


@register_reader(
    "visium",
    suffixes=(".h5",),
    kind="spatial",
    claims=_is_visium,
    folders=True,
    description="10x Visium Space Ranger folder (or its *_feature_bc_matrix.h5) -> AnnData",
)
def read_visium_entry(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Read a Space Ranger folder with :func:`biomodal.io.read_visium`.

    Given the count matrix itself, its folder is read with ``count_file`` set to it.
    """
    from biomodal.io.spatial import read_visium

    _check_options(read_visium, "visium", kwargs)
    p = Path(path).expanduser()
    if p.is_file():
        given = kwargs.setdefault("count_file", p.name)
        if given != p.name:
            raise ConfigError(f"count_file={given!r} contradicts the count matrix given as path ({p})")
    return read_visium(_folder_of(p), **kwargs)


@register_reader(
    "xenium",
    suffixes=(".xenium", ".h5"),
    kind="spatial",
    claims=_is_xenium,
    folders=True,
    description="10x Xenium run folder (or its experiment.xenium / cell_feature_matrix.h5) -> AnnData",
)
def read_xenium_entry(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Read a Xenium run folder (or the folder of the file given) with :func:`biomodal.io.read_xenium`."""
    from biomodal.io.spatial import read_xenium

    _check_options(read_xenium, "xenium", kwargs)
    return read_xenium(_folder_of(path), **kwargs)


@register_reader(
    "h5ad",
    suffixes=(".h5ad",),
    kind="spatial",
    description="AnnData .h5ad, validated and completed to the spatial convention",
)
def read_h5ad_entry(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Read an ``.h5ad`` with :func:`biomodal.io.read_h5ad`."""
    from biomodal.io.spatial import read_h5ad

    _check_options(read_h5ad, "h5ad", kwargs)
    return read_h5ad(path, **kwargs)


@register_reader(
    "legacy_st",
    kind="spatial",
    description="legacy Spatial Transcriptomics (her2st): counts path plus spots= and image= (by name only)",
)
def read_legacy_st_entry(
    path: str | os.PathLike,
    *,
    spots: str | os.PathLike | None = None,
    image: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Any:
    """Read a legacy ST section with :func:`biomodal.io.read_legacy_st`; ``path`` is the counts table.

    The reader needs three files, so it claims no suffix: ask for it by name.
    """
    from biomodal.io.spatial import read_legacy_st

    if spots is None or image is None:
        raise ConfigError(
            "reader 'legacy_st' reads three files: pass spots= (the spot table) and image= (the H&E "
            f"image) besides the counts table {os.fspath(path)!r}"
        )
    _check_options(read_legacy_st, "legacy_st", {"spots": spots, "image": image, **kwargs})
    return read_legacy_st(path, spots, image, **kwargs)


def _is_nifti(path: Path) -> bool:
    """Accept a NIfTI-1/2 or Analyze header (sizeof_hdr 348 or 540, either byte order); any .img."""
    name = path.name.lower()
    if name.endswith(".img"):
        return True  # the data half of a pair: read_fmri checks its .hdr
    if name.endswith(".gz"):
        import gzip

        with gzip.open(path, "rb") as fh:
            head = fh.read(4)
    else:
        with open(path, "rb") as fh:
            head = fh.read(4)
    return (
        len(head) == 4 and {int.from_bytes(head, "little"), int.from_bytes(head, "big")} & {348, 540} != set()
    )


@register_reader(
    "fmri",
    suffixes=(".nii", ".nii.gz", ".hdr", ".img"),
    kind="fmri",
    claims=_is_nifti,
    description="fMRI NIfTI / Analyze pair -> (time, voxels) within a mask, reoriented to RAS (nibabel)",
)
def read_fmri_entry(path: str | os.PathLike, **kwargs: Any) -> Any:
    """Read a 4-D series or 3-D map with :func:`biomodal.io.read_fmri` (options: ``mask``, ``labels``...)."""
    from biomodal.io._fmri import read_fmri

    _check_options(read_fmri, "fmri", kwargs)
    return read_fmri(path, **kwargs)
