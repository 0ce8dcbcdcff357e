"""Pixel backends behind :class:`biomodal.io.Slide`.

Two backends share one small interface (level geometry, properties, metadata
microns per pixel, ``read(location, level, size)`` returning RGB ``uint8``
padded with white):

* :class:`OpenSlideBackend` for every format OpenSlide reads (Aperio SVS,
  generic tiled TIFF, Hamamatsu NDPI, MIRAX, Leica SCN, DICOM-WSI, ...); it
  never loads a level whole.
* :class:`PillowBackend` for plain images OpenSlide cannot open (JPEG, PNG,
  striped TIFF); the image is decoded once, on first read, and cached.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from biomodal._lazy import import_optional
from biomodal.errors import ReaderError, UnsupportedFormatError
from biomodal.io._slide_checks import max_read_pixels, tiff_truncation

__all__ = ["OpenSlideBackend", "PillowBackend", "open_backend"]

#: Plain images larger than this many pixels are refused (they would be decoded whole).
MAX_PLAIN_PIXELS = 2**31
#: Side of the tile read at the centre of level 0 when a slide is opened (validation).
_PROBE_TILE = 256
_INCH_UM = 25400.0
_CM_UM = 10000.0


def _read_limit() -> int:
    from biomodal.io import slide

    return max_read_pixels(slide.MAX_READ_PIXELS)


def _composite_white(rgba: np.ndarray) -> np.ndarray:
    """Return RGB from non-premultiplied RGBA, transparent areas white."""
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha[..., None].astype(np.uint16)
    rgb = rgba[..., :3].astype(np.uint16)
    out = (rgb * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _resolution_mpp(xres: Any, unit: Any) -> float | None:
    """Microns per pixel from a TIFF XResolution value and ResolutionUnit (2 inch, 3 cm)."""
    try:
        if isinstance(xres, tuple):  # rational (num, den)
            xres = xres[0] / xres[1]
        xres = float(xres)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    unit_s = str(unit).lower()
    per = {"2": _INCH_UM, "inch": _INCH_UM, "3": _CM_UM, "centimeter": _CM_UM}.get(unit_s)
    if per is None or not math.isfinite(xres) or xres <= 0:
        return None
    return per / xres


def _check_levels(path: str, dims: tuple[tuple[int, ...], ...], downs: tuple[float, ...]) -> None:
    """Refuse pyramid geometry no read could use (the header was damaged)."""
    problem = None
    if not dims or len(dims) != len(downs):
        problem = f"{len(dims)} levels with {len(downs)} downsample factors"
    elif any(len(d) != 2 or d[0] < 1 or d[1] < 1 for d in dims):
        problem = f"level sizes {list(dims)} are not all positive"
    elif not all(math.isfinite(d) and d >= 0.99 for d in downs) or abs(downs[0] - 1.0) > 0.01:
        problem = f"level downsamples {list(downs)} do not start at 1 and grow"
    elif any(b < a for a, b in itertools.pairwise(downs)):
        problem = f"level downsamples {list(downs)} are not increasing"
    if problem:
        raise ReaderError(path, f"the pyramid header is invalid ({problem}); the file looks corrupt")


class OpenSlideBackend:
    """OpenSlide-backed pyramid reader (lazy, tile based).

    Parameters
    ----------
    path
        A file OpenSlide recognises.
    """

    fork_safe = False

    def __init__(self, path: str) -> None:
        openslide = import_optional("openslide", "histology", package="openslide-python")
        self.path = path
        try:
            self._osr = openslide.OpenSlide(path)
        except openslide.OpenSlideError as exc:
            raise ReaderError(path, f"OpenSlide recognised the file but cannot open it ({exc})") from exc
        self._error_type = openslide.OpenSlideError
        try:
            self._validate()
        except BaseException:
            self.close()
            raise

    def _validate(self) -> None:
        """Read and check what every later read needs, so a corrupt file fails at open.

        Properties (each one readable), level geometry (positive sizes, downsamples from 1
        upwards) and pixels (one pixel of the smallest level and one tile at the centre of
        level 0).
        """
        osr, path = self._osr, self.path
        try:
            names = list(osr.properties)
        except Exception as exc:
            raise ReaderError(
                path, f"the slide's metadata cannot be read ({exc!r}); the file looks corrupt"
            ) from exc
        props: dict[str, str] = {}
        for name in names:
            try:
                props[str(name)] = str(osr.properties[name])
            except Exception:  # openslide-python raises a bare KeyError for an undecodable value
                raise ReaderError(
                    path, f"metadata property {name!r} cannot be read; the file looks corrupt"
                ) from None
        self.properties = props
        try:
            dims = tuple(tuple(int(v) for v in d) for d in osr.level_dimensions)
            downs = tuple(float(d) for d in osr.level_downsamples)
        except Exception as exc:
            raise ReaderError(
                path, f"the pyramid levels cannot be read ({exc}); the file looks corrupt"
            ) from exc
        _check_levels(path, dims, downs)
        self.level_dimensions, self.level_downsamples = dims, downs
        self.kind = f"openslide/{props.get('openslide.vendor', 'unknown')}"
        w, h = dims[0]
        tw, th = min(w, _PROBE_TILE), min(h, _PROBE_TILE)
        probes = [((0, 0), len(dims) - 1, (1, 1)), (((w - tw) // 2, (h - th) // 2), 0, (tw, th))]
        for location, level, size in probes:
            try:
                osr.read_region(location, level, size)
            except self._error_type as exc:
                raise ReaderError(
                    path,
                    f"OpenSlide opened the file but cannot decode its pixels at level {level}, "
                    f"{location} ({exc}); the file looks corrupt",
                ) from exc

    @property
    def metadata_mpp(self) -> float | None:
        """Microns per pixel from ``openslide.mpp-x`` or the TIFF resolution tags."""
        if not hasattr(self, "_mpp"):
            self._mpp = self._parse_mpp()
        return self._mpp

    def _parse_mpp(self) -> float | None:
        props = self.properties
        for key in ("openslide.mpp-x", "aperio.MPP"):
            with contextlib.suppress(KeyError, ValueError):
                value = float(props[key])
                if math.isfinite(value) and value > 0:
                    return value
        if "tiff.XResolution" in props:
            return _resolution_mpp(props["tiff.XResolution"], props.get("tiff.ResolutionUnit"))
        return None

    def read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read ``size`` level pixels at level-0 ``location``; RGB, outside the slide white."""
        try:
            img = self._osr.read_region(location, level, size)
        except self._error_type as exc:
            raise ReaderError(
                self.path, f"failed to read region at {location} (level {level}, size {size}): {exc}"
            ) from exc
        if img.getchannel("A").getextrema()[0] == 255:  # fully opaque: plain conversion (fast path)
            return np.asarray(img.convert("RGB"))
        return _composite_white(np.asarray(img))

    def close(self) -> None:
        """Release the OpenSlide handle."""
        with contextlib.suppress(Exception):
            self._osr.close()


@contextlib.contextmanager
def _no_pixel_limit():
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield Image
    finally:
        Image.MAX_IMAGE_PIXELS = old


class PillowBackend:
    """Single-level reader for plain images (decoded once on first read, then cached).

    Parameters
    ----------
    path
        A JPEG / PNG / striped TIFF / ... that Pillow reads.
    """

    fork_safe = True  # no file handle stays open once decoded; the cache is shared copy-on-write

    def __init__(self, path: str) -> None:
        with _no_pixel_limit() as Image:
            try:
                with Image.open(path) as im:
                    self.format = str(im.format)
                    self.mode = str(im.mode)
                    width, height = im.size
                    tags = dict(getattr(im, "tag_v2", {}) or {})
            except Exception as exc:  # UnidentifiedImageError, OSError, SyntaxError...
                raise UnsupportedFormatError(
                    path,
                    "not a whole-slide format OpenSlide reads (SVS, tiled TIFF, NDPI, MRXS, SCN, DICOM, ...) "
                    f"nor a plain image Pillow reads (JPEG, PNG, TIFF): {exc}",
                ) from exc
        limit = min(MAX_PLAIN_PIXELS, _read_limit())
        if width * height > limit:  # header values: refuse before decoding (it allocates w*h*3)
            raise UnsupportedFormatError(
                path,
                f"plain {self.format} image of {width}x{height} = {width * height} px is too large to decode "
                f"whole (the read limit is {limit} px, set by BIOMODAL_MAX_READ_PIXELS); convert it to a "
                "pyramidal tiled TIFF (e.g. vips tiffsave --tile --pyramid) so it can be read lazily",
            )
        self.path = path
        self.level_dimensions = ((int(width), int(height)),)
        self.level_downsamples = (1.0,)
        self.kind = f"pillow/{self.format.lower()}"
        self.properties = {"biomodal.format": self.format, "biomodal.mode": self.mode}
        self._tiff_mpp = None
        if self.format == "TIFF" and 282 in tags:  # only TIFF resolution tags are trusted, not JPEG/PNG dpi
            self._tiff_mpp = _resolution_mpp(tags[282], tags.get(296, 2))
            self.properties["tiff.XResolution"] = str(tags[282])
            self.properties["tiff.ResolutionUnit"] = str(tags.get(296, 2))
        self._pixels: np.ndarray | None = None

    @property
    def metadata_mpp(self) -> float | None:
        """Microns per pixel from TIFF resolution tags (JPEG/PNG dpi is not trusted)."""
        return self._tiff_mpp

    def _load(self) -> np.ndarray:
        if self._pixels is None:
            with _no_pixel_limit() as Image:
                try:
                    with Image.open(self.path) as im:
                        im.load()
                        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                            rgba = np.asarray(im.convert("RGBA"))
                            self._pixels = _composite_white(rgba)
                        else:
                            self._pixels = np.asarray(im.convert("RGB"))
                except Exception as exc:
                    raise ReaderError(self.path, f"cannot decode {self.format} image data ({exc})") from exc
        return self._pixels

    def read(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read ``size`` pixels at ``location``; areas outside the image are white."""
        pix = self._load()
        x, y = location
        w, h = size
        height, width = pix.shape[:2]
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = pix[y0:y1, x0:x1]
        return out

    def close(self) -> None:
        """Drop the decoded pixels."""
        self._pixels = None


def open_backend(path: str | os.PathLike) -> OpenSlideBackend | PillowBackend:
    """Open ``path`` with OpenSlide when it recognises the format, else with Pillow.

    Raises
    ------
    ReaderError
        The file is missing, or recognised but corrupt.
    UnsupportedFormatError
        Neither OpenSlide nor Pillow reads the file.
    """
    p = Path(path)
    if not p.exists():
        raise ReaderError(p, "file not found; expected a whole-slide image or a plain image file")
    if p.is_file():
        truncated = tiff_truncation(p)
        if truncated:
            raise ReaderError(
                p, f"the file looks truncated (or its header is damaged): {truncated}; copy it again"
            )
    if p.is_dir():  # DICOM-WSI series folder: OpenSlide opens it through any of its instances
        dcm = sorted(p.glob("*.dcm"))
        if not dcm:
            raise UnsupportedFormatError(
                p, "is a folder; expected a slide file (or a DICOM-WSI folder of .dcm)"
            )
        p = dcm[0]
    openslide = import_optional("openslide", "histology", package="openslide-python")
    vendor = openslide.OpenSlide.detect_format(str(p))
    if vendor is None:
        return PillowBackend(str(p))
    try:
        return OpenSlideBackend(str(p))
    except ReaderError as os_exc:
        if vendor != "generic-tiff":
            raise
        # OpenSlide refuses striped / unusual TIFFs; Pillow may still read them as plain images.
        try:
            return PillowBackend(str(p))
        except ReaderError as pil_exc:
            raise ReaderError(
                p, f"{os_exc.reason}; Pillow cannot read it either ({pil_exc.reason})"
            ) from os_exc
