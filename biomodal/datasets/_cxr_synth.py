"""Chest-radiograph-like images with known findings, for generated clinical data.

A frontal (PA) chest film is drawn on a ``px x px`` grid in coordinates ``u, v`` in
``[-1, 1]`` (``u``: patient's right -> left as displayed, i.e. image left -> right; ``v``: top
-> bottom): soft tissue of the thorax, two dark lung fields with faint rib shadows, the
mediastinum and spine, the diaphragm domes, and the heart shadow overlapping the left lung.
Two findings are drawn from the patient's latent state:

* **cardiomegaly**: the heart shadow's width follows the cardiothoracic ratio (CTR, heart
  width over thorax width); ``ctr`` around 0.42 in health and above 0.5 with cardiomegaly (the
  radiological definition);
* **pleural effusion**: fluid fills the bottom of one or both lung fields up to a meniscus
  (a curve rising towards the lateral wall), blunting the costophrenic angle; its height
  follows the effusion's size.

Per image the position, scale, exposure and noise vary. Images are returned as ``uint8``
``(n, 1, px, px)`` (the model converts them to ``[0, 1]``), radiographic convention (bright =
dense).
"""

from __future__ import annotations

import numpy as np

__all__ = ["chest_images"]


def _ellipse(
    u: np.ndarray, v: np.ndarray, cu: np.ndarray, cv: np.ndarray, ru: np.ndarray, rv: np.ndarray, soft: float
) -> np.ndarray:
    """Soft indicator (0..1) of an ellipse per image; centres and radii are ``(n, 1, 1)``."""
    r = np.sqrt(((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2)
    return 1.0 / (1.0 + np.exp((r - 1.0) / soft))


def chest_images(
    ctr: np.ndarray,
    effusion: np.ndarray,
    effusion_side: np.ndarray,
    *,
    px: int = 64,
    noise: float = 0.03,
    seed: int | np.random.Generator | None = 0,
) -> np.ndarray:
    """Draw one frontal chest image per patient.

    Parameters
    ----------
    ctr
        ``(n,)`` cardiothoracic ratios (0.35-0.7; above 0.5 reads as cardiomegaly).
    effusion
        ``(n,)`` effusion height as a fraction of the lung field (0: none, up to about 0.5).
    effusion_side
        ``(n,)`` ints: 0 right, 1 left, 2 both (ignored where ``effusion`` is 0).
    px
        Image side in pixels (>= 32).
    noise
        Standard deviation of the additive noise (in [0, 1] intensity units).
    seed
        Seed or generator of the per-image variation.

    Returns
    -------
    numpy.ndarray
        ``(n, 1, px, px)`` uint8.
    """
    from scipy.ndimage import gaussian_filter

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    ctr = np.asarray(ctr, np.float64)
    eff = np.asarray(effusion, np.float64)
    side = np.asarray(effusion_side, np.int64)
    n = len(ctr)
    if px < 32:
        raise ValueError(f"chest_images: px={px} is too small (need >= 32)")
    if eff.shape != (n,) or side.shape != (n,):
        raise ValueError(f"chest_images: effusion {eff.shape} and side {side.shape} must be ({n},)")

    def col(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64).reshape(n, 1, 1)

    g = np.linspace(-1.0, 1.0, px)
    u0, v0 = np.meshgrid(g, g)  # (px, px): u across, v down
    scale = col(rng.uniform(0.92, 1.06, n))
    u = (u0[None] - col(rng.normal(0, 0.03, n))) / scale
    v = (v0[None] - col(rng.normal(0, 0.03, n))) / scale
    half_thorax = 0.82  # thorax half-width in u units
    img = 0.08 + 0.45 * _ellipse(
        u, v, col(np.zeros(n)), col(np.full(n, 0.1)), col(np.full(n, 0.9)), col(np.full(n, 1.05)), 0.03
    )
    lung_u, lung_v, lung_ru, lung_rv = 0.4, -0.05, 0.33, 0.62
    lungs = np.zeros((n, px, px))
    fluid = np.zeros((n, px, px))
    for k, sgn in enumerate((-1.0, 1.0)):  # k 0: image left = patient's right lung
        cu = col(np.full(n, sgn * lung_u))
        lung = _ellipse(
            u, v, cu, col(np.full(n, lung_v)), col(np.full(n, lung_ru)), col(np.full(n, lung_rv)), 0.04
        )
        below = v > lung_v + lung_rv * 0.55  # the diaphragm dome flattens the base
        dome = lung_v + lung_rv * 0.55 + 0.25 * ((u - cu) / lung_ru) ** 2
        lung = np.where(below & (v > dome), lung * np.exp(-(v - dome) / 0.03), lung)
        lungs += lung
        on_side = (side == k) | (side == 2)
        h = col(np.where(on_side, eff, 0.0)) * 2 * lung_rv  # fluid height in v units
        base = lung_v + lung_rv
        lateral = np.abs(u - cu) / lung_ru * np.sign(sgn * (u - cu))  # -1 medial .. +1 lateral
        meniscus = base - h * (0.6 + 0.4 * np.clip(lateral, -1, 1))  # rises towards the wall
        fluid += lung * (h > 0) / (1.0 + np.exp(-(v - meniscus) / 0.02))
    ribs = 0.06 * (0.5 + 0.5 * np.sin(2 * np.pi * (v * 4.5 + 0.35 * np.abs(u)) + col(rng.uniform(0, 6.3, n))))
    img = img - lungs.clip(0, 1) * (0.36 - ribs) + fluid.clip(0, 1) * 0.32
    img += 0.25 * _ellipse(
        u, v, col(np.zeros(n)), col(np.full(n, -0.2)), col(np.full(n, 0.09)), col(np.full(n, 0.9)), 0.03
    )  # mediastinum and spine
    heart_half = ctr * half_thorax  # the heart's width is ctr times the thorax width
    heart = _ellipse(
        u,
        v,
        col(0.12 * heart_half / 0.35),
        col(np.full(n, 0.22)),
        col(heart_half),
        col(np.full(n, 0.24) + 0.2 * (heart_half - 0.35)),
        0.04,
    )
    img = np.maximum(img, 0.18 + 0.5 * heart)
    img = img * col(rng.uniform(0.85, 1.15, n)) + col(rng.normal(0, 0.03, n))
    img = gaussian_filter(img, sigma=(0, 0.6 * px / 64, 0.6 * px / 64))
    img += rng.normal(0, noise, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)[:, None]
