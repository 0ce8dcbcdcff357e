"""A small name -> factory registry used by encoders and losses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from biomodal._suggest import unknown_message
from biomodal.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Map names to factories plus metadata about what each entry needs.

    Parameters
    ----------
    kind
        What the registry holds (``"loss"``, ``"encoder"``), used in messages.

    Examples
    --------
    >>> reg = Registry("loss")
    >>> @reg.register("mine", needs="pairs")
    ... def make_mine(**kw):
    ...     return kw
    >>> reg.create("mine", a=1)
    {'a': 1}
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Register ``factory`` under ``name`` with metadata ``meta``."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            self._meta[name] = dict(meta)
            return factory

        return deco

    def _resolve(self, name: str) -> Callable[..., T]:
        if name in self._factories:
            return self._factories[name]
        raise ConfigError(unknown_message(self.kind, name, self._factories))

    def get(self, name: str) -> Callable[..., T]:
        """Return the factory registered as ``name``."""
        return self._resolve(name)

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the entry ``name`` with ``kwargs``."""
        return self._resolve(name)(**kwargs)

    def meta(self, name: str) -> dict[str, Any]:
        """Return a copy of the metadata recorded for ``name``."""
        self._resolve(name)
        return dict(self._meta[name])

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, entries={self.names()})"
