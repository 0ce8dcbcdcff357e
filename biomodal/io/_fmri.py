"""fMRI reader: NIfTI-1/2 (``.nii``, ``.nii.gz``) and Analyze/NIfTI pairs (``.hdr`` + ``.img``).

:func:`read_fmri` returns an :class:`FMRIImage`: the voxels inside a mask as a ``(time,
voxels)`` float32 matrix (a 3-D beta or contrast map is one row), the boolean mask on the
image's grid, the affine, voxel size and repetition time.

Every image is reoriented to the closest canonical orientation (RAS+, with
:func:`nibabel.as_closest_canonical`) **before** voxels are selected, so voxel ``i`` of two
images stored with different axis orders or flips is the same place in the brain. NaN voxels
(outside the brain in SPM maps) never become values: they leave the mask. Masks come from a
mask image (non-zero voxels), a label atlas (integer labels; ``labels=`` keeps some) or the
data's own support (finite and non-zero in some volume). Needs nibabel (``biomodal[fmri]``);
no torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biomodal._lazy import import_optional
from biomodal.errors import DataError, ReaderError

__all__ = ["FMRIImage", "load_canonical", "read_fmri", "same_grid"]

_TIME_TO_S = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


@dataclass
class FMRIImage:
    """Masked fMRI data in canonical (RAS) voxel order.

    Attributes
    ----------
    data
        ``(time, voxels)`` float32: the voxels where ``mask`` is True, in C order of the grid.
        A 3-D map gives one row.
    mask
        Boolean ``(X, Y, Z)`` mask on the (reoriented) grid of the image.
    affine
        ``(4, 4)`` voxel-to-world (mm) affine of that grid.
    tr
        Repetition time in seconds (``None`` for 3-D maps or when the header has none).
    voxel_size
        Voxel edge lengths in mm, along the grid axes.
    path
        The file read.
    orientation, source_orientation
        Axis codes of the returned grid (``"RAS"`` when reoriented) and of the file.
    labels
        Atlas label of every masked voxel when the mask came from a label atlas, else ``None``.
    info
        Facts about the read (``n_nan_in_mask``: mask voxels dropped because they were NaN).
    """

    data: np.ndarray
    mask: np.ndarray
    affine: np.ndarray
    tr: float | None
    voxel_size: tuple[float, ...]
    path: str
    orientation: str = "RAS"
    source_orientation: str = "RAS"
    labels: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_voxels(self) -> int:
        """Number of voxels in the mask."""
        return int(self.data.shape[1])

    @property
    def shape(self) -> tuple[int, ...]:
        """Grid shape ``(X, Y, Z)``."""
        return tuple(int(s) for s in self.mask.shape)

    def coords(self) -> np.ndarray:
        """World coordinates (mm) of the masked voxels, ``(voxels, 3)``."""
        ijk = np.argwhere(self.mask).astype(np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def to_volume(self, values: np.ndarray | None = None) -> np.ndarray:
        """Put ``(voxels,)`` or ``(time, voxels)`` values back on the grid (NaN outside the mask)."""
        v = self.data if values is None else np.asarray(values)
        rows = v.reshape(-1, v.shape[-1])
        if rows.shape[1] != self.n_voxels:
            raise DataError(f"{self.path}: to_volume got {rows.shape[1]} values for {self.n_voxels} voxels")
        out = np.full((rows.shape[0], *self.shape), np.nan, np.float32)
        out[:, self.mask] = rows
        return out[0] if v.ndim == 1 else np.moveaxis(out, 0, -1)

    def __repr__(self) -> str:
        tr = f", TR {self.tr:g} s" if self.tr is not None else ""
        vs = "x".join(f"{v:g}" for v in self.voxel_size)
        return (
            f"FMRIImage({self.data.shape[0]} volumes x {self.n_voxels} voxels; grid {self.shape} "
            f"{self.orientation} (file {self.source_orientation}), {vs} mm{tr}; "
            f"{os.path.basename(self.path)})"
        )


def _nib() -> Any:
    return import_optional("nibabel", "fmri")


def _check_pair(path: Path) -> None:
    """Raise when half of an Analyze/NIfTI pair (``.hdr`` + ``.img``) is missing, naming it."""
    suffix = path.suffix.lower()
    if suffix not in (".hdr", ".img"):
        return
    other = ".img" if suffix == ".hdr" else ".hdr"
    for cand in (path.with_suffix(other), path.with_suffix(other.upper())):
        if cand.is_file():
            return
    half = "image data" if other == ".img" else "header"
    raise ReaderError(
        path, f"an Analyze/NIfTI pair needs its {half} file {path.with_suffix(other).name} beside it"
    )


def load_canonical(path: str | os.PathLike, *, reorient: bool = True) -> tuple[Any, str]:
    """Load an image with nibabel, reoriented to RAS when ``reorient``.

    Returns
    -------
    tuple
        ``(image, source axis codes)``.
    """
    nib = _nib()
    p = Path(path).expanduser()
    if not p.exists():
        raise ReaderError(p, "no such file (expected a .nii, .nii.gz or .hdr/.img image)")
    _check_pair(p)
    try:
        img = nib.load(os.fspath(p))
    except Exception as exc:  # nibabel raises ImageFileError, ValueError, EOFError...
        raise ReaderError(p, f"not a readable NIfTI/Analyze image ({type(exc).__name__}: {exc})") from exc
    _check_data_size(img, p)
    source = "".join(nib.aff2axcodes(img.affine))
    if reorient:
        img = nib.as_closest_canonical(img)
    return img, source


def _check_data_size(img: Any, path: Path) -> None:
    """Refuse an uncompressed image whose header describes more data than the file holds.

    Checked from the header before any array is allocated (a damaged or truncated header
    would otherwise make nibabel allocate its full shape first).
    """
    proxy = getattr(img, "dataobj", None)
    data_file = getattr(proxy, "file_like", None)
    if not isinstance(data_file, str) or data_file.endswith((".gz", ".bz2", ".zst")):
        return
    try:
        itemsize = img.get_data_dtype().itemsize
        need = int(getattr(proxy, "offset", 0)) + int(np.prod(img.shape, dtype=np.float64)) * itemsize
        have = Path(data_file).stat().st_size
    except (OSError, TypeError, ValueError, AttributeError):
        return
    if need > have:
        raise ReaderError(
            data_file,
            f"the file looks truncated: its header ({path.name}) describes an image of shape "
            f"{tuple(img.shape)} = {need:,} bytes of data, but the file has {have:,} bytes",
        )


def same_grid(
    affine_a: np.ndarray, affine_b: np.ndarray, voxel_size: tuple[float, ...], atol: float | None
) -> bool:
    """Whether two affines describe the same grid within ``atol`` mm (default: half a voxel)."""
    tol = 0.5 * min(voxel_size) if atol is None else float(atol)
    return bool(np.abs(np.asarray(affine_a) - np.asarray(affine_b)).max() <= tol)


def _tr(img: Any) -> float | None:
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not zooms[3] or zooms[3] <= 0:
        return None
    try:
        unit = img.header.get_xyzt_units()[1]
    except Exception:  # Analyze headers have no units
        unit = "sec"
    tr = float(zooms[3]) * _TIME_TO_S.get(unit, 1.0)
    # a "TR" over 100 s is a millisecond value under a seconds (or missing) unit, as in
    # nibabel's example4d.nii.gz (2000 with unit "sec"); fMRI TRs are 0.3-10 s
    return tr * 1e-3 if tr > 100 else tr


def _mask_from(
    mask: Any, labels: Any, shape: tuple[int, ...], affine: np.ndarray, vsize: tuple[float, ...],
    path: Path, reorient: bool, atol: float | None,
) -> tuple[np.ndarray, np.ndarray | None, str]:  # fmt: skip
    """Boolean mask (and atlas labels on the grid) from an array, image or file."""
    where = "mask array"
    if isinstance(mask, np.ndarray):
        m = np.asarray(mask)
        m_aff = None
    else:
        nib = _nib()
        if isinstance(mask, (str, os.PathLike)):
            img, _ = load_canonical(mask, reorient=reorient)
            where = os.fspath(mask)
        else:
            img = nib.as_closest_canonical(mask) if reorient else mask
            where = "mask image"
        m = np.asarray(img.dataobj)
        m_aff = img.affine
    if m.ndim == 4 and m.shape[3] == 1:
        m = m[..., 0]
    if m.shape != shape:
        raise DataError(
            f"mask {where} has grid shape {m.shape} but the data {path} have {shape} (after reorientation)"
        )
    if m_aff is not None and not same_grid(m_aff, affine, vsize, atol):
        raise DataError(
            f"mask {where} and data {path} are on different grids (affines differ by "
            f"{np.abs(m_aff - affine).max():.3g} mm):\nmask\n{np.round(m_aff, 3)}\n"
            f"data\n{np.round(affine, 3)}"
        )
    finite = np.where(np.isfinite(m), m, 0)
    values = np.unique(finite)
    is_atlas = labels is not None or (
        values.size > 2 and np.allclose(values, np.round(values)) and values.min() >= 0
    )
    if not is_atlas:
        return finite != 0, None, where
    lab = np.round(finite).astype(np.int64)
    if labels is None:
        keep = lab > 0
    else:
        want = np.atleast_1d(np.asarray(labels, np.int64))
        absent = sorted(set(want.tolist()) - set(np.unique(lab).tolist()))
        if absent:
            raise DataError(
                f"atlas {where}: labels {absent} do not occur (it has {np.unique(lab[lab > 0]).tolist()})"
            )
        keep = np.isin(lab, want)
    return keep, lab, where


def read_fmri(
    path: str | os.PathLike,
    *,
    mask: Any = None,
    labels: Any = None,
    expect: int | None = None,
    reorient: bool = True,
    grid_atol: float | None = None,
) -> FMRIImage:
    """Read a 4-D fMRI time series or a 3-D map into ``(time, voxels)`` within a mask.

    Parameters
    ----------
    path
        ``.nii``, ``.nii.gz``, ``.hdr`` (with its ``.img``) or ``.img`` (with its ``.hdr``).
    mask
        ``None``: the data's support (voxels finite in every volume and non-zero in some);
        a mask image or file (non-zero voxels), a label atlas (integer labels, ``> 0`` kept or
        those in ``labels``), or a boolean array on the canonical grid. NaN data voxels are
        always removed from the mask (``info["n_nan_in_mask"]`` counts them).
    labels
        Atlas labels to keep (the mask is then read as a label atlas).
    expect
        ``3`` (one map) or ``4`` (a time series) to refuse the other kind; ``None`` accepts both.
    reorient
        Reorient to RAS before selecting voxels (keep True unless measuring what it changes).
    grid_atol
        Largest affine difference (mm) between data and mask that counts as the same grid;
        default half the smallest voxel edge.

    Returns
    -------
    FMRIImage
        ``.data`` ``(time, voxels)`` float32, ``.mask``, ``.affine``, ``.tr``, ``.voxel_size``.

    Raises
    ------
    ReaderError
        Unreadable file, or an ``.hdr`` without its ``.img`` (and vice versa).
    DataError
        3-D given where 4-D is expected (or the reverse), mask shape/affine mismatch (naming both
        files), an all-NaN (or all-zero) map, an empty mask.
    """
    p = Path(path).expanduser()
    img, source = load_canonical(p, reorient=reorient)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 5 and shape[3] == 1:  # some writers store time on axis 4
        shape = shape[:3] + shape[4:]
    if len(shape) not in (3, 4):
        raise DataError(f"{p}: expected a 3-D map or a 4-D time series, got an image of shape {img.shape}")
    if expect is not None and expect not in (3, 4):
        raise DataError(f"read_fmri: expect={expect!r} must be 3, 4 or None")
    if expect is not None and len(shape) != expect:
        what = {3: "a 3-D map (one volume)", 4: "a 4-D time series"}
        raise DataError(f"{p}: expected {what[expect]}, got {what[len(shape)]} of shape {shape}")
    vol = np.asarray(img.get_fdata(dtype=np.float32), np.float32).reshape(shape)
    vol4 = vol[..., None] if vol.ndim == 3 else vol
    grid = shape[:3]
    finite = np.isfinite(vol4).all(axis=3)
    if not finite.any():
        raise DataError(f"{p}: every voxel is NaN or infinite (an empty map)")
    vsize = tuple(float(z) for z in img.header.get_zooms()[:3])
    lab_grid = None
    if mask is None and labels is None:
        m = finite & (np.where(np.isfinite(vol4), vol4, 0) != 0).any(axis=3)
        if not m.any():
            raise DataError(f"{p}: every finite voxel is 0, so the data define no mask; pass mask=")
        where = "data support"
    else:
        if mask is None:
            raise DataError(f"read_fmri({p}): labels= needs mask= (the label atlas)")
        m, lab_grid, where = _mask_from(mask, labels, grid, img.affine, vsize, p, reorient, grid_atol)
    n_nan = int((m & ~finite).sum())
    m = m & finite
    if not m.any():
        raise DataError(f"{p}: the mask ({where}) selects no finite voxel of the data")
    data = np.ascontiguousarray(vol4[m].T, np.float32)
    nib = _nib()
    return FMRIImage(
        data=data,
        mask=m,
        affine=np.asarray(img.affine, np.float64),
        tr=_tr(img) if len(shape) == 4 else None,
        voxel_size=vsize,
        path=os.fspath(p),
        orientation="".join(nib.aff2axcodes(img.affine)),
        source_orientation=source,
        labels=None if lab_grid is None else lab_grid[m],
        info={"n_nan_in_mask": n_nan, "mask_source": where, "n_volumes": int(vol4.shape[3])},
    )
