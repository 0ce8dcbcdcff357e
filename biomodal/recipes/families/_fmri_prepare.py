"""``FmriFamily.prepare``: split, z-score on training trials, average repeats, targets, datasets."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from biomodal.errors import DataError
from biomodal.recipes.families.base import SPLITS, PreparedData

log = logging.getLogger("biomodal")

__all__ = ["prepare", "split_items"]


def _stimulus_split(data: Any, root: Path, all_stim: list[str], rng: np.random.Generator) -> dict[str, str]:
    """``{stimulus: split}``: the shared stimuli (or a random ``holdout``) are the test split."""
    import pandas as pd

    test: set[str] = set()
    table = root / data.stimuli_table if data.stimuli_table else None
    if data.test_stimuli == "shared":
        if table is None or not table.is_file():
            raise DataError(
                f"data.test_stimuli: shared needs the stimulus table {table} (columns stimulus, shared); "
                "or set data.test_stimuli: random"
            )
        tab = pd.read_csv(table, sep=None, engine="python", dtype={"stimulus": str})
        if not {"stimulus", "shared"} <= set(tab.columns):
            raise DataError(f"{table}: needs columns stimulus and shared, has {list(tab.columns)}")
        test = set(tab.loc[tab["shared"].astype(int) == 1, "stimulus"].astype(str)) & set(all_stim)
        if not test:
            raise DataError(f"{table}: no stimulus with shared == 1 occurs in the data")
    else:
        perm = rng.permutation(all_stim)
        test = set(perm[: max(1, round(data.holdout * len(all_stim)))].tolist())
    rest = [s for s in all_stim if s not in test]
    n_val = round(data.val_fraction * len(rest))
    val = set(rng.permutation(rest)[:n_val].tolist()) if n_val else set()
    return {s: "test" if s in test else "val" if s in val else "train" for s in all_stim}


def _subject_split(data: Any, subjects: list[str], rng: np.random.Generator) -> dict[str, str]:
    if data.test_subjects:
        unknown = sorted(set(data.test_subjects) - set(subjects))
        if unknown:
            raise DataError(f"data.test_subjects {unknown} are not among the subjects {subjects}")
        test = set(data.test_subjects)
    else:
        test = set(rng.permutation(subjects)[: max(1, round(data.holdout * len(subjects)))].tolist())
    rest = [s for s in subjects if s not in test]
    n_val = max(1, round(data.val_fraction * len(rest))) if data.val_fraction > 0 and len(rest) > 2 else 0
    val = set(rng.permutation(rest)[:n_val].tolist())
    if not rest or len(rest) == n_val:
        raise DataError(f"data.holdout={data.holdout}: no training subjects left of {subjects}")
    return {s: "test" if s in test else "val" if s in val else "train" for s in subjects}


def split_items(data: Any, root: Path, trials: Any, seed: int) -> dict[str, np.ndarray]:
    """Split name of every trial, ``{subject: (trials,) str}``."""
    rng = np.random.default_rng(seed)
    subjects = [s for s in trials.subjects if s not in data.transfer_subjects]
    unknown = sorted(set(data.transfer_subjects) - set(trials.subjects))
    if unknown:
        raise DataError(f"data.transfer_subjects {unknown} are not among the subjects {trials.subjects}")
    if data.split == "stimulus":
        all_stim = sorted({str(v) for s in trials.subjects for v in trials.stimulus[s]})
        by = _stimulus_split(data, root, all_stim, rng)
        out = {s: np.array([by[str(v)] for v in trials.stimulus[s]], object) for s in subjects}
    else:
        by = _subject_split(data, subjects, rng)
        out = {s: np.full(len(trials.stimulus[s]), by[s], object) for s in subjects}
    for s in data.transfer_subjects:  # whole subject left out; its trials keep their stimulus split
        if data.split == "stimulus":
            out[s] = np.array(["transfer_" + by[str(v)] for v in trials.stimulus[s]], object)
        else:
            out[s] = np.full(len(trials.stimulus[s]), "transfer_test", object)
    return out


def _fit_preprocessor(data: Any, trials: Any, splits: Mapping[str, np.ndarray]) -> Any:
    """Masks of every subject and z-scoring fitted on training trials only."""
    from biomodal.pp.fmri import VoxelZScore
    from biomodal.recipes.families._fmri_data import FmriPreprocessor

    trained = [s for s in trials.subjects if (splits[s] == "train").any()]
    if not trained:
        raise DataError("fmri: no subject has training trials (check data.split and data.transfer_subjects)")
    scalers: dict[str, Any] = {}
    if data.zscore == "pooled":
        x = np.concatenate([trials.x[s][splits[s] == "train"] for s in trained])
        scalers["*"] = VoxelZScore(name="fmri (pooled)").fit(x)
    elif data.zscore == "subject":
        for s in trials.subjects:
            rows = np.isin(splits[s], ["train", "transfer_train"])
            if rows.sum() >= 2:
                scalers[s] = VoxelZScore(name=f"fmri/{s}").fit(trials.x[s][rows])
            elif data.split == "stimulus":
                raise DataError(f"subject {s}: fewer than 2 training trials to fit its z-scoring")
    masks = {s: np.flatnonzero(trials.masks[s].ravel()) for s in trials.subjects}
    grid = next(iter(trials.masks.values())).shape
    return FmriPreprocessor(trained, masks, grid, data.adapters, scalers)


def _items(
    data: Any, trials: Any, splits: Mapping[str, np.ndarray], pre: Any, split: str
) -> list[tuple[Any, ...]]:
    """``[(subject, x, stimulus, task, n_repeats)]`` of one split, z-scored, repeats averaged."""
    from biomodal.pp.fmri import average_repeats

    out = []
    for s in trials.subjects:
        rows = splits.get(s)
        if rows is None:
            continue
        rows = rows == split
        if not rows.any():
            continue
        x = trials.x[s][rows]
        if data.zscore != "none":
            sc = pre.scalers.get("*") or pre.scalers.get(s)
            if sc is None:
                raise DataError(f"subject {s}: no z-scoring statistics (no training trials)")
            x = sc.transform(x)
        stim, task = trials.stimulus[s][rows].astype(str), trials.task[s][rows].astype(str)
        if data.average_repeats:
            ids, x, n = average_repeats(x, stim)
            first = {v: task[np.flatnonzero(stim == v)[0]] for v in ids}
            task = np.array([first[v] for v in ids], object)
            stim = ids
        else:
            n = np.ones(len(stim), np.int64)
        out.append((s, x, stim, task, n))
    return out


def prepare(
    data: Any, root: Path, *, seed: int, preprocessors: Mapping[str, Any] | None = None
) -> PreparedData:
    """Everything :meth:`FmriFamily.prepare` returns (see the family's module docstring)."""
    import pandas as pd

    from biomodal.recipes.families._fmri_data import FmriDataset, read_trials
    from biomodal.recipes.families._fmri_eval import ridge_features
    from biomodal.recipes.families._fmri_targets import stimulus_targets

    if data.source == "synthetic":
        from biomodal.datasets.fmri_synthetic import make_fmri_multisubject

        make_fmri_multisubject(root, **data.synthetic)
        if not data.files:
            data.files = [{"glob": "sub-*/betas.nii.gz"}]  # type: ignore[list-item]
    trials = read_trials(data, root)
    splits = split_items(data, root, trials, seed)
    if preprocessors and "fmri" in preprocessors:
        pre = preprocessors["fmri"]
    else:
        pre = _fit_preprocessor(data, trials, splits)
    width = pre.width
    all_stim = sorted({str(v) for s in trials.subjects for v in trials.stimulus[s]})
    emb, tinfo = stimulus_targets(data.targets, root, all_stim)
    row_of = {s: i for i, s in enumerate(all_stim)}
    if data.targets.standardize:  # frozen-encoder embeddings share a large common part: remove it
        seen = sorted(
            {str(v) for s in trials.subjects if s in splits for v in trials.stimulus[s][splits[s] == "train"]}
        )
        fit = emb[[row_of[v] for v in seen]]
        emb = ((emb - fit.mean(0)) / np.maximum(fit.std(0), 1e-6)).astype(np.float32)
        tinfo = {**tinfo, "standardized_on": len(seen)}
    tname = data.targets.name
    prepared = PreparedData(
        preprocessors={"fmri": pre}, group_key="subject", group_label="subject", unit="items"
    )
    names = [*SPLITS, "transfer_train", "transfer_val", "transfer_test"]
    for split in names:
        parts = _items(data, trials, splits, pre, split)
        if not parts:
            continue
        xs, obs_rows, codes = [], [], []
        for s, x, stim, task, n in parts:
            code = pre.code(s) if not split.startswith("transfer") else -1
            pad = np.zeros((len(x), width + 1), np.float32)  # column 0: the subject code
            pad[:, 0] = code
            pad[:, 1 : x.shape[1] + 1] = x
            xs.append(pad)
            codes.append(np.full(len(x), code, np.int64))
            obs_rows.append(pd.DataFrame({"subject": s, "stimulus": stim, "task": task, "n_repeats": n}))
        obs = pd.concat(obs_rows, ignore_index=True)
        obs.index = [f"{r.subject}:{r.stimulus}" for r in obs.itertuples()]
        targets = emb[[row_of[v] for v in obs["stimulus"]]]
        ds = FmriDataset(np.concatenate(xs), targets, np.concatenate(codes), obs, tname)
        if split in SPLITS:
            prepared.datasets[split] = prepared.eval_datasets[split] = ds
        else:
            prepared.info.setdefault("transfer", {})[split.removeprefix("transfer_")] = ds
        log.info("fmri %s: %r", split, ds)
    if "train" not in prepared.datasets or "test" not in prepared.eval_datasets:
        raise DataError(
            f"fmri: the split left {sorted(prepared.eval_datasets)} (need train and test); check data.split, "
            "data.holdout and data.test_subjects"
        )
    prepared.input_specs = {"fmri": pre.input_spec(), tname: {"in_features": int(emb.shape[1])}}
    prepared.label_keys = ["task"]
    prepared.info.update({"targets": tinfo, "split_seed": seed, "subjects": trials.subjects})
    eds = prepared.eval_datasets
    fitted: dict[str, Any] = {}

    def ridge(split: str, modality: str) -> Any:  # fitted on the training split at first use
        ds = eds[split]
        if modality != "fmri":
            return ds.features(tname)
        if "predict" not in fitted:
            tr = eds["train"]
            fitted["predict"] = ridge_features(tr.features("fmri")[:, 1:], tr.features(tname), tr.batch_codes)
        return fitted["predict"](ds.features("fmri")[:, 1:], ds.batch_codes)

    prepared.features = {"ridge": _memo(ridge), "raw": lambda split, m: eds[split].features(m)}
    return prepared


def _memo(fn: Any) -> Any:
    cache: dict[tuple[str, str], Any] = {}

    def wrapped(split: str, modality: str) -> Any:
        if (split, modality) not in cache:
            cache[(split, modality)] = fn(split, modality)
        return cache[(split, modality)]

    return wrapped
