"""The ``synthetic`` family: generated data with known structure, for checking objectives.

``data.generator: xor`` is Symile's higher-order experiment (:mod:`biomodal.datasets.xor`):
modalities ``v_a`` and ``v_b`` are vectors of fair random bits and ``v_c = v_a XOR v_b`` (bit by
bit, each bit of ``v_c`` flipped with probability ``data.noise``). Every pair of modalities is
independent, so only an objective that scores the whole triple can align them; the default
evaluation is Symile's: pick the right ``v_c`` among ``k`` candidates given ``v_a`` and ``v_b``
(``k_candidate``), chance ``1 / k``.

The training, validation and test items are independent draws (sizes ``data.n_train``,
``data.n_val``, ``data.n_test``) from a generator seeded by ``data.split_seed`` (default: the
recipe's ``seed``), so a seed changes both the data and the initialisation. Inputs are the raw
0/1 bits (no preprocessor is fitted; ``input_specs`` gives each encoder ``in_features = bits``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from biomodal.errors import ConfigError
from biomodal.recipes.families import register_family
from biomodal.recipes.families.base import Family, FamilyConfig, PreparedData

__all__ = ["IdentityPreprocessor", "SyntheticData", "SyntheticFamily"]

log = logging.getLogger("biomodal")

#: generator output key -> modality name
XOR_MODALITIES = {"a": "v_a", "b": "v_b", "c": "v_c"}


class SyntheticData(FamilyConfig):
    """``data:`` of a synthetic recipe (see the module docstring).

    Attributes
    ----------
    generator
        ``"xor"`` (Symile's binary XOR).
    bits
        Length of each binary vector.
    noise
        Probability of flipping each bit of ``v_c``.
    p_xor
        Fraction of items whose ``v_c`` is the XOR (the others have ``v_c = v_a``: pairwise
        information, the paper's ``p``); 1 keeps every pair independent.
    n_train, n_val, n_test
        Items per split (``n_val = 0``: no validation split, no early stopping).
    split_seed
        Seed of the generator (default: the recipe's ``seed``).
    """

    family: Literal["synthetic"] = "synthetic"
    generator: Literal["xor"] = "xor"
    bits: int = Field(default=8, ge=1, le=64)
    noise: float = Field(default=0.0, ge=0.0, le=0.5)
    p_xor: float = Field(default=1.0, ge=0.0, le=1.0)
    n_train: int = Field(default=10000, ge=2)
    n_val: int = Field(default=1000, ge=0)
    n_test: int = Field(default=2000, ge=2)
    split_seed: int | None = None


class IdentityPreprocessor:
    """The inputs are used as generated; records their width for the checkpoint check."""

    def __init__(self, n_features: int) -> None:
        self.n_features = int(n_features)

    def input_spec(self) -> dict[str, int]:
        """``{"in_features": bits}``."""
        return {"in_features": self.n_features}

    def state_dict(self) -> dict[str, int]:
        """Plain-python state."""
        return {"n_features": self.n_features}

    def __repr__(self) -> str:
        return f"IdentityPreprocessor(n_features={self.n_features})"


@register_family
class SyntheticFamily(Family):
    """Generated data (see the module docstring)."""

    name = "synthetic"
    config = SyntheticData

    def default_modalities(self) -> dict[str, dict[str, Any]]:
        """One small MLP per XOR modality (the paper uses linear encoders)."""
        mlp = {"encoder": "mlp", "params": {"hidden": [32], "dropout": 0.0, "norm": None}}
        return {m: dict(mlp) for m in XOR_MODALITIES.values()}

    def default_protocols(
        self, eval_section: dict[str, Any], data: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Symile's task: pick ``v_c`` among 10 given ``v_a`` and ``v_b`` (score from the loss)."""
        return [{"name": "k_candidate", "params": {"targets": ["v_c"], "k": 10, "draws": 5}}]

    def prepare(
        self, recipe: Any, run_dir: Path, *, preprocessors: dict[str, Any] | None = None
    ) -> PreparedData:
        """Draw the three splits and wrap them as datasets of bit vectors."""
        import numpy as np
        import pandas as pd

        from biomodal.datasets.xor import make_xor, xor_pair_dependence
        from biomodal.recipes.families._omics_data import OmicsDataset

        data: SyntheticData = recipe.data
        unknown = [m for m in recipe.modalities if m not in XOR_MODALITIES.values()]
        if unknown:
            raise ConfigError(
                f"synthetic xor: modalities {unknown} are not generated; use {list(XOR_MODALITIES.values())}"
            )
        seed = recipe.seed if data.split_seed is None else data.split_seed
        pre = dict(preprocessors or {}) or {m: IdentityPreprocessor(data.bits) for m in recipe.modalities}
        prepared = PreparedData(preprocessors=pre, unit="triples")
        sizes = {"train": data.n_train, "val": data.n_val, "test": data.n_test}
        for i, (split, n) in enumerate(sizes.items()):
            if n == 0:
                continue
            draw = make_xor(n, data.bits, noise=data.noise, p_xor=data.p_xor, seed=[int(seed), i])
            if split == "train":
                prepared.info["pair_dependence"] = xor_pair_dependence(draw)
            obs = pd.DataFrame(
                {"split": split, "is_xor": draw["is_xor"]}, index=[f"{split}_{j}" for j in range(n)]
            )
            x = {XOR_MODALITIES[k]: draw[k] for k in XOR_MODALITIES if XOR_MODALITIES[k] in recipe.modalities}
            present = {m: np.ones(n, bool) for m in x}
            names = {m: [f"bit{j}" for j in range(data.bits)] for m in x}
            ds = OmicsDataset(x, present, -np.ones(n, np.int64), obs, names)
            prepared.datasets[split] = prepared.eval_datasets[split] = ds
        prepared.input_specs = {m: p.input_spec() for m, p in pre.items()}
        eds = prepared.eval_datasets
        prepared.features = {"raw": lambda split, m: eds[split].features(m)}
        log.info(
            "synthetic xor: %s, max pairwise bit correlation %s", sizes, prepared.info["pair_dependence"]
        )
        return prepared

    def load_preprocessors(self, states: Mapping[str, Any]) -> dict[str, Any]:
        """Rebuild the identity preprocessors of a checkpoint."""
        return {m: IdentityPreprocessor(int(s["n_features"])) for m, s in states.items()}
