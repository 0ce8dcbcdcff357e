"""Volume preprocessing: spacing-aware resampling and intensity windowing of a ``Volume``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from biomodal.errors import ConfigError

__all__ = ["resample_volume", "window_volume"]


def resample_volume(vol: Any, spacing: float | Sequence[float], *, order: int = 1) -> Any:
    """Resample ``vol`` to ``spacing`` mm (one value: isotropic), keeping its physical extent.

    Parameters
    ----------
    vol
        A :class:`~biomodal.io.Volume`.
    spacing
        Target ``(slice, row, column)`` spacing in mm, or one value for all three axes.
    order
        Spline order of :func:`scipy.ndimage.zoom` (1: trilinear, 0: nearest, for label maps).

    Returns
    -------
    Volume
        New data of shape ``round(shape * old_spacing / new_spacing)``, ``spacing`` the exact
        spacing that shape gives over the same extent, the affine's axes scaled to match.
    """
    from scipy import ndimage

    target = (float(spacing),) * 3 if np.isscalar(spacing) else tuple(float(s) for s in spacing)  # type: ignore[arg-type]
    if len(target) != 3 or not all(s > 0 for s in target):
        raise ConfigError(f"resample_volume spacing={spacing!r}; expected one or three positive mm values")
    shape = np.asarray(vol.shape, float)
    extent = shape * np.asarray(vol.spacing, float)
    new_shape = np.maximum(1, np.round(extent / np.asarray(target))).astype(int)
    zoom = new_shape / shape
    data = ndimage.zoom(vol.data, zoom, order=order, mode="nearest", grid_mode=True).astype(np.float32)
    new_spacing = tuple(float(v) for v in extent / new_shape)
    affine = np.array(vol.affine, float)
    scale = np.asarray(vol.spacing, float) / np.asarray(new_spacing)  # per (slice, row, col) axis
    for col, ax in ((0, 2), (1, 1), (2, 0)):  # affine columns are (i=col, j=row, k=slice)
        affine[:3, col] = affine[:3, col] / scale[ax]
    return replace(
        vol, data=data, spacing=new_spacing, affine=affine, meta={**vol.meta, "resampled_from": vol.spacing}
    )


def window_volume(vol: Any, window: str | tuple[float, float] = "percentile") -> Any:
    """Map intensities to ``[0, 1]``: a ``(center, width)`` window (CT HU) or 0.5-99.5 percentiles.

    Examples
    --------
    >>> soft = window_volume(ct, (40, 400))  # doctest: +SKIP
    """
    x = vol.data.astype(np.float64)
    if window == "percentile":
        finite = x[np.isfinite(x)]
        lo, hi = np.percentile(finite, (0.5, 99.5)) if finite.size else (0.0, 0.0)
        how = "percentile 0.5-99.5"
    elif isinstance(window, (tuple, list)) and len(window) == 2 and float(window[1]) > 0:
        lo, hi = float(window[0]) - float(window[1]) / 2, float(window[0]) + float(window[1]) / 2
        how = f"window {float(window[0]):g}/{float(window[1]):g}"
    else:
        raise ConfigError(f"window_volume window={window!r}; expected 'percentile' or (center, width > 0)")
    data = np.zeros_like(x) if hi <= lo else np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    data = np.nan_to_num(data, nan=0.0)
    return replace(vol, data=data.astype(np.float32), meta={**vol.meta, "window": how})
