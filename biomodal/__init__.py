"""biomodal: multimodal contrastive learning for biomedical data.

Subpackages follow the data flow ``io -> pp -> data -> nn -> losses/train ->
eval -> pl``; ``recipes`` wires them together. Subpackages are imported lazily
so that ``import biomodal`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "io",
    "pp",
    "data",
    "nn",
    "losses",
    "train",
    "eval",
    "pl",
    "recipes",
    "datasets",
    "errors",
    "modalities",
)

__all__ = [*_SUBMODULES, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"biomodal.{name}")
    raise AttributeError(f"module 'biomodal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
