"""Helpers for importing optional heavy dependencies lazily."""

from __future__ import annotations

import importlib
from types import ModuleType

from biomodal.errors import MissingDependencyError

__all__ = ["import_optional"]


def import_optional(module: str, extra: str, *, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise an error that names the extra to install.

    Parameters
    ----------
    module
        Dotted module name, e.g. ``"openslide"``.
    extra
        The biomodal extra that provides it, e.g. ``"histology"``.
    package
        PyPI name when it differs from the module name.

    Returns
    -------
    ModuleType
        The imported module.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only when absent
        pkg = package or module.split(".")[0]
        raise MissingDependencyError(
            f"{module!r} is required for this feature but could not be imported ({exc}). "
            f"Install it with: pip install 'biomodal[{extra}]' (or pip install {pkg})."
        ) from exc
