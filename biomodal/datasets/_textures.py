"""Procedural H&E-like tissue rendering for the synthetic demo dataset.

Everything is vectorised numpy (plus :mod:`scipy.ndimage` for smoothing).
Smooth fields (tissue-type regions, the local nuclei density, gland and fat
patterns) are built on a coarse grid of about 4 um per cell and upsampled;
nuclei are stamped at full resolution as soft ellipses; the colour comes from a
Beer-Lambert mixture of haematoxylin and eosin optical densities, so per-donor
staining differences are changes of stain vectors and concentrations, as in
real H&E.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TISSUE_TYPES", "Stain", "TissueLayout", "make_layout", "random_stain", "render_he"]

#: Ground-truth tissue types, in the order used by ``obsm["tissue_fractions"]``.
TISSUE_TYPES: tuple[str, ...] = ("tumour", "stroma", "immune", "fat", "epithelium")

# Per-type appearance, indexed like TISSUE_TYPES.
_NUC_DENSITY = np.array([5500.0, 1100.0, 9000.0, 220.0, 3200.0])  # nuclei per mm^2
_NUC_RADIUS_UM = np.array([4.4, 2.3, 2.9, 2.8, 3.4])  # minor semi-axis
_NUC_ASPECT = np.array([1.35, 2.8, 1.05, 1.2, 1.5])
_NUC_OD = np.array([1.05, 1.25, 1.55, 0.9, 1.1])  # haematoxylin optical density
_EOSIN = np.array([0.62, 0.8, 0.28, 0.05, 0.5])
_FIBRE = np.array([0.0, 0.9, 0.0, 0.0, 0.1])
_FAT = np.array([0.0, 0.0, 0.0, 1.0, 0.0])
_GLAND = np.array([0.0, 0.0, 0.0, 0.0, 1.0])

# Reference stain vectors (optical density per unit concentration, RGB order).
_H_REF = np.array([0.5626, 0.7201, 0.4062])
_E_REF = np.array([0.2159, 0.8012, 0.5581])

#: Standard deviation of the log local-density field (``density = exp(z * DENSITY_SD)``).
DENSITY_SD = 0.45


@dataclass
class Stain:
    """Staining of one section: stain vectors, concentration scales, background."""

    h_vec: np.ndarray
    e_vec: np.ndarray
    h_scale: float = 1.0
    e_scale: float = 1.0
    background_od: float = 0.03

    def as_dict(self) -> dict:
        """JSON-friendly copy."""
        return {
            "h_vec": [round(float(v), 5) for v in self.h_vec],
            "e_vec": [round(float(v), 5) for v in self.e_vec],
            "h_scale": round(float(self.h_scale), 5),
            "e_scale": round(float(self.e_scale), 5),
            "background_od": round(float(self.background_od), 5),
        }


def random_stain(rng: np.random.Generator, *, strength: float = 1.0, base: Stain | None = None) -> Stain:
    """Perturb ``base`` (default: the reference H&E stain) by a random staining difference.

    ``strength`` scales every perturbation (1.0: donor-level, ~0.25: section-level).
    """
    base = base or Stain(_H_REF.copy(), _E_REF.copy())

    def _tilt(vec: np.ndarray, sd: float) -> np.ndarray:
        out = np.clip(vec + rng.normal(0.0, sd * strength, 3), 0.02, None)
        return out / np.linalg.norm(out)

    return Stain(
        h_vec=_tilt(base.h_vec, 0.06),
        e_vec=_tilt(base.e_vec, 0.08),
        h_scale=base.h_scale * float(np.exp(rng.normal(0.0, 0.15 * strength))),
        e_scale=base.e_scale * float(np.exp(rng.normal(0.0, 0.2 * strength))),
        background_od=float(np.clip(base.background_od + rng.normal(0.0, 0.01 * strength), 0.0, 0.1)),
    )


@dataclass
class TissueLayout:
    """Coarse ground truth of one section (grid of ``step`` slide pixels per cell)."""

    step: int
    labels: np.ndarray  # (Hc, Wc) int8 tissue type
    tissue: np.ndarray  # (Hc, Wc) bool tissue mask
    density: np.ndarray  # (Hc, Wc) float32 local nuclei-density multiplier (log-normal, median 1)
    gland: np.ndarray  # (Hc, Wc) float32 gland pattern (unit sd)
    fat: np.ndarray  # (Hc, Wc) float32 fat-cell pattern (unit sd)
    angle: np.ndarray  # (Hc, Wc) float32 fibre orientation (radians)
    warp: np.ndarray  # (Hc, Wc) float32 fibre phase warp (radians)
    fibre_gaps: np.ndarray  # (Hc, Wc) float32 pattern breaking fibres into bundles (unit sd)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)


def _bandpass(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    from scipy import ndimage

    noise = rng.standard_normal(shape).astype(np.float32)
    field = ndimage.gaussian_filter(noise, sigma) - ndimage.gaussian_filter(noise, 2.0 * sigma)
    return field / (field.std() + 1e-8)


def make_layout(rng: np.random.Generator, shape_px: tuple[int, int], mpp: float) -> TissueLayout:
    """Draw tissue regions, tissue mask and texture fields for a ``shape_px`` (h, w) slide."""
    step = max(1, round(4.0 / mpp))
    cell_um = step * mpp
    hc, wc = -(-shape_px[0] // step), -(-shape_px[1] // step)
    k = len(TISSUE_TYPES)
    yy, xx = np.mgrid[0:hc, 0:wc].astype(np.float32)

    # Regions: Voronoi cells of random seeds, every type at least once, boundaries warped.
    n_seeds = int(rng.integers(2 * k - 2, 2 * k + 3))
    seed_types = np.concatenate([rng.permutation(k), rng.integers(0, k, n_seeds - k)])
    seeds = rng.uniform(0.0, 1.0, (n_seeds, 2)) * np.array([hc, wc], dtype=np.float32)
    amp = 70.0 / cell_um
    wy = yy + amp * _smooth_noise(rng, (hc, wc), 60.0 / cell_um)
    wx = xx + amp * _smooth_noise(rng, (hc, wc), 60.0 / cell_um)
    dist = (wy[None] - seeds[:, 0, None, None]) ** 2 + (wx[None] - seeds[:, 1, None, None]) ** 2
    labels = seed_types[np.argmin(dist, axis=0)].astype(np.int8)

    # Tissue: a rounded square blob with an irregular edge, covering most of the slide.
    ry = np.abs(yy - hc / 2) / (hc / 2)
    rx = np.abs(xx - wc / 2) / (wc / 2)
    rnorm = (ry**4 + rx**4) ** 0.25
    tissue = rnorm + 0.08 * _smooth_noise(rng, (hc, wc), 80.0 / cell_um) < 0.93

    density = np.exp(DENSITY_SD * _smooth_noise(rng, (hc, wc), 45.0 / cell_um)).astype(np.float32)
    return TissueLayout(
        step=step,
        labels=labels,
        tissue=tissue,
        density=density,
        gland=_bandpass(rng, (hc, wc), 9.0 / cell_um),
        fat=_bandpass(rng, (hc, wc), 11.0 / cell_um),
        angle=(rng.uniform(0, np.pi) + 0.5 * _smooth_noise(rng, (hc, wc), 150.0 / cell_um)).astype(
            np.float32
        ),
        warp=(2.0 * _smooth_noise(rng, (hc, wc), 20.0 / cell_um)).astype(np.float32),
        fibre_gaps=_bandpass(rng, (hc, wc), 5.0 / cell_um),
    )


def _upsample(field: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling by an integer ``step`` (cell values sit at cell corners), cropped to ``shape``."""
    f = np.asarray(field, dtype=np.float32)
    if step == 1:
        return f[: shape[0], : shape[1]]
    f = np.concatenate([f, f[-1:]], axis=0)
    f = np.concatenate([f, f[:, -1:]], axis=1)
    w = (np.arange(step, dtype=np.float32) / step)[None, :, None]
    rows = (f[:-1, None] * (1.0 - w) + f[1:, None] * w).reshape(-1, f.shape[1])[: shape[0]]
    w = w[0, :, 0][None, None, :]
    out = rows[:, :-1, None] * (1.0 - w) + rows[:, 1:, None] * w
    return out.reshape(rows.shape[0], -1)[:, : shape[1]]


def nuclei_rate(layout: TissueLayout) -> np.ndarray:
    """Return the expected nuclei per mm^2 on the coarse grid (type density x local density x glands)."""
    lab = layout.labels
    rate = _NUC_DENSITY[lab] * layout.density
    in_gland = _GLAND[lab] > 0
    band = np.where(layout.gland > 1.0, 0.0, np.where(layout.gland > 0.1, 2.6, 0.45))
    rate = np.where(in_gland, rate * band, rate)
    return np.where(layout.tissue, rate, 0.0)


def _stamp_nuclei(
    rng: np.random.Generator, layout: TissueLayout, mpp: float, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution haematoxylin density of the nuclei, and the nuclei count per coarse cell."""
    step = layout.step
    cell_mm2 = (step * mpp / 1000.0) ** 2
    counts = rng.poisson(nuclei_rate(layout) * cell_mm2)
    cy, cx = np.nonzero(counts)
    reps = counts[cy, cx]
    cy, cx = np.repeat(cy, reps), np.repeat(cx, reps)
    n = cy.size
    ys = (cy + rng.uniform(0, 1, n)) * step
    xs = (cx + rng.uniform(0, 1, n)) * step
    typ = layout.labels[cy, cx]
    minor = (_NUC_RADIUS_UM[typ] / mpp * rng.lognormal(0.0, 0.15, n)).astype(np.float32)
    major = (minor * _NUC_ASPECT[typ] * rng.lognormal(0.0, 0.1, n)).astype(np.float32)
    theta = np.where(_FIBRE[typ] > 0.3, layout.angle[cy, cx] + np.pi / 2, rng.uniform(0, np.pi, n))
    od = _NUC_OD[typ] * rng.uniform(0.8, 1.15, n)

    hmap = np.zeros(shape, dtype=np.float32)
    reach = np.ceil(major).astype(np.int64) + 1
    for radius in np.unique(np.minimum(4 * -(-reach // 4), 64)):
        members = np.nonzero(np.minimum(4 * -(-reach // 4), 64) == radius)[0]
        oy, ox = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        oy, ox = oy.ravel(), ox.ravel()
        chunk = max(1, 2_000_000 // oy.size)
        for start in range(0, members.size, chunk):
            idx = members[start : start + chunk]
            iy, ix = np.floor(ys[idx]).astype(np.int64), np.floor(xs[idx]).astype(np.int64)
            dy = oy[None].astype(np.float32) - (ys[idx] - iy)[:, None].astype(np.float32)
            dx = ox[None].astype(np.float32) - (xs[idx] - ix)[:, None].astype(np.float32)
            c = np.cos(theta[idx]).astype(np.float32)[:, None]
            s = np.sin(theta[idx]).astype(np.float32)[:, None]
            q2 = ((dx * c + dy * s) / major[idx, None]) ** 2 + ((dy * c - dx * s) / minor[idx, None]) ** 2
            val = np.clip((1.0 - q2) * 2.0, 0.0, 1.0) * od[idx, None]
            py, px = iy[:, None] + oy[None], ix[:, None] + ox[None]
            keep = (val > 0) & (py >= 0) & (py < shape[0]) & (px >= 0) & (px < shape[1])
            np.maximum.at(hmap, (py[keep], px[keep]), val[keep].astype(np.float32))
    return hmap, counts


def render_he(
    rng: np.random.Generator, layout: TissueLayout, shape: tuple[int, int], mpp: float, stain: Stain
) -> tuple[np.ndarray, np.ndarray]:
    """Render an RGB uint8 (h, w, 3) H&E-like image of ``layout``.

    Returns
    -------
    image, nuclei_counts
        The image and the number of nuclei stamped in each coarse cell.
    """
    step = layout.step
    lab = layout.labels
    from scipy import ndimage

    tis = ndimage.gaussian_filter(layout.tissue.astype(np.float32), 1.0)
    lumen = np.clip((layout.gland - 1.0) * 3.0, 0.0, 1.0) * _GLAND[lab]
    eos_c = ndimage.gaussian_filter(_EOSIN[lab] * (1.0 - lumen) * (1.0 - 0.5 * _FAT[lab]), 0.8) * tis
    phase_um = 7.0
    cell_um = step * mpp
    yy, xx = np.mgrid[0 : lab.shape[0], 0 : lab.shape[1]].astype(np.float32) * (cell_um / phase_um)
    phase_c = 2 * np.pi * (xx * np.cos(layout.angle) + yy * np.sin(layout.angle)) + layout.warp

    eos = _upsample(eos_c, step, shape)
    fibre_amp = _upsample(ndimage.gaussian_filter(_FIBRE[lab], 0.8) * tis, step, shape)
    fibres = (0.5 + 0.5 * np.sin(_upsample(phase_c, step, shape))) ** 3
    fibres *= _upsample(np.clip(0.6 + 0.6 * layout.fibre_gaps, 0.0, 1.0), step, shape)
    eos = eos * (1.0 - 0.6 * fibre_amp) + fibre_amp * fibres
    fat_amp = _upsample(ndimage.gaussian_filter(_FAT[lab], 0.8) * tis, step, shape)
    membrane = np.exp(-((_upsample(layout.fat, step, shape) / 0.12) ** 2))
    eos += 0.55 * fat_amp * membrane
    hmap, counts = _stamp_nuclei(rng, layout, mpp, shape)

    # Chromatin / stain grain: a small periodic noise tile, cheap at any slide size.
    grain = rng.normal(1.0, 0.12, (64, 64)).astype(np.float32)
    reps = (-(-shape[0] // 64), -(-shape[1] // 64))
    grain = np.tile(grain, reps)[: shape[0], : shape[1]]
    tis_full = _upsample(tis, step, shape)
    h_conc = (hmap * grain + 0.07 * tis_full * (1.0 - 0.8 * fat_amp)) * np.float32(stain.h_scale)
    e_conc = eos * (2.0 - grain) * np.float32(stain.e_scale)
    image = np.empty((*shape, 3), dtype=np.uint8)
    for ch in range(3):
        od = h_conc * np.float32(stain.h_vec[ch]) + e_conc * np.float32(stain.e_vec[ch])
        od += np.float32(stain.background_od)
        np.exp(-od, out=od)
        od *= np.float32(255.0)
        image[..., ch] = od.astype(np.uint8)
    return image, counts
