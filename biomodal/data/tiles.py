"""Tiles of a whole-slide image as a torch dataset: :class:`TileDataset`.

Tiles are read on the fly at a fixed physical resolution. Each DataLoader
worker opens its own slide handle (lazily, after fork or spawn). An optional
on-disk cache keeps extracted ``uint8`` tiles in a numpy memmap next to a
per-tile "done" byte map, so later epochs skip decoding; a tile is flagged done
only after its pixels are written, so a killed run never leaves a half-written
tile marked valid.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from biomodal._atomic import atomic_path, atomic_write_text
from biomodal.errors import ConfigError, DataError
from biomodal.io.slide import Slide, read_slide
from biomodal.modalities import check_modality

__all__ = ["TileDataset"]


class _TileCache:
    """Memmap of ``(n, tile_px, tile_px, 3)`` uint8 tiles plus an ``n``-byte done map."""

    def __init__(self, root: Path, key: str, n: int, tile_px: int, meta: dict[str, Any]) -> None:
        self.root, self.key, self.n, self.tile_px = root, key, n, tile_px
        self.data_path = root / f"tiles-{key}.u8"
        self.done_path = root / f"tiles-{key}.done"
        self._pid = -1
        self._data: np.memmap | None = None
        self._done: np.memmap | None = None
        root.mkdir(parents=True, exist_ok=True)
        expected = n * tile_px * tile_px * 3
        if not self.data_path.exists() or self.data_path.stat().st_size != expected:
            if self.data_path.exists():
                self.data_path.unlink()  # stale or truncated: start over
            self.done_path.unlink(missing_ok=True)
            self._create(self.data_path, expected)
        if not self.done_path.exists() or self.done_path.stat().st_size != n:
            self.done_path.unlink(missing_ok=True)
            self._create(self.done_path, n)
        meta_path = root / f"tiles-{key}.json"
        if not meta_path.exists():
            # overwrite=False: a concurrent writer's file is kept, never clobbered
            atomic_write_text(meta_path, json.dumps(meta, indent=1), overwrite=False)

    @staticmethod
    def _create(path: Path, nbytes: int) -> None:
        with atomic_path(path, overwrite=False) as tmp, open(tmp, "wb") as fh:  # sparse, zero-filled
            fh.truncate(nbytes)

    def _open(self) -> None:
        if self._data is None or self._pid != os.getpid():
            shape = (self.n, self.tile_px, self.tile_px, 3)
            self._data = np.memmap(self.data_path, dtype=np.uint8, mode="r+", shape=shape)
            self._done = np.memmap(self.done_path, dtype=np.uint8, mode="r+", shape=(self.n,))
            self._pid = os.getpid()

    def get(self, i: int) -> np.ndarray | None:
        self._open()
        return np.array(self._data[i]) if self._done[i] else None  # type: ignore[index]

    def put(self, i: int, tile: np.ndarray) -> None:
        self._open()
        self._data[i] = tile  # type: ignore[index]
        self._done[i] = 1  # only after the pixels: a killed writer leaves the tile not done

    def n_done(self) -> int:
        self._open()
        return int(np.count_nonzero(self._done))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_data=None, _done=None, _pid=-1)  # each process maps the files itself
        return state


class TileDataset(Dataset):
    """Tiles of one slide, read on the fly at a fixed resolution.

    Parameters
    ----------
    slide
        A :class:`biomodal.io.Slide` or a path for :func:`biomodal.io.read_slide`.
    coords
        Table with level-0 top-left corners in columns ``x`` and ``y`` (e.g. from
        :func:`biomodal.pp.tile`).
    tile_px
        Output tile side in pixels.
    mpp
        Output microns per pixel; ``None`` reads native level-0 pixels.
    transform
        Callable applied to the ``3 x H x W`` float tensor in ``[0, 1]`` (items are then float).
    dtype
        ``"uint8"`` (default): items hold the ``3 x H x W`` ``uint8`` tile, a quarter of the
        bytes of float32 through DataLoader worker queues and pinned memory;
        :class:`~biomodal.train.ContrastiveModel` (and :func:`biomodal.eval.embed`) convert to
        ``[0, 1]`` floats and apply the encoder's normalisation on the model's device.
        ``"float32"``: items are converted in the dataset (``[0, 1]``).
    cache_dir
        Folder for an on-disk cache of extracted tiles (keyed by slide file, coordinates,
        ``tile_px`` and ``mpp``); ``None`` disables caching.
    modality
        Key of the image in each sample (one of :data:`biomodal.modalities.MODALITIES`).

    Examples
    --------
    >>> slide = read_slide("CMU-1-Small-Region.svs")  # doctest: +SKIP
    >>> ds = TileDataset(slide, tile(slide, tile_px=224, mpp=0.5), tile_px=224, mpp=0.5)  # doctest: +SKIP
    >>> ds[0]["histology"].shape  # doctest: +SKIP
    torch.Size([3, 224, 224])
    """

    def __init__(
        self,
        slide: Slide | str | os.PathLike,
        coords: pd.DataFrame,
        *,
        tile_px: int,
        mpp: float | None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        cache_dir: str | os.PathLike | None = None,
        modality: str = "histology",
        dtype: str = "uint8",
    ) -> None:
        self.slide = slide if isinstance(slide, Slide) else read_slide(slide)
        check_modality(modality)
        self.modality = modality
        if not isinstance(coords, pd.DataFrame) or not {"x", "y"} <= set(coords.columns):
            cols = list(coords.columns) if isinstance(coords, pd.DataFrame) else type(coords).__name__
            raise DataError(
                f"coords must be a DataFrame with columns 'x' and 'y' (level-0 pixels); got {cols}"
            )
        self.x = np.asarray(coords["x"], dtype=np.int64)
        self.y = np.asarray(coords["y"], dtype=np.int64)
        if int(tile_px) <= 0:
            raise ConfigError(f"tile_px={tile_px!r} is invalid; expected a positive number of pixels")
        self.tile_px = int(tile_px)
        self.mpp = None if mpp is None else float(mpp)
        if self.mpp is not None:
            _ = self.slide.mpp  # fail now (MissingMetadataError naming the file), not inside a worker
        self.transform = transform
        if dtype not in ("uint8", "float32"):
            raise ConfigError(f"TileDataset dtype={dtype!r}; expected 'uint8' or 'float32'")
        self.dtype = dtype
        self.cache: _TileCache | None = None
        if cache_dir is not None:
            meta = self._cache_meta()
            key = hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]
            self.cache = _TileCache(Path(cache_dir), key, len(self), self.tile_px, meta)

    def _cache_meta(self) -> dict[str, Any]:
        path = self.slide.path.resolve()
        st = path.stat()
        coords_hash = hashlib.sha1(self.x.tobytes() + b"|" + self.y.tobytes()).hexdigest()
        return {
            "slide": str(path),
            "slide_size": st.st_size,
            "slide_mtime_ns": st.st_mtime_ns,
            "slide_mpp": self.slide.mpp if self.slide.has_mpp else None,
            "coords_sha1": coords_hash,
            "n": len(self),
            "tile_px": self.tile_px,
            "mpp": self.mpp,
        }

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def read_tile(self, index: int) -> np.ndarray:
        """Tile ``index`` as ``(tile_px, tile_px, 3)`` uint8 RGB (from the cache when present)."""
        if self.cache is not None:
            cached = self.cache.get(index)
            if cached is not None:
                return cached
        loc = (int(self.x[index]), int(self.y[index]))
        tile = self.slide.read_region(loc, (self.tile_px, self.tile_px), mpp=self.mpp)
        if self.cache is not None:
            self.cache.put(index, tile)
        return tile

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"tile index {index} out of range for {n} tiles")
        index %= n
        return self._item(index, self.read_tile(index))

    def _item(self, index: int, arr: np.ndarray) -> dict[str, Any]:
        if self.dtype == "uint8" and self.transform is None:
            img = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        else:
            # Convert in numpy: torch's intra-op thread pool costs more than the work on a 224-px tile.
            chw = np.empty((3, *arr.shape[:2]), dtype=np.float32)
            np.divide(arr.transpose(2, 0, 1), np.float32(255.0), out=chw)
            img = torch.from_numpy(chw)
            if self.transform is not None:
                img = self.transform(img)
        return {self.modality: img, "x": int(self.x[index]), "y": int(self.y[index])}

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """Items of a whole batch (a DataLoader worker calls this once per batch).

        The regions are read in slide order (rows, then columns) rather than in sampling order,
        so consecutive reads hit the JPEG tiles OpenSlide just decoded; items come back in the
        order asked for.
        """
        n = len(self)
        idx = [int(i) for i in indices]
        bad = [i for i in idx if not -n <= i < n]
        if bad:
            raise IndexError(f"tile index {bad[0]} out of range for {n} tiles")
        idx = [i % n for i in idx]
        order = sorted(range(len(idx)), key=lambda k: (self.y[idx[k]], self.x[idx[k]]))
        out: list[dict[str, Any] | None] = [None] * len(idx)
        for k in order:
            out[k] = self[idx[k]]  # through __getitem__: subclasses that extend items keep working
        return out  # type: ignore[return-value]

    def __repr__(self) -> str:
        mpp = f"{self.mpp:g} um/px" if self.mpp is not None else "level-0 px"
        cache = f", cache={self.cache.n_done()}/{len(self)} at {self.cache.root}" if self.cache else ""
        return (
            f"TileDataset({self.slide.path.name!r}, {len(self)} tiles of {self.tile_px}px at {mpp}, "
            f"modality={self.modality!r}, dtype={self.dtype}{cache})"
        )
