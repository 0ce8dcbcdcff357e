"""Checks behind :mod:`biomodal.io.slide`: the read-size limit and a TIFF truncation test.

* :func:`max_read_pixels` is the largest number of pixels one read may allocate (the
  output array, and the pyramid-level region read to make it). It is
  :data:`biomodal.io.slide.MAX_READ_PIXELS` when set, else ``$BIOMODAL_MAX_READ_PIXELS``,
  else :data:`DEFAULT_MAX_READ_PIXELS`.
* :func:`tiff_truncation` walks the image directories of a TIFF / BigTIFF file (SVS,
  generic tiled TIFF, NDPI, SCN, BIF) and says whether a directory or its pixel data lie
  past the end of the file, i.e. whether the file looks truncated.

No torch and no third-party package here: this runs on every slide open.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

__all__ = ["DEFAULT_MAX_READ_PIXELS", "ENV_MAX_READ_PIXELS", "max_read_pixels", "tiff_truncation"]

#: Default limit on the pixels of one read: 2**28 (a 16384 x 16384 region, 768 MiB as RGB).
DEFAULT_MAX_READ_PIXELS = 2**28
#: Environment variable that sets the limit (a positive integer number of pixels).
ENV_MAX_READ_PIXELS = "BIOMODAL_MAX_READ_PIXELS"

_TIFF_TYPES = {3: (2, "H"), 4: (4, "I"), 13: (4, "I"), 16: (8, "Q"), 18: (8, "Q")}
_OFFSETS = {273: 279, 324: 325}  # StripOffsets -> StripByteCounts, TileOffsets -> TileByteCounts
_MAX_IFDS = 4096


def _positive_int(text: object, where: str) -> int:
    from biomodal.errors import ConfigError

    try:
        value = int(str(text).strip().replace("_", ""))
    except (TypeError, ValueError):
        value = 0
    if value <= 0:
        raise ConfigError(f"{where}={text!r} is invalid; expected a positive integer number of pixels")
    return value


def max_read_pixels(setting: int | None = None) -> int:
    """Return the read limit in pixels (``setting``, else the environment, else the default).

    Raises
    ------
    ConfigError
        The setting or ``$BIOMODAL_MAX_READ_PIXELS`` is not a positive integer.
    """
    if setting is not None:
        return _positive_int(setting, "biomodal.io.slide.MAX_READ_PIXELS")
    env = os.environ.get(ENV_MAX_READ_PIXELS)
    if env is not None and env.strip():
        return _positive_int(env, ENV_MAX_READ_PIXELS)
    return DEFAULT_MAX_READ_PIXELS


def _read_ifd(f, offset: int, big: bool, end: str) -> tuple[dict[int, tuple[int, int, int, bytes]], int]:
    """Entries ``tag -> (type, count, value_or_offset, inline bytes)`` of one IFD, and the next offset."""
    f.seek(offset)
    head = f.read(8 if big else 2)
    if len(head) < (8 if big else 2):
        raise EOFError
    n = struct.unpack(end + ("Q" if big else "H"), head)[0]
    size = 20 if big else 12
    raw = f.read(n * size + (8 if big else 4))
    if len(raw) < n * size + (8 if big else 4):
        raise EOFError
    entries = {}
    for i in range(n):
        e = raw[i * size : (i + 1) * size]
        tag, typ = struct.unpack(end + "HH", e[:4])
        count = struct.unpack(end + ("Q" if big else "I"), e[4 : 12 if big else 8])[0]
        inline = e[12:] if big else e[8:]
        value = struct.unpack(end + ("Q" if big else "I"), inline)[0]
        entries[tag] = (typ, count, value, inline)
    nxt = struct.unpack(end + ("Q" if big else "I"), raw[n * size :])[0]
    return entries, nxt


def _values(f, entry: tuple[int, int, int, bytes], big: bool, end: str, file_size: int) -> list[int] | int:
    """Return the integer array of an entry, or minus its end offset when that is past the end."""
    typ, count, value, inline = entry
    if typ not in _TIFF_TYPES:
        return []
    width, code = _TIFF_TYPES[typ]
    nbytes = width * count
    if nbytes <= len(inline):
        return list(struct.unpack(end + code * count, inline[:nbytes]))
    if value + nbytes > file_size:
        return -(value + nbytes)  # negative: the array itself ends past EOF at this offset
    f.seek(value)
    return list(struct.unpack(f"{end}{count}{code}", f.read(nbytes)))


def tiff_truncation(path: str | os.PathLike) -> str | None:
    """Say why a TIFF-based file looks truncated, or ``None`` (not a TIFF, or complete).

    The test is conservative: only a directory, an offset table or a strip/tile that ends
    past the end of the file counts; unusual but complete files are left to the decoder.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            head = f.read(16)
            if len(head) < 8 or head[:2] not in (b"II", b"MM"):
                return None
            end = "<" if head[:2] == b"II" else ">"
            magic = struct.unpack(end + "H", head[2:4])[0]
            if magic not in (42, 43):
                return None
            big = magic == 43
            if big and len(head) < 16:
                return f"the file is {size} bytes, too short for its BigTIFF header"
            offset = struct.unpack(end + ("Q" if big else "I"), head[8:16] if big else head[4:8])[0]
            seen: set[int] = set()
            while offset and offset not in seen and len(seen) < _MAX_IFDS:
                if offset >= size:
                    return f"the file is {size} bytes but image directory {len(seen)} starts at byte {offset}"
                seen.add(offset)
                try:
                    entries, nxt = _read_ifd(f, offset, big, end)
                except EOFError:
                    return f"the file is {size} bytes and ends inside image directory {len(seen) - 1}"
                for off_tag, cnt_tag in _OFFSETS.items():
                    if off_tag not in entries or cnt_tag not in entries:
                        continue
                    offs = _values(f, entries[off_tag], big, end, size)
                    cnts = _values(f, entries[cnt_tag], big, end, size)
                    image = len(seen) - 1
                    for arr in (offs, cnts):
                        if isinstance(arr, int):
                            return (
                                f"the file is {size} bytes but a table of image {image} ends at byte {-arr}"
                            )
                    last = max((o + c for o, c in zip(offs, cnts) if c), default=0)
                    if last > size:
                        return f"the file is {size} bytes but pixel data of image {image} end at byte {last}"
                offset = nxt
    except (OSError, struct.error):
        return None
    return None
