"""Survival evaluation of embeddings: penalised Cox on PCA, held-out concordance, risk groups.

:func:`survival_evaluation` takes training and held-out features (embeddings or raw inputs)
with durations and event indicators:

1. features are imputed (training means), standardised and reduced by PCA, all fitted on the
   training subjects (``n_components=None`` keeps the standardised features);
2. a penalised Cox proportional-hazards model (lifelines ``CoxPHFitter``, ``penalizer`` and
   ``l1_ratio`` as lifelines) is fitted on the training subjects;
3. Harrell's concordance index of the held-out risk scores, with a percentile bootstrap
   confidence interval over held-out subjects;
4. held-out subjects are put in risk groups by the quantiles of the TRAINING risk scores (or
   by k-means clusters of the training PCA space, ``groups="cluster"``); Kaplan-Meier curves
   per group and a log-rank test between groups.

:func:`survival_analysis` is the AnnData interface (``obs`` duration/event/split columns, an ``obsm``
basis). Plots live in :mod:`biomodal.pl.survival`. lifelines is imported inside the functions
(``pip install 'biomodal[omics]'``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from biomodal.errors import DataError, MissingDependencyError

__all__ = ["SurvivalResult", "survival_analysis", "survival_evaluation"]


@dataclass
class SurvivalResult:
    """Outcome of :func:`survival_evaluation`.

    Attributes
    ----------
    metrics
        JSON-ready figures: ``c_index``, ``c_index_ci_low``/``_high`` (``ci_level``),
        ``c_index_train``, ``logrank_p``, ``logrank_statistic``, ``groups`` (size, events and
        median survival per group), ``n_train``, ``n_test``, ``n_events_test``,
        ``n_components``, ``penalizer``.
    risk_test, group_test
        Held-out risk scores (log partial hazard) and group labels.
    curves
        ``{group: (timeline, survival probability)}`` Kaplan-Meier curves of held-out subjects.
    """

    metrics: dict[str, Any]
    risk_test: np.ndarray
    group_test: np.ndarray
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __repr__(self) -> str:
        m = self.metrics
        return (
            f"SurvivalResult(c-index {m['c_index']:.3f} "
            f"[{m['c_index_ci_low']:.3f}, {m['c_index_ci_high']:.3f}], "
            f"log-rank p={m['logrank_p']:.3g}, n_test={m['n_test']})"
        )


def _lifelines() -> Any:
    try:
        import lifelines
    except ImportError as exc:  # pragma: no cover - lifelines is in the clinical extra
        raise MissingDependencyError(
            "survival evaluation needs lifelines: pip install 'biomodal[omics]'"
        ) from exc
    return lifelines


def _check_outcome(time: Any, event: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(time, np.float64).ravel()
    e = np.asarray(event).ravel()
    if e.dtype.kind not in "biuf":
        raise DataError(f"{what}: events must be 0/1 or booleans, got dtype {e.dtype}")
    e = e.astype(np.float64)
    if t.shape != e.shape:
        raise DataError(f"{what}: {t.size} durations but {e.size} events")
    if not np.isfinite(t).all() or (t <= 0).any():
        raise DataError(f"{what}: durations must be finite and > 0 (min {np.nanmin(t)!r})")
    if not np.isin(e, (0.0, 1.0)).all():
        raise DataError(
            f"{what}: events must be 0 (censored) or 1 (event); got {sorted(set(e.tolist()))[:5]}"
        )
    return t, e.astype(bool)


def _concordance(t: np.ndarray, risk: np.ndarray, e: np.ndarray) -> float:
    from lifelines.utils import concordance_index

    try:
        return float(concordance_index(t, -risk, e))  # lifelines scores predicted survival: negate risk
    except ZeroDivisionError:  # no comparable pair (e.g. no event in a bootstrap resample)
        return float("nan")


def survival_evaluation(
    train_x: Any,
    train_time: Any,
    train_event: Any,
    test_x: Any,
    test_time: Any,
    test_event: Any,
    *,
    n_components: int | None = 10,
    penalizer: float = 0.1,
    l1_ratio: float = 0.0,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    n_groups: int = 2,
    groups: str = "risk",
    seed: int = 0,
) -> SurvivalResult:
    """Penalised Cox model on PCA of training features, scored on held-out subjects.

    Parameters
    ----------
    train_x, test_x
        ``(n, d)`` features (NaN cells are imputed with training means).
    train_time, test_time
        Durations (> 0), e.g. days to event or censoring.
    train_event, test_event
        1/True for an observed event, 0/False for censoring.
    n_components
        PCA components (capped at ``min(n_train - 1, d)``); ``None``: no PCA.
    penalizer, l1_ratio
        lifelines ``CoxPHFitter`` elastic-net penalty.
    n_bootstrap, ci
        Bootstrap resamples of the held-out subjects and the interval level.
    n_groups
        Risk groups (quantiles of the training risk) or clusters.
    groups
        ``"risk"`` or ``"cluster"`` (k-means on the training PCA space).
    seed
        Seed of the bootstrap and of k-means.

    Returns
    -------
    SurvivalResult
        Metrics, held-out risks and groups, Kaplan-Meier curves.
    """
    _lifelines()
    import pandas as pd
    from lifelines import CoxPHFitter, KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    ttr, etr = _check_outcome(train_time, train_event, "training outcome")
    tte, ete = _check_outcome(test_time, test_event, "held-out outcome")
    xtr, xte = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
        raise DataError(f"features must be (n, d) with equal d; got {xtr.shape} and {xte.shape}")
    if len(xtr) != len(ttr) or len(xte) != len(tte):
        raise DataError(f"{len(xtr)}/{len(xte)} feature rows for {len(ttr)}/{len(tte)} outcomes")
    if etr.sum() < 2:
        raise DataError(f"the training subjects hold {int(etr.sum())} events; a Cox model needs several")
    if groups not in ("risk", "cluster"):
        raise DataError(f"groups={groups!r}; expected 'risk' or 'cluster'")
    mean = np.nanmean(np.where(np.isfinite(xtr), xtr, np.nan), axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    xtr, xte = (np.where(np.isfinite(a), a, mean) for a in (xtr, xte))
    scaler = StandardScaler().fit(xtr)
    ztr, zte = scaler.transform(xtr), scaler.transform(xte)
    k = None
    if n_components is not None:
        k = int(max(1, min(n_components, len(ztr) - 1, ztr.shape[1])))
        pca = PCA(n_components=k, random_state=seed).fit(ztr)
        ztr, zte = pca.transform(ztr), pca.transform(zte)
    cols = [f"c{j}" for j in range(ztr.shape[1])]
    frame = pd.DataFrame(ztr, columns=cols).assign(_T=ttr, _E=etr.astype(int))
    cph = CoxPHFitter(penalizer=penalizer, l1_ratio=l1_ratio).fit(frame, "_T", "_E")
    risk_tr = np.asarray(cph.predict_log_partial_hazard(pd.DataFrame(ztr, columns=cols)), np.float64)
    risk_te = np.asarray(cph.predict_log_partial_hazard(pd.DataFrame(zte, columns=cols)), np.float64)
    c_index = _concordance(tte, risk_te, ete)
    rng = np.random.default_rng(seed)
    boot = np.array(
        [
            _concordance(tte[i], risk_te[i], ete[i])
            for i in (rng.integers(0, len(tte), len(tte)) for _ in range(int(n_bootstrap)))
        ]
    )
    boot = boot[np.isfinite(boot)]
    lo, hi = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2]) if boot.size else (np.nan, np.nan)
    if groups == "risk":
        edges = np.quantile(risk_tr, np.linspace(0, 1, n_groups + 1)[1:-1])
        gid = np.searchsorted(edges, risk_te, side="right")
        names = ["low risk", "high risk"] if n_groups == 2 else [f"risk q{j + 1}" for j in range(n_groups)]
    else:
        from sklearn.cluster import KMeans

        km = KMeans(n_clusters=n_groups, n_init=10, random_state=seed).fit(ztr)
        gid = km.predict(zte)
        names = [f"cluster {j}" for j in range(n_groups)]
    label = np.array([names[g] for g in gid], dtype=object)
    metrics: dict[str, Any] = {
        "c_index": c_index,
        "c_index_ci_low": float(lo),
        "c_index_ci_high": float(hi),
        "ci_level": ci,
        "n_bootstrap": int(boot.size),
        "c_index_train": _concordance(ttr, risk_tr, etr),
        "n_train": len(ttr),
        "n_test": len(tte),
        "n_events_train": int(etr.sum()),
        "n_events_test": int(ete.sum()),
        "n_components": k,
        "penalizer": penalizer,
        "groups_by": groups,
    }
    present = sorted(set(label.tolist()), key=names.index)
    if len(present) > 1 and ete.sum() > 0:
        lr = multivariate_logrank_test(tte, label, ete)
        metrics["logrank_p"], metrics["logrank_statistic"] = float(lr.p_value), float(lr.test_statistic)
    else:
        metrics["logrank_p"], metrics["logrank_statistic"] = float("nan"), float("nan")
    curves, per_group = {}, {}
    for g in present:
        sel = label == g
        kmf = KaplanMeierFitter().fit(tte[sel], ete[sel])
        sf = kmf.survival_function_.iloc[:, 0]
        curves[g] = (sf.index.to_numpy(np.float64), sf.to_numpy(np.float64))
        med = float(kmf.median_survival_time_)
        per_group[g] = {"n": int(sel.sum()), "events": int(ete[sel].sum()), "median_survival": med}
    metrics["groups"] = per_group
    return SurvivalResult(metrics, risk_te, label, curves)


def survival_analysis(
    adata: Any,
    *,
    basis: str = "X_pca",
    duration_key: str = "time",
    event_key: str = "event",
    split_key: str = "split",
    train: str = "train",
    test: str = "test",
    key_added: str = "survival",
    copy: bool = False,
    **kwargs: Any,
) -> Any:
    """AnnData interface of :func:`survival_evaluation` (scanpy style).

    Parameters
    ----------
    adata
        Subjects in rows; ``obs`` holds durations, events and the split; ``basis`` is an
        ``obsm`` key (``"X_biomodal_expression"``, ``"X_pca"``) or ``"X"``.
    duration_key, event_key, split_key
        ``obs`` columns; rows whose split is ``train`` fit, rows whose split is ``test`` are
        scored; rows with missing duration or event are left out.
    key_added
        Results go to ``uns[key_added]`` (metrics) and ``obs[key_added + "_risk"]`` /
        ``obs[key_added + "_group"]`` (held-out rows; NaN elsewhere).
    copy
        Work on a copy and return it (otherwise modify ``adata`` and return ``None``).
    **kwargs
        Passed to :func:`survival_evaluation` (``n_components``, ``penalizer``, ``n_bootstrap``...).
    """
    import pandas as pd

    adata = adata.copy() if copy else adata
    for key in (duration_key, event_key, split_key):
        if key not in adata.obs:
            raise DataError(f"obs has no column {key!r}; columns: {list(adata.obs.columns)}")
    if basis == "X":
        x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    elif basis in adata.obsm:
        x = np.asarray(adata.obsm[basis])
    else:
        raise DataError(f"basis {basis!r} is neither 'X' nor an obsm key; obsm has {list(adata.obsm)}")
    obs = adata.obs
    ok = obs[duration_key].notna().to_numpy() & obs[event_key].notna().to_numpy()
    split = obs[split_key].astype(str).to_numpy()
    tr, te = ok & (split == train), ok & (split == test)
    if not tr.any() or not te.any():
        raise DataError(
            f"obs[{split_key!r}] needs rows {train!r} and {test!r} with outcomes; "
            f"have {pd.Series(split[ok]).value_counts().to_dict()}"
        )
    t, e = obs[duration_key].to_numpy(np.float64), obs[event_key].to_numpy()
    res = survival_evaluation(x[tr], t[tr], e[tr], x[te], t[te], e[te], **kwargs)
    risk = np.full(adata.n_obs, np.nan)
    risk[te] = res.risk_test
    group = pd.Series(pd.NA, index=obs.index, dtype=object)
    group[te] = res.group_test
    adata.obs[f"{key_added}_risk"] = risk
    adata.obs[f"{key_added}_group"] = pd.Categorical(group)
    kept = {k: v for k, v in res.metrics.items() if v is not None}  # h5ad cannot store None
    adata.uns[key_added] = {
        **kept,
        "basis": basis,
        "duration_key": duration_key,
        "event_key": event_key,
        "curves": {g: {"time": c[0], "survival": c[1]} for g, c in res.curves.items()},
    }
    return adata if copy else None
