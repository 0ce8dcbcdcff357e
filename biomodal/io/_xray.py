"""Chest X-ray reader: DICOM (LUTs, windows, MONOCHROME1, compressed syntaxes) and PNG/JPEG.

:func:`read_xray` returns an :class:`XRay`: a float32 ``(H, W)`` image in ``[0, 1]`` in which
dense tissue (bone, the mediastinum) is bright, whatever the file stored, plus the metadata a
study needs (view position, pixel spacing in mm, photometric interpretation, bit depth).

DICOM, in the order the standard applies them (PS3.4 N.2):

1. the Modality LUT (``RescaleSlope``/``RescaleIntercept`` or a Modality LUT Sequence);
2. the VOI transform: the file's VOI LUT Sequence or its first window (``WindowCenter``/
   ``WindowWidth``), else a robust window over the 0.5th-99.5th percentiles of the pixels
   (``window="percentile"`` forces that, ``window=(center, width)`` sets one);
3. MONOCHROME1 (low values white) is inverted so that the result always reads as MONOCHROME2.

Compressed transfer syntaxes decode through pydicom's plugins (JPEG 2000 through
``pylibjpeg-openjpeg``, in the project's lock); a file whose codec has no plugin installed is a
:class:`~biomodal.errors.ReaderError` naming the file, the transfer syntax and what to install.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biomodal.errors import ConfigError, ReaderError

__all__ = ["XRay", "read_xray"]

#: What to install per transfer syntax UID when pydicom cannot decode it.
_PLUGINS = {
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg (JPEG 2000 lossless)",
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg (JPEG 2000)",
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg or pillow (JPEG baseline)",
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg (JPEG extended)",
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg (JPEG lossless)",
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg (JPEG lossless SV1)",
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg (JPEG-LS lossless)",
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg (JPEG-LS)",
    "1.2.840.10008.1.2.5": "pylibjpeg-rle (RLE lossless)",
}
_PERCENTILES = (0.5, 99.5)


@dataclass
class XRay:
    """One radiograph.

    Attributes
    ----------
    image
        float32 ``(H, W)`` in ``[0, 1]``, dense tissue bright (MONOCHROME2 orientation).
    path
        The file read.
    photometric
        Photometric interpretation as stored (``MONOCHROME1``, ``MONOCHROME2``, ``L``, ``RGB``...).
    view_position
        ``PA``, ``AP``, ``LL``... (DICOM ``ViewPosition``), ``None`` when unknown.
    pixel_spacing
        ``(row, column)`` spacing in mm (``PixelSpacing``, else ``ImagerPixelSpacing``), ``None``
        when unknown or stored as zeros.
    bits
        Bits per stored sample (8 or 16 for PNG; ``BitsStored`` for DICOM).
    window
        How intensities were mapped to ``[0, 1]``: ``"voi_lut"``, ``"file window c/w"``,
        ``"window c/w"``, ``"percentile 0.5-99.5"`` or ``"full range"``.
    meta
        Other facts: ``modality``, ``transfer_syntax``, ``sop_class``, ``shape``...
    """

    image: np.ndarray
    path: Path
    photometric: str
    view_position: str | None = None
    pixel_spacing: tuple[float, float] | None = None
    bits: int = 8
    window: str = "full range"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return tuple(self.image.shape)  # type: ignore[return-value]

    def __repr__(self) -> str:
        sp = "?" if self.pixel_spacing is None else f"{self.pixel_spacing[0]:.3g} mm"
        return (
            f"XRay({self.path.name!r}, {self.shape[0]}x{self.shape[1]}, {self.photometric}, "
            f"view={self.view_position}, spacing={sp}, {self.bits} bit, window={self.window})"
        )


def _check_size(path: Path, h: int, w: int) -> None:
    from biomodal.io.slide import max_read_pixels

    limit = max_read_pixels()
    if h * w > limit:
        raise ReaderError(
            path,
            f"image of {h}x{w} = {h * w:,} pixels exceeds the read limit of {limit:,} pixels; raise it "
            "with $BIOMODAL_MAX_READ_PIXELS or biomodal.io.slide.MAX_READ_PIXELS",
        )


def _window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    if not width > 0:
        raise ConfigError(f"X-ray window width {width!r} is invalid; expected > 0")
    lo = center - width / 2.0
    return np.clip((x - lo) / width, 0.0, 1.0)


def _percentile(x: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(x, _PERCENTILES)
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _first(v: Any) -> float:
    try:
        return float(v[0])
    except (TypeError, IndexError):
        return float(v)


def _spacing(ds: Any) -> tuple[float, float] | None:
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        v = ds.get(key)
        if v is not None and len(v) == 2 and float(v[0]) > 0 and float(v[1]) > 0:
            return float(v[0]), float(v[1])
    return None


def _decode(ds: Any, path: Path) -> np.ndarray:
    tsuid = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises RuntimeError/NotImplementedError/ValueError per plugin
        need = _PLUGINS.get(tsuid)
        hint = f"; install {need}" if need else ""
        raise ReaderError(
            path, f"cannot decode pixel data of transfer syntax {tsuid or 'unknown'} ({exc}){hint}"
        ) from exc


def _read_dicom(path: Path, window: Any, frame: int | None) -> XRay:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise ReaderError(path, f"not a readable DICOM file ({exc})") from exc
    if "PixelData" not in ds:
        raise ReaderError(path, "DICOM file has no pixel data (PixelData); expected an image")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    _check_size(path, rows, cols)
    arr = _decode(ds, path)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames > 1:
        if frame is None:
            raise ReaderError(
                path, f"DICOM holds {n_frames} frames; pass frame= or read it as a volume (read_volume)"
            )
        if not 0 <= frame < n_frames:
            raise ReaderError(path, f"frame={frame} out of range for {n_frames} frames")
        arr = arr[frame]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ReaderError(
            path, f"photometric interpretation {photometric!r}; expected a greyscale radiograph"
        )
    x = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if window == "percentile":
        img, how = _percentile(x), f"percentile {_PERCENTILES[0]:g}-{_PERCENTILES[1]:g}"
    elif isinstance(window, (tuple, list)):
        img, how = _window(x, float(window[0]), float(window[1])), f"window {window[0]:g}/{window[1]:g}"
    elif window in (None, "auto"):
        if "VOILUTSequence" in ds:
            y = np.asarray(apply_voi_lut(x, ds), dtype=np.float64)
            lo, hi = float(y.min()), float(y.max())
            img, how = (y - lo) / (hi - lo) if hi > lo else np.zeros_like(y), "voi_lut"
        elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
            c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
            img, how = _window(x, c, w), f"file window {c:g}/{w:g}"
        else:
            img, how = _percentile(x), f"percentile {_PERCENTILES[0]:g}-{_PERCENTILES[1]:g}"
    else:
        raise ConfigError(f"read_xray window={window!r}; expected 'auto', 'percentile' or (center, width)")
    if photometric == "MONOCHROME1":
        img = 1.0 - img
    meta = {
        "modality": str(ds.get("Modality", "")) or None,
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
        "sop_class": str(ds.get("SOPClassUID", "")) or None,
        "shape": (rows, cols),
        "frames": n_frames,
    }
    view = str(ds.get("ViewPosition", "")).strip() or None
    return XRay(
        image=img.astype(np.float32),
        path=path,
        photometric=photometric,
        view_position=view,
        pixel_spacing=_spacing(ds),
        bits=int(ds.get("BitsStored", 16)),
        window=how,
        meta=meta,
    )


def _read_pil(path: Path, window: Any) -> XRay:
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise ReaderError(path, f"not a readable PNG/JPEG image ({exc})") from exc
    with im:
        w, h = im.size
        _check_size(path, h, w)
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            bits = 16
            full = 65535.0
        else:
            arr = np.asarray(im.convert("L"), dtype=np.float64)
            bits, full = 8, 255.0
    if window == "percentile":
        img, how = _percentile(arr), f"percentile {_PERCENTILES[0]:g}-{_PERCENTILES[1]:g}"
    elif isinstance(window, (tuple, list)):
        img, how = _window(arr, float(window[0]), float(window[1])), f"window {window[0]:g}/{window[1]:g}"
    elif window in (None, "auto"):
        img, how = np.clip(arr / full, 0.0, 1.0), "full range"
    else:
        raise ConfigError(f"read_xray window={window!r}; expected 'auto', 'percentile' or (center, width)")
    return XRay(image=img.astype(np.float32), path=path, photometric=mode, bits=bits, window=how,
                meta={"shape": (h, w), "format": path.suffix.lower().lstrip(".")})  # fmt: skip


def read_xray(
    path: str | os.PathLike, *, window: str | tuple[float, float] = "auto", frame: int | None = None
) -> XRay:
    """Read a radiograph (DICOM, PNG or JPEG) as a float image in ``[0, 1]``, dense tissue bright.

    Parameters
    ----------
    path
        A ``.dcm`` file (any file starting with the DICOM preamble) or a PNG/JPEG (8 or 16 bit;
        colour collapses to grey).
    window
        ``"auto"``: DICOM's VOI LUT or first window, else the 0.5-99.5 percentile window; PNG/JPEG
        scaled by the full range of their bit depth. ``"percentile"``: the percentile window.
        ``(center, width)``: that window, in modality units (DICOM) or stored values (PNG).
    frame
        The frame of a multi-frame DICOM (required when there are several).

    Returns
    -------
    XRay

    Raises
    ------
    ReaderError
        Missing file, no pixel data, a codec without its plugin (named), a colour DICOM, too
        many pixels (see :func:`biomodal.io.slide.max_read_pixels`).

    Examples
    --------
    >>> xr = read_xray("RG1_J2KI.dcm")  # doctest: +SKIP
    >>> xr.image.shape, xr.photometric, xr.view_position  # doctest: +SKIP
    ((1955, 1841), 'MONOCHROME1', 'PA')
    """
    p = Path(path)
    if not p.is_file():
        raise ReaderError(p, "no such file (expected a DICOM, PNG or JPEG radiograph)")
    with open(p, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM" or p.suffix.lower() in (".dcm", ".dicom"):
        return _read_dicom(p, window, frame)
    return _read_pil(p, window)
