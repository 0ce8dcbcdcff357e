"""PTB-XL records -> the clinical family's splits: folds, ECG preprocessing, labs, text, targets.

Records are split by ``strat_fold`` (PTB-XL's authors' recommendation: every record of a
patient is in one fold), never by record; a patient found in two splits is an error. ECGs go
through one :class:`~biomodal.pp.ECGPipeline` (kept in an in-process cache, so seeds of one
process read the files once); the :class:`~biomodal.pp.LabStandardizer` of age, sex, height and
weight is fitted on the training folds only. A record whose ECG files are absent, whose text is
empty or whose four labs are all missing keeps its row with that modality masked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biomodal.errors import ConfigError, DataError

__all__ = [
    "ECG_MODALITY",
    "LABS_MODALITY",
    "MODALITIES_HERE",
    "ecg_pipeline",
    "input_specs",
    "prepare_ptbxl_splits",
]

log = logging.getLogger("biomodal")

ECG_MODALITY, TEXT_MODALITY, LABS_MODALITY = "ecg", "report", "labs"
#: Modalities a PTB-XL recipe may list.
MODALITIES_HERE = (ECG_MODALITY, TEXT_MODALITY, LABS_MODALITY)

_CACHE: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}
_CACHE_MAX = 4


def _read_index(data: Any) -> Any:
    from biomodal.io import read_ptbxl_index

    root = Path(str(data.root))
    if not root.is_dir():
        raise DataError(f"data.root: PTB-XL folder {root} does not exist (expected ptbxl_database.csv, "
                        "scp_statements.csv, records100/, records500/)")  # fmt: skip
    for name in ("ptbxl_database.csv", "scp_statements.csv"):
        if not (root / name).is_file():
            raise DataError(f"data.root: {root} is not a PTB-XL folder: {name} not found")
    return read_ptbxl_index(
        root, sampling_rate=int(data.sampling_rate), missing="keep", min_likelihood=data.min_likelihood
    )


def _split_of(index: Any, folds: Mapping[str, Sequence[int]], root: Any) -> np.ndarray:
    """Split name of every record (``""``: in no listed fold); folds without records are errors."""
    split = np.full(len(index), "", dtype=object)
    present = sorted(int(f) for f in index["strat_fold"].unique())
    for name, listed in folds.items():
        empty = [f for f in listed if f not in present]
        if empty:
            raise DataError(
                f"data.folds.{name}: strat_fold {empty} hold no records in {root}/ptbxl_database.csv "
                f"(folds present: {present})"
            )
        split[index["strat_fold"].isin(list(listed)).to_numpy()] = name
    patients = index.assign(_split=split)[split != ""].groupby("patient_id")["_split"].nunique()
    shared = patients[patients > 1]
    if len(shared):
        raise DataError(
            f"{root}: {len(shared)} patient(s) have records in two splits (first: patient_id "
            f"{shared.index[0]}); PTB-XL's strat_fold keeps each patient in one fold"
        )
    return split


def _ecg_arrays(paths: Sequence[str], pipe: Any) -> tuple[np.ndarray, np.ndarray]:
    key = (tuple(paths), json.dumps(pipe.state_dict(), sort_keys=True))
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = pipe.stack(list(paths))
    x, m = _CACHE[key]
    return x.copy(), m.copy()


def ecg_pipeline(data: Any, preprocessors: Mapping[str, Any]) -> Any:
    """Return the checkpoint's ECG pipeline (``preprocessors["ecg"]``), else one built from ``data``."""
    from biomodal.pp import ECGPipeline

    pipe = preprocessors.get(ECG_MODALITY) or ECGPipeline(
        fs=float(data.sampling_rate),
        duration_s=float(data.duration_s),
        bandpass=tuple(data.bandpass) if data.bandpass is not None else None,
        baseline=data.baseline,
        standardize=data.standardize,
    )
    if not isinstance(pipe, ECGPipeline):
        raise ConfigError(f"preprocessor of {ECG_MODALITY!r} is {type(pipe).__name__}, not an ECGPipeline")
    return pipe


def input_specs(preprocessors: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Return what each encoder is built for, from the fitted preprocessors (ECG leads, lab features)."""
    from biomodal.pp import ECGPipeline, LabStandardizer

    specs: dict[str, dict[str, Any]] = {}
    for m, p in preprocessors.items():
        if isinstance(p, ECGPipeline):
            specs[m] = {"leads": len(p.leads)}
        elif isinstance(p, LabStandardizer):
            specs[m] = {"in_features": len(p.features_)}
        else:
            specs[m] = dict(p.input_spec()) if hasattr(p, "input_spec") else {}
    return specs


def prepare_ptbxl_splits(recipe: Any, preprocessors: Mapping[str, Any] | None) -> dict[str, Any]:
    """Read PTB-XL, split by fold, preprocess every modality; the pieces of ``PreparedData``.

    Returns
    -------
    dict
        ``datasets`` (``{split: ClinicalDataset}``), ``preprocessors``, ``input_specs``,
        ``targets`` (``superclass``), ``features`` (``{split: ecg_features array}``) and ``info``.
    """
    from biomodal.eval.protocols import Target
    from biomodal.io import ptbxl_labs, superclass_targets
    from biomodal.io._ptbxl import SUPERCLASSES
    from biomodal.pp import ECGPipeline, LabStandardizer
    from biomodal.recipes.families._clinical_data import (
        ClinicalDataset,
        TextSource,
        ecg_features,
        standardize_records,
    )

    data = recipe.data
    mods = list(recipe.modalities)
    unknown = [m for m in mods if m not in MODALITIES_HERE]
    if unknown:
        raise ConfigError(
            f"modalities {unknown}: the clinical family's PTB-XL data provide {list(MODALITIES_HERE)}"
        )
    index = _read_index(data)
    folds = {"train": data.folds.train, "val": data.folds.val, "test": data.folds.test}
    folds = {k: v for k, v in folds.items() if v}
    split = _split_of(index, folds, data.root)
    index = index.assign(split=split)[split != ""]
    pre = dict(preprocessors or {})
    train = (index["split"] == "train").to_numpy()
    n = len(index)
    arrays: dict[str, Any] = {}
    present: dict[str, np.ndarray] = {}
    feats = None
    if ECG_MODALITY in mods:
        pipe = pre[ECG_MODALITY] = ecg_pipeline(data, pre)
        ok = np.array([Path(f"{p}.hea").is_file() and Path(f"{p}.dat").is_file() for p in index["path"]])
        if not ok.any():
            raise DataError(f"data.root: no records{data.sampling_rate}/ files for the records of data.folds")
        if not ok.all():
            log.warning("clinical: %d records have no ECG files at %s Hz; their ecg is masked",
                        int((~ok).sum()), data.sampling_rate)  # fmt: skip
        raw_pipe = ECGPipeline(**{**pipe.state_dict(), "standardize": None})
        xs, ms = _ecg_arrays(list(index["path"][ok]), raw_pipe)
        x = np.zeros((n, len(pipe.leads), pipe.n_samples), np.float32)
        m = np.zeros((n, len(pipe.leads)), bool)
        x[ok], m[ok] = xs, ms
        feats = ecg_features(x, m, pipe.fs)  # amplitudes in mV, before any per-record scaling
        feats[~ok] = np.nan
        if pipe.standardize == "record":
            x = standardize_records(x, m)
        arrays["ecg"], arrays["lead_mask"], present[ECG_MODALITY] = x, m, ok
    if TEXT_MODALITY in mods:
        src = pre.get(TEXT_MODALITY) or TextSource(data.text)
        pre[TEXT_MODALITY] = src
        texts = [str(t) if isinstance(t, str) else "" for t in index[src.column]]
        arrays["texts"] = texts
        present[TEXT_MODALITY] = np.array([bool(t.strip()) for t in texts])
    if LABS_MODALITY in mods:
        table = ptbxl_labs(index)
        if LABS_MODALITY not in pre:
            pre[LABS_MODALITY] = LabStandardizer().fit(table, rows=train)
        arrays["labs"] = pre[LABS_MODALITY].transform(table)
        present[LABS_MODALITY] = np.isfinite(table.values).any(axis=1)
    y = superclass_targets(index)
    obs_cols = ["patient_id", "strat_fold", "split", "age", "sex"]
    obs = index[obs_cols].copy()
    obs["superclass"] = ["|".join(c) or "none" for c in index["diagnostic_superclass"]]
    obs.index = obs.index.astype(str)
    datasets, targets, features = {}, {}, {}
    for name in ("train", "val", "test"):
        rows = (index["split"] == name).to_numpy()
        if not rows.any():
            continue
        datasets[name] = ClinicalDataset(
            obs.loc[rows],
            ecg=arrays["ecg"][rows] if "ecg" in arrays else None,
            lead_mask=arrays["lead_mask"][rows] if "ecg" in arrays else None,
            texts=[t for t, r in zip(arrays["texts"], rows, strict=True) if r] if "texts" in arrays else None,
            labs=arrays["labs"][rows] if "labs" in arrays else None,
            present={k: v[rows] for k, v in present.items()},
            text_modality=TEXT_MODALITY,
        )
        targets[name] = y[rows]
        if feats is not None:
            features[name] = feats[rows]
    specs = input_specs(pre)
    info = {
        "folds": folds,
        "n_records": {s: len(d) for s, d in datasets.items()},
        "n_patients": {s: int(d.obs["patient_id"].nunique()) for s, d in datasets.items()},
        "text": data.text,
        "text_from_labels": data.text == "statements",
        "sampling_rate": int(data.sampling_rate),
        "missing": {m: int((~p).sum()) for m, p in present.items()},
    }
    return {
        "datasets": datasets,
        "preprocessors": pre,
        "input_specs": specs,
        "targets": {"superclass": Target(values=targets, names=list(SUPERCLASSES))},
        "features": features,
        "info": info,
    }
