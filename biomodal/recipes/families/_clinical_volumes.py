"""Generated CT-like volumes and their reports -> the clinical family's splits (``data.dataset: volumes``).

Volumes come from :func:`biomodal.datasets._volume_synth.make_volume_patients` (three small
findings, each in a few slices; a templated report per volume). Every split is an independent
draw of distinct patients seeded by ``data.volumes.split_seed`` or the recipe's seed. Nothing is
fitted: the volumes are already windowed to ``[0, 1]`` (stored as ``uint8``).
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from biomodal.errors import ConfigError

__all__ = ["NEGATIVES", "PROMPTS", "GeneratedVolumes", "default_volume_protocols", "prepare_volume_splits"]

log = logging.getLogger("biomodal")

VOLUME_MODALITIES = ("volume", "report")
PROMPTS: dict[str, list[str]] = {
    "nodule": ["pulmonary nodule", "a nodule in the lung"],
    "cyst": ["hepatic cyst", "cystic lesion in the liver"],
    "calcification": ["vascular calcification", "calcified plaque"],
}
NEGATIVES: dict[str, list[str]] = {
    "nodule": ["no pulmonary nodules"],
    "cyst": ["no cystic lesions"],
    "calcification": ["no vascular calcification"],
}


class GeneratedVolumes(BaseModel):
    """``data.volumes``: the volumes of :func:`~biomodal.datasets._volume_synth.make_volume_patients`.

    Attributes
    ----------
    n_train, n_val, n_test
        Patients per split (independent draws; ``n_val = 0``: no validation split).
    depth, px
        Slices per volume and slice side.
    prevalence
        Probability of each finding.
    mention
        Probability that a report mentions each finding.
    split_seed
        Seed of the draws (default: the recipe's ``seed``).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    n_train: int = Field(default=800, ge=8)
    n_val: int = Field(default=150, ge=0)
    n_test: int = Field(default=300, ge=8)
    depth: int = Field(default=16, ge=8, le=128)
    px: int = Field(default=32, ge=24, le=256)
    prevalence: float = Field(default=0.35, gt=0, lt=1)
    mention: float = Field(default=0.9, gt=0, le=1)
    split_seed: int | None = None


def default_volume_protocols() -> list[dict[str, Any]]:
    """Zero-shot AUROC per finding (prompts minus negatives) and volume <-> report retrieval."""
    return [
        {
            "name": "zero_shot",
            "params": {
                "modality": "volume",
                "text_modality": "report",
                "target": "findings",
                "prompts": {c: list(p) for c, p in PROMPTS.items()},
                "negatives": {c: list(p) for c, p in NEGATIVES.items()},
            },
        },
        {
            "name": "retrieval",
            "params": {
                "pairs": [["volume", "report"], ["report", "volume"]],
                "ks": [1, 5, 10],
                "untrained": True,
            },
        },
    ]


def prepare_volume_splits(recipe: Any, preprocessors: Any) -> dict[str, Any]:
    """Draw the splits; the pieces of ``PreparedData`` (``findings`` target, no baseline features)."""
    import numpy as np

    from biomodal.datasets._volume_synth import FINDINGS, make_volume_patients
    from biomodal.eval.protocols import Target
    from biomodal.recipes.families._clinical_data import ClinicalDataset, TextSource
    from biomodal.recipes.families._clinical_generated import ImageSource

    gen: GeneratedVolumes = recipe.data.volumes
    mods = list(recipe.modalities)
    unknown = [m for m in mods if m not in VOLUME_MODALITIES]
    if unknown:
        raise ConfigError(
            f"clinical volumes: modalities {unknown} are not generated; use {list(VOLUME_MODALITIES)}"
        )
    seed = recipe.seed if gen.split_seed is None else gen.split_seed
    pre = dict(preprocessors or {})
    if "volume" in mods:
        pre["volume"] = pre.get("volume") or ImageSource(1, gen.px)
    if "report" in mods:
        pre["report"] = pre.get("report") or TextSource("report")
    datasets, targets = {}, {}
    for i, (split, n) in enumerate({"train": gen.n_train, "val": gen.n_val, "test": gen.n_test}.items()):
        if not n:
            continue
        d = make_volume_patients(
            n,
            seed=int(seed) * 10 + i,
            depth=gen.depth,
            px=gen.px,
            prevalence=gen.prevalence,
            mention=gen.mention,
        )
        present = {m: np.ones(n, bool) for m in mods}
        kw: dict[str, Any] = {}
        if "report" in mods:
            kw["texts"] = d["report"]
        if "volume" in mods:
            kw["images"] = {"volume": d["volume"]}
        datasets[split] = ClinicalDataset(d["obs"], present=present, text_modality="report", **kw)
        targets[split] = d["findings"]
    specs: dict[str, dict[str, Any]] = {m: {} for m in mods}
    if "volume" in mods:
        specs["volume"] = {"in_chans": 1}
    info = {
        "dataset": "volumes",
        "n_records": {s: len(d) for s, d in datasets.items()},
        "depth": gen.depth,
        "px": gen.px,
    }
    log.info("clinical volumes: %s patients, %d slices of %d px", info["n_records"], gen.depth, gen.px)
    return {
        "datasets": datasets,
        "preprocessors": pre,
        "input_specs": specs,
        "targets": {"findings": Target(values=targets, names=list(FINDINGS))},
        "features": {},
        "info": info,
    }
