"""The fixed vocabulary of modality names used in batches, models and checkpoints."""

from __future__ import annotations

from biomodal.errors import ConfigError

__all__ = ["MASK_SUFFIX", "MODALITIES", "check_modality", "mask_key"]

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
)

MASK_SUFFIX = "_mask"


def mask_key(name: str) -> str:
    """Return the batch key of the presence mask of modality ``name``."""
    return f"{name}{MASK_SUFFIX}"


def check_modality(name: str) -> str:
    """Return ``name`` if it is a known modality, else raise :class:`ConfigError`."""
    if name not in MODALITIES:
        import difflib

        close = difflib.get_close_matches(name, MODALITIES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown modality {name!r}; expected one of {', '.join(MODALITIES)}.{hint}")
    return name
