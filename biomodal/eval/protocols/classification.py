"""``classification``: class labels of held-out items from embeddings, a model's classifier and baselines.

Every method is fitted on the training split only and scored on the held-out split:

* ``probe``: a logistic regression on the concatenated embeddings of ``modalities``
  (standardised with training statistics; ``C`` chosen by 5-fold cross-validation on the
  training items when ``C: cv``); ``probe_<modality>``: the same on one embedding;
* ``fusion``: the model's own classifier, when the runner or family supplies its class
  probabilities as the feature named by ``predictions`` (e.g. M3CoL's fusion head);
* baselines (``baselines``, family features such as ``raw``: the standardised input features):
  the same logistic regression on their concatenation (``<name>_concat``, early fusion) and on
  each modality alone (``<name>_<modality>``).

The headline ``accuracy``, ``f1`` and ``auroc`` come from ``fusion`` when it is available and
from ``probe`` otherwise (``source`` says which). Binary tasks: ``f1`` is the F1 of the positive
class (the last class in code order unless ``positive`` names one) and ``auroc`` its ROC AUC;
multiclass: ``f1`` is the weighted F1 (``f1_weighted``) beside ``f1_macro``, and ``auroc`` the
macro one-vs-rest AUROC. Rows without a label, and test rows whose class never occurs in
training, are left out (counted in ``n_dropped``). NaN embedding rows (a modality missing for
an item) are imputed with the training mean of each column.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from biomodal.errors import ConfigError, DataError
from biomodal.eval.protocols.base import EvalContext, ProtocolConfig, ProtocolResult, register_protocol

__all__ = ["ClassificationConfig", "classification_scores", "probe_proba"]

log = logging.getLogger("biomodal")


class ClassificationConfig(ProtocolConfig):
    """Parameters of ``classification``.

    Attributes
    ----------
    label
        ``obs`` column to predict (default: the family's first label column).
    modalities
        Embeddings concatenated for ``probe`` (default: every modality of the model).
    per_modality
        Also probe each modality's embedding alone (and each baseline modality alone).
    C
        Inverse L2 penalty of the logistic regressions, or ``"cv"``: chosen among 13 values in
        ``[1e-4, 1e2]`` by stratified 5-fold cross-validation (log-loss) on training items.
    class_weight
        ``"balanced"`` or ``"none"``.
    baselines
        Feature names the context supplies (``raw``: the family's standardised inputs;
        ``untrained``: the architecture at initialisation).
    predictions
        Feature holding the model's own class probabilities ``(n, n_classes)``, columns in
        label-code order; skipped when the context has no such feature.
    positive
        Positive class of binary F1 and AUROC (default: the last class in code order).
    """

    label: str | None = None
    modalities: list[str] | None = None
    per_modality: bool = True
    C: float | Literal["cv"] = "cv"
    class_weight: Literal["balanced", "none"] = "none"
    baselines: list[str] = Field(default_factory=lambda: ["raw"])
    predictions: str | None = "predictions"
    positive: str | None = None


def _impute(train: Any, test: Any) -> tuple[Any, Any]:
    import numpy as np

    train, test = np.asarray(train, np.float64), np.asarray(test, np.float64)
    with np.errstate(all="ignore"):
        mean = np.nanmean(np.where(np.isfinite(train), train, np.nan), axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    fix = lambda a: np.where(np.isfinite(a), a, mean)  # noqa: E731
    return fix(train), fix(test)


def probe_proba(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    n_classes: int,
    *,
    C: float | str = "cv",
    class_weight: str = "none",
    seed: int = 0,
) -> Any:
    """Test-item class probabilities ``(n_test, n_classes)`` of a logistic regression.

    Features are imputed (training means) and standardised with training statistics; the
    model is fitted on the training items only. Columns follow the integer codes
    ``0..n_classes-1`` of ``train_y``; a class absent from training gets probability 0.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    xtr, xte = _impute(train_x, test_x)
    scaler = StandardScaler().fit(xtr)
    xtr, xte = scaler.transform(xtr), scaler.transform(xte)
    y = np.asarray(train_y, np.int64)
    cw = None if class_weight == "none" else "balanced"
    if C == "cv":
        folds = int(min(5, np.bincount(y).min()))
        if folds < 2:
            raise DataError("classification: C='cv' needs >= 2 training items of every class")
        clf: Any = LogisticRegressionCV(
            Cs=np.logspace(-4, 2, 13),
            cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
            scoring="neg_log_loss",
            l1_ratios=(0.0,),
            use_legacy_attributes=False,
            class_weight=cw,
            max_iter=5000,
        )
    else:
        clf = LogisticRegression(C=float(C), class_weight=cw, max_iter=5000)
    clf.fit(xtr, y)
    out = np.zeros((len(xte), n_classes))
    out[:, clf.classes_] = clf.predict_proba(xte)
    return out


def classification_scores(
    y_true: Any, proba: Any, n_classes: int, *, positive: int | None = None
) -> dict[str, Any]:
    """Accuracy, F1 and AUROC of class probabilities against integer labels.

    Parameters
    ----------
    y_true
        ``(n,)`` integer codes.
    proba
        ``(n, n_classes)`` probabilities (or scores); the prediction is the arg-max.
    n_classes
        Number of classes; 2 is the binary case.
    positive
        Code of the positive class of binary F1/AUROC (default ``n_classes - 1``).

    Returns
    -------
    dict
        ``accuracy``, ``balanced_accuracy``, ``f1`` (binary F1, or weighted F1), ``auroc``
        (NaN when the test items hold one class only), ``n``; multiclass also ``f1_weighted``
        and ``f1_macro``.
    """
    import numpy as np
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

    y, p = np.asarray(y_true, np.int64), np.asarray(proba, np.float64)
    if p.ndim != 2 or p.shape != (len(y), n_classes):
        raise DataError(f"classification: probabilities of shape {p.shape}, expected ({len(y)}, {n_classes})")
    pred = p.argmax(axis=1)
    out: dict[str, Any] = {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "n": len(y),
    }
    if n_classes == 2:
        pos = 1 if positive is None else int(positive)
        out["f1"] = float(f1_score(y, pred, pos_label=pos, average="binary", zero_division=0))
        both = len(np.unique(y)) == 2
        out["auroc"] = float(roc_auc_score(y == pos, p[:, pos])) if both else float("nan")
        return out
    labels = list(range(n_classes))
    out["f1_weighted"] = float(f1_score(y, pred, labels=labels, average="weighted", zero_division=0))
    out["f1_macro"] = float(f1_score(y, pred, labels=labels, average="macro", zero_division=0))
    out["f1"] = out["f1_weighted"]
    aucs = [roc_auc_score(y == c, p[:, c]) for c in labels if 0 < (y == c).sum() < len(y)]
    out["auroc"] = float(np.mean(aucs)) if aucs else float("nan")
    return out


def _labels(ctx: EvalContext, lab: str) -> tuple[list[str], Any, Any, Any, Any]:
    """Classes in code order, codes of train/test items (``-1``: left out), kept masks."""
    import numpy as np
    import pandas as pd

    tr, te = ctx.obs["train"], ctx.obs[ctx.split]
    for split, obs in (("train", tr), (ctx.split, te)):
        if lab not in obs:
            raise ConfigError(
                f"classification: label column {lab!r} is not in obs of split {split!r}; "
                f"columns: {list(obs.columns)}"
            )
    col = tr[lab]
    present = lambda s: s.notna().to_numpy() & (s.astype(str).to_numpy() != "")  # noqa: E731
    if isinstance(col.dtype, pd.CategoricalDtype):
        classes = [str(c) for c in col.cat.categories]
    else:
        classes = sorted({str(v) for v in col[present(col)]})
    code = {c: i for i, c in enumerate(classes)}
    ytr = np.array([code.get(str(v), -1) if ok else -1 for v, ok in zip(col, present(col))], np.int64)
    yte = np.array([code.get(str(v), -1) if ok else -1 for v, ok in zip(te[lab], present(te[lab]))], np.int64)
    unseen = sorted({str(v) for v, ok in zip(te[lab], present(te[lab])) if ok and str(v) not in code})
    if unseen:
        log.warning(
            "classification: test classes %s never occur in training; those items are left out", unseen
        )
    return classes, ytr, yte, ytr >= 0, yte >= 0


def _run(ctx: EvalContext, cfg: ClassificationConfig) -> ProtocolResult:
    import numpy as np

    lab = cfg.label or (ctx.label_keys[0] if ctx.label_keys else None)
    if lab is None:
        raise ConfigError(
            "classification: the data have no label column; set eval.protocols.classification.label"
        )
    mods = list(cfg.modalities or ctx.modalities)
    ctx.check_modalities(mods, "eval.protocols.classification.modalities")
    classes, ytr, yte, ktr, kte = _labels(ctx, lab)
    k = len(classes)
    if len(set(ytr[ktr])) < 2:
        raise DataError(f"classification: the training items of {lab!r} hold fewer than 2 classes")
    pos = None
    if cfg.positive is not None:
        if cfg.positive not in classes:
            raise ConfigError(f"classification.positive {cfg.positive!r} is not a class; classes: {classes}")
        pos = classes.index(cfg.positive)
    fit = dict(C=cfg.C, class_weight=cfg.class_weight)

    def probe(train: Any, test: Any) -> dict[str, Any]:
        proba = probe_proba(np.asarray(train)[ktr], ytr[ktr], np.asarray(test)[kte], k, **fit)
        return classification_scores(yte[kte], proba, k, positive=pos)

    def cat(get: Any, split: str, names: Sequence[str]) -> Any:
        return np.concatenate([np.asarray(get(split, m), np.float64) for m in names], axis=1)

    methods: dict[str, dict[str, Any]] = {
        "probe": probe(cat(ctx.emb, "train", mods), cat(ctx.emb, ctx.split, mods))
    }
    if cfg.per_modality and len(mods) > 1:
        for m in mods:
            methods[f"probe_{m}"] = probe(ctx.emb("train", m), ctx.emb(ctx.split, m))
    if cfg.predictions and cfg.predictions in ctx.features:
        proba = np.asarray(ctx.feature(cfg.predictions, ctx.split, "joint"), np.float64)
        methods["fusion"] = classification_scores(yte[kte], proba[kte], k, positive=pos)
    for name in cfg.baselines:
        if name not in ctx.features:
            log.warning(
                "classification: baseline %r is not available here (have %s); skipped",
                name,
                sorted(ctx.features),
            )
            continue
        feat = lambda s, m, n=name: ctx.feature(n, s, m)  # noqa: E731
        methods[f"{name}_concat"] = probe(cat(feat, "train", mods), cat(feat, ctx.split, mods))
        if cfg.per_modality and len(mods) > 1:
            for m in mods:
                methods[f"{name}_{m}"] = probe(feat("train", m), feat(ctx.split, m))
    source = "fusion" if "fusion" in methods else "probe"
    head = methods[source]
    majority = int(np.bincount(ytr[ktr], minlength=k).argmax())
    out: dict[str, Any] = {
        key: head[key] for key in ("accuracy", "f1", "auroc", "f1_weighted", "f1_macro") if key in head
    }
    out.update(
        source=source,
        label=lab,
        classes=classes,
        positive=classes[k - 1 if pos is None else pos] if k == 2 else None,
        n_train=int(ktr.sum()),
        n_test=int(kte.sum()),
        n_dropped=int((~kte).sum()),
        chance_majority=float(np.mean(yte[kte] == majority)),
        methods=methods,
    )
    return ProtocolResult(out)


def _headline(cfg: Any, metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    cols = [
        ("classification.accuracy", "acc"),
        ("classification.f1", "F1"),
        ("classification.auroc", "AUROC"),
    ]
    methods = metrics.get("classification", {}).get("methods", {})
    for name in ("probe", *(f"{b}_concat" for b in cfg.baselines)):
        if name in methods and name != metrics["classification"].get("source"):
            cols += [
                (f"classification.methods.{name}.accuracy", f"{name} acc"),
                (f"classification.methods.{name}.auroc", f"{name} AUROC"),
            ]
    return cols


def _markdown(section: Mapping[str, Any]) -> list[str]:
    nan = float("nan")
    lines = [
        f"| classification: {section.get('label')} ({section.get('n_test')} held out) | accuracy | F1 | "
        "AUROC |",
        "|---|---|---|---|",
    ]
    for name, r in section.get("methods", {}).items():
        star = " (headline)" if name == section.get("source") else ""
        lines.append(
            f"| {name}{star} | {r.get('accuracy', nan):.3f} | {r.get('f1', nan):.3f} | "
            f"{r.get('auroc', nan):.3f} |"
        )
    lines.append(f"| chance (majority class) | {section.get('chance_majority', nan):.3f} | | 0.500 |")
    return lines


register_protocol(
    "classification",
    config=ClassificationConfig,
    headline=_headline,
    markdown=_markdown,
    needs_untrained=True,
)(_run)
