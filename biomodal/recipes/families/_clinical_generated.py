"""Generated patients -> the clinical family's splits (``data.dataset: generated``, MoRE-style).

Patients come from :func:`biomodal.datasets.clinical_synthetic.make_clinical_patients`: chest
X-rays, 12-lead ECGs (neurokit2's ECGSYN), report text (real IU X-ray sentences chosen by MeSH
term, or the builtin set) and labs, driven by four latent conditions, with missing modalities.
Every split is an independent draw of distinct patients (seeded by ``data.generated.split_seed``
or the recipe's seed), so there is no patient overlap by construction. ECGs go through the same
:class:`~biomodal.pp.ECGPipeline` as PTB-XL records; the labs standardiser is fitted on the
training patients only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from biomodal.errors import CheckpointError, ConfigError

__all__ = [
    "GENERATED_MODALITIES",
    "PROMPTS",
    "ImageSource",
    "default_generated_protocols",
    "prepare_generated_splits",
]

log = logging.getLogger("biomodal")

GENERATED_MODALITIES = ("xray", "ecg", "report", "labs")
_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


#: Zero-shot prompts per condition, in the reports' wording (radiology for X-ray findings, SCP-ECG
#: statements for ECG ones).
PROMPTS: dict[str, list[str]] = {
    "cardiomegaly": ["enlarged heart", "cardiomegaly", "the cardiac silhouette is enlarged"],
    "pleural_effusion": ["pleural effusion", "fluid in the pleural space", "blunted costophrenic angle"],
    "atrial_fibrillation": ["atrial fibrillation", "irregular rhythm with absent p waves"],
    "myocardial_infarction": ["myocardial infarction", "old infarct with q waves"],
}
#: Negative prompts (CheXzero's pairs): a condition scores by its prompts minus these.
NEGATIVES: dict[str, list[str]] = {
    "cardiomegaly": ["normal heart size", "no cardiomegaly"],
    "pleural_effusion": ["no pleural effusion", "no effusion"],
    "atrial_fibrillation": ["sinus rhythm"],
    "myocardial_infarction": ["no infarction", "normal qrs and t waves"],
}
#: The modality that shows each condition (zero-shot scores each class on it).
SHOWN_BY = {
    "xray": ["cardiomegaly", "pleural_effusion"],
    "ecg": ["atrial_fibrillation", "myocardial_infarction"],
}


def default_generated_protocols() -> list[dict[str, Any]]:
    """Zero-shot AUROC per condition on the modality showing it, retrieval of every pair, pick 1 of 10."""
    return [
        {
            "name": "zero_shot",
            "params": {
                "text_modality": "report",
                "target": "conditions",
                "prompts": {c: list(p) for c, p in PROMPTS.items()},
                "negatives": {c: list(p) for c, p in NEGATIVES.items()},
                "by_modality": {m: list(c) for m, c in SHOWN_BY.items()},
            },
        },
        {"name": "k_candidate", "params": {"k": 10, "draws": 5, "score": "auto"}},  # early stopping
        {"name": "retrieval", "params": {"ks": [1, 5, 10], "untrained": True}},
    ]


class ImageSource:
    """The pixel modality as generated: ``(channels, px, px)`` uint8; nothing is fitted.

    Parameters
    ----------
    in_chans, tile_px
        Channels and side of every image (what the image encoder is built for).
    """

    def __init__(self, in_chans: int, tile_px: int) -> None:
        self.in_chans, self.tile_px = int(in_chans), int(tile_px)

    def input_spec(self) -> dict[str, int]:
        """``{"in_chans": C, "tile_px": px}``."""
        return {"in_chans": self.in_chans, "tile_px": self.tile_px}

    def state_dict(self) -> dict[str, int]:
        """Plain-python state."""
        return self.input_spec()

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], name: str = "xray") -> ImageSource:
        """Inverse of :meth:`state_dict`; :class:`CheckpointError` naming the modality when malformed."""
        try:
            return cls(int(state["in_chans"]), int(state["tile_px"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint modality {name!r}: image source state is malformed ({exc!r})"
            ) from exc

    def __repr__(self) -> str:
        return f"ImageSource(in_chans={self.in_chans}, tile_px={self.tile_px})"


def prepare_generated_splits(recipe: Any, preprocessors: Mapping[str, Any] | None) -> dict[str, Any]:
    """Draw the train/val/test patients and preprocess them; the pieces of ``PreparedData``.

    Returns
    -------
    dict
        ``datasets`` (``{split: ClinicalDataset}``), ``preprocessors``, ``input_specs``,
        ``targets`` (``conditions``), ``features`` (``{split: ecg_features array}``) and ``info``.
    """
    from biomodal.datasets._report_synth import sentence_pools
    from biomodal.datasets.clinical_synthetic import CONDITIONS, LAB_NAMES, make_clinical_patients
    from biomodal.eval.protocols import Target
    from biomodal.io import ECG
    from biomodal.pp import LabStandardizer
    from biomodal.recipes.families._clinical_data import ClinicalDataset, TextSource, ecg_features
    from biomodal.recipes.families._clinical_ptbxl import ecg_pipeline, input_specs

    data = recipe.data
    gen = data.generated
    mods = list(recipe.modalities)
    unknown = [m for m in mods if m not in GENERATED_MODALITIES]
    if unknown:
        raise ConfigError(
            f"clinical generated data: modalities {unknown} are not generated; "
            f"use any of {list(GENERATED_MODALITIES)}"
        )
    seed = recipe.seed if gen.split_seed is None else gen.split_seed
    pre = dict(preprocessors or {})
    sizes = {"train": gen.n_train, "val": gen.n_val, "test": gen.n_test}
    drawn: dict[str, dict[str, Any]] = {}
    pools = sentence_pools(gen.reports)  # the IU reports are parsed once, not once per split
    for i, (split, n) in enumerate(sizes.items()):
        if n:
            drawn[split] = make_clinical_patients(
                n,
                seed=int(seed) * 10 + i,
                image_px=gen.image_px,
                sampling_rate=int(data.sampling_rate),
                duration_s=float(data.duration_s),
                prevalence=gen.prevalence,
                missing=gen.missing,
                min_present=gen.min_present,
                reports=pools,
                ecg_bank_size=gen.ecg_bank_size,
                mention=gen.mention,
            )
    if "ecg" in mods:
        pre["ecg"] = ecg_pipeline(data, pre)
    if "report" in mods:
        pre["report"] = pre.get("report") or TextSource("report")
    if "labs" in mods and "labs" not in pre:
        pre["labs"] = LabStandardizer().fit(drawn["train"]["labs"], features=list(LAB_NAMES))
    if "xray" in mods:
        px = drawn["train"]["xray"].shape[-1]
        pre["xray"] = pre.get("xray") or ImageSource(gen.image_channels, px)
    datasets, targets, features, missing = {}, {}, {}, {}
    for split, d in drawn.items():
        present = {m: d["present"][m] for m in mods}
        kw: dict[str, Any] = {}
        if "ecg" in mods:
            fs = float(data.sampling_rate)
            x, m = pre["ecg"].stack([ECG(sig, fs=fs, leads=list(_LEADS)) for sig in d["ecg"]])
            features[split] = ecg_features(d["ecg"], np.ones(x.shape[:2], bool), fs)
            features[split][~present["ecg"]] = np.nan
            kw.update(ecg=x, lead_mask=m)
        if "report" in mods:
            kw["texts"] = [t if p else "" for t, p in zip(d["report"], present["report"], strict=True)]
        if "labs" in mods:
            kw["labs"] = pre["labs"].transform(d["labs"])
        if "xray" in mods:
            chans = pre["xray"].in_chans
            kw["images"] = {"xray": d["xray"] if chans == 1 else np.repeat(d["xray"], chans, axis=1)}
        datasets[split] = ClinicalDataset(d["obs"], present=present, text_modality="report", **kw)
        targets[split] = d["conditions"]
        missing[split] = {m: int((~p).sum()) for m, p in present.items()}
    specs = input_specs(pre)
    train_c = drawn["train"]["conditions"]
    info = {
        "dataset": "generated",
        "n_records": {s: len(d) for s, d in datasets.items()},
        "prevalence_train": {c: float(train_c[:, j].mean()) for j, c in enumerate(CONDITIONS)},
        "missing": missing,
        "reports": str(gen.reports),
        "sampling_rate": int(data.sampling_rate),
    }
    log.info("clinical generated: %s patients, missing per split %s", info["n_records"], missing)
    return {
        "datasets": datasets,
        "preprocessors": pre,
        "input_specs": specs,
        "targets": {"conditions": Target(values=targets, names=list(CONDITIONS))},
        "features": features,
        "info": info,
    }
