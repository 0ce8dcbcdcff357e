"""Resolution-aware whole-slide reading: :func:`read_slide` and :class:`Slide`.

One :class:`Slide` serves every format OpenSlide reads (SVS, generic tiled TIFF,
NDPI, MRXS, SCN, DICOM-WSI, ...) and plain images it cannot open (JPEG, PNG,
striped TIFF), so the rest of biomodal asks for pixels at a physical
resolution (microns per pixel) and never cares about the file format.
Pyramidal slides are read tile by tile from the best pyramid level; plain
images are decoded once and cached.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biomodal.errors import ConfigError, MissingMetadataError
from biomodal.io._slide_backends import open_backend
from biomodal.io._slide_checks import DEFAULT_MAX_READ_PIXELS, ENV_MAX_READ_PIXELS
from biomodal.io._slide_checks import max_read_pixels as _limit

__all__ = ["DEFAULT_MAX_READ_PIXELS", "MAX_READ_PIXELS", "Slide", "max_read_pixels", "read_slide"]

#: Largest read, in pixels, of :meth:`Slide.read_region` / :meth:`Slide.thumbnail` (both the
#: output and the pyramid-level region read to make it) and of a plain image decoded whole.
#: ``None`` (the default): ``$BIOMODAL_MAX_READ_PIXELS``, else :data:`DEFAULT_MAX_READ_PIXELS`
#: (2**28 px, 768 MiB as RGB). Set it to a positive integer to change the limit in-process.
MAX_READ_PIXELS: int | None = None


def max_read_pixels() -> int:
    """Return the read limit in pixels in force now (see :data:`MAX_READ_PIXELS`)."""
    return _limit(MAX_READ_PIXELS)


#: Reads larger than this many level pixels are split into blocks to bound memory.
_CHUNK_PIXELS = 2**24
_BLOCK = 2048


def _check_mpp(mpp: Any, key: str = "mpp") -> float | None:
    if mpp is None:
        return None
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{key}={mpp!r} is invalid; expected a positive number of microns per pixel")
    return value


def _resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resample ``arr`` (HxWx3 uint8) to ``(width, height)``: area average down, bilinear up."""
    src_h, src_w = arr.shape[:2]
    if (src_w, src_h) == (width, height):
        return arr
    from PIL import Image

    if width <= src_w and height <= src_h:
        # Area average; for large factors Pillow first bins by an integer factor (reducing_gap).
        img = Image.fromarray(arr).resize((width, height), Image.Resampling.BOX, reducing_gap=3.0)
    else:
        img = Image.fromarray(arr).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img)


class Slide:
    """A whole-slide image (or a plain image) read lazily at any resolution.

    Use :func:`read_slide` to open one. Coordinates are always level-0 pixels;
    sizes passed to :meth:`read_region` are output pixels at the requested
    microns per pixel.

    Parameters
    ----------
    path
        The slide file.
    mpp
        Microns per pixel at level 0; overrides the file's metadata.

    Attributes
    ----------
    path
        The slide file as a :class:`~pathlib.Path`.
    has_mpp
        Whether microns per pixel are known (given or in the metadata).
    """

    def __init__(self, path: str | os.PathLike, *, mpp: float | None = None) -> None:
        self.path = Path(path)
        self._user_mpp = _check_mpp(mpp)
        self._handle: Any = None
        self._pid = -1
        _ = self._backend  # open now so bad files fail here, not in a DataLoader worker

    # -- handle management -------------------------------------------------------------------------
    @property
    def _backend(self) -> Any:
        handle = self._handle
        if handle is None or (self._pid != os.getpid() and not handle.fork_safe):
            # First use, after unpickling, after close(), or in a forked worker: open our own handle.
            self._handle = open_backend(self.path)
            self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        """Release the file handle (a later read reopens the slide)."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "mpp": self._user_mpp}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._user_mpp = state["mpp"]
        self._handle = None  # reopened lazily in the new process
        self._pid = -1

    # -- metadata ----------------------------------------------------------------------------------
    @property
    def mpp(self) -> float:
        """Microns per pixel at level 0 (user-given, else from the file's metadata).

        Raises
        ------
        MissingMetadataError
            Neither given nor in the metadata.
        """
        if self._user_mpp is not None:
            return self._user_mpp
        value = self._backend.metadata_mpp
        if value is None:
            raise MissingMetadataError(
                f"{self.path}: microns per pixel are unknown (no openslide.mpp-x or TIFF resolution tags "
                f"in the file). Pass them when opening, e.g. read_slide({str(self.path)!r}, mpp=0.5); for "
                "legacy ST / Visium images estimate them from the spot grid "
                "(biomodal.io.estimate_mpp_from_spots)."
            )
        return value

    @property
    def has_mpp(self) -> bool:
        """Whether :attr:`mpp` is known."""
        return self._user_mpp is not None or self._backend.metadata_mpp is not None

    @property
    def mpp_source(self) -> str | None:
        """``"user"``, ``"metadata"`` or ``None`` (unknown)."""
        if self._user_mpp is not None:
            return "user"
        return "metadata" if self._backend.metadata_mpp is not None else None

    @property
    def backend(self) -> str:
        """Which reader serves the pixels, e.g. ``"openslide/aperio"`` or ``"pillow/jpeg"``."""
        return self._backend.kind

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of level 0."""
        return self._backend.level_dimensions[0]

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self._backend.level_dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of each level."""
        return self._backend.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample factor of each level relative to level 0."""
        return self._backend.level_downsamples

    @property
    def properties(self) -> dict[str, str]:
        """Format metadata (OpenSlide properties, or Pillow format information)."""
        return dict(self._backend.properties)

    def best_level(self, downsample: float) -> int:
        """Coarsest level whose downsample does not exceed ``downsample`` (level 0 if none).

        Levels up to 1% coarser count as matching: pyramids built by halving odd sizes have
        downsamples such as 2.0005, which should serve a request for 2.
        """
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample * 1.01 and d > self.level_downsamples[best]:
                best = i
        return best

    # -- pixels ------------------------------------------------------------------------------------
    def read_region(
        self,
        location: Sequence[int],
        size: Sequence[int],
        *,
        mpp: float | None = None,
        level: int | None = None,
    ) -> np.ndarray:
        """Read an RGB region at a physical resolution.

        Parameters
        ----------
        location
            ``(x, y)`` of the top-left corner in level-0 pixels (may lie outside the slide).
        size
            ``(width, height)`` of the output in pixels at ``mpp``.
        mpp
            Output microns per pixel. ``None`` reads at the native resolution of ``level``
            (level 0 by default), without resampling.
        level
            Force the pyramid level to read from; by default the coarsest level that is not
            coarser than needed.

        Returns
        -------
        numpy.ndarray
            ``(height, width, 3)`` ``uint8`` RGB. A region that overlaps the slide only in part
            is padded with white outside it (documented padding, e.g. tiles at the tissue edge).

        Raises
        ------
        ConfigError
            The region lies entirely outside the slide, or the read is larger than
            :func:`max_read_pixels` (output or pyramid-level pixels); the message names the
            file, the size and the limit.
        """
        x, y = (round(float(v)) for v in location)
        w, h = (int(v) for v in size)
        if w <= 0 or h <= 0:
            raise ConfigError(f"size={tuple(size)!r} is invalid; expected positive (width, height) in pixels")
        if level is not None and not 0 <= int(level) < self.level_count:
            raise ConfigError(
                f"level={level!r} is invalid; {self.path.name} has levels 0..{self.level_count - 1}"
            )
        mpp = _check_mpp(mpp)
        if mpp is None:
            level = level or 0
            d = self.level_downsamples[level]
            footprint = (w * d, h * d)
        else:
            scale = mpp / self.mpp  # level-0 pixels per output pixel
            footprint = (w * scale, h * scale)
        self._check_inside((x, y), footprint)
        level = self._check_size(footprint, (w, h), level)
        return self._read((x, y), footprint, (w, h), level)

    def _check_inside(self, location: tuple[int, int], footprint: tuple[float, float]) -> None:
        """Refuse a region with no pixel on the slide (it would be a silent all-white tile)."""
        width, height = self.dimensions
        x, y = location
        if x >= width or y >= height or x + footprint[0] <= 0 or y + footprint[1] <= 0:
            raise ConfigError(
                f"{self.path}: region at (x={x}, y={y}) of {footprint[0]:.6g}x{footprint[1]:.6g} level-0 "
                f"px lies entirely outside the slide ({width}x{height} px); expected a region that "
                "overlaps it (parts outside the slide are padded with white)"
            )

    def _check_size(self, footprint: tuple[float, float], out: tuple[int, int], level: int | None) -> int:
        """Pick the level and refuse reads over the limit, before anything is allocated."""
        limit = max_read_pixels()
        n_out = out[0] * out[1]
        if n_out > limit:
            raise ConfigError(
                f"{self.path}: a read of {out[0]}x{out[1]} = {n_out:,} px ({n_out * 3 / 2**30:.3g} GiB as "
                f"RGB) exceeds the read limit of {limit:,} px; read smaller regions (e.g. tile by tile "
                f"with biomodal.data.TileDataset) or raise the limit with ${ENV_MAX_READ_PIXELS} or "
                "biomodal.io.slide.MAX_READ_PIXELS"
            )
        if level is None:
            level = self.best_level(min(footprint[0] / out[0], footprint[1] / out[1]))
        d = self.level_downsamples[level]
        rw, rh = max(1, round(footprint[0] / d)), max(1, round(footprint[1] / d))
        if rw * rh > limit:
            raise ConfigError(
                f"{self.path}: the read needs {rw}x{rh} = {rw * rh:,} px of pyramid level {level}, more "
                f"than the read limit of {limit:,} px; read a smaller region or at a coarser mpp, or "
                f"raise the limit with ${ENV_MAX_READ_PIXELS} or biomodal.io.slide.MAX_READ_PIXELS"
            )
        return level

    def thumbnail(self, max_size: int | Sequence[int] = 1024) -> np.ndarray:
        """Whole-slide RGB image fitting in ``max_size`` (keeps the aspect ratio, never upsamples)."""
        mw, mh = (int(max_size), int(max_size)) if np.isscalar(max_size) else (int(v) for v in max_size)
        width, height = self.dimensions
        factor = min(1.0, mw / width, mh / height)
        out = (max(1, round(width * factor)), max(1, round(height * factor)))
        level = self._check_size((float(width), float(height)), out, None)
        return self._read((0, 0), (float(width), float(height)), out, level)

    def _read(
        self,
        location: tuple[int, int],
        footprint: tuple[float, float],
        out: tuple[int, int],
        level: int | None,
    ) -> np.ndarray:
        """Read the level-0 box ``location + footprint`` resampled to ``out`` pixels."""
        sx, sy = footprint[0] / out[0], footprint[1] / out[1]  # level-0 px per output px
        if level is None:
            level = self.best_level(min(sx, sy))
        d = self.level_downsamples[level]
        rw, rh = max(1, round(footprint[0] / d)), max(1, round(footprint[1] / d))
        if rw * rh <= _CHUNK_PIXELS:
            # Reads within half a pixel of the output size are not resampled.
            return _resize(self._backend.read(location, level, (rw, rh)), *out)
        result = np.empty((out[1], out[0], 3), dtype=np.uint8)
        bw = max(1, int(_BLOCK * out[0] / rw))
        bh = max(1, int(_BLOCK * out[1] / rh))
        for oy in range(0, out[1], bh):
            for ox in range(0, out[0], bw):
                cw, ch = min(bw, out[0] - ox), min(bh, out[1] - oy)
                loc = (location[0] + round(ox * sx), location[1] + round(oy * sy))
                block = self._read(loc, (cw * sx, ch * sy), (cw, ch), level)
                result[oy : oy + ch, ox : ox + cw] = block
        return result

    def __repr__(self) -> str:
        if self._handle is None and self._pid == -1:
            return f"Slide({str(self.path)!r}, not opened, mpp={self._user_mpp})"
        width, height = self.dimensions
        src = self.mpp_source
        mpp = f"{self.mpp:.4g} ({src})" if src else "unknown"
        return (
            f"Slide({self.path.name!r}, {self.backend}, {width}x{height} px, "
            f"{self.level_count} level{'s' if self.level_count != 1 else ''}, mpp={mpp})"
        )


def read_slide(path: str | os.PathLike, *, mpp: float | None = None) -> Slide:
    """Open a whole-slide image or a plain image for resolution-aware reading.

    Parameters
    ----------
    path
        Any format OpenSlide reads (SVS, generic tiled TIFF, NDPI, MRXS, SCN, DICOM-WSI,
        ...) or a plain image (JPEG, PNG, striped TIFF) read with Pillow.
    mpp
        Microns per pixel at level 0; overrides the metadata (needed when the file has none).

    Returns
    -------
    Slide
        The opened slide; pixel data are read lazily.

    Raises
    ------
    ReaderError
        The file is missing or corrupt (the message names it).
    UnsupportedFormatError
        Neither OpenSlide nor Pillow reads the file.

    Examples
    --------
    >>> slide = read_slide("CMU-1-Small-Region.svs")  # doctest: +SKIP
    >>> tile = slide.read_region((1000, 1000), (224, 224), mpp=0.5)  # doctest: +SKIP
    """
    return Slide(path, mpp=mpp)
