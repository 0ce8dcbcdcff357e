"""Non-learned image features: the floor any learned histology encoder must beat.

Use them in place of embeddings in :func:`biomodal.eval.expression_prediction` or
:func:`biomodal.eval.linear_probe` to show how much of a score colour and coarse layout
alone explain (stain intensity often predicts some genes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from biomodal.errors import ConfigError, DataError

__all__ = ["colour_histogram_features", "raw_pixel_features"]


def _batches(tiles: Any) -> Iterable[np.ndarray]:
    """Yield uint8 ``(B, H, W, 3)`` batches from an array or an iterable of tiles/batches."""
    if hasattr(tiles, "detach"):
        tiles = tiles.detach().cpu().numpy()
    if isinstance(tiles, np.ndarray):
        items: Iterable[Any] = [tiles] if tiles.ndim == 4 else [tiles[None]] if tiles.ndim == 3 else [tiles]
    else:
        items = tiles
    for i, t in enumerate(items):
        if hasattr(t, "detach"):
            t = t.detach().cpu().numpy()
        arr = np.asarray(t)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise DataError(
                f"tiles must be RGB, (N, H, W, 3) or (H, W, 3) channels-last; item {i} has shape {arr.shape}."
            )
        if arr.dtype != np.uint8:
            raise DataError(f"tiles must be uint8 (0-255); item {i} has dtype {arr.dtype}.")
        yield arr


def _collect(tiles: Any, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    # Sub-batches of 64 tiles bound the float/int64 temporaries (64 x 224^2 x 3 x 8 B = 77 MB).
    parts = [fn(b[i : i + 64]) for b in _batches(tiles) for i in range(0, len(b), 64)]
    if not parts:
        raise DataError("no tiles were given.")
    return np.concatenate(parts).astype(np.float32, copy=False)


def colour_histogram_features(tiles: Any, bins: int = 8, *, joint: bool = False) -> np.ndarray:
    """Colour histograms of RGB tiles.

    Parameters
    ----------
    tiles
        uint8 ``(N, H, W, 3)`` array or tensor, or an iterable of ``(H, W, 3)`` tiles or
        ``(B, H, W, 3)`` batches (e.g. a generator over a slide).
    bins
        Bins per channel, equal-width over 0-255.
    joint
        ``False``: three per-channel histograms concatenated (``3 * bins`` features);
        ``True``: one joint RGB histogram (``bins ** 3`` features).

    Returns
    -------
    numpy.ndarray
        float32 ``(N, n_features)``; each histogram sums to 1 (fractions of pixels).
    """
    bins = int(bins)
    if not 1 <= bins <= 256:
        raise ConfigError(f"bins must be in [1, 256]; got {bins}.")

    def fn(b: np.ndarray) -> np.ndarray:
        n = b.shape[0]
        q = (b.reshape(n, -1, 3).astype(np.int64) * bins) // 256  # bin index per channel
        if joint:
            code = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
            offs = np.arange(n)[:, None] * bins**3
            h = np.bincount((code + offs).ravel(), minlength=n * bins**3).reshape(n, bins**3)
        else:
            offs = (np.arange(n)[:, None, None] * 3 + np.arange(3)) * bins
            h = np.bincount((q + offs).ravel(), minlength=n * 3 * bins).reshape(n, 3 * bins)
        return h / q.shape[1]

    return _collect(tiles, fn)


def raw_pixel_features(tiles: Any, size: int = 8) -> np.ndarray:
    """Tiles downsampled to ``size x size`` by area averaging, flattened, scaled to [0, 1].

    Parameters
    ----------
    tiles
        As in :func:`colour_histogram_features`.
    size
        Output edge in pixels; each output pixel is the mean of the input pixels it covers.

    Returns
    -------
    numpy.ndarray
        float32 ``(N, size * size * 3)``, row-major (y, x, channel).
    """
    size = int(size)
    if size < 1:
        raise ConfigError(f"size must be a positive integer; got {size}.")

    def fn(b: np.ndarray) -> np.ndarray:
        n, h, w, _ = b.shape
        if h < size or w < size:
            raise DataError(f"tiles of {h}x{w} px are smaller than the requested {size}x{size} output.")
        # Area averaging with fractional overlap: integrate the image over each output cell.
        ry, rx = _area_weights(h, size), _area_weights(w, size)
        x = b.astype(np.float64) / 255.0
        out = np.einsum("yh,nhwc,xw->nyxc", ry, x, rx, optimize=True)
        return out.reshape(n, -1)

    return _collect(tiles, fn)


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix averaging input pixels by their overlap with each output cell."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    px = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)
