"""Generated multi-subject fMRI with known ground truth (for the cross-subject recipe and tests).

Every stimulus ``s`` has a latent vector ``z_s`` (``latent_dim``) shared by all subjects; its
image (``stimuli.npy``, ``(n_stimuli, 3, px, px)`` in ``[0, 1]``) is a smooth nonlinear function
of ``z_s``, and what a frozen image encoder makes of it is the target space. Each subject has

* its own brain: an ellipsoid of subject-specific size on a common grid, so voxel counts differ
  (NaN outside, as in SPM maps);
* its own voxel mixing: a response map per latent dimension = a shared template map, shifted by
  a subject-specific offset, plus a subject-specific random part, spatially smoothed (hemodynamic
  point spread), with per-voxel gain;
* realistic noise: spatially smooth trial noise with AR(1) correlation between consecutive trials
  (slow hemodynamics), at a given signal-to-noise ratio.

Each subject sees a random part of the training stimuli and every shared test stimulus, each
``repeats`` times in random order. Files: ``sub-NN/betas.nii.gz`` (one volume per trial, RAS,
2 mm; every other subject stored LAS to exercise reorientation), ``sub-NN/events.tsv`` (columns
``volume``, ``stimulus``), ``stimuli.npy``, ``stimuli.tsv`` (``stimulus``, ``shared``) and
``truth.npz`` (latents, which stimuli are shared test stimuli).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from biomodal._atomic import atomic_path, atomic_write_text
from biomodal._lazy import import_optional

__all__ = ["make_fmri_multisubject"]


def _smooth(x: np.ndarray, sigma: float, axes: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    sig = [sigma if a in axes else 0.0 for a in range(x.ndim)]
    return gaussian_filter(x, sig, mode="nearest")


def _images(z: np.ndarray, px: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth RGB images of the latents: a random two-layer map, blurred, in [0, 1]."""
    d = z.shape[1]
    w1 = rng.normal(size=(d, 64)) / np.sqrt(d)
    basis = _smooth(rng.normal(size=(64, 3, px, px)), 2.0, axes=(2, 3))
    basis /= basis.reshape(64, -1).std(axis=1)[:, None, None, None]
    h = np.tanh(z @ w1 * 1.5)
    img = np.einsum("nk,kchw->nchw", h, basis) / 8.0
    return (1.0 / (1.0 + np.exp(-img))).astype(np.float32)


def make_fmri_multisubject(
    out: str | os.PathLike,
    *,
    n_subjects: int = 5,
    n_train_stimuli: int = 900,
    n_test_stimuli: int = 300,
    seen_fraction: float = 0.8,
    repeats: int = 2,
    latent_dim: int = 24,
    grid: tuple[int, int, int] = (14, 17, 13),
    snr: float = 0.6,
    smoothing: float = 1.0,
    individuality: float = 0.5,
    image_px: int = 32,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a generated multi-subject fMRI dataset into ``out`` (see the module docstring).

    Parameters
    ----------
    out
        Folder to write (reused as is when it holds a dataset made with the same parameters).
    n_subjects, n_train_stimuli, n_test_stimuli
        Subjects; training-only stimuli; shared test stimuli (seen by every subject).
    seen_fraction
        Part of the training stimuli each subject sees.
    repeats
        Presentations of each stimulus per subject.
    latent_dim, grid, image_px
        Size of the shared latent space, of the voxel grid and of the stimulus images.
    snr
        Standard deviation of the signal over that of the noise, per voxel.
    smoothing
        Gaussian point spread (voxels) of response maps and noise.
    individuality
        Weight of the subject-specific part of each response map (0: all subjects share one
        template up to a shift).
    seed
        Random seed; the same parameters give the same files.

    Returns
    -------
    dict
        The manifest (also in ``manifest.json``): parameters, files, voxel counts per subject.
    """
    params = {k: v for k, v in locals().items() if k not in ("out", "overwrite")}
    nib = import_optional("nibabel", "fmri")
    out = Path(out)
    params["grid"] = list(grid)
    manifest_path = out / "manifest.json"
    if manifest_path.is_file() and not overwrite:
        old = json.loads(manifest_path.read_text())
        if old.get("params") == params:
            return old
    rng = np.random.default_rng(seed)
    n_stim = n_train_stimuli + n_test_stimuli
    z = rng.normal(size=(n_stim, latent_dim)).astype(np.float32)
    shared = np.zeros(n_stim, bool)
    shared[n_train_stimuli:] = True
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "stimuli.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, _images(z, image_px, rng))
    atomic_write_text(
        out / "stimuli.tsv",
        "stimulus\tshared\n" + "".join(f"{i}\t{int(s)}\n" for i, s in enumerate(shared)),
    )
    with atomic_path(out / "truth.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, latents=z, shared=shared)
    template = _smooth(rng.normal(size=(*grid, latent_dim)), smoothing * 1.5)
    template /= template.std()
    centre = (np.array(grid) - 1) / 2.0
    ijk = np.stack(np.meshgrid(*[np.arange(g) for g in grid], indexing="ij"), -1).astype(float)
    voxels: dict[str, int] = {}
    for s in range(n_subjects):
        name = f"sub-{s + 1:02d}"
        radii = centre * rng.uniform(0.8, 1.0, size=3)
        brain = (((ijk - centre) / radii) ** 2).sum(-1) <= 1.0
        shift = tuple(int(v) for v in rng.integers(-1, 2, size=3))
        own = _smooth(rng.normal(size=(*grid, latent_dim)), smoothing)
        own /= own.std()
        maps = np.roll(template, shift, axis=(0, 1, 2)) + individuality * own
        gain = rng.lognormal(0.0, 0.3, size=grid)
        w = (maps * gain[..., None])[brain]  # (voxels, latent)
        seen = np.flatnonzero(~shared)[rng.random(n_train_stimuli) < seen_fraction]
        stim = np.concatenate([seen, np.flatnonzero(shared)])
        order = rng.permutation(np.repeat(stim, repeats))
        signal = z[order] @ w.T
        sd = signal.std() / snr
        noise = np.empty_like(signal)
        prev = np.zeros(w.shape[0])
        for t in range(len(order)):
            fresh = _smooth(rng.normal(size=grid), smoothing)[brain]
            prev = 0.4 * prev + np.sqrt(1 - 0.16) * fresh / fresh.std()
            noise[t] = prev
        beta = (signal + sd * noise).astype(np.float32)
        vol = np.full((*grid, len(order)), np.nan, np.float32)
        vol[brain] = beta.T
        affine = np.diag([2.0, 2.0, 2.0, 1.0])
        affine[:3, 3] = -centre * 2.0
        if s % 2 == 1:  # store LAS: x flipped on disk, same place in the brain
            vol = vol[::-1]
            affine[0, 0], affine[0, 3] = -2.0, centre[0] * 2.0
        folder = out / name
        folder.mkdir(exist_ok=True)
        img = nib.Nifti1Image(vol, affine)
        img.header.set_xyzt_units("mm", "sec")
        with atomic_path(folder / "betas.nii.gz", suffix=".nii.gz") as tmp:
            nib.save(img, os.fspath(tmp))
        atomic_write_text(
            folder / "events.tsv", "volume\tstimulus\n" + "".join(f"{t}\t{i}\n" for t, i in enumerate(order))
        )
        voxels[name] = int(brain.sum())
    manifest = {"params": params, "subjects": list(voxels), "voxels": voxels, "n_stimuli": n_stim}
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    return manifest
