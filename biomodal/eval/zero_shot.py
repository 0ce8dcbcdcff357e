"""Zero-shot classification by prompts: class embeddings from several prompts, AUROC per class.

As in CLIP and the clinical papers that follow it (MoRE, CheXzero), each class is described by
several prompts; their L2-normalised text embeddings are averaged and the mean re-normalised
(the prompt ensemble "in embedding space"), and an item's score for a class is the cosine
similarity of its embedding with that class embedding. Multi-label targets (an ECG with both
``MI`` and ``STTC``) are scored per class; single-label targets also get the accuracy of the
arg-max class.

With *negative* prompts (CheXzero's "{finding}" vs "no {finding}"), a class's score is the
cosine with its positive class embedding minus the cosine with its negative one, so that a
text tower that places "effusion" and "no effusion" close together still ranks items by which
of the two they are nearer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from biomodal.errors import DataError
from biomodal.eval.multilabel import macro_auroc

__all__ = ["class_embeddings", "zero_shot_evaluate", "zero_shot_scores"]


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def class_embeddings(prompt_embeddings: Sequence[Any]) -> np.ndarray:
    """``(C, d)`` unit class embeddings: the mean of each class's unit prompt embeddings, re-normalised.

    Parameters
    ----------
    prompt_embeddings
        One ``(p_c, d)`` array per class (``p_c >= 1`` prompts each).
    """
    out = []
    for c, e in enumerate(prompt_embeddings):
        e = np.asarray(e, np.float64)
        if e.ndim == 1:
            e = e[None]
        if e.ndim != 2 or len(e) == 0:
            raise DataError(f"class {c}: expected (n_prompts, d) prompt embeddings, got shape {e.shape}")
        out.append(_unit(_unit(e).mean(axis=0)))
    dims = {len(v) for v in out}
    if len(dims) != 1:
        raise DataError(f"prompt embeddings of different widths {sorted(dims)}")
    return np.stack(out)


def zero_shot_scores(items: Any, prompt_embeddings: Sequence[Any]) -> np.ndarray:
    """``(n, C)`` cosine similarities of item embeddings ``(n, d)`` with the class embeddings."""
    x = np.asarray(items, np.float64)
    cls = class_embeddings(prompt_embeddings)
    if x.ndim != 2 or x.shape[1] != cls.shape[1]:
        raise DataError(f"item embeddings {x.shape} and class embeddings {cls.shape} differ in width")
    return _unit(x) @ cls.T


def zero_shot_evaluate(
    items: Any,
    prompt_embeddings: Mapping[str, Any] | Sequence[Any],
    y: Any,
    *,
    names: Sequence[str] | None = None,
    negative_embeddings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score items against class prompts and compare with their labels.

    Parameters
    ----------
    items
        ``(n, d)`` item embeddings (rows with NaN, an item missing the modality, are left out).
    prompt_embeddings
        ``{class name: (p_c, d)}`` or a sequence in class order.
    y
        ``(n, C)`` 0/1 matrix (multi-label) or ``(n,)`` integer codes (single-label;
        ``-1``: unlabelled, left out).
    names
        Class names when ``prompt_embeddings`` is a sequence.
    negative_embeddings
        ``{class name: (q_c, d)}`` embeddings of negative prompts ("no pleural effusion") for
        some classes: their score becomes the positive cosine minus the negative one.

    Returns
    -------
    dict
        :func:`~biomodal.eval.multilabel.macro_auroc` (``macro_auroc``, ``per_class``...), plus
        ``accuracy`` and ``chance_accuracy`` (``1 / C``) for single-label targets, and
        ``multilabel``.
    """
    if isinstance(prompt_embeddings, Mapping):
        names = list(prompt_embeddings)
        prompt_embeddings = [prompt_embeddings[k] for k in names]
    x = np.asarray(items, np.float64)
    y = np.asarray(y)
    if len(y) != len(x):
        raise DataError(f"{len(y)} targets for {len(x)} items")
    keep = np.isfinite(x).all(axis=1)
    single = y.ndim == 1
    if single:
        keep &= y.astype(np.int64) >= 0
    scores = zero_shot_scores(x[keep], prompt_embeddings)
    for name, neg in (negative_embeddings or {}).items():
        if names is None or name not in names:
            raise DataError(f"negative prompts for {name!r}, which is not a class {list(names or [])}")
        scores[:, list(names).index(name)] -= zero_shot_scores(x[keep], [neg])[:, 0]
    out = macro_auroc(y[keep], scores, names)
    out["multilabel"] = not single
    out["n_left_out"] = int((~keep).sum())
    if single:
        out["accuracy"] = (
            float((scores.argmax(1) == y[keep].astype(np.int64)).mean()) if keep.any() else float("nan")
        )
        out["chance_accuracy"] = 1.0 / scores.shape[1]
    return out
