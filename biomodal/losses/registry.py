"""The loss registry: ``get_loss(name, **cfg)``, ``list_losses()``, ``@register_loss(name, **meta)``.

Importing this module registers every built-in loss.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from biomodal._registry import Registry
from biomodal.errors import ConfigError

__all__ = ["get_loss", "list_losses", "loss_info", "register_loss"]

_LOSSES: Registry[nn.Module] = Registry("loss")

_BUILTIN_MODULES = ("clip", "siglip", "cwcl", "symile", "gram", "uniformity", "multiview", "soft", "m3col")


def register_loss(name: str, **meta: Any) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a loss class (or factory) under ``name``; ``meta`` records what it needs.

    Examples
    --------
    >>> from biomodal.losses import ContrastiveLoss, register_loss
    >>> @register_loss("my_loss", family="pairwise")  # doctest: +SKIP
    ... class MyLoss(ContrastiveLoss): ...
    """
    return _LOSSES.register(name, **meta)


def get_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build the loss registered as ``name`` with keyword configuration ``kwargs``.

    Raises
    ------
    ConfigError
        Unknown name (with a did-you-mean hint) or an option the loss does not accept.
    """
    factory = _LOSSES.get(name)
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        sig = None
    if sig is not None and not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        allowed = [p for p in sig.parameters if p != "self"]
        bad = sorted(set(kwargs) - set(allowed))
        if bad:
            raise ConfigError(f"loss {name!r} does not accept {bad}; allowed options: {allowed}")
    return factory(**kwargs)


def list_losses() -> list[str]:
    """Sorted names of the registered losses."""
    return _LOSSES.names()


def loss_info(name: str) -> dict[str, Any]:
    """Metadata recorded for loss ``name`` (family, what inputs it needs)."""
    return _LOSSES.meta(name)


for _mod in _BUILTIN_MODULES:
    importlib.import_module(f"biomodal.losses.{_mod}")
