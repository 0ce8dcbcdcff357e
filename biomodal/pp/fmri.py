"""fMRI preprocessing on ``(trials or time, voxels)`` arrays.

* :class:`VoxelZScore`: voxel-wise z-scoring whose statistics come from training trials only
  (fit / transform, ``state_dict`` for checkpoints), one per subject.
* :func:`roi_columns` / :func:`mask_roi`: keep the voxels of a region of interest (a mask or
  label atlas on the image grid).
* :func:`average_repeats`: average the trials that show the same stimulus (NSD shows each image
  up to three times).
* :func:`standardize_maps`: centre and scale each map over its voxels (contrast maps of
  different subjects differ in overall scale).
* :func:`detrend`: remove a constant or (piecewise) linear trend along time
  (:func:`scipy.signal.detrend`; nilearn is not a dependency).

numpy only at import; scipy is imported inside :func:`detrend`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from biomodal.errors import CheckpointError, DataError

__all__ = ["VoxelZScore", "average_repeats", "detrend", "mask_roi", "roi_columns", "standardize_maps"]


class VoxelZScore:
    """Voxel-wise ``(x - mean) / std`` with statistics of the training trials.

    Parameters
    ----------
    eps
        Floor of the standard deviation (constant voxels map to 0, not to inf).
    name
        Shown in errors (the subject, the modality).

    Attributes
    ----------
    mean_, std_
        ``(voxels,)`` float32 statistics, set by :meth:`fit`.
    n_fit_
        Number of trials the statistics come from.
    """

    def __init__(self, eps: float = 1e-6, name: str = "fmri") -> None:
        self.eps = float(eps)
        self.name = name
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        self.n_fit_ = 0

    def fit(self, x: np.ndarray) -> VoxelZScore:
        """Estimate the statistics from training trials ``x`` ``(trials, voxels)``."""
        x = _matrix(x, f"VoxelZScore({self.name}).fit")
        if x.shape[0] < 2:
            raise DataError(
                f"VoxelZScore({self.name}).fit: needs >= 2 training trials to estimate a standard "
                f"deviation, got {x.shape[0]}"
            )
        self.mean_ = x.mean(axis=0).astype(np.float32)
        self.std_ = np.maximum(x.std(axis=0), self.eps).astype(np.float32)
        self.n_fit_ = int(x.shape[0])
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Z-score ``x`` ``(trials, voxels)`` with the fitted statistics (float32)."""
        if self.mean_ is None or self.std_ is None:
            raise DataError(f"VoxelZScore({self.name}): call fit() on the training trials first")
        x = _matrix(x, f"VoxelZScore({self.name}).transform")
        if x.shape[1] != self.mean_.shape[0]:
            raise DataError(
                f"VoxelZScore({self.name}): data have {x.shape[1]} voxels, the scaler was fitted on "
                f"{self.mean_.shape[0]}"
            )
        return ((x - self.mean_) / self.std_).astype(np.float32)

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` on the same (training) trials."""
        return self.fit(x).transform(x)

    @property
    def n_voxels(self) -> int:
        """Number of voxels the scaler was fitted on (0 before fitting)."""
        return 0 if self.mean_ is None else int(self.mean_.shape[0])

    def state_dict(self) -> dict[str, Any]:
        """Plain-python state (lists and floats; safe in a ``weights_only`` checkpoint)."""
        if self.mean_ is None or self.std_ is None:
            raise DataError(f"VoxelZScore({self.name}): not fitted, nothing to save")
        return {
            "kind": "voxel_zscore",
            "eps": self.eps,
            "mean": self.mean_.tolist(),
            "std": self.std_.tolist(),
            "n_fit": self.n_fit_,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], name: str = "fmri") -> VoxelZScore:
        """Inverse of :meth:`state_dict`; a :class:`CheckpointError` naming ``name`` when malformed."""
        try:
            if state.get("kind") != "voxel_zscore":
                raise KeyError("kind")
            out = cls(float(state["eps"]), name)
            out.mean_ = np.asarray(state["mean"], np.float32)
            out.std_ = np.asarray(state["std"], np.float32)
            out.n_fit_ = int(state["n_fit"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(
                f"checkpoint preprocessor {name!r}: not a VoxelZScore state ({exc})"
            ) from None
        if out.mean_.shape != out.std_.shape or out.mean_.ndim != 1:
            raise CheckpointError(f"checkpoint preprocessor {name!r}: mean and std shapes differ")
        return out

    def __repr__(self) -> str:
        fitted = (
            f"{self.n_voxels} voxels from {self.n_fit_} trials" if self.mean_ is not None else "not fitted"
        )
        return f"VoxelZScore({self.name}: {fitted})"


def _matrix(x: Any, where: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise DataError(f"{where}: expected a (trials, voxels) matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"{where}: {int((~np.isfinite(x)).sum())} NaN/inf values (mask them out first)")
    return x


def roi_columns(mask: np.ndarray, roi: np.ndarray, labels: Sequence[int] | None = None) -> np.ndarray:
    """Return the indices of the masked voxels (columns of ``data``) that lie in a region of interest.

    Parameters
    ----------
    mask
        Boolean grid mask of the data (``FMRIImage.mask``).
    roi
        Boolean ROI or integer label atlas on the same grid.
    labels
        Atlas labels making up the ROI (default: every label ``> 0``).
    """
    mask = np.asarray(mask, bool)
    roi = np.asarray(roi)
    if roi.shape != mask.shape:
        raise DataError(f"roi has grid shape {roi.shape}, the data's mask {mask.shape}")
    if labels is None:
        inside = roi > 0 if roi.dtype != bool else roi
    else:
        inside = np.isin(roi, np.asarray(labels))
    cols = np.flatnonzero(inside[mask])
    if cols.size == 0:
        raise DataError(f"roi (labels {labels}) contains none of the {int(mask.sum())} masked voxels")
    return cols


def mask_roi(img: Any, roi: np.ndarray, labels: Sequence[int] | None = None) -> Any:
    """Restrict an :class:`~biomodal.io.FMRIImage` to a region of interest (a new image)."""
    from dataclasses import replace

    cols = roi_columns(img.mask, roi, labels)
    flat = np.flatnonzero(img.mask.ravel())[cols]
    mask = np.zeros(img.mask.size, bool)
    mask[flat] = True
    return replace(
        img,
        data=np.ascontiguousarray(img.data[:, cols]),
        mask=mask.reshape(img.mask.shape),
        labels=None if img.labels is None else img.labels[cols],
        info={**img.info, "roi_voxels": int(cols.size)},
    )


def average_repeats(x: np.ndarray, stimulus: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average the trials of each stimulus.

    Parameters
    ----------
    x
        ``(trials, voxels)``.
    stimulus
        Stimulus id of every trial.

    Returns
    -------
    tuple
        ``(ids, averaged (n_stimuli, voxels), n_repeats)``, ids in order of first appearance.
    """
    x = np.asarray(x)
    stim = np.asarray(stimulus)
    if stim.shape != (x.shape[0],):
        raise DataError(
            f"average_repeats: {stim.shape[0] if stim.ndim else 0} stimulus ids for {x.shape[0]} trials"
        )
    ids, first, inv, counts = np.unique(stim, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first)
    sums = np.zeros((ids.size, x.shape[1]), np.float64)
    np.add.at(sums, inv, x)
    avg = (sums / counts[:, None]).astype(np.float32)
    return ids[order], avg[order], counts[order]


def detrend(
    x: np.ndarray, *, kind: str = "linear", breakpoints: Sequence[int] = (), axis: int = 0
) -> np.ndarray:
    """Remove a constant or (piecewise) linear trend along time (``axis``, default 0).

    Parameters
    ----------
    x
        ``(time, voxels)`` series.
    kind
        ``"linear"`` or ``"constant"`` (the mean only).
    breakpoints
        Run boundaries (time indices) for a piecewise-linear trend, e.g. the start of each run.
    """
    if kind not in ("linear", "constant"):
        raise DataError(f"detrend: kind={kind!r} not in ('linear', 'constant')")
    x = np.asarray(x, np.float64)
    if x.shape[axis] < 2:
        raise DataError(f"detrend: needs >= 2 time points along axis {axis}, got {x.shape[axis]}")
    from scipy.signal import detrend as _detrend

    if kind == "constant":
        return (x - x.mean(axis=axis, keepdims=True)).astype(np.float32)
    return _detrend(x, axis=axis, type="linear", bp=np.asarray(breakpoints, np.int64)).astype(np.float32)


def standardize_maps(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Centre and scale every row (map or volume) of ``x`` ``(rows, voxels)`` over its voxels.

    Uses only the row itself, so it needs no training statistics.
    """
    x = _matrix(x, "standardize_maps")
    sd = np.maximum(x.std(axis=1, keepdims=True), eps)
    return ((x - x.mean(axis=1, keepdims=True)) / sd).astype(np.float32)
