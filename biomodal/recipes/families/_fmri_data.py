"""fMRI family data: read maps per subject, align voxels, split, preprocess, build datasets.

Private helper of :mod:`biomodal.recipes.families.fmri`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biomodal.errors import CheckpointError, ConfigError, DataError
from biomodal.modalities import SUBJECT

log = logging.getLogger("biomodal")

__all__ = ["FmriDataset", "FmriPreprocessor", "Trials", "read_trials"]


@dataclass
class Trials:
    """Every trial (or map) read: one row per trial, voxels in its subject's mask order."""

    x: dict[str, np.ndarray]  # subject -> (trials, voxels) float32
    stimulus: dict[str, np.ndarray]  # subject -> (trials,) str
    task: dict[str, np.ndarray]  # subject -> (trials,) str
    masks: dict[str, np.ndarray]  # subject -> boolean grid mask
    affine: np.ndarray
    files: dict[str, list[str]]

    @property
    def subjects(self) -> list[str]:
        """Subject ids, sorted."""
        return sorted(self.x)


def _subject_of(spec: Any, rel: str, path: Path) -> str:
    if spec.subject is None:
        return path.parent.name
    m = re.search(spec.subject, rel)
    if m is None:
        raise DataError(f"data.files: subject pattern {spec.subject!r} does not match {rel!r}")
    return "-".join(g for g in m.groups() if g) if m.groups() else m.group(0)


def _events(spec: Any, path: Path, n: int) -> np.ndarray:
    """Stimulus id of every volume of ``path`` (its events table, or the spec's constant)."""
    import pandas as pd

    if spec.stimulus is not None:
        return np.full(n, str(spec.stimulus), dtype=object)
    stem = path.name.split(".")[0]  # betas_session01.nii.gz -> betas_session01
    ev = path.parent / (spec.events or "events.tsv").format(stem=stem)
    if not ev.is_file():
        raise DataError(
            f"{path}: no events table {ev} (columns volume, stimulus) and no data.files[].stimulus"
        )
    tab = pd.read_csv(ev, sep=None, engine="python")
    missing = [c for c in ("volume", "stimulus") if c not in tab.columns]
    if missing:
        raise DataError(f"{ev}: missing columns {missing} (has {list(tab.columns)})")
    vol = tab["volume"].to_numpy(np.int64)
    if len(tab) != n or not np.array_equal(np.sort(vol), np.arange(n)):
        raise DataError(f"{ev}: has {len(tab)} rows for the {n} volumes of {path} (one per volume, 0-based)")
    out = np.empty(n, dtype=object)
    out[vol] = tab["stimulus"].astype(str).to_numpy()
    return out


def read_trials(data: Any, root: Path) -> Trials:
    """Read every file of ``data.files`` with :func:`biomodal.io.read_fmri`, grouped by subject.

    With ``data.mask == "common"`` all images must share one grid (after reorientation, within
    half a voxel) and every subject keeps the voxels present in all of them; with ``"subject"``
    each subject keeps its own support (intersected over its files).
    """
    from biomodal.io import read_fmri
    from biomodal.io._fmri import same_grid
    from biomodal.pp.fmri import detrend, standardize_maps

    mask_file = data.mask_file
    per: dict[str, list[Any]] = {}
    stim: dict[str, list[np.ndarray]] = {}
    task: dict[str, list[np.ndarray]] = {}
    files: dict[str, list[str]] = {}
    for i, spec in enumerate(data.files):
        paths = sorted(root.glob(spec.glob))
        if not paths:
            raise DataError(f"data.files[{i}].glob {spec.glob!r} matches no file under {root}")
        for p in paths:
            rel = p.relative_to(root).as_posix()
            img = read_fmri(p, mask=mask_file, labels=data.roi_labels, reorient=data.reorient)
            if data.detrend and img.data.shape[0] > 2:
                img.data = detrend(img.data)
            sub = _subject_of(spec, rel, p)
            per.setdefault(sub, []).append(img)
            s = _events(spec, p, img.data.shape[0])
            stim.setdefault(sub, []).append(s)
            task.setdefault(sub, []).append(np.full(len(s), spec.task, object) if spec.task else s)
            files.setdefault(sub, []).append(rel)
    first = next(iter(per.values()))[0]
    imgs = [im for v in per.values() for im in v]
    for im in imgs:
        # without reorientation voxels are compared by index, as a naive pipeline does (the
        # ablation of docs/fmri.md): only the shapes must agree then
        aligned = not data.reorient or same_grid(im.affine, first.affine, first.voxel_size, data.grid_atol)
        if im.shape != first.shape or not aligned:
            if data.mask == "common" or data.adapters == "shared":
                raise DataError(
                    f"data.mask: common: {im.path} (grid {im.shape}) and {first.path} (grid {first.shape}) "
                    "are not on one voxel grid after reorientation; resample them or use mask: subject"
                )
    if data.mask == "common":
        common = np.logical_and.reduce([im.mask for im in imgs])
        masks = dict.fromkeys(per, common)
    else:
        masks = {s: np.logical_and.reduce([im.mask for im in v]) for s, v in per.items()}
    x = {}
    for s, v in per.items():
        if not masks[s].any():
            raise DataError(f"subject {s}: no voxel is inside every mask ({[im.path for im in v]})")
        x[s] = np.concatenate([_columns(im, masks[s]) for im in v], axis=0)
        if data.map_norm:
            x[s] = standardize_maps(x[s])
        log.info("fmri subject %s: %d trials x %d voxels from %d files", s, *x[s].shape, len(v))
    return Trials(
        x=x,
        stimulus={s: np.concatenate(v) for s, v in stim.items()},
        task={s: np.concatenate(v) for s, v in task.items()},
        masks=masks,
        affine=first.affine,
        files=files,
    )


def _columns(img: Any, mask: np.ndarray) -> np.ndarray:
    """Columns of ``img.data`` for the voxels of ``mask`` (a subset of ``img.mask``)."""
    pos = np.cumsum(img.mask.ravel()) - 1
    return np.ascontiguousarray(img.data[:, pos[mask.ravel()]], np.float32)


class FmriPreprocessor:
    """The fitted fMRI preprocessing of a run: voxel masks, per-subject or pooled z-scoring.

    Parameters
    ----------
    subjects
        Training subject ids, in code order of their adapters (per-subject adapters).
    masks
        ``{subject: flat voxel indices}`` on the grid ``grid`` (every subject read, including
        held-out and transfer subjects).
    grid
        Grid shape (canonical orientation).
    adapters
        ``"per_subject"`` (code = position in ``subjects``) or ``"shared"`` (code 0 for all).
    scalers
        ``{subject: VoxelZScore}`` or ``{"*": VoxelZScore}`` (pooled); empty: no z-scoring.
    """

    def __init__(
        self,
        subjects: Sequence[str],
        masks: Mapping[str, np.ndarray],
        grid: Sequence[int],
        adapters: str,
        scalers: Mapping[str, Any],
    ) -> None:
        self.subjects = [str(s) for s in subjects]
        self.masks = {s: np.asarray(m, np.int64) for s, m in masks.items()}
        self.grid = tuple(int(g) for g in grid)
        self.adapters = adapters
        self.scalers = dict(scalers)

    def code(self, subject: str) -> int:
        """Subject code fed to the encoder (0 for every subject with a shared adapter)."""
        if self.adapters == "shared":
            return 0
        if subject not in self.subjects:
            raise DataError(f"subject {subject!r} has no adapter in this model (subjects {self.subjects})")
        return self.subjects.index(subject)

    def transform(self, subject: str, x: np.ndarray) -> np.ndarray:
        """Z-score ``x`` of ``subject`` with the training statistics (identity without scalers)."""
        if not self.scalers:
            return np.asarray(x, np.float32)
        sc = self.scalers.get("*") or self.scalers.get(subject)
        if sc is None:
            raise DataError(f"subject {subject!r} has no fitted z-scoring (fitted: {sorted(self.scalers)})")
        return sc.transform(x)

    def input_spec(self) -> dict[str, Any]:
        """Return the encoder input: each adapter's voxel count (one adapter when shared)."""
        if self.adapters == "shared":
            return {"voxels": [len(self.masks[self.subjects[0]])], "code_column": True}
        return {"voxels": [len(self.masks[s]) for s in self.subjects], "code_column": True}

    @property
    def width(self) -> int:
        """Columns of the padded input matrix (the largest voxel count)."""
        return max(len(m) for m in self.masks.values())

    def state_dict(self) -> dict[str, Any]:
        """Plain-python state for a ``weights_only`` checkpoint."""
        return {
            "kind": "fmri",
            "subjects": list(self.subjects),
            "masks": {s: m.tolist() for s, m in self.masks.items()},
            "grid": list(self.grid),
            "adapters": self.adapters,
            "scalers": {s: sc.state_dict() for s, sc in self.scalers.items()},
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], name: str = "fmri") -> FmriPreprocessor:
        """Inverse of :meth:`state_dict` (a :class:`CheckpointError` naming ``name`` when malformed)."""
        from biomodal.pp.fmri import VoxelZScore

        if not isinstance(state, Mapping) or state.get("kind") != "fmri":
            raise CheckpointError(f"checkpoint preprocessor {name!r}: not an fmri preprocessor state")
        scalers = {s: VoxelZScore.from_state_dict(v, f"{name}/{s}") for s, v in state["scalers"].items()}
        return cls(state["subjects"], state["masks"], state["grid"], state["adapters"], scalers)

    def __repr__(self) -> str:
        z = "pooled" if "*" in self.scalers else ("per subject" if self.scalers else "none")
        return (
            f"FmriPreprocessor({len(self.subjects)} subjects, adapters {self.adapters}, voxels "
            f"{self.input_spec()['voxels']}, z-scoring {z})"
        )


class FmriDataset:
    """Items of one split: padded voxels, the stimulus' target embedding, the subject code.

    Items are ``{"fmri": float32 (1 + width,), <target>: float32 (d,), "subject": int64,
    "index": int64}``; column 0 of ``fmri`` repeats the subject code (the encoder's
    ``code_column``, for evaluation code that embeds without covariates); ``obs`` has
    ``subject``, ``stimulus``, ``task``, ``n_repeats`` per item.
    """

    def __init__(
        self, x: np.ndarray, targets: np.ndarray, codes: np.ndarray, obs: Any, target_name: str
    ) -> None:
        import torch

        if not len(x) == len(targets) == len(codes) == len(obs):
            raise DataError(f"FmriDataset: {len(x)} inputs, {len(targets)} targets, {len(obs)} obs rows")
        self.obs = obs
        self.target_name = target_name
        self._x = torch.as_tensor(np.asarray(x, np.float32))
        self._t = torch.as_tensor(np.asarray(targets, np.float32))
        self._c = torch.as_tensor(np.asarray(codes, np.int64))
        self.batch_codes = np.asarray(codes, np.int64)

    def __len__(self) -> int:
        return len(self.obs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        return {
            "fmri": self._x[i],
            self.target_name: self._t[i],
            SUBJECT: self._c[i],
            "index": torch.tensor(i),
        }

    def features(self, modality: str) -> np.ndarray:
        """Raw inputs of ``modality`` (padded voxels, or the target embeddings)."""
        if modality == "fmri":
            return self._x.numpy()
        if modality == self.target_name:
            return self._t.numpy()
        raise ConfigError(f"FmriDataset has modalities fmri and {self.target_name}, not {modality!r}")

    def __repr__(self) -> str:
        subs = self.obs["subject"].nunique() if len(self.obs) else 0
        stims = self.obs["stimulus"].nunique() if len(self.obs) else 0
        return f"FmriDataset({len(self)} items, {subs} subjects, {stims} stimuli, width {self._x.shape[1]})"
