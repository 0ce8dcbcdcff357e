"""Lazy re-exports so ``import biomodal`` stays fast.

Subpackages declare ``{public_name: "submodule"}``; the submodule is imported on
first attribute access (PEP 562), so heavy dependencies load only when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, mapping: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` implementing lazy exports for ``package``.

    Parameters
    ----------
    package
        The package's ``__name__``.
    mapping
        Public name -> submodule (relative to ``package``) that defines it.
    """

    def __getattr__(name: str) -> Any:
        if name in mapping:
            module = importlib.import_module(f"{package}.{mapping[name]}")
            return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(mapping)

    return __getattr__, __dir__
