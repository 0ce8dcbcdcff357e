"""Post-hoc batch correction: Harmony, ComBat and per-batch centring / scaling (scanpy style).

Each function takes an AnnData (results go to ``obsm`` / ``X`` / a layer, the
parameters to ``uns[key_added]``) or a plain array plus per-cell batch values
(returns the corrected array), so the same call serves as a step in a gene
pipeline before training and on learned embeddings after training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from biomodal._anndata import dense_matrix
from biomodal.errors import DataError

__all__ = ["CenterScale", "center_scale", "combat", "harmony"]


def _is_adata(obj: Any) -> bool:
    return hasattr(obj, "obsm") and hasattr(obj, "obs")


def _get_obs(adata: Any, key: str, fn: str) -> np.ndarray:
    if not isinstance(key, str):
        raise DataError(f"{fn}: with an AnnData, key must be an obs column name, got {type(key).__name__}")
    if key not in adata.obs.columns:
        raise DataError(f"{fn}: batch key {key!r} not in adata.obs (available: {list(adata.obs.columns)})")
    return adata.obs[key].to_numpy()


def _as_batch(values: Any, n: int, fn: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{fn}: batch must have one value per row ({n}), got shape {arr.shape}")
    return arr


def _finite(X: np.ndarray, fn: str, what: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise DataError(f"{fn}: {what} must be 2-D (cells x features), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise DataError(f"{fn}: {what} contains NaN or infinite values")
    return X


class CenterScale:
    """Per-batch centring (and optional scaling), fitted on one set of cells and applied to others.

    ``fit`` stores each batch's feature means (and standard deviations, ``ddof=0``, with
    zeros replaced by 1). ``transform`` subtracts the stored mean of a cell's batch (and
    divides by its stored standard deviation). A batch not seen in ``fit`` (a new donor
    or slide at test time) is corrected with statistics computed from its own cells in
    the data being transformed, unless ``unseen="error"``.

    Parameters
    ----------
    scale
        Also divide by the per-batch standard deviation.
    unseen
        ``"self"`` (use the new batch's own statistics) or ``"error"``.
    """

    def __init__(self, scale: bool = False, unseen: str = "self") -> None:
        if unseen not in ("self", "error"):
            raise DataError(f"CenterScale: unseen={unseen!r} must be 'self' or 'error'")
        self.scale = scale
        self.unseen = unseen

    @staticmethod
    def _stats(X: np.ndarray, batch: np.ndarray, scale: bool) -> tuple[list, np.ndarray, np.ndarray]:
        levels, codes = np.unique(batch, return_inverse=True)
        counts = np.bincount(codes).astype(np.float64)
        means = np.zeros((len(levels), X.shape[1]))
        np.add.at(means, codes, X)
        means /= counts[:, None]
        stds = np.ones_like(means)
        if scale:
            sq = np.zeros_like(means)
            np.add.at(sq, codes, (X - means[codes]) ** 2)
            stds = np.sqrt(sq / counts[:, None])
            stds[stds == 0] = 1.0
        return list(levels), means, stds

    def fit(self, X: np.ndarray, batch: Any) -> CenterScale:
        """Learn per-batch means (and standard deviations) from ``X`` (cells x features)."""
        X = _finite(X, "CenterScale.fit", "X")
        batch = _as_batch(batch, X.shape[0], "CenterScale.fit")
        self.batches_, self.means_, self.stds_ = self._stats(X, batch, self.scale)
        return self

    def transform(self, X: np.ndarray, batch: Any) -> np.ndarray:
        """Correct ``X`` with the fitted statistics (new batches: see class docstring)."""
        if not hasattr(self, "means_"):
            raise DataError("CenterScale.transform: call fit() first")
        X = _finite(X, "CenterScale.transform", "X")
        if X.shape[1] != self.means_.shape[1]:
            raise DataError(
                f"CenterScale.transform: X has {X.shape[1]} features, fitted on {self.means_.shape[1]}"
            )
        batch = _as_batch(batch, X.shape[0], "CenterScale.transform")
        index = {b: i for i, b in enumerate(self.batches_)}
        known = np.array([b in index for b in batch], dtype=bool)
        out = np.empty_like(X)
        if known.any():
            rows = np.array([index[b] for b in batch[known]], dtype=np.int64)
            out[known] = (X[known] - self.means_[rows]) / self.stds_[rows]
        if (~known).any():
            new = sorted(set(batch[~known].tolist()))
            if self.unseen == "error":
                raise DataError(f"CenterScale.transform: batches {new} were not seen in fit()")
            _, m, s = self._stats(X[~known], batch[~known], self.scale)
            _, codes = np.unique(batch[~known], return_inverse=True)
            out[~known] = (X[~known] - m[codes]) / s[codes]
        return out

    def fit_transform(self, X: np.ndarray, batch: Any) -> np.ndarray:
        """``fit(X, batch).transform(X, batch)``."""
        return self.fit(X, batch).transform(X, batch)

    def __repr__(self) -> str:
        fitted = (
            f", n_batches={len(self.batches_)}, n_features={self.means_.shape[1]}"
            if hasattr(self, "means_")
            else ""
        )
        return f"CenterScale(scale={self.scale}, unseen={self.unseen!r}{fitted})"


def center_scale(
    data: Any,
    key: Any = "batch",
    *,
    basis: str = "X_pca",
    adjusted_basis: str | None = None,
    scale: bool = False,
    key_added: str | None = None,
    copy: bool = False,
) -> Any:
    """Centre (and optionally scale) every batch separately: ``(x - mean_b) / sd_b``.

    Parameters
    ----------
    data
        AnnData, or a ``(cells, features)`` array (then ``key`` is the per-cell batch array
        and the corrected array is returned).
    key
        ``obs`` column with the batch (AnnData) or per-cell batch values (array).
    basis
        ``obsm`` key to correct, or ``"X"``.
    adjusted_basis
        Where to write the result: default ``f"{basis}_center_scale"`` (for ``basis="X"``,
        ``"X"`` itself is overwritten only when ``adjusted_basis="X"``; the default writes
        ``layers["X_center_scale"]``).
    scale
        Also divide by the per-batch standard deviation (``ddof=0``).
    key_added
        ``uns`` key for the parameters and per-batch statistics (default: ``adjusted_basis``).
    copy
        Return a corrected copy instead of modifying ``data``.

    Returns
    -------
    numpy.ndarray or AnnData or None
        The corrected array (array input), the copy (``copy=True``) or ``None``.
    """
    if not _is_adata(data):
        return CenterScale(scale=scale).fit_transform(data, key)
    adata = data.copy() if copy else data
    X = dense_matrix(adata, basis, "center_scale basis")
    batch = _get_obs(adata, key, "center_scale")
    cs = CenterScale(scale=scale)
    Z = cs.fit_transform(X, batch)
    out = adjusted_basis or f"{basis}_center_scale"
    _write(adata, basis, out, Z)
    adata.uns[key_added or out] = {
        "method": "center_scale",
        "basis": basis,
        "key": key,
        "scale": scale,
        "batches": [str(b) for b in cs.batches_],
        "means": cs.means_,
        "stds": cs.stds_,
    }
    return adata if copy else None


def _write(adata: Any, basis: str, out: str, Z: np.ndarray) -> None:
    if out == "X":
        adata.X = Z
    elif basis == "X":
        adata.layers[out] = Z
    else:
        adata.obsm[out] = Z


def harmony(
    data: Any,
    key: Any = "batch",
    *,
    basis: str = "X_pca",
    adjusted_basis: str | None = None,
    key_added: str | None = None,
    copy: bool = False,
    random_state: int = 0,
    **harmony_kwargs: Any,
) -> Any:
    """Harmony integration of an embedding (``harmonypy.run_harmony``, called directly).

    harmonypy >= 2 returns ``Z_corr`` as cells x dims (1.x returned dims x cells, which
    ``scanpy.external.pp.harmony_integrate`` still assumes); the orientation is checked.

    Parameters
    ----------
    data
        AnnData, or a ``(cells, dims)`` array (then ``key`` is the per-cell batch array).
    key
        ``obs`` column(s) with the batch covariate(s) (AnnData), or per-cell values (array).
    basis
        ``obsm`` key to correct (typically PCA), or ``"X"``.
    adjusted_basis
        ``obsm`` key for the result (default ``f"{basis}_harmony"``).
    key_added
        ``uns`` key for the parameters (default: ``adjusted_basis``).
    copy
        Return a corrected copy instead of modifying ``data``.
    random_state
        Seed passed to harmonypy.
    **harmony_kwargs
        Passed to ``harmonypy.run_harmony`` (``theta``, ``lamb``, ``sigma``, ``nclust``,
        ``max_iter_harmony``, ...).

    Returns
    -------
    numpy.ndarray or AnnData or None
        The corrected array (array input), the copy (``copy=True``) or ``None``.
    """
    import pandas as pd

    from biomodal._lazy import import_optional

    hp = import_optional("harmonypy", "batch")
    if _is_adata(data):
        adata = data.copy() if copy else data
        X = _finite(dense_matrix(adata, basis, "harmony basis"), "harmony", f"basis {basis!r}")
        keys = [key] if isinstance(key, str) else list(key)
        meta = pd.DataFrame({k: _get_obs(adata, k, "harmony") for k in keys})
    else:
        adata = None
        X = _finite(data, "harmony", "X")
        keys = ["batch"]
        meta = pd.DataFrame({"batch": _as_batch(key, X.shape[0], "harmony")})
    n, d = X.shape
    harmony_kwargs.setdefault("verbose", False)
    # Pass dims x cells so the orientation is unambiguous even when n == d.
    ho = hp.run_harmony(np.ascontiguousarray(X.T), meta, keys, random_state=random_state, **harmony_kwargs)
    Z = np.asarray(ho.Z_corr)
    if Z.shape == (d, n) and Z.shape != (n, d):
        Z = Z.T
    if Z.shape != (n, d):
        raise DataError(f"harmony: harmonypy returned Z_corr of shape {Z.shape}, expected ({n}, {d})")
    if adata is None:
        return Z
    out = adjusted_basis or f"{basis}_harmony"
    _write(adata, basis, out, Z)
    adata.uns[key_added or out] = {
        "method": "harmony",
        "basis": basis,
        "key": keys,
        "random_state": random_state,
        "harmonypy_version": getattr(hp, "__version__", "unknown"),
        "n_iter": len(ho.objective_harmony),
        "params": {k: v for k, v in harmony_kwargs.items() if np.isscalar(v)},
    }
    return adata if copy else None


def combat(
    data: Any,
    key: Any = "batch",
    *,
    covariates: Sequence[str] | None = None,
    layer: str | None = None,
    key_added: str = "combat",
    copy: bool = False,
) -> Any:
    """ComBat on expression (``scanpy.pp.combat``): empirical-Bayes location/scale per gene and batch.

    ``adata.X`` should hold log-normalised expression. The corrected dense matrix replaces
    ``adata.X`` (default) or goes to ``adata.layers[layer]``; ``adata.obs`` is not modified.

    Parameters
    ----------
    data
        AnnData, or a ``(cells, genes)`` array (then ``key`` is the per-cell batch array
        and the corrected array is returned).
    key
        ``obs`` column with the batch (AnnData) or per-cell batch values (array).
    covariates
        ``obs`` columns to protect (biological covariates), AnnData only.
    layer
        Layer to write the result to; ``None`` overwrites ``X``.
    key_added
        ``uns`` key for the parameters.
    copy
        Return a corrected copy instead of modifying ``data``.

    Returns
    -------
    numpy.ndarray or AnnData or None
        The corrected array (array input), the copy (``copy=True``) or ``None``.
    """
    import anndata as ad
    import pandas as pd

    from biomodal._lazy import import_optional

    sc = import_optional("scanpy", "spatial")
    covariates = list(covariates or [])
    if _is_adata(data):
        adata = data.copy() if copy else data
        X = _finite(dense_matrix(adata, "X", "combat"), "combat", "adata.X")
        obs = {"_batch": _get_obs(adata, key, "combat")}
        for c in covariates:
            if c not in adata.obs.columns:
                raise DataError(
                    f"combat: covariate {c!r} not in adata.obs (available: {list(adata.obs.columns)})"
                )
            obs[c] = adata.obs[c].to_numpy()
    else:
        if covariates:
            raise DataError("combat: covariates need an AnnData input")
        adata = None
        X = _finite(data, "combat", "X")
        obs = {"_batch": _as_batch(key, X.shape[0], "combat")}
    obs_df = pd.DataFrame(
        {k: pd.Categorical(np.asarray(v).astype(str)) if k == "_batch" else v for k, v in obs.items()}
    )
    if obs_df["_batch"].nunique() < 2:
        raise DataError(
            f"combat: batch key {key if isinstance(key, str) else '<array>'!r} has fewer than 2 batches"
        )
    obs_df.index = [str(i) for i in range(X.shape[0])]
    tmp = ad.AnnData(X=X, obs=obs_df)
    Z = np.asarray(sc.pp.combat(tmp, key="_batch", covariates=covariates or None, inplace=False))
    if adata is None:
        return Z
    if layer is None:
        adata.X = Z
    else:
        adata.layers[layer] = Z
    adata.uns[key_added] = {"method": "combat", "key": key, "covariates": covariates, "layer": layer or "X"}
    return adata if copy else None
