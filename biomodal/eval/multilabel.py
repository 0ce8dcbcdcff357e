"""Per-class and macro AUROC for multi-label (and single-label) targets, and a multi-label linear probe.

A multi-label target is an ``(n, C)`` 0/1 matrix (an ECG can be both ``MI`` and ``STTC``); a
single-label target is ``(n,)`` integer codes, scored one class against the rest. Classes with
only one value among the scored items have no AUROC (NaN); the macro average is the mean over
the classes that have one, and ``n_classes_scored`` says how many that was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from biomodal.errors import DataError

__all__ = ["as_indicator", "macro_auroc", "multilabel_probe"]


def as_indicator(y: Any, n_classes: int) -> np.ndarray:
    """``(n, C)`` 0/1 matrix of a target: integer codes ``(n,)`` one-hot (``-1``: all zero), or as is."""
    y = np.asarray(y)
    if y.ndim == 1:
        codes = y.astype(np.int64)
        if codes.size and codes.max() >= n_classes:
            raise DataError(f"label codes up to {int(codes.max())} for {n_classes} classes")
        out = np.zeros((len(codes), n_classes), np.int8)
        ok = codes >= 0
        out[np.flatnonzero(ok), codes[ok]] = 1
        return out
    if y.ndim != 2 or y.shape[1] != n_classes:
        raise DataError(f"expected a (n, {n_classes}) 0/1 target matrix or (n,) codes, got shape {y.shape}")
    return (y > 0.5).astype(np.int8)


def macro_auroc(y: Any, scores: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """AUROC of every class and their macro average.

    Parameters
    ----------
    y
        ``(n, C)`` 0/1 matrix (multi-label) or ``(n,)`` integer codes (single-label, one vs rest).
    scores
        ``(n, C)`` scores, higher = more likely (probabilities, similarities, logits).
    names
        Class names (default ``"0"``, ``"1"``...).

    Returns
    -------
    dict
        ``macro_auroc``, ``per_class`` (``{name: auroc or NaN}``), ``n_classes_scored``,
        ``prevalence`` (``{name: fraction positive}``), ``chance`` (0.5) and ``n``.
    """
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2:
        raise DataError(f"scores must be (n, n_classes), got shape {scores.shape}")
    n, c = scores.shape
    yy = as_indicator(y, c)
    if yy.shape[0] != n:
        raise DataError(f"{yy.shape[0]} targets for {n} score rows")
    names = [str(i) for i in range(c)] if names is None else [str(s) for s in names]
    per: dict[str, float] = {}
    for j, name in enumerate(names):
        col = yy[:, j]
        ok = np.isfinite(scores[:, j])
        if col[ok].min(initial=1) == col[ok].max(initial=0):
            per[name] = float("nan")
        else:
            per[name] = float(roc_auc_score(col[ok], scores[ok, j]))
    valid = [v for v in per.values() if np.isfinite(v)]
    return {
        "macro_auroc": float(np.mean(valid)) if valid else float("nan"),
        "per_class": per,
        "n_classes_scored": len(valid),
        "prevalence": {name: float(yy[:, j].mean()) if n else float("nan") for j, name in enumerate(names)},
        "chance": 0.5,
        "n": int(n),
    }


def multilabel_probe(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    *,
    names: Sequence[str] | None = None,
    C: float = 1.0,
    class_weight: str | None = None,
) -> dict[str, Any]:
    """One logistic regression per class on training items, macro AUROC on the test items.

    Features are imputed (training column means for NaN rows, e.g. an item missing the
    modality) and standardised with training statistics. A class with a single value in
    training gets a constant score (its AUROC is then 0.5 where it can be computed at all).

    Parameters
    ----------
    train_x, test_x
        ``(n, d)`` features.
    train_y, test_y
        ``(n, C)`` 0/1 matrices (or ``(n,)`` codes with ``names`` giving ``C``).
    names
        Class names.
    C
        Inverse L2 penalty.
    class_weight
        ``None`` or ``"balanced"``.

    Returns
    -------
    dict
        :func:`macro_auroc` of the test scores, plus ``n_train``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xtr, xte = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
        raise DataError(f"multilabel_probe: features {xtr.shape} / {xte.shape} do not match")
    n_classes = len(names) if names is not None else np.asarray(train_y).shape[1]
    ytr, yte = as_indicator(train_y, n_classes), as_indicator(test_y, n_classes)
    with np.errstate(all="ignore"):
        mean = np.nanmean(np.where(np.isfinite(xtr), xtr, np.nan), axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    xtr = np.where(np.isfinite(xtr), xtr, mean)
    xte = np.where(np.isfinite(xte), xte, mean)
    scaler = StandardScaler().fit(xtr)
    xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    scores = np.zeros((len(xte), n_classes))
    for j in range(n_classes):
        col = ytr[:, j]
        if col.min() == col.max():
            scores[:, j] = float(col[0])
            continue
        clf = LogisticRegression(C=float(C), class_weight=class_weight, max_iter=5000)
        clf.fit(xtr, col)
        scores[:, j] = clf.decision_function(xte)
    out = macro_auroc(yte, scores, names)
    out["n_train"] = len(xtr)
    return out
