"""Tissue detection on whole-slide images: :func:`detect_tissue` -> :class:`TissueMask`.

The slide is read at a coarse resolution (8 um/px by default), a per-pixel
tissue score is thresholded with Otsu's method (HSV saturation, or optical
density), then holes are filled and small specks removed, with areas given in
square microns so the result does not depend on the working resolution.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from biomodal.errors import ConfigError

__all__ = ["TissueMask", "detect_tissue", "otsu_threshold"]

_CHANNELS = ("saturation", "od")
_DEFAULT_FLOOR = {"saturation": 0.05, "od": 0.05}


class TissueMask:
    """Boolean tissue mask of a slide at a coarse resolution.

    Parameters
    ----------
    mask
        ``(height, width)`` boolean array, ``True`` on tissue.
    slide_dimensions
        ``(width, height)`` of the slide's level 0; fixes the scale to level-0 pixels.
    mpp
        Microns per pixel of the mask (``None`` when the slide's are unknown).
    threshold
        The score threshold used (informative).
    method
        How the mask was made (informative).

    Attributes
    ----------
    downsample
        ``(sx, sy)`` level-0 pixels per mask pixel along x and y.
    """

    def __init__(
        self,
        mask: np.ndarray,
        slide_dimensions: tuple[int, int],
        *,
        mpp: float | None = None,
        threshold: float | None = None,
        method: str = "given",
    ) -> None:
        mask = np.asarray(mask)
        if mask.ndim != 2 or mask.size == 0:
            raise ConfigError(f"mask has shape {mask.shape}; expected a non-empty 2-D (height, width) array")
        self.mask = mask.astype(bool, copy=False)
        self.slide_dimensions = (int(slide_dimensions[0]), int(slide_dimensions[1]))
        height, width = self.mask.shape
        self.downsample = (self.slide_dimensions[0] / width, self.slide_dimensions[1] / height)
        self.mpp = None if mpp is None else float(mpp)
        self.threshold = threshold
        self.method = method
        self._integral: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the mask."""
        return self.mask.shape  # type: ignore[return-value]

    @property
    def tissue_fraction(self) -> float:
        """Fraction of the slide covered by tissue."""
        return float(self.mask.mean())

    def integral(self) -> np.ndarray:
        """Summed-area table ``S`` of shape ``(h + 1, w + 1)``: ``S[j, i] = mask[:j, :i].sum()`` (cached)."""
        if self._integral is None:
            h, w = self.mask.shape
            dtype = np.int32 if h * w < 2**31 else np.int64
            s = np.zeros((h + 1, w + 1), dtype=dtype)
            np.cumsum(self.mask, axis=0, dtype=dtype, out=s[1:, 1:])
            np.cumsum(s[1:, 1:], axis=1, out=s[1:, 1:])
            self._integral = s
        return self._integral

    def region_fraction(self, x: Any, y: Any, w: Any, h: Any) -> np.ndarray:
        """Tissue fraction of level-0 boxes, vectorised over arrays of boxes.

        Area weighted: mask pixels partly inside a box count in proportion (the summed-area
        table is interpolated bilinearly, which is exact for a piecewise-constant mask);
        parts of a box outside the slide count as background.

        Parameters
        ----------
        x, y
            Top-left corners in level-0 pixels.
        w, h
            Box sizes in level-0 pixels.

        Returns
        -------
        numpy.ndarray
            Float64 fractions in ``[0, 1]``.
        """
        sx, sy = self.downsample
        x = np.asarray(x, dtype=np.float64) / sx
        y = np.asarray(y, dtype=np.float64) / sy
        u1 = x + np.asarray(w, dtype=np.float64) / sx
        v1 = y + np.asarray(h, dtype=np.float64) / sy
        s = self.integral()
        area = _interp(s, u1, v1) - _interp(s, x, v1) - _interp(s, u1, y) + _interp(s, x, y)
        denom = (u1 - x) * (v1 - y)
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(denom > 0, area / denom, 0.0)
        return np.clip(frac, 0.0, 1.0)

    def __repr__(self) -> str:
        h, w = self.mask.shape
        mpp = f"{self.mpp:.3g} um/px" if self.mpp is not None else "mpp unknown"
        return (
            f"TissueMask({w}x{h}, {mpp}, downsample {self.downsample[0]:.4g}, "
            f"tissue {100 * self.tissue_fraction:.1f}%, method={self.method!r})"
        )


def _interp(s: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of the summed-area table at continuous mask coordinates."""
    h, w = s.shape[0] - 1, s.shape[1] - 1
    u = np.clip(u, 0.0, w)
    v = np.clip(v, 0.0, h)
    i = np.minimum(np.floor(u).astype(np.int64), max(w - 1, 0))
    j = np.minimum(np.floor(v).astype(np.int64), max(h - 1, 0))
    a, b = u - i, v - j
    s00, s01 = s[j, i].astype(np.float64), s[j, i + 1].astype(np.float64)
    s10, s11 = s[j + 1, i].astype(np.float64), s[j + 1, i + 1].astype(np.float64)
    return (1 - b) * ((1 - a) * s00 + a * s01) + b * ((1 - a) * s10 + a * s11)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising the between-class variance of ``values``.

    Returns the upper edge of the last bin of the lower class (``values > t`` is foreground).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)[:-1].astype(np.float64)
    w1 = values.size - w0
    m = np.cumsum(hist * centers)
    mu0 = m[:-1] / np.maximum(w0, 1)
    mu1 = (m[-1] - m[:-1]) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centers[int(np.argmax(between))])


def _score(rgb: np.ndarray, channel: str) -> np.ndarray:
    img = rgb.astype(np.float32)
    if channel == "saturation":
        cmax, cmin = img.max(axis=2), img.min(axis=2)
        sat = np.where(cmax > 0, (cmax - cmin) / np.maximum(cmax, 1), 0.0)
        sat[cmax < 20] = 0.0  # near-black (scanner borders, out-of-slide) is not tissue
        return sat
    od = -np.log10((img + 1.0) / 256.0)
    return od.mean(axis=2)


def _remove_small(mask: np.ndarray, min_px: float) -> np.ndarray:
    from scipy import ndimage

    if min_px <= 1:
        return mask
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def _fill_holes(mask: np.ndarray, max_px: float) -> np.ndarray:
    """Fill background pieces smaller than ``max_px`` that do not touch the border."""
    from scipy import ndimage

    labels, n = ndimage.label(~mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    fill = sizes < max_px
    fill[0] = False
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill[border] = False
    return mask | fill[labels]


def detect_tissue(
    slide: Any,
    *,
    mpp: float | None = 8.0,
    max_size: int | None = None,
    method: str = "otsu",
    channel: str = "saturation",
    threshold: float | None = None,
    min_threshold: float | None = None,
    smooth_sigma: float = 1.0,
    min_area_um2: float = 1e4,
    max_hole_um2: float | None = 1e5,
) -> TissueMask:
    """Find tissue on a slide at a coarse resolution.

    Parameters
    ----------
    slide
        A :class:`biomodal.io.Slide` (or anything with ``dimensions``, ``mpp``, ``has_mpp``,
        ``read_region`` and ``thumbnail``).
    mpp
        Working resolution of the mask in microns per pixel (never finer than the slide).
    max_size
        Instead of ``mpp``: largest side of the mask in pixels (works without slide mpp).
    method
        ``"otsu"`` (automatic threshold) or ``"threshold"`` (use ``threshold``).
    channel
        ``"saturation"`` (HSV saturation, robust to white background) or ``"od"``
        (mean optical density).
    threshold
        Fixed score threshold; with ``method="otsu"`` it overrides Otsu when given.
    min_threshold
        Lower bound on the automatic threshold, so a blank slide yields no tissue
        (default 0.05 for both channels).
    smooth_sigma
        Gaussian smoothing of the score (mask pixels) before thresholding.
    min_area_um2
        Connected tissue pieces smaller than this (square microns) are removed.
    max_hole_um2
        Holes smaller than this (square microns) are filled; ``None`` fills every hole, ``0`` none.

    Returns
    -------
    TissueMask
        The boolean mask with its mpp and scale to level 0.
    """
    from scipy import ndimage

    if method not in ("otsu", "threshold"):
        raise ConfigError(f"method={method!r} is invalid; expected 'otsu' or 'threshold'")
    if channel not in _CHANNELS:
        raise ConfigError(f"channel={channel!r} is invalid; expected one of {_CHANNELS}")
    if method == "threshold" and threshold is None:
        raise ConfigError("method='threshold' needs threshold=<score>; or use method='otsu'")
    width, height = slide.dimensions
    if max_size is not None:
        rgb = slide.thumbnail(int(max_size))
    elif mpp is not None:
        if mpp <= 0:
            raise ConfigError(f"mpp={mpp!r} is invalid; expected a positive working resolution")
        factor = min(1.0, slide.mpp / mpp)  # raises MissingMetadataError when the slide has no mpp
        rgb = slide.thumbnail((max(1, round(width * factor)), max(1, round(height * factor))))
    else:
        raise ConfigError("detect_tissue needs mpp=<um per px> or max_size=<pixels>")
    mask_mpp = slide.mpp * width / rgb.shape[1] if slide.has_mpp else None

    score = _score(rgb, channel)
    if smooth_sigma > 0:
        score = ndimage.gaussian_filter(score, smooth_sigma)
    if threshold is None:
        floor = _DEFAULT_FLOOR[channel] if min_threshold is None else float(min_threshold)
        threshold = max(otsu_threshold(score), floor)
    mask = score > threshold

    if mask_mpp is None:
        if min_area_um2 or max_hole_um2 != 0:
            warnings.warn(
                f"{getattr(slide, 'path', 'slide')}: microns per pixel unknown, so small-object removal and "
                "hole filling (given in um^2) are skipped; pass mpp to read_slide to enable them",
                stacklevel=2,
            )
    else:
        px_area = mask_mpp**2
        if max_hole_um2 is None:
            mask = ndimage.binary_fill_holes(mask)
        elif max_hole_um2 > 0:
            mask = _fill_holes(mask, max_hole_um2 / px_area)
        mask = _remove_small(mask, min_area_um2 / px_area)
    return TissueMask(
        mask,
        (width, height),
        mpp=mask_mpp,
        threshold=float(threshold),
        method=f"{method}:{channel}",
    )
