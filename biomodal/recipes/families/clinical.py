"""The ``clinical`` family: 12-lead ECGs, their reports, tabular values and chest X-rays.

Three datasets: ``data.dataset: ptbxl`` (real PTB-XL records, below), ``data.dataset:
generated`` (MoRE-style patients with known conditions: X-ray, ECG, report, labs and missing
modalities, set by ``data.generated``; see
:mod:`biomodal.recipes.families._clinical_generated`) and ``data.dataset: volumes`` (CT-like
3-D volumes with small findings and reports, RadCLIP-style, set by ``data.volumes``; see
:mod:`biomodal.recipes.families._clinical_volumes`).

``data.root`` is a PTB-XL folder (``ptbxl_database.csv``, ``scp_statements.csv``,
``records100/``, ``records500/``); records are split by ``strat_fold`` as PTB-XL's authors
recommend (``data.folds: {train: [...], val: [...], test: [...]}``, never by record: every
record of a patient shares a fold, and a patient found in two splits is an error).

Modalities, any two or three of:

* ``ecg``: the record at ``data.sampling_rate`` (100 or 500 Hz) through one
  :class:`~biomodal.pp.ECGPipeline` (12 standard leads, baseline removal, band-pass, fixed
  length; ``data.standardize: record`` scales each lead of each record);
* ``report``: the text, either PTB-XL's free-text ``report`` (normalised; mostly German) or
  English ``statements`` built from ``scp_codes`` (``data.text``). Statements encode the very
  labels being predicted, so with them every ``zero_shot`` protocol is given
  ``text_from_labels: true`` and its metrics say the figure is not zero-shot;
* ``labs``: age, sex, height and weight, z-scored with training-fold statistics
  (:class:`~biomodal.pp.LabStandardizer`) plus missing-value indicators.

A record missing a modality (no ECG files, an empty report, all four values missing) keeps its
row with ``<name>_mask`` False. Targets: ``superclass``, the ``(n, 5)`` multi-hot diagnostic
superclasses NORM, MI, STTC, CD, HYP (``zero_shot``, ``multilabel_probe``). Baseline feature:
``ecg_features``, hand-made per-lead amplitude percentiles, band powers and a beat period
(:func:`~biomodal.recipes.families._clinical_data.ecg_features`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from biomodal.errors import CheckpointError, ConfigError, DataError
from biomodal.recipes.families import register_family
from biomodal.recipes.families._clinical_volumes import GeneratedVolumes
from biomodal.recipes.families.base import Family, FamilyConfig, PreparedData

__all__ = ["ClinicalData", "ClinicalFamily", "Folds", "default_prompts"]

log = logging.getLogger("biomodal")

#: PTB-XL's ``strat_fold`` values.
FOLD_RANGE = range(1, 11)

#: Prompts per diagnostic superclass in the language of the text (German reports, English statements).
PROMPTS: dict[str, dict[str, list[str]]] = {
    "report": {
        "NORM": ["sinusrhythmus normales ekg", "normales ekg", "sinus rhythm. normal ecg."],
        "MI": ["myokardinfarkt", "alter inferiorer infarkt", "old inferior myocardial infarction"],
        "STTC": ["st-t-veränderungen", "st-senkung, t abnormal", "non-specific st depression"],
        "CD": ["linksschenkelblock", "rechtsschenkelblock", "left bundle branch block"],
        "HYP": [
            "linksventrikuläre hypertrophie",
            "lvh mit repolarisationsstörung",
            "left ventricular hypertrophy",
        ],
    },
    "statements": {
        "NORM": ["normal ECG"],
        "MI": ["myocardial infarction", "inferior myocardial infarction"],
        "STTC": ["non-specific ST changes", "ischemic ST-T changes"],
        "CD": ["left bundle branch block", "right bundle branch block", "AV block"],
        "HYP": ["left ventricular hypertrophy"],
    },
}


def default_prompts(text: str = "report") -> dict[str, list[str]]:
    """Zero-shot prompts per superclass for ``data.text`` (``report``: German, ``statements``: English)."""
    return {c: list(p) for c, p in PROMPTS.get(text, PROMPTS["report"]).items()}


class Folds(BaseModel):
    """``strat_fold`` values per split; each fold in at most one split.

    Attributes
    ----------
    train, test
        Non-empty lists of folds (1-10).
    val
        Folds for model selection and early stopping (may be empty: no validation split).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    train: list[int] = Field(min_length=1)
    val: list[int] = []
    test: list[int] = Field(min_length=1)

    @model_validator(mode="after")
    def _disjoint(self) -> Folds:
        seen: dict[int, str] = {}
        for name in ("train", "val", "test"):
            for f in getattr(self, name):
                if f not in FOLD_RANGE:
                    raise ValueError(f"data.folds.{name}: strat_fold {f} is not one of PTB-XL's folds 1-10")
                if f in seen:
                    where = "twice in" if seen[f] == name else f"in both {seen[f]} and"
                    raise ValueError(
                        f"data.folds: strat_fold {f} is listed {where} {name}; each fold belongs to one split"
                    )
                seen[f] = name
        return self


class GeneratedClinical(BaseModel):
    """``data.generated``: patients of :func:`~biomodal.datasets.clinical_synthetic.make_clinical_patients`.

    Attributes
    ----------
    n_train, n_val, n_test
        Patients per split (independent draws; ``n_val = 0``: no validation split).
    image_px
        X-ray side in pixels.
    image_channels
        1 (grayscale) or 3 (the gray image repeated, for RGB backbones such as ImageNet
        EfficientNet-Lite0 or a CLIP image tower).
    prevalence
        Baseline prevalence of each condition.
    missing
        ``{modality: probability of being absent}``.
    min_present
        Least modalities per patient.
    reports
        Folder of IU X-ray XML reports (relative to the recipe's folder) whose sentences are
        chosen by MeSH term, or ``"builtin"`` (a small hand-written set).
    ecg_bank_size
        ECGSYN records simulated per ECG state (cached; patients are windows of them).
    mention
        Probability that a report mentions each finding.
    split_seed
        Seed of the draws (default: the recipe's ``seed``).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    n_train: int = Field(default=1200, ge=8)
    n_val: int = Field(default=200, ge=0)
    n_test: int = Field(default=400, ge=8)
    image_px: int = Field(default=64, ge=32, le=512)
    image_channels: Literal[1, 3] = 1
    prevalence: float = Field(default=0.3, gt=0, lt=1)
    missing: dict[str, float] = Field(
        default_factory=lambda: {"xray": 0.2, "ecg": 0.2, "report": 0.1, "labs": 0.3}
    )
    min_present: int = Field(default=2, ge=1, le=4)
    reports: str = "builtin"
    ecg_bank_size: int = Field(default=6, ge=1, le=100)
    mention: float = Field(default=0.85, gt=0, le=1)
    split_seed: int | None = None


class ClinicalData(FamilyConfig):
    """``data:`` of a clinical (PTB-XL) recipe (see the module docstring).

    Attributes
    ----------
    dataset
        ``"ptbxl"`` (``root``: a PTB-XL folder) or ``"generated"`` (``generated``).
    generated
        Settings of the generated patients (``dataset: generated``).
    volumes
        Settings of the generated volumes (``dataset: volumes``).
    folds
        ``strat_fold`` values per split (default PTB-XL's: train 1-8, val 9, test 10).
    sampling_rate
        100 or 500 Hz records.
    text
        ``"report"`` (free text) or ``"statements"`` (built from the labels).
    duration_s, bandpass, baseline, standardize
        :class:`~biomodal.pp.ECGPipeline` settings.
    min_likelihood
        Least ``scp_codes`` likelihood counted for the superclass targets.
    supervised_epochs
        Most epochs of the ``supervised_ecg`` reference (the recipe's ECG encoder trained on the
        superclasses with binary cross-entropy, epoch chosen on the validation folds).
    """

    family: Literal["clinical"] = "clinical"
    dataset: Literal["ptbxl", "generated", "volumes"] = "ptbxl"
    generated: GeneratedClinical = Field(default_factory=GeneratedClinical)
    volumes: GeneratedVolumes = Field(default_factory=GeneratedVolumes)
    folds: Folds = Field(default_factory=lambda: Folds(train=list(range(1, 9)), val=[9], test=[10]))
    sampling_rate: Literal[100, 500] = 100
    text: Literal["report", "statements"] = "report"
    duration_s: float = Field(default=10.0, gt=0, le=60)
    bandpass: tuple[float | None, float | None] | None = (0.5, 40.0)
    baseline: Literal["median", "highpass"] | None = "median"
    standardize: Literal["record"] | None = None
    min_likelihood: float = Field(default=0.0, ge=0, le=100)
    supervised_epochs: int = Field(default=40, ge=1)

    @field_validator("bandpass")
    @classmethod
    def _band(cls, v: tuple[float | None, float | None] | None) -> Any:
        if v is not None and v[0] is not None and v[1] is not None and not 0 < v[0] < v[1]:
            raise ValueError(f"data.bandpass: need 0 < low < high, got {list(v)}")
        return v


@register_family
class ClinicalFamily(Family):
    """ECG, report and labs of PTB-XL records (see the module docstring)."""

    name = "clinical"
    config = ClinicalData

    def default_modalities(self) -> dict[str, dict[str, Any]]:
        """Return a 1-D ResNet for ``ecg`` and the frozen offline MiniLM for ``report``."""
        return {
            "ecg": {"encoder": "ecg_resnet1d", "params": {"width": 32, "blocks": [1, 1, 1, 1]}},
            "report": {
                "encoder": "text_transformer",
                "params": {"modality": "report", "pooling": "mean", "max_length": 128},
                "freeze": True,  # eval mode too, so its features are cached (computed once)
            },
        }

    def default_protocols(
        self, eval_section: dict[str, Any], data: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """ECG<->report retrieval, zero-shot superclasses by prompts, the multi-label probe."""
        if isinstance(data, Mapping) and data.get("dataset") == "generated":
            from biomodal.recipes.families._clinical_generated import default_generated_protocols

            return default_generated_protocols()
        if isinstance(data, Mapping) and data.get("dataset") == "volumes":
            from biomodal.recipes.families._clinical_volumes import default_volume_protocols

            return default_volume_protocols()
        text = data.get("text", "report") if isinstance(data, Mapping) else "report"
        text = text if text in PROMPTS else "report"
        return [
            {"name": "retrieval",
             "params": {"pairs": [["ecg", "report"], ["report", "ecg"]], "ks": [1, 5, 10]}},
            {"name": "zero_shot", "params": {"modality": "ecg", "text_modality": "report",
                                             "target": "superclass", "prompts": default_prompts(text),
                                             "text_from_labels": text == "statements"}},
            {"name": "multilabel_probe", "params": {"target": "superclass", "modality": "ecg",
                                                    "features": "ecg_features"}},
        ]  # fmt: skip

    def resolve_paths(self, cfg: FamilyConfig, root: Path) -> None:
        """``data.root`` (and ``generated.reports``) become absolute against the recipe's folder."""
        cfg.root = str(Path(root).resolve())
        gen = cfg.generated  # type: ignore[attr-defined]
        if gen.reports != "builtin" and not Path(gen.reports).is_absolute():
            gen.reports = str((Path(root) / gen.reports).resolve())

    # ------------------------------------------------------------------ data
    def prepare(
        self, recipe: Any, run_dir: Path, *, preprocessors: dict[str, Any] | None = None
    ) -> PreparedData:
        """Read PTB-XL, split by ``strat_fold``, fit the labs standardiser on the training folds."""
        from biomodal.recipes.families._clinical_generated import prepare_generated_splits
        from biomodal.recipes.families._clinical_ptbxl import ECG_MODALITY, prepare_ptbxl_splits

        data: ClinicalData = recipe.data
        _mark_label_text(recipe)
        from biomodal.recipes.families._clinical_volumes import prepare_volume_splits

        generated = data.dataset != "ptbxl"
        prep = {"ptbxl": prepare_ptbxl_splits, "generated": prepare_generated_splits,
                "volumes": prepare_volume_splits}[data.dataset]  # fmt: skip
        parts = prep(recipe, preprocessors)
        prepared = PreparedData(
            preprocessors=parts["preprocessors"],
            input_specs=parts["input_specs"],
            targets=parts["targets"],
            group_key="patient_id",
            group_label="patient",
            unit="patients" if generated else "records",
            info=parts["info"],
        )
        prepared.datasets = dict(parts["datasets"])
        prepared.eval_datasets = dict(parts["datasets"])
        if "train" not in prepared.eval_datasets or "test" not in prepared.eval_datasets:
            where = f"data.{data.dataset}" if generated else f"data.folds {data.folds.model_dump()}"
            raise DataError(f"{where}: no training or test records")
        feats = parts["features"]
        if feats:

            def ecg_features(split: str, modality: str) -> Any:
                if modality != ECG_MODALITY:
                    raise ConfigError(f"baseline 'ecg_features' describes the ecg modality, not {modality!r}")
                return feats[split]

            prepared.features["ecg_features"] = ecg_features
        if "ecg" in recipe.modalities and "superclass" in prepared.targets:
            from biomodal.recipes.families._clinical_supervised import supervised_ecg_features

            prepared.features["supervised_ecg"] = supervised_ecg_features(
                recipe,
                dict(prepared.eval_datasets),
                prepared.targets["superclass"],
                prepared.input_specs,
                epochs=data.supervised_epochs,
            )  # trained only when a protocol asks for it
        for split, ds in prepared.eval_datasets.items():
            log.info("clinical %s: %r", split, ds)
        return prepared

    def load_preprocessors(self, states: Mapping[str, Any]) -> dict[str, Any]:
        """Rebuild the ECG pipeline, the text source and the labs standardiser of a checkpoint."""
        from biomodal.pp import ECGPipeline, LabStandardizer
        from biomodal.recipes.families._clinical_data import TextSource

        out: dict[str, Any] = {}
        for m, s in states.items():
            try:
                if m == "ecg":
                    out[m] = ECGPipeline.from_state_dict(dict(s))
                elif m == "labs":
                    out[m] = LabStandardizer.from_state_dict(dict(s))
                elif m == "report":
                    out[m] = TextSource.from_state_dict(s, m)
                elif m in ("xray", "volume"):
                    from biomodal.recipes.families._clinical_generated import ImageSource

                    out[m] = ImageSource.from_state_dict(s, m)
                else:
                    raise CheckpointError(
                        f"checkpoint modality {m!r}: the clinical family has no such preprocessor"
                    )
            except (ConfigError, TypeError, ValueError) as exc:
                raise CheckpointError(
                    f"checkpoint modality {m!r}: preprocessor state is malformed ({exc})"
                ) from exc
        return out

    def check_checkpoint(self, preprocessors: Mapping[str, Any], input_specs: Mapping[str, Any]) -> None:
        """Check the ECG pipeline's lead count and the standardiser's feature count against the encoders."""
        have = {}
        if "ecg" in preprocessors:
            have["ecg"] = {"leads": len(preprocessors["ecg"].leads)}
        if "labs" in preprocessors:
            have["labs"] = {"in_features": len(preprocessors["labs"].features_)}
        for m, spec in have.items():
            want = dict(input_specs.get(m, {}))
            if spec != want:
                raise CheckpointError(
                    f"checkpoint modality {m!r}: preprocessor gives {spec}, encoder was built for {want}"
                )


def _mark_label_text(recipe: Any) -> None:
    """With ``data.text: statements`` every ``zero_shot`` protocol gets ``text_from_labels: true``."""
    if recipe.data.text != "statements":
        return
    for spec in recipe.eval.protocols:
        if spec.name == "zero_shot" and not spec.params.get("text_from_labels"):
            log.warning("clinical: data.text is 'statements' (built from the labels): zero_shot is marked "
                        "text_from_labels: true, its figure is not zero-shot")  # fmt: skip
            spec.params["text_from_labels"] = True
