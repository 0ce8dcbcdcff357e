"""Expression prediction from embeddings: the HEST-Benchmark linear probe and BLEEP-style kNN.

Both report Pearson correlation per gene between predicted and measured expression on the
test spots, for the ``top_k`` most variable genes of the *training* spots, and its mean.
Nothing about the test set (features, expression, gene variance) is used to fit anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from biomodal.errors import ConfigError, DataError

__all__ = [
    "ExpressionRegressor",
    "expression_prediction",
    "knn_expression",
    "pearson_per_gene",
    "select_genes",
]


def _as_features(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty 2-D array (n_spots, n_features); got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise DataError(f"{name} contains NaN or infinite values.")
    return arr


def _as_expression(y: Any, name: str) -> tuple[Any, list[str] | None]:
    """Return ``(matrix, gene names or None)``; the matrix may stay scipy-sparse."""
    import scipy.sparse as sp

    names = None
    if hasattr(y, "var_names") and hasattr(y, "X"):  # AnnData
        names, y = [str(g) for g in y.var_names], y.X
    elif hasattr(y, "columns") and hasattr(y, "to_numpy"):  # DataFrame
        names, y = [str(g) for g in y.columns], y.to_numpy()
    elif hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    if not sp.issparse(y):
        y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty 2-D matrix (n_spots, n_genes); got shape {y.shape}.")
    return y, names


def _columns(y: Any, idx: np.ndarray, log1p: bool) -> np.ndarray:
    import scipy.sparse as sp

    out = y[:, idx]
    out = out.toarray() if sp.issparse(out) else np.asarray(out)
    out = out.astype(np.float64)
    return np.log1p(out) if log1p else out


def _gene_variance(y: Any, log1p: bool) -> np.ndarray:
    import scipy.sparse as sp

    if sp.issparse(y):
        y = y.tocsc().astype(np.float64)
        if log1p:
            y = y.log1p()
        mean = np.asarray(y.mean(axis=0)).ravel()
        return np.asarray(y.multiply(y).mean(axis=0)).ravel() - mean**2
    return np.var(np.log1p(y) if log1p else y, axis=0)


def select_genes(
    train_Y: Any,
    genes: Sequence[str] | None,
    top_k: int,
    hvg_genes: Sequence[str] | Sequence[int] | None,
    log1p: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Column indices and names of the evaluated genes, chosen from training data only.

    With ``hvg_genes`` given, those genes (names, or column indices) are used as they are.
    Otherwise the ``top_k`` genes with the highest variance over the training spots (after
    ``log1p`` if requested; genes constant in training are never chosen; ties broken by
    column order).
    """
    n_genes = train_Y.shape[1]
    names = [str(g) for g in genes] if genes is not None else [f"gene_{i}" for i in range(n_genes)]
    if len(names) != n_genes:
        raise DataError(f"genes has {len(names)} names but the expression matrix has {n_genes} columns.")
    if hvg_genes is not None:
        hvg = list(hvg_genes)
        if all(isinstance(g, (int, np.integer)) for g in hvg):
            idx = np.asarray(hvg, dtype=np.int64)
            if idx.size and (idx.min() < 0 or idx.max() >= n_genes):
                raise DataError(f"hvg_genes indices must lie in [0, {n_genes}); got {hvg}.")
        else:
            lookup = {g: i for i, g in enumerate(names)}
            missing = [g for g in hvg if str(g) not in lookup]
            if missing:
                raise DataError(f"hvg_genes not found among the expression columns: {missing[:10]}.")
            idx = np.asarray([lookup[str(g)] for g in hvg], dtype=np.int64)
    else:
        if int(top_k) < 1:
            raise ConfigError(f"top_k must be a positive integer; got {top_k!r}.")
        var = _gene_variance(train_Y, log1p)
        order = np.argsort(-var, kind="stable")
        order = order[var[order] > 0]
        idx = np.sort(order[: int(top_k)])
    if idx.size == 0:
        raise DataError("no gene varies across the training spots; nothing to evaluate.")
    return idx, [names[i] for i in idx]


def pearson_per_gene(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson r between matching columns of ``pred`` and ``true``; NaN where either is constant."""
    p = pred - pred.mean(axis=0)
    t = true - true.mean(axis=0)
    denom = np.sqrt((p**2).sum(axis=0) * (t**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p * t).sum(axis=0) / denom
    r[~(denom > 0)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _summary(r: np.ndarray, names: list[str], prefix: str) -> dict[str, Any]:
    finite = r[np.isfinite(r)]
    return {
        f"{prefix}pearson_mean": float(finite.mean()) if finite.size else float("nan"),
        f"{prefix}pearson_median": float(np.median(finite)) if finite.size else float("nan"),
        f"{prefix}pearson_std": float(finite.std()) if finite.size else float("nan"),
        f"{prefix}pearson_per_gene": {g: float(v) for g, v in zip(names, r)},
        "n_genes": len(names),
        "n_genes_undefined": int(r.size - finite.size),
    }


class ExpressionRegressor:
    """HEST-Benchmark regressor: standardise, PCA, then ridge regression, all fitted on train.

    Parameters
    ----------
    n_components
        PCA components, capped at ``min(n_train, n_features)``; ``None`` skips PCA.
    alpha
        Ridge penalty; ``None`` uses HEST's ``100 / (n_features_after_pca * n_targets)``.
    seed
        PCA random state.
    max_iter
        Iterations of the ``lsqr`` ridge solver (HEST: 1000).
    """

    def __init__(
        self, n_components: int | None = 256, alpha: float | None = None, seed: int = 0, max_iter: int = 1000
    ) -> None:
        self.n_components = n_components
        self.alpha = alpha
        self.seed = seed
        self.max_iter = max_iter

    def fit(self, X: Any, Y: Any) -> ExpressionRegressor:
        """Fit scaler, PCA and ridge on training features ``X`` and targets ``Y``."""
        from sklearn.decomposition import PCA
        from sklearn.linear_model import Ridge
        from sklearn.preprocessing import StandardScaler

        X = _as_features(X, "train_X")
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim != 2 or len(Y) != len(X):
            raise DataError(f"train_Y must be (n_spots={len(X)}, n_genes); got shape {Y.shape}.")
        self.scaler_ = StandardScaler().fit(X)
        Z = self.scaler_.transform(X)
        self.pca_ = None
        if self.n_components is not None:
            self.n_components_ = int(min(int(self.n_components), X.shape[0], X.shape[1]))
            self.pca_ = PCA(n_components=self.n_components_, random_state=self.seed).fit(Z)
            Z = self.pca_.transform(Z)
        else:
            self.n_components_ = X.shape[1]
        self.alpha_ = float(self.alpha) if self.alpha is not None else 100.0 / (Z.shape[1] * Y.shape[1])
        # HEST fits the ridge without intercept on centred features; the fitted weights do not
        # depend on the target mean, so adding it back changes no Pearson value but makes the
        # predictions (and their MSE) land on the measured scale.
        self.y_mean_ = Y.mean(axis=0)
        self.ridge_ = Ridge(
            alpha=self.alpha_,
            solver="lsqr",
            fit_intercept=False,
            max_iter=self.max_iter,
            random_state=self.seed,
        ).fit(Z, Y)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Standardise and project ``X`` with the training-fitted scaler and PCA."""
        Z = self.scaler_.transform(_as_features(X, "X"))
        return self.pca_.transform(Z) if self.pca_ is not None else Z

    def predict(self, X: Any) -> np.ndarray:
        """Predicted expression, ``(n_spots, n_targets)``."""
        return np.asarray(self.ridge_.predict(self.transform(X))) + self.y_mean_

    def __repr__(self) -> str:
        if not hasattr(self, "ridge_"):
            return f"ExpressionRegressor(n_components={self.n_components}, alpha={self.alpha}, unfitted)"
        return (
            f"ExpressionRegressor(n_features={self.scaler_.n_features_in_}, "
            f"n_components={self.n_components_}, n_targets={self.ridge_.coef_.shape[0]}, "
            f"alpha={self.alpha_:.3g})"
        )


def expression_prediction(
    train_X: Any,
    train_Y: Any,
    test_X: Any,
    test_Y: Any,
    *,
    genes: Sequence[str] | None = None,
    n_components: int | None = 256,
    alpha: float | None = None,
    top_k: int = 50,
    hvg_genes: Sequence[str] | Sequence[int] | None = None,
    log1p: bool = False,
    seed: int = 0,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """HEST-Benchmark expression prediction: PCA + ridge on embeddings, Pearson per gene.

    Parameters
    ----------
    train_X, test_X
        Embeddings (or any features), ``(n_spots, D)``.
    train_Y, test_Y
        Expression, ``(n_spots, n_genes)``: arrays, scipy-sparse, DataFrames or AnnData
        (gene names are taken from columns / ``var_names`` when ``genes`` is None). HEST
        evaluates ``log1p`` of raw counts: pass log-normalised values, or raw counts with
        ``log1p=True``.
    genes
        Gene names of the expression columns.
    n_components
        PCA components (HEST: 256), capped at ``min(n_train, D)``; ``None`` skips PCA.
    alpha
        Ridge penalty; default ``100 / (n_components * n_genes_evaluated)`` as in HEST.
    top_k
        Number of most variable training genes to evaluate (HEST: 50).
    hvg_genes
        Evaluate these genes (names or column indices) instead.
    log1p
        Apply ``log1p`` to the expression first.
    seed
        PCA random state.
    return_predictions
        Also return ``"predictions"`` (``n_test x n_genes`` array) and ``"model"``.

    Returns
    -------
    dict
        ``pearson_mean`` (over genes with a defined correlation), ``pearson_median``,
        ``pearson_std``, ``pearson_per_gene`` ``{gene: r}``, ``genes``, ``n_genes``,
        ``n_genes_undefined`` (constant in test or prediction), ``n_train``, ``n_test``,
        ``n_components``, ``alpha``, ``mse_mean``.
    """
    Ytr, names_tr = _as_expression(train_Y, "train_Y")
    Yte, names_te = _as_expression(test_Y, "test_Y")
    genes = genes if genes is not None else names_tr
    if names_tr is not None and names_te is not None and names_tr != names_te:
        raise DataError("train_Y and test_Y have different gene columns; align them first.")
    if Ytr.shape[1] != Yte.shape[1]:
        raise DataError(f"train_Y has {Ytr.shape[1]} genes but test_Y has {Yte.shape[1]}.")
    Xtr, Xte = _as_features(train_X, "train_X"), _as_features(test_X, "test_X")
    for nm, X, Y in (("train", Xtr, Ytr), ("test", Xte, Yte)):
        if len(X) != Y.shape[0]:
            raise DataError(f"{nm}_X has {len(X)} rows but {nm}_Y has {Y.shape[0]}.")
    if Xtr.shape[1] != Xte.shape[1]:
        raise DataError(f"train_X has {Xtr.shape[1]} features but test_X has {Xte.shape[1]}.")
    idx, names = select_genes(Ytr, genes, top_k, hvg_genes, log1p)
    ytr, yte = _columns(Ytr, idx, log1p), _columns(Yte, idx, log1p)
    model = ExpressionRegressor(n_components=n_components, alpha=alpha, seed=seed).fit(Xtr, ytr)
    pred = model.predict(Xte)
    out = _summary(pearson_per_gene(pred, yte), names, "")
    out.update(
        genes=names,
        n_train=len(Xtr),
        n_test=len(Xte),
        n_components=model.n_components_,
        alpha=model.alpha_,
        mse_mean=float(np.mean((pred - yte) ** 2)),
    )
    if return_predictions:
        out["predictions"] = pred
        out["model"] = model
    return out


def knn_expression(
    train_emb: Any,
    train_Y: Any,
    query_emb: Any,
    test_Y: Any,
    *,
    k: int = 50,
    genes: Sequence[str] | None = None,
    top_k: int = 50,
    hvg_genes: Sequence[str] | Sequence[int] | None = None,
    weighting: Literal["mean", "exp"] = "mean",
    log1p: bool = False,
    chunk_size: int = 4096,
    device: Any = None,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Retrieval-based expression prediction as in BLEEP.

    Each query (an image embedding of a test spot) retrieves its ``k`` most similar keys
    (expression embeddings of the training spots) in the joint space; the prediction is the
    average measured expression of those training spots.

    Parameters
    ----------
    train_emb
        Keys: training-spot embeddings of the expression modality, ``(n_train, D)``.
    train_Y
        Measured expression of the training spots (as in :func:`expression_prediction`).
    query_emb
        Queries: test-spot embeddings of the image modality, ``(n_test, D)``.
    test_Y
        Measured expression of the test spots, used only for scoring.
    k
        Neighbours averaged (BLEEP: 50), capped at ``n_train``.
    genes, top_k, hvg_genes, log1p
        Gene selection, as in :func:`expression_prediction` (from training spots only).
    weighting
        ``"mean"`` (BLEEP's "average") or ``"exp"`` (BLEEP's "weighted_average": weights
        ``exp(-||key - query||^2)``, i.e. ``exp(2 * similarity)`` for unit vectors).
    chunk_size, device
        Tiling and device of the similarity search (see ``retrieval.topk_neighbours``).
    return_predictions
        Also return ``"predictions"`` and ``"neighbours"`` (indices into the training spots).

    Returns
    -------
    dict
        ``knn_pearson_mean``, ``knn_pearson_median``, ``knn_pearson_std``,
        ``knn_pearson_per_gene``, ``genes``, ``n_genes``, ``n_genes_undefined``, ``k``,
        ``n_train``, ``n_test``.
    """
    import torch

    from biomodal.eval._retrieval import topk_neighbours

    if weighting not in ("mean", "exp"):
        raise ConfigError(f"weighting={weighting!r} is not supported; expected 'mean' or 'exp'.")
    Ytr, names_tr = _as_expression(train_Y, "train_Y")
    Yte, _ = _as_expression(test_Y, "test_Y")
    genes = genes if genes is not None else names_tr
    keys, queries = _as_features(train_emb, "train_emb"), _as_features(query_emb, "query_emb")
    if len(keys) != Ytr.shape[0] or len(queries) != Yte.shape[0]:
        raise DataError(
            f"embeddings and expression must have matching rows: train {len(keys)} vs {Ytr.shape[0]}, "
            f"test {len(queries)} vs {Yte.shape[0]}."
        )
    if Ytr.shape[1] != Yte.shape[1]:
        raise DataError(f"train_Y has {Ytr.shape[1]} genes but test_Y has {Yte.shape[1]}.")
    if int(k) < 1:
        raise ConfigError(f"k must be a positive integer; got {k!r}.")
    idx, names = select_genes(Ytr, genes, top_k, hvg_genes, log1p)
    ytr, yte = _columns(Ytr, idx, log1p), _columns(Yte, idx, log1p)
    keys_t = torch.nn.functional.normalize(torch.from_numpy(keys).float(), dim=1)
    query_t = torch.nn.functional.normalize(torch.from_numpy(queries).float(), dim=1)
    nbr, sim = topk_neighbours(query_t, keys_t, int(k), chunk_size=chunk_size, device=device)
    if weighting == "mean":
        w = np.full(nbr.shape, 1.0 / nbr.shape[1])
    else:
        w = np.exp(2.0 * (sim.astype(np.float64) - sim[:, :1]))
        w /= w.sum(axis=1, keepdims=True)
    pred = np.empty((len(queries), ytr.shape[1]))
    for a in range(0, len(queries), 2048):  # bounded (chunk x k x genes) gather
        pred[a : a + 2048] = np.einsum("qk,qkg->qg", w[a : a + 2048], ytr[nbr[a : a + 2048]])
    out = _summary(pearson_per_gene(pred, yte), names, "knn_")
    out.update(genes=names, k=int(nbr.shape[1]), n_train=len(keys), n_test=len(queries), weighting=weighting)
    if return_predictions:
        out["predictions"] = pred
        out["neighbours"] = nbr
    return out
