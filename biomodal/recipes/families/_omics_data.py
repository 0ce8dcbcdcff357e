"""Omics subjects in memory: matching tables into subjects, the feature scaler, the dataset.

One :class:`OmicsDataset` holds the subjects of one split: a float matrix per modality (rows
of subjects lacking that modality are zeros, with ``<name>_mask`` False), integer label codes
(``-1``: unlabelled) and an ``obs`` DataFrame. AnnData in and out: :func:`omics_anndata` puts
one DataFrame per modality in ``obsm`` (columns = feature names), :func:`read_omics_anndata`
reads it back, and :meth:`OmicsDataset.to_anndata` adds embeddings as ``obsm['X_<name>']``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from biomodal.errors import CheckpointError, DataError
from biomodal.modalities import mask_key

__all__ = [
    "FeatureScaler",
    "OmicsDataset",
    "match_subjects",
    "omics_anndata",
    "read_omics_anndata",
]

_KINDS = ("standard", "minmax", "none")


class FeatureScaler:
    """Per-feature scaling of one omics modality, fitted on training subjects only.

    ``standard``: ``(x - mean) / std``; ``minmax``: ``(x - min) / (max - min)`` (MOGONET's and
    M3CoL's preprocessing); ``none``: unchanged. Statistics ignore NaN cells and the rows of
    subjects lacking the modality; a constant feature gets scale 1. A NaN cell of a present
    subject is imputed with the training mean (after scaling).

    Parameters
    ----------
    kind
        ``"standard"``, ``"minmax"`` or ``"none"``.

    Attributes
    ----------
    var_names_, center_, scale_, fill_, n_fit_
        Feature names, the subtracted and dividing statistics, the imputed value per feature
        (on the scaled axis) and the number of training subjects fitted on.
    """

    def __init__(self, kind: str = "standard") -> None:
        if kind not in _KINDS:
            raise DataError(f"FeatureScaler: kind={kind!r} not in {_KINDS}")
        self.kind = kind
        self.var_names_: list[str] = []
        self.center_ = np.zeros(0)
        self.scale_ = np.ones(0)
        self.fill_ = np.zeros(0)
        self.n_fit_ = 0

    def fit(self, x: np.ndarray, var_names: Sequence[str]) -> FeatureScaler:
        """Fit on the rows of ``x`` (training subjects that have the modality)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(var_names):
            raise DataError(f"FeatureScaler.fit: x {x.shape} does not match {len(var_names)} feature names")
        if x.shape[0] < 2:
            raise DataError(f"FeatureScaler.fit needs >= 2 training subjects, got {x.shape[0]}")
        mean = _nan_stat(np.nanmean, x)
        if self.kind == "standard":
            center, scale = mean, _nan_stat(np.nanstd, x)
        elif self.kind == "minmax":
            center = _nan_stat(np.nanmin, x)
            scale = _nan_stat(np.nanmax, x) - center
        else:
            center, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
        scale = np.where(scale > 1e-12, scale, 1.0)
        self.var_names_ = [str(v) for v in var_names]
        self.center_, self.scale_ = center, scale
        self.fill_ = (mean - center) / scale
        self.n_fit_ = int(x.shape[0])
        return self

    def transform(
        self, x: np.ndarray, var_names: Sequence[str] | None = None, where: str = "table"
    ) -> np.ndarray:
        """Scale ``x``; with ``var_names`` its columns are first put in the fitted order by name."""
        x = np.asarray(x, dtype=np.float64)
        if var_names is not None and list(var_names) != self.var_names_:
            pos = {str(v): j for j, v in enumerate(var_names)}
            missing = [v for v in self.var_names_ if v not in pos]
            if missing and len(var_names) == len(self.var_names_) and all(":" in str(v) for v in var_names):
                missing = []  # unnamed columns (no header, no feature file): positional
            elif missing:
                raise DataError(
                    f"{where}: {len(missing)} of the {len(self.var_names_)} fitted features are missing, "
                    f"e.g. {missing[:5]}"
                )
            else:
                x = x[:, [pos[v] for v in self.var_names_]]
        if x.ndim != 2 or x.shape[1] != len(self.var_names_):
            raise DataError(f"{where}: {x.shape[-1]} features, expected {len(self.var_names_)} as fitted")
        out = (x - self.center_) / self.scale_
        out = np.where(np.isnan(out), self.fill_, out)
        return out.astype(np.float32)

    def input_spec(self) -> dict[str, Any]:
        """Return what the encoder of this modality is built with: ``{"in_features": n}``."""
        return {"in_features": len(self.var_names_)}

    def state_dict(self) -> dict[str, Any]:
        """Plain-python state (safe in a ``weights_only`` checkpoint)."""
        return {
            "kind": self.kind,
            "var_names": list(self.var_names_),
            "center": self.center_.tolist(),
            "scale": self.scale_.tolist(),
            "fill": self.fill_.tolist(),
            "n_fit": self.n_fit_,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], name: str = "?") -> FeatureScaler:
        """Inverse of :meth:`state_dict`; a :class:`CheckpointError` naming the modality when malformed."""
        try:
            out = cls(str(state["kind"]))
            out.var_names_ = [str(v) for v in state["var_names"]]
            out.center_, out.scale_, out.fill_ = (
                np.asarray(state[k], np.float64) for k in ("center", "scale", "fill")
            )
            out.n_fit_ = int(state.get("n_fit", 0))
        except (KeyError, TypeError, ValueError, DataError) as exc:
            raise CheckpointError(
                f"checkpoint modality {name!r}: feature scaler state is malformed ({exc!r})"
            ) from exc
        if not (len(out.var_names_) == out.center_.size == out.scale_.size == out.fill_.size):
            raise CheckpointError(f"checkpoint modality {name!r}: feature scaler arrays disagree in length")
        return out

    def __repr__(self) -> str:
        return (
            f"FeatureScaler({self.kind}, {len(self.var_names_)} features, fitted on {self.n_fit_} subjects)"
        )


def _nan_stat(fn: Any, x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = fn(x, axis=0)
    return np.where(np.isnan(out), 0.0, out)


def match_subjects(
    tables: Mapping[str, Any], *, match: str, source: str
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Subject ids and, per table key, the row of each subject in that table (``-1``: absent).

    Parameters
    ----------
    tables
        ``{key: Table}`` of one source (the training or the test files); the key names the
        table in messages (``data.modalities.mrna.train``).
    match
        ``"id"``: every table must carry subject ids; ``"order"``: row ``i`` of every table is
        subject ``i`` (tables must have equal row counts); ``"auto"``: ids when every table has
        them, row order when none has, an error when only some have.
    source
        ``"train"`` or ``"test"``: prefix of generated ids (``train_0000``).
    """
    with_ids = [f"{k} ({t.path.name})" for k, t in tables.items() if t.ids is not None]
    without = [f"{k} ({t.path.name})" for k, t in tables.items() if t.ids is None]
    if match == "auto":
        if with_ids and without:
            raise DataError(
                f"{', '.join(without)} have no subject ids but {', '.join(with_ids)} do: give an id column "
                "in every table or in none (row order), or set data.match: order"
            )
        match = "id" if with_ids else "order"
    if match == "id":
        if without:
            raise DataError(f"data.match is 'id' but {', '.join(without)} have no subject id column")
        ids: list[str] = []
        seen: set[str] = set()
        for t in tables.values():
            for s in t.ids:
                if s not in seen:
                    seen.add(s)
                    ids.append(s)
        rows = {}
        for k, t in tables.items():
            pos = {s: i for i, s in enumerate(t.ids)}
            rows[k] = np.array([pos.get(s, -1) for s in ids], dtype=np.int64)
        return ids, rows
    counts = {k: len(t.values) for k, t in tables.items()}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{k} ({tables[k].path.name}): {n}" for k, n in counts.items())
        raise DataError(f"tables matched by row order must have equal row counts; got {detail}")
    n = next(iter(counts.values()))
    first = next((t.ids for t in tables.values() if t.ids is not None), None)
    ids = list(first) if first is not None else [f"{source}_{i:04d}" for i in range(n)]
    return ids, {k: np.arange(n, dtype=np.int64) for k in tables}


class OmicsDataset:
    """Subjects of one split: one matrix per modality, presence masks, label codes, ``obs``.

    Items are batch dicts ``{<name>: float32 (p,), <name>_mask: bool (only for modalities some
    subject lacks), "label": int64 (-1 unlabelled), "index": int64}``.

    Parameters
    ----------
    x
        ``{modality: (n, p) float32}`` scaled features; rows of absent subjects are ignored.
    present
        ``{modality: (n,) bool}``.
    labels
        ``(n,)`` integer class codes (``-1``: unlabelled).
    obs
        Per-subject metadata (``subject``, ``split``, label names...), index = subject ids.
    var_names
        ``{modality: feature names}``.
    """

    def __init__(
        self,
        x: Mapping[str, np.ndarray],
        present: Mapping[str, np.ndarray],
        labels: np.ndarray,
        obs: Any,
        var_names: Mapping[str, Sequence[str]],
    ) -> None:
        import torch

        n = len(obs)
        for m, v in x.items():
            if v.shape[0] != n or present[m].shape != (n,):
                raise DataError(f"OmicsDataset: modality {m!r} has {v.shape[0]} rows for {n} subjects")
        self.modalities = tuple(x)
        self.present = {m: np.asarray(present[m], bool) for m in x}
        self.var_names = {m: list(var_names[m]) for m in x}
        self.obs = obs
        self.labels = np.asarray(labels, np.int64)
        self._x = {
            m: torch.as_tensor(np.where(self.present[m][:, None], x[m], 0.0).astype(np.float32)) for m in x
        }
        self._masks = {m: torch.as_tensor(p) for m, p in self.present.items() if not p.all()}
        self._labels = torch.as_tensor(self.labels)

    def __len__(self) -> int:
        return len(self.obs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        item: dict[str, Any] = {m: v[i] for m, v in self._x.items()}
        item.update({mask_key(m): v[i] for m, v in self._masks.items()})
        item["label"] = self._labels[i]
        item["index"] = torch.tensor(i)
        return item

    def features(self, modality: str) -> np.ndarray:
        """Scaled features of ``modality``, ``(n, p)`` float32, NaN rows for absent subjects."""
        if modality not in self._x:
            raise DataError(f"no omics modality {modality!r} here; have {list(self.modalities)}")
        out = self._x[modality].numpy().copy()
        out[~self.present[modality]] = np.nan
        return out

    def to_anndata(self, embeddings: Mapping[str, np.ndarray] | None = None) -> Any:
        """Return an AnnData of these subjects (scaled features and embeddings in ``obsm``).

        ``obsm[<name>]`` holds each modality's scaled features as a DataFrame (NaN rows where a
        subject lacks it) and ``obsm['X_biomodal_<name>']`` the given embeddings.
        """
        adata = omics_anndata({m: self.features(m) for m in self.modalities}, self.obs, self.var_names)
        for m, z in (embeddings or {}).items():
            adata.obsm[f"X_biomodal_{m}"] = np.asarray(z, np.float32)
        return adata

    def __repr__(self) -> str:
        dims = ", ".join(f"{m}={len(v)}" for m, v in self.var_names.items())
        missing = {m: int((~p).sum()) for m, p in self.present.items() if not p.all()}
        labelled = int((self.labels >= 0).sum())
        return (
            f"OmicsDataset({len(self)} subjects, {labelled} labelled; features {dims}; "
            f"missing {missing or 'none'})"
        )


def omics_anndata(
    tables: Mapping[str, Any], obs: Any = None, var_names: Mapping[str, Sequence[str]] | None = None
) -> Any:
    """Multi-omics AnnData: ``obsm[<modality>]`` is a DataFrame (subjects x features).

    Parameters
    ----------
    tables
        ``{modality: DataFrame or (n, p) array}``; a subject lacking a modality has an all-NaN row.
    obs
        Per-subject metadata (index = subject ids); default: the first DataFrame's index.
    var_names
        Feature names of array tables (default ``<modality>:<j>``).
    """
    import anndata as ad
    import pandas as pd

    frames = {}
    for m, t in tables.items():
        if isinstance(t, pd.DataFrame):
            frames[m] = t
        else:
            names = list((var_names or {}).get(m) or [f"{m}:{j}" for j in range(np.shape(t)[1])])
            frames[m] = pd.DataFrame(np.asarray(t, np.float32), columns=names)
    if obs is None:
        first = next(iter(frames.values()))
        obs = pd.DataFrame(index=[str(i) for i in first.index])
    obs = obs.copy()
    obs.index = obs.index.astype(str)
    for m, f in frames.items():
        if len(f) != len(obs):
            raise DataError(f"omics_anndata: table {m!r} has {len(f)} rows for {len(obs)} subjects")
        frames[m] = pd.DataFrame(f.to_numpy(np.float32), index=obs.index, columns=[str(c) for c in f.columns])
    return ad.AnnData(np.zeros((len(obs), 0), np.float32), obs=obs, obsm=frames)


def read_omics_anndata(adata: Any, modalities: Sequence[str], where: str = "AnnData") -> dict[str, Any]:
    """``{modality: DataFrame}`` from ``obsm`` of a multi-omics AnnData (see :func:`omics_anndata`)."""
    import pandas as pd

    out = {}
    for m in modalities:
        if m not in adata.obsm:
            continue
        v = adata.obsm[m]
        out[m] = v if isinstance(v, pd.DataFrame) else pd.DataFrame(np.asarray(v), index=adata.obs_names)
    if not out:
        raise DataError(
            f"{where}: obsm holds none of the model's modalities {list(modalities)}; has {list(adata.obsm)}"
        )
    return out
