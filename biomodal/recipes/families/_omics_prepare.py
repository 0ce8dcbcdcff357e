"""From an omics ``data:`` config to subjects with splits: read, match, label, split.

:func:`read_source` reads every table of the training (or test) files and matches them into
subjects; :func:`split_subjects` assigns ``train`` / ``val`` / ``test`` by subject, stratified
by label and seeded, never looking at feature values.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from biomodal.errors import DataError

__all__ = ["Subjects", "read_source", "split_subjects"]

log = logging.getLogger("biomodal")


@dataclass
class Subjects:
    """Matched subjects of one or more sources.

    Attributes
    ----------
    obs
        DataFrame indexed by subject id: ``subject``, ``source`` (``train``/``test`` files),
        ``_label`` (raw label, ``""`` when unlabelled), ``<modality>_present`` and the columns
        of the ``obs`` table; :func:`split_subjects` adds ``split`` and ``_code``.
    x
        ``{modality: (n, p) float64}`` raw values, NaN rows where a subject lacks the modality.
    var_names
        ``{modality: feature names}``.
    """

    obs: Any
    x: dict[str, np.ndarray]
    var_names: dict[str, list[str]]

    def __getitem__(self, key: str) -> Any:
        return self.obs[key]


def read_source(data: Any, source: str) -> Subjects:
    """Read and match the ``source`` (``"train"`` or ``"test"``) tables of an omics config."""
    import pandas as pd

    from biomodal.recipes.families._omics_data import match_subjects
    from biomodal.recipes.families._omics_io import read_labels, read_obs, read_table

    tables: dict[str, Any] = {}
    for m, spec in data.modalities.items():
        key = f"data.modalities.{m}.{source}"
        tables[key] = read_table(
            getattr(spec, source),
            where=key,
            features=spec.features,
            header=spec.header,
            id_column=spec.id_column,
            transpose=spec.transpose,
            layer=spec.layer,
        )
    lab = data.labels
    if lab is not None and getattr(lab, source):
        key = f"data.labels.{source}"
        tables[key] = read_labels(
            getattr(lab, source), where=key, column=lab.column, header=lab.header, id_column=lab.id_column
        )
    obs_extra = None
    if data.obs is not None and getattr(data.obs, source):
        key = f"data.obs.{source}"
        frame, ids = read_obs(getattr(data.obs, source), where=key, id_column=data.obs.id_column)
        obs_extra = (key, frame)
        tables[key] = _FrameTable(frame, ids, key)
    ids, rows = match_subjects(tables, match=data.match, source=source)
    obs = pd.DataFrame({"subject": ids, "source": source}, index=pd.Index(ids, name="subject_id"))
    x, names = {}, {}
    for m in data.modalities:
        t, r = tables[f"data.modalities.{m}.{source}"], rows[f"data.modalities.{m}.{source}"]
        vals = np.full((len(ids), t.values.shape[1]), np.nan)
        vals[r >= 0] = t.values[r[r >= 0]]
        present = (r >= 0) & ~np.isnan(vals).all(axis=1)
        x[m], names[m] = vals, list(t.columns)
        obs[f"{m}_present"] = present
        if not present.all():
            log.info("omics %s: %d of %d subjects lack %s", source, int((~present).sum()), len(ids), m)
    key = f"data.labels.{source}"
    if key in tables:
        r = rows[key]
        labels = np.where(r >= 0, tables[key].values[np.maximum(r, 0), 0], "")
        obs["_label"] = labels.astype(str)
    else:
        obs["_label"] = ""
    if obs_extra is not None:
        key, frame = obs_extra
        r = rows[key]
        for col in frame.columns:
            if col in obs.columns:
                raise DataError(f"{key}: column {col!r} clashes with a column biomodal sets")
            vals = frame[col].to_numpy()
            obs[col] = pd.Series(vals[np.maximum(r, 0)], index=obs.index).where(r >= 0)
    empty = ~np.column_stack([obs[f"{m}_present"] for m in data.modalities]).any(axis=1)
    if empty.any():
        log.warning("omics %s: %d subjects have no modality at all; dropped", source, int(empty.sum()))
        keep = ~empty
        obs = obs.loc[keep]
        x = {m: v[keep] for m, v in x.items()}
    return Subjects(obs, x, names)


class _FrameTable:
    """An obs table in the shape :func:`match_subjects` expects."""

    def __init__(self, frame: Any, ids: list[str] | None, where: str) -> None:
        from pathlib import Path

        self.values, self.ids, self.where, self.path = frame.to_numpy(), ids, where, Path(where)


def _stratified(idx: np.ndarray, labels: np.ndarray, frac: float, seed: int, what: str) -> np.ndarray:
    """Return the ``frac`` part of ``idx``, stratified by ``labels`` when every item is labelled."""
    from sklearn.model_selection import train_test_split

    if len(idx) < 2:
        raise DataError(f"{what}: only {len(idx)} subjects to split")
    labelled = labels[idx] != ""
    stratify = labels[idx] if labelled.all() else None
    try:
        _, held = train_test_split(idx, test_size=frac, random_state=seed, stratify=stratify)
    except ValueError as exc:
        raise DataError(f"{what}: cannot split {len(idx)} subjects with fraction {frac} ({exc})") from exc
    return np.sort(held)


def split_subjects(
    sources: Mapping[str, Subjects],
    raw_classes: Sequence[str],
    class_names: Sequence[str],
    *,
    holdout: float,
    val_fraction: float,
    seed: int,
    label_key: str = "label",
) -> Subjects:
    """Concatenate the sources and assign ``split`` by subject.

    The test files are the test split; without them ``holdout`` of the training subjects is
    held out (stratified by label). ``val_fraction`` of the remaining labelled training subjects
    validates. Unlabelled subjects always train (contrastive terms use them). The label column
    ``label_key`` is a Categorical of class names in code order; ``_code`` is the integer code
    (``-1``: unlabelled).
    """
    import pandas as pd

    if "test" in sources:
        clash = sorted(set(sources["train"].obs.index) & set(sources["test"].obs.index))
        if clash:
            raise DataError(f"subjects {clash[:5]} appear in both the training and the test files")
    frames = [sources[s] for s in ("train", "test") if s in sources]
    obs = pd.concat([f.obs for f in frames])
    names = frames[0].var_names
    x = {m: np.concatenate([_align(f.x[m], f.var_names[m], names[m], m) for f in frames]) for m in names}
    labels = obs["_label"].to_numpy(dtype=object)
    split = np.where(obs["source"].to_numpy() == "test", "test", "train").astype(object)
    rng_seed = int(seed)
    if "test" not in sources:
        idx = np.flatnonzero(labels != "") if raw_classes else np.arange(len(obs))
        split[_stratified(idx, labels, holdout, rng_seed, "data.holdout")] = "test"
    if val_fraction > 0:
        cand = np.flatnonzero((split == "train") & ((labels != "") if raw_classes else True))
        split[_stratified(cand, labels, val_fraction, rng_seed + 1, "data.val_fraction")] = "val"
    obs["split"] = split
    code = {c: i for i, c in enumerate(raw_classes)}
    obs["_code"] = np.array([code.get(v, -1) for v in labels], np.int64)
    if raw_classes:
        class_arr = np.asarray(class_names, dtype=object)
        obs[label_key] = pd.Categorical(
            [class_arr[c] if c >= 0 else None for c in obs["_code"]],
            categories=list(class_names),
            ordered=True,
        )
    counts = obs.groupby("split", observed=True).size().to_dict()
    log.info("omics subjects per split: %s (seed %d)", counts, rng_seed)
    return Subjects(obs, x, names)


def _align(x: np.ndarray, have: Sequence[str], want: Sequence[str], modality: str) -> np.ndarray:
    """Columns of a test table in the training table's feature order (by name)."""
    if list(have) == list(want):
        return x
    unnamed = all(":" in str(v) for v in [*have, *want])  # no header and no feature file: positional
    if unnamed and len(have) == len(want):
        return x
    pos = {str(v): j for j, v in enumerate(have)}
    missing = [v for v in want if v not in pos]
    if missing:
        raise DataError(
            f"data.modalities.{modality}.test lacks {len(missing)} of the {len(want)} training features, "
            f"e.g. {missing[:5]}"
        )
    return x[:, [pos[v] for v in want]]
