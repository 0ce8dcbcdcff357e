"""Modality-family plugins behind a registry: ``family:`` in a recipe's ``data`` picks one.

Built in: ``spatial`` (whole-slide histology + spatial transcriptomics), ``omics``
(per-subject omics tables: mRNA, methylation, miRNA), ``synthetic`` (generated data with
known structure: Symile's XOR triple), ``fmri`` (brain maps or time series with
per-subject adapters aligned to frozen stimulus embeddings) and ``clinical`` (PTB-XL ECGs,
reports and labs split by ``strat_fold``). Adding a family is
one module here defining a :class:`~biomodal.recipes.families.base.Family` subclass decorated
with :func:`register_family`, plus its name in ``_BUILTIN``. Importing this package is light
(pydantic only); each family imports its readers and datasets inside its methods.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from biomodal._registry import Registry
from biomodal.recipes.families.base import SPLITS, Family, FamilyConfig, PreparedData

__all__ = [
    "DEFAULT_FAMILY",
    "SPLITS",
    "Family",
    "FamilyConfig",
    "PreparedData",
    "get_family",
    "list_families",
    "register_family",
]

#: Family of recipes written before ``family:`` existed (they were all spatial).
DEFAULT_FAMILY = "spatial"

_FAMILIES: Registry[Family] = Registry("family")
_INSTANCES: dict[str, Family] = {}


def register_family(cls: type[Family]) -> type[Family]:
    """Register a :class:`Family` subclass under its ``name`` (class decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    _FAMILIES.register(cls.name)(cls)
    return cls


def get_family(name: str) -> Family:
    """Return the plugin registered as ``name`` (did-you-mean :class:`ConfigError` otherwise)."""
    if name not in _INSTANCES:
        _INSTANCES[name] = _FAMILIES.create(name)
    return _INSTANCES[name]


def list_families() -> list[str]:
    """Sorted names of the registered families."""
    return _FAMILIES.names()


def _builtin(loader: Callable[[str], object] = importlib.import_module) -> None:
    for mod in _BUILTIN:
        loader(f"biomodal.recipes.families.{mod}")


_BUILTIN = ("spatial", "omics", "synthetic", "fmri", "clinical")
_builtin()
