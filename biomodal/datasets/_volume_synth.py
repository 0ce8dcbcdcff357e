"""Chest-CT-like 3-D volumes with small findings and a report per volume (RadCLIP-style data).

Each volume is ``depth`` axial slices of ``px x px`` (intensities in [0, 1] after windowing):
a torso whose cross-section changes along the slices, two dark lungs, the spine, the heart in
the middle slices and the liver in the lowest ones, with per-patient size, shift, exposure and
noise. Three findings are placed at random positions, each occupying only a few slices, which
is what makes slice pooling matter (a mean over all slices dilutes them):

* ``nodule``: a bright sphere of radius 1.5-2.5 px inside a lung;
* ``cyst``: a dark sphere of radius 2-3.5 px in the liver or the soft tissue;
* ``calcification``: a very bright point (1-2 px) in the heart or the aorta.

The report is one sentence per finding (positive with its location, "a 6 mm nodule in the
upper right lobe", or negative, "no pulmonary nodules"), each mentioned with probability
``mention``, in a random order; sentences come from a small template set written for this
generator (there is no real CT report in ``../shared``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from biomodal.errors import ConfigError

__all__ = ["FINDINGS", "make_volume_patients"]

FINDINGS = ("nodule", "cyst", "calcification")
_POS = {
    "nodule": [
        "a {mm} mm nodule in the {level} {side} lobe.",
        "{level} {side} lobe pulmonary nodule, {mm} mm.",
        "there is a small {side} {level} lobe nodule.",
    ],
    "cyst": [
        "a {mm} mm hypodense cyst in the {organ}.",
        "simple cyst of the {organ}, {mm} mm.",
        "low attenuation cystic lesion in the {organ}.",
    ],
    "calcification": [
        "coronary artery calcification.",
        "calcified plaque in the {vessel}.",
        "dense calcification of the {vessel}.",
    ],
}
_NEG = {
    "nodule": ["no pulmonary nodules.", "the lungs are clear without nodules.", "no suspicious lung nodule."],
    "cyst": ["no cystic lesions.", "the liver is unremarkable.", "no focal hypodense lesion."],
    "calcification": [
        "no vascular calcification.",
        "no coronary calcification.",
        "the aorta is unremarkable.",
    ],
}


def _ball(z, y, x, cz, cy, cx, r, soft=0.6):
    d = np.sqrt((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2)
    return _inside(d - r, soft)


def _inside(e: np.ndarray, soft: float = 0.05) -> np.ndarray:
    """Soft indicator of ``e < 0`` (an ellipsoid's implicit equation minus one)."""
    return 1.0 / (1.0 + np.exp(np.clip(e / soft, -50, 50)))


def _anatomy(depth: int, px: int, rng: np.random.Generator) -> np.ndarray:
    z, y, x = np.meshgrid(
        np.linspace(-1, 1, depth), np.linspace(-1, 1, px), np.linspace(-1, 1, px), indexing="ij"
    )
    s = rng.uniform(0.9, 1.08)
    y, x = (y - rng.normal(0, 0.03)) / s, (x - rng.normal(0, 0.03)) / s
    body = _inside((x / 0.85) ** 2 + (y / (0.62 + 0.05 * z)) ** 2 - 1)
    vol = 0.05 + 0.45 * body
    for sgn in (-1, 1):  # lungs: upper and middle slices
        lung = _inside(((x - sgn * 0.38) / 0.3) ** 2 + ((y + 0.05) / 0.42) ** 2 + ((z + 0.3) / 0.8) ** 2 - 1)
        vol -= 0.35 * lung
    vol += 0.35 * _inside((x / 0.1) ** 2 + ((y - 0.45) / 0.1) ** 2 - 1)  # spine
    heart = _inside(((x - 0.08) / 0.28) ** 2 + ((y + 0.05) / 0.25) ** 2 + ((z - 0.05) / 0.35) ** 2 - 1)
    liver = _inside(((x + 0.25) / 0.45) ** 2 + (y / 0.35) ** 2 + ((z - 0.8) / 0.35) ** 2 - 1)
    vol = np.maximum(vol, 0.5 * heart + 0.05) * (1 - 0.4 * liver) + 0.22 * liver
    return vol


def make_volume_patients(
    n: int,
    *,
    seed: int = 0,
    depth: int = 16,
    px: int = 32,
    prevalence: float = 0.35,
    mention: float = 0.9,
    noise: float = 0.03,
) -> dict[str, Any]:
    """Draw ``n`` volumes with findings and their reports.

    Parameters
    ----------
    n
        Patients.
    seed
        Seed of everything.
    depth, px
        Slices per volume and slice side in pixels.
    prevalence
        Probability of each finding (independent).
    mention
        Probability that the report mentions each finding (positive or negative).
    noise
        Standard deviation of the additive noise.

    Returns
    -------
    dict
        ``volume`` ``(n, 1, depth, px, px)`` uint8, ``report`` (list of str), ``findings``
        ``(n, 3)`` 0/1 float32 (:data:`FINDINGS`), ``slices`` ``(n, 3)`` (the central slice of each
        finding, -1 where absent) and ``obs`` (a DataFrame: patient id, findings).
    """
    import pandas as pd
    from scipy.ndimage import gaussian_filter

    if n < 1 or depth < 8 or px < 24:
        raise ConfigError(f"make_volume_patients: need n >= 1, depth >= 8, px >= 24; got {n}, {depth}, {px}")
    if not 0 < prevalence < 1 or not 0 < mention <= 1:
        raise ConfigError(
            f"make_volume_patients: prevalence={prevalence}, mention={mention} must be in (0, 1)"
        )
    rng = np.random.default_rng([int(seed), 23])
    has = rng.random((n, len(FINDINGS))) < prevalence
    z, y, x = np.meshgrid(np.arange(depth), np.arange(px), np.arange(px), indexing="ij")
    vols = np.empty((n, 1, depth, px, px), np.uint8)
    slices = np.full((n, len(FINDINGS)), -1, np.int64)
    reports = []
    for i in range(n):
        v = _anatomy(depth, px, rng)
        parts = []
        for j, f in enumerate(FINDINGS):
            if has[i, j]:
                if f == "nodule":
                    side = int(rng.integers(2))
                    cz = rng.uniform(0.1, 0.55) * depth
                    cy, cx = rng.uniform(0.35, 0.6) * px, (0.27 + 0.46 * side + rng.uniform(-0.05, 0.05)) * px
                    r = rng.uniform(1.5, 2.5)
                    v = v + 0.55 * _ball(z, y, x, cz, cy, cx, r)
                    fill = {
                        "mm": round(r * 2 * 2.5),
                        "level": "upper" if cz < 0.33 * depth else "lower",
                        "side": "right" if side == 0 else "left",
                    }
                elif f == "cyst":
                    cz = rng.uniform(0.75, 0.92) * depth
                    cy, cx = rng.uniform(0.4, 0.6) * px, rng.uniform(0.28, 0.45) * px
                    r = rng.uniform(2.0, 3.5)
                    v = v * (1 - 0.6 * _ball(z, y, x, cz, cy, cx, r))
                    fill = {"mm": round(r * 2 * 2.5), "organ": "liver"}
                else:
                    cz = rng.uniform(0.4, 0.6) * depth
                    cy, cx = rng.uniform(0.42, 0.55) * px, rng.uniform(0.5, 0.62) * px
                    v = v + 0.9 * _ball(z, y, x, cz, cy, cx, rng.uniform(0.8, 1.3), soft=0.4)
                    fill = {"vessel": str(rng.choice(["aortic arch", "coronary arteries", "aorta"]))}
                slices[i, j] = int(cz)
            if rng.random() < mention:
                pool = _POS[f] if has[i, j] else _NEG[f]
                parts.append(pool[int(rng.integers(len(pool)))].format(**(fill if has[i, j] else {})))
        if not parts:
            parts.append("no acute findings in the chest." if not has[i].any() else "see images.")
        rng.shuffle(parts)
        reports.append(" ".join(parts))
        v = gaussian_filter(v * rng.uniform(0.9, 1.1), 0.5) + rng.normal(0, noise, v.shape)
        vols[i, 0] = (np.clip(v, 0, 1) * 255 + 0.5).astype(np.uint8)
    obs = pd.DataFrame(
        {
            "patient_id": [f"V{seed}_{i:05d}" for i in range(n)],
            **{f: has[:, j].astype(np.int8) for j, f in enumerate(FINDINGS)},
        }
    )
    obs.index = obs["patient_id"].to_numpy()
    return {
        "volume": vols,
        "report": reports,
        "findings": has.astype(np.float32),
        "slices": slices,
        "obs": obs,
    }
