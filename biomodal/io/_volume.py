"""3-D volume reader: NIfTI, DICOM series and multi-frame DICOM -> one oriented, spaced array.

:func:`read_volume` returns a :class:`Volume` whose ``data`` is float32 ``(slices, rows,
columns)`` with its spacing in mm along the same axes:

* **NIfTI** (nibabel) is reoriented to the closest canonical RAS orientation first, so two files
  stored with different axis flips give voxel-aligned arrays; its ``(i, j, k)`` axes then map
  to ``(columns, rows, slices)``: ``data[k, j, i]``, slices running inferior -> superior;
* **a DICOM series** (a folder of single-frame slices) is sorted by each slice's
  ``ImagePositionPatient`` projected on the slice normal (the cross product of
  ``ImageOrientationPatient``'s row and column vectors), never by file name or
  ``InstanceNumber``; slices that disagree in orientation, size or spacing, or whose positions
  are not evenly spaced, are a :class:`~biomodal.errors.ReaderError` naming the files;
* **a multi-frame DICOM** keeps its frame order; spacing from ``PixelSpacing`` and
  ``SpacingBetweenSlices`` (or ``SliceThickness``), shared or per-frame functional groups.

The modality LUT (rescale slope/intercept) is applied, so CT values are in HU. Windowing and
resampling to a target spacing are :func:`biomodal.pp.volume.window_volume` and
:func:`biomodal.pp.volume.resample_volume`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biomodal.errors import ReaderError

__all__ = ["Volume", "read_volume"]

_TOL = 1e-3  # relative tolerance on orientation cosines and slice gaps


@dataclass
class Volume:
    """One 3-D image.

    Attributes
    ----------
    data
        float32 ``(slices, rows, columns)``.
    spacing
        ``(slice, row, column)`` spacing in mm.
    path
        The file or folder read.
    affine
        4 x 4 voxel -> patient (NIfTI: RAS+ world of the canonical image; DICOM: LPS patient
        coordinates of ``data[k, j, i]`` as ``affine @ (i, j, k, 1)``).
    meta
        ``modality``, ``source`` (``nifti``, ``dicom_series``, ``dicom_multiframe``), files...
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    path: Path
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, columns)``."""
        return tuple(self.data.shape)  # type: ignore[return-value]

    def __repr__(self) -> str:
        sp = "x".join(f"{s:.3g}" for s in self.spacing)
        dims = "x".join(map(str, self.shape))
        return f"Volume({self.path.name!r}, {dims} at {sp} mm, {self.meta.get('source')})"


def _check_size(path: Path, n: int) -> None:
    from biomodal.io.slide import max_read_pixels

    if n > max_read_pixels():
        raise ReaderError(path, f"volume of {n:,} voxels exceeds the read limit of {max_read_pixels():,}")


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError...
        raise ReaderError(path, f"not a readable NIfTI/Analyze image ({exc})") from exc
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ReaderError(
            path, f"image has shape {img.shape}; expected a 3-D volume (a 4-D series is fMRI: read_fmri)"
        )
    _check_size(path, int(np.prod(shape)))
    img = nib.as_closest_canonical(img)
    arr = np.asarray(img.get_fdata(dtype=np.float32)).reshape(img.shape[:3])
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    data = np.ascontiguousarray(arr.transpose(2, 1, 0))
    return Volume(data=data, spacing=(zooms[2], zooms[1], zooms[0]), path=path, affine=np.asarray(img.affine),
                  meta={"source": "nifti", "orientation": "RAS"})  # fmt: skip


def _dcm(path: Path, *, pixels: bool = True) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise ReaderError(path, f"not a readable DICOM file ({exc})") from exc


def _pixels(ds: Any, path: Path) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    if "PixelData" not in ds:
        raise ReaderError(path, "DICOM file has no pixel data (PixelData)")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        tsuid = str(getattr(ds.file_meta, "TransferSyntaxUID", "unknown"))
        raise ReaderError(path, f"cannot decode pixel data of transfer syntax {tsuid} ({exc})") from exc
    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)


def _normal(iop: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r, c = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    return r, c, np.cross(r, c)


def _read_series(folder: Path) -> Volume:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    headers = []
    for p in files:
        try:
            headers.append((p, _dcm(p, pixels=False)))
        except ReaderError:
            continue  # DICOMDIR, notes and other non-DICOM files beside the slices
    headers = [(p, h) for p, h in headers if "ImagePositionPatient" in h]
    if len(headers) < 2:
        raise ReaderError(
            folder, f"found {len(headers)} DICOM slice(s) with ImagePositionPatient; a series needs >= 2"
        )
    p0, h0 = headers[0]
    iop0 = [float(v) for v in h0.ImageOrientationPatient]
    size0 = (int(h0.Rows), int(h0.Columns))
    ps0 = tuple(float(v) for v in h0.PixelSpacing)
    for p, h in headers[1:]:
        iop = [float(v) for v in h.ImageOrientationPatient]
        if not np.allclose(iop, iop0, atol=_TOL):
            raise ReaderError(p, f"orientation {iop} differs from {p0.name}'s {iop0}: not one series")
        if (int(h.Rows), int(h.Columns)) != size0:
            raise ReaderError(
                p, f"size {int(h.Rows)}x{int(h.Columns)} differs from {p0.name}'s {size0[0]}x{size0[1]}"
            )
        ps = tuple(float(v) for v in h.PixelSpacing)
        if not np.allclose(ps, ps0, rtol=_TOL):
            raise ReaderError(p, f"pixel spacing {ps} differs from {p0.name}'s {ps0}")
    _check_size(folder, len(headers) * size0[0] * size0[1])
    r, c, n = _normal(iop0)
    pos = np.array([np.dot(n, [float(v) for v in h.ImagePositionPatient]) for _, h in headers])
    order = np.argsort(pos, kind="stable")
    gaps = np.diff(pos[order])
    if np.any(gaps <= 0):
        k = int(np.argmin(gaps))
        raise ReaderError(folder, f"slices {headers[order[k]][0].name} and {headers[order[k + 1]][0].name} "
                                  "share a position: two series in one folder?")  # fmt: skip
    if not np.allclose(gaps, gaps.mean(), rtol=1e-2, atol=1e-3):
        k = int(np.argmax(np.abs(gaps - np.median(gaps))))
        raise ReaderError(folder, f"uneven slice spacing: {gaps.min():.4g}-{gaps.max():.4g} mm (gap after "
                                  f"{headers[order[k]][0].name}); a missing slice?")  # fmt: skip
    data = np.stack([_pixels(_dcm(headers[i][0]), headers[i][0]) for i in order])
    dz = float(gaps.mean())
    origin = np.array([float(v) for v in headers[order[0]][1].ImagePositionPatient])
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2], affine[:3, 3] = r * ps0[1], c * ps0[0], n * dz, origin
    meta = {"source": "dicom_series", "modality": str(h0.get("Modality", "")) or None,
            "files": [headers[i][0].name for i in order]}  # fmt: skip
    return Volume(data=data, spacing=(dz, ps0[0], ps0[1]), path=folder, affine=affine, meta=meta)


def _frame_spacing(ds: Any) -> tuple[float, float, float] | None:
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        seq = ds.get(group)
        if seq and "PixelMeasuresSequence" in seq[0]:
            pm = seq[0].PixelMeasuresSequence[0]
            dz = pm.get("SpacingBetweenSlices") or pm.get("SliceThickness")
            if pm.get("PixelSpacing") is not None and dz is not None:
                return float(dz), float(pm.PixelSpacing[0]), float(pm.PixelSpacing[1])
    if ds.get("PixelSpacing") is not None:
        dz = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0
        return float(dz), float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])
    return None


def _read_multiframe(path: Path) -> Volume:
    ds = _dcm(path, pixels=False)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames < 2:
        raise ReaderError(path, "a single 2-D image, not a volume: pass a folder of slices (a series) or a "
                                "multi-frame DICOM (read a radiograph with read_xray)")  # fmt: skip
    _check_size(path, frames * int(ds.Rows) * int(ds.Columns))
    ds = _dcm(path)
    data = _pixels(ds, path)
    spacing = _frame_spacing(ds)
    meta = {"source": "dicom_multiframe", "modality": str(ds.get("Modality", "")) or None, "frames": frames}
    if spacing is None:
        meta["spacing_note"] = "no PixelSpacing: 1 mm assumed"
        spacing = (1.0, 1.0, 1.0)
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    return Volume(data=data, spacing=spacing, path=path, affine=affine, meta=meta)


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a 3-D volume: NIfTI file, folder of DICOM slices, or multi-frame DICOM.

    Parameters
    ----------
    path
        ``.nii``/``.nii.gz``/``.hdr`` file, a folder holding one DICOM series, or a multi-frame
        DICOM file.

    Returns
    -------
    Volume
        ``data`` float32 ``(slices, rows, columns)``, ``spacing`` in mm.

    Raises
    ------
    ReaderError
        A 2-D file where a volume is needed, a 4-D NIfTI, slices that disagree in orientation,
        size or spacing, unevenly spaced or duplicated slice positions, no pixel data, more
        voxels than the read limit.

    Examples
    --------
    >>> vol = read_volume("ct_series/")  # doctest: +SKIP
    >>> vol.shape, vol.spacing  # doctest: +SKIP
    ((120, 512, 512), (2.5, 0.7, 0.7))
    """
    p = Path(path)
    if p.is_dir():
        return _read_series(p)
    if not p.is_file():
        raise ReaderError(p, "no such file or folder (expected a NIfTI file, a DICOM series folder or a "
                             "multi-frame DICOM)")  # fmt: skip
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz", ".hdr", ".img")):
        return _read_nifti(p)
    return _read_multiframe(p)
