"""The fixed vocabulary of modality names used in batches, models and checkpoints."""

from __future__ import annotations

from biomodal._suggest import did_you_mean
from biomodal.errors import ConfigError

__all__ = [
    "BATCH_CODE",
    "COVARIATES",
    "FEATURES_SUFFIX",
    "MASK_SUFFIX",
    "MODALITIES",
    "SUBJECT",
    "VIEW_SUFFIX",
    "check_modality",
    "features_key",
    "mask_key",
]

#: Every modality name a batch dict, encoder or loss may use.
MODALITIES: tuple[str, ...] = (
    "histology",
    "expression",
    "xray",
    "ecg",
    "report",
    "labs",
    "fmri",
    "volume",
    "image",
    "text",
    "mrna",
    "methylation",
    "mirna",
    # generated data (the synthetic family): Symile's XOR triple v_a, v_b, v_c = v_a XOR v_b
    "v_a",
    "v_b",
    "v_c",
)

MASK_SUFFIX = "_mask"

#: Batch-dict key of the integer batch-effect codes (section, slide, donor...), ``LongTensor[B]``.
#: Also the keyword under which encoders and losses receive them. Not to be confused with the
#: mini-batch itself, nor with a dataset's ``batch_key`` (the ``obs`` column the codes come from).
BATCH_CODE = "batch_code"

#: Batch-dict key of the integer subject codes (donor, patient, fMRI participant), ``LongTensor[B]``.
SUBJECT = "subject"

#: Covariates an encoder may declare (``EncoderSpec.covariates``) and receive as keywords.
COVARIATES: tuple[str, ...] = (BATCH_CODE, SUBJECT)

#: Suffix of the batch key holding an augmented view of a modality (``"histology_view"``), used by
#: in-modality self-supervised terms.
VIEW_SUFFIX = "_view"


#: Suffix of the batch key holding precomputed encoder features of a modality
#: (``"histology_features"``): a frozen encoder's output from the feature cache; the model then
#: runs only the head (see :mod:`biomodal.train.feature_cache`).
FEATURES_SUFFIX = "_features"


def features_key(name: str) -> str:
    """Return the batch key of the precomputed encoder features of modality ``name``."""
    return f"{name}{FEATURES_SUFFIX}"


def mask_key(name: str) -> str:
    """Return the batch key of the presence mask of modality ``name``."""
    return f"{name}{MASK_SUFFIX}"


def check_modality(name: str) -> str:
    """Return ``name`` if it is a known modality, else raise :class:`ConfigError`."""
    if name not in MODALITIES:
        hint = did_you_mean(name, MODALITIES)
        raise ConfigError(f"unknown modality {name!r}; expected one of {', '.join(MODALITIES)}.{hint}")
    return name
