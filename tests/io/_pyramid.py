"""Synthetic H&E-like images for slide tests (written with :func:`biomodal.datasets.write_pyramid_tiff`)."""

from __future__ import annotations

import numpy as np


def synthetic_he(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth H&E-like RGB image: pink/purple blobs on a white background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.full((height, width, 3), 245, dtype=np.float32)
    for _ in range(4):
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        r = rng.uniform(0.08, 0.2) * min(width, height)
        inside = ((xx - cx) ** 2 + (yy - cy) ** 2) < r**2
        img[inside] = (200, 110, 170)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
