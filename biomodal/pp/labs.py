"""Standardisation of clinical values with missing-value indicators (Symile style).

:class:`LabStandardizer` is fitted on training rows only (never on validation or test
rows); it z-scores each feature with the training mean and standard deviation, sets
missing values to 0 (the training mean) and appends one indicator per feature that is
1 where the value was missing, so a model can tell "average" from "not measured".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from biomodal.errors import ConfigError, DataError
from biomodal.io._labs import LabTable

__all__ = ["LabStandardizer"]

log = logging.getLogger("biomodal")


def _values(x: LabTable | np.ndarray) -> tuple[np.ndarray, tuple[str, ...] | None]:
    if isinstance(x, LabTable):
        return x.values.astype(np.float64), tuple(x.features)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise DataError(f"expected a (rows, features) array, got shape {arr.shape}")
    return arr, None


class LabStandardizer:
    """Per-feature z-scores fitted on training rows, missing values -> 0 plus indicators.

    Parameters
    ----------
    indicators
        Append one missing-value indicator per feature (1.0 = missing).
    clip
        Clip z-scores to ``[-clip, clip]`` (``None``: no clipping).

    Attributes
    ----------
    features_ : tuple of str
        Feature names seen in :meth:`fit`.
    mean_, std_ : numpy.ndarray
        Training mean and standard deviation per feature (over observed values; a feature with
        fewer than two observed training values gets mean 0, std 1; a constant one std 1).
    n_observed_ : numpy.ndarray
        Observed training values per feature.

    Examples
    --------
    >>> X = np.array([[1.0, np.nan], [3.0, 10.0]])
    >>> s = LabStandardizer().fit(X)
    >>> s.transform(np.array([[2.0, np.nan]]))
    array([[0., 0., 0., 1.]], dtype=float32)
    """

    def __init__(self, *, indicators: bool = True, clip: float | None = 5.0) -> None:
        self.indicators = bool(indicators)
        self.clip = clip

    def fit(
        self,
        x: LabTable | np.ndarray,
        *,
        rows: Sequence[int] | np.ndarray | None = None,
        features: Sequence[str] | None = None,
    ) -> LabStandardizer:
        """Fit on the training rows.

        Parameters
        ----------
        x
            A :class:`~biomodal.io.LabTable` or a ``(rows, features)`` array with NaN for missing.
        rows
            Positions (or a boolean mask) of the training rows in ``x``; default all rows.
        features
            Names for an array input (default ``"f0", "f1", ...``).

        Returns
        -------
        LabStandardizer
            ``self``.
        """
        arr, names = _values(x)
        if rows is not None:
            arr = arr[np.asarray(rows)]
        if arr.shape[0] == 0:
            raise DataError("LabStandardizer.fit: no training rows")
        names = names or tuple(features or (f"f{j}" for j in range(arr.shape[1])))
        if len(names) != arr.shape[1]:
            raise DataError(f"{len(names)} feature names for {arr.shape[1]} columns")
        obs = np.isfinite(arr)
        n = obs.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, np.nansum(np.where(obs, arr, 0.0), axis=0) / np.maximum(n, 1), 0.0)
            var = np.nansum(np.where(obs, (arr - mean) ** 2, 0.0), axis=0) / np.maximum(n - 1, 1)
        std = np.sqrt(var)
        few = n < 2
        if few.any():
            log.warning(
                "LabStandardizer: features %s have < 2 training values; left unscaled",
                list(np.array(names)[few]),
            )
        mean[few], std[few] = 0.0, 1.0
        std[std < 1e-12] = 1.0
        self.features_, self.mean_, self.std_, self.n_observed_ = tuple(names), mean, std, n
        return self

    def _check(self) -> None:
        if not hasattr(self, "mean_"):
            raise ConfigError("LabStandardizer is not fitted: call fit(training rows) first")

    @property
    def feature_names_out_(self) -> list[str]:
        """Output column names: the features, then ``<feature>_missing`` for each."""
        self._check()
        return (
            [*self.features_, *(f"{f}_missing" for f in self.features_)]
            if self.indicators
            else list(self.features_)
        )

    def transform(self, x: LabTable | np.ndarray) -> np.ndarray:
        """Standardise rows with the fitted statistics.

        A :class:`~biomodal.io.LabTable` is matched by feature name (its columns may be in any
        order; absent features raise :class:`~biomodal.errors.DataError`).

        Returns
        -------
        numpy.ndarray
            ``(rows, 2 * n_features)`` float32 ``[z-scores, missing indicators]`` (``(rows,
            n_features)`` without indicators); missing values are 0 in the z-score part.
        """
        self._check()
        arr, names = _values(x)
        if names is not None and names != self.features_:
            absent = [f for f in self.features_ if f not in names]
            if absent:
                raise DataError(f"the table lacks the fitted feature(s) {absent} (has {list(names)})")
            arr = arr[:, [names.index(f) for f in self.features_]]
        if arr.shape[1] != len(self.features_):
            raise DataError(
                f"{arr.shape[1]} columns given, the standardiser was fitted on {len(self.features_)}"
            )
        miss = ~np.isfinite(arr)
        z = (np.where(miss, self.mean_, arr) - self.mean_) / self.std_
        if self.clip is not None:
            z = np.clip(z, -self.clip, self.clip)
        out = np.concatenate([z, miss.astype(np.float64)], axis=1) if self.indicators else z
        return out.astype(np.float32)

    def fit_transform(self, x: LabTable | np.ndarray, **kwargs: Any) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` on all of ``x`` (``rows=`` still selects the fit rows)."""
        return self.fit(x, **kwargs).transform(x)

    def state_dict(self) -> dict[str, Any]:
        """Fitted state as plain Python values (for checkpoints)."""
        self._check()
        return {
            "features": list(self.features_),
            "mean": self.mean_.tolist(),
            "std": self.std_.tolist(),
            "n_observed": self.n_observed_.astype(int).tolist(),
            "indicators": self.indicators,
            "clip": self.clip,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> LabStandardizer:
        """Rebuild a fitted standardiser from :meth:`state_dict`.

        Raises
        ------
        ConfigError
            Missing keys or lengths that disagree.
        """
        need = {"features", "mean", "std"}
        if not need <= set(state):
            raise ConfigError(f"LabStandardizer state needs keys {sorted(need)}, got {sorted(state)}")
        obj = cls(indicators=state.get("indicators", True), clip=state.get("clip", 5.0))
        obj.features_ = tuple(state["features"])
        obj.mean_ = np.asarray(state["mean"], dtype=np.float64)
        obj.std_ = np.asarray(state["std"], dtype=np.float64)
        obj.n_observed_ = np.asarray(state.get("n_observed", [0] * len(obj.features_)), dtype=np.int64)
        if not len(obj.features_) == obj.mean_.size == obj.std_.size:
            raise ConfigError("LabStandardizer state: features, mean and std differ in length")
        return obj

    def __repr__(self) -> str:
        if not hasattr(self, "mean_"):
            return f"LabStandardizer(indicators={self.indicators}, clip={self.clip}, not fitted)"
        names = list(self.features_)[:6]
        return f"LabStandardizer({len(self.features_)} features {names}, indicators={self.indicators})"
