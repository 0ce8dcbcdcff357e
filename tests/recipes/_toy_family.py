"""A minimal non-spatial family used to prove the runner, checkpoints and sweeps are generic.

Two vector modalities (``labs`` and ``ecg`` here, any names would do) are noisy linear
views of one latent per subject; subjects are split into train/val/test. The family fits a
standardiser per modality on training subjects only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from biomodal.recipes.families import register_family
from biomodal.recipes.families.base import Family, FamilyConfig, PreparedData


class ToyData(FamilyConfig):
    family: Literal["toy"] = "toy"
    n: int = 300
    dims: tuple[int, int] = (12, 9)
    noise: float = 0.1
    seed: int = 0


class Standardiser:
    """Mean/std fitted on training rows."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardiser:
        return cls(x.mean(0), x.std(0) + 1e-6)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def input_spec(self) -> dict[str, Any]:
        return {"in_features": int(self.mean.size)}


class PairDataset:
    def __init__(self, xs: dict[str, np.ndarray], obs: Any) -> None:
        import torch

        self.xs = {k: torch.as_tensor(v) for k, v in xs.items()}
        self.obs = obs

    def __len__(self) -> int:
        return len(self.obs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        return {**{k: v[i] for k, v in self.xs.items()}, "index": torch.tensor(i)}


def _split_of(n: int) -> np.ndarray:
    split = np.array(["train"] * n, dtype=object)
    split[int(0.6 * n) : int(0.75 * n)] = "val"
    split[int(0.75 * n) :] = "test"
    return split


@register_family
class ToyFamily(Family):
    name = "toy"
    config = ToyData

    def default_modalities(self) -> dict[str, dict[str, Any]]:
        return {"labs": {"encoder": "mlp", "params": {"hidden": [32]}},
                "ecg": {"encoder": "mlp", "params": {"hidden": [32]}}}  # fmt: skip

    def default_protocols(
        self, eval_section: dict[str, Any], data: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        return [{"name": "retrieval", "params": {"ks": [1, 5]}}, {"name": "probe"}]

    def _raw(self, cfg: ToyData) -> tuple[dict[str, np.ndarray], Any]:
        import pandas as pd

        rng = np.random.default_rng(cfg.seed)
        z = rng.normal(size=(cfg.n, 4))
        xs = {}
        for name, d in zip(("labs", "ecg"), cfg.dims):
            w = rng.normal(size=(4, d))
            xs[name] = (z @ w + cfg.noise * rng.normal(size=(cfg.n, d)) + 5.0).astype(np.float32)
        obs = pd.DataFrame({"subject": [f"s{i}" for i in range(cfg.n)], "split": _split_of(cfg.n),
                            "sign": np.where(z[:, 0] > 0, "pos", "neg")},
                           index=[f"s{i}" for i in range(cfg.n)])  # fmt: skip
        return xs, obs

    def prepare(
        self, recipe: Any, run_dir: Path, *, preprocessors: dict[str, Any] | None = None
    ) -> PreparedData:
        xs, obs = self._raw(recipe.data)
        train = (obs["split"] == "train").to_numpy()
        pre = dict(preprocessors or {})
        for m in xs:
            pre.setdefault(m, Standardiser.fit(xs[m][train]))
        prepared = PreparedData(
            preprocessors=pre, group_key="subject", group_label="subject", unit="subjects"
        )
        for split in ("train", "val", "test"):
            keep = (obs["split"] == split).to_numpy()
            ds = PairDataset({m: pre[m](xs[m][keep]) for m in xs}, obs[keep])
            prepared.datasets[split] = prepared.eval_datasets[split] = ds
        prepared.input_specs = {m: p.input_spec() for m, p in pre.items()}
        prepared.label_keys = ["sign"]
        return prepared

    def load_preprocessors(self, states: Mapping[str, Any]) -> dict[str, Any]:
        return {m: Standardiser(s["mean"], s["std"]) for m, s in states.items()}
