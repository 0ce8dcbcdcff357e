"""Linear probe: logistic regression on frozen embeddings, with chance levels reported."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

from biomodal.errors import ConfigError, DataError

__all__ = ["linear_probe"]


def _features(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DataError(
            f"{name} must be a non-empty 2-D array (n_samples, n_features); got shape {arr.shape}."
        )
    if not np.isfinite(arr).all():
        raise DataError(f"{name} contains NaN or infinite values.")
    return arr


def _labels(y: Any, n: int, name: str) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{name} must be 1-D with one label per sample ({n}); got shape {arr.shape}.")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise DataError(f"{name} contains NaN labels; drop unlabelled samples first.")
    return arr


def _macro_auroc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> tuple[float, int]:
    """One-vs-rest AUROC averaged over classes that have positives and negatives in ``y``."""
    from sklearn.metrics import roc_auc_score

    if classes.size == 2:
        if np.unique(y).size < 2:
            return float("nan"), 0
        return float(roc_auc_score(y == classes[1], proba[:, 1])), 1
    scores = []
    for j, c in enumerate(classes):
        pos = y == c
        if pos.any() and not pos.all():
            scores.append(roc_auc_score(pos, proba[:, j]))
    return (float(np.mean(scores)) if scores else float("nan")), len(scores)


def linear_probe(
    train_X: Any,
    train_y: Any,
    test_X: Any,
    test_y: Any,
    *,
    C: float = 1.0,
    max_iter: int = 1000,
    class_weight: Literal["balanced"] | dict | None = "balanced",
    unseen: Literal["error", "drop"] = "error",
    seed: int = 0,
) -> dict[str, Any]:
    """Fit a logistic-regression probe on training embeddings and score it on test ones.

    Features are standardised with mean and scale fitted on the training set only. Splits
    (by donor, patient or section) are the caller's choice.

    Parameters
    ----------
    train_X, test_X
        Embeddings, ``(n, D)``.
    train_y, test_y
        Labels (any hashable dtype), ``(n,)``.
    C
        Inverse L2 regularisation strength of :class:`sklearn.linear_model.LogisticRegression`.
    max_iter
        Solver iterations (lbfgs).
    class_weight
        ``"balanced"`` (default) reweights classes inversely to their training frequency.
    unseen
        What to do with test samples whose label never occurs in training: ``"error"``
        (raise :class:`~biomodal.errors.DataError` naming them) or ``"drop"`` (score without
        them; ``n_dropped_unseen`` says how many).
    seed
        Random state of the solver.

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``macro_auroc`` (one-vs-rest over
        test classes with both positives and negatives; NaN when none), ``n_auroc_classes``,
        ``chance_majority`` (test accuracy of always predicting the most frequent training
        class), ``chance_uniform`` (``1 / n_classes``, the chance level of balanced accuracy),
        ``n_classes``, ``classes``, ``n_train``, ``n_test``, ``n_dropped_unseen``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
    from sklearn.preprocessing import StandardScaler

    if unseen not in ("error", "drop"):
        raise ConfigError(f"unseen={unseen!r} is not supported; expected 'error' or 'drop'.")
    Xtr, Xte = _features(train_X, "train_X"), _features(test_X, "test_X")
    if Xtr.shape[1] != Xte.shape[1]:
        raise DataError(f"train_X has {Xtr.shape[1]} features but test_X has {Xte.shape[1]}.")
    ytr, yte = _labels(train_y, len(Xtr), "train_y"), _labels(test_y, len(Xte), "test_y")
    classes, counts = np.unique(ytr, return_counts=True)
    if classes.size < 2:
        raise DataError(f"train_y has a single class ({classes.tolist()}); a probe needs at least two.")
    seen = np.isin(yte, classes)
    n_dropped = int((~seen).sum())
    if n_dropped:
        missing = sorted({str(v) for v in yte[~seen]})
        if unseen == "error":
            raise DataError(
                f"test_y has labels never seen in training: {missing[:10]} ({n_dropped} samples); "
                "pass unseen='drop' to score without them, or re-split."
            )
        Xte, yte = Xte[seen], yte[seen]
        if yte.size == 0:
            raise DataError("no test sample has a label seen in training.")
    scaler = StandardScaler().fit(Xtr)
    clf = LogisticRegression(C=C, max_iter=int(max_iter), class_weight=class_weight, random_state=seed)
    clf.fit(scaler.transform(Xtr), ytr)
    Zte = scaler.transform(Xte)
    pred = clf.predict(Zte)
    proba = clf.predict_proba(Zte)
    auroc, n_auroc = _macro_auroc(yte, proba, clf.classes_)
    majority = classes[np.argmax(counts)]
    with warnings.catch_warnings():  # "y_pred contains classes not in y_true" is expected here
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(yte, pred))
    return {
        "accuracy": float(accuracy_score(yte, pred)),
        "balanced_accuracy": balanced,
        "macro_f1": float(f1_score(yte, pred, average="macro", zero_division=0)),
        "macro_auroc": auroc,
        "n_auroc_classes": n_auroc,
        "chance_majority": float(np.mean(yte == majority)),
        "chance_uniform": 1.0 / classes.size,
        "n_classes": int(classes.size),
        "classes": [c.item() if hasattr(c, "item") else c for c in classes],
        "n_train": len(Xtr),
        "n_test": len(Xte),
        "n_dropped_unseen": n_dropped,
    }
