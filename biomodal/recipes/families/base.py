"""The family plugin contract.

A modality family (spatial, clinical, fMRI, multi-omics) is one module in
:mod:`biomodal.recipes.families` that subclasses :class:`Family` and registers it with
:func:`register_family`. It owns everything that knows modality names and data formats:

* its ``data:`` config (a :class:`FamilyConfig` subclass with ``family: <name>``);
* the default modalities and default evaluation protocols of its recipes;
* :meth:`Family.prepare`: data config -> :class:`PreparedData` (one dataset per split, one
  fitted preprocessor per modality fitted on training data only, the input spec of each
  modality's encoder, the evaluation targets and baseline features);
* :meth:`Family.load_preprocessors` and :meth:`Family.embed_file` for checkpoints and
  ``biomodal embed``.

The runner, model building, checkpoints and sweeps only talk to this interface.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from biomodal.errors import CheckpointError

__all__ = ["SPLITS", "Family", "FamilyConfig", "PreparedData", "resolve_path"]

SPLITS = ("train", "val", "test")


class FamilyConfig(BaseModel):
    """Base of every family's ``data:`` section; ``family`` selects the plugin."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    family: str
    root: str | None = None


@dataclass
class PreparedData:
    """What a family hands the runner.

    Attributes
    ----------
    datasets
        ``{split: Dataset}`` used for training (the training split may be augmented).
    eval_datasets
        ``{split: Dataset}`` without augmentation, in a fixed order, with a DataFrame ``.obs``.
    preprocessors
        ``{modality: fitted preprocessor}``; each has ``state_dict()`` (plain python, safe in a
        ``weights_only`` checkpoint) and the family rebuilds it in :meth:`Family.load_preprocessors`.
    input_specs
        ``{modality: {encoder kwarg: value}}``: what each encoder needs to be built
        (``{"in_features": 213}`` for expression); applied to encoders whose builder takes them.
    batch_categories
        Batch-effect categories of the training data (conditional norm, adversary).
    targets, coords, features
        Evaluation inputs: ``{name: Target}``, ``{split: (n, 2)}`` and
        ``{name: fn(split, modality) -> array}`` baseline features (see
        :class:`biomodal.eval.protocols.EvalContext`).
    label_keys, group_key, group_label, unit
        Label columns, the unit items come from (its ``obs`` column and display name), and
        what one item is called.
    """

    datasets: dict[str, Any] = field(default_factory=dict)
    eval_datasets: dict[str, Any] = field(default_factory=dict)
    preprocessors: dict[str, Any] = field(default_factory=dict)
    input_specs: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_categories: list[str] = field(default_factory=list)
    targets: dict[str, Any] = field(default_factory=dict)
    coords: dict[str, Any] = field(default_factory=dict)
    features: dict[str, Callable[[str, str], Any]] = field(default_factory=dict)
    label_keys: list[str] = field(default_factory=list)
    group_key: str | None = None
    group_label: str = "group"
    unit: str = "items"
    info: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(d)}" for s, d in self.eval_datasets.items())
        pre = ", ".join(f"{m}: {type(p).__name__}" for m, p in self.preprocessors.items())
        return f"PreparedData({sizes} {self.unit}; preprocessors {{{pre}}}; inputs {self.input_specs})"


class Family:
    """Base class of a modality-family plugin (see the module docstring).

    Class attributes
    ----------------
    name
        Registry name (the ``family:`` value).
    config
        Its :class:`FamilyConfig` subclass.
    """

    name: ClassVar[str] = ""
    config: ClassVar[type[FamilyConfig]] = FamilyConfig

    # ------------------------------------------------------------------ recipe defaults
    def default_modalities(self) -> dict[str, dict[str, Any]]:
        """Modalities of a recipe that names none (``{name: {encoder:..., params:...}}``)."""
        raise NotImplementedError

    def default_protocols(
        self, eval_section: dict[str, Any], data: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Protocols of a recipe whose ``eval`` lists none; may consume family shorthand keys.

        Parameters
        ----------
        eval_section
            The raw ``eval`` mapping; keys the family understands are popped from it.
        data
            The raw ``data`` mapping (for label columns and the like).
        """
        return [{"name": "retrieval"}]

    def resolve_paths(self, cfg: FamilyConfig, root: Path) -> None:
        """Make the file paths of ``cfg`` absolute against ``root`` (in place)."""

    def on_run_dir(self, cfg: FamilyConfig, run_dir: Path) -> None:
        """Record run-directory dependent defaults in ``cfg`` before it is saved (in place)."""

    # ------------------------------------------------------------------ data
    def prepare(
        self, recipe: Any, run_dir: Path, *, preprocessors: dict[str, Any] | None = None
    ) -> PreparedData:
        """Read the data, fit (or reuse) the preprocessors and build datasets per split."""
        raise NotImplementedError

    def load_preprocessors(self, states: Mapping[str, Any]) -> dict[str, Any]:
        """Rebuild fitted preprocessors from their checkpointed states."""
        raise NotImplementedError

    def check_checkpoint(self, preprocessors: Mapping[str, Any], input_specs: Mapping[str, Any]) -> None:
        """Validate checkpointed preprocessors against the recorded encoder input specs.

        The default compares each preprocessor's ``input_spec()`` (when it has one) with the
        spec recorded at training time and names the modality and the mismatch.
        """
        for name, pre in preprocessors.items():
            spec = getattr(pre, "input_spec", None)
            if spec is None:
                continue
            have, want = spec(), dict(input_specs.get(name, {}))
            diff = {
                k: (have.get(k), want.get(k)) for k in set(have) | set(want) if have.get(k) != want.get(k)
            }
            if diff:
                detail = "; ".join(f"{k}: preprocessor {a!r} vs encoder {b!r}" for k, (a, b) in diff.items())
                raise CheckpointError(
                    f"checkpoint modality {name!r}: preprocessor and encoder disagree ({detail})"
                )

    def upgrade_checkpoint(self, extra: dict[str, Any]) -> dict[str, Any]:
        """Convert the ``extra`` of a checkpoint written by an older biomodal (default: as is)."""
        return extra

    def embed_file(self, model: Any, path: Path) -> tuple[Any, Any]:
        """Dataset of one new file for ``biomodal embed``, and the AnnData the embeddings join.

        Returns
        -------
        tuple
            ``(dataset, adata)``: a torch dataset over the file's items and an AnnData with one
            row per item (``obsm['X_biomodal_<modality>']`` is added to it).
        """
        raise NotImplementedError(f"family {self.name!r} does not support `biomodal embed` yet")


def resolve_path(val: str | None, root: Path) -> str | None:
    """Expand ``~`` and ``$VARS`` in a configured path and make it absolute against ``root`` (empty stays)."""
    if not val:
        return val
    p = Path(os.path.expandvars(os.path.expanduser(val)))
    return str(p if p.is_absolute() else (root / p).resolve())
